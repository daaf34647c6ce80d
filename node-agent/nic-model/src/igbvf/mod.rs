//! igbvf (82576 VF) device model.
pub mod rings;
