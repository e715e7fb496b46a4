//! The client's connections, made by ureq's own connector (TCP, rustls)
//! and wrapped so that a request costs the server one read: ureq writes an
//! HTTP request's head and its body with two writes (two TCP segments with
//! TCP_NODELAY, two TLS records), which wakes the server twice per call.
//! [`Coalesced`] keeps what ureq transmits until it reads the response (or
//! a request's bytes pass one output buffer), then writes it at once. It
//! also hands the transport below a remaining-time timeout rounded up to
//! whole seconds once more than [`ROUND_ABOVE`] is left, so the socket's
//! timeouts are set again about once a second, not before every read and
//! write (a deadline can end up to a second late). And it answers ureq's
//! liveness probe (three syscalls: non-blocking on, a one-byte peek,
//! non-blocking off) without probing as it hands a connection back to its
//! pool (right after the response was read), and as it takes one out that
//! answered less than [`FRESH`] ago: a server closes an idle keep-alive
//! connection after seconds, and says `Connection: close` on the answer
//! before one it closes at once (ureq then pools nothing). One idle longer
//! is probed for real. (Apache HttpClient's `validateAfterInactivity`, 2 s
//! by default, is the same rule.) A connection that died within the
//! window anyway fails its call, which the caller retries as any network
//! error. It must never reorder or drop bytes, never read before what is
//! kept has been written, and never let a connection idle for
//! [`FRESH`] or more out of the pool unprobed.

use std::time::{Duration as StdDuration, Instant};

use ureq::unversioned::transport::time::Duration;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};
use ureq::Error;

/// Below this much time left, timeouts go down exact.
pub const ROUND_ABOVE: StdDuration = StdDuration::from_secs(2);
/// A connection that answered less than this long ago is taken out of the
/// pool without a probe.
pub const FRESH: StdDuration = StdDuration::from_secs(1);

/// Wraps the connections `C` makes in [`Coalesced`].
#[derive(Debug)]
pub struct Coalescing<C>(pub C);

impl<C: Connector<()>> Connector<()> for Coalescing<C> {
    type Out = Coalesced<C::Out>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(self.0.connect(details, chained)?.map(|inner| Coalesced {
            inner,
            pending: Vec::new(),
            timeout: NextTimeout::default(),
            just_read: false,
            read_at: None,
        }))
    }
}

/// A connection whose writes are kept until the next read (see the module
/// doc).
#[derive(Debug)]
pub struct Coalesced<T> {
    inner: T,
    /// Bytes ureq transmitted that are not written yet.
    pending: Vec<u8>,
    /// The timeout of the last transmit: the kept bytes' write timeout.
    timeout: NextTimeout,
    /// A response was read and no probe came since: the next `is_open`
    /// is the pool's as the connection goes back.
    just_read: bool,
    /// When the last response began to be read: within [`FRESH`] the
    /// probe as the connection comes out of the pool is skipped too.
    read_at: Option<Instant>,
}

/// `t` with its remaining time rounded up to whole seconds when more than
/// [`ROUND_ABOVE`] is left.
pub fn rounded(mut t: NextTimeout) -> NextTimeout {
    if let Duration::Exact(after) = t.after {
        if after > ROUND_ABOVE && after.subsec_nanos() > 0 {
            t.after = Duration::Exact(StdDuration::from_secs(after.as_secs() + 1));
        }
    }
    t
}

impl<T: Transport> Coalesced<T> {
    /// Writes what is kept, through the inner transport's output buffer.
    fn flush(&mut self) -> Result<(), Error> {
        let mut from = 0;
        while from < self.pending.len() {
            let out = self.inner.buffers().output();
            let n = out.len().min(self.pending.len() - from);
            out[..n].copy_from_slice(&self.pending[from..from + n]);
            if let Err(e) = self.inner.transmit_output(n, rounded(self.timeout)) {
                self.pending.clear();
                return Err(e);
            }
            from += n;
        }
        self.pending.clear();
        Ok(())
    }
}

