//! The control API under `/_sandbox/`: register bots, inject what users
//! do (messages, files, raw updates, button presses, edits, reactions,
//! joining and leaving groups, blocking the bot), read what bots did (the
//! `sent` record and the live `events` the chat page long-polls), inject
//! faults and set flood limits. JSON in and out; never faulted. It never
//! prints or returns a token.

use super::http;
use super::methods;
use super::state::{self, Fault, FaultKind, Limits};
use super::MAX_CONTROL_BODY_BYTES;
use super::{
    control_err, control_ok, read_body, register, send, sent_after, server, Reply, Shared,
};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `/_sandbox/...`: JSON in and out, never faulted.
pub(super) fn control(shared: &Arc<Shared>, mut request: server::Request, rest: &str, query: &str) {
    let method = request.method().to_ascii_uppercase();
    let Some(body) = read_body(&mut request, MAX_CONTROL_BODY_BYTES) else {
        return send(request, control_err(413, "body too large"));
    };
    let query: Map<String, Value> = http::parse_urlencoded(query)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let params = http::Params {
        fields: query.into_iter().collect(),
        files: Default::default(),
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let json_body = || -> Result<Value, Reply> {
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(json!({}));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(control_err(400, "the body must be a JSON object")),
        }
    };
    let reply = match (method.as_str(), parts.as_slice()) {
        ("POST", ["bots"]) => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let token = v["token"].as_str().unwrap_or("");
                match crate::token::Token::parse(token) {
                    Err(_) => control_err(400, "token must be <digits>:<secret>"),
                    Ok(t) => {
                        let mut st = shared.lock();
                        register(&mut st, &t, v["username"].as_str().unwrap_or(""));
                        let bot = &st.bots[&t.bot_id()];
                        control_ok(json!({"id": bot.id, "username": bot.username}))
                    }
                }
            }
        },
        ("GET", ["stats"]) => {
            let st = shared.lock();
            let bots: Map<String, Value> = st
                .bots
                .values()
                .map(|b| (b.id.to_string(), b.stats()))
                .collect();
            control_ok(
                json!({"calls": st.calls, "faults_injected": st.faults_injected,
                              "bots": bots}),
            )
        }
        ("GET", ["files", file_id]) => {
            let file_id = http::percent_decode(file_id);
            let bytes = shared.lock().files.get(&file_id).map(|f| f.bytes.clone());
            match bytes {
                Some(bytes) => Reply {
                    status: 200,
                    content_type: "application/octet-stream",
                    body: bytes.to_vec(),
                    retry_after: None,
                },
                None => control_err(404, "no such file"),
            }
        }
        ("POST", ["faults"]) => match json_body() {
            Err(r) => r,
            Ok(v) => add_fault(shared, &v),
        },
        ("DELETE", ["faults"]) => {
            shared.lock().faults.clear();
            control_ok(json!(true))
        }
        ("POST", ["limits"]) => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let get = |k: &str| v[k].as_u64().unwrap_or(0).min(u64::from(u32::MAX)) as u32;
                let limits = Limits {
                    per_chat_per_sec: get("per_chat_per_sec"),
                    per_bot_per_sec: get("per_bot_per_sec"),
                    per_group_per_min: get("per_group_per_min"),
                };
                shared.lock().limits = limits;
                control_ok(json!({"per_chat_per_sec": limits.per_chat_per_sec,
                                  "per_bot_per_sec": limits.per_bot_per_sec,
                                  "per_group_per_min": limits.per_group_per_min}))
            }
        },
        ("GET", ["bots"]) => {
            let st = shared.lock();
            let bots: Vec<Value> = st
                .bots
                .values()
                .map(|b| json!({"id": b.id, "username": b.username}))
                .collect();
            control_ok(json!(bots))
        }
        ("GET", ["bots", id, "events"]) => match id.parse::<u64>() {
            Err(_) => control_err(404, "no such bot"),
            Ok(bot_id) => return events(shared, request, bot_id, &params),
        },
        (verb, ["bots", id, action]) => match id.parse::<u64>() {
            Err(_) => control_err(404, "no such bot"),
            Ok(bot_id) => bot_control(shared, verb, bot_id, action, &params, &body, json_body),
        },
        _ => control_err(404, "no such control endpoint"),
    };
    send(request, reply);
}

