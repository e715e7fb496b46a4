//! The sandbox: an in-memory emulator of the Bot API methods botfleet uses,
//! plus a small control API (`/_sandbox/...`) to register bots, inject
//! users' messages and files, read what bots sent, inject faults and turn on
//! flood limits. The integration tests, `botfleet sandbox`, the demo and the
//! benchmarks all run against it. The contract is docs/sandbox.md.
//!
//! It owns the model (`state`), request parsing (`http`) and its HTTP
//! server (`server`): one accept loop that gives each connection its own
//! small-stack thread, so hundreds of long polls can wait at once on one
//! condvar.
//!
//! It must never listen beyond the address it is given (loopback by
//! default), never reach the network (a URL given as a file is refused, not
//! fetched), and never be kinder than Telegram (BOT_API_NOTES.md): what it
//! fakes, it fakes the way the real server behaves. A registered token is
//! never printed or logged; only the fixed demo tokens are.

mod http;
mod server;
mod state;

use serde_json::{json, Map, Value};
use state::{Bot, Fault, FaultKind, Limits, State};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What `botfleet sandbox` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxOptions {
    pub bind: IpAddr,
    pub port: u16,
    pub demo_bots: u32,
    pub flood_limits: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            demo_bots: 0,
            flood_limits: false,
        }
    }
}

/// Why the sandbox could not serve or do what it was asked.
#[derive(Debug)]
pub enum SandboxError {
    /// The address could not be bound.
    Bind(String),
    /// The token is not `<digits>:<secret>`; the token itself is not kept.
    BadToken,
    /// No bot with this id is registered.
    UnknownBot(u64),
    /// The signal handlers for SIGINT/SIGTERM could not be installed.
    Signals(std::io::Error),
    /// The server thread could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for SandboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxError::Bind(e) => write!(f, "cannot bind: {e}"),
            SandboxError::BadToken => write!(f, "not a well-formed bot token"),
            SandboxError::UnknownBot(id) => write!(f, "no bot {id} is registered"),
            SandboxError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            SandboxError::Thread(e) => write!(f, "cannot start the server thread: {e}"),
        }
    }
}

impl std::error::Error for SandboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SandboxError::Signals(e) | SandboxError::Thread(e) => Some(e),
            _ => None,
        }
    }
}

/// Control API uploads (injected files) may exceed the Bot API's 50 MB, so
/// tests can make files getFile refuses.
const MAX_CONTROL_BODY_BYTES: u64 = 256 * 1024 * 1024;
/// The window of the "second 409" and "same short poll" rules.
const REPEAT_WINDOW: Duration = Duration::from_secs(3);

/// State shared by the server threads.
struct Shared {
    state: Mutex<State>,
    /// Notified on every change a waiting poll may care about and on stop.
    changed: Condvar,
    stop: AtomicBool,
    port: u16,
    /// Request threads still running.
    active: Arc<AtomicUsize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking request thread must not take the sandbox down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`, or less when the sandbox stops.
    fn sleep(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut guard = self.lock();
        while !self.stopping() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A running sandbox. Dropping it (or `shutdown`) stops its threads.
pub struct Sandbox {
    shared: Arc<Shared>,
    server: Arc<server::Server>,
    accept: Option<JoinHandle<()>>,
    host: IpAddr,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sandbox({})", self.url())
    }
}

impl Sandbox {
    /// Binds, starts the server threads, registers the demo bots, returns.
    pub fn start(opts: &SandboxOptions) -> Result<Sandbox, SandboxError> {
        let server = server::Server::bind(SocketAddr::new(opts.bind, opts.port))
            .map_err(|e| SandboxError::Bind(e.to_string()))?;
        let port = server
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| SandboxError::Bind(e.to_string()))?;
        let mut state = State::default();
        if opts.flood_limits {
            state.limits = Limits {
                per_chat_per_sec: 1,
                per_bot_per_sec: 30,
            };
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            port,
            active: Arc::new(AtomicUsize::new(0)),
        });
        let server = Arc::new(server);
        let accept = {
            let shared = shared.clone();
            let server = server.clone();
            std::thread::Builder::new()
                .name("sandbox-accept".into())
                .spawn(move || {
                    let active = Arc::clone(&shared.active);
                    let handler_shared = Arc::clone(&shared);
                    server.serve(
                        Arc::new(move |request| handle(&handler_shared, request)),
                        active,
                    );
                })
                .map_err(SandboxError::Thread)?
        };
        let host = if opts.bind.is_unspecified() {
            match opts.bind {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            }
        } else {
            opts.bind
        };
        let sandbox = Sandbox {
            shared,
            server,
            accept: Some(accept),
            host,
        };
        for n in 1..=opts.demo_bots {
            let (token, username) = demo_bot(n);
            sandbox.register_bot(&token, &username)?;
        }
        Ok(sandbox)
    }

    /// `http://127.0.0.1:PORT` (or the address it was bound to).
    pub fn url(&self) -> String {
        match self.host {
            IpAddr::V4(ip) => format!("http://{ip}:{}", self.shared.port),
            IpAddr::V6(ip) => format!("http://[{ip}]:{}", self.shared.port),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Registers a bot (again: a no-op; with a new secret: the new token
    /// replaces the old one). Returns the bot id.
    pub fn register_bot(&self, token: &str, username: &str) -> Result<u64, SandboxError> {
        let parsed = crate::token::Token::parse(token).map_err(|_| SandboxError::BadToken)?;
        let mut st = self.shared.lock();
        register(&mut st, &parsed, username);
        Ok(parsed.bot_id())
    }

    /// A user's text message to a bot. Returns (update_id, message_id).
    pub fn inject_text(
        &self,
        bot_id: u64,
        user_id: i64,
        chat_id: i64,
        text: &str,
    ) -> Result<(i64, i64), SandboxError> {
        let mut st = self.shared.lock();
        let bot = st
            .bots
            .get_mut(&bot_id)
            .ok_or(SandboxError::UnknownBot(bot_id))?;
        let mut content = Map::new();
        content.insert("text".into(), json!(text));
        let ids = bot.push_user_message(user_id, chat_id, content);
        self.shared.changed.notify_all();
        Ok(ids)
    }

    /// What the bot sent with seq > `since`, oldest first.
    pub fn sent_since(&self, bot_id: u64, since: u64) -> Vec<Value> {
        let st = self.shared.lock();
        st.bots
            .get(&bot_id)
            .map(|b| sent_after(b, since))
            .unwrap_or_default()
    }

    /// Stops the server threads and ends every waiting request.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock();
            self.shared.changed.notify_all();
        }
        self.server.unblock();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        // Request threads notice the stop flag at once; give them a moment
        // to drop their connections so none outlives the sandbox for long.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop_threads();
        }
    }
}

