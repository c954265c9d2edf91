"""Liveness for real, beyond tests/test_processes.py: liveness hidden by
/proc's hidepid (kept), a holder recorded under another boot id (reclaimed
although its pid and start time match a live process), a wall-clock step
(a live holder is not "reused"), a real zombie in the way on the hot path
with a live delegate below it (re-parented, kept)."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from scopeledger import Ledger, Liveness, ScopeConflict, ScopeRule, identify, probe
from torture_support import in_namespace

W = lambda p: ScopeRule(p, "write")  # noqa: E731


@pytest.mark.parametrize("mode", ["1", "2"], ids=["hidepid=1-access-denied", "hidepid=2-invisible"])
def test_liveness_hidden_by_hidepid_keeps_the_holder(mode):
    top = tempfile.mkdtemp(prefix="sl-hidepid-")  # not under pytest's 0700 tmp: uid 65534 works here
    os.chmod(top, 0o711)
    try:
        fig = in_namespace(["--pid", "--fork", "--mount-proc"],
                           ["tools.torture.liveness", "hidepid", mode, os.path.join(top, "base")])
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert "error" not in fig, fig.get("error")
    assert fig["psutil"] == {"1": "access_denied", "2": "not_listed"}[mode]
    assert fig == {"psutil": fig["psutil"], "probe": "unknown", "swept": [], "thief_granted": False,
                   "still_held": True, "verify": True}


def test_holder_recorded_under_another_boot_is_reclaimed_even_if_its_pid_lives(tmp_path):
    path = str(tmp_path / "l")
    me = identify()
    fig = in_namespace(["--mount"], ["tools.torture.liveness", "earlier-boot", path, str(me.pid)])
    assert fig["boot"] != me.boot and fig["pid"] == me.pid and fig["ticks"] == me.ticks
    led = Ledger.open(path)
    assert probe(led.holder("before-reboot").process) is Liveness.EARLIER_BOOT
    led.register("after-reboot", [W("/eb/r")])  # the hot path reclaims it
    assert [(e.data["name"], e.data["reason"]) for e in led.events(types=["reclaimed"])] == \
        [("before-reboot", "earlier_boot")]


@pytest.mark.parametrize("step", [1.0, -1.0, 37.0])
def test_a_wall_clock_step_does_not_make_a_live_holder_look_reused(tmp_path, monkeypatch, step):
    # psutil's start time is boot time (/proc/stat btime, whole seconds, moved
    # by every step of the wall clock) plus ticks since boot. After a step the
    # same live process reports a start time whole seconds away.
    import psutil._pslinux as pslinux

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        led = Ledger.open(str(tmp_path / "l"))
        led.register("live", [W("/clock/live")], pid=sleeper.pid)
        real_boot_time = pslinux.boot_time
        monkeypatch.setattr(pslinux, "boot_time", lambda: real_boot_time() + step)
        # The identity holds no wall-clock time (start ticks since boot):
        # the step changes nothing.
        assert probe(led.holder("live").process) is Liveness.ALIVE
        assert led.reclaim_stale() == []
        with pytest.raises(ScopeConflict):
            led.register("thief", [W("/clock/live")])
        assert [a.name for a in led.holders()] == ["live"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_real_zombie_in_the_way_is_reclaimed_and_its_live_delegate_kept(tmp_path):
    path = str(tmp_path / "l")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        led = Ledger.open(path)
        # Bound while a zombie: identify still reads its start time.
        led.register("parent", [W("/z")], pid=zombie.pid)
        led.delegate("parent", "child", [W("/z/kept")])  # this (live) process
        os.kill(zombie.pid, 0)  # kill(pid, 0) is fooled by the zombie
        led.register("taker", [W("/z/free")])  # in the zombie's way
        assert [(e.data["name"], e.data["reason"], e.data["reparented"])
                for e in led.events(types=["reclaimed"])] == [("parent", "zombie", [["child", None]])]
        assert {a.name: a.parent for a in led.holders()} == {"child": None, "taker": None}
        assert led.verify().ok
    finally:
        zombie.wait()
