"""Short, bounded version of the crash injection (tools/torture/crash.py):
dozens of writers SIGKILLed at the k-th IO call of an append or of a
snapshot (a killed write first writes a random prefix), plus prefixes of
real lines appended directly. After each: the ledger opens, every complete
and every acknowledged event is there, the torn fragment is set aside byte
for byte, nothing is applied twice, verify passes."""

import orjson

from torture_support import run_module


def test_dozens_of_injected_crashes_lose_and_duplicate_nothing(tmp_path):
    p = run_module(["tools.torture.crash", str(tmp_path), "--rounds", "60", "--seed", "7"], timeout=240)
    fig = orjson.loads(p.stdout.decode().strip().splitlines()[-1])
    assert fig["kills"] >= 30, fig
    assert set(fig["kills_by_mode"]) == {"any", "append", "snapshot"}, fig
    assert fig["torn_set_aside"] >= 5, fig
    assert fig["partial_injected"] >= 3, fig
