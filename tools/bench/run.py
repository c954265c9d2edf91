#!/usr/bin/env python
"""Side-by-side benchmarks: scopeledger against the raw floor, the seed's design and SQLite.

Run from the repository root (see BENCHMARKS.md for the numbers and the machine)::

    .venv/bin/python tools/bench/run.py --json bench-results.json   # full mode, ~6-8 min on 2 cores
    .venv/bin/python tools/bench/run.py --quick                     # tiny sizes, ~25 s (CI smoke run)
    .venv/bin/python -m tools.bench --quick                         # the same entry point
    .venv/bin/python tools/bench/targets.py [--quick]               # only what issue 18's targets need

``--only startup,growth,contended,fsync,history,counts`` runs a subset; ``--dir DIR`` puts the ledgers
somewhere else (default: a temp dir, removed afterwards unless ``--keep``); ``--reads
disjoint`` gives every holder a read tree of its own instead of the shared one (a
diagnostic). No timing is asserted anywhere: ``--quick`` exists to keep the harness
working; each target is printed with its measured value and PASS/MISS, and the exit
status is 0 either way (non-zero only if the harness itself fails, e.g. a backend gives a
wrong answer to a conflict query or ``verify()`` rejects the generated history).

It measures the ``scopeledger`` that Python imports; to measure a commit while the
working tree moves, point ``PYTHONPATH`` at a clean clone and run from outside the
repository (the JSON records the path, commit and whether it had uncommitted changes)::

    git clone -q . /tmp/sl-clone && cd /tmp && \
        PYTHONPATH=/tmp/sl-clone /work/main/.venv/bin/python /work/main/tools/bench/run.py --json out.json

The machine's load is recorded per section (CPU used by this run vs by other processes)
and printed with the targets (load average at the start and the end). The run ends with
two target tables: issue 5's (means, as first set) and issue 18's (:mod:`targets`: p50,
CPU time, events per CPU second, instruction and syscall counts).

Every backend receives the same operations with the same rules
(:func:`holder_rules`, :func:`transient_rules`: a recursive write rule on a path of its own,
``/bench/w{i}/src``, and a recursive read rule on the shared ``/bench/shared``), through
one small interface (register / release / find_conflict). Backends:

- ``scopeledger``: ``Ledger.open(dir)`` with its defaults (snapshots every 10,000 events,
  symlink resolution on); ``ScopeRule`` objects are built inside the timed operation, as
  the baselines normalise their tuples inside theirs;
- ``floor``: :class:`baselines.RawFloor`: serialise the same kind of event, flock, one
  append, unlock; nothing else;
- ``floor-unlocked``: the same without flock (pure append);
- ``seed``: :class:`baselines.SeedDesign`: one JSON file read, changed and rewritten under
  flock per operation, parsed with the stdlib json (the first baseline, kept);
- ``seed-orjson``: the same design parsing with orjson (the seed was Rust: the fair one);
- ``sqlite``: :class:`baselines.SQLiteLedger`: WAL, indexed conflict queries, several
  statements and three tables (the first SQLite baseline, kept);
- ``sqlite-lean``: :class:`baselines.LeanSQLite`: WAL, an events and an allocations
  table, the conflict found by one query, one transaction per operation (the fair one).
  ``tests/test_bench_baselines.py`` checks that the checking baselines refuse exactly
  what scopeledger refuses on the same workload.

Every row reports p50 and CPU time per operation beside the mean (CPU: user + system of
the process doing the work, from ``getrusage``), figures that a loaded machine moves
less than the mean.

Workloads (sections):

- ``startup``: whole-process CPU time of ``ledger --version``, ``--help`` and ``run -- true``
  against ``python3 -c pass``, and ``-X importtime`` by package (:mod:`startup`).
- ``growth``: one process, the live set grown to each size in turn (10 .. 100k holders
  with 2 rules each); at each size every backend is measured before the next size is
  built. Register+release pairs, conflict queries (hit and miss) and scopeledger's memory
  per live holder. Each backend lives in its own child process (no shared GC or memory).
- ``contended``: 1 and 4 processes doing pairs against one store with a live set
  prefilled; aggregate throughput, lock wait (p50/p99/max), per-process counts.
- ``fsync``: pairs with fsync/fdatasync on every event (SQLite: ``synchronous=FULL``).
- ``history``: a generated log (the library's own encoder and hash chain, snapshots every
  interval) of 10k and 1M events with the same live set and the same tail after the newest
  snapshot; cold open, full replay (``events()``, ``verify()``, vs parsing the lines with
  orjson; per wall second and per CPU second), ``state_at`` at random past seqs.
- ``counts``: instructions (callgrind) and system calls (strace) per pair, per backend,
  at 1,000 live holders (:mod:`counts`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import orjson  # noqa: E402
import psutil  # noqa: E402

if __name__ == "__main__":  # the helper modules import this one as ``run``: one copy
    sys.modules.setdefault("run", sys.modules[__name__])

import baselines  # noqa: E402
import counts  # noqa: E402
import startup  # noqa: E402
import targets  # noqa: E402
from baselines import LeanSQLite, RawFloor, SeedDesign, SQLiteLedger  # noqa: E402

import scopeledger  # noqa: E402
from scopeledger import Ledger, ScopeRule  # noqa: E402

Rule = tuple[str, str, bool]

# ----------------------------------------------------------------------------- config

FULL: dict[str, Any] = {
    "pair_sizes": [10, 1_000, 10_000, 100_000],
    "query_rule_sizes": [100, 10_000, 100_000],  # live rules; holders = rules // 2
    "memory_sizes": [1_000, 10_000, 100_000],
    "pair_budget_s": 2.0,
    "pair_max": 20_000,
    "pair_min": 3,
    "pair_warmup": 20,
    "rounds": 3,
    "seed_budget_s": 6.0,
    "query_budget_s": 1.0,
    "query_max": 4_000,
    "query_min": 4,
    "contended_procs": 4,
    "contended_seconds": 6.0,  # per process count, split over the rounds
    "contended_rounds": 2,
    "contended_live": 1_000,
    "fsync_live": 1_000,
    "fsync_budget_s": 5.0,
    "fsync_max": 20_000,
    "fsync_rounds": 5,
    "history_live": 1_000,
    "history_interval": 10_000,  # = scopeledger's DEFAULT_SNAPSHOT_EVERY
    "history_sizes": [10_000, 1_000_000],
    "history_tail": 5_000,  # events after the newest snapshot (half an interval)
    "open_repeats": 5,
    "state_at_samples": 20,
}

QUICK: dict[str, Any] = {
    "pair_sizes": [10, 200],
    "query_rule_sizes": [100, 400],
    "memory_sizes": [200],
    "pair_budget_s": 0.1,
    "pair_max": 200,
    "pair_min": 3,
    "pair_warmup": 2,
    "rounds": 2,
    "seed_budget_s": 0.1,
    "query_budget_s": 0.05,
    "query_max": 100,
    "query_min": 4,
    "contended_procs": 4,
    "contended_seconds": 0.4,
    "contended_rounds": 2,
    "contended_live": 50,
    "fsync_live": 50,
    "fsync_budget_s": 0.1,
    "fsync_max": 30,
    "fsync_rounds": 2,
    "history_live": 50,
    "history_interval": 500,
    "history_sizes": [1_000, 5_000],
    "history_tail": 250,
    "open_repeats": 2,
    "state_at_samples": 3,
}

FULL.update({
    "startup_rounds": 15,
    "startup_import_runs": 4,
    "counts_holders": 1_000,
    "counts_pairs": 300,
    "counts_backends": ["scopeledger", "floor", "seed", "seed-orjson", "sqlite", "sqlite-lean"],
})
QUICK.update({
    "startup_rounds": 3,
    "startup_import_runs": 2,
    "counts_holders": 50,
    "counts_pairs": 30,
    "counts_backends": ["scopeledger", "floor"],
})

#: What issue 18's targets need and no more (``targets.py``): pairs at 1,000 live holders
#: against the floor and the fair baselines, scopeledger contending, a 1M-event history.
_TARGETS_ONLY: dict[str, Any] = {
    "sections": ["startup", "growth", "contended", "history", "counts"],
    "growth_backends": ["scopeledger", "floor", "seed-orjson", "sqlite-lean"],
    "contended_backends": ["scopeledger"],
    "query_rule_sizes": [],
    "issue5_targets": False,
}
TARGETS: dict[str, Any] = {**FULL, **_TARGETS_ONLY, "pair_sizes": [1_000], "memory_sizes": [10_000],
                           "history_sizes": [1_000_000],
                           "counts_backends": ["scopeledger", "floor", "seed-orjson", "sqlite-lean"]}
TARGETS_QUICK: dict[str, Any] = {**QUICK, **_TARGETS_ONLY, "pair_sizes": [200], "memory_sizes": [200],
                                 "history_sizes": [5_000]}
#: Before/after a change of the library's layers (issue 14): register+release at 1,000 live
#: holders beside the floor, open/replay/verify/state_at on a 200k-event history, and the
#: instruction count of a pair; run the old and the new tree alternately.
LAYERS: dict[str, Any] = {**FULL, "sections": ["growth", "history", "counts"],
                          "growth_backends": ["scopeledger", "floor"], "pair_sizes": [1_000],
                          "query_rule_sizes": [], "memory_sizes": [], "history_sizes": [200_000],
                          "counts_backends": ["scopeledger"], "issue5_targets": False}
PRESETS = {"full": FULL, "quick": QUICK, "targets": TARGETS, "targets-quick": TARGETS_QUICK,
           "layers": LAYERS}
SECTIONS = ("startup", "growth", "contended", "fsync", "history", "counts")

GROWTH_BACKENDS = ("scopeledger", "floor", "floor-unlocked", "seed", "seed-orjson", "sqlite", "sqlite-lean")
QUERY_BACKENDS = ("scopeledger", "seed", "seed-orjson", "sqlite", "sqlite-lean")
CONTENDED_BACKENDS = ("scopeledger", "floor", "seed", "seed-orjson", "sqlite", "sqlite-lean")
FSYNC_BACKENDS = ("scopeledger", "floor", "floor-fdatasync", "floor+cpu", "seed", "seed-orjson", "sqlite",
                  "sqlite-lean")


#: ``shared`` (default): every holder also reads the one tree ``/bench/shared`` (pods
#: reading a common checkout); ``disjoint``: each reads a tree of its own
#: (``--reads disjoint``, a diagnostic). Set before any child process starts.
READS = {"mode": "shared"}


def holder_rules(i: int) -> list[Rule]:
    """Rules of live holder ``h{i}``: its own write tree, and a read tree."""
    read = "/bench/shared" if READS["mode"] == "shared" else f"/bench/w{i}/docs"
    return [(f"/bench/w{i}/src", "write", True), (read, "read", True)]


def transient_rules(tag: str) -> list[Rule]:
    """Rules of a holder registered and released by a timed pair."""
    read = "/bench/shared" if READS["mode"] == "shared" else f"/bench/{tag}/docs"
    return [(f"/bench/{tag}/src", "write", True), (read, "read", True)]


# ----------------------------------------------------------------------------- backends


class _FdatasyncFloor(RawFloor):
    """RawFloor with ``os.fdatasync`` instead of ``os.fsync`` (what scopeledger calls).

    ``busy_s`` (seconds, default 0): spin that long on the CPU before each event, as
    scopeledger's own Python does between two syncs (the ``floor+cpu`` diagnostic)."""

    busy_s = 0.0

    def _append(self, event: dict[str, Any]) -> None:
        if self.busy_s:
            until = time.perf_counter() + self.busy_s
            while time.perf_counter() < until:
                pass
        self._seq += 1
        line = (
            orjson.dumps(
                {"v": 1, "seq": self._seq, "ts": time.time_ns(), "actor": self._actor, "prev": self._prev}
                | event
            )
            + b"\n"
        )
        fd = self._fd
        baselines.fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.write(fd, line)
            if self.fsync:
                os.fdatasync(fd)
        finally:
            baselines.fcntl.flock(fd, fcntl.LOCK_UN)
        self._prev = hashlib.blake2b(line, digest_size=16).hexdigest()


