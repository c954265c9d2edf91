#!/usr/bin/env python
"""What a waiter costs per refused look: the CPU time of a process waiting
(``register(..., wait=inf)``) for a scope a live holder keeps, while another
process appends unrelated lines.

Usage (from the repository root)::

    .venv/bin/python tools/bench/wait_look.py [TREE ...] [--appends 500] [--rounds 5]
        [--others 0] [--where DIR_OR_URL]

Each ``TREE`` is a source tree whose ``scopeledger`` package is imported through
``PYTHONPATH`` (default: this repository); the trees run in turns, round by round, each
measurement in a fresh interpreter. A measurement: a ledger (a new directory under
``--where``, or a new schema of the PostgreSQL URL ``--where``) where a holder process
registers ``job`` (and ``--others`` more holders inside the waiter's scope, each in the
way too), then the measured process waits for a write scope over all of them. Once it is
refused and in the queue, another process appends ``--appends`` lines (register and
release of holders elsewhere, one transaction each), paced: each line only after the
waiter's previous look (``scopeledger._wait.one_round`` wrapped to count looks and say
so), so that each line costs one refused look. Then the holder releases and the waiter is
granted.

The waiter's CPU time (``time.process_time``: every thread of the process, the wake-up's
too) is read at the end of its first look after the appender started and at the end of
the look after the last line; figures are medians of the rounds; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trees import alternated, place, run_in  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOLDER = r"""
import os, sys
from scopeledger import Ledger, ScopeRule
where, root, others = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Ledger.open(where, create=True) as led:
    led.register("job", [ScopeRule(os.path.join(root, "in", "job"), "write")])
    for i in range(others):
        led.register(f"other{i}", [ScopeRule(os.path.join(root, "in", f"o{i}"), "write")])
    print("held", flush=True)
    sys.stdin.read()  # (until the waiter closes it)
    led.release("job")
    for i in range(others):
        led.release(f"other{i}")
"""

APPENDER = r"""
import os, sys
from scopeledger import Ledger, ScopeRule
where, n, root, go, done = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
with Ledger.open(where) as led:
    for i in range(n):
        os.read(go, 1)
        if i % 2 == 0:
            led.register(f"x{i}", [ScopeRule(os.path.join(root, "out", f"x{i}"), "write")])
        else:
            led.release(f"x{i - 1}")
        os.write(done, b"x")
"""

WAITER = r"""
import json, os, subprocess, sys, time
import scopeledger._wait as w
from scopeledger import Ledger, ScopeRule
where, n, root, others, holder_src, appender_src = (sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]),
                                                   sys.argv[5], sys.argv[6])
holder = subprocess.Popen([sys.executable, "-c", holder_src, where, root, str(others)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == "held"
go_r, go_w = os.pipe()
done_r, done_w = os.pipe()
appender = subprocess.Popen([sys.executable, "-c", appender_src, where, str(n), root, str(go_r), str(done_w)],
                            pass_fds=(go_r, done_w))
os.close(go_r); os.close(done_w)
st = {"looks": 0, "sent": 0, "cpu0": None, "cpu1": None, "looks0": 0}
inner = w.one_round

def one_round(*args, **kw):
    out = inner(*args, **kw)
    if isinstance(out, w.Blocked):
        st["looks"] += 1
        if st["cpu0"] is None:
            st["cpu0"], st["looks0"] = time.process_time(), st["looks"]
        if st["sent"] > 0 and st["cpu1"] is None:
            os.read(done_r, 1)  # (the line is written: the next look after it is what counts)
        if st["sent"] < n:
            st["sent"] += 1
            os.write(go_w, b"x")
        elif st["cpu1"] is None:
            st["cpu1"] = time.process_time()
            st["looks1"] = st["looks"]
            holder.stdin.close()  # the holder releases: the waiter is granted
    return out

w.one_round = one_round
with Ledger.open(where) as led:
    a = led.register("waiter", [ScopeRule(os.path.join(root, "in"), "write")], wait=float("inf"))
assert a.name == "waiter"
assert appender.wait() == 0 and holder.wait() == 0
print(json.dumps({"from": w.__file__, "looks": st["looks1"] - st["looks0"],
                  "cpu_ns": round((st["cpu1"] - st["cpu0"]) * 1e9), "lines": n}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="*", default=[ROOT])
    p.add_argument("--appends", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--others", type=int, default=0)
    p.add_argument("--where", default=None)
    args = p.parse_args()
    def measure(tree: str) -> dict[str, float]:
        ledger = place(args.where, "wait")
        return run_in(tree, WAITER, [ledger, str(args.appends), str(args.others), HOLDER, APPENDER], "wait")

    results = alternated(args.trees, args.rounds, measure)
    print(f"### A waiter's CPU per refused look ({args.appends} lines appended by another process, "
          f"{1 + args.others} holder(s) in the way, {args.rounds} rounds, medians)\n")
    print("| tree | looks | CPU µs/look | CPU ms total |")
    print("|---|---:|---:|---:|")
    for tree, rs in results.items():
        looks = statistics.median(x["looks"] for x in rs)
        per_look = statistics.median(x["cpu_ns"] / x["looks"] / 1000 for x in rs)
        total = statistics.median(x["cpu_ns"] / 1e6 for x in rs)
        print(f"| {tree} | {looks:.0f} | {per_look:.1f} | {total:.1f} |")


if __name__ == "__main__":
    main()
