//! Operations that never mislead (issue 13), from the outside: `health` and
//! `status` find the fleet the way `stop` does (PORT from `.env`, a
//! fallback port); liveness and readiness; a paused supervisor and a worker
//! waiting for its poller lock are not mistaken for hung; the open-file
//! limit is raised (and a fleet that cannot fit says so once); the health
//! server under 2,000 idle connections. All against the sandbox on loopback.

mod common;

use common::fleet::{alive, kill, Fleet};
use common::{botfleet_output, http_with_timeout, temp_dir, wait_until, SandboxProc};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn token(id: u64) -> String {
    format!("{id}:probe-test-secret-{id}")
}

/// Runs `botfleet ARGS` in `dir` to completion (killed after 30 s), with
/// none of the test process's PORT or tokens.
fn botfleet_in(dir: &Path, args: &[&str]) -> Output {
    botfleet_output(args, |cmd| {
        cmd.current_dir(dir);
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fleet_dir(fleet: &Fleet) -> &Path {
    fleet
        .env_file
        .parent()
        .expect("the .env is in the fleet's dir")
}

/// GET `url`: (status, JSON body or Null).
fn get(url: &str) -> (u16, Value) {
    match http_with_timeout(Duration::from_secs(5)).get(url).call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let body = r.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&body).unwrap_or(Value::Null))
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// `botfleet health` with no options in the fleet's directory exits 0.
fn assert_health_finds(fleet: &Fleet, n: usize) {
    let dir = fleet_dir(fleet);
    let out = botfleet_in(dir, &["health"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), format!("healthy: {n}/{n} workers ready\n")),
        "{}",
        text(&out.stderr)
    );
    let out = botfleet_in(dir, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn health_in_the_fleet_dir_finds_port_9100_from_env() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[13001], token, "probe");
    // PORT=9100 in .env and nothing in the environment: health must read
    // the file (or the address the fleet recorded if 9100 was busy).
    let fleet = Fleet::start(&sandbox, &tokens, &[("PORT", "9100")]);
    fleet.wait_ready(1);
    let _base = fleet.health_base();
    assert_health_finds(&fleet, 1);
}

#[test]
fn health_in_the_fleet_dir_finds_the_fallback_port_when_8001_is_held() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[13011], token, "probe");
    // Another socket holds 8001 (ours, or whoever already had it).
    let _held = std::net::TcpListener::bind(("127.0.0.1", 8001));
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", 8001)).is_err(),
        "8001 is held"
    );
    // No PORT at all: the default 8001, busy; the fleet falls back.
    let fleet = Fleet::start(&sandbox, &tokens, &[("PORT", "")]);
    fleet.wait_ready(1);
    let base = fleet.health_base();
    assert!(!base.ends_with(":8001"), "{base}");
    assert_health_finds(&fleet, 1);
}

