//! The sandbox Bot API (docs/sandbox.md) through the real binary: the Bot
//! API methods, long polls and their conflicts, files, faults as a raw
//! client sees them, flood limits, 200 concurrent polls and the stats.

mod common;

use common::{body_bytes, body_json, http, http_with_timeout, sha256_hex, wait_until, SandboxProc};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const TOKEN: &str = "123456:test-secret_A";
const BOT: u64 = 123456;

fn sandbox_with_bot() -> SandboxProc {
    let sb = SandboxProc::start();
    assert_eq!(sb.add_bot(TOKEN, "tester_bot"), BOT);
    sb
}

fn ok_result(status: u16, body: &Value, what: &str) -> Value {
    assert_eq!(status, 200, "{what}: expected 200, got {status}: {body}");
    assert_eq!(body["ok"], json!(true), "{what}: not ok: {body}");
    body["result"].clone()
}

fn assert_error(status: u16, body: &Value, code: u16, description: &str) {
    assert_eq!(
        status, code,
        "expected {code} {description}, got {status}: {body}"
    );
    assert_eq!(body["ok"], json!(false), "{body}");
    assert_eq!(body["error_code"], json!(code), "{body}");
    assert_eq!(body["description"], json!(description), "{body}");
}

/// A getUpdates that runs on its own thread, for polls that must overlap.
fn poll_in_background(
    sb: &SandboxProc,
    token: &str,
    params: Value,
) -> std::thread::JoinHandle<(u16, Value, Duration)> {
    let url = format!("{}/bot{token}/getUpdates", sb.url());
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut response = http()
            .post(&url)
            .header("Content-Type", "application/json")
            .send(params.to_string())
            .unwrap_or_else(|e| panic!("background getUpdates failed: {e}"));
        let status = response.status().as_u16();
        (status, body_json(&mut response), started.elapsed())
    })
}

fn wait_for_polls(sb: &SandboxProc, bot_id: u64, n: u64) {
    wait_until(
        Duration::from_secs(5),
        &format!("{n} waiting getUpdates on bot {bot_id}"),
        || sb.bot_stats(bot_id)["current_get_updates"] == json!(n),
    );
}

fn multipart(boundary: &str, fields: &[(&str, &str)], file: (&str, &str, &[u8])) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    let (name, file_name, bytes) = file;
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Bytes that are not all alike, so a wrong offset shows in the hash.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn register_then_get_me_with_any_method_case() {
    let sb = sandbox_with_bot();
    assert_eq!(
        sb.add_bot(TOKEN, "tester_bot"),
        BOT,
        "registering again is a no-op"
    );
    let (status, body) = sb.call(TOKEN, "getMe", json!({}));
    let me = ok_result(status, &body, "getMe");
    assert_eq!(me["id"], json!(BOT));
    assert_eq!(me["is_bot"], json!(true));
    assert_eq!(me["username"], json!("tester_bot"));
    let (status, body) = sb.call(TOKEN, "GETME", json!({}));
    ok_result(status, &body, "GETME");
    // GET with no body works too.
    let mut response = http()
        .get(format!("{}/bot{TOKEN}/getme", sb.url()))
        .call()
        .expect("GET getMe");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(body_json(&mut response)["result"]["id"], json!(BOT));
}

#[test]
fn unknown_token_is_401_malformed_token_or_path_is_404() {
    let sb = sandbox_with_bot();
    let (status, body) = sb.call("999:nope", "getMe", json!({}));
    assert_error(status, &body, 401, "Unauthorized");
    let (status, body) = sb.call("123456:wrong-secret", "getMe", json!({}));
    assert_error(status, &body, 401, "Unauthorized");
    let (status, body) = sb.call("not-a-token", "getMe", json!({}));
    assert_error(status, &body, 404, "Not Found");
    let (status, body) = sb.call(TOKEN, "frobnicate", json!({}));
    assert_error(status, &body, 404, "Not Found: method not found");
    let mut response = http()
        .get(format!("{}/nothing/here", sb.url()))
        .call()
        .expect("GET a bad path");
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(body_json(&mut response)["description"], json!("Not Found"));
}

