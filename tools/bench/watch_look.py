#!/usr/bin/env python
"""What a ``GrantWatch`` (``Ledger.watch_grant``, ``ledger run``'s watch) costs per look:
the CPU time of its thread, per look and per line another process appends.

Usage (from the repository root)::

    .venv/bin/python tools/bench/watch_look.py [TREE ...] [--appends 2000] [--rounds 5]
        [--free] [--where DIR_OR_URL]

Each ``TREE`` is a source tree whose ``scopeledger`` package is imported through
``PYTHONPATH`` (default: this repository); the trees run in turns, round by round, each
measurement in a fresh interpreter. A measurement: a ledger (a new directory under
``--where``, or a new schema of the PostgreSQL URL ``--where``) where this process
registers ``job`` and watches it (its folded state dropped, as ``ledger run`` does), then
another process appends ``--appends`` lines (register and release of other holders,
one transaction each) and at last force-releases ``job``; the watch's ``on_lost`` ends the
measurement. Paced (the default), the appender waits, after each line, until the watch
has looked once more: one look per line, the case of a ledger appended to now and then;
``--free`` lets it append as fast as it can (the watch reads several lines per look).

The watch thread's CPU time is read from ``/proc/self/task/TID/schedstat`` (nanoseconds
on a CPU) before the first append and in ``on_lost``: it holds everything a look does
(the wake-up's poll and drain, the read, the checks). Figures are medians of the rounds;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trees import alternated, place, run_in  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APPENDER = r"""
import os, sys
from scopeledger import Ledger, ScopeRule
where, n, root, paced = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
go, done = int(sys.argv[5]), int(sys.argv[6])
with Ledger.open(where) as led:
    for i in range(n):
        if i % 2 == 0:
            led.register(f"x{i}", [ScopeRule(os.path.join(root, f"x{i}"), "write")])
        else:
            led.release(f"x{i - 1}")
        if paced:
            os.write(done, b"x")
            os.read(go, 1)
    led.release("job", force=True, reason="bench")
"""

WATCHER = r"""
import json, os, queue, subprocess, sys, time
from scopeledger import Ledger, ScopeRule
where, n, root, paced, appender = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def cpu_ns(tid):
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])

with Ledger.open(where, create=True) as led:
    a = led.register("job", [ScopeRule(os.path.join(root, "job"), "write")])
    led.unload()
    got = queue.Queue()

    def on_lost(ev):  # (in the watch's thread, which ends after it: its CPU time read here)
        with open("/proc/thread-self/schedstat") as f:
            got.put((ev, int(f.read().split()[0]), w.looks))

    w = led.watch_grant("job", a.token, on_lost)
    while w.looks < 1:
        time.sleep(0.001)
    tid = w._thread.native_id
    looks0, cpu0 = w.looks, cpu_ns(tid)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", appender, where, str(n), root, paced,
                              str(go_r), str(done_w)], pass_fds=(go_r, done_w))
    os.close(go_r); os.close(done_w)
    if paced == "1":
        for i in range(n):
            os.read(done_r, 1)
            want = looks0 + i + 1
            while w.looks < want:
                time.sleep(0.0002)
            os.write(go_w, b"x")
    ev, cpu1, looks1 = got.get(timeout=600)
    assert ev is not None and ev.type == "released", ev
    w._thread.join(60)
    assert child.wait() == 0
    print(json.dumps({"looks": looks1 - looks0, "cpu_ns": cpu1 - cpu0, "lines": n + 1}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="*", default=[ROOT])
    p.add_argument("--appends", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--free", action="store_true")
    p.add_argument("--where", default=None)
    args = p.parse_args()
    def measure(tree: str) -> dict[str, float]:
        ledger = place(args.where, "wl")
        return run_in(tree, WATCHER, [ledger, str(args.appends), "0" if args.free else "1", APPENDER], "wl")

    results = alternated(args.trees, args.rounds, measure)
    mode = "free" if args.free else "paced"
    print(f"### GrantWatch look cost ({mode}, {args.appends} lines appended by another process, "
          f"{args.rounds} rounds, medians)\n")
    print("| tree | looks | lines/look | CPU µs/look | CPU µs/line |")
    print("|---|---:|---:|---:|---:|")
    for tree, rs in results.items():
        looks = statistics.median(x["looks"] for x in rs)
        per_look = statistics.median(x["cpu_ns"] / x["looks"] / 1000 for x in rs)
        per_line = statistics.median(x["cpu_ns"] / x["lines"] / 1000 for x in rs)
        print(f"| {tree} | {looks:.0f} | {args.appends / looks:.2f} | {per_look:.1f} | {per_line:.1f} |")


if __name__ == "__main__":
    main()
