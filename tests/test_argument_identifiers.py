"""Integer identifiers and points given to the public API: tokens (a
grant's seq: from 1), seqs (``after``, ``since``, ``until``: from 0), pids,
int times (nanoseconds since the epoch, the years 1 to 9999), on every
method of ``Ledger`` and ``AsyncLedger`` that takes one, and on the command
line; and what ``Adopted.wait`` answers.

- A value no grant, seq or time can have (a token of 0 or -1, ``after=-1``,
  ``time=10**30``) is a typed error naming the argument and the value,
  recording nothing: ``check(name, token=-1)`` answered ``False``,
  ``release(name, -1)`` "no live holder", ``wait(after=-1)`` returned at
  once. A negative time is a time before 1970, which an event's stamp may
  be: it is taken.
- An integer of another type (``numpy.int64``, an ``IntEnum``) is taken as
  the plain ``int`` it stands for, as seconds and counts already were; a
  ``bool``, a float (``3.0`` too), a ``str``, a ``Decimal`` are not.
- ``Adopted.wait()`` returns what ``Spawned.wait()`` returns, the exit
  status, as far as the adopter can know it (``None``: ended, status
  unknown); a timeout raises ``subprocess.TimeoutExpired`` as there; a
  rebound grant (this process's own) has no process to wait for.
"""

from __future__ import annotations

import asyncio
import decimal
import enum
import fractions
import os
import signal
import subprocess
from typing import Any, Callable

import pytest

from scopeledger import (AsyncLedger, HistoryUnavailable, InvalidArgument, InvalidProcess, Ledger, ScopeRule,
                         from_environment, to_ns)
from scopeledger._errors import shown
from helpers import W, kill_and_reap, ledger_cmd, one_error_line

BOUND = 60.0  # seconds: a generous bound on a process's exit being seen


def log_bytes(path: str) -> bytes:
    with open(os.path.join(path, "events.jsonl"), "rb") as f:
        return f.read()


def _numpy() -> Any:
    """numpy, when installed (never a dependency of scopeledger)."""
    return pytest.importorskip("numpy", reason="numpy is not installed: its numbers are not tried")


def of_kind(kind: str, n: int) -> Any:
    """``n`` as an integer of another type: an IntEnum member, or a numpy integer."""
    if kind == "IntEnum":
        return enum.IntEnum("Number", {"N": n}).N
    return getattr(_numpy(), kind.split(".")[1])(n)


INT_KINDS = ["IntEnum", "numpy.int64", "numpy.uint32"]


def refused_types(optional: bool) -> list[Any]:
    """Values of types no integer argument takes (``None`` too, unless the
    argument is optional)."""
    out: list[Any] = [True, False, 3.0, "3", b"3", decimal.Decimal(3), fractions.Fraction(3), [3]]
    if not optional:
        out.append(None)
    return out


REFUSED_NUMPY = ["numpy.float64", "numpy.bool_"]


def numpy_refused(kind: str) -> Any:
    np = _numpy()
    return np.float64(3) if kind == "numpy.float64" else np.True_


# -- the calls ----------------------------------------------------------------------------


class Ctx:
    """A ledger with holder ``top`` (a lease: renewable), bound to this
    process, under ``root``."""

    def __init__(self, ledger: Ledger, ledger_dir: str, root: str) -> None:
        self.led, self.dir, self.root = ledger, ledger_dir, root
        self.top = ledger.register("top", [W(f"{root}/top")], ttl=600)

    def kid(self) -> list[ScopeRule]:
        return [W(f"{self.root}/top/kid")]

    def run(self, coro: Callable[[AsyncLedger], Any]) -> Any:
        """``coro(AsyncLedger)`` on a loop of its own; an asyncio task it
        returns (keep_renewed's) is cancelled, the rest returned."""
        async def main() -> Any:
            out = coro(AsyncLedger(self.led))
            if asyncio.iscoroutine(out):
                out = await out
            if isinstance(out, asyncio.Task):
                out.cancel()
                return "task"
            if type(out).__name__ == "AsyncSpawned":
                await out.wait()
            return out
        return asyncio.run(main())


def tidy(out: Any) -> None:
    for method in ("stop", "release", "wait"):
        if type(out).__name__ in ("Renewer", "Hold", "Spawned") and hasattr(out, method):
            getattr(out, method)()
            return


