#!/usr/bin/env python3
"""botfleet inbox benchmark: what the inbox and the fair scheduler give.

- busy chat: chat A floods N messages (default 1,000) at default pacing
  (SEND_RATE_PER_CHAT=1, SEND_RATE_PER_BOT=30); once the worker has fetched
  them, chat B sends one message: B's reply latency (goal: under 1 s).
- echo throughput with the journal on, unpaced, 2,000 queued, 1 and 20
  chats: replies a second from the first getUpdates to the last reply.
- echo latency p50/p99: 200 messages 20 ms apart over 20 chats, unpaced.
- the worker's peak RSS (VmHWM) over the throughput runs.

Standard library only; reuses the process and sandbox helpers of
bench/bench.py. Every process it starts is killed and reaped at the end.

    python3 bench/inbox_bench.py [--binary target/release/botfleet] [--runs 3] [--json]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the helpers of bench/bench.py)
from bench import (  # noqa: E402
    Fleet, Sandbox, inject_paced, inject_queued, log, mono_us, reply_latencies_ms, status_kb,
    wait_first_polls, wait_sent)


def start(binary, sb, tokens, extra):
    fleet = Fleet("inbox", binary, sb, tokens, extra)
    fleet.wait_log("All 1 workers ready", 30)
    return fleet


def busy_chat(binary, sb, n):
    """B's reply latency (ms) behind n paced messages of chat A."""
    (bid, tok), = sb.new_bots(1)
    fleet = start(binary, sb, [tok], {"BOT_HANDLER": "builtin:echo"})
    try:
        for i in range(n):
            sb.inject(bid, 300001, f"a{bid} {i}")
        # Until the worker has fetched A's flood (a worker without an inbox
        # never does: it confirms only what is handled), 5 s at most.
        deadline = time.monotonic() + 5
        while sb.bot_stats(bid)["pending_updates"] > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        text = f"b{bid} ping"
        at = sb.inject(bid, 300002, text)["at_us"]
        deadline = time.monotonic() + 600
        while True:
            sent = sb.sent(bid)
            got = [e for e in sent if e.get("text") == text]
            if got:
                a_sent = sum(1 for e in sent if e.get("chat_id") == 300001)
                return (got[0]["at_us"] - at) / 1000, a_sent
            if time.monotonic() > deadline:
                raise RuntimeError("chat B was not answered within 600 s")
            time.sleep(0.005)
    finally:
        fleet.close()


def throughput(binary, sb, chats, n=2000):
    """(replies a second, worker peak RSS in KB) for n queued echoes."""
    (bid, tok), = sb.new_bots(1)
    texts = inject_queued(sb, bid, n, chats)
    before = mono_us()
    fleet = Fleet("inbox", binary, sb, [tok], {
        "BOT_HANDLER": "builtin:echo", "SEND_RATE_PER_CHAT": "0", "SEND_RATE_PER_BOT": "0"})
    try:
        first = wait_first_polls(sb, [bid], before, timeout=60, interval=0.001)[bid]
        wait_sent(sb, [bid], {bid: n}, timeout=180, interval=0.05)
        pids = fleet.workers()
        hwm = max([status_kb(p, "VmHWM") or 0 for p in pids] or [0])
        sent = sb.sent(bid)
    finally:
        fleet.close()
    ats = sorted(e["at_us"] for e in sent if e["method"] == "sendMessage" and e["text"] in texts)
    if len(ats) < n:
        raise RuntimeError(f"only {len(ats)} of {n} echo replies matched")
    start_us = first if first <= ats[0] else ats[0]
    return n / ((ats[-1] - start_us) / 1e6), hwm


def latency(binary, sb, n=200, gap=0.020, chats=20):
    """(p50, p99) reply latency in ms."""
    (bid, tok), = sb.new_bots(1)
    fleet = start(binary, sb, [tok], {
        "BOT_HANDLER": "builtin:echo", "SEND_RATE_PER_CHAT": "0", "SEND_RATE_PER_BOT": "0"})
    try:
        time.sleep(0.3)
        inj = inject_paced(sb, bid, n, gap, chats)
        wait_sent(sb, [bid], {bid: n}, timeout=60, interval=0.05)
        sent = sb.sent(bid)
    finally:
        fleet.close()
    lat = reply_latencies_ms(sent, inj, n)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return statistics.median(lat), q[98]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=bench.GLIBC_BIN)
    ap.add_argument("--runs", type=int, default=3, help="runs of each figure (median)")
    ap.add_argument("--flood", type=int, default=1000, help="chat A's messages")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    # Fleets run in their own temp dirs: the binary's path must not be relative.
    args.binary = os.path.abspath(args.binary)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    if not os.path.exists(args.binary):
        log(f"cargo build --release (no {args.binary})")
        subprocess.run(["cargo", "build", "--release", "--quiet"], check=True, cwd=bench.ROOT)
    sb = Sandbox(args.binary)
    figures = {"busy_b_ms": [], "busy_a_sent": [], "tp_1": [], "tp_20": [],
               "rss_kb": [], "lat_p50": [], "lat_p99": []}
    try:
        for r in range(args.runs):
            log(f"run {r + 1}/{args.runs}: chat B behind {args.flood} of chat A")
            ms, a_sent = busy_chat(args.binary, sb, args.flood)
            figures["busy_b_ms"].append(ms)
            figures["busy_a_sent"].append(a_sent)
            for chats in (1, 20):
                log(f"run {r + 1}/{args.runs}: echo throughput, {chats} chat(s)")
                tp, hwm = throughput(args.binary, sb, chats)
                figures[f"tp_{chats}"].append(tp)
                figures["rss_kb"].append(hwm)
            log(f"run {r + 1}/{args.runs}: echo latency")
            p50, p99 = latency(args.binary, sb)
            figures["lat_p50"].append(p50)
            figures["lat_p99"].append(p99)
    finally:
        for p in bench.STARTED:
            if p.poll() is None:
                bench.kill_group(p)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for d in bench.TEMPDIRS:
            for pid in bench.workers_of(os.path.join(d, 'state')):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(d, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in figures.items() if v}
    if args.json:
        print(json.dumps({"median": med, "runs": figures}, indent=1))
        return 0
    before = "before the inbox: the throughput and latency rows of bench.py, in the same window"
    print(f"| figure (median of {args.runs}) | value | goal (issue 11) |")
    print("|---|---|---|")
    print(f"| chat B's reply latency behind {args.flood} of chat A, default pacing "
          f"| {med['busy_b_ms']:.0f} ms (A had {med['busy_a_sent']:.0f} replies out) "
          f"| < 1 s: {'met' if med['busy_b_ms'] < 1000 else 'MISSED'} |")
    print(f"| echo throughput, 1 chat, unpaced, journal on | {med['tp_1']:.0f} /s | ≥ 90 % of {before} |")
    print(f"| echo throughput, 20 chats, unpaced, journal on | {med['tp_20']:.0f} /s | ≥ 90 % of {before} |")
    print(f"| echo latency p50 / p99 (200 at 50/s, 20 chats) "
          f"| {med['lat_p50']:.1f} / {med['lat_p99']:.1f} ms | ≤ {before} ÷ 0.9 |")
    print(f"| worker peak RSS (throughput runs, glibc) | {med['rss_kb'] / 1024:.2f} MB | "
          "(the musl < 2.5 MB goal: bench.py's memory rows) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
