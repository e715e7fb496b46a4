//! A worker: the process that serves one bot token. It takes the token's
//! poller lock, calls getMe, says READY, then long-polls getUpdates. Each
//! update gets a ticket from the tracker and goes to the job pool (in order
//! per chat); its replies go through the one paced send path; the offset
//! confirms an update only once it is handled and its replies are out.
//!
//! Threads: the poll loop (main), the job pool, the sender, the outbox, the
//! offset persister, a heartbeat thread, a signal thread and a stdin reader
//! (parent messages; EOF means the parent is gone). It must never poll
//! before it holds the lock, confirm an update it has not handled, or pass
//! its token to anything but the Bot API client.

pub mod calls;
pub mod commands;
pub mod dispatch;
pub mod handler;
pub mod media;
pub mod outbox;
pub mod persistent;
pub mod protocol;
pub mod respond;
pub mod send;
pub mod track;

use crate::config::Settings;
use crate::ipc::{Counters, ParentMsg, WorkerMsg};
use crate::lock::TokenLock;
use crate::state;
use crate::supervisor::machine::{EXIT_PERMANENT, EXIT_TOKEN_REJECTED};
use crate::supervisor::HEARTBEAT_PERIOD;
use crate::telegram::{ApiError, BotInfo, Client};
use crate::token::Token;
use commands::{parse_command, parse_update, Incoming, Skip};
use send::{Content, Outgoing, Rates, SendPath};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};
use track::{Ticket, Tracker};

/// `BOT_HANDLER=builtin:echo` answers with the message's own text, with no
/// process: for demos and benchmarks.
pub const BUILTIN_ECHO: &str = "builtin:echo";
/// The most updates one getUpdates returns.
const POLL_WINDOW: usize = 100;
/// How often a user who is not allowed is told so, at most.
const REFUSAL_EVERY: Duration = Duration::from_secs(60);

