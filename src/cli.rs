//! The command line: parses arguments with lexopt into one `Command`, runs
//! it, prints an error once, and maps the outcome to the exit codes DESIGN.md
//! fixes (0 ok, 1 runtime failure, 2 bad config or usage, 3 another instance,
//! 4 still running at timeout). It owns no behaviour of its own: each command
//! lives in its module. It must never print a token.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::exit;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP: &str = "\
botfleet: a fleet of Telegram bots on one small host

Usage: botfleet <command> [options]

Commands:
  run      [--env-file F]                 run the supervisor in the foreground
  check    [--env-file F] [--offline]     validate the config (and call getMe)
  status   [--env-file F] [--json|--watch] show the running fleet (--watch: live)
  health   [--env-file F] [--url U | --port N] [--ready]
                                          one line; exit 0 live (or ready), 1 not
  stop     [--env-file F] [--timeout S]   stop the running supervisor
  reload   [--env-file F]                 make the running supervisor reload .env
  sandbox  [--port N] [--bind A] [--demo-bots N] [--flood-limits]
                                          a local Bot API emulator
  demo                                    the sandbox plus three demo bots
  help     [command]                      this text, or one command's

Options:
  -h, --help       this text (also `botfleet <command> --help`, `botfleet help <command>`)
  -V, --version    the version

Settings come from .env (see .env.example); exit codes: 0 ok, 1 failure,
2 bad config or usage, 3 another instance holds the lock, 4 timeout.
";

/// One parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run {
        env_file: PathBuf,
    },
    Check {
        env_file: PathBuf,
        offline: bool,
    },
    Status {
        env_file: PathBuf,
        json: bool,
        watch: bool,
    },
    Health {
        env_file: PathBuf,
        url: Option<String>,
        port: Option<u16>,
        probe: crate::status::Probe,
    },
    Stop {
        env_file: PathBuf,
        timeout_secs: u64,
    },
    Reload {
        env_file: PathBuf,
    },
    Sandbox(crate::sandbox::SandboxOptions),
    Demo,
    /// The hidden subcommand the supervisor starts each worker with.
    Worker,
    Help(&'static str),
    Version,
}

/// A command line that does not parse.
#[derive(Debug)]
pub struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

fn command_help(name: &str) -> &'static str {
    match name {
        "run" => "Usage: botfleet run [--env-file F]\n\nRuns the supervisor in the foreground: one worker per token in F (default .env).\nExit: 0 clean stop, 1 runtime failure, 2 bad config, 3 another instance holds the lock.\n",
        "check" => "Usage: botfleet check [--env-file F] [--offline]\n\nValidates the config; without --offline calls getMe for every token and prints\nindex, bot id, @username, ok/error. Exit: 0 all good, 1 a token failed, 2 bad config.\n",
        "status" => "Usage: botfleet status [--env-file F] [--json | --watch]\n\nAsks the running supervisor's health endpoint and prints the fleet.\n--watch redraws it every second (q or Ctrl-C quits).\nExit: 0, or 1 when nothing answers.\n",
        "health" => "Usage: botfleet health [--env-file F] [--url U | --port N] [--live | --ready]\n\nPrints one line: healthy, degraded (a bot is failed: a rejected token, a crash\nloop), unhealthy (a bot should poll and does not, or the supervisor is stuck).\nFinds the fleet as `stop` does: the port it recorded beside LOCK_FILE from F\n(default .env), then PORT..PORT+2; --url (the full /health URL) or --port override.\n--live (default, for liveness probes and Docker HEALTHCHECK): exit 0 unless\nunhealthy. --ready (readiness): exit 0 only when every bot is ready and polling.\nHTTP probes: GET /health/live and /health/ready (200 or 503).\n",
        "stop" => "Usage: botfleet stop [--env-file F] [--timeout S]\n\nSends SIGTERM to the supervisor in the lock file and waits for the lock.\nExit: 0 stopped, 1 not running, 4 still running at timeout.\n",
        "reload" => "Usage: botfleet reload [--env-file F]\n\nSends SIGHUP to the supervisor in the lock file. Exit: 0 sent, 1 not running.\n",
        "sandbox" => "Usage: botfleet sandbox [--port N] [--bind ADDR] [--demo-bots N] [--flood-limits]\n\nA local Bot API emulator (see docs/sandbox.md). --port 0 (default) picks a\nfree port; the first line printed is `sandbox listening on URL`.\n",
        "demo" => "Usage: botfleet demo\n\nStarts the sandbox and a fleet of three demo bots with simulated users.\n",
        _ => HELP,
    }
}

