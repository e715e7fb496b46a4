//! Placeholder: the sandbox Bot API (docs/sandbox.md) is filled in by its own change.

use std::net::IpAddr;

/// What `botfleet sandbox` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxOptions {
    pub bind: IpAddr,
    pub port: u16,
    pub demo_bots: u32,
    pub flood_limits: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            demo_bots: 0,
            flood_limits: false,
        }
    }
}

/// Why the sandbox could not serve.
#[derive(Debug)]
pub enum SandboxError {
    /// The address could not be bound.
    Bind(String),
}

impl std::fmt::Display for SandboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxError::Bind(e) => write!(f, "cannot bind: {e}"),
        }
    }
}

impl std::error::Error for SandboxError {}

/// Serves until SIGINT/SIGTERM.
pub fn serve_forever(_opts: SandboxOptions) -> Result<(), SandboxError> {
    Err(SandboxError::Bind("not implemented yet".into()))
}
