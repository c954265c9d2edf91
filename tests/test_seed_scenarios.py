"""The seed's 16 test cases (REQUIREMENTS.md, last section), one test each,
named as the seed named them."""

import gc
import os
import subprocess

import pytest

from scopeledger import (
    DelegationError,
    DuplicateHolder,
    Ledger,
    ScopeConflict,
    overlaps,
)
from helpers import Rd, W


# file ------------------------------------------------------------------------

def test_file_open_creates_the_file(ledger_dir):
    assert not os.path.exists(ledger_dir)
    with Ledger.open(ledger_dir):
        pass
    assert os.path.isfile(os.path.join(ledger_dir, "events.jsonl"))
    assert os.path.isfile(os.path.join(ledger_dir, "gate"))
    assert not os.path.exists(os.path.join(ledger_dir, "lock"))  # the log is the lock


def test_file_save_then_reopen_round_trips(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        led.register("A", [W("/r/src"), Rd("/r/docs")])
        led.delegate("A", "B", [W("/r/src/b")])
        before = led.holders()
    with Ledger.open(ledger_dir) as again:
        assert again.holders() == before


# overlap -------------------------------------------------------------------------

def test_overlap_prefix_relation():
    assert overlaps(W("/r/src"), W("/r/src/a/b"))
    assert not overlaps(W("/r/src"), W("/r/srcx"))


def test_overlap_non_recursive_coverage():
    assert overlaps(W("/r/src", rec=False), W("/r/src/a", rec=False))
    assert not overlaps(W("/r/src", rec=False), W("/r/src/a/b", rec=False))


# register ----------------------------------------------------------------------------

def test_register_write_conflict(ledger):
    ledger.register("A", [W("/r/src")])
    with pytest.raises(ScopeConflict) as info:
        ledger.register("B", [W("/r/src/x")])
    assert info.value.owner == "A"
    assert [a.name for a in ledger.holders()] == ["A"]


def test_register_duplicate_name(ledger):
    ledger.register("A", [W("/r/a")])
    with pytest.raises(DuplicateHolder, match="'A'"):
        ledger.register("A", [W("/r/b")])


def test_register_read_does_not_conflict(ledger):
    ledger.register("A", [W("/r/src")])
    ledger.register("B", [Rd("/r/src")])
    ledger.register("C", [Rd("/r/src/x")])
    assert [a.name for a in ledger.holders()] == ["A", "B", "C"]


# delegate -------------------------------------------------------------------------------

def test_delegate_must_be_a_subset(ledger):
    ledger.register("A", [W("/r/src")])
    with pytest.raises(DelegationError, match="not inside"):
        ledger.delegate("A", "B", [W("/r")])
    with pytest.raises(DelegationError, match="not inside"):
        ledger.delegate("A", "B", [W("/r/other")])


def test_delegate_succeeds_inside_the_parent(ledger):
    ledger.register("A", [W("/r/src")])
    b = ledger.delegate("A", "B", [W("/r/src/b"), Rd("/r/src/c")])
    assert b.parent == "A"
    assert ledger.children("A") == ["B"]


def test_delegate_rejects_sibling_overlap(ledger):
    ledger.register("A", [W("/r/src")])
    ledger.delegate("A", "B", [W("/r/src/b")])
    with pytest.raises(DelegationError) as info:
        ledger.delegate("A", "C", [W("/r/src/b/x")])
    assert info.value.sibling == "B"


# release ------------------------------------------------------------------------------------

def test_release_reparents_children(ledger):
    ledger.register("A", [W("/r")])
    ledger.delegate("A", "B", [W("/r/b")])
    ledger.delegate("B", "D", [W("/r/b/d")])
    assert ledger.release("B") == ["D"]
    assert ledger.holder("D").parent == "A"
    ledger.release("A")
    assert ledger.holder("D").parent is None


def test_release_reopens_the_scope(ledger):
    ledger.register("A", [W("/r/src")])
    ledger.release("A")
    ledger.register("B", [W("/r/src")])


def test_release_returns_scope_to_the_parent(ledger):
    ledger.register("A", [W("/r/src")])
    ledger.delegate("A", "B", [W("/r/src/b")])
    assert not ledger.effective_scope("A").allows(W("/r/src/b"))
    ledger.release("B")
    assert ledger.effective_scope("A").allows(W("/r/src/b"))
    ledger.delegate("A", "C", [W("/r/src/b")])


# stale -----------------------------------------------------------------------------------------

def test_stale_reparents_and_removes_dead_entries(ledger):
    child = subprocess.Popen(["sleep", "60"])
    try:
        ledger.register("A", [W("/r")])
        ledger.delegate("A", "B", [W("/r/b")], pid=child.pid)
        ledger.delegate("B", "D", [W("/r/b/d")])
        assert ledger.reclaim_stale() == []
    finally:
        child.kill()
        child.wait()
    assert ledger.reclaim_stale() == ["B"]
    assert [(a.name, a.parent) for a in ledger.holders()] == [("A", None), ("D", "A")]
    (event,) = ledger.events(types=["reclaimed"])
    assert event.data["reason"] == "process_gone"
    assert event.data["reparented"] == [["D", "A"]]
    # The seed's test seam: an injected probe decides liveness.
    assert ledger.reclaim_stale(lambda ident: False) == ["A", "D"]
    assert ledger.holders() == []


# guard ----------------------------------------------------------------------------------------------

def test_guard_releases_on_drop(ledger):
    guard = ledger.hold("job", [W("/r/job")])
    assert ledger.holder("job").token == guard.allocation.token
    del guard
    gc.collect()
    assert ledger.holders() == []
    with ledger.hold("job2", [W("/r/job")]) as alloc:
        assert alloc.name == "job2"
    assert ledger.holders() == []
    with pytest.raises(RuntimeError):
        with ledger.hold("job3", [W("/r/job")]):
            raise RuntimeError("boom")
    assert ledger.holders() == []


# conflict detection ---------------------------------------------------------------------------------

def test_conflict_detection_descends_to_real_owner(ledger):
    ledger.register("A", [W("/r")])
    ledger.delegate("A", "B", [W("/r/b")])
    ledger.delegate("B", "D", [W("/r/b/d")])
    conflict = ledger.find_conflict([W("/r/b/d/x")])
    assert conflict.owner == "D"
    assert conflict.chain == ("A", "B", "D")
    assert "holder 'D' (delegated from 'B', from 'A')" in str(conflict)
    with pytest.raises(ScopeConflict) as info:
        ledger.register("X", [W("/r/b/d/x")])
    assert info.value.chain == ("A", "B", "D")
