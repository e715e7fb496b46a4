#!/usr/bin/env python3
"""A stateful bot for botfleet's persistent mode, standard library only.

    BOT_HANDLER="python3 examples/counter_bot.py"
    BOT_HANDLER_MODE=persistent

It speaks protocol 1 (docs/handler-protocol.md): one JSON object a line on
stdin and stdout. It counts the messages of each chat, and /counter shows a
counter with inline buttons; a press edits that same message. The counts
live in counts.json in its working directory (BOT_DATA_DIR), so they
survive restarts.
"""
import json
import os
import sys

STATE = "counts.json"


def load():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"messages": {}, "clicks": {}}


def save(state):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, STATE)


def keyboard():
    return {"inline_keyboard": [[
        {"text": "+1", "callback_data": "inc"},
        {"text": "Reset", "callback_data": "reset"},
    ]]}


def handle(update, state):
    """The calls that answer one update (chat_id and the like default
    from the update, so they are left out)."""
    if "message" in update:
        msg = update["message"]
        chat = str(msg["chat"]["id"])
        text = msg.get("text", "")
        if text.startswith("/counter"):
            n = state["clicks"].get(chat, 0)
            return [{"method": "sendMessage", "text": f"Counter: {n}",
                     "reply_markup": keyboard()}]
        n = state["messages"][chat] = state["messages"].get(chat, 0) + 1
        save(state)
        return [{"method": "sendMessage",
                 "text": f"Message {n} in this chat. Send /counter for buttons."}]
    if "callback_query" in update:
        cq = update["callback_query"]
        chat = str(cq["message"]["chat"]["id"]) if "message" in cq else "inline"
        n = state["clicks"].get(chat, 0)
        n = n + 1 if cq.get("data") == "inc" else 0
        state["clicks"][chat] = n
        save(state)
        # answerCallbackQuery stops the button's spinner; editMessageText
        # without message_id edits the message whose button was pressed.
        return [{"method": "answerCallbackQuery", "text": f"Now {n}"},
                {"method": "editMessageText", "text": f"Counter: {n}",
                 "reply_markup": keyboard()}]
    return []


def main():
    state = load()
    while True:
        line = sys.stdin.readline()
        if not line:
            return  # EOF: botfleet asks us to stop
        msg = json.loads(line)
        kind = msg.get("type")
        if kind == "hello":
            bot = msg["bot"]
            print(f"counter bot for @{bot['username']} (protocol {msg['protocol']})",
                  file=sys.stderr, flush=True)
        elif kind == "update":
            try:
                out = {"type": "reply", "id": msg["id"],
                       "calls": handle(msg["update"], state)}
            except Exception as e:  # the chat gets a short error, we go on
                out = {"type": "error", "id": msg["id"], "message": repr(e)}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
        # "results" lines (what our calls returned) are not needed here.


if __name__ == "__main__":
    main()