#[test]
fn injected_text_is_delivered_and_an_offset_confirms_it() {
    let sb = sandbox_with_bot();
    let (u1, m1) = sb.send_text(BOT, 42, 42, "hello");
    let (u2, _) = sb.send_text(BOT, 42, 42, "second");
    assert!(u1 >= 500_000_000, "update ids are large: {u1}");
    assert_eq!(u2, u1 + 1);
    let (status, body) = sb.call(TOKEN, "getUpdates", json!({"timeout": 0}));
    let updates = ok_result(status, &body, "getUpdates");
    assert_eq!(updates.as_array().map(Vec::len), Some(2), "{updates}");
    let message = &updates[0]["message"];
    assert_eq!(updates[0]["update_id"], json!(u1));
    assert_eq!(message["message_id"], json!(m1));
    assert_eq!(message["text"], json!("hello"));
    assert_eq!(message["from"]["id"], json!(42));
    assert_eq!(message["from"]["is_bot"], json!(false));
    assert_eq!(message["chat"]["id"], json!(42));
    assert_eq!(message["chat"]["type"], json!("private"));
    // Form-encoded, numbers as strings: the offset confirms the first.
    let mut response = http()
        .post(format!("{}/bot{TOKEN}/getUpdates", sb.url()))
        .send_form([("offset", (u1 + 1).to_string()), ("timeout", "1".into())])
        .expect("form getUpdates");
    let body = body_json(&mut response);
    assert_eq!(body["result"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["result"][0]["update_id"], json!(u2));
    // Query string: confirm everything; nothing is left.
    let mut response = http()
        .get(format!(
            "{}/bot{TOKEN}/getUpdates?offset={}&timeout=1",
            sb.url(),
            u2 + 1
        ))
        .call()
        .expect("query getUpdates");
    assert_eq!(body_json(&mut response)["result"], json!([]));
    let stats = sb.bot_stats(BOT);
    assert_eq!(stats["pending_updates"], json!(0), "{stats}");
    assert_eq!(stats["confirmed_up_to"], json!(u2 + 1), "{stats}");
}

#[test]
fn a_long_poll_wakes_on_injection() {
    let sb = sandbox_with_bot();
    let poll = poll_in_background(&sb, TOKEN, json!({"timeout": 10}));
    wait_for_polls(&sb, BOT, 1);
    sb.send_text(BOT, 7, 7, "wake up");
    let (status, body, took) = poll.join().expect("poll thread");
    let updates = ok_result(status, &body, "long poll");
    assert_eq!(updates[0]["message"]["text"], json!("wake up"));
    assert!(took < Duration::from_secs(5), "the poll waited {took:?}");
}

#[test]
fn a_long_poll_with_nothing_returns_empty_at_its_timeout() {
    let sb = sandbox_with_bot();
    let started = Instant::now();
    let (status, body) = sb.call(TOKEN, "getUpdates", json!({"timeout": 1}));
    assert_eq!(ok_result(status, &body, "empty poll"), json!([]));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "a 1 s poll took {took:?}"
    );
}

#[test]
fn a_second_poll_ends_the_first_with_409() {
    let sb = sandbox_with_bot();
    let first = poll_in_background(&sb, TOKEN, json!({"timeout": 10}));
    wait_for_polls(&sb, BOT, 1);
    let second = poll_in_background(&sb, TOKEN, json!({"timeout": 1}));
    let (status, body, took) = first.join().expect("first poll thread");
    assert_error(
        status,
        &body,
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    );
    assert!(took < Duration::from_secs(5), "the 409 came after {took:?}");
    let (status, body, _) = second.join().expect("second poll thread");
    assert_eq!(ok_result(status, &body, "second poll"), json!([]));
    let stats = sb.bot_stats(BOT);
    assert_eq!(stats["max_concurrent_get_updates"], json!(2), "{stats}");
    assert_eq!(stats["current_get_updates"], json!(0), "{stats}");
}

