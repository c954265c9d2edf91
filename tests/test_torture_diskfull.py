"""Disk full on a real tiny tmpfs in a private mount namespace
(tools/torture/diskfull.py): ENOSPC for every kind of mutation, a real
short write, snapshots failing for lack of space, a torn line that cannot be
set aside; each fails with LedgerIOError leaving the log, the state and
torn/ unchanged, and the ledger works again once space is freed. Skipped
with the reason where mounting is not permitted."""

import errno
import os
import pickle

import pytest

from scopeledger import Ledger, LedgerIOError, ScopeRule
from torture_support import in_namespace


def test_disk_full_on_a_real_tmpfs_fails_cleanly_and_recovers():
    fig = in_namespace(["--mount"], ["tools.torture.diskfull", "--rounds", "1"])
    assert fig["rounds"] == 1
    assert fig["enospc"] == 6 and fig["short_writes"] == 1
    msgs = fig["messages"]
    assert "No space left on device" in msgs["enospc-register"]
    assert msgs["enospc-register"].startswith("failed to append to the log: ")
    assert msgs["enospc-snapshot"].startswith("failed to write a snapshot: ")
    assert "short write" in msgs["short-write"]
    assert msgs["torn-nothing-free"].startswith("failed to set aside a torn line: ")


def test_ledger_io_error_carries_the_errno_also_through_pickling(tmp_path, monkeypatch):
    led = Ledger.open(str(tmp_path / "l"))

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(LedgerIOError) as info:
        led.register("a", [ScopeRule("/a", "write")])
    monkeypatch.undo()
    err = info.value
    assert err.errno == errno.ENOSPC and isinstance(err, OSError)
    assert str(err).endswith("events.jsonl: No space left on device")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is LedgerIOError and again.errno == errno.ENOSPC
    assert str(again) == str(err) and again.path == err.path


def test_a_short_write_never_takes_back_a_complete_line_a_reader_has_seen(tmp_path, monkeypatch):
    # A transaction of two lines (a dead holder in the way reclaimed, then the
    # grant) hits a full disk after its first line. A reader (another Ledger
    # object, no lock) folds that complete line in the moment before the
    # writer cleans up. The log must not shrink under it: the reader must go
    # on working and agree with the log.
    from scopeledger import Liveness, ProcessIdentity

    path = str(tmp_path / "l")
    dead = {4242}
    writer = Ledger.open(path, probe=lambda i: Liveness.GONE if i.pid in dead else Liveness.ALIVE)
    writer._identity = lambda pid: ProcessIdentity(pid=pid, boot=writer.actor.boot, ticks=1000)
    writer.register("ghost", [ScopeRule("/x", "write")], pid=4242)
    reader = Ledger.open(path)
    assert [a.name for a in reader.holders()] == ["ghost"]
    real_write = os.write
    seen = []

    def short(fd, data):
        data = bytes(data)
        first = data.index(b"\n") + 1
        n = real_write(fd, data[: first + 20])   # the reclaim line and part of the grant
        seen.append([a.name for a in reader.holders()])  # the reader looks meanwhile
        return n
    monkeypatch.setattr(os, "write", short)
    with pytest.raises(LedgerIOError, match="short write"):
        writer.register("new", [ScopeRule("/x", "write")], pid=os.getpid())
    monkeypatch.undo()
    assert seen == [[]]  # the reader saw the reclaim
    assert reader.holders() == []  # and goes on working: the line is still there
    assert [e.type for e in reader.events()] == ["registered", "reclaimed"]
    assert writer.holders() == [] and writer.verify().ok
    writer.register("new", [ScopeRule("/x", "write")], pid=os.getpid())
    assert [a.name for a in reader.holders()] == ["new"]
