//! Monitoring (issue 14): JSON logs, LOG_FILE rotation and fallback,
//! WORKER_MAX_RSS_MB, HANDLER_MAX_MEMORY_MB and `status --watch`, each
//! with the real binary against the sandbox.

mod common;

use common::fleet::{merged_env, render_env, Fleet};
use common::{bin, http, replies_to, wait_until, SandboxProc};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn token(id: u64) -> String {
    format!("{id}:monitoring-secret-{id}")
}

fn secret(id: u64) -> String {
    format!("monitoring-secret-{id}")
}

fn port_of(env_file: &Path) -> String {
    std::fs::read_to_string(env_file)
        .expect("read .env")
        .lines()
        .find_map(|l| l.strip_prefix("PORT=").map(str::to_string))
        .expect("the .env has a PORT")
}

fn health(fleet: &Fleet) -> Value {
    let url = format!("http://127.0.0.1:{}/health", port_of(&fleet.env_file));
    let mut resp = http().get(&url).call().expect("/health answers");
    common::body_json(&mut resp)
}

fn metrics(fleet: &Fleet) -> String {
    let url = format!("http://127.0.0.1:{}/metrics", port_of(&fleet.env_file));
    let mut resp = http().get(&url).call().expect("/metrics answers");
    String::from_utf8_lossy(&common::body_bytes(&mut resp)).into_owned()
}

/// Rewrites `.env` (by rename, as editors do) keeping the PORT.
fn rewrite(fleet: &Fleet, sandbox: &SandboxProc, tokens: &[String], extra: &[(&str, &str)]) {
    let port = port_of(&fleet.env_file);
    let mut extra: Vec<(&str, &str)> = extra.to_vec();
    extra.push(("PORT", &port));
    let vars = merged_env(sandbox, &fleet.dir, tokens, &extra);
    let tmp = fleet.env_file.with_extension("tmp");
    std::fs::write(&tmp, render_env(&vars)).expect("write the new .env");
    std::fs::rename(&tmp, &fleet.env_file).expect("rename it into place");
}