/// State shared by the worker's threads.
struct Shared {
    stopping: AtomicBool,
    counters: Mutex<Counters>,
    /// Milliseconds since `started` when the poll loop last made progress.
    alive_ms: AtomicU64,
    started: Instant,
    /// Swapped whole on a reload; readers take a cheap `Arc` per update.
    settings: RwLock<Arc<Settings>>,
    /// The latest settings as environment variables, for handlers.
    settings_env: RwLock<Vec<(String, String)>>,
    index: u32,
    tracker: Arc<Tracker>,
    rates: Arc<Rates>,
    pool: OnceLock<dispatch::Pool>,
    /// The send path, once the bot is up (parent messages use it too).
    send: OnceLock<SendPath>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // The data are counters and maps; a panicked holder cannot tear them.
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    fn mark_alive(&self) {
        self.alive_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn settings(&self) -> Arc<Settings> {
        match self.settings.read() {
            Ok(s) => Arc::clone(&s),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn error(&self) {
        lock(&self.counters).errors += 1;
    }
}

/// Sends one message to the supervisor. A parent that cannot be told
/// anything is gone: exit.
fn emit(msg: &WorkerMsg) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(msg.encode().as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        log::warn!("the supervisor is gone (stdout closed); exiting");
        std::process::exit(0);
    }
}

/// Ends the process after at most 500 ms for the updates in hand to finish.
/// What was not confirmed comes again to the next worker; handlers die with
/// us (PR_SET_PDEATHSIG).
fn exit_now(shared: &Shared, why: &str, code: i32) -> ! {
    shared.stopping.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_millis(500);
    while shared.tracker.in_flight() > 0 && Instant::now() < deadline {
        shared.tracker.wait_for_progress(deadline - Instant::now());
    }
    log::info!("stopping: {why}");
    std::process::exit(code);
}

fn fatal(reason: &str, code: i32) -> ! {
    log::error!("{reason}");
    emit(&WorkerMsg::Fatal {
        reason: reason.to_string(),
    });
    std::process::exit(code);
}

const TOKEN_REJECTED: &str =
    "token rejected by Telegram (401 Unauthorized): check it with @BotFather";

/// Entry point of `botfleet worker` (started by the supervisor only).
pub fn main() -> i32 {
    let index: Option<u32> = std::env::var("BOT_INDEX").ok().and_then(|v| v.parse().ok());
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    crate::logging::init(
        &format!(
            "Worker bot-{}",
            index.map_or("?".to_string(), |i| i.to_string())
        ),
        &spec,
    );
    let Some(index) = index else {
        log::error!("`botfleet worker` is started by `botfleet run`, not by hand");
        return crate::cli::exit::USAGE;
    };
    let token = match std::env::var("BOT_TOKEN").map(|t| Token::parse(&t)) {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => fatal(&format!("BOT_TOKEN is malformed: {e}"), EXIT_PERMANENT),
        Err(_) => fatal("BOT_TOKEN is not set", EXIT_PERMANENT),
    };
    crate::logging::add_secret(token.secret());
    if let Err(e) = crate::sys::die_with_parent() {
        log::warn!("cannot ask to die with the supervisor: {e}");
    }
    if let Err(e) = crate::sys::ignore_file_size_signal() {
        log::warn!("cannot ignore SIGXFSZ: {e}");
    }
    let parent: Option<u32> = std::env::var("BOTFLEET_PARENT_PID")
        .ok()
        .and_then(|p| p.parse().ok());
    if parent.is_some_and(|p| p != crate::sys::parent_pid()) {
        // The supervisor died before PR_SET_PDEATHSIG took effect.
        log::warn!("the supervisor is already gone; exiting");
        return 0;
    }
    let env = |k: &str| std::env::var(k).ok();
    let settings = match Settings::from_lookup(&env) {
        Ok(s) => s,
        Err(e) => fatal(&format!("bad settings: {e}"), EXIT_PERMANENT),
    };
    if let Err(e) = std::fs::create_dir_all(&settings.state_dir) {
        fatal(
            &format!(
                "cannot create STATE_DIR {}: {e}",
                settings.state_dir.display()
            ),
            EXIT_PERMANENT,
        );
    }
    let start = match state::read_offset(&settings.state_dir, token.bot_id()) {
        Ok(o) => o,
        Err(e) => {
            log::warn!("{e}; starting from the oldest pending update");
            None
        }
    };
    let shared = Arc::new(Shared {
        stopping: AtomicBool::new(false),
        counters: Mutex::new(Counters::default()),
        alive_ms: AtomicU64::new(0),
        started: Instant::now(),
        rates: Rates::new(settings.send_rate_per_chat, settings.send_rate_per_bot),
        settings: RwLock::new(Arc::new(settings.clone())),
        settings_env: RwLock::new(Vec::new()),
        index,
        tracker: Tracker::new(start),
        pool: OnceLock::new(),
        send: OnceLock::new(),
    });
    if let Err(e) = start_threads(&shared, settings.poll_timeout_secs) {
        fatal(&format!("cannot start threads: {e}"), 1);
    }
    run(shared, token, settings)
}

fn start_threads(shared: &Arc<Shared>, poll_timeout_secs: u64) -> std::io::Result<()> {
    let s = Arc::clone(shared);
    crate::signals::forward(move |kind| {
        if let crate::signals::SignalKind::Stop(name) = kind {
            exit_now(&s, &format!("received {name}"), 0);
        }
    })?;
    let s = Arc::clone(shared);
    std::thread::Builder::new()
        .name("parent".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                match stdin.lock().read_line(&mut line) {
                    Ok(0) | Err(_) => exit_now(&s, "the supervisor is gone (stdin closed)", 0),
                    Ok(_) => match ParentMsg::decode(&line) {
                        Ok(msg) => on_parent_msg(&s, msg),
                        Err(e) => log::warn!("{e}"),
                    },
                }
            }
        })?;
    let s = Arc::clone(shared);
    // The poll loop is alive if it made progress within one long poll plus
    // the client's slack; past that, heartbeats stop and the parent kills us.
    let stale_after = Duration::from_secs(poll_timeout_secs + 20);
    std::thread::Builder::new()
        .name("heartbeat".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let alive = Duration::from_millis(s.alive_ms.load(Ordering::Relaxed));
            if s.started.elapsed().saturating_sub(alive) < stale_after {
                let counters = lock(&s.counters).clone();
                emit(&WorkerMsg::Heartbeat(counters));
            }
            std::thread::sleep(HEARTBEAT_PERIOD);
        })?;
    Ok(())
}

