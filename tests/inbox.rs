//! The inbox (issue 11): a busy chat never stalls a bot, and no update is
//! lost, repeated or stranded. The real binary against the sandbox.

mod common;

use common::fleet::{kill, Fleet};
use common::{body_json, http, temp_dir, wait_until, SandboxProc, TempDir};
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn token(id: u64) -> String {
    format!("{id}:inbox-test-secret-{id}")
}

fn one_bot(id: u64) -> (SandboxProc, Vec<String>) {
    SandboxProc::with_bots(&[id], token, "inbox")
}

/// An executable shell script in `dir`.
fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Replies per message id they answer (quoted, or an echo of its text:
/// builtin:echo quotes nothing in a private chat).
fn replies_per_message(sandbox: &SandboxProc, id: u64) -> HashMap<i64, usize> {
    let mut n = HashMap::new();
    for m in sandbox.sent(id) {
        if let Some(to) = sandbox.answered(id, &m) {
            *n.entry(to).or_insert(0) += 1;
        }
    }
    n
}

/// The texts sent to one chat, in the order the sandbox got them.
fn texts_to(sent: &[Value], chat: i64) -> Vec<String> {
    sent.iter()
        .filter(|m| m["chat_id"].as_i64() == Some(chat) && m["method"] == "sendMessage")
        .map(|m| m["text"].as_str().unwrap_or("").to_string())
        .collect()
}

fn health(fleet: &Fleet) -> Value {
    let url = format!("{}/health", fleet.health_base());
    let mut response = http().get(&url).call().expect("/health answers");
    body_json(&mut response)
}

fn get_updates_calls(sandbox: &SandboxProc, id: u64) -> u64 {
    sandbox.bot_stats(id)["calls"]["getUpdates"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_busy_chat_never_holds_back_another_and_a_reload_answers_each_once_in_order() {
    let id = 91001;
    let (sandbox, tokens) = one_bot(id);
    // Default pacing for chats; the bot bucket off so only the chat paces.
    let mut fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("BOT_HANDLER", "builtin:echo"), ("SEND_RATE_PER_CHAT", "1")],
    );
    fleet.wait_ready(1);
    let (a, b) = (501i64, 502i64);
    let mut a_msgs = Vec::new();
    for n in 0..300 {
        a_msgs.push(sandbox.send_text(id, a, a, &format!("a{n}")).1);
    }
    // Let the worker fetch A's backlog first.
    wait_until(Duration::from_secs(10), "A's backlog fetched", || {
        sandbox.bot_stats(id)["pending_updates"].as_u64() == Some(0)
    });
    let t0 = Instant::now();
    let (_, ping) = sandbox.send_text(id, b, b, "/ping");
    wait_until(Duration::from_secs(2), "B answered within 2 s", || {
        replies_per_message(&sandbox, id).contains_key(&ping)
    });
    let waited = t0.elapsed();
    let before = texts_to(&sandbox.sent(id), a).len();
    assert!(before < 50, "A is paced meanwhile ({before} sent)");
    // /health shows A's backlog (with the next heartbeat).
    wait_until(Duration::from_secs(10), "/health shows the backlog", || {
        let h = health(&fleet);
        let w = &h["workers"][0];
        w["inbox_depth"].as_u64().unwrap_or(0) > 100 && w["oldest_pending_age"].as_f64().is_some()
    });
    // Unpace by a reload: the rest of A goes at once, each once, in order.
    let env = std::fs::read_to_string(&fleet.env_file).expect("read .env");
    std::fs::write(
        &fleet.env_file,
        env.replace("SEND_RATE_PER_CHAT=1", "SEND_RATE_PER_CHAT=0"),
    )
    .expect("write .env");
    fleet.wait_replies(&sandbox, id, &a_msgs, Duration::from_secs(60));
    let counts = replies_per_message(&sandbox, id);
    for m in &a_msgs {
        assert_eq!(counts.get(m), Some(&1), "message {m} answered once");
    }
    let want: Vec<String> = (0..300).map(|n| format!("a{n}")).collect();
    assert_eq!(texts_to(&sandbox.sent(id), a), want, "A in order");
    eprintln!("B answered in {waited:?} behind 300 paced messages of A");
    fleet.signal("TERM");
    assert!(fleet.wait_exit(Duration::from_secs(15)).is_some());
}

#[test]
fn a_slow_handler_in_one_chat_holds_back_none_of_thirty_others() {
    let id = 91002;
    let (sandbox, tokens) = one_bot(id);
    let dir = temp_dir();
    let h = script(
        &dir,
        "slow.sh",
        "[ \"$CHAT_ID\" = 999 ] && sleep 15\nprintf '%s' \"$MESSAGE_TEXT\"",
    );
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("BOT_HANDLER", h.to_str().expect("utf-8 path"))],
    );
    fleet.wait_ready(1);
    let (_, slow) = sandbox.send_text(id, 999, 999, "slow");
    let mut msgs = Vec::new();
    for n in 0..10 {
        for chat in 1..=30 {
            msgs.push(sandbox.send_text(id, chat, chat, &format!("{chat}-{n}")).1);
        }
    }
    let t0 = Instant::now();
    fleet.wait_replies(&sandbox, id, &msgs, Duration::from_secs(60));
    eprintln!("300 answered in {:?} beside the slow one", t0.elapsed());
    let counts = replies_per_message(&sandbox, id);
    assert!(
        !counts.contains_key(&slow),
        "all 300 were answered before the slow one"
    );
    fleet.wait_replies(&sandbox, id, &[slow], Duration::from_secs(30));
}

