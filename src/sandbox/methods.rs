//! The Bot API methods other than getUpdates: sending (text, files, media
//! groups, locations, contacts, polls), copying and forwarding, editing and
//! deleting, callback answers, chats and members, reactions, commands, the
//! menu button, webhooks, files, close and logOut. Each runs under the
//! sandbox's lock and never blocks; parameters, answers and error texts are
//! the real server's (tdlib/telegram-bot-api Client.cpp).
//!
//! It must never reach the network: a file given by URL is only read when
//! `mod.rs` fetched it beforehand from loopback.

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
const MEDIA: [(&str, &str); 8] = [
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

/// What every send checks after its content: markup, the chat, the
/// replied message and the flood limits. Ok: (reply_markup, reply_to).
fn send_checks(
    st: &mut State,
    bot_id: u64,
    chat_id: i64,
    params: &Params,
    limits: Limits,
) -> Result<(Option<Value>, Option<Value>), Reply> {
    let markup = markup::parse(params.fields.get("reply_markup")).map_err(|d| api_err(400, &d))?;
    let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
    if let Some((code, description)) = bot.cannot_send_to(chat_id) {
        return Err(api_err(code, description));
    }
    let (reply_to, allow_without) = match params.int("reply_to_message_id") {
        Some(Ok(id)) => (
            Some(id),
            params.text("allow_sending_without_reply").as_deref() == Some("true"),
        ),
        _ => match params.json("reply_parameters") {
            Some(rp) => (
                rp["message_id"].as_i64(),
                rp["allow_sending_without_reply"] == json!(true),
            ),
            None => (None, false),
        },
    };
    let replied = match reply_to {
        Some(id) => match bot.messages.get(&(chat_id, id)) {
            Some(m) => Some(m.clone()),
            None if allow_without => None,
            None => return Err(bad_request("message to be replied not found")),
        },
        None => None,
    };
    if let Err(retry_after) = bot.flood_check(chat_id, limits, Instant::now()) {
        return Err(api_429(retry_after));
    }
    Ok((markup, replied))
}

/// Builds, stores and records a sent message; returns it.
fn finish_send(
    st: &mut State,
    bot_id: u64,
    method: &str,
    chat_id: i64,
    content: Map<String, Value>,
    markup: Option<Value>,
    replied: Option<Value>,
) -> Value {
    let message_id = st
        .bots
        .get_mut(&bot_id)
        .expect("authorized bot")
        .alloc_message_id();
    let bot = &st.bots[&bot_id];
    let mut m = outgoing(st, bot, chat_id, message_id);
    if let Some(r) = &replied {
        let mut r = r.clone();
        if let Some(o) = r.as_object_mut() {
            o.remove("reply_to_message");
        }
        m.insert("reply_to_message".into(), r);
    }
    m.extend(content);
    if let Some(kb) = markup::on_message(&markup) {
        m.insert("reply_markup".into(), kb);
    }
    let message = Value::Object(m);
    let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
    bot.store_message("message", &message);
    if let Some(mk) = markup
        .as_ref()
        .filter(|m| m.get("inline_keyboard").is_none())
    {
        // Reply keyboards are not part of the Message; the chat page shows them.
        let mut body = Map::new();
        body.insert("reply_markup".into(), mk.clone());
        bot.event("keyboard", chat_id, body);
    }
    let mut fields = Map::new();
    for key in ["text", "caption", "entities", "caption_entities"] {
        if let Some(v) = message.get(key) {
            fields.insert(key.into(), v.clone());
        }
    }
    if let Some(r) = &replied {
        fields.insert("reply_to_message_id".into(), r["message_id"].clone());
    }
    if let Some(mk) = markup {
        fields.insert("reply_markup".into(), mk);
    }
    for (_, kind) in MEDIA {
        if let Some(media) = message.get(kind) {
            let file = if kind == "photo" {
                media
                    .as_array()
                    .and_then(|a| a.last())
                    .cloned()
                    .unwrap_or(Value::Null)
            } else {
                media.clone()
            };
            fields.insert("file_id".into(), file["file_id"].clone());
            fields.insert("file_name".into(), file["file_name"].clone());
            fields.insert("file_size".into(), file["file_size"].clone());
            fields.insert("media".into(), json!(kind));
        }
    }
    for key in [
        "location",
        "contact",
        "poll",
        "dice",
        "media_group_id",
        "forward_origin",
    ] {
        if let Some(v) = message.get(key) {
            fields.insert(key.into(), v.clone());
        }
    }
    bot.record_sent(method, chat_id, message_id, fields);
    message
}

/// Every method but getUpdates: runs under the lock, never blocks.
pub fn call(st: &mut State, bot_id: u64, method: &str, params: &Params) -> Reply {
    let limits = st.limits;
    match method {
        "getMe" => {
            let bot = &st.bots[&bot_id];
            let mut me = bot.user();
            me["can_join_groups"] = json!(true);
            me["can_read_all_group_messages"] = json!(false);
            me["supports_inline_queries"] = json!(false);
            me["can_connect_to_business"] = json!(false);
            me["has_main_web_app"] = json!(false);
            api_ok(me)
        }
        "setMyCommands" => {
            let Some(commands) = params.json("commands").filter(|c| c.is_array()) else {
                return bad_request("parameter \"commands\" is required");
            };
            let valid = commands.as_array().is_some_and(|list| {
                list.len() <= 100
                    && list.iter().all(|c| {
                        c["command"].as_str().is_some_and(|s| {
                            (1..=32).contains(&s.len())
                                && s.bytes().all(|b| {
                                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
                                })
                        }) && c["description"]
                            .as_str()
                            .is_some_and(|s| (1..=256).contains(&s.chars().count()))
                    })
            });
            if !valid {
                return bad_request("BOT_COMMAND_INVALID");
            }
            st.bots.get_mut(&bot_id).expect("authorized bot").commands = commands;
            api_ok(json!(true))
        }
        "getMyCommands" => api_ok(st.bots[&bot_id].commands.clone()),
        "deleteMyCommands" => {
            st.bots.get_mut(&bot_id).expect("authorized bot").commands = json!([]);
            api_ok(json!(true))
        }
        "setChatMenuButton" => {
            let button = match params.fields.get("menu_button") {
                None => json!({"type": "default"}),
                Some(_) => match params.json("menu_button") {
                    Some(v @ Value::Object(_)) => v,
                    _ => return bad_request("can't parse menu button JSON object"),
                },
            };
            match button["type"].as_str() {
                Some("default" | "commands") => {}
                Some("web_app")
                    if button["text"].is_string() && button["web_app"]["url"].is_string() => {}
                _ => {
                    return bad_request("can't parse menu button: MenuButton has unsupported type")
                }
            }
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            bot.menu_button = if button["type"] == "default" {
                json!({"type": "commands"})
            } else {
                button
            };
            api_ok(json!(true))
        }
        "getChatMenuButton" => api_ok(st.bots[&bot_id].menu_button.clone()),
        "deleteWebhook" => {
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            bot.webhook = None;
            if params.text("drop_pending_updates").as_deref() == Some("true") {
                bot.pending.clear();
            }
            api_ok(json!(true))
        }
        "setWebhook" => {
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            let url = params.text("url").unwrap_or_default();
            if url.is_empty() {
                bot.webhook = None;
            } else {
                if !url.starts_with("https://") {
                    return bad_request("bad webhook: An HTTPS URL must be provided for webhook");
                }
                bot.webhook = Some(url);
                bot.poll_generation += 1;
                bot.poll_terminated_by = state::CONFLICT_WEBHOOK_SET;
            }
            api_ok(json!(true))
        }
        "getWebhookInfo" => {
            let bot = &st.bots[&bot_id];
            let mut info = json!({"url": bot.webhook.clone().unwrap_or_default(),
                                  "has_custom_certificate": false,
                                  "pending_update_count": bot.pending.len()});
            if !bot.allowed_updates.is_empty() {
                info["allowed_updates"] = json!(bot.allowed_updates);
            }
            api_ok(info)
        }
        "close" => {
            // Telegram refuses close in the first 10 minutes after launch.
            let age = st.bots[&bot_id].registered_at.elapsed();
            let ten_minutes = Duration::from_secs(600);
            if age < ten_minutes {
                return api_429((ten_minutes - age).as_secs().max(1));
            }
            api_ok(json!(true))
        }
        "logOut" => {
            st.bots.get_mut(&bot_id).expect("authorized bot").logged_out = true;
            api_ok(json!(true))
        }
        "sendChatAction" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            const ACTIONS: [&str; 11] = [
                "typing",
                "upload_photo",
                "record_video",
                "upload_video",
                "record_voice",
                "upload_voice",
                "upload_document",
                "choose_sticker",
                "find_location",
                "record_video_note",
                "upload_video_note",
            ];
            match params.text("action") {
                None => return bad_request("action is empty"),
                Some(a) if !ACTIONS.contains(&a.as_str()) => {
                    return bad_request("wrong parameter action in request")
                }
                Some(_) => {}
            }
            if let Some((code, description)) = st.bots[&bot_id].cannot_send_to(chat_id) {
                return api_err(code, description);
            }
            api_ok(json!(true))
        }
        "sendMessage" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let (text, entities) = match params.text("text").filter(|t| !t.is_empty()) {
                None => return bad_request("message text is empty"),
                Some(_) => match formatted(params, "text", "entities") {
                    Ok(Some(x)) => x,
                    Ok(None) => return bad_request("message text is empty"),
                    Err(r) => return r,
                },
            };
            if text.trim().is_empty() {
                return bad_request("message text is empty");
            }
            if format::utf16_len(&text) > state::MAX_TEXT_CHARS {
                return bad_request("message is too long");
            }
            let (markup, replied) = match send_checks(st, bot_id, chat_id, params, limits) {
                Ok(x) => x,
                Err(r) => return r,
            };
            let mut content = Map::new();
            content.insert("text".into(), json!(text));
            if entities.as_array().is_some_and(|a| !a.is_empty()) {
                content.insert("entities".into(), entities);
            }
            api_ok(finish_send(
                st,
                bot_id,
                "sendMessage",
                chat_id,
                content,
                markup,
                replied,
            ))
        }
        m if MEDIA.iter().any(|(name, _)| *name == m) => send_media(st, bot_id, m, params, limits),
        "sendMediaGroup" => send_media_group(st, bot_id, params, limits),
        "sendLocation" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let coord = |name: &str| -> Result<f64, Reply> {
                let text = params.text(name).unwrap_or_default();
                if text.trim().is_empty() {
                    return Err(bad_request(&format!("{name} is empty")));
                }
                Ok(text.trim().parse::<f64>().unwrap_or(0.0))
            };
            let (lat, lon) = match (coord("latitude"), coord("longitude")) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return bad_request("wrong location specified");
            }
            let (markup, replied) = match send_checks(st, bot_id, chat_id, params, limits) {
                Ok(x) => x,
                Err(r) => return r,
            };
            let mut content = Map::new();
            content.insert(
                "location".into(),
                json!({"latitude": lat, "longitude": lon}),
            );
            api_ok(finish_send(
                st,
                bot_id,
                "sendLocation",
                chat_id,
                content,
                markup,
                replied,
            ))
        }
        "sendContact" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let phone = params.text("phone_number").unwrap_or_default();
            let first = params.text("first_name").unwrap_or_default();
            if phone.is_empty() {
                return bad_request("phone_number is empty");
            }
            if first.is_empty() {
                return bad_request("first_name is empty");
            }
            let (markup, replied) = match send_checks(st, bot_id, chat_id, params, limits) {
                Ok(x) => x,
                Err(r) => return r,
            };
            let mut contact = json!({"phone_number": phone, "first_name": first});
            if let Some(last) = params.text("last_name") {
                contact["last_name"] = json!(last);
            }
            let mut content = Map::new();
            content.insert("contact".into(), contact);
            api_ok(finish_send(
                st,
                bot_id,
                "sendContact",
                chat_id,
                content,
                markup,
                replied,
            ))
        }
        "sendPoll" => send_poll(st, bot_id, params, limits),
        "sendDice" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let (markup, replied) = match send_checks(st, bot_id, chat_id, params, limits) {
                Ok(x) => x,
                Err(r) => return r,
            };
            let emoji = params.text("emoji").unwrap_or_else(|| "🎲".into());
            let value = (st.random() * 6.0) as u64 + 1;
            let mut content = Map::new();
            content.insert("dice".into(), json!({"emoji": emoji, "value": value}));
            api_ok(finish_send(
                st, bot_id, "sendDice", chat_id, content, markup, replied,
            ))
        }
        "copyMessage" | "forwardMessage" => copy_or_forward(st, bot_id, method, params, limits),
        "editMessageText"
        | "editMessageCaption"
        | "editMessageReplyMarkup"
        | "editMessageMedia" => edit(st, bot_id, method, params),
        "deleteMessage" | "deleteMessages" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let ids: Vec<i64> = if method == "deleteMessage" {
                match message_id_param(params, "message_id") {
                    Ok(id) => vec![id],
                    Err(r) => return r,
                }
            } else {
                match params
                    .json("message_ids")
                    .and_then(|v| v.as_array().cloned())
                {
                    Some(list) if (1..=100).contains(&list.len()) => {
                        list.iter().filter_map(Value::as_i64).collect()
                    }
                    _ => return bad_request("message identifiers are not specified"),
                }
            };
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            if !bot.chats.contains(&chat_id) {
                return bad_request("chat not found");
            }
            let mut deleted = 0;
            for id in ids {
                if bot.messages.remove(&(chat_id, id)).is_some() {
                    deleted += 1;
                    let mut body = Map::new();
                    body.insert("message_id".into(), json!(id));
                    bot.event("delete", chat_id, body);
                    let mut fields = Map::new();
                    fields.insert("deleted".into(), json!(true));
                    bot.record_sent("deleteMessage", chat_id, id, fields);
                }
            }
            if deleted == 0 && method == "deleteMessage" {
                return bad_request("message to delete not found");
            }
            api_ok(json!(true))
        }
        "answerCallbackQuery" => {
            let id = params.text("callback_query_id").unwrap_or_default();
            let text = params.text("text").unwrap_or_default();
            if text.chars().count() > 200 {
                return bad_request("MESSAGE_TOO_LONG");
            }
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            let live = bot
                .callbacks
                .get(&id)
                .is_some_and(|c| !c.answered && c.created.elapsed() < c.ttl);
            if !live {
                return bad_request(
                    "query is too old and response timeout expired or query ID is invalid",
                );
            }
            let mut chat = 0;
            if let Some(c) = bot.callbacks.get_mut(&id) {
                c.answered = true;
                chat = c.chat_id;
            }
            let mut body = Map::new();
            body.insert("callback_query_id".into(), json!(id));
            body.insert("text".into(), json!(text));
            body.insert(
                "show_alert".into(),
                json!(params.text("show_alert").as_deref() == Some("true")),
            );
            if let Some(url) = params.text("url") {
                body.insert("url".into(), json!(url));
            }
            bot.event("callback_answer", chat, body);
            api_ok(json!(true))
        }
        "getChat" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let bot = &st.bots[&bot_id];
            if !bot.chats.contains(&chat_id) {
                return bad_request("chat not found");
            }
            let mut chat = chat_of(st, bot, chat_id);
            chat["accent_color_id"] = json!(0);
            chat["max_reaction_count"] = json!(11);
            if chat_id < 0 {
                chat["permissions"] = json!({"can_send_messages": true});
            }
            api_ok(chat)
        }
        "getChatMember" | "getChatAdministrators" | "getChatMemberCount" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let bot = &st.bots[&bot_id];
            if !bot.chats.contains(&chat_id) {
                return bad_request("chat not found");
            }
            let members: Vec<i64> = if chat_id > 0 {
                vec![chat_id]
            } else {
                bot.members
                    .get(&chat_id)
                    .map(|m| m.iter().copied().collect())
                    .unwrap_or_default()
            };
            match method {
                "getChatMemberCount" => api_ok(json!(members.len() + 1)),
                "getChatAdministrators" => {
                    if chat_id > 0 {
                        return bad_request("there are no administrators in the private chat");
                    }
                    let admins: Vec<Value> = members
                        .first()
                        .map(|u| json!({"status": "creator", "user": bot.user_json(*u), "is_anonymous": false}))
                        .into_iter()
                        .collect();
                    api_ok(json!(admins))
                }
                _ => {
                    let user_id = match params.int("user_id") {
                        None => return bad_request("user_id is empty"),
                        Some(Err(())) => return bad_request("user_id is not a valid Integer"),
                        Some(Ok(u)) => u,
                    };
                    if user_id == bot.id as i64 {
                        return api_ok(json!({"status": "member", "user": bot.user()}));
                    }
                    if chat_id > 0 && user_id != chat_id {
                        return bad_request("user not found");
                    }
                    let status = if members.first() == Some(&user_id) && chat_id < 0 {
                        "creator"
                    } else if members.contains(&user_id) {
                        "member"
                    } else {
                        "left"
                    };
                    api_ok(json!({"status": status, "user": bot.user_json(user_id)}))
                }
            }
        }
        "leaveChat" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            if !bot.chats.contains(&chat_id) {
                return bad_request("chat not found");
            }
            if chat_id > 0 {
                return bad_request("chat member status can't be changed in private chats");
            }
            bot.chats.remove(&chat_id);
            api_ok(json!(true))
        }
        "getUserProfilePhotos" => api_ok(json!({"total_count": 0, "photos": []})),
        "setMessageReaction" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let message_id = match message_id_param(params, "message_id") {
                Ok(id) => id,
                Err(r) => return r,
            };
            let reaction = match params.fields.get("reaction") {
                None => json!([]),
                Some(_) => match params.json("reaction") {
                    Some(Value::Array(list)) => Value::Array(list),
                    _ => return bad_request("can't parse reaction types JSON object"),
                },
            };
            for r in reaction.as_array().into_iter().flatten() {
                let ok = r["type"] == "emoji" && r["emoji"].as_str().is_some_and(is_reaction);
                if !ok {
                    return bad_request("REACTION_INVALID");
                }
            }
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            if !bot.chats.contains(&chat_id) {
                return bad_request("chat not found");
            }
            let Some(message) = bot.messages.get_mut(&(chat_id, message_id)) else {
                return bad_request("message to react not found");
            };
            message["bot_reaction"] = reaction.clone();
            let mut body = Map::new();
            body.insert("message_id".into(), json!(message_id));
            body.insert("reaction".into(), reaction);
            body.insert("from_bot".into(), json!(true));
            bot.event("reaction", chat_id, body);
            api_ok(json!(true))
        }
        "pinChatMessage" | "unpinChatMessage" => {
            let chat_id = match chat_id_param(params, "chat_id") {
                Ok(c) => c,
                Err(r) => return r,
            };
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            if !bot.chats.contains(&chat_id) {
                return bad_request("chat not found");
            }
            let message_id = match (method, params.int("message_id")) {
                ("pinChatMessage", None) => return bad_request("message_id is empty"),
                (_, Some(Ok(id))) => Some(id),
                (_, Some(Err(()))) => return bad_request("message_id is not a valid Integer"),
                (_, None) => None,
            };
            if let Some(id) = message_id {
                if !bot.messages.contains_key(&(chat_id, id)) {
                    return bad_request(if method == "pinChatMessage" {
                        "message to pin not found"
                    } else {
                        "message to unpin not found"
                    });
                }
                let mut body = Map::new();
                body.insert("message_id".into(), json!(id));
                bot.event(
                    if method == "pinChatMessage" {
                        "pin"
                    } else {
                        "unpin"
                    },
                    chat_id,
                    body,
                );
            }
            api_ok(json!(true))
        }
        "getFile" => {
            let file_id = params.text("file_id").unwrap_or_default();
            if file_id.is_empty() {
                return bad_request("file_id is empty");
            }
            let Some(file) = st.files.get(&file_id).filter(|f| f.owner == bot_id) else {
                return bad_request("invalid file_id");
            };
            if file.bytes.len() > state::MAX_GET_FILE_BYTES {
                return bad_request("file is too big");
            }
            api_ok(
                json!({"file_id": file.file_id, "file_unique_id": file.file_unique_id,
                          "file_size": file.bytes.len(), "file_path": file.file_path}),
            )
        }
        _ => api_err(404, "Not Found: method not found"),
    }
}

