//! What botfleet keeps across restarts in `STATE_DIR`: the bot-index
//! registry (`bots.json`, bot id to index) and each bot's next update offset
//! (`offset-<botid>`), both written atomically (temp file, fsync, rename).
//! Only the supervisor writes the registry; only a bot's worker writes its
//! offset. This module must never delete a state file.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A state file that could not be read or written.
#[derive(Debug)]
pub enum StateError {
    /// Reading, writing or renaming failed.
    Io { path: PathBuf, source: io::Error },
    /// The file is there but does not hold what it should.
    Corrupt { path: PathBuf, reason: String },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StateError::Corrupt { path, reason } => {
                write!(f, "{} is corrupt: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StateError::Io { source, .. } => Some(source),
            StateError::Corrupt { .. } => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: a temp file beside it, optionally
/// fsynced, then renamed over. A failure leaves the old file as it was and
/// removes the temp file.
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        if fs::remove_file(&tmp).is_err() {
            // The temp file may never have been created; nothing to undo.
        }
        return Err(StateError::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

/// The bot id to index map in `STATE_DIR/bots.json`. A bot keeps its index
/// forever; a new bot gets the lowest index never used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    indices: BTreeMap<u64, u32>,
}

impl Registry {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("bots.json")
    }

    /// Reads the registry; a missing file is an empty registry.
    pub fn load(state_dir: &Path) -> Result<Registry, StateError> {
        let path = Registry::path(state_dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let corrupt = |reason: &str| StateError::Corrupt {
            path: path.clone(),
            reason: reason.to_string(),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| corrupt(&e.to_string()))?;
        let bots = v["bots"]
            .as_object()
            .ok_or_else(|| corrupt("no \"bots\" object"))?;
        let mut indices = BTreeMap::new();
        for (id, index) in bots {
            let id: u64 = id
                .parse()
                .map_err(|_| corrupt("a bot id is not a number"))?;
            let index = index
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| corrupt("an index is not a whole number"))?;
            indices.insert(id, index);
        }
        Ok(Registry { indices })
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
        let bots: serde_json::Map<String, Value> = self
            .indices
            .iter()
            .map(|(id, i)| (id.to_string(), json!(i)))
            .collect();
        let text =
            serde_json::to_string_pretty(&json!({ "bots": bots })).unwrap_or_else(|_| "{}".into());
        write_atomic(&Registry::path(state_dir), text.as_bytes(), true)
    }

    pub fn get(&self, bot_id: u64) -> Option<u32> {
        self.indices.get(&bot_id).copied()
    }

    /// The bot's index, assigning the lowest never-used one to a new bot.
    /// Returns the index and whether the registry changed.
    pub fn index_for(&mut self, bot_id: u64) -> (u32, bool) {
        if let Some(i) = self.get(bot_id) {
            return (i, false);
        }
        let used: std::collections::BTreeSet<u32> = self.indices.values().copied().collect();
        // From 0, as in the original design; a registry written by an earlier
        // version (from 1) keeps its indices.
        let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        self.indices.insert(bot_id, index);
        (index, true)
    }
}

/// The path of a bot's offset file.
pub fn offset_path(state_dir: &Path, bot_id: u64) -> PathBuf {
    state_dir.join(format!("offset-{bot_id}"))
}

/// The persisted next offset of a bot, if any.
pub fn read_offset(state_dir: &Path, bot_id: u64) -> Result<Option<i64>, StateError> {
    let path = offset_path(state_dir, bot_id);
    match fs::read_to_string(&path) {
        Ok(t) => t.trim().parse().map(Some).map_err(|_| StateError::Corrupt {
            path,
            reason: "not a number".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Persists the next offset; `sync` asks for an fsync as well.
pub fn write_offset(
    state_dir: &Path,
    bot_id: u64,
    offset: i64,
    sync: bool,
) -> Result<(), StateError> {
    write_atomic(
        &offset_path(state_dir, bot_id),
        format!("{offset}\n").as_bytes(),
        sync,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "botfleet-state-{}-{name}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        ));
        fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    #[test]
    fn indices_are_stable_and_never_reused() {
        let dir = scratch("registry");
        let mut r = Registry::load(&dir).expect("missing file is empty");
        assert_eq!(r.index_for(111), (0, true));
        assert_eq!(r.index_for(222), (1, true));
        assert_eq!(r.index_for(111), (0, false));
        r.save(&dir).expect("save");
        let mut again = Registry::load(&dir).expect("load");
        assert_eq!(again, r);
        // A removed bot keeps its entry, so a new bot never takes its index.
        assert_eq!(again.index_for(333), (2, true));
    }

    #[test]
    fn corrupt_registry_is_an_error_not_a_reset() {
        let dir = scratch("corrupt");
        fs::write(Registry::path(&dir), "{not json").expect("write");
        assert!(matches!(
            Registry::load(&dir),
            Err(StateError::Corrupt { .. })
        ));
        fs::write(Registry::path(&dir), r#"{"bots":{"1":-1}}"#).expect("write");
        assert!(Registry::load(&dir).is_err());
    }

    #[test]
    fn index_zero_and_an_earlier_versions_registry_both_load() {
        let dir = scratch("from-zero");
        // Written by this version: indices from 0.
        fs::write(Registry::path(&dir), r#"{"bots":{"7":0,"8":1}}"#).expect("write");
        let r = Registry::load(&dir).expect("index 0 is valid");
        assert_eq!((r.get(7), r.get(8)), (Some(0), Some(1)));
        // Written by an earlier version (from 1): every bot keeps its index,
        // and a new bot gets the lowest index never used, 0.
        fs::write(Registry::path(&dir), r#"{"bots":{"7":1,"8":2}}"#).expect("write");
        let mut old = Registry::load(&dir).expect("an old registry loads");
        assert_eq!((old.get(7), old.get(8)), (Some(1), Some(2)));
        assert_eq!(old.index_for(9), (0, true));
        assert_eq!(old.index_for(10), (3, true));
    }

    #[test]
    fn offsets_round_trip() {
        let dir = scratch("offset");
        assert_eq!(read_offset(&dir, 5).expect("missing is none"), None);
        write_offset(&dir, 5, 500_000_123, true).expect("write");
        assert_eq!(read_offset(&dir, 5).expect("read"), Some(500_000_123));
        write_offset(&dir, 5, 500_000_124, false).expect("write");
        assert_eq!(read_offset(&dir, 5).expect("read"), Some(500_000_124));
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temp file is left behind");
    }
}
