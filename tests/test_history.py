"""Time travel, audit queries, fencing, verify."""

import datetime as dt
import os

import orjson
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from scopeledger import (CorruptLedger, DelegationError, HistoryUnavailable, InvalidHolderName, Ledger, ScopeConflict,
                         ScopeRule, verify)
from scopeledger._events import line_hash
from scopeledger._fold import State, apply

from history_gen import random_history

W = lambda p, rec=True: ScopeRule(p, "write", rec)  # noqa: E731
Rd = lambda p, rec=True: ScopeRule(p, "read", rec)  # noqa: E731


def prefix_folds(ledger_dir):
    """Reference: the fold of every prefix of the log, from scratch."""
    state = State()
    out = [state.to_json()]
    with open(os.path.join(ledger_dir, "events.jsonl"), "rb") as f:
        for line in f.read().splitlines():
            apply(state, orjson.loads(line), line_hash(line))
            out.append(state.to_json())
    return out


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), every=st.integers(3, 40))
def test_state_at_every_seq_equals_a_fresh_fold_of_the_prefix(tmp_path_factory, seed, every):
    path = str(tmp_path_factory.mktemp("h") / "ledger")
    with Ledger.open(path, snapshot_every=every) as led:
        random_history(led, 150, seed)
        expected = prefix_folds(path)
        assert len(expected) == led.seq + 1
        for seq, want in enumerate(expected):
            assert led.state_at(seq=seq).to_json() == want, seq


def test_state_at_time_means_after_every_event_at_or_before_it(ledger_dir):
    clock = iter([1_000, 2_000, 3_000, 4_000])
    led = Ledger.open(ledger_dir, clock=lambda: next(clock), snapshot_every=2)
    led.register("a", [W("/a")])        # ts 1000
    led.register("b", [W("/b")])        # ts 2000
    led.release("a")                    # ts 3000
    led.register("c", [W("/c")])        # ts 4000

    def at(ns):
        t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ns / 1000)
        return sorted(led.state_at(time=t).holders)
    assert at(0) == []
    assert at(1_000) == ["a"]
    assert at(2_500) == ["a", "b"]      # between two events: after the earlier
    assert at(3_000) == ["b"]
    assert at(10**12) == ["b", "c"]
    naive = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=2.5)
    assert sorted(led.state_at(time=naive).holders) == ["a", "b"]  # naive = UTC


def test_state_at_outside_history_is_a_clear_error(ledger):
    ledger.register("a", [W("/a")])
    with pytest.raises(HistoryUnavailable, match="seq 0 to 1"):
        ledger.state_at(seq=5)
    with pytest.raises(HistoryUnavailable):
        ledger.state_at(seq=-1)
    with pytest.raises(TypeError):
        ledger.state_at()
    with pytest.raises(TypeError):
        ledger.state_at(seq=1, time=dt.datetime.now(dt.timezone.utc))


def test_who_with_chain_now_and_in_the_past(ledger):
    ledger.register("A", [W("/r")])
    ledger.delegate("A", "B", [W("/r/src")])
    ledger.delegate("B", "D", [W("/r/src/parser")])
    ledger.register("R", [Rd("/r/src/parser", rec=False)])
    mid = ledger.seq
    ledger.release("D")
    now = ledger.who("/r/src/parser/x.py")
    assert [(h.chain, h.deepest) for h in now] == [(("A",), False), (("A", "B"), True), (("R",), True)]
    then = ledger.who("/r/src/parser/x.py", seq=mid)
    assert [h.chain for h in then if h.deepest] == [("A", "B", "D"), ("R",)]
    assert ledger.who("/r/src/parser/deep/er.py", seq=mid)[-1].chain == ("A", "B", "D")
    assert ledger.who("/elsewhere") == []
    assert [h.name for h in ledger.who("/r-backup")] == []


def test_history_follows_the_delegated_subtree(ledger):
    ledger.register("A", [W("/r")])
    ledger.register("X", [W("/x")])
    ledger.delegate("A", "B", [W("/r/b")])
    ledger.delegate("B", "D", [W("/r/b/d")])
    ledger.delegate("X", "Y", [W("/x/y")])
    with pytest.raises(DelegationError, match="overlaps sibling 'D'"):
        ledger.delegate("B", "E", [W("/r/b/d/e")])
    ledger.release("B")
    assert [(e.seq, e.type) for e in ledger.history("B")] == [
        (3, "delegated"), (4, "delegated"), (6, "refused"), (7, "released")]
    assert [e.type for e in ledger.history("nobody")] == []


