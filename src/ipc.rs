//! The wire between the supervisor and a worker: JSON lines. Worker to
//! parent on the worker's stdout, parent to worker on its stdin; EOF on
//! stdin means the parent is gone. This module owns the message types and
//! their encoding; it must never do I/O of its own. The one message that
//! carries a token is [`ParentMsg::Start`], the first line on a worker's
//! stdin (so the token is never in any process's environment); its `Debug`
//! shows the bot id only.

use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// How often a worker sends a heartbeat.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);

/// Exit code of a worker whose token Telegram rejected: never restart as is.
pub const EXIT_TOKEN_REJECTED: i32 = 78;
/// Exit code of a worker that could not start for a reason a restart will
/// not fix (its settings, its state dir): also not restarted until a change.
pub const EXIT_PERMANENT: i32 = 79;

/// Counters a worker reports in each heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Updates handled since the worker started.
    pub updates: u64,
    /// Errors (failed calls, failed handlers) since the worker started.
    pub errors: u64,
    /// Milliseconds since the Unix epoch of the last successful getUpdates.
    pub last_poll_ok_ms: Option<u64>,
    /// Milliseconds since the Unix epoch of the last update handled.
    pub last_update_ms: Option<u64>,
    /// Whether the last getUpdates ended in a 409 conflict.
    pub conflict: bool,
    /// What the worker waits for while it is alive but not polling: `lock`
    /// (another process holds its token's poller lock), `conflict` (a 409
    /// backoff), `retry_after` (a 429, or a retry of a failed call).
    pub waiting: Option<String>,
    /// Updates in the inbox not done yet.
    pub inbox_depth: u64,
    /// Milliseconds since the Unix epoch when the oldest update not done
    /// was fetched.
    pub oldest_pending_ms: Option<u64>,
    /// The inbox journal's size in bytes.
    pub journal_bytes: u64,
    /// Why fetching is paused (inbox at its cap, disk full), if it is.
    pub fetch_paused: Option<String>,
}

/// A message from a worker to the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerMsg {
    /// getMe worked, the poller lock is held and the media dirs exist.
    Ready { bot_id: u64, username: String },
    /// Liveness and counters, at least every 5 s.
    Heartbeat(Counters),
    /// The worker is about to exit and must not be restarted as is.
    Fatal { reason: String },
    /// An admin asked for /reload_config; the answer goes to this chat.
    ReloadRequest { chat_id: i64 },
    /// SETTINGS of this version arrived (applied, or rejected and logged).
    SettingsAck { version: String },
}

/// A message from the supervisor to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum ParentMsg {
    /// The first line a worker reads: its token and its whole environment
    /// (settings and the handlers' environment); the worker takes nothing
    /// from its own environment.
    Start {
        token: crate::token::Token,
        env: Vec<(String, String)>,
    },
    /// New settings: the whole worker environment, key by key. Sent again
    /// until the worker acknowledges `version` (the config version).
    Settings {
        env: Vec<(String, String)>,
        version: String,
    },
    /// The outcome of a reload the worker asked for, to tell the chat.
    ReloadResult { chat_id: i64, text: String },
    /// A message for a chat (the owner's fleet alerts).
    Notify { chat_id: i64, text: String },
}

/// A line that is not a message we know.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad ipc line: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn opt_u64(v: &Value) -> Option<u64> {
    v.as_u64()
}

impl WorkerMsg {
    /// One line of JSON, newline included.
    pub fn encode(&self) -> String {
        let v = match self {
            WorkerMsg::Ready { bot_id, username } => {
                json!({"type": "READY", "botId": bot_id, "username": username})
            }
            WorkerMsg::Heartbeat(c) => {
                let mut out = Vec::with_capacity(256);
                write_heartbeat(
                    &mut out,
                    c,
                    c.inbox_depth,
                    c.oldest_pending_ms,
                    c.journal_bytes,
                )
                .expect("writing into a Vec cannot fail");
                return String::from_utf8(out).expect("the heartbeat is JSON, which is UTF-8");
            }
            WorkerMsg::Fatal { reason } => json!({"type": "FATAL", "reason": reason}),
            WorkerMsg::ReloadRequest { chat_id } => {
                json!({"type": "RELOAD_REQUEST", "chatId": chat_id})
            }
            WorkerMsg::SettingsAck { version } => {
                json!({"type": "SETTINGS_ACK", "version": version})
            }
        };
        format!("{v}\n")
    }

