//! /metrics in the Prometheus text exposition format 0.0.4: every family
//! with its HELP and TYPE lines before its samples, per-bot series labelled
//! `index` and `username`, label values escaped as the format says. This
//! module only formats a snapshot; it must never read a clock or a lock of
//! its own, and never put a token in a label.

use super::routes::{worker_health, Live};
use crate::fleet::{FleetView, WorkerView};
use std::fmt::Write;
use std::time::SystemTime;

/// The worker states, so every state has a series even when it counts 0.
const STATES: [&str; 5] = ["starting", "ready", "backoff", "failed", "stopping"];

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _infallible = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        let _infallible = write!(self.out, "{name}");
        if !labels.is_empty() {
            let rendered: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _infallible = write!(self.out, "{{{}}}", rendered.join(","));
        }
        let _infallible = writeln!(self.out, " {}", format_value(value));
    }

    /// One family with a sample per worker, labelled `index` and `username`;
    /// a worker whose `value` is `None` has no sample.
    fn per_worker(
        &mut self,
        workers: &[WorkerView],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&WorkerView) -> Option<f64>,
    ) {
        self.header(name, kind, help);
        for w in workers {
            if let Some(v) = value(w) {
                let labels = [
                    ("index", w.index.to_string()),
                    ("username", w.username.clone().unwrap_or_default()),
                ];
                self.sample(name, &labels, v);
            }
        }
    }
}

/// Milliseconds since the epoch as Unix seconds, 0 for none.
fn unix_seconds_or_zero(ms: Option<u64>) -> f64 {
    ms.map_or(0.0, |ms| ms as f64 / 1000.0)
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The whole exposition for one snapshot.
pub fn render(
    view: &FleetView,
    live: &Live,
    now: SystemTime,
    rss: &dyn Fn(u32) -> Option<u64>,
) -> String {
    let mut out = String::with_capacity(2048);
    let mut f = Family { out: &mut out };

    f.header(
        "botfleet_info",
        "gauge",
        "Build and running configuration; the value is always 1.",
    );
    f.sample(
        "botfleet_info",
        &[
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("config_version", view.config_version.clone()),
        ],
        1.0,
    );

    f.header(
        "botfleet_uptime_seconds",
        "gauge",
        "Seconds since the supervisor started.",
    );
    let uptime = view
        .started
        .and_then(|t| now.duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64().floor());
    f.sample("botfleet_uptime_seconds", &[], uptime);

    f.header(
        "botfleet_config_reloads_total",
        "counter",
        "Configuration reloads applied since the supervisor started.",
    );
    f.sample(
        "botfleet_config_reloads_total",
        &[],
        view.config_reloads as f64,
    );

    f.header("botfleet_workers", "gauge", "Workers by state.");
    for state in STATES {
        let n = view.workers.iter().filter(|w| w.state == state).count();
        f.sample(
            "botfleet_workers",
            &[("state", state.to_string())],
            n as f64,
        );
    }

    let workers = &view.workers;
    f.per_worker(
        workers,
        "botfleet_worker_healthy",
        "gauge",
        "1 when the worker is healthy (not failed, polled successfully within UNHEALTHY_THRESHOLD_SECS).",
        |w| {
            let ok = worker_health(w, view.started, live.unhealthy_threshold, now)
                == super::routes::WorkerHealth::Ok;
            Some(if ok { 1.0 } else { 0.0 })
        },
    );
    f.per_worker(
        workers,
        "botfleet_worker_updates_total",
        "counter",
        "Updates handled by the worker's current process.",
        |w| Some(w.counters.updates as f64),
    );
    f.per_worker(
        workers,
        "botfleet_worker_errors_total",
        "counter",
        "Errors seen by the worker's current process.",
        |w| Some(w.counters.errors as f64),
    );
    f.per_worker(
        workers,
        "botfleet_worker_restarts_total",
        "counter",
        "Restarts of the worker since the supervisor started.",
        |w| Some(f64::from(w.restarts)),
    );
    f.per_worker(
        workers,
        "botfleet_worker_memory_restarts_total",
        "counter",
        "Restarts of the worker for WORKER_MAX_RSS_MB (also in restarts_total).",
        |w| Some(f64::from(w.memory_restarts)),
    );
    f.per_worker(
        workers,
        "botfleet_worker_last_poll_success_timestamp_seconds",
        "gauge",
        "Unix time of the worker's last successful getUpdates (0: never).",
        |w| Some(unix_seconds_or_zero(w.counters.last_poll_ok_ms)),
    );
    f.per_worker(
        workers,
        "botfleet_worker_inbox_depth",
        "gauge",
        "Updates in the worker's inbox not done yet.",
        |w| Some(w.counters.inbox_depth as f64),
    );
    f.per_worker(
        workers,
        "botfleet_worker_oldest_pending_timestamp_seconds",
        "gauge",
        "Unix time the oldest update not done was fetched (0: none pending).",
        |w| Some(unix_seconds_or_zero(w.counters.oldest_pending_ms)),
    );
    f.per_worker(
        workers,
        "botfleet_worker_inbox_journal_bytes",
        "gauge",
        "Size of the worker's inbox journal.",
        |w| Some(w.counters.journal_bytes as f64),
    );
    f.per_worker(
        workers,
        "botfleet_worker_fetch_paused",
        "gauge",
        "1 while the worker does not fetch (inbox at its cap, disk full).",
        |w| {
            Some(if w.counters.fetch_paused.is_some() {
                1.0
            } else {
                0.0
            })
        },
    );
    f.per_worker(
        workers,
        "botfleet_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of the worker process (absent while it has none).",
        |w| w.pid.and_then(rss).map(|bytes| bytes as f64),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn formats_values() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(f64::NAN), "NaN");
    }
}
