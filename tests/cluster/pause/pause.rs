//! The local cluster's pause image (tests/cluster/image.sh builds it): the process that holds
//! a pod's namespaces. It sleeps until SIGTERM or SIGINT and reaps any child that is re-parented
//! to it (it is PID 1 of the pod's PID namespace when the pod shares one).
//!
//! Built with plain `rustc` and no crates (`-C target-feature=+crt-static`), so the image holds
//! one static binary and nothing else.
use std::os::raw::c_int;

/// glibc's `sigset_t` on Linux: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

extern "C" {
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwait(set: *const SigSet, sig: *mut c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
}

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const SIG_BLOCK: c_int = 0;
const WNOHANG: c_int = 1;

fn main() {
    let mut set = SigSet([0; 16]);
    // SAFETY: `set` is a valid, writable sigset_t-sized buffer for these libc calls.
    unsafe {
        sigemptyset(&mut set);
        for sig in [SIGINT, SIGTERM, SIGCHLD] {
            sigaddset(&mut set, sig);
        }
        if sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            eprintln!("pause: sigprocmask failed");
            std::process::exit(1);
        }
    }
    loop {
        let mut sig: c_int = 0;
        // SAFETY: `set` was initialised above and `sig` is a valid out pointer.
        if unsafe { sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        match sig {
            SIGCHLD => {
                let mut status = 0;
                // SAFETY: reaping any child without blocking; `status` is a valid out pointer.
                while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {}
            }
            _ => {
                eprintln!("pause: shutting down on signal {sig}");
                std::process::exit(0);
            }
        }
    }
}
