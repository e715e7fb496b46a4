#!/usr/bin/env python3
"""Two sandbox builds side by side under the same botfleet fleet: for each
run, a fresh sandbox of each build in turn (the order alternates), serving
bench.py's scale workload (`Bench.scale`: start to all ready, every first
getUpdates, idle window, +100 by .env, SIGTERM). Prints the medians of each
scale row per build and their ratio. The fleet binary is the same for both.

    python3 bench/sandbox_ab.py --old /tmp/base-glibc --new target/release/botfleet \
        --fleet target/x86_64-unknown-linux-musl/release/botfleet --scale 1000 --runs 3
"""
import argparse
import os
import resource
import shutil
import signal
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="the baseline sandbox binary")
    ap.add_argument("--new", required=True, help="the candidate sandbox binary")
    ap.add_argument("--fleet", required=True, help="the botfleet binary the fleets run (musl)")
    ap.add_argument("--scale", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=int, default=15, help="idle window, seconds")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b = bench.Bench(argparse.Namespace(quick=True, runs=1, scale=str(a.scale)))
    b.bins[bench.MUSL] = a.fleet
    b.scale_idle_secs = a.idle
    b.raise_pid_max(a.scale)
    got = {"old": {}, "new": {}}
    try:
        for r in range(a.runs):
            order = [("old", a.old), ("new", a.new)]
            if r % 2:
                order.reverse()
            for label, binary in order:
                bench.log(f"run {r + 1}/{a.runs}: {label} sandbox ({binary}), {a.scale} bots")
                b.results = {}
                sb = bench.Sandbox(binary)
                try:
                    tokens = [t for _, t in sb.new_bots(a.scale + 100)]
                    b.scale(sb, bench.MUSL, tokens)
                except RuntimeError as e:
                    bench.log(f"  FAILED: {e}")
                finally:
                    bench.kill_group(sb.p, signal.SIGTERM)
                    bench.reap(sb.p)
                for metric, by_impl in b.results.items():
                    got[label].setdefault(metric, []).extend(by_impl.get(bench.MUSL, []))
    finally:
        for p in bench.STARTED:
            if p.poll() is None:
                bench.kill_group(p)
        for d in bench.TEMPDIRS:
            shutil.rmtree(d, ignore_errors=True)
    print(f"\n{a.scale} bots, fleet {a.fleet}; medians of {a.runs} run(s) each")
    print(f"{'metric':34} {'old':>12} {'new':>12} {'new/old':>8}   values old | new")
    for metric in got["old"]:
        o, n = got["old"].get(metric, []), got["new"].get(metric, [])
        if not o or not n:
            continue
        mo, mn = statistics.median(o), statistics.median(n)
        ratio = f"{mn / mo:.2f}" if mo else "-"
        fmt = lambda xs: " ".join(f"{x:.3g}" for x in xs)  # noqa: E731
        print(f"{metric:34} {mo:12.4g} {mn:12.4g} {ratio:>8}   {fmt(o)} | {fmt(n)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
