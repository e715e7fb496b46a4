//! Bots that do real work: access control, files in and out, the handler,
//! sending under 429s (issue: bots).

mod common;

use common::replies_to;

use common::fleet::{alive, kill, Fleet};
use common::{sha256_hex, temp_dir, wait_until, SandboxProc, TempDir};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

fn token(id: u64) -> String {
    format!("{id}:bots-test-secret-{id}")
}

fn one_bot(id: u64) -> (SandboxProc, Vec<String>) {
    let sandbox = SandboxProc::start();
    let t = token(id);
    sandbox.add_bot(&t, &format!("bots{id}_bot"));
    (sandbox, vec![t])
}

fn texts_to(sent: &[Value], chat: i64) -> Vec<String> {
    sent.iter()
        .filter(|m| m["chat_id"].as_i64() == Some(chat) && m["method"] == "sendMessage")
        .map(|m| m["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// An executable shell script in `dir`.
fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn strangers_are_refused_once_and_can_still_ask_whoami() {
    let (sandbox, tokens) = one_bot(11);
    let fleet = Fleet::start(&sandbox, &tokens, &[("ALLOWED_USER_IDS", "77")]);
    fleet.wait_ready(1);
    for _ in 0..3 {
        sandbox.send_text(11, 555, 555, "hello");
    }
    let (_, who) = sandbox.send_text(11, 555, 555, "/whoami");
    let (_, ping) = sandbox.send_text(11, 77, 77, "/ping");
    wait_until(Duration::from_secs(10), "whoami and ping answered", || {
        let sent = sandbox.sent(11);
        !replies_to(&sent, who).is_empty() && replies_to(&sent, ping) == ["pong"]
    });
    let to_stranger = texts_to(&sandbox.sent(11), 555);
    let refusals = to_stranger.iter().filter(|t| t.contains("private")).count();
    assert_eq!(
        refusals, 1,
        "one refusal, not one per message: {to_stranger:?}"
    );
    assert!(
        to_stranger.iter().any(|t| t.contains("555")),
        "whoami answers the stranger"
    );
    fleet.wait_log("refused a message from user 555", Duration::from_secs(5));
}

#[test]
fn files_from_users_land_in_received_byte_for_byte_with_safe_names() {
    let (sandbox, tokens) = one_bot(12);
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(1);
    let received = fleet.dir.join("media/bot-0/received");
    let bytes = pseudo_random(300_000, 7);
    let (_, m1, _) = sandbox.send_file(12, 5, 5, "document", "report.pdf", &bytes);
    let (_, m2, _) = sandbox.send_file(12, 5, 5, "document", "../../etc/passwd", b"evil");
    let (_, m3, _) = sandbox.send_file(12, 5, 5, "document", "report.pdf", b"second");
    wait_until(Duration::from_secs(15), "three files saved", || {
        let sent = sandbox.sent(12);
        [m1, m2, m3]
            .iter()
            .all(|m| replies_to(&sent, *m).iter().any(|t| t.contains("Saved")))
    });
    let saved = std::fs::read(received.join("report.pdf")).expect("report.pdf saved");
    assert_eq!(sha256_hex(&saved), sha256_hex(&bytes));
    assert_eq!(
        std::fs::read(received.join("passwd")).expect("passwd inside received"),
        b"evil"
    );
    assert_eq!(
        std::fs::read(received.join("report (1).pdf")).expect("a second report.pdf"),
        b"second",
        "never overwrites"
    );
    assert!(!fleet.dir.join("etc").exists() && !fleet.dir.join("media/etc").exists());
    let hidden: Vec<_> = std::fs::read_dir(&received)
        .expect("list received")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "no temp file left behind");
}

#[test]
fn outbox_files_reach_every_recipient_once_even_after_failures() {
    let (sandbox, tokens) = one_bot(13);
    for chat in [21, 22] {
        sandbox.add_chat(13, chat);
    }
    let fleet = Fleet::start(&sandbox, &tokens, &[("MEDIA_RECIPIENTS", "21,22")]);
    fleet.wait_ready(1);
    let outbox = fleet.dir.join("media/bot-0");
    let docs = |name: &str| -> Vec<Value> {
        sandbox
            .sent(13)
            .into_iter()
            .filter(|m| m["method"] == "sendDocument" && m["file_name"] == name)
            .collect()
    };
    let bytes = pseudo_random(100_000, 3);
    std::fs::write(outbox.join("x.bin"), &bytes).expect("drop a file");
    wait_until(Duration::from_secs(15), "x.bin sent and moved", || {
        docs("x.bin").len() == 2 && outbox.join("sent/x.bin").exists()
    });
    for d in docs("x.bin") {
        let file_id = d["file_id"].as_str().expect("a file id");
        assert_eq!(sha256_hex(&sandbox.file_bytes(file_id)), sha256_hex(&bytes));
    }
    assert!(!outbox.join("x.bin").exists());
    // Sends fail: the file stays; they work again: it goes exactly once.
    sandbox.fault(json!({"kind": "500", "method": "sendDocument", "probability": 1.0}));
    std::fs::write(outbox.join("y.bin"), b"yyy").expect("drop a file");
    wait_until(
        Duration::from_secs(20),
        "failing sendDocument calls",
        || {
            sandbox.bot_stats(13)["calls"]["sendDocument"]
                .as_u64()
                .unwrap_or(0)
                >= 4
        },
    );
    assert!(outbox.join("y.bin").exists(), "an unsent file stays");
    sandbox.clear_faults();
    wait_until(
        Duration::from_secs(30),
        "y.bin sent after the faults",
        || outbox.join("sent/y.bin").exists(),
    );
    let ys = docs("y.bin");
    let mut per_chat: HashMap<i64, usize> = HashMap::new();
    for d in &ys {
        *per_chat
            .entry(d["chat_id"].as_i64().unwrap_or(0))
            .or_default() += 1;
    }
    assert_eq!(
        per_chat,
        HashMap::from([(21, 1), (22, 1)]),
        "exactly once each"
    );
}

#[test]
fn builtin_echo_quotes_the_message_in_a_group_but_not_in_a_private_chat() {
    let (sandbox, tokens) = one_bot(23);
    let fleet = Fleet::start(&sandbox, &tokens, &[("BOT_HANDLER", "builtin:echo")]);
    fleet.wait_ready(1);
    let (_, private) = sandbox.send_text(23, 8, 8, "just us");
    let (_, group) = sandbox.send_text(23, 8, -808, "all of us");
    let (_, ping) = sandbox.send_text(23, 8, 8, "/ping");
    fleet.wait_replies(
        &sandbox,
        23,
        &[private, group, ping],
        Duration::from_secs(20),
    );
    let sent = sandbox.sent(23);
    let reply = |text: &str| {
        sent.iter()
            .find(|m| m["text"] == text)
            .unwrap_or_else(|| panic!("no reply {text:?}: {sent:?}"))
            .clone()
    };
    assert!(
        reply("just us")["reply_to_message_id"].is_null(),
        "a private chat's echo quotes nothing: {sent:?}"
    );
    assert_eq!(
        reply("all of us")["reply_to_message_id"].as_i64(),
        Some(group),
        "a group's echo quotes the message it answers"
    );
    assert_eq!(
        reply("pong")["reply_to_message_id"].as_i64(),
        Some(ping),
        "built-in commands still quote"
    );
}

#[test]
fn the_handler_echoes_without_any_token_in_its_environment() {
    let (sandbox, tokens) = one_bot(14);
    let dir = temp_dir();
    let h = script(
        &dir,
        "echo.sh",
        "printf 'echo: %s|%s|%s\\n' \"$MESSAGE_TEXT\" \"$CHAT_ID\" \"$BOT_USERNAME\"\n\
         env | grep -c -e TOKEN= -e secret -e HEALTH_AUTH || true\n\
         printf 'custom=%s\\n' \"$MY_API_KEY\"",
    );
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8 path")),
            ("HEALTH_AUTH_TOKEN", "health-secret-0123456789"),
            ("MY_API_KEY", "k-123"),
        ],
    );
    fleet.wait_ready(1);
    let (_, m) = sandbox.send_text(14, 8, 8, "hi there");
    wait_until(Duration::from_secs(10), "the handler's reply", || {
        !replies_to(&sandbox.sent(14), m).is_empty()
    });
    let reply = replies_to(&sandbox.sent(14), m).join("");
    assert_eq!(reply, "echo: hi there|8|bots14_bot\n0\ncustom=k-123\n");
}

