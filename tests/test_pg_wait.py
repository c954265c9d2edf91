"""Waiting for a scope on PostgreSQL, first come first served (issue 16;
``scopeledger/_wait.py``, ``PgTickets`` in ``scopeledger/_pgstore.py``).

Real processes hold, wait, are SIGKILLed and have their connections cut on a
throwaway server (``tests/pgserver.py``: skipped without PostgreSQL, a
failure with ``SCOPELEDGER_REQUIRE_POSTGRES=1``). Every wait is on a real
condition (a ticket row in ``<schema>.waiters``, a line of the log, a
process's output), never a sleep; outcomes and order are asserted, never
timings. A waiter joins only once the one before it is in the queue, so the
order in which they joined is known.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from scopeledger import Ledger, ScopeRule, WaitTimeout
from scopeledger._pgstore import PgStore

from helpers import asleep_behind, in_thread
from pgserver import wait_for
from tcpforward import Blackhole

BOUND = 60.0  # seconds: a generous bound on any condition a test waits for


def W(path: str) -> ScopeRule:
    return ScopeRule(path, "write")


def schema_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["schema"][0]


def queued(pg_cluster, url: str) -> list[tuple[int, str]]:
    """The tickets in the queue's table, ``(number, holder name)``, in order
    ([] while the table does not exist)."""
    s = schema_of(url)
    if not pg_cluster.psql_execute("SELECT to_regclass(%s) IS NOT NULL", f"{s}.waiters")[0][0]:
        return []
    return [(n, orjson.loads(bytes(r))["name"]) for n, r in pg_cluster.psql_execute(
        f"SELECT number, request FROM {s}.waiters ORDER BY number")]


def names(pg_cluster, url: str) -> list[str]:
    return [n for _, n in queued(pg_cluster, url)]


def grants(led: Ledger) -> list[str]:
    return [e.data["holder"]["name"] for e in led.events() if e.type in ("registered", "delegated")]


WAITER = textwrap.dedent("""
    import asyncio, json, logging, sys
    from scopeledger import AsyncLedger, Ledger, ScopeRule, WaitTimeout
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    url, name, paths, wait, mode = json.loads(sys.argv[1])
    led = Ledger.open(url)
    rules = [ScopeRule(p, "write") for p in paths]
    try:
        if mode == "async":
            async def main():
                return await AsyncLedger(led).register(name, rules, wait=wait)
            a = asyncio.run(main())
        else:
            a = led.register(name, rules, wait=wait)
    except WaitTimeout as exc:
        print(json.dumps({"timeout": str(exc)}), flush=True)
        sys.exit(3)
    print(json.dumps({"token": a.token}), flush=True)
    sys.stdin.readline()  # hold until told
    led.release(name, token=a.token)
    led.close()
