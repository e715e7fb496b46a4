#!/usr/bin/env python3
"""botfleet benchmark: botfleet (glibc and static musl) side by side with
python-telegram-bot, aiogram, grammY (+ @grammyjs/runner) and teloxide, each
running its own echo bot as its docs do (bench/*_echo.*), all against one
`botfleet sandbox` on loopback; and 1,000- and 3,000-bot botfleet fleets.
botfleet as it was before the inbox (commit BASE_COMMIT, built from git into
target/bench-baseline) runs in the throughput and latency sections, so issue
11's "at least 90 % of before" is a ratio taken in the same window.

`make bench` runs `python3 bench/bench.py` (medians of 3 runs, writes
BENCHMARKS.md with bench/NOTES.md appended); `make bench-quick` runs
`--quick` (1 run each, short idle windows, 1,000 bots only, writes
target/BENCHMARKS-quick.md). `--only SECTIONS` and `--peers PEERS` narrow a
run. The driver uses Python's standard library only; the peers are
installed by it into target/bench-peers (and target/bench-venv) from PyPI,
npm and crates.io, and one that cannot be installed is reported as SKIPPED
with the reason. The standalone bench/inbox_bench.py (issue 11) and
bench/handler_bench.py (issue 15) run too when present.

Every process this driver starts is in its own session (process group) and
is killed and reaped in `finally`, also on error or Ctrl-C; workers (which
botfleet puts in process groups of their own) are found through their
STATE_DIR and killed too. A section that fails is reported in the output
and the run goes on.
"""

import argparse
import http.client
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_GLIBC_BIN / BENCH_MUSL_BIN measure other builds (with --no-build),
# e.g. a candidate fix side by side with the same driver.
GLIBC_BIN = os.environ.get("BENCH_GLIBC_BIN") or os.path.join(ROOT, "target/release/botfleet")
MUSL_BIN = os.environ.get("BENCH_MUSL_BIN") or os.path.join(
    ROOT, "target/x86_64-unknown-linux-musl/release/botfleet")
ARM_BIN = os.path.join(ROOT, "target/aarch64-unknown-linux-musl/release/botfleet")
VENV = os.path.join(ROOT, "target/bench-venv")
PTB_ECHO = os.path.join(ROOT, "bench/ptb_echo.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")

PEERS_DIR = os.path.join(ROOT, "target/bench-peers")
GLIBC, MUSL = "glibc", "musl"
PTB, AIOGRAM, GRAMMY, TELOXIDE = "ptb", "aiogram", "grammy", "teloxide"
PEERS = (PTB, AIOGRAM, GRAMMY, TELOXIDE)
BOTFLEET = (GLIBC, MUSL)
# botfleet as it was before the inbox (the last commit before issues 11-16),
# built from git into target/bench-baseline: issue 11 asks for throughput and
# latency with the journal of at least 90 % of the figures before it, and on
# this shared machine only a ratio taken in the same window means anything.
BASE = "base"
BASE_COMMIT = "68c8cf9"
BASE_DIR = os.path.join(ROOT, "target/bench-baseline")
BASE_BIN = os.path.join(BASE_DIR, "target/release/botfleet")
ALL_IMPLS = BOTFLEET + (BASE,) + PEERS
IMPL_NAMES = {GLIBC: "botfleet glibc", MUSL: "botfleet musl", PTB: "python-telegram-bot",
              AIOGRAM: "aiogram", GRAMMY: "grammY + runner", TELOXIDE: "teloxide",
              BASE: f"botfleet glibc before the inbox ({BASE_COMMIT})"}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mono_us():
    # time.monotonic() is CLOCK_MONOTONIC on Linux: the sandbox's at_us clock.
    return int(time.monotonic() * 1_000_000)


# --------------------------------------------------------------------------
# Processes we start, and their cleanup


STARTED = []  # Popen objects, each the leader of its own session
TEMPDIRS = []


