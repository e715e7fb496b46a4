//! The client side of the health server: `botfleet status` (the fleet as a
//! table, or the /health JSON) and `botfleet health` (one line and an exit
//! code, for Docker HEALTHCHECK, cron and monitors). Both only GET /health
//! from a running supervisor; they must never signal or change the fleet,
//! and never print a token (the server never sends one).

use crate::cli::exit;
use crate::config::Config;
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// The port `botfleet health` asks when given neither --url nor --port and
/// PORT is not in the environment (DESIGN.md's default).
pub const DEFAULT_PORT: u16 = 8001;

/// How long one request may take: a monitor wants an answer, not a hang.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why /health could not be read.
#[derive(Debug)]
pub enum StatusError {
    /// Nothing answered (refused, timed out, not HTTP).
    Unreachable { url: String, error: String },
    /// Something answered, but not botfleet's /health.
    NotBotfleet { url: String, status: u16 },
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusError::Unreachable { url, error } => write!(f, "{url}: {error}"),
            StatusError::NotBotfleet { url, status } => {
                write!(f, "{url} answered {status} but not with botfleet's /health")
            }
        }
    }
}

impl std::error::Error for StatusError {}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into()
}

/// Whether a JSON body is botfleet's /health (and not some other server).
pub fn looks_like_health(v: &Value) -> bool {
    v["workers"].is_array() && v["bot_version"].is_string() && v["status"].is_string()
}

