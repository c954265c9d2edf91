"""Liveness across hosts at the ``Ledger`` level, on a real PostgreSQL server
(issue 15, "Liveness across hosts"; ``scopeledger/_sessions.py``).

A ledger on PostgreSQL records its client session with every holder it
binds; a checker judges a holder of its own host by its process, and one of
another host by that session, on the server's clock. "Another host" is a
real process that, in a mount namespace of its own, has another machine id
and another boot id (``tests/pg_other_host.py``): a checker here cannot see
its processes, as it could not another machine's. Faults are real: the
remote holder's ledger closed without releasing, its process SIGKILLed or
stopped (SIGSTOP: its renewals frozen), its link cut by a TCP blackhole, the
server restarted with ``pg_ctl restart -m immediate``. Waits poll real
conditions with generous bounds; nothing depends on speed.

The server part needs what ``tests/pgserver.py`` needs (skipped without it,
a failure with ``SCOPELEDGER_REQUIRE_POSTGRES=1``); "another host" needs
root and ``unshare --mount`` (skipped, saying why, otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import attrs
import orjson
import pytest

from scopeledger import (Ledger, Liveness, ScopeConflict, ScopeRule, SessionLost, verify)

from scopeledger._pgstore import INSTANCE_SQL

from pgserver import wait_for
from tcpforward import Blackhole

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "pg_other_host.py")
FORK = multiprocessing.get_context("fork")


def W(path: str) -> ScopeRule:
    return ScopeRule(path, "write")


def _lines(led: Ledger) -> list[dict]:
    return [orjson.loads(line) for _, line in led.event_lines()]


def _session_rows(pg_cluster, schema: str) -> dict[int, tuple]:
    """``{id: (closed, on the server instance now)}`` of every session."""
    return {r[0]: r[1:] for r in pg_cluster.psql_execute(
        f"SELECT id, closed_at IS NOT NULL, instance = {INSTANCE_SQL} FROM {schema}.sessions")}


# -- another host ------------------------------------------------------------------

def _need_another_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("another host needs root (a mount namespace with its own machine id and boot id)")
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("another host needs unshare(1) and mount(8) (util-linux)")
    r = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"unshare --mount is not permitted here: {r.stderr.decode().strip()}")


class OtherHost:
    """``tests/pg_other_host.py`` holding ``name`` on ``path`` in a mount
    namespace of its own (another machine id and boot id)."""

    def __init__(self, url: str, name: str, path: str, ttl: float) -> None:
        self.proc = subprocess.Popen(["unshare", "--mount", sys.executable, HELPER, url, name, path, str(ttl)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.reports: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = wait_for(lambda: self.first("ready") or self.first("not_permitted") or self.proc.poll() is not None,
                         "the other host's holder registered", bound=120)
        if self.first("not_permitted"):
            self.end()
            pytest.skip(self.first("not_permitted")["why"])
        if ready is True:
            pytest.fail(f"the other host's helper died: {self.end()}")
        self.ready = self.first("ready")
        self.token, self.session = self.ready["token"], self.ready["session"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.reports.append(orjson.loads(raw))

    def first(self, event: str) -> dict | None:
        return next((r for r in list(self.reports) if r["event"] == event), None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def ask(self, command: str, answer: str, bound: float = 120) -> dict:
        seen = len([r for r in list(self.reports) if r["event"] == answer])
        self.send(command)
        return wait_for(lambda: ([r for r in list(self.reports) if r["event"] == answer][seen:] or [None])[0],
                        f"the other host's answer to {command!r}", bound=bound)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)  # (unshare --mount without --fork execs the helper itself)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stopped (SIGSTOP: its renewals, and everything else, frozen; its
        connection stays) for the ``with`` block, continued after it."""
        self.signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.signal(signal.SIGCONT)

    def end(self) -> str:
        """Stop it (if it runs) and return what it wrote on stderr."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
        self.proc.wait(60)
        self._reader.join(30)
        return self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""


@pytest.fixture
def other_host():
    _need_another_host()
    made: list[OtherHost] = []

    def start(url: str, name: str, path: str, ttl: float) -> OtherHost:
        h = OtherHost(url, name, path, ttl)
        made.append(h)
        return h

    yield start
    for h in made:
        err = h.end()
        print(h.ready if hasattr(h, "ready") else None, h.reports[-5:], err[-2000:])  # shown when a test fails


def _reclaim_until(led: Ledger, name: str, what: str, bound: float = 120) -> tuple:
    """Poll ``reclaim()`` until it reclaims ``name``: ``(Reclaimed, monotonic
    time it returned)``; every earlier report must have kept it."""
    got: list = []

    def once():
        report = led.reclaim()
        done = [r for r in report.reclaimed if r.name == name]
        if done:
            got.append((done[0], time.monotonic()))  # after the answer: when a grantor could act on it
        return got
    return wait_for(once, what, bound=bound, every=0.02)[0]


# -- a ledger's session ---------------------------------------------------------------

def test_a_pg_ledger_records_its_session_with_every_holder_it_binds(pg_cluster, pg_url, tmp_path):
    schema = pg_url.rsplit("schema=", 1)[1]
    with Ledger.open(pg_url, session_ttl=60) as led, Ledger.open(pg_url) as other:
        a = led.register("a", [W("/work/a")])
        sid = a.process.session
        assert type(sid) is int and sid >= 1
        led.delegate("a", "a.kid", [W("/work/a/kid")], reserved=True)
        spawned = led.spawn("job", ["sleep", "60"], [W("/work/job")])
        try:
            b = other.register("b", [W("/work/b")])
            assert b.process.session not in (None, sid)  # another opening: its own session
            assert _session_rows(pg_cluster, schema) == {sid: (False, True), b.process.session: (False, True)}
            carried = {}
            for ev in _lines(led):
                if ev["type"] in ("registered", "delegated"):
                    carried[(ev["type"], ev["holder"]["name"])] = ev["holder"]["process"].get("session")
                elif ev["type"] == "attached":  # spawn bound the grant to its child: the spawner's session
                    carried[("attached", ev["name"])] = ev["process"].get("session")
                    assert ev["process"]["pid"] == spawned.pid
                assert "session" not in ev["actor"]  # never a writer's
            assert carried == {("registered", "a"): sid, ("delegated", "a.kid"): sid, ("registered", "job"): sid,
                               ("attached", "job"): sid, ("registered", "b"): b.process.session}
            assert led.holder("job").process.session == sid and led.holder("job").pid == spawned.pid
            # The fold (and a snapshot) keeps it as the log says.
            led.snapshot()
            with Ledger.open(pg_url) as again:
                assert {h.name: h.process.session for h in again.holders()} == \
                    {"a": sid, "a.kid": sid, "job": sid, "b": b.process.session}
            assert verify(pg_url).ok
        finally:
            spawned.process.kill()
            spawned.process.wait()
    # Closing a ledger closes its session; one that granted nothing opened none.
    assert _session_rows(pg_cluster, schema) == {sid: (True, True), b.process.session: (True, True)}
    with Ledger.open(pg_url) as reader:
        reader.holders()
    assert len(_session_rows(pg_cluster, schema)) == 2
    # A directory ledger takes the option and records no session.
    with Ledger.open(tmp_path / "dir", session_ttl=5) as on_file:
        assert on_file.register("f", [W("/work/f")]).process.session is None
    assert b'"session"' not in (tmp_path / "dir" / "events.jsonl").read_bytes()


@pytest.mark.parametrize("kw, error", [
    ({"session_ttl": 0}, ValueError), ({"session_ttl": 1e6}, ValueError), ({"session_ttl": float("nan")}, ValueError),
    ({"session_ttl": "30"}, TypeError), ({"session_ttl": True}, TypeError), ({"on_session_lost": 5}, TypeError),
])
def test_bad_session_options_are_refused_and_nothing_is_created(tmp_path, kw, error):
    with pytest.raises(error, match="session_ttl|on_session_lost"):
        Ledger.open(tmp_path / "l", **kw)
    assert not (tmp_path / "l").exists()


def _child_registers(url, q):
    try:
        with Ledger.open(url) as led:
            q.put(led.register("kid", [W("/work/kid")]).process.session)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        q.put(repr(exc))


def test_a_forked_child_opens_its_own_session_and_never_uses_its_parents(pg_cluster, pg_url):
    schema = pg_url.rsplit("schema=", 1)[1]
    with Ledger.open(pg_url, session_ttl=60) as led:
        sid = led.register("parent", [W("/work/p")]).process.session
        q = FORK.Queue()
        p = FORK.Process(target=_child_registers, args=(pg_url, q))
        p.start()
        kid_sid = q.get(timeout=120)
        p.join(60)
        assert type(kid_sid) is int and kid_sid != sid, kid_sid
        # And one forked with the parent's Ledger object itself:
        p = FORK.Process(target=lambda: q.put(led.register("kid2", [W("/work/kid2")]).process.session))
        p.start()
        kid2_sid = q.get(timeout=120)
        p.join(60)
        assert type(kid2_sid) is int and kid2_sid not in (sid, kid_sid), kid2_sid
        # The parent's session is untouched: valid, its connection its own.
        assert led.check("parent", led.holder("parent").token)
        assert _session_rows(pg_cluster, schema)[sid] == (False, True)
        assert led.register("parent2", [W("/work/p2")]).process.session == sid


def test_the_holder_learns_when_its_session_is_lost_and_the_next_grant_opens_another(pg_cluster, pg_url, caplog):
    schema = pg_url.rsplit("schema=", 1)[1]
    told: list[BaseException] = []
    with Ledger.open(pg_url, session_ttl=600, on_session_lost=told.append) as led:
        a = led.register("a", [W("/work/a")])
        sid = a.process.session
        assert led.check("a", a.token)
        # Its connection ended on the server (an administrator's pg_terminate_backend):
        # its lock is gone on the same instance, so others may judge it dead at once.
        with caplog.at_level(logging.WARNING, logger="scopeledger"):
            pid = pg_cluster.psql_execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = %s", sid)[0][0]
            pg_cluster.psql_execute("SELECT pg_terminate_backend(%s)", pid)
            wait_for(lambda: told, "on_session_lost called")
        assert len(told) == 1 and isinstance(told[0], SessionLost) and f"client session {sid}" in str(told[0])
        assert any(f"client session {sid}" in r.getMessage() and "was lost" in r.getMessage() for r in caplog.records)
        assert not led.check("a", a.token)  # the grant is still in the log; its session no longer vouches
        assert [h.name for h in led.holders()] == ["a"]
        with Ledger.open(pg_url) as other:
            assert not other.check("a", a.token)  # from another process: the server says the lock is gone
        b = led.register("b", [W("/work/b")])
        assert b.process.session not in (None, sid) and led.check("b", b.token)
        assert _session_rows(pg_cluster, schema)[b.process.session] == (False, True)
    assert len(told) == 1


def test_a_holder_of_this_host_keeps_its_process_check_whatever_its_session(pg_url):
    with Ledger.open(pg_url, session_ttl=60) as led:
        a = led.register("a", [W("/work/a")])  # bound to this process, alive
        gone = led.spawn("gone", ["true"], [W("/work/gone")])
        gone.process.wait()  # exited and reaped (its grant not released: Spawned.wait would)
    # Its ledger closed: its session is closed; this host still judges the processes.
    with Ledger.open(pg_url) as checker:
        v = checker.liveness()
        assert v["a"].liveness is Liveness.ALIVE
        assert v["gone"].liveness in (Liveness.GONE, Liveness.ZOMBIE)
        report = checker.reclaim()
        assert [(r.name, r.reason) for r in report.reclaimed] == [("gone", v["gone"].liveness.value)]
        assert [h.name for h in checker.holders()] == ["a"]
        assert not checker.check("a", a.token)  # ... but the holder's session no longer vouches for it


def test_a_holder_of_another_host_without_a_session_or_with_an_unknown_one_is_unknown(pg_url):
    with Ledger.open(pg_url) as led:
        a = led.register("a", [W("/work/a")])
        elsewhere = attrs.evolve(a.process, host="0123456789abcdef0123456789abcdef",
                                 boot="01234567-89ab-cdef-0123-456789abcdef")
        none = attrs.evolve(a, process=attrs.evolve(elsewhere, session=None))
        unknown = attrs.evolve(a, process=attrs.evolve(elsewhere, session=2**31 - 1))
        v = led.liveness([none, unknown])
        assert v["a"].liveness is Liveness.UNKNOWN  # (one name: the second's verdict)
        assert led.liveness([none])["a"].why == "on another host (0123456789abcdef0123456789abcdef)"
        assert led.liveness([unknown])["a"].why == \
            f"its client session {2**31 - 1} is not in the server's sessions table"
        # Its own session, seen as another host's: valid.
        mine = attrs.evolve(a, process=elsewhere)
        assert led.liveness([mine])["a"].liveness is Liveness.ALIVE
        assert "is valid (server clock)" in led.liveness([mine])["a"].why


# -- holders on another host -----------------------------------------------------------

def test_a_remote_holder_is_kept_while_its_session_is_valid_and_reclaimed_session_closed_after_its_ledger_closes(
        pg_url, other_host):
    remote = other_host(pg_url, "remote", "/hosts/remote", 600)
    with Ledger.open(pg_url, session_ttl=60) as led:
        alloc = led.holder("remote")
        assert alloc.process.host == remote.ready["host"] and alloc.process.session == remote.session
        v = led.liveness()["remote"]
        assert v.liveness is Liveness.ALIVE and v.why == f"its client session {remote.session} is valid (server clock)"
        report = led.reclaim()
        assert report.reclaimed == () and [n for n, _ in report.kept] == ["remote"]
        with pytest.raises(ScopeConflict):
            led.register("thief", [W("/hosts/remote/x")])
        assert led.check("remote", remote.token)  # another process's session, asked of the server
        assert remote.ask("check", "check")["ok"]
        remote.ask("close", "closed")  # its ledger closed without releasing it
        assert not led.check("remote", remote.token)
        v = led.liveness()["remote"]
        assert v.liveness is Liveness.SESSION_CLOSED and f"client session {remote.session} was closed" in v.why
        report = led.reclaim()
        assert [(r.name, r.reason) for r in report.reclaimed] == [("remote", "session_closed")]
        assert led.register("thief", [W("/hosts/remote/x")]).name == "thief"
        reclaimed = [e for e in _lines(led) if e["type"] == "reclaimed"]
        assert [(e["name"], e["reason"]) for e in reclaimed] == [("remote", "session_closed")]
        assert verify(pg_url).ok


def test_a_killed_remote_holder_is_reclaimed_as_its_session_lock_gone_by_the_next_grant(pg_url, other_host):
    remote = other_host(pg_url, "remote", "/hosts/remote", 600)  # a lease far off: the lock decides
    with Ledger.open(pg_url) as led:
        remote.signal(signal.SIGKILL)
        remote.proc.wait(60)
        got: list = []

        def grant():
            with contextlib.suppress(ScopeConflict):
                got.append(led.register("thief", [W("/hosts/remote/x")]))
            return got
        wait_for(grant, "the thief granted once the killed holder's session is judged dead", bound=120)
        reclaimed = [e for e in _lines(led) if e["type"] == "reclaimed"]
        assert [(e["name"], e["reason"]) for e in reclaimed] == [("remote", "session_lock_gone")]


def test_a_stopped_remote_holder_is_reclaimed_lease_expired_and_knew_it_first(pg_url, other_host):
    remote = other_host(pg_url, "remote", "/hosts/remote", 1.5)
    with Ledger.open(pg_url) as led:
        with remote.stopped():
            done, judged_at = _reclaim_until(led, "remote", "the stopped holder's lease judged expired")
        assert done.reason == "lease_expired" and "was not renewed within its ttl and grace" in done.why
        seen = remote.ask("check", "check")
        assert seen["ok"] is False and seen["lost"] == "lease_expired"
        assert seen["lost_at"] < judged_at  # its deadline, by its own clock, came before the judgement


def test_a_partitioned_remote_holder_learns_first_and_its_scope_is_granted_after(pg_cluster, pg_url, other_host):
    """Its link cut, the holder's renewals hang; at its own deadline its
    session is lost (the watchdog), its callback fires and its check()
    answers False without IO; the server still sees its backend holding the
    lock (nothing crossed the cut), so only the lease, past its end and the
    grace, lets the thief in. A check() that was reading when the link was
    cut answers False once its read fails (here when the proxy closes its
    sockets: the proxy's kernel acknowledges everything, so no TCP timeout
    of the client's would fire), not an error."""
    schema = pg_url.rsplit("schema=", 1)[1]
    hole = Blackhole(pg_cluster.port)
    try:
        remote = other_host(f"postgresql://postgres@127.0.0.1:{hole.port}/postgres?sslmode=disable&schema={schema}",
                            "remote", "/hosts/remote", 1.5)
        with Ledger.open(pg_url) as led:
            assert led.liveness()["remote"].liveness is Liveness.ALIVE
            hole.cut.set()
            remote.send("check-bg")  # a check() reading when the link is cut: answered below
            got: list = []

            def grant():
                with contextlib.suppress(ScopeConflict):
                    got.append(led.register("thief", [W("/hosts/remote/x")]))
                    got.append(time.monotonic())  # after the answer: when the thief could act on its grant
                return got
            wait_for(grant, "the partitioned holder's scope granted to another", bound=120)
            granted_at = got[1]
            reclaimed = [e for e in _lines(led) if e["type"] == "reclaimed"]
            # Its backend still held the lock (no FIN crossed the cut): the lease decided.
            assert [(e["name"], e["reason"]) for e in reclaimed] == [("remote", "lease_expired")]
            lost = wait_for(lambda: remote.first("lost"), "the holder's own on_session_lost")
            # Lost at its own deadline (by its clock), before the grant; its check() then False.
            assert lost["lost"] == "lease_expired" and lost["lost_at"] < granted_at, (lost, granted_at)
            assert lost["check"] is False
            assert remote.first("check_bg") is None  # still reading on the cut link
            hole.close()  # its connections fail now
            stuck = wait_for(lambda: remote.first("check_bg"), "the check that was reading when the link was cut")
            assert stuck["ok"] is False, stuck
    finally:
        hole.close()


def _kept_unknown_while_its_lock_is_gone(led: Ledger, pg_cluster, remote, why: str | None = None) -> None:
    """The stopped ``remote``'s session lock is gone from the server (and it
    cannot take it again while stopped), yet three reclaims in a row keep it,
    its liveness UNKNOWN (``why`` in the verdict's reason, if given)."""
    held = pg_cluster.psql_execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = %s",
        remote.session)
    assert held == [(0,)]
    for _ in range(3):
        report = led.reclaim()
        assert report.reclaimed == (), report
        (name, v), = report.kept
        assert name == "remote" and v.liveness is Liveness.UNKNOWN, v
        if why is not None:
            assert why in v.why, v


