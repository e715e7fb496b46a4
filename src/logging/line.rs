//! One log line as data, and its two renderings: text (`ts LEVEL [Parent]
//! msg`, coloured on a terminal) and JSON (one object a line with `ts`,
//! `level`, `source`, `bot_id`, `chat_id`/`update_id` where the line is
//! about one, `msg`). The JSON form is also the wire form a worker writes
//! on its stderr for the supervisor to render. The chat and update a line
//! is about are read from its text by one convention: `chat N` / `chat=N`
//! and `update N` / `update=N`. Pure: no I/O, no clock of its own.

use serde_json::Value;

/// One line, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// `2026-11-22T11:05:00.123Z`.
    pub ts: String,
    pub level: log::Level,
    /// `None` for the supervisor, `Some(index)` for worker `bot-N`.
    pub worker: Option<u32>,
    pub bot_id: Option<u64>,
    pub chat_id: Option<i64>,
    pub update_id: Option<i64>,
    pub msg: String,
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARN",
        log::Level::Info => "INFO",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

fn parse_level(s: &str) -> Option<log::Level> {
    match s {
        "ERROR" => Some(log::Level::Error),
        "WARN" => Some(log::Level::Warn),
        "INFO" => Some(log::Level::Info),
        "DEBUG" => Some(log::Level::Debug),
        "TRACE" => Some(log::Level::Trace),
        _ => None,
    }
}

impl Line {
    /// A line with the chat and update read from `msg`.
    pub fn new(ts: String, level: log::Level, worker: Option<u32>, msg: String) -> Line {
        Line {
            ts,
            level,
            worker,
            bot_id: None,
            chat_id: id_after(&msg, "chat"),
            update_id: id_after(&msg, "update"),
            msg,
        }
    }

    /// `parent` or `bot-N`.
    pub fn source(&self) -> String {
        match self.worker {
            None => "parent".to_string(),
            // A worker started by hand without BOT_INDEX.
            Some(u32::MAX) => "bot-?".to_string(),
            Some(i) => format!("bot-{i}"),
        }
    }

    /// `2026-... WARN  [Worker bot-0] msg\n`; `colour` wraps WARN and ERROR
    /// in ANSI colours.
    pub fn text(&self, timestamps: bool, colour: bool) -> String {
        let mut out = String::with_capacity(self.msg.len() + 48);
        if timestamps {
            out.push_str(&self.ts);
            out.push(' ');
        }
        let level = format!("{:<5}", level_name(self.level));
        match (colour, self.level) {
            (true, log::Level::Error) => out.push_str(&format!("\x1b[31m{level}\x1b[0m")),
            (true, log::Level::Warn) => out.push_str(&format!("\x1b[33m{level}\x1b[0m")),
            _ => out.push_str(&level),
        }
        match self.worker {
            None => out.push_str(" [Parent] "),
            Some(_) => out.push_str(&format!(" [Worker {}] ", self.source())),
        }
        out.push_str(&self.msg);
        out.push('\n');
        out
    }

    /// One JSON object and a newline.
    pub fn json(&self) -> String {
        let s = |v: &str| Value::String(v.to_string()).to_string();
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let mut out = format!(
            "{{\"ts\":{},\"level\":{},\"source\":{},\"bot_id\":{}",
            s(&self.ts),
            s(level_name(self.level)),
            s(&self.source()),
            opt(self.bot_id.map(|b| b.to_string())),
        );
        if let Some(c) = self.chat_id {
            out.push_str(&format!(",\"chat_id\":{c}"));
        }
        if let Some(u) = self.update_id {
            out.push_str(&format!(",\"update_id\":{u}"));
        }
        out.push_str(&format!(",\"msg\":{}}}\n", s(&self.msg)));
        out
    }

    /// Reads a line a worker wrote in the wire (JSON) form; `None` for
    /// anything else (a panic message, a stray print).
    pub fn from_wire(text: &str) -> Option<Line> {
        let v: Value = serde_json::from_str(text.trim()).ok()?;
        Some(Line {
            ts: v["ts"].as_str()?.to_string(),
            level: parse_level(v["level"].as_str()?)?,
            worker: None,
            bot_id: v["bot_id"].as_u64(),
            chat_id: v["chat_id"].as_i64(),
            update_id: v["update_id"].as_i64(),
            msg: v["msg"].as_str()?.to_string(),
        })
    }

    /// Replaces every secret in every text field with `***`.
    pub fn scrub(&mut self, secrets: &[String]) {
        for s in secrets {
            for field in [&mut self.msg, &mut self.ts] {
                if field.contains(s.as_str()) {
                    *field = field.replace(s.as_str(), "***");
                }
            }
        }
    }
}

/// The integer after `word` (`chat 42`, `chat=-100`), where `word` stands
/// alone (not `chats 3`, not `mychat 3`).
pub fn id_after(msg: &str, word: &str) -> Option<i64> {
    for (at, _) in msg.match_indices(word) {
        let before = msg[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &msg[at + word.len()..];
        let Some(rest) = rest.strip_prefix([' ', '=']) else {
            continue;
        };
        let digits_from = usize::from(rest.starts_with('-'));
        let len = rest[digits_from..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - digits_from);
        if len == 0 {
            continue;
        }
        let end = digits_from + len;
        if rest[end..].starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Ok(n) = rest[..end].parse() {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chat_and_update_ids() {
        assert_eq!(
            id_after("handler for update 5 in chat -42: x", "chat"),
            Some(-42)
        );
        assert_eq!(
            id_after("handler for update 5 in chat -42: x", "update"),
            Some(5)
        );
        assert_eq!(id_after("chat=7 update=9 sent", "update"), Some(9));
        assert_eq!(id_after("an update without update_id", "update"), None);
        assert_eq!(id_after("2 chats 3", "chat"), None);
        assert_eq!(id_after("mychat 3", "chat"), None);
        assert_eq!(id_after("chat 3x", "chat"), None);
        assert_eq!(id_after("handler (chat 8) stderr", "chat"), Some(8));
    }

    #[test]
    fn renders_and_reads_back_json() {
        let mut l = Line::new(
            "2026-01-01T00:00:00.000Z".into(),
            log::Level::Warn,
            Some(3),
            "handler for update 1 in chat 2: \"quoted\" 123:SECRET".into(),
        );
        l.bot_id = Some(123);
        l.scrub(&["SECRET".to_string()]);
        let j = l.json();
        assert!(j.ends_with('\n') && !j.trim_end().contains('\n'));
        let v: Value = serde_json::from_str(&j).expect("valid JSON");
        assert_eq!(v["source"], "bot-3");
        assert_eq!(v["bot_id"], 123);
        assert_eq!(v["chat_id"], 2);
        assert_eq!(v["update_id"], 1);
        assert_eq!(v["level"], "WARN");
        assert!(!j.contains("SECRET"));
        let back = Line::from_wire(&j).expect("wire form");
        assert_eq!(back.msg, l.msg);
        assert_eq!(back.level, log::Level::Warn);
        assert_eq!(Line::from_wire("thread 'main' panicked"), None);
    }

    #[test]
    fn text_colours_only_warn_and_error() {
        let l = Line::new("T".into(), log::Level::Error, None, "boom".into());
        assert_eq!(l.text(true, false), "T ERROR [Parent] boom\n");
        assert_eq!(l.text(false, true), "\x1b[31mERROR\x1b[0m [Parent] boom\n");
        let i = Line::new("T".into(), log::Level::Info, Some(1), "hi".into());
        assert_eq!(i.text(false, true), "INFO  [Worker bot-1] hi\n");
    }
}