fn add_fault(shared: &Shared, v: &Value) -> Reply {
    let kind_text = match &v["kind"] {
        Value::String(s) => s.to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let Some(kind) = FaultKind::parse(&kind_text) else {
        return control_err(
            400,
            "kind must be one of 500, 502, 429, 409, 401, malformed, drop, hang",
        );
    };
    let probability = v["probability"].as_f64();
    if probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return control_err(400, "probability must be between 0 and 1");
    }
    let fault = Fault {
        kind,
        bot_id: v["bot_id"].as_u64(),
        method: v["method"].as_str().map(|m| m.to_ascii_lowercase()),
        remaining: v["count"].as_u64().unwrap_or(1).max(1),
        probability,
        retry_after: v["retry_after"].as_u64().unwrap_or(3),
        hang_ms: v["hang_ms"].as_u64().unwrap_or(120_000),
    };
    shared.lock().faults.push(fault);
    control_ok(json!(true))
}

fn bot_control(
    shared: &Arc<Shared>,
    verb: &str,
    bot_id: u64,
    action: &str,
    query: &http::Params,
    body: &[u8],
    json_body: impl Fn() -> Result<Value, Reply>,
) -> Reply {
    let mut st = shared.lock();
    if !st.bots.contains_key(&bot_id) {
        return control_err(404, "no such bot");
    }
    let reply = match (verb, action) {
        ("POST", "revoke") => {
            st.bots.get_mut(&bot_id).expect("checked").revoked = true;
            control_ok(json!(true))
        }
        ("POST", "messages") => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let Some(user_id) = v["user_id"].as_i64() else {
                    return control_err(400, "user_id is required");
                };
                let chat_id = v["chat_id"].as_i64().unwrap_or(user_id);
                let mut content = Map::new();
                content.insert("text".into(), json!(v["text"].as_str().unwrap_or("")));
                let bot = st.bots.get_mut(&bot_id).expect("checked");
                learn_user(bot, user_id, &v);
                if let Some(r) = v["reply_to_message_id"].as_i64() {
                    match bot.messages.get(&(chat_id, r)) {
                        Some(m) => {
                            content.insert("reply_to_message".into(), m.clone());
                        }
                        None => return control_err(400, "no such message to reply to"),
                    }
                }
                let (update_id, message_id) = bot.push_user_message(user_id, chat_id, content);
                control_ok(json!({"update_id": update_id, "message_id": message_id,
                    "at_us": crate::sys::monotonic_usec().unwrap_or(0)}))
            }
        },
        ("POST", "files") => {
            let Some(Ok(user_id)) = query.int("user_id") else {
                return control_err(400, "user_id is required");
            };
            let chat_id = match query.int("chat_id") {
                Some(Ok(c)) => c,
                _ => user_id,
            };
            let kind = query.text("kind").unwrap_or_else(|| "document".into());
            if !["document", "photo", "audio", "video", "voice"].contains(&kind.as_str()) {
                return control_err(400, "kind must be document, photo, audio, video or voice");
            }
            let file_name = query.text("file_name").unwrap_or_else(|| "file.bin".into());
            let file_id = st.store_file(bot_id, &kind, &file_name, body.to_vec());
            let mut content = Map::new();
            if kind == "photo" {
                // Telegram sends several sizes, largest last.
                let thumb_bytes = body[..body.len() / 10].to_vec();
                let thumb = st.store_file(bot_id, "photo", &file_name, thumb_bytes);
                let mut small = st.file_json(&thumb, "photo");
                small["width"] = json!(128);
                small["height"] = json!(96);
                content.insert(
                    "photo".into(),
                    json!([small, st.file_json(&file_id, "photo")]),
                );
            } else {
                content.insert(kind.clone(), st.file_json(&file_id, &kind));
            }
            if let Some(caption) = query.text("caption") {
                content.insert("caption".into(), json!(caption));
            }
            let bot = st.bots.get_mut(&bot_id).expect("checked");
            let (update_id, message_id) = bot.push_user_message(user_id, chat_id, content);
            control_ok(json!({"update_id": update_id, "message_id": message_id,
                              "file_id": file_id}))
        }
        ("POST", "updates") => match json_body() {
            Err(r) => r,
            Ok(Value::Object(mut update)) => {
                update.remove("update_id");
                let bot = st.bots.get_mut(&bot_id).expect("checked");
                // Whoever wrote, in any way, is a known chat.
                bot.learn_from_update(&update);
                control_ok(json!({"update_id": bot.push_update(update)}))
            }
            Ok(_) => control_err(400, "the body must be a JSON object"),
        },
        ("POST", "chats") => match json_body() {
            Err(r) => r,
            Ok(v) => match v["chat_id"].as_i64() {
                Some(chat_id) => {
                    let bot = st.bots.get_mut(&bot_id).expect("checked");
                    bot.chats.insert(chat_id);
                    if v["blocked"] == json!(true) {
                        bot.blocked.insert(chat_id);
                    } else {
                        bot.blocked.remove(&chat_id);
                    }
                    control_ok(json!(true))
                }
                None => control_err(400, "chat_id is required"),
            },
        },
        ("POST", "press") => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let Some(user_id) = v["user_id"].as_i64() else {
                    return control_err(400, "user_id is required");
                };
                let chat_id = v["chat_id"].as_i64().unwrap_or(user_id);
                let Some(message_id) = v["message_id"].as_i64() else {
                    return control_err(400, "message_id is required");
                };
                let at = match (v["row"].as_u64(), v["column"].as_u64()) {
                    (Some(r), Some(c)) => Some((r as usize, c as usize)),
                    _ => None,
                };
                let data = v["data"].as_str();
                if data.is_none() && at.is_none() {
                    return control_err(400, "data or row and column are required");
                }
                let ttl = v["ttl_ms"]
                    .as_u64()
                    .map_or(state::CALLBACK_TTL, Duration::from_millis);
                learn_user(st.bots.get_mut(&bot_id).expect("checked"), user_id, &v);
                let press = methods::Press {
                    user_id,
                    chat_id,
                    message_id,
                    data,
                    at,
                    ttl,
                };
                match methods::press_button(&mut st, bot_id, &press) {
                    Ok((id, update_id)) => {
                        control_ok(json!({"callback_query_id": id, "update_id": update_id}))
                    }
                    Err(e) => control_err(400, &e),
                }
            }
        },
        ("POST", "edit") => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let (Some(user_id), Some(message_id), Some(text)) = (
                    v["user_id"].as_i64(),
                    v["message_id"].as_i64(),
                    v["text"].as_str(),
                ) else {
                    return control_err(400, "user_id, message_id and text are required");
                };
                let chat_id = v["chat_id"].as_i64().unwrap_or(user_id);
                let bot = st.bots.get_mut(&bot_id).expect("checked");
                let Some(mut message) = bot.messages.get(&(chat_id, message_id)).cloned() else {
                    return control_err(400, "no such message");
                };
                if message["from"]["id"] != json!(user_id) {
                    return control_err(400, "the message is not this user's");
                }
                message["text"] = json!(text);
                message["edit_date"] = json!(state::unix_now());
                if let Some(o) = message.as_object_mut() {
                    o.remove("entities");
                }
                let found = super::format::detect(text);
                if !found.is_empty() {
                    message["entities"] = super::format::entities_json(&found);
                }
                bot.store_message("edit", &message);
                let mut update = Map::new();
                update.insert("edited_message".into(), message);
                control_ok(json!({"update_id": bot.push_update(update)}))
            }
        },
        ("POST", "react") => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let (Some(user_id), Some(message_id)) =
                    (v["user_id"].as_i64(), v["message_id"].as_i64())
                else {
                    return control_err(400, "user_id and message_id are required");
                };
                let chat_id = v["chat_id"].as_i64().unwrap_or(user_id);
                let new: Vec<Value> = match v["emoji"].as_str() {
                    Some(e) if !methods::is_reaction(e) => {
                        return control_err(400, "not a reaction Telegram allows")
                    }
                    Some(e) => vec![json!({"type": "emoji", "emoji": e})],
                    None => vec![],
                };
                let bot = st.bots.get_mut(&bot_id).expect("checked");
                learn_user(bot, user_id, &v);
                let Some(message) = bot.messages.get_mut(&(chat_id, message_id)) else {
                    return control_err(400, "no such message");
                };
                let key = format!("user_reaction_{user_id}");
                let old = message.get(&key).cloned().unwrap_or(json!([]));
                message[&key] = json!(new);
                let mut body = Map::new();
                body.insert("message_id".into(), json!(message_id));
                body.insert("reaction".into(), json!(new));
                body.insert("user_id".into(), json!(user_id));
                bot.event("reaction", chat_id, body);
                let mut update = Map::new();
                update.insert(
                    "message_reaction".into(),
                    json!({"chat": state::chat_json(chat_id, user_id), "message_id": message_id,
                           "user": bot.user_json(user_id), "date": state::unix_now(),
                           "old_reaction": old, "new_reaction": new}),
                );
                control_ok(json!({"update_id": bot.push_update(update)}))
            }
        },
        ("POST", "members") => match json_body() {
            Err(r) => r,
            Ok(v) => members(&mut st, bot_id, &v),
        },
        ("POST", "block") => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let Some(user_id) = v["user_id"].as_i64() else {
                    return control_err(400, "user_id is required");
                };
                let blocked = v["blocked"] != json!(false);
                let bot = st.bots.get_mut(&bot_id).expect("checked");
                learn_user(bot, user_id, &v);
                bot.chats.insert(user_id);
                let (old, new) = if blocked {
                    bot.blocked.insert(user_id);
                    ("member", "kicked")
                } else {
                    bot.blocked.remove(&user_id);
                    ("kicked", "member")
                };
                let mut update = Map::new();
                update.insert(
                    "my_chat_member".into(),
                    json!({"chat": state::chat_json(user_id, user_id), "from": bot.user_json(user_id),
                           "date": state::unix_now(),
                           "old_chat_member": {"status": old, "user": bot.user()},
                           "new_chat_member": {"status": new, "user": bot.user()}}),
                );
                control_ok(json!({"update_id": bot.push_update(update)}))
            }
        },
        ("GET", "chat") => {
            let chat_id = match query.int("chat_id") {
                Some(Ok(c)) => c,
                _ => return control_err(400, "chat_id is required"),
            };
            let bot = &st.bots[&bot_id];
            let messages: Vec<Value> = bot
                .messages
                .range((chat_id, i64::MIN)..=(chat_id, i64::MAX))
                .map(|(_, m)| m.clone())
                .collect();
            control_ok(json!({"messages": messages, "next_event": bot.next_event}))
        }
        ("GET", "sent") => {
            let since = match query.int("since") {
                Some(Ok(s)) => s.max(0) as u64,
                _ => 0,
            };
            control_ok(Value::Array(sent_after(&st.bots[&bot_id], since)))
        }
        _ => control_err(404, "no such control endpoint"),
    };
    st.wake(bot_id);
    reply
}