def _back_and_alive(led: Ledger, pg_cluster, schema: str, remote, what: str) -> None:
    """Continued, ``remote`` takes its lock again on the server's new
    instance and moves its session row there (``what``, waited for); it is
    ALIVE again, nothing is reclaimed, and its own check() holds."""
    wait_for(lambda: _session_rows(pg_cluster, schema)[remote.session] == (False, True), what, bound=120)
    assert led.liveness()["remote"].liveness is Liveness.ALIVE and led.reclaim().reclaimed == ()
    seen = remote.ask("check", "check")
    assert seen["ok"] is True and seen["lost"] is None


def test_a_remote_holder_is_never_reclaimed_across_a_server_restart(pg_cluster, pg_url, other_host):
    """Every session lock vanishes at a restart: without the instance check,
    the first checker back would reclaim every remote holder. The holder is
    stopped across the restart, so that its lock is certainly gone while the
    checker looks; its lease (120 s) is far off."""
    schema = pg_url.rsplit("schema=", 1)[1]
    remote = other_host(pg_url, "remote", "/hosts/remote", 120)
    with Ledger.open(pg_url) as led:
        assert led.liveness()["remote"].liveness is Liveness.ALIVE
        with remote.stopped():
            pg_cluster.restart("immediate")
            _kept_unknown_while_its_lock_is_gone(
                led, pg_cluster, remote, why="has not taken its lock again since the server restarted")
            with pytest.raises(ScopeConflict):
                led.register("thief", [W("/hosts/remote/x")])
        # Continued, it takes its lock again on the new instance and moves its row there.
        _back_and_alive(led, pg_cluster, schema, remote, "the remote session moved to the new server instance")
        assert [e for e in _lines(led) if e["type"] == "reclaimed"] == []


