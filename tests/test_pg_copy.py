"""Moving a ledger between stores without changing a byte (issue 15: the library
half of ``ledger export URL DIR`` / ``ledger import DIR URL``):
:func:`scopeledger._pgstore.copy_log`, on a real server, between two schemas
and from a ledger directory (FileStore) to a schema and back."""

from __future__ import annotations

import orjson
import pytest

from scopeledger import CorruptLedger, LedgerError
from scopeledger._events import line_hash
from scopeledger._logstore import copy_log
from scopeledger._pgstore import PgStore

import pgserver


def _line(seq: int, ts: int, **payload: object) -> bytes:
    return orjson.dumps({"v": 2, "seq": seq, "ts": ts, **payload})


@pytest.fixture
def two(pg_cluster):
    urls = [pg_cluster.url(pgserver.new_schema_name()) for _ in range(2)]
    stores = [PgStore.open(u, create=True) for u in urls]
    yield stores
    for st in stores:
        st.close()
    for u in urls:
        pg_cluster.psql_execute(f"DROP SCHEMA IF EXISTS {u.rsplit('=', 1)[1]} CASCADE")


def _fill(st: PgStore, n: int) -> None:
    stamps = [1000 + 10 * i - (300 if i % 7 == 3 else 0) for i in range(1, n + 1)]  # clocks stepping back
    with st.locked(0, 60):
        st.append([(t, _line(i, t, x="\u00e9\\u0000")) for i, t in enumerate(stamps, 1)], 1)
    for seq in (5, 12):
        (_, ln), = st.read_after(seq - 1, limit=1)
        st.snapshot_write({"format": 4, "seq": seq, "last_hash": line_hash(ln), "ts": seq, "checksum": "c" * 32},
                          orjson.dumps({"seq": seq}))


def test_a_copy_is_byte_for_byte_with_its_snapshots_and_answers_the_same(two):
    a, b = two
    _fill(a, 23)
    assert copy_log(a, b, page=4) == 23
    assert b.read_after(0) == a.read_after(0)
    assert b.snapshot_seqs() == a.snapshot_seqs() == [5, 12]
    assert all(b.snapshot_read(q) == a.snapshot_read(q) for q in (5, 12))
    for t in range(900, 1300, 7):
        assert (b.seq_at(t), b.time_point(t)) == (a.seq_at(t), a.time_point(t))


def test_a_copy_goes_only_into_an_empty_ledger_and_stops_if_someone_else_appends(two, pg_cluster):
    a, b = two
    _fill(a, 13)
    with b.locked(0, 60):
        b.append([(1, _line(1, 1))], 1)
    with pytest.raises(LedgerError, match="not empty"):
        copy_log(a, b)
    assert [q for q, _ in b.read_after(0)] == [1]

    url = pg_cluster.url(pgserver.new_schema_name())
    c = PgStore.open(url, create=True)
    intruder = PgStore.open(url)

    class Interleaved:
        """``c``, with a foreign line appended before its second transaction."""
        calls = 0

        def __getattr__(self, name):
            return getattr(c, name)

        def locked(self, after, timeout=None):
            Interleaved.calls += 1
            if Interleaved.calls == 2:
                with intruder.locked(after, 60):
                    intruder.append([(5, _line(after + 1, 5, who="intruder"))], after + 1)
            return c.locked(after, timeout)
    with pytest.raises(LedgerError, match="appended to during the copy"):
        copy_log(a, Interleaved(), page=4)
    assert c.read_after(0)[:4] == a.read_after(0)[:4] and c.head() == 5  # a prefix, and the intruder's line
    intruder.close()
    c.close()


def test_a_damaged_source_is_not_copied_past_the_damage(two, pg_cluster):
    a, b = two
    with a.locked(0, 60):
        a.append([(1, _line(1, 1)), (2, _line(2, 2))], 1)
    pg_cluster.psql_execute(f"ALTER TABLE {a.schema}.events DISABLE TRIGGER events_next_seq")
    pg_cluster.psql_execute(f"INSERT INTO {a.schema}.events (seq, ts, ts_max, line) VALUES (3, 3, 3, 'not json')")
    with pytest.raises(CorruptLedger, match="line 3 is not an event line"):
        copy_log(a, b, page=2)
    assert [q for q, _ in b.read_after(0)] == [1, 2]


