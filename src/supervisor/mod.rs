//! The supervisor: one loop on one thread that owns the worker table and the
//! receiving end of the one `Event` channel. The signal thread, the worker
//! pipe reader (`reader`: every worker's stdout lines, then its exit
//! status), the config watcher and the health server hold senders. The loop
//! never blocks on I/O and never sleeps: it waits on the channel until the
//! next deadline (a restart due, a stop grace ending, a heartbeat overdue).
//! It must never run two processes for one token, and never spawn once
//! shutdown has begun.
//!
//! This file is long (about 1,100 lines) because the loop, reload, alerts
//! and spawning all work on the one worker table; what can stand alone
//! does: the state machine (`machine`), the open-file budget (`limits`),
//! queued pipe writes (`outgoing`), the pipe reader (`reader`) and the
//! thread that starts workers with a small descriptor table (`spawner`).

pub mod limits;
pub mod machine;
mod memory;
mod outgoing;
mod reader;
mod spawner;

use crate::config::Config;
use crate::ipc::{Counters, ParentMsg, WorkerMsg};
use crate::signals::SignalKind;
use crate::state::Registry;
use crate::sys;
use crate::token::Token;
use machine::{Action, Input, Policy, State, Worker};
use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use crate::fleet::{Event, FleetView, WorkerView};
pub use crate::ipc::HEARTBEAT_PERIOD;
pub use limits::{check_tasks, fit_open_files, FdLimitError};

/// After turns of workers' messages alone (READY, exits, bad lines), the
/// pass (deadlines judged, the health view rebuilt) runs at most this
/// often; after turns of heartbeats alone, at most every HEARTBEATS_PASS_EVERY.
/// Rebuilding the view is O(workers): run for each of a 1,000-bot fleet's
/// heartbeats, it was most of the idle fleet's CPU (BENCHMARKS.md, scale).
/// The machines themselves are ticked only when a deadline is due.
const ROUTINE_PASS_EVERY: Duration = Duration::from_millis(100);
/// See ROUTINE_PASS_EVERY; heartbeats come every 5 s, so the counters in
/// the view are this much staler at most.
const HEARTBEATS_PASS_EVERY: Duration = Duration::from_millis(500);

/// At most this many workers are spawned in one pass; the loop reads the
/// events queued meanwhile before it spawns more. Spawning 3,000 in one go
/// kept the loop away from its channel for seconds, with every READY and
/// heartbeat of the workers already up queued in memory.
const SPAWN_BATCH: usize = 64;

/// The longest the loop waits without turning.
const TURN: Duration = Duration::from_secs(1);
/// A turn this much later than planned means the loop was not running.
const PAUSE_SLACK: Duration = Duration::from_secs(1);
/// SETTINGS not acknowledged within this long are sent again.
const SETTINGS_RESEND: Duration = Duration::from_secs(5);
/// The most bytes queued for one worker's stdin.
const OUTGOING_MAX: usize = 4 * 1024 * 1024;
/// At most this many queued events are read in one turn (then deadlines).
const DRAIN_MAX: usize = 10_000;

/// A worker slot: one token, at most one process at a time.
struct Slot {
    token: Token,
    index: u32,
    username: Option<String>,
    machine: Worker,
    /// Bumped at every spawn, so events from an older process are ignored.
    generation: u64,
    /// Our end of the worker's stdin and stdout (one socket pair, shared
    /// with the pipe reader); None while no worker runs.
    stdin: Option<Arc<UnixStream>>,
    /// Whole lines waiting for the worker's stdin to take them.
    outgoing: Vec<u8>,
    /// This process has the current settings (from its spawn or its ack).
    settings_acked: bool,
    /// When SETTINGS last went to this process (sent again until acked).
    settings_sent: Option<Instant>,
    /// Its last heartbeat said it cannot poll (409); its other counters
    /// live only in the health view.
    conflict: bool,
    running_since: Option<SystemTime>,
    /// What the owner was last told about this worker.
    alerted: Alerted,
    /// Restarts for WORKER_MAX_RSS_MB.
    memory_restarts: u32,
}

/// The last fleet alert sent about a worker, so each change is told once.
#[derive(Debug, Clone, PartialEq)]
enum Alerted {
    Nothing,
    Failed,
    Conflict,
}

/// Why `run` could not start or had to stop.
#[derive(Debug)]
pub enum SupervisorError {
    /// The state dir or the registry could not be used.
    State(crate::state::StateError),
    /// Signal handlers could not be installed.
    Signals(std::io::Error),
    /// Our own executable could not be found to start workers.
    Exe(std::io::Error),
    /// A thread of the supervisor could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorError::State(e) => write!(f, "state: {e}"),
            SupervisorError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            SupervisorError::Exe(e) => write!(f, "cannot find the botfleet executable: {e}"),
            SupervisorError::Thread(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for SupervisorError {}

/// A small xorshift generator for backoff jitter; no crate needed for that.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9)
            ^ u64::from(std::process::id());
        Jitter(seed | 1)
    }

    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Process variables a worker never gets from the supervisor's own
/// environment: settings (they come from the config, which falls back to
/// the environment itself; the token keys and HEALTH_AUTH_TOKEN never pass
/// `worker_env`), a worker's own names, and systemd's.
const NOT_HANDED: &[&str] = &[
    "BOT_TOKEN",
    "BOT_INDEX",
    "BOTFLEET_PARENT_PID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// The whole environment a worker (and its handlers) gets, sent in START
/// and SETTINGS: the supervisor's process environment without settings and
/// secrets, overlaid with the config's worker keys. A key removed from
/// `.env` is gone from the next SETTINGS (unless the process environment
/// itself has it, which is the documented fallback).
pub fn handed_env(config: &Config) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            !NOT_HANDED.contains(&k.as_str()) && !crate::config::KNOWN_KEYS.contains(&k.as_str())
        })
        .collect();
    env.extend(config.worker_env());
    env.into_iter().collect()
}

pub fn policy_of(config: &Config) -> Policy {
    let s = &config.settings;
    Policy {
        restart_delay: s.restart_delay,
        restart_max_delay: s.restart_max_delay,
        max_restarts: s.max_restarts,
        reset_after: s.restart_reset_after,
        hung_after: HEARTBEAT_PERIOD * 3 + Duration::from_secs(s.poll_timeout_secs),
        shutdown_timeout: s.shutdown_timeout,
    }
}

