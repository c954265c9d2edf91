"""Waiting for a scope in the library: ``register``/``delegate``/``hold`` with
``wait=`` (scopeledger/_wait.py). Real processes hold, wait, die and are
killed; every wait is on a condition (a ticket in the queue, a line in the
log), never on a sleep."""

import contextlib
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from scopeledger import (
    Allocation,
    DelegationError,
    DuplicateHolder,
    Ledger,
    ScopeConflict,
    UnknownHolder,
    WaitTimeout,
)
from scopeledger._filetickets import QUEUE_DIR

from helpers import W, asleep_behind, in_thread, queued_names, wait_for

BOUND = 60.0  # generous bound on any condition a test waits for


def events(led):
    with open(os.path.join(led.path, "events.jsonl"), "rb") as f:
        return [orjson.loads(line) for line in f]


def grants(led, name=None):
    out = []
    for ev in events(led):
        if ev["type"] in ("registered", "delegated") and (name is None or ev["holder"]["name"] == name):
            out.append(ev)
    return out


def tickets(ledger_dir):
    try:
        return sorted(n for n in os.listdir(os.path.join(ledger_dir, QUEUE_DIR)) if n.isdigit())
    except FileNotFoundError:
        return []


def until(cond, what):
    wait_for(cond, BOUND, what)


WAITER = textwrap.dedent("""
    import json, sys, time
    from scopeledger import Ledger, ScopeRule, WaitTimeout
    ledger_dir, name, paths, wait, parent, hold_for = json.loads(sys.argv[1])
    led = Ledger.open(ledger_dir)
    rules = [ScopeRule(p, "write") for p in paths]
    try:
        if parent is None:
            a = led.register(name, rules, wait=wait)
        else:
            a = led.delegate(parent, name, rules, wait=wait)
    except WaitTimeout as exc:
        print(json.dumps({"timeout": str(exc), "in_the_way": list(exc.in_the_way)}), flush=True)
        sys.exit(3)
    print(json.dumps({"token": a.token}), flush=True)
    if hold_for == "stdin":
        sys.stdin.read()
    led.release(name, token=a.token)
""")


