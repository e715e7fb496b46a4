//! The config watcher: a thread that stats `.env` every
//! BOT_TOKEN_MONITOR_INTERVAL, hashes its content when the mtime or size
//! changed, and once new content has been stable for CONFIG_RELOAD_DEBOUNCE
//! asks the supervisor to reload. It follows symlinks (a Kubernetes Secret
//! volume swaps one), survives the file being replaced by rename or briefly
//! missing, and warns once while it is missing. It sleeps on its control
//! channel, so dropping the `Watcher` stops it at once. It must never parse
//! or apply the config itself: the supervisor does, so a rejected file
//! changes nothing.

use crate::fleet::Event;
use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

/// The most of the file the watcher reads to hash it; the config loader
/// rejects anything this large anyway.
const MAX_HASHED: u64 = 16 * 1024 * 1024;

/// How the watcher polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Zero turns polling off.
    pub interval: Duration,
    pub debounce: Duration,
}

/// The handle the supervisor keeps; dropping it stops the thread.
#[derive(Debug)]
pub struct Watcher {
    ctl: Sender<Timing>,
}

impl Watcher {
    pub fn start(path: PathBuf, timing: Timing, events: Sender<Event>) -> std::io::Result<Watcher> {
        let (ctl, rx) = mpsc::channel();
        // Take the baseline now, on the caller's thread, so a change made
        // right after the config was loaded is not mistaken for the baseline.
        let baseline = (look(&path), hash_file(&path).ok());
        std::thread::Builder::new()
            .name("watcher".into())
            .stack_size(128 * 1024)
            .spawn(move || watch(path, timing, baseline, rx, events))?;
        Ok(Watcher { ctl })
    }

    /// New polling settings after a reload.
    pub fn retime(&self, timing: Timing) {
        if self.ctl.send(timing).is_err() {
            log::debug!("the config watcher has stopped");
        }
    }
}

/// FNV-1a, 64 bits: stable and enough to tell contents apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What the watcher sees of the file at one look.
#[derive(Debug, Clone, PartialEq)]
enum Look {
    Missing,
    Unreadable(String),
    Present {
        mtime: Option<SystemTime>,
        len: u64,
        inode: u64,
    },
}

fn look(path: &std::path::Path) -> Look {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Look::Present {
            mtime: m.modified().ok(),
            len: m.len(),
            inode: std::os::unix::fs::MetadataExt::ino(&m),
        },
        Ok(_) => Look::Unreadable("not a regular file".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Look::Missing,
        Err(e) => Look::Unreadable(e.to_string()),
    }
}

fn hash_file(path: &std::path::Path) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_HASHED)
        .read_to_end(&mut bytes)?;
    Ok(fnv1a(&bytes))
}

fn watch(
    path: PathBuf,
    mut timing: Timing,
    baseline: (Look, Option<u64>),
    ctl: Receiver<Timing>,
    events: Sender<Event>,
) {
    let shown = path.display().to_string();
    let (mut last_look, mut applied) = baseline;
    let mut current = applied;
    let mut pending_since: Option<Instant> = None;
    let mut complained = false;
    loop {
        // Sleep on the control channel: a new timing wakes us, a dropped
        // handle ends us.
        let wait = match (timing.interval.is_zero(), pending_since) {
            (true, _) => None,
            (false, Some(since)) => Some(
                (since + timing.debounce)
                    .saturating_duration_since(Instant::now())
                    .min(timing.interval),
            ),
            (false, None) => Some(timing.interval),
        };
        let received = match wait {
            None => ctl.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(w) => ctl.recv_timeout(w),
        };
        match received {
            Ok(t) => {
                timing = t;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now_look = look(&path);
        match &now_look {
            Look::Missing | Look::Unreadable(_) => {
                if !complained {
                    let why = match &now_look {
                        Look::Unreadable(e) => e.clone(),
                        _ => "missing".into(),
                    };
                    log::warn!("{shown} is {why}; keeping the running config until it is back");
                    complained = true;
                }
                pending_since = None;
                last_look = now_look;
                continue;
            }
            Look::Present { .. } => {
                if complained {
                    log::info!("{shown} is back");
                    complained = false;
                }
            }
        }
        // File times tick coarsely (a few ms): a same-size rewrite in the
        // same tick keeps the mtime, so a recently touched file is hashed
        // on every look until it is a couple of seconds old.
        let recent = match &now_look {
            Look::Present { mtime: Some(t), .. } => {
                t.elapsed().map_or(true, |age| age < Duration::from_secs(2))
            }
            _ => false,
        };
        if now_look != last_look || recent {
            last_look = now_look;
            match hash_file(&path) {
                Ok(h) => {
                    if Some(h) != current {
                        current = Some(h);
                        // The debounce restarts at every change of content.
                        pending_since = Some(Instant::now());
                    }
                }
                Err(e) => log::warn!("cannot read {shown}: {e}"),
            }
        }
        if current == applied {
            pending_since = None;
            continue;
        }
        if let Some(since) = pending_since {
            if since.elapsed() >= timing.debounce {
                // A same-size rewrite within the mtime's resolution would
                // slip by the stat; hash once more before acting.
                if let Ok(h) = hash_file(&path) {
                    if Some(h) != current {
                        current = Some(h);
                        pending_since = Some(Instant::now());
                        continue;
                    }
                }
                applied = current;
                pending_since = None;
                let event = Event::Reload {
                    why: format!("{shown} changed"),
                    reply_to: None,
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_the_reference_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "botfleet-watch-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_change_is_reported_once_after_the_debounce_and_a_rename_counts() {
        let dir = scratch();
        let path = dir.join(".env");
        std::fs::write(&path, "A=1\n").expect("write");
        let (tx, rx) = mpsc::channel();
        let timing = Timing {
            interval: Duration::from_millis(20),
            debounce: Duration::from_millis(150),
        };
        let w = Watcher::start(path.clone(), timing, tx).expect("start");
        // Replace by rename, the way editors and `sed -i` do.
        let tmp = dir.join(".env.tmp");
        std::fs::write(&tmp, "A=2\n").expect("write");
        let t0 = Instant::now();
        std::fs::rename(&tmp, &path).expect("rename");
        let ev = rx.recv_timeout(Duration::from_secs(5)).expect("a reload");
        assert!(t0.elapsed() >= Duration::from_millis(150), "debounced");
        assert!(matches!(ev, Event::Reload { .. }));
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "only once per change"
        );
        // Missing for a while, then back with new content: one reload.
        std::fs::remove_file(&path).expect("remove");
        std::thread::sleep(Duration::from_millis(100)); // let it see the file missing
        std::fs::write(&path, "A=3\n").expect("write");
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(Event::Reload { .. })
        ));
        drop(w);
        // Dropping the handle stops the thread, which drops its sender.
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
    }

    #[test]
    fn follows_a_symlink_swap() {
        let dir = scratch();
        let a = dir.join("a.env");
        let b = dir.join("b.env");
        std::fs::write(&a, "X=1\n").expect("write");
        std::fs::write(&b, "X=2\n").expect("write");
        let link = dir.join(".env");
        std::os::unix::fs::symlink(&a, &link).expect("symlink");
        let (tx, rx) = mpsc::channel();
        let timing = Timing {
            interval: Duration::from_millis(20),
            debounce: Duration::from_millis(50),
        };
        let _w = Watcher::start(link.clone(), timing, tx).expect("start");
        let tmp_link = dir.join(".env.new");
        std::os::unix::fs::symlink(&b, &tmp_link).expect("symlink");
        std::fs::rename(&tmp_link, &link).expect("swap");
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(Event::Reload { .. })
        ));
    }
}
