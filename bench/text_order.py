#!/usr/bin/env python3
"""Writes .cargo/text-order-<target>.txt: the functions a worker runs, then
the supervisor's, in the order build.rs hands to the linker (see build.rs
for why). Per target (x86_64 musl and glibc), it builds the release binary
as `make musl` / `cargo build --release` do (the symbol names must be the
same: they carry a hash of the build settings) with the linker's map,
runs a one-bot fleet under valgrind's callgrind (every process; a few
minutes) against the sandbox, lets the bot echo 3 messages, stops it with
SIGTERM, and maps every function address with a cost in the worker's and
the supervisor's profile to its symbol through the map.

Run it again after changes that rename or add many hot functions (a stale
list still links; names it no longer finds are ignored):

  python3 bench/text_order.py [TARGET...]   # needs valgrind (apt: valgrind)
"""

import os
import bisect
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402
import lean_probe as L  # noqa: E402

TARGETS = {
    "x86_64-unknown-linux-musl": os.path.join(B.ROOT, "target/x86_64-unknown-linux-musl/release/botfleet"),
    "x86_64-unknown-linux-gnu": os.path.join(B.ROOT, "target/release/botfleet"),
}


def sections(map_file):
    """(start, end, symbol) of every function section in an lld map file
    (`.text.NAME`, or `.text.unlikely.NAME` for LLVM's cold functions)."""
    out = []
    with open(map_file) as f:
        for line in f:
            m = re.match(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+.*:\(\.text\.(?:unlikely\.|startup\.|hot\.|exit\.)?(\S+)\)$", line)
            if m and int(m.group(2), 16):
                start = int(m.group(1), 16)
                out.append((start, start + int(m.group(2), 16), m.group(3)))
    out.sort()
    return out


def functions(profile, secs):
    """Function sections holding an instruction that ran, in one callgrind
    profile (--dump-instr=yes) of the stripped binary, in order of the
    profile (callgrind's own names would miss code reached by tail calls)."""
    starts = [st for st, _, _ in secs]
    names, seen = [], set()
    addr = 0
    with open(profile) as f:
        for line in f:
            m = re.match(r"^(0x[0-9a-f]+|[+-][0-9]+|\*)\s", line)
            if not m:
                continue
            pos = m.group(1)
            if pos.startswith("0x"):
                addr = int(pos, 16)
            elif pos != "*":
                addr += int(pos)
            i = bisect.bisect_right(starts, addr) - 1
            if i >= 0 and secs[i][0] <= addr < secs[i][1] and i not in seen:
                seen.add(i)
                names.append(secs[i][2])
    return names


def order(target):
    work = tempfile.mkdtemp(prefix="botfleet-text-order-")
    try:
        link_map = os.path.join(work, "link.map")
        env = dict(os.environ, BOTFLEET_LINK_MAP=link_map, CC_x86_64_unknown_linux_musl="musl-gcc")
        # Exactly as `make musl` and `cargo build --release` build (an explicit
        # --target for the host would change every symbol's hash).
        native = target == "x86_64-unknown-linux-gnu"
        cmd = ["cargo", "build", "--release", "--quiet"] + ([] if native else ["--target", target])
        subprocess.run(cmd, check=True, env=env, cwd=B.ROOT)
        built = TARGETS[target]
        binary = os.path.join(work, "botfleet")
        shutil.copy(built, binary)
        secs = sections(link_map)
        wrapper = os.path.join(work, "vg.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec valgrind --tool=callgrind --trace-children=yes --demangle=no "
                    f"--dump-line=no --dump-instr=yes --callgrind-out-file={work}/cg.%p {binary} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        sb = B.Sandbox(B.GLIBC_BIN if os.path.exists(B.GLIBC_BIN) else binary)
        try:
            tokens = [t for _, t in sb.new_bots(1)]
            L.one(sb, "text-order", wrapper, tokens, 0)
        finally:
            B.kill_group(sb.p, B.signal.SIGTERM)
            B.reap(sb.p)
        worker, supervisor = [], []
        for name in os.listdir(work):
            if not name.startswith("cg."):
                continue
            path = os.path.join(work, name)
            with open(path) as f:
                head = f.read(4096)
            if " worker " in head:
                worker = functions(path, secs)
            elif " run " in head:
                supervisor = functions(path, secs)
        if not worker:
            sys.exit("no worker profile was written")
        names = worker + [n for n in supervisor if n not in set(worker)]
        out = os.path.join(B.ROOT, ".cargo", f"text-order-{target}.txt")
        with open(out, "w") as f:
            f.write("".join(n + "\n" for n in names))
        print(f"{os.path.relpath(out, B.ROOT)}: {len(worker)} worker functions, "
              f"{len(names) - len(worker)} more of the supervisor")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    for target in (sys.argv[1:] or TARGETS):
        order(target)


if __name__ == "__main__":
    main()
