//! systemd's sd_notify protocol without a crate: one datagram per
//! notification to the Unix socket named by NOTIFY_SOCKET (a path, or
//! `@name` for an abstract socket on Linux), and the watchdog keep-alive
//! (`WATCHDOG=1` at half of WATCHDOG_USEC). It owns nothing else and must
//! never fail the caller: without NOTIFY_SOCKET every call is a no-op, and a
//! send that fails is logged at debug level only, because a missing or
//! restarted systemd must not stop the fleet.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Wakes the thread (it also carries the loop's answers).
    wake: Sender<()>,
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Ends the keep-alive thread and waits for it (at once, even while it
    /// waits for the loop's answer).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if self.wake.send(()).is_err() {
            // The thread is gone already.
        }
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
/// Before each keep-alive the thread calls `ask` with a sender to answer
/// on, and waits up to a quarter of WATCHDOG_USEC for `()`: the supervisor
/// answers from its loop, so a stuck loop withholds the keep-alive and
/// systemd restarts the service, while an idle fleet still answers.
/// `ask` returns false when the question could not be put.
pub fn start_watchdog(ask: impl Fn(Sender<()>) -> bool + Send + 'static) -> Option<Watchdog> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    let every = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())?;
    let (wake, rx) = mpsc::channel::<()>();
    let stopping = Arc::new(AtomicBool::new(false));
    let (answers, stop_flag) = (wake.clone(), Arc::clone(&stopping));
    let thread = std::thread::Builder::new()
        .name("sd-watchdog".into())
        .stack_size(64 * 1024)
        .spawn(move || watchdog_loop(&rx, &answers, &stop_flag, every, &ask, &notify));
    match thread {
        Ok(t) => {
            log::debug!(
                "sd_notify watchdog: WATCHDOG=1 every {} ms",
                every.as_millis()
            );
            Some(Watchdog {
                wake,
                stopping,
                thread: Some(t),
            })
        }
        Err(e) => {
            log::warn!("Cannot start the systemd watchdog thread: {e}");
            None
        }
    }
}

/// Every `every`: asks, and sends `WATCHDOG=1` through `send` when the
/// answer comes within half of `every`; else logs (once per stall) and
/// sends nothing. `rx` gets the answers (late ones are ignored) and the
/// wake-up of `stopping`.
fn watchdog_loop(
    rx: &Receiver<()>,
    answers: &Sender<()>,
    stopping: &AtomicBool,
    every: Duration,
    ask: &dyn Fn(Sender<()>) -> bool,
    send: &dyn Fn(&str),
) {
    let mut stalled = false;
    loop {
        while rx.try_recv().is_ok() {} // late answers to an earlier question
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let answered = ask(answers.clone()) && rx.recv_timeout(every / 2).is_ok();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if answered {
            if stalled {
                log::warn!(
                    "the supervisor loop answers again; systemd watchdog keep-alives resume"
                );
                stalled = false;
            }
            send("WATCHDOG=1");
        } else if !stalled {
            log::error!(
                "the supervisor loop did not answer within {} ms; withholding the systemd watchdog keep-alive",
                (every / 2).as_millis()
            );
            stalled = true;
        }
        let until = Instant::now() + every;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(()) if stopping.load(Ordering::SeqCst) => return,
                Ok(()) => {} // a late answer
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
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

    #[test]
    fn keep_alives_go_only_while_the_loop_answers() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Mutex;
        let asked = AtomicUsize::new(0);
        let stopping = AtomicBool::new(false);
        let (answers, rx) = mpsc::channel::<()>();
        // Answers, stalls twice, answers twice; stops when asked a 6th time.
        let ask = |answer: Sender<()>| {
            let n = asked.fetch_add(1, Ordering::SeqCst);
            if n == 5 {
                stopping.store(true, Ordering::SeqCst);
            }
            if !(1..=2).contains(&n) {
                answer.send(()).expect("the loop holds the receiver");
            }
            true
        };
        let sent = Mutex::new(Vec::new());
        let send = |m: &str| sent.lock().expect("not poisoned").push(m.to_string());
        watchdog_loop(
            &rx,
            &answers,
            &stopping,
            Duration::from_millis(2),
            &ask,
            &send,
        );
        assert_eq!(asked.load(Ordering::SeqCst), 6);
        assert_eq!(
            sent.lock().expect("not poisoned").len(),
            3,
            "keep-alives for answers 0, 3 and 4 only"
        );
    }
}
