//! The configuration: reading `.env` (with dotenvy's parser), falling back to
//! the process environment and then to the defaults, validating every value
//! into typed `Settings` and bot `Token`s, versioning the result (a stable
//! 12-hex-digit hash), diffing two versions for the reload log, and redacting
//! secrets wherever a key/value is shown.
//!
//! It must never touch the process environment (no `set_var`, no
//! `dotenvy::dotenv()`): the supervisor hands workers their environment
//! explicitly with `Config::worker_env`. It must never echo a secret value in
//! any message, warning, `Debug` or `Display`: values of secret keys (see
//! `is_secret_key`) are shown as `***` or described as "the value", and a
//! line dotenvy cannot parse is named by its number, never by its text.
//! (Past 700 lines: reading, versioning, diffing and redacting all walk the
//! same key map and share its secret rules; the parts that stand alone
//! already do: `settings`, `error`, `words`, and the tests in `tests.rs`.)
//!
//! One dotenvy behaviour is kept as it is: `$NAME` and `${NAME}` in an
//! unquoted or double-quoted value are replaced by the process environment's
//! NAME, else by an earlier key of the file. That reads the environment; it
//! never writes it.

mod error;
mod settings;
mod words;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

pub use error::{ConfigError, Location, Problem};
pub use settings::{LogFormat, Settings, DEFAULT_API_URL};
pub use words::{split_words, WordsError};

use crate::token::Token;

/// Every setting of DESIGN.md, `TELEGRAM_BOT_TOKEN` (the alias) included.
pub const KNOWN_KEYS: &[&str] = &[
    "TELEGRAM_BOT_TOKENS",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "MEDIA_TMP_LOCATION",
    "CLEAN_UP_MEDIADIR",
    "STATE_DIR",
    "LOCK_FILE",
    "BOT_TOKEN_MONITOR_INTERVAL",
    "CONFIG_RELOAD_DEBOUNCE",
    "ALLOWED_USER_IDS",
    "ADMIN_USER_IDS",
    "OWNER_USER_ID",
    "MEDIA_RECIPIENTS",
    "BOT_HANDLER",
    "HANDLER_TIMEOUT_SECS",
    "HANDLER_CONCURRENCY",
    "BOT_HANDLER_MODE",
    "HANDLER_USER",
    "PORT",
    "HEALTH_BIND",
    "HEALTH_AUTH_TOKEN",
    "POLL_TIMEOUT_SECS",
    "SEND_RATE_PER_CHAT",
    "SEND_RATE_PER_BOT",
    "SEND_RATE_PER_GROUP",
    "INBOX_MAX_UPDATES",
    "ALLOWED_UPDATES",
    "SHUTDOWN_TIMEOUT",
    "RESTART_DELAY",
    "RESTART_MAX_DELAY",
    "MAX_RESTARTS",
    "RESTART_RESET_AFTER_SECS",
    "UNHEALTHY_THRESHOLD_SECS",
    "KEEPALIVE_URL",
    "HEARTBEAT_INTERVAL_SECS",
    "RUST_LOG",
    "LOG_FORMAT",
    "LOG_FILE",
    "LOG_MAX_BYTES",
    "LOG_KEEP",
    "WORKER_MAX_RSS_MB",
    "HANDLER_MAX_MEMORY_MB",
];

/// The keys that hold bot tokens; never passed to a worker, always redacted.
const TOKEN_KEYS: &[&str] = &["TELEGRAM_BOT_TOKENS", "TELEGRAM_BOT_TOKEN"];

/// The keys never passed to a worker.
const WITHHELD_KEYS: &[&str] = &[
    "TELEGRAM_BOT_TOKENS",
    "TELEGRAM_BOT_TOKEN",
    "HEALTH_AUTH_TOKEN",
];

/// Known settings whose names look secret but are not.
const NOT_SECRET: &[&str] = &["BOT_TOKEN_MONITOR_INTERVAL"];