/// The running supervisor.
pub struct Supervisor {
    config: Config,
    env_file: PathBuf,
    /// The version of the settings workers should have (changes when a
    /// reload changes the worker environment).
    settings_version: String,
    /// The instance lock's path as at start (LOCK_FILE changes need a restart).
    lock_path: PathBuf,
    policy: Policy,
    exe: PathBuf,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    slots: BTreeMap<u64, Slot>,
    registry: Registry,
    jitter: Jitter,
    shutting_down: Option<Instant>,
    announced_ready: bool,
    /// Workers due to be spawned were left for the next pass (SPAWN_BATCH).
    spawns_waiting: bool,
    /// A pass was skipped: the loop wakes for it by then.
    pass_by: Option<Instant>,
    /// Slots came or went: the next pass rebuilds the health view's list.
    view_stale: bool,
    /// Slots whose machine is Ready (kept by `step`), so "all ready" is O(1).
    ready: usize,
    /// No machine deadline is earlier than this (None: none at all). It
    /// may be earlier than the true next deadline, never later: `step`
    /// lowers it, and a pass that finds it due ticks every machine and
    /// computes it anew. So the idle loop ticks no machine per turn.
    next_due: Option<Instant>,
    /// Slots with queued lines their pipe has not taken yet.
    backlog: std::collections::BTreeSet<u64>,
    /// Some worker may not have acknowledged the current SETTINGS yet.
    settings_unacked: bool,
    view: Arc<Mutex<FleetView>>,
    watcher: Option<crate::watcher::Watcher>,
    /// The thread that reads every worker's stdout and reaps it.
    reader: reader::Reader,
    /// Starts workers with a small descriptor table of its own.
    spawner: spawner::Spawner,
    /// Owner alerts waiting for a healthy bot to carry them.
    pending_alerts: Vec<(u64, String)>,
    /// Workers waiting for their turn in a rolling restart.
    rolling: std::collections::VecDeque<u64>,
    /// The worker restarting now, and its generation when it began.
    rolling_current: Option<(u64, u64)>,
    /// WORKER_MAX_RSS_MB checks.
    memory: memory::MemoryWatch,
}

impl Supervisor {
    /// Prepares the supervisor: the registry, the event channel, the signal
    /// thread. The caller already holds the instance lock.
    pub fn new(config: Config, env_file: PathBuf) -> Result<Supervisor, SupervisorError> {
        let exe = std::env::current_exe().map_err(SupervisorError::Exe)?;
        // First, while the descriptor table is small (it closes its copies
        // of the rest anyway).
        let spawner = spawner::Spawner::start();
        let (tx, rx) = mpsc::channel();
        let pipes = reader::Reader::start(tx.clone()).map_err(SupervisorError::Thread)?;
        let registry =
            Registry::load(&config.settings.state_dir).map_err(SupervisorError::State)?;
        let view = Arc::new(Mutex::new(FleetView {
            started: Some(SystemTime::now()),
            config_version: config.version().to_string(),
            ..FleetView::default()
        }));
        let mut sup = Supervisor {
            policy: policy_of(&config),
            lock_path: config.settings.lock_file.clone(),
            settings_version: config.version().to_string(),
            config,
            env_file,
            exe,
            tx,
            rx,
            slots: BTreeMap::new(),
            registry,
            jitter: Jitter::new(),
            shutting_down: None,
            announced_ready: false,
            ready: 0,
            pass_by: None,
            spawns_waiting: false,
            view_stale: true,
            next_due: None,
            backlog: std::collections::BTreeSet::new(),
            settings_unacked: false,
            view,
            watcher: None,
            reader: pipes,
            spawner,
            pending_alerts: Vec::new(),
            rolling: std::collections::VecDeque::new(),
            rolling_current: None,
            memory: memory::MemoryWatch::new(Instant::now()),
        };
        let tokens = sup.config.tokens.clone();
        sup.add_slots(tokens)?;
        let signal_tx = sup.tx.clone();
        crate::signals::forward(move |kind| {
            // A closed channel means the loop is gone; nothing left to tell.
            if signal_tx.send(Event::Signal(kind)).is_err() {}
        })
        .map_err(SupervisorError::Signals)?;
        Ok(sup)
    }

    /// A sender for other threads (watcher, health server).
    pub fn sender(&self) -> Sender<Event> {
        self.tx.clone()
    }

    /// The fleet as last published, shared with the health server.
    pub fn view(&self) -> Arc<Mutex<FleetView>> {
        Arc::clone(&self.view)
    }

    /// Adds a slot per token. New indices are saved to the registry once
    /// for all of them, before any slot exists: saved once per new bot (the
    /// whole registry, fsynced), a first start of 1,000 bots spent ~6 s here.
    fn add_slots(&mut self, tokens: Vec<Token>) -> Result<Vec<u32>, SupervisorError> {
        let mut changed = false;
        let indices: Vec<u32> = tokens
            .iter()
            .map(|t| {
                let (index, new) = self.registry.index_for(t.bot_id());
                changed |= new;
                index
            })
            .collect();
        if changed {
            self.registry
                .save(&self.config.settings.state_dir)
                .map_err(SupervisorError::State)?;
        }
        for (token, index) in tokens.into_iter().zip(indices.iter().copied()) {
            self.insert_slot(token, index);
        }
        Ok(indices)
    }

    fn insert_slot(&mut self, token: Token, index: u32) {
        self.view_stale = true;
        crate::logging::add_secret(token.secret());
        crate::logging::name_bot(index, token.bot_id());
        self.slots.insert(
            token.bot_id(),
            Slot {
                token,
                index,
                username: None,
                machine: Worker::new(Instant::now()),
                generation: 0,
                stdin: None,
                outgoing: Vec::new(),
                settings_acked: false,
                settings_sent: None,
                conflict: false,
                running_since: None,
                alerted: Alerted::Nothing,
                memory_restarts: 0,
            },
        );
    }

