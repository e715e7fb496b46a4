//! Descriptors: non-blocking mode, duplicating the standard streams,
//! poll(2) and epoll(7), pipes and socket pairs, a thread's own descriptor
//! table and passing descriptors between tables (SCM_RIGHTS). Every
//! `unsafe` block has a `// SAFETY:` note. Like the rest of `sys`, it must
//! never hold state or decide policy; it only wraps calls.

use std::io;

use super::check;

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

/// A new descriptor (close-on-exec) for the standard stream `fd` (0, 1 or
/// 2), owned by the caller: the stream without `std::io::stdin()` or
/// `stdout()`, whose first use allocates a buffer (8 kB for stdin, 1 kB
/// for stdout) that a worker never needs.
pub fn dup_stdio(fd: std::os::fd::RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if !(0..=2).contains(&fd) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a standard stream",
        ));
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) reads only integers; it returns a new
    // descriptor or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just returned by fcntl, is open, and nothing else
    // owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}

/// Waits until at least one of `fds` is readable (or hung up), at most
/// `timeout_ms` milliseconds. Returns, per descriptor, whether it is ready.
/// An interrupted wait (EINTR) reports nothing ready.
pub fn poll_readable(fds: &[std::os::fd::RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut set: Vec<libc::pollfd> = fds.iter().map(|&fd| pollfd(fd, libc::POLLIN)).collect();
    poll_set(&mut set, timeout_ms)?;
    Ok(set.iter().map(|p| p.revents != 0).collect())
}

fn pollfd(fd: std::os::fd::RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2) over `set`; an interrupted wait (EINTR) reports nothing ready.
fn poll_set(set: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    // SAFETY: `set` is a valid, exclusively borrowed array of `set.len()`
    // pollfd structs; poll(2) writes only their `revents` fields.
    let ret = unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        set.iter_mut().for_each(|p| p.revents = 0);
    }
    Ok(())
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

/// An epoll(7) instance, level-triggered, watching descriptors for input:
/// a wait costs O(ready descriptors), not O(watched) as poll(2) does.
/// Each descriptor is registered with a caller's `u64` key, given back
/// when it is ready. Closed on drop.
#[derive(Debug)]
pub struct Epoll {
    fd: std::os::fd::OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 takes one flag and returns a new descriptor
        // (or -1); no memory of ours is touched.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for input (and hang-up), reported with `key`.
    pub fn add(&self, fd: std::os::fd::RawFd, key: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: key,
        };
        // SAFETY: `ev` is a valid epoll_event that epoll_ctl only reads;
        // both descriptors are open (the caller owns `fd`).
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
    }

    /// Stops watching `fd` (before the caller closes it).
    pub fn remove(&self, fd: std::os::fd::RawFd) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; EPOLL_CTL_DEL ignores the event (non-null
        // for kernels before 2.6.9).
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) })
    }

    /// Waits at most `timeout_ms` (-1: for ever) and fills `keys` with the
    /// keys of ready descriptors (at most 256 a call; level-triggered, so
    /// the rest are reported by the next). An interrupted wait (EINTR)
    /// reports nothing ready.
    pub fn wait(&self, keys: &mut Vec<u64>, timeout_ms: i32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        keys.clear();
        const MAX: usize = 256;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        // SAFETY: `events` is a valid, exclusively borrowed array of MAX
        // epoll_event structs; the kernel writes at most MAX of them.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                MAX as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        keys.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// `poll_readable` for exactly two descriptors, with no allocation (the
/// worker's control thread waits on this every few seconds).
pub fn poll_readable2(fds: [std::os::fd::RawFd; 2], timeout_ms: i32) -> io::Result<[bool; 2]> {
    let mut set = fds.map(|fd| pollfd(fd, libc::POLLIN));
    poll_set(&mut set, timeout_ms)?;
    Ok(set.map(|p| p.revents != 0))
}

/// Waits until `fd` can take a write (or its reader is gone), at most
/// `timeout_ms` milliseconds. An interrupted wait (EINTR) reports false.
pub fn poll_writable(fd: std::os::fd::RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut set = [pollfd(fd, libc::POLLOUT)];
    poll_set(&mut set, timeout_ms)?;
    Ok(set[0].revents != 0)
}

/// Gives the calling thread its own copy of the process's descriptor
/// table (unshare(2) CLONE_FILES): descriptors it opens or closes from
/// then on are its own, and a process it spawns copies only this table.
#[cfg(target_os = "linux")]
pub fn unshare_descriptor_table() -> io::Result<()> {
    // SAFETY: unshare takes a flag word only; CLONE_FILES affects the
    // calling thread's descriptor table, which no Rust object borrows.
    check(unsafe { libc::unshare(libc::CLONE_FILES) })
}

/// Closes every descriptor of the calling thread's table but those in
/// `keep` (close_range(2); one by one from /proc/thread-self/fd on a
/// kernel without it). Meant right after `unshare_descriptor_table`,
/// where every other descriptor is a copy that nothing in this thread
/// owns.
#[cfg(target_os = "linux")]
pub fn close_all_but(keep: &[std::os::fd::RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from: u32 = 0;
    let mut ranges = Vec::with_capacity(keep.len() + 1);
    for &k in &keep {
        if k > from {
            ranges.push((from, k - 1));
        }
        from = k + 1;
    }
    ranges.push((from, u32::MAX));
    for (first, last) in ranges {
        // SAFETY: close_range takes plain integers; the descriptors it
        // closes are copies in this thread's own table (the caller's
        // contract), so no OwnedFd elsewhere is invalidated.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last as libc::c_uint,
                0 as libc::c_uint,
            )
        };
        if ret == 0 {
            continue;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        // Before Linux 5.9: the open ones, read from /proc.
        let open: Vec<u32> = std::fs::read_dir("/proc/thread-self/fd")?
            .filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for fd in open.into_iter().filter(|fd| (first..=last).contains(fd)) {
            // SAFETY: as above; the descriptor of the read_dir above is
            // already closed, so at worst this returns EBADF.
            unsafe { libc::close(fd as libc::c_int) };
        }
    }
    Ok(())
}

/// A connected pair of SOCK_SEQPACKET unix sockets, close-on-exec: every
/// `send_fds` arrives as one whole message.
pub fn seqpacket_pair() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors into the 2-element array.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded: both are new descriptors owned by no one else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// The most descriptors one `send_fds` message carries.
pub const MAX_FDS_PER_MESSAGE: usize = 4;

/// Sends `fds` (SCM_RIGHTS, at most MAX_FDS_PER_MESSAGE) with an 8-byte
/// `tag` over a unix socket. The receiver gets its own copies; ours stay
/// open until the caller drops them.
pub fn send_fds(
    sock: std::os::fd::BorrowedFd<'_>,
    tag: u64,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if fds.is_empty() || fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "between 1 and 4 descriptors a message",
        ));
    }
    let raw: Vec<libc::c_int> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let bytes = tag.to_ne_bytes();
    let data_len = std::mem::size_of_val(raw.as_slice()) as u32;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `control`, at least `space` bytes and
    // aligned; CMSG_FIRSTHDR returns its start (non-null as controllen
    // holds a header), and CMSG_DATA points inside it with room for
    // `data_len` bytes (CMSG_SPACE(data_len) <= its size).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
        std::ptr::copy_nonoverlapping(
            raw.as_ptr() as *const u8,
            libc::CMSG_DATA(cmsg),
            data_len as usize,
        );
    }
    loop {
        // SAFETY: msg and everything it points to (iov, bytes, control)
        // live until the call returns; sendmsg only reads them.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one `send_fds` message without waiting: its tag and the
/// descriptors it carried (close-on-exec, owned by the caller). A message
/// whose descriptors could not all be taken (the open-file limit) is an
/// error, the ones that came closed again; no message queued is
/// WouldBlock.
pub fn recv_fds(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<(u64, Vec<std::os::fd::OwnedFd>)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut bytes = [0u8; 8];
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: msg points at `bytes` and `control`, both live and
        // writable for the lengths given.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG
    // macros walk only within it, and each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / 4 new descriptors, now ours to own.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg) as *const libc::c_int;
                for i in 0..len / std::mem::size_of::<libc::c_int>() {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    fds.push(std::os::fd::OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n != bytes.len() || msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::other(
            "a descriptor hand-over came cut short (the open-file limit?)",
        ));
    }
    Ok((u64::from_ne_bytes(bytes), fds))
}

/// A pipe whose two ends are close-on-exec: (read end, write end).
pub fn pipe_cloexec() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the 2-element array.
    #[cfg(target_os = "linux")]
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: pipe writes two descriptors into the 2-element array;
        // fcntl takes plain integers.
        check(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
        for fd in fds {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    // SAFETY: the call succeeded: both are new descriptors owned by no one else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}