""")


def waiter(url: str, name: str, paths: list[str], wait: float = BOUND, mode: str = "sync") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WAITER, json.dumps([url, name, paths, wait, mode])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def let_go(p: subprocess.Popen[str]) -> str:
    """Tell a granted waiter to release and exit; its stderr."""
    p.stdin.write("\n")
    p.stdin.flush()
    _, err = p.communicate(timeout=BOUND)
    assert p.returncode == 0, err
    return err


def join_in_order(pg_cluster, url, led, specs):
    """Start one waiter per ``(name, paths[, mode])``, each once the one
    before it is in the queue (its ticket visible in the table)."""
    procs = []
    for i, spec in enumerate(specs):
        name, paths = spec[0], spec[1]
        procs.append(waiter(url, name, paths, mode=spec[2] if len(spec) > 2 else "sync"))
        want = [s[0] for s in specs[:i + 1]]
        wait_for(lambda w=want: names(pg_cluster, url) == w, f"{name}'s ticket behind {want[:-1]}", BOUND)
    return procs


def kill_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_waiters_are_granted_in_the_order_they_joined(pg_cluster, pg_url):
    """H holds; w1, w2, w3 (separate processes, w2 asyncio) wait in that
    order for overlapping scopes; H releases: w1, w2, w3 are granted in turn
    (each holds until told, then releases), each waiting notice names the
    holder or the earlier waiter it stands behind."""
    led = Ledger.open(pg_url)
    procs = []
    try:
        h = led.register("holder", [W("/q/src")])
        specs = [("w1", ["/q/src"]), ("w2", ["/q/src/a"], "async"), ("w3", ["/q"])]
        procs = join_in_order(pg_cluster, pg_url, led, specs)
        led.release("holder", token=h.token)
        errs = {}
        for (name, *_), p in zip(specs, procs, strict=True):
            got = json.loads(p.stdout.readline())
            assert "token" in got, got
            led.refresh()
            assert [a.name for a in led.holders()] == [name]
            errs[name] = let_go(p)
        assert grants(led) == ["holder", "w1", "w2", "w3"]
        assert "holder 'w1' waits up to 60s for its scope: " in errs["w1"] and "'holder'" in errs["w1"]
        for name, ahead in (("w2", "w1"), ("w3", "w2")):
            assert f"holder '{name}' waits up to 60s for its scope: waiting behind '{ahead}' (pid " in errs[name]
        wait_for(lambda: queued(pg_cluster, pg_url) == [], "the queue empty", BOUND)
    finally:
        kill_all(procs)
        led.close()


def test_a_waiter_killed_in_the_queue_does_not_hold_up_the_ones_behind_it(pg_cluster, pg_url):
    led = Ledger.open(pg_url)
    procs = []
    try:
        h = led.register("holder", [W("/q/src")])
        procs = join_in_order(pg_cluster, pg_url, led, [("doomed", ["/q/src"]), ("w2", ["/q/src"]),
                                                        ("w3", ["/q/src"])])
        doomed, w2, w3 = procs
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        led.release("holder", token=h.token)
        assert "token" in json.loads(w2.stdout.readline())
        let_go(w2)
        assert "token" in json.loads(w3.stdout.readline())
        let_go(w3)
        assert grants(led) == ["holder", "w2", "w3"]
        wait_for(lambda: queued(pg_cluster, pg_url) == [], "the dead waiter's ticket removed", BOUND)
    finally:
        kill_all(procs)
        led.close()


def test_a_timed_out_waiter_leaves_the_queue(pg_cluster, pg_url):
    led = Ledger.open(pg_url)
    other = Ledger.open(pg_url)
    procs = []
    try:
        led.register("holder", [W("/q/src")])
        procs = join_in_order(pg_cluster, pg_url, led, [("patient", ["/q/src"])])
        with pytest.raises(WaitTimeout) as info:
            other.register("hasty", [W("/q/src")], wait=0.3)
        assert info.value.refusal is None and info.value.in_the_way == ("patient",)
        assert "waiting behind 'patient'" in str(info.value)
        assert names(pg_cluster, pg_url) == ["patient"]  # hasty's ticket is gone, patient's kept
        assert "hasty" not in grants(led)
    finally:
        kill_all(procs)
        other.close()
        led.close()


def test_a_waiter_for_a_scope_no_earlier_waiter_wants_is_not_held_back(pg_cluster, pg_url):
    """w1 waits for /q/a, w2 (later) for /q/b: when /q/b is let go, w2 is
    granted while w1 still waits."""
    led = Ledger.open(pg_url)
    procs = []
    try:
        ha = led.register("hold-a", [W("/q/a")])
        hb = led.register("hold-b", [W("/q/b")])
        procs = join_in_order(pg_cluster, pg_url, led, [("w1", ["/q/a"]), ("w2", ["/q/b"])])
        w1, w2 = procs
        led.release("hold-b", token=hb.token)
        assert "token" in json.loads(w2.stdout.readline())
        assert names(pg_cluster, pg_url) == ["w1"] and w1.poll() is None
        led.release("hold-a", token=ha.token)
        assert "token" in json.loads(w1.stdout.readline())
        let_go(w1)
        let_go(w2)
        assert grants(led) == ["hold-a", "hold-b", "w2", "w1"]
    finally:
        kill_all(procs)
        led.close()


def test_a_waiter_whose_connection_is_cut_joins_again_at_the_end(pg_cluster, pg_url):
    """w1's ticket connection is terminated by the server: w1 loses its place
    (w2, behind it, is now first) and joins again behind w2; both are
    granted, w2 first."""
    led = Ledger.open(pg_url)
    procs = []
    try:
        h = led.register("holder", [W("/q/src")])
        procs = join_in_order(pg_cluster, pg_url, led, [("w1", ["/q/src"]), ("w2", ["/q/src"])])
        w1, w2 = procs
        before = dict((n, k) for k, n in queued(pg_cluster, pg_url))
        s = schema_of(pg_url)
        cut = pg_cluster.psql_execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1"
            " AND l.classid = (SELECT oid FROM pg_namespace WHERE nspname = %s)"
            " AND l.objid = (%s::bigint & 4294967295)::oid", s, before["w1"])
        assert cut == [(True,)]
        wait_for(lambda: names(pg_cluster, pg_url) == ["w2", "w1"], "w1 back in the queue, behind w2", BOUND)
        after = dict((n, k) for k, n in queued(pg_cluster, pg_url))
        assert after["w1"] > after["w2"] == before["w2"]
        led.release("holder", token=h.token)
        assert "token" in json.loads(w2.stdout.readline())
        err2 = let_go(w2)
        assert "token" in json.loads(w1.stdout.readline())
        err1 = let_go(w1)
        assert grants(led) == ["holder", "w2", "w1"]
        assert "WARNING holder 'w1' lost its place in the waiters' queue" in err1 and "lost its place" not in err2
    finally:
        kill_all(procs)
        led.close()


# -- a ticket lost in an outage: one warning, the outage's (a fresh tester's finding) --------


def _cut_then_release(pg_cluster, pg_url: str, other: Ledger) -> tuple[list[int], Any, Any]:
    """For a scripted waiter (``_Scripted``): ``cut()`` cuts the connection
    of the one ticket in the queue (its number put in the list), and
    ``release_once_rejoined()`` lets 'holder' go (by ``other``) once that
    waiter has joined again."""
    ticket: list[int] = []

    def cut() -> None:
        ticket.append(queued(pg_cluster, pg_url)[0][0])
        _cut_ticket(pg_cluster, pg_url, ticket[0])

    def release_once_rejoined() -> None:
        if _rejoined(pg_cluster, pg_url, ticket[0]) and "holder" in {h.name for h in other.holders()}:
            other.release("holder")
    return ticket, cut, release_once_rejoined


def _cut_ticket(pg_cluster, url: str, number: int) -> None:
    """Terminate the backend holding ticket ``number``'s lock, and return
    once it is gone (its lock released: nothing of the ticket is alive)."""
    s = schema_of(url)
    lock = ("FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1"
            " AND l.classid = (SELECT oid FROM pg_namespace WHERE nspname = %s)"
            " AND l.objid = (%s::bigint & 4294967295)::oid")
    assert pg_cluster.psql_execute(f"SELECT pg_terminate_backend(l.pid) {lock}", s, number) == [(True,)]
    wait_for(lambda: pg_cluster.psql_execute(f"SELECT count(*) {lock}", s, number) == [(0,)],
             f"ticket {number}'s backend gone", BOUND)


class _Scripted:
    """A stand-in for ``Ledger._decide`` (a waiter's look) running ``script[i]()`` before the
    ledger's own decision at its ``i``-th call (a step may raise instead);
    after the script, ``last()`` before each call. ``calls`` counts them."""

    def __init__(self, led: Ledger, monkeypatch, script, last) -> None:
        self.real, self.script, self.last, self.calls = led._decide, list(script), last, 0
        monkeypatch.setattr(led, "_decide", self)

    def __call__(self, *args, **kwargs):
        step = self.script[self.calls] if self.calls < len(self.script) else self.last
        self.calls += 1
        step()
        return self.real(*args, **kwargs)


def _unavailable() -> None:
    from scopeledger import StoreUnavailable

    raise StoreUnavailable("postgresql://db/x", "failed to read the log: connection lost: injected")


def _rejoined(pg_cluster, url: str, lost: int) -> bool:
    """Whether the waiter holds a ticket again, another than ``lost``."""
    return [n for n, _ in queued(pg_cluster, url) if n != lost] != []


def _lost_records(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if "lost its place" in r.getMessage()]


def test_a_ticket_found_lost_after_its_outage_ended_is_told_as_info(pg_cluster, pg_url, caplog, monkeypatch):
    """The order fifo.py --restart met ~1 round in 10: the waiter warns that
    it cannot reach the server (a look on the ledger's connection failed),
    the next look goes through (the outage is over), and only then does it
    find that its ticket's connection broke in that outage. One cause, one
    warning: the outage's; losing its place is said as INFO. The order is
    forced: the look after the warning cuts the ticket's connection (and
    waits for its backend to be gone) before it decides."""
    caplog.set_level(logging.INFO, logger="scopeledger")
    led = Ledger.open(pg_url)
    other = Ledger.open(pg_url)
    try:
        other.register("holder", [W("/q/src")])
        ticket, cut, release_once_rejoined = _cut_then_release(pg_cluster, pg_url, other)

        decide = _Scripted(led, monkeypatch, [_unavailable, cut], release_once_rejoined)
        assert led.register("w", [W("/q/src")], wait=BOUND).name == "w"
        assert decide.calls >= 3
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1 and "cannot reach the ledger while it waits" in warned[0], warned
        assert _lost_records(caplog) == [
            (logging.INFO, f"holder 'w' lost its place in the waiters' queue (ticket {ticket[0]}: its connection "
                           "broke) and joined again, at its end")]
        wait_for(lambda: queued(pg_cluster, pg_url) == [], "the grant's leave seen", BOUND)
    finally:
        other.close()
        led.close()


def test_a_ticket_lost_whose_join_again_fails_says_so_once_it_joined(pg_cluster, pg_url, caplog, monkeypatch):
    """The other order: the ticket's connection is cut while the server
    answers, and the join again fails (the server went away meanwhile):
    the outage's warning, then, once it joined, the loss as INFO (it was
    not said at all: the join that failed forgot it)."""
    from scopeledger._pgstore import PgTickets

    caplog.set_level(logging.INFO, logger="scopeledger")
    led = Ledger.open(pg_url)
    other = Ledger.open(pg_url)
    real_join = PgTickets.join
    joins = []

    def join(self, request):
        joins.append(request)
        if len(joins) == 2:  # (the join again, after the loss)
            _unavailable()
        return real_join(self, request)

    monkeypatch.setattr(PgTickets, "join", join)
    try:
        other.register("holder", [W("/q/src")])
        ticket, cut, release_once_rejoined = _cut_then_release(pg_cluster, pg_url, other)

        _Scripted(led, monkeypatch, [cut], release_once_rejoined)
        assert led.register("w", [W("/q/src")], wait=BOUND).name == "w"
        assert len(joins) == 3
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1 and "cannot reach the ledger while it waits" in warned[0], warned
        assert [level for level, _ in _lost_records(caplog)] == [logging.INFO]
        assert f"(ticket {ticket[0]}: its connection broke)" in _lost_records(caplog)[0][1]
        wait_for(lambda: queued(pg_cluster, pg_url) == [], "the grant's leave seen", BOUND)
    finally:
        other.close()
        led.close()


def test_a_ticket_lost_with_no_outage_is_still_a_warning(pg_cluster, pg_url, caplog, monkeypatch):
    """Without an outage warned while the ticket was held, a lost place is
    the one warning (as test_a_waiter_whose_connection_is_cut... shows
    across processes)."""
    caplog.set_level(logging.INFO, logger="scopeledger")
    led = Ledger.open(pg_url)
    other = Ledger.open(pg_url)
    try:
        other.register("holder", [W("/q/src")])
        ticket, cut, release_once_rejoined = _cut_then_release(pg_cluster, pg_url, other)

        _Scripted(led, monkeypatch, [cut], release_once_rejoined)
        assert led.register("w", [W("/q/src")], wait=BOUND).name == "w"
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in warned] == [m for _, m in _lost_records(caplog)]
        assert [level for level, _ in _lost_records(caplog)] == [logging.WARNING]
    finally:
        other.close()
        led.close()


def test_a_ledger_made_without_the_queue_table_works_and_gets_it_when_a_waiter_joins(pg_cluster, pg_url):
    """A schema made by the previous scopeledger has no ``waiters`` table
    (dropped here): reading the queue, and a read-only store, make nothing;
    the first waiter makes it, and waiters are served in order."""
    s = schema_of(pg_url)
    Ledger.open(pg_url).close()
    pg_cluster.psql_execute(f"DROP TABLE {s}.waiters")
    exists = f"SELECT to_regclass('{s}.waiters') IS NOT NULL"
    with PgStore.open(pg_url, readonly=True) as ro:
        assert ro.tickets().earlier(None) == []
    with Ledger.open(pg_url, readonly=True) as ro_led:
        assert ro_led.holders() == []
    led = Ledger.open(pg_url)
    procs = []
    try:
        h = led.register("holder", [W("/q/src")])
        with pytest.raises(Joined):  # looks at the queue: no table, no one
            led.register("nobody-before", [W("/q/src")], wait=BOUND, on_wait=joined)
        assert pg_cluster.psql_execute(exists) == [(True,)]  # (made when it joined)
        pg_cluster.psql_execute(f"DROP TABLE {s}.waiters")
        procs = join_in_order(pg_cluster, pg_url, led, [("w1", ["/q/src"]), ("w2", ["/q/src"])])
        led.release("holder", token=h.token)
        for p in procs:
            assert "token" in json.loads(p.stdout.readline())
            let_go(p)
        assert grants(led) == ["holder", "w1", "w2"]
    finally:
        kill_all(procs)
        led.close()


@pytest.fixture
def other_role(pg_cluster, pg_url):
    """A login role (trust, as the cluster's others) with no rights on the
    ledger at ``pg_url`` yet (whose owner is the cluster's superuser)."""
    role = schema_of(pg_url) + "_w"
    pg_cluster.psql_execute(f"CREATE ROLE {role} LOGIN")
    yield role
    pg_cluster.psql_execute(f"DROP OWNED BY {role}")
    pg_cluster.psql_execute(f"DROP ROLE {role}")


def documented_grants(pg_cluster, schema: str, role: str, *, default_privileges: bool) -> None:
    """The grants docs/cli.md gives another role (with or without its
    ``ALTER DEFAULT PRIVILEGES``, which covers tables the owner makes later)."""
    pg_cluster.psql_execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    pg_cluster.psql_execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}")
    if default_privileges:
        pg_cluster.psql_execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
                                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}")