/// Settings only the supervisor reads: a change to them never restarts a
/// worker. RUST_LOG and the token keys are handled apart.
const SUPERVISOR_ONLY_KEYS: &[&str] = &[
    "LOCK_FILE",
    "BOT_TOKEN_MONITOR_INTERVAL",
    "CONFIG_RELOAD_DEBOUNCE",
    "PORT",
    "HEALTH_BIND",
    "HEALTH_AUTH_TOKEN",
    "SHUTDOWN_TIMEOUT",
    "RESTART_DELAY",
    "RESTART_MAX_DELAY",
    "MAX_RESTARTS",
    "RESTART_RESET_AFTER_SECS",
    "UNHEALTHY_THRESHOLD_SECS",
    "KEEPALIVE_URL",
    "HEARTBEAT_INTERVAL_SECS",
    "LOG_FORMAT",
    "LOG_FILE",
    "LOG_MAX_BYTES",
    "LOG_KEEP",
    "WORKER_MAX_RSS_MB",
];

/// The largest settings file read, 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// True for a key whose value must never be shown: its name contains TOKEN,
/// KEY, SECRET, PASS, AUTH or CREDENTIAL (any case), except known settings
/// that only look secret (BOT_TOKEN_MONITOR_INTERVAL).
pub fn is_secret_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    if NOT_SECRET.contains(&upper.as_str()) {
        return false;
    }
    ["TOKEN", "KEY", "SECRET", "PASS", "AUTH", "CREDENTIAL"]
        .iter()
        .any(|word| upper.contains(word))
}

/// True for a setting botfleet knows (exact name).
pub fn is_known_key(key: &str) -> bool {
    KNOWN_KEYS.contains(&key)
}

/// True when a change to `key` matters to the supervisor itself: the restart
/// policy, the health server, the lock file, the watcher, the keep-alive
/// ping, the tokens and RUST_LOG.
pub fn is_supervisor_key(key: &str) -> bool {
    SUPERVISOR_ONLY_KEYS.contains(&key) || TOKEN_KEYS.contains(&key) || key == "RUST_LOG"
}

/// True when a change to `key` matters to workers (and so to handlers):
/// every key except the tokens (a token change adds or removes a worker
/// instead) and the supervisor-only settings. Unknown keys count: they are
/// passed on to handlers.
pub fn is_worker_key(key: &str) -> bool {
    !SUPERVISOR_ONLY_KEYS.contains(&key) && !TOKEN_KEYS.contains(&key)
}

/// The value as it may be shown: `***` for secret keys and the token keys;
/// a URL's password (`https://user:pass@host`) masked; else the value.
pub fn redact(key: &str, value: &str) -> String {
    if TOKEN_KEYS.contains(&key) || is_secret_key(key) {
        return "***".to_string();
    }
    // A value over several lines is an unclosed quote that swallowed the
    // lines after it, which may set secrets: show none of it.
    if value.contains(['\n', '\r']) {
        return "*** (a value over several lines: an unclosed quote?)".to_string();
    }
    // A bot token under a mistyped key (TELEGRAM_BOT_TOKNES) is still one.
    // Split only where a list or a quote would: a URL's `host:port` must
    // not pass for a token.
    if value
        .split([',', ' ', '\t', '"', '\''])
        .any(|part| crate::token::Token::parse(part).is_ok())
    {
        return "***".to_string();
    }
    redact_url_password(value)
}

/// Masks the password of `scheme://user:password@host...`.
fn redact_url_password(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else {
        return value.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &value[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return value.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return value.to_string();
    };
    format!(
        "{}{}:***{}",
        &value[..authority_start],
        &userinfo[..colon],
        &value[authority_start + at..]
    )
}

/// Where an effective entry came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The settings file, with the line of the key's last assignment.
    File(Option<usize>),
    /// The process environment (only for known keys the file does not set).
    Environment,
}

#[derive(Clone)]
struct Entry {
    value: String,
    origin: Origin,
}

