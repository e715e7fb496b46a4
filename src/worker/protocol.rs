//! Protocol 1, the JSON-line conversation with a persistent handler
//! (docs/handler-protocol.md): the lines botfleet writes (hello, update,
//! results) and the lines a handler may answer (reply, error), parsed and
//! validated. Pure: no I/O, no clock.
//!
//! Invariant: a line that breaks the protocol is a [`ProtocolError`] value,
//! never a panic and never half-accepted (a reply whose calls are not all
//! `{"method": "<string>", ...}` objects is rejected whole). It must never
//! put anything but the update, the bot's public identity and call results
//! on a line to the handler.

use serde_json::{json, Map, Value};

/// The protocol version announced in the hello line.
pub const VERSION: u32 = 1;
/// The longest line a handler may write (bytes); longer is a violation.
pub const MAX_LINE: usize = 1024 * 1024;

/// The bot's public identity, sent once in the hello line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    pub id: u64,
    pub username: String,
    pub index: u32,
}

/// One line a handler may write.
#[derive(Debug, Clone, PartialEq)]
pub enum FromHandler {
    /// The calls that answer update `id` (`[]`: nothing to send).
    Reply { id: String, calls: Vec<Value> },
    /// The handler could not handle update `id`; the chat gets a short error.
    Error { id: String, message: String },
}

impl FromHandler {
    pub fn id(&self) -> &str {
        match self {
            FromHandler::Reply { id, .. } | FromHandler::Error { id, .. } => id,
        }
    }
}

/// How a call ended, handed back in a results line.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    Ok(Value),
    Err {
        error_code: i64,
        description: String,
    },
}

/// Why a handler's line breaks protocol 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    TooLong(usize),
    NotJson(String),
    NotObject,
    NoType,
    UnknownType(String),
    NoId,
    BadCalls(String),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::TooLong(n) => write!(f, "a line of {n} bytes (at most {MAX_LINE})"),
            ProtocolError::NotJson(e) => write!(f, "a line that is not JSON: {e}"),
            ProtocolError::NotObject => write!(f, "a line that is not a JSON object"),
            ProtocolError::NoType => write!(f, "a line without a string \"type\""),
            ProtocolError::UnknownType(t) => {
                write!(f, "a line of type {t:?} (expected \"reply\" or \"error\")")
            }
            ProtocolError::NoId => write!(f, "a line without a string \"id\""),
            ProtocolError::BadCalls(why) => write!(f, "a reply whose calls are wrong: {why}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

fn line(v: Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// `{"type":"hello","protocol":1,"bot":{...}}` and a newline.
pub fn hello(bot: &BotIdentity) -> String {
    line(json!({
        "type": "hello",
        "protocol": VERSION,
        "bot": { "id": bot.id, "username": bot.username, "index": bot.index },
    }))
}

/// `{"type":"update","id":..,"deadline_ms":..,"update":{..}}` and a newline.
/// Written in place (keys in the order `json!` sorts them), so the update
/// is not copied into a new value for every line.
pub fn update(id: &str, deadline_ms: u64, update: &Value) -> String {
    let mut s = String::with_capacity(96 + id.len());
    s.push_str("{\"deadline_ms\":");
    s.push_str(&deadline_ms.to_string());
    s.push_str(",\"id\":");
    push_json(&mut s, &Value::from(id));
    s.push_str(",\"type\":\"update\",\"update\":");
    push_json(&mut s, update);
    s.push_str("}\n");
    s
}

/// Appends `v` as compact JSON.
fn push_json(s: &mut String, v: &Value) {
    // Display of a Value is its compact JSON; writing to a String cannot fail.
    use std::fmt::Write as _;
    let _ = write!(s, "{v}");
}

/// `{"type":"results","id":..,"results":[..]}` and a newline.
/// Written in place like [`update`]: a call's result is not copied.
pub fn results(id: &str, results: &[CallResult]) -> String {
    let mut s = String::with_capacity(64 + id.len());
    s.push_str("{\"id\":");
    push_json(&mut s, &Value::from(id));
    s.push_str(",\"results\":[");
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        match r {
            CallResult::Ok(v) => {
                s.push_str("{\"ok\":true,\"result\":");
                push_json(&mut s, v);
                s.push('}');
            }
            CallResult::Err {
                error_code,
                description,
            } => push_json(
                &mut s,
                &json!({ "ok": false, "error_code": error_code, "description": description }),
            ),
        }
    }
    s.push_str("],\"type\":\"results\"}\n");
    s
}

/// Whether `v` is a call: an object with a string `method`.
pub fn is_call(v: &Value) -> bool {
    v.get("method").and_then(Value::as_str).is_some()
}

/// Parses one line a handler wrote (without its newline).
pub fn parse(text: &str) -> Result<FromHandler, ProtocolError> {
    if text.len() > MAX_LINE {
        return Err(ProtocolError::TooLong(text.len()));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let Value::Object(mut o) = v else {
        return Err(ProtocolError::NotObject);
    };
    let kind = match o.get("type").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => return Err(ProtocolError::NoType),
    };
    let id = match o.get("id") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ProtocolError::NoId),
    };
    match kind.as_str() {
        "reply" => {
            let calls = match o.remove("calls") {
                Some(Value::Array(calls)) => calls,
                Some(_) => return Err(ProtocolError::BadCalls("\"calls\" is not an array".into())),
                None => return Err(ProtocolError::BadCalls("no \"calls\"".into())),
            };
            if let Some(i) = calls.iter().position(|c| !is_call(c)) {
                return Err(ProtocolError::BadCalls(format!(
                    "call {i} is not an object with a string \"method\""
                )));
            }
            Ok(FromHandler::Reply { id, calls })
        }
        "error" => {
            let message = match o.get("message") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            Ok(FromHandler::Error { id, message })
        }
        _ => Err(ProtocolError::UnknownType(kind)),
    }
}