#[test]
fn a_revoked_token_degrades_the_fleet_but_liveness_passes() {
    let ids = [13021, 13022, 13023];
    let (sandbox, tokens) = SandboxProc::with_bots(&ids, token, "probe");
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(3);
    let base = fleet.health_base();
    assert_eq!(get(&format!("{base}/health/ready")).0, 200);
    sandbox.revoke(ids[1]);
    wait_until(Duration::from_secs(30), "bot 13022 failed", || {
        get(&format!("{base}/health")).1["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["state"] == "failed"))
    });
    let (live, body) = get(&format!("{base}/health/live"));
    assert_eq!(live, 200, "a revoked token does not fail liveness: {body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let (ready, body) = get(&format!("{base}/health/ready"));
    assert_eq!(ready, 503, "{body}");
    let failed: Vec<&Value> = body["workers"]
        .as_array()
        .map(|ws| ws.iter().filter(|w| w["state"] == "failed").collect())
        .unwrap_or_default();
    assert_eq!(failed.len(), 1, "{body}");
    assert_eq!(failed[0]["bot_id"], ids[1], "{body}");
    assert_eq!(failed[0]["reason"], "token rejected by Telegram", "{body}");
    assert_eq!(get(&format!("{base}/health")).0, 503, "the full report");

    let dir = fleet_dir(&fleet);
    let out = botfleet_in(dir, &["health"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).starts_with("degraded: bot-1 failed (token rejected"),
        "{}",
        text(&out.stdout)
    );
    let out = botfleet_in(dir, &["health", "--ready"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    for t in &tokens {
        let secret = t.split_once(':').map_or("", |(_, s)| s);
        assert!(!body.to_string().contains(secret));
    }
}

#[test]
fn the_first_bot_lands_in_bot_0() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[13031], token, "probe");
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(1);
    let media = fleet_dir(&fleet).join("media");
    wait_until(Duration::from_secs(10), "bot-0 exists", || {
        media.join("bot-0").is_dir()
    });
    assert!(
        !media.join("bot-1").exists(),
        "no bot-1 for a one-bot fleet"
    );
    let registry =
        std::fs::read_to_string(fleet.state_dir().join("bots.json")).expect("bots.json is written");
    let registry: Value = serde_json::from_str(&registry).expect("bots.json is JSON");
    assert_eq!(registry["bots"]["13031"], 0, "{registry}");
}

/// The pids of the fleet's workers once all `n` are up.
fn worker_pids(fleet: &Fleet, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_until(Duration::from_secs(10), "every worker is up", || {
        pids = fleet.workers();
        pids.len() == n
    });
    pids
}

#[test]
fn a_paused_supervisor_replaces_no_worker() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[13041, 13042], token, "probe");
    // POLL_TIMEOUT_SECS=1: the hung limit is 3 x 5 s + 1 s = 16 s.
    let fleet = Fleet::start(&sandbox, &tokens, &[("POLL_TIMEOUT_SECS", "1")]);
    fleet.wait_ready(2);
    let base = fleet.health_base();
    let before = worker_pids(&fleet, 2);
    fleet.signal("STOP");
    std::thread::sleep(Duration::from_secs(19)); // the pause under test, past the limit
    fleet.signal("CONT");
    wait_until(Duration::from_secs(10), "the supervisor answers", || {
        get(&format!("{base}/ping")).0 == 200
    });
    // Past the moment a misjudged deadline would have fired.
    let settle = Instant::now() + Duration::from_secs(4);
    while Instant::now() < settle {
        assert_eq!(fleet.workers(), before, "{}", fleet.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = fleet.logs();
    assert!(!logs.contains("hung, killing it"), "{logs}");
    assert!(
        logs.contains("did not run for"),
        "the pause is logged: {logs}"
    );
    assert_eq!(get(&format!("{base}/health/live")).0, 200);
}

#[test]
fn a_worker_waiting_for_its_lock_is_not_restarted() {
    use fs2::FileExt;
    let (sandbox, tokens) = SandboxProc::with_bots(&[13051], token, "probe");
    let dir = temp_dir();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    // Another process polls this bot: it holds the poller lock.
    let held = std::fs::File::create(state.join("bot-13051.lock")).expect("lock file");
    held.lock_exclusive().expect("take the poller lock");
    let vars = common::fleet::merged_env(&sandbox, &dir, &tokens, &[("POLL_TIMEOUT_SECS", "1")]);
    let env_file = dir.join(".env");
    std::fs::write(&env_file, common::fleet::render_env(&vars)).expect("write .env");
    let fleet = Fleet::start_in(dir, env_file);
    let base = fleet.health_base();
    let pids = worker_pids(&fleet, 1);
    fleet.wait_log(
        "waiting for it to exit before polling",
        Duration::from_secs(10),
    );
    // The hung limit is 16 s and the worker's own staleness 21 s: hold the
    // lock for 35 s, past both.
    let until = Instant::now() + Duration::from_secs(35);
    while Instant::now() < until {
        assert_eq!(fleet.workers(), pids, "{}", fleet.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, body) = get(&format!("{base}/health"));
    assert_eq!(body["workers"][0]["waiting"], "lock", "{body}");
    assert_eq!(body["workers"][0]["restarts"], 0, "{body}");
    FileExt::unlock(&held).expect("let go of the lock");
    drop(held);
    fleet.wait_ready(1);
    assert_eq!(fleet.workers(), pids, "the same worker polls once it can");
    assert!(!fleet.logs().contains("hung"), "{}", fleet.logs());
}

/// `n` tokens registered with the sandbox, ids from `first`.
fn many_bots(first: u64, n: u64) -> (SandboxProc, Vec<String>) {
    let ids: Vec<u64> = (first..first + n).collect();
    SandboxProc::with_bots(&ids, token, "fd")
}

fn fleet_under_soft_limit(bots: u64, first: u64, soft: u32, ready_within: Duration) {
    let (sandbox, tokens) = many_bots(first, bots);
    let fleet = Fleet::start_with_ulimit(
        &sandbox,
        &tokens,
        &[("POLL_TIMEOUT_SECS", "10")],
        &format!("-Sn {soft}"),
    );
    let base = fleet.health_base();
    wait_until(ready_within, "every bot ready", || {
        get(&format!("{base}/health/ready")).0 == 200
    });
    let logs = fleet.logs();
    assert!(!logs.contains("Too many open files"), "{logs}");
}

#[test]
fn a_fleet_past_the_soft_fd_limit_raises_it_and_all_become_ready() {
    // 150 bots need ~364 descriptors in the supervisor: more than a soft
    // limit of 256 (about 2 s).
    fleet_under_soft_limit(150, 130_000, 256, Duration::from_secs(120));
}

#[test]
fn a_thousand_bots_under_ulimit_1024_all_become_ready() {
    // The case: 1,000 bots need ~3,064 descriptors, three times the
    // common soft limit; before, 505 workers started and the rest looped
    // on EMFILE. About 10 s alone on a 2-core box.
    fleet_under_soft_limit(1000, 131_000, 1024, Duration::from_secs(600));
}

#[test]
fn a_fleet_past_the_hard_fd_limit_gets_one_clear_error() {
    let (sandbox, tokens) = many_bots(132_000, 60);
    let mut fleet = Fleet::start_with_ulimit(&sandbox, &tokens, &[], "-n 100");
    let status = fleet
        .wait_exit(Duration::from_secs(20))
        .expect("botfleet exits at once");
    assert_eq!(status.code(), Some(1));
    let logs = fleet.logs();
    assert!(
        logs.contains("open-file limit (RLIMIT_NOFILE) is 100"),
        "{logs}"
    );
    assert_eq!(logs.matches("open-file limit").count(), 1, "{logs}");
    assert!(fleet.workers().is_empty());
}

#[test]
fn two_thousand_idle_connections_leave_ping_and_restarts_working() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[13061], token, "probe");
    // A hard limit of 512 descriptors: 2,000 clients could exhaust it if
    // the server took them all; it keeps its waiting connections below
    // the limit, so spawning a worker still finds descriptors.
    let fleet = Fleet::start_with_ulimit(&sandbox, &tokens, &[], "-n 512");
    fleet.wait_ready(1);
    let base = fleet.health_base();
    let addr = base.trim_start_matches("http://").to_string();
    let mut idle = Vec::with_capacity(2000);
    let sock: std::net::SocketAddr = addr.parse().expect("the health address");
    for _ in 0..2000 {
        match std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            // The backlog is full: the server is shedding; that is fine,
            // keep what we have.
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 1000, "only {} connections", idle.len());
    wait_until(Duration::from_secs(10), "/ping answers", || {
        http_with_timeout(Duration::from_secs(2))
            .get(&format!("{base}/ping"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    });
    let old = worker_pids(&fleet, 1)[0];
    kill(old, "KILL");
    wait_until(Duration::from_secs(20), "a new worker", || {
        let now = fleet.workers();
        now.len() == 1 && now[0] != old && alive(now[0])
    });
    wait_until(Duration::from_secs(20), "the new worker is ready", || {
        fleet.count_in_logs("Worker bot-0 ready") == 2
    });
    let (_, fds) = common::fleet::rss_and_fds(fleet.pid).expect("the supervisor's /proc");
    assert!(fds < 512, "{fds} descriptors open");
    assert!(
        !fleet.logs().contains("Too many open files"),
        "{}",
        fleet.logs()
    );
    drop(idle);
}

#[test]
fn an_outbox_file_for_a_user_who_blocked_the_bot_logs_one_hint_and_waits_hours() {
    let (sandbox, tokens) = SandboxProc::with_bots(&[13071], token, "probe");
    sandbox.control_post(
        "bots/13071/chats",
        serde_json::json!({"chat_id": 555, "blocked": true}),
    );
    sandbox.add_chat(13071, 556);
    let fleet = Fleet::start(&sandbox, &tokens, &[("MEDIA_RECIPIENTS", "555,556")]);
    fleet.wait_ready(1);
    let outbox = fleet_dir(&fleet).join("media").join("bot-0");
    std::fs::write(outbox.join("report.txt"), b"weekly report").expect("drop a file");
    fleet.wait_log("never started this bot", Duration::from_secs(20));
    // A few more looks of the outbox: no retry, no more lines.
    std::thread::sleep(Duration::from_secs(4));
    let logs = fleet.logs();
    assert_eq!(logs.matches("never started this bot").count(), 1, "{logs}");
    assert!(
        logs.contains("retrying in 1 h") && logs.contains("/start"),
        "{logs}"
    );
    assert!(!logs.contains("report.txt stays; retrying in"), "{logs}");
    assert!(outbox.join("report.txt").exists(), "the file stays unsent");
    let to_556 = sandbox
        .sent(13071)
        .iter()
        .filter(|m| m["chat_id"] == 556)
        .count();
    assert_eq!(to_556, 1, "the reachable recipient got it once");
}

#[test]
fn check_names_a_handler_that_cannot_start_and_an_unwritable_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let d = dir.path().to_path_buf();
    let run_check = |handler: &str, state: &str| {
        std::fs::write(
            d.join("check.env"),
            format!(
                "TELEGRAM_BOT_TOKENS={}\nBOT_HANDLER={handler}\nSTATE_DIR={state}\nMEDIA_TMP_LOCATION={}\n",
                token(13081),
                d.join("media").display()
            ),
        )
        .expect("write env");
        let out = botfleet_in(&d, &["check", "--offline", "--env-file", "check.env"]);
        (out.status.code(), text(&out.stderr))
    };
    let state = d.join("state").display().to_string();
    let (code, err) = run_check("./nope.sh", &state);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("BOT_HANDLER") && err.contains("nope.sh"),
        "{err}"
    );

    let script = d.join("h.py");
    std::fs::write(&script, "print('hi')\n").expect("write script");
    let (code, err) = run_check("./h.py", &state);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("not executable") && err.contains("chmod +x"),
        "{err}"
    );

    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (code, err) = run_check("./h.py", &state);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("#!") && err.contains("interpreter"), "{err}");

    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write script");
    let (code, err) = run_check("./h.py", &state);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run_check("builtin:echo", &state);
    assert_eq!(code, Some(0), "{err}");

    // A STATE_DIR under a regular file can never be created.
    let blocker = d.join("a-file");
    std::fs::write(&blocker, b"x").expect("write file");
    let bad = blocker.join("state").display().to_string();
    let (code, err) = run_check("builtin:echo", &bad);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("STATE_DIR") && err.contains("not writable"),
        "{err}"
    );
}