#: Every public call taking a token: (its name, the argument's name, call(ctx, value)).
TOKEN_CALLS: list[tuple[str, str, Callable[[Ctx, Any], Any]]] = [
    ("Ledger.check", "token", lambda c, v: c.led.check("top", v)),
    ("Ledger.release", "token", lambda c, v: c.led.release("top", v)),
    ("Ledger.renew", "token", lambda c, v: c.led.renew("top", v)),
    ("Ledger.keep_renewed", "token", lambda c, v: c.led.keep_renewed("top", v)),
    ("Ledger.attach", "token", lambda c, v: c.led.attach("top", token=v)),
    ("Ledger.adopt", "token", lambda c, v: c.led.adopt("top", v)),
    ("Ledger.delegate", "parent_token", lambda c, v: c.led.delegate("top", "kid", c.kid(), parent_token=v)),
    ("Ledger.delegate(wait=)", "parent_token",
     lambda c, v: c.led.delegate("top", "kid", c.kid(), parent_token=v, wait=1)),
    ("Ledger.hold", "parent_token", lambda c, v: c.led.hold("kid", c.kid(), parent="top", parent_token=v)),
    ("Ledger.decide", "parent_token", lambda c, v: c.led.decide("kid", c.kid(), parent="top", parent_token=v)),
    ("Ledger.decide_each", "parent_token",
     lambda c, v: c.led.decide_each("kid", c.kid(), parent="top", parent_token=v)),
    ("Ledger.would_grant", "parent_token",
     lambda c, v: c.led.would_grant("kid", c.kid(), parent="top", parent_token=v)),
    ("Ledger.spawn", "parent_token",
     lambda c, v: c.led.spawn("kid", ["true"], c.kid(), parent="top", parent_token=v)),
    ("Renewer", "token", lambda c, v: __import__("scopeledger").Renewer(c.led, "top", v)),
    ("AsyncLedger.check", "token", lambda c, v: c.run(lambda a: a.check("top", v))),
    ("AsyncLedger.release", "token", lambda c, v: c.run(lambda a: a.release("top", v))),
    ("AsyncLedger.renew", "token", lambda c, v: c.run(lambda a: a.renew("top", v))),
    ("AsyncLedger.keep_renewed", "token", lambda c, v: c.run(lambda a: a.keep_renewed("top", v))),
    ("AsyncLedger.attach", "token", lambda c, v: c.run(lambda a: a.attach("top", token=v))),
    ("AsyncLedger.adopt", "token", lambda c, v: c.run(lambda a: a.adopt("top", v))),
    ("AsyncLedger.until_lost", "token", lambda c, v: c.run(lambda a: a.until_lost("top", v))),
    ("AsyncLedger.delegate", "parent_token",
     lambda c, v: c.run(lambda a: a.delegate("top", "kid", c.kid(), parent_token=v))),
    ("AsyncLedger.delegate(wait=)", "parent_token",
     lambda c, v: c.run(lambda a: a.delegate("top", "kid", c.kid(), parent_token=v, wait=1))),
    ("AsyncLedger.decide", "parent_token",
     lambda c, v: c.run(lambda a: a.decide("kid", c.kid(), parent="top", parent_token=v))),
    ("AsyncLedger.spawn", "parent_token",
     lambda c, v: c.run(lambda a: a.spawn("kid", ["true"], c.kid(), parent="top", parent_token=v))),
]

#: Optional token arguments (``None`` is taken).
OPTIONAL = {"Ledger.release", "Ledger.attach", "AsyncLedger.release", "AsyncLedger.attach"} | {
    name for name, what, _ in TOKEN_CALLS if what == "parent_token"}

#: Every public call taking a seq that must be a point in the log (0 or more).
SEQ_CALLS: list[tuple[str, str, Callable[[Ctx, Any], Any]]] = [
    ("Ledger.wait", "after", lambda c, v: c.led.wait(v, timeout=0)),
    ("Ledger.events(since=)", "since", lambda c, v: list(c.led.events(since=v))),
    ("Ledger.events(until=)", "until", lambda c, v: list(c.led.events(until=v))),
    ("Ledger.event_lines(since=)", "since", lambda c, v: list(c.led.event_lines(since=v))),
    ("Ledger.event_lines(until=)", "until", lambda c, v: list(c.led.event_lines(until=v, types="registered"))),
    ("AsyncLedger.wait", "after", lambda c, v: c.run(lambda a: a.wait(v, timeout=0))),
    ("AsyncLedger.events(since=)", "since",
     lambda c, v: c.run(lambda a: _collect(a.events(since=v)))),
]