/// Resolves a file parameter: an uploaded part, `attach://name`, a URL
/// (fetched from loopback beforehand, or refused), or a file_id this bot
/// holds. Returns the file_id.
fn input_file(
    st: &mut State,
    bot_id: u64,
    params: &Params,
    field: &str,
    value: Option<&str>,
    kind: &str,
) -> Result<String, Reply> {
    let store = |st: &mut State, part: &super::http::FilePart| {
        st.store_file(bot_id, kind, &part.file_name, part.bytes.clone())
    };
    if let Some(part) = params.files.get(field) {
        if value.is_none() {
            return Ok(store(st, part));
        }
    }
    let Some(text) = value.map(str::to_string).or_else(|| params.text(field)) else {
        return Err(bad_request(&format!("there is no {field} in the request")));
    };
    if let Some(name) = text.strip_prefix("attach://") {
        return match params.files.get(name) {
            Some(part) => Ok(store(st, part)),
            None => Err(bad_request("wrong file identifier/HTTP URL specified")),
        };
    }
    if text.starts_with("http://") || text.starts_with("https://") {
        return match params.files.get(&url_part(&text)) {
            Some(part) => Ok(store(st, part)),
            None => Err(bad_request("failed to get HTTP URL content")),
        };
    }
    if text.is_empty() {
        return Err(bad_request(&format!("there is no {field} in the request")));
    }
    if st.files.get(&text).is_none_or(|f| f.owner != bot_id) {
        return Err(bad_request("wrong file identifier/HTTP URL specified"));
    }
    Ok(text)
}

