//! WORKER_MAX_RSS_MB: every few seconds the supervisor reads each running
//! worker's resident size from /proc; a worker above the limit at two
//! checks in a row is to be drained and restarted (the caller steps it with
//! `Input::Restart`: SIGTERM, the normal graceful stop, then a new process;
//! not a crash, so it never counts toward MAX_RESTARTS). This module only
//! decides which workers are over; it must never signal or spawn anything,
//! and it reads no clock of its own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often resident sizes are read.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Checks in a row above the limit before a restart.
const STRIKES: u32 = 2;

/// A worker to restart: its bot id and the size it was last seen at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Over {
    pub bot_id: u64,
    pub rss: u64,
}

/// The checks' state: when the next is due, and each process's strikes.
#[derive(Debug)]
pub struct MemoryWatch {
    next: Instant,
    /// bot id → (pid, checks in a row above the limit).
    strikes: HashMap<u64, (u32, u32)>,
}

impl MemoryWatch {
    pub fn new(now: Instant) -> MemoryWatch {
        MemoryWatch {
            next: now + CHECK_EVERY,
            strikes: HashMap::new(),
        }
    }

    /// When the supervisor loop should wake for the next check.
    pub fn next_deadline(&self, limit: Option<u64>) -> Option<Instant> {
        limit.map(|_| self.next)
    }

    /// Runs a check when one is due. `running` lists (bot id, pid) of the
    /// workers to watch; `rss_of` reads a pid's resident bytes. Returns the
    /// workers above `limit` at this check and the one before (same pid).
    pub fn check(
        &mut self,
        now: Instant,
        limit: Option<u64>,
        running: &[(u64, u32)],
        rss_of: &dyn Fn(u32) -> Option<u64>,
    ) -> Vec<Over> {
        let Some(limit) = limit else {
            self.strikes.clear();
            return Vec::new();
        };
        if now < self.next {
            return Vec::new();
        }
        self.next = now + CHECK_EVERY;
        let mut over = Vec::new();
        let mut seen = HashMap::new();
        for &(bot_id, pid) in running {
            let Some(rss) = rss_of(pid) else {
                continue;
            };
            let before = match self.strikes.get(&bot_id) {
                Some(&(p, n)) if p == pid => n,
                _ => 0,
            };
            let strikes = if rss > limit { before + 1 } else { 0 };
            if strikes >= STRIKES {
                over.push(Over { bot_id, rss });
            } else {
                seen.insert(bot_id, (pid, strikes));
            }
        }
        self.strikes = seen;
        over
    }
}

/// The log line for a worker restarted for its size.
pub fn describe(index: u32, rss: u64, limit: u64) -> String {
    format!(
        "Worker bot-{index} uses {} MB resident, above WORKER_MAX_RSS_MB={} at two checks in a row: draining and restarting it (not counted as a crash)",
        rss / (1024 * 1024),
        limit / (1024 * 1024)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    #[test]
    fn two_checks_in_a_row_above_the_limit_restart() {
        let t0 = Instant::now();
        let mut w = MemoryWatch::new(t0);
        let big = |_: u32| Some(50 * MB);
        let small = |_: u32| Some(5 * MB);
        let running = [(1, 100), (2, 200)];
        // Not due yet.
        assert!(w.check(t0, Some(10 * MB), &running, &big).is_empty());
        let t1 = t0 + CHECK_EVERY;
        assert!(w.check(t1, Some(10 * MB), &running, &big).is_empty());
        // A dip in between starts the count again.
        let t2 = t1 + CHECK_EVERY;
        assert!(w.check(t2, Some(10 * MB), &running, &small).is_empty());
        let t3 = t2 + CHECK_EVERY;
        assert!(w.check(t3, Some(10 * MB), &running, &big).is_empty());
        let t4 = t3 + CHECK_EVERY;
        let over = w.check(t4, Some(10 * MB), &running, &big);
        assert_eq!(
            over,
            vec![
                Over {
                    bot_id: 1,
                    rss: 50 * MB
                },
                Over {
                    bot_id: 2,
                    rss: 50 * MB
                }
            ]
        );
        // A new process (another pid) starts from zero.
        let t5 = t4 + CHECK_EVERY;
        assert!(w.check(t5, Some(10 * MB), &[(1, 101)], &big).is_empty());
    }

    #[test]
    fn no_limit_means_no_checks() {
        let t0 = Instant::now();
        let mut w = MemoryWatch::new(t0);
        assert_eq!(w.next_deadline(None), None);
        let big = |_: u32| Some(u64::MAX);
        assert!(w
            .check(t0 + CHECK_EVERY * 5, None, &[(1, 1)], &big)
            .is_empty());
        assert!(describe(2, 300 * MB, 256 * MB).contains("bot-2 uses 300 MB"));
    }
}