def spawn(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    STARTED.append(p)
    return p


def kill_group(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap(p, timeout=5):
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        p.wait()


def proc_stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (fields[0] = state)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s.rsplit(")", 1)[1].split()


def alive(pid):
    f = proc_stat_fields(pid)
    return f is not None and f[0] != "Z"


def children_of(ppid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = proc_stat_fields(int(name))
        if f and f[0] != "Z" and f[1] == str(ppid):
            out.append(int(name))
    return sorted(out)


def workers_of(state_dir):
    """Live botfleet workers of the fleet whose STATE_DIR is `state_dir`:
    a worker's command line is `botfleet worker --state-dir D` (its
    environment holds no settings, and is unreadable anyway: the worker is
    not dumpable)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"--state-dir" and os.path.abspath(argv[i + 1].decode(errors="replace")) == os.path.abspath(state_dir):
                if alive(int(name)):
                    out.append(int(name))
                break
    return out


def cpu_ticks(pid):
    f = proc_stat_fields(pid)
    if not f:
        return 0
    return int(f[11]) + int(f[12])  # utime + stime


def cpu_secs(pid):
    """CPU time of a process in seconds, to the nanosecond where the kernel
    has /proc/PID/schedstat (its sum over threads; the clock-tick figures of
    /proc/PID/stat truncate each process, and 1,000 idle workers each use
    less than a tick in a window), else from utime+stime."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        return cpu_ticks(pid) / CLK_TCK


def threads_of(pids):
    """(pid, tid) of every thread of `pids` still there."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            yield pid, tid


def thread_ns(pids):
    """CPU time of every thread of `pids`, in ns, by (pid, tid), from
    /proc/PID/task/TID/schedstat."""
    out = {}
    for pid, tid in threads_of(pids):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[(pid, tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def window_cpu_secs(before, after):
    """CPU seconds used between two `thread_ns` snapshots: a thread in both
    counts its growth, a new one all of it. (A sum over the threads alive at
    each end would take a thread that exits in the window, and everything it
    used before, off the total; here it only loses what it used in the
    window before it exited.)"""
    return sum(v - before.get(k, 0) for k, v in after.items()) / 1e9


def thread_ticks(pids):
    """utime+stime summed by thread name over the threads of `pids`."""
    out = {}
    for pid, tid in threads_of(pids):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fl = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = re.sub(r"-\d+$", "-N", name)
        out[name] = out.get(name, 0) + int(fl[11]) + int(fl[12])
    return out


def ticks_delta(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in b}


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def smaps_summary(pid, binary):
    """Rss of a process split by what the memory is (kB), from /proc/PID/smaps."""
    cats = {}
    try:
        with open(f"/proc/{pid}/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    prev = None  # (end, perms, path) of the previous mapping
    cur = None
    entries = []
    for line in lines:
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
        if m:
            cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16),
                   "perms": m.group(3), "path": m.group(4).strip(), "rss": 0,
                   "pd": 0}
            entries.append(cur)
        elif cur is not None and line.startswith("Rss:"):
            cur["rss"] = int(line.split()[1])
        elif cur is not None and line.startswith("Private_Dirty:"):
            cur["pd"] = int(line.split()[1])
    for e in entries:
        path, perms = e["path"], e["perms"]
        if path and (path == binary or path.startswith(binary + " ") or path.endswith("/botfleet")):
            cat = {"r-xp": "binary text", "r--p": "binary rodata/relro", "rw-p": "binary data"}.get(perms, "binary other")
        elif path == "[heap]":
            cat = "[heap] (brk)"
        elif path == "[stack]":
            cat = "main thread stack"
        elif path in ("[vdso]", "[vvar]", "[vsyscall]", "[vvar_vclock]"):
            cat = "vdso/vvar"
        elif path:
            cat = "shared libs" if ".so" in path else "other files"
        else:
            # An anonymous rw mapping right above a no-access guard page is a
            # thread stack (glibc and musl both put the guard below it).
            if prev and prev["perms"].startswith("---") and prev["end"] == e["start"] and not prev["path"]:
                cat = "anon: thread stacks"
            elif e["perms"].startswith("---"):
                cat = "anon: guard/reserved"
            else:
                cat = "anon: mmap heap/other"
        c = cats.setdefault(cat, [0, 0, 0])
        c[0] += e["rss"]
        c[1] += e["pd"]
        c[2] += 1
        prev = e
    return {
        "cats": cats,
        "VmHWM": status_kb(pid, "VmHWM"),
        "VmRSS": status_kb(pid, "VmRSS"),
        "Threads": status_kb(pid, "Threads"),
    }


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# The sandbox


class Sandbox:
    def __init__(self, binary):
        self.p = spawn([binary, "sandbox", "--port", "0"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        r, _, _ = select.select([self.p.stdout], [], [], 10)
        line = self.p.stdout.readline() if r else ""
        m = re.match(r"sandbox listening on http://([\d.]+):(\d+)", line)
        if not m:
            raise RuntimeError(f"sandbox did not start: {line!r}")
        self.host, self.port = m.group(1), int(m.group(2))
        self.url = f"http://{self.host}:{self.port}"
        threading.Thread(target=self._drain, daemon=True).start()
        self.conn = None
        self.lock = threading.Lock()
        self.next_bot = 7000001

    def _drain(self):
        for _ in self.p.stdout:
            pass

    def req(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        with self.lock:
            for attempt in range(3):
                try:
                    if self.conn is None:
                        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                    self.conn.request(method, path, body=data,
                                      headers={"Content-Type": "application/json"})
                    r = self.conn.getresponse()
                    raw = r.read()
                    return json.loads(raw)
                except (http.client.HTTPException, OSError):
                    if self.conn:
                        self.conn.close()
                    self.conn = None
                    if attempt == 2:
                        raise

    def new_bots(self, n):
        """n freshly registered bots: [(bot_id, token)]."""
        out = []
        for _ in range(n):
            bid = self.next_bot
            self.next_bot += 1
            tok = f"{bid}:bench-secret-{bid}"
            r = self.req("POST", "/_sandbox/bots", {"token": tok, "username": f"bench{bid}_bot"})
            assert r["ok"], r
            out.append((bid, tok))
        return out

    def inject(self, bot_id, chat, text):
        r = self.req("POST", f"/_sandbox/bots/{bot_id}/messages",
                     {"user_id": chat, "chat_id": chat, "text": text})
        assert r["ok"], r
        return r["result"]

    def stats(self):
        return self.req("GET", "/_sandbox/stats")["result"]

    def bot_stats(self, bot_id):
        return self.stats()["bots"][str(bot_id)]

    def sent(self, bot_id):
        return self.req("GET", f"/_sandbox/bots/{bot_id}/sent")["result"]


def wait_first_polls(sb, bot_ids, after_us, timeout=30, interval=0.002):
    """Waits until every bot has called getUpdates after `after_us`; returns
    {bot_id: last_get_updates_at_us} as first seen (the first poll, if the
    interval is short enough to catch it)."""
    seen = {}
    calls = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bots = sb.stats()["bots"]
        for b in bot_ids:
            if b not in seen:
                v = bots[str(b)]["last_get_updates_at_us"]
                if v > after_us:
                    seen[b] = v
                    calls[b] = bots[str(b)]["calls"].get("getUpdates", 0)
        if len(seen) == len(bot_ids):
            wait_first_polls.calls = calls
            return seen
        time.sleep(interval)
    raise RuntimeError(f"only {len(seen)}/{len(bot_ids)} bots polled within {timeout}s")


def wait_sent(sb, bot_ids, targets, timeout=120, interval=0.05):
    """Waits until each bot's `sent` counter reaches its target."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bots = sb.stats()["bots"]
        if all(bots[str(b)]["sent"] >= targets[b] for b in bot_ids):
            return
        time.sleep(interval)
    raise RuntimeError("replies did not all arrive in time")


# --------------------------------------------------------------------------
# A botfleet fleet and a python-telegram-bot process


def inject_queued(sb, bid, n, chats):
    """Injects n messages into bot `bid` at once over `chats` chats; returns
    their texts."""
    texts = set()
    for i in range(n):
        t = f"tp{bid} message {i}"
        sb.inject(bid, 100000 + (i % chats), t)
        texts.add(t)
    return texts


def inject_paced(sb, bid, n, gap, chats):
    """Injects n messages into bot `bid`, one every `gap` s over `chats`
    chats; returns {text: injected at_us}."""
    inj = {}
    t0 = time.monotonic()
    for i in range(n):
        d = t0 + i * gap - time.monotonic()
        if d > 0:
            time.sleep(d)
        text = f"lat{bid} {i}"
        inj[text] = sb.inject(bid, 200000 + i % chats, text)["at_us"]
    return inj


def reply_latencies_ms(sent, inj, n, who=""):
    """Each reply's latency (ms) after the message of inject_paced it echoes;
    raises when fewer than n replies match."""
    lat = [(e["at_us"] - inj[e["text"]]) / 1000 for e in sent
           if e["method"] == "sendMessage" and e.get("text") in inj]
    if len(lat) < n:
        raise RuntimeError(f"{who}only {len(lat)} of {n} latency replies matched")
    return lat


class Fleet:
    def __init__(self, label, binary, sb, tokens, extra=None):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix=f"botfleet-bench-{label}-")
        TEMPDIRS.append(self.dir)
        self.state_dir = os.path.join(self.dir, "state")
        self.env_file = os.path.join(self.dir, ".env")
        self.settings = {
            "TELEGRAM_API_URL": sb.url,
            "MEDIA_TMP_LOCATION": os.path.join(self.dir, "media"),
            "STATE_DIR": self.state_dir,
            "LOCK_FILE": os.path.join(self.dir, "bot.lock"),
            "PORT": str(free_port()),
            "POLL_TIMEOUT_SECS": "30",
            "RUST_LOG": "info",
        }
        self.settings.update(extra or {})
        self.write_env(tokens)
        penv = {k: v for k, v in os.environ.items()
                if k not in ("TELEGRAM_BOT_TOKENS", "TELEGRAM_BOT_TOKEN", "RUST_LOG",
                             "NOTIFY_SOCKET", "WATCHDOG_USEC", "BOT_HANDLER")}
        self.lines = []  # (monotonic seconds, line)
        self.cv = threading.Condition()
        self.t_start = time.monotonic()
        self.p = spawn([binary, "run", "--env-file", self.env_file], cwd=self.dir,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=penv)
        self.pid = self.p.pid
        threading.Thread(target=self._read, daemon=True).start()

    def write_env(self, tokens):
        """Writes .env by rename, as an editor or a deploy tool would."""
        body = f"TELEGRAM_BOT_TOKENS={','.join(tokens)}\n" + "".join(
            f"{k}={v}\n" for k, v in self.settings.items())
        tmp = self.env_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(body)
        os.rename(tmp, self.env_file)

    def _read(self):
        for raw in self.p.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cv:
                self.lines.append((time.monotonic(), line))
                self.cv.notify_all()

    def wait_log(self, needle, timeout=60, start=0):
        """(monotonic time the line was read, its index) of the first line
        from index `start` on that contains `needle`."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(self.lines):
                    if needle in self.lines[i][1]:
                        return self.lines[i][0], i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None:
                    tail = "\n".join(l for _, l in self.lines[-15:])
                    raise RuntimeError(f"no log line {needle!r} within {timeout}s; log tail:\n{tail}")
                self.cv.wait(min(left, 0.2))

    def workers(self):
        return children_of(self.pid)

    def close(self, keep_files=False):
        """Stops the fleet and removes its directory; with `keep_files`, the
        directory stays until the end of the bench (TEMPDIRS)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for w in children_of(self.pid):
            os.kill(w, signal.SIGKILL)
        kill_group(self.p)
        reap(self.p)
        left = workers_of(self.state_dir)
        if left:
            log(f"WARNING: botfleet worker(s) {left} outlived their fleet in {self.dir}; killing them")
            for w in left:
                try:
                    os.kill(w, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not keep_files:
            shutil.rmtree(self.dir, ignore_errors=True)


class PeerBot:
    """One echo bot of another library: one process per bot, as their docs
    run one (argv ends with TOKEN SANDBOX_URL)."""

    def __init__(self, argv, sb, token, env=None):
        self.dir = tempfile.mkdtemp(prefix="botfleet-bench-peer-")
        TEMPDIRS.append(self.dir)
        self.errlog = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.t_start = time.monotonic()
        self.p = spawn(argv + [token, sb.url], cwd=self.dir, stdin=subprocess.DEVNULL,
                       stdout=self.errlog, stderr=self.errlog, env=env)
        self.pid = self.p.pid

    def close(self):
        kill_group(self.p, signal.SIGTERM)
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        kill_group(self.p)
        reap(self.p)
        self.errlog.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Workloads


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.runs = 1 if args.quick else args.runs
        # A 2,000-update echo run lasts half a second: one stall of this
        # shared VM moves it 2x (identical builds read 2,300-9,400/s in one
        # window), so the throughput rows take more runs than the rest.
        self.tp_runs = 1 if args.quick else getattr(args, "tp_runs", None) or max(args.runs, 7)
        self.idle_secs = 15 if args.quick else 60
        self.repeats = 3 if args.quick else 10
        self.scale_sizes = [int(x) for x in args.scale.split(",") if x] if args.scale is not None else (
            [1000] if args.quick else [1000, 3000])
        self.scale_idle_secs = 15 if args.quick else 60
        self.scale_runs = 1 if args.quick else getattr(args, "scale_runs", 3)
        self.results = {}  # metric -> impl -> [values]
        self.notes = {}  # metric -> impl -> str
        self.evidence = {}  # free-form measured detail
        self.threads = {}  # context -> impl -> {thread name: CPU-seconds}
        self.bins = {GLIBC: GLIBC_BIN, MUSL: MUSL_BIN}
        self.peer_argv = {}  # peer -> argv before TOKEN URL
        self.peer_env = {}
        self.peer_version = {}
        self.peer_skip = {}  # peer -> why it was not measured

    def rec(self, metric, impl, value):
        self.results.setdefault(metric, {}).setdefault(impl, []).append(value)
        log(f"  {metric} [{impl}] = {value:.4g}")

    def start_impl(self, impl, sb, tokens, extra=None):
        if impl in PEERS:
            return [PeerBot(self.peer_argv[impl], sb, t, self.peer_env.get(impl)) for t in tokens]
        return [Fleet(impl, self.bins[impl], sb, tokens, extra)]

    @staticmethod
    def close_all(objs):
        for o in objs:
            o.close()

    def rec_threads(self, ctx, impl, ticks, per=1.0):
        d = self.threads.setdefault(ctx, {}).setdefault(impl, {})
        for k, v in ticks.items():
            d.setdefault(k, []).append(v / CLK_TCK * per)

    def impls(self, base=False):
        """botfleet's builds, then the peers that were set up; with `base`,
        botfleet before the inbox too (when it was built)."""
        return list(BOTFLEET) + ([BASE] if base and BASE in self.bins else []) + [
            p for p in PEERS if p in self.peer_argv]

    # --- botfleet before the inbox, from git, built once into target/bench-baseline
    def setup_base(self):
        if self.args.peers and BASE not in self.args.peers.split(","):
            self.peer_skip[BASE] = "not in --peers"
            return
        stamp = os.path.join(BASE_DIR, "commit")
        try:
            if not (os.path.exists(BASE_BIN) and os.path.exists(stamp)
                    and open(stamp).read().strip() == BASE_COMMIT):
                log(f"building botfleet at {BASE_COMMIT} (before the inbox) into target/bench-baseline")
                src = os.path.join(BASE_DIR, "src")
                shutil.rmtree(src, ignore_errors=True)
                os.makedirs(src)
                tar = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", BASE_COMMIT],
                                     check=True, capture_output=True, timeout=120).stdout
                subprocess.run(["tar", "-x", "-C", src], input=tar, check=True, timeout=120)
                argv = ["cargo", "build", "--release", "--quiet", "--manifest-path",
                        os.path.join(src, "Cargo.toml"), "--target-dir", os.path.join(BASE_DIR, "target")]
                if subprocess.run(argv + ["--offline"], capture_output=True, timeout=1800).returncode != 0:
                    subprocess.run(argv, check=True, capture_output=True, timeout=1800)
                with open(stamp, "w") as f:
                    f.write(BASE_COMMIT + "\n")
            self.bins[BASE] = BASE_BIN
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            # A shallow clone has no such commit: the issue-11 ratios are then left out.
            why = (getattr(e, "stderr", b"") or b"").decode(errors="replace").strip().splitlines()
            self.peer_skip[BASE] = f"cannot build {BASE_COMMIT}: {why[-1] if why else e}"
            log(f"SKIPPED {IMPL_NAMES[BASE]}: {self.peer_skip[BASE]}")

    def worker_pids(self, impl, objs):
        if impl in PEERS:
            return [o.pid for o in objs]
        return objs[0].workers()

    # --- the other libraries, each installed into target/bench-peers (or
    # target/bench-venv for python-telegram-bot) from its own registry
    def setup_peers(self):
        wanted = [p for p in PEERS if not self.args.peers or p in self.args.peers.split(",")]
        for peer in PEERS:
            if self.args.no_ptb and peer == PTB:
                self.peer_skip[peer] = "--no-ptb given"
            elif peer not in wanted:
                self.peer_skip[peer] = "not in --peers"
        for peer in wanted:
            if peer in self.peer_skip:
                continue
            log(f"setting up {IMPL_NAMES[peer]}")
            try:
                {PTB: self.setup_ptb, AIOGRAM: self.setup_aiogram, GRAMMY: self.setup_grammy,
                 TELOXIDE: self.setup_teloxide}[peer]()
                log(f"{IMPL_NAMES[peer]} {self.peer_version[peer]}")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, RuntimeError) as e:
                err = getattr(e, "stderr", None)
                tail = (err.decode("utf-8", "replace") if isinstance(err, bytes) else (err or "")).strip()
                self.peer_skip[peer] = f"could not install: {e}" + (f" ({tail.splitlines()[-1]})" if tail else "")
                self.peer_argv.pop(peer, None)
                print(f"SKIPPING {IMPL_NAMES[peer]}: {self.peer_skip[peer]}", flush=True)

    @staticmethod
    def venv_with(venv, package, module):
        py = os.path.join(venv, "bin/python")
        if not os.path.exists(py):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True)
        probe = [py, "-c", f"import {module}; print({module}.__version__)"]
        r = subprocess.run(probe, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", package], check=True,
                           capture_output=True, timeout=600)
            r = subprocess.run(probe, capture_output=True, text=True, check=True)
        return py, r.stdout.strip()

    def setup_ptb(self):
        py, ver = self.venv_with(VENV, "python-telegram-bot", "telegram")
        self.peer_version[PTB] = ver
        self.peer_argv[PTB] = [py, PTB_ECHO]

    def setup_aiogram(self):
        py, ver = self.venv_with(os.path.join(PEERS_DIR, "aiogram-venv"), "aiogram", "aiogram")
        self.peer_version[AIOGRAM] = ver
        self.peer_argv[AIOGRAM] = [py, os.path.join(ROOT, "bench/aiogram_echo.py")]

    def setup_grammy(self):
        if not shutil.which("node") or not shutil.which("npm"):
            if os.geteuid() != 0 or not shutil.which("apt-get"):
                raise RuntimeError("no node/npm, and not root with apt-get to install them")
            log("installing nodejs and npm with apt-get")
            subprocess.run("apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive "
                           "apt-get -o DPkg::Lock::Timeout=600 install -y -qq nodejs npm",
                           shell=True, check=True, capture_output=True, timeout=900)
        node_dir = os.path.join(PEERS_DIR, "node")
        mods = os.path.join(node_dir, "node_modules")
        if not (os.path.isdir(os.path.join(mods, "grammy")) and os.path.isdir(os.path.join(mods, "@grammyjs/runner"))):
            os.makedirs(node_dir, exist_ok=True)
            subprocess.run(["npm", "install", "--prefix", node_dir, "--no-audit", "--no-fund", "--silent",
                            "grammy", "@grammyjs/runner"], check=True, capture_output=True, timeout=600)
        ver = json.load(open(os.path.join(mods, "grammy/package.json")))["version"]
        rver = json.load(open(os.path.join(mods, "@grammyjs/runner/package.json")))["version"]
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        self.peer_version[GRAMMY] = f"{ver}, runner {rver}, node {node}"
        self.peer_env[GRAMMY] = dict(os.environ, NODE_PATH=mods)
        self.peer_argv[GRAMMY] = ["node", os.path.join(ROOT, "bench/grammy_echo.js")]

    def setup_teloxide(self):
        tdir = os.path.join(PEERS_DIR, "teloxide-target")
        manifest = os.path.join(ROOT, "bench/teloxide_echo/Cargo.toml")
        log("cargo build --release of bench/teloxide_echo (first time: a few minutes)")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", manifest,
                        "--target-dir", tdir], check=True, capture_output=True, timeout=1800)
        lock = open(os.path.join(ROOT, "bench/teloxide_echo/Cargo.lock")).read()
        m = re.search(r'name = "teloxide"\nversion = "([^"]+)"', lock)
        self.peer_version[TELOXIDE] = m.group(1) if m else "?"
        self.peer_argv[TELOXIDE] = [os.path.join(tdir, "release/teloxide_echo")]

    # --- sizes
    def sizes(self):
        for impl in (GLIBC, MUSL):
            self.rec("size", impl, os.path.getsize(self.bins[impl]) / 1e6)
        if os.path.exists(ARM_BIN):
            self.rec("size_aarch64", MUSL, os.path.getsize(ARM_BIN) / 1e6)

    # --- the standalone benchmarks of other issues, run when present
    def standalone(self):
        for name, issue in (("inbox_bench.py", 11), ("handler_bench.py", 15)):
            path = os.path.join(ROOT, "bench", name)
            if not os.path.exists(path):
                self.evidence.setdefault("standalone", []).append((name, issue, None, "not present: not run"))
                continue
            argv = [sys.executable, path]
            if self.quick and "--quick" in open(path).read():
                argv.append("--quick")
            log(f"bench/{name} (issue {issue})")
            env = dict(os.environ, BENCH_GLIBC_BIN=GLIBC_BIN, BENCH_MUSL_BIN=MUSL_BIN, BOTFLEET_BIN=GLIBC_BIN)
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
                status = f"exit {r.returncode}"
                text = r.stdout.strip()
                if r.returncode != 0:
                    text += "\n" + "\n".join(r.stderr.strip().splitlines()[-15:])
            except subprocess.TimeoutExpired:
                status, text = "killed after 15 min", ""
            self.evidence.setdefault("standalone", []).append((name, issue, text, status))

    # --- the sandbox alone
    def sandbox_alone(self, sb):
        (bid, tok), = sb.new_bots(1)
        sb.inject(bid, 4242, "hello")  # makes the chat known
        secs = 1.5 if self.quick else 3.0
        for clients in (1, 2):
            rates, client_cpu, sbx_cpu = [], [], []
            for _ in range(self.runs):
                s0 = cpu_ticks(sb.p.pid)
                t0 = time.monotonic()
                ps = [subprocess.Popen([sys.executable, __file__, "--sandbox-client", sb.url, tok,
                                        "4242", str(secs)], stdout=subprocess.PIPE, text=True,
                                       start_new_session=True) for _ in range(clients)]
                outs = [json.loads(p.communicate()[0]) for p in ps]
                el = time.monotonic() - t0
                s1 = cpu_ticks(sb.p.pid)
                rates.append(sum(o["count"] / o["secs"] for o in outs))
                client_cpu.append(statistics.mean(o["cpu"] / o["secs"] for o in outs) * 100)
                sbx_cpu.append((s1 - s0) / CLK_TCK / el * 100)
            self.rec(f"sandbox_alone_{clients}", "sandbox", statistics.median(rates))
            self.evidence[f"sandbox_alone_{clients}"] = (
                f"{clients} client(s): each client {statistics.median(client_cpu):.0f}% of a core, "
                f"sandbox {statistics.median(sbx_cpu):.0f}% of a core")

    # --- echo throughput
    def throughput(self, sb, impl, chats, n=2000):
        (bid, tok), = sb.new_bots(1)
        texts = inject_queued(sb, bid, n, chats)
        before = mono_us()
        objs = self.start_impl(impl, sb, [tok], {
            "BOT_HANDLER": "builtin:echo", "SEND_RATE_PER_CHAT": "0", "SEND_RATE_PER_BOT": "0"})
        try:
            first = wait_first_polls(sb, [bid], before, timeout=60, interval=0.001)[bid]
            caught = wait_first_polls.calls[bid] == 1
            t_cpu0 = time.monotonic()
            pids = self.worker_pids(impl, objs)
            th0 = thread_ticks(pids)
            w0 = sum(cpu_ticks(p) for p in pids)
            s0 = cpu_ticks(sb.p.pid)
            wait_sent(sb, [bid], {bid: n}, timeout=180, interval=0.05)
            t_cpu1 = time.monotonic()
            w1 = sum(cpu_ticks(p) for p in pids)
            s1 = cpu_ticks(sb.p.pid)
            if impl not in PEERS:
                self.rec_threads(f"echo throughput, {chats} chat(s): worker threads, CPU-s per run",
                                 impl, ticks_delta(th0, thread_ticks(pids)))
            hwm = max(status_kb(p, "VmHWM") or 0 for p in pids)
            sent = sb.sent(bid)
        finally:
            self.close_all(objs)
        ats = sorted(e["at_us"] for e in sent if e["method"] == "sendMessage" and e["text"] in texts)
        if len(ats) < n:
            raise RuntimeError(f"{impl}: only {len(ats)} of {n} echo replies matched")
        key = f"tp_{chats}"
        if caught and first <= ats[0]:
            self.rec(key, impl, n / ((ats[n - 1] - first) / 1e6))
        else:
            # The driver did not see the first getUpdates (it saw a later
            # one): count the 1,999 replies after the first instead.
            log(f"  ({impl}: first poll not caught; counting from the first reply)")
            self.evidence["tp_from_first_reply"] = self.evidence.get("tp_from_first_reply", 0) + 1
            self.rec(key, impl, (n - 1) / ((ats[n - 1] - ats[0]) / 1e6))
        self.rec(f"tp_{chats}_worker_cpu", impl, (w1 - w0) / CLK_TCK / (t_cpu1 - t_cpu0) * 100)
        self.rec(f"tp_{chats}_sandbox_cpu", impl, (s1 - s0) / CLK_TCK / (t_cpu1 - t_cpu0) * 100)
        self.rec("rss_after_echo", impl, hwm / 1024)

    # --- reply latency, and start to first getUpdates (1 bot)
    def latency(self, sb, impl, n=200, gap=0.020, chats=20):
        (bid, tok), = sb.new_bots(1)
        before = mono_us()
        objs = self.start_impl(impl, sb, [tok], {
            "BOT_HANDLER": "builtin:echo", "SEND_RATE_PER_CHAT": "0", "SEND_RATE_PER_BOT": "0"})
        try:
            first = wait_first_polls(sb, [bid], before, timeout=60)[bid]
            t_start = objs[0].t_start
            self.rec("first_poll", impl, first / 1e6 - t_start)
            if impl not in PEERS:
                objs[0].wait_log("All 1 workers ready", 30)
            time.sleep(0.3)
            inj = inject_paced(sb, bid, n, gap, chats)
            wait_sent(sb, [bid], {bid: n}, timeout=60, interval=0.05)
            sent = sb.sent(bid)
            time.sleep(0.5)  # back in its long poll
            # SIGTERM to the process the user started (botfleet: the
            # supervisor, and its worker gone too).
            p = objs[0].p
            pids = [p.pid] + self.worker_pids(impl, objs)
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            deadline = t0 + 15
            while time.monotonic() < deadline:
                if p.poll() is not None and not any(alive(x) for x in pids[1:]):
                    break
                time.sleep(0.002)
            if p.poll() is not None:
                self.rec("stop_1", impl, time.monotonic() - t0)
            else:
                log(f"  ({impl}: still running 15 s after SIGTERM)")
        finally:
            self.close_all(objs)
        lat = reply_latencies_ms(sent, inj, n, f"{impl}: ")
        q = statistics.quantiles(lat, n=100, method="inclusive")
        self.rec("lat_p50", impl, statistics.median(lat))
        self.rec("lat_p99", impl, q[98])

    # --- memory with 1 and 100 bots; 100-bot start and stop
    def fleet_rss(self, sb, impl, tokens, last_run):
        n = len(tokens)
        ids = [int(t.split(":")[0]) for t in tokens]
        before = mono_us()
        objs = self.start_impl(impl, sb, tokens, {"BOT_HANDLER": "builtin:echo"})
        try:
            if impl not in PEERS:
                t_ready, _ = objs[0].wait_log(f"All {n} workers ready", 60)
                if n >= 100:
                    self.rec("start_100_ready", impl, t_ready - objs[0].t_start)
                    ws = objs[0].workers()
                    self.rec_threads("100-worker start: worker threads, CPU-s summed over the 100 "
                                     "workers from spawn to `All 100 workers ready`", impl,
                                     thread_ticks(ws))
                    self.rec_threads("100-worker start: supervisor threads, CPU-s to READY", impl,
                                     thread_ticks([objs[0].pid]))
            wait_first_polls(sb, ids, before, timeout=60, interval=0.02)
            st = sb.stats()["bots"]
            base = {b: st[str(b)]["sent"] for b in ids}
            # A few long polls, each ended by a message: 3 texts per bot,
            # to 3 chats (default pacing), echoed by builtin:echo.
            for b in ids:
                for j in range(3):
                    sb.inject(b, 300000 + j, f"rss{b} {j}")
            wait_sent(sb, ids, {b: base[b] + 3 for b in ids}, timeout=60, interval=0.1)
            time.sleep(1.0)  # every worker back in its long poll
            pids = self.worker_pids(impl, objs)
            if len(pids) != n:
                raise RuntimeError(f"{impl}: {len(pids)} worker processes for {n} bots")
            hwm = sorted(status_kb(p, "VmHWM") / 1024 for p in pids)
            sfx = "1" if n == 1 else str(n)
            self.rec(f"rss_worker_med_{sfx}", impl, statistics.median(hwm))
            self.rec(f"rss_worker_max_{sfx}", impl, max(hwm))
            self.rec(f"pss_worker_med_{sfx}", impl, statistics.median(pss_kb(p) for p in pids) / 1024)
            if impl not in PEERS and n >= 100:
                self.rec("pss_fleet_100", impl, (pss_kb(objs[0].pid) + sum(pss_kb(p) for p in pids)) / 1024)
            if impl not in PEERS:
                self.rec(f"rss_sup_{sfx}", impl, status_kb(objs[0].pid, "VmHWM") / 1024)
                if last_run:
                    self.evidence[f"smaps_worker_{impl}_{n}"] = smaps_summary(pids[0], self.bins[impl])
                    self.evidence[f"smaps_sup_{impl}_{n}"] = smaps_summary(objs[0].pid, self.bins[impl])
            elif last_run:
                self.evidence[f"smaps_worker_{impl}_{n}"] = smaps_summary(pids[0], "/nonexistent")
            if impl not in PEERS and n >= 100:
                # SIGTERM with every worker mid-poll: to supervisor exit and
                # every worker gone.
                f = objs[0]
                t0 = time.monotonic()
                os.kill(f.pid, signal.SIGTERM)
                t_sup = None
                deadline = t0 + 30
                while time.monotonic() < deadline:
                    if t_sup is None and f.p.poll() is not None:
                        t_sup = time.monotonic()
                    if t_sup is not None and not any(alive(p) for p in pids):
                        break
                    time.sleep(0.002)
                t_gone = time.monotonic()
                self.rec("stop_100_sup_exit", impl, (t_sup or t_gone) - t0)
                self.rec("stop_100_gone", impl, t_gone - t0)
        finally:
            self.close_all(objs)

    # --- kill -9 of a worker to its successor's first getUpdates
    def kill9(self, sb, impl):
        (bid, tok), = sb.new_bots(1)
        before = mono_us()
        f = Fleet(impl, self.bins[impl], sb, [tok], {"RESTART_DELAY": "0", "MAX_RESTARTS": "0"})
        try:
            f.wait_log("All 1 workers ready", 30)
            wait_first_polls(sb, [bid], before)
            idx = 0
            for _ in range(self.repeats):
                time.sleep(0.5)
                w = f.workers()
                if len(w) != 1:
                    raise RuntimeError(f"expected one worker, found {w}")
                t_kill = mono_us()
                os.kill(w[0], signal.SIGKILL)
                seen = wait_first_polls(sb, [bid], t_kill, timeout=20, interval=0.0005)[bid]
                self.rec("kill9", impl, (seen - t_kill) / 1000)
                _, idx = f.wait_log("Worker bot-0 ready", 20, start=idx + 1)
        finally:
            f.close()

    # --- a .env token added to its worker's READY
    def env_add(self, sb, impl):
        bots = sb.new_bots(self.repeats + 1)
        toks = [t for _, t in bots]
        f = Fleet(impl, self.bins[impl], sb, toks[:1],
                  {"BOT_TOKEN_MONITOR_INTERVAL": "500", "CONFIG_RELOAD_DEBOUNCE": "2000"})
        try:
            f.wait_log("All 1 workers ready", 30)
            for i in range(2, self.repeats + 2):
                time.sleep(0.7)
                start = len(f.lines)
                f.write_env(toks[:i])
                t0 = time.monotonic()
                # Indices start at 0: the i-th token is bot-(i-1).
                t_ready, _ = f.wait_log(f"Worker bot-{i - 1} ready", 30, start=start)
                self.rec("env_add", impl, t_ready - t0)
        finally:
            f.close()

    # --- idle CPU: glibc, musl and PTB 10-bot fleets side by side
    def idle(self, sb):
        groups = {}
        try:
            before = mono_us()
            for impl in self.impls():
                bots = sb.new_bots(10)
                groups[impl] = (bots, self.start_impl(impl, sb, [t for _, t in bots]))
            for impl, (bots, objs) in groups.items():
                if impl not in PEERS:
                    objs[0].wait_log("All 10 workers ready", 60)
                wait_first_polls(sb, [b for b, _ in bots], before, timeout=60, interval=0.05)
            time.sleep(3)
            snap0 = {}
            for impl, (bots, objs) in groups.items():
                sup = objs[0].pid if impl not in PEERS else None
                pids = self.worker_pids(impl, objs)
                snap0[impl] = (sup, pids, thread_ns([sup] if sup else []),
                               thread_ns(pids), thread_ticks(pids + ([sup] if sup else [])))
            t0 = time.monotonic()
            time.sleep(self.idle_secs)
            el = time.monotonic() - t0
            for impl, (bots, objs) in groups.items():
                sup, pids, s0, w0, th0 = snap0[impl]
                if sorted(self.worker_pids(impl, objs)) != sorted(pids):
                    raise RuntimeError(f"{impl}: worker pids changed during the idle window")
                s_used = window_cpu_secs(s0, thread_ns([sup] if sup else []))
                w_used = window_cpu_secs(w0, thread_ns(pids))
                per_min = 60 / el
                if impl not in PEERS:
                    self.rec_threads("idle 10-bot fleet: threads of the supervisor and the 10 workers, "
                                     "CPU-s per minute", impl,
                                     ticks_delta(th0, thread_ticks(pids + [sup])), per=60 / el)
                self.rec("idle_total", impl, (s_used + w_used) * per_min)
                self.rec("pss_10", impl, (sum(pss_kb(x) for x in pids) + (pss_kb(sup) if sup else 0)) / 1024)
                if impl not in PEERS:
                    self.rec("idle_sup", impl, s_used * per_min)
                if impl in PEERS:
                    hwm = sorted(status_kb(p, "VmHWM") / 1024 for p in pids)
                    self.rec("rss_worker_med_10idle", impl, statistics.median(hwm))
        finally:
            for _, objs in groups.values():
                self.close_all(objs)

    def raise_pid_max(self, n):
        """Every thread takes a pid: n workers of ~10 threads, the sandbox's
        thread per connection and the rest must fit under kernel.pid_max
        (32,768 by default: 3,000 bots do not)."""
        need = n * 9 + 10000
        try:
            cur = int(open("/proc/sys/kernel/pid_max").read())
        except OSError:
            return
        if cur >= need:
            return
        try:
            with open("/proc/sys/kernel/pid_max", "w") as f:
                f.write(str(4194304))
            self.evidence["pid_max"] = f"kernel.pid_max raised from {cur:,} to 4,194,304 for the scale runs"
        except OSError as e:
            self.evidence["pid_max"] = f"kernel.pid_max is {cur:,} and could not be raised ({e})"
        log(self.evidence["pid_max"])

    # --- scale: 1,000 and 3,000 bots
    def scale(self, sb, impl, tokens, full=True):
        """`botfleet run` to all ready, total PSS, idle CPU, a .env change
        adding 100 tokens, SIGTERM to every process gone; one fleet. Without
        `full`, a repeat for the medians: start, ready, memory, SIGTERM (the
        idle window and the .env change are measured once)."""
        n = len(tokens) - 100
        ids = [int(t.split(":")[0]) for t in tokens]
        k = f"{n}"
        sb_cpu0 = cpu_ticks(sb.p.pid)
        before = mono_us()
        f = Fleet(impl, self.bins[impl], sb, tokens[:n], {
            "BOT_HANDLER": "builtin:echo", "BOT_TOKEN_MONITOR_INTERVAL": "500",
            "CONFIG_RELOAD_DEBOUNCE": "500"})
        try:
            t_ready, _ = f.wait_log(f"All {n} workers ready", 120)
            self.rec(f"scale_ready_{k}", impl, t_ready - f.t_start)
            self.rec(f"scale_sup_cpu_ready_{k}", impl, cpu_secs(f.pid))
            self.rec(f"scale_workers_cpu_ready_{k}", impl, sum(cpu_secs(p) for p in f.workers()))
            wait_first_polls(sb, ids[:n], before, timeout=120, interval=0.2)
            self.rec(f"scale_sb_cpu_start_{k}", impl, (cpu_ticks(sb.p.pid) - sb_cpu0) / CLK_TCK)
            time.sleep(2)
            pids = f.workers()
            if len(pids) != n:
                raise RuntimeError(f"{impl}: {len(pids)} worker processes for {n} bots")
            sup_pss = pss_kb(f.pid)
            self.rec(f"scale_pss_{k}", impl, (sup_pss + sum(pss_kb(p) for p in pids)) / 1024)
            self.rec(f"scale_sup_rss_{k}", impl, status_kb(f.pid, "VmHWM") / 1024)
            self.rec(f"scale_sup_threads_{k}", impl, status_kb(f.pid, "Threads") or 0)
            self.rec(f"scale_sup_fds_{k}", impl, len(os.listdir(f"/proc/{f.pid}/fd")))
            hwm = sorted(status_kb(p, "VmHWM") / 1024 for p in pids)
            self.rec(f"scale_worker_threads_{k}", impl, statistics.median(status_kb(p, "Threads") or 0 for p in pids))
            self.rec(f"scale_worker_rss_med_{k}", impl, statistics.median(hwm))
            self.rec(f"scale_worker_rss_max_{k}", impl, max(hwm))
            self.rec(f"scale_sb_rss_{k}", impl, status_kb(sb.p.pid, "VmRSS") / 1024)
            self.rec(f"scale_sb_threads_{k}", impl, status_kb(sb.p.pid, "Threads") or 0)
            if not full:
                self.scale_stop(f, f.workers(), k, impl)
                return
            # Idle: the whole fleet over the window, and the sandbox serving it.
            every = pids + [f.pid]
            c0 = thread_ns(every)
            th0 = thread_ticks(pids)
            ths0 = thread_ticks([f.pid])
            s0 = cpu_ticks(sb.p.pid) / CLK_TCK  # its threads come and go: process-wide
            t0 = time.monotonic()
            time.sleep(self.scale_idle_secs)
            el = time.monotonic() - t0
            c1 = thread_ns(every)
            per_min = 60 / el
            self.rec(f"scale_idle_{k}", impl, window_cpu_secs(c0, c1) * per_min)
            sup = {key: v for key, v in c1.items() if key[0] == f.pid}
            self.rec(f"scale_idle_sup_{k}", impl, window_cpu_secs(c0, sup) * per_min)
            self.rec(f"scale_sb_idle_{k}", impl, (cpu_ticks(sb.p.pid) / CLK_TCK - s0) * per_min)
            self.rec_threads(f"idle {n}-bot fleet: threads of the {n} workers, CPU-s per minute",
                             impl, ticks_delta(th0, thread_ticks(pids)), per=60 / el)
            self.rec_threads(f"idle {n}-bot fleet: supervisor threads, CPU-s per minute",
                             impl, ticks_delta(ths0, thread_ticks([f.pid])), per=60 / el)
            # .env adds 100 tokens: to the last of the 100 new workers ready.
            start = len(f.lines)
            f.write_env(tokens)
            t0 = time.monotonic()
            last = 0.0
            for i in range(n, n + 100):
                t_i, _ = f.wait_log(f"Worker bot-{i} ready", 60, start=start)
                last = max(last, t_i)
            self.rec(f"scale_env_add_{k}", impl, last - t0)
            wait_first_polls(sb, ids[n:], before, timeout=60, interval=0.1)
            self.scale_stop(f, f.workers(), k, impl)
        finally:
            # Its ~7 files a bot are removed at the end of the bench, not
            # before the next fleet starts: this host's ext4 has no journal,
            # and there a new inode skips every one freed in the last minute
            # or more, so a start right after removing 22,000 files paid for
            # them (3,000 bots: ready 6.7 s in a first fleet, 8.8-9.8 s in
            # the next ones). A user's fleet starts on its own state.
            f.close(keep_files=True)

    def scale_stop(self, f, pids, k, impl):
        """SIGTERM with every worker mid-poll: to every process gone."""
        t0 = time.monotonic()
        os.kill(f.pid, signal.SIGTERM)
        deadline = t0 + 60
        while time.monotonic() < deadline:
            if f.p.poll() is not None and not any(alive(p) for p in pids):
                break
            time.sleep(0.005)
        self.rec(f"scale_gone_{k}", impl, time.monotonic() - t0)

    # --- everything
    def want(self, section):
        return not self.args.only or section in self.args.only.split(",")

    def section(self, name, fn):
        """Runs one section; a failure is reported and the run goes on."""
        if not self.want(name):
            return
        try:
            fn()
        except (RuntimeError, OSError, AssertionError, KeyError, ValueError) as e:
            log(f"SECTION {name} FAILED: {e}")
            self.evidence.setdefault("failed", []).append(f"{name}: {str(e).splitlines()[0]}")

    def run(self):
        sb = Sandbox(GLIBC_BIN)
        try:
            log(f"sandbox at {sb.url}")
            self.sizes()
            self.section("sandbox", lambda: self.sandbox_alone(sb))
            self.section("throughput", lambda: self.run_throughput(sb))
            self.section("latency", lambda: self.run_latency(sb))
            self.section("supervision", lambda: self.run_supervision(sb))
            self.section("rss", lambda: self.run_rss(sb))
            self.section("idle", lambda: self.run_idle(sb))
            self.section("standalone", self.standalone)
            self.section("scale", lambda: self.run_scale(sb))
        finally:
            kill_group(sb.p, signal.SIGTERM)
            reap(sb.p)

    def run_throughput(self, sb):
        for r in range(self.tp_runs):
            for impl in self.impls(base=True):
                for chats in (20, 1):
                    log(f"echo throughput {impl}, {chats} chat(s), run {r + 1}/{self.tp_runs}")
                    self.throughput(sb, impl, chats)

    def run_latency(self, sb):
        for r in range(self.runs):
            for impl in self.impls(base=True):
                log(f"reply latency {impl}, run {r + 1}/{self.runs}")
                self.latency(sb, impl)

    def run_supervision(self, sb):
        for impl in (GLIBC, MUSL):
            log(f"kill -9 to successor's first getUpdates, {impl}, {self.repeats} kills")
            self.kill9(sb, impl)
            log(f".env token added to READY, {impl}, {self.repeats} additions")
            self.env_add(sb, impl)

    def run_rss(self, sb):
        one = {impl: sb.new_bots(1) for impl in self.impls()}
        hundred = [t for _, t in sb.new_bots(100)]
        for r in range(self.runs):
            last = r == self.runs - 1
            for impl in self.impls():
                log(f"peak RSS, 1 bot, {impl}, run {r + 1}/{self.runs}")
                self.fleet_rss(sb, impl, [t for _, t in one[impl]], last)
            for impl in (GLIBC, MUSL):
                log(f"100 bots: start, peak RSS, SIGTERM, {impl}, run {r + 1}/{self.runs}")
                self.fleet_rss(sb, impl, hundred, last)

    def run_idle(self, sb):
        for r in range(self.runs):
            log(f"idle CPU, 10-bot groups side by side, {self.idle_secs} s, run {r + 1}/{self.runs}")
            self.idle(sb)

    def run_scale(self, sb):
        self.raise_pid_max(max(self.scale_sizes, default=0))
        for n in self.scale_sizes:
            tokens = [t for _, t in sb.new_bots(n + 100)]
            for r, impl in [(r, i) for r in range(self.scale_runs) for i in (MUSL, GLIBC)]:
                what = f"idle {self.scale_idle_secs} s, +100 by .env, " if r == 0 else ""
                log(f"{n} bots: start, PSS, {what}SIGTERM, {impl}, run {r + 1}/{self.scale_runs}")
                try:
                    self.scale(sb, impl, tokens, full=r == 0)
                except RuntimeError as e:
                    log(f"  {n} bots {impl} FAILED: {e}")
                    self.evidence.setdefault("scale_failed", []).append(
                        f"{n} bots, {impl}: {str(e).splitlines()[0]}")


