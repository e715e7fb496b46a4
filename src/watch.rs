//! `botfleet status --watch`: a live view of the fleet redrawn every second
//! in a plain terminal (ANSI codes only, from 80 columns, over SSH): per bot
//! its state, updates a second, errors, restarts, inbox depth (when the
//! worker reports `inbox_depth`), RSS, CPU and last poll; the host's load,
//! memory and disk. It reads /health (through `status::fetch`) on a thread
//! of its own and /proc per pid (through `sys`); `q`, Ctrl-C or a signal
//! quits and the terminal is restored on every exit path. It must never
//! signal or change the fleet, and never print a token (/health has none).

use crate::status::{human_bytes, human_secs};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// How often the view is refreshed.
const PERIOD: Duration = Duration::from_secs(1);

/// One sample of the fleet and the host.
#[derive(Debug, Clone)]
pub struct Frame {
    pub at: Instant,
    /// /health, or why it could not be read.
    pub health: Result<Value, String>,
    /// pid → CPU ticks used so far.
    pub cpu: HashMap<u32, u64>,
    pub load: Option<[f64; 3]>,
    /// (total, available) bytes.
    pub memory: Option<(u64, u64)>,
    /// (total, available) bytes of the file system holding `disk_path`.
    pub disk: Option<(u64, u64)>,
}

fn sample(url: &str, disk_path: &Path) -> Frame {
    let health = crate::status::fetch(url).map_err(|e| e.to_string());
    let mut cpu = HashMap::new();
    if let Ok(h) = &health {
        for w in h["workers"].as_array().into_iter().flatten() {
            if let Some(pid) = w["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                if let Some(t) = crate::sys::cpu_ticks(pid) {
                    cpu.insert(pid, t);
                }
            }
        }
    }
    Frame {
        at: Instant::now(),
        health,
        cpu,
        load: crate::sys::host_load(),
        memory: crate::sys::host_memory(),
        disk: crate::sys::disk_space(disk_path)
            .or_else(|_| crate::sys::disk_space(Path::new("/")))
            .ok(),
    }
}

