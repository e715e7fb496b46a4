//! The blocking Bot API client. This module is the only code in botfleet that
//! speaks HTTP to the Bot API (Telegram, a local Bot API server, or the
//! sandbox), and the only code that decides what an answer means: every
//! reply, whatever its HTTP status, is read as the Bot API's JSON and
//! classified into one [`ApiError`] variant per thing a caller can do about
//! it.
//!
//! What it must never do:
//! - put the token in an error, a `Debug` output or a log line. The token
//!   is in every request URL, so the URL is built in exactly one function
//!   ([`Client::execute`]), and every text that came back from `ureq` is
//!   scrubbed there; errors are scrubbed once more before they are returned.
//!   Log lines name the method only.
//! - retry on its own. A failed call is returned at once, classified; how
//!   often and how long to retry (backoff, `retry_after`, giving up on a
//!   rejected token) is the caller's policy.
//!
//! Note for whoever sets up logging: `ureq` itself logs full request paths,
//! token included, when its targets are enabled at `trace` level. The
//! process's logger must cap the `ureq` targets at `debug` (at `debug` it
//! prints `/******` instead of the path).

mod coalesce;
mod error;
mod multipart;
mod resolve;
mod sent;
mod updates;

pub use error::ApiError;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use ureq::http;

use crate::token::Token;

/// Replies the client reads into memory (JSON) are capped here: a huge or
/// endless body must not exhaust memory. getUpdates with 100 updates is far
/// below this.
const JSON_REPLY_LIMIT: u64 = 16 * 1024 * 1024;
/// Added to the long-poll timeout to get the agent's global timeout, so a
/// poll that Telegram holds for its full timeout still completes.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Uploads (up to 50 MB) and downloads (up to 20 MB) take longer than a
/// JSON call; they get this global timeout instead.
const FILE_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest snippet of a foreign body kept in an error.
const SNIPPET_CHARS: usize = 100;
/// getUpdates asks for this many updates at most (the Bot API's maximum).
const UPDATES_LIMIT: u64 = 100;

/// What getMe says about the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotInfo {
    pub id: u64,
    pub username: String,
    pub first_name: String,
}

/// What getFile says about a file: where to download it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub file_id: String,
    pub file_path: String,
    pub file_size: Option<u64>,
}

/// A blocking Bot API client for one token. Cheap to clone (the agent and
/// its connection pool are shared); `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base_url: String,
    token: Token,
    base_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("token", &self.token)
            .field("base_timeout", &self.base_timeout)
            .finish()
    }
}

