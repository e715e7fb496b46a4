//! What each health path means: `GET /`, `/ping`, `/health`, `/metrics`,
//! `POST /restart`. A request becomes an answer from a snapshot of the
//! supervisor's `FleetView` (the lock is held only to clone it) and the live
//! health settings. This module must never put a token in an answer, never
//! block on anything but that short lock, and never act on the fleet other
//! than by sending `Event::Restart` into the supervisor's channel.

use super::server::{Request, Response};
use crate::fleet::{Event, FleetView, WorkerView};
use serde_json::{json, Value};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The settings the routes read; replaced whole on a reload.
#[derive(Clone, PartialEq)]
pub struct Live {
    pub auth_token: Option<String>,
    pub unhealthy_threshold: Duration,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("unhealthy_threshold", &self.unhealthy_threshold)
            .finish()
    }
}

/// Everything the routes need, shared by the handler threads.
pub struct Context {
    pub view: Arc<Mutex<FleetView>>,
    pub tx: Mutex<Sender<Event>>,
    pub live: RwLock<Live>,
}

impl Context {
    fn snapshot(&self) -> FleetView {
        match self.view.lock() {
            Ok(v) => v.clone(),
            // The supervisor panicked mid-update; plain values, still readable.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn live(&self) -> Live {
        match self.live.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The known paths and the one method each takes.
const ROUTES: [(&str, &str); 7] = [
    ("/", "GET"),
    ("/ping", "GET"),
    ("/health", "GET"),
    ("/health/live", "GET"),
    ("/health/ready", "GET"),
    ("/metrics", "GET"),
    ("/restart", "POST"),
];

/// Answers one request.
pub fn route(ctx: &Context, req: &Request) -> Response {
    let Some((_, allowed)) = ROUTES.iter().find(|(p, _)| *p == req.path) else {
        return Response::json(404, &json!({"error": "not found"}));
    };
    let method_ok = req.method == *allowed || (*allowed == "GET" && req.method == "HEAD");
    if !method_ok {
        let allow = if *allowed == "GET" {
            "GET, HEAD"
        } else {
            allowed
        };
        return Response::json(405, &json!({"error": "method not allowed", "allow": allow}))
            .with_header("Allow", allow);
    }
    let now = SystemTime::now();
    match req.path.as_str() {
        "/" => Response::json(
            200,
            &json!({
                "status": "online",
                "bot": "botfleet",
                "version": env!("CARGO_PKG_VERSION"),
                "endpoints": ["/", "/ping", "/health", "/health/live", "/health/ready", "/metrics", "/restart"],
                "timestamp": crate::logging::utc_timestamp(now),
            }),
        ),
        "/ping" => Response::json(
            200,
            &json!({"pong": true, "timestamp": crate::logging::utc_timestamp(now)}),
        ),
        "/health" | "/health/live" | "/health/ready" => {
            let (verdict, body) = health_json(&ctx.snapshot(), &ctx.live(), now, &rss_of);
            let ok = match req.path.as_str() {
                "/health/live" => verdict.live(),
                "/health/ready" => verdict.ready,
                _ => verdict.overall == Overall::Healthy,
            };
            Response::json(if ok { 200 } else { 503 }, &body)
        }
        "/metrics" => Response::text(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(&ctx.snapshot(), &ctx.live(), now, &rss_of),
        ),
        _ => restart(ctx, req),
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    crate::sys::memory_of(pid).map(|(rss, _)| rss)
}

/// Compares two byte strings in time that depends only on their lengths'
/// maximum, not on where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

fn restart(ctx: &Context, req: &Request) -> Response {
    let live = ctx.live();
    let Some(expected) = live.auth_token.as_deref().filter(|t| !t.is_empty()) else {
        return Response::json(
            403,
            &json!({"error": "restart over HTTP is disabled: HEALTH_AUTH_TOKEN is not set"}),
        );
    };
    let given = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
        return Response::json(401, &json!({"error": "missing or wrong bearer token"}))
            .with_header("WWW-Authenticate", "Bearer");
    }
    let index = match req.query_param("bot") {
        None => None,
        Some(n) => match n.parse::<u32>() {
            Ok(i) => Some(i),
            Err(_) => return Response::json(400, &json!({"error": "bot must be a worker index"})),
        },
    };
    if let Some(i) = index {
        if !ctx.snapshot().workers.iter().any(|w| w.index == i) {
            return Response::json(404, &json!({"error": format!("no worker with index {i}")}));
        }
    }
    let sent = match ctx.tx.lock() {
        Ok(tx) => tx.send(Event::Restart { index }).is_ok(),
        Err(poisoned) => poisoned.into_inner().send(Event::Restart { index }).is_ok(),
    };
    if !sent {
        return Response::json(503, &json!({"error": "the supervisor is stopping"}));
    }
    log::info!(
        "Restart of {} requested over HTTP",
        index.map_or_else(|| "every worker".to_string(), |i| format!("bot-{i}"))
    );
    Response::json(
        202,
        &json!({"restarting": index.map_or(json!("all"), |i| json!(i))}),
    )
}

fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds from `then_ms` (ms since the epoch) to `now`, never negative.
fn ago(now: SystemTime, then_ms: Option<u64>) -> Option<f64> {
    let then = then_ms?;
    Some(ms_of(now).saturating_sub(then) as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How long the supervisor loop may go without turning (it turns at least
/// once a second) before /health calls it stuck.
pub const LOOP_STUCK: Duration = Duration::from_secs(30);

/// One worker's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerHealth {
    /// Polling as it should (or still within its first threshold).
    Ok,
    /// A condition a restart of botfleet cannot fix: `failed` (a rejected
    /// token, a crash loop, a bad setting) or a lasting 409 conflict (a
    /// poller elsewhere, a webhook). Degrades the fleet; does not fail
    /// liveness, since restarting the process would not help.
    Failed(String),
    /// It should be polling and is not: fails liveness.
    Unhealthy(String),
}

/// The fleet's overall state, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Overall {
    Stopping,
    Unhealthy,
    Degraded,
    Healthy,
}

impl Overall {
    pub fn name(self) -> &'static str {
        match self {
            Overall::Stopping => "stopping",
            Overall::Unhealthy => "unhealthy",
            Overall::Degraded => "degraded",
            Overall::Healthy => "healthy",
        }
    }
}

/// What /health, /health/live and /health/ready answer from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub overall: Overall,
    /// Every worker is `ready` and polling: traffic can be counted on.
    pub ready: bool,
}

impl Verdict {
    /// Liveness: only what a restart of botfleet could fix fails it (a bot
    /// that should poll and does not, a stuck loop); `failed` bots and a
    /// bounded shutdown do not.
    pub fn live(&self) -> bool {
        self.overall != Overall::Unhealthy
    }
}

/// One worker's verdict (see `WorkerHealth`).
pub fn worker_health(
    w: &WorkerView,
    started: Option<SystemTime>,
    threshold: Duration,
    now: SystemTime,
) -> WorkerHealth {
    if w.state == "failed" {
        return WorkerHealth::Failed(w.failure.clone().unwrap_or_else(|| "failed".to_string()));
    }
    // A fresh worker has until the threshold for its first good poll.
    let reference = w
        .counters
        .last_poll_ok_ms
        .or(w.running_since.map(ms_of))
        .or(started.map(ms_of));
    match ago(now, reference) {
        // Another host's poller or a webhook (409) is not something a
        // restart of botfleet can fix either: it degrades, like `failed`.
        Some(secs) if secs > threshold.as_secs_f64() && w.counters.conflict => {
            WorkerHealth::Failed(format!(
                "no successful getUpdates for {} s: 409 Conflict, another poller or a webhook holds this token",
                secs.round() as u64
            ))
        }
        Some(secs) if secs > threshold.as_secs_f64() => {
            let mut why = format!("no successful getUpdates for {} s", secs.round() as u64);
            if let Some(waiting) = &w.counters.waiting {
                why.push_str(&format!(" (waiting: {waiting})"));
            }
            WorkerHealth::Unhealthy(why)
        }
        // A stuck inbox is unhealthy like a stalled poll.
        _ => match ago(now, w.counters.oldest_pending_ms) {
            Some(secs) if secs > threshold.as_secs_f64() => {
                WorkerHealth::Unhealthy(format!(
                    "the oldest update not done is {} s old ({} in the inbox)",
                    secs.round() as u64,
                    w.counters.inbox_depth
                ))
            }
            _ => WorkerHealth::Ok,
        },
    }
}

/// The /health body and the verdict the three health paths answer from.
pub fn health_json(
    view: &FleetView,
    live: &Live,
    now: SystemTime,
    rss: &dyn Fn(u32) -> Option<u64>,
) -> (Verdict, Value) {
    let mut overall = Overall::Healthy;
    let mut ready = !view.shutting_down;
    let mut total_updates = 0u64;
    let mut total_errors = 0u64;
    let mut last_update: Option<u64> = None;
    let mut workers = Vec::with_capacity(view.workers.len());
    for w in &view.workers {
        let verdict = worker_health(w, view.started, live.unhealthy_threshold, now);
        let reason = match &verdict {
            WorkerHealth::Ok => None,
            WorkerHealth::Failed(why) => {
                overall = overall.min(Overall::Degraded);
                Some(why.clone())
            }
            WorkerHealth::Unhealthy(why) => {
                overall = overall.min(Overall::Unhealthy);
                Some(why.clone())
            }
        };
        ready &= w.state == "ready" && verdict == WorkerHealth::Ok;
        total_updates += w.counters.updates;
        total_errors += w.counters.errors;
        last_update = last_update.max(w.counters.last_update_ms);
        let uptime = w
            .running_since
            .and_then(|t| now.duration_since(t).ok())
            .map(|d| d.as_secs());
        workers.push(json!({
            "index": w.index,
            "bot_id": w.bot_id,
            "username": w.username,
            "pid": w.pid,
            "state": w.state,
            "healthy": verdict == WorkerHealth::Ok,
            "reason": reason,
            "waiting": w.counters.waiting,
            "uptime_seconds": uptime,
            "restarts": w.restarts,
            "memory_restarts": w.memory_restarts,
            "updates": w.counters.updates,
            "errors": w.counters.errors,
            "conflict": w.counters.conflict,
            "last_poll_ago": ago(now, w.counters.last_poll_ok_ms).map(round3),
            "last_update_ago": ago(now, w.counters.last_update_ms).map(round3),
            "rss_bytes": w.pid.and_then(rss),
            "inbox_depth": w.counters.inbox_depth,
            "oldest_pending_age": ago(now, w.counters.oldest_pending_ms).map(round3),
            "journal_bytes": w.counters.journal_bytes,
            "fetch_paused": w.counters.fetch_paused,
        }));
    }
    let loop_stuck = view
        .last_turn
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| d.as_secs())
        .filter(|s| *s > LOOP_STUCK.as_secs());
    if loop_stuck.is_some() {
        overall = Overall::Unhealthy;
        ready = false;
    }
    if view.shutting_down {
        overall = Overall::Stopping;
    }
    let calls = total_updates + total_errors;
    let error_rate = if calls == 0 {
        0.0
    } else {
        round3(total_errors as f64 / calls as f64)
    };
    let uptime = view
        .started
        .and_then(|t| now.duration_since(t).ok())
        .map_or(0, |d| d.as_secs());
    let verdict = Verdict { overall, ready };
    let body = json!({
        "status": overall.name(),
        "live": verdict.live(),
        "ready": ready,
        "supervisor_stuck_seconds": loop_stuck,
        "uptime_seconds": uptime,
        "last_update_ago": ago(now, last_update).map(round3),
        "total_updates": total_updates,
        "total_errors": total_errors,
        "error_rate": error_rate,
        "timestamp": crate::logging::utc_timestamp(now),
        "bot_version": env!("CARGO_PKG_VERSION"),
        "config_version": view.config_version,
        "unhealthy_threshold_secs": live.unhealthy_threshold.as_secs(),
        "workers": workers,
    });
    (verdict, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::Counters;

    fn worker(state: &'static str, last_poll_ms: Option<u64>) -> WorkerView {
        WorkerView {
            index: 1,
            bot_id: 42,
            username: Some("a_bot".into()),
            pid: Some(1234),
            state,
            failure: None,
            running_since: None,
            restarts: 0,
            memory_restarts: 0,
            counters: Counters {
                last_poll_ok_ms: last_poll_ms,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn health_follows_failure_threshold_and_shutdown() {
        let now = SystemTime::now();
        let live = Live {
            auth_token: Some("tok".into()),
            unhealthy_threshold: Duration::from_secs(10),
        };
        let fresh = Some(ms_of(now) - 1000);
        let stale = Some(ms_of(now) - 20_000);
        let mut view = FleetView {
            started: Some(now),
            workers: vec![worker("ready", fresh)],
            ..FleetView::default()
        };
        let rss = |_: u32| Some(4096);
        let healthy = Verdict {
            overall: Overall::Healthy,
            ready: true,
        };
        assert_eq!(health_json(&view, &live, now, &rss).0, healthy);
        view.workers[0] = worker("ready", stale);
        let (verdict, body) = health_json(&view, &live, now, &rss);
        assert_eq!(verdict.overall, Overall::Unhealthy);
        assert!(!verdict.live() && !verdict.ready);
        assert_eq!(body["workers"][0]["rss_bytes"], 4096);
        // A lasting 409 (another host polls this token) degrades too.
        let mut conflicted = worker("ready", stale);
        conflicted.counters.conflict = true;
        view.workers = vec![conflicted];
        let (verdict, body) = health_json(&view, &live, now, &rss);
        assert_eq!(verdict.overall, Overall::Degraded, "{body}");
        // A failed bot (a revoked token) degrades: live, not ready.
        view.workers = vec![worker("ready", fresh), worker("failed", fresh)];
        let (verdict, body) = health_json(&view, &live, now, &rss);
        assert_eq!(verdict.overall, Overall::Degraded);
        assert!(verdict.live() && !verdict.ready, "{body}");
        assert_eq!(body["status"], "degraded");
        // A loop that has not turned for long is stuck: not live.
        view.workers = vec![worker("ready", fresh)];
        view.last_turn = Some(now - LOOP_STUCK - Duration::from_secs(5));
        let (verdict, body) = health_json(&view, &live, now, &rss);
        assert!(!verdict.live(), "{body}");
        assert!(body["supervisor_stuck_seconds"].as_u64() > Some(30));
        view.last_turn = Some(now);
        assert_eq!(health_json(&view, &live, now, &rss).0, healthy);
        view.shutting_down = true;
        let (verdict, body) = health_json(&view, &live, now, &rss);
        assert_eq!(verdict.overall, Overall::Stopping);
        assert_eq!(body["status"].as_str(), Some("stopping"));
        assert!(!body.to_string().contains("tok"), "no token in /health");
    }

    #[test]
    fn an_old_update_not_done_makes_a_polling_worker_unhealthy() {
        let now = SystemTime::now();
        let live = Live {
            auth_token: None,
            unhealthy_threshold: Duration::from_secs(10),
        };
        let mut w = worker("ready", Some(ms_of(now) - 1000));
        w.counters.inbox_depth = 12;
        w.counters.oldest_pending_ms = Some(ms_of(now) - 5000);
        w.counters.fetch_paused = Some("the inbox holds 12 updates".into());
        let mut view = FleetView {
            started: Some(now),
            workers: vec![w],
            ..FleetView::default()
        };
        let rss = |_: u32| None;
        let (verdict, body) = health_json(&view, &live, now, &rss);
        assert_eq!(verdict.overall, Overall::Healthy);
        let w = &body["workers"][0];
        assert_eq!(w["inbox_depth"], 12);
        assert_eq!(w["oldest_pending_age"], 5.0);
        assert_eq!(w["fetch_paused"], "the inbox holds 12 updates");
        view.workers[0].counters.oldest_pending_ms = Some(ms_of(now) - 20_000);
        let (verdict, body) = health_json(&view, &live, now, &rss);
        assert_eq!(verdict.overall, Overall::Unhealthy);
        assert!(!verdict.live(), "a stuck inbox fails the liveness probe");
        let reason = body["workers"][0]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("oldest update not done"), "{reason}");
    }
}
