//! Which updates are in flight, so the offset confirms only handled ones.
//! Every update the poll loop takes gets a `Ticket`; the job that handles it
//! and every message sent for it hold clones; when the last clone drops the
//! update is handled. The confirm point (the offset for the next getUpdates
//! and for the offset file) is the oldest update still in flight, or one
//! past the newest seen. It must never move backwards or past an update
//! that is still in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct Inner {
    /// One past the newest update id taken.
    next_new: Option<i64>,
    /// In-flight update ids and how many tickets each has.
    pending: BTreeMap<i64, u32>,
    /// Bumped whenever an update finishes.
    finished: u64,
}

/// The in-flight set, shared by the poll loop, the jobs and the sender.
#[derive(Debug, Default)]
pub struct Tracker {
    inner: Mutex<Inner>,
    changed: Condvar,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    match m.lock() {
        Ok(g) => g,
        // Plain counters: a panicked holder leaves them consistent.
        Err(p) => p.into_inner(),
    }
}

impl Tracker {
    pub fn new(start: Option<i64>) -> Arc<Tracker> {
        Arc::new(Tracker {
            inner: Mutex::new(Inner {
                next_new: start,
                ..Inner::default()
            }),
            changed: Condvar::new(),
        })
    }

    /// Takes an update not seen before; None if it was (a redelivery of an
    /// update still in flight or already handled).
    pub fn take(self: &Arc<Tracker>, update_id: i64) -> Option<Ticket> {
        let mut inner = lock(&self.inner);
        if inner.next_new.is_some_and(|n| update_id < n) {
            return None;
        }
        inner.next_new = Some(update_id + 1);
        inner.pending.insert(update_id, 1);
        Some(Ticket {
            tracker: Arc::clone(self),
            update_id,
        })
    }

    /// The offset that confirms exactly the handled updates.
    pub fn confirm_point(&self) -> Option<i64> {
        let inner = lock(&self.inner);
        inner.pending.keys().next().copied().or(inner.next_new)
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.inner).pending.len()
    }

    /// Waits until an update finishes, or `timeout`. Returns early only
    /// when something finished meanwhile, never just because nothing is in
    /// flight (an idle waiter must sleep, not spin).
    pub fn wait_for_progress(&self, timeout: Duration) {
        let inner = lock(&self.inner);
        let seen = inner.finished;
        let result = self
            .changed
            .wait_timeout_while(inner, timeout, |i| i.finished == seen);
        drop(result);
    }

    fn add_ref(&self, id: i64) {
        if let Some(n) = lock(&self.inner).pending.get_mut(&id) {
            *n += 1;
        }
    }

    fn release(&self, id: i64) {
        let mut inner = lock(&self.inner);
        let done = match inner.pending.get_mut(&id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if done {
            inner.pending.remove(&id);
            inner.finished += 1;
            drop(inner);
            self.changed.notify_all();
        }
    }
}

/// A claim on one update: it is handled when every clone has dropped.
#[derive(Debug)]
pub struct Ticket {
    tracker: Arc<Tracker>,
    update_id: i64,
}

impl Ticket {
    pub fn update_id(&self) -> i64 {
        self.update_id
    }
}

impl Clone for Ticket {
    fn clone(&self) -> Ticket {
        self.tracker.add_ref(self.update_id);
        Ticket {
            tracker: Arc::clone(&self.tracker),
            update_id: self.update_id,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.tracker.release(self.update_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirm_point_waits_for_the_oldest_update_in_flight() {
        let t = Tracker::new(None);
        assert_eq!(t.confirm_point(), None);
        let a = t.take(100).expect("new");
        let b = t.take(101).expect("new");
        let c = t.take(102).expect("new");
        assert!(t.take(101).is_none(), "a redelivery is not taken twice");
        assert_eq!(t.confirm_point(), Some(100));
        let a2 = a.clone();
        drop(a);
        assert_eq!(t.confirm_point(), Some(100), "a clone still holds it");
        drop(c);
        assert_eq!(t.confirm_point(), Some(100));
        drop(a2);
        assert_eq!(t.confirm_point(), Some(101));
        drop(b);
        assert_eq!(t.confirm_point(), Some(103));
        assert_eq!(t.in_flight(), 0);
        assert!(t.take(99).is_none(), "older than anything taken");
    }

    #[test]
    fn waiting_with_nothing_in_flight_sleeps_until_the_timeout() {
        let t = Tracker::new(None);
        let t0 = std::time::Instant::now();
        t.wait_for_progress(Duration::from_millis(50));
        assert!(
            t0.elapsed() >= Duration::from_millis(50),
            "no early return when idle"
        );
        let a = t.take(1).expect("new");
        let t2 = Arc::clone(&t);
        let waiter = std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            t2.wait_for_progress(Duration::from_secs(10));
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(20)); // let the waiter block first
        drop(a);
        let waited = waiter.join().expect("waiter");
        assert!(
            waited < Duration::from_secs(5),
            "progress wakes it ({waited:?})"
        );
    }

    #[test]
    fn a_restart_point_is_respected() {
        let t = Tracker::new(Some(500));
        assert!(t.take(499).is_none());
        assert_eq!(t.confirm_point(), Some(500));
        let x = t.take(503).expect("new");
        assert_eq!(t.confirm_point(), Some(503));
        drop(x);
        assert_eq!(t.confirm_point(), Some(504));
    }
}
