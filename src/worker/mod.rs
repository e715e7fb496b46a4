//! A worker: the process that serves one bot token. This file is its
//! start-up: the poller lock, getMe, the inbox (replaying what is not done),
//! the send path, the scheduler, READY, then the poll loop (`poll`). Each
//! update is written to the inbox before the next offset confirms it to
//! Telegram, then scheduled in its chat's queue (`dispatch`) and handled by
//! the bot's logic (`bot`); its ticket (`track`) records it done once its
//! replies are out (`send`).
//!
//! Threads: the poll loop (main), the job pool, the senders, and one
//! control thread (`control`): a poll(2) over stdin (parent messages; EOF means the
//! parent is gone) and the signal pipe, which also sends the heartbeats
//! and runs the outbox. It must never poll before it holds the
//! lock, confirm an update that is not in the inbox, or pass its token to
//! anything but the Bot API client.

pub mod bot;
pub mod calls;
pub mod commands;
mod control;
pub mod dispatch;
pub mod handler;
pub mod inbox;
pub mod media;
pub mod outbox;
pub mod persistent;
mod poll;
pub mod protocol;
pub mod respond;
pub mod send;
pub mod track;

use crate::config::Settings;
use crate::ipc::{write_heartbeat, Counters, ParentMsg, WorkerMsg};
use crate::ipc::{EXIT_PERMANENT, EXIT_TOKEN_REJECTED, HEARTBEAT_PERIOD};
use crate::lock::TokenLock;
use crate::state;
use crate::telegram::{ApiError, Client};
use crate::token::Token;
use bot::Bot;
pub use bot::BUILTIN_ECHO;
use control::{read_start, start_control, ParentPipe};
use inbox::Inbox;
use poll::Backoff;
use send::{Content, Outgoing, RateSet, Rates, SendPath};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How long a worker whose supervisor is gone waits for the updates in
/// hand (DESIGN: it stops within 2 s).
const ORPHAN_GRACE: Duration = Duration::from_millis(1500);

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
    rates: Arc<Rates>,
    /// The inbox, once the poller lock is held.
    inbox: OnceLock<Mutex<Inbox>>,
    bot_id: u64,
    pool: OnceLock<dispatch::Pool>,
    /// The send path, once the bot is up (parent messages use it too).
    send: OnceLock<SendPath>,
    /// The bot, once it is up (a stop ends its persistent handler).
    bot: OnceLock<Arc<Bot>>,
    /// The outbox, put here once the bot is up and taken by the control
    /// thread at its next wake-up. Not an mpsc channel: its first block
    /// (31 slots of an `Outbox`, ~10 kB, zeroed) stayed in every worker.
    outbox: Mutex<Option<outbox::Outbox>>,
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

    /// Alive while it waits `d` for `what` (`lock`, `conflict`,
    /// `retry_after`): heartbeats go on meanwhile and say what it waits for.
    fn waiting_for(&self, what: &str, d: Duration) {
        lock(&self.counters).waiting = Some(what.to_string());
        let until = self.started.elapsed().saturating_add(d);
        self.alive_ms
            .store(until.as_millis() as u64, Ordering::Relaxed);
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
    emit_line(msg.encode().as_bytes());
}

/// The worker's stdout (its end of the supervisor's socket pair), written
/// one whole line at a time under the lock. Not `std::io::stdout()`: its
/// line buffer (1 kB a worker) would only copy each line once more.
static STDOUT: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Writes one encoded line (ending in a newline) to the supervisor.
fn emit_line(line: &[u8]) {
    let mut out = lock(&STDOUT);
    if out.is_none() {
        *out = crate::sys::dup_stdio(1).ok().map(std::fs::File::from);
    }
    let written = match out.as_mut() {
        Some(f) => f.write_all(line),
        None => Err(std::io::Error::other("no stdout")),
    };
    if written.is_err() {
        drop(out);
        log::warn!("the supervisor is gone (stdout closed); exiting");
        std::process::exit(0);
    }
}

fn rate_set(s: &Settings) -> RateSet {
    RateSet {
        per_chat: s.send_rate_per_chat,
        per_bot: s.send_rate_per_bot,
        per_group: s.send_rate_per_group,
    }
}