def test_diff(ledger):
    ledger.register("A", [W("/r")])
    ledger.delegate("A", "B", [W("/r/b")])
    ledger.delegate("B", "D", [W("/r/b/d")])
    a = ledger.seq
    ledger.release("B")
    ledger.register("E", [W("/e")])
    ledger.release("E")
    ledger.register("E", [W("/e")])
    d = ledger.diff(a, ledger.seq)
    assert d.added == ("E",) and d.removed == ("B",)
    assert d.reparented == (("D", "B", "A"),)
    assert ledger.diff(2, 7).regranted == ()
    assert ledger.diff(5, 7).regranted == ("E",)


def test_event_filters(ledger):
    ledger.register("A", [W("/r/a")])
    ledger.register("B", [W("/r/b")])
    ledger.release("A")
    with pytest.raises(ScopeConflict):
        ledger.register("C", [W("/r/b/c")])
    assert [e.seq for e in ledger.events(since=2, until=3)] == [2, 3]
    assert [e.type for e in ledger.events(types=["refused"])] == ["refused"]
    assert [e.seq for e in ledger.events(path="/r/a/file")] == [1, 3]
    assert [e.seq for e in ledger.events(path="/r/b/c")] == [2, 4]
    with pytest.raises(ValueError, match="unknown event type"):
        list(ledger.events(types=["exploded"]))
    first = next(iter(ledger.events()))
    assert first.time.tzinfo == dt.timezone.utc and first.actor["pid"] == os.getpid()


def test_fencing_check(ledger):
    a = ledger.register("A", [W("/r")])
    assert ledger.check("A", a.token)
    assert not ledger.check("A", a.token + 1)
    ledger.release("A")
    assert not ledger.check("A", a.token)
    b = ledger.register("A", [W("/r")])
    assert ledger.check("A", b.token) and not ledger.check("A", a.token)


def test_verify_counts_what_it_checked(ledger_dir):
    with Ledger.open(ledger_dir, snapshot_every=10) as led:
        random_history(led, 100, seed=3)
        report = led.verify()
        assert report.ok and report.events == led.seq
    assert report.snapshots == len(os.listdir(os.path.join(ledger_dir, "snapshots")))
    assert f"{report.events} events" in str(report)


def tamper_line(ledger_dir, index, edit):
    """Damage line ``index`` (0-based, a grant) of the log in one of five ways;
    returns the log's path."""
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines()
    ev = orjson.loads(lines[index])
    if edit == "payload":
        ev["holder"]["rules"][0][0] = "/h/everything"
    elif edit == "seq":
        ev["seq"] = 50
    elif edit == "prev":
        ev["prev"] = "f" * 32
    if edit in ("payload", "seq", "prev"):
        lines[index] = orjson.dumps(ev)
    elif edit == "json":
        lines[index] = lines[index][:-5]
    else:
        del lines[index]
    open(log, "wb").write(b"\n".join(lines) + b"\n")
    return log


@pytest.mark.parametrize("edit", ["payload", "seq", "prev", "json", "drop"])
def test_verify_finds_a_tampered_line_in_the_middle_at_its_seq(ledger_dir, edit):
    with Ledger.open(ledger_dir) as led:
        for i in range(10):
            led.register(f"h{i}", [W(f"/h/{i}")])
    log = tamper_line(ledger_dir, 4, edit)
    with pytest.raises(CorruptLedger):
        Ledger.open(ledger_dir)
    rep = verify(ledger_dir)  # examines what open refuses
    assert not rep.ok
    first = rep.problems[0]
    # Line 5 (seq 5) was tampered with; a dropped line shows as a gap at line 5.
    assert first.file == log and first.line == 5, str(first)
    expected_seq = {"payload": 5, "seq": 50, "prev": 5, "json": None, "drop": 6}[edit]
    assert first.seq == expected_seq, str(first)


