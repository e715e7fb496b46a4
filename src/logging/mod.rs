//! The one log stream. The supervisor writes `[Parent] ...` lines, and its
//! workers' lines as `[Worker bot-N] ...`: a worker started by the
//! supervisor writes JSON lines (the wire form) on its stderr, a pipe the
//! supervisor reads (`pipe`) and renders in the fleet's format. The format
//! is text (the default; WARN and ERROR coloured on a terminal, not under
//! journald, not with NO_COLOR) or JSON (LOG_FORMAT=json, one object a line,
//! `line`); the destination is stderr or LOG_FILE, rotated (`sink`). Wraps
//! env_logger's filter so `RUST_LOG` can change on a reload, leaves
//! timestamps out of text when journald is reading (JOURNAL_STREAM), and as
//! a last line of defence scrubs every registered secret from every field.
//! This module must never decide what is logged; callers do.

mod line;
mod pipe;
mod sink;

pub use line::Line;
pub use pipe::{drain, follow};

use crate::config::{LogFormat, Settings};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock, RwLock};

/// The environment variable that tells a worker to write the wire form.
pub const WIRE_ENV: &str = "BOTFLEET_LOG_WIRE";

static LOGGER: OnceLock<FleetLogger> = OnceLock::new();

struct FleetLogger {
    /// `None` for the supervisor, the index for a worker.
    worker: Option<u32>,
    /// A worker writing to its supervisor: JSON lines, always on stderr.
    wire: bool,
    filter: RwLock<env_logger::Logger>,
    secrets: RwLock<Secrets>,
    /// Index → bot id, so supervisor lines about `bot-N` carry its bot_id.
    bots: RwLock<HashMap<u32, u64>>,
    out: Mutex<Output>,
}

/// How lines are rendered and where they go.
struct Output {
    format: LogFormat,
    sink: sink::Sink,
    timestamps: bool,
    colour: bool,
}

impl Output {
    fn new(format: LogFormat) -> Output {
        let mut o = Output {
            format,
            sink: sink::Sink::default(),
            timestamps: true,
            colour: false,
        };
        o.decide();
        o
    }

    /// Timestamps and colours follow from the format and the destination.
    fn decide(&mut self) {
        let journald = std::env::var_os("JOURNAL_STREAM").is_some();
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let file = self.sink.is_file();
        self.timestamps = file || !journald;
        self.colour = self.format == LogFormat::Text
            && !file
            && !journald
            && !no_colour
            && std::io::stderr().is_terminal();
    }

    fn render(&self, line: &Line) -> String {
        match self.format {
            LogFormat::Json => line.json(),
            LogFormat::Text => line.text(self.timestamps, self.colour),
        }
    }

    /// Writes a line; a file that fails or recovers is told right after.
    fn write(&mut self, line: &Line) {
        let text = self.render(line);
        let note = match self.sink.write(text.as_bytes()) {
            None => return,
            Some(sink::Event::FellBack(e)) => Line::new(
                now(),
                log::Level::Warn,
                None,
                format!("cannot write LOG_FILE ({e}); logging to stderr until it works again (retried every 30 s and on SIGHUP)"),
            ),
            Some(sink::Event::Recovered) => Line::new(
                now(),
                log::Level::Info,
                None,
                "LOG_FILE is writable again; logging there".to_string(),
            ),
        };
        let text = self.render(&note);
        if self.sink.write(text.as_bytes()).is_some() {
            // A second failure in a row is already covered by the first note.
        }
    }
}

fn now() -> String {
    utc_timestamp(std::time::SystemTime::now())
}

fn build_filter(spec: &str) -> env_logger::Logger {
    env_logger::Builder::new()
        .parse_filters(spec)
        .target(env_logger::Target::Stderr)
        .build()
}

/// The registered secrets (each at least four bytes), indexed by their
/// first four bytes, so a line is scanned once, a hash lookup a byte,
/// instead of once a secret: with 3,000 bots the plain way cost about
/// 0.5 ms a line (measured), a core at 2,000 lines a second.
#[derive(Debug, Default)]
struct Secrets {
    all: Vec<String>,
    by_prefix: HashMap<[u8; 4], Vec<usize>>,
}