fn on_parent_msg(shared: &Shared, msg: ParentMsg) {
    match msg {
        ParentMsg::Start { .. } => log::warn!("a second START from the supervisor was ignored"),
        ParentMsg::Settings { env } => {
            let map: HashMap<String, String> = env.iter().cloned().collect();
            let lookup = |k: &str| map.get(k).cloned().or_else(|| std::env::var(k).ok());
            match Settings::from_lookup(&lookup) {
                Ok(s) => {
                    crate::logging::set_filter(&s.rust_log);
                    // The send path shares these rates and wakes its
                    // senders; before it exists, only the rates change.
                    match shared.send.get() {
                        Some(send) => send.set_rates(s.send_rate_per_chat, s.send_rate_per_bot),
                        None => shared.rates.set(s.send_rate_per_chat, s.send_rate_per_bot),
                    }
                    if let Some(pool) = shared.pool.get() {
                        pool.resize(s.handler_concurrency);
                    }
                    if let Ok(mut cur) = shared.settings.write() {
                        *cur = Arc::new(s);
                    }
                    if let Ok(mut cur) = shared.settings_env.write() {
                        *cur = env;
                    }
                    log::info!("settings updated");
                }
                Err(e) => log::error!("new settings rejected: {e}"),
            }
        }
        ParentMsg::ReloadResult { chat_id, text } | ParentMsg::Notify { chat_id, text } => {
            match shared.send.get() {
                Some(send) => send.send(Outgoing {
                    chat_id,
                    content: Content::Text(text),
                    reply_to: None,
                    ticket: None,
                    report: None,
                }),
                None => log::warn!("not ready yet: a message for chat {chat_id} was dropped"),
            }
        }
    }
}

/// Doubling waits for retries inside the worker.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }
    fn wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// What the jobs need to handle updates; shared by the pool threads.
struct Bot {
    client: Client,
    me: BotInfo,
    shared: Arc<Shared>,
    send: SendPath,
    media: PathBuf,
    refused: Mutex<HashMap<i64, Instant>>,
}

