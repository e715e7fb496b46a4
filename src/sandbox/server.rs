//! The sandbox's HTTP/1.1 server: one thread per connection, keep-alive,
//! request bodies by Content-Length or chunked, responses from bytes or
//! streamed (chunked). It replaces tiny_http here because tiny_http 0.12's
//! connection pool can leave a new connection queued behind busy keep-alive
//! connections (a lost wakeup when several connections arrive at once), and
//! a Bot API emulator holds many long polls open at once: every connection
//! must get its own thread at once. It must never listen beyond the address
//! it is given, or keep a connection after the sandbox stops.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Stack of a connection thread.
const CONNECTION_STACK: usize = 128 * 1024;

/// A status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCode(pub u16);

/// One response header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl Header {
    pub fn from_bytes(name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Header, ()> {
        let name = std::str::from_utf8(name.as_ref()).map_err(|_| ())?;
        let value = std::str::from_utf8(value.as_ref()).map_err(|_| ())?;
        let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
        if name.is_empty() || bad(name) || bad(value) {
            return Err(());
        }
        Ok(Header {
            name: name.to_string(),
            value: value.to_string(),
        })
    }
}

enum Body {
    Bytes(Vec<u8>),
    Stream(Box<dyn Read + Send>),
}

/// A response to write.
pub struct Response {
    status: u16,
    headers: Vec<Header>,
    body: Body,
}

impl Response {
    pub fn from_data(data: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            headers: vec![],
            body: Body::Bytes(data.into()),
        }
    }

    /// A streamed (chunked) body.
    pub fn new(
        status: StatusCode,
        headers: Vec<Header>,
        reader: impl Read + Send + 'static,
        _length: Option<usize>,
        _unused: Option<()>,
    ) -> Response {
        Response {
            status: status.0,
            headers,
            body: Body::Stream(Box::new(reader)),
        }
    }

    pub fn with_status_code(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    pub fn with_header(mut self, header: Header) -> Response {
        self.headers.push(header);
        self
    }

    pub fn add_header(&mut self, header: Header) {
        self.headers.push(header);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// How the request body is framed.
enum Framing {
    Length(u64),
    Chunked,
}

/// The body of a request, read from the connection.
struct BodyReader {
    conn: BufReader<TcpStream>,
    framing: Framing,
    /// Bytes left in the current chunk (chunked) or in the body (length).
    left: u64,
    done: bool,
}

impl BodyReader {
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut line = String::new();
        self.conn.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let n = u64::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if n == 0 {
            // Trailers until an empty line.
            loop {
                line.clear();
                if self.conn.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    break;
                }
            }
            self.done = true;
        }
        self.left = n;
        Ok(())
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            match self.framing {
                Framing::Length(_) => {
                    self.done = true;
                    return Ok(0);
                }
                Framing::Chunked => {
                    self.next_chunk()?;
                    if self.done {
                        return Ok(0);
                    }
                }
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.conn.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
        self.left -= n as u64;
        if self.left == 0 {
            if let Framing::Chunked = self.framing {
                let mut crlf = String::new();
                self.conn.read_line(&mut crlf)?;
            }
        }
        Ok(n)
    }
}

/// One request. Answer it with `respond`, or end the connection with
/// `close`; dropping it unanswered closes the connection.
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body_length: Option<usize>,
    body: BodyReader,
    writer: TcpStream,
    keep_alive: bool,
    /// Where the connection (both halves) goes back after a response, for
    /// its next request.
    back: std::sync::mpsc::Sender<(BufReader<TcpStream>, TcpStream)>,
}

impl Request {
    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The first header of this name (case-insensitive), or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    /// The declared Content-Length, if any.
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    pub fn as_reader(&mut self) -> &mut dyn Read {
        &mut self.body
    }

    /// The socket, to ask whether the client is still there.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.writer.as_raw_fd()
    }

    /// Writes the response; the connection then serves its next request.
    pub fn respond(mut self, response: Response) -> io::Result<()> {
        // Read what is left of the body so the next request starts clean; a
        // large unread body (a refused upload) ends the connection instead.
        let mut reusable = self.keep_alive;
        if !self.body.done {
            // Only a small rest of known length is worth reading: a client
            // that was refused a large upload may never send it.
            let small =
                matches!(self.body.framing, Framing::Length(_)) && self.body.left <= 64 * 1024;
            if small {
                match io::copy(&mut (&mut self.body).take(64 * 1024), &mut io::sink()) {
                    Ok(_) if self.body.left == 0 => {}
                    _ => reusable = false,
                }
            } else {
                reusable = false;
            }
        }
        let result = write_response(&mut self.writer, response, reusable);
        if result.is_ok() && reusable {
            let Request {
                body, back, writer, ..
            } = self;
            if back.send((body.conn, writer)).is_err() {
                // The connection loop is gone; the socket closes with us.
            }
            return result;
        }
        if self.writer.shutdown(Shutdown::Both).is_err() {
            // Already closed by the peer.
        }
        result
    }

    /// Closes the connection without a reply (the `drop` fault).
    pub fn close(self) {
        if self.writer.shutdown(Shutdown::Both).is_err() {
            // Already closed by the peer.
        }
    }
}

fn write_response(w: &mut TcpStream, response: Response, keep_alive: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for h in &response.headers {
        head.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    match response.body {
        Body::Bytes(bytes) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
            let mut out = head.into_bytes();
            out.extend_from_slice(&bytes);
            w.write_all(&out)?;
        }
        Body::Stream(mut reader) => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            w.write_all(head.as_bytes())?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                w.write_all(format!("{n:x}\r\n").as_bytes())?;
                w.write_all(&buf[..n])?;
                w.write_all(b"\r\n")?;
            }
            w.write_all(b"0\r\n\r\n")?;
        }
    }
    w.flush()
}