async def _collect(aiter: Any) -> list[Any]:
    return [e async for e in aiter]


def ids(calls: list[tuple[str, str, Any]]) -> list[str]:
    return [name for name, _, _ in calls]


@pytest.fixture
def ctx(ledger: Ledger, ledger_dir: str, tmp_path: Any) -> Ctx:
    return Ctx(ledger, ledger_dir, str(tmp_path / "root"))


def _refused(ctx: Ctx, call: Callable[[Ctx, Any], Any], value: Any, error: type[BaseException],
             starts: str) -> str:
    """``call(ctx, value)`` raises ``error`` (that class, or a subclass),
    its message one line starting with ``starts`` and naming the value;
    nothing recorded, ``top`` still live. The message."""
    before = log_bytes(ctx.dir)
    with pytest.raises(error) as info:
        tidy(call(ctx, value))
    message = str(info.value)
    assert message.startswith(starts), message
    assert shown(value)[:40] in message or "<an int of" in message, message
    assert "\n" not in message
    assert log_bytes(ctx.dir) == before
    assert ctx.led.check("top", ctx.top.token)
    return message


# -- 1. values no token, seq, pid or time can be: refused, naming them --------------------


@pytest.mark.parametrize("bad", [0, -1, -(10**400)], ids=repr)
@pytest.mark.parametrize("name, what, call", TOKEN_CALLS, ids=ids(TOKEN_CALLS))
def test_a_token_below_1_is_refused_naming_it(ctx, name, what, call, bad):
    """No grant has seq 0 or below: check() answered False, the others
    'no live holder' or 'live with another grant'."""
    _refused(ctx, call, bad, InvalidArgument, f"{what} must be a grant's seq, an int >= 1")
    with pytest.raises(ValueError):  # (InvalidArgument is a ValueError: callers catching it keep working)
        call(ctx, bad)


@pytest.mark.parametrize("bad", [-1, -(10**400)], ids=repr)
@pytest.mark.parametrize("name, what, call", SEQ_CALLS, ids=ids(SEQ_CALLS))
def test_a_negative_seq_is_refused_naming_it(ctx, name, what, call, bad):
    """No point in the log is below 0: wait(after=-1) returned at once,
    events(since=-1) read from the start, events(until=-1) nothing."""
    _refused(ctx, call, bad, InvalidArgument, f"{what} must be a seq, an int >= 0")


TIME_CALLS: list[tuple[str, str, Callable[[Ctx, Any], Any]]] = [
    ("to_ns", "time", lambda c, v: to_ns(v)),
    ("Ledger.state_at", "time", lambda c, v: c.led.state_at(time=v)),
    ("Ledger.time_point", "time", lambda c, v: c.led.time_point(v)),
    ("Ledger.who", "time", lambda c, v: c.led.who(c.root, time=v)),
    ("Ledger.events(since_time=)", "since_time", lambda c, v: list(c.led.events(since_time=v))),
    ("Ledger.events(until_time=)", "until_time", lambda c, v: list(c.led.events(until_time=v))),
    ("AsyncLedger.state_at", "time", lambda c, v: c.run(lambda a: a.state_at(time=v))),
    ("AsyncLedger.who", "time", lambda c, v: c.run(lambda a: a.who(c.root, time=v))),
]


@pytest.mark.parametrize("bad", [10**30, -(10**30), 253402300800 * 10**9, -62135596800 * 10**9 - 1],
                         ids=["1e30", "-1e30", "year 10000", "before year 1"])
@pytest.mark.parametrize("name, what, call", TIME_CALLS, ids=ids(TIME_CALLS))
def test_an_int_time_no_datetime_names_is_refused_naming_it(ctx, name, what, call, bad):
    """An int time is nanoseconds since the epoch: beyond the years 1 to
    9999 it names no time (the command line refuses those too)."""
    _refused(ctx, call, bad, InvalidArgument, f"{what} must be a datetime.datetime or int nanoseconds")


