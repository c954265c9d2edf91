"""The store contract (``scopeledger/_logstore.py``), run against every store.

A store joins with one more entry in ``STORES``: a function ``(tmp_path,
request) -> make`` where ``make(readonly=False)`` opens one more store object
on the same ledger (the first call creates it). The PostgreSQL store runs on
a throwaway cluster (``tests/pgserver.py``; skipped with the reason where
PostgreSQL is not installed).
File-only behaviour (torn tails, the snapshot files' bytes) is at the end.
"""

from __future__ import annotations

import os
import threading

import orjson
import pytest

from scopeledger import CorruptLedger, Ledger, LockTimeout, ReadOnlyLedger, ScopeRule
from scopeledger._errors import SnapshotInvalid
from scopeledger._events import line_hash
from scopeledger._filestore import FileStore
from scopeledger._fold import SNAPSHOT_FORMAT
from scopeledger._memstore import MemoryLog, MemoryStore

from helpers import wait_for

BOUND = 60.0  # seconds: a generous bound on waits for a real condition


def _file(tmp_path, request):
    path = str(tmp_path / "ledger")
    return lambda readonly=False: FileStore.open(path, create=not readonly, readonly=readonly)


def _memory(tmp_path, request):
    backing = MemoryLog()
    return lambda readonly=False: MemoryStore(backing, readonly=readonly)


def _postgresql(tmp_path, request):
    # A schema of its own on the worker's throwaway cluster (tests/pgserver.py):
    # skipped, with the reason, where PostgreSQL's binaries or psycopg are missing.
    from scopeledger._pgstore import PgStore

    url = request.getfixturevalue("pg_url")
    return lambda readonly=False: PgStore.open(url, create=not readonly, readonly=readonly)


STORES = {"file": _file, "memory": _memory, "postgresql": _postgresql}


@pytest.fixture(params=sorted(STORES))
def make(request, tmp_path):
    opener = STORES[request.param](tmp_path, request)
    opened = []

    def make_store(readonly=False):
        st = opener(readonly=readonly)
        opened.append(st)
        return st

    yield make_store
    for st in opened:
        st.close()


@pytest.fixture
def store(make):
    return make()


def line(seq, ts=None, **payload):
    return orjson.dumps({"v": 2, "seq": seq, "ts": seq if ts is None else ts, **payload})


def append(st, *timestamps, payload=None):
    """Append one line per ts under the lock; returns the seqs."""
    seen = st.head()
    with st.locked(seen, BOUND) as missed:
        first = seen + len(missed) + 1
        entries = [(ts, line(first + i, ts, **(payload or {}))) for i, ts in enumerate(timestamps)]
        st.append(entries, first)
    return list(range(first, first + len(timestamps)))


# -- reading and appending ---------------------------------------------------


def test_only_the_open_that_made_the_store_says_it_created_it(make):
    first = make()
    assert first.created is True
    assert make().created is False and make(readonly=True).created is False

def test_an_empty_store_has_no_lines(store):
    assert store.head() == 0
    assert store.read_after(0) == []
    assert store.seq_at(10**18) == 0
    assert store.snapshot_seqs() == []
    assert not store.readonly
    assert isinstance(store.location, str) and store.location


def test_lines_come_back_byte_for_byte_with_their_seqs(store):
    with store.locked(0, BOUND) as missed:
        assert missed == []
        entries = [(1, line(1, 1, path="/é/ü")), (2, line(2, 2)), (3, line(3, 3, x="\\u202e"))]
        store.append(entries, 1)
    assert store.read_after(0) == [(1, entries[0][1]), (2, entries[1][1]), (3, entries[2][1])]
    assert store.read_after(1, limit=1) == [(2, entries[1][1])]
    assert store.read_after(3) == []
    assert store.head() == 3


def test_paging_through_a_long_log(store):
    append(store, *range(1, 10_001))
    got, seen = [], 0
    while page := store.read_after(seen, limit=777):
        got.extend(page)
        seen = page[-1][0]
    assert [s for s, _ in got] == list(range(1, 10_001))
    assert got[4096] == (4097, line(4097, 4097))
    assert store.read_after(9_998) == [(9_999, line(9_999, 9_999)), (10_000, line(10_000, 10_000))]