/// Parses `args` (without the program name).
pub fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let name = match parser.next()? {
        None => return Ok(Command::Help(HELP)),
        Some(Short('h') | Long("help")) => return Ok(Command::Help(HELP)),
        Some(Short('V') | Long("version")) => return Ok(Command::Version),
        Some(Value(v)) => v.string()?,
        Some(other) => return Err(other.unexpected().into()),
    };
    if name == "help" {
        return match parser.next()? {
            None => Ok(Command::Help(HELP)),
            Some(Value(v)) => {
                let cmd = v.string()?;
                match command_help(&cmd) {
                    text if text == HELP && cmd != "help" => Err(UsageError(format!(
                        "unknown command '{cmd}'; see `botfleet help`"
                    ))),
                    text => Ok(Command::Help(text)),
                }
            }
            Some(other) => Err(other.unexpected().into()),
        };
    }
    let mut env_file = PathBuf::from(".env");
    let mut offline = false;
    let mut json = false;
    let mut watch = false;
    let mut url = None;
    let mut port: Option<u16> = None;
    let mut timeout_secs = 30;
    let mut probe = crate::status::Probe::Live;
    let mut sandbox = crate::sandbox::SandboxOptions::default();
    let known = [
        "run", "check", "status", "health", "stop", "reload", "sandbox", "demo", "worker",
    ];
    if !known.contains(&name.as_str()) {
        return Err(UsageError(format!(
            "unknown command '{name}'; see `botfleet --help`"
        )));
    }
    while let Some(arg) = parser.next()? {
        match (name.as_str(), arg) {
            (_, Short('h') | Long("help")) => return Ok(Command::Help(command_help(&name))),
            ("run" | "check" | "status" | "health" | "stop" | "reload", Long("env-file")) => {
                env_file = parser.value()?.into();
            }
            ("check", Long("offline")) => offline = true,
            ("status", Long("json")) => json = true,
            ("status", Long("watch")) => watch = true,
            ("health", Long("url")) => url = Some(parser.value()?.string()?),
            ("health", Long("port")) => port = Some(parser.value()?.parse()?),
            ("health", Long("ready")) => probe = crate::status::Probe::Ready,
            ("health", Long("live")) => probe = crate::status::Probe::Live,
            ("stop", Long("timeout")) => timeout_secs = parser.value()?.parse()?,
            ("sandbox", Long("port")) => sandbox.port = parser.value()?.parse()?,
            ("sandbox", Long("bind")) => sandbox.bind = parser.value()?.parse()?,
            ("sandbox", Long("demo-bots")) => sandbox.demo_bots = parser.value()?.parse()?,
            ("sandbox", Long("flood-limits")) => sandbox.flood_limits = true,
            // A label for ps and tests (the worker's environment is not
            // readable): which fleet a worker belongs to. Not used inside.
            ("worker", Long("state-dir")) => drop(parser.value()?),
            (_, arg) => return Err(arg.unexpected().into()),
        }
    }
    if url.is_some() && port.is_some() {
        return Err(UsageError("give --url or --port, not both".into()));
    }
    Ok(match name.as_str() {
        "run" => Command::Run { env_file },
        "check" => Command::Check { env_file, offline },
        "status" => Command::Status {
            env_file,
            json,
            watch,
        },
        "health" => Command::Health {
            env_file,
            url,
            port,
            probe,
        },
        "stop" => Command::Stop {
            env_file,
            timeout_secs,
        },
        "reload" => Command::Reload { env_file },
        "sandbox" => Command::Sandbox(sandbox),
        "demo" => Command::Demo,
        _ => Command::Worker,
    })
}

/// Runs the program and returns its exit code.
pub fn main() -> i32 {
    match run_command() {
        Ran::Exit(code) => code,
        // Here, not inside `run_command`: its frame (every other command's
        // locals) is gone before the worker's poll loop, which holds its
        // stack for the worker's life, a thousand workers at once.
        Ran::Worker => crate::worker::main(),
    }
}

/// What `run_command` did: a command ran to its exit code, or this is a
/// worker, to be run by the caller.
enum Ran {
    Exit(i32),
    Worker,
}

/// Parses the command line and runs every command but `worker`.
#[inline(never)]
fn run_command() -> Ran {
    let command = match parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("botfleet: {e}");
            return Ran::Exit(exit::USAGE);
        }
    };
    Ran::Exit(match command {
        Command::Help(text) => {
            print!("{text}");
            exit::OK
        }
        Command::Version => {
            println!("botfleet {VERSION}");
            exit::OK
        }
        Command::Sandbox(opts) => match crate::sandbox::serve_forever(opts) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("botfleet sandbox: {e}");
                exit::FAILURE
            }
        },
        Command::Run { env_file } => crate::control::run(&env_file),
        Command::Check { env_file, offline } => crate::control::check(&env_file, offline),
        Command::Status {
            env_file,
            json,
            watch,
        } => crate::status::status(&env_file, json, watch),
        Command::Health {
            env_file,
            url,
            port,
            probe,
        } => crate::status::health(&env_file, url.as_deref(), port, probe),
        Command::Stop {
            env_file,
            timeout_secs,
        } => crate::control::stop(&env_file, std::time::Duration::from_secs(timeout_secs)),
        Command::Reload { env_file } => crate::control::reload(&env_file),
        Command::Demo => crate::demo::run(std::path::Path::new("target/demo")),
        Command::Worker => return Ran::Worker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_options() {
        assert_eq!(
            parse(["run", "--env-file", "x.env"]).expect("valid"),
            Command::Run {
                env_file: "x.env".into()
            }
        );
        assert_eq!(
            parse(["check", "--offline"]).expect("valid"),
            Command::Check {
                env_file: ".env".into(),
                offline: true
            }
        );
        assert_eq!(
            parse(["stop", "--timeout", "5"]).expect("valid"),
            Command::Stop {
                env_file: ".env".into(),
                timeout_secs: 5
            }
        );
        assert!(parse(["run", "--bogus"]).is_err());
        assert!(parse(["frobnicate"]).is_err());
        assert!(parse(["health", "--url", "u", "--port", "1"]).is_err());
        assert_eq!(parse(["--version"]).expect("valid"), Command::Version);
        assert_eq!(parse(["help"]).expect("valid"), Command::Help(HELP));
        assert_eq!(
            parse(["help", "stop"]).expect("valid"),
            Command::Help(command_help("stop"))
        );
        assert!(parse(["help", "frobnicate"]).is_err());
        assert!(matches!(
            parse(["health", "--ready", "--env-file", "x.env"]).expect("valid"),
            Command::Health {
                probe: crate::status::Probe::Ready,
                ..
            }
        ));
    }
}
