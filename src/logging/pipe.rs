//! The supervisor's side of its workers' log lines: every worker's stderr
//! is a pipe, and one thread (`worker-logs`) polls them all, handing each
//! line to the logger, which renders it in the fleet's format (text or
//! JSON) to the fleet's sink (stderr or LOG_FILE). One thread for the whole
//! fleet, as for stdout. It must never block on one worker (pipes are
//! non-blocking) and never drop a line it has read, even a partial last one.

use crate::sys;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::ChildStderr;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// A line longer than this is cut (the rest follows as another line).
const MAX_LINE: usize = 16 * 1024;
/// After a round that read something the thread waits this long before it
/// polls again, so one poll(2) over every pipe, which costs O(workers)
/// (about 0.1 ms at 3,000), serves the lines of many workers instead of
/// one: polling once a line would cost a good part of a core at a few
/// thousand lines a second. A line waits at most this long; a worker's
/// 64 KiB pipe does not fill in it.
const GATHER: Duration = Duration::from_millis(20);

struct Followed {
    index: u32,
    bot_id: u64,
    stderr: ChildStderr,
    buf: Vec<u8>,
}

struct Handle {
    tx: Mutex<Sender<Followed>>,
    wake: UnixStream,
}

static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
/// Pipes still open, for `drain`.
static OPEN: Mutex<usize> = Mutex::new(0);
static CLOSED: Condvar = Condvar::new();

fn handle() -> Option<&'static Handle> {
    HANDLE
        .get_or_init(|| {
            let (wake, wake_rx) = UnixStream::pair().ok()?;
            wake.set_nonblocking(true).ok()?;
            wake_rx.set_nonblocking(true).ok()?;
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("worker-logs".into())
                .stack_size(128 * 1024)
                .spawn(move || run(&rx, &wake_rx))
                .ok()?;
            Some(Handle {
                tx: Mutex::new(tx),
                wake,
            })
        })
        .as_ref()
}

fn count(delta: isize) {
    let mut open = match OPEN.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    *open = open.saturating_add_signed(delta);
    CLOSED.notify_all();
}

/// Follows a worker's stderr until it closes. Returns the pipe when the
/// thread cannot be started (the caller then lets it go; lines are lost
/// only in that case, which is logged).
pub fn follow(stderr: ChildStderr, index: u32, bot_id: u64) -> Result<(), ChildStderr> {
    let Some(h) = handle() else {
        return Err(stderr);
    };
    if let Err(e) = sys::set_nonblocking(stderr.as_raw_fd()) {
        log::warn!("cannot make a worker's stderr non-blocking: {e}");
    }
    let sent = match h.tx.lock() {
        Ok(tx) => tx.send(Followed {
            index,
            bot_id,
            stderr,
            buf: Vec::new(),
        }),
        Err(_) => return Ok(()),
    };
    if let Err(back) = sent {
        return Err(back.0.stderr);
    }
    count(1);
    match (&h.wake).write(&[1]) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => log::warn!("cannot wake the worker log reader: {e}"),
    }
    Ok(())
}

/// Waits (at most `timeout`) until every followed pipe has closed and its
/// lines are written: the supervisor calls it once its workers are reaped.
pub fn drain(timeout: Duration) {
    let open = match OPEN.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if CLOSED
        .wait_timeout_while(open, timeout, |n| *n > 0)
        .is_err()
    {
        // Poisoned: the reader thread panicked; nothing left to wait for.
    }
}

fn emit(f: &Followed, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r']);
    if !text.is_empty() {
        super::from_worker(f.index, f.bot_id, text);
    }
}

/// Emits every complete line in `f.buf` (and a too-long partial one).
/// One pass, then one shift of the rest: not a shift of the buffer a line.
fn lines(f: &mut Followed) {
    let mut start = 0;
    while let Some(nl) = f.buf[start..].iter().position(|b| *b == b'\n') {
        emit(f, &f.buf[start..=start + nl]);
        start += nl + 1;
    }
    f.buf.drain(..start);
    if f.buf.len() > MAX_LINE {
        let line = std::mem::take(&mut f.buf);
        emit(f, &line);
    }
}

fn run(rx: &Receiver<Followed>, wake: &UnixStream) {
    let mut pipes: Vec<Followed> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            match rx.try_recv() {
                Ok(f) => pipes.push(f),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let mut fds = vec![wake.as_raw_fd()];
        fds.extend(pipes.iter().map(|f| f.stderr.as_raw_fd()));
        let ready = match sys::poll_readable(&fds, -1) {
            Ok(r) => r,
            Err(e) => {
                log::error!("poll on worker stderr pipes failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if ready.first() == Some(&true) {
            let mut sink = [0u8; 64];
            while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
        }
        let mut closed = Vec::new();
        let mut read_any = false;
        for (i, f) in pipes.iter_mut().enumerate() {
            if !ready.get(i + 1).copied().unwrap_or(false) {
                continue;
            }
            // At most 8 chunks a round: fair to the other workers.
            for _ in 0..8 {
                match f.stderr.read(&mut chunk) {
                    Ok(0) => {
                        closed.push(i);
                        break;
                    }
                    Ok(n) => {
                        read_any = true;
                        f.buf.extend_from_slice(&chunk[..n]);
                        lines(f);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed.push(i);
                        break;
                    }
                }
            }
        }
        for i in closed.into_iter().rev() {
            let f = pipes.swap_remove(i);
            let rest = f.buf.clone();
            emit(&f, &rest);
            count(-1);
        }
        if read_any {
            std::thread::sleep(GATHER);
        }
    }
}
