#!/usr/bin/env python
"""Issue 18's targets, each with its figure from one run, PASS or MISS.

Usage (from the repository root)::

    .venv/bin/python tools/bench/targets.py --json targets.json   # the figures the targets need, ~3-4 min
    .venv/bin/python tools/bench/targets.py --quick               # tiny sizes, well under a minute (CI)

This runs ``run.py``'s sections with only what the targets need (``run.TARGETS`` /
``run.TARGETS_QUICK``: start-up, pairs at 1,000 live holders against the floor, the seed's
design with orjson and the lean SQLite, 1 and 4 contending processes, a 1M-event history,
memory per holder, instruction and syscall counts) and prints their tables, then the
targets table. ``run.py`` (all sections, all backends) prints the same table at its end.
Options other than ``--quick`` go to ``run.py`` (``--json``, ``--dir``, ``--keep``).

A verdict is taken from figures that load on other cores moves least: ratios measured side
by side in one run, of p50 and CPU time per operation (not the mean), events per CPU
second for replay and verify; instruction and syscall counts (``counts.py``) are printed
beside the pair ratios. In ``--quick`` mode the sizes are too small for the verdicts to
mean anything; it keeps the tools working. The exit status is 0 whatever the verdicts.
"""

from __future__ import annotations

import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

#: Issue 18's targets (the table in the issue), in its order.
TARGETS = (
    ("startup", "`ledger run -- true`, whole process, CPU", "≤ 3× `python3 -c pass`"),
    ("startup", "`ledger --version`, CPU", "≤ 2× `python3 -c pass`"),
    ("startup", "`ledger --help`, CPU", "≤ 2× `python3 -c pass`"),
    ("pairs", "register+release pair, {n} live holders", "≤ 3× the raw floor (p50 and CPU)"),
    ("pairs", "the same", "≥ 3× a lean SQLite WAL doing the same job (p50 and CPU)"),
    ("pairs", "the same", "≥ 200× the seed's design with orjson (p50 and CPU)"),
    ("contended", "4 processes contending", "aggregate ≥ 0.7× one process"),
    ("contended", "the same", "p99 lock wait ≤ 5 ms"),
    ("history", "`events()` / replay", "≥ 500k events/s on one core"),
    ("history", "`verify()`", "≥ 300k events/s on one core, more with workers"),
    ("memory", "memory per live holder (2 rules)", "≤ 1 KB"),
)


