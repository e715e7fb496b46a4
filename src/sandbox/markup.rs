//! `reply_markup` as the Bot API checks it: an inline keyboard, a reply
//! keyboard, a keyboard removal or a force reply, validated with the real
//! server's error texts (tdlib/telegram-bot-api `get_reply_markup`), and
//! returned in the shape Telegram puts on a message (only inline keyboards
//! are shown on a message; the others are accepted and recorded).
//!
//! Pure functions over JSON: no state, no I/O.

use serde_json::{json, Map, Value};

/// The most bytes of `callback_data` Telegram accepts.
pub const MAX_CALLBACK_DATA: usize = 64;

fn bad(m: impl std::fmt::Display) -> String {
    format!("Bad Request: {m}")
}

/// Parses and checks a reply_markup parameter (a JSON object or its
/// serialized text). Ok(None) when it is empty.
pub fn parse(raw: Option<&Value>) -> Result<Option<Value>, String> {
    let value = match raw {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => v,
            Err(_) => return Err(bad("can't parse reply keyboard markup JSON object")),
        },
        Some(other) => other.clone(),
    };
    let Value::Object(object) = value else {
        return Err(bad("object expected as reply markup"));
    };
    if let Some(rows) = object.get("inline_keyboard") {
        let Some(rows) = rows.as_array().filter(|r| r.iter().all(Value::is_array)) else {
            return Err(bad(
                "Field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays",
            ));
        };
        let mut out_rows = vec![];
        for row in rows {
            let mut out_row = vec![];
            for button in row.as_array().into_iter().flatten() {
                let b = inline_button(button)
                    .map_err(|m| bad(format!("can't parse inline keyboard button: {m}")))?;
                if let Some(data) = b["callback_data"].as_str() {
                    if data.len() > MAX_CALLBACK_DATA {
                        return Err(bad("BUTTON_DATA_INVALID"));
                    }
                }
                if let Some(url) = b["url"].as_str() {
                    let lower = url.to_ascii_lowercase();
                    let scheme_ok = ["http://", "https://", "tg://"]
                        .iter()
                        .any(|p| lower.starts_with(p) && lower.len() > p.len());
                    if !scheme_ok {
                        return Err(bad("BUTTON_URL_INVALID"));
                    }
                }
                out_row.push(b);
            }
            out_rows.push(Value::Array(out_row));
        }
        if out_rows
            .iter()
            .any(|r| !r.as_array().is_some_and(Vec::is_empty))
        {
            return Ok(Some(json!({"inline_keyboard": out_rows})));
        }
    }
    if let Some(rows) = object.get("keyboard") {
        let Some(rows) = rows.as_array().filter(|r| r.iter().all(Value::is_array)) else {
            return Err(bad("Field \"keyboard\" must be an Array of Arrays"));
        };
        let mut out_rows = vec![];
        for row in rows {
            let mut out_row = vec![];
            for button in row.as_array().into_iter().flatten() {
                let b = match button {
                    Value::String(s) => json!({"text": s}),
                    Value::Object(o) => match o.get("text") {
                        Some(Value::String(_)) => button.clone(),
                        _ => return Err(bad(
                            "can't parse keyboard button: Field \"text\" must be of type String",
                        )),
                    },
                    _ => return Err(bad(
                        "can't parse keyboard button: KeyboardButton must be a String or an Object",
                    )),
                };
                out_row.push(b);
            }
            out_rows.push(Value::Array(out_row));
        }
        if !out_rows.is_empty() {
            let mut kb = object.clone();
            kb.insert("keyboard".into(), Value::Array(out_rows));
            return Ok(Some(Value::Object(kb)));
        }
    }
    let flag = |k: &str| object.get(k).is_some_and(|v| v == &json!(true));
    if flag("remove_keyboard") || flag("force_reply") {
        return Ok(Some(Value::Object(object)));
    }
    // An object with none of the known fields means no markup, as in TDLib.
    Ok(None)
}