/// The media object for a stored file: photos as three sizes, largest last.
fn media_json(st: &mut State, bot_id: u64, file_id: &str, kind: &str) -> Value {
    if kind != "photo" {
        let mut v = st.file_json(file_id, kind);
        match kind {
            "animation" => {
                v["width"] = json!(320);
                v["height"] = json!(240);
                v["duration"] = json!(1);
            }
            "sticker" => {
                v = json!({"file_id": v["file_id"], "file_unique_id": v["file_unique_id"],
                           "file_size": v["file_size"], "width": 512, "height": 512,
                           "type": "regular", "is_animated": false, "is_video": false});
            }
            "video_note" => {
                v = json!({"file_id": v["file_id"], "file_unique_id": v["file_unique_id"],
                           "file_size": v["file_size"], "length": 240, "duration": 1});
            }
            _ => {}
        }
        return v;
    }
    let (name, bytes) = {
        let f = &st.files[file_id];
        (f.file_name.clone(), f.bytes.clone())
    };
    let mut sizes = vec![];
    for (w, h) in [(90, 67), (320, 240)] {
        let thumb = st.store_file_shared(bot_id, "photo", &name, bytes.clone());
        let mut v = st.file_json(&thumb, "photo");
        v["width"] = json!(w);
        v["height"] = json!(h);
        sizes.push(v);
    }
    sizes.push(st.file_json(file_id, "photo"));
    Value::Array(sizes)
}

