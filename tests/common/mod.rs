//! Shared helpers for every integration test: the real binary, temp dirs,
//! waiting with deadlines, a loopback HTTP agent, and `SandboxProc`, a
//! `botfleet sandbox` child process with its control API wrapped in methods.
//! Every helper panics with a message that says what failed.
#![allow(dead_code)]

pub mod fleet;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `botfleet` executable cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_botfleet"))
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Makes a unique temp dir (pid, a counter and the clock in its name).
pub fn temp_dir() -> TempDir {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let path =
        std::env::temp_dir().join(format!("botfleet-test-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&path)
        .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
    TempDir { path }
}

/// Runs `botfleet ARGS` to completion (killed after 30 s), with none of the
/// test process's PORT, tokens or NOTIFY_SOCKET; `configure` adds to the
/// command (a working dir, settings) before it starts.
pub fn botfleet_output(
    args: &[&str],
    configure: impl FnOnce(&mut Command),
) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("PORT")
        .env_remove("TELEGRAM_BOT_TOKENS")
        .env_remove("NOTIFY_SOCKET");
    configure(&mut cmd);
    output_within(cmd, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("botfleet {args:?} did not finish within 30 s"))
}

/// Runs `cmd` (stdin null, stdout and stderr captured) to its end; None
/// when it is still running after `timeout` (then it is killed and reaped).
pub fn output_within(mut cmd: Command, timeout: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _killed = child.kill();
            let _reaped = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(child.wait_with_output().expect("the command's output"))
}

/// Polls `f` every 10 ms until it returns true; panics at `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An agent for loopback servers: statuses are not errors (so 409 and 429
/// bodies can be read), no proxy, a global timeout of 10 s.
pub fn http() -> ureq::Agent {
    http_with_timeout(Duration::from_secs(10))
}

/// Like `http()` with another global timeout.
pub fn http_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// Reads a response body of any size as bytes.
pub fn body_bytes(response: &mut ureq::http::Response<ureq::Body>) -> Vec<u8> {
    response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("cannot read a response body: {e}"))
}