# --------------------------------------------------------------------------
# The report


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    load = open("/proc/loadavg").read().split()[:3]
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "mem": mem,
            "load": " ".join(load), "python": platform.python_version(),
            "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()}


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "%":
        return f"{v:.0f}%"
    if unit == "ms":
        return f"{v:.2f} ms" if v < 10 else f"{v:.0f} ms"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "MB":
        return f"{v:.2f} MB"
    if unit == "cpu":
        return f"{v:.3f} CPU-s/min" if v < 10 else f"{v:.1f} CPU-s/min"
    if unit == "n":
        return f"{v:,.0f}"
    return f"{v:.3g}"


# metric, label, unit, goal text, goal checks {impl: fn(value, medians by impl) -> bool} or None,
# ratio: "lower" (peer / botfleet: how many times botfleet's figure the peer
# needs) or "higher" (botfleet / peer), or None. (i16) is issue 16, (i8)
# issue 8, (i3) issue 3.
def _tel(fn):
    """A check against teloxide's figure of the same run (met if no teloxide)."""
    return lambda v, vals: vals.get(TELOXIDE) is None or fn(v, vals[TELOXIDE])


def _base(fn):
    """A check against botfleet before the inbox in the same run (met if it was not built)."""
    return lambda v, vals: vals.get(BASE) is None or fn(v, vals[BASE])


