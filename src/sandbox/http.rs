//! Request parameters the way the Bot API reads them: from the query string,
//! an `x-www-form-urlencoded`, JSON or `multipart/form-data` body. Pure
//! functions over bytes, so they are unit-tested without a socket.

use serde_json::Value;
use std::collections::HashMap;

/// A file part of a multipart body.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePart {
    /// The `filename` of the part (`file` when the client gave none).
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// Every parameter of one call. Text values are JSON strings; a JSON body
/// keeps its own types.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    pub fields: HashMap<String, Value>,
    pub files: HashMap<String, FilePart>,
}

/// Why a body could not be read as parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// A JSON body that is not a JSON object.
    Json,
    /// A multipart body without a boundary or with a broken part.
    Multipart,
}

impl Params {
    /// A field as text: strings as they are, numbers and booleans printed.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.fields.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => Some(other.to_string()),
        }
    }

    /// A field as an integer: a JSON number or a string of digits.
    /// `Some(Err(()))` when present but not an integer.
    pub fn int(&self, name: &str) -> Option<Result<i64, ()>> {
        match self.fields.get(name)? {
            Value::Null => None,
            Value::Number(n) => Some(
                n.as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                    .ok_or(()),
            ),
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.trim().parse::<i64>().map_err(|_| ())),
            _ => Some(Err(())),
        }
    }

    /// A field that carries JSON: an object or array as it is, or a string
    /// holding serialized JSON (how form and multipart bodies send it).
    pub fn json(&self, name: &str) -> Option<Value> {
        match self.fields.get(name)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            Value::Null => None,
            other => Some(other.clone()),
        }
    }

    fn merge_pairs(&mut self, text: &str) {
        for (k, v) in parse_urlencoded(text) {
            self.fields.insert(k, Value::String(v));
        }
    }
}

/// Decodes `%XX` escapes and `+` as a space; invalid escapes are kept as
/// they are, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=x+y` into decoded pairs, in order.
pub fn parse_urlencoded(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Builds the parameters of one call from its query string and body.
/// Body fields win over query fields of the same name.
pub fn parse_params(query: &str, content_type: &str, body: &[u8]) -> Result<Params, ParseError> {
    let mut params = Params::default();
    params.merge_pairs(query);
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(params);
    }
    match mime.as_str() {
        "application/json" => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => params.fields.extend(map),
            _ => return Err(ParseError::Json),
        },
        "multipart/form-data" => {
            let boundary = multipart_boundary(content_type).ok_or(ParseError::Multipart)?;
            parse_multipart(&boundary, body, &mut params)?;
        }
        _ => params.merge_pairs(&String::from_utf8_lossy(body)),
    }
    Ok(params)
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("boundary") {
            Some(v.trim().trim_matches('"').to_string())
        } else {
            None
        }
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// A value of `name="..."` in a Content-Disposition header.
fn disposition_value(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case(key) {
            Some(v.trim().trim_matches('"').to_string())
        } else {
            None
        }
    })
}

fn parse_multipart(boundary: &str, body: &[u8], params: &mut Params) -> Result<(), ParseError> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut pos = find(body, &delimiter, 0).ok_or(ParseError::Multipart)? + delimiter.len();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(());
        }
        // Skip the line break after the delimiter.
        if body[pos..].starts_with(b"\r\n") {
            pos += 2;
        } else if body[pos..].starts_with(b"\n") {
            pos += 1;
        }
        let head_end = find(body, b"\r\n\r\n", pos).ok_or(ParseError::Multipart)?;
        let head = String::from_utf8_lossy(&body[pos..head_end]).into_owned();
        let content_start = head_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let content_end = find(body, &closing, content_start).ok_or(ParseError::Multipart)?;
        let content = &body[content_start..content_end];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .ok_or(ParseError::Multipart)?;
        let name = disposition_value(disposition, "name").ok_or(ParseError::Multipart)?;
        match disposition_value(disposition, "filename") {
            Some(file_name) => {
                let file_name = if file_name.is_empty() {
                    "file".to_string()
                } else {
                    file_name
                };
                params.files.insert(
                    name,
                    FilePart {
                        file_name,
                        bytes: content.to_vec(),
                    },
                );
            }
            None => {
                params.fields.insert(
                    name,
                    Value::String(String::from_utf8_lossy(content).into_owned()),
                );
            }
        }
        pos = content_end + closing.len();
        if pos > body.len() {
            return Err(ParseError::Multipart);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_plus_escapes_and_junk() {
        assert_eq!(percent_decode("a+b%20c%2Bd"), "a b c+d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%D0%BF%D1%80"), "пр");
    }

    #[test]
    fn query_and_form_merge_with_body_winning() {
        let p = parse_params(
            "offset=5&timeout=1",
            "application/x-www-form-urlencoded",
            b"offset=7&text=hi+there",
        )
        .unwrap();
        assert_eq!(p.int("offset"), Some(Ok(7)));
        assert_eq!(p.int("timeout"), Some(Ok(1)));
        assert_eq!(p.text("text").as_deref(), Some("hi there"));
    }

    #[test]
    fn json_numbers_and_strings_both_read_as_integers() {
        let p = parse_params("", "application/json", br#"{"a":12,"b":"-34","c":"x"}"#).unwrap();
        assert_eq!(p.int("a"), Some(Ok(12)));
        assert_eq!(p.int("b"), Some(Ok(-34)));
        assert_eq!(p.int("c"), Some(Err(())));
        assert_eq!(p.int("d"), None);
        assert_eq!(
            parse_params("", "application/json", b"[1]"),
            Err(ParseError::Json)
        );
    }

    #[test]
    fn multipart_keeps_file_bytes_and_text_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n--XyZ\r\nContent-Disposition: form-data; name=\"document\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\r\n\x02\r\n--XyZ--\r\n";
        let p = parse_params("", "multipart/form-data; boundary=\"XyZ\"", body).unwrap();
        assert_eq!(p.int("chat_id"), Some(Ok(42)));
        let f = &p.files["document"];
        assert_eq!(f.file_name, "a.bin");
        assert_eq!(f.bytes, b"\x00\x01\r\n\x02");
        assert_eq!(
            parse_params("", "multipart/form-data", body),
            Err(ParseError::Multipart)
        );
    }
}