class Joined(Exception):
    """Raised by :func:`joined`."""


def joined(_reason: str, _refusal: object) -> None:
    """An ``on_wait`` that ends the wait once the waiter tried to join the
    queue (``on_wait`` is called after that try): a short ``wait=`` could
    time out before it, on a busy machine."""
    raise Joined


def owner_makes_the_queue_table(pg_cluster, pg_url: str, led: Ledger) -> None:
    """As on a ledger made by an earlier scopeledger: no ``waiters`` table
    until a waiter of the owner joins (after the grants were given)."""
    s = schema_of(pg_url)
    h = led.register("owner-holder", [W("/q/src")])
    with pytest.raises(Joined):
        led.register("owner-waiter", [W("/q/src")], wait=BOUND, on_wait=joined)
    assert pg_cluster.psql_execute(f"SELECT to_regclass('{s}.waiters') IS NOT NULL") == [(True,)]
    led.release("owner-holder", token=h.token)


def queue_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "are not queued" in r.getMessage()]


def test_a_role_without_rights_on_a_queue_table_made_after_its_grants_waits_unordered(
        pg_cluster, pg_url, other_role, caplog):
    """The grants docs/cli.md gave (``ON ALL TABLES``, the tables that
    existed then) do not cover ``waiters`` made later by the owner's
    waiter: every wait of that role raised ``StoreError: failed to read the
    waiters' queue: permission denied for table waiters``, even for a free
    scope. It waits unordered, with one warning naming the grant to give."""
    s = schema_of(pg_url)
    Ledger.open(pg_url).close()
    pg_cluster.psql_execute(f"DROP TABLE {s}.waiters")
    documented_grants(pg_cluster, s, other_role, default_privileges=False)
    led = Ledger.open(pg_url)
    theirs = Ledger.open(pg_cluster.url(s, user=other_role))
    try:
        owner_makes_the_queue_table(pg_cluster, pg_url, led)
        h = led.register("holder", [W("/q/held")])
        with caplog.at_level(logging.WARNING, logger="scopeledger"):
            free = theirs.register("free", [W("/q/free")], wait=BOUND)
            with pytest.raises(Joined):
                theirs.register("blocked", [W("/q/held")], wait=BOUND, on_wait=joined)
            later = theirs.register("later", [W("/q/later")], wait=BOUND)
        grant = f"GRANT SELECT, INSERT, DELETE ON {s}.waiters TO {other_role}"
        warned = queue_warnings(caplog)
        assert len(warned) == 1 and grant in warned[0] and "permission denied for table waiters" in warned[0], warned
        assert names(pg_cluster, pg_url) == []  # it took no place in the queue
        assert grants(led)[-2:] == ["free", "later"]
        for a in (free, later):
            theirs.release(a.name, token=a.token)
        led.release("holder", token=h.token)
        # Given the grant the warning names, a new ledger object of that role queues.
        pg_cluster.psql_execute(grant)
        assert_role_queues(pg_cluster, pg_url, led, other_role)
    finally:
        theirs.close()
        led.close()


