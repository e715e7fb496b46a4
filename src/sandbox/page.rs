//! The chat page at `/` of the sandbox: one HTML file with its script and
//! style inline, embedded in the binary (no build step, no external
//! assets). A person picks a bot and a user and chats; the page talks only
//! to the control API (`/_sandbox/...`) of the same origin and long-polls
//! its `events` for the bot's messages, edits, deletions and answers.
//!
//! It must never load anything from beyond the sandbox, and never show a
//! token (the control API it uses returns none).

use super::Reply;

const INDEX_HTML: &str = include_str!("page/index.html");

/// `GET /`: the page.
pub(super) fn index() -> Reply {
    Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: INDEX_HTML.as_bytes().to_vec(),
        retry_after: None,
    }
}