/// Where a request goes; the URL (with the token) is only ever built from
/// this inside [`Client::execute`].
enum Target<'a> {
    /// `{base}/bot{TOKEN}/{method}`
    Method(&'a str),
    /// `{base}/file/bot{TOKEN}/{file_path}`
    File(&'a str),
}

/// A request body.
enum Payload {
    /// No body: a GET.
    Empty,
    /// A JSON object, POSTed as `application/json`.
    Json(Vec<u8>),
    /// A body streamed from a reader with a known length (multipart uploads).
    Stream {
        content_type: String,
        length: u64,
        reader: Box<dyn Read + Send>,
    },
}

impl Client {
    /// `base_url`: TELEGRAM_API_URL (e.g. `https://api.telegram.org` or
    /// `http://127.0.0.1:PORT`); a trailing slash is stripped.
    /// `poll_timeout_secs`: the long-poll timeout; every call's global
    /// timeout is this plus 15 s, connecting is capped at 10 s.
    pub fn new(base_url: &str, token: Token, poll_timeout_secs: u64) -> Client {
        let base_timeout = Duration::from_secs(poll_timeout_secs) + TIMEOUT_MARGIN;
        let config = ureq::Agent::config_builder()
            // 4xx and 5xx bodies carry the Bot API's error_code, description
            // and retry_after; they must be read, not turned into errors.
            .http_status_as_error(false)
            .timeout_global(Some(base_timeout))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            // A redirect would resend the token to wherever it points.
            .max_redirects(0)
            .user_agent(concat!("botfleet/", env!("CARGO_PKG_VERSION")))
            // ureq's 128 KiB default buffers per connection cost a worker a
            // quarter of its heap, and on musl every one of them is an mmap
            // and munmap. Bot API heads are small and bodies are streamed
            // through the buffer. Both are zeroed (touched) whole on a
            // connection's first call, in every worker. Input: 10 KiB, the
            // least ureq makes it for any request with a body; a response
            // head must fit in it. Output: a request is a small head and a
            // JSON body that ureq streams through in chunks, so 4 KiB
            // holds the common one whole.
            .input_buffer_size(10 * 1024)
            .output_buffer_size(4 * 1024)
            .max_response_header_size(8 * 1024)
            // The long poll, the senders and a download or two at once.
            .max_idle_connections_per_host(8)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            coalesce::Coalescing(ureq::unversioned::transport::DefaultConnector::new()),
            resolve::CachingResolver::default(),
        );
        Client {
            agent,
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
            base_timeout,
        }
    }

    /// The bot id (the digits before ':' in the token).
    pub fn bot_id(&self) -> u64 {
        self.token.bot_id()
    }

    /// getMe: who the token belongs to. Also the cheapest way to check a token.
    pub fn get_me(&self) -> Result<BotInfo, ApiError> {
        let method = "getMe";
        let r = self.call(method, &json!({}))?;
        let id = r.get("id").and_then(Value::as_u64);
        let username = r.get("username").and_then(Value::as_str);
        let first_name = r.get("first_name").and_then(Value::as_str).unwrap_or("");
        match (id, username) {
            (Some(id), Some(username)) => Ok(BotInfo {
                id,
                username: username.to_string(),
                first_name: first_name.to_string(),
            }),
            _ => Err(unexpected(method, "result without id or username")),
        }
    }

    /// getUpdates: long-polls for up to `timeout_secs`, asking for at most 100
    /// updates from `offset` (None: omitted; Telegram then starts at the
    /// oldest unconfirmed update). Passing `last update_id + 1` confirms
    /// every update below it. Returns the raw update objects.
    pub fn get_updates(
        &self,
        offset: Option<i64>,
        timeout_secs: u64,
    ) -> Result<Vec<Value>, ApiError> {
        self.get_updates_with(offset, timeout_secs, UPDATES_LIMIT as usize, None)
    }

    /// getUpdates with a `limit` (1..=100) and, when given, an explicit
    /// `allowed_updates` list.
    pub fn get_updates_with(
        &self,
        offset: Option<i64>,
        timeout_secs: u64,
        limit: usize,
        allowed_updates: Option<&[String]>,
    ) -> Result<Vec<Value>, ApiError> {
        self.get_updates_each(offset, timeout_secs, limit, allowed_updates, |u| u)
    }

    /// getUpdates as `get_updates_with`, each update handed to `each` as it
    /// is read (its tree dropped before the next one's is built): what a
    /// worker keeps of a batch is `each`'s, never 100 trees at once.
    pub fn get_updates_each<T>(
        &self,
        offset: Option<i64>,
        timeout_secs: u64,
        limit: usize,
        allowed_updates: Option<&[String]>,
        mut each: impl FnMut(Value) -> T,
    ) -> Result<Vec<T>, ApiError> {
        let method = "getUpdates";
        let limit = limit.clamp(1, UPDATES_LIMIT as usize);
        let mut params = json!({ "timeout": timeout_secs, "limit": limit });
        if let Some(offset) = offset {
            params["offset"] = json!(offset);
        }
        if let Some(allowed) = allowed_updates {
            params["allowed_updates"] = json!(allowed);
        }
        // A caller may poll longer than the timeout the client was made for.
        let timeout = self
            .base_timeout
            .max(Duration::from_secs(timeout_secs) + TIMEOUT_MARGIN);
        let body = serde_json::to_vec(&params).unwrap_or_default();
        let response = self.execute(Target::Method(method), Payload::Json(body), timeout);
        self.read_reply_as(
            method,
            response,
            |status, bytes, retry_after| match updates::each(bytes, &mut each) {
                Some(updates) => Ok(updates),
                None => match classify(method, status, bytes, retry_after)? {
                    Value::Array(updates) => Ok(updates.into_iter().map(each).collect()),
                    _ => Err(unexpected(method, "result is not an array")),
                },
            },
        )
    }

    /// sendMessage: sends `text` to `chat_id`, optionally as a reply.
    /// Returns the new message's id.
    pub fn send_message(
        &self,
        chat_id: i64,
        text: &str,
        reply_to: Option<i64>,
    ) -> Result<i64, ApiError> {
        let method = "sendMessage";
        // The body written directly (the hot path of every echo): the same
        // JSON as a `json!` object, without building one per message. A
        // string always serialises.
        let mut body = Vec::with_capacity(text.len() + 128);
        // Writing to a Vec cannot fail, and a string always serialises.
        let _ = write!(body, "{{\"chat_id\":{chat_id},\"text\":");
        let _ = serde_json::to_writer(&mut body, text);
        if let Some(reply_to) = reply_to {
            // Sent even when the original was deleted meanwhile.
            let _ = write!(
                body,
                ",\"reply_parameters\":{{\"message_id\":{reply_to},\"allow_sending_without_reply\":true}}"
            );
        }
        body.push(b'}');
        let response = self.execute(
            Target::Method(method),
            Payload::Json(body),
            self.base_timeout,
        );
        // The answer is the whole sent message: read for its id alone, no
        // JSON tree (`sent`); anything else is classified as every answer is.
        self.read_reply_as(
            method,
            response,
            |status, bytes, retry_after| match sent::message_id(bytes) {
                Some(id) => Ok(id),
                None => message_id(method, &classify(method, status, bytes, retry_after)?),
            },
        )
    }

    /// sendDocument: uploads the file at `path` as `file_name`, streamed
    /// from disk as multipart/form-data with a Content-Length computed from
    /// the file's size. Returns the new message's id.
    pub fn send_document(
        &self,
        chat_id: i64,
        path: &Path,
        file_name: &str,
        caption: Option<&str>,
    ) -> Result<i64, ApiError> {
        let method = "sendDocument";
        let (file, meta) = open_upload(path)?;
        let file_len = meta.len();

        let boundary = multipart::boundary();
        let chat_id = chat_id.to_string();
        let mut fields = vec![("chat_id", chat_id.as_str())];
        if let Some(caption) = caption {
            fields.push(("caption", caption));
        }
        let preamble = multipart::preamble(&boundary, &fields, "document", file_name);
        let trailer = multipart::trailer(&boundary);
        let length = preamble.len() as u64 + file_len + trailer.len() as u64;
        // `take`: a file that grows while it is sent must not overrun the
        // Content-Length we announced.
        let reader = io::Cursor::new(preamble)
            .chain(file.take(file_len))
            .chain(io::Cursor::new(trailer));
        let payload = Payload::Stream {
            content_type: multipart::content_type(&boundary),
            length,
            reader: Box::new(reader),
        };
        let response = self.execute(Target::Method(method), payload, FILE_TRANSFER_TIMEOUT);
        let r = self.read_reply(method, response)?;
        message_id(method, &r)
    }

    /// getFile: where to download a file that a user sent.
    pub fn get_file(&self, file_id: &str) -> Result<FileInfo, ApiError> {
        let method = "getFile";
        let r = self.call(method, &json!({ "file_id": file_id }))?;
        let file_path = r.get("file_path").and_then(Value::as_str);
        match file_path {
            Some(file_path) => Ok(FileInfo {
                file_id: r
                    .get("file_id")
                    .and_then(Value::as_str)
                    .unwrap_or(file_id)
                    .to_string(),
                file_path: file_path.to_string(),
                file_size: r.get("file_size").and_then(Value::as_u64),
            }),
            None => Err(unexpected(method, "result without file_path")),
        }
    }

    /// Downloads `{base}/file/bot{TOKEN}/{file_path}` to `dest`, streamed
    /// into a unique dot-prefixed temp file beside `dest`, fsynced, then
    /// renamed over `dest`. On any failure the temp file is removed and
    /// `dest` is untouched. With `max_bytes`, a file larger than that fails
    /// (as `BadRequest` with status 413) without writing more than
    /// `max_bytes`. A 404 here means the file is gone (file paths expire),
    /// so it is `BadRequest`, not `TokenRejected`. Returns the
    /// number of bytes written.
    pub fn download_file(
        &self,
        file_path: &str,
        dest: &Path,
        max_bytes: Option<u64>,
    ) -> Result<u64, ApiError> {
        let method = "download";
        let response = self.execute(
            Target::File(file_path),
            Payload::Empty,
            FILE_TRANSFER_TIMEOUT,
        )?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            // The file endpoint answers errors in the Bot API's JSON. A 404
            // here means the file (path) is gone, not that the token is bad.
            let retry_after = retry_after_header(response.headers());
            let body = read_limited(method, response.into_body());
            let err = match body {
                Ok(bytes) => match classify(method, status, &bytes, retry_after.as_deref()) {
                    Err(ApiError::TokenRejected {
                        method,
                        status: 404,
                        description,
                    }) => ApiError::BadRequest {
                        method,
                        status: 404,
                        description,
                    },
                    Err(e) => e,
                    Ok(_) => unexpected(method, &format!("http {status} with ok:true")),
                },
                Err(e) => e,
            };
            return Err(err.redacted(&self.token));
        }
        if let (Some(max), Some(len)) = (max_bytes, content_length(response.headers())) {
            if len > max {
                return Err(too_big(method, max));
            }
        }

        let temp = temp_path_beside(dest);
        let result = self.stream_to(method, response.into_body(), &temp, max_bytes);
        let result = result.and_then(|n| {
            fs::rename(&temp, dest).map_err(|e| ApiError::Local {
                what: format!("cannot rename download to {}", dest.display()),
                source: e,
            })?;
            // Make the rename itself durable; a failure here loses nothing
            // that a crash would not also lose.
            if let Some(dir) = dest.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(n)
        });
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result.map_err(|e| e.redacted(&self.token))
    }

    /// setMyCommands: the command list shown in Telegram's menu, as
    /// `(command, description)` pairs.
    pub fn set_my_commands(&self, commands: &[(&str, &str)]) -> Result<(), ApiError> {
        let list: Vec<Value> = commands
            .iter()
            .map(|(command, description)| json!({ "command": command, "description": description }))
            .collect();
        self.call("setMyCommands", &json!({ "commands": list }))
            .map(drop)
    }

    /// deleteWebhook: getUpdates answers 409 while a webhook is set. Pending
    /// updates are kept.
    pub fn delete_webhook(&self) -> Result<(), ApiError> {
        self.call("deleteWebhook", &json!({ "drop_pending_updates": false }))
            .map(drop)
    }

    /// sendChatAction: "typing", "upload_document" and so on.
    pub fn send_chat_action(&self, chat_id: i64, action: &str) -> Result<(), ApiError> {
        self.call(
            "sendChatAction",
            &json!({ "chat_id": chat_id, "action": action }),
        )
        .map(drop)
    }

    /// Any other method: POSTs `params` as JSON and returns `result`.
    pub fn call(&self, method: &str, params: &Value) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(params).unwrap_or_default();
        self.call_json(method, body, self.base_timeout)
    }

    /// Any method with files: `params` as form fields (strings as they
    /// are, other values as JSON) and each `(field, path, file name)` as a
    /// file part streamed from disk. Returns `result`. Without files it is
    /// [`Client::call`].
    pub fn call_with_files(
        &self,
        method: &str,
        params: &serde_json::Map<String, Value>,
        files: &[(String, PathBuf, String)],
    ) -> Result<Value, ApiError> {
        let Some(((first_field, first_path, first_name), rest)) = files.split_first() else {
            return self.call(method, &Value::Object(params.clone()));
        };
        let texts: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k.clone(), s.clone()),
                other => (k.clone(), other.to_string()),
            })
            .collect();
        let fields: Vec<(&str, &str)> = texts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let boundary = multipart::boundary();
        let mut reader: Box<dyn Read + Send> = Box::new(io::empty());
        let mut length = 0u64;
        for (i, (field, path, name)) in std::iter::once((first_field, first_path, first_name))
            .chain(rest.iter().map(|(f, p, n)| (f, p, n)))
            .enumerate()
        {
            let (file, meta) = open_upload(path)?;
            let head = if i == 0 {
                multipart::preamble(&boundary, &fields, field, name)
            } else {
                multipart::next_file(&boundary, field, name)
            };
            length += head.len() as u64 + meta.len();
            reader = Box::new(
                reader
                    .chain(io::Cursor::new(head))
                    .chain(file.take(meta.len())),
            );
        }
        let trailer = multipart::trailer(&boundary);
        length += trailer.len() as u64;
        let payload = Payload::Stream {
            content_type: multipart::content_type(&boundary),
            length,
            reader: Box::new(reader.chain(io::Cursor::new(trailer))),
        };
        let response = self.execute(Target::Method(method), payload, FILE_TRANSFER_TIMEOUT);
        self.read_reply(method, response)
    }

    fn call_json(&self, method: &str, body: Vec<u8>, timeout: Duration) -> Result<Value, ApiError> {
        let response = self.execute(Target::Method(method), Payload::Json(body), timeout);
        self.read_reply(method, response)
    }

    /// Reads a JSON reply (capped) and classifies it.
    fn read_reply(
        &self,
        method: &str,
        response: Result<http::Response<ureq::Body>, ApiError>,
    ) -> Result<Value, ApiError> {
        self.read_reply_as(method, response, |status, bytes, retry_after| {
            classify(method, status, bytes, retry_after)
        })
    }

    /// Reads a JSON reply (capped) and hands its status, body and
    /// Retry-After header to `read` (`classify`, or a faster reader of one
    /// method's answer that falls back to it).
    fn read_reply_as<T>(
        &self,
        method: &str,
        response: Result<http::Response<ureq::Body>, ApiError>,
        read: impl FnOnce(u16, &[u8], Option<&str>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let result = response.and_then(|response| {
            let status = response.status().as_u16();
            let retry_after = retry_after_header(response.headers());
            let bytes =
                read_limited(method, response.into_body()).map_err(|e| e.redacted(&self.token))?;
            log::debug!("bot {}: {method} answered http {status}", self.bot_id());
            read(status, &bytes, retry_after.as_deref())
        });
        result.map_err(|e| {
            let e = e.redacted(&self.token);
            log::debug!("bot {}: {e}", self.bot_id());
            e
        })
    }

    /// The one place requests are made and the only place the URL (which
    /// holds the token) exists. Every error text from `ureq` is scrubbed here.
    fn execute(
        &self,
        target: Target<'_>,
        payload: Payload,
        timeout: Duration,
    ) -> Result<http::Response<ureq::Body>, ApiError> {
        let (method, url) = match target {
            Target::Method(m) => (
                m,
                format!("{}/bot{}/{}", self.base_url, self.token.expose(), m),
            ),
            Target::File(p) => (
                "download",
                format!(
                    "{}/file/bot{}/{}",
                    self.base_url,
                    self.token.expose(),
                    p.trim_start_matches('/')
                ),
            ),
        };
        log::debug!("bot {}: calling {method}", self.bot_id());
        // The agent's own timeout is `base_timeout`: a request with that
        // timeout (every call but a long poll of another length) skips the
        // per-request copy of the agent's configuration.
        let own_timeout = timeout == self.base_timeout;
        let result = match payload {
            Payload::Empty => self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            Payload::Json(body) if own_timeout => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body),
            Payload::Json(body) => self
                .agent
                .post(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Content-Type", "application/json")
                .send(body),
            Payload::Stream {
                content_type,
                length,
                reader,
            } => self
                .agent
                .post(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Content-Type", content_type)
                .header("Content-Length", length.to_string())
                .send(ureq::SendBody::from_owned_reader(reader)),
        };
        drop(url);
        result.map_err(|e| {
            let reason = error::redact(&self.token, &describe_ureq_error(&e));
            ApiError::Transient {
                method: method.to_string(),
                reason,
            }
        })
    }

    /// Copies a download body into `temp` (created new), fsyncs it.
    fn stream_to(
        &self,
        method: &str,
        body: ureq::Body,
        temp: &Path,
        max_bytes: Option<u64>,
    ) -> Result<u64, ApiError> {
        let local = |what: &str, source: io::Error| ApiError::Local {
            what: format!("{what} {}", temp.display()),
            source,
        };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .map_err(|e| local("cannot create", e))?;
        let mut reader = body.into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ApiError::Transient {
                        method: method.to_string(),
                        reason: format!("reading the file failed: {}", short(&e.to_string())),
                    })
                }
            };
            total += n as u64;
            if let Some(max) = max_bytes {
                if total > max {
                    return Err(too_big(method, max));
                }
            }
            out.write_all(&buf[..n])
                .map_err(|e| local("cannot write", e))?;
        }
        out.sync_all().map_err(|e| local("cannot fsync", e))?;
        Ok(total)
    }
}

