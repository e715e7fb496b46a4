//! Live reload: tokens and settings from `.env` without a restart
//! (issue: live reload).

mod common;

use common::replies_to;

use common::fleet::{merged_env, render_env, Fleet};
use common::{bin, wait_until, SandboxProc};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn token(id: u64) -> String {
    format!("{id}:reload-test-secret-{id}")
}

fn sandbox_with(ids: &[u64]) -> SandboxProc {
    SandboxProc::with_bots(ids, token, "reload").0
}

/// Replaces the file by rename, as editors do.
fn write_env(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the new .env");
    std::fs::rename(&tmp, path).expect("rename it into place");
}

fn rewrite(fleet: &Fleet, sandbox: &SandboxProc, ids: &[u64], extra: &[(&str, &str)]) {
    let tokens: Vec<String> = ids.iter().map(|i| token(*i)).collect();
    let vars = merged_env(sandbox, &fleet.dir, &tokens, extra);
    // Keep the PORT the fleet started with.
    let port = std::fs::read_to_string(&fleet.env_file)
        .expect("read .env")
        .lines()
        .find_map(|l| l.strip_prefix("PORT=").map(str::to_string))
        .expect("the .env has a PORT");
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .map(|(k, v)| {
            if k == "PORT" {
                (k, port.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    write_env(&fleet.env_file, render_env(&vars).as_bytes());
}

fn pid_of(fleet: &Fleet, index: u32) -> u32 {
    fleet
        .workers()
        .into_iter()
        .find(|pid| common::fleet::bot_index_of(*pid) == Some(index))
        .unwrap_or_else(|| panic!("no worker with BOT_INDEX={index}; log:\n{}", fleet.logs()))
}

fn assert_no_secrets(fleet: &Fleet, ids: &[u64]) {
    let logs = fleet.logs();
    for id in ids {
        let t = token(*id);
        let secret = t.split_once(':').expect("a colon").1;
        assert!(
            !logs.contains(secret),
            "the secret of bot {id} is in the logs"
        );
    }
}

#[test]
fn tokens_added_removed_and_reordered_touch_only_their_workers() {
    let ids = [101, 102, 103];
    let sandbox = sandbox_with(&ids);
    let fleet = Fleet::start(&sandbox, &[token(101), token(102)], &[]);
    fleet.wait_ready(2);
    let (a, b) = (pid_of(&fleet, 0), pid_of(&fleet, 1));

    let t0 = Instant::now();
    rewrite(&fleet, &sandbox, &[101, 102, 103], &[]);
    fleet.wait_log(
        "Spawning new bot worker for added token (index 2)",
        Duration::from_secs(10),
    );
    fleet.wait_log("Worker bot-2 ready", Duration::from_secs(10));
    let took = t0.elapsed();
    // Debounce 300 ms + 2 s, loosely: the real figure is in BENCHMARKS.md.
    assert!(
        took < Duration::from_secs(5),
        "added worker ready after {took:?}"
    );
    fleet.wait_log(
        "Token changes detected: 1 added, 0 removed",
        Duration::from_secs(1),
    );
    fleet.wait_log(
        "✅ Bot workers updated: 3 total worker(s)",
        Duration::from_secs(1),
    );
    assert_eq!(
        (pid_of(&fleet, 0), pid_of(&fleet, 1)),
        (a, b),
        "others keep their pids"
    );
    let c = pid_of(&fleet, 2);

    rewrite(&fleet, &sandbox, &[101, 103], &[]);
    fleet.wait_log(
        "Killing bot worker 1 (token removed)",
        Duration::from_secs(10),
    );
    wait_until(Duration::from_secs(5), "worker 1 gone", || {
        !fleet.workers().contains(&b)
    });
    assert_eq!((pid_of(&fleet, 0), pid_of(&fleet, 2)), (a, c));

    let reloads = fleet.count_in_logs("Config reload (");
    rewrite(&fleet, &sandbox, &[103, 101], &[]);
    wait_until(Duration::from_secs(10), "the reorder reloaded", || {
        fleet.count_in_logs("Config reload (") > reloads
    });
    fleet.wait_log(
        "✅ Bot workers updated: 2 total worker(s)",
        Duration::from_secs(5),
    );
    let mut now = fleet.workers();
    now.sort_unstable();
    let mut want = vec![a, c];
    want.sort_unstable();
    assert_eq!(now, want, "a reorder changes no worker");
    // The removed bot keeps its index: re-adding it gets index 1 again.
    rewrite(&fleet, &sandbox, &[103, 101, 102], &[]);
    fleet.wait_log(
        "Spawning new bot worker for added token (index 1)",
        Duration::from_secs(10),
    );
    assert_no_secrets(&fleet, &ids);
}

#[test]
fn broken_files_are_rejected_whole_and_the_fleet_is_untouched() {
    let sandbox = sandbox_with(&[201]);
    let fleet = Fleet::start(
        &sandbox,
        &[token(201)],
        &[("BOT_TOKEN_MONITOR_INTERVAL", "0")],
    );
    fleet.wait_ready(1);
    let pids = fleet.workers();
    let good = std::fs::read_to_string(&fleet.env_file).expect("read .env");
    let without_tokens: String = good
        .lines()
        .filter(|l| !l.starts_with("TELEGRAM_BOT_TOKENS="))
        .map(|l| format!("{l}\n"))
        .collect();
    let with = |line: &str| format!("{good}{line}\n").into_bytes();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad token format",
            format!("{without_tokens}TELEGRAM_BOT_TOKENS=abc\n").into_bytes(),
            "token #1 is malformed",
        ),
        (
            "bad token secret",
            format!("{without_tokens}TELEGRAM_BOT_TOKENS=1:a/b\n").into_bytes(),
            "token #1 is malformed",
        ),
        (
            "bad number",
            with("RESTART_DELAY=soon"),
            "RESTART_DELAY: \"soon\" is not a whole number",
        ),
        ("negative number", with("MAX_RESTARTS=-1"), "MAX_RESTARTS"),
        ("bad port", with("PORT=99999"), "is not a port"),
        (
            "bad boolean",
            with("CLEAN_UP_MEDIADIR=maybe"),
            "is not a boolean",
        ),
        (
            "unterminated quote",
            with("BOT_HANDLER=\"unterminated"),
            "unterminated quote",
        ),
        (
            "bad ip",
            with("HEALTH_BIND=localhost"),
            "is not an IP address",
        ),
        ("bad url", with("TELEGRAM_API_URL=ftp://x"), "is not a URL"),
        (
            "bad user ids",
            with("ALLOWED_USER_IDS=abc"),
            "ALLOWED_USER_IDS",
        ),
        (
            "poll timeout too long",
            with("POLL_TIMEOUT_SECS=99"),
            "out of range (0-50)",
        ),
        (
            "no handler threads",
            with("HANDLER_CONCURRENCY=0"),
            "HANDLER_CONCURRENCY",
        ),
        (
            "cap below delay",
            with("RESTART_MAX_DELAY=10"),
            "below RESTART_DELAY",
        ),
        ("bad rate", with("SEND_RATE_PER_CHAT=fast"), "is not a rate"),
        (
            "a line without =",
            with("JUSTTEXT"),
            "cannot parse this line",
        ),
        (
            "binary garbage",
            b"\x7fELF\x00\x01\x02\xff\xfe garbage".to_vec(),
            "not a text file",
        ),
        (
            "invalid utf-8",
            with("NAME=\u{fffd}")
                .into_iter()
                .map(|b| if b == 0xbd { 0xff } else { b })
                .collect(),
            ".env",
        ),
        ("empty file", Vec::new(), "no bot token"),
        (
            "only comments",
            b"# nothing here\n".to_vec(),
            "no bot token",
        ),
        (
            "tokens emptied",
            format!("{without_tokens}TELEGRAM_BOT_TOKENS=\n").into_bytes(),
            "no bot token",
        ),
        (
            "10 MB file",
            vec![b'#'; 10 * 1024 * 1024],
            "more than the 1048576 bytes allowed",
        ),
    ];
    assert!(cases.len() >= 20);
    // `botfleet reload` on a broken file still finds the supervisor (the
    // file names the lock), warns, and signals it.
    let reload_cli = || {
        let out = Command::new(bin())
            .args(["reload", "--env-file"])
            .arg(&fleet.env_file)
            .output()
            .expect("botfleet reload runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Files that no longer say where the lock is get a plain SIGHUP.
    let reload = |bytes: &[u8]| {
        if String::from_utf8_lossy(bytes).contains("LOCK_FILE=") {
            let warning = reload_cli();
            assert!(warning.contains("will reject this file"), "{warning}");
        } else {
            fleet.signal("HUP");
        }
    };
    for (name, bytes, fragment) in cases {
        let before = fleet.count_in_logs("rejected; keeping the running config");
        let log_len = fleet.logs().len();
        write_env(&fleet.env_file, &bytes);
        reload(&bytes);
        wait_until(Duration::from_secs(10), name, || {
            fleet.count_in_logs("rejected; keeping the running config") > before
        });
        let new_lines = fleet.logs()[log_len..].to_string();
        assert!(
            new_lines.contains(fragment),
            "{name}: expected {fragment:?} in\n{new_lines}"
        );
        assert_eq!(fleet.workers(), pids, "{name}: the fleet is untouched");
    }
    // Deleted, and a directory in its place.
    for (name, fragment) in [
        ("file deleted", "cannot read"),
        ("a directory", "not a regular file"),
    ] {
        let before = fleet.count_in_logs("rejected; keeping the running config");
        let _ = std::fs::remove_file(&fleet.env_file); // may already be gone
        if name == "a directory" {
            std::fs::create_dir(&fleet.env_file).expect("mkdir in place of .env");
        }
        reload(b"");
        wait_until(Duration::from_secs(10), name, || {
            fleet.count_in_logs("rejected; keeping the running config") > before
        });
        assert!(
            fleet.logs().contains(fragment),
            "{name}: expected {fragment:?}"
        );
        assert_eq!(fleet.workers(), pids);
    }
    std::fs::remove_dir(&fleet.env_file).expect("rmdir");
    write_env(&fleet.env_file, good.as_bytes());
    let (_, m) = sandbox.send_text(201, 3, 3, "/ping");
    wait_until(Duration::from_secs(10), "still serving", || {
        replies_to(&sandbox.sent(201), m) == ["pong"]
    });
    assert_no_secrets(&fleet, &[201]);
}

#[test]
fn a_newly_allowed_user_is_served_by_the_same_worker() {
    let sandbox = sandbox_with(&[301]);
    let fleet = Fleet::start(&sandbox, &[token(301)], &[("ALLOWED_USER_IDS", "1")]);
    fleet.wait_ready(1);
    let pid = pid_of(&fleet, 0);
    let (_, m) = sandbox.send_text(301, 2, 2, "/ping");
    wait_until(Duration::from_secs(10), "a refusal", || {
        replies_to(&sandbox.sent(301), m)
            .iter()
            .any(|t| t.contains("private"))
    });
    rewrite(&fleet, &sandbox, &[301], &[("ALLOWED_USER_IDS", "1,2")]);
    fleet.wait_log(
        "~ Modified ALLOWED_USER_IDS = 1 → 1,2",
        Duration::from_secs(10),
    );
    fleet.wait_log("settings updated", Duration::from_secs(10));
    let (_, m) = sandbox.send_text(301, 2, 2, "/ping");
    wait_until(Duration::from_secs(10), "served now", || {
        replies_to(&sandbox.sent(301), m) == ["pong"]
    });
    assert_eq!(pid_of(&fleet, 0), pid, "no restart for an access list");
}

#[test]
fn sighup_reload_command_and_reload_config_apply_at_once() {
    let sandbox = sandbox_with(&[401, 402, 403]);
    let fleet = Fleet::start(
        &sandbox,
        &[token(401)],
        &[("BOT_TOKEN_MONITOR_INTERVAL", "0"), ("ADMIN_USER_IDS", "5")],
    );
    fleet.wait_ready(1);
    let extra = [("BOT_TOKEN_MONITOR_INTERVAL", "0"), ("ADMIN_USER_IDS", "5")];
    // The watcher is off: only the signal can make this happen.
    rewrite(&fleet, &sandbox, &[401, 402], &extra);
    fleet.signal("HUP");
    fleet.wait_log("Worker bot-1 ready", Duration::from_secs(10));
    rewrite(&fleet, &sandbox, &[401, 402, 403], &extra);
    let out = Command::new(bin())
        .args(["reload", "--env-file"])
        .arg(&fleet.env_file)
        .output()
        .expect("reload runs");
    assert_eq!(out.status.code(), Some(0));
    fleet.wait_log("Worker bot-2 ready", Duration::from_secs(10));
    // /reload_config from an admin reloads and replies; anyone else is refused.
    let (_, m) = sandbox.send_text(401, 5, 5, "/reload_config");
    wait_until(
        Duration::from_secs(10),
        "the admin's reload answered",
        || {
            replies_to(&sandbox.sent(401), m).is_empty()
                && sandbox.sent(401).iter().any(|s| {
                    s["chat_id"] == 5
                        && s["text"]
                            .as_str()
                            .is_some_and(|t| t.contains("Configuration reloaded"))
                })
        },
    );
    let (_, m) = sandbox.send_text(401, 6, 6, "/reload_config");
    wait_until(Duration::from_secs(10), "the stranger refused", || {
        replies_to(&sandbox.sent(401), m)
            .iter()
            .any(|t| t.contains("admins only"))
    });
    let (_, m) = sandbox.send_text(401, 5, 5, "/config_status");
    wait_until(Duration::from_secs(10), "config status", || {
        replies_to(&sandbox.sent(401), m)
            .iter()
            .any(|t| t.contains("poll timeout"))
    });
    assert_no_secrets(&fleet, &[401, 402, 403]);
}

#[test]
fn a_new_port_moves_the_health_server_without_touching_workers() {
    let sandbox = sandbox_with(&[501]);
    let fleet = Fleet::start(&sandbox, &[token(501)], &[]);
    fleet.wait_ready(1);
    let old = fleet.health_base();
    let pid = pid_of(&fleet, 0);
    let new_port = common::fleet::free_port();
    let text = std::fs::read_to_string(&fleet.env_file).expect("read .env");
    let moved: String = text
        .lines()
        .map(|l| {
            if l.starts_with("PORT=") {
                format!("PORT={new_port}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    write_env(&fleet.env_file, moved.as_bytes());
    fleet.wait_log(
        &format!(
            "Health server moves from 127.0.0.1:{} to 127.0.0.1:{new_port}",
            old.rsplit(':').next().unwrap_or("")
        ),
        Duration::from_secs(10),
    );
    // Another test may grab the freed port meanwhile; PORT+1 and PORT+2
    // are then the documented fallback.
    wait_until(
        Duration::from_secs(10),
        "the server on the new port",
        || fleet.health_base() != old,
    );
    let now = fleet.health_base();
    let port: u16 = now
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    assert!(
        (new_port..=new_port.saturating_add(2)).contains(&port),
        "{now} for PORT={new_port}"
    );
    let agent = common::http();
    let mut r = agent
        .get(&format!("{now}/ping"))
        .call()
        .expect("the new port answers");
    assert_eq!(r.status().as_u16(), 200);
    assert!(common::body_json(&mut r)["pong"] == true);
    assert!(
        agent.get(&format!("{old}/ping")).call().is_err(),
        "the old port ({old}) is closed"
    );
    assert_eq!(pid_of(&fleet, 0), pid, "the worker is untouched");
}

#[test]
fn a_setting_read_at_start_restarts_workers_one_at_a_time() {
    let sandbox = sandbox_with(&[601, 602]);
    let fleet = Fleet::start(&sandbox, &[token(601), token(602)], &[]);
    fleet.wait_ready(2);
    let (a, b) = (pid_of(&fleet, 0), pid_of(&fleet, 1));
    let media2 = fleet.dir.join("media2");
    rewrite(
        &fleet,
        &sandbox,
        &[601, 602],
        &[("MEDIA_TMP_LOCATION", media2.to_str().expect("utf-8 path"))],
    );
    wait_until(Duration::from_secs(20), "both workers restarted", || {
        let now = fleet.workers();
        now.len() == 2 && !now.contains(&a) && !now.contains(&b)
    });
    fleet.wait_log(
        "Rolling restart: restarting worker bot-1",
        Duration::from_secs(10),
    );
    let logs = fleet.logs();
    let first = logs
        .find("Rolling restart: restarting worker bot-0")
        .expect("bot-0 first");
    let ready_again = first
        + logs[first..]
            .find("Worker bot-0 ready")
            .expect("bot-0 back");
    let second = logs
        .find("Rolling restart: restarting worker bot-1")
        .expect("then bot-1");
    assert!(
        second > ready_again,
        "bot-1 waited for bot-0 to be ready again:\n{logs}"
    );
    wait_until(Duration::from_secs(10), "the new media dirs", || {
        media2.join("bot-0").is_dir() && media2.join("bot-1").is_dir()
    });
}

#[test]
fn rust_log_changes_take_effect_in_the_running_processes() {
    let sandbox = sandbox_with(&[131]);
    let fleet = Fleet::start(&sandbox, &[token(131)], &[]);
    fleet.wait_ready(1);
    let (_, m) = sandbox.send_text(131, 5, 5, "/ping");
    wait_until(Duration::from_secs(10), "the pong", || {
        replies_to(&sandbox.sent(131), m)
            .iter()
            .any(|t| t == "pong")
    });
    assert!(
        !fleet.logs().contains("DEBUG"),
        "RUST_LOG=info: no debug lines"
    );

    rewrite(&fleet, &sandbox, &[131], &[("RUST_LOG", "debug")]);
    fleet.wait_log("[Worker bot-0] settings updated", Duration::from_secs(10));
    let (_, m) = sandbox.send_text(131, 5, 5, "/ping");
    wait_until(Duration::from_secs(10), "the second pong", || {
        replies_to(&sandbox.sent(131), m)
            .iter()
            .any(|t| t == "pong")
    });
    fleet.wait_log(
        "DEBUG [Worker bot-0] bot 131: calling sendMessage",
        Duration::from_secs(5),
    );
    assert_no_secrets(&fleet, &[131]);
}
