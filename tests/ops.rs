//! Operations (issue #6) from the outside: `status`, `health`, `stop` and
//! `reload` against a running fleet and against none; sd_notify through a
//! real datagram socket; the systemd unit through `systemd-analyze verify`;
//! and the static binary running in an empty chroot, as in the FROM scratch
//! container image. Tests that need something this machine may not have
//! (root, systemd-analyze, chroot, the musl build) print why they skip.

mod common;

use common::fleet::{free_port, Fleet};
use common::{bin, botfleet_output, temp_dir, wait_until, SandboxProc};
use serde_json::Value;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn token(id: u64) -> String {
    format!("{id}:ops-test-secret-{id}")
}

fn sandbox_with(ids: &[u64]) -> (SandboxProc, Vec<String>) {
    SandboxProc::with_bots(ids, token, "ops")
}

/// Runs `botfleet ARGS` to completion (killed after 30 s).
fn botfleet(args: &[&str], env: &[(&str, &str)]) -> Output {
    botfleet_output(args, |cmd| {
        cmd.envs(env.iter().copied());
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn port_of(base: &str) -> String {
    base.rsplit(':').next().expect("a port").to_string()
}

fn env_file(fleet: &Fleet) -> String {
    fleet.env_file.display().to_string()
}

#[test]
fn status_prints_the_table_and_the_json() {
    let (sandbox, tokens) = sandbox_with(&[7101, 7102]);
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(2);
    let _base = fleet.health_base();
    let env = env_file(&fleet);
    let out = botfleet(&["status", "--env-file", &env], &[]);
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}{}", text(&out.stderr));
    println!("{table}");
    for needle in [
        "index",
        "username",
        "pid",
        "state",
        "uptime",
        "restarts",
        "updates",
        "errors",
        "last poll",
        "rss",
        "@ops7101_bot",
        "@ops7102_bot",
        "ready",
        "MiB",
    ] {
        assert!(table.contains(needle), "no {needle:?} in:\n{table}");
    }
    for pid in fleet.workers() {
        assert!(table.contains(&pid.to_string()), "pid {pid} in:\n{table}");
    }

    let out = botfleet(&["status", "--env-file", &env, "--json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["workers"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(v["config_version"].is_string());
    for t in &tokens {
        let secret = t.split_once(':').map_or("", |(_, s)| s);
        assert!(!text(&out.stdout).contains(secret) && !table.contains(secret));
    }
}

#[test]
fn status_finds_the_server_on_a_fallback_port() {
    let (sandbox, tokens) = sandbox_with(&[7201]);
    let port = free_port();
    let _busy = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold PORT");
    let fleet = Fleet::start(&sandbox, &tokens, &[("PORT", &port.to_string())]);
    fleet.wait_ready(1);
    let base = fleet.health_base();
    assert_ne!(port_of(&base), port.to_string(), "the fleet fell back");
    let out = botfleet(&["status", "--env-file", &env_file(&fleet)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("@ops7201_bot"));
}

#[test]
fn health_says_one_line_and_exits_by_the_verdict() {
    let (sandbox, mut tokens) = sandbox_with(&[7301, 7302]);
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(2);
    let base = fleet.health_base();
    let port = port_of(&base);
    for (args, env) in [
        (vec!["health", "--port", port.as_str()], vec![]),
        (vec!["health", "--url", &format!("{base}/health")], vec![]),
        (vec!["health"], vec![("PORT", port.as_str())]),
    ] {
        let out = botfleet(&args, &env);
        let line = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {line}");
        assert_eq!(line, "healthy: 2/2 workers ready\n", "{args:?}");
    }
    drop(fleet);

    // A token the sandbox does not know: Telegram-style 401, worker failed.
    tokens.push(token(7303));
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    let port = port_of(&fleet.health_base());
    let mut last = String::new();
    wait_until(
        Duration::from_secs(20),
        "health reports the failed bot",
        || {
            let out = botfleet(&["health", "--port", &port], &[]);
            last = text(&out.stdout);
            out.status.code() == Some(0) && last.contains("failed")
        },
    );
    // A rejected token is a condition a restart cannot fix: the fleet is
    // degraded, live (exit 0), and not ready.
    assert_eq!(
        last, "degraded: bot-2 failed (token rejected by Telegram)\n",
        "the one line names the bot and why"
    );
    let out = botfleet(&["health", "--port", &port, "--ready"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
}

#[test]
fn reload_and_stop_act_on_the_running_fleet() {
    let (sandbox, tokens) = sandbox_with(&[7401]);
    let mut fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(1);
    let env = env_file(&fleet);
    let out = botfleet(&["reload", "--env-file", &env], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&fleet.pid.to_string()));
    fleet.wait_log("Config reload (SIGHUP)", Duration::from_secs(10));

    let out = botfleet(&["stop", "--env-file", &env, "--timeout", "20"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("stopped"));
    let status = fleet
        .wait_exit(Duration::from_secs(5))
        .expect("the supervisor is gone once stop returns");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn every_command_says_clearly_when_no_fleet_runs() {
    let dir = temp_dir();
    let env = dir.join(".env");
    let port = free_port();
    std::fs::write(
        &env,
        format!(
            "TELEGRAM_BOT_TOKENS={}\nPORT={port}\nLOCK_FILE={}\nSTATE_DIR={}\n",
            token(7501),
            dir.join("bot.lock").display(),
            dir.join("state").display()
        ),
    )
    .expect("write .env");
    let env = env.display().to_string();

    let out = botfleet(&["status", "--env-file", &env], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("botfleet is not answering") && err.contains(&port.to_string()),
        "{err}"
    );

    let out = botfleet(&["health", "--port", &port.to_string()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("unreachable: "),
        "{}",
        text(&out.stdout)
    );

    for cmd in ["stop", "reload"] {
        let out = botfleet(&[cmd, "--env-file", &env], &[]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            text(&out.stderr).contains("not running"),
            "{cmd}: {}",
            text(&out.stderr)
        );
    }

    // Something that is not botfleet on the port: not mistaken for it.
    let sandbox = SandboxProc::start();
    let out = botfleet(
        &["health", "--url", &format!("{}/health", sandbox.url())],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("not with botfleet's /health"),
        "{}",
        text(&out.stdout)
    );
}

/// Collects datagrams until `want` has been seen in order (each one is a
/// line of some datagram); panics with everything seen on timeout.
fn expect_in_order(socket: &UnixDatagram, seen: &mut Vec<String>, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if seen.iter().any(|d| d.lines().any(|l| l == want)) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("no {want} within {timeout:?}; datagrams: {seen:?}");
        }
        socket
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("a read timeout");
        let mut buf = [0u8; 4096];
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(text(&buf[..n]));
        }
    }
}

#[test]
fn sd_notify_sends_ready_reloading_ready_stopping_in_order() {
    let (sandbox, tokens) = sandbox_with(&[7601, 7602]);
    let dir = temp_dir();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let path_str = path.display().to_string();
    let mut fleet = Fleet::start_with_process_env(
        &sandbox,
        &tokens,
        &[],
        &[("NOTIFY_SOCKET", &path_str), ("WATCHDOG_USEC", "400000")],
    );
    let mut seen = Vec::new();
    expect_in_order(&socket, &mut seen, "READY=1", Duration::from_secs(30));
    fleet.wait_ready(2);
    // WATCHDOG_USEC=400000: a keep-alive every 200 ms.
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.iter().filter(|d| *d == "WATCHDOG=1").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "no WATCHDOG=1 every 200 ms: {seen:?}"
        );
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("a read timeout");
        let mut buf = [0u8; 4096];
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(text(&buf[..n]));
        }
    }
    let ready_at = seen.len();
    fleet.signal("HUP");
    expect_in_order(&socket, &mut seen, "RELOADING=1", Duration::from_secs(10));
    let reloading_at = seen.len();
    let mut after = seen.split_off(reloading_at);
    expect_in_order(&socket, &mut after, "READY=1", Duration::from_secs(10));
    seen.extend(after);
    fleet.signal("TERM");
    let mut tail = Vec::new();
    expect_in_order(&socket, &mut tail, "STOPPING=1", Duration::from_secs(10));
    seen.extend(tail);
    assert_eq!(
        fleet
            .wait_exit(Duration::from_secs(15))
            .and_then(|s| s.code()),
        Some(0)
    );

    let states: Vec<&str> = seen
        .iter()
        .flat_map(|d| d.lines())
        .filter(|l| {
            !l.starts_with("STATUS=") && !l.starts_with("MONOTONIC_USEC=") && *l != "WATCHDOG=1"
        })
        .collect();
    eprintln!("sd_notify states in order: {states:?}");
    assert_eq!(
        states,
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "{seen:?}"
    );
    let reloading = &seen[reloading_at - 1];
    assert!(
        reloading.contains("MONOTONIC_USEC="),
        "RELOADING=1 carries MONOTONIC_USEC: {reloading:?}"
    );
    assert!(
        seen[..ready_at].iter().any(|d| d.contains("STATUS=")),
        "{seen:?}"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/botfleet.service");
    let text_of_unit = std::fs::read_to_string(&unit).expect("contrib/botfleet.service");
    for needle in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "RestartPreventExitStatus=2 3",
        "KillMode=mixed",
        // 3,000 bots are 12,000+ tasks, past systemd's default TasksMax.
        "TasksMax=65536",
        "LimitNOFILE=65536",
    ] {
        assert!(text_of_unit.contains(needle), "the unit lacks {needle}");
    }
    if !have("systemd-analyze") {
        if is_root() && have("apt-get") {
            let ok = Command::new("apt-get")
                .args(["install", "-y", "-qq", "systemd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok || !have("systemd-analyze") {
                eprintln!("SKIPPED: systemd-analyze missing and `apt-get install systemd` failed");
                return;
            }
        } else {
            eprintln!("SKIPPED: systemd-analyze missing, and not root with apt-get to install it");
            return;
        }
    }
    // verify checks that ExecStart's binary exists: point it at a copy.
    let dir = temp_dir();
    let exe = dir.join("botfleet");
    std::fs::copy(bin(), &exe).expect("copy the binary");
    let rewritten = text_of_unit.replace("/usr/local/bin/botfleet", &exe.display().to_string());
    let copy = dir.join("botfleet.service");
    std::fs::write(&copy, rewritten).expect("write the unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs");
    let complaints = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!(
        "systemd-analyze verify: exit {:?}, output {complaints:?}",
        out.status.code()
    );
    assert!(out.status.success(), "{complaints}");
    let ours: Vec<&str> = complaints
        .lines()
        .filter(|l| l.contains("botfleet.service"))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd complains about the unit: {ours:?}"
    );
}

/// Unmounts on drop, so a failing test leaves no /proc mount behind.
struct ProcMount(std::path::PathBuf);

impl Drop for ProcMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("could not unmount {}", self.0.display());
        }
    }
}

