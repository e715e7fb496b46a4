//! The claim on one update while it is handled. The job that handles an
//! update and every message sent for it hold clones of its `Ticket`; when
//! the last clone drops, the update is done (handled, every reply sent or
//! given up) and the ticket's `on_done` runs once: it writes the `done`
//! record to the inbox and frees the update's chat for its next update. It
//! must never run `on_done` twice or while a clone is alive.

use std::sync::{Arc, Mutex};

type OnDone = Box<dyn FnOnce(i64) + Send>;

struct Claim {
    update_id: i64,
    chat: i64,
    on_done: Mutex<Option<OnDone>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let on_done = match self.on_done.get_mut() {
            Ok(f) => f.take(),
            // Only `drop` takes it; a poisoned lock still holds the closure.
            Err(p) => p.into_inner().take(),
        };
        if let Some(f) = on_done {
            f(self.update_id);
        }
    }
}

/// A claim on one update: it is done when every clone has dropped.
#[derive(Clone)]
pub struct Ticket(Arc<Claim>);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({} in chat {})", self.0.update_id, self.0.chat)
    }
}

impl Ticket {
    /// A ticket for `update_id` (in `chat`) that calls `on_done` once the
    /// last clone drops.
    pub fn new(update_id: i64, chat: i64, on_done: impl FnOnce(i64) + Send + 'static) -> Ticket {
        Ticket(Arc::new(Claim {
            update_id,
            chat,
            on_done: Mutex::new(Some(Box::new(on_done))),
        }))
    }

    pub fn update_id(&self) -> i64 {
        self.0.update_id
    }

    /// The chat key the update is scheduled under.
    pub fn chat(&self) -> i64 {
        self.0.chat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn done_runs_once_when_the_last_clone_drops() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let t = Ticket::new(7, 1, move |id| {
            assert_eq!(id, 7);
            c.fetch_add(1, Ordering::SeqCst);
        });
        let t2 = t.clone();
        let t3 = t2.clone();
        drop(t);
        drop(t3);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a clone still holds it");
        let sent = std::thread::spawn(move || drop(t2));
        sent.join().expect("joins");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
