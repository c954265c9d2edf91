"""Durability: a failed flush (issue 13 item 12), a new ledger's
directories (item 13), snapshots never ahead of the log (issue 19).
Real devices where the behaviour is about them (tests/fs_support.py)."""

import errno
import os
import shutil
import stat

import pytest

from scopeledger import LedgerIOError, Ledger
from scopeledger import _snapshots, _store

from fs_support import failing_xfs, tmpfs_mount
from helpers import W


def _log(path):
    with open(os.path.join(path, "events.jsonl"), "rb") as f:
        return f.read()


def test_a_failed_flush_on_a_failing_device_keeps_the_lines_and_stops_that_writer(tmp_path):
    # A real device that fails writeback: fdatasync fails after the write.
    # On 813fdac the writer cut the lines back (a reader that had folded
    # them then failed with "the log shrank" for ever) and went on writing.
    with failing_xfs(tmp_path) as (mnt, fill):
        path = os.path.join(mnt, "L")
        writer = Ledger.open(path, fsync=True)
        reader = Ledger.open(path)
        try:
            _fail_a_flush(path, writer, reader, fill)
        finally:
            writer.close()
            reader.close()


def _fail_a_flush(path, writer, reader, fill):
    writer.register("a", [W("/r/a")])
    fill()
    failure = None
    for i in range(400):  # each line is ~300 bytes: a new 4 KiB block within 15
        before = _log(path)
        try:
            writer.register(f"h{i}", [W(f"/r/h{i}")])
        except LedgerIOError as exc:
            failure = exc
            break
    assert failure is not None, "the device never failed a flush"
    assert "failed to flush the log" in str(failure) and "opened again" in str(failure)
    assert isinstance(failure.__cause__, OSError)
    after = _log(path)
    assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1  # not cut
    names = [a.name for a in reader.holders()]  # readers go on
    assert names[-1] == f"h{i}" and len(names) == after.count(b"\n")
    for change in (lambda: writer.register("x", [W("/r/x")]), lambda: writer.release("a"),
                   lambda: writer.snapshot()):
        with pytest.raises(LedgerIOError, match="a flush of the log failed earlier") as info:
            change()
        assert info.value.__cause__ is failure.__cause__
        assert _log(path) == after
    assert [a.name for a in reader.holders()] == names


def test_a_failed_flush_never_cuts_lines_a_reader_has_folded(tmp_path, monkeypatch):
    # The same at the syscall seam, with EIO exactly and a reader folding
    # the line between the write and the failed fdatasync (the device
    # above reports the failure as ENOSPC).
    path = str(tmp_path / "L")
    writer = Ledger.open(path, fsync=True)
    reader = Ledger.open(path)
    writer.register("a", [W("/r/a")])
    real = os.fdatasync

    class FailingOS:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fdatasync(fd):
            reader.refresh()  # folds the new line, as a lock-free reader may
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_store, "os", FailingOS())
    with pytest.raises(LedgerIOError, match="failed to flush the log: .*Input/output error"):
        writer.register("b", [W("/r/b")])
    monkeypatch.undo()
    assert real is os.fdatasync
    assert [a.name for a in reader.holders()] == ["a", "b"]  # no "the log shrank"
    with pytest.raises(LedgerIOError, match="a flush of the log failed earlier"):
        writer.release("a")
    writer.close()
    with Ledger.open(path) as again:  # reopened: goes on
        again.release("b")
        assert [a.name for a in again.holders()] == ["a"]
        assert again.verify().ok
    assert [a.name for a in reader.holders()] == ["a"]