/// A loaded, validated configuration. `Debug` shows secrets as `***`.
#[derive(Clone)]
pub struct Config {
    /// Every setting except the tokens, typed.
    pub settings: Settings,
    /// The bot tokens, de-duplicated, in file order.
    pub tokens: Vec<Token>,
    /// Things worth logging that do not stop a load; never hold a secret.
    pub warnings: Vec<String>,
    entries: BTreeMap<String, Entry>,
    /// Keys kept from workers besides the three named ones: look-alikes of
    /// those names and values that hold a bot token or HEALTH_AUTH_TOKEN.
    withheld: Vec<String>,
    source: String,
    version: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: BTreeMap<&str, String> = self
            .entries
            .iter()
            .map(|(k, e)| (k.as_str(), redact(k, &e.value)))
            .collect();
        f.debug_struct("Config")
            .field("source", &self.source)
            .field("version", &self.version)
            .field("tokens", &self.tokens)
            .field("settings", &self.settings)
            .field("warnings", &self.warnings)
            .field("entries", &entries)
            .finish()
    }
}

impl Config {
    /// Reads `path` with dotenvy's parser (never into the process
    /// environment), falls back to `env` for every known key the file does
    /// not set, then to the defaults. `missing_ok`: a missing file counts as
    /// empty (startup in a container that sets environment variables); when
    /// false (a reload) it is an error.
    pub fn load(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        missing_ok: bool,
    ) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = match read_text(path, &source) {
            Ok(text) => text,
            Err(ConfigError::Read { source: e, .. })
                if missing_ok && e.kind() == std::io::ErrorKind::NotFound =>
            {
                String::new()
            }
            Err(e) => return Err(e),
        };
        Config::from_text(&text, &source, env)
    }

    /// As `load`, from text; `source` names it in messages (e.g. `.env`).
    pub fn from_text(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        check_text(text.as_bytes(), source)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // dotenvy rejects a last line that ends in a space but no newline;
        // a final newline changes nothing else.
        let text = if text.is_empty() || text.ends_with('\n') {
            text.to_string()
        } else {
            format!("{text}\n")
        };

        let mut file_values: BTreeMap<String, String> = BTreeMap::new();
        for item in dotenvy::from_read_iter(text.as_bytes()) {
            match item {
                Ok((key, value)) => {
                    file_values.insert(key, value);
                }
                Err(_) => return Err(syntax_error(&text, source)),
            }
        }
        let lines = key_lines(&text);

        let mut warnings = Vec::new();
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for (key, value) in file_values {
            let line = lines.get(&key).and_then(|l| l.last().copied());
            entries.insert(
                key,
                Entry {
                    value,
                    origin: Origin::File(line),
                },
            );
        }
        // The two token keys are one setting: when the file sets either, the
        // environment's tokens are not mixed in.
        let file_sets_tokens = TOKEN_KEYS.iter().any(|k| entries.contains_key(*k));
        for key in KNOWN_KEYS {
            if entries.contains_key(*key) || (file_sets_tokens && TOKEN_KEYS.contains(key)) {
                continue;
            }
            if let Some(value) = env(key) {
                entries.insert(
                    key.to_string(),
                    Entry {
                        value,
                        origin: Origin::Environment,
                    },
                );
            }
        }

        for (key, entry_lines) in &lines {
            if entry_lines.len() > 1 {
                let last = entry_lines[entry_lines.len() - 1];
                warnings.push(format!(
                    "{source}:{last}: {key} is set again (first on line {}); the last value wins",
                    entry_lines[0]
                ));
            }
        }
        for (key, entry) in &entries {
            if entry.origin == Origin::Environment || is_known_key(key) {
                continue;
            }
            if let Some(known) = near_miss(key) {
                let at = location(source, entry.origin);
                warnings.push(format!(
                    "{at}: unknown setting {key}; did you mean {known}?"
                ));
            }
        }

        let lookup = |key: &str| {
            entries
                .get(key)
                .map(|e| (e.value.clone(), location(source, e.origin)))
        };
        let (settings, mut problems, setting_warnings) = settings::parse(&lookup);
        warnings.extend(setting_warnings);
        let tokens = parse_tokens(&entries, source, &mut problems, &mut warnings);

        // A secret substituted into another key (`PORT=${HEALTH_AUTH_TOKEN}`)
        // or pasted as a key name must not be echoed by any message.
        let secrets = secret_values(&entries);
        for p in problems.iter_mut() {
            p.message = scrub(&p.message, &secrets);
        }
        if !problems.is_empty() {
            if tokens.is_empty()
                && !problems
                    .iter()
                    .any(|p| TOKEN_KEYS.contains(&p.key.as_str()))
            {
                problems.push(Problem {
                    location: Location::File {
                        source: source.to_string(),
                        line: None,
                    },
                    key: "TELEGRAM_BOT_TOKENS".to_string(),
                    message: ConfigError::NoToken {
                        source: source.to_string(),
                    }
                    .to_string(),
                });
            }
            return Err(ConfigError::Invalid(problems));
        }
        if tokens.is_empty() {
            return Err(ConfigError::NoToken {
                source: source.to_string(),
            });
        }
        let withheld = withheld_keys(&entries, &tokens, &settings);
        for key in &withheld {
            let at = location(source, entries[key].origin);
            warnings.push(format!(
                "{at}: {key} looks like it holds a bot token or HEALTH_AUTH_TOKEN; \
                 it is not passed on to workers and handlers"
            ));
        }
        for w in warnings.iter_mut() {
            *w = scrub(w, &secrets);
        }
        let version = version_of(&entries);
        Ok(Config {
            settings,
            tokens,
            warnings,
            entries,
            withheld,
            source: source.to_string(),
            version,
        })
    }

    /// 12 lowercase hex digits: FNV-1a 64 over the sorted effective
    /// `key=value` pairs, the same on every run, process and build.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The effective raw value of `key`: the file's, else the environment's
    /// for a known key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|e| e.value.as_str())
    }

    /// Every effective key/value, sorted by key: all the file's keys (known
    /// and unknown) plus the known keys taken from the environment. Raw:
    /// secrets included; pass values through `redact` before showing them.
    pub fn entries(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    /// The environment a worker gets on top of the supervisor's own: every
    /// entry except TELEGRAM_BOT_TOKENS, TELEGRAM_BOT_TOKEN and
    /// HEALTH_AUTH_TOKEN, and except (with a warning at load) any other key
    /// whose name is a look-alike of those three (`telegram_bot_tokens`,
    /// `TELEGRAM_BOT_TOKNES`) or whose value holds a bot token's secret or
    /// HEALTH_AUTH_TOKEN (`MY_TOKENS=${TELEGRAM_BOT_TOKENS}`): workers and
    /// handlers must never see other bots' tokens. The supervisor must also
    /// remove those keys from the inherited environment, and add BOT_TOKEN
    /// and BOT_INDEX.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter(|(k, _)| !WITHHELD_KEYS.contains(&k.as_str()) && !self.withheld.contains(k))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    /// The number of effective entries.
    pub fn setting_count(&self) -> usize {
        self.entries.len()
    }

    /// The name of the file in messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The line of the file that sets `key`, when the file sets it.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        match self.entries.get(key)?.origin {
            Origin::File(line) => line,
            Origin::Environment => None,
        }
    }
}

