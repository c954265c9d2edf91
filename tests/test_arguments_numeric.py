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
import decimal
import enum
import fractions
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
    ScopeConflict,
    WaitTimeout,
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


# -- real numbers of other types: float and int subclasses, Fraction, numpy ---------------


class Seconds(float):
    """A float subclass of the user's own (numpy.float64 is one too)."""


class Count(enum.IntEnum):
    ONE = 1
    TWO = 2
    FIVE = 5


def _numpy():
    """numpy, when installed (never a dependency of scopeledger)."""
    return pytest.importorskip("numpy", reason="numpy is not installed: its numbers are not tried")


#: (label, seconds -> the same seconds of another type)
SECOND_KINDS = [
    ("float subclass", Seconds),
    ("int subclass", lambda x: type("Int", (int,), {})(x) if x == int(x) else Seconds(x)),
    ("Fraction", fractions.Fraction),
    ("numpy.float64", lambda x: _numpy().float64(x)),
    ("numpy.float32", lambda x: _numpy().float32(x)),
    ("numpy.int64", lambda x: _numpy().int64(x) if x == int(x) else _numpy().float64(x)),
]


@pytest.mark.parametrize("kind", SECOND_KINDS, ids=[k[0] for k in SECOND_KINDS])
def test_every_seconds_argument_takes_a_real_number_of_any_type_as_the_float(ledger, ledger_dir, kind):
    """A float subclass (numpy.float64, a user's own) was refused as wait=
    and ttl= with 'wait must be seconds (int or float...), not 0.5': the
    value's text hid its type. Every seconds argument takes it, and
    records what the plain number would."""
    _, of = kind
    led = ledger
    a = led.register("a", [W("/num/a")], wait=of(2), ttl=of(2))
    assert a.lease.ttl_ns == 2 * 10**9
    assert led.renew("a", a.token, ttl=of(0.5)).lease.ttl_ns == math.ceil(float(of(0.5)) * 1e9)
    with led.keep_renewed("a", a.token, ttl=of(2)) as renewer:
        assert renewer.interval == pytest.approx(2 / 3)
    b = led.delegate("a", "b", [W("/num/a/b")], wait=of(1), ttl=of(1))
    assert b.lease.ttl_ns == 10**9
    with led.hold("c", [W("/num/c")], wait=of(1), ttl=of(3)) as c:
        assert c.lease.ttl_ns == 3 * 10**9
    assert led.wait(led.seq, timeout=of(0)) == led.seq
    led.timeout = of(4)
    assert type(led.timeout) in (int, float) and led.timeout == 4
    s = led.spawn("s", ["true"], [W("/num/s")], wait=of(1), ttl=of(2))  # (its keep_lease(ttl) too)
    assert s.renewer.interval == pytest.approx(2 / 3)
    assert s.wait(of(60)) == 0
    with Ledger.open(ledger_dir, timeout=of(3), session_ttl=of(5)) as other:
        assert type(other.timeout) in (int, float) and other.timeout == 3

    async def main():
        aled = AsyncLedger(led, switch_interval=of(0.5))
        x = await aled.register("x", [W("/num/x")], wait=of(1), ttl=of(2))
        assert x.lease.ttl_ns == 2 * 10**9
        await aled.renew("x", x.token, ttl=of(2))
        task = aled.keep_renewed("x", x.token, ttl=of(2))
        task.cancel()
        await aled.release("x", x.token)
        async with aled.hold("y", [W("/num/y")], wait=of(1)):
            pass
        assert await aled.wait(led.seq, timeout=of(0)) == led.seq
    asyncio.run(main())


@pytest.mark.parametrize("kind", SECOND_KINDS, ids=[k[0] for k in SECOND_KINDS])
def test_a_zero_wait_of_any_type_refuses_at_once(ledger, kind):
    """wait=0 of another type is 0: a conflict refuses at once (a
    ScopeConflict), not after a wait (a WaitTimeout)."""
    _, of = kind
    ledger.register("a", [W("/num/a")])
    with pytest.raises(ScopeConflict) as info:
        ledger.register("b", [W("/num/a")], wait=of(0))
    assert not isinstance(info.value, WaitTimeout)


def _bad_reals():
    """Values of the accepted types that no seconds argument takes (NaN, an
    infinity where it means nothing, negative), and types none takes."""
    bad = [Seconds("nan"), Seconds(-1), Seconds("-inf"), fractions.Fraction(-1, 2),
           fractions.Fraction(10**400), Count.ONE - 2]
    refused_types = [decimal.Decimal("0.5"), "0.5", b"1", True, False, 1j]
    try:
        import numpy
    except ImportError:
        pass
    else:
        bad += [numpy.float64("nan"), numpy.float64(-1), numpy.int64(-1)]
        refused_types += [numpy.True_, numpy.array([0.5])]
    return bad, refused_types


BAD_REALS, REFUSED_TYPES = _bad_reals()


