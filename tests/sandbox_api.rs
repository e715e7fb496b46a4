//! The sandbox's Bot API methods as bots call them (docs/sandbox.md), each
//! with its answer and Telegram's error texts, through plain HTTP against
//! the real binary: formatting, keyboards, media, edits, deletions,
//! callback queries, chats and members, reactions, blocking, webhooks and
//! commands, group pacing, the same-offset rule on long polls, and the
//! control API's live events.

mod common;

use common::{body_bytes, body_json, http, http_with_timeout, wait_until, SandboxProc};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const TOKEN: &str = "424242:api-test-secret";
const BOT: u64 = 424242;
const USER: i64 = 701;

/// A sandbox with the bot registered and USER having said hello.
fn setup() -> (SandboxProc, i64) {
    let sb = SandboxProc::start();
    assert_eq!(sb.add_bot(TOKEN, "api_bot"), BOT);
    let (_, message_id) = sb.send_text(BOT, USER, USER, "hello");
    (sb, message_id)
}

fn ok(sb: &SandboxProc, method: &str, params: Value) -> Value {
    let (status, body) = sb.call(TOKEN, method, params);
    assert_eq!(status, 200, "{method}: {body}");
    assert_eq!(body["ok"], json!(true), "{method}: {body}");
    body["result"].clone()
}

fn refused(sb: &SandboxProc, method: &str, params: Value, code: u16, description: &str) {
    let (status, body) = sb.call(TOKEN, method, params.clone());
    assert_eq!(
        (status, body["description"].as_str().unwrap_or("")),
        (code, description),
        "{method} {params}: {body}"
    );
    assert_eq!(body["error_code"], json!(code), "{body}");
    assert_eq!(body["ok"], json!(false), "{body}");
}

fn updates(sb: &SandboxProc, params: Value) -> Vec<Value> {
    match ok(sb, "getUpdates", params) {
        Value::Array(list) => list,
        other => panic!("getUpdates answered {other}"),
    }
}

/// Confirms everything pending; returns what was pending.
fn drain(sb: &SandboxProc) -> Vec<Value> {
    let list = updates(sb, json!({"offset": -100}));
    if let Some(last) = list.last() {
        let next = last["update_id"].as_i64().unwrap_or(0) + 1;
        updates(sb, json!({"offset": next, "timeout": 0, "limit": 1}));
    }
    list
}

fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "sandboxapiboundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    for (name, file_name, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(
    sb: &SandboxProc,
    method: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &str, &[u8])],
) -> (u16, Value) {
    let (content_type, body) = multipart(fields, files);
    let mut response = http()
        .post(&format!("{}/bot{TOKEN}/{method}", sb.url()))
        .header("Content-Type", &content_type)
        .send(&body[..])
        .unwrap_or_else(|e| panic!("{method} upload failed: {e}"));
    let status = response.status().as_u16();
    (status, body_json(&mut response))
}

fn control_get(sb: &SandboxProc, path: &str) -> Value {
    let mut response = http()
        .get(&format!("{}/_sandbox/{path}", sb.url()))
        .call()
        .unwrap_or_else(|e| panic!("GET {path} failed: {e}"));
    let body = body_json(&mut response);
    assert_eq!(body["ok"], json!(true), "GET {path}: {body}");
    body["result"].clone()
}

/// POSTs to the control API and returns (status, body) without panicking.
fn control_try(sb: &SandboxProc, path: &str, body: Value) -> (u16, Value) {
    let mut response = http()
        .post(&format!("{}/_sandbox/{path}", sb.url()))
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {path} failed: {e}"));
    let status = response.status().as_u16();
    (status, body_json(&mut response))
}

fn kinds(entities: &Value) -> Vec<(String, i64, i64)> {
    entities
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["offset"].as_i64().unwrap_or(-1),
                e["length"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
fn parse_modes_become_entities_with_telegrams_errors_and_lengths_after_parsing() {
    let (sb, _) = setup();
    let m = ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "🏟 <b>bold</b> <a href=\"example.com\">x</a> /help", "parse_mode": "HTML"}),
    );
    assert_eq!(m["text"], "🏟 bold x /help");
    assert_eq!(
        kinds(&m["entities"]),
        vec![
            ("bold".into(), 3, 4),
            ("text_link".into(), 8, 1),
            ("bot_command".into(), 10, 5)
        ]
    );
    assert_eq!(m["entities"][1]["url"], "http://example.com/");
    let m = ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "*b* _i_ \\.", "parse_mode": "MarkdownV2"}),
    );
    assert_eq!(
        (m["text"].as_str(), kinds(&m["entities"]).len()),
        (Some("b i ."), 2)
    );
    let m = ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "*b* 1.0", "parse_mode": "Markdown"}),
    );
    assert_eq!(m["text"], "b 1.0");
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "Version 1.0", "parse_mode": "MarkdownV2"}),
        400,
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'",
    );
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "<b>open", "parse_mode": "HTML"}),
        400,
        "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
    );
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "<blink>x</blink>", "parse_mode": "HTML"}),
        400,
        "Bad Request: can't parse entities: Unsupported start tag \"blink\" at byte offset 0",
    );
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "x", "parse_mode": "BBCode"}),
        400,
        "Bad Request: unsupported parse_mode",
    );
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "<b></b>", "parse_mode": "HTML"}),
        400,
        "Bad Request: message text is empty",
    );
    // Markup does not count towards the 4096 characters; the text does.
    let long = "a".repeat(4096);
    ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": format!("<b>{long}</b>"), "parse_mode": "HTML"}),
    );
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": format!("<b>{long}a</b>"), "parse_mode": "HTML"}),
        400,
        "Bad Request: message is too long",
    );
    // Parsing comes before the chat is looked at, as on Telegram.
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": 999, "text": "1.0", "parse_mode": "MarkdownV2"}),
        400,
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'",
    );
}