def test_another_store_object_sees_the_lines_and_gets_what_it_missed(make):
    a = make()
    b = make()
    append(a, 1, 2)
    assert b.read_after(0) == a.read_after(0)
    with b.locked(1, BOUND) as missed:
        assert missed == [(2, line(2))]
        b.append([(3, line(3))], 3)
    assert a.read_after(2) == [(3, line(3))]


def test_reading_past_the_log_or_a_bad_seq_is_refused(store):
    append(store, 1)
    with pytest.raises(CorruptLedger):
        store.read_after(5)
    with pytest.raises(ValueError):
        store.read_after(-1)
    with pytest.raises(ValueError):
        store.read_after(0, limit=0)
    with pytest.raises(CorruptLedger):
        with store.locked(5, BOUND):
            pass
    append(store, 2)  # the failed lock was let go


# -- the lock ----------------------------------------------------------------

def test_append_is_once_per_locked_with_the_next_seq(store):
    with pytest.raises(RuntimeError):
        store.append([(1, line(1))], 1)
    with store.locked(0, BOUND):
        with pytest.raises(ValueError):
            store.append([(2, line(2))], 2)  # not the next seq
        with pytest.raises(ValueError):
            store.append([], 1)
        with pytest.raises(ValueError):
            store.append([(1, line(1) + b"\n" + line(2))], 1)
        store.append([(1, line(1))], 1)
        with pytest.raises(RuntimeError):
            store.append([(2, line(2))], 2)
    assert store.read_after(0) == [(1, line(1))]


def test_leaving_the_block_without_append_records_nothing_and_lets_go(make):
    a, b = make(), make()
    with a.locked(0, BOUND):
        pass
    with pytest.raises(KeyError):
        with a.locked(0, BOUND):
            raise KeyError("boom")
    assert a.head() == 0
    with b.locked(0, 0):  # one try: free
        pass


def test_the_lock_excludes_another_store_until_append_ends_it(make):
    a, b = make(), make()
    inside, tried, result = threading.Event(), threading.Event(), {}

    def other():
        assert inside.wait(BOUND)
        try:
            with b.locked(0, 0):
                result["first"] = "granted"
        except LockTimeout:
            result["first"] = "timeout"
        tried.set()

    t = threading.Thread(target=other)
    t.start()
    with a.locked(0, BOUND):
        inside.set()
        assert tried.wait(BOUND)
        a.append([(1, line(1))], 1)
        # append ended the locked section, before the block's end
        with b.locked(1, 0) as missed:
            assert missed == []
    t.join(BOUND)
    assert result["first"] == "timeout"


def test_a_waiting_locker_gets_the_lock_and_the_line_it_missed(make):
    a, b = make(), make()
    got = {}
    inside = threading.Event()

    def other():
        assert inside.wait(BOUND)
        with b.locked(0, BOUND) as missed:
            got["missed"] = missed
            b.append([(2, line(2))], 2)

    t = threading.Thread(target=other)
    t.start()
    with a.locked(0, BOUND):
        inside.set()
        a.append([(1, line(1))], 1)
    t.join(BOUND)
    assert got["missed"] == [(1, line(1))]
    assert a.read_after(0) == [(1, line(1)), (2, line(2))]


def test_a_read_only_store_reads_and_refuses_to_write(make):
    writer = make()
    append(writer, 1)
    ro = make(readonly=True)
    assert ro.readonly
    assert ro.read_after(0) == [(1, line(1))]
    with pytest.raises(ReadOnlyLedger):
        with ro.locked(1, BOUND):
            pass
    with pytest.raises(ReadOnlyLedger):
        ro.snapshot_write(_header(writer, 1), b"{}")


# -- waiting and time ------------------------------------------------------------

def test_wait_returns_the_head_or_times_out(make):
    a, b = make(), make()
    assert a.wait(0, timeout=0) == 0
    append(b, 1)
    assert a.wait(0, timeout=BOUND) == 1
    assert a.wait(1, timeout=0.01) == 1


def test_wait_is_woken_by_an_append(make):
    a, b = make(), make()
    started = threading.Event()
    got = {}

    def waiter():
        started.set()
        got["head"] = a.wait(0, timeout=BOUND)

    t = threading.Thread(target=waiter)
    t.start()
    assert started.wait(BOUND)
    append(b, 1)
    t.join(BOUND)
    assert got["head"] == 1


def test_seq_at_is_the_last_seq_before_the_first_later_line(store):
    append(store, 10, 20, 15, 30)  # a clock stepped back at seq 3
    assert [store.seq_at(t) for t in (5, 10, 15, 19, 20, 29, 30, 100)] == [0, 1, 1, 1, 3, 3, 4, 4]