def assert_role_queues(pg_cluster, pg_url: str, led: Ledger, role: str) -> None:
    """A waiter of ``role`` joins the queue (its ticket is in the table) and
    is granted once the owner's holder lets go."""
    s = schema_of(pg_url)
    h = led.register("holder2", [W("/q/src2")])
    procs = []
    try:
        procs = join_in_order(pg_cluster, pg_cluster.url(s, user=role), led, [("role-waiter", ["/q/src2"])])
        assert names(pg_cluster, pg_url) == ["role-waiter"]
        led.release("holder2", token=h.token)
        assert "token" in json.loads(procs[0].stdout.readline())
        let_go(procs[0])
    finally:
        kill_all(procs)


def test_a_role_given_the_documented_default_privileges_is_ordered(pg_cluster, pg_url, other_role, caplog):
    s = schema_of(pg_url)
    Ledger.open(pg_url).close()
    pg_cluster.psql_execute(f"DROP TABLE {s}.waiters")
    documented_grants(pg_cluster, s, other_role, default_privileges=True)
    led = Ledger.open(pg_url)
    try:
        owner_makes_the_queue_table(pg_cluster, pg_url, led)
        with caplog.at_level(logging.WARNING, logger="scopeledger"):
            assert_role_queues(pg_cluster, pg_url, led, other_role)
        assert queue_warnings(caplog) == []
    finally:
        led.close()


