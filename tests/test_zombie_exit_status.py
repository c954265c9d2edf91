"""A holder's process has exited and its parent has not reaped it yet (a
zombie); in that moment another process reclaims the holder. Its parent's
release, with the exit status, then finds the holder gone: so the reclaimer
reads the status from the zombie (``/proc/PID/stat``'s ``exit_code``) and
records it in the ``reclaimed`` event as a release would (``exit_code`` /
``exit_signal``): only from a zombie proven to be the holder's process, and
only when the kernel shows the status to the reclaimer; else nothing.

The race is made deterministic, never timed: the parent (this test, or a
``ledger run`` wrapper it has stopped with SIGSTOP) does not reap the child
until the reclaim is recorded; ``waitid(WNOWAIT)`` or a pidfd says when the
child has exited, without reaping it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import orjson
import pytest

from scopeledger import Ledger, Liveness, ScopeRule, UnknownHolder, Verdict, judge, spawn
from scopeledger import _events, _process
from scopeledger._errors import CorruptLedger

from helpers import CMD, clean_env, jl, ledger_cmd


def W(path: str | os.PathLike[str]) -> ScopeRule:
    return ScopeRule(str(path), "write")


def exited_unreaped(pid: int) -> None:
    """Wait until child ``pid`` of this process has exited, leaving it a
    zombie (``WNOWAIT``: not reaped)."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    assert info is not None and info.si_pid == pid


def state_of(pid: int) -> str:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rfind(b")") + 1:].split()[0].decode()


def removals(led: Ledger, name: str) -> list[dict]:
    return [dict(e.data, type=e.type, seq=e.seq) for e in led.events(types=["released", "reclaimed"])
            if e.data["name"] == name]


