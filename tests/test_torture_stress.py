"""Short, bounded version of the concurrency stress (tools/torture/stress.py):
8 processes on one ledger, SIGKILLed at random moments, then every check of
the long run (verify, gapless seqs, invariants at every seq by the
reference model, acknowledged operations in the log, final state equal to
the reference model fed the successful operations, reclaims only of dead
processes). Runs in its own process: it becomes a child subreaper.

The verdict never depends on the machine's speed: how many operations a
worker manages before a timed SIGKILL does, so the counts asserted are those
that hold however fast the run goes (two victims killed once they have done
their share, every worker either completed or killed, nothing lost)."""

import orjson
import pytest

from torture_support import run_module


@pytest.mark.parametrize("seed", [1, 2])
def test_eight_processes_with_sigkill_keep_every_invariant(tmp_path, seed):
    p = run_module(["tools.torture.stress", str(tmp_path), "--workers", "8", "--total-workers", "14",
                    "--ops", "70", "--kill-every", "0.1", "0.35", "--snapshot-every", "25",
                    "--victims", "2", "--seed", str(seed)], timeout=240)
    fig = orjson.loads(p.stdout.decode().strip().splitlines()[-1])
    assert fig["workers"] == 14, fig
    assert fig["kills"] >= 2, fig  # the victims, killed in the middle of work once they did 35
    assert fig["workers_completed"] + fig["kills"] >= fig["workers"], fig  # every worker accounted for
    assert fig["ops_ok"] > 0 and fig["violations"] == 0 and fig["lost"] == 0, fig
    # Each victim died holding a scope: reclaimed during the run or by the final sweep.
    assert fig["by_type"].get("reclaimed", 0) + fig["final_reclaimed"] >= 2, fig


def test_a_lost_acknowledged_release_is_counted_and_reported(tmp_path):
    """The torture run's "lost" is counted, not a literal: a stress worker
    that acknowledges a release it never made is reported, with the count."""
    p = run_module(["tools.torture", "--minutes", "0", "--phases", "stress", "--quick",
                    "--inject-lost-release", "1", "--seed", "5", "--dir", str(tmp_path)],
                   timeout=240, check=False)
    assert p.returncode == 1, p.stderr.decode()[-3000:]
    fig = orjson.loads(p.stdout)
    assert fig["lost"] == 1, fig
    assert len(fig["violations"]) == 1 and "1 acknowledged operation(s) lost" in fig["violations"][0]
    assert "acknowledged release" in fig["violations"][0]