def test_appended_ago_is_the_stores_own_clock_or_none_without_one(make, request):
    store = make()
    append(store, 10, 20)
    append(store, 5)  # a writer's clock behind: the store's own clock is not the lines' ts
    got = store.appended_ago([1, 2, 3, 99])
    if "postgresql" not in request.node.callspec.id:
        assert got is None  # no clock of its own: leases are judged on the writers' boot-time clocks
        return
    # The server's clock: every line appended here has an age (ns, >= 0, the
    # later line no older), one not in the log none.
    assert set(got) == {1, 2, 3} and all(type(v) is int and v >= 0 for v in got.values())
    assert got[3] <= got[1] and got[1] == max(got.values())
    assert store.appended_ago([]) == {}
    assert make(readonly=True).appended_ago([2]).keys() == {2}  # a reader asks the same server
    with pytest.raises(ValueError, match="seq"):
        store.appended_ago([0])


# -- snapshots -----------------------------------------------------------------

def _header(st, seq):
    (_, ln), = st.read_after(seq - 1, limit=1)
    return {"format": SNAPSHOT_FORMAT, "seq": seq, "last_hash": line_hash(ln), "ts": seq, "checksum": "c" * 32}


def test_a_snapshot_is_read_back_as_written(store):
    append(store, 1, 2, 3)
    body = orjson.dumps({"seq": 2, "holders": {}})
    store.snapshot_write(_header(store, 2), body)
    assert store.snapshot_seqs() == [2]
    header, got = store.snapshot_read(2)
    assert header == _header(store, 2)
    assert got == body
    store.snapshot_write(_header(store, 3), b"{}")
    assert store.snapshot_seqs() == [2, 3]
    store.snapshot_delete(2)
    store.snapshot_delete(2)  # none there: no error
    assert store.snapshot_seqs() == [3]
    with pytest.raises(SnapshotInvalid):
        store.snapshot_read(2)


def test_a_snapshot_must_name_a_line_of_the_log_and_match_it(make):
    st = make()
    append(st, 1, 2)
    with pytest.raises(ValueError):
        st.snapshot_write(dict(_header(st, 2), seq=3), b"{}")
    st.snapshot_write(dict(_header(st, 2), last_hash="0" * 32), b"{}")
    with pytest.raises(SnapshotInvalid, match="does not match the log at seq 2"):
        make().snapshot_read(2)


# -- the file store only ---------------------------------------------------------

def _drop_lock(ticket):
    """Let go of a ticket's lock as its waiter's death would (a file
    ticket's descriptor closed; a server ticket's connection closed)."""
    if hasattr(ticket, "fd"):
        from scopeledger import _filetickets

        _filetickets._ticket_fds.discard(ticket.fd)
        os.close(ticket.fd)
    else:
        ticket.conn.close()


def test_the_waiters_queue_keeps_join_order_and_forgets_who_leaves_or_dies(make):
    """``LogStore.tickets()``: numbers in join order; another store object
    on the same ledger sees the same tickets, nearest first, with their
    requests; a ticket that left is gone (at once for the store that gave
    it back, for others once the server has the leave), one whose lock went
    is found dead and removed; the memory store keeps no queue."""
    st, other = make(), make()
    q = st.tickets()
    if q is None:
        assert isinstance(st, MemoryStore)
        return
    assert q is st.tickets() and list(q.earlier(None)) == []
    a, b, c = q.join(b'{"a": 1}'), q.join(b'{"b": 2}'), other.tickets().join(b'{"c": 3}')
    assert a.number < b.number < c.number
    seen = other.tickets()
    listed = list(seen.earlier(None))
    assert [n for n, _, _ in listed] == [c.number, b.number, a.number]
    assert [seen.read(h) for _, _, h in listed] == [b'{"c": 3}', b'{"b": 2}', b'{"a": 1}']
    assert all(seen.alive(h) for _, _, h in listed) and len({k for _, k, _ in listed}) == 3
    assert [n for n, _, _ in seen.earlier(c.number)] == [b.number, a.number]
    q.leave(b)
    q.leave(b)  # (twice: once)
    assert [n for n, _, _ in q.earlier(None)] == [c.number, a.number]  # at once for the store that left
    # Another store: once the server has the leave, which a server store
    # sends without waiting for its answer (PgTickets.leave).
    wait_for(lambda: [n for n, _, _ in seen.earlier(None)] == [c.number, a.number], BOUND, "b's leave seen")
    _drop_lock(a)  # (a server lets go of a closed connection's lock when its backend has ended)
    wait_for(lambda: [n for n, _, h in seen.earlier(None) if seen.alive(h)] == [c.number], BOUND,
             "the dead ticket found dead")
    assert [n for n, _, _ in seen.earlier(None)] == [c.number]  # the dead one was removed
    assert not q.lost(c)
    d = q.join(b"{}")
    assert d.number > c.number  # (numbers grow while the queue holds a ticket)
    other.tickets().leave(c)
    q.leave(d)
    # (d was left by the other store: seen once the server has the leave, as b's above)
    wait_for(lambda: list(seen.earlier(None)) == [], BOUND, "d's leave seen")
    with pytest.raises(ReadOnlyLedger):
        make(readonly=True).tickets().join(b"{}")


