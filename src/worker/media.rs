//! Files in and out of a bot's media directory (`MEDIA_TMP_LOCATION/bot-N`):
//! safe names for what users send, saving into `received/` without ever
//! overwriting, and moving sent outbox files into `sent/`. Names are made
//! safe here and nowhere else. It must never write outside the bot's
//! directory, overwrite a file, or delete a file that was not sent.

use serde_json::Value;
use std::io;
use std::path::{Path, PathBuf};

/// The longest file name it produces, in bytes.
pub const MAX_NAME: usize = 120;
/// The Bot API's download limit (getFile): 20 MB.
pub const MAX_DOWNLOAD: u64 = 20 * 1024 * 1024;

/// A file name that is safe to join to a directory: no separators, no
/// `..`, no control characters, not hidden, not empty, at most MAX_NAME bytes
/// (the extension kept).
pub fn sanitize(name: &str) -> String {
    // Only the last path component counts, whatever separator was used.
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = base
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    // Until stable: ". . ." trims to ". ." and would still be hidden.
    loop {
        let next = clean
            .trim()
            .trim_start_matches('.')
            .trim()
            .replace("..", ".");
        if next == clean {
            break;
        }
        clean = next;
    }
    if clean.is_empty() {
        clean = "file".into();
    }
    if clean.len() > MAX_NAME {
        let (stem, ext) = match clean.rfind('.') {
            Some(i) if clean.len() - i <= 16 => (clean[..i].to_string(), clean[i..].to_string()),
            _ => (clean.clone(), String::new()),
        };
        let mut cut = MAX_NAME - ext.len();
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        // A cut that ends in '.' before ".ext" would make "..".
        clean = format!(
            "{}{}",
            stem[..cut].trim_end_matches(|c: char| c == '.' || c.is_whitespace()),
            ext
        );
    }
    clean
}

/// `name`, or `name (1).ext`, `name (2).ext`, ... : the first that does not
/// exist in `dir`.
pub fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    (1..)
        .map(|n| dir.join(format!("{stem} ({n}){ext}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

/// Moves `from` into `dir` under its own name, never overwriting: a hard
/// link that fails if the name is taken, then the old name removed.
pub fn move_no_clobber(from: &Path, dir: &Path) -> io::Result<PathBuf> {
    let name = from.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    place_no_clobber(from, dir, name)
}

/// Moves `from` into `dir` as `name` (or `name (1)`, ...), never
/// overwriting: a hard link that fails if the name is taken, then the old
/// name removed.
pub fn place_no_clobber(from: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    let name = sanitize(name);
    for _ in 0..1000 {
        let to = free_name(dir, &name);
        match std::fs::hard_link(from, &to) {
            Ok(()) => {
                std::fs::remove_file(from)?;
                return Ok(to);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name"))
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub file_id: String,
    pub name: String,
    pub size: Option<u64>,
}

/// The file of a message (the largest photo size), with a safe name.
pub fn attachment(message: &Value, kind: &str) -> Option<Attachment> {
    let v = match kind {
        "photo" => message["photo"].as_array()?.last()?,
        _ => &message[kind],
    };
    let file_id = v["file_id"].as_str()?.to_string();
    let unique = v["file_unique_id"].as_str().unwrap_or(&file_id);
    let fallback_ext = match kind {
        "photo" => "jpg",
        "voice" => "ogg",
        "audio" => "mp3",
        "video" => "mp4",
        _ => "bin",
    };
    let name = match v["file_name"].as_str() {
        Some(n) if !n.trim().is_empty() => sanitize(n),
        _ => sanitize(&format!("{kind}_{unique}.{fallback_ext}")),
    };
    Some(Attachment {
        file_id,
        name,
        size: v["file_size"].as_u64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_never_leave_the_directory() {
        for (raw, want) in [
            ("../../etc/passwd", "passwd"),
            ("..", "file"),
            ("...", "file"),
            ("a/..\\..\\b.txt", "b.txt"),
            ("  .hidden  ", "hidden"),
            ("x\u{0}y\u{7}z\n.pdf", "x_y_z_.pdf"),
            ("", "file"),
            ("a..b", "a.b"),
            ("C:evil", "C_evil"),
        ] {
            assert_eq!(sanitize(raw), want, "{raw:?}");
        }
        let long = format!("{}.pdf", "ж".repeat(200));
        let s = sanitize(&long);
        assert!(s.len() <= MAX_NAME && s.ends_with(".pdf"));
    }

    #[test]
    fn free_names_and_moves_never_overwrite() {
        let dir = std::env::temp_dir().join(format!(
            "botfleet-media-{}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        ));
        let sent = dir.join("sent");
        std::fs::create_dir_all(&sent).expect("dirs");
        std::fs::write(sent.join("a.txt"), "old").expect("write");
        std::fs::write(dir.join("a.txt"), "new").expect("write");
        assert_eq!(free_name(&sent, "a.txt"), sent.join("a (1).txt"));
        let to = move_no_clobber(&dir.join("a.txt"), &sent).expect("move");
        assert_eq!(to, sent.join("a (1).txt"));
        assert_eq!(
            std::fs::read_to_string(sent.join("a.txt")).expect("read"),
            "old"
        );
        assert_eq!(std::fs::read_to_string(&to).expect("read"), "new");
        assert!(!dir.join("a.txt").exists());
    }

    #[test]
    fn attachments_pick_the_largest_photo_and_a_safe_name() {
        let m = json!({"photo": [{"file_id": "s", "file_unique_id": "u1"}, {"file_id": "L", "file_unique_id": "u2", "file_size": 9}]});
        assert_eq!(
            attachment(&m, "photo"),
            Some(Attachment {
                file_id: "L".into(),
                name: "photo_u2.jpg".into(),
                size: Some(9)
            })
        );
        let d = json!({"document": {"file_id": "d", "file_name": "../x.pdf"}});
        assert_eq!(
            attachment(&d, "document").map(|a| a.name),
            Some("x.pdf".into())
        );
        assert_eq!(attachment(&json!({"document": 5}), "document"), None);
    }
}