/// Opens a file to upload and checks that it is a regular file; the error
/// names the path and what failed.
fn open_upload(path: &Path) -> Result<(File, fs::Metadata), ApiError> {
    let local = |what: &str, source: io::Error| ApiError::Local {
        what: format!("{what} {}", path.display()),
        source,
    };
    let file = File::open(path).map_err(|e| local("cannot open upload", e))?;
    let meta = file
        .metadata()
        .map_err(|e| local("cannot stat upload", e))?;
    if !meta.is_file() {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
        return Err(local("cannot upload", source));
    }
    Ok((file, meta))
}

/// Classifies a Bot API reply. Pure: the HTTP status, the body bytes and the
/// `Retry-After` header in, the `result` or a classified error out. The body
/// is read as JSON whatever the status, because Telegram answers errors with
/// JSON and a proxy in front of it answers with HTML.
pub fn classify(
    method: &str,
    status: u16,
    body: &[u8],
    retry_after_header: Option<&str>,
) -> Result<Value, ApiError> {
    let transient = |reason: String| ApiError::Transient {
        method: method.to_string(),
        reason,
    };
    let mut reply: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let snippet = short(&String::from_utf8_lossy(body));
            return Err(transient(if snippet.is_empty() {
                format!("http {status}, empty non-JSON body")
            } else {
                format!("http {status}, non-JSON body: {snippet}")
            }));
        }
    };
    let description = reply
        .get("description")
        .and_then(Value::as_str)
        .map(short)
        .unwrap_or_default();
    match reply.get("ok").and_then(Value::as_bool) {
        Some(true) => {
            // Taken out, not cloned: a reply's result can be a whole
            // message (with the message it answers) or 100 updates.
            return match reply.as_object_mut().and_then(|o| o.remove("result")) {
                Some(result) => Ok(result),
                None => Err(transient(format!("http {status}, ok:true without result"))),
            };
        }
        Some(false) => {}
        None => return Err(transient(format!("http {status}, reply without ok"))),
    }
    let code = reply
        .get("error_code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .or(if status >= 400 { Some(status) } else { None });
    let description = if description.is_empty() {
        format!("error {}", code.unwrap_or(status))
    } else {
        description
    };
    let method = method.to_string();
    let Some(code) = code else {
        return Err(ApiError::Transient {
            method,
            reason: format!("http {status}, ok:false without error_code: {description}"),
        });
    };
    Err(match code {
        401 | 404 => ApiError::TokenRejected {
            method,
            status: code,
            description,
        },
        409 => ApiError::Conflict {
            method,
            description,
        },
        429 => {
            let from_body = reply
                .get("parameters")
                .and_then(|p| p.get("retry_after"))
                .and_then(Value::as_u64);
            let from_header = retry_after_header.and_then(|h| h.trim().parse::<u64>().ok());
            let secs = from_body.or(from_header).unwrap_or(1);
            ApiError::RateLimited {
                method,
                retry_after: Duration::from_secs(secs),
                description,
            }
        }
        400..=499 => ApiError::BadRequest {
            method,
            status: code,
            description,
        },
        _ => ApiError::Transient {
            method,
            reason: format!("error {code}: {description}"),
        },
    })
}