/// Ends the process once the updates in hand are done, or after `grace`:
/// no new update starts; what is not done stays in the inbox and is handled
/// after the restart. Handlers die with us (PR_SET_PDEATHSIG).
#[inline(never)]
fn exit_now(shared: &Shared, why: &str, code: i32, grace: Duration) -> ! {
    let stop_started = Instant::now();
    shared.stopping.store(true, Ordering::SeqCst);
    if let Some(pool) = shared.pool.get() {
        pool.stop();
        let in_hand = pool.in_hand();
        if in_hand > 0 {
            log::info!("{why}: finishing {in_hand} updates in hand");
        }
        if !pool.wait_idle(grace) {
            log::warn!(
                "{} updates still in hand after {} ms: they stay in the inbox and are handled again after the restart",
                pool.in_hand(),
                grace.as_millis()
            );
        }
    }
    if let Some(bot) = shared.bot.get() {
        // EOF, then SIGTERM, then SIGKILL: bounded by what is left of the
        // grace (the supervisor SIGKILLs at SHUTDOWN_TIMEOUT; an orphaned
        // worker stops within 2 s).
        let left = grace.saturating_sub(stop_started.elapsed()) / 2;
        bot.stop_handler(left.clamp(Duration::from_millis(100), persistent::STOP_GRACE));
    }
    if let Some(inbox) = shared.inbox.get() {
        let mut ib = lock(inbox);
        if let Err(e) = ib.sync() {
            log::warn!("cannot sync the inbox: {e}");
        }
        if let Some(next) = ib.next_offset() {
            let dir = shared.settings().state_dir.clone();
            if let Err(e) = state::write_offset(&dir, shared.bot_id, next, true) {
                log::debug!("cannot write the offset file: {e}");
            }
        }
        // Held to the end: no done record is half written at exit.
        log::info!("stopping: {why}");
        std::process::exit(code);
    }
    log::info!("stopping: {why}");
    std::process::exit(code);
}