def location(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    if backend == "directory":
        return str(tmp_path / "ledger")
    return str(request.getfixturevalue("pg_url"))


BACKENDS = ["directory", "postgresql"]


# -- the library: spawn's child reclaimed between its exit and spawn's release --------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_spawned_child_reclaimed_before_its_parent_reaps_it_keeps_its_exit_code(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    where = location(request, tmp_path, backend)
    with Ledger.open(where) as led:
        child = spawn(led, "job", ["sh", "-c", "exit 3"], [W(tmp_path / "out")])
        exited_unreaped(child.pid)
        assert state_of(child.pid) == "Z"
        with Ledger.open(where) as other:  # another ledger object: the reclaimer
            report = other.reclaim()
        # The parent reaps it now; its release finds the holder gone.
        assert child.wait() == 3
        got = removals(led, "job")
        assert len(got) == 1 and got[0]["type"] == "reclaimed" and got[0]["reason"] == "zombie", got
        assert got[0].get("exit_code") == 3 and "exit_signal" not in got[0], got
        assert led.verify().ok
        assert [(r.name, r.reason, r.returncode) for r in report.reclaimed] == [("job", "zombie", 3)]
        assert report.reclaimed[0].why.endswith("; it exited with status 3"), report.reclaimed[0].why
    # It reads back as it was written (a new reader, from the log).
    with Ledger.open(where, readonly=True) as again:
        assert removals(again, "job")[0]["exit_code"] == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_spawned_child_killed_by_a_signal_and_reclaimed_in_the_way_keeps_the_signal(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    # The reclaim of a holder in a request's way (the hot path, as a waiter's)
    # records it too.
    where = location(request, tmp_path, backend)
    with Ledger.open(where) as led:
        child = spawn(led, "job", ["sh", "-c", "kill -KILL $$"], [W(tmp_path / "out")])
        exited_unreaped(child.pid)
        with Ledger.open(where) as other:
            other.register("next", [W(tmp_path / "out")])
        assert child.wait() == -signal.SIGKILL
        got = removals(led, "job")
        assert [(g["type"], g["reason"], g.get("exit_signal"), "exit_code" in g) for g in got] == [
            ("reclaimed", "zombie", 9, False)], got


def test_a_dry_run_reports_the_exit_status_and_records_nothing(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger") as led:
        child = spawn(led, "job", ["sh", "-c", "exit 0"], [W(tmp_path / "out")])
        try:
            exited_unreaped(child.pid)
            report = led.reclaim(dry_run=True)
            assert [(r.name, r.returncode, r.seq) for r in report.reclaimed] == [("job", 0, None)]
            decision = led.decide("next", [W(tmp_path / "out")])
            assert [(r.name, r.returncode) for r in decision.reclaimed] == [("job", 0)]
            assert removals(led, "job") == []
        finally:
            assert child.wait() == 0
        assert [g["type"] for g in removals(led, "job")] == ["released"]  # its parent's release


def test_a_live_or_reaped_holder_gets_no_exit_status(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger") as led:
        child = spawn(led, "job", ["sh", "-c", "read x; exit 3"], [W(tmp_path / "out")],
                      stdin=subprocess.PIPE)
        assert led.reclaim().reclaimed == ()  # alive: kept
        verdict = led.liveness()["job"]
        assert verdict.liveness is Liveness.ALIVE and verdict.returncode is None
        assert child.process.stdin is not None
        child.process.stdin.close()
        assert child.process.wait() == 3  # reaped here, without the release
        with Ledger.open(tmp_path / "ledger") as other:
            report = other.reclaim()
        got = removals(led, "job")
        assert len(got) == 1 and got[0]["reason"] == "process_gone", got
        assert "exit_code" not in got[0] and "exit_signal" not in got[0], got
        assert [(r.reason, r.returncode) for r in report.reclaimed] == [("process_gone", None)]


# -- the probe: only a zombie proven to be the holder's process, only a status shown ----------------


def test_a_reserved_holder_does_not_get_its_reservers_exit_status(tmp_path: Path) -> None:
    # A delegation reserved for a child not started yet is bound to the reserving process
    # until the child attaches: when that reserver exits 9 and is reclaimed as a zombie, the
    # reserver's own holder records its status, the reserved one none (it recorded the
    # reserver's 9 as "its process exited with status 9": a fresh tester's finding).
    where = str(tmp_path / "ledger")
    root = tmp_path / "tree"
    code = f"""
from scopeledger import Ledger, ScopeRule
led = Ledger.open({where!r})
led.delegate("runtime", "sup", [ScopeRule({str(root / "w")!r}, "write")])
led.delegate("sup", "worker", [ScopeRule({str(root / "w" / "x")!r}, "write")], reserved=True)
raise SystemExit(9)
"""
    with Ledger.open(where) as led:
        led.register("runtime", [W(root)])
        p = subprocess.Popen([sys.executable, "-c", code], cwd=str(tmp_path))
        try:
            exited_unreaped(p.pid)
            report = led.reclaim()
        finally:
            assert p.wait() == 9
        assert sorted((r.name, r.reason, r.returncode) for r in report.reclaimed) == \
            [("sup", "zombie", 9), ("worker", "zombie", None)]
        assert removals(led, "sup")[0]["exit_code"] == 9
        worker = removals(led, "worker")[0]
        assert worker["reason"] == "zombie" and "exit_code" not in worker and "exit_signal" not in worker, worker


@pytest.fixture
def zombie():
    """A child of this process that exited with status 3, not reaped."""
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    exited_unreaped(proc.pid)
    yield proc
    assert proc.wait() == 3


def test_the_probe_reads_a_zombies_status_only_when_its_start_proves_it_the_holders(zombie) -> None:
    ident = _process.identify(zombie.pid)
    assert ident.ticks is not None
    v = judge(ident)
    assert (v.liveness, v.returncode) == (Liveness.ZOMBIE, 3)
    # Its start not recorded: a zombie, whoever it is, but not proven the
    # holder's: nothing read.
    v = judge(attrs.evolve(ident, ticks=None))
    assert (v.liveness, v.returncode) == (Liveness.ZOMBIE, None)
    # Another start on the pid: not the holder's process at all (a later
    # process on its pid; readings that do not agree).
    v = judge(attrs.evolve(ident, ticks=ident.ticks - 1))
    assert (v.liveness, v.returncode) == (Liveness.PID_REUSED, None)
    assert judge(attrs.evolve(ident, ticks=ident.ticks + 1)).liveness is Liveness.UNKNOWN
    assert _process.zombie_status(zombie.pid, ident.ticks - 1) is None
    assert _process.zombie_status(zombie.pid, ident.ticks) == 3


LEADER_FIRST = """
import ctypes, os, sys, threading
def work():
    sys.stdin.readline()
    if sys.argv[1] == "exit":
        os._exit(3)
    os.kill(os.getpid(), 9)
threading.Thread(target=work).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)  # the main thread ends first, as a C, Go or Java program's may
"""


@pytest.mark.parametrize(("how", "want"), [("exit", 3), ("kill", -9)])
def test_a_process_whose_main_thread_ended_first_is_recorded_as_its_parent_learns_it(how, want) -> None:
    # /proc/PID/stat shows the main thread: once every thread is gone, its
    # exit_code must be what waitpid gives the parent for the whole process
    # (another thread's exit or fatal signal), or the probe would record a
    # status the process did not end with.
    proc = subprocess.Popen([sys.executable, "-c", LEADER_FIRST, how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        ident = _process.identify(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        exited_unreaped(proc.pid)  # (a thread group is reapable once its last thread is gone)
        v = judge(ident)
        assert (v.liveness, v.returncode) == (Liveness.ZOMBIE, want), v
    finally:
        proc.stdin.close()  # (on a failure before "go": its thread reads the end and the process ends)
        code = proc.wait()
    assert code == want


def test_a_reader_the_kernel_hides_the_status_from_records_none_not_zero(zombie) -> None:
    # The kernel shows another user's zombie's exit_code as 0 to a reader that
    # may not ptrace-read it: read as it is, that would be exit status 0.
    from torture_support import run_as_nobody

    ticks = _process.read_stat(zombie.pid)[1]
    assert ticks is not None
    ident = _process.identify(zombie.pid)

    def as_nobody() -> int:
        data = open(f"/proc/{zombie.pid}/stat", "rb").read()
        field_52 = data[data.rfind(b")") + 1:].split()[49]
        v = judge(ident)
        print(field_52.decode(), v.liveness.value, v.returncode, _process.zombie_status(zombie.pid, ticks))
        return 0

    code, out = run_as_nobody(as_nobody)
    assert code == 0, out
    assert out.split() == ["0", "zombie", "None", "None"], out


def _fake_stat(root: Path, pid: int, comm: str, state: str, ticks: int, exit_code: int | None,
               ns: bool = True) -> None:
    """A made-up ``/proc/PID`` (stat, and ``ns/pid`` unless not ``ns``);
    ``exit_code`` ``None``: a kernel before 3.5 (the field is not there)."""
    d = root / str(pid)
    (d / "ns").mkdir(parents=True, exist_ok=True)
    fields = [state, "1", str(pid), str(pid), "0", "-1", "4194560"] + ["0"] * 12 + [str(ticks)] + ["0"] * 29
    if exit_code is not None:
        fields.append(str(exit_code))
    assert len(fields) == (50 if exit_code is not None else 49)
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    link = d / "ns" / "pid"
    if link.is_symlink():
        link.unlink()
    if ns:
        os.symlink("pid:[4026531836]", link)


@pytest.mark.parametrize(("comm", "state", "raw", "ns", "want"), [
    ("sh", "Z", 3 << 8, True, 3),
    ("x) (y) Z 1 2 (", "Z", 3 << 8, True, 3),  # a command name with spaces and parentheses
    (") ) )", "Z", 0, True, 0),
    ("sh", "Z", 9, True, -9),                 # killed by SIGKILL
    ("sh", "Z", 6 | 0x80, True, -6),          # SIGABRT, a core dumped
    ("sh", "Z", 3 << 8, False, None),         # the kernel would not show it to us
    ("sh", "Z", None, True, None),            # before Linux 3.5: no exit_code field
    ("sh", "S", 3 << 8, True, None),          # not a zombie
    ("sh", "X", 3 << 8, True, None),          # being reaped: not read
    ("sh", "Z", 0x137f, True, None),          # a stop, not an end
])
def test_the_status_field_is_read_after_the_last_parenthesis(tmp_path, monkeypatch, comm, state, raw, ns,
                                                             want) -> None:
    fake = tmp_path / "proc"
    pid = 3_999_999  # no such process: only the made-up /proc knows it
    _fake_stat(fake, pid, comm, state, 123456, raw, ns)
    monkeypatch.setattr(_process, "PROC", str(fake))
    monkeypatch.setattr(_process, "_offset_cache", (os.getpid(), 0))
    assert _process.zombie_status(pid, 123456) == want
    assert _process.zombie_status(pid, 123457) is None  # another start: never read


def test_a_verdict_carries_a_status_only_as_a_zombies_and_in_range() -> None:
    assert Verdict(Liveness.ZOMBIE, "x", returncode=-9).returncode == -9
    for bad in (256, -128, True, 3.0):
        with pytest.raises(ValueError, match="returncode must be"):
            Verdict(Liveness.ZOMBIE, "x", returncode=bad)
    with pytest.raises(ValueError, match="a process_gone verdict has none"):
        Verdict(Liveness.GONE, "x", returncode=0)


def test_a_probe_that_gives_a_status_records_it_only_for_a_zombie(tmp_path: Path) -> None:
    # A custom probe's verdict is recorded as its reason says; a bad one is
    # the probe failing (unknown: kept), never a line no reader takes.
    with Ledger.open(tmp_path / "ledger") as led:
        led.register("z", [W(tmp_path / "z")])
        led.register("g", [W(tmp_path / "g")])

        def probe(ident):
            return Verdict(Liveness.ZOMBIE, "made up", returncode=-15)

        assert [(r.name, r.returncode) for r in led.reclaim(probe).reclaimed] == [("z", -15), ("g", -15)]
        assert [e.data.get("exit_signal") for e in led.events(types=["reclaimed"])] == [15, 15]

        led.register("u", [W(tmp_path / "u")])

        def bad(ident):
            return Verdict(Liveness.ZOMBIE, "made up", returncode=300)

        report = led.reclaim(bad)
        assert report.reclaimed == () and report.unknown[0][0] == "u"
        assert "ValueError" in report.unknown[0][1].why


# -- the format -------------------------------------------------------------------------------


def _reclaimed_line(**extra: object) -> bytes:
    ev = {"v": 2, "seq": 1, "ts": 1, "actor": {"host": None, "boot": None, "pid": 1, "ticks": None, "pidns": None},
          "prev": _events.GENESIS_HASH, "type": "reclaimed", "name": "job", "reason": "zombie",
          "reparented": [], "last_seen": 0, **extra}
    return orjson.dumps(ev)


@pytest.mark.parametrize("extra", [{"exit_code": 3}, {"exit_code": 0}, {"exit_code": 255},
                                   {"exit_signal": 9}, {"exit_signal": 127}, {}])
def test_a_zombies_reclaim_may_carry_how_it_ended(extra) -> None:
    ev = _events.decode(_reclaimed_line(**extra), "log", 1)
    _events.check_event(ev)
    assert {k: ev[k] for k in ("exit_code", "exit_signal") if k in ev} == extra


@pytest.mark.parametrize(("extra", "message"), [
    ({"exit_code": 3, "reason": "process_gone"}, "exit_code is 3, not absent from a reclaim for process_gone"),
    ({"exit_signal": 9, "reason": "lease_expired"}, "exit_signal is 9, not absent from a reclaim for lease_expired"),
    ({"exit_code": 3, "exit_signal": 9}, "exit_signal is 9, not absent when exit_code is given"),
    ({"exit_code": 256}, "exit_code is 256, not an integer from 0 to 255"),
    ({"exit_signal": 0}, "exit_signal is 0, not an integer from 1 to 127"),
    ({"exit_code": None}, "exit_code is None, not an integer"),
    ({"exit_code": "3"}, "exit_code is '3', not an integer from 0 to 255"),
])
def test_a_reclaims_exit_status_is_checked(extra, message) -> None:
    ev = _events.decode(_reclaimed_line(**extra), "log", 1)
    with pytest.raises(_events.FoldError) as info:
        _events.check_event(ev)
    assert str(info.value).startswith(message), str(info.value)


def test_a_v1_reclaim_has_no_exit_status() -> None:
    line = orjson.dumps({"v": 1, "seq": 1, "ts": 1, "actor": {"pid": 1, "start": None, "boot": "b"},
                         "prev": _events.GENESIS_HASH, "type": "reclaimed", "name": "job", "reason": "zombie",
                         "reparented": [], "exit_code": 3})
    with pytest.raises(CorruptLedger, match="unknown key 'exit_code' in a reclaimed event"):
        _events.decode(line, "log", 1)


def test_the_schema_takes_a_zombies_exit_status() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from scopeledger import _schema

    validator = jsonschema.Draft202012Validator(_schema.load())
    assert validator.is_valid(orjson.loads(_reclaimed_line(exit_code=3)))
    assert validator.is_valid(orjson.loads(_reclaimed_line(exit_signal=9)))
    assert not validator.is_valid(orjson.loads(_reclaimed_line(exit_code=256)))
    assert not validator.is_valid(orjson.loads(_reclaimed_line(exit_status=3)))


# -- the command line: ledger run's command reclaimed before the wrapper reaps it ------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_ledger_run_command_reclaimed_before_the_wrapper_reaps_it_keeps_its_exit_code(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    where = location(request, tmp_path, backend)
    with Ledger.open(where):
        pass
    env = clean_env()
    wrapper = subprocess.Popen([*CMD, "--ledger", where, "run", "--name", "job", "--write", str(tmp_path / "out"),
                                "--", "sh", "-c", "echo $$; read x; exit 3"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert wrapper.stdin is not None and wrapper.stdout is not None
    try:
        pid = int(wrapper.stdout.readline())  # COMMAND runs (past its gate), bound to the grant
        pidfd = os.pidfd_open(pid)  # (it is alive: this names it)
        try:
            # The wrapper stops (SIGSTOP) while COMMAND runs: it cannot reap it.
            os.kill(wrapper.pid, signal.SIGSTOP)
            info = os.waitid(os.P_PID, wrapper.pid, os.WSTOPPED | os.WNOWAIT)
            assert info is not None and info.si_code == os.CLD_STOPPED
            wrapper.stdin.write(b"\n")
            wrapper.stdin.close()
            wrapper.stdin = None  # (closed: communicate() below would flush it)
            assert select.select([pidfd], [], [], 120)[0], "COMMAND did not exit"
        finally:
            os.close(pidfd)
        assert state_of(pid) == "Z"
        r = subprocess.run([*CMD, "--ledger", where, "reclaim", "--json"], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        rows = orjson.loads(r.stdout)["reclaimed"]
        assert [(x["name"], x["reason"], x["pid"], x["exit_code"], x["exit_signal"]) for x in rows] == [
            ("job", "zombie", pid, 3, None)], rows
    finally:
        os.kill(wrapper.pid, signal.SIGCONT)
        out, err = wrapper.communicate(timeout=120)
    assert wrapper.returncode == 3, err
    assert b"warning" not in err, err  # a reclaim after COMMAND exited gets no word
    words = ledger_cmd(where, "replay", "--type", "reclaimed")
    assert words.returncode == 0, words.stderr
    assert "its process exited with status 3" in words.stdout, words.stdout
    history = ledger_cmd(where, "history", "job")
    assert "because zombie" in history.stdout and "its process exited with status 3" in history.stdout, history.stdout
    lines = [e for e in jl(ledger_cmd(where, "replay", "--json").stdout) if e["type"] in ("released", "reclaimed")]
    assert [(e["type"], e["name"], e.get("exit_code")) for e in lines] == [("reclaimed", "job", 3)], lines
    hist = [e for e in jl(ledger_cmd(where, "history", "job", "--json").stdout) if e["type"] == "reclaimed"]
    assert [e.get("exit_code") for e in hist] == [3], hist


def test_ledger_replay_words_for_a_signal_death_and_for_no_status(tmp_path: Path) -> None:
    led_dir = tmp_path / "ledger"
    with Ledger.open(led_dir) as led:
        killed = spawn(led, "killed", ["sh", "-c", "kill -KILL $$"], [W(tmp_path / "k")])
        exited_unreaped(killed.pid)
        with Ledger.open(led_dir) as other:
            other.reclaim()
        assert killed.wait() == -signal.SIGKILL
        quiet = spawn(led, "quiet", ["true"], [W(tmp_path / "q")])
        assert quiet.process.wait() == 0  # reaped without its release: gone, no status
        with Ledger.open(led_dir) as other:
            other.reclaim()
        with pytest.raises(UnknownHolder):
            led.release("quiet")
    words = ledger_cmd(led_dir, "replay", "--type", "reclaimed").stdout.splitlines()
    assert len(words) == 2, words
    assert "'killed' because zombie" in words[0] and "; its process was killed by SIGKILL;" in words[0], words
    assert "'quiet' because process gone" in words[1] and "its process" not in words[1], words


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
