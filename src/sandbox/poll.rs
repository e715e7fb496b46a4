//! getUpdates: offsets, limits, long polls waiting on their bot's
//! condvar (another bot's calls never wake them), the 409s between polls and webhooks, and the real server's
//! slowing of a loop that repeats one offset. It never holds the lock while
//! it sleeps.

use super::faults::close_without_reply;
use super::state;
use super::{api_err, api_ok, bad_request, http, send, server, Reply, Shared, REPEAT_WINDOW};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a getUpdates call ends.
enum PollEnd {
    Reply(Reply),
    /// A 409 that must be answered this much later.
    Late(Reply, Duration),
    Drop,
}

pub(super) fn get_updates(
    shared: &Arc<Shared>,
    request: server::Request,
    bot_id: u64,
    params: &http::Params,
) {
    let offset = match params.int("offset") {
        Some(Ok(o)) => Some(o),
        Some(Err(())) => return send(request, bad_request("wrong parameter offset specified")),
        None => None,
    };
    let mut limit = match params.int("limit") {
        Some(Ok(l)) => l.clamp(1, 100) as usize,
        _ => 100,
    };
    let timeout = match params.int("timeout") {
        Some(Ok(t)) => t.clamp(0, 50) as u64,
        _ => 0,
    };
    let allowed = params.json("allowed_updates").and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
    });
    let arrived = Instant::now();
    let mut st = shared.lock();
    let bot = st.bots.get_mut(&bot_id).expect("authorized bot");
    if bot.webhook.is_some() {
        drop(st);
        return send(request, api_err(409, state::CONFLICT_WEBHOOK_ACTIVE));
    }
    if let Some(allowed) = allowed {
        bot.allowed_updates = allowed;
    }
    // Two polls overlap only if the older one's client is still there: a
    // client that died (its socket closed) is not polling any more, and the
    // real server's front end drops such a request at once too.
    let live_others = bot
        .poll_peers
        .iter()
        .filter(|(_, fd)| !crate::sys::peer_closed(*fd))
        .count() as u64;
    bot.current_get_updates += 1;
    bot.last_get_updates_at_us = crate::sys::monotonic_usec().unwrap_or(0);
    bot.max_concurrent_get_updates = bot.max_concurrent_get_updates.max(live_others + 1);
    bot.poll_ticket += 1;
    let ticket = bot.poll_ticket;
    bot.poll_peers.push((ticket, request.raw_fd()));
    // A tight loop repeating one offset is slowed down, as the real server
    // does it (Client.cpp process_get_updates_query), for short and long
    // polls alike: within 3 s of the last poll's start a timeout under 3 s
    // becomes 3 s (a poll with nothing to deliver waits 3 s), and within
    // 0.5 s the answer is cut to one update.
    let mut wait_secs = timeout;
    let same_offset = offset.unwrap_or(0);
    if let Some((last_offset, at)) = bot.last_poll {
        let since = arrived.duration_since(at);
        if last_offset.unwrap_or(0) == same_offset {
            if timeout < 3 && since < REPEAT_WINDOW {
                wait_secs = 3;
            }
            if since < Duration::from_millis(500) {
                limit = 1;
            }
        }
    }
    bot.last_poll = Some((offset, arrived));
    // A long poll ends the one waiting before it.
    let generation = if timeout > 0 {
        bot.poll_generation += 1;
        bot.poll_terminated_by = state::CONFLICT_OTHER_POLL;
        bot.wake.notify_all();
        Some(bot.poll_generation)
    } else {
        None
    };
    bot.confirm(offset);
    let deadline = arrived + Duration::from_secs(wait_secs);
    let end = loop {
        if shared.stopping() {
            break PollEnd::Drop;
        }
        let now = Instant::now();
        let bot = st.bots.get_mut(&bot_id).expect("bots are never removed");
        if bot.revoked {
            break PollEnd::Reply(api_err(401, "Unauthorized"));
        }
        if generation.is_some_and(|g| g != bot.poll_generation) {
            let reason = bot.poll_terminated_by;
            let reply = api_err(409, reason);
            if reason == state::CONFLICT_OTHER_POLL {
                let repeat = bot
                    .last_conflict
                    .is_some_and(|t| now.duration_since(t) < REPEAT_WINDOW);
                bot.last_conflict = Some(now);
                if repeat {
                    break PollEnd::Late(reply, REPEAT_WINDOW);
                }
            }
            break PollEnd::Reply(reply);
        }
        if bot.has_pending() {
            break PollEnd::Reply(api_ok(Value::Array(bot.deliver(limit))));
        }
        if now >= deadline {
            break PollEnd::Reply(api_ok(json!([])));
        }
        st = shared.wait_for_bot(st, bot_id, deadline - now);
    };
    if let Some(bot) = st.bots.get_mut(&bot_id) {
        bot.current_get_updates -= 1;
        bot.poll_peers.retain(|(t, _)| *t != ticket);
    }
    drop(st);
    match end {
        PollEnd::Reply(reply) => send(request, reply),
        PollEnd::Late(reply, delay) => {
            shared.sleep(delay);
            if shared.stopping() {
                close_without_reply(shared, request);
            } else {
                send(request, reply);
            }
        }
        PollEnd::Drop => close_without_reply(shared, request),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Sandbox, SandboxOptions};
    use std::time::{Duration, Instant};

    fn get(url: &str) -> String {
        ureq::get(url)
            .call()
            .expect("the sandbox answers")
            .body_mut()
            .read_to_string()
            .expect("a text body")
    }

    /// A long poll of bot B sleeps through everything bot A does (users
    /// write to A, A sends and asks getMe) and wakes for B's own update.
    /// With one condvar for all bots, every one of A's calls woke it.
    #[test]
    fn one_bots_calls_leave_another_bots_long_poll_asleep() {
        let sb = Sandbox::start(&SandboxOptions::default()).expect("the sandbox starts");
        let a = sb
            .register_bot("7001:a-secret", "a_bot")
            .expect("A registers");
        let b = sb
            .register_bot("7002:b-secret", "b_bot")
            .expect("B registers");
        let url = sb.url();
        let poll = {
            let url = url.clone();
            std::thread::spawn(move || {
                get(&format!("{url}/bot7002:b-secret/getUpdates?timeout=30"))
            })
        };
        let waiting = |sb: &Sandbox| sb.shared.lock().bots[&b].current_get_updates == 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !waiting(&sb) {
            assert!(Instant::now() < deadline, "B's long poll never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Seen under the lock, the poll is asleep on B's condvar (it holds
        // the lock from its count until it waits).
        let before = sb.shared.lock().bots[&b].wakeups;
        for n in 0..20 {
            sb.inject_text(a, 5, 5, &format!("to A {n}"))
                .expect("A exists");
            let sent = get(&format!(
                "{url}/bot7001:a-secret/sendMessage?chat_id=5&text=from+A+{n}"
            ));
            assert!(sent.contains(r#""ok":true"#), "{sent}");
            let me = get(&format!("{url}/bot7001:a-secret/getMe"));
            assert!(me.contains("a_bot"), "{me}");
        }
        let after = sb.shared.lock().bots[&b].wakeups;
        // 60 calls of A; a stray (spurious) wake-up or so is allowed.
        assert!(
            after - before <= 2,
            "B's poll woke {} times for A's 60 calls",
            after - before
        );
        assert!(waiting(&sb), "B's poll is still waiting");
        sb.inject_text(b, 6, 6, "to B").expect("B exists");
        let got = poll.join().expect("the poll thread");
        assert!(got.contains("to B"), "B's poll answers B's update: {got}");
        assert!(!got.contains("to A"), "{got}");
        sb.shutdown();
    }
}
