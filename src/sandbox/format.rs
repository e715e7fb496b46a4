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
        if let Some((k, x)) = &self.extra {
            v[*k] = json!(x);
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

// ---------------------------------------------------------------- HTML

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        _ => {
            let n = if let Some(hex) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok()?
            } else {
                name.strip_prefix('#')?.parse::<u32>().ok()?
            };
            char::from_u32(n)
        }
    }
}

/// Reads `&...;` at `i` (the `;` optional for the named four, as TDLib);
/// returns the char and the bytes used, or None to keep the `&` as is.
fn html_char_ref(text: &str, i: usize) -> Option<(char, usize)> {
    let rest = &text[i + 1..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    let c = decode_entity(name)?;
    let used = 1 + end + usize::from(rest[end..].starts_with(';'));
    Some((c, used))
}

struct OpenTag {
    name: String,
    offset: usize,
    attr: Option<String>,
}

fn parse_html(text: &str) -> Result<(String, Vec<Entity>), FormatError> {
    let mut out = Out {
        text: String::new(),
        units: 0,
    };
    let mut stack: Vec<OpenTag> = vec![];
    let mut entities = vec![];
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let c = text[i..].chars().next().unwrap_or('\0');
        if c == '&' {
            match html_char_ref(text, i) {
                Some((ch, used)) => {
                    out.push(ch);
                    i += used;
                }
                None => {
                    out.push('&');
                    i += 1;
                }
            }
            continue;
        }
        if c != '<' {
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let begin = i;
        i += 1;
        if bytes.get(i) == Some(&b'/') {
            // An end tag.
            i += 1;
            let name_start = i;
            while i < text.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                i += 1;
            }
            let name = text[name_start..i].to_ascii_lowercase();
            while i < text.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= text.len() || bytes[i] != b'>' {
                if stack.is_empty() || i >= text.len() && name.is_empty() {
                    return err(format!("Unexpected end tag at byte offset {begin}"));
                }
                return err(format!("Unclosed end tag at byte offset {begin}"));
            }
            i += 1;
            let Some(open) = stack.pop() else {
                return err(format!("Unexpected end tag at byte offset {begin}"));
            };
            if !name.is_empty() && name != open.name {
                return err(format!(
                    "Unmatched end tag at byte offset {begin}, expected \"</{}>\", found \"</{name}>\"",
                    open.name
                ));
            }
            close_html_tag(open, &out, &mut entities);
            continue;
        }
        let name_start = i;
        while i < text.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-') {
            i += 1;
        }
        if i >= text.len() {
            return err(format!("Unclosed start tag at byte offset {begin}"));
        }
        let name = text[name_start..i].to_ascii_lowercase();
        const TAGS: [&str; 18] = [
            "a",
            "b",
            "strong",
            "i",
            "em",
            "s",
            "strike",
            "del",
            "u",
            "ins",
            "tg-spoiler",
            "tg-emoji",
            "span",
            "pre",
            "code",
            "blockquote",
            "br",
            "tg-time",
        ];
        if !TAGS.contains(&name.as_str()) || name == "br" {
            return err(format!(
                "Unsupported start tag \"{name}\" at byte offset {begin}"
            ));
        }
        let mut attr = None;
        loop {
            while i < text.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= text.len() {
                return err(format!("Unclosed start tag at byte offset {begin}"));
            }
            if bytes[i] == b'>' {
                i += 1;
                break;
            }
            let attr_start = i;
            while i < text.len()
                && !bytes[i].is_ascii_whitespace()
                && bytes[i] != b'='
                && bytes[i] != b'>'
            {
                i += 1;
            }
            let attr_name = text[attr_start..i].to_ascii_lowercase();
            if attr_name.is_empty() {
                return err(format!(
                    "Empty attribute name in the tag \"{name}\" at byte offset {begin}"
                ));
            }
            while i < text.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= text.len() {
                return err(format!(
                    "Unclosed start tag \"{name}\" at byte offset {begin}"
                ));
            }
            if bytes[i] != b'=' {
                // An attribute without a value (e.g. `expandable`).
                if name == "blockquote" && attr_name == "expandable" {
                    attr = Some("expandable".to_string());
                }
                continue;
            }
            i += 1;
            while i < text.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= text.len() {
                return err(format!(
                    "Unclosed start tag \"{name}\" at byte offset {begin}"
                ));
            }
            let value = if bytes[i] == b'"' || bytes[i] == b'\'' {
                let quote = bytes[i] as char;
                let Some(end) = text[i + 1..].find(quote) else {
                    return err(format!("Unclosed start tag at byte offset {begin}"));
                };
                let raw = &text[i + 1..i + 1 + end];
                i += end + 2;
                decode_attr(raw)
            } else {
                let v_start = i;
                while i < text.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                    i += 1;
                }
                if i >= text.len() {
                    return err(format!("Unexpected end of name token at byte offset {i}"));
                }
                decode_attr(&text[v_start..i])
            };
            let keep = matches!(
                (name.as_str(), attr_name.as_str()),
                ("a", "href") | ("span", "class") | ("code", "class") | ("tg-emoji", "emoji-id")
            ) || (name == "blockquote" && attr_name == "expandable");
            if keep {
                attr = Some(value);
            }
        }
        if name == "span" && attr.as_deref() != Some("tg-spoiler") {
            return err(format!(
                "Tag \"span\" must have class \"tg-spoiler\" at byte offset {begin}"
            ));
        }
        stack.push(OpenTag {
            name,
            offset: out.units,
            attr,
        });
    }
    if let Some(open) = stack.last() {
        return err(format!(
            "Can't find end tag corresponding to start tag \"{}\"",
            open.name
        ));
    }
    // A <pre> whose whole content is a <code class="language-x"> is one
    // pre entity with that language; a language on a lone code is dropped.
    let mut result = entities.clone();
    result.retain(|e| !(e.kind == "code" && e.extra.is_some()));
    for code in entities
        .iter()
        .filter(|e| e.kind == "code" && e.extra.is_some())
    {
        match result
            .iter_mut()
            .find(|p| p.kind == "pre" && p.offset == code.offset && p.length == code.length)
        {
            Some(pre) => pre.extra = code.extra.clone(),
            None => result.push(Entity::new("code", code.offset, code.length)),
        }
    }
    Ok((out.text, result))
}