/// A sendMessage call with `text` (how plain text is written as calls).
pub fn text_call(text: &str) -> Value {
    let mut m = Map::new();
    m.insert("method".into(), "sendMessage".into());
    m.insert("text".into(), text.into());
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_to_the_handler_are_one_json_object_each() {
        let h = hello(&BotIdentity {
            id: 7,
            username: "b".into(),
            index: 0,
        });
        assert!(h.ends_with('\n') && h.matches('\n').count() == 1);
        let v: Value = serde_json::from_str(&h).expect("json");
        assert_eq!(
            v,
            json!({"type":"hello","protocol":1,"bot":{"id":7,"username":"b","index":0}})
        );
        let u = update(
            "u1",
            99,
            &json!({"update_id": 5, "message": {"text": "a\nb"}}),
        );
        assert_eq!(
            u.matches('\n').count(),
            1,
            "a newline in text stays escaped"
        );
        let v: Value = serde_json::from_str(&u).expect("json");
        assert_eq!(v["id"], "u1");
        assert_eq!(v["deadline_ms"], 99);
        assert_eq!(v["update"]["update_id"], 5);
        let r = results(
            "u1",
            &[
                CallResult::Ok(json!({"message_id": 3})),
                CallResult::Err {
                    error_code: 400,
                    description: "refused".into(),
                },
            ],
        );
        let v: Value = serde_json::from_str(&r).expect("json");
        assert_eq!(
            v,
            json!({"type":"results","id":"u1","results":[
                {"ok":true,"result":{"message_id":3}},
                {"ok":false,"error_code":400,"description":"refused"}]})
        );
    }

    #[test]
    fn lines_written_in_place_are_the_bytes_json_writes() {
        let u = json!({"update_id": 5, "callback_query": {"id": "q\"1", "data": "é\n"}});
        assert_eq!(
            update("7\"", 1_796_303_585_213, &u),
            line(
                json!({"type": "update", "id": "7\"", "deadline_ms": 1_796_303_585_213u64, "update": u})
            )
        );
        let list = [
            CallResult::Ok(json!({"message_id": 3, "text": "a\"b"})),
            CallResult::Err {
                error_code: 429,
                description: "Too \"Many\"".into(),
            },
            CallResult::Ok(json!(true)),
        ];
        assert_eq!(
            results("9", &list),
            line(json!({"type": "results", "id": "9", "results": [
                {"ok": true, "result": {"message_id": 3, "text": "a\"b"}},
                {"ok": false, "error_code": 429, "description": "Too \"Many\""},
                {"ok": true, "result": true}]}))
        );
        assert_eq!(
            results("1", &[]),
            line(json!({"type":"results","id":"1","results":[]}))
        );
    }

    #[test]
    fn replies_and_errors_parse() {
        assert_eq!(
            parse(r#"{"type":"reply","id":"1","calls":[{"method":"sendMessage","text":"x"}]}"#),
            Ok(FromHandler::Reply {
                id: "1".into(),
                calls: vec![json!({"method":"sendMessage","text":"x"})]
            })
        );
        assert_eq!(
            parse(r#"{"type":"reply","id":"2","calls":[]}"#),
            Ok(FromHandler::Reply {
                id: "2".into(),
                calls: vec![]
            })
        );
        let e = parse(r#"{"type":"error","id":"3","message":"boom"}"#).expect("valid");
        assert_eq!(e.id(), "3");
        assert_eq!(
            e,
            FromHandler::Error {
                id: "3".into(),
                message: "boom".into()
            }
        );
    }

    #[test]
    fn violations_are_errors() {
        assert!(matches!(parse("hello"), Err(ProtocolError::NotJson(_))));
        assert_eq!(parse("[1]"), Err(ProtocolError::NotObject));
        assert_eq!(parse(r#"{"id":"1"}"#), Err(ProtocolError::NoType));
        assert_eq!(
            parse(r#"{"type":"reply","calls":[]}"#),
            Err(ProtocolError::NoId)
        );
        assert_eq!(
            parse(r#"{"type":"reply","id":1,"calls":[]}"#),
            Err(ProtocolError::NoId),
            "ids are the strings we sent"
        );
        assert!(matches!(
            parse(r#"{"type":"hi","id":"1"}"#),
            Err(ProtocolError::UnknownType(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"reply","id":"1","calls":[{"method":"a"},{"text":"no method"}]}"#),
            Err(ProtocolError::BadCalls(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"reply","id":"1","calls":{"method":"a"}}"#),
            Err(ProtocolError::BadCalls(_))
        ));
        assert!(matches!(
            parse(r#"{"type":"reply","id":"1"}"#),
            Err(ProtocolError::BadCalls(_))
        ));
        let long = format!(
            r#"{{"type":"error","id":"1","message":"{}"}}"#,
            "a".repeat(MAX_LINE)
        );
        assert!(matches!(parse(&long), Err(ProtocolError::TooLong(_))));
        assert!(ProtocolError::NoId.to_string().contains("id"));
    }

    #[test]
    fn text_is_a_send_message_call() {
        assert_eq!(text_call("hi"), json!({"method":"sendMessage","text":"hi"}));
        assert!(is_call(&text_call("hi")));
    }
}
