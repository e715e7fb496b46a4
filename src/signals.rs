//! Turns Unix signals into values: either a signal-hook iterator on a
//! thread of its own calls back with each signal that arrives (`forward`,
//! the supervisor), or a self-pipe that a thread already waiting in poll(2)
//! watches beside its other descriptors (`SignalPipe`, the worker: no
//! thread of its own). Only this
//! module installs signal handlers (ctrlc is deliberately not used: two
//! libraries handling the same signals in one process fight). It must never
//! do work inside a handler; the callback runs on an ordinary thread.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

/// SIGINT, SIGTERM and SIGHUP as a readable descriptor: each signal sets
/// its flag, then writes a byte to a socket pair (signal-hook's self-pipe).
/// The owner polls `fd()` and calls `take()` when it is readable.
pub struct SignalPipe {
    read: UnixStream,
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl SignalPipe {
    /// Installs the handlers; signals that arrive from now on are kept
    /// until `take`.
    pub fn new() -> io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let pipe = SignalPipe {
            read,
            int: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicBool::new(false)),
            hup: Arc::new(AtomicBool::new(false)),
        };
        // The flag first, then the byte: actions run in registration
        // order, so a reader woken by the byte sees the flag set.
        for (sig, flag) in [
            (SIGINT, &pipe.int),
            (SIGTERM, &pipe.term),
            (SIGHUP, &pipe.hup),
        ] {
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(pipe)
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The signals that arrived since the last call (each kind once), and
    /// the wake-up bytes drained. Never blocks.
    pub fn take(&self) -> Vec<SignalKind> {
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
        let mut kinds = Vec::new();
        if self.term.swap(false, Ordering::SeqCst) {
            kinds.push(SignalKind::Stop("SIGTERM"));
        }
        if self.int.swap(false, Ordering::SeqCst) {
            kinds.push(SignalKind::Stop("SIGINT"));
        }
        if self.hup.swap(false, Ordering::SeqCst) {
            kinds.push(SignalKind::Reload);
        }
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_makes_the_pipe_readable_and_is_taken_once() {
        let pipe = SignalPipe::new().expect("signal pipe");
        assert!(pipe.take().is_empty());
        signal_hook::low_level::raise(SIGHUP).expect("raise SIGHUP");
        let ready = crate::sys::poll_readable(&[pipe.fd()], 5000).expect("poll");
        assert_eq!(ready, vec![true]);
        assert_eq!(pipe.take(), vec![SignalKind::Reload]);
        assert!(pipe.take().is_empty());
        assert_eq!(
            crate::sys::poll_readable(&[pipe.fd()], 0).expect("poll"),
            vec![false]
        );
    }
}
