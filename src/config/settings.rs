//! The typed settings: every setting of DESIGN.md except the bot tokens,
//! parsed and range-checked from a key lookup. The supervisor builds them from
//! `.env` plus its environment (through `Config`); a worker builds them with
//! `Settings::from_lookup` from the environment the supervisor sent it
//! (START, then SETTINGS), never from its own. Defaults live here and
//! nowhere else. (Past 700 lines: one parse-and-range-check block per
//! setting of DESIGN.md's table, about thirty of them; splitting the table
//! would scatter the defaults this file exists to keep in one place.)

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::error::{ConfigError, Location, Problem};
use super::is_secret_key;
use super::words::{shell_operator, split_words};

/// The default Bot API base.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// ALLOWED_UPDATES by default: the update types botfleet handles.
pub const DEFAULT_ALLOWED_UPDATES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "callback_query",
    "inline_query",
    "chosen_inline_result",
    "my_chat_member",
];

/// Every update type the Bot API knows (ALLOWED_UPDATES may name these).
const UPDATE_TYPES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
];

/// Every setting except the tokens, typed. `Debug` hides HEALTH_AUTH_TOKEN.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// TELEGRAM_API_URL without a trailing slash.
    pub api_url: String,
    /// MEDIA_TMP_LOCATION: root of the per-bot `bot-N/` directories.
    pub media_dir: PathBuf,
    /// CLEAN_UP_MEDIADIR: wipe `bot-N/` when that worker starts.
    pub clean_up_media: bool,
    /// STATE_DIR: offsets and the bot-index registry.
    pub state_dir: PathBuf,
    /// LOCK_FILE: the single-instance lock, holding the supervisor's PID.
    pub lock_file: PathBuf,
    /// BOT_TOKEN_MONITOR_INTERVAL: how often the watcher stats `.env`;
    /// zero turns the watcher off.
    pub monitor_interval: Duration,
    /// CONFIG_RELOAD_DEBOUNCE: how long the file must be stable.
    pub reload_debounce: Duration,
    /// ALLOWED_USER_IDS: empty means everyone.
    pub allowed_users: Vec<i64>,
    /// ADMIN_USER_IDS.
    pub admin_users: Vec<i64>,
    /// OWNER_USER_ID: an admin who also gets fleet alerts.
    pub owner_user: Option<i64>,
    /// MEDIA_RECIPIENTS, or the admins and the owner (deduplicated) when unset.
    pub media_recipients: Vec<i64>,
    /// BOT_HANDLER split into program and arguments; `None` when unset.
    pub handler: Option<Vec<String>>,
    /// HANDLER_TIMEOUT_SECS: the limit of one handler run.
    pub handler_timeout: Duration,
    /// HANDLER_CONCURRENCY: handler runs at once per worker, at least 1.
    pub handler_concurrency: usize,
    /// BOT_HANDLER_MODE=persistent: one long-lived protocol-1 handler per
    /// worker instead of one run per update (`exec`, the default).
    pub handler_persistent: bool,
    /// HANDLER_USER: when botfleet runs as root, the user handlers run as.
    pub handler_user: Option<String>,
    /// PORT of the health server.
    pub port: u16,
    /// HEALTH_BIND: the address the health server listens on.
    pub health_bind: IpAddr,
    /// HEALTH_AUTH_TOKEN: bearer token for `POST /restart`. Secret.
    pub health_auth_token: Option<String>,
    /// POLL_TIMEOUT_SECS: getUpdates long-poll timeout, 0..=50.
    pub poll_timeout_secs: u64,
    /// SEND_RATE_PER_CHAT: messages a second to one chat; 0 = unpaced.
    pub send_rate_per_chat: f64,
    /// SEND_RATE_PER_BOT: messages a second from one bot; 0 = unpaced.
    pub send_rate_per_bot: f64,
    /// SEND_RATE_PER_GROUP: messages a second to one group or channel
    /// (Telegram allows about 20 a minute); 0 = unpaced.
    pub send_rate_per_group: f64,
    /// INBOX_MAX_UPDATES: updates not done at which a worker stops fetching.
    pub inbox_max_updates: u64,
    /// ALLOWED_UPDATES: the update types asked of Telegram.
    pub allowed_updates: Vec<String>,
    /// SHUTDOWN_TIMEOUT: SIGTERM to SIGKILL grace for workers.
    pub shutdown_timeout: Duration,
    /// RESTART_DELAY: the first backoff delay.
    pub restart_delay: Duration,
    /// RESTART_MAX_DELAY: the backoff cap, never below `restart_delay`.
    pub restart_max_delay: Duration,
    /// MAX_RESTARTS: restarts in a row before a worker is `failed`;
    /// 0 means never give up.
    pub max_restarts: u32,
    /// RESTART_RESET_AFTER_SECS: a worker up this long counts as stable.
    pub restart_reset_after: Duration,
    /// UNHEALTHY_THRESHOLD_SECS: no successful getUpdates for this long
    /// makes a worker unhealthy.
    pub unhealthy_threshold: Duration,
    /// KEEPALIVE_URL: an http:// or https:// URL to ping; `None` when unset.
    pub keepalive_url: Option<String>,
    /// HEARTBEAT_INTERVAL_SECS: how often KEEPALIVE_URL is pinged.
    pub heartbeat_interval: Duration,
    /// RUST_LOG: the log filter.
    pub rust_log: String,
    /// LOG_FORMAT: text lines (the default) or one JSON object a line.
    pub log_format: LogFormat,
    /// LOG_FILE: write the log there instead of stderr; `None` when unset.
    pub log_file: Option<PathBuf>,
    /// LOG_MAX_BYTES: LOG_FILE is rotated when it would grow past this.
    pub log_max_bytes: u64,
    /// LOG_KEEP: rotated files kept (`file.1` ... `file.N`).
    pub log_keep: u32,
    /// WORKER_MAX_RSS_MB in bytes: a worker above it is restarted.
    pub worker_max_rss: Option<u64>,
    /// HANDLER_MAX_MEMORY_MB in bytes: each handler's address-space limit.
    pub handler_max_memory: Option<u64>,
}

