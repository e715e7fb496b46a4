//! The in-memory model behind the sandbox: bots, their update queues, the
//! files they hold, what they sent, the faults waiting to fire and the flood
//! limiter, and each bot's condvar (what waits on a bot sleeps there).
//! Everything here runs under the sandbox's one mutex and never blocks; the
//! waiting (long polls, held replies) lives in `mod.rs`, `poll` and
//! `control`.

mod chat;

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Uploads above this get 413 (Telegram's 50 MB).
pub const MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024;
/// getFile refuses files above this (Telegram's 20 MB).
pub const MAX_GET_FILE_BYTES: usize = 20_971_520;
/// The longest text sendMessage accepts, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// Seconds since the epoch, as Telegram's `date`.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A file the sandbox holds, uploaded by a bot or injected for a user.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub owner: u64,
    pub file_id: String,
    pub file_unique_id: String,
    pub file_name: String,
    pub file_path: String,
    pub bytes: Arc<Vec<u8>>,
}

/// One kind of injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Internal500,
    BadGateway502,
    TooMany429,
    Conflict409,
    Unauthorized401,
    Malformed,
    Drop,
    Hang,
    /// `{"ok":false}` with a description but no error_code, HTTP 500.
    NoCode,
    /// A 200 reply of 20 MB.
    Huge,
    /// A 200 reply whose body never ends.
    Endless,
    /// A 200 reply that is an HTML page (a captive portal, a proxy).
    Html,
}

impl FaultKind {
    pub fn parse(text: &str) -> Option<FaultKind> {
        Some(match text {
            "500" => FaultKind::Internal500,
            "502" => FaultKind::BadGateway502,
            "429" => FaultKind::TooMany429,
            "409" => FaultKind::Conflict409,
            "401" => FaultKind::Unauthorized401,
            "malformed" => FaultKind::Malformed,
            "drop" => FaultKind::Drop,
            "hang" => FaultKind::Hang,
            "nocode" => FaultKind::NoCode,
            "huge" => FaultKind::Huge,
            "endless" => FaultKind::Endless,
            "html" => FaultKind::Html,
            _ => return None,
        })
    }
}

/// A fault waiting for matching calls.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub bot_id: Option<u64>,
    /// Lower-case method name; `file` matches file downloads.
    pub method: Option<String>,
    /// Faults left when no probability is given.
    pub remaining: u64,
    pub probability: Option<f64>,
    pub retry_after: u64,
    pub hang_ms: u64,
}

/// Flood limits; 0 turns one off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_chat_per_sec: u32,
    pub per_bot_per_sec: u32,
    /// Messages a minute to one group (negative chat id), Telegram's 20.
    pub per_group_per_min: u32,
}

/// A callback query a button press created, waiting for its answer.
#[derive(Debug, Clone)]
pub struct PendingCallback {
    pub created: Instant,
    /// How long an answer is accepted (Telegram's is about 15 s).
    pub ttl: Duration,
    pub answered: bool,
    pub chat_id: i64,
}

/// How long Telegram accepts answerCallbackQuery after the press.
pub const CALLBACK_TTL: Duration = Duration::from_secs(15);
/// The update types Telegram sends when allowed_updates is empty or unset.
pub const NOT_BY_DEFAULT: [&str; 3] = ["chat_member", "message_reaction", "message_reaction_count"];