/// The fixed demo token and username of demo bot `n`.
fn demo_bot(n: u32) -> (String, String) {
    (
        format!("{}:sandbox-demo-token-{n}", 1_000_000 + u64::from(n)),
        format!("demo{n}_bot"),
    )
}

fn register(st: &mut State, token: &crate::token::Token, username: &str) {
    let id = token.bot_id();
    let username = if username.is_empty() {
        format!("bot{id}_bot")
    } else {
        username.trim_start_matches('@').to_string()
    };
    match st.bots.get_mut(&id) {
        Some(bot) if bot.token == token.expose() => {}
        Some(bot) => {
            bot.token = token.expose().to_string();
            bot.revoked = false;
        }
        None => {
            st.bots.insert(id, Bot::new(id, token.expose(), &username));
        }
    }
}

fn sent_after(bot: &Bot, since: u64) -> Vec<Value> {
    bot.sent
        .iter()
        .filter(|m| m["seq"].as_u64().unwrap_or(0) > since)
        .cloned()
        .collect()
}

/// Serves until SIGINT/SIGTERM.
pub fn serve_forever(opts: SandboxOptions) -> Result<(), SandboxError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(SandboxError::Signals)?;
    let sandbox = Sandbox::start(&opts)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sandbox listening on {}", sandbox.url());
    for n in 1..=opts.demo_bots {
        // Demo tokens are fixed and public; no other token is ever printed.
        let _ = writeln!(out, "demo bot {n} token {}", demo_bot(n).0);
    }
    let _ = out.flush();
    drop(out);
    let _ = signals.forever().next();
    log::info!("sandbox stopping");
    sandbox.shutdown();
    Ok(())
}

/// One HTTP reply.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    retry_after: Option<u64>,
}

fn api_ok(result: Value) -> Reply {
    Reply {
        status: 200,
        content_type: "application/json",
        // Built by hand so `ok` comes first, as in Telegram's replies.
        body: format!("{{\"ok\":true,\"result\":{result}}}").into_bytes(),
        retry_after: None,
    }
}

fn api_err(code: u16, description: &str) -> Reply {
    Reply {
        status: code,
        content_type: "application/json",
        body: format!(
            "{{\"ok\":false,\"error_code\":{code},\"description\":{}}}",
            Value::from(description)
        )
        .into_bytes(),
        retry_after: None,
    }
}

fn api_429(retry_after: u64) -> Reply {
    Reply {
        status: 429,
        content_type: "application/json",
        body: format!(
            "{{\"ok\":false,\"error_code\":429,\"description\":\"Too Many Requests: retry after {retry_after}\",\"parameters\":{{\"retry_after\":{retry_after}}}}}"
        )
        .into_bytes(),
        retry_after: Some(retry_after),
    }
}

fn bad_request(what: &str) -> Reply {
    api_err(400, &format!("Bad Request: {what}"))
}

