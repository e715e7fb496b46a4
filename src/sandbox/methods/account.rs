//! The methods about the bot itself: getMe, commands, the menu button,
//! webhooks, getFile, close and logOut.

use super::*;

/// getMe, commands, menu button, webhooks, close, logOut, getFile.
pub(super) fn call(st: &mut State, bot_id: u64, method: &str, params: &Params) -> Reply {
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
