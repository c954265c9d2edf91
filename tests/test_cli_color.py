"""``--color`` against ``NO_COLOR``, the terminal and ``TERM`` (issue 17, docs/cli.md,
"Options every command takes"): ``always`` colours whatever the environment says;
``never``, and ``NO_COLOR`` without ``--color``, keep colours off; ``auto`` colours
on a terminal only. Real processes of the installed console script, on a pipe or a
pseudo-terminal."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import CMD, clean_env, ledger_cmd
from pty_support import run_pty

#: An SGR sequence; its parameters.
_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colours(text: str) -> set[str]:
    """The foreground colour codes set in ``text`` (30-37, 90-97, 38;...): bold
    and dim are not colour (NO_COLOR allows them)."""
    found = set()
    for params in _SGR.findall(text):
        for code in params.split(";"):
            if code and (30 <= int(code) <= 38 or 90 <= int(code) <= 97):
                found.add(code)
    return found


@pytest.fixture(scope="module")
def led(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("color")
    p = ledger_cmd(root / "L", "run", "--name", "builder", "--write", str(root / "src"), "--", "true")
    assert p.returncode == 0, p.stderr
    return root / "L"


def _env(**extra: str) -> dict[str, str]:
    env = clean_env(TERM="xterm-256color")
    for name in ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE", "COLUMNS"):
        env.pop(name, None)
    env.update(extra)
    return env


@pytest.mark.parametrize("extra", [{"NO_COLOR": "1"}, {"NO_COLOR": "1", "TERM": "dumb"}, {"TERM": "dumb"}],
                         ids=["NO_COLOR", "NO_COLOR-TERM=dumb", "TERM=dumb"])
def test_color_always_wins_over_the_environment(led: Path, extra: dict[str, str]) -> None:
    # Before: with NO_COLOR only bold was left, and with TERM=dumb nothing.
    p = subprocess.run([*CMD, "--color", "always", "--ledger", str(led), "replay"], capture_output=True,
                       text=True, timeout=60, env=_env(**extra))
    assert p.returncode == 0, p.stderr
    assert "registered" in p.stdout
    assert colours(p.stdout), p.stdout


def test_color_always_also_colours_a_terminal_with_no_color(led: Path) -> None:
    r = run_pty([*CMD, "--color", "always", "--ledger", str(led), "replay"], _env(NO_COLOR="1"))
    assert r.returncode == 0, r.tty
    assert "registered" in r.tty and colours(r.tty), r.tty


def test_auto_colours_a_terminal_only(led: Path) -> None:
    r = run_pty([*CMD, "--ledger", str(led), "replay"], _env())
    assert r.returncode == 0, r.tty
    assert colours(r.tty), r.tty
    p = subprocess.run([*CMD, "--ledger", str(led), "replay"], capture_output=True, text=True, timeout=60,
                       env=_env())
    assert p.returncode == 0 and "registered" in p.stdout
    assert "\x1b" not in p.stdout


@pytest.mark.parametrize("args, extra", [(["--color", "never"], {}),
                                         (["--color", "never"], {"FORCE_COLOR": "1"}),
                                         ([], {"NO_COLOR": "1"}),
                                         (["--color", "auto"], {"NO_COLOR": "0"})],
                         ids=["never", "never-FORCE_COLOR", "NO_COLOR", "NO_COLOR=0"])
def test_never_and_no_color_keep_colours_off_on_a_terminal(led: Path, args: list[str],
                                                            extra: dict[str, str]) -> None:
    r = run_pty([*CMD, *args, "--ledger", str(led), "replay"], _env(**extra))
    assert r.returncode == 0, r.tty
    assert "registered" in r.tty
    assert not colours(r.tty), r.tty


def test_an_empty_no_color_is_not_set(led: Path) -> None:
    # no-color.org: "when present and not an empty string".
    r = run_pty([*CMD, "--ledger", str(led), "replay"], _env(NO_COLOR=""))
    assert r.returncode == 0, r.tty
    assert colours(r.tty), r.tty
