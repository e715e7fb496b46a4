//! The configuration's error type. Every message names where the bad value
//! came from (`.env:7:` or `environment:`) and the key, and never carries the
//! value of a secret key: the messages are built by the parsers from
//! `describe_value`, which shows secret values as "the value".

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a value came from, for the prefix of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A line of the settings file (`source` is its name in messages, e.g.
    /// `.env`); `line` is 1-based, `None` when the line is not known.
    File { source: String, line: Option<usize> },
    /// The process environment of the supervisor or the worker.
    Environment,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File {
                source,
                line: Some(line),
            } => write!(f, "{source}:{line}"),
            Location::File { source, line: None } => write!(f, "{source}"),
            Location::Environment => write!(f, "environment"),
        }
    }
}

/// One invalid value: `<location>: <KEY>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the value came from.
    pub location: Location,
    /// The setting's name.
    pub key: String,
    /// What is wrong, lowercase, without a trailing period and without the
    /// value when the key is secret.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.key, self.message)
    }
}

/// Why a configuration could not be loaded. A rejected reload keeps the
/// running configuration; the caller logs this error (every line of it).
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be opened or read (missing on a reload, no
    /// permission, an I/O error).
    Read { path: PathBuf, source: io::Error },
    /// The path names a directory or another thing that is not a regular file.
    NotAFile { path: PathBuf },
    /// The file is larger than the cap; settings files are small, so this is
    /// a wrong path (a log, an image) rather than a real configuration.
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// The file is not text: it holds a NUL byte or is not valid UTF-8.
    NotText {
        source: String,
        line: usize,
        reason: &'static str,
    },
    /// dotenvy could not parse a line (an unterminated quote, a bad escape,
    /// a key with a space). The line's text is never shown: it may hold a
    /// secret.
    Syntax {
        source: String,
        line: Option<usize>,
        key: Option<String>,
        hint: &'static str,
    },
    /// One or more values are invalid; all of them are listed.
    Invalid(Vec<Problem>),
    /// No bot token is set at all.
    NoToken { source: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(
                    f,
                    "{}: cannot read the settings file: {source}",
                    path.display()
                )
            }
            ConfigError::NotAFile { path } => {
                write!(f, "{}: is not a regular file", path.display())
            }
            ConfigError::TooLarge { path, size, limit } => write!(
                f,
                "{}: the settings file is {size} bytes, more than the {limit} bytes allowed \
                 (is this the right file?)",
                path.display()
            ),
            ConfigError::NotText {
                source,
                line,
                reason,
            } => write!(f, "{source}:{line}: {reason}: this is not a text file"),
            ConfigError::Syntax {
                source,
                line,
                key,
                hint,
            } => {
                match line {
                    Some(line) => write!(f, "{source}:{line}: ")?,
                    None => write!(f, "{source}: ")?,
                }
                if let Some(key) = key {
                    write!(f, "{key}: ")?;
                }
                write!(f, "cannot parse this line ({hint})")
            }
            ConfigError::Invalid(problems) => {
                for (i, problem) in problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{problem}")?;
                }
                Ok(())
            }
            ConfigError::NoToken { source } => write!(
                f,
                "no bot token: set TELEGRAM_BOT_TOKENS in {source} (see .env.example)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ConfigError {
    /// The invalid values, when this error is a list of them.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}
