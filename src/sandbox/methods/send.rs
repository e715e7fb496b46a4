//! The sending methods: text, media by upload, file_id or URL, media
//! groups, locations, contacts, polls, dice, chat actions, copies and
//! forwards; and what every send checks (markup, chat, replied message,
//! flood limits) and records.

use super::*;

/// The sending methods.
pub(super) fn call(st: &mut State, bot_id: u64, method: &str, params: &Params) -> Reply {
    let limits = st.limits;
    match method {
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
        _ => api_err(404, "Not Found: method not found"),
    }
}

/// What every send checks after its content: markup, the chat, the
/// replied message and the flood limits. Ok: (reply_markup, reply_to).
pub(super) fn send_checks(
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
pub(super) fn finish_send(
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
    copy_present(
        &message,
        &mut fields,
        &["text", "caption", "entities", "caption_entities"],
    );
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
    copy_present(
        &message,
        &mut fields,
        &[
            "location",
            "contact",
            "poll",
            "dice",
            "media_group_id",
            "forward_origin",
        ],
    );
    bot.record_sent(method, chat_id, message_id, fields);
    message
}

/// Resolves a file parameter: an uploaded part, `attach://name`, a URL
/// (fetched from loopback beforehand, or refused), or a file_id this bot
/// holds. Returns the file_id.
pub(super) fn input_file(
    st: &mut State,
    bot_id: u64,
    params: &Params,
    field: &str,
    value: Option<&str>,
    kind: &str,
) -> Result<String, Reply> {
    let store = |st: &mut State, part: &crate::sandbox::http::FilePart| {
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
pub(super) fn media_json(st: &mut State, bot_id: u64, file_id: &str, kind: &str) -> Value {
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

pub(super) fn send_media(
    st: &mut State,
    bot_id: u64,
    method: &str,
    params: &Params,
    limits: Limits,
) -> Reply {
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
    if !params.files.contains_key(kind) && params.text(kind).is_none() {
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

pub(super) fn send_media_group(
    st: &mut State,
    bot_id: u64,
    params: &Params,
    limits: Limits,
) -> Reply {
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

pub(super) fn send_poll(st: &mut State, bot_id: u64, params: &Params, limits: Limits) -> Reply {
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

pub(super) fn copy_or_forward(
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
    copy_present(
        &original,
        &mut content,
        &[
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
        ],
    );
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
        let origin =
            json!({"type": "user", "sender_user": original["from"], "date": original["date"]});
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