fn send_media(st: &mut State, bot_id: u64, method: &str, params: &Params, limits: Limits) -> Reply {
    let kind = MEDIA
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, k)| *k)
        .unwrap_or("document");
    let chat_id = match chat_id_param(params, "chat_id") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let caption = match formatted(params, "caption", "caption_entities") {
        Ok(c) => c,
        Err(r) => return r,
    };
    if caption
        .as_ref()
        .is_some_and(|(c, _)| format::utf16_len(c) > MAX_CAPTION)
    {
        return bad_request("message caption is too long");
    }
    if params.files.get(kind).is_none() && params.text(kind).is_none() {
        return bad_request(&format!("there is no {kind} in the request"));
    }
    let (markup, replied) = match send_checks(st, bot_id, chat_id, params, limits) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let file_id = match input_file(st, bot_id, params, kind, None, kind) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut content = Map::new();
    content.insert(kind.into(), media_json(st, bot_id, &file_id, kind));
    if let Some((c, e)) = caption.filter(|(c, _)| !c.is_empty()) {
        content.insert("caption".into(), json!(c));
        if e.as_array().is_some_and(|a| !a.is_empty()) {
            content.insert("caption_entities".into(), e);
        }
    }
    api_ok(finish_send(
        st, bot_id, method, chat_id, content, markup, replied,
    ))
}

