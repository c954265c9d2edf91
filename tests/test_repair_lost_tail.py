"""A log that lost its tail under a snapshot never gives the lost seqs (tokens) again.

A snapshot at seq S past the log's end K (a power cut took the tail before it
reached the disk, or an older log was put back) is the one record that seqs
K+1 to S were given: a fencing token is its grant's seq, and a lease-only
holder on another host may still carry one. Before this, the first writer
moved the snapshot aside (into ``cut/``, a record with ``lines`` 0) and the
next grant took token K+1 (a fresh tester's finding 7); a resource fencing by
"no token below the largest seen" then lets two holders through, the very
reason a repair keeps the seqs it cuts void. Now whoever sets such a snapshot
aside keeps K+1 to S void the way a repair does (a ``repaired`` line, ``void``
lines, under the same lock), the record saying how far (``through``) so that
a writer killed in between has them written by the next; and a snapshot is
evidence only when it checks out on its own, within a bound. Real files; the
command line and the killed writers in real processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import ledger_cmd
from scopeledger import CorruptLedger, Ledger, LedgerIOError, ScopeRule, _ledger, _store, verify


def _log(path: Path) -> list[bytes]:
    return (path / "events.jsonl").read_bytes().splitlines(keepends=True)


def _types(path: Path) -> list[tuple[int, str]]:
    return [(json.loads(raw)["seq"], json.loads(raw)["type"]) for raw in _log(path)]


def _snap(path: Path, seq: int) -> Path:
    return path / "snapshots" / f"snap-{seq:016d}.json"


def _lease(name: str) -> tuple[str, list[ScopeRule]]:
    return name, [ScopeRule(f"/tmp/tree/{name}", "write")]


def _lost_tail(path: Path, n: int = 6, kept: int = 3) -> bytes:
    """The reproducer's ledger: ``n`` lease-only grants h0.. (tokens 1..n), a snapshot at
    seq ``n``, then a power cut: the log keeps its first ``kept`` lines. Their bytes."""
    with Ledger.open(path) as led:
        tokens = [led.register(*_lease(f"h{i}"), ttl=1e6, lease_only=True).token for i in range(n)]
        assert tokens == list(range(1, n + 1))
        assert led.snapshot() == n
    data = b"".join(_log(path)[:kept])
    (path / "events.jsonl").write_bytes(data)
    return data


def test_a_lost_tails_tokens_are_never_given_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "L"
    kept = _lost_tail(path)
    with Ledger.open(path, readonly=True) as led:  # a reader changes nothing
        assert led.lost is not None and led.lost.void_through is None and led.seq == 3
    assert (path / "events.jsonl").read_bytes() == kept
    caplog.clear()
    with Ledger.open(path) as led:  # the first writer: h5 may still hold token 6 on another host
        lost = led.lost
        assert lost is not None and lost.moved_to is not None and lost.void_through == 6
        assert led.seq == 6
        grant = led.register(*_lease("new"), ttl=1e6, lease_only=True)
        assert grant.token == 7  # before: 4, then 5 and 6: tokens the snapshot proves were given
        assert not led.check("h5", 6) and not led.check("new", 6)
    assert ("recorded that at seq 4 and kept seqs 5 to 6 void: the lost seqs are never given again (a fencing "
            "token names one grant); new events go on from seq 7") in caplog.text
    assert (path / "events.jsonl").read_bytes().startswith(kept)
    assert _types(path)[3:] == [(4, "repaired"), (5, "void"), (6, "void"), (7, "registered")]
    repaired = json.loads(_log(path)[3])
    assert (repaired["through"], repaired["cut"]) == (6, os.path.relpath(lost.moved_to, path))
    record = json.loads((Path(lost.moved_to) / "record.json").read_text())
    assert (record["kept_seq"], record["lines"], record["through"], record["proof"]) == (
        3, 0, 6, "snap-0000000000000006.json")
    assert verify(path).ok
    # The command line says it in replay's words for a repair's lines, and verify is clean.
    p = ledger_cmd(path, "replay", subprocess_=True)
    assert p.returncode == 0, p.stderr
    rows = p.stdout.splitlines()
    assert "repaired" in rows[3] and "the log was cut after seq 3 by pid " in rows[3], rows[3]
    assert "seqs 5 to 6 kept void, so no fencing token is given twice" in rows[3], rows[3]
    assert "void" in rows[4] and "kept void by the repair before it" in rows[4]
    p = ledger_cmd(path, "verify", subprocess_=True)
    assert p.returncode == 0 and p.stdout.startswith("ok: 7 events"), (p.stdout, p.stderr)
    p = ledger_cmd(path, "repair", subprocess_=True)  # nothing left to do
    assert p.returncode == 0 and p.stdout.startswith("nothing to repair in "), p.stdout


def test_the_command_line_writer_keeps_them_void_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _lost_tail(path)
    p = ledger_cmd(path, "run", "--write", str(tmp_path / "w"), "--", "true", subprocess_=True)
    assert p.returncode == 0, p.stderr
    assert "recorded that at seq 4 and kept seqs 5 to 6 void" in p.stderr, p.stderr
    assert [t for _, t in _types(path)[3:6]] == ["repaired", "void", "void"]
    assert json.loads(_log(path)[6])["type"] == "registered"  # token 7
    assert verify(path).ok


def test_a_writer_opened_without_folding_keeps_them_void_before_its_first_grant(tmp_path: Path) -> None:
    # Ledger.open(fold=False) folds at the first call that needs the state "as opening
    # does": a writer's duties too (before, it granted token 4).
    path = tmp_path / "L"
    _lost_tail(path)
    with Ledger.open(path, fold=False) as led:
        assert led.register(*_lease("new"), ttl=1e6, lease_only=True).token == 7
        assert led.lost is not None and led.lost.void_through == 6
    assert [t for _, t in _types(path)[3:]] == ["repaired", "void", "void", "registered"]
    assert verify(path).ok


def test_a_repair_that_sets_such_a_snapshot_aside_keeps_its_seqs_void(tmp_path: Path) -> None:
    # The same ledger repaired before any writer opened it (Ledger.open(fold=False)).
    path = tmp_path / "L"
    kept = _lost_tail(path)
    dry = ledger_cmd(path, "repair", "--dry-run", subprocess_=True)
    assert dry.returncode == 0, dry.stderr
    assert ("would record the repair at seq 4 and keep seqs 5 to 6 void: the cut lines' seqs are never given "
            "again (a fencing token names one grant)") in dry.stdout.splitlines(), dry.stdout
    assert (path / "events.jsonl").read_bytes() == kept
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "new events go on from seq 7", p.stdout
    assert [t for _, t in _types(path)[3:]] == ["repaired", "void", "void"]
    with Ledger.open(path) as led:
        assert led.lost is None
        assert led.register(*_lease("new"), ttl=1e6, lease_only=True).token == 7
    assert verify(path).ok


# -- killed, or refused, between setting the snapshot aside and the void lines ---------------------

_CHILD = """
import os, signal, sys
from scopeledger import Ledger, _store

