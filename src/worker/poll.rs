//! Fetching: the poll loop. It long-polls getUpdates, writes each batch to
//! the inbox, hands the updates to the scheduler and fsyncs the journal
//! (one fsync per batch, while the batch is already being handled; at a
//! quiet bot after up to 2 ms for its replies to go out first); only
//! then does the next getUpdates confirm the batch to Telegram (a crash
//! before the fsync repeats at most that batch: Telegram still has it). It stops fetching (and says why) while the inbox is at
//! INBOX_MAX_UPDATES or cannot be written, and resumes by itself. Ids below
//! the offset sent mean the server's ids restarted: it logs once and
//! resynchronises. It must never confirm a batch that is not in the
//! journal, nor send one offset twice within 0.5 s.

use super::bot::{chat_key, Bot};
use super::{fatal, lock, now_ms, TOKEN_REJECTED};
use crate::supervisor::machine::EXIT_TOKEN_REJECTED;
use crate::telegram::ApiError;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most updates one getUpdates returns.
const POLL_WINDOW: usize = 100;
/// Telegram answers one update at a time to an offset repeated within
/// this long; the loop never does that.
const SAME_OFFSET_GAP: Duration = Duration::from_millis(500);
/// How long the fsync of a batch that found the bot quiet waits for its
/// updates to be done.
const SYNC_AFTER_REPLIES: Duration = Duration::from_millis(2);
/// How often a paused loop looks again.
const PAUSE_CHECK: Duration = Duration::from_millis(250);

/// Doubling waits for retries inside the worker.
pub(super) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }
    pub(super) fn wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Why fetching is paused, shown in the log once and in /health.
fn set_paused(bot: &Bot, why: Option<String>) {
    let mut c = lock(&bot.shared.counters);
    if c.fetch_paused != why {
        match &why {
            Some(w) => log::warn!("fetching paused: {w}; Telegram keeps the updates meanwhile"),
            None => log::info!("fetching resumed"),
        }
        c.fetch_paused = why;
    }
}

