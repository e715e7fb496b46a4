//! The sandbox: an in-memory emulator of the Bot API methods botfleet uses,
//! plus a small control API (`/_sandbox/...`) to register bots, inject
//! users' messages and files, read what bots sent, inject faults and turn on
//! flood limits. The integration tests, `botfleet sandbox`, the demo and the
//! benchmarks all run against it. The contract is docs/sandbox.md.
//!
//! It owns the model (`state`), request parsing (`http`) and its HTTP
//! server (`server`): one accept loop that gives each connection its own
//! small-stack thread, so thousands of long polls can wait at once, each on
//! its bot's condvar: a call wakes only the waiters of the bot it changed
//! (all of them only when the sandbox stops).
//!
//! It must never listen beyond the address it is given (loopback by
//! default), never reach the network (a URL given as a file is refused, not
//! fetched), and never be kinder than Telegram (BOT_API_NOTES.md): what it
//! fakes, it fakes the way the real server behaves. A registered token is
//! never printed or logged; only the fixed demo tokens are.

mod control;
mod faults;
pub mod format;
mod http;
pub mod markup;
mod methods;
mod page;
mod poll;
mod server;
mod state;
mod urlfetch;

use serde_json::{json, Map, Value};
use state::{Bot, Limits, State};
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
    /// Notified only when the sandbox stops: what sleeps for a while
    /// without waiting on a bot (a held 409, a hanging fault) sleeps here.
    /// Waiters of a bot sleep on its own condvar (`Bot::wake`).
    stopped: Condvar,
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
                .stopped
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits on `bot_id`'s condvar until a change to that bot (or the
    /// stop) wakes it, or `d` passes; at once if there is no such bot.
    fn wait_for_bot<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        bot_id: u64,
        d: Duration,
    ) -> MutexGuard<'a, State> {
        let Some(wake) = st.bots.get(&bot_id).map(|b| Arc::clone(&b.wake)) else {
            return st;
        };
        let mut st = wake
            .wait_timeout(st, d)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if let Some(bot) = st.bots.get_mut(&bot_id) {
            bot.wakeups += 1;
        }
        st
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
                per_group_per_min: 20,
            };
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            stopped: Condvar::new(),
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
        st.wake(bot_id);
        Ok(ids)
    }

    /// A user presses the inline button with `data` on a message (the demo
    /// uses it). Returns the callback query's update id.
    pub fn press(
        &self,
        bot_id: u64,
        user_id: i64,
        chat_id: i64,
        message_id: i64,
        data: &str,
    ) -> Result<i64, String> {
        let mut st = self.shared.lock();
        let press = methods::Press {
            user_id,
            chat_id,
            message_id,
            data: Some(data),
            at: None,
            ttl: state::CALLBACK_TTL,
        };
        let pressed = methods::press_button(&mut st, bot_id, &press);
        st.wake(bot_id);
        pressed.map(|(_, update_id)| update_id)
    }

    /// What the bot sent with seq > `since`, oldest first.
    pub fn sent_since(&self, bot_id: u64, since: u64) -> Vec<Value> {
        let st = self.shared.lock();
        st.bots
            .get(&bot_id)
            .map(|b| sent_after(b, since))
            .unwrap_or_default()
    }

    /// Gives a user a name their messages to `bot_id` carry (otherwise
    /// `User<id>`).
    pub fn name_user(
        &self,
        bot_id: u64,
        user_id: i64,
        first_name: &str,
    ) -> Result<(), SandboxError> {
        let mut st = self.shared.lock();
        let bot = st
            .bots
            .get_mut(&bot_id)
            .ok_or(SandboxError::UnknownBot(bot_id))?;
        bot.users.insert(
            user_id,
            json!({"id": user_id, "is_bot": false, "first_name": first_name,
                   "username": first_name.to_ascii_lowercase()}),
        );
        Ok(())
    }

    /// Stops the server threads and ends every waiting request.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let st = self.shared.lock();
            st.wake_all();
            self.shared.stopped.notify_all();
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
    let _ = writeln!(out, "chat page: {}/", sandbox.url());
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
    if path == "/" || path == "/index.html" {
        send(request, page::index());
    } else if let Some(rest) = path.strip_prefix("/_sandbox/") {
        control::control(shared, request, rest, &query);
    } else if let Some(rest) = path.strip_prefix("/file/bot") {
        download(shared, request, rest);
    } else if let Some(rest) = path.strip_prefix("/bot") {
        bot_api(shared, request, rest, &query);
    } else {
        send(request, api_err(404, "Not Found"));
    }
}

/// The canonical spelling of a method the sandbox serves.
fn canonical_method(lower: &str) -> Option<&'static str> {
    methods::METHODS
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
    let body = read_body(&mut request, state::MAX_UPLOAD_BYTES);
    let content_type = header(&request, "Content-Type").to_string();
    // Parsing is pure, so it may run before the fault is drawn; its error
    // is still answered after a fault and before a 401, as before.
    let parsed = body
        .as_ref()
        .map(|body| http::parse_params(query, &content_type, body));
    // One lock for the count, the fault and the token check, not three.
    let (fault, known) = {
        let mut st = shared.lock();
        *st.calls.entry(name.clone()).or_default() += 1;
        if let Some(bot) = st.bots.get_mut(&bot_id) {
            *bot.calls.entry(name).or_default() += 1;
        }
        if parsed.is_none() {
            drop(st);
            return send(request, api_err(413, "Request Entity Too Large"));
        }
        let fault = st.take_fault(bot_id, &lower);
        let known = st
            .bots
            .get(&bot_id)
            .is_some_and(|b| !b.revoked && !b.logged_out && b.token == token.expose());
        (fault, known)
    };
    if let Some(fault) = fault {
        return faults::apply_fault(shared, request, &fault);
    }
    let mut params = match parsed {
        Some(Ok(p)) => p,
        Some(Err(http::ParseError::Json)) => {
            return send(request, bad_request("can't parse JSON object"))
        }
        Some(Err(http::ParseError::Multipart)) => {
            return send(request, bad_request("can't parse multipart/form-data"))
        }
        None => return send(request, api_err(413, "Request Entity Too Large")),
    };
    if !known {
        return send(request, api_err(401, "Unauthorized"));
    }
    let Some(method) = canonical else {
        return send(request, api_err(404, "Not Found: method not found"));
    };
    urlfetch::fetch_loopback_urls(&mut params);
    if method == "getUpdates" {
        return poll::get_updates(shared, request, bot_id, &params);
    }
    let reply = {
        let mut st = shared.lock();
        let reply = methods::call(&mut st, bot_id, method, &params);
        st.wake(bot_id);
        reply
    };
    send(request, reply);
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
        return faults::apply_fault(shared, request, &fault);
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