/// One registered bot and everything the sandbox knows about it. No
/// `Debug`: it holds the token, which must never be printed.
pub struct Bot {
    pub id: u64,
    pub token: String,
    pub username: String,
    pub revoked: bool,
    pub pending: VecDeque<Value>,
    pub next_update_id: i64,
    pub next_message_id: i64,
    pub chats: HashSet<i64>,
    /// Chats whose user blocked the bot: sends get 403.
    pub blocked: HashSet<i64>,
    pub sent: Vec<Value>,
    pub webhook: Option<String>,
    pub allowed_updates: Vec<String>,
    pub commands: Value,
    pub calls: BTreeMap<String, u64>,
    pub current_get_updates: u64,
    pub max_concurrent_get_updates: u64,
    /// The waiting polls: a ticket and the connection's socket.
    pub poll_peers: Vec<(u64, std::os::fd::RawFd)>,
    pub poll_ticket: u64,
    /// CLOCK_MONOTONIC µs of the last getUpdates to arrive.
    pub last_get_updates_at_us: u64,
    /// Bumped by every long poll and by setWebhook; a waiting poll whose
    /// generation is no longer current has been terminated.
    pub poll_generation: u64,
    /// Why the current generation ended the one before it.
    pub poll_terminated_by: &'static str,
    pub delivered: u64,
    pub redelivered: u64,
    pub delivered_ids: HashSet<i64>,
    pub confirmed_up_to: i64,
    /// When a poll last got the "terminated by other getUpdates" 409.
    pub last_conflict: Option<Instant>,
    /// The offset and start time of the last poll (short or long).
    pub last_poll: Option<(Option<i64>, Instant)>,
    pub chat_sends: HashMap<i64, VecDeque<Instant>>,
    pub bot_sends: VecDeque<Instant>,
    pub group_sends: HashMap<i64, VecDeque<Instant>>,
    /// Every message in the bot's chats, the users' and its own, as the
    /// Bot API's Message (edits applied), by (chat_id, message_id).
    pub messages: BTreeMap<(i64, i64), Value>,
    /// `messages` keys, oldest first, for the cap.
    pub message_order: VecDeque<(i64, i64)>,
    /// Callback queries by id.
    pub callbacks: HashMap<String, PendingCallback>,
    pub next_callback: u64,
    /// What happened in the bot's chats, for the chat page: messages,
    /// edits, deletions, callback answers, each with a `seq`.
    pub events: VecDeque<Value>,
    pub next_event: u64,
    /// Members of each group the bot is in (user ids).
    pub members: HashMap<i64, std::collections::BTreeSet<i64>>,
    /// Users' names as they wrote them, by user id.
    pub users: HashMap<i64, Value>,
    pub menu_button: Value,
    pub registered_at: Instant,
    pub logged_out: bool,
    /// What waits on this bot (its long polls, its chat page's event
    /// stream) sleeps here, on the sandbox's one mutex; a change to this
    /// bot wakes only these (`State::wake`), never another bot's.
    pub wake: Arc<Condvar>,
    /// How often a waiter of this bot woke up (a wake-up, a timeout or a
    /// spurious return), to show that other bots' calls leave it asleep.
    pub wakeups: u64,
}

/// The 409 a superseded poll gets.
pub const CONFLICT_OTHER_POLL: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
pub const CONFLICT_WEBHOOK_SET: &str = "Conflict: terminated by setWebhook request";
pub const CONFLICT_WEBHOOK_ACTIVE: &str =
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

impl Bot {
    pub fn new(id: u64, token: &str, username: &str) -> Bot {
        Bot {
            id,
            token: token.to_string(),
            username: username.to_string(),
            revoked: false,
            pending: VecDeque::new(),
            next_update_id: (id % 1000) as i64 * 1_000_000 + 500_000_000,
            next_message_id: 1,
            chats: HashSet::new(),
            blocked: HashSet::new(),
            sent: Vec::new(),
            webhook: None,
            allowed_updates: Vec::new(),
            commands: json!([]),
            calls: BTreeMap::new(),
            current_get_updates: 0,
            poll_peers: Vec::new(),
            poll_ticket: 0,
            last_get_updates_at_us: 0,
            max_concurrent_get_updates: 0,
            poll_generation: 0,
            poll_terminated_by: CONFLICT_OTHER_POLL,
            delivered: 0,
            redelivered: 0,
            delivered_ids: HashSet::new(),
            confirmed_up_to: 0,
            last_conflict: None,
            last_poll: None,
            chat_sends: HashMap::new(),
            bot_sends: VecDeque::new(),
            group_sends: HashMap::new(),
            messages: BTreeMap::new(),
            message_order: VecDeque::new(),
            callbacks: HashMap::new(),
            next_callback: 0,
            events: VecDeque::new(),
            next_event: 0,
            members: HashMap::new(),
            users: HashMap::new(),
            menu_button: json!({"type": "commands"}),
            registered_at: Instant::now(),
            logged_out: false,
            wake: Arc::new(Condvar::new()),
            wakeups: 0,
        }
    }

