"""Issue 16, the peers' features: many paths in one question, force-release
with a reason, exclusive reads, advisory grants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scopeledger import Ledger, ScopeRule
from helpers import W, Rd, jl, ledger_cmd


# -- many paths at once ----------------------------------------------------------


def test_who_many_paths_one_answer_each(ledger: Ledger, tmp_path: Path) -> None:
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    ledger.register("wa", [W(a)])
    ledger.register("rb", [Rd(b)])
    answers = ledger.who([a + "/x", b, c])
    assert [[h.name for h in hs] for hs in answers] == [["wa"], ["rb"], []]
    assert ledger.who((a,))[0][0].rule == W(a)
    assert [h.name for h in ledger.who(a)] == ["wa"]  # one path: as before
    seq = ledger.seq
    ledger.release("wa")
    assert [[h.name for h in hs] for hs in ledger.who([a, b], seq=seq)] == [["wa"], ["rb"]]


def test_who_many_paths_bad_one_named(ledger: Ledger) -> None:
    from scopeledger import InvalidScope

    with pytest.raises(InvalidScope, match="'rel'"):
        ledger.who(["/ok", "rel"])
    with pytest.raises(InvalidScope, match="no paths"):
        ledger.who([])


def test_decide_each_one_decision_per_rule(ledger: Ledger, tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ledger.register("wa", [W(a)])
    seq = ledger.seq
    answers = ledger.decide_each(None, [W(a + "/x"), W(b), Rd(a)])
    assert [d.granted for d in answers] == [False, True, True]
    assert [d.rules for d in answers] == [(W(a + "/x"),), (W(b),), (Rd(a),)]
    assert answers[0].refusal.owner == "wa"
    assert ledger.seq == seq  # nothing recorded
    # delegation: each rule against the parent's scope
    d = ledger.decide_each("kid", [W(a + "/k"), W(b)], parent="wa")
    assert [x.granted for x in d] == [True, False]


def test_cli_who_several_paths(led: Path, tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with Ledger.open(led) as ledger:
        ledger.register("wa", [W(a)])
    res = ledger_cmd(led, "--json", "who", a, b)
    assert res.returncode == 0, res.stderr
    docs = jl(res.stdout)
    assert [d["path"] for d in docs] == [a, b]
    assert [[h["name"] for h in d["holders"]] for d in docs] == [["wa"], []]
    res = ledger_cmd(led, "who", a, b)
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and "wa" in lines[0] and a in lines[0] and "nobody" in lines[1], res.stdout


def test_cli_check_each(led: Path, tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with Ledger.open(led) as ledger:
        ledger.register("wa", [W(a)])
    res = ledger_cmd(led, "--json", "check", "--each", "--write", a + "/x", "--write", b)
    assert res.returncode == 1, res.stderr
    docs = jl(res.stdout)
    assert [d["granted"] for d in docs] == [False, True]
    assert docs[0]["conflict"]["owner"] == "wa"
    res = ledger_cmd(led, "check", "--each", "--write", b, "--read", a)
    assert res.returncode == 0
    assert [ln.split(":")[0] for ln in res.stdout.splitlines()] == ["granted", "granted"]


# -- force-release with a reason ---------------------------------------------------


def test_force_release_records_reason_and_actor(ledger: Ledger, tmp_path: Path) -> None:
    import os

    alloc = ledger.register("w", [W(str(tmp_path / "a"))])
    with Ledger.open(ledger.path) as operator:
        operator.release("w", force=True, reason="stuck job, ticket 42")
    assert not ledger.check("w", alloc.token)
    ev = list(ledger.events(types=("released",)))[-1]
    assert ev.data["forced"] == "stuck job, ticket 42"
    assert ev.actor["pid"] == os.getpid()
    line = (Path(ledger.path) / "events.jsonl").read_bytes().splitlines()[-1]
    assert json.loads(line)["forced"] == "stuck job, ticket 42"
    with Ledger.open(ledger.path) as again:  # folds back
        assert again.holders() == []


def test_force_release_bad_input_records_nothing(ledger: Ledger, tmp_path: Path) -> None:
    from scopeledger import InvalidArgument, UnknownHolder

    alloc = ledger.register("w", [W(str(tmp_path / "a"))])
    seq = ledger.seq
    for kwargs, said in (({"force": True}, "reason"), ({"force": True, "reason": ""}, "''"),
                         ({"force": True, "reason": 5}, "5"), ({"force": 1, "reason": "x"}, "1"),
                         ({"reason": "why"}, "force"), ({"force": True, "reason": "x" * 4097}, "4097")):
        with pytest.raises(InvalidArgument, match=said):
            ledger.release("w", **kwargs)
    with pytest.raises(UnknownHolder):  # the wrong token stays refused, forced or not
        ledger.release("w", alloc.token + 1)
    with pytest.raises(UnknownHolder):
        ledger.release("w", alloc.token + 1, force=True, reason="x")
    assert ledger.seq == seq and ledger.check("w", alloc.token)


def test_force_release_until_lost_returns_the_event(ledger: Ledger, tmp_path: Path) -> None:
    import asyncio
    import threading

    from scopeledger import AsyncLedger

    alloc = ledger.register("w", [W(str(tmp_path / "a"))])

    async def main():
        async with await AsyncLedger.open(ledger.path) as al:
            # The release comes once until_lost has seen the grant live (so it waits
            # for the event, not only finds it): a real condition, not a sleep.
            seen_live = asyncio.Event()
            check = al.check

            async def checked(name, token):
                live = await check(name, token)
                if live:
                    seen_live.set()
                return live

            al.check = checked
            lost = asyncio.ensure_future(al.until_lost("w", alloc.token))
            await asyncio.wait_for(seen_live.wait(), 30)

            def force() -> None:
                with Ledger.open(ledger.path) as other:
                    other.release("w", force=True, reason="maintenance")

            releaser = threading.Thread(target=force)
            releaser.start()
            try:
                return await asyncio.wait_for(lost, 30)
            finally:
                releaser.join(30)

    ev = asyncio.run(main())
    assert ev.type == "released" and ev.data["forced"] == "maintenance"


def test_cli_release_force(led: Path, tmp_path: Path) -> None:
    with Ledger.open(led) as ledger:
        ledger.register("w", [W(str(tmp_path / "a"))])
    res = ledger_cmd(led, "release", "w", "--force")
    assert res.returncode == 2 and "--reason" in res.stderr and "Traceback" not in res.stderr
    res = ledger_cmd(led, "release", "w", "--reason", "x")
    assert res.returncode == 2 and "--force" in res.stderr
    res = ledger_cmd(led, "--json", "release", "w", "--force", "--reason", "hung for 2 h")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["forced"] == "hung for 2 h"
    with Ledger.open(led) as ledger:
        assert list(ledger.events(types=("released",)))[-1].data["forced"] == "hung for 2 h"


def test_v1_line_with_forced_is_corrupt(led: Path, tmp_path: Path) -> None:
    from scopeledger import CorruptLedger
    from scopeledger._events import decode

    line = (b'{"v":1,"seq":1,"ts":1,"actor":{"pid":1,"start":1.0,"boot":"b"},"prev":"' + b"0" * 32
            + b'","type":"released","name":"w","reparented":[],"forced":"x"}')
    with pytest.raises(CorruptLedger, match="forced"):
        decode(line, "log", 1)


# -- exclusive reads ---------------------------------------------------------------


def X(path: str, rec: bool = True) -> ScopeRule:
    return ScopeRule(path, "exclusive-read", rec)


def test_exclusive_read_excludes_writers_not_readers(ledger: Ledger, tmp_path: Path) -> None:
    from scopeledger import Permission, ScopeConflict

    a = str(tmp_path / "a")
    ledger.register("x", [X(a)])
    assert ledger.holder("x").rules[0].permission is Permission.EXCLUSIVE_READ
    ledger.register("r", [Rd(a + "/sub")])          # a shared reader: fine
    ledger.register("x2", [X(a + "/sub")])          # another exclusive reader: fine
    with pytest.raises(ScopeConflict) as info:      # a writer below it: refused
        ledger.register("w", [W(a + "/sub/f", rec=False)])
    assert info.value.owner == "x" and info.value.owner_rule == X(a)
    ledger.release("x")
    ledger.release("x2")
    ledger.register("w", [W(a + "/sub")])
    with pytest.raises(ScopeConflict) as info:      # and a writer excludes it
        ledger.register("x3", [X(a)])
    assert info.value.owner == "w"
    ledger.register("r2", [Rd(a)])                  # shared reads still never conflict


def test_exclusive_read_delegation(ledger: Ledger, tmp_path: Path) -> None:
    from scopeledger import DelegationError

    a = str(tmp_path / "a")
    ledger.register("p", [W(a)])
    ledger.delegate("p", "c1", [X(a + "/s")])       # inside a write
    ledger.delegate("c1", "g", [X(a + "/s/t")])     # inside an exclusive read
    ledger.delegate("c1", "g2", [Rd(a + "/s/u")])   # a read inside it too
    with pytest.raises(DelegationError, match="not inside"):
        ledger.delegate("c1", "g3", [W(a + "/s/v")])  # a write is not inside an exclusive read
    with pytest.raises(DelegationError, match="sibling"):
        ledger.delegate("p", "c2", [W(a + "/s/w")])   # a sibling's write over c1's exclusive read
    ledger.register("q", [Rd(str(tmp_path / "b"))])
    with pytest.raises(DelegationError, match="not inside"):
        ledger.delegate("q", "qx", [X(str(tmp_path / "b"))])  # not inside a shared read


@pytest.mark.parametrize("parent_rule", [X, W])
def test_sibling_exclusive_reads_of_one_path_share_it(ledger: Ledger, tmp_path: Path, parent_rule) -> None:
    """Under one parent (an exclusive read, or a write), two children's
    exclusive reads of one path, or of a path inside it, do not conflict,
    as two top-level exclusive reads do not: every way of asking grants
    them (a fresh tester's finding: each raised a bare AssertionError, and
    ``ledger check --parent``/``run --parent`` exited 70, because a
    delegation's exclusive read looked for siblings' exclusive reads in its
    way too); a sibling's write over them is still refused."""
    from scopeledger import DelegationError

    a = str(tmp_path / "a")
    ledger.register("p", [parent_rule(a)])
    ledger.delegate("p", "c1", [X(a + "/s")])
    for asked in ([X(a + "/s")], [X(a + "/s/t")]):
        assert ledger.decide("c2", asked, parent="p").refusal is None
        assert [d.refusal for d in ledger.decide_each("c2", asked, parent="p")] == [None]
        g = ledger.delegate("p", "c2", asked, advisory=True)
        [ev] = ledger.events(since=g.token, until=g.token)
        assert ev.data["holder"]["advisory"] == []  # granted, meeting no conflict
        ledger.release("c2")
        assert ledger.delegate("p", "c2", asked, wait=5).name == "c2"
        ledger.release("c2")
    if parent_rule is W:
        with pytest.raises(DelegationError, match="sibling"):
            ledger.delegate("p", "c3", [W(a + "/s/w")])


