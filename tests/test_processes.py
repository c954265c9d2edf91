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
from scopeledger._store import _process_summary

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


LEADER_EXITS = textwrap.dedent("""
    import ctypes, sys, threading
    from scopeledger import Ledger, ScopeRule
    led = Ledger.open(sys.argv[1])
    led.register("worker", [ScopeRule("/r/threads", "write")])
    def work():  # the process's real work goes on in this thread until told to stop
        sys.stdin.readline()
    threading.Thread(target=work).start()
    print("ready", flush=True)
    ctypes.CDLL(None).pthread_exit(None)  # as a C, Go or Java program's main thread may
""")


def _stat_state(path):
    with open(path, "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


def test_a_process_whose_main_thread_exited_while_others_run_is_alive(ledger_dir):
    """/proc/PID/stat shows the thread-group leader: "Z" from the moment the
    main thread exits (pthread_exit) until the last thread does. Such a
    holder is alive (v2 and v1 identities, reclaim and the hot path); once
    its last thread has exited it is a zombie (never reaped here) and is
    reclaimed as one."""
    proc = subprocess.Popen([sys.executable, "-c", LEADER_EXITS, ledger_dir], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 60
        while _stat_state(f"/proc/{proc.pid}/stat") != "Z":
            assert time.monotonic() < deadline, "the main thread never exited"
            time.sleep(0.01)
        tasks = [t for t in os.listdir(f"/proc/{proc.pid}/task") if t != str(proc.pid)]
        assert tasks and any(_stat_state(f"/proc/{proc.pid}/task/{t}/stat") != "Z" for t in tasks)
        # Were it to hold the ledger's lock, a waiter would say so (not "a zombie").
        assert "(its main thread has exited; its other threads run on)" in _process_summary(proc.pid)
        led = Ledger.open(ledger_dir)
        ident = led.holder("worker").process
        assert judge(ident) == Verdict(Liveness.ALIVE)
        v1 = attrs.evolve(ident, format=1, ticks=None, host=None,
                          start=psutil.Process(proc.pid).create_time())
        assert judge(v1) == Verdict(Liveness.ALIVE)
        report = led.reclaim()
        assert report.reclaimed == () and report.unknown == []
        try:
            led.register("newcomer", [W("/r/threads")])  # the hot path: in the live holder's way
        except Exception as exc:
            assert type(exc).__name__ == "ScopeConflict", exc
        else:
            raise AssertionError("granted the live holder's scope")
        # The last thread exits: now a zombie (this test does not reap it yet).
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while os.listdir(f"/proc/{proc.pid}/task") != [str(proc.pid)]:
            assert time.monotonic() < deadline, "the worker thread never exited"
            time.sleep(0.01)
        assert judge(ident).liveness is Liveness.ZOMBIE
        assert judge(v1).liveness is Liveness.ZOMBIE
        assert led.reclaim_stale() == ["worker"]
        assert reclaim_reasons(led) == [("worker", "zombie")]
    finally:
        proc.kill()
        proc.wait()


def test_a_process_reaped_between_the_open_and_the_read_of_its_stat_is_gone(monkeypatch):
    """Reading ``/proc/PID/stat`` opened before the process was reaped fails with ESRCH
    (``ProcessLookupError``), not ENOENT: the probe said "unknown" for a process that was
    gone (a test helper met it in a fresh clone's run). The open is the test's, made
    before the reap; the read is the library's."""
    child = subprocess.Popen(["sleep", "60"])
    ident = identify(child.pid)
    opened = open(f"/proc/{child.pid}/stat", "rb", buffering=0)
    child.kill()
    child.wait()
    monkeypatch.setattr(scopeledger._process, "open", lambda *a, **k: opened, raising=False)
    try:
        verdict = judge(ident)
        assert verdict.liveness is Liveness.GONE, verdict
    finally:
        opened.close()