fn run(shared: Arc<Shared>, token: Token, settings: Settings) -> i32 {
    let bot_id = token.bot_id();
    let lock_path = settings.state_dir.join(format!("bot-{bot_id}.lock"));
    let _poller_lock = match TokenLock::acquire(&lock_path, Duration::from_secs(86_400), || {
        log::warn!("another process polls this bot; waiting for it to exit before polling")
    }) {
        Ok(l) => l,
        Err(e) => fatal(&format!("cannot take the poller lock: {e}"), EXIT_PERMANENT),
    };
    let client = Client::new(&settings.api_url, token, settings.poll_timeout_secs);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let me = loop {
        shared.mark_alive();
        match client.get_me() {
            Ok(me) => break me,
            Err(ApiError::TokenRejected { .. }) => fatal(TOKEN_REJECTED, EXIT_TOKEN_REJECTED),
            Err(e) => {
                let wait = e.retry_after().unwrap_or_else(|| backoff.wait());
                log::warn!("getMe failed: {e}; retrying in {} ms", wait.as_millis());
                std::thread::sleep(wait);
            }
        }
    };
    let media = settings.media_dir.join(format!("bot-{}", shared.index));
    if settings.clean_up_media && media.exists() {
        if let Err(e) = std::fs::remove_dir_all(&media) {
            log::warn!("CLEAN_UP_MEDIADIR: cannot wipe {}: {e}", media.display());
        }
    }
    for dir in [media.clone(), media.join("received"), media.join("sent")] {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            fatal(
                &format!("cannot create {}: {e}", dir.display()),
                EXIT_PERMANENT,
            );
        }
    }
    if let Err(e) = client.set_my_commands(commands::COMMANDS) {
        log::warn!("setMyCommands failed (commands still work): {e}");
    }
    let error_shared = Arc::clone(&shared);
    let send = match SendPath::start(client.clone(), Arc::clone(&shared.rates), move || {
        error_shared.error()
    }) {
        Ok(s) => s,
        Err(e) => fatal(&format!("cannot start the sender: {e}"), 1),
    };
    let recipients_shared = Arc::clone(&shared);
    if let Err(e) = outbox::start(media.clone(), send.clone(), move || {
        recipients_shared.settings().recipients().to_vec()
    }) {
        fatal(&format!("cannot start the outbox: {e}"), 1);
    }
    if let Err(e) = start_persister(&shared, settings.state_dir.clone(), bot_id) {
        fatal(&format!("cannot start the offset writer: {e}"), 1);
    }
    let pool = shared
        .pool
        .get_or_init(|| dispatch::Pool::new(settings.handler_concurrency))
        .clone();
    if shared.send.set(send.clone()).is_err() {
        log::debug!("the send path was already set");
    }
    emit(&WorkerMsg::Ready {
        bot_id: me.id,
        username: me.username.clone(),
    });
    log::info!("ready as @{} (bot id {})", me.username, me.id);
    let bot = Arc::new(Bot {
        client,
        me,
        shared: Arc::clone(&shared),
        send,
        media,
        refused: Mutex::new(HashMap::new()),
    });
    poll_loop(&bot, &pool)
}

