//! One thread that reads every worker's stdout (our end of the socket pair
//! that is its stdin and stdout): epoll(7) over them all, JSON lines into
//! `Event::FromWorker` (a round's lines as one `Event::Workers`), and at
//! end of file the child reaped into `Event::WorkerExited`. One thread
//! instead of one per worker keeps the supervisor small with thousands of
//! bots, and epoll keeps each wake O(ready workers), not O(workers). It owns the `Child` handles and must
//! never block on one worker: sockets are non-blocking, and a child that
//! closed its stdout but has not exited yet is checked again shortly.
//!
//! The supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER): what a
//! dead worker's tree leaves behind (a persistent handler killed by its
//! parent-death signal, that handler's own children) is reparented here,
//! and this thread kills (its whole group) and reaps every child that is
//! not one of its workers, so no orphan outlives its owner. The supervisor
//! process starts no other children while it runs; `Reader::spawn_gate`
//! keeps a worker being spawned from ever looking like an orphan.
//!
//! Per worker it keeps the `Child`, its pipe and a partial line only while
//! one is pending; one read buffer serves every pipe.

use super::Event;
use crate::ipc::WorkerMsg;
use crate::sys;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A line longer than this is not a message (it is dropped).
const MAX_LINE: usize = 64 * 1024;
/// After a round that read something the thread waits this long before it
/// waits again, so one wake of this thread, and one of the supervisor loop
/// (the round's lines go to it as one `Event::Workers`), serves the lines
/// of many workers: 1,000 workers send 200 heartbeats a second, and at
/// 10 ms a round caught 4 of them, each round costing two wakes of each
/// thread (most of the idle supervisor's CPU). Messages wait at most this
/// long (the heartbeat period is 5 s).
const GATHER: Duration = Duration::from_millis(50);
/// After a worker exits (or an orphan is reaped), children that are not
/// workers are looked for this long: a dead worker's handler dies by its
/// parent-death signal a moment later, and its children come to us then.
const SWEEP_FOR: Duration = Duration::from_secs(3);
/// How often they are looked for in that window.
const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// The key of the wake pipe in the epoll set (workers' keys are slab indices).
const WAKE_KEY: u64 = u64::MAX;

/// A worker process for the reader to watch.
#[derive(Debug)]
pub struct Watched {
    pub bot_id: u64,
    pub generation: u64,
    pub child: Child,
    /// The worker's stdout (and stdin: one socket pair, shared with the
    /// supervisor loop, which writes to it).
    pub pipe: Arc<UnixStream>,
}

/// The supervisor's handle: hands new children to the reader thread.
#[derive(Debug)]
pub struct Reader {
    tx: Sender<Watched>,
    wake: UnixStream,
    gate: Arc<Mutex<()>>,
}

impl Reader {
    pub fn start(events: Sender<Event>) -> std::io::Result<Reader> {
        let (wake, wake_rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let epoll = sys::Epoll::new()?;
        epoll.add(wake_rx.as_raw_fd(), WAKE_KEY)?;
        // Orphans of a dead worker's tree come to this process, not to init.
        if let Err(e) = sys::become_subreaper() {
            log::warn!("cannot become the reaper of the workers' orphans: {e}");
        }
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(Mutex::new(()));
        let thread_gate = Arc::clone(&gate);
        std::thread::Builder::new()
            .name("worker-pipes".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let mut r = Run {
                    rx,
                    wake: wake_rx,
                    events,
                    epoll,
                    gate: thread_gate,
                    slab: Vec::new(),
                    free: Vec::new(),
                    live: 0,
                    exiting: Vec::new(),
                    sweep_until: None,
                    last_sweep: None,
                };
                r.run();
            })?;
        Ok(Reader { tx, wake, gate })
    }