#[test]
fn a_handler_past_its_timeout_is_killed_and_the_chat_told() {
    let (sandbox, tokens) = one_bot(15);
    let dir = temp_dir();
    let pidfile = dir.join("pid");
    let h = script(
        &dir,
        "slow.sh",
        &format!("echo $$ > {}\nsleep 30\necho never", pidfile.display()),
    );
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8 path")),
            ("HANDLER_TIMEOUT_SECS", "1"),
        ],
    );
    fleet.wait_ready(1);
    let (_, m) = sandbox.send_text(15, 8, 8, "work");
    wait_until(Duration::from_secs(15), "the timeout reply", || {
        replies_to(&sandbox.sent(15), m)
            .iter()
            .any(|t| t.contains("too long"))
    });
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the handler wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    wait_until(Duration::from_secs(3), "the handler process gone", || {
        !alive(pid)
    });
    fleet.wait_log("ran over 1 s and was killed", Duration::from_secs(5));
    assert!(!replies_to(&sandbox.sent(15), m)
        .iter()
        .any(|t| t.contains("never")));
}

#[test]
fn a_slow_handler_keeps_each_chats_order_and_serves_chats_in_parallel() {
    let (sandbox, tokens) = one_bot(16);
    let dir = temp_dir();
    // Each run marks itself running, notes how many runs are running now,
    // works for 0.2 s and unmarks itself.
    let running = dir.join("running");
    std::fs::create_dir(&running).expect("mkdir running");
    let counts = dir.join("counts");
    let body = format!(
        "touch {r}/$$\nls {r} | wc -l >> {c}\nsleep 0.2\nrm {r}/$$\nprintf '%s' \"$MESSAGE_TEXT\"",
        r = running.display(),
        c = counts.display()
    );
    let h = script(&dir, "slow.sh", &body);
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8 path")),
            ("HANDLER_CONCURRENCY", "4"),
        ],
    );
    fleet.wait_ready(1);
    for n in 0..10 {
        for chat in 1..=10 {
            sandbox.send_text(16, chat, chat, &format!("{chat}-{n}"));
        }
    }
    wait_until(Duration::from_secs(60), "100 replies", || {
        sandbox
            .sent(16)
            .iter()
            .filter(|m| m["method"] == "sendMessage")
            .count()
            >= 100
    });
    let sent = sandbox.sent(16);
    for chat in 1..=10 {
        let want: Vec<String> = (0..10).map(|n| format!("{chat}-{n}")).collect();
        assert_eq!(texts_to(&sent, chat), want, "chat {chat} in order");
    }
    // Parallel runs, shown by overlap rather than by a wall-clock bound
    // that a loaded machine could miss; never more than the concurrency.
    let counts: Vec<usize> = std::fs::read_to_string(&counts)
        .expect("the handler noted its counts")
        .split_whitespace()
        .map(|n| n.parse().expect("a count"))
        .collect();
    assert_eq!(counts.len(), 100, "one note per run");
    let peak = counts.iter().copied().max().unwrap_or(0);
    assert!(peak >= 2, "chats served in parallel (peak {peak} at once)");
    assert!(
        peak <= 4,
        "HANDLER_CONCURRENCY=4 holds (peak {peak} at once)"
    );
}