def test_a_ledger_created_with_fsync_fsyncs_its_directories(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            synced.append((st.st_dev, st.st_ino))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "a" / "b" / "L"
    Ledger.open(str(path), fsync=True).close()

    def ino(p):
        st = os.stat(p)
        return st.st_dev, st.st_ino

    # The directory holding each new name: tmp_path (a), a (b), b (L), L (its files).
    for d in (tmp_path, tmp_path / "a", tmp_path / "a" / "b", path):
        assert ino(d) in synced, d
    synced.clear()
    Ledger.open(str(path), fsync=True).close()  # nothing made: nothing to sync
    assert synced == []


def test_a_snapshot_is_renamed_into_place_only_after_the_log_is_flushed(tmp_path, monkeypatch):
    calls = []
    path = str(tmp_path / "L")
    led = Ledger.open(path)  # fsync=False: the default
    led.register("a", [W("/r/a")])

    class Recording:
        def __getattr__(self, name):
            fn = getattr(os, name)
            if name in ("fdatasync", "rename"):
                def call(*args, **kwargs):
                    calls.append(name)
                    return fn(*args, **kwargs)
                return call
            return fn

    monkeypatch.setattr(_store, "os", Recording())
    monkeypatch.setattr(_snapshots, "os", Recording())
    led.snapshot()
    assert calls == ["fdatasync", "rename"]
    led.close()


@pytest.mark.parametrize("fsync", [False, True])
def test_a_power_cut_never_bricks_the_ledger_and_fsync_loses_nothing(tmp_path, fsync):
    # tools/powercut.py, small: 150 register+release pairs, snapshots every
    # 40 events, the xfs shut down at once without flushing its log. On
    # 813fdac the snapshots (fsynced) outlived the log (not flushed): the
    # ledger opened as CorruptLedger and every acknowledged operation was gone.
    import sys

    from fs_support import one_loop_user, xfs_missing

    why = xfs_missing()
    if why:
        pytest.skip(why)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    try:
        import powercut
    finally:
        sys.path.pop(0)
    with one_loop_user():
        fig = powercut.one_round(str(tmp_path), pairs=150, writers=1, fsync=fsync, every=40, settle=0.0,
                                 size_mb=300)
    assert fig["opened"] == "ok", fig
    assert fig["works_after"] is True, fig
    assert fig["lost_events"] is None, fig  # no snapshot outlived the log
    assert fig["acknowledged"] == 300
    if fsync:
        assert fig["lost"] == 0, fig
    else:  # only what came after the last flush (the newest snapshot) may be lost
        assert fig["log_seq"] >= max(fig["snapshots"]), fig


def test_a_power_cut_is_judged_on_the_disk_though_another_mount_namespace_keeps_the_file_system(tmp_path):
    # A mount namespace made while the xfs is mounted (another test's
    # 'unshare --mount', a container) keeps a copy of the mount: after the
    # cut, umount here left the shut down file system alive there, and
    # mounting its device again handed it back (EIO on every call). Whole-
    # suite runs failed so, now and then (the power-cut test above, [True]).
    import subprocess
    import sys

    from fs_support import one_loop_user, xfs_missing

    why = xfs_missing()
    if why or not shutil.which("unshare"):
        pytest.skip(why or "unshare(1) is missing")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    try:
        import powercut
    finally:
        sys.path.pop(0)
    holders: list[subprocess.Popen] = []
    real_run = powercut._run

    def run(*cmd: str):
        got = real_run(*cmd)
        if cmd[0] == "mount" and not holders:  # the first mount: a namespace copies it
            holders.append(subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "600"]))
        return got
    powercut._run = run
    try:
        with one_loop_user():
            fig = powercut.one_round(str(tmp_path), pairs=20, writers=1, fsync=True, every=10, settle=0.0,
                                     size_mb=300)
    finally:
        powercut._run = real_run
        for h in holders:
            h.kill()
            h.wait()
    assert holders, "no namespace was made"
    assert fig["opened"] == "ok" and fig["works_after"] is True and fig["lost"] == 0, fig


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs_mount(tmp_path, "size=2m") as mnt:
        yield mnt


def _dead_holders(path, n):
    """``n`` holders bound to one process that then exits."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    with Ledger.open(path, snapshot_every=10**6) as led:
        for i in range(n):
            led.register(f"h{i}", [W(f"/r/h{i}")], pid=child.pid)
    child.kill()
    child.wait()


def _fill(disk, leave):
    """Fill the tmpfs at ``disk`` but ``leave`` bytes."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(disk, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_a_change_the_disk_fills_part_way_says_what_was_recorded_and_what_not(small_disk):
    # On 813fdac 'ledger reclaim' recorded 179 of 240 reclaims and said only
    # "failed to append" (issue 13 item 15).
    from scopeledger import PartlyRecorded

    path = os.path.join(small_disk, "L")
    _dead_holders(path, 240)
    size = os.path.getsize(os.path.join(path, "events.jsonl"))
    _fill(small_disk, 16 << 10)
    with Ledger.open(path, snapshot_every=10**6) as led:
        with pytest.raises(PartlyRecorded) as info:
            led.reclaim_stale()
        err = info.value
        assert 0 < len(err.recorded) < 240 and len(err.recorded) + len(err.not_recorded) == 240
        assert [k for _, k, _ in err.recorded + err.not_recorded] == ["reclaimed"] * 240
        assert (f"{len(err.recorded)} of the 240 events of this change were recorded (seq 241 "
                f"reclaimed 'h0', ") in str(err)
        assert f", {len(err.not_recorded)} were not (seq {241 + len(err.recorded)} reclaimed" in str(err)
        log = _log(path)
        reclaimed = [line for line in log[size:].split(b"\n") if line]
        assert len(reclaimed) == len(err.recorded)  # exactly those, whole lines only
        live = {a.name for a in led.holders()}
        assert live == {name for _, _, name in err.not_recorded}
    os.unlink(os.path.join(small_disk, "filler"))
    with Ledger.open(path) as led:
        assert led.reclaim_stale() == [name for _, _, name in err.not_recorded]
        assert led.verify().ok


def test_ledger_reclaim_on_a_full_disk_prints_what_it_reclaimed_and_what_not(small_disk):
    import subprocess
    import sys

    path = os.path.join(small_disk, "L")
    _dead_holders(path, 240)
    _fill(small_disk, 16 << 10)
    p = subprocess.run([sys.executable, "-m", "scopeledger", "--ledger", path, "reclaim"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 7, p.stderr
    done = [line for line in p.stdout.splitlines() if line.startswith("reclaimed 'h")]
    assert 0 < len(done) < 240
    (error,) = p.stderr.strip().splitlines()
    assert error.startswith("error: failed to append to the log: ")
    assert f"; {len(done)} of the 240 events of this change were recorded" in error
    assert f", {240 - len(done)} were not (" in error
