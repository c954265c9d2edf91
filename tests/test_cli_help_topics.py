"""``ledger help [TOPIC | COMMAND]`` (issue 17): pages of docs/cli.md shipped in the
package (scopeledger/cli/help/*.md, generated from docs/cli.md and checked against it
here, so that they cannot drift; tests/test_packaging.py finds them in the wheel), run as a
user runs them: the installed console script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import CMD, clean_env, one_error_line
from pty_support import run_pty
from scopeledger.cli import helptopics

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")


def _ledger(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=60, env=clean_env(**env))


@pytest.mark.parametrize("topic", sorted(helptopics.TOPICS))
def test_the_shipped_page_is_docs_cli_md_s_section(topic: str) -> None:
    heading = helptopics.TOPICS[topic][0]
    shipped = (REPO / "scopeledger" / "cli" / "help" / f"{topic}.md").read_text(encoding="utf-8")
    assert shipped == helptopics.section(DOCS, heading), (
        f"scopeledger/cli/help/{topic}.md is stale: run python -m scopeledger.cli.helptopics docs/cli.md")
    assert shipped.startswith(f"## {heading}\n") and len(shipped.splitlines()) > 5


@pytest.mark.parametrize("topic", sorted(helptopics.TOPICS))
def test_ledger_help_topic_prints_the_page(topic: str) -> None:
    p = _ledger("help", topic)
    assert p.returncode == 0, p.stderr
    assert p.stdout == helptopics.section(DOCS, helptopics.TOPICS[topic][0])
    j = _ledger("help", topic, "--json")
    assert json.loads(j.stdout) == {"topic": topic, "text": p.stdout}


def test_ledger_help_lists_the_topics_and_shows_a_command_s_help() -> None:
    p = _ledger("help")
    assert p.returncode == 0, p.stderr
    for topic, (_heading, what) in helptopics.TOPICS.items():
        assert f"  {topic}" in p.stdout and what in p.stdout
    assert _ledger("help", "replay").stdout == _ledger("replay", "--help").stdout
    assert "help" in _ledger("--help").stdout


@pytest.mark.parametrize("topic", ["nope", "help", "Rules", ""])
def test_an_unknown_topic_is_one_error_line(topic: str) -> None:
    p = _ledger("help", topic)
    assert p.returncode == 2 and p.stdout == ""
    line = one_error_line(p.stderr)
    assert repr(topic) in line and "rules, time, exit-codes, environment, completion" in line


def test_on_a_terminal_the_page_is_rendered(tmp_path: Path) -> None:
    r = run_pty([*CMD, "help", "exit-codes"], clean_env(TERM="xterm-256color"))
    assert r.returncode == 0
    assert "Errors and exit codes" in r.tty and "## Errors" not in r.tty

