//! The persistent handler (BOT_HANDLER_MODE=persistent): one long-lived
//! handler process per worker speaking protocol 1 over its stdin and
//! stdout, started without a shell in BOT_DATA_DIR, in its own process
//! group, with the same confinement as exec mode. Job threads call
//! [`Persistent::handle`] (one update, blocks until its answer or its
//! deadline) and [`Persistent::results`]; one manager thread (re)starts the
//! process with backoff, hands the updates the dead process held to the new
//! one, kills a process that stays silent past a missed deadline, and stops
//! it (EOF on stdin, then SIGTERM, then SIGKILL to its group, bounded).
//!
//! The process's stdin is non-blocking and written by whoever has the line
//! (the job thread handing an update or its results, the manager handing
//! held updates again), so one update costs no thread hop on the way in.
//! What the pipe cannot take at once waits in a backlog that the process's
//! writer thread drains as the pipe makes room, and later lines queue
//! behind it: the order holds, and no job thread ever blocks on a handler
//! that does not read. The way out needs no reader thread either: stdout
//! is non-blocking too, and a job waiting for its answer reads it itself
//! (one job at a time holds the reading; the answers of the others it
//! hands on by id, and when it leaves it nudges one of them to read on);
//! while no job waits the manager reads on its tick. One more thread per
//! process reads stderr (to the log).
//!
//! Invariants: at most `concurrency` updates outstanding; an update is
//! answered exactly once (reply, error, timeout or stop); every process it
//! starts is reaped and its group killed before the next one starts; a
//! line that breaks the protocol restarts the process, never panics.
//!
//! Past ~700 lines on purpose: the stdin queue, the stdout reading and the
//! manager share one lock, one generation and the pending table, and a
//! quarter of the file is its tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::handler::{self, Confinement};
use super::protocol::{self, BotIdentity, CallResult, FromHandler};
use crate::sys;

/// First restart delay; doubles per crash in a row up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Stop: how long after EOF before SIGTERM, and after SIGTERM before
/// SIGKILL, unless the caller has less time ([`Persistent::stop_within`]).
pub const STOP_GRACE: Duration = Duration::from_secs(1);
/// After a missed deadline, a process that writes nothing for this long is
/// restarted.
const SILENT_GRACE: Duration = Duration::from_secs(2);

/// What the persistent handler is started with.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub argv: Vec<String>,
    /// The whole environment of the process (nothing else is inherited).
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub bot: BotIdentity,
    pub timeout: Duration,
    pub concurrency: usize,
    pub confinement: Confinement,
    /// HANDLER_MAX_MEMORY_MB in bytes: the process's address-space limit.
    pub max_memory: Option<u64>,
}

/// How an update ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The handler's calls (maybe none).
    Calls(Vec<Value>),
    /// The handler said it failed.
    Error(String),
    /// No answer by the deadline.
    Timeout,
    /// The handler is being stopped.
    Stopped,
}

/// What a waiting job is told.
enum Msg {
    Answer(Answer),
    /// Nobody reads the handler's stdout now: read it yourself.
    Lead,
}

struct Pending {
    /// Its protocol line (handed again as it is to a restarted process).
    line: String,
    tx: mpsc::Sender<Msg>,
    /// The generation of the process that holds it (0: none yet).
    sent_to: u64,
}

struct State {
    spec: Spec,
    /// Generation of the current process; 0 before the first.
    generation: u64,
    /// The current process's stdin; None while there is none (dropping it
    /// is the EOF that means stop, once its backlog is out).
    writer: Option<Writer>,
    /// The current process's stdout; None while there is none.
    output: Option<Arc<Output>>,
    /// The current process broke the protocol, died or must restart.
    dead: bool,
    pending: HashMap<String, Pending>,
    next_id: u64,
    stopping: bool,
    /// EOF to SIGTERM, and SIGTERM to SIGKILL, when stopping.
    stop_grace: Duration,
    last_line: Instant,
    overdue_since: Option<Instant>,
    /// Jobs waiting in `handle` for a slot (none: a freed slot wakes nobody).
    slot_waiters: usize,
}

