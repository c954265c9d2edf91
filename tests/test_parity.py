"""The sync and async APIs side by side, and advisory mode everywhere
(issue 16): ``hold(advisory=...)`` in both, ``advisory`` with ``wait``
(granted at once, never waiting), ``AsyncLedger.decide_each``/``who``, and
``adopt`` whose ``wait()`` an event loop can await. Holders in the way are
real processes that stay alive throughout; every wait is on a condition."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from scopeledger import (
    AsyncLedger,
    InvalidArgument,
    Ledger,
    ScopeConflict,
)

from helpers import Rd, W, kill_and_reap, readline
from test_wait import BOUND, events, grants, holder_process, tickets


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, BOUND * 2))


@pytest.fixture
def builder(ledger_dir, tmp_path):
    """A live process holding ``TMP/src`` (write) as ``builder`` until the test ends."""
    Ledger.open(ledger_dir).close()
    h = holder_process(ledger_dir, "builder", [str(tmp_path / "src")])
    yield h
    h.stdin.close()
    h.wait()


def refusals(ledger_dir):
    return [e for e in events(Ledger.open(ledger_dir)) if e["type"] == "refused"]


def assert_advised_at_once(ledger_dir, h, name, owner="builder", refused=0):
    """``name`` was granted as advisory, recording ``owner`` in its way, while
    ``owner``'s process stayed alive: it did not wait (no ticket left, no
    refusal recorded but the ``refused`` before: a waiter records its first
    refusal)."""
    with Ledger.open(ledger_dir) as led:
        assert h.poll() is None, "the holder in the way must still be alive"
        assert led.check(owner, led.holder(owner).token)
    ev = grants(led, name)[-1]
    assert [c[0][-1] for c in ev["holder"]["advisory"]] == [owner]
    assert tickets(ledger_dir) == []
    assert len(refusals(ledger_dir)) == refused


# -- 1. hold(advisory=...) ---------------------------------------------------------------


def test_hold_advisory_grants_and_records_the_conflicts(ledger, ledger_dir, tmp_path, builder):
    src = str(tmp_path / "src")
    with pytest.raises(ScopeConflict):  # off by default
        with ledger.hold("tool", [W(src + "/f")]):
            pass
    with ledger.hold("tool", [W(src + "/f")], advisory=True) as alloc:
        assert alloc.advisory
        assert [h.name for h in ledger.who(src + "/f")] == ["builder", "tool"]
    assert not ledger.check("tool", alloc.token)  # released on exit
    ev = grants(ledger, "tool")[-1]
    assert [(c[0], c[1][:3], c[2][:3]) for c in ev["holder"]["advisory"]] == [
        (["builder"], [src, "write", True], [src + "/f", "write", True])]
    assert builder.poll() is None


def test_hold_advisory_delegates_past_a_live_sibling(ledger, ledger_dir, tmp_path, builder):
    top = str(tmp_path / "top")
    ledger.register("parent", [W(top)])
    ledger.delegate("parent", "sibling", [W(top + "/a")], pid=builder.pid)
    with pytest.raises(Exception, match="sibling"):
        ledger.hold("kid", [W(top + "/a/b")], parent="parent")
    with ledger.hold("kid", [W(top + "/a/b")], parent="parent", advisory=True, wait=30) as alloc:
        assert alloc.advisory and alloc.parent == "parent"
        assert ledger.check("sibling", ledger.holder("sibling").token)
    assert [c[0][-1] for c in grants(ledger, "kid")[-1]["holder"]["advisory"]] == ["sibling"]


@pytest.mark.parametrize("kwargs, error", [
    ({"advisory": "yes"}, InvalidArgument),
    ({"advisory": 1}, InvalidArgument),
    ({"advisory": True, "wait": -1}, ValueError),
    ({"advisory": True, "wait": "30"}, TypeError),
    ({"advisory": True, "wait": float("nan")}, ValueError),
])
@pytest.mark.parametrize("call", ["register", "hold", "delegate"])
def test_bad_advisory_or_wait_records_nothing(ledger, tmp_path, kwargs, error, call):
    ledger.register("p", [W(str(tmp_path / "p"))])
    seq = ledger.seq
    rules = [W(str(tmp_path / "p" / "x"))]
    with pytest.raises(error):
        if call == "delegate":
            ledger.delegate("p", "x", rules, **kwargs)
        else:
            getattr(ledger, call)("x", rules, **kwargs)
    assert ledger.seq == seq


# -- 2. advisory with wait: granted at once ------------------------------------------------


@pytest.mark.parametrize("call", ["register", "hold"])
def test_an_advisory_request_with_wait_is_granted_at_once(ledger_dir, tmp_path, builder, call):
    src = str(tmp_path / "src")
    with Ledger.open(ledger_dir) as led:
        if call == "register":
            alloc = led.register("tool", [W(src + "/f")], wait=30, advisory=True)
        else:
            guard = led.hold("tool", [W(src + "/f")], wait=30, advisory=True)
            alloc = guard.allocation
        assert alloc.advisory
        assert_advised_at_once(ledger_dir, builder, "tool")
        led.release("tool", alloc.token)


def test_an_advisory_delegation_with_wait_is_granted_at_once(ledger_dir, tmp_path, builder):
    top = str(tmp_path / "top")
    with Ledger.open(ledger_dir) as led:
        led.register("parent", [W(top)])
        led.delegate("parent", "sibling", [W(top + "/a")], pid=builder.pid)
        alloc = led.delegate("parent", "kid", [W(top + "/a")], wait=float("inf"), advisory=True)
        assert alloc.advisory
    assert_advised_at_once(ledger_dir, builder, "kid", owner="sibling")


def test_async_advisory_register_delegate_and_hold_with_wait_are_granted_at_once(ledger_dir, tmp_path, builder):
    src, top = str(tmp_path / "src"), str(tmp_path / "top")

    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            with pytest.raises(ScopeConflict):
                await aled.register("tool", [W(src + "/f")], advisory=False)
            a = await aled.register("tool", [W(src + "/f")], wait=30, advisory=True)
            assert a.advisory
            assert_advised_at_once(ledger_dir, builder, "tool", refused=1)
            await aled.release("tool", a.token)

            await aled.register("parent", [W(top)])
            await aled.delegate("parent", "sibling", [W(top + "/a")], pid=builder.pid)
            k = await aled.delegate("parent", "kid", [W(top + "/a/k")], wait=30, advisory=True)
            assert k.advisory
            assert_advised_at_once(ledger_dir, builder, "kid", owner="sibling", refused=1)
            await aled.release("kid", k.token)

            async with aled.hold("held", [W(src + "/g")], wait=float("inf"), advisory=True) as h:
                assert h.advisory
                assert_advised_at_once(ledger_dir, builder, "held", refused=1)
                async with aled.hold("kid2", [W(top + "/a/z")], parent="parent", wait=30, advisory=True) as k2:
                    assert k2.advisory and k2.parent == "parent"
            assert not await aled.check("held", h.token)
            assert not await aled.check("kid2", k2.token)

            seq = await aled.refresh()
            with pytest.raises(InvalidArgument):
                await aled.register("bad", [W(str(tmp_path / "q"))], advisory="yes")
            with pytest.raises(ValueError):
                await aled.register("bad", [W(str(tmp_path / "q"))], advisory=True, wait=-1)
            with pytest.raises(InvalidArgument):
                async with aled.hold("bad", [W(str(tmp_path / "q"))], advisory=None):
                    pass
            assert await aled.refresh() == seq

    run(main())


def test_spawn_advisory_with_wait_starts_the_child_at_once(ledger_dir, tmp_path, builder):
    """``spawn(advisory=True)``, the library's ``ledger run --advisory``:
    granted past a live holder, the child runs and its exit is recorded."""
    src = str(tmp_path / "src")
    with Ledger.open(ledger_dir) as led:
        with pytest.raises(ScopeConflict):
            led.spawn("job", ["true"], [W(src + "/a")])
        sp = led.spawn("job", ["sh", "-c", "exit 3"], [W(src + "/a")], wait=30, advisory=True)
        assert sp.allocation.advisory
        assert sp.wait() == 3
    assert_advised_at_once(ledger_dir, builder, "job", refused=1)

    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            asp = await aled.spawn("ajob", ["sh", "-c", "exit 4"], [W(src + "/b")], wait=30, advisory=True)
            assert asp.allocation.advisory
            assert await asp.wait() == 4

    run(main())
    assert_advised_at_once(ledger_dir, builder, "ajob", refused=1)
    assert [e["exit_code"] for e in events(Ledger.open(ledger_dir))
            if e["type"] == "released" and e["name"] in ("job", "ajob")] == [3, 4]


# -- 3. AsyncLedger.decide_each, who, would_grant, liveness: in a thread ---------------------


def off_the_loop(aled, method):
    """Make ``aled.ledger.<method>`` block until the event loop has run
    while it is in progress: on the loop's own thread it would wait in vain
    (and fail after BOUND); in a worker thread the loop goes on and opens
    it. Returns the list of threads it ran in."""
    import threading

    opened = threading.Event()
    ran_in = []
    real = getattr(aled.ledger, method)

    def blocking(*args, **kwargs):
        ran_in.append(threading.current_thread())
        assert opened.wait(BOUND), f"{method} blocked the event loop"
        return real(*args, **kwargs)

    setattr(aled.ledger, method, blocking)
    return opened, ran_in


async def in_flight(aled, method, call):
    """``await call`` while proving that ``aled.ledger.<method>`` ran off the loop."""
    import threading

    opened, ran_in = off_the_loop(aled, method)
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0)  # the task starts: its call is now in progress (in a thread, or blocking us)
    opened.set()  # the loop ran meanwhile
    result = await task
    assert ran_in and ran_in[0] is not threading.current_thread()
    delattr(aled.ledger, method)
    return result


def test_async_decide_each_who_would_grant_liveness_answer_as_the_sync_ones(ledger_dir, tmp_path, builder):
    src, b = str(tmp_path / "src"), str(tmp_path / "b")

    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            sync = aled.ledger
            rules = [W(src + "/x"), W(b), Rd(src)]
            seq = await aled.refresh()
            answers = await in_flight(aled, "decide_each", aled.decide_each(None, rules))
            assert [d.granted for d in answers] == [False, True, True]
            assert answers[0].refusal.owner == "builder"
            shown = [(str(d.refusal), d.reclaimed, d.rules) for d in answers]
            assert shown == [(str(d.refusal), d.reclaimed, d.rules) for d in sync.decide_each(None, rules)]
            await aled.register("wb", [W(b)])
            kids = await aled.decide_each("kid", [W(b + "/k"), W(src)], parent="wb")
            assert [d.granted for d in kids] == [True, False]

            one = await in_flight(aled, "who", aled.who(src + "/x"))
            assert [h.name for h in one] == ["builder"]
            many = await aled.who([src, b, str(tmp_path / "none")])
            assert [[h.name for h in hs] for hs in many] == [["builder"], ["wb"], []]
            assert many == sync.who([src, b, str(tmp_path / "none")])
            past = await aled.who((src, b), seq=seq)
            assert [[h.name for h in hs] for hs in past] == [["builder"], []]

            refusal = await in_flight(aled, "would_grant", aled.would_grant("n", [W(src)]))
            assert refusal is not None and refusal.owner == "builder"
            assert await aled.would_grant("n", [W(str(tmp_path / "free"))]) is None

            verdicts = await in_flight(aled, "liveness", aled.liveness())
            assert {n: v.liveness.value for n, v in verdicts.items()} == {"builder": "alive", "wb": "alive"}
            assert await aled.refresh() == seq + 1  # only wb's grant was recorded

    run(main())


# -- 4. adopt: what an adopter can know, and an awaitable wait ------------------------------


EXEC_SUPERVISOR = textwrap.dedent("""
    import json, os, subprocess, sys
    from scopeledger import Ledger, ScopeRule
    d, root, phase = sys.argv[1:4]
    led = Ledger.open(d)
    if phase == "start":
        sup = led.register("sup", [ScopeRule(root, "write")])
        w = led.spawn("w", ["sh", "-c", "read _; exit 7"], [ScopeRule(root + "/w", "write")], parent="sup",
                      stdout=subprocess.DEVNULL)
        led.close()
        # Restart by exec: the same process, so the worker is still its child.
        os.execv(sys.executable, [sys.executable, __file__, d, root, "adopt",
                                  json.dumps([sup.token, w.allocation.token, w.pid])])
    sup_token, w_token, w_pid = json.loads(sys.argv[4])
    sup, w = led.adopt("sup", sup_token), led.adopt("w", w_token)
    print(json.dumps({"pid": os.getpid(), "sup": sup.rebound, "w": w.rebound, "w_pid": w.pid,
                      "bound": led.holder("w").pid}), flush=True)
    status = w.wait(timeout=60)
    print(json.dumps({"status": status, "returncode": w.returncode}), flush=True)
    led.release("sup", sup_token)
