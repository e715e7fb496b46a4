//! python-telegram-bot against the sandbox, end to end: its own style of
//! echo-with-buttons bot (a /start that offers an inline keyboard, a
//! callback handler that answers and edits, an echo of plain text) pointed
//! at the sandbox with `base_url`, driven through the control API.
//!
//! python-telegram-bot is installed by this test into a virtual
//! environment under cargo's target tmp dir (kept between runs, so only the
//! first run pays for the install); python3-venv comes from apt when
//! missing and this is root. Where Python or the install is not available,
//! it prints a SKIP line saying why: never silently.

mod common;

use common::{wait_until, SandboxProc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "616161:ptb-test-secret";
const BOT: u64 = 616161;
const USER: i64 = 901;

const BOT_SCRIPT: &str = r#"
import sys
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import (Application, CallbackQueryHandler, CommandHandler,
                          ContextTypes, MessageHandler, filters)


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    keyboard = [[InlineKeyboardButton("Option 1", callback_data="1"),
                 InlineKeyboardButton("Option 2", callback_data="2")]]
    await update.message.reply_text("Please <b>choose</b>:", parse_mode="HTML",
                                    reply_markup=InlineKeyboardMarkup(keyboard))


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer()
    await query.edit_message_text(text=f"Selected option: {query.data}")


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.message.reply_text(update.message.text)


def main() -> None:
    base, token = sys.argv[1], sys.argv[2]
    app = (Application.builder().token(token)
           .base_url(f"{base}/bot").base_file_url(f"{base}/file/bot").build())
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(button))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    app.run_polling(allowed_updates=Update.ALL_TYPES, timeout=1)


if __name__ == "__main__":
    main()
"#;

/// A child killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))
    }
}

/// The venv's python with python-telegram-bot importable; Err says why not.
fn python_with_ptb(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin/python");
    if run(python.to_str().unwrap_or(""), &["-c", "import telegram"]).is_ok() {
        return Ok(python);
    }
    run("python3", &["--version"]).map_err(|e| format!("no python3: {e}"))?;
    let venv_text = venv.to_str().ok_or("the venv path is not UTF-8")?;
    if run("python3", &["-m", "venv", venv_text]).is_err() {
        // Debian's python3 needs python3-venv for this.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root {
            return Err(
                "python3 -m venv failed and this is not root to apt-get install python3-venv"
                    .into(),
            );
        }
        run(
            "sh",
            &["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null"],
        )?;
        run("python3", &["-m", "venv", venv_text])?;
    }
    eprintln!("installing python-telegram-bot into {venv_text}...");
    run(
        venv.join("bin/pip").to_str().unwrap_or(""),
        &[
            "install",
            "-q",
            "--disable-pip-version-check",
            // Bounded when the package index cannot be reached.
            "--timeout",
            "20",
            "--retries",
            "1",
            "python-telegram-bot>=21,<23",
        ],
    )?;
    run(python.to_str().unwrap_or(""), &["-c", "import telegram"])?;
    Ok(python)
}

fn sent_where(sb: &SandboxProc, f: impl Fn(&Value) -> bool) -> Option<Value> {
    sb.sent(BOT).into_iter().find(|m| f(m))
}

#[test]
fn python_telegram_bots_echo_with_buttons_bot_runs_end_to_end() {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ptb-venv");
    let python = match python_with_ptb(&venv) {
        Ok(p) => p,
        Err(why) => {
            println!("SKIP python_telegram_bot end to end: {why}");
            eprintln!("SKIP python_telegram_bot end to end: {why}");
            return;
        }
    };
    let sb = SandboxProc::start();
    sb.add_bot(TOKEN, "ptb_bot");
    let dir = common::temp_dir();
    let script = dir.join("bot.py");
    std::fs::write(&script, BOT_SCRIPT).expect("write bot.py");
    let _bot = Guard(
        Command::new(&python)
            .arg(&script)
            .args([sb.url(), TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python starts"),
    );
    wait_until(
        Duration::from_secs(30),
        "python-telegram-bot polling",
        || {
            sb.bot_stats(BOT)["calls"]["getUpdates"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    );
    sb.send_text(BOT, USER, USER, "/start");
    wait_until(Duration::from_secs(20), "the keyboard from /start", || {
        sent_where(&sb, |m| m["text"] == "Please choose:").is_some()
    });
    let offer = sent_where(&sb, |m| m["text"] == "Please choose:").expect("found");
    assert_eq!(offer["entities"][0]["type"], "bold", "{offer}");
    assert_eq!(
        offer["reply_markup"]["inline_keyboard"][0][1]["callback_data"], "2",
        "{offer}"
    );
    let pressed = sb.control_post(
        &format!("bots/{BOT}/press"),
        json!({"user_id": USER, "message_id": offer["message_id"], "data": "2"}),
    );
    assert!(pressed["callback_query_id"].is_string());
    wait_until(Duration::from_secs(20), "the edit after the press", || {
        sent_where(&sb, |m| {
            m["method"] == "editMessageText" && m["text"] == "Selected option: 2"
        })
        .is_some()
    });
    sb.send_text(BOT, USER, USER, "echo this");
    wait_until(Duration::from_secs(20), "the echo", || {
        sent_where(&sb, |m| m["text"] == "echo this").is_some()
    });
    let calls = &sb.bot_stats(BOT)["calls"];
    assert!(
        calls["answerCallbackQuery"].as_u64().unwrap_or(0) >= 1,
        "{calls}"
    );
    assert!(calls["getMe"].as_u64().unwrap_or(0) >= 1, "{calls}");
}
