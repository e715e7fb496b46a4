//! `parse_mode` HTML: the tags Telegram knows (b, i, u, s, tg-spoiler,
//! span class="tg-spoiler", a href, code, pre, blockquote, tg-emoji) and
//! the character references, with TDLib's error texts.

use super::*;

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

pub(super) fn parse_html(text: &str) -> Result<(String, Vec<Entity>), FormatError> {
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
