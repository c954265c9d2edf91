"""Real PID reuse in a fresh PID namespace (tools/torture/pidns.py), and
holders seen across PID namespaces. Needs root (unshare --pid); skipped with
the reason where that is not permitted."""

import os
import subprocess
import sys

import pytest

from scopeledger import Ledger, Liveness, ScopeConflict, ScopeRule, probe
from torture_support import REPO, in_namespace

PIDNS = ["--pid", "--fork", "--mount-proc"]


def test_reused_pid_in_a_pid_namespace_is_reclaimed_not_kept_alive_by_the_stranger(tmp_path):
    fig = in_namespace(PIDNS, ["tools.torture.pidns", "reuse", str(tmp_path / "l"), "--rounds", "4"])
    assert fig["env"]["pid"] == 1 and fig["env"]["proc_self"] == 1  # psutil sees this namespace
    assert fig["reused_pids"] == 4
    assert fig["reasons"] == {"pid_reused": 4, "zombie": 4, "process_gone": 4}
    assert fig["reclaimed_pid_reused"] == 2 and fig["hot_path_pid_reused"] == 2


def _hold_inside(ledger_dir):
    if subprocess.run(["unshare", *PIDNS, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --pid not permitted here")
    p = subprocess.Popen(["unshare", *PIDNS, sys.executable, "-m", "tools.torture.pidns", "hold", ledger_dir],
                         cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    assert line[:2] == ["READY", "inside"], line
    return p


def test_a_live_holder_inside_a_pid_namespace_is_not_reclaimed_from_outside(tmp_path):
    # Its pid (1 in there) names another process out here: the start time
    # differs, which proves nothing about the process in the namespace.
    ledger_dir = str(tmp_path / "l")
    p = _hold_inside(ledger_dir)
    try:
        led = Ledger.open(ledger_dir)
        ident = led.holder("inside").process
        assert probe(ident) is Liveness.UNKNOWN
        assert led.reclaim_stale() == []
        led.register("outside", [ScopeRule("/ns/elsewhere", "write")])
        with pytest.raises(ScopeConflict):  # the hot path does not reclaim it either
            led.register("thief", [ScopeRule("/ns/inside", "write")])
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        out = p.stdout.read()
        p.wait()
    assert '"still_held":true' in out


def test_a_live_holder_outside_is_not_reclaimed_from_inside_a_pid_namespace(tmp_path):
    ledger_dir = str(tmp_path / "l")
    with Ledger.open(ledger_dir) as led:
        led.register("outside", [ScopeRule("/ns/outside", "write")])  # this process, alive
        ident = led.holder("outside").process
    assert ident.pid == os.getpid() and probe(ident) is Liveness.ALIVE
    fig = in_namespace(PIDNS, ["tools.torture.pidns", "sweep", ledger_dir])
    assert fig["reclaimed"] == [], fig
    assert [a.name for a in Ledger.open(ledger_dir).holders()] == ["outside"]
