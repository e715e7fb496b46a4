//! The bot's durable inbox: `STATE_DIR/inbox-<botid>/journal`, an
//! append-only file of JSON lines (format in docs/inbox.md). The poll loop
//! appends each getUpdates batch with one write, fsyncs it (through
//! `sync_handle`, outside the inbox's lock, while the batch is already being
//! handled) and only then confirms the batch to Telegram with the next
//! offset; a job's `done` record is appended
//! when its update is handled and every reply is out. At start-up the
//! updates without a `done` record are handed back, in journal order.
//! Compaction rewrites the file with only the updates not done (temp file,
//! fsync, rename).
//!
//! Invariant: an update confirmed to Telegram is in the journal (fsynced),
//! and an update is dropped from the journal only after its `done` record.
//! This module must never drop an update that is not done, nor report a
//! batch written before its fsync returned.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The journal's version, in its header line.
const VERSION: u64 = 1;
/// Compaction happens once the journal is this big and mostly done.
const COMPACT_BYTES: u64 = 256 * 1024;

/// A failure of the inbox's files.
#[derive(Debug)]
pub enum InboxError {
    /// Reading, writing or syncing a file failed.
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboxError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for InboxError {}

fn io_err(path: &Path) -> impl Fn(io::Error) -> InboxError + '_ {
    move |source| InboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An update not done yet, handed back at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub update: Value,
}

/// What `open` found.
#[derive(Debug)]
pub struct Opened {
    pub inbox: Inbox,
    /// Updates not done, in the order they were fetched.
    pub pending: Vec<Entry>,
    /// The journal belonged to another TELEGRAM_API_URL (this one): it was
    /// set aside and the bot starts afresh.
    pub other_url: Option<String>,
    /// A torn last line (a kill during a write) was cut off.
    pub torn: bool,
}

/// One bot's journal, open for appending. Not thread-safe by itself: the
/// worker keeps it behind a mutex.
#[derive(Debug)]
pub struct Inbox {
    path: PathBuf,
    api_url: String,
    file: File,
    /// A second handle on the journal, to fsync without the inbox's lock.
    sync_handle: Arc<File>,
    bytes: u64,
    /// Not-done updates by journal order: sequence → (id, fetched at ms).
    order: BTreeMap<u64, (i64, u64)>,
    /// Not-done update id → sequence.
    pending: HashMap<i64, u64>,
    seq: u64,
    /// The next getUpdates offset, as last written.
    next: Option<i64>,
    /// Lines in the file (for the compaction ratio).
    lines: u64,
    /// `done` records written since the last fsync.
    dirty: bool,
}

/// The directory of a bot's inbox.
pub fn dir(state_dir: &Path, bot_id: u64) -> PathBuf {
    state_dir.join(format!("inbox-{bot_id}"))
}

fn header(api_url: &str, next: Option<i64>) -> String {
    format!(
        "{}\n",
        json!({"botfleet_inbox": VERSION, "api_url": api_url, "next": next})
    )
}