    /// Runs until the fleet has stopped. Returns the process exit code.
    pub fn run(mut self) -> i32 {
        // The supervisor holds every token (and may have them in its own
        // environment): nothing of it is readable through /proc by a
        // handler running as the same user.
        if let Err(e) = sys::set_not_dumpable() {
            log::warn!("Cannot make the supervisor non-dumpable: {e}");
        }
        log::info!(
            "Starting botfleet v{}: {} bot worker(s), config {}",
            env!("CARGO_PKG_VERSION"),
            self.slots.len(),
            self.config.version()
        );
        match crate::watcher::Watcher::start(
            self.env_file.clone(),
            self.watch_timing(),
            self.sender(),
        ) {
            Ok(w) => self.watcher = Some(w),
            Err(e) => log::error!("cannot start the config watcher ({e}); SIGHUP still reloads"),
        }
        let mut health = crate::health::Health::start(
            &self.config.settings,
            self.view(),
            self.sender(),
            limits::health_connection_cap(self.slots.len()),
        );
        self.record_health_addr(health.addr());
        crate::sdnotify::notify(&format!("STATUS=starting {} worker(s)", self.slots.len()));
        self.tick_all();
        let mut last_tick = Instant::now();
        loop {
            if self.shutting_down.is_some() && self.slots.is_empty() {
                break;
            }
            let now = Instant::now();
            // The loop turns at least once a TURN, so /health can tell a
            // stuck loop from an idle one.
            let wait_until = self
                .next_deadline()
                .map_or(now + TURN, |d| d.min(now + TURN));
            let event = if wait_until <= now {
                match self.rx.try_recv() {
                    Ok(e) => Some(e),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.recv_timeout(wait_until - now) {
                    Ok(e) => Some(e),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            // Every event already queued is read before any deadline is
            // judged: heartbeats that waited in the channel count.
            let mut reconfigured = false;
            // Only workers' messages (only heartbeats) this turn, and no
            // deadline woke the loop.
            let mut routine = event.is_some();
            let mut heartbeats = event.is_some();
            if let Some(first) = event {
                // The events of an `Event::Workers` batch, in order, before
                // the channel is read again.
                let mut batch = std::collections::VecDeque::new();
                let mut next = Some(first);
                let mut handled = 0;
                while let Some(event) = next {
                    if let Event::Workers(events) = event {
                        batch.extend(events);
                    } else {
                        reconfigured |= matches!(event, Event::Loaded { .. });
                        heartbeats &= matches!(
                            event,
                            Event::FromWorker {
                                msg: WorkerMsg::Heartbeat(_),
                                ..
                            }
                        );
                        routine &= matches!(
                            event,
                            Event::FromWorker { .. }
                                | Event::WorkerExited { .. }
                                | Event::BadLine { .. }
                        );
                        self.handle(event);
                        handled += 1;
                    }
                    next = match batch.pop_front() {
                        Some(e) => Some(e),
                        None if handled < DRAIN_MAX => self.rx.try_recv().ok(),
                        None => None,
                    };
                }
            }
            if reconfigured {
                // Bots added or removed change what is left for waiting
                // health connections under the open-file limit.
                health.set_max_pending(limits::health_connection_cap(self.slots.len()));
                health.reconfigure(&self.config.settings);
                self.record_health_addr(health.addr());
            }
            self.flush_outgoing();
            // Time the loop did not run (SIGSTOP, `docker pause`, a frozen
            // VM, a very long turn) is not the workers' silence.
            let since = last_tick.elapsed();
            if since > TURN + PAUSE_SLACK {
                let gap = since - TURN;
                log::warn!(
                    "The supervisor loop did not run for {} s (paused?); not counting that time against the workers' heartbeats",
                    gap.as_secs()
                );
                self.excuse_all(gap);
            }
            // A skipped pass sets `pass_by`, which ends the next wait, so it
            // is at most its period late.
            let every = if heartbeats {
                HEARTBEATS_PASS_EVERY
            } else {
                ROUTINE_PASS_EVERY
            };
            if routine && !self.spawns_waiting && last_tick.elapsed() < every {
                self.pass_by = Some(last_tick + every);
                continue;
            }
            self.pass_by = None;
            if reconfigured || self.next_due.is_none_or(|d| d <= Instant::now()) {
                self.tick_all();
            }
            self.check_memory();
            last_tick = Instant::now();
            self.advance_rolling();
            self.publish();
            if let Some(begun) = self.shutting_down {
                // The bound of last resort: SIGKILL went out at the grace's
                // end; if even that is not reaped in 3 s, stop waiting.
                if begun.elapsed() > self.policy.shutdown_timeout + Duration::from_secs(3) {
                    log::error!(
                        "{} worker(s) not reaped after SIGKILL; exiting anyway",
                        self.slots.len()
                    );
                    break;
                }
            }
        }
        health.stop();
        log::info!("All workers stopped; botfleet exits");
        0
    }

    /// Records the health server's bound address beside the instance lock
    /// (or removes the record when it could not bind).
    fn record_health_addr(&self, addr: Option<std::net::SocketAddr>) {
        if let Err(e) = crate::lock::record_health_addr(&self.lock_path, addr) {
            log::warn!(
                "cannot record the health address beside {} ({e}); `botfleet health` may need --port",
                self.lock_path.display()
            );
        }
    }

    /// Moves every running worker's heartbeat deadline on by `gap`.
    fn excuse_all(&mut self, gap: Duration) {
        let now = Instant::now();
        for slot in self.slots.values_mut() {
            slot.machine.excuse(gap, now);
        }
    }

    fn watch_timing(&self) -> crate::watcher::Timing {
        crate::watcher::Timing {
            interval: self.config.settings.monitor_interval,
            debounce: self.config.settings.reload_debounce,
        }
    }

    /// The next time the loop must turn: O(1), from `next_due`.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next = match (self.next_due, self.pass_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(begun) = self.shutting_down {
            let last = begun + self.policy.shutdown_timeout + Duration::from_secs(3);
            next = Some(next.map_or(last, |n| n.min(last)));
        }
        // No memory checks once shutdown has begun (check_memory skips
        // them, so their deadline would stay in the past and spin the loop).
        if let Some(m) = self
            .memory
            .next_deadline(self.config.settings.worker_max_rss)
            .filter(|_| self.shutting_down.is_none())
        {
            next = Some(next.map_or(m, |n| n.min(m)));
        }
        next
    }

    /// WORKER_MAX_RSS_MB: restarts (gracefully) a worker over the limit at
    /// two checks in a row; `memory` decides, this carries it out.
    fn check_memory(&mut self) {
        if self.shutting_down.is_some() {
            return;
        }
        let limit = self.config.settings.worker_max_rss;
        let now = Instant::now();
        if self.memory.next_deadline(limit).is_none_or(|d| d > now) {
            // Not due (or no limit): nothing to read, no O(workers) list.
            if limit.is_none() {
                self.memory.check(now, None, &[], &|_| None);
            }
            return;
        }
        let running: Vec<(u64, u32)> = self
            .slots
            .iter()
            .filter_map(|(id, s)| match s.machine.state {
                State::Ready { pid, .. } => Some((*id, pid)),
                _ => None,
            })
            .collect();
        let rss_of = |pid: u32| sys::memory_of(pid).map(|(rss, _)| rss);
        for over in self.memory.check(now, limit, &running, &rss_of) {
            if let Some(slot) = self.slots.get_mut(&over.bot_id) {
                slot.memory_restarts += 1;
                log::warn!(
                    "{}",
                    memory::describe(slot.index, over.rss, limit.unwrap_or(0))
                );
            }
            self.step(over.bot_id, Input::Restart);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(SignalKind::Stop(name)) => self.begin_shutdown(name),
            Event::Signal(SignalKind::Reload) => {
                // logrotate's convention: SIGHUP reopens LOG_FILE.
                crate::logging::reopen();
                self.handle(Event::Reload {
                    why: "SIGHUP".into(),
                    reply_to: None,
                });
            }
            Event::FromWorker {
                bot_id,
                generation,
                msg,
            } => self.on_worker_msg(bot_id, generation, msg),
            Event::Workers(events) => {
                for event in events {
                    self.handle(event);
                }
            }
            Event::BadLine { bot_id, error } => {
                if let Some(slot) = self.slots.get(&bot_id) {
                    log::warn!("Worker bot-{} sent a bad line: {error}", slot.index);
                }
            }
            Event::WorkerExited {
                bot_id,
                generation,
                code,
                signal,
            } => {
                let current = self.slots.get(&bot_id).map(|s| s.generation);
                if current == Some(generation) {
                    if let Some(slot) = self.slots.get_mut(&bot_id) {
                        slot.stdin = None;
                        slot.outgoing.clear();
                        slot.running_since = None;
                    }
                    self.step(bot_id, Input::Exited { code, signal });
                }
            }
            Event::Reload { why, reply_to } => self.reload(&why, reply_to),
            Event::Loaded {
                result,
                why,
                reply_to,
            } => self.loaded(result, &why, reply_to),
            Event::Restart { index } => {
                let ids: Vec<u64> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| index.is_none_or(|i| i == s.index))
                    .map(|(id, _)| *id)
                    .collect();
                log::info!("Restart requested: {} worker(s), one at a time", ids.len());
                self.start_rolling(ids);
            }
            Event::Alive(answer) => {
                if answer.send(()).is_err() {
                    log::debug!("the watchdog stopped waiting for this answer");
                }
            }
        }
    }

