"""Liveness against real processes: exit, SIGKILL, zombie, another start
time, another boot, unreadable liveness."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

import attrs

import scopeledger._process
from scopeledger import Ledger, Liveness, ScopeRule, Verdict, identify, judge, probe

W = lambda p: ScopeRule(p, "write")  # noqa: E731

CHILD = textwrap.dedent("""
    import sys, time
    from scopeledger import Ledger, ScopeRule
    led = Ledger.open(sys.argv[1])
    alloc = led.register(sys.argv[2], [ScopeRule(sys.argv[3], "write")])
    print(alloc.token, flush=True)
    if sys.argv[4] == "wait":
        time.sleep(60)
""")


def spawn_holder(ledger_dir, name, path, mode):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, ledger_dir, name, path, mode],
                            stdout=subprocess.PIPE, text=True)
    token = int(proc.stdout.readline())
    return proc, token


def reclaim_reasons(led):
    return [(e.data["name"], e.data["reason"]) for e in led.events(types=["reclaimed"])]


def test_child_that_exits_is_reclaimed(ledger_dir):
    proc, _ = spawn_holder(ledger_dir, "worker", "/r/w", "exit")
    proc.wait()
    led = Ledger.open(ledger_dir)
    assert [a.pid for a in led.holders()] == [proc.pid]
    assert led.reclaim_stale() == ["worker"]
    assert reclaim_reasons(led) == [("worker", "process_gone")]


def test_child_killed_with_sigkill_is_reclaimed(ledger_dir):
    proc, _ = spawn_holder(ledger_dir, "worker", "/r/w", "wait")
    led = Ledger.open(ledger_dir)
    assert led.reclaim_stale() == []
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert led.reclaim_stale() == ["worker"]
    led.register("next", [W("/r/w")])


def test_real_zombie_is_reclaimed(ledger_dir):
    proc, _ = spawn_holder(ledger_dir, "worker", "/r/w", "exit")
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "child never became a zombie"
            time.sleep(0.01)
        led = Ledger.open(ledger_dir)
        assert os.kill(proc.pid, 0) is None  # kill(pid, 0), the seed's check, is fooled
        assert led.reclaim_stale() == ["worker"]
        assert reclaim_reasons(led) == [("worker", "zombie")]
    finally:
        proc.wait()


def test_live_pid_with_another_start_time_is_reclaimed(ledger_dir, monkeypatch):
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        real = identify(stranger.pid)
        assert probe(real) is Liveness.ALIVE
        led = Ledger.open(ledger_dir)
        # The holder's process started earlier than the process now on its pid.
        monkeypatch.setattr(led, "_identity", lambda pid: attrs.evolve(real, ticks=real.ticks - 5037))
        led.register("old", [W("/r")], pid=stranger.pid)
        assert led.reclaim_stale() == ["old"]
        assert reclaim_reasons(led) == [("old", "pid_reused")]
    finally:
        stranger.kill()
        stranger.wait()


def test_holder_from_an_earlier_boot_is_reclaimed(ledger_dir, monkeypatch):
    led = Ledger.open(ledger_dir)
    me = identify()
    monkeypatch.setattr(led, "_identity", lambda pid: attrs.evolve(me, boot="an-earlier-boot-id"))
    led.register("before-reboot", [W("/r")], pid=12345)
    assert led.reclaim_stale() == ["before-reboot"]
    assert reclaim_reasons(led) == [("before-reboot", "earlier_boot")]


def test_unreadable_liveness_keeps_the_holder(ledger_dir, monkeypatch):
    led = Ledger.open(ledger_dir)
    led.register("A", [W("/r")])

    def denied(pid):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(scopeledger._process, "read_stat", denied)
    assert probe(led.holder("A").process) is Liveness.UNKNOWN
    assert led.reclaim_stale() == []
    assert [a.name for a in led.holders()] == ["A"]


def test_identity_without_start_time_is_kept_while_pid_lives(ledger_dir):
    ident = attrs.evolve(identify(), ticks=None)
    assert judge(ident) == Verdict(Liveness.UNKNOWN, f"its start time was not recorded: pid {os.getpid()} "
                                                     "is in use, by it or by a later process")
