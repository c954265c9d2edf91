"""``ledger run`` when its grant is taken away while COMMAND runs: one policy for every way
(a forced release by an operator, a lapsed lease reclaimed, on a directory and on
PostgreSQL): the wrapper learns it from the log's change notification, says at once on
stderr why (who, and the reason of a forced release), and with ``--on-lost term`` (the
default) sends COMMAND SIGTERM and exits 6 once it ends, whatever COMMAND's own status; with
``--on-lost warn`` COMMAND runs on and its exit status is ``run``'s.

Real wrappers (the console script). COMMAND is a Python process that says ``running``, then
waits on its stdin (a pipe the test holds) for ever: it says ``got SIGTERM`` and exits 0 on
SIGTERM (so that ``run``'s exit 6 is not COMMAND's), and exits 5 once the test writes a line.
Every wait is on a condition with a generous bound; the order "warning, then COMMAND's end"
is proved by COMMAND ending only when the test, having seen the warning, lets it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import CMD, clean_env, lines_of, wait_for
from scopeledger import Ledger, ScopeRule

BOUND = 120.0

CHILD = """
import signal, sys
def term(signum, frame):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("running", flush=True)
sys.stdin.readline()
print("bye", flush=True)
sys.exit(5)
"""


class Run:
    """``ledger --ledger WHERE run --name job --write TREE ARGS -- python -c CHILD``, its
    stdout and stderr read line by line as they come."""

    def __init__(self, where: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                 cmd: list[str] = CMD) -> None:
        (tmp_path / "tree").mkdir(exist_ok=True)
        self.p = subprocess.Popen([*cmd, "--ledger", where, "run", "--name", "job", "--write",
                                   str(tmp_path / "tree"), *args, "--", sys.executable, "-c", CHILD],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env or clean_env())
        self.out = lines_of(self.p.stdout)
        self.err_q = lines_of(self.p.stderr)
        self.said: list[str] = []
        assert self.line() == "running\n", self.said

    def line(self) -> str | None:
        """COMMAND's next line of stdout (``None``: its end), failing after the bound."""
        try:
            return self.out.get(timeout=BOUND)
        except queue.Empty:
            raise AssertionError(f"no line from COMMAND within {BOUND}s; run said {self.said}") from None

    def warning(self) -> str:
        """The wrapper's next stderr line (a loss's warning), failing after the bound."""
        try:
            line = self.err_q.get(timeout=BOUND)
        except queue.Empty:
            raise AssertionError(f"no word from the wrapper within {BOUND}s; it said {self.said}") from None
        assert line is not None, ("the wrapper's stderr ended", self.said)
        self.said.append(line)
        return line

    def finish(self) -> tuple[int, str]:
        code = self.p.wait(BOUND)
        while (line := self.err_q.get(timeout=BOUND)) is not None:
            self.said.append(line)
        return code, "".join(self.said)

    def child_pid(self) -> int:
        """COMMAND's pid: the wrapper's one child."""
        with open(f"/proc/{self.p.pid}/task/{self.p.pid}/children") as f:
            (pid,) = (int(x) for x in f.read().split())
        return pid

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.kill()
            self.p.wait()


@pytest.fixture(params=["dir", "pg"])
def where(request: Any, tmp_path: Path) -> str:
    if request.param == "dir":
        where = str(tmp_path / "led")
    else:
        where = str(request.getfixturevalue("pg_url"))
    made = subprocess.run([*CMD, "init", where], capture_output=True, text=True, env=clean_env(), timeout=BOUND)
    assert made.returncode == 0, made.stderr
    return where


