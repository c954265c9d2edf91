#!/usr/bin/env python
"""Waiting and asyncio (issue 16): the event loop's stalls under contending
writers, what AsyncLedger's lowered switch interval costs, and the time from
a release to the next waiter's grant.

Usage (from the repository root)::

    .venv/bin/python tools/bench/waiting.py                 # every part
    .venv/bin/python tools/bench/waiting.py --parts stall --callbacks
    .venv/bin/python tools/bench/waiting.py --quick         # short (CI keeps it working)

**Stall.** One asyncio loop runs a heartbeat (``asyncio.sleep(0.001)`` in a
loop; a stall is how late each wake-up is) while it does register+release
pairs on its own path, and 4 writer processes register+release pairs on
theirs as fast as they can (every pair contends for the ledger's lock).
Side by side, in one run: the heartbeat alone (``idle``: what the machine
itself does to the loop), ``AsyncLedger`` as shipped (``async``: the switch
interval lowered in its worker threads), ``AsyncLedger(switch_interval=None)``
(``async-5ms``: CPython's 5 ms left alone), and calling the blocking
``Ledger`` from the coroutine (``blocking``: what the issue measured). Each
at two priorities where the process may use SCHED_FIFO (root or
CAP_SYS_NICE): ``normal``, and ``fifo``, where the loop's thread and the
worker threads it starts run at SCHED_FIFO while the writers stay
SCHED_OTHER, so that no other process keeps the loop's threads off a CPU:
the stall left is the loop's own share (its callbacks, the GIL), apart from
the machine's (the scheduler, the hypervisor). Reported per run: the largest
stall, p99, p50, the beats over 5 ms; the largest stall less the time the
loop's thread was runnable but waiting for a CPU in that beat
(``/proc/thread-self/schedstat``); the largest stall's beat split into the
loop thread's time on a CPU (``time.thread_time``), waiting for a CPU, and
asleep (the 1 ms sleep itself, waiting for the GIL or a lock); with
``--callbacks``, the loop's callbacks' CPU in that beat and the largest
one's; the longest garbage collection in that beat (a collection holds
the GIL until it is done, whatever the switch interval: one in a worker
thread keeps the loop's thread asleep as long), its generation and whether
a worker ran it, and the run's collections, the full ones (generation 2)
and the longest of those; how many threads the loop's thread started during
the run and the longest it waited in ``Thread.start``; the pairs done, by
the loop and by the writers. ``--freeze``: ``gc.freeze()`` after the
warm-up, as a program may do once started (a full collection then walks
only the objects made since). Each run measures the steady state: before the heartbeat
starts, 8 calls at once make the executor start its threads (``Thread.start``
blocks the loop's thread until the new thread runs: up to 7 ms each on 2
busy cores) and 20 pairs catch the ledger up with the writers.

**Cost.** The price of the lowered switch interval, with no writer: pairs
for a while alone (per second, the process's CPU and context switches per
pair), then beside a thread of the program that runs Python (pairs per
second, and that thread's loop turns per second against its turns beside an
idle loop); shipped against ``switch_interval=None``, rounds alternated.

**Release to grant.** 8 processes take turns on one scope: each waits
(``register(..., wait=inf)``), holds it for ~1 ms, and releases. The time
from one release's return to the next grant's return is read from
``CLOCK_MONOTONIC`` (one clock for every process of the boot). Side by side:
woken by inotify and pidfds, against the fallback that looks every
``POLL_SECONDS`` (inotify turned off), and the async waiters
(``AsyncLedger``, one process each). Also the wait of each grant (from the
``register`` call to its return): with the queue, at most about the 7 turns
before it; without order, a longer tail.

With ``--pg`` (a throwaway cluster, ``tests/pgserver.py``) or ``--pg-url
URL`` (a server of yours: schemas ``wbench_*``, dropped after), the same on
PostgreSQL: ``pg`` (the waiters' queue, woken by LISTEN on each ticket's
connection), ``pg-async``, and ``pg-unordered`` (the queue turned off:
waiters woken by ``LogStore.wait`` and racing, as before issue 16's queue
on PostgreSQL). ``--no-stall`` skips the stall part.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

WRITER = textwrap.dedent("""
    import sys, time
    from scopeledger import Ledger, ScopeRule
    d, i, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    led = Ledger.open(d)
    rule = [ScopeRule(f"/bench/writer{i}", "write")]
    n = 0
    print("ready", flush=True)
    sys.stdin.readline()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        a = led.register(f"writer{i}", rule)
        led.release(a.name, token=a.token)
        n += 1
    print(n, flush=True)