fn decode_attr(raw: &str) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i..].chars().next().unwrap_or('\0');
        if c == '&' {
            if let Some((ch, used)) = html_char_ref(raw, i) {
                s.push(ch);
                i += used;
                continue;
            }
        }
        s.push(c);
        i += c.len_utf8();
    }
    s
}

fn close_html_tag(open: OpenTag, out: &Out, entities: &mut Vec<Entity>) {
    let length = out.units - open.offset;
    let start = open.offset;
    let kind: &'static str = match open.name.as_str() {
        "b" | "strong" => "bold",
        "i" | "em" => "italic",
        "u" | "ins" => "underline",
        "s" | "strike" | "del" => "strikethrough",
        "tg-spoiler" | "span" => "spoiler",
        "pre" => "pre",
        "blockquote" if open.attr.is_some() => "expandable_blockquote",
        "blockquote" => "blockquote",
        "tg-emoji" => {
            let mut e = Entity::new("custom_emoji", start, length);
            e.extra = open.attr.map(|id| ("custom_emoji_id", id));
            entities.push(e);
            return;
        }
        "code" => {
            let mut e = Entity::new("code", start, length);
            e.extra = open
                .attr
                .and_then(|c| c.strip_prefix("language-").map(str::to_string))
                .filter(|l| !l.is_empty())
                .map(|l| ("language", l));
            entities.push(e);
            return;
        }
        "a" => {
            let inner: String = {
                // The link's own text, used as the URL when href is missing.
                let units: Vec<u16> = out.text.encode_utf16().collect();
                String::from_utf16_lossy(&units[start..])
            };
            let url = match open.attr {
                Some(href) => normalize_url(&href),
                None => normalize_url(&inner).filter(|u| !inner.contains(' ') && !u.is_empty()),
            };
            if let Some(url) = url {
                let mut e = Entity::new("text_link", start, length);
                if let Some(id) = url.strip_prefix("tg://user?id=") {
                    e = Entity::new("text_mention", start, length);
                    e.extra = Some(("user_id", id.to_string()));
                } else {
                    e.extra = Some(("url", url));
                }
                entities.push(e);
            }
            return;
        }
        _ => return,
    };
    entities.push(Entity::new(kind, start, length));
}

// ---------------------------------------------------------------- Markdown