    fn on_worker_msg(&mut self, bot_id: u64, generation: u64, msg: WorkerMsg) {
        let Some(slot) = self.slots.get_mut(&bot_id) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        match msg {
            WorkerMsg::Ready { username, .. } => {
                log::info!("Worker bot-{} ready as @{username}", slot.index);
                slot.username = Some(username);
                self.step(bot_id, Input::Ready);
                self.check_all_ready();
                self.flush_alerts();
            }
            WorkerMsg::Heartbeat(counters) => {
                let conflict = counters.conflict;
                slot.conflict = conflict;
                let index = slot.index;
                match (&slot.alerted, conflict) {
                    (Alerted::Nothing, true) => {
                        slot.alerted = Alerted::Conflict;
                        self.alert_owner(bot_id, format!("⚠️ botfleet: bot-{index} cannot poll: another getUpdates or a webhook holds its token (409 Conflict)."));
                    }
                    (Alerted::Conflict, false) => {
                        slot.alerted = Alerted::Nothing;
                        self.alert_owner(
                            bot_id,
                            format!("✅ botfleet: bot-{index} polls again (the conflict is over)."),
                        );
                    }
                    _ => {}
                }
                // A heartbeat changes no state (machine.rs: only the hung
                // deadline moves later), so `next_due` stays a lower bound
                // and the view entry and alerts that `step` refreshes stay
                // as they are: the machine alone, not `step`'s O(1) but
                // allocating round, for each of 200 heartbeats a second.
                if let Some(slot) = self.slots.get_mut(&bot_id) {
                    let actions =
                        slot.machine
                            .step(Input::Heartbeat, Instant::now(), &self.policy, 0.5);
                    debug_assert!(actions.is_empty(), "a heartbeat acts: {actions:?}");
                }
                self.publish_counters(bot_id, counters);
            }
            WorkerMsg::Fatal { reason } => {
                log::error!("Worker bot-{} reports a fatal error: {reason}", slot.index);
                self.step(bot_id, Input::Fatal { reason });
            }
            WorkerMsg::SettingsAck { version } => {
                if version == self.settings_version {
                    slot.settings_acked = true;
                }
            }
            WorkerMsg::ReloadRequest { chat_id } => {
                let index = slot.index;
                self.handle(Event::Reload {
                    why: format!("/reload_config in bot-{index}"),
                    reply_to: Some((bot_id, chat_id)),
                });
            }
        }
    }

    /// Queues workers for a restart one at a time: the next goes once the
    /// one before it is ready again (or gone, or failed).
    fn start_rolling(&mut self, ids: Vec<u64>) {
        for id in ids {
            if !self.rolling.contains(&id) && self.rolling_current.map(|(c, _)| c) != Some(id) {
                self.rolling.push_back(id);
            }
        }
        self.advance_rolling();
    }

