"""Snapshots: cheap opening, atomic writes, distrust of bad snapshots."""

import errno
import json
import logging
import os

import orjson
import pytest

from scopeledger import Ledger, ScopeRule

from history_gen import random_history

W = lambda p: ScopeRule(p, "write")  # noqa: E731


def churn(led, n, live=5):
    """n events: registers and releases over a small live set."""
    for i in range(n // 2):
        led.register(f"c{i}", [W(f"/churn/{i}")])
        led.release(f"c{i}")
    for i in range(live):
        if f"keep{i}" not in {a.name for a in led.holders()}:
            led.register(f"keep{i}", [W(f"/keep/{i}")])


def snapshot_files(path):
    return sorted(os.listdir(os.path.join(path, "snapshots")))


def test_open_with_long_history_folds_at_most_one_interval(ledger_dir):
    every = 100
    with Ledger.open(ledger_dir, snapshot_every=every) as led:
        churn(led, 2000)
        total = led.seq
        expected = led.holders()
    assert total >= 2000
    again = Ledger.open(ledger_dir, snapshot_every=every)
    assert again.holders() == expected
    assert again.stats.snapshot_seq > 0
    assert again.stats.events_folded <= every
    assert again.stats.events_folded == total - again.stats.snapshot_seq


def test_snapshot_file_format(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])
        assert led.snapshot() == 1
    (name,) = snapshot_files(ledger_dir)
    assert name == "snap-0000000000000001.json"
    header, body, rest = open(os.path.join(ledger_dir, "snapshots", name), "rb").read().split(b"\n")
    h = orjson.loads(header)
    assert rest == b""
    assert set(h) == {"format", "seq", "offset", "line_start", "last_hash", "ts", "checksum", "ledger"}
    assert h["ledger"] == open(os.path.join(ledger_dir, "ledger-id")).read().strip()  # (the ledger's id)
    assert h["seq"] == 1 and h["line_start"] == 0
    assert h["offset"] == os.path.getsize(os.path.join(ledger_dir, "events.jsonl"))
    assert orjson.loads(body)["holders"][0]["name"] == "a"


def corrupt_variants():
    def truncate(data):
        return data[: len(data) // 2]

    def flip_body(data):
        i = data.index(b'"holders"')
        return data[:i] + data[i:].replace(b'"a"', b'"b"', 1)

    def older_format(data):
        header, rest = data.split(b"\n", 1)
        h = orjson.loads(header)
        h["format"] = 0
        return orjson.dumps(h) + b"\n" + rest

    def wrong_seq(data):
        header, rest = data.split(b"\n", 1)
        h = orjson.loads(header)
        h["seq"] += 1
        return orjson.dumps(h) + b"\n" + rest

    def empty(data):
        return b""

    def not_json(data):
        return b"garbage\n" + data
    return [truncate, flip_body, older_format, wrong_seq, empty, not_json]


@pytest.mark.parametrize("damage", corrupt_variants(), ids=lambda f: f.__name__)
def test_bad_snapshot_is_skipped_with_a_warning(ledger_dir, damage, caplog):
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])
        led.snapshot()
        led.register("b", [W("/b")])
        led.snapshot()
        led.register("c", [W("/c")])
        expected = led.holders()
    newest = os.path.join(ledger_dir, "snapshots", snapshot_files(ledger_dir)[-1])
    data = open(newest, "rb").read()
    open(newest, "wb").write(damage(data))
    with caplog.at_level(logging.WARNING, logger="scopeledger"):
        again = Ledger.open(ledger_dir)
    assert again.holders() == expected
    assert again.stats.snapshot_seq == 1  # fell back to the older one
    assert again.stats.snapshots_skipped == ["snap-0000000000000002.json"]
    # the warning names the snapshot by its full path, not its bare name
    assert f"skipping snapshot: {newest}: " in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scopeledger"):
        assert again.state_at(seq=3).to_json() == again.state().to_json()
    assert f"skipping snapshot: {newest}: " in caplog.text
    report = again.verify()
    assert not report.ok and report.problems[0].file == newest
    assert newest not in report.problems[0].message  # named once, as the problem's file