fn send_media_group(st: &mut State, bot_id: u64, params: &Params, limits: Limits) -> Reply {
    let chat_id = match chat_id_param(params, "chat_id") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(media) = params.json("media") else {
        return bad_request("can't parse media JSON object");
    };
    let Some(items) = media.as_array() else {
        return bad_request("expected an Array of InputMedia");
    };
    if !(2..=10).contains(&items.len()) {
        return bad_request("wrong number of media in the album");
    }
    let mut parsed = vec![];
    for item in items {
        let kind = item["type"].as_str().unwrap_or("");
        if !["photo", "video", "audio", "document"].contains(&kind) {
            return bad_request("can't parse InputMedia: invalid type");
        }
        parsed.push((
            kind.to_string(),
            item["media"].as_str().unwrap_or("").to_string(),
            item.clone(),
        ));
    }
    let docs = parsed.iter().filter(|p| p.0 == "document").count();
    let audios = parsed.iter().filter(|p| p.0 == "audio").count();
    if (docs > 0 && docs != parsed.len()) || (audios > 0 && audios != parsed.len()) {
        return bad_request("Can't use the media of the specified type in the album");
    }
    if let Err(r) = send_checks(st, bot_id, chat_id, &Params::default(), limits).map(|_| ()) {
        return r;
    }
    let group_id = format!(
        "{}",
        13_000_000_000_000_000u64 + st.bots[&bot_id].next_message_id as u64
    );
    let mut out = vec![];
    for (kind, media, item) in parsed {
        let file_id = match input_file(st, bot_id, params, &kind, Some(&media), &kind) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let mut content = Map::new();
        content.insert("media_group_id".into(), json!(group_id));
        content.insert(kind.clone(), media_json(st, bot_id, &file_id, &kind));
        if let Some(c) = item["caption"].as_str().filter(|c| !c.is_empty()) {
            let mode = item["parse_mode"].as_str().unwrap_or("");
            match format::parse(c, mode) {
                Ok((text, e)) => {
                    content.insert("caption".into(), json!(text));
                    if !e.is_empty() {
                        content.insert("caption_entities".into(), format::entities_json(&e));
                    }
                }
                Err(e) => return api_err(400, &e.to_string()),
            }
        }
        out.push(finish_send(
            st,
            bot_id,
            "sendMediaGroup",
            chat_id,
            content,
            None,
            None,
        ));
    }
    api_ok(Value::Array(out))
}