/// An executable `/bin/sh` script in `dir`; returns its path.
fn script(dir: &common::TempDir, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write the handler");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

#[test]
fn json_logs_hold_every_field_and_no_secret_across_reload_kill_bad_token_and_handler_error() {
    let (sandbox, mut tokens) = SandboxProc::with_bots(&[14_001, 14_002], token, "json");
    tokens.push(token(14_999)); // well formed, unknown to the sandbox: 401
    let scripts = common::temp_dir();
    let handler = script(&scripts, "fails.sh", "echo handler trouble >&2\nexit 3\n");
    let handler = handler.as_str();
    let base = [
        ("LOG_FORMAT", "json"),
        ("BOT_HANDLER", handler),
        ("RESTART_DELAY", "50"),
    ];
    let mut fleet = Fleet::start(&sandbox, &tokens, &base);
    fleet.wait_log("token rejected by Telegram", Duration::from_secs(20));
    wait_until(Duration::from_secs(20), "two workers ready", || {
        fleet.count_in_logs(" ready as @") >= 2
    });
    // A handler error: the chat gets the error reply.
    let (_, m) = sandbox.send_text(14_001, 7, 4242, "hello");
    wait_until(Duration::from_secs(15), "the error reply", || {
        replies_to(&sandbox.sent(14_001), m)
            .iter()
            .any(|t| t.contains("something went wrong"))
    });
    // A killed worker comes back.
    let victim = fleet
        .workers()
        .into_iter()
        .find(|p| common::fleet::bot_index_of(*p) == Some(1))
        .expect("worker bot-1 runs");
    common::fleet::kill(victim, "KILL");
    fleet.wait_log("exited unexpectedly", Duration::from_secs(10));
    // A reload with an added and a modified setting.
    let extra = [
        ("LOG_FORMAT", "json"),
        ("BOT_HANDLER", handler),
        ("RESTART_DELAY", "60"),
        ("MONITORING_TEST_FLAG", "on"),
    ];
    rewrite(&fleet, &sandbox, &tokens, &extra);
    fleet.wait_log("Bot workers updated", Duration::from_secs(15));
    fleet.signal("TERM");
    assert!(fleet.wait_exit(Duration::from_secs(15)).is_some());

    let logs = fleet.logs();
    let mut sources = std::collections::BTreeSet::new();
    let mut msgs = Vec::new();
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nlog:\n{logs}"));
        for key in ["ts", "level", "source", "msg"] {
            assert!(v[key].is_string(), "{key} missing in {line}");
        }
        assert!(v.get("bot_id").is_some(), "bot_id missing in {line}");
        let source = v["source"].as_str().unwrap_or("").to_string();
        if source != "parent" {
            assert!(v["bot_id"].is_u64(), "a worker line has its bot_id: {line}");
        }
        sources.insert(source);
        msgs.push(v);
    }
    for s in ["parent", "bot-0", "bot-1", "bot-2"] {
        assert!(sources.contains(s), "no line from {s}: {sources:?}");
    }
    for id in [14_001, 14_002, 14_999] {
        assert!(!logs.contains(&secret(id)), "a secret leaked:\n{logs}");
    }
    let text = |v: &Value| v["msg"].as_str().unwrap_or("").to_string();
    assert!(msgs
        .iter()
        .any(|v| text(v).contains("+ Added MONITORING_TEST_FLAG = on")));
    assert!(msgs
        .iter()
        .any(|v| text(v).contains("~ Modified RESTART_DELAY = 50 → 60")));
    // A supervisor line about one bot carries its bot_id.
    let ready = msgs
        .iter()
        .find(|v| v["source"] == "parent" && text(v).starts_with("Worker bot-0 ready"))
        .unwrap_or_else(|| panic!("no ready line:\n{logs}"));
    assert_eq!(ready["bot_id"], 14_001);
    // The handler error is about one chat and one update.
    let about_chat = msgs
        .iter()
        .find(|v| v["chat_id"] == 4242 && v["source"] == "bot-0" && v["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line with chat_id 4242:\n{logs}"));
    assert!(about_chat["update_id"].is_i64(), "{about_chat}");
    assert_eq!(about_chat["bot_id"], 14_001);
}

#[test]
fn log_file_rotates_keeps_log_keep_reopens_on_sighup_and_falls_back_to_stderr() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[14_101], token, "file");
    let dir = common::temp_dir();
    let log = dir.join("botfleet.log");
    let log_s = log.display().to_string();
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("LOG_FILE", &log_s),
            ("LOG_MAX_BYTES", "1024"),
            ("LOG_KEEP", "2"),
            ("RUST_LOG", "debug,ureq=info"),
            ("BOT_HANDLER", "builtin:echo"),
        ],
    );
    let numbered = |n: u32| dir.join(format!("botfleet.log.{n}"));
    let all = || {
        let mut text = String::new();
        for p in [numbered(2), numbered(1), log.clone()] {
            text.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        text
    };
    wait_until(Duration::from_secs(20), "the worker ready", || {
        all().contains(" ready as @")
    });
    let mut n = 0;
    wait_until(Duration::from_secs(30), "two rotations", || {
        n += 1;
        sandbox.send_text(14_101, 5, 5, &format!("fill the log {n}"));
        std::thread::sleep(Duration::from_millis(50));
        numbered(2).exists()
    });
    for p in [log.clone(), numbered(1), numbered(2)] {
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(size <= 1024, "{} is {size} bytes", p.display());
    }
    assert!(!numbered(3).exists(), "LOG_KEEP=2 keeps two old files");
    let text = all();
    assert!(text.contains("[Worker bot-0]") || text.contains("[Parent]"));
    assert!(!text.contains(&secret(14_101)));
    assert!(
        !fleet.logs().contains("[Worker bot-0]"),
        "stderr stays quiet:\n{}",
        fleet.logs()
    );
    // logrotate's way: move the file away, SIGHUP, a new file appears.
    std::fs::rename(&log, dir.join("moved.log")).expect("move the log");
    fleet.signal("HUP");
    wait_until(Duration::from_secs(15), "a reopened log file", || {
        sandbox.send_text(14_101, 5, 5, "after the move");
        std::thread::sleep(Duration::from_millis(100));
        log.exists()
    });

    // An unwritable path: one warning, then the log goes to stderr.
    let (sandbox2, tokens2) = SandboxProc::with_bots(&[14_102], token, "nofile");
    let missing = dir.join("no-such-dir").join("x.log").display().to_string();
    let fleet2 = Fleet::start(&sandbox2, &tokens2, &[("LOG_FILE", &missing)]);
    fleet2.wait_ready(1);
    fleet2.wait_log("[Worker bot-0]", Duration::from_secs(10));
    assert_eq!(
        fleet2.count_in_logs("cannot write LOG_FILE"),
        1,
        "{}",
        fleet2.logs()
    );
}