class Backend:
    """Uniform adapter. ``n`` live prefilled holders ``h0..h{n-1}``."""

    kind = "?"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.n = 0

    def register(self, name: str, rules: list[Rule]) -> None:
        raise NotImplementedError

    def release(self, name: str) -> None:
        raise NotImplementedError

    def find_conflict(self, rules: list[Rule]) -> Any:
        raise NotImplementedError

    def prefill(self, upto: int) -> None:
        for i in range(self.n, upto):
            self.register(f"h{i}", holder_rules(i))
        self.n = max(self.n, upto)

    def set_fsync(self, on: bool) -> None:
        raise NotImplementedError

    def install_wait_probe(self, waits: array, holds: array) -> None:
        """Record the ns spent waiting for the store's exclusive lock in ``waits``, and
        the ns it was then held in ``holds``."""
        shim = _FcntlShim(waits, holds)
        baselines.fcntl = shim  # type: ignore[assignment]

    def window_begin(self) -> None:
        pass

    def window_end(self, pairs: int, total_ns: int) -> dict[str, Any]:
        return {}

    def log_bytes(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class _FcntlShim:
    """Stands in for the ``fcntl`` module inside baselines.py: times ``LOCK_EX`` waits."""

    def __init__(self, waits: array, holds: array) -> None:
        self._waits = waits
        self._holds = holds
        self._t = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(fcntl, name)

    def flock(self, fd: int, op: int) -> None:
        if op == fcntl.LOCK_EX:
            t0 = time.perf_counter_ns()
            fcntl.flock(fd, op)
            self._t = time.perf_counter_ns()
            self._waits.append(self._t - t0)
        else:
            if op == fcntl.LOCK_UN and self._t:
                self._holds.append(time.perf_counter_ns() - self._t)
                self._t = 0
            fcntl.flock(fd, op)


class LedgerBackend(Backend):
    kind = "scopeledger"

    def __init__(self, directory: str, **open_kw: Any) -> None:
        super().__init__(directory)
        self.led = Ledger.open(directory, **open_kw)
        self._snap_times: list[int] = []
        orig = self.led._write_snapshot

        def timed_snapshot(state: Any) -> None:
            t0 = time.perf_counter_ns()
            orig(state)
            self._snap_times.append(time.perf_counter_ns() - t0)

        self.led._write_snapshot = timed_snapshot  # type: ignore[method-assign]
        self.n = len(self.led.holders())

    @staticmethod
    def _rules(rules: list[Rule]) -> list[ScopeRule]:
        return [ScopeRule(p, perm, rec) for p, perm, rec in rules]

    def register(self, name: str, rules: list[Rule]) -> None:
        self.led.register(name, self._rules(rules))

    def release(self, name: str) -> None:
        self.led.release(name)

    def find_conflict(self, rules: list[Rule]) -> Any:
        return self.led.find_conflict(self._rules(rules))

    def set_fsync(self, on: bool) -> None:
        self.led.fsync = on

    def install_wait_probe(self, waits: array, holds: array) -> None:
        # Wrap whichever entry point the Ledger uses to take the lock: Store.acquire /
        # Store.release in newer versions, Store.locked (a context manager yielding the
        # seconds waited) in older ones. Each mutation takes the lock once.
        store = self.led._store
        if hasattr(store, "acquire"):
            orig_acquire, orig_release = store.acquire, store.release
            held = [0]

            def acquire(timeout: float | None = None, *args: Any) -> float:
                waited = orig_acquire(timeout, *args)
                held[0] = time.perf_counter_ns()
                waits.append(int(waited * 1e9))
                return waited

            def release() -> None:
                if held[0]:
                    holds.append(time.perf_counter_ns() - held[0])
                    held[0] = 0
                orig_release()

            store.acquire = acquire  # type: ignore[method-assign]
            store.release = release  # type: ignore[method-assign]
            return
        orig = store.locked

        @contextlib.contextmanager
        def locked(timeout: float | None = None) -> Any:
            with orig(timeout) as waited:
                waits.append(int(waited * 1e9))
                t = time.perf_counter_ns()
                try:
                    yield waited
                finally:
                    holds.append(time.perf_counter_ns() - t)

        store.locked = locked  # type: ignore[method-assign]

    def window_begin(self) -> None:
        # An explicit snapshot first: its cost is charged below, amortised over the
        # interval the library would wait before writing the next one.
        # Timed through the public call (the wrapper above only counts the snapshots the
        # library writes by itself inside the window, so that they can be separated out).
        t0 = time.perf_counter_ns()
        self.led.snapshot()
        self._snap_base_ns = time.perf_counter_ns() - t0
        self._snap_times.clear()
        self._interval = max(self.led.snapshot_every, len(self.led.holders()))

    def window_end(self, pairs: int, total_ns: int) -> dict[str, Any]:
        in_window = sum(self._snap_times)
        steady_us = (total_ns - in_window) / pairs / 1e3
        per_event_snap_us = self._snap_base_ns / self._interval / 1e3
        return {
            "snapshot_ms": self._snap_base_ns / 1e6,
            "snapshot_interval_events": self._interval,
            "snapshots_in_window": len(self._snap_times),
            "steady_us": steady_us,
            "amortized_us": steady_us + 2 * per_event_snap_us,
        }

    def log_bytes(self) -> int:
        return os.path.getsize(self.led._store.log_path)

    def close(self) -> None:
        self.led.close()


class _WrappedBackend(Backend):
    """A backend whose operations are those of a baselines object ``self.b``."""

    b: Any

    def register(self, name: str, rules: list[Rule]) -> None:
        self.b.register(name, rules)

    def release(self, name: str) -> None:
        self.b.release(name)

    def find_conflict(self, rules: list[Rule]) -> Any:
        return self.b.find_conflict(rules)


class FloorBackend(_WrappedBackend):
    kind = "floor"

    def __init__(self, directory: str, unlocked: bool = False, fdatasync: bool = False) -> None:
        super().__init__(directory)
        cls = _FdatasyncFloor if fdatasync else RawFloor
        self.b = cls(directory, unlocked=unlocked)

    def set_fsync(self, on: bool) -> None:
        self.b.fsync = on

    def log_bytes(self) -> int:
        return os.path.getsize(self.b.path)

    def close(self) -> None:
        self.b.close()



class SeedBackend(_WrappedBackend):
    kind = "seed"

    def __init__(self, directory: str, codec: str = "json") -> None:
        super().__init__(directory)
        self.b = SeedDesign(directory, codec=codec)
        if codec != "json":
            self.kind = f"seed-{codec}"

    def prefill(self, upto: int) -> None:
        # Registering 100k holders one by one through an O(n) design would take hours;
        # write the document SeedDesign.register would have produced, in one go.
        path = self.b.path
        doc: dict[str, Any] = {"version": 1, "allocations": []}
        if os.path.exists(path) and os.path.getsize(path):
            with open(path, "rb") as f:
                doc = json.loads(f.read())
        pid = os.getpid()
        for i in range(self.n, upto):
            name = f"h{i}"
            doc["allocations"].append({
                "pod_name": name,
                "pid": pid,
                "socket": baselines.socket_path_for(self.directory, name),
                "delegated_from": None,
                "scope": {"rules": [{"path": p, "permission": perm, "recursive": rec}
                                    for p, perm, rec in baselines.normalise_rules(holder_rules(i))]},
            })
        with open(path, "wb") as f:
            f.write(json.dumps(doc, separators=(",", ":")).encode())
        self.n = max(self.n, upto)

    def set_fsync(self, on: bool) -> None:
        self.b.fsync = on

    def log_bytes(self) -> int:
        return os.path.getsize(self.b.path)


class SQLiteBackend(_WrappedBackend):
    kind = "sqlite"

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.b = SQLiteLedger(directory)

    def register(self, name: str, rules: list[Rule]) -> None:
        self.b.register(name, rules)

    def release(self, name: str) -> None:
        self.b.release(name)

    def find_conflict(self, rules: list[Rule]) -> Any:
        return self.b.find_conflict(rules)

    def prefill(self, upto: int) -> None:
        # The same rows SQLiteLedger.register writes, in one transaction (not timed).
        b = self.b
        pid = os.getpid()
        with b._transaction() as db:
            for i in range(self.n, upto):
                name = f"h{i}"
                rules = baselines.normalise_rules(holder_rules(i))
                b._event("registered", {"holder": {"name": name, "pid": pid, "rules": rules, "parent": None}})
                db.execute("INSERT INTO holders(name, pid, parent) VALUES (?, ?, NULL)", (name, pid))
                db.executemany("INSERT INTO rules(holder, path, permission, recursive) VALUES (?, ?, ?, ?)",
                               [(name, p, perm, int(rec)) for p, perm, rec in rules])
        self.n = max(self.n, upto)

    def set_fsync(self, on: bool) -> None:
        self.b._db.execute(f"PRAGMA synchronous={'FULL' if on else 'NORMAL'}")

    def install_wait_probe(self, waits: array, holds: array) -> None:
        self.b._db = _DbProxy(self.b._db, waits, holds)  # type: ignore[assignment]

    def log_bytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.directory, f)) for f in os.listdir(self.directory))

    def close(self) -> None:
        self.b.close()