def _all(*fns):
    return lambda v, vals: all(f(v, vals) for f in fns)


BOTH = lambda fn: {GLIBC: fn, MUSL: fn}  # noqa: E731
RSS_GOAL = {MUSL: lambda v, _: v < 2.5, GLIBC: lambda v, _: v < 4.0}
ROWS = [
    ("Binary", [
        ("size", "binary size", "MB", "musl < 3 MB (i8)", {MUSL: lambda v, _: v < 3.0}, None),
        ("size_aarch64", "aarch64 static binary (`make musl-aarch64`), in the musl column", "MB",
         "< 3 MB, static (i16)", {MUSL: lambda v, _: v < 3.0}, None),
    ]),
    ("Memory, BOT_HANDLER=builtin:echo (peers: their echo bot), after a few long polls", [
        ("rss_worker_med_1", "worker peak RSS (VmHWM), 1 bot", "MB",
         "musl < 2.5 MB, glibc < 4 MB (i16)", RSS_GOAL, "lower"),
        ("pss_worker_med_1", "worker PSS, 1 bot (shared text counted once)", "MB", "", None, "lower"),
        ("rss_sup_1", "supervisor peak RSS, 1 bot", "MB",
         "musl < 3.5 MB (i8); release < 5 MB (i3)", {MUSL: lambda v, _: v < 3.5, GLIBC: lambda v, _: v < 5.0}, None),
        ("rss_worker_med_100", "worker peak RSS, 100-bot fleet (median worker)", "MB",
         "musl < 2.5 MB, glibc < 4 MB (i16)", RSS_GOAL, None),
        ("rss_worker_max_100", "worker peak RSS, 100-bot fleet (max worker)", "MB",
         "musl < 2.5 MB, glibc < 4 MB (i16)", RSS_GOAL, None),
        ("rss_sup_100", "supervisor peak RSS, 100-bot fleet", "MB",
         "musl < 3.5 MB (i8); release < 5 MB (i3)", {MUSL: lambda v, _: v < 3.5, GLIBC: lambda v, _: v < 5.0}, None),
        ("pss_worker_med_100", "worker PSS, 100-bot fleet (median worker)", "MB", "", None, None),
        ("pss_fleet_100", "100-bot fleet total PSS (supervisor + 100 workers)", "MB", "", None, None),
        ("pss_10", "10-bot total PSS (botfleet: supervisor + 10 workers; peers: 10 processes)", "MB",
         "", None, "lower"),
        ("rss_worker_med_10idle", "peer process peak RSS, idle 10-bot run (median)", "MB", "", None, None),
        ("rss_after_echo", "worker peak RSS after echoing 2,000 (throughput runs)", "MB", "", None, "lower"),
    ]),
    ("Idle CPU, 10 bots side by side in one window, POLL_TIMEOUT_SECS=30 (peers: 30 s where they take it)", [
        ("idle_total", "all processes", "cpu", "< 0.2 CPU-s/min (i3, i8)",
         BOTH(lambda v, _: v < 0.2), "lower"),
        ("idle_sup", "of which the supervisor (config watcher at 2000 ms)", "cpu", "", None, None),
    ]),
    ("Echo throughput, one bot, 2,000 queued, UNPACED (SEND_RATE_PER_CHAT=0, SEND_RATE_PER_BOT=0)", [
        ("tp_20", "updates/s, 20 chats", "/s", "glibc ≥ 90 % of before the inbox (i11)",
         {GLIBC: _base(lambda v, b: v >= 0.9 * b)}, "higher"),
        ("tp_20_worker_cpu", "  bot process CPU during the run", "%", "", None, None),
        ("tp_20_sandbox_cpu", "  sandbox CPU during the run", "%", "", None, None),
        ("tp_1", "updates/s, 1 chat", "/s",
         "≥ teloxide's in the same run (i16); glibc ≥ 90 % of before the inbox (i11)",
         {GLIBC: _all(_tel(lambda v, t: v >= t), _base(lambda v, b: v >= 0.9 * b)),
          MUSL: _tel(lambda v, t: v >= t)}, "higher"),
        ("tp_1_worker_cpu", "  bot process CPU during the run", "%", "", None, None),
        ("tp_1_sandbox_cpu", "  sandbox CPU during the run", "%", "", None, None),
    ]),
    ("Reply latency, 200 messages 20 ms apart, 20 chats, unpaced", [
        ("lat_p50", "p50", "ms", "≤ teloxide's (i16); < 1 ms (i8); glibc ≤ before the inbox ÷ 0.9 (i11)",
         {GLIBC: _all(lambda v, _: v < 1, _tel(lambda x, t: x <= t), _base(lambda x, b: x <= b / 0.9)),
          MUSL: _all(lambda v, _: v < 1, _tel(lambda x, t: x <= t))}, "lower"),
        ("lat_p99", "p99", "ms", "glibc ≤ before the inbox ÷ 0.9 (i11)",
         {GLIBC: _base(lambda x, b: x <= b / 0.9)}, "lower"),
    ]),
    ("Start and stop", [
        ("first_poll", "1 bot: process start to first getUpdates", "s", "", None, "lower"),
        ("stop_1", "1 bot mid-poll: SIGTERM to exit (botfleet: supervisor and worker gone)", "s",
         "< 1 s", BOTH(lambda v, _: v < 1), "lower"),
        ("start_100_ready", "100 workers: `botfleet run` to `All 100 workers ready`", "s", "< 2 s (i3, i8)",
         BOTH(lambda v, _: v < 2), None),
        ("stop_100_sup_exit", "100 workers mid-poll: SIGTERM to supervisor exit", "s", "< 1 s",
         BOTH(lambda v, _: v < 1), None),
        ("stop_100_gone", "100 workers mid-poll: SIGTERM to all processes gone", "s", "< 1 s (i3, i8)",
         BOTH(lambda v, _: v < 1), None),
    ]),
    ("Supervision", [
        ("kill9", "kill -9 of a worker to successor's first getUpdates (RESTART_DELAY=0)", "ms",
         "< 100 ms (PM2: 108 ms)", BOTH(lambda v, _: v < 100), None),
        ("env_add", ".env token added (rename) to `Worker bot-N ready` (MONITOR 500 ms, DEBOUNCE 2000 ms)", "s",
         "≤ debounce + 1 s = 3 s", BOTH(lambda v, _: v <= 3), None),
    ]),
]
for _n, _ready, _pss, _sup in ((1000, 2, 150, None), (3000, 8, 500, 8)):
    ROWS.append((f"{_n:,} bots, BOT_HANDLER=builtin:echo, POLL_TIMEOUT_SECS=30 (scale)", [
        (f"scale_ready_{_n}", f"`botfleet run` to `All {_n} workers ready`", "s", f"musl < {_ready} s (i16)",
         {MUSL: lambda v, _, g=_ready: v < g}, None),
        (f"scale_pss_{_n}", "total PSS, supervisor + workers (2 s after ready)", "MB", f"musl < {_pss} MB (i16)",
         {MUSL: lambda v, _, g=_pss: v < g}, None),
        (f"scale_sup_rss_{_n}", "supervisor peak RSS", "MB", f"musl < {_sup} MB (i16)" if _sup else "",
         {MUSL: lambda v, _, g=_sup: v < g} if _sup else None, None),
        (f"scale_worker_rss_med_{_n}", "worker peak RSS (median)", "MB", "musl < 2.5 MB, glibc < 4 MB (i16)",
         RSS_GOAL, None),
        (f"scale_worker_rss_max_{_n}", "worker peak RSS (max)", "MB", "", None, None),
        (f"scale_idle_{_n}", "idle CPU, supervisor + workers", "cpu", "musl < 1 CPU-s/min (i16)" if _n == 1000 else "",
         {MUSL: lambda v, _: v < 1} if _n == 1000 else None, None),
        (f"scale_idle_sup_{_n}", "  of which the supervisor", "cpu", "", None, None),
        (f"scale_sb_idle_{_n}", "  the sandbox serving them (not counted above)", "cpu", "", None, None),
        (f"scale_env_add_{_n}", ".env adds 100 tokens (MONITOR 500, DEBOUNCE 500 ms): to the 100th ready", "s",
         "", None, None),
        (f"scale_gone_{_n}", f"SIGTERM to all {_n + 100} processes gone", "s",
         "musl < 1 s (i16)" if _n == 1000 else "", {MUSL: lambda v, _: v < 1} if _n == 1000 else None, None),
        (f"scale_sup_cpu_ready_{_n}", "supervisor CPU from start to all ready", "s", "", None, None),
        (f"scale_workers_cpu_ready_{_n}", "workers' CPU from start to all ready (summed)", "s", "", None, None),
        (f"scale_sb_cpu_start_{_n}", "sandbox CPU from start to every first getUpdates", "s", "", None, None),
        (f"scale_sup_fds_{_n}", "supervisor open descriptors", "n", "", None, None),
        (f"scale_worker_threads_{_n}", "threads per worker (median)", "n", "", None, None),
        (f"scale_sb_threads_{_n}", "sandbox threads (one per connection)", "n", "", None, None),
    ]))