def waiter(ledger_dir, name, paths, wait=60, parent=None, hold_for=None):
    return subprocess.Popen([sys.executable, "-c", WAITER,
                             json.dumps([ledger_dir, name, paths, wait, parent, hold_for])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def finish(p):
    """Let a waiter or holder process go (its stdin closed) and reap it."""
    p.stdin.close()
    p.wait()


def holder_process(ledger_dir, name, paths):
    """A process that registers and holds until its stdin closes (or it is killed)."""
    code = textwrap.dedent("""
        import json, sys
        from scopeledger import Ledger, ScopeRule
        d, name, paths = json.loads(sys.argv[1])
        led = Ledger.open(d)
        a = led.register(name, [ScopeRule(p, "write") for p in paths])
        print(a.token, flush=True)
        sys.stdin.read()
    """)
    p = subprocess.Popen([sys.executable, "-c", code, json.dumps([ledger_dir, name, paths])],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip().isdigit()
    return p


def test_a_waiter_is_granted_when_the_holder_in_its_way_releases(ledger, ledger_dir, tmp_path, caplog):
    src = str(tmp_path / "src")
    h = holder_process(ledger_dir, "builder", [src])
    try:
        caplog.set_level(logging.INFO, logger="scopeledger")
        import threading

        got = {}

        def wait():
            got["alloc"] = ledger.register("tests", [W(src)], wait=BOUND)

        t = threading.Thread(target=wait)
        t.start()
        until(lambda: len(tickets(ledger_dir)) == 1, "the waiter's ticket")
        # The waiting notice names the holder in the way.
        until(lambda: any("waits up to" in r.getMessage() for r in caplog.records), "the notice")
        notice = [r.getMessage() for r in caplog.records if "waits up to" in r.getMessage()][0]
        assert "holder 'tests' waits up to 60s for its scope" in notice and "'builder'" in notice
        assert "alloc" not in got
        h.stdin.close()  # builder releases... no: it exits; its scope is reclaimed or released
        t.join(BOUND)
        assert not t.is_alive()
        assert got["alloc"].name == "tests"
        assert tickets(ledger_dir) == []
    finally:
        h.kill()
        h.wait()


def test_a_timed_out_wait_names_the_holders_and_is_never_granted_afterwards(ledger, ledger_dir, tmp_path):
    src = str(tmp_path / "src")
    h = holder_process(ledger_dir, "builder", [src])
    try:
        with pytest.raises(WaitTimeout) as info:
            ledger.register("tests", [W(src + "/t")], wait=0.2)
        exc = info.value
        assert isinstance(exc, TimeoutError) and isinstance(exc.refusal, ScopeConflict)
        assert exc.in_the_way == ("builder",) and exc.name == "tests" and exc.waited == 0.2
        assert str(exc).startswith("timed out after 0.2s waiting for the scope of 'tests': write ")
        assert "'builder'" in str(exc)
        assert tickets(ledger_dir) == []
    finally:
        finish(h)
    # The scope is free now: nothing was left waiting that could take it.
    after = ledger.seq
    assert ledger.register("other", [W(src)]).name == "other"
    assert grants(ledger, "tests") == []
    assert ledger.seq > after


def test_waiters_are_granted_in_the_order_they_joined_the_queue(ledger, ledger_dir, tmp_path):
    src = str(tmp_path / "src")
    ledger.register("holder", [W(src)])
    names = [f"w{i}" for i in range(5)]
    procs = []
    try:
        # Each waits for a part of the held scope (they all overlap each other).
        for i, n in enumerate(names):
            procs.append(waiter(ledger_dir, n, [src + "/" if i % 2 else src], hold_for="stdin"))
            until(lambda k=i + 1: len(tickets(ledger_dir)) == k, f"{n}'s ticket")
        ledger.release("holder")
        order = []
        for p, n in zip(procs, names, strict=True):
            assert json.loads(p.stdout.readline())["token"] > 0
            order.append(n)
            p.stdin.close()  # releases; the next in line is granted
        for p in procs:
            assert p.wait(BOUND) == 0
        assert [g["holder"]["name"] for g in grants(ledger) if g["holder"]["name"] != "holder"] == names
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.fixture
def first_ahead(ledger, ledger_dir, tmp_path):
    """``(a, first)``: the waiting process ``first`` asked for scopes ``a``
    and ``b`` before anyone else; ``a`` is free now ('hold-a' let it go),
    ``b`` still held by 'hold-b' (released at the end if still held), so
    ``first`` waits, ahead of any newcomer for ``a``."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ledger.register("hold-a", [W(a)])
    ledger.register("hold-b", [W(b)])
    first = waiter(ledger_dir, "first", [a, b], hold_for="stdin")
    try:
        until(lambda: len(tickets(ledger_dir)) == 1, "first's ticket")
        ledger.release("hold-a")
        yield a, first
    finally:
        for n in ("newcomer", "hold-b"):  # (a failed run: let 'first' be granted and end)
            with contextlib.suppress(UnknownHolder):
                ledger.release(n)
        finish(first)


def test_a_newcomer_that_waits_stands_back_for_an_earlier_waiter(ledger, first_ahead):
    """A free scope is not taken by a waiting newcomer while an earlier
    waiter for it is alive (the earlier one waits for a second holder)."""
    a, first = first_ahead
    # 'a' is free, but 'first' asked for it before: the newcomer waits.
    with pytest.raises(WaitTimeout) as info:
        ledger.register("newcomer", [W(a)], wait=0.3)
    assert info.value.refusal is None and info.value.in_the_way == ("first",)
    assert "waiting behind 'first'" in str(info.value)
    # Without wait= the queue is not looked at (the hot path is unchanged).
    ledger.release(ledger.register("plain", [W(a)]).name)
    ledger.release("hold-b")
    assert json.loads(first.stdout.readline())["token"] > 0


def test_a_killed_waiter_does_not_hold_up_the_queue(ledger, ledger_dir, tmp_path):
    src = str(tmp_path / "src")
    ledger.register("holder", [W(src)])
    dead = waiter(ledger_dir, "dead", [src])
    until(lambda: len(tickets(ledger_dir)) == 1, "the ticket of the waiter to kill")
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    live = waiter(ledger_dir, "live", [src], hold_for="stdin")
    try:
        until(lambda: _queued(ledger_dir, "live"), "live's ticket")
        ledger.release("holder")
        assert json.loads(live.stdout.readline())["token"] > 0
        assert grants(ledger, "dead") == []
    finally:
        finish(live)
    assert tickets(ledger_dir) == []  # the dead waiter's ticket was removed on the way


def _queued(ledger_dir, name):
    d = os.path.join(ledger_dir, QUEUE_DIR)
    for t in tickets(ledger_dir):
        try:
            with open(os.path.join(d, t), "rb") as f:
                if orjson.loads(f.read())["name"] == name:
                    return True
        except (OSError, ValueError):
            pass
    return False


def test_a_stopped_waiter_at_the_head_holds_back_only_contending_waiters_and_is_named(
        ledger, ledger_dir, tmp_path, caplog):
    """By design (the module docstring, ARCHITECTURE.md): a waiter stopped
    with SIGSTOP keeps its ticket; a later waiter for an overlapping scope
    stands back for it and names it with its pid, while a request without
    ``wait`` and a waiter for another scope pass it."""
    src, other = str(tmp_path / "src"), str(tmp_path / "other")
    h = ledger.register("holder", [W(src)])
    first = waiter(ledger_dir, "first", [src], wait=math.inf)
    try:
        until(lambda: _queued(ledger_dir, "first"), "first's ticket")
        first.send_signal(signal.SIGSTOP)
        ledger.release("holder", token=h.token)
        caplog.set_level(logging.INFO, logger="scopeledger")
        with pytest.raises(WaitTimeout) as info:
            ledger.register("second", [W(src + "/x")], wait=0.2)
        named = f"waiting behind 'first' (pid {first.pid})"
        assert info.value.in_the_way == ("first",) and named in str(info.value)
        assert any(named in r.getMessage() for r in caplog.records if "waits up to" in r.getMessage())
        assert ledger.register("elsewhere", [W(other)], wait=0.2).name == "elsewhere"
        plain = ledger.register("plain", [W(src)])  # no wait=: the queue is not looked at
        assert grants(ledger, "second") == [] and grants(ledger, "first") == []
        ledger.release("plain", token=plain.token)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_a_holder_in_the_way_that_dies_is_reclaimed_for_the_waiter(ledger, ledger_dir, tmp_path):
    src = str(tmp_path / "src")
    h = holder_process(ledger_dir, "doomed", [src])
    w = waiter(ledger_dir, "next", [src], hold_for="stdin")
    try:
        until(lambda: _queued(ledger_dir, "next"), "the waiter's ticket")
        h.kill()
        h.wait()
        assert json.loads(w.stdout.readline())["token"] > 0
        reclaimed = [e for e in events(ledger) if e["type"] == "reclaimed"]
        assert [e["name"] for e in reclaimed] == ["doomed"]
    finally:
        finish(w)


def test_a_delegation_waits_for_a_sibling(ledger, ledger_dir, tmp_path):
    src = str(tmp_path / "src")
    ledger.register("parent", [W(src)])
    ledger.delegate("parent", "sib", [W(src + "/x")])
    w = waiter(ledger_dir, "child", [src + "/x/y"], parent="parent", hold_for="stdin")
    try:
        until(lambda: _queued(ledger_dir, "child"), "the waiter's ticket")
        ledger.release("sib")
        assert json.loads(w.stdout.readline())["token"] > 0
    finally:
        finish(w)
    assert grants(ledger, "child")[0]["holder"]["parent"] == "parent"


def test_a_delegation_from_the_holder_an_earlier_waiter_waits_for_is_not_held_back(ledger, ledger_dir, tmp_path):
    """An earlier waiter for the parent's scope cannot be granted before the
    parent lets go: the parent's own delegation does not stand back for it
    (that would deadlock)."""
    src = str(tmp_path / "src")
    ledger.register("parent", [W(src)])
    w = waiter(ledger_dir, "outsider", [src], wait=BOUND)
    try:
        until(lambda: _queued(ledger_dir, "outsider"), "the outsider's ticket")
        alloc = ledger.delegate("parent", "child", [W(src + "/c")], wait=BOUND)
        assert alloc.parent == "parent"
    finally:
        w.kill()
        w.wait()


def test_a_sibling_that_waits_stands_back_for_an_earlier_sibling_waiter(ledger, ledger_dir, tmp_path):
    """Waiters delegating from one parent are not kept out by that parent
    (the owner they delegate from), so the later stands back for the
    earlier. (A fresh tester's finding: each skipped every earlier sibling
    as one 'waiting for its own line of delegation', since the parent's
    scope overlaps theirs, and the first to look after a release took the
    scope: the newcomer here was granted at once.)"""
    src = str(tmp_path / "src")
    a, b = src + "/a", src + "/b"
    ledger.register("pod", [W(src)])
    ledger.delegate("pod", "hold-a", [W(a)])
    ledger.delegate("pod", "hold-b", [W(b)])
    first = waiter(ledger_dir, "first", [a, b], parent="pod", hold_for="stdin")
    try:
        until(lambda: _queued(ledger_dir, "first"), "first's ticket")
        ledger.release("hold-a")
        # 'a' is free, but 'first' (waiting for 'b' too) asked for it before.
        with pytest.raises(WaitTimeout) as info:
            ledger.delegate("pod", "newcomer", [W(a)], wait=0.3)
        assert info.value.refusal is None and info.value.in_the_way == ("first",)
        ledger.release("hold-b")
        assert json.loads(first.stdout.readline())["token"] > 0
        assert grants(ledger, "newcomer") == []
    finally:
        for n in ("newcomer", "hold-b"):  # (a failed run: let 'first' be granted and end)
            with contextlib.suppress(UnknownHolder):
                ledger.release(n)
        finish(first)


@pytest.mark.parametrize("parent", ["pod", "pod/team"])
def test_siblings_waiting_to_delegate_from_one_parent_are_granted_in_the_order_they_joined(
        ledger, ledger_dir, tmp_path, parent):
    """Five processes wait to delegate from one parent (a top-level holder,
    or one delegated from it: two levels), each started once the one before
    it has its ticket, for overlapping parts of what a sibling holds: each
    grant in the log goes to the next ticket in the queue's order (before
    the fix the order was whoever looked first after a release)."""
    src = str(tmp_path / "src")
    out = src + "/out"
    ledger.register("pod", [W(src)])
    if parent == "pod/team":
        ledger.delegate("pod", "pod/team", [W(out)])
    ledger.delegate(parent, "w0", [W(out)])
    names = [f"w{i}" for i in range(1, 6)]
    procs = []
    try:
        for i, n in enumerate(names):
            procs.append(waiter(ledger_dir, n, [out + "/x" if i % 2 else out], parent=parent,
                                hold_for="stdin"))
            until(lambda k=i + 1: len(tickets(ledger_dir)) == k, f"{n}'s ticket")
        assert queued_names(ledger_dir) == names  # the tickets' order
        ledger.release("w0")
        for k, (p, n) in enumerate(zip(procs, names, strict=True)):
            until(lambda k=k: len(grants(ledger)) == 3 + (parent != "pod") + k, f"grant {k + 1} after w0's")
            assert grants(ledger)[-1]["holder"]["name"] == n  # the earliest ticket still waiting
            assert json.loads(p.stdout.readline())["token"] > 0
            p.stdin.close()  # releases; the next in line is granted
            assert p.wait(BOUND) == 0
        assert [g["holder"]["name"] for g in grants(ledger)][-5:] == names
        assert tickets(ledger_dir) == []
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_delegation_is_not_held_back_by_an_earlier_waiter_kept_out_by_its_own_line_two_levels_down(
        ledger, ledger_dir, tmp_path):
    """An earlier waiter delegating from 'pod' for a part of what 'team'
    (pod's child) holds waits for 'team': a delegation from 'team' (or from
    its child) does not stand back for it (that would deadlock), while
    the siblings of one parent do (above)."""
    src = str(tmp_path / "src")
    out = src + "/out"
    ledger.register("pod", [W(src)])
    ledger.delegate("pod", "team", [W(out)])
    w = waiter(ledger_dir, "outsider", [out + "/x"], parent="pod", wait=BOUND)
    try:
        until(lambda: _queued(ledger_dir, "outsider"), "the outsider's ticket")
        assert ledger.delegate("team", "mate", [W(out + "/x")], wait=BOUND).parent == "team"
        assert ledger.delegate("mate", "sub", [W(out + "/x/z")], wait=BOUND).parent == "mate"
        assert grants(ledger, "outsider") == []
    finally:
        w.kill()
        w.wait()


def test_refusals_that_cannot_clear_by_waiting_are_raised_at_once(ledger, tmp_path, monkeypatch):
    from scopeledger._wait import Queue

    def join(self, req):
        raise AssertionError(f"'{req.name}' joined the queue for a refusal that cannot clear by waiting")

    monkeypatch.setattr(Queue, "join", join)  # waiting would hang (wait=math.inf): fail instead
    src = str(tmp_path / "src")
    ledger.register("parent", [W(src)])
    t0 = time.monotonic()
    with pytest.raises(DuplicateHolder):
        ledger.register("parent", [W(str(tmp_path / "other"))], wait=math.inf)
    with pytest.raises(DelegationError) as info:
        ledger.delegate("parent", "child", [W(str(tmp_path / "outside"))], wait=math.inf)
    assert info.value.sibling is None
    assert time.monotonic() - t0 < BOUND  # (they return; a hang would fail the run)


@pytest.mark.parametrize("bad, kind", [(None, TypeError), (True, TypeError), ("1", TypeError),
                                       (-1, ValueError), (float("nan"), ValueError)])
def test_a_bad_wait_records_nothing(ledger, tmp_path, bad, kind):
    before = ledger.seq
    with pytest.raises(kind, match="wait must be"):
        ledger.register("x", [W(str(tmp_path / "a"))], wait=bad)
    assert ledger.seq == before


def test_hold_waits_and_releases(ledger, ledger_dir, tmp_path):
    src = str(tmp_path / "src")
    h = holder_process(ledger_dir, "builder", [src])
    try:
        until(lambda: ledger.holders(), "the holder")
        import threading

        threading.Timer(0.0, lambda: (until(lambda: tickets(ledger_dir), "the ticket"),
                                      h.stdin.close())).start()
        with ledger.hold("job", [W(src)], wait=BOUND) as alloc:
            assert ledger.check("job", alloc.token)
        assert not ledger.check("job", alloc.token)
    finally:
        h.kill()
        h.wait()


FORKER = textwrap.dedent("""
    import os, sys, threading, time
    from scopeledger import Ledger, ScopeRule
    d, src = sys.argv[1], sys.argv[2]
    led = Ledger.open(d)
    threading.Thread(target=lambda: led.register("forker", [ScopeRule(src, "write")], wait=600),
                     daemon=True).start()
    while not [n for n in os.listdir(os.path.join(d, "waiters")) if n.isdigit()] if os.path.isdir(
            os.path.join(d, "waiters")) else True:
        time.sleep(0.005)
    pid = os.fork()
    if pid == 0:
        sys.stdin.read()  # the child lives on (it never waited itself)
        os._exit(0)
    print(pid, flush=True)
    sys.stdin.read()
""")


def test_a_child_forked_while_a_thread_waits_does_not_keep_the_dead_waiters_ticket(ledger, ledger_dir, tmp_path):
    src = str(tmp_path / "src")
    ledger.register("holder", [W(src)])
    forker = subprocess.Popen([sys.executable, "-c", FORKER, ledger_dir, src],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(forker.stdout.readline())
    try:
        forker.kill()
        forker.wait()
        nxt = waiter(ledger_dir, "next", [src], wait=BOUND / 3, hold_for="stdin")
        until(lambda: _queued(ledger_dir, "next"), "next's ticket")
        ledger.release("holder")
        got = json.loads(nxt.stdout.readline())
        assert "token" in got, got
        nxt.stdin.close()
        assert nxt.wait(BOUND) == 0
    finally:
        os.kill(child, signal.SIGKILL)
        for p in (forker,):
            p.kill()
            p.wait()


def test_tickets_are_made_under_a_temporary_name_without_o_tmpfile(ledger, ledger_dir, monkeypatch):
    from scopeledger._filetickets import FileTickets
    from scopeledger._wait import Request

    monkeypatch.delattr(os, "O_TMPFILE")
    q = FileTickets(ledger._store)
    req = Request.of(ledger, "a", [W("/x")], None, None, 1).to_json()
    t1, t2 = q.join(req), q.join(req)
    assert (t1.number, t2.number) == (1, 2) and tickets(ledger_dir) == [f"{1:016d}", f"{2:016d}"]
    assert sorted(os.listdir(q.dir)) == tickets(ledger_dir)  # no temporary name left
    assert oct(os.stat(t1.path).st_mode & 0o777) == "0o600"
    q.leave(t1)
    q.leave(t2)
    assert os.listdir(q.dir) == []


def test_threads_sharing_one_ledger_wait_and_are_served_one_at_a_time(ledger, tmp_path):
    """docs/threads-and-forks.md: waiting calls are thread-safe; 8 threads of
    one process, one Ledger object, one scope: each is granted in turn, and
    no two hold it at once."""
    import threading

    src = str(tmp_path / "src")
    holder = ledger.register("holder", [W(src)])
    inside = []
    overlap = []
    errors = []

    def worker(i):
        try:
            with ledger.hold(f"t{i}", [W(src)], wait=BOUND):
                inside.append(i)
                if len(inside) > 1:
                    overlap.append(list(inside))
                inside.remove(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for i, t in enumerate(threads):
        t.start()
        until(lambda k=i + 1: len(tickets(ledger.path)) == k, f"t{i}'s ticket")
    ledger.release("holder", token=holder.token)
    for t in threads:
        t.join(BOUND)
    assert not errors and not overlap
    assert [g["holder"]["name"] for g in grants(ledger)][1:] == [f"t{i}" for i in range(8)]


def test_a_waiter_knows_itself_as_its_ledger_records_it(ledger, tmp_path):
    """``_wait.whoami`` asks the ledger through its public seam
    (``Ledger.actor``; it read the private ``_actor`` across modules):
    the identity the ledger records as the actor of its events, this
    process's, and a forked child's its own."""
    from scopeledger._wait import whoami

    a = ledger.register("a", [W(str(tmp_path / "a"))])
    assert whoami(ledger) is ledger.actor
    assert ledger.actor.to_json() == grants(ledger)[-1]["actor"]
    assert ledger.actor.pid == os.getpid() and a.pid == os.getpid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # (the child: its own identity, then out at once)
        try:
            os.write(w, str(whoami(ledger).pid).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child = int(f.read())
    os.waitpid(pid, 0)
    assert child == pid != os.getpid()


@pytest.mark.parametrize("how", ["thrown", "closed"])
def test_the_waiting_loop_gives_its_ticket_back_however_its_driver_stops(ledger, ledger_dir, tmp_path, how):
    """``_wait.waiting`` driven step by step, as ``Ledger`` and ``AsyncLedger``
    drive it: asleep in the queue, an exception thrown in (a cancellation,
    ``KeyboardInterrupt``) goes on out of it once the ticket was given back
    (a step of its own: on a server, a round trip), and closing it stops it
    at once; either way its ticket is gone and nothing was granted."""
    from scopeledger._wait import Call, Gate, Request, Sleep, resume, waiting, whoami

    class Stop(BaseException):
        pass

    src = str(tmp_path / "src")
    ledger.register("holder", [W(src)])
    req = Request.of(ledger, "w", [W(src)], None, None, BOUND)
    from scopeledger._ledger import register_attempt

    steps = waiting(ledger, req, register_attempt(ledger, "w", [W(src)], None, None, None, False, None, False),
                    Gate(time.monotonic() + BOUND), whoami(ledger), ledger._log.tickets())
    step = resume(steps)
    while isinstance(step, Call):
        step = resume(steps, step.fn(*step.args))
    assert isinstance(step, Sleep) and len(tickets(ledger_dir)) == 1
    if how == "thrown":
        step = resume(steps, error=Stop())  # the ticket is given back in a step of its own...
        assert isinstance(step, Call) and len(tickets(ledger_dir)) == 1
        with pytest.raises(Stop):  # ...then the exception goes on
            resume(steps, step.fn(*step.args))
    else:
        steps.close()
    assert tickets(ledger_dir) == [] and grants(ledger, "w") == []
    with pytest.raises(StopIteration):
        next(steps)


def test_a_waiter_looks_again_when_the_queues_inotify_events_were_lost(ledger, tmp_path):
    """More events than the kernel queues for an inotify instance
    (``fs.inotify.max_queued_events``): they are dropped and an overflow
    event says so; one that mattered (a ticket before this waiter's leaving)
    may be among them, so the waiter looks again (it slept on, up to
    RECHECK_SECONDS, as if nothing had happened)."""
    from scopeledger._wait import Queue, Watch

    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        limit = int(f.read())
    if limit > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many files to make here")
    tickets = ledger._log.tickets()
    tickets._make_dir()
    w = Watch(ledger, Queue(tickets), object())  # (a ticket: the queue is watched too)
    hub = w.source.hub
    if hub.ino is None:
        pytest.skip("no inotify here")
    try:
        w.arm((), log_too=False, behind=1)  # ticket 2 standing back for ticket 1: only ticket 1 matters
        w.source.follow(False, 1)
        # The process's one inotify instance is read by the hub's thread: held
        # off (it blocks on the hub's lock), it lets the kernel's queue overflow.
        with hub._lock:
            for i in range(2 * limit + 10):  # (the thread may have read one queueful before it blocked)
                open(os.path.join(tickets.dir, f"x{i}"), "wb").close()
        assert w.source.event.wait(60), "the waiter was woken"
        assert w.drain(mine=2) is True
    finally:
        w.close()


def _inotify_fds():
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify":
                out.add(int(fd))
        except OSError:
            pass
    return out


def test_closing_a_ledger_closes_the_inotify_instance_its_waiters_share(ledger_dir, tmp_path):
    """A ledger object's waiters in one process share one inotify instance
    (``_filetickets.Hub``: from a per-user limit of 128 by default), kept
    for the next wait; closing the ledger closes it."""
    src = str(tmp_path / "src")
    before = _inotify_fds()
    led = Ledger.open(ledger_dir)
    h = holder_process(ledger_dir, "builder", [src])
    try:
        with pytest.raises(WaitTimeout):
            led.register("w", [W(src)], wait=0.1)
        kept = _inotify_fds() - before
        if not kept:
            pytest.skip("no inotify here: nothing is kept")
        assert len(kept) == 1
        with pytest.raises(WaitTimeout):
            led.register("w", [W(src)], wait=0.1)
        assert _inotify_fds() - before == kept  # (the same one)
        led.close()
        until(lambda: not (kept & _inotify_fds()), "the kept inotify instance closed")
    finally:
        finish(h)


@pytest.mark.parametrize("wait", [0, BOUND])
def test_hold_with_a_parent_token_but_no_parent_records_nothing(ledger, tmp_path, wait):
    before = ledger.seq
    with pytest.raises(TypeError, match="parent_token is given without parent"):
        ledger.hold("h", [W(str(tmp_path / "a"))], parent_token=1, wait=wait)
    assert ledger.seq == before and tickets(ledger.path) == []


# -- on_wait: the caller is told, once, that its request waits -----------------------------


def test_on_wait_is_told_once_when_the_request_waits_and_takes_the_notices_place(ledger, ledger_dir, tmp_path,
                                                                                   caplog):
    """``on_wait(reason, refusal)`` runs once, when the request starts waiting
    (in the queue), instead of the INFO notice; the wait goes on after it
    (here it lets the holder go: the request is granted). A request granted
    at once never calls it."""
    src = str(tmp_path / "src")
    other = Ledger.open(ledger_dir)
    try:
        other.register("holder", [W(src)])
        told = []

        def on_wait(reason, refusal):
            told.append((reason, refusal, tickets(ledger_dir)))
            other.release("holder")

        caplog.set_level(logging.INFO, logger="scopeledger")
        alloc = ledger.register("w", [W(src + "/a")], wait=BOUND, on_wait=on_wait)
        assert alloc.name == "w" and tickets(ledger_dir) == []
        [(reason, refusal, queued)] = told
        assert isinstance(refusal, ScopeConflict) and refusal.chain == ("holder",) and reason == str(refusal)
        assert len(queued) == 1  # told once in the queue
        assert not [r for r in caplog.records if "for its scope" in r.getMessage()]  # no notice besides
        ledger.release("w")
        with ledger.hold("h", [W(src)], wait=BOUND, on_wait=lambda *a: told.append(a)):
            pass
        assert ledger.register("x", [W(src)], wait=BOUND, on_wait=lambda *a: told.append(a)).name == "x"
        assert len(told) == 1  # granted at once: not told
    finally:
        other.close()


def test_on_wait_behind_an_earlier_waiter_gets_no_refusal_and_the_timeout_keeps_the_reason(ledger, first_ahead):
    a, first = first_ahead
    told = []
    with pytest.raises(WaitTimeout) as info:
        ledger.register("newcomer", [W(a)], wait=0.3, on_wait=lambda *args: told.append(args))
    [(reason, refusal)] = told
    assert refusal is None and reason.startswith(f"waiting behind 'first' (pid {first.pid}), ")
    assert info.value.reason == reason and str(info.value).endswith(": " + reason)
    assert grants(ledger, "newcomer") == []


def test_the_notice_and_the_timeout_name_every_holder_in_the_way(ledger, ledger_dir, tmp_path):
    """Several holders in the way, each in a process of its own (two writes,
    an exclusive read): the notice and the WaitTimeout name them all, not
    only the one the refusal met (fresh tester's F7: only 'B' was named)."""
    from scopeledger import ScopeRule

    m = tmp_path / "m"
    ha = holder_process(ledger_dir, "A", [str(m / "a")])
    hb = holder_process(ledger_dir, "B", [str(m / "b")])
    ledger.register("C", [ScopeRule(str(m / "c"), "exclusive-read")])
    try:
        told = []
        with pytest.raises(WaitTimeout) as info:
            ledger.register("W", [W(str(m))], wait=0.3, on_wait=lambda *args: told.append(args))
        [(reason, refusal)] = told
        assert isinstance(refusal, ScopeConflict) and reason.startswith(str(refusal) + "; also in the way: ")
        for name, perm, path in (("A", "write", m / "a"), ("B", "write", m / "b"),
                                 ("C", "exclusive-read", m / "c")):
            assert f"'{name}' holding {perm} {path}/**" in reason
        assert sorted(info.value.in_the_way) == ["A", "B", "C"] and info.value.in_the_way[0] == refusal.owner
        assert info.value.reason == reason
        assert grants(ledger, "W") == []
        # One holder in the way: the reason is the refusal's alone, as before.
        with pytest.raises(WaitTimeout) as info:
            ledger.register("W", [W(str(m / "b"))], wait=0.2)
        assert info.value.in_the_way == ("B",) and "also in the way" not in info.value.reason
    finally:
        finish(ha)
        finish(hb)


def test_a_waiter_behind_an_earlier_waiter_names_the_holders_in_the_way_too(ledger, first_ahead, tmp_path):
    """A newcomer standing behind an earlier waiter says so, and names the
    holder holding the scope they both wait for (it named the waiter
    only)."""
    _a, first = first_ahead
    b = str(tmp_path / "b")
    told = []
    with pytest.raises(WaitTimeout) as info:
        ledger.register("newcomer", [W(b)], wait=0.3, on_wait=lambda *args: told.append(args))
    [(reason, refusal)] = told
    assert refusal is None and reason.startswith(f"waiting behind 'first' (pid {first.pid}), ")
    assert reason.endswith(f"; in the way now: 'hold-b' holding write {b}/**")
    assert info.value.in_the_way == ("first",)
    assert grants(ledger, "newcomer") == []


def test_find_conflicts_lists_every_conflict_a_request_meets(ledger, tmp_path):
    from scopeledger import ScopeRule

    m = tmp_path / "m"
    ledger.register("p", [W(str(m / "p"))])
    ledger.delegate("p", "q", [W(str(m / "p" / "q"))])
    ledger.register("x", [ScopeRule(str(m / "x"), "exclusive-read")])
    got = ledger.find_conflicts([W(str(m))])
    assert sorted((chain, theirs.path) for chain, theirs, _ in got) == [
        (("p", "q"), str(m / "p" / "q")), (("x",), str(m / "x"))]
    assert len(ledger.find_conflicts([W(str(m))], limit=1)) == 1
    assert ledger.find_conflicts([W(str(tmp_path / "elsewhere"))]) == []
    with pytest.raises(ValueError):
        ledger.find_conflicts([W(str(m))], limit=0)


def test_what_on_wait_raises_ends_the_wait_with_nothing_granted(ledger, ledger_dir, tmp_path):
    src = str(tmp_path / "src")
    other = Ledger.open(ledger_dir)
    try:
        other.register("holder", [W(src)])

        class Stop(Exception):
            pass

        def on_wait(reason, refusal):
            other.release("holder")  # the scope is free, and stays free: nothing may take it
            raise Stop(reason)

        with pytest.raises(Stop):
            ledger.register("w", [W(src)], wait=BOUND, on_wait=on_wait)
        assert tickets(ledger_dir) == [] and grants(ledger, "w") == []
        seq = ledger.seq
        for bad in (1, "print"):
            with pytest.raises(TypeError, match="on_wait must be None or a callable"):
                ledger.register("w", [W(src)], wait=BOUND, on_wait=bad)
            with pytest.raises(TypeError, match="on_wait must be None or a callable"):
                ledger.hold("w", [W(src)], wait=BOUND, on_wait=bad)
        assert ledger.seq == seq  # refused before anything was recorded
    finally:
        other.close()


# -- a store that cannot be reached while a waiter waits (issue 15) -------------------------


def _unreachable(n=None, then=None, error=None):
    """A stand-in for ``Ledger._decide`` (a waiter's look) that raises ``StoreUnavailable``
    (or ``error``) ``n`` times (``None``: for ever), calls ``then()`` at the
    last, then decides as the ledger does. ``raised`` lists what it raised."""
    from scopeledger import StoreUnavailable

    def install(ledger, monkeypatch):
        real = ledger._decide
        left = [n]

        def decide(*args, **kwargs):
            if left[0] is None or left[0] > 0:
                if left[0] is not None:
                    left[0] -= 1
                    if left[0] == 0 and then is not None:
                        then()
                exc = error if error is not None else StoreUnavailable(
                    "postgresql://db/x", "failed to read the log: connection lost: injected")
                decide.raised.append(exc)
                raise exc
            return real(*args, **kwargs)
        decide.raised = []
        monkeypatch.setattr(ledger, "_decide", decide)
        return decide
    return install


@pytest.fixture
def held(ledger_dir, tmp_path):
    """``(src, other)``: a scope ``src`` held by ``'holder'`` through
    ``other``, another ledger object on the same directory."""
    src = str(tmp_path / "src")
    other = Ledger.open(ledger_dir)
    try:
        other.register("holder", [W(src)])
        yield src, other
    finally:
        other.close()


def test_a_waiter_rides_out_an_unreachable_store_with_one_warning(ledger, ledger_dir, held, caplog, monkeypatch):
    """Each look of the waiting loop raises StoreUnavailable three times (the
    holder lets go meanwhile): the waiter looks again after a pause, warns
    once, keeps its ticket, and is granted."""
    src, other = held
    decide = _unreachable(3, then=lambda: other.release("holder"))(ledger, monkeypatch)
    caplog.set_level(logging.INFO, logger="scopeledger")
    assert ledger.register("w", [W(src)], wait=BOUND).name == "w"
    assert len(decide.raised) == 3
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["holder 'w' cannot reach the ledger while it waits (failed to read the log: connection "
                      "lost: injected): trying again until its wait ends"]
    assert not [r for r in caplog.records if "lost its place" in r.getMessage()]  # (a file ticket keeps it)
    assert tickets(ledger_dir) == []


def test_an_async_waiter_rides_out_an_unreachable_store(ledger, ledger_dir, held, monkeypatch):
    import asyncio

    from scopeledger import AsyncLedger

    src, other = held
    decide = _unreachable(2, then=lambda: other.release("holder"))(ledger, monkeypatch)

    async def main():
        return await AsyncLedger(ledger).register("w", [W(src)], wait=BOUND)
    assert asyncio.run(main()).name == "w"
    assert len(decide.raised) == 2 and tickets(ledger_dir) == []


def test_a_deadline_that_passes_while_the_store_is_unreachable_raises_its_error(ledger, ledger_dir, held,
                                                                               monkeypatch):
    """Not a WaitTimeout: the StoreUnavailable last met (the cause); the
    ticket is given back and nothing is granted, also once the holder let go."""
    from scopeledger import StoreUnavailable

    src, other = held
    decide = _unreachable()(ledger, monkeypatch)
    with pytest.raises(StoreUnavailable) as info:
        ledger.register("w", [W(src)], wait=0.3)
    assert not isinstance(info.value, WaitTimeout) and info.value is decide.raised[-1]
    assert tickets(ledger_dir) == []
    other.release("holder")
    monkeypatch.undo()
    assert grants(ledger, "w") == [] and ledger.holders() == []


def test_an_append_in_doubt_is_not_tried_again(ledger, ledger_dir, held, monkeypatch):
    from scopeledger import InDoubt

    src, _ = held
    doubt = InDoubt("postgresql://db/x", "whether seq 9 was recorded could not be found out", 9)
    decide = _unreachable(error=doubt)(ledger, monkeypatch)
    with pytest.raises(InDoubt) as info:
        ledger.register("w", [W(src)], wait=BOUND)
    assert info.value is doubt and len(decide.raised) == 1
    assert tickets(ledger_dir) == [] and grants(ledger, "w") == []


@pytest.mark.parametrize("wait", [5e-324, 1e-12, 1e-9])
def test_a_wait_however_short_is_at_least_one_try(ledger, tmp_path, wait):
    # The first attempt is made as without wait (only a cancellation stops it), so
    # a free scope is granted whatever the machine's speed; before, a wait shorter
    # than that attempt took raised WaitTimeout on a free scope.
    a = ledger.register("w", [W(str(tmp_path / "free"))], wait=wait)
    ledger.release("w", token=a.token)
    with ledger.hold("h", [W(str(tmp_path / "free"))], wait=wait):
        d = ledger.delegate("h", "c", [W(str(tmp_path / "free" / "x"))], wait=wait)
        assert d.parent == "h"
    other = ledger.register("other", [W(str(tmp_path / "taken"))])
    with pytest.raises(WaitTimeout):  # taken: the one try is refused, and the time is up
        ledger.register("late", [W(str(tmp_path / "taken"))], wait=wait)
    ledger.release("other", token=other.token)


def test_a_waiter_found_first_in_the_queue_does_not_read_the_queue_again(ledger, ledger_dir, tmp_path,
                                                                         monkeypatch):
    """A register's ticket found with no earlier waiter to stand back for
    stays first (later tickets have higher numbers; earlier ones only
    leave): each later look decides without reading the queue (on a server,
    one round trip less per look). Its grant comes as before."""
    import threading

    import scopeledger._wait as wait_mod

    src = str(tmp_path / "src")
    other = Ledger.open(ledger_dir)
    looks = {"ahead": 0, "decide": 0}
    real_ahead = wait_mod.Queue.ahead

    def ahead(self, mine, req, line):
        if mine is not None:
            looks["ahead"] += 1
        return real_ahead(self, mine, req, line)
    monkeypatch.setattr(wait_mod.Queue, "ahead", ahead)
    real_decide = ledger._decide

    def decide(*a, **k):
        looks["decide"] += 1
        return real_decide(*a, **k)
    ledger._decide = decide  # (a waiter looks by Ledger._decide)
    told = threading.Event()
    out = []
    try:
        h = other.register("holder", [W(src)])
        t = threading.Thread(target=lambda: out.append(ledger.register("w", [W(src)], wait=BOUND,
                                                                       on_wait=lambda *a: told.set())))
        t.start()
        assert told.wait(BOUND)
        until(lambda: looks["ahead"] >= 1, "w's first look in the queue")
        first = dict(looks)
        for i in range(3):  # appends elsewhere wake w (it watches the log): it looks again
            before = looks["decide"]
            other.release(other.register(f"elsewhere{i}", [W(str(tmp_path / f"e{i}"))]).name)
            until(lambda before=before: looks["decide"] > before, f"w's look after append {i}")
        assert looks["ahead"] == first["ahead"], looks
        other.release("holder", token=h.token)
        t.join(BOUND)
        assert not t.is_alive() and out[0].name == "w"
    finally:
        other.close()


def test_a_refused_look_does_not_look_for_the_other_holders_in_the_way(ledger, ledger_dir, tmp_path):
    """The holders in the way beside the one the refusal names are looked
    for (``Ledger.find_conflicts``) where they are shown, the waiting
    notice (and a timeout), not at every refused look: each look asked
    ``find_conflicts``, preparing the rules again, for a text nobody saw.
    The notice names them all as before, and the grant comes as before."""
    import threading

    src = str(tmp_path / "src")
    other = Ledger.open(ledger_dir)
    counts = {"find": 0, "decide": 0}
    real_find, real_decide = ledger.find_conflicts, ledger._decide

    def find(*a, **k):
        counts["find"] += 1
        return real_find(*a, **k)

    def decide(*a, **k):
        counts["decide"] += 1
        return real_decide(*a, **k)
    ledger.find_conflicts = find
    ledger._decide = decide  # (a waiter looks by Ledger._decide)
    told = []
    out = []
    try:
        ha = other.register("ha", [W(src + "/a")])
        hb = other.register("hb", [W(src + "/b")])
        t = threading.Thread(target=lambda: out.append(ledger.register(
            "w", [W(src)], wait=BOUND, on_wait=lambda reason, refusal: told.append(reason))))
        t.start()
        until(lambda: told and counts["decide"] >= 1, "w's notice and its first look in the queue")
        assert "also in the way" in told[0] and "'ha'" in told[0] and "'hb'" in told[0], told
        found = counts["find"]
        for i in range(3):  # appends elsewhere wake w (holders are in its way): it looks again, refused
            before = counts["decide"]
            other.release(other.register(f"elsewhere{i}", [W(str(tmp_path / f"e{i}"))]).name)
            until(lambda before=before: counts["decide"] > before, f"w's look after append {i}")
        assert counts["find"] == found == 1, counts
        other.release("ha", token=ha.token)
        other.release("hb", token=hb.token)
        t.join(BOUND)
        assert not t.is_alive() and out[0].name == "w"
    finally:
        other.close()


def test_a_waiter_behind_one_that_is_killed_is_woken_by_its_death(ledger, ledger_dir, tmp_path, monkeypatch):
    """A waiter standing behind a waiter of this host that is SIGKILLed is
    woken by that death (a pidfd of the waiter ahead), not left to its next
    periodic look: the ticket's close event names the unnamed file it was
    made as (``#<inode>``, not its number) and comes before its lock goes,
    so it woke nobody, and the one behind slept up to a second with its
    scope free. Here the periodic look is an hour away: only a wake-up can
    grant it within the test's bound (before: a ``WaitTimeout``)."""
    import scopeledger._filetickets as filetickets

    monkeypatch.setattr(filetickets, "RECHECK_SECONDS", 3600.0)
    asleep = asleep_behind(monkeypatch)  # (a kill before the last look is seen by the look, fix or not)
    src = str(tmp_path / "src")
    other = Ledger.open(ledger_dir)
    h = other.register("holder", [W(src)])
    first = waiter(ledger_dir, "first", [src])
    try:
        until(lambda: len(tickets(ledger_dir)) == 1, "first's ticket")
        t, out = in_thread(lambda: ledger.register("second", [W(src)], wait=BOUND))
        assert asleep.wait(BOUND)  # in the queue, asleep behind 'first'
        first.kill()
        first.wait()
        # (an append wakes only a waiter that holders keep out: 'second' must have seen
        # first's death, and stood first in the queue since, to be woken by this release)
        other.release("holder", token=h.token)
        t.join(BOUND + 5)
        assert not t.is_alive()
        assert isinstance(out[0], Allocation) and out[0].name == "second", out
    finally:
        first.kill()
        first.wait()
        other.close()


def test_a_ticket_numbered_as_one_that_left_is_not_taken_for_it(tmp_path):
    """Ticket numbers start at 1 again once the queue is empty, and ext4
    gives the next ticket file the inode the last one freed: a reader that
    read the first ticket must read the second anew, not take it for the
    first (its name, pid and rules: whom to stand back for, whose death to
    watch)."""
    from scopeledger._wait import Queue, Request

    led = Ledger.open(tmp_path / "ledger")
    try:
        tickets = led._log.tickets()
        queue = Queue(tickets)

        def read() -> list[tuple[str, int]]:
            out = []
            for number, key, handle in tickets.earlier(None):
                w = queue._read(tickets, number, key, handle)
                out.append((w.name, os.stat(handle.path).st_ino))
            return out

        first = tickets.join(Request.of(led, "first", [W(tmp_path / "a")], None, None, 5).to_json())
        [(name, inode)] = read()
        assert name == "first"
        tickets.leave(first)
        second = tickets.join(Request.of(led, "second", [W(tmp_path / "b")], None, None, 5).to_json())
        try:
            [(name, again)] = read()
            if again != inode:
                pytest.skip(f"this file system gave the second ticket a new inode ({again}, not {inode}): "
                            "nothing to tell apart")
            assert name == "second"
        finally:
            tickets.leave(second)
    finally:
        led.close()


def test_a_waiter_behind_a_lapsed_lease_wakes_at_its_end_not_at_the_periodic_look(ledger_dir, tmp_path,
                                                                                   monkeypatch):
    """A fresh tester's finding: a waiter whose way a leased holder blocks
    (nothing in the log changes, no process to watch) was granted only at
    its next periodic look, up to RECHECK_SECONDS after the lease could be
    reclaimed (ttl + grace). Its sleep is now bounded by that end: with the
    periodic look made an hour, the waiter still gets the scope, by the
    lease's reclaim, and each sleep it planned while the lease ran ended
    no later than the lease's end (not measured: planned)."""
    import scopeledger._filetickets as filetickets
    import scopeledger._wait as wait_mod
    from scopeledger._identity import lease_grace_ns
    from scopeledger._process import boottime_ns

    monkeypatch.setattr(filetickets, "RECHECK_SECONDS", 3600.0)
    monkeypatch.setattr(wait_mod, "RECHECK_SECONDS", 3600.0)
    planned = []  # (when a sleep was planned, when it ends), ns by the boot-time clock
    real_init = wait_mod.Sleep.__init__

    def init(self, watch, seconds, mine):
        real_init(self, watch, seconds, mine)
        now = boottime_ns()
        planned.append((now, now + min(seconds, watch.period) * 1e9))

    monkeypatch.setattr(wait_mod.Sleep, "__init__", init)
    src = str(tmp_path / "src")
    agent = Ledger.open(ledger_dir)
    a = agent.register("agent", [W(src)], ttl=0.1, lease_only=True)
    if a.lease is None or a.lease.boot_ns is None:
        pytest.skip("no boot-time clock here")
    ends = a.lease.boot_ns + a.lease.ttl_ns + lease_grace_ns(a.lease.ttl_ns)
    led = Ledger.open(ledger_dir)
    try:
        probe = led._log.tickets().watch(None)
        probe.close()
        if probe.hub.ino is None:
            pytest.skip("no inotify here: the waiter polls")
        got = led.register("w", [W(src)], wait=BOUND)
        assert got.name == "w"
        reclaims = [e for e in events(led) if e["type"] == "reclaimed"]
        assert len(reclaims) == 1 and "lease_expired" in str(reclaims[0]), reclaims
        before = [(at, end) for at, end in planned if at < ends]
        assert before, "the waiter slept while the lease ran"
        # Each sleep planned while the lease ran ended at its end (+ the
        # millisecond past it by which it is expired), or after the short
        # retry when that end was closer than it: not at the periodic look, an
        # hour away. (The test reads the clock apart from the library's reads:
        # a second's slack for scheduling between them, never a measure.)
        retry = wait_mod.LEASE_RETRY_SECONDS * 1e9
        late = [(end - max(ends + 1e6, at + retry)) / 1e9 for at, end in before]
        assert all(x <= 1.0 for x in late), late
    finally:
        led.close()
        agent.close()