@pytest.mark.parametrize("name, what, call", TIME_CALLS, ids=ids(TIME_CALLS))
def test_a_negative_time_is_a_time_before_1970_and_taken(ctx, name, what, call):
    """Not refused: an event's stamp is its writer's clock, never clamped,
    and may lie before 1970 (the format takes [-2**63, 2**63)). Every event
    here is later, so the answers are those of the empty state."""
    out = call(ctx, -1)
    assert out == {"to_ns": -1, "Ledger.who": [], "AsyncLedger.who": [],
                   "Ledger.events(until_time=)": []}.get(name, out)
    if name.endswith("state_at"):
        assert out.seq == 0 and out.holders == {}
    if name == "Ledger.time_point":
        assert out.seq == 0
    assert to_ns(-62135596800 * 10**9) == -62135596800 * 10**9  # the year 1: taken


PID_CALLS: list[tuple[str, Callable[[Ctx, Any], Any]]] = [
    ("Ledger.register", lambda c, v: c.led.register("p", [W(f"{c.root}/p")], pid=v)),
    ("Ledger.delegate", lambda c, v: c.led.delegate("top", "kid", c.kid(), pid=v)),
    ("Ledger.attach", lambda c, v: c.led.attach("top", pid=v, token=c.top.token)),
    ("Ledger.hold", lambda c, v: c.led.hold("p", [W(f"{c.root}/p")], pid=v)),
    ("AsyncLedger.register", lambda c, v: c.run(lambda a: a.register("p", [W(f"{c.root}/p")], pid=v))),
    ("AsyncLedger.attach", lambda c, v: c.run(lambda a: a.attach("top", pid=v, token=c.top.token))),
]


@pytest.mark.parametrize("bad", [0, -1, 2**31, 10**400, True, 3.0, "1", decimal.Decimal(1)], ids=repr)
@pytest.mark.parametrize("name, call", PID_CALLS, ids=[n for n, _ in PID_CALLS])
def test_a_pid_no_process_can_have_is_refused_naming_it(ctx, name, call, bad):
    _refused(ctx, call, bad, InvalidProcess, "cannot bind an allocation to pid")


def test_a_token_from_the_environment_below_1_is_refused():
    """from_environment took '$SCOPELEDGER_TOKEN=-1' as token -1 (the
    command line's own reading refused it)."""
    for bad in ("-1", "0"):
        with pytest.raises(ValueError, match=r"SCOPELEDGER_TOKEN is '(-1|0)', not a grant's seq"):
            from_environment({"SCOPELEDGER_HOLDER": "top", "SCOPELEDGER_TOKEN": bad})
    assert from_environment({"SCOPELEDGER_HOLDER": "top", "SCOPELEDGER_TOKEN": "12"}) == ("top", 12)


# -- 2. integers of any type: taken as the plain int; other types refused ----------------


@pytest.mark.parametrize("kind", INT_KINDS)
@pytest.mark.parametrize("name, what, call", TOKEN_CALLS, ids=ids(TOKEN_CALLS))
def test_a_token_of_any_integer_type_is_taken_as_the_int(ctx, name, what, call, kind):
    """A numpy.int64 or an IntEnum token was a TypeError, while seconds and
    counts of those types were taken."""
    token = of_kind(kind, ctx.top.token)
    if name.endswith("until_lost"):
        ctx.led.release("top")  # (else it waits for that: now it finds the release at once)
    out = call(ctx, token)
    if name.endswith("until_lost"):
        assert out.type == "released" and out.data["name"] == "top"
        return
    try:
        if name.endswith("check"):
            assert out is True
        if name.endswith("renew"):
            assert type(out.lease.renewed_seq) is int
        if name.endswith("release"):
            assert "top" not in {a.name for a in ctx.led.holders()}
        if what == "parent_token" and "decide" not in name and "would_grant" not in name:
            # (a spawned child's grant is released once it exits, as ``true`` does at once)
            assert "kid" in {a.name for a in ctx.led.holders()} or type(out).__name__ in ("Hold", "AsyncSpawned")
    finally:
        tidy(out)
    # What was written is plain JSON ints (orjson refuses a numpy integer).
    for line in log_bytes(ctx.dir).splitlines():
        assert b"np." not in line and b"Number" not in line