def test_a_refused_join_or_leave_falls_back_to_unordered_with_one_warning(pg_cluster, pg_url, other_role, caplog):
    """Each queue operation's permission refusal (42501): joining without
    INSERT, leaving without DELETE (the ticket's lock goes with its
    connection; the row is removed by the next reader who may)."""
    s = schema_of(pg_url)
    Ledger.open(pg_url).close()
    documented_grants(pg_cluster, s, other_role, default_privileges=False)
    pg_cluster.psql_execute(f"REVOKE INSERT, DELETE ON {s}.waiters FROM {other_role}")
    theirs = pg_cluster.url(s, user=other_role)
    with caplog.at_level(logging.WARNING, logger="scopeledger"):
        with PgStore.open(theirs) as st:
            q = st.tickets()
            assert q.join(b'{"name": "x"}') is None  # INSERT refused
            assert q.join(b'{"name": "x"}') is None and q.earlier(None) == []
        assert len(queue_warnings(caplog)) == 1 and "may not join" in queue_warnings(caplog)[0]
        caplog.clear()
        pg_cluster.psql_execute(f"GRANT INSERT ON {s}.waiters TO {other_role}")
        with PgStore.open(theirs) as st:
            q = st.tickets()
            t = q.join(b'{"name": "x"}')
            assert t is not None and names(pg_cluster, pg_url) == ["x"]
            q.leave(t)  # DELETE refused (said when its answer is read: by the next join)
            assert q.join(b'{"name": "y"}') is None and q.earlier(None) == []
        assert len(queue_warnings(caplog)) == 1 and "may not leave" in queue_warnings(caplog)[0]
    with PgStore.open(pg_url) as owner:
        assert owner.tickets().earlier(None) == []  # its lock is gone: the row was deleted
    assert names(pg_cluster, pg_url) == []


def test_a_read_only_store_never_makes_the_queue_table(pg_cluster, pg_url):
    s = schema_of(pg_url)
    Ledger.open(pg_url).close()
    pg_cluster.psql_execute(f"DROP TABLE {s}.waiters")
    with PgStore.open(pg_url, readonly=True) as ro:
        q = ro.tickets()
        assert q.earlier(None) == [] and q.earlier(5) == []
        from scopeledger import ReadOnlyLedger

        with pytest.raises(ReadOnlyLedger):
            q.join(b"{}")
    assert pg_cluster.psql_execute(f"SELECT to_regclass('{s}.waiters') IS NOT NULL") == [(False,)]


