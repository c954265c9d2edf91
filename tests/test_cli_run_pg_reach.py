"""``ledger run`` with a wait rides out a PostgreSQL server it cannot reach from its
start (a fresh tester's F3: ``run -w 30`` started while the server was down for a
restart exited 7 at once, while ``Ledger.register(wait=30)`` on an open ledger rode the
same outage out): the deadline of ``-w SECONDS`` (or none) covers reaching the server
too. What waiting does not mend fails at once, as before: ``-n``/``-w 0``, a wrong
password, a database that does not exist.

Real wrappers (the console script) against the worker's throwaway cluster
(tests/pgserver.py), which a test stops and starts again; the server is started again
only once the wrapper has said that it cannot reach it (its stderr, read line by line),
never after a sleep.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import pgserver
from helpers import CMD, clean_env, lines_of, one_error_line
from test_cli_run_pg_cuts import url  # noqa: F401 - the fixture: a new ledger made by ledger init

BOUND = 60.0  # seconds: a bound on any condition a test waits for, not a measure of speed


def run(url: str, tmp_path: Path, *options: str) -> subprocess.Popen[str]:
    """``ledger --ledger URL run OPTIONS --name x --write DIR -- touch RAN``."""
    return subprocess.Popen([*CMD, "--ledger", url, "run", *options, "--name", "x",
                             "--write", str(tmp_path / "dir"), "--", "touch", str(tmp_path / "ran")],
                            env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_run_with_a_wait_started_while_the_server_is_down_is_granted_once_it_is_back(
        pg_cluster: Any, url: str, tmp_path: Path) -> None:
    pg_cluster.stop_server()
    p = None
    try:
        p = run(url, tmp_path, "-w", "60")
        lines = lines_of(p.stderr)
        said: list[str] = []
        while True:  # until it says it cannot reach the ledger (or ends: the bug, exit 7 at once)
            line = lines.get(timeout=BOUND)
            if line is None:
                break
            said.append(line)
            if "cannot reach the ledger" in line:
                break
        assert said and "cannot reach the ledger" in said[-1], "".join(said)
        assert p.poll() is None, "".join(said)
    finally:
        pg_cluster.start_server()
    try:
        code = p.wait(BOUND)
        while (line := lines.get(timeout=BOUND)) is not None:
            said.append(line)
    finally:
        if p.poll() is None:
            p.kill()
    err = "".join(said)
    assert code == 0, err
    assert (tmp_path / "ran").exists(), err
    warnings = [s for s in said if s.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: holder 'x' cannot reach the ledger while it waits (cannot connect to "), err
    assert "trying again" in warnings[0], err
    assert sum("reached the ledger" in s for s in said) == 1, err
    assert "error" not in err, err


def test_run_whose_wait_ends_while_the_server_is_down_exits_7_with_that_error(
        pg_cluster: Any, url: str, tmp_path: Path) -> None:
    """The deadline passes while the server is still down (it stays down until the
    wrapper has ended): the server's error, exit 7, after the one warning; not a
    timeout's exit 1 (it never knew whether the scope was free)."""
    pg_cluster.stop_server()
    try:
        r = run(url, tmp_path, "-w", "1")
        _, err = r.communicate(timeout=BOUND)
    finally:
        pg_cluster.start_server()
    assert r.returncode == 7, err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("warning: holder 'x' cannot reach the ledger while it waits ("), err
    assert lines[1].startswith("error: cannot connect to "), err
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("options", [["-w", "0"], ["-n"]])
def test_run_without_a_wait_fails_at_once_while_the_server_is_down(
        pg_cluster: Any, url: str, tmp_path: Path, options: list[str]) -> None:
    pg_cluster.stop_server()
    try:
        r = run(url, tmp_path, *options)
        _, err = r.communicate(timeout=BOUND)
    finally:
        pg_cluster.start_server()
    assert r.returncode == 7, err
    assert "cannot connect to" in one_error_line(err), err
    assert "trying again" not in err and "cannot reach" not in err, err
    assert not (tmp_path / "ran").exists()


def test_what_waiting_does_not_mend_fails_at_once_even_with_a_wait(pg_cluster: Any, url: str,
                                                                  tmp_path: Path) -> None:
    """A wrong password (a login the server refuses) and a database that does not exist:
    the server answers, and waiting does not change its answer."""
    role = "reach_" + pgserver.new_schema_name()
    pg_cluster.password_role(role, "right")
    schema = url.rsplit("schema=", 1)[1]
    wrong = pg_cluster.url(schema, user=role, password="not-it")
    no_db = url.replace("/postgres?", "/no_such_db?")
    for bad, says in ((wrong, "password authentication failed"), (no_db, 'database "no_such_db" does not exist')):
        r = run(bad, tmp_path, "-w", "60")
        _, err = r.communicate(timeout=BOUND)
        assert r.returncode == 7, err
        assert says in one_error_line(err), err
        assert "trying again" not in err and "cannot reach" not in err, err
        assert "not-it" not in err
    assert not (tmp_path / "ran").exists()