def test_invariant_breaking_event_is_found_by_verify(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])
        led.register("b", [W("/b")])
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines()
    ev = orjson.loads(lines[1])
    a_rule = orjson.loads(lines[0])["holder"]["rules"][0]
    # A second writer inside a's scope (its identity too: rules are compared by it).
    ev["holder"]["rules"][0] = ["/a/inside", "write", True, {"fs": a_rule[3]["fs"] + "/inside"}]
    lines[1] = orjson.dumps(ev)
    open(log, "wb").write(b"\n".join(lines) + b"\n")
    rep = verify(ledger_dir)
    assert not rep.ok and rep.problems[0].seq == 2
    assert "breaks an invariant" in rep.problems[0].message


@given(st.lists(st.binary(max_size=12), max_size=8))
def test_iter_lines_matches_split_lines(chunks):
    from scopeledger._events import iter_lines, split_lines
    assert list(iter_lines(chunks)) == [line for line, _s, _e in split_lines(chunks, 0)]



def _report_tuple(rep):
    return rep.ok, rep.events, rep.snapshots, [(p.file, p.line, p.seq, p.message) for p in rep.problems], rep.notes


def test_parallel_verify_reports_what_one_process_reports(ledger_dir):
    with Ledger.open(ledger_dir, snapshot_every=12) as led:
        random_history(led, 400, seed=11)
        assert led._history._verify_parallel(3) is not None  # the segments were really verified apart
        one, many = led.verify(workers=1), led.verify(workers=3)
    assert one.ok and one.snapshots > 10
    assert _report_tuple(many) == _report_tuple(one)
    # A torn last line is a note of the last segment's.
    with open(os.path.join(ledger_dir, "events.jsonl"), "ab") as f:
        f.write(b'{"v":1,"se')
    one, many = verify(ledger_dir, workers=1), verify(ledger_dir, workers=3)
    assert one.ok and one.notes and _report_tuple(many) == _report_tuple(one)


@pytest.mark.parametrize("edit", ["payload", "prev", "json", "drop", "snapshot"])
def test_parallel_verify_finds_a_late_problem_exactly_as_one_process(ledger_dir, edit):
    with Ledger.open(ledger_dir, snapshot_every=10) as led:
        for i in range(60):
            led.register(f"h{i}", [W(f"/h/{i}")])
            led.release(f"h{i}")
    if edit == "snapshot":  # a snapshot that checks out but differs from the fold
        import hashlib

        snaps = sorted(os.listdir(os.path.join(ledger_dir, "snapshots")))
        victim = os.path.join(ledger_dir, "snapshots", snaps[-3])
        header, body, _ = open(victim, "rb").read().split(b"\n")
        body = body.replace(b'"last_ts":', b'"last_ts":1', 1)
        h = orjson.loads(header)
        h["checksum"] = hashlib.blake2b(body, digest_size=16).hexdigest()
        open(victim, "wb").write(orjson.dumps(h) + b"\n" + body + b"\n")
    else:
        tamper_line(ledger_dir, 98, edit)  # a grant, in the last segments
    one, many = verify(ledger_dir, workers=1), verify(ledger_dir, workers=3)
    assert not one.ok
    assert _report_tuple(many) == _report_tuple(one)


def _small_history(ledger_dir):
    """Six events: grants, a reserved delegation, an attach, a release that
    re-parents, another grant."""
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a"), ScopeRule("/shared", "read")])  # 1
        led.register("b", [W("/b")])                                   # 2
        led.delegate("a", "c", [W("/a/c")], reserved=True)             # 3
        led.attach("c")                                                # 4
        led.release("a")                                               # 5: c goes to top level
        led.register("d", [W("/d")])                                   # 6


def _edit_and_rechain(ledger_dir, index, edit):
    """Edit the event on line ``index`` (0-based) and rewrite the hash chain
    after it, so that verify reaches the fold's checks of that event."""
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines()
    ev = orjson.loads(lines[index])
    edit(ev)
    lines[index] = orjson.dumps(ev)
    for j in range(index + 1, len(lines)):
        e = orjson.loads(lines[j])
        e["prev"] = line_hash(lines[j - 1])
        lines[j] = orjson.dumps(e)
    open(log, "wb").write(b"\n".join(lines) + b"\n")