/// The secret strings among `entries`, to mask wherever they show up (even
/// as a key's name): the values of the token keys and of secret-looking
/// keys, each comma- or space-separated part of them, and each bot token's
/// part after the colon. Longest first, so a longer secret is masked whole
/// before a shorter one inside it.
fn secret_values(entries: &BTreeMap<String, Entry>) -> Vec<String> {
    secrets_among(entries.iter().map(|(k, e)| (k.as_str(), e.value.as_str())))
}

/// As `secret_values`, from raw key/value pairs.
fn secrets_among<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (key, value) in pairs {
        if !(TOKEN_KEYS.contains(&key) || is_secret_key(key)) {
            continue;
        }
        let value = value.trim();
        out.push(value.to_string());
        for part in value.split([',', ' ', '\t', '\n', '\r']) {
            out.push(part.to_string());
            if let Some((_, after)) = part.split_once(':') {
                out.push(after.to_string());
            }
        }
    }
    // Too short to be a secret, and masking it would garble messages.
    out.retain(|s| s.len() >= 4);
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// `text` with every one of `secrets` replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), "***");
        }
    }
    text
}

/// What changed between two configurations; raw values (render redacts).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Keys only in the new configuration, with their values.
    pub added: Vec<(String, String)>,
    /// Keys only in the old configuration, with their old values.
    pub removed: Vec<(String, String)>,
    /// Keys in both with different values: key, old, new.
    pub modified: Vec<(String, String, String)>,
    /// The secrets of both configurations, masked wherever they show in
    /// `render` (a secret pasted as a key's name, say).
    secrets: Vec<String>,
}

