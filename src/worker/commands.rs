//! Reading updates and the built-in commands: pure functions from update
//! JSON to what the bot should answer, so any JSON the API may send is
//! handled without panicking and tested without a network. It must never
//! send anything itself; the poll loop carries out what it returns.

use serde_json::Value;

/// The parts of a message update a bot acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub update_id: i64,
    pub message_id: i64,
    pub chat_id: i64,
    pub user_id: i64,
    pub text: Option<String>,
    /// The kind of file attached, if any: document, photo, audio, video, voice.
    pub file_kind: Option<&'static str>,
    /// A private chat (one user and the bot): `chat.type` "private", or
    /// without a type a positive chat id (groups and channels have
    /// negative ids).
    pub private: bool,
}

/// Why an update is skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    /// Not a message (an edit, a callback, a channel post): nothing to do.
    NotAMessage,
    /// A message without the fields every message has.
    Malformed(&'static str),
}

/// Extracts the message of an update.
pub fn parse_update(update: &Value) -> Result<Incoming, Skip> {
    let update_id = update["update_id"]
        .as_i64()
        .ok_or(Skip::Malformed("no update_id"))?;
    let msg = match update.get("message") {
        Some(m) if m.is_object() => m,
        Some(_) => return Err(Skip::Malformed("message is not an object")),
        None => return Err(Skip::NotAMessage),
    };
    let chat_id = msg["chat"]["id"]
        .as_i64()
        .ok_or(Skip::Malformed("no chat.id"))?;
    // Messages in channels have no sender; treat the chat as the sender.
    let user_id = msg["from"]["id"].as_i64().unwrap_or(chat_id);
    let message_id = msg["message_id"].as_i64().unwrap_or(0);
    let text = msg["text"]
        .as_str()
        .or_else(|| msg["caption"].as_str())
        .map(str::to_string);
    let file_kind = ["document", "photo", "audio", "video", "voice"]
        .into_iter()
        .find(|k| msg.get(*k).is_some_and(|v| !v.is_null()));
    let private = msg["chat"]["type"]
        .as_str()
        .map_or(chat_id > 0, |t| t == "private");
    Ok(Incoming {
        update_id,
        message_id,
        chat_id,
        user_id,
        text,
        file_kind,
        private,
    })
}

/// `parse_update` of an update's JSON text without building its tree: the
/// job's hot path (a text message is most of what a bot gets). Only a
/// message update in the plain shape is read here; for anything else
/// (another update type, a malformed one, a field of an unexpected type,
/// a key twice) it returns None and the caller parses the tree and asks
/// `parse_update`, so every answer it gives is the one `parse_update`
/// would give.
pub fn parse_message_text(raw: &str) -> Option<Incoming> {
    let u: fast::Update = serde_json::from_str(raw).ok()?;
    let m = u.message?;
    let file_kind = fast::FILE_KINDS
        .iter()
        .zip(m.files)
        .find_map(|(kind, present)| present.then_some(*kind));
    let chat_id = m.chat_id?;
    Some(Incoming {
        update_id: u.update_id?,
        message_id: m.message_id.unwrap_or(0),
        chat_id,
        user_id: m.from_id.unwrap_or(chat_id),
        text: m.text.or(m.caption),
        file_kind,
        private: m.chat_private.unwrap_or(chat_id > 0),
    })
}