#[test]
fn a_worker_over_worker_max_rss_is_restarted_gracefully_and_the_fleet_serves() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[14_201, 14_202], token, "rss");
    // Every worker is above 1 MB; MAX_RESTARTS=1 shows these are not crashes.
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("WORKER_MAX_RSS_MB", "1"),
            ("MAX_RESTARTS", "1"),
            ("BOT_HANDLER", "builtin:echo"),
        ],
    );
    fleet.wait_log("above WORKER_MAX_RSS_MB=1", Duration::from_secs(30));
    let line = fleet
        .logs()
        .lines()
        .find(|l| l.contains("above WORKER_MAX_RSS_MB"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains(" MB resident"), "{line}");
    // The fleet serves throughout: every message gets its answer.
    let mut ids = Vec::new();
    for i in 0..6 {
        for bot in [14_201, 14_202] {
            let (_, m) = sandbox.send_text(bot, 9, 9, &format!("still there {i}"));
            ids.push((bot, m));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for bot in [14_201, 14_202] {
        let mine: Vec<i64> = ids
            .iter()
            .filter(|(b, _)| *b == bot)
            .map(|(_, m)| *m)
            .collect();
        fleet.wait_replies(&sandbox, bot, &mine, Duration::from_secs(40));
    }
    wait_until(
        Duration::from_secs(30),
        "two memory restarts of one worker",
        || {
            health(&fleet)["workers"]
                .as_array()
                .is_some_and(|ws| ws.iter().any(|w| w["memory_restarts"].as_u64() >= Some(2)))
        },
    );
    let h = health(&fleet);
    for w in h["workers"].as_array().expect("workers") {
        assert_ne!(w["state"], "failed", "not a crash loop: {w}");
    }
    assert!(metrics(&fleet).contains("botfleet_worker_memory_restarts_total{"));
    assert!(!fleet.logs().contains("crash loop"));
}

#[test]
fn a_handler_past_handler_max_memory_fails_and_the_chat_gets_the_error_reply() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[14_301], token, "hmem");
    // Doubles a string until memory runs out (for ever without a limit).
    let scripts = common::temp_dir();
    let handler = script(
        &scripts,
        "grows.sh",
        "s=aaaaaaaa\nwhile :; do s=$s$s; done\n",
    );
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("HANDLER_MAX_MEMORY_MB", "32"),
            ("BOT_HANDLER", &handler),
            ("HANDLER_TIMEOUT_SECS", "60"),
        ],
    );
    fleet.wait_ready(1);
    let (_, m) = sandbox.send_text(14_301, 3, 3, "allocate");
    wait_until(Duration::from_secs(30), "the error reply", || {
        replies_to(&sandbox.sent(14_301), m)
            .iter()
            .any(|t| t.contains("something went wrong"))
    });
    fleet.wait_log("handler for update", Duration::from_secs(5));
}

