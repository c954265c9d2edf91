"""spawn / adopt (scopeledger/_spawn.py) and what a release records (exit
status or signal, a note: v2 keys). Real children, real signals, a real
supervisor killed and restarted."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import re
import textwrap

import orjson
import pytest

from scopeledger import (
    AsyncLedger,
    CorruptLedger,
    Ledger,
    ScopeConflict,
    UnknownHolder,
)
from scopeledger._events import decode

from helpers import W, wait_for
from test_wait import BOUND, events


def released(led, name):
    return [e for e in events(led) if e["type"] == "released" and e["name"] == name]


def test_release_records_the_exit_status_signal_and_note(ledger, tmp_path):
    for i, (rc, note) in enumerate([(0, None), (3, "tests failed"), (-9, None), (None, "done by hand")]):
        a = ledger.register(f"h{i}", [W(str(tmp_path / f"p{i}"))])
        ledger.release(a.name, token=a.token, returncode=rc, note=note)
    got = [{k: e[k] for k in ("exit_code", "exit_signal", "note") if k in e} for e in events(ledger)
           if e["type"] == "released"]
    assert got == [{"exit_code": 0}, {"exit_code": 3, "note": "tests failed"}, {"exit_signal": 9},
                   {"note": "done by hand"}]
    # Every reader folds them: a fresh open, time travel, verify.
    again = Ledger.open(ledger.path)
    assert again.holders() == [] and again.verify().ok
    assert [e.type for e in again.events()][-1] == "released"


@pytest.mark.parametrize("kwargs, kind", [({"returncode": 256}, ValueError), ({"returncode": -128}, ValueError),
                                          ({"returncode": "0"}, TypeError), ({"returncode": True}, TypeError),
                                          ({"note": 5}, TypeError), ({"note": "x" * 4097}, ValueError),
                                          ({"note": "\udc80"}, ValueError)])
def test_a_bad_returncode_or_note_records_nothing(ledger, tmp_path, kwargs, kind):
    a = ledger.register("h", [W(str(tmp_path / "p"))])
    before = ledger.seq
    with pytest.raises(kind):
        ledger.release("h", token=a.token, **kwargs)
    assert ledger.seq == before and ledger.check("h", a.token)


@pytest.mark.parametrize("extra, message", [({"exit_code": "3"}, "exit_code is '3'"),
                                            ({"exit_code": 1, "exit_signal": 9}, "exit_signal is 9"),
                                            ({"exit_signal": 0}, "exit_signal is 0"),
                                            ({"note": None}, "note is None"),
                                            ({"exit_code": None}, "exit_code is None")])
def test_a_release_line_with_bad_extras_is_corrupt(ledger, tmp_path, extra, message):
    a = ledger.register("h", [W(str(tmp_path / "p"))])
    ledger.release("h", token=a.token)
    log = os.path.join(ledger.path, "events.jsonl")
    lines = open(log, "rb").read().splitlines()
    ev = orjson.loads(lines[-1])
    ev.update(extra)
    lines[-1] = orjson.dumps(ev)
    open(log, "wb").write(b"\n".join(lines) + b"\n")
    with pytest.raises(CorruptLedger, match=message.replace("(", r"\(")):
        Ledger.open(ledger.path + "/../ledger")


def test_v1_release_lines_have_no_extras(ledger):
    line = orjson.dumps({"v": 1, "seq": 1, "ts": 1, "actor": {"pid": 1, "start": None, "boot": "b"},
                         "prev": "0" * 32, "type": "released", "name": "x", "reparented": [], "exit_code": 0})
    with pytest.raises(CorruptLedger, match="unknown key 'exit_code'"):
        decode(line, "log", 1)


def test_spawn_binds_the_child_sets_the_environment_and_records_its_exit(ledger, tmp_path):
    out = tmp_path / "out"
    code = ("import os,sys; print(os.environ['SCOPELEDGER_DIR'], os.environ['SCOPELEDGER_HOLDER'], "
            "os.environ['SCOPELEDGER_TOKEN'], os.getpid()); sys.exit(7)")
    sp = ledger.spawn("job", [sys.executable, "-c", code], [W(str(out))], stdout=subprocess.PIPE, text=True)
    assert ledger.holder("job").pid == sp.pid  # bound to the child, not to us
    d, holder, token, pid = sp.process.stdout.readline().split()
    assert (d, holder, int(token), int(pid)) == (ledger.path, "job", sp.allocation.token, sp.pid)
    assert sp.wait() == 7
    assert released(ledger, "job")[0]["exit_code"] == 7
    assert ledger.holders() == []


def test_a_nested_ledger_run_delegates_from_the_spawned_holder(ledger, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ledger_bin = os.path.join(os.path.dirname(sys.executable), "ledger")
    sp = ledger.spawn("build", [ledger_bin, "run", "--name", "build.tests", "--write", str(src / "tests"),
                                "--", "true"], [W(str(src))])
    assert sp.wait() == 0
    nested = [e for e in events(ledger) if e["type"] == "delegated"]
    assert [(e["holder"]["name"], e["holder"]["parent"]) for e in nested] == [("build.tests", "build")]


def test_a_child_killed_by_a_signal_is_recorded_so(ledger, tmp_path):
    sp = ledger.spawn("sleeper", ["sleep", "600"], [W(str(tmp_path / "s"))])
    sp.process.send_signal(signal.SIGTERM)
    assert sp.wait(note="stopped by the test") == -signal.SIGTERM
    ev = released(ledger, "sleeper")[0]
    assert ev["exit_signal"] == signal.SIGTERM and ev["note"] == "stopped by the test"


def test_spawn_of_a_missing_command_exits_127_and_releases(ledger, tmp_path):
    sp = ledger.spawn("ghost", ["/nonexistent/command"], [W(str(tmp_path / "g"))], stderr=subprocess.DEVNULL)
    assert sp.wait() == 127
    assert released(ledger, "ghost")[0]["exit_code"] == 127


def test_spawn_refused_starts_nothing(ledger, tmp_path):
    ledger.register("owner", [W(str(tmp_path / "x"))])
    marker = tmp_path / "ran"
    with pytest.raises(ScopeConflict):
        ledger.spawn("job", ["touch", str(marker)], [W(str(tmp_path / "x"))])
    assert not marker.exists()


SUPERVISOR = textwrap.dedent("""
    import json, sys
    from scopeledger import Ledger, ScopeRule
    d, root = sys.argv[1], sys.argv[2]
    led = Ledger.open(d)
    top = led.register("supervisor", [ScopeRule(root, "write")])
    kids = [led.spawn(f"worker-{i}", ["sleep", "600"], [ScopeRule(f"{root}/w{i}", "write")],
                      parent="supervisor", parent_token=top.token) for i in range(2)]
    print(json.dumps({"supervisor": top.token, "workers": [[k.allocation.name, k.allocation.token, k.pid]
                                                             for k in kids]}), flush=True)
    sys.stdin.read()