#[test]
fn kill_nine_at_random_points_repeats_only_updates_in_hand() {
    let id = 91003;
    let (sandbox, tokens) = one_bot(id);
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("BOT_HANDLER", "builtin:echo"), ("RESTART_DELAY", "50")],
    );
    fleet.wait_ready(1);
    let chats = 8i64;
    let kills = 6;
    let mut msgs = Vec::new();
    // A pseudo-random spacing of the kills, fixed per run.
    let mut seed = std::process::id() as u64 | 1;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for k in 0..kills {
        for n in 0..40 {
            let chat = (n % chats) + 1;
            msgs.push(sandbox.send_text(id, chat, chat, &format!("{k}-{n}")).1);
        }
        std::thread::sleep(Duration::from_millis(next() % 300));
        let workers = fleet.workers();
        for w in &workers {
            kill(*w, "KILL");
        }
        wait_until(Duration::from_secs(20), "a new worker", || {
            let now = fleet.workers();
            !now.is_empty() && now.iter().all(|w| !workers.contains(w))
        });
    }
    fleet.wait_replies(&sandbox, id, &msgs, Duration::from_secs(60));
    let counts = replies_per_message(&sandbox, id);
    let repeats: usize = msgs
        .iter()
        .map(|m| counts.get(m).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    // At a kill, at most one update per chat is in hand.
    assert!(
        repeats <= kills * chats as usize,
        "{repeats} repeats after {kills} kills of {chats} chats"
    );
    eprintln!("{repeats} repeated replies after {kills} kills");
}

#[test]
fn sigterm_mid_flood_then_a_restart_repeats_nothing() {
    let id = 91004;
    let (sandbox, tokens) = one_bot(id);
    let mut fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[("BOT_HANDLER", "builtin:echo"), ("SEND_RATE_PER_CHAT", "5")],
    );
    fleet.wait_ready(1);
    let mut msgs = Vec::new();
    for n in 0..40 {
        for chat in 1..=5 {
            msgs.push(sandbox.send_text(id, chat, chat, &format!("{chat}-{n}")).1);
        }
    }
    wait_until(Duration::from_secs(10), "some replies", || {
        replies_per_message(&sandbox, id).len() >= 20
    });
    fleet.signal("TERM");
    assert!(
        fleet.wait_exit(Duration::from_secs(15)).is_some(),
        "the fleet stops"
    );
    let first = replies_per_message(&sandbox, id).len();
    assert!(first < msgs.len(), "stopped mid-flood ({first} answered)");
    fleet.respawn();
    fleet.wait_ready(1);
    fleet.wait_replies(&sandbox, id, &msgs, Duration::from_secs(60));
    let counts = replies_per_message(&sandbox, id);
    for m in &msgs {
        assert_eq!(counts.get(m), Some(&1), "message {m} answered exactly once");
    }
    for chat in 1..=5 {
        let want: Vec<String> = (0..40).map(|n| format!("{chat}-{n}")).collect();
        assert_eq!(
            texts_to(&sandbox.sent(id), chat),
            want,
            "chat {chat} in order"
        );
    }
}

