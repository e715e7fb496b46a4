//! `botfleet demo` (what `make run` starts when there is no `.env`): the
//! sandbox Bot API in this process, three demo bots, simulated users whose
//! messages and the bots' replies are printed, and the real supervisor with
//! real worker processes, until Ctrl-C. Its config lives in `target/demo/.env`
//! so a user can edit it live and watch the reload. It must never reach
//! beyond loopback or touch the user's own `.env`.

use crate::config::Config;
use crate::exit;
use crate::sandbox::{Sandbox, SandboxOptions};
use std::path::Path;
use std::time::Duration;

const BOTS: u64 = 3;
const USERS: &[(i64, &str)] = &[(101, "Alice"), (102, "Bob"), (103, "Chen")];
const SCRIPT: &[&str] = &[
    "/start", "/ping", "/counter", "/whoami", "hello!", "/status", "/help",
];
/// The example bot the demo runs when python3 is there (examples/).
const COUNTER_BOT: &str = include_str!("../examples/counter_bot.py");

/// The handler settings of the demo: the Python example bot in persistent
/// mode (buttons that edit their own message), or the built-in echo.
fn handler_settings(dir: &Path) -> String {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let dir = std::fs::create_dir_all(dir)
        .and_then(|()| dir.canonicalize())
        .unwrap_or_else(|_| dir.to_path_buf());
    let script = dir.join("counter_bot.py");
    if !python {
        demo_line("python3 is not installed: the bots answer with the built-in echo instead of examples/counter_bot.py");
        return "BOT_HANDLER=builtin:echo\n".into();
    }
    if let Err(e) = std::fs::write(&script, COUNTER_BOT) {
        demo_line(&format!(
            "cannot write {}: {e}; the bots echo instead",
            script.display()
        ));
        return "BOT_HANDLER=builtin:echo\n".into();
    }
    format!(
        "# examples/counter_bot.py: counts messages, /counter shows buttons.\n\
         BOT_HANDLER=\"python3 {}\"\nBOT_HANDLER_MODE=persistent\n",
        script.display()
    )
}

fn demo_line(text: &str) {
    eprintln!(
        "{} DEMO  [Demo] {text}",
        crate::logging::utc_timestamp(std::time::SystemTime::now())
    );
}

pub fn run(dir: &Path) -> i32 {
    let sandbox = match Sandbox::start(&SandboxOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("botfleet demo: cannot start the sandbox: {e}");
            return exit::FAILURE;
        }
    };
    let mut tokens = vec![];
    for n in 1..=BOTS {
        let token = format!("100000{n}:sandbox-demo-token-{n}");
        if let Err(e) = sandbox.register_bot(&token, &format!("demo{n}_bot")) {
            eprintln!("botfleet demo: cannot register a demo bot: {e}");
            return exit::FAILURE;
        }
        tokens.push(token);
        for (user_id, name) in USERS {
            // Named, so the chat page shows Alice rather than User101.
            let _ = sandbox.name_user(1_000_000 + n, *user_id, name);
        }
    }
    let d = dir.display();
    let env_text = format!(
        "# Written by `botfleet demo`: three demo bots against the built-in sandbox.\n\
         # Edit this file while the demo runs and watch the fleet reload.\n\
         TELEGRAM_BOT_TOKENS={}\nTELEGRAM_API_URL={}\nMEDIA_TMP_LOCATION={d}/media\n\
         STATE_DIR={d}/state\nLOCK_FILE={d}/bot.lock\nPOLL_TIMEOUT_SECS=10\n\
         ADMIN_USER_IDS=101\nPORT=8001\nSHUTDOWN_TIMEOUT=3000\n{}",
        tokens.join(","),
        sandbox.url(),
        handler_settings(dir)
    );
    let env_file = dir.join(".env");
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&env_file, &env_text))
    {
        eprintln!("botfleet demo: cannot write {}: {e}", env_file.display());
        return exit::FAILURE;
    }
    let only_log = |k: &str| {
        if k == "RUST_LOG" {
            std::env::var(k).ok()
        } else {
            None
        }
    };
    let config = match Config::load(&env_file, &only_log, false) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("botfleet demo: {e}");
            return exit::USAGE;
        }
    };
    eprintln!(
        "\nbotfleet demo: {BOTS} bots against the built-in sandbox Bot API at {}.\n\
         Simulated users talk to them below; Ctrl-C stops everything.\n\
         Chat with the bots yourself in a browser: {}/\n\
         The demo's config is {} (edit it live).\n\
         To run your own bots: cp .env.example .env, put your tokens from @BotFather in\n\
         TELEGRAM_BOT_TOKENS, and run `make run` again.\n",
        sandbox.url(),
        sandbox.url(),
        env_file.display()
    );
    let users = std::thread::Builder::new()
        .name("demo-users".into())
        .spawn(move || simulate(sandbox));
    if let Err(e) = users {
        eprintln!("botfleet demo: cannot start the simulated users: {e}");
        return exit::FAILURE;
    }
    crate::control::run_with(config, &env_file)
}

fn simulate(sandbox: Sandbox) {
    let mut seen = [0u64; BOTS as usize];
    let mut step = 0usize;
    std::thread::sleep(Duration::from_millis(1500));
    loop {
        let bot = (step as u64 % BOTS) + 1;
        let (user_id, name) = USERS[step % USERS.len()];
        let text = SCRIPT[step % SCRIPT.len()];
        let bot_id = 1_000_000 + bot;
        match sandbox.inject_text(bot_id, user_id, user_id, text) {
            Ok(_) => demo_line(&format!("{name} → @demo{bot}_bot: {text}")),
            Err(e) => demo_line(&format!("cannot inject a message: {e}")),
        }
        std::thread::sleep(Duration::from_millis(700));
        for b in 1..=BOTS {
            let idx = (b - 1) as usize;
            for m in sandbox.sent_since(1_000_000 + b, seen[idx]) {
                seen[idx] = seen[idx].max(m["seq"].as_u64().unwrap_or(0));
                let to = m["chat_id"].as_i64().unwrap_or(0);
                let who = USERS
                    .iter()
                    .find(|(id, _)| *id == to)
                    .map_or("?", |(_, n)| n);
                let text = m["text"]
                    .as_str()
                    .unwrap_or("(a file)")
                    .replace('\n', " ⏎ ");
                let verb = match m["method"].as_str() {
                    Some(v) if v.starts_with("edit") => "edits its message for",
                    _ => "→",
                };
                demo_line(&format!("@demo{b}_bot {verb} {who}: {text}"));
                // The user presses +1 on a fresh counter, once.
                let message_id = m["message_id"].as_i64().unwrap_or(0);
                if m["method"] == "sendMessage" && text.starts_with("Counter:") {
                    match sandbox.press(1_000_000 + b, to, to, message_id, "inc") {
                        Ok(_) => {
                            demo_line(&format!("{who} presses +1 under @demo{b}_bot's counter"))
                        }
                        Err(e) => demo_line(&format!("cannot press the button: {e}")),
                    }
                }
            }
        }
        step += 1;
        std::thread::sleep(Duration::from_millis(1800));
    }
}