/// LOG_FORMAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            api_url: DEFAULT_API_URL.to_string(),
            media_dir: PathBuf::from("./media"),
            clean_up_media: false,
            state_dir: PathBuf::from("./state"),
            lock_file: PathBuf::from("bot.lock"),
            monitor_interval: Duration::from_millis(2000),
            reload_debounce: Duration::from_millis(2000),
            allowed_users: Vec::new(),
            admin_users: Vec::new(),
            owner_user: None,
            media_recipients: Vec::new(),
            handler: None,
            handler_timeout: Duration::from_secs(30),
            handler_concurrency: 4,
            handler_persistent: false,
            handler_user: None,
            port: 8001,
            health_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            health_auth_token: None,
            poll_timeout_secs: 30,
            send_rate_per_chat: 1.0,
            send_rate_per_bot: 30.0,
            send_rate_per_group: 0.33,
            inbox_max_updates: 100_000,
            allowed_updates: DEFAULT_ALLOWED_UPDATES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            shutdown_timeout: Duration::from_millis(10_000),
            restart_delay: Duration::from_millis(5000),
            restart_max_delay: Duration::from_millis(300_000),
            max_restarts: 10,
            restart_reset_after: Duration::from_secs(60),
            unhealthy_threshold: Duration::from_secs(300),
            keepalive_url: None,
            heartbeat_interval: Duration::from_secs(300),
            rust_log: "info".to_string(),
            log_format: LogFormat::Text,
            log_file: None,
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 5,
            worker_max_rss: None,
            handler_max_memory: None,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("api_url", &self.api_url)
            .field("media_dir", &self.media_dir)
            .field("clean_up_media", &self.clean_up_media)
            .field("state_dir", &self.state_dir)
            .field("lock_file", &self.lock_file)
            .field("monitor_interval", &self.monitor_interval)
            .field("reload_debounce", &self.reload_debounce)
            .field("allowed_users", &self.allowed_users)
            .field("admin_users", &self.admin_users)
            .field("owner_user", &self.owner_user)
            .field("media_recipients", &self.media_recipients)
            .field("handler", &self.handler)
            .field("handler_timeout", &self.handler_timeout)
            .field("handler_concurrency", &self.handler_concurrency)
            .field("handler_persistent", &self.handler_persistent)
            .field("handler_user", &self.handler_user)
            .field("port", &self.port)
            .field("health_bind", &self.health_bind)
            .field(
                "health_auth_token",
                &self.health_auth_token.as_ref().map(|_| "***"),
            )
            .field("poll_timeout_secs", &self.poll_timeout_secs)
            .field("send_rate_per_chat", &self.send_rate_per_chat)
            .field("send_rate_per_bot", &self.send_rate_per_bot)
            .field("send_rate_per_group", &self.send_rate_per_group)
            .field("inbox_max_updates", &self.inbox_max_updates)
            .field("allowed_updates", &self.allowed_updates)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("restart_delay", &self.restart_delay)
            .field("restart_max_delay", &self.restart_max_delay)
            .field("max_restarts", &self.max_restarts)
            .field("restart_reset_after", &self.restart_reset_after)
            .field("unhealthy_threshold", &self.unhealthy_threshold)
            .field(
                "keepalive_url",
                &self
                    .keepalive_url
                    .as_ref()
                    .map(|u| super::redact("KEEPALIVE_URL", u)),
            )
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("rust_log", &self.rust_log)
            .field("log_format", &self.log_format)
            .field("log_file", &self.log_file)
            .field("log_max_bytes", &self.log_max_bytes)
            .field("log_keep", &self.log_keep)
            .field("worker_max_rss", &self.worker_max_rss)
            .field("handler_max_memory", &self.handler_max_memory)
            .finish()
    }
}