class LeanSQLiteBackend(SQLiteBackend):
    kind = "sqlite-lean"

    def __init__(self, directory: str) -> None:
        Backend.__init__(self, directory)
        self.b = LeanSQLite(directory)

    def prefill(self, upto: int) -> None:
        # The same rows LeanSQLite.register writes, in one transaction (not timed).
        b = self.b
        pid = os.getpid()
        db = b._db
        db.execute("BEGIN IMMEDIATE")
        for i in range(self.n, upto):
            name = f"h{i}"
            rules = baselines.normalise_rules(holder_rules(i))
            db.execute("INSERT INTO events(body) VALUES (?)",
                       (b._body("registered", {"holder": {"name": name, "pid": pid, "rules": rules,
                                                          "parent": None}}),))
            db.executemany("INSERT INTO allocations(holder, path, permission, recursive) VALUES (?, ?, ?, ?)",
                           [(name, p, perm, int(rec)) for p, perm, rec in rules])
        db.execute("COMMIT")
        self.n = max(self.n, upto)


class _DbProxy:
    """Times ``BEGIN IMMEDIATE`` (SQLite's write lock, waited on by its busy handler)."""

    def __init__(self, db: Any, waits: array, holds: array) -> None:
        self._db = db
        self._waits = waits
        self._holds = holds
        self._t = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("BEGIN IMMEDIATE"):
            t0 = time.perf_counter_ns()
            r = self._db.execute(sql, *args)
            self._t = time.perf_counter_ns()
            self._waits.append(self._t - t0)
            return r
        if self._t and (sql == "COMMIT" or sql == "ROLLBACK"):
            r = self._db.execute(sql, *args)
            self._holds.append(time.perf_counter_ns() - self._t)
            self._t = 0
            return r
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._db.executemany(sql, *args)

    def close(self) -> None:
        self._db.close()


def make_backend(kind: str, directory: str, **ledger_kw: Any) -> Backend:
    """The backend named ``kind`` on ``directory``; ``ledger_kw`` goes to
    ``Ledger.open`` (scopeledger only)."""
    if kind == "scopeledger":
        return LedgerBackend(directory, **ledger_kw)
    if kind == "floor":
        return FloorBackend(directory)
    if kind == "floor-unlocked":
        return FloorBackend(directory, unlocked=True)
    if kind in ("floor-fdatasync", "floor+cpu"):
        return FloorBackend(directory, fdatasync=True)
    if kind == "seed":
        return SeedBackend(directory)
    if kind == "seed-orjson":
        return SeedBackend(directory, codec="orjson")
    if kind == "sqlite":
        return SQLiteBackend(directory)
    if kind == "sqlite-lean":
        return LeanSQLiteBackend(directory)
    raise ValueError(kind)


# ----------------------------------------------------------------------------- child processes


def _child_loop(conn: Any, kind: str, directory: str) -> None:
    gc.collect()
    backend = make_backend(kind, directory)
    ops: dict[str, Callable[..., Any]] = {
        "prefill": lambda upto: backend.prefill(upto),
        "set_fsync": lambda on: backend.set_fsync(on),
        "set_busy": lambda seconds: setattr(backend.b, "busy_s", seconds),  # type: ignore[attr-defined]
        "pairs": lambda *a: measure_pairs(backend, *a),
        "queries": lambda *a: measure_queries(backend, *a),
        "rss": lambda: psutil.Process().memory_info().rss,
    }
    while True:
        cmd, args = conn.recv()
        if cmd == "close":
            backend.close()
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", ops[cmd](*args)))
        except BaseException:  # noqa: BLE001 - reported to the parent
            conn.send(("err", traceback.format_exc()))


class Remote:
    """A backend living in its own (forked) process, driven one command at a time."""

    def __init__(self, kind: str, directory: str) -> None:
        ctx = mp.get_context("fork")
        self.kind = kind
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_loop, args=(child, kind, directory), daemon=True)
        self.proc.start()
        child.close()

    def call(self, cmd: str, *args: Any) -> Any:
        self.conn.send((cmd, args))
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"{self.kind}: {cmd} failed in the child:\n{value}")
        return value

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("close")
        self.proc.join(timeout=30)


# ----------------------------------------------------------------------------- measurements


