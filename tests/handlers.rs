//! Handlers that make real bots (issue 15), the real binary against the
//! sandbox: a persistent Python handler keeps state in one process and
//! comes back from a kill with the update it held; an inline keyboard round
//! trip; file uploads from the data directory and nothing outside it; no
//! token reachable from a handler; refused methods; no process left behind;
//! every update type reaches the handler; a setting removed from `.env`
//! reaches running workers and handlers.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fleet::{alive, kill, Fleet};
use common::{temp_dir, wait_until, SandboxProc, TempDir};
use serde_json::json;

const USER: i64 = 4242;

fn token(id: u64) -> String {
    format!("{id}:HandlerSecret-{id}_zz")
}

fn one_bot(id: u64) -> (SandboxProc, Vec<String>) {
    let (sb, tokens) = SandboxProc::with_bots(&[id], token, "h");
    sb.add_chat(id, USER);
    (sb, tokens)
}

/// An executable script in `dir`.
fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn python3() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The texts the bot sent (sendMessage) to `chat`, in order.
fn texts(sb: &SandboxProc, bot: u64, chat: i64) -> Vec<String> {
    sb.sent(bot)
        .iter()
        .filter(|m| m["method"] == "sendMessage" && m["chat_id"].as_i64() == Some(chat))
        .filter_map(|m| m["text"].as_str().map(str::to_string))
        .collect()
}

fn data_dir(fleet: &Fleet) -> PathBuf {
    fleet.state_dir().join("data").join("bot-0")
}

fn calls_of(sb: &SandboxProc, bot: u64, method: &str) -> u64 {
    sb.bot_stats(bot)["calls"][method].as_u64().unwrap_or(0)
}

const COUNTER: &str = r#"#!/usr/bin/env python3
import json, os, sys, time
counts = {}
for line in sys.stdin:
    msg = json.loads(line)
    if msg["type"] != "update":
        continue
    m = msg["update"].get("message", {})
    chat = m["chat"]["id"]
    if m.get("text") == "slow" and not os.path.exists("busy.pid"):
        with open("busy.pid.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename("busy.pid.tmp", "busy.pid")
        time.sleep(30)
    counts[chat] = counts.get(chat, 0) + 1
    reply = {"type": "reply", "id": msg["id"],
             "calls": [{"method": "sendMessage", "text": "%d %s" % (counts[chat], m.get("text"))}]}
    print(json.dumps(reply), flush=True)
"#;

#[test]
fn a_persistent_python_handler_counts_in_one_process_and_survives_a_kill() {
    if !python3() {
        eprintln!("skipped: no python3");
        return;
    }
    let (sb, tokens) = one_bot(15_001);
    let dir = temp_dir();
    let h = script(&dir, "counter.py", COUNTER);
    let fleet = Fleet::start(
        &sb,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8 path")),
            ("BOT_HANDLER_MODE", "persistent"),
        ],
    );
    fleet.wait_ready(1);
    for t in ["a", "b", "c"] {
        sb.send_text(15_001, USER, USER, t);
    }
    wait_until(Duration::from_secs(15), "three counted replies", || {
        texts(&sb, 15_001, USER).len() >= 3
    });
    assert_eq!(texts(&sb, 15_001, USER), ["1 a", "2 b", "3 c"]);
    assert_eq!(
        fleet.count_in_logs("persistent handler started"),
        1,
        "one handler process: {}",
        fleet.logs()
    );

    // Killed while it holds an update: it comes back and answers it.
    sb.send_text(15_001, USER, USER, "slow");
    let busy = data_dir(&fleet).join("busy.pid");
    wait_until(
        Duration::from_secs(10),
        "the handler busy with the update",
        || busy.exists(),
    );
    let pid: u32 = std::fs::read_to_string(&busy)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    kill(pid, "KILL");
    wait_until(Duration::from_secs(15), "the held update answered", || {
        texts(&sb, 15_001, USER).len() >= 4
    });
    assert_eq!(
        texts(&sb, 15_001, USER)[3],
        "1 slow",
        "a new process answered it"
    );
    assert_eq!(fleet.count_in_logs("persistent handler started"), 2);
    assert!(!alive(pid));
}

