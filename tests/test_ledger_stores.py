"""The same ``Ledger`` over every store (issue 14's seam, issue 15's first
step): a representative scenario (register, delegate, a conflict refused,
release, a dead holder reclaimed, snapshots, show, replay, verify, time
travel by seq and by time, reopening from a snapshot) runs against the file
store, the in-memory store and the PostgreSQL store, and every answer, the
log's bytes included, is the same on each; on PostgreSQL the holders also
carry the client session of the ledger that granted them (``process.session``:
scopeledger._sessions), so its lines are compared with those keys, and the
hash chain they change, taken out.

Stores as in ``tests/test_store_contract.py``: the PostgreSQL one runs on the
worker's throwaway cluster (``tests/pgserver.py``; skipped with the reason
where PostgreSQL is not installed), a schema per test, opened by URL
(``Ledger.open("postgresql://...")``).
"""

from __future__ import annotations

import contextlib
import itertools
import time

import orjson
import pytest

from scopeledger import Ledger, Liveness, ScopeConflict
from scopeledger._memstore import MemoryLog, MemoryStore
from helpers import Rd, W

#: The pid the probe below calls gone (pid 1 exists, so it can be bound to).
GHOST = 1
T0 = 1_700_000_000_000_000_000  # ns: the scenario's clock starts here


def _probe(ident):
    return Liveness.GONE if ident.pid == GHOST else Liveness.ALIVE


def _clock():
    ticks = itertools.count()
    return lambda: T0 + next(ticks) * 1_000_000_000  # one second per event


OPTIONS = dict(timeout=30, probe=_probe, snapshot_every=3, keep_snapshots=None)


def _file(tmp_path, request):
    path = str(tmp_path / "ledger")
    return lambda clock: Ledger.open(path, clock=clock, **OPTIONS)


def _memory(tmp_path, request):
    backing = MemoryLog()
    return lambda clock: Ledger(MemoryStore(backing), fsync=False, resolve_symlinks=True, clock=clock, **OPTIONS)


def _postgresql(tmp_path, request):
    url = request.getfixturevalue("pg_url")
    assert url.startswith("postgresql://")
    return lambda clock: Ledger.open(url, clock=clock, **OPTIONS)


STORES = {"file": _file, "memory": _memory, "postgresql": _postgresql}


def scenario(opener):
    """Everything the scenario answers, as plain data."""
    clock = _clock()
    out = {}
    led = opener(clock)
    other = opener(clock)  # a second opening of the same ledger
    try:
        build = led.register("build", [W("/work/src"), Rd("/work/shared")])
        test = led.delegate("build", "build.test", [W("/work/src/tests")])
        out["grants"] = [(build.name, build.token, build.parent), (test.name, test.token, test.parent)]
        with pytest.raises(ScopeConflict) as refused:
            other.register("intruder", [W("/work/src/x")])  # the other opening sees build's grant
        out["refused"] = str(refused.value)
        led.register("ghost", [W("/work/ghost")], pid=GHOST)
        led.release("build.test")
        report = other.reclaim()
        out["reclaimed"] = [(r.name, r.reason) for r in report.reclaimed]
        out["kept"] = sorted(name for name, _ in report.kept)
        led.register("late", [W("/work/late")])
        out["show"] = [(a.name, a.token, a.parent, [r.to_json() for r in a.rules]) for a in led.holders()]
        out["other_show"] = [(a.name, a.token) for a in other.holders()]
        out["replay"] = [(e.seq, e.ts, e.type) for e in led.events()]
        out["lines"] = [line for _, line in led.event_lines()]
        out["since"] = [e.seq for e in led.events(since=4)]
        out["history"] = [(e.seq, e.type) for e in led.history("build")]
        report = led.verify()
        out["verify"] = (report.ok, report.events, report.snapshots, report.problems)
        out["state_at_3"] = led.state_at(seq=3).to_json()
        out["state_at_t"] = led.state_at(time=T0 + 4 * 1_000_000_000).to_json()
        out["time_point"] = led.time_point(T0 + 2 * 1_000_000_000).seq
        out["who"] = [(h.name, h.deepest) for h in led.who("/work/src/tests/a")]
        out["diff"] = repr(led.diff(2, 6))
        out["seq"] = led.refresh()
    finally:
        led.close()
        other.close()
    again = opener(_clock())  # opens from the newest snapshot
    try:
        out["reopened"] = ([(a.name, a.token) for a in again.holders()], again.stats.snapshot_seq,
                           again.state().to_json() == again.state_at(seq=again.refresh()).to_json())
    finally:
        again.close()
    return out


def test_the_scenario_on_a_file_answers_what_it_should(tmp_path, request):
    got = scenario(_file(tmp_path, request))
    assert [n for n, *_ in got["grants"]] == ["build", "build.test"]
    assert "conflicts with holder 'build'" in got["refused"]
    assert [n for n, _ in got["reclaimed"]] == ["ghost"]
    assert [n for n, *_ in got["show"]] == ["build", "late"]
    assert got["other_show"] == [(n, t) for n, t, *_ in got["show"]]
    assert [t for _, _, t in got["replay"]] == ["registered", "delegated", "refused", "registered",
                                               "released", "reclaimed", "registered"]
    assert got["since"] == [4, 5, 6, 7]
    assert got["verify"][0] and got["verify"][1] == 7 and got["verify"][2] >= 1
    assert got["time_point"] == 3
    assert got["reopened"][1] >= 6 and got["reopened"][2]


