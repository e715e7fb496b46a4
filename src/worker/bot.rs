//! The bot's own logic: what one update does. A job takes one update from
//! the scheduler: built-in commands, the allow list, received files, the
//! handler; every reply goes through the send path with the update's
//! ticket, so the update is done only once its replies are out. It must
//! never send around the send path or hand the token to a handler.
//! (Past 700 lines with its unit tests: every kind of update's handling
//! shares the job's context and the reply helpers, so it stays one file.)

use super::calls::{self, Output, Prepared};
use super::commands::{self, parse_command, parse_update, Incoming, Skip};
use super::handler::{self, Confinement};
use super::media;
use super::persistent::{Answer, Persistent, Spec};
use super::protocol::{BotIdentity, CallResult};
use super::respond::{self, Out};
use super::send::{Content, Outgoing, SendPath};
use super::track::Ticket;
use super::{emit, lock, Shared};
use crate::config::Settings;
use crate::ipc::WorkerMsg;
use crate::telegram::{ApiError, BotInfo, Client};
use serde_json::Value;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `BOT_HANDLER=builtin:echo` answers with the message's own text, with no
/// process: for demos and benchmarks.
pub const BUILTIN_ECHO: &str = "builtin:echo";
/// How often a user who is not allowed is told so, at most.
const REFUSAL_EVERY: Duration = Duration::from_secs(60);

/// What the jobs need to handle updates; shared by the pool threads.
pub(super) struct Bot {
    pub(super) client: Client,
    pub(super) me: BotInfo,
    pub(super) shared: Arc<Shared>,
    pub(super) send: SendPath,
    pub(super) media: PathBuf,
    pub(super) refused: Mutex<HashMap<i64, Instant>>,
    /// STATE_DIR/data/bot-N: the handler's working directory, BOT_DATA_DIR.
    pub(super) data_dir: PathBuf,
    /// HANDLER_USER resolved (the name it was resolved from, and the result).
    pub(super) confinement: Mutex<Option<(Option<String>, Confinement)>>,
    /// The persistent handler, while BOT_HANDLER_MODE=persistent.
    pub(super) persistent: Mutex<Option<Arc<Persistent>>>,
}

/// Where a handler's answer for one update goes: the send path, with the
/// update's ticket (the update is done once every call is over).
struct Sink<'a> {
    bot: &'a Bot,
    ticket: &'a Ticket,
    reply_to: Option<i64>,
}

impl Out for Sink<'_> {
    fn text(&self, chat_id: i64, text: &str) {
        self.bot
            .reply(chat_id, text, self.reply_to, Some(self.ticket));
    }

    fn call(&self, call: Prepared, queue_chat: i64) -> CallResult {
        let files = call
            .uploads
            .into_iter()
            .map(|u| (u.field, u.path, u.file_name))
            .collect();
        let method = call.method;
        match self.bot.send.call(
            queue_chat,
            &method,
            Value::Object(call.params),
            files,
            Some(self.ticket.clone()),
        ) {
            Ok(result) => CallResult::Ok(result),
            Err((code, description)) => {
                self.bot.shared.error();
                CallResult::Err {
                    error_code: i64::from(code),
                    description,
                }
            }
        }
    }
}

/// The chat key an update is scheduled under: its chat, or for updates
/// without one (inline queries) the user; 0 when it has neither.
pub fn chat_key(update: &Value) -> i64 {
    const CHAT_OF: &[&str] = &[
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_message",
        "edited_business_message",
        "message_reaction",
        "message_reaction_count",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    ];
    for kind in CHAT_OF {
        if let Some(id) = update[kind]["chat"]["id"].as_i64() {
            return id;
        }
    }
    if let Some(id) = update["callback_query"]["message"]["chat"]["id"].as_i64() {
        return id;
    }
    for kind in [
        "callback_query",
        "inline_query",
        "chosen_inline_result",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll_answer",
    ] {
        if let Some(id) = update[kind]["from"]["id"].as_i64() {
            return id;
        }
    }
    if let Some(id) = update["poll_answer"]["user"]["id"].as_i64() {
        return id;
    }
    0
}

