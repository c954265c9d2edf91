"""A library program's stderr when its connections are cut (PostgreSQL):
psycopg's own ``error ignored terminating <psycopg.Pipeline [BAD]> ...``
never reaches it for a failure the library handles (connects again, or
raises its own typed error), and what the library answers is as documented.

A psycopg pipeline block that raised, ended on a broken connection, logs
that warning on the ``psycopg`` logger (``psycopg/_pipeline.py``: its
``__exit__`` tries to Sync the dead connection, and logs that failure so as
not to hide the block's error); a program that configures no logging gets
it on stderr from Python's last-resort handler. It was seen in
tests/pg_multihost_client.py's output in a CI run (the server restarted
while the client asked for the lock). ``ledger`` keeps psycopg's records off
its stderr by configuration (``scopeledger.cli.logs.quiet_psycopg``); a
library program has only the library, which must not end its own blocks that
way (ARCHITECTURE.md, "psycopg's blocks on a broken connection").

Each case runs tests/pg_cut_client.py (its docstring lists the scenarios) as
a process of its own, so its real stderr is read; the cut is real
(``pg_terminate_backend`` of the library's backend, from another session,
and the program goes on once that backend's process has exited; or the
server restarted with ``-m immediate``). Nothing here waits for time to
pass; the client's waits are on conditions with bounds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import orjson
import pytest

from helpers import clean_env

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "pg_cut_client.py")

#: What the library answers in each scenario (see pg_cut_client.py).
OUTCOMES = {
    # PgStore.locked: connected again once, the lock taken.
    "locked": {"outcome": "locked", "missed": 0},
    "locked-restart": {"outcome": "locked", "missed": 0},
    # PgStore.append: the read-back finds the line not recorded.
    "append": {"outcome": "NotRecorded", "seq": 1, "head": 0},
    # PgStore.try_append: a connection that broke before the line was sent: not appended.
    "try_append": {"outcome": False, "head": 0},
    # PgWatch.follow: the waiter is told to look, and its ticket is lost.
    "follow": {"outcome": True, "lost": True},
    # The read-back (a transaction block) cut too: read back again, not recorded.
    "read_back": {"outcome": "NotRecorded", "seq": 1, "head": 0, "cuts": 1},
    # Ledger (the public API): two grants and their releases, every connection cut twice.
    "ledger": {"outcome": "ok", "holders": []},
}


def run_client(pg_cluster, url: str, scenario: str) -> tuple[int, list[dict], str]:
    env = clean_env(PGAPPNAME=f"pgcut-{uuid.uuid4().hex[:12]}")
    p = subprocess.Popen([sys.executable, CLIENT, url, scenario], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        if scenario == "locked-restart":
            first = p.stdout.readline()
            assert orjson.loads(first) == {"restart": True}, first
            pg_cluster.restart("immediate")  # returns once every old backend has exited
            p.stdin.write("go\n")
            p.stdin.flush()
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    said = [orjson.loads(x) for x in out.splitlines() if x.strip()]
    return p.returncode, said, err


@pytest.mark.parametrize("scenario", sorted(OUTCOMES))
def test_a_cut_the_library_handles_leaves_no_psycopg_line_on_stderr(pg_cluster, pg_url, scenario) -> None:
    code, said, err = run_client(pg_cluster, pg_url, scenario)
    assert code == 0, err
    assert said[-1] == OUTCOMES[scenario], (said, err)
    assert "error ignored" not in err and "psycopg" not in err.lower(), err
    assert "Traceback" not in err, err
    # The library's own records may say what it did (a lost client session, in 'ledger').
    for line in err.splitlines():
        assert line.startswith("client session "), err


def test_psycopg_s_lines_about_the_program_s_own_blocks_still_reach_it(pg_cluster, pg_url) -> None:
    # The library does not silence psycopg: a pipeline of the program's own, ended on a
    # connection it cut, is psycopg's to report, and the program (here, Python's
    # last-resort handler) sees it. The same cut as above, so this also shows that the
    # cases above would see the line if the library let it through.
    code, said, err = run_client(pg_cluster, pg_url, "own-pipeline")
    assert code == 0, err
    assert said == [{"outcome": "OperationalError"}]
    assert "error ignored terminating <psycopg.Pipeline [BAD]" in err, err


def test_every_pipeline_block_of_the_store_goes_through_its_helper() -> None:
    # The rule (ARCHITECTURE.md, "psycopg's blocks on a broken connection"), kept for
    # blocks written later: _pgstore calls psycopg's pipeline() in _pipeline alone, and
    # no other module of the library (only _pgstore imports psycopg) calls one.
    import ast

    import scopeledger

    root = os.path.dirname(scopeledger.__file__)
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                            and node.func.attr == "pipeline":
                        found.append((os.path.relpath(path, root), fn.name))
    assert found and set(found) == {("_pgstore.py", "_pipeline")}, found