/// Reads a reply body into memory, at most [`JSON_REPLY_LIMIT`] bytes.
fn read_limited(method: &str, mut body: ureq::Body) -> Result<Vec<u8>, ApiError> {
    body.with_config()
        .limit(JSON_REPLY_LIMIT)
        .read_to_vec()
        .map_err(|e| ApiError::Transient {
            method: method.to_string(),
            reason: match e {
                ureq::Error::BodyExceedsLimit(n) => format!("reply body over {n} bytes"),
                e => format!(
                    "reading the reply failed: {}",
                    short(&describe_ureq_error(&e))
                ),
            },
        })
}

/// A ureq error as short text. Callers scrub it.
fn describe_ureq_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) => format!("network error: {io}"),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        e => e.to_string(),
    }
}

fn retry_after_header(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn message_id(method: &str, result: &Value) -> Result<i64, ApiError> {
    result
        .get("message_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| unexpected(method, "result without message_id"))
}

fn unexpected(method: &str, what: &str) -> ApiError {
    ApiError::Transient {
        method: method.to_string(),
        reason: format!("unexpected reply: {what}"),
    }
}

/// A download over the caller's cap. Reported as 413 (what the HTTP status
/// for "too large" is), since the server's own status was a success.
fn too_big(method: &str, max: u64) -> ApiError {
    ApiError::BadRequest {
        method: method.to_string(),
        status: 413,
        description: format!("file is larger than the limit of {max} bytes"),
    }
}

/// At most [`SNIPPET_CHARS`] characters of foreign text on one line.
fn short(text: &str) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .take(SNIPPET_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    out
}

/// A unique dot-prefixed name in `dest`'s directory, so the rename is
/// atomic (same file system) and the media scanner skips it (dot file).
fn temp_path_beside(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".to_string());
    let temp = format!(".{name}.{}-{n}-{nanos:x}.part", std::process::id());
    match dest.parent() {
        Some(dir) => dir.join(temp),
        None => PathBuf::from(temp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Workers share one client between threads.
    const _: () = {
        const fn shareable<T: Send + Sync>() {}
        const fn cloneable<T: Clone>() {}
        shareable::<Client>();
        cloneable::<Client>();
        shareable::<ApiError>();
    };

    const TOKEN: &str = "123456:AAHsecretPART-_x9";

    fn token() -> Token {
        Token::parse(TOKEN).expect("valid token")
    }

    #[test]
    fn ok_true_returns_result() {
        let r = classify("getMe", 200, br#"{"ok":true,"result":{"id":1}}"#, None);
        assert_eq!(r.expect("ok")["id"], 1);
    }

    #[test]
    fn error_codes_pick_the_variant() {
        let body = |code: u16, d: &str| {
            format!(r#"{{"ok":false,"error_code":{code},"description":"{d}"}}"#).into_bytes()
        };
        let c = |code: u16| classify("m", code, &body(code, "D"), None).expect_err("error");
        assert!(matches!(
            c(401),
            ApiError::TokenRejected { status: 401, .. }
        ));
        assert!(matches!(
            c(404),
            ApiError::TokenRejected { status: 404, .. }
        ));
        assert!(matches!(c(409), ApiError::Conflict { .. }));
        assert!(matches!(c(400), ApiError::BadRequest { status: 400, .. }));
        assert!(matches!(c(403), ApiError::BadRequest { status: 403, .. }));
        assert!(matches!(c(413), ApiError::BadRequest { status: 413, .. }));
        assert!(matches!(c(500), ApiError::Transient { .. }));
        assert!(matches!(c(503), ApiError::Transient { .. }));
        assert_eq!(c(409).description(), "D");
        assert!(c(500).is_transient());
        assert!(!c(400).is_transient());
    }

    #[test]
    fn error_code_wins_over_status_and_status_is_the_fallback() {
        let e = classify(
            "m",
            200,
            br#"{"ok":false,"error_code":409,"description":"x"}"#,
            None,
        );
        assert!(matches!(e, Err(ApiError::Conflict { .. })));
        let e = classify(
            "m",
            401,
            br#"{"ok":false,"description":"Unauthorized"}"#,
            None,
        );
        assert!(matches!(
            e,
            Err(ApiError::TokenRejected { status: 401, .. })
        ));
        let e = classify("m", 200, br#"{"ok":false,"description":"huh"}"#, None);
        assert!(matches!(e, Err(ApiError::Transient { .. })), "{e:?}");
    }

    #[test]
    fn retry_after_from_parameters_then_header_then_one_second() {
        let with_params =
            br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
        let bare = br#"{"ok":false,"error_code":429,"description":"Too Many Requests"}"#;
        let secs = |body: &[u8], header| {
            classify("m", 429, body, header)
                .expect_err("error")
                .retry_after()
                .expect("rate limited")
                .as_secs()
        };
        assert_eq!(secs(with_params, Some("3")), 7);
        assert_eq!(secs(bare, Some("3")), 3);
        assert_eq!(secs(bare, Some("soon")), 1);
        assert_eq!(secs(bare, None), 1);
    }

    #[test]
    fn non_json_bodies_are_transient_with_a_short_reason() {
        let html = format!(
            "<html><body>{}</body></html>",
            "502 Bad Gateway ".repeat(100)
        );
        let e = classify("getUpdates", 502, html.as_bytes(), None).expect_err("error");
        assert!(matches!(e, ApiError::Transient { .. }));
        let reason = e.description();
        assert!(
            reason.starts_with("http 502, non-JSON body: <html>"),
            "{reason}"
        );
        assert!(reason.chars().count() < 160, "{reason}");
        for body in [&b""[..], b"{\"ok\":tr", b"[1,2]", b"\"ok\"", b"{}"] {
            let e = classify("m", 200, body, None).expect_err("error");
            assert!(matches!(e, ApiError::Transient { .. }), "{body:?}: {e:?}");
        }
    }

    #[test]
    fn display_is_lowercase_without_trailing_period() {
        let e = classify(
            "sendMessage",
            400,
            br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#,
            None,
        )
        .expect_err("error");
        assert_eq!(
            e.to_string(),
            "sendMessage: bad request (http 400): Bad Request: chat not found"
        );
        let local = ApiError::Local {
            what: "cannot open upload /x".to_string(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(local
            .to_string()
            .starts_with("local file: cannot open upload /x"));
        assert!(std::error::Error::source(&local).is_some());
    }

    #[test]
    fn redaction_removes_token_and_secret() {
        let t = token();
        let text = format!("bad uri: http://h/bot{TOKEN}/getMe and AAHsecretPART-_x9 again");
        let clean = error::redact(&t, &text);
        assert!(!clean.contains("AAHsecretPART-_x9"), "{clean}");
        assert!(clean.contains("/bot123456:***/getMe"), "{clean}");

        let e = ApiError::Transient {
            method: "getMe".into(),
            reason: text.clone(),
        }
        .redacted(&t);
        assert!(!format!("{e} {e:?}").contains("AAHsecretPART"));
        let e = ApiError::Local {
            what: "w".into(),
            source: io::Error::other(text),
        }
        .redacted(&t);
        assert!(!format!("{e} {e:?}").contains("AAHsecretPART"));
    }

    #[test]
    fn client_debug_hides_the_token_and_base_url_is_trimmed() {
        let c = Client::new("http://127.0.0.1:9/", token(), 1);
        let d = format!("{c:?}");
        assert!(!d.contains("AAHsecretPART"), "{d}");
        assert!(d.contains("\"http://127.0.0.1:9\""), "{d}");
        assert_eq!(c.bot_id(), 123456);
    }

    #[test]
    fn network_errors_are_transient_and_scrubbed() {
        // Port 9 (discard) on loopback is closed on test hosts: connection refused.
        let c = Client::new("http://127.0.0.1:9", token(), 1);
        let e = c.get_me().expect_err("nothing listens");
        assert!(matches!(e, ApiError::Transient { .. }), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("AAHsecretPART"));
        // A URL ureq cannot parse is reported with the token scrubbed.
        let c = Client::new("http://[bad host", token(), 1);
        let e = c.get_me().expect_err("bad url");
        assert!(!format!("{e} {e:?}").contains("AAHsecretPART"), "{e:?}");
    }

    #[test]
    fn upload_sources_that_are_not_files_are_local_errors() {
        let c = Client::new("http://127.0.0.1:9", token(), 1);
        let dir = std::env::temp_dir();
        let e = c
            .send_document(1, &dir, "dir.bin", None)
            .expect_err("a directory");
        assert!(matches!(e, ApiError::Local { .. }), "{e:?}");
        let e = c
            .send_document(1, &dir.join("botfleet-no-such-file-x"), "x", None)
            .expect_err("missing");
        assert!(matches!(e, ApiError::Local { .. }), "{e:?}");
        assert!(!e.is_transient());
    }

    #[test]
    fn temp_files_are_dot_files_beside_dest() {
        let a = temp_path_beside(Path::new("/d/x.bin"));
        let b = temp_path_beside(Path::new("/d/x.bin"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/d")));
        let name = a.file_name().expect("name").to_string_lossy().into_owned();
        assert!(name.starts_with(".x.bin."), "{name}");
    }

    #[test]
    fn short_caps_and_flattens() {
        let s = short(&format!("a\nb{}", "x".repeat(500)));
        assert!(s.starts_with("a b"));
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 1);
    }
}
