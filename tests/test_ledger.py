"""Library behaviour of Ledger beyond the seed's scenarios."""

import os
import threading

import attrs
import orjson
import pytest

from scopeledger import (
    DelegationError,
    InvalidHolderName,
    InvalidScope,
    Ledger,
    Liveness,
    ScopeConflict,
    ScopeRule,
    UnknownHolder,
)
from helpers import Rd, W


def log_lines(ledger_dir):
    with open(os.path.join(ledger_dir, "events.jsonl"), "rb") as f:
        return [orjson.loads(line) for line in f.read().splitlines()]


def test_allocation_fields(ledger):
    a = ledger.register("A", [W("/r")], socket="/run/x/A/sock")
    assert a.name == "A" and a.parent is None and a.pid == os.getpid()
    assert a.rules == (W("/r"),)
    assert a.token == 1 and a.socket == "/run/x/A/sock"
    assert a.process.ticks is not None and a.process.boot
    assert a.granted_at.tzinfo is not None


def test_tuples_are_accepted_as_rules(ledger):
    a = ledger.register("A", [("/r/a", "write"), ("/r/b", "read", False)])
    assert a.rules == (W("/r/a"), Rd("/r/b", rec=False))


def test_tokens_are_new_on_every_grant(ledger):
    first = ledger.register("A", [W("/r")])
    assert ledger.check("A", first.token)
    ledger.release("A")
    assert not ledger.check("A", first.token)
    second = ledger.register("A", [W("/r")])
    assert second.token != first.token
    assert ledger.check("A", second.token) and not ledger.check("A", first.token)
    with pytest.raises(UnknownHolder):
        ledger.release("A", token=first.token)
    assert ledger.holder("A").token == second.token


@pytest.mark.parametrize("name", ["", "..", ".x", "x" * 256, None, 3, "é", "abc\n", "a\nb", "a//b", "a/", "/a",
                                  "a/../b", "a/./b", "a b ", " a", "a /b", "a\tb"])
def test_bad_holder_names(ledger, name):
    with pytest.raises(InvalidHolderName):
        ledger.register(name, [W("/r")])
    assert log_lines(ledger.path) == []


@pytest.mark.parametrize("rules", [[], "not rules", [("/r",)], [("relative", "write")], [object()]])
def test_bad_rules_record_nothing(ledger, rules):
    ledger.register("keep", [W("/keep")])
    with pytest.raises(InvalidScope):
        ledger.register("A", rules)
    assert [e["type"] for e in log_lines(ledger.path)] == ["registered"]


def test_unknown_holder_errors(ledger):
    with pytest.raises(UnknownHolder, match="'ghost'"):
        ledger.release("ghost")
    with pytest.raises(UnknownHolder):
        ledger.delegate("ghost", "child", [W("/r")])
    with pytest.raises(UnknownHolder):
        ledger.effective_scope("ghost")
    with pytest.raises(UnknownHolder):
        ledger.attach("ghost")
    assert isinstance(UnknownHolder("x"), LookupError)
    assert log_lines(ledger.path) == []


def test_argument_types_are_checked_before_anything_is_recorded(ledger, ledger_dir):
    from scopeledger import InvalidProcess

    a = ledger.register("a", [W("/a")])
    before = log_lines(ledger.path)
    with pytest.raises(UnknownHolder, match=rf"live with another grant \(token {a.token}, not 99\)"):
        ledger.release("a", token=99)
    for token in (True, "1", 1.0):
        with pytest.raises(TypeError, match="token must be an int"):
            ledger.release("a", token=token)
        with pytest.raises(TypeError, match="token must be an int"):
            ledger.check("a", token)
    for name in (5, None, "bad/../name"):
        with pytest.raises(InvalidHolderName):
            ledger.holder(name)
        with pytest.raises(InvalidHolderName):
            ledger.check(name, a.token)
    for pid in (float(os.getpid()), True, 1.0, "1", 0, -3):
        with pytest.raises(InvalidProcess, match="must be an int|must be positive"):
            ledger.register("b", [W("/b")], pid=pid)
    with pytest.raises(ValueError, match="timeout"):
        Ledger.open(ledger_dir, timeout=True)
    assert log_lines(ledger.path) == before


