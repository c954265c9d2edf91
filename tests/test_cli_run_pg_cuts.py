"""``ledger run`` on PostgreSQL when connections are cut between its grant and COMMAND's
start (a fresh tester's findings, /tmp/newbie-repro pg_attach_break.py, chaos_pg.py), and
the pipes the wrapper writes to:

- COMMAND's process killed at its gate, or the ledger's client session lost while it waits
  there: one ``error:`` line and an exit code saying so (it was exit 1 and no word: the gate's
  write met a broken pipe), COMMAND never run, the grant released;
- the attach that binds the grant to COMMAND's process fails because the connection was cut
  and nothing was recorded (``NotRecorded``): tried again within the wait's deadline,
  recorded once, and never onto a newer grant of the name (it was exit 7 at once);
- psycopg's own log line (``error ignored terminating <psycopg.Pipeline [BAD]>``) never
  reaches ``run``'s stderr;
- a stderr whose reader is gone does not change ``run``'s exit status.

Real wrappers (the console script) against a throwaway cluster (tests/pgserver.py). A test
stops the wrapper at the moment it needs without sleeping: a trigger it adds to the
ledger's ``events`` table makes the wrapper's first insert of an ``attached`` line (or of its
``registered`` line) wait for an advisory lock the test holds; ``pg_locks`` shows when the
wrapper waits there (COMMAND's process forked and at its gate, the grant recorded); the test
cuts what it means to (``pg_terminate_backend``, a signal to the gated child) and lets go.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import pgserver
from helpers import CMD, W, clean_env, one_error_line
from pgserver import wait_for
from scopeledger import Ledger

#: The advisory lock (one bigint) the trigger makes the stalled insert wait for.
STALL_KEY = 7_310_042


@pytest.fixture
def url(pg_cluster):
    """A new ledger (made by ``ledger init``) in a fresh schema; dropped afterwards."""
    schema = pgserver.new_schema_name()
    url = pg_cluster.url(schema)
    made = subprocess.run([*CMD, "init", url], capture_output=True, text=True, env=clean_env(), timeout=120)
    assert made.returncode == 0, made.stderr
    yield url
    try:
        pg_cluster.psql_execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    except Exception:  # (a test that broke the server: nothing to tidy)
        pass


def schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


class Stall:
    """The trigger, and the lock it waits for, held by the test (its own connection) from
    :meth:`hold` until :meth:`let_go`. ``pattern``: SQL ``LIKE`` on the line; only the
    first matching insert waits (a sequence counts them: a sequence is not rolled back
    with the insert that took its number)."""

    def __init__(self, pg_cluster: Any, url: str, pattern: str) -> None:
        import psycopg

        self.cluster = pg_cluster
        s = schema_of(url)
        pg_cluster.psql_execute(f"""
CREATE SEQUENCE {s}.t_matched;
CREATE FUNCTION {s}.t_stall() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF convert_from(NEW.line, 'UTF8') LIKE '{pattern}' AND nextval('{s}.t_matched') = 1 THEN
    PERFORM pg_advisory_xact_lock({STALL_KEY});
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER t_stall BEFORE INSERT ON {s}.events FOR EACH ROW EXECUTE FUNCTION {s}.t_stall();""")
        self.conn = psycopg.connect(pg_cluster.conninfo(), autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (STALL_KEY,))

    def stalled(self, wrapper: subprocess.Popen[str]) -> int:
        """Once an insert waits in the trigger: the pid of its backend (the test fails
        if ``wrapper`` ends first)."""
        def waiting() -> int | None:
            assert wrapper.poll() is None, f"the wrapper ended first: exit {wrapper.returncode}"
            rows = self.cluster.psql_execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND objid = %s"
                " AND classid = 0 AND NOT granted", STALL_KEY)
            return rows[0][0] if rows else None
        return int(wait_for(waiting, "an insert waiting in the test's trigger", bound=120))

    def let_go(self) -> None:
        if not self.conn.closed:
            self.conn.close()  # (its session-level lock goes with it)


@pytest.fixture
def stalls():
    made: list[Stall] = []
    yield made
    for s in made:
        s.let_go()


def terminate(pg_cluster: Any, pid: int) -> None:
    """``pg_terminate_backend(pid)``, returning once the backend is gone."""
    pg_cluster.psql_execute("SELECT pg_terminate_backend(%s)", pid)
    wait_for(lambda: not pg_cluster.psql_execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid),
             f"backend {pid} gone", bound=120)


def ledger_key(pg_cluster: Any, url: str) -> int:
    """The ledger's advisory-lock key (the classid of its append and session locks): its
    schema's oid, as a signed 32-bit int."""
    oid = pg_cluster.psql_execute("SELECT oid FROM pg_namespace WHERE nspname = %s", schema_of(url))[0][0]
    return oid - (1 << 32) if oid >= 1 << 31 else oid


