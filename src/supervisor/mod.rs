//! The supervisor: one loop on one thread that owns the worker table and the
//! receiving end of the one `Event` channel. The signal thread, the worker
//! reader threads (one per worker process: its stdout lines, then its exit
//! status), the config watcher and the health server hold senders. The loop
//! never blocks on I/O and never sleeps: it waits on the channel until the
//! next deadline (a restart due, a stop grace ending, a heartbeat overdue).
//! It must never run two processes for one token, and never spawn once
//! shutdown has begun.

pub mod machine;
mod reader;

use crate::config::Config;
use crate::ipc::{Counters, ParentMsg, WorkerMsg};
use crate::signals::SignalKind;
use crate::state::Registry;
use crate::sys;
use crate::token::Token;
use machine::{Action, Input, Policy, State, Worker};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often a worker sends a heartbeat.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(2);
/// After events that are only heartbeats, the pass over every worker (its
/// machine ticked, the health view rebuilt) runs at most this often. It is
/// O(workers): run for each of a 1,000-bot fleet's 500 heartbeats a second,
/// it was most of the idle fleet's CPU (bench/NOTES.md, scale).
const ROUTINE_PASS_EVERY: Duration = Duration::from_millis(100);

/// Everything the supervisor loop reacts to. One closed set, one channel.
#[derive(Debug)]
pub enum Event {
    /// A signal arrived.
    Signal(SignalKind),
    /// A worker said something on its stdout.
    FromWorker {
        bot_id: u64,
        generation: u64,
        msg: WorkerMsg,
    },
    /// A worker wrote a line that is not a message (logged, ignored).
    BadLine { bot_id: u64, error: String },
    /// A worker process exited and was reaped.
    WorkerExited {
        bot_id: u64,
        generation: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Reload `.env` now (SIGHUP, the watcher, /reload_config, a test).
    Reload {
        why: String,
        reply_to: Option<(u64, i64)>,
    },
    /// `.env` was read and checked off the loop: the config, or the error.
    Loaded {
        result: Result<Box<Config>, String>,
        why: String,
        reply_to: Option<(u64, i64)>,
    },
    /// Restart one worker (by index) or all of them, one at a time.
    Restart { index: Option<u32> },
    /// The systemd watchdog asks whether the loop is turning: answer.
    Alive(std::sync::mpsc::Sender<()>),
}

/// A worker as /health and `status` see it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub index: u32,
    pub bot_id: u64,
    pub username: Option<String>,
    pub pid: Option<u32>,
    pub state: &'static str,
    pub failure: Option<String>,
    pub running_since: Option<SystemTime>,
    pub restarts: u32,
    pub counters: Counters,
}

/// The fleet as the supervisor last published it.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    pub started: Option<SystemTime>,
    pub config_version: String,
    pub config_reloads: u64,
    pub workers: Vec<WorkerView>,
    pub shutting_down: bool,
}

/// A worker slot: one token, at most one process at a time.
struct Slot {
    token: Token,
    index: u32,
    username: Option<String>,
    machine: Worker,
    /// Bumped at every spawn, so events from an older process are ignored.
    generation: u64,
    stdin: Option<ChildStdin>,
    counters: Counters,
    running_since: Option<SystemTime>,
    /// What the owner was last told about this worker.
    alerted: Alerted,
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
    policy: Policy,
    exe: PathBuf,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    slots: BTreeMap<u64, Slot>,
    registry: Registry,
    jitter: Jitter,
    shutting_down: Option<Instant>,
    announced_ready: bool,
    view: Arc<Mutex<FleetView>>,
    watcher: Option<crate::watcher::Watcher>,
    /// The thread that reads every worker's stdout and reaps it.
    reader: reader::Reader,
    /// Owner alerts waiting for a healthy bot to carry them.
    pending_alerts: Vec<(u64, String)>,
    /// Workers waiting for their turn in a rolling restart.
    rolling: std::collections::VecDeque<u64>,
    /// The worker restarting now, and its generation when it began.
    rolling_current: Option<(u64, u64)>,
}

impl Supervisor {
    /// Prepares the supervisor: the registry, the event channel, the signal
    /// thread. The caller already holds the instance lock.
    pub fn new(config: Config, env_file: PathBuf) -> Result<Supervisor, SupervisorError> {
        let exe = std::env::current_exe().map_err(SupervisorError::Exe)?;
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
            view,
            watcher: None,
            reader: pipes,
            pending_alerts: Vec::new(),
            rolling: std::collections::VecDeque::new(),
            rolling_current: None,
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
        crate::logging::add_secret(token.secret());
        self.slots.insert(
            token.bot_id(),
            Slot {
                token,
                index,
                username: None,
                machine: Worker::new(Instant::now()),
                generation: 0,
                stdin: None,
                counters: Counters::default(),
                running_since: None,
                alerted: Alerted::Nothing,
            },
        );
    }