fn control_ok(result: Value) -> Reply {
    api_ok(result)
}

fn control_err(status: u16, description: &str) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: format!(
            "{{\"ok\":false,\"description\":{}}}",
            Value::from(description)
        )
        .into_bytes(),
        retry_after: None,
    }
}

fn send(request: server::Request, reply: Reply) {
    let mut response = server::Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_header(
            server::Header::from_bytes("Content-Type", reply.content_type)
                .expect("a static header is valid"),
        );
    if let Some(n) = reply.retry_after {
        if let Ok(h) = server::Header::from_bytes("Retry-After", n.to_string()) {
            response.add_header(h);
        }
    }
    let _ = request.respond(response);
}

fn header<'a>(request: &'a server::Request, name: &str) -> &'a str {
    request.header(name)
}

/// Reads the body, or None when it is larger than `limit` (the declared
/// length is checked first, so a huge upload is never read).
fn read_body(request: &mut server::Request, limit: u64) -> Option<Vec<u8>> {
    if request.body_length().is_some_and(|n| n as u64 > limit) {
        return None;
    }
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .ok()?;
    if read as u64 > limit {
        return None;
    }
    Some(body)
}

fn handle(shared: &Arc<Shared>, request: server::Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let path = path.to_string();
    let query = query.to_string();
    if let Some(rest) = path.strip_prefix("/_sandbox/") {
        control(shared, request, rest, &query);
    } else if let Some(rest) = path.strip_prefix("/file/bot") {
        download(shared, request, rest);
    } else if let Some(rest) = path.strip_prefix("/bot") {
        bot_api(shared, request, rest, &query);
    } else {
        send(request, api_err(404, "Not Found"));
    }
}

/// Ends the request the way a fault says; false when the fault is not
/// one that replies (it has been handled anyway).
fn apply_fault(shared: &Shared, request: server::Request, fault: &Fault) {
    let reply = match fault.kind {
        FaultKind::Internal500 => api_err(500, "Internal Server Error"),
        FaultKind::BadGateway502 => Reply {
            status: 502,
            content_type: "text/html",
            body: b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n".to_vec(),
            retry_after: None,
        },
        FaultKind::TooMany429 => api_429(fault.retry_after),
        FaultKind::Conflict409 => api_err(409, state::CONFLICT_OTHER_POLL),
        FaultKind::Unauthorized401 => api_err(401, "Unauthorized"),
        FaultKind::Malformed => Reply {
            status: 200,
            content_type: "application/json",
            body: br#"{"ok":true,"result":["#.to_vec(),
            retry_after: None,
        },
        FaultKind::NoCode => Reply {
            status: 500,
            content_type: "application/json",
            body: br#"{"ok":false,"description":"Internal error"}"#.to_vec(),
            retry_after: None,
        },
        FaultKind::Huge => {
            let mut body = br#"{"ok":true,"result":[],"padding":""#.to_vec();
            body.resize(body.len() + 20 * 1024 * 1024, b'x');
            body.extend_from_slice(br#""}"#);
            Reply {
                status: 200,
                content_type: "application/json",
                body,
                retry_after: None,
            }
        }
        FaultKind::Html => Reply {
            status: 200,
            content_type: "text/html",
            body: b"<!DOCTYPE html><html><body><h1>Please log in to the Wi-Fi</h1></body></html>".to_vec(),
            retry_after: None,
        },
        FaultKind::Endless => {
            // A chunked 200 whose body goes on until the client gives up (or
            // the sandbox stops): the client must cap what it reads.
            let endless = Endless { sent: 0 };
            let response = server::Response::new(
                server::StatusCode(200),
                vec![],
                endless,
                None,
                None,
            );
            if request.respond(response).is_err() {
                // The client hung up, which is what it should do.
            }
            return;
        }
        FaultKind::Drop => return close_without_reply(shared, request),
        FaultKind::Hang => {
            shared.sleep(Duration::from_millis(fault.hang_ms));
            return close_without_reply(shared, request);
        }
    };
    send(request, reply);
}

/// The body of the `endless` fault: `[` then spaces, with no end in sight
/// (it stops after 1 GiB, far past any cap a client should have).
struct Endless {
    sent: u64,
}

impl std::io::Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= 1 << 30 || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(64 * 1024);
        buf[..n].fill(b' ');
        if self.sent == 0 {
            buf[0] = b'[';
        }
        self.sent += n as u64;
        Ok(n)
    }
}

/// Closes the request's connection without writing a byte.
fn close_without_reply(_shared: &Shared, request: server::Request) {
    request.close();
}

/// The canonical spelling of a method the sandbox serves.
fn canonical_method(lower: &str) -> Option<&'static str> {
    const METHODS: [&str; 10] = [
        "getMe",
        "getUpdates",
        "sendMessage",
        "sendDocument",
        "getFile",
        "setMyCommands",
        "getMyCommands",
        "deleteWebhook",
        "setWebhook",
        "sendChatAction",
    ];
    METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(lower))
        .copied()
}