def _without_sessions(out: dict) -> tuple[dict, set]:
    """A PostgreSQL scenario's answers with the client sessions its holders
    carry (``process.session``, scopeledger._sessions) taken out, and the
    sessions seen. Its lines then differ from a file's by those keys alone,
    and so by the hash chain after the first grant (``prev``: each store's
    chain is checked by its own ``verify``, compared below)."""
    seen: set = set()

    def strip(value):
        if isinstance(value, dict):
            if "session" in value and "pid" in value:
                seen.add(value["session"])
            return {k: strip(v) for k, v in value.items() if not (k == "session" and "pid" in value)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out = dict(out)
    out["lines"] = [strip({k: v for k, v in orjson.loads(line).items() if k != "prev"}) for line in out["lines"]]
    for key in ("state_at_3", "state_at_t"):
        out[key] = strip({k: v for k, v in out[key].items() if k != "last_hash"})
    return out, seen


@pytest.mark.parametrize("store", sorted(set(STORES) - {"file"}))
def test_every_store_answers_as_the_file_store(tmp_path, request, store):
    on_file = scenario(_file(tmp_path / "f", request))
    on_store = scenario(STORES[store](tmp_path / "s", request))
    assert on_store.keys() == on_file.keys()
    if store == "postgresql":  # its holders carry the client session of the ledger that granted them
        on_store, sessions = _without_sessions(on_store)
        on_file, none = _without_sessions(on_file)
        assert none == set()  # a file ledger records none
        assert len(sessions) == 1, sessions  # every grant was by one opening: one session
    for key in on_file:
        assert on_store[key] == on_file[key], key


@pytest.mark.parametrize("store", sorted(STORES))
def test_a_waiter_is_granted_when_the_holder_in_the_way_releases_on_every_store(tmp_path, request, store):
    import threading
    import time

    opener = STORES[store](tmp_path, request)
    holder, waiter = opener(time.time_ns), opener(time.time_ns)
    try:
        holder.register("first", [W("/work/w")])
        got = []
        t = threading.Thread(target=lambda: got.append(waiter.register("second", [W("/work/w")], wait=60)))
        t.start()
        deadline = time.monotonic() + 60
        while not any(e.type == "refused" for e in holder.events()) and time.monotonic() < deadline:
            time.sleep(0.01)  # (polling a real condition: the waiter's refusal is on record)
        holder.release("first")
        t.join(60)
        assert not t.is_alive() and [a.name for a in got] == ["second"]
        assert [a.name for a in holder.holders()] == ["second"]
        assert waiter.refresh() == holder.refresh()
    finally:
        holder.close()
        waiter.close()


def test_ledger_wait_is_woken_by_another_opening_of_a_memory_store(tmp_path, request):
    # (the file store's wait polls the log's size, tests/test_ledger.py; the
    # PostgreSQL store's is LISTEN/NOTIFY, tests/test_pgstore.py)
    import threading
    import time

    opener = _memory(tmp_path, request)
    a, b = opener(time.time_ns), opener(time.time_ns)
    seen = []
    t = threading.Thread(target=lambda: seen.append(a.wait(0, timeout=60)))
    t.start()
    b.register("x", [W("/work/x")])
    t.join(60)
    assert seen == [1]
    assert a.wait(1, timeout=0) == 1  # the time ran out: the newest seq


# -- PostgreSQL: one round trip while no one else appends (Ledger._speculative_part)

class _Calls:
    """Counts a PostgreSQL ledger's calls to its store's ``locked`` and
    ``try_append`` (and what ``try_append`` answered)."""

    def __init__(self, led):
        self.locked = 0
        self.answers = []
        store = led._log
        locked, try_append = store.locked, store.try_append

        def counted_locked(*a, **kw):
            self.locked += 1
            return locked(*a, **kw)

        def counted_try_append(*a, **kw):
            got = try_append(*a, **kw)
            self.answers.append(got)
            return got
        store.locked = counted_locked
        led._try_append = counted_try_append


@contextlib.contextmanager
def _two_pg_openings(tmp_path, request):
    """Two openings ``(led, other)`` of one PostgreSQL ledger on the real
    clock, and a :class:`_Calls` counting ``led``'s; both closed after."""
    opener = _postgresql(tmp_path, request)
    led, other = opener(time.time_ns), opener(time.time_ns)
    try:
        yield led, other, _Calls(led)
    finally:
        led.close()
        other.close()


def test_on_postgresql_a_lone_writer_appends_without_the_locked_round_trip_and_never_on_a_stale_state(
        tmp_path, request):
    from scopeledger import UnknownHolder

    with _two_pg_openings(tmp_path, request) as (led, other, calls):
        led.register("a", [W("/work/a")])  # the first change of an opening takes the lock
        led.release("a")
        before = calls.locked
        for i in range(5):
            led.register(f"t{i}", [W(f"/work/t{i}")])
            led.release(f"t{i}")
        assert calls.locked == before and calls.answers[-10:] == [True] * 10
        # Another opening appends: a grant decided on the state without it is
        # not appended, and is decided again under the lock, on the log.
        other.register("b", [W("/work/b")])
        with pytest.raises(ScopeConflict, match="holder 'b'"):
            led.register("intruder", [W("/work/b/x")])
        assert calls.answers[-1] is False and calls.locked == before + 1
        other.register("c", [W("/work/c")])
        led.release("c")  # unknown to led's state until it read the log: not UnknownHolder
        assert [h.name for h in other.holders()] == ["b"]
        with pytest.raises(UnknownHolder):
            led.release("c")
        report = led.verify()
        assert report.ok and report.events == led.refresh()
        kinds = [e.type for e in led.events()]
        assert kinds.count("registered") == 8 and kinds.count("refused") == 1


def test_on_postgresql_a_try_that_reclaimed_and_was_not_appended_is_decided_again_on_the_log(
        tmp_path, request):
    with _two_pg_openings(tmp_path, request) as (led, other, calls):
        led.register("ghost", [W("/work/x")], pid=GHOST)
        led.register("mine", [W("/work/m")])  # now led is the lone writer
        other.register("o", [W("/work/o")])
        got = led.register("new", [W("/work/x/y")])  # reclaims ghost (applied to led's state), then grants
        assert calls.answers[-1] is False  # the try with the reclaim was not appended: o's line came first
        assert got.name == "new"
        assert sorted(h.name for h in other.holders()) == ["mine", "new", "o"]
        kinds = [(e.type, e.data.get("name")) for e in other.events()]
        assert kinds.count(("reclaimed", "ghost")) == 1
        assert led.verify().ok and led.state().to_json() == other.state().to_json()


def test_on_postgresql_lines_missed_are_read_with_the_lock_unless_the_log_was_not_read_for_long(
        tmp_path, request):
    """Reading what others appended before taking the lock costs a round
    trip on a server: a ledger changing often reads them with the lock;
    one whose last change is older than _PREREAD_AFTER_S reads them first
    (folding many lines under the lock would hold it that much longer)."""
    with _two_pg_openings(tmp_path, request) as (led, other, calls):
        reads = []
        read_after = led._log.read_after
        led._log.read_after = lambda *a, **kw: reads.append(a) or read_after(*a, **kw)
        led.register("a", [W("/work/a")])  # (its first change: read first)
        del reads[:]
        led.register("a2", [W("/work/a2")])
        other.register("b", [W("/work/b")])
        led.register("c", [W("/work/c")])  # tried, not appended (b came first), then locked
        other.register("d", [W("/work/d")])
        led.register("e", [W("/work/e")])  # others are active: read with the lock
        assert reads == [] and calls.answers.count(False) == 1
        led._seen_at = 0.0  # its last change long ago
        other.register("f", [W("/work/f")])
        led.register("g", [W("/work/g")])
        assert len(reads) == 1
        assert [h.name for h in led.holders()] == ["a", "a2", "b", "c", "d", "e", "f", "g"]
        assert led.verify().ok and led.state().to_json() == other.state().to_json()


def _contender(url, idx, rounds, q):
    try:
        led = Ledger.open(url, timeout=60)
        for j in range(rounds):
            name = f"p{idx}-{j}"
            led.register(name, [W("/shared/x")], wait=60)
            if j % 3 == 0:
                led.register(f"{name}-own", [W(f"/own/{idx}")])  # changes of its own in between
                led.release(f"{name}-own")
            led.release(name)
        led.close()
        q.put((idx, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        q.put((idx, repr(exc)))


def test_on_postgresql_processes_contending_for_one_scope_never_hold_it_together(tmp_path, request):
    """Four processes take turns on one scope (register with wait=, release),
    with changes of their own in between: a change tried on a stale state
    is never appended (a grant over a live holder would be), so the log
    never has two holders of the scope at once, and it is gapless and
    verifies."""
    import multiprocessing

    url = request.getfixturevalue("pg_url")
    Ledger.open(url).close()
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    rounds = 15
    procs = [ctx.Process(target=_contender, args=(url, i, rounds, q)) for i in range(4)]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(60)
    assert results == [(i, None) for i in range(4)]
    with Ledger.open(url) as led:
        report = led.verify()
        assert report.ok, report.problems
        holding = set()
        grants = 0
        for ev in led.events():
            if ev.type == "registered" and ev.data["holder"]["rules"][0][0] == "/shared/x":
                assert not holding, (ev.seq, ev.data["holder"]["name"], holding)
                holding.add(ev.data["holder"]["name"])
                grants += 1
            elif ev.type == "released":
                holding.discard(ev.data["name"])
        assert grants == 4 * rounds and not holding and led.holders() == []
