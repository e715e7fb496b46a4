//! Bad input at the edges (issue 7): Telegram answers that are wrong while a
//! fleet runs, and host trouble (a full disk, unusable directories, too few
//! file descriptors). Each ends in a clear error; nothing crashes, nothing
//! loops against the API, and the fleet serves again once the trouble ends.

mod common;

use common::replies_to;

use common::fleet::{alive, Fleet};
use common::{bin, temp_dir, wait_until, SandboxProc};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

fn token(id: u64) -> String {
    format!("{id}:badinput-secret-{id}")
}

fn sandbox_with(ids: &[u64]) -> (SandboxProc, Vec<String>) {
    SandboxProc::with_bots(ids, token, "bad")
}

fn calls(sandbox: &SandboxProc, id: u64, method: &str) -> u64 {
    sandbox.bot_stats(id)["calls"][method].as_u64().unwrap_or(0)
}

fn ping_answered(sandbox: &SandboxProc, id: u64, timeout: Duration) {
    let (_, m) = sandbox.send_text(id, 5, 5, "/ping");
    wait_until(timeout, "ping answered", || {
        replies_to(&sandbox.sent(id), m) == ["pong"]
    });
}

fn assert_no_panic(fleet: &Fleet) {
    let logs = fleet.logs();
    assert!(!logs.contains("panicked"), "a panic in the log:\n{logs}");
}

#[test]
fn wrong_answers_from_telegram_are_survived_by_the_same_worker() {
    let id = 81001;
    let (sandbox, tokens) = sandbox_with(&[id]);
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(1);
    let pid = fleet.workers()[0];
    for kind in ["nocode", "huge", "endless", "html", "malformed", "502"] {
        for method in ["getUpdates", "sendMessage"] {
            sandbox.fault(json!({"kind": kind, "method": method, "count": 2}));
        }
        let faults_before = sandbox.stats()["faults_injected"].as_u64().unwrap_or(0);
        let (_, m) = sandbox.send_text(id, 5, 5, "/ping");
        wait_until(
            Duration::from_secs(60),
            &format!("ping answered after two {kind} faults on each method"),
            || replies_to(&sandbox.sent(id), m) == ["pong"],
        );
        let injected = sandbox.stats()["faults_injected"].as_u64().unwrap_or(0) - faults_before;
        assert!(injected >= 2, "{kind}: the faults were hit ({injected})");
        assert_eq!(
            fleet.workers(),
            vec![pid],
            "{kind}: the worker kept its pid"
        );
        sandbox.clear_faults();
    }
    fleet.wait_log("getUpdates failed", Duration::from_secs(5));
    assert_no_panic(&fleet);
    assert!(alive(pid));
}

#[test]
fn a_state_dir_that_is_a_file_is_a_clear_error_without_a_restart_loop() {
    let id = 81002;
    let (sandbox, tokens) = sandbox_with(&[id]);
    let spot = temp_dir();
    let file = spot.join("state-is-a-file");
    std::fs::write(&file, "not a directory").expect("write the file");
    let state = file.display().to_string();
    let mut fleet = Fleet::start(&sandbox, &tokens, &[("STATE_DIR", &state)]);
    // The supervisor keeps bots.json in STATE_DIR: it cannot run without it.
    let status = fleet
        .wait_exit(Duration::from_secs(15))
        .expect("the supervisor gives up");
    let logs = fleet.logs();
    assert_eq!(status.code(), Some(1), "a runtime failure exits 1:\n{logs}");
    assert!(
        logs.contains("STATE_DIR") || logs.contains(&state),
        "names it:\n{logs}"
    );
    assert_eq!(calls(&sandbox, id, "getUpdates"), 0, "never polled");
    assert_no_panic(&fleet);
    assert_eq!(
        std::fs::read_to_string(&file).expect("the file is still there"),
        "not a directory",
        "the file is left alone"
    );
}

#[test]
fn a_media_dir_that_is_a_file_fails_the_worker_once_and_clearly() {
    let id = 81003;
    let (sandbox, tokens) = sandbox_with(&[id]);
    let spot = temp_dir();
    let file = spot.join("media-is-a-file");
    std::fs::write(&file, "x").expect("write the file");
    let media = file.display().to_string();
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("MEDIA_TMP_LOCATION", &media), ("RESTART_DELAY", "20")],
    );
    fleet.wait_log(
        "not restarting until its config changes",
        Duration::from_secs(15),
    );
    let logs = fleet.logs();
    assert!(logs.contains("cannot create"), "a clear reason:\n{logs}");
    // A window in which a restart loop (RESTART_DELAY 20 ms) would show.
    let get_me = calls(&sandbox, id, "getMe");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(calls(&sandbox, id, "getMe"), get_me, "no restart loop");
    assert!(
        fleet.workers().is_empty(),
        "the failed worker is not restarted"
    );
    assert!(alive(fleet.pid), "the supervisor keeps running");
    assert_no_panic(&fleet);
}

#[test]
fn a_missing_media_dir_is_created() {
    let id = 81004;
    let (sandbox, tokens) = sandbox_with(&[id]);
    let spot = temp_dir();
    let media = spot.join("not/there/yet");
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("MEDIA_TMP_LOCATION", &media.display().to_string())],
    );
    fleet.wait_ready(1);
    ping_answered(&sandbox, id, Duration::from_secs(10));
    // The outbox at start; `received/` and `sent/` when first needed.
    assert!(media.join("bot-0").is_dir(), "bot-0 created");
}