struct Shared {
    st: Mutex<State>,
    /// The manager's: a process died, new settings, stop.
    cv: Condvar,
    /// An update's slot came free (or stop): `handle` waits on it, so an
    /// answer wakes a job waiting for a slot, never the manager.
    slots: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while holding it;
        // the state is still consistent enough to stop cleanly.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks process `generation` as gone (if it is still the current one).
    fn mark_dead(&self, generation: u64) {
        let mut st = self.lock();
        if st.generation == generation {
            st.dead = true;
            st.writer = None;
            st.output = None;
        }
        drop(st);
        self.cv.notify_all();
    }

    /// Tells one waiting job to read the handler's stdout (the job that
    /// read it is leaving).
    fn nudge_one(&self) {
        let st = self.lock();
        if let Some(p) = st.pending.values().next() {
            if p.tx.send(Msg::Lead).is_err() {}
        }
    }

    /// A slot came free: one job waiting for one may go. `waiters` is
    /// `slot_waiters`, read under the lock that freed the slot.
    fn slot_freed(&self, waiters: usize) {
        if waiters > 0 {
            self.slots.notify_one();
        }
    }
}

/// One process's stdin: a non-blocking pipe written at once by the thread
/// that has the line, with what does not fit left to the writer thread.
struct Input {
    q: Mutex<InputQ>,
    /// The writer thread's: a backlog to drain, or the end.
    cv: Condvar,
}

struct InputQ {
    /// None once the writer thread closed it (the EOF).
    stdin: Option<std::process::ChildStdin>,
    /// Bytes the pipe could not take yet, oldest first; every later line
    /// goes behind them.
    backlog: Vec<u8>,
    /// No more lines: EOF once the backlog is out.
    closed: bool,
    /// A write failed: the process is gone or not reading its stdin.
    broken: bool,
}

/// Why a line did not reach the handler's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputError {
    /// Closed (stop or restart) or broken (the process is gone).
    Gone,
}

impl Input {
    fn lock(&self) -> MutexGuard<'_, InputQ> {
        // Poisoned: a thread panicked mid-write; the queue is still whole.
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `line` now as far as the pipe takes it, without blocking;
    /// the rest (and every line while a backlog waits) is left to the
    /// writer thread.
    fn send(&self, line: &[u8]) -> Result<(), InputError> {
        let mut q = self.lock();
        if q.closed || q.broken {
            return Err(InputError::Gone);
        }
        if !q.backlog.is_empty() {
            q.backlog.extend_from_slice(line);
            return Ok(());
        }
        let Some(stdin) = q.stdin.as_mut() else {
            return Err(InputError::Gone);
        };
        match write_some(stdin, line) {
            Ok(n) if n == line.len() => Ok(()),
            Ok(n) => {
                q.backlog.extend_from_slice(&line[n..]);
                drop(q);
                self.cv.notify_one();
                Ok(())
            }
            Err(_) => {
                q.broken = true;
                drop(q);
                self.cv.notify_one();
                Err(InputError::Gone)
            }
        }
    }

    /// No more lines: the writer thread closes stdin once its backlog is out.
    fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_one();
    }
}