def _crash_a_backend(pg_cluster) -> None:
    """SIGKILL one backend of the cluster (one of our own making): the
    postmaster then resets every backend, as after any backend's crash (an
    out-of-memory kill, a segfault), and recovers, keeping its start time."""
    import psycopg

    victim = psycopg.connect(pg_cluster.conninfo(), autocommit=True)
    witness = psycopg.connect(pg_cluster.conninfo(), autocommit=True)  # ended by the reset, when it comes
    pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
    before = pg_cluster.psql_execute("SELECT pg_postmaster_start_time()")
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(psycopg.Error):
        victim.close()

    def reset() -> bool:
        # The postmaster resets on the crash asynchronously: until the witness
        # is ended, a new connection may still get in before recovery starts.
        try:
            witness.execute("SELECT 1")
        except psycopg.Error:
            return True
        return False
    wait_for(reset, "the postmaster's reset after the backend's crash (the witness connection ended)", bound=120)
    with contextlib.suppress(psycopg.Error):
        witness.close()

    def back():
        with contextlib.suppress(psycopg.Error):
            return pg_cluster.psql_execute("SELECT pg_postmaster_start_time()")
    assert wait_for(back, "the server back after its crash recovery", bound=120) == before  # the same postmaster


def test_a_remote_holder_is_never_reclaimed_when_the_server_resets_after_a_backend_crash(pg_cluster, pg_url,
                                                                                           other_host):
    """A backend's crash makes the postmaster end every connection (so every
    session lock goes) and recover, without restarting: its start time stays.
    The instance must still change, or the first checker back would judge
    every remote session's lock gone "on the same instance"."""
    schema = pg_url.rsplit("schema=", 1)[1]
    remote = other_host(pg_url, "remote", "/hosts/remote", 120)
    with Ledger.open(pg_url) as led:
        assert led.liveness()["remote"].liveness is Liveness.ALIVE
        with remote.stopped():
            _crash_a_backend(pg_cluster)
            _kept_unknown_while_its_lock_is_gone(led, pg_cluster, remote)
        _back_and_alive(led, pg_cluster, schema, remote, "the remote session moved to the reset server")


