//! The health side of the supervisor: the HTTP server on HEALTH_BIND:PORT
//! (`GET /`, `/ping`, `/health`, `/metrics`, `POST /restart`), the optional
//! KEEPALIVE_URL self-ping, and the systemd watchdog thread. The supervisor
//! starts it once, hands it every reloaded `Settings` through `reconfigure`,
//! and stops it last.
//!
//! It owns its threads and sockets, and reads the supervisor's `FleetView`
//! only to clone it. It must never stop the fleet: a port that cannot be
//! bound, a keep-alive URL that fails, a systemd that is not there are all
//! logged and lived with. It must never put a token in an answer or a log
//! line, and it acts on the fleet only through `Event::Restart` (and asks
//! the loop whether it turns with `Event::Alive`, for the watchdog).

pub mod metrics;
pub mod routes;
pub mod server;

use crate::config::Settings;
use crate::fleet::{Event, FleetView};
use routes::{Context, Live};
use server::Server;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How many ports after PORT are tried when it is busy.
pub const PORT_FALLBACKS: u16 = 2;

/// Why no port could be bound.
#[derive(Debug)]
pub enum BindError {
    /// Every candidate port failed; the last error for each.
    AllBusy {
        bind: IpAddr,
        tried: Vec<(u16, std::io::Error)>,
    },
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::AllBusy { bind, tried } => {
                write!(f, "cannot listen on {bind}:")?;
                for (n, (port, e)) in tried.iter().enumerate() {
                    let sep = if n == 0 { " " } else { ", " };
                    write!(f, "{sep}port {port} ({e})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for BindError {}

/// Binds `bind:port`, then the next `PORT_FALLBACKS` ports.
pub fn bind_with_fallback(bind: IpAddr, port: u16) -> Result<TcpListener, BindError> {
    let mut tried = Vec::new();
    for offset in 0..=PORT_FALLBACKS {
        let Some(candidate) = port.checked_add(offset) else {
            break;
        };
        match TcpListener::bind(SocketAddr::new(bind, candidate)) {
            Ok(l) => return Ok(l),
            Err(e) => tried.push((candidate, e)),
        }
        if port == 0 {
            break; // the kernel picks; there is nothing to fall back to
        }
    }
    Err(BindError::AllBusy { bind, tried })
}

/// The KEEPALIVE_URL pinger; dropping its sender ends the thread.
struct Keepalive {
    url: String,
    every: Duration,
    stop: Sender<()>,
    /// Detached on stop; kept so the thread is named in the struct.
    thread: std::thread::JoinHandle<()>,
}

impl Keepalive {
    fn start(url: &str, every: Duration) -> Option<Keepalive> {
        let (stop, rx) = mpsc::channel();
        let target = url.to_string();
        let every = every.max(Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name("keepalive".into())
            .spawn(move || keepalive_loop(&target, every, &rx));
        match thread {
            Ok(thread) => Some(Keepalive {
                url: url.to_string(),
                every,
                stop,
                thread,
            }),
            Err(e) => {
                log::warn!("Cannot start the KEEPALIVE_URL thread: {e}");
                None
            }
        }
    }

    /// Ends the thread without waiting for it: a ping in flight may take
    /// its full timeout, and shutdown must not wait for a remote host.
    fn stop(self) {
        drop(self.stop);
        drop(self.thread);
    }
}

fn keepalive_loop(url: &str, every: Duration, stop: &Receiver<()>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10).min(every)))
        .build()
        .into();
    loop {
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match agent.get(url).call() {
            Ok(resp) if resp.status().is_success() => {
                log::debug!("Keep-alive ping: {}", resp.status());
            }
            Ok(resp) => log::warn!("Keep-alive ping answered {}", resp.status()),
            Err(e) => log::warn!("Keep-alive ping failed: {e}"),
        }
    }
}

/// The running health side.
pub struct Health {
    ctx: Arc<Context>,
    bind: IpAddr,
    port: u16,
    server: Option<Server>,
    keepalive: Option<Keepalive>,
    watchdog: Option<crate::sdnotify::Watchdog>,
    /// Connections that may wait for their request at once.
    max_pending: usize,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("server", &self.server)
            .finish()
    }
}

fn live_of(settings: &Settings) -> Live {
    Live {
        auth_token: settings.health_auth_token.clone(),
        unhealthy_threshold: settings.unhealthy_threshold,
    }
}

fn serve(ctx: &Arc<Context>, bind: IpAddr, port: u16, max_pending: usize) -> Option<Server> {
    let listener = match bind_with_fallback(bind, port) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("Health server disabled, the fleet runs on without HTTP: {e}");
            return None;
        }
    };
    let handler_ctx = Arc::clone(ctx);
    let handler: server::Handler = Arc::new(move |req| routes::route(&handler_ctx, req));
    match Server::start(listener, handler, max_pending) {
        Ok(server) => {
            log::info!("Health server listening on http://{}", server.addr());
            if server.addr().port() != port && port != 0 {
                log::warn!(
                    "Port {port} was busy: the health server uses port {} instead",
                    server.addr().port()
                );
            }
            Some(server)
        }
        Err(e) => {
            log::warn!("Health server disabled, the fleet runs on without HTTP: {e}");
            None
        }
    }
}

