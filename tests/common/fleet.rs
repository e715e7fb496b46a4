//! Runs the real `botfleet run` in a temp dir against a sandbox, captures
//! its one log stream, finds its workers through /proc, and kills whatever
//! is left when the test ends (or hangs).

use super::{bin, temp_dir, wait_until, SandboxProc, TempDir};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port on loopback")
}

/// Every pid in /proc.
fn proc_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of the live, non-zombie children of `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut out: Vec<u32> = proc_pids()
        .into_iter()
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name, which is in parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[1] == parent.to_string()
        })
        .collect();
    out.sort_unstable();
    out
}

/// Whether a process is alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Pids of every `botfleet worker` process whose command line names this
/// test's state dir (`worker --state-dir D`; a worker's environment is not
/// readable): they are ours even once their parent is gone.
pub fn workers_with_state_dir(state_dir: &std::path::Path) -> Vec<u32> {
    let needle = state_dir.display().to_string();
    proc_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                alive(*pid)
                    && args.get(1) == Some(&b"worker".as_slice())
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"--state-dir" && w[1] == needle.as_bytes())
            })
        })
        .collect()
}

pub fn kill(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("kill(1) runs");
    let _ = status; // the process may already be gone; that is fine here
}

/// A botfleet supervisor under test.
pub struct Fleet {
    pub dir: TempDir,
    pub env_file: PathBuf,
    pub child: Option<Child>,
    pub pid: u32,
    log: Arc<Mutex<String>>,
    /// Set when the log stream reached its end (every writer closed it).
    log_done: Arc<std::sync::atomic::AtomicBool>,
    pub status: Option<ExitStatus>,
}

/// The settings every test fleet starts with; `extra` overrides them.
pub fn base_env(sandbox: &SandboxProc, dir: &TempDir, tokens: &[String]) -> Vec<(String, String)> {
    let d = dir.path.display();
    vec![
        ("TELEGRAM_BOT_TOKENS".into(), tokens.join(",")),
        ("TELEGRAM_API_URL".into(), sandbox.url().to_string()),
        ("MEDIA_TMP_LOCATION".into(), format!("{d}/media")),
        ("STATE_DIR".into(), format!("{d}/state")),
        ("LOCK_FILE".into(), format!("{d}/bot.lock")),
        ("PORT".into(), free_port().to_string()),
        ("POLL_TIMEOUT_SECS".into(), "2".into()),
        ("RESTART_DELAY".into(), "100".into()),
        ("RESTART_MAX_DELAY".into(), "1000".into()),
        ("SHUTDOWN_TIMEOUT".into(), "3000".into()),
        ("BOT_TOKEN_MONITOR_INTERVAL".into(), "200".into()),
        ("CONFIG_RELOAD_DEBOUNCE".into(), "300".into()),
        ("SEND_RATE_PER_CHAT".into(), "0".into()),
        ("SEND_RATE_PER_BOT".into(), "0".into()),
        ("RUST_LOG".into(), "info".into()),
    ]
}

pub fn render_env(vars: &[(String, String)]) -> String {
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// `extra` overrides the base settings (an empty value removes the key).
pub fn merged_env(
    sandbox: &SandboxProc,
    dir: &TempDir,
    tokens: &[String],
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut vars = base_env(sandbox, dir, tokens);
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        if !v.is_empty() {
            vars.push((k.to_string(), v.to_string()));
        }
    }
    vars
}

impl Fleet {
    /// Writes `.env` and starts `botfleet run`; does not wait for readiness.
    pub fn start(sandbox: &SandboxProc, tokens: &[String], extra: &[(&str, &str)]) -> Fleet {
        let dir = temp_dir();
        let vars = merged_env(sandbox, &dir, tokens, extra);
        let env_file = dir.join(".env");
        std::fs::write(&env_file, render_env(&vars)).expect("write .env");
        Fleet::start_in(dir, env_file)
    }

    /// Starts `cmd` (a `botfleet run`, perhaps behind a wrapper) in `dir`
    /// in its own process group, with none of the test process's own
    /// tokens or systemd variables, and captures its log stream.
    fn spawn(
        mut cmd: Command,
        dir: TempDir,
        env_file: PathBuf,
        process_env: &[(&str, &str)],
    ) -> Fleet {
        let mut child = cmd
            .current_dir(&dir.path)
            .env_remove("TELEGRAM_BOT_TOKENS")
            .env_remove("TELEGRAM_BOT_TOKEN")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .envs(process_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("botfleet run starts");
        let pid = child.id();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr was piped");
        let sink = Arc::clone(&log);
        let log_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&log_done);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("BOTFLEET_TEST_ECHO").is_some() {
                    eprintln!("{line}");
                }
                let mut l = sink.lock().expect("log buffer");
                l.push_str(&line);
                l.push('\n');
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Fleet {
            dir,
            env_file,
            child: Some(child),
            pid,
            log,
            log_done,
            status: None,
        }
    }

    /// Like `start`, with another `botfleet` executable (a cross-built one
    /// that the kernel runs through binfmt_misc, say).
    pub fn start_with_binary(
        sandbox: &SandboxProc,
        tokens: &[String],
        extra: &[(&str, &str)],
        binary: &std::path::Path,
    ) -> Fleet {
        let dir = temp_dir();
        let vars = merged_env(sandbox, &dir, tokens, extra);
        let env_file = dir.join(".env");
        std::fs::write(&env_file, render_env(&vars)).expect("write .env");
        let mut cmd = Command::new(binary);
        cmd.args(["run", "--env-file"]).arg(&env_file);
        Fleet::spawn(cmd, dir, env_file, &[])
    }

    pub fn start_in(dir: TempDir, env_file: PathBuf) -> Fleet {
        Fleet::start_in_with_env(dir, env_file, &[])
    }

    /// Like `start` with extra process environment (NOTIFY_SOCKET, ...).
    pub fn start_with_process_env(
        sandbox: &SandboxProc,
        tokens: &[String],
        extra: &[(&str, &str)],
        process_env: &[(&str, &str)],
    ) -> Fleet {
        let dir = temp_dir();
        let vars = merged_env(sandbox, &dir, tokens, extra);
        let env_file = dir.join(".env");
        std::fs::write(&env_file, render_env(&vars)).expect("write .env");
        Fleet::start_in_with_env(dir, env_file, process_env)
    }

    /// `start_in` with extra process environment.
    pub fn start_in_with_env(
        dir: TempDir,
        env_file: PathBuf,
        process_env: &[(&str, &str)],
    ) -> Fleet {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--env-file"]).arg(&env_file);
        Fleet::spawn(cmd, dir, env_file, process_env)
    }

    pub fn logs(&self) -> String {
        self.log.lock().expect("log buffer").clone()
    }

    pub fn count_in_logs(&self, needle: &str) -> usize {
        self.logs().matches(needle).count()
    }

    /// Waits for a line containing `needle`; on timeout the panic shows the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "timed out after {timeout:?} waiting for log line {needle:?}; log:\n{}",
            self.logs()
        );
    }

    /// The health server's base URL (`http://127.0.0.1:N`), from the
    /// `Health server listening on` log line; waits for it.
    pub fn health_base(&self) -> String {
        let needle = "Health server listening on ";
        self.wait_log(needle, Duration::from_secs(15));
        let logs = self.logs();
        let line = logs
            .lines()
            .rfind(|l| l.contains(needle))
            .expect("the line was just seen");
        let at = line.find(needle).expect("the line contains the needle") + needle.len();
        line[at..].trim().to_string()
    }

    pub fn wait_ready(&self, n: usize) {
        self.wait_log(&format!("All {n} workers ready"), Duration::from_secs(30));
    }

    pub fn workers(&self) -> Vec<u32> {
        children_of(self.pid)
    }

    pub fn signal(&self, sig: &str) {
        kill(self.pid, sig);
    }

    /// Waits for the supervisor to exit; None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                self.status = Some(s);
                // Let the reader take the last lines (workers that are
                // still alive hold the pipe open, so this is bounded).
                let until = Instant::now() + Duration::from_secs(2);
                while !self.log_done.load(std::sync::atomic::Ordering::SeqCst)
                    && Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Waits until the sandbox saw every message id in `ids` answered
    /// (`SandboxProc::answered`: quoted, or an echo of its text).
    pub fn wait_replies(&self, sandbox: &SandboxProc, bot_id: u64, ids: &[i64], timeout: Duration) {
        wait_until(timeout, "replies to every message", || {
            let answered: std::collections::HashSet<i64> = sandbox
                .sent(bot_id)
                .iter()
                .filter_map(|m| sandbox.answered(bot_id, m))
                .collect();
            ids.iter().all(|id| answered.contains(id))
        });
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- botfleet log (pid {}) ---\n{}--- end of log ---",
                self.pid,
                self.logs()
            );
        }
        let state_dir = self.state_dir();
        for w in children_of(self.pid) {
            kill(w, "KILL");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // already gone is fine
            let _ = child.wait(); // reap it so no zombie outlives the test
        }
        for w in workers_with_state_dir(&state_dir) {
            kill(w, "KILL");
        }
    }
}

