//! Carries out what a handler answered for one update: plain text to the
//! update's chat, or its Bot API calls one after another (each prepared by
//! `calls`: defaults, refusals, `file:` uploads), through whatever send
//! path the caller gives ([`Out`]), collecting each call's result for the
//! handler. A callback query nobody answered is answered empty at the end,
//! so the user's button stops spinning. Also builds a handler's
//! environment for one update.
//!
//! It must never make a call `calls::prepare` refused, nor send around the
//! [`Out`] it was given.

use std::path::Path;

use serde_json::{json, Value};

use super::calls::{self, CallError, Output, Prepared};
use super::protocol::CallResult;

/// The error code a refused or unpreparable call reports back.
pub const REFUSED_CODE: i64 = 403;
pub const BAD_FILE_CODE: i64 = 400;

/// Where answers go (the worker's send path).
pub trait Out {
    /// Text to a chat (split at 4096 characters), in order with the chat's
    /// other messages.
    fn text(&self, chat_id: i64, text: &str);
    /// One call, queued under `queue_chat` for order and pacing; waits for
    /// its result.
    fn call(&self, call: Prepared, queue_chat: i64) -> CallResult;
}

/// Carries out `output` for `update`; returns one result per call (empty
/// for text).
pub fn carry_out(
    output: Output,
    update: &Value,
    data_dir: &Path,
    out: &dyn Out,
) -> Vec<CallResult> {
    let ctx = calls::context_of(update);
    let queue_chat = calls::chat_of(update)
        .or_else(|| calls::user_of(update))
        .unwrap_or(0);
    let mut answered = false;
    let mut results = vec![];
    match output {
        Output::Empty => {}
        Output::Text(text) => match ctx.chat_id {
            Some(chat) => out.text(chat, &text),
            None => log::warn!("a handler answered text to an update without a chat; dropped"),
        },
        Output::Calls(list) => {
            for call in list {
                match calls::prepare(call, &ctx, data_dir) {
                    Ok(p) => {
                        if p.method.eq_ignore_ascii_case("answerCallbackQuery") {
                            answered = true;
                        }
                        let chat = p.chat_id().unwrap_or(queue_chat);
                        results.push(out.call(p, chat));
                    }
                    Err(e) => {
                        log::warn!("refused a handler's call: {e}");
                        let error_code = match e {
                            CallError::File { .. } => BAD_FILE_CODE,
                            _ => REFUSED_CODE,
                        };
                        results.push(CallResult::Err {
                            error_code,
                            description: format!("refused by botfleet: {e}"),
                        });
                    }
                }
            }
        }
    }
    if let (Some(id), false) = (ctx.callback_query_id, answered) {
        let mut params = serde_json::Map::new();
        params.insert("callback_query_id".into(), id.into());
        let empty = Prepared {
            method: "answerCallbackQuery".into(),
            params,
            uploads: vec![],
        };
        if let CallResult::Err { description, .. } = out.call(empty, queue_chat) {
            log::debug!("answering a callback query left open failed: {description}");
        }
    }
    results
}

/// The short error text a chat gets when its update failed.
pub fn error_text(timeout: bool) -> &'static str {
    if timeout {
        "⚠️ Sorry, that took too long and was stopped."
    } else {
        "⚠️ Sorry, something went wrong handling that message."
    }
}

/// A handler's environment for one update: `base` (what the supervisor
/// sent), the bot's identity and data directory, and the update's own
/// variables when it has them.
pub fn env_for(
    base: &[(String, String)],
    bot: (u32, &str),
    data_dir: &Path,
    update: Option<&Value>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base.to_vec();
    env.push(("BOT_INDEX".into(), bot.0.to_string()));
    env.push(("BOT_USERNAME".into(), bot.1.to_string()));
    env.push(("BOT_DATA_DIR".into(), data_dir.display().to_string()));
    if let Some(update) = update {
        if let Some((kind, p)) = calls::payload(update) {
            env.push(("UPDATE_TYPE".into(), kind.to_string()));
            let text = p
                .get("text")
                .or_else(|| p.get("caption"))
                .or_else(|| p.get("data"))
                .or_else(|| p.get("query"))
                .and_then(Value::as_str);
            if let Some(text) = text {
                env.push(("MESSAGE_TEXT".into(), text.to_string()));
            }
        }
        if let Some(chat) = calls::chat_of(update) {
            env.push(("CHAT_ID".into(), chat.to_string()));
        }
        if let Some(user) = calls::user_of(update) {
            env.push(("USER_ID".into(), user.to_string()));
        }
    }
    env
}

