//! multipart/form-data framing for uploads that are streamed from disk. The
//! file's bytes never pass through here: this module builds the bytes that
//! go before the file (text fields and the file part's headers) and after it
//! (the closing boundary), and the caller chains preamble, file and trailer
//! into one reader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A boundary unlikely to occur in the file: time, process id and a counter,
/// so two uploads in the same nanosecond still differ. Uniqueness matters
/// more than secrecy here; a collision with file content would only corrupt
/// that one upload.
pub(crate) fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("----botfleet-{:x}-{:x}-{:x}", nanos, std::process::id(), n)
}

/// Makes a field or file name safe inside a quoted header parameter, the
/// way browsers do (WHATWG HTML, multipart/form-data): `"`, CR and LF become
/// `%22`, `%0D`, `%0A`. Other control characters are percent-encoded too, so
/// a name can never break the header line.
pub(crate) fn quote_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' => out.push_str("%22"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("%{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// The bytes before the file: every text field as its own part, then the
/// headers of the file part in `file_field` named `file_name`.
pub(crate) fn preamble(
    boundary: &str,
    fields: &[(&str, &str)],
    file_field: &str,
    file_name: &str,
) -> Vec<u8> {
    let mut out = String::new();
    for (name, value) in fields {
        out.push_str("--");
        out.push_str(boundary);
        out.push_str("\r\nContent-Disposition: form-data; name=\"");
        out.push_str(&quote_safe(name));
        out.push_str("\"\r\n\r\n");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("--");
    out.push_str(boundary);
    out.push_str("\r\nContent-Disposition: form-data; name=\"");
    out.push_str(&quote_safe(file_field));
    out.push_str("\"; filename=\"");
    out.push_str(&quote_safe(file_name));
    out.push_str("\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    out.into_bytes()
}

/// The headers of one more file part, after a file that is already in the
/// body: ends the previous part, then opens this one.
pub(crate) fn next_file(boundary: &str, file_field: &str, file_name: &str) -> Vec<u8> {
    let mut out = b"\r\n".to_vec();
    out.extend(preamble(boundary, &[], file_field, file_name));
    out
}

/// The bytes after the file: the end of its part and the closing boundary.
pub(crate) fn trailer(boundary: &str) -> Vec<u8> {
    format!("\r\n--{boundary}--\r\n").into_bytes()
}

/// The request's Content-Type header value.
pub(crate) fn content_type(boundary: &str) -> String {
    format!("multipart/form-data; boundary={boundary}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_has_fields_then_file_headers() {
        let p = preamble(
            "B",
            &[("chat_id", "42"), ("caption", "hi")],
            "document",
            "a.txt",
        );
        let p = String::from_utf8(p).expect("utf-8");
        assert_eq!(
            p,
            "--B\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n\
             --B\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\nhi\r\n\
             --B\r\nContent-Disposition: form-data; name=\"document\"; filename=\"a.txt\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        assert_eq!(trailer("B"), b"\r\n--B--\r\n");
        assert_eq!(content_type("B"), "multipart/form-data; boundary=B");
    }

    #[test]
    fn file_names_cannot_break_the_header() {
        assert_eq!(quote_safe("a\"b\r\nc\td.txt"), "a%22b%0D%0Ac%09d.txt");
        assert_eq!(quote_safe("отчёт 1.pdf"), "отчёт 1.pdf");
        let p = preamble("B", &[], "document", "x\"\r\nInjected: 1");
        let p = String::from_utf8(p).expect("utf-8");
        assert!(!p.contains("\r\nInjected"), "{p}");
        assert!(p.contains("filename=\"x%22%0D%0AInjected: 1\""), "{p}");
    }

    #[test]
    fn boundaries_differ() {
        let a = boundary();
        let b = boundary();
        assert_ne!(a, b);
        assert!(a.len() <= 70, "RFC 2046 caps boundaries at 70 characters");
    }
}
