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
const SCRIPT: &[&str] = &["/start", "/ping", "/whoami", "/status", "hello!", "/help"];

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
         ADMIN_USER_IDS=101\nPORT=8001\nSHUTDOWN_TIMEOUT=3000\n",
        tokens.join(","),
        sandbox.url()
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
                demo_line(&format!("@demo{b}_bot → {who}: {text}"));
            }
        }
        step += 1;
        std::thread::sleep(Duration::from_millis(1800));
    }
}
