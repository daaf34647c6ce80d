//! Hardware facts of the emulated NICs, as data: register offsets, bit fields, descriptor
//! layouts and mailbox opcodes, named as in the datasheets and the Linux drivers so that each
//! line can be checked against its source. No logic lives here.
#![forbid(unsafe_code)]
#![no_std]

pub mod avf;
pub mod avf_virtchnl;
pub mod igb_desc;
pub mod igbvf;
pub mod pci;
