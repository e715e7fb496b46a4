//! Runs the operator's handler program (BOT_HANDLER) for one message:
//! without a shell, the update JSON on stdin, the documented environment
//! without any token, stdout captured (capped) as the reply, stderr logged
//! (capped), in its own process group so a timeout kills everything it
//! started, and with SIGKILL on the worker's death. It must never pass a
//! token or HEALTH_AUTH_TOKEN to the program, and never leave a process
//! behind.

use crate::sys;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The most of a handler's stdout that is kept (and sent).
pub const MAX_OUTPUT: usize = 64 * 1024;
/// The most of a handler's stderr that is logged.
const MAX_STDERR: usize = 4 * 1024;

/// Environment names a handler never gets.
pub const WITHHELD: &[&str] = &[
    "BOT_TOKEN",
    "TELEGRAM_BOT_TOKENS",
    "TELEGRAM_BOT_TOKEN",
    "HEALTH_AUTH_TOKEN",
    "BOTFLEET_PARENT_PID",
];

/// Who a handler runs as: when botfleet is root, HANDLER_USER's uid and
/// gid; a root handler without one drops every capability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    pub user: Option<(u32, u32)>,
    pub drop_capabilities: bool,
}

impl Confinement {
    /// For HANDLER_USER (a name or uid); only applied when we are root.
    pub fn for_user(handler_user: Option<&str>) -> Result<Confinement, std::io::Error> {
        if !sys::is_root() {
            return Ok(Confinement::default());
        }
        match handler_user {
            Some(u) => Ok(Confinement {
                user: Some(sys::lookup_user(u)?),
                drop_capabilities: false,
            }),
            None => Ok(Confinement {
                user: None,
                drop_capabilities: true,
            }),
        }
    }
}

/// Applies `c` to a handler command (before it is spawned).
pub fn confine(cmd: &mut Command, c: &Confinement) {
    if let Some((uid, gid)) = c.user {
        sys::run_as(cmd, uid, gid);
    } else if c.drop_capabilities {
        sys::drop_capabilities(cmd);
    }
}

/// Why a run did not produce a reply.
#[derive(Debug)]
pub enum HandlerError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// It ran longer than HANDLER_TIMEOUT_SECS and was killed.
    Timeout(Duration),
    /// It exited non-zero or was killed by a signal.
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Waiting for it failed.
    Wait(std::io::Error),
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Spawn(e) => write!(f, "cannot start the handler: {e}"),
            HandlerError::Timeout(d) => {
                write!(f, "the handler ran over {} s and was killed", d.as_secs())
            }
            HandlerError::Failed { code: Some(c), .. } => {
                write!(f, "the handler exited with code {c}")
            }
            HandlerError::Failed { signal, .. } => {
                write!(
                    f,
                    "the handler was killed by signal {}",
                    signal.unwrap_or(0)
                )
            }
            HandlerError::Wait(e) => write!(f, "cannot wait for the handler: {e}"),
        }
    }
}

impl std::error::Error for HandlerError {}

/// One run's input.
#[derive(Debug)]
pub struct Run<'a> {
    pub argv: &'a [String],
    /// Settings and the message's variables, set on top of our environment.
    pub env: &'a [(String, String)],
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    /// For log lines: `chat 42`.
    pub label: String,
    /// HANDLER_MAX_MEMORY_MB in bytes: the handler's address-space limit.
    pub max_memory: Option<u64>,
    /// The working directory (BOT_DATA_DIR); `None`: ours.
    pub dir: Option<&'a std::path::Path>,
    /// `env` is the whole environment (nothing of ours is inherited).
    pub clear_env: bool,
    pub confinement: Confinement,
}

