#!/usr/bin/env python3
"""The echo lane's probe: syscalls per update of one bot's worker echoing
one chat, unpaced (strace -f -c attached for a while), with bench.py's
sandbox and fleet. Usage:

    python3 bench/echo_probe.py BINARY [--n 20000] [--secs 2]

and, with --cpu BIN..., CPU time per update of the worker and of the
sandbox (/proc/PID/schedstat: steadier than throughput on a loaded host)
and updates/s, the binaries interleaved, medians of --runs:

    python3 bench/echo_probe.py --cpu BASE NEW [--n 10000] [--runs 5]
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def cpu_run(sb, binary, n):
    (bid, tok), = sb.new_bots(1)
    texts = bench.inject_queued(sb, bid, n, 1)
    before = bench.mono_us()
    fleet = bench.Fleet("probe", os.path.abspath(binary), sb, [tok], {
        "BOT_HANDLER": "builtin:echo", "SEND_RATE_PER_CHAT": "0", "SEND_RATE_PER_BOT": "0"})
    try:
        first = bench.wait_first_polls(sb, [bid], before, timeout=60, interval=0.001)[bid]
        pids = fleet.workers()
        w0 = sum(bench.cpu_secs(p) for p in pids)
        s0 = bench.cpu_secs(sb.p.pid)
        bench.wait_sent(sb, [bid], {bid: n}, timeout=300, interval=0.02)
        w1 = sum(bench.cpu_secs(p) for p in pids)
        s1 = bench.cpu_secs(sb.p.pid)
        sent = sb.sent(bid)
    finally:
        fleet.close()
    ats = sorted(e["at_us"] for e in sent if e["method"] == "sendMessage" and e["text"] in texts)
    return n / ((ats[n - 1] - first) / 1e6), (w1 - w0) / n * 1e6, (s1 - s0) / n * 1e6


def cpu_main(bins, n, runs):
    import statistics
    sb = bench.Sandbox(bins[0])
    res = {b: [] for b in bins}
    try:
        for r in range(runs):
            for b in bins:
                res[b].append(cpu_run(sb, b, n))
                tp, w, s = res[b][-1]
                print(f"run {r + 1} {b}: {tp:.0f}/s, worker {w:.1f} us/update, sandbox {s:.1f} us/update", flush=True)
    finally:
        bench.kill_group(sb.p, bench.signal.SIGTERM)
        bench.reap(sb.p)
    for b in bins:
        tp, w, s = (statistics.median(x[i] for x in res[b]) for i in range(3))
        print(f"median {b}: {tp:.0f}/s, worker {w:.1f} us/update, sandbox {s:.1f} us/update")


def main():
    if "--cpu" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--cpu", nargs="+", required=True)
        ap.add_argument("--n", type=int, default=10000)
        ap.add_argument("--runs", type=int, default=5)
        a = ap.parse_args()
        return cpu_main(a.cpu, a.n, a.runs)
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--secs", type=float, default=2.0)
    a = ap.parse_args()
    sb = bench.Sandbox(a.binary)
    fleet = None
    try:
        (bid, tok), = sb.new_bots(1)
        bench.inject_queued(sb, bid, a.n, 1)
        fleet = bench.Fleet("probe", os.path.abspath(a.binary), sb, [tok], {
            "BOT_HANDLER": "builtin:echo", "SEND_RATE_PER_CHAT": "0", "SEND_RATE_PER_BOT": "0"})
        fleet.wait_log("All 1 workers ready", 30)
        pid = fleet.workers()[0]
        s0 = sb.stats()["bots"][str(bid)]["sent"]
        st = subprocess.Popen(["strace", "-f", "-c", "-p", str(pid)], stderr=subprocess.PIPE, text=True)
        time.sleep(a.secs)
        st.terminate()
        out = st.communicate()[1]
        s1 = sb.stats()["bots"][str(bid)]["sent"]
        sent = max(s1 - s0, 1)
        print(f"replies while traced: {sent}")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit():
                calls = int(parts[3])
                print(f"{parts[-1]:>16} {calls:>8} {calls / sent:8.2f}/update")
    finally:
        if fleet:
            fleet.close()
        bench.kill_group(sb.p, bench.signal.SIGTERM)
        bench.reap(sb.p)


if __name__ == "__main__":
    main()