#[test]
fn injected_commands_carry_entities_and_any_writer_is_a_known_chat() {
    let (sb, _) = setup();
    drain(&sb);
    sb.send_text(BOT, USER, USER, "/start@api_bot now");
    let got = drain(&sb);
    assert_eq!(
        kinds(&got[0]["message"]["entities"]),
        vec![("bot_command".into(), 0, 14)]
    );
    // A user who only reached the bot through a raw update is a known chat.
    sb.inject_update(
        BOT,
        json!({"message": {"message_id": 9000, "date": 1, "text": "hi",
                           "from": {"id": 88, "is_bot": false, "first_name": "Raw"},
                           "chat": {"id": 88, "type": "private", "first_name": "Raw"}}}),
    );
    let m = ok(
        &sb,
        "sendMessage",
        json!({"chat_id": 88, "text": "hello Raw", "reply_to_message_id": 9000}),
    );
    assert_eq!(m["reply_to_message"]["message_id"], 9000);
    assert_eq!(m["chat"]["first_name"], "Raw");
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": 89, "text": "x"}),
        400,
        "Bad Request: chat not found",
    );
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "x", "reply_to_message_id": 123456}),
        400,
        "Bad Request: message to be replied not found",
    );
    ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "x", "reply_parameters": {"message_id": 123456, "allow_sending_without_reply": true}}),
    );
    refused(
        &sb,
        "sendChatAction",
        json!({"chat_id": USER, "action": "dancing"}),
        400,
        "Bad Request: wrong parameter action in request",
    );
}

#[test]
fn keyboards_are_validated_kept_on_the_message_and_recorded() {
    let (sb, _) = setup();
    let keyboard = json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"},
                                                 {"text": "Docs", "url": "https://example.org"}]]});
    let m = ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "Sure?", "reply_markup": keyboard}),
    );
    assert_eq!(m["reply_markup"], keyboard);
    // Form-encoded markup (serialized JSON) works the same.
    let mut response = http()
        .post(&format!("{}/bot{TOKEN}/sendMessage", sb.url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!(
            "chat_id={USER}&text=kb&reply_markup={}",
            common::percent_encode(
                &json!({"keyboard": [["A", "B"]], "resize_keyboard": true}).to_string()
            )
        ))
        .expect("form call");
    let body = body_json(&mut response);
    assert_eq!(body["ok"], json!(true), "{body}");
    assert!(
        body["result"]["reply_markup"].is_null(),
        "reply keyboards are not on the message: {body}"
    );
    let sent = sb.sent(BOT);
    assert_eq!(sent[0]["reply_markup"], keyboard);
    assert_eq!(sent[1]["reply_markup"]["keyboard"][0][1]["text"], "B");
    for entry in &sent {
        assert!(
            entry["sent_at_ms"].as_u64().unwrap_or(0) > 1_600_000_000_000,
            "{entry}"
        );
        assert!(entry["date"].as_i64().is_some(), "{entry}");
    }
    let cases = [
        (
            json!({"inline_keyboard": [[{"text": "x", "callback_data": "d".repeat(65)}]]}),
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            json!("{\"inline_keyboard\": [["),
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
        (
            json!({"inline_keyboard": [[{"text": "plain"}]]}),
            "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
        ),
        (
            json!({"inline_keyboard": [{"text": "x", "callback_data": "y"}]}),
            "Bad Request: Field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays",
        ),
        (
            json!({"keyboard": [[7]]}),
            "Bad Request: can't parse keyboard button: KeyboardButton must be a String or an Object",
        ),
    ];
    for (markup, description) in cases {
        refused(
            &sb,
            "sendMessage",
            json!({"chat_id": USER, "text": "x", "reply_markup": markup}),
            400,
            description,
        );
    }
    ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "64 bytes is fine",
               "reply_markup": {"inline_keyboard": [[{"text": "x", "callback_data": "d".repeat(64)}]]}}),
    );
}