    fn advance_rolling(&mut self) {
        if self.shutting_down.is_some() {
            self.rolling.clear();
            self.rolling_current = None;
            return;
        }
        if let Some((id, generation)) = self.rolling_current {
            let done = match self.slots.get(&id) {
                None => true,
                Some(s) => match s.machine.state {
                    State::Failed { .. } => true,
                    State::Ready { .. } => s.generation > generation,
                    _ => false,
                },
            };
            if !done {
                return;
            }
            self.rolling_current = None;
        }
        while let Some(id) = self.rolling.pop_front() {
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            let generation = slot.generation;
            log::info!("Rolling restart: restarting worker bot-{}", slot.index);
            self.rolling_current = Some((id, generation));
            self.step(id, Input::Restart);
            return;
        }
    }

    fn check_all_ready(&mut self) {
        if !self.announced_ready && !self.slots.is_empty() && self.ready == self.slots.len() {
            self.announced_ready = true;
            // /health says so too by the time the log line is out.
            self.publish();
            log::info!("All {} workers ready", self.slots.len());
            crate::sdnotify::notify(&format!(
                "READY=1\nSTATUS={} worker(s) ready",
                self.slots.len()
            ));
        }
    }

    fn begin_shutdown(&mut self, signal: &str) {
        // One Ctrl-C can arrive twice (to the process and to its group, as
        // GNU timeout and some wrappers send it); only a second request a
        // person could make escalates.
        if self
            .shutting_down
            .is_some_and(|t| t.elapsed() < Duration::from_millis(250))
        {
            log::debug!("Received {signal} again within 250 ms: taken as the same request");
            return;
        }
        if self.shutting_down.is_some() {
            log::warn!("Received {signal} again: killing every worker now");
            let ids: Vec<u64> = self.slots.keys().copied().collect();
            for id in ids {
                self.step(id, Input::KillNow);
            }
            return;
        }
        log::info!(
            "Received {signal}: stopping {} worker(s) (grace {} ms)",
            self.slots.len(),
            self.policy.shutdown_timeout.as_millis()
        );
        self.shutting_down = Some(Instant::now());
        // No watcher activity once shutdown has begun.
        self.watcher = None;
        crate::sdnotify::notify("STOPPING=1");
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        for id in ids {
            self.step(id, Input::Stop);
        }
    }

