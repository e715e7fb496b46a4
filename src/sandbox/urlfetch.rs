//! Files given to a sending method by URL. Only `http://` on loopback is
//! fetched (a test server, a local file server); the sandbox never reaches
//! beyond loopback, and any other URL is left for the method to refuse as
//! Telegram refuses a URL it cannot get. (This is not the Bot API client:
//! `telegram` alone speaks to the Bot API.)

use super::{http, methods, state};
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// The parameters that take an InputFile: each media kind a send method
/// carries (methods::MEDIA), and a thumbnail.
fn file_fields() -> impl Iterator<Item = &'static str> {
    methods::MEDIA
        .iter()
        .map(|&(_, field)| field)
        .chain(["thumbnail"])
}

/// Files given by URL: an `http://` URL on loopback is fetched (the
/// sandbox never reaches beyond loopback); any other URL is left for the
/// method to refuse as Telegram refuses a URL it cannot get.
pub(super) fn fetch_loopback_urls(params: &mut http::Params) {
    let mut urls = vec![];
    // Only the parameters that carry files: a URL in a text is just text.
    for key in file_fields() {
        if let Some(text) = params.fields.get(key).and_then(Value::as_str) {
            urls.push((key.to_string(), text.to_string()));
        }
    }
    if let Some(media) = params.json("media") {
        let items = match media {
            Value::Array(list) => list,
            other => vec![other],
        };
        for item in items {
            if let Some(text) = item["media"].as_str() {
                urls.push(("media".into(), text.to_string()));
            }
        }
    }
    for (_, url) in urls {
        if !is_loopback_http(&url) {
            continue;
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .proxy(None)
            // A redirect could lead beyond loopback: never follow one.
            .max_redirects(0)
            .build()
            .into();
        let Ok(mut response) = agent.get(&url).call() else {
            continue;
        };
        if response.status().as_u16() != 200 {
            continue;
        }
        let Ok(bytes) = response
            .body_mut()
            .with_config()
            .limit(state::MAX_UPLOAD_BYTES)
            .read_to_vec()
        else {
            continue;
        };
        let file_name = url
            .split(['?', '#'])
            .next()
            .and_then(|p| p.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or("file")
            .to_string();
        params
            .files
            .insert(methods::url_part(&url), http::FilePart { file_name, bytes });
    }
}

/// Whether `url` is `http://` to 127.0.0.0/8, `localhost` or `[::1]`.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // No user info and nothing a URL parser might read differently.
    if authority.contains(['@', '\\', '%']) {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_http;

    #[test]
    fn only_plain_http_to_loopback_is_fetched() {
        for url in [
            "http://127.0.0.1:8080/a.jpg",
            "http://localhost/x",
            "http://[::1]:9/y",
            "http://127.1.2.3/",
        ] {
            assert!(is_loopback_http(url), "{url}");
        }
        for url in [
            "https://127.0.0.1/a",
            "http://example.com/a",
            "http://10.0.0.1/a",
            "http://user@127.0.0.1@evil.com/",
            "http://127.0.0.1.evil.com/",
            "ftp://127.0.0.1/",
            "http://[::1]@evil.com/",
            "http://127.0.0.1\\@evil.com/",
        ] {
            assert!(!is_loopback_http(url), "{url}");
        }
    }
}