/// Writes the confirm point to the offset file whenever it moves: fsync at
/// most once a second, so a power loss repeats at most the last second's
/// updates and a kill -9 repeats only the updates in flight.
fn start_persister(shared: &Arc<Shared>, state_dir: PathBuf, bot_id: u64) -> std::io::Result<()> {
    let s = Arc::clone(shared);
    std::thread::Builder::new()
        .name("offsets".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut written = s.tracker.confirm_point();
            let mut last_sync = Instant::now();
            // A write not yet fsynced, or one that failed: come back within
            // a second for it; otherwise sleep until progress.
            let mut unsynced = false;
            let mut failing = false;
            loop {
                let timeout = if unsynced || failing {
                    (last_sync + Duration::from_secs(1))
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(10))
                } else {
                    Duration::from_secs(3600)
                };
                s.tracker.wait_for_progress(timeout);
                // Under load updates finish in bursts: one write for each
                // 2 ms of them, not one per update.
                std::thread::sleep(Duration::from_millis(2));
                let point = s.tracker.confirm_point();
                let sync_due = last_sync.elapsed() >= Duration::from_secs(1);
                let Some(p) = point else { continue };
                if point == written && !(sync_due && (unsynced || failing)) {
                    continue;
                }
                match state::write_offset(&state_dir, bot_id, p, sync_due) {
                    Ok(()) => {
                        written = point;
                        if sync_due {
                            last_sync = Instant::now();
                            unsynced = false;
                        } else {
                            unsynced = true;
                        }
                        if failing {
                            log::info!("the offset file is written again");
                            failing = false;
                        }
                    }
                    Err(e) => {
                        s.error();
                        if !failing {
                            log::error!("cannot persist the offset ({e}); handled updates may repeat after a restart");
                            failing = true;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

fn poll_loop(bot: &Arc<Bot>, pool: &dispatch::Pool) -> i32 {
    let shared = &bot.shared;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut conflicts = 0u32;
    loop {
        shared.mark_alive();
        if shared.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        // getUpdates returns at most 100 updates from the confirm point on,
        // and the ones in flight come back with them: with the window half
        // full, wait (briefly) for room, so a poll brings mostly new ones.
        let waited = Instant::now();
        while shared.tracker.in_flight() > POLL_WINDOW / 2
            && waited.elapsed() < Duration::from_secs(1)
        {
            shared.tracker.wait_for_progress(Duration::from_millis(100));
        }
        let poll_timeout = shared.settings().poll_timeout_secs;
        let offset = shared.tracker.confirm_point();
        match bot.client.get_updates(offset, poll_timeout) {
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
                }
                let mut new = 0;
                for update in updates {
                    let Some(id) = update["update_id"].as_i64() else {
                        log::warn!("an update without update_id was skipped");
                        continue;
                    };
                    let Some(ticket) = shared.tracker.take(id) else {
                        continue; // still in flight: Telegram sends it until confirmed
                    };
                    new += 1;
                    dispatch(bot, pool, update, ticket);
                }
                if new == 0 && shared.tracker.in_flight() > 0 {
                    // Unconfirmed updates come back at once; wait for one to
                    // finish (or a moment) instead of spinning.
                    shared.tracker.wait_for_progress(Duration::from_millis(500));
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
                std::thread::sleep(wait);
            }
            Err(e) => {
                shared.error();
                let wait = e.retry_after().unwrap_or_else(|| backoff.wait());
                log::warn!(
                    "getUpdates failed: {e}; retrying in {} ms",
                    wait.as_millis()
                );
                std::thread::sleep(wait);
            }
        }
    }
}

/// Hands an update to the pool, in its chat's queue.
fn dispatch(bot: &Arc<Bot>, pool: &dispatch::Pool, update: Value, ticket: Ticket) {
    let chat = update["message"]["chat"]["id"].as_i64().unwrap_or(0);
    let bot = Arc::clone(bot);
    pool.submit(chat, move || {
        match parse_update(&update) {
            Ok(msg) => bot.on_message(&msg, &update, &ticket),
            Err(Skip::NotAMessage) => log::debug!("skipping an update that is not a message"),
            Err(Skip::Malformed(why)) => log::warn!("skipping a malformed update: {why}"),
        }
        let mut c = lock(&bot.shared.counters);
        c.updates += 1;
        c.last_update_ms = Some(now_ms());
        // `ticket` drops here; the update is handled once its replies are out.
    });
}

impl Bot {
    /// Queues a reply (split at 4096 characters) on the send path.
    fn reply(&self, chat_id: i64, text: &str, reply_to: Option<i64>, ticket: Option<&Ticket>) {
        for (i, part) in handler::split_message(text, 4096).into_iter().enumerate() {
            self.send.send(Outgoing {
                chat_id,
                content: Content::Text(part),
                reply_to: if i == 0 { reply_to } else { None },
                ticket: ticket.cloned(),
                report: None,
            });
        }
    }

    fn on_message(&self, msg: &Incoming, update: &Value, ticket: &Ticket) {
        let settings = self.shared.settings();
        let allowed = settings.is_allowed(msg.user_id);
        let is_admin = settings.is_admin(msg.user_id);
        let command = msg
            .text
            .as_deref()
            .filter(|_| msg.file_kind.is_none())
            .and_then(|t| parse_command(t, &self.me.username));
        let reply_to = Some(msg.message_id);
        if command.as_ref().is_some_and(|c| c.name == "whoami") {
            let text = format!(
                "Your user id: {}\nThis chat's id: {}",
                msg.user_id, msg.chat_id
            );
            self.reply(msg.chat_id, &text, reply_to, Some(ticket));
            return;
        }
        if !allowed {
            log::info!(
                "refused a message from user {} (not in ALLOWED_USER_IDS)",
                msg.user_id
            );
            let mut refused = lock(&self.refused);
            let due = refused
                .get(&msg.user_id)
                .is_none_or(|t| t.elapsed() >= REFUSAL_EVERY);
            if due {
                refused.insert(msg.user_id, Instant::now());
                drop(refused);
                self.reply(
                    msg.chat_id,
                    "Sorry, this bot is private. Send /whoami and give your id to its operator.",
                    reply_to,
                    Some(ticket),
                );
            }
            return;
        }
        if let Some(kind) = msg.file_kind {
            self.receive_file(msg, &update["message"], kind, ticket);
            return;
        }
        let builtin = command
            .as_ref()
            .and_then(|cmd| self.builtin(cmd, &settings, is_admin, msg));
        if let Some(text) = builtin {
            self.reply(msg.chat_id, &text, reply_to, Some(ticket));
            return;
        }
        if command.as_ref().is_some_and(|c| c.name == "reload_config") {
            return; // the supervisor answers through ReloadResult
        }
        self.run_handler(msg, update, &settings, ticket);
    }

    /// A built-in command's answer, or None when no built-in takes it.
    fn builtin(
        &self,
        cmd: &commands::CommandCall<'_>,
        settings: &Settings,
        is_admin: bool,
        msg: &Incoming,
    ) -> Option<String> {
        let admin_only = matches!(
            cmd.name.as_str(),
            "reload_config" | "config_status" | "config_help"
        );
        if admin_only && !is_admin {
            log::info!(
                "refused /{} from user {} (not an admin)",
                cmd.name,
                msg.user_id
            );
            return Some("Sorry, that command is for admins only.".to_string());
        }
        Some(match cmd.name.as_str() {
            "start" | "help" => commands::help_text(&self.me.username, settings.handler.is_some(), is_admin),
            "ping" => "pong".to_string(),
            "status" => {
                let c = lock(&self.shared.counters).clone();
                format!(
                    "bot-{} @{}\nup {}\nupdates handled: {}\nerrors: {}",
                    self.shared.index,
                    self.me.username,
                    commands::human_duration(self.shared.started.elapsed().as_secs()),
                    c.updates,
                    c.errors
                )
            }
            "reload_config" => {
                emit(&WorkerMsg::ReloadRequest { chat_id: msg.chat_id });
                return None;
            }
            "config_status" => config_status(settings),
            "config_help" => "botfleet reads its settings from .env (see .env.example and docs/configuration.md). Edit the file and the fleet applies the change within seconds (or send /reload_config). A broken file is rejected whole and the running config stays.".to_string(),
            _ => return None,
        })
    }

    fn run_handler(&self, msg: &Incoming, update: &Value, settings: &Settings, ticket: &Ticket) {
        let reply_to = Some(msg.message_id);
        let Some(argv) = settings.handler.as_ref() else {
            let text = if msg.text.as_deref().is_some_and(|t| t.starts_with('/')) {
                "Unknown command: see /help."
            } else {
                "I only answer the built-in commands (see /help): no handler program is set up."
            };
            self.reply(msg.chat_id, text, reply_to, Some(ticket));
            return;
        };
        if argv.len() == 1 && argv[0] == BUILTIN_ECHO {
            let text = msg.text.clone().unwrap_or_default();
            if !text.trim().is_empty() {
                self.reply(msg.chat_id, &text, reply_to, Some(ticket));
            }
            return;
        }
        let mut env: Vec<(String, String)> = match self.shared.settings_env.read() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        };
        env.extend([
            ("BOT_INDEX".to_string(), self.shared.index.to_string()),
            ("BOT_USERNAME".to_string(), self.me.username.clone()),
            ("CHAT_ID".to_string(), msg.chat_id.to_string()),
            ("USER_ID".to_string(), msg.user_id.to_string()),
            (
                "MESSAGE_TEXT".to_string(),
                msg.text.clone().unwrap_or_default(),
            ),
        ]);
        let typing = || {
            if let Err(e) = self.client.send_chat_action(msg.chat_id, "typing") {
                log::debug!("typing action failed: {e}");
            }
        };
        typing();
        let run = handler::Run {
            argv,
            env: &env,
            stdin: update.to_string().into_bytes(),
            timeout: settings.handler_timeout,
            label: format!("chat {}", msg.chat_id),
            dir: None,
            clear_env: false,
            confinement: handler::Confinement::default(),
        };
        match handler::run(run, typing) {
            Ok(out) => {
                if !out.trim().is_empty() {
                    self.reply(msg.chat_id, &out, reply_to, Some(ticket));
                }
            }
            Err(e) => {
                self.shared.error();
                log::error!(
                    "handler for update {} in chat {}: {e}",
                    msg.update_id,
                    msg.chat_id
                );
                let text = match e {
                    handler::HandlerError::Timeout(_) => {
                        "⚠️ Sorry, that took too long and was stopped."
                    }
                    _ => "⚠️ Sorry, something went wrong handling that message.",
                };
                self.reply(msg.chat_id, text, reply_to, Some(ticket));
            }
        }
    }

    fn receive_file(&self, msg: &Incoming, message: &Value, kind: &str, ticket: &Ticket) {
        let reply_to = Some(msg.message_id);
        let Some(file) = media::attachment(message, kind) else {
            log::warn!("a {kind} message without a usable file was skipped");
            return;
        };
        let too_big = || {
            format!(
                "That file is too big for me: bots can download files up to {} MB.",
                media::MAX_DOWNLOAD / (1024 * 1024)
            )
        };
        if file.size.is_some_and(|s| s > media::MAX_DOWNLOAD) {
            self.reply(msg.chat_id, &too_big(), reply_to, Some(ticket));
            return;
        }
        let info = match self.client.get_file(&file.file_id) {
            Ok(i) => i,
            Err(ApiError::BadRequest { description, .. }) if description.contains("too big") => {
                self.reply(msg.chat_id, &too_big(), reply_to, Some(ticket));
                return;
            }
            Err(e) => {
                self.shared.error();
                log::warn!("getFile for a {kind} in chat {} failed: {e}", msg.chat_id);
                self.reply(
                    msg.chat_id,
                    "❌ I could not fetch your file; please send it again.",
                    reply_to,
                    Some(ticket),
                );
                return;
            }
        };
        let received = self.media.join("received");
        // Download under a hidden name, then link it into place without
        // overwriting anything (two chats may send the same name at once).
        let incoming = received.join(format!(".incoming-{}-{}", msg.update_id, file.name));
        let saved = self
            .client
            .download_file(&info.file_path, &incoming, Some(media::MAX_DOWNLOAD))
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let placed = media::place_no_clobber(&incoming, &received, &file.name)
                    .map_err(|e| e.to_string());
                if placed.is_err() {
                    if let Err(e) = std::fs::remove_file(&incoming) {
                        log::warn!("cannot remove {}: {e}", incoming.display());
                    }
                }
                placed.map(|p| (p, bytes))
            });
        match saved {
            Ok((path, bytes)) => {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
                log::info!(
                    "saved a {kind} from user {} as {}",
                    msg.user_id,
                    path.display()
                );
                self.reply(
                    msg.chat_id,
                    &format!("📥 Saved {name} ({bytes} bytes)."),
                    reply_to,
                    Some(ticket),
                );
            }
            Err(e) => {
                self.shared.error();
                log::error!("cannot save a {kind} from user {}: {e}", msg.user_id);
                self.reply(
                    msg.chat_id,
                    "❌ I could not save your file (the server's disk may be full).",
                    reply_to,
                    Some(ticket),
                );
            }
        }
    }
}

fn config_status(settings: &Settings) -> String {
    let list = |v: &[i64]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.len().to_string()
        }
    };
    let env = std::env::vars()
        .filter(|(k, _)| crate::config::is_known_key(k))
        .count();
    format!(
        "settings known to botfleet in this worker's environment: {env}\n\
         API: {}\npoll timeout: {} s\nallowed users: {}\nadmins: {}\nmedia recipients: {}\n\
         handler: {}\nhandler timeout: {} s, concurrency {}\nsend rate: {}/s per chat, {}/s per bot",
        settings.api_url,
        settings.poll_timeout_secs,
        if settings.allowed_users.is_empty() { "everyone".to_string() } else { settings.allowed_users.len().to_string() },
        list(&settings.admin_users),
        list(settings.recipients()),
        if settings.handler.is_some() { "set" } else { "none" },
        settings.handler_timeout.as_secs(),
        settings.handler_concurrency,
        settings.send_rate_per_chat,
        settings.send_rate_per_bot,
    )
}