impl<T: Transport> Transport for Coalesced<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let out = self.inner.buffers().output();
        let cap = out.len();
        self.pending.extend_from_slice(&out[..amount]);
        self.timeout = timeout;
        // A large body (an upload) goes out a buffer at a time.
        if self.pending.len() >= cap {
            self.flush()?;
        }
        Ok(())
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush()?;
        self.just_read = true;
        let got = self.inner.maybe_await_input(rounded(timeout));
        self.read_at = Some(Instant::now());
        got
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush()?;
        self.just_read = true;
        let got = self.inner.await_input(rounded(timeout));
        self.read_at = Some(Instant::now());
        got
    }

    fn is_open(&mut self) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        if std::mem::take(&mut self.just_read) {
            // Back to the pool: probed when it is taken out, if by then
            // it has been idle for a while.
            return true;
        }
        if self.read_at.is_some_and(|at| at.elapsed() < FRESH) {
            // Out of the pool, fresh from an answer.
            return true;
        }
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::transport::LazyBuffers;

    /// A transport that records each write and answers reads with nothing.
    #[derive(Debug)]
    struct Recorder {
        buffers: LazyBuffers,
        writes: Vec<Vec<u8>>,
        probes: usize,
    }

    impl Transport for Recorder {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }
        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), Error> {
            let out = self.buffers.output()[..amount].to_vec();
            self.writes.push(out);
            Ok(())
        }
        fn await_input(&mut self, _: NextTimeout) -> Result<bool, Error> {
            Ok(false)
        }
        fn is_open(&mut self) -> bool {
            self.probes += 1;
            true
        }
    }

    fn coalesced(output: usize) -> Coalesced<Recorder> {
        Coalesced {
            inner: Recorder {
                buffers: LazyBuffers::new(64, output),
                writes: Vec::new(),
                probes: 0,
            },
            pending: Vec::new(),
            timeout: NextTimeout::default(),
            just_read: false,
            read_at: None,
        }
    }

    /// ureq's way to transmit: into the output buffer, then `amount`.
    fn transmit(c: &mut Coalesced<Recorder>, bytes: &[u8]) {
        c.buffers().output()[..bytes.len()].copy_from_slice(bytes);
        c.transmit_output(bytes.len(), NextTimeout::default())
            .expect("transmits");
    }

    #[test]
    fn a_head_and_its_body_go_out_in_one_write_before_the_read() {
        let mut c = coalesced(1024);
        transmit(&mut c, b"POST /m HTTP/1.1\r\n\r\n");
        transmit(&mut c, b"{\"a\":1}");
        assert!(c.inner.writes.is_empty(), "kept until the response is read");
        assert!(!c.is_open(), "a connection with unsent bytes is not reused");
        c.await_input(NextTimeout::default()).expect("reads");
        assert_eq!(
            c.inner.writes,
            vec![b"POST /m HTTP/1.1\r\n\r\n{\"a\":1}".to_vec()]
        );
        c.maybe_await_input(NextTimeout::default()).expect("reads");
        assert_eq!(c.inner.writes.len(), 1, "nothing more to write");
    }

    #[test]
    fn only_a_connection_idle_for_a_while_is_probed_as_it_comes_out() {
        let mut c = coalesced(1024);
        assert!(c.is_open(), "never read: probed");
        assert_eq!(c.inner.probes, 1);
        transmit(&mut c, b"GET / HTTP/1.1\r\n\r\n");
        c.await_input(NextTimeout::default()).expect("reads");
        assert!(c.is_open(), "into the pool");
        assert!(c.is_open(), "out of the pool, fresh from its answer");
        assert_eq!(c.inner.probes, 1, "neither probed");
        // An answer read longer than FRESH ago.
        c.read_at = Instant::now().checked_sub(FRESH);
        assert!(c.is_open(), "out of the pool after a while");
        assert_eq!(c.inner.probes, 2, "probed as it comes out");
    }

    #[test]
    fn a_large_body_goes_out_a_buffer_at_a_time_in_order() {
        let mut c = coalesced(16);
        let body: Vec<u8> = (0..100u8).collect();
        for chunk in body.chunks(16) {
            transmit(&mut c, chunk);
        }
        c.await_input(NextTimeout::default()).expect("reads");
        assert!(c.inner.writes.iter().all(|w| w.len() <= 16));
        assert_eq!(c.inner.writes.concat(), body);
    }

    fn after(t: NextTimeout) -> StdDuration {
        *t.after
    }

    #[test]
    fn long_timeouts_round_up_to_whole_seconds_short_ones_stay() {
        let t = |d: StdDuration| NextTimeout {
            after: Duration::Exact(d),
            ..NextTimeout::default()
        };
        assert_eq!(
            after(rounded(t(StdDuration::from_millis(44_999_700)))),
            StdDuration::from_secs(45_000)
        );
        assert_eq!(
            after(rounded(t(StdDuration::from_millis(44_300)))),
            StdDuration::from_secs(45)
        );
        assert_eq!(
            after(rounded(t(StdDuration::from_secs(45)))),
            StdDuration::from_secs(45)
        );
        assert_eq!(
            after(rounded(t(StdDuration::from_millis(1_500)))),
            StdDuration::from_millis(1_500)
        );
        assert!(rounded(NextTimeout::default()).after.is_not_happening());
    }
}