def _failing(path, real, error=errno.EIO):
    """``real`` (``os.read``, ``os.pread``), failing with ``error`` on a
    descriptor of ``path``."""
    def fail(fd, *args):
        if os.readlink(f"/proc/self/fd/{fd}") == path:
            raise OSError(error, os.strerror(error))
        return real(fd, *args)
    return fail


@pytest.mark.parametrize("call", ["read", "pread"])
def test_an_unreadable_snapshot_is_skipped_naming_its_full_path(ledger_dir, monkeypatch, caplog, call):
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])
        led.snapshot()
        led.register("b", [W("/b")])
        led.snapshot()
        expected = led.holders()
    newest = os.path.join(ledger_dir, "snapshots", snapshot_files(ledger_dir)[-1])
    monkeypatch.setattr(os, call, _failing(newest, getattr(os, call)))
    with caplog.at_level(logging.WARNING, logger="scopeledger"):
        again = Ledger.open(ledger_dir)  # read: loading it; pread: its header, for time travel
        assert again.state_at(seq=2).to_json() == again.state().to_json()
    assert again.holders() == expected
    assert f"skipping snapshot: {newest}: cannot read: input/output error" in caplog.text


def test_files_the_os_will_not_remove_are_warnings_naming_them(ledger_dir, monkeypatch, caplog):
    # A stale temp file or an old snapshot past retention that cannot be
    # removed costs disk space, nothing else: the snapshot asked for is
    # written, and each file left is named in full (unlink relative to the
    # directory's descriptor named only the bare name, and stopped the command).
    snaps = os.path.join(ledger_dir, "snapshots")
    with Ledger.open(ledger_dir, keep_snapshots=1) as led:
        led.register("a", [W("/a")])
        led.snapshot()
        stale = os.path.join(snaps, ".tmp-999999-1")  # a writer gone long ago
        os.close(os.open(stale, os.O_WRONLY | os.O_CREAT, 0o600))
        led.register("b", [W("/b")])
        real_unlink = os.unlink

        def refuse(name, *args, dir_fd=None, **kwargs):
            if dir_fd is not None:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
            return real_unlink(name, *args, dir_fd=dir_fd, **kwargs)
        monkeypatch.setattr(os, "unlink", refuse)
        with caplog.at_level(logging.WARNING, logger="scopeledger"):
            assert led.snapshot() == 2
        monkeypatch.undo()
        assert f"could not remove stale snapshot temp file {stale}: permission denied" in caplog.text
        assert (f"could not remove old snapshot {snaps}/snap-0000000000000001.json: "
                "permission denied") in caplog.text
        assert sorted(os.listdir(snaps)) == [".tmp-999999-1", "snap-0000000000000001.json",
                                             "snap-0000000000000002.json"]
        led.register("c", [W("/c")])
        assert led.snapshot() == 3  # once the OS lets it, the next snapshot tidies up
    assert os.listdir(snaps) == ["snap-0000000000000003.json"]
    with Ledger.open(ledger_dir) as again:
        assert [a.name for a in again.holders()] == ["a", "b", "c"]
        assert again.verify().ok


def test_snapshot_not_matching_the_log_is_skipped(ledger_dir, tmp_path):
    # A snapshot from another ledger with the same seq: its hash does not match this log.
    other = str(tmp_path / "other")
    with Ledger.open(other) as led:
        led.register("intruder", [W("/x")])
        led.snapshot()
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])  # its line is shorter: the intruder's offset is past the end
    src = os.path.join(other, "snapshots", "snap-0000000000000001.json")
    dst = os.path.join(ledger_dir, "snapshots", "snap-0000000000000001.json")
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, open(src, "rb").read())
    os.close(fd)
    again = Ledger.open(ledger_dir)
    assert [a.name for a in again.holders()] == ["a"]
    assert again.stats.snapshots_skipped == ["snap-0000000000000001.json"]


