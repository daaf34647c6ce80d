//! VMDq pool filters and switching decisions.