def test_a_rule_given_twice_is_held_once_and_subclasses_are_plain_rules(ledger):
    class Tagged(ScopeRule):
        pass

    class Broken(ScopeRule):
        def __init__(self, path):  # never calls ScopeRule.__init__
            pass

    alloc = ledger.register("a", [W("/a"), W("/a"), Rd("/r"), ("/a", "write")])
    assert alloc.rules == (W("/a"), Rd("/r"))
    assert [r[:3] for r in log_lines(ledger.path)[-1]["holder"]["rules"]] == [["/a", "write", True],
                                                                                 ["/r", "read", True]]
    b = ledger.register("b", [Tagged("/b/x/..", "write")])
    assert b.rules == (W("/b"),) and type(b.rules[0]) is ScopeRule
    with pytest.raises(InvalidScope, match="invalid rule"):
        ledger.register("c", [Broken("/c")])


def test_refusals_are_recorded_once_until_the_state_changes(ledger):
    ledger.register("A", [W("/r")])
    for _ in range(20):
        with pytest.raises(ScopeConflict):
            ledger.register("B", [W("/r/x")])
    types = [e["type"] for e in log_lines(ledger.path)]
    assert types == ["registered", "refused"]
    refused = log_lines(ledger.path)[1]
    assert refused["chain"] == ["A"] and refused["request"]["name"] == "B"
    assert "conflicts with holder 'A'" in refused["message"]
    ledger.register("C", [W("/other")])
    with pytest.raises(ScopeConflict):
        ledger.register("B", [W("/r/x")])
    assert [e["type"] for e in log_lines(ledger.path)][-2:] == ["registered", "refused"]


def test_delegated_reads_must_be_covered_by_parent_rules(ledger):
    ledger.register("A", [W("/r/src"), Rd("/r/docs")])
    ledger.delegate("A", "B", [Rd("/r/docs/x"), Rd("/r/src/y")])
    with pytest.raises(DelegationError):
        ledger.delegate("A", "C", [W("/r/docs/x")])  # a write inside a read
    with pytest.raises(DelegationError):
        ledger.delegate("A", "C", [Rd("/elsewhere")])


def test_delegated_reads_do_not_block_siblings(ledger):
    ledger.register("A", [W("/r")])
    ledger.delegate("A", "B", [Rd("/r/x")])
    ledger.delegate("A", "C", [W("/r/x")])


def test_grandchild_blocks_a_new_child(ledger):
    ledger.register("A", [W("/r")])
    ledger.delegate("A", "B", [W("/r/b")])
    ledger.delegate("B", "D", [W("/r/b/d")])
    with pytest.raises(DelegationError) as info:
        ledger.delegate("B", "E", [W("/r/b/d/e")])
    assert info.value.sibling == "D"
    assert info.value.chain == ("A", "B", "D")


def test_holder_with_own_overlapping_rules(ledger):
    ledger.register("A", [W("/r"), W("/r/x"), Rd("/r/x/y")])
    ledger.delegate("A", "B", [W("/r/x/z")])
    ledger.release("B")
    ledger.release("A")
    ledger.register("C", [W("/")])


def test_effective_scope(ledger):
    ledger.register("A", [W("/r"), Rd("/docs")])
    ledger.delegate("A", "B", [W("/r/b")])
    eff = ledger.effective_scope("A")
    assert eff.rules == (W("/r"), Rd("/docs"))
    assert eff.delegated == (("B", W("/r/b")),)
    assert eff.allows(W("/r/c"))
    assert not eff.allows(W("/r/b/x"))
    assert not eff.allows(W("/r"))
    assert eff.allows(Rd("/r/b/x"))
    assert eff.allows(Rd("/docs/x")) and not eff.allows(W("/docs/x"))


