"""The public API's numeric arguments (seconds, ttls, pids, counts, seqs):
any value, huge ints (``10**400``, which no float holds) and tiny floats
(``5e-324``) included, is taken or refused with the error its docstring
names, naming the value, recording nothing; never a raw ``OverflowError``
from a conversion to float (``wait=10**400`` once raised ``int too large to
convert to float``, as did ``ttl=10**400``) nor another undocumented type.

Leases have a least ttl (``scopeledger.TTL_RANGE``, 0.1 s): ``ttl=1e-12``
was taken and its holder renewed every ttl/3, ~950 log lines a second."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from scopeledger import (
    TTL_RANGE,
    Allocation,
    Hold,
    Renewer,
    Spawned,
    AsyncLedger,
    InvalidLease,
    Ledger,
    LedgerError,
    Refused,
    from_ns,
    identify,
    to_ns,
)
from scopeledger._events import MAX_TTL_NS
from helpers import W

HUGE = [10**400, -(10**400), 2**63, 2**64 + 1, -(2**63) - 1]
TINY = [5e-324, 1e-12, 1e-9, 0.05, math.nextafter(TTL_RANGE[0], 0)]


def log_bytes(path: str) -> bytes:
    with open(os.path.join(path, "events.jsonl"), "rb") as f:
        return f.read()


# -- wait= ----------------------------------------------------------------------------------

BAD_WAITS = [*HUGE, 1e10, 1e300, -1, -1e-300, float("nan"), -math.inf]


def _grants(led: Ledger, parent_token: int):
    return {
        "register": lambda **kw: led.register("w", [W("/num/w")], **kw),
        "delegate": lambda **kw: led.delegate("p", "w", [W("/num/p/w")], parent_token=parent_token, **kw),
        "hold": lambda **kw: led.hold("w", [W("/num/w")], **kw),
    }


@pytest.mark.parametrize("call", ["register", "delegate", "hold"])
@pytest.mark.parametrize("bad", BAD_WAITS, ids=repr)
def test_a_bad_wait_is_a_value_error_naming_it_recording_nothing(ledger, ledger_dir, call, bad):
    p = ledger.register("p", [W("/num/p")])
    before = log_bytes(ledger_dir)
    with pytest.raises(ValueError, match=r"wait must be seconds from 0 to 1e\+09") as info:
        _grants(ledger, p.token)[call](wait=bad)
    assert type(info.value) is ValueError and repr(bad) in str(info.value)
    assert log_bytes(ledger_dir) == before


@pytest.mark.parametrize("bad", BAD_WAITS, ids=repr)
def test_a_bad_wait_is_refused_by_asyncledger_too(ledger, ledger_dir, bad):
    before = log_bytes(ledger_dir)

    async def main():
        aled = AsyncLedger(ledger)
        for call in (lambda: aled.register("w", [W("/num/w")], wait=bad),
                     lambda: aled.hold("w", [W("/num/w")], wait=bad).__aenter__()):
            with pytest.raises(ValueError, match=r"wait must be seconds from 0 to 1e\+09"):
                await call()
    asyncio.run(main())
    assert log_bytes(ledger_dir) == before


@pytest.mark.parametrize("good", [0, 0.0, 60, 1e9, 10**9, math.inf])
def test_a_wait_in_range_is_taken(ledger, good):
    a = ledger.register("w", [W("/num/w")], wait=good)  # (free: granted at once)
    ledger.release("w", token=a.token)


# -- ttl= -----------------------------------------------------------------------------------

BAD_TTLS = [*HUGE, *TINY, 1e10, 1e300, 0, -1, float("nan"), math.inf]


@pytest.mark.parametrize("bad", BAD_TTLS, ids=repr)
def test_a_bad_ttl_is_invalid_lease_naming_it_everywhere_a_ttl_is_taken(ledger, ledger_dir, bad):
    a = ledger.register("a", [W("/num/a")], ttl=60)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        spawned = ledger.spawn("s", ["true"], [W("/num/s")], ttl=60)
        spawned.process.wait()
        before = log_bytes(ledger_dir)
        calls = [
            lambda: ledger.register("b", [W("/num/b")], ttl=bad),
            lambda: ledger.register("b", [W("/num/b")], ttl=bad, lease_only=True),
            lambda: ledger.delegate("a", "b", [W("/num/a/b")], ttl=bad),
            lambda: ledger.hold("b", [W("/num/b")], ttl=bad),
            lambda: ledger.renew("a", a.token, ttl=bad),
            lambda: ledger.keep_renewed("a", a.token, ttl=bad),
            lambda: ledger.spawn("b", ["true"], [W("/num/b")], ttl=bad),
            lambda: spawned.keep_lease(bad),
        ]
        for call in calls:
            with pytest.raises(InvalidLease, match="ttl must be") as info:
                call()
            assert repr(bad) in str(info.value)
        assert log_bytes(ledger_dir) == before

        async def main():
            aled = AsyncLedger(ledger)
            for call in (lambda: aled.register("b", [W("/num/b")], ttl=bad),
                         lambda: aled.renew("a", a.token, ttl=bad)):
                with pytest.raises(InvalidLease, match="ttl must be"):
                    await call()
            with pytest.raises(InvalidLease, match="ttl must be"):
                aled.keep_renewed("a", a.token, ttl=bad)  # (at the call, not in the task)
        asyncio.run(main())
        assert log_bytes(ledger_dir) == before
        spawned.release()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_ttl_range_is_the_one_the_log_takes_and_its_ends_are_taken(ledger):
    lo, hi = TTL_RANGE
    assert lo == 0.1 and hi * 1e9 == MAX_TTL_NS
    for n, ttl in enumerate([lo, hi, 10**9, 1]):
        a = ledger.register(f"t{n}", [W(f"/num/t{n}")], ttl=ttl)
        assert a.lease.ttl_ns == math.ceil(ttl * 10**9)
        ledger.renew(a.name, a.token, ttl=ttl)
        ledger.release(a.name, token=a.token)


def test_a_renewer_never_beats_faster_than_a_third_of_the_least_ttl(ledger):
    """The renewal interval: ttl/3, and at least TTL_RANGE[0]/3 for a lease
    recorded shorter (by an earlier scopeledger, which took ttl=1e-12)."""
    from scopeledger._lease import renewal_interval

    assert renewal_interval(1) == renewal_interval(10**8) == pytest.approx(0.1 / 3)
    assert renewal_interval(30 * 10**9) == pytest.approx(10.0)
    a = ledger.register("r", [W("/num/r")], ttl=TTL_RANGE[0])
    with ledger.keep_renewed("r", a.token) as renewer:
        assert renewer.interval == pytest.approx(TTL_RANGE[0] / 3)


# -- other functions ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", HUGE, ids=repr)
def test_identify_refuses_a_pid_no_kernel_has_naming_it(bad):
    with pytest.raises(ValueError, match="pid must be"):
        identify(bad)


@pytest.mark.parametrize("bad, error", [(10**400, OverflowError), (-(10**400), OverflowError),
                                        (2**63 * 10**6, OverflowError), (1e300, TypeError),
                                        (float("nan"), TypeError), ("1", TypeError), (None, TypeError),
                                        (True, TypeError)])
def test_from_ns_refuses_naming_the_value(bad, error):
    with pytest.raises(error, match="ns ") as info:
        from_ns(bad)
    assert type(info.value) is error


@pytest.mark.parametrize("bad", [*HUGE, 1e10, -1, float("nan"), math.inf, "1", True])
def test_spawned_wait_refuses_a_bad_timeout_naming_it(ledger, bad):
    s = ledger.spawn("s", ["true"], [W("/num/s")])
    try:
        with pytest.raises(ValueError, match="timeout must be None or a number of seconds") as info:
            s.wait(bad)
        assert type(info.value) is ValueError
    finally:
        assert s.wait() == 0


# -- the property: any value, any numeric argument ----------------------------------------

#: Values of every kind a numeric argument meets: ints of any size (huge
#: ones too), floats of any kind (NaN, infinities, subnormals), and not numbers.
ANY_NUMBER = st.one_of(
    st.integers(),
    st.integers(min_value=2**53).flatmap(lambda n: st.sampled_from([n, -n, n**7])),
    st.sampled_from(HUGE + TINY + [0, -0.0, 1, 0.1, 1e9, 10**9, 2**31, 2**31 - 1]),
    st.floats(),
    st.booleans(), st.none(), st.text(max_size=3), st.sampled_from([[1], b"1", 1j]),
)

#: Exceptions a call's docstring names (the ledger's, TypeError, ValueError).
DOCUMENTED = (LedgerError, TypeError, ValueError)


def test_no_numeric_argument_escapes_as_an_undocumented_error(tmp_path):
    """Property: each public call that takes a number, given any value for
    it (the others good), returns or raises an error its docstring names
    (never an OverflowError, nor anything else); an error leaves the log
    as it was. Calls that would wait are asked so that they need not (a
    free scope, a seq already there, a process already gone)."""
    path = str(tmp_path / "ledger")
    led = Ledger.open(path)
    base = led.register("base", [W("/num/base")], ttl=60)
    names = (f"n{i}" for i in itertools.count())

    def grant(method, **kw):
        name = next(names)
        if method == "delegate":
            return led.delegate("base", name, [W(f"/num/base/{name}")], **kw)
        return getattr(led, method)(name, [W(f"/num/{name}")], **kw)

    def spawned():
        s = led.spawn(next(names), ["true"], [W("/num/s")])
        s.process.wait()  # (exited: its wait(timeout) need not wait)
        return s

    async def aregister(v):
        name = next(names)
        return await AsyncLedger(led).register(name, [W(f"/num/{name}")], ttl=v)

    # which -> (prepare() -> what the call needs, recorded before the call,
    #           call(prepared, value), tidy(prepared) after it, whatever happened)
    def none():
        return None

    calls = {
        "register.wait": (none, lambda _, v: grant("register", wait=v), None),
        "register.ttl": (none, lambda _, v: grant("register", ttl=v), None),
        "register.pid": (none, lambda _, v: grant("register", pid=v), None),
        "delegate.wait": (none, lambda _, v: grant("delegate", wait=v), None),
        "delegate.ttl": (none, lambda _, v: grant("delegate", ttl=v), None),
        "hold.wait": (none, lambda _, v: grant("hold", wait=v), None),
        "hold.ttl": (none, lambda _, v: grant("hold", ttl=v), None),
        "renew.ttl": (none, lambda _, v: led.renew("base", base.token, ttl=v), None),
        "renew.token": (none, lambda _, v: led.renew("base", v), None),
        "keep_renewed.ttl": (none, lambda _, v: led.keep_renewed("base", base.token, ttl=v), None),
        "check.token": (none, lambda _, v: led.check("base", v), None),
        "release.returncode": (lambda: grant("register"),
                               lambda a, v: led.release(a.name, token=a.token, returncode=v),
                               lambda a: led.release(a.name) if a.name in {h.name for h in led.holders()} else None),
        "wait.after": (none, lambda _, v: led.wait(v, timeout=0), None),
        "wait.timeout": (none, lambda _, v: led.wait(-1, timeout=v), None),
        "state_at.seq": (none, lambda _, v: led.state_at(seq=v), None),
        "state_at.time": (none, lambda _, v: led.state_at(time=v), None),
        "diff.a": (none, lambda _, v: led.diff(v, 0), None),
        "events.since": (none, lambda _, v: list(led.events(since=v)), None),
        "prune_snapshots.keep": (none, lambda _, v: led.prune_snapshots(v), None),
        "open.timeout": (none, lambda _, v: Ledger.open(path, timeout=v).close(), None),
        "open.snapshot_every": (none, lambda _, v: Ledger.open(path, snapshot_every=v).close(), None),
        "open.keep_snapshots": (none, lambda _, v: Ledger.open(path, keep_snapshots=v).close(), None),
        "open.session_ttl": (none, lambda _, v: Ledger.open(path, session_ttl=v).close(), None),
        "spawn.wait": (none, lambda _, v: led.spawn(next(names), ["true"], [W("/num/s")], wait=v), None),
        "Spawned.wait": (spawned, lambda s, v: s.wait(v), lambda s: s.wait()),
        "AsyncLedger.register.ttl": (none, lambda _, v: asyncio.run(aregister(v)), None),
        "identify": (none, lambda _, v: identify(v), None),
        "to_ns": (none, lambda _, v: to_ns(v), None),
    }

    def undo(out):
        if isinstance(out, Spawned):
            out.wait()  # its child reaped, its grant released
        elif isinstance(out, Renewer):
            out.stop()
        elif isinstance(out, Hold):
            out.release()
        elif isinstance(out, Allocation) and out.name != "base":
            led.release(out.name, token=out.token)

    @settings(max_examples=400, database=None)
    @given(st.sampled_from(sorted(calls)), ANY_NUMBER)
    def run(which, value):
        prepare, call, tidy = calls[which]
        prepared = prepare()
        before = log_bytes(path)
        try:
            out = call(prepared, value)
        except DOCUMENTED as exc:
            # Every scope asked for is free: no refusal (a wait, however short,
            # is at least one try: 5e-324 s is granted as 0 is).
            assert not isinstance(exc, Refused), (which, value, exc)
            assert log_bytes(path) == before, (which, value, exc)
            assert "\n" not in str(exc)
        except ProcessLookupError:
            assert which == "identify"  # (documented: no process has this pid)
        else:
            undo(out)
        finally:
            if tidy is not None:
                tidy(prepared)

    try:
        run()
    finally:
        led.close()