/// The visitors behind `parse_message_text`: every key it reads is read
/// once (a second one is an error: the tree would keep the last), every
/// other key skipped without allocating.
mod fast {
    use crate::jsonread::{key_visitor, map_visitor, once};
    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, Visitor};
    use std::fmt;

    /// The attachments `parse_update` looks for, in its order.
    pub const FILE_KINDS: [&str; 5] = ["document", "photo", "audio", "video", "voice"];

    pub struct Update {
        pub update_id: Option<i64>,
        pub message: Option<Message>,
    }

    pub struct Message {
        pub message_id: Option<i64>,
        pub chat_id: Option<i64>,
        /// Whether `chat.type` is "private", when it has one.
        pub chat_private: Option<bool>,
        pub from_id: Option<i64>,
        pub text: Option<String>,
        pub caption: Option<String>,
        /// Which of FILE_KINDS are there and not null.
        pub files: [bool; 5],
    }

    /// The `id` (and `type`) of `chat` or `from`.
    struct Party {
        id: Option<i64>,
        private: Option<IsPrivate>,
    }

    /// A `type` string: whether it is "private" (read without a copy).
    struct IsPrivate(bool);

    impl<'de> Deserialize<'de> for IsPrivate {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IsPrivate, D::Error> {
            struct T;
            impl Visitor<'_> for T {
                type Value = IsPrivate;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a chat type")
                }
                fn visit_str<E: de::Error>(self, t: &str) -> Result<IsPrivate, E> {
                    Ok(IsPrivate(t == "private"))
                }
            }
            d.deserialize_str(T)
        }
    }

    /// A key, told apart only when it is one of those read (no
    /// allocation, escaped or not).
    #[derive(Clone, Copy, PartialEq)]
    enum Key {
        UpdateId,
        Message,
        Id,
        Type,
        MessageId,
        Chat,
        From,
        Text,
        Caption,
        /// One of FILE_KINDS, by its index.
        File(usize),
        Other,
    }

    key_visitor!(Key, |key| match key {
        "update_id" => Key::UpdateId,
        "message" => Key::Message,
        "id" => Key::Id,
        "type" => Key::Type,
        "message_id" => Key::MessageId,
        "chat" => Key::Chat,
        "from" => Key::From,
        "text" => Key::Text,
        "caption" => Key::Caption,
        k => FILE_KINDS
            .iter()
            .position(|f| *f == k)
            .map_or(Key::Other, Key::File),
    });

    map_visitor!(Update, "an update", |map| {
        let (mut update_id, mut message) = (None, None);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::UpdateId => once(&mut map, &mut update_id, "update_id")?,
                Key::Message => once(&mut map, &mut message, "message")?,
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(Update { update_id, message })
    });

    map_visitor!(Party, "a chat or user", |map| {
        let (mut id, mut private) = (None, None);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => once(&mut map, &mut id, "id")?,
                Key::Type => once(&mut map, &mut private, "type")?,
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(Party { id, private })
    });

    map_visitor!(Message, "a message", |map| {
        let (mut message_id, mut chat, mut from) = (None, None::<Party>, None::<Party>);
        let (mut text, mut caption) = (None, None);
        let mut files = [false; 5];
        let mut seen = [false; 5];
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::MessageId => once(&mut map, &mut message_id, "message_id")?,
                Key::Chat => once(&mut map, &mut chat, "chat")?,
                Key::From => once(&mut map, &mut from, "from")?,
                Key::Text => once(&mut map, &mut text, "text")?,
                Key::Caption => once(&mut map, &mut caption, "caption")?,
                Key::File(i) if seen[i] => {
                    return Err(de::Error::custom(format_args!("{} twice", FILE_KINDS[i])))
                }
                Key::File(i) => {
                    seen[i] = true;
                    files[i] = map.next_value::<Option<IgnoredAny>>()?.is_some();
                }
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        let chat = chat.unwrap_or(Party {
            id: None,
            private: None,
        });
        Ok(Message {
            message_id,
            chat_id: chat.id,
            chat_private: chat.private.map(|p| p.0),
            from_id: from.and_then(|f| f.id),
            text,
            caption,
            files,
        })
    });
}

/// A `/command@bot args` addressed to this bot.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandCall<'a> {
    pub name: String,
    pub args: &'a str,
}