#[test]
fn a_poll_whose_client_died_does_not_count_as_concurrent() {
    use std::io::Write;
    let sb = sandbox_with_bot();
    let addr = sb.url().trim_start_matches("http://").to_string();
    let mut dead = std::net::TcpStream::connect(&addr).expect("connect to the sandbox");
    write!(
        dead,
        "GET /bot{TOKEN}/getUpdates?timeout=10 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .expect("send a long poll");
    wait_for_polls(&sb, BOT, 1);
    drop(dead); // the client dies with its poll pending, as a killed worker does
    let (status, _body) = sb.call(TOKEN, "getUpdates", json!({"timeout": 1}));
    assert_eq!(status, 200);
    let stats = sb.bot_stats(BOT);
    assert_eq!(stats["max_concurrent_get_updates"], json!(1), "{stats}");
}

#[test]
fn a_second_conflict_within_3_s_is_answered_3_s_late() {
    let sb = sandbox_with_bot();
    let first = poll_in_background(&sb, TOKEN, json!({"timeout": 10}));
    wait_for_polls(&sb, BOT, 1);
    let second = poll_in_background(&sb, TOKEN, json!({"timeout": 10}));
    let (status, _, _) = first.join().expect("first poll");
    assert_eq!(status, 409);
    wait_for_polls(&sb, BOT, 1);
    let third = poll_in_background(&sb, TOKEN, json!({"timeout": 1}));
    let (status, body, took) = second.join().expect("second poll");
    assert_eq!(status, 409, "{body}");
    assert!(
        took >= Duration::from_millis(2900),
        "second 409 after {took:?}"
    );
    let (status, _, _) = third.join().expect("third poll");
    assert_eq!(status, 200);
}

#[test]
fn a_short_poll_repeating_its_offset_is_held_3_s() {
    let sb = sandbox_with_bot();
    let (status, _) = sb.call(TOKEN, "getUpdates", json!({"offset": 5}));
    assert_eq!(status, 200);
    let started = Instant::now();
    let (status, _) = sb.call(TOKEN, "getUpdates", json!({"offset": 5}));
    assert_eq!(status, 200);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "repeat answered after {took:?}"
    );
}

#[test]
fn revocation_ends_a_waiting_poll_with_401() {
    let sb = sandbox_with_bot();
    let poll = poll_in_background(&sb, TOKEN, json!({"timeout": 10}));
    wait_for_polls(&sb, BOT, 1);
    sb.revoke(BOT);
    let (status, body, took) = poll.join().expect("poll thread");
    assert_error(status, &body, 401, "Unauthorized");
    assert!(took < Duration::from_secs(5), "401 after {took:?}");
    let (status, body) = sb.call(TOKEN, "getMe", json!({}));
    assert_error(status, &body, 401, "Unauthorized");
}

#[test]
fn a_webhook_blocks_get_updates_and_ends_a_waiting_poll() {
    let sb = sandbox_with_bot();
    let poll = poll_in_background(&sb, TOKEN, json!({"timeout": 10}));
    wait_for_polls(&sb, BOT, 1);
    let (status, body) = sb.call(
        TOKEN,
        "setWebhook",
        json!({"url": "https://example.invalid/hook"}),
    );
    ok_result(status, &body, "setWebhook");
    let (status, body, _) = poll.join().expect("poll thread");
    assert_error(
        status,
        &body,
        409,
        "Conflict: terminated by setWebhook request",
    );
    let (status, body) = sb.call(TOKEN, "getUpdates", json!({}));
    assert_error(
        status,
        &body,
        409,
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
    );
    let (status, body) = sb.call(TOKEN, "deleteWebhook", json!({}));
    ok_result(status, &body, "deleteWebhook");
    let (status, body) = sb.call(TOKEN, "getUpdates", json!({}));
    ok_result(status, &body, "getUpdates after deleteWebhook");
}