#[test]
fn a_press_makes_a_callback_query_that_is_answered_once_and_expires() {
    let (sb, _) = setup();
    let m = ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "Pick",
               "reply_markup": {"inline_keyboard": [[{"text": "A", "callback_data": "a"}, {"text": "B", "callback_data": "b"}]]}}),
    );
    let message_id = m["message_id"].as_i64().expect("message_id");
    drain(&sb);
    let press = sb.control_post(
        &format!("bots/{BOT}/press"),
        json!({"user_id": USER, "message_id": message_id, "data": "b"}),
    );
    let id = press["callback_query_id"]
        .as_str()
        .expect("an id")
        .to_string();
    let got = drain(&sb);
    let query = &got[0]["callback_query"];
    assert_eq!(query["id"], json!(id));
    assert_eq!(query["data"], "b");
    assert_eq!(query["from"]["id"], USER);
    assert_eq!(query["message"]["message_id"], message_id);
    assert!(query["chat_instance"].is_string());
    // Pressing by position gives a fresh id.
    let again = sb.control_post(
        &format!("bots/{BOT}/press"),
        json!({"user_id": USER, "message_id": message_id, "row": 0, "column": 0}),
    );
    assert_ne!(again["callback_query_id"], json!(id));
    ok(
        &sb,
        "answerCallbackQuery",
        json!({"callback_query_id": id, "text": "Done"}),
    );
    let too_old =
        "Bad Request: query is too old and response timeout expired or query ID is invalid";
    refused(
        &sb,
        "answerCallbackQuery",
        json!({"callback_query_id": id}),
        400,
        too_old,
    );
    refused(
        &sb,
        "answerCallbackQuery",
        json!({"callback_query_id": "12345"}),
        400,
        too_old,
    );
    let short = sb.control_post(
        &format!("bots/{BOT}/press"),
        json!({"user_id": USER, "message_id": message_id, "data": "a", "ttl_ms": 100}),
    );
    std::thread::sleep(Duration::from_millis(200)); // Past the 100 ms it lives.
    refused(
        &sb,
        "answerCallbackQuery",
        json!({"callback_query_id": short["callback_query_id"]}),
        400,
        too_old,
    );
    let (status, body) = control_try(
        &sb,
        &format!("bots/{BOT}/press"),
        json!({"user_id": USER, "message_id": message_id, "data": "zzz"}),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn edits_and_deletions_answer_as_telegram_does() {
    let (sb, user_message) = setup();
    let m = ok(&sb, "sendMessage", json!({"chat_id": USER, "text": "v1"}));
    let id = m["message_id"].as_i64().expect("id");
    let e = ok(
        &sb,
        "editMessageText",
        json!({"chat_id": USER, "message_id": id, "text": "<i>v2</i>", "parse_mode": "HTML",
               "reply_markup": {"inline_keyboard": [[{"text": "ok", "callback_data": "ok"}]]}}),
    );
    assert_eq!(
        (e["text"].as_str(), e["edit_date"].is_i64()),
        (Some("v2"), true)
    );
    assert_eq!(kinds(&e["entities"]), vec![("italic".into(), 0, 2)]);
    refused(
        &sb,
        "editMessageText",
        json!({"chat_id": USER, "message_id": id, "text": "<i>v2</i>", "parse_mode": "HTML",
               "reply_markup": {"inline_keyboard": [[{"text": "ok", "callback_data": "ok"}]]}}),
        400,
        "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
    );
    let r = ok(
        &sb,
        "editMessageReplyMarkup",
        json!({"chat_id": USER, "message_id": id}),
    );
    assert!(r["reply_markup"].is_null(), "{r}");
    refused(
        &sb,
        "editMessageText",
        json!({"chat_id": USER, "message_id": 999_999, "text": "x"}),
        400,
        "Bad Request: message to edit not found",
    );
    refused(
        &sb,
        "editMessageText",
        json!({"chat_id": USER, "message_id": user_message, "text": "x"}),
        400,
        "Bad Request: message can't be edited",
    );
    refused(
        &sb,
        "editMessageCaption",
        json!({"chat_id": USER, "message_id": id, "caption": "x"}),
        400,
        "Bad Request: there is no caption in the message to edit",
    );
    let sent = sb.sent(BOT);
    assert_eq!(
        sent.iter()
            .map(|s| s["method"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec!["sendMessage", "editMessageText", "editMessageReplyMarkup"]
    );
    assert_eq!(
        ok(
            &sb,
            "deleteMessage",
            json!({"chat_id": USER, "message_id": id})
        ),
        json!(true)
    );
    refused(
        &sb,
        "deleteMessage",
        json!({"chat_id": USER, "message_id": id}),
        400,
        "Bad Request: message to delete not found",
    );
    // A photo's caption and media can be edited.
    let (status, photo) = upload(
        &sb,
        "sendPhoto",
        &[("chat_id", &USER.to_string()), ("caption", "first")],
        &[("photo", "a.jpg", b"\xff\xd8jpeg-bytes")],
    );
    assert_eq!(status, 200, "{photo}");
    let pid = photo["result"]["message_id"].as_i64().expect("id");
    let c = ok(
        &sb,
        "editMessageCaption",
        json!({"chat_id": USER, "message_id": pid, "caption": "<b>second</b>", "parse_mode": "HTML"}),
    );
    assert_eq!(
        (c["caption"].as_str(), kinds(&c["caption_entities"]).len()),
        (Some("second"), 1)
    );
    let doc_id = photo["result"]["photo"][2]["file_id"]
        .as_str()
        .expect("file_id");
    let media = ok(
        &sb,
        "editMessageMedia",
        json!({"chat_id": USER, "message_id": pid, "media": {"type": "document", "media": doc_id, "caption": "now a document"}}),
    );
    assert!(
        media["photo"].is_null() && media["document"].is_object(),
        "{media}"
    );
}

/// Answers one connection on a loopback port with `response` (a whole
/// HTTP response), for files given by URL.
fn serve_once(response: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut head = [0u8; 2048];
            let _ = stream.read(&mut head);
            let _ = stream.write_all(&response);
        }
    });
    (port, handle)
}

