//! Where rendered log lines go: stderr, or LOG_FILE rotated at LOG_MAX_BYTES
//! keeping LOG_KEEP old files (`file.1` newest ... `file.N` oldest). A file
//! that cannot be opened or written (a full disk, a missing directory, no
//! permission) sends lines to stderr instead, with one warning, and is tried
//! again every 30 s and at every reopen (SIGHUP). It must never stop the
//! fleet: every failure here ends in stderr, and a failing stderr is ignored.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a broken LOG_FILE is left alone before it is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// LOG_FILE and its rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSpec {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

/// What a write reports, so the logger can say it once in the right format.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// The file failed: lines go to stderr from now on.
    FellBack(String),
    /// The file works again after a failure.
    Recovered,
}

#[derive(Debug)]
struct Open {
    file: File,
    size: u64,
}

/// The destination of the log stream.
#[derive(Debug, Default)]
pub struct Sink {
    spec: Option<FileSpec>,
    open: Option<Open>,
    /// Set while the file is broken: when to try it again.
    broken_until: Option<Instant>,
}

fn stderr(bytes: &[u8]) {
    // One write per line, so lines from many threads do not interleave.
    if std::io::stderr().lock().write_all(bytes).is_err() {
        // Nowhere left to report a failing stderr; the line is dropped.
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Shifts `file` → `file.1` → ... → `file.keep`, dropping the oldest.
fn rotate(spec: &FileSpec) -> std::io::Result<()> {
    if spec.keep == 0 {
        return File::create(&spec.path).map(drop);
    }
    for n in (1..spec.keep).rev() {
        match std::fs::rename(numbered(&spec.path, n), numbered(&spec.path, n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::rename(&spec.path, numbered(&spec.path, 1)) {
        // Removed by hand (or by a logrotate that does not SIGHUP us): there
        // is nothing to rotate, and the next open creates the file again.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn open(spec: &FileSpec) -> std::io::Result<Open> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.path)?;
    let size = file.metadata()?.len();
    Ok(Open { file, size })
}

impl Sink {
    /// Whether lines go to a file (for choosing colours and timestamps).
    pub fn is_file(&self) -> bool {
        self.spec.is_some()
    }

    /// Sets (or clears) LOG_FILE; a changed spec closes the old file.
    pub fn set(&mut self, spec: Option<FileSpec>) {
        if spec != self.spec {
            self.spec = spec;
            self.open = None;
            self.broken_until = None;
        }
    }

    /// Closes the file so the next line opens it again (logrotate moved it).
    pub fn reopen(&mut self) {
        self.open = None;
        self.broken_until = None;
    }

    /// Writes one rendered line; reports a fallback or a recovery, which
    /// the caller logs (after this line).
    pub fn write(&mut self, bytes: &[u8]) -> Option<Event> {
        let Some(spec) = self.spec.clone() else {
            stderr(bytes);
            return None;
        };
        let was_broken = self.broken_until.is_some();
        if self.broken_until.is_some_and(|t| Instant::now() < t) {
            stderr(bytes);
            return None;
        }
        match self.write_file(&spec, bytes) {
            Ok(()) => {
                self.broken_until = None;
                was_broken.then_some(Event::Recovered)
            }
            Err(e) => {
                self.open = None;
                self.broken_until = Some(Instant::now() + RETRY);
                stderr(bytes);
                (!was_broken).then(|| Event::FellBack(format!("{}: {e}", spec.path.display())))
            }
        }
    }

    fn write_file(&mut self, spec: &FileSpec, bytes: &[u8]) -> std::io::Result<()> {
        if self.open.is_none() {
            self.open = Some(open(spec)?);
        }
        let len = bytes.len() as u64;
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.size > 0 && o.size + len > spec.max_bytes)
        {
            self.open = None;
            rotate(spec)?;
            self.open = Some(open(spec)?);
        }
        let Some(o) = self.open.as_mut() else {
            return Err(std::io::Error::other("log file not open"));
        };
        o.file.write_all(bytes)?;
        o.size += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("botfleet-sink-{}-{name}", std::process::id()));
        let _fresh = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    #[test]
    fn rotates_and_keeps_n_files() {
        let dir = tmp("rotate");
        let path = dir.join("bot.log");
        let mut sink = Sink::default();
        sink.set(Some(FileSpec {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        }));
        for i in 0..40 {
            assert_eq!(
                sink.write(format!("line {i:04} of the log\n").as_bytes()),
                None
            );
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&path) <= 100 && size(&path) > 0);
        assert!(size(&numbered(&path, 1)) > 0);
        assert!(size(&numbered(&path, 2)) > 0);
        assert!(!numbered(&path, 3).exists());
        let newest = std::fs::read_to_string(&path).expect("readable");
        assert!(newest.contains("line 0039"));
        let _cleanup = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_removed_by_hand_is_created_again_at_rotation() {
        let dir = tmp("removed");
        let path = dir.join("bot.log");
        let mut sink = Sink::default();
        sink.set(Some(FileSpec {
            path: path.clone(),
            max_bytes: 40,
            keep: 2,
        }));
        assert_eq!(sink.write(b"first line of the log\n"), None);
        std::fs::remove_file(&path).expect("remove the log by hand");
        // Past LOG_MAX_BYTES: a rotation of a file that is gone.
        assert_eq!(sink.write(b"second line of the log\n"), None);
        assert_eq!(
            std::fs::read_to_string(&path).expect("created again"),
            "second line of the log\n"
        );
        let _cleanup = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_file_falls_back_once() {
        let dir = tmp("fallback");
        let mut sink = Sink::default();
        sink.set(Some(FileSpec {
            path: dir.join("missing-dir").join("bot.log"),
            max_bytes: 1000,
            keep: 1,
        }));
        assert!(matches!(sink.write(b"a\n"), Some(Event::FellBack(_))));
        assert_eq!(sink.write(b"b\n"), None);
        // After a reopen (SIGHUP) with the directory there, it works again.
        std::fs::create_dir_all(dir.join("missing-dir")).expect("temp dir is writable");
        sink.reopen();
        assert_eq!(sink.write(b"c\n"), None);
        let _cleanup = std::fs::remove_dir_all(&dir);
    }
}
