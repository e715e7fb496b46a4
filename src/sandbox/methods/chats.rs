//! Chats and members (getChat, getChatMember, administrators, member
//! count, leaveChat), reactions and pins.

use super::*;

/// Chats, members, reactions and pins.
pub(super) fn call(st: &mut State, bot_id: u64, method: &str, params: &Params) -> Reply {
    match method {
        "getChat" => {
            let chat_id = match known_chat(st, bot_id, params) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let bot = &st.bots[&bot_id];
            let mut chat = chat_of(st, bot, chat_id);
            chat["accent_color_id"] = json!(0);
            chat["max_reaction_count"] = json!(11);
            if chat_id < 0 {
                chat["permissions"] = json!({"can_send_messages": true});
            }
            api_ok(chat)
        }
        "getChatMember" | "getChatAdministrators" | "getChatMemberCount" => {
            let chat_id = match known_chat(st, bot_id, params) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let bot = &st.bots[&bot_id];
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
            let chat_id = match known_chat(st, bot_id, params) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
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
            let chat_id = match known_chat(st, bot_id, params) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
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
        _ => api_err(404, "Not Found: method not found"),
    }
}

/// The `chat_id` parameter, when it names a chat the bot is in; else the
/// reply Telegram gives ("chat_id is empty", "chat not found").
fn known_chat(st: &State, bot_id: u64, params: &Params) -> Result<i64, Reply> {
    let chat_id = chat_id_param(params, "chat_id")?;
    if !st.bots[&bot_id].chats.contains(&chat_id) {
        return Err(bad_request("chat not found"));
    }
    Ok(chat_id)
}
