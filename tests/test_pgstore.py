"""The PostgreSQL log store (``scopeledger/_pgstore.py``) against a real server.

Every test runs on the worker's throwaway cluster (``tests/pgserver.py``) in a
schema of its own. Faults are real: connections cut by a TCP proxy at a chosen
message, backends ended with ``pg_terminate_backend``, clients killed with
SIGKILL, the server restarted with ``pg_ctl restart -m immediate``. Verdicts
wait on conditions with generous bounds and never depend on speed; the figures
some tests print (``-s``) are measurements, not assertions.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import statistics
import threading
import time

import orjson
import psycopg
import pytest

from scopeledger import CorruptLedger, LedgerError, LockTimeout, NoLedger, ReadOnlyLedger
from scopeledger._events import line_hash
from scopeledger._snapshots import SnapshotInvalid
from scopeledger._pgstore import (
    STORE_FORMAT,
    InDoubt,
    InvalidLedgerURL,
    NotRecorded,
    PgStore,
    SessionLost,
    StoreError,
    StoreUnavailable,
    parse_url,
    redact,
    without_password,
)

import pgserver
from pgserver import wait_for
from tcpforward import Blackhole, Forwarder

FORK = multiprocessing.get_context("fork")


def line(seq: int, ts: int | None = None, **payload: object) -> bytes:
    return orjson.dumps({"v": 2, "seq": seq, "ts": time.time_ns() if ts is None else ts, **payload})


def E(lines: list[bytes]) -> list[tuple[int, bytes]]:
    """Lines as the entries append takes: ``(ts, line)``, ts read from the line."""
    return [(orjson.loads(x)["ts"], x) for x in lines]


def append(store: PgStore, *payloads: dict, after: int | None = None, timeout: float = 60) -> int:
    """Append one line per payload; returns the first seq."""
    seen = store.head() if after is None else after
    with store.locked(seen, timeout) as missed:
        first = seen + len(missed) + 1
        store.append(E([line(first + i, **p) for i, p in enumerate(payloads)]), first)
    return first


@pytest.fixture
def store(pg_url):
    st = PgStore.open(pg_url, create=True)
    yield st
    st.close()


# -- URLs ----------------------------------------------------------------------

def test_the_schema_parameter_is_taken_out_and_the_rest_goes_to_libpq():
    loc = parse_url("postgresql://u@h:5433/db?sslmode=disable&schema=team1&application_name=x")
    assert loc.schema == "team1"
    assert loc.conninfo.startswith("postgresql://u@h:5433/db?sslmode=disable&application_name=x")
    assert "schema" not in loc.conninfo
    assert "connect_timeout=10" in loc.conninfo  # a default, unless the URL says
    assert "connect_timeout=3" in parse_url("postgres://h/db?connect_timeout=3").conninfo
    assert parse_url("postgresql:///db").schema == "scopeledger"
    assert parse_url("postgresql://%2Ftmp%2Fx/db?schema=a_1").conninfo.startswith("postgresql://%2Ftmp%2Fx/db")


@pytest.mark.parametrize("url", [
    "/var/lib/ledger", "mysql://h/db", "postgresql://h/db?schema=Team", "postgresql://h/db?schema=1a",
    "postgresql://h/db?schema=a-b", "postgresql://h/db?schema=" + "a" * 49,
    "postgresql://h/db?schema=a&schema=b", "postgresql://h/db?schema=a;drop",
    "postgresql://h/db?nosuchoption=1", "postgresql://[::1/db", "postgresql://h/db?port",
])
def test_bad_urls_are_refused_with_a_typed_error(url):
    with pytest.raises(InvalidLedgerURL) as err:
        parse_url(url)
    assert isinstance(err.value, ValueError) and isinstance(err.value, LedgerError)


def test_passwords_are_never_shown():
    url = "postgresql://alice:s3cr%40t@127.0.0.1:1/db?password=other&schema=x&sslmode=disable"
    assert redact(url) == "postgresql://alice:***@127.0.0.1:1/db?password=***&schema=x&sslmode=disable"
    with pytest.raises(StoreUnavailable) as err:  # nothing listens on port 1
        PgStore.open(url)
    text = str(err.value) + repr(err.value.__dict__)
    assert "s3cr" not in text and "other" not in text and "***" in text
    for bad in ("postgresql://alice:s3cr3t@h/db?schema=BAD", "postgresql://alice:s3cr3t@[::1/db",
                "postgresql://h/db?password=s3cr3t&port"):
        with pytest.raises(InvalidLedgerURL) as err:
            parse_url(bad)
        assert "s3cr3t" not in str(err.value), err.value


@pytest.mark.parametrize("url, plain, password", [
    ("postgresql://alice:s3cr%40t@h:5/db?schema=x&sslmode=disable", "postgresql://alice@h:5/db?schema=x&sslmode=disable",
     "s3cr@t"),
    ("postgresql://:pw@h/db?schema=x", "postgresql://h/db?schema=x", "pw"),
    ("postgresql://alice@h/db?password=p%26w&schema=x", "postgresql://alice@h/db?schema=x", "p&w"),
    ("postgresql://alice@h/db?password=pw", "postgresql://alice@h/db", "pw"),
    ("postgresql://alice:pa?ss@h/db?schema=x", "postgresql://alice@h/db?schema=x", "pa?ss"),
    ("postgres://alice@h/db?schema=x", "postgres://alice@h/db?schema=x", None),
    ("postgresql:///db?host=/run/pg&schema=x", "postgresql:///db?host=/run/pg&schema=x", None),
])
def test_what_a_child_is_given_is_the_url_without_its_password_and_the_password(url, plain, password):
    """``ledger run`` and ``spawn`` put the URL into the child's environment (tools print
    it) without the password, and the password as libpq reads it apart (PGPASSWORD)."""
    assert without_password(url) == plain
    loc = parse_url(url)
    assert (loc.plain, loc.password) == (plain, password)
    assert psycopg.conninfo.conninfo_to_dict(parse_url(plain).conninfo).get("password") is None


@pytest.mark.parametrize("url, shown, secret", [
    # libpq ends the user info at the first '/', so '?', '#', '&' before it are the password's.
    ("postgresql://alice:pa?ss@127.0.0.1:1/db?schema=x", "postgresql://alice:***@127.0.0.1:1/db?schema=x", "pa?ss"),
    ("postgresql://alice:pa#ss@127.0.0.1:1/db", "postgresql://alice:***@127.0.0.1:1/db", "pa#ss"),
    ("postgresql://alice:pa?schema=y&ss@127.0.0.1:1/db?schema=x", "postgresql://alice:***@127.0.0.1:1/db?schema=x",
     "pa?schema=y&ss"),
    # Unescaped '@' or '/' in a password: libpq misreads them (host 'ss@h', port 'p'); never shown, refused.
    ("postgresql://alice:p@ss@127.0.0.1:1/db", "postgresql://alice:***@127.0.0.1:1/db", "p@ss"),
    ("postgresql://alice:p/ss@127.0.0.1:1/db?schema=x", "postgresql://alice:***@127.0.0.1:1/db?schema=x", "p/ss"),
])
def test_a_password_holding_url_delimiters_is_never_shown(url, shown, secret):
    """Found in review: redact() split the URL by RFC 3986 while libpq reads
    the user info up to the first '/', so these passwords were shown whole
    (and the schema and connect_timeout went into the database name)."""
    assert redact(url) == shown
    try:
        loc = parse_url(url)
    except InvalidLedgerURL as exc:  # the two forms libpq misreads
        assert "@" in secret or "/" in secret
        assert shown in str(exc) and secret not in str(exc) and "percent-encoded" in str(exc)
        return
    params = psycopg.conninfo.conninfo_to_dict(loc.conninfo)
    assert (params["password"], params["host"], params["dbname"]) == (secret, "127.0.0.1", "db")
    assert loc.schema == ("x" if "schema=x" in shown else "scopeledger") and loc.shown == shown
    with pytest.raises(StoreUnavailable) as err:  # nothing listens on port 1
        PgStore.open(url)
    assert secret not in str(err.value) and shown in str(err.value)


def test_a_short_password_is_masked_where_it_stands_as_one_not_in_every_word():
    """A fresh tester's finding: the password ``p`` was replaced wherever the letter
    stood, ``socket "/tm***/fresh27/***gsock/..." failed: FATAL:  ***assword
    authentication failed``. A short password is masked where it stands as a password
    in an echoed URL or conninfo; one of 8 characters or more wherever it appears."""
    from scopeledger._pgstore import _scrub

    url = "postgresql://u:p@/postgres?host=/tmp/x/pgsock&port=5432&schema=pw"
    said = ('connection to server on socket "/tmp/x/pgsock/.s.PGSQL.5432" failed: FATAL:  '
            'password authentication failed for user "u" (SQLSTATE 28P01)')
    assert _scrub(said, url) == said
    assert _scrub('invalid URI "postgresql://u:p@/postgres"', url) == 'invalid URI "postgresql://u:***@/postgres"'
    assert _scrub("host=h password=p dbname=x", url) == "host=h password=*** dbname=x"
    assert _scrub("bad: password=p&port=1", url) == "bad: password=***&port=1"
    assert _scrub('a value "p" refused', url) == 'a value "***" refused'
    assert _scrub("p", url) == "***"
    long_pw = "postgresql://u:s3cr3tpw@h/db"
    assert _scrub("x s3cr3tpw y xs3cr3tpwx", long_pw) == "x *** y x***x"


@pytest.mark.parametrize("conninfo", ["host=h password=s3cret dbname=x", "host=h PASSWORD = 's3cret x' dbname=x"])
def test_a_keyword_value_conninfo_is_refused_without_showing_its_password(conninfo):
    """Found in review: libpq's keyword/value form given instead of a URL was
    refused with the text quoted whole, password and all."""
    with pytest.raises(InvalidLedgerURL) as err:
        PgStore.open(conninfo)
    assert "s3cret" not in str(err.value) and "***" in str(err.value)


def test_the_stores_errors_are_the_public_ones():
    """Found in review: the store defined its own classes under the names of
    scopeledger's public ones (in _errors since the store interface landed),
    so ``except scopeledger.NotRecorded`` did not catch this store's."""
    import scopeledger
    from scopeledger import _pgstore
    for name in ("InvalidLedgerURL", "StoreError", "StoreUnavailable", "NotRecorded", "InDoubt", "SessionLost"):
        assert getattr(_pgstore, name) is getattr(scopeledger, name), name
    with pytest.raises(scopeledger.InvalidLedgerURL):
        PgStore.open("postgresql://h/db?schema=BAD")
    with pytest.raises(scopeledger.StoreUnavailable):  # nothing listens on port 1
        PgStore.open("postgresql://u@127.0.0.1:1/db")