impl Bot {
    /// Takes an update that is in the inbox: a ticket that records it done
    /// (and frees its chat) when its last clone drops, and a job in its
    /// chat's queue.
    /// `chat` is `chat_key` of the update, `raw` its JSON text: queued as
    /// text (a fraction of a parsed update's memory), parsed when its turn
    /// comes.
    pub(super) fn take(self: &Arc<Bot>, id: i64, chat: i64, raw: String) {
        let Some(pool) = self.shared.pool.get() else {
            log::error!("update {id} arrived before the scheduler; it stays in the inbox");
            return;
        };
        let shared = Arc::clone(&self.shared);
        let release = pool.clone();
        let ticket = Ticket::new(id, chat, move |id| {
            if let Some(inbox) = shared.inbox.get() {
                if let Err(e) = lock(inbox).done(id) {
                    log::warn!("cannot record update {id} as done ({e}); it may be handled again after a restart");
                }
            }
            {
                let mut c = lock(&shared.counters);
                c.updates += 1;
                c.last_update_ms = Some(super::now_ms());
            }
            release.release(chat);
        });
        let bot = Arc::clone(self);
        pool.submit(chat, move || bot.handle(&raw, &ticket));
    }

    /// Handles one update, given as its JSON text (the job the scheduler
    /// runs); the ticket drops when its replies are out, and the update is
    /// done. A message in the plain shape is read without its JSON tree
    /// (`commands::parse_message_text`); the tree is built only for what
    /// needs it (a handler, a file, another update type).
    pub(super) fn handle(&self, raw: &str, ticket: &Ticket) {
        let update = Update {
            raw,
            tree: OnceCell::new(),
        };
        let msg = commands::parse_message_text(raw).map_or_else(|| parse_update(update.tree()), Ok);
        match msg {
            Ok(msg) => self.on_message(&msg, &update, ticket),
            Err(Skip::NotAMessage) => self.on_other(update.tree(), ticket),
            Err(Skip::Malformed(why)) => log::warn!("skipping a malformed update: {why}"),
        }
    }
}

/// An update's JSON text, and its tree once something asks for it.
struct Update<'a> {
    raw: &'a str,
    tree: OnceCell<Value>,
}

impl Update<'_> {
    fn tree(&self) -> &Value {
        self.tree
            .get_or_init(|| serde_json::from_str(self.raw).unwrap_or(Value::Null))
    }
}

/// BOT_HANDLER with every word that names an existing file relative to
/// botfleet's working directory made absolute: handlers run in their data
/// directory, and `python3 handler.py` must still find `./handler.py`.
fn absolute_argv(argv: &[String]) -> Vec<String> {
    let cwd = std::env::current_dir().ok();
    argv.iter()
        .map(|w| {
            let p = std::path::Path::new(w);
            match &cwd {
                Some(cwd) if p.is_relative() && !w.is_empty() && p.is_file() => {
                    cwd.join(p).display().to_string()
                }
                _ => w.clone(),
            }
        })
        .collect()
}

impl Bot {
    /// Any update that is not a message (an edit, a button press, a
    /// channel post, a member change, ...): to the handler, when the user
    /// behind it is allowed. A stranger's button press gets a short
    /// refusal on the button; nothing else of theirs is answered.
    fn on_other(&self, update: &Value, ticket: &Ticket) {
        let settings = self.shared.settings();
        let user = calls::user_of(update).or_else(|| calls::chat_of(update));
        if let Some(user) = user.filter(|u| !settings.is_allowed(*u)) {
            log::info!("refused an update from user {user} (not in ALLOWED_USER_IDS)");
            if let Some(refusal) = respond::refusal_answer(update) {
                let sink = Sink {
                    bot: self,
                    ticket,
                    reply_to: None,
                };
                sink.call(refusal, calls::chat_of(update).unwrap_or(user));
            }
            return;
        }
        let sink = Sink {
            bot: self,
            ticket,
            reply_to: None,
        };
        match settings.handler.as_ref() {
            Some(argv) if !(argv.len() == 1 && argv[0] == BUILTIN_ECHO) => {
                self.run_program(argv, update, &settings, ticket, None)
            }
            // Nothing handles it: a pressed button still stops spinning.
            _ => {
                respond::carry_out(Output::Empty, update, &self.data_dir, &sink);
            }
        }
    }

