"""A library program for tests/test_pg_quiet.py: it uses scopeledger on a
PostgreSQL ledger, has one of its connections cut at a chosen point (by
``pg_terminate_backend`` from a connection of its own, or by the test
restarting the server), and says on stdout, as one JSON line, what the
library answered. Its stderr is the test's evidence: it configures no
logging, so any record psycopg logs at WARNING reaches stderr through
Python's last-resort handler, as it would in any program that does not
configure logging. Not a test module.

    python pg_cut_client.py URL SCENARIO

The library's connections carry ``application_name`` ``$PGAPPNAME`` (the
test sets it), the cutter's another. A cut returns once the server has no
backend of the connection cut (a bound on that condition, not a measure).

Scenarios (each the point at which a library block meets a broken
connection):

- ``locked``: the main connection cut while idle; ``PgStore.locked`` (its
  lock asked in one pipeline) connects again once and takes the lock.
- ``locked-restart``: the same, the server restarted (``-m immediate``) by
  the test: the program prints ``{"restart": true}`` and waits for a line
  on stdin.
- ``append``: cut inside ``locked()``, after the lock was granted;
  ``append`` (its inserts and COMMIT in one pipeline) raises
  ``NotRecorded``.
- ``try_append``: the main connection cut while idle; ``try_append`` (one
  pipeline) answers ``False`` (resolved as not appended).
- ``follow``: a waiter's ticket connection cut; ``PgWatch.follow`` (its
  LISTEN/UNLISTEN in one pipeline) says to look (``True``), and the ticket
  is lost.
- ``read_back``: an append cut, then the read-back that resolves it (a
  transaction block) cut while it waits for the lock the cutter holds; it
  reads back again and raises ``NotRecorded``.
- ``ledger``: a ``Ledger`` (the public API): every connection cut between
  two grants, and between a grant and its release; both succeed.
- ``own-pipeline``: the program's own psycopg pipeline on a connection it
  cut: psycopg's warning is the program's to see (the library hides
  nothing of psycopg's that is not about its own blocks).
"""

from __future__ import annotations

import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import orjson  # noqa: E402
import psycopg  # noqa: E402

from scopeledger import Ledger, NotRecorded, ScopeRule  # noqa: E402
from scopeledger._pgstore import PgStore, parse_url  # noqa: E402

BOUND = 60.0  # seconds: how long a cut may take to show on the server before the program fails


def say(**what: object) -> None:
    sys.stdout.write(orjson.dumps(what).decode() + "\n")
    sys.stdout.flush()


class Cutter:
    """A connection of the program's own (not the library's) that ends the
    library's backends."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(parse_url(url).conninfo, autocommit=True, application_name="pgcut-cutter")

    def _end(self, pids: list[int]) -> None:
        """End backends ``pids``; return once each one's process has exited.

        Not once ``pg_stat_activity`` stops showing it: a backend leaves it
        before its process exits and closes its socket, and a client that
        sends in between meets the cut later (at the end of a pipeline, where
        psycopg raises instead of logging). Once the process is gone the
        socket holds the server's last message and its end, and the next
        statement meets them: the same point every run."""
        starts = {pid: _start(pid) for pid in pids}
        self.conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        deadline = time.monotonic() + BOUND
        while any(_start(pid) == start for pid, start in starts.items() if start is not None):
            if time.monotonic() > deadline:
                raise SystemExit(f"the cut backends {pids} did not exit within {BOUND:g}s")
            time.sleep(0.01)  # polling /proc for a condition, not a wait for time to pass

    def pid(self, pid: int) -> None:
        """End backend ``pid``; return once its process has exited."""
        self._end([pid])

    def library(self) -> None:
        """End every backend of the library's (``$PGAPPNAME``); return once they have exited."""
        rows = self.conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                 (os.environ["PGAPPNAME"],)).fetchall()
        self._end([int(r[0]) for r in rows])

    def waiting(self, app: str) -> int:
        """The pid of a backend of application ``app`` waiting for a lock, once there is one."""
        deadline = time.monotonic() + BOUND
        while True:
            row = self.conn.execute(
                "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.application_name = %s", (app,)).fetchone()
            if row:
                return int(row[0])
            if time.monotonic() > deadline:
                raise SystemExit(f"no backend of {app} waited for a lock within {BOUND:g}s")
            time.sleep(0.01)  # polling the server for a condition