#[test]
fn status_watch_in_a_pty_shows_every_bot_refreshes_and_q_quits() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let (sandbox, tokens) = SandboxProc::with_bots(&[14_401, 14_402], token, "watch");
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(2);
    let cmd = format!(
        "stty cols 80 rows 30; exec {} status --watch --env-file {}",
        bin().display(),
        fleet.env_file.display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script starts");
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = Arc::clone(&out);
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("buffer").extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&out.lock().expect("buffer")).into_owned();
    let frames = || text().matches("\x1b[H").count();
    wait_until(Duration::from_secs(20), "a frame with both bots", || {
        let t = text();
        t.contains("bot-0") && t.contains("bot-1") && t.contains("@watch14401")
    });
    let seen = frames();
    wait_until(Duration::from_secs(10), "another frame", || frames() > seen);
    let t = text();
    assert!(
        t.contains("load ") && t.contains("mem ") && t.contains("disk "),
        "{t}"
    );
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(b"q").expect("type q");
    stdin.flush().expect("flush");
    let mut status = None;
    wait_until(Duration::from_secs(10), "status --watch quits on q", || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    drop(stdin);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    if reader.join().is_err() {
        panic!("the reader thread panicked");
    }
    // The normal screen and the cursor are back.
    assert!(text().contains("\x1b[?25h\x1b[?1049l"));
}

/// A `botfleet run` under `script` (so its stderr is a terminal); dropping
/// it stops the supervisor (its pid is in the lock file) and `script`.
struct OnTerminal {
    script: std::process::Child,
    lock: std::path::PathBuf,
    out: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(env_file: &Path, lock: std::path::PathBuf, no_color: bool) -> OnTerminal {
        let cmd = format!(
            "exec {} run --env-file {}",
            bin().display(),
            env_file.display()
        );
        let mut c = Command::new("script");
        c.args(["-qfec", &cmd, "/dev/null"])
            .env_remove("JOURNAL_STREAM")
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .env_remove("TELEGRAM_BOT_TOKENS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let mut script = c.spawn().expect("script starts");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let mut stdout = script.stdout.take().expect("piped");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("buffer").extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal { script, lock, out }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("buffer")).into_owned()
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.lock)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            common::fleet::kill(pid, "TERM");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(self.script.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _kill = self.script.kill();
        let _reap = self.script.wait();
    }
}

#[test]
fn text_logs_colour_errors_on_a_terminal_but_not_with_no_color_or_piped() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let (sandbox, _) = SandboxProc::with_bots(&[14_501], token, "colour");
    // 14_599 is unknown to the sandbox: its worker logs an ERROR line.
    let tokens = [token(14_501), token(14_599)];
    for no_color in [false, true] {
        let dir = common::temp_dir();
        let vars = merged_env(&sandbox, &dir, &tokens, &[]);
        let env_file = dir.join(".env");
        std::fs::write(&env_file, render_env(&vars)).expect("write .env");
        let run = OnTerminal::start(&env_file, dir.join("bot.lock"), no_color);
        wait_until(
            Duration::from_secs(20),
            "the rejected token's ERROR",
            || run.text().contains("token rejected"),
        );
        let text = run.text();
        assert_eq!(
            text.contains("\x1b[31mERROR\x1b[0m"),
            !no_color,
            "NO_COLOR={no_color}:\n{text}"
        );
        assert!(!text.contains(&secret(14_599)));
        drop(run);
    }
    // Piped (as every other test runs it): never a colour code.
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_log("token rejected", Duration::from_secs(20));
    assert!(!fleet.logs().contains('\x1b'), "{}", fleet.logs());
}

#[test]
fn a_full_log_file_falls_back_to_stderr_once_and_the_fleet_serves() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[14_601], token, "full");
    let dir = common::temp_dir();
    let log = dir.join("full.log").display().to_string();
    // `ulimit -f 8`: writes past 4 KiB fail (EFBIG), as on a full disk.
    let fleet = Fleet::start_with_ulimit(
        &sandbox,
        &tokens,
        &[
            ("LOG_FILE", &log),
            ("RUST_LOG", "debug,ureq=info"),
            ("BOT_HANDLER", "builtin:echo"),
        ],
        "-f 8",
    );
    let mut ids = Vec::new();
    wait_until(Duration::from_secs(30), "the fallback warning", || {
        let (_, m) = sandbox.send_text(14_601, 4, 4, &format!("line {}", ids.len()));
        ids.push(m);
        std::thread::sleep(Duration::from_millis(50));
        fleet.logs().contains("cannot write LOG_FILE")
    });
    fleet.wait_replies(&sandbox, 14_601, &ids, Duration::from_secs(30));
    let (_, m) = sandbox.send_text(14_601, 4, 4, "after the fallback");
    fleet.wait_replies(&sandbox, 14_601, &[m], Duration::from_secs(15));
    fleet.wait_log("[Worker bot-0]", Duration::from_secs(5));
    assert_eq!(
        fleet.count_in_logs("cannot write LOG_FILE"),
        1,
        "{}",
        fleet.logs()
    );
}