    /// The bot as a Telegram `User`.
    pub fn user(&self) -> Value {
        json!({"id": self.id, "is_bot": true, "first_name": self.username, "username": self.username})
    }

    /// Queues `update` (an object without `update_id`). Updates of a type
    /// outside the remembered `allowed_updates` are dropped as they are
    /// created, as Telegram does; the id is used up either way.
    pub fn push_update(&mut self, mut update: Map<String, Value>) -> i64 {
        let update_id = self.next_update_id;
        self.next_update_id += 1;
        let kind = update.keys().find(|k| *k != "update_id").cloned();
        let allowed = match &kind {
            None => true,
            Some(k) if self.allowed_updates.is_empty() => !NOT_BY_DEFAULT.contains(&k.as_str()),
            Some(k) => self.allowed_updates.contains(k),
        };
        if allowed {
            update.insert("update_id".into(), json!(update_id));
            self.pending.push_back(Value::Object(update));
        }
        update_id
    }

    /// Applies a getUpdates offset: confirms and drops what it says.
    pub fn confirm(&mut self, offset: Option<i64>) {
        match offset {
            None | Some(0) => {}
            Some(n) if n < 0 => {
                let keep = n.unsigned_abs() as usize;
                while self.pending.len() > keep {
                    self.pending.pop_front();
                }
            }
            // An offset far beyond the newest update falls back to the
            // oldest pending one instead of dropping everything.
            Some(n) if n > self.next_update_id => {}
            Some(n) => {
                while self
                    .pending
                    .front()
                    .is_some_and(|u| u["update_id"].as_i64().unwrap_or(0) < n)
                {
                    self.pending.pop_front();
                }
                self.confirmed_up_to = self.confirmed_up_to.max(n);
            }
        }
    }

    /// Why the bot may not send to `chat_id`, as Telegram words it.
    pub fn cannot_send_to(&self, chat_id: i64) -> Option<(u16, &'static str)> {
        if !self.chats.contains(&chat_id) {
            Some((400, "Bad Request: chat not found"))
        } else if self.blocked.contains(&chat_id) {
            Some((403, "Forbidden: bot was blocked by the user"))
        } else {
            None
        }
    }

    /// Whether an update is waiting for a poll.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Hands out up to `limit` pending updates (they stay until confirmed).
    pub fn deliver(&mut self, limit: usize) -> Vec<Value> {
        let out: Vec<Value> = self.pending.iter().take(limit).cloned().collect();
        for u in &out {
            let id = u["update_id"].as_i64().unwrap_or(0);
            self.delivered += 1;
            if !self.delivered_ids.insert(id) {
                self.redelivered += 1;
            }
        }
        out
    }

    /// Checks and records one send against the flood limits. Err carries
    /// the retry_after in seconds.
    pub fn flood_check(&mut self, chat_id: i64, limits: Limits, now: Instant) -> Result<(), u64> {
        let window = Duration::from_secs(1);
        let prune = |q: &mut VecDeque<Instant>| {
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
        };
        prune(&mut self.bot_sends);
        let chat = self.chat_sends.entry(chat_id).or_default();
        prune(chat);
        let retry = |q: &VecDeque<Instant>| {
            let oldest = q.front().copied().unwrap_or(now);
            let left = window.saturating_sub(now.duration_since(oldest));
            left.as_secs() + u64::from(left.subsec_nanos() > 0)
        };
        if limits.per_chat_per_sec > 0 && chat.len() >= limits.per_chat_per_sec as usize {
            return Err(retry(chat).max(1));
        }
        if limits.per_bot_per_sec > 0 && self.bot_sends.len() >= limits.per_bot_per_sec as usize {
            return Err(retry(&self.bot_sends).max(1));
        }
        if chat_id < 0 && limits.per_group_per_min > 0 {
            let minute = Duration::from_secs(60);
            let group = self.group_sends.entry(chat_id).or_default();
            while group
                .front()
                .is_some_and(|t| now.duration_since(*t) >= minute)
            {
                group.pop_front();
            }
            if group.len() >= limits.per_group_per_min as usize {
                let oldest = group.front().copied().unwrap_or(now);
                let left = minute.saturating_sub(now.duration_since(oldest));
                return Err((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1));
            }
            group.push_back(now);
        }
        if let Some(chat) = self.chat_sends.get_mut(&chat_id) {
            chat.push_back(now);
        }
        self.bot_sends.push_back(now);
        Ok(())
    }