    /// Held while a worker is spawned and handed over: the orphan sweep
    /// takes it too, so a child it finds is either a watched worker or not
    /// a worker at all.
    pub fn spawn_gate(&self) -> std::sync::MutexGuard<'_, ()> {
        match self.gate.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Watches a new child; on failure the child comes back to the caller.
    pub fn watch(&self, watched: Watched) -> Result<(), Watched> {
        if let Err(e) = sys::set_nonblocking(watched.pipe.as_raw_fd()) {
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
    /// The start of a line whose end has not come yet (empty, without an
    /// allocation, between lines).
    partial: Vec<u8>,
    eof: bool,
}

struct Run {
    rx: Receiver<Watched>,
    wake: UnixStream,
    events: Sender<Event>,
    epoll: sys::Epoll,
    gate: Arc<Mutex<()>>,
    /// Workers by key (the epoll key is the index); `free` lists holes.
    slab: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Entries in the slab.
    live: usize,
    /// Keys whose pipe closed: reaped once their child has exited.
    exiting: Vec<usize>,
    /// Look for orphans until then.
    sweep_until: Option<Instant>,
    last_sweep: Option<Instant>,
}

/// Decodes one line (without its newline) into the event it stands for.
fn event_of(w: &Watched, line: &[u8]) -> Event {
    let text = String::from_utf8_lossy(line);
    match WorkerMsg::decode(&text) {
        Ok(msg) => Event::FromWorker {
            bot_id: w.bot_id,
            generation: w.generation,
            msg,
        },
        Err(err) => Event::BadLine {
            bot_id: w.bot_id,
            error: err.to_string(),
        },
    }
}

/// Queues an event for every complete line of `data` (after `e.partial`)
/// on `out`; the unfinished rest becomes the new partial line.
fn take_lines(e: &mut Entry, data: &[u8], out: &mut Vec<Event>) {
    let mut rest = data;
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        let event = if e.partial.is_empty() {
            event_of(&e.w, &rest[..nl])
        } else {
            e.partial.extend_from_slice(&rest[..nl]);
            let line = std::mem::take(&mut e.partial);
            event_of(&e.w, &line)
        };
        out.push(event);
        rest = &rest[nl + 1..];
    }
    if e.partial.len() + rest.len() > MAX_LINE {
        e.partial = Vec::new();
        out.push(Event::BadLine {
            bot_id: e.w.bot_id,
            error: format!("a line over {MAX_LINE} bytes"),
        });
        return;
    }
    e.partial.extend_from_slice(rest);
}

impl Run {
    fn send(&self, event: Event) -> bool {
        self.events.send(event).is_ok()
    }