""")


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


#: The stall part's modes: the heartbeat alone, AsyncLedger as shipped (the switch interval
#: lowered while its calls run), AsyncLedger with the interpreter's switch interval left
#: alone (CPython's 5 ms), and the blocking Ledger called in the coroutine.
MODES = ("idle", "async", "async-5ms", "blocking")

#: The switch interval AsyncLedger is given in the ``async`` runs (``--switch-interval``;
#: default the shipped one).
SWITCH: list[float] = []

#: SCHED_FIFO priority of the loop's process in the ``fifo`` runs.
FIFO_PRIORITY = 50


def _cpu_wait() -> Any:
    """A reader of this thread's time runnable but waiting for a CPU, ns (the 2nd field of
    ``/proc/thread-self/schedstat``, updated when the thread gets a CPU), or ``None`` where
    there is none."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        int(os.pread(fd, 128, 0).split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return lambda: int(os.pread(fd, 128, 0).split()[1])


class _Callbacks:
    """``--callbacks``: the loop thread's CPU time in callbacks (``Handle._run``), summed
    per heartbeat beat, and the largest one's (a diagnostic: it wraps asyncio's
    ``Handle._run``, which costs a little per callback)."""

    def __init__(self) -> None:
        self.cpu = 0
        self.largest = 0
        self._orig = asyncio.events.Handle._run
        me = self

        def _run(handle: Any) -> None:
            c0 = time.thread_time_ns()
            me._orig(handle)
            dc = time.thread_time_ns() - c0
            me.cpu += dc
            if dc > me.largest:
                me.largest = dc

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]

    def take(self) -> tuple[int, int]:
        out = (self.cpu, self.largest)
        self.cpu = self.largest = 0
        return out

    def close(self) -> None:
        asyncio.events.Handle._run = self._orig  # type: ignore[method-assign]


CALLBACKS: list[bool] = [False]


class _Collections:
    """The cyclic garbage collector's collections during a run (``gc.callbacks``): generation,
    start and end (``time.monotonic_ns``), and whether the loop's thread ran it. A collection
    holds the GIL from start to end whatever the switch interval: one run by a worker thread
    stalls the loop's thread (asleep, waiting for the GIL) as long as it lasts; a full one
    (generation 2) walks every object the process's collector tracks."""

    def __init__(self) -> None:
        self.done: list[tuple[int, int, int, bool]] = []
        self._started: dict[int, int] = {}
        loop_thread = threading.get_ident()
        me = self

        def callback(phase: str, info: dict[str, Any]) -> None:
            now, me_ = time.monotonic_ns(), threading.get_ident()
            if phase == "start":
                me._started[me_] = now
            elif me_ in me._started:
                me.done.append((info["generation"], me._started.pop(me_), now, me_ == loop_thread))

        self._callback = callback
        gc.callbacks.append(callback)

    def close(self) -> None:
        gc.callbacks.remove(self._callback)

    def during(self, t0: int, t1: int) -> list[tuple[int, int, int, bool]]:
        """The collections that overlap ``t0 .. t1`` (ns)."""
        return [c for c in self.done if c[2] > t0 and c[1] < t1]


#: ``--freeze``: ``gc.freeze()`` after the warm-up (what a program may do after its start-up: the
#: collector then leaves every object it tracked so far alone).
FREEZE: list[bool] = [False]

#: Before the heartbeat: this many calls at once (the executor starts its threads), then
#: this many pairs (the ledger catches up).
WARM_THREADS = 8
WARM_PAIRS = 20