impl fmt::Debug for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.render()).finish()
    }
}

/// The entries added, removed and modified from `old` to `new`, by key order.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut d = ConfigDiff::default();
    for (key, entry) in &new.entries {
        match old.entries.get(key) {
            None => d.added.push((key.clone(), entry.value.clone())),
            Some(before) if before.value != entry.value => {
                d.modified
                    .push((key.clone(), before.value.clone(), entry.value.clone()));
            }
            Some(_) => {}
        }
    }
    for (key, entry) in &old.entries {
        if !new.entries.contains_key(key) {
            d.removed.push((key.clone(), entry.value.clone()));
        }
    }
    let mut secrets = secret_values(&old.entries);
    secrets.extend(secret_values(&new.entries));
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
    d.secrets = secrets;
    d
}

impl ConfigDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.modified.is_empty()
    }

    /// Log lines: `+ Added KEY = value`, `- Removed KEY`,
    /// `~ Modified KEY = old → new`, secrets as `***`.
    pub fn render(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (key, value) in &self.added {
            lines.push(format!("+ Added {key} = {}", redact(key, value)));
        }
        for (key, _) in &self.removed {
            lines.push(format!("- Removed {key}"));
        }
        for (key, old, new) in &self.modified {
            lines.push(format!(
                "~ Modified {key} = {} → {}",
                redact(key, old),
                redact(key, new)
            ));
        }
        lines
            .into_iter()
            .map(|line| scrub(&line, &self.secrets))
            .collect()
    }

    /// Every key that changed in any way, sorted.
    pub fn changed_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .added
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(self.removed.iter().map(|(k, _)| k.as_str()))
            .chain(self.modified.iter().map(|(k, _, _)| k.as_str()))
            .collect();
        keys.sort_unstable();
        keys
    }
}

fn location(source: &str, origin: Origin) -> Location {
    match origin {
        Origin::File(line) => Location::File {
            source: source.to_string(),
            line,
        },
        Origin::Environment => Location::Environment,
    }
}

/// Reads the file with the size cap, refusing directories and non-text.
fn read_text(path: &Path, source: &str) -> Result<String, ConfigError> {
    let read_error = |e| ConfigError::Read {
        path: path.to_path_buf(),
        source: e,
    };
    let meta = fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let too_large = |size| ConfigError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: MAX_FILE_BYTES,
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    // The file may have grown between stat and read.
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    check_text(&bytes, source)?;
    String::from_utf8(bytes).map_err(|e| ConfigError::NotText {
        source: source.to_string(),
        line: 1 + count_newlines(&e.as_bytes()[..e.utf8_error().valid_up_to()]),
        reason: "invalid UTF-8",
    })
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Rejects NUL bytes and invalid UTF-8, naming the first bad line.
fn check_text(bytes: &[u8], source: &str) -> Result<(), ConfigError> {
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(ConfigError::NotText {
            source: source.to_string(),
            line: 1 + count_newlines(&bytes[..at]),
            reason: "a NUL byte",
        });
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ConfigError::NotText {
            source: source.to_string(),
            line: 1 + count_newlines(&bytes[..e.valid_up_to()]),
            reason: "invalid UTF-8",
        });
    }
    Ok(())
}

/// The states of dotenvy's multi-line splitter (`QuotedLines` in dotenvy
/// 0.15), reproduced to know which physical line each logical line starts
/// on: dotenvy's errors carry the text but not the line number.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    Complete,
    Escape,
    Strong,
    StrongEscape,
    Weak,
    WeakEscape,
    WhiteSpace,
    Comment,
}