def build_report(b, m, date, cmd):
    med = {k: {i: statistics.median(v) for i, v in d.items()} for k, d in b.results.items()}
    cnt = {k: {i: len(v) for i, v in d.items()} for k, d in b.results.items()}
    cols = [i for i in ALL_IMPLS if any(i in d for d in med.values())]
    peers = [i for i in cols if i in PEERS or i == BASE]
    out = []
    misses = []
    for group, rows in ROWS:
        lines = []
        for key, label, unit, goal, check, ratio in rows:
            vals = med.get(key, {})
            if not vals:
                continue
            cells = []
            for impl in cols:
                v = vals.get(impl)
                c = fmt(v, unit)
                if v is not None and cnt[key][impl] > 1:
                    c += f" (n={cnt[key][impl]})"
                cells.append(c)
            rtxt = ""
            if ratio and peers:
                parts = []
                for peer in peers:
                    pv = vals.get(peer)
                    bf = [vals.get(i) for i in BOTFLEET]
                    if pv is None or not all(bf):
                        continue
                    if ratio == "higher" and not pv:
                        continue
                    rs = [(pv / x if ratio == "lower" else x / pv) for x in bf]
                    parts.append(f"{IMPL_NAMES[peer]} " + " / ".join(
                        (f"{r:.2f}×" if r < 2 else f"{r:.1f}×") if r >= 0.1 else (f"1/{1 / r:.0f}×" if r > 0 else "0×") for r in rs))
                if parts:
                    what = "peer ÷ botfleet" if ratio == "lower" else "botfleet ÷ peer"
                    rtxt = f"{what} (glibc / musl): " + "; ".join(parts)
            verdict = ""
            if check:
                vs = []
                for impl, fn in check.items():
                    v = vals.get(impl)
                    if v is None:
                        continue
                    ok = fn(v, vals)
                    vs.append(f"{impl}: {'met' if ok else 'MISSED'}")
                    if not ok:
                        misses.append((key, label, impl, v, unit, goal))
                verdict = "; ".join(vs)
            lines.append(f"| {label} | {' | '.join(cells)} | {goal} | {rtxt} | {verdict} |")
        if not lines:
            continue
        out.append(f"\n### {group}\n")
        out.append("| metric | " + " | ".join(IMPL_NAMES[i] for i in cols) + " | goal | ratio | verdict |")
        out.append("|---|" + "---|" * (len(cols) + 3))
        out.extend(lines)
    sa = med.get("sandbox_alone_1", {}).get("sandbox")
    sa2 = med.get("sandbox_alone_2", {}).get("sandbox")
    if sa:
        out.append("\n### The sandbox alone (sendMessage in a loop, persistent http.client connection per client)\n")
        out.append("| clients | sendMessage/s | CPU |")
        out.append("|---|---|---|")
        out.append(f"| 1 Python client | {sa:,.0f}/s | {b.evidence.get('sandbox_alone_1', '')} |")
        if sa2:
            out.append(f"| 2 Python clients | {sa2:,.0f}/s | {b.evidence.get('sandbox_alone_2', '')} |")
    table = "\n".join(out)

    ev = []
    if b.evidence.get("tp_from_first_reply"):
        ev.append(f"\nThroughput: in {b.evidence['tp_from_first_reply']} run(s) the driver missed the "
                  "first getUpdates (it saw a later one), so those runs count 1,999 replies from "
                  "the first reply's at_us.\n")
    if b.threads:
        ev.append("\n## Where the CPU goes (per thread name, /proc/PID/task/*/stat, median over runs)\n")
        for ctx, per_impl in b.threads.items():
            ev.append(f"**{ctx}**\n")
            ev.append("| thread | " + " | ".join(IMPL_NAMES[i] for i in per_impl) + " |")
            ev.append("|---|" + "---|" * len(per_impl))
            names = set()
            for d in per_impl.values():
                names |= {k for k, v in d.items() if statistics.median(v) > 0}
            order = sorted(names, key=lambda k: -max(statistics.median(d.get(k, [0])) for d in per_impl.values()))
            for k in order:
                ev.append(f"| {k} | " + " | ".join(
                    f"{statistics.median(d[k]):.3f}" if k in d else "—" for d in per_impl.values()) + " |")
            ev.append("")
    ev.append("\n## Where the memory is (/proc/PID/smaps of the last run, Rss / Private_Dirty kB)\n")
    for key in sorted(k for k in b.evidence if k.startswith("smaps_")):
        s = b.evidence[key]
        if not s:
            continue
        ev.append(f"**{key[6:]}**: VmHWM {s['VmHWM']} kB, VmRSS {s['VmRSS']} kB, {s['Threads']} threads\n")
        ev.append("| what | Rss kB | Private_Dirty kB | mappings |")
        ev.append("|---|---|---|---|")
        for cat, (rss, pd, n) in sorted(s["cats"].items(), key=lambda kv: -kv[1][0]):
            if rss:
                ev.append(f"| {cat} | {rss} | {pd} | {n} |")
        ev.append("")
    return table, "\n".join(ev), misses, med


