#!/usr/bin/env python
"""Where a register+release pair's time goes: a ladder from the raw floor up to
scopeledger, measured side by side in one process (issue 5's "≤ 3× the floor").

Usage (from the repository root)::

    .venv/bin/python tools/bench/ladder.py [--holders 1000] [--rounds 15] [--pairs 500]

Rungs, each a register+release pair of a fresh holder with the harness's rules
(``run.transient_rules``), against a live set of ``--holders`` holders:

- ``floor``: ``baselines.RawFloor``, the event's bytes appended under flock.
- ``lean python``: the least Python this design needs, written straight: the gate
  check, flock, fstat, the event dict, ``orjson.dumps``, one ``write``, unlock, the
  blake2b chain hash, the conflict lookup and the two ``PathIndex`` updates, with
  ``ScopeRule`` objects built per pair. No thread lock, no catch-up of other
  processes' lines, no liveness, no refusal records, no ``Allocation``.
- ``scopeledger, rules prebuilt``: ``Ledger.register``/``release`` with
  ``resolve_symlinks=False`` and the same two ``ScopeRule`` objects every time.
- ``scopeledger, no symlink resolution``: rules built per pair.
- ``scopeledger``: the defaults (symlinks resolved), as ``run.py`` measures it.

Rounds are interleaved (each rung in turn, ``--rounds`` times); the figures are the
median of the round means, the p50 of every pair timed, and the CPU time (user + system,
``time.process_time``) per pair, median of the rounds: the last two move least with load.
Snapshots are off (``snapshot_every`` past the run) so that only the per-event path is
compared.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from baselines import RawFloor  # noqa: E402
from run import holder_rules, transient_rules  # noqa: E402

from scopeledger import Ledger, ScopeRule  # noqa: E402
from scopeledger._fold import PathIndex  # noqa: E402


class LeanLedger:
    """The lean-python rung: one process, no checks beyond the conflict lookup."""

    def __init__(self, directory: str) -> None:
        self.fd = os.open(os.path.join(directory, "events.jsonl"), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self.gate = os.open(os.path.join(directory, "gate"), os.O_RDWR | os.O_CREAT, 0o600)
        self.writes, self.reads = PathIndex(), PathIndex()
        self.holders: dict[str, tuple[ScopeRule, ...]] = {}
        self.actor = {"pid": os.getpid(), "start": time.time(), "boot": "0" * 36}
        self.seq, self.prev = 0, "0" * 32

    def _txn(self, kind: str, payload: dict) -> None:
        fcntl.flock(self.gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(self.gate, fcntl.LOCK_UN)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.fstat(self.fd)
        seq = self.seq + 1
        ev = {"v": 1, "seq": seq, "ts": time.time_ns(), "actor": self.actor, "prev": self.prev, "type": kind}
        ev.update(payload)
        line = orjson.dumps(ev)
        os.write(self.fd, line + b"\n")
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.seq, self.prev = seq, hashlib.blake2b(line, digest_size=16).hexdigest()

    def register(self, name: str, rules: tuple[ScopeRule, ...]) -> None:
        for r in rules:
            if r.permission.value == "write":
                for _ in self.writes.overlapping(r):
                    raise RuntimeError(f"conflict: {r}")
        self._txn("registered", {"holder": {
            "name": name, "rules": [[r.path, r.permission.value, r.recursive] for r in rules],
            "process": self.actor, "parent": None, "reserved": False, "socket": None}})
        self.holders[name] = rules
        for r in rules:
            (self.writes if r.permission.value == "write" else self.reads).add(name, r)

    def release(self, name: str) -> None:
        self._txn("released", {"name": name, "reparented": []})
        for r in self.holders.pop(name):
            (self.writes if r.permission.value == "write" else self.reads).remove(name, r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--holders", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--pairs", type=int, default=500, help="pairs per rung per round")
    args = ap.parse_args(argv)

    d = tempfile.mkdtemp(prefix="ladder-")
    try:
        led = Ledger.open(os.path.join(d, "full"), snapshot_every=10**9)
        plain = Ledger.open(os.path.join(d, "plain"), snapshot_every=10**9, resolve_symlinks=False)
        os.mkdir(os.path.join(d, "lean"), 0o700)
        lean = LeanLedger(os.path.join(d, "lean"))
        floor = RawFloor(os.path.join(d, "floor"))
        for i in range(args.holders):
            rules = [ScopeRule(p, perm, rec) for p, perm, rec in holder_rules(i)]
            led.register(f"h{i}", rules)
            plain.register(f"h{i}", rules)
            lean.register(f"h{i}", tuple(rules))
            floor.register(f"h{i}", holder_rules(i))
        fixed = [ScopeRule(p, perm, rec) for p, perm, rec in transient_rules("fixed")]
        count = [0]

        def rung(register: Callable, release: Callable,
                 build: Callable) -> Callable[[], tuple[float, float, list[int]]]:
            def run() -> tuple[float, float, list[int]]:
                clock = time.perf_counter_ns
                lat = []
                c, t = time.process_time(), clock()
                for _ in range(args.pairs):
                    count[0] += 1
                    name = f"t{count[0]}"
                    t0 = clock()
                    register(name, build(name))
                    release(name)
                    lat.append(clock() - t0)
                wall, cpu = clock() - t, time.process_time() - c
                return wall / args.pairs / 1e3, cpu / args.pairs * 1e6, lat
            return run

        def built(name: str) -> list[ScopeRule]:
            return [ScopeRule(p, perm, rec) for p, perm, rec in transient_rules(name)]

        rungs = {
            "floor": rung(floor.register, floor.release, transient_rules),
            "lean python": rung(lean.register, lean.release, lambda n: tuple(built(n))),
            "scopeledger, rules prebuilt": rung(plain.register, plain.release, lambda n: fixed),
            "scopeledger, no symlink resolution": rung(plain.register, plain.release, built),
            "scopeledger": rung(led.register, led.release, built),
        }
        means: dict[str, list[float]] = {k: [] for k in rungs}
        cpus: dict[str, list[float]] = {k: [] for k in rungs}
        lats: dict[str, list[int]] = {k: [] for k in rungs}
        for _ in range(args.rounds):
            for k, f in rungs.items():
                mean, cpu, lat = f()
                means[k].append(mean)
                cpus[k].append(cpu)
                lats[k].extend(lat)
        fig = {k: (statistics.median(means[k]), statistics.median(lats[k]) / 1e3, statistics.median(cpus[k]))
               for k in rungs}
        base = fig["floor"]
        print(f"register+release pairs at {args.holders:,} live holders, {args.rounds} interleaved rounds of "
              f"{args.pairs}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs at the end")
        print("| rung | µs/pair (mean) | p50 µs | CPU µs/pair | ÷ floor (mean) | ÷ floor (p50) | ÷ floor (CPU) |\n"
              "|---|---:|---:|---:|---:|---:|---:|")
        for k, (m, p50, cpu) in fig.items():
            print(f"| {k} | {m:.1f} | {p50:.1f} | {cpu:.1f} | {m / base[0]:.2f}× | {p50 / base[1]:.2f}× | "
                  f"{cpu / base[2]:.2f}× |")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