def test_exclusive_read_in_text_and_log(ledger: Ledger, tmp_path: Path) -> None:
    from scopeledger import Permission, parse_rule
    from scopeledger._events import decode, check_event
    from scopeledger._events import FoldError

    rule = parse_rule(str(tmp_path / "a") + "/**", "exclusive-read")
    assert rule.permission is Permission.EXCLUSIVE_READ and rule.recursive
    assert Permission.parse("Exclusive-Read") is Permission.EXCLUSIVE_READ
    assert Permission.READ < Permission.EXCLUSIVE_READ < Permission.WRITE
    ledger.register("x", [rule])
    line = (Path(ledger.path) / "events.jsonl").read_bytes().splitlines()[-1]
    assert json.loads(line)["holder"]["rules"][0][1] == "exclusive-read"
    with Ledger.open(ledger.path) as again:
        assert again.holder("x").rules[0].permission is Permission.EXCLUSIVE_READ
    # a v1 line with the new value is not a v1 line
    v1 = (b'{"v":1,"seq":1,"ts":1,"actor":{"pid":1,"start":1.0,"boot":"b"},"prev":"' + b"0" * 32
          + b'","type":"registered","holder":{"name":"x","rules":[["/a","exclusive-read",true]],'
          b'"process":{"pid":1,"start":1.0,"boot":"b"},"parent":null,"reserved":false,"socket":null}}')
    with pytest.raises(FoldError, match="exclusive-read"):
        check_event(decode(v1, "log", 1))


