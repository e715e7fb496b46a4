//! The commands that act on a fleet from outside: `run` (start the
//! supervisor under its lock), `check` (validate, and ask getMe), `stop` and
//! `reload` (signal the PID in the lock file). Each returns the exit code
//! DESIGN.md fixes. They must never print a token.

use crate::config::Config;
use crate::exit;
use crate::lock::{self, InstanceLock, LockError};
use crate::supervisor::Supervisor;
use crate::sys;
use crate::telegram::Client;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// A named --env-file that does not exist is an error of its own; the
/// default `.env` may be missing (settings then come from the environment).
pub fn env_file_exists(env_file: &Path) -> Result<(), i32> {
    if env_file != Path::new(".env") && !env_file.exists() {
        eprintln!(
            "botfleet: the env file {} does not exist (given with --env-file)",
            env_file.display()
        );
        return Err(exit::USAGE);
    }
    Ok(())
}

/// Loads the config for a command, printing the error once.
fn load(env_file: &Path) -> Result<Config, i32> {
    env_file_exists(env_file)?;
    Config::load(env_file, &process_env, true).map_err(|e| {
        eprintln!("botfleet: {e}");
        exit::USAGE
    })
}

/// `botfleet run`: the supervisor in the foreground.
pub fn run(env_file: &Path) -> i32 {
    let config = match load(env_file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    run_with(config, env_file)
}

/// Runs the supervisor for an already loaded config (also used by `demo`).
pub fn run_with(config: Config, env_file: &Path) -> i32 {
    // A write past the file size limit fails with EFBIG instead of killing us.
    if let Err(e) = crate::sys::ignore_file_size_signal() {
        log::warn!("cannot ignore SIGXFSZ: {e}");
    }
    // The lock comes before anything else that has effects.
    let instance = match InstanceLock::acquire(&config.settings.lock_file) {
        Ok(l) => l,
        Err(e @ LockError::Held { .. }) => {
            eprintln!("botfleet: {e}");
            return exit::LOCKED;
        }
        Err(e) => {
            eprintln!("botfleet: {e}");
            return exit::FAILURE;
        }
    };
    // Many bots from a shell with the common soft limit of 1,024 files:
    // raise it to the hard limit, and say so plainly if the fleet still
    // does not fit, instead of workers looping on EMFILE.
    if let Err(e) = crate::supervisor::fit_open_files(config.tokens.len()) {
        eprintln!("botfleet: {e}");
        if let Err(e) = instance.release() {
            eprintln!("botfleet: cannot remove the lock file: {e}");
        }
        return exit::FAILURE;
    }
    crate::logging::init(None, &config.settings.rust_log);
    crate::logging::configure(&config.settings);
    for w in &config.warnings {
        log::warn!("{w}");
    }
    if let Some(w) = crate::supervisor::check_tasks(config.tokens.len()) {
        log::warn!("{w}");
    }
    let code = match Supervisor::new(config, env_file.to_path_buf()) {
        Ok(sup) => sup.run(),
        Err(e) => {
            log::error!("cannot start: {e}");
            exit::FAILURE
        }
    };
    // The workers' last lines, still in their pipes.
    crate::logging::drain(std::time::Duration::from_secs(1));
    if let Err(e) = instance.release() {
        log::warn!("cannot remove the lock file: {e}");
    }
    code
}

/// `botfleet check`: validate, and without `offline` call getMe per token.
pub fn check(env_file: &Path, offline: bool) -> i32 {
    let config = match load(env_file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let problems = check_environment(&config.settings);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("botfleet: {p}");
        }
        return exit::USAGE;
    }
    let registry = crate::state::Registry::load(&config.settings.state_dir).unwrap_or_default();
    println!(
        "config {} ok: {} token(s), {} setting(s), API {}",
        config.version(),
        config.tokens.len(),
        config.setting_count(),
        config.settings.api_url
    );
    if offline {
        return exit::OK;
    }
    println!("{:<6} {:<14} {:<34} result", "index", "bot id", "username");
    let mut failed = 0;
    for (position, token) in config.tokens.iter().enumerate() {
        let index = registry
            .get(token.bot_id())
            .map_or_else(|| format!("#{position}"), |i| i.to_string());
        let client = Client::new(&config.settings.api_url, token.clone(), 10);
        match client.get_me() {
            Ok(me) => println!(
                "{:<6} {:<14} {:<34} ok",
                index,
                token.bot_id(),
                format!("@{}", me.username)
            ),
            Err(e) => {
                failed += 1;
                println!("{:<6} {:<14} {:<34} error: {e}", index, token.bot_id(), "-");
            }
        }
    }
    if failed > 0 {
        eprintln!("botfleet: {failed} token(s) failed");
        exit::FAILURE
    } else {
        exit::OK
    }
}