    pub fn decode(line: &str) -> Result<WorkerMsg, DecodeError> {
        if let Some(msg) = flat::heartbeat(line) {
            return Ok(msg);
        }
        let v: Value = serde_json::from_str(line.trim())
            .map_err(|e| DecodeError(format!("not JSON ({e})")))?;
        let kind = v["type"].as_str().unwrap_or("");
        match kind {
            "READY" => Ok(WorkerMsg::Ready {
                bot_id: v["botId"]
                    .as_u64()
                    .ok_or_else(|| DecodeError("READY without botId".into()))?,
                username: v["username"].as_str().unwrap_or("").to_string(),
            }),
            "HEARTBEAT" => Ok(WorkerMsg::Heartbeat(Counters {
                updates: v["updates"].as_u64().unwrap_or(0),
                errors: v["errors"].as_u64().unwrap_or(0),
                last_poll_ok_ms: opt_u64(&v["lastPollOkMs"]),
                last_update_ms: opt_u64(&v["lastUpdateMs"]),
                conflict: v["conflict"].as_bool().unwrap_or(false),
                waiting: v["waiting"].as_str().map(str::to_string),
                inbox_depth: v["inboxDepth"].as_u64().unwrap_or(0),
                oldest_pending_ms: opt_u64(&v["oldestPendingMs"]),
                journal_bytes: v["journalBytes"].as_u64().unwrap_or(0),
                fetch_paused: v["fetchPaused"].as_str().map(str::to_string),
            })),
            "FATAL" => Ok(WorkerMsg::Fatal {
                reason: v["reason"].as_str().unwrap_or("unknown").to_string(),
            }),
            "RELOAD_REQUEST" => Ok(WorkerMsg::ReloadRequest {
                chat_id: v["chatId"]
                    .as_i64()
                    .ok_or_else(|| DecodeError("RELOAD_REQUEST without chatId".into()))?,
            }),
            "SETTINGS_ACK" => Ok(WorkerMsg::SettingsAck {
                version: v["version"].as_str().unwrap_or("").to_string(),
            }),
            other => Err(DecodeError(format!("unknown type {other:?}"))),
        }
    }
}

/// Writes one HEARTBEAT line (newline included) of `c`, with the inbox's
/// figures given (a worker reads them from its inbox, not from `c`). The one
/// encoder of the heartbeat: `WorkerMsg::encode` uses it, and an idle worker
/// writes it straight into a stack buffer (no clone, no JSON tree). Fails
/// only when `out` does (a buffer too short).
pub fn write_heartbeat(
    out: &mut impl std::io::Write,
    c: &Counters,
    inbox_depth: u64,
    oldest_pending_ms: Option<u64>,
    journal_bytes: u64,
) -> std::io::Result<()> {
    fn opt(out: &mut impl std::io::Write, v: Option<u64>) -> std::io::Result<()> {
        match v {
            Some(v) => write!(out, "{v}"),
            None => out.write_all(b"null"),
        }
    }
    fn text(out: &mut impl std::io::Write, v: &Option<String>) -> std::io::Result<()> {
        match v {
            Some(v) => serde_json::to_writer(&mut *out, v).map_err(std::io::Error::other),
            None => out.write_all(b"null"),
        }
    }
    write!(
        out,
        "{{\"type\":\"HEARTBEAT\",\"updates\":{},\"errors\":{},\"lastPollOkMs\":",
        c.updates, c.errors
    )?;
    opt(out, c.last_poll_ok_ms)?;
    out.write_all(b",\"lastUpdateMs\":")?;
    opt(out, c.last_update_ms)?;
    write!(out, ",\"conflict\":{},\"waiting\":", c.conflict)?;
    text(out, &c.waiting)?;
    write!(out, ",\"inboxDepth\":{inbox_depth},\"oldestPendingMs\":")?;
    opt(out, oldest_pending_ms)?;
    write!(out, ",\"journalBytes\":{journal_bytes},\"fetchPaused\":")?;
    text(out, &c.fetch_paused)?;
    out.write_all(b"}\n")
}