def force_release(where: str) -> int:
    """``ledger release job --force --reason ...`` in a process of its own; its pid."""
    p = subprocess.Popen([*CMD, "--ledger", where, "release", "job", "--force", "--reason", "disk needed elsewhere"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    out, err = p.communicate(timeout=BOUND)
    assert p.returncode == 0, err
    return p.pid


def test_a_forced_release_stops_command_with_sigterm_by_default(where: str, tmp_path: Path) -> None:
    r = Run(where, tmp_path)
    try:
        by = force_release(where)
        assert r.line() == "got SIGTERM\n", r.said
        code, err = r.finish()
        assert code == 6, err  # (COMMAND itself exited 0 after its SIGTERM)
        assert (f"warning: 'job' lost its scope while COMMAND runs: force-released at seq 3 by pid {by}, "
                "reason: disk needed elsewhere; sending COMMAND SIGTERM") in err, err
        assert ("error: 'job' lost its scope while COMMAND ran (force-released at seq 3 by pid "
                f"{by}, reason: disk needed elsewhere): COMMAND was sent SIGTERM and exited with status 0") in err, err
        assert "was no longer held" not in err and "Traceback" not in err, err  # (said once)
        with Ledger.open(where, readonly=True) as led:
            assert [e.type for e in led.events()] == ["registered", "attached", "released"]  # (seq 3: the forced one)
    finally:
        r.kill()


def test_a_forced_release_is_said_at_once_and_command_runs_on_with_warn(where: str, tmp_path: Path) -> None:
    r = Run(where, tmp_path, "--on-lost", "warn")
    try:
        by = force_release(where)
        said = r.warning()  # before COMMAND ends: it ends only once the test writes a line
        assert said == (f"warning: 'job' lost its scope while COMMAND runs: force-released at seq 3 by pid {by}, "
                        "reason: disk needed elsewhere; COMMAND runs on without it (--on-lost warn)\n"), said
        assert r.p.poll() is None
        r.p.stdin.write("go\n")  # type: ignore[union-attr]
        r.p.stdin.flush()  # type: ignore[union-attr]
        assert r.line() == "bye\n"
        code, err = r.finish()
        assert code == 5, err  # COMMAND's own
        assert err.count("warning") == 1 and "error" not in err, err
    finally:
        r.kill()


def lapse_lease(where: str, r: Run) -> None:
    """Make the wrapper's lease lapse and have it reclaimed (``lease_expired``) while
    COMMAND runs. In a directory: a checker whose boot-time clock reads 1000 s later judges
    it (the wrapper, renewing every 10 s, renews nothing meanwhile, so only the log can tell
    it). On PostgreSQL (leases on the server's clock): the wrapper stopped (SIGSTOP) until a
    reclaim succeeds, then continued."""
    if not where.startswith("postgresql:"):
        from scopeledger._process import boottime_ns

        with Ledger.open(where, boottime=lambda: boottime_ns() + 1000 * 10**9) as led:
            (gone,) = led.reclaim().reclaimed
            assert gone.name == "job" and gone.reason == "lease_expired", gone
        return
    os.kill(r.p.pid, signal.SIGSTOP)
    try:
        with Ledger.open(where) as led:
            def reclaimed() -> bool:
                return bool(led.reclaim().reclaimed)
            wait_for(reclaimed, BOUND, "the lease reclaimed")
    finally:
        os.kill(r.p.pid, signal.SIGCONT)


@pytest.mark.parametrize("mode", ["term", "warn"])
def test_a_lapsed_lease_reclaimed_is_said_at_once_and_acted_on(where: str, tmp_path: Path, mode: str) -> None:
    ttl = "0.3" if where.startswith("postgresql:") else "30"
    r = Run(where, tmp_path, "--ttl", ttl, *(["--on-lost", "warn"] if mode == "warn" else []))  # (term: the default)
    try:
        lapse_lease(where, r)
        if mode == "term":
            assert r.line() == "got SIGTERM\n", r.said
            code, err = r.finish()
            assert code == 6, err
            assert "warning: 'job' lost its scope while COMMAND runs: " in err and "lease" in err, err
            assert "; sending COMMAND SIGTERM" in err and "COMMAND was sent SIGTERM" in err, err
        else:
            said = r.warning()
            assert said.startswith("warning: 'job' lost its scope while COMMAND runs: ") and "lease" in said, said
            assert said.endswith("; COMMAND runs on without it (--on-lost warn)\n"), said
            assert r.p.poll() is None
            r.p.stdin.write("go\n")  # type: ignore[union-attr]
            r.p.stdin.flush()  # type: ignore[union-attr]
            assert r.line() == "bye\n"
            code, err = r.finish()
            assert code == 5, err
            assert err.count("warning") == 1, err
        assert "Traceback" not in err, err
    finally:
        r.kill()


def test_run_documents_on_lost() -> None:
    r = subprocess.run([*CMD, "run", "--help"], capture_output=True, text=True, env=clean_env(), timeout=BOUND)
    assert "--on-lost [term|warn]" in r.stdout and "SIGTERM" in r.stdout and "exits 6" in r.stdout, r.stdout
    r = subprocess.run([*CMD, "--ledger", "/nonexistent", "run", "--on-lost", "kill", "--write", "/x", "--", "true"],
                       capture_output=True, text=True, env=clean_env(), timeout=BOUND)
    assert r.returncode == 2 and "'--on-lost'" in r.stderr and "Traceback" not in r.stderr, r.stderr


def _cut_first_grant_after_pre(where: str) -> None:
    """The grant after the 'pre' run's release (A's, seq 4) damaged in place (one byte made
    invalid UTF-8) and cut by a real 'ledger repair'."""
    log = Path(where) / "events.jsonl"
    data = log.read_bytes()
    start = data.index(b'"registered"', data.index(b'"released"'))
    start = data.rindex(b"\n", 0, start) + 1
    with open(log, "r+b") as f:
        f.seek(start + 3)
        f.write(bytes([data[start + 3] ^ 0x80]))
    cut = subprocess.run([*CMD, "--ledger", where, "repair"], capture_output=True, text=True,
                         env=clean_env(), timeout=BOUND)
    assert cut.returncode == 0, cut.stderr


def test_a_wrapper_whose_grant_was_cut_never_releases_the_grant_that_took_its_token(tmp_path: Path) -> None:
    # A's grant line damaged and cut by 'ledger repair'; B then granted the same name. Before,
    # B took the same token (tokens are seqs, and the cut seqs were given again), and when A's
    # COMMAND ended, A released (name, token): B's grant (B's COMMAND was sent SIGTERM and B
    # exited 6; a fresh tester's finding). A wrapper told its grant is gone asks no release,
    # and the repair now keeps the cut seqs void, so B's token is a new one.
    where = str(tmp_path / "led")
    pre = subprocess.run([*CMD, "--ledger", where, "run", "--name", "pre", "--write", str(tmp_path / "pre"),
                          "--", "true"], capture_output=True, text=True, env=clean_env(), timeout=BOUND)
    assert pre.returncode == 0, pre.stderr
    a = Run(where, tmp_path, "--on-lost", "warn")
    b = None
    try:
        _cut_first_grant_after_pre(where)
        said = a.warning()
        assert "its grant (token 4) is no longer in the log" in said and "COMMAND runs on" in said, said
        (tmp_path / "b").mkdir()
        b = Run(where, tmp_path / "b", "--on-lost", "term")
        with Ledger.open(where, readonly=True) as led:
            assert led.holder("job").token == 6  # not A's old token: seq 4 is the repair's, 5 void
        a.p.stdin.write("go\n")  # type: ignore[union-attr]
        a.p.stdin.flush()  # type: ignore[union-attr]
        assert a.line() == "bye\n"
        code, err = a.finish()
        assert code == 5, err
        with Ledger.open(where, readonly=True) as led:
            held = led.holder("job")
            assert held.token == 6 and held.pid == b.child_pid(), held
            assert [(e.seq, e.type) for e in led.events() if e.seq > 3] == [
                (4, "repaired"), (5, "void"), (6, "registered"), (7, "attached")]
        b.p.stdin.write("go\n")  # type: ignore[union-attr]
        b.p.stdin.flush()  # type: ignore[union-attr]
        assert b.line() == "bye\n"
        code, err = b.finish()
        assert code == 5 and "lost its scope" not in err, err
    finally:
        a.kill()
        if b is not None:
            b.kill()


def watch_asleep(pid: int) -> bool:
    """Whether a thread of wrapper ``pid`` other than its main one is asleep in
    ``poll``: its grant's watch (the only other thread without ``--ttl``), which sleeps
    only after a look at the log."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        if int(tid) == pid:
            continue
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                wchan = f.read()
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                call = f.read().split()[0]
        except OSError:
            continue  # (a thread that ended meanwhile)
        if "poll" in wchan or call in {"7", "271"} and os.uname().machine == "x86_64" \
                or call == "73" and os.uname().machine == "aarch64":  # (poll, ppoll)
            return True
    return False


def test_a_wrapper_stopped_while_its_grant_is_cut_and_the_log_regrown_learns_it_when_continued(
        tmp_path: Path) -> None:
    # A's watch had read the log to its end (seq 5: A's grant and attach). A stopped, its
    # grant line damaged and cut by 'ledger repair' (2 lines), B's run appended 2 lines of
    # its own for the same name and scope: the log ended at seq 5 again (at the same size,
    # too). Continued, A's watch read past seq 5, found nothing and never noticed: A and B
    # held the same write scope while both COMMANDs ran (a fresh tester's finding). The
    # repair now keeps the cut seqs 4 and 5 with lines of its own, so the log is back at
    # seq 5 before B runs (B's grant takes seq 6); the library's test of the same-size case
    # is tests/test_grant_watch.py's.
    where = str(tmp_path / "led")
    pre = subprocess.run([*CMD, "--ledger", where, "run", "--name", "pre", "--write", str(tmp_path / "pre"),
                          "--", "true"], capture_output=True, text=True, env=clean_env(), timeout=BOUND)
    assert pre.returncode == 0, pre.stderr
    a = Run(where, tmp_path)  # (--on-lost term, the default)
    b = None
    try:
        wait_for(lambda: watch_asleep(a.p.pid), BOUND, "A's watch asleep after a look")
        os.kill(a.p.pid, signal.SIGSTOP)
        try:
            _cut_first_grant_after_pre(where)
            with Ledger.open(where, readonly=True) as led:
                assert led.seq == 5  # the log back at A's last seq: the repair's own lines
                assert [e.type for e in led.events()][3:] == ["repaired", "void"]
            b = Run(where, tmp_path)  # (the same tree: its grant is A's scope)
            with Ledger.open(where, readonly=True) as led:
                held = led.holder("job")
                assert (held.token, led.seq) == (6, 7)
        finally:
            os.kill(a.p.pid, signal.SIGCONT)
        assert a.line() == "got SIGTERM\n", a.said
        code, err = a.finish()
        assert code == 6, err
        assert "its grant (token 4) is no longer in the log" in err and "Traceback" not in err, err
        with Ledger.open(where, readonly=True) as led:
            assert led.holder("job").pid == b.child_pid()  # (A released nothing of B's)
        b.p.stdin.write("go\n")  # type: ignore[union-attr]
        b.p.stdin.flush()  # type: ignore[union-attr]
        assert b.line() == "bye\n"
        code, err = b.finish()
        assert code == 5 and "lost its scope" not in err, err
    finally:
        a.kill()
        if b is not None:
            b.kill()


#: ``ledger`` whose ``run`` never starts the watch of its grant while COMMAND runs (it waits
#: WATCH_AFTER for COMMAND to end first: an hour), so that a loss is learnt only at the
#: release, as it is when COMMAND ends within WATCH_AFTER (50 ms), without a race.
NO_WATCH = [sys.executable, "-c", "import scopeledger.cli.run as r; r.WATCH_AFTER = 3600.0; "
            "from scopeledger.cli import main; main()"]


@pytest.mark.parametrize("mode", ["term", "warn"])
def test_a_loss_learnt_at_the_release_is_a_json_warning_and_the_lost_of_the_document(tmp_path: Path,
                                                                                     mode: str) -> None:
    # It was {"notice": "warning: 'job' was no longer held when its command ended: ..."}
    # (docs/cli.md: warnings are {"warning": ...}), and the last document said "lost": null
    # although the scope was taken away while COMMAND ran (a fresh tester's finding 5).
    where = str(tmp_path / "led")
    r = Run(where, tmp_path, "--json", "--on-lost", mode, cmd=NO_WATCH)
    try:
        by = force_release(where)
        r.p.stdin.write("end\n")  # COMMAND ends (exit 5) once the release is in the log
        r.p.stdin.flush()
        assert r.line() == "bye\n", r.said
        code, err = r.finish()
        assert code == 5, err  # (COMMAND's own: it was not stopped, it had ended)
        docs = [json.loads(line) for line in err.splitlines()]
        why = f"force-released at seq 3 by pid {by}, reason: disk needed elsewhere"
        assert docs[0] == {"warning": f"'job' was no longer held when its command ended: {why}"}, docs
        assert docs[1]["exit_code"] == 5 and docs[1]["lost"] == why and len(docs) == 2, docs
    finally:
        r.kill()


def test_a_loss_learnt_at_the_release_is_said_as_a_warning_in_text_too(tmp_path: Path) -> None:
    where = str(tmp_path / "led")
    r = Run(where, tmp_path, cmd=NO_WATCH)
    try:
        by = force_release(where)
        r.p.stdin.write("end\n")
        r.p.stdin.flush()
        assert r.line() == "bye\n", r.said
        code, err = r.finish()
        assert code == 5, err
        assert err == (f"warning: 'job' was no longer held when its command ended: force-released at seq 3 "
                       f"by pid {by}, reason: disk needed elsewhere\n"), err
    finally:
        r.kill()


def test_a_lapsed_lease_learnt_by_the_renewal_is_said_in_the_log_s_words(tmp_path: Path) -> None:
    # The renewal that found the grant gone said "its lease is lost: no live holder named
    # 'job'", the watch "reclaimed at seq N by pid P: its lease expired": which one depended on
    # which learnt first (a fresh tester's finding 6). Here only the renewal can learn it (the
    # watch never starts: NO_WATCH), renewing every 0.1 s.
    where = str(tmp_path / "led")
    r = Run(where, tmp_path, "--ttl", "0.3", "--on-lost", "warn", cmd=NO_WATCH)
    try:
        lapse_lease(where, r)
        said = r.warning()
        assert re.fullmatch(rf"warning: 'job' lost its scope while COMMAND runs: reclaimed at seq \d+ by pid "
                            rf"{os.getpid()}: its lease expired; COMMAND runs on without it \(--on-lost warn\)\n",
                            said), said
        r.p.stdin.write("go\n")  # type: ignore[union-attr]
        r.p.stdin.flush()  # type: ignore[union-attr]
        assert r.line() == "bye\n"
        code, err = r.finish()
        assert code == 5 and err.count("warning") == 1, err
    finally:
        r.kill()


@pytest.mark.parametrize("learnt_by", ["watch", "renewal"])
def test_a_loss_learnt_as_command_ended_is_said_at_the_release(tmp_path: Path, capsys: Any,
                                                               learnt_by: str) -> None:
    """``_Runner``: the watch (or a renewal) learnt the loss just as COMMAND ended (too late
    to act on it: nothing said then), and marked the grant gone, so the release did not look
    either: the loss was never said (a race, wider once a renewal looked the reclaim up in
    the log; tests/test_cli_lease.py met it). The release says it now, as one it found."""
    from types import SimpleNamespace

    from scopeledger import UnknownHolder
    from scopeledger.cli.run import _Runner

    with Ledger.open(tmp_path / "led") as led, Ledger.open(tmp_path / "led") as operator:
        alloc = led.register("job", [ScopeRule(str(tmp_path / "tree"), "write")])
        runner = _Runner(SimpleNamespace(json=True), led, "job", [], None, ["true"], False)  # type: ignore[arg-type]
        runner.alloc, runner.child, runner.started = alloc, os.getpid(), True
        operator.release("job", force=True, reason="disk needed elsewhere")
        runner.stop_watching()  # COMMAND has ended: nothing is acted on from here
        if learnt_by == "watch":
            (event,) = led.events(types=["released"])
            runner.grant_ended(event)
        else:
            runner.lease_lost(UnknownHolder("job"))
        assert capsys.readouterr().err == ""  # (too late to act on: said at the release)
        runner.release()
        why = f"force-released at seq 2 by pid {os.getpid()}, reason: disk needed elsewhere"
        assert json.loads(capsys.readouterr().err) == {
            "warning": f"'job' was no longer held when its command ended: {why}"}
        assert runner.lost_why == why and not runner.stopped_for_loss
