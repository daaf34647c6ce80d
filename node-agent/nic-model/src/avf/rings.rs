//! AVF TX/RX descriptor rings.