#[test]
fn an_inline_keyboard_round_trip_with_the_example_bot() {
    if !python3() {
        eprintln!("skipped: no python3");
        return;
    }
    let (sb, tokens) = one_bot(15_002);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/counter_bot.py");
    let handler = format!("\"python3 {}\"", example.display());
    let fleet = Fleet::start(
        &sb,
        &tokens,
        &[
            ("BOT_HANDLER", &handler),
            ("BOT_HANDLER_MODE", "persistent"),
        ],
    );
    fleet.wait_ready(1);
    sb.send_text(15_002, USER, USER, "/counter");
    wait_until(Duration::from_secs(15), "the counter with buttons", || {
        texts(&sb, 15_002, USER).iter().any(|t| t == "Counter: 0")
    });
    let sent = sb.sent(15_002);
    let msg = sent
        .iter()
        .find(|m| m["text"] == "Counter: 0")
        .expect("the counter message");
    let message_id = msg["message_id"].as_i64().expect("message id");
    let pressed = sb.control_post(
        "bots/15002/press",
        json!({"user_id": USER, "chat_id": USER, "message_id": message_id, "data": "inc"}),
    );
    assert!(pressed["callback_query_id"].is_string(), "{pressed}");
    wait_until(Duration::from_secs(15), "the message edited", || {
        sb.sent(15_002)
            .iter()
            .any(|m| m["method"] == "editMessageText" && m["text"] == "Counter: 1")
    });
    wait_until(Duration::from_secs(5), "the press answered", || {
        calls_of(&sb, 15_002, "answerCallbackQuery") >= 1
    });
    let edit = sb
        .sent(15_002)
        .into_iter()
        .find(|m| m["method"] == "editMessageText")
        .expect("an edit");
    assert_eq!(
        edit["message_id"].as_i64(),
        Some(message_id),
        "the same message"
    );
    assert!(fleet.logs().contains("counter bot for @h15002_bot"));
}

#[test]
fn an_exec_handler_sends_a_photo_from_its_data_dir_and_nothing_outside() {
    let (sb, tokens) = one_bot(15_003);
    let dir = temp_dir();
    let h = script(
        &dir,
        "photo.sh",
        "#!/bin/sh\ncase \"$MESSAGE_TEXT\" in\n\
         photo) echo '{\"method\":\"sendPhoto\",\"photo\":\"file:chart.png\",\"caption\":\"chart\"}';;\n\
         env) echo '{\"method\":\"sendDocument\",\"document\":\"file:../../.env\"}'; echo '{\"method\":\"sendMessage\",\"text\":\"after\"}';;\n\
         esac\n",
    );
    let fleet = Fleet::start(&sb, &tokens, &[("BOT_HANDLER", h.to_str().expect("utf-8"))]);
    fleet.wait_ready(1);
    let data = data_dir(&fleet);
    assert!(data.is_dir(), "the data dir is created");
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(data.join("chart.png"), &bytes).expect("write chart");
    sb.send_text(15_003, USER, USER, "photo");
    wait_until(Duration::from_secs(15), "the photo", || {
        sb.sent(15_003).iter().any(|m| m["method"] == "sendPhoto")
    });
    let photo = sb
        .sent(15_003)
        .into_iter()
        .find(|m| m["method"] == "sendPhoto")
        .expect("photo");
    let uploaded = sb.file_bytes(photo["file_id"].as_str().expect("file id"));
    assert_eq!(common::sha256_hex(&uploaded), common::sha256_hex(&bytes));

    sb.send_text(15_003, USER, USER, "env");
    wait_until(
        Duration::from_secs(15),
        "the message after the refused file",
        || texts(&sb, 15_003, USER).iter().any(|t| t == "after"),
    );
    assert!(
        !sb.sent(15_003)
            .iter()
            .any(|m| m["method"] == "sendDocument"),
        "nothing outside the data dir is uploaded"
    );
    assert!(
        fleet.logs().contains("may not leave BOT_DATA_DIR"),
        "{}",
        fleet.logs()
    );
}