def test_a_missing_schema_is_no_ledger_and_a_foreign_one_is_refused(pg_cluster, pg_url):
    with pytest.raises(NoLedger):
        PgStore.open(pg_url)
    schema = parse_url(pg_url).schema
    pg_cluster.psql_execute(f"CREATE SCHEMA {schema}")
    pg_cluster.psql_execute(f"CREATE TABLE {schema}.events (x int)")
    with pytest.raises(CorruptLedger, match="not a scopeledger ledger"):
        PgStore.open(pg_url, create=True)
    assert pg_cluster.psql_execute(f"SELECT count(*) FROM {schema}.events") == [(0,)]


def test_a_newer_store_format_says_upgrade(pg_cluster, store):
    pg_cluster.psql_execute(f"UPDATE {store.schema}.meta SET format_version = {STORE_FORMAT + 1}")
    with pytest.raises(CorruptLedger, match="upgrade scopeledger"):
        PgStore.open(pg_cluster.url(store.schema))


def _create_and_append(url, q):
    try:
        with PgStore.open(url, create=True) as st:
            append(st, {"who": os.getpid()})
        q.put("ok")
    except BaseException as exc:  # reported to the parent
        q.put(repr(exc))


def test_processes_creating_one_ledger_together_all_open_it(pg_url):
    q = FORK.Queue()
    procs = [FORK.Process(target=_create_and_append, args=(pg_url, q)) for _ in range(6)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert results == ["ok"] * 6
    with PgStore.open(pg_url) as st:
        assert [s for s, _ in st.read_after(0)] == [1, 2, 3, 4, 5, 6]


# -- lines -----------------------------------------------------------------------

def test_lines_come_back_byte_for_byte(store, pg_cluster):
    odd = [
        b'{"v": 2, "seq": 1, "ts": 5,  "x": "spaces and key order as written"}',
        orjson.dumps({"seq": 2, "v": 2, "ts": 6, "x": "\u00e9\u4e2d\U0001f600 \\ \" \u0000 \t"}),
        b'{"v":2,"seq":3,"ts":7,"x":"\\u00e9 escaped, not raw"}',
        orjson.dumps({"v": 2, "seq": 4, "ts": 8, "big": "x" * (1 << 20)}),
        b'{"v":1,"seq":5,"ts":9,"actor":{"pid":1,"start":1.5,"boot":"b"},"prev":"00","type":"released"}',
    ]
    with store.locked(0, 10) as missed:
        assert missed == []
        store.append(E(odd[:2]), 1)
    with store.locked(2, 10) as missed:
        assert missed == []
        store.append(E(odd[2:]), 3)
    assert store.read_after(0) == list(enumerate(odd, 1))
    assert store.read_after(2, limit=2) == [(3, odd[2]), (4, odd[3])]
    assert store.read_after(5) == []
    with PgStore.open(pg_cluster.url(store.schema)) as again:  # another connection, same bytes
        assert again.read_after(0) == list(enumerate(odd, 1))
        with again.locked(3, 10) as missed:
            assert missed == [(4, odd[3]), (5, odd[4])]


def test_a_bad_append_sends_nothing(store):
    append(store, {})
    with store.locked(1, 10):
        with pytest.raises(ValueError, match="not the next seq"):
            store.append(E([line(3)]), 3)
        with pytest.raises(ValueError, match="nothing to append"):
            store.append(E([]), 2)
        with pytest.raises(ValueError, match="newline"):
            store.append(E([line(2) + b"\n"]), 2)
        with pytest.raises(ValueError, match="ts"):
            store.append([(1.5, line(2))], 2)
    with pytest.raises(RuntimeError, match="outside locked"):
        store.append(E([line(2)]), 2)
    # What only the server checks: a line that does not say its seq or its ts.
    for entries in ([(7, line(3, ts=7))], [(8, line(2, ts=7))], [(7, b"[1,2]")]):
        with store.locked(1, 10):
            with pytest.raises(StoreError, match="SQLSTATE 23000|SQLSTATE 22P02"):
                store.append(entries, 2)
    assert [s for s, _ in store.read_after(0)] == [1]
    append(store, {})  # the lock was released each time
    assert store.head() == 2


def test_seeing_more_than_the_log_holds_is_corruption(store):
    append(store, {})
    with pytest.raises(CorruptLedger, match="restored from an older copy"):
        with store.locked(5, 10):
            pass
    assert append(store, {}) == 2


def _insert(schema: str, seq: int, ts: int = 1) -> str:
    """SQL inserting a well-formed line for ``seq`` (what only the seq check can refuse)."""
    return (f"INSERT INTO {schema}.events (seq, ts, line) VALUES ({seq}, {ts}, "
            f"convert_to('{{\"seq\": {seq}, \"ts\": {ts}}}', 'UTF8'))")


def test_the_server_refuses_a_wrong_seq_update_delete_and_truncate(store, pg_cluster):
    append(store, {}, {}, {})
    s = store.schema
    before = store.read_after(0)
    refused = [
        _insert(s, 5),    # a gap
        _insert(s, 3),    # taken
        _insert(s, 0),
        f"UPDATE {s}.events SET line = 'x' WHERE seq = 2",
        f"UPDATE {s}.events SET ts = 0 WHERE seq = 2",
        f"DELETE FROM {s}.events WHERE seq = 3",
        f"TRUNCATE {s}.events CASCADE",
        f"INSERT INTO {s}.events (seq, ts, line) SELECT g, 1, convert_to('{{\"seq\": ' || g || ', \"ts\": 1}}',"
        " 'UTF8') FROM generate_series(4, 6) g ORDER BY g DESC",
    ]
    for sql in refused:
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="scopeledger: "):
            pg_cluster.psql_execute(sql)
    assert store.read_after(0) == before
    # The next seq goes in, even without the advisory lock (the trigger is the backstop).
    pg_cluster.psql_execute(_insert(s, 4))
    assert store.head() == 4


def test_a_refusal_by_the_server_is_a_store_error_and_releases_the_lock(store, pg_cluster):
    append(store, {})
    pg_cluster.psql_execute(f"ALTER TABLE {store.schema}.events ADD CHECK (length(line) < 100)")
    with store.locked(1, 10):
        with pytest.raises(StoreError, match="SQLSTATE 23514"):
            store.append(E([line(2, pad="y" * 200)]), 2)
    assert store.head() == 1
    assert append(store, {}) == 2


def test_ts_is_the_writers_own_reading_and_time_travel_lands_as_on_a_file(store, pg_cluster):
    with store.locked(0, 10):  # a clock ahead at seq 2, stepping back at seq 3
        store.append(E([line(1, ts=100), line(2, ts=300), line(3, ts=200), line(4, ts=400)]), 1)
    # Stored as written, never clamped (v2); the server keeps the running maximum beside it.
    assert pg_cluster.psql_execute(f"SELECT seq, ts, ts_max FROM {store.schema}.events ORDER BY seq") == \
        [(1, 100, 100), (2, 300, 300), (3, 200, 300), (4, 400, 400)]
    probes = (50, 100, 199, 200, 250, 299, 300, 399, 400, 10**18)
    # Time travel: the last seq stamped at or before the time; seq 2 is crossed between 200 and 299.
    assert [store.time_point(t)[0] for t in probes] == [0, 1, 1, 3, 3, 3, 3, 3, 4, 4]
    # seq_at (the store interface): the last seq before the first line stamped later.
    assert [store.seq_at(t) for t in probes] == [0, 1, 1, 1, 1, 1, 3, 3, 4, 4]
    assert store.time_point(250) == (3, 1, [(2, line(2, ts=300))])
    assert store.time_point(250, 0) == (3, 1, [])
    assert store.time_point(199) == (1, 0, []) and store.time_point(300) == (3, 0, [])
    assert store.read_after(2, 1) == [(3, line(3, ts=200))]  # the line keeps its own ts


