//! A name resolver for the client's agent that remembers answers for a
//! minute. ureq resolves the host before it looks for a pooled connection,
//! and with a timeout set (every botfleet call has one) its default
//! resolver does so on a new thread: without this, every Bot API call
//! started a thread and, for `api.telegram.org`, asked DNS again. Misses go
//! to ureq's own resolver, timeout and all. An IP literal (a local Bot API
//! server, the sandbox) is its own answer: no thread, no cache. It must
//! never cache a failure,
//! and never keep an answer longer than [`TTL`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is reused. std's resolver does not say the record's
/// TTL; a minute follows an address change soon enough (a failed connect
/// is retried by the caller anyway) and saves all but one lookup a minute.
pub const TTL: Duration = Duration::from_secs(60);
/// Hosts remembered: the Bot API's, and rarely another one.
const ENTRIES: usize = 4;

/// See the module doc.
#[derive(Debug, Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    /// (host:port, when resolved, addresses), newest last.
    cache: Mutex<Vec<(String, Instant, ResolvedSocketAddrs)>>,
}

impl CachingResolver {
    fn cache(&self) -> std::sync::MutexGuard<'_, Vec<(String, Instant, ResolvedSocketAddrs)>> {
        match self.cache.lock() {
            Ok(g) => g,
            // Plain data, replaced whole: a panicked holder cannot tear it.
            Err(p) => p.into_inner(),
        }
    }
}

/// `host:port` of an absolute URI (the port defaulted from the scheme).
fn key(uri: &Uri) -> Option<String> {
    let authority = uri.authority()?;
    let port = authority.port_u16().or(match uri.scheme_str()? {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some(format!("{}:{port}", authority.host()))
}

/// The address of a URI whose host is an IP literal (`127.0.0.1`,
/// `[::1]`), with the port defaulted from the scheme.
fn literal(uri: &Uri) -> Option<std::net::SocketAddr> {
    let authority = uri.authority()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: std::net::IpAddr = host.parse().ok()?;
    let port = authority.port_u16().or(match uri.scheme_str()? {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some(std::net::SocketAddr::new(ip, port))
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some(addr) = literal(uri) {
            let mut addrs = self.empty();
            for a in config.ip_family().keep_wanted(std::iter::once(addr)) {
                addrs.push(a);
            }
            if !addrs.is_empty() {
                return Ok(addrs);
            }
        }
        let Some(key) = key(uri) else {
            return self.inner.resolve(uri, config, timeout);
        };
        let now = Instant::now();
        if let Some((_, _, addrs)) = self
            .cache()
            .iter()
            .find(|(k, at, _)| *k == key && now.duration_since(*at) < TTL)
        {
            return Ok(addrs.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut cache = self.cache();
        cache.retain(|(k, at, _)| *k != key && now.duration_since(*at) < TTL);
        if cache.len() >= ENTRIES {
            cache.remove(0);
        }
        cache.push((key, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_default_the_port_from_the_scheme() {
        let k = |s: &str| key(&s.parse::<Uri>().expect("a valid URI literal"));
        assert_eq!(
            k("https://api.telegram.org/bot1:x/getMe").as_deref(),
            Some("api.telegram.org:443")
        );
        assert_eq!(
            k("http://127.0.0.1:8081/x").as_deref(),
            Some("127.0.0.1:8081")
        );
        assert_eq!(k("http://[::1]/x").as_deref(), Some("[::1]:80"));
        assert_eq!(k("/relative"), None);
    }

    #[test]
    fn an_answer_is_reused() {
        let r = CachingResolver::default();
        let config = ureq::config::Config::default();
        // With a timeout set, ureq's resolver works on a thread: the path
        // every botfleet call takes.
        let timeout = || NextTimeout {
            after: std::time::Duration::from_secs(5).into(),
            reason: ureq::Timeout::Resolve,
            ..NextTimeout::default()
        };
        let uri: Uri = "http://localhost:8081/x"
            .parse()
            .expect("a valid URI literal");
        let first = r
            .resolve(&uri, &config, timeout())
            .expect("localhost resolves (/etc/hosts)");
        assert!(!first.is_empty());
        assert_eq!(r.cache().len(), 1);
        let again = r
            .resolve(&uri, &config, timeout())
            .expect("served from the cache");
        assert_eq!(&first[..], &again[..]);
        assert_eq!(r.cache().len(), 1);
    }

    #[test]
    fn an_ip_literal_is_its_own_answer_without_the_cache() {
        let r = CachingResolver::default();
        let config = ureq::config::Config::default();
        for (url, want) in [
            ("http://127.0.0.1:8081/x", "127.0.0.1:8081"),
            ("http://[::1]:9/x", "[::1]:9"),
            ("https://10.1.2.3/x", "10.1.2.3:443"),
        ] {
            let uri: Uri = url.parse().expect("a valid URI literal");
            let got = r
                .resolve(&uri, &config, NextTimeout::default())
                .expect("a literal resolves");
            let want: std::net::SocketAddr = want.parse().expect("a socket address");
            assert_eq!(&got[..], &[want][..], "{url}");
        }
        assert!(r.cache().is_empty(), "literals are not cached");
    }
}
