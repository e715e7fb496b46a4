//! getUpdates' answer read one update at a time: each update's JSON tree
//! is built, handed to the caller's function and dropped before the next
//! is read, so a batch of 100 never holds 100 trees at once (their
//! thousands of small allocations, freed together, made musl's allocator
//! return and re-map its memory twice per update). An answer that is not
//! `ok: true` with an array result is none of this module's business: the
//! caller classifies it in full (`telegram::classify`), so errors read
//! exactly as before. It must never call an answer a success that
//! `classify` would not.

use crate::jsonread::{key_visitor, once};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// What `each` made of every update of a successful answer, in order, or
/// None when the answer is anything else (an error, or not that shape).
pub fn each<T>(body: &[u8], each: &mut impl FnMut(Value) -> T) -> Option<Vec<T>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let (ok, result) = Answer(each).deserialize(&mut de).ok()?;
    de.end().ok()?;
    match (ok, result) {
        (Some(true), Some(result)) => Some(result),
        _ => None,
    }
}

/// A key of the answer: only the ones read are told apart.
enum Key {
    Ok,
    Result,
    Other,
}

key_visitor!(Key, |key| match key {
    "ok" => Key::Ok,
    "result" => Key::Result,
    _ => Key::Other,
});

/// `{"ok": ..., "result": [...], ...}`, the rest skipped.
struct Answer<'f, F>(&'f mut F);

impl<'de, T, F: FnMut(Value) -> T> DeserializeSeed<'de> for Answer<'_, F> {
    type Value = (Option<bool>, Option<Vec<T>>);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T, F: FnMut(Value) -> T> Visitor<'de> for Answer<'_, F> {
    type Value = (Option<bool>, Option<Vec<T>>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bot API answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut ok, mut result) = (None, None);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Ok => once(&mut map, &mut ok, "ok")?,
                // A key twice: serde_json's tree keeps the last, so leave
                // such an answer to `classify`.
                Key::Result if result.is_some() => return Err(de::Error::custom("result twice")),
                Key::Result => result = Some(map.next_value_seed(Items(&mut *self.0))?),
                Key::Other => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok((ok, result))
    }
}

/// The result array, each element through the caller's function.
struct Items<'f, F>(&'f mut F);

impl<'de, T, F: FnMut(Value) -> T> DeserializeSeed<'de> for Items<'_, F> {
    type Value = Vec<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T, F: FnMut(Value) -> T> Visitor<'de> for Items<'_, F> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of updates")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(100));
        while let Some(update) = seq.next_element::<Value>()? {
            out.push((self.0)(update));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::each;
    use serde_json::Value;

    fn ids(body: &[u8]) -> Option<Vec<i64>> {
        each(body, &mut |u: Value| u["update_id"].as_i64().unwrap_or(-1))
    }

    #[test]
    fn every_update_of_a_successful_answer_in_order() {
        let body = br#"{"ok":true,"result":[{"update_id":7,"message":{"chat":{"id":1},"text":"a\n\"b\""}},{"message":{"text":"x"},"update_id":8},{"x":1}]}"#;
        assert_eq!(ids(body), Some(vec![7, 8, -1]));
        assert_eq!(
            ids(br#"{"result":[],"ok":true}"#),
            Some(vec![]),
            "keys in any order"
        );
        let mut seen = Vec::new();
        each(
            br#"{"ok":true,"result":[{"update_id":1,"k":[1,2]}]}"#,
            &mut |u: Value| seen.push(u.to_string()),
        );
        assert_eq!(
            seen,
            [r#"{"k":[1,2],"update_id":1}"#],
            "the same tree as serde_json's"
        );
    }

    #[test]
    fn anything_but_a_successful_array_is_left_to_classify() {
        for body in [
            &br#"{"ok":false,"error_code":409,"description":"Conflict: terminated by other getUpdates request"}"#[..],
            br#"{"ok":false,"error_code":429,"parameters":{"retry_after":3}}"#,
            br#"{"ok":true}"#,
            br#"{"ok":true,"result":{"update_id":1}}"#,
            br#"{"ok":true,"result":[],"ok":true}"#,
            br#"{"ok":true,"result":[],"result":[]}"#,
            br#"{"ok":"true","result":[]}"#,
            br#"{"ok":true,"result":[{"update_id":1}]"#,
            br#"{"ok":true,"result":[]} x"#,
            br#"[1]"#,
            b"",
            b"<html>502</html>",
        ] {
            assert_eq!(ids(body), None, "{}", String::from_utf8_lossy(body));
        }
    }
}
