//! Recovery from SIGBUS on client memory.
//!
//! A client owns the files behind its DMA maps. If it truncates one (or the file lives on a
//! tmpfs/hugetlbfs that runs out of pages), the next access through our mapping raises
//! SIGBUS, which by default kills the whole agent and every tenant's VFs with it. DMA_MAP
//! therefore requires `F_SEAL_SHRINK` by default (see `dma.rs`), and this module is the
//! second line of defence for what seals do not cover (unsealed maps the operator allowed,
//! hugetlbfs page exhaustion):
//!
//! - every client mapping is registered here (a fixed table of address ranges, readable
//!   from a signal handler without locks);
//! - a process-wide SIGBUS handler looks the faulting address up; inside a registered range
//!   it replaces the *whole* range with private anonymous memory (`MAP_FIXED`), marks the
//!   range faulted, writes 1 to the range's notify eventfd and returns, so the faulting
//!   access is retried and succeeds on zero-filled memory;
//! - the owner (the vfio-user server thread, woken by the eventfd) sees the faulted range
//!   and drops that client: only the offending VF is affected.
//!
//! A SIGBUS outside every registered range is passed to the handler that was installed
//! before ours (or the default action, which ends the process as it would have anyway).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How many client mappings can be protected at once, node-wide. Each VF may hold at most
/// [`crate::MAX_FILE_MAPS`] of them.
pub const CAPACITY: usize = 65536;

struct Slot {
    /// Claimed by a registration (guards reuse; the handler does not look at it).
    used: AtomicBool,
    start: AtomicUsize,
    /// 0 = not registered. Stored last on registration (Release), cleared first on removal.
    len: AtomicUsize,
    faulted: AtomicBool,
    /// The notify eventfd plus one (0 = none), so that the table is all zeros (`.bss`).
    notify: AtomicI32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            used: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
            notify: AtomicI32::new(0),
        }
    }
}

static SLOTS: [Slot; CAPACITY] = [const { Slot::new() }; CAPACITY];
/// Faults recovered since start (all clients).
static RECOVERED: AtomicU64 = AtomicU64::new(0);
/// The SIGBUS action in place before ours, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered range; deregistered on drop (before the caller unmaps it).
#[derive(Debug)]
pub struct Registration {
    slot: usize,
}

/// Registers `[start, start+len)` (a live client mapping). `notify` (an eventfd, or -1) is
/// written when a fault in the range was recovered. `None` when the table is full.
pub fn register(start: usize, len: usize, notify: RawFd) -> Option<Registration> {
    install();
    let slot = SLOTS.iter().position(|s| {
        s.used
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })?;
    let s = &SLOTS[slot];
    s.faulted.store(false, Ordering::Relaxed);
    s.notify
        .store(notify.saturating_add(1).max(0), Ordering::Relaxed);
    s.start.store(start, Ordering::Relaxed);
    s.len.store(len, Ordering::Release);
    Some(Registration { slot })
}

impl Registration {
    /// Whether a fault in this range was recovered (the range now holds anonymous memory).
    pub fn faulted(&self) -> bool {
        SLOTS[self.slot].faulted.load(Ordering::Acquire)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let s = &SLOTS[self.slot];
        s.len.store(0, Ordering::Release);
        s.notify.store(0, Ordering::Relaxed);
        s.used.store(false, Ordering::Release);
    }
}

/// Faults on client memory recovered since the process started.
pub fn recovered() -> u64 {
    RECOVERED.load(Ordering::Relaxed)
}

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value; we fill in
        // the handler and flags before use.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid sigaction structs for the duration of the call;
        // the handler is an `extern "C"` function with the SA_SIGINFO signature.
        let rc = unsafe {
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(libc::SIGBUS, &new, &mut old)
        };
        if rc == 0 {
            let _ = PREVIOUS.set(old);
        } else {
            tracing::error!(
                error = %std::io::Error::last_os_error(),
                "cannot install the SIGBUS handler: a client truncating its memory could stop the agent"
            );
        }
    });
}

/// The SIGBUS handler. Only async-signal-safe operations: atomics, `mmap`, `write`,
/// `sigaction`.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; si_addr is the
    // faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in SLOTS.iter() {
        let len = s.len.load(Ordering::Acquire);
        if len == 0 {
            continue;
        }
        let start = s.start.load(Ordering::Relaxed);
        if addr.wrapping_sub(start) >= len {
            continue;
        }
        // SAFETY: [start, start+len) is a registered client mapping that stays mapped until
        // its registration is dropped, which happens before munmap; replacing it with
        // anonymous memory keeps every pointer into it valid (same address, same length),
        // and no Rust reference into client memory exists (all accesses are raw copies).
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            break;
        }
        s.faulted.store(true, Ordering::Release);
        RECOVERED.fetch_add(1, Ordering::Relaxed);
        let fd = s.notify.load(Ordering::Relaxed) - 1;
        if fd >= 0 {
            let one = 1u64.to_ne_bytes();
            // SAFETY: an 8-byte write from a valid buffer; a stale or closed fd only makes
            // the write fail, which is harmless here.
            unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
        }
        return;
    }
    forward(sig, info, ctx);
}

/// Hands a SIGBUS that is not ours to the previous handler, or restores the default action
/// so that the retried access ends the process as it would have without us.
fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.get();
    let handler = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: an all-zero sigaction with SIG_DFL is the default action.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: valid pointer to a sigaction; a null old-action pointer is allowed.
        unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
        return;
    }
    let siginfo = prev.is_some_and(|p| p.sa_flags & libc::SA_SIGINFO != 0);
    if siginfo {
        // SAFETY: the previous action was installed with SA_SIGINFO, so its handler has the
        // three-argument signature; we pass the kernel's own arguments through.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the handler takes the signal number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}
