"""The public API the command line uses: Ledger.decide / would_grant (what a
request would meet now, dead holders in the way counted as reclaimed, nothing
recorded), canonical_rules, wait (news from another process) and
Ledger.open(fold=False) (a damaged ledger replayed up to its damage)."""

import os
import subprocess
import sys

import pytest

import scopeledger
from scopeledger import (
    CorruptLedger,
    Decision,
    DelegationError,
    DuplicateHolder,
    Ledger,
    ScopeConflict,
    ScopeRule,
    UnknownHolder,
)


def W(path):
    return ScopeRule(path, "write")


def _dead_pid():
    child = subprocess.Popen(["sleep", "600"])
    child.kill()
    child.wait()
    return child.pid


def _log(led):
    with open(os.path.join(led.path, "events.jsonl"), "rb") as f:
        return f.read()


def test_decide_counts_a_dead_holder_in_the_way_as_reclaimed_and_records_nothing(ledger, tmp_path):
    child = subprocess.Popen(["sleep", "600"])
    ledger.register("dead", [W("/r/a")], pid=child.pid)
    ledger.delegate("dead", "kid", [W("/r/a/k")], pid=child.pid)
    child.kill()
    child.wait()
    before = _log(ledger)
    d = ledger.decide("new", [W("/r/a")])
    assert isinstance(d, Decision) and d.granted and d.refusal is None
    assert [(r.name, r.reason, r.seq) for r in d.reclaimed] == [
        ("dead", "process_gone", None), ("kid", "process_gone", None)]
    assert d.reclaimed[0].reparented == (("kid", None),)
    assert d.reclaimed[0].pid == child.pid and "no longer exists" in d.reclaimed[0].why
    assert d.rules == ledger.canonical_rules([W("/r/a")])
    assert ledger.would_grant("new", [W("/r/a")]) is None
    assert _log(ledger) == before  # nothing recorded
    assert {a.name for a in ledger.holders()} == {"dead", "kid"}


def test_decide_refuses_as_register_and_delegate_would(ledger):
    ledger.register("a", [W("/r/a")])
    ledger.register("b", [W("/r/b")])
    ledger.delegate("a", "a1", [W("/r/a/x")])
    err = ledger.would_grant(None, [W("/r/a/x/y")])
    assert isinstance(err, ScopeConflict) and err.chain == ("a", "a1")
    assert isinstance(ledger.would_grant("b", [W("/r/c")]), DuplicateHolder)
    err = ledger.would_grant("a2", [W("/r/a/x")], parent="a")
    assert isinstance(err, DelegationError) and err.sibling == "a1"
    err = ledger.would_grant(None, [W("/r/b")], parent="a")
    assert isinstance(err, DelegationError) and "'(check)'" in str(err)
    # The same refusal register gives, in the same words; nothing recorded by decide.
    with pytest.raises(ScopeConflict) as exc:
        ledger.register("c", [W("/r/a/x/y")])
    assert str(exc.value) == str(ledger.would_grant("c", [W("/r/a/x/y")]))


def test_decide_raises_for_a_parent_that_is_not_live_or_another_grant(ledger):
    a = ledger.register("a", [W("/r/a")])
    with pytest.raises(UnknownHolder):
        ledger.decide("k", [W("/r/a/k")], parent="nobody")
    with pytest.raises(UnknownHolder, match="another grant"):
        ledger.decide("k", [W("/r/a/k")], parent="a", parent_token=a.token + 1)
    assert ledger.decide("k", [W("/r/a/k")], parent="a", parent_token=a.token).granted
    with pytest.raises(TypeError):
        ledger.decide("k", [W("/r/a/k")], parent_token=a.token)
    with pytest.raises(scopeledger.InvalidHolderName):
        ledger.decide("bad/../name", [W("/r/a/k")])


