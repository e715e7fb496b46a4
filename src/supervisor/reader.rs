//! One thread that reads every worker's stdout: poll(2) over the pipes,
//! JSON lines into `Event::FromWorker`, and at end of file the child reaped
//! into `Event::WorkerExited`. One thread instead of one per worker keeps
//! the supervisor small with a hundred bots. It owns the `Child` handles and
//! must never block on one worker: pipes are non-blocking, and a child that
//! closed its stdout but has not exited yet is checked again shortly.

use super::Event;
use crate::ipc::WorkerMsg;
use crate::sys;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdout};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

/// A line longer than this is not a message (it is dropped).
const MAX_LINE: usize = 64 * 1024;
/// After reading, the thread waits this long before it polls again, so the
/// lines that come meanwhile are read in one pass. poll(2) costs O(workers)
/// per call: with a 1,000-bot fleet's 500 heartbeats a second each waking
/// it alone, this thread took ~10 CPU-s a minute (bench/NOTES.md, scale).
/// A message that finds the thread waiting in poll is read at once; the
/// rest wait at most this long.
const COALESCE: Duration = Duration::from_millis(20);

/// A worker process for the reader to watch.
#[derive(Debug)]
pub struct Watched {
    pub bot_id: u64,
    pub generation: u64,
    pub child: Child,
    pub stdout: ChildStdout,
}

/// The supervisor's handle: hands new children to the reader thread.
#[derive(Debug)]
pub struct Reader {
    tx: Sender<Watched>,
    wake: UnixStream,
}

impl Reader {
    pub fn start(events: Sender<Event>) -> std::io::Result<Reader> {
        let (wake, wake_rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("worker-pipes".into())
            .stack_size(128 * 1024)
            .spawn(move || run(&rx, &wake_rx, &events))?;
        Ok(Reader { tx, wake })
    }

    /// Watches a new child; on failure the child comes back to the caller.
    pub fn watch(&self, watched: Watched) -> Result<(), Watched> {
        if let Err(e) = sys::set_nonblocking(watched.stdout.as_raw_fd()) {
            // A blocking pipe still works; only fairness between workers suffers.
            log::warn!("cannot make a worker pipe non-blocking: {e}");
        }
        self.tx.send(watched).map_err(|e| e.0)?;
        // A full wake pipe already means "look": WouldBlock is fine.
        match (&self.wake).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("cannot wake the worker pipe reader: {e}"),
        }
        Ok(())
    }
}

struct Entry {
    w: Watched,
    buf: Vec<u8>,
    eof: bool,
}

fn send(events: &Sender<Event>, event: Event) -> bool {
    events.send(event).is_ok()
}

fn drain_lines(e: &mut Entry, events: &Sender<Event>) -> bool {
    while let Some(nl) = e.buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = e.buf.drain(..=nl).collect();
        let text = String::from_utf8_lossy(&line);
        let event = match WorkerMsg::decode(&text) {
            Ok(msg) => Event::FromWorker {
                bot_id: e.w.bot_id,
                generation: e.w.generation,
                msg,
            },
            Err(err) => Event::BadLine {
                bot_id: e.w.bot_id,
                error: err.to_string(),
            },
        };
        if !send(events, event) {
            return false;
        }
    }
    if e.buf.len() > MAX_LINE {
        e.buf.clear();
        return send(
            events,
            Event::BadLine {
                bot_id: e.w.bot_id,
                error: format!("a line over {MAX_LINE} bytes"),
            },
        );
    }
    true
}

fn run(rx: &Receiver<Watched>, wake: &UnixStream, events: &Sender<Event>) {
    let mut entries: Vec<Entry> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut open = true;
    loop {
        // New children.
        loop {
            match rx.try_recv() {
                Ok(w) => entries.push(Entry {
                    w,
                    buf: Vec::new(),
                    eof: false,
                }),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Children whose pipe closed: reap them once they have exited.
        let mut i = 0;
        while i < entries.len() {
            if entries[i].eof {
                match entries[i].w.child.try_wait() {
                    Ok(Some(status)) => {
                        let e = entries.swap_remove(i);
                        use std::os::unix::process::ExitStatusExt;
                        let event = Event::WorkerExited {
                            bot_id: e.w.bot_id,
                            generation: e.w.generation,
                            code: status.code(),
                            signal: status.signal(),
                        };
                        if !send(events, event) {
                            return;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        log::warn!("cannot reap a worker: {err}");
                        let e = entries.swap_remove(i);
                        let event = Event::WorkerExited {
                            bot_id: e.w.bot_id,
                            generation: e.w.generation,
                            code: None,
                            signal: None,
                        };
                        if !send(events, event) {
                            return;
                        }
                        continue;
                    }
                }
            }
            i += 1;
        }
        if !open && entries.is_empty() {
            return;
        }
        let mut fds = vec![wake.as_raw_fd()];
        let live: Vec<usize> = (0..entries.len()).filter(|i| !entries[*i].eof).collect();
        fds.extend(live.iter().map(|i| entries[*i].w.stdout.as_raw_fd()));
        // Wait for input; while a closed child is still exiting, look again
        // every 20 ms to reap it.
        let exiting = entries.iter().any(|e| e.eof);
        let timeout = if exiting { 20 } else { -1 };
        let ready = match sys::poll_readable(&fds, timeout) {
            Ok(r) => r,
            Err(err) => {
                log::error!("poll on worker pipes failed: {err}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if ready.first() == Some(&true) {
            let mut sink = [0u8; 64];
            while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
        }
        let read_any = ready.iter().skip(1).any(|r| *r);
        for (slot, idx) in live.iter().enumerate() {
            if !ready.get(slot + 1).copied().unwrap_or(false) {
                continue;
            }
            let e = &mut entries[*idx];
            let started = Instant::now();
            loop {
                match e.w.stdout.read(&mut chunk) {
                    Ok(0) => {
                        e.eof = true;
                        break;
                    }
                    Ok(n) => {
                        e.buf.extend_from_slice(&chunk[..n]);
                        if !drain_lines(e, events) {
                            return;
                        }
                        // Be fair to the other workers.
                        if started.elapsed() > Duration::from_millis(5) {
                            break;
                        }
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        e.eof = true;
                        break;
                    }
                }
            }
        }
        if read_any {
            std::thread::sleep(COALESCE);
        }
    }
}