    /// HANDLER_USER as a confinement (resolved once per value). Every
    /// program handler asks for it before it starts, so the handler's
    /// directory is made here, not at start-up (a worker with a built-in
    /// handler never needs it; each inode a start creates costs).
    fn confinement(&self, settings: &Settings) -> Confinement {
        let mut cached = lock(&self.confinement);
        if let Some((user, c)) = cached.as_ref() {
            if *user == settings.handler_user {
                return c.clone();
            }
        }
        if let Err(e) = std::fs::create_dir_all(&self.data_dir) {
            log::error!(
                "cannot create the handler's directory {}: {e}",
                self.data_dir.display()
            );
        }
        let c = match Confinement::for_user(settings.handler_user.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                log::error!("HANDLER_USER: {e}; handlers run without capabilities instead");
                Confinement {
                    user: None,
                    drop_capabilities: crate::sys::is_root(),
                }
            }
        };
        if let Some((uid, gid)) = c.user {
            if let Err(e) = std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid)) {
                log::warn!(
                    "cannot give {} to HANDLER_USER: {e}",
                    self.data_dir.display()
                );
            }
        }
        *cached = Some((settings.handler_user.clone(), c.clone()));
        c
    }

    /// The persistent handler for these settings: started, or told about
    /// new ones; None in exec mode (a running one is stopped).
    pub(super) fn persistent(&self, settings: &Settings) -> Option<Arc<Persistent>> {
        let argv = settings
            .handler
            .as_ref()
            .filter(|a| settings.handler_persistent && !(a.len() == 1 && a[0] == BUILTIN_ECHO));
        let mut slot = lock(&self.persistent);
        let Some(argv) = argv else {
            if let Some(old) = slot.take() {
                old.stop();
            }
            return None;
        };
        let base = match self.shared.settings_env.read() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let spec = Spec {
            argv: absolute_argv(argv),
            env: respond::env_for(
                &base,
                (self.shared.index, &self.me.username),
                &self.data_dir,
                None,
            ),
            dir: self.data_dir.clone(),
            bot: BotIdentity {
                id: self.me.id,
                username: self.me.username.clone(),
                index: self.shared.index,
            },
            timeout: settings.handler_timeout,
            concurrency: settings.handler_concurrency,
            confinement: self.confinement(settings),
            max_memory: settings.handler_max_memory,
        };
        if let Some(p) = slot.as_ref() {
            p.update(spec);
            return Some(Arc::clone(p));
        }
        match Persistent::start(spec) {
            Ok(p) => {
                let p = Arc::new(p);
                *slot = Some(Arc::clone(&p));
                Some(p)
            }
            Err(e) => {
                log::error!("cannot start the persistent handler's manager: {e}");
                None
            }
        }
    }

    /// Stops the persistent handler (EOF, SIGTERM, SIGKILL; bounded).
    pub(super) fn stop_handler(&self, grace: Duration) {
        let p = lock(&self.persistent).take();
        if let Some(p) = p {
            p.stop_within(grace);
        }
    }

    /// Runs BOT_HANDLER for an update (exec or persistent) and carries out
    /// its answer through the send path.
    fn run_program(
        &self,
        argv: &[String],
        update: &Value,
        settings: &Settings,
        ticket: &Ticket,
        reply_to: Option<i64>,
    ) {
        let sink = Sink {
            bot: self,
            ticket,
            reply_to,
        };
        let chat = calls::chat_of(update);
        let failed = |timeout: bool| {
            self.shared.error();
            if let Some(chat) = chat {
                self.reply(chat, respond::error_text(timeout), reply_to, Some(ticket));
            }
            respond::carry_out(Output::Empty, update, &self.data_dir, &sink);
        };
        if let Some(p) = self.persistent(settings) {
            let (id, answer) = p.handle(update);
            match answer {
                Answer::Calls(list) => {
                    let results =
                        respond::carry_out(Output::Calls(list), update, &self.data_dir, &sink);
                    p.results(&id, &results);
                }
                Answer::Error(message) => {
                    log::error!(
                        "the handler failed update {} in {}: {message}",
                        ticket.update_id(),
                        chat_label(chat)
                    );
                    failed(false);
                }
                Answer::Timeout => {
                    log::error!(
                        "the handler did not answer update {} in {} within {} s",
                        ticket.update_id(),
                        chat_label(chat),
                        settings.handler_timeout.as_secs()
                    );
                    failed(true);
                }
                // The worker is stopping: the update is not done; it stays
                // in the inbox and is handled again after the restart.
                Answer::Stopped => std::mem::forget(ticket.clone()),
            }
            return;
        }
        let base = match self.shared.settings_env.read() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let env = respond::env_for(
            &base,
            (self.shared.index, &self.me.username),
            &self.data_dir,
            Some(update),
        );
        let typing = || {
            if let Some(chat) = chat {
                if let Err(e) = self.client.send_chat_action(chat, "typing") {
                    log::debug!("typing action failed: {e}");
                }
            }
        };
        typing();
        let argv = absolute_argv(argv);
        let run = handler::Run {
            argv: &argv,
            env: &env,
            stdin: update.to_string().into_bytes(),
            timeout: settings.handler_timeout,
            label: match chat {
                Some(c) => format!("chat {c}"),
                None => format!("update {}", ticket.update_id()),
            },
            dir: Some(&self.data_dir),
            clear_env: true,
            confinement: self.confinement(settings),
            max_memory: settings.handler_max_memory,
        };
        match handler::run(run, typing) {
            Ok(out) => {
                respond::carry_out(calls::parse_output(&out), update, &self.data_dir, &sink);
            }
            Err(e) => {
                log::error!(
                    "handler for update {} in {}: {e}",
                    ticket.update_id(),
                    chat_label(chat)
                );
                failed(matches!(e, handler::HandlerError::Timeout(_)));
            }
        }
    }

    /// Sends a reply (split at 4096 characters) through the send path: on
    /// this job's thread when pacing lets it go now, else queued. With
    /// HANDLER_CONCURRENCY=1 always queued: the round trip on the only job
    /// thread would hold every other chat back meanwhile (a hung connection
    /// for up to the call's timeout).
    fn reply(&self, chat_id: i64, text: &str, reply_to: Option<i64>, ticket: Option<&Ticket>) {
        let here = self.shared.settings().handler_concurrency > 1;
        for (i, part) in handler::split_message(text, 4096).into_iter().enumerate() {
            let msg = Outgoing {
                chat_id,
                content: Content::Text(part),
                reply_to: if i == 0 { reply_to } else { None },
                ticket: ticket.cloned(),
                report: None,
            };
            if here {
                self.send.send_here(msg);
            } else {
                self.send.send(msg);
            }
        }
    }

    fn on_message(&self, msg: &Incoming, update: &Update<'_>, ticket: &Ticket) {
        let settings = self.shared.settings();
        let allowed = settings.is_allowed(msg.user_id);
        let is_admin = settings.is_admin(msg.user_id);
        let command = msg
            .text
            .as_deref()
            .filter(|_| msg.file_kind.is_none())
            .and_then(|t| parse_command(t, &self.me.username));
        let reply_to = Some(msg.message_id);
        if command.as_ref().is_some_and(|c| c.name == "whoami") {
            let text = format!(
                "Your user id: {}\nThis chat's id: {}",
                msg.user_id, msg.chat_id
            );
            self.reply(msg.chat_id, &text, reply_to, Some(ticket));
            return;
        }
        if !allowed {
            log::info!(
                "refused a message from user {} (not in ALLOWED_USER_IDS)",
                msg.user_id
            );
            let mut refused = lock(&self.refused);
            let due = refused
                .get(&msg.user_id)
                .is_none_or(|t| t.elapsed() >= REFUSAL_EVERY);
            if due {
                refused.insert(msg.user_id, Instant::now());
                drop(refused);
                self.reply(
                    msg.chat_id,
                    "Sorry, this bot is private. Send /whoami and give your id to its operator.",
                    reply_to,
                    Some(ticket),
                );
            }
            return;
        }
        if let Some(kind) = msg.file_kind {
            self.receive_file(msg, &update.tree()["message"], kind, ticket);
            return;
        }
        let builtin = command
            .as_ref()
            .and_then(|cmd| self.builtin(cmd, &settings, is_admin, msg));
        if let Some(text) = builtin {
            self.reply(msg.chat_id, &text, reply_to, Some(ticket));
            return;
        }
        if command.as_ref().is_some_and(|c| c.name == "reload_config") {
            return; // the supervisor answers through ReloadResult
        }
        self.run_handler(msg, update, &settings, ticket);
    }

    /// A built-in command's answer, or None when no built-in takes it.
    fn builtin(
        &self,
        cmd: &commands::CommandCall<'_>,
        settings: &Settings,
        is_admin: bool,
        msg: &Incoming,
    ) -> Option<String> {
        let admin_only = matches!(
            cmd.name.as_str(),
            "reload_config" | "config_status" | "config_help"
        );
        if admin_only && !is_admin {
            log::info!(
                "refused /{} from user {} (not an admin)",
                cmd.name,
                msg.user_id
            );
            return Some("Sorry, that command is for admins only.".to_string());
        }
        Some(match cmd.name.as_str() {
            "start" | "help" => commands::help_text(&self.me.username, settings.handler.is_some(), is_admin),
            "ping" => "pong".to_string(),
            "status" => {
                let c = lock(&self.shared.counters).clone();
                format!(
                    "bot-{} @{}\nup {}\nupdates handled: {}\nerrors: {}",
                    self.shared.index,
                    self.me.username,
                    commands::human_duration(self.shared.started.elapsed().as_secs()),
                    c.updates,
                    c.errors
                )
            }
            "reload_config" => {
                emit(&WorkerMsg::ReloadRequest { chat_id: msg.chat_id });
                return None;
            }
            "config_status" => config_status(settings),
            "config_help" => "botfleet reads its settings from .env (see .env.example and docs/configuration.md). Edit the file and the fleet applies the change within seconds (or send /reload_config). A broken file is rejected whole and the running config stays.".to_string(),
            _ => return None,
        })
    }

    fn run_handler(
        &self,
        msg: &Incoming,
        update: &Update<'_>,
        settings: &Settings,
        ticket: &Ticket,
    ) {
        let reply_to = Some(msg.message_id);
        let Some(argv) = settings.handler.as_ref() else {
            let text = if msg.text.as_deref().is_some_and(|t| t.starts_with('/')) {
                "Unknown command: see /help."
            } else {
                "I only answer the built-in commands (see /help): no handler program is set up."
            };
            self.reply(msg.chat_id, text, reply_to, Some(ticket));
            return;
        };
        if argv.len() == 1 && argv[0] == BUILTIN_ECHO {
            let text = msg.text.as_deref().unwrap_or_default();
            if !text.trim().is_empty() {
                self.reply(msg.chat_id, text, echo_reply_to(msg), Some(ticket));
            }
            return;
        }
        self.run_program(argv, update.tree(), settings, ticket, reply_to);
    }

    fn receive_file(&self, msg: &Incoming, message: &Value, kind: &str, ticket: &Ticket) {
        let reply_to = Some(msg.message_id);
        let Some(file) = media::attachment(message, kind) else {
            log::warn!("a {kind} message without a usable file was skipped");
            return;
        };
        let too_big = || {
            format!(
                "That file is too big for me: bots can download files up to {} MB.",
                media::MAX_DOWNLOAD / (1024 * 1024)
            )
        };
        if file.size.is_some_and(|s| s > media::MAX_DOWNLOAD) {
            self.reply(msg.chat_id, &too_big(), reply_to, Some(ticket));
            return;
        }
        let info = match self.client.get_file(&file.file_id) {
            Ok(i) => i,
            Err(ApiError::BadRequest { description, .. }) if description.contains("too big") => {
                self.reply(msg.chat_id, &too_big(), reply_to, Some(ticket));
                return;
            }
            Err(e) => {
                self.shared.error();
                log::warn!("getFile for a {kind} in chat {} failed: {e}", msg.chat_id);
                self.reply(
                    msg.chat_id,
                    "❌ I could not fetch your file; please send it again.",
                    reply_to,
                    Some(ticket),
                );
                return;
            }
        };
        let received = self.media.join("received");
        // Made when the first file comes, not at start-up.
        if let Err(e) = std::fs::create_dir_all(&received) {
            log::warn!("cannot create {}: {e}", received.display());
        }
        // Download under a hidden name, then link it into place without
        // overwriting anything (two chats may send the same name at once).
        let incoming = received.join(format!(".incoming-{}-{}", msg.update_id, file.name));
        let saved = self
            .client
            .download_file(&info.file_path, &incoming, Some(media::MAX_DOWNLOAD))
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let placed = media::place_no_clobber(&incoming, &received, &file.name)
                    .map_err(|e| e.to_string());
                if placed.is_err() {
                    if let Err(e) = std::fs::remove_file(&incoming) {
                        log::warn!("cannot remove {}: {e}", incoming.display());
                    }
                }
                placed.map(|p| (p, bytes))
            });
        match saved {
            Ok((path, bytes)) => {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
                log::info!(
                    "saved a {kind} from user {} as {}",
                    msg.user_id,
                    path.display()
                );
                self.reply(
                    msg.chat_id,
                    &format!("📥 Saved {name} ({bytes} bytes)."),
                    reply_to,
                    Some(ticket),
                );
            }
            Err(e) => {
                self.shared.error();
                log::error!("cannot save a {kind} from user {}: {e}", msg.user_id);
                self.reply(
                    msg.chat_id,
                    "❌ I could not save your file (the server's disk may be full).",
                    reply_to,
                    Some(ticket),
                );
            }
        }
    }
}