#[test]
fn send_message_is_recorded_with_its_reply_to() {
    let sb = sandbox_with_bot();
    let (_, message_id) = sb.send_text(BOT, 42, 42, "hi bot");
    let (status, body) = sb.call(
        TOKEN,
        "sendMessage",
        json!({"chat_id": "42", "text": "hi human", "reply_to_message_id": message_id}),
    );
    let sent = ok_result(status, &body, "sendMessage");
    assert_eq!(sent["text"], json!("hi human"));
    assert_eq!(sent["chat"]["id"], json!(42));
    assert_eq!(sent["from"]["id"], json!(BOT));
    let (status, body) = sb.call(
        TOKEN,
        "sendMessage",
        json!({"chat_id": 42, "text": "again", "reply_parameters": {"message_id": message_id}}),
    );
    ok_result(status, &body, "sendMessage with reply_parameters");
    let log = sb.sent(BOT);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["seq"], json!(1));
    assert_eq!(log[0]["method"], json!("sendMessage"));
    assert_eq!(log[0]["chat_id"], json!(42));
    assert_eq!(log[0]["text"], json!("hi human"));
    assert_eq!(log[0]["reply_to_message_id"], json!(message_id));
    assert_eq!(log[0]["message_id"], sent["message_id"]);
    assert_eq!(log[0]["file_id"], Value::Null);
    assert_eq!(log[1]["reply_to_message_id"], json!(message_id));
}

#[test]
fn send_message_refuses_unknown_chats_and_bad_text() {
    let sb = sandbox_with_bot();
    let (status, body) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 5, "text": "hi"}));
    assert_error(status, &body, 400, "Bad Request: chat not found");
    sb.add_chat(BOT, 5);
    let (status, body) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 5, "text": ""}));
    assert_error(status, &body, 400, "Bad Request: message text is empty");
    let long = "й".repeat(4097);
    let (status, body) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 5, "text": long}));
    assert_error(status, &body, 400, "Bad Request: message is too long");
    sb.control_post("bots/123456/chats", json!({"chat_id": 6, "blocked": true}));
    let (status, body) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 6, "text": "hi"}));
    assert_error(status, &body, 403, "Forbidden: bot was blocked by the user");
    let exact = "й".repeat(4096);
    let (status, body) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 5, "text": exact}));
    ok_result(status, &body, "4096 characters");
    assert_eq!(sb.sent(BOT).len(), 1);
}

#[test]
fn send_document_multipart_upload_keeps_the_bytes() {
    let sb = sandbox_with_bot();
    sb.add_chat(BOT, 42);
    let bytes = pattern(300_000);
    let boundary = "----botfleet-test-boundary";
    let body = multipart(
        boundary,
        &[("chat_id", "42"), ("caption", "a report")],
        ("document", "report.pdf", &bytes),
    );
    // A reader body goes out chunked: the sandbox must decode that too.
    let mut reader = std::io::Cursor::new(body);
    let mut response = http()
        .post(format!("{}/bot{TOKEN}/sendDocument", sb.url()))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .send(ureq::SendBody::from_reader(&mut reader))
        .expect("sendDocument");
    let status = response.status().as_u16();
    let reply = body_json(&mut response);
    let message = ok_result(status, &reply, "sendDocument");
    let file_id = message["document"]["file_id"]
        .as_str()
        .expect("a document file_id")
        .to_string();
    assert_eq!(message["document"]["file_name"], json!("report.pdf"));
    assert_eq!(message["document"]["file_size"], json!(bytes.len()));
    assert_eq!(message["caption"], json!("a report"));
    assert_eq!(sha256_hex(&sb.file_bytes(&file_id)), sha256_hex(&bytes));
    let log = sb.sent(BOT);
    assert_eq!(log[0]["method"], json!("sendDocument"));
    assert_eq!(log[0]["file_id"], json!(file_id));
    assert_eq!(log[0]["file_name"], json!("report.pdf"));
    assert_eq!(log[0]["file_size"], json!(bytes.len()));
    // Sending the same file again by file_id.
    let (status, body) = sb.call(
        TOKEN,
        "sendDocument",
        json!({"chat_id": 42, "document": file_id}),
    );
    let again = ok_result(status, &body, "sendDocument by file_id");
    assert_eq!(again["document"]["file_id"], json!(file_id));
}