fn serve_bytes(body: &[u8]) -> (u16, std::thread::JoinHandle<()>) {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    serve_once(response)
}

#[test]
fn media_by_upload_file_id_and_url_with_photo_sizes() {
    let (sb, _) = setup();
    let (status, body) = upload(
        &sb,
        "sendPhoto",
        &[("chat_id", &USER.to_string())],
        &[("photo", "p.jpg", &[7u8; 1000])],
    );
    assert_eq!(status, 200, "{body}");
    let sizes = body["result"]["photo"].as_array().expect("sizes").clone();
    assert_eq!(sizes.len(), 3, "{body}");
    let widths: Vec<i64> = sizes
        .iter()
        .map(|s| s["width"].as_i64().unwrap_or(0))
        .collect();
    assert!(
        widths.windows(2).all(|w| w[0] < w[1]),
        "largest last: {widths:?}"
    );
    let file_id = sizes[2]["file_id"].as_str().expect("file_id").to_string();
    // By file_id, and the file downloads through getFile.
    let again = ok(&sb, "sendPhoto", json!({"chat_id": USER, "photo": file_id}));
    assert_eq!(again["photo"][2]["file_id"], json!(file_id));
    let path = ok(&sb, "getFile", json!({"file_id": file_id}))["file_path"]
        .as_str()
        .expect("path")
        .to_string();
    let mut response = http()
        .get(&format!("{}/file/bot{TOKEN}/{path}", sb.url()))
        .call()
        .expect("download");
    assert_eq!(body_bytes(&mut response), vec![7u8; 1000]);
    // Each kind of media by upload.
    for (method, field, key) in [
        ("sendVideo", "video", "video"),
        ("sendAudio", "audio", "audio"),
        ("sendVoice", "voice", "voice"),
        ("sendAnimation", "animation", "animation"),
        ("sendSticker", "sticker", "sticker"),
        ("sendDocument", "document", "document"),
    ] {
        let (status, body) = upload(
            &sb,
            method,
            &[("chat_id", &USER.to_string())],
            &[(field, "f.bin", b"xyz")],
        );
        assert_eq!(status, 200, "{method}: {body}");
        assert!(
            body["result"][key]["file_id"].is_string(),
            "{method}: {body}"
        );
        refused(
            &sb,
            method,
            json!({"chat_id": USER}),
            400,
            &format!("Bad Request: there is no {field} in the request"),
        );
    }
    // A URL on loopback is fetched; anything else is refused, never fetched.
    let (port, server) = serve_bytes(b"from-a-url");
    let m = ok(
        &sb,
        "sendDocument",
        json!({"chat_id": USER, "document": format!("http://127.0.0.1:{port}/report.txt")}),
    );
    server.join().expect("url server");
    let fid = m["document"]["file_id"].as_str().expect("file_id");
    assert_eq!(m["document"]["file_name"], "report.txt");
    assert_eq!(sb.file_bytes(fid), b"from-a-url");
    refused(
        &sb,
        "sendPhoto",
        json!({"chat_id": USER, "photo": "https://example.com/cat.jpg"}),
        400,
        "Bad Request: failed to get HTTP URL content",
    );
    // A loopback URL that redirects elsewhere is not followed.
    let (port, server) = serve_once(
        b"HTTP/1.1 302 Found\r\nLocation: http://example.com/x.jpg\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec(),
    );
    refused(
        &sb,
        "sendPhoto",
        json!({"chat_id": USER, "photo": format!("http://127.0.0.1:{port}/moved.jpg")}),
        400,
        "Bad Request: failed to get HTTP URL content",
    );
    server.join().expect("redirecting server");
    refused(
        &sb,
        "sendPhoto",
        json!({"chat_id": USER, "photo": "not-a-file-id"}),
        400,
        "Bad Request: wrong file identifier/HTTP URL specified",
    );
    // A media group with attach:// parts.
    let media = json!([{"type": "photo", "media": "attach://one", "caption": "<b>1</b>", "parse_mode": "HTML"},
                       {"type": "photo", "media": file_id}]);
    let (status, body) = upload(
        &sb,
        "sendMediaGroup",
        &[
            ("chat_id", &USER.to_string()),
            ("media", &media.to_string()),
        ],
        &[("one", "one.jpg", b"1111")],
    );
    assert_eq!(status, 200, "{body}");
    let group = body["result"].as_array().expect("messages");
    assert_eq!(group.len(), 2);
    assert_eq!(group[0]["media_group_id"], group[1]["media_group_id"]);
    assert_eq!(group[0]["caption"], "1");
    refused(
        &sb,
        "sendMediaGroup",
        json!({"chat_id": USER, "media": [{"type": "photo", "media": file_id}]}),
        400,
        "Bad Request: wrong number of media in the album",
    );
}

