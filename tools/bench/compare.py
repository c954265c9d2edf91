#!/usr/bin/env python
"""Two source trees of scopeledger side by side: register+release, open, replay and
verify, in interleaved rounds (issue 14's "nothing slower").

Usage (from anywhere; each tree is a checkout whose ``scopeledger`` package is
imported through ``PYTHONPATH``)::

    python tools/bench/compare.py OLD_TREE NEW_TREE [--rounds 7] [--holders 1000]
        [--pairs 300] [--history 5000] [--json out.json]

Every measurement runs in a fresh interpreter (``PYTHONPATH=<tree>``), so that the two
trees never share imported modules; rounds alternate which tree goes first. Workloads:

- ``pairs``: ``--pairs`` register+release pairs of fresh holders on a ledger holding
  ``--holders`` live holders (snapshots off during the pairs); mean, p50 and CPU time
  (``time.process_time``) per pair.
- ``open``: ``Ledger.open`` of a ledger of ``--history`` register+release pairs plus the
  live holders (snapshots every 10,000 events, as by default) and its first fold
  (``.seq``); wall and CPU.
- ``replay``: ``list(ledger.events())`` over that log; wall and CPU.
- ``verify``: ``ledger.verify(workers=1)``; wall and CPU.
- ``import``: ``import scopeledger`` in a fresh interpreter: its cumulative time as
  ``-X importtime`` reports it (``wall``) and the whole process's CPU time.

Each tree's ledgers are built by the old tree, once, and copied (the formats are the same
byte for byte; a tree that could not read them fails loudly). The figures are medians of
the rounds; the ratio is new / old (below 1: the new tree is faster). No figure is
asserted: on a shared machine, compare the CPU columns and p50 first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap

WORKER = textwrap.dedent(r"""
    import json, os, sys, time
    from scopeledger import Ledger, ScopeRule
    kind, path, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = {}
    if kind == "build":
        holders, history = int(sys.argv[4]), int(sys.argv[5])
        with Ledger.open(path) as led:
            for i in range(holders):
                led.register(f"h{i}", [ScopeRule(f"/bench/w{i}/src"), ScopeRule("/bench/shared", "read")])
            for j in range(history):
                led.register(f"t{j}", [ScopeRule(f"/bench/t{j}/src")])
                led.release(f"t{j}")
    elif kind == "pairs":
        led = Ledger.open(path, snapshot_every=10**9)
        led.refresh()
        times = []
        c0 = time.process_time()
        t0 = time.perf_counter()
        for j in range(pairs):
            a = time.perf_counter()
            led.register(f"p{os.getpid()}-{j}", [ScopeRule(f"/bench/p/{j}/src"), ScopeRule("/bench/shared", "read")])
            led.release(f"p{os.getpid()}-{j}")
            times.append(time.perf_counter() - a)
        out = {"mean": (time.perf_counter() - t0) / pairs, "cpu": (time.process_time() - c0) / pairs,
               "p50": sorted(times)[len(times) // 2]}
        led.close()
    else:
        c0, t0 = time.process_time(), time.perf_counter()
        led = Ledger.open(path, readonly=True)
        if kind == "open":
            n = led.seq
        elif kind == "replay":
            n = sum(1 for _ in led.events())
        elif kind == "verify":
            r = led.verify(workers=1)
            assert r.ok, r
            n = r.events
        out = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "n": n}
        led.close()
    print(json.dumps(out))
""")


def import_time(tree: str) -> dict:
    """``import scopeledger``'s cumulative time (``-X importtime``, µs -> s) and the
    process's CPU time, in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=tree)
    t0 = os.times()
    got = subprocess.run([sys.executable, "-X", "importtime", "-c", "import scopeledger"], env=env,
                         capture_output=True, text=True, cwd=tempfile.gettempdir(), check=True)
    t1 = os.times()
    cumulative = [int(line.split("|")[1]) for line in got.stderr.splitlines()
                  if line.rstrip().endswith("| scopeledger")]
    return {"wall": cumulative[-1] / 1e6,
            "cpu": (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)}


def run(tree: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    got = subprocess.run([sys.executable, "-c", WORKER, *args], env=env, capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    if got.returncode != 0:
        raise SystemExit(f"{tree} {args[0]} failed:\n{got.stderr}")
    return json.loads(got.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--holders", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--history", type=int, default=5000)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    work = tempfile.mkdtemp(prefix="sl-compare-")
    try:
        base = os.path.join(work, "base")
        run(trees["old"], "build", base, "0", str(args.holders), str(args.history))
        dirs = {}
        for name in trees:
            dirs[name] = os.path.join(work, name)
            shutil.copytree(base, dirs[name])
        load0 = os.getloadavg()
        res: dict[str, dict[str, list[dict]]] = {n: {} for n in trees}
        for r in range(args.rounds):
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for name in order:
                res[name].setdefault("import", []).append(import_time(trees[name]))
            for kind in ("pairs", "open", "replay", "verify"):
                for name in order:
                    res[name].setdefault(kind, []).append(run(trees[name], kind, dirs[name], str(args.pairs)))
        load1 = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {n: {k: {f: statistics.median(x[f] for x in v) for f in v[0] if f != "n"}
               for k, v in res[n].items()} for n in trees}
    print(f"rounds {args.rounds}, {args.holders} live holders, {args.history} pairs of history, "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    print(f"{'workload':<8} {'figure':<5} {'old':>12} {'new':>12} {'new/old':>8}")
    for kind in ("import", "pairs", "open", "replay", "verify"):
        for f in med["old"][kind]:
            o, n = med["old"][kind][f], med["new"][kind][f]
            unit, scale = ("µs", 1e6) if kind == "pairs" else ("ms", 1e3)
            print(f"{kind:<8} {f:<5} {o * scale:>9.1f} {unit} {n * scale:>9.1f} {unit} {n / o:>8.3f}")
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump({"args": vars(args), "trees": trees, "load": [load0, load1], "median": med,
                       "rounds": res}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
