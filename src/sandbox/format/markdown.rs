//! `parse_mode` MarkdownV2 and the legacy Markdown, with TDLib's error
//! texts (reserved characters, unclosed entities, URLs).

use super::*;

/// MarkdownV2 (`v2`) or the legacy Markdown.
pub(super) fn parse_markdown(text: &str, v2: bool) -> Result<(String, Vec<Entity>), FormatError> {
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
            // Only the innermost open entity can be closed, as in TDLib; the
            // same mark elsewhere opens a new one.
            let closes = stack.iter().rposition(|s| s.0 == m);
            match closes {
                Some(pos) if pos + 1 == stack.len() => {
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