def test_a_file_ledger_goes_to_postgresql_and_back_byte_for_byte_and_verifies(pg_cluster, tmp_path):
    """The file direction (the file store speaks the store interface now):
    a ledger written by real Ledger writers, with a snapshot, copied into a
    schema and out into a new directory, is the same bytes and passes
    ``verify`` on the file backend (issue 15: an exported ledger verifies)."""
    from scopeledger import Ledger, ScopeRule
    from scopeledger._filestore import FileStore

    first = str(tmp_path / "first")
    with Ledger.open(first) as led:
        for k in range(25):
            led.register(f"h{k}", [ScopeRule(f"/x/{k}", "write")])
            if k % 3 == 0:
                led.release(f"h{k}")
        led.snapshot()
    url = pg_cluster.url(pgserver.new_schema_name())
    src, pg, out = FileStore.open(first), PgStore.open(url, create=True), FileStore.open(str(tmp_path / "back"),
                                                                                           create=True)
    try:
        n = copy_log(src, pg)
        assert n == src.head() == pg.head() and copy_log(pg, out) == n
        assert out.read_after(0) == pg.read_after(0) == src.read_after(0)
        assert out.snapshot_seqs() == pg.snapshot_seqs() == src.snapshot_seqs() != []
        assert all(out.snapshot_read(q) == src.snapshot_read(q) for q in src.snapshot_seqs())
    finally:
        for st in (src, pg, out):
            st.close()
        pg_cluster.psql_execute(f"DROP SCHEMA IF EXISTS {url.rsplit('=', 1)[1]} CASCADE")
    with Ledger.open(str(tmp_path / "back")) as back:
        report = back.verify()
        assert report.ok and report.problems == () and report.events == n and report.snapshots >= 1, report


@pytest.mark.parametrize("damage", ["altered", "garbage", "seq", "last"])
def test_a_damaged_ledger_is_refused_whole_before_anything_is_made(tmp_path, damage):
    """copy_ledger (ledger import/export) reads SOURCE through first: a line
    altered after the fact (valid JSON, off the hash chain), a garbage line
    or a line out of seq order is refused, naming it, before DEST is made:
    a copy never moves damage to a server, where nothing can be cut. (The
    newcomer's finding: an altered line was copied, exit 0, into a schema
    then unusable and unrepairable.)"""
    from scopeledger import Ledger, ScopeRule, copy_ledger

    src, dest = tmp_path / "src", tmp_path / "dest"
    with Ledger.open(src) as led:
        for i in range(6):
            led.register(f"h{i}", [ScopeRule(f"/t/{i}", "write")])
    log = src / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    if damage == "altered":
        lines[2] = lines[2].replace(b"/t/2", b"/t/X")
    elif damage == "garbage":
        lines.append(b'{"not": "an event"}\n')
    elif damage == "seq":
        lines[4], lines[5] = lines[5], lines[4]
    else:  # the last line altered: no line after it holds its hash, verify still refuses it
        with Ledger.open(src) as led:
            led.release("h5")
        lines = log.read_bytes().splitlines(keepends=True)
        lines[-1] = lines[-1].replace(b'"h5"', b'"h9"')
    log.write_bytes(b"".join(lines))
    with pytest.raises(CorruptLedger) as err:
        copy_ledger(src, dest)
    assert err.value.line == {"altered": 3, "garbage": 7, "seq": 5, "last": 7}[damage], err.value  # the damaged line
    assert not dest.exists()
    from helpers import invoke

    res = invoke(["import", str(src), str(dest)])
    assert res.returncode == 4 and "Traceback" not in res.stderr and "line" in res.stderr, res
    assert not dest.exists()