# -- a restarted supervisor -----------------------------------------------------------

SUPERVISOR = """
import json, sys
from scopeledger import Ledger, ScopeRule
led = Ledger.open(sys.argv[1], session_ttl=600)
top = led.register("supervisor", [ScopeRule("/sup", "write")])
kid = led.spawn("worker", ["sleep", "600"], [ScopeRule("/sup/w", "write")], parent="supervisor",
                parent_token=top.token)
print(json.dumps({"supervisor": top.token, "worker": kid.allocation.token, "pid": kid.pid,
                  "session": kid.allocation.process.session}), flush=True)
sys.stdin.read()
"""


def test_an_adopted_running_child_is_vouched_for_by_the_adopter_s_session(pg_cluster, pg_url, other_host):
    # The old supervisor's session vouched for its running child to other hosts; it
    # dies with the supervisor. adopt() binds the child's grant again, with the
    # adopter's session, so a checker on another host keeps it. (Before: the child's
    # grant kept the old session and was reclaimed as session_lock_gone while it ran.)
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR, pg_url], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    saved = orjson.loads(sup.stdout.readline())
    try:
        sup.kill()
        sup.wait(60)
        with Ledger.open(pg_url, session_ttl=600) as led:
            old = saved["session"]
            wait_for(lambda: not pg_cluster.psql_execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = %s::bigint::oid",
                old), "the killed supervisor's session lock gone", bound=120)
            top = led.adopt("supervisor", saved["supervisor"])
            kid = led.adopt("worker", saved["worker"])
            assert top.rebound and not kid.rebound and kid.pid == saved["pid"]
            mine = led.holder("supervisor").process.session
            assert mine is not None and mine != old
            assert led.holder("worker").process.session == mine
            assert led.holder("worker").process.ticks is not None
            checker = other_host(pg_url, "-", "-", 600)
            seen = checker.ask("reclaim", "reclaim")
            assert seen["reclaimed"] == [] and seen["kept"] == ["supervisor", "worker"], seen
            os.kill(saved["pid"], signal.SIGKILL)
            assert kid.wait(timeout=120) is None  # released once it exits, by the adopter (status unknown)
            assert [e["type"] for e in _lines(led) if e.get("name") == "worker"][-1] == "released"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(saved["pid"], signal.SIGKILL)


