#!/usr/bin/env python3
"""Fleet start, builds side by side (interleaved runs, medians): `botfleet
run` to `All N workers ready`, the supervisor's CPU and the workers' CPU
(summed) at that moment. Reuses bench.py's sandbox and fleet driver; the
fleet is stopped right after (no idle window, no .env change).

    python3 bench/spawn_ab.py --bots 3000 --runs 3 A=path/to/botfleet B=...
"""

import argparse
import os
import resource
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def one(sb, label, binary, tokens):
    f = bench.Fleet(label, binary, sb, tokens, {"BOT_HANDLER": "builtin:echo"})
    try:
        n = len(tokens)
        t_ready, _ = f.wait_log(f"All {n} workers ready", 300)
        return {
            "ready_s": t_ready - f.t_start,
            "sup_cpu_s": bench.cpu_secs(f.pid),
            "workers_cpu_s": sum(bench.cpu_secs(p) for p in f.workers()),
            "sup_fds": len(os.listdir(f"/proc/{f.pid}/fd")),
        }
    finally:
        f.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bots", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("builds", nargs="+", help="LABEL=BINARY")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    builds = [b.split("=", 1) for b in args.builds]
    sb = bench.Sandbox(builds[0][1])
    results = {label: [] for label, _ in builds}
    try:
        tokens = [t for _, t in sb.new_bots(args.bots)]
        for r in range(args.runs):
            for label, binary in builds:
                res = one(sb, label, binary, tokens)
                bench.log(f"{label} run {r + 1}: " + ", ".join(f"{k}={v:.3f}" for k, v in res.items()))
                results[label].append(res)
    finally:
        bench.kill_group(sb.p)
        bench.reap(sb.p)
    for label, rs in results.items():
        keys = rs[0].keys() if rs else []
        print(f"{label} (median of {len(rs)}): " +
              ", ".join(f"{k}={statistics.median(r[k] for r in rs):.3f}" for k in keys))


if __name__ == "__main__":
    main()