#[test]
fn the_static_binary_runs_and_answers_health_in_an_empty_chroot() {
    let musl = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-musl/release/botfleet");
    if !musl.exists() {
        eprintln!(
            "SKIPPED: no static build at {} (run `make musl` first)",
            musl.display()
        );
        return;
    }
    if !is_root() || !have("chroot") || !have("mount") {
        eprintln!("SKIPPED: needs root, chroot(8) and mount(8)");
        return;
    }
    let (sandbox, tokens) = sandbox_with(&[7701, 7702]);
    let root = temp_dir();
    std::fs::copy(&musl, root.join("botfleet")).expect("copy the static binary");
    // Nothing else from the host: no libc, no shell, no /etc. Only /proc,
    // which a container runtime mounts too (workers find their binary
    // through /proc/self/exe).
    std::fs::create_dir_all(root.join("proc")).expect("mkdir proc");
    let mounted = Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(root.join("proc"))
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount /proc inside the chroot here");
        return;
    }
    let _unmount = ProcMount(root.join("proc"));
    let port = free_port();
    std::fs::write(
        root.join(".env"),
        format!(
            "TELEGRAM_BOT_TOKENS={}\nTELEGRAM_API_URL={}\nPORT={port}\nSTATE_DIR=/state\nMEDIA_TMP_LOCATION=/media\nLOCK_FILE=/bot.lock\nPOLL_TIMEOUT_SECS=2\n",
            tokens.join(","),
            sandbox.url()
        ),
    )
    .expect("write the chroot's .env");
    let mut run = Command::new("chroot")
        .arg(root.path())
        .args(["/botfleet", "run", "--env-file", "/.env"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("chroot botfleet run");
    let pid = run.id();
    let health = || {
        Command::new("chroot")
            .arg(root.path())
            .args(["/botfleet", "health", "--port", &port.to_string()])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("chroot botfleet health")
    };
    let mut last;
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = loop {
        let out = health();
        last = text(&out.stdout);
        if out.status.code() == Some(0) && last.contains("2/2 workers ready") {
            break true;
        }
        if Instant::now() > deadline || run.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    common::fleet::kill(pid, "TERM");
    let stopped = wait_exit(&mut run, Duration::from_secs(15));
    if !stopped {
        common::fleet::kill(pid, "KILL");
        let _reaped = run.wait();
    }
    eprintln!("chroot: `botfleet health` said {last:?}");
    assert!(
        healthy,
        "the static binary in an empty root answered health: {last:?}"
    );
    assert!(stopped, "the chrooted fleet stopped on SIGTERM");
    assert!(
        root.join("state/bots.json").exists(),
        "state written inside the chroot"
    );
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