/// What `check` verifies beyond the file's syntax: that BOT_HANDLER can be
/// started and that STATE_DIR and MEDIA_TMP_LOCATION can be written.
/// Returns one line per problem, each with its fix.
pub fn check_environment(settings: &crate::config::Settings) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(program) = settings.handler.as_ref().and_then(|argv| argv.first()) {
        if let Err(e) = check_handler(program) {
            problems.push(format!("BOT_HANDLER: {e}"));
        }
    }
    for (key, dir) in [
        ("STATE_DIR", &settings.state_dir),
        ("MEDIA_TMP_LOCATION", &settings.media_dir),
    ] {
        if let Err(e) = check_writable(dir) {
            problems.push(format!("{key}: {} is not writable: {e}", dir.display()));
        }
    }
    problems
}

/// Whether `program` (BOT_HANDLER's first word) can be started as is.
fn check_handler(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if program.starts_with("builtin:") {
        return Ok(());
    }
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        });
        match found {
            Some(p) => p,
            None => {
                return Err(format!(
                    "{program} is not found on PATH (give its path, e.g. ./{program})"
                ))
            }
        }
    };
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("{} cannot be used: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let interpreter_hint = format!(
        "or name its interpreter first, e.g. BOT_HANDLER=python3 {}",
        path.display()
    );
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "{} is not executable: chmod +x {}, {interpreter_hint}",
            path.display(),
            path.display()
        ));
    }
    let mut head = [0u8; 256];
    let n = std::fs::File::open(&path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return Err(format!(
            "{} is neither a program nor a script with a #! line: add one (e.g. #!/usr/bin/env python3), {interpreter_hint}",
            path.display()
        ));
    };
    let line = String::from_utf8_lossy(line);
    let interpreter = line.lines().next().unwrap_or("").split_whitespace().next();
    match interpreter {
        Some(i) if Path::new(i).is_file() => Ok(()),
        Some(i) => Err(format!(
            "{}: its #! interpreter {i} does not exist here",
            path.display()
        )),
        None => Err(format!(
            "{}: its #! line names no interpreter",
            path.display()
        )),
    }
}

/// Whether files can be created in `dir` (or, if it does not exist yet, in
/// the nearest existing directory above it, where it would be created).
fn check_writable(dir: &Path) -> Result<(), String> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    if !at.is_dir() {
        return Err(format!("{} is not a directory", at.display()));
    }
    let probe = at.join(format!(".botfleet-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| e.to_string())?;
    if let Err(e) = std::fs::remove_file(&probe) {
        return Err(format!("cannot remove {}: {e}", probe.display()));
    }
    Ok(())
}

/// The lock file named by the config. A broken config must not keep
/// `stop` or `reload` from finding the running supervisor, so this falls back
/// to the file's LOCK_FILE line, then the environment, then the default.
pub fn lock_path(env_file: &Path) -> (PathBuf, Option<String>) {
    match Config::load(env_file, &process_env, true) {
        Ok(c) => (c.settings.lock_file.clone(), None),
        Err(e) => {
            let text = std::fs::read(env_file).ok();
            let from_file = text
                .as_deref()
                .map(String::from_utf8_lossy)
                .and_then(|text| {
                    text.lines().rev().find_map(|l| {
                        let l = l.trim().trim_start_matches("export ").trim();
                        let v = l
                            .strip_prefix("LOCK_FILE")?
                            .trim_start()
                            .strip_prefix('=')?;
                        let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                        (!v.is_empty()).then(|| PathBuf::from(v))
                    })
                });
            let path = from_file
                .or_else(|| process_env("LOCK_FILE").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("bot.lock"));
            (path, Some(e.to_string()))
        }
    }
}

fn running_pid(env_file: &Path) -> Result<(u32, PathBuf, Option<String>), i32> {
    env_file_exists(env_file)?;
    let (path, problem) = lock_path(env_file);
    match lock::read_pid(&path) {
        Some(pid) if lock::is_held(&path) && sys::process_exists(pid) => Ok((pid, path, problem)),
        _ => {
            eprintln!(
                "botfleet is not running (no live lock at {})",
                path.display()
            );
            Err(exit::FAILURE)
        }
    }
}

/// `botfleet stop`: SIGTERM to the supervisor, then wait for its lock.
pub fn stop(env_file: &Path, timeout: Duration) -> i32 {
    let (pid, path, _) = match running_pid(env_file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(e) = sys::signal_pid(pid, sys::Signal::Term) {
        eprintln!("botfleet: cannot signal PID {pid}: {e}");
        return exit::FAILURE;
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !lock::is_held(&path) {
            println!("botfleet (PID {pid}) stopped");
            return exit::OK;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "botfleet (PID {pid}) is still running after {} s",
        timeout.as_secs()
    );
    exit::TIMEOUT
}

/// `botfleet reload`: SIGHUP to the supervisor.
pub fn reload(env_file: &Path) -> i32 {
    let (pid, _, problem) = match running_pid(env_file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(problem) = problem {
        eprintln!(
            "warning: {problem}\nthe running botfleet will reject this file and keep its config"
        );
    }
    match sys::signal_pid(pid, sys::Signal::Hup) {
        Ok(()) => {
            println!("asked botfleet (PID {pid}) to reload its configuration");
            exit::OK
        }
        Err(e) => {
            eprintln!("botfleet: cannot signal PID {pid}: {e}");
            exit::FAILURE
        }
    }
}