fn send_poll(st: &mut State, bot_id: u64, params: &Params, limits: Limits) -> Reply {
    let chat_id = match chat_id_param(params, "chat_id") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let question = params.text("question").unwrap_or_default();
    if question.trim().is_empty() {
        return bad_request("poll question must be non-empty");
    }
    if question.chars().count() > 300 {
        return bad_request("poll question length must not exceed 300");
    }
    let options: Vec<String> = match params.json("options") {
        Some(Value::Array(list)) => {
            let mut out = vec![];
            for o in list {
                match o {
                    Value::String(s) => out.push(s),
                    Value::Object(m) => match m.get("text").and_then(Value::as_str) {
                        Some(s) => out.push(s.to_string()),
                        None => return bad_request(
                            "can't parse InputPollOption: Field \"text\" must be of type String",
                        ),
                    },
                    _ => return bad_request("expected an option to be of type String"),
                }
            }
            out
        }
        Some(_) => return bad_request("expected an Array of String as options"),
        None => return bad_request("can't parse options JSON object"),
    };
    if options.len() < 2 {
        return bad_request("poll must have at least 2 option");
    }
    if options.len() > 12 {
        return bad_request("poll can't have more than 12 options");
    }
    if options
        .iter()
        .any(|o| o.trim().is_empty() || o.chars().count() > 100)
    {
        return bad_request("poll options length must not exceed 100");
    }
    let (markup, replied) = match send_checks(st, bot_id, chat_id, params, limits) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let poll_type = params.text("type").unwrap_or_else(|| "regular".into());
    let id = format!(
        "{}",
        5_000_000_000_000_000_000u64 + (st.random() * 1e15) as u64
    );
    let poll = json!({
        "id": id, "question": question,
        "options": options.iter().map(|o| json!({"text": o, "voter_count": 0})).collect::<Vec<_>>(),
        "total_voter_count": 0, "is_closed": false,
        "is_anonymous": params.text("is_anonymous").as_deref() != Some("false"),
        "type": poll_type,
        "allows_multiple_answers": params.text("allows_multiple_answers").as_deref() == Some("true"),
    });
    let mut content = Map::new();
    content.insert("poll".into(), poll);
    api_ok(finish_send(
        st, bot_id, "sendPoll", chat_id, content, markup, replied,
    ))
}