#[test]
fn an_injected_file_downloads_through_get_file() {
    let sb = sandbox_with_bot();
    let bytes = pattern(123_457);
    let (update_id, _, file_id) = sb.send_file(BOT, 42, 42, "document", "notes.txt", &bytes);
    let (status, body) = sb.call(TOKEN, "getUpdates", json!({}));
    let updates = ok_result(status, &body, "getUpdates");
    assert_eq!(updates[0]["update_id"], json!(update_id));
    assert_eq!(updates[0]["message"]["document"]["file_id"], json!(file_id));
    assert_eq!(
        updates[0]["message"]["document"]["file_name"],
        json!("notes.txt")
    );
    let (status, body) = sb.call(TOKEN, "getFile", json!({"file_id": file_id}));
    let file = ok_result(status, &body, "getFile");
    assert_eq!(file["file_size"], json!(bytes.len()));
    let path = file["file_path"].as_str().expect("a file_path");
    assert!(
        path.starts_with("documents/file_") && path.ends_with(".txt"),
        "{path}"
    );
    let mut response = http()
        .get(format!("{}/file/bot{TOKEN}/{path}", sb.url()))
        .call()
        .expect("download");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(sha256_hex(&body_bytes(&mut response)), sha256_hex(&bytes));
    // A photo comes in several sizes, largest last.
    let (_, _, photo_id) = sb.send_file(BOT, 42, 42, "photo", "cat.jpg", &pattern(5000));
    let (status, body) = sb.call(TOKEN, "getUpdates", json!({"offset": update_id + 1}));
    let updates = ok_result(status, &body, "getUpdates photo");
    let sizes = updates[0]["message"]["photo"]
        .as_array()
        .expect("photo sizes")
        .clone();
    assert!(sizes.len() >= 2, "{sizes:?}");
    assert_eq!(sizes.last().expect("a size")["file_id"], json!(photo_id));
}

#[test]
fn get_file_refuses_files_over_20_mb() {
    let sb = sandbox_with_bot();
    let bytes = vec![7u8; 20_971_521];
    let (_, _, file_id) = sb.send_file(BOT, 42, 42, "document", "big.bin", &bytes);
    let (status, body) = sb.call(TOKEN, "getFile", json!({"file_id": file_id}));
    assert_error(status, &body, 400, "Bad Request: file is too big");
    let (status, body) = sb.call(TOKEN, "getFile", json!({"file_id": "no-such-file"}));
    assert_eq!(status, 400, "{body}");
}

#[test]
fn uploads_over_50_mb_get_413_before_the_body_is_read() {
    let sb = sandbox_with_bot();
    let address = sb.url().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "POST /bot{TOKEN}/sendDocument HTTP/1.1\r\nHost: {address}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 60000000\r\n\r\n"
    )
    .expect("write headers");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the JSON body has arrived (the server need not close).
    while !String::from_utf8_lossy(&reply).contains("\"ok\":false") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no reply to an oversized upload: {e}"),
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.contains("\"description\":\"Request Entity Too Large\""),
        "{reply}"
    );
}

fn raw_get_me(sb: &SandboxProc) -> (u16, String, ureq::http::HeaderMap) {
    let mut response = http()
        .get(format!("{}/bot{TOKEN}/getMe", sb.url()))
        .call()
        .expect("getMe under a fault");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = String::from_utf8_lossy(&body_bytes(&mut response)).into_owned();
    (status, body, headers)
}