# verify checks a payload once (check_event) and folds what the check read;
# the report must stay word for word what checking it twice gave.
_PAYLOAD_EDITS = {
    "not normal": (1, lambda e: e["holder"]["rules"].__setitem__(0, ["/b/../b", "write", True]),
                   "holder.rules[0] path is '/b/../b', not a normalised path"),
    "no rules": (1, lambda e: e["holder"].__setitem__("rules", []),
                 "holder.rules is [], not a non-empty list of [path, permission, recursive]"),
    "flag not bool": (5, lambda e: e["holder"]["rules"].__setitem__(0, ["/d", "write", 1]),
                      "holder.rules[0] is ['/d', 'write', 1], not [absolute path, \"read\"|\"write\", true|false]"),
    "no parent key": (1, lambda e: e["holder"].pop("parent"),
                      "registered event breaks an invariant: 'parent'"),
    "overlap": (1, lambda e: e["holder"]["rules"].__setitem__(0, ["/a/inside", "write", True]),
                "registered event breaks an invariant: write /a/inside/** conflicts with holder 'a' "
                "holding write /a/**"),
    "outside parent": (2, lambda e: e["holder"]["rules"].__setitem__(0, ["/b", "write", True]),
                       "delegated event breaks an invariant: cannot delegate write /b/** from 'a' to 'c': "
                       "not inside the effective write scope of 'a'"),
    "duplicate": (1, lambda e: e["holder"].__setitem__("name", "a"),
                  "registered event breaks an invariant: holder 'a' is already registered"),
    "attach unknown": (3, lambda e: e.__setitem__("name", "zz"), "attach to 'zz', which is not live"),
    "attach process": (3, lambda e: e.__setitem__("process", {"host": None, "boot": "b", "pid": "1", "ticks": 1,
                                                              "pidns": None}),
                       "process is {'host': None, 'boot': 'b', 'pid': '1', 'ticks': 1, 'pidns': None}, not "
                       "{\"host\": str|null, \"boot\": str|null, \"pid\": int, \"ticks\": int > 0|null, "
                       "\"pidns\": str|null[, \"session\": int 1..2**31-1]}"),
    "re-parenting": (4, lambda e: e.__setitem__("reparented", []),
                     "recorded re-parenting [] differs from the fold's [['c', None]]"),
    "release unknown": (4, lambda e: e.__setitem__("name", "zz"), "removal of 'zz', which is not live"),
}


@pytest.mark.parametrize("case", sorted(_PAYLOAD_EDITS))
def test_verify_words_a_bad_payload_exactly(ledger_dir, case):
    index, edit, message = _PAYLOAD_EDITS[case]
    _small_history(ledger_dir)
    assert verify(ledger_dir).ok
    _edit_and_rechain(ledger_dir, index, edit)
    for workers in (1, 2):
        rep = verify(ledger_dir, workers=workers)
        assert not rep.ok and len(rep.problems) == 1
        p = rep.problems[0]
        assert (p.line, p.seq, p.message) == (index + 1, index + 1, message)


def test_verify_checks_each_payload_once(ledger_dir, monkeypatch):
    from scopeledger import _events

    _small_history(ledger_dir)
    calls = []
    real = _events.rules_from_log

    def counting(value, what, version):
        calls.append(what)
        return real(value, what, version)

    monkeypatch.setattr(_events, "rules_from_log", counting)
    assert verify(ledger_dir, workers=1).ok
    assert calls == ["holder.rules"] * 4  # four grants, each checked once


# -- replay checks the chain ----------------------------------------------------------


def _chained_ledger(tmp_path, n=12, snapshot_every=5):
    d = tmp_path / "chain"
    with Ledger.open(d, snapshot_every=snapshot_every) as led:
        for i in range(n):
            led.register(f"h{i}", [ScopeRule(f"/w/{i}", "write")])
    return d


def _lines(d):
    return (d / "events.jsonl").read_bytes().splitlines(keepends=True)


def _tamper(d, edit):
    lines = _lines(d)
    edit(lines)
    (d / "events.jsonl").write_bytes(b"".join(lines))


def _edit_line(lineno):
    def edit(lines):
        i = lineno - 1
        lines[i] = lines[i].replace(b'"/w/', b'"/W/', 1)
    return edit


