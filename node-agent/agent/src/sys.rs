//! The few facts about the host the agent reads from the OS, each behind a safe function.

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory and always succeeds.
    unsafe { libc::geteuid() }
}

/// The effective group id of this process.
pub fn effective_gid() -> u32 {
    // SAFETY: getegid(2) takes no arguments, touches no memory and always succeeds.
    unsafe { libc::getegid() }
}

/// Sets the process's file mode creation mask (for every thread), e.g. 0o077 so that nothing
/// the agent creates is readable by others before its mode is set explicitly.
pub fn set_umask(mask: u32) {
    // SAFETY: umask(2) takes a plain integer, touches no memory and always succeeds.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// The host name, as the kernel reports it; `None` when it cannot be read or is empty.
pub fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts afterwards, so
/// that [`wait_termination_signal`] can take them synchronously. Call before spawning threads.
pub fn block_termination_signals() -> std::io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM (blocked beforehand) and returns its number.
pub fn wait_termination_signal() -> i32 {
    let set = termination_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` is a valid out pointer for the call.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any use, and
    // sigaddset only adds valid signal numbers to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Number of CPUs the system has online (for validating `dataplane.cores`).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf takes no pointers and always returns; -1 (error) is handled below.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1)
}

/// The CPUs this process may run on (its affinity mask, e.g. narrowed by a container's
/// cpuset), ascending; `None` when the kernel does not say.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a valid, writable cpu_set_t of the size
    // passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: CPU_ISSET only reads bit `c` of `set`, and every `c` is below CPU_SETSIZE.
    Some(
        (0..max)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect(),
    )
}

/// Runs `f` on a new thread that first joins the network namespace at `netns` (a bind mount
/// such as `/var/run/netns/x` or `/proc/PID/ns/net`), so that sockets and `/dev/net/tun` fds it
/// opens belong to that namespace. The calling thread's namespace is never changed; the helper
/// thread ends with `f`.
pub fn in_netns<T: Send + 'static>(
    netns: &std::path::Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd as _;
    let ns = std::fs::File::open(netns)?;
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // SAFETY: setns(2) reads nothing of ours; `ns` is an open fd for the whole call.
            // It changes the namespace of this helper thread only (CLONE_NEWNET is per thread).
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })?
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the netns helper thread panicked")))
}
