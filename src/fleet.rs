//! What the supervisor loop hears and what it publishes: the one `Event`
//! type every thread sends into the loop's channel (signals, the worker
//! pipe reader, the watcher, the health server), and the `FleetView`
//! snapshot the loop publishes for the health server and `status`. The
//! supervisor, health and watcher all stand on this module, so none of them
//! imports another for these types. It holds plain data only and must never
//! do I/O or hold a token.

use crate::config::Config;
use crate::ipc::{Counters, WorkerMsg};
use crate::signals::SignalKind;
use std::time::SystemTime;

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
    /// The workers' lines read in one round of the pipe reader, in order:
    /// one wake of the supervisor loop for all of them, not one for each.
    Workers(Vec<Event>),
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
    /// Restarts for WORKER_MAX_RSS_MB (also counted in `restarts`).
    pub memory_restarts: u32,
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
    /// When the supervisor loop last turned (it turns at least once a
    /// second): the health server calls a loop silent for long "stuck".
    pub last_turn: Option<SystemTime>,
}
