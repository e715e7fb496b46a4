//! Message formatting as the Bot API does it: `parse_mode` HTML, MarkdownV2
//! and Markdown turned into plain text plus entities, with TDLib's error
//! texts, and the entities Telegram detects on its own in any text
//! (bot_command, mention, hashtag, cashtag, url, email). Offsets and lengths
//! are UTF-16 code units, as in the Bot API; byte offsets in errors are
//! UTF-8 bytes of the text as sent, as TDLib reports them.
//!
//! Pure functions over strings: no state, no I/O. It must never accept
//! markup Telegram refuses (the sandbox is no kinder than Telegram), and it
//! covers the tags and marks bots use, not every corner of TDLib's parser
//! (custom emoji are parsed but not checked against a sticker set).

mod detect;
mod html;
mod markdown;

pub use detect::{detect, with_detected};
use html::parse_html;
use markdown::parse_markdown;
use serde_json::{json, Value};

/// One entity: type, UTF-16 offset and length, and its extra field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub kind: &'static str,
    pub offset: usize,
    pub length: usize,
    /// `url` of a text_link, `language` of a pre, `custom_emoji_id`.
    pub extra: Option<(&'static str, String)>,
}

impl Entity {
    fn new(kind: &'static str, offset: usize, length: usize) -> Entity {
        Entity {
            kind,
            offset,
            length,
            extra: None,
        }
    }

    /// The Bot API's MessageEntity object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"type": self.kind, "offset": self.offset, "length": self.length});
        match &self.extra {
            // A mention by id carries the user, as the Bot API shows it.
            Some(("user_id", id)) => {
                let id: i64 = id.parse().unwrap_or(0);
                v["user"] = json!({"id": id, "is_bot": false, "first_name": format!("User{id}")});
            }
            Some((k, x)) => v[*k] = json!(x),
            None => {}
        }
        v
    }
}

/// Why a text could not be formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// parse_mode is not HTML, MarkdownV2, Markdown (any case) or empty.
    UnsupportedMode,
    /// The markup is broken; TDLib's message.
    Parse(String),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::UnsupportedMode => write!(f, "Bad Request: unsupported parse_mode"),
            FormatError::Parse(m) => write!(f, "Bad Request: can't parse entities: {m}"),
        }
    }
}

/// The text's length in UTF-16 code units (how Telegram counts).
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Parses `text` by `mode` (case-insensitive; "" or "none" for none).
pub fn parse(text: &str, mode: &str) -> Result<(String, Vec<Entity>), FormatError> {
    let mode = mode.to_ascii_lowercase();
    let (plain, mut entities) = match mode.as_str() {
        "" | "none" => (text.to_string(), vec![]),
        "html" => parse_html(text)?,
        "markdownv2" => parse_markdown(text, true)?,
        "markdown" => parse_markdown(text, false)?,
        _ => return Err(FormatError::UnsupportedMode),
    };
    entities.retain(|e| e.length > 0);
    sort(&mut entities);
    Ok((plain, entities))
}

fn sort(entities: &mut [Entity]) {
    entities.sort_by(|a, b| a.offset.cmp(&b.offset).then(b.length.cmp(&a.length)));
}

/// Builds the plain text and tracks its UTF-16 length as it grows.
struct Out {
    text: String,
    units: usize,
}

impl Out {
    fn push(&mut self, c: char) {
        self.text.push(c);
        self.units += c.len_utf16();
    }
    fn push_str(&mut self, s: &str) {
        self.text.push_str(s);
        self.units += utf16_len(s);
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError::Parse(m.into()))
}

/// A link target as TDLib normalizes it: a scheme-less URL gets http://,
/// a bare host gets a trailing slash; None when it is no URL at all.
fn normalize_url(url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() {
        return None;
    }
    if url.starts_with("tg://") {
        return Some(url.to_string());
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), url),
    };
    if !matches!(scheme.as_str(), "http" | "https" | "ftp" | "tonsite") {
        return None;
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    if host.is_empty() || (!host.contains('.') && host != "localhost") {
        return None;
    }
    let tail = &rest[host_end..];
    let tail = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Some(format!("{scheme}://{host}{tail}"))
}