def test_time_points_are_the_file_ledgers_own_answers(store, tmp_path):
    """The same lines on a file (written by real Ledger writers with skewed
    clocks) and in the table give the same time points, at every stamp and
    between them."""
    from scopeledger import Ledger, ScopeRule

    d = str(tmp_path / "l")
    base = time.time_ns()
    skews = [0, 10**12, -(10**12), 0, 5 * 10**11, 0, -(10**9), 3 * 10**12, 0, 0]
    writers = [Ledger.open(d, clock=lambda k=k: base + k * 10**6 + skews[k]) for k in range(len(skews))]
    for k, w in enumerate(writers):
        w.register(f"h{k}", [ScopeRule(f"/x/{k}", "write")])
    lines = open(os.path.join(d, "events.jsonl"), "rb").read().splitlines()
    with store.locked(0, 10):
        store.append(E(lines), 1)
    stamps = sorted({orjson.loads(x)["ts"] for x in lines})
    probes = sorted({t + d for t in stamps for d in (-1, 0, 1)} | {0, 2**62})
    ledger = writers[0]
    for t in probes:
        point = ledger.time_point(t)
        got = store.time_point(t)
        assert (got[0], got[1], [q for q, _ in got[2]]) == \
            (point.seq, point.crossed_count, [e.seq for e in point.crossed]), t


def test_a_line_that_does_not_say_its_seq_and_ts_is_refused_by_the_server(store, pg_cluster):
    append(store, {})
    s = store.schema
    for bad in ("'{\"seq\": 3, \"ts\": 7}'", "'{\"seq\": 2, \"ts\": 8}'", "'{\"seq\": 2.0, \"ts\": 7}'",
                "'{\"ts\": 7}'", "'[2, 7]'", "'not json'", "'\\xff'::bytea"):
        with pytest.raises(psycopg.Error):
            pg_cluster.psql_execute(f"INSERT INTO {s}.events (seq, ts, line) VALUES (2, 7, {bad}::bytea)")
    # A client cannot choose the running maximum either: the server computes it.
    pg_cluster.psql_execute(_insert(s, 2, 7).replace("(seq, ts, line) VALUES (2, 7,",
                                                     "(seq, ts, ts_max, line) VALUES (2, 7, 99999,"))
    assert pg_cluster.psql_execute(f"SELECT ts, ts_max FROM {s}.events WHERE seq = 2")[0][1] == \
        max(7, pg_cluster.psql_execute(f"SELECT ts FROM {s}.events WHERE seq = 1")[0][0])


def test_synchronous_commit_is_forced_on_and_the_server_refuses_appends_without_it(pg_cluster, pg_url):
    schema = parse_url(pg_url).schema
    PgStore.open(pg_url, create=True).close()
    # Asked for asynchronous commit three ways: by the URL, the role and the database.
    pg_cluster.psql_execute("ALTER ROLE postgres IN DATABASE postgres SET synchronous_commit = off")
    try:
        url = pg_cluster.url(schema) + "&options=-c%20synchronous_commit%3Doff"
        with PgStore.open(url) as st:
            raw = psycopg.connect(parse_url(url).conninfo, autocommit=True)
            assert raw.execute("SHOW synchronous_commit").fetchone()[0] == "off"  # what it would get
            with st.locked(0, 10):
                assert st._conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
                st.append(E([line(1)]), 1)
            assert st.head() == 1
            # A client that does not force it on is refused by the server.
            with pytest.raises(psycopg.errors.InvalidTransactionState, match="synchronous_commit"):
                raw.execute(f"INSERT INTO {schema}.events (seq, ts, line) "
                            "VALUES (2, 7, convert_to('{\"seq\": 2, \"ts\": 7}', 'UTF8'))")
            raw.close()
            assert st.head() == 1
            assert st.try_append(E([line(2)]), 2) is True  # (its implicit transaction: forced on too)
            assert st.head() == 2
    finally:
        pg_cluster.psql_execute("ALTER ROLE postgres IN DATABASE postgres RESET synchronous_commit")


def test_the_backstops_hold_against_a_hostile_client(store, pg_cluster):
    """Found in review, by a client with plain SQL: asynchronous commit
    asked for after the INSERT (the trigger looked only at insert time, the
    commit is what counts), a line saying its seq and ts as JSON strings,
    and another client's UPDATE of a session's row (closing it, or ending
    its lease, made it dead to every judge while its client held its lock).
    Each was accepted; each is refused now."""
    append(store, {})
    s = store.schema
    with psycopg.connect(parse_url(pg_cluster.url(s)).conninfo) as conn:  # one transaction
        conn.execute(_insert(s, 2))
        conn.execute("SET LOCAL synchronous_commit = off")
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="synchronous_commit"):
            conn.commit()
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="does not say seq 2"):
        pg_cluster.psql_execute(f"INSERT INTO {s}.events (seq, ts, line) VALUES "
                                "(2, 7, convert_to('{\"seq\": \"2\", \"ts\": \"7\"}', 'UTF8'))")
    assert store.head() == 1
    sess = store.open_session(600)
    try:
        for change in ("closed_at = clock_timestamp()", "lease_until = clock_timestamp() - interval '1 day'",
                       "instance = 'elsewhere'", "ttl_ms = 1", "host = 'h2'"):
            with pytest.raises(psycopg.Error, match="scopeledger: "):
                pg_cluster.psql_execute(f"UPDATE {s}.sessions SET {change} WHERE id = %s", sess.id)
        assert store.dead_sessions([sess.id]) == {}
        sess.renew()  # its own connection still may
        assert sess.valid
    finally:
        sess.close()
    assert store.dead_sessions([sess.id]) == {sess.id: "session_closed"}
    with pytest.raises(psycopg.Error, match="scopeledger: "):  # and a closed session stays closed
        pg_cluster.psql_execute(f"UPDATE {s}.sessions SET closed_at = NULL WHERE id = %s", sess.id)


def _sessions_left(pg_cluster, s: str) -> list[int]:
    return [r[0] for r in pg_cluster.psql_execute(f"SELECT id FROM {s}.sessions ORDER BY id")]


def test_only_a_dead_sessions_row_is_deleted_and_a_prune_deletes_only_while_the_log_ends_where_it_was_folded(
        store, pg_cluster):
    """The server refuses to delete the row of a session that lives (open,
    or its lease not over with its grace), whoever asks; a closed one's row
    may go. ``prune_sessions(seq, carried, keep)`` deletes the dead rows not
    carried, dead for longer than ``keep``, and only while the log ends at
    ``seq`` (``None`` otherwise: nothing deleted)."""
    s = store.schema
    live = store.open_session(600)
    lapsed = store.open_session(0.01, grace=0, renew=False)  # its lease over at once, never renewed
    closed, carried = store.open_session(600), store.open_session(600)
    try:
        closed.close()
        carried.close()
        wait_for(lambda: store.dead_sessions([lapsed.id]) == {lapsed.id: "lease_expired"}, "the lease over")
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="deleted only once the session is dead"):
            pg_cluster.psql_execute(f"DELETE FROM {s}.sessions WHERE id = %s", live.id)
        with pytest.raises(psycopg.Error, match="scopeledger: "):
            pg_cluster.psql_execute(f"TRUNCATE {s}.sessions")
        append(store, {})
        assert store.prune_sessions(0, [carried.id], 0) is None  # the log ends at 1, not 0
        assert store.prune_sessions(1, [carried.id], 3600) == 0  # dead for less than an hour
        assert _sessions_left(pg_cluster, s) == sorted([live.id, lapsed.id, closed.id, carried.id])
        assert store.prune_sessions(1, [carried.id], 0) == 2
        assert _sessions_left(pg_cluster, s) == sorted([live.id, carried.id])
        with PgStore.open(pg_cluster.url(s), readonly=True) as ro:
            assert ro.prune_sessions(1, [], 0) == 0
        assert store.prune_sessions(1, [], 0) == 1
        assert _sessions_left(pg_cluster, s) == [live.id]
        assert store.judge_sessions([live.id]) == {live.id: "alive"}
        with pytest.raises(ValueError):
            store.prune_sessions(1, ["7"], 0)
    finally:
        for sess in (live, lapsed, closed, carried):
            sess.close()


