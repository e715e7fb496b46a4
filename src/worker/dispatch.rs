//! The fair scheduler: one queue of jobs (updates) per chat, chats served
//! round-robin by up to HANDLER_CONCURRENCY threads, one update at a time
//! per chat. A chat stays busy from the start of its job until its update
//! is done (`release`, called when the update's last ticket drops), so a
//! reply waiting for its pacing turn holds back its own chat only: the
//! thread is free as soon as the job returns. It must never run two jobs of
//! one chat at once, nor start a job once stopped.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A thread with no work for this long leaves (one always stays), so a
/// burst does not hold its threads' stacks for the life of the worker.
const IDLE_EXIT: Duration = Duration::from_secs(60);

struct Sched {
    queues: HashMap<i64, VecDeque<Job>>,
    /// Chats with a job queued and none in hand, in round-robin order.
    ready: VecDeque<i64>,
    /// Chats with an update in hand (running, or waiting for its replies).
    active: HashSet<i64>,
    /// No job starts any more (shutdown).
    stopped: bool,
    /// Callers in `wait_idle` (a release wakes them only when there are).
    idle_waiters: usize,
    /// Callers in `wait_drained` (woken only once nothing is queued or in
    /// hand: a busy chat's every release must not wake them).
    drain_waiters: usize,
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    wanted: usize,
    idle_exit: Duration,
}

impl Sched {
    /// No update queued or in hand (a chat with queued updates is either
    /// in hand or ready).
    fn drained(&self) -> bool {
        self.active.is_empty() && self.ready.is_empty()
    }
}

