//! Starting worker processes without copying the supervisor's descriptor
//! table. A spawn (clone, then exec) copies the calling thread's table and
//! the new process closes every close-on-exec copy again at exec: with two
//! descriptors a worker that cost each late worker of a 3,000-bot fleet
//! about 0.6 ms of its start (6,000 descriptors), and grew with the fleet.
//!
//! On Linux one thread, `spawner`, gives itself its own descriptor table
//! (unshare CLONE_FILES) and closes every copy in it but stdin, stdout,
//! stderr and its end of a SOCK_SEQPACKET pair. Per spawn it makes the
//! worker's socket pair (its stdin and stdout) and stderr pipe in that
//! small table, starts the worker (which copies a handful of descriptors),
//! hands the supervisor's ends to the main table over the pair (SCM_RIGHTS,
//! tagged with the request's number) and closes its own copies. The worker
//! stays a child of the supervisor process: its `Child` goes back to the
//! caller and is reaped as before (`reader`).
//!
//! Invariants: the spawner's table holds, between spawns, only 0, 1, 2 and
//! its end of the pair (no descriptor of the main table stays open there,
//! so nothing the supervisor closes, a listener, a lock, lives on); a
//! failed spawn or hand-over leaves nothing open and no child behind
//! (killed and reaped); the thread never exits, since a worker's
//! PR_SET_PDEATHSIG fires when the *thread* that started it ends. Where
//! the thread cannot be set up (not Linux, unshare refused) workers are
//! spawned on the caller's thread as before. It must never spawn anything
//! but what it is handed, nor keep a descriptor after a spawn returns.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStderr, Command, Stdio};

/// A worker as started: the process, the supervisor's end of its socket
/// pair (its stdin and stdout) and the read end of its stderr pipe.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub io: UnixStream,
    pub stderr: ChildStderr,
}

/// Starts workers: through the spawner thread where there is one, else on
/// the caller's thread.
#[derive(Debug)]
pub struct Spawner {
    remote: Option<Remote>,
}

#[derive(Debug)]
struct Remote {
    tx: std::sync::mpsc::Sender<(u64, Command)>,
    rx: std::sync::mpsc::Receiver<(u64, io::Result<Child>)>,
    /// Our end of the hand-over pair.
    sock: OwnedFd,
    /// The number of the last request.
    seq: u64,
    /// The spawner thread's id: its table is /proc/self/task/TID/fd.
    #[cfg_attr(not(test), allow(dead_code))]
    tid: u32,
}

impl Spawner {
    /// Starts the spawner thread; falls back to spawning on the caller's
    /// thread (said at debug level) where it cannot be set up.
    pub fn start() -> Spawner {
        match start_remote() {
            Ok(remote) => Spawner {
                remote: Some(remote),
            },
            Err(e) => {
                log::debug!("Workers are spawned on the supervisor's thread: {e}");
                Spawner::local()
            }
        }
    }

    /// A spawner that starts processes on the caller's thread.
    pub fn local() -> Spawner {
        Spawner { remote: None }
    }

    /// Starts `cmd` (its stdin, stdout and stderr are set here) and returns
    /// the child with the supervisor's ends of its stdio. On any error no
    /// process is left running and no descriptor open.
    pub fn spawn(&mut self, cmd: Command) -> io::Result<Spawned> {
        match self.remote.as_mut() {
            Some(remote) => remote.spawn(cmd),
            None => {
                let (child, io, stderr) = start(cmd)?;
                Ok(Spawned {
                    child,
                    io,
                    stderr: ChildStderr::from(stderr),
                })
            }
        }
    }

    /// The spawner thread's id; None without one.
    #[cfg(test)]
    fn thread_id(&self) -> Option<u32> {
        self.remote.as_ref().map(|r| r.tid)
    }
}

/// Starts `cmd` with a new socket pair as its stdin and stdout and a new
/// pipe as its stderr, all made in the calling thread's table; returns
/// the child and our ends. Our copies of its ends are closed on return.
fn start(mut cmd: Command) -> io::Result<(Child, UnixStream, OwnedFd)> {
    let (ours, theirs) = UnixStream::pair()?;
    let their_stdin = theirs.try_clone()?;
    let (err_read, err_write) = crate::sys::pipe_cloexec()?;
    cmd.stdin(Stdio::from(OwnedFd::from(their_stdin)))
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::from(err_write));
    let spawned = cmd.spawn();
    // Our copies of the worker's ends closed now, so its exit is seen.
    drop(cmd);
    Ok((spawned?, ours, err_read))
}

