//! sendMessage's answer read without a JSON tree: the hot path of every
//! reply a worker sends. Only `ok` and the sent message's `message_id` are
//! kept; everything else in the answer (the whole sent message, with the
//! message it quotes) is skipped as it is read, with no allocation. An
//! answer that is not `ok: true` with such a result is none of this
//! module's business: the caller classifies it in full
//! (`telegram::classify`), so errors read exactly as before. It must never
//! call an answer a success that `classify` would not.

use crate::jsonread::{key_visitor, map_visitor};
use serde::de::{self, IgnoredAny};

/// The id of the message a successful sendMessage sent, or None when the
/// answer is anything else (an error, or not the shape expected).
pub fn message_id(body: &[u8]) -> Option<i64> {
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer {
            ok: Some(true),
            message_id: Some(id),
        }) => Some(id),
        _ => None,
    }
}

/// `{"ok": ..., "result": {"message_id": ...}, ...}`, the rest skipped.
struct Answer {
    ok: Option<bool>,
    message_id: Option<i64>,
}

/// A key of the answer or of its result: only the ones read are told apart.
enum Key {
    Ok,
    Result,
    MessageId,
    Other,
}

key_visitor!(Key, |key| match key {
    "ok" => Key::Ok,
    "result" => Key::Result,
    "message_id" => Key::MessageId,
    _ => Key::Other,
});

/// The result object: its `message_id`.
struct Sent(Option<i64>);

map_visitor!(Sent, "a message", |map| {
    let mut id = None;
    while let Some(key) = map.next_key::<Key>()? {
        match key {
            Key::MessageId if id.is_none() => id = Some(map.next_value::<i64>()?),
            Key::MessageId => return Err(de::Error::duplicate_field("message_id")),
            _ => drop(map.next_value::<IgnoredAny>()?),
        }
    }
    Ok(Sent(id))
});

map_visitor!(Answer, "a Bot API answer", |map| {
    let (mut ok, mut message_id, mut result) = (None, None, false);
    while let Some(key) = map.next_key::<Key>()? {
        match key {
            Key::Ok if ok.is_none() => ok = Some(map.next_value::<bool>()?),
            Key::Result if !result => {
                result = true;
                message_id = map.next_value::<Sent>()?.0;
            }
            // A key twice: serde_json's tree keeps the last, so
            // leave such an answer to `classify`.
            Key::Ok | Key::Result => return Err(de::Error::custom("a key twice")),
            _ => drop(map.next_value::<IgnoredAny>()?),
        }
    }
    Ok(Answer { ok, message_id })
});

#[cfg(test)]
mod tests {
    use super::message_id;

    #[test]
    fn a_sent_message_gives_its_id_whatever_else_it_carries() {
        let body = br#"{"ok":true,"result":{"chat":{"first_name":"U \"5\"","id":5,"type":"private"},"date":1,"from":{"id":1,"is_bot":true},"message_id":3,"reply_to_message":{"message_id":1,"text":"a\u00e9\n"},"entities":[{"type":"bold","offset":0}],"text":"x"}}"#;
        assert_eq!(message_id(body), Some(3));
        let first = br#"{"result":{"message_id":7},"ok":true}"#;
        assert_eq!(message_id(first), Some(7), "keys in any order");
    }

    #[test]
    fn anything_but_a_sent_message_is_left_to_classify() {
        for body in [
            &br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#[..],
            br#"{"ok":false,"error_code":429,"parameters":{"retry_after":3}}"#,
            br#"{"ok":true}"#,
            br#"{"ok":true,"result":true}"#,
            br#"{"ok":true,"result":{"chat":{}}}"#,
            br#"{"ok":true,"result":{"message_id":"3"}}"#,
            br#"{"ok":true,"result":{"message_id":3},"ok":false}"#,
            br#"{"ok":"true","result":{"message_id":3}}"#,
            br#"{"ok":true,"result":{"message_id":3}"#,
            br#"[1]"#,
            b"",
            b"<html>502</html>",
        ] {
            assert_eq!(message_id(body), None, "{}", String::from_utf8_lossy(body));
        }
    }
}
