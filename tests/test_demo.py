"""``ledger demo``, run as README tells a user to run it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scopeledger import Ledger, ProcessIdentity, probe

_BIN = os.path.dirname(sys.executable)
LEDGER = shutil.which("ledger", path=_BIN) or shutil.which("ledger")
CMD = [LEDGER] if LEDGER else [sys.executable, "-m", "scopeledger"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SCOPELEDGER_")}
    e["NO_COLOR"] = "1"
    return e


def test_demo_runs_and_tells_the_story() -> None:
    t0 = time.monotonic()
    res = subprocess.run([*CMD, "demo", "--clean"], capture_output=True, text=True, env=env(),
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert time.monotonic() - t0 < 45  # a few seconds alone; generous under a parallel suite
    out = res.stdout
    for needle in (
        "delegation chain, three deep: runtime -> builder -> tests-worker",
        "reserved by pid",                       # reservation before spawn, in the replay
        "attached    'builder' attached to pid",
        "released    'parser-worker'",
        "refused: write",                        # ledger check, top level
        "'lexer-worker' (delegated from 'builder', from 'runtime')",  # the owner chain
        "kill -KILL",
        "[dead: zombie",
        "reclaimed 'lexer-worker'",
        "reclaimed   'tests-worker' because zombie",
        "because process gone",
        "newcomer's command (pid",
        "ledger show --at",
        "it is removed now (--clean)",
    ):
        assert needle in out, needle
    # --clean removed it
    where = re.search(r"The ledger was in (\S+);", out)
    assert where is not None
    assert not os.path.exists(where.group(1))


def test_demo_json_and_the_ledger_it_leaves(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    res = subprocess.run([*CMD, "demo", "--json", "--dir", str(d)], capture_output=True, text=True,
                         env=env(), timeout=60)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["ledger"] == str((d / "ledger").resolve())
    assert (d / "tree" / "src" / "lexer" / "fix.txt").read_text() == "fixed\n"
    with Ledger.open(summary["ledger"]) as ledger:
        assert ledger.verify().ok
        events = list(ledger.events())
        assert [e.data for e in events] == summary["events"]
        types = [e.type for e in events]
        assert {"registered", "delegated", "attached", "released", "reclaimed", "refused"} <= set(types)
        reasons = sorted(e.data["reason"] for e in events if e.type == "reclaimed")
        assert reasons == ["process_gone", "zombie"]
        refused = next(e for e in events if e.type == "refused")
        assert refused.data["chain"] == ["runtime", "builder", "lexer-worker"]
        mid = ledger.state_at(seq=summary["middle_seq"])
        assert mid.chain("tests-worker") == ("runtime", "builder", "tests-worker")
        assert all(not a.reserved for a in mid.holders.values())
        reserved = [e.data["holder"]["name"] for e in events
                    if e.type == "delegated" and e.data["holder"]["reserved"]]
        assert reserved == ["builder", "parser-worker", "lexer-worker", "tests-worker"]
        assert ledger.holders() == []
        # every process the demo started is gone
        for e in events:
            if e.type == "attached":
                assert probe(ProcessIdentity.from_json(e.data["process"])).dead
    # the CLI can explore what it left
    show = subprocess.run([*CMD, "--ledger", summary["ledger"], "show", "--at", str(summary["middle_seq"])],
                          capture_output=True, text=True, env=env())
    assert show.returncode == 0 and "tests-worker" in show.stdout


def test_demo_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    res = subprocess.run([*CMD, "demo", "--dir", str(tmp_path)], capture_output=True, text=True, env=env())
    assert res.returncode == 2
    assert res.stderr.startswith("error: demo directory") and len(res.stderr.splitlines()) == 1
