"""Shell completion (issue 17): the installed ``ledger`` prints click's completion
script when the shell asks for it (``_LEDGER_COMPLETE=bash_source ledger``), and
real bash, zsh and fish, with that script loaded, complete commands, options and
choices by asking ``ledger`` through click's protocol (docs/cli.md, "Shell completion").

bash: the function the script registers (``complete -p ledger``) is called as
bash's programmable completion calls it, with ``COMP_WORDS``/``COMP_CWORD`` set,
and ``COMPREPLY`` is read. fish: ``complete -C 'ledger re'`` (fish's own
completion of a command line). zsh: the script is loaded with ``compinit`` and
its function called with ``words``/``CURRENT`` set, zsh's ``compadd`` and
``_describe`` (which only work inside a completion widget) replaced by functions
that print what they are given.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import BIN, clean_env

LEDGER = shutil.which("ledger", path=BIN)
pytestmark = pytest.mark.skipif(LEDGER is None, reason="the ledger console script is not installed "
                                                       "(pip install -e .)")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = clean_env(HOME=str(home))
    env.pop("_LEDGER_COMPLETE", None)
    env.pop("_SCOPELEDGER_COMPLETE", None)
    env.update(extra)
    return env


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {name}; .ci/run installs it)")
    return path


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@pytest.mark.parametrize("prog", ["ledger", "scopeledger"])
def test_the_completion_variable_prints_clicks_script(tmp_path: Path, shell: str, prog: str) -> None:
    # Before the fix a bare 'ledger' printed its help (exit 2) whatever the variable said.
    var = f"_{prog.upper()}_COMPLETE"
    p = subprocess.run([prog], capture_output=True, text=True, timeout=60,
                       env=_env(tmp_path, **{var: f"{shell}_source"}))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert "Usage:" not in p.stdout
    assert f"_{prog}_completion" in p.stdout
    assert f"{var}={shell}_complete" in p.stdout


def test_an_unknown_completion_request_is_one_error_line(tmp_path: Path) -> None:
    p = subprocess.run(["ledger"], capture_output=True, text=True, timeout=60,
                       env=_env(tmp_path, _LEDGER_COMPLETE="tcsh_source"))
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.splitlines() == [
        "error: $_LEDGER_COMPLETE='tcsh_source': expected bash_source, zsh_source or fish_source "
        "(docs/cli.md, \"Shell completion\")"]


def _bash(tmp_path: Path, words: list[str], cword: int) -> list[str]:
    bash = _shell("bash")
    script = ('eval "$(_LEDGER_COMPLETE=bash_source ledger)"\n'
              'spec=$(complete -p ledger) || exit 3\n'
              'fn=${spec##*-F }; fn=${fn%% *}\n'
              'COMP_WORDS=("$@"); COMP_CWORD=' + str(cword) + '\n'
              '"$fn" ledger\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    p = subprocess.run([bash, "--norc", "--noprofile", "-c", script, "bash", *words],
                       capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return [line for line in p.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    assert _bash(tmp_path, ["ledger", "re"], 1) == ["reclaim", "release", "renew", "repair", "replay"]
    commands = _bash(tmp_path, ["ledger", ""], 1)
    assert {"verify", "snapshot", "history", "timeline", "export", "run"} <= set(commands)
    assert _bash(tmp_path, ["ledger", "replay", "--f"], 2) == ["--from", "--follow"]
    assert _bash(tmp_path, ["ledger", "run", "--no"], 2) == ["--nonblock", "--note"]
    assert _bash(tmp_path, ["ledger", "release", "--no"], 2) == ["--note"]
    assert _bash(tmp_path, ["ledger", "--color", ""], 2) == ["auto", "always", "never"]
    assert "registered" in _bash(tmp_path, ["ledger", "replay", "--type", ""], 3)


def test_fish_completes_commands_and_choices(tmp_path: Path) -> None:
    fish = _shell("fish")
    script = ('_LEDGER_COMPLETE=fish_source ledger | source\n'
              'complete -C "ledger re"\n'
              'echo ==\n'
              'complete -C "ledger --color "\n')
    p = subprocess.run([fish, "--no-config", "-c", script], capture_output=True, text=True,
                       timeout=60, env=_env(tmp_path))
    assert p.returncode == 0, p.stderr
    first, second = p.stdout.split("==\n")
    assert [line.split("\t")[0] for line in first.splitlines()] == ["reclaim", "release", "renew", "repair", "replay"]
    assert sorted(second.split()) == ["always", "auto", "never"]


def test_zsh_completes_commands_and_choices(tmp_path: Path) -> None:
    zsh = _shell("zsh")
    script = ('autoload -U compinit && compinit -D -u\n'
              'eval "$(_LEDGER_COMPLETE=zsh_source ledger)"\n'
              '[[ ${_comps[ledger]} == _ledger_completion ]] || exit 3\n'
              'compadd() { print -rl -- "${(@P)${@[-1]}}" }\n'
              '_describe() { print -rl -- "${(@P)3}" }\n'
              'words=(ledger re); CURRENT=2; _ledger_completion\n'
              'print -- --\n'
              'words=(ledger --color ""); CURRENT=3; _ledger_completion\n')
    p = subprocess.run([zsh, "-f", "-c", script], capture_output=True, text=True, timeout=60,
                       env=_env(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    first, second = p.stdout.split("--\n")
    assert [line.split(":")[0] for line in first.splitlines()] == ["reclaim", "release", "renew", "repair", "replay"]
    assert sorted(second.split()) == ["always", "auto", "never"]


def test_help_topics_and_ledger_directories_complete(tmp_path: Path) -> None:
    fish = _shell("fish")
    (tmp_path / "ledA").mkdir()
    (tmp_path / "ledB").mkdir()
    (tmp_path / "ledger-notes.txt").write_text("")
    script = ('_LEDGER_COMPLETE=fish_source ledger | source\n'
              'complete -C "ledger help e"\n'
              'echo ==\n'
              'complete -C "ledger --ledger led"\n')
    p = subprocess.run([fish, "--no-config", "-c", script], capture_output=True, text=True, timeout=60,
                       env=_env(tmp_path), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    first, second = p.stdout.split("==\n")
    assert first.split() == ["environment", "exit-codes", "export"]
    # --ledger: directories only, found by the shell (click's 'dir' completion)
    assert [line.split("\t")[0] for line in second.splitlines()] == ["ledA/", "ledB/"]
    # bash, through the function its script registers
    assert _bash(tmp_path, ["ledger", "help", "ex"], 2) == ["exit-codes", "export"]