/// Parses a command; None for plain text or a command for another bot.
pub fn parse_command<'a>(text: &'a str, my_username: &str) -> Option<CommandCall<'a>> {
    let rest = text.strip_prefix('/')?;
    let (head, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (name, target) = match head.split_once('@') {
        Some((n, t)) => (n, Some(t)),
        None => (head, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    if let Some(t) = target {
        if !t.eq_ignore_ascii_case(my_username) {
            return None;
        }
    }
    Some(CommandCall {
        name: name.to_ascii_lowercase(),
        args,
    })
}

/// The commands registered with setMyCommands.
pub const COMMANDS: &[(&str, &str)] = &[
    ("start", "Start talking to this bot"),
    ("help", "What this bot can do"),
    ("ping", "Check that the bot is alive"),
    ("whoami", "Your Telegram user id"),
    ("status", "This bot's uptime and counters"),
    ("reload_config", "Admins: reload the configuration"),
    ("config_status", "Admins: the configuration in use"),
    ("config_help", "Admins: how to configure botfleet"),
];

pub fn help_text(username: &str, has_handler: bool, is_admin: bool) -> String {
    let mut text = format!("@{username} runs on botfleet.\n\n/start, /help: this text\n/ping: check that I am alive\n/whoami: your user id\n/status: my uptime and counters\n");
    if is_admin {
        text.push_str("\nAdmins:\n/reload_config: reload .env\n/config_status: the configuration in use\n/config_help: how to configure botfleet\n");
    }
    if has_handler {
        text.push_str("\nAnything else you send is answered by this bot's own program.");
    } else {
        text.push_str(
            "\nNo handler program is set (BOT_HANDLER), so other messages get no real answer.",
        );
    }
    text
}

/// "3d 4h", "5m 2s".
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_text_message() {
        let u = json!({"update_id": 5, "message": {"message_id": 9, "chat": {"id": -7}, "from": {"id": 3}, "text": "/ping"}});
        assert_eq!(
            parse_update(&u),
            Ok(Incoming {
                update_id: 5,
                message_id: 9,
                chat_id: -7,
                user_id: 3,
                text: Some("/ping".into()),
                file_kind: None,
                private: false,
            })
        );
    }

    #[test]
    fn the_fast_read_of_a_message_agrees_with_parse_update_or_leaves_it_to_it() {
        // (update, read fast): whatever is read fast reads as the tree does.
        let cases = [
            (
                r#"{"update_id":5,"message":{"message_id":9,"chat":{"id":-7,"type":"group","title":"T"},"from":{"id":3,"is_bot":false},"date":1,"text":"/ping"}}"#,
                true,
            ),
            (
                r#"{"message":{"text":"hi \"you\" \u00e9","chat":{"type":"private","id":8},"from":{"id":8},"message_id":1},"update_id":6}"#,
                true,
            ),
            (
                r#"{"update_id":7,"message":{"chat":{"id":1},"photo":[{"file_id":"a"}],"caption":"c","entities":[{"type":"bold"}]}}"#,
                true,
            ),
            (
                r#"{"update_id":8,"message":{"chat":{"id":2},"document":null,"voice":{"file_id":"v"},"reply_to_message":{"text":"x","chat":{"id":9}}}}"#,
                true,
            ),
            (
                r#"{"update_id":9,"message":{"chat":{"id":-100},"sender_chat":{"id":-100}}}"#,
                true,
            ),
            (
                r#"{"update_id":10,"edited_message":{"chat":{"id":1},"text":"e"}}"#,
                false,
            ),
            (
                r#"{"update_id":11,"callback_query":{"id":"q","from":{"id":3}}}"#,
                false,
            ),
            (r#"{"update_id":12,"message":5}"#, false),
            (r#"{"update_id":13,"message":{}}"#, false),
            (r#"{"update_id":14,"message":{"chat":{"id":"a"}}}"#, false),
            (
                r#"{"update_id":15,"message":{"chat":{"id":1},"from":"x","text":7}}"#,
                false,
            ),
            (
                r#"{"update_id":16,"message":{"chat":{"id":1},"text":null,"caption":"cap"}}"#,
                false,
            ),
            (
                r#"{"update_id":17,"message":{"chat":{"id":1},"text":"a","text":"b"}}"#,
                false,
            ),
            (r#"{"update_id":"x","message":{"chat":{"id":1}}}"#, false),
            (r#"{"update_id":18.0,"message":{"chat":{"id":1}}}"#, false),
            (
                r#"{"update_id":19,"message":{"chat":{"id":1,"type":5},"text":"t"}}"#,
                false,
            ),
            (
                r#"{"update_id":20,"message":{"chat":{"id":1},"photo":[],"photo":null}}"#,
                false,
            ),
            (r#"{"message":{"chat":{"id":1}}}"#, false),
            (r#"[]"#, false),
            (r#"null"#, false),
            (
                r#"{"update_id":21,"message":{"chat":{"id":1},"text":"t"}"#,
                false,
            ),
        ];
        for (raw, fast) in cases {
            let tree: serde_json::Value =
                serde_json::from_str(raw).unwrap_or(serde_json::Value::Null);
            match parse_message_text(raw) {
                Some(m) => {
                    assert!(fast, "{raw} read fast");
                    assert_eq!(Ok(m), parse_update(&tree), "{raw}");
                }
                None => assert!(!fast, "{raw} left to the tree"),
            }
        }
    }

    #[test]
    fn a_chat_is_private_by_its_type_or_else_by_a_positive_id() {
        let private = |chat: serde_json::Value| {
            let u =
                json!({"update_id": 1, "message": {"message_id": 2, "chat": chat, "text": "hi"}});
            parse_update(&u).expect("a message").private
        };
        assert!(private(json!({"id": 5, "type": "private"})));
        assert!(!private(json!({"id": -5, "type": "group"})));
        assert!(!private(json!({"id": -1005, "type": "supergroup"})));
        assert!(private(json!({"id": 5})), "no type: a user's id");
        assert!(!private(json!({"id": -5})), "no type: a group's id");
    }

    #[test]
    fn odd_updates_are_skipped_not_panicked_on() {
        for u in [
            json!(null),
            json!([]),
            json!({"update_id": "x"}),
            json!({"update_id": 1}),
            json!({"update_id": 1, "message": 5}),
            json!({"update_id": 1, "message": {}}),
            json!({"update_id": 1, "message": {"chat": {"id": "a"}}}),
            json!({"update_id": 1, "edited_message": {"chat": {"id": 1}}}),
        ] {
            assert!(parse_update(&u).is_err(), "{u} must be skipped");
        }
        let photo = json!({"update_id": 1, "message": {"chat": {"id": 1}, "photo": [{"file_id": "a"}], "caption": "hi"}});
        let m = parse_update(&photo).expect("a photo message");
        assert_eq!(
            (m.file_kind, m.text.as_deref(), m.user_id),
            (Some("photo"), Some("hi"), 1)
        );
    }

    #[test]
    fn parses_commands_for_this_bot_only() {
        let c = parse_command("/Ping@Demo_Bot  a b ", "demo_bot").expect("a command");
        assert_eq!((c.name.as_str(), c.args), ("ping", "a b"));
        assert!(parse_command("/ping@other_bot", "demo_bot").is_none());
        assert!(parse_command("hello /ping", "demo_bot").is_none());
        assert!(parse_command("/", "demo_bot").is_none());
        assert!(parse_command("/../x", "demo_bot").is_none());
        assert_eq!(parse_command("/start", "x").expect("a command").args, "");
    }

    #[test]
    fn durations_read_like_a_person_would_write_them() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m 5s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h 1m");
        assert_eq!(human_duration(2 * 86_400 + 3600), "2d 1h");
    }
}