fn split_state(mut state: Split, line: &str) -> Split {
    for c in line.chars() {
        state = match state {
            Split::WhiteSpace => match c {
                '#' => return Split::Comment,
                '\\' => Split::Escape,
                '"' => Split::Weak,
                '\'' => Split::Strong,
                _ => Split::Complete,
            },
            Split::Escape => Split::Complete,
            Split::Complete => match c {
                c if c.is_whitespace() && c != '\n' && c != '\r' => Split::WhiteSpace,
                '\\' => Split::Escape,
                '"' => Split::Weak,
                '\'' => Split::Strong,
                _ => Split::Complete,
            },
            Split::Weak => match c {
                '\\' => Split::WeakEscape,
                '"' => Split::Complete,
                _ => Split::Weak,
            },
            Split::WeakEscape => Split::Weak,
            Split::Strong => match c {
                '\\' => Split::StrongEscape,
                '\'' => Split::Complete,
                _ => Split::Strong,
            },
            Split::StrongEscape => Split::Strong,
            Split::Comment => return Split::Comment,
        };
    }
    state
}

/// The logical lines (a quoted value may span several physical lines) with
/// the 1-based physical line each starts on; `Err(line)` when the text ends
/// inside a quote that opened on `line`.
fn logical_lines(text: &str) -> Result<Vec<(usize, &str)>, usize> {
    let mut out = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut state = Split::Complete;
    let mut end = 0;
    for (index, physical) in text.split_inclusive('\n').enumerate() {
        if start_byte == end {
            start_line = index + 1;
        }
        end += physical.len();
        let logical = &text[start_byte..end];
        if logical.trim_start().starts_with('#') {
            state = Split::Complete;
        } else {
            state = split_state(state, physical);
        }
        if matches!(state, Split::Complete | Split::Comment) {
            out.push((start_line, logical));
            start_byte = end;
            state = Split::Complete;
        }
    }
    if start_byte < text.len() {
        return Err(start_line);
    }
    Ok(out)
}

/// The key a logical line assigns (after optional `export `), if any.
fn line_key(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(after) = rest.strip_prefix("export") {
        if after.starts_with([' ', '\t']) {
            rest = after.trim_start();
        }
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len());
    let (key, after) = rest.split_at(end);
    let starts_well = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if starts_well && after.trim_start_matches([' ', '\t']).starts_with('=') {
        Some(key)
    } else {
        None
    }
}

/// Every line each key is assigned on, in order.
fn key_lines(text: &str) -> BTreeMap<String, Vec<usize>> {
    let mut lines: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    if let Ok(logical) = logical_lines(text) {
        for (line, content) in logical {
            if let Some(key) = line_key(content) {
                lines.entry(key.to_string()).or_default().push(line);
            }
        }
    }
    lines
}

/// Turns a dotenvy parse failure into an error naming the line, found by
/// parsing each logical line alone. The line's text is not shown.
fn syntax_error(text: &str, source: &str) -> ConfigError {
    // The file does not parse, so its secrets are found by a lenient
    // line-by-line read; a key that holds one (a pasted token) is not named.
    let secrets = secrets_among(text.lines().filter_map(|line| {
        let line = line.trim_start();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=')?;
        Some((key.trim(), value.trim().trim_matches(['"', '\''])))
    }));
    let error = |line, key: Option<&str>, hint| ConfigError::Syntax {
        source: source.to_string(),
        line,
        key: key
            .filter(|k| !secrets.iter().any(|s| k.contains(s.as_str())))
            .map(str::to_string),
        hint,
    };
    let logical = match logical_lines(text) {
        Ok(logical) => logical,
        Err(line) => {
            let key = text.split_inclusive('\n').nth(line - 1).and_then(line_key);
            return error(Some(line), key, "unterminated quote");
        }
    };
    for (line, content) in logical {
        if dotenvy::from_read_iter(content.as_bytes()).all(|item| item.is_ok()) {
            continue;
        }
        let key = line_key(content);
        let hint = if key.is_none() {
            "expected KEY=value; a key is letters, digits and '_'"
        } else if content.contains('\'') || content.contains('"') {
            "unterminated quote or text after a closing quote?"
        } else if content.contains('\\') {
            "unsupported backslash escape?"
        } else {
            "a value with spaces must be quoted: KEY=\"a, b\""
        };
        return error(Some(line), key, hint);
    }
    error(None, None, "the settings file does not parse")
}