def test_the_ticket_lock_keys_do_not_meet_the_append_or_session_locks(pg_cluster, pg_url):
    """A ticket's lock is the one-bigint advisory form (objsubid 1) on the
    schema's oid; the append lock and the sessions' are two-int4 (objsubid
    2): a ticket numbered like a session takes its lock while that session
    holds its own."""
    s = schema_of(pg_url)
    with PgStore.open(pg_url, create=True) as st:
        session = st.open_session(30, renew=False)
        try:
            q = st.tickets()
            tickets = [q.join(b'{"n": %d}' % i) for i in range(session.id + 1)]
            assert session.id in [t.number for t in tickets]
            rows = pg_cluster.psql_execute(
                "SELECT objsubid, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = (SELECT oid FROM pg_namespace WHERE nspname = %s) ORDER BY 1, 2", s)
            assert (2, session.id) in rows
            assert [r[1] for r in rows if r[0] == 1] == sorted(t.number for t in tickets)
            with st.locked(0, BOUND):  # the append lock is free too
                pass
            for t in tickets:
                q.leave(t)
            assert q.earlier(None) == []
        finally:
            session.close()


def test_async_waiters_give_their_tickets_back_off_the_event_loop(pg_cluster, pg_url, monkeypatch):
    """AsyncLedger on PostgreSQL: a grant, a cancellation and a timeout
    each give the ticket back (a round trip to the server) in a worker
    thread, never on the event loop's; the cancelled waiter leaves the queue
    and is never granted."""
    import asyncio
    import threading

    from scopeledger import AsyncLedger
    from scopeledger._pgstore import PgTickets

    leaving = []
    real = PgTickets.leave

    def leave(self, ticket):
        if ticket is not None and ticket.conn is not None:
            leaving.append(threading.get_ident())
        return real(self, ticket)

    monkeypatch.setattr(PgTickets, "leave", leave)
    led = Ledger.open(pg_url)
    try:
        h = led.register("holder", [W("/q/src")])

        async def main():
            loop_thread = threading.get_ident()
            async with await AsyncLedger.open(pg_url) as aled:
                first = asyncio.ensure_future(aled.register("first", [W("/q/src")], wait=BOUND))
                await asyncio.to_thread(wait_for, lambda: names(pg_cluster, pg_url) == ["first"], "first's ticket",
                                        BOUND)
                cancelled = asyncio.ensure_future(aled.register("cancelled", [W("/q/src")], wait=BOUND))
                await asyncio.to_thread(wait_for, lambda: names(pg_cluster, pg_url) == ["first", "cancelled"],
                                        "cancelled's ticket", BOUND)
                cancelled.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await cancelled
                # (raised at once; the ticket is given back when the step its thread was in ends)
                await asyncio.to_thread(wait_for, lambda: names(pg_cluster, pg_url) == ["first"],
                                        "the cancelled waiter's ticket given back", BOUND)
                with pytest.raises(WaitTimeout):
                    await aled.register("timed-out", [W("/q/src")], wait=0.2)  # behind first
                assert names(pg_cluster, pg_url) == ["first"]
                await asyncio.to_thread(led.release, "holder", token=h.token)
                assert (await first).name == "first"
            return loop_thread

        loop_thread = asyncio.run(main())
        assert len(leaving) == 3 and loop_thread not in leaving, (leaving, loop_thread)
        assert grants(led) == ["holder", "first"]
        wait_for(lambda: queued(pg_cluster, pg_url) == [], "the grant's leave seen", BOUND)
    finally:
        led.close()


def listening(conn) -> list[str]:
    return sorted(r[0] for r in conn.execute("SELECT pg_listening_channels()"))


def test_a_kept_ticket_connection_listens_to_nothing_and_holds_no_lock(pg_url):
    """A ticket's connection listens while the ticket lives (from the join,
    to the log's channel; then to what its watch follows); once it left,
    the connection kept for the next waiter listens to nothing
    (notifications would pile up unread) and holds no lock, and the next
    ticket reuses it."""
    s = schema_of(pg_url)
    with PgStore.open(pg_url, create=True) as st:
        q = st.tickets()
        t = q.join(b"{}")
        conn = t.conn
        assert listening(conn) == [f"scopeledger_{s}"]
        w = q.watch(t)
        assert w.follow(False, 7) is True
        assert listening(conn) == [f"{q.channel}7"]
        assert w.follow(False, 7) is False  # nothing changed: no round trip
        assert w.follow(True, 7) is True
        assert listening(conn) == [f"{q.channel}7", f"scopeledger_{s}"]
        q.leave(t)  # sent, not waited for: its answer is read when the connection is next used
        assert t.conn is None and q._idle == [conn]
        assert q._answered(conn) is True and q._answered(conn) is True  # (read once)
        assert conn.execute("SELECT pg_listening_channels()").fetchall() == []
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
                            " AND locktype = 'advisory'").fetchone()[0] == 0
        t2 = q.join(b"{}")
        assert t2.conn is conn and t2.number > t.number
        q.leave(t2)


