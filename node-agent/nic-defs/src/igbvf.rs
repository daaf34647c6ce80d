//! igbvf BAR0 registers and mailbox.