def _pair_size(pairs: dict[str, Any]) -> int:
    sizes = sorted(int(s) for s in pairs["scopeledger"])
    return 1000 if 1000 in sizes else sizes[-1]


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: ``figure``, ``target``, ``measured`` (text) and ``pass``
    (True, False, or None when the run did not measure it)."""
    rows: list[dict[str, Any]] = []

    def add(figure: str, target: str, measured: str, ok: bool | None) -> None:
        rows.append({"figure": figure, "target": target, "measured": measured, "pass": ok})

    st = results.get("startup", {}).get("commands")
    startup = ("ledger run -- true", "ledger --version", "ledger --help")
    for (_, figure, target), label, limit in zip(TARGETS[:3], startup, (3, 2, 2), strict=True):
        if not st:
            add(figure, target, "not measured (section startup)", None)
            continue
        r, base = st[label], st["python3 -c pass"]
        add(figure, target, f"{r['vs_python']:.2f}× ({r['cpu_ms']:.1f} vs {base['cpu_ms']:.1f} ms CPU, medians)",
            r["vs_python"] <= limit)

    pairs = results.get("pairs")
    counts = results.get("counts", {}).get("backends", {})
    if pairs and "scopeledger" in pairs:
        n = _pair_size(pairs)
        led = pairs["scopeledger"][str(n)]
        first = f"register+release pair, {n:,} live holders"

        def counted(other: str, over: bool) -> str:
            a, b = counts.get("scopeledger", {}), counts.get(other, {})
            out = []
            for key, what in (("instructions_per_pair", "instructions"), ("syscalls_per_pair", "syscalls")):
                if a.get(key) and b.get(key):
                    x = a[key] / b[key] if over else b[key] / a[key]
                    out.append(f"{what} {x:.2f}× ({a[key]:,.0f} vs {b[key]:,.0f})" if what == "instructions"
                               else f"{what} {x:.2f}× ({a[key]:.1f} vs {b[key]:.1f})")
            return "; " + ", ".join(out) if out else "; instructions and syscalls not counted"

        for other, label, limit, over in (("floor", "the raw floor", 3, True),
                                          ("sqlite-lean", "a lean SQLite WAL", 3, False),
                                          ("seed-orjson", "the seed's design with orjson", 200, False)):
            figure = first if other == "floor" else "the same"
            if str(n) not in pairs.get(other, {}):
                add(figure, f"{'≤' if over else '≥'} {limit}× {label}", f"not measured (backend {other})", None)
                continue
            o = pairs[other][str(n)]
            mean = led["mean_us"] / o["mean_us"] if over else o["mean_us"] / led["mean_us"]
            for key, what in (("p50_us", "p50"), ("cpu_us", "CPU")):
                x = led[key] / o[key] if over else o[key] / led[key]
                extra = f"; mean {mean:,.2f}×" if what == "p50" else counted(other, over)
                add(figure if what == "p50" else "the same", f"{'≤' if over else '≥'} {limit}× {label} ({what})",
                    f"{x:,.2f}× ({led[key]:,.1f} vs {o[key]:,.1f} µs{extra})", x <= limit if over else x >= limit)
    else:
        for _, figure, target in TARGETS[3:6]:
            add(figure.format(n="1,000"), target, "not measured (section growth)", None)

    c = results.get("contended", {}).get("backends", {}).get("scopeledger")
    if c:
        procs = max(int(k) for k in c)
        one, many = c["1"], c[str(procs)]
        x = many["pairs_per_s"] / one["pairs_per_s"]
        add(f"{procs} processes contending", "aggregate ≥ 0.7× one process",
            f"{x:.2f}× ({many['pairs_per_s']:,.0f} vs {one['pairs_per_s']:,.0f} pairs/s; CPU/pair "
            f"{many['cpu_us_per_pair']:,.0f} vs {one['cpu_us_per_pair']:,.0f} µs)", x >= 0.7)
        probed = many["lock_acquisitions"] >= many["pairs"]
        add("the same", "p99 lock wait ≤ 5 ms",
            f"{many['wait_ms']['p99']:.2f} ms (p50 {many['wait_ms']['p50']:.3f}, max {many['wait_ms']['max']:.1f} ms)"
            if probed else "lock waits not observed (Store.acquire not used any more?)",
            probed and many["wait_ms"]["p99"] <= 5)
    else:
        for _, figure, target in TARGETS[6:8]:
            add(figure, target, "not measured (section contended)", None)

    h = results.get("history")
    if h:
        size = max(int(s) for s in h)
        r = h[str(size)]["replay"]
        ev = r["events"]
        rate = r.get("events_api_events_per_cpu_s")
        add("`events()` / replay", "≥ 500k events/s on one core",
            f"{rate:,.0f} events/CPU-s ({ev:,} events; wall {r['events_api_events_per_s']:,.0f}/s; "
            f"orjson parse alone {r.get('parse_events_per_cpu_s') or 0:,.0f}/CPU-s)",
            rate is not None and rate >= 500_000)
        rate = r.get("verify1_events_per_cpu_s")
        add("`verify()`", "≥ 300k events/s on one core, more with workers",
            f"{rate:,.0f} events/CPU-s in one process (wall {r['verify1_events_per_s']:,.0f}/s); "
            f"{r['verify_events_per_s']:,.0f}/s wall with {r.get('verify_workers', 1)} workers",
            rate is not None and rate >= 300_000)
    else:
        for _, figure, target in TARGETS[8:10]:
            add(figure, target, "not measured (section history)", None)

    m = results.get("memory")
    sizes = [int(s) for s in (m or {}) if s != "marginal"]
    if sizes:
        r = m[str(max(sizes))]
        add("memory per live holder (2 rules)", "≤ 1 KB",
            f"{r['tracemalloc_per_holder']:,.0f} B (tracemalloc, {max(sizes):,} holders;"
            f" RSS {r['rss_per_holder']:,.0f} B)",
            r["tracemalloc_per_holder"] <= 1024)
    else:
        add("memory per live holder (2 rules)", "≤ 1 KB", "not measured (section growth)", None)
    return rows


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The targets table, with the run's mode, commit and load."""
    import run

    verdict = {True: "**PASS**", False: "**MISS**", None: "—"}
    loads = meta.get("loadavg", {})
    note = (f"{meta.get('mode', '?')} mode, scopeledger {str(meta.get('source', {}).get('commit', '?'))[:10]}"
            f"{' + uncommitted changes' if meta.get('source', {}).get('dirty') else ''}; "
            f"load average (1 min) {loads.get('start', '?')} at the start, {loads.get('end', '?')} at the end, "
            f"on {os.cpu_count()} CPUs.")
    if meta.get("mode") != "full" and meta.get("mode") != "targets":
        note += " Quick mode: sizes far below the targets'; the verdicts mean nothing."
    return run._table("Targets (issue 18)", ["figure", "target", "measured", ""],
                      [[r["figure"], r["target"], r["measured"], verdict[r["pass"]]] for r in rows], note)


def main(argv: list[str] | None = None) -> int:
    import run

    argv = list(sys.argv[1:] if argv is None else argv)
    preset = "targets-quick" if "--quick" in argv else "targets"
    argv = [a for a in argv if a != "--quick"]
    return run.main(["--preset", preset] + argv)


if __name__ == "__main__":
    sys.exit(main())
