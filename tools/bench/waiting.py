#!/usr/bin/env python
"""Waiting and asyncio (issue 16): the event loop's stalls under contending
writers, and the time from a release to the next waiter's grant.

Usage (from the repository root)::

    .venv/bin/python tools/bench/waiting.py                 # both parts
    .venv/bin/python tools/bench/waiting.py --quick         # short (CI keeps it working)

**Stall.** One asyncio loop runs a heartbeat (``asyncio.sleep(0.001)`` in a
loop; a stall is how late each wake-up is) while it does register+release
pairs on its own path, and 4 writer processes register+release pairs on
theirs as fast as they can (every pair contends for the ledger's lock).
Side by side, in one run: the heartbeat alone (``idle``: what the machine
itself does to the loop), ``AsyncLedger``, and calling the blocking
``Ledger`` from the coroutine (what the issue measured). Reported: the
largest stall, its p99, and the pairs done.

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
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

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


async def _stall_run(d: str, seconds: float, mode: str) -> dict[str, float]:
    from scopeledger import AsyncLedger, Ledger, ScopeRule

    led = Ledger.open(d)
    aled = AsyncLedger(led)
    rule = [ScopeRule("/bench/loop", "write")]
    stalls: list[float] = []
    stop = time.monotonic() + seconds
    pairs = 0

    async def heartbeat() -> None:
        while time.monotonic() < stop:
            t = time.monotonic()
            await asyncio.sleep(0.001)
            stalls.append(time.monotonic() - t - 0.001)

    async def work() -> None:
        nonlocal pairs
        while time.monotonic() < stop:
            if mode == "idle":  # the heartbeat alone: what the machine does to the loop
                await asyncio.sleep(0.001)
                continue
            if mode == "async":
                a = await aled.register("loop", rule)
                await aled.release("loop", a.token)
            else:
                a = led.register("loop", rule)  # blocks the loop while it waits for the lock
                led.release("loop", token=a.token)
                await asyncio.sleep(0)
            pairs += 1

    await asyncio.gather(heartbeat(), work())
    led.close()
    return {"max_ms": max(stalls) * 1e3, "p99_ms": pct(stalls, 99) * 1e3, "p50_ms": pct(stalls, 50) * 1e3,
            "pairs": pairs}


def stall(seconds: float, rounds: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {"idle": [], "async": [], "blocking": []}
    for r in range(rounds):
        for mode in ("idle", "async", "blocking") if r % 2 == 0 else ("blocking", "async", "idle"):
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
            res = asyncio.run(_stall_run(d, seconds, mode))
            res["writer_pairs"] = sum(int(w.communicate()[0] or 0) for w in writers)
            out[mode].append(res)
    return out


TAKER = textwrap.dedent("""
    import asyncio, json, sys, time
    from scopeledger import Ledger, ScopeRule, AsyncLedger
    import scopeledger._filetickets as F
    d, i, turns, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if mode == "poll":
        # inotify turned off: as on a network file system (a look every F.POLL_SECONDS)
        _init = F.FileWatch.__init__
        def init(self, log_path, queue_dir, network):
            _init(self, log_path, queue_dir, True)
        F.FileWatch.__init__ = init
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0, help="per stall run")
    ap.add_argument("--rounds", type=int, default=3, help="alternated runs of each mode")
    ap.add_argument("--turns", type=int, default=50, help="grants per waiter process")
    ap.add_argument("--pg", action="store_true", help="also on PostgreSQL, a throwaway cluster (tests/pgserver.py)")
    ap.add_argument("--pg-url", help="also on PostgreSQL, this server (a URL without schema)")
    ap.add_argument("--no-stall", action="store_true", help="skip the stall part")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.turns = 0.5, 1, 5
    print(f"# waiting bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    if not args.no_stall:
        res = stall(args.seconds, args.rounds)
        for mode, runs in res.items():
            for r in runs:
                print(f"stall {mode:8s} max {r['max_ms']:8.2f} ms  p99 {r['p99_ms']:6.2f} ms  p50 {r['p50_ms']:5.2f} ms"
                      f"  loop pairs {int(r['pairs']):6d}  writer pairs {int(r['writer_pairs'])}")
    cluster = None
    pg_base = args.pg_url
    if args.pg and pg_base is None:
        sys.path.append(os.path.join(ROOT, "tests"))
        import pgserver

        bindir, why = pgserver.find_binaries()
        if bindir is None:
            sys.exit(why)
        cluster = pgserver.Cluster(bindir).start()
        pg_base = cluster.url()
    try:
        for rnd in range(args.rounds):
            modes = ["inotify", "poll", "async"]
            if pg_base is not None:
                modes += ["pg", "pg-unordered", "pg-async"]
            if rnd % 2:
                modes.reverse()
            for mode in modes:
                h = handover(args.turns, mode, pg_base=pg_base)
                print(f"release->grant {mode:12s} p50 {h['p50_ms']:6.2f} ms  p99 {h['p99_ms']:6.2f} ms  "
                      f"max {h['max_ms']:7.2f} ms  mean {h['mean_ms']:6.2f} ms  "
                      f"CPU/grant {h['cpu_ms_per_grant']:5.2f} ms"
                      f"  wait p50 {h['wait_p50_ms']:6.1f} p99 {h['wait_p99_ms']:6.1f} max {h['wait_max_ms']:6.1f} ms "
                      f"(all 8 processes, incl. the 1 ms held; {int(h['handovers'])} handovers; "
                      f"load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
