#!/usr/bin/env python3
"""A/B of reply latency (bench.py's latency(): 200 messages 20 ms apart in
20 chats) between builds, interleaved, medians of --runs; teloxide beside
them when built. Usage:

    python3 bench/ab_latency.py BASE_GLIBC NEW_GLIBC [BASE_MUSL NEW_MUSL] [--runs N]
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
    ap.add_argument("--runs", type=int, default=5)
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
                bench.log(f"run {r + 1}: {impl} latency")
                b.latency(sb, impl)
    finally:
        bench.kill_group(sb.p, bench.signal.SIGTERM)
        bench.reap(sb.p)
    for metric in ("lat_p50", "lat_p99"):
        row = {i: statistics.median(v) for i, v in b.results[metric].items()}
        print(f"{metric}: " + "  ".join(
            f"{i} {row[i]:.3g} {sorted(round(x, 2) for x in b.results[metric][i])}" for i in impls if i in row))


if __name__ == "__main__":
    main()
