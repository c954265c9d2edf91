"""A wrapper records its release before it reaps its child, and waiters
stand back a moment for it (a fresh tester's finding: a waiter woken by
the holder's exit reclaimed it as ``process_gone`` in the moment between
``ledger run``/``spawn`` reaping COMMAND and recording the release, in
most rounds, and the audit read as a death instead of a release with its
exit status).

- ``ledger run`` and ``spawn``: a holder whose child exits when the test
  closes its stdin, a waiter in another process already waiting (known
  from its waiting notice / ``on_wait``, never a sleep), then the child
  exits: the grant ends ``released`` with the exit status (a code, zero or
  not, or a signal), never ``reclaimed``, round after round.
- The grace ends: a holder bound to a child whose parent lives but neither
  reaps it nor releases it: the waiter is granted once
  :data:`~scopeledger._wait.ZOMBIE_GRACE_SECONDS` have passed since the
  exit (a lower bound, never an upper one), and the log says ``reclaimed``,
  reason ``zombie``, with the exit status; a wait shorter than the grace
  takes none: it reclaims at once, as a request without ``wait`` does.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import CMD, PY, clean_env, lines_of
from scopeledger import Ledger, ScopeRule, WaitTimeout
from scopeledger._wait import ZOMBIE_GRACE_SECONDS

BOUND = 60.0  # seconds: a bound on any condition a test waits for, never a measure
ROUNDS = 10
BUSY = 1500  # register/release pairs of others between the waiter's notice and the exit (_busy)

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfds")

#: (shell command run after the test's word, what the release must record)
ENDINGS = [("exit 3", {"exit_code": 3}), ("exit 0", {"exit_code": 0}),
           ("kill -TERM $$", {"exit_signal": 15})]

#: Each waiter's grace is raised to BOUND: the verdict must not depend on
#: the holder's speed (its release comes within the grace on any machine).
LONG_GRACE = f"import scopeledger._wait as w; w.ZOMBIE_GRACE_SECONDS = {BOUND}\n"  # (waiters wait 2 * BOUND: longer)

#: ``ledger run`` with :data:`LONG_GRACE`.
CLI = [PY, "-c", LONG_GRACE + "import sys; from scopeledger.cli import main; sys.argv[0] = 'ledger'; "
                              "sys.exit(main())"]

#: A waiter in its own process (library ``register(wait=)``): says "waiting"
#: from ``on_wait``, then "granted" once it holds the scope, and releases it.
WAITER = LONG_GRACE + textwrap.dedent("""
    import sys
    from scopeledger import Ledger, ScopeRule
    led = Ledger.open(sys.argv[1])
    a = led.register("w", [ScopeRule(sys.argv[2], "write")], wait=120,  # (2 * BOUND: longer than the waiters' grace)
                     on_wait=lambda reason, refusal: print("waiting", flush=True))
    print("granted", flush=True)
    led.release("w", token=a.token)
""")

#: A holder by ``spawn`` (its child says "ready" once it runs: bound to the grant).
SPAWNER = textwrap.dedent("""
    import sys
    from scopeledger import Ledger, ScopeRule, spawn
    led = Ledger.open(sys.argv[1])
    s = spawn(led, "h", ["sh", "-c", sys.argv[3]], [ScopeRule(sys.argv[2], "write")], stdin=sys.stdin)
    s.wait()
""")


def _ending(led: str, name: str) -> dict[str, Any]:
    """The ``released``/``reclaimed`` event that ended ``name``'s grant."""
    with Ledger.open(led, readonly=True) as lib:
        ends = [e for e in lib.events() if e.type in ("released", "reclaimed") and e.data.get("name") == name]
    assert ends, f"{name}'s grant never ended"
    return {"type": ends[0].type, **ends[0].data}


def _next(q: Any, what: str) -> str:
    line = q.get(timeout=BOUND)
    assert line is not None, f"ended before {what}"
    return line


def _waiter(led: str, tree: Path, cli: bool) -> tuple[subprocess.Popen[str], Any]:
    """A waiter already in the queue: ``ledger run -w`` (its notice on
    stderr) or a library ``register(wait=)`` (its ``on_wait``)."""
    if cli:
        w = subprocess.Popen([*CLI, "--ledger", led, "run", "--name", "w", "--write", str(tree), "-w", str(2 * BOUND),
                              "--", "true"], stderr=subprocess.PIPE, text=True, env=clean_env())
        q = lines_of(w.stderr)
        assert "Blocking waiting" in _next(q, "its notice")
    else:
        w = subprocess.Popen([PY, "-c", WAITER, led, str(tree)], stdout=subprocess.PIPE, text=True,
                             env=clean_env())
        q = lines_of(w.stdout)
        assert _next(q, "its on_wait") == "waiting\n"
    return w, q


