"""Progress on stderr for long operations (issue 17, docs/cli.md "Progress"): shown by
``replay``, ``history``, ``export`` and ``verify`` on a large log when stderr is a
terminal (a pseudo-terminal here, the ``pty`` module), never off a terminal, with
``--no-progress``, with ``--json``, when stdout is a pipe (a pager) or, for a command
whose output streams, the terminal itself. Whether it is shown is decided by size
(``progress.MIN_EVENTS``, ``MIN_BYTES``), never by time: nothing here depends on speed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import CMD, clean_env
from pty_support import run_pty
from scopeledger import Ledger, ScopeRule
from scopeledger.cli import progress

PAIRS = progress.MIN_EVENTS // 2 + 5
EVENTS = 2 * PAIRS


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger of :data:`EVENTS` events (register and release of 'h', in turn)."""
    path = tmp_path_factory.mktemp("progress") / "L"
    with Ledger.open(path) as led:
        rules = [ScopeRule("/r/a", "write")]
        for _ in range(PAIRS):
            led.register("h", rules)
            led.release("h")
        assert led.seq == EVENTS
    assert os.path.getsize(path / "events.jsonl") >= progress.MIN_BYTES
    return path


def _env() -> dict[str, str]:
    return clean_env(TERM="xterm-256color")


WORK = {
    "replay": (["replay"], "replaying"),
    "history": (["history", "h"], "reading"),
    "export": (["export", "--format", "csv"], "exporting"),
    "verify": (["verify"], "verifying"),
}


@pytest.mark.parametrize("command", sorted(WORK))
def test_progress_on_a_terminal_and_the_output_unchanged(big: Path, tmp_path: Path, command: str) -> None:
    args, label = WORK[command]
    r = run_pty([*CMD, "--ledger", str(big), *args], _env(), stdout_tty=False)
    assert r.returncode == 0, r.tty
    assert label in r.tty, r.tty[:2000]
    if command != "verify":
        assert f"of {EVENTS}" in r.tty, r.tty[:2000]
    quiet = subprocess.run([*CMD, "--ledger", str(big), *args], capture_output=True, timeout=300, env=_env())
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == b""  # off a terminal: nothing
    assert r.stdout == quiet.stdout.decode()


@pytest.mark.parametrize("command", sorted(WORK))
def test_no_progress_and_json_say_nothing_on_a_terminal(big: Path, command: str, tmp_path: Path) -> None:
    args, _label = WORK[command]
    # (export -o: a file of the test's own; -o refuses a device such as /dev/null.)
    for extra in (["--no-progress"], ["--json"] if command != "export"
                  else ["--json", "-o", str(tmp_path / "out.json")]):
        r = run_pty([*CMD, "--ledger", str(big), *args, *extra], _env(), stdout_tty=False)
        assert r.returncode == 0, (extra, r.tty, r.stdout[-500:])
        assert r.tty == "", (extra, r.tty[:2000])


def test_the_bar_counts_only_the_events_asked_for(big: Path) -> None:
    # --until: the bar ends there (it counted the whole log).
    until = EVENTS - 3
    r = run_pty([*CMD, "--ledger", str(big), "replay", "--until", str(until)], _env(), stdout_tty=False)
    assert r.returncode == 0, r.tty
    assert f"of {until}" in r.tty and f"of {EVENTS}" not in r.tty, r.tty[:2000]
    # Fewer events than progress.MIN_EVENTS: no bar.
    r = run_pty([*CMD, "--ledger", str(big), "replay", "--until", str(progress.MIN_EVENTS - 1)], _env(),
                stdout_tty=False)
    assert r.returncode == 0 and r.tty == "", r.tty[:2000]


def test_no_bar_over_a_pager_or_over_the_lines_themselves(big: Path, tmp_path: Path) -> None:
    # stdout a pipe (ledger replay | less): its reader may share the terminal.
    out = tmp_path / "out"
    r = run_pty(["sh", "-c", '"$@" | cat > "$0"', str(out), *CMD, "--ledger", str(big), "replay"], _env(),
                stdout_tty=False)
    assert r.returncode == 0, r.tty
    assert r.tty == "", r.tty[:2000]
    assert out.read_text().count("\n") == EVENTS
    # stdout the terminal: the lines are the progress.
    r = run_pty([*CMD, "--ledger", str(big), "replay", "--until", str(progress.MIN_EVENTS + 1)], _env())
    assert r.returncode == 0
    assert "replaying" not in r.tty and r.tty.count("registered") == (progress.MIN_EVENTS + 2) // 2


def test_verify_with_workers_beside_the_spinner(big: Path) -> None:
    # The spinner is drawn by a forked child (a thread here would make the library
    # choose one process for a large log: it forks workers only with no other
    # thread); the workers it forks run beside it, and the spinner's end is waited for.
    r = run_pty([*CMD, "--ledger", str(big), "verify", "--workers", "2"], _env(), stdout_tty=False)
    assert r.returncode == 0 and "verifying" in r.tty and "ok" in r.stdout, (r.tty[-500:], r.stdout)