def _start(pid: int) -> str | None:
    """Process ``pid``'s start time (``/proc/PID/stat`` field 22), ``None``
    when it has exited (gone or a zombie: its sockets are closed)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):  # (gone before the open, or between the open and the read)
        return None
    return None if fields[0] == b"Z" else fields[19].decode()


def line(seq: int) -> tuple[int, bytes]:
    ts = time.time_ns()
    return ts, orjson.dumps({"v": 2, "seq": seq, "ts": ts, "type": "test"})


def main() -> None:
    url, scenario = sys.argv[1], sys.argv[2]
    if scenario == "own-pipeline":
        cutter = Cutter(url)
        conn = psycopg.connect(parse_url(url).conninfo, autocommit=True)
        cutter.pid(conn.info.backend_pid)
        try:
            with conn.pipeline():
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            say(outcome=type(exc).__name__)
        return
    if scenario == "ledger":
        cutter = Cutter(url)
        led = Ledger.open(url)
        a = led.register("a", [ScopeRule("/srv/pgcut/a", "write")])
        cutter.library()
        b = led.register("b", [ScopeRule("/srv/pgcut/b", "write")])
        cutter.library()
        led.release("a", a.token)
        led.release("b", b.token)
        say(outcome="ok", holders=sorted(h.name for h in led.holders()))
        led.close()
        return
    st = PgStore.open(url, create=True)
    cutter = Cutter(url)
    if scenario in ("locked", "locked-restart"):
        if scenario == "locked":
            cutter.pid(st._backend[0])
        else:
            say(restart=True)
            sys.stdin.readline()
        with st.locked(0, 30) as missed:
            say(outcome="locked", missed=len(missed))
    elif scenario == "append":
        try:
            with st.locked(0, 30):
                cutter.pid(st._backend[0])
                st.append([line(1)], 1)
        except NotRecorded as exc:
            say(outcome="NotRecorded", seq=exc.first_seq, head=st.head())
    elif scenario == "try_append":
        st.head()  # the main connection open
        cutter.pid(st._backend[0])
        say(outcome=st.try_append([line(1)], 1), head=st.head())
    elif scenario == "follow":
        tickets = st.tickets()
        t = tickets.join(b'{"test": 1}')
        watch = tickets.watch(t)
        cutter.pid(t.conn.info.backend_pid)
        looked = watch.follow(False, t.number + 1000)
        say(outcome=looked, lost=tickets.lost(t))
        tickets.leave(t)
    elif scenario == "read_back":
        holder = psycopg.connect(parse_url(url).conninfo, autocommit=True, application_name="pgcut-holder")
        cuts: list[int] = []

        def cut_read_backs() -> None:
            # The first read-back waits for the lock the holder takes: it is cut there;
            # then the holder lets go, and the next read-back gets the lock.
            cuts.append(cutter.waiting(os.environ["PGAPPNAME"]))
            cutter.pid(cuts[-1])
            holder.execute("SELECT pg_advisory_unlock(%s, 0)", (st._key,))

        try:
            with st.locked(0, 30):
                backend = st._backend[0]

                def hold() -> None:
                    # Asked while the library holds the lock: granted once its backend is cut.
                    holder.execute("SELECT pg_advisory_lock(%s, 0)", (st._key,))
                taker = threading.Thread(target=hold)
                taker.start()
                cutter.waiting("pgcut-holder")  # the holder waits behind the library
                cutter.pid(backend)
                taker.join()
                cutting = threading.Thread(target=cut_read_backs)
                cutting.start()
                st.append([line(1)], 1)
        except NotRecorded as exc:
            cutting.join()
            say(outcome="NotRecorded", seq=exc.first_seq, head=st.head(), cuts=len(cuts))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    st.close()


if __name__ == "__main__":
    main()
