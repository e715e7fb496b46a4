//! A pool of HANDLER_CONCURRENCY threads that runs jobs in parallel across
//! chats and one at a time within a chat, so a chat's replies keep their
//! order while a slow chat does not hold up the others. It must never run
//! two jobs of one chat at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A thread with no work for this long leaves (one always stays), so a
/// burst does not hold its threads' stacks for the life of the worker.
const IDLE_EXIT: Duration = Duration::from_secs(60);

struct Sched {
    queues: HashMap<i64, VecDeque<Job>>,
    /// Chats with a job queued and none running, in arrival order.
    ready: VecDeque<i64>,
    active: HashSet<i64>,
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    wanted: usize,
    idle_exit: Duration,
}

impl Default for Sched {
    fn default() -> Sched {
        Sched {
            queues: HashMap::new(),
            ready: VecDeque::new(),
            active: HashSet::new(),
            threads: 0,
            idle: 0,
            wanted: 1,
            idle_exit: IDLE_EXIT,
        }
    }
}

/// The pool's handle.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<(Mutex<Sched>, Condvar)>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

fn lock(m: &Mutex<Sched>) -> std::sync::MutexGuard<'_, Sched> {
    match m.lock() {
        Ok(g) => g,
        // Jobs run outside the lock, so a panic cannot leave it torn.
        Err(p) => p.into_inner(),
    }
}

impl Pool {
    pub fn new(threads: usize) -> Pool {
        Pool::with_idle_exit(threads, IDLE_EXIT)
    }

    fn with_idle_exit(threads: usize, idle_exit: Duration) -> Pool {
        let sched = Sched {
            idle_exit,
            ..Sched::default()
        };
        let pool = Pool {
            inner: Arc::new((Mutex::new(sched), Condvar::new())),
        };
        pool.resize(threads);
        pool
    }

    /// Sets the most threads (a reloaded HANDLER_CONCURRENCY). Threads are
    /// started when work finds none idle, so a quiet bot keeps one.
    pub fn resize(&self, threads: usize) {
        let mut s = lock(&self.inner.0);
        s.wanted = threads.max(1);
        drop(s);
        // Threads over the wanted number notice and leave.
        self.inner.1.notify_all();
    }

    /// Queues a job for a chat.
    pub fn submit(&self, chat_id: i64, job: impl FnOnce() + Send + 'static) {
        let mut s = lock(&self.inner.0);
        let queue = s.queues.entry(chat_id).or_default();
        let first = queue.is_empty();
        queue.push_back(Box::new(job));
        if first && !s.active.contains(&chat_id) {
            s.ready.push_back(chat_id);
        }
        if s.idle == 0 && s.threads < s.wanted {
            grow(&self.inner, &mut s);
        }
        drop(s);
        self.inner.1.notify_one();
    }
}

/// Starts one more thread (the caller holds the lock and checked the
/// limit). It counts as idle until it runs: it looks for work before it
/// waits, so a burst does not start a thread per job.
fn grow(inner: &Arc<(Mutex<Sched>, Condvar)>, s: &mut Sched) {
    let inner = Arc::clone(inner);
    let spawned = std::thread::Builder::new()
        .name("job".into())
        .stack_size(256 * 1024)
        .spawn(move || work(&inner));
    match spawned {
        Ok(_) => {
            s.threads += 1;
            s.idle += 1;
        }
        Err(e) => log::error!("cannot start a job thread: {e}"),
    }
}

fn work(inner: &Arc<(Mutex<Sched>, Condvar)>) {
    let (m, cv) = &**inner;
    let mut s = lock(m);
    // Started as idle (see `grow`); from here it is at work.
    s.idle -= 1;
    loop {
        if s.threads > s.wanted {
            s.threads -= 1;
            return;
        }
        let Some(chat) = s.ready.pop_front() else {
            s.idle += 1;
            let idle_exit = s.idle_exit;
            let timed_out;
            (s, timed_out) = match cv.wait_timeout(s, idle_exit) {
                Ok((g, t)) => (g, t.timed_out()),
                Err(p) => {
                    let (g, t) = p.into_inner();
                    (g, t.timed_out())
                }
            };
            s.idle -= 1;
            if timed_out && s.ready.is_empty() && s.threads > 1 {
                s.threads -= 1;
                return;
            }
            continue;
        };
        let Some(job) = s.queues.get_mut(&chat).and_then(VecDeque::pop_front) else {
            continue;
        };
        s.active.insert(chat);
        // Pass the turn on: a batch of updates is submitted faster than one
        // idle thread wakes, so more chats may be ready than threads awake.
        if !s.ready.is_empty() {
            if s.idle > 0 {
                cv.notify_one();
            } else if s.threads < s.wanted {
                grow(inner, &mut s);
            }
        }
        drop(s);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            log::error!("a job for chat {chat} panicked; it was skipped");
        }
        s = lock(m);
        s.active.remove(&chat);
        if s.queues.get(&chat).is_some_and(|q| !q.is_empty()) {
            s.ready.push_back(chat);
            cv.notify_one();
        } else {
            s.queues.remove(&chat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn one_chat_in_order_many_chats_in_parallel() {
        let pool = Pool::new(4);
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for chat in 0..4i64 {
            for n in 0..5 {
                let (log, running, peak, done) =
                    (log.clone(), running.clone(), peak.clone(), done.clone());
                pool.submit(chat, move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    log.lock().expect("log").push((chat, n));
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(Ordering::SeqCst), 20);
        let log = log.lock().expect("log");
        for chat in 0..4 {
            let order: Vec<i32> = log
                .iter()
                .filter(|(c, _)| *c == chat)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(order, [0, 1, 2, 3, 4], "chat {chat} in order");
        }
        assert!(peak.load(Ordering::SeqCst) > 1, "chats ran in parallel");
    }

    #[test]
    fn threads_a_burst_started_leave_when_idle_but_one_stays() {
        let pool = Pool::with_idle_exit(4, Duration::from_millis(200));
        let done = Arc::new(AtomicUsize::new(0));
        for chat in 0..4i64 {
            let done = done.clone();
            pool.submit(chat, move || {
                std::thread::sleep(Duration::from_millis(50));
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let threads = || lock(&pool.inner.0).threads;
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(Ordering::SeqCst), 4);
        assert!(threads() > 1, "the burst started threads");
        while threads() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(threads(), 1, "idle threads left, one stayed");
        // And the one left still works.
        let again = done.clone();
        pool.submit(9, move || {
            again.fetch_add(1, Ordering::SeqCst);
        });
        while done.load(Ordering::SeqCst) < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_batch_submitted_to_an_idle_thread_still_runs_in_parallel() {
        let pool = Pool::new(4);
        let done = Arc::new(AtomicUsize::new(0));
        let first = done.clone();
        pool.submit(0, move || {
            first.fetch_add(1, Ordering::SeqCst);
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        // One thread, idle: the next submits all find it "idle" before it wakes.
        while !(done.load(Ordering::SeqCst) == 1 && lock(&pool.inner.0).idle == 1)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        for chat in 1..=4i64 {
            let (done, running, peak) = (done.clone(), running.clone(), peak.clone());
            pool.submit(chat, move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        while done.load(Ordering::SeqCst) < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(Ordering::SeqCst), 5);
        assert!(peak.load(Ordering::SeqCst) > 1, "the batch ran in parallel");
    }
}