def test_crash_after_snapshot_loses_nothing_and_duplicates_nothing(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        for i in range(10):
            led.register(f"h{i}", [W(f"/h/{i}")])
        led.snapshot()  # the crash comes "right after" this
    # A temp file from a writer killed before its rename is left too.
    tmp = os.path.join(ledger_dir, "snapshots", ".tmp-999999-1")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"format":1,"seq":99')
    os.close(fd)
    with Ledger.open(ledger_dir) as led:
        assert led.stats.events_folded == 0
        for i in range(10, 13):
            led.register(f"h{i}", [W(f"/h/{i}")])
        assert led.state_at(seq=led.seq).to_json() == led.state().to_json()
        assert len(led.holders()) == 13
        assert led.verify().ok
        led.snapshot()
    assert ".tmp-999999-1" not in os.listdir(os.path.join(ledger_dir, "snapshots"))
    again = Ledger.open(ledger_dir)
    assert again.stats.events_folded == 0 and len(again.holders()) == 13


def test_retention_keeps_the_newest(ledger_dir):
    with Ledger.open(ledger_dir, snapshot_every=10, keep_snapshots=2) as led:
        churn(led, 100)
    assert len(snapshot_files(ledger_dir)) == 2


def test_automatic_snapshots_every_n(ledger_dir):
    with Ledger.open(ledger_dir, snapshot_every=50) as led:
        churn(led, 200, live=0)
    seqs = [int(n[5:21]) for n in snapshot_files(ledger_dir)]
    assert seqs == [50, 100, 150, 200]


def test_state_equals_fresh_fold_after_random_history_with_snapshots(ledger_dir):
    with Ledger.open(ledger_dir, snapshot_every=7) as led:
        random_history(led, 300, seed=7)
        assert led.verify().ok
        assert Ledger.open(ledger_dir).state().to_json() == led.state().to_json()


def test_snapshot_body_states_every_holder_as_allocation_to_json(ledger_dir):
    # The snapshot writer serialises holders inline (its hot loop); it must say
    # exactly what Allocation.to_json says, for every field and shape.
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a"), ScopeRule("/r", "read", False)], socket="/run/a.sock")
        led.delegate("a", "b", [W("/a/b")], reserved=True)
        led.register("c", [ScopeRule("/r", "read")])
        state = led.state()
        expected = [alloc.to_json() for alloc in state.holders.values()]
        led.snapshot()
    (name,) = snapshot_files(ledger_dir)
    body = open(os.path.join(ledger_dir, "snapshots", name), "rb").read().split(b"\n")[1]
    assert orjson.loads(body)["holders"] == expected
    assert state.to_json()["holders"] == expected


def test_a_log_shorter_than_its_snapshot_opens_from_what_it_holds_and_says_what_was_lost(
        ledger_dir, caplog):
    # A power cut with fsync=False (or before snapshots flushed the log) can
    # leave the log shorter than a snapshot. On 813fdac that was
    # CorruptLedger for every command until snapshots were deleted by hand
    # (issue 19); now the ledger opens from the newest snapshot the log
    # still reaches, says what was lost, keeps working, and deletes nothing.
    from scopeledger import LostEvents, verify

    with Ledger.open(ledger_dir, snapshot_every=1000) as led:
        for i in range(10):
            led.register(f"h{i}", [W(f"/h/{i}")])
            if i in (3, 7):
                led.snapshot()
    log = os.path.join(ledger_dir, "events.jsonl")
    data = open(log, "rb").read()
    snaps = snapshot_files(ledger_dir)
    assert snaps == ["snap-0000000000000004.json", "snap-0000000000000008.json"]
    for kept_lines, opened_from in ((0, 0), (5, 4)):
        kept = b"".join(line + b"\n" for line in data.split(b"\n")[:kept_lines])
        with open(log, "wb") as f:
            f.write(kept)
        caplog.clear()
        with Ledger.open(ledger_dir, readonly=True) as led:  # a reader: 'ledger show'
            assert led.lost == LostEvents(kept_lines, 8, tuple(n for n in snaps if int(n[5:21]) > kept_lines))
            assert led.stats.snapshot_seq == opened_from
            assert [a.name for a in led.holders()] == [f"h{i}" for i in range(kept_lines)]
        assert (f"events lost: the log {log} ends at seq {kept_lines}, but snapshot "
                f"{ledger_dir}/snapshots/snap-0000000000000008.json was written at seq 8: events "
                f"{kept_lines + 1} to 8 were lost") in caplog.text
        assert snapshot_files(ledger_dir) == snaps  # nothing deleted
        rep = verify(ledger_dir)
        assert not rep.ok and "past the end of the log" in rep.problems[0].message
    # The first writer moves the snapshots past the log's end into cut/,
    # with a record (nothing deleted), keeps the lost seqs 6 to 8 void (a
    # repaired line and void lines, as a repair does: tokens 6 to 8 were
    # given, and a holder may still carry one), then goes on from seq 9.
    caplog.clear()
    with Ledger.open(ledger_dir, snapshot_every=1000) as led:
        assert led.lost is not None and led.lost.moved_to is not None
        assert led.lost.snapshots == ("snap-0000000000000008.json",)
        assert led.lost.void_through == 8 and led.seq == 8
        moved = led.lost.moved_to
        assert sorted(os.listdir(moved)) == ["record.json", "snap-0000000000000008.json"]
        record = json.load(open(os.path.join(moved, "record.json")))
        assert "events 6 to 8 (at least) were lost" in record["reason"] and record["kept_seq"] == 5
        assert (record["through"], record["proof"]) == (8, "snap-0000000000000008.json")
        assert f"moved the snapshots past the end of the log (snap-0000000000000008.json) to {moved}" in caplog.text
        assert ("recorded that at seq 6 and kept seqs 7 to 8 void: the lost seqs are never given again (a "
                "fencing token names one grant); new events go on from seq 9") in caplog.text
        for i in range(5, 9):
            led.register(f"n{i}", [W(f"/n/{i}")])
            if i == 7:
                assert led.snapshot() == 11
        assert led.seq == 12
    assert snapshot_files(ledger_dir) == ["snap-0000000000000004.json", "snap-0000000000000011.json"]
    caplog.clear()
    with Ledger.open(ledger_dir) as led:
        assert led.lost is None and led.stats.snapshot_seq == 11
        assert [a.name for a in led.holders()] == [f"h{i}" for i in range(5)] + [f"n{i}" for i in range(5, 9)]
        assert [led.holders()[i].token for i in range(5, 9)] == [9, 10, 11, 12]
        assert [e.type for e in led.events(6, 8)] == ["repaired", "void", "void"]
        assert led.verify().ok
    assert caplog.text == ""


@pytest.mark.parametrize("keep", [None, 2])
def test_a_ledger_that_goes_on_after_losing_its_tail_keeps_the_lost_snapshots_and_its_schedule(
        ledger_dir, caplog, keep):
    # On 063fafc the snapshots past the log's end stayed in snapshots/ while
    # the log went on: each opening said "events N+1 to S were lost" with N
    # the new history's seq, no snapshot was written until the log passed S
    # (the newest snapshot's seq was taken as the last one written), then
    # every opening warned that they did not match the log, 'ledger verify'
    # failed for ever (and 'ledger repair' found nothing to repair), and with
    # keep_snapshots the automatic pruning deleted them.
    with Ledger.open(ledger_dir, snapshot_every=100) as led:
        for i in range(300):
            led.register(f"h{i}", [W(f"/h/{i}")])
            led.release(f"h{i}")
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().split(b"\n")
    with open(log, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines[:100]))  # a power cut took 101..600
    lost = {n: open(os.path.join(ledger_dir, "snapshots", n), "rb").read() for n in snapshot_files(ledger_dir)
            if int(n[5:21]) > 100}
    assert len(lost) == 5
    said = []
    for _ in range(12):  # writers come and go: 480 events, past the lost seqs (kept void: 101 to 600)
        caplog.clear()
        with Ledger.open(ledger_dir, snapshot_every=100, keep_snapshots=keep) as led:
            for _ in range(20):
                led.register(f"n{led.seq}", [W("/n")])
                led.release(f"n{led.seq - 1}")
            seq = led.seq
        said.append(caplog.text)
    assert "events 101 to 600 were lost" in said[0] and all(not s for s in said[1:]), said
    assert seq == 1080
    seqs = [int(n[5:21]) for n in snapshot_files(ledger_dir)]
    assert seqs[-1] >= 1000, seqs  # written on schedule
    (moved,) = os.listdir(os.path.join(ledger_dir, "cut"))
    for name, data in lost.items():  # kept, byte for byte
        assert open(os.path.join(ledger_dir, "cut", moved, name), "rb").read() == data
    from scopeledger import verify

    assert verify(ledger_dir).ok
    caplog.clear()
    with Ledger.open(ledger_dir, readonly=True) as led:
        assert led.lost is None and led.seq == 1080
    assert caplog.text == ""


