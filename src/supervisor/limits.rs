//! The supervisor's open-file budget: at start the soft RLIMIT_NOFILE is
//! raised to the hard limit (workers inherit it) and the fleet must fit in
//! it (two descriptors a worker plus a margin), or `run` stops with one error
//! naming the limit; a reload past it is rejected; the health server's cap
//! on waiting connections comes from what is left. The task budget: a
//! fleet larger than the cgroup's pids.max (systemd's TasksMax, Docker's
//! --pids-limit) or the user's RLIMIT_NPROC allows is named in one warning
//! at start and at a reload that grows it (the threads a busy worker adds
//! vary, so it warns and does not refuse). Arithmetic over `sys`'s
//! getrlimit/setrlimit and a read of /proc/self/cgroup and the cgroup's
//! pids.max; it must never close or open a descriptor beyond those reads.

use crate::sys;

/// Open files the supervisor holds per worker: the socket pair that is its
/// stdin and stdout, and its stderr (log lines) pipe. (The spawner thread's
/// own table holds four, and four more during a spawn; the limit counts
/// in each table apart.)
pub const FDS_PER_WORKER: u64 = 2;
/// Open files beyond the workers': the log, the lock, the watcher, the
/// health listener and its answers, a spawn in progress (two while it is
/// handed over), a config reload.
pub const FDS_MARGIN: u64 = 64;
/// The open-file limit botfleet raises its soft limit to at most.
const NOFILE_CAP: u64 = 1 << 20;

/// Why the fleet cannot start within the open-file limit.
#[derive(Debug, Clone, PartialEq)]
pub struct FdLimitError {
    pub bots: usize,
    pub needed: u64,
    pub soft: u64,
    pub hard: u64,
}

impl std::fmt::Display for FdLimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bot(s) need about {} open files, but the open-file limit (RLIMIT_NOFILE) is {} and its hard limit {}: raise the hard limit (`ulimit -Hn` as root, LimitNOFILE= in a systemd unit, --ulimit nofile= for Docker) or run fewer bots",
            self.bots, self.needed, self.soft, self.hard
        )
    }
}

impl std::error::Error for FdLimitError {}

/// Open files a fleet of `bots` needs in the supervisor.
pub fn fds_needed(bots: usize) -> u64 {
    FDS_PER_WORKER * bots as u64 + FDS_MARGIN
}

/// Raises the soft open-file limit to the hard limit (children inherit it)
/// and checks that `bots` workers fit; returns the new soft limit.
pub fn fit_open_files(bots: usize) -> Result<u64, FdLimitError> {
    let needed = fds_needed(bots);
    match sys::raise_nofile(NOFILE_CAP) {
        Ok((soft, _)) if soft >= needed => Ok(soft),
        Ok((soft, hard)) => Err(FdLimitError {
            bots,
            needed,
            soft,
            hard,
        }),
        Err(e) => {
            log::warn!("cannot read or raise the open-file limit: {e}");
            Ok(needed)
        }
    }
}

/// Tasks (threads and processes) a worker holds while it handles updates:
/// its poll loop and control thread (all an idle one keeps), a job thread
/// and a sender (a busier one adds job threads, and a handler is a process
/// of its own). A fleet that has room only while idle fails when its bots
/// get messages, so the budget counts working bots.
pub const TASKS_PER_WORKER: u64 = 4;
/// Tasks beyond the workers': the supervisor's own threads and a spawn.
pub const TASKS_MARGIN: u64 = 32;

/// Tasks a fleet of `bots` needs when its bots work.
pub fn tasks_needed(bots: usize) -> u64 {
    TASKS_PER_WORKER * bots as u64 + TASKS_MARGIN
}

/// The fleet is larger than a task limit allows: workers would fail to
/// start their threads (EAGAIN), one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLimitWarning {
    pub bots: usize,
    pub needed: u64,
    pub limit: u64,
    /// Which limit: the cgroup's or the user's.
    pub what: &'static str,
    /// How to raise that limit.
    pub raise: &'static str,
}

impl std::fmt::Display for TaskLimitWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bot(s) need about {} tasks ({TASKS_PER_WORKER} threads a working bot), but {} is {}: workers will fail to start their threads; raise it ({}) or run fewer bots",
            self.bots,
            self.needed,
            self.what,
            self.limit,
            self.raise
        )
    }
}

/// Each limit's name and how to raise it.
const CGROUP_LIMIT: (&str, &str) = (
    "the cgroup's task limit (pids.max)",
    "TasksMax= in a systemd unit, --pids-limit for Docker",
);
const USER_LIMIT: (&str, &str) = (
    "the process limit (RLIMIT_NPROC)",
    "`ulimit -u`, LimitNPROC= in a systemd unit",
);

/// Where this process's pids.max lives, from /proc/self/cgroup: the
/// cgroup v1 pids hierarchy's line (`N:pids:/path`) if there is one, else
/// the v2 line (`0::/path`) under the unified root.
fn pids_cgroup(proc_self_cgroup: &str) -> Option<(&'static str, &str)> {
    let mut unified = None;
    for line in proc_self_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "pids") {
            return Some(("/sys/fs/cgroup/pids", path.trim()));
        }
        if controllers.is_empty() {
            unified = Some(("/sys/fs/cgroup", path.trim()));
        }
    }
    unified
}

