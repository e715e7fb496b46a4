//! The one place that calls the C library directly: signals to processes and
//! process groups, the parent-death signal, non-blocking pipes, poll(2),
//! CLOCK_MONOTONIC, and reading a process's memory from /proc. Every `unsafe`
//! block has a `// SAFETY:` note.
//! This module must never hold state or decide policy; it only wraps calls.
#![allow(unsafe_code)]

use std::io;

/// The signals botfleet sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Hup,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Hup => libc::SIGHUP,
        }
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ignores SIGXFSZ, so a write past RLIMIT_FSIZE (a full quota, `ulimit
/// -f`) fails with EFBIG and is reported, instead of killing the process;
/// a worker killed by it would fetch the same update again and die again.
pub fn ignore_file_size_signal() -> io::Result<()> {
    // SAFETY: installs SIG_IGN for one signal; no handler code runs and no
    // memory is shared with it.
    let prev = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The open-file limit (RLIMIT_NOFILE) as (soft, hard).
// rlim_t is u64 on the targets botfleet builds for; `from` keeps it honest.
#[allow(clippy::useless_conversion)]
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one plain struct that we own and initialized.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok((u64::from(lim.rlim_cur), u64::from(lim.rlim_max)))
}

/// Raises the soft open-file limit to the hard limit (capped at `cap`, as
/// RLIM_INFINITY is not a number of files); returns the new (soft, hard).
/// Children started afterwards inherit it.
pub fn raise_nofile(cap: u64) -> io::Result<(u64, u64)> {
    let (soft, hard) = nofile_limit()?;
    let target = hard.min(cap);
    if soft >= target {
        return Ok((soft, hard));
    }
    let lim = libc::rlimit {
        rlim_cur: target,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one plain struct we own; raising the soft
    // limit up to the hard one needs no privilege.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok((target, hard))
}

/// Sends `signal` to every process in the process group `pgid`.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing pgid <= 1",
        ));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a
    // negative pid addresses the group, and pgid > 1 rules out "every process".
    check(unsafe { libc::kill(-(pgid as libc::pid_t), signal.raw()) })
}

/// Sends `signal` to the process `pid`.
pub fn signal_pid(pid: u32, signal: Signal) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing pid <= 1",
        ));
    }
    // SAFETY: as above; pid > 1 addresses exactly one process.
    check(unsafe { libc::kill(pid as libc::pid_t, signal.raw()) })
}

/// Whether a process with this pid exists (it may be a zombie).
pub fn process_exists(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let ret = unsafe { libc::kill(pid as libc::pid_t, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The parent's pid.
pub fn parent_pid() -> u32 {
    // SAFETY: getppid(2) cannot fail and takes no arguments.
    unsafe { libc::getppid() as u32 }
}

/// Asks the kernel to send SIGTERM to this process when its parent thread
/// dies (Linux only; a no-op elsewhere, where stdin EOF still catches it).
pub fn die_with_parent() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_PDEATHSIG, sig) reads only its integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}

/// Puts a file descriptor into non-blocking mode, so a write to a stuck
/// reader fails with WouldBlock instead of stalling the writer.
pub fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; F_GETFL/F_SETFL only
    // read and write the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resident and peak resident memory of a process, in bytes, from
/// /proc/PID/status (VmRSS, VmHWM). None where /proc is not there.
pub fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// CLOCK_MONOTONIC in microseconds, as systemd's `MONOTONIC_USEC=` wants it.
pub fn monotonic_usec() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively
    // borrowed `ts` and reads nothing else of ours.
    check(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) })?;
    Ok(ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}

/// Waits until at least one of `fds` is readable (or hung up), at most
/// `timeout_ms` milliseconds. Returns, per descriptor, whether it is ready.
/// An interrupted wait (EINTR) reports nothing ready.
pub fn poll_readable(fds: &[std::os::fd::RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut set: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `set` is a valid, exclusively borrowed array of `set.len()`
    // pollfd structs; poll(2) writes only their `revents` fields.
    let ret = unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(set.iter().map(|p| p.revents != 0).collect())
}

/// Makes a child started by `cmd` receive SIGKILL when the thread that
/// started it dies (Linux), so a handler never outlives a killed worker.
pub fn kill_child_with_parent(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed; prctl is one, and the
        // closure allocates nothing and touches no lock.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cmd; // no such facility: the worker kills its handlers on exit
    }
}

/// Whether the peer of a connected socket has closed its end (EOF or a
/// reset pending): the sandbox asks this of a waiting long poll.
pub fn peer_closed(fd: std::os::fd::RawFd) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: recv(2) writes at most 1 byte into `byte`, which lives for the
    // call; MSG_PEEK leaves any data in place and MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN) | Some(libc::EINTR)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_existence() {
        let me = std::process::id();
        assert!(process_exists(me));
        if cfg!(target_os = "linux") {
            let (rss, hwm) = memory_of(me).expect("/proc is mounted on Linux");
            assert!(rss > 0 && hwm >= rss);
        }
        assert!(signal_pid(1, Signal::Term).is_err(), "pid 1 is refused");
        assert!(signal_group(0, Signal::Term).is_err(), "pgid 0 is refused");
        let a = monotonic_usec().expect("CLOCK_MONOTONIC exists");
        let b = monotonic_usec().expect("CLOCK_MONOTONIC exists");
        assert!(a > 0 && b >= a, "the monotonic clock does not go back");
    }
}