def test_reserved_delegation_and_attach(ledger):
    import subprocess

    ledger.register("runtime", [W("/r")])
    child = ledger.delegate("runtime", "worker", [W("/r/w")], reserved=True)
    assert child.reserved and child.pid == os.getpid()
    proc = subprocess.Popen(["sleep", "30"])
    try:
        attached = ledger.attach("worker", pid=proc.pid)
        assert attached.pid == proc.pid and not attached.reserved
        assert attached.token == child.token
        assert ledger.reclaim_stale() == []
    finally:
        proc.kill()
        proc.wait()
    assert ledger.reclaim_stale() == ["worker"]
    assert [e["type"] for e in log_lines(ledger.path)] == ["registered", "delegated", "attached", "reclaimed"]


def test_dead_owner_in_the_way_is_reclaimed_on_the_hot_path(ledger_dir):
    dead = set()
    led = Ledger.open(ledger_dir, probe=lambda ident: Liveness.GONE if ident.pid in dead else Liveness.ALIVE)
    led.register("A", [W("/r")], pid=os.getpid())
    led.register("other", [W("/other")])
    dead.add(os.getpid())
    calls = []
    real = led._probe
    led._probe = lambda ident: calls.append(ident) or real(ident)
    led.register("B", [W("/r/x")], pid=os.getppid())
    assert len(calls) == 1  # only the holder in the way was probed, not "other"
    types = [e["type"] for e in log_lines(ledger_dir)]
    assert types == ["registered", "registered", "reclaimed", "registered"]
    # "other" has the same (dead) pid but was not in the way: the hot path left it.
    assert [a.name for a in led.holders()] == ["other", "B"]


def test_duplicate_name_of_a_dead_holder_is_reclaimed(ledger_dir):
    led = Ledger.open(ledger_dir, probe=lambda ident: ident.pid != 999999)
    led.register("A", [W("/r")], pid=os.getppid())
    led._identity = lambda pid: attrs.evolve(led.actor, pid=999999, ticks=1)
    led.register("B", [W("/b")], pid=123)
    led._identity = Ledger._identity.__get__(led)
    led.register("B", [W("/b")])
    assert [e["type"] for e in log_lines(ledger_dir)] == ["registered", "registered", "reclaimed", "registered"]


def test_probe_errors_keep_the_holder(ledger):
    ledger.register("A", [W("/r")])

    def broken(ident):
        raise PermissionError("cannot read /proc")
    assert ledger.reclaim_stale(broken) == []
    assert ledger.reclaim_stale(lambda i: Liveness.UNKNOWN) == []
    assert [a.name for a in ledger.holders()] == ["A"]


def test_reclaim_dry_run_records_nothing(ledger):
    ledger.register("A", [W("/r")])
    assert ledger.reclaim_stale(lambda i: False, dry_run=True) == ["A"]
    assert [a.name for a in ledger.holders()] == ["A"]


def test_two_threads_racing_exactly_one_wins(ledger_dir):
    def contender(led, barrier, results, name, path):
        barrier.wait()
        try:
            led.register(name, [W(path)])
            results.append(name)
        except ScopeConflict:
            pass

    for round_ in range(20):
        led = Ledger.open(ledger_dir)
        barrier = threading.Barrier(2)
        results = []
        t1 = threading.Thread(target=contender, args=(led, barrier, results, f"a{round_}", f"/race{round_}"))
        t2 = threading.Thread(target=contender, args=(led, barrier, results, f"b{round_}", f"/race{round_}/x"))
        t1.start(), t2.start(), t1.join(), t2.join()
        assert len(results) == 1
        led.close()


