//! botfleet as PID 1 (a container without an init): an orphan a handler
//! leaves behind is reparented to the supervisor, which must reap it, or
//! zombies pile up for the container's life. The fleet runs in a new PID
//! namespace (`unshare --pid --fork --mount-proc`, util-linux); where this
//! machine does not allow one (no privilege), the test says so and passes.

mod common;

use std::time::{Duration, Instant};

use common::fleet::Fleet;
use common::{temp_dir, wait_until, SandboxProc};

const USER: i64 = 4242;

fn token(id: u64) -> String {
    format!("{id}:PidOneSecret-{id}_zz")
}

fn namespaces_allowed() -> bool {
    std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// (state, ppid) of a process from /proc/PID/stat, None when it is gone.
fn state_and_ppid(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The host pid of the process whose command line contains `marker`.
fn find_by_cmdline(marker: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(marker)
            .then_some(pid)
    })
}

#[test]
fn as_pid_one_the_supervisor_reaps_an_orphan_a_handler_left() {
    if !namespaces_allowed() {
        eprintln!("SKIP: this machine does not allow a new PID namespace (unshare --pid)");
        return;
    }
    let (sb, tokens) = SandboxProc::with_bots(&[8_301_001], token, "pidone");
    sb.add_chat(8_301_001, USER);
    // An exec handler that leaves a process in a session of its own (out of
    // reach of the group kill that ends every handler run; the handler waits
    // until it is in that session); it lives 3 s.
    let marker = format!("botfleet-pid1-orphan-{}", std::process::id());
    let dir = temp_dir();
    let handler = dir.join("handler.sh");
    std::fs::write(
        &handler,
        format!(
            "#!/bin/sh\nrm -f started\n\
             setsid sh -c 'touch started; sleep 3; : {marker}' </dev/null >/dev/null 2>&1 &\n\
             while [ ! -e started ]; do sleep 0.05; done\necho left one behind\n"
        ),
    )
    .expect("write handler");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let handler_path = handler.display().to_string();
    let fleet = Fleet::start_under(
        &sb,
        &tokens,
        &[
            ("BOT_HANDLER", handler_path.as_str()),
            ("BOT_HANDLER_MODE", "exec"),
        ],
        &["unshare", "--pid", "--fork", "--mount-proc"],
    );
    fleet.wait_ready(1);
    let supervisor = *fleet
        .workers()
        .first()
        .expect("unshare's child is botfleet, PID 1 of the namespace");
    sb.send_text(8_301_001, USER, USER, "hello");
    let mut orphan = None;
    wait_until(
        Duration::from_secs(20),
        "the handler's leftover process",
        || {
            orphan = find_by_cmdline(&marker);
            orphan.is_some()
        },
    );
    let orphan = orphan.expect("found above");
    // It belongs to PID 1 of the namespace once its handler ended.
    wait_until(
        Duration::from_secs(10),
        "the orphan reparented to botfleet",
        || state_and_ppid(orphan).is_none_or(|(_, ppid)| ppid == supervisor),
    );
    // It exits after 3 s; then it must not stay a zombie.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some((state, _)) = state_and_ppid(orphan) {
        assert!(
            Instant::now() < deadline,
            "the orphan {orphan} is still there (state {state}) 10 s on: PID 1 did not reap it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The bot answered meanwhile, and the fleet is still up.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sent = sb.sent(8_301_001);
        if sent
            .iter()
            .any(|m| m["text"].as_str().map(str::trim) == Some("left one behind"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reply within 15 s; the bot sent {sent:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        common::fleet::alive(supervisor),
        "the supervisor is still running"
    );
}