# -- pruning the sessions table ---------------------------------------------------------

#: A ledger that grants, releases and exits without closing (killed: its session is
#: never closed; its lock goes with its connection, its lease, 0.1 s, lapses soon after).
_UNCLOSED = ("import os, sys\n"
             "from scopeledger import Ledger, ScopeRule\n"
             "led = Ledger.open(sys.argv[1], session_ttl=0.1)\n"
             "a = led.register(sys.argv[2], [ScopeRule(sys.argv[3], 'write')])\n"
             "led.release(sys.argv[2], token=a.token)\n"
             "print(a.process.session, flush=True)\n"
             "os._exit(0)\n")


def _unclosed(url: str, name: str) -> int:
    out = subprocess.run([sys.executable, "-c", _UNCLOSED, url, name, f"/prune/{name}"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def _come_and_go(url: str, name: str) -> int:
    """A ledger that grants, releases and is closed; its session's id."""
    led = Ledger.open(url)
    try:
        a = led.register(name, [W(f"/prune/{name}")])
        led.release(name, token=a.token)
    finally:
        led.close()
    return a.process.session


def _audit(url: str, led: Ledger) -> list:
    """What the audit, replay and verify give, from the command line and the library."""
    from helpers import ledger_cmd

    answers = []
    for args in (["replay"], ["verify"], ["history", "orphan"], ["history", "w3"], ["who", "/prune/orphan"],
                 ["who", "--at", "5", "/prune/w1"], ["diff", "3", "9"], ["show"]):
        r = ledger_cmd(url, "--json", *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        answers.append((args, r.stdout))
    answers.append([(e.seq, e.type, e.data) for e in led.events()])
    answers.append([(q, line) for q, line in led.event_lines()])
    head = led.seq
    answers.append([sorted((a.name, a.process, a.token) for a in led.state_at(q).holders.values())
                    for q in range(0, head + 1, 7)])
    report = led.verify()
    answers.append((report.ok, report.events, [str(p) for p in report.problems]))
    return answers


def test_dead_sessions_rows_are_pruned_and_the_table_stays_bounded(pg_cluster, pg_url, monkeypatch):
    """Every ledger's session was a row of ``<schema>.sessions`` for ever.
    Now a closing ledger whose session id is a multiple of
    SESSION_PRUNE_EVERY (8 here; rows dead for SESSION_KEEP_SECONDS, 0 here)
    deletes the rows of dead sessions that no live holder carries: 96
    ledgers come and go (6 of them killed, never closed) and the table never
    holds more than 2 * 8 + 4 rows (15 seen; before: one per ledger, 104 at
    the end).
    Never a row that is needed: the live session's, nor the closed session
    that a live holder ('orphan', its ledger closed without releasing it)
    carries, which other hosts judge it by (session_closed, before and after
    every prune; pruned once it is released). Every audit, replay and verify
    answer is the same with the dead rows and without them."""
    from scopeledger import _sessions

    monkeypatch.setattr(_sessions, "SESSION_PRUNE_EVERY", 8)
    monkeypatch.setattr(_sessions, "SESSION_KEEP_SECONDS", 0.0)
    schema = pg_url.rsplit("schema=", 1)[1]
    with Ledger.open(pg_url) as keeper:
        keeper.register("kept", [W("/prune/kept")])  # its session lives throughout
        by = Ledger.open(pg_url)
        orphan = by.register("orphan", [W("/prune/orphan")])  # held by this process, alive
        by.close()  # its session closed, 'orphan' still held
        elsewhere = attrs.evolve(orphan, process=attrs.evolve(
            orphan.process, host="0123456789abcdef0123456789abcdef", boot="01234567-89ab-cdef-0123-456789abcdef"))

        def judged() -> Liveness:
            return keeper.liveness([elsewhere])["orphan"].liveness

        assert judged() is Liveness.SESSION_CLOSED
        needed = {keeper.holder("kept").process.session, orphan.process.session}
        most, unclosed = 0, []
        for i in range(96):
            if i % 16 == 5:
                unclosed.append(_unclosed(pg_url, f"u{i}"))
            _come_and_go(pg_url, f"w{i}")
            rows = _session_rows(pg_cluster, schema)
            assert needed <= set(rows), (i, sorted(rows))
            assert judged() is Liveness.SESSION_CLOSED
            most = max(most, len(rows))
        assert most <= 2 * 8 + 4, most
        # The unclosed sessions' leases over (server clock; or pruned already), one more prune
        # leaves the needed rows alone.
        wait_for(lambda: set(unclosed) - set(_session_rows(pg_cluster, schema))
                 | set(keeper._log.dead_sessions(unclosed)) == set(unclosed), "the unclosed sessions dead")
        monkeypatch.setattr(_sessions, "SESSION_PRUNE_EVERY", 1 << 30)  # no prune on close from here on
        ids = [_come_and_go(pg_url, f"x{i}") for i in range(10)]
        assert set(ids) <= set(_session_rows(pg_cluster, schema))
        before = _audit(pg_url, keeper)
        keeper._prune_sessions()
        assert set(_session_rows(pg_cluster, schema)) == needed
        assert judged() is Liveness.SESSION_CLOSED
        assert _audit(pg_url, keeper) == before
        # Released, the orphan's closed session is carried by nobody: its row goes at the next prune.
        keeper.release("orphan", token=orphan.token)
        keeper._prune_sessions()
        assert set(_session_rows(pg_cluster, schema)) == {keeper.holder("kept").process.session}
        assert verify(pg_url).ok


def test_a_ledger_prunes_on_close_only_when_due_and_the_server_just_answered(pg_cluster, pg_url, monkeypatch):
    """The prune comes with ``close`` (never with a grant or a release), for
    a ledger whose session id is a multiple of SESSION_PRUNE_EVERY (1 here:
    every one), and not when the server did not acknowledge closing its
    session (its connection ended: a prune would only wait for a server
    that may not answer)."""
    from scopeledger import _sessions

    monkeypatch.setattr(_sessions, "SESSION_PRUNE_EVERY", 1)
    calls: list[str] = []
    prune = Ledger._prune_sessions
    monkeypatch.setattr(Ledger, "_prune_sessions", lambda self: (calls.append("prune"), prune(self))[1])
    led = Ledger.open(pg_url)
    a = led.register("a", [W("/prune/a")])
    led.release("a", token=a.token)
    assert calls == []
    led.close()
    assert calls == ["prune"]
    led = Ledger.open(pg_url)
    led.register("b", [W("/prune/b")])
    sid = led.holder("b").process.session
    assert pg_cluster.psql_execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
        " AND objid = %s::bigint::oid AND granted", sid) == [(1,)]
    led.close()
    assert calls == ["prune"]
    monkeypatch.setattr(_sessions, "SESSION_PRUNE_EVERY", 1 << 30)
    with Ledger.open(pg_url) as other:
        other.register("c", [W("/prune/c")])
    assert calls == ["prune"]
