"""`ledger run` releases its scope when the command ends even if the lock is
busy longer than --lock-timeout (which bounds waiting to *take* a scope)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from scopeledger import Ledger
from scopeledger._store import Store
from helpers import CMD, clean_env


def test_run_releases_after_the_command_though_the_lock_is_busy_past_lock_timeout(tmp_path: Path):
    led, tree, flag = tmp_path / "led", tmp_path / "tree", tmp_path / "started"
    tree.mkdir()
    Ledger.open(led).close()
    proc = subprocess.Popen(
        [*CMD, "--ledger", str(led), "--lock-timeout", "0", "run", "--name", "job", "--write", str(tree),
         "--", "sh", "-c", f"touch {flag}; sleep 0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    deadline = time.monotonic() + 30
    while not flag.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    store = Store(str(led))
    with store.locked():  # held while the command ends and run releases
        time.sleep(1.5)
    store.close()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "could not release" not in err, err
    with Ledger.open(led, readonly=True) as ledger:
        assert ledger.holders() == []
        assert [e.type for e in ledger.events()][-1] == "released"  # released, not reclaimed
