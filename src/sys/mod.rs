//! The one place that calls the C library directly: signals to processes and
//! process groups, the parent-death signal, non-blocking pipes, poll(2), epoll(7),
//! CLOCK_MONOTONIC, and reading a process's memory from /proc. Every `unsafe`
//! block has a `// SAFETY:` note.
//! This module must never hold state or decide policy; it only wraps calls.
//! Descriptors (non-blocking mode, poll, epoll, pipes, socket pairs, passing
//! descriptors between tables) are in `sys::fd`, re-exported here.
#![allow(unsafe_code)]

use std::io;

mod fd;
pub use fd::*;

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

/// The soft process limit (RLIMIT_NPROC: tasks of this user, threads
/// included); None when unlimited.
// rlim_t is u64 on the targets botfleet builds for; `from` keeps it honest.
#[allow(clippy::useless_conversion)]
pub fn nproc_limit() -> io::Result<Option<u64>> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one plain struct that we own and initialized.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut lim) })?;
    Ok((lim.rlim_cur != libc::RLIM_INFINITY).then(|| u64::from(lim.rlim_cur)))
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

/// Resident and peak resident memory of a process, in bytes, from
/// /proc/PID/status (VmRSS, VmHWM). None where /proc is not there.
pub fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| kb_field(&status, name);
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// The first `name` line of a /proc file such as `VmRSS:   1234 kB`, in
/// bytes. None where the line is missing or not a number of kB.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
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

/// Makes a child started by `cmd` run with at most `bytes` of address space
/// (RLIMIT_AS, soft and hard, so it cannot raise it): an allocation past it
/// fails, and the program fails as it does when memory runs out. Used for
/// HANDLER_MAX_MEMORY_MB wherever a handler is started.
pub fn limit_child_memory(cmd: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: the closure runs in the child between fork and exec; it makes
    // one setrlimit(2) system call with a struct copied into the closure,
    // allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// CPU time (user + system) a process has used, in clock ticks, from
/// /proc/PID/stat. None where /proc is not there or the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks a second (the unit of `cpu_ticks`).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf(3) reads one integer setting and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

/// The host's load averages over 1, 5 and 15 minutes (/proc/loadavg).
pub fn host_load() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The host's memory in bytes: (total, available), from /proc/meminfo.
pub fn host_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| kb_field(&text, name);
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The file system holding `path`: (total, available to us) bytes.
pub fn disk_space(path: &std::path::Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `st` a valid,
    // exclusively borrowed struct that statvfs(3) fills in.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    let unit = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

/// The terminal's size on `fd` as (columns, rows), if it is a terminal.
pub fn terminal_size(fd: std::os::fd::RawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data; all-zero is a valid value of it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid, exclusively
    // borrowed `ws`.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (ret == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

/// A terminal in raw mode (no line editing, no echo, no signals from keys);
/// dropping it restores the settings it found, on every exit path that
/// unwinds.
#[derive(Debug)]
pub struct RawTerminal {
    fd: std::os::fd::RawFd,
    saved: libc::termios,
}

/// Puts the terminal on `fd` in raw mode: keys arrive one by one, Ctrl-C
/// as a byte; output processing stays on, so `\n` still starts a new line.
pub fn raw_terminal(fd: std::os::fd::RawFd) -> io::Result<RawTerminal> {
    // SAFETY: termios is plain old data; all-zero is a valid value of it.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes one termios into the valid, exclusively
    // borrowed `saved`.
    check(unsafe { libc::tcgetattr(fd, &mut saved) })?;
    let mut raw = saved;
    raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
    raw.c_iflag &= !(libc::IXON | libc::ICRNL);
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    // SAFETY: tcsetattr reads the valid `raw` and changes only the terminal.
    check(unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &raw) })?;
    Ok(RawTerminal { fd, saved })
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: tcsetattr reads the valid `saved` settings taken above.
        if unsafe { libc::tcsetattr(self.fd, libc::TCSAFLUSH, &self.saved) } != 0 {
            // The terminal is gone (the SSH session closed): nothing to restore.
        }
    }
}

/// Makes this process non-dumpable (Linux): its /proc/PID/environ, mem,
/// fd and the like become readable by root only, so a handler running as
/// the same user cannot read what the process holds. A no-op elsewhere.
pub fn set_not_dumpable() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_DUMPABLE, 0) reads only its integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}

/// Makes this process the reaper of its orphaned descendants (Linux), so
/// a process a handler left behind is reparented here and reaped, not
/// left to an init that may not reap (botfleet as PID 1 in a container).
pub fn become_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) reads only its integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}

/// Reaps one exited child other than those in `known` without blocking:
/// Some(pid) when one was reaped. Uses waitid(WNOWAIT) to look first, so
/// a child that `std::process::Child` owns is never reaped behind its back.
pub fn reap_orphan(known: &dyn Fn(u32) -> bool) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed siginfo_t is a valid value; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOHANG|WNOWAIT only inspects; `info` is a
        // valid, exclusively borrowed siginfo_t.
        let ret = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if ret != 0 {
            return None;
        }
        // SAFETY: after a successful waitid the si_pid field is set (0 when
        // no child has exited).
        let pid = unsafe { info.si_pid() } as u32;
        if pid == 0 || known(pid) {
            return None;
        }
        let mut status = 0;
        // SAFETY: waitpid on a pid that is our exited child; `status` is a
        // valid out parameter.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        (r == pid as libc::pid_t).then_some(pid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = known;
        None
    }
}

