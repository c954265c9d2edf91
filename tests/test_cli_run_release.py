"""`ledger run` releases its scope when the command ends even if the lock is
busy longer than --lock-timeout (which bounds waiting to *take* a scope)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from scopeledger import Ledger, ScopeRule
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


def _run_that(tmp_path: Path, inner: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ledger run --name job ARGS`` over ``sh -c INNER`` (with $L the ledger, $T the tree)."""
    led, tree = tmp_path / "led", tmp_path / "tree"
    tree.mkdir()
    with Ledger.open(led) as ledger:
        ledger.register("early", [ScopeRule(str(tree / "e"))])
        ledger.release("early")
    env = clean_env(L=str(led), T=str(tree))
    return subprocess.run([*CMD, "--ledger", str(led), "run", "--name", "job", "--write", str(tree / "w"), *args,
                           "--", "sh", "-c", inner], capture_output=True, text=True, env=env, timeout=300)


def test_run_warns_when_its_grant_was_force_released_during_the_command(tmp_path: Path) -> None:
    # With --on-lost warn the command keeps running after an operator took its
    # scope: run says so once (at once: tests/test_cli_run_lost.py shows when),
    # naming the reason; the command's exit code is kept.
    p = _run_that(tmp_path, 'ledger release job --force --reason "disk needed elsewhere" >/dev/null; exit 3',
                  "--on-lost", "warn")
    assert p.returncode == 3, p.stderr
    assert "warning: 'job' lost its scope while COMMAND runs: force-released" in p.stderr, p.stderr
    assert "disk needed elsewhere" in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.count("warning") == 1, p.stderr


def test_run_warns_when_its_grant_was_cut_from_the_log_by_a_repair(tmp_path: Path) -> None:
    # A repair during the command cut the log before the grant (an earlier
    # line altered): the grant is no longer recorded; run says so.
    inner = ('python3 -c "import sys; p=sys.argv[1]+\'/events.jsonl\'; b=open(p,\'rb\').read().split(b\'\\n\'); '
             'b[1]=b[1].replace(b\'early\', b\'EARLY\'); open(p,\'wb\').write(b\'\\n\'.join(b))" "$L"; '
             'ledger repair >/dev/null; exit 0')
    p = _run_that(tmp_path, inner, "--on-lost", "warn")
    assert p.returncode == 0, p.stderr
    assert "is no longer in the log (cut by 'ledger repair'?)" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    # By default COMMAND is told to stop (SIGTERM), and run exits 6, whatever COMMAND's status.
    (tmp_path / "again").mkdir()
    p = _run_that(tmp_path / "again", inner.replace("exit 0", "exec sleep 1000"))
    assert p.returncode == 6, p.stderr
    assert "is no longer in the log (cut by 'ledger repair'?)" in p.stderr and "COMMAND was sent SIGTERM" in p.stderr


def test_run_says_nothing_when_it_releases_its_own_grant(tmp_path: Path) -> None:
    p = _run_that(tmp_path, "exit 0")
    assert p.returncode == 0 and "warning" not in p.stderr, p.stderr


def test_run_records_how_its_command_ended_with_the_release(tmp_path: Path) -> None:
    """The release of a ``ledger run`` carries its command's exit status, or
    the signal that ended it, as ``spawn`` records them (``exit_code``,
    ``exit_signal``); a command that never ran records neither."""
    import orjson

    def released(led: Path) -> dict[str, object]:
        lines = [orjson.loads(raw) for raw in (led / "events.jsonl").read_bytes().splitlines()]
        [line] = [ev for ev in lines if ev["type"] == "released" and ev["name"] == "job"]
        return {k: line[k] for k in ("exit_code", "exit_signal") if k in line}

    for d in "abc":
        (tmp_path / d).mkdir()
    p = _run_that(tmp_path / "a", "exit 3")
    assert p.returncode == 3, p.stderr
    assert released(tmp_path / "a" / "led") == {"exit_code": 3}
    p = _run_that(tmp_path / "b", "kill -TERM $$")
    assert p.returncode == 128 + 15, p.stderr
    assert released(tmp_path / "b" / "led") == {"exit_signal": 15}
    p = _run_that(tmp_path / "c", "exit 0")
    assert p.returncode == 0, p.stderr
    assert released(tmp_path / "c" / "led") == {"exit_code": 0}
