//! The health server (issue #6): every endpoint and status code, the
//! /restart auth cases, the port fallback, /health following the workers,
//! /metrics through a strict Prometheus text-format parser, and /ping
//! staying fast while 200 clients send nothing or garbage.

mod common;

use common::fleet::{free_port, Fleet};
use common::{http, http_with_timeout, wait_until, SandboxProc};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const AUTH: &str = "health-test-auth-token-42";

fn token(id: u64) -> String {
    format!("{id}:health-test-secret-{id}")
}

fn sandbox_with(ids: &[u64]) -> (SandboxProc, Vec<String>) {
    SandboxProc::with_bots(ids, token, "health")
}

/// One answer: status, the headers we look at, the body.
struct Answer {
    status: u16,
    content_type: String,
    allow: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn call(method: &str, url: &str, auth: Option<&str>) -> Answer {
    let agent = http();
    let result = match method {
        "GET" => {
            let mut r = agent.get(url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        "POST" => {
            let mut r = agent.post(url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.send_empty()
        }
        "PUT" => agent.put(url).send_empty(),
        "DELETE" => agent.delete(url).call(),
        other => panic!("no such method in this test: {other}"),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let allow = header("allow");
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {url}: cannot read the body: {e}"));
    Answer {
        status,
        content_type,
        allow,
        body,
    }
}

fn get(url: &str) -> Answer {
    call("GET", url, None)
}

fn worker_by_index(health: &Value, index: u64) -> Value {
    health["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["index"] == index))
        .cloned()
        .unwrap_or_else(|| panic!("no worker {index} in {health}"))
}

fn assert_no_secret(body: &str, tokens: &[String]) {
    assert!(!body.contains(AUTH), "the auth token leaked: {body}");
    for t in tokens {
        let secret = t.split_once(':').map_or(t.as_str(), |(_, s)| s);
        assert!(!body.contains(secret), "a bot token leaked: {body}");
    }
}

#[test]
fn every_endpoint_answers_with_its_status_and_no_secret() {
    let (sandbox, tokens) = sandbox_with(&[6101, 6102]);
    let fleet = Fleet::start(&sandbox, &tokens, &[("HEALTH_AUTH_TOKEN", AUTH)]);
    fleet.wait_ready(2);
    let base = fleet.health_base();
    let mut bodies = vec![];

    let root = get(&format!("{base}/"));
    assert_eq!(root.status, 200);
    assert!(root.content_type.starts_with("application/json"));
    let v = root.json();
    assert_eq!(v["status"], "online");
    assert_eq!(v["bot"], "botfleet");
    assert!(v["version"].is_string() && v["timestamp"].is_string());
    bodies.push(root.body);

    let ping = get(&format!("{base}/ping"));
    assert_eq!(ping.status, 200);
    assert_eq!(ping.json()["pong"], true);
    assert!(ping.json()["timestamp"].is_string());
    bodies.push(ping.body);

    // Wait for a first heartbeat so every counter is filled in.
    wait_until(
        Duration::from_secs(15),
        "a successful poll in /health",
        || {
            let h = get(&format!("{base}/health")).json();
            h["workers"].as_array().is_some_and(|ws| {
                ws.len() == 2 && ws.iter().all(|w| w["last_poll_ago"].is_number())
            })
        },
    );
    let health = get(&format!("{base}/health"));
    assert_eq!(health.status, 200, "{}", health.body);
    let h = health.json();
    for key in [
        "status",
        "uptime_seconds",
        "last_update_ago",
        "total_updates",
        "total_errors",
        "error_rate",
        "timestamp",
        "bot_version",
        "config_version",
        "workers",
    ] {
        assert!(h.get(key).is_some(), "/health lacks {key}: {h}");
    }
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["config_version"].as_str().map(str::len), Some(12));
    let w = worker_by_index(&h, 0);
    for key in [
        "index",
        "bot_id",
        "username",
        "pid",
        "state",
        "uptime_seconds",
        "restarts",
        "updates",
        "errors",
        "last_poll_ago",
        "last_update_ago",
        "rss_bytes",
    ] {
        assert!(w.get(key).is_some(), "a worker lacks {key}: {w}");
    }
    assert_eq!(w["state"], "ready");
    assert!(w["rss_bytes"].as_u64().is_some_and(|b| b > 100_000), "{w}");
    let pids: HashSet<u64> = h["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["pid"].as_u64()).collect())
        .unwrap_or_default();
    let expected: HashSet<u64> = fleet.workers().into_iter().map(u64::from).collect();
    assert_eq!(pids, expected, "pids in /health are the worker processes");
    bodies.push(health.body);

    let metrics = get(&format!("{base}/metrics"));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        metrics.content_type
    );
    bodies.push(metrics.body);

    let missing = get(&format!("{base}/nope"));
    assert_eq!(missing.status, 404);
    bodies.push(missing.body);

    for (method, path, allow) in [
        ("POST", "/ping", "GET, HEAD"),
        ("PUT", "/health", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("GET", "/restart", "POST"),
        ("PUT", "/restart", "POST"),
    ] {
        let a = call(method, &format!("{base}{path}"), None);
        assert_eq!(a.status, 405, "{method} {path}");
        assert_eq!(a.allow.as_deref(), Some(allow), "{method} {path}");
        bodies.push(a.body);
    }

    for (auth, query, status) in [
        (None, "", 401),
        (Some("Bearer wrong"), "", 401),
        (Some(AUTH), "", 401), // the scheme is required
        (Some(&format!("Bearer {AUTH}x") as &str), "", 401),
        (Some(&format!("Bearer {AUTH}") as &str), "?bot=99", 404),
        (Some(&format!("Bearer {AUTH}") as &str), "?bot=x", 400),
    ] {
        let a = call("POST", &format!("{base}/restart{query}"), auth);
        assert_eq!(
            a.status, status,
            "auth {auth:?} query {query:?}: {}",
            a.body
        );
        bodies.push(a.body);
    }
    for body in &bodies {
        assert_no_secret(body, &tokens);
    }
    assert_no_secret(&fleet.logs(), &tokens);
}

#[test]
fn restart_needs_the_token_and_gives_a_worker_a_new_pid() {
    let (sandbox, tokens) = sandbox_with(&[6201, 6202]);
    let fleet = Fleet::start(&sandbox, &tokens, &[("HEALTH_AUTH_TOKEN", AUTH)]);
    fleet.wait_ready(2);
    let base = fleet.health_base();
    let before = get(&format!("{base}/health")).json();
    let old_pid = worker_by_index(&before, 0)["pid"].clone();
    let other_pid = worker_by_index(&before, 1)["pid"].clone();
    assert!(old_pid.is_u64(), "{before}");

    let a = call(
        "POST",
        &format!("{base}/restart?bot=0"),
        Some(&format!("Bearer {AUTH}")),
    );
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.json()["restarting"], 0);
    assert_no_secret(&a.body, &tokens);
    wait_until(Duration::from_secs(20), "bot-0 back with a new pid", || {
        let w = worker_by_index(&get(&format!("{base}/health")).json(), 0);
        w["state"] == "ready" && w["pid"].is_u64() && w["pid"] != old_pid
    });
    let after = get(&format!("{base}/health")).json();
    assert_eq!(
        worker_by_index(&after, 1)["pid"],
        other_pid,
        "bot-1 untouched"
    );

    let all = call(
        "POST",
        &format!("{base}/restart"),
        Some(&format!("Bearer {AUTH}")),
    );
    assert_eq!(all.status, 202);
    assert_eq!(all.json()["restarting"], "all");
    wait_until(Duration::from_secs(30), "bot-1 restarted too", || {
        let w = worker_by_index(&get(&format!("{base}/health")).json(), 1);
        w["state"] == "ready" && w["pid"].is_u64() && w["pid"] != other_pid
    });
}

#[test]
fn restart_is_forbidden_without_a_configured_token() {
    let (sandbox, tokens) = sandbox_with(&[6301]);
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(1);
    let base = fleet.health_base();
    for auth in [None, Some("Bearer "), Some("Bearer anything")] {
        let a = call("POST", &format!("{base}/restart"), auth);
        assert_eq!(a.status, 403, "{auth:?}: {}", a.body);
    }
    let pids = fleet.workers();
    assert_eq!(pids.len(), 1, "the worker was not restarted");
}

/// Three consecutive free ports (P, P+1, P+2), held until dropped.
fn three_ports() -> (u16, Vec<TcpListener>) {
    for _ in 0..50 {
        let p = free_port();
        if p > 65_000 {
            continue;
        }
        let held: Vec<TcpListener> = (0..3)
            .filter_map(|i| TcpListener::bind(("127.0.0.1", p + i)).ok())
            .collect();
        if held.len() == 3 {
            return (p, held);
        }
    }
    panic!("no three consecutive free ports on loopback");
}

#[test]
fn a_busy_port_falls_back_to_the_next_and_all_busy_runs_without_http() {
    let (sandbox, tokens) = sandbox_with(&[6401]);
    let (port, mut held) = three_ports();
    // Free P+1 and P+2; keep P busy.
    held.truncate(1);
    let fleet = Fleet::start(&sandbox, &tokens, &[("PORT", &port.to_string())]);
    fleet.wait_ready(1);
    let base = fleet.health_base();
    assert_eq!(
        base,
        format!("http://127.0.0.1:{}", port + 1),
        "PORT+1 taken"
    );
    assert_eq!(get(&format!("{base}/ping")).status, 200);
    drop(fleet);

    let (port, held_all) = three_ports();
    let fleet = Fleet::start(&sandbox, &tokens, &[("PORT", &port.to_string())]);
    fleet.wait_ready(1);
    fleet.wait_log("Health server disabled", Duration::from_secs(5));
    assert!(!fleet.logs().contains("Health server listening"));
    assert_eq!(fleet.workers().len(), 1, "the fleet runs on without HTTP");
    drop(held_all);
    drop(held);
}

#[test]
fn health_is_503_while_a_worker_cannot_poll_and_200_again_after() {
    let (sandbox, tokens) = sandbox_with(&[6501, 6502]);
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            // An idle bot's polls repeat one offset, which the sandbox (as
            // Telegram) holds for 3 s; its heartbeat reports every 5 s. The
            // threshold leaves room for both on a loaded machine.
            ("UNHEALTHY_THRESHOLD_SECS", "12"),
            ("POLL_TIMEOUT_SECS", "1"),
        ],
    );
    fleet.wait_ready(2);
    let base = fleet.health_base();
    let url = format!("{base}/health");
    wait_until(Duration::from_secs(15), "healthy at first", || {
        get(&url).status == 200
    });
    sandbox.fault(serde_json::json!({
        "kind": "500", "bot_id": 6502, "method": "getUpdates", "probability": 1.0
    }));
    wait_until(
        Duration::from_secs(30),
        "503 once bot-1 stops polling",
        || get(&url).status == 503,
    );
    let h = get(&url).json();
    assert_eq!(h["status"], "unhealthy");
    let w2 = worker_by_index(&h, 1);
    assert_eq!(w2["healthy"], false, "{h}");
    assert!(
        w2["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no successful getUpdates")),
        "{w2}"
    );
    assert_eq!(worker_by_index(&h, 0)["healthy"], true, "{h}");
    sandbox.clear_faults();
    wait_until(
        Duration::from_secs(40),
        "200 once bot-1 polls again",
        || get(&url).status == 200,
    );
}

#[test]
fn health_is_503_when_a_token_is_rejected() {
    let (sandbox, mut tokens) = sandbox_with(&[6601]);
    // Never registered with the sandbox: getMe answers 401.
    tokens.push(token(6602));
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    let base = fleet.health_base();
    let url = format!("{base}/health");
    wait_until(Duration::from_secs(20), "bot-1 failed in /health", || {
        let a = get(&url);
        a.status == 503
            && a.json()["workers"]
                .as_array()
                .is_some_and(|ws| ws.iter().any(|w| w["state"] == "failed"))
    });
    let h = get(&url).json();
    let failed: Vec<&Value> = h["workers"]
        .as_array()
        .map(|ws| ws.iter().filter(|w| w["state"] == "failed").collect())
        .unwrap_or_default();
    assert_eq!(failed.len(), 1, "{h}");
    assert_eq!(failed[0]["reason"], "token rejected by Telegram", "{h}");
    assert_no_secret(&h.to_string(), &tokens);
}

// ---- a strict parser for the Prometheus text exposition format 0.0.4 ----

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// Parses `{a="x",b="y"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("a bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("a raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("labels must be separated by commas".into());
        }
    }
}