def test_file_a_torn_tail_is_not_read_and_is_set_aside_under_the_lock(tmp_path):
    st = FileStore.open(str(tmp_path / "l"))
    append(st, 1)
    with open(os.path.join(st.location, "events.jsonl"), "ab") as f:
        f.write(b'{"v":2,"seq":2,"ts"')
    assert st.read_after(0) == [(1, line(1))] and st.head() == 1
    with st.locked(1, BOUND) as missed:
        assert missed == []
        st.append([(2, line(2))], 2)
    assert len(st.torn) == 1 and open(st.torn[0], "rb").read() == b'{"v":2,"seq":2,"ts"'
    assert open(os.path.join(st.location, "events.jsonl"), "rb").read() == line(1) + b"\n" + line(2) + b"\n"
    st.close()


def test_file_wait_sees_an_append_landing_between_its_two_looks(tmp_path):
    """wait() looks at the head, then watches the log's size: an append
    landing between the two looks must wake it (it once measured the size
    after the head, took the new line's bytes for the old size, and slept
    until the timeout: the contract's wait test failed under load)."""
    path = str(tmp_path / "l")
    a, b = FileStore.open(path), FileStore.open(path)
    real_head = a.head

    def head_then_an_append() -> int:
        seq = real_head()
        if seq == 0:
            append(b, 1)  # lands right after the head was read
        return seq

    a.head = head_then_an_append  # type: ignore[method-assign]
    assert a.wait(0, timeout=BOUND) == 1
    a.close()
    b.close()


def test_file_snapshots_are_byte_for_byte_what_the_ledger_writes(tmp_path):
    path = str(tmp_path / "l")
    with Ledger.open(path, snapshot_every=3) as led:
        for i in range(4):
            led.register(f"h{i}", [ScopeRule(f"/r/{i}")])
    snapdir = os.path.join(path, "snapshots")
    (name,) = [n for n in os.listdir(snapdir) if n.startswith("snap-")]
    written = open(os.path.join(snapdir, name), "rb").read()
    st = FileStore.open(path)
    seq = int(name[5:21])
    header, body = st.snapshot_read(seq)
    assert "offset" not in header and "line_start" not in header
    st.snapshot_delete(seq)
    st.snapshot_write(header, body)
    assert open(os.path.join(snapdir, name), "rb").read() == written
    st.close()


def test_file_paging_through_the_log_reads_each_byte_about_once(tmp_path):
    # Reading on from where the last page ended, not from the nearest
    # 4096-line mark (pages before the tail were re-scanned from the start:
    # quadratic in the number of pages). Counted in bytes, not timed.
    path = str(tmp_path / "l")
    st = FileStore.open(path)
    append(st, *range(1, 3001))
    size = os.path.getsize(os.path.join(path, "events.jsonl"))
    fresh = FileStore.open(path)
    assert fresh.head() == 3000  # the tail is known: paging starts before it
    real, got = fresh.store.read, []

    def counting(start, end=None, chunk=1 << 20):
        for data in real(start, end, chunk):
            got.append(len(data))
            yield data
    fresh.store.read = counting
    seq, lines = 0, []
    while page := fresh.read_after(seq, limit=100):
        lines += page
        seq = page[-1][0]
    assert [s for s, _ in lines] == list(range(1, 3001))
    assert sum(got) < 3 * size, (sum(got), size)
    st.close()
    fresh.close()
