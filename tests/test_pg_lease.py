"""Leases judged on the server's clock on PostgreSQL (issue 16;
``scopeledger/_lease.py``, ``PgStore.appended_ago``).

Real server (``tests/pgserver.py``: skipped without one, a failure with
``SCOPELEDGER_REQUIRE_POSTGRES=1``) and real processes: a holder is
``tests/pg_lease_holder.py``, which may write its lines as another host and
boot (a made-up machine id and boot id), whose boot-time clock a checker
here cannot read. The only waits are for a lease to really run out, on
conditions polled with generous bounds; what is asserted are outcomes (and
the server's own record of when lines were appended), not how fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading

import orjson
import pytest

import scopeledger._process as proc_mod
from scopeledger import LeaseExpired, Ledger, Liveness, ScopeConflict, ScopeRule, verify
from scopeledger._logstore import copy_log
from scopeledger._filestore import FileStore
from scopeledger._pgstore import PgStore

from pgserver import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "pg_lease_holder.py")
S = 10**9
BOUND = 90.0  # seconds: a generous bound on a lease running out on a loaded machine


def W(path: str) -> ScopeRule:
    return ScopeRule(path, "write")


def _schema(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


def _appended_at(pg_cluster, schema: str) -> dict[int, object]:
    """``{seq: events.at}`` as the server recorded it."""
    return dict(pg_cluster.psql_execute(f"SELECT seq, at FROM {schema}.events ORDER BY seq"))


def _lines(pg_cluster, schema: str) -> list[dict]:
    return [orjson.loads(bytes(b)) for (b,) in pg_cluster.psql_execute(
        f"SELECT line FROM {schema}.events ORDER BY seq")]


def _at_column(pg_cluster, schema: str) -> tuple | None:
    """``(has a default,)`` of ``events.at``, or None when there is no such column."""
    rows = pg_cluster.psql_execute(
        "SELECT a.atthasdef FROM pg_attribute a WHERE a.attrelid = to_regclass(%s)"
        " AND a.attname = 'at' AND NOT a.attisdropped", f"{schema}.events")
    return rows[0] if rows else None


class Holder:
    """``tests/pg_lease_holder.py``: NAME held on a ``lease_only`` lease of
    ``ttl`` seconds by a process of its own."""

    def __init__(self, url: str, name: str, path: str, ttl: float, other_host: bool) -> None:
        args = [sys.executable, HELPER, url, name, path, str(ttl)] + (["other-host"] if other_host else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.reports: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: self._first("ready") or self.proc.poll() is not None, "the holder registered", bound=BOUND)
        ready = self._first("ready")
        if ready is None:
            pytest.fail(f"the holder died: {self.end()}")
        self.ready: dict = ready
        self.token, self.seq = ready["token"], ready["seq"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.reports.append(orjson.loads(raw))

    def _first(self, event: str) -> dict | None:
        return next((r for r in list(self.reports) if r["event"] == event), None)

    def ask(self, command: str) -> dict:
        answer = command.split()[0]
        seen = len([r for r in list(self.reports) if r["event"] == answer])
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return wait_for(lambda: ([r for r in list(self.reports) if r["event"] == answer][seen:] or [None])[0],
                        f"the holder's answer to {command!r}", bound=BOUND)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(60)

    def end(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(60)
        self._reader.join(30)
        return self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""


@pytest.fixture
def holder():
    made: list[Holder] = []

    def start(url: str, name: str, path: str, ttl: float, other_host: bool = True) -> Holder:
        h = Holder(url, name, path, ttl, other_host)
        made.append(h)
        return h

    yield start
    for h in made:
        err = h.end()
        print(h.reports[-5:], err[-2000:])  # shown when a test fails


def _reclaim_until(led: Ledger, name: str, what: str):
    """Poll ``reclaim()`` until it reclaims ``name``; its :class:`Reclaimed`."""
    def once():
        return [r for r in led.reclaim().reclaimed if r.name == name]
    return wait_for(once, what, bound=BOUND, every=0.05)[0]


# -- the server's clock judges ----------------------------------------------------------

def test_a_lease_only_holder_of_another_host_that_stops_renewing_is_reclaimed_on_the_servers_clock(
        pg_cluster, pg_url, holder):
    schema = _schema(pg_url)
    with Ledger.open(pg_url) as led:
        h = holder(pg_url, "agent", "/work/agent", 1)
        assert h.ready["host"] != proc_mod.host_id() and h.ready["boot"] != proc_mod.boot_id()
        h.kill()  # it will never renew
        v = led.liveness()["agent"]
        assert v.liveness in (Liveness.ALIVE, Liveness.LEASE_EXPIRED) and "server's clock" in v.why, v
        r = _reclaim_until(led, "agent", "the other host's unrenewed lease reclaimed")
        assert r.reason == "lease_expired" and "by the server's clock" in r.why, r
        assert "agent" not in {a.name for a in led.holders()}
        # By the server's own record: reclaimed only once ttl + grace had passed
        # since it appended the grant.
        at = _appended_at(pg_cluster, schema)
        grant = h.seq
        reclaim = next(ev["seq"] for ev in _lines(pg_cluster, schema) if ev["type"] == "reclaimed")
        assert (at[reclaim] - at[grant]).total_seconds() > 1 + 1  # ttl 1 s + grace 1 s
        # The grant on a place held by nobody else now.
        assert led.register("next", [W("/work/agent")]).name == "next"
    assert verify(pg_url).ok


def test_a_lease_only_holder_of_another_host_that_keeps_renewing_is_kept_then_reclaimed_once_killed(
        pg_cluster, pg_url, holder):
    schema = _schema(pg_url)
    ttl = 3  # renewed every second; reclaimable 4 s after a renewal
    with Ledger.open(pg_url) as led:
        h = holder(pg_url, "agent", "/work/agent", ttl)
        h.ask("keep")

        def outlived() -> bool:
            # The server has appended a renewal later than the grant's ttl + grace.
            # (the lines first: a renewal appended between the two reads is then in both)
            renewals = [ev["seq"] for ev in _lines(pg_cluster, schema) if ev["type"] == "renewed"]
            at = _appended_at(pg_cluster, schema)
            return any((at[q] - at[h.seq]).total_seconds() > ttl + 1 for q in renewals)
        wait_for(outlived, "the holder renewed past its first ttl + grace", bound=BOUND, every=0.2)
        report = led.reclaim()
        assert report.reclaimed == () and dict(report.kept)["agent"].liveness is Liveness.ALIVE, report
        assert "server's clock" in dict(report.kept)["agent"].why
        assert h.ask("check")["ok"] is True
        with pytest.raises(ScopeConflict):
            led.register("intruder", [W("/work/agent")])
        h.kill()
        r = _reclaim_until(led, "agent", "the holder's lease reclaimed once it stopped renewing")
        assert r.reason == "lease_expired"
        assert led.register("intruder", [W("/work/agent")]).name == "intruder"


def test_the_holders_own_check_is_false_before_anyone_may_reclaim_it(pg_url, holder):
    with Ledger.open(pg_url) as led:
        h = holder(pg_url, "agent", "/work/agent", 1)  # never renewed
        wait_for(lambda: led.liveness()["agent"].liveness is Liveness.LEASE_EXPIRED,
                 "the lease expired on the server's clock", bound=BOUND, every=0.05)
        # The moment others may reclaim it, the holder's own deadline (ttl after
        # the boot-time reading its grant recorded, taken before the grant was
        # sent) has passed, on the one boot-time clock of this machine...
        assert proc_mod.boottime_ns() > h.ready["deadline_boottime"]
        # ...so its own check, asked now, says so.
        assert h.ask("check")["ok"] is False
        # Another process's check, which cannot read the holder's boot-time
        # clock, asks the server's: past ttl, so false too.
        assert led.check("agent", h.token) is False
        assert _reclaim_until(led, "agent", "the expired lease reclaimed").reason == "lease_expired"


def test_the_holder_counts_its_own_clock_and_others_the_servers(pg_url, holder):
    # A long ttl and the holder's boot-time clock moved past it by hand: its
    # own check is false at once, while on the server's clock the lease has
    # 30 s to run, and a renewal is taken (not refused as expired).
    with Ledger.open(pg_url) as led:
        h = holder(pg_url, "agent", "/work/agent", 30)
        assert h.ask("check")["ok"] is True
        h.ask("skew 30.001")
        assert h.ask("check")["ok"] is False
        v = led.liveness()["agent"]
        assert v.liveness is Liveness.ALIVE and "by the server's clock" in v.why, v
        assert led.check("agent", h.token) is True  # another host's view: the server's clock, ttl not over
        assert led.reclaim().reclaimed == ()
        renewed = h.ask("renew")
        assert "error" not in renewed, renewed
        assert h.ask("check")["ok"] is True  # counted again from its (moved) clock's new reading


def test_a_renewal_past_ttl_and_grace_on_the_servers_clock_records_the_reclaim(pg_url, holder):
    with Ledger.open(pg_url) as led:
        h = holder(pg_url, "agent", "/work/agent", 1)
        wait_for(lambda: led.liveness()["agent"].liveness is Liveness.LEASE_EXPIRED,
                 "the lease expired on the server's clock", bound=BOUND, every=0.05)
        # Renewed from here (another host and boot than its grant's): refused
        # by the server's clock, the reclaim recorded instead.
        with pytest.raises(LeaseExpired, match="server's clock"):
            led.renew("agent", h.token)
        assert "agent" not in {a.name for a in led.holders()}
        assert [ev.data["reason"] for ev in led.events(types=("reclaimed",))] == ["lease_expired"]


def count_clock_questions(led: Ledger, monkeypatch) -> list[list[int]]:
    """The seqs of each question the ledger asks the server's clock
    (``appended_ago``), appended as it asks."""
    store = led._log
    calls: list[list[int]] = []
    real = store.appended_ago

    def counted(seqs):
        seqs = list(seqs)
        calls.append(seqs)
        return real(seqs)
    monkeypatch.setattr(store, "appended_ago", counted)
    return calls


def test_a_reclaim_asks_the_servers_clock_once_per_round_for_all_holders(pg_url, monkeypatch):
    with Ledger.open(pg_url) as led:
        names = [f"h{i}" for i in range(6)]
        seq_of = {n: led.register(n, [W(f"/work/{n}")], ttl=1, lease_only=True).lease.renewed_seq for n in names}
        calls = count_clock_questions(led, monkeypatch)
        assert set(led.liveness()) == set(names)
        assert len(calls) == 1 and len(calls[0]) == 6
        calls.clear()
        # Made to look like another boot's, so that only the server's clock can
        # judge them (the boot-time clock would say unknown).
        monkeypatch.setattr(proc_mod, "_boot_id_cache", ["22222222-2222-4222-8222-222222222222"])

        def all_reclaimed():
            live = {a.lease.renewed_seq for a in led.holders()}
            calls.clear()
            reclaimed = {r.name for r in led.reclaim().reclaimed}
            # One question for every live holder; one more, under the lock,
            # for the suspects (the expired ones) only.
            assert set(calls[0]) == live, calls
            if reclaimed:
                assert len(calls) == 2 and {seq_of[n] for n in reclaimed} == set(calls[1]), calls
            else:
                assert len(calls) == 1, calls
            return not led.holders()
        wait_for(all_reclaimed, "six expired leases reclaimed", bound=BOUND, every=0.1)
        assert {ev.data["reason"] for ev in led.events(types=("reclaimed",))} == {"lease_expired"}


def test_a_renewal_in_time_asks_the_server_nothing_and_one_past_its_own_ttl_asks_it(pg_url, monkeypatch):
    boot = [1000 * S]
    with Ledger.open(pg_url, boottime=lambda: boot[0]) as led:
        a = led.register("agent", [W("/work/agent")], ttl=10, lease_only=True)
        calls = count_clock_questions(led, monkeypatch)
        # Within its ttl on the clock of the boot that renewed it (this one):
        # within ttl + grace on the server's too, so the renewal is one append.
        boot[0] += 9 * S
        r = led.renew("agent", a.token)
        assert calls == []
        # Past its ttl on that clock (moved by hand), past ttl + grace even:
        # the server's clock decides, which has seen moments pass.
        boot[0] += 12 * S
        r2 = led.renew("agent", a.token)
        assert calls == [[r.lease.renewed_seq]] and r2.lease.renewed_seq > r.lease.renewed_seq


# -- the column, its migration, and the append paths ------------------------------------

def test_every_append_path_records_the_servers_time_without_a_round_trip_more(pg_cluster, pg_url, tmp_path):
    schema = _schema(pg_url)
    with Ledger.open(pg_url) as led:
        for i in range(5):  # one process alone: its changes go through try_append
            a = led.register(f"j{i}", [W(f"/work/j{i}")])
            led.release(a.name, a.token)
    store = PgStore.open(pg_url)
    try:
        head = store.head()
        first = head + 1
        line = orjson.dumps  # a line as the server's backstop wants it: its seq and ts
        assert store.try_append([(7, line({"seq": first, "ts": 7}))], first)
        assert store.try_append([(8, line({"seq": first + 1, "ts": 8})), (9, line({"seq": first + 2, "ts": 9}))],
                                first + 1)
        with store.locked(first + 2) as missed:
            assert missed == []
            store.append([(10, line({"seq": first + 3, "ts": 10}))], first + 3)
        ages = store.appended_ago(range(1, first + 4))
        assert set(ages) == set(range(1, first + 4)) and all(type(v) is int and v >= 0 for v in ages.values())
        assert ages[first + 3] <= ages[1]  # appended later: younger
        assert store.appended_ago([first + 99]) == {} and store.appended_ago([]) == {}
        with pytest.raises(ValueError, match="seq"):
            store.appended_ago([0])
    finally:
        store.close()
    assert not [q for q, at in _appended_at(pg_cluster, schema).items() if at is None]
    # A ledger copied in (ledger import): every line gets the server's time of the copy.
    src = tmp_path / "src"
    with Ledger.open(src) as on_file:
        on_file.register("f", [W("/work/f")], ttl=5, lease_only=True)
    dest = pg_url.replace(schema, schema + "_c")
    try:
        fs = FileStore.open(str(src), readonly=True)
        try:
            with PgStore.open(dest, create=True) as pg:
                assert copy_log(fs, pg) == 1
        finally:
            fs.close()
        assert not [q for q, at in _appended_at(pg_cluster, schema + "_c").items() if at is None]
        with Ledger.open(dest) as copied:
            assert "by the server's clock" in copied.liveness()["f"].why
    finally:
        pg_cluster.psql_execute(f"DROP SCHEMA IF EXISTS {schema}_c CASCADE")


def test_a_ledger_made_before_the_column_works_and_falls_back_to_the_boot_clock(pg_cluster, pg_url, caplog):
    schema = _schema(pg_url)
    boot = [1000 * S]
    with Ledger.open(pg_url, boottime=lambda: boot[0]) as led:
        old = led.register("old", [W("/work/old")], ttl=10, lease_only=True)
    # As the previous version made it: no column (so the rows have no server time).
    pg_cluster.psql_execute(f"ALTER TABLE {schema}.events DROP COLUMN at")
    assert _at_column(pg_cluster, schema) is None

    # Read-only: nothing changed; the lease is judged on the boot-time clock.
    with Ledger.open(pg_url, readonly=True, boottime=lambda: boot[0]) as reader:
        assert reader._log.appended_ago([old.token]) == {}
        assert reader.liveness()["old"].liveness is Liveness.ALIVE
        boot[0] += 12 * S  # past ttl + grace on the boot-time clock (the server's: moments)
        v = reader.liveness()["old"]
        assert v.liveness is Liveness.LEASE_EXPIRED and "server" not in v.why, v
        boot[0] -= 12 * S
    assert _at_column(pg_cluster, schema) is None

    # A writable open adds it (with its default); the old row keeps NULL:
    # still judged on the boot-time clock, until a renewal the server times.
    with Ledger.open(pg_url, boottime=lambda: boot[0]) as led:
        assert _at_column(pg_cluster, schema) == (True,)
        assert _appended_at(pg_cluster, schema)[old.token] is None
        boot[0] += 12 * S
        assert led.liveness()["old"].liveness is Liveness.LEASE_EXPIRED
        boot[0] -= 12 * S
        renewed = led.renew("old", old.token)
        boot[0] += 1000 * S  # the boot-time clock no longer decides
        v = led.liveness()["old"]
        assert v.liveness is Liveness.ALIVE and "by the server's clock" in v.why, v
        assert _appended_at(pg_cluster, schema)[renewed.lease.renewed_seq] is not None
        # Appends go on (locked and one-round-trip paths).
        for i in range(3):
            a = led.register(f"n{i}", [W(f"/work/n{i}")])
            led.release(a.name, a.token)
    assert verify(pg_url).ok

    # Concurrent writable opens of a ledger without it: serialised, all open.
    pg_cluster.psql_execute(f"ALTER TABLE {schema}.events DROP COLUMN at")
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PgStore.open(pg_url).close()
        except BaseException as exc:  # noqa: BLE001 - reported
            errors.append(exc)
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and _at_column(pg_cluster, schema) == (True,)

    # A role that may write but not alter the table: it opens with a
    # warning, and works without the column.
    pg_cluster.psql_execute(f"ALTER TABLE {schema}.events DROP COLUMN at")
    role = schema + "_w"
    pg_cluster.psql_execute(f"CREATE ROLE {role} LOGIN")
    try:
        pg_cluster.psql_execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        pg_cluster.psql_execute(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {schema} TO {role}")
        with caplog.at_level(logging.WARNING, logger="scopeledger"):
            store = PgStore.open(pg_cluster.url(schema, user=role))
        try:
            assert "could not add the server's time" in caplog.text
            assert store.appended_ago([1]) == {}
            head = store.head()
            with store.locked(head) as missed:
                assert missed == []
                store.append([(5, orjson.dumps({"seq": head + 1, "ts": 5}))], head + 1)
        finally:
            store.close()
        assert _at_column(pg_cluster, schema) is None
    finally:
        pg_cluster.psql_execute(f"DROP OWNED BY {role}")
        pg_cluster.psql_execute(f"DROP ROLE {role}")