def stopped(self, data, expected_size, fsync):
    if sys.argv[2] == "torn":  # 40 bytes of the repair's first write reach the log: a torn line
        os.pwrite(self.logfd, data[:40], expected_size)
    os.kill(os.getpid(), signal.SIGKILL)

_store.Store.append = stopped
Ledger.open(sys.argv[1])
print("not killed")
"""


@pytest.mark.parametrize("how", ["before", "torn"])
def test_a_writer_killed_between_setting_the_snapshot_aside_and_its_lines_is_finished_by_the_next(
        tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "L"
    kept = _lost_tail(path)
    p = subprocess.run([sys.executable, "-c", _CHILD, str(path), how], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr)
    # Killed at its first append: the snapshot is in cut/ with its record, the log not gone on.
    (where,) = (path / "cut").iterdir()
    assert sorted(os.listdir(where)) == ["record.json", "snap-0000000000000006.json"]
    assert not _snap(path, 6).exists()
    data = (path / "events.jsonl").read_bytes()
    assert data == kept if how == "before" else (data.startswith(kept) and not data.endswith(b"\n"))
    with Ledger.open(path, readonly=True) as led:  # nothing tells it the seqs were lost now, but the record
        assert led.lost is None and led.seq == 3
    caplog.clear()
    with Ledger.open(path) as led:  # the next writer finishes, before its first line
        assert led.seq == 6
        assert led.register(*_lease("new"), ttl=1e6, lease_only=True).token == 7
    assert f"the cut recorded in {where}" in caplog.text and "recorded that at seq 4 and kept seqs 5 to 6 void" \
        in caplog.text, caplog.text
    assert _types(path)[3:] == [(4, "repaired"), (5, "void"), (6, "void"), (7, "registered")]
    assert json.loads(_log(path)[3])["cut"] == os.path.relpath(where, path)
    if how == "torn":  # the torn line set aside, byte for byte
        (torn,) = (path / "torn").iterdir()
        assert data.endswith(torn.read_bytes())
    assert verify(path).ok


def test_a_write_refused_after_setting_the_snapshot_aside_fails_the_open_and_the_next_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "L"
    kept = _lost_tail(path)

    def refused(self: Any, data: bytes, expected_size: int, fsync: bool) -> None:
        raise LedgerIOError(self.log_path, "write the log", OSError(28, "No space left on device"))

    with monkeypatch.context() as m:
        m.setattr(_store.Store, "append", refused)
        with pytest.raises(LedgerIOError) as err:
            Ledger.open(path)  # never a grant before the lost seqs are kept void
    assert "seqs 4 to 6 are not kept void yet" in str(err.value), str(err.value)
    assert (path / "events.jsonl").read_bytes() == kept and not _snap(path, 6).exists()
    with Ledger.open(path) as led:
        assert led.register(*_lease("new"), ttl=1e6, lease_only=True).token == 7
    assert verify(path).ok


# -- what counts as evidence, and how much ----------------------------------------------------------


def _resealed(path: Path, src: int, seq: int, body_seq: int | None = None) -> Path:
    """A copy of snapshot ``src`` at ``seq`` (its name and header), its body's seq
    ``body_seq`` (default ``seq``), checksummed again: one that checks out on its own
    unless ``body_seq`` differs."""
    head, body, _ = _snap(path, src).read_bytes().split(b"\n")
    header, doc = json.loads(head), json.loads(body)
    doc["seq"] = seq if body_seq is None else body_seq
    body = json.dumps(doc, separators=(",", ":")).encode()
    header.update(seq=seq, checksum=hashlib.blake2b(body, digest_size=16).hexdigest())
    out = _snap(path, seq)
    out.write_bytes(json.dumps(header, separators=(",", ":")).encode() + b"\n" + body + b"\n")
    os.chmod(out, 0o600)
    return out


def test_a_snapshot_that_does_not_check_out_on_its_own_proves_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "L"
    _lost_tail(path)
    # Its header (and name) say seq 10**12, its body seq 6: an edited header; never a
    # trillion void lines. Set aside like any file past the log's end, it proves nothing
    # by itself; the genuine snapshot at 6 still does.
    bogus = _resealed(path, 6, 10**12, body_seq=6)
    with Ledger.open(path) as led:
        assert led.lost is not None and led.lost.void_through == 6
        assert led.register(*_lease("new"), ttl=1e6, lease_only=True).token == 7
    assert f"snapshot {bogus} past the end of the log proves nothing (body's seq/hash differ from its header)" \
        in caplog.text
    assert len(_log(path)) == 7 and verify(path).ok
    # A damaged one alone: moved, nothing kept void, said so.
    path2 = tmp_path / "L2"
    _lost_tail(path2)
    data = bytearray(_snap(path2, 6).read_bytes())
    data[-5] ^= 1
    _snap(path2, 6).write_bytes(bytes(data))
    caplog.clear()
    with Ledger.open(path2) as led:
        assert led.lost is not None and led.lost.moved_to is not None and led.lost.void_through is None
    assert "checksum does not match its content" in caplog.text
    assert "none of them checks out on its own, so no lost seq is kept void" in caplog.text


def test_a_snapshot_claiming_too_many_lost_seqs_is_refused_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "L"
    kept = _lost_tail(path)
    # One that checks out on its own at seq 10**12 (another ledger's, say): no writer keeps
    # that many seqs void on its word, nor does a repair.
    _resealed(path, 6, 10**12)
    before = sorted(os.listdir(path / "snapshots"))
    with pytest.raises(CorruptLedger) as err:
        Ledger.open(path)
    message = str(err.value)
    assert str(_snap(path, 10**12)) in message and "says the log held seq 1000000000000" in message, message
    assert "run 'ledger repair', which sets it aside and keeps them void, or, if it is not this ledger's " \
           "snapshot, move it out of snapshots/" in message, message
    p = ledger_cmd(path, "run", "--write", str(tmp_path / "w"), "--", "true", subprocess_=True)
    assert p.returncode == 4 and "move it out of snapshots/" in p.stderr and "Traceback" not in p.stderr, p
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 4 and "more than a repair keeps void (10000000)" in p.stderr, p
    assert (path / "events.jsonl").read_bytes() == kept and sorted(os.listdir(path / "snapshots")) == before
    assert not (path / "cut").exists()
    # Moved out by hand (not this ledger's), the genuine one at 6 is what counts.
    _snap(path, 10**12).rename(tmp_path / "elsewhere.json")
    with Ledger.open(path) as led:
        assert led.register(*_lease("new"), ttl=1e6, lease_only=True).token == 7
    # Past what a writer keeps void on its own but within a repair's reach: the writer
    # refuses and says to run the repair, which does it (the bound made small here).
    path2 = tmp_path / "L2"
    kept = _lost_tail(path2)
    _resealed(path2, 6, 20)
    monkeypatch.setattr(_ledger, "_LOST_VOID_AUTO", 10)
    with pytest.raises(CorruptLedger, match="17 seqs past what the log holds .seq 3.: .* run 'ledger repair'"):
        Ledger.open(path2)
    assert (path2 / "events.jsonl").read_bytes() == kept
    with Ledger.open(path2, fold=False) as led:
        assert led.repair().void_through == 20
    with Ledger.open(path2) as led:
        assert led.register(*_lease("new"), ttl=1e6, lease_only=True).token == 21
    assert verify(path2).ok


def test_a_records_reach_past_the_bound_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _lost_tail(path, 3, 3)
    line = _log(path)[2]
    kept_hash = hashlib.blake2b(line.rstrip(b"\n"), digest_size=16).hexdigest()
    where = path / "cut" / "20000101T000000.000000000Z-line-4"
    where.mkdir(parents=True, mode=0o700)
    os.chmod(path / "cut", 0o700)
    record = {"kept_seq": 3, "kept_hash": kept_hash, "lines": 0, "offset": 10,
              "through": 3 + _store.LOST_VOID_MAX + 1}
    (where / "record.json").write_text(json.dumps(record))
    os.chmod(where / "record.json", 0o600)
    before = (path / "events.jsonl").read_bytes()
    with Ledger.open(path) as led:
        assert led.seq == 3
    assert (path / "events.jsonl").read_bytes() == before
    record["through"] = 5  # within: the writer keeps 4 to 5 void
    (where / "record.json").write_text(json.dumps(record))
    with Ledger.open(path) as led:
        assert led.seq == 5
    assert [t for _, t in _types(path)[3:]] == ["repaired", "void"]
    assert verify(path).ok


def test_a_writer_opening_after_a_repair_stopped_after_its_cut_keeps_the_cut_seqs_void(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The same record, of a repair's cut: before, a writer between the stopped repair and
    # its second run took the first cut seq (a limit RELIABILITY.md named); now the
    # writer's open writes the repair's lines first.
    path = tmp_path / "L"
    with Ledger.open(path) as led:
        for i in range(6):
            led.register(*_lease(f"h{i}"), ttl=1e6, lease_only=True)
    lines = _log(path)
    lines[1] = lines[1].replace(b'"/tmp/tree/', b'"/tmp/TREE/', 1)  # line 2 edited: the chain breaks there
    (path / "events.jsonl").write_bytes(b"".join(lines))

    def refused(self: Any, data: bytes, expected_size: int, fsync: bool) -> None:
        raise LedgerIOError(self.log_path, "write the log", OSError(28, "No space left on device"))

    with monkeypatch.context() as m:
        m.setattr(_store.Store, "append", refused)
        with Ledger.open(path, fold=False) as led, pytest.raises(LedgerIOError, match="seqs 2 to 6 are not kept"):
            led.repair()
    assert len(_log(path)) == 1  # cut after seq 1, the repair's own lines missing
    (where,) = (path / "cut").iterdir()
    caplog.clear()
    with Ledger.open(path) as led:
        assert led.seq == 6
        assert led.register(*_lease("new"), ttl=1e6, lease_only=True).token == 7
    assert f"the cut recorded in {where}" in caplog.text and "kept seqs 3 to 6 void" in caplog.text, caplog.text
    assert [t for _, t in _types(path)] == ["registered", "repaired", "void", "void", "void", "void", "registered"]
    assert verify(path).ok