    fn reload(&mut self, why: &str, reply_to: Option<(u64, i64)>) {
        if self.shutting_down.is_some() {
            return;
        }
        crate::sdnotify::notify("RELOADING=1");
        // Reading and checking the file is I/O: a short thread does it and
        // sends the outcome back, so the loop never waits on the disk.
        let load = {
            let (path, tx, why) = (self.env_file.clone(), self.tx.clone(), why.to_string());
            move || {
                let env = |k: &str| std::env::var(k).ok();
                let result = Config::load(&path, &env, false)
                    .map(Box::new)
                    .map_err(|e| e.to_string());
                if tx
                    .send(Event::Loaded {
                        result,
                        why,
                        reply_to,
                    })
                    .is_err()
                {
                    // The loop is gone; there is nothing left to reload.
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("config-load".into())
            .stack_size(256 * 1024)
            .spawn(load)
        {
            log::error!("Config reload ({why}) not started: cannot start a thread: {e}");
            crate::sdnotify::notify("READY=1");
        }
    }

    /// The outcome of a reload read off the loop.
    fn loaded(
        &mut self,
        result: Result<Box<Config>, String>,
        why: &str,
        reply_to: Option<(u64, i64)>,
    ) {
        crate::sdnotify::notify("READY=1");
        if self.shutting_down.is_some() {
            return;
        }
        match result {
            Ok(config) => self.apply(*config, why, reply_to),
            Err(e) => {
                log::error!("Config reload ({why}) rejected; keeping the running config: {e}");
                self.reply(
                    reply_to,
                    format!("❌ Configuration rejected, nothing changed:\n{e}"),
                );
            }
        }
    }

    /// Applies a validated configuration: tokens as a set, settings pushed.
    fn apply(&mut self, new: Config, why: &str, reply_to: Option<(u64, i64)>) {
        if self.shutting_down.is_some() {
            return;
        }
        let soft = sys::nofile_limit().map_or(u64::MAX, |(soft, _)| soft);
        if limits::fds_needed(new.tokens.len()) > soft {
            let e = limits::FdLimitError {
                bots: new.tokens.len(),
                needed: limits::fds_needed(new.tokens.len()),
                soft,
                hard: sys::nofile_limit().map_or(soft, |(_, hard)| hard),
            };
            log::error!("Config reload ({why}) rejected; keeping the running config: {e}");
            self.reply(
                reply_to,
                format!("❌ Configuration rejected, nothing changed:\n{e}"),
            );
            return;
        }
        if new.tokens.len() > self.config.tokens.len() {
            if let Some(w) = limits::check_tasks(new.tokens.len()) {
                log::warn!("Config reload ({why}): {w}");
            }
        }
        let diff = crate::config::diff(&self.config, &new);
        if diff.is_empty() {
            log::info!("Config reload ({why}): no changes");
            self.reply(
                reply_to,
                format!(
                    "✅ Configuration reloaded: no changes (version {})",
                    new.version()
                ),
            );
            return;
        }
        log::info!(
            "Config reload ({why}): version {} → {}",
            self.config.version(),
            new.version()
        );
        for line in diff.render() {
            log::info!("  {line}");
        }
        for w in &new.warnings {
            log::warn!("{w}");
        }
        if new.settings.lock_file != self.config.settings.lock_file {
            log::warn!("LOCK_FILE changed: this takes effect only after a restart of botfleet");
        }
        if new.settings.rust_log != self.config.settings.rust_log {
            crate::logging::set_filter(&new.settings.rust_log);
        }
        let old_ids: std::collections::BTreeSet<u64> = self.slots.keys().copied().collect();
        let new_tokens: BTreeMap<u64, Token> =
            new.tokens.iter().map(|t| (t.bot_id(), t.clone())).collect();
        let removed: Vec<u64> = old_ids
            .iter()
            .filter(|id| !new_tokens.contains_key(id))
            .copied()
            .collect();
        let added: Vec<Token> = new_tokens
            .values()
            .filter(|t| !old_ids.contains(&t.bot_id()))
            .cloned()
            .collect();
        // A token whose secret changed (same bot id) restarts that worker.
        let replaced: Vec<Token> = new_tokens
            .values()
            .filter(|t| self.slots.get(&t.bot_id()).is_some_and(|s| s.token != **t))
            .cloned()
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            log::info!(
                "Token changes detected: {} added, {} removed",
                added.len(),
                removed.len()
            );
        }
        let old_worker_env = self.config.worker_env();
        self.policy = policy_of(&new);
        // Deadlines may come earlier under the new policy: judge them now.
        self.next_due = Some(Instant::now());
        self.config = new;
        crate::logging::configure(&self.config.settings);
        if let Some(w) = &self.watcher {
            w.retime(self.watch_timing());
        }
        {
            let mut view = self.lock_view();
            view.config_reloads += 1;
        }
        for id in removed {
            if let Some(slot) = self.slots.get(&id) {
                log::info!("Killing bot worker {} (token removed)", slot.index);
            }
            self.step(id, Input::Stop);
        }
        for token in replaced {
            let id = token.bot_id();
            crate::logging::add_secret(token.secret());
            if let Some(slot) = self.slots.get_mut(&id) {
                log::info!("Token of bot worker {} changed: restarting it", slot.index);
                slot.token = token;
            }
            self.step(id, Input::Restart);
        }
        let added_ids: Vec<u64> = added.iter().map(Token::bot_id).collect();
        let count = added.len();
        match self.add_slots(added) {
            Ok(indices) => {
                for index in indices {
                    log::info!("Spawning new bot worker for added token (index {index})");
                }
            }
            Err(e) => log::error!("Cannot add {count} worker(s): {e}"),
        }
        // Settings a running worker cannot take: its client's base URL, its
        // media and state directories. Those workers restart one at a time.
        let restart_keys = ["TELEGRAM_API_URL", "MEDIA_TMP_LOCATION", "STATE_DIR"];
        if diff.changed_keys().iter().any(|k| restart_keys.contains(k)) {
            let ids: Vec<u64> = self
                .slots
                .iter()
                .filter(|(id, s)| {
                    !added_ids.contains(id)
                        && !matches!(s.machine.state, State::Stopping { .. } | State::Gone)
                })
                .map(|(id, _)| *id)
                .collect();
            log::info!(
                "Restarting {} worker(s) one at a time for settings they read only at start",
                ids.len()
            );
            self.start_rolling(ids);
        }
        if self.config.worker_env() != old_worker_env {
            // flush_outgoing sends SETTINGS to every worker until each acks.
            self.settings_version = self.config.version().to_string();
            for slot in self.slots.values_mut() {
                // Forget what each acknowledged: versions are content
                // hashes, so after A → B → A a worker whose ack of B is
                // still in flight would otherwise look current and stay on B.
                slot.settings_acked = false;
                slot.settings_sent = None;
            }
            self.settings_unacked = true;
            self.flush_outgoing();
        }
        let total = self
            .slots
            .values()
            .filter(|s| {
                !matches!(
                    s.machine.state,
                    State::Stopping {
                        then: machine::AfterStop::Remove,
                        ..
                    }
                )
            })
            .count();
        log::info!("✅ Bot workers updated: {total} total worker(s)");
        self.reply(
            reply_to,
            format!(
                "✅ Configuration reloaded: {} added, {} removed, {} modified (version {})",
                diff.added.len(),
                diff.removed.len(),
                diff.modified.len(),
                self.config.version()
            ),
        );
    }

    fn reply(&mut self, reply_to: Option<(u64, i64)>, text: String) {
        if let Some((bot_id, chat_id)) = reply_to {
            self.send_to(bot_id, &ParentMsg::ReloadResult { chat_id, text });
        }
    }

    /// Queues one whole line for a worker and writes what its pipe takes.
    fn send_to(&mut self, bot_id: u64, msg: &ParentMsg) {
        let Some(slot) = self.slots.get_mut(&bot_id) else {
            return;
        };
        if slot.stdin.is_none() {
            return;
        }
        let line = msg.encode();
        if slot.outgoing.len() + line.len() > OUTGOING_MAX {
            // A worker that reads nothing for this long gets no more; the
            // lines already queued stay whole.
            log::warn!(
                "Worker bot-{} is not reading its stdin; a message to it was dropped",
                slot.index
            );
            return;
        }
        slot.outgoing.extend_from_slice(line.as_bytes());
        write_pending(slot);
        if !slot.outgoing.is_empty() {
            self.backlog.insert(bot_id);
        }
    }

    /// Sends SETTINGS to every worker that has not acknowledged the current
    /// ones (again after SETTINGS_RESEND), then writes every worker's
    /// queued lines as far as its pipe takes them. Runs every turn.
    fn flush_outgoing(&mut self) {
        let now = Instant::now();
        if self.settings_unacked {
            self.resend_settings(now);
        }
        let backlog = std::mem::take(&mut self.backlog);
        for id in backlog {
            if let Some(slot) = self.slots.get_mut(&id) {
                write_pending(slot);
                if !slot.outgoing.is_empty() {
                    self.backlog.insert(id);
                }
            }
        }
    }

    /// SETTINGS to every worker that has not acknowledged the current ones
    /// (again after SETTINGS_RESEND); O(workers), only while some have not.
    fn resend_settings(&mut self, now: Instant) {
        let unacked = self
            .slots
            .values()
            .filter(|s| s.stdin.is_some() && !s.settings_acked)
            .count();
        if unacked == 0 {
            self.settings_unacked = false;
            return;
        }
        let due: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                s.stdin.is_some()
                    && !s.settings_acked
                    && s.settings_sent
                        .is_none_or(|t| now.duration_since(t) >= SETTINGS_RESEND)
            })
            .map(|(id, _)| *id)
            .collect();
        if !due.is_empty() {
            let msg = ParentMsg::Settings {
                env: handed_env(&self.config),
                version: self.settings_version.clone(),
            };
            for id in due {
                if let Some(slot) = self.slots.get_mut(&id) {
                    if slot.settings_sent.is_some() {
                        log::debug!(
                            "Worker bot-{}: settings not acknowledged yet; sending them again",
                            slot.index
                        );
                    }
                    slot.settings_sent = Some(now);
                }
                self.send_to(id, &msg);
            }
        }
    }