/// Kills and reaps a child whose start could not be completed.
pub(super) fn abandon(child: &mut Child) {
    if let Err(e) = child.kill() {
        log::error!("Cannot kill a worker after a failed start: {e}");
    }
    if let Err(e) = child.wait() {
        log::error!("Cannot reap a worker after a failed start: {e}");
    }
}

#[cfg(target_os = "linux")]
fn start_remote() -> io::Result<Remote> {
    use std::os::fd::AsRawFd;
    let (sock, theirs) = crate::sys::seqpacket_pair()?;
    let (tx, requests) = std::sync::mpsc::channel::<(u64, Command)>();
    let (replies, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("spawner".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let set_up = crate::sys::unshare_descriptor_table()
                .and_then(|()| crate::sys::close_all_but(&[0, 1, 2, theirs.as_raw_fd()]))
                .map(|()| crate::sys::thread_id());
            let ok = set_up.is_ok();
            // The caller waits for this answer; it cannot be gone.
            if ready_tx.send(set_up).is_err() || !ok {
                return;
            }
            for (seq, cmd) in requests {
                let result = start(cmd).and_then(|(mut child, io, stderr)| {
                    match crate::sys::send_fds(theirs.as_fd(), seq, &[io.as_fd(), stderr.as_fd()]) {
                        Ok(()) => Ok(child),
                        Err(e) => {
                            abandon(&mut child);
                            Err(e)
                        }
                    }
                    // `io` and `stderr` (our copies) are closed here.
                });
                if let Err(std::sync::mpsc::SendError((_, Ok(mut child)))) =
                    replies.send((seq, result))
                {
                    // Nobody to take it: it must not outlive its owner.
                    abandon(&mut child);
                }
            }
            // The supervisor's handle is gone, but this thread stays: the
            // workers it started get their parent-death signal when it
            // ends, not when the process does.
            loop {
                std::thread::park();
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(tid)) => Ok(Remote {
            tid,
            tx,
            rx,
            sock,
            seq: 0,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other("the spawner thread ended at start")),
    }
}

#[cfg(not(target_os = "linux"))]
fn start_remote() -> io::Result<Remote> {
    Err(io::Error::other("a private descriptor table needs Linux"))
}

impl Remote {
    fn spawn(&mut self, cmd: Command) -> io::Result<Spawned> {
        self.seq += 1;
        let seq = self.seq;
        let gone = || io::Error::other("the spawner thread is gone");
        self.tx.send((seq, cmd)).map_err(|_| gone())?;
        let (got, result) = self.rx.recv().map_err(|_| gone())?;
        // One request at a time: the reply is this request's.
        debug_assert_eq!(got, seq, "one spawn in flight at a time");
        let mut child = result?;
        match self.take_fds(seq) {
            Ok((io, stderr)) => Ok(Spawned {
                child,
                io: UnixStream::from(io),
                stderr: ChildStderr::from(stderr),
            }),
            Err(e) => {
                abandon(&mut child);
                Err(e)
            }
        }
    }

    /// The two descriptors the spawner sent for request `seq` (already
    /// queued: it answers only after sending them). A message left by an
    /// earlier request whose hand-over failed half-way is dropped (closed).
    fn take_fds(&self, seq: u64) -> io::Result<(OwnedFd, OwnedFd)> {
        loop {
            let (tag, fds) = crate::sys::recv_fds(self.sock.as_fd())?;
            if tag < seq {
                continue;
            }
            let mut fds = fds.into_iter();
            return match (tag == seq, fds.next(), fds.next(), fds.next()) {
                (true, Some(io), Some(stderr), None) => Ok((io, stderr)),
                _ => Err(io::Error::other(
                    "the spawner handed over the wrong descriptors",
                )),
            };
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Read;

    fn fds_of_task(tid: u32) -> Vec<u32> {
        let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/self/task/{tid}/fd"))
            .expect("the spawner's table is readable")
            .filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        fds
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn a_child_holds_only_its_stdio_and_the_spawner_keeps_nothing() {
        let mut spawner = Spawner::start();
        let tid = spawner.thread_id().expect("Linux has the spawner thread");
        let idle = fds_of_task(tid);
        assert_eq!(idle.len(), 4, "0, 1, 2 and the hand-over socket: {idle:?}");
        // Descriptors the calling thread holds meanwhile must not reach it.
        let held: Vec<_> = (0..50)
            .map(|_| UnixStream::pair().expect("pairs"))
            .collect();
        for _ in 0..3 {
            // `ls` lists its own table: 0, 1, 2 and the directory it reads.
            let mut s = spawner
                .spawn(sh("exec ls /proc/self/fd"))
                .expect("sh starts");
            let mut out = String::new();
            s.io.read_to_string(&mut out).expect("its stdout");
            let status = s.child.wait().expect("reaped");
            assert!(status.success());
            let listed: Vec<u32> = out
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            assert!(
                listed.len() <= 4 && listed.starts_with(&[0, 1, 2]),
                "the child's table: {listed:?}"
            );
            assert_eq!(fds_of_task(tid), idle, "the spawner kept a descriptor");
        }
        drop(held);
    }

    #[test]
    fn stdio_is_connected_both_ways_and_stderr_separately() {
        let mut spawner = Spawner::start();
        let mut s = spawner
            .spawn(sh("read line; echo \"got $line\"; echo oops >&2"))
            .expect("sh starts");
        std::io::Write::write_all(&mut s.io, b"hello\n").expect("its stdin");
        let mut out = String::new();
        s.io.read_to_string(&mut out).expect("its stdout");
        let mut err = String::new();
        s.stderr.read_to_string(&mut err).expect("its stderr");
        assert!(s.child.wait().expect("reaped").success());
        assert_eq!(out, "got hello\n");
        assert_eq!(err, "oops\n");
    }

    #[test]
    fn a_failed_spawn_leaves_no_descriptor_and_the_spawner_goes_on() {
        let mut spawner = Spawner::start();
        let tid = spawner.thread_id().expect("Linux has the spawner thread");
        let idle = fds_of_task(tid);
        let err = spawner
            .spawn(Command::new("/nonexistent/botfleet"))
            .expect_err("no such program");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert_eq!(fds_of_task(tid), idle);
        let mut s = spawner.spawn(sh("exit 0")).expect("the next spawn works");
        assert!(s.child.wait().expect("reaped").success());
    }

    #[test]
    fn a_failed_hand_over_kills_and_reaps_the_child() {
        let mut spawner = Spawner::start();
        let tid = spawner.thread_id().expect("Linux has the spawner thread");
        let idle = fds_of_task(tid);
        let dir = std::env::temp_dir().join(format!("botfleet-spawner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let pid_file = dir.join("pid");
        // Break the hand-over: our end of the pair refuses what comes.
        let remote = spawner.remote.as_ref().expect("a spawner thread");
        let ours = UnixStream::from(remote.sock.try_clone().expect("dup"));
        ours.shutdown(std::net::Shutdown::Both).expect("shutdown");
        let err = spawner
            .spawn(sh(&format!(
                "echo $$ > {}; exec sleep 30",
                pid_file.display()
            )))
            .expect_err("the hand-over fails");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        assert_eq!(fds_of_task(tid), idle, "the spawner kept a descriptor");
        // Every child the spawner thread started, a zombie too, is listed here.
        let children = std::fs::read_to_string(format!("/proc/self/task/{tid}/children"))
            .expect("the spawner's children are readable");
        assert!(children.trim().is_empty(), "left behind: {children}");
        // The child may have been killed before it wrote its pid; if it
        // wrote it, that process is gone and reaped (no zombie).
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let pid: u32 = pid.trim().parse().expect("a pid");
            assert!(!crate::sys::process_exists(pid), "child {pid} left behind");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_local_fallback_starts_the_same_way() {
        let mut spawner = Spawner::local();
        let mut s = spawner.spawn(sh("echo hi")).expect("sh starts");
        let mut out = String::new();
        s.io.read_to_string(&mut out).expect("its stdout");
        assert!(s.child.wait().expect("reaped").success());
        assert_eq!(out, "hi\n");
    }
}
