"""Ledgers with a known, varied history for the timeline and export tests
(and for looking at pictures: ``python tests/audit_support.py DIR EVENTS``).

Holders are bound to a few real helper processes; the probe given to
``reclaim_stale`` says which helper counts as gone, a zombie or reused, so
that reclaims of every reason happen without killing anything. Times come
from a fake clock (a deterministic number of milliseconds per event).
"""

from __future__ import annotations

import random
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from scopeledger import Ledger, Liveness, ProcessIdentity, Refused, ScopeRule

REASONS = (Liveness.GONE, Liveness.ZOMBIE, Liveness.PID_REUSED)


@contextmanager
def helpers(n: int = 4) -> Iterator[list[int]]:
    """``n`` sleeping processes to bind holders to; the first stays alive,
    the others are the dead of :data:`REASONS`, for the probe only."""
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def build(d: Path, events: int, pids: list[int], seed: int = 7, teams: int = 4,
          workers_per_team: int = 3, start_ns: int = 1_764_426_000_000_000_000) -> Ledger:
    """A ledger of about ``events`` events: teams registered at top level,
    workers delegated from them (some reserved, then attached), released,
    reclaimed for each reason, teams released with their workers
    re-parented, and requests refused. Deterministic for a seed (but for
    the pids)."""
    rng = random.Random(seed)
    now = [start_ns]

    def clock() -> int:
        now[0] += rng.randint(1, 400) * 1_000_000
        return now[0]

    fate = {pids[0]: Liveness.ALIVE}
    for pid, reason in zip(pids[1:], REASONS, strict=False):  # fewer helpers than reasons: the first reasons
        fate[pid] = reason

    def probe(ident: ProcessIdentity) -> Liveness:
        return fate.get(ident.pid, Liveness.ALIVE)

    led = Ledger.open(d, clock=clock, probe=lambda ident: Liveness.ALIVE)
    serial = 0
    while led.seq < events:
        live = led.holders()
        tops = [a for a in live if a.parent is None and a.name.startswith("team")]
        roll = rng.random()
        serial += 1
        if len(tops) < teams and roll < 0.3:
            led.register(f"team{serial}", [ScopeRule(f"/w/team{serial}", "write", True)], pid=pids[0])
        elif tops and roll < 0.65:
            t = rng.choice(tops)
            kids = [a for a in live if a.parent == t.name]
            if len(kids) >= workers_per_team:
                victim = rng.choice(kids)
                led.release(victim.name)
                continue
            pid = rng.choice(pids)
            reserved = rng.random() < 0.3
            a = led.delegate(t.name, f"w{serial}",
                             [ScopeRule(f"{t.rules[0].path}/w{serial}", "write", True)],
                             pid=pids[0] if reserved else pid, reserved=reserved)
            if reserved:
                led.attach(a.name, pid=pid, token=a.token)
        elif tops and roll < 0.75:
            t = rng.choice(tops)
            try:  # a newcomer asking for a team's whole tree: refused, owner chain recorded
                led.register(f"newcomer{serial}", [ScopeRule(t.rules[0].path, "write", True)], pid=pids[0])
            except Refused:
                pass
        elif roll < 0.85:
            led.reclaim_stale(probe=probe)
        elif tops and roll < 0.9:
            led.release(rng.choice(tops).name)
        else:
            workers = [a for a in live if not a.name.startswith("team")]  # re-parented ones too
            if workers:
                led.release(rng.choice(workers).name)
    return led


if __name__ == "__main__":
    with helpers() as pids:
        build(Path(sys.argv[1]), int(sys.argv[2]), pids).close()


def build_story(d: Path, pids: list[int]) -> Ledger:
    """A short history with one of each thing, one second apart (from
    ``start`` 2025-11-29T14:20:00Z), with :func:`helpers` pids:

    1 registered rt (write /r), 2 delegated mid from rt (reserved),
    3 attached mid to pids[1], 4 delegated leaf from mid (pids[2]),
    5 registered other (write /o), 6 refused newcomer from rt (/r/mid is
    mid's), 7 released other, 8-9 reclaimed mid (process_gone: leaf
    re-parented to rt) and leaf (zombie), 10 delegated newcomer from rt;
    rt and newcomer are still held.
    """
    now = [1_764_426_000 * 10**9]

    def clock() -> int:
        now[0] += 10**9
        return now[0]

    fate = {pids[1]: Liveness.GONE, pids[2]: Liveness.ZOMBIE}
    led = Ledger.open(d, clock=clock, probe=lambda ident: Liveness.ALIVE)
    led.register("rt", [ScopeRule("/r", "write", True)], pid=pids[0])
    mid = led.delegate("rt", "mid", [ScopeRule("/r/mid", "write", True)], pid=pids[0], reserved=True)
    led.attach("mid", pid=pids[1], token=mid.token)
    led.delegate("mid", "leaf", [ScopeRule("/r/mid/leaf", "write", True)], pid=pids[2])
    led.register("other", [ScopeRule("/o", "write", True)], pid=pids[0])
    try:
        led.delegate("rt", "newcomer", [ScopeRule("/r/mid", "write", True)], pid=pids[0])
    except Refused:
        pass
    else:  # pragma: no cover
        raise AssertionError("newcomer was not refused")
    led.release("other")
    assert sorted(led.reclaim_stale(probe=lambda ident: fate.get(ident.pid, Liveness.ALIVE))) == ["leaf", "mid"]
    led.delegate("rt", "newcomer", [ScopeRule("/r/mid", "write", True)], pid=pids[0])
    assert led.seq == 10, led.seq
    return led


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Ledger, list[int]]]:
    """:func:`build_story`'s ledger, its directory and the helper pids (the
    helpers live as long as the module's tests)."""
    d = tmp_path_factory.mktemp("story") / "ledger"
    with helpers(3) as pids:
        led = build_story(d, pids)
        yield d, led, pids
        led.close()