#[test]
fn a_handler_finds_no_token_anywhere() {
    let (sb, tokens) = one_bot(15_004);
    let dir = temp_dir();
    let secret = "HandlerSecret-15004_zz";
    // Reads the parent's environ, every process's environ and .env in its
    // working directory, and reports whether the secret showed up.
    let h = script(
        &dir,
        "snoop.sh",
        &format!(
            "#!/bin/sh\n{{ cat /proc/$PPID/environ; cat /proc/[0-9]*/environ; \
             cat .env; cat ../.env; cat ../../.env; env; }} 2>/dev/null | tr '\\0' '\\n' > seen.txt\n\
             if grep -q '{secret}' seen.txt; then echo LEAK; else echo clean $(wc -l < seen.txt); fi\n"
        ),
    );
    let fleet = Fleet::start_with_process_env(
        &sb,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8")),
            ("HANDLER_TIMEOUT_SECS", "60"),
        ],
        // The supervisor's own environment holds the token too.
        &[("TELEGRAM_BOT_TOKENS", tokens[0].as_str())],
    );
    fleet.wait_ready(1);
    let (_, m) = sb.send_text(15_004, USER, USER, "snoop");
    wait_until(Duration::from_secs(60), "the handler's report", || {
        !common::replies_to(&sb.sent(15_004), m).is_empty()
    });
    let reply = common::replies_to(&sb.sent(15_004), m).join("");
    assert!(reply.starts_with("clean "), "{reply}");
    let lines: usize = reply["clean ".len()..].trim().parse().expect("a count");
    assert!(
        lines > 0,
        "it did read something (its own environment at least)"
    );
}

#[test]
fn refused_methods_are_refused_and_the_bot_keeps_polling() {
    let (sb, tokens) = one_bot(15_005);
    let dir = temp_dir();
    let h = script(
        &dir,
        "bad.sh",
        "#!/bin/sh\necho '{\"method\":\"logOut\"}'\necho '{\"method\":\"getUpdates\"}'\n\
         echo '{\"method\":\"close\"}'\necho \"{\\\"method\\\":\\\"sendMessage\\\",\\\"text\\\":\\\"after $MESSAGE_TEXT\\\"}\"\n",
    );
    let fleet = Fleet::start(&sb, &tokens, &[("BOT_HANDLER", h.to_str().expect("utf-8"))]);
    fleet.wait_ready(1);
    sb.send_text(15_005, USER, USER, "one");
    wait_until(Duration::from_secs(15), "the first answer", || {
        texts(&sb, 15_005, USER).iter().any(|t| t == "after one")
    });
    sb.send_text(15_005, USER, USER, "two");
    wait_until(Duration::from_secs(15), "the bot still polling", || {
        texts(&sb, 15_005, USER).iter().any(|t| t == "after two")
    });
    assert_eq!(calls_of(&sb, 15_005, "logOut"), 0);
    assert_eq!(calls_of(&sb, 15_005, "close"), 0);
    assert!(
        fleet.logs().contains("\"logOut\" is refused"),
        "{}",
        fleet.logs()
    );
}

/// Live processes whose command line is `sleep <secs>` and whose working
/// directory is `dir`.
fn sleeps_in(dir: &Path, secs: &str) -> Vec<u32> {
    let want = format!("sleep\0{secs}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d == dir)
                && alive(*pid)
        })
        .collect()
}

#[test]
fn a_background_process_of_an_exec_handler_does_not_outlive_its_run() {
    let (sb, tokens) = one_bot(15_006);
    let fleet = Fleet::start(
        &sb,
        &tokens,
        &[("BOT_HANDLER", "\"sh -c 'sleep 300 & echo hi'\"")],
    );
    fleet.wait_ready(1);
    let data = data_dir(&fleet)
        .canonicalize()
        .expect("the data dir exists");
    // The check sees a sleep there when there is one.
    let mut own = std::process::Command::new("sleep")
        .arg("300")
        .current_dir(&data)
        .spawn()
        .expect("sleep starts");
    wait_until(Duration::from_secs(5), "our own sleep seen", || {
        sleeps_in(&data, "300") == [own.id()]
    });
    own.kill().expect("kill our sleep");
    own.wait().expect("reap our sleep");
    sb.send_text(15_006, USER, USER, "go");
    wait_until(Duration::from_secs(15), "hi", || {
        texts(&sb, 15_006, USER).iter().any(|t| t.trim() == "hi")
    });
    wait_until(Duration::from_secs(5), "no sleep left", || {
        sleeps_in(&data, "300").is_empty()
    });
}

