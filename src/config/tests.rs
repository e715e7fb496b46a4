//! Unit tests of the config module. The environment is always a closure,
//! never the real process environment.

use super::*;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

const T1: &str = "111111:AAAAsecretONE_aaaa";
const T2: &str = "222222:BBBBsecretTWO-bbbb";
const AUTH: &str = "hunter2-auth-SECRET";

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_text(text, ".env", &no_env)
}

fn load_ok(text: &str) -> Config {
    load(text).unwrap_or_else(|e| panic!("config should load: {e}"))
}

fn load_err(text: &str) -> String {
    match load(text) {
        Ok(c) => panic!("config should not load: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn with_token(rest: &str) -> String {
    format!("TELEGRAM_BOT_TOKENS={T1}\n{rest}")
}

#[test]
fn parses_a_full_file() {
    let text = format!(
        "# a comment\n\
         export TELEGRAM_BOT_TOKENS=\" {T1} , ,{T2}, \"\n\
         TELEGRAM_API_URL=http://127.0.0.1:8081/\n\
         MEDIA_TMP_LOCATION=/srv/media\n\
         CLEAN_UP_MEDIADIR=Yes\n\
         STATE_DIR=/srv/state\n\
         LOCK_FILE=/run/botfleet.lock\n\
         BOT_TOKEN_MONITOR_INTERVAL=0\n\
         CONFIG_RELOAD_DEBOUNCE=500\n\
         ALLOWED_USER_IDS=\" 1, 2 ,,3\"\n\
         ADMIN_USER_IDS=10,11\n\
         OWNER_USER_ID=12\n\
         BOT_HANDLER='python3 \"my handler.py\" --fast'\n\
         HANDLER_TIMEOUT_SECS=5\n\
         HANDLER_CONCURRENCY=2\n\
         PORT=9000\n\
         HEALTH_BIND=0.0.0.0\n\
         HEALTH_AUTH_TOKEN={AUTH}\n\
         POLL_TIMEOUT_SECS=0\n\
         SEND_RATE_PER_CHAT=0.5\n\
         SEND_RATE_PER_BOT=0\n\
         SHUTDOWN_TIMEOUT=3000\n\
         RESTART_DELAY=1000\n\
         RESTART_MAX_DELAY=1000\n\
         MAX_RESTARTS=0\n\
         RESTART_RESET_AFTER_SECS=7\n\
         UNHEALTHY_THRESHOLD_SECS=8\n\
         KEEPALIVE_URL=https://example.org/ping\n\
         HEARTBEAT_INTERVAL_SECS=9\n\
         RUST_LOG=debug,ureq=warn\n\
         OPENAI_API_KEY=sk-handler-own\n"
    );
    let c = load_ok(&text);
    let s = &c.settings;
    assert_eq!(c.tokens.len(), 2);
    assert_eq!(c.tokens[0].expose(), T1);
    assert_eq!(c.tokens[1].expose(), T2);
    assert_eq!(s.api_url, "http://127.0.0.1:8081");
    assert_eq!(s.media_dir, PathBuf::from("/srv/media"));
    assert!(s.clean_up_media);
    assert_eq!(s.state_dir, PathBuf::from("/srv/state"));
    assert_eq!(s.lock_file, PathBuf::from("/run/botfleet.lock"));
    assert_eq!(s.monitor_interval, Duration::ZERO);
    assert_eq!(s.reload_debounce, Duration::from_millis(500));
    assert_eq!(s.allowed_users, [1, 2, 3]);
    assert_eq!(s.admin_users, [10, 11]);
    assert_eq!(s.owner_user, Some(12));
    assert_eq!(s.recipients(), [10, 11, 12]);
    assert_eq!(
        s.handler.as_deref(),
        Some(
            &[
                "python3".to_string(),
                "my handler.py".into(),
                "--fast".into()
            ][..]
        )
    );
    assert_eq!(s.handler_timeout, Duration::from_secs(5));
    assert_eq!(s.handler_concurrency, 2);
    assert_eq!(s.port, 9000);
    assert_eq!(s.health_bind, "0.0.0.0".parse::<IpAddr>().expect("ip"));
    assert_eq!(s.health_auth_token.as_deref(), Some(AUTH));
    assert_eq!(s.poll_timeout_secs, 0);
    assert_eq!(s.send_rate_per_chat, 0.5);
    assert_eq!(s.send_rate_per_bot, 0.0);
    assert_eq!(s.shutdown_timeout, Duration::from_secs(3));
    assert_eq!(s.restart_delay, Duration::from_secs(1));
    assert_eq!(s.restart_max_delay, Duration::from_secs(1));
    assert_eq!(s.max_restarts, 0);
    assert_eq!(s.restart_reset_after, Duration::from_secs(7));
    assert_eq!(s.unhealthy_threshold, Duration::from_secs(8));
    assert_eq!(s.keepalive_url.as_deref(), Some("https://example.org/ping"));
    assert_eq!(s.heartbeat_interval, Duration::from_secs(9));
    assert_eq!(s.rust_log, "debug,ureq=warn");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Unknown keys are kept and passed to workers; secrets are not.
    assert_eq!(c.get("OPENAI_API_KEY"), Some("sk-handler-own"));
    let worker: Vec<String> = c.worker_env().into_iter().map(|(k, _)| k).collect();
    assert!(worker.contains(&"OPENAI_API_KEY".to_string()));
    assert!(worker.contains(&"PORT".to_string()));
    for hidden in [
        "TELEGRAM_BOT_TOKENS",
        "TELEGRAM_BOT_TOKEN",
        "HEALTH_AUTH_TOKEN",
    ] {
        assert!(!worker.contains(&hidden.to_string()));
    }
    assert_eq!(c.setting_count(), 30);
    assert_eq!(c.line_of("PORT"), Some(16));
}

#[test]
fn defaults_apply_to_unset_and_empty_values() {
    let c = load_ok(&with_token("PORT=\nBOT_HANDLER=   \n"));
    assert_eq!(c.settings, Settings::default());
    let s = Settings::from_lookup(&no_env).expect("defaults parse");
    assert_eq!(s, Settings::default());
    assert_eq!(s.api_url, "https://api.telegram.org");
    assert_eq!(s.media_dir, PathBuf::from("./media"));
    assert!(!s.clean_up_media);
    assert_eq!(s.state_dir, PathBuf::from("./state"));
    assert_eq!(s.lock_file, PathBuf::from("bot.lock"));
    assert_eq!(s.monitor_interval, Duration::from_millis(2000));
    assert_eq!(s.reload_debounce, Duration::from_millis(2000));
    assert!(s.allowed_users.is_empty() && s.admin_users.is_empty());
    assert!(s.recipients().is_empty() && s.owner_user.is_none() && s.handler.is_none());
    assert_eq!(s.handler_timeout, Duration::from_secs(30));
    assert_eq!(s.handler_concurrency, 4);
    assert_eq!(s.port, 8001);
    assert_eq!(s.health_bind.to_string(), "127.0.0.1");
    assert_eq!(s.health_auth_token, None);
    assert_eq!(s.poll_timeout_secs, 30);
    assert_eq!((s.send_rate_per_chat, s.send_rate_per_bot), (1.0, 30.0));
    assert_eq!(s.shutdown_timeout, Duration::from_millis(10_000));
    assert_eq!(s.restart_delay, Duration::from_millis(5000));
    assert_eq!(s.restart_max_delay, Duration::from_millis(300_000));
    assert_eq!(s.max_restarts, 10);
    assert_eq!(s.restart_reset_after, Duration::from_secs(60));
    assert_eq!(s.unhealthy_threshold, Duration::from_secs(300));
    assert_eq!(s.keepalive_url, None);
    assert_eq!(s.heartbeat_interval, Duration::from_secs(300));
    assert_eq!(s.rust_log, "info");
}

#[test]
fn media_recipients_override_and_dedup() {
    let c = load_ok(&with_token("ADMIN_USER_IDS=5,6\nOWNER_USER_ID=5\n"));
    assert_eq!(c.settings.recipients(), [5, 6]);
    let c = load_ok(&with_token(
        "ADMIN_USER_IDS=5\nMEDIA_RECIPIENTS='-100123, 7,7'\n",
    ));
    assert_eq!(c.settings.recipients(), [-100123, 7]);
    assert!(c.settings.is_admin(5) && !c.settings.is_admin(7));
    let c = load_ok(&with_token("ALLOWED_USER_IDS=1\nOWNER_USER_ID=2\n"));
    assert!(c.settings.is_allowed(1) && c.settings.is_allowed(2) && !c.settings.is_allowed(3));
}

#[test]
fn every_bad_value_is_reported_with_its_line() {
    let cases: &[(&str, &str)] = &[
        ("TELEGRAM_API_URL=ftp://x", "TELEGRAM_API_URL: \"ftp://x\" is not a URL"),
        ("TELEGRAM_API_URL=https://", "TELEGRAM_API_URL: \"https://\" is not a URL"),
        ("CLEAN_UP_MEDIADIR=maybe", "CLEAN_UP_MEDIADIR: \"maybe\" is not a boolean"),
        ("BOT_TOKEN_MONITOR_INTERVAL=-1", "BOT_TOKEN_MONITOR_INTERVAL: \"-1\" is not a whole number"),
        ("CONFIG_RELOAD_DEBOUNCE=2s", "CONFIG_RELOAD_DEBOUNCE: \"2s\" is not a whole number"),
        ("ALLOWED_USER_IDS=1,bob", "ALLOWED_USER_IDS: not a comma-separated list of numeric Telegram ids: entry #2 \"bob\""),
        ("ADMIN_USER_IDS=x", "ADMIN_USER_IDS: not a comma-separated list"),
        ("OWNER_USER_ID=@me", "OWNER_USER_ID: \"@me\" is not a numeric Telegram id"),
        ("MEDIA_RECIPIENTS=1;2", "MEDIA_RECIPIENTS: not a comma-separated list"),
        ("BOT_HANDLER=\"python3 'x\"", "BOT_HANDLER: cannot split into words: unterminated ' quote"),
        ("HANDLER_TIMEOUT_SECS=0", "HANDLER_TIMEOUT_SECS: \"0\" is out of range (1-86400)"),
        ("HANDLER_CONCURRENCY=0", "HANDLER_CONCURRENCY: \"0\" is out of range (1-1024)"),
        ("BOT_HANDLER_MODE=fork", "BOT_HANDLER_MODE: \"fork\" is not a handler mode (exec or persistent)"),
        ("PORT=abc", "PORT: \"abc\" is not a port (1-65535)"),
        ("PORT=0", "PORT: \"0\" is not a port (1-65535)"),
        ("PORT=65536", "PORT: \"65536\" is not a port (1-65535)"),
        ("HEALTH_BIND=localhost", "HEALTH_BIND: \"localhost\" is not an IP address"),
        ("POLL_TIMEOUT_SECS=51", "POLL_TIMEOUT_SECS: \"51\" is out of range (0-50)"),
        ("SEND_RATE_PER_CHAT=-1", "SEND_RATE_PER_CHAT: \"-1\" is not a rate"),
        ("SEND_RATE_PER_BOT=fast", "SEND_RATE_PER_BOT: \"fast\" is not a rate"),
        ("SEND_RATE_PER_BOT=NaN", "SEND_RATE_PER_BOT: \"NaN\" is not a rate"),
        ("SHUTDOWN_TIMEOUT=1.5", "SHUTDOWN_TIMEOUT: \"1.5\" is not a whole number"),
        ("RESTART_DELAY=x", "RESTART_DELAY: \"x\" is not a whole number"),
        ("RESTART_MAX_DELAY=100", "RESTART_MAX_DELAY: 100 ms is below RESTART_DELAY (5000 ms)"),
        ("MAX_RESTARTS=4294967296", "MAX_RESTARTS: \"4294967296\" is out of range"),
        ("RESTART_RESET_AFTER_SECS=x", "RESTART_RESET_AFTER_SECS: \"x\" is not a whole number"),
        ("UNHEALTHY_THRESHOLD_SECS=0", "UNHEALTHY_THRESHOLD_SECS: \"0\" is out of range"),
        ("KEEPALIVE_URL=example.org", "KEEPALIVE_URL: \"example.org\" is not a URL"),
        ("HEARTBEAT_INTERVAL_SECS=0", "HEARTBEAT_INTERVAL_SECS: \"0\" is out of range"),
        ("HEALTH_AUTH_TOKEN=\"has space\"", "HEALTH_AUTH_TOKEN: the value is invalid"),
    ];
    for (line, expected) in cases {
        let message = load_err(&format!("# settings\n{line}\nTELEGRAM_BOT_TOKENS={T1}\n"));
        assert!(
            message.contains(&format!(".env:2: {expected}")),
            "{line}: {message}"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let e = load(&with_token("PORT=x\nPOLL_TIMEOUT_SECS=99\n")).expect_err("invalid");
    assert_eq!(e.problems().len(), 2);
    assert_eq!(
        e.to_string(),
        ".env:2: PORT: \"x\" is not a port (1-65535)\n\
         .env:3: POLL_TIMEOUT_SECS: \"99\" is out of range (0-50)"
    );
    // A missing token is listed too when other values are bad.
    let message = load_err("PORT=x\n");
    assert!(message.contains("no bot token"), "{message}");
}

#[test]
fn token_errors_name_the_position_never_the_value() {
    let message = load_err(&format!(
        "PORT=1\nTELEGRAM_BOT_TOKENS={T1},123:bad/SECRETVALUE\n"
    ));
    assert_eq!(
        message,
        ".env:2: TELEGRAM_BOT_TOKENS: token #2 is malformed: \
         the secret after ':' must be letters, digits, '_' or '-'"
    );
    assert!(!message.contains("SECRETVALUE"));
    assert_eq!(
        load("TELEGRAM_BOT_TOKENS=nocolon\n")
            .expect_err("bad")
            .problems()[0]
            .message,
        "token #1 is malformed: expected <bot id>:<secret>, found no ':'"
    );
}

#[test]
fn no_token_is_an_error() {
    assert_eq!(
        load_err("PORT=8001\n"),
        "no bot token: set TELEGRAM_BOT_TOKENS in .env (see .env.example)"
    );
    assert_eq!(
        load_err("TELEGRAM_BOT_TOKENS=' , ,'\n"),
        "no bot token: set TELEGRAM_BOT_TOKENS in .env (see .env.example)"
    );
}

#[test]
fn duplicate_tokens_are_warned_and_ignored() {
    let c = load_ok(&format!("\nTELEGRAM_BOT_TOKENS={T1},{T2},{T1}\n"));
    assert_eq!(c.tokens.len(), 2);
    assert_eq!(
        c.warnings,
        [".env:2: TELEGRAM_BOT_TOKENS: token #3 repeats token #1; ignored"]
    );
    let c = load_ok(&format!("TELEGRAM_BOT_TOKENS={T1},111111:XyzSecret\n"));
    assert_eq!(c.tokens.len(), 1);
    assert!(c.warnings[0].contains("token #2 is another token of the same bot (id 111111)"));
    assert!(!c.warnings[0].contains("XyzSecret"));
}

#[test]
fn the_alias_is_accepted_and_the_plural_wins() {
    let c = load_ok(&format!("TELEGRAM_BOT_TOKEN={T2}\n"));
    assert_eq!(c.tokens[0].expose(), T2);
    let c = load_ok(&format!(
        "TELEGRAM_BOT_TOKEN={T2}\nTELEGRAM_BOT_TOKENS={T1}\n"
    ));
    assert_eq!(c.tokens.len(), 1);
    assert_eq!(c.tokens[0].expose(), T1);
    assert_eq!(
        c.warnings,
        [".env:1: TELEGRAM_BOT_TOKEN is ignored: TELEGRAM_BOT_TOKENS is set too"]
    );
}

#[test]
fn falls_back_to_the_environment() {
    let env = |key: &str| match key {
        "TELEGRAM_BOT_TOKENS" => Some(T2.to_string()),
        "PORT" => Some("9100".to_string()),
        "POLL_TIMEOUT_SECS" => Some("10".to_string()),
        "SOME_UNKNOWN" => Some("not taken".to_string()),
        _ => None,
    };
    let c = Config::from_text("PORT=9200\n", ".env", &env).expect("loads");
    assert_eq!(c.tokens[0].expose(), T2);
    assert_eq!(c.settings.port, 9200, "the file beats the environment");
    assert_eq!(c.settings.poll_timeout_secs, 10);
    assert_eq!(c.get("POLL_TIMEOUT_SECS"), Some("10"));
    assert_eq!(
        c.get("SOME_UNKNOWN"),
        None,
        "unknown env keys are not taken"
    );
    assert_eq!(
        c.entries(),
        [
            ("POLL_TIMEOUT_SECS".to_string(), "10".to_string()),
            ("PORT".to_string(), "9200".to_string()),
            ("TELEGRAM_BOT_TOKENS".to_string(), T2.to_string()),
        ]
    );
    assert_eq!(c.setting_count(), 3);

    // The file's alias is not mixed with the environment's tokens.
    let c = Config::from_text(&format!("TELEGRAM_BOT_TOKEN={T1}\n"), ".env", &env).expect("ok");
    assert_eq!(c.tokens.len(), 1);
    assert_eq!(c.tokens[0].expose(), T1);

    let bad = |key: &str| (key == "PORT").then(|| "http".to_string());
    let e = Config::from_text(&with_token(""), ".env", &bad).expect_err("bad env");
    assert_eq!(
        e.to_string(),
        "environment: PORT: \"http\" is not a port (1-65535)"
    );
    let e = Settings::from_lookup(&bad).expect_err("bad env");
    assert_eq!(
        e.to_string(),
        "environment: PORT: \"http\" is not a port (1-65535)"
    );
}

#[test]
fn load_reads_files_and_refuses_non_files() {
    let dir = std::env::temp_dir().join(format!("botfleet-config-test-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(".env");
    fs::write(&path, with_token("PORT=8123\n")).expect("write");
    let c = Config::load(&path, &no_env, false).expect("loads");
    assert_eq!(c.settings.port, 8123);

    let missing = dir.join("missing.env");
    let env = |key: &str| (key == "TELEGRAM_BOT_TOKENS").then(|| T1.to_string());
    assert!(Config::load(&missing, &env, true).is_ok());
    let e = Config::load(&missing, &env, false).expect_err("missing on reload");
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");

    let e = Config::load(&dir, &env, true).expect_err("a directory");
    assert!(matches!(e, ConfigError::NotAFile { .. }), "{e}");

    let big = dir.join("big.env");
    fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).expect("write");
    let e = Config::load(&big, &env, true).expect_err("too large");
    assert!(matches!(e, ConfigError::TooLarge { .. }), "{e}");

    let binary = dir.join("binary.env");
    fs::write(&binary, b"A=1\nB=\xff\xfe\x00garbage").expect("write");
    let e = Config::load(&binary, &env, true).expect_err("binary");
    assert!(
        e.to_string()
            .ends_with(":2: a NUL byte: this is not a text file"),
        "{e}"
    );
    fs::write(&binary, b"A=1\n\nB=\xff\xfe").expect("write");
    let e = Config::load(&binary, &env, true).expect_err("binary");
    assert!(
        e.to_string()
            .ends_with(":3: invalid UTF-8: this is not a text file"),
        "{e}"
    );
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn rejects_garbage_empty_files_and_bad_syntax() {
    assert!(load_err("\0\0\0").starts_with(".env:1: a NUL byte"));
    assert_eq!(
        load_err(""),
        "no bot token: set TELEGRAM_BOT_TOKENS in .env (see .env.example)"
    );
    assert_eq!(
        load_err(&with_token("PORT=1\nBOT_HANDLER='python3 x.py\nA=1\n")),
        ".env:3: BOT_HANDLER: cannot parse this line (unterminated quote)"
    );
    let message = load_err(&format!("A=1\nHEALTH_AUTH_TOKEN=\"{AUTH}\"trailing junk\n"));
    assert!(
        message.starts_with(".env:2: HEALTH_AUTH_TOKEN: cannot parse this line"),
        "{message}"
    );
    assert!(
        !message.contains(AUTH) && !message.contains("junk"),
        "{message}"
    );
    let message = load_err("A=1\n\n\n\nthis is not a setting\n");
    assert!(
        message.starts_with(".env:5: cannot parse this line (expected KEY=value"),
        "{message}"
    );
    let message = load_err("A=\"multi\nline\"\nMY_SECRET=two words secret\n");
    assert!(
        message.starts_with(".env:3: MY_SECRET: cannot parse this line"),
        "{message}"
    );
    assert!(!message.contains("secret\n") && !message.contains("words"));
}

#[test]
fn dotenv_syntax_is_honoured() {
    let c = load_ok(&format!(
        "\u{feff}TELEGRAM_BOT_TOKENS={T1}\r\nA = 'single $X'\r\nB=\"dq\\n\"\nexport C=1 # note\nD=${{C}}2\nE=last-no-newline "
    ));
    assert_eq!(c.get("A"), Some("single $X"));
    assert_eq!(c.get("B"), Some("dq\n"));
    assert_eq!(c.get("C"), Some("1"));
    assert_eq!(c.get("D"), Some("12"));
    assert_eq!(c.get("E"), Some("last-no-newline"));
    assert_eq!(c.line_of("C"), Some(4));
    assert_eq!(c.line_of("E"), Some(6));
}

#[test]
fn the_last_assignment_wins_with_a_warning() {
    let c = load_ok(&with_token("PORT=1000\n# x\nPORT = 2000\n"));
    assert_eq!(c.settings.port, 2000);
    assert_eq!(c.line_of("PORT"), Some(4));
    assert_eq!(
        c.warnings,
        [".env:4: PORT is set again (first on line 2); the last value wins"]
    );
    let e = load(&with_token("PORT=x\nPORT=y\n")).expect_err("bad");
    assert_eq!(e.to_string(), ".env:3: PORT: \"y\" is not a port (1-65535)");
}

#[test]
fn near_misses_are_warned_and_unknown_keys_kept() {
    let c = load_ok(&with_token(
        "\nTELEGRAM_BOT_TOKNES=x\nport=1\nHOST=db\nOPENAI_API_KEY=k\n",
    ));
    assert_eq!(
        c.warnings[..2],
        [
            ".env:3: unknown setting TELEGRAM_BOT_TOKNES; did you mean TELEGRAM_BOT_TOKENS?",
            ".env:4: unknown setting port; did you mean PORT?",
        ]
    );
    assert!(c.warnings[2].starts_with(".env:3: TELEGRAM_BOT_TOKNES looks like it holds"));
    assert_eq!(c.warnings.len(), 3);
    assert_eq!(c.get("HOST"), Some("db"));
    assert_eq!(c.get("TELEGRAM_BOT_TOKNES"), Some("x"));
    assert_eq!(edit_distance("KITTEN", "SITTING"), 3);
    assert_eq!(near_miss("ADMIN_USER_ID"), Some("ADMIN_USER_IDS"));
    assert_eq!(near_miss("HANDLER"), None);
}

#[test]
fn shell_syntax_in_the_handler_is_warned() {
    let c = load_ok(&with_token("BOT_HANDLER=\"a | b\"\n"));
    assert_eq!(c.settings.handler.as_deref().map(<[String]>::len), Some(3));
    assert!(c.warnings[0].starts_with(".env:2: BOT_HANDLER: \"|\" is passed to the program"));
}

#[test]
fn secrets_never_appear_in_any_output() {
    let text = format!(
        "TELEGRAM_BOT_TOKENS={T1},{T2}\nHEALTH_AUTH_TOKEN={AUTH}\nMY_API_KEY=k3y-SECRET\n\
         DB_PASSWORD=pw-SECRET\nKEEPALIVE_URL=https://user:url-SECRET@example.org/x\n"
    );
    let c = load_ok(&text);
    let secrets = [
        "AAAAsecretONE",
        "BBBBsecretTWO",
        AUTH,
        "k3y-SECRET",
        "pw-SECRET",
        "url-SECRET",
    ];
    let mut outputs = vec![
        format!("{c:?}"),
        format!("{:?}", c.settings),
        format!("{:#?}", c),
        c.warnings.join("\n"),
    ];
    let changed = format!(
        "TELEGRAM_BOT_TOKENS={T2}\nHEALTH_AUTH_TOKEN=other-AUTH-SECRET\nMY_API_KEY=new-k3y-SECRET\n"
    );
    let d = diff(&c, &load_ok(&changed));
    outputs.extend(d.render());
    outputs.push(format!("{d:?}"));
    // Errors about secret keys.
    for bad in [
        format!("TELEGRAM_BOT_TOKENS={T1},99:AAAAsecretONE/x\n"),
        format!("TELEGRAM_BOT_TOKENS={T1}\nHEALTH_AUTH_TOKEN=\"{AUTH} x\"\n"),
        format!("TELEGRAM_BOT_TOKENS={T1}\nHEALTH_AUTH_TOKEN={AUTH} x\n"),
        format!("TELEGRAM_BOT_TOKENS='{T1}\n"),
        format!("TELEGRAM_BOT_TOKENS={T1} {T2}\n"),
    ] {
        let e = load(&bad).expect_err("invalid");
        outputs.push(e.to_string());
        outputs.push(format!("{e:?}"));
    }
    for output in &outputs {
        for secret in secrets {
            assert!(!output.contains(secret), "{secret} leaked in {output}");
        }
    }
    assert_eq!(redact("TELEGRAM_BOT_TOKENS", "x"), "***");
    assert_eq!(redact("HEALTH_AUTH_TOKEN", "x"), "***");
    assert_eq!(redact("stripe_secret", "x"), "***");
    assert_eq!(redact("PORT", "8001"), "8001");
    assert_eq!(redact("BOT_TOKEN_MONITOR_INTERVAL", "2000"), "2000");
    assert_eq!(
        redact("KEEPALIVE_URL", "https://u:p@h.example/a@b"),
        "https://u:***@h.example/a@b"
    );
    assert_eq!(
        redact("KEEPALIVE_URL", "https://h.example/"),
        "https://h.example/"
    );
}

#[test]
fn secret_keys_are_classified() {
    for key in [
        "TELEGRAM_BOT_TOKENS",
        "HEALTH_AUTH_TOKEN",
        "OPENAI_API_KEY",
        "db_password",
        "AWS_SECRET_ACCESS_KEY",
        "GOOGLE_CREDENTIALS",
        "PASSPHRASE",
    ] {
        assert!(is_secret_key(key), "{key}");
    }
    for key in [
        "PORT",
        "BOT_TOKEN_MONITOR_INTERVAL",
        "KEEPALIVE_URL",
        "RUST_LOG",
    ] {
        assert!(!is_secret_key(key), "{key}");
    }
    assert!(is_supervisor_key("PORT") && !is_worker_key("PORT"));
    assert!(is_worker_key("BOT_HANDLER") && !is_supervisor_key("BOT_HANDLER"));
    assert!(is_worker_key("RUST_LOG") && is_supervisor_key("RUST_LOG"));
    assert!(is_worker_key("OPENAI_API_KEY"));
    assert!(!is_worker_key("TELEGRAM_BOT_TOKENS"));
}

#[test]
fn the_version_is_stable_and_changes_with_values() {
    assert_eq!(fnv1a_64(*b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a_64(*b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a_64(*b"foobar"), 0x8594_4171_f739_67e8);
    let text = with_token("PORT=8001\nZ_EXTRA=1\n");
    let first = load_ok(&text);
    let second = load_ok(&text);
    assert_eq!(first.version(), second.version());
    assert_eq!(first.version(), "2fbdc4db8f19");
    assert_eq!(first.version().len(), 12);
    assert!(first
        .version()
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    // Order and comments do not matter; values do.
    let reordered = load_ok(&format!(
        "# c\nZ_EXTRA=1\nPORT=8001\nTELEGRAM_BOT_TOKENS={T1}\n"
    ));
    assert_eq!(reordered.version(), first.version());
    let changed = load_ok(&with_token("PORT=8002\nZ_EXTRA=1\n"));
    assert_ne!(changed.version(), first.version());
}

#[test]
fn diffs_render_as_the_log_lines() {
    let old = load_ok(&format!(
        "TELEGRAM_BOT_TOKENS={T1}\nPORT=8001\nGONE=1\nHEALTH_AUTH_TOKEN=old-{AUTH}\n"
    ));
    let new = load_ok(&format!(
        "TELEGRAM_BOT_TOKENS={T1},{T2}\nPORT=8002\nNEW_KEY_NAME=v\nRUST_LOG=debug\nHEALTH_AUTH_TOKEN={AUTH}\n"
    ));
    let d = diff(&old, &new);
    assert!(!d.is_empty());
    assert_eq!(
        d.render(),
        [
            "+ Added NEW_KEY_NAME = ***",
            "+ Added RUST_LOG = debug",
            "- Removed GONE",
            "~ Modified HEALTH_AUTH_TOKEN = *** → ***",
            "~ Modified PORT = 8001 → 8002",
            "~ Modified TELEGRAM_BOT_TOKENS = *** → ***",
        ]
    );
    assert_eq!(
        d.changed_keys(),
        [
            "GONE",
            "HEALTH_AUTH_TOKEN",
            "NEW_KEY_NAME",
            "PORT",
            "RUST_LOG",
            "TELEGRAM_BOT_TOKENS"
        ]
    );
    assert_eq!(d.modified[1], ("PORT".into(), "8001".into(), "8002".into()));
    assert!(diff(&old, &old.clone()).is_empty());
}

#[test]
fn logical_lines_follow_dotenvy() {
    let text = "A=1\n# c 'x\nB=\"x\ny\"\n\nC='z\n";
    assert_eq!(logical_lines(text), Err(6));
    let lines = logical_lines("A=1\nB=\"x\ny\"\nC=2\n").expect("complete");
    let starts: Vec<usize> = lines.iter().map(|(l, _)| *l).collect();
    assert_eq!(starts, [1, 2, 4]);
}

#[test]
fn every_setting_is_documented() {
    let example = include_str!("../../.env.example");
    let reference = include_str!("../../docs/configuration.md");
    for key in KNOWN_KEYS {
        assert!(example.contains(key), ".env.example lacks {key}");
        assert!(
            reference.contains(&format!("| `{key}` |")),
            "docs lack {key}"
        );
    }
    // Copying the example as it is gives the clear "no bot token" error.
    assert!(matches!(load(example), Err(ConfigError::NoToken { .. })));
}

#[test]
fn workers_never_get_tokens_under_another_name() {
    let c = load_ok(&format!(
        "TELEGRAM_BOT_TOKENS={T1}\ntelegram_bot_tokens={T2}\nCOPY=\"x ${{TELEGRAM_BOT_TOKENS}}\"\n\
         HEALTH_AUTH_TOKEN={AUTH}\nALSO={AUTH}\nFINE=1\n"
    ));
    let keys: Vec<String> = c.worker_env().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["FINE"]);
    assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
    assert!(c
        .warnings
        .iter()
        .any(|w| w.starts_with(".env:3: COPY looks like it holds")));
}

#[test]
fn a_short_health_auth_token_is_warned_without_showing_it() {
    let c = load_ok(&with_token("HEALTH_AUTH_TOKEN=abc123\n"));
    assert_eq!(c.settings.health_auth_token.as_deref(), Some("abc123"));
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with(".env:2: HEALTH_AUTH_TOKEN: the value is short (6 characters)")
    );
    assert!(!c.warnings[0].contains("abc123"));
}

#[test]
fn a_secret_pasted_as_a_key_is_masked_in_the_diff_and_in_errors() {
    let no_env = |_: &str| None;
    let secret = "eyJKSi0F1TxqG5abcdefg";
    let base = Config::from_text("TELEGRAM_BOT_TOKENS=1:base\n", ".env", &no_env).unwrap(); // the literal parses
    let text = format!("TELEGRAM_BOT_TOKENS=123:{secret}\n{secret}=1\n");
    let c = Config::from_text(&text, ".env", &no_env).unwrap(); // a valid file
    let lines = diff(&base, &c).render();
    assert!(lines.iter().all(|l| !l.contains(secret)), "{lines:?}");
    assert!(lines.contains(&"+ Added *** = 1".to_string()), "{lines:?}");

    // The same key on a line that does not parse is not named.
    let text = format!("TELEGRAM_BOT_TOKENS=123:{secret}\n{secret}=a b\n");
    let e = Config::from_text(&text, ".env", &no_env)
        .unwrap_err()
        .to_string(); // a syntax error
    assert!(!e.contains(secret), "{e}");
    assert!(e.starts_with(".env:2: cannot parse this line"), "{e}");
}

#[test]
fn a_url_with_a_port_is_shown_in_the_diff() {
    let old = load_ok(&with_token("TELEGRAM_API_URL=http://127.0.0.1:8081\n"));
    let new = load_ok(&with_token("TELEGRAM_API_URL=http://127.0.0.1:8082\n"));
    assert_eq!(
        diff(&old, &new).render(),
        ["~ Modified TELEGRAM_API_URL = http://127.0.0.1:8081 → http://127.0.0.1:8082"]
    );
}
