//! The supervisor's side of its workers' log lines: every worker's stderr
//! is a pipe, and one thread (`worker-logs`) waits on them all with
//! epoll(7) (each wake O(ready pipes), not O(workers)), handing each
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
/// waits again, so one wake serves the lines of many workers instead of
/// one. A line waits at most this long; a worker's 64 KiB pipe does not
/// fill in it.
const GATHER: Duration = Duration::from_millis(20);

struct Followed {
    index: u32,
    bot_id: u64,
    stderr: ChildStderr,
    /// The start of a line whose end has not come yet (empty, without an
    /// allocation, between lines).
    partial: Vec<u8>,
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
            let epoll = sys::Epoll::new().ok()?;
            epoll.add(wake_rx.as_raw_fd(), WAKE_KEY).ok()?;
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("worker-logs".into())
                .stack_size(128 * 1024)
                .spawn(move || run(&rx, &wake_rx, &epoll))
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
            partial: Vec::new(),
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

/// Emits every complete line of `data` (after `f.partial`); the unfinished
/// rest is kept as the partial line, which is cut and emitted past
/// MAX_LINE. Lines are emitted straight from the read buffer; only an
/// unfinished one is copied.
fn lines(f: &mut Followed, data: &[u8]) {
    let mut rest = data;
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        if f.partial.is_empty() {
            emit(f, &rest[..=nl]);
        } else {
            f.partial.extend_from_slice(&rest[..=nl]);
            let line = std::mem::take(&mut f.partial);
            emit(f, &line);
        }
        rest = &rest[nl + 1..];
    }
    f.partial.extend_from_slice(rest);
    if f.partial.len() > MAX_LINE {
        let line = std::mem::take(&mut f.partial);
        emit(f, &line);
    }
}

/// The key of the wake pipe in the epoll set (pipes' keys are slab indices).
const WAKE_KEY: u64 = u64::MAX;

fn run(rx: &Receiver<Followed>, wake: &UnixStream, epoll: &sys::Epoll) {
    // Pipes by key (the epoll key is the index); `free` lists holes.
    let mut slab: Vec<Option<Followed>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut ready: Vec<u64> = Vec::with_capacity(256);
    loop {
        loop {
            match rx.try_recv() {
                Ok(f) => {
                    let key = free.pop().unwrap_or(slab.len());
                    if let Err(e) = epoll.add(f.stderr.as_raw_fd(), key as u64) {
                        log::warn!("cannot watch a worker's stderr ({e}); its log lines are lost");
                        free.push(key);
                        count(-1);
                        continue;
                    }
                    if key == slab.len() {
                        slab.push(Some(f));
                    } else {
                        slab[key] = Some(f);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if let Err(e) = epoll.wait(&mut ready, -1) {
            log::error!("epoll on worker stderr pipes failed: {e}");
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let mut read_any = false;
        for &key in &ready {
            if key == WAKE_KEY {
                let mut sink = [0u8; 64];
                while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
                continue;
            }
            let key = key as usize;
            let Some(f) = slab.get_mut(key).and_then(Option::as_mut) else {
                continue;
            };
            let mut closed = false;
            // At most 8 chunks a round: fair to the other workers
            // (level-triggered: the rest is reported again).
            for _ in 0..8 {
                match f.stderr.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        read_any = true;
                        lines(f, &chunk[..n]);
                        if n < chunk.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                if let Some(f) = slab[key].take() {
                    if let Err(e) = epoll.remove(f.stderr.as_raw_fd()) {
                        log::debug!("cannot unwatch a closed worker stderr: {e}");
                    }
                    emit(&f, &f.partial);
                    free.push(key);
                    if free.len() == slab.len() {
                        // Every pipe closed: give the memory back.
                        slab = Vec::new();
                        free = Vec::new();
                    }
                    count(-1);
                }
            }
        }
        if read_any {
            std::thread::sleep(GATHER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_lines_are_kept_only_while_pending() {
        let mut child = std::process::Command::new("true")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("`true` can be started in tests");
        let stderr = child.stderr.take().expect("stderr was piped");
        let mut f = Followed {
            index: 0,
            bot_id: 1,
            stderr,
            partial: Vec::new(),
        };
        lines(&mut f, b"one\ntw");
        assert_eq!(f.partial, b"tw");
        lines(&mut f, b"o\n");
        assert!(f.partial.is_empty() && f.partial.capacity() == 0);
        let big = vec![b'x'; MAX_LINE + 1];
        lines(&mut f, &big);
        assert!(f.partial.is_empty(), "an overlong line is cut and emitted");
        let _ = child.wait();
    }
}