/// A request head: method, target, version, headers.
type Head = (String, String, String, Vec<(String, String)>);

/// Reads one request head; None at a clean end of the connection.
fn read_head(conn: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    let mut total = 0usize;
    let mut line = String::new();
    // Skip blank lines between requests, as RFC 9112 allows.
    loop {
        line.clear();
        let n = conn.read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if !line.trim().is_empty() {
            break;
        }
        if total > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(url), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let (method, url, version) = (method.to_string(), url.to_string(), version.to_string());
    let mut headers = vec![];
    loop {
        line.clear();
        let n = conn.read_line(&mut line)?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "head cut short or too large",
            ));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((method, url, version, headers)))
}

/// Serves one connection: its requests one after another.
fn connection(stream: TcpStream, stop: &AtomicBool, handler: &(dyn Fn(Request) + Send + Sync)) {
    if stream.set_nodelay(true).is_err() {
        // Only latency suffers.
    }
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut conn = BufReader::new(read_half);
    // One write half for all the connection's requests (not a dup(2) and a
    // close(2) per request).
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let (back_tx, back_rx) = std::sync::mpsc::channel();
    while !stop.load(Ordering::SeqCst) {
        let (method, url, version, headers) = match read_head(&mut conn) {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => break,
        };
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let chunked =
            find("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = find("Content-Length").and_then(|v| v.parse::<u64>().ok());
        let keep_alive = match find("Connection").map(str::to_ascii_lowercase) {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => version == "HTTP/1.1",
        };
        if find("Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            break;
        }
        let framing = if chunked {
            Framing::Chunked
        } else {
            Framing::Length(length.unwrap_or(0))
        };
        let left = match framing {
            Framing::Length(n) => n,
            Framing::Chunked => 0,
        };
        let body = BodyReader {
            conn,
            done: matches!(framing, Framing::Length(0)),
            framing,
            left,
        };
        let request = Request {
            method,
            url,
            headers,
            body_length: if chunked {
                None
            } else {
                length.map(|n| n as usize)
            },
            body,
            writer,
            keep_alive,
            back: back_tx.clone(),
        };
        handler(request);
        // The request sent the connection back if it may serve another one.
        match back_rx.try_recv() {
            Ok((c, w)) => (conn, writer) = (c, w),
            Err(_) => break,
        }
    }
    if stream.shutdown(Shutdown::Both).is_err() {
        // Already closed.
    }
}

/// A listening server.
pub struct Server {
    listener: TcpListener,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn bind(addr: SocketAddr) -> io::Result<Server> {
        Ok(Server {
            listener: TcpListener::bind(addr)?,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `stop`, each connection on a thread of its own.
    /// `active` counts live connection threads.
    pub fn serve(
        &self,
        handler: Arc<dyn Fn(Request) + Send + Sync>,
        active: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        for stream in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let handler = Arc::clone(&handler);
            let stop = Arc::clone(&self.stop);
            let count = Arc::clone(&active);
            count.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name("sandbox-conn".into())
                .stack_size(CONNECTION_STACK)
                .spawn(move || {
                    connection(stream, &stop, &*handler);
                    count.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                active.fetch_sub(1, Ordering::SeqCst);
                log::warn!("sandbox: cannot start a connection thread: {e}");
            }
        }
    }

    /// Makes `serve` return: sets the flag and wakes the accept call.
    pub fn unblock(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(addr) = self.listener.local_addr() {
            let target = match addr {
                SocketAddr::V4(a) if a.ip().is_unspecified() => {
                    SocketAddr::from(([127, 0, 0, 1], a.port()))
                }
                SocketAddr::V6(a) if a.ip().is_unspecified() => {
                    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
                }
                other => other,
            };
            if TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_err() {
                // The accept loop may have ended already.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_refuse_line_breaks() {
        assert!(Header::from_bytes("X", "a\r\nB: c").is_err());
        assert!(Header::from_bytes("", "a").is_err());
        assert_eq!(
            Header::from_bytes("Retry-After", "3"),
            Ok(Header {
                name: "Retry-After".into(),
                value: "3".into()
            })
        );
    }

    #[test]
    fn serves_keep_alive_chunked_bodies_and_streams() {
        let server = Arc::new(Server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind"));
        let addr = server.local_addr().expect("addr");
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = Arc::clone(&server);
        let a = Arc::clone(&active);
        let serving = std::thread::spawn(move || {
            s.serve(
                Arc::new(|mut rq: Request| {
                    let mut body = Vec::new();
                    let _ = rq.as_reader().read_to_end(&mut body);
                    let reply = if rq.url() == "/stream" {
                        Response::new(StatusCode(200), vec![], &b"streamed"[..], None, None)
                    } else {
                        Response::from_data(format!("{} {} {}", rq.method(), rq.url(), body.len()))
                    };
                    let _ = rq.respond(reply);
                }),
                a,
            )
        });
        let mut c = TcpStream::connect(addr).expect("connect");
        c.write_all(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\nyou\r\n0\r\n\r\nGET /stream HTTP/1.1\r\nConnection: close\r\n\r\n").expect("write");
        let mut all = String::new();
        c.read_to_string(&mut all).expect("read");
        assert!(all.contains("POST /a 3"), "{all}");
        assert!(all.contains("POST /b 5"), "{all}");
        assert!(
            all.contains("Transfer-Encoding: chunked\r\n\r\n8\r\nstreamed\r\n0\r\n\r\n"),
            "{all}"
        );
        server.unblock();
        serving.join().expect("serve returns");
    }
}
