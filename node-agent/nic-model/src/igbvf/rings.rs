//! igbvf TX/RX ring processing.