impl Fleet {
    /// After the supervisor died (SIGKILL), starts a new `botfleet run` on
    /// the same `.env` and directory, as an operator or systemd would. The
    /// log starts afresh, so `wait_ready` waits for the new supervisor.
    pub fn respawn(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = std::mem::replace(
            &mut self.dir,
            TempDir {
                path: PathBuf::new(),
            },
        );
        let new = Fleet::start_in(dir, self.env_file.clone());
        // The old self now has no dir and no child: dropping it does nothing.
        drop(std::mem::replace(self, new));
    }
}

/// The `BOT_INDEX` of a worker process, from /proc/PID/environ.
pub fn bot_index_of(pid: u32) -> Option<u32> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"BOT_INDEX="))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// (VmRSS in kB, open file descriptors) of a process.
pub fn rss_and_fds(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

impl Fleet {
    /// Like `start`, but `botfleet run` runs under `sh -c 'ulimit ...; exec
    /// botfleet run ...'` (e.g. `-f 200` for a file size limit, `-n 20` for
    /// few file descriptors); the limit holds for the supervisor and every
    /// worker it starts. The pid is botfleet's (sh execs it).
    pub fn start_with_ulimit(
        sandbox: &SandboxProc,
        tokens: &[String],
        extra: &[(&str, &str)],
        ulimit: &str,
    ) -> Fleet {
        let dir = temp_dir();
        let vars = merged_env(sandbox, &dir, tokens, extra);
        let env_file = dir.join(".env");
        std::fs::write(&env_file, render_env(&vars)).expect("write .env");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit {ulimit} && exec \"$0\" run --env-file \"$1\""
            ))
            .arg(bin())
            .arg(&env_file);
        Fleet::spawn(cmd, dir, env_file, &[])
    }
}

impl Fleet {
    /// Like `start`, but `botfleet run` runs as the last arguments of
    /// `wrapper` (e.g. `unshare --pid --fork --mount-proc`). The pid is the
    /// wrapper's; botfleet is its child.
    pub fn start_under(
        sandbox: &SandboxProc,
        tokens: &[String],
        extra: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Fleet {
        let dir = temp_dir();
        let vars = merged_env(sandbox, &dir, tokens, extra);
        let env_file = dir.join(".env");
        std::fs::write(&env_file, render_env(&vars)).expect("write .env");
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(bin())
            .args(["run", "--env-file"])
            .arg(&env_file);
        Fleet::spawn(cmd, dir, env_file, &[])
    }
}