class _ThreadStarts:
    """How long each ``threading.Thread.start`` called on the loop's thread waited for its
    new thread to run, seconds (a new executor thread, an inotify closer)."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._orig = threading.Thread.start
        loop_thread = threading.current_thread()
        me = self

        def start(thread: threading.Thread) -> None:
            t = time.monotonic()
            me._orig(thread)
            if threading.current_thread() is loop_thread:
                me.waits.append(time.monotonic() - t)

        threading.Thread.start = start  # type: ignore[method-assign]

    def close(self) -> None:
        threading.Thread.start = self._orig  # type: ignore[method-assign]


async def _stall_run(d: str, seconds: float, mode: str) -> dict[str, float]:
    from scopeledger import AsyncLedger, Ledger, ScopeRule

    led = Ledger.open(d)
    aled = AsyncLedger(led, switch_interval=None if mode == "async-5ms" else SWITCH[0])
    rule = [ScopeRule("/bench/loop", "write")]
    # Steady state first: the executor's threads started (Thread.start blocks its caller, the
    # loop's thread, until the new thread runs: up to 7 ms each on 2 busy cores; see
    # thread_starts below) and the ledger caught up with what the writers appended.
    await asyncio.gather(*(aled.refresh() for _ in range(WARM_THREADS)))
    for _ in range(WARM_PAIRS):
        a = await aled.register("loop", rule)
        await aled.release("loop", a.token)
    if FREEZE[0]:
        gc.freeze()
    # stall s, ns on a CPU, ns waiting for one, callbacks' ns, the largest one's, the beat's start and end ns
    beats: list[tuple[float, int, int, int, int, int, int]] = []
    cpu_wait = _cpu_wait() or (lambda: 0)
    cbs = _Callbacks() if CALLBACKS[0] else None
    collections = _Collections()
    starts = _ThreadStarts()
    stop = time.monotonic() + seconds
    pairs = 0

    async def heartbeat() -> None:
        while time.monotonic() < stop:
            on0, wait0 = time.thread_time_ns(), cpu_wait()
            if cbs is not None:
                cbs.take()
            t = time.monotonic_ns()
            await asyncio.sleep(0.001)
            t1 = time.monotonic_ns()
            late = (t1 - t) / 1e9 - 0.001
            on1, wait1 = time.thread_time_ns(), cpu_wait()
            cb_cpu, cb_largest = cbs.take() if cbs is not None else (0, 0)
            beats.append((late, on1 - on0, wait1 - wait0, cb_cpu, cb_largest, t, t1))

    async def work() -> None:
        nonlocal pairs
        while time.monotonic() < stop:
            if mode == "idle":  # the heartbeat alone: what the machine does to the loop
                await asyncio.sleep(0.001)
                continue
            if mode != "blocking":
                a = await aled.register("loop", rule)
                await aled.release("loop", a.token)
            else:
                a = led.register("loop", rule)  # blocks the loop while it waits for the lock
                led.release("loop", token=a.token)
                await asyncio.sleep(0)
            pairs += 1

    try:
        await asyncio.gather(heartbeat(), work())
    finally:
        starts.close()
        collections.close()
        if cbs is not None:
            cbs.close()
        if FREEZE[0]:
            gc.unfreeze()
    led.close()
    stalls = [b[0] for b in beats]
    worst = max(beats)
    full = [c for c in collections.done if c[0] == 2]
    in_worst = collections.during(worst[5], worst[6])
    return {"max_ms": worst[0] * 1e3, "p99_ms": pct(stalls, 99) * 1e3, "p50_ms": pct(stalls, 50) * 1e3,
            "beats_over_5ms": sum(x > 0.005 for x in stalls), "beats": len(stalls),
            # the largest stall less the loop thread's wait for a CPU in that beat, over all beats
            "max_less_cpu_wait_ms": max(b[0] - b[2] / 1e9 for b in beats) * 1e3,
            # the largest stall's beat: the loop thread on a CPU, waiting for one, neither (asleep:
            # the 1 ms sleep, the GIL, a lock), and in callbacks (--callbacks)
            "worst_on_cpu_ms": worst[1] / 1e6, "worst_cpu_wait_ms": worst[2] / 1e6,
            "worst_asleep_ms": (worst[0] + 0.001) * 1e3 - (worst[1] + worst[2]) / 1e6,
            "worst_callbacks_ms": worst[3] / 1e6, "worst_largest_callback_ms": worst[4] / 1e6,
            # the collector: collections in the run, the full ones and the longest of those, and the
            # longest collection that overlapped the largest stall's beat (its generation; by a worker)
            "gc_collections": len(collections.done), "gc_full": len(full),
            "gc_full_max_ms": max(((c[2] - c[1]) / 1e6 for c in full), default=0),
            "worst_gc_ms": max(((c[2] - c[1]) / 1e6 for c in in_worst), default=0),
            "worst_gc_generation": max(in_worst, key=lambda c: c[2] - c[1])[0] if in_worst else -1,
            "worst_gc_by_worker": int(any(not c[3] for c in in_worst)),
            "thread_starts": len(starts.waits), "thread_start_max_ms": max(starts.waits, default=0) * 1e3,
            "pairs": pairs}


def fifo_refused() -> str | None:
    """Why the loop's process cannot run at SCHED_FIFO here (``None``: it can)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
    except (OSError, AttributeError) as exc:
        return f"SCHED_FIFO refused ({exc}): needs root or CAP_SYS_NICE"
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return None


