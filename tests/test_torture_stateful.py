"""Hypothesis stateful testing of the Ledger against the independent
reference model (tools/torture/stateful.py, tools/torture/model.py)."""

from hypothesis import HealthCheck, settings

import torture_support  # noqa: F401  (makes tools.torture importable)
from tools.torture.stateful import LedgerMachine

TestLedgerAgainstReferenceModel = LedgerMachine.TestCase
TestLedgerAgainstReferenceModel.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_delegating_to_the_parents_own_name_is_a_duplicate_even_when_the_parent_is_dead(tmp_path):
    # Found by the state machine: the hot path reclaimed the dead holder in
    # the way of the name, which was the parent itself, then answered "no
    # live holder named 'h1'" about a holder the log still shows live (the
    # reclaim was discarded with the failed transaction).
    from scopeledger import DuplicateHolder, Ledger, Liveness, ProcessIdentity

    dead = set()
    led = Ledger.open(str(tmp_path / "l"), resolve_symlinks=False,
                      probe=lambda ident: Liveness.GONE if ident.pid in dead else Liveness.ALIVE)
    led._identity = lambda pid: ProcessIdentity(pid=pid, boot="boot", ticks=1000 + pid)
    led.register("h1", [("/r", "write", True)], pid=5)
    dead.add(5)
    try:
        led.delegate("h1", "h1", [("/r/a", "write", True)], pid=6)
    except DuplicateHolder as err:
        assert err.name == "h1"
    else:
        raise AssertionError("delegating a child named like its parent was granted")
    assert [a.name for a in led.holders()] == ["h1"]
    assert led.verify().ok