    /// New children from the supervisor into the slab and the epoll set.
    /// False once the supervisor's handle is gone.
    fn take_new(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(w) => {
                    let key = self.free.pop().unwrap_or(self.slab.len());
                    let fd = w.pipe.as_raw_fd();
                    let eof = match self.epoll.add(fd, key as u64) {
                        Ok(()) => false,
                        Err(err) => {
                            // Unwatched, it would never be reaped: treat
                            // its pipe as closed, so it is reaped on exit.
                            log::error!("cannot watch a worker pipe: {err}");
                            true
                        }
                    };
                    let entry = Entry {
                        w,
                        partial: Vec::new(),
                        eof,
                    };
                    if key == self.slab.len() {
                        self.slab.push(Some(entry));
                    } else {
                        self.slab[key] = Some(entry);
                    }
                    self.live += 1;
                    if eof {
                        self.exiting.push(key);
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Reaps the children whose pipe closed once they have exited.
    fn reap_exited(&mut self) -> bool {
        let mut i = 0;
        while i < self.exiting.len() {
            let key = self.exiting[i];
            let Some(e) = self.slab[key].as_mut() else {
                self.exiting.swap_remove(i);
                continue;
            };
            let (code, signal) = match e.w.child.try_wait() {
                Ok(Some(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    (status.code(), status.signal())
                }
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Err(err) => {
                    log::warn!("cannot reap a worker: {err}");
                    (None, None)
                }
            };
            self.exiting.swap_remove(i);
            let Some(e) = self.slab[key].take() else {
                continue;
            };
            self.free.push(key);
            self.live -= 1;
            if self.free.len() == self.slab.len() {
                // Every worker gone: give the memory back.
                self.slab = Vec::new();
                self.free = Vec::new();
            }
            // What a dead worker's tree leaves behind comes to us now.
            self.sweep_until = Some(Instant::now() + SWEEP_FOR);
            let event = Event::WorkerExited {
                bot_id: e.w.bot_id,
                generation: e.w.generation,
                code,
                signal,
            };
            if !self.send(event) {
                return false;
            }
        }
        true
    }

    fn worker_pids(&self) -> std::collections::HashSet<u32> {
        self.slab.iter().flatten().map(|e| e.w.child.id()).collect()
    }

    /// Kills and reaps every child of this process that is not a worker:
    /// orphans reparented to us as subreaper (or as PID 1).
    fn sweep_orphans(&mut self) -> bool {
        let gate = Arc::clone(&self.gate);
        let _held = match gate.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // A worker spawned before we took the gate is in the channel now.
        let open = self.take_new();
        let workers = self.worker_pids();
        let mut reaped = false;
        while let Some(pid) = sys::reap_orphan(&|pid| workers.contains(&pid)) {
            log::debug!("Reaped orphan process {pid}");
            reaped = true;
        }
        if let Some(children) = sys::own_children() {
            let mine = sys::own_process_group();
            for pid in children {
                if workers.contains(&pid) {
                    continue;
                }
                // Its whole group (a handler and what it started), unless
                // that group is ours; then the process itself.
                if let Some(pgid) = sys::process_group_of(pid).filter(|g| *g != mine && *g > 1) {
                    let _gone = sys::signal_group(pgid, sys::Signal::Kill);
                }
                match sys::signal_pid(pid, sys::Signal::Kill) {
                    Ok(()) => log::warn!("Killed orphan process {pid} left by a worker"),
                    Err(e) => log::debug!("orphan {pid}: {e}"),
                }
                reaped = true;
            }
        }
        if reaped {
            // Its own children come to us in turn; reap the killed ones.
            self.sweep_until = Some(Instant::now() + SWEEP_FOR);
        }
        open
    }

    fn run(&mut self) {
        let mut chunk = vec![0u8; 16 * 1024];
        let mut ready: Vec<u64> = Vec::with_capacity(256);
        let pid_one = std::process::id() == 1;
        let mut open = true;
        loop {
            open &= self.take_new();
            if !self.reap_exited() {
                return;
            }
            let now = Instant::now();
            if self.sweep_until.is_some_and(|t| t <= now) {
                self.sweep_until = None;
            }
            let sweeping = self.sweep_until.is_some();
            let sweep_due = self.last_sweep.is_none_or(|t| now - t >= SWEEP_EVERY);
            if (sweeping || pid_one) && sweep_due {
                self.last_sweep = Some(now);
                open &= self.sweep_orphans();
            }
            if !open && self.live == 0 {
                return;
            }
            // Wait for input; while a closed child is still exiting, look
            // again every 20 ms to reap it; while orphans may come, every
            // SWEEP_EVERY; as PID 1, once a second.
            let timeout = if !self.exiting.is_empty() {
                20
            } else if sweeping {
                SWEEP_EVERY.as_millis() as i32
            } else if pid_one {
                1000
            } else {
                -1
            };
            if let Err(err) = self.epoll.wait(&mut ready, timeout) {
                log::error!("epoll on worker pipes failed: {err}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let mut read_any = false;
            let mut lines: Vec<Event> = Vec::new();
            for &key in &ready {
                if key == WAKE_KEY {
                    let mut sink = [0u8; 64];
                    while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
                    continue;
                }
                let key = key as usize;
                let Some(e) = self.slab.get_mut(key).and_then(Option::as_mut) else {
                    continue;
                };
                if e.eof {
                    continue;
                }
                let started = Instant::now();
                loop {
                    match (&*e.w.pipe).read(&mut chunk) {
                        Ok(0) => {
                            e.eof = true;
                            break;
                        }
                        Ok(n) => {
                            read_any = true;
                            take_lines(e, &chunk[..n], &mut lines);
                            // Be fair to the other workers (level-triggered:
                            // the rest is reported again).
                            if n < chunk.len() || started.elapsed() > Duration::from_millis(5) {
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
                if e.eof {
                    e.partial = Vec::new();
                    if let Err(err) = self.epoll.remove(e.w.pipe.as_raw_fd()) {
                        log::debug!("cannot unwatch a closed worker pipe: {err}");
                    }
                    self.exiting.push(key);
                }
            }
            let sent = match lines.len() {
                0 => true,
                1 => self.send(lines.remove(0)),
                _ => self.send(Event::Workers(lines)),
            };
            if !sent {
                return;
            }
            // Not while workers are exiting (a shutdown, a restart): their
            // reaping, and the supervisor's own exit, would wait on it.
            if read_any && self.exiting.is_empty() {
                std::thread::sleep(GATHER);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let child = std::process::Command::new("true")
            .spawn()
            .expect("`true` can be started in tests");
        let (pipe, _theirs) = UnixStream::pair().expect("a socket pair in tests");
        Entry {
            w: Watched {
                bot_id: 7,
                generation: 1,
                child,
                pipe: Arc::new(pipe),
            },
            partial: Vec::new(),
            eof: false,
        }
    }

    #[test]
    fn lines_split_across_reads_are_joined_and_partials_freed() {
        let mut e = entry();
        let hb = br#"{"type":"FATAL","reason":"x"}"#;
        let mut out = Vec::new();
        take_lines(&mut e, &hb[..10], &mut out);
        assert!(out.is_empty());
        assert_eq!(e.partial.len(), 10);
        let mut rest = hb[10..].to_vec();
        rest.push(b'\n');
        rest.extend_from_slice(b"not json\n");
        take_lines(&mut e, &rest, &mut out);
        assert!(e.partial.is_empty() && e.partial.capacity() == 0);
        let got = out;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(got[1], Event::BadLine { bot_id: 7, .. }));
        let _ = e.w.child.wait();
    }

    #[test]
    fn an_overlong_line_is_dropped_and_said() {
        let mut e = entry();
        let big = vec![b'x'; MAX_LINE + 1];
        let mut out = Vec::new();
        take_lines(&mut e, &big, &mut out);
        assert!(e.partial.is_empty());
        assert!(matches!(out.as_slice(), [Event::BadLine { bot_id: 7, .. }]));
        let _ = e.w.child.wait();
    }
}
