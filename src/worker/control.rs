//! The worker's control thread: one poll(2) over its stdin (the socket the
//! supervisor holds: START, SETTINGS, STOP, NOTIFY; EOF means the parent is
//! gone) and the signal pipe; it also writes the heartbeat every
//! HEARTBEAT_PERIOD and runs the outbox. Rare work (signals, a parent's
//! line, the heartbeat, the outbox) is in functions of its own, so the
//! loop's frame, which lives as long as the worker, stays small. It must
//! never block on anything but its poll, nor touch the Bot API.

use super::*;
/// The worker's stdin (its end of the socket pair the supervisor holds), read in whole lines
/// with read(2) and no hidden buffer, so poll(2) on it tells the truth.
pub(super) struct ParentPipe {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl ParentPipe {
    pub(super) fn open() -> std::io::Result<ParentPipe> {
        // Not through `std::io::stdin()`: its first use allocates an 8 kB
        // read buffer that nothing here would ever use.
        Ok(ParentPipe {
            file: std::fs::File::from(crate::sys::dup_stdio(0)?),
            buf: Vec::new(),
        })
    }

    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }

    /// One read(2) into the buffer; Ok(false) at end of file. Not inlined,
    /// and a small chunk: its frame is on the stack only while it reads
    /// (START is a few reads; SETTINGS come seldom).
    #[inline(never)]
    fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 1024];
        loop {
            match self.file.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next whole line already read, if any.
    fn next_line(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=end).collect();
        Some(String::from_utf8_lossy(&line).into_owned())
    }
}

/// Reads START, the first line the supervisor writes.
pub(super) fn read_start(pipe: &mut ParentPipe) -> Result<(Token, Vec<(String, String)>), String> {
    let line = loop {
        if let Some(line) = pipe.next_line() {
            break line;
        }
        match pipe.fill() {
            Ok(true) => {}
            Ok(false) => return Err("stdin closed".into()),
            Err(e) => return Err(e.to_string()),
        }
    };
    // What START grew the buffer to is not kept for the small lines after.
    pipe.buf.shrink_to_fit();
    match ParentMsg::decode(&line) {
        Ok(ParentMsg::Start { token, env }) => Ok((token, env)),
        Ok(_) => Err("another message came first".into()),
        // The error names the field, never the value.
        Err(e) => Err(e.to_string()),
    }
}

/// One HEARTBEAT, if the poll loop made progress recently. Idle, this is
/// all a worker does every 5 s, a thousand workers at once: the line is
/// formatted into a stack buffer under the counters' lock (no clone, no
/// JSON tree) and goes out in one write.
#[inline(never)]
fn heartbeat(s: &Shared, stale_after: Duration) {
    let alive = Duration::from_millis(s.alive_ms.load(Ordering::Relaxed));
    if s.started.elapsed().saturating_sub(alive) >= stale_after {
        return;
    }
    let inbox = s.inbox.get().map(|inbox| {
        let ib = lock(inbox);
        (ib.depth() as u64, ib.oldest_ms(), ib.bytes())
    });
    let mut buf = [0u8; 512];
    let mut long = Vec::new();
    let len = {
        let c = lock(&s.counters);
        let (depth, oldest, bytes) =
            inbox.unwrap_or((c.inbox_depth, c.oldest_pending_ms, c.journal_bytes));
        let mut out = std::io::Cursor::new(&mut buf[..]);
        match write_heartbeat(&mut out, &c, depth, oldest, bytes) {
            Ok(()) => out.position() as usize,
            // Longer than the buffer (a long reason in `waiting` or
            // `fetchPaused`): written into a Vec instead.
            Err(_) => {
                write_heartbeat(&mut long, &c, depth, oldest, bytes)
                    .expect("a Vec takes any length");
                0
            }
        }
    };
    emit_line(if long.is_empty() { &buf[..len] } else { &long });
}

/// How long until the next HEARTBEAT_PERIOD boundary of CLOCK_MONOTONIC
/// (the clock `Instant` reads, shared by every process on the host). Every
/// worker beats on the same boundaries: a thousand idle workers wake in one
/// burst, with the kernel's paths and the supervisor's reader warm, not one
/// at a time from a cold CPU (measured at 300 idle workers: 48 -> 24 us of
/// CPU per beat; the supervisor's reader wakes 148 -> 45 times a minute).
fn until_next_beat() -> Duration {
    let period = HEARTBEAT_PERIOD.as_micros() as u64;
    match crate::sys::monotonic_usec() {
        Ok(us) => Duration::from_micros(period - us % period),
        Err(_) => HEARTBEAT_PERIOD,
    }
}

