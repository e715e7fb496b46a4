//! The one send path of a worker: every reply, file, notice and Bot API
//! call made for an update goes through here, in order per chat, paced by
//! token buckets (SEND_RATE_PER_CHAT for a private chat, SEND_RATE_PER_GROUP
//! for a group or channel, i.e. a negative chat id, and SEND_RATE_PER_BOT;
//! 0 = unpaced; answers to queries, chat actions and getters send no
//! message and are not paced, `is_paced`), waiting out Telegram's 429
//! retry_after and retrying transient failures with backoff. A job's reply
//! whose chat is free and whose pacing allows it now is sent on the job's
//! own thread (`send_here`: one round trip, no hand-off); everything else
//! is queued and sent by the sender threads, so a caller never waits for a
//! pacing turn, a 429 or a retry (`call` waits for its own result only).
//! Each message may carry the `Ticket` of the update it answers, so that
//! update is done only once its replies are out. It must never reorder the
//! messages of one chat. (Past 700 lines: half of the file is the queue's
//! unit tests, kept beside the pure `pick`/`requeue` they exercise.)

use super::track::Ticket;
use crate::telegram::{ApiError, Client};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Attempts for a message that keeps failing transiently.
const MAX_ATTEMPTS: u32 = 6;
/// Burst allowance of one private chat's bucket, in messages.
const CHAT_BURST: f64 = 3.0;
/// Burst allowance of a group's bucket: one, so that SEND_RATE_PER_GROUP
/// at 0.33/s stays within Telegram's 20 messages in any minute.
const GROUP_BURST: f64 = 1.0;
/// Sender threads: messages to different chats go out in parallel (one
/// HTTP round trip each); one chat's messages never overlap.
pub const SENDERS: usize = 4;
/// An idle chat's pacing state is kept this long after its last message.
const CHAT_IDLE_FORGET: Duration = Duration::from_secs(60);
/// A sender with nothing queued for this long leaves (one always stays), so
/// a burst does not hold its threads' stacks for the life of the worker.
const IDLE_EXIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Document {
        path: PathBuf,
        file_name: String,
        caption: Option<String>,
    },
    /// Any Bot API method with its JSON parameters (`chat_id` is the
    /// queue's; the result is reported), and file parts to upload
    /// (field, path, file name) as multipart.
    Call {
        method: String,
        params: Value,
        files: Vec<(String, PathBuf, String)>,
    },
}

/// Bot API methods that send nothing to the chat: answers to queries (a
/// button press, an inline query, payments), the "typing..." action and
/// getters. Telegram's flood limits count sent messages (BOT_API_NOTES:
/// about 1 a second in a chat, 20 a minute in a group, 30 a second per
/// bot), so these go without waiting for a pacing token (a button stops
/// spinning at once); they still keep their place in the chat's order and
/// wait out a 429. Edits, deletions and everything else stay paced.
pub fn is_paced(method: &str) -> bool {
    !(method.starts_with("answer") || method.starts_with("get") || method == "sendChatAction")
}

impl Content {
    /// Whether it waits for (and takes) a token of the chat's and the
    /// bot's buckets (`is_paced`).
    pub fn paced(&self) -> bool {
        match self {
            Content::Text(_) | Content::Document { .. } => true,
            Content::Call { method, .. } => is_paced(method),
        }
    }
}

/// How a queued message ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub chat_id: i64,
    pub tag: u64,
    /// None when sent; the last error otherwise.
    pub error: Option<String>,
    /// The Bot API's error code of that error (0 when sent).
    pub error_code: u16,
    /// The Bot API's `result` when sent.
    pub result: Option<Value>,
}

/// One message to send.
#[derive(Debug)]
pub struct Outgoing {
    pub chat_id: i64,
    pub content: Content,
    pub reply_to: Option<i64>,
    /// The update this answers; dropped once the message is sent or given up.
    pub ticket: Option<Ticket>,
    /// Where to report the outcome, with `tag` (the outbox uses it).
    pub report: Option<(mpsc::Sender<Outcome>, u64)>,
}

#[derive(Debug)]
struct Item {
    msg: Outgoing,
    attempts: u32,
}

/// A token bucket: `rate` tokens a second up to `burst`.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
    }

    /// When a token will be there (now if one is).
    fn ready_at(&mut self, rate: f64, burst: f64, now: Instant) -> Instant {
        if rate <= 0.0 {
            return now;
        }
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / rate)
        }
    }

    fn take(&mut self, rate: f64) {
        if rate > 0.0 {
            self.tokens -= 1.0;
        }
    }
}

#[derive(Debug)]
struct Chat {
    items: VecDeque<Item>,
    bucket: Bucket,
    blocked_until: Option<Instant>,
    /// A message of this chat is being sent right now.
    sending: bool,
    last_used: Instant,
}

