//! A small HTTP/1.1 server built to survive abuse, for the health endpoints.
//!
//! One reader thread owns the listening socket and every connection whose
//! request head has not fully arrived: all non-blocking, waited on together
//! with poll(2), so a client that sends nothing (or one byte a minute) costs
//! a file descriptor and a small buffer, never a thread. A connection gets
//! `HEAD_TIMEOUT` to send its whole request, at most `MAX_HEAD` bytes of head
//! and `MAX_BODY` of body; at most `MAX_PENDING` wait at once (the oldest is
//! dropped first). Complete requests go to a fixed pool of `HANDLERS`
//! threads through a bounded queue (a full queue answers 503 at once); each
//! answer is written with a write timeout and the connection is closed.
//!
//! Why not tiny_http: it reads every connection on a
//! thread of its own from an unbounded pool, with no read timeout and no cap
//! on a header line, so idle or slow clients pile up threads and memory for
//! ever. This module owns sockets and HTTP framing only; it must never
//! decide what a path means (the handler does) or block the reader thread
//! on one client.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most bytes of request line and headers a client may send.
pub const MAX_HEAD: usize = 8 * 1024;
/// The largest request body accepted (no endpoint needs one).
pub const MAX_BODY: usize = 4 * 1024;
/// How long a client has, from connect, to send its whole request.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections waiting for their request at once; beyond, the oldest goes.
/// The supervisor passes a lower cap when the open-file limit is tight.
pub const MAX_PENDING: usize = 1024;
/// How long accepting pauses after an accept error (EMFILE, ENFILE,
/// ENOBUFS): the listener stays readable, so retrying at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Threads that answer complete requests.
pub const HANDLERS: usize = 4;
/// Complete requests waiting for a handler; beyond, 503 at once.
const QUEUE: usize = 64;
/// How long writing one answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the reader thread looks at its waiting clients' deadlines,
/// a paused accept and a lowered cap while any of those is pending; with
/// none it sleeps in poll(2) until a connection or `stop` (a byte on its
/// wake socket) comes: an idle fleet's health server never wakes.
const POLL_MS: i32 = 100;

/// One parsed request. Header names are lower-cased.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// One answer; the server adds Content-Length and `Connection: close`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: vec![],
            body: format!("{value}\n"),
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            headers: vec![],
            body,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// The reason phrase for the statuses this server uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// The request cannot be served: answer with this status and close.
    Bad(u16),
    /// A whole request.
    Done(Request),
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_request_line(line: &str) -> Result<(String, String, String), u16> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !is_token(method) || !target.starts_with('/') || target.bytes().any(|b| b <= b' ') {
        return Err(400);
    }
    if !version.starts_with("HTTP/") {
        return Err(400);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(505);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok((method.to_string(), path.to_string(), query.to_string()))
}

/// Parses a request from the bytes received so far.
pub fn parse(buf: &[u8]) -> Parsed {
    // Reject garbage as soon as its first line is in, not after 8 KiB.
    if let Some(eol) = buf.iter().position(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(&buf[..eol]);
        if let Err(status) = parse_request_line(line.trim_end_matches('\r')) {
            return Parsed::Bad(status);
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            buf.windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        });
    let Some((head_end, body_start)) = end else {
        return if buf.len() > MAX_HEAD {
            Parsed::Bad(431)
        } else {
            Parsed::Incomplete
        };
    };
    if head_end > MAX_HEAD {
        return Parsed::Bad(431);
    }
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Parsed::Bad(400);
    };
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let (method, path, query) = match parse_request_line(lines.next().unwrap_or("")) {
        Ok(parts) => parts,
        Err(status) => return Parsed::Bad(status),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad(400);
        };
        if !is_token(name) {
            return Parsed::Bad(400);
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let request = Request {
        method,
        path,
        query,
        headers,
    };
    if request.header("transfer-encoding").is_some() {
        return Parsed::Bad(501);
    }
    let body_len = match request.header("content-length") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Parsed::Bad(400),
        },
    };
    if body_len > MAX_BODY {
        return Parsed::Bad(413);
    }
    if buf.len() < body_start + body_len {
        return Parsed::Incomplete;
    }
    Parsed::Done(request)
}

/// The handler: a pure function from request to answer.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A running server; `stop` ends its threads.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// A byte written here wakes the reader thread's poll(2) to see `stop`.
    wake: UnixStream,
    /// Connections that may wait at once; a reload that adds bots lowers it.
    max_pending: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

struct Pending {
    stream: TcpStream,
    buf: Vec<u8>,
    since: Instant,
}

type Job = (TcpStream, Request);