/// Runs the handler; `on_wait` is called about every 4 s while it runs (the
/// caller sends "typing"). Returns its stdout (lossy UTF-8, capped).
pub fn run(run: Run<'_>, mut on_wait: impl FnMut()) -> Result<String, HandlerError> {
    let Some((program, args)) = run.argv.split_first() else {
        return Err(HandlerError::Spawn(std::io::Error::other(
            "BOT_HANDLER is empty",
        )));
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    if run.clear_env {
        cmd.env_clear();
    }
    if let Some(dir) = run.dir {
        cmd.current_dir(dir);
    }
    confine(&mut cmd, &run.confinement);
    for key in WITHHELD {
        cmd.env_remove(key);
    }
    for (k, v) in run.env {
        if !WITHHELD.contains(&k.as_str()) {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    sys::kill_child_with_parent(&mut cmd);
    if let Some(bytes) = run.max_memory {
        sys::limit_child_memory(&mut cmd, bytes);
    }
    let mut child = cmd.spawn().map_err(HandlerError::Spawn)?;
    let pgid = child.id();
    let (out_tx, out_rx) = mpsc::channel();
    if let Some(mut stdin) = child.stdin.take() {
        let input = run.stdin;
        spawn_io("handler-in", move || {
            // A handler that does not read its input is fine: EPIPE is ignored.
            if stdin.write_all(&input).is_err() {}
        });
    }
    if let Some(stdout) = child.stdout.take() {
        spawn_io("handler-out", move || {
            let text = read_capped(stdout, MAX_OUTPUT);
            if out_tx.send(text).is_err() {}
        });
    }
    if let Some(stderr) = child.stderr.take() {
        let label = run.label.clone();
        spawn_io("handler-err", move || {
            let text = read_capped(stderr, MAX_STDERR);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                log::info!("handler ({label}) stderr: {line}");
            }
        });
    }
    let started = Instant::now();
    let mut next_tick = started + Duration::from_secs(4);
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(HandlerError::Wait(e)),
        }
        let now = Instant::now();
        if now.duration_since(started) >= run.timeout {
            kill_group(pgid);
            if child.wait().is_err() {
                log::warn!("cannot reap the timed-out handler ({})", run.label);
            }
            break Err(HandlerError::Timeout(run.timeout));
        }
        if now >= next_tick {
            on_wait();
            next_tick = now + Duration::from_secs(4);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    // Whatever it started in its group goes with it.
    kill_group(pgid);
    let status = status?;
    // The pipes close when the group is gone; don't wait forever for a
    // grandchild that escaped the group and kept stdout open.
    let output = out_rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    if status.success() {
        Ok(output)
    } else {
        use std::os::unix::process::ExitStatusExt;
        Err(HandlerError::Failed {
            code: status.code(),
            signal: status.signal(),
        })
    }
}

fn kill_group(pgid: u32) {
    match sys::signal_group(pgid, sys::Signal::Kill) {
        Ok(()) => {}
        // ESRCH: the group is already empty, which is the common case.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => log::warn!("cannot kill handler group {pgid}: {e}"),
    }
}

fn spawn_io(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 * 1024)
        .spawn(f)
    {
        log::error!("cannot start a handler i/o thread: {e}");
    }
}

/// Reads up to `cap` bytes, then drains the rest so the writer never blocks.
fn read_capped(mut r: impl Read, cap: usize) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut dropped = 0usize;
    loop {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    if dropped > 0 {
        log::warn!("handler output over {cap} bytes: {dropped} bytes dropped");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Splits a reply into Telegram-sized messages (4096 characters), at a
/// line break where one is near the limit.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let mut parts = vec![];
    let mut rest: &str = text;
    while !rest.is_empty() {
        if rest.chars().count() <= limit {
            parts.push(rest.to_string());
            break;
        }
        let cut = rest
            .char_indices()
            .nth(limit)
            .map_or(rest.len(), |(i, _)| i);
        let head = &rest[..cut];
        let at = match head.rfind('\n') {
            Some(nl) if nl > cut / 2 => nl + 1,
            _ => cut,
        };
        parts.push(rest[..at].to_string());
        rest = &rest[at..];
    }
    parts.retain(|p| !p.trim().is_empty());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn run_sh(script: &str, timeout: Duration) -> Result<String, HandlerError> {
        run(
            Run {
                argv: &sh(script),
                env: &[
                    ("CHAT_ID".into(), "42".into()),
                    ("BOT_TOKEN".into(), "1:x".into()),
                ],
                stdin: b"{\"update_id\":1}".to_vec(),
                timeout,
                label: "test".into(),
                max_memory: None,
                dir: None,
                clear_env: false,
                confinement: Confinement::default(),
            },
            || {},
        )
    }

    #[test]
    fn passes_stdin_and_env_and_returns_stdout() {
        let out = run_sh(
            "cat; echo \" $CHAT_ID ${BOT_TOKEN:-none}\"",
            Duration::from_secs(10),
        )
        .expect("runs");
        assert_eq!(out, "{\"update_id\":1} 42 none\n");
    }

    #[test]
    fn non_zero_exit_and_timeout_are_errors_and_leave_nothing() {
        assert!(matches!(
            run_sh("exit 3", Duration::from_secs(10)),
            Err(HandlerError::Failed { code: Some(3), .. })
        ));
        let t0 = Instant::now();
        let r = run_sh("sleep 30 & sleep 30", Duration::from_millis(300));
        assert!(matches!(r, Err(HandlerError::Timeout(_))));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            run(
                Run {
                    argv: &["/nonexistent/handler".into()],
                    env: &[],
                    stdin: vec![],
                    timeout: Duration::from_secs(1),
                    label: "x".into(),
                    max_memory: None,
                    dir: None,
                    clear_env: false,
                    confinement: Confinement::default(),
                },
                || {}
            ),
            Err(HandlerError::Spawn(_))
        ));
    }

    #[test]
    fn runs_in_its_dir_with_only_the_given_environment_and_leaves_no_process() {
        let dir = std::env::temp_dir().join(format!("botfleet-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let out = run(
            Run {
                argv: &sh(
                    "pwd; echo \"${HOME:-nohome} $A\"; sleep 300 & echo $! > bg.pid; echo hi",
                ),
                env: &[
                    ("A".into(), "1".into()),
                    ("PATH".into(), "/usr/bin:/bin".into()),
                ],
                stdin: vec![],
                timeout: Duration::from_secs(10),
                label: "t".into(),
                max_memory: None,
                dir: Some(&dir),
                clear_env: true,
                confinement: Confinement::default(),
            },
            || {},
        )
        .expect("runs");
        let canon = dir.canonicalize().expect("canonical");
        assert_eq!(out, format!("{}\nnohome 1\nhi\n", canon.display()));
        // `sleep 300 &` went with its group (gone, or a zombie until its
        // new parent reaps it).
        let pid: u32 = std::fs::read_to_string(dir.join("bg.pid"))
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        let deadline = Instant::now() + Duration::from_secs(5);
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        };
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid), "the background sleep outlived the run");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn output_is_capped() {
        let out = run_sh(
            "head -c 200000 /dev/zero | tr '\\0' a",
            Duration::from_secs(10),
        )
        .expect("runs");
        assert_eq!(out.len(), MAX_OUTPUT);
    }

    #[test]
    fn long_replies_split_at_4096_characters() {
        let text = "é".repeat(5000);
        let parts = split_message(&text, 4096);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].chars().count(), 4096);
        assert_eq!(parts[1].chars().count(), 904);
        let lines = format!("{}\n{}", "a".repeat(3000), "b".repeat(3000));
        let parts = split_message(&lines, 4096);
        assert_eq!(parts[0], format!("{}\n", "a".repeat(3000)));
        assert!(split_message("  \n", 4096).is_empty());
    }
}