impl Settings {
    /// Parses every setting except the tokens from `lookup` (a worker passes
    /// its own environment). A key that is unset or empty takes its default.
    /// Problems name the environment as their source.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let located = |key: &str| lookup(key).map(|v| (v, Location::Environment));
        let (settings, problems, _warnings) = parse(&located);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Who outbox files are sent to: MEDIA_RECIPIENTS, or the admins and the
    /// owner when it is unset.
    pub fn recipients(&self) -> &[i64] {
        &self.media_recipients
    }

    /// True for the owner and the admins.
    pub fn is_admin(&self, user_id: i64) -> bool {
        self.owner_user == Some(user_id) || self.admin_users.contains(&user_id)
    }

    /// True when the bot serves this user: ALLOWED_USER_IDS is empty, lists
    /// the user, or the user is an admin or the owner (who are always served).
    pub fn is_allowed(&self, user_id: i64) -> bool {
        self.allowed_users.is_empty()
            || self.allowed_users.contains(&user_id)
            || self.is_admin(user_id)
    }
}

/// A lookup that also says where each value came from.
pub(crate) type LocatedLookup<'a> = dyn Fn(&str) -> Option<(String, Location)> + 'a;

/// Parses the settings, collecting every problem instead of stopping at the
/// first, and warnings that do not stop a load.
pub(crate) fn parse(lookup: &LocatedLookup<'_>) -> (Settings, Vec<Problem>, Vec<String>) {
    let mut p = Parser {
        lookup,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let d = Settings::default();

    let api_url = p.url("TELEGRAM_API_URL").unwrap_or(d.api_url);
    let media_dir = p.path("MEDIA_TMP_LOCATION").unwrap_or(d.media_dir);
    let clean_up_media = p.boolean("CLEAN_UP_MEDIADIR").unwrap_or(d.clean_up_media);
    let state_dir = p.path("STATE_DIR").unwrap_or(d.state_dir);
    let lock_file = p.path("LOCK_FILE").unwrap_or(d.lock_file);
    let monitor_interval = p.millis("BOT_TOKEN_MONITOR_INTERVAL", d.monitor_interval);
    let reload_debounce = p.millis("CONFIG_RELOAD_DEBOUNCE", d.reload_debounce);
    let allowed_users = p.ids("ALLOWED_USER_IDS").unwrap_or_default();
    let admin_users = p.ids("ADMIN_USER_IDS").unwrap_or_default();
    let owner_user = p.id("OWNER_USER_ID");
    let media_recipients = match p.ids("MEDIA_RECIPIENTS") {
        Some(ids) => ids,
        None => {
            let mut ids = admin_users.clone();
            if let Some(owner) = owner_user {
                if !ids.contains(&owner) {
                    ids.push(owner);
                }
            }
            ids
        }
    };
    let handler = p.handler("BOT_HANDLER");
    let handler_timeout = Duration::from_secs(p.integer(
        "HANDLER_TIMEOUT_SECS",
        d.handler_timeout.as_secs(),
        1,
        86_400,
    ));
    let handler_concurrency =
        p.integer("HANDLER_CONCURRENCY", d.handler_concurrency as u64, 1, 1024) as usize;
    let handler_persistent = match p.raw("BOT_HANDLER_MODE") {
        None => d.handler_persistent,
        Some((v, location)) => match v.to_ascii_lowercase().as_str() {
            "exec" => false,
            "persistent" => true,
            _ => {
                let message = format!("{v:?} is not a handler mode (exec or persistent)");
                p.fail("BOT_HANDLER_MODE", location, message);
                d.handler_persistent
            }
        },
    };
    let handler_user = p
        .raw("HANDLER_USER")
        .map(|(v, _)| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let port = p.port("PORT").unwrap_or(d.port);
    let health_bind = p.ip("HEALTH_BIND").unwrap_or(d.health_bind);
    let health_auth_token = p.auth_token("HEALTH_AUTH_TOKEN");
    let poll_timeout_secs = p.integer("POLL_TIMEOUT_SECS", d.poll_timeout_secs, 0, 50);
    let send_rate_per_chat = p.rate("SEND_RATE_PER_CHAT").unwrap_or(d.send_rate_per_chat);
    let send_rate_per_bot = p.rate("SEND_RATE_PER_BOT").unwrap_or(d.send_rate_per_bot);
    let send_rate_per_group = p
        .rate("SEND_RATE_PER_GROUP")
        .unwrap_or(d.send_rate_per_group);
    let inbox_max_updates = p.integer("INBOX_MAX_UPDATES", d.inbox_max_updates, 1, 100_000_000);
    let allowed_updates = p
        .update_types("ALLOWED_UPDATES")
        .unwrap_or(d.allowed_updates);
    let shutdown_timeout = p.millis("SHUTDOWN_TIMEOUT", d.shutdown_timeout);
    let restart_delay = p.millis("RESTART_DELAY", d.restart_delay);
    let mut restart_max_delay = p.millis("RESTART_MAX_DELAY", d.restart_max_delay);
    if restart_max_delay < restart_delay {
        let location = p.location_of("RESTART_MAX_DELAY");
        p.fail(
            "RESTART_MAX_DELAY",
            location,
            format!(
                "{} ms is below RESTART_DELAY ({} ms); the cap must be at least the first delay",
                restart_max_delay.as_millis(),
                restart_delay.as_millis()
            ),
        );
        restart_max_delay = restart_delay;
    }
    let max_restarts = p.integer(
        "MAX_RESTARTS",
        u64::from(d.max_restarts),
        0,
        u64::from(u32::MAX),
    ) as u32;
    let restart_reset_after = Duration::from_secs(p.integer(
        "RESTART_RESET_AFTER_SECS",
        d.restart_reset_after.as_secs(),
        0,
        MAX_SECS,
    ));
    let unhealthy_threshold = Duration::from_secs(p.integer(
        "UNHEALTHY_THRESHOLD_SECS",
        d.unhealthy_threshold.as_secs(),
        1,
        MAX_SECS,
    ));
    let keepalive_url = p.url("KEEPALIVE_URL");
    let heartbeat_interval = Duration::from_secs(p.integer(
        "HEARTBEAT_INTERVAL_SECS",
        d.heartbeat_interval.as_secs(),
        1,
        MAX_SECS,
    ));
    let rust_log = p.raw("RUST_LOG").map(|(v, _)| v).unwrap_or(d.rust_log);
    let log_format = p.log_format("LOG_FORMAT").unwrap_or(d.log_format);
    let log_file = p.path("LOG_FILE");
    let log_max_bytes = p.integer("LOG_MAX_BYTES", d.log_max_bytes, 1024, 1 << 40);
    let log_keep = p.integer("LOG_KEEP", u64::from(d.log_keep), 0, 100) as u32;
    let megabytes = |p: &mut Parser<'_, '_>, key: &str| {
        p.raw(key)?;
        Some(p.integer(key, 0, 1, 1 << 20) * 1024 * 1024)
    };
    let worker_max_rss = megabytes(&mut p, "WORKER_MAX_RSS_MB");
    let handler_max_memory = megabytes(&mut p, "HANDLER_MAX_MEMORY_MB");

    let settings = Settings {
        api_url,
        media_dir,
        clean_up_media,
        state_dir,
        lock_file,
        monitor_interval,
        reload_debounce,
        allowed_users,
        admin_users,
        owner_user,
        media_recipients,
        handler,
        handler_timeout,
        handler_concurrency,
        handler_persistent,
        handler_user,
        port,
        health_bind,
        health_auth_token,
        poll_timeout_secs,
        send_rate_per_chat,
        send_rate_per_bot,
        send_rate_per_group,
        inbox_max_updates,
        allowed_updates,
        shutdown_timeout,
        restart_delay,
        restart_max_delay,
        max_restarts,
        restart_reset_after,
        unhealthy_threshold,
        keepalive_url,
        heartbeat_interval,
        rust_log,
        log_format,
        log_file,
        log_max_bytes,
        log_keep,
        worker_max_rss,
        handler_max_memory,
    };
    (settings, p.problems, p.warnings)
}

/// Below this many characters HEALTH_AUTH_TOKEN gets a warning.
pub(crate) const MIN_AUTH_TOKEN_CHARS: usize = 16;

/// The largest duration accepted, in seconds (30 days); it keeps deadline
/// arithmetic (`Instant + Duration`) far from overflow.
const MAX_SECS: u64 = 30 * 86_400;
const MAX_MILLIS: u64 = MAX_SECS * 1000;

/// How a value is shown in a message: quoted and shortened, or not at all
/// for a secret key.
pub(crate) fn shown(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        return "the value".to_string();
    }
    // A value over several lines is an unclosed quote that swallowed the
    // lines after it, which may set secrets: show none of it.
    let swallowed_secret = value
        .split(['\n', '\r', ' ', '"', '\''])
        .filter_map(|part| part.split_once('=').map(|(k, _)| k))
        .any(|k| !k.is_empty() && (is_secret_key(k) || k.contains("TOKEN")));
    if swallowed_secret || value.contains(['\n', '\r']) {
        return "a value over several lines (an unclosed quote?)".to_string();
    }
    const MAX_CHARS: usize = 60;
    if value.chars().count() > MAX_CHARS {
        let short: String = value.chars().take(MAX_CHARS).collect();
        format!("{short:?}...")
    } else {
        format!("{value:?}")
    }
}

struct Parser<'a, 'b> {
    lookup: &'a LocatedLookup<'b>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Parser<'_, '_> {
    /// The trimmed value, or `None` when unset or empty (the default applies).
    fn raw(&self, key: &str) -> Option<(String, Location)> {
        let (value, location) = (self.lookup)(key)?;
        let value = value.trim();
        if value.is_empty() {
            None
        } else {
            Some((value.to_string(), location))
        }
    }

    fn location_of(&self, key: &str) -> Location {
        (self.lookup)(key)
            .map(|(_, l)| l)
            .unwrap_or(Location::Environment)
    }

    fn fail(&mut self, key: &str, location: Location, message: String) {
        self.problems.push(Problem {
            location,
            key: key.to_string(),
            message,
        });
    }

    fn integer(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        let Some((value, location)) = self.raw(key) else {
            return default;
        };
        match value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(_) => {
                let message = format!("{} is out of range ({min}-{max})", shown(key, &value));
                self.fail(key, location, message);
                default
            }
            Err(_) => {
                let message = format!("{} is not a whole number ({min}-{max})", shown(key, &value));
                self.fail(key, location, message);
                default
            }
        }
    }

    fn millis(&mut self, key: &str, default: Duration) -> Duration {
        Duration::from_millis(self.integer(key, default.as_millis() as u64, 0, MAX_MILLIS))
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        let (value, location) = self.raw(key)?;
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => {
                let message = format!(
                    "{} is not a boolean (true/false, 1/0, yes/no, on/off)",
                    shown(key, &value)
                );
                self.fail(key, location, message);
                None
            }
        }
    }

    fn log_format(&mut self, key: &str) -> Option<LogFormat> {
        let (value, location) = self.raw(key)?;
        match value.to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => {
                let message = format!("{} is not a log format (text or json)", shown(key, &value));
                self.fail(key, location, message);
                None
            }
        }
    }

    fn path(&mut self, key: &str) -> Option<PathBuf> {
        self.raw(key).map(|(v, _)| PathBuf::from(v))
    }

    fn port(&mut self, key: &str) -> Option<u16> {
        let (value, location) = self.raw(key)?;
        match value.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => {
                let message = format!("{} is not a port (1-65535)", shown(key, &value));
                self.fail(key, location, message);
                None
            }
        }
    }

    fn ip(&mut self, key: &str) -> Option<IpAddr> {
        let (value, location) = self.raw(key)?;
        match value.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let message = format!(
                    "{} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)",
                    shown(key, &value)
                );
                self.fail(key, location, message);
                None
            }
        }
    }

    fn id(&mut self, key: &str) -> Option<i64> {
        let (value, location) = self.raw(key)?;
        match value.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                let message = format!("{} is not a numeric Telegram id", shown(key, &value));
                self.fail(key, location, message);
                None
            }
        }
    }

    /// A comma-separated id list; `None` when unset or empty.
    fn ids(&mut self, key: &str) -> Option<Vec<i64>> {
        let (value, location) = self.raw(key)?;
        let mut ids = Vec::new();
        let mut bad = Vec::new();
        for (position, entry) in value
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            match entry.parse::<i64>() {
                Ok(id) if !ids.contains(&id) => ids.push(id),
                Ok(_) => {}
                Err(_) => bad.push(format!("#{} {}", position + 1, shown(key, entry))),
            }
        }
        if !bad.is_empty() {
            let message = format!(
                "not a comma-separated list of numeric Telegram ids: entry {}",
                bad.join(", entry ")
            );
            self.fail(key, location, message);
            return None;
        }
        if ids.is_empty() {
            None
        } else {
            Some(ids)
        }
    }

    /// An http:// or https:// URL without trailing slashes.
    fn url(&mut self, key: &str) -> Option<String> {
        let (value, location) = self.raw(key)?;
        let rest = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"));
        match rest {
            Some(rest)
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && !rest.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Some(value.trim_end_matches('/').to_string())
            }
            _ => {
                let message = format!(
                    "{} is not a URL (it must start with http:// or https:// and name a host)",
                    shown(key, &value)
                );
                self.fail(key, location, message);
                None
            }
        }
    }

    /// A comma-separated list of update types the Bot API knows.
    fn update_types(&mut self, key: &str) -> Option<Vec<String>> {
        let (value, location) = self.raw(key)?;
        let mut types: Vec<String> = Vec::new();
        for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if !UPDATE_TYPES.contains(&word) {
                let message = format!(
                    "{} is not an update type of the Bot API (for example: message, callback_query)",
                    shown(key, word)
                );
                self.fail(key, location, message);
                return None;
            }
            if !types.iter().any(|t| t == word) {
                types.push(word.to_string());
            }
        }
        Some(types)
    }

    fn rate(&mut self, key: &str) -> Option<f64> {
        let (value, location) = self.raw(key)?;
        match value.parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate >= 0.0 => Some(rate),
            _ => {
                let message = format!(
                    "{} is not a rate (messages a second, a number >= 0; 0 = unpaced)",
                    shown(key, &value)
                );
                self.fail(key, location, message);
                None
            }
        }
    }

    fn handler(&mut self, key: &str) -> Option<Vec<String>> {
        let (value, location) = self.raw(key)?;
        match split_words(&value) {
            Ok(words) if words.is_empty() => None,
            Ok(words) => {
                if let Some(op) = shell_operator(&value) {
                    self.warnings.push(format!(
                        "{location}: {key}: {op:?} is passed to the program as an argument: \
                         the handler is not run through a shell (use sh -c '...' for shell syntax)"
                    ));
                }
                Some(words)
            }
            Err(e) => {
                self.fail(key, location, format!("cannot split into words: {e}"));
                None
            }
        }
    }

    /// A bearer token: visible ASCII without spaces, so it fits in a header.
    fn auth_token(&mut self, key: &str) -> Option<String> {
        let (value, location) = self.raw(key)?;
        if value.bytes().all(|b| b.is_ascii_graphic()) {
            if value.len() < MIN_AUTH_TOKEN_CHARS {
                self.warnings.push(format!(
                    "{location}: {key}: the value is short ({} characters); anyone who guesses \
                     it can restart the fleet: use {MIN_AUTH_TOKEN_CHARS} or more random characters",
                    value.len()
                ));
            }
            Some(value)
        } else {
            self.fail(
                key,
                location,
                "the value is invalid (use visible ASCII characters without spaces)".to_string(),
            );
            None
        }
    }
}