impl Server {
    /// Serves `listener` with `handler` until `stop`.
    /// At most `max_pending` connections wait for their request at once
    /// (never more than MAX_PENDING), so the server stays below the
    /// process's open-file limit and leaves descriptors for the fleet.
    pub fn start(
        listener: TcpListener,
        handler: Handler,
        max_pending: usize,
    ) -> io::Result<Server> {
        let max_pending = Arc::new(AtomicUsize::new(max_pending.clamp(1, MAX_PENDING)));
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(QUEUE);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut threads = Vec::with_capacity(HANDLERS + 1);
        for n in 0..HANDLERS {
            let rx = Arc::clone(&job_rx);
            let handler = Arc::clone(&handler);
            let spawned = std::thread::Builder::new()
                .name(format!("health-{n}"))
                .stack_size(256 * 1024)
                .spawn(move || answer_loop(&rx, &handler));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Dropping job_tx ends the handlers already started.
                    drop(job_tx);
                    join_all(threads);
                    return Err(e);
                }
            }
        }
        let reader_stop = Arc::clone(&stop);
        let reader_cap = Arc::clone(&max_pending);
        let (wake, woken) = match UnixStream::pair().and_then(|(w, r)| {
            r.set_nonblocking(true)?;
            Ok((w, r))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                drop(job_tx);
                join_all(threads);
                return Err(e);
            }
        };
        let spawned = std::thread::Builder::new()
            .name("health-accept".into())
            .stack_size(256 * 1024)
            .spawn(move || read_loop(&listener, &woken, &job_tx, &reader_stop, &reader_cap));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                join_all(threads);
                return Err(e);
            }
        }
        Ok(Server {
            addr,
            stop,
            wake,
            max_pending,
            threads,
        })
    }

    /// Changes how many connections may wait at once (clamped to
    /// 1..=MAX_PENDING); the oldest beyond it go at the next accept.
    pub fn set_max_pending(&self, n: usize) {
        self.max_pending
            .store(n.clamp(1, MAX_PENDING), Ordering::Relaxed);
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drops waiting clients, and joins every thread (at
    /// most about one poll interval plus one answer being written).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = (&self.wake).write_all(b"x") {
            // Then it sees the flag at its next connection only.
            log::warn!("health: cannot wake the reader thread to stop: {e}");
        }
        join_all(self.threads);
    }
}

fn join_all(threads: Vec<JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            log::error!("A health server thread panicked");
        }
    }
}

fn answer_loop(jobs: &Mutex<Receiver<Job>>, handler: &Handler) {
    loop {
        let job = {
            let rx = match jobs.lock() {
                Ok(rx) => rx,
                // Another handler panicked while waiting; the receiver is intact.
                Err(poisoned) => poisoned.into_inner(),
            };
            rx.recv()
        };
        let Ok((stream, request)) = job else {
            return; // the reader thread is gone: the server stopped
        };
        let response = handler(&request);
        write_response(stream, &response, request.method == "HEAD");
    }
}

fn write_response(mut stream: TcpStream, response: &Response, head_only: bool) {
    let prepared = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if let Err(e) = prepared {
        log::debug!("health: cannot prepare a connection for the answer: {e}");
        return;
    }
    if let Err(e) = stream
        .write_all(&response.encode(head_only))
        .and_then(|()| stream.flush())
    {
        log::debug!("health: answer not delivered: {e}");
    }
}

/// Answers from the reader thread without ever blocking it: the socket is
/// non-blocking and a short error answer fits in any send buffer; a client
/// that does not take it loses it.
fn reject(mut stream: TcpStream, status: u16) {
    let response = Response::text(status, "text/plain", format!("{}\n", reason(status)));
    if stream.write_all(&response.encode(false)).is_err() {
        // The client is gone or not reading; it was misbehaving anyway.
    }
}