#[test]
fn copy_forward_location_contact_poll_and_pin() {
    let (sb, user_message) = setup();
    let copy = ok(
        &sb,
        "copyMessage",
        json!({"chat_id": USER, "from_chat_id": USER, "message_id": user_message}),
    );
    assert!(
        copy["message_id"].is_i64() && copy.get("text").is_none(),
        "{copy}"
    );
    let fwd = ok(
        &sb,
        "forwardMessage",
        json!({"chat_id": USER, "from_chat_id": USER, "message_id": user_message}),
    );
    assert_eq!(
        (fwd["text"].as_str(), fwd["forward_origin"]["type"].as_str()),
        (Some("hello"), Some("user"))
    );
    refused(
        &sb,
        "copyMessage",
        json!({"chat_id": USER, "from_chat_id": USER, "message_id": 77_777}),
        400,
        "Bad Request: message to copy not found",
    );
    refused(
        &sb,
        "forwardMessage",
        json!({"chat_id": USER, "from_chat_id": USER, "message_id": 77_777}),
        400,
        "Bad Request: message to forward not found",
    );
    let loc = ok(
        &sb,
        "sendLocation",
        json!({"chat_id": USER, "latitude": 52.5, "longitude": 13.4}),
    );
    assert_eq!(loc["location"]["latitude"], 52.5);
    refused(
        &sb,
        "sendLocation",
        json!({"chat_id": USER, "longitude": 1}),
        400,
        "Bad Request: latitude is empty",
    );
    let contact = ok(
        &sb,
        "sendContact",
        json!({"chat_id": USER, "phone_number": "+100", "first_name": "Ann"}),
    );
    assert_eq!(contact["contact"]["first_name"], "Ann");
    let poll = ok(
        &sb,
        "sendPoll",
        json!({"chat_id": USER, "question": "Q?", "options": ["a", "b"]}),
    );
    assert_eq!(poll["poll"]["options"][1]["text"], "b");
    refused(
        &sb,
        "sendPoll",
        json!({"chat_id": USER, "question": "Q?", "options": ["a"]}),
        400,
        "Bad Request: poll must have at least 2 option",
    );
    ok(
        &sb,
        "pinChatMessage",
        json!({"chat_id": USER, "message_id": user_message}),
    );
    refused(
        &sb,
        "pinChatMessage",
        json!({"chat_id": USER, "message_id": 55_555}),
        400,
        "Bad Request: message to pin not found",
    );
}

#[test]
fn chats_members_groups_and_default_allowed_updates() {
    let (sb, _) = setup();
    drain(&sb);
    let chat = ok(&sb, "getChat", json!({"chat_id": USER}));
    assert_eq!(
        (chat["type"].as_str(), chat["id"].as_i64()),
        (Some("private"), Some(USER))
    );
    refused(
        &sb,
        "getChat",
        json!({"chat_id": 5}),
        400,
        "Bad Request: chat not found",
    );
    refused(
        &sb,
        "getChatAdministrators",
        json!({"chat_id": USER}),
        400,
        "Bad Request: there are no administrators in the private chat",
    );
    let member = ok(
        &sb,
        "getChatMember",
        json!({"chat_id": USER, "user_id": USER}),
    );
    assert_eq!(member["status"], "member");
    // USER adds the bot to a group: my_chat_member; a second user joins:
    // a service message, and chat_member only when asked for.
    let group = -4001;
    sb.control_post(
        &format!("bots/{BOT}/members"),
        json!({"chat_id": group, "user_id": USER, "action": "join", "bot": true}),
    );
    sb.control_post(
        &format!("bots/{BOT}/members"),
        json!({"chat_id": group, "user_id": 702, "action": "join", "first_name": "Bea"}),
    );
    let got = drain(&sb);
    assert_eq!(got.len(), 2, "chat_member is not sent by default: {got:?}");
    assert_eq!(
        got[0]["my_chat_member"]["new_chat_member"]["status"],
        "member"
    );
    assert_eq!(
        got[1]["message"]["new_chat_members"][0]["first_name"],
        "Bea"
    );
    let admins = ok(&sb, "getChatAdministrators", json!({"chat_id": group}));
    assert_eq!(admins[0]["status"], "creator");
    assert_eq!(
        ok(
            &sb,
            "getChatMember",
            json!({"chat_id": group, "user_id": 702})
        )["status"],
        "member"
    );
    // Asking for chat_member (and then an empty list, the default again).
    updates(
        &sb,
        json!({"allowed_updates": ["message", "chat_member"], "timeout": 0}),
    );
    sb.control_post(
        &format!("bots/{BOT}/members"),
        json!({"chat_id": group, "user_id": 702, "action": "leave"}),
    );
    let got = drain(&sb);
    assert!(
        got.iter()
            .any(|u| u["chat_member"]["new_chat_member"]["status"] == "left"),
        "{got:?}"
    );
    assert_eq!(
        ok(
            &sb,
            "getChatMember",
            json!({"chat_id": group, "user_id": 702})
        )["status"],
        "left"
    );
    updates(&sb, json!({"allowed_updates": [], "timeout": 0}));
    sb.control_post(
        &format!("bots/{BOT}/members"),
        json!({"chat_id": group, "user_id": 703, "action": "join"}),
    );
    assert_eq!(
        drain(&sb).len(),
        1,
        "an empty allowed_updates is the default set"
    );
}

