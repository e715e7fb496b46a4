//! The client side of the health server: `botfleet status` (the fleet as a
//! table, or the /health JSON) and `botfleet health` (one line and an exit
//! code, for Docker HEALTHCHECK, cron and monitors). Both only GET /health
//! from a running supervisor; they must never signal or change the fleet,
//! and never print a token (the server never sends one).

use crate::config::Config;
use crate::exit;
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
        if let Some(n) = w["memory_restarts"].as_u64().filter(|n| *n > 0) {
            out.push_str(&format!(
                "      ↳ bot-{}: {n} of its restarts for WORKER_MAX_RSS_MB\n",
                w["index"]
            ));
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

/// Where `status` and `health` look for the running fleet: `--url` as
/// given; `--port` on loopback; otherwise, the way `stop` finds it, from the
/// env file: the address the supervisor recorded beside its lock (the port
/// it actually bound, fallbacks included), then HEALTH_BIND with PORT,
/// PORT+1, PORT+2 (PORT from the file, else the environment, else 8001).
pub fn candidates(env_file: &Path, url: Option<&str>, port: Option<u16>) -> Vec<String> {
    if let Some(u) = url {
        return vec![u.to_string()];
    }
    if let Some(p) = port {
        return vec![format!("http://127.0.0.1:{p}/health")];
    }
    let mut out = Vec::new();
    let (lock_path, _) = crate::control::lock_path(env_file);
    if let Some(addr) = crate::lock::read_health_addr(&lock_path) {
        out.push(format!("http://{}/health", connect_addr(addr)));
    }
    let env = |k: &str| std::env::var(k).ok();
    let (host, first) = match Config::load(env_file, &env, true) {
        Ok(c) => (host_of(c.settings.health_bind), c.settings.port),
        Err(_) => (
            "127.0.0.1".to_string(),
            env("PORT")
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(DEFAULT_PORT),
        ),
    };
    for offset in 0..=crate::health::PORT_FALLBACKS {
        let Some(p) = first.checked_add(offset) else {
            break;
        };
        let u = format!("http://{host}:{p}/health");
        if !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// A recorded bind address as one to connect to (a wildcard is loopback).
fn connect_addr(addr: std::net::SocketAddr) -> String {
    format!("{}:{}", host_of(addr.ip()), addr.port())
}

/// Asks each candidate in turn; the first botfleet /health wins (its URL
/// and answer).
fn find(candidates: &[String]) -> Result<(String, Value), Vec<StatusError>> {
    let mut failures = Vec::new();
    for url in candidates {
        match fetch(url) {
            Ok(h) => return Ok((url.clone(), h)),
            Err(e) => failures.push(e),
        }
    }
    Err(failures)
}

/// `botfleet status [--env-file F] [--json | --watch]`.
pub fn status(env_file: &Path, json: bool, watch: bool) -> i32 {
    if let Err(code) = crate::control::env_file_exists(env_file) {
        return code;
    }
    let urls = candidates(env_file, None, None);
    match find(&urls) {
        Ok((url, h)) => {
            if watch {
                let env = |k: &str| std::env::var(k).ok();
                let state_dir = Config::load(env_file, &env, true)
                    .map(|c| c.settings.state_dir)
                    .unwrap_or_else(|_| std::path::PathBuf::from("./state"));
                return crate::watch::run(&url, &state_dir);
            }
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
            exit::OK
        }
        Err(failures) => {
            eprintln!(
                "botfleet is not answering at {} (is it running? is PORT right in {}?):",
                urls.join(", "),
                env_file.display()
            );
            for f in failures {
                eprintln!("  {f}");
            }
            exit::FAILURE
        }
    }
}

/// What `botfleet health` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Liveness (the default): fails only for what a restart could fix.
    Live,
    /// Readiness: every bot ready and polling.
    Ready,
}

/// The one line `botfleet health` prints, and whether the probe passes.
pub fn summarize(h: &Value, probe: Probe) -> (bool, String) {
    let empty = vec![];
    let workers = h["workers"].as_array().unwrap_or(&empty);
    let total = workers.len();
    let ready_count = workers
        .iter()
        .filter(|w| w["state"].as_str() == Some("ready"))
        .count();
    let status = h["status"].as_str().unwrap_or("?");
    // A server from before liveness and readiness: healthy or not.
    let live = h["live"].as_bool().unwrap_or(status == "healthy");
    let ready = h["ready"].as_bool().unwrap_or(status == "healthy");
    let passes = match probe {
        Probe::Live => live,
        Probe::Ready => ready,
    };
    if status == "healthy" && ready {
        return (
            passes,
            format!("healthy: {ready_count}/{total} workers ready"),
        );
    }
    let problems: Vec<String> = workers
        .iter()
        .filter(|w| w["healthy"] == Value::Bool(false))
        .map(|w| {
            let state = w["state"].as_str().unwrap_or("?");
            match w["reason"].as_str() {
                Some(reason) => format!("bot-{} {state} ({reason})", w["index"]),
                None => format!("bot-{} {state}", w["index"]),
            }
        })
        .collect();
    let detail = if status == "stopping" {
        "the fleet is shutting down".to_string()
    } else if let Some(stuck) = h["supervisor_stuck_seconds"].as_u64() {
        format!("the supervisor loop has not turned for {stuck} s")
    } else if problems.is_empty() {
        format!("{ready_count}/{total} workers ready")
    } else {
        problems.join(", ")
    };
    let word = match status {
        "healthy" => "not ready",
        "degraded" | "stopping" => status,
        _ => "unhealthy",
    };
    (passes, format!("{word}: {detail}"))
}

/// `botfleet health [--env-file F] [--url U | --port N] [--ready]`.
pub fn health(env_file: &Path, url: Option<&str>, port: Option<u16>, probe: Probe) -> i32 {
    if url.is_none() && port.is_none() {
        if let Err(code) = crate::control::env_file_exists(env_file) {
            return code;
        }
    }
    let urls = candidates(env_file, url, port);
    match find(&urls) {
        Ok((_, h)) => {
            let (ok, line) = summarize(&h, probe);
            println!("{line}");
            if ok {
                exit::OK
            } else {
                exit::FAILURE
            }
        }
        Err(failures) => {
            let why: Vec<String> = failures.iter().map(ToString::to_string).collect();
            println!("unreachable: {}", why.join("; "));
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
    fn candidates_prefer_url_then_port_then_the_env_file() {
        let none = Path::new("/nonexistent/botfleet-test.env");
        assert_eq!(
            candidates(none, Some("http://x/h"), Some(9)),
            vec!["http://x/h".to_string()]
        );
        assert_eq!(
            candidates(none, None, Some(7)),
            vec!["http://127.0.0.1:7/health".to_string()]
        );
        let dir = std::env::temp_dir().join(format!("botfleet-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let env = dir.join("x.env");
        std::fs::write(
            &env,
            format!(
                "TELEGRAM_BOT_TOKENS=1:abc\nPORT=9100\nLOCK_FILE={}\n",
                dir.join("bot.lock").display()
            ),
        )
        .expect("write env");
        let found = candidates(&env, None, None);
        assert_eq!(found[0], "http://127.0.0.1:9100/health", "{found:?}");
        assert_eq!(found.len(), 3, "PORT, PORT+1, PORT+2: {found:?}");
        let lock = crate::lock::InstanceLock::acquire(&dir.join("bot.lock")).expect("lock");
        lock.record_health_addr(Some("0.0.0.0:9200".parse().expect("addr")))
            .expect("record");
        let found = candidates(&env, None, None);
        assert_eq!(found[0], "http://127.0.0.1:9200/health", "recorded first");
        lock.release().expect("release");
        let _cleanup = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn summarizes_healthy_and_failed_fleets() {
        let h = json!({"status": "healthy", "bot_version": "0", "workers": [
            {"index": 1, "state": "ready", "healthy": true},
            {"index": 2, "state": "ready", "healthy": true},
        ]});
        assert_eq!(
            summarize(&h, Probe::Live),
            (true, "healthy: 2/2 workers ready".into())
        );
        let h = json!({"status": "degraded", "live": true, "ready": false, "bot_version": "0", "workers": [
            {"index": 1, "state": "ready", "healthy": true},
            {"index": 2, "state": "failed", "healthy": false, "reason": "token rejected by Telegram"},
        ]});
        let line = "degraded: bot-2 failed (token rejected by Telegram)".to_string();
        assert_eq!(summarize(&h, Probe::Live), (true, line.clone()));
        assert_eq!(summarize(&h, Probe::Ready), (false, line));
        let h = json!({"status": "unhealthy", "live": false, "ready": false, "bot_version": "0", "workers": [
            {"index": 0, "state": "ready", "healthy": false, "reason": "no successful getUpdates for 400 s"},
        ]});
        assert_eq!(
            summarize(&h, Probe::Live),
            (
                false,
                "unhealthy: bot-0 ready (no successful getUpdates for 400 s)".into()
            )
        );
    }
}