#[test]
fn an_offset_far_ahead_is_resynchronised_without_spinning() {
    let id = 91005;
    let (sandbox, tokens) = one_bot(id);
    let dir = temp_dir();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("mkdir state");
    std::fs::write(state.join(format!("offset-{id}")), "900000000000\n").expect("write offset");
    let vars = common::fleet::merged_env(&sandbox, &dir, &tokens, &[]);
    let env_file = dir.join(".env");
    std::fs::write(&env_file, common::fleet::render_env(&vars)).expect("write .env");
    let fleet = Fleet::start_in(dir, env_file);
    fleet.wait_ready(1);
    let t0 = Instant::now();
    let (_, ping) = sandbox.send_text(id, 7, 7, "/ping");
    wait_until(Duration::from_secs(5), "an answer within 5 s", || {
        replies_per_message(&sandbox, id).contains_key(&ping)
    });
    eprintln!("answered in {:?}", t0.elapsed());
    fleet.wait_log("resynchronising", Duration::from_secs(2));
    // Idle now: getUpdates at the long-poll rate (POLL_TIMEOUT_SECS=2).
    let before = get_updates_calls(&sandbox, id);
    std::thread::sleep(Duration::from_secs(4));
    let calls = get_updates_calls(&sandbox, id) - before;
    assert!(calls <= 5, "{calls} getUpdates in 4 s");
    let (_, again) = sandbox.send_text(id, 7, 7, "/ping");
    wait_until(Duration::from_secs(5), "the next answer", || {
        replies_per_message(&sandbox, id).contains_key(&again)
    });
    assert_eq!(fleet.count_in_logs("resynchronising"), 1, "logged once");
}

#[test]
fn an_inbox_at_its_cap_pauses_fetching_says_why_and_resumes() {
    let id = 91006;
    let (sandbox, tokens) = one_bot(id);
    let dir = temp_dir();
    // Slow enough that the pause spans a heartbeat (every 5 s).
    let h = script(&dir, "slow.sh", "sleep 1\nprintf '%s' \"$MESSAGE_TEXT\"");
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8 path")),
            ("INBOX_MAX_UPDATES", "3"),
        ],
    );
    fleet.wait_ready(1);
    let mut msgs = Vec::new();
    for n in 0..12 {
        msgs.push(sandbox.send_text(id, 5, 5, &format!("m{n}")).1);
    }
    fleet.wait_log("fetching paused", Duration::from_secs(10));
    let mut saw_paused = false;
    wait_until(Duration::from_secs(10), "/health says why", || {
        let h = health(&fleet);
        let w = &h["workers"][0];
        assert!(w["inbox_depth"].as_u64().unwrap_or(0) <= 3, "cap held: {w}");
        saw_paused |= w["fetch_paused"]
            .as_str()
            .is_some_and(|s| s.contains("INBOX_MAX_UPDATES"));
        saw_paused
    });
    fleet.wait_replies(&sandbox, id, &msgs, Duration::from_secs(60));
    fleet.wait_log("fetching resumed", Duration::from_secs(5));
    let counts = replies_per_message(&sandbox, id);
    for m in &msgs {
        assert_eq!(counts.get(m), Some(&1), "message {m} answered once");
    }
}

