"""The command line resolves a queried or checked path as the ledger resolves
a rule's: a ``..`` after a symlink means the link target's parent, not the
lexical parent (``Ledger._prepare``). ``check``, ``who``, ``replay --path``
and ``run`` must all agree on ``lk/../x`` where ``lk -> deep/sub``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scopeledger import Ledger, ScopeRule
from helpers import clean_env, ledger_cmd


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/deep/sub`` and ``tmp/deep/x`` exist, ``tmp/lk -> deep/sub``; holder
    ``owner`` writes ``tmp/deep/x``. Returns (tmp dir, ledger dir)."""
    (tmp_path / "deep" / "sub").mkdir(parents=True)
    (tmp_path / "deep" / "x").mkdir()
    os.symlink("deep/sub", tmp_path / "lk")
    led = tmp_path / "led"
    with Ledger.open(led) as ledger:
        ledger.register("owner", [ScopeRule(str(tmp_path / "deep" / "x"), "write")])
    return tmp_path, led


def test_check_refuses_a_path_that_reaches_a_held_scope_through_symlink_dotdot(linked):
    tmp, led = linked
    r = ledger_cmd(led, "check", "--top-level", "--write", "lk/../x", cwd=tmp)
    assert r.returncode != 0, r.stdout
    assert "owner" in r.stdout + r.stderr
    # The lexical reading (tmp/x) is free; the OS's (tmp/deep/x) is held.
    r = ledger_cmd(led, "--json", "check", "--top-level", "--write", "lk/../x", cwd=tmp)
    assert json.loads(r.stdout)["granted"] is False


def test_who_and_replay_find_the_holder_through_symlink_dotdot(linked):
    tmp, led = linked
    r = ledger_cmd(led, "who", "lk/../x", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "owner" in r.stdout
    r = ledger_cmd(led, "replay", "--path", "lk/../x", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "owner" in r.stdout


def test_check_and_run_agree_on_symlink_dotdot(linked):
    tmp, led = linked
    check = ledger_cmd(led, "check", "--top-level", "--write", "lk/../x", cwd=tmp)
    run = ledger_cmd(led, "run", "-n", "--top-level", "--write", "lk/../x", "--", "true", cwd=tmp,
                     env=clean_env())
    assert (check.returncode == 0) == (run.returncode == 0), (check.stdout, run.stderr)
    # A path that really is free is granted by both.
    free = ledger_cmd(led, "check", "--top-level", "--write", "lk/../other", cwd=tmp)
    assert free.returncode == 0, free.stdout + free.stderr


def test_a_manifest_rule_through_symlink_dotdot_is_resolved_as_run_resolves_it(linked):
    tmp, led = linked
    (tmp / "m.toml").write_text('[holder]\nname = "job"\n\n[scope]\nwrite = ["lk/../x"]\n')
    r = ledger_cmd(led, "check", "--top-level", "--manifest", "m.toml", cwd=tmp)
    assert r.returncode != 0, r.stdout  # deep/x is held by owner
    assert "owner" in r.stdout + r.stderr
    run = ledger_cmd(led, "run", "-n", "--top-level", "--manifest", "m.toml", "--", "true", cwd=tmp)
    assert run.returncode != 0 and "owner" in run.stderr, run.stderr