/// Entities as the Bot API's JSON array.
pub fn entities_json(entities: &[Entity]) -> Value {
    Value::Array(entities.iter().map(Entity::to_json).collect())
}

/// Entities a client sent itself (`entities` / `caption_entities`), checked
/// as Telegram checks them. Err carries the description.
pub fn explicit_entities(value: &Value, text: &str) -> Result<Vec<Value>, String> {
    let Some(list) = value.as_array() else {
        return Err("Bad Request: can't parse entities JSON object".into());
    };
    let len = utf16_len(text);
    let mut out = vec![];
    for e in list {
        let (Some(kind), Some(offset), Some(length)) = (
            e["type"].as_str(),
            e["offset"].as_u64(),
            e["length"].as_u64(),
        ) else {
            return Err(
                "Bad Request: can't parse MessageEntity: Field \"type\" must be of type String"
                    .into(),
            );
        };
        if length == 0 || (offset + length) as usize > len {
            continue;
        }
        if kind == "text_link" && e["url"].as_str().and_then(normalize_url).is_none() {
            return Err("Bad Request: can't parse entities: wrong HTTP URL".into());
        }
        out.push(e.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(text: &str, mode: &str) -> (String, Vec<(&'static str, usize, usize)>) {
        let (t, e) = parse(text, mode).expect("parses");
        (t, e.iter().map(|e| (e.kind, e.offset, e.length)).collect())
    }

    fn error(text: &str, mode: &str) -> String {
        match parse(text, mode) {
            Err(FormatError::Parse(m)) => m,
            other => panic!("expected a parse error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn html_tags_become_entities_with_utf16_offsets() {
        assert_eq!(
            ents("➡️ ➡️<i>➡️ ➡️</i>", "HTML"),
            ("➡️ ➡️➡️ ➡️".into(), vec![("italic", 5, 5)])
        );
        assert_eq!(
            ents("🏟 🏟<i>🏟 &lt🏟</i>", "html"),
            ("🏟 🏟🏟 <🏟".into(), vec![("italic", 5, 6)])
        );
        assert_eq!(
            ents(
                "<b>a</b><span class=\"tg-spoiler\">b</span><s>c</s><u>d</u>",
                "HTML"
            )
            .1,
            vec![
                ("bold", 0, 1),
                ("spoiler", 1, 1),
                ("strikethrough", 2, 1),
                ("underline", 3, 1)
            ]
        );
        let (_, e) = parse("<a href=\"telegram.org\">x</a>", "HTML").expect("parses");
        assert_eq!(
            e[0].extra,
            Some(("url", "http://telegram.org/".to_string()))
        );
        let (_, e) =
            parse("<pre><code class=\"language-rust\">fn</code></pre>", "HTML").expect("parses");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].extra, Some(("language", "rust".to_string())));
        assert_eq!(ents("a &amp; b &quot;&#65;", "HTML").0, "a & b \"A");
    }

    #[test]
    fn html_errors_are_tdlibs() {
        assert_eq!(
            error("🏟 🏟&lt;<abac>", "HTML"),
            "Unsupported start tag \"abac\" at byte offset 13"
        );
        assert_eq!(
            error("🏟 🏟&lt;<abacaba", "HTML"),
            "Unclosed start tag at byte offset 13"
        );
        assert_eq!(
            error("<b>bold", "HTML"),
            "Can't find end tag corresponding to start tag \"b\""
        );
        assert_eq!(
            error("🏟 🏟&lt;<i>a</em   >", "HTML"),
            "Unmatched end tag at byte offset 17, expected \"</i>\", found \"</em>\""
        );
        assert_eq!(
            error("🏟 🏟&lt;<b></b></", "HTML"),
            "Unexpected end tag at byte offset 20"
        );
        assert_eq!(parse("x", "markdownv3"), Err(FormatError::UnsupportedMode));
    }

    #[test]
    fn markdown_v2_marks_and_errors() {
        assert_eq!(
            ents("*bold* _it_ __u__ ~s~ ||sp|| `c`", "MarkdownV2").1,
            vec![
                ("bold", 0, 4),
                ("italic", 5, 2),
                ("underline", 8, 1),
                ("strikethrough", 10, 1),
                ("spoiler", 12, 2),
                ("code", 15, 1)
            ]
        );
        assert_eq!(
            ents("🏟 🏟_abac \\* asd _", "MarkdownV2"),
            ("🏟 🏟abac * asd ".into(), vec![("italic", 5, 11)])
        );
        assert_eq!(
            error("Version 1.0", "MarkdownV2"),
            "Character '.' is reserved and must be escaped with the preceding '\\'"
        );
        assert_eq!(
            error("🏟 🏟_abacaba", "MarkdownV2"),
            "Can't find end of Italic entity at byte offset 9"
        );
        assert_eq!(
            error("🏟 🏟`", "MarkdownV2"),
            "Can't find end of Code entity at byte offset 9"
        );
        assert_eq!(
            error("🏟 🏟```", "MarkdownV2"),
            "Can't find end of Pre entity at byte offset 9"
        );
        let (t, e) =
            parse("[site](https://example.com) ```py\nx = 1```", "MarkdownV2").expect("parses");
        assert_eq!(t, "site x = 1");
        assert_eq!(
            e[0].extra,
            Some(("url", "https://example.com/".to_string()))
        );
        assert_eq!(
            (e[1].kind, e[1].extra.clone()),
            ("pre", Some(("language", "py".into())))
        );
        assert_eq!(
            ents(">quoted\nplain", "MarkdownV2").1,
            vec![("blockquote", 0, 6)]
        );
    }

    #[test]
    fn legacy_markdown() {
        assert_eq!(
            ents("*b* _i_ `c` [l](http://x.org)", "Markdown").1,
            vec![
                ("bold", 0, 1),
                ("italic", 2, 1),
                ("code", 4, 1),
                ("text_link", 6, 1)
            ]
        );
        assert_eq!(ents("1.0 - ok!", "Markdown").0, "1.0 - ok!");
        assert_eq!(
            error("a *bold", "Markdown"),
            "Can't find end of the entity starting at byte offset 2"
        );
    }

    #[test]
    fn detects_commands_mentions_tags_and_links() {
        let found: Vec<_> =
            detect("/start@demo_bot hi @someone #tag $USD https://a.io/x, mail me@x.org /2")
                .into_iter()
                .map(|e| (e.kind, e.offset, e.length))
                .collect();
        assert_eq!(
            found,
            vec![
                ("bot_command", 0, 15),
                ("mention", 19, 8),
                ("hashtag", 28, 4),
                ("cashtag", 33, 4),
                ("url", 38, 14),
                ("email", 59, 8),
                ("bot_command", 68, 2),
            ]
        );
        assert!(detect("a/b 1.5 @ab x@abcde").is_empty());
        // Detected entities never overlap code.
        let (t, e) = parse("`/start` /help", "MarkdownV2").expect("parses");
        let all = with_detected(&t, e);
        assert_eq!(
            all.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec!["code", "bot_command"]
        );
    }

    #[test]
    fn a_link_to_a_user_is_a_text_mention() {
        let (_, e) = parse("<a href=\"tg://user?id=42\">Ann</a>", "HTML").expect("parses");
        assert_eq!(
            e[0].to_json(),
            json!({"type": "text_mention", "offset": 0, "length": 3,
                   "user": {"id": 42, "is_bot": false, "first_name": "User42"}})
        );
    }

    #[test]
    fn lengths_count_utf16_units() {
        assert_eq!(utf16_len("a🏟"), 3);
    }
}