/// Remembers a user's names given with a control call (`first_name`,
/// `username`), so their messages look like theirs.
fn learn_user(bot: &mut state::Bot, user_id: i64, v: &Value) {
    if let Some(first) = v["first_name"].as_str() {
        let mut user = json!({"id": user_id, "is_bot": false, "first_name": first});
        if let Some(u) = v["username"].as_str() {
            user["username"] = json!(u);
        }
        bot.users.insert(user_id, user);
    }
}

/// `POST /_sandbox/bots/<id>/members`: a user (or, with `"bot":true`, the
/// bot itself) joins or leaves a group, as Telegram reports it: the bot
/// gets `my_chat_member`; a user gives a service message and a
/// `chat_member` update (sent only when asked for in allowed_updates).
fn members(st: &mut state::State, bot_id: u64, v: &Value) -> Reply {
    let (Some(chat_id), Some(user_id)) = (v["chat_id"].as_i64(), v["user_id"].as_i64()) else {
        return control_err(400, "chat_id and user_id are required");
    };
    if chat_id >= 0 {
        return control_err(400, "chat_id must be a group (negative)");
    }
    let join = match v["action"].as_str() {
        Some("join") => true,
        Some("leave") => false,
        _ => return control_err(400, "action must be join or leave"),
    };
    let bot = st.bots.get_mut(&bot_id).expect("checked");
    learn_user(bot, user_id, v);
    let chat = state::chat_json(chat_id, user_id);
    let (old, new) = if join {
        ("left", "member")
    } else {
        ("member", "left")
    };
    let mut ids = vec![];
    if v["bot"] == json!(true) {
        if join {
            bot.chats.insert(chat_id);
            bot.members.entry(chat_id).or_default().insert(user_id);
        } else {
            bot.chats.remove(&chat_id);
        }
        let mut update = Map::new();
        update.insert(
            "my_chat_member".into(),
            json!({"chat": chat, "from": bot.user_json(user_id), "date": state::unix_now(),
                   "old_chat_member": {"status": old, "user": bot.user()},
                   "new_chat_member": {"status": new, "user": bot.user()}}),
        );
        ids.push(bot.push_update(update));
        return control_ok(json!({"update_ids": ids}));
    }
    if !bot.chats.contains(&chat_id) {
        return control_err(
            400,
            "the bot is not in this group (add it with \"bot\":true first)",
        );
    }
    let user = bot.user_json(user_id);
    if join {
        bot.members.entry(chat_id).or_default().insert(user_id);
    } else if let Some(m) = bot.members.get_mut(&chat_id) {
        m.remove(&user_id);
    }
    let mut content = Map::new();
    if join {
        content.insert("new_chat_members".into(), json!([user]));
        content.insert("new_chat_member".into(), user.clone());
        content.insert("new_chat_participant".into(), user.clone());
    } else {
        content.insert("left_chat_member".into(), user.clone());
        content.insert("left_chat_participant".into(), user.clone());
    }
    let (update_id, _) = bot.push_user_message(user_id, chat_id, content);
    ids.push(update_id);
    let mut update = Map::new();
    update.insert(
        "chat_member".into(),
        json!({"chat": chat, "from": user, "date": state::unix_now(),
               "old_chat_member": {"status": old, "user": user},
               "new_chat_member": {"status": new, "user": user}}),
    );
    ids.push(bot.push_update(update));
    control_ok(json!({"update_ids": ids}))
}

