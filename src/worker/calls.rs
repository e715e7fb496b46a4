//! What a handler answers, turned into Bot API calls ready for the send
//! path: plain text or calls (one JSON object with a string `method`, an
//! array of them, or one per line), defaults taken from the update
//! (`chat_id`; `callback_query_id` / `inline_query_id`; the pressed
//! button's message for `editMessage*`), and `file:<path>` parameters
//! resolved inside BOT_DATA_DIR. Pure apart from reading file metadata
//! (canonicalize) to resolve `file:` paths.
//!
//! Invariants: a call to a method that would break the worker or leak the
//! token (getUpdates, setWebhook, deleteWebhook, logOut, close, a method
//! name that is not a plain identifier) is refused, never prepared; a
//! `file:` path never resolves outside the data directory (`..`, absolute
//! paths and symlinks out are refused after canonicalization).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Methods a handler may never call (compared case-insensitively, as the
/// Bot API compares method names).
pub const REFUSED: &[&str] = &[
    "getupdates",
    "setwebhook",
    "deletewebhook",
    "logout",
    "close",
];
/// The prefix that marks a parameter as a file to upload.
pub const FILE_PREFIX: &str = "file:";

/// A handler's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Nothing to send.
    Empty,
    /// Plain text for the update's chat.
    Text(String),
    /// Bot API calls, in order.
    Calls(Vec<Value>),
}

/// Reads a handler's whole stdout (exec mode).
pub fn parse_output(stdout: &str) -> Output {
    let trimmed = stdout.trim();
    if trimmed.is_empty() {
        return Output::Empty;
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(v @ Value::Object(_)) if is_call(&v) => return Output::Calls(vec![v]),
            Ok(Value::Array(list)) if list.iter().all(is_call) => return Output::Calls(list),
            _ => {}
        }
        let mut calls = vec![];
        for line in trimmed.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if is_call(&v) => calls.push(v),
                _ => return Output::Text(stdout.to_string()),
            }
        }
        return Output::Calls(calls);
    }
    Output::Text(stdout.to_string())
}

fn is_call(v: &Value) -> bool {
    v.get("method").and_then(Value::as_str).is_some()
}

/// What an update supplies as defaults for calls made for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    pub chat_id: Option<i64>,
    pub callback_query_id: Option<String>,
    pub inline_query_id: Option<String>,
    /// The message whose button was pressed: (chat id, message id).
    pub button_message: Option<(i64, i64)>,
    /// A pressed button on an inline-mode message.
    pub inline_message_id: Option<String>,
}

/// The update's kind (`message`, `callback_query`, ...) and its object.
pub fn payload(update: &Value) -> Option<(&str, &Value)> {
    update
        .as_object()?
        .iter()
        .find(|(k, v)| k.as_str() != "update_id" && v.is_object())
        .map(|(k, v)| (k.as_str(), v))
}

/// The chat an update belongs to, for every kind that has one.
pub fn chat_of(update: &Value) -> Option<i64> {
    let (kind, p) = payload(update)?;
    let chat = if kind == "callback_query" {
        p.get("message")?.get("chat")?
    } else {
        p.get("chat")?
    };
    chat.get("id")?.as_i64()
}

/// The user behind an update (`from`, or `user` for reactions and poll
/// answers), when it has one.
pub fn user_of(update: &Value) -> Option<i64> {
    let (_, p) = payload(update)?;
    p.get("from")
        .or_else(|| p.get("user"))
        .and_then(|u| u.get("id"))
        .and_then(Value::as_i64)
}