#[test]
fn a_lock_file_whose_directory_is_a_file_exits_1_clearly() {
    let (sandbox, tokens) = sandbox_with(&[81005]);
    let spot = temp_dir();
    let file = spot.join("plain-file");
    std::fs::write(&file, "x").expect("write the file");
    let lock = file.join("bot.lock").display().to_string();
    let mut fleet = Fleet::start(&sandbox, &tokens, &[("LOCK_FILE", &lock)]);
    let t0 = Instant::now();
    let status = fleet
        .wait_exit(Duration::from_secs(10))
        .expect("the supervisor exits");
    let logs = fleet.logs();
    assert_eq!(status.code(), Some(1), "exit 1:\n{logs}");
    assert!(t0.elapsed() < Duration::from_secs(5), "quickly");
    assert!(
        logs.contains(&lock) || logs.contains("lock"),
        "names the lock file:\n{logs}"
    );
    assert!(fleet.workers().is_empty());
    assert_no_panic(&fleet);
}

#[test]
fn a_full_disk_for_received_files_is_an_error_not_a_dead_worker() {
    let id = 81006;
    let (sandbox, tokens) = sandbox_with(&[id]);
    // dash counts `ulimit -f` in 512-byte blocks: 100 KB per file.
    let fleet = Fleet::start_with_ulimit(&sandbox, &tokens, &[], "-f 200");
    fleet.wait_ready(1);
    let pid = fleet.workers()[0];
    let big = vec![7u8; 300_000];
    let (_, m, _) = sandbox.send_file(id, 5, 5, "document", "big.bin", &big);
    wait_until(Duration::from_secs(20), "a reply to the big file", || {
        !replies_to(&sandbox.sent(id), m).is_empty()
    });
    let reply = replies_to(&sandbox.sent(id), m).join(" ");
    assert!(!reply.contains("Saved"), "not saved: {reply}");
    assert_eq!(fleet.workers(), vec![pid], "the worker survived the write");
    fleet.wait_log("cannot save", Duration::from_secs(5));
    let received = fleet.dir.join("media/bot-0/received");
    let partial: Vec<_> = std::fs::read_dir(&received)
        .expect("list received")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(partial.is_empty(), "no partial file left: {partial:?}");
    // A small file still fits, and the bot still answers.
    let (_, m2, _) = sandbox.send_file(id, 5, 5, "document", "small.txt", b"small");
    wait_until(Duration::from_secs(15), "the small file saved", || {
        replies_to(&sandbox.sent(id), m2)
            .iter()
            .any(|t| t.contains("Saved"))
    });
    ping_answered(&sandbox, id, Duration::from_secs(10));
    assert_no_panic(&fleet);
}

#[test]
fn too_few_file_descriptors_is_a_clear_error_without_hammering_the_api() {
    let ids = [81007, 81008, 81009];
    let (sandbox, tokens) = sandbox_with(&ids);
    // Ten descriptors, soft and hard: the fleet cannot fit. The supervisor
    // says so once, naming the limit, and exits 1 before any worker starts;
    // nothing reaches the API.
    let mut fleet =
        Fleet::start_with_ulimit(&sandbox, &tokens, &[("RESTART_DELAY", "20")], "-n 10");
    let status = fleet
        .wait_exit(Duration::from_secs(10))
        .expect("botfleet exits at once");
    assert_eq!(status.code(), Some(1));
    let total: u64 = ids
        .iter()
        .map(|id| {
            let s = sandbox.bot_stats(*id);
            s["calls"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>())
                .unwrap_or(0)
        })
        .sum();
    let logs = fleet.logs();
    assert_eq!(total, 0, "no API calls:\n{logs}");
    assert!(
        logs.contains("the open-file limit (RLIMIT_NOFILE) is 10"),
        "a clear error:\n{logs}"
    );
    assert_no_panic(&fleet);
}

#[test]
fn botfleet_check_offline_rejects_a_bad_env_without_echoing_secrets() {
    let dir = temp_dir();
    let env = dir.join(".env");
    std::fs::write(
        &env,
        "TELEGRAM_BOT_TOKENS=12:ok-secret-aaaa,oops-no-colon-secret\nHEALTH_AUTH_TOKEN=\"unclosed-auth-secret\nPORT=${HEALTH_AUTH_TOKEN}\n",
    )
    .expect("write .env");
    let out = Command::new(bin())
        .args(["check", "--offline", "--env-file"])
        .arg(&env)
        .output()
        .expect("check runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "bad config exits 2:\n{text}");
    for secret in [
        "ok-secret-aaaa",
        "oops-no-colon-secret",
        "unclosed-auth-secret",
    ] {
        assert!(!text.contains(secret), "{secret} echoed:\n{text}");
    }
}

#[test]
fn an_offset_that_cannot_be_written_is_logged_and_the_bot_keeps_serving() {
    let id = 81009;
    let (sandbox, tokens) = sandbox_with(&[id]);
    let dir = common::temp_dir();
    let vars = common::fleet::merged_env(&sandbox, &dir, &tokens, &[]);
    let env_file = dir.join(".env");
    std::fs::write(&env_file, common::fleet::render_env(&vars)).expect("write .env");
    // A directory where the offset file goes: every write of it fails,
    // as on a full or broken state disk.
    std::fs::create_dir_all(dir.join(format!("state/offset-{id}/x"))).expect("mkdir");
    let fleet = Fleet::start_in(dir, env_file);
    fleet.wait_ready(1);
    let pid = fleet.workers();
    ping_answered(&sandbox, id, Duration::from_secs(10));
    // The inbox journal holds the offset now; the broken offset file is
    // named once (read at start), never per update.
    let named = format!("offset-{id}");
    fleet.wait_log(&named, Duration::from_secs(10));
    ping_answered(&sandbox, id, Duration::from_secs(10));
    assert_eq!(fleet.workers(), pid, "the worker was not restarted");
    assert_eq!(
        fleet.count_in_logs(&named),
        1,
        "logged once, not per update"
    );
    assert_no_panic(&fleet);
}