/// The tightest pids.max from `cgroup` up to the root under `root`
/// (a parent's limit binds its children too); None when all are "max".
fn cgroup_pids_max(root: &std::path::Path, cgroup: &str) -> Option<u64> {
    let mut path = cgroup.trim_end_matches('/');
    let mut tightest: Option<u64> = None;
    loop {
        let file = root.join(path.trim_start_matches('/')).join("pids.max");
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Ok(n) = text.trim().parse::<u64>() {
                tightest = Some(tightest.map_or(n, |t| t.min(n)));
            }
        }
        match path.rfind('/') {
            Some(cut) => path = &path[..cut],
            None => break,
        }
    }
    tightest
}

/// A warning when `bots` workers do not fit the tightest task limit this
/// process runs under (the cgroup's pids.max, or RLIMIT_NPROC unless root,
/// whom the kernel does not hold to it); None when they fit or no limit is
/// known.
pub fn check_tasks(bots: usize) -> Option<TaskLimitWarning> {
    let needed = tasks_needed(bots);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            let (root, path) = pids_cgroup(&t)?;
            cgroup_pids_max(std::path::Path::new(root), path)
        })
        .map(|limit| (limit, CGROUP_LIMIT));
    let user = if sys::is_root() {
        None
    } else {
        sys::nproc_limit()
            .ok()
            .flatten()
            .map(|limit| (limit, USER_LIMIT))
    };
    let (limit, (what, raise)) = [cgroup, user]
        .into_iter()
        .flatten()
        .min_by_key(|(l, _)| *l)?;
    (needed > limit).then_some(TaskLimitWarning {
        bots,
        needed,
        limit,
        what,
        raise,
    })
}

/// The health server's cap on waiting connections: half of what the open
/// file limit leaves after the workers (at least 16, at most its own cap).
pub fn health_connection_cap(bots: usize) -> usize {
    let soft = sys::nofile_limit().map_or(1024, |(soft, _)| soft);
    let spare = soft.saturating_sub(fds_needed(bots)) / 2;
    (spare as usize).clamp(16, crate::health::server::MAX_PENDING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_is_the_v1_pids_line_else_the_v2_line() {
        let v2 = "0::/system.slice/botfleet.service\n";
        assert_eq!(
            pids_cgroup(v2),
            Some(("/sys/fs/cgroup", "/system.slice/botfleet.service"))
        );
        let hybrid = "9:name=systemd:/a\n8:pids:/b\n4:memory:/c\n0::/\n";
        assert_eq!(pids_cgroup(hybrid), Some(("/sys/fs/cgroup/pids", "/b")));
        assert_eq!(
            pids_cgroup("3:cpu,pids:/d\n"),
            Some(("/sys/fs/cgroup/pids", "/d"))
        );
        assert_eq!(pids_cgroup("4:memory:/c\n"), None);
    }

    #[test]
    fn the_tightest_pids_max_up_the_tree_binds() {
        let root = std::env::temp_dir().join(format!("botfleet-cg-{}", std::process::id()));
        let leaf = root.join("system.slice/botfleet.service");
        std::fs::create_dir_all(&leaf).expect("temp dirs");
        std::fs::write(leaf.join("pids.max"), "max\n").expect("write");
        assert_eq!(
            cgroup_pids_max(&root, "/system.slice/botfleet.service"),
            None
        );
        std::fs::write(root.join("system.slice/pids.max"), "4915\n").expect("write");
        assert_eq!(
            cgroup_pids_max(&root, "/system.slice/botfleet.service"),
            Some(4915)
        );
        std::fs::write(leaf.join("pids.max"), "65536\n").expect("write");
        assert_eq!(
            cgroup_pids_max(&root, "/system.slice/botfleet.service"),
            Some(4915)
        );
        std::fs::write(leaf.join("pids.max"), "1000\n").expect("write");
        assert_eq!(
            cgroup_pids_max(&root, "/system.slice/botfleet.service/"),
            Some(1000)
        );
        assert_eq!(cgroup_pids_max(&root, "/"), None);
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn the_warning_names_the_limit_and_how_to_raise_it() {
        assert_eq!(tasks_needed(3000), 12_032);
        let w = TaskLimitWarning {
            bots: 3000,
            needed: tasks_needed(3000),
            limit: 4915,
            what: CGROUP_LIMIT.0,
            raise: CGROUP_LIMIT.1,
        };
        let text = w.to_string();
        assert!(
            text.contains("3000 bot(s) need about 12032 tasks"),
            "{text}"
        );
        assert!(
            text.contains("pids.max) is 4915") && text.contains("TasksMax="),
            "{text}"
        );
        let w = TaskLimitWarning {
            what: USER_LIMIT.0,
            raise: USER_LIMIT.1,
            ..w
        };
        assert!(
            w.to_string().contains("RLIMIT_NPROC) is 4915") && w.to_string().contains("ulimit -u")
        );
    }
}
