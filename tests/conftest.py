"""Fixtures every test file may use (the shared helpers are in tests/helpers.py).

- ``ledger_dir`` (``str``) and ``led`` (the same, a ``Path``): a ledger directory, not yet made;
- ``ledger`` and ``lib`` (the same object): a :class:`scopeledger.Ledger` opened there, closed
  after the test;
- ``a_ledger``: a ledger directory (``Path``) in which holder ``a`` holds ``TMP/held`` (write),
  closed again;
- ``tree``: a small source tree (``src/parser``, ``src/lexer``, ``tests``, ``docs``).
- ``story`` (module scope, from tests/audit_support.py): ``(directory, Ledger, helper pids)``, a
  ledger with a known, varied history (the timeline and export tests).
"""

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

# A verdict never depends on the machine's speed: no Hypothesis deadline, and
# no "input generation is slow" health check (a loaded CI machine failed it).
# A test's own @settings(suppress_health_check=...) must list too_slow again.
settings.register_profile("scopeledger", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("scopeledger")

from scopeledger import Ledger, ScopeRule  # noqa: E402
from helpers import tree_of  # noqa: E402
from pgserver import pg_cluster, pg_url  # noqa: E402,F401  (PostgreSQL test cluster)
from audit_support import story  # noqa: E402,F401  (the timeline and export tests' ledger)


@pytest.fixture
def ledger_dir(tmp_path: Path) -> str:
    return str(tmp_path / "ledger")


@pytest.fixture
def led(ledger_dir: str) -> Path:
    return Path(ledger_dir)


@pytest.fixture
def ledger(ledger_dir: str):
    opened = Ledger.open(ledger_dir)
    yield opened
    opened.close()


@pytest.fixture
def lib(ledger: Ledger) -> Ledger:
    return ledger


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return tree_of(tmp_path)


@pytest.fixture
def a_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    with Ledger.open(path) as ledger:
        ledger.register("a", [ScopeRule(str(tmp_path / "held"), "write")])
    return path