#[test]
fn every_update_type_reaches_the_handler_and_a_strangers_press_is_refused() {
    let (sb, tokens) = one_bot(15_007);
    let dir = temp_dir();
    let h = script(
        &dir,
        "kind.sh",
        "#!/bin/sh\necho \"{\\\"method\\\":\\\"sendMessage\\\",\\\"chat_id\\\":4242,\\\"text\\\":\\\"$UPDATE_TYPE $USER_ID\\\"}\"\n",
    );
    let fleet = Fleet::start(
        &sb,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8")),
            ("ALLOWED_USER_IDS", "4242"),
        ],
    );
    fleet.wait_ready(1);
    let chat = json!({"id": USER, "type": "private", "first_name": "U"});
    let from = json!({"id": USER, "is_bot": false, "first_name": "U"});
    sb.inject_update(
        15_007,
        json!({"edited_message": {"message_id": 1, "date": 1, "edit_date": 2, "chat": chat, "from": from, "text": "x"}}),
    );
    sb.inject_update(
        15_007,
        json!({"my_chat_member": {"chat": chat, "from": from, "date": 1,
            "old_chat_member": {"status": "member", "user": from},
            "new_chat_member": {"status": "kicked", "user": from, "until_date": 0}}}),
    );
    wait_until(Duration::from_secs(15), "both updates handled", || {
        texts(&sb, 15_007, USER).len() >= 2
    });
    assert_eq!(
        texts(&sb, 15_007, USER),
        ["edited_message 4242", "my_chat_member 4242"],
        "in order, per chat"
    );
    // A stranger's button press: a refusal on the button, not the handler.
    let stranger = json!({"id": 999, "is_bot": false, "first_name": "S"});
    let before = calls_of(&sb, 15_007, "answerCallbackQuery");
    sb.inject_update(
        15_007,
        json!({"callback_query": {"id": "cq-stranger", "from": stranger, "chat_instance": "1", "data": "x",
            "message": {"message_id": 1, "date": 1, "chat": chat}}}),
    );
    wait_until(Duration::from_secs(15), "the refusal", || {
        fleet.logs().contains("refused an update from user 999")
    });
    wait_until(Duration::from_secs(5), "the answer call", || {
        calls_of(&sb, 15_007, "answerCallbackQuery") > before
    });
    assert_eq!(
        texts(&sb, 15_007, USER).len(),
        2,
        "the handler never saw it"
    );
}

#[test]
fn a_setting_removed_from_env_is_gone_from_workers_and_handlers() {
    let (sb, tokens) = one_bot(15_008);
    let dir = temp_dir();
    let h = script(&dir, "key.sh", "#!/bin/sh\necho \"key=${MY_KEY:-none}\"\n");
    let fleet = Fleet::start(
        &sb,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8")),
            ("ADMIN_USER_IDS", "4242"),
            ("MY_KEY", "k1"),
        ],
    );
    fleet.wait_ready(1);
    sb.send_text(15_008, USER, USER, "/config_status");
    sb.send_text(15_008, USER, USER, "x");
    wait_until(Duration::from_secs(15), "the key", || {
        texts(&sb, 15_008, USER)
            .iter()
            .any(|t| t.trim() == "key=k1")
    });
    assert!(
        !texts(&sb, 15_008, USER)
            .iter()
            .any(|t| t.contains("admins only")),
        "an admin at first"
    );
    let env = std::fs::read_to_string(&fleet.env_file).expect("read .env");
    let kept: String = env
        .lines()
        .filter(|l| !l.starts_with("ADMIN_USER_IDS=") && !l.starts_with("MY_KEY="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&fleet.env_file, kept).expect("rewrite .env");
    fleet.wait_log("settings updated", Duration::from_secs(15));
    sb.send_text(15_008, USER, USER, "/config_status");
    sb.send_text(15_008, USER, USER, "y");
    wait_until(Duration::from_secs(15), "the key gone", || {
        texts(&sb, 15_008, USER)
            .iter()
            .any(|t| t.trim() == "key=none")
    });
    assert!(
        texts(&sb, 15_008, USER)
            .iter()
            .any(|t| t.contains("admins only")),
        "no longer an admin: {:?}",
        texts(&sb, 15_008, USER)
    );
}

