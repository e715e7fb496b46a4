//! One worker's life as a pure state machine: `Worker::step(input, now)`
//! returns the actions the supervisor must carry out (spawn, signal, log).
//! It owns the restart policy (doubling backoff with jitter, the crash-loop
//! limit, the stable-run reset, the hung-worker check, the stop deadline).
//! It must never touch a process, a clock or a file: time and randomness
//! come in as arguments, so every transition is unit-tested without spawning.
//! (Past 700 lines: the second half is those unit tests, kept beside the
//! transitions they pin down.)
//!
//! ```text
//!             spawn ok            READY
//!  Backoff ────────────▶ Starting ──────▶ Ready
//!     ▲  ▲                  │  │            │ │
//!     │  └── crash (exit, ──┘  │            │ │
//!     │      hung, spawn       │ stop       │ │ stop / restart
//!     │      error) ◀──────────┼────────────┘ │
//!     │                        ▼              ▼
//!     │ restart ◀──────── Stopping ──exit──▶ Gone (removed)
//!     │                   (TERM, grace, KILL)
//!  Failed ◀── token rejected, or MAX_RESTARTS crashes in a row
//!     └── restart request or token change: back to Backoff(now)
//! ```

pub use crate::ipc::{EXIT_PERMANENT, EXIT_TOKEN_REJECTED};
use std::time::{Duration, Instant};

/// The restart policy, from the settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub restart_delay: Duration,
    pub restart_max_delay: Duration,
    /// Crashes in a row before `failed`; 0 never gives up.
    pub max_restarts: u32,
    pub reset_after: Duration,
    /// No heartbeat for this long: hung.
    pub hung_after: Duration,
    pub shutdown_timeout: Duration,
}

/// Why a worker is `failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum FailReason {
    /// Telegram answered 401/404: the token is wrong or revoked.
    TokenRejected,
    /// It crashed MAX_RESTARTS times in a row.
    CrashLoop { restarts: u32 },
    /// It exited saying a restart would not help.
    Permanent(String),
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::TokenRejected => write!(f, "token rejected by Telegram"),
            FailReason::CrashLoop { restarts } => {
                write!(f, "crash loop ({restarts} restarts in a row)")
            }
            FailReason::Permanent(why) => write!(f, "{why}"),
        }
    }
}

/// What happens once a stopping worker has exited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterStop {
    /// It is gone for good (token removed, fleet shutting down).
    Remove,
    /// Start a new one at once (a requested restart).
    Restart,
    /// Count it as a crash (it was killed for hanging).
    Crash,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// No process; spawn one at `until`.
    Backoff { until: Instant },
    /// Running, not READY yet.
    Starting { pid: u32, since: Instant },
    /// Running and READY.
    Ready { pid: u32, since: Instant },
    /// No process, none until a restart request or a token change.
    Failed { reason: FailReason },
    /// SIGTERM sent; SIGKILL at `kill_at` unless it exits first.
    Stopping {
        pid: u32,
        kill_at: Instant,
        killed: bool,
        then: AfterStop,
    },
    /// Stopped and removed: the supervisor forgets it.
    Gone,
}

impl State {
    /// The name /health and `status` show.
    pub fn name(&self) -> &'static str {
        match self {
            State::Backoff { .. } => "backoff",
            State::Starting { .. } => "starting",
            State::Ready { .. } => "ready",
            State::Failed { .. } => "failed",
            State::Stopping { .. } | State::Gone => "stopping",
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            State::Starting { pid, .. }
            | State::Ready { pid, .. }
            | State::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// Something that happened to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The supervisor started its process.
    Spawned { pid: u32 },
    /// Starting the process failed.
    SpawnFailed { error: String },
    /// It said READY.
    Ready,
    /// It sent a heartbeat.
    Heartbeat,
    /// It said FATAL before exiting.
    Fatal { reason: String },
    /// Its process exited (reaped).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Time passed; deadlines may be due.
    Tick,
    /// Stop it for good (token removed, shutdown).
    Stop,
    /// Restart it (operator's request, a changed setting), or revive a failed one.
    Restart,
    /// Kill at once (a second shutdown signal).
    KillNow,
}

/// What the supervisor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Spawn,
    Terminate { pid: u32 },
    Kill { pid: u32 },
    Log { level: log::Level, message: String },
}

