#!/usr/bin/env python3
"""Side-by-side probe of worker cost for two or more botfleet binaries
(e.g. main's and a branch's), interleaved in one window: per fleet size,
`botfleet run` to all ready, the workers' CPU to ready, each worker's peak
RSS (VmHWM) and PSS after echoing 3 messages (as bench.py's fleet_rss),
threads per worker, and the workers' idle CPU over a window. Reuses
bench.py's sandbox, fleet and /proc helpers.

  python3 bench/lean_probe.py --sizes 1,100 --runs 3 --idle 30 A=bin1 B=bin2
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402


def run_ns(pid):
    """CPU time of every thread of a process, in ns, from schedstat (exact,
    unlike /proc/PID/stat's tick sampling, which misses short wake-ups)."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    except OSError:
        pass
    return total


def one(sb, label, binary, tokens, idle_secs):
    n = len(tokens)
    ids = [int(t.split(":")[0]) for t in tokens]
    before = B.mono_us()
    f = B.Fleet(label, binary, sb, tokens, {"BOT_HANDLER": "builtin:echo"})
    out = {}
    try:
        t_ready, _ = f.wait_log(f"All {n} workers ready", 120)
        out["ready_s"] = t_ready - f.t_start
        pids = f.workers()
        out["workers_cpu_ready_s"] = sum(run_ns(p) for p in pids) / 1e9
        B.wait_first_polls(sb, ids, before, timeout=120, interval=0.05)
        st = sb.stats()["bots"]
        base = {b: st[str(b)]["sent"] for b in ids}
        for b in ids:
            for j in range(3):
                sb.inject(b, 300000 + j, f"rss{b} {j}")
        B.wait_sent(sb, ids, {b: base[b] + 3 for b in ids}, timeout=120, interval=0.1)
        time.sleep(1.0)
        pids = f.workers()
        hwm = sorted(B.status_kb(p, "VmHWM") for p in pids)
        out["hwm_med_kb"] = statistics.median(hwm)
        out["hwm_max_kb"] = max(hwm)
        out["pss_med_kb"] = statistics.median(B.pss_kb(p) for p in pids)
        out["pss_total_mb"] = (B.pss_kb(f.pid) + sum(B.pss_kb(p) for p in pids)) / 1024
        out["threads_med"] = statistics.median(B.status_kb(p, "Threads") or 0 for p in pids)
        if idle_secs:
            c0 = sum(run_ns(p) for p in pids)
            t0 = time.monotonic()
            time.sleep(idle_secs)
            el = time.monotonic() - t0
            c1 = sum(run_ns(p) for p in pids)
            out["idle_workers_cpu_s_per_min_per_1000"] = (c1 - c0) / 1e9 * 60 / el * 1000 / n
        out["smaps"] = B.smaps_summary(pids[0], binary)
    finally:
        f.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,100")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=0)
    ap.add_argument("--smaps", action="store_true")
    ap.add_argument("bins", nargs="+", help="LABEL=PATH")
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bins]
    sb = B.Sandbox(B.GLIBC_BIN if os.path.exists(B.GLIBC_BIN) else bins[0][1])
    res = {}
    try:
        for n in [int(x) for x in a.sizes.split(",")]:
            for r in range(a.runs):
                for label, path in bins:
                    tokens = [t for _, t in sb.new_bots(n)]
                    o = one(sb, label, path, tokens, a.idle)
                    sm = o.pop("smaps")
                    for k, v in o.items():
                        res.setdefault((n, k), {}).setdefault(label, []).append(v)
                    B.log(f"n={n} run {r + 1} {label}: " + ", ".join(f"{k}={v:.4g}" for k, v in o.items()))
                    if a.smaps and r == a.runs - 1:
                        cats = sorted(sm["cats"].items(), key=lambda kv: -kv[1][0])
                        print(f"  smaps {label} n={n}: " + "; ".join(f"{c} {v[0]}/{v[1]} kB ({v[2]})" for c, v in cats))
    finally:
        B.kill_group(sb.p, B.signal.SIGTERM)
        B.reap(sb.p)
    print("| size | figure | " + " | ".join(l for l, _ in bins) + " |")
    print("|---|---|" + "---|" * len(bins))
    for (n, k), per in res.items():
        print(f"| {n} | {k} | " + " | ".join(
            f"{statistics.median(per[l]):.4g} (n={len(per[l])})" if l in per else "-" for l, _ in bins) + " |")


if __name__ == "__main__":
    main()