/// The defaults an update gives its calls.
pub fn context_of(update: &Value) -> Context {
    let mut ctx = Context {
        chat_id: chat_of(update),
        ..Context::default()
    };
    if let Some((kind, p)) = payload(update) {
        let id = p.get("id").and_then(Value::as_str).map(str::to_string);
        match kind {
            "callback_query" => {
                ctx.callback_query_id = id;
                ctx.inline_message_id = p
                    .get("inline_message_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let m = p.get("message");
                let chat = m
                    .and_then(|m| m.get("chat"))
                    .and_then(|c| c.get("id"))
                    .and_then(Value::as_i64);
                let mid = m.and_then(|m| m.get("message_id")).and_then(Value::as_i64);
                ctx.button_message = chat.zip(mid);
            }
            "inline_query" => ctx.inline_query_id = id,
            _ => {}
        }
    }
    ctx
}

/// Why a call was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not an object with a string `method`.
    NotACall,
    /// A method handlers may not call.
    Refused(String),
    /// A `file:` parameter that cannot be uploaded.
    File { param: String, reason: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotACall => write!(f, "not a call: an object with a string \"method\""),
            CallError::Refused(m) => write!(f, "method {m:?} is refused to handlers"),
            CallError::File { param, reason } => write!(f, "parameter {param:?}: {reason}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A file part of a prepared call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The multipart field name.
    pub field: String,
    /// The canonical path, inside the data directory.
    pub path: PathBuf,
    /// The name Telegram shows.
    pub file_name: String,
}

/// A call ready for the Bot API client.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub method: String,
    /// Every parameter but `method`; file parameters point at their upload
    /// (`attach://<field>` when nested).
    pub params: Map<String, Value>,
    pub uploads: Vec<Upload>,
}

impl Prepared {
    /// The chat the call goes to, for per-chat order and pacing.
    pub fn chat_id(&self) -> Option<i64> {
        self.params.get("chat_id").and_then(Value::as_i64)
    }
}

/// Checks a method name: a plain identifier, not refused.
pub fn check_method(method: &str) -> Result<(), CallError> {
    let plain = !method.is_empty()
        && method.len() <= 64
        && method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain || REFUSED.contains(&method.to_ascii_lowercase().as_str()) {
        return Err(CallError::Refused(method.to_string()));
    }
    Ok(())
}

/// Methods that take no `chat_id` (it is not defaulted for them).
fn takes_chat(method: &str) -> bool {
    let m = method.to_ascii_lowercase();
    !(m.starts_with("answer")
        || m.starts_with("setmy")
        || m.starts_with("getmy")
        || m.starts_with("deletemy")
        || m.contains("sticker")
        || matches!(m.as_str(), "getme" | "getfile" | "getuserprofilephotos"))
}

/// Validates a call, fills in the defaults from `ctx` and resolves its
/// `file:` parameters inside `data_dir`.
pub fn prepare(call: Value, ctx: &Context, data_dir: &Path) -> Result<Prepared, CallError> {
    let Value::Object(mut params) = call else {
        return Err(CallError::NotACall);
    };
    let method = match params.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err(CallError::NotACall),
    };
    check_method(&method)?;
    let lower = method.to_ascii_lowercase();
    let edit = lower.starts_with("editmessage") || lower == "stopmessagelivelocation";
    let has_target = params.contains_key("message_id") || params.contains_key("inline_message_id");
    if edit && !has_target {
        if let Some((chat, mid)) = ctx.button_message {
            params.entry("chat_id").or_insert(chat.into());
            params.insert("message_id".into(), mid.into());
        } else if let Some(inline) = &ctx.inline_message_id {
            params.insert("inline_message_id".into(), inline.clone().into());
        }
    }
    let inline_edit = params.contains_key("inline_message_id");
    if !params.contains_key("chat_id") && takes_chat(&method) && !inline_edit {
        if let Some(chat) = ctx.chat_id {
            params.insert("chat_id".into(), chat.into());
        }
    }
    if lower == "answercallbackquery" && !params.contains_key("callback_query_id") {
        if let Some(id) = &ctx.callback_query_id {
            params.insert("callback_query_id".into(), id.clone().into());
        }
    }
    if lower == "answerinlinequery" && !params.contains_key("inline_query_id") {
        if let Some(id) = &ctx.inline_query_id {
            params.insert("inline_query_id".into(), id.clone().into());
        }
    }
    let mut uploads = vec![];
    for (key, value) in params.iter_mut() {
        resolve_files(key, value, true, data_dir, &mut uploads)?;
    }
    Ok(Prepared {
        method,
        params,
        uploads,
    })
}