/// The heartbeat, 200 a second from 1,000 workers, read without building a
/// `serde_json::Value` (a map of a dozen owned keys) for each: a flat object
/// of plain values only, anything else left to the full decoder, so both
/// give the same message for every line (`flat_heartbeats_decode_as_json_does`).
mod flat {
    use super::{Counters, WorkerMsg};

    #[derive(Clone, Copy)]
    enum Val<'a> {
        U(u64),
        B(bool),
        Null,
        S(&'a str),
    }

    impl<'a> Val<'a> {
        fn u64(self) -> Option<u64> {
            match self {
                Val::U(n) => Some(n),
                _ => None,
            }
        }
        fn str(self) -> Option<&'a str> {
            match self {
                Val::S(s) => Some(s),
                _ => None,
            }
        }
    }

    /// A string without escapes at the start of `s` (after its opening
    /// quote): the text and the rest after the closing quote.
    fn plain_str(s: &str) -> Option<(&str, &str)> {
        let end = s.find(['"', '\\'])?;
        if s.as_bytes()[end] != b'"' || s[..end].bytes().any(|b| b < 0x20) {
            return None;
        }
        Some((&s[..end], &s[end + 1..]))
    }

    fn value(s: &str) -> Option<(Val<'_>, &str)> {
        if let Some(rest) = s.strip_prefix('"') {
            let (text, rest) = plain_str(rest)?;
            return Some((Val::S(text), rest));
        }
        for (word, v) in [
            ("null", Val::Null),
            ("true", Val::B(true)),
            ("false", Val::B(false)),
        ] {
            if let Some(rest) = s.strip_prefix(word) {
                return Some((v, rest));
            }
        }
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        // JSON has no leading zeros; "1.5", "1e3" and the like go to serde.
        if digits == 0 || (digits > 1 && s.starts_with('0')) {
            return None;
        }
        let n = s[..digits].parse().ok()?;
        Some((Val::U(n), &s[digits..]))
    }

    /// The heartbeat in `line`, or None for anything this reader does not
    /// take (then the full decoder judges it).
    pub(super) fn heartbeat(line: &str) -> Option<WorkerMsg> {
        let mut s = line.strip_prefix("{\"")?;
        let mut kind = None;
        let mut c = Counters::default();
        loop {
            let (key, rest) = plain_str(s)?;
            let (v, rest) = value(rest.strip_prefix(':')?)?;
            match key {
                "type" => kind = v.str(),
                "updates" => c.updates = v.u64().unwrap_or(0),
                "errors" => c.errors = v.u64().unwrap_or(0),
                "lastPollOkMs" => c.last_poll_ok_ms = v.u64(),
                "lastUpdateMs" => c.last_update_ms = v.u64(),
                "conflict" => c.conflict = matches!(v, Val::B(true)),
                "waiting" => c.waiting = v.str().map(str::to_string),
                "inboxDepth" => c.inbox_depth = v.u64().unwrap_or(0),
                "oldestPendingMs" => c.oldest_pending_ms = v.u64(),
                "journalBytes" => c.journal_bytes = v.u64().unwrap_or(0),
                "fetchPaused" => c.fetch_paused = v.str().map(str::to_string),
                _ => {}
            }
            if let Some(rest) = rest.strip_prefix(",\"") {
                s = rest;
            } else if rest == "}" {
                break;
            } else {
                return None;
            }
        }
        (kind == Some("HEARTBEAT")).then_some(WorkerMsg::Heartbeat(c))
    }
}