/// GETs `url` and returns the /health JSON (answered with 200 or 503).
pub fn fetch(url: &str) -> Result<Value, StatusError> {
    let mut resp = agent()
        .get(url)
        .call()
        .map_err(|e| StatusError::Unreachable {
            url: url.to_string(),
            error: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(4 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| StatusError::Unreachable {
            url: url.to_string(),
            error: e.to_string(),
        })?;
    match serde_json::from_str::<Value>(&body) {
        Ok(v) if looks_like_health(&v) => Ok(v),
        _ => Err(StatusError::NotBotfleet {
            url: url.to_string(),
            status,
        }),
    }
}

/// The host to reach a server bound to `bind`: a wildcard means loopback.
fn host_of(bind: IpAddr) -> String {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".into(),
        IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".into(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Human units for a byte count: `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Human units for seconds: `45s`, `12m05s`, `3h02m`, `2d04h`.
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn cell_secs(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |s| human_secs(s.max(0.0) as u64))
}

fn cell_ago(v: &Value) -> String {
    v.as_f64().map_or_else(
        || "never".into(),
        |s| format!("{} ago", human_secs(s.max(0.0) as u64)),
    )
}

/// The fleet table `botfleet status` prints.
pub fn render_table(h: &Value) -> String {
    let mut out = format!(
        "botfleet {} (config {}): {}, up {}, {} update(s), {} error(s)\n",
        h["bot_version"].as_str().unwrap_or("?"),
        h["config_version"].as_str().unwrap_or("?"),
        h["status"].as_str().unwrap_or("?"),
        cell_secs(&h["uptime_seconds"]),
        h["total_updates"].as_u64().unwrap_or(0),
        h["total_errors"].as_u64().unwrap_or(0),
    );
    out.push_str(&format!(
        "{:<5} {:<26} {:<8} {:<9} {:<8} {:>8} {:>8} {:>7} {:<11} {:>10} {:>7} {:>8}\n",
        "index",
        "username",
        "pid",
        "state",
        "uptime",
        "restarts",
        "updates",
        "errors",
        "last poll",
        "rss",
        "inbox",
        "oldest"
    ));
    let empty = vec![];
    for w in h["workers"].as_array().unwrap_or(&empty) {
        let username = w["username"]
            .as_str()
            .map_or_else(|| "-".into(), |u| format!("@{u}"));
        let pid = w["pid"]
            .as_u64()
            .map_or_else(|| "-".into(), |p| p.to_string());
        let mut state = w["state"].as_str().unwrap_or("?").to_string();
        if w["healthy"] == Value::Bool(false) && state != "failed" {
            state.push('!');
        }
        out.push_str(&format!(
            "{:<5} {:<26} {:<8} {:<9} {:<8} {:>8} {:>8} {:>7} {:<11} {:>10} {:>7} {:>8}\n",
            w["index"].as_u64().unwrap_or(0),
            username,
            pid,
            state,
            cell_secs(&w["uptime_seconds"]),
            w["restarts"].as_u64().unwrap_or(0),
            w["updates"].as_u64().unwrap_or(0),
            w["errors"].as_u64().unwrap_or(0),
            cell_ago(&w["last_poll_ago"]),
            w["rss_bytes"]
                .as_u64()
                .map_or_else(|| "-".into(), human_bytes),
            w["inbox_depth"].as_u64().unwrap_or(0),
            cell_secs(&w["oldest_pending_age"]),
        ));
        if let Some(reason) = w["reason"].as_str() {
            out.push_str(&format!("      ↳ bot-{}: {reason}\n", w["index"]));
        }
        if let Some(why) = w["fetch_paused"].as_str() {
            out.push_str(&format!(
                "      ↳ bot-{}: fetching paused: {why}\n",
                w["index"]
            ));
        }
    }
    out
}

/// `botfleet status [--env-file F] [--json]`.
pub fn status(env_file: &Path, json: bool) -> i32 {
    let env = |k: &str| std::env::var(k).ok();
    let config = match Config::load(env_file, &env, true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("botfleet: {e}");
            return exit::USAGE;
        }
    };
    let s = &config.settings;
    let host = host_of(s.health_bind);
    let mut failures = Vec::new();
    for offset in 0..=crate::health::PORT_FALLBACKS {
        let Some(port) = s.port.checked_add(offset) else {
            break;
        };
        let url = format!("http://{host}:{port}/health");
        match fetch(&url) {
            Ok(h) => {
                if json {
                    match serde_json::to_string_pretty(&h) {
                        Ok(text) => println!("{text}"),
                        Err(e) => {
                            eprintln!("botfleet: cannot print the /health JSON: {e}");
                            return exit::FAILURE;
                        }
                    }
                } else {
                    print!("{}", render_table(&h));
                }
                return exit::OK;
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    eprintln!(
        "botfleet is not answering on {host} ports {}-{} (is it running? is PORT right in {}?):",
        s.port,
        s.port.saturating_add(crate::health::PORT_FALLBACKS),
        env_file.display()
    );
    for f in failures {
        eprintln!("  {f}");
    }
    exit::FAILURE
}

/// The one line `botfleet health` prints, and whether it means healthy.
pub fn summarize(h: &Value) -> (bool, String) {
    let empty = vec![];
    let workers = h["workers"].as_array().unwrap_or(&empty);
    let total = workers.len();
    let ready = workers
        .iter()
        .filter(|w| w["state"].as_str() == Some("ready"))
        .count();
    let status = h["status"].as_str().unwrap_or("?");
    if status == "healthy" {
        return (true, format!("healthy: {ready}/{total} workers ready"));
    }
    let problems: Vec<String> = workers
        .iter()
        .filter(|w| w["healthy"] == Value::Bool(false))
        .map(|w| {
            let state = w["state"].as_str().unwrap_or("?");
            match w["reason"].as_str() {
                Some(reason) if state == "failed" => {
                    format!("bot-{} failed ({reason})", w["index"])
                }
                Some(reason) => format!("bot-{} {state} ({reason})", w["index"]),
                None => format!("bot-{} {state}", w["index"]),
            }
        })
        .collect();
    let detail = if status == "stopping" {
        "the fleet is shutting down".to_string()
    } else if problems.is_empty() {
        format!("{ready}/{total} workers ready")
    } else {
        problems.join(", ")
    };
    (false, format!("unhealthy: {detail}"))
}

/// The URL `botfleet health` asks.
pub fn health_url(url: Option<&str>, port: Option<u16>, env_port: Option<&str>) -> String {
    if let Some(u) = url {
        return u.to_string();
    }
    let port = port
        .or_else(|| env_port.and_then(|p| p.trim().parse().ok()))
        .unwrap_or(DEFAULT_PORT);
    format!("http://127.0.0.1:{port}/health")
}

/// `botfleet health [--url U | --port N]`.
pub fn health(url: Option<&str>, port: Option<u16>) -> i32 {
    let env_port = std::env::var("PORT").ok();
    let url = health_url(url, port, env_port.as_deref());
    match fetch(&url) {
        Ok(h) => {
            let (ok, line) = summarize(&h);
            println!("{line}");
            if ok {
                exit::OK
            } else {
                exit::FAILURE
            }
        }
        Err(e) => {
            println!("unreachable: {e}");
            exit::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(5 * 1024 * 1024 + 1024 * 512), "5.5 MiB");
        assert_eq!(human_secs(5), "5s");
        assert_eq!(human_secs(125), "2m05s");
        assert_eq!(human_secs(3 * 3600 + 120), "3h02m");
        assert_eq!(human_secs(2 * 86_400 + 3600), "2d01h");
    }

    #[test]
    fn health_url_prefers_url_then_port_then_env() {
        assert_eq!(
            health_url(Some("http://x/h"), None, Some("9")),
            "http://x/h"
        );
        assert_eq!(
            health_url(None, Some(7), Some("9")),
            "http://127.0.0.1:7/health"
        );
        assert_eq!(
            health_url(None, None, Some("9")),
            "http://127.0.0.1:9/health"
        );
        assert_eq!(health_url(None, None, None), "http://127.0.0.1:8001/health");
    }

    #[test]
    fn summarizes_healthy_and_failed_fleets() {
        let h = json!({"status": "healthy", "bot_version": "0", "workers": [
            {"index": 1, "state": "ready", "healthy": true},
            {"index": 2, "state": "ready", "healthy": true},
        ]});
        assert_eq!(summarize(&h), (true, "healthy: 2/2 workers ready".into()));
        let h = json!({"status": "unhealthy", "bot_version": "0", "workers": [
            {"index": 1, "state": "ready", "healthy": true},
            {"index": 2, "state": "failed", "healthy": false, "reason": "token rejected by Telegram"},
        ]});
        assert_eq!(
            summarize(&h),
            (
                false,
                "unhealthy: bot-2 failed (token rejected by Telegram)".into()
            )
        );
    }
}