def test_cli_exclusive_read(led: Path, tmp_path: Path) -> None:
    a = str(tmp_path / "a")
    with Ledger.open(led) as ledger:
        ledger.register("x", [X(a)])
    res = ledger_cmd(led, "check", "--write", a + "/f")
    assert res.returncode == 1 and "exclusive-read" in res.stdout, res.stdout
    res = ledger_cmd(led, "check", "--exclusive-read", a + "/f", "--read", a)
    assert res.returncode == 0, res.stdout + res.stderr
    res = ledger_cmd(led, "--json", "who", a)
    assert json.loads(res.stdout)["holders"][0]["permission"] == "exclusive-read"


def test_schema_takes_exclusive_read_in_v2_only(ledger: Ledger, tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install -e '.[test]')")
    from scopeledger import _schema

    validator = jsonschema.Draft202012Validator(_schema.load())
    ledger.register("x", [X(str(tmp_path / "a"))])
    ledger.release("x", force=True, reason="test")
    lines = (Path(ledger.path) / "events.jsonl").read_bytes().splitlines()
    for line in lines:
        validator.validate(json.loads(line))
    v1 = json.loads(lines[0])
    v1.update(v=1, actor={"pid": 1, "start": 1.0, "boot": "b"})
    v1["holder"]["process"] = {"pid": 1, "start": 1.0, "boot": "b"}
    v1["holder"]["rules"] = [v1["holder"]["rules"][0][:3]]
    assert not validator.is_valid(v1)
    v1["holder"]["rules"][0][1] = "read"
    assert validator.is_valid(v1), list(validator.iter_errors(v1))