/// MarkdownV2 (`v2`) or the legacy Markdown.
fn parse_markdown(text: &str, v2: bool) -> Result<(String, Vec<Entity>), FormatError> {
    let mut out = Out {
        text: String::new(),
        units: 0,
    };
    let mut entities = vec![];
    // Open marks: (mark, entity name, UTF-16 start, byte offset).
    let mut stack: Vec<(&'static str, &'static str, usize, usize)> = vec![];
    let mut quote_start: Option<usize> = None;
    let bytes = text.as_bytes();
    let mut i = 0;
    let at_line_start = |i: usize| i == 0 || bytes[i - 1] == b'\n';
    while i < text.len() {
        let c = text[i..].chars().next().unwrap_or('\0');
        if v2 && at_line_start(i) {
            if c == '>' {
                if quote_start.is_none() {
                    quote_start = Some(out.units);
                }
                i += 1;
                continue;
            } else if let Some(start) = quote_start.take() {
                // The quote ended with the line before (without its '\n').
                let end = out.units.saturating_sub(1);
                entities.push(Entity::new("blockquote", start, end.saturating_sub(start)));
            }
        }
        if c == '\\' && (v2 || text[i + 1..].starts_with(['_', '*', '`', '['])) {
            if let Some(next) = text[i + 1..].chars().next() {
                if v2 && next as u32 > 126 {
                    // Only ASCII characters can be escaped.
                    out.push('\\');
                    i += 1;
                    continue;
                }
                out.push(next);
                i += 1 + next.len_utf8();
                continue;
            }
            if v2 {
                return err(
                    "Character '\\' is reserved and must be escaped with the preceding '\\'",
                );
            }
        }
        let in_code = stack.last().is_some_and(|s| s.0 == "`" || s.0 == "```");
        if c == '`' {
            if text[i..].starts_with("```") && !in_code {
                // A pre block: ```lang\n...```
                let begin = i;
                let body_start = i + 3;
                let Some(end_rel) = find_unescaped(&text[body_start..], "```", v2) else {
                    let has_lang_line = text[body_start..].contains(['\n', ' ']);
                    let kind = if v2 && has_lang_line && !text[body_start..].trim().is_empty() {
                        "PreCode"
                    } else {
                        "Pre"
                    };
                    if v2 {
                        return err(format!(
                            "Can't find end of {kind} entity at byte offset {begin}"
                        ));
                    }
                    return err(format!(
                        "Can't find end of the entity starting at byte offset {begin}"
                    ));
                };
                let mut body = &text[body_start..body_start + end_rel];
                let mut language = None;
                if let Some(nl) = body.find('\n') {
                    let first = &body[..nl];
                    if !first.is_empty() && !first.contains(' ') {
                        language = Some(first.to_string());
                        body = &body[nl + 1..];
                    }
                }
                let start = out.units;
                out.push_str(&unescape_code(body, v2));
                let mut e = Entity::new("pre", start, out.units - start);
                e.extra = language.map(|l| ("language", l));
                entities.push(e);
                i = body_start + end_rel + 3;
                continue;
            }
            if in_code {
                let (_, kind, start, _) = stack.pop().unwrap_or(("`", "code", 0, 0));
                entities.push(Entity::new(kind, start, out.units - start));
            } else {
                stack.push(("`", "code", out.units, i));
            }
            i += 1;
            continue;
        }
        if in_code {
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let mark: Option<(&'static str, &'static str)> = if v2 {
            if text[i..].starts_with("__") {
                Some(("__", "underline"))
            } else if text[i..].starts_with("||") {
                Some(("||", "spoiler"))
            } else {
                match c {
                    '*' => Some(("*", "bold")),
                    '_' => Some(("_", "italic")),
                    '~' => Some(("~", "strikethrough")),
                    _ => None,
                }
            }
        } else {
            match c {
                '*' => Some(("*", "bold")),
                '_' => Some(("_", "italic")),
                _ => None,
            }
        };
        if let Some((m, kind)) = mark {
            // `__` closing an italic `_`: TDLib reads it as `_` then `_`.
            let closes = stack.iter().rposition(|s| s.0 == m);
            match closes {
                Some(pos) if v2 || pos + 1 == stack.len() => {
                    let (_, kind, start, _) = stack.remove(pos);
                    entities.push(Entity::new(kind, start, out.units - start));
                }
                _ => {
                    if !v2 && !stack.is_empty() {
                        // Legacy Markdown does not nest: a mark inside an
                        // entity is text.
                        out.push(c);
                        i += 1;
                        continue;
                    }
                    stack.push((m, kind, out.units, i));
                }
            }
            i += m.len();
            continue;
        }
        if c == '[' {
            let begin = i;
            let Some(close) = find_unescaped(&text[i + 1..], "]", v2) else {
                if v2 {
                    return err(format!(
                        "Can't find end of TextUrl entity at byte offset {begin}"
                    ));
                }
                return err(format!(
                    "Can't find end of the entity starting at byte offset {begin}"
                ));
            };
            let inner_raw = &text[i + 1..i + 1 + close];
            let after = i + 1 + close + 1;
            let (url, next) = if text[after..].starts_with('(') {
                let Some(end) = find_unescaped(&text[after + 1..], ")", v2) else {
                    return err(format!("Can't find end of a URL at byte offset {}", after));
                };
                (
                    unescape_code(&text[after + 1..after + 1 + end], v2),
                    after + 1 + end + 1,
                )
            } else {
                (String::new(), after)
            };
            // The link text may hold formatting of its own (v2).
            let (inner_text, inner_entities) = if v2 {
                parse_markdown(inner_raw, true)?
            } else {
                (inner_raw.to_string(), vec![])
            };
            let start = out.units;
            out.push_str(&inner_text);
            for mut e in inner_entities {
                e.offset += start;
                entities.push(e);
            }
            let target = if url.is_empty() {
                inner_text.clone()
            } else {
                url
            };
            if let Some(u) = normalize_url(&target) {
                let mut e = Entity::new("text_link", start, out.units - start);
                if let Some(id) = u.strip_prefix("tg://user?id=") {
                    e = Entity::new("text_mention", start, out.units - start);
                    e.extra = Some(("user_id", id.to_string()));
                } else {
                    e.extra = Some(("url", u));
                }
                entities.push(e);
            }
            i = next;
            continue;
        }
        if v2 && "]()>#+-=|{}.!".contains(c) {
            return err(format!(
                "Character '{c}' is reserved and must be escaped with the preceding '\\'"
            ));
        }
        out.push(c);
        i += c.len_utf8();
    }
    if let Some(start) = quote_start {
        entities.push(Entity::new("blockquote", start, out.units - start));
    }
    if let Some((mark, kind, _, begin)) = stack.last() {
        if v2 {
            let name = match (*mark, *kind) {
                (_, "bold") => "Bold",
                (_, "italic") => "Italic",
                (_, "underline") => "Underline",
                (_, "strikethrough") => "Strikethrough",
                (_, "spoiler") => "Spoiler",
                _ => "Code",
            };
            return err(format!(
                "Can't find end of {name} entity at byte offset {begin}"
            ));
        }
        return err(format!(
            "Can't find end of the entity starting at byte offset {begin}"
        ));
    }
    Ok((out.text, entities))
}

/// The byte index of the first `needle` in `s` not preceded by a backslash
/// escape (in v2, where backslashes escape).
fn find_unescaped(s: &str, needle: &str, v2: bool) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        if v2 && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(needle) {
            return Some(i);
        }
        i += s[i..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

/// Code and URLs keep everything but `\` escapes of `` ` `` and `\` (v2).
fn unescape_code(s: &str, v2: bool) -> String {
    if !v2 {
        return s.to_string();
    }
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if n == '\\' || n == '`' || n == ')' {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------- auto entities

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The entities Telegram finds by itself in plain text: commands, mentions,
/// hashtags, cashtags, URLs and e-mail addresses.
pub fn detect(text: &str) -> Vec<Entity> {
    let chars: Vec<char> = text.chars().collect();
    // UTF-16 offset of each char index.
    let mut at = Vec::with_capacity(chars.len() + 1);
    let mut units = 0;
    for c in &chars {
        at.push(units);
        units += c.len_utf16();
    }
    at.push(units);
    let mut found = vec![];
    let mut i = 0;
    while i < chars.len() {
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        let boundary = prev.is_none_or(|p| !is_word(p) && p != '/' && p != '.' && p != '@');
        let c = chars[i];
        let word_end = |from: usize| {
            let mut j = from;
            while j < chars.len() && is_word(chars[j]) {
                j += 1;
            }
            j
        };
        if boundary && c == '/' {
            let mut j = word_end(i + 1);
            if j > i + 1 && j - i - 1 <= 64 {
                if j < chars.len() && chars[j] == '@' {
                    let k = word_end(j + 1);
                    if k - j - 1 >= 3 {
                        j = k;
                    }
                }
                found.push(Entity::new("bot_command", at[i], at[j] - at[i]));
                i = j;
                continue;
            }
        }
        if boundary && c == '@' {
            let j = word_end(i + 1);
            if (5..=32).contains(&(j - i - 1)) && (j >= chars.len() || chars[j] != '.') {
                found.push(Entity::new("mention", at[i], at[j] - at[i]));
                i = j;
                continue;
            }
        }
        if boundary && c == '#' {
            let j = word_end(i + 1);
            if j > i + 1 && !chars[i + 1..j].iter().all(char::is_ascii_digit) {
                found.push(Entity::new("hashtag", at[i], at[j] - at[i]));
                i = j;
                continue;
            }
        }
        if boundary && c == '$' {
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_ascii_uppercase() {
                j += 1;
            }
            if (3..=8).contains(&(j - i - 1)) && (j >= chars.len() || !is_word(chars[j])) {
                found.push(Entity::new("cashtag", at[i], at[j] - at[i]));
                i = j;
                continue;
            }
        }
        if prev.is_none_or(|p| !is_word(p) && p != '@' && p != '.' && p != '/') && is_word(c) {
            // A URL or an e-mail address: a run without spaces.
            let mut j = i;
            while j < chars.len() && !chars[j].is_whitespace() && !"<>\"«»".contains(chars[j]) {
                j += 1;
            }
            while j > i && ".,;:!?)'".contains(chars[j - 1]) {
                j -= 1;
            }
            let token: String = chars[i..j].iter().collect();
            if let Some(kind) = link_kind(&token) {
                found.push(Entity::new(kind, at[i], at[j] - at[i]));
                i = j;
                continue;
            }
        }
        i += 1;
    }
    found
}

fn link_kind(token: &str) -> Option<&'static str> {
    let lower = token.to_ascii_lowercase();
    if let Some((user, domain)) = lower.split_once('@') {
        let ok_user = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
        return (ok_user && has_tld(domain) && !domain.contains('/')).then_some("email");
    }
    let rest = lower
        .strip_prefix("http://")
        .or(lower.strip_prefix("https://"))
        .map(|r| (r, true))
        .unwrap_or((&lower, false));
    let host = rest.0.split(['/', '?', '#', ':']).next().unwrap_or("");
    let valid = if rest.1 {
        !host.is_empty()
    } else {
        has_tld(host)
    };
    valid.then_some("url")
}

fn has_tld(host: &str) -> bool {
    const TLDS: [&str; 16] = [
        "com", "org", "net", "io", "dev", "me", "app", "ru", "de", "uk", "info", "co", "ai", "tv",
        "xyz", "ly",
    ];
    match host.rsplit_once('.') {
        Some((name, tld)) => {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && TLDS.contains(&tld)
        }
        None => false,
    }
}

/// Parsed entities plus the detected ones that do not overlap a code, pre,
/// link or mention already there, sorted as Telegram sorts them.
pub fn with_detected(text: &str, mut entities: Vec<Entity>) -> Vec<Entity> {
    let blocking = |e: &Entity| {
        matches!(
            e.kind,
            "code" | "pre" | "text_link" | "text_mention" | "url" | "email" | "bot_command"
        )
    };
    let fixed: Vec<(usize, usize)> = entities
        .iter()
        .filter(|e| blocking(e))
        .map(|e| (e.offset, e.offset + e.length))
        .collect();
    for d in detect(text) {
        let overlaps = fixed
            .iter()
            .any(|(s, e)| d.offset < *e && *s < d.offset + d.length);
        if !overlaps {
            entities.push(d);
        }
    }
    sort(&mut entities);
    entities
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
        assert!(detect("a/b 1.5 @abc").is_empty());
        // Detected entities never overlap code.
        let (t, e) = parse("`/start` /help", "MarkdownV2").expect("parses");
        let all = with_detected(&t, e);
        assert_eq!(
            all.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec!["code", "bot_command"]
        );
    }

    #[test]
    fn lengths_count_utf16_units() {
        assert_eq!(utf16_len("a🏟"), 3);
    }
}
