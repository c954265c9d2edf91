#!/usr/bin/env python
"""Profile scopeledger's register+release hot path (pyinstrument, optionally cProfile).

Usage (from the repository root)::

    .venv/bin/python tools/bench/hotpath.py --holders 1000 --pairs 5000
    .venv/bin/python tools/bench/hotpath.py --holders 100000 --pairs 5000 --flat
    .venv/bin/python tools/bench/hotpath.py --holders 1000 --cprofile     # exact call counts

The live set is filled first (not profiled) with the same rules as ``run.py`` (a write
rule on ``/bench/w{i}/src`` and a read rule on the shared ``/bench/shared``), then
``--pairs`` register+release pairs of fresh holders are profiled. The snapshot the
library writes when due is part of the hot path; ``--no-snapshots`` sets
``snapshot_every`` past the run to look at the per-event path alone.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import run  # noqa: E402
from run import holder_rules, transient_rules  # noqa: E402

from scopeledger import Ledger, ScopeRule  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--holders", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--interval", type=float, default=0.001, help="pyinstrument sampling interval, s")
    ap.add_argument("--flat", action="store_true", help="also print the flat (self-time) view")
    ap.add_argument("--cprofile", action="store_true", help="cProfile instead of pyinstrument")
    ap.add_argument("--no-snapshots", action="store_true")
    ap.add_argument("--html", help="write pyinstrument's HTML report here")
    ap.add_argument("--reads", choices=("shared", "disjoint"), default="shared")
    args = ap.parse_args(argv)
    run.READS["mode"] = args.reads

    d = tempfile.mkdtemp(prefix="hotpath-")
    kw = {"snapshot_every": 10**9} if args.no_snapshots else {}
    led = Ledger.open(os.path.join(d, "l"), **kw)
    t0 = time.perf_counter()
    for i in range(args.holders):
        led.register(f"h{i}", [ScopeRule(p, perm, rec) for p, perm, rec in holder_rules(i)])
    print(f"filled {args.holders} holders in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    def work() -> float:
        t = time.perf_counter()
        for j in range(args.pairs):
            name = f"t{j}"
            led.register(name, [ScopeRule(p, perm, rec) for p, perm, rec in transient_rules(name)])
            led.release(name)
        return time.perf_counter() - t

    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        dt = work()
        prof.disable()
        print(f"{args.pairs} pairs: {dt / args.pairs * 1e6:.1f} µs/pair (under cProfile)")
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return 0

    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    profiler = Profiler(interval=args.interval)
    profiler.start()
    dt = work()
    profiler.stop()
    print(f"{args.pairs} pairs at {args.holders} live holders: {dt / args.pairs * 1e6:.1f} µs/pair "
          f"(under pyinstrument)")
    print(profiler.output(ConsoleRenderer(unicode=True, color=False, show_all=False, short_mode=False)))
    if args.flat:
        print(profiler.output(ConsoleRenderer(unicode=True, color=False, flat=True)))
    if args.html:
        with open(args.html, "w") as f:
            f.write(profiler.output_html())
    return 0


if __name__ == "__main__":
    sys.exit(main())
