//! The outbox: looks at `bot-N/` about once a second while it holds files
//! or sends are in hand (run by the worker's control thread; an empty,
//! unchanged outbox costs one stat(2) per heartbeat), and sends each regular, non-hidden file whose size and mtime held still
//! across two looks as a document to every MEDIA_RECIPIENTS id, then moves
//! it into `sent/` under a name that overwrites nothing. Which recipients
//! already have a file is kept beside it in `.NAME.sent-to`, so a failure or
//! a restart never sends it twice to anyone. It must never delete or move a
//! file that has not reached every recipient.

use super::media;
use super::send::{Content, Outcome, Outgoing, SendPath};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often finished sends are taken in while some are in flight.
const OUTCOME_CHECK: Duration = Duration::from_millis(20);
/// A recipient who never started the bot cannot be reached until they do:
/// retry after an hour, doubling to six.
const UNREACHABLE_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(3600), Duration::from_secs(6 * 3600));

/// Telegram's 403 for a user the bot may not write to first (never opened
/// the bot, blocked it, or deleted their account).
fn is_unreachable(error: &str) -> bool {
    error.contains("can't initiate conversation")
        || error.contains("bot was blocked by the user")
        || error.contains("user is deactivated")
}

#[derive(Debug)]
struct Job {
    name: String,
    waiting: BTreeSet<i64>,
    failed: bool,
    /// Recipients who cannot be written to until they open the bot.
    unreachable: Vec<i64>,
}

fn progress_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.sent-to"))
}

fn read_progress(dir: &Path, name: &str) -> BTreeSet<i64> {
    std::fs::read_to_string(progress_path(dir, name))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn note_progress(dir: &Path, name: &str, chat_id: i64) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(progress_path(dir, name))?;
    writeln!(f, "{chat_id}")?;
    f.sync_data()
}

/// Regular, non-hidden files in `dir` with their size and mtime.
fn look(dir: &Path) -> HashMap<String, (u64, Option<SystemTime>)> {
    let mut files = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // symlink_metadata: a link is not a regular file and is not followed.
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_file() {
            files.insert(name, (meta.len(), meta.modified().ok()));
        }
    }
    files
}

/// The directory's modification time and inode, as a cheap "anything new?"
/// (creating, renaming or removing an entry moves the time).
type DirStamp = (SystemTime, u64);

fn dir_stamp(dir: &Path) -> Option<DirStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).ok()?;
    Some((meta.modified().ok()?, meta.ino()))
}

/// The outbox of one bot, run by the worker's control thread: `tick` at
/// every wake-up of that thread, and again at the time it returns.
pub struct Outbox {
    dir: PathBuf,
    sent_dir: PathBuf,
    send: SendPath,
    recipients: Box<dyn Fn() -> Vec<i64> + Send>,
    tx: mpsc::Sender<Outcome>,
    rx: mpsc::Receiver<Outcome>,
    last: HashMap<String, (u64, Option<SystemTime>)>,
    jobs: HashMap<u64, Job>,
    cool_down: HashMap<String, (Instant, Duration)>,
    next_tag: u64,
    warned_no_recipients: bool,
    next_look: Instant,
    /// Set when a look found no file and nothing in hand, and the
    /// directory had not changed for a while: until the directory's stamp
    /// moves, a look is one stat(2), and no wake-up of its own is needed.
    quiet: Option<DirStamp>,
}

/// A directory changed within this long may change again within the same
/// tick of the file system's clock, unseen: its stamp is not trusted yet.
const STAMP_SETTLE: Duration = Duration::from_secs(2);

impl Outbox {
    /// `recipients` is read at each look, so a reload of MEDIA_RECIPIENTS
    /// applies at once.
    pub fn new(
        dir: PathBuf,
        send: SendPath,
        recipients: impl Fn() -> Vec<i64> + Send + 'static,
    ) -> Outbox {
        let (tx, rx) = mpsc::channel::<Outcome>();
        Outbox {
            sent_dir: dir.join("sent"),
            dir,
            send,
            recipients: Box::new(recipients),
            tx,
            rx,
            last: HashMap::new(),
            jobs: HashMap::new(),
            cool_down: HashMap::new(),
            next_tag: 0,
            warned_no_recipients: false,
            next_look: Instant::now(),
            quiet: None,
        }
    }

    /// Takes in the sends that finished and looks at the directory when a
    /// look is due. Returns when it wants to run again; `None` while the
    /// outbox is empty and quiet (the caller's next wake-up is soon enough:
    /// a new file is then seen within one heartbeat period).
    #[inline(never)]
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        while let Ok(outcome) = self.rx.try_recv() {
            self.on_outcome(outcome);
        }
        if now >= self.next_look {
            self.next_look = now + LOOK_EVERY;
            let unchanged = self.quiet.is_some() && self.quiet == dir_stamp(&self.dir);
            if !unchanged {
                self.quiet = None;
                let stamp = dir_stamp(&self.dir);
                let files = self.look_once();
                let settled = stamp.is_some_and(|(mtime, _)| {
                    SystemTime::now()
                        .duration_since(mtime)
                        .is_ok_and(|age| age >= STAMP_SETTLE)
                });
                if files == 0 && self.jobs.is_empty() && settled {
                    self.quiet = stamp;
                }
            }
        }
        if self.quiet.is_some() {
            None
        } else if self.jobs.values().any(|j| !j.waiting.is_empty()) {
            // A send that finished is recorded (`.NAME.sent-to`) within
            // this long, not at the next look: a stop or a kill in between
            // would send that file to that recipient again.
            Some(self.next_look.min(now + OUTCOME_CHECK))
        } else {
            Some(self.next_look)
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let dir = self.dir.as_path();
        let Some(job) = self.jobs.get_mut(&outcome.tag) else {
            return;
        };
        job.waiting.remove(&outcome.chat_id);
        match &outcome.error {
            None => {
                if let Err(e) = note_progress(dir, &job.name, outcome.chat_id) {
                    log::warn!(
                        "outbox: cannot record that {} reached {}: {e}",
                        job.name,
                        outcome.chat_id
                    );
                }
            }
            Some(err) if is_unreachable(err) => {
                job.failed = true;
                job.unreachable.push(outcome.chat_id);
            }
            Some(err) => {
                job.failed = true;
                log::warn!(
                    "outbox: {} not sent to {}: {err}",
                    job.name,
                    outcome.chat_id
                );
            }
        }
        if job.waiting.is_empty() {
            if let Some(job) = self.jobs.remove(&outcome.tag) {
                finish_job(dir, &self.sent_dir, job, &mut self.cool_down);
            }
        }
    }

