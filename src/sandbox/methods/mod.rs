//! The Bot API methods other than getUpdates: sending (text, files, media
//! groups, locations, contacts, polls), copying and forwarding, editing and
//! deleting, callback answers, chats and members, reactions, commands, the
//! menu button, webhooks, files, close and logOut. Each runs under the
//! sandbox's lock and never blocks; parameters, answers and error texts are
//! the real server's (tdlib/telegram-bot-api Client.cpp).
//!
//! It must never reach the network: a file given by URL is only read when
//! `mod.rs` fetched it beforehand from loopback.

mod account;
mod chats;
mod edit;
mod send;

use super::format;
use super::http::Params;
use super::markup;
use super::state::{self, Bot, Limits, State};
use super::{api_429, api_err, api_ok, bad_request, Reply};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// Every method the sandbox serves, in its canonical spelling.
pub const METHODS: [&str; 46] = [
    "getMe",
    "getUpdates",
    "sendMessage",
    "sendDocument",
    "sendPhoto",
    "sendVideo",
    "sendAudio",
    "sendVoice",
    "sendAnimation",
    "sendSticker",
    "sendVideoNote",
    "sendMediaGroup",
    "sendLocation",
    "sendContact",
    "sendPoll",
    "sendDice",
    "sendChatAction",
    "copyMessage",
    "forwardMessage",
    "editMessageText",
    "editMessageReplyMarkup",
    "editMessageCaption",
    "editMessageMedia",
    "deleteMessage",
    "deleteMessages",
    "answerCallbackQuery",
    "getChat",
    "getChatMember",
    "getChatAdministrators",
    "getChatMemberCount",
    "setMessageReaction",
    "getFile",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "setChatMenuButton",
    "getChatMenuButton",
    "pinChatMessage",
    "unpinChatMessage",
    "deleteWebhook",
    "setWebhook",
    "getWebhookInfo",
    "close",
    "logOut",
    "leaveChat",
    "getUserProfilePhotos",
];

/// The media a send method carries: (method, field, kind in the message).
pub(in crate::sandbox) const MEDIA: [(&str, &str); 8] = [
    ("sendDocument", "document"),
    ("sendPhoto", "photo"),
    ("sendVideo", "video"),
    ("sendAudio", "audio"),
    ("sendVoice", "voice"),
    ("sendAnimation", "animation"),
    ("sendSticker", "sticker"),
    ("sendVideoNote", "video_note"),
];

/// The longest text and caption, in UTF-16 units after parsing.
const MAX_CAPTION: usize = 1024;

/// The emoji Telegram accepts as reactions.
const REACTIONS: &str = "👍 👎 ❤ 🔥 🥰 👏 😁 🤔 🤯 😱 🤬 😢 🎉 🤩 🤮 💩 🙏 👌 🕊 🤡 🥱 🥴 😍 🐳 ❤‍🔥 🌚 🌭 💯 🤣 ⚡ 🍌 🏆 💔 🤨 😐 🍓 🍾 💋 🖕 😈 😴 😭 🤓 👻 👨‍💻 👀 🎃 🙈 😇 😨 🤝 ✍ 🤗 🫡 🎅 🎄 ☃ 💅 🤪 🗿 🆒 💘 🙉 🦄 😘 💊 🙊 😎 👾 🤷‍♂ 🤷 🤷‍♀ 😡";

/// The name under which a fetched URL file is passed in `Params::files`.
pub fn url_part(field: &str) -> String {
    format!("\u{0}url:{field}")
}

/// Whether a reaction emoji is one Telegram allows.
pub fn is_reaction(emoji: &str) -> bool {
    let e = emoji.trim_end_matches('\u{fe0f}');
    REACTIONS.split(' ').any(|r| r == e)
}

/// Copies into `to` those of `keys` that `from` has, as they are.
fn copy_present(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for &key in keys {
        if let Some(v) = from.get(key) {
            to.insert(key.into(), v.clone());
        }
    }
}

fn chat_id_param(params: &Params, name: &str) -> Result<i64, Reply> {
    match params.int(name) {
        None => Err(bad_request(&format!("{name} is empty"))),
        Some(Err(())) => Err(bad_request("chat not found")),
        Some(Ok(id)) => Ok(id),
    }
}

fn message_id_param(params: &Params, name: &str) -> Result<i64, Reply> {
    match params.int(name) {
        None => Err(bad_request(&format!("{name} is empty"))),
        Some(Err(())) => Err(bad_request(&format!("{name} is not a valid Integer"))),
        Some(Ok(id)) => Ok(id),
    }
}

/// Text and entities from `text`/`caption` with `parse_mode` and explicit
/// entities. Err: the reply Telegram gives.
fn formatted(
    params: &Params,
    text_field: &str,
    entities_field: &str,
) -> Result<Option<(String, Value)>, Reply> {
    let Some(raw) = params.text(text_field) else {
        return Ok(None);
    };
    let mode = params.text("parse_mode").unwrap_or_default();
    let (text, entities) = match params.json(entities_field) {
        Some(explicit) if mode.is_empty() => {
            let list = format::explicit_entities(&explicit, &raw).map_err(|d| api_err(400, &d))?;
            (raw.clone(), Value::Array(list))
        }
        _ => {
            let (text, parsed) =
                format::parse(&raw, &mode).map_err(|e| api_err(400, &e.to_string()))?;
            let all = format::with_detected(&text, parsed);
            (text, format::entities_json(&all))
        }
    };
    Ok(Some((text, entities)))
}

/// The Message the bot sends, before its content.
fn outgoing(st: &State, bot: &Bot, chat_id: i64, message_id: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("message_id".into(), json!(message_id));
    m.insert("from".into(), bot.user());
    m.insert("chat".into(), chat_of(st, bot, chat_id));
    m.insert("date".into(), json!(state::unix_now()));
    m
}

fn chat_of(_st: &State, bot: &Bot, chat_id: i64) -> Value {
    if chat_id > 0 {
        let user = bot.user_json(chat_id);
        let mut chat = json!({"id": chat_id, "type": "private",
                              "first_name": user["first_name"]});
        if let Some(u) = user.get("username") {
            chat["username"] = u.clone();
        }
        chat
    } else {
        state::chat_json(chat_id, 0)
    }
}

/// Every method but getUpdates: runs under the lock, never blocks.
/// Every method but getUpdates: runs under the lock, never blocks.
pub fn call(st: &mut State, bot_id: u64, method: &str, params: &Params) -> Reply {
    match method {
        "getMe" | "setMyCommands" | "getMyCommands" | "deleteMyCommands" | "setChatMenuButton"
        | "getChatMenuButton" | "deleteWebhook" | "setWebhook" | "getWebhookInfo" | "close"
        | "logOut" | "getFile" => account::call(st, bot_id, method, params),
        "editMessageText"
        | "editMessageCaption"
        | "editMessageReplyMarkup"
        | "editMessageMedia"
        | "deleteMessage"
        | "deleteMessages"
        | "answerCallbackQuery" => edit::call(st, bot_id, method, params),
        "getChat"
        | "getChatMember"
        | "getChatAdministrators"
        | "getChatMemberCount"
        | "leaveChat"
        | "getUserProfilePhotos"
        | "setMessageReaction"
        | "pinChatMessage"
        | "unpinChatMessage" => chats::call(st, bot_id, method, params),
        _ => send::call(st, bot_id, method, params),
    }
}

pub(crate) use edit::{press_button, Press};
