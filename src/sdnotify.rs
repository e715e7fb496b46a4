//! systemd's sd_notify protocol without a crate: one datagram per
//! notification to the Unix socket named by NOTIFY_SOCKET (a path, or
//! `@name` for an abstract socket on Linux), and the watchdog keep-alive
//! (`WATCHDOG=1` at half of WATCHDOG_USEC). It owns nothing else and must
//! never fail the caller: without NOTIFY_SOCKET every call is a no-op, and a
//! send that fails is logged at debug level only, because a missing or
//! restarted systemd must not stop the fleet.

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// Why one notification could not be delivered.
#[derive(Debug)]
pub enum NotifyError {
    /// No datagram socket could be created.
    Socket(std::io::Error),
    /// The address in NOTIFY_SOCKET is not usable (e.g. abstract off Linux).
    Address(String),
    /// The datagram was not sent.
    Send(std::io::Error),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::Socket(e) => write!(f, "cannot create a datagram socket: {e}"),
            NotifyError::Address(why) => write!(f, "bad NOTIFY_SOCKET: {why}"),
            NotifyError::Send(e) => write!(f, "cannot send to NOTIFY_SOCKET: {e}"),
        }
    }
}

impl std::error::Error for NotifyError {}

/// Sends one notification (`READY=1`, `STOPPING=1`, `STATUS=...`); a no-op
/// when NOTIFY_SOCKET is not set. `RELOADING=1` gets the `MONOTONIC_USEC=`
/// that systemd 253+ asks for, so callers need not know about it.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut message = state.to_string();
    if message.lines().any(|l| l == "RELOADING=1") && !message.contains("MONOTONIC_USEC=") {
        match crate::sys::monotonic_usec() {
            Ok(usec) => message.push_str(&format!("\nMONOTONIC_USEC={usec}")),
            Err(e) => log::debug!("sd_notify: no CLOCK_MONOTONIC for RELOADING=1: {e}"),
        }
    }
    if let Err(e) = send(&socket.to_string_lossy(), &message) {
        log::debug!("sd_notify {:?} not delivered: {e}", first_line(state));
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Sends `message` to the socket `address` (a path or `@abstract`).
pub fn send(address: &str, message: &str) -> Result<(), NotifyError> {
    let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
    if let Some(name) = address.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(|e| NotifyError::Address(e.to_string()))?;
            socket
                .send_to_addr(message.as_bytes(), &addr)
                .map_err(NotifyError::Send)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _unused = name;
            return Err(NotifyError::Address(
                "abstract sockets exist only on Linux".into(),
            ));
        }
    }
    socket
        .send_to(message.as_bytes(), address)
        .map_err(NotifyError::Send)?;
    Ok(())
}

/// The keep-alive interval systemd asks for: half of WATCHDOG_USEC, when
/// WATCHDOG_USEC is set and WATCHDOG_PID is unset or names this process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// The running watchdog thread; dropping it (or `stop`) ends the thread.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Ends the keep-alive thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::debug!("sd_notify watchdog thread panicked");
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts sending `WATCHDOG=1` at half of WATCHDOG_USEC, when systemd asked
/// for it (NOTIFY_SOCKET and WATCHDOG_USEC set, WATCHDOG_PID ours or unset).
///
/// The pings come from their own thread for as long as the process lives
/// (until `stop`): they prove the process is scheduled, not that the
/// supervisor loop is making progress, because the loop publishes its view
/// only on events and an idle fleet is not a stuck one.
pub fn start_watchdog() -> Option<Watchdog> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    let every = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())?;
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sd-watchdog".into())
        .stack_size(64 * 1024)
        .spawn(move || watchdog_loop(&rx, every));
    match thread {
        Ok(t) => {
            log::debug!(
                "sd_notify watchdog: WATCHDOG=1 every {} ms",
                every.as_millis()
            );
            Some(Watchdog {
                stop: Some(tx),
                thread: Some(t),
            })
        }
        Err(e) => {
            log::warn!("Cannot start the systemd watchdog thread: {e}");
            None
        }
    }
}

fn watchdog_loop(stop: &Receiver<()>, every: Duration) {
    loop {
        notify("WATCHDOG=1");
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_and_respects_the_pid() {
        assert_eq!(
            watchdog_interval(Some("60000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("botfleet-sdn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind a datagram socket");
        send(&path.to_string_lossy(), "READY=1").expect("send to a path");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).expect("the datagram arrives");
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).expect("temp dir removable");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("botfleet-sdn-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("an abstract address");
            let server = UnixDatagram::bind_addr(&addr).expect("bind an abstract socket");
            send(&format!("@{name}"), "STOPPING=1").expect("send to an abstract socket");
            let n = server.recv(&mut buf).expect("the datagram arrives");
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
        assert!(send("/nonexistent/botfleet.sock", "READY=1").is_err());
    }
}