""")


def test_a_restarted_supervisor_adopts_its_holder_and_running_children(ledger, ledger_dir, tmp_path):
    root = str(tmp_path / "root")
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR, ledger_dir, root],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    saved = json.loads(sup.stdout.readline())
    sup.kill()  # the supervisor dies; its workers (sleep) run on
    sup.wait()
    pids = [w[2] for w in saved["workers"]]
    try:
        # The new supervisor (this process) takes everything back before anyone reclaims it.
        top = ledger.adopt("supervisor", saved["supervisor"])
        assert top.rebound and ledger.holder("supervisor").pid == os.getpid()
        kids = [ledger.adopt(name, token) for name, token, _pid in saved["workers"]]
        assert [k.rebound for k in kids] == [False, False]
        assert ledger.reclaim_stale() == []  # nothing is dead: nothing moved to the top
        assert [a.parent for a in ledger.holders() if a.name.startswith("worker")] == ["supervisor"] * 2
        os.kill(pids[0], signal.SIGKILL)
        assert kids[0].wait(timeout=BOUND) is None  # ended; not our child: its exit status is unknown
        assert "exit status unknown" in released(ledger, "worker-0")[0]["note"]
        with pytest.raises(subprocess.TimeoutExpired):  # still running: as Spawned.wait
            kids[1].wait(timeout=0)
        assert ledger.check("worker-1", saved["workers"][1][1])  # nothing released
        with pytest.raises(RuntimeError, match="bound to this process"):  # its own: nothing to wait for
            top.wait()
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    with pytest.raises(UnknownHolder):
        ledger.adopt("worker-0", saved["workers"][0][1])  # released: too late
    with pytest.raises(UnknownHolder, match="another grant"):
        ledger.adopt("supervisor", saved["supervisor"] + 1000)


def test_async_spawn_waits_on_the_loop_and_records_the_exit(ledger_dir, tmp_path):
    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            sp = await aled.spawn("job", ["sh", "-c", "exit 5"], [W(str(tmp_path / "w"))])
            assert await sp.wait(note="async") == 5
            return sp.allocation.token

    asyncio.run(asyncio.wait_for(main(), BOUND))
    led = Ledger.open(ledger_dir)
    ev = released(led, "job")[0]
    assert ev["exit_code"] == 5 and ev["note"] == "async"


def test_the_command_never_runs_when_its_grant_cannot_be_bound(ledger, tmp_path, monkeypatch):
    marker = tmp_path / "ran"

    def attach(*a, **k):
        raise UnknownHolder("job", message="taken away meanwhile (the test)")

    monkeypatch.setattr(ledger, "attach", attach)
    with pytest.raises(UnknownHolder, match="the test"):
        ledger.spawn("job", ["touch", str(marker)], [W(str(tmp_path / "x"))])
    assert not marker.exists()
    assert released(ledger, "job")[0]["note"] == "spawn failed before the command ran"


def test_a_child_reclaimed_as_soon_as_it_ran_is_returned_not_raised(ledger, tmp_path, monkeypatch):
    """A child that exits at once may be reclaimed (by a waiter that finds
    its process gone) between the grant's check and the read of the bound
    grant at the end of ``spawn``: the child ran, so ``spawn`` returns it
    (its ``allocation`` as granted) and ``wait`` releases nothing. (Found by
    the test of spawned siblings on PostgreSQL: ``UnknownHolder: no live
    holder named 'pod/worker 2'`` from ``spawn`` for a child that had run.)"""
    check = ledger.check

    def reclaimed_right_after(name, token):
        live = check(name, token)
        ledger.release(name, token=token, note="reclaimed meanwhile (the test)")
        return live

    monkeypatch.setattr(ledger, "check", reclaimed_right_after)
    marker = tmp_path / "ran"
    # (on_lost=None: the release here stands in for a reclaim of the exited child, no loss;
    # a watch would take a release for one, and stop the child if it had not exited yet)
    sp = ledger.spawn("job", ["touch", str(marker)], [W(str(tmp_path / "x"))], on_lost=None)
    assert sp.allocation.name == "job"
    assert sp.wait() == 0 and marker.exists()
    assert [e["note"] for e in released(ledger, "job")] == ["reclaimed meanwhile (the test)"]
    assert ledger.holders() == []


def test_a_child_killed_at_its_gate_is_said_and_its_grant_released(ledger, tmp_path, monkeypatch):
    """Someone kills the child while it waits at its gate (after the grant
    is bound to it, before the gate opens): spawn says so, naming the
    signal, in a ChildProcessError, and releases the grant (it raised a
    bare BrokenPipeError, 'Broken pipe', before)."""
    marker = tmp_path / "ran"
    real = ledger.attach

    def attach(name, pid, **k):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _state(pid) == "Z", 20, "the child a zombie")  # (its end of the gate closed)
        return real(name, pid, **k)

    monkeypatch.setattr(ledger, "attach", attach)
    with pytest.raises(ChildProcessError, match=r"was killed by SIGKILL at its gate, before the command ran; "
                                                r"holder 'job' is released"):
        ledger.spawn("job", ["touch", str(marker)], [W(str(tmp_path / "x"))])
    assert not marker.exists()
    assert released(ledger, "job")[0]["note"] == "spawn failed before the command ran"


def _state(pid: int) -> str:
    """A process's state letter (``/proc/PID/stat``), ``""`` once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return ""