def events(url: str) -> list[tuple[str, str | None]]:
    with Ledger.open(url, readonly=True) as led:
        return [(e.type, e.data.get("name") or (e.data.get("holder") or {}).get("name")) for e in led.events()]


def start_run(url: str, tmp_path: Path, *args: str, name: str = "r") -> tuple[subprocess.Popen[str], Any, Path]:
    """``ledger --ledger URL run --name NAME ARGS -- touch RAN`` with stderr into a file
    (read while it runs): (the wrapper, its stderr file, RAN)."""
    ran = tmp_path / f"ran-{name}"
    err = open(tmp_path / f"stderr-{name}", "w+")  # noqa: SIM115 - closed by the test's end
    p = subprocess.Popen([*CMD, "--ledger", url, "run", "--name", name, *args,
                          "--write", str(tmp_path / "scope"), "--", "touch", str(ran)],
                         stdout=subprocess.DEVNULL, stderr=err, text=True, env=clean_env())
    return p, err, ran


def finish(p: subprocess.Popen[str], err: Any) -> str:
    p.wait(timeout=120)
    err.seek(0)
    text = err.read()
    err.close()
    assert "Traceback" not in text and "<psycopg." not in text and "error ignored" not in text, text
    return text


def process_state(pid: int) -> str:
    """``/proc/PID/stat``'s state letter."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def gated_child(wrapper_pid: int) -> int:
    """The wrapper's one child: COMMAND's process, at its gate."""
    with open(f"/proc/{wrapper_pid}/task/{wrapper_pid}/children") as f:
        (child,) = (int(x) for x in f.read().split())
    return child


# -- COMMAND's process at its gate -------------------------------------------------------------


def test_a_child_killed_at_its_gate_is_said_and_its_grant_released(pg_cluster, url, tmp_path, stalls) -> None:
    # The gate's write met a broken pipe: 'run' exited 1 and said nothing.
    stalls.append(stall := Stall(pg_cluster, url, '%"type":"attached"%'))
    p, err, ran = start_run(url, tmp_path, "-w", "60")
    stall.stalled(p)
    child = gated_child(p.pid)
    os.kill(child, signal.SIGKILL)
    # Dead (a zombie: the wrapper, in its attach, has not reaped it), its end of the gate
    # closed: else the wrapper's write could come first and COMMAND's exit be all it sees.
    wait_for(lambda: process_state(child) == "Z", "the gated child dead", bound=120)
    stall.let_go()
    text = finish(p, err)
    assert p.returncode == 128 + signal.SIGKILL, text
    assert one_error_line(text) == (f"error: the process that was to run COMMAND (pid {child}) was killed by "
                                    "SIGKILL before COMMAND started: COMMAND was not run")
    assert not ran.exists()
    assert events(url) == [("registered", "r"), ("attached", "r"), ("released", "r")]


def test_a_session_lost_while_command_waits_at_its_gate_keeps_it_from_running(
        pg_cluster, url, tmp_path, stalls) -> None:
    # The session's thread sent the gated child SIGTERM: the gate's write met a broken
    # pipe (exit 1, no word) or COMMAND's process died of it before exec (exit 143,
    # 'sending COMMAND SIGTERM' though COMMAND never ran).
    stalls.append(stall := Stall(pg_cluster, url, '%"type":"attached"%'))
    p, err, ran = start_run(url, tmp_path, "-w", "60")
    stall.stalled(p)  # (the attach recorded the session it was stamped with before waiting)
    key = ledger_key(pg_cluster, url)
    ((session_backend,),) = pg_cluster.psql_execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid <> 0 AND objsubid = 2"
        " AND granted", key)
    terminate(pg_cluster, session_backend)

    def said() -> bool:
        err.seek(0)
        return "was lost" in err.read()
    wait_for(said, "the wrapper's warning that its session was lost", bound=120)
    stall.let_go()
    text = finish(p, err)
    assert p.returncode == 7, text
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith("warning: client session "), text
    assert lines[1] == ("error: 'r' was not held for certain when COMMAND was to start (the ledger's client "
                        "session on the server that vouches for it was lost): COMMAND was not run"), text
    assert not ran.exists()
    assert events(url) == [("registered", "r"), ("attached", "r"), ("released", "r")]


# -- an attach cut off with nothing recorded ---------------------------------------------------------


@pytest.mark.parametrize("json_out", [False, True])
def test_an_attach_cut_off_unrecorded_is_tried_again_once(pg_cluster, url, tmp_path, stalls, json_out) -> None:
    # It exited 7 at once ('... seq 2 was not recorded; nothing was changed'), its -w
    # deadline far off. psycopg's 'error ignored terminating <psycopg.Pipeline [BAD]>'
    # does not reach stderr (finish() looks).
    stalls.append(stall := Stall(pg_cluster, url, '%"type":"attached"%'))
    p, err, ran = start_run(url, tmp_path, "-w", "60", *(["--json"] if json_out else []))
    terminate(pg_cluster, stall.stalled(p))  # the wrapper's connection, in its attach's insert
    stall.let_go()
    text = finish(p, err)
    assert p.returncode == 0, text
    assert ran.exists()
    assert events(url) == [("registered", "r"), ("attached", "r"), ("released", "r")]
    said = ("could not bind 'r' to COMMAND, which waits at its gate (the connection to "
            f"{url} broke during an append, and seq 2 was not recorded")
    if json_out:
        docs = [json.loads(line) for line in text.splitlines()]
        assert docs[0]["warning"].startswith(said), docs  # (a warning: {"warning": ...}, docs/cli.md)
        assert docs[1:] == [{"name": "r", "token": 1, "parent": None, "pid": docs[1]["pid"], "exit_code": 0,
                             "lost": None}], docs
    else:
        (line,) = text.splitlines()
        assert line.startswith("warning: " + said) and "trying again for up to" in line, text


def test_without_a_deadline_left_the_attach_is_not_tried_again(pg_cluster, url, tmp_path, stalls) -> None:
    # -n: no time to wait, for the scope or for the server: as before, exit 7.
    stalls.append(stall := Stall(pg_cluster, url, '%"type":"attached"%'))
    p, err, ran = start_run(url, tmp_path, "-n")
    terminate(pg_cluster, stall.stalled(p))
    stall.let_go()
    text = finish(p, err)
    assert p.returncode == 7, text
    assert one_error_line(text) == (f"error: the connection to {url} broke during an append, and seq 2 was "
                                    "not recorded; nothing was changed: take the lock and decide again")
    assert not ran.exists()
    assert events(url) == [("registered", "r"), ("released", "r")]


@pytest.mark.parametrize("then", ["server-back", "sigterm"])
def test_an_attach_that_cannot_reach_the_server_is_tried_again_until_a_signal_ends_run(
        pg_cluster, tmp_path, stalls, then) -> None:
    # The wrapper's connection is cut while its attach waits for the append lock, and the
    # server refuses its new connections (its role's CONNECTION LIMIT 0: 'too many
    # connections for role'): nothing was sent, so the attach is tried again, pausing,
    # until the server takes connections again; a signal meanwhile ends run.
    role = "run_" + os.urandom(5).hex()
    pg_cluster.psql_execute(f"CREATE ROLE {role} LOGIN")
    pg_cluster.psql_execute(f"GRANT CREATE ON DATABASE postgres TO {role}")
    schema = pgserver.new_schema_name()
    url = pg_cluster.url(schema, user=role)
    assert subprocess.run([*CMD, "init", url], capture_output=True, env=clean_env(), timeout=120).returncode == 0
    key = ledger_key(pg_cluster, url)
    stalls.append(stall := Stall(pg_cluster, url, '%"type":"registered"%"name":"r"%'))
    p, err, ran = start_run(url, tmp_path, "-w", "60")
    stall.stalled(p)  # its grant's insert, the append lock held
    import psycopg

    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as lock:
        took = threading.Thread(target=lock.execute, args=("SELECT pg_advisory_lock(%s, 0)", (key,)))
        took.start()
        wait_for(lambda: pg_cluster.psql_execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = 0 AND objsubid = 2"
            " AND NOT granted", key), "the test queued for the append lock", bound=120)
        stall.let_go()  # the grant commits; the test takes the lock, then the attach waits for it
        took.join(timeout=120)

        def attach_waits() -> int | None:
            rows = pg_cluster.psql_execute(
                "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
                " AND l.classid = %s AND l.objid = 0 AND l.objsubid = 2 AND NOT l.granted AND a.usename = %s",
                key, role)
            return rows[0][0] if rows else None
        backend = wait_for(attach_waits, "the wrapper's attach waiting for the append lock", bound=120)
        pg_cluster.psql_execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")
        try:
            terminate(pg_cluster, backend)

            def trying() -> bool:
                err.seek(0)
                text = err.read()
                assert p.poll() is None, f"the wrapper ended: exit {p.returncode}: {text}"
                return "trying again" in text
            wait_for(trying, "the wrapper trying the attach again", bound=120)
            if then == "sigterm":
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=120)
        finally:
            pg_cluster.psql_execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
            lock.execute("SELECT pg_advisory_unlock(%s, 0)", (key,))
    text = finish(p, err)
    lines = text.splitlines()
    # (the first try's failure: the cut, or the server refusing to connect again)
    assert lines[0].startswith("warning: could not bind 'r' to COMMAND, which waits at its gate ("), text
    if then == "server-back":
        assert p.returncode == 0 and len(lines) == 1, text
        assert ran.exists()
        assert events(url) == [("registered", "r"), ("attached", "r"), ("released", "r")]
    else:
        assert p.returncode == 128 + signal.SIGTERM, text
        assert not ran.exists()
        # (the release could not reach the server either: said; bound to the ended wrapper, reclaimable)
        assert lines[1:] == [] or lines[1].startswith("warning: could not release 'r': "), text
        assert [e for e in events(url) if e[0] == "attached"] == []
    pg_cluster.psql_execute(f"DROP SCHEMA {schema} CASCADE")


def test_an_attach_tried_again_never_binds_a_newer_grant_of_the_name(pg_cluster, url, tmp_path, stalls) -> None:
    # Between the cut attach and its second try, another process takes the name back and
    # registers it again: the second try carries the first grant's token, and refuses.
    stalls.append(stall := Stall(pg_cluster, url, '%"type":"attached"%'))
    p, err, ran = start_run(url, tmp_path, "-w", "60")
    wrapper_backend = stall.stalled(p)  # holding the ledger's append lock, in the trigger
    key = ledger_key(pg_cluster, url)
    other = Ledger.open(url)
    try:
        # The test's ledger queues for the append lock (session level, on the connection
        # its changes use: theirs then take it again, as the same session may): it gets
        # it when the wrapper's connection is cut, before the wrapper's read-back.
        conn = other._log._connection()
        took = threading.Thread(target=conn.execute, args=("SELECT pg_advisory_lock(%s, 0)", (key,)))
        took.start()
        wait_for(lambda: pg_cluster.psql_execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = 0 AND objsubid = 2"
            " AND NOT granted", key), "the test's ledger queued for the append lock", bound=120)
        terminate(pg_cluster, wrapper_backend)
        took.join(timeout=120)
        assert not took.is_alive()
        other.release("r", force=True, reason="taken back by the test")
        newer = other.register("r", [W(tmp_path / "scope")])
        conn.execute("SELECT pg_advisory_unlock(%s, 0)", (key,))
        stall.let_go()
        text = finish(p, err)
        assert p.returncode == 6, text
        last = text.splitlines()[-1]
        assert last == f"error: holder 'r' is live with another grant (token {newer.token}, not 1)", text
        assert "was no longer held before its command started: force-released" in text
        assert not ran.exists()
        assert events(url) == [("registered", "r"), ("released", "r"), ("registered", "r")]
        held = other.holder("r")
        assert (held.token, held.pid) == (newer.token, os.getpid())
    finally:
        other.close()


# -- the server gone while COMMAND runs -----------------------------------------------------------


@pytest.mark.parametrize("json_out", [False, True])
def test_the_watch_s_notices_while_the_server_is_down_say_what_they_are(pg_cluster, url, tmp_path,
                                                                      json_out) -> None:
    # The watch of the grant cannot read the log while the server is down and says so
    # until it is back: those lines had no prefix ('could not read the log of URL to watch
    # grant 'r' (trying again): ...'), unlike every other line of run's stderr (a fresh
    # tester's finding 9); with --json they were {"notice": ...} documents, as they stay.
    # COMMAND starts, then waits until the test writes to a FIFO.
    started, go = tmp_path / "started", tmp_path / "go"
    os.mkfifo(go)
    err = open(tmp_path / "stderr", "w+")  # noqa: SIM115 - closed by finish()
    p = subprocess.Popen([*CMD, "--ledger", url, "run", "--name", "r", *(["--json"] if json_out else []),
                          "--write", str(tmp_path / "scope"), "--",
                          "sh", "-c", 'touch "$0"; read x < "$1"', str(started), str(go)],
                         stdout=subprocess.DEVNULL, stderr=err, text=True, env=clean_env())

    def said() -> str:
        err.seek(0)
        return err.read()
    try:
        wait_for(lambda: started.exists() or p.poll() is not None, "COMMAND started", bound=120)
        assert p.poll() is None, said()
        pg_cluster.stop_server()
        try:
            wait_for(lambda: "trying again every" in said(), "the watch saying it cannot read the log", bound=120)
        finally:
            pg_cluster.start_server()
        with open(go, "w") as fifo:
            fifo.write("\n")
    except BaseException:
        try:  # (COMMAND let go, if it waits on the FIFO)
            os.close(os.open(go, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        p.kill()
        raise
    text = finish(p, err)
    assert p.returncode == 0, text
    lines = text.splitlines()
    # (the watch, started once COMMAND has run a moment, says either, as it was reading the
    # log past the grant or the grant's own line when the server went)
    watch = re.compile(rf"could not read the log of {re.escape(url)} to watch grant 'r' \(token 1\); trying "
                       r"again every 0\.5 s until it can: ")
    if json_out:
        docs = [json.loads(line) for line in lines]
        assert all(len(doc) == 1 and set(doc) <= {"notice", "warning"} for doc in docs[:-1]), docs
        assert any(watch.match(doc.get("notice", "")) for doc in docs), docs
        assert docs[-1]["exit_code"] == 0, docs
    else:
        assert all(line.startswith(("note: ", "warning: ")) for line in lines), text
        assert any(line.startswith("note: ") and watch.match(line[6:]) for line in lines), text
    assert events(url) == [("registered", "r"), ("attached", "r"), ("released", "r")]


# -- psycopg's own log lines ---------------------------------------------------------------------


def test_psycopg_s_log_line_never_reaches_run_s_stderr(pg_cluster, url, tmp_path, stalls) -> None:
    # A waiting 'run' whose connection to the waiters' queue was cut while its grant was
    # being recorded: leaving the queue, psycopg logged 'error ignored terminating
    # <psycopg.Pipeline [BAD] at 0x...>: the connection is lost' (Python's last-resort
    # handler printed it), though the run went on fine.
    with Ledger.open(url) as blocker:
        b = blocker.register("blocker", [W(tmp_path / "scope")])
        stalls.append(stall := Stall(pg_cluster, url, '%"type":"registered"%"name":"r"%'))
        p, err, ran = start_run(url, tmp_path, "-w", "60")

        def waits() -> bool:
            err.seek(0)
            return "Blocking waiting" in err.read()
        wait_for(waits, "the wrapper waiting in the queue", bound=120)
        blocker.release("blocker", b.token)
        stall.stalled(p)
        ((ticket_backend,),) = pg_cluster.psql_execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
            " AND NOT (classid = 0 AND objid = %s)", STALL_KEY)
        terminate(pg_cluster, ticket_backend)
        stall.let_go()
        text = finish(p, err)
    assert p.returncode == 0, text
    assert ran.exists()
    (line,) = text.splitlines()
    assert line.startswith("Blocking waiting for the scope: "), text


# -- stderr's reader gone ------------------------------------------------------------------------


def test_a_stderr_nobody_reads_does_not_change_run_s_exit_status(tmp_path) -> None:
    # 'run --json' writes its result on stderr: a broken pipe there ended it with exit 1
    # (taken for 'ledger show | head'), not COMMAND's status.
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([*CMD, "--ledger", str(tmp_path / "led"), "run", "--json", "--name", "x",
                            "--write", str(tmp_path / "scope"), "--", "sh", "-c", "exit 3"],
                           stdout=subprocess.DEVNULL, stderr=w, env=clean_env(), timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 3
    with Ledger.open(str(tmp_path / "led"), readonly=True) as led:
        assert [e.type for e in led.events()] == ["registered", "attached", "released"]
