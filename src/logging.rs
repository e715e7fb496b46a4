//! The one log stream: `[Parent] ...` and `[Worker bot-N] ...` lines on
//! stderr (workers inherit the supervisor's stderr, so both land in one
//! stream). Wraps env_logger's filter so `RUST_LOG` can change on a reload,
//! leaves timestamps out when journald is reading (JOURNAL_STREAM), and as a
//! last line of defence scrubs every registered secret from each line.
//! This module must never decide what is logged; callers do.

use std::io::Write;
use std::sync::{OnceLock, RwLock};

static LOGGER: OnceLock<FleetLogger> = OnceLock::new();

struct FleetLogger {
    prefix: String,
    timestamps: bool,
    filter: RwLock<env_logger::Logger>,
    secrets: RwLock<Vec<String>>,
}

fn build_filter(spec: &str) -> env_logger::Logger {
    env_logger::Builder::new()
        .parse_filters(spec)
        .target(env_logger::Target::Stderr)
        .build()
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
        let mut line = String::with_capacity(128);
        if self.timestamps {
            line.push_str(&utc_timestamp(std::time::SystemTime::now()));
            line.push(' ');
        }
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARN ",
            log::Level::Info => "INFO ",
            log::Level::Debug => "DEBUG",
            log::Level::Trace => "TRACE",
        };
        line.push_str(level);
        line.push_str(" [");
        line.push_str(&self.prefix);
        line.push_str("] ");
        let mut msg = record.args().to_string();
        if let Ok(secrets) = self.secrets.read() {
            for s in secrets.iter() {
                if msg.contains(s.as_str()) {
                    msg = msg.replace(s.as_str(), "***");
                }
            }
        }
        line.push_str(&msg);
        line.push('\n');
        // One write per line, so lines from many processes do not interleave.
        let mut err = std::io::stderr().lock();
        if err.write_all(line.as_bytes()).is_err() {
            // Nowhere left to report a failing stderr; the line is dropped.
        }
    }

    fn flush(&self) {
        if std::io::stderr().flush().is_err() {
            // As above: stderr is gone, nothing to tell.
        }
    }
}

/// Installs the logger once per process. `prefix` is `Parent` or
/// `Worker bot-N`; `spec` is a RUST_LOG filter such as `info`.
pub fn init(prefix: &str, spec: &str) {
    let timestamps = std::env::var_os("JOURNAL_STREAM").is_none();
    let filter = build_filter(spec);
    let max = filter.filter();
    let logger = FleetLogger {
        prefix: prefix.to_string(),
        timestamps,
        filter: RwLock::new(filter),
        secrets: RwLock::new(Vec::new()),
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
            if !s.iter().any(|x| x == secret) {
                s.push(secret.to_string());
            }
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
    fn formats_utc_timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_345_500_250);
        assert_eq!(utc_timestamp(t), "2026-11-22T11:05:00.250Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