def test_the_gate_without_bash(ledger, tmp_path, monkeypatch):
    import scopeledger._spawn as sp

    monkeypatch.setattr(sp.shutil, "which", lambda *a, **k: None)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(12)]  # push the pipe's descriptors past 9
    try:
        s = ledger.spawn("job", ["sh", "-c", "exit 4"], [W(str(tmp_path / "x"))])
        assert s.wait() == 4
    finally:
        for fd in fds:
            os.close(fd)


def test_a_grant_records_why_it_was_asked_for(ledger, tmp_path):
    a = ledger.register("agent", [W(str(tmp_path / "src"))], note="refactor the parser (ticket 42)")
    ledger.delegate("agent", "agent/lexer", [W(str(tmp_path / "src" / "lexer"))], note="the lexer part")
    with ledger.hold("plain", [W(str(tmp_path / "docs"))]):
        pass
    got = [(e["holder"]["name"], e["holder"].get("note")) for e in events(ledger)
           if e["type"] in ("registered", "delegated")]
    assert got == [("agent", "refactor the parser (ticket 42)"), ("agent/lexer", "the lexer part"), ("plain", None)]
    assert Ledger.open(ledger.path).verify().ok
    assert ledger.check("agent", a.token)


@pytest.mark.parametrize("note, message", [(5, "holder.note is 5"), ("x" * 4097, "holder.note is 'xxx")])
def test_a_grant_line_with_a_bad_note_is_corrupt(ledger, tmp_path, note, message):
    ledger.register("h", [W(str(tmp_path / "p"))], note="fine")
    log = os.path.join(ledger.path, "events.jsonl")
    lines = open(log, "rb").read().splitlines()
    ev = orjson.loads(lines[-1])
    ev["holder"]["note"] = note
    lines[-1] = orjson.dumps(ev)
    open(log, "wb").write(b"\n".join(lines) + b"\n")
    with pytest.raises(CorruptLedger, match=message):
        Ledger.open(ledger.path + "/../ledger")