#[test]
fn faults_500_502_429_401_409_and_malformed_as_a_raw_client_sees_them() {
    let sb = sandbox_with_bot();
    sb.fault(json!({"kind": "500"}));
    let (status, body, _) = raw_get_me(&sb);
    let v: Value = serde_json::from_str(&body).expect("500 is JSON");
    assert_error(status, &v, 500, "Internal Server Error");

    sb.fault(json!({"kind": "502"}));
    let (status, body, headers) = raw_get_me(&sb);
    assert_eq!(status, 502);
    assert!(
        body.starts_with("<html>") && body.contains("502 Bad Gateway"),
        "{body}"
    );
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    assert!(
        content_type.is_some_and(|c| c.starts_with("text/html")),
        "{content_type:?}"
    );

    sb.fault(json!({"kind": "429", "retry_after": 7}));
    let (status, body, headers) = raw_get_me(&sb);
    let v: Value = serde_json::from_str(&body).expect("429 is JSON");
    assert_error(status, &v, 429, "Too Many Requests: retry after 7");
    assert_eq!(v["parameters"]["retry_after"], json!(7));
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );

    sb.fault(json!({"kind": "401"}));
    let (status, body, _) = raw_get_me(&sb);
    let v: Value = serde_json::from_str(&body).expect("401 is JSON");
    assert_error(status, &v, 401, "Unauthorized");

    sb.fault(json!({"kind": "409", "method": "GETUPDATES"}));
    let (status, _, _) = raw_get_me(&sb);
    assert_eq!(status, 200, "a fault for getUpdates leaves getMe alone");
    let (status, v) = sb.call(TOKEN, "getUpdates", json!({}));
    assert_eq!(status, 409, "{v}");
    assert!(v["description"]
        .as_str()
        .is_some_and(|d| d.starts_with("Conflict: terminated")));

    sb.fault(json!({"kind": "malformed"}));
    let (status, body, _) = raw_get_me(&sb);
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body).is_err(),
        "not JSON: {body}"
    );
    assert!(body.starts_with("{\"ok\":true"), "{body}");

    let (status, _, _) = raw_get_me(&sb);
    assert_eq!(status, 200, "count-1 faults are used up");
    assert_eq!(sb.stats()["faults_injected"], json!(6));
}

#[test]
fn fault_drop_closes_the_connection_without_a_reply() {
    let sb = sandbox_with_bot();
    sb.fault(json!({"kind": "drop", "bot_id": BOT, "count": 1}));
    let result = http().get(format!("{}/bot{TOKEN}/getMe", sb.url())).call();
    match result {
        Err(e) => assert!(
            !matches!(e, ureq::Error::Timeout(_)),
            "a dropped call must fail fast, not time out: {e}"
        ),
        Ok(r) => panic!("a dropped call got a reply: {}", r.status()),
    }
    let (status, _, _) = raw_get_me(&sb);
    assert_eq!(status, 200);
}