def test_a_due_snapshot_is_written_by_the_process_that_claims_it_only(ledger_dir):
    # Two writers crossing the interval together each wrote one of the same
    # state (8 writers: 129 snapshots for 214k events). The one holding the
    # claim on snapshots/ writes it; the other skips.
    a = Ledger.open(ledger_dir, snapshot_every=10)
    b = Ledger.open(ledger_dir, snapshot_every=10)
    with a._store.snapshot_claim() as mine:
        assert mine
        for i in range(12):
            b.register(f"b{i}", [W(f"/b/{i}")])
        assert snapshot_files(ledger_dir) == []  # due at 10 and 11 and 12, claimed by a
    b.register("b12", [W("/b/12")])
    assert snapshot_files(ledger_dir) == ["snap-0000000000000013.json"]
    a.register("a0", [W("/a/0")])  # a sees b's snapshot: not due for a either
    assert snapshot_files(ledger_dir) == ["snap-0000000000000013.json"]
    assert Ledger.open(ledger_dir).verify().ok


def test_concurrent_writers_write_about_one_snapshot_per_interval(ledger_dir):
    import multiprocessing

    every, procs, pairs = 200, 4, 250
    Ledger.open(ledger_dir).close()
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_pairs, args=(ledger_dir, every, f"p{k}", pairs)) for k in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    total = procs * pairs * 2
    assert Ledger.open(ledger_dir).seq == total
    # Without the claim each interval got up to one per writer (~4 × 10).
    assert len(snapshot_files(ledger_dir)) <= total // every + 2