fn bot_api(shared: &Arc<Shared>, mut request: server::Request, rest: &str, query: &str) {
    let Some((token_text, method)) = rest.split_once('/') else {
        return send(request, api_err(404, "Not Found"));
    };
    let token_text = http::percent_decode(token_text);
    let Ok(token) = crate::token::Token::parse(&token_text) else {
        return send(request, api_err(404, "Not Found"));
    };
    if method.is_empty() || method.contains('/') {
        return send(request, api_err(404, "Not Found"));
    }
    let bot_id = token.bot_id();
    let lower = method.to_ascii_lowercase();
    let canonical = canonical_method(&lower);
    let name = canonical
        .map(str::to_string)
        .unwrap_or_else(|| method.to_string());
    {
        let mut st = shared.lock();
        *st.calls.entry(name.clone()).or_default() += 1;
        if let Some(bot) = st.bots.get_mut(&bot_id) {
            *bot.calls.entry(name.clone()).or_default() += 1;
        }
    }
    let Some(body) = read_body(&mut request, state::MAX_UPLOAD_BYTES) else {
        return send(request, api_err(413, "Request Entity Too Large"));
    };
    let fault = shared.lock().take_fault(bot_id, &lower);
    if let Some(fault) = fault {
        return apply_fault(shared, request, &fault);
    }
    let content_type = header(&request, "Content-Type").to_string();
    let params = match http::parse_params(query, &content_type, &body) {
        Ok(p) => p,
        Err(http::ParseError::Json) => {
            return send(request, bad_request("can't parse JSON object"))
        }
        Err(http::ParseError::Multipart) => {
            return send(request, bad_request("can't parse multipart/form-data"))
        }
    };
    {
        let st = shared.lock();
        let known = st
            .bots
            .get(&bot_id)
            .is_some_and(|b| !b.revoked && b.token == token.expose());
        if !known {
            drop(st);
            return send(request, api_err(401, "Unauthorized"));
        }
    }
    let Some(method) = canonical else {
        return send(request, api_err(404, "Not Found: method not found"));
    };
    if method == "getUpdates" {
        return get_updates(shared, request, bot_id, &params);
    }
    let reply = {
        let mut st = shared.lock();
        let reply = call(&mut st, bot_id, method, &params);
        shared.changed.notify_all();
        reply
    };
    send(request, reply);
}

/// A chat_id parameter: Ok(None) when missing, Err when not a known shape.
fn chat_id_param(params: &http::Params) -> Result<i64, Reply> {
    match params.int("chat_id") {
        None => Err(bad_request("chat_id is empty")),
        Some(Err(())) => Err(bad_request("chat not found")),
        Some(Ok(id)) => Ok(id),
    }
}

fn reply_to_param(params: &http::Params) -> Option<i64> {
    if let Some(Ok(id)) = params.int("reply_to_message_id") {
        return Some(id);
    }
    params
        .json("reply_parameters")
        .and_then(|v| v.get("message_id").and_then(|m| m.as_i64()))
}

/// Every method but getUpdates: runs under the lock, never blocks.
fn call(st: &mut State, bot_id: u64, method: &str, params: &http::Params) -> Reply {
    let limits = st.limits;
    match method {
        "getMe" => {
            let bot = &st.bots[&bot_id];
            let mut me = bot.user();
            me["can_join_groups"] = json!(true);
            me["can_read_all_group_messages"] = json!(false);
            me["supports_inline_queries"] = json!(false);
            me["can_connect_to_business"] = json!(false);
            me["has_main_web_app"] = json!(false);
            api_ok(me)
        }
        "setMyCommands" => {
            let Some(commands) = params.json("commands").filter(|c| c.is_array()) else {
                return bad_request("parameter \"commands\" is required");
            };
            let valid = commands.as_array().is_some_and(|list| {
                list.iter().all(|c| {
                    c["command"]
                        .as_str()
                        .is_some_and(|s| (1..=32).contains(&s.len()))
                        && c["description"].as_str().is_some_and(|s| !s.is_empty())
                })
            });
            if !valid {
                return bad_request("BOT_COMMAND_INVALID");
            }
            st.bots.get_mut(&bot_id).expect("authorized bot").commands = commands;
            api_ok(json!(true))
        }
        "getMyCommands" => api_ok(st.bots[&bot_id].commands.clone()),
        "deleteWebhook" => {
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            bot.webhook = None;
            if params.text("drop_pending_updates").as_deref() == Some("true") {
                bot.pending.clear();
            }
            api_ok(json!(true))
        }
        "setWebhook" => {
            let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
            let url = params.text("url").unwrap_or_default();
            if url.is_empty() {
                bot.webhook = None;
            } else {
                bot.webhook = Some(url);
                bot.poll_generation += 1;
                bot.poll_terminated_by = state::CONFLICT_WEBHOOK_SET;
            }
            api_ok(json!(true))
        }
        "sendChatAction" => {
            let chat_id = match chat_id_param(params) {
                Ok(c) => c,
                Err(r) => return r,
            };
            if let Some((code, description)) = st.bots[&bot_id].cannot_send_to(chat_id) {
                return api_err(code, description);
            }
            api_ok(json!(true))
        }
        "sendMessage" => send_message(st, bot_id, params, limits),
        "sendDocument" => send_document(st, bot_id, params, limits),
        "getFile" => {
            let file_id = params.text("file_id").unwrap_or_default();
            if file_id.is_empty() {
                return bad_request("file_id is empty");
            }
            let Some(file) = st.files.get(&file_id).filter(|f| f.owner == bot_id) else {
                return bad_request("invalid file_id");
            };
            if file.bytes.len() > state::MAX_GET_FILE_BYTES {
                return bad_request("file is too big");
            }
            api_ok(
                json!({"file_id": file.file_id, "file_unique_id": file.file_unique_id,
                          "file_size": file.bytes.len(), "file_path": file.file_path}),
            )
        }
        _ => api_err(404, "Not Found: method not found"),
    }
}

