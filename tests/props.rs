//! Property tests (issue 7): the `.env` parser and validator, update JSON
//! handling and file-name sanitizing take any input without panicking, never
//! echo a secret, and never let a name leave `received/`. The interesting
//! inputs found along the way are kept in tests/corpus/ and replayed here as
//! regression cases on every run.

use botfleet::config::{self, Config};
use botfleet::worker::commands::{parse_command, parse_update};
use botfleet::worker::media::{sanitize, MAX_NAME};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::{Component, Path, PathBuf};

fn corpus(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .flatten()
        .map(|e| {
            let p = e.path();
            let bytes = std::fs::read(&p).expect("read a corpus file");
            (p, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {dir} is empty");
    files
}

// ---------------------------------------------------------------- .env

/// Parses `text` and checks that no `secret` shows in anything the parser
/// says: the error, the warnings, the rendered diff from a minimal config.
fn check_env(text: &str, secrets: &[String]) {
    let no_env = |_: &str| None;
    let result = Config::from_text(text, ".env", &no_env);
    let mut said: Vec<String> = vec![];
    match &result {
        Err(e) => {
            said.push(e.to_string());
            said.push(format!("{e:?}").replace("\\\"", "\""));
        }
        Ok(c) => {
            said.extend(c.warnings.iter().cloned());
            let base = Config::from_text("TELEGRAM_BOT_TOKENS=1:base\n", ".env", &no_env)
                .expect("the base config parses");
            said.extend(config::diff(&base, c).render());
            said.extend(config::diff(c, &base).render());
        }
    }
    for s in secrets {
        for line in &said {
            assert!(
                !line.contains(s.as_str()),
                "secret {s:?} echoed in {line:?}\n--- input ---\n{text}"
            );
        }
    }
}

/// Secret-bearing lines in the shapes people write (and mistype).
fn secret_line(secret: String) -> impl Strategy<Value = String> {
    let s = secret;
    prop_oneof![
        Just(format!("HEALTH_AUTH_TOKEN={s}")),
        Just(format!("HEALTH_AUTH_TOKEN=\"{s}")),
        Just(format!("HEALTH_AUTH_TOKEN='{s}' trailing")),
        Just(format!("export HEALTH_AUTH_TOKEN = {s}")),
        Just(format!("HEALTH_AUTH_TOKEN={s}\\")),
        Just(format!("HEALTH_AUTH_TOKEN={s} \\q")),
        Just(format!("HEALTH_AUTH_TOKEN = \"{s}\\x\"")),
        Just(format!("TELEGRAM_BOT_TOKENS=123:{s}")),
        Just(format!("TELEGRAM_BOT_TOKENS=123:{s},{s}")),
        Just(format!("TELEGRAM_BOT_TOKENS={s}")),
        Just(format!("TELEGRAM_BOT_TOKENS=12:{s} x,")),
        Just(format!("TELEGRAM_BOT_TOKENS=abc:{s}")),
        Just(format!("TELEGRAM_BOT_TOKEN=1:{s}!")),
        Just(format!("TELEGRAM_BOT_TOKNES=1:{s}")),
        Just(format!("MY_API_KEY={s}")),
        Just(format!("DB_PASSWORD=\"{s}")),
        Just(format!("STRIPE_SECRET={s}")),
        Just(s.clone()),
        Just(format!("{s}=1")),
        Just(format!("HEALTH_AUTH_TOKEN {s}")),
    ]
}

/// Lines that are not secret: real settings with random values, and noise.
fn noise_line() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "PORT",
        "POLL_TIMEOUT_SECS",
        "RESTART_DELAY",
        "MAX_RESTARTS",
        "ALLOWED_USER_IDS",
        "MEDIA_RECIPIENTS",
        "BOT_TOKEN_MONITOR_INTERVAL",
        "SEND_RATE_PER_CHAT",
        "HEALTH_BIND",
        "TELEGRAM_API_URL",
        "CLEAN_UP_MEDIADIR",
        "RUST_LOG",
        "MY_SETTING",
    ]);
    prop_oneof![
        (keys.clone(), "[ -~]{0,20}").prop_map(|(k, v)| format!("{k}={v}")),
        (keys, "-?[0-9]{0,25}").prop_map(|(k, v)| format!("{k}={v}")),
        ".{0,40}",
        "[=\"'\\\\#$ {}a-z]{0,20}",
        Just("# a comment".to_string()),
        Just(String::new()),
    ]
}