    /// Records what the bot did to a message (sent, edited, deleted) in
    /// `sent`, with its send time.
    pub fn record_sent(
        &mut self,
        method: &str,
        chat_id: i64,
        message_id: i64,
        fields: Map<String, Value>,
    ) {
        let mut entry = Map::new();
        entry.insert("seq".into(), json!(self.sent.len() as u64 + 1));
        // CLOCK_MONOTONIC, comparable with a benchmark driver's clock.
        entry.insert(
            "at_us".into(),
            json!(crate::sys::monotonic_usec().unwrap_or(0)),
        );
        // Wall-clock send time, milliseconds since the epoch.
        entry.insert(
            "sent_at_ms".into(),
            json!(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)),
        );
        entry.insert("date".into(), json!(unix_now()));
        entry.insert("method".into(), json!(method));
        entry.insert("chat_id".into(), json!(chat_id));
        entry.insert("message_id".into(), json!(message_id));
        for key in [
            "text",
            "caption",
            "reply_to_message_id",
            "file_id",
            "file_name",
            "file_size",
        ] {
            entry.insert(key.into(), fields.get(key).cloned().unwrap_or(Value::Null));
        }
        for (k, v) in fields {
            entry.entry(k).or_insert(v);
        }
        self.sent.push(Value::Object(entry));
    }

    /// This bot's part of `/_sandbox/stats`.
    pub fn stats(&self) -> Value {
        json!({
            "calls": self.calls,
            "current_get_updates": self.current_get_updates,
            "max_concurrent_get_updates": self.max_concurrent_get_updates,
            "last_get_updates_at_us": self.last_get_updates_at_us,
            "pending_updates": self.pending.len(),
            "delivered": self.delivered,
            "redelivered": self.redelivered,
            "confirmed_up_to": self.confirmed_up_to,
            "sent": self.sent.len(),
        })
    }
}

/// A chat as Telegram shows it: private for a user's own id, a group for
/// negative ids.
pub fn chat_json(chat_id: i64, user_id: i64) -> Value {
    if chat_id < 0 {
        json!({"id": chat_id, "type": "group", "title": format!("Group {chat_id}")})
    } else {
        json!({"id": chat_id, "type": "private", "first_name": format!("User{user_id}"),
               "username": format!("user{user_id}")})
    }
}

/// Everything the sandbox holds, behind one mutex (no `Debug`: it holds
/// tokens).
#[derive(Default)]
pub struct State {
    pub bots: BTreeMap<u64, Bot>,
    pub files: HashMap<String, StoredFile>,
    /// file_path to file_id, for downloads.
    pub paths: HashMap<String, String>,
    pub next_file: u64,
    pub faults: Vec<Fault>,
    pub faults_injected: u64,
    pub calls: BTreeMap<String, u64>,
    pub limits: Limits,
    pub rng: u64,
}

impl State {
    /// Wakes what waits on `bot_id` (after a change to that bot), and
    /// nothing else: with thousands of bots long-polling, waking them all
    /// on every call made the sandbox's cost grow with the square of the
    /// fleet.
    pub fn wake(&self, bot_id: u64) {
        if let Some(bot) = self.bots.get(&bot_id) {
            bot.wake.notify_all();
        }
    }