def _pct(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e3


def _cpu_self() -> float:
    """CPU seconds (user + system) this process has used so far, all its threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure_pairs(b: Backend, budget_s: float, max_pairs: int, min_pairs: int, warmup: int,
                  tag: str) -> dict[str, Any]:
    """Register+release pairs of a fresh holder each, for ``budget_s`` (at least
    ``min_pairs``, at most ``max_pairs``). Returns µs per pair (mean, p50, p99, max)."""
    for j in range(warmup):
        name = f"{tag}w{j}"
        b.register(name, transient_rules(name))
        b.release(name)
    b.window_begin()
    size0 = b.log_bytes()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    lat = array("q")
    clock = time.perf_counter_ns
    deadline_ns = int(budget_s * 1e9)
    start = clock()
    j = 0
    while True:
        name = f"{tag}{j}"
        rules = transient_rules(name)
        t0 = clock()
        b.register(name, rules)
        b.release(name)
        t1 = clock()
        lat.append(t1 - t0)
        j += 1
        if j >= max_pairs or (j >= min_pairs and t1 - start >= deadline_ns):
            break
    total = clock() - start
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    size1 = b.log_bytes()
    out: dict[str, Any] = {"pairs": j, "total_ns": total, "lat": lat.tobytes(),
                           "mean_us": total / j / 1e3,
                           # CPU this process used (user + system), per pair
                           "cpu_us": (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / j * 1e6}
    if size0 is not None and size1 is not None and b.kind in ("scopeledger", "floor"):
        out["bytes_per_event"] = (size1 - size0) / (2 * j)
    out.update(b.window_end(j, total))
    out.setdefault("amortized_us", out["mean_us"])
    out.setdefault("steady_us", out["mean_us"])
    return out


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the rounds of one (backend, size): the headline (``amortized_us``,
    ``steady_us``) is the median of the round means, which a burst of outside load during
    one round does not move; percentiles are over every pair of every round."""
    lat = array("q")
    for r in rounds:
        lat.frombytes(r["lat"])
    s = sorted(lat)
    pairs = sum(r["pairs"] for r in rounds)
    total = sum(r["total_ns"] for r in rounds)
    out: dict[str, Any] = {
        "rounds": len(rounds),
        "pairs": pairs,
        "seconds": total / 1e9,
        "mean_us": total / pairs / 1e3,
        "round_means_us": [r["mean_us"] for r in rounds],
        "amortized_us": statistics.median(r["amortized_us"] for r in rounds),
        "steady_us": statistics.median(r["steady_us"] for r in rounds),
        "p50_us": _pct(s, 0.5),
        "p99_us": _pct(s, 0.99),
        "max_us": s[-1] / 1e3,
    }
    out["pairs_per_s"] = 1e6 / out["amortized_us"]
    for key in ("snapshot_ms", "bytes_per_event", "cpu_us"):
        if key in rounds[0]:
            out[key] = statistics.median(r[key] for r in rounds)
    if "snapshot_interval_events" in rounds[0]:
        out["snapshot_interval_events"] = rounds[-1]["snapshot_interval_events"]
        out["snapshots_in_window"] = sum(r["snapshots_in_window"] for r in rounds)
    return out


def measure_queries(b: Backend, holders: int, budget_s: float, max_q: int, min_q: int,
                    seed: int) -> dict[str, Any]:
    """Alternate a hit (a write under a random live holder's tree) and a miss (a write on a
    free tree); check each answer."""
    rng = random.Random(seed)
    hit, miss = array("q"), array("q")
    clock = time.perf_counter_ns
    cpu0 = _cpu_self()
    start = clock()
    j = 0
    while True:
        k = rng.randrange(holders)
        rules = [(f"/bench/w{k}/src/x", "write", True)]
        t0 = clock()
        r = b.find_conflict(rules)
        t1 = clock()
        if r is None:
            raise AssertionError(f"{b.kind}: no conflict found for {rules}")
        hit.append(t1 - t0)
        rules = [(f"/bench/m{j}/src", "write", True)]
        t0 = clock()
        r = b.find_conflict(rules)
        t1 = clock()
        if r is not None:
            raise AssertionError(f"{b.kind}: false conflict {r!r} for {rules}")
        miss.append(t1 - t0)
        j += 2
        if j >= max_q or (j >= min_q and t1 - start >= budget_s * 1e9):
            break
    cpu = _cpu_self() - cpu0
    sh, sm = sorted(hit), sorted(miss)
    both = sorted(hit + miss)
    return {
        "queries": j,
        "cpu_us": cpu / j * 1e6,
        "rules": 2 * holders,
        "hit_us": sum(hit) / len(hit) / 1e3,
        "miss_us": sum(miss) / len(miss) / 1e3,
        "mean_us": sum(both) / len(both) / 1e3,
        "p50_us": _pct(both, 0.5),
        "p99_us": _pct(both, 0.99),
        "hit_p50_us": _pct(sh, 0.5),
        "miss_p50_us": _pct(sm, 0.5),
    }


_MEMORY_SNIPPET = r"""
import gc, json, sys, time
mode, path = sys.argv[1], sys.argv[2]
import psutil, scopeledger
from scopeledger import Ledger
gc.collect()
if mode == "tracemalloc":
    import tracemalloc
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
else:
    base = psutil.Process().memory_info().rss
led = Ledger.open(path)
n = len(led.holders())
gc.collect()
if mode == "tracemalloc":
    used = tracemalloc.get_traced_memory()[0] - base
else:
    used = psutil.Process().memory_info().rss - base
print(json.dumps({"holders": n, "bytes": used, "snapshot_seq": led.stats.snapshot_seq,
                  "events_folded": led.stats.events_folded}))
"""


def measure_memory(path: str) -> dict[str, Any]:
    """Memory of an opened ledger's state in a fresh process: tracemalloc (Python
    allocations) and RSS delta, each in its own process."""
    out: dict[str, Any] = {}
    for mode in ("tracemalloc", "rss"):
        proc = subprocess.run([sys.executable, "-c", _MEMORY_SNIPPET, mode, path],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out["holders"] = r["holders"]
        out[f"{mode}_bytes"] = r["bytes"]
        out["events_folded_at_open"] = r["events_folded"]
    n = max(out["holders"], 1)
    out["tracemalloc_per_holder"] = out["tracemalloc_bytes"] / n
    out["rss_per_holder"] = out["rss_bytes"] / n
    return out


# ----------------------------------------------------------------------------- sections


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def section_growth(cfg: dict[str, Any], root: str, results: dict[str, Any]) -> None:
    pair_sizes = cfg["pair_sizes"]
    query_holders = {r // 2: r for r in cfg["query_rule_sizes"]}
    memory_sizes = set(cfg["memory_sizes"])
    checkpoints = sorted(set(pair_sizes) | set(query_holders) | memory_sizes)
    backends = cfg.get("growth_backends", GROWTH_BACKENDS)
    query_backends = [k for k in QUERY_BACKENDS if k in backends]
    remotes = {k: Remote(k, os.path.join(root, "growth", k)) for k in backends}
    pairs: dict[str, dict[str, Any]] = {k: {} for k in backends}
    queries: dict[str, dict[str, Any]] = {k: {} for k in query_backends}
    memory: dict[str, Any] = {}
    fill: dict[str, dict[str, Any]] = {k: {} for k in backends}
    try:
        n_prev = 0
        for n in checkpoints:
            for k, r in remotes.items():
                t0 = time.perf_counter()
                if k == "scopeledger":
                    rss0 = r.call("rss")
                r.call("prefill", n)
                dt = time.perf_counter() - t0
                fill[k][str(n)] = {"seconds": dt}
                if k == "scopeledger":
                    rss1 = r.call("rss")
                    fill[k][str(n)]["rss_delta_per_added_holder"] = (
                        (rss1 - rss0) / (n - n_prev) if n > n_prev else None)
                _log(f"growth: {k} holds {n} live holders (filled in {dt:.1f} s)")
            n_prev = n
            if n in pair_sizes:
                # Interleaved rounds: every backend runs once per round, so slow drift or
                # a burst of outside load hits all of them alike.
                R = cfg["rounds"]
                got: dict[str, list[dict[str, Any]]] = {k: [] for k in remotes}
                for rnd in range(R):
                    for k, r in remotes.items():
                        seed_like = k.startswith("seed")
                        budget = (cfg["seed_budget_s"] if seed_like else cfg["pair_budget_s"]) / R
                        got[k].append(r.call(
                            "pairs", budget, max(1, cfg["pair_max"] // R),
                            1 if seed_like else cfg["pair_min"],
                            (1 if seed_like else cfg["pair_warmup"]) if rnd == 0 else 0,
                            f"t{n}r{rnd}x"))
                for k in remotes:
                    res = pairs[k][str(n)] = merge_rounds(got[k])
                    _log(f"  pairs  {k:15s} n={n:>7}: {res['amortized_us']:10.1f} µs/pair "
                         f"({res['pairs']} pairs, round means "
                         f"{', '.join(f'{x:.0f}' for x in res['round_means_us'])})")
            if n in query_holders:
                for k in query_backends:
                    res = remotes[k].call("queries", n, cfg["query_budget_s"], cfg["query_max"],
                                          cfg["query_min"], n)
                    queries[k][str(query_holders[n])] = res
                    _log(f"  query  {k:15s} rules={2 * n:>7}: hit {res['hit_us']:.1f} µs, "
                         f"miss {res['miss_us']:.1f} µs")
            if n in memory_sizes:
                memory[str(n)] = measure_memory(os.path.join(root, "growth", "scopeledger"))
                memory[str(n)]["rss_delta_per_added_holder_during_fill"] = (
                    fill["scopeledger"][str(n)]["rss_delta_per_added_holder"])
                _log(f"  memory n={n}: {memory[str(n)]['tracemalloc_per_holder']:.0f} B/holder "
                     f"(tracemalloc), {memory[str(n)]['rss_per_holder']:.0f} B/holder (RSS)")
    finally:
        for r in remotes.values():
            r.close()
    sizes = sorted(int(s) for s in memory)
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        ma, mb = memory[str(a)], memory[str(b)]
        memory["marginal"] = {
            "from": a, "to": b,
            "tracemalloc_per_holder": (mb["tracemalloc_bytes"] - ma["tracemalloc_bytes"]) / (b - a),
            "rss_per_holder": (mb["rss_bytes"] - ma["rss_bytes"]) / (b - a),
        }
    results["pairs"] = pairs
    if query_holders:
        results["queries"] = queries
    results["memory"] = memory
    results["fill"] = fill


def _contended_worker(kind: str, directory: str, idx: int, seconds: float, barrier: Any, q: Any) -> None:
    try:
        b = make_backend(kind, directory)
        waits, holds = array("q"), array("q")
        b.install_wait_probe(waits, holds)
        lat = array("q")
        clock = time.perf_counter_ns
        # one warm-up pair outside the window
        b.register(f"p{idx}w", transient_rules(f"p{idx}w"))
        b.release(f"p{idx}w")
        del waits[:]
        del holds[:]
        barrier.wait()
        cpu0 = _cpu_self()
        start = clock()
        deadline = start + int(seconds * 1e9)
        j = 0
        while True:
            t0 = clock()
            if t0 >= deadline:
                break
            name = f"p{idx}x{j}"
            b.register(name, transient_rules(name))
            b.release(name)
            lat.append(clock() - t0)
            j += 1
        elapsed = (clock() - start) / 1e9
        cpu = _cpu_self() - cpu0
        b.close()
        q.put((idx, j, elapsed, waits.tobytes(), lat.tobytes(), None, holds.tobytes(), cpu))
    except BaseException:  # noqa: BLE001
        q.put((idx, 0, 0.0, b"", b"", traceback.format_exc(), b"", 0.0))


def run_contended(kind: str, directory: str, procs: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs)
    q = ctx.Queue()
    ws = [ctx.Process(target=_contended_worker, args=(kind, directory, i, seconds, barrier, q))
          for i in range(procs)]
    for w in ws:
        w.start()
    reports = sorted(q.get(timeout=seconds + 300) for _ in ws)
    for w in ws:
        w.join()
    for r in reports:
        if r[5]:
            raise RuntimeError(f"{kind}: contended worker failed:\n{r[5]}")
    counts = [r[1] for r in reports]
    elapsed = max(r[2] for r in reports)
    waits: list[int] = []
    lat: list[int] = []
    holds: list[int] = []
    for r in reports:
        for raw, into in ((r[3], waits), (r[4], lat), (r[6], holds)):
            a = array("q")
            a.frombytes(raw)
            into.extend(a)
    waits.sort()
    lat.sort()
    holds.sort()
    total = sum(counts)
    cpu = sum(r[7] for r in reports)
    return {
        "_waits": waits, "_lat": lat, "_holds": holds,
        "procs": procs,
        "cpu_s": cpu,
        "cpu_us_per_pair": cpu / total * 1e6 if total else 0.0,
        "pairs": total,
        "seconds": elapsed,
        "pairs_per_s": total / elapsed,
        "per_process_pairs": counts,
        "min_max_ratio": min(counts) / max(counts) if max(counts) else 0.0,
        "lock_acquisitions": len(waits),
        "wait_ms": {"p50": _pct(waits, 0.5) / 1e3, "p99": _pct(waits, 0.99) / 1e3,
                    "max": (waits[-1] / 1e6) if waits else 0.0,
                    "mean": (sum(waits) / len(waits) / 1e6) if waits else 0.0},
        "pair_latency_ms": {"p50": _pct(lat, 0.5) / 1e3, "p99": _pct(lat, 0.99) / 1e3,
                            "max": (lat[-1] / 1e6) if lat else 0.0},
    }


def _merge_contended(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the runs: pairs and seconds add up, per-process counts add up by worker
    index, waits and latencies are pooled."""
    waits = sorted(w for r in rs for w in r["_waits"])
    lat = sorted(x for r in rs for x in r["_lat"])
    holds = sorted(x for r in rs for x in r["_holds"])
    counts = [sum(c) for c in zip(*(r["per_process_pairs"] for r in rs), strict=True)]  # same procs in every run
    total, elapsed = sum(counts), sum(r["seconds"] for r in rs)
    cpu = sum(r["cpu_s"] for r in rs)
    return {
        "procs": rs[0]["procs"],
        "cpu_us_per_pair": cpu / total * 1e6 if total else 0.0,
        "runs": len(rs),
        "pairs": total,
        "seconds": elapsed,
        "pairs_per_s": total / elapsed,
        "run_pairs_per_s": [r["pairs_per_s"] for r in rs],
        "per_process_pairs": counts,
        "min_max_ratio": min(counts) / max(counts) if max(counts) else 0.0,
        "worst_run_min_max_ratio": min(r["min_max_ratio"] for r in rs),
        "lock_acquisitions": len(waits),
        "wait_ms": {"p50": _pct(waits, 0.5) / 1e3, "p99": _pct(waits, 0.99) / 1e3,
                    "max": (waits[-1] / 1e6) if waits else 0.0,
                    "mean": (sum(waits) / len(waits) / 1e6) if waits else 0.0},
        "pair_latency_ms": {"p50": _pct(lat, 0.5) / 1e3, "p99": _pct(lat, 0.99) / 1e3,
                            "max": (lat[-1] / 1e6) if lat else 0.0,
                            "mean": (sum(lat) / len(lat) / 1e6) if lat else 0.0},
        "hold_ms": {"p50": _pct(holds, 0.5) / 1e3, "p99": _pct(holds, 0.99) / 1e3,
                    "max": (holds[-1] / 1e6) if holds else 0.0,
                    "mean": (sum(holds) / len(holds) / 1e6) if holds else 0.0},
    }


def section_contended(cfg: dict[str, Any], root: str, results: dict[str, Any]) -> None:
    out: dict[str, Any] = {}
    for k in cfg.get("contended_backends", CONTENDED_BACKENDS):
        d = os.path.join(root, "contended", k)
        r = Remote(k, d)
        try:
            r.call("prefill", cfg["contended_live"])
        finally:
            r.close()
        out[k] = {}
        runs: dict[int, list[dict[str, Any]]] = {1: [], cfg["contended_procs"]: []}
        for _ in range(cfg["contended_rounds"]):  # 1, N, 1, N, ...
            for procs in runs:
                runs[procs].append(run_contended(k, d, procs, cfg["contended_seconds"] / cfg["contended_rounds"]))
        for procs, rs in runs.items():
            res = out[k][str(procs)] = _merge_contended(rs)
            _log(f"contended {k:12s} procs={procs}: {res['pairs_per_s']:9.0f} pairs/s, "
                 f"wait p99 {res['wait_ms']['p99']:.2f} ms, per process {res['per_process_pairs']}")
    results["contended"] = {"live": cfg["contended_live"], "backends": out}


def section_fsync(cfg: dict[str, Any], root: str, results: dict[str, Any]) -> None:
    remotes = {k: Remote(k, os.path.join(root, "fsync", k)) for k in FSYNC_BACKENDS}
    out: dict[str, Any] = {k: {} for k in remotes}
    R = cfg["fsync_rounds"]
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in remotes}
    try:
        for r in remotes.values():
            r.call("prefill", cfg["fsync_live"])
        # The floor+cpu diagnostic: scopeledger's CPU per event over the floor's,
        # measured here without fsync, spun by the fdatasync floor before each event.
        cpu = {k: [] for k in ("scopeledger", "floor-fdatasync")}
        for rnd in range(2):
            for k in cpu:
                cpu[k].append(remotes[k].call("pairs", 0.25, cfg["fsync_max"] * 10, cfg["pair_min"],
                                              2 if rnd == 0 else 0, f"c{rnd}x")["mean_us"])
        busy_us = max(0.0, (statistics.median(cpu["scopeledger"])
                            - statistics.median(cpu["floor-fdatasync"])) / 2)
        remotes["floor+cpu"].call("set_busy", busy_us / 1e6)
        out["floor+cpu"]["busy_us_per_event"] = busy_us
        for r in remotes.values():
            r.call("set_fsync", True)
        for rnd in range(R):  # interleaved: device latency drifts
            for k, r in remotes.items():
                got[k].append(r.call("pairs", cfg["fsync_budget_s"] / R, max(1, cfg["fsync_max"] // R),
                                     cfg["pair_min"], 2 if rnd == 0 else 0, f"f{rnd}x"))
    finally:
        for r in remotes.values():
            r.close()
    for k in remotes:
        res = out[k] = {**out[k], **merge_rounds(got[k])}
        _log(f"fsync {k:15s}: {res['amortized_us']:9.1f} µs/pair, p50 {res['p50_us']:.0f} µs, "
             f"p99 {res['p99_us']:.0f} µs, round means {', '.join(f'{x:.0f}' for x in res['round_means_us'])}")
    results["fsync"] = {"live": cfg["fsync_live"], "backends": out}


# -- history ----------------------------------------------------------------------


def build_history(directory: str, live: int, events: int, interval: int, tail: int) -> dict[str, Any]:
    """Write a valid log of ``events + tail`` events: ``live`` registrations (kept live),
    then register/release pairs of transient holders; a snapshot at every multiple of
    ``interval`` up to ``events`` (where the library, with ``snapshot_every=interval``,
    would write them); then ``tail`` more events, not covered by a snapshot.

    Lines are made with the library's own encoder and hash; the live set's registrations
    are folded with ``apply``. A register/release pair of a transient holder leaves the
    state as it was except for seq, last hash and last ts, which are set directly, so
    that a million events take seconds. ``verify()`` (history section) re-folds the
    whole log and compares every snapshot with it, so any mismatch would be reported.
    """
    from scopeledger._events import encode, line_hash
    from scopeledger._events import FORMAT_VERSION
    from scopeledger._fold import State, apply
    from scopeledger._process import identify
    from scopeledger._snapshots import encode as encode_snapshot, write_file
    from scopeledger._store import Store

    def write_snapshot(store: Store, st: State, offset: int, line_start: int) -> None:
        # A snapshot file as the file store writes it (its byte offsets in the header).
        header, body = encode_snapshot(st)
        header = {"format": header["format"], "seq": header["seq"], "offset": offset,
                  "line_start": line_start, **header}
        write_file(store, st.seq, orjson.dumps(header) + b"\n" + body + b"\n", st.last_hash)

    assert live % 2 == 0 and interval % 2 == 0 and interval > live
    Ledger.open(directory).close()  # directory layout and modes, as the library makes them
    store = Store(directory)
    ident = identify().to_json()
    total = events + tail
    t0 = time.time_ns() - total * 1_000_000
    st = State()
    offset = 0
    snaps = 0
    t_start = time.perf_counter()
    with open(store.log_path, "ab", buffering=1 << 20) as f:
        prev = st.last_hash
        last = ""
        for seq in range(1, total + 1):
            ts = t0 + seq * 1_000_000
            if seq <= live:
                name = f"h{seq - 1}"
                ev = {"v": FORMAT_VERSION, "seq": seq, "ts": ts, "actor": ident, "prev": prev,
                      "type": "registered",
                      "holder": {"name": name, "rules": [list(r) for r in holder_rules(seq - 1)],
                                 "process": ident, "parent": None, "reserved": False, "socket": None}}
                line = encode(ev)
                h = line_hash(line)
                apply(st, ev, h)
            else:
                if (seq - live) % 2 == 1:
                    last = f"c{seq}"
                    ev = {"v": FORMAT_VERSION, "seq": seq, "ts": ts, "actor": ident, "prev": prev,
                          "type": "registered",
                          "holder": {"name": last, "rules": [list(r) for r in transient_rules(last)],
                                     "process": ident, "parent": None, "reserved": False,
                                     "socket": None}}
                else:
                    ev = {"v": FORMAT_VERSION, "seq": seq, "ts": ts, "actor": ident, "prev": prev,
                          "type": "released", "name": last, "reparented": []}
                line = encode(ev)
                h = line_hash(line)
            line_start = offset
            f.write(line)
            f.write(b"\n")
            offset += len(line) + 1
            prev = h
            if seq % interval == 0 and seq <= events:
                assert (seq - live) % 2 == 0  # after a release: the state is the live set
                st.seq, st.last_hash, st.last_ts = seq, h, ts
                st.max_ts = max(st.max_ts, ts)  # the fold keeps the highest ts seen (v2 ts are not clamped)
                f.flush()
                write_snapshot(store, st, offset, line_start)
                snaps += 1
    store.close()
    return {"events": total, "history": events, "tail": tail, "live": live, "interval": interval,
            "snapshots": snaps, "log_bytes": offset, "build_seconds": time.perf_counter() - t_start}


def _history_measure(cfg: dict[str, Any], directory: str, info: dict[str, Any], rng_seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"build": info}
    # cold open (same process, warm page cache)
    opens = []
    for _ in range(cfg["open_repeats"]):
        gc.collect()
        t0 = time.perf_counter()
        led = Ledger.open(directory)
        dt = time.perf_counter() - t0
        opens.append(dt)
        stats = led.stats
        n_live = len(led.holders())
        led.close()
    out["open"] = {"median_ms": statistics.median(opens) * 1e3, "min_ms": min(opens) * 1e3,
                   "events_folded": stats.events_folded, "snapshot_seq": stats.snapshot_seq,
                   "live": n_live}
    _log(f"history {info['events']}: open {out['open']['median_ms']:.1f} ms "
         f"(snapshot {stats.snapshot_seq}, folded {stats.events_folded})")

    led = Ledger.open(directory)
    try:
        # replay: parsing the lines alone, events(), verify()
        path = led._store.log_path
        gc.collect()
        t0, c0 = time.perf_counter(), _cpu_tree()
        n = 0
        loads = orjson.loads
        with open(path, "rb") as f:
            for line in f:
                loads(line)
                n += 1
        parse_s, parse_cpu = time.perf_counter() - t0, _cpu_tree() - c0
        t0, c0 = time.perf_counter(), _cpu_tree()
        n_ev = sum(1 for _ in led.events())
        events_s, events_cpu = time.perf_counter() - t0, _cpu_tree() - c0
        t0, c0 = time.perf_counter(), _cpu_tree()
        report1 = led.verify(workers=1)
        verify1_s, verify1_cpu = time.perf_counter() - t0, _cpu_tree() - c0
        # As `ledger verify` runs it: one worker per CPU on a large log (explicit
        # here, since this harness may have threads of its own).
        workers = len(os.sched_getaffinity(0))
        t0, c0 = time.perf_counter(), _cpu_tree()
        report = led.verify(workers=workers)
        verify_s, verify_cpu = time.perf_counter() - t0, _cpu_tree() - c0
        for rep in (report1, report):
            if not rep.ok:
                raise RuntimeError(f"verify failed on the generated history: {rep}")
        assert n == n_ev == report.events == report1.events == info["events"], (n, n_ev, report.events)
        out["replay"] = {
            "events": n,
            "parse_events_per_s": n / parse_s,
            "events_api_events_per_s": n / events_s,
            "verify_events_per_s": n / verify_s,
            "verify_workers": workers,
            "verify1_events_per_s": n / verify1_s,
            # per CPU second (user + system of this process and the workers it reaped):
            # the rate on one core whatever else the machine is doing
            "parse_events_per_cpu_s": n / parse_cpu if parse_cpu else None,
            "events_api_events_per_cpu_s": n / events_cpu if events_cpu else None,
            "verify1_events_per_cpu_s": n / verify1_cpu if verify1_cpu else None,
            "verify_events_per_cpu_s": n / verify_cpu if verify_cpu else None,
            "events_api_vs_parse": (n / events_s) / (n / parse_s),
            "verify_vs_parse": (n / verify_s) / (n / parse_s),
            "parse_s": parse_s, "events_api_s": events_s, "verify_s": verify_s, "verify1_s": verify1_s,
            "snapshots_checked": report.snapshots,
        }
        _log(f"history {info['events']}: parse {n / parse_s:,.0f}/s, events() {n / events_s:,.0f}/s, "
             f"verify {n / verify1_s:,.0f}/s (1 process), {n / verify_s:,.0f}/s ({workers} workers)")

        # state_at at random past seqs; count events folded per call
        folded = [0]
        orig_scan = led._history._scan

        def counting_scan(*a: Any, **kw: Any) -> Any:
            for item in orig_scan(*a, **kw):
                folded[0] += 1
                yield item

        led._history._scan = counting_scan  # type: ignore[method-assign]
        rng = random.Random(rng_seed)
        newest = info["events"]
        samples = []
        for _ in range(cfg["state_at_samples"]):
            seq = rng.randint(1, newest)
            folded[0] = 0
            t0 = time.perf_counter()
            st = led.state_at(seq=seq)
            dt = time.perf_counter() - t0
            assert st.seq == seq
            samples.append({"seq": seq, "ms": dt * 1e3, "folded": folded[0]})
        # reference points: right at a snapshot (folds nothing) and just before the next
        interval = info["interval"]
        ref = {}
        k = max(1, (newest - info["tail"]) // interval // 2) * interval
        for label, seq in (("at_snapshot", k), ("interval_minus_1", min(k + interval - 1, newest))):
            folded[0] = 0
            t0 = time.perf_counter()
            led.state_at(seq=seq)
            ref[label] = {"seq": seq, "ms": (time.perf_counter() - t0) * 1e3, "folded": folded[0]}
        led._history._scan = orig_scan  # type: ignore[method-assign]
        ms = [s["ms"] for s in samples]
        counted = ref["interval_minus_1"]["folded"] > 0  # the wrapper saw the fold
        out["state_at"] = {
            "counted": counted,
            "samples": samples,
            "mean_ms": statistics.mean(ms), "max_ms": max(ms),
            "max_folded": max(s["folded"] for s in samples),
            "interval": interval, "reference": ref,
        }
        _log(f"history {info['events']}: state_at mean {statistics.mean(ms):.1f} ms, "
             f"max {max(ms):.1f} ms, max folded {out['state_at']['max_folded']}")
    finally:
        led.close()
    return out


def _cpu_tree() -> float:
    """CPU seconds used so far by this process and the children it has reaped."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _history_child(cfg: dict[str, Any], root: str, conn: Any) -> None:
    try:
        out: dict[str, Any] = {}
        for size in cfg["history_sizes"]:
            d = os.path.join(root, "history", f"h{size}")
            info = build_history(d, cfg["history_live"], size, cfg["history_interval"], cfg["history_tail"])
            _log(f"history: built {info['events']} events, {info['snapshots']} snapshots, "
                 f"{info['log_bytes'] / 1e6:.0f} MB in {info['build_seconds']:.1f} s")
            out[str(size)] = _history_measure(cfg, d, info, size)
            shutil.rmtree(d, ignore_errors=True)
        conn.send(("ok", out))
    except BaseException:  # noqa: BLE001
        conn.send(("err", traceback.format_exc()))


def section_history(cfg: dict[str, Any], root: str, results: dict[str, Any]) -> None:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_history_child, args=(cfg, root, child))
    p.start()
    child.close()
    status, value = parent.recv()
    p.join()
    if status != "ok":
        raise RuntimeError(f"history section failed:\n{value}")
    results["history"] = value


# ----------------------------------------------------------------------------- report


def _fmt_us(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 100_000:
        return f"{v / 1e3:,.0f} ms"
    if v >= 10_000:
        return f"{v / 1e3:,.1f} ms"
    if v >= 100:
        return f"{v:,.0f} µs"
    return f"{v:,.1f} µs"


def _table(title: str, header: list[str], rows: list[list[str]], note: str | None = None) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    if "startup" in results:
        out.append(startup.render(results["startup"]))
    if "pairs" in results:
        pairs = results["pairs"]
        sizes = sorted({int(s) for b in pairs.values() for s in b})
        rows = []
        for k in pairs:
            row = [k] + [_fmt_us(pairs[k].get(str(n), {}).get("amortized_us")) for n in sizes]
            if str(sizes[0]) in pairs[k] and str(sizes[-1]) in pairs[k]:
                row.append(f"{pairs[k][str(sizes[-1])]['amortized_us'] / pairs[k][str(sizes[0])]['amortized_us']:.2f}×")
            else:
                row.append("—")
            rows.append(row)
        led = pairs["scopeledger"]
        rows.append(["*scopeledger cost ÷ floor cost*"] + [
            f"{led[str(n)]['amortized_us'] / pairs['floor'][str(n)]['amortized_us']:.1f}×"
            if str(n) in pairs["floor"] else "—" for n in sizes] + [""])
        for other in ("seed", "seed-orjson", "sqlite", "sqlite-lean"):
            if other not in pairs:
                continue
            rows.append([f"*{other} cost ÷ scopeledger cost*"] + [
                f"{pairs[other][str(n)]['amortized_us'] / led[str(n)]['amortized_us']:,.2f}×"
                if str(n) in pairs[other] else "—" for n in sizes] + [""])
        out.append(_table(
            "Register + release pair, 1 process, µs per pair (mean) by live holders",
            ["backend"] + [f"{n:,}" for n in sizes] + [f"{sizes[-1]:,} ÷ {sizes[0]:,}"], rows,
            "scopeledger: steady-state mean plus the snapshot the library writes every "
            "max(10,000, live holders) events, amortised (see the detail table)."))
        rows = []
        for n in sizes:
            r = led[str(n)]
            rows.append([f"{n:,}", _fmt_us(r["steady_us"]), _fmt_us(r["p50_us"]), _fmt_us(r["p99_us"]),
                         _fmt_us(r["max_us"]), f"{r['snapshot_ms']:.1f} ms / {r['snapshot_interval_events']:,} ev",
                         _fmt_us(r["amortized_us"]), f"{r.get('bytes_per_event', 0):.0f}", f"{r['pairs']:,}"])
        out.append(_table("scopeledger pair detail",
                          ["live", "steady mean", "p50", "p99", "max", "snapshot cost / interval",
                           "amortised", "log B/event", "pairs timed"], rows))
        rows = []
        for k in pairs:
            for n in sizes:
                r = pairs[k].get(str(n))
                if r:
                    rows.append([k, f"{n:,}", _fmt_us(r["mean_us"]), _fmt_us(r["p50_us"]), _fmt_us(r.get("cpu_us")),
                                 _fmt_us(r["p99_us"]), f"{r['pairs_per_s']:,.0f}", f"{r['pairs']:,}"])
        out.append(_table("All backends, pair detail",
                          ["backend", "live", "mean", "p50", "CPU/pair", "p99", "pairs/s", "pairs timed"], rows,
                          "CPU/pair: user + system CPU time of the backend's process per pair (median of "
                          "the rounds); with p50, the figures a loaded machine moves least."))
    if "counts" in results:
        out.append(counts.render(results["counts"]))
    if "queries" in results:
        q = results["queries"]
        sizes = sorted({int(s) for b in q.values() for s in b})
        rows = []
        for k in q:
            for what in ("hit_us", "miss_us"):
                row = [f"{k} ({what[:-3]})"] + [_fmt_us(q[k][str(n)][what]) for n in sizes]
                row.append(f"{q[k][str(sizes[-1])][what] / q[k][str(sizes[0])][what]:.2f}×")
                rows.append(row)
        out.append(_table("Conflict query (find_conflict), µs per query by live rules",
                          ["backend"] + [f"{n:,}" for n in sizes] + [f"{sizes[-1]:,} ÷ {sizes[0]:,}"], rows,
                          "hit: a write rule under a random live holder's tree (conflict found); "
                          "miss: a write rule on a free tree."))
        rows = [[k, f"{n:,}", _fmt_us(q[k][str(n)]["mean_us"]), _fmt_us(q[k][str(n)]["p50_us"]),
                 _fmt_us(q[k][str(n)].get("cpu_us")), _fmt_us(q[k][str(n)]["p99_us"]), f"{q[k][str(n)]['queries']:,}"]
                for k in q for n in sizes]
        out.append(_table("Conflict query detail (hits and misses together)",
                          ["backend", "live rules", "mean", "p50", "CPU/query", "p99", "queries"], rows))
    if "memory" in results:
        m = results["memory"]
        rows = []
        for n in sorted(int(s) for s in m if s != "marginal"):
            r = m[str(n)]
            d = r.get("rss_delta_per_added_holder_during_fill")
            rows.append([f"{n:,}", f"{r['tracemalloc_per_holder']:,.0f}", f"{r['rss_per_holder']:,.0f}",
                         f"{d:,.0f}" if d else "—"])
        if "marginal" in m:
            mm = m["marginal"]
            rows.append([f"marginal {mm['from']:,}→{mm['to']:,}", f"{mm['tracemalloc_per_holder']:,.0f}",
                         f"{mm['rss_per_holder']:,.0f}", ""])
        out.append(_table("Memory per live holder with 2 rules, bytes",
                          ["live holders", "tracemalloc / holder", "RSS delta / holder",
                           "RSS delta while registering"], rows,
                          "tracemalloc and RSS: a fresh process opening the ledger (snapshot + tail), "
                          "divided by the live holders; last column: RSS growth of the benchmark "
                          "process per holder added through register()."))
    if "contended" in results:
        c = results["contended"]
        rows = []
        for k, per in c["backends"].items():
            for procs, r in per.items():
                rows.append([k, procs, f"{r['pairs_per_s']:,.0f}", " ".join(str(x) for x in r["per_process_pairs"]),
                             f"{r['min_max_ratio']:.2f}", f"{r['wait_ms']['p50']:.3f}", f"{r['wait_ms']['p99']:.3f}",
                             f"{r['wait_ms']['max']:.1f}", f"{r['hold_ms']['p50']:.3f}",
                             f"{r['hold_ms']['p99']:.3f}", f"{r['pair_latency_ms'].get('mean', 0):.3f}",
                             f"{r['pair_latency_ms']['p50']:.3f}", f"{r['pair_latency_ms']['p99']:.2f}",
                             _fmt_us(r.get("cpu_us_per_pair"))])
        out.append(_table(f"Contention: register+release pairs, {c['live']:,} live holders",
                          ["backend", "procs", "pairs/s (aggregate)", "pairs per process", "min/max",
                           "wait p50 ms", "wait p99 ms", "wait max ms", "hold p50 ms", "hold p99 ms",
                           "pair mean ms", "pair p50 ms", "pair p99 ms", "CPU/pair"], rows,
                          "wait: time to acquire the store's exclusive lock (scopeledger: Store.acquire; "
                          "floor/seed: flock; sqlite: BEGIN IMMEDIATE); hold: from acquiring it to "
                          "releasing it (sqlite: to COMMIT); per-process counts summed over the runs; "
                          "CPU/pair: the workers' user + system CPU time over their pairs."))
    if "fsync" in results:
        f = results["fsync"]
        rows = []
        fl = f["backends"].get("floor", {}).get("amortized_us")
        for k, r in f["backends"].items():
            rows.append([k, _fmt_us(r["amortized_us"]), _fmt_us(r["p50_us"]), _fmt_us(r["p99_us"]),
                         _fmt_us(r["cpu_us"]) if "cpu_us" in r else "—",
                         f"{r['pairs_per_s']:,.0f}", f"{fl / r['amortized_us']:.2f}" if fl else "—"])
        busy = f["backends"].get("floor+cpu", {}).get("busy_us_per_event")
        out.append(_table(f"fsync on every event, {f['live']:,} live holders",
                          ["backend", "µs/pair", "p50", "p99", "CPU/pair", "pairs/s", "throughput ÷ floor"], rows,
                          "scopeledger: fsync=True (fdatasync); floor: os.fsync (baselines.RawFloor); "
                          "floor-fdatasync: os.fdatasync; seed: fsync; sqlite: synchronous=FULL."
                          + (f" floor+cpu (a diagnostic): the fdatasync floor spinning {busy:.1f} µs on "
                             "the CPU before each event, scopeledger's CPU per event over the floor's "
                             "as measured without fsync in this section (a lower bound: CPU/pair "
                             "shows what each used with fsync)." if busy is not None else "")
                          + " CPU/pair: user + system CPU time of the process per pair (median of rounds)."))
    if "history" in results:
        h = results["history"]
        sizes = sorted(int(s) for s in h)
        rows = []
        for n in sizes:
            r = h[str(n)]
            b, o = r["build"], r["open"]
            rows.append([f"{b['events']:,}", f"{b['snapshots']:,}", f"{b['log_bytes'] / 1e6:,.1f} MB",
                         f"{o['median_ms']:.1f}", f"{o['snapshot_seq']:,}", f"{o['events_folded']:,}"])
        out.append(_table("Cold open (same live set, same tail after the newest snapshot)",
                          ["events", "snapshots", "log size", "open ms (median)", "snapshot loaded",
                           "events folded"], rows,
                          "Warm page cache, in-process Ledger.open(); live set "
                          f"{h[str(sizes[0])]['build']['live']:,} holders."))
        rows = []
        for n in sizes:
            r = h[str(n)]["replay"]
            rows.append([f"{r['events']:,}", f"{r['parse_events_per_s']:,.0f}",
                         f"{r['events_api_events_per_s']:,.0f} ({r['events_api_vs_parse']:.2f}× parse)",
                         f"{r.get('verify1_events_per_s', 0):,.0f}",
                         f"{r['verify_events_per_s']:,.0f} ({r['verify_vs_parse']:.3f}× parse)"])
        w = h[str(sizes[-1])]["replay"].get("verify_workers", 1)
        out.append(_table("Full replay, events/s", ["events", "orjson parse of the lines", "ledger.events()",
                                                    "verify(workers=1)", f"verify(workers={w})"], rows,
                          f"verify(workers={w}) forks {w} workers whatever the size (on small logs the fork "
                          "costs more than it saves); `ledger verify` and verify() without workers= fork only "
                          "for logs over 32 MB (scopeledger._history.PARALLEL_MIN_BYTES)."))
        rows = []
        for n in sizes:
            r = h[str(n)]["replay"]
            rows.append([f"{r['events']:,}"] + [
                f"{r[k]:,.0f}" if r.get(k) else "—"
                for k in ("parse_events_per_cpu_s", "events_api_events_per_cpu_s", "verify1_events_per_cpu_s",
                          "verify_events_per_cpu_s")])
        out.append(_table("Full replay, events per CPU second",
                          ["events", "orjson parse of the lines", "ledger.events()", "verify(workers=1)",
                           f"verify(workers={w})"], rows,
                          "Events over the CPU time (user + system) the call used, its reaped workers "
                          "included: the rate on one core, which load on other cores moves less than "
                          "the wall-clock rate above."))
        rows = []
        for n in sizes:
            r = h[str(n)]["state_at"]
            ref = r["reference"]
            rows.append([f"{h[str(n)]['build']['events']:,}", f"{len(r['samples'])}", f"{r['mean_ms']:.1f}",
                         f"{r['max_ms']:.1f}", f"{r['max_folded']:,} / {r['interval']:,}",
                         f"{ref['at_snapshot']['ms']:.1f}", f"{ref['interval_minus_1']['ms']:.1f}"])
        out.append(_table("state_at(seq) at random past seqs",
                          ["events", "samples", "mean ms", "max ms", "max events folded / interval",
                           "at a snapshot ms", "interval−1 after ms"], rows))
    if "targets" in results:
        rows = [[t["workload"], t["target"], t["measured"], "**PASS**" if t["pass"] else "**MISS**"]
                for t in results["targets"]]
        out.append(_table("Targets (issue 5)", ["workload", "target", "measured", ""], rows))
    return "\n".join(out)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    t: list[dict[str, Any]] = []

    def add(workload: str, target: str, measured: str, ok: bool) -> None:
        t.append({"workload": workload, "target": target, "measured": measured, "pass": bool(ok)})

    if "pairs" in results:
        p = results["pairs"]
        led = p["scopeledger"]
        sizes = sorted(int(s) for s in led)
        ref = 1000 if "1000" in led else sizes[-1]
        if str(ref) in p.get("seed", {}):
            x = p["seed"][str(ref)]["amortized_us"] / led[str(ref)]["amortized_us"]
            add("pairs, 1 process", f"≥ 200× the seed's design at {ref:,} holders", f"{x:,.0f}×", x >= 200)
        ratios = {n: led[str(n)]["amortized_us"] / p["floor"][str(n)]["amortized_us"] for n in sizes}
        worst = max(ratios, key=ratios.get)  # type: ignore[arg-type]
        add("pairs, 1 process", "≤ 3× the raw floor (every size)",
            f"{ratios[worst]:.1f}× at {worst:,} (" + ", ".join(f"{n:,}: {r:.1f}×" for n, r in ratios.items()) + ")",
            ratios[worst] <= 3)
        if "sqlite" in p:
            sq = {n: p["sqlite"][str(n)]["amortized_us"] / led[str(n)]["amortized_us"] for n in sizes}
            worst = min(sq, key=sq.get)  # type: ignore[arg-type]
            add("pairs, 1 process", "≥ 2× SQLite (every size)",
                f"{sq[worst]:.2f}× at {worst:,} (" + ", ".join(f"{n:,}: {r:.2f}×" for n, r in sq.items()) + ")",
                sq[worst] >= 2)
        g = led[str(sizes[-1])]["amortized_us"] / led[str(sizes[0])]["amortized_us"]
        if len(sizes) > 1:
            add("pairs, 1 process", f"cost at {sizes[-1]:,} ≤ 1.5× cost at {sizes[0]:,}",
                f"{g:.2f}× ({_fmt_us(led[str(sizes[-1])]['amortized_us'])} vs "
                f"{_fmt_us(led[str(sizes[0])]['amortized_us'])})", g <= 1.5)
    if "contended" in results:
        c = results["contended"]["backends"]["scopeledger"]
        procs = max(int(k) for k in c)
        one, many = c["1"], c[str(procs)]
        x = many["pairs_per_s"] / one["pairs_per_s"]
        add(f"{procs} processes", "aggregate ≥ 0.7× one process",
            f"{x:.2f}× ({many['pairs_per_s']:,.0f} vs {one['pairs_per_s']:,.0f} pairs/s)", x >= 0.7)
        probed = many["lock_acquisitions"] >= many["pairs"]  # the probe saw the lock taken
        add(f"{procs} processes", "p99 lock wait ≤ 5 ms",
            f"{many['wait_ms']['p99']:.2f} ms (max {many['wait_ms']['max']:.1f} ms)" if probed
            else "lock waits not observed (Store.acquire/locked not used any more?)",
            probed and many["wait_ms"]["p99"] <= 5)
        worst = min(many["min_max_ratio"], many.get("worst_run_min_max_ratio", 1.0))
        add(f"{procs} processes", "no waiter starved (min/max pairs per process ≥ 0.5 in every run)",
            f"{worst:.2f} (totals {' '.join(str(n) for n in many['per_process_pairs'])})",
            worst >= 0.5)
    if "fsync" in results:
        f = results["fsync"]["backends"]
        led = f["scopeledger"]["amortized_us"]
        for floor in ("floor", "floor-fdatasync"):
            if floor in f:
                x = f[floor]["amortized_us"] / led
                which = "flock+append+fsync" if floor == "floor" else "flock+append+fdatasync"
                add("fsync every event", f"≥ 0.8× the {which} floor",
                    f"{x:.2f}× ({_fmt_us(led)} vs {_fmt_us(f[floor]['amortized_us'])} per pair)", x >= 0.8)
    if "history" in results:
        h = results["history"]
        sizes = sorted(int(s) for s in h)
        a, b = h[str(sizes[0])], h[str(sizes[-1])]
        x = b["open"]["median_ms"] / a["open"]["median_ms"]
        if len(sizes) > 1:
            add("cold open", f"open({b['build']['events']:,}) ≤ 1.5× open({a['build']['events']:,})",
                f"{x:.2f}× ({b['open']['median_ms']:.1f} vs {a['open']['median_ms']:.1f} ms)", x <= 1.5)
        r = b["replay"]
        add("full replay", "events() ≥ 300k events/s",
            f"{r['events_api_events_per_s']:,.0f}/s ({r['events_api_vs_parse']:.2f}× orjson parse"
            f" at {r['parse_events_per_s']:,.0f}/s)",
            r["events_api_events_per_s"] >= 300_000)
        add("full replay", "verify() ≥ 300k events/s",
            f"{r['verify_events_per_s']:,.0f}/s with {r.get('verify_workers', 1)} workers "
            f"({r['verify_vs_parse']:.3f}× orjson parse; one process {r.get('verify1_events_per_s', 0):,.0f}/s)",
            r["verify_events_per_s"] >= 300_000)
        s = b["state_at"]
        if s.get("counted", True):
            add("state_at", f"bounded by one snapshot interval ({s['interval']:,} events)",
                f"max {s['max_folded']:,} events folded, max {s['max_ms']:.0f} ms (mean {s['mean_ms']:.0f} ms)",
                s["max_folded"] <= s["interval"])
        else:
            add("state_at", f"bounded by one snapshot interval ({s['interval']:,} events)",
                "could not count the events folded (History._scan not used any more?)", False)
    if "queries" in results:
        q = results["queries"]["scopeledger"]
        sizes = sorted(int(s) for s in q)
        lo, hi = q[str(sizes[0])], q[str(sizes[-1])]
        x = hi["mean_us"] / lo["mean_us"]
        add("conflict query", f"query({sizes[-1]:,}) ≤ 2× query({sizes[0]:,})",
            f"{x:.2f}× ({_fmt_us(hi['mean_us'])} vs {_fmt_us(lo['mean_us'])};"
            f" hit {hi['hit_us'] / lo['hit_us']:.2f}×, miss {hi['miss_us'] / lo['miss_us']:.2f}×)",
            x <= 2)
    if "memory" in results:
        m = results["memory"]
        n = max(int(s) for s in m if s != "marginal")
        r = m[str(n)]
        add("memory", "≤ 1 KB per live holder with 2 rules",
            f"{r['tracemalloc_per_holder']:,.0f} B (tracemalloc, {n:,} holders); RSS {r['rss_per_holder']:,.0f} B",
            r["tracemalloc_per_holder"] <= 1024)
    return t


def machine_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_total_gb": round(vm.total / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "scopeledger": getattr(scopeledger, "__version__", "?"),
        "orjson": orjson.__version__,
        "sqlite": __import__("sqlite3").sqlite_version,
    }


def source_info() -> dict[str, Any]:
    """The scopeledger source measured (the package this process imports: set
    ``PYTHONPATH`` to a clean clone to measure a commit while the working tree moves):
    its path, git commit and whether it had uncommitted changes."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(scopeledger.__file__)))
    out: dict[str, Any] = {"path": repo, "commit": "?", "dirty": None, "changed": []}
    with contextlib.suppress(Exception):
        out["commit"] = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                                       text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "scopeledger"],
                                 capture_output=True, text=True, check=True).stdout.splitlines()
        out["changed"] = [c[3:] for c in changed]
        out["dirty"] = bool(changed)
    return out


def _tree_cpu() -> float:
    """CPU seconds used so far by this process and its children (live and reaped)."""
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for c in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            ct = c.cpu_times()
            total += ct.user + ct.system
    return total


def _load_report(cpu0: Any, own0: float, load0: float, seconds: float) -> dict[str, Any]:
    """How busy the machine was during a section, and how much of it was not us."""
    cpu1 = psutil.cpu_times()
    busy = (sum(cpu1) - cpu1.idle - getattr(cpu1, "iowait", 0)) - (sum(cpu0) - cpu0.idle - getattr(cpu0, "iowait", 0))
    own = _tree_cpu() - own0
    ncpu = os.cpu_count() or 1
    return {"loadavg_start": round(load0, 2), "loadavg_end": round(os.getloadavg()[0], 2),
            "machine_busy_cpus": round(busy / seconds, 2), "ours_cpus": round(own / seconds, 2),
            "others_cpus": round(max(0.0, busy - own) / seconds, 2), "cpus": ncpu}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def section_startup(cfg: dict[str, Any], root: str, results: dict[str, Any]) -> None:
    results["startup"] = startup.measure(cfg["startup_rounds"], log=_log, import_runs=cfg["startup_import_runs"])


def section_counts(cfg: dict[str, Any], root: str, results: dict[str, Any]) -> None:
    results["counts"] = counts.measure(cfg["counts_backends"], cfg["counts_holders"], cfg["counts_pairs"],
                                       root=root, log=_log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scopeledger side-by-side benchmarks (issues 5 and 18)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds; for CI (no timing assertions)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="sizes and sections: full (default), quick (= --quick), targets and "
                             "targets-quick (what issue 18's targets need; tools/bench/targets.py)")
    parser.add_argument("--json", dest="json_path", help="write all results here")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated sections: {','.join(SECTIONS)} (default: all, or the preset's)")
    parser.add_argument("--dir", default=None, help="parent directory for the ledgers (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the ledgers afterwards")
    parser.add_argument("--reads", choices=("shared", "disjoint"), default="shared",
                        help="read rule of every holder: the shared /bench/shared (default) or a "
                             "tree of its own (diagnostic)")
    args = parser.parse_args(argv)
    READS["mode"] = args.reads
    preset = args.preset or ("quick" if args.quick else "full")
    cfg = dict(PRESETS[preset])
    cfg["reads"] = args.reads
    sections = [s for s in args.only.split(",") if s] if args.only else list(cfg.get("sections", SECTIONS))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    root = tempfile.mkdtemp(prefix="scopeledger-bench-", dir=args.dir)
    started = time.time()
    results: dict[str, Any] = {
        "meta": {
            "mode": preset,
            "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            "machine": machine_info(),
            "source": source_info(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "directory": root,
            "config": cfg,
        }
    }
    _log(f"benchmark root {root} ({results['meta']['mode']} mode), scopeledger "
         f"{results['meta']['source']['commit'][:10]}"
         f"{' + uncommitted changes' if results['meta']['source']['dirty'] else ''}")
    load = os.getloadavg()[0]
    results["meta"]["loadavg"] = {"start": round(load, 2)}
    _log(f"load average (1 min) at the start: {load:.2f} on {os.cpu_count()} CPUs")
    if load > 0.5 * (os.cpu_count() or 1):
        _log(f"WARNING: load average {load:.2f} on {os.cpu_count()} CPUs: other processes are "
             "running; absolute figures will be low (interleaved ratios suffer less)")
    try:
        for name, fn in (("startup", section_startup), ("growth", section_growth),
                         ("contended", section_contended), ("fsync", section_fsync),
                         ("history", section_history), ("counts", section_counts)):
            if name in sections:
                t0 = time.perf_counter()
                cpu0 = psutil.cpu_times()
                own0 = _tree_cpu()
                load0 = os.getloadavg()[0]
                fn(cfg, root, results)
                dt = time.perf_counter() - t0
                results["meta"].setdefault("section_seconds", {})[name] = round(dt, 1)
                results["meta"].setdefault("load", {})[name] = _load_report(cpu0, own0, load0, dt)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    results["meta"]["duration_s"] = round(time.time() - started, 1)
    results["meta"]["loadavg"]["end"] = round(os.getloadavg()[0], 2)
    if cfg.get("issue5_targets", True):
        results["targets"] = evaluate_targets(results)
    results["targets_issue18"] = targets.evaluate(results)
    text = render(results)
    print(text)
    print(targets.render(results["targets_issue18"], results["meta"]))
    print(f"total {results['meta']['duration_s']:.0f} s; sections {results['meta'].get('section_seconds')}")
    for name, ld in results["meta"].get("load", {}).items():
        print(f"  {name}: machine busy {ld['machine_busy_cpus']:.2f} of {ld['cpus']} CPUs, ours "
              f"{ld['ours_cpus']:.2f}, others {ld['others_cpus']:.2f}"
              f" (loadavg {ld['loadavg_start']} → {ld['loadavg_end']})")
    if args.json_path:
        with open(args.json_path, "wb") as f:
            f.write(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