def test_a_leave_is_sent_and_its_answer_read_later(pg_cluster, pg_url):
    """A ticket given back (a grant's last step) does not wait for the
    server's answer: with the queue's table locked by another session, the
    leave returns at once (it waited for the lock before), the ticket's
    lock is already let go (it is dead to other readers), and once the
    table is free the answer is read by the next use of the connection:
    the row is gone, the connection listens to nothing and is kept."""
    import psycopg

    s = schema_of(pg_url)
    with PgStore.open(pg_url, create=True) as st:
        q = st.tickets()
        t = q.join(b'{"name": "x"}')
        conn = t.conn
        with psycopg.connect(pg_cluster.conninfo()) as blocker:
            blocker.execute(f"LOCK TABLE {s}.waiters IN ACCESS EXCLUSIVE MODE")
            done = threading.Event()
            leaver = threading.Thread(target=lambda: (q.leave(t), done.set()), daemon=True)
            leaver.start()
            assert done.wait(BOUND), "the leave waited for the server's answer"
            assert t.conn is None and q._idle == [conn]
            # Let go before the DELETE, which waits for the table (the unlock is sent without
            # waiting, so the server may take a moment to act on it: pg_locks is read live).
            wait_for(lambda: blocker.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
                " AND objid = %s::bigint::oid", (t.number,)).fetchone()[0] == 0,
                "the ticket's lock let go while the table is locked", BOUND)
            blocker.rollback()
        assert q._answered(conn) is True
        assert names(pg_cluster, pg_url) == []
        assert conn.execute("SELECT pg_listening_channels()").fetchall() == []
        assert q.join(b'{"name": "y"}').conn is conn


def readable(watch) -> None:
    """Wait (bounded, not timed) until ``watch``'s connection has something to read."""
    import select
    r, _, _ = select.select(watch.fds(True), [], [], BOUND)
    assert r, "no notification came"


def test_a_change_wakes_only_the_waiter_it_can_let_on(pg_url):
    """Not the whole queue: a waiter standing behind a ticket is woken by
    that ticket leaving, not by appends to the log nor by other tickets
    leaving; a waiter that holders keep out is woken by appends. (Each
    check ends with a notification that must come: notifications of one
    server come in commit order, so one that should not have come would
    have come first.) Before, every ticket's connection listened to every
    append and every ticket leaving: 20 wake-ups per grant with 8 waiters,
    2 after."""
    led = Ledger.open(pg_url)
    try:
        with PgStore.open(pg_url) as st:
            q = st.tickets()
            t1, t2, t3 = q.join(b"{}"), q.join(b"{}"), q.join(b"{}")
            w1, w2, w3 = q.watch(t1), q.watch(t2), q.watch(t3)
            assert w1.follow(True, None) is False  # (the join's: the log)
            assert w2.follow(False, t1.number) and w3.follow(False, t2.number)
            led.register("a", [W("/pgw/wake")])  # an append
            readable(w1)
            assert w1.changes() == (True, [])
            q.leave(t1)
            readable(w2)
            assert w2.changes() == (False, [t1.number])  # not the append before it
            q.leave(t2)
            readable(w3)
            assert w3.changes() == (False, [t2.number])  # neither the append nor t1 leaving
            q.leave(t3)
    finally:
        led.close()


def test_the_queue_table_is_unlogged(pg_cluster, pg_url):
    """Tickets live no longer than their waiters' connections, so the queue
    is an UNLOGGED table: joining and leaving wait for no WAL flush (a
    leave was a durable commit on the critical path of every handover)."""
    s = schema_of(pg_url)
    Ledger.open(pg_url).close()
    assert pg_cluster.psql_execute(
        "SELECT c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'waiters'", s) == [("u",)]



@pytest.mark.parametrize("link", ["socket", "outliving"])
def test_a_waiter_behind_one_that_is_killed_is_woken_by_its_death(pg_cluster, pg_url, monkeypatch, link):
    """As on a directory (tests/test_wait.py): 'second' (a thread here)
    sleeps standing behind 'first' (a process of this host), which is
    SIGKILLed; the holder in the way then releases. The periodic look is an
    hour away, and an append wakes only a waiter that holders keep out:
    'second' is granted only if first's death woke it (its pidfd) and its
    look then found first's ticket dead. A backend outlives its client by
    moments (it ends once it reads the end of the connection): first's
    ticket lock may still be held at that look (on the unix socket 3 of 31
    runs timed out before). ``outliving``: first's connections pass a
    forwarder that keeps the server's side open after first dies, so its
    backend, and its ticket's lock, outlive it for the whole test (every
    run timed out before): a ticket of this host whose waiter is gone is
    dead, whatever its lock says, and removed for the waiters behind it."""
    from scopeledger._pgstore import PgWatch

    monkeypatch.setattr(PgWatch, "period", 3600.0)
    asleep = asleep_behind(monkeypatch)  # 'second' sleeps standing behind a ticket (after its last look)
    hole = Blackhole(pg_cluster.port)  # (nothing is cut: it only keeps the server's side open)
    first_url = pg_url
    if link == "outliving":
        first_url = f"postgresql://postgres@127.0.0.1:{hole.port}/postgres?sslmode=disable&schema={schema_of(pg_url)}"
    led = Ledger.open(pg_url)
    other = Ledger.open(pg_url)
    first = None
    try:
        h = other.register("holder", [W("/q/src")])
        first = waiter(first_url, "first", ["/q/src"])
        wait_for(lambda: names(pg_cluster, pg_url) == ["first"], "first's ticket", BOUND)
        t, out = in_thread(lambda: led.register("second", [W("/q/src")], wait=BOUND))
        assert asleep.wait(BOUND)  # in the queue, asleep behind 'first'
        first.kill()
        first.wait()
        other.release("holder", token=h.token)
        t.join(BOUND + 5)
        assert not t.is_alive()
        assert not isinstance(out[0], BaseException), out
        assert out[0].name == "second"
        # first's ticket removed (its backend may still live), second's left
        # (sent, not waited for: seen once the server has it)
        wait_for(lambda: names(pg_cluster, pg_url) == [], "first's ticket removed, second's left", BOUND)
    finally:
        if first is not None:
            kill_all([first])
        hole.close()
        other.close()
        led.close()