@pytest.mark.parametrize("kind", INT_KINDS)
def test_renewed_and_released_record_the_plain_int(ctx, kind):
    import json

    led, top = ctx.led, ctx.top
    led.renew("top", of_kind(kind, top.token))
    led.release("top", of_kind(kind, top.token), returncode=of_kind(kind, 3))
    lines = [json.loads(x) for x in log_bytes(ctx.dir).splitlines()]
    renewed = [e for e in lines if e["type"] == "renewed"][-1]
    released = [e for e in lines if e["type"] == "released"][-1]
    assert (renewed["token"], released["name"], released["exit_code"]) == (top.token, "top", 3)
    assert type(renewed["token"]) is int


@pytest.mark.parametrize("kind", INT_KINDS)
@pytest.mark.parametrize("name, what, call", SEQ_CALLS, ids=ids(SEQ_CALLS))
def test_a_seq_of_any_integer_type_is_taken_as_the_int(ctx, name, what, call, kind):
    out = call(ctx, of_kind(kind, 0))
    if "wait" in name:
        assert out == ctx.led.seq and type(out) is int


@pytest.mark.parametrize("kind", INT_KINDS)
def test_a_point_of_any_integer_type_is_taken_as_the_int(ctx, kind):
    led = ctx.led
    seq = of_kind(kind, ctx.top.token)
    assert led.state_at(seq=seq).seq == ctx.top.token
    assert [h.name for h in led.who(f"{ctx.root}/top", seq=seq)] == ["top"]
    assert led.diff(of_kind(kind, 0), seq).added == ("top",)
    ts = next(iter(led.events())).ts
    wide = "numpy.int64" if kind == "numpy.uint32" else kind  # (a time in ns needs 64 bits)
    assert to_ns(of_kind(wide, ts)) == ts and type(to_ns(of_kind(wide, ts))) is int
    assert led.state_at(time=of_kind(wide, ts)).seq == ctx.top.token
    with pytest.raises(HistoryUnavailable, match="no state at seq -1"):  # (as before: out of the history)
        led.state_at(seq=-1)


@pytest.mark.parametrize("kind", INT_KINDS)
@pytest.mark.parametrize("name, call", PID_CALLS, ids=[n for n, _ in PID_CALLS])
def test_a_pid_of_any_integer_type_is_taken_as_the_int(ctx, name, call, kind):
    """An IntEnum pid was taken, a numpy.int64 one refused."""
    out = call(ctx, of_kind(kind, os.getpid()))
    try:
        held = {a.name: a for a in ctx.led.holders()}
        bound = held.get("p") or held.get("kid") or held["top"]
        assert type(bound.pid) is int and bound.pid == os.getpid()
    finally:
        tidy(out)


def _refused_values(optional: bool) -> list[Any]:
    return refused_types(optional) + REFUSED_NUMPY


def _value(v: Any) -> Any:
    return numpy_refused(v) if isinstance(v, str) and v.startswith("numpy.") else v


@pytest.mark.parametrize("name, what, call", TOKEN_CALLS, ids=ids(TOKEN_CALLS))
def test_a_token_of_another_type_is_a_type_error_naming_it(ctx, name, what, call):
    for raw in _refused_values(name in OPTIONAL):
        bad = _value(raw)
        with pytest.raises(TypeError) as info:
            tidy(call(ctx, bad))
        assert type(info.value) is TypeError, (bad, info.value)
        assert str(info.value).startswith(f"{what} must be an int"), info.value
    assert ctx.led.check("top", ctx.top.token)


@pytest.mark.parametrize("name, what, call", SEQ_CALLS, ids=ids(SEQ_CALLS))
def test_a_seq_of_another_type_is_a_type_error_naming_it(ctx, name, what, call):
    before = log_bytes(ctx.dir)
    for raw in _refused_values(what != "after"):
        bad = _value(raw)
        with pytest.raises(TypeError, match=f"^{what} must be an int"):
            call(ctx, bad)
    assert log_bytes(ctx.dir) == before


# -- the command line: one line, exit 2, nothing recorded --------------------------------