/// Starts the control thread: one poll(2) over stdin (the supervisor's
/// messages; EOF: it is gone) and the signal pipe, waking for heartbeats
/// and the outbox (put in `Shared::outbox` once the bot is up). One thread
/// instead of four (signals, parent, heartbeat, outbox): each thread costs
/// a worker its touched stack, and each timer its wake-ups.
pub(super) fn start_control(
    shared: &Arc<Shared>,
    mut parent: ParentPipe,
    poll_timeout_secs: u64,
) -> std::io::Result<()> {
    let signals = crate::signals::SignalPipe::new()?;
    let s = Arc::clone(shared);
    // The poll loop is alive if it made progress within one long poll plus
    // the client's slack; past that, heartbeats stop and the parent kills us.
    let stale_after = Duration::from_secs(poll_timeout_secs + 20);
    std::thread::Builder::new()
        .name("control".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut next_beat = Instant::now();
            let mut the_outbox: Option<outbox::Outbox> = None;
            let mut stopping = false;
            loop {
                let now = Instant::now();
                if now >= next_beat {
                    heartbeat(&s, stale_after);
                    next_beat = now + until_next_beat();
                }
                if the_outbox.is_none() {
                    the_outbox = lock(&s.outbox).take();
                }
                let mut wake = next_beat;
                if let Some(ob) = the_outbox.as_mut() {
                    if let Some(at) = ob.tick(now) {
                        wake = wake.min(at);
                    }
                }
                let wait = wake.saturating_duration_since(Instant::now());
                // Rounded up, so a wake-up never comes a hair early.
                let wait_ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                let ready = match crate::sys::poll_readable2([parent.fd(), signals.fd()], wait_ms) {
                    Ok(r) => r,
                    Err(e) => {
                        log::error!("control: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                if ready[1] {
                    on_signals(&s, &signals, &mut stopping);
                }
                if ready[0] {
                    on_parent_readable(&s, &mut parent);
                }
            }
        })?;
    Ok(())
}

/// The signals that arrived: SIGTERM or SIGINT starts the stop (once).
/// Out of the control loop's frame, as is all it does but wait: that frame
/// is what its thread's stack holds while idle.
#[inline(never)]
fn on_signals(s: &Arc<Shared>, signals: &crate::signals::SignalPipe, stopping: &mut bool) {
    for kind in signals.take() {
        if let crate::signals::SignalKind::Stop(name) = kind {
            if !std::mem::replace(stopping, true) {
                // On a thread of its own: the stop waits for the updates in
                // hand, and meanwhile stdin EOF must still cut it short.
                let st = Arc::clone(s);
                let spawned = std::thread::Builder::new()
                    .name("stop".into())
                    .stack_size(128 * 1024)
                    .spawn(move || exit_now(&st, &format!("received {name}"), 0, stop_grace(&st)));
                if let Err(e) = spawned {
                    log::warn!("cannot start the stop thread ({e}): stopping here");
                    exit_now(s, &format!("received {name}"), 0, stop_grace(s));
                }
            }
        }
    }
}

/// The supervisor's lines that arrived; at EOF it is gone: stop.
#[inline(never)]
fn on_parent_readable(s: &Shared, parent: &mut ParentPipe) {
    match parent.fill() {
        Ok(true) => {
            while let Some(line) = parent.next_line() {
                match ParentMsg::decode(&line) {
                    Ok(msg) => on_parent_msg(s, msg),
                    Err(e) => log::warn!("{e}"),
                }
            }
        }
        Ok(false) | Err(_) => exit_now(s, "the supervisor is gone (stdin closed)", 0, ORPHAN_GRACE),
    }
}

#[inline(never)]
fn on_parent_msg(shared: &Shared, msg: ParentMsg) {
    match msg {
        ParentMsg::Start { .. } => log::warn!("a second START from the supervisor was ignored"),
        ParentMsg::Settings { env, version } => {
            // Acknowledged on arrival, so the supervisor stops resending.
            emit(&WorkerMsg::SettingsAck { version });
            // Only what the supervisor sent: a key removed from .env is gone.
            match settings_of(&env) {
                Ok(s) => {
                    crate::logging::set_filter(&s.rust_log);
                    // The send path shares these rates and wakes its
                    // senders; before it exists, only the rates change.
                    match shared.send.get() {
                        Some(send) => send.set_rates(rate_set(&s)),
                        None => shared.rates.set(rate_set(&s)),
                    }
                    if let Some(pool) = shared.pool.get() {
                        pool.resize(s.handler_concurrency);
                    }
                    if let Ok(mut cur) = shared.settings.write() {
                        *cur = Arc::new(s);
                    }
                    if let Ok(mut cur) = shared.settings_env.write() {
                        *cur = env;
                    }
                    log::info!("settings updated");
                }
                Err(e) => log::error!("new settings rejected: {e}"),
            }
        }
        ParentMsg::ReloadResult { chat_id, text } | ParentMsg::Notify { chat_id, text } => {
            match shared.send.get() {
                Some(send) => send.send(Outgoing {
                    chat_id,
                    content: Content::Text(text),
                    reply_to: None,
                    ticket: None,
                    report: None,
                }),
                None => log::warn!("not ready yet: a message for chat {chat_id} was dropped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_fall_on_the_shared_boundary_within_one_period() {
        let period = HEARTBEAT_PERIOD.as_micros() as u64;
        for _ in 0..3 {
            let before = crate::sys::monotonic_usec().expect("CLOCK_MONOTONIC exists");
            let wait = until_next_beat().as_micros() as u64;
            let after = crate::sys::monotonic_usec().expect("CLOCK_MONOTONIC exists");
            assert!(wait > 0 && wait <= period, "{wait} us");
            // read at some t in [before, after] with t + wait a multiple of
            // the period: before + wait is at most after - before short of one.
            let r = (before + wait) % period;
            assert!(
                r == 0 || period - r <= after - before,
                "{before} {wait} {after}"
            );
        }
    }
}