impl Inbox {
    /// Opens (or creates) the journal in `dir` for `api_url`, cutting off a
    /// torn last line. A journal of another API URL is renamed to
    /// `journal.other-url` and a new one begins.
    pub fn open(dir: &Path, api_url: &str) -> Result<Opened, InboxError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join("journal");
        let mut other_url = None;
        let mut torn = false;
        let mut next = None;
        let mut order = BTreeMap::new();
        let mut pending = HashMap::new();
        let mut updates: HashMap<i64, Value> = HashMap::new();
        let mut seq = 0u64;
        let mut lines = 0u64;
        let mut good_len = 0u64;
        let mut fresh = true;
        match File::open(&path) {
            Ok(f) => {
                let mut reader = BufReader::new(f);
                let mut line = String::new();
                let mut first = true;
                loop {
                    line.clear();
                    let n = reader.read_line(&mut line).map_err(io_err(&path))?;
                    if n == 0 {
                        break;
                    }
                    let parsed: Option<Value> = if line.ends_with('\n') {
                        serde_json::from_str(line.trim_end()).ok()
                    } else {
                        None
                    };
                    let Some(v) = parsed else {
                        // Only the last line can be torn (appends are whole
                        // lines); anything after a bad line is not trusted.
                        torn = true;
                        break;
                    };
                    good_len += n as u64;
                    lines += 1;
                    if first {
                        first = false;
                        let url = v["api_url"].as_str().unwrap_or("");
                        if v["botfleet_inbox"].as_u64().is_none() || url != api_url {
                            other_url = Some(url.to_string());
                            break;
                        }
                        fresh = false;
                        next = v["next"].as_i64();
                        continue;
                    }
                    if let Some(id) = v["done"].as_i64() {
                        if let Some(s) = pending.remove(&id) {
                            order.remove(&s);
                            updates.remove(&id);
                        }
                    } else if let Some(n) = v["next"].as_i64() {
                        next = Some(n);
                    } else if let Some(id) = v["update"]["update_id"].as_i64() {
                        if let std::collections::hash_map::Entry::Vacant(slot) = pending.entry(id) {
                            seq += 1;
                            slot.insert(seq);
                            order.insert(seq, (id, v["at"].as_u64().unwrap_or(0)));
                            updates.insert(id, v["update"].clone());
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        if other_url.is_some() {
            let aside = dir.join("journal.other-url");
            fs::rename(&path, &aside).map_err(io_err(&path))?;
        }
        if fresh {
            // A new journal: the header, renamed into place, the directory
            // fsynced. The header needs no fsync of its own: a journal that
            // a crash leaves empty or torn holds nothing confirmed and is
            // made again at the next start (a torn first line reads as
            // fresh), and the first batch's fsync, before any getUpdates
            // confirms that batch, makes header and batch durable together.
            let tmp = dir.join("journal.tmp");
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(header(api_url, None).as_bytes())
                .map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            sync_dir(dir);
            lines = 1;
            good_len = header(api_url, None).len() as u64;
            next = None;
            order.clear();
            pending.clear();
            updates.clear();
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if torn {
            file.set_len(good_len).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        let mut file = file;
        file.seek(SeekFrom::Start(good_len))
            .map_err(io_err(&path))?;
        let sync_handle = Arc::new(file.try_clone().map_err(io_err(&path))?);
        let entries = order
            .values()
            .filter_map(|(id, _)| updates.remove(id).map(|update| Entry { id: *id, update }))
            .collect();
        Ok(Opened {
            inbox: Inbox {
                path,
                api_url: api_url.to_string(),
                file,
                sync_handle,
                bytes: good_len,
                order,
                pending,
                seq,
                next,
                lines,
                dirty: false,
            },
            pending: entries,
            other_url,
            torn,
        })
    }

    /// The offset for the next getUpdates: one past the newest update
    /// written (None before the first).
    pub fn next_offset(&self) -> Option<i64> {
        self.next
    }

    /// True when this update is in the journal and not done.
    pub fn contains(&self, id: i64) -> bool {
        self.pending.contains_key(&id)
    }

    /// Updates not done.
    pub fn depth(&self) -> usize {
        self.pending.len()
    }

    /// When the oldest update not done was fetched (ms since the epoch).
    pub fn oldest_ms(&self) -> Option<u64> {
        self.order.values().next().map(|(_, at)| *at)
    }

    /// The journal's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a batch (each update's id and JSON text, as the poller made
    /// them) and the next offset with one write; the caller fsyncs it
    /// (`sync_handle`) before it confirms the batch. Updates already in the
    /// inbox are left out; the ones written come back in order, with their
    /// text (a compact form to hold until they are handled). On an error
    /// nothing of the batch counts (the file is cut back), so the caller
    /// must not confirm it.
    pub fn append(
        &mut self,
        updates: Vec<(i64, String)>,
        next: i64,
        now_ms: u64,
    ) -> Result<Vec<(i64, String)>, InboxError> {
        use std::fmt::Write as _;
        let mut text = String::new();
        let mut written: Vec<(i64, String)> = Vec::with_capacity(updates.len());
        for (id, raw) in updates {
            if self.pending.contains_key(&id) || written.iter().any(|(i, _)| *i == id) {
                continue;
            }
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{{\"at\":{now_ms},\"update\":{raw}}}");
            written.push((id, raw));
        }
        text.push_str(&json!({ "next": next }).to_string());
        text.push('\n');
        let before = self.bytes;
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            // Cut back a partial write so the file ends on a whole line.
            let cut = self
                .file
                .set_len(before)
                .and_then(|()| self.file.seek(SeekFrom::Start(before)).map(|_| ()));
            if let Err(c) = cut {
                log::error!("cannot cut the inbox back after a failed write: {c}");
            }
            return Err(io_err(&self.path)(e));
        }
        self.bytes += text.len() as u64;
        self.lines += written.len() as u64 + 1;
        self.dirty = true;
        for (id, _) in &written {
            self.seq += 1;
            self.order.insert(self.seq, (*id, now_ms));
            self.pending.insert(*id, self.seq);
        }
        self.next = Some(next);
        Ok(written)
    }

    /// Records an update as done (not fsynced: the next batch's fsync or
    /// `sync` carries it; a power loss before that repeats it). Returns
    /// false when it was not pending.
    pub fn done(&mut self, id: i64) -> Result<bool, InboxError> {
        let Some(seq) = self.pending.remove(&id) else {
            return Ok(false);
        };
        self.order.remove(&seq);
        // Formatted on the stack: one of these per update handled.
        let mut buf = [0u8; 40];
        let mut cursor = io::Cursor::new(&mut buf[..]);
        // 30 bytes at most ({"done":-9223372036854775808}\n) fit in 40.
        let _ = writeln!(cursor, "{{\"done\":{id}}}");
        let n = cursor.position() as usize;
        let line = &buf[..n];
        let before = self.bytes;
        match self.file.write_all(line) {
            Ok(()) => {
                self.bytes += line.len() as u64;
                self.lines += 1;
                self.dirty = true;
                Ok(true)
            }
            Err(e) => {
                // Done in memory; on disk it repeats after a restart unless
                // a compaction writes the journal again first.
                if let Err(c) = self.file.set_len(before) {
                    log::error!("cannot cut the inbox back after a failed write: {c}");
                }
                let _ = self.file.seek(SeekFrom::Start(before));
                Err(io_err(&self.path)(e))
            }
        }
    }

    /// A handle to fsync the journal with, outside the inbox's lock (an
    /// fsync on it covers every write made before through any handle).
    pub fn sync_handle(&self) -> Arc<File> {
        Arc::clone(&self.sync_handle)
    }

    /// Flushes everything written to the disk.
    pub fn sync(&mut self) -> Result<(), InboxError> {
        self.file.sync_data().map_err(io_err(&self.path))?;
        self.dirty = false;
        Ok(())
    }

    /// Flushes `done` records not yet on the disk (a quiet bot's: under
    /// load the next batch's fsync carries them).
    pub fn sync_if_dirty(&mut self) -> Result<(), InboxError> {
        if self.dirty {
            self.sync()?;
        }
        Ok(())
    }

    /// True when compaction would pay off: the file is big and mostly done.
    pub fn wants_compaction(&self) -> bool {
        self.bytes >= COMPACT_BYTES && (self.pending.len() as u64) * 4 < self.lines
    }

    /// Rewrites the journal with only the updates not done: a temp file,
    /// fsync, rename, fsync of the directory. On an error the old journal
    /// stays as it was.
    pub fn compact(&mut self) -> Result<(), InboxError> {
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let tmp = dir.join("journal.tmp");
        let mut kept: HashMap<i64, String> = HashMap::new();
        {
            let f = File::open(&self.path).map_err(io_err(&self.path))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(io_err(&self.path))?;
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(id) = v["update"]["update_id"].as_i64() {
                    if self.pending.contains_key(&id) && !kept.contains_key(&id) {
                        kept.insert(id, line);
                    }
                }
            }
        }
        let mut text = header(&self.api_url, self.next);
        let mut lines = 1;
        for (id, _) in self.order.values() {
            if let Some(line) = kept.get(id) {
                text.push_str(line);
                text.push('\n');
                lines += 1;
            }
        }
        let result = File::create(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        sync_dir(&dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        file.seek(SeekFrom::End(0)).map_err(io_err(&self.path))?;
        self.sync_handle = Arc::new(file.try_clone().map_err(io_err(&self.path))?);
        self.file = file;
        self.bytes = text.len() as u64;
        self.lines = lines;
        self.dirty = false;
        Ok(())
    }
}

/// fsyncs a directory so a rename in it survives a power loss; a failure
/// only weakens that, so it is logged, not returned.
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        log::debug!("cannot fsync {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "botfleet-inbox-{}-{name}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        ));
        fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    fn tree(id: i64, chat: i64) -> Value {
        json!({"update_id": id, "message": {"chat": {"id": chat}, "text": format!("m{id}")}})
    }

    /// An update as the poller hands it over: its id and JSON text.
    fn up(id: i64, chat: i64) -> (i64, String) {
        (id, tree(id, chat).to_string())
    }

    const URL: &str = "http://127.0.0.1:1";

    #[test]
    fn what_is_not_done_comes_back_in_order() {
        let dir = scratch("replay");
        let mut o = Inbox::open(&dir, URL).expect("opens");
        assert!(o.pending.is_empty() && o.other_url.is_none());
        assert_eq!(o.inbox.next_offset(), None);
        let written = o
            .inbox
            .append(vec![up(10, 1), up(11, 2), up(12, 1)], 13, 1000)
            .expect("append");
        let ids: Vec<i64> = written.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [10, 11, 12]);
        let back: Value = serde_json::from_str(&written[0].1).expect("JSON");
        assert_eq!(back, tree(10, 1), "the text is the update");
        assert!(o.inbox.done(11).expect("done"));
        assert!(!o.inbox.done(11).expect("twice"), "done once only");
        o.inbox
            .append(vec![up(5, 3), up(13, 1)], 14, 2000)
            .expect("append");
        assert_eq!(o.inbox.depth(), 4);
        assert_eq!(o.inbox.oldest_ms(), Some(1000));
        drop(o);
        let o = Inbox::open(&dir, URL).expect("reopens");
        let ids: Vec<i64> = o.pending.iter().map(|e| e.id).collect();
        assert_eq!(ids, [10, 12, 5, 13], "journal order, done left out");
        assert_eq!(o.pending[0].update, tree(10, 1));
        assert_eq!(o.inbox.next_offset(), Some(14));
        assert_eq!(o.inbox.depth(), 4);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_the_rest_kept() {
        let dir = scratch("torn");
        let mut o = Inbox::open(&dir, URL).expect("opens");
        o.inbox
            .append(vec![up(1, 1), up(2, 1)], 3, 0)
            .expect("append");
        drop(o);
        let path = dir.join("journal");
        let good = fs::metadata(&path).expect("exists").len();
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"at\":0,\"update\":{\"update_id\":3,\"mess")
            .expect("write");
        drop(f);
        let mut o = Inbox::open(&dir, URL).expect("reopens");
        assert!(o.torn);
        assert_eq!(o.pending.len(), 2);
        assert_eq!(fs::metadata(&path).expect("exists").len(), good);
        o.inbox
            .append(vec![up(3, 1)], 4, 0)
            .expect("append after the cut");
        drop(o);
        let o = Inbox::open(&dir, URL).expect("reopens");
        assert!(!o.torn);
        assert_eq!(o.pending.len(), 3);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_new_journal_left_empty_or_torn_by_a_crash_opens_as_a_new_one() {
        // What a crash can leave of a new journal, whose header is not
        // fsynced before the first batch: nothing, or part of the header.
        for (name, left) in [
            ("empty", &b""[..]),
            ("torn-header", &b"{\"botfleet_inb"[..]),
        ] {
            let dir = scratch(name);
            fs::write(dir.join("journal"), left).expect("write");
            let mut o = Inbox::open(&dir, URL).expect("opens");
            assert!(o.pending.is_empty() && o.other_url.is_none(), "{name}");
            assert_eq!(o.inbox.next_offset(), None, "{name}");
            o.inbox.append(vec![up(1, 1)], 2, 0).expect("append");
            drop(o);
            let o = Inbox::open(&dir, URL).expect("reopens");
            assert_eq!(o.pending.len(), 1, "{name}: the batch is kept");
            assert_eq!(o.inbox.next_offset(), Some(2), "{name}");
            fs::remove_dir_all(&dir).ok();
        }
    }

    #[test]
    fn compaction_keeps_exactly_what_is_not_done() {
        let dir = scratch("compact");
        let mut o = Inbox::open(&dir, URL).expect("opens");
        let mut id = 0;
        while o.inbox.bytes() < COMPACT_BYTES {
            let batch: Vec<(i64, String)> = (0..50).map(|k| up(id + k, k % 7)).collect();
            id += 50;
            o.inbox.append(batch, id, 0).expect("append");
            for k in id - 50..id - 1 {
                o.inbox.done(k).expect("done");
            }
        }
        assert!(o.inbox.wants_compaction());
        let before = o.inbox.bytes();
        let depth = o.inbox.depth();
        o.inbox.compact().expect("compacts");
        assert!(
            o.inbox.bytes() < before / 10,
            "{} of {before}",
            o.inbox.bytes()
        );
        assert!(!o.inbox.wants_compaction());
        assert_eq!(o.inbox.depth(), depth);
        o.inbox
            .append(vec![up(id, 1)], id + 1, 0)
            .expect("append after");
        o.inbox.done(49).expect("done after");
        drop(o);
        let o = Inbox::open(&dir, URL).expect("reopens");
        let ids: Vec<i64> = o.pending.iter().map(|e| e.id).collect();
        let mut want: Vec<i64> = (1..=id / 50)
            .map(|b| b * 50 - 1)
            .filter(|i| *i != 49)
            .collect();
        want.push(id);
        assert_eq!(ids, want);
        assert_eq!(o.inbox.next_offset(), Some(id + 1));
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn another_api_url_starts_afresh_and_keeps_the_old_journal_aside() {
        let dir = scratch("url");
        let mut o = Inbox::open(&dir, URL).expect("opens");
        o.inbox.append(vec![up(7, 1)], 8, 0).expect("append");
        drop(o);
        let o = Inbox::open(&dir, "http://elsewhere").expect("opens");
        assert_eq!(o.other_url.as_deref(), Some(URL));
        assert!(o.pending.is_empty());
        assert_eq!(o.inbox.next_offset(), None);
        assert!(dir.join("journal.other-url").exists());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_update_already_pending_is_not_written_twice() {
        let dir = scratch("dup");
        let mut o = Inbox::open(&dir, URL).expect("opens");
        o.inbox.append(vec![up(1, 1)], 2, 0).expect("append");
        let written = o
            .inbox
            .append(vec![up(1, 1), up(2, 1), up(2, 1)], 3, 0)
            .expect("append");
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].0, 2);
        assert_eq!(o.inbox.depth(), 2);
        fs::remove_dir_all(&dir).ok();
    }
}