def _cli_cases(root: str, token: int) -> list[tuple[list[str], dict[str, str]]]:
    cases: list[tuple[list[str], dict[str, str]]] = []
    for bad in ("-1", "0", "1.0", "true", "٣"):
        cases += [(["release", "top", "--token", bad], {}), (["renew", "top", "--token", bad], {}),
                  (["check", "-w", f"{root}/top/kid"], {"SCOPELEDGER_HOLDER": "top", "SCOPELEDGER_TOKEN": bad})]
    for bad in ("-1", "1.5", "true"):
        cases += [(["replay", "--from", bad], {}), (["replay", "--until", bad], {}), (["show", "--at", bad], {}),
                  (["who", root, "--at", bad], {}), (["diff", "0", bad], {}),
                  (["verify", "--workers", bad], {}), (["snapshot", "--prune", "--keep", bad], {})]
    cases += [(["verify", "--workers", "0"], {}), (["snapshot", "--prune", "--keep", "0"], {})]
    return cases


def test_the_command_line_refuses_every_such_value_in_one_line(ctx):
    """The command line reads every integer with one parser (no sign, digits
    only), so none of these reaches the library: a usage error naming the
    option, exit 2, no traceback, nothing recorded."""
    from helpers import clean_env

    ctx.led.close()
    before = log_bytes(ctx.dir)
    for args, env in _cli_cases(ctx.root, ctx.top.token):
        res = ledger_cmd(ctx.dir, *args, env=clean_env(**env) if env else None)
        assert res.returncode == 2, (args, env, res.stderr)
        one_error_line(res.stderr)
    assert log_bytes(ctx.dir) == before


# -- 3. Adopted.wait answers as Spawned.wait --------------------------------------------


def _orphan() -> int:
    """A process that is not this process's child (its parent exited), running until killed."""
    out = subprocess.run(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


@pytest.mark.parametrize("driver", ["Adopted", "AsyncAdopted"])
def test_adopted_wait_returns_the_exit_status_as_far_as_it_is_known(ctx, driver):
    """Adopted.wait returned True where Spawned.wait returns the exit
    status, and False both for a timeout and for a rebound grant."""
    led, root = ctx.led, ctx.root
    child = os.posix_spawnp("sleep", ["sleep", "600"], os.environ)  # ours: its status is ours to read
    stranger = _orphan()  # not ours: only its parent learns its status
    try:
        kid = led.delegate("top", "kid", [W(f"{root}/top/kid")], pid=child)
        far = led.delegate("top", "far", [W(f"{root}/top/far")], pid=stranger)

        async def flow(aled: AsyncLedger | None) -> list[Any]:
            async def adopt(name: str, token: int) -> Any:
                return await aled.adopt(name, token) if aled is not None else led.adopt(name, token)

            async def wait(ad: Any, **kw: Any) -> Any:
                return await ad.wait(**kw) if aled is not None else ad.wait(**kw)

            mine, a, b = await adopt("top", ctx.top.token), await adopt("kid", kid.token), \
                await adopt("far", far.token)
            assert (mine.rebound, a.rebound, b.rebound) == (True, False, False)
            with pytest.raises(RuntimeError, match=r"^holder 'top' \(token \d+\) is bound to this process"):
                await wait(mine)  # no other process to wait for (as Thread.join() of the current thread)
            with pytest.raises(subprocess.TimeoutExpired, match=f"pid {child}"):
                await wait(a, timeout=0)  # running: as Spawned.wait, nothing released
            assert led.check("kid", kid.token) and led.check("top", ctx.top.token)
            os.kill(child, signal.SIGTERM)
            os.kill(stranger, signal.SIGKILL)
            got = [await wait(a, timeout=BOUND), await wait(b, timeout=BOUND)]
            got += [await wait(a), await wait(b)]  # released: the same again, at once
            return got + [a.returncode, b.returncode]

        if driver == "Adopted":
            got = asyncio.run(flow(None))
        else:
            got = ctx.run(lambda aled: flow(aled))
        assert got == [-signal.SIGTERM, None, -signal.SIGTERM, None, -signal.SIGTERM, None]
        assert type(got[0]) is int
        assert not led.check("kid", kid.token) and not led.check("far", far.token)
        assert led.check("top", ctx.top.token)  # the rebound grant: kept
    finally:
        kill_and_reap((child, stranger), child)