def _pairs(path, every, prefix, n):
    with Ledger.open(path, snapshot_every=every) as led:
        for i in range(n):
            led.register(f"{prefix}-{i}", [W(f"/{prefix}/{i}")])
            led.release(f"{prefix}-{i}")


def test_refusal_keys_are_bounded_between_changes(ledger_dir):
    from scopeledger._fold import REFUSALS_KEPT

    with Ledger.open(ledger_dir, snapshot_every=10**6) as led:
        led.register("a", [W("/held")])
        for i in range(REFUSALS_KEPT + 500):  # a retry loop under ever new names
            with pytest.raises(Exception, match="conflict"):
                led.register(f"job-{i}", [W("/held/x")])
        state = led.state()
        assert len(state.refusals) == 500
        seq = led.seq
        with pytest.raises(Exception, match="conflict"):
            led.register(f"job-{REFUSALS_KEPT + 499}", [W("/held/x")])  # the same refusal again
        assert led.seq == seq  # still recorded once
        led.snapshot()
    body = os.path.getsize(os.path.join(ledger_dir, "snapshots", snapshot_files(ledger_dir)[-1]))
    assert body < 100 * REFUSALS_KEPT  # ~33 bytes a key
    assert Ledger.open(ledger_dir).verify().ok


def test_a_claim_held_for_ever_does_not_stop_snapshots_for_ever(ledger_dir):
    # A writer stopped in the middle of a snapshot keeps its claim: the others
    # wait SNAPSHOT_CLAIM_PATIENCE intervals, then write one anyway.
    from scopeledger._ledger import SNAPSHOT_CLAIM_PATIENCE

    a = Ledger.open(ledger_dir, snapshot_every=10)
    b = Ledger.open(ledger_dir, snapshot_every=10)
    with a._store.snapshot_claim() as mine:
        assert mine
        patience = SNAPSHOT_CLAIM_PATIENCE * 10  # events (a live set under 10)
        for i in range(patience // 2 - 1):
            b.register(f"b{i}", [W(f"/b/{i}")])
            b.release(f"b{i}")
        b.register("last", [W("/b/last")])
        assert snapshot_files(ledger_dir) == []
        b.release("last")
        assert snapshot_files(ledger_dir) == [f"snap-{patience:016d}.json"]
        for i in range(10):  # due again, claim still held: wait again
            b.register(f"c{i}", [W(f"/c/{i}")])
            b.release(f"c{i}")
        assert len(snapshot_files(ledger_dir)) == 1
    assert Ledger.open(ledger_dir).verify().ok