#[test]
fn a_full_disk_pauses_fetching_and_resumes_by_itself() {
    let id = 91007;
    let (sandbox, tokens) = one_bot(id);
    // dash counts `ulimit -f` in 512-byte blocks: files up to 40 KB.
    let fleet = Fleet::start_with_ulimit(
        &sandbox,
        &tokens,
        &[("BOT_HANDLER", "builtin:echo")],
        "-f 80",
    );
    fleet.wait_ready(1);
    let mut msgs = Vec::new();
    for round in 0..6 {
        for n in 0..50 {
            let chat = n % 5 + 1;
            msgs.push(sandbox.send_text(id, chat, chat, &format!("{round}-{n}")).1);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    fleet.wait_replies(&sandbox, id, &msgs, Duration::from_secs(60));
    fleet.wait_log(
        "fetching paused: cannot write the inbox",
        Duration::from_secs(2),
    );
    fleet.wait_log("fetching resumed", Duration::from_secs(2));
    let counts = replies_per_message(&sandbox, id);
    for m in &msgs {
        assert_eq!(counts.get(m), Some(&1), "message {m} answered once");
    }
}

#[test]
fn replies_to_a_group_keep_the_group_rate() {
    let id = 91008;
    let (sandbox, tokens) = one_bot(id);
    // 2 a second (burst 1) instead of 20 a minute, to keep the test short.
    let fleet = Fleet::start(
        &sandbox,
        &tokens,
        &[
            ("BOT_HANDLER", "builtin:echo"),
            ("SEND_RATE_PER_GROUP", "2"),
        ],
    );
    fleet.wait_ready(1);
    let group = -4242i64;
    let mut msgs = Vec::new();
    for n in 0..10 {
        msgs.push(sandbox.send_text(id, 77, group, &format!("g{n}")).1);
    }
    let (_, private) = sandbox.send_text(id, 78, 78, "/ping");
    wait_until(
        Duration::from_secs(3),
        "a private chat is not held back",
        || replies_per_message(&sandbox, id).contains_key(&private),
    );
    fleet.wait_replies(&sandbox, id, &msgs, Duration::from_secs(30));
    let at: Vec<f64> = sandbox
        .sent(id)
        .iter()
        .filter(|m| m["chat_id"].as_i64() == Some(group))
        .map(|m| m["at_us"].as_f64().unwrap_or(0.0) / 1e6)
        .collect();
    assert_eq!(at.len(), 10);
    // A token bucket of rate r and burst 1 sends at most 1 + r·t in any t.
    for i in 0..at.len() {
        for j in i + 1..at.len() {
            let allowed = 1.0 + 2.0 * (at[j] - at[i]) + 0.2;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} replies in {:.2} s",
                j - i + 1,
                at[j] - at[i]
            );
        }
    }
}

#[test]
fn another_api_url_starts_the_bot_afresh_and_says_so() {
    let id = 91009;
    let (first, tokens) = one_bot(id);
    let mut fleet = Fleet::start(&first, &tokens, &[]);
    fleet.wait_ready(1);
    let (_, m) = first.send_text(id, 3, 3, "/ping");
    fleet.wait_replies(&first, id, &[m], Duration::from_secs(10));
    fleet.signal("TERM");
    assert!(fleet.wait_exit(Duration::from_secs(15)).is_some());
    // The same STATE_DIR against another server (its ids start afresh).
    let (second, _) = one_bot(id);
    let env = std::fs::read_to_string(&fleet.env_file).expect("read .env");
    std::fs::write(&fleet.env_file, env.replace(first.url(), second.url())).expect("write .env");
    fleet.respawn();
    fleet.wait_ready(1);
    fleet.wait_log(
        "belonged to another TELEGRAM_API_URL",
        Duration::from_secs(5),
    );
    let (_, m) = second.send_text(id, 3, 3, "/ping");
    fleet.wait_replies(&second, id, &[m], Duration::from_secs(10));
    let journal = fleet.state_dir().join(format!("inbox-{id}"));
    assert!(
        journal.join("journal.other-url").exists(),
        "the old journal kept aside"
    );
}
