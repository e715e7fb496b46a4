//! The command line: help, version, usage errors and `botfleet check`
//! against the sandbox (issue: foundation).

mod common;

use common::{bin, temp_dir, SandboxProc};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("TELEGRAM_BOT_TOKENS")
        .env_remove("TELEGRAM_BOT_TOKEN")
        .output()
        .expect("botfleet runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn help_lists_every_command_and_version_prints() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out);
    for cmd in [
        "run", "check", "status", "health", "stop", "reload", "sandbox",
    ] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "--help names {cmd}:\n{help}"
        );
        let sub = run(&[cmd, "--help"]);
        assert_eq!(sub.status.code(), Some(0), "{cmd} --help");
        assert!(
            text(&sub).contains(&format!("botfleet {cmd}")),
            "{cmd} --help says its usage"
        );
    }
    let v = run(&["--version"]);
    assert_eq!(v.status.code(), Some(0));
    assert!(text(&v).starts_with("botfleet "));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["run", "--bogus"],
        &["health", "--url", "u", "--port", "1"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}

#[test]
fn check_validates_offline_and_calls_get_me_online() {
    let sandbox = SandboxProc::start();
    sandbox.add_bot("5101:check-secret-aaa", "alpha_bot");
    sandbox.add_bot("5102:check-secret-bbb", "beta_bot");
    let dir = temp_dir();
    let env = dir.join(".env");
    let write = |tokens: &str| {
        std::fs::write(
            &env,
            format!(
                "TELEGRAM_BOT_TOKENS={tokens}\nTELEGRAM_API_URL={}\nSTATE_DIR={}\n",
                sandbox.url(),
                dir.join("state").display()
            ),
        )
        .expect("write .env")
    };
    write("5101:check-secret-aaa,5102:check-secret-bbb");
    let env_s = env.to_str().expect("utf-8 path");

    let out = run(&["check", "--offline", "--env-file", env_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("2 token(s)"));

    let out = run(&["check", "--env-file", env_s]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("@alpha_bot") && t.contains("@beta_bot"), "{t}");
    assert!(t.contains("5101") && t.contains("ok"), "{t}");

    // A token the sandbox does not know: exit 1, the row names the index
    // and bot id, never the secret.
    write("5101:check-secret-aaa,5199:check-secret-zzz");
    let out = run(&["check", "--env-file", env_s]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let bad_row = t
        .lines()
        .find(|l| l.contains("5199"))
        .expect("a row for the bad token");
    assert!(
        bad_row.starts_with("#1") && bad_row.contains("error"),
        "{bad_row}"
    );
    assert!(!t.contains("check-secret"), "no secret in the output: {t}");

    // A bad config: exit 2 with the line, and no secret.
    std::fs::write(
        &env,
        "TELEGRAM_BOT_TOKENS=5101:check-secret-aaa\nPORT=abc\n",
    )
    .expect("write");
    let out = run(&["check", "--offline", "--env-file", env_s]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains(".env:2: PORT: \"abc\" is not a port"), "{t}");
    assert!(!t.contains("check-secret"));
}
