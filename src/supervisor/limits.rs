//! The supervisor's open-file budget: at start the soft RLIMIT_NOFILE is
//! raised to the hard limit (workers inherit it) and the fleet must fit in
//! it (two descriptors a worker plus a margin), or `run` stops with one error
//! naming the limit; a reload past it is rejected; the health server's cap
//! on waiting connections comes from what is left. Pure arithmetic over
//! `sys`'s getrlimit/setrlimit; it must never close or open a descriptor.

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

/// The health server's cap on waiting connections: half of what the open
/// file limit leaves after the workers (at least 16, at most its own cap).
pub fn health_connection_cap(bots: usize) -> usize {
    let soft = sys::nofile_limit().map_or(1024, |(soft, _)| soft);
    let spare = soft.saturating_sub(fds_needed(bots)) / 2;
    (spare as usize).clamp(16, crate::health::server::MAX_PENDING)
}
