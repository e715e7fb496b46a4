//! The process exit codes DESIGN.md's command table fixes, in one place
//! below `cli` so that every command module (control, status, demo) can
//! return them without importing the command line. It holds constants
//! only and must never depend on another module.

/// Success.
pub const OK: i32 = 0;
/// A runtime failure (or, for `status`/`health`/`stop`: nothing answers).
pub const FAILURE: i32 = 1;
/// Bad config or bad usage.
pub const USAGE: i32 = 2;
/// Another instance holds the lock.
pub const LOCKED: i32 = 3;
/// Still running at the timeout (`stop`).
pub const TIMEOUT: i32 = 4;