fn read_loop(
    listener: &TcpListener,
    woken: &UnixStream,
    jobs: &SyncSender<Job>,
    stop: &AtomicBool,
    max_pending: &AtomicUsize,
) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut chunk = [0u8; 4096];
    // After an accept error the listener is left out of poll(2) (fd -1 is
    // ignored) until this instant.
    let mut accept_paused: Option<Instant> = None;
    let mut accept_errors = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut fds = Vec::with_capacity(pending.len() + 2);
        if accept_paused.is_some_and(|until| Instant::now() >= until) {
            accept_paused = None;
        }
        fds.push(if accept_paused.is_some() {
            -1
        } else {
            listener.as_raw_fd()
        });
        fds.extend(pending.iter().map(|p| p.stream.as_raw_fd()));
        fds.push(woken.as_raw_fd());
        // Nothing with a deadline: sleep until a connection or `stop`.
        let timeout = if pending.is_empty() && accept_paused.is_none() {
            -1
        } else {
            POLL_MS
        };
        let ready = match crate::sys::poll_readable(&fds, timeout) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("health: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                continue;
            }
        };
        if ready.last().copied().unwrap_or(false) {
            let mut drain = [0u8; 16];
            while matches!((&*woken).read(&mut drain), Ok(n) if n > 0) {}
        }
        let now = Instant::now();
        let mut still = VecDeque::with_capacity(pending.len() + 8);
        for (n, mut p) in pending.drain(..).enumerate() {
            if !ready.get(n + 1).copied().unwrap_or(false) {
                if now.duration_since(p.since) > HEAD_TIMEOUT {
                    reject(p.stream, 408);
                } else {
                    still.push_back(p);
                }
                continue;
            }
            let mut closed = false;
            loop {
                match p.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(k) => {
                        p.buf.extend_from_slice(&chunk[..k]);
                        if p.buf.len() > MAX_HEAD + MAX_BODY {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            match parse(&p.buf) {
                Parsed::Done(request) => match jobs.try_send((p.stream, request)) {
                    Ok(()) => {}
                    Err(TrySendError::Full((stream, _))) => reject(stream, 503),
                    Err(TrySendError::Disconnected(_)) => return,
                },
                Parsed::Bad(status) => reject(p.stream, status),
                Parsed::Incomplete if closed => {}
                Parsed::Incomplete if now.duration_since(p.since) > HEAD_TIMEOUT => {
                    reject(p.stream, 408);
                }
                Parsed::Incomplete => still.push_back(p),
            }
        }
        pending = still;
        // A cap lowered by a reload applies within a round, not only at
        // the next accept.
        let cap = max_pending.load(Ordering::Relaxed);
        send_away_beyond(&mut pending, cap);
        if accept_paused.is_none() && ready.first().copied().unwrap_or(false) {
            if let Err(e) = accept_all(listener, &mut pending, cap) {
                accept_errors += 1;
                if accept_errors == 1 || accept_errors % 1000 == 0 {
                    log::warn!(
                        "health: accept failed ({e}; {accept_errors} time(s)); pausing accepts for {} ms",
                        ACCEPT_PAUSE.as_millis()
                    );
                }
                // Out of descriptors: the oldest waiting client gives one back.
                if let Some(oldest) = pending.pop_front() {
                    reject(oldest.stream, 503);
                }
                accept_paused = Some(Instant::now() + ACCEPT_PAUSE);
            }
        }
    }
}

/// Sends away (503) the oldest waiting clients beyond `cap`: they have had
/// the longest chance.
fn send_away_beyond(pending: &mut VecDeque<Pending>, cap: usize) {
    while pending.len() > cap {
        let Some(oldest) = pending.pop_front() else {
            break;
        };
        reject(oldest.stream, 503);
    }
}

/// Accepts every connection waiting; an error other than "none left" is
/// returned so the caller pauses instead of retrying at once.
fn accept_all(
    listener: &TcpListener,
    pending: &mut VecDeque<Pending>,
    max_pending: usize,
) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = stream.set_nonblocking(true) {
                    log::debug!("health: cannot make a connection non-blocking: {e}");
                    continue;
                }
                pending.push_back(Pending {
                    stream,
                    buf: Vec::new(),
                    since: Instant::now(),
                });
                send_away_beyond(pending, max_pending);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EMFILE and friends: the rest waits in the backlog.
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_connection_cap_sends_the_oldest_waiting_clients_away() {
        use std::io::{Read, Write};
        use std::net::TcpStream;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let handler: Handler = Arc::new(|_| Response::text(200, "text/plain", "ok\n".into()));
        let server = Server::start(listener, handler, 100).expect("the server starts");
        let addr = server.addr();
        // Idle clients, all waiting under the cap of 100.
        let idle: Vec<TcpStream> = (0..6)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        // Accepted in the order they connected, before or after this.
        server.set_max_pending(2);
        let mut last = TcpStream::connect(addr).expect("connect");
        let answer = |mut s: &TcpStream| {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("a read timeout");
            let mut out = String::new();
            let _eof_or_timeout = s.read_to_string(&mut out);
            out
        };
        // The five oldest go at once (the newest one and `last` stay).
        for s in &idle[..5] {
            assert!(answer(s).starts_with("HTTP/1.1 503"), "sent away");
        }
        last.write_all(b"GET /x HTTP/1.1\r\n\r\n").expect("send");
        assert!(answer(&last).starts_with("HTTP/1.1 200"), "served");
        server.stop();
    }

    #[test]
    fn parses_whole_requests_and_waits_for_partial_ones() {
        assert_eq!(parse(b"GET /ping HTTP/1.1\r\nHost: x"), Parsed::Incomplete);
        let Parsed::Done(r) =
            parse(b"POST /restart?bot=2 HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n")
        else {
            panic!("a whole request parses");
        };
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/restart");
        assert_eq!(r.query_param("bot"), Some("2"));
        assert_eq!(r.header("authorization"), Some("Bearer t"));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            Parsed::Incomplete
        );
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde"),
            Parsed::Done(_)
        ));
    }

    #[test]
    fn rejects_garbage_early_and_oversized_requests() {
        assert_eq!(parse(b"\x16\x03\x01garbage\n"), Parsed::Bad(400));
        assert_eq!(parse(b"GET /x HTTP/2.0\r\n\r\n"), Parsed::Bad(505));
        assert_eq!(parse(b"GET x HTTP/1.1\r\n\r\n"), Parsed::Bad(400));
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(parse(long.as_bytes()), Parsed::Bad(431));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"),
            Parsed::Bad(413)
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Bad(501)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Parsed::Bad(400)
        );
    }
}