/// The grace on SIGTERM: SHUTDOWN_TIMEOUT less a margin, so the worker
/// exits before the supervisor's SIGKILL.
fn stop_grace(shared: &Shared) -> Duration {
    shared
        .settings()
        .shutdown_timeout
        .saturating_sub(Duration::from_millis(1000))
        .max(Duration::from_millis(500))
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
/// Start-up runs in `start_up`, whose frames are gone by the time the poll
/// loop runs: the loop's stack starts right below this small frame, and
/// what start-up touched deeper goes back to the kernel.
#[inline(never)]
pub fn main() -> i32 {
    let up = match start_up() {
        Ok(up) => up,
        Err(code) => return code,
    };
    // Start-up (START's parse, settings, getMe, the inbox's replay) went
    // deeper into the main stack than the poll loop ever does: those pages
    // go back to the kernel instead of staying in every idle worker.
    match crate::sys::release_main_stack_below_here() {
        Ok(n) => log::trace!("released {n} bytes of start-up stack"),
        Err(e) => log::debug!("cannot release the start-up stack: {e}"),
    }
    let code = poll::poll_loop(&up.bot);
    drop(up.lock);
    code
}

/// What start-up leaves for the poll loop: the bot, and the poller lock,
/// held for the worker's life.
struct Up {
    bot: Arc<Bot>,
    lock: TokenLock,
}

/// Everything before the first getUpdates; `Err` is an exit code.
#[inline(never)]
fn start_up() -> Result<Up, i32> {
    let index: Option<u32> = std::env::var("BOT_INDEX").ok().and_then(|v| v.parse().ok());
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    crate::logging::init(Some(index.unwrap_or(u32::MAX)), &spec);
    let Some(index) = index else {
        log::error!("`botfleet worker` is started by `botfleet run`, not by hand");
        return Err(crate::exit::USAGE);
    };
    // Nothing a handler could read through /proc (environ, memory).
    if let Err(e) = crate::sys::set_not_dumpable() {
        log::warn!("cannot make the worker non-dumpable: {e}");
    }
    // The first line on stdin: the token and the whole environment. The
    // worker takes no setting from its own environment.
    let mut parent_pipe = match ParentPipe::open() {
        Ok(p) => p,
        Err(e) => fatal(&format!("cannot read stdin: {e}"), EXIT_PERMANENT),
    };
    let (token, env) = match read_start(&mut parent_pipe) {
        Ok(start) => start,
        Err(e) => fatal(
            &format!("no START from the supervisor: {e}"),
            EXIT_PERMANENT,
        ),
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
        return Err(0);
    }
    let settings = match settings_of(&env) {
        Ok(s) => s,
        Err(e) => fatal(&format!("bad settings: {e}"), EXIT_PERMANENT),
    };
    // The log filter of `.env`'s RUST_LOG, now that START has brought it.
    crate::logging::set_filter(&settings.rust_log);
    if let Err(e) = std::fs::create_dir_all(&settings.state_dir) {
        fatal(
            &format!(
                "cannot create STATE_DIR {}: {e}",
                settings.state_dir.display()
            ),
            EXIT_PERMANENT,
        );
    }
    let shared = Arc::new(Shared {
        stopping: AtomicBool::new(false),
        counters: Mutex::new(Counters::default()),
        alive_ms: AtomicU64::new(0),
        started: Instant::now(),
        rates: Rates::new(rate_set(&settings)),
        settings: RwLock::new(Arc::new(settings)),
        settings_env: RwLock::new(env),
        index,
        inbox: OnceLock::new(),
        bot_id: token.bot_id(),
        pool: OnceLock::new(),
        send: OnceLock::new(),
        bot: OnceLock::new(),
        outbox: Mutex::new(None),
    });
    let poll_timeout_secs = shared.settings().poll_timeout_secs;
    if let Err(e) = start_control(&shared, parent_pipe, poll_timeout_secs) {
        fatal(&format!("cannot start threads: {e}"), 1);
    }
    Ok(run(shared, token))
}

/// Settings from the environment START or SETTINGS carried (only that: a
/// key missing there is unset). The lookup map is gone when this returns.
fn settings_of(env: &[(String, String)]) -> Result<Settings, crate::config::ConfigError> {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Settings::from_lookup(&|k: &str| map.get(k).map(|v| (*v).to_string()))
}

/// The bot's start: the poller lock, getMe, directories, the send path,
/// the outbox, the inbox and its replay. Returns the bot ready to poll.
fn run(shared: Arc<Shared>, token: Token) -> Up {
    let settings = shared.settings();
    let bot_id = token.bot_id();
    let lock_path = settings.state_dir.join(format!("bot-{bot_id}.lock"));
    let lock_wait = Duration::from_secs(86_400);
    let poller_lock = match TokenLock::acquire(&lock_path, lock_wait, || {
        shared.waiting_for("lock", lock_wait);
        log::warn!("another process polls this bot; waiting for it to exit before polling")
    }) {
        Ok(l) => l,
        Err(e) => fatal(&format!("cannot take the poller lock: {e}"), EXIT_PERMANENT),
    };
    lock(&shared.counters).waiting = None;
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
                shared.waiting_for("retry_after", wait);
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
    // The outbox only: `received/` and `sent/` are made when the first file
    // comes or goes (each inode a start creates costs).
    if let Err(e) = std::fs::create_dir_all(&media) {
        fatal(
            &format!("cannot create {}: {e}", media.display()),
            EXIT_PERMANENT,
        );
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
    let the_outbox = outbox::Outbox::new(media.clone(), send.clone(), move || {
        recipients_shared.settings().recipients().to_vec()
    });
    *lock(&shared.outbox) = Some(the_outbox);
    let opened = open_inbox(&settings, bot_id);
    let pending = opened.pending;
    if shared.inbox.set(Mutex::new(opened.inbox)).is_err() {
        log::debug!("the inbox was already open");
    }
    shared
        .pool
        .get_or_init(|| dispatch::Pool::new(settings.handler_concurrency));
    if shared.send.set(send.clone()).is_err() {
        log::debug!("the send path was already set");
    }
    // The handler's own directory: its working directory and BOT_DATA_DIR,
    // kept across restarts, never wiped. Made here for a program handler
    // (files may be put there before its first update); with a built-in
    // one, not until a program handler first starts (`Bot::confinement`):
    // each inode a start creates costs. STATE_DIR exists.
    let data_dir = settings
        .state_dir
        .canonicalize()
        .unwrap_or_else(|_| settings.state_dir.clone())
        .join("data")
        .join(format!("bot-{}", shared.index));
    let program = settings
        .handler
        .as_ref()
        .is_some_and(|argv| !(argv.len() == 1 && argv[0] == BUILTIN_ECHO));
    if program {
        if let Err(e) = std::fs::create_dir_all(&data_dir) {
            log::error!(
                "cannot create the handler's directory {}: {e}",
                data_dir.display()
            );
        }
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
        data_dir,
        confinement: Mutex::new(None),
        persistent: Mutex::new(None),
    });
    // A persistent handler starts with the bot, so its start-up is not
    // paid by the first update.
    bot.persistent(&settings);
    if shared.bot.set(Arc::clone(&bot)).is_err() {
        log::debug!("the bot was already set");
    }
    if !pending.is_empty() {
        log::info!(
            "{} updates in the inbox were not done: handling them again, in order",
            pending.len()
        );
    }
    for entry in pending {
        bot.take(
            entry.id,
            bot::chat_key(&entry.update),
            entry.update.to_string(),
        );
    }
    Up {
        bot,
        lock: poller_lock,
    }
}

/// Opens the bot's inbox for this TELEGRAM_API_URL. A new inbox starts
/// from the offset file (a version before the inbox wrote only that); an
/// inbox of another URL is set aside and the bot starts afresh.
fn open_inbox(settings: &Settings, bot_id: u64) -> inbox::Opened {
    let dir = inbox::dir(&settings.state_dir, bot_id);
    let fresh = !dir.join("journal").exists();
    let mut opened = match Inbox::open(&dir, &settings.api_url) {
        Ok(o) => o,
        Err(e) => fatal(&format!("cannot open the inbox: {e}"), EXIT_PERMANENT),
    };
    if opened.torn {
        log::warn!("the inbox's last line was torn (a kill during a write): cut off; that batch was not confirmed and comes again");
    }
    if let Some(url) = &opened.other_url {
        log::warn!(
            "the inbox and offset belonged to another TELEGRAM_API_URL ({url}): this bot starts afresh with {} (the old journal is kept as journal.other-url)",
            settings.api_url
        );
    } else if fresh {
        match state::read_offset(&settings.state_dir, bot_id) {
            Ok(Some(next)) => {
                if let Err(e) = opened.inbox.append(Vec::new(), next, now_ms()) {
                    fatal(&format!("cannot write the inbox: {e}"), 1);
                }
            }
            Ok(None) => {}
            Err(e) => log::warn!("{e}; starting from the oldest pending update"),
        }
    }
    opened
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(c: &Counters, depth: u64, oldest: Option<u64>, bytes: u64) -> String {
        let mut out = Vec::new();
        write_heartbeat(&mut out, c, depth, oldest, bytes).expect("a Vec takes any length");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    #[test]
    fn the_hand_written_heartbeat_decodes_as_the_general_one() {
        let empty = Counters::default();
        let full = Counters {
            updates: 12,
            errors: 3,
            last_poll_ok_ms: Some(1_764_000_000_123),
            last_update_ms: Some(7),
            conflict: true,
            waiting: Some("retry_after".into()),
            inbox_depth: 0,
            oldest_pending_ms: None,
            journal_bytes: 0,
            fetch_paused: Some("cannot write \"x\"\n\\ é".into()),
        };
        for (c, depth, oldest, bytes) in [(&empty, 0, None, 0), (&full, 5, Some(99), 4096)] {
            let text = line(c, depth, oldest, bytes);
            assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
            let mut want = c.clone();
            want.inbox_depth = depth;
            want.oldest_pending_ms = oldest;
            want.journal_bytes = bytes;
            assert_eq!(
                WorkerMsg::decode(&text).expect("decodes"),
                WorkerMsg::Heartbeat(want.clone())
            );
            let general: serde_json::Value =
                serde_json::from_str(&WorkerMsg::Heartbeat(want).encode()).expect("JSON");
            let ours: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(ours, general);
        }
    }

    #[test]
    fn a_heartbeat_too_long_for_the_stack_buffer_is_an_error_not_a_cut_line() {
        let c = Counters {
            fetch_paused: Some("x".repeat(600)),
            ..Counters::default()
        };
        let mut buf = [0u8; 512];
        let mut out = std::io::Cursor::new(&mut buf[..]);
        assert!(write_heartbeat(&mut out, &c, 0, None, 0).is_err());
        assert!(line(&c, 0, None, 0).contains(&"x".repeat(600)));
    }
}