def test_canonical_rules_resolve_symlinks_and_drop_repeats(ledger, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    got = ledger.canonical_rules([W(str(tmp_path / "link")), W(str(real))])
    assert [r.path for r in got] == [str(real)]


def test_wait_returns_when_another_process_appends(ledger, ledger_dir):
    seq = ledger.seq
    assert ledger.wait(seq, timeout=0.1) == seq  # nothing new: the time runs out
    code = (f"from scopeledger import Ledger, ScopeRule\n"
            f"with Ledger.open({ledger_dir!r}) as led: led.register('other', [ScopeRule('/r/o', 'write')])\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        got = ledger.wait(seq, timeout=60)
    finally:
        child.wait()
    assert got == seq + 1 and ledger.holder("other")
    with pytest.raises(TypeError):
        ledger.wait("1")


def test_wait_sees_an_append_landing_right_after_it_folded(ledger, ledger_dir):
    """An append between wait()'s fold and its look at the log's size
    wakes it (it took the new bytes for the old size and slept to its
    timeout, as FileStore.wait did)."""
    seq = ledger.seq
    real_refresh = ledger.refresh

    def refresh_then_an_append() -> int:
        got = real_refresh()
        if got == seq:
            with Ledger.open(ledger_dir) as other:
                other.register("other", [W("/r/o")])
        return got

    ledger.refresh = refresh_then_an_append
    assert ledger.wait(seq, timeout=60) == seq + 1


def test_open_without_folding_replays_a_damaged_log_up_to_the_damage(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        for i in range(4):
            led.register(f"h{i}", [W(f"/r/{i}")])
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"h2"', b'"hX"')  # seq 3 edited: seq 4's prev no longer matches
    open(log, "wb").write(b"".join(lines))
    with pytest.raises(CorruptLedger):
        Ledger.open(ledger_dir, readonly=True)
    led = Ledger.open(ledger_dir, readonly=True, fold=False)
    seen = []
    with pytest.raises(CorruptLedger) as exc:
        for e in led.events():
            seen.append(e.seq)
    assert seen == [1, 2] and exc.value.line == 4  # seq 3 is not vouched for by seq 4
    with pytest.raises(CorruptLedger):
        led.holders()  # the current state is needed: folding it raises
    led.close()
    with pytest.raises(TypeError):
        Ledger.open(ledger_dir, fold=1)


def test_granted_at_is_its_events_time_to_the_microsecond(ledger_dir):
    # One time model: on 3773b62 granted_at rounded the nanoseconds (a float
    # division) while Event.time truncated them: 1 µs apart on about half of
    # all grants (here every one: each clock reading ends in ...999 ns).
    import datetime as dt
    import random

    rng = random.Random(5)
    readings = iter(rng.randrange(10**18, 2 * 10**18) // 1000 * 1000 + 999 for _ in range(200))
    with Ledger.open(ledger_dir, clock=lambda: next(readings)) as led:
        allocs = [led.register(f"h{i}", [W(f"/r/{i}")]) for i in range(100)]
        events = {e.seq: e for e in led.events()}
    for a in allocs:
        assert a.granted_at == events[a.token].time
        assert a.granted_at == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
            microseconds=a.granted_ns // 1000)


def test_every_time_argument_takes_a_datetime_or_int_nanoseconds(ledger):
    import datetime as dt

    a = ledger.register("a", [W("/r/a")])
    ledger.release("a")
    at = a.granted_ns
    assert ledger.state_at(time=at).holders.keys() == {"a"}
    assert ledger.state_at(time=at - 1).seq == 0
    assert ledger.state_at(time=a.granted_at + dt.timedelta(microseconds=1)).seq == 1
    assert [e.seq for e in ledger.events(since_time=at, until_time=at)] == [1]
    assert [h.name for h in ledger.who("/r/a", time=at)] == ["a"]
    assert ledger.time_point(at).seq == 1


def test_real_path_resolves_as_the_ledger_resolves_a_rule(tmp_path, monkeypatch):
    # A '..' after a symlink is the link target's parent (abspath would drop
    # it lexically); relative paths are from the working directory; NUL is
    # refused, named.
    (tmp_path / "deep" / "sub").mkdir(parents=True)
    (tmp_path / "lk").symlink_to(tmp_path / "deep" / "sub")
    monkeypatch.chdir(tmp_path)
    assert scopeledger.real_path("lk/../x") == str(tmp_path / "deep" / "x")
    assert scopeledger.real_path("lk/new/file") == str(tmp_path / "deep" / "sub" / "new" / "file")
    assert scopeledger.real_path(str(tmp_path / "missing")) == str(tmp_path / "missing")
    with Ledger.open(tmp_path / "led") as led:
        got = led.register("a", [ScopeRule(str(tmp_path / "lk" / ".." / "x"), "write")])
    assert got.rules[0].path == scopeledger.real_path("lk/../x")
    with pytest.raises(scopeledger.InvalidScope, match="contains NUL"):
        scopeledger.real_path("a\x00b")