/// Writes as much of `buf` as the non-blocking pipe takes; Ok(count).
fn write_some(w: &mut impl Write, buf: &[u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match w.write(&buf[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One process's stdout (non-blocking): whoever takes `lines` reads, and
/// hands every whole line on by id; nobody else reads meanwhile.
struct Output {
    generation: u64,
    fd: std::os::fd::RawFd,
    lines: Mutex<Option<Lines>>,
}

struct Lines {
    stdout: std::process::ChildStdout,
    /// Read and not yet a whole line.
    buf: Vec<u8>,
    chunk: Vec<u8>,
    /// EOF or a protocol violation: nothing more is read from it.
    done: bool,
}

impl Output {
    /// The reading, unless someone has it or the stream is over.
    fn take(&self) -> Option<Lines> {
        let mut g = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        match &*g {
            Some(l) if !l.done => g.take(),
            _ => None,
        }
    }

    fn put(&self, l: Lines) {
        *self.lines.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
    }

    /// Reads what the process wrote (waiting up to `wait_ms` for it) and
    /// hands each whole line on; the reading must be taken. Whether it
    /// read anything.
    fn read(&self, shared: &Shared, l: &mut Lines, wait_ms: i32) -> bool {
        if l.done {
            return false;
        }
        if !l.buf.contains(&b'\n') {
            match sys::poll_readable(&[self.fd], wait_ms) {
                Ok(r) if r.first() == Some(&true) => {}
                Ok(_) => return false,
                Err(e) => {
                    log::debug!("waiting on the handler's stdout: {e}");
                    // Not a spin while the error lasts.
                    std::thread::sleep(Duration::from_millis(10));
                    return false;
                }
            }
            let Lines {
                stdout, buf, chunk, ..
            } = l;
            match stdout.read(chunk) {
                Ok(0) => return self.end(shared, l, None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::Interrupted =>
                {
                    return false
                }
                Err(_) => return self.end(shared, l, None),
            }
        }
        let mut start = 0;
        while let Some(pos) = l.buf[start..].iter().position(|&b| b == b'\n') {
            let line = &l.buf[start..start + pos];
            start += pos + 1;
            if line.len() > protocol::MAX_LINE {
                let e = protocol::ProtocolError::TooLong(line.len());
                return self.end(shared, l, Some(e));
            }
            if let Err(e) = deliver(shared, self.generation, line) {
                return self.end(shared, l, Some(e));
            }
        }
        l.buf.drain(..start);
        if l.buf.len() > protocol::MAX_LINE {
            let e = protocol::ProtocolError::TooLong(l.buf.len());
            return self.end(shared, l, Some(e));
        }
        true
    }

    /// EOF, a broken pipe or a violation: this process is done.
    fn end(
        &self,
        shared: &Shared,
        l: &mut Lines,
        violation: Option<protocol::ProtocolError>,
    ) -> bool {
        if let Some(e) = violation {
            log::warn!("the persistent handler broke protocol 1: {e}");
        }
        l.done = true;
        l.buf = Vec::new();
        shared.mark_dead(self.generation);
        true
    }
}

/// Reads what is there when nobody else reads (the manager's tick): late
/// answers count as lines, EOF and violations are seen while idle.
fn read_idle(shared: &Shared) {
    let out = shared.lock().output.clone();
    if let Some(out) = out {
        if let Some(mut l) = out.take() {
            // Bounded: a process that writes without end gets a pause.
            for _ in 0..64 {
                if !out.read(shared, &mut l, 0) {
                    break;
                }
            }
            out.put(l);
            // A job that found the reading taken meanwhile reads on now.
            shared.nudge_one();
        }
    }
}

/// Hands one line the handler wrote to the job waiting for it.
fn deliver(shared: &Shared, generation: u64, line: &[u8]) -> Result<(), protocol::ProtocolError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(());
    }
    let msg = protocol::parse(text)?;
    let mut st = shared.lock();
    if st.generation != generation {
        return Ok(());
    }
    st.last_line = Instant::now();
    match st.pending.remove(msg.id()) {
        Some(p) => {
            let answer = match msg {
                FromHandler::Reply { calls, .. } => Answer::Calls(calls),
                FromHandler::Error { message, .. } => Answer::Error(message),
            };
            if p.tx.send(Msg::Answer(answer)).is_err() {}
        }
        None => log::debug!(
            "an answer for update {}, which is no longer waiting",
            msg.id()
        ),
    }
    let waiters = st.slot_waiters;
    drop(st);
    shared.slot_freed(waiters);
    Ok(())
}

/// How long a job reads (or waits) before it looks again at its answer,
/// the deadline and whether a new process replaced the one it read.
const READ_SLICE: Duration = Duration::from_millis(100);

/// The state's handle on the current process's stdin; dropping it (the
/// process is stopped, restarted or gone) closes that stdin.
struct Writer(Arc<Input>);

impl Writer {
    fn send(&self, line: &str) -> Result<(), InputError> {
        self.0.send(line.as_bytes())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The persistent handler of one worker.
pub struct Persistent {
    shared: Arc<Shared>,
    manager: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Persistent {
    /// Starts the manager thread, which starts the process at once.
    pub fn start(spec: Spec) -> std::io::Result<Persistent> {
        let shared = Arc::new(Shared {
            st: Mutex::new(State {
                spec,
                generation: 0,
                writer: None,
                output: None,
                dead: false,
                pending: HashMap::new(),
                next_id: 1,
                stopping: false,
                stop_grace: STOP_GRACE,
                last_line: Instant::now(),
                overdue_since: None,
                slot_waiters: 0,
            }),
            cv: Condvar::new(),
            slots: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let manager = std::thread::Builder::new()
            .name("handler-mgr".into())
            .stack_size(128 * 1024)
            .spawn(move || manage(&s))?;
        Ok(Persistent {
            shared,
            manager: Mutex::new(Some(manager)),
        })
    }

    /// New settings: a changed program, environment or directory restarts
    /// the process (without backoff); the rest applies at once.
    pub fn update(&self, spec: Spec) {
        let mut st = self.shared.lock();
        if st.spec == spec {
            // The same settings (every update asks): nobody to wake.
            return;
        }
        let restart =
            st.spec.argv != spec.argv || st.spec.env != spec.env || st.spec.dir != spec.dir;
        st.spec = spec;
        if restart && st.generation != 0 {
            st.dead = true;
            st.writer = None;
            st.output = None;
        }
        drop(st);
        self.shared.cv.notify_all();
        // The concurrency may have grown.
        self.shared.slots.notify_all();
    }

    /// Hands one update to the handler and waits for its answer. Returns
    /// the update's protocol id (for [`Persistent::results`]) and the answer.
    pub fn handle(&self, update: &Value) -> (String, Answer) {
        let mut st = self.shared.lock();
        while st.pending.len() >= st.spec.concurrency.max(1) && !st.stopping {
            st.slot_waiters += 1;
            st = self
                .shared
                .slots
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
            st.slot_waiters -= 1;
        }
        let id = st.next_id.to_string();
        if st.stopping {
            return (id, Answer::Stopped);
        }
        st.next_id += 1;
        let timeout = st.spec.timeout;
        let deadline_ms = unix_ms() + timeout.as_millis() as u64;
        let (tx, rx) = mpsc::channel();
        let mut sent_to = 0;
        let line = protocol::update(&id, deadline_ms, update);
        let mut broke = false;
        if let (Some(w), false) = (&st.writer, st.dead) {
            match w.send(&line) {
                Ok(()) => sent_to = st.generation,
                Err(InputError::Gone) => broke = true,
            }
        }
        if broke {
            // Its stdin is gone: the manager restarts it and hands this
            // update (not sent to anyone yet) to the next process.
            st.dead = true;
            st.writer = None;
            st.output = None;
        }
        st.pending.insert(id.clone(), Pending { line, tx, sent_to });
        drop(st);
        if broke {
            self.shared.cv.notify_all();
        }
        let deadline = Instant::now() + timeout;
        let mut read = false;
        let answer = loop {
            match rx.try_recv() {
                Ok(Msg::Answer(a)) => break a,
                Ok(Msg::Lead) | Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => break Answer::Stopped,
            }
            let now = Instant::now();
            if now >= deadline {
                break self.timed_out(&id, &rx);
            }
            let left = (deadline - now).min(READ_SLICE);
            // Nobody reads: read the answer here, no hand-off from a thread.
            let out = self.shared.lock().output.clone();
            if let Some(out) = out {
                if let Some(mut l) = out.take() {
                    read = true;
                    out.read(&self.shared, &mut l, (left.as_millis() as i32).max(1));
                    out.put(l);
                    continue;
                }
            }
            match rx.recv_timeout(left) {
                Ok(Msg::Answer(a)) => break a,
                Ok(Msg::Lead) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break Answer::Stopped,
            }
        };
        if read {
            // Others may be waiting for the reading this job gave up.
            self.shared.nudge_one();
        }
        (id, answer)
    }

    /// The deadline passed: the update is given up (unless its answer came
    /// in just now).
    fn timed_out(&self, id: &str, rx: &mpsc::Receiver<Msg>) -> Answer {
        let mut st = self.shared.lock();
        match st.pending.remove(id) {
            Some(_) => {
                st.overdue_since.get_or_insert_with(Instant::now);
                let waiters = st.slot_waiters;
                drop(st);
                self.shared.slot_freed(waiters);
                Answer::Timeout
            }
            // Answered between the deadline and the lock.
            None => match rx.try_recv() {
                Ok(Msg::Answer(a)) => a,
                _ => Answer::Timeout,
            },
        }
    }

    /// Hands the results of a reply's calls back to the handler.
    pub fn results(&self, id: &str, results: &[CallResult]) {
        let line = protocol::results(id, results);
        let st = self.shared.lock();
        if let (Some(w), false) = (&st.writer, st.dead) {
            if w.send(&line).is_err() {
                log::debug!("the handler is gone; results for {id} dropped");
            }
        }
    }

    /// Stops the process (EOF, SIGTERM, SIGKILL; bounded) and the manager;
    /// updates still waiting are answered `Stopped`.
    pub fn stop(&self) {
        self.stop_within(STOP_GRACE);
    }

    /// `stop` with `grace` from EOF to SIGTERM and from SIGTERM to SIGKILL.
    pub fn stop_within(&self, grace: Duration) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            st.stop_grace = grace;
        }
        self.shared.cv.notify_all();
        self.shared.slots.notify_all();
        let handle = self
            .manager
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            if h.join().is_err() {
                log::error!("the handler manager thread panicked");
            }
        }
    }
}

impl Drop for Persistent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The running process, owned by the manager thread.
struct Running {
    child: Child,
    started: Instant,
}

fn manage(shared: &Arc<Shared>) {
    let mut running: Option<Running> = None;
    let mut backoff = MIN_BACKOFF;
    let mut next_start = Instant::now();
    loop {
        read_idle(shared);
        let mut st = shared.lock();
        if st.stopping {
            st.writer = None;
            st.output = None;
            let grace = st.stop_grace;
            let waiting: Vec<Pending> = st.pending.drain().map(|(_, p)| p).collect();
            drop(st);
            shared.cv.notify_all();
            shared.slots.notify_all();
            for p in waiting {
                if p.tx.send(Msg::Answer(Answer::Stopped)).is_err() {}
            }
            if let Some(r) = running.take() {
                stop_process(r, grace);
            }
            return;
        }
        // A process that exited while something still holds its stdout.
        if let Some(r) = running.as_mut() {
            if !st.dead && matches!(r.child.try_wait(), Ok(Some(_))) {
                st.dead = true;
                st.writer = None;
                st.output = None;
            }
        }
        if st.dead {
            if let Some(mut r) = running.take() {
                kill_group(&r.child);
                let status = r.child.wait();
                log::warn!(
                    "the persistent handler stopped ({}); restarting it",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                );
                if r.started.elapsed() >= STABLE_AFTER {
                    backoff = MIN_BACKOFF;
                }
                next_start = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            st.dead = false;
            for p in st.pending.values_mut() {
                p.sent_to = 0;
            }
        }
        let now = Instant::now();
        if running.is_none() && now >= next_start {
            match spawn(&st.spec) {
                Ok((child, stdin, stdout, stderr)) => {
                    st.generation += 1;
                    let generation = st.generation;
                    let (tx, output) = start_io(shared, generation, stdin, stdout, stderr);
                    let mut ok = tx.send(&protocol::hello(&st.spec.bot)).is_ok();
                    // Hand it again what its predecessor held, oldest first.
                    let mut held: Vec<(&String, &mut Pending)> = st.pending.iter_mut().collect();
                    held.sort_by_key(|(id, _)| id.parse::<u64>().unwrap_or(0));
                    for (_, p) in held {
                        ok &= tx.send(&p.line).is_ok();
                        p.sent_to = generation;
                    }
                    if !ok {
                        log::debug!("the new handler's stdin closed at once");
                    }
                    st.writer = Some(tx);
                    st.output = Some(output);
                    // Jobs waiting for the old process read this one now.
                    for p in st.pending.values() {
                        if p.tx.send(Msg::Lead).is_err() {}
                    }
                    st.last_line = Instant::now();
                    st.overdue_since = None;
                    log::info!(
                        "persistent handler started (pid {}, {} update(s) handed again)",
                        child.id(),
                        st.pending.len()
                    );
                    running = Some(Running {
                        child,
                        started: Instant::now(),
                    });
                }
                Err(e) => {
                    log::error!("cannot start the persistent handler: {e}");
                    next_start = now + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // Silent past a missed deadline: restart it.
        if let (Some(since), Some(r)) = (st.overdue_since, running.as_ref()) {
            if st.last_line < since && now.duration_since(since) >= SILENT_GRACE {
                log::warn!(
                    "the persistent handler missed a deadline and stays silent; restarting it"
                );
                st.overdue_since = None;
                st.dead = true;
                st.writer = None;
                st.output = None;
                kill_group(&r.child);
                continue;
            } else if st.last_line >= since {
                st.overdue_since = None;
            }
        }
        let wait = if running.is_none() {
            next_start
                .saturating_duration_since(now)
                .max(Duration::from_millis(5))
        } else {
            Duration::from_millis(100)
        };
        let (st, _) = shared
            .cv
            .wait_timeout(st, wait)
            .unwrap_or_else(|p| p.into_inner());
        drop(st);
    }
}

type Pipes = (
    Child,
    std::process::ChildStdin,
    std::process::ChildStdout,
    std::process::ChildStderr,
);

fn spawn(spec: &Spec) -> std::io::Result<Pipes> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(std::io::Error::other("BOT_HANDLER is empty"));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(
            spec.env
                .iter()
                .filter(|(k, _)| !handler::WITHHELD.contains(&k.as_str()))
                .map(|(k, v)| (k, v)),
        )
        .current_dir(&spec.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    handler::confine(&mut cmd, &spec.confinement);
    if let Some(bytes) = spec.max_memory {
        sys::limit_child_memory(&mut cmd, bytes);
    }
    sys::kill_child_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let (Some(i), Some(o), Some(e)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill_group(&child);
        let _ = child.wait();
        return Err(std::io::Error::other("the handler's pipes are missing"));
    };
    Ok((child, i, o, e))
}

/// Starts the process's i/o threads; returns its stdin and stdout.
fn start_io(
    shared: &Arc<Shared>,
    generation: u64,
    stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
    stderr: std::process::ChildStderr,
) -> (Writer, Arc<Output>) {
    let out_fd = stdout.as_raw_fd();
    let out_broken = match sys::set_nonblocking(out_fd) {
        Ok(()) => false,
        Err(e) => {
            log::error!("cannot make the handler's stdout non-blocking: {e}");
            true
        }
    };
    let output = Arc::new(Output {
        generation,
        fd: out_fd,
        lines: Mutex::new(Some(Lines {
            stdout,
            buf: Vec::new(),
            chunk: vec![0; 16 * 1024],
            done: out_broken,
        })),
    });
    let fd = stdin.as_raw_fd();
    let broken = match sys::set_nonblocking(fd) {
        Ok(()) => false,
        Err(e) => {
            log::error!("cannot make the handler's stdin non-blocking: {e}");
            true
        }
    };
    let input = Arc::new(Input {
        q: Mutex::new(InputQ {
            stdin: Some(stdin),
            backlog: Vec::new(),
            closed: false,
            broken,
        }),
        cv: Condvar::new(),
    });
    let s = Arc::clone(shared);
    let i = Arc::clone(&input);
    spawn_thread("handler-in", move || drain_input(&s, generation, &i, fd));
    spawn_thread("handler-err", move || {
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut r).take(8 * 1024).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end();
                    if !line.is_empty() {
                        log::info!("handler stderr: {line}");
                    }
                }
            }
        }
    });
    (Writer(input), output)
}

/// The writer thread: writes the backlog as the pipe makes room; at the
/// end (closed and drained, or broken) drops stdin, the EOF.
fn drain_input(shared: &Shared, generation: u64, input: &Input, fd: std::os::fd::RawFd) {
    let mut q = input.lock();
    loop {
        while q.backlog.is_empty() && !q.closed && !q.broken {
            q = input.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if q.broken {
            q.stdin = None;
            drop(q);
            shared.mark_dead(generation);
            return;
        }
        if q.backlog.is_empty() {
            // Closed, and everything written: the EOF that means stop.
            q.stdin = None;
            return;
        }
        let InputQ { stdin, backlog, .. } = &mut *q;
        let written = match stdin.as_mut() {
            Some(w) => write_some(w, backlog),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        match written {
            Ok(n) => {
                backlog.drain(..n);
            }
            Err(_) => {
                q.broken = true;
                continue;
            }
        }
        if !q.backlog.is_empty() {
            // The pipe is full: wait for room without holding the queue.
            // `fd` stays open: only this thread drops stdin.
            drop(q);
            if let Err(e) = sys::poll_writable(fd, 200) {
                log::debug!("waiting on the handler's stdin: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            q = input.lock();
        }
    }
}

/// EOF on stdin (the writer is gone), then SIGTERM, then SIGKILL, bounded.
fn stop_process(mut r: Running, grace: Duration) {
    let waited = |child: &mut Child, d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    };
    if !waited(&mut r.child, grace) {
        if let Err(e) = sys::signal_group(r.child.id(), sys::Signal::Term) {
            log::debug!("SIGTERM to the handler group: {e}");
        }
        if !waited(&mut r.child, grace) {
            log::warn!("the persistent handler ignored SIGTERM; killing it");
        }
    }
    kill_group(&r.child);
    if let Err(e) = r.child.wait() {
        log::warn!("cannot reap the persistent handler: {e}");
    }
}

fn kill_group(child: &Child) {
    match sys::signal_group(child.id(), sys::Signal::Kill) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => log::warn!("cannot kill the handler group {}: {e}", child.id()),
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(name.into())
        .stack_size(128 * 1024)
        .spawn(f)
    {
        log::error!("cannot start a handler i/o thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A handler in sh + a tiny awk-free loop: answers each update with a
    /// sendMessage of the update's id, counting lines per process.
    const ECHO: &str = r#"
read hello
case "$hello" in *'"type":"hello"'*) ;; *) exit 9;; esac
n=0
while read line; do
  case "$line" in
    *'"type":"update"'*)
      id=${line#*'"id":"'}; id=${id%%'"'*}
      n=$((n+1))
      case "$line" in
        *crash*) [ -e crashed ] || { touch crashed; kill -9 $$; } ;;
        *silent*) continue ;;
        *garbage*) echo "not json"; continue ;;
      esac
      echo "{\"type\":\"reply\",\"id\":\"$id\",\"calls\":[{\"method\":\"sendMessage\",\"text\":\"$n $$\"}]}"
      ;;
  esac
done
"#;

    fn spec(dir: &std::path::Path, timeout: Duration) -> Spec {
        Spec {
            argv: vec!["/bin/sh".into(), "-c".into(), ECHO.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            dir: dir.to_path_buf(),
            bot: BotIdentity {
                id: 1,
                username: "b".into(),
                index: 0,
            },
            timeout,
            concurrency: 2,
            confinement: Confinement::default(),
            max_memory: None,
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("botfleet-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn text(a: &Answer) -> String {
        match a {
            Answer::Calls(c) => c[0]["text"].as_str().unwrap_or_default().to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn one_process_answers_in_turn_and_comes_back_after_a_crash() {
        let d = temp("crash");
        let p = Persistent::start(spec(&d, Duration::from_secs(10))).expect("start");
        let (_, a1) = p.handle(&json!({"update_id": 1, "text": "a"}));
        let (_, a2) = p.handle(&json!({"update_id": 2, "text": "b"}));
        let (n1, pid1) = text(&a1)
            .split_once(' ')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .expect("n pid");
        let (n2, pid2) = text(&a2)
            .split_once(' ')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .expect("n pid");
        assert_eq!(
            (n1.as_str(), n2.as_str()),
            ("1", "2"),
            "state kept across updates"
        );
        assert_eq!(pid1, pid2, "one process");
        // Killed while holding the update: the next process gets it again.
        let (_, a3) = p.handle(&json!({"update_id": 3, "text": "crash"}));
        let t3 = text(&a3);
        assert!(t3.starts_with("1 ") && !t3.ends_with(&pid1), "{t3}");
        p.stop();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_protocol_violation_restarts_and_a_silent_update_times_out() {
        let d = temp("violation");
        let p = Persistent::start(spec(&d, Duration::from_millis(800))).expect("start");
        let (_, a) = p.handle(&json!({"update_id": 1, "text": "silent"}));
        assert_eq!(a, Answer::Timeout);
        let (_, a) = p.handle(&json!({"update_id": 2, "text": "garbage"}));
        // The violation restarts the process; the update is handed again and
        // the new process breaks the protocol the same way, so it times out.
        assert_eq!(a, Answer::Timeout);
        let (_, a) = p.handle(&json!({"update_id": 3, "text": "fine"}));
        assert!(matches!(a, Answer::Calls(_)), "{a:?}");
        let t0 = Instant::now();
        p.stop();
        assert!(t0.elapsed() < Duration::from_secs(6));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A handler that reads its stdin only after a while, answering each
    /// update with its count and the length of the line it read.
    const SLOW_READER: &str = r#"
read hello
sleep 0.3
n=0
while read line; do
  case "$line" in
    *'"type":"update"'*)
      id=${line#*'"id":"'}; id=${id%%'"'*}
      n=$((n+1))
      echo "{\"type\":\"reply\",\"id\":\"$id\",\"calls\":[{\"method\":\"sendMessage\",\"text\":\"$n ${#line}\"}]}"
      ;;
  esac
done
"#;

    #[test]
    fn a_line_the_pipe_cannot_take_at_once_arrives_whole_and_before_later_ones() {
        let d = temp("backlog");
        let mut s = spec(&d, Duration::from_secs(60));
        s.argv = vec!["/bin/sh".into(), "-c".into(), SLOW_READER.into()];
        s.concurrency = 8;
        let p = Arc::new(Persistent::start(s).expect("start"));
        // Far more than a pipe holds (64 KiB): most of it waits in the
        // backlog while the handler sleeps and then reads it (sh reads a
        // byte at a time); small updates handed meanwhile, while the pipe
        // is full and while it has room, must not cut into it.
        let big = "x".repeat(1024 * 1024);
        let p1 = Arc::clone(&p);
        let first = std::thread::spawn(move || p1.handle(&json!({"update_id": 1, "text": big})));
        let small: Vec<_> = (0..6u64)
            .map(|i| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100 + 150 * i));
                    p.handle(&json!({"update_id": 2 + i, "text": "small"}))
                })
            })
            .collect();
        let (_, first) = first.join().expect("the first job");
        let (n1, len1) = text(&first)
            .split_once(' ')
            .map(|(a, b)| (a.to_string(), b.parse::<usize>().unwrap_or(0)))
            .expect("n len");
        assert_eq!(n1, "1", "the big update was read first: {first:?}");
        assert!(len1 > 1024 * 1024, "and whole: {len1} bytes");
        for t in small {
            let (_, a) = t.join().expect("a small job");
            let n: u32 = text(&a)
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert!((2..=7).contains(&n), "{a:?}");
        }
        p.stop();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_handler_that_never_reads_costs_a_job_no_more_than_its_timeout() {
        let d = temp("stuck");
        let mut s = spec(&d, Duration::from_millis(500));
        s.argv = vec!["/bin/sh".into(), "-c".into(), "read hello; sleep 60".into()];
        let p = Persistent::start(s).expect("start");
        let t0 = Instant::now();
        let big = "x".repeat(256 * 1024);
        let (_, a) = p.handle(&json!({"update_id": 1, "text": big}));
        assert_eq!(a, Answer::Timeout);
        let (_, a) = p.handle(&json!({"update_id": 2, "text": "next"}));
        assert_eq!(a, Answer::Timeout);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let t0 = Instant::now();
        p.stop();
        assert!(t0.elapsed() < Duration::from_secs(6), "stop is bounded");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Holds three updates, then answers them newest first.
    const REVERSE: &str = r#"
read hello
ids=""
while read line; do
  case "$line" in
    *'"type":"update"'*)
      id=${line#*'"id":"'}; id=${id%%'"'*}
      t=${line#*'"text":"'}; t=${t%%'"'*}
      ids="$id:$t $ids"
      set -- $ids
      if [ $# -ge 3 ]; then
        for x in $ids; do
          echo "{\"type\":\"reply\",\"id\":\"${x%%:*}\",\"calls\":[{\"method\":\"sendMessage\",\"text\":\"${x#*:}\"}]}"
        done
        ids=""
      fi
      ;;
  esac
done
"#;

    #[test]
    fn answers_out_of_order_each_reach_their_own_job() {
        let d = temp("reverse");
        let mut s = spec(&d, Duration::from_secs(30));
        s.argv = vec!["/bin/sh".into(), "-c".into(), REVERSE.into()];
        s.concurrency = 4;
        let p = Arc::new(Persistent::start(s).expect("start"));
        for round in 0..3 {
            let jobs: Vec<_> = (0..3)
                .map(|i| {
                    let p = Arc::clone(&p);
                    let t = format!("r{round}u{i}");
                    std::thread::spawn(move || (t.clone(), p.handle(&json!({"text": t}))))
                })
                .collect();
            for j in jobs {
                let (t, (_, a)) = j.join().expect("a job");
                assert_eq!(text(&a), t, "round {round}");
            }
        }
        p.stop();
        let _ = std::fs::remove_dir_all(&d);
    }
}