    /// Runs until the fleet has stopped. Returns the process exit code.
    pub fn run(mut self) -> i32 {
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
        let mut health =
            crate::health::Health::start(&self.config.settings, self.view(), self.sender());
        crate::sdnotify::notify(&format!("STATUS=starting {} worker(s)", self.slots.len()));
        self.tick_all();
        let mut last_pass = Instant::now();
        loop {
            if self.shutting_down.is_some() && self.slots.is_empty() {
                break;
            }
            let now = Instant::now();
            let deadline = self.next_deadline();
            let event = match deadline {
                Some(d) if d <= now => None,
                Some(d) => match self.rx.recv_timeout(d - now) {
                    Ok(e) => Some(e),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(e) => Some(e),
                    Err(_) => break,
                },
            };
            let routine = matches!(
                event,
                Some(Event::FromWorker {
                    msg: WorkerMsg::Heartbeat(_),
                    ..
                })
            );
            if let Some(event) = event {
                let reconfigured = matches!(event, Event::Loaded { .. });
                self.handle(event);
                if reconfigured {
                    health.reconfigure(&self.config.settings);
                }
            }
            // A deadline that came due ends the wait with no event, so a
            // skipped pass is at most ROUTINE_PASS_EVERY late.
            if routine && last_pass.elapsed() < ROUTINE_PASS_EVERY {
                continue;
            }
            last_pass = Instant::now();
            self.tick_all();
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

    fn watch_timing(&self) -> crate::watcher::Timing {
        crate::watcher::Timing {
            interval: self.config.settings.monitor_interval,
            debounce: self.config.settings.reload_debounce,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self
            .slots
            .values()
            .filter_map(|s| s.machine.next_deadline(&self.policy))
            .min();
        if let Some(begun) = self.shutting_down {
            let last = begun + self.policy.shutdown_timeout + Duration::from_secs(3);
            next = Some(next.map_or(last, |n| n.min(last)));
        }
        next
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(SignalKind::Stop(name)) => self.begin_shutdown(name),
            Event::Signal(SignalKind::Reload) => {
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
                slot.counters = counters;
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
                self.step(bot_id, Input::Heartbeat);
            }
            WorkerMsg::Fatal { reason } => {
                log::error!("Worker bot-{} reports a fatal error: {reason}", slot.index);
                self.step(bot_id, Input::Fatal { reason });
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
        if !self.announced_ready
            && !self.slots.is_empty()
            && self
                .slots
                .values()
                .all(|s| matches!(s.machine.state, State::Ready { .. }))
        {
            self.announced_ready = true;
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
        self.config = new;
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
        let worker_env = self.config.worker_env();
        if worker_env != old_worker_env {
            let msg = ParentMsg::Settings { env: worker_env };
            let ids: Vec<u64> = self.slots.keys().copied().collect();
            for id in ids {
                self.send_to(id, &msg);
            }
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

    fn send_to(&mut self, bot_id: u64, msg: &ParentMsg) {
        let Some(slot) = self.slots.get_mut(&bot_id) else {
            return;
        };
        let Some(stdin) = slot.stdin.as_mut() else {
            return;
        };
        // The pipe is non-blocking: a worker that does not read gets its
        // message dropped rather than stalling the loop.
        if let Err(e) = stdin.write_all(msg.encode().as_bytes()) {
            log::warn!("Cannot send to worker bot-{}: {e}", slot.index);
        }
    }

    fn lock_view(&self) -> std::sync::MutexGuard<'_, FleetView> {
        match self.view.lock() {
            Ok(g) => g,
            // A reader panicked while holding it; the data is plain values.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn publish(&self) {
        let workers = self
            .slots
            .iter()
            .map(|(id, s)| WorkerView {
                index: s.index,
                bot_id: *id,
                username: s.username.clone(),
                pid: s.machine.state.pid(),
                state: s.machine.state.name(),
                failure: match &s.machine.state {
                    State::Failed { reason } => Some(reason.to_string()),
                    _ => None,
                },
                running_since: s.running_since,
                restarts: s.machine.restarts,
                counters: s.counters.clone(),
            })
            .collect();
        let version = self.config.version().to_string();
        let shutting_down = self.shutting_down.is_some();
        let mut view = self.lock_view();
        view.workers = workers;
        view.config_version = version;
        view.shutting_down = shutting_down;
    }

    fn tick_all(&mut self) {
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        for id in ids {
            self.step(id, Input::Tick);
        }
    }

    /// Feeds one input to one worker's machine and carries out its actions.
    fn step(&mut self, bot_id: u64, input: Input) {
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
        if self
            .slots
            .get(&bot_id)
            .is_some_and(|s| s.machine.state == State::Gone)
        {
            self.slots.remove(&bot_id);
            return;
        }
        self.alert_on_change(bot_id);
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
                **id != about
                    && matches!(s.machine.state, State::Ready { .. })
                    && !s.counters.conflict
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
        let worker_env = self.config.worker_env();
        let Some(slot) = self.slots.get_mut(&bot_id) else {
            return Err(std::io::Error::other("no such worker"));
        };
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .env_remove("TELEGRAM_BOT_TOKENS")
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("HEALTH_AUTH_TOKEN")
            .envs(worker_env)
            .env("BOT_TOKEN", slot.token.expose())
            .env("BOT_INDEX", slot.index.to_string())
            .env("BOTFLEET_PARENT_PID", parent_pid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            // Both were asked for as pipes; without them the worker is useless.
            let _kill = child.kill();
            let _reap = child.wait();
            return Err(std::io::Error::other("worker pipes missing"));
        };
        {
            use std::os::fd::AsRawFd;
            sys::set_nonblocking(stdin.as_raw_fd())?;
        }
        slot.generation += 1;
        let generation = slot.generation;
        let index = slot.index;
        let watched = reader::Watched {
            bot_id,
            generation,
            child,
            stdout,
        };
        if let Err(mut back) = self.reader.watch(watched) {
            // Without the reader nobody would reap it: kill and reap it now.
            if let Err(e) = back.child.kill() {
                log::error!("Cannot kill worker bot-{index} after a failed start: {e}");
            }
            if let Err(e) = back.child.wait() {
                log::error!("Cannot reap worker bot-{index}: {e}");
            }
            return Err(std::io::Error::other("the worker pipe reader is gone"));
        }
        slot.stdin = Some(stdin);
        slot.running_since = Some(SystemTime::now());
        log::debug!("Worker bot-{index} started (pid {pid})");
        Ok(pid)
    }
}