    /// One look: queues the files that held still since the last one.
    /// Returns how many files the directory holds.
    fn look_once(&mut self) -> usize {
        let dir = self.dir.as_path();
        let now_files = look(dir);
        let count = now_files.len();
        let busy: BTreeSet<&str> = self.jobs.values().map(|j| j.name.as_str()).collect();
        let mut due = vec![];
        for (name, stat) in &now_files {
            let stable = self.last.get(name) == Some(stat);
            let cooling = self
                .cool_down
                .get(name)
                .is_some_and(|(until, _)| *until > Instant::now());
            if stable && !cooling && !busy.contains(name.as_str()) {
                due.push(name.clone());
            }
        }
        self.last = now_files;
        if due.is_empty() {
            return count;
        }
        let to = (self.recipients)();
        if to.is_empty() {
            if !self.warned_no_recipients {
                log::warn!("outbox: {} file(s) waiting but no MEDIA_RECIPIENTS (or admins/owner) to send them to", due.len());
                self.warned_no_recipients = true;
            }
            return count;
        }
        self.warned_no_recipients = false;
        due.sort();
        for name in due {
            let done = read_progress(dir, &name);
            let waiting: BTreeSet<i64> = to.iter().copied().filter(|r| !done.contains(r)).collect();
            let job = Job {
                name: name.clone(),
                waiting: waiting.clone(),
                failed: false,
                unreachable: Vec::new(),
            };
            if waiting.is_empty() {
                finish_job(dir, &self.sent_dir, job, &mut self.cool_down);
                continue;
            }
            self.next_tag += 1;
            for chat_id in waiting {
                self.send.send(Outgoing {
                    chat_id,
                    content: Content::Document {
                        path: dir.join(&name),
                        file_name: name.clone(),
                        caption: None,
                    },
                    reply_to: None,
                    ticket: None,
                    report: Some((self.tx.clone(), self.next_tag)),
                });
            }
            self.jobs.insert(self.next_tag, job);
        }
        count
    }
}

fn finish_job(
    dir: &Path,
    sent_dir: &Path,
    job: Job,
    cool_down: &mut HashMap<String, (Instant, Duration)>,
) {
    if job.failed && !job.unreachable.is_empty() {
        let (first, max) = UNREACHABLE_BACKOFF;
        let backoff = cool_down
            .get(&job.name)
            .map_or(first, |(_, b)| (*b * 2).clamp(first, max));
        cool_down.insert(job.name.clone(), (Instant::now() + backoff, backoff));
        log::warn!(
            "outbox: {} stays: recipient(s) {:?} never started this bot (or blocked it), and Telegram lets a bot write only to users who opened it; ask them to send /start to the bot, or take them out of MEDIA_RECIPIENTS; retrying in {} h",
            job.name,
            job.unreachable,
            backoff.as_secs() / 3600
        );
        return;
    }
    if job.failed {
        let backoff = cool_down
            .get(&job.name)
            .map_or(Duration::from_secs(2), |(_, b)| {
                (*b * 2).min(Duration::from_secs(60))
            });
        cool_down.insert(job.name.clone(), (Instant::now() + backoff, backoff));
        log::warn!(
            "outbox: {} stays; retrying in {} s",
            job.name,
            backoff.as_secs()
        );
        return;
    }
    cool_down.remove(&job.name);
    if let Err(e) = std::fs::create_dir_all(sent_dir) {
        log::error!("outbox: cannot create {}: {e}", sent_dir.display());
        return;
    }
    match media::move_no_clobber(&dir.join(&job.name), sent_dir) {
        Ok(to) => {
            log::info!(
                "outbox: sent {} to every recipient; moved to {}",
                job.name,
                to.display()
            );
            if let Err(e) = std::fs::remove_file(progress_path(dir, &job.name)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!(
                        "outbox: cannot remove the progress note of {}: {e}",
                        job.name
                    );
                }
            }
        }
        Err(e) => log::error!(
            "outbox: {} was sent but cannot be moved to sent/: {e}",
            job.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_that_never_started_the_bot_is_unreachable() {
        assert!(is_unreachable(
            "sendDocument: 403 Forbidden: bot can't initiate conversation with a user"
        ));
        assert!(is_unreachable("403 Forbidden: bot was blocked by the user"));
        assert!(!is_unreachable("400 Bad Request: file is too big"));
    }
}
