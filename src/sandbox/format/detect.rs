//! The entities Telegram finds by itself in any text: bot commands,
//! mentions, hashtags, cashtags, URLs and e-mail addresses.

use super::*;

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
                    if k - j > 3 {
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
            if (3..=32).contains(&(j - i - 1)) && (j >= chars.len() || chars[j] != '.') {
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