fn env_map(env: &[(String, String)]) -> serde_json::Map<String, Value> {
    env.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

fn env_list(v: &Value) -> Result<Vec<(String, String)>, DecodeError> {
    Ok(v["env"]
        .as_object()
        .ok_or_else(|| DecodeError("no env".into()))?
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect())
}

impl ParentMsg {
    /// One line of JSON, newline included.
    pub fn encode(&self) -> String {
        let v = match self {
            ParentMsg::Start { token, env } => {
                json!({"type": "START", "token": token.expose(), "env": env_map(env)})
            }
            ParentMsg::Settings { env, version } => {
                json!({"type": "SETTINGS", "env": env_map(env), "version": version})
            }
            ParentMsg::ReloadResult { chat_id, text } => {
                json!({"type": "RELOAD_RESULT", "chatId": chat_id, "text": text})
            }
            ParentMsg::Notify { chat_id, text } => {
                json!({"type": "NOTIFY", "chatId": chat_id, "text": text})
            }
        };
        format!("{v}\n")
    }

    pub fn decode(line: &str) -> Result<ParentMsg, DecodeError> {
        let v: Value = serde_json::from_str(line.trim())
            .map_err(|e| DecodeError(format!("not JSON ({e})")))?;
        match v["type"].as_str().unwrap_or("") {
            "START" => {
                let token = v["token"]
                    .as_str()
                    .and_then(|t| crate::token::Token::parse(t).ok())
                    .ok_or_else(|| DecodeError("START without a valid token".into()))?;
                Ok(ParentMsg::Start {
                    token,
                    env: env_list(&v)?,
                })
            }
            "SETTINGS" => {
                let env = v["env"]
                    .as_object()
                    .ok_or_else(|| DecodeError("SETTINGS without env".into()))?
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect();
                let version = v["version"].as_str().unwrap_or("").to_string();
                Ok(ParentMsg::Settings { env, version })
            }
            "RELOAD_RESULT" => Ok(ParentMsg::ReloadResult {
                chat_id: v["chatId"]
                    .as_i64()
                    .ok_or_else(|| DecodeError("RELOAD_RESULT without chatId".into()))?,
                text: v["text"].as_str().unwrap_or("").to_string(),
            }),
            "NOTIFY" => Ok(ParentMsg::Notify {
                chat_id: v["chatId"]
                    .as_i64()
                    .ok_or_else(|| DecodeError("NOTIFY without chatId".into()))?,
                text: v["text"].as_str().unwrap_or("").to_string(),
            }),
            other => Err(DecodeError(format!("unknown type {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_heartbeats_decode_as_json_does() {
        let full = Counters {
            updates: 12,
            errors: 3,
            last_poll_ok_ms: Some(1_700_000_000_123),
            last_update_ms: None,
            conflict: true,
            waiting: Some("lock".into()),
            inbox_depth: 7,
            oldest_pending_ms: Some(5),
            journal_bytes: 4096,
            fetch_paused: Some("inbox full (ünï)".into()),
        };
        let encoded = WorkerMsg::Heartbeat(full.clone()).encode();
        let line = encoded.trim_end();
        assert_eq!(
            flat::heartbeat(line),
            Some(WorkerMsg::Heartbeat(full)),
            "{line}"
        );
        assert!(flat::heartbeat(
            WorkerMsg::Heartbeat(Counters::default())
                .encode()
                .trim_end()
        )
        .is_some());
        // Lines it takes and lines it leaves to serde_json: the message is
        // the same either way.
        let lines = [
            r#"{"type":"HEARTBEAT","updates":1,"extra":"x"}"#,
            r#"{"type":"HEARTBEAT","updates":true,"errors":"2","conflict":1}"#,
            r#"{"updates":5,"type":"HEARTBEAT","updates":6}"#,
            r#"{"type":"HEARTBEAT","updates":1.5}"#,
            r#"{"type":"HEARTBEAT","updates":-1}"#,
            r#"{"type":"HEARTBEAT","updates":007}"#,
            r#"{"type":"HEARTBEAT","updates":99999999999999999999}"#,
            r#"{"type":"HEARTBEAT","waiting":"a\"b"}"#,
            r#"{"type":"HEARTBEAT","waiting":"lock"} "#,
            r#"{"type":"HEARTBEAT","nested":{"a":1}}"#,
            r#"{"type":"HEARTBEAT","updates":1"#,
            r#"{"type":"HEARTBEAT","updates":1}x"#,
            r#"{"type":"READY","botId":1,"username":"b"}"#,
            r#"{"type":"HEARTBEAT\u0041"}"#,
            r#"{ "type": "HEARTBEAT" }"#,
            r#"{}"#,
        ];
        for line in lines {
            let full = serde_json::from_str::<Value>(line.trim())
                .ok()
                .map(|_| WorkerMsg::decode(&format!(" {line}")));
            let decoded = WorkerMsg::decode(line);
            match &full {
                Some(full) => assert_eq!(&decoded, full, "{line}"),
                None => assert!(decoded.is_err(), "{line}"),
            }
            if let Some(fast) = flat::heartbeat(line) {
                assert_eq!(
                    Ok(fast),
                    full.clone().unwrap_or(Err(DecodeError(String::new()))),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn worker_messages_round_trip() {
        let msgs = [
            WorkerMsg::Ready {
                bot_id: 42,
                username: "demo_bot".into(),
            },
            WorkerMsg::Heartbeat(Counters {
                updates: 3,
                errors: 1,
                last_poll_ok_ms: Some(1_700_000_000_000),
                last_update_ms: None,
                conflict: true,
                waiting: Some("lock".into()),
                inbox_depth: 7,
                oldest_pending_ms: Some(1_700_000_000_001),
                journal_bytes: 4096,
                fetch_paused: Some("the inbox is full".into()),
            }),
            WorkerMsg::SettingsAck {
                version: "abc123def456".into(),
            },
            WorkerMsg::Fatal {
                reason: "token rejected".into(),
            },
            WorkerMsg::ReloadRequest { chat_id: -100 },
        ];
        for m in msgs {
            let line = m.encode();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(WorkerMsg::decode(&line), Ok(m));
        }
        assert!(line_is_exact());
    }

    fn line_is_exact() -> bool {
        WorkerMsg::Ready {
            bot_id: 7,
            username: "x".into(),
        }
        .encode()
            == "{\"botId\":7,\"type\":\"READY\",\"username\":\"x\"}\n"
    }

    #[test]
    fn parent_messages_round_trip_and_garbage_is_an_error() {
        let m = ParentMsg::Settings {
            env: vec![("A".into(), "1".into()), ("B".into(), "x y".into())],
            version: "abc123def456".into(),
        };
        assert_eq!(ParentMsg::decode(&m.encode()), Ok(m));
        let r = ParentMsg::ReloadResult {
            chat_id: 5,
            text: "ok".into(),
        };
        assert_eq!(ParentMsg::decode(&r.encode()), Ok(r));
        let n = ParentMsg::Notify {
            chat_id: 9,
            text: "bot-2 failed".into(),
        };
        assert_eq!(ParentMsg::decode(&n.encode()), Ok(n));
        let token = crate::token::Token::parse("123:Secret_x-y").expect("valid");
        let s = ParentMsg::Start {
            token,
            env: vec![("A".into(), "1".into())],
        };
        assert_eq!(ParentMsg::decode(&s.encode()), Ok(s.clone()));
        assert!(
            !format!("{s:?}").contains("Secret_x-y"),
            "Debug hides the token"
        );
        assert!(ParentMsg::decode("{\"type\":\"START\",\"token\":\"x\",\"env\":{}}").is_err());
        assert!(WorkerMsg::decode("garbage").is_err());
        assert!(WorkerMsg::decode("{\"type\":\"NOPE\"}").is_err());
        assert!(ParentMsg::decode("{}").is_err());
    }
}