def _swap(a, b):
    def edit(lines):
        lines[a - 1], lines[b - 1] = lines[b - 1], lines[a - 1]
    return edit


def _drop(lineno):
    def edit(lines):
        del lines[lineno - 1]
    return edit


@pytest.mark.parametrize("edit, line, words", [
    (_edit_line(3), 4, "hash chain broken"),   # line 3 altered: line 4's prev no longer matches
    (_swap(3, 4), 3, "seq 4 where 3 should be"),
    (_drop(3), 3, "seq 4"),                    # (opening already stops: the snapshot's offset moved)
])
def test_replay_refuses_a_line_altered_moved_or_removed_before_the_newest_snapshot(
        tmp_path, edit, line, words):
    d = _chained_ledger(tmp_path)
    assert [name for name in os.listdir(d / "snapshots") if name.startswith("snap-")]
    assert [e.seq for e in Ledger.open(d, readonly=True).events()] == list(range(1, 13))
    _tamper(d, edit)
    with pytest.raises(CorruptLedger) as info:
        # Opening reads the newest snapshot and the lines after it (the edit
        # is before it); the replay reads every line.
        list(Ledger.open(d, readonly=True).events())
    assert info.value.line == line, info.value
    assert words in str(info.value)
    assert not verify(d).ok
    for replay in (lambda led: led.history("h1"), lambda led: list(led.events(types=["registered"]))):
        with pytest.raises(CorruptLedger):
            replay(Ledger.open(d, readonly=True))


def test_replay_from_a_snapshot_checks_the_chain_from_the_snapshots_hash(tmp_path):
    d = _chained_ledger(tmp_path)
    led = Ledger.open(d, readonly=True)
    assert [e.seq for e in led.events(since=11)] == [11, 12]
    _tamper(d, _edit_line(11))  # after the snapshot at seq 10: line 12's prev breaks
    with pytest.raises(CorruptLedger) as info:
        list(Ledger.open(d, readonly=True).events(since=11))
    assert info.value.line == 12


@pytest.mark.parametrize("call, error, words", [
    (lambda led: led.state_at(time="2025-01-01"), TypeError, "time must be a datetime.datetime"),
    (lambda led: led.state_at(time=0.5), TypeError, "time must be a datetime.datetime or int"),
    (lambda led: led.state_at(time=True), TypeError, "time must be a datetime.datetime or int"),
    (lambda led: list(led.events(since_time="x")), TypeError, "since_time must be a datetime"),
    (lambda led: list(led.events(until_time=5.0)), TypeError, "until_time must be a datetime"),
    (lambda led: list(led.events(since="a")), TypeError, "since must be an int"),
    (lambda led: list(led.events(since=1.5)), TypeError, "since must be an int"),
    (lambda led: list(led.events(until=True)), TypeError, "until must be an int"),
    (lambda led: list(led.events(types=5)), TypeError, "types must be"),
    (lambda led: list(led.events(types=[1])), TypeError, "types must be"),
    (lambda led: list(led.events(holder=5)), InvalidHolderName, "invalid holder name"),
    (lambda led: led.history(5), InvalidHolderName, "invalid holder name"),
    (lambda led: led.history("bad/../name"), InvalidHolderName, "invalid holder name"),
    (lambda led: led.diff("1", 2), TypeError, "seq must be an int"),
])
def test_history_queries_refuse_wrong_types_naming_the_argument(tmp_path, call, error, words):
    d = tmp_path / "q"
    with Ledger.open(d) as led:
        led.register("a", [ScopeRule("/q/a", "write")])
        before = (d / "events.jsonl").read_bytes()
        with pytest.raises(error) as info:
            call(led)
        assert words in str(info.value)
    assert (d / "events.jsonl").read_bytes() == before


def test_a_seq_too_large_for_an_integer_says_so(tmp_path):
    d = _chained_ledger(tmp_path, n=3)
    log = d / "events.jsonl"
    log.write_bytes(log.read_bytes() + b'{"v":1,"seq":1000000000000000000000000000000}\n')
    with pytest.raises(CorruptLedger, match=r"too large for a seq"):
        list(Ledger.open(d, readonly=True).events())
