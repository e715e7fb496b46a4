//! Turns Unix signals into values on a channel: a signal-hook iterator on a
//! thread of its own calls back with each signal that arrives. Only this
//! module installs signal handlers (ctrlc is deliberately not used: two
//! libraries handling the same signals in one process fight). It must never
//! do work inside a handler; the callback runs on an ordinary thread.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io;

/// The signals botfleet reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// SIGINT or SIGTERM: stop.
    Stop(&'static str),
    /// SIGHUP: reload the configuration.
    Reload,
}

/// Starts the signal thread; `on_signal` is called for each signal, in
/// order, on that thread. Returns once the handlers are installed.
pub fn forward(on_signal: impl Fn(SignalKind) + Send + 'static) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for sig in signals.forever() {
                let kind = match sig {
                    SIGINT => SignalKind::Stop("SIGINT"),
                    SIGTERM => SignalKind::Stop("SIGTERM"),
                    _ => SignalKind::Reload,
                };
                on_signal(kind);
            }
        })?;
    Ok(())
}