    fn lock_view(&self) -> std::sync::MutexGuard<'_, FleetView> {
        match self.view.lock() {
            Ok(g) => g,
            // A reader panicked while holding it; the data is plain values.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Publishes the fleet to the health view: the whole worker list only
    /// when slots came or went (`view_stale`); each worker's own entry is
    /// kept current by `publish_one` as it changes.
    fn publish(&mut self) {
        let stale = std::mem::take(&mut self.view_stale);
        let shutting_down = self.shutting_down.is_some();
        let version = self.config.version();
        let mut view = self.lock_view();
        if stale {
            // In place, in bot id order: no second list of every worker,
            // and each worker's counters stay.
            view.workers.retain(|w| self.slots.contains_key(&w.bot_id));
            for (id, s) in &self.slots {
                let mut entry = view_of(*id, s);
                match view.workers.binary_search_by_key(id, |w| w.bot_id) {
                    Ok(i) => {
                        entry.counters = std::mem::take(&mut view.workers[i].counters);
                        view.workers[i] = entry;
                    }
                    Err(i) => view.workers.insert(i, entry),
                }
            }
        }
        if view.config_version != version {
            view.config_version = version.to_string();
        }
        view.shutting_down = shutting_down;
        view.last_turn = Some(SystemTime::now());
    }

    /// A heartbeat's counters into the worker's entry in the health view
    /// (the only copy of them), O(log workers).
    fn publish_counters(&mut self, bot_id: u64, counters: Counters) {
        let mut view = self.lock_view();
        match view.workers.binary_search_by_key(&bot_id, |w| w.bot_id) {
            Ok(i) => view.workers[i].counters = counters,
            Err(_) => {
                drop(view);
                self.view_stale = true;
            }
        }
    }

    /// One worker's entry in the health view, O(log workers); a worker not
    /// in it (new, or gone) makes the next pass rebuild the list.
    fn publish_one(&mut self, bot_id: u64) {
        let Some(slot) = self.slots.get(&bot_id) else {
            self.view_stale = true;
            return;
        };
        let mut entry = view_of(bot_id, slot);
        let mut view = self.lock_view();
        // The list is in bot id order, as the slots are.
        match view.workers.binary_search_by_key(&bot_id, |w| w.bot_id) {
            Ok(i) => {
                entry.counters = std::mem::take(&mut view.workers[i].counters);
                view.workers[i] = entry;
            }
            Err(_) => {
                drop(view);
                self.view_stale = true;
            }
        }
    }

    /// Ticks every machine (O(workers): only when a deadline is due, or
    /// the policy changed) and computes `next_due` anew.
    fn tick_all(&mut self) {
        let now = Instant::now();
        let due: Vec<(u64, bool)> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                s.machine
                    .next_deadline(&self.policy)
                    .is_some_and(|d| d <= now)
            })
            .map(|(id, s)| (*id, matches!(s.machine.state, State::Backoff { .. })))
            .collect();
        let mut budget = SPAWN_BATCH;
        self.spawns_waiting = false;
        for (id, spawn) in due {
            if spawn {
                if budget == 0 {
                    // The rest next turn, once the events queued by these
                    // are read.
                    self.spawns_waiting = true;
                    continue;
                }
                budget -= 1;
            }
            self.step(id, Input::Tick);
        }
        self.next_due = self
            .slots
            .values()
            .filter_map(|s| s.machine.next_deadline(&self.policy))
            .min();
    }

    /// Feeds one input to one worker's machine and carries out its actions.
    fn step(&mut self, bot_id: u64, input: Input) {
        let was_ready = self
            .slots
            .get(&bot_id)
            .is_some_and(|s| matches!(s.machine.state, State::Ready { .. }));
        self.step_machine(bot_id, input);
        let slot = self.slots.get(&bot_id);
        let is_ready = slot.is_some_and(|s| matches!(s.machine.state, State::Ready { .. }));
        match (was_ready, is_ready) {
            (false, true) => self.ready += 1,
            (true, false) => self.ready -= 1,
            _ => {}
        }
        if let Some(due) = slot.and_then(|s| s.machine.next_deadline(&self.policy)) {
            self.next_due = Some(self.next_due.map_or(due, |d| d.min(due)));
        }
        if slot.is_some_and(|s| s.machine.state == State::Gone) {
            if is_ready {
                self.ready -= 1;
            }
            self.slots.remove(&bot_id);
            self.backlog.remove(&bot_id);
            self.view_stale = true;
            return;
        }
        self.publish_one(bot_id);
        self.alert_on_change(bot_id);
    }

    fn step_machine(&mut self, bot_id: u64, input: Input) {
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            let now = Instant::now();
            let jitter = self.jitter.next();
            let Some(slot) = self.slots.get_mut(&bot_id) else {
                return;
            };
            let actions = slot.machine.step(input, now, &self.policy, jitter);
            let index = slot.index;
            for action in actions {
                match action {
                    Action::Log { level, message } => {
                        log::log!(level, "Worker bot-{index}: {message}");
                    }
                    Action::Terminate { pid } => {
                        if let Err(e) = sys::signal_group(pid, sys::Signal::Term) {
                            log::debug!("SIGTERM to worker bot-{index} (pgid {pid}): {e}");
                        }
                    }
                    Action::Kill { pid } => {
                        if let Err(e) = sys::signal_group(pid, sys::Signal::Kill) {
                            log::debug!("SIGKILL to worker bot-{index} (pgid {pid}): {e}");
                        }
                    }
                    Action::Spawn => {
                        if self.shutting_down.is_some() {
                            // Never spawn during shutdown: treat as stopped.
                            queue.push(Input::Stop);
                            continue;
                        }
                        match self.spawn(bot_id) {
                            Ok(pid) => queue.push(Input::Spawned { pid }),
                            Err(e) => queue.push(Input::SpawnFailed {
                                error: e.to_string(),
                            }),
                        }
                    }
                }
            }
        }
    }

    /// Tells the owner once when a worker becomes failed, and once when it
    /// is ready again.
    fn alert_on_change(&mut self, bot_id: u64) {
        let Some(slot) = self.slots.get_mut(&bot_id) else {
            return;
        };
        let name = match &slot.username {
            Some(u) => format!("bot-{} (@{u})", slot.index),
            None => format!("bot-{}", slot.index),
        };
        let text = match (&slot.machine.state, &slot.alerted) {
            (State::Failed { reason }, Alerted::Nothing | Alerted::Conflict) => {
                slot.alerted = Alerted::Failed;
                format!("🛑 botfleet: {name} failed: {reason}. It stays down until its config changes or it is restarted.")
            }
            (State::Ready { .. }, Alerted::Failed) => {
                slot.alerted = Alerted::Nothing;
                format!("✅ botfleet: {name} is running again.")
            }
            _ => return,
        };
        self.alert_owner(bot_id, text);
    }

    /// Sends a fleet alert to OWNER_USER_ID through a healthy bot.
    fn alert_owner(&mut self, about: u64, text: String) {
        let Some(owner) = self.config.settings.owner_user else {
            return;
        };
        let messenger = self
            .slots
            .iter()
            .filter(|(id, s)| {
                **id != about && matches!(s.machine.state, State::Ready { .. }) && !s.conflict
            })
            .map(|(id, _)| *id)
            .next()
            .or_else(|| {
                // The subject itself may still be fine to speak (it recovered).
                self.slots
                    .get(&about)
                    .filter(|s| matches!(s.machine.state, State::Ready { .. }))
                    .map(|_| about)
            });
        match messenger {
            Some(id) => {
                log::info!("Alerting the owner: {text}");
                self.send_to(
                    id,
                    &ParentMsg::Notify {
                        chat_id: owner,
                        text,
                    },
                );
            }
            None => {
                log::warn!("No healthy bot to alert the owner with yet: {text}");
                self.pending_alerts.push((about, text));
            }
        }
    }

    /// Sends the alerts that waited for a healthy bot.
    fn flush_alerts(&mut self) {
        for (about, text) in std::mem::take(&mut self.pending_alerts) {
            self.alert_owner(about, text);
        }
    }

    fn spawn(&mut self, bot_id: u64) -> std::io::Result<u32> {
        use std::os::unix::process::CommandExt;
        let parent_pid = std::process::id().to_string();
        let env = handed_env(&self.config);
        let Some(slot) = self.slots.get_mut(&bot_id) else {
            return Err(std::io::Error::other("no such worker"));
        };
        // The token and the settings go over stdin (START), never through
        // an environment a handler could read in /proc; the worker's own
        // environment is only what names it in logs.
        let start = ParentMsg::Start {
            token: slot.token.clone(),
            env,
        };
        // Held until the reader has the child: its orphan sweep never
        // takes a worker being spawned for an orphan.
        let _gate = self.reader.spawn_gate();
        // The worker's stdin and stdout are one socket pair, not two pipes:
        // two descriptors a worker here (with its stderr pipe), not three.
        // They are made, and the worker started, by the spawner thread in
        // its own small descriptor table (`spawner`): a spawn from this
        // thread would copy every worker's descriptors into the new worker,
        // which closes them all again at exec.
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .arg("--state-dir")
            .arg(&self.config.settings.state_dir)
            .env_clear()
            .envs(std::env::var("RUST_LOG").map(|v| ("RUST_LOG", v)))
            .env("BOT_INDEX", slot.index.to_string())
            .env("BOTFLEET_PARENT_PID", parent_pid)
            // Its log lines come as JSON on stderr, rendered by `logging`.
            .env(crate::logging::WIRE_ENV, "1")
            .process_group(0);
        let spawner::Spawned {
            mut child,
            io,
            stderr,
        } = self.spawner.spawn(cmd)?;
        let pid = child.id();
        let pipe = Arc::new(io);
        // Written while the socket is still blocking: the first line, before
        // anything else can be queued for this worker.
        if let Err(e) = std::io::Write::write_all(&mut &*pipe, start.encode().as_bytes()) {
            spawner::abandon(&mut child);
            return Err(e);
        }
        {
            use std::os::fd::AsRawFd;
            if let Err(e) = sys::set_nonblocking(pipe.as_raw_fd()) {
                // Unwatched, it would never be reaped.
                spawner::abandon(&mut child);
                return Err(e);
            }
        }
        slot.generation += 1;
        let generation = slot.generation;
        let index = slot.index;
        if crate::logging::follow(stderr, index, bot_id).is_err() {
            log::warn!("Cannot follow the log lines of worker bot-{index}; they are lost");
        }
        let watched = reader::Watched {
            bot_id,
            generation,
            child,
            pipe: Arc::clone(&pipe),
        };
        if let Err(mut back) = self.reader.watch(watched) {
            // Without the reader nobody would reap it: kill and reap it now.
            spawner::abandon(&mut back.child);
            return Err(std::io::Error::other("the worker pipe reader is gone"));
        }
        slot.stdin = Some(pipe);
        slot.outgoing.clear();
        // It started with the current settings in its environment.
        slot.settings_acked = true;
        slot.settings_sent = None;
        slot.running_since = Some(SystemTime::now());
        log::debug!("Worker bot-{index} started (pid {pid})");
        Ok(pid)
    }
}

/// One worker as the health view shows it.
fn view_of(bot_id: u64, s: &Slot) -> WorkerView {
    WorkerView {
        index: s.index,
        bot_id,
        username: s.username.clone(),
        pid: s.machine.state.pid(),
        state: s.machine.state.name(),
        failure: match &s.machine.state {
            State::Failed { reason } => Some(reason.to_string()),
            _ => None,
        },
        running_since: s.running_since,
        restarts: s.machine.restarts,
        memory_restarts: s.memory_restarts,
        // Kept in the view only (`publish_counters`).
        counters: Counters::default(),
    }
}

/// Writes as much of a worker's queued lines as its non-blocking pipe takes;
/// the rest waits for the next turn. A closed pipe drops the queue (the
/// worker is exiting and its reaping follows).
fn write_pending(slot: &mut Slot) {
    let Some(stdin) = slot.stdin.as_deref() else {
        slot.outgoing.clear();
        return;
    };
    if let Err(e) = outgoing::drain_into(&mut &*stdin, &mut slot.outgoing) {
        log::debug!("Cannot write to worker bot-{}: {e}", slot.index);
        slot.outgoing.clear();
    }
}