def test_a_ledger_whose_trigger_refuses_every_delete_gets_the_new_one_from_the_owner_s_first_prune(
        store, pg_cluster, caplog):
    """A ledger made before pruning has a trigger that refuses every delete
    of a session's row: another role's prune leaves the rows (one INFO
    record, no error, not tried again by that store); the owner's first
    prune replaces the trigger and deletes."""
    s = store.schema
    pg_cluster.psql_execute(f"DROP TRIGGER sessions_keep ON {s}.sessions;"
                            f" DROP FUNCTION {s}.sessions_dead_only();"
                            f" CREATE TRIGGER sessions_keep BEFORE DELETE ON {s}.sessions"
                            f" FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change()")
    sess = store.open_session(600)
    sess.close()
    role = s + "_p"
    pg_cluster.psql_execute(f"CREATE ROLE {role} LOGIN")
    try:
        pg_cluster.psql_execute(f"GRANT USAGE ON SCHEMA {s} TO {role}")
        pg_cluster.psql_execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {role}")
        with PgStore.open(pg_cluster.url(s, user=role)) as other:
            with caplog.at_level(logging.INFO, logger="scopeledger"):
                assert other.prune_sessions(0, [], 0) == 0
                assert other.prune_sessions(0, [], 0) == 0
            said = [r.getMessage() for r in caplog.records if "is not pruned" in r.getMessage()]
            assert len(said) == 1 and "made by an older scopeledger" in said[0], said
            assert other.prune_refused is not None
        assert _sessions_left(pg_cluster, s) == [sess.id]
        assert store.prune_sessions(0, [], 0) == 1
        assert _sessions_left(pg_cluster, s) == []
        live = store.open_session(600)
        try:
            with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="deleted only once"):
                pg_cluster.psql_execute(f"DELETE FROM {s}.sessions WHERE id = %s", live.id)
        finally:
            live.close()
    finally:
        pg_cluster.psql_execute(f"DROP OWNED BY {role}")
        pg_cluster.psql_execute(f"DROP ROLE {role}")


# -- the lock --------------------------------------------------------------------

def test_the_lock_excludes_and_times_out(store, pg_cluster):
    other = PgStore.open(pg_cluster.url(store.schema))
    try:
        with store.locked(0, 10):
            with pytest.raises(LockTimeout):
                with other.locked(0, 0):
                    pass
            t0 = time.monotonic()
            with pytest.raises(LockTimeout) as err:
                with other.locked(0, 0.3):
                    pass
            assert time.monotonic() - t0 >= 0.3
            assert err.value.path == store.url
            store.append(E([line(1)]), 1)
        with other.locked(0, 10) as missed:  # free again; the winner's line is seen
            assert [s for s, _ in missed] == [1]
    finally:
        other.close()


def test_try_append_appends_only_with_the_lock_free_and_the_log_where_it_was_decided(store, pg_cluster):
    """PgStore.try_append (one round trip, outside locked()): appended when
    the lock is free and the log ends at first_seq - 1; otherwise nothing,
    without waiting for the lock."""
    other = PgStore.open(pg_cluster.url(store.schema))
    try:
        assert store.try_append(E([line(1)]), 1) is True
        append(other, {"by": "other"})  # seq 2
        mine = line(2, by="store")
        assert store.try_append(E([mine]), 2) is False  # decided on seq 1; the log has moved on
        assert store.try_append(E([line(9)]), 9) is False  # the log ends before 8
        assert store.head() == 2 and store.read_after(1)[0][1] != mine
        three = [line(3), line(4), line(5)]
        assert store.try_append(E(three), 3) is True  # several lines, one statement
        assert [x for _, x in store.read_after(2)] == three
        with other.locked(5, 10):  # held by another client: not appended, and not waited for
            t0 = time.monotonic()
            assert store.try_append(E([line(6)]), 6) is False
            assert time.monotonic() - t0 < 10  # (a bound far above a round trip: it did not wait)
            other.append(E([line(6, by="other")]), 6)
        assert store.head() == 6 and orjson.loads(store.read_after(5)[0][1])["by"] == "other"
        with store.locked(6, 10):
            with pytest.raises(RuntimeError, match="inside locked"):
                store.try_append(E([line(7)]), 7)
        for bad in ([], E([line(7) + b"\n"]), [(1.5, line(7))]):
            with pytest.raises(ValueError):
                store.try_append(bad, 7)
        with pytest.raises(ValueError):
            store.try_append(E([line(7)]), 0)
        # The server's backstops apply: a line not saying its seq is refused,
        # nothing is appended, and the lock is not left held.
        with pytest.raises(StoreError, match="does not say"):
            store.try_append(E([line(8)]), 7)
        with pytest.raises(StoreError, match="does not say"):  # one transaction: the first line neither
            store.try_append(E([line(7), line(9)]), 7)
        assert store.head() == 6
        assert store.try_append(E([line(7)]), 7) is True
        with other.locked(7, 0) as missed:  # a single try: the commit let the lock go
            assert [q for q, _ in missed] == []
        with PgStore.open(pg_cluster.url(store.schema), readonly=True) as ro:
            with pytest.raises(ReadOnlyLedger):
                ro.try_append(E([line(8)]), 8)
    finally:
        other.close()
    assert store.head() == 7


def test_try_append_after_a_server_restart_appends_once_or_says_not(store, pg_cluster):
    """A stale connection (the server restarted since it was last used):
    the try is resolved by reading back, as an append is, never appended
    twice and never reported appended when it was not."""
    assert store.try_append(E([line(1)]), 1) is True
    pg_cluster.restart("immediate")
    got = store.try_append(E([line(2)]), 2)
    lines = store.read_after(0)
    assert [s for s, _ in lines] == ([1, 2] if got else [1])
    if not got:
        assert store.try_append(E([line(2)]), 2) is True
    assert store.head() == 2


def _appender(store, n, q):
    """A forked child using its parent's store object: it must open its own
    connections. Appends ``n`` times 1-3 lines; reports what it appended."""
    try:
        acks, waits, seen = [], [], 0
        for i in range(n):
            t0 = time.perf_counter()
            with store.locked(seen, 120) as missed:
                waits.append(time.perf_counter() - t0)
                first = seen + len(missed) + 1
                lines = [line(first + k, pid=os.getpid(), i=i, k=k) for k in range(1 + i % 3)]
                store.append(E(lines), first)
            seen = first + len(lines) - 1
            acks.extend(zip(range(first, seen + 1), lines, strict=True))
        q.put((os.getpid(), acks, waits))
    except BaseException as exc:
        q.put((os.getpid(), repr(exc), []))


def test_concurrent_appends_from_processes_are_gapless_and_lose_nothing(store, pg_cluster):
    append(store, {"from": "parent"})
    conn_before, backend_before = store._conn, store._backend
    q = FORK.Queue()
    n_procs, n_each = 4, 40
    procs = [FORK.Process(target=_appender, args=(store, n_each, q)) for _ in range(n_procs)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for _pid, acks, _ in results:
        assert isinstance(acks, list), acks
    stored = store.read_after(0)
    # The parent's connection survived its children (they never used it).
    assert store._conn is conn_before and not store._conn.closed and store._backend == backend_before
    assert [s for s, _ in stored] == list(range(1, len(stored) + 1))
    acked = {s: b for _, acks, _ in results for s, b in acks}
    assert len(acked) == n_procs * sum(1 + i % 3 for i in range(n_each)) and len(stored) == 1 + len(acked)
    assert all(dict(stored)[s] == b for s, b in acked.items())
    waits = sorted(w for *_, ws in results for w in ws)
    print(f"\n{n_procs} processes x {n_each} appends in {elapsed:.2f}s; lock wait p50 "
          f"{statistics.median(waits) * 1e3:.2f} ms, max {waits[-1] * 1e3:.1f} ms")


# -- faults: a TCP proxy that cuts the connection at a chosen message ----------

class CuttingProxy(Forwarder):
    """A :class:`~tcpforward.Forwarder` to the cluster's TCP port. Once armed, the
    first client message containing ``marker`` starts the fault, per ``mode``:
    ``"ack_lost"``: everything the client sends goes on, but nothing more
    comes back; once the server's answer holds ``COMMIT``'s completion (the
    server committed), both sides are closed: the client never hears it.
    ``"cut_keep_server"``: the message is not forwarded, the client side is
    closed, the server side left open (a half-dead link: the server's backend
    still holds the transaction, and the lock)."""

    def __init__(self, upstream_port: int, marker: bytes, mode: str) -> None:
        self.marker, self.mode = marker, mode
        self.armed = threading.Event()
        self.fired = threading.Event()
        self.done = threading.Event()
        super().__init__(upstream_port)

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool, pair: dict) -> None:
        seen = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self.armed.is_set() and not self.fired.is_set() and self.marker in data:
                    self.fired.set()
                    pair["faulty"] = True
                    if self.mode == "cut_keep_server":
                        self._held.append(dst)  # the server keeps waiting for more
                        src.shutdown(socket.SHUT_RDWR)
                        src.close()
                        self.done.set()
                        return
                if not from_client and pair["faulty"] and self.mode == "ack_lost":
                    seen += data  # dropped, not forwarded
                    if b"COMMIT\x00" in seen:
                        dst.shutdown(socket.SHUT_RDWR)
                        self.done.set()
                        break
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            if s not in self._held:
                try:
                    s.close()
                except OSError:
                    pass


@contextlib.contextmanager
def through_proxy(pg_cluster, schema: str, marker: bytes, mode: str):
    """A store reaching ``schema`` through a :class:`CuttingProxy`."""
    proxy = CuttingProxy(pg_cluster.port, marker, mode)
    try:
        with PgStore.open(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
                          f"?sslmode=disable&schema={schema}") as st:
            yield st, proxy
    finally:
        proxy.close()