/// The uid, gid and supplementary groups of `user` (a name or a numeric
/// uid), from the password and group databases.
pub fn lookup_user(user: &str) -> io::Result<(u32, u32)> {
    let c = std::ffi::CString::new(user)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the user name"))?;
    // SAFETY: getpwnam reads the NUL-terminated name and returns a pointer
    // to static storage or null; we copy the two integers out at once and
    // call it from one thread at start-up only.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if !pw.is_null() {
        // SAFETY: `pw` is non-null and points to a valid passwd struct.
        return Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) });
    }
    match user.parse::<u32>() {
        Ok(uid) => Ok((uid, uid)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such user: {user}"),
        )),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and takes no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the child started by `cmd` drop to `uid`/`gid` (no supplementary
/// groups) before it runs; the caller checks that we are root.
pub fn run_as(cmd: &mut std::process::Command, uid: u32, gid: u32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and makes only the
    // async-signal-safe calls setgroups, setgid and setuid; it allocates
    // nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid as libc::gid_t) != 0
                || libc::setuid(uid as libc::uid_t) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes a root child started by `cmd` drop every capability from its
/// bounding set except none (Linux), so a handler run as root without
/// HANDLER_USER cannot read /proc of non-dumpable botfleet processes
/// (that needs CAP_SYS_PTRACE) or override file permissions.
pub fn drop_capabilities(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs between fork and exec and makes only
        // prctl and capset-free syscalls (prctl is async-signal-safe); it
        // allocates nothing and touches no lock. Dropping from the bounding
        // set and clearing ambient caps, then setting SECBIT_NOROOT makes
        // exec grant no capabilities to uid 0.
        unsafe {
            cmd.pre_exec(|| {
                for cap in 0..=63 {
                    // EINVAL past the last capability the kernel knows.
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) != 0 {
                        break;
                    }
                }
                // SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP(_LOCKED)
                let bits: libc::c_ulong = 0x1 | 0x2 | 0x4 | 0x8;
                if libc::prctl(libc::PR_SET_SECUREBITS, bits) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cmd;
    }
}

/// The pids of this process's children (Linux: every thread's
/// `/proc/self/task/<tid>/children`, where spawned workers and orphans
/// reparented to a subreaper are listed). None when it cannot be read.
pub fn own_children() -> Option<Vec<u32>> {
    // Each thread lists the children it started (workers come from the
    // supervisor's spawner thread) and those reparented to it.
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let mut path = task.path();
        path.push("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    Some(pids)
}

/// The process group of `pid` (from /proc/PID/stat), None when it is gone.
pub fn process_group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it start after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // state, ppid, pgrp
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// This process's own process group.
pub fn own_process_group() -> u32 {
    // SAFETY: getpgrp(2) cannot fail and takes no arguments.
    unsafe { libc::getpgrp() as u32 }
}

/// Gives the kernel back the pages of the main thread's stack below the
/// caller's frame (less a margin): what start-up touched deeper than the
/// code that runs from here on. They read as zeroes again when next used;
/// nothing below the stack pointer is live. Returns the bytes released;
/// 0 when the caller is not on the main thread's stack (`[stack]` in
/// /proc/self/maps). `#[inline(never)]`: the caller's frame, and so its
/// locals, lie above this function's.
#[inline(never)]
pub fn release_main_stack_below_here() -> io::Result<usize> {
    // Room left below the marker for this frame and madvise's own.
    const MARGIN: usize = 8 * 1024;
    // One or two read(2)s: /proc files report no size, and
    // read_to_string would start small and grow.
    let mut maps = Vec::with_capacity(16 * 1024);
    std::io::Read::read_to_end(&mut std::fs::File::open("/proc/self/maps")?, &mut maps)?;
    let maps = String::from_utf8_lossy(&maps);
    let Some(low) = maps.lines().find(|l| l.ends_with("[stack]")).and_then(|l| {
        let (range, _) = l.split_once(' ')?;
        let (lo, hi) = range.split_once('-')?;
        Some((
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        ))
    }) else {
        return Ok(0);
    };
    drop(maps);
    let marker = 0u8;
    let here = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    let (lo, hi) = low;
    if here < lo || here >= hi {
        return Ok(0);
    }
    // SAFETY: sysconf takes no pointer; a failure returns -1, caught below.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as usize } else { 4096 };
    let end = (here & !(page - 1)).saturating_sub(MARGIN);
    if end <= lo {
        return Ok(0);
    }
    // SAFETY: [lo, end) lies inside this process's main stack mapping and
    // wholly below the live frames (this one's included, with MARGIN to
    // spare for madvise's): no live data is there, and MADV_DONTNEED on
    // private anonymous memory only makes those pages read as zero later.
    check(unsafe { libc::madvise(lo as *mut libc::c_void, end - lo, libc::MADV_DONTNEED) })?;
    Ok(end - lo)
}

/// The calling thread's id (gettid(2)).
#[cfg(target_os = "linux")]
pub fn thread_id() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
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

    #[test]
    fn a_standard_stream_is_duplicated_and_nothing_else_is() {
        use std::os::fd::AsRawFd;
        let out = dup_stdio(2).expect("stderr is open in a test");
        assert!(
            out.as_raw_fd() > 2,
            "a new descriptor, not the stream's own"
        );
        assert!(dup_stdio(3).is_err(), "only 0, 1 and 2");
    }

    #[test]
    fn stack_release_is_a_no_op_off_the_main_thread_and_safe_on_it() {
        // A test runs on a spawned thread: not the main stack.
        assert_eq!(release_main_stack_below_here().expect("maps readable"), 0);
        // Deep frames, then a release, then deep frames again: the pages
        // come back as zeroes and nothing live was lost.
        #[inline(never)]
        fn deep(n: u32) -> u64 {
            let buf = std::hint::black_box([n as u8; 512]);
            if n == 0 {
                return buf[7] as u64;
            }
            deep(n - 1) + buf[3] as u64
        }
        let before = deep(64);
        let _ = release_main_stack_below_here();
        assert_eq!(deep(64), before);
    }
}