fn inline_button(button: &Value) -> Result<Value, String> {
    let Value::Object(o) = button else {
        return Err("InlineKeyboardButton must be an Object".into());
    };
    let Some(Value::String(text)) = o.get("text") else {
        return Err("Field \"text\" must be of type String".into());
    };
    let mut out = Map::new();
    out.insert("text".into(), json!(text));
    let string_field = |k: &str| -> Result<Option<String>, String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("Field \"{k}\" must be of type String")),
        }
    };
    if let Some(url) = string_field("url")?.filter(|u| !u.is_empty()) {
        out.insert("url".into(), json!(url));
        return Ok(Value::Object(out));
    }
    if let Some(data) = string_field("callback_data")?.filter(|d| !d.is_empty()) {
        out.insert("callback_data".into(), json!(data));
        return Ok(Value::Object(out));
    }
    for key in [
        "callback_game",
        "pay",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "login_url",
        "web_app",
        "copy_text",
    ] {
        if let Some(v) = o.get(key) {
            out.insert(key.into(), v.clone());
            return Ok(Value::Object(out));
        }
    }
    Err("Text buttons are unallowed in the inline keyboard".into())
}

/// The markup a message carries in the Bot API (inline keyboards only).
pub fn on_message(markup: &Option<Value>) -> Option<Value> {
    markup
        .as_ref()
        .filter(|m| m.get("inline_keyboard").is_some())
        .cloned()
}

/// The inline button of `message` whose callback_data is `data`, or the
/// button at (row, column).
pub fn find_button(
    message: &Value,
    data: Option<&str>,
    at: Option<(usize, usize)>,
) -> Option<Value> {
    let rows = message["reply_markup"]["inline_keyboard"].as_array()?;
    if let Some((r, c)) = at {
        return rows.get(r)?.get(c).cloned();
    }
    let data = data?;
    rows.iter()
        .flat_map(|r| r.as_array().into_iter().flatten())
        .find(|b| b["callback_data"].as_str() == Some(data))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_keyboards_are_checked_and_kept() {
        let m = parse(Some(&json!(
            r#"{"inline_keyboard":[[{"text":"Yes","callback_data":"y"},{"text":"Site","url":"https://x.org"}]]}"#
        )))
        .expect("valid")
        .expect("some");
        assert_eq!(m["inline_keyboard"][0][0]["callback_data"], "y");
        assert_eq!(on_message(&Some(m.clone())), Some(m.clone()));
        let msg = json!({"reply_markup": m});
        assert_eq!(
            find_button(&msg, Some("y"), None).expect("found")["text"],
            "Yes"
        );
        assert_eq!(
            find_button(&msg, None, Some((0, 1))).expect("found")["text"],
            "Site"
        );
    }

    #[test]
    fn bad_markup_gets_telegrams_errors() {
        let long = "x".repeat(65);
        let err = |v: Value| parse(Some(&v)).expect_err("refused");
        assert_eq!(
            err(json!({"inline_keyboard":[[{"text":"a","callback_data": long}]]})),
            "Bad Request: BUTTON_DATA_INVALID"
        );
        assert_eq!(
            err(json!("{not json")),
            "Bad Request: can't parse reply keyboard markup JSON object"
        );
        assert_eq!(
            err(json!({"inline_keyboard":[[{"text":"a"}]]})),
            "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        );
        assert_eq!(
            err(json!({"inline_keyboard":[{"text":"a"}]})),
            "Bad Request: Field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays"
        );
        assert_eq!(
            err(json!([1])),
            "Bad Request: object expected as reply markup"
        );
        assert!(parse(Some(
            &json!({"inline_keyboard":[[{"text":"a","callback_data":"x".repeat(64)}]]})
        ))
        .is_ok());
    }

    #[test]
    fn reply_keyboards_and_removal() {
        let m = parse(Some(
            &json!({"keyboard":[["A", {"text":"B"}]],"resize_keyboard":true}),
        ))
        .expect("valid")
        .expect("some");
        assert_eq!(m["keyboard"][0][0], json!({"text":"A"}));
        assert_eq!(on_message(&Some(m)), None);
        assert!(parse(Some(&json!({"remove_keyboard":true})))
            .expect("valid")
            .is_some());
        assert_eq!(parse(Some(&json!({}))), Ok(None));
    }
}
