#!/usr/bin/env python3
"""A/B of the persistent Python echo handler between two builds in one
window (handler_bench.py's measure, interleaved runs, medians), with
python-telegram-bot beside them. Usage:

    python3 bench/ab_handler.py BASE_BIN NEW_BIN [--runs N] [--no-ptb] [--queued] [--chats 1 20]

--queued measures as bench.py's throughput does instead: the messages
queued before the bot starts, counted from its first getUpdates to the
last reply (handler_bench's own count starts at the first injection, so
the driver's injection rate bounds it).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import handler_bench as hb  # noqa: E402


def queued(sb, start, n, chats):
    """(updates/s, 0) with `n` messages queued before the bot starts."""
    bid, tok = sb.new_bot()
    texts = bench.inject_queued(sb, bid, n, chats)
    before = bench.mono_us()
    bot = start(tok)
    try:
        first = bench.wait_first_polls(sb, [bid], before, timeout=60, interval=0.001)[bid]
        bench.wait_sent(sb, [bid], {bid: n}, timeout=300, interval=0.05)
        ats = sorted(e["at_us"] for e in sb.sent(bid)
                     if e["method"] == "sendMessage" and e["text"] in texts)
        return n / ((ats[n - 1] - first) / 1e6), 0.0
    finally:
        bot.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-ptb", action="store_true")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--queued", action="store_true")
    ap.add_argument("--chats", type=int, nargs="+", default=[1, 20],
                    help="chat counts to measure (default: 1 20)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="botfleet-abh-")
    pers = os.path.join(work, "persistent_echo.py")
    with open(pers, "w") as f:
        f.write(hb.PERSISTENT_ECHO)
    py = hb.ptb_python(a.no_ptb)
    res = {}
    bins = {"base": os.path.abspath(a.base), "new": os.path.abspath(a.new)}
    try:
        hb.BIN = bins["base"]
        sb = hb.Sandbox()
        for r in range(a.runs):
            for chats in a.chats:
                for name in ("base", "new", "ptb"):
                    if name == "ptb":
                        if not py:
                            continue
                        start = lambda t: hb.Ptb(py, sb, t)  # noqa: E731
                    else:
                        hb.BIN = bins[name]
                        start = lambda t: hb.Botfleet(sb, t, "persistent", pers)  # noqa: E731
                    hb.log(f"run {r + 1}: {name}, {chats} chat(s)")
                    res.setdefault((name, chats), []).append(
                        queued(sb, start, a.messages, chats) if a.queued
                        else hb.measure(sb, start, a.messages, chats, 600))
    finally:
        hb.kill_all()
        shutil.rmtree(work, ignore_errors=True)
    for chats in a.chats:
        row = {}
        for name in ("base", "new", "ptb"):
            v = res.get((name, chats))
            if v:
                row[name] = (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
                print(f"{chats} chat(s) {name}: {row[name][0]:,.0f}/s p50 {row[name][1]:.2f} ms "
                      f"{sorted(round(x[0]) for x in v)}")
        if "base" in row and "new" in row:
            print(f"   new/base {row['new'][0] / row['base'][0]:.2f}"
                  + (f"; ×PTB base {row['base'][0] / row['ptb'][0]:.1f}, new {row['new'][0] / row['ptb'][0]:.1f}"
                     if "ptb" in row else ""))


if __name__ == "__main__":
    main()