/// Other keys that must not reach a worker: look-alike names of the
/// withheld keys, and values that contain a token's secret or the
/// HEALTH_AUTH_TOKEN.
fn withheld_keys(
    entries: &BTreeMap<String, Entry>,
    tokens: &[Token],
    settings: &Settings,
) -> Vec<String> {
    entries
        .iter()
        .filter(|(key, _)| !WITHHELD_KEYS.contains(&key.as_str()))
        .filter(|(key, entry)| {
            let upper = key.to_ascii_uppercase();
            let looks_alike = WITHHELD_KEYS.iter().any(|w| edit_distance(&upper, w) <= 2);
            let holds_token = tokens
                .iter()
                .any(|t| !t.secret().is_empty() && entry.value.contains(t.secret()));
            let holds_auth = settings
                .health_auth_token
                .as_deref()
                .is_some_and(|auth| auth.len() >= 8 && entry.value.contains(auth));
            looks_alike || holds_token || holds_auth
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// Parses the tokens, de-duplicating them with a warning.
fn parse_tokens(
    entries: &BTreeMap<String, Entry>,
    source: &str,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Vec<Token> {
    let non_empty = |key: &str| entries.get(key).filter(|e| !e.value.trim().is_empty());
    let (key, entry) = match (
        non_empty("TELEGRAM_BOT_TOKENS"),
        non_empty("TELEGRAM_BOT_TOKEN"),
    ) {
        (Some(tokens), alias) => {
            if let Some(alias) = alias {
                warnings.push(format!(
                    "{}: TELEGRAM_BOT_TOKEN is ignored: TELEGRAM_BOT_TOKENS is set too",
                    location(source, alias.origin)
                ));
            }
            ("TELEGRAM_BOT_TOKENS", tokens)
        }
        (None, Some(alias)) => ("TELEGRAM_BOT_TOKEN", alias),
        (None, None) => return Vec::new(),
    };
    let at = location(source, entry.origin);
    let mut tokens: Vec<(usize, Token)> = Vec::new();
    for (index, raw) in entry
        .value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        let position = index + 1;
        match Token::parse(raw) {
            Ok(token) => {
                if let Some((first, _)) = tokens.iter().find(|(_, t)| *t == token) {
                    warnings.push(format!(
                        "{at}: {key}: token #{position} repeats token #{first}; ignored"
                    ));
                } else if let Some((first, _)) =
                    tokens.iter().find(|(_, t)| t.bot_id() == token.bot_id())
                {
                    warnings.push(format!(
                        "{at}: {key}: token #{position} is another token of the same bot \
                         (id {}) as token #{first}; ignored",
                        token.bot_id()
                    ));
                } else {
                    tokens.push((position, token));
                }
            }
            Err(e) => problems.push(Problem {
                location: at.clone(),
                key: key.to_string(),
                message: format!("token #{position} is malformed: {e}"),
            }),
        }
    }
    tokens.into_iter().map(|(_, t)| t).collect()
}

/// The known key an unknown key is probably a typo of: the same name in
/// another case, or within 2 edits (1 for names shorter than 6, so HOST is
/// not taken for PORT).
fn near_miss(key: &str) -> Option<&'static str> {
    let upper = key.to_ascii_uppercase();
    KNOWN_KEYS
        .iter()
        .map(|known| (edit_distance(&upper, known), *known))
        .filter(|(distance, known)| *distance <= if known.len() < 6 { 1 } else { 2 })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// FNV-1a 64 over `key NUL value NUL` for each entry in key order (neither
/// can hold a NUL), shown as its first 12 hex digits.
fn version_of(entries: &BTreeMap<String, Entry>) -> String {
    let bytes = entries
        .iter()
        .flat_map(|(key, entry)| key.bytes().chain([0]).chain(entry.value.bytes()).chain([0]));
    format!("{:016x}", fnv1a_64(bytes))[..12].to_string()
}

/// The 64-bit FNV-1a hash, written out so it never changes with the
/// standard library (unlike `DefaultHasher`).
fn fnv1a_64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.into_iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests;