#[test]
fn reactions_both_ways_and_blocking() {
    let (sb, user_message) = setup();
    drain(&sb);
    ok(
        &sb,
        "setMessageReaction",
        json!({"chat_id": USER, "message_id": user_message, "reaction": [{"type": "emoji", "emoji": "👍"}]}),
    );
    refused(
        &sb,
        "setMessageReaction",
        json!({"chat_id": USER, "message_id": user_message, "reaction": [{"type": "emoji", "emoji": "🦀"}]}),
        400,
        "Bad Request: REACTION_INVALID",
    );
    refused(
        &sb,
        "setMessageReaction",
        json!({"chat_id": USER, "message_id": 31_337, "reaction": []}),
        400,
        "Bad Request: message to react not found",
    );
    let m = ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "react to me"}),
    );
    let react = json!({"user_id": USER, "message_id": m["message_id"], "emoji": "🔥"});
    sb.control_post(&format!("bots/{BOT}/react"), react.clone());
    assert!(
        drain(&sb).is_empty(),
        "message_reaction is not sent by default"
    );
    updates(
        &sb,
        json!({"allowed_updates": ["message", "message_reaction"], "timeout": 0}),
    );
    sb.control_post(
        &format!("bots/{BOT}/react"),
        json!({"user_id": USER, "message_id": m["message_id"]}),
    );
    let got = drain(&sb);
    assert_eq!(
        got[0]["message_reaction"]["old_reaction"][0]["emoji"], "🔥",
        "{got:?}"
    );
    // The user edits a message: edited_message (in the default set).
    updates(&sb, json!({"allowed_updates": [], "timeout": 0}));
    sb.control_post(
        &format!("bots/{BOT}/edit"),
        json!({"user_id": USER, "message_id": user_message, "text": "hello again /start"}),
    );
    let got = drain(&sb);
    assert_eq!(got[0]["edited_message"]["text"], "hello again /start");
    assert!(got[0]["edited_message"]["edit_date"].is_i64());
    // Blocking: my_chat_member, then 403.
    sb.control_post(&format!("bots/{BOT}/block"), json!({"user_id": USER}));
    let got = drain(&sb);
    assert_eq!(
        got[0]["my_chat_member"]["new_chat_member"]["status"],
        "kicked"
    );
    refused(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "still there?"}),
        403,
        "Forbidden: bot was blocked by the user",
    );
    sb.control_post(
        &format!("bots/{BOT}/block"),
        json!({"user_id": USER, "blocked": false}),
    );
    ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "welcome back"}),
    );
}

#[test]
fn webhook_info_commands_menu_button_close_and_log_out() {
    let (sb, _) = setup();
    let info = ok(&sb, "getWebhookInfo", json!({}));
    assert_eq!(
        (info["url"].as_str(), info["pending_update_count"].as_i64()),
        (Some(""), Some(1))
    );
    ok(
        &sb,
        "setMyCommands",
        json!({"commands": [{"command": "start", "description": "Start"}]}),
    );
    assert_eq!(ok(&sb, "getMyCommands", json!({}))[0]["command"], "start");
    ok(&sb, "deleteMyCommands", json!({}));
    assert_eq!(ok(&sb, "getMyCommands", json!({})), json!([]));
    ok(
        &sb,
        "setChatMenuButton",
        json!({"menu_button": {"type": "commands"}}),
    );
    refused(
        &sb,
        "setChatMenuButton",
        json!({"menu_button": "{"}),
        400,
        "Bad Request: can't parse menu button JSON object",
    );
    // close is refused in the first 10 minutes, as on Telegram.
    let (status, body) = sb.call(TOKEN, "close", json!({}));
    assert_eq!(status, 429, "{body}");
    assert!(
        body["parameters"]["retry_after"].as_u64().unwrap_or(0) > 500,
        "{body}"
    );
    assert_eq!(ok(&sb, "logOut", json!({})), json!(true));
    let (status, _) = sb.call(TOKEN, "getMe", json!({}));
    assert_eq!(status, 401, "a logged-out bot is unauthorized");
}

