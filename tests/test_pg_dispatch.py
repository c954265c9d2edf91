"""A URL given where a ledger is opened (``Ledger.open``, ``$SCOPELEDGER_DIR``,
``ledger --ledger``) is told from a directory by a plain string test
(``scheme://``), and the PostgreSQL module is imported only for a URL.
``Ledger.open`` runs on the PostgreSQL store for a ``postgresql://`` URL
(tests/test_ledger_stores.py); any other URL, and a URL where the command line
or ``$SCOPELEDGER_DIR`` (not wired yet) name a ledger, is refused with a typed
error that shows no password, and nothing is created (before, it made a
directory tree named after the URL, password included)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scopeledger import Ledger, LedgerError
from scopeledger._pgstore import InvalidLedgerURL

URLS = ["postgresql://alice:s3cr3t@db.example/ledgers?schema=team1", "postgres://h/db",
        "mysql://bob:s3cr3t@h/d", "file:///tmp/x"]


@pytest.mark.parametrize("url", URLS[2:])
def test_a_url_is_not_a_directory(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidLedgerURL) as err:
        Ledger.open(url)
    assert isinstance(err.value, LedgerError) and "nothing was created" in str(err.value)
    assert "s3cr3t" not in str(err.value)
    monkeypatch.setenv("SCOPELEDGER_DIR", url)
    with pytest.raises(InvalidLedgerURL):
        Ledger.open()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("url", URLS[:2])
def test_a_postgresql_url_opens_the_postgresql_store_and_creates_no_directory(tmp_path, monkeypatch, url):
    # (Until Ledger ran on the store, Ledger.open refused it as it refuses
    # any other URL; it now connects: here to no server.)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LedgerError) as err:
        Ledger.open(url)
    assert type(err.value).__name__ == "StoreUnavailable" and "cannot connect to" in str(err.value)
    assert "s3cr3t" not in str(err.value)
    monkeypatch.setenv("SCOPELEDGER_DIR", url)
    with pytest.raises(LedgerError) as err:  # $SCOPELEDGER_DIR names the same store
        Ledger.open()
    assert type(err.value).__name__ == "StoreUnavailable" and "s3cr3t" not in str(err.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", ["--ledger", "env"])
def test_the_command_line_refuses_a_url_without_a_traceback_or_a_password(tmp_path, how):
    url = URLS[0]
    env = dict(os.environ)
    args = [sys.executable, "-m", "scopeledger"]
    if how == "env":
        env["SCOPELEDGER_DIR"] = url
    else:
        args += ["--ledger", url]
    out = subprocess.run(args + ["show"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "postgresql://alice:***@db.example/ledgers?schema=team1" in out.stderr
    assert "s3cr3t" not in out.stderr + out.stdout and "Traceback" not in out.stderr
    assert os.listdir(tmp_path) == []


def test_a_path_with_a_colon_is_still_a_directory_and_needs_no_postgresql(tmp_path):
    code = ("import sys, scopeledger; scopeledger.Ledger.open(sys.argv[1]).close(); "
            "print(sorted(m for m in sys.modules if 'psycopg' in m or '_pgstore' in m))")
    out = subprocess.run([sys.executable, "-c", code, "a:b"], cwd=tmp_path, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
    assert os.path.exists(tmp_path / "a:b" / "events.jsonl")


def test_a_psycopg_that_cannot_load_is_said_with_its_reason_not_as_missing(tmp_path):
    # psycopg installed but unable to load (PSYCOPG_IMPL=c asks for its C
    # build, absent here, as a missing libpq would fail its pure build): the
    # real reason and exit 7 (the environment), not "pip install" advice
    # for what is already installed (a newcomer's finding: exit 1 so).
    env = dict(os.environ, PSYCOPG_IMPL="c")
    p = subprocess.run([sys.executable, "-m", "scopeledger", "--ledger", URLS[0], "show"], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 7, (p.returncode, p.stderr)
    assert "cannot be loaded here" in p.stderr and "psycopg_c" in p.stderr and "Traceback" not in p.stderr
    assert "s3cr3t" not in p.stderr + p.stdout and os.listdir(tmp_path) == []