impl Secrets {
    fn prefix(bytes: &[u8]) -> Option<[u8; 4]> {
        bytes.get(..4)?.try_into().ok()
    }

    fn add(&mut self, secret: &str) {
        let Some(key) = Secrets::prefix(secret.as_bytes()) else {
            return;
        };
        // Only those with its first four bytes can be it: adding 3,000
        // tokens is not 3,000 scans of every one.
        let same = self.by_prefix.entry(key).or_default();
        if same.iter().any(|&id| self.all[id] == secret) {
            return;
        }
        same.push(self.all.len());
        self.all.push(secret.to_string());
    }

    /// The secrets in any text field of `line`, longest first (a longer
    /// secret is masked whole before a shorter one inside it).
    fn found_in(&self, line: &Line) -> Vec<String> {
        let mut found: Vec<usize> = Vec::new();
        for text in [line.msg.as_bytes(), line.ts.as_bytes()] {
            for at in 0..text.len().saturating_sub(3) {
                let Some(ids) = Secrets::prefix(&text[at..]).and_then(|k| self.by_prefix.get(&k))
                else {
                    continue;
                };
                for &id in ids {
                    if text[at..].starts_with(self.all[id].as_bytes()) && !found.contains(&id) {
                        found.push(id);
                    }
                }
            }
        }
        let mut found: Vec<String> = found.into_iter().map(|id| self.all[id].clone()).collect();
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        found
    }
}

impl FleetLogger {
    fn output(&self) -> std::sync::MutexGuard<'_, Output> {
        match self.out.lock() {
            Ok(g) => g,
            // A thread panicked mid-write; the output is still usable.
            Err(p) => p.into_inner(),
        }
    }

    fn emit(&self, mut line: Line) {
        let found = match self.secrets.read() {
            Ok(s) => s.found_in(&line),
            Err(p) => p.into_inner().found_in(&line),
        };
        if !found.is_empty() {
            line.scrub(&found);
        }
        if self.wire {
            // The supervisor renders it; one write per line.
            let text = line.json();
            let mut err = std::io::stderr().lock();
            if std::io::Write::write_all(&mut err, text.as_bytes()).is_err() {
                // The supervisor is gone; nothing left to tell.
            }
            return;
        }
        self.output().write(&line);
    }

    /// The bot a supervisor line is about (`bot-N` or `bot worker N`).
    fn bot_in(&self, msg: &str) -> Option<u64> {
        let index = msg
            .match_indices("bot-")
            .filter(|(at, _)| {
                !msg[..*at]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric)
            })
            .find_map(|(at, _)| {
                let digits: String = msg[at + 4..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse::<u32>().ok()
            })
            .or_else(|| line::id_after(msg, "bot worker").and_then(|i| u32::try_from(i).ok()))?;
        let bots = self.bots.read().ok()?;
        bots.get(&index).copied()
    }
}

impl log::Log for FleetLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        match self.filter.read() {
            Ok(f) => f.enabled(metadata),
            Err(_) => true,
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        let matches = match self.filter.read() {
            Ok(f) => f.matches(record),
            Err(_) => true,
        };
        // ureq logs whole request paths, token included, at trace level.
        if !matches || (record.level() == log::Level::Trace && record.target().starts_with("ureq"))
        {
            return;
        }
        let msg = record.args().to_string();
        let mut line = Line::new(now(), record.level(), self.worker, msg);
        if self.worker.is_none() {
            line.bot_id = self.bot_in(&line.msg);
        }
        self.emit(line);
    }

    fn flush(&self) {
        if std::io::Write::flush(&mut std::io::stderr()).is_err() {
            // As above: stderr is gone, nothing to tell.
        }
    }
}

/// Installs the logger once per process. `worker` is `None` for the
/// supervisor and the command-line tools, the index for a worker; `spec` is
/// a RUST_LOG filter such as `info`. A worker whose environment has
/// `BOTFLEET_LOG_WIRE=1` writes the wire form for its supervisor.
pub fn init(worker: Option<u32>, spec: &str) {
    let wire = worker.is_some() && std::env::var(WIRE_ENV).is_ok_and(|v| v == "1");
    let filter = build_filter(spec);
    let max = filter.filter();
    let logger = FleetLogger {
        worker,
        wire,
        filter: RwLock::new(filter),
        secrets: RwLock::new(Secrets::default()),
        bots: RwLock::new(HashMap::new()),
        out: Mutex::new(Output::new(LogFormat::Text)),
    };
    if LOGGER.set(logger).is_ok() {
        if let Some(l) = LOGGER.get() {
            if log::set_logger(l).is_ok() {
                // The filter's most verbose level: below it, `log!` calls
                // (ureq makes a dozen per request) stop at one atomic load
                // instead of reaching `log` and its lock.
                log::set_max_level(max);
            }
        }
    }
}