#[test]
fn group_pacing_answers_429_past_20_messages_a_minute() {
    let (sb, _) = setup();
    let group = -5005;
    sb.control_post(
        &format!("bots/{BOT}/members"),
        json!({"chat_id": group, "user_id": USER, "action": "join", "bot": true}),
    );
    sb.control_post("limits", json!({"per_group_per_min": 20}));
    for n in 0..20 {
        ok(
            &sb,
            "sendMessage",
            json!({"chat_id": group, "text": format!("m{n}")}),
        );
    }
    let (status, body) = sb.call(
        TOKEN,
        "sendMessage",
        json!({"chat_id": group, "text": "one too many"}),
    );
    assert_eq!(status, 429, "{body}");
    let retry = body["parameters"]["retry_after"]
        .as_u64()
        .expect("retry_after");
    assert!((50..=60).contains(&retry), "{body}");
    assert_eq!(
        body["description"],
        format!("Too Many Requests: retry after {retry}")
    );
    ok(
        &sb,
        "sendMessage",
        json!({"chat_id": USER, "text": "private chats are not paced"}),
    );
}

#[test]
fn repeating_an_offset_is_slowed_down_for_long_polls_too() {
    let (sb, _) = setup();
    sb.send_text(BOT, USER, USER, "two");
    let first = updates(&sb, json!({"timeout": 1}));
    assert_eq!(first.len(), 2);
    // The same offset again within 0.5 s: cut to one update, at once.
    let t = Instant::now();
    let second = updates(&sb, json!({"timeout": 1}));
    assert_eq!(
        second.len(),
        1,
        "a repeat within 0.5 s is cut to one update"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "pending updates come at once"
    );
    // Confirm everything; the same (new) offset twice with nothing pending:
    // the repeat's 1 s timeout becomes 3 s.
    let next = first[1]["update_id"].as_i64().expect("id") + 1;
    updates(&sb, json!({"offset": next, "timeout": 0}));
    let t = Instant::now();
    let empty = updates(&sb, json!({"offset": next, "timeout": 1}));
    let held = t.elapsed();
    assert!(empty.is_empty());
    assert!(held >= Duration::from_millis(2500), "held only {held:?}");
    // A poll that confirms (a new offset) is not slowed.
    let (update_id, _) = sb.send_text(BOT, USER, USER, "three");
    let t = Instant::now();
    let got = updates(&sb, json!({"offset": next, "timeout": 5}));
    assert_eq!(got[0]["update_id"], json!(update_id));
    let t2 = Instant::now();
    updates(&sb, json!({"offset": update_id + 1, "timeout": 0}));
    assert!(
        t2.elapsed() < Duration::from_secs(2),
        "a new offset is answered at once"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn events_long_poll_and_the_chat_page_is_served() {
    let (sb, _) = setup();
    let mut response = http().get(&format!("{}/", sb.url())).call().expect("page");
    let page = String::from_utf8(body_bytes(&mut response)).expect("utf-8");
    assert!(
        page.contains("<title>botfleet sandbox chat</title>"),
        "{page}"
    );
    for external in ["<script src", "<link", "@import", "src=\"http", "url(http"] {
        assert!(!page.contains(external), "no external assets: {external}");
    }
    let bots = control_get(&sb, "bots");
    assert_eq!(bots, json!([{"id": BOT, "username": "api_bot"}]));
    let chat = control_get(&sb, &format!("bots/{BOT}/chat?chat_id={USER}"));
    assert_eq!(chat["messages"][0]["text"], "hello");
    let since = chat["next_event"].as_u64().expect("next_event");
    let url = format!(
        "{}/_sandbox/bots/{BOT}/events?since={since}&chat_id={USER}&timeout=10",
        sb.url()
    );
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let mut response = http_with_timeout(Duration::from_secs(15))
            .get(&url)
            .call()
            .expect("events");
        (body_json(&mut response), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300)); // Let the poll start waiting.
    ok(&sb, "sendMessage", json!({"chat_id": USER, "text": "live"}));
    let (body, took) = waiter.join().expect("events thread");
    assert!(
        took < Duration::from_secs(5),
        "the event woke the poll: {took:?}"
    );
    assert_eq!(body["result"]["events"][0]["kind"], "message", "{body}");
    assert_eq!(body["result"]["events"][0]["message"]["text"], "live");
    wait_until(Duration::from_secs(5), "the sent record", || {
        sb.sent(BOT).len() == 1
    });
}

#[test]
fn the_remaining_methods_answer_and_refuse_as_telegram_does() {
    let (sb, user_message) = setup();
    let dice = ok(&sb, "sendDice", json!({"chat_id": USER}));
    assert!(
        (1..=6).contains(&dice["dice"]["value"].as_i64().unwrap_or(0)),
        "{dice}"
    );
    let (status, note) = upload(
        &sb,
        "sendVideoNote",
        &[("chat_id", &USER.to_string())],
        &[("video_note", "n.mp4", b"mp4")],
    );
    assert_eq!(status, 200, "{note}");
    assert!(note["result"]["video_note"]["length"].is_i64(), "{note}");
    ok(
        &sb,
        "sendChatAction",
        json!({"chat_id": USER, "action": "typing"}),
    );
    let a = ok(&sb, "sendMessage", json!({"chat_id": USER, "text": "a"}));
    let b = ok(&sb, "sendMessage", json!({"chat_id": USER, "text": "b"}));
    assert_eq!(
        ok(
            &sb,
            "deleteMessages",
            json!({"chat_id": USER, "message_ids": [a["message_id"], b["message_id"]]})
        ),
        json!(true)
    );
    refused(
        &sb,
        "deleteMessages",
        json!({"chat_id": USER, "message_ids": []}),
        400,
        "Bad Request: message identifiers are not specified",
    );
    assert_eq!(
        ok(&sb, "getChatMemberCount", json!({"chat_id": USER})),
        json!(2)
    );
    assert_eq!(
        ok(&sb, "getUserProfilePhotos", json!({"user_id": USER}))["total_count"],
        0
    );
    ok(
        &sb,
        "unpinChatMessage",
        json!({"chat_id": USER, "message_id": user_message}),
    );
    ok(&sb, "unpinChatMessage", json!({"chat_id": USER}));
    assert_eq!(
        ok(&sb, "getChatMenuButton", json!({})),
        json!({"type": "commands"})
    );
    ok(
        &sb,
        "setChatMenuButton",
        json!({"menu_button": {"type": "web_app", "text": "Open", "web_app": {"url": "https://example.org"}}}),
    );
    assert_eq!(ok(&sb, "getChatMenuButton", json!({}))["text"], "Open");
    refused(
        &sb,
        "setWebhook",
        json!({"url": "http://example.org/hook"}),
        400,
        "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
    );
    refused(
        &sb,
        "leaveChat",
        json!({"chat_id": USER}),
        400,
        "Bad Request: chat member status can't be changed in private chats",
    );
    let group = -6006;
    sb.control_post(
        &format!("bots/{BOT}/members"),
        json!({"chat_id": group, "user_id": USER, "action": "join", "bot": true}),
    );
    assert_eq!(ok(&sb, "leaveChat", json!({"chat_id": group})), json!(true));
    refused(
        &sb,
        "getChat",
        json!({"chat_id": group}),
        400,
        "Bad Request: chat not found",
    );
    refused(
        &sb,
        "sendMessage",
        json!({"text": "x"}),
        400,
        "Bad Request: chat_id is empty",
    );
    refused(
        &sb,
        "editMessageText",
        json!({"chat_id": USER, "message_id": "abc", "text": "x"}),
        400,
        "Bad Request: message_id is not a valid Integer",
    );
    let (status, body) = sb.call(TOKEN, "sendInvoice", json!({}));
    assert_eq!(
        (status, body["description"].as_str()),
        (404, Some("Not Found: method not found"))
    );
}

#[test]
fn the_in_process_sandbox_names_users_and_presses_buttons() {
    use botfleet::sandbox::{Sandbox, SandboxOptions};
    let sandbox = Sandbox::start(&SandboxOptions::default()).expect("sandbox starts");
    sandbox.register_bot(TOKEN, "api_bot").expect("register");
    sandbox.name_user(BOT, USER, "Ann").expect("name");
    sandbox.inject_text(BOT, USER, USER, "hi").expect("inject");
    let url = format!("{}/bot{TOKEN}/", sandbox.url());
    let call = |method: &str, params: Value| -> Value {
        let mut r = http()
            .post(&format!("{url}{method}"))
            .header("Content-Type", "application/json")
            .send(params.to_string())
            .expect("call");
        body_json(&mut r)
    };
    let got = call("getUpdates", json!({}));
    assert_eq!(
        got["result"][0]["message"]["from"]["first_name"], "Ann",
        "{got}"
    );
    let next = got["result"][0]["update_id"].as_i64().expect("id") + 1;
    let m = call(
        "sendMessage",
        json!({"chat_id": USER, "text": "go?", "reply_markup": {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}}),
    );
    let message_id = m["result"]["message_id"].as_i64().expect("message_id");
    let update_id = sandbox
        .press(BOT, USER, USER, message_id, "go")
        .expect("pressed");
    let got = call("getUpdates", json!({"offset": next}));
    assert_eq!(got["result"][0]["update_id"], json!(update_id));
    assert_eq!(got["result"][0]["callback_query"]["data"], "go");
    assert!(sandbox.press(BOT, USER, USER, message_id, "nope").is_err());
    sandbox.shutdown();
}
