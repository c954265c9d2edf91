"""Short, bounded version of the concurrency stress (tools/torture/stress.py):
8 processes on one ledger, SIGKILLed at random moments, then every check of
the long run (verify, gapless seqs, invariants at every seq by the
reference model, acknowledged operations in the log, final state equal to
the reference model fed the successful operations, reclaims only of dead
processes). Runs in its own process: it becomes a child subreaper."""

import orjson
import pytest

from torture_support import run_module


@pytest.mark.parametrize("seed", [1, 2])
def test_eight_processes_with_sigkill_keep_every_invariant(tmp_path, seed):
    p = run_module(["tools.torture.stress", str(tmp_path), "--workers", "8", "--total-workers", "14",
                    "--ops", "70", "--kill-every", "0.1", "0.35", "--snapshot-every", "25",
                    "--seed", str(seed)], timeout=240)
    fig = orjson.loads(p.stdout.decode().strip().splitlines()[-1])
    assert fig["kills"] >= 2, fig
    assert fig["ops_ok"] >= 200, fig
    assert fig["violations"] == 0
    assert fig["by_type"].get("reclaimed", 0) > 0, fig