impl Chat {
    fn new(now: Instant) -> Chat {
        Chat {
            items: VecDeque::new(),
            bucket: Bucket::new(CHAT_BURST, now),
            blocked_until: None,
            sending: false,
            last_used: now,
        }
    }
}

#[derive(Debug)]
struct Queue {
    /// Every chat with something queued, being sent, or paced lately (its
    /// bucket must outlive an empty queue, or a trickle would never be paced).
    chats: HashMap<i64, Chat>,
    /// Chats with something queued, in round-robin order.
    order: VecDeque<i64>,
    bot: Bucket,
    queued: usize,
    /// Sender threads started, and how many wait for work. A thread just
    /// started counts as idle until it runs: it picks before it waits, so
    /// a burst does not start a thread per message.
    threads: usize,
    idle: usize,
    idle_exit: Duration,
}

/// The send rates, changeable at run time (a reload).
#[derive(Debug)]
pub struct Rates {
    per_chat: AtomicU64,
    per_bot: AtomicU64,
    per_group: AtomicU64,
}

/// One reading of the rates, messages a second (0 = unpaced).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSet {
    pub per_chat: f64,
    pub per_bot: f64,
    pub per_group: f64,
}

impl RateSet {
    /// Unpaced everywhere.
    pub const UNPACED: RateSet = RateSet {
        per_chat: 0.0,
        per_bot: 0.0,
        per_group: 0.0,
    };

    /// The rate and burst of one chat: groups and channels have negative ids.
    fn of_chat(&self, chat_id: i64) -> (f64, f64) {
        if chat_id < 0 {
            (self.per_group, GROUP_BURST)
        } else {
            (self.per_chat, CHAT_BURST)
        }
    }
}

impl Rates {
    pub fn new(rates: RateSet) -> Arc<Rates> {
        let r = Arc::new(Rates {
            per_chat: AtomicU64::new(0),
            per_bot: AtomicU64::new(0),
            per_group: AtomicU64::new(0),
        });
        r.set(rates);
        r
    }

    pub fn set(&self, rates: RateSet) {
        let store = |a: &AtomicU64, v: f64| a.store(v.max(0.0).to_bits(), Ordering::Relaxed);
        store(&self.per_chat, rates.per_chat);
        store(&self.per_bot, rates.per_bot);
        store(&self.per_group, rates.per_group);
    }

    fn get(&self) -> RateSet {
        let load = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        RateSet {
            per_chat: load(&self.per_chat),
            per_bot: load(&self.per_bot),
            per_group: load(&self.per_group),
        }
    }
}

/// The handle callers queue messages on.
#[derive(Debug, Clone)]
pub struct SendPath {
    shared: Arc<(Mutex<Queue>, Condvar)>,
    spawner: Arc<Spawner>,
}

/// What a new sender thread needs.
struct Spawner {
    client: Client,
    rates: Arc<Rates>,
    on_error: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawner")
    }
}

impl Spawner {
    /// Starts one more sender (the caller holds the queue lock).
    fn grow(self: &Arc<Self>, shared: &Arc<(Mutex<Queue>, Condvar)>, q: &mut Queue) {
        let (s, spawner) = (Arc::clone(shared), Arc::clone(self));
        let spawned = std::thread::Builder::new()
            .name("sender".into())
            .stack_size(128 * 1024)
            .spawn(move || run(&s, &spawner));
        match spawned {
            Ok(_) => {
                q.threads += 1;
                q.idle += 1;
            }
            Err(e) => log::error!("cannot start a sender thread: {e}"),
        }
    }
}

fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    match m.lock() {
        Ok(g) => g,
        // The queue is plain data; a panicked holder cannot tear it.
        Err(p) => p.into_inner(),
    }
}

