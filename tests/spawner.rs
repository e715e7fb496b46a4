//! Workers are started by the supervisor's spawner thread, in a small
//! descriptor table of its own (src/supervisor/spawner.rs): no descriptor
//! of the supervisor reaches a worker or stays behind in that table, and
//! the supervisor's own descriptors go back down as workers go.

mod common;

use common::fleet::Fleet;
use common::{wait_until, SandboxProc};
use std::collections::HashSet;
use std::time::Duration;

fn token(id: u64) -> String {
    format!("{id}:spawner-test-secret-{id}")
}

/// fd number → what it points at, of a process or one of its threads.
fn fds(dir: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?.display().to_string()))
        })
        .collect()
}

fn spawner_thread(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == "spawner").then(|| t.file_name().to_str()?.parse().ok())?
        })
}

#[test]
fn workers_hold_only_their_own_descriptors_and_the_supervisor_gives_back_a_stopped_workers() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let ids: Vec<u64> = (0..6).map(|i| 91001 + i).collect();
    let (sandbox, tokens) = SandboxProc::with_bots(&ids, token, "spawner");
    let fleet = Fleet::start(&sandbox, &tokens, &[]);
    fleet.wait_ready(6);
    let sup = fleet.pid;
    let tid = spawner_thread(sup).expect("the supervisor has a spawner thread");
    let spawner_fds = |when: &str| {
        let table = fds(&format!("/proc/{sup}/task/{tid}/fd"));
        let numbers: Vec<u32> = table.iter().map(|(fd, _)| *fd).collect();
        // stdin, stdout, stderr and its end of the hand-over pair.
        assert_eq!(table.len(), 4, "{when}: the spawner's table: {table:?}");
        assert!(numbers.contains(&0) && numbers.contains(&1) && numbers.contains(&2));
    };
    spawner_fds("six workers up");
    let main_table: HashSet<String> = fds(&format!("/proc/{sup}/fd"))
        .into_iter()
        .map(|(_, to)| to)
        .filter(|to| !to.starts_with("anon_inode:"))
        .collect();
    let workers = fleet.workers();
    assert_eq!(workers.len(), 6);
    for w in &workers {
        let table = fds(&format!("/proc/{w}/fd"));
        let at = |n: u32| {
            table
                .iter()
                .find(|(fd, _)| *fd == n)
                .map(|(_, to)| to.clone())
        };
        let stdio = at(0).expect("a worker has a stdin");
        assert!(stdio.starts_with("socket:"), "stdin is a socket: {stdio}");
        assert_eq!(at(1), Some(stdio.clone()), "stdout is the same socket");
        let stderr = at(2).expect("a worker has a stderr");
        assert!(stderr.starts_with("pipe:"), "stderr is a pipe: {stderr}");
        // A pipe's two ends show the same inode: fd 2 is the one shared.
        let leaked: Vec<_> = table
            .iter()
            .filter(|(fd, to)| *fd != 2 && main_table.contains(to))
            .collect();
        assert!(
            leaked.is_empty(),
            "worker {w} holds the supervisor's {leaked:?}"
        );
    }
    // Four bots leave: the supervisor drops their two descriptors each.
    let before = fds(&format!("/proc/{sup}/fd")).len();
    let env = std::fs::read_to_string(&fleet.env_file).expect("read .env");
    let env: String = env
        .lines()
        .map(|l| {
            if l.starts_with("TELEGRAM_BOT_TOKENS=") {
                format!("TELEGRAM_BOT_TOKENS={}\n", tokens[..2].join(","))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&fleet.env_file, env).expect("write .env");
    wait_until(Duration::from_secs(20), "four workers gone", || {
        fleet.workers().len() == 2
    });
    wait_until(
        Duration::from_secs(10),
        "the supervisor's table 8 descriptors smaller",
        || fds(&format!("/proc/{sup}/fd")).len() + 8 <= before,
    );
    spawner_fds("after four workers stopped");
}