/// Replaces `file:` strings in `value` by uploads: at the top level the
/// parameter itself is the file part; nested (InputMedia) it becomes
/// `attach://<field>`.
fn resolve_files(
    key: &str,
    value: &mut Value,
    top: bool,
    data_dir: &Path,
    uploads: &mut Vec<Upload>,
) -> Result<(), CallError> {
    match value {
        Value::String(s) => {
            let Some(rel) = s.strip_prefix(FILE_PREFIX) else {
                return Ok(());
            };
            let path = resolve_path(data_dir, rel).map_err(|reason| CallError::File {
                param: key.to_string(),
                reason,
            })?;
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let field = if top {
                key.to_string()
            } else {
                let f = format!("file{}", uploads.len());
                *s = format!("attach://{f}");
                f
            };
            uploads.push(Upload {
                field,
                path,
                file_name,
            });
            Ok(())
        }
        Value::Array(list) => list
            .iter_mut()
            .try_for_each(|v| resolve_files(key, v, false, data_dir, uploads)),
        Value::Object(map) => map
            .iter_mut()
            .try_for_each(|(_, v)| resolve_files(key, v, false, data_dir, uploads)),
        _ => Ok(()),
    }
}

/// Resolves `rel` inside `data_dir`: relative, no `..`, a regular file,
/// and still inside after following every symlink.
pub fn resolve_path(data_dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() {
        return Err("the path must be relative to BOT_DATA_DIR".into());
    }
    if p.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err("the path may not leave BOT_DATA_DIR".into());
    }
    let root = data_dir
        .canonicalize()
        .map_err(|e| format!("BOT_DATA_DIR: {e}"))?;
    let full = root
        .join(p)
        .canonicalize()
        .map_err(|e| format!("cannot open {rel}: {e}"))?;
    if !full.starts_with(&root) {
        return Err("the path may not leave BOT_DATA_DIR".into());
    }
    if !full.is_file() {
        return Err(format!("{rel} is not a regular file"));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_is_text_or_calls() {
        assert_eq!(parse_output(" \n"), Output::Empty);
        assert_eq!(parse_output("hi\n"), Output::Text("hi\n".into()));
        assert_eq!(
            parse_output("{\"a\":1}"),
            Output::Text("{\"a\":1}".into()),
            "JSON without a method is text"
        );
        let one = json!({"method":"sendMessage","text":"x"});
        assert_eq!(
            parse_output(&format!("{one}\n")),
            Output::Calls(vec![one.clone()])
        );
        let two = json!({"method":"answerCallbackQuery"});
        assert_eq!(
            parse_output(&json!([one, two]).to_string()),
            Output::Calls(vec![one.clone(), two.clone()])
        );
        assert_eq!(
            parse_output(&format!("{one}\n\n{two}\n")),
            Output::Calls(vec![one.clone(), two.clone()])
        );
        assert_eq!(parse_output("[]"), Output::Calls(vec![]));
        let mixed = format!("{one}\nand some text\n");
        assert_eq!(parse_output(&mixed), Output::Text(mixed.clone()));
        assert_eq!(parse_output("[1,2]"), Output::Text("[1,2]".into()));
    }

    #[test]
    fn updates_give_chat_user_and_defaults() {
        let msg =
            json!({"update_id":1,"message":{"message_id":5,"chat":{"id":42},"from":{"id":7}}});
        assert_eq!(chat_of(&msg), Some(42));
        assert_eq!(user_of(&msg), Some(7));
        let cb = json!({"update_id":2,"callback_query":{"id":"cq1","from":{"id":7},"data":"a",
            "message":{"message_id":9,"chat":{"id":42}}}});
        assert_eq!(chat_of(&cb), Some(42));
        assert_eq!(user_of(&cb), Some(7));
        let ctx = context_of(&cb);
        assert_eq!(ctx.callback_query_id.as_deref(), Some("cq1"));
        assert_eq!(ctx.button_message, Some((42, 9)));
        let react = json!({"update_id":3,"message_reaction":{"chat":{"id":-100},"user":{"id":8}}});
        assert_eq!((chat_of(&react), user_of(&react)), (Some(-100), Some(8)));
        let iq = json!({"update_id":4,"inline_query":{"id":"iq","from":{"id":7},"query":""}});
        assert_eq!(chat_of(&iq), None);
        assert_eq!(context_of(&iq).inline_query_id.as_deref(), Some("iq"));
        let post = json!({"update_id":5,"channel_post":{"chat":{"id":-5},"sender_chat":{"id":-5}}});
        assert_eq!((chat_of(&post), user_of(&post)), (Some(-5), None));
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "botfleet-calls-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("data/sub")).expect("temp dir");
        std::fs::write(d.join("data/chart.png"), b"png").expect("write");
        std::fs::write(d.join("data/sub/a.txt"), b"a").expect("write");
        std::fs::write(d.join(".env"), b"BOT_TOKEN=1:x").expect("write");
        d
    }

    #[test]
    fn defaults_fill_what_is_missing() {
        let d = tmp();
        let data = d.join("data");
        let cb = json!({"update_id":2,"callback_query":{"id":"cq1","from":{"id":7},
            "message":{"message_id":9,"chat":{"id":42}}}});
        let ctx = context_of(&cb);
        let p = prepare(json!({"method":"answerCallbackQuery"}), &ctx, &data).expect("ok");
        assert_eq!(p.method, "answerCallbackQuery");
        assert_eq!(
            p.params,
            json!({"callback_query_id":"cq1"})
                .as_object()
                .cloned()
                .expect("obj")
        );
        let p = prepare(json!({"method":"editMessageText","text":"B"}), &ctx, &data).expect("ok");
        assert_eq!(p.params["chat_id"], 42);
        assert_eq!(p.params["message_id"], 9);
        assert_eq!(p.chat_id(), Some(42));
        let p = prepare(
            json!({"method":"editMessageText","text":"B","message_id":3}),
            &ctx,
            &data,
        )
        .expect("ok");
        assert_eq!(p.params["message_id"], 3, "an explicit target stays");
        let p = prepare(
            json!({"method":"sendMessage","text":"x","chat_id":1}),
            &ctx,
            &data,
        )
        .expect("ok");
        assert_eq!(p.params["chat_id"], 1, "an explicit chat stays");
        let inline = Context {
            inline_message_id: Some("im".into()),
            callback_query_id: Some("c".into()),
            ..Context::default()
        };
        let p = prepare(
            json!({"method":"editMessageText","text":"B"}),
            &inline,
            &data,
        )
        .expect("ok");
        assert_eq!(p.params["inline_message_id"], "im");
        assert!(!p.params.contains_key("chat_id"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refused_methods_are_refused() {
        let ctx = Context::default();
        let dir = Path::new(".");
        for m in [
            "getUpdates",
            "logOut",
            "close",
            "SETWEBHOOK",
            "deleteWebhook",
            "a/b",
            "",
            "x?y",
        ] {
            assert_eq!(
                prepare(json!({"method": m}), &ctx, dir),
                Err(CallError::Refused(m.into())),
                "{m}"
            );
        }
        assert_eq!(
            prepare(json!({"text":"x"}), &ctx, dir),
            Err(CallError::NotACall)
        );
        assert!(prepare(json!({"method":"getMe"}), &ctx, dir).is_ok());
    }

    #[test]
    fn files_resolve_inside_the_data_dir_only() {
        let d = tmp();
        let data = d.join("data");
        let ctx = Context {
            chat_id: Some(1),
            ..Context::default()
        };
        let p = prepare(
            json!({"method":"sendPhoto","photo":"file:chart.png","caption":"c"}),
            &ctx,
            &data,
        )
        .expect("ok");
        assert_eq!(p.uploads.len(), 1);
        assert_eq!(p.uploads[0].field, "photo");
        assert_eq!(p.uploads[0].file_name, "chart.png");
        assert!(p.uploads[0].path.ends_with("data/chart.png"));
        let p = prepare(
            json!({"method":"sendMediaGroup","media":[{"type":"document","media":"file:sub/a.txt"}]}),
            &ctx,
            &data,
        )
        .expect("ok");
        assert_eq!(p.params["media"][0]["media"], "attach://file0");
        assert_eq!(p.uploads[0].field, "file0");
        for bad in [
            "file:../.env",
            "file:../../.env",
            "file:/etc/passwd",
            "file:",
            "file:missing",
            "file:sub",
        ] {
            let r = prepare(json!({"method":"sendDocument","document":bad}), &ctx, &data);
            assert!(matches!(r, Err(CallError::File { .. })), "{bad}: {r:?}");
        }
        std::os::unix::fs::symlink(d.join(".env"), data.join("link")).expect("symlink");
        let r = prepare(
            json!({"method":"sendDocument","document":"file:link"}),
            &ctx,
            &data,
        );
        assert!(
            matches!(r, Err(CallError::File { .. })),
            "a symlink out: {r:?}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