/// Applies LOG_FORMAT, LOG_FILE, LOG_MAX_BYTES and LOG_KEEP (at start and
/// on every reload; a running process takes them live).
pub fn configure(s: &Settings) {
    let Some(l) = LOGGER.get() else {
        return;
    };
    let mut out = l.output();
    out.format = s.log_format;
    out.sink.set(s.log_file.as_ref().map(|path| sink::FileSpec {
        path: path.clone(),
        max_bytes: s.log_max_bytes,
        keep: s.log_keep,
    }));
    out.decide();
}

/// Closes LOG_FILE so the next line opens it again (SIGHUP: logrotate moved it).
pub fn reopen() {
    if let Some(l) = LOGGER.get() {
        l.output().sink.reopen();
    }
}

/// Writes a line read from worker `bot-<index>`'s stderr: the wire form
/// keeps its level, time and ids; anything else (a panic message) is
/// written as a WARN line of that worker.
pub fn from_worker(index: u32, bot_id: u64, text: &str) {
    let Some(l) = LOGGER.get() else {
        return;
    };
    let mut line = Line::from_wire(text)
        .unwrap_or_else(|| Line::new(now(), log::Level::Warn, None, text.to_string()));
    line.worker = Some(index);
    line.bot_id = Some(bot_id);
    l.emit(line);
}

/// Tells the logger which bot id `bot-<index>` is, for supervisor lines.
pub fn name_bot(index: u32, bot_id: u64) {
    if let Some(l) = LOGGER.get() {
        if let Ok(mut bots) = l.bots.write() {
            bots.insert(index, bot_id);
        }
    }
}

/// Changes the filter of a running process (a reloaded RUST_LOG).
pub fn set_filter(spec: &str) {
    if let Some(l) = LOGGER.get() {
        if let Ok(mut f) = l.filter.write() {
            *f = build_filter(spec);
            log::set_max_level(f.filter());
        }
    }
}

/// Registers a secret that must never appear in a log line.
pub fn add_secret(secret: &str) {
    if secret.len() < 4 {
        return;
    }
    if let Some(l) = LOGGER.get() {
        if let Ok(mut s) = l.secrets.write() {
            s.add(secret);
        }
    }
}

/// `2026-11-22T11:05:00.123Z` without a date crate.
pub fn utc_timestamp(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn finds_every_secret_in_a_line_longest_first() {
        let mut s = Secrets::default();
        for i in 0..3000 {
            s.add(&format!("secret-{i:05}-abcdefghijklmnopqrstuvwxyz"));
        }
        s.add("LONGsecretLONG");
        s.add("LONGsecret");
        s.add("LONGsecret"); // twice is once
        let mut line = Line::new(
            "2026-01-01T00:00:00.000Zsecret-00007-abcdefghijklmnopqrstuvwxyz".into(),
            log::Level::Info,
            None,
            "a secret-02999-abcdefghijklmnopqrstuvwxyz and LONGsecretLONG, LONGsecret at the end: LONGsecret".into(),
        );
        let found = s.found_in(&line);
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(found[0].len(), found[1].len());
        assert_eq!(found[2], "LONGsecretLONG");
        assert_eq!(found[3], "LONGsecret");
        line.scrub(&found);
        assert_eq!(
            line.msg, "a *** and ***, *** at the end: ***",
            "every secret masked whole"
        );
        assert_eq!(line.ts, "2026-01-01T00:00:00.000Z***");
        let clean = Line::new("t".into(), log::Level::Info, None, "nothing here".into());
        assert!(s.found_in(&clean).is_empty());
    }

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_345_500_250);
        assert_eq!(utc_timestamp(t), "2026-11-22T11:05:00.250Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