#[test]
fn fault_hang_makes_a_client_time_out() {
    let sb = sandbox_with_bot();
    sb.fault(json!({"kind": "hang", "hang_ms": 3000}));
    let started = Instant::now();
    let result = http_with_timeout(Duration::from_millis(400))
        .get(format!("{}/bot{TOKEN}/getMe", sb.url()))
        .call();
    match result {
        Err(ureq::Error::Timeout(_)) => {}
        Err(e) => panic!("expected a client timeout, got {e}"),
        Ok(r) => panic!("a hung call got a reply: {}", r.status()),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let (status, _, _) = raw_get_me(&sb);
    assert_eq!(status, 200, "the sandbox still serves during a hang");
}

#[test]
fn faults_narrow_by_bot_and_spare_the_control_api() {
    let sb = sandbox_with_bot();
    let other = "777:other-secret";
    sb.add_bot(other, "other_bot");
    sb.fault(json!({"kind": "500", "bot_id": 777, "count": 2}));
    // The control API is never faulted.
    sb.send_text(BOT, 1, 1, "x");
    let (status, _) = sb.call(TOKEN, "getMe", json!({}));
    assert_eq!(status, 200);
    assert_eq!(sb.call(other, "getMe", json!({})).0, 500);
    assert_eq!(sb.call(other, "getMe", json!({})).0, 500);
    assert_eq!(sb.call(other, "getMe", json!({})).0, 200);
    sb.fault(json!({"kind": "500", "probability": 1.0}));
    assert_eq!(sb.call(TOKEN, "getMe", json!({})).0, 500);
    assert_eq!(sb.call(TOKEN, "getMe", json!({})).0, 500);
    sb.clear_faults();
    assert_eq!(sb.call(TOKEN, "getMe", json!({})).0, 200);
}

#[test]
fn flood_limits_answer_429_with_retry_after() {
    let sb = sandbox_with_bot();
    sb.add_chat(BOT, 1);
    sb.add_chat(BOT, 2);
    sb.limits(1, 30);
    let (status, _) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 1, "text": "a"}));
    assert_eq!(status, 200);
    let (status, body) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 1, "text": "b"}));
    assert_eq!(status, 429, "{body}");
    let retry = body["parameters"]["retry_after"]
        .as_u64()
        .expect("retry_after");
    assert!(retry >= 1, "{body}");
    assert_eq!(
        body["description"],
        json!(format!("Too Many Requests: retry after {retry}"))
    );
    let (status, _) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 2, "text": "c"}));
    assert_eq!(status, 200, "another chat has its own budget");
    sb.limits(0, 0);
    let (status, _) = sb.call(TOKEN, "sendMessage", json!({"chat_id": 1, "text": "d"}));
    assert_eq!(status, 200, "limits off");
}

#[test]
fn the_flood_limits_flag_turns_limits_on_and_demo_bots_work() {
    let sb = SandboxProc::start_with(&["--flood-limits", "--demo-bots", "2"]);
    let token = "1000002:sandbox-demo-token-2";
    let (status, body) = sb.call(token, "getMe", json!({}));
    ok_result(status, &body, "demo bot getMe");
    sb.add_chat(1_000_002, 9);
    let statuses: Vec<u16> = (0..2)
        .map(|_| {
            sb.call(token, "sendMessage", json!({"chat_id": 9, "text": "x"}))
                .0
        })
        .collect();
    assert_eq!(statuses, [200, 429]);
}