fn config_status(settings: &Settings) -> String {
    let list = |v: &[i64]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.len().to_string()
        }
    };
    let env = std::env::vars()
        .filter(|(k, _)| crate::config::is_known_key(k))
        .count();
    format!(
        "settings known to botfleet in this worker's environment: {env}\n\
         API: {}\npoll timeout: {} s\nallowed users: {}\nadmins: {}\nmedia recipients: {}\n\
         handler: {}\nhandler timeout: {} s, concurrency {}\nsend rate: {}/s per chat, {}/s per bot",
        settings.api_url,
        settings.poll_timeout_secs,
        if settings.allowed_users.is_empty() { "everyone".to_string() } else { settings.allowed_users.len().to_string() },
        list(&settings.admin_users),
        list(settings.recipients()),
        if settings.handler.is_some() { "set" } else { "none" },
        settings.handler_timeout.as_secs(),
        settings.handler_concurrency,
        settings.send_rate_per_chat,
        settings.send_rate_per_bot,
    )
}

/// The message builtin:echo quotes: in a group (where an answer without
/// one loses its context among other people's messages) the one it
/// answers; in a private chat none, as python-telegram-bot's `reply_text`
/// has long done (a quote there repeats the message just above it, and
/// Telegram's answer then carries the quoted message too).
fn echo_reply_to(msg: &Incoming) -> Option<i64> {
    (!msg.private).then_some(msg.message_id)
}