fn copy_or_forward(
    st: &mut State,
    bot_id: u64,
    method: &str,
    params: &Params,
    limits: Limits,
) -> Reply {
    let chat_id = match chat_id_param(params, "chat_id") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let from_chat = match chat_id_param(params, "from_chat_id") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let message_id = match message_id_param(params, "message_id") {
        Ok(id) => id,
        Err(r) => return r,
    };
    let what = if method == "copyMessage" {
        "message to copy not found"
    } else {
        "message to forward not found"
    };
    let bot = &st.bots[&bot_id];
    if !bot.chats.contains(&from_chat) {
        return bad_request("chat not found");
    }
    let Some(original) = bot.messages.get(&(from_chat, message_id)).cloned() else {
        return bad_request(what);
    };
    let caption = if method == "copyMessage" {
        match formatted(params, "caption", "caption_entities") {
            Ok(c) => c,
            Err(r) => return r,
        }
    } else {
        None
    };
    let (markup, replied) = match send_checks(st, bot_id, chat_id, params, limits) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut content = Map::new();
    for key in [
        "text",
        "entities",
        "caption",
        "caption_entities",
        "photo",
        "document",
        "video",
        "audio",
        "voice",
        "animation",
        "sticker",
        "video_note",
        "location",
        "contact",
        "poll",
        "dice",
    ] {
        if let Some(v) = original.get(key) {
            content.insert(key.into(), v.clone());
        }
    }
    if let Some((c, e)) = caption {
        content.insert("caption".into(), json!(c));
        content.insert("caption_entities".into(), e);
    }
    let markup = if method == "copyMessage" {
        markup.or_else(|| original.get("reply_markup").cloned())
    } else {
        original.get("reply_markup").cloned()
    };
    if method == "forwardMessage" {
        let origin = if original["from"]["is_bot"] == json!(true)
            && original["from"]["id"] == json!(bot_id)
        {
            json!({"type": "user", "sender_user": original["from"], "date": original["date"]})
        } else {
            json!({"type": "user", "sender_user": original["from"], "date": original["date"]})
        };
        content.insert("forward_origin".into(), origin);
        content.insert("forward_from".into(), original["from"].clone());
        content.insert("forward_date".into(), original["date"].clone());
    }
    let message = finish_send(st, bot_id, method, chat_id, content, markup, replied);
    if method == "copyMessage" {
        api_ok(json!({"message_id": message["message_id"]}))
    } else {
        api_ok(message)
    }
}

