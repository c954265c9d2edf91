import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from scopeledger import Ledger  # noqa: E402
from pgserver import pg_cluster, pg_url  # noqa: E402,F401  (PostgreSQL test cluster)


@pytest.fixture
def ledger_dir(tmp_path):
    return str(tmp_path / "ledger")


@pytest.fixture
def ledger(ledger_dir):
    led = Ledger.open(ledger_dir)
    yield led
    led.close()