fn env_file() -> impl Strategy<Value = (String, Vec<String>)> {
    // The secret: long and random enough never to appear in noise by chance.
    "[A-Za-z][A-Za-z0-9_-]{15,40}".prop_flat_map(|secret| {
        let lines = prop::collection::vec(
            prop_oneof![3 => noise_line(), 2 => secret_line(secret.clone())],
            0..12,
        );
        (lines, prop::bool::ANY, Just(secret)).prop_map(|(lines, crlf, secret)| {
            let sep = if crlf { "\r\n" } else { "\n" };
            (lines.join(sep), vec![secret])
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn env_parser_never_panics_and_never_echoes_a_secret((text, secrets) in env_file()) {
        check_env(&text, &secrets);
    }

    #[test]
    fn env_parser_never_panics_on_any_text(text in "(?s).{0,300}") {
        let _ = Config::from_text(&text, ".env", &|_| None);
    }
}

#[test]
fn env_corpus_replays() {
    for (path, bytes) in corpus("env") {
        let text = String::from_utf8_lossy(&bytes);
        // Every word that starts with CorpusSecret is a secret.
        let secrets: Vec<String> = text
            .split(|c: char| !(c.is_ascii_alphanumeric()))
            .filter(|w| w.starts_with("CorpusSecret"))
            .map(str::to_string)
            .collect();
        assert!(!secrets.is_empty(), "{} names no secret", path.display());
        eprintln!("replaying {}", path.display());
        check_env(&text, &secrets);
    }
}

// ---------------------------------------------------------------- updates

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        "/[a-z_@]{0,10}( .{0,5})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "update_id",
                    "message",
                    "chat",
                    "id",
                    "from",
                    "text",
                    "caption",
                    "message_id",
                    "document",
                    "photo",
                    "voice",
                    "file_name",
                    "x",
                ])
                .prop_map(str::to_string),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid message update with one field replaced by anything.
fn near_valid_update() -> impl Strategy<Value = Value> {
    let paths = prop::sample::select(vec![
        "/update_id",
        "/message",
        "/message/chat",
        "/message/chat/id",
        "/message/from",
        "/message/from/id",
        "/message/text",
        "/message/message_id",
        "/message/document",
        "/message/caption",
    ]);
    (paths, any_json(), ".{0,30}").prop_map(|(path, value, text)| {
        let mut u = json!({
            "update_id": 500000001,
            "message": {"message_id": 7, "from": {"id": 5, "is_bot": false},
                        "chat": {"id": 5, "type": "private"}, "date": 1, "text": text}
        });
        if let Some(slot) = u.pointer_mut(path) {
            *slot = value;
        }
        u
    })
}

fn check_update(u: &Value) {
    if let Ok(m) = parse_update(u) {
        assert_eq!(Some(m.update_id), u["update_id"].as_i64());
        if let Some(text) = &m.text {
            let _ = parse_command(text, "me_bot");
            let _ = parse_command(text, "");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn parse_update_takes_any_json(u in any_json()) {
        check_update(&u);
    }

    #[test]
    fn parse_update_takes_near_valid_updates(u in near_valid_update()) {
        check_update(&u);
    }

    #[test]
    fn parse_command_takes_any_text(text in "(?s).{0,60}", me in ".{0,12}") {
        if let Some(c) = parse_command(&text, &me) {
            prop_assert!(!c.name.is_empty());
            prop_assert!(c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'));
            prop_assert!(text.contains(c.args));
        }
    }
}

#[test]
fn update_corpus_replays() {
    for (path, bytes) in corpus("updates") {
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        check_update(&v);
        if let Some(t) = v["message"]["text"].as_str() {
            let _ = parse_command(t, "x");
        }
    }
}

// ---------------------------------------------------------------- names

fn check_name(name: &str) {
    let out = sanitize(name);
    let show = format!("sanitize({name:?}) = {out:?}");
    assert!(!out.is_empty(), "{show}: empty");
    assert!(out.len() <= MAX_NAME, "{show}: longer than {MAX_NAME}");
    assert!(
        !out.chars()
            .any(|c| c == '/' || c == '\\' || c == '\0' || c.is_control()),
        "{show}: a separator or control character"
    );
    assert!(out != "." && out != "..", "{show}: a dot name");
    assert!(!out.starts_with('.'), "{show}: hidden");
    assert!(!out.contains(".."), "{show}: contains ..");
    let received = Path::new("received");
    let joined = received.join(&out);
    assert_eq!(
        joined.parent(),
        Some(received),
        "{show}: not a direct child"
    );
    let comps: Vec<Component> = joined.components().collect();
    assert_eq!(comps.len(), 2, "{show}: {comps:?}");
    assert!(
        matches!(comps[1], Component::Normal(_)),
        "{show}: {comps:?}"
    );
    assert_eq!(sanitize(&out), out, "{show}: not idempotent");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn sanitized_names_stay_in_received(name in "(?s).{0,200}") {
        check_name(&name);
    }

    #[test]
    fn sanitized_path_like_names_stay_in_received(
        parts in prop::collection::vec(
            prop_oneof![
                Just("..".to_string()), Just(".".to_string()), Just(String::new()),
                "[ .a-z\u{0}-\u{1f}\u{7f}-\u{9f}]{0,6}",
            ],
            0..6),
        sep in prop::sample::select(vec!["/", "\\", "/./", "\\..\\"]),
    ) {
        check_name(&parts.join(sep));
    }
}

#[test]
fn name_corpus_replays() {
    for (path, bytes) in corpus("names") {
        let names: Vec<String> = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not a JSON list: {e}", path.display()));
        for n in names {
            check_name(&n);
        }
    }
}