/// The poll loop; never returns while the worker lives.
pub(super) fn poll_loop(bot: &Arc<Bot>) -> i32 {
    let shared = &bot.shared;
    let Some(inbox) = shared.inbox.get() else {
        fatal("the inbox is not open", 1)
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut conflicts = 0u32;
    let mut last_call: Option<(Option<i64>, Instant)> = None;
    // Set after a failed journal write: when to try again.
    let mut write_failed: Option<(String, Instant)> = None;
    let mut resyncs = 0u64;
    // The offset of the last batch known to be on disk: what getUpdates
    // may confirm.
    let mut confirmed = lock(inbox).next_offset();
    loop {
        shared.mark_alive();
        if shared.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let settings = shared.settings();
        let cap = settings.inbox_max_updates as usize;
        let (depth, offset) = {
            let mut ib = lock(inbox);
            if ib.wants_compaction() {
                if let Err(e) = ib.compact() {
                    log::warn!("cannot compact the inbox: {e}");
                }
            }
            (ib.depth(), confirmed)
        };
        if depth >= cap {
            set_paused(
                bot,
                Some(format!(
                    "the inbox holds {depth} updates not done (INBOX_MAX_UPDATES={cap})"
                )),
            );
            std::thread::sleep(PAUSE_CHECK);
            continue;
        }
        if let Some((why, retry_at)) = &write_failed {
            if Instant::now() < *retry_at {
                set_paused(bot, Some(why.clone()));
                std::thread::sleep(PAUSE_CHECK);
                continue;
            }
        }
        if write_failed.is_none() {
            set_paused(bot, None);
        }
        if let Some((last, at)) = last_call {
            if last == offset && at.elapsed() < SAME_OFFSET_GAP {
                std::thread::sleep(SAME_OFFSET_GAP.saturating_sub(at.elapsed()));
            }
        }
        let limit = POLL_WINDOW.min(cap - depth);
        last_call = Some((offset, Instant::now()));
        // Each update's tree lives only while it is read: what the batch
        // keeps is its id, chat and text.
        let result = bot.client.get_updates_each(
            offset,
            settings.poll_timeout_secs,
            limit,
            Some(&settings.allowed_updates),
            |u| {
                let id = u["update_id"].as_i64()?;
                Some((id, chat_key(&u), u.to_string()))
            },
        );
        match result {
            Ok(updates) => {
                backoff.reset();
                if conflicts > 0 {
                    log::info!("polling again: the other poller is gone");
                    conflicts = 0;
                }
                {
                    let mut c = lock(&shared.counters);
                    c.last_poll_ok_ms = Some(now_ms());
                    c.conflict = false;
                    c.waiting = None;
                }
                if updates.is_empty() {
                    // A quiet moment: put the latest done records on disk.
                    if let Err(e) = lock(inbox).sync_if_dirty() {
                        log::debug!("cannot sync the inbox: {e}");
                    }
                    continue;
                }
                let total = updates.len();
                let mut chats: HashMap<i64, i64> = HashMap::with_capacity(total);
                let batch: Vec<(i64, String)> = updates
                    .into_iter()
                    .flatten()
                    .map(|(id, chat, raw)| {
                        chats.insert(id, chat);
                        (id, raw)
                    })
                    .collect();
                let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
                if ids.len() < total {
                    log::warn!("updates without update_id were skipped");
                }
                let Some(&max) = ids.iter().max() else {
                    continue;
                };
                let below = offset.is_some_and(|o| ids.iter().any(|id| *id < o));
                if below {
                    resyncs += 1;
                    if resyncs == 1 || resyncs % 100 == 0 {
                        log::warn!(
                            "getUpdates answered ids below the offset sent ({} < {}): the server's update ids restarted (or TELEGRAM_API_URL points elsewhere); resynchronising from id {}",
                            ids.iter().min().copied().unwrap_or(max),
                            offset.unwrap_or(0),
                            max + 1
                        );
                    }
                }
                let next = if below {
                    max + 1
                } else {
                    offset.map_or(max + 1, |o| o.max(max + 1))
                };
                let (written, handle) = {
                    let mut ib = lock(inbox);
                    (ib.append(batch, next, now_ms()), ib.sync_handle())
                };
                match written {
                    Ok(written) => {
                        let pool = shared.pool.get();
                        let quiet = pool.is_some_and(|p| p.is_drained());
                        for (id, raw) in written {
                            let chat = chats.get(&id).copied().unwrap_or(0);
                            bot.take(id, chat, raw);
                        }
                        // At a quiet bot, the batch's replies first, for a
                        // moment: an fsync beside them slows them (its
                        // kernel work takes a core of a small host). The
                        // batch is in the page cache already; only
                        // confirming waits. A busy bot syncs at once.
                        if let Some(pool) = pool.filter(|_| quiet) {
                            pool.wait_drained(SYNC_AFTER_REPLIES);
                        }
                        match handle.sync_data() {
                            Ok(()) => {
                                confirmed = Some(next);
                                if write_failed.take().is_some() {
                                    set_paused(bot, None);
                                }
                            }
                            Err(e) => {
                                // Not confirmed: Telegram sends the batch
                                // again and the inbox skips what it holds.
                                shared.error();
                                let why = format!("cannot sync the inbox ({e})");
                                if write_failed.is_none() {
                                    log::error!("{why}: the batch stays with Telegram");
                                }
                                write_failed =
                                    Some((why.clone(), Instant::now() + Duration::from_secs(2)));
                                set_paused(bot, Some(why));
                            }
                        }
                    }
                    Err(e) => {
                        shared.error();
                        let why = format!("cannot write the inbox ({e})");
                        if write_failed.is_none() {
                            log::error!("{why}: the batch stays with Telegram");
                        }
                        write_failed = Some((why.clone(), Instant::now() + Duration::from_secs(2)));
                        set_paused(bot, Some(why));
                        // A full journal may shrink once handled updates
                        // are compacted away.
                        if let Err(e) = lock(inbox).compact() {
                            log::debug!("cannot compact the inbox: {e}");
                        }
                    }
                }
            }
            Err(ApiError::TokenRejected { .. }) => fatal(TOKEN_REJECTED, EXIT_TOKEN_REJECTED),
            Err(ApiError::Conflict { description, .. }) => {
                conflicts += 1;
                lock(&shared.counters).conflict = true;
                let wait = Duration::from_secs(5 * u64::from(conflicts.min(12)));
                if conflicts == 1 || conflicts % 10 == 0 {
                    let hint = if description.contains("webhook") {
                        "a webhook is set for this bot: remove it with deleteWebhook to poll"
                    } else {
                        "another getUpdates is running for this bot: another host, another botfleet, or another program uses the same token"
                    };
                    log::warn!(
                        "409 Conflict ({description}): {hint}; retrying in {} s",
                        wait.as_secs()
                    );
                }
                shared.waiting_for("conflict", wait);
                std::thread::sleep(wait);
            }
            Err(e) => {
                shared.error();
                let wait = e.retry_after().unwrap_or_else(|| backoff.wait());
                log::warn!(
                    "getUpdates failed: {e}; retrying in {} ms",
                    wait.as_millis()
                );
                shared.waiting_for("retry_after", wait);
                std::thread::sleep(wait);
            }
        }
    }
}