def stall(seconds: float, rounds: int, priorities: tuple[str, ...] = ("normal",),
          modes: tuple[str, ...] = MODES) -> dict[str, list[dict[str, float]]]:
    """``{f"{mode}/{priority}": [one dict per round]}``. ``fifo``: the loop's thread (and the
    worker threads it starts) run at SCHED_FIFO, so that no other process keeps them off a CPU;
    the writers stay SCHED_OTHER. What is left is the loop's own share (its callbacks, the GIL)."""
    out: dict[str, list[dict[str, float]]] = {f"{m}/{p}": [] for p in priorities for m in modes}
    for r in range(rounds):
        order = [(m, p) for p in priorities for m in modes]
        for mode, prio in order if r % 2 == 0 else order[::-1]:
            d = tempfile.mkdtemp(prefix="wait-bench-") + "/ledger"
            from scopeledger import Ledger

            Ledger.open(d).close()
            writers = [subprocess.Popen([sys.executable, "-c", WRITER, d, str(i), str(seconds + 0.3)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                       for i in range(4)]
            for w in writers:
                assert w.stdout.readline().strip() == "ready"
            for w in writers:
                w.stdin.write("go\n")
                w.stdin.flush()
            time.sleep(0.2)  # the writers are in their loop before the event loop's run starts
            if prio == "fifo":
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
            try:
                res = asyncio.run(_stall_run(d, seconds, mode))
            finally:
                if prio == "fifo":
                    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            res["writer_pairs"] = sum(int(w.communicate()[0] or 0) for w in writers)
            res["load"] = os.getloadavg()[0]
            out[f"{mode}/{prio}"].append(res)
    return out


async def _pairs_for(aled: Any, seconds: float) -> int:
    from scopeledger import ScopeRule

    rule = [ScopeRule("/bench/cost", "write")]
    n = 0
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        a = await aled.register("cost", rule)
        await aled.release("cost", a.token)
        n += 1
    return n


def _spinning(seconds: float, work: Callable[[], Any]) -> tuple[Any, float]:
    """``work()`` while a thread of the program runs Python (a counting loop); ``work``'s
    result and that thread's loop turns per second meanwhile."""
    stop = threading.Event()
    turns = [0]

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1
        turns[0] = n

    t = threading.Thread(target=spin)
    t0 = time.monotonic()
    t.start()
    out = work()
    stop.set()
    t.join()
    return out, turns[0] / (time.monotonic() - t0)


def cost(seconds: float, rounds: int) -> dict[str, list[dict[str, float]]]:
    """The price of the lowered switch interval, no other process contending, AsyncLedger as
    shipped (``lowered``) and with the switch interval left alone (``5ms``), rounds
    alternated: register+release pairs for ``seconds`` alone (pairs/s, the process's CPU
    and context switches per pair), then beside a thread of the program that runs Python
    (pairs/s, and that thread's loop turns/s against its turns/s beside an idle loop)."""
    from scopeledger import AsyncLedger, Ledger

    out: dict[str, list[dict[str, float]]] = {"lowered": [], "5ms": []}
    for r in range(rounds):
        for which in ("lowered", "5ms") if r % 2 == 0 else ("5ms", "lowered"):
            d = tempfile.mkdtemp(prefix="wait-bench-") + "/ledger"
            led = Ledger.open(d)
            aled = AsyncLedger(led, switch_interval=None if which == "5ms" else SWITCH[0])
            asyncio.run(_pairs_for(aled, 0.2))  # warm
            ru0, cpu0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
            alone = asyncio.run(_pairs_for(aled, seconds))
            ru1, cpu1 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
            switches = (ru1.ru_nvcsw - ru0.ru_nvcsw) + (ru1.ru_nivcsw - ru0.ru_nivcsw)
            _, idle_turns = _spinning(seconds, lambda: asyncio.run(asyncio.sleep(seconds)))
            beside, turns = _spinning(seconds, functools.partial(asyncio.run, _pairs_for(aled, seconds)))
            led.close()
            out[which].append({"pairs_alone": alone / seconds, "cpu_us_per_pair": (cpu1 - cpu0) / alone * 1e6,
                               "switches_per_pair": switches / alone, "pairs_beside": beside / seconds,
                               "spin_turns": turns, "spin_turns_idle": idle_turns})
    return out


TAKER = textwrap.dedent("""
    import asyncio, json, sys, time
    from scopeledger import Ledger, ScopeRule, AsyncLedger
    import scopeledger._filetickets as F
    d, i, turns, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if mode == "poll":
        # inotify turned off: as on a network file system (a look every F.POLL_SECONDS).
        # (The waiters' watches are the Hub's: FileWatch is a log follower's alone.)
        _init = F.Hub.__init__
        def init(self, log_path, queue_dir, network):
            _init(self, log_path, queue_dir, True)
        F.Hub.__init__ = init
    if mode == "pg-unordered":
        # no queue: woken by LogStore.wait (LISTEN), unordered, as before the queue on PostgreSQL
        from scopeledger._pgstore import PgStore
        PgStore.tickets = lambda self: None
    led = Ledger.open(d)
    rule = [ScopeRule("/bench/shared", "write")]
    out = []
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0 = time.process_time()
    async def amain():
        aled = AsyncLedger(led)
        for k in range(turns):
            s = time.monotonic()
            a = await aled.register(f"taker{i}", rule, wait=float("inf"))
            g = time.monotonic()
            t_end = g + 0.001
            while time.monotonic() < t_end:
                pass
            # the release's own return, in its thread (not when the loop resumes the coroutine)
            r = await asyncio.to_thread(lambda: (led.release(a.name, token=a.token), time.monotonic())[1])
            out.append((g, r, s))
    if mode in ("async", "pg-async"):
        asyncio.run(amain())
    else:
        for k in range(turns):
            s = time.monotonic()
            a = led.register(f"taker{i}", rule, wait=float("inf"))
            g = time.monotonic()
            t_end = g + 0.001
            while time.monotonic() < t_end:
                pass
            led.release(a.name, token=a.token)
            out.append((g, time.monotonic(), s))
    print(json.dumps({"spans": out, "cpu": time.process_time() - cpu0}), flush=True)
""")


def handover(turns: int, mode: str, waiters: int = 8, pg_base: str | None = None) -> dict[str, float]:
    from scopeledger import Ledger

    schema = None
    if mode.startswith("pg"):
        assert pg_base is not None
        schema = f"wbench_{uuid.uuid4().hex[:12]}"
        d = f"{pg_base}{'&' if '?' in pg_base else '?'}schema={schema}"
    else:
        d = tempfile.mkdtemp(prefix="wait-bench-") + "/ledger"
    Ledger.open(d).close()
    procs = [subprocess.Popen([sys.executable, "-c", TAKER, d, str(i), str(turns), mode],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(waiters)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    spans = []
    cpu = 0.0
    for p in procs:
        doc = json.loads(p.communicate()[0])
        spans.extend(doc["spans"])
        cpu += doc["cpu"]
    if schema is not None:
        _drop_schema(d, schema)
    spans.sort()
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans) if b[0] > a[1]]
    waits = [g - s0 for g, _, s0 in spans]
    return {"p50_ms": pct(gaps, 50) * 1e3, "p99_ms": pct(gaps, 99) * 1e3, "max_ms": max(gaps) * 1e3,
            "mean_ms": statistics.fmean(gaps) * 1e3, "handovers": len(gaps),
            "cpu_ms_per_grant": cpu * 1e3 / max(1, len(spans)),
            "wait_p50_ms": pct(waits, 50) * 1e3, "wait_p99_ms": pct(waits, 99) * 1e3,
            "wait_max_ms": max(waits) * 1e3}


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    from scopeledger._pgstore import parse_url

    with psycopg.connect(parse_url(url).conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _gc_where(r: dict[str, float]) -> str:
    """`` (gen G, worker)`` for the collection in the largest stall's beat, or ``""``."""
    if r["worst_gc_generation"] < 0:
        return ""
    return f" (gen {int(r['worst_gc_generation'])}, {'worker' if r['worst_gc_by_worker'] else 'loop'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0, help="per stall run")
    ap.add_argument("--rounds", type=int, default=3, help="alternated runs of each mode")
    ap.add_argument("--turns", type=int, default=50, help="grants per waiter process")
    ap.add_argument("--pg", action="store_true", help="also on PostgreSQL, a throwaway cluster (tests/pgserver.py)")
    ap.add_argument("--pg-url", help="also on PostgreSQL, this server (a URL without schema)")
    ap.add_argument("--no-stall", action="store_true", help="skip the stall part")
    ap.add_argument("--parts", default="stall,cost,handover", help="a subset of stall,cost,handover")
    ap.add_argument("--priority", default="auto",
                    help="stall runs: normal, fifo or normal,fifo (auto: both where SCHED_FIFO is allowed)")
    ap.add_argument("--modes", default=",".join(MODES), help="stall modes: a subset of " + ",".join(MODES))
    ap.add_argument("--json", metavar="PATH", help="write every figure there")
    ap.add_argument("--callbacks", action="store_true",
                    help="stall runs: also time the loop's callbacks (CPU, per beat; costs a little)")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="seconds, AsyncLedger's switch_interval in the async runs (default: as shipped)")
    ap.add_argument("--freeze", action="store_true",
                    help="stall runs: gc.freeze() after the warm-up (the collector leaves the objects of the "
                         "start-up alone), gc.unfreeze() after the run")
    args = ap.parse_args(argv)
    FREEZE[0] = args.freeze
    from scopeledger._async import SWITCH_INTERVAL

    CALLBACKS[0] = args.callbacks
    SWITCH[:] = [SWITCH_INTERVAL if args.switch_interval is None else args.switch_interval]
    if args.quick:
        args.seconds, args.rounds, args.turns = 0.5, 1, 5
    parts = set(args.parts.split(","))
    if args.no_stall:
        parts.discard("stall")
    refused = fifo_refused()
    if args.priority == "auto":
        priorities: tuple[str, ...] = ("normal",) if refused else ("normal", "fifo")
    else:
        priorities = tuple(args.priority.split(","))
        if "fifo" in priorities and refused:
            ap.error(refused)
    doc: dict[str, Any] = {"cpus": os.cpu_count(), "load_start": os.getloadavg(), "seconds": args.seconds,
                           "rounds": args.rounds, "switch_interval": sys.getswitchinterval(),
                           "async_switch_interval": SWITCH[0]}
    print(f"# waiting bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, AsyncLedger's switch "
          f"interval {SWITCH[0] * 1e3:g} ms ('async'; 'async-5ms': left at {sys.getswitchinterval() * 1e3:g} ms)")
    if "stall" in parts:
        if refused and args.priority == "auto":
            print(f"# stall at normal priority only: {refused}")
        res = stall(args.seconds, args.rounds, priorities, tuple(args.modes.split(",")))
        doc["stall"] = res
        print("# stall: how late a 1 ms heartbeat wakes (max, p99, p50, beats over 5 ms), ms; 'less CPU wait': "
              "the largest of (a beat's stall less the time the loop's thread was runnable but off a CPU in it); "
              "'worst': the largest stall's beat (1 ms asleep + the stall): the loop's thread on a CPU, waiting "
              "for one, asleep (the sleep, the GIL, a lock), the longest garbage collection in it (by the loop's "
              "thread or a worker's)" + (", its callbacks' CPU / the largest one's" if CALLBACKS[0] else "")
              + "; 'gc': the run's collections, the full ones (the longest)")
        for key, runs in res.items():
            for r in runs:
                cb = (f" callbacks {r['worst_callbacks_ms']:4.2f}/{r['worst_largest_callback_ms']:4.2f}"
                      if CALLBACKS[0] else "")
                print(f"stall {key:18s} max {r['max_ms']:6.2f} ms  p99 {r['p99_ms']:5.2f}  p50 {r['p50_ms']:4.2f}"
                      f"  >5ms {int(r['beats_over_5ms']):3d}/{int(r['beats'])}"
                      f"  less CPU wait {r['max_less_cpu_wait_ms']:6.2f}"
                      f"  worst: on CPU {r['worst_on_cpu_ms']:4.2f} CPU wait {r['worst_cpu_wait_ms']:5.2f}"
                      f" asleep {r['worst_asleep_ms']:5.2f}{cb}"
                      f" gc {r['worst_gc_ms']:4.2f}{_gc_where(r)}"
                      f"  gc: {int(r['gc_collections'])}, full {int(r['gc_full'])} ({r['gc_full_max_ms']:.2f})"
                      f"  thread starts {int(r['thread_starts'])} ({r['thread_start_max_ms']:.2f})"
                      f"  pairs {int(r['pairs']):5d}  writers' {int(r['writer_pairs']):6d}"
                      f"  load {r['load']:.2f}")
    if "cost" in parts:
        c = cost(args.seconds, args.rounds)
        doc["cost"] = c
        print("# cost of the lowered switch interval, no writers: AsyncLedger pairs alone (per s; the process's "
              "CPU and context switches per pair), then beside a thread running Python (pairs/s; that thread's "
              "loop turns/s, and beside an idle loop)")
        for which, runs in c.items():
            for r in runs:
                print(f"cost {which:8s} alone {r['pairs_alone']:6.0f} pairs/s  CPU {r['cpu_us_per_pair']:5.1f} us/pair"
                      f"  switches {r['switches_per_pair']:4.1f}/pair  beside a busy thread {r['pairs_beside']:6.0f}"
                      f" pairs/s, its turns {r['spin_turns'] / 1e6:5.2f} M/s (idle loop: "
                      f"{r['spin_turns_idle'] / 1e6:5.2f} M/s)")
    cluster = None
    pg_base = args.pg_url
    if args.pg and pg_base is None and "handover" in parts:
        sys.path.append(os.path.join(ROOT, "tests"))
        import pgserver

        bindir, why = pgserver.find_binaries()
        if bindir is None:
            sys.exit(why)
        cluster = pgserver.Cluster(bindir).start()
        pg_base = cluster.url()
    try:
        if "handover" in parts:
            doc["handover"] = {}
            for rnd in range(args.rounds):
                modes = ["inotify", "poll", "async"]
                if pg_base is not None:
                    modes += ["pg", "pg-unordered", "pg-async"]
                if rnd % 2:
                    modes.reverse()
                for mode in modes:
                    h = handover(args.turns, mode, pg_base=pg_base)
                    doc["handover"].setdefault(mode, []).append(h)
                    print(f"release->grant {mode:12s} p50 {h['p50_ms']:6.2f} ms  p99 {h['p99_ms']:6.2f} ms  "
                          f"max {h['max_ms']:7.2f} ms  mean {h['mean_ms']:6.2f} ms  "
                          f"CPU/grant {h['cpu_ms_per_grant']:5.2f} ms"
                          f"  wait p50 {h['wait_p50_ms']:6.1f} p99 {h['wait_p99_ms']:6.1f}"
                          f" max {h['wait_max_ms']:6.1f} ms "
                          f"(all 8 processes, incl. the 1 ms held; {int(h['handovers'])} handovers; "
                          f"load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    doc["load_end"] = os.getloadavg()
    print(f"# load at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