def write_report(b, path, date, cmd, t_total):
    m = machine()
    table, ev, misses, med = build_report(b, m, date, cmd)
    head = [
        "# botfleet benchmarks",
        "",
        f"Measured {date} with `{cmd}` in {t_total / 60:.1f} min "
        f"({'1 run per figure (quick)' if b.quick else f'each figure the median of n runs, n shown'}).",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, {m['mem']} RAM; "
        f"load average at the end {m['load']} (a shared machine: other jobs ran too). "
        f"{m['rustc']}; Python {m['python']}.",
        "",
        "Side by side, each as its docs run an echo bot, one process per bot (bench/): "
        + "; ".join(f"{IMPL_NAMES[p]} {b.peer_version[p]}" if p in b.peer_version
                    else f"{IMPL_NAMES[p]} SKIPPED ({b.peer_skip.get(p, 'not set up')})" for p in PEERS)
        + ". " + (f"{IMPL_NAMES[BASE]}: built from git in target/bench-baseline, measured in the "
                  "throughput and latency sections (issue 11's before-and-after, in one window)"
                  if BASE in b.bins else f"{IMPL_NAMES[BASE]} SKIPPED ({b.peer_skip.get(BASE, 'not set up')})")
        + ". python-telegram-bot: run_polling(timeout=30, poll_interval=0); aiogram: "
        "start_polling(polling_timeout=30), message.answer; grammY: bot.on('message:text', ctx.reply) "
        "under @grammyjs/runner run() with fetch timeout 30, stopped on SIGTERM; teloxide: "
        "teloxide::repl (its default polling), rustls, built in release with LTO.",
        "",
        "Setup: one `botfleet sandbox` (glibc release build) on loopback serves every run; "
        "each botfleet fleet runs in a fresh temp dir (own STATE_DIR, MEDIA_TMP_LOCATION, "
        "LOCK_FILE, PORT) with POLL_TIMEOUT_SECS=30 and defaults otherwise, except where a "
        "row says so. Echo = `BOT_HANDLER=builtin:echo` (no process spawned). "
        "Throughput counts from the bot's first getUpdates (sandbox `last_get_updates_at_us`) "
        "to the sandbox's `at_us` of the 2,000th reply; latency is reply `at_us` − injected "
        "`at_us`, matched by text. Peak RSS is read 1 s after each bot echoed 3 messages (3 long "
        "polls ended by a message). Idle CPU: 10-bot groups of every implementation run side by side "
        "in the same window, each summed over its processes from /proc/PID/stat. kill -9 and "
        f".env figures: the median of {b.repeats} in one fleet each. Scale: {b.scale_runs} fleets per size "
        f"and build, interleaved, each fleet's files removed only at the end of the bench (start, ready, PSS, RSS and SIGTERM in each; the idle window "
        f"and the .env change in the first), idle window {b.scale_idle_secs} s, the bench's open-file limit raised to the "
        "hard limit (inherited by the sandbox and the fleets). Every ratio is taken within this run.",
        "",
        "Goals: (i16) issue 16, (i8) issue 8, (i3) issue 3 \"Figures to reach\". "
        "Verdicts: met / MISSED, per build.",
    ]
    body = "\n".join(head) + "\n" + table + "\n"
    if b.evidence.get("pid_max"):
        body += f"\nScale: {b.evidence['pid_max']}.\n"
    if b.evidence.get("failed"):
        body += "\n**Sections that failed** (their rows are missing or partial above):\n\n"
        body += "".join(f"- {e}\n" for e in b.evidence["failed"])
    if b.evidence.get("scale_failed"):
        body += "\n**Scale runs that did not finish** (their rows are missing above):\n\n"
        body += "".join(f"- {e}\n" for e in b.evidence["scale_failed"])
    if misses:
        body += "\n## Misses (the reasons: \"Why the remaining misses\" below)\n\n"
        for key, label, impl, v, unit, goal in misses:
            body += f"- {label} ({impl}): {fmt(v, unit)}, goal {goal}\n"
    for name, issue, text, status in b.evidence.get("standalone", []):
        body += f"\n## bench/{name} (issue {issue}): {status}\n\n"
        if text:
            body += text + "\n"
    body += ev
    notes = os.path.join(ROOT, "bench/NOTES.md")
    if os.path.exists(notes) and not b.quick:
        body += "\n" + open(notes).read()
    with open(path, "w") as f:
        f.write(body)
    print(body)
    return misses