impl Health {
    /// Binds HEALTH_BIND:PORT (then PORT+1, PORT+2); without a free port
    /// the fleet runs on without HTTP and the log says so. Also starts the
    /// KEEPALIVE_URL pinger and the systemd watchdog when they are asked for.
    /// At most `max_pending` connections wait at once (the supervisor keeps
    /// this below its open-file limit).
    pub fn start(
        settings: &Settings,
        view: Arc<Mutex<FleetView>>,
        tx: Sender<Event>,
        max_pending: usize,
    ) -> Health {
        // The systemd watchdog asks the supervisor loop itself.
        let probe = tx.clone();
        let alive = move |answer: Sender<()>| probe.send(Event::Alive(answer)).is_ok();
        let ctx = Arc::new(Context {
            view,
            tx: Mutex::new(tx),
            live: RwLock::new(live_of(settings)),
        });
        let server = serve(&ctx, settings.health_bind, settings.port, max_pending);
        let keepalive = settings
            .keepalive_url
            .as_deref()
            .and_then(|url| Keepalive::start(url, settings.heartbeat_interval));
        Health {
            ctx,
            bind: settings.health_bind,
            port: settings.port,
            server,
            keepalive,
            watchdog: crate::sdnotify::start_watchdog(alive),
            max_pending,
        }
    }

    /// Changes the cap on waiting connections (the supervisor lowers it when
    /// a reload adds bots, so the fleet's pipes still fit the open-file limit).
    pub fn set_max_pending(&mut self, n: usize) {
        self.max_pending = n;
        if let Some(server) = &self.server {
            server.set_max_pending(n);
        }
    }

    /// The address the server listens on, if it could bind.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(Server::addr)
    }

    /// Applies reloaded settings: a new HEALTH_AUTH_TOKEN and
    /// UNHEALTHY_THRESHOLD_SECS at once; a new PORT or HEALTH_BIND rebinds
    /// (the old socket is closed first, so the same port can be taken
    /// again); a new KEEPALIVE_URL or HEARTBEAT_INTERVAL_SECS restarts the
    /// pinger.
    pub fn reconfigure(&mut self, settings: &Settings) {
        let live = live_of(settings);
        match self.ctx.live.write() {
            Ok(mut l) => *l = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
        if settings.port != self.port || settings.health_bind != self.bind {
            log::info!(
                "Health server moves from {}:{} to {}:{}",
                self.bind,
                self.port,
                settings.health_bind,
                settings.port
            );
            if let Some(old) = self.server.take() {
                old.stop();
            }
            self.bind = settings.health_bind;
            self.port = settings.port;
            self.server = serve(&self.ctx, self.bind, self.port, self.max_pending);
        } else if self.server.is_none() {
            // The ports may have been freed since; try again on a reload.
            self.server = serve(&self.ctx, self.bind, self.port, self.max_pending);
        }
        let wanted = settings.keepalive_url.as_deref().map(|u| {
            (
                u.to_string(),
                settings.heartbeat_interval.max(Duration::from_secs(1)),
            )
        });
        let current = self.keepalive.as_ref().map(|k| (k.url.clone(), k.every));
        if wanted != current {
            if let Some(k) = self.keepalive.take() {
                k.stop();
            }
            self.keepalive = wanted.and_then(|(url, every)| Keepalive::start(&url, every));
        }
    }

    /// Stops serving, pinging and the watchdog.
    pub fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        if let Some(k) = self.keepalive.take() {
            k.stop();
        }
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the health server");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        s.write_all(request.as_bytes()).expect("send the request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read the answer");
        out
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("an ephemeral port")
    }

    #[test]
    fn reconfigure_rebinds_and_takes_a_new_token_at_once() {
        let settings = Settings {
            port: free_port(),
            health_bind: IpAddr::from([127, 0, 0, 1]),
            health_auth_token: Some("first-token".into()),
            ..Settings::default()
        };
        let view = Arc::new(Mutex::new(FleetView::default()));
        let (tx, rx) = mpsc::channel();
        let mut health = Health::start(&settings, view, tx, server::MAX_PENDING);
        let first = health.addr().expect("the server is up");
        let restart = |addr, token: &str| {
            exchange(
                addr,
                &format!("POST /restart HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"),
            )
        };
        assert!(restart(first, "first-token").starts_with("HTTP/1.1 202"));
        assert!(matches!(rx.try_recv(), Ok(Event::Restart { index: None })));

        let moved = Settings {
            port: free_port(),
            health_auth_token: Some("second-token".into()),
            ..settings.clone()
        };
        health.reconfigure(&moved);
        let second = health.addr().expect("the server is up again");
        assert_eq!(second.port(), moved.port);
        assert!(
            std::net::TcpStream::connect(first).is_err(),
            "the old port is closed"
        );
        assert!(restart(second, "first-token").starts_with("HTTP/1.1 401"));
        assert!(restart(second, "second-token").starts_with("HTTP/1.1 202"));
        health.stop();
        assert!(std::net::TcpStream::connect(second).is_err(), "stopped");
    }
}