def test_adopt_leaves_a_grant_whose_process_may_be_alive_bound_to_it(tmp_path):
    """A grant whose process's liveness is unknown here (a live holder on
    another host) is not proven gone: adopting it must not take it from that
    process (it stays bound, not rebound to the adopter), and waiting for it
    does not release it."""
    from scopeledger import Liveness
    from test_identity import need_unshare, ready, spawn as helper

    need_unshare(["--mount"])
    led_dir = tmp_path / "l"
    p = helper(["unshare", "--mount", sys.executable, "-m", "tools.torture.identity", "other-host", str(led_dir)])
    try:
        ready(p)
        with Ledger.open(led_dir) as led:
            remote = led.holder("remote")
            assert led.liveness([remote])["remote"].liveness is Liveness.UNKNOWN
            adopted = led.adopt("remote", remote.token)
            assert adopted.rebound is False
            assert led.holder("remote").process == remote.process
            with pytest.raises(subprocess.TimeoutExpired):
                adopted.wait(timeout=0)
            assert led.check("remote", remote.token) and released(led, "remote") == []
            # Its pid here names a process that has exited (the helper, not
            # reaped yet: its pidfd is readable) while the holder stays
            # unknown: waiting asks the probe again after that exit, not in a
            # loop on the readable pidfd.
            p.kill()
            os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
            asks = []
            real = led.liveness
            led.liveness = lambda holders: asks.append(1) or real(holders)
            with pytest.raises(subprocess.TimeoutExpired):
                adopted.wait(timeout=0.3)
            assert 1 <= len(asks) <= 3, len(asks)  # the first look, one when woken, one at the deadline
            assert led.check("remote", remote.token)
    finally:
        p.kill()
        p.wait()


def test_spawn_with_a_ttl_keeps_the_lease_renewed_while_the_child_runs_and_stops_at_release(ledger_dir, tmp_path):
    # spawn(ttl=) as `ledger run --ttl`: the grant has a lease, renewed every
    # ttl/3 while the child runs (so it outlives many ttls), and the renewing
    # stops when the grant is released with the child's exit status.
    go = tmp_path / "go"
    with Ledger.open(ledger_dir) as led:
        sp = led.spawn("leased", ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.01; done; exit 4"],
                       [W(str(tmp_path / "t"))], ttl=6, lease_only=True)  # (renewed every 2 s)
        try:
            _renewed_while_running(ledger_dir, led, sp, go)
        finally:
            go.touch()  # (the child ends whatever happened above)
            sp.process.wait(timeout=120)