/// A refusal for a user who is not allowed to press this bot's buttons.
pub fn refusal_answer(update: &Value) -> Option<Prepared> {
    let id = calls::context_of(update).callback_query_id?;
    let params = json!({
        "callback_query_id": id,
        "text": "Sorry, this bot is private.",
    });
    Some(Prepared {
        method: "answerCallbackQuery".into(),
        params: params.as_object().cloned().unwrap_or_default(),
        uploads: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<String>>,
    }

    impl Out for Fake {
        fn text(&self, chat_id: i64, text: &str) {
            self.log
                .lock()
                .expect("test lock")
                .push(format!("text {chat_id} {text}"));
        }
        fn call(&self, call: Prepared, queue_chat: i64) -> CallResult {
            self.log.lock().expect("test lock").push(format!(
                "{} {queue_chat} {}",
                call.method,
                Value::Object(call.params)
            ));
            CallResult::Ok(json!({"message_id": 1}))
        }
    }

    fn press() -> Value {
        json!({"update_id":2,"callback_query":{"id":"cq","from":{"id":7},"data":"x",
            "message":{"message_id":9,"chat":{"id":42}}}})
    }

    #[test]
    fn calls_go_out_in_order_with_results_and_refusals() {
        let fake = Fake::default();
        let msg = json!({"update_id":1,"message":{"message_id":5,"chat":{"id":42},"from":{"id":7},"text":"hi"}});
        let out = calls::parse_output(
            "{\"method\":\"sendMessage\",\"text\":\"a\"}\n{\"method\":\"logOut\"}\n{\"method\":\"sendMessage\",\"text\":\"b\"}",
        );
        let results = carry_out(out, &msg, Path::new("."), &fake);
        assert_eq!(results.len(), 3);
        assert!(matches!(results[0], CallResult::Ok(_)));
        assert!(matches!(
            results[1],
            CallResult::Err {
                error_code: 403,
                ..
            }
        ));
        let log = fake.log.lock().expect("test lock").clone();
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].starts_with("sendMessage 42 ") && log[0].contains("\"a\""));
        assert!(log[1].contains("\"b\""));
    }

    #[test]
    fn a_press_left_unanswered_is_answered_empty() {
        let fake = Fake::default();
        carry_out(Output::Text("ok".into()), &press(), Path::new("."), &fake);
        let log = fake.log.lock().expect("test lock").clone();
        assert_eq!(log[0], "text 42 ok");
        assert!(log[1].starts_with("answerCallbackQuery 42 "), "{log:?}");
        let fake = Fake::default();
        let answered = Output::Calls(vec![json!({"method":"answerCallbackQuery","text":"hi"})]);
        carry_out(answered, &press(), Path::new("."), &fake);
        assert_eq!(
            fake.log.lock().expect("test lock").len(),
            1,
            "answered once"
        );
    }

    #[test]
    fn the_environment_names_the_update() {
        let env = env_for(
            &[("K".into(), "v".into())],
            (3, "b"),
            Path::new("/d"),
            Some(&press()),
        );
        let get = |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(get("K"), Some("v"));
        assert_eq!(get("UPDATE_TYPE"), Some("callback_query"));
        assert_eq!(get("CHAT_ID"), Some("42"));
        assert_eq!(get("USER_ID"), Some("7"));
        assert_eq!(get("MESSAGE_TEXT"), Some("x"));
        assert_eq!(get("BOT_DATA_DIR"), Some("/d"));
        assert_eq!(get("BOT_INDEX"), Some("3"));
        assert!(refusal_answer(&press()).is_some());
    }
}