# --------------------------------------------------------------------------


def sandbox_client(url, token, chat, secs):
    """sendMessage in a loop on one persistent connection; prints a JSON count."""
    m = re.match(r"http://([\d.]+):(\d+)", url)
    conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=10)
    path = f"/bot{token}/sendMessage"
    body = json.dumps({"chat_id": int(chat), "text": "x"}).encode()
    hdr = {"Content-Type": "application/json"}
    n = 0
    c0 = time.process_time()
    t0 = time.monotonic()
    end = t0 + secs
    while time.monotonic() < end:
        conn.request("POST", path, body=body, headers=hdr)
        r = conn.getresponse()
        r.read()
        n += 1
    el = time.monotonic() - t0
    print(json.dumps({"count": n, "secs": el, "cpu": time.process_time() - c0}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run each, 15 s idle window, 3 repeats")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tp-runs", type=int, default=None,
                    help="runs of each echo-throughput row (default: the larger of --runs and 7)")
    ap.add_argument("--scale-runs", type=int, default=3,
                    help="fleets per size and build in the scale section; the idle window and "
                         "the .env change in the first only (default 3)")
    ap.add_argument("--no-ptb", action="store_true")
    ap.add_argument("--peers", default=None,
                    help="comma-separated peers to measure (default all): ptb,aiogram,grammy,teloxide")
    ap.add_argument("--setup-peers", action="store_true", help="only install the peers, then exit")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None,
                    help="comma-separated sections: sandbox,throughput,latency,supervision,rss,idle,"
                         "scale,peers,standalone")
    ap.add_argument("--scale", default=None, help="fleet sizes for the scale section (default 1000,3000; "
                                                   "quick: 1000)")
    ap.add_argument("--sandbox-client", nargs=4, metavar=("URL", "TOKEN", "CHAT", "SECS"))
    args = ap.parse_args()
    if args.sandbox_client:
        u, t, c, s = args.sandbox_client
        sandbox_client(u, t, c, float(s))
        return 0

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    # Thousands of workers and long polls: the sandbox and the supervisor
    # hold a descriptor or more each. Children inherit the raised limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    t_begin = time.monotonic()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = "make bench-quick" if args.quick else "make bench"
    out = args.out or os.path.join(ROOT, "target/BENCHMARKS-quick.md" if args.quick else "BENCHMARKS.md")
    os.chdir(ROOT)
    if not args.no_build:
        log("cargo build --release")
        subprocess.run(["cargo", "build", "--release", "--quiet"], check=True)
        log("make musl")
        subprocess.run(["make", "--no-print-directory", "musl"], check=True)
        log("make musl-aarch64 (its size; tests/aarch64.rs runs it)")
        if subprocess.run(["make", "--no-print-directory", "musl-aarch64"]).returncode != 0:
            log("make musl-aarch64 failed: its size row is left out")
    b = Bench(args)
    if args.setup_peers:
        b.setup_peers()
        for p in PEERS:
            print(f"{IMPL_NAMES[p]}: {b.peer_version.get(p) or 'SKIPPED: ' + b.peer_skip.get(p, '?')}")
        return 0
    try:
        b.setup_peers()
        b.setup_base()
        b.run()
    finally:
        for p in STARTED:
            if p.poll() is None:
                kill_group(p)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for d in TEMPDIRS:
            for pid in workers_of(os.path.join(d, 'state')):
                log(f"WARNING: killing leftover worker {pid} from {d}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(d, ignore_errors=True)
    write_report(b, out, date, cmd, time.monotonic() - t_begin)
    log(f"wrote {os.path.relpath(out, ROOT)} in {(time.monotonic() - t_begin) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
