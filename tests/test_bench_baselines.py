"""The benchmark baselines in tools/bench refuse exactly what scopeledger refuses.

tools/bench/run.py compares scopeledger's register+release pair with the seed's design
(stdlib json and orjson), an indexed SQLite ledger and a lean one (issue 18). A ratio
between them means something only if they do the same work: here each is given the same
random workload (registrations with overlapping, nested, sibling and string-prefix
rules, duplicate names, releases of live and gone holders) and must grant, refuse and
release exactly as a scopeledger ledger does, and name as the owner of a conflict a
live holder whose write rule really overlaps.
"""

import os
import random
import sys

import pytest

from scopeledger import DuplicateHolder, Ledger, ScopeConflict, ScopeRule, UnknownHolder

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench")
sys.path.insert(0, BENCH)

import baselines  # noqa: E402

# Sibling names that sort just around "a/" and "a0" (the bounds of the SQL range scans),
# and far past them.
SEGMENTS = ["a", "b", "a-", "a0", "~", "é"]


def _workload(rng, root, steps):
    """Yield ("register", name, rules) / ("release", name) / ("query", rules)."""
    names = [f"n{i}" for i in range(12)]  # few names: duplicates and gone holders happen

    def rule():
        depth = rng.randint(0, 3)
        path = "/".join([root] + [rng.choice(SEGMENTS) for _ in range(depth)])
        return (path, rng.choice(("read", "write", "write")), rng.random() < 0.5)

    for _ in range(steps):
        x = rng.random()
        if x < 0.3:
            yield ("release", rng.choice(names))
        elif x < 0.45:
            yield ("query", [rule() for _ in range(rng.randint(1, 2))])
        else:
            yield ("register", rng.choice(names), [rule() for _ in range(rng.randint(1, 3))])


def _run_ledger(led, op):
    if op[0] == "register":
        try:
            led.register(op[1], [ScopeRule(*r) for r in op[2]])
        except DuplicateHolder:
            return ("duplicate", op[1])
        except ScopeConflict as e:
            return ("conflict", e.owner)
        return ("granted", None)
    if op[0] == "release":
        try:
            led.release(op[1])
        except UnknownHolder:
            return ("unknown", None)
        return ("released", None)
    e = led.find_conflict([ScopeRule(*r) for r in op[1]])
    return ("free", None) if e is None else ("conflict", e.owner)


def _run_baseline(b, op):
    if op[0] == "register":
        try:
            b.register(op[1], op[2])
        except baselines.Conflict as e:
            return ("duplicate", e.owner) if e.reason == "duplicate" else ("conflict", e.owner)
        return ("granted", None)
    if op[0] == "release":
        try:
            b.release(op[1])
        except KeyError:
            return ("unknown", None)
        return ("released", None)
    owner = b.find_conflict(op[1])
    return ("free", None) if owner is None else ("conflict", owner)


def _overlaps_write(request, held):
    return any(
        baselines.rules_overlap(p, rec, q, qrec)
        for p, perm, rec in request
        if perm == "write"
        for q, qperm, qrec in held
        if qperm == "write"
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_baselines_refuse_what_scopeledger_refuses(tmp_path, seed):
    root = os.path.join(os.path.realpath(tmp_path), "tree")  # no symlink on the way: the
    # ledger's canonical paths are then the baselines' lexical ones
    led = Ledger.open(str(tmp_path / "ledger"))
    others = {name: make(str(tmp_path / name)) for name, make in baselines.CHECKING.items()}
    live: dict[str, list] = {}
    outcomes: dict[str, int] = {}
    try:
        for i, op in enumerate(_workload(random.Random(seed), root, 250)):
            want = _run_ledger(led, op)
            for name, b in others.items():
                got = _run_baseline(b, op)
                assert got[0] == want[0], (i, op, name, got, want)
                if got[0] == "conflict":  # any live holder truly in the way will do
                    request = op[2] if op[0] == "register" else op[1]
                    assert _overlaps_write(request, live[got[1]]), (i, op, name, got)
            outcomes[want[0]] = outcomes.get(want[0], 0) + 1
            if want[0] == "granted":
                live[op[1]] = op[2]
            elif want[0] == "released":
                del live[op[1]]
            assert sorted(live) == sorted(h.name for h in led.holders())
    finally:
        led.close()
        for b in others.values():
            b.close()
    # The workload exercised every kind of answer.
    assert {"granted", "duplicate", "conflict", "released", "unknown", "free"} <= set(outcomes), outcomes