fn cut(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

fn used(total: u64, available: u64) -> String {
    format!(
        "{} / {}",
        human_bytes(total.saturating_sub(available)),
        human_bytes(total)
    )
}

/// The worker's pid as a number, when it has one.
fn pid_of(w: &Value) -> Option<u32> {
    w["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// The lines of one screen: `now` is the current sample, `before` the one
/// a second earlier (for rates), `ticks` clock ticks a second.
pub fn render(now: &Frame, before: Option<&Frame>, ticks: u64, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let clock = crate::logging::utc_timestamp(SystemTime::now());
    let clock = clock.get(11..19).unwrap_or("").to_string();
    let h = match &now.health {
        Ok(h) => h,
        Err(e) => {
            lines.push(format!("botfleet: not answering ({e})"));
            lines.push(format!("{clock} UTC; trying again every second. q quits."));
            return lines.into_iter().map(|l| cut(&l, width)).collect();
        }
    };
    lines.push(format!(
        "botfleet {} · {} · up {} · config {} · {clock} UTC",
        h["bot_version"].as_str().unwrap_or("?"),
        h["status"].as_str().unwrap_or("?"),
        h["uptime_seconds"]
            .as_f64()
            .map_or_else(|| "-".into(), |s| human_secs(s.max(0.0) as u64)),
        h["config_version"].as_str().unwrap_or("?"),
    ));
    let mut host = Vec::new();
    if let Some([a, b, c]) = now.load {
        host.push(format!("load {a:.2} {b:.2} {c:.2}"));
    }
    if let Some((t, a)) = now.memory {
        host.push(format!("mem {}", used(t, a)));
    }
    if let Some((t, a)) = now.disk {
        host.push(format!("disk {}", used(t, a)));
    }
    lines.push(host.join(" · "));
    lines.push(String::new());
    lines.push(format!(
        "{:<6} {:<16} {:<8} {:>6} {:>6} {:>5} {:>5} {:>6} {:>5} {:>8}",
        "bot", "username", "state", "upd/s", "errors", "rstrt", "inbox", "rss", "cpu%", "polled"
    ));
    let previous: HashMap<u64, &Value> = before
        .and_then(|b| b.health.as_ref().ok())
        .and_then(|h| h["workers"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|w| Some((w["index"].as_u64()?, w)))
        .collect();
    let dt = before.map(|b| now.at.duration_since(b.at).as_secs_f64());
    for w in h["workers"].as_array().into_iter().flatten() {
        let index = w["index"].as_u64().unwrap_or(0);
        let prev = previous.get(&index).copied();
        let same_process = prev.is_some_and(|p| pid_of(p).is_some() && pid_of(p) == pid_of(w));
        let rate = match (prev, dt) {
            (Some(p), Some(dt)) if same_process && dt > 0.0 => {
                let (a, b) = (p["updates"].as_u64(), w["updates"].as_u64());
                match (a, b) {
                    (Some(a), Some(b)) if b >= a => format!("{:.1}", (b - a) as f64 / dt),
                    _ => String::new(),
                }
            }
            _ => String::new(),
        };
        let cpu = match (pid_of(w), before, dt) {
            (Some(pid), Some(b), Some(dt)) if dt > 0.0 && ticks > 0 => {
                match (b.cpu.get(&pid), now.cpu.get(&pid)) {
                    (Some(a), Some(c)) if c >= a => {
                        format!("{:.1}", (c - a) as f64 / ticks as f64 / dt * 100.0)
                    }
                    _ => String::new(),
                }
            }
            _ => String::new(),
        };
        let mut state = w["state"].as_str().unwrap_or("?").to_string();
        if w["healthy"] == Value::Bool(false) && state != "failed" {
            state.push('!');
        }
        let username = w["username"]
            .as_str()
            .map_or_else(|| "-".into(), |u| format!("@{u}"));
        lines.push(format!(
            "{:<6} {:<16} {:<8} {:>6} {:>6} {:>5} {:>5} {:>6} {:>5} {:>8}",
            format!("bot-{index}"),
            cut(&username, 16),
            cut(&state, 8),
            rate,
            w["errors"]
                .as_u64()
                .map_or_else(String::new, |n| n.to_string()),
            w["restarts"]
                .as_u64()
                .map_or_else(String::new, |n| n.to_string()),
            w["inbox_depth"]
                .as_u64()
                .map_or_else(String::new, |n| n.to_string()),
            w["rss_bytes"]
                .as_u64()
                .map_or_else(String::new, short_bytes),
            cpu,
            w["last_poll_ago"].as_f64().map_or_else(
                || "never".into(),
                |s| format!("{} ago", human_secs(s.max(0.0) as u64))
            ),
        ));
    }
    lines.push(String::new());
    lines.push("q quits · refreshed every second".to_string());
    lines.into_iter().map(|l| cut(&l, width)).collect()
}

/// `12.3M`: bytes in at most 7 characters.
fn short_bytes(n: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", units[unit])
    }
}

/// The alternate screen with the cursor hidden; dropping it (on every exit
/// path that unwinds) shows the cursor and returns to the normal screen.
struct Screen;

impl Screen {
    fn enter() -> Screen {
        put("\x1b[?1049h\x1b[?25l");
        Screen
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        put("\x1b[0m\x1b[?25h\x1b[?1049l");
    }
}

fn put(text: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).is_err() || out.flush().is_err() {
        // The terminal is gone; there is no one left to show anything to.
    }
}

fn draw(lines: &[String]) {
    let mut frame = String::from("\x1b[H");
    for l in lines {
        frame.push_str(l);
        frame.push_str("\x1b[K\r\n");
    }
    frame.push_str("\x1b[J");
    put(&frame);
}

/// What the key loop saw.
fn quits(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| matches!(b, b'q' | b'Q' | 0x03 | 0x04))
}

/// Runs the view on `url` (a /health URL that answered) until `q`.
pub fn run(url: &str, disk_path: &Path) -> i32 {
    let stdin_tty = std::io::stdin().is_terminal();
    // Raw mode only on a terminal; restored when `_raw` drops.
    let _raw = if stdin_tty {
        match crate::sys::raw_terminal(0) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("botfleet: cannot set up the terminal: {e}");
                return crate::exit::FAILURE;
            }
        }
    } else {
        None
    };
    let (quit_tx, quit_rx) = mpsc::channel::<()>();
    if let Err(e) = crate::signals::forward(move |_| {
        // A closed channel means the view is already ending.
        if quit_tx.send(()).is_err() {}
    }) {
        eprintln!("botfleet: cannot install signal handlers: {e}");
        return crate::exit::FAILURE;
    }
    let (frame_tx, frame_rx) = mpsc::channel::<Frame>();
    let (url_owned, disk): (String, PathBuf) = (url.to_string(), disk_path.to_path_buf());
    let sampler = std::thread::Builder::new()
        .name("watch-sampler".into())
        .spawn(move || loop {
            let started = Instant::now();
            if frame_tx.send(sample(&url_owned, &disk)).is_err() {
                return;
            }
            std::thread::sleep(PERIOD.saturating_sub(started.elapsed()));
        });
    if let Err(e) = sampler {
        eprintln!("botfleet: cannot start a thread: {e}");
        return crate::exit::FAILURE;
    }
    let screen = Screen::enter();
    let ticks = crate::sys::clock_ticks_per_sec();
    let mut before: Option<Frame> = None;
    let mut stdin_open = true;
    let mut key = [0u8; 64];
    loop {
        if quit_rx.try_recv().is_ok() {
            break;
        }
        let fds: Vec<std::os::fd::RawFd> = if stdin_open { vec![0] } else { vec![] };
        let ready = if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            vec![]
        } else {
            crate::sys::poll_readable(&fds, 100).unwrap_or_default()
        };
        if ready.first() == Some(&true) {
            match std::io::stdin().lock().read(&mut key) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) if quits(&key[..n]) => break,
                Ok(_) => {}
            }
        }
        let mut newest = None;
        while let Ok(f) = frame_rx.try_recv() {
            newest = Some(f);
        }
        if let Some(now) = newest {
            let width = crate::sys::terminal_size(1).map_or(80, |(c, _)| usize::from(c));
            draw(&render(&now, before.as_ref(), ticks, width));
            before = Some(now);
        }
    }
    drop(screen);
    crate::exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(at: Instant, updates: u64, ticks: u64, inbox: Option<u64>) -> Frame {
        let mut w = json!({"index": 0, "username": "alpha_bot", "pid": 77, "state": "ready",
            "healthy": true, "updates": updates, "errors": 1, "restarts": 2,
            "rss_bytes": 6_500_000, "last_poll_ago": 2.5});
        if let Some(d) = inbox {
            w["inbox_depth"] = json!(d);
        }
        Frame {
            at,
            health: Ok(json!({"bot_version": "0.1.0", "status": "healthy",
                "uptime_seconds": 65, "config_version": "abc", "workers": [w]})),
            cpu: HashMap::from([(77, ticks)]),
            load: Some([0.5, 0.25, 0.125]),
            memory: Some((4 << 30, 1 << 30)),
            disk: Some((100 << 30, 50 << 30)),
        }
    }

    #[test]
    fn renders_rates_cpu_and_host_within_80_columns() {
        let t0 = Instant::now();
        let a = frame(t0, 10, 100, None);
        let b = frame(t0 + Duration::from_secs(2), 30, 150, Some(4));
        let lines = render(&b, Some(&a), 100, 80);
        let text = lines.join("\n");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains("load 0.50 0.25 0.12"), "{text}");
        assert!(text.contains("mem 3.0 GiB / 4.0 GiB"), "{text}");
        let row = lines
            .iter()
            .find(|l| l.starts_with("bot-0"))
            .expect("a row");
        // 20 updates in 2 s; 50 ticks of 100/s in 2 s = 25 %.
        assert!(row.contains(" 10.0 "), "{row}");
        assert!(row.contains(" 25.0 "), "{row}");
        assert!(row.contains("@alpha_bot") && row.contains("6.2M") && row.contains("2s ago"));
        assert!(row.contains("    4 "), "inbox depth: {row}");
        // Without `inbox_depth` the cell is blank, and a first frame has no rates.
        let first = render(&a, None, 100, 80).join("\n");
        assert!(first.contains("bot-0"), "{first}");
        let narrow = render(&b, Some(&a), 100, 40);
        assert!(narrow.iter().all(|l| l.chars().count() <= 40));
    }

    #[test]
    fn keys_that_quit() {
        assert!(quits(b"q") && quits(b"xQ") && quits(&[3]) && !quits(b"a "));
    }
}
