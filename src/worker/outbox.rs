//! The outbox: a thread that looks at `bot-N/` about once a second, and
//! sends each regular, non-hidden file whose size and mtime held still
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
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

const LOOK_EVERY: Duration = Duration::from_secs(1);
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

/// Starts the outbox thread. `recipients` is read at each look, so a reload
/// of MEDIA_RECIPIENTS applies at once.
pub fn start(
    dir: PathBuf,
    send: SendPath,
    recipients: impl Fn() -> Vec<i64> + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("outbox".into())
        .stack_size(128 * 1024)
        .spawn(move || run(&dir, &send, &recipients))?;
    Ok(())
}

fn run(dir: &Path, send: &SendPath, recipients: &dyn Fn() -> Vec<i64>) {
    let sent_dir = dir.join("sent");
    let (tx, rx) = mpsc::channel::<Outcome>();
    let mut last: HashMap<String, (u64, Option<SystemTime>)> = HashMap::new();
    let mut jobs: HashMap<u64, Job> = HashMap::new();
    let mut cool_down: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut next_tag = 0u64;
    let mut warned_no_recipients = false;
    let mut next_look = Instant::now();
    loop {
        match rx.recv_timeout(next_look.saturating_duration_since(Instant::now())) {
            Ok(outcome) => {
                if let Some(job) = jobs.get_mut(&outcome.tag) {
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
                        if let Some(job) = jobs.remove(&outcome.tag) {
                            finish_job(dir, &sent_dir, job, &mut cool_down);
                        }
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        next_look = Instant::now() + LOOK_EVERY;
        let now_files = look(dir);
        let busy: BTreeSet<&str> = jobs.values().map(|j| j.name.as_str()).collect();
        let mut due = vec![];
        for (name, stat) in &now_files {
            let stable = last.get(name) == Some(stat);
            let cooling = cool_down
                .get(name)
                .is_some_and(|(until, _)| *until > Instant::now());
            if stable && !cooling && !busy.contains(name.as_str()) {
                due.push(name.clone());
            }
        }
        last = now_files;
        if due.is_empty() {
            continue;
        }
        let to = recipients();
        if to.is_empty() {
            if !warned_no_recipients {
                log::warn!("outbox: {} file(s) waiting but no MEDIA_RECIPIENTS (or admins/owner) to send them to", due.len());
                warned_no_recipients = true;
            }
            continue;
        }
        warned_no_recipients = false;
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
                finish_job(dir, &sent_dir, job, &mut cool_down);
                continue;
            }
            next_tag += 1;
            for chat_id in waiting {
                send.send(Outgoing {
                    chat_id,
                    content: Content::Document {
                        path: dir.join(&name),
                        file_name: name.clone(),
                        caption: None,
                    },
                    reply_to: None,
                    ticket: None,
                    report: Some((tx.clone(), next_tag)),
                });
            }
            jobs.insert(next_tag, job);
        }
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
