//! A worker: the process that serves one bot token. It takes the token's
//! poller lock, calls getMe, says READY, then long-polls getUpdates and
//! handles each update before the offset that confirms it is persisted.
//! Threads: the poll loop (main), a heartbeat thread, a signal thread and a
//! stdin reader (parent messages; EOF means the parent is gone). Any of the
//! last three may end the process, but only between two updates or while
//! the loop waits on the network, so an update is never half confirmed.
//! It must never poll before it holds the lock, confirm an update it has not
//! handled, or pass its token to anything but the Bot API client.

pub mod commands;

use crate::config::Settings;
use crate::ipc::{Counters, ParentMsg, WorkerMsg};
use crate::lock::TokenLock;
use crate::state;
use crate::supervisor::machine::{EXIT_PERMANENT, EXIT_TOKEN_REJECTED};
use crate::supervisor::HEARTBEAT_PERIOD;
use crate::telegram::{ApiError, BotInfo, Client};
use crate::token::Token;
use commands::{parse_command, parse_update, Incoming, Skip};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// State shared by the worker's threads.
struct Shared {
    stopping: AtomicBool,
    /// Held by the poll loop while it handles an update and persists the
    /// offset; an exit waits for it (briefly) so no update is torn.
    busy: Mutex<()>,
    counters: Mutex<Counters>,
    /// Milliseconds since `started` when the poll loop last made progress.
    alive_ms: AtomicU64,
    started: Instant,
    settings: RwLock<Settings>,
    index: u32,
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
        // The data are counters; a panicked holder cannot leave them torn.
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    fn mark_alive(&self) {
        self.alive_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn settings(&self) -> Settings {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
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

/// Ends the process: between updates, or after at most 500 ms of waiting
/// for the update in hand. What was not confirmed comes again to the next
/// worker.
fn exit_now(shared: &Shared, why: &str, code: i32) -> ! {
    shared.stopping.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match shared.busy.try_lock() {
            Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => break,
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::sync::TryLockError::WouldBlock) => break,
        }
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

/// Entry point of `botfleet worker` (started by the supervisor only).
pub fn main() -> i32 {
    let index: u32 = std::env::var("BOT_INDEX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    crate::logging::init(&format!("Worker bot-{index}"), &spec);
    if index == 0 {
        log::error!("`botfleet worker` is started by `botfleet run`, not by hand");
        return crate::cli::exit::USAGE;
    }
    let token = match std::env::var("BOT_TOKEN").map(|t| Token::parse(&t)) {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => fatal(&format!("BOT_TOKEN is malformed: {e}"), EXIT_PERMANENT),
        Err(_) => fatal("BOT_TOKEN is not set", EXIT_PERMANENT),
    };
    crate::logging::add_secret(token.secret());
    if let Err(e) = crate::sys::die_with_parent() {
        log::warn!("cannot ask to die with the supervisor: {e}");
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
    let shared = Arc::new(Shared {
        stopping: AtomicBool::new(false),
        busy: Mutex::new(()),
        counters: Mutex::new(Counters::default()),
        alive_ms: AtomicU64::new(0),
        started: Instant::now(),
        settings: RwLock::new(settings.clone()),
        index,
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
        ParentMsg::Settings { env } => {
            let map: std::collections::HashMap<String, String> = env.into_iter().collect();
            let lookup = |k: &str| map.get(k).cloned().or_else(|| std::env::var(k).ok());
            match Settings::from_lookup(&lookup) {
                Ok(s) => {
                    crate::logging::set_filter(&s.rust_log);
                    if let Ok(mut cur) = shared.settings.write() {
                        *cur = s;
                    }
                    log::info!("settings updated");
                }
                Err(e) => log::error!("new settings rejected: {e}"),
            }
        }
        ParentMsg::ReloadResult { chat_id, text } => {
            if let Ok(tx) = REPLIES.lock() {
                if let Some(tx) = tx.as_ref() {
                    if tx.send((chat_id, text)).is_err() {
                        log::warn!("cannot pass the reload result on");
                    }
                }
            }
        }
    }
}

/// Where reload results from the supervisor go: the poll loop's side
/// channel, drained between polls.
static REPLIES: Mutex<Option<std::sync::mpsc::Sender<(i64, String)>>> = Mutex::new(None);

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

/// What the poll loop needs to handle updates.
struct Bot {
    client: Client,
    me: BotInfo,
    shared: Arc<Shared>,
    state_dir: PathBuf,
    last_sync: Instant,
}

fn run(shared: Arc<Shared>, token: Token, settings: Settings) -> i32 {
    let bot_id = token.bot_id();
    if let Err(e) = std::fs::create_dir_all(&settings.state_dir) {
        fatal(
            &format!(
                "cannot create STATE_DIR {}: {e}",
                settings.state_dir.display()
            ),
            EXIT_PERMANENT,
        );
    }
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
            Err(ApiError::TokenRejected { .. }) => fatal(
                "token rejected by Telegram (401 Unauthorized): check it with @BotFather",
                EXIT_TOKEN_REJECTED,
            ),
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
    emit(&WorkerMsg::Ready {
        bot_id: me.id,
        username: me.username.clone(),
    });
    log::info!("ready as @{} (bot id {})", me.username, me.id);
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    if let Ok(mut slot) = REPLIES.lock() {
        *slot = Some(reply_tx);
    }
    let mut bot = Bot {
        client,
        me,
        shared: Arc::clone(&shared),
        state_dir: settings.state_dir.clone(),
        last_sync: Instant::now(),
    };
    let mut offset = match state::read_offset(&bot.state_dir, bot_id) {
        Ok(o) => o,
        Err(e) => {
            log::warn!("{e}; starting from the oldest pending update");
            None
        }
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut conflicts = 0u32;
    loop {
        shared.mark_alive();
        while let Ok((chat_id, text)) = reply_rx.try_recv() {
            bot.reply(chat_id, &text, None);
        }
        let poll_timeout = shared.settings().poll_timeout_secs;
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
                for update in updates {
                    let Some(id) = update["update_id"].as_i64() else {
                        log::warn!("an update without update_id was skipped");
                        continue;
                    };
                    let busy = lock(&shared.busy);
                    if shared.stopping.load(Ordering::SeqCst) {
                        drop(busy);
                        std::thread::sleep(Duration::from_secs(1));
                        return 0;
                    }
                    bot.handle(&update);
                    offset = Some(id + 1);
                    bot.persist_offset(id + 1);
                    drop(busy);
                    shared.mark_alive();
                }
            }
            Err(ApiError::TokenRejected { .. }) => fatal(
                "token rejected by Telegram (401 Unauthorized): check it with @BotFather",
                EXIT_TOKEN_REJECTED,
            ),
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
                lock(&shared.counters).errors += 1;
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

impl Bot {
    fn persist_offset(&mut self, next: i64) {
        // fsync at most once a second: a power loss repeats at most the
        // last second's updates, and the poll loop is not slowed by disks.
        let sync = self.last_sync.elapsed() >= Duration::from_secs(1);
        match state::write_offset(&self.state_dir, self.me.id, next, sync) {
            Ok(()) => {
                if sync {
                    self.last_sync = Instant::now();
                }
            }
            Err(e) => {
                lock(&self.shared.counters).errors += 1;
                log::error!(
                    "cannot persist the offset ({e}); handled updates may repeat after a restart"
                );
            }
        }
    }

    fn handle(&mut self, update: &serde_json::Value) {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                match parse_update(update) {
                    Ok(msg) => self.on_message(&msg),
                    Err(Skip::NotAMessage) => {
                        log::debug!("skipping an update that is not a message")
                    }
                    Err(Skip::Malformed(why)) => log::warn!("skipping a malformed update: {why}"),
                }
            }));
        let mut c = lock(&self.shared.counters);
        c.updates += 1;
        c.last_update_ms = Some(now_ms());
        if outcome.is_err() {
            c.errors += 1;
            log::error!("handling an update panicked; it was skipped");
        }
    }

    fn on_message(&mut self, msg: &Incoming) {
        let settings = self.shared.settings();
        let allowed = settings.is_allowed(msg.user_id);
        let is_admin = settings.is_admin(msg.user_id);
        let command = msg
            .text
            .as_deref()
            .and_then(|t| parse_command(t, &self.me.username));
        let reply_to = Some(msg.message_id);
        if let Some(cmd) = &command {
            if cmd.name == "whoami" {
                let text = format!(
                    "Your user id: {}\nThis chat's id: {}",
                    msg.user_id, msg.chat_id
                );
                self.reply(msg.chat_id, &text, reply_to);
                return;
            }
        }
        if !allowed {
            log::info!(
                "refused a message from user {} (not in ALLOWED_USER_IDS)",
                msg.user_id
            );
            self.reply(
                msg.chat_id,
                "Sorry, this bot is private. Send /whoami and give your id to its operator.",
                reply_to,
            );
            return;
        }
        let Some(cmd) = command else {
            self.reply(
                msg.chat_id,
                "I only answer the built-in commands for now: see /help.",
                reply_to,
            );
            return;
        };
        let text = match cmd.name.as_str() {
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
            "reload_config" | "config_status" | "config_help" if !is_admin => {
                "Sorry, that command is for admins only.".to_string()
            }
            "reload_config" => {
                emit(&WorkerMsg::ReloadRequest { chat_id: msg.chat_id });
                return;
            }
            "config_status" => format!(
                "poll timeout: {} s\nallowed users: {}\nadmins: {}\nhandler: {}",
                settings.poll_timeout_secs,
                if settings.allowed_users.is_empty() { "everyone".to_string() } else { settings.allowed_users.len().to_string() },
                settings.admin_users.len(),
                if settings.handler.is_some() { "set" } else { "none" },
            ),
            "config_help" => "botfleet reads its settings from .env (see .env.example). Edit it and the fleet picks the change up within seconds, or send /reload_config.".to_string(),
            _ => "Unknown command: see /help.".to_string(),
        };
        self.reply(msg.chat_id, &text, reply_to);
    }

    /// Sends a reply, honouring 429 retry_after and retrying transient
    /// failures a few times; a reply that cannot be sent is logged.
    fn reply(&mut self, chat_id: i64, text: &str, reply_to: Option<i64>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for attempt in 1..=6 {
            match self.client.send_message(chat_id, text, reply_to) {
                Ok(_) => return,
                Err(e) if attempt < 6 && (e.is_transient() || e.retry_after().is_some()) => {
                    std::thread::sleep(e.retry_after().unwrap_or_else(|| backoff.wait()));
                }
                Err(e) => {
                    lock(&self.shared.counters).errors += 1;
                    log::warn!("cannot reply in chat {chat_id}: {e}");
                    return;
                }
            }
        }
    }
}