def test_a_ticket_whose_waiter_is_gone_is_removed_though_its_lock_is_held(pg_cluster, pg_url):
    """``PgTickets.gone``: the row of a ticket whose waiter was found gone
    is deleted while its lock is still held (its backend not ended yet), and
    the waiter standing behind it is notified, as when a ticket leaves: a
    waiter of any host behind it is woken, not only the one that saw the
    death. A read-only store deletes nothing."""
    s = schema_of(pg_url)
    with PgStore.open(pg_url, create=True) as st:
        q = st.tickets()
        t1, t2 = q.join(b"{}"), q.join(b"{}")
        w2 = q.watch(t2)
        assert w2.follow(False, t1.number)
        with PgStore.open(pg_url, readonly=True) as ro:
            assert ro.tickets().gone(t1.number, None) is True
        assert [n for n, _, _ in q.earlier(None)] == [t2.number, t1.number]
        assert q.gone(t1.number, None) is True
        readable(w2)
        assert w2.changes() == (False, [t1.number])
        assert pg_cluster.psql_execute(f"SELECT number FROM {s}.waiters ORDER BY number") == [(t2.number,)]
        held = pg_cluster.psql_execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
            " AND objid = (%s::bigint & 4294967295)::oid", t1.number)
        assert held == [(1,)]  # its lock is still held: only the row went
        q.leave(t1)  # (a waiter that was not gone after all leaves as ever: nothing to delete)
        q.leave(t2)
        # (a leave is sent, not waited for: the table is empty once the server has both)
        wait_for(lambda: pg_cluster.psql_execute(f"SELECT count(*) FROM {s}.waiters") == [(0,)],
                 "both tickets' rows gone", BOUND)


def test_a_waiter_whose_login_the_server_refuses_raises_at_once(pg_cluster, pg_url):
    """A waiter that cannot reach the server waits on (an outage, until its
    deadline), but a login the server refuses (28P01: the role's password
    changed while it waited, and its connections were ended) does not
    clear by waiting: raised at once, not tried again for ever (``wait=inf``:
    before, the waiter went on trying and the thread never ended), and its
    client session is lost at once, not at its lease's end."""
    import math

    from scopeledger import StoreUnavailable

    s = schema_of(pg_url)
    role, password = s + "_pw", "the-first-one"
    pg_cluster.password_role(role, password)
    Ledger.open(pg_url).close()
    documented_grants(pg_cluster, s, role, default_privileges=True)
    owner = Ledger.open(pg_url)
    # (its client session's lease an hour: a session that went on trying to
    # connect until its lease lapsed kept the waiter's step waiting that long)
    theirs = Ledger.open(pg_cluster.url(s, user=role, password=password), session_ttl=3600)
    try:
        h = owner.register("holder", [W("/q/login")])
        out: list[object] = []
        told = threading.Event()

        def waiter() -> None:
            try:
                out.append(theirs.register("w", [W("/q/login")], wait=math.inf, on_wait=lambda *a: told.set()))
            except BaseException as exc:  # noqa: BLE001 - reported below
                out.append(exc)
        t = threading.Thread(target=waiter, daemon=True)
        t.start()
        assert told.wait(BOUND)  # in the queue, behind 'holder'
        pg_cluster.psql_execute(f"ALTER ROLE {role} PASSWORD 'the-second-one'")
        pg_cluster.psql_execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
                                role)
        t.join(BOUND)
        assert not t.is_alive(), "the waiter went on trying a login the server refuses"
        assert isinstance(out[0], StoreUnavailable) and out[0].sqlstate == "28P01", out
        assert [x.name for x in owner.holders()] == ["holder"]  # nothing granted
        owner.release("holder", token=h.token)
    finally:
        theirs.close()
        owner.close()


def test_spawned_siblings_waiting_for_one_scope_are_served_in_the_order_of_their_tickets(
        pg_cluster, pg_url, tmp_path):
    """The fresh tester's reproducer on PostgreSQL (``test_async``'s
    scenario: one AsyncLedger, workers spawned with ``parent="pod"`` and
    ``wait=``): granted in the order of their tickets (before the fix:
    ``[3, 2, 1]`` there, every sibling skipping every earlier one)."""
    from test_async import spawned_siblings_take_turns

    order, granted = spawned_siblings_take_turns(pg_url, lambda: names(pg_cluster, pg_url), tmp_path)
    assert order == [f"pod/worker {i}" for i in range(1, 5)]
    assert granted == order