def _renewed_while_running(ledger_dir, led, sp, go):
    """The checks of the test above, while its child runs (it ends the child)."""
    from pgserver import wait_for

    assert sp.allocation.lease is not None and sp.renewer is not None and sp.renewer.running

    def renewals() -> int:
        with Ledger.open(ledger_dir, readonly=True) as other:
            return sum(1 for e in other.events() if e.type == "renewed")
    wait_for(lambda: renewals() >= 2, "two renewals while the child runs", bound=120)
    with Ledger.open(ledger_dir, readonly=True) as other:
        # Alive by the log, not by a clock: still held, its lease renewed since its grant.
        held = other.holder("leased")
        assert held.lease is not None and held.lease.renewed_ns > held.granted_ns
    go.touch()
    assert sp.wait(timeout=120) == 4
    assert not sp.renewer.running
    last = [e for e in led.events() if e.type == "released"][-1]
    assert last.data["name"] == "leased" and last.data["exit_code"] == 4


def test_async_spawn_with_a_ttl_keeps_the_lease_until_its_wait(ledger_dir, tmp_path):
    async def main():
        async with await AsyncLedger.open(ledger_dir) as al:
            sp = await al.spawn("leased", ["true"], [W(str(tmp_path / "t"))], ttl=6, lease_only=True)
            renewer = sp._spawned.renewer
            assert sp.allocation.lease is not None and renewer is not None
            assert await sp.wait() == 0
            assert not renewer.running
            assert not await al.check("leased", sp.allocation.token)

    asyncio.run(asyncio.wait_for(main(), 120))


@pytest.mark.parametrize("kwargs, error, says", [
    ({"env": ""}, TypeError, "env must be None or a mapping of str to str, not ''"),
    ({"env": []}, TypeError, "env must be None or a mapping of str to str, not []"),
    ({"env": {"A": 1}}, TypeError, "env must be None or a mapping of str to str"),
    ({"cwd": "no/such/dir"}, NotADirectoryError, "spawn's cwd 'no/such/dir' is not a directory"),
    ({"cwd": 5}, TypeError, "spawn's cwd must be a path, not 5"),
    ({"env": {"A=B": "1"}}, ValueError, "env has a variable the OS cannot take"),
    ({"env": {"": "1"}}, ValueError, "env has a variable the OS cannot take"),
    ({"env": {"A": "x\0y"}}, ValueError, "env has a variable the OS cannot take"),
])
def test_a_bad_env_or_cwd_is_refused_before_anything_is_asked(ledger, tmp_path, kwargs, error, says):
    """A fresh tester's findings: env='' and env=[] were taken (an empty
    environment), a missing cwd raised a bare FileNotFoundError after the
    grant was made and released."""
    marker = tmp_path / "ran"
    seq = ledger.seq
    with pytest.raises(error, match=re.escape(says)):
        ledger.spawn("job", ["touch", str(marker)], [W(str(tmp_path / "x"))], **kwargs)
    assert not marker.exists() and ledger.seq == seq  # nothing recorded


def test_a_bad_note_to_wait_is_refused_before_waiting(ledger, ledger_dir, tmp_path):
    # A note was checked only by the release after the wait: Spawned/Adopted.wait(timeout=0,
    # note=123) raised TimeoutExpired, a longer wait reaped the child and then raised the
    # TypeError with the grant still held (a fresh tester's finding); the async ones waited.
    sp = ledger.spawn("job", ["sleep", "600"], [W(str(tmp_path / "a"))])
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        far = ledger.register("far", [W(str(tmp_path / "b"))], pid=stranger.pid)
        ad = ledger.adopt("far", far.token)
        for waiter in (sp, ad):
            with pytest.raises(TypeError, match="note"):
                waiter.wait(timeout=0, note=123)
        assert sp.process.poll() is None and sp.returncode is None

        async def main():
            async with await AsyncLedger.open(ledger_dir) as aled:
                asp = await aled.spawn("ajob", ["sleep", "600"], [W(str(tmp_path / "c"))])
                aad = await aled.adopt("far", far.token)
                try:
                    for waiter in (asp, aad):
                        with pytest.raises(TypeError, match="note"):
                            await asyncio.wait_for(waiter.wait(note=123), BOUND)
                    assert asp.process.poll() is None
                    return asp.allocation.token
                finally:
                    asp.process.kill()
                    assert await asp.wait() == -signal.SIGKILL
        asp_token = asyncio.run(main())
        assert ledger.check("job", sp.allocation.token) and ledger.check("far", far.token)
        assert not ledger.check("ajob", asp_token)
    finally:
        sp.process.kill()
        assert sp.wait() == -signal.SIGKILL
        stranger.kill()
        stranger.wait()
