//! What the sandbox knows of a bot's chats: their messages (users' and the
//! bot's, edits applied), the users' names, group members, and the events
//! the chat page follows. Pure bookkeeping under the sandbox's lock.

use super::{chat_json, unix_now, Bot};
use serde_json::{json, Map, Value};

/// Events kept per bot for the chat page and `/_sandbox/.../events`.
const MAX_EVENTS: usize = 10_000;
/// Messages kept per bot (the oldest go first), so a long benchmark does
/// not grow the sandbox without bound.
const MAX_MESSAGES: usize = 100_000;

impl Bot {
    /// Records an event for the chat page; returns its seq.
    pub fn event(&mut self, kind: &str, chat_id: i64, mut body: Map<String, Value>) -> u64 {
        self.next_event += 1;
        body.insert("seq".into(), json!(self.next_event));
        body.insert("kind".into(), json!(kind));
        body.insert("chat_id".into(), json!(chat_id));
        self.events.push_back(Value::Object(body));
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
        self.next_event
    }

    /// Keeps a message (new or edited), forgetting the oldest past the cap.
    pub fn keep_message(&mut self, key: (i64, i64), message: Value) {
        if self.messages.insert(key, message).is_none() {
            self.message_order.push_back(key);
            while self.message_order.len() > MAX_MESSAGES {
                if let Some(old) = self.message_order.pop_front() {
                    self.messages.remove(&old);
                }
            }
        }
    }

    /// Stores a message and records it as an event of `kind`.
    pub fn store_message(&mut self, kind: &str, message: &Value) {
        let chat_id = message["chat"]["id"].as_i64().unwrap_or(0);
        let message_id = message["message_id"].as_i64().unwrap_or(0);
        self.keep_message((chat_id, message_id), message.clone());
        let mut body = Map::new();
        body.insert("message".into(), message.clone());
        self.event(kind, chat_id, body);
    }

    /// A new message id (one sequence per bot, shared by all its chats).
    pub fn alloc_message_id(&mut self) -> i64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    /// A user as Telegram shows them (the name they wrote with, or a
    /// made-up one).
    pub fn user_json(&self, user_id: i64) -> Value {
        self.users.get(&user_id).cloned().unwrap_or_else(|| {
            json!({"id": user_id, "is_bot": false, "first_name": format!("User{user_id}"),
                   "username": format!("user{user_id}")})
        })
    }

    /// Makes what a user wrote (any update) known: the chat, the user,
    /// and the message itself.
    pub fn learn_from_update(&mut self, update: &Map<String, Value>) {
        for key in [
            "message",
            "edited_message",
            "channel_post",
            "business_message",
        ] {
            if let Some(m) = update.get(key).filter(|m| m.is_object()) {
                if let Some(chat_id) = m["chat"]["id"].as_i64() {
                    self.chats.insert(chat_id);
                    self.blocked.remove(&chat_id);
                    let leaving = m["left_chat_member"].is_object();
                    if let (Some(uid), true) = (m["from"]["id"].as_i64(), chat_id < 0 && !leaving) {
                        self.members.entry(chat_id).or_default().insert(uid);
                    }
                    if let Some(message_id) = m["message_id"].as_i64() {
                        self.keep_message((chat_id, message_id), m.clone());
                    }
                }
                if let Some(uid) = m["from"]["id"].as_i64() {
                    self.users.entry(uid).or_insert_with(|| m["from"].clone());
                }
            }
        }
        for key in [
            "callback_query",
            "inline_query",
            "message_reaction",
            "my_chat_member",
            "chat_member",
        ] {
            if let Some(from) = update.get(key).map(|u| {
                if u["from"].is_object() {
                    u["from"].clone()
                } else {
                    u["user"].clone()
                }
            }) {
                if let Some(uid) = from["id"].as_i64() {
                    self.users.entry(uid).or_insert(from);
                }
            }
            if let Some(chat_id) = update.get(key).and_then(|u| {
                u["chat"]["id"]
                    .as_i64()
                    .or(u["message"]["chat"]["id"].as_i64())
            }) {
                if key != "my_chat_member" {
                    self.chats.insert(chat_id);
                }
            }
        }
    }

    /// Builds a user's message in `chat_id`, makes the chat known and
    /// queues it. Returns (update_id, message_id).
    pub fn push_user_message(
        &mut self,
        user_id: i64,
        chat_id: i64,
        content: Map<String, Value>,
    ) -> (i64, i64) {
        let message_id = self.alloc_message_id();
        let mut message = Map::new();
        message.insert("message_id".into(), json!(message_id));
        message.insert("from".into(), self.user_json(user_id));
        message.insert("chat".into(), chat_json(chat_id, user_id));
        message.insert("date".into(), json!(unix_now()));
        message.extend(content);
        if let Some(text) = message.get("text").and_then(Value::as_str) {
            let found = crate::sandbox::format::detect(text);
            if !found.is_empty() && !message.contains_key("entities") {
                message.insert(
                    "entities".into(),
                    crate::sandbox::format::entities_json(&found),
                );
            }
        }
        if let Some(caption) = message.get("caption").and_then(Value::as_str) {
            let found = crate::sandbox::format::detect(caption);
            if !found.is_empty() {
                message.insert(
                    "caption_entities".into(),
                    crate::sandbox::format::entities_json(&found),
                );
            }
        }
        let message = Value::Object(message);
        let mut update = Map::new();
        update.insert("message".into(), message.clone());
        self.learn_from_update(&update);
        self.store_message("message", &message);
        (self.push_update(update), message_id)
    }
}