""")


def test_a_supervisor_restarted_by_exec_records_its_adopted_childs_exit_status(ledger_dir, tmp_path):
    script = tmp_path / "supervisor.py"
    script.write_text(EXEC_SUPERVISOR)
    Ledger.open(ledger_dir).close()
    sup = subprocess.Popen([sys.executable, str(script), ledger_dir, str(tmp_path / "root"), "start"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = {}
    try:
        first = json.loads(readline(sup, BOUND))
        assert first["pid"] == sup.pid  # the same process after exec
        assert first["sup"] is True and first["w"] is False and first["bound"] == first["w_pid"]
        sup.stdin.write("go\n")  # the worker reads it (its stdin is the supervisor's) and exits 7
        sup.stdin.flush()
        assert json.loads(readline(sup, BOUND)) == {"status": 7, "returncode": 7}
        assert sup.wait(BOUND) == 0
    finally:
        sup.kill()
        sup.wait()
        if "w_pid" in first:
            try:
                os.kill(first["w_pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    with Ledger.open(ledger_dir) as led:
        ev = [e for e in events(led) if e["type"] == "released" and e["name"] == "w"]
        assert [(e.get("exit_code"), e["note"]) for e in ev] == [(7, "exited while adopted")]
        assert led.holders() == [] and led.verify().ok


def spawned_child():
    """A child of this process made without subprocess (nothing else will
    reap it), running until killed."""
    return os.posix_spawnp("sleep", ["sleep", "600"], os.environ)


def orphan():
    """A process that is not this process's child (its parent exited), running until killed."""
    out = subprocess.run(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


def test_async_adopt_waits_on_the_loop_and_records_what_it_can_know(ledger_dir, tmp_path):
    child, stranger = spawned_child(), orphan()
    try:
        with Ledger.open(ledger_dir) as led:
            top = led.register("top", [W(str(tmp_path / "top"))])
            kid = led.delegate("top", "kid", [W(str(tmp_path / "top" / "kid"))], pid=child)
            far = led.delegate("top", "far", [W(str(tmp_path / "top" / "far"))], pid=stranger)

        async def main():
            async with await AsyncLedger.open(ledger_dir) as aled:
                mine = await aled.adopt("top", top.token)
                assert mine.rebound
                with pytest.raises(RuntimeError, match="no other process to wait for"):  # its own
                    await mine.wait()
                a = await aled.adopt("kid", kid.token)
                b = await aled.adopt("far", far.token)
                assert (a.rebound, b.rebound, a.pid, b.pid) == (False, False, child, stranger)
                with pytest.raises(subprocess.TimeoutExpired):  # still running: as Spawned.wait
                    await a.wait(timeout=0)
                assert a.returncode is None
                # The wait is in progress while the loop kills the child: a wait that
                # blocked the loop would time out (False) before the kill could run.
                task = asyncio.ensure_future(a.wait(timeout=BOUND))
                await asyncio.sleep(0)
                os.kill(child, signal.SIGTERM)
                assert await task == -signal.SIGTERM == a.returncode  # our child: its status
                task = asyncio.ensure_future(b.wait(timeout=BOUND, note=None))
                await asyncio.sleep(0)
                os.kill(stranger, signal.SIGKILL)
                assert await task is None and b.returncode is None  # not our child: unknown
                assert not await aled.check("kid", kid.token) and not await aled.check("far", far.token)
                await a.release()  # released already: nothing more
                with pytest.raises(ValueError):
                    await a.wait(timeout=-1)

        run(main())
    finally:
        kill_and_reap((child, stranger), child)
    with Ledger.open(ledger_dir) as led:
        got = {e["name"]: (e.get("exit_code"), e.get("exit_signal"), e["note"]) for e in events(led)
               if e["type"] == "released"}
        assert got == {"kid": (None, signal.SIGTERM, "exited while adopted"),
                       "far": (None, None, "exited while adopted; exit status unknown to the adopting process")}


def test_adopted_release_and_wait_arguments(ledger, tmp_path):
    child = spawned_child()
    try:
        ledger.register("top", [W(str(tmp_path / "top"))])
        kid = ledger.delegate("top", "kid", [W(str(tmp_path / "top" / "kid"))], pid=child)
        ad = ledger.adopt("kid", kid.token)
        with pytest.raises(ValueError):
            ad.wait(timeout=-1)
        with pytest.raises(ValueError):
            ad.wait(timeout="1")
        ad.release(note="given back early")  # the process runs on; its grant is gone
        ad.release(note="twice")
        assert not ledger.check("kid", kid.token)
        assert [e["note"] for e in events(ledger) if e["type"] == "released"] == ["given back early"]
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