/// A fleet of one bot whose persistent handler is the sh script `body`
/// (with `extra` settings), ready; and the bot's data dir, canonical.
fn sh_persistent(
    sb: &SandboxProc,
    tokens: &[String],
    dir: &TempDir,
    body: &str,
    extra: &[(&str, &str)],
) -> (Fleet, PathBuf) {
    let h = script(dir, "handler.sh", body);
    let mut settings = vec![
        ("BOT_HANDLER", h.to_str().expect("utf-8")),
        ("BOT_HANDLER_MODE", "persistent"),
    ];
    settings.extend_from_slice(extra);
    let fleet = Fleet::start(sb, tokens, &settings);
    fleet.wait_ready(1);
    let data = data_dir(&fleet)
        .canonicalize()
        .expect("the data dir exists");
    (fleet, data)
}

/// SIGTERM to the fleet: it stops, and no `sleep <secs>` of its handler
/// is left in `data`.
fn stop_leaves_no_sleep(fleet: &mut Fleet, data: &Path, secs: &str) {
    fleet.signal("TERM");
    assert!(
        fleet.wait_exit(Duration::from_secs(15)).is_some(),
        "the fleet stops"
    );
    wait_until(
        Duration::from_secs(5),
        "no sleep left after the stop",
        || sleeps_in(data, secs).is_empty(),
    );
}

/// A persistent handler in sh: starts a `sleep 300` of its own, ignores
/// updates whose text is "ignore", answers "ok" to the rest.
const SILENT_SOMETIMES: &str = r#"#!/bin/sh
read hello
sleep 300 &
while read line; do
  case "$line" in *'"type":"update"'*) ;; *) continue;; esac
  id=${line#*\"id\":\"}; id=${id%%\"*}
  case "$line" in *'"text":"ignore"'*) continue;; esac
  echo "{\"type\":\"reply\",\"id\":\"$id\",\"calls\":[{\"method\":\"sendMessage\",\"text\":\"ok\"}]}"
done
"#;

#[test]
fn a_missed_deadline_gets_the_error_and_a_stop_leaves_no_process() {
    let (sb, tokens) = one_bot(15_009);
    let dir = temp_dir();
    let (mut fleet, data) = sh_persistent(
        &sb,
        &tokens,
        &dir,
        SILENT_SOMETIMES,
        &[("HANDLER_TIMEOUT_SECS", "1")],
    );
    sb.send_text(15_009, USER, USER, "ignore");
    wait_until(Duration::from_secs(15), "the timeout error", || {
        texts(&sb, 15_009, USER)
            .iter()
            .any(|t| t.contains("too long"))
    });
    fleet.wait_log("stays silent; restarting it", Duration::from_secs(10));
    sb.send_text(15_009, USER, USER, "hi");
    wait_until(Duration::from_secs(15), "the next update answered", || {
        texts(&sb, 15_009, USER).iter().any(|t| t == "ok")
    });
    wait_until(
        Duration::from_secs(5),
        "the handler's own sleep running",
        || sleeps_in(&data, "300").len() == 1,
    );
    stop_leaves_no_sleep(&mut fleet, &data, "300");
}

