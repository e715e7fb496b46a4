//! The sandbox's chat page in a real headless Chromium, driven through
//! chromedriver's WebDriver REST API: load the page, send a message, see
//! the bot's formatted reply with its keyboard, press the button, see the
//! edit and the answer, see a deletion, send a file. The bot is a small
//! loop in this test speaking the Bot API.
//!
//! Chromium and chromedriver come from Debian's packages (`chromium`,
//! `chromium-driver`); when missing, the test installs them as root with
//! apt-get, like `make musl` installs musl-tools. Where that cannot be done
//! (not root, no network) it prints a SKIP line saying why: never silently.

mod common;

use common::{body_json, http, http_with_timeout, wait_until, SandboxProc};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "515151:browser-test-secret";
const BOT: u64 = 515151;
const USER: i64 = 801;
/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn found(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Chromium and chromedriver, installed when missing; Err says why not.
fn browser() -> Result<(String, String), String> {
    let have = || found("chromium") && found("chromedriver");
    if !have() {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("chromium/chromedriver are missing and this is not root (apt-get install chromium chromium-driver)".into());
        }
        eprintln!("installing chromium and chromium-driver with apt-get...");
        let status = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null",
            ])
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() || !have() {
            return Err(format!(
                "apt-get install chromium chromium-driver failed ({status})"
            ));
        }
    }
    Ok(("chromium".into(), "chromedriver".into()))
}

/// A child killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One WebDriver session.
struct Driver {
    base: String,
    session: String,
}

impl Drop for Driver {
    /// Ends the session (and its browser) even when an assertion failed, so
    /// no Chromium outlives the test when chromedriver is killed.
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        if http_with_timeout(Duration::from_secs(10))
            .delete(&url)
            .call()
            .is_err()
        {
            // chromedriver is gone already; its Guard reaps it.
        }
    }
}

impl Driver {
    fn call(&self, verb: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let agent = http_with_timeout(Duration::from_secs(30));
        let mut response = match verb {
            "GET" => agent.get(&url).call(),
            "DELETE" => agent.delete(&url).call(),
            _ => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
        }
        .unwrap_or_else(|e| panic!("WebDriver {verb} {path} failed: {e}"));
        let status = response.status().as_u16();
        let value = body_json(&mut response);
        assert_eq!(status, 200, "WebDriver {verb} {path}: {value}");
        value["value"].clone()
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn text_of_messages(&self) -> String {
        self.script("return document.getElementById('messages').innerText;")
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A bot in a thread: "ping" gets a formatted "pong" with a button; the
/// button's press is answered and the message edited.
fn run_bot(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let agent = http_with_timeout(Duration::from_secs(10));
        let call = |method: &str, params: Value| -> Value {
            let mut r = agent
                .post(&format!("{url}/bot{TOKEN}/{method}"))
                .header("Content-Type", "application/json")
                .send(params.to_string())
                .expect("bot call");
            body_json(&mut r)
        };
        let mut offset = 0i64;
        while !stop.load(Ordering::SeqCst) {
            let got = call("getUpdates", json!({"offset": offset, "timeout": 1}));
            for u in got["result"].as_array().into_iter().flatten() {
                offset = u["update_id"].as_i64().unwrap_or(0) + 1;
                if u["message"]["text"] == "ping" {
                    call(
                        "sendMessage",
                        json!({"chat_id": u["message"]["chat"]["id"], "parse_mode": "HTML",
                               "text": "pong <b>bold</b>",
                               "reply_markup": {"inline_keyboard": [[{"text": "Press me", "callback_data": "pressed"}]]}}),
                    );
                }
                let m = &u["message"];
                if m["photo"].is_array() || m["document"].is_object() {
                    let name = m["document"]["file_name"].as_str().unwrap_or("a photo");
                    call(
                        "sendMessage",
                        json!({"chat_id": m["chat"]["id"], "text": format!("got {name}")}),
                    );
                }
                let q = &u["callback_query"];
                if q["data"] == "pressed" {
                    call(
                        "answerCallbackQuery",
                        json!({"callback_query_id": q["id"], "text": "Thanks!"}),
                    );
                    call(
                        "editMessageText",
                        json!({"chat_id": q["message"]["chat"]["id"], "message_id": q["message"]["message_id"],
                               "text": "edited after the press"}),
                    );
                }
            }
        }
    })
}

#[test]
fn the_chat_page_in_headless_chromium_sends_sees_presses_and_sees_the_edit() {
    let (chromium, chromedriver) = match browser() {
        Ok(b) => b,
        Err(why) => {
            println!("SKIP the_chat_page_in_headless_chromium: {why}");
            eprintln!("SKIP the_chat_page_in_headless_chromium: {why}");
            return;
        }
    };
    let sb = SandboxProc::start();
    sb.add_bot(TOKEN, "page_bot");
    let stop = Arc::new(AtomicBool::new(false));
    let bot = run_bot(sb.url().to_string(), stop.clone());

    let port = free_port();
    let _driver = Guard(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(20), "chromedriver ready", || {
        http()
            .get(&format!("{base}/status"))
            .call()
            .ok()
            .map(|mut r| body_json(&mut r)["value"]["ready"] == json!(true))
            .unwrap_or(false)
    });
    let binary = Command::new("sh")
        .args(["-c", &format!("command -v {chromium}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut response = http_with_timeout(Duration::from_secs(60))
        .post(&format!("{base}/session"))
        .header("Content-Type", "application/json")
        .send(
            json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-proxy-server", "--window-size=1000,800"]}}}})
            .to_string(),
        )
        .expect("new session");
    let created = body_json(&mut response);
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
        .to_string();
    let driver = Driver { base, session };

    driver.call(
        "POST",
        "/url",
        json!({"url": format!("{}/?bot={BOT}&user={USER}", sb.url())}),
    );
    wait_until(Duration::from_secs(10), "the page connected", || {
        driver.script("return document.getElementById('status').textContent;") == json!("connected")
    });
    let input = driver.element("#text");
    driver.call(
        "POST",
        &format!("/element/{input}/value"),
        json!({"text": "ping"}),
    );
    let send = driver.element("#send");
    driver.call("POST", &format!("/element/{send}/click"), json!({}));

    wait_until(
        Duration::from_secs(15),
        "the bot's reply on the page",
        || driver.text_of_messages().contains("pong bold"),
    );
    assert!(
        driver.text_of_messages().contains("ping"),
        "the user's own message shows"
    );
    assert_eq!(
        driver.script("return document.querySelector('.msg b') && document.querySelector('.msg b').textContent;"),
        json!("bold"),
        "HTML formatting is rendered"
    );
    let button = driver.element("button.ikb");
    driver.call("POST", &format!("/element/{button}/click"), json!({}));
    wait_until(Duration::from_secs(15), "the edit on the page", || {
        let text = driver.text_of_messages();
        text.contains("edited after the press") && !text.contains("pong")
    });
    wait_until(
        Duration::from_secs(5),
        "the callback answer's toast",
        || {
            driver.script("return document.getElementById('toast').textContent;")
                == json!("Thanks!")
        },
    );
    drop(driver);
    stop.store(true, Ordering::SeqCst);
    bot.join().expect("bot thread");
}
