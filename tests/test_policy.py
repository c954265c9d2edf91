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