/// One worker's supervision record.
#[derive(Debug, Clone)]
pub struct Worker {
    pub state: State,
    /// Crashes in a row (reset after a stable run).
    pub consecutive_crashes: u32,
    /// Restarts over the supervisor's life.
    pub restarts: u32,
    fatal: Option<String>,
    last_heartbeat: Instant,
    started_at: Option<Instant>,
}

fn log(level: log::Level, message: String) -> Action {
    Action::Log { level, message }
}

impl Worker {
    /// A new worker, due to be spawned at once.
    pub fn new(now: Instant) -> Worker {
        Worker {
            state: State::Backoff { until: now },
            consecutive_crashes: 0,
            restarts: 0,
            fatal: None,
            last_heartbeat: now,
            started_at: None,
        }
    }

    /// When the supervisor must tick this worker next, if ever.
    pub fn next_deadline(&self, policy: &Policy) -> Option<Instant> {
        match &self.state {
            State::Backoff { until } => Some(*until),
            State::Starting { .. } | State::Ready { .. } => {
                Some(self.last_heartbeat + policy.hung_after)
            }
            State::Stopping {
                kill_at,
                killed: false,
                ..
            } => Some(*kill_at),
            _ => None,
        }
    }

    /// Moves the heartbeat deadline on by `gap` (never past `now`): time the
    /// supervisor itself did not run must not count as the worker's silence.
    pub fn excuse(&mut self, gap: Duration, now: Instant) {
        self.last_heartbeat = (self.last_heartbeat + gap).min(now);
    }

    /// Since when the process has run (Starting or Ready).
    pub fn running_since(&self) -> Option<Instant> {
        match (&self.state, self.started_at) {
            (State::Starting { .. } | State::Ready { .. }, Some(t)) => Some(t),
            _ => None,
        }
    }

    /// The backoff before restart number `n` (1-based), jitter in 0..1.
    pub fn backoff_delay(policy: &Policy, n: u32, jitter: f64) -> Duration {
        let base = policy.restart_delay.as_millis() as f64;
        let cap = policy.restart_max_delay.as_millis() as f64;
        let doubled = base * 2f64.powi(n.saturating_sub(1).min(30) as i32);
        // Jitter of up to +-20% spreads restarts of many workers apart.
        let jittered = doubled * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
        Duration::from_millis(jittered.min(cap).max(0.0) as u64)
    }

    fn crashed(&mut self, now: Instant, policy: &Policy, jitter: f64, why: &str) -> Vec<Action> {
        if let Some(started) = self.started_at.take() {
            if now.duration_since(started) >= policy.reset_after {
                self.consecutive_crashes = 0;
            }
        }
        self.consecutive_crashes += 1;
        if policy.max_restarts > 0 && self.consecutive_crashes > policy.max_restarts {
            let reason = FailReason::CrashLoop {
                restarts: policy.max_restarts,
            };
            let msg = format!(
                "{why}; {reason}: failed, not restarting until its config changes or /restart"
            );
            self.state = State::Failed { reason };
            return vec![log(log::Level::Error, msg)];
        }
        let delay = Worker::backoff_delay(policy, self.consecutive_crashes, jitter);
        self.restarts += 1;
        self.state = State::Backoff { until: now + delay };
        vec![log(
            log::Level::Warn,
            format!(
                "{why}; restarting in {} ms (restart {} in a row)",
                delay.as_millis(),
                self.consecutive_crashes
            ),
        )]
    }

