//! Every `unsafe` call of the crate: mmap/munmap of memory files, the SIGBUS recovery on
//! client memory, memfd, seals, fstat and eventfd syscalls. Each public wrapper is safe to
//! call with any argument.

pub mod fd;
pub mod mmap;
pub mod sigbus;