#[test]
fn killing_a_worker_while_handlers_run_loses_nothing() {
    let (sandbox, tokens) = one_bot(17);
    let dir = temp_dir();
    let h = script(
        &dir,
        "slow.sh",
        "sleep 0.3\nprintf 'done %s' \"$MESSAGE_TEXT\"",
    );
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8 path")),
            ("RESTART_DELAY", "50"),
        ],
    );
    fleet.wait_ready(1);
    let mut ids = vec![];
    for n in 0..30 {
        let chat = 1 + n % 5;
        ids.push(sandbox.send_text(17, chat, chat, &format!("m{n}")).1);
    }
    wait_until(Duration::from_secs(10), "handlers running", || {
        sandbox
            .sent(17)
            .iter()
            .any(|m| m["method"] == "sendMessage")
    });
    kill(fleet.workers()[0], "KILL");
    fleet.wait_replies(&sandbox, 17, &ids, Duration::from_secs(60));
}

#[test]
fn two_hundred_messages_to_one_chat_all_arrive_in_order_under_429s() {
    let (sandbox, tokens) = one_bot(18);
    sandbox.limits(20, 0);
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("SEND_RATE_PER_CHAT", "0"), ("BOT_HANDLER", "builtin:echo")],
    );
    fleet.wait_ready(1);
    let want: Vec<String> = (0..200).map(|n| format!("m{n}")).collect();
    let ids: Vec<i64> = want
        .iter()
        .map(|t| sandbox.send_text(18, 9, 9, t).1)
        .collect();
    fleet.wait_replies(&sandbox, 18, &ids, Duration::from_secs(90));
    // Each exactly once and in order: a message retried after a 429 goes
    // back to the head of its chat before the chat's next one may go.
    assert_eq!(texts_to(&sandbox.sent(18), 9), want);
    fleet.wait_log("429 from Telegram", Duration::from_secs(1));
}

#[test]
fn clean_up_mediadir_wipes_the_bots_media_but_never_its_state() {
    let (sandbox, tokens) = one_bot(19);
    let dir = temp_dir();
    let vars = common::fleet::merged_env(&sandbox, &dir, &tokens, &[("CLEAN_UP_MEDIADIR", "true")]);
    let env_file = dir.join(".env");
    std::fs::write(&env_file, common::fleet::render_env(&vars)).expect("write .env");
    let stale = dir.join("media/bot-0/received/stale.txt");
    std::fs::create_dir_all(stale.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&stale, "old").expect("write");
    std::fs::create_dir_all(dir.join("state")).expect("mkdir state");
    std::fs::write(dir.join("state/offset-19"), "500019000\n").expect("write offset");
    let fleet = Fleet::start_in(dir, env_file);
    fleet.wait_ready(1);
    assert!(!stale.exists(), "the media dir was wiped");
    assert!(fleet.dir.join("media/bot-0").is_dir(), "and recreated");
    assert!(
        fleet.dir.join("state/offset-19").exists(),
        "STATE_DIR is never wiped"
    );
}