/// Parses a whole exposition; any deviation is an error.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut samples = vec![];
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    let family_of = |name: &str, typed: &BTreeMap<String, String>| -> Option<String> {
        if typed.contains_key(name) {
            return Some(name.to_string());
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if matches!(
                    typed.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                ) {
                    return Some(base.to_string());
                }
            }
        }
        None
    };
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // a plain comment
            }
            let name = parts.next().ok_or_else(|| at("no metric name".into()))?;
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if finished.contains(name)
                || current.as_deref().is_some_and(|c| c != name) && typed.contains_key(name)
            {
                return Err(at(format!("{name} comes back after another family")));
            }
            let rest = parts.next().unwrap_or("");
            if keyword == "TYPE" {
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                    return Err(at(format!("bad type {rest:?}")));
                }
                if typed.insert(name.to_string(), rest.to_string()).is_some() {
                    return Err(at(format!("a second TYPE for {name}")));
                }
                if samples
                    .iter()
                    .any(|s: &Sample| family_of(&s.name, &typed).as_deref() == Some(name))
                {
                    return Err(at(format!("TYPE for {name} after its samples")));
                }
            } else if !helped.insert(name.to_string()) {
                return Err(at(format!("a second HELP for {name}")));
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                current = Some(name.to_string());
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("one space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("extra fields after the value".into()));
        }
        let family = family_of(name, &typed)
            .ok_or_else(|| at(format!("sample {name} before its TYPE line")))?;
        if current.as_deref() != Some(family.as_str()) {
            return Err(at(format!("sample of {family} outside its family block")));
        }
        let key = format!("{name}{labels:?}");
        if !series.insert(key.clone()) {
            return Err(at(format!("duplicate series {key}")));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for name in typed.keys() {
        if !helped.contains(name) {
            return Err(format!("{name} has no HELP line"));
        }
    }
    Ok(samples)
}

#[test]
fn the_parser_itself_is_strict() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{i=\"1\",u=\"q\\\"\\\\\\n\"} 3\n";
    let s = parse_exposition(good).expect("valid exposition");
    assert_eq!(s[0].labels["u"], "q\"\\\n");
    for bad in [
        "a 1\n",                                                              // no TYPE
        "# HELP a x\n# TYPE a gauge\na 1",                                    // no final newline
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n",                             // duplicate series
        "# HELP a x\n# TYPE a gauge\na{i=\"1\\x\"} 1\n",                      // bad escape
        "# HELP a x\n# TYPE a gauge\na{1i=\"1\"} 1\n",                        // bad label name
        "# HELP a x\n# TYPE a gauge\na one\n",                                // bad value
        "# HELP a x\n# TYPE a gauge\n# HELP b y\n# TYPE b gauge\nb 1\na 1\n", // interleaved
        "# TYPE a gauge\na 1\n",                                              // no HELP
        "# HELP a x\n# TYPE a gauge\na{i=\"1\" } 1\n",                        // bad separator
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

#[test]
fn metrics_pass_a_strict_prometheus_parser() {
    let (sandbox, tokens) = sandbox_with(&[6701, 6702]);
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(2);
    let base = fleet.health_base();
    sandbox.send_text(6701, 5, 5, "/ping");
    wait_until(Duration::from_secs(15), "an update counted", || {
        let text = get(&format!("{base}/metrics")).body;
        parse_exposition(&text).is_ok_and(|s| {
            s.iter().any(|x| {
                x.name == "botfleet_worker_updates_total"
                    && x.labels.get("index").map(String::as_str) == Some("0")
                    && x.value >= 1.0
            })
        })
    });
    let text = get(&format!("{base}/metrics")).body;
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let find = |name: &str, label: (&str, &str)| {
        samples
            .iter()
            .find(|s| s.name == name && s.labels.get(label.0).map(String::as_str) == Some(label.1))
            .unwrap_or_else(|| panic!("no {name}{{{}={}}} in\n{text}", label.0, label.1))
    };
    assert_eq!(find("botfleet_workers", ("state", "ready")).value, 2.0);
    assert_eq!(find("botfleet_workers", ("state", "failed")).value, 0.0);
    let updates = find(
        "botfleet_worker_updates_total",
        ("username", "health6701_bot"),
    );
    assert_eq!(updates.labels["index"], "0");
    for name in [
        "botfleet_worker_errors_total",
        "botfleet_worker_restarts_total",
        "botfleet_worker_last_poll_success_timestamp_seconds",
        "botfleet_worker_resident_memory_bytes",
        "botfleet_worker_healthy",
    ] {
        for index in ["0", "1"] {
            find(name, ("index", index));
        }
    }
    assert!(find("botfleet_worker_resident_memory_bytes", ("index", "1")).value > 100_000.0);
    let poll = find(
        "botfleet_worker_last_poll_success_timestamp_seconds",
        ("index", "0"),
    );
    assert!(poll.value > 1.7e9, "a Unix time in seconds: {}", poll.value);
    let info = samples
        .iter()
        .find(|s| s.name == "botfleet_info")
        .expect("an info metric");
    assert_eq!(info.labels["config_version"].len(), 12);
    assert_eq!(info.value, 1.0);
    assert!(samples
        .iter()
        .any(|s| s.name == "botfleet_config_reloads_total" && s.value == 0.0));
    assert_no_secret(&text, &tokens);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn ping_stays_fast_while_200_clients_send_nothing_or_garbage() {
    let (sandbox, tokens) = sandbox_with(&[6801]);
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(1);
    let base = fleet.health_base();
    let addr = base.trim_start_matches("http://").to_string();
    let mut abusers = Vec::with_capacity(200);
    for n in 0..200 {
        let mut s = TcpStream::connect(&addr).expect("connect an abusive client");
        match n % 4 {
            0 | 1 => {} // sends nothing at all
            2 => s
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("a partial head"),
            _ => s
                .write_all(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00])
                .expect("binary garbage without a newline"),
        }
        abusers.push(s);
    }
    let agent = http_with_timeout(Duration::from_secs(2));
    let mut times = Vec::with_capacity(50);
    for n in 0..50 {
        // The slow ones keep trickling a byte now and then.
        if let Some(s) = abusers.get_mut(2 + 4 * (n % 50)) {
            s.write_all(b"a")
                .expect("the slow client is still connected");
        }
        let t = Instant::now();
        let mut resp = agent
            .get(&format!("{base}/ping"))
            .call()
            .unwrap_or_else(|e| panic!("ping {n} failed under abuse: {e}"));
        let body = resp.body_mut().read_to_string().expect("ping body");
        times.push(t.elapsed());
        assert_eq!(resp.status().as_u16(), 200);
        assert!(body.contains("\"pong\":true"));
    }
    // The abusers are still connected (the server gives them 5 s).
    let mut open = 0;
    for s in &mut abusers {
        s.set_nonblocking(true).expect("non-blocking probe");
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            open += 1;
        }
    }
    times.sort();
    let (p50, p95, max) = (
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[times.len() - 1],
    );
    eprintln!(
        "/ping under 200 abusive connections ({open} still open): p50 {p50:?}, p95 {p95:?}, max {max:?}"
    );
    assert!(
        open >= 190,
        "the abusive clients stayed connected during the pings"
    );
    assert!(p95 < Duration::from_millis(100), "p95 {p95:?}");
    assert!(max < Duration::from_millis(500), "max {max:?}");

    // And the server does not keep them for ever: each is answered 408 or
    // closed once its 5 s are up.
    for s in &mut abusers {
        s.set_nonblocking(false).expect("blocking again");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
    }
    let t = Instant::now();
    for s in &mut abusers {
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .expect("the server closes the connection, it does not hang");
        let text = String::from_utf8_lossy(&buf);
        assert!(
            buf.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 400"),
            "{text}"
        );
    }
    eprintln!(
        "every abusive connection closed by the server after {:?} more",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(8));
}

#[test]
fn oversized_requests_are_refused() {
    let (sandbox, tokens) = sandbox_with(&[6901]);
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(1);
    let addr = fleet
        .health_base()
        .trim_start_matches("http://")
        .to_string();
    let exchange = |bytes: &[u8]| -> String {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(bytes).expect("send");
        let mut buf = Vec::new();
        let _partial_is_fine = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };
    // Just over the 8 KiB cap, all of it read by the server before it answers
    // (more unread bytes would make the close a reset).
    let huge_header = format!("GET /ping HTTP/1.1\r\nX: {}", "a".repeat(9_000));
    assert!(exchange(huge_header.as_bytes()).starts_with("HTTP/1.1 431"));
    assert!(
        exchange(b"POST /restart HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n")
            .starts_with("HTTP/1.1 413")
    );
    assert!(exchange(b"hello there\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(exchange(b"GET /ping HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    assert!(exchange(b"GET /ping HTTP/1.0\r\n\r\n").contains("\"pong\":true"));
}

#[test]
fn keepalive_url_is_fetched_every_heartbeat_interval() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a keep-alive target");
    let target = format!(
        "http://{}/wake",
        listener.local_addr().expect("its address")
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            let first = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let _client_may_be_gone =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send(first).is_err() {
                break;
            }
        }
    });
    let (sandbox, tokens) = sandbox_with(&[6951]);
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("KEEPALIVE_URL", &target), ("HEARTBEAT_INTERVAL_SECS", "1")],
    );
    let t0 = Instant::now();
    for n in 0..2 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("keep-alive ping {n} never came; log:\n{}", fleet.logs()));
        assert_eq!(line, "GET /wake HTTP/1.1");
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "paced, not a burst"
    );
}