def _round(tmp: Path, i: int, holder_of: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    led, tree = str(tmp / f"led{i}"), tmp / f"tree{i}"
    tree.mkdir()
    command, expected = ENDINGS[i % len(ENDINGS)]
    holder = holder_of(led, tree, f"echo ready; read _; {command}")
    try:
        out = lines_of(holder.stdout)
        assert _next(out, "its child ran") == "ready\n"  # (COMMAND runs once bound to its grant)
        waiter, _ = _waiter(led, tree, cli=i % 2 == 0)
        _busy(led, tmp / f"other{i}")
        holder.stdin.close()  # the child exits
        assert holder.wait(BOUND) is not None
        assert waiter.wait(BOUND) == 0
    finally:
        holder.kill()
        holder.wait()
    return _ending(led, "h"), expected


def _busy(led: str, where: Path) -> None:
    """Others' changes to the ledger while the holder runs: a busy ledger,
    which the waiter follows as it changes and the holder folds only when
    it releases (so that, released after the reap, a waiter woken by the
    exit finds the process gone first in nearly every round)."""
    where.mkdir()
    with Ledger.open(led) as other:
        for k in range(BUSY):
            a = other.register(f"x{k}", [ScopeRule(str(where), "write")])
            other.release(a.name, token=a.token)


def _run_holder(led: str, tree: Path, script: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CMD, "--ledger", led, "run", "--name", "h", "--write", str(tree), "--",
                             "sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=clean_env())


def _spawn_holder(led: str, tree: Path, script: str) -> subprocess.Popen[str]:
    h = subprocess.Popen([PY, "-c", SPAWNER, led, str(tree), script], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=clean_env())
    return h


@pytest.mark.parametrize("holder_of", [_run_holder, _spawn_holder], ids=["ledger-run", "spawn"])
def test_a_waiter_woken_by_the_exit_leaves_the_release_to_the_wrapper(tmp_path: Path, holder_of: Any) -> None:
    got = []
    for i in range(ROUNDS):
        ending, expected = _round(tmp_path, i, holder_of)
        got.append((ending["type"], ending.get("reason"), ending.get("exit_code"), ending.get("exit_signal"),
                    expected))
    wrong = [g for g in got if g[0] != "released" or {k: v for k, v in zip(("exit_code", "exit_signal"), g[2:4])
                                                      if v is not None} != g[4]]
    assert not wrong, f"{len(wrong)} of {ROUNDS} rounds did not end in a release with the exit status: {got}"


def _zombie_holder(tmp_path: Path) -> tuple[Ledger, ScopeRule, subprocess.Popen[bytes], int]:
    """Holder 'h' bound to a child of this process that has exited and
    that this process (its parent, alive) neither reaps nor releases."""
    tree = tmp_path / "tree"
    tree.mkdir()
    lib = Ledger.open(str(tmp_path / "led"))
    rule = ScopeRule(str(tree), "write")
    child = subprocess.Popen(["sh", "-c", "read _; exit 5"], stdin=subprocess.PIPE)
    lib.register("h", [rule], pid=child.pid)
    fd = os.pidfd_open(child.pid)
    assert child.stdin is not None
    child.stdin.close()
    assert select.select([fd], [], [], BOUND)[0]  # exited, not reaped: a zombie
    return lib, rule, child, fd


def test_the_grace_ends_and_the_zombie_is_reclaimed_with_its_status(tmp_path: Path) -> None:
    lib, rule, child, fd = _zombie_holder(tmp_path)
    exited = time.monotonic()  # (after the exit: the grace is counted from a later look)
    try:
        told: list[str] = []
        a = lib.register("w", [rule], wait=BOUND, on_wait=lambda reason, refusal: told.append(reason))
        waited = time.monotonic() - exited
        assert waited >= ZOMBIE_GRACE_SECONDS, waited
        assert told and f"'h' has exited; waiting up to {ZOMBIE_GRACE_SECONDS:g} s for its parent " \
                        f"(pid {os.getpid()}) to record its release" in told[0], told
        ending = _ending(str(tmp_path / "led"), "h")
        assert (ending["type"], ending["reason"], ending.get("exit_code")) == ("reclaimed", "zombie", 5)
        lib.release("w", token=a.token)
    finally:
        os.close(fd)
        child.wait()
        lib.close()


@pytest.mark.parametrize("wait", [0, ZOMBIE_GRACE_SECONDS / 4], ids=["without-wait", "wait-shorter-than-grace"])
def test_a_request_that_cannot_wait_out_the_grace_reclaims_the_zombie_at_once(tmp_path: Path, wait: float) -> None:
    # (a wait shorter than the grace timed out where wait=0 was granted: a fresh tester's finding)
    lib, rule, child, fd = _zombie_holder(tmp_path)
    try:
        a = lib.register("w", [rule], wait=wait)
        ending = _ending(str(tmp_path / "led"), "h")
        assert (ending["type"], ending["reason"], ending.get("exit_code")) == ("reclaimed", "zombie", 5)
        lib.release("w", token=a.token)
    finally:
        os.close(fd)
        child.wait()
        lib.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
