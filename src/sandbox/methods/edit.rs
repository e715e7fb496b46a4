//! Changing what was sent: edits of text, caption, markup and media,
//! deletions, callback answers, and the button press (control API) that
//! creates a callback query.

use super::send::{input_file, media_json};
use super::*;

/// Edits, deletions and callback answers.
pub(super) fn call(st: &mut State, bot_id: u64, method: &str, params: &Params) -> Reply {
    match method {
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
        _ => api_err(404, "Not Found: method not found"),
    }
}

pub(super) fn edit(st: &mut State, bot_id: u64, method: &str, params: &Params) -> Reply {
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
    copy_present(
        &updated,
        &mut fields,
        &[
            "text",
            "entities",
            "caption",
            "caption_entities",
            "reply_markup",
        ],
    );
    fields.insert("edited".into(), json!(true));
    bot.record_sent(method, chat_id, message_id, fields);
    api_ok(updated)
}

/// A user's press on an inline button (control API).
pub(crate) struct Press<'a> {
    pub user_id: i64,
    pub chat_id: i64,
    pub message_id: i64,
    /// The button by its callback_data...
    pub data: Option<&'a str>,
    /// ...or by (row, column).
    pub at: Option<(usize, usize)>,
    /// How long the answer is accepted.
    pub ttl: Duration,
}

/// A press on an inline button of the bot's message (control API): a
/// callback_query update with a fresh id. Err: why not.
pub(crate) fn press_button(
    st: &mut State,
    bot_id: u64,
    press: &Press,
) -> Result<(String, i64), String> {
    let Press {
        user_id,
        chat_id,
        message_id,
        data,
        at,
        ttl,
    } = *press;
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