def test_an_append_whose_answer_was_lost_is_resolved_as_committed(store, pg_cluster):
    append(store, {})
    with through_proxy(pg_cluster, store.schema, b"COMMIT", "ack_lost") as (st, proxy):
        with st.locked(1, 10):
            proxy.armed.set()
            st.append(E([line(2, ts=7, what="committed, answer lost")]), 2)  # returns: resolved
        assert proxy.done.is_set()  # the server did answer COMMIT, and it was dropped
        assert st.read_after(1) == [(2, line(2, ts=7, what="committed, answer lost"))]
    assert append(store, {}) == 3


def test_an_append_cut_before_it_reached_the_server_is_not_recorded(store, pg_cluster):
    append(store, {})
    with through_proxy(pg_cluster, store.schema, b"INSERT INTO", "cut_keep_server") as (st, proxy):
        with st.locked(1, 10):
            proxy.armed.set()
            with pytest.raises(NotRecorded) as err:
                # The old backend still holds the lock, idle in its transaction:
                # resolving ends it (pg_terminate_backend) before reading back.
                st.append(E([line(2, what="never sent")]), 2)
        assert proxy.done.is_set()
        assert isinstance(err.value, StoreUnavailable) and "not recorded" in str(err.value)
        assert err.value.first_seq == 2
        import pickle
        again = pickle.loads(pickle.dumps(err.value))  # survives multiprocessing
        assert type(again) is NotRecorded and again.first_seq == 2 and str(again) == str(err.value)
        assert st.read_after(1) == []
        with st.locked(1, 10) as missed:  # the lock is free, the store usable
            assert missed == []
            st.append(E([line(2, ts=7, what="again")]), 2)
    assert store.read_after(1) == [(2, line(2, ts=7, what="again"))]


def test_a_server_restart_loses_no_acknowledged_line_and_the_store_reconnects(store, pg_cluster):
    first = append(store, {"n": 1}, {"n": 2})
    before = store.read_after(0)
    waiter = PgStore.open(pg_cluster.url(store.schema))
    assert waiter.wait(0, 0) == 2  # its LISTEN connection exists before the restart
    pg_cluster.restart("immediate")
    assert store.read_after(0) == before  # a read retries once on a new connection
    assert append(store, {"n": 3}, after=2) == 3  # so does taking the lock
    assert waiter.wait(2, 60) == 3
    waiter.close()
    assert first == 1


def test_a_server_crash_between_lock_and_append_records_nothing(store, pg_cluster):
    append(store, {})
    with store.locked(1, 10):
        pg_cluster.restart("immediate")  # the transaction holding the lock dies with it
        with pytest.raises(NotRecorded):
            store.append(E([line(2)]), 2)
    assert store.head() == 1
    assert append(store, {}) == 2


def test_an_append_whose_outcome_cannot_be_found_out_is_in_doubt(store, pg_cluster):
    append(store, {})
    st = PgStore.open(pg_cluster.url(store.schema), resolve_timeout=1.0)
    try:
        with st.locked(1, 10):
            pg_cluster.stop_server()  # down for the whole resolve timeout
            try:
                with pytest.raises(InDoubt) as err:
                    st.append(E([line(2)]), 2)
            finally:
                pg_cluster.start_server()
        assert err.value.first_seq == 2 and "read it back" in str(err.value)
        assert st.head() == 1  # (here the crash took it: not recorded)
    finally:
        st.close()


def test_a_lost_connection_inside_locked_is_a_typed_error_and_records_nothing(store, pg_cluster):
    append(store, {})
    with store.locked(1, 10):
        pg_cluster.psql_execute("SELECT pg_terminate_backend(%s)", store._backend[0])
        with pytest.raises(NotRecorded):
            store.append(E([line(2)]), 2)
    assert store.head() == 1
    assert append(store, {}) == 2


class Interrupted(Exception):
    """Raised by a signal handler in the main thread (as a KeyboardInterrupt
    or a timer's handler would be) while the store waits on the server."""


@contextlib.contextmanager
def interrupt_when(cond, what: str, then=lambda: None, kind: type[BaseException] = Interrupted):
    """Raise ``kind`` in this (the main) thread once ``cond()`` holds (a
    real condition, polled by a helper thread), then call ``then()`` in the
    helper. psycopg cancels the query on a KeyboardInterrupt, and not on
    other exceptions."""
    main = threading.get_ident()

    def handler(signum, frame):
        raise kind()

    def watch():
        wait_for(cond, what)
        signal.pthread_kill(main, signal.SIGUSR1)
        then()
    old = signal.signal(signal.SIGUSR1, handler)
    t = threading.Thread(target=watch)
    t.start()
    try:
        yield
    finally:
        t.join(120)
        signal.signal(signal.SIGUSR1, old)


def _waiting_on_advisory(pg_cluster, pid):
    return pg_cluster.psql_execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"
                                   " AND wait_event = 'advisory'", pid)


@pytest.mark.parametrize("kind", [Interrupted, KeyboardInterrupt])
def test_an_append_interrupted_on_its_way_is_resolved_not_reported_unrecorded(store, pg_cluster, kind):
    """Found in review: an exception in the middle of an append (a signal
    handler's, raised while the INSERT and COMMIT were at the server) came
    out as StoreUnavailable, whose promise is that nothing can have been
    recorded, and the server committed the line afterwards. Now it is
    resolved as a broken connection is: returned means recorded, NotRecorded
    means never recorded (an interruption let through means "read back")."""
    append(store, {})
    s = store.schema
    # The server stalls the INSERT on an advisory lock the test holds (a real wait, not a timer).
    pg_cluster.psql_execute(f"CREATE FUNCTION {s}.stall() RETURNS trigger LANGUAGE plpgsql AS $$"
                            " BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$")
    pg_cluster.psql_execute(f"CREATE TRIGGER stall AFTER INSERT ON {s}.events"
                            f" FOR EACH ROW EXECUTE FUNCTION {s}.stall()")
    blocker = psycopg.connect(pg_cluster.conninfo(), autocommit=True)
    blocker.execute("SELECT pg_advisory_lock(4242)")
    old_backend = store._backend[0]
    ours = line(2, ts=7, what="on its way")
    try:
        with interrupt_when(lambda: _waiting_on_advisory(pg_cluster, old_backend), "the INSERT stalled",
                            kind=kind):
            try:
                with store.locked(1, 10):
                    store.append(E([ours]), 2)
                outcome = "returned"
            except NotRecorded:
                outcome = "not recorded"
            except kind:
                outcome = "interrupted"
            except StoreError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
    finally:
        blocker.execute("SELECT pg_advisory_unlock(4242)")
        blocker.close()
    # The old backend finishes whatever it still had (commit or not); then look.
    wait_for(lambda: not pg_cluster.psql_execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", old_backend),
             "the interrupted append's backend gone")
    pg_cluster.psql_execute(f"DROP TRIGGER stall ON {s}.events")
    recorded = store.read_after(1) == [(2, ours)]
    print(f"\n{kind.__name__} during an append: {outcome}, recorded: {recorded}")
    assert outcome in ("returned", "not recorded", "interrupted"), outcome
    assert outcome == "interrupted" or recorded == (outcome == "returned"), (outcome, recorded)
    assert append(store, {}) == 2 + recorded  # the lock is free, the store usable


@pytest.mark.parametrize("kind", [Interrupted, KeyboardInterrupt])
def test_a_wait_for_the_lock_interrupted_leaves_no_lock_behind(store, pg_cluster, kind):
    """Found in review: an exception raised while locked() waited for the
    lock left the store's connection inside its transaction: once granted,
    the lock stayed held by an idle connection, blocking every writer for
    idle_in_transaction_session_timeout (60 s)."""
    append(store, {})
    holder = psycopg.connect(parse_url(pg_cluster.url(store.schema)).conninfo, autocommit=True)
    holder.execute("BEGIN")
    holder.execute("SELECT pg_advisory_xact_lock(%s, 0)", (store._key,))
    backend = store._backend[0]
    other = PgStore.open(pg_cluster.url(store.schema))
    try:
        with interrupt_when(lambda: _waiting_on_advisory(pg_cluster, backend), "locked() waiting for the lock",
                            then=lambda: holder.execute("ROLLBACK"), kind=kind):
            with pytest.raises((kind, StoreUnavailable)):  # psycopg may turn it into its own error
                with store.locked(1, None):
                    pass
        with other.locked(1, 30) as missed:  # the lock is free (not held by the interrupted store)
            assert missed == []
        assert append(store, {}) == 2  # and the interrupted store is usable
    finally:
        other.close()
        holder.close()


# -- waiting ---------------------------------------------------------------------

