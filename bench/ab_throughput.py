#!/usr/bin/env python3
"""A/B of echo throughput and latency between two builds in one window
(the fast lane's own measurement; bench.py's functions, interleaved runs,
medians). Usage:

    python3 bench/ab_throughput.py BASE_GLIBC NEW_GLIBC [BASE_MUSL NEW_MUSL] [--runs N] [--latency]

Latency alone (bench.py's latency(): 200 messages 20 ms apart in 20 chats):
`--latency --chats ''`.

teloxide (prebuilt under target/bench-peers) runs beside them when present.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--chats", default="1,20")
    ap.add_argument("--no-teloxide", action="store_true")
    a = ap.parse_args()
    labels = ["base-glibc", "new-glibc", "base-musl", "new-musl"][: len(a.bins)]
    args = argparse.Namespace(quick=False, runs=a.runs, scale=None, peers="teloxide",
                              no_ptb=True, only=None, no_build=True, out=None)
    b = bench.Bench(args)
    b.bins = dict(zip(labels, [os.path.abspath(x) for x in a.bins]))
    impls = list(labels)
    if not a.no_teloxide:
        b.setup_peers()
        if bench.TELOXIDE in b.peer_argv:
            impls.append(bench.TELOXIDE)
    sb = bench.Sandbox(a.bins[0])
    try:
        for r in range(a.runs):
            for impl in impls:
                for chats in [int(c) for c in a.chats.split(",") if c]:
                    bench.log(f"run {r + 1}: {impl}, {chats} chat(s)")
                    b.throughput(sb, impl, chats)
                if a.latency:
                    b.latency(sb, impl)
    finally:
        bench.kill_group(sb.p, bench.signal.SIGTERM)
        bench.reap(sb.p)
    for metric in sorted(b.results):
        if not (metric.startswith("tp_") or metric in ("lat_p50", "lat_p99")):
            continue
        row = {i: statistics.median(v) for i, v in b.results[metric].items()}
        vals = "  ".join(f"{i} {row[i]:.4g} {sorted(round(x, 3) for x in b.results[metric][i])}" for i in impls if i in row)
        print(f"{metric}: {vals}")
        for kind in ("glibc", "musl"):
            if f"base-{kind}" in row and f"new-{kind}" in row and row[f"base-{kind}"]:
                print(f"   {kind} new/base = {row[f'new-{kind}'] / row[f'base-{kind}']:.2f}"
                      + (f", new/teloxide = {row[f'new-{kind}'] / row[bench.TELOXIDE]:.2f}" if bench.TELOXIDE in row else ""))


if __name__ == "__main__":
    main()
