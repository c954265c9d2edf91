"""Every callback the library takes is checked when it is given, before
anything is recorded or started: a plain callable that takes what it will be
called with. An ``async def`` (or an object whose ``__call__`` is one, or a
``functools.partial`` of one) would only make a coroutine that never runs,
and one of the wrong arity would raise in a thread, long after the call that
took it returned; both are refused at once with a ``TypeError`` naming the
argument. (``register``/``delegate``/``hold``'s ``on_wait`` and ``reclaim``'s
``probe``: tests/test_boundary.py.)"""

import functools

import psutil
import pytest

from scopeledger import Ledger

from helpers import W


class AsyncCall:
    async def __call__(self, *args):
        return None


async def async_fn(*args):
    return None


def takes_two(a, b):
    return None


def takes_none():
    return None


#: (what, how it is given (ledger, tmp_path, value), the arity it is called with)
GIVEN = {
    "spawn.on_lost": (lambda led, tmp, v: led.spawn("job", ["true"], [W(str(tmp / "w"))], on_lost=v), 1),
    "keep_renewed.on_lost": (lambda led, tmp, v: led.keep_renewed(*_leased(led, tmp), on_lost=v), 1),
    "watch_grant.on_lost": (lambda led, tmp, v: led.watch_grant(*_granted(led, tmp), on_lost=v), 1),
    "open.probe": (lambda led, tmp, v: Ledger.open(tmp / "other", probe=v), 1),
    "open.clock": (lambda led, tmp, v: Ledger.open(tmp / "other", clock=v), 0),
    "open.boottime": (lambda led, tmp, v: Ledger.open(tmp / "other", boottime=v), 0),
    "open.on_session_lost": (lambda led, tmp, v: Ledger.open(tmp / "other", on_session_lost=v), 1),
}


def _granted(led, tmp):
    a = led.register("g", [W(str(tmp / "g"))])
    return a.name, a.token


def _leased(led, tmp):
    a = led.register("g", [W(str(tmp / "g"))], ttl=60)
    return a.name, a.token


def _bad_values(arity):
    wrong = takes_none if arity else takes_two
    return [("async def", async_fn, "not an async function"),
            ("async __call__", AsyncCall(), "not an async function"),
            ("partial of an async def", functools.partial(async_fn), "not an async function"),
            ("wrong arity", wrong, f"must take {arity} positional argument")]


CASES = [(what, label) for what, (_, arity) in GIVEN.items() for label, _, _ in _bad_values(arity)]


@pytest.mark.parametrize("what, label", CASES, ids=[f"{w}-{lab}" for w, lab in CASES])
def test_a_callback_that_could_not_be_called_so_is_refused_at_once(tmp_path, what, label):
    give, arity = GIVEN[what]
    value, words = next((v, m) for lab, v, m in _bad_values(arity) if lab == label)
    argument = what.split(".")[1]
    with Ledger.open(tmp_path / "ledger") as led:
        before = [(a.name, a.token) for a in led.holders()]
        log = (tmp_path / "ledger" / "events.jsonl").read_bytes()
        children = _children()
        with pytest.raises(TypeError, match=f"{argument} ") as info:
            give(led, tmp_path, value)
        assert words in str(info.value), str(info.value)
        after = [(a.name, a.token) for a in led.holders()]
        # Nothing recorded by the refused call (the grant a watch or renewer is given is the test's own).
        assert after[:len(before)] == before and all(name == "g" for name, _ in after[len(before):])
        if what.startswith("spawn"):
            assert (tmp_path / "ledger" / "events.jsonl").read_bytes() == log
            assert _children() == children, "a child was started"
        assert not (tmp_path / "other").exists() or what.startswith("spawn"), "Ledger.open created it"


@pytest.mark.parametrize("what", list(GIVEN))
def test_a_callable_of_the_right_shape_is_taken(tmp_path, what):
    """The same arguments take a plain function of the arity they call,
    one with defaults or ``*args`` beyond it, and a built-in whose signature
    Python cannot read."""
    give, arity = GIVEN[what]
    if what == "open.clock":
        good = [lambda *a: 1_700_000_000 * 10**9, lambda x=1: 1_700_000_000 * 10**9]
    elif what == "open.boottime":
        good = [lambda *a: None, lambda x=1: None]
    else:
        good = [lambda *a: None, lambda x, y=2: None, print]
    with Ledger.open(tmp_path / "ledger") as led:
        for value in good:
            obj = give(led, tmp_path, value)
            if what.startswith("spawn"):
                obj.wait()
            elif hasattr(obj, "stop"):
                obj.stop()
            if hasattr(obj, "close"):
                obj.close()
            if what.split(".")[0] in ("keep_renewed", "watch_grant"):
                led.release("g")


def _children():
    """This process's children's pids."""
    return {p.pid for p in psutil.Process().children()}
