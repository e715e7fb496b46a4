#!/usr/bin/env python3
"""The supervisor's own figures at scale, builds side by side (interleaved):
`botfleet run` to all ready, the supervisor's CPU and the workers' CPU
(summed) to ready, its descriptors, VmHWM and VmRSS, its heap (smaps), and
its CPU over an idle window (`--idle 0`: none, the fleet stopped at once, for
start-up A/Bs). Reuses bench.py's sandbox and fleet driver.

    python3 bench/supervisor_scale.py --bots 1000 --runs 3 --idle 15 A=path/to/botfleet B=...
"""

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def smaps_anon_kb(pid):
    """Private dirty kB of the heap and anonymous mappings (not stacks of
    threads: those are the 128-256 kB ones, counted as well)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def one(sb, label, binary, tokens, idle):
    f = bench.Fleet(label, binary, sb, tokens, {"BOT_HANDLER": "builtin:echo"})
    try:
        n = len(tokens)
        t_ready, _ = f.wait_log(f"All {n} workers ready", 300)
        out = {
            "ready_s": t_ready - f.t_start,
            "sup_cpu_ready_s": bench.cpu_secs(f.pid),
            "workers_cpu_ready_s": sum(bench.cpu_secs(p) for p in f.workers()),
            "sup_fds": len(os.listdir(f"/proc/{f.pid}/fd")),
        }
        if idle <= 0:
            return out
        time.sleep(2)
        out["sup_hwm_mb"] = bench.status_kb(f.pid, "VmHWM") / 1024
        out["sup_rss_mb"] = bench.status_kb(f.pid, "VmRSS") / 1024
        out["sup_anon_kb"] = smaps_anon_kb(f.pid)
        c0 = bench.cpu_secs(f.pid)
        t0 = time.monotonic()
        time.sleep(idle)
        out["sup_idle_cpu_s_min"] = (bench.cpu_secs(f.pid) - c0) * 60 / (time.monotonic() - t0)
        return out
    finally:
        f.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bots", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=15)
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
                res = one(sb, label, binary, tokens, args.idle)
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