fn edit(st: &mut State, bot_id: u64, method: &str, params: &Params) -> Reply {
    if params.text("inline_message_id").is_some() {
        return bad_request("message to edit not found");
    }
    let chat_id = match chat_id_param(params, "chat_id") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let message_id = match message_id_param(params, "message_id") {
        Ok(id) => id,
        Err(r) => return r,
    };
    let new_text = if method == "editMessageText" {
        match params.text("text").filter(|t| !t.is_empty()) {
            None => return bad_request("message text is empty"),
            Some(_) => match formatted(params, "text", "entities") {
                Ok(x) => x,
                Err(r) => return r,
            },
        }
    } else if method == "editMessageCaption" {
        match formatted(params, "caption", "caption_entities") {
            Ok(x) => x.or(Some((String::new(), json!([])))),
            Err(r) => return r,
        }
    } else {
        None
    };
    if let Some((t, _)) = &new_text {
        let max = if method == "editMessageText" {
            state::MAX_TEXT_CHARS
        } else {
            MAX_CAPTION
        };
        if method == "editMessageText" && t.trim().is_empty() {
            return bad_request("message text is empty");
        }
        if format::utf16_len(t) > max {
            return bad_request(if method == "editMessageText" {
                "message is too long"
            } else {
                "message caption is too long"
            });
        }
    }
    let markup = match markup::parse(params.fields.get("reply_markup")) {
        Ok(m) => m,
        Err(d) => return api_err(400, &d),
    };
    if markup
        .as_ref()
        .is_some_and(|m| m.get("inline_keyboard").is_none())
    {
        return bad_request("inline keyboard expected");
    }
    // editMessageMedia: the new media, resolved before the message is taken.
    let new_media = if method == "editMessageMedia" {
        let Some(media) = params.json("media").filter(Value::is_object) else {
            return bad_request("can't parse InputMedia JSON object");
        };
        let kind = media["type"].as_str().unwrap_or("").to_string();
        if !["photo", "video", "audio", "document", "animation"].contains(&kind.as_str()) {
            return bad_request("can't parse InputMedia: invalid type");
        }
        let source = media["media"].as_str().unwrap_or("").to_string();
        let file_id = match input_file(st, bot_id, params, &kind, Some(&source), &kind) {
            Ok(f) => f,
            Err(r) => return r,
        };
        Some((kind.clone(), media_json(st, bot_id, &file_id, &kind), media))
    } else {
        None
    };
    let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
    if !bot.chats.contains(&chat_id) {
        return bad_request("chat not found");
    }
    let Some(current) = bot.messages.get(&(chat_id, message_id)).cloned() else {
        return bad_request("message to edit not found");
    };
    if current["from"]["id"] != json!(bot_id) {
        return bad_request("message can't be edited");
    }
    let mut updated = current.clone();
    let obj = updated.as_object_mut().expect("messages are objects");
    const MEDIA_KEYS: [&str; 6] = ["photo", "document", "video", "audio", "animation", "voice"];
    let has_media = MEDIA_KEYS.iter().any(|k| obj.contains_key(*k));
    match method {
        "editMessageText" => {
            if !obj.contains_key("text") {
                return bad_request("there is no text in the message to edit");
            }
            let (t, e) = new_text.clone().unwrap_or_default();
            obj.insert("text".into(), json!(t));
            obj.remove("entities");
            if e.as_array().is_some_and(|a| !a.is_empty()) {
                obj.insert("entities".into(), e);
            }
        }
        "editMessageCaption" => {
            if !has_media {
                return bad_request("there is no caption in the message to edit");
            }
            let (c, e) = new_text.clone().unwrap_or_default();
            obj.remove("caption");
            obj.remove("caption_entities");
            if !c.is_empty() {
                obj.insert("caption".into(), json!(c));
                if e.as_array().is_some_and(|a| !a.is_empty()) {
                    obj.insert("caption_entities".into(), e);
                }
            }
        }
        "editMessageMedia" => {
            if !has_media {
                return bad_request("there is no media in the message to edit");
            }
            let (kind, value, input) = new_media.clone().expect("resolved above");
            for k in MEDIA_KEYS {
                obj.remove(k);
            }
            obj.insert(kind, value);
            obj.remove("caption");
            obj.remove("caption_entities");
            if let Some(c) = input["caption"].as_str().filter(|c| !c.is_empty()) {
                obj.insert("caption".into(), json!(c));
            }
        }
        _ => {}
    }
    obj.remove("reply_markup");
    if let Some(kb) = &markup {
        obj.insert("reply_markup".into(), kb.clone());
    }
    let same = |m: &Value| {
        let mut m = m.clone();
        if let Some(o) = m.as_object_mut() {
            o.remove("edit_date");
        }
        m
    };
    if method != "editMessageMedia" && same(&updated) == same(&current) {
        return bad_request(
            "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
        );
    }
    updated["edit_date"] = json!(state::unix_now());
    bot.store_message("edit", &updated);
    let mut fields = Map::new();
    for key in [
        "text",
        "entities",
        "caption",
        "caption_entities",
        "reply_markup",
    ] {
        if let Some(v) = updated.get(key) {
            fields.insert(key.into(), v.clone());
        }
    }
    fields.insert("edited".into(), json!(true));
    bot.record_sent(method, chat_id, message_id, fields);
    api_ok(updated)
}

/// A press on an inline button of the bot's message (control API): a
/// callback_query update with a fresh id. Err: why not.
pub fn press_button(
    st: &mut State,
    bot_id: u64,
    user_id: i64,
    chat_id: i64,
    message_id: i64,
    data: Option<&str>,
    at: Option<(usize, usize)>,
    ttl: Duration,
) -> Result<(String, i64), String> {
    let bot = st.bots.get_mut(&bot_id).ok_or("no such bot")?;
    let message = bot
        .messages
        .get(&(chat_id, message_id))
        .cloned()
        .ok_or("no such message")?;
    let button = markup::find_button(&message, data, at).ok_or("no such button on the message")?;
    let Some(data) = button["callback_data"].as_str() else {
        return Err("the button has no callback_data".into());
    };
    bot.next_callback += 1;
    let id = format!(
        "{}{:08}",
        bot.id % 100_000 * 1_000_000_000 + 4_000_000_000,
        bot.next_callback
    );
    bot.callbacks.insert(
        id.clone(),
        state::PendingCallback {
            created: Instant::now(),
            ttl,
            answered: false,
            chat_id,
        },
    );
    let mut update = Map::new();
    update.insert(
        "callback_query".into(),
        json!({"id": id, "from": bot.user_json(user_id), "message": message,
               "chat_instance": format!("{}", chat_id.unsigned_abs() * 7 + bot.id), "data": data}),
    );
    bot.learn_from_update(&update);
    let mut body = Map::new();
    body.insert("message_id".into(), json!(message_id));
    body.insert("data".into(), json!(data));
    body.insert("callback_query_id".into(), json!(id));
    bot.event("press", chat_id, body);
    let update_id = bot.push_update(update);
    Ok((id, update_id))
}
