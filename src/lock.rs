//! File locks: the single-instance lock of the supervisor (`LOCK_FILE`,
//! holding its PID) and the per-token poller lock a worker holds in
//! `STATE_DIR/bot-<botid>.lock` while it lives. Both are `fs2` advisory
//! locks, so the kernel releases them when the holder dies, even by kill -9.
//! This module must never remove a lock file it does not hold.

use fs2::FileExt;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock; its PID if the file names one.
    Held { path: PathBuf, pid: Option<u32> },
    /// The lock file could not be opened, locked or written.
    Io { path: PathBuf, source: io::Error },
    /// Waiting for the lock took longer than allowed.
    TimedOut { path: PathBuf },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held { pid: Some(pid), .. } => {
                write!(f, "another botfleet is running (PID {pid})")
            }
            LockError::Held { path, pid: None } => {
                write!(
                    f,
                    "another botfleet is running (it holds {})",
                    path.display()
                )
            }
            LockError::Io { path, source } => {
                write!(f, "cannot use lock file {}: {source}", path.display())
            }
            LockError::TimedOut { path } => {
                write!(f, "timed out waiting for lock {}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn open(path: &Path) -> Result<File, LockError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn is_contended(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
}

/// The PID written in a lock file, if the file exists and names one.
pub fn read_pid(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok()
}

/// Whether some process holds the lock at `path` right now.
/// How often, and how far apart, a start retries a lock found held (a
/// look by `is_held` lasts microseconds; a running supervisor, its life).
const ACQUIRE_TRIES: u32 = 10;
const ACQUIRE_RETRY: Duration = Duration::from_millis(20);

pub fn is_held(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
        return false;
    };
    match file.try_lock_exclusive() {
        Ok(()) => {
            // We only looked: let go at once (dropping the file also unlocks).
            drop(file);
            false
        }
        Err(_) => true,
    }
}

/// The file beside the instance lock where the running supervisor records
/// the address its health server actually bound (`bot.lock.health`), so
/// `health` and `status` find the fleet even on a fallback port.
pub fn health_file(lock_path: &Path) -> PathBuf {
    let mut name = lock_path.as_os_str().to_os_string();
    name.push(".health");
    PathBuf::from(name)
}

/// The health address the supervisor holding `lock_path` recorded, if one
/// is recorded and that supervisor still holds its lock.
pub fn read_health_addr(lock_path: &Path) -> Option<std::net::SocketAddr> {
    if !is_held(lock_path) {
        return None;
    }
    let text = std::fs::read_to_string(health_file(lock_path)).ok()?;
    text.trim().parse().ok()
}

/// The supervisor's single-instance lock. Dropping it releases the lock;
/// `release` also removes the file, as a clean exit should.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock without waiting and writes our PID into the file.
    pub fn acquire(path: &Path) -> Result<InstanceLock, LockError> {
        let mut file = open(path)?;
        // `health`, `status` and `stop` look with `is_held`, holding the
        // lock for an instant: a start at that instant (a HEALTHCHECK every
        // few seconds) tries again briefly instead of exiting 3.
        let mut tries = 0;
        let mut locked = file.try_lock_exclusive();
        while locked.as_ref().is_err_and(is_contended) && tries < ACQUIRE_TRIES {
            tries += 1;
            std::thread::sleep(ACQUIRE_RETRY);
            locked = file.try_lock_exclusive();
        }
        if let Err(e) = locked {
            if is_contended(&e) {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    pid,
                });
            }
            return Err(LockError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(InstanceLock {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records (or, with `None`, removes) the health server's address beside
    /// the lock. Written whole (temp file and rename): a reader sees the old
    /// address or the new one.
    pub fn record_health_addr(&self, addr: Option<std::net::SocketAddr>) -> io::Result<()> {
        record_health_addr(&self.path, addr)
    }

    /// Removes the file while still holding the lock, then lets go.
    pub fn release(self) -> io::Result<()> {
        if let Err(e) = record_health_addr(&self.path, None) {
            log::debug!("cannot remove the health address file: {e}");
        }
        let removed = std::fs::remove_file(&self.path);
        drop(self.file);
        removed
    }
}

/// Writes or removes `health_file(lock_path)`; only the lock's holder calls it.
pub fn record_health_addr(lock_path: &Path, addr: Option<std::net::SocketAddr>) -> io::Result<()> {
    let path = health_file(lock_path);
    match addr {
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Some(addr) => {
            let mut tmp = path.as_os_str().to_os_string();
            tmp.push(".tmp");
            std::fs::write(&tmp, format!("{addr}\n"))?;
            std::fs::rename(&tmp, &path)
        }
    }
}

/// A worker's lock on one token: held while the worker lives, so no two
/// pollers on this host ever share a token.
#[derive(Debug)]
pub struct TokenLock {
    _file: File,
}

impl TokenLock {
    /// Takes the lock, waiting up to `wait` for a predecessor to let go.
    /// `on_wait` is called once if the lock is busy at first.
    pub fn acquire(
        path: &Path,
        wait: Duration,
        on_wait: impl FnOnce(),
    ) -> Result<TokenLock, LockError> {
        let file = open(path)?;
        let deadline = Instant::now() + wait;
        let mut on_wait = Some(on_wait);
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => return Ok(TokenLock { _file: file }),
                Err(e) if is_contended(&e) => {
                    if let Some(f) = on_wait.take() {
                        f();
                    }
                    if Instant::now() >= deadline {
                        return Err(LockError::TimedOut {
                            path: path.to_path_buf(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(source) => {
                    return Err(LockError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_during_a_look_at_the_lock_waits_for_it() {
        let path = scratch("look");
        drop(InstanceLock::acquire(&path).expect("first start"));
        // A stale lock file (a killed supervisor) that a probe is looking at.
        std::fs::write(&path, "1\n").expect("stale lock file");
        let look = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open it as is_held does");
        look.try_lock_exclusive().expect("the probe's instant");
        let probe = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(40));
            drop(look);
        });
        let lock = InstanceLock::acquire(&path).expect("the start waits out the look");
        probe.join().expect("the probe thread");
        lock.release().expect("release");
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "botfleet-lock-{}-{name}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        dir.join("bot.lock")
    }

    #[test]
    fn second_instance_is_refused_with_the_pid() {
        let path = scratch("instance");
        let lock = InstanceLock::acquire(&path).expect("first lock");
        assert_eq!(read_pid(&path), Some(std::process::id()));
        assert!(is_held(&path));
        match InstanceLock::acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        let addr: std::net::SocketAddr = "127.0.0.1:9100".parse().expect("an address");
        lock.record_health_addr(Some(addr)).expect("record");
        assert_eq!(read_health_addr(&path), Some(addr));
        lock.release().expect("release removes the file");
        assert!(!path.exists());
        assert!(
            !health_file(&path).exists(),
            "the address goes with the lock"
        );
        assert_eq!(read_health_addr(&path), None);
        assert!(!is_held(&path));
    }

    #[test]
    fn token_lock_waits_then_times_out() {
        let path = scratch("token");
        let first = TokenLock::acquire(&path, Duration::ZERO, || {}).expect("free lock");
        let mut waited = false;
        let second = TokenLock::acquire(&path, Duration::from_millis(50), || waited = true);
        assert!(matches!(second, Err(LockError::TimedOut { .. })));
        assert!(waited);
        drop(first);
        TokenLock::acquire(&path, Duration::ZERO, || {}).expect("free again after drop");
    }
}