fn outgoing_message(bot: &Bot, chat_id: i64, message_id: i64, reply_to: Option<i64>) -> Value {
    let mut m = json!({"message_id": message_id, "from": bot.user(),
                       "chat": state::chat_json(chat_id, chat_id), "date": state::unix_now()});
    if let Some(r) = reply_to {
        m["reply_to_message"] = json!({"message_id": r, "chat": state::chat_json(chat_id, chat_id),
                                       "date": state::unix_now()});
    }
    m
}

fn send_message(st: &mut State, bot_id: u64, params: &http::Params, limits: Limits) -> Reply {
    let chat_id = match chat_id_param(params) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let text = params.text("text").unwrap_or_default();
    if text.trim().is_empty() {
        return bad_request("message text is empty");
    }
    if text.chars().count() > state::MAX_TEXT_CHARS {
        return bad_request("message is too long");
    }
    let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
    if let Some((code, description)) = bot.cannot_send_to(chat_id) {
        return api_err(code, description);
    }
    if let Err(retry_after) = bot.flood_check(chat_id, limits, Instant::now()) {
        return api_429(retry_after);
    }
    let reply_to = reply_to_param(params);
    let mut fields = Map::new();
    fields.insert("text".into(), json!(text));
    if let Some(r) = reply_to {
        fields.insert("reply_to_message_id".into(), json!(r));
    }
    let message_id = bot.record_sent("sendMessage", chat_id, fields);
    let mut m = outgoing_message(bot, chat_id, message_id, reply_to);
    m["text"] = json!(text);
    api_ok(m)
}

fn send_document(st: &mut State, bot_id: u64, params: &http::Params, limits: Limits) -> Reply {
    let chat_id = match chat_id_param(params) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let caption = params.text("caption");
    if caption.as_deref().is_some_and(|c| c.chars().count() > 1024) {
        return bad_request("message caption is too long");
    }
    if let Some((code, description)) = st.bots[&bot_id].cannot_send_to(chat_id) {
        return api_err(code, description);
    }
    // The file: an uploaded part, `attach://name`, or an existing file_id.
    let upload = match (params.files.get("document"), params.text("document")) {
        (Some(part), _) => Some(part.clone()),
        (None, Some(text)) if text.starts_with("attach://") => {
            match params.files.get(&text["attach://".len()..]) {
                Some(part) => Some(part.clone()),
                None => return bad_request("wrong file identifier/HTTP URL specified"),
            }
        }
        (None, Some(text)) if text.starts_with("http://") || text.starts_with("https://") => {
            // The sandbox never reaches the network.
            return bad_request("failed to get HTTP URL content");
        }
        (None, Some(_)) => None,
        (None, None) => return bad_request("there is no document in the request"),
    };
    if let Err(retry_after) = st
        .bots
        .get_mut(&bot_id)
        .expect("authorized bot")
        .flood_check(chat_id, limits, Instant::now())
    {
        return api_429(retry_after);
    }
    let file_id = match upload {
        Some(part) => st.store_file(bot_id, "document", &part.file_name, part.bytes),
        None => {
            let id = params.text("document").unwrap_or_default();
            if st.files.get(&id).is_none_or(|f| f.owner != bot_id) {
                return bad_request("wrong file identifier/HTTP URL specified");
            }
            id
        }
    };
    let document = st.file_json(&file_id, "document");
    let mut fields = Map::new();
    fields.insert("file_id".into(), json!(file_id));
    fields.insert("file_name".into(), document["file_name"].clone());
    fields.insert("file_size".into(), document["file_size"].clone());
    if let Some(c) = &caption {
        fields.insert("caption".into(), json!(c));
    }
    let reply_to = reply_to_param(params);
    if let Some(r) = reply_to {
        fields.insert("reply_to_message_id".into(), json!(r));
    }
    let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
    let message_id = bot.record_sent("sendDocument", chat_id, fields);
    let mut m = outgoing_message(bot, chat_id, message_id, reply_to);
    m["document"] = document;
    if let Some(c) = caption {
        m["caption"] = json!(c);
    }
    api_ok(m)
}