/// Parses a body as JSON; a body that is not JSON becomes a JSON string.
pub fn body_json(response: &mut ureq::http::Response<ureq::Body>) -> Value {
    let bytes = body_bytes(response);
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A `botfleet sandbox` child process, killed and reaped on drop.
#[derive(Debug)]
pub struct SandboxProc {
    child: Child,
    pub url: String,
    /// The message ids `send_text` got, by (bot, chat, text): an echo that
    /// quotes nothing (builtin:echo in a private chat) is matched to the
    /// message it answers by its chat and text (`answered`).
    texts: Mutex<HashMap<(u64, i64, String), Vec<i64>>>,
}

impl SandboxProc {
    /// `botfleet sandbox --port 0`.
    pub fn start() -> SandboxProc {
        SandboxProc::start_with(&[])
    }

    /// `botfleet sandbox --port 0` plus `args`; waits for the first line.
    pub fn start_with(args: &[&str]) -> SandboxProc {
        let mut child = Command::new(bin())
            .arg("sandbox")
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `botfleet sandbox`: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = [0u8; 4096];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        });
        let first = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`botfleet sandbox` printed no first line within 10 s");
            }
        };
        let url = match first.trim().strip_prefix("sandbox listening on ") {
            Some(url) => url.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`botfleet sandbox` first line is not its address: {first:?}");
            }
        };
        SandboxProc {
            child,
            url,
            texts: Mutex::new(HashMap::new()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn control(&self, verb: &str, path: &str, body: Option<Vec<u8>>) -> Value {
        let url = format!("{}/_sandbox/{path}", self.url);
        let agent = http();
        let result = match (verb, body) {
            ("GET", _) => agent.get(&url).call(),
            ("DELETE", _) => agent.delete(&url).call(),
            (_, Some(body)) => agent.post(&url).send(&body[..]),
            (_, None) => agent.post(&url).send_empty(),
        };
        let mut response =
            result.unwrap_or_else(|e| panic!("control call {verb} {path} failed: {e}"));
        let status = response.status().as_u16();
        let value = body_json(&mut response);
        if status != 200 || value["ok"] != json!(true) {
            panic!("control call {verb} {path} answered {status}: {value}");
        }
        value["result"].clone()
    }

    /// POSTs JSON to `/_sandbox/<path>`; returns the `result`.
    pub fn control_post(&self, path: &str, body: Value) -> Value {
        self.control_json(path, body)
    }

    fn control_json(&self, path: &str, body: Value) -> Value {
        self.control("POST", path, Some(body.to_string().into_bytes()))
    }

    /// A new sandbox with one bot per id: its token is `token(id)`, its
    /// username `{name}{id}_bot`. Returns the tokens in `ids` order.
    pub fn with_bots(
        ids: &[u64],
        token: fn(u64) -> String,
        name: &str,
    ) -> (SandboxProc, Vec<String>) {
        let sandbox = SandboxProc::start();
        let tokens: Vec<String> = ids.iter().map(|id| token(*id)).collect();
        for (id, t) in ids.iter().zip(&tokens) {
            sandbox.add_bot(t, &format!("{name}{id}_bot"));
        }
        (sandbox, tokens)
    }

    /// Registers a bot; returns its id.
    pub fn add_bot(&self, token: &str, username: &str) -> u64 {
        let result = self.control_json("bots", json!({"token": token, "username": username}));
        result["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("register answered no id: {result}"))
    }

    /// Revokes a bot's token: it now gets 401.
    pub fn revoke(&self, bot_id: u64) {
        self.control("POST", &format!("bots/{bot_id}/revoke"), None);
    }

    /// A user's text message; returns (update_id, message_id).
    pub fn send_text(&self, bot_id: u64, user_id: i64, chat_id: i64, text: &str) -> (i64, i64) {
        let r = self.control_json(
            &format!("bots/{bot_id}/messages"),
            json!({"user_id": user_id, "chat_id": chat_id, "text": text}),
        );
        match (r["update_id"].as_i64(), r["message_id"].as_i64()) {
            (Some(u), Some(m)) => {
                self.texts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry((bot_id, chat_id, text.to_string()))
                    .or_default()
                    .push(m);
                (u, m)
            }
            _ => panic!("inject message answered no ids: {r}"),
        }
    }

    /// The message id a message `bot_id` sent answers: the one it quotes,
    /// or, for a sendMessage quoting none (builtin:echo in a private
    /// chat), the one message `send_text` sent to its chat with its text.
    pub fn answered(&self, bot_id: u64, sent: &Value) -> Option<i64> {
        if let Some(id) = sent["reply_to_message_id"].as_i64() {
            return Some(id);
        }
        if sent["method"] != "sendMessage" {
            return None;
        }
        let key = (
            bot_id,
            sent["chat_id"].as_i64()?,
            sent["text"].as_str()?.to_string(),
        );
        match self
            .texts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .map(Vec::as_slice)
        {
            Some([one]) => Some(*one),
            _ => None,
        }
    }

    /// A user's file; returns (update_id, message_id, file_id).
    pub fn send_file(
        &self,
        bot_id: u64,
        user_id: i64,
        chat_id: i64,
        kind: &str,
        file_name: &str,
        bytes: &[u8],
    ) -> (i64, i64, String) {
        let query: String = [
            ("user_id", user_id.to_string()),
            ("chat_id", chat_id.to_string()),
            ("kind", kind.to_string()),
            ("file_name", file_name.to_string()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        let r = self.control(
            "POST",
            &format!("bots/{bot_id}/files?{query}"),
            Some(bytes.to_vec()),
        );
        match (
            r["update_id"].as_i64(),
            r["message_id"].as_i64(),
            r["file_id"].as_str(),
        ) {
            (Some(u), Some(m), Some(f)) => (u, m, f.to_string()),
            _ => panic!("inject file answered no ids: {r}"),
        }
    }

    /// Queues any update object; returns its update_id.
    pub fn inject_update(&self, bot_id: u64, update: Value) -> i64 {
        let r = self.control_json(&format!("bots/{bot_id}/updates"), update);
        r["update_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("inject update answered no update_id: {r}"))
    }

    /// Makes a chat known to the bot.
    pub fn add_chat(&self, bot_id: u64, chat_id: i64) {
        self.control_json(&format!("bots/{bot_id}/chats"), json!({"chat_id": chat_id}));
    }

    /// Everything the bot sent, oldest first.
    pub fn sent(&self, bot_id: u64) -> Vec<Value> {
        match self.control("GET", &format!("bots/{bot_id}/sent"), None) {
            Value::Array(list) => list,
            other => panic!("sent answered a non-array: {other}"),
        }
    }

    /// The raw bytes of a stored file.
    pub fn file_bytes(&self, file_id: &str) -> Vec<u8> {
        let url = format!("{}/_sandbox/files/{}", self.url, percent_encode(file_id));
        let mut response = http()
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("file download {file_id} failed: {e}"));
        let status = response.status().as_u16();
        if status != 200 {
            panic!("file download {file_id} answered {status}");
        }
        body_bytes(&mut response)
    }

    /// Adds a fault (`{"kind":..., ...}`).
    pub fn fault(&self, spec: Value) {
        self.control_json("faults", spec);
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        self.control("DELETE", "faults", None);
    }

    /// Turns flood limits on (0 turns one off).
    pub fn limits(&self, per_chat: u32, per_bot: u32) {
        self.control_json(
            "limits",
            json!({"per_chat_per_sec": per_chat, "per_bot_per_sec": per_bot}),
        );
    }

    /// The `result` of `/_sandbox/stats`.
    pub fn stats(&self) -> Value {
        self.control("GET", "stats", None)
    }

    /// One bot's part of the stats.
    pub fn bot_stats(&self, bot_id: u64) -> Value {
        let stats = self.stats();
        let bot = &stats["bots"][bot_id.to_string()];
        if bot.is_null() {
            panic!("stats have no bot {bot_id}: {stats}");
        }
        bot.clone()
    }

    /// A raw Bot API call with a JSON body: (status, body as JSON, or a
    /// JSON string when the body is not JSON).
    pub fn call(&self, token: &str, method: &str, params: Value) -> (u16, Value) {
        let url = format!("{}/bot{token}/{method}", self.url);
        let mut response = http()
            .post(&url)
            .header("Content-Type", "application/json")
            .send(params.to_string())
            .unwrap_or_else(|e| panic!("Bot API call {method} failed: {e}"));
        let status = response.status().as_u16();
        (status, body_json(&mut response))
    }
}

impl Drop for SandboxProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The texts of the messages a bot sent in reply to `message_id`.
pub fn replies_to(sent: &[Value], message_id: i64) -> Vec<String> {
    sent.iter()
        .filter(|m| m["reply_to_message_id"].as_i64() == Some(message_id))
        .map(|m| m["text"].as_str().unwrap_or("").to_string())
        .collect()
}