/// `chat N` for log lines (the form `logging` reads a chat id from), or
/// `no chat` for updates without one (inline queries, polls).
fn chat_label(chat: Option<i64>) -> String {
    chat.map_or_else(|| "no chat".to_string(), |c| format!("chat {c}"))
}

#[cfg(test)]
mod tests {
    use super::{chat_key, echo_reply_to};
    use crate::worker::commands::parse_update;
    use serde_json::json;

    #[test]
    fn echo_quotes_in_groups_only() {
        let msg = |chat: serde_json::Value| {
            let u = json!({"update_id": 1, "message": {"message_id": 42, "chat": chat, "from": {"id": 3}, "text": "hi"}});
            parse_update(&u).expect("a message")
        };
        assert_eq!(
            echo_reply_to(&msg(json!({"id": 3, "type": "private"}))),
            None
        );
        assert_eq!(
            echo_reply_to(&msg(json!({"id": -7, "type": "group"}))),
            Some(42)
        );
        assert_eq!(
            echo_reply_to(&msg(json!({"id": -1_001_234, "type": "supergroup"}))),
            Some(42)
        );
    }

    #[test]
    fn every_update_type_has_its_chat_key() {
        let chat =
            |kind: &str| json!({"update_id": 1, kind: {"chat": {"id": -7}, "from": {"id": 3}}});
        for kind in [
            "message",
            "edited_message",
            "channel_post",
            "my_chat_member",
        ] {
            assert_eq!(chat_key(&chat(kind)), -7, "{kind}");
        }
        let cb = json!({"callback_query": {"from": {"id": 3}, "message": {"chat": {"id": -9}}}});
        assert_eq!(chat_key(&cb), -9, "a callback goes with its message's chat");
        let inline = json!({"inline_query": {"from": {"id": 3}, "query": "x"}});
        assert_eq!(chat_key(&inline), 3, "an inline query goes with its user");
        assert_eq!(chat_key(&json!({"update_id": 2})), 0);
    }
}