    /// Wakes every waiter of every bot (the sandbox stops).
    pub fn wake_all(&self) {
        for bot in self.bots.values() {
            bot.wake.notify_all();
        }
    }

    /// Stores bytes as a file of `owner` and returns its file_id.
    pub fn store_file(
        &mut self,
        owner: u64,
        kind: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> String {
        self.next_file += 1;
        let n = self.next_file;
        let (dir, default_ext) = match kind {
            "photo" => ("photos", "jpg"),
            "audio" => ("music", "mp3"),
            "video" => ("videos", "mp4"),
            "voice" => ("voice", "oga"),
            _ => ("documents", "bin"),
        };
        let ext = file_name
            .rsplit_once('.')
            .map(|(_, e)| e)
            .filter(|e| {
                !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .unwrap_or(default_ext);
        let file_id = format!("BQACAgSbx{owner}F{n:06}");
        let file_path = format!("{dir}/file_{n}.{ext}");
        self.paths.insert(file_path.clone(), file_id.clone());
        self.files.insert(
            file_id.clone(),
            StoredFile {
                owner,
                file_id: file_id.clone(),
                file_unique_id: format!("AgSbx{n:06}"),
                file_name: file_name.to_string(),
                file_path,
                bytes: Arc::new(bytes),
            },
        );
        file_id
    }

    /// Stores bytes already held (another size of a photo) as a file.
    pub fn store_file_shared(
        &mut self,
        owner: u64,
        kind: &str,
        file_name: &str,
        bytes: Arc<Vec<u8>>,
    ) -> String {
        let file_id = self.store_file(owner, kind, file_name, Vec::new());
        if let Some(f) = self.files.get_mut(&file_id) {
            f.bytes = bytes;
        }
        file_id
    }

    /// The Telegram object describing a stored file of `kind`.
    pub fn file_json(&self, file_id: &str, kind: &str) -> Value {
        let f = &self.files[file_id];
        let mut v = json!({"file_id": f.file_id, "file_unique_id": f.file_unique_id,
                           "file_size": f.bytes.len()});
        match kind {
            "photo" => {
                v["width"] = json!(1280);
                v["height"] = json!(960);
            }
            "voice" | "audio" => {
                v["duration"] = json!(1);
                v["mime_type"] = json!(if kind == "voice" {
                    "audio/ogg"
                } else {
                    "audio/mpeg"
                });
                if kind == "audio" {
                    v["file_name"] = json!(f.file_name);
                }
            }
            "video" => {
                v["width"] = json!(640);
                v["height"] = json!(480);
                v["duration"] = json!(1);
                v["file_name"] = json!(f.file_name);
            }
            _ => v["file_name"] = json!(f.file_name),
        }
        v
    }

    /// Next number from a xorshift generator, as a fraction in [0, 1).
    pub fn random(&mut self) -> f64 {
        if self.rng == 0 {
            self.rng = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15)
                | 1;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Takes the first fault that matches a call (`method` lower-case;
    /// `file` for downloads) and fires, counting it as injected. A
    /// `probability` fault that does not fire lets the next matching one
    /// have its chance, so several of them add up to a mix.
    pub fn take_fault(&mut self, bot_id: u64, method: &str) -> Option<Fault> {
        let mut index = 0;
        while index < self.faults.len() {
            let f = &self.faults[index];
            let matches = f.bot_id.is_none_or(|b| b == bot_id)
                && match &f.method {
                    Some(m) => m == method,
                    None => method != "file",
                };
            if !matches {
                index += 1;
                continue;
            }
            let fault = f.clone();
            match fault.probability {
                Some(p) => {
                    if self.random() >= p {
                        index += 1;
                        continue;
                    }
                }
                None => {
                    if fault.remaining <= 1 {
                        self.faults.remove(index);
                    } else {
                        self.faults[index].remaining -= 1;
                    }
                }
            }
            self.faults_injected += 1;
            return Some(fault);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("text".into(), json!(t));
        m
    }

    #[test]
    fn update_ids_are_large_per_bot_and_offsets_confirm() {
        let mut bot = Bot::new(123456, "123456:x", "b");
        let (u1, m1) = bot.push_user_message(7, 7, text("a"));
        let (u2, _) = bot.push_user_message(7, 7, text("b"));
        assert_eq!(u1, 456 * 1_000_000 + 500_000_000);
        assert_eq!((u2, m1), (u1 + 1, 1));
        assert_eq!(bot.deliver(100).len(), 2);
        assert_eq!(bot.deliver(1).len(), 1);
        assert_eq!((bot.delivered, bot.redelivered), (3, 1));
        bot.confirm(Some(u1 + 1000));
        assert_eq!(bot.pending.len(), 2, "an offset far beyond falls back");
        bot.confirm(Some(u2));
        assert_eq!(bot.pending.len(), 1);
        bot.confirm(Some(u2 + 1));
        assert!(!bot.has_pending());
        assert_eq!(bot.confirmed_up_to, u2 + 1);
    }

    #[test]
    fn negative_offset_keeps_the_last_n() {
        let mut bot = Bot::new(1, "1:x", "b");
        for _ in 0..5 {
            bot.push_user_message(1, 1, text("x"));
        }
        bot.confirm(Some(-2));
        assert_eq!(bot.pending.len(), 2);
    }

    #[test]
    fn allowed_updates_filter_as_updates_are_created() {
        let mut bot = Bot::new(1, "1:x", "b");
        bot.allowed_updates = vec!["callback_query".into()];
        bot.push_user_message(1, 1, text("x"));
        assert!(!bot.has_pending());
    }

    #[test]
    fn flood_limit_per_chat_then_per_bot() {
        let mut bot = Bot::new(1, "1:x", "b");
        let limits = Limits {
            per_chat_per_sec: 1,
            per_bot_per_sec: 2,
            per_group_per_min: 0,
        };
        let now = Instant::now();
        assert!(bot.flood_check(1, limits, now).is_ok());
        assert_eq!(bot.flood_check(1, limits, now), Err(1));
        assert!(bot.flood_check(2, limits, now).is_ok());
        assert!(bot.flood_check(3, limits, now).is_err());
        assert!(bot
            .flood_check(1, limits, now + Duration::from_millis(1001))
            .is_ok());
    }

    #[test]
    fn group_limit_is_per_minute() {
        let mut bot = Bot::new(1, "1:x", "b");
        let limits = Limits {
            per_group_per_min: 20,
            ..Limits::default()
        };
        let now = Instant::now();
        for n in 0..20 {
            assert!(bot
                .flood_check(-5, limits, now + Duration::from_millis(n))
                .is_ok());
        }
        let retry = bot.flood_check(-5, limits, now + Duration::from_secs(10));
        assert_eq!(retry, Err(50));
        assert!(
            bot.flood_check(5, limits, now).is_ok(),
            "private chats are not paced"
        );
        assert!(bot
            .flood_check(-5, limits, now + Duration::from_secs(61))
            .is_ok());
    }

    #[test]
    fn default_allowed_updates_leave_out_member_and_reaction_updates() {
        let mut bot = Bot::new(1, "1:x", "b");
        let mut u = Map::new();
        u.insert("chat_member".into(), json!({}));
        bot.push_update(u.clone());
        assert!(!bot.has_pending());
        bot.allowed_updates = vec!["chat_member".into()];
        bot.push_update(u);
        assert!(bot.has_pending());
    }

    #[test]
    fn count_faults_run_out_and_narrow_by_method() {
        let mut s = State::default();
        s.faults.push(Fault {
            kind: FaultKind::Internal500,
            bot_id: Some(5),
            method: Some("getme".into()),
            remaining: 2,
            probability: None,
            retry_after: 1,
            hang_ms: 0,
        });
        assert!(s.take_fault(6, "getme").is_none());
        assert!(s.take_fault(5, "getupdates").is_none());
        assert!(s.take_fault(5, "getme").is_some());
        assert!(s.take_fault(5, "getme").is_some());
        assert!(s.take_fault(5, "getme").is_none());
        assert_eq!(s.faults_injected, 2);
    }
}