#[test]
fn log_format_changes_live_on_a_reload() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[14_701], token, "live");
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(1);
    assert!(fleet.logs().contains("INFO  [Parent]"));
    rewrite(&fleet, &sandbox, &tokens, &[("LOG_FORMAT", "json")]);
    wait_until(
        Duration::from_secs(15),
        "a JSON line after the reload",
        || {
            fleet
                .logs()
                .lines()
                .any(|l| l.contains("Bot workers updated") && l.starts_with("{\"ts\":"))
        },
    );
    // A worker's line (its "settings updated") comes in the new format too.
    wait_until(Duration::from_secs(15), "a worker's JSON line", || {
        fleet
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["source"] == "bot-0")
    });
}

/// CPU time (user + system) of `pid` in clock ticks (100 a second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let rest = &stat[stat.rfind(')').expect("a (name)") + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().expect("a number"))
        .collect();
    f[0] + f[1]
}

#[test]
fn shutdown_with_worker_max_rss_mb_set_waits_without_spinning() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[14_501], token, "spin");
    let mut fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("WORKER_MAX_RSS_MB", "4096"), ("SHUTDOWN_TIMEOUT", "7000")],
    );
    fleet.wait_ready(1);
    let supervisor = fleet.child.as_ref().expect("the supervisor runs").id();
    let worker = fleet.workers()[0];
    // A worker that does not stop on SIGTERM: the whole grace is waited out.
    common::fleet::kill(worker, "STOP");
    fleet.signal("TERM");
    fleet.wait_log("Received SIGTERM", Duration::from_secs(5));
    // Past the next memory check (every 2 s) that shutdown skips.
    std::thread::sleep(Duration::from_millis(2500));
    let before = cpu_ticks(supervisor);
    std::thread::sleep(Duration::from_secs(3)); // inside the 7 s grace
    let used = cpu_ticks(supervisor) - before;
    let still = fleet
        .child
        .as_mut()
        .map(|c| matches!(c.try_wait(), Ok(None)));
    assert_eq!(still, Some(true), "still in its grace: {}", fleet.logs());
    assert!(
        fleet.wait_exit(Duration::from_secs(15)).is_some(),
        "the fleet stops after the grace"
    );
    // A spinning loop burns the whole 3 s (300 ticks); waiting costs ~0.
    assert!(
        used < 60,
        "the supervisor used {used} ticks in 3 s of grace"
    );
}

#[test]
fn restarted_workers_leave_no_log_pipe_open_in_the_supervisor() {
    let ids = [14_601, 14_602, 14_603, 14_604];
    let (sandbox, tokens) = SandboxProc::with_bots(&ids, token, "fds");
    let fleet = Fleet::start(&sandbox, &tokens, &[("RESTART_DELAY", "50")]);
    fleet.wait_ready(ids.len());
    let supervisor = fleet.child.as_ref().expect("the supervisor runs").id();
    let fds = || {
        common::fleet::rss_and_fds(supervisor)
            .expect("/proc of the supervisor")
            .1
    };
    let before = fds();
    for round in 1..=3 {
        for pid in fleet.workers() {
            common::fleet::kill(pid, "KILL");
        }
        wait_until(Duration::from_secs(20), "every worker back", || {
            fleet.count_in_logs(" ready as @") >= ids.len() * (round + 1)
                && fleet.workers().len() == ids.len()
        });
    }
    // Every closed stderr pipe (and stdin, stdout) was let go: three a
    // worker, the same workers, give or take a probe's connection.
    wait_until(Duration::from_secs(10), "the old pipes closed", || {
        fds() <= before + 1
    });
}
