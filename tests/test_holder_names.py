"""Holder names with '/' and spaces (issue 16): agents call themselves
``team/agent-3``. The documented set (``_rules.HOLDER_NAME``): parts of
[A-Za-z0-9._@:+-] and inner spaces, each starting with a letter or digit,
joined by '/'. How the library, the log and the command line carry them."""

import json
import os

import pytest

from scopeledger import InvalidHolderName, Ledger, socket_path_for

from helpers import W, clean_env, ledger_cmd

NAMES = ["team/agent-3", "team/agent 3", "Build Runner", "org/team/agent 3.1@host:7+x"]


@pytest.mark.parametrize("name", NAMES)
def test_names_with_slashes_and_spaces_are_held_delegated_and_read_back(ledger, tmp_path, name):
    a = ledger.register(name, [W(str(tmp_path / "w"))])
    child = ledger.delegate(name, name + "/sub task", [W(str(tmp_path / "w" / "c"))])
    assert child.parent == name
    again = Ledger.open(ledger.path)
    assert [h.name for h in again.holders()] == [name, name + "/sub task"]
    assert again.verify().ok
    assert [e.type for e in again.history(name)] == ["registered", "delegated"]
    ledger.release(name, token=a.token)
    assert ledger.holder(name + "/sub task").parent is None


@pytest.mark.parametrize("bad", ["a//b", "a/", "/a", "a/../b", "a/./b", "a/.x", "a b ", " a", "a /b",
                                 "a\tb", "a\x7fb", "a\u2028b", "é", "-x", "x" * 256])
def test_names_outside_the_set_are_refused_with_the_rule(ledger, tmp_path, bad):
    with pytest.raises(InvalidHolderName, match=r"parts of \[A-Za-z0-9._@:\+-\] and inner spaces"):
        ledger.register(bad, [W(str(tmp_path / "w"))])
    assert ledger.seq == 0


def test_a_socket_path_never_leaves_its_base(tmp_path):
    base = str(tmp_path / "run")
    assert socket_path_for("team/agent 3", base) == os.path.join(base, "team", "agent 3", "sock")
    with pytest.raises(InvalidHolderName):
        socket_path_for("team/../../etc", base)


def test_the_command_line_shows_and_takes_them(tmp_path):
    led = tmp_path / "ledger"
    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    name = "team/agent 3"
    env = clean_env()
    r = ledger_cmd(led, "run", "--name", name, "--write", str(tree / "src"), "--",
                   "sh", "-c", f'ledger run --name "$SCOPELEDGER_HOLDER/lexer" --write {tree}/src/lexer -- '
                   'ledger --json show', env=env)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    names = {h["name"]: h for h in shown["holders"]} if isinstance(shown, dict) else {h["name"]: h for h in shown}
    assert set(names) == {name, name + "/lexer"}
    assert names[name + "/lexer"]["parent"] == name
    # Human output: the name as given, quoted where messages quote names.
    ledger_cmd(led, "run", "--name", name, "--write", str(tree / "src"), "--", "true")
    replay = ledger_cmd(led, "replay")
    assert replay.returncode == 0 and f"'{name}'" in replay.stdout and f"'{name}/lexer'" in replay.stdout
    hist = ledger_cmd(led, "history", name)
    assert hist.returncode == 0 and name in hist.stdout
    bad = ledger_cmd(led, "history", "team/../x")
    assert bad.returncode == 2 and "invalid holder name 'team/../x'" in bad.stderr