def test_two_ledger_objects_in_one_process_exclude_each_other(ledger_dir):
    one, two = Ledger.open(ledger_dir), Ledger.open(ledger_dir)
    barrier = threading.Barrier(8)
    wins = []

    def contender(led, i):
        barrier.wait()
        try:
            led.register(f"h{i}", [W("/shared")])
            wins.append(i)
        except ScopeConflict:
            pass
    threads = [threading.Thread(target=contender, args=((one, two)[i % 2], i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert one.verify().ok
    assert [a.name for a in one.holders()] == [a.name for a in two.holders()] == [f"h{wins[0]}"]


def test_another_objects_events_are_seen(ledger_dir):
    one, two = Ledger.open(ledger_dir), Ledger.open(ledger_dir)
    one.register("A", [W("/r")])
    with pytest.raises(ScopeConflict):
        two.register("B", [W("/r/x")])
    two.release("A")
    one.register("B", [W("/r/x")])
    assert [a.name for a in two.holders()] == ["B"]


def test_symlinked_alias_of_a_held_directory_conflicts(ledger, tmp_path):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    ledger.register("A", [W(str(real / "sub"))])
    with pytest.raises(ScopeConflict):
        ledger.register("B", [W(str(alias / "sub" / "file"))])
    b = ledger.register("B", [Rd(str(alias / "sub"))])
    assert b.rules[0].path == str(real / "sub")  # the event records the canonical path
    # A path that does not exist yet keeps its lexical form below the real part.
    c = ledger.register("C", [W(str(alias / "new" / "x"))])
    assert c.rules[0].path == str(real / "new" / "x")


def test_a_clock_stepping_back_is_recorded_as_it_read(ledger_dir):
    """Format v2: each event's own clock reading, never clamped (the order
    is the seq); v1 writers clamped (issue 13 item 14)."""
    times = iter([5_000, 4_000, 6_000])
    led = Ledger.open(ledger_dir, clock=lambda: next(times))
    led.register("a", [W("/a")])
    led.register("b", [W("/b")])
    led.register("c", [W("/c")])
    assert [e["ts"] for e in log_lines(ledger_dir)] == [5_000, 4_000, 6_000]
    state = Ledger.open(ledger_dir).state()
    assert (state.last_ts, state.max_ts, state.clock_back_seq) == (6_000, 6_000, 2)


@pytest.mark.parametrize("pid, why", [(2**22 + 12345, "no such process"), ("123", "must be an int"),
                                      (-5, "must be positive"), (0, "must be positive"),
                                      (True, "must be an int")])
def test_bad_pids(ledger, pid, why):
    from scopeledger import InvalidProcess
    with pytest.raises(InvalidProcess, match=why):
        ledger.register("A", [W("/r")], pid=pid)
    assert log_lines(ledger.path) == []


def test_dotdot_after_a_symlink_is_resolved_physically(ledger, tmp_path):
    target = tmp_path / "t3" / "deep" / "dir"
    target.mkdir(parents=True)
    (tmp_path / "t2").mkdir()
    (tmp_path / "t2" / "link").symlink_to(target)
    ledger.register("owner", [W(str(tmp_path / "t3" / "deep"))])
    # /t2/link/.. is /t3/deep (the link target's parent), not /t2.
    with pytest.raises(ScopeConflict):
        ledger.register("sneaky", [W(str(tmp_path / "t2" / "link" / ".."))])
    from scopeledger import parse_rule
    with pytest.raises(ScopeConflict):
        ledger.register("sneaky", [parse_rule("link/..", "write", str(tmp_path / "t2"))])
    assert [h.name for h in ledger.who(str(tmp_path / "t3" / "deep" / "x"))] == ["owner"]


@pytest.mark.parametrize("socket", [object(), 5, "relative/sock", "/a\x00b"])
def test_bad_socket_paths(ledger, socket):
    with pytest.raises(InvalidScope, match="invalid socket"):
        ledger.register("A", [W("/r")], socket=socket)
    assert log_lines(ledger.path) == []


def test_events_types_may_be_one_string(ledger):
    ledger.register("A", [W("/r")])
    assert [e.type for e in ledger.events(types="registered")] == ["registered"]


def test_closing_a_ledger_releases_its_live_guards(ledger_dir):
    led = Ledger.open(ledger_dir)
    guard = led.hold("g", [W("/g")])
    led.register("plain", [W("/p")])  # not a guard: stays
    led.close()
    assert guard.released
    again = Ledger.open(ledger_dir)
    assert [a.name for a in again.holders()] == ["plain"]