@pytest.mark.parametrize("bad", BAD_REALS + REFUSED_TYPES, ids=repr)
def test_a_bad_seconds_value_of_any_type_is_a_typed_error_naming_argument_and_value(ledger, ledger_dir, bad):
    a = ledger.register("a", [W("/num/a")], ttl=5)
    before = log_bytes(ledger_dir)
    refused_type = any(bad is t for t in REFUSED_TYPES)
    cases = [
        ("wait", lambda: ledger.register("b", [W("/num/b")], wait=bad), TypeError if refused_type else ValueError),
        ("ttl", lambda: ledger.register("b", [W("/num/b")], ttl=bad), InvalidLease),
        ("ttl", lambda: ledger.renew("a", a.token, ttl=bad), InvalidLease),
        ("ttl", lambda: ledger.keep_renewed("a", a.token, ttl=bad), InvalidLease),
        ("timeout", lambda: ledger.wait(0, timeout=bad), ValueError),
        ("timeout", lambda: setattr(ledger, "timeout", bad), ValueError),
        ("timeout", lambda: Ledger.open(ledger_dir, timeout=bad), ValueError),
        ("session_ttl", lambda: Ledger.open(ledger_dir, session_ttl=bad),
         TypeError if refused_type else ValueError),
        ("switch_interval", lambda: AsyncLedger(ledger, switch_interval=bad),
         TypeError if refused_type else ValueError),
    ]
    for what, call, error in cases:
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
        assert message.startswith(what + " must be"), message
        assert repr(bad)[:40] in message or "<an int of" in message, message
        assert "\n" not in message
    assert ledger.timeout is None
    assert log_bytes(ledger_dir) == before


def test_a_refused_value_whose_text_hides_its_type_is_named_with_it():
    from scopeledger._arguments import check_wait

    class Odd(str):
        pass

    with pytest.raises(TypeError, match=r"not '0\.5' \(a .*Odd\)"):
        check_wait(Odd("0.5"))
    with pytest.raises(TypeError, match=r"Decimal\('0\.5'\) \(a decimal.Decimal is not a numbers.Real: "
                                        r"give float\(value\)\)"):
        check_wait(decimal.Decimal("0.5"))


def test_numpy_numbers_are_taken_where_their_python_numbers_are(ledger):
    np = _numpy()
    a = ledger.register("a", [W("/num/a")], wait=np.float64(0.5), ttl=np.int64(5))
    assert a.lease.ttl_ns == 5 * 10**9
    assert ledger.renew("a", a.token, ttl=np.float64(1.5)).lease.ttl_ns == 1_500_000_000
    with pytest.raises(InvalidLease, match=r"not np\.float64\(nan\)"):
        ledger.renew("a", a.token, ttl=np.float64("nan"))
    with pytest.raises(TypeError, match=r"not np\.True_ \(a numpy\.bool\)"):
        ledger.register("b", [W("/num/b")], wait=np.True_)
    with pytest.raises(ValueError, match=r"wait must be seconds from 0 to 1e\+09"):
        ledger.register("b", [W("/num/b")], wait=np.longdouble("1e400"))


@pytest.mark.parametrize("count", [Count.FIVE, "numpy.int64", "numpy.uint8"])
def test_every_count_argument_takes_an_integer_of_any_type_as_the_int(ledger, ledger_dir, count):
    if isinstance(count, str):
        count = getattr(_numpy(), count.split(".")[1])(5)
    with Ledger.open(ledger_dir, snapshot_every=count, keep_snapshots=count) as other:
        assert (type(other.snapshot_every), other.snapshot_every) == (int, 5)
        assert (type(other.keep_snapshots), other.keep_snapshots) == (int, 5)
    ledger.snapshot_every = count
    assert type(ledger.snapshot_every) is int
    ledger.register("a", [W("/num/a")])
    ledger.snapshot()
    assert ledger.prune_snapshots(count) == []
    assert ledger.verify(workers=count - 4).ok


@pytest.mark.parametrize("bad", [5.0, Seconds(5), True, fractions.Fraction(5), decimal.Decimal(5), "5", 0,
                                 Count.ONE - 1], ids=repr)
def test_a_count_that_is_not_an_integer_at_least_1_is_refused_naming_it(ledger, ledger_dir, bad):
    for what, call, error in [
        ("snapshot_every", lambda: Ledger.open(ledger_dir, snapshot_every=bad), ValueError),
        ("keep_snapshots", lambda: Ledger.open(ledger_dir, keep_snapshots=bad), ValueError),
        ("snapshot_every", lambda: setattr(ledger, "snapshot_every", bad), ValueError),
        ("keep", lambda: ledger.prune_snapshots(bad), ValueError),
        ("workers", lambda: ledger.verify(workers=bad), TypeError if bad != 0 else ValueError),
    ]:
        with pytest.raises(error, match=f"^{what} must be") as info:
            call()
        assert repr(bad) in str(info.value) or str(bad) in str(info.value)


# -- the property: any value, any numeric argument ----------------------------------------

#: Values of every kind a numeric argument meets: ints of any size (huge
#: ones too), floats of any kind (NaN, infinities, subnormals), a float
#: subclass, an IntEnum, fractions, decimals, and not numbers.
ANY_NUMBER = st.one_of(
    st.integers(),
    st.integers(min_value=2**53).flatmap(lambda n: st.sampled_from([n, -n, n**7])),
    st.sampled_from(HUGE + TINY + [0, -0.0, 1, 0.1, 1e9, 10**9, 2**31, 2**31 - 1]),
    st.floats(),
    st.booleans(), st.none(), st.text(max_size=3), st.sampled_from([[1], b"1", 1j]),
    # other types of real numbers (taken as the plain number), and decimals (refused)
    st.floats().map(Seconds), st.sampled_from(list(Count)), st.fractions(), st.decimals(),
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
        "wait.timeout": (none, lambda _, v: led.wait(0, timeout=v), None),  # (seq 1 is there: at once)
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