impl Default for Sched {
    fn default() -> Sched {
        Sched {
            queues: HashMap::new(),
            ready: VecDeque::new(),
            active: HashSet::new(),
            stopped: false,
            idle_waiters: 0,
            drain_waiters: 0,
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
    /// Signalled whenever a chat's update is done.
    released: Arc<Condvar>,
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
            released: Arc::new(Condvar::new()),
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

    /// The chat's update in hand is done: its next job may start. Called
    /// from the pool's thread running that chat's job (the job's ticket
    /// dropping as the job ends, its replies already out), nobody is woken:
    /// that thread picks the next ready chat itself as soon as the job
    /// returns, with no thread switch.
    pub fn release(&self, chat_id: i64) {
        let mut s = lock(&self.inner.0);
        s.active.remove(&chat_id);
        if s.queues.get(&chat_id).is_some_and(|q| !q.is_empty()) {
            s.ready.push_back(chat_id);
            let own = RUNNING.with(Cell::get) == (Arc::as_ptr(&self.inner) as usize, chat_id);
            if !own {
                if s.idle == 0 && s.threads < s.wanted && !s.stopped {
                    grow(&self.inner, &mut s);
                }
                self.inner.1.notify_one();
            }
        } else {
            s.queues.remove(&chat_id);
        }
        let waiters = s.idle_waiters > 0 || (s.drain_waiters > 0 && s.drained());
        drop(s);
        if waiters {
            self.released.notify_all();
        }
    }

    /// Waits until no update is queued or in hand, or `timeout`; true
    /// when none is. (The poll loop's fsync waits for a batch's replies.)
    pub fn wait_drained(&self, timeout: Duration) -> bool {
        let mut s = lock(&self.inner.0);
        s.drain_waiters += 1;
        let result = self
            .released
            .wait_timeout_while(s, timeout, |s| !s.drained());
        let mut s = match result {
            Ok((s, _)) => s,
            Err(p) => p.into_inner().0,
        };
        s.drain_waiters -= 1;
        s.drained()
    }

    /// Whether no update is queued or in hand.
    pub fn is_drained(&self) -> bool {
        lock(&self.inner.0).drained()
    }

    /// Starts no more jobs (what is queued stays queued).
    pub fn stop(&self) {
        lock(&self.inner.0).stopped = true;
        self.inner.1.notify_all();
    }

    /// Chats with an update in hand.
    pub fn in_hand(&self) -> usize {
        lock(&self.inner.0).active.len()
    }

    /// Jobs queued and not started.
    pub fn queued(&self) -> usize {
        lock(&self.inner.0).queues.values().map(VecDeque::len).sum()
    }

    /// Waits until no update is in hand, or `timeout`; true when none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let mut s = lock(&self.inner.0);
        s.idle_waiters += 1;
        let result = self
            .released
            .wait_timeout_while(s, timeout, |s| !s.active.is_empty());
        let mut s = match result {
            Ok((s, _)) => s,
            Err(p) => p.into_inner().0,
        };
        s.idle_waiters -= 1;
        s.active.is_empty()
    }

    /// Queues a job for a chat. A thread is woken (or started) only when
    /// the chat becomes ready: a job behind its chat's update in hand
    /// starts when that one is done (`release`).
    pub fn submit(&self, chat_id: i64, job: impl FnOnce() + Send + 'static) {
        let mut s = lock(&self.inner.0);
        let queue = s.queues.entry(chat_id).or_default();
        let first = queue.is_empty();
        queue.push_back(Box::new(job));
        let ready = first && !s.active.contains(&chat_id);
        if ready {
            s.ready.push_back(chat_id);
            if s.idle == 0 && s.threads < s.wanted && !s.stopped {
                grow(&self.inner, &mut s);
            }
        }
        drop(s);
        if ready {
            self.inner.1.notify_one();
        }
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

thread_local! {
    /// The pool (its address) and chat of the job this thread is running,
    /// (0, 0) when none: `release` of that chat from here wakes nobody.
    static RUNNING: Cell<(usize, i64)> = const { Cell::new((0, 0)) };
}

fn work(inner: &Arc<(Mutex<Sched>, Condvar)>) {
    let (m, cv) = &**inner;
    let mut s = lock(m);
    // Started as idle (see `grow`); from here it is at work.
    s.idle -= 1;
    loop {
        if s.threads > s.wanted {
            s.threads -= 1;
            // A chat this thread released (unannounced) goes to another.
            if !s.ready.is_empty() {
                cv.notify_one();
            }
            return;
        }
        let next = if s.stopped { None } else { s.ready.pop_front() };
        let Some(chat) = next else {
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
        RUNNING.with(|r| r.set((Arc::as_ptr(inner) as usize, chat)));
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            log::error!("a job for chat {chat} panicked; it was skipped");
        }
        RUNNING.with(|r| r.set((0, 0)));
        // The chat stays in hand until its update is done (`release`).
        s = lock(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Submits a job whose update is done when it returns.
    fn run_done(pool: &Pool, chat: i64, job: impl FnOnce() + Send + 'static) {
        let p = pool.clone();
        pool.submit(chat, move || {
            job();
            p.release(chat);
        });
    }

    #[test]
    fn a_busy_chat_delays_another_by_one_slot_at_most() {
        let pool = Pool::new(1);
        let log = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let submit = |chat: i64, n: usize| {
            let (log, done) = (log.clone(), done.clone());
            run_done(&pool, chat, move || {
                std::thread::sleep(Duration::from_millis(2));
                log.lock().expect("log").push((chat, n));
                done.fetch_add(1, Ordering::SeqCst);
            });
        };
        for n in 0..50 {
            submit(1, n);
        }
        submit(2, 0);
        submit(3, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < 52 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let log = log.lock().expect("log");
        assert_eq!(log.len(), 52);
        let at = |chat| log.iter().position(|(c, _)| *c == chat).expect("ran");
        assert!(at(2) <= 2, "chat 2 ran at {}", at(2));
        assert!(at(3) <= 4, "chat 3 ran at {}", at(3));
        let ones: Vec<usize> = log
            .iter()
            .filter(|(c, _)| *c == 1)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(ones, (0..50).collect::<Vec<_>>(), "chat 1 in order");
    }

    #[test]
    fn a_chat_waits_for_its_update_to_be_done_but_frees_the_thread() {
        let pool = Pool::new(1);
        let ran = Arc::new(Mutex::new(Vec::new()));
        for (chat, n) in [(1i64, 0), (1, 1), (2, 0)] {
            let ran = ran.clone();
            // No release: the update stays in hand (a reply waiting).
            pool.submit(chat, move || ran.lock().expect("ran").push((chat, n)));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while ran.lock().expect("ran").len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(*ran.lock().expect("ran"), [(1, 0), (2, 0)], "chat 1 waits");
        assert_eq!(pool.in_hand(), 2);
        pool.release(1);
        while ran.lock().expect("ran").len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ran.lock().expect("ran")[2], (1, 1));
        pool.release(2);
        pool.stop();
        pool.submit(3, || panic!("a stopped pool starts nothing"));
        pool.release(1);
        assert!(pool.wait_idle(Duration::from_secs(1)));
        assert_eq!(pool.queued(), 1, "the job stays queued");
    }

    #[test]
    fn wait_idle_wakes_when_the_last_update_is_done() {
        let pool = Pool::new(2);
        let p = pool.clone();
        pool.submit(1, move || {
            // Done later, from another thread (a sender dropping the ticket).
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                p.release(1);
            });
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.in_hand() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let t = Instant::now();
        assert!(
            pool.wait_idle(Duration::from_secs(10)),
            "idle once released"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "woken, not timed out");
    }

    #[test]
    fn wait_drained_waits_for_queued_updates_too_and_times_out_when_held() {
        let pool = Pool::new(1);
        let done = Arc::new(Mutex::new(0));
        // Queued, not started yet: wait_idle would not wait; this does.
        for chat in [1, 2] {
            let (p, d) = (pool.clone(), Arc::clone(&done));
            pool.submit(chat, move || {
                std::thread::sleep(Duration::from_millis(30));
                *d.lock().expect("done") += 1;
                p.release(chat);
            });
        }
        assert!(pool.wait_drained(Duration::from_secs(10)));
        assert_eq!(*done.lock().expect("done"), 2, "both handled first");
        // An update held (its reply not out): bounded by the timeout.
        pool.submit(3, || {});
        let t = Instant::now();
        assert!(!pool.wait_drained(Duration::from_millis(50)));
        assert!(t.elapsed() >= Duration::from_millis(50));
        pool.release(3);
        assert!(pool.wait_drained(Duration::from_secs(10)));
    }

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
                run_done(&pool, chat, move || {
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
            run_done(&pool, chat, move || {
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
        run_done(&pool, 9, move || {
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
        run_done(&pool, 0, move || {
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
            run_done(&pool, chat, move || {
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