    /// Feeds one input; returns the actions to carry out, in order.
    pub fn step(
        &mut self,
        input: Input,
        now: Instant,
        policy: &Policy,
        jitter: f64,
    ) -> Vec<Action> {
        match (self.state.clone(), input) {
            (State::Backoff { .. }, Input::Spawned { pid }) => {
                self.state = State::Starting { pid, since: now };
                self.started_at = Some(now);
                self.last_heartbeat = now;
                self.fatal = None;
                vec![]
            }
            (State::Backoff { .. }, Input::SpawnFailed { error }) => {
                self.crashed(now, policy, jitter, &format!("could not start: {error}"))
            }
            (State::Backoff { until }, Input::Tick) if now >= until => vec![Action::Spawn],
            (State::Starting { pid, .. }, Input::Ready) => {
                self.state = State::Ready { pid, since: now };
                self.last_heartbeat = now;
                vec![]
            }
            (State::Starting { .. } | State::Ready { .. }, Input::Heartbeat) => {
                self.last_heartbeat = now;
                vec![]
            }
            (_, Input::Heartbeat | Input::Ready) => vec![],
            (_, Input::Fatal { reason }) => {
                self.fatal = Some(reason);
                vec![]
            }
            (State::Starting { pid, .. } | State::Ready { pid, .. }, Input::Tick)
                if now >= self.last_heartbeat + policy.hung_after =>
            {
                self.state = State::Stopping {
                    pid,
                    kill_at: now,
                    killed: true,
                    then: AfterStop::Crash,
                };
                vec![
                    log(
                        log::Level::Error,
                        format!(
                            "no heartbeat for {} s: hung, killing it",
                            policy.hung_after.as_secs()
                        ),
                    ),
                    Action::Kill { pid },
                ]
            }
            (State::Starting { .. } | State::Ready { .. }, Input::Exited { code, signal }) => {
                let how = describe_exit(code, signal);
                if code == Some(EXIT_TOKEN_REJECTED) {
                    self.started_at = None;
                    self.state = State::Failed {
                        reason: FailReason::TokenRejected,
                    };
                    return vec![log(
                        log::Level::Error,
                        "token rejected by Telegram (401): failed, not restarting until the token changes".into(),
                    )];
                }
                if code == Some(EXIT_PERMANENT) {
                    let why = self
                        .fatal
                        .take()
                        .unwrap_or_else(|| "permanent failure".into());
                    self.started_at = None;
                    let msg = format!(
                        "{why}: failed, not restarting until its config changes or /restart"
                    );
                    self.state = State::Failed {
                        reason: FailReason::Permanent(why),
                    };
                    return vec![log(log::Level::Error, msg)];
                }
                self.crashed(now, policy, jitter, &format!("exited unexpectedly ({how})"))
            }
            (State::Stopping { then, .. }, Input::Exited { code, signal }) => match then {
                AfterStop::Remove => {
                    self.state = State::Gone;
                    vec![log(
                        log::Level::Info,
                        format!("stopped ({})", describe_exit(code, signal)),
                    )]
                }
                AfterStop::Restart => {
                    self.started_at = None;
                    self.state = State::Backoff { until: now };
                    self.restarts += 1;
                    vec![Action::Spawn]
                }
                AfterStop::Crash => self.crashed(now, policy, jitter, "killed after hanging"),
            },
            (
                State::Stopping {
                    pid,
                    kill_at,
                    killed: false,
                    then,
                },
                Input::Tick,
            ) if now >= kill_at => {
                self.state = State::Stopping {
                    pid,
                    kill_at,
                    killed: true,
                    then,
                };
                vec![
                    log(
                        log::Level::Warn,
                        format!(
                            "still running {} ms after SIGTERM: SIGKILL",
                            policy.shutdown_timeout.as_millis()
                        ),
                    ),
                    Action::Kill { pid },
                ]
            }
            (State::Starting { pid, .. } | State::Ready { pid, .. }, Input::Stop) => {
                self.state = State::Stopping {
                    pid,
                    kill_at: now + policy.shutdown_timeout,
                    killed: false,
                    then: AfterStop::Remove,
                };
                vec![Action::Terminate { pid }]
            }
            (
                State::Stopping {
                    pid,
                    kill_at,
                    killed,
                    ..
                },
                Input::Stop,
            ) => {
                self.state = State::Stopping {
                    pid,
                    kill_at,
                    killed,
                    then: AfterStop::Remove,
                };
                vec![]
            }
            (State::Backoff { .. } | State::Failed { .. }, Input::Stop) => {
                self.state = State::Gone;
                vec![]
            }
            (State::Starting { pid, .. } | State::Ready { pid, .. }, Input::Restart) => {
                self.consecutive_crashes = 0;
                self.state = State::Stopping {
                    pid,
                    kill_at: now + policy.shutdown_timeout,
                    killed: false,
                    then: AfterStop::Restart,
                };
                vec![Action::Terminate { pid }]
            }
            (State::Backoff { .. } | State::Failed { .. }, Input::Restart) => {
                self.consecutive_crashes = 0;
                self.state = State::Backoff { until: now };
                vec![Action::Spawn]
            }
            (State::Starting { pid, .. } | State::Ready { pid, .. }, Input::KillNow)
            | (State::Stopping { pid, .. }, Input::KillNow) => {
                self.state = State::Stopping {
                    pid,
                    kill_at: now,
                    killed: true,
                    then: AfterStop::Remove,
                };
                vec![Action::Kill { pid }]
            }
            (State::Backoff { .. } | State::Failed { .. }, Input::KillNow) => {
                self.state = State::Gone;
                vec![]
            }
            // Everything else (a tick with nothing due, a stale exit, input
            // to a removed worker) changes nothing.
            _ => vec![],
        }
    }
}

