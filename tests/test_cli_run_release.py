"""`ledger run` releases its scope when the command ends even if the lock is
busy longer than --lock-timeout (which bounds waiting to *take* a scope)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from scopeledger import Ledger
from scopeledger._store import Store
from helpers import CMD, clean_env, lines_of, wait_for


def test_run_releases_after_the_command_though_the_lock_is_busy_past_lock_timeout(tmp_path: Path) -> None:
    led, tree, started, go = tmp_path / "led", tmp_path / "tree", tmp_path / "started", tmp_path / "go"
    tree.mkdir()
    Ledger.open(led).close()
    proc = subprocess.Popen(
        [*CMD, "--ledger", str(led), "--lock-timeout", "0", "run", "--name", "job", "--write", str(tree),
         "--", "sh", "-c", f"touch {started}; while [ ! -e {go} ]; do sleep 0.01; done"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    lines = lines_of(proc.stdout)
    wait_for(lambda: started.exists() or proc.poll() is not None, timeout=120, what="the command to start")
    assert proc.poll() is None, proc.communicate()
    said: list[str] = []
    store = Store(str(led))
    with store.locked():
        go.touch()  # the command ends while the lock is busy: its release meets the busy lock
        # --lock-timeout 0 gives up on it at once; run waits on, and after a second of waiting
        # the library says so: only then is the lock let go (not after a sleep, which on a busy
        # machine could end before run even tried, and pass without testing anything).
        while not any(line.startswith("warning: waiting for the lock") for line in said):
            line = lines.get(timeout=120)
            assert line is not None, ("run ended while the lock was held", said)
            said.append(line)
    store.close()
    assert proc.wait(timeout=120) == 0, said
    while (line := lines.get(timeout=120)) is not None:
        said.append(line)
    assert not any("could not release" in line for line in said), said
    with Ledger.open(led, readonly=True) as ledger:
        assert ledger.holders() == []
        assert [e.type for e in ledger.events()][-1] == "released"  # released, not reclaimed
