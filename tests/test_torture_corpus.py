"""The bad-input corpus (tools/torture/corpus.py): well over 50 malformed
paths, rules, holder names, pids, manifests, log lines, snapshots and
command lines. Each meets its typed error with a clear one-line message (a bad
snapshot: skipped with a warning naming it, never trusted) and leaves every
recorded event intact (the log's bytes are compared before and after)."""

import os
import shutil
import tempfile

import pytest

import torture_support  # noqa: F401
from tools.torture import corpus

CASES = corpus.cases()


def test_the_corpus_is_big_and_covers_every_kind():
    kinds = {c.category for c in CASES}
    assert len(CASES) >= 50
    assert kinds == {"path", "rule", "name", "process", "manifest", "log", "snapshot", "cli"}
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def work():
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # snapshots fsync: use a tmpfs
    d = tempfile.mkdtemp(prefix="sl-corpus-", dir=base)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, work):
    corpus.run_case(case, work)


@pytest.mark.parametrize("bad", [lambda: 1.7e18, lambda: "now", lambda: None, lambda: True],
                         ids=["float", "str", "none", "bool"])
def test_a_clock_not_returning_int_ns_is_refused_before_anything_is_written(work, bad):
    # The log's ts must be an int; a ledger must never write a line it (and
    # every other reader) would then refuse as corrupt.
    from scopeledger import Ledger, ScopeRule, verify

    path = os.path.join(work, "l")
    corpus.base_ledger(path)
    before = corpus.log_bytes(path)
    led = Ledger.open(path, clock=bad)
    with pytest.raises(TypeError, match="clock"):
        led.register("n", [ScopeRule("/clock/n", "write")])
    assert corpus.log_bytes(path) == before
    assert [a.name for a in led.holders()] == ["A", "A1", "C"]
    assert verify(path).ok
