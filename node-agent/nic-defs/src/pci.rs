//! PCI ids and config-space offsets.