#[test]
fn a_missing_env_file_is_named_as_such() {
    let dir = temp_dir();
    for cmd in ["run", "check", "status", "health", "stop", "reload"] {
        let out = botfleet_in(dir.path(), &[cmd, "--env-file", "/etc/botfleet/nope.env"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(
            text(&out.stderr).contains("env file /etc/botfleet/nope.env does not exist"),
            "{cmd}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn help_works_as_a_command_too() {
    let dir = temp_dir();
    let out = botfleet_in(dir.path(), &["help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("Commands:"));
    let out = botfleet_in(dir.path(), &["help", "health"]);
    assert_eq!(out.status.code(), Some(0));
    let own = botfleet_in(dir.path(), &["health", "--help"]);
    assert_eq!(out.stdout, own.stdout, "help health = health --help");
    assert!(text(&out.stdout).contains("--ready"));
}

#[test]
fn the_readme_command_table_lists_every_option_help_shows() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let dir = temp_dir();
    for cmd in [
        "run", "check", "status", "health", "stop", "reload", "sandbox", "demo",
    ] {
        let out = botfleet_in(dir.path(), &[cmd, "--help"]);
        let help = text(&out.stdout);
        let usage = help.lines().next().expect("a usage line");
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `botfleet {cmd}")))
            .unwrap_or_else(|| panic!("no README row for {cmd}"));
        for word in usage.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if word.starts_with("--") {
                assert!(row.contains(word), "README's {cmd} row lacks {word}: {row}");
            }
        }
    }
}

#[test]
fn a_removed_setting_is_gone_from_the_worker_and_its_handlers_in_one_reload() {
    use common::fleet::{merged_env, render_env};
    use std::os::unix::fs::PermissionsExt;
    let (sandbox, tokens) = SandboxProc::with_bots(&[13071], token, "probe");
    let scripts = temp_dir();
    let handler = scripts.join("env.sh");
    std::fs::write(
        &handler,
        "#!/bin/sh\nprintf 'admins=%s key=%s\\n' \"${ADMIN_USER_IDS-unset}\" \"${MY_KEY-unset}\"\n",
    )
    .expect("write the handler");
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let handler = handler.display().to_string();
    let dir = temp_dir();
    let keep = [("BOT_HANDLER", handler.as_str())];
    let mut first: Vec<(&str, &str)> = keep.to_vec();
    first.extend([("ADMIN_USER_IDS", "42"), ("MY_KEY", "hello")]);
    let vars = merged_env(&sandbox, &dir, &tokens, &first);
    let env_file = dir.join(".env");
    std::fs::write(&env_file, render_env(&vars)).expect("write .env");
    let fleet = Fleet::start_in(dir, env_file.clone());
    fleet.wait_ready(1);
    let reply = |text: &str, want: &str| {
        let (_, m) = sandbox.send_text(13071, 42, 42, text);
        wait_until(Duration::from_secs(15), want, || {
            common::replies_to(&sandbox.sent(13071), m)
                .iter()
                .any(|t| t.contains(want))
        });
    };
    reply("env?", "admins=42 key=hello");
    reply("/config_status", "admins: 1");
    // The same .env (same PORT, dirs) without the two lines.
    let port = vars
        .iter()
        .find(|(k, _)| k == "PORT")
        .map(|(_, v)| v.clone())
        .expect("a PORT");
    let mut second: Vec<(&str, &str)> = keep.to_vec();
    second.extend([
        ("ADMIN_USER_IDS", ""),
        ("MY_KEY", ""),
        ("PORT", port.as_str()),
    ]);
    let vars = merged_env(&sandbox, &fleet.dir, &tokens, &second);
    let tmp = env_file.with_extension("tmp");
    std::fs::write(&tmp, render_env(&vars)).expect("write the new .env");
    std::fs::rename(&tmp, &env_file).expect("rename it into place");
    fleet.wait_log("- Removed ADMIN_USER_IDS", Duration::from_secs(10));
    fleet.wait_log("settings updated", Duration::from_secs(10));
    let pids = fleet.workers();
    reply("env?", "admins=unset key=unset");
    reply("/config_status", "admins only");
    assert_eq!(fleet.workers(), pids, "no restart for it");
}

/// A pids cgroup this test may make (root, with the pids controller at
/// cgroup v1's place or delegated in v2's root); removed on drop once its
/// processes are gone.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    fn make(max: u64) -> Option<PidsCgroup> {
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let v2 = Path::new("/sys/fs/cgroup");
        let root = if v1.join("cgroup.procs").exists() {
            v1
        } else if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|t| t.split_whitespace().any(|c| c == "pids"))
        {
            v2
        } else {
            return None;
        };
        let dir = root.join(format!("botfleet-test-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let cg = PidsCgroup(dir);
        std::fs::write(cg.0.join("pids.max"), max.to_string()).ok()?;
        Some(cg)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let procs = self.0.join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&procs).is_ok_and(|t| !t.trim().is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_fleet_past_the_cgroup_task_limit_is_warned_of_once() {
    // 2 bots need about 4 x 2 + 32 = 40 tasks; 30 allowed, enough for
    // what they really start idle (the supervisor's ~12 threads, ~5 a worker).
    let Some(cg) = PidsCgroup::make(30) else {
        eprintln!(
            "SKIPPED: no pids cgroup this test may create (needs root and the pids controller)"
        );
        return;
    };
    let (sandbox, mut tokens) = many_bots(134_000, 3);
    let third = tokens.pop().expect("3 tokens");
    let script = format!(
        "echo $$ > {} && exec \"$0\" \"$@\"",
        cg.0.join("cgroup.procs").display()
    );
    let fleet = Fleet::start_under(&sandbox, &tokens, &[], &["sh", "-c", &script]);
    wait_until(Duration::from_secs(20), "the task-limit warning", || {
        fleet
            .logs()
            .contains("the cgroup's task limit (pids.max) is 30")
    });
    let logs = fleet.logs();
    assert!(logs.contains("2 bot(s) need about 40 tasks"), "{logs}");
    assert!(logs.contains("TasksMax="), "{logs}");
    fleet.wait_ready(2);
    assert_eq!(
        fleet.logs().matches("task limit").count(),
        1,
        "{}",
        fleet.logs()
    );
    // A reload that grows the fleet says it again, for its new size.
    let env = std::fs::read_to_string(&fleet.env_file).expect("read .env");
    let grown: String = env
        .lines()
        .map(|l| match l.strip_prefix("TELEGRAM_BOT_TOKENS=") {
            Some(list) => format!("TELEGRAM_BOT_TOKENS={list},{third}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&fleet.env_file, grown).expect("write .env");
    wait_until(
        Duration::from_secs(20),
        "the reload's task-limit warning",
        || fleet.logs().contains("3 bot(s) need about 44 tasks"),
    );
    drop(fleet);
    drop(cg);
}