def test_listen_notify_wakes_a_waiter(store, pg_cluster):
    append(store, {})
    waiter = PgStore.open(pg_cluster.url(store.schema))
    got, woke = [], []
    assert waiter.wait(0, 60) == 1  # news already there: at once
    assert waiter.wait(1, 0.05) == 1  # nothing new: the head, after the timeout
    ready = threading.Event()

    def wait():
        ready.set()
        got.append(waiter.wait(1, 600))
        woke.append(time.perf_counter())
    t = threading.Thread(target=wait, daemon=True)
    t.start()
    ready.wait(10)
    # The waiter has read the head on its LISTEN connection and sleeps (before, a sleep
    # of 50 ms here, and a wait of 120 s that the test outlasted: it passed without NOTIFY).
    head_sql = f"SELECT coalesce(max(seq), 0) FROM {store.schema}.events"
    wait_for(lambda: pg_cluster.psql_execute(
        "SELECT 1 FROM pg_stat_activity WHERE state = 'idle' AND query = %s AND pid = %s",
        head_sql, waiter._listens[t.ident].info.backend_pid) if t.ident in waiter._listens else None,
        "the waiter listening")
    sent = time.perf_counter()
    append(store, {}, after=1)
    t.join(60)  # woken by the notification, far before its own 600 s
    assert got == [2]
    waiter.close()
    print(f"\nwake-up {(woke[0] - sent) * 1e3:.2f} ms after the append was sent")


def test_threads_waiting_on_one_store_each_keep_their_own_timeout(store, pg_cluster):
    """Found in review: the threads of one store shared its LISTEN
    connection, and psycopg serialises a connection, so wait(after, 0.2)
    in one thread returned only when another thread's longer wait did."""
    append(store, {})
    long_wait: list[int] = []
    a = threading.Thread(target=lambda: long_wait.append(store.wait(1, None)))
    a.start()
    head_sql = f"SELECT coalesce(max(seq), 0) FROM {store.schema}.events"
    try:
        wait_for(lambda: pg_cluster.psql_execute(  # the long waiter has read the head: it is listening
            "SELECT 1 FROM pg_stat_activity WHERE state = 'idle' AND query = %s", head_sql),
            "the first thread waiting for notifications")
        short: list[int] = []
        b = threading.Thread(target=lambda: short.append(store.wait(1, 0.2)))
        b.start()
        b.join(60)  # a generous bound: before the fix it returned only after the long wait did
        assert short == [1] and long_wait == [], (short, long_wait)
    finally:
        append(store, {}, after=1)  # wakes the long waiter
        a.join(120)
    assert long_wait == [2]


# -- snapshots -------------------------------------------------------------------

def _header(store, seq, **over):
    (_, ln), = store.read_after(seq - 1, limit=1)
    return {"format": 4, "seq": seq, "last_hash": line_hash(ln), "ts": 1, "checksum": "c" * 32, **over}


def test_snapshots_round_trip_and_are_checked_against_the_log(store, pg_cluster):
    append(store, *[{}] * 5)
    assert store.snapshot_seqs() == []
    body = bytes(range(256)) * 100
    store.snapshot_write(_header(store, 2), b"two")
    store.snapshot_write(_header(store, 4), body)
    assert store.snapshot_read(4) == (_header(store, 4), body)
    store.snapshot_write(_header(store, 4, ts=9), b"again")  # the same line: replaced
    assert store.snapshot_read(4) == (_header(store, 4, ts=9), b"again")
    assert store.snapshot_seqs() == [2, 4]
    for bad in (9, 0, "2", None):
        with pytest.raises(ValueError):
            store.snapshot_write(dict(_header(store, 1), seq=bad), b"past the log")
    store.snapshot_write(_header(store, 3, last_hash="0" * 32), b"{}")
    with pytest.raises(SnapshotInvalid, match="does not match the log at seq 3"):
        store.snapshot_read(3)
    with pytest.raises(SnapshotInvalid, match="no snapshot at seq 5"):
        store.snapshot_read(5)
    pg_cluster.psql_execute(f"UPDATE {store.schema}.snapshots SET header = 'x' WHERE seq = 2")
    with pytest.raises(SnapshotInvalid, match="not JSON"):
        store.snapshot_read(2)
    store.snapshot_delete(2)
    store.snapshot_delete(2)
    assert store.snapshot_seqs() == [3, 4]


def test_a_read_only_store_reads_and_refuses_to_write(store, pg_cluster):
    append(store, {})
    with PgStore.open(pg_cluster.url(store.schema), readonly=True) as ro:
        assert ro.readonly and not store.readonly and ro.location == store.location == store.url
        assert ro.read_after(0) == store.read_after(0)
        for write in (lambda: ro.locked(1, 10).__enter__(), lambda: ro.snapshot_write(_header(store, 1), b"{}"),
                      lambda: ro.snapshot_delete(1), lambda: ro.open_session(60)):  # (the session: found in review)
            with pytest.raises(ReadOnlyLedger):
                write()
        assert pg_cluster.psql_execute(f"SELECT count(*) FROM {store.schema}.sessions") == [(0,)]
    with pytest.raises(NoLedger):  # read-only never creates
        PgStore.open(pg_cluster.url(new_schema := pgserver.new_schema_name()), create=True, readonly=True)
    assert pg_cluster.psql_execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", new_schema) == []


def test_reading_past_the_log_or_a_bad_seq_is_refused(store):
    append(store, {})
    with pytest.raises(CorruptLedger, match="ends at seq 1"):
        store.read_after(5)
    for bad in ((-1, None), (0, 0), (True, None)):
        with pytest.raises(ValueError):
            store.read_after(*bad)
    assert store.read_after(1) == []


def test_bad_arguments_are_value_errors_naming_them(store):
    """Found in review: only read_after checked its arguments; elsewhere a
    bad value reached the server (a StoreError with an SQLSTATE, or none:
    time_point(None) answered (0, 0, []), dead_sessions([1.5]) {})."""
    append(store, {})
    calls = {
        "ts": [lambda: store.seq_at("x"), lambda: store.seq_at(True), lambda: store.time_point(None),
               lambda: store.time_point(2**63)],
        "crossed": [lambda: store.time_point(1, -1), lambda: store.time_point(1, 1.5)],
        "after": [lambda: store.locked("x", 1).__enter__(), lambda: store.wait(-1, 0), lambda: store.wait("x", 0)],
        "timeout": [lambda: store.locked(0, "x").__enter__(), lambda: store.wait(0, float("nan"))],
        "seq": [lambda: store.snapshot_read("1"), lambda: store.snapshot_delete(None)],
        "session id": [lambda: store.dead_sessions([1.5]), lambda: store.dead_sessions(["a"])],
    }
    for name, bad in calls.items():
        for call in bad:
            with pytest.raises(ValueError, match=name):
                call()
    assert append(store, {}) == 2  # no lock left behind


# -- sessions --------------------------------------------------------------------

def _session_holder(url, ttl, conn):
    st = PgStore.open(url)
    s = st.open_session(ttl, host="h1")
    conn.send(s.id)
    conn.recv()  # until killed, or told to go


def _start_holder(url, ttl=600.0):
    parent, child = FORK.Pipe()
    p = FORK.Process(target=_session_holder, args=(url, ttl, child))
    p.start()
    assert parent.poll(60)
    return p, parent, parent.recv()


def test_a_killed_client_is_judged_dead_by_its_lock_and_a_live_one_never(store, pg_cluster):
    url = pg_cluster.url(store.schema)
    live, live_pipe, live_id = _start_holder(url)
    doomed, doomed_pipe, doomed_id = _start_holder(url)
    try:
        assert store.dead_sessions([live_id, doomed_id, 12345]) == {}
        t0 = time.perf_counter()
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join(30)
        got = wait_for(lambda: store.dead_sessions([live_id, doomed_id]), "the killed client judged dead")
        print(f"\ndead-client detection {(time.perf_counter() - t0) * 1e3:.1f} ms after SIGKILL")
        assert got == {doomed_id: "session_lock_gone"}  # ttl 600 s: by the lock, not the lease
    finally:
        live_pipe.send("go")
        live.join(30)
        for p in (live, doomed):
            if p.is_alive():
                p.kill()


def test_no_session_is_judged_dead_by_its_lock_across_a_server_restart(store, pg_cluster):
    url = pg_cluster.url(store.schema)
    live, live_pipe, live_id = _start_holder(url)
    doomed, _, doomed_id = _start_holder(url)
    short = store.open_session(1.0, renew=False)
    instance = store.instance()
    os.kill(doomed.pid, signal.SIGKILL)  # killed just before the restart
    doomed.join(30)
    try:
        pg_cluster.restart("immediate")
        assert store.instance() != instance
        # Every session lock is gone now; none of these is provably dead by it.
        assert store.dead_sessions([live_id, doomed_id]) == {}
        # The short lease lapses (server clock): dead by the lease.
        assert wait_for(lambda: store.dead_sessions([short.id]), "the short lease lapsed") == \
            {short.id: "lease_expired"}
        assert store.dead_sessions([live_id, doomed_id]) == {}
    finally:
        live_pipe.send("go")
        live.join(30)
        short.close()
        if live.is_alive():
            live.kill()


def test_a_session_learns_when_its_connection_is_ended(store, pg_cluster):
    lost = threading.Event()
    s = store.open_session(600, on_lost=lambda sess: lost.set())
    try:
        assert s.valid and s.lost is None
        pid = pg_cluster.psql_execute(
            f"SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = {s.id} AND objsubid = 2")[0][0]
        pg_cluster.psql_execute("SELECT pg_terminate_backend(%s)", pid)
        assert lost.wait(60), "the session did not notice its connection ended"
        assert not s.valid and s.lost.startswith("connection_lost")
        with pytest.raises(SessionLost):
            s.renew()
        assert store.dead_sessions([s.id]) == {s.id: "session_lock_gone"}
    finally:
        s.close()