/// How a getUpdates call ends.
enum PollEnd {
    Reply(Reply),
    /// A 409 that must be answered this much later.
    Late(Reply, Duration),
    Drop,
}

fn get_updates(shared: &Arc<Shared>, request: server::Request, bot_id: u64, params: &http::Params) {
    let offset = match params.int("offset") {
        Some(Ok(o)) => Some(o),
        Some(Err(())) => return send(request, bad_request("wrong parameter offset specified")),
        None => None,
    };
    let mut limit = match params.int("limit") {
        Some(Ok(l)) => l.clamp(1, 100) as usize,
        _ => 100,
    };
    let timeout = match params.int("timeout") {
        Some(Ok(t)) => t.clamp(0, 50) as u64,
        _ => 0,
    };
    let allowed = params.json("allowed_updates").and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
    });
    let arrived = Instant::now();
    let mut st = shared.lock();
    let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
    if bot.webhook.is_some() {
        drop(st);
        return send(request, api_err(409, state::CONFLICT_WEBHOOK_ACTIVE));
    }
    if let Some(allowed) = allowed {
        bot.allowed_updates = allowed;
    }
    // Two polls overlap only if the older one's client is still there: a
    // client that died (its socket closed) is not polling any more, and the
    // real server's front end drops such a request at once too.
    let live_others = bot
        .poll_peers
        .iter()
        .filter(|(_, fd)| !crate::sys::peer_closed(*fd))
        .count() as u64;
    bot.current_get_updates += 1;
    bot.last_get_updates_at_us = crate::sys::monotonic_usec().unwrap_or(0);
    bot.max_concurrent_get_updates = bot.max_concurrent_get_updates.max(live_others + 1);
    bot.poll_ticket += 1;
    let ticket = bot.poll_ticket;
    bot.poll_peers.push((ticket, request.raw_fd()));
    // A tight loop of short polls with the same offset is slowed down.
    let mut hold = None;
    if timeout == 0 {
        if let Some((last_offset, at)) = bot.last_short_poll {
            let since = arrived.duration_since(at);
            if last_offset == offset && since < REPEAT_WINDOW {
                hold = Some(arrived + REPEAT_WINDOW);
                if since < Duration::from_millis(500) {
                    limit = 1;
                }
            }
        }
        bot.last_short_poll = Some((offset, arrived));
    }
    // A long poll ends the one waiting before it.
    let generation = if timeout > 0 {
        bot.poll_generation += 1;
        bot.poll_terminated_by = state::CONFLICT_OTHER_POLL;
        shared.changed.notify_all();
        Some(bot.poll_generation)
    } else {
        None
    };
    bot.confirm(offset);
    let deadline = arrived + Duration::from_secs(timeout);
    let end = loop {
        if shared.stopping() {
            break PollEnd::Drop;
        }
        let now = Instant::now();
        if let Some(until) = hold {
            if now < until {
                st = shared
                    .changed
                    .wait_timeout(st, until - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
        }
        let bot = st.bots.get_mut(&bot_id).expect("bots are never removed");
        if bot.revoked {
            break PollEnd::Reply(api_err(401, "Unauthorized"));
        }
        if generation.is_some_and(|g| g != bot.poll_generation) {
            let reason = bot.poll_terminated_by;
            let reply = api_err(409, reason);
            if reason == state::CONFLICT_OTHER_POLL {
                let repeat = bot
                    .last_conflict
                    .is_some_and(|t| now.duration_since(t) < REPEAT_WINDOW);
                bot.last_conflict = Some(now);
                if repeat {
                    break PollEnd::Late(reply, REPEAT_WINDOW);
                }
            }
            break PollEnd::Reply(reply);
        }
        if bot.has_pending() {
            break PollEnd::Reply(api_ok(Value::Array(bot.deliver(limit))));
        }
        if now >= deadline {
            break PollEnd::Reply(api_ok(json!([])));
        }
        st = shared
            .changed
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    };
    if let Some(bot) = st.bots.get_mut(&bot_id) {
        bot.current_get_updates -= 1;
        bot.poll_peers.retain(|(t, _)| *t != ticket);
    }
    drop(st);
    match end {
        PollEnd::Reply(reply) => send(request, reply),
        PollEnd::Late(reply, delay) => {
            shared.sleep(delay);
            if shared.stopping() {
                close_without_reply(shared, request);
            } else {
                send(request, reply);
            }
        }
        PollEnd::Drop => close_without_reply(shared, request),
    }
}

/// `GET /file/bot<token>/<file_path>`.
fn download(shared: &Arc<Shared>, request: server::Request, rest: &str) {
    let Some((token_text, file_path)) = rest.split_once('/') else {
        return send(request, api_err(404, "Not Found"));
    };
    let Ok(token) = crate::token::Token::parse(&http::percent_decode(token_text)) else {
        return send(request, api_err(404, "Not Found"));
    };
    let file_path = http::percent_decode(file_path);
    let mut st = shared.lock();
    if let Some(fault) = st.take_fault(token.bot_id(), "file") {
        drop(st);
        return apply_fault(shared, request, &fault);
    }
    let known = st
        .bots
        .get(&token.bot_id())
        .is_some_and(|b| !b.revoked && b.token == token.expose());
    if !known {
        drop(st);
        return send(request, api_err(401, "Unauthorized"));
    }
    let file = st
        .paths
        .get(&file_path)
        .and_then(|id| st.files.get(id))
        .filter(|f| f.owner == token.bot_id())
        .map(|f| f.bytes.clone());
    drop(st);
    match file {
        Some(bytes) => send(
            request,
            Reply {
                status: 200,
                content_type: "application/octet-stream",
                body: bytes.to_vec(),
                retry_after: None,
            },
        ),
        None => send(request, api_err(404, "Not Found")),
    }
}

/// `/_sandbox/...`: JSON in and out, never faulted.
fn control(shared: &Arc<Shared>, mut request: server::Request, rest: &str, query: &str) {
    let method = request.method().to_ascii_uppercase();
    let Some(body) = read_body(&mut request, MAX_CONTROL_BODY_BYTES) else {
        return send(request, control_err(413, "body too large"));
    };
    let query: Map<String, Value> = http::parse_urlencoded(query)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let params = http::Params {
        fields: query.into_iter().collect(),
        files: Default::default(),
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let json_body = || -> Result<Value, Reply> {
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(json!({}));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(control_err(400, "the body must be a JSON object")),
        }
    };
    let reply = match (method.as_str(), parts.as_slice()) {
        ("POST", ["bots"]) => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let token = v["token"].as_str().unwrap_or("");
                match crate::token::Token::parse(token) {
                    Err(_) => control_err(400, "token must be <digits>:<secret>"),
                    Ok(t) => {
                        let mut st = shared.lock();
                        register(&mut st, &t, v["username"].as_str().unwrap_or(""));
                        let bot = &st.bots[&t.bot_id()];
                        control_ok(json!({"id": bot.id, "username": bot.username}))
                    }
                }
            }
        },
        ("GET", ["stats"]) => {
            let st = shared.lock();
            let bots: Map<String, Value> = st
                .bots
                .values()
                .map(|b| (b.id.to_string(), b.stats()))
                .collect();
            control_ok(
                json!({"calls": st.calls, "faults_injected": st.faults_injected,
                              "bots": bots}),
            )
        }
        ("GET", ["files", file_id]) => {
            let file_id = http::percent_decode(file_id);
            let bytes = shared.lock().files.get(&file_id).map(|f| f.bytes.clone());
            match bytes {
                Some(bytes) => Reply {
                    status: 200,
                    content_type: "application/octet-stream",
                    body: bytes.to_vec(),
                    retry_after: None,
                },
                None => control_err(404, "no such file"),
            }
        }
        ("POST", ["faults"]) => match json_body() {
            Err(r) => r,
            Ok(v) => add_fault(shared, &v),
        },
        ("DELETE", ["faults"]) => {
            shared.lock().faults.clear();
            control_ok(json!(true))
        }
        ("POST", ["limits"]) => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let get = |k: &str| v[k].as_u64().unwrap_or(0).min(u64::from(u32::MAX)) as u32;
                let limits = Limits {
                    per_chat_per_sec: get("per_chat_per_sec"),
                    per_bot_per_sec: get("per_bot_per_sec"),
                };
                shared.lock().limits = limits;
                control_ok(json!({"per_chat_per_sec": limits.per_chat_per_sec,
                                  "per_bot_per_sec": limits.per_bot_per_sec}))
            }
        },
        (verb, ["bots", id, action]) => match id.parse::<u64>() {
            Err(_) => control_err(404, "no such bot"),
            Ok(bot_id) => bot_control(shared, verb, bot_id, action, &params, &body, json_body),
        },
        _ => control_err(404, "no such control endpoint"),
    };
    send(request, reply);
}

