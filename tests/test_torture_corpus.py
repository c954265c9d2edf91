"""The bad-input corpus (tools/torture/corpus.py): well over 50 malformed
paths, rules, holder names, manifests, log lines, snapshots and command
lines. Each meets its typed error with a clear one-line message (a bad
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
    assert kinds == {"path", "rule", "name", "manifest", "log", "snapshot", "cli"}
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