def test_exclusive_read_waits_for_a_writer(ledger: Ledger, tmp_path: Path) -> None:
    import threading

    a = str(tmp_path / "a")
    ledger.register("w", [W(a)])
    got = {}

    def waiter():
        with Ledger.open(ledger.path) as other:
            got["alloc"] = other.register("x", [X(a + "/s")], wait=60)

    t = threading.Thread(target=waiter)
    t.start()
    from helpers import wait_for

    wait_for(lambda: any(e.type == "refused" for e in ledger.events()), what="the waiter's refusal")
    ledger.release("w")
    t.join(60)
    assert got["alloc"].rules == (X(a + "/s"),)


# -- advisory grants -----------------------------------------------------------------


def test_advisory_grant_records_its_conflicts(ledger: Ledger, tmp_path: Path) -> None:
    from scopeledger import InvalidArgument, ScopeConflict

    a = str(tmp_path / "a")
    ledger.register("w", [W(a)])
    with pytest.raises(ScopeConflict):  # off by default
        ledger.register("tool", [W(a + "/f")])
    alloc = ledger.register("tool", [W(a + "/f")], advisory=True)
    assert alloc.advisory
    ev = list(ledger.events(types=("registered",)))[-1]
    assert ev.data["holder"]["advisory"] == [[["w"], W(a).to_json()[:3], W(a + "/f").to_json()[:3]]] or \
        [c[0] for c in ev.data["holder"]["advisory"]] == [["w"]]
    with Ledger.open(ledger.path) as again:  # folds back, marked
        assert again.holder("tool").advisory and not again.holder("w").advisory
        assert [h.advisory for h in again.who(a + "/f")] == [False, True] or \
            sorted(h.advisory for h in again.who(a + "/f")) == [False, True]
        assert again.verify().ok
    # a later non-advisory request meets the advisory holder too
    ledger.release("w")
    with pytest.raises(ScopeConflict):
        ledger.register("w2", [W(a)])
    seq = ledger.seq
    with pytest.raises(InvalidArgument, match="advisory"):
        ledger.register("z", [W(str(tmp_path / "z"))], advisory="yes")
    assert ledger.seq == seq


def test_cli_run_advisory_warns(led: Path, tmp_path: Path) -> None:
    import sys

    a = str(tmp_path / "a")
    with Ledger.open(led) as ledger:
        ledger.register("w", [W(a)], pid=1)
    res = ledger_cmd(led, "run", "--advisory", "--write", a + "/f", "--", sys.executable, "-c", "pass")
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr and "'w'" in res.stderr and "advisory" in res.stderr, res.stderr