fn add_fault(shared: &Shared, v: &Value) -> Reply {
    let kind_text = match &v["kind"] {
        Value::String(s) => s.to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let Some(kind) = FaultKind::parse(&kind_text) else {
        return control_err(
            400,
            "kind must be one of 500, 502, 429, 409, 401, malformed, drop, hang",
        );
    };
    let probability = v["probability"].as_f64();
    if probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return control_err(400, "probability must be between 0 and 1");
    }
    let fault = Fault {
        kind,
        bot_id: v["bot_id"].as_u64(),
        method: v["method"].as_str().map(|m| m.to_ascii_lowercase()),
        remaining: v["count"].as_u64().unwrap_or(1).max(1),
        probability,
        retry_after: v["retry_after"].as_u64().unwrap_or(3),
        hang_ms: v["hang_ms"].as_u64().unwrap_or(120_000),
    };
    shared.lock().faults.push(fault);
    control_ok(json!(true))
}

fn bot_control(
    shared: &Arc<Shared>,
    verb: &str,
    bot_id: u64,
    action: &str,
    query: &http::Params,
    body: &[u8],
    json_body: impl Fn() -> Result<Value, Reply>,
) -> Reply {
    let mut st = shared.lock();
    if !st.bots.contains_key(&bot_id) {
        return control_err(404, "no such bot");
    }
    let reply = match (verb, action) {
        ("POST", "revoke") => {
            st.bots.get_mut(&bot_id).expect("checked").revoked = true;
            control_ok(json!(true))
        }
        ("POST", "messages") => match json_body() {
            Err(r) => r,
            Ok(v) => {
                let Some(user_id) = v["user_id"].as_i64() else {
                    return control_err(400, "user_id is required");
                };
                let chat_id = v["chat_id"].as_i64().unwrap_or(user_id);
                let mut content = Map::new();
                content.insert("text".into(), json!(v["text"].as_str().unwrap_or("")));
                let bot = st.bots.get_mut(&bot_id).expect("checked");
                let (update_id, message_id) = bot.push_user_message(user_id, chat_id, content);
                control_ok(json!({"update_id": update_id, "message_id": message_id,
                    "at_us": crate::sys::monotonic_usec().unwrap_or(0)}))
            }
        },
        ("POST", "files") => {
            let Some(Ok(user_id)) = query.int("user_id") else {
                return control_err(400, "user_id is required");
            };
            let chat_id = match query.int("chat_id") {
                Some(Ok(c)) => c,
                _ => user_id,
            };
            let kind = query.text("kind").unwrap_or_else(|| "document".into());
            if !["document", "photo", "audio", "video", "voice"].contains(&kind.as_str()) {
                return control_err(400, "kind must be document, photo, audio, video or voice");
            }
            let file_name = query.text("file_name").unwrap_or_else(|| "file.bin".into());
            let file_id = st.store_file(bot_id, &kind, &file_name, body.to_vec());
            let mut content = Map::new();
            if kind == "photo" {
                // Telegram sends several sizes, largest last.
                let thumb_bytes = body[..body.len() / 10].to_vec();
                let thumb = st.store_file(bot_id, "photo", &file_name, thumb_bytes);
                let mut small = st.file_json(&thumb, "photo");
                small["width"] = json!(128);
                small["height"] = json!(96);
                content.insert(
                    "photo".into(),
                    json!([small, st.file_json(&file_id, "photo")]),
                );
            } else {
                content.insert(kind.clone(), st.file_json(&file_id, &kind));
            }
            if let Some(caption) = query.text("caption") {
                content.insert("caption".into(), json!(caption));
            }
            let bot = st.bots.get_mut(&bot_id).expect("checked");
            let (update_id, message_id) = bot.push_user_message(user_id, chat_id, content);
            control_ok(json!({"update_id": update_id, "message_id": message_id,
                              "file_id": file_id}))
        }
        ("POST", "updates") => match json_body() {
            Err(r) => r,
            Ok(Value::Object(mut update)) => {
                update.remove("update_id");
                let bot = st.bots.get_mut(&bot_id).expect("checked");
                control_ok(json!({"update_id": bot.push_update(update)}))
            }
            Ok(_) => control_err(400, "the body must be a JSON object"),
        },
        ("POST", "chats") => match json_body() {
            Err(r) => r,
            Ok(v) => match v["chat_id"].as_i64() {
                Some(chat_id) => {
                    let bot = st.bots.get_mut(&bot_id).expect("checked");
                    bot.chats.insert(chat_id);
                    if v["blocked"] == json!(true) {
                        bot.blocked.insert(chat_id);
                    } else {
                        bot.blocked.remove(&chat_id);
                    }
                    control_ok(json!(true))
                }
                None => control_err(400, "chat_id is required"),
            },
        },
        ("GET", "sent") => {
            let since = match query.int("since") {
                Some(Ok(s)) => s.max(0) as u64,
                _ => 0,
            };
            control_ok(Value::Array(sent_after(&st.bots[&bot_id], since)))
        }
        _ => control_err(404, "no such control endpoint"),
    };
    shared.changed.notify_all();
    reply
}
