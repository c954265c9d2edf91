"""The sync and async APIs side by side, and advisory mode everywhere
(issue 16): ``hold(advisory=...)`` in both, ``advisory`` with ``wait``
(granted at once, never waiting), ``AsyncLedger.decide_each``/``who``, and
``adopt`` whose ``wait()`` an event loop can await. Holders in the way are
real processes that stay alive throughout; every wait is on a condition."""

import asyncio

import pytest

from scopeledger import (
    InvalidArgument,
    Ledger,
    ScopeConflict,
)

from helpers import W
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


def assert_advised_at_once(ledger_dir, h, name, owner="builder"):
    """``name`` was granted as advisory, recording ``owner`` in its way, while
    ``owner``'s process stayed alive: it did not wait (no ticket left, no
    refusal recorded: a waiter records its first refusal)."""
    with Ledger.open(ledger_dir) as led:
        assert h.poll() is None, "the holder in the way must still be alive"
        assert led.check(owner, led.holder(owner).token)
        assert led.holder(name).advisory
    ev = grants(led, name)[-1]
    assert [c[0][-1] for c in ev["holder"]["advisory"]] == [owner]
    assert tickets(ledger_dir) == []
    assert refusals(ledger_dir) == []


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