def test_a_lapsed_lease_cannot_be_renewed(store):
    s = store.open_session(0.2, renew=False)
    wait_for(lambda: not s.valid, "the client's own lease deadline passed")
    with pytest.raises(SessionLost, match="lease_expired"):
        s.renew()
    # Between the client's own deadline (its connection shut, its lock gone with it) and the
    # server's lease_until plus the grace, the judges say session_lock_gone; then lease_expired.
    seen = []

    def expired() -> bool:
        seen.append(store.dead_sessions([s.id]))
        return seen[-1] == {s.id: "lease_expired"}
    wait_for(expired, "lease expired on the server")
    assert all(got in ({}, {s.id: "session_lock_gone"}, {s.id: "lease_expired"}) for got in seen), seen
    s.close()  # its connection was shut when it lapsed: the row stays as it was
    assert store.dead_sessions([s.id]) == {s.id: "lease_expired"}


def test_a_lease_lapsed_by_the_servers_clock_is_not_renewed_whatever_the_client_thinks(store):
    """The server, not the client, decides a lease lapsed: with the client's
    own deadline far off (ttl 600 s), the server's clock past ``lease_until``
    (here moved back by the session's own connection, as a step of the
    server's clock would) makes the renewal fail, and the session stays dead
    for the judges (it was untested: without the server's check in the
    renewal, a session judged dead came back)."""
    s = store.open_session(600, renew=False, grace=0)
    try:
        s._conn.execute(f"UPDATE {store.schema}.sessions SET lease_until = clock_timestamp() - interval '1 second'"
                        " WHERE id = %s", (s.id,))
        assert store.dead_sessions([s.id]) == {s.id: "lease_expired"}
        with pytest.raises(SessionLost, match="lease_expired"):
            s.renew()
        assert s.lost == "lease_expired" and not s.valid
        assert store.dead_sessions([s.id]) == {s.id: "lease_expired"}
    finally:
        s.close()


def test_a_holder_learns_its_lease_lapsed_before_anyone_judges_it_dead(store):
    """Not renewed (a stalled renewer): the client's own deadline passes,
    its on_lost fires from the watchdog, and only after that, by the server
    clock plus the grace, does anyone else see the session dead."""
    fired = []
    s = store.open_session(0.5, renew=False, grace=1.0, on_lost=lambda sess: fired.append(time.monotonic()))
    try:
        judged = []
        def judge():
            got = store.dead_sessions([s.id])
            if got:
                judged.append(time.monotonic())  # after the answer: when a grantor could act
            return got
        got = wait_for(judge, "the lapsed session judged dead")
        # Why the judge says so depends on two clocks: the client lets its lock go at its
        # own deadline (sent + ttl, before the server's lease_until), so a judge asking
        # before the server's lease_until has passed finds the lock gone, after it the
        # lease expired; a loaded machine widens the first window. Either is death after
        # the holder knew, which is what this test is about.
        assert got in ({s.id: "lease_expired"}, {s.id: "session_lock_gone"}), got
        assert s.lost == "lease_expired" and s.lost_at < judged[0]
        assert not s.valid and fired and s.lost_at <= fired[0]
    finally:
        s.close()


def test_a_partitioned_client_learns_first_and_is_judged_dead_by_its_lease(store, pg_cluster):
    """Its link cut, a client's renewal hangs; its watchdog ends the session
    at its own deadline; the server still holds its backend and lock (no
    FIN came), so the lease decides, after the grace."""
    hole = Blackhole(pg_cluster.port)
    far = PgStore.open(f"postgresql://postgres@127.0.0.1:{hole.port}/postgres?sslmode=disable"
                       f"&schema={store.schema}")
    fired = threading.Event()
    s = far.open_session(1.5, on_lost=lambda sess: fired.set())
    try:
        assert store.dead_sessions([s.id]) == {}
        hole.cut.set()
        judged = []
        def judge():
            got = store.dead_sessions([s.id])
            if got:
                judged.append(time.monotonic())
            return got
        assert wait_for(judge, "the partitioned session judged dead") == {s.id: "lease_expired"}
        assert s.lost == "lease_expired" and s.lost_at < judged[0]
        assert fired.wait(60), "on_lost did not fire"
        # Its backend still held the lock all along: only the lease could tell.
        assert pg_cluster.psql_execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = %s",
            s.id) == [(1,)]
    finally:
        s.close()  # returns although the renewer was stuck on the cut link
        far.close()
        hole.close()


def _session_client(url, ttl, n_lines, q, go, pause_at, resume, finish):
    """A client process: a session, and appends (each naming its session)
    retried through server restarts; after ``pause_at`` lines it reports
    ("paused") and waits for ``resume``; reports what was acknowledged and
    when its session was lost, if it was. ``resume`` and ``finish`` are this
    client's own (a process killed while waiting on a multiprocessing event
    would leave whoever sets it waiting for ever)."""
    try:
        st = PgStore.open(url)
        s = st.open_session(ttl, host=f"h{os.getpid()}")
        q.put(("session", os.getpid(), s.id))
        go.wait(120)
        acked, seen, i, paused = [], 0, 0, False
        while i < n_lines:
            if i == pause_at and not paused:
                q.put(("paused", os.getpid()))
                resume.wait(300)
                paused = True
            try:
                with st.locked(seen, 60) as missed:
                    first = seen + len(missed) + 1
                    ln = line(first, session=s.id, i=i)
                    st.append(E([ln]), first)
                acked.append((first, ln))
                seen, i = first, i + 1
            except (StoreUnavailable, LockTimeout) as exc:  # NotRecorded too; InDoubt is read back
                if isinstance(exc, InDoubt):
                    got = dict(st.read_after(exc.first_seq - 1, 1))
                    if got.get(exc.first_seq) == ln:
                        acked.append((exc.first_seq, ln))
                        seen, i = exc.first_seq, i + 1
                time.sleep(0.05)  # a back-off while the server restarts
        q.put(("done", os.getpid(), s.id, acked, s.lost, s.lost_at, s.instance))
        finish.wait(300)  # keep the session until the parent has judged everyone
        s.close()
    except BaseException as exc:
        q.put(("error", os.getpid(), repr(exc)))


def test_server_restarts_and_a_kill_mid_run_reclaim_no_live_client_and_lose_nothing(store, pg_cluster):
    """Four client processes with sessions append through two
    ``pg_ctl restart -m immediate``; one is killed with SIGKILL. A judge polls
    all the sessions throughout: only the killed one (or one that had
    already learnt it was lost) is ever judged dead; every acknowledged line
    is in the log, gapless. The clients pause at their 40th line, so the kill
    and the second restart come while each still has lines to append,
    whatever the machine's speed."""
    url = pg_cluster.url(store.schema)
    q, go = FORK.Queue(), FORK.Event()
    resume = [FORK.Event() for _ in range(4)]
    finish = [FORK.Event() for _ in range(4)]
    # ttl 30 s: a generous bound for a restart (the sessions re-take their locks within it).
    procs = [FORK.Process(target=_session_client, args=(url, 30.0, 60, q, go, 40, resume[k], finish[k]))
             for k in range(4)]
    for p in procs:
        p.start()
    sessions = {}
    for _ in procs:
        msg = q.get(timeout=120)
        assert msg[0] == "session", msg
        sessions[msg[1]] = msg[2]
    victim = procs[0]
    judged: dict[int, tuple[str, float]] = {}
    stop = threading.Event()

    def judge():
        while not stop.is_set():
            try:
                got = store.dead_sessions(list(sessions.values()))
            except StoreUnavailable:
                time.sleep(0.05)  # the server is restarting
                continue
            now = time.monotonic()
            for sid, why in got.items():
                judged.setdefault(sid, (why, now))
            time.sleep(0.01)
    judge_thread = threading.Thread(target=judge)
    judge_thread.start()
    done: list = []
    killed = False
    try:
        go.set()
        wait_for(lambda: store.head() >= 20, "the clients appending", bound=120)
        pg_cluster.restart("immediate")
        paused = [q.get(timeout=300) for _ in procs]
        assert sorted(m[:2] for m in paused) == sorted(("paused", p.pid) for p in procs), paused
        wait_for(lambda: {r[0] for r in pg_cluster.psql_execute(
            f"SELECT instance FROM {store.schema}.sessions")} == {store.instance()},
            "every session's lock re-taken on the new instance", bound=120)
        killed, killed_at = True, time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(30)
        wait_for(lambda: sessions[victim.pid] in judged, "the killed client judged dead", bound=120)
        for ev in resume[1:]:
            ev.set()
        pg_cluster.restart("immediate")
        done = [q.get(timeout=300) for _ in procs[1:]]
        # A restart is not mass death: the survivors (their sessions still open) re-take
        # their locks on the new instance. Read from the table, not from what each client
        # last saw: a client may have finished its lines before its session re-took its lock.
        survivors = [m[2] for m in done if m[0] == "done"]
        wait_for(lambda: {r[0] for r in pg_cluster.psql_execute(
            f"SELECT instance FROM {store.schema}.sessions WHERE id = ANY(%s)", survivors)}
            == {store.instance()}, "the survivors' locks re-taken after the second restart",
            bound=120)
    finally:
        stop.set()
        judge_thread.join(60)
        go.set()
        for k, p in enumerate(procs):
            if p.is_alive() and not (killed and p is victim):  # never an event a killed process waited on
                resume[k].set()
                finish[k].set()
        for p in procs:
            p.join(120)
            if p.is_alive():
                p.kill()
    assert all(m[0] == "done" for m in done), done
    lost_at = {m[2]: m[5] for m in done if m[4] is not None}
    # Only the killed client is judged dead, after it was killed; a live one
    # judged dead must have known before (its lease lapsed in a slow restart).
    assert judged[sessions[victim.pid]][1] > killed_at
    for sid, (why, when) in judged.items():
        if sid != sessions[victim.pid]:
            assert sid in lost_at and lost_at[sid] < when, (sid, why, judged, lost_at)
    # Every acknowledged line is there, byte for byte; the log is gapless.
    stored = dict(store.read_after(0))
    assert sorted(stored) == list(range(1, len(stored) + 1))
    acked = [a for m in done for a in m[3]]
    assert len(acked) == 3 * 60 and all(stored[q_] == b for q_, b in acked)
    assert judged[sessions[victim.pid]][0] == "session_lock_gone"
    assert [m[4] for m in done] == [None] * 3
    print(f"\njudged dead: {judged}; lost by their clients: {lost_at}")