/// A persistent handler in sh that starts a `sleep 1000` of its own (a
/// grandchild of the worker) and answers "ok" to every update.
const WITH_A_CHILD: &str = r#"#!/bin/sh
read hello
sleep 1000 &
while read line; do
  case "$line" in *'"type":"update"'*) ;; *) continue;; esac
  id=${line#*\"id\":\"}; id=${id%%\"*}
  echo "{\"type\":\"reply\",\"id\":\"$id\",\"calls\":[{\"method\":\"sendMessage\",\"text\":\"ok\"}]}"
done
"#;

#[test]
fn a_killed_workers_handler_leaves_no_grandchild() {
    let (sb, tokens) = one_bot(15_021);
    let dir = temp_dir();
    let (mut fleet, data) = sh_persistent(&sb, &tokens, &dir, WITH_A_CHILD, &[]);
    sb.send_text(15_021, USER, USER, "hi");
    wait_until(Duration::from_secs(15), "the handler answers", || {
        texts(&sb, 15_021, USER).iter().any(|t| t == "ok")
    });
    let mut grandchild = Vec::new();
    wait_until(Duration::from_secs(5), "the handler's own sleep", || {
        grandchild = sleeps_in(&data, "1000");
        grandchild.len() == 1
    });
    let worker = fleet.workers()[0];
    // The handler dies by its parent-death signal; its sleep is orphaned.
    kill(worker, "KILL");
    wait_until(
        Duration::from_secs(5),
        "the orphaned sleep gone after the worker's SIGKILL",
        || !alive(grandchild[0]),
    );
    // The fleet goes on: a new worker (and handler) answers.
    wait_until(Duration::from_secs(15), "a new worker", || {
        fleet.workers().iter().any(|p| *p != worker)
    });
    sb.send_text(15_021, USER, USER, "again");
    wait_until(Duration::from_secs(15), "the new worker answers", || {
        texts(&sb, 15_021, USER)
            .iter()
            .filter(|t| *t == "ok")
            .count()
            >= 2
    });
    stop_leaves_no_sleep(&mut fleet, &data, "1000");
}

#[test]
fn as_root_handler_user_runs_handlers_as_that_user() {
    // Only as root: `id -u` of this test process.
    let me = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("id runs");
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        eprintln!("skipped: not root");
        return;
    }
    let (sb, tokens) = one_bot(15_010);
    let dir = temp_dir();
    let h = script(
        &dir,
        "who.sh",
        "#!/bin/sh\necho uid=$(id -u) > who\ncat who\n",
    );
    let fleet = Fleet::start(
        &sb,
        &tokens,
        &[
            ("BOT_HANDLER", h.to_str().expect("utf-8")),
            ("HANDLER_USER", "nobody"),
        ],
    );
    fleet.wait_ready(1);
    sb.send_text(15_010, USER, USER, "who");
    wait_until(Duration::from_secs(15), "the handler's uid", || {
        texts(&sb, 15_010, USER)
            .iter()
            .any(|t| t.starts_with("uid="))
    });
    let uid = texts(&sb, 15_010, USER)
        .into_iter()
        .find(|t| t.starts_with("uid="))
        .expect("a uid line");
    assert_ne!(uid.trim(), "uid=0", "not root");
    assert!(
        data_dir(&fleet).join("who").is_file(),
        "it can write its own data dir"
    );
}

#[test]
fn the_data_dir_waits_for_a_program_handler_and_is_there_when_one_first_runs() {
    let (sb, tokens) = one_bot(15_011);
    let fleet = Fleet::start(&sb, &tokens, &[("BOT_HANDLER", "builtin:echo")]);
    fleet.wait_ready(1);
    let data = data_dir(&fleet);
    assert!(!data.exists(), "a built-in handler needs no data dir");
    // A reload brings a program handler: it runs in its data dir.
    let env = std::fs::read_to_string(&fleet.env_file).expect("read .env");
    let env: String = env
        .lines()
        .filter(|l| !l.starts_with("BOT_HANDLER="))
        .map(|l| format!("{l}\n"))
        .chain(["BOT_HANDLER=\"sh -c pwd\"\n".to_string()])
        .collect();
    std::fs::write(&fleet.env_file, env).expect("write .env");
    wait_until(
        Duration::from_secs(20),
        "the handler answers from its dir",
        || {
            sb.send_text(15_011, USER, USER, "where");
            std::thread::sleep(Duration::from_millis(300));
            texts(&sb, 15_011, USER)
                .iter()
                .any(|t| t.contains("data/bot-0"))
        },
    );
    assert!(data.is_dir(), "made before the program handler ran");
}