impl SendPath {
    /// The send path, with no sender thread yet: the first message that
    /// needs one starts it (most replies go out on their job's thread, and
    /// an idle worker keeps no sender's stack).
    pub fn start(
        client: Client,
        rates: Arc<Rates>,
        on_error: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<SendPath> {
        SendPath::start_with(client, rates, on_error, IDLE_EXIT)
    }

    fn start_with(
        client: Client,
        rates: Arc<Rates>,
        on_error: impl Fn() + Send + Sync + 'static,
        idle_exit: Duration,
    ) -> std::io::Result<SendPath> {
        let now = Instant::now();
        let shared = Arc::new((
            Mutex::new(Queue {
                chats: HashMap::new(),
                order: VecDeque::new(),
                bot: Bucket::new(1.0, now),
                queued: 0,
                threads: 0,
                idle: 0,
                idle_exit,
            }),
            Condvar::new(),
        ));
        let spawner = Arc::new(Spawner {
            client,
            rates,
            on_error: Arc::new(on_error),
        });
        // No sender yet: one starts (up to SENDERS) when a message waits
        // and none is idle (`send`, `send_here`).
        Ok(SendPath { shared, spawner })
    }

    /// Queues a message; never blocks on the network.
    pub fn send(&self, msg: Outgoing) {
        let (m, cv) = &*self.shared;
        let mut q = lock(m);
        let now = Instant::now();
        let chat_id = msg.chat_id;
        let chat = q.chats.entry(chat_id).or_insert_with(|| Chat::new(now));
        let was_empty = chat.items.is_empty();
        chat.items.push_back(Item { msg, attempts: 0 });
        chat.last_used = now;
        let sending = chat.sending;
        if was_empty {
            q.order.push_back(chat_id);
        }
        q.queued += 1;
        // A message behind one in flight in its chat waits for that send to
        // finish, and the sender finishing it takes it: no one to wake.
        if !sending {
            if q.idle == 0 && q.threads < SENDERS {
                self.spawner.grow(&self.shared, &mut q);
            }
            drop(q);
            cv.notify_one();
        }
    }

    /// New send rates (a reload): senders waiting out the old pacing look
    /// again at once.
    pub fn set_rates(&self, rates: RateSet) {
        self.spawner.rates.set(rates);
        self.shared.1.notify_all();
    }

    /// Sends a message on the calling thread when its chat has nothing
    /// queued or in flight and pacing lets it go now (the usual case of a
    /// job answering its update): no hand-off to a sender and back, one
    /// HTTP round trip on this thread. Otherwise, and for any retry (a 429,
    /// a transient failure), it is queued for the senders as `send` does.
    /// The chat is marked sending meanwhile, so its order holds.
    pub fn send_here(&self, msg: Outgoing) {
        let claimed = {
            let mut q = lock(&self.shared.0);
            let paced = msg.content.paced();
            claim(
                &mut q,
                msg.chat_id,
                paced,
                self.spawner.rates.get(),
                Instant::now(),
            )
        };
        if !claimed {
            return self.send(msg);
        }
        let mut item = Item { msg, attempts: 0 };
        let after = attempt(&self.spawner, &mut item);
        let mut q = lock(&self.shared.0);
        let over = settle(&mut q, after, item);
        // What queued behind it (or its retry) is the senders' now.
        let wake = has_ready(&q);
        if wake && q.idle == 0 && q.threads < SENDERS {
            self.spawner.grow(&self.shared, &mut q);
        }
        drop(q);
        if wake {
            self.shared.1.notify_one();
        }
        if let Some((item, delivered)) = over {
            finish(item, delivered);
        }
    }

    /// Sends any Bot API call through the send path (in order with the
    /// chat's other messages, paced, 429s waited out) and waits for its
    /// result, or the error's Bot API code and text. `files` are uploaded
    /// as multipart (field, path, file name). `ticket` keeps the update in
    /// hand until the call is over. Sent on the calling thread when pacing
    /// allows (`send_here`).
    pub fn call(
        &self,
        chat_id: i64,
        method: &str,
        params: Value,
        files: Vec<(String, PathBuf, String)>,
        ticket: Option<Ticket>,
    ) -> Result<Value, (u16, String)> {
        let (tx, rx) = mpsc::channel();
        self.send_here(Outgoing {
            chat_id,
            content: Content::Call {
                method: method.to_string(),
                params,
                files,
            },
            reply_to: None,
            ticket,
            report: Some((tx, 0)),
        });
        match rx.recv() {
            Ok(Outcome {
                error: None,
                result,
                ..
            }) => Ok(result.unwrap_or(Value::Null)),
            Ok(Outcome {
                error: Some(e),
                error_code,
                ..
            }) => Err((error_code, e)),
            Err(_) => Err((500, "the send path dropped the call".to_string())),
        }
    }

    /// Messages waiting to be sent.
    pub fn queued(&self) -> usize {
        lock(&self.shared.0).queued
    }
}

/// Picks the next message that pacing allows, or when to look again.
fn pick(q: &mut Queue, rates: RateSet, now: Instant) -> Result<Item, Option<Instant>> {
    let per_bot = rates.per_bot;
    let bot_ready = q.bot.ready_at(per_bot, per_bot.max(1.0), now);
    let mut earliest: Option<Instant> = None;
    let mut note = |t: Instant| earliest = Some(earliest.map_or(t, |e: Instant| e.min(t)));
    for _ in 0..q.order.len() {
        let Some(chat_id) = q.order.pop_front() else {
            break;
        };
        let Some(chat) = q.chats.get_mut(&chat_id) else {
            continue;
        };
        if chat.sending {
            // Its turn comes when the message in flight is done (a notify).
            q.order.push_back(chat_id);
            continue;
        }
        let Some(paced) = chat.items.front().map(|i| i.msg.content.paced()) else {
            continue;
        };
        let (per_chat, burst) = rates.of_chat(chat_id);
        let ready = due(chat, paced, (per_chat, burst), bot_ready, now);
        if ready > now {
            note(ready);
            q.order.push_back(chat_id);
            continue;
        }
        let Some(item) = chat.items.pop_front() else {
            continue;
        };
        start_sending(chat, &mut q.bot, paced, (per_chat, per_bot), now);
        if !chat.items.is_empty() {
            q.order.push_back(chat_id);
        }
        q.queued -= 1;
        return Ok(item);
    }
    Err(earliest)
}

/// When a chat's next message may go: after a 429's or a retry's wait
/// always; a paced one (`Content::paced`) also when the chat's bucket
/// (`rate`, burst) and the bot's have a token.
fn due(
    chat: &mut Chat,
    paced: bool,
    rate: (f64, f64),
    bot_ready: Instant,
    now: Instant,
) -> Instant {
    let mut at = chat.blocked_until.map_or(now, |b| b.max(now));
    if paced {
        at = at
            .max(chat.bucket.ready_at(rate.0, rate.1, now))
            .max(bot_ready);
    }
    at
}

/// Claims a chat for a message sent by its caller (`send_here`): only
/// when nothing of the chat is queued or in flight and pacing lets it go
/// now; then it takes its tokens (a paced message) and marks the chat
/// sending, as `pick` does.
fn claim(q: &mut Queue, chat_id: i64, paced: bool, rates: RateSet, now: Instant) -> bool {
    let per_bot = rates.per_bot;
    let bot_ready = q.bot.ready_at(per_bot, per_bot.max(1.0), now);
    let chat = q.chats.entry(chat_id).or_insert_with(|| Chat::new(now));
    if chat.sending || !chat.items.is_empty() {
        return false;
    }
    let (per_chat, burst) = rates.of_chat(chat_id);
    if due(chat, paced, (per_chat, burst), bot_ready, now) > now {
        return false;
    }
    start_sending(chat, &mut q.bot, paced, (per_chat, per_bot), now);
    true
}

/// Marks a chat sending its next message (`pick` and `claim`): a 429's
/// wait is over, and a paced message takes its tokens, the chat's and the
/// bot's (`rates`: per chat, per bot).
fn start_sending(chat: &mut Chat, bot: &mut Bucket, paced: bool, rates: (f64, f64), now: Instant) {
    chat.blocked_until = None;
    chat.sending = true;
    chat.last_used = now;
    if paced {
        chat.bucket.take(rates.0);
        bot.take(rates.1);
    }
}

/// True when a chat has a message to send and none in flight (pacing
/// aside): work an idle sender could take.
fn has_ready(q: &Queue) -> bool {
    q.order.iter().any(|id| {
        q.chats
            .get(id)
            .is_some_and(|c| !c.sending && !c.items.is_empty())
    })
}

/// Puts a message back at the head of its chat, not before `not_before`.
fn requeue(q: &mut Queue, item: Item, not_before: Instant) {
    let chat_id = item.msg.chat_id;
    let now = Instant::now();
    let chat = q.chats.entry(chat_id).or_insert_with(|| Chat::new(now));
    if chat.items.is_empty() {
        q.order.push_front(chat_id);
    }
    chat.items.push_front(item);
    chat.blocked_until = Some(not_before);
    chat.sending = false;
    q.queued += 1;
}

/// A send of `chat_id` is over: its next message may go. Forgets chats
/// idle for a while so the map does not grow with every chat ever seen.
fn done_sending(q: &mut Queue, chat_id: i64, now: Instant) {
    if let Some(chat) = q.chats.get_mut(&chat_id) {
        chat.sending = false;
        chat.last_used = now;
    }
    if q.chats.len() > 256 {
        q.chats.retain(|_, c| {
            !c.items.is_empty() || c.sending || now.duration_since(c.last_used) < CHAT_IDLE_FORGET
        });
    }
}

fn deliver(client: &Client, msg: &Outgoing) -> Result<Option<Value>, ApiError> {
    match &msg.content {
        Content::Text(text) => client
            .send_message(msg.chat_id, text, msg.reply_to)
            .map(|_| None),
        Content::Call {
            method,
            params,
            files,
        } => match (files.is_empty(), params.as_object()) {
            (false, Some(fields)) => client.call_with_files(method, fields, files).map(Some),
            _ => client.call(method, params).map(Some),
        },
        Content::Document {
            path,
            file_name,
            caption,
        } => client
            .send_document(msg.chat_id, path, file_name, caption.as_deref())
            .map(|_| None),
    }
}

/// How a message ended: the Bot API's result, or the error and its code.
type Delivered = Result<Option<Value>, (String, u16)>;

fn finish(item: Item, delivered: Delivered) {
    if let Some((tx, tag)) = &item.msg.report {
        let (result, error, error_code) = match delivered {
            Ok(result) => (result, None, 0),
            Err((e, code)) => (None, Some(e), code),
        };
        let outcome = Outcome {
            chat_id: item.msg.chat_id,
            tag: *tag,
            error,
            error_code,
            result,
        };
        if tx.send(outcome).is_err() {
            log::debug!("nobody waits for this send's outcome any more");
        }
    }
    // Dropping the item drops its ticket: the update may now be confirmed.
}

/// What became of one delivery, decided before the queue lock is taken.
enum After {
    Sent(Option<Value>),
    /// Back to the head of its chat, not before this long from now.
    Retry(Duration),
    /// Given up: the error and its Bot API error code.
    Failed(String, u16),
}

fn run(shared: &Arc<(Mutex<Queue>, Condvar)>, spawner: &Arc<Spawner>) {
    let (m, cv) = &**shared;
    let rates = &spawner.rates;
    // Started as idle (see `Queue::idle`); from here it is at work.
    lock(m).idle -= 1;
    loop {
        let mut item = {
            let mut q = lock(m);
            loop {
                let now = Instant::now();
                match pick(&mut q, rates.get(), now) {
                    Ok(item) => {
                        // Pass the turn on: another chat may be ready too,
                        // for an idle sender or a new one.
                        if has_ready(&q) {
                            if q.idle > 0 {
                                cv.notify_one();
                            } else if q.threads < SENDERS {
                                spawner.grow(shared, &mut q);
                            }
                        }
                        break item;
                    }
                    Err(Some(at)) => {
                        let wait = at
                            .saturating_duration_since(now)
                            .max(Duration::from_millis(1));
                        q.idle += 1;
                        q = match cv.wait_timeout(q, wait) {
                            Ok((g, _)) => g,
                            Err(p) => p.into_inner().0,
                        };
                        q.idle -= 1;
                    }
                    Err(None) => {
                        q.idle += 1;
                        let idle_exit = q.idle_exit;
                        let timed_out;
                        (q, timed_out) = match cv.wait_timeout(q, idle_exit) {
                            Ok((g, t)) => (g, t.timed_out()),
                            Err(p) => {
                                let (g, t) = p.into_inner();
                                (g, t.timed_out())
                            }
                        };
                        q.idle -= 1;
                        if timed_out && q.queued == 0 && q.threads > 1 {
                            q.threads -= 1;
                            return;
                        }
                    }
                }
            }
        };
        let after = attempt(spawner, &mut item);
        // Under one lock: a message going back to the head of its chat must
        // be there before the chat is free again, or another sender could
        // send the chat's next message first. Otherwise this thread takes
        // the chat's next message (or another chat's, waking an idle sender
        // for the rest) when it picks again above.
        let over = settle(&mut lock(m), after, item);
        if let Some((item, delivered)) = over {
            finish(item, delivered);
        }
    }
}

/// One delivery of a message, and what is to become of it.
fn attempt(spawner: &Spawner, item: &mut Item) -> After {
    item.attempts += 1;
    let chat_id = item.msg.chat_id;
    match deliver(&spawner.client, &item.msg) {
        Ok(result) => After::Sent(result),
        Err(e) if e.retry_after().is_some() && item.attempts < MAX_ATTEMPTS * 4 => {
            let wait = e.retry_after().unwrap_or(Duration::from_secs(1));
            log::info!(
                "429 from Telegram in chat {chat_id}: waiting {} ms",
                wait.as_millis()
            );
            After::Retry(wait)
        }
        Err(e) if e.is_transient() && item.attempts < MAX_ATTEMPTS => {
            let wait = Duration::from_millis(250 * (1 << item.attempts.min(6)));
            log::warn!(
                "sending in chat {chat_id} failed ({e}); retrying in {} ms",
                wait.as_millis()
            );
            After::Retry(wait)
        }
        Err(e) => {
            (spawner.on_error)();
            log::warn!("cannot send in chat {chat_id}: {e}");
            After::Failed(e.to_string(), e.error_code())
        }
    }
}

/// Carries out what `attempt` decided, under the queue lock (a retry goes
/// back to the head of its chat before the chat is free again). Returns a
/// message that is over, for `finish` once the lock is dropped (its
/// ticket's `done` must not run under the queue's lock).
fn settle(q: &mut Queue, after: After, item: Item) -> Option<(Item, Delivered)> {
    let chat_id = item.msg.chat_id;
    match after {
        After::Retry(wait) => {
            requeue(q, item, Instant::now() + wait);
            None
        }
        After::Sent(result) => {
            done_sending(q, chat_id, Instant::now());
            Some((item, Ok(result)))
        }
        After::Failed(text, code) => {
            done_sending(q, chat_id, Instant::now());
            Some((item, Err((text, code))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sandbox with one bot whose token is `token`, chats 1..=`chats`
    /// known to it (Telegram, and the sandbox, only let a bot write to a
    /// chat that wrote to it), and a client for it.
    fn sandbox_bot(token: &str, chats: i64) -> (crate::sandbox::Sandbox, u64, Client) {
        use crate::sandbox::{Sandbox, SandboxOptions};
        let sandbox = Sandbox::start(&SandboxOptions::default()).expect("a loopback sandbox");
        let bot = sandbox
            .register_bot(token, "sendtest_bot")
            .expect("a valid token");
        for chat in 1..=chats {
            sandbox
                .inject_text(bot, chat, chat, "hello")
                .expect("the bot is registered");
        }
        let client = Client::new(
            &sandbox.url(),
            crate::token::Token::parse(token).expect("a valid token"),
            1,
        );
        (sandbox, bot, client)
    }

    fn item(chat_id: i64, n: i64) -> Item {
        Item {
            msg: Outgoing {
                chat_id,
                content: Content::Text(n.to_string()),
                reply_to: None,
                ticket: None,
                report: None,
            },
            attempts: 0,
        }
    }

    fn queue(now: Instant) -> Queue {
        Queue {
            chats: HashMap::new(),
            order: VecDeque::new(),
            bot: Bucket::new(1.0, now),
            queued: 0,
            threads: 0,
            idle: 0,
            idle_exit: IDLE_EXIT,
        }
    }

    #[test]
    fn senders_a_burst_started_leave_when_idle_but_one_stays() {
        let token = "4242:send-path-test-secret";
        let (sandbox, bot, client) = sandbox_bot(token, 3);
        // The first sendMessage hangs, so the first sender is busy when a
        // second chat's message comes: a second sender starts.
        let fault = serde_json::json!({"kind": "hang", "method": "sendMessage", "hang_ms": 1500});
        let answer = ureq::post(format!("{}/_sandbox/faults", sandbox.url()))
            .header("Content-Type", "application/json")
            .send(fault.to_string())
            .expect("the sandbox's control API answers");
        assert_eq!(answer.status(), 200);
        let path = SendPath::start_with(
            client,
            Rates::new(RateSet::UNPACED),
            || {},
            Duration::from_millis(300),
        )
        .expect("the send path starts");
        let threads = || lock(&path.shared.0).threads;
        assert_eq!(threads(), 0, "no sender until a message needs one");
        let text = |chat_id: i64| Outgoing {
            chat_id,
            content: Content::Text(format!("to {chat_id}")),
            reply_to: None,
            ticket: None,
            report: None,
        };
        path.send(text(1));
        let deadline = Instant::now() + Duration::from_secs(20);
        // Until the first sender has taken chat 1's message (it hangs).
        while lock(&path.shared.0).queued > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        path.send(text(2));
        assert!(
            threads() >= 2,
            "a second sender started for the second chat"
        );
        while sandbox.sent_since(bot, 0).len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            sandbox.sent_since(bot, 0).len(),
            2,
            "both sent (chat 1 after a retry)"
        );
        while threads() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(threads(), 1, "idle senders left, one stayed");
        path.send(text(3));
        while sandbox.sent_since(bot, 0).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            sandbox.sent_since(bot, 0).len(),
            3,
            "the one left still sends"
        );
        sandbox.shutdown();
    }

    #[test]
    fn send_here_sends_on_the_caller_while_pacing_allows_then_queues_in_order() {
        let (sandbox, bot, client) = sandbox_bot("4343:send-here-test-secret", 1);
        let rates = RateSet {
            per_chat: 1.0,
            ..RateSet::UNPACED
        };
        let path = SendPath::start(client, Rates::new(rates), || {}).expect("a sender starts");
        let texts = |n: usize| -> Vec<String> {
            sandbox
                .sent_since(bot, 0)
                .iter()
                .take(n)
                .map(|m| m["text"].as_str().unwrap_or("").to_string())
                .collect()
        };
        for n in 0..5 {
            path.send_here(Outgoing {
                chat_id: 1,
                content: Content::Text(format!("m{n}")),
                reply_to: None,
                ticket: None,
                report: None,
            });
            if n < 3 {
                // The chat's burst: sent by this thread before it returns.
                assert_eq!(sandbox.sent_since(bot, 0).len(), n + 1, "m{n} sent here");
            }
        }
        assert!(path.queued() >= 1, "past the burst, queued for the senders");
        let deadline = Instant::now() + Duration::from_secs(20);
        while sandbox.sent_since(bot, 0).len() < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(texts(5), ["m0", "m1", "m2", "m3", "m4"], "in order");
        sandbox.shutdown();
    }

    fn push(q: &mut Queue, it: Item, now: Instant) {
        let chat_id = it.msg.chat_id;
        let chat = q.chats.entry(chat_id).or_insert_with(|| Chat::new(now));
        if chat.items.is_empty() {
            q.order.push_back(chat_id);
        }
        chat.items.push_back(it);
        q.queued += 1;
    }

    fn text(it: &Item) -> String {
        match &it.msg.content {
            Content::Text(t) => t.clone(),
            Content::Document { .. } | Content::Call { .. } => String::new(),
        }
    }

    #[test]
    fn unpaced_sends_everything_in_order_per_chat_round_robin() {
        let now = Instant::now();
        let mut q = queue(now);
        for n in 0..3 {
            push(&mut q, item(1, n), now);
            push(&mut q, item(2, 10 + n), now);
        }
        let mut sent = vec![];
        while let Ok(it) = pick(&mut q, RateSet::UNPACED, now) {
            sent.push((it.msg.chat_id, text(&it)));
            done_sending(&mut q, it.msg.chat_id, now);
        }
        assert_eq!(sent.len(), 6);
        let chat1: Vec<_> = sent
            .iter()
            .filter(|(c, _)| *c == 1)
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(chat1, ["0", "1", "2"]);
        assert_eq!(sent[0].0, 1);
        assert_eq!(sent[1].0, 2, "chats take turns");
        assert_eq!(q.queued, 0);
    }

    #[test]
    fn one_chat_is_paced_after_its_burst() {
        let now = Instant::now();
        let mut q = queue(now);
        for n in 0..5 {
            push(&mut q, item(7, n), now);
        }
        let rates = RateSet {
            per_chat: 1.0,
            ..RateSet::UNPACED
        };
        for _ in 0..3 {
            let it = pick(&mut q, rates, now).expect("the burst goes at once");
            done_sending(&mut q, it.msg.chat_id, now);
        }
        let Err(Some(next)) = pick(&mut q, rates, now) else {
            panic!("the fourth must wait")
        };
        assert!(next > now && next <= now + Duration::from_secs(1));
        assert!(pick(&mut q, rates, now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_bot_bucket_caps_all_chats_together() {
        let now = Instant::now();
        let mut q = queue(now);
        for chat in 0..10 {
            push(&mut q, item(chat, chat), now);
        }
        let rates = RateSet {
            per_bot: 2.0,
            ..RateSet::UNPACED
        };
        let mut at_once = 0;
        while let Ok(it) = pick(&mut q, rates, now) {
            done_sending(&mut q, it.msg.chat_id, now);
            at_once += 1;
        }
        assert_eq!(at_once, 1, "the bot bucket starts with one token");
        let later = now + Duration::from_secs(1);
        let mut more = 0;
        while let Ok(it) = pick(&mut q, rates, later) {
            done_sending(&mut q, it.msg.chat_id, later);
            more += 1;
        }
        assert_eq!(more, 2, "two a second");
    }

    #[test]
    fn a_chat_in_flight_waits_while_other_chats_go() {
        let now = Instant::now();
        let mut q = queue(now);
        push(&mut q, item(1, 1), now);
        push(&mut q, item(1, 2), now);
        push(&mut q, item(2, 3), now);
        let first = pick(&mut q, RateSet::UNPACED, now).expect("chat 1");
        assert_eq!(text(&first), "1");
        let second = pick(&mut q, RateSet::UNPACED, now).expect("chat 2 meanwhile");
        assert_eq!(text(&second), "3");
        assert!(
            matches!(pick(&mut q, RateSet::UNPACED, now), Err(None)),
            "chat 1's next message waits for its first"
        );
        done_sending(&mut q, 1, now);
        assert_eq!(
            text(&pick(&mut q, RateSet::UNPACED, now).expect("now it goes")),
            "2"
        );
    }

    #[test]
    fn a_group_is_paced_at_the_group_rate_with_a_burst_of_one() {
        let now = Instant::now();
        let mut q = queue(now);
        for n in 0..3 {
            push(&mut q, item(-100, n), now);
            push(&mut q, item(5, 10 + n), now);
        }
        let rates = RateSet {
            per_chat: 1.0,
            per_group: 0.33,
            per_bot: 0.0,
        };
        let mut sent = vec![];
        while let Ok(it) = pick(&mut q, rates, now) {
            sent.push(it.msg.chat_id);
            done_sending(&mut q, it.msg.chat_id, now);
        }
        assert_eq!(
            sent.iter().filter(|c| **c == -100).count(),
            1,
            "one to the group"
        );
        assert_eq!(
            sent.iter().filter(|c| **c == 5).count(),
            3,
            "the private burst"
        );
        let Err(Some(next)) = pick(&mut q, rates, now) else {
            panic!("the group's next must wait")
        };
        let wait = next.duration_since(now).as_secs_f64();
        assert!((2.9..=3.1).contains(&wait), "about 3 s, not {wait}");
        // 20 a minute at most: 1 + 0.33 · 60 = 20.8.
    }

    #[test]
    fn pacing_holds_for_a_trickle_too() {
        // One message at a time, each sent before the next arrives: the
        // chat's bucket must survive its empty queue.
        let now = Instant::now();
        let mut q = queue(now);
        let rates = RateSet {
            per_chat: 1.0,
            ..RateSet::UNPACED
        };
        let mut sent_at_once = 0;
        for n in 0..5 {
            push(&mut q, item(9, n), now);
            if let Ok(it) = pick(&mut q, rates, now) {
                done_sending(&mut q, it.msg.chat_id, now);
                sent_at_once += 1;
            }
        }
        assert_eq!(sent_at_once, 3, "the burst, then the pace");
    }

    fn call(chat_id: i64, method: &str) -> Item {
        Item {
            msg: Outgoing {
                chat_id,
                content: Content::Call {
                    method: method.to_string(),
                    params: Value::Null,
                    files: vec![],
                },
                reply_to: None,
                ticket: None,
                report: None,
            },
            attempts: 0,
        }
    }

    fn method(it: &Item) -> &str {
        match &it.msg.content {
            Content::Call { method, .. } => method,
            Content::Text(_) | Content::Document { .. } => "sendMessage",
        }
    }

    #[test]
    fn answers_and_getters_do_not_wait_for_pacing_but_keep_their_place() {
        assert!(!is_paced("answerCallbackQuery") && !is_paced("getChat"));
        assert!(!is_paced("sendChatAction") && !is_paced("answerInlineQuery"));
        assert!(is_paced("sendMessage") && is_paced("editMessageText"));
        let now = Instant::now();
        let mut q = queue(now);
        let rates = RateSet {
            per_chat: 1.0,
            per_bot: 1.0,
            per_group: 0.33,
        };
        // Chat 5 gets a message a second: the bot's bucket (1 a second) is
        // empty after each.
        for n in 0..3 {
            push(&mut q, item(5, n), now);
            let later = now + Duration::from_secs(n as u64);
            let it = pick(&mut q, rates, later).expect("the burst");
            done_sending(&mut q, it.msg.chat_id, later);
        }
        let t = now + Duration::from_secs(2);
        // A button press answered, then the message edited: the answer goes
        // at once, the edit waits for the chat's token.
        push(&mut q, call(5, "answerCallbackQuery"), t);
        push(&mut q, call(5, "editMessageText"), t);
        let it = pick(&mut q, rates, t).expect("the answer is not paced");
        assert_eq!(method(&it), "answerCallbackQuery");
        done_sending(&mut q, 5, t);
        assert!(
            matches!(pick(&mut q, rates, t), Err(Some(_))),
            "the edit is paced"
        );
        // Behind a paced message of its chat it keeps its place.
        push(&mut q, call(-100, "editMessageText"), t);
        push(&mut q, call(-100, "answerCallbackQuery"), t);
        let first = pick(&mut q, rates, t);
        assert!(
            matches!(first, Err(Some(_))),
            "the bot has no token: nothing of the group goes"
        );
        // The caller's own path: a getter claims its chat at once.
        assert!(claim(&mut q, 7, false, rates, t), "a getter goes at once");
        done_sending(&mut q, 7, t);
        assert!(
            !claim(&mut q, 7, true, rates, t),
            "a message waits for the bot"
        );
        // A 429's wait holds an answer back too.
        requeue(
            &mut q,
            call(8, "answerCallbackQuery"),
            t + Duration::from_millis(500),
        );
        assert!(matches!(pick(&mut q, rates, t), Err(Some(_))));
    }

    #[test]
    fn a_requeued_message_goes_first_but_not_before_its_time() {
        let now = Instant::now();
        let mut q = queue(now);
        push(&mut q, item(3, 2), now);
        requeue(&mut q, item(3, 1), now + Duration::from_millis(500));
        assert!(matches!(pick(&mut q, RateSet::UNPACED, now), Err(Some(_))));
        let it = pick(&mut q, RateSet::UNPACED, now + Duration::from_millis(500)).expect("due");
        assert_eq!(text(&it), "1");
    }
}