def test_a_closed_session_is_dead_and_a_lapsed_one_knew_first(store):
    """(Review: its last verdict depended on the machine's speed: a renewer
    of the 0.3 s session stalled past its deadline, as on a loaded machine,
    lost the session, close() could then not mark it, and the judges said
    lease_expired, not session_closed. The closed verdict is now asserted
    exactly on a session that cannot lapse in the test, and on the short one
    whenever its client closed it rather than lost it.)"""
    s = store.open_session(0.3)  # renewed every 0.1 s in the background
    other = store.open_session(600)
    closing = store.open_session(600)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # across several lease periods
        # Renewal keeps it alive; should the renewer stall (a busy machine) and
        # the server see the lease lapse, the client must already know.
        assert store.dead_sessions([s.id]) == {} or not s.valid
        time.sleep(0.05)  # polling, not synchronisation
    s.close()
    closing.close()
    got = store.dead_sessions([s.id, other.id, closing.id])
    if s.lost == "closed":  # closed by its client while valid
        assert got == {s.id: "session_closed", closing.id: "session_closed"}
    else:  # its renewer stalled past its deadline: it knew first, and is dead by its lease or not yet judged
        assert s.lost == "lease_expired" and got in ({closing.id: "session_closed"},
                                                    {s.id: "lease_expired", closing.id: "session_closed"}), got
    other.close()


def _child_uses_session(s, store, q):
    try:
        s.renew()
        q.put("renewed")
    except SessionLost as exc:
        q.put(f"lost: {exc}")
    q.put(store.head())


def test_a_session_that_cannot_connect_leaves_no_descriptor_behind(store, monkeypatch):
    """Found in review: the session's stop pipe was made before its
    connection, and a failed connection left both ends open."""
    def refuse(**params):
        raise StoreUnavailable(store.url, "refused for the test")
    monkeypatch.setattr(store, "_new_connection", refuse)
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            store.open_session(60)
    assert set(os.listdir("/proc/self/fd")) - before == set()


def test_a_forked_child_never_uses_its_parents_session(store):
    append(store, {})
    s = store.open_session(600)
    q = FORK.Queue()
    p = FORK.Process(target=_child_uses_session, args=(s, store, q))
    p.start()
    assert q.get(timeout=60).startswith("lost: a forked child")
    assert q.get(timeout=60) == 1
    p.join(60)
    s.renew()  # the parent's session is intact
    assert s.valid and store.dead_sessions([s.id]) == {}
    s.close()


# -- the test cluster itself -------------------------------------------------------

def test_missing_server_binaries_skip_or_fail_as_configured(monkeypatch):
    monkeypatch.delenv(pgserver.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="why"):
        pgserver._unavailable("why")
    monkeypatch.setenv(pgserver.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="cannot run: why"):
        pgserver._unavailable("why")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pgserver.glob, "glob", lambda pattern: [])
    bindir, why = pgserver.find_binaries()
    assert bindir is None and "apt-get install postgresql" in why


def test_a_waiter_for_the_lock_sees_what_the_holder_committed(store, pg_cluster):
    """The read after the lock is a statement of its own: its snapshot is
    taken after the lock was granted (READ COMMITTED), so a waiter misses
    nothing the previous holder committed."""
    other = PgStore.open(pg_cluster.url(store.schema))
    seen = []
    try:
        with store.locked(0, 10):
            t = threading.Thread(target=lambda: seen.append(_locked_read(other)))
            t.start()
            wait_for(lambda: pg_cluster.psql_execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                " AND pid = %s", other._backend[0]) if other._backend else None,
                "the other store waiting for the lock")
            store.append(E([line(1, ts=1)]), 1)
        t.join(60)
    finally:
        other.close()
    assert seen == [[(1, line(1, ts=1))]]


def _with_options(url: str, *settings: str) -> str:
    """``url`` asking the server for ``settings`` (``name=value``) by libpq's ``options``."""
    from urllib.parse import quote
    return url + "&options=" + quote(" ".join(f"-c {x}" for x in settings), safe="")


def test_server_defaults_the_store_depends_on_are_overridden(store, pg_cluster):
    """Found in review: a role's or database's default transaction isolation
    (repeatable read: the read after the lock used a snapshot from before the
    lock was granted, so a waiter missed the previous holder's lines, and a
    read-back could say NotRecorded for a committed append) and statement
    timeout (a wait for the lock cancelled, reported as a lost connection)
    reached the store's connections. Asked for by the URL here, as by the
    role or the database."""
    url = _with_options(pg_cluster.url(store.schema), "default_transaction_isolation=repeatable\\ read",
                        "statement_timeout=1")
    other = PgStore.open(url)
    seen, errors = [], []

    def wait_for_lock():
        try:
            seen.append(_locked_read(other))
        except Exception as exc:  # reported below
            errors.append(exc)
    try:
        with store.locked(0, 10):
            t = threading.Thread(target=wait_for_lock)
            t.start()
            for _ in range(2):  # still waiting after another connection's round trips (> 1 ms)
                wait_for(lambda: errors or _waiting_on_advisory(pg_cluster, other._backend[0] if other._backend
                                                                 else -1), "the other store waiting")
            store.append(E([line(1, ts=1)]), 1)
        t.join(60)
    finally:
        other.close()
    assert errors == [] and seen == [[(1, line(1, ts=1))]], (errors, seen)


def test_a_servers_idle_session_timeout_does_not_end_a_session(store, pg_cluster):
    """Found in review: a server default idle_session_timeout shorter than
    ttl/3 ended a session's idle connection between renewals, and with it
    the session (lost on the same instance, judged dead by its lock)."""
    url = _with_options(pg_cluster.url(store.schema), "idle_session_timeout=100")
    far = PgStore.open(url)
    s = far.open_session(600)
    try:
        pid = pg_cluster.psql_execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND objsubid = 2", s.id)[0][0]
        # Idle for more than ten times the timeout, by the server's clock (or already ended).
        wait_for(lambda: s.lost or pg_cluster.psql_execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'idle'"
            " AND state_change < clock_timestamp() - interval '1 second'", pid), "the session idle for 1 s")
        assert s.valid and s.lost is None, s.lost
        assert store.dead_sessions([s.id]) == {}
    finally:
        s.close()
        far.close()


def _locked_read(st):
    with st.locked(0, 60) as missed:
        return missed


def test_a_forked_child_never_touches_its_parents_connections(store, pg_cluster):
    append(store, {})
    assert store.wait(0, 0) == 1  # the LISTEN connection exists too
    main_pid, listen_pid = store._backend[0], store._listen.info.backend_pid
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reads (on its own connection), closes, drops everything
        try:
            ok = [s for s, _ in store.read_after(0)] == [1] and store.wait(0, 0) == 1
            store.close()
            import gc
            gc.collect()
            os.write(w, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 2) == b"ok"
    os.close(r)
    alive = {p for (p,) in pg_cluster.psql_execute("SELECT pid FROM pg_stat_activity")}
    assert {main_pid, listen_pid} <= alive  # no Terminate reached the parent's backends
    assert store.read_after(0)[0][0] == 1 and store._backend[0] == main_pid


def test_only_the_pg_store_imports_psycopg_and_importing_scopeledger_does_not():
    import subprocess
    import sys
    import scopeledger
    pkg = os.path.dirname(scopeledger.__file__)
    importers = sorted(name for name in os.listdir(pkg) if name.endswith(".py")
                       and "psycopg" in open(os.path.join(pkg, name), encoding="utf-8").read()
                       .replace("scopeledger[postgresql]", ""))
    assert importers == ["_pgstore.py"]
    out = subprocess.run([sys.executable, "-c", "import sys, scopeledger, scopeledger.cli; "
                          "print(sorted(m for m in sys.modules if 'psycopg' in m or '_pgstore' in m))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