#[test]
fn two_hundred_concurrent_long_polls_are_held_and_answered() {
    const N: u64 = 200;
    let sb = SandboxProc::start();
    let tokens: Vec<(u64, String)> = (0..N)
        .map(|i| {
            let id = 5_000_000 + i;
            let token = format!("{id}:load-{i}");
            assert_eq!(sb.add_bot(&token, ""), id);
            (id, token)
        })
        .collect();
    let started = Instant::now();
    let polls: Vec<_> = tokens
        .iter()
        .map(|(_, token)| poll_in_background(&sb, token, json!({"timeout": 8})))
        .collect();
    wait_until(Duration::from_secs(6), "200 polls waiting at once", || {
        let stats = sb.stats();
        tokens
            .iter()
            .all(|(id, _)| stats["bots"][id.to_string()]["current_get_updates"] == json!(1))
    });
    // Half get a message; the other half run into their timeout.
    for (id, _) in tokens.iter().take(N as usize / 2) {
        sb.send_text(*id, 1, 1, "ping");
    }
    for (i, poll) in polls.into_iter().enumerate() {
        let (status, body, _) = poll.join().expect("poll thread");
        let updates = ok_result(status, &body, "concurrent poll");
        let expected = if i < N as usize / 2 { 1 } else { 0 };
        assert_eq!(
            updates.as_array().map(Vec::len),
            Some(expected),
            "poll {i}: {updates}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn stats_count_calls_deliveries_and_sends() {
    let sb = sandbox_with_bot();
    let (u1, _) = sb.send_text(BOT, 3, 3, "one");
    sb.call(TOKEN, "getUpdates", json!({"timeout": 1}));
    sb.call(TOKEN, "getUpdates", json!({"timeout": 1}));
    sb.call(TOKEN, "getUpdates", json!({"offset": u1 + 1, "timeout": 1}));
    sb.call(TOKEN, "sendMessage", json!({"chat_id": 3, "text": "reply"}));
    sb.call(TOKEN, "getMe", json!({}));
    let stats = sb.stats();
    assert_eq!(stats["calls"]["getUpdates"], json!(3), "{stats}");
    assert_eq!(stats["calls"]["sendMessage"], json!(1), "{stats}");
    let bot = &stats["bots"][BOT.to_string()];
    assert_eq!(bot["calls"]["getMe"], json!(1), "{bot}");
    assert_eq!(bot["delivered"], json!(2), "{bot}");
    assert_eq!(bot["redelivered"], json!(1), "{bot}");
    assert_eq!(bot["confirmed_up_to"], json!(u1 + 1), "{bot}");
    assert_eq!(bot["pending_updates"], json!(0), "{bot}");
    assert_eq!(bot["sent"], json!(1), "{bot}");
    assert_eq!(bot["max_concurrent_get_updates"], json!(1), "{bot}");
    assert_eq!(bot["current_get_updates"], json!(0), "{bot}");
}

#[test]
fn commands_and_chat_actions_round_trip() {
    let sb = sandbox_with_bot();
    let commands = json!([{"command": "start", "description": "Start"}]);
    let (status, body) = sb.call(TOKEN, "setMyCommands", json!({"commands": commands}));
    ok_result(status, &body, "setMyCommands");
    let (status, body) = sb.call(TOKEN, "getMyCommands", json!({}));
    assert_eq!(ok_result(status, &body, "getMyCommands"), commands);
    let (status, body) = sb.call(
        TOKEN,
        "sendChatAction",
        json!({"chat_id": 8, "action": "typing"}),
    );
    assert_error(status, &body, 400, "Bad Request: chat not found");
    let update_id = sb.inject_update(BOT, json!({"callback_query": {"id": "1", "data": "x"}}));
    let (status, body) = sb.call(TOKEN, "getUpdates", json!({}));
    let updates = ok_result(status, &body, "getUpdates");
    assert_eq!(updates[0]["update_id"], json!(update_id));
    assert_eq!(updates[0]["callback_query"]["data"], json!("x"));
}

#[test]
fn in_process_sandbox_serves_and_shutdown_ends_a_waiting_poll() {
    use botfleet::sandbox::{Sandbox, SandboxOptions};
    let sandbox = Sandbox::start(&SandboxOptions::default()).expect("start in process");
    assert_eq!(
        sandbox.url(),
        format!("http://127.0.0.1:{}", sandbox.port())
    );
    let id = sandbox
        .register_bot("4242:in-process", "inproc_bot")
        .expect("register");
    assert_eq!(id, 4242);
    let (update_id, _) = sandbox.inject_text(id, 9, 9, "hello").expect("inject");
    let url = format!("{}/bot4242:in-process/getUpdates", sandbox.url());
    let mut response = http()
        .get(format!("{url}?offset={}&timeout=1", update_id))
        .call()
        .expect("in-process getUpdates");
    assert_eq!(
        body_json(&mut response)["result"][0]["message"]["text"],
        json!("hello")
    );
    let mut response = http()
        .post(format!("{}/bot4242:in-process/sendMessage", sandbox.url()))
        .send_form([("chat_id", "9"), ("text", "hi+there")])
        .expect("in-process sendMessage");
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        body_json(&mut response)
    );
    let sent = sandbox.sent_since(id, 0);
    assert_eq!(sent[0]["text"], json!("hi+there"));
    assert!(sandbox.sent_since(id, 1).is_empty());
    // A poll waiting 30 s ends when the sandbox shuts down.
    let waiting = std::thread::spawn(move || {
        http()
            .get(format!("{url}?offset={}&timeout=30", update_id + 1))
            .call()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    sandbox.shutdown();
    let outcome = waiting.join().expect("waiting poll thread");
    assert!(
        outcome.is_err() || outcome.as_ref().is_ok_and(|s| *s != 200),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}