/// "exit code 1", "signal 9".
pub fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        (None, None) => "unknown status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            restart_delay: Duration::from_millis(1000),
            restart_max_delay: Duration::from_millis(5000),
            max_restarts: 3,
            reset_after: Duration::from_secs(60),
            hung_after: Duration::from_secs(40),
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    fn running(now: Instant) -> Worker {
        let p = policy();
        let mut w = Worker::new(now);
        assert_eq!(w.step(Input::Tick, now, &p, 0.5), vec![Action::Spawn]);
        assert_eq!(w.step(Input::Spawned { pid: 42 }, now, &p, 0.5), vec![]);
        assert_eq!(w.state.name(), "starting");
        w.step(Input::Ready, now, &p, 0.5);
        assert_eq!(w.state.name(), "ready");
        w
    }

    fn crash(w: &mut Worker, now: Instant) -> Vec<Action> {
        w.step(
            Input::Exited {
                code: None,
                signal: Some(9),
            },
            now,
            &policy(),
            0.5,
        )
    }

    #[test]
    fn a_new_worker_spawns_at_once_and_becomes_ready() {
        let t = Instant::now();
        let w = running(t);
        assert_eq!(w.state.pid(), Some(42));
        assert_eq!(w.restarts, 0);
    }

    #[test]
    fn crashes_back_off_doubling_up_to_the_cap_then_fail() {
        let p = policy();
        let t0 = Instant::now();
        let mut w = running(t0);
        let mut t = t0;
        let mut delays = vec![];
        for _ in 0..3 {
            crash(&mut w, t);
            let State::Backoff { until } = w.state else {
                panic!("expected backoff, got {:?}", w.state)
            };
            delays.push(until - t);
            assert_eq!(w.step(Input::Tick, t, &p, 0.5), vec![], "not due yet");
            t = until;
            assert_eq!(w.step(Input::Tick, t, &p, 0.5), vec![Action::Spawn]);
            w.step(Input::Spawned { pid: 43 }, t, &p, 0.5);
        }
        assert_eq!(
            delays,
            vec![
                Duration::from_millis(1000),
                Duration::from_millis(2000),
                Duration::from_millis(4000)
            ]
        );
        crash(&mut w, t);
        assert_eq!(
            w.state,
            State::Failed {
                reason: FailReason::CrashLoop { restarts: 3 }
            }
        );
        assert_eq!(
            w.step(Input::Tick, t + Duration::from_secs(999), &p, 0.5),
            vec![]
        );
        assert_eq!(w.restarts, 3);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = policy();
        assert_eq!(
            Worker::backoff_delay(&p, 10, 1.0),
            Duration::from_millis(5000)
        );
        assert_eq!(
            Worker::backoff_delay(&p, 1, 0.0),
            Duration::from_millis(800)
        );
        assert_eq!(
            Worker::backoff_delay(&p, 1, 1.0),
            Duration::from_millis(1200)
        );
        let zero = Policy {
            restart_delay: Duration::ZERO,
            ..policy()
        };
        assert_eq!(Worker::backoff_delay(&zero, 5, 0.7), Duration::ZERO);
    }

    #[test]
    fn a_stable_run_resets_the_crash_count() {
        let p = policy();
        let t0 = Instant::now();
        let mut w = running(t0);
        crash(&mut w, t0);
        let t1 = t0 + Duration::from_secs(2);
        w.step(Input::Tick, t1, &p, 0.5);
        w.step(Input::Spawned { pid: 50 }, t1, &p, 0.5);
        w.step(Input::Ready, t1, &p, 0.5);
        assert_eq!(w.consecutive_crashes, 1);
        let t2 = t1 + Duration::from_secs(61);
        w.step(Input::Heartbeat, t2, &p, 0.5);
        crash(&mut w, t2);
        assert_eq!(
            w.consecutive_crashes, 1,
            "count restarted after a stable run"
        );
        assert_eq!(w.restarts, 2);
    }

    #[test]
    fn token_rejected_fails_without_restart_and_restart_revives() {
        let p = policy();
        let t = Instant::now();
        let mut w = running(t);
        w.step(
            Input::Fatal {
                reason: "token rejected".into(),
            },
            t,
            &p,
            0.5,
        );
        let actions = w.step(
            Input::Exited {
                code: Some(EXIT_TOKEN_REJECTED),
                signal: None,
            },
            t,
            &p,
            0.5,
        );
        assert_eq!(
            w.state,
            State::Failed {
                reason: FailReason::TokenRejected
            }
        );
        assert!(matches!(
            actions[0],
            Action::Log {
                level: log::Level::Error,
                ..
            }
        ));
        assert_eq!(w.step(Input::Restart, t, &p, 0.5), vec![Action::Spawn]);
        assert_eq!(w.state.name(), "backoff");
    }

    #[test]
    fn permanent_exit_fails_with_the_fatal_reason() {
        let p = policy();
        let t = Instant::now();
        let mut w = running(t);
        w.step(
            Input::Fatal {
                reason: "state dir not writable".into(),
            },
            t,
            &p,
            0.5,
        );
        w.step(
            Input::Exited {
                code: Some(EXIT_PERMANENT),
                signal: None,
            },
            t,
            &p,
            0.5,
        );
        assert_eq!(
            w.state,
            State::Failed {
                reason: FailReason::Permanent("state dir not writable".into())
            }
        );
    }

    #[test]
    fn a_hung_worker_is_killed_and_restarted() {
        let p = policy();
        let t = Instant::now();
        let mut w = running(t);
        assert_eq!(w.next_deadline(&p), Some(t + p.hung_after));
        let late = t + p.hung_after;
        let actions = w.step(Input::Tick, late, &p, 0.5);
        assert_eq!(actions.last(), Some(&Action::Kill { pid: 42 }));
        assert_eq!(w.next_deadline(&p), None, "no second kill");
        crash(&mut w, late);
        assert_eq!(w.state.name(), "backoff");
        assert_eq!(w.restarts, 1);
    }

    #[test]
    fn the_supervisors_own_pause_is_not_counted_against_a_worker() {
        let p = policy();
        let t = Instant::now();
        let mut w = running(t);
        // The supervisor was stopped for 60 s, longer than hung_after (40 s),
        // ten seconds after the last heartbeat; it resumes at t + 70 s.
        let resumed = t + Duration::from_secs(70);
        w.excuse(Duration::from_secs(60), resumed);
        assert_eq!(w.step(Input::Tick, resumed, &p, 0.5), vec![]);
        assert_eq!(
            w.next_deadline(&p),
            Some(t + Duration::from_secs(60) + p.hung_after)
        );
        // Never past now: a huge gap still leaves a whole hung_after.
        let mut w = running(t);
        w.excuse(Duration::from_secs(3600), t + Duration::from_secs(50));
        assert_eq!(
            w.next_deadline(&p),
            Some(t + Duration::from_secs(50) + p.hung_after)
        );
    }

    #[test]
    fn heartbeats_keep_it_alive() {
        let p = policy();
        let t = Instant::now();
        let mut w = running(t);
        let later = t + Duration::from_secs(30);
        w.step(Input::Heartbeat, later, &p, 0.5);
        assert_eq!(w.step(Input::Tick, t + p.hung_after, &p, 0.5), vec![]);
    }

    #[test]
    fn stop_terminates_then_kills_at_the_deadline_then_is_gone() {
        let p = policy();
        let t = Instant::now();
        let mut w = running(t);
        assert_eq!(
            w.step(Input::Stop, t, &p, 0.5),
            vec![Action::Terminate { pid: 42 }]
        );
        assert_eq!(w.state.name(), "stopping");
        assert_eq!(
            w.step(Input::Tick, t + Duration::from_secs(1), &p, 0.5),
            vec![]
        );
        let actions = w.step(Input::Tick, t + p.shutdown_timeout, &p, 0.5);
        assert_eq!(actions.last(), Some(&Action::Kill { pid: 42 }));
        w.step(
            Input::Exited {
                code: None,
                signal: Some(9),
            },
            t + p.shutdown_timeout,
            &p,
            0.5,
        );
        assert_eq!(w.state, State::Gone);
    }

    #[test]
    fn stop_in_backoff_or_failed_is_immediate() {
        let p = policy();
        let t = Instant::now();
        let mut w = Worker::new(t + Duration::from_secs(5));
        assert_eq!(w.step(Input::Stop, t, &p, 0.5), vec![]);
        assert_eq!(w.state, State::Gone);
        assert_eq!(
            w.step(Input::Tick, t + Duration::from_secs(10), &p, 0.5),
            vec![],
            "no spawn once gone"
        );
    }

    #[test]
    fn restart_of_a_running_worker_respawns_after_exit_without_counting_a_crash() {
        let p = policy();
        let t = Instant::now();
        let mut w = running(t);
        assert_eq!(
            w.step(Input::Restart, t, &p, 0.5),
            vec![Action::Terminate { pid: 42 }]
        );
        let actions = w.step(
            Input::Exited {
                code: Some(0),
                signal: None,
            },
            t,
            &p,
            0.5,
        );
        assert_eq!(actions, vec![Action::Spawn]);
        assert_eq!(w.consecutive_crashes, 0);
        assert_eq!(w.restarts, 1);
    }

    #[test]
    fn kill_now_during_stopping_kills_at_once() {
        let p = policy();
        let t = Instant::now();
        let mut w = running(t);
        w.step(Input::Stop, t, &p, 0.5);
        assert_eq!(
            w.step(Input::KillNow, t, &p, 0.5),
            vec![Action::Kill { pid: 42 }]
        );
        w.step(
            Input::Exited {
                code: None,
                signal: Some(9),
            },
            t,
            &p,
            0.5,
        );
        assert_eq!(w.state, State::Gone);
    }

    #[test]
    fn a_spawn_failure_counts_as_a_crash() {
        let p = policy();
        let t = Instant::now();
        let mut w = Worker::new(t);
        w.step(
            Input::SpawnFailed {
                error: "EAGAIN".into(),
            },
            t,
            &p,
            0.5,
        );
        assert!(matches!(w.state, State::Backoff { .. }));
        assert_eq!(w.consecutive_crashes, 1);
    }
}