/// `GET /_sandbox/bots/<id>/events?since=S[&chat_id=C][&timeout=T]`: what
/// happened after seq S (messages, edits, deletions, presses, callback
/// answers, reactions), waiting up to T seconds (at most 50) for the first.
fn events(shared: &Arc<Shared>, request: server::Request, bot_id: u64, params: &http::Params) {
    let since = match params.int("since") {
        Some(Ok(s)) => s.max(0) as u64,
        _ => 0,
    };
    let chat = params.int("chat_id").and_then(Result::ok);
    let timeout = match params.int("timeout") {
        Some(Ok(t)) => t.clamp(0, 50) as u64,
        _ => 0,
    };
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut st = shared.lock();
    let reply = loop {
        let Some(bot) = st.bots.get(&bot_id) else {
            break control_err(404, "no such bot");
        };
        let found: Vec<Value> = bot
            .events
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap_or(0) > since)
            .filter(|e| chat.is_none_or(|c| e["chat_id"] == json!(c) || e["chat_id"] == json!(0)))
            .cloned()
            .collect();
        let now = Instant::now();
        if !found.is_empty() || now >= deadline || shared.stopping() {
            break control_ok(json!({"events": found, "next": bot.next_event}));
        }
        st = shared.wait_for_bot(st, bot_id, deadline - now);
    };
    drop(st);
    send(request, reply);
}
