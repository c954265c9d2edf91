"""``ledger repair [--dry-run] [--json]`` and ``Ledger.repair(dry_run=False)`` (issue 17,
"Retention"): what lies past the last line of the log that checks out (as ``verify``
judges it) and the snapshots past it are set aside into ``cut/<UTC time>-line-N/`` with
a record of what was cut, instead of a manual ``head -n``; then the log is cut there.

On real files; the command line in a real process where its exit code is the point.
The crash tests kill (SIGKILL) or fail (EIO) the repair at each of its IO calls in turn
and check that nothing was lost and that a repair run again finishes the job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from helpers import CMD, W, clean_env, ledger_cmd, one_error_line
from scopeledger import (Ledger, LedgerIOError, LockTimeout, ReadOnlyLedger, RepairReport, StoreError,
                         verify)
from scopeledger import _store
from scopeledger._history import CHECKED_LINES
from scopeledger.cli.admin import repair_text

# -- ledgers to repair ------------------------------------------------------------------------


def _make(path: Path, pairs: int = 15) -> list[bytes]:
    """A ledger of ``2 * pairs`` events with a snapshot every 5; its log's lines."""
    with Ledger.open(path, snapshot_every=5) as led:
        for i in range(pairs):
            led.register(f"h{i}", [W(f"/r/{i}")])
            led.release(f"h{i}")
    return (path / "events.jsonl").read_bytes().splitlines(keepends=True)


def _write_log(path: Path, lines: list[bytes], tail: bytes = b"") -> bytes:
    data = b"".join(lines) + tail
    (path / "events.jsonl").write_bytes(data)
    return data


def _snaps(path: Path) -> list[int]:
    return sorted(int(n[5:-5]) for n in os.listdir(path / "snapshots") if n.startswith("snap-"))


def _snap_name(seq: int) -> str:
    return f"snap-{seq:016d}.json"


def _everything(path: Path) -> dict[str, Any]:
    """Names, modes and bytes of everything in the ledger directory."""
    out: dict[str, Any] = {".": stat.S_IMODE(os.stat(path).st_mode)}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (stat.S_IMODE(st.st_mode),
                                             Path(p).read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


def _cut_dirs(path: Path) -> list[Path]:
    cut = path / "cut"
    return sorted(cut.iterdir()) if cut.exists() else []


def _one_cut(path: Path) -> tuple[Path, dict[str, Any]]:
    dirs = _cut_dirs(path)
    assert len(dirs) == 1, dirs
    return dirs[0], json.loads((dirs[0] / "record.json").read_text())


def _first_problem(path: Path) -> Any:
    report = verify(path)
    assert not report.ok
    return report.problems[0]


def _corrupt_middle(path: Path) -> tuple[list[bytes], bytes]:
    """Line 12 of 30 is not JSON; snapshots at 5, 10, ..., 30. Returns the lines and
    the whole log."""
    lines = _make(path)
    lines[11] = b'{"v": 2, "seq": 12, oops\n'
    return lines, _write_log(path, lines)


@contextlib.contextmanager
def _lock_held_elsewhere(path: Path) -> Iterator[None]:
    """The ledger's lock (an exclusive flock on ``events.jsonl``) held, by
    an open file of its own, for the ``with`` block."""
    fd = os.open(path / "events.jsonl", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _kept_then_void(path: Path, keep: bytes, kept_seq: int, through: int, where: Path) -> None:
    """The log is ``keep`` (its first ``kept_seq`` lines) byte for byte, then the repair's own
    lines: at seq ``kept_seq + 1`` a ``repaired`` line naming ``where`` (relative to the
    ledger) and keeping seqs through ``through`` void, then a ``void`` line for each seq
    after it up to ``through``, each chained to the line before."""
    data = (path / "events.jsonl").read_bytes()
    assert data.startswith(keep)
    rest = data[len(keep):].splitlines(keepends=True)
    assert len(rest) == through - kept_seq, (len(rest), through, kept_seq)
    last = keep.splitlines()[-1] if keep else None
    prev = hashlib.blake2b(last, digest_size=16).hexdigest() if last is not None else "0" * 32
    envelope = {"v", "seq", "ts", "actor", "prev", "type"}
    for i, raw in enumerate(rest):
        ev = json.loads(raw)
        assert (ev["v"], ev["seq"], ev["prev"]) == (2, kept_seq + 1 + i, prev), (i, ev)
        if i == 0:
            assert ev["type"] == "repaired" and set(ev) == envelope | {"through", "cut"}, ev
            assert (ev["through"], ev["cut"]) == (through, os.path.relpath(where, path))
        else:
            assert ev["type"] == "void" and set(ev) == envelope, ev
        assert ev["actor"]["pid"] > 0
        prev = hashlib.blake2b(raw.rstrip(b"\n"), digest_size=16).hexdigest()


def _open_ok(path: Path) -> None:
    """The ledger opens (folding), verifies, and takes a new event chained to its last line."""
    last = (path / "events.jsonl").read_bytes().splitlines()[-1]
    with Ledger.open(path) as led:
        assert led.lost is None
        seq = led.seq
        led.register("after", [W("/r/after")])
    new = json.loads((path / "events.jsonl").read_bytes().splitlines()[-1])
    assert new["seq"] == seq + 1
    assert new["prev"] == hashlib.blake2b(last, digest_size=16).hexdigest()
    report = verify(path)
    assert report.ok, report.problems


# -- what is cut, and the record -------------------------------------------------------------------


def test_a_corrupt_middle_line_is_set_aside_with_everything_after_it_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "L"
    lines, before = _corrupt_middle(path)
    problem = _first_problem(path)
    assert problem.line == 12
    with pytest.raises(Exception, match="corrupt ledger"):
        Ledger.open(path)
    t0 = dt.datetime.now(dt.timezone.utc)
    with Ledger.open(path, fold=False) as led:
        report = led.repair()
    t1 = dt.datetime.now(dt.timezone.utc)
    keep = b"".join(lines[:11])
    cut = before[len(keep):]
    # The log is its first 11 lines, byte for byte, then the repair's own lines keeping the
    # cut seqs 12 to 30 void; the rest is in the side file, byte for byte.
    where, record = _one_cut(path)
    _kept_then_void(path, keep, 11, 30, where)
    assert (where / "events.jsonl.cut").read_bytes() == cut
    assert where.name.endswith("Z-line-12")
    # The snapshots past the cut moved with it, byte for byte; the others stayed.
    assert _snaps(path) == [5, 10]
    moved = [_snap_name(s) for s in (15, 20, 25, 30)]
    assert sorted(p.name for p in where.iterdir()) == sorted(["events.jsonl.cut", "record.json", *moved])
    assert record == {
        "format": 1, "ledger": str(path), "log": str(path / "events.jsonl"),
        "reason": problem.message, "line": 12, "seq": None, "kept_seq": 11,
        "kept_hash": hashlib.blake2b(lines[10][:-1], digest_size=16).hexdigest(),
        "offset": len(keep), "log_bytes": len(before), "bytes": len(cut), "lines": 19, "seqs": 19,
        "sha256": hashlib.sha256(cut).hexdigest(), "file": "events.jsonl.cut", "snapshots": moved,
        "when": record["when"], "when_ns": record["when_ns"],
        "by": {"user": "root" if os.geteuid() == 0 else record["by"]["user"], "uid": os.geteuid(),
               "host": socket.gethostname(), "pid": os.getpid()}}
    when = dt.datetime.fromisoformat(record["when"][:26] + "+00:00")  # (to the microsecond)
    assert t0 - dt.timedelta(microseconds=1) <= when <= t1
    assert record["when"].endswith("Z") and record["when_ns"] // 1000 == int(when.timestamp() * 1e6 + 0.5)
    assert report == RepairReport(
        dry_run=False, damaged=True, kept_seq=11, line=12, seq=None, reason=problem.message,
        offset=len(keep), log_bytes=len(before), bytes_cut=len(cut), lines_cut=19,
        sha256=hashlib.sha256(cut).hexdigest(), snapshots=tuple(moved), directory=str(where),
        record=str(where / "record.json"), remaining=(), void_through=30)
    _open_ok(path)


def test_a_broken_hash_chain_is_cut_from_the_line_verify_names(tmp_path: Path) -> None:
    path = tmp_path / "L"
    lines = _make(path)
    # Line 8 edited after it was written, still valid (a later ts): line 9 no longer chains to it.
    ev = json.loads(lines[7])
    ev["ts"] += 1
    lines[7] = json.dumps(ev, separators=(",", ":")).encode() + b"\n"
    before = _write_log(path, lines)
    problem = _first_problem(path)
    assert problem.line == 8 and "altered" in problem.message
    p = ledger_cmd(path, "repair", "--json", subprocess_=True)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    keep = b"".join(lines[:7])
    where, record = _one_cut(path)
    assert doc == {"ledger": str(path), "dry_run": False, "damaged": True, "kept_seq": 7, "line": 8, "seq": 8,
                   "reason": problem.message, "offset": len(keep), "log_bytes": len(before),
                   "bytes": len(before) - len(keep), "lines": 23,
                   "sha256": hashlib.sha256(before[len(keep):]).hexdigest(),
                   "snapshots": [_snap_name(s) for s in (10, 15, 20, 25, 30)], "directory": str(where),
                   "record": str(where / "record.json"), "remaining": [], "appended": 0, "writing": 0,
                   "newer_format": False, "void_through": 30}
    assert record["reason"] == problem.message and record["by"]["pid"] not in (None, os.getpid())
    _kept_then_void(path, keep, 7, 30, where)
    assert (where / "events.jsonl.cut").read_bytes() == before[len(keep):]
    _open_ok(path)


def _live(path: Path, n: int = 5) -> list[bytes]:
    """``n`` live holders h0.. writing /r/0..; the log's lines."""
    with Ledger.open(path) as led:
        for i in range(n):
            led.register(f"h{i}", [W(f"/r/{i}")])
    return (path / "events.jsonl").read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("edit", [(b'"name":"h2"', b'"name":"h3"'), (b"/r/2", b"/r/3")],
                         ids=["its-name-taken-by-the-next", "its-scope-taken-by-the-next"])
def test_a_line_altered_so_that_the_next_one_no_longer_applies_is_the_one_named_and_cut(
        tmp_path: Path, edit: tuple[bytes, bytes]) -> None:
    # Line 3 (h2 on /r/2) edited to h3, or to /r/3: line 4, which registers h3 on
    # /r/3, breaks an invariant on the altered state. Its chain says line 3 was
    # altered; before, verify named line 4 and the repair kept the altered line 3
    # (h3 with token 3 on /r/2, or h2 on /r/3, blessed as history; a fresh
    # tester's finding).
    path = tmp_path / "L"
    lines = _live(path)
    assert edit[0] in lines[2]
    lines[2] = lines[2].replace(*edit)  # (a rule's path and its file-system key both)
    _write_log(path, lines)
    problem = _first_problem(path)
    assert (problem.line, problem.seq) == (3, 3), problem
    assert "altered" in problem.message and "line 4" in problem.message
    report = Ledger.open(path, fold=False).repair()
    assert (report.kept_seq, report.void_through) == (2, 5)
    assert verify(path).ok
    with Ledger.open(path) as led:
        assert sorted(h.name for h in led.holders()) == ["h0", "h1"]


@pytest.mark.parametrize("k", [CHECKED_LINES - 1, CHECKED_LINES, CHECKED_LINES + 1])
def test_a_line_altered_at_the_end_of_a_page_of_verify_is_the_one_named(tmp_path: Path, k: int) -> None:
    # verify reads the log in pages of CHECKED_LINES lines; a page that does not
    # chain is read again line by line, knowing the last good page's last line:
    # before, a page's last line altered was named as the next page's first
    # ("hash chain broken") and the repair kept the altered line.
    path = tmp_path / "L"
    lines = _live(path, CHECKED_LINES + 3)
    lines[k - 1] = lines[k - 1].replace(b'"name":"h%d"' % (k - 1), b'"name":"h%d"' % k)
    _write_log(path, lines)
    problem = _first_problem(path)
    assert (problem.line, problem.seq) == (k, k) and f"line {k + 1}" in problem.message, problem
    assert Ledger.open(path, fold=False).repair(dry_run=True).kept_seq == k - 1


def test_every_single_bit_flip_of_a_middle_line_is_named_on_that_line(tmp_path: Path) -> None:
    # Each byte of line 3 but its newline, each of its 8 bits in turn: verify names
    # line 3 whatever the flip makes of it (a name or scope the next line then
    # takes, a value out of range, a line that no longer parses); line 4 still
    # chains to the line as written, so no flip goes unnoticed.
    path = tmp_path / "L"
    lines = _live(path)
    good = b"".join(lines)
    start, end = len(lines[0]) + len(lines[1]), len(lines[0]) + len(lines[1]) + len(lines[2]) - 1
    named: dict[int, int] = {}
    for pos in range(start, end):
        for bit in range(8):
            flipped = bytearray(good)
            flipped[pos] ^= 1 << bit
            if flipped[pos] == ord("\n"):
                continue  # (a line split in two: not a flip of one line)
            (path / "events.jsonl").write_bytes(bytes(flipped))
            report = verify(path)
            assert not report.ok, (pos, bit)
            first = report.problems[0]
            named[first.line] = named.get(first.line, 0) + 1
            assert first.line == 3, (pos - start, bit, bytes(flipped[start:end]), first)
    assert named == {3: sum(named.values())} and named[3] > 8 * (end - start) - 10


def test_garbage_appended_after_the_last_line_is_cut_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "L"
    lines = _make(path)
    good = b"".join(lines)
    garbage = b"hello\n" + b'{"v": 2, "seq": 31}\n' + lines[-1]  # complete lines, none checks out
    _write_log(path, lines, garbage)
    snaps = {n: (path / "snapshots" / n).read_bytes() for n in os.listdir(path / "snapshots")}
    assert _first_problem(path).line == 31
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 0, p.stderr
    where, record = _one_cut(path)
    assert p.stdout.splitlines() == [
        f"line 31: {record['reason']}",
        f"cut the log at byte {len(good)} of {len(good) + len(garbage)}, after seq 30: {len(garbage)} bytes, "
        f"3 line(s), sha256 {hashlib.sha256(garbage).hexdigest()}",
        "record the repair at seq 31: the cut lines' seqs are never given again (a fencing token names one grant)",
        f"set aside in {where} (record: {where / 'record.json'})",
        "new events go on from seq 32"]
    # (the two short lines were never events: only the copied line's seq is kept void)
    _kept_then_void(path, good, 30, 31, where)
    assert (where / "events.jsonl.cut").read_bytes() == garbage
    assert (record["lines"], record["seqs"], record["snapshots"]) == (3, 1, [])
    assert {n: (path / "snapshots" / n).read_bytes() for n in os.listdir(path / "snapshots")} == snaps
    _open_ok(path)


def test_a_torn_last_line_and_snapshots_past_the_log_are_set_aside_too(tmp_path: Path) -> None:
    path = tmp_path / "L"
    lines = _make(path)
    # A power cut took events 23 to 30 (snapshots 25 and 30 are past the log's end) and left half a line.
    _write_log(path, lines[:22], lines[22][:40])
    with Ledger.open(path, fold=False) as led:
        report = led.repair()
    assert report.line == 23 and report.seq is None and report.lines_cut == 1 and report.bytes_cut == 40
    assert report.reason.startswith("a torn last line: 40 bytes after line 22 without a newline")
    assert report.snapshots == (_snap_name(25), _snap_name(30))
    # (the torn line's seq too: kept, never a guess; and the seqs to 30, which snapshot 30 proves
    # were given: fencing tokens a holder may still carry, as of a line cut)
    assert report.void_through == 30
    where, record = _one_cut(path)
    assert (record["through"], record["proof"]) == (30, _snap_name(30))
    _kept_then_void(path, b"".join(lines[:22]), 22, 30, where)
    assert repair_text(report, str(path))[-2:] == [
        f"set aside in {report.directory} (record: {report.record})", "new events go on from seq 31"]
    assert ("record the repair at seq 23 and keep seqs 24 to 30 void: the cut lines' seqs are never given "
            "again") in repair_text(report, "L")[-3]
    _open_ok(path)  # (lost is None: no snapshot lies past the log any more)
    # Snapshots alone past the log's end (a log cut short on a line boundary).
    path2 = tmp_path / "L2"
    lines = _make(path2)
    _write_log(path2, lines[:17])
    with Ledger.open(path2, readonly=True) as led:
        assert led.lost is not None
    with Ledger.open(path2, fold=False) as led:  # (a writer that folds moves them itself: test_snapshots.py)
        report = led.repair()
    assert (report.line, report.bytes_cut, report.offset) == (None, 0, len(b"".join(lines[:17])))
    assert report.snapshots == tuple(_snap_name(s) for s in (20, 25, 30))
    assert report.reason.startswith("snapshot(s) past the end of the log (seq 17)")
    where, record = _one_cut(path2)
    assert record["file"] is None and record["sha256"] is None and not (where / "events.jsonl.cut").exists()
    assert report.void_through == 30 and (record["through"], record["proof"]) == (30, _snap_name(30))
    _kept_then_void(path2, b"".join(lines[:17]), 17, 30, where)
    assert repair_text(report, str(path2))[-1] == "new events go on from seq 31"
    _open_ok(path2)


def test_a_snapshot_that_does_not_check_out_before_the_cut_is_left_and_named(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _corrupt_middle(path)
    snap = path / "snapshots" / _snap_name(5)
    data = bytearray(snap.read_bytes())
    data[-5] ^= 1
    snap.write_bytes(bytes(data))
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 0, p.stderr
    notes = [line for line in p.stdout.splitlines() if line.startswith("note:")]
    assert notes == [f"note: left as it is: {snap} (seq 5): checksum does not match its content"]
    assert snap.read_bytes() == bytes(data) and _snaps(path) == [5, 10]


# -- nothing to repair, dry runs -------------------------------------------------------------------


def test_a_healthy_ledger_has_nothing_to_repair_and_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _make(path)
    before = _everything(path)
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout == (f"nothing to repair in {path}: every line of the log checks out (seq 30) and no "
                        "snapshot lies past its end\n")
    p = ledger_cmd(path, "repair", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["damaged"] is False
    assert _everything(path) == before  # no cut/ made either
    # Judged without the lock: another process holding it does not stop the answer.
    with _lock_held_elsewhere(path):
        with Ledger.open(path, timeout=0.05) as led:
            assert not led.repair().damaged
    assert _everything(path) == before


def test_a_damaged_ledger_is_cut_only_under_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _corrupt_middle(path)
    before = _everything(path)
    with _lock_held_elsewhere(path):
        with Ledger.open(path, timeout=0.05, fold=False) as led:
            with pytest.raises(LockTimeout):
                led.repair()
        p = ledger_cmd(path, "--lock-timeout", "0.05", "repair", subprocess_=True)
        assert p.returncode == 3 and "timed out" in one_error_line(p.stderr)
    assert _everything(path) == before


def test_a_dry_run_says_exactly_what_would_be_cut_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _corrupt_middle(path)
    before = _everything(path)
    p = ledger_cmd(path, "repair", "--dry-run", subprocess_=True)
    assert (p.returncode, p.stderr) == (0, "")
    j = ledger_cmd(path, "repair", "--dry-run", "--json", subprocess_=True)
    assert j.returncode == 0, j.stderr
    with Ledger.open(path, readonly=True, fold=False) as led:  # a dry run needs no write access
        dry = led.repair(dry_run=True)
    assert _everything(path) == before  # byte for byte, modes and names too
    with Ledger.open(path, fold=False) as led:
        done = led.repair()
    where, _ = _one_cut(path)
    assert dry == attrs.evolve(done, dry_run=True, directory=None, record=None)
    doc = json.loads(j.stdout)
    assert doc == {"ledger": str(path), "dry_run": True, "damaged": True, "kept_seq": 11, "line": 12, "seq": None,
                   "reason": done.reason, "offset": done.offset, "log_bytes": done.log_bytes,
                   "bytes": done.bytes_cut, "lines": done.lines_cut, "sha256": done.sha256,
                   "snapshots": list(done.snapshots), "directory": None, "record": None, "remaining": [],
                   "appended": 0, "writing": 0, "newer_format": False, "void_through": 30}
    assert p.stdout.splitlines() == [
        f"line 12: {done.reason}",
        f"would cut the log at byte {done.offset} of {done.log_bytes}, after seq 11: {done.bytes_cut} bytes, "
        f"19 line(s), sha256 {done.sha256}",
        *(f"would set aside snapshot {_snap_name(s)} (past seq 11)" for s in (15, 20, 25, 30)),
        "would record the repair at seq 12 and keep seqs 13 to 30 void: the cut lines' seqs are never given "
        "again (a fencing token names one grant)",
        "nothing was changed (--dry-run)"]


def test_two_repairs_of_one_ledger_cut_it_once(tmp_path: Path) -> None:
    path = tmp_path / "L"
    lines, _ = _corrupt_middle(path)
    with Ledger.open(path, fold=False) as first, Ledger.open(path, fold=False) as second:
        assert second.repair(dry_run=True).damaged  # (it has read the whole log, past the cut to come)
        assert first.repair().damaged
        again = second.repair()  # judged again: the log as the first left it, its own lines too
        assert not again.damaged and again.kept_seq == 30 and again.void_through is None
    assert len(_cut_dirs(path)) == 1
    _kept_then_void(path, b"".join(lines[:11]), 11, 30, _cut_dirs(path)[0])
    _open_ok(path)


# -- permissions and refusals ----------------------------------------------------------------------


def test_what_is_set_aside_is_0600_in_directories_0700_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _corrupt_middle(path)
    p = subprocess.run([*CMD, "--ledger", str(path), "repair"], capture_output=True, text=True, timeout=60,
                       env=clean_env(), umask=0)
    assert p.returncode == 0, p.stderr
    where, _ = _one_cut(path)
    assert stat.S_IMODE(os.stat(path / "cut").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o700
    for f in where.iterdir():
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    assert stat.S_IMODE(os.stat(path / "events.jsonl").st_mode) == 0o600


def test_a_read_only_ledger_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _corrupt_middle(path)
    before = _everything(path)
    with Ledger.open(path, readonly=True, fold=False) as led:
        with pytest.raises(ReadOnlyLedger, match="cannot repair the ledger: ledger .* is opened read-only"):
            led.repair()
    os.chmod(path / "events.jsonl", 0o400)  # write-protected
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 7 and "write-protected" in one_error_line(p.stderr)
    os.chmod(path / "events.jsonl", 0o600)
    assert _everything(path) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_another_users_ledger_is_refused_but_a_dry_run_may_look(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _corrupt_middle(path)
    for root, dirs, files in os.walk(path):
        for n in [*dirs, *files, "."]:
            os.chown(os.path.join(root, n), 65534, 65534)
    before = _everything(path)
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 5 and "owned by uid 65534" in one_error_line(p.stderr)
    p = ledger_cmd(path, "repair", "--dry-run", subprocess_=True)
    assert p.returncode == 0 and p.stdout.startswith("line 12: "), p.stderr
    assert _everything(path) == before


def test_a_symlink_planted_at_cut_is_refused_and_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _corrupt_middle(path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (path / "cut").symlink_to(elsewhere)
    before = _everything(path)
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 5 and "cut: is a symlink, not a directory" in one_error_line(p.stderr)
    assert _everything(path) == before and list(elsewhere.iterdir()) == []


def test_bad_input_is_refused_naming_it_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _corrupt_middle(path)
    before = _everything(path)
    with Ledger.open(path, fold=False) as led:
        for bad in (1, "yes", None):
            with pytest.raises(TypeError, match=f"dry_run must be True or False, not {bad!r}"):
                led.repair(dry_run=bad)  # type: ignore[arg-type]
    for args, says in ((["--dry-run=1"], "--dry-run"), (["extra"], "extra"), (["--bogus"], "--bogus")):
        p = ledger_cmd(path, "repair", *args, subprocess_=True)
        assert p.returncode == 2, (args, p.stdout)
        assert says in one_error_line(p.stderr)
    assert _everything(path) == before
    nothing = tmp_path / "none"
    p = ledger_cmd(nothing, "repair", subprocess_=True)
    assert p.returncode == 6 and "no ledger at" in one_error_line(p.stderr)
    assert not nothing.exists()


def test_a_postgresql_ledger_cannot_be_repaired(pg_url: str) -> None:
    with Ledger.open(pg_url) as led:
        led.register("a", [W("/r/a")])
        with pytest.raises(StoreError, match="cannot repair the ledger at postgresql://.*: only a ledger "
                                             "directory's log can be cut"):
            led.repair()
        with pytest.raises(StoreError):
            led.repair(dry_run=True)
        assert led.verify().ok and led.seq == 1


def test_the_command_line_refuses_a_postgresql_url_in_one_line(pg_url: str) -> None:
    with Ledger.open(pg_url) as led:
        led.register("a", [W("/r/a")])
    p = ledger_cmd(pg_url, "repair", "--json", subprocess_=True)
    line = one_error_line(p.stderr)
    doc = json.loads(p.stdout)["error"]
    assert (doc["type"], doc["exit_code"], p.returncode) == ("StoreError", 7, 7)
    assert "cannot repair the ledger at postgresql://" in line and "only a ledger directory's log can be cut" in line
    with Ledger.open(pg_url) as led:
        assert led.seq == 1 and led.verify().ok


# -- crashes and failures at every step --------------------------------------------------------------

#: The os calls a repair's cut makes that touch the file system.
IO_CALLS = ("open", "mkdir", "fchmod", "fstat", "pread", "write", "fsync", "rename", "ftruncate",
            "fdatasync")


def _pristine(tmp_path: Path) -> tuple[Path, bytes, dict[str, bytes], int]:
    """A damaged ledger to copy for each round: its log, its snapshots, where the cut goes."""
    src = tmp_path / "pristine"
    lines, log = _corrupt_middle(src)
    snaps = {n: (src / "snapshots" / n).read_bytes() for n in os.listdir(src / "snapshots")}
    return src, log, snaps, len(b"".join(lines[:11]))


def _nothing_lost(path: Path, log: bytes, snaps: dict[str, bytes], offset: int) -> bool:
    """Everything of the damaged ledger is still there: the log as it was, or cut at
    ``offset`` with a complete record and copy of the rest; every snapshot in
    ``snapshots/`` or in a directory under ``cut/``. Returns whether the log was cut."""
    now = (path / "events.jsonl").read_bytes()
    found = {n: (path / "snapshots" / n).read_bytes() for n in os.listdir(path / "snapshots")
             if n.startswith("snap-")}
    records = []
    for d in _cut_dirs(path):
        for f in d.iterdir():
            if f.name.startswith("snap-"):
                assert f.name not in found, f"{f.name} twice"
                found[f.name] = f.read_bytes()
        if (d / "record.json").exists():  # whole, or not there at all
            records.append((d, json.loads((d / "record.json").read_text())))
    assert found == snaps
    if now == log:
        return False
    # Cut at offset; after it nothing but the repair's own lines (the last one torn when the
    # repair was stopped in the middle of writing them).
    assert now.startswith(log[:offset])
    ours = now[offset:].split(b"\n")
    for raw in ours[:-1]:
        assert json.loads(raw)["type"] in ("repaired", "void"), raw
    # Cut only once the record and the copy were there.
    assert any(r["offset"] == offset and (d / "events.jsonl.cut").read_bytes() == log[offset:]
               and r["sha256"] == hashlib.sha256(log[offset:]).hexdigest() for d, r in records)
    return True


def _finish(path: Path, log: bytes, snaps: dict[str, bytes], offset: int) -> None:
    """A repair run again finishes the job: the log cut, every snapshot kept somewhere, and the
    cut seqs (12 to 30) kept void, by the repair's own lines (verify: chained, each applies)."""
    with Ledger.open(path, fold=False) as led:
        led.repair()
    assert _nothing_lost(path, log, snaps, offset)
    assert verify(path).ok
    ours = (path / "events.jsonl").read_bytes()[offset:].splitlines()
    assert json.loads(ours[0])["type"] == "repaired" and json.loads(ours[-1])["seq"] == 30


def test_killed_at_any_io_call_of_the_cut_nothing_is_lost(tmp_path: Path) -> None:
    src, log, snaps, offset = _pristine(tmp_path)
    killed_in: list[str] = []
    for k in range(1, 400):
        path = tmp_path / f"k{k}"
        shutil.copytree(src, path)
        pid = os.fork()
        if pid == 0:  # the child: SIGKILLed at its k-th IO call once the cut has begun
            code = 3
            try:
                code = _repair_killed_at(path, k)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, f"the child failed at k={k}"
            assert _nothing_lost(path, log, snaps, offset)
            break
        assert os.WTERMSIG(status) == signal.SIGKILL
        killed_in.append((path / "killed-in").read_text())
        os.unlink(path / "killed-in")
        _nothing_lost(path, log, snaps, offset)
        _finish(path, log, snaps, offset)
        shutil.rmtree(path)
    else:
        raise AssertionError("the repair never finished")
    # Every kind of step was killed: making the directory, copying, flushing, the record's
    # rename, the snapshots' moves, the cut of the log and its flush.
    assert {"mkdir", "write", "fsync", "rename", "ftruncate", "fdatasync"} <= set(killed_in), killed_in
    assert len(killed_in) >= 20, killed_in


def _fault_at(k: int, fault: Any, setattr_: Any = setattr) -> list[int]:
    """Make the ``k``-th IO call (:data:`IO_CALLS`) made once a repair's cut has begun
    (``Store.cut``) call ``fault(name, real function, args)`` first; attributes are set
    with ``setattr_`` (a monkeypatch's, to be undone). Returns the count of calls so far."""
    count = [0]
    cutting = [False]

    def wrap(name: str, fn: Any) -> Any:
        def inner(*args: Any, **kw: Any) -> Any:
            if cutting[0]:
                count[0] += 1
                if count[0] == k:
                    fault(name, fn, args)
            return fn(*args, **kw)
        return inner

    for name in IO_CALLS:
        setattr_(os, name, wrap(name, getattr(os, name)))
    real_cut = _store.Store.cut

    def cut(self: Any, *args: Any, **kw: Any) -> Any:
        cutting[0] = True
        return real_cut(self, *args, **kw)

    setattr_(_store.Store, "cut", cut)
    return count


def _repair_killed_at(path: Path, k: int) -> int:
    """In a forked child: repair ``path``, SIGKILLed at the ``k``-th IO call made once the
    cut has begun (a ``write`` first writes half of its bytes: a torn write). Writes the
    call's name to ``path/killed-in`` first (outside the ledger's files)."""
    note = os.open(path / "killed-in", os.O_WRONLY | os.O_CREAT, 0o600)
    real_write = os.write

    def kill(name: str, fn: Any, args: tuple[Any, ...]) -> None:
        real_write(note, name.encode())
        if name == "write" and len(args[1]) > 1:
            fn(args[0], bytes(args[1])[: len(args[1]) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    _fault_at(k, kill)
    with Ledger.open(path, fold=False) as led:
        led.repair()
    return 0


def _eio(failed: list[str]) -> Any:
    """A fault raising EIO, noting the call's name in ``failed``."""
    def fault(name: str, fn: Any, args: tuple[Any, ...]) -> None:
        failed.append(name)
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return fault


def test_failing_at_any_io_call_of_the_cut_leaves_no_half_made_copy_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, log, snaps, offset = _pristine(tmp_path)
    said = set()
    for k in range(1, 400):
        path = tmp_path / f"f{k}"
        shutil.copytree(src, path)
        failed: list[str] = []
        with monkeypatch.context() as m:
            count = _fault_at(k, _eio(failed), m.setattr)
            with Ledger.open(path, fold=False) as led:
                try:
                    led.repair()
                except LedgerIOError as exc:
                    error: LedgerIOError | None = exc
                else:
                    error = None
        if error is None:
            assert count[0] < k and _nothing_lost(path, log, snaps, offset)
            break
        assert error.errno == errno.EIO and isinstance(error.__cause__, OSError)
        was_cut = _nothing_lost(path, log, snaps, offset)
        message = str(error)
        if was_cut:
            # Failed flushing the cut, or after it, keeping the cut seqs void: a repair run
            # again keeps them void (_finish).
            assert ("the log was cut, but the cut may not survive a power cut" in message
                    or "the log was cut after seq 11 (what was cut is in " in message
                    and "are not kept void yet: run 'ledger repair' again" in message), message
        else:
            assert "the log was not cut" in message
            if message.startswith("failed to set the damaged tail aside"):
                assert not any(_cut_dirs(path)), message  # before anything moved: nothing made stays
            else:  # the record and the copy are there (and the snapshots moved so far)
                assert "the record and a copy of its tail are in " in message or "a copy of its tail is in" in message
        if failed == ["pread"]:  # a read of the log is named as such, not as the copy's
            assert (f"failed to set the damaged tail aside: {path / 'events.jsonl'}: " in message
                    or message.startswith("failed to keep the cut seqs void: ")  # (the copy read back)
                    and "/events.jsonl.cut: " in message), message
        said.add(message.split(":")[0])
        _finish(path, log, snaps, offset)
        shutil.rmtree(path)
    else:
        raise AssertionError("the repair never finished")
    assert said >= {"failed to set the damaged tail aside", "failed to move a snapshot past the cut",
                    "failed to cut the log", "failed to flush the log", "failed to keep the cut seqs void"}, said


def test_a_healthy_ledger_written_to_during_a_repair_is_reported_as_having_nothing_to_repair(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer appends while a repair judges a healthy ledger, after
    its first look: the lines past what it verified are not damage, and it
    does not go to the lock for them. Nothing is cut, and the report says
    so, naming the lines appended meanwhile (not checked)."""
    path = tmp_path / "L"
    _make(path)
    other = Ledger.open(path)
    led = Ledger.open(path)

    def append() -> None:
        other.release(other.register("late", [W(str(tmp_path / "late"))]).name)

    real_damage = Ledger._damage
    looks = []

    def damage(self: Ledger) -> Any:
        out = real_damage(self)
        looks.append(out[0])
        append()  # after the look: lines past what it verified
        return out
    monkeypatch.setattr(Ledger, "_damage", damage)
    locked = []
    real_exclusive = type(led._files).exclusive

    @contextlib.contextmanager
    def exclusive(self: Any, timeout: Any) -> Iterator[Any]:
        locked.append(True)
        with real_exclusive(self, timeout) as held:
            yield held
    monkeypatch.setattr(type(led._files), "exclusive", exclusive)
    try:
        for dry_run in (True, False):
            report = led.repair(dry_run=dry_run)
            assert not report.damaged and report.bytes_cut == 0 and report.directory is None, report
            assert (report.appended, report.writing) == (2, 0) and report.kept_seq == looks[-1] + 2, report
            assert "2 line(s) appended meanwhile by other writers" in str(report)
        assert locked == [] and len(looks) == 2
        _nothing_cut_and_verified(path, led, monkeypatch)
    finally:
        led.close()
        other.close()


def _nothing_cut_and_verified(path: Path, led: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing set aside in ``cut/``; with the test's patches undone, the
    ledger verifies and holds the 30 lines made plus the 4 two writers
    appended."""
    assert not (path / "cut").exists() or os.listdir(path / "cut") == []
    monkeypatch.undo()
    assert led.verify().ok and led.seq == 30 + 4


def test_a_torn_tail_set_aside_by_a_writer_before_the_repair_locks_is_reported_as_nothing_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A torn last line, judged so (no writer holds the lock) at the first
    look; then, before the repair takes the lock, a writer sets it aside
    and appends, and another appends as the lock is let go. Under the lock
    nothing is left to cut, and the report says so: each report is read
    where it was judged (before, the plan was read again after the lock was
    let go, and the line appended then was reported as cut, "set aside in
    None"; a fresh tester's finding)."""
    path = tmp_path / "L"
    lines = _make(path)
    _write_log(path, lines, b'{"v": 2, "se')
    other = Ledger.open(path)
    led = Ledger.open(path, fold=False)

    def append() -> None:
        other.release(other.register("late", [W(str(tmp_path / "late"))]).name)

    real_judge = type(led._files).judge_past
    judged = []

    def judge_past(self: Any, kept: int) -> Any:
        out = real_judge(self, kept)
        judged.append(out)
        append()  # the torn tail set aside (into torn/) and two lines appended
        return out
    monkeypatch.setattr(type(led._files), "judge_past", judge_past)
    real_exclusive = type(led._files).exclusive

    @contextlib.contextmanager
    def exclusive(self: Any, timeout: Any) -> Iterator[Any]:
        with real_exclusive(self, timeout) as held:
            yield held
        append()  # as the lock is let go
    monkeypatch.setattr(type(led._files), "exclusive", exclusive)
    try:
        report = led.repair()
        assert judged[0][1]["bytes"] == 12  # (the first look found it torn: it went to the lock)
        assert not report.damaged and report.bytes_cut == 0 and report.directory is None, report
        _nothing_cut_and_verified(path, led, monkeypatch)
    finally:
        led.close()
        other.close()


# -- a dry run while another process writes (a fresh tester's finding: repair_in_use.sh) -----------

#: A writer in a process of its own: it appends what it is told, a pair of whole
#: lines or part of one, holding the ledger's lock (the library's Store, as
#: every writer takes it) while it says so and waits to be told to go on.
_WRITER = """
import os, sys
from scopeledger import Ledger, ScopeRule
from scopeledger import _store
from scopeledger._history import CHECKED_LINES
path, what = sys.argv[1], sys.argv[2]
if what == "pairs":
    with Ledger.open(path) as led:
        for i in range(int(sys.argv[3])):
            led.release(led.register(f"w{i}", [ScopeRule(f"/w/{i}", "write")]).name)
    print("done", flush=True)
else:
    store = _store.Store(path, create=False)
    with store.locked():
        os.write(store.logfd, sys.argv[3].encode())  # (O_APPEND: at the end)
        print("holding", flush=True)
        sys.stdin.readline()
        if what == "finish":
            os.write(store.logfd, sys.argv[4].encode())
    print("let go", flush=True)
"""


def _writer(path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(path), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=clean_env())


def _dry_run(path: Path) -> tuple[RepairReport, subprocess.CompletedProcess[str]]:
    with Ledger.open(path, readonly=True, fold=False) as led:
        report = led.repair(dry_run=True)
    return report, ledger_cmd(path, "repair", "--dry-run", subprocess_=True)


def test_a_dry_run_tells_a_line_being_written_from_a_torn_one(tmp_path: Path) -> None:
    """A real writer process holds the lock with half a line appended: the
    dry run says the line is being written, and nothing to cut. Once the
    writer finishes the line and lets go, nothing to repair. And half a
    line left by a writer that died holding the lock (its lock gone with
    it) is torn: the dry run says what a repair would cut."""
    path = tmp_path / "L"
    lines = _make(path)
    line = lines[-1].replace(b'"seq":30', b'"seq":31')  # (only its length matters here)
    head, rest = line[:25].decode(), line[25:].decode()
    w = _writer(path, "finish", head, rest)
    try:
        assert w.stdout.readline() == "holding\n"
        report, p = _dry_run(path)
        assert not report.damaged and (report.writing, report.appended, report.kept_seq) == (25, 0, 30), report
        assert report.bytes_cut == 0 and report.offset == report.log_bytes == len(b"".join(lines)) + 25
        assert (p.returncode, p.stderr) == (0, "")
        assert p.stdout.splitlines() == [
            f"nothing to repair in {path}: every line of the log checks out (seq 30) and no snapshot lies "
            "past its end",
            "note: a line of 25 bytes was being written at the log's end by a writer holding the lock: "
            "not judged"]
        w.stdin.write("\n")
        w.stdin.flush()
        assert w.stdout.readline() == "let go\n"
    finally:
        w.kill()
        w.wait()
    report, _ = _dry_run(path)  # (line 31 is not a valid event: complete, so verify judges it)
    assert report.damaged and report.line == 31 and report.writing == 0
    # Torn: half a line, its writer killed while it held the lock (the lock went with it).
    _write_log(path, lines)
    w = _writer(path, "hold", head)
    assert w.stdout.readline() == "holding\n"
    w.kill()
    w.wait()
    report, p = _dry_run(path)
    assert report.damaged and report.writing == 0 and (report.line, report.bytes_cut, report.lines_cut) == (31, 25, 1)
    assert report.reason.startswith("a torn last line: 25 bytes after line 30 without a newline")
    assert p.stdout.splitlines()[1].startswith(f"would cut the log at byte {len(b''.join(lines))} of "
                                               f"{len(b''.join(lines)) + 25}, after seq 30: 25 bytes, 1 line(s)")
    with Ledger.open(path, fold=False) as led:
        done = led.repair()
    assert attrs.evolve(done, dry_run=True, directory=None, record=None) == report


def test_where_flock_fails_a_partial_last_line_is_torn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system whose flock fails (ENOLCK) the shared look cannot
    tell; no writer can hold the lock there either, so a partial last line
    is torn, as before; the failure is not raised."""
    path = tmp_path / "L"
    lines = _make(path)
    _write_log(path, lines, lines[-1][:30])
    real_flock = fcntl.flock

    def flock(fd: int, op: int) -> None:
        if op == fcntl.LOCK_SH | fcntl.LOCK_NB:
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        real_flock(fd, op)
    monkeypatch.setattr(_store.fcntl, "flock", flock)
    with Ledger.open(path, readonly=True, fold=False) as led:
        report = led.repair(dry_run=True)
    assert report.damaged and (report.bytes_cut, report.writing, report.line) == (30, 0, 31)


def test_a_dry_run_while_a_writer_appends_reports_no_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real writer process appends 50 pairs between the dry run's look
    (verify) and its judgement of what lies past it: not damage; the report
    names the lines appended meanwhile. Before, they were 'a torn last line'
    that a repair would cut (repair_in_use.sh: 2 of 3 dry runs)."""
    path = tmp_path / "L"
    _make(path)
    real_damage = Ledger._damage

    def damage(self: Ledger) -> Any:
        out = real_damage(self)
        w = _writer(path, "pairs", "50")
        assert w.communicate(timeout=60)[0] == "done\n" and w.returncode == 0
        return out
    monkeypatch.setattr(Ledger, "_damage", damage)
    with Ledger.open(path, readonly=True, fold=False) as led:
        report = led.repair(dry_run=True)
    assert not report.damaged and report.bytes_cut == 0 and report.snapshots == (), report
    assert (report.kept_seq, report.appended, report.writing) == (130, 100, 0)
    monkeypatch.undo()
    assert verify(str(path)).ok


# -- a snapshot at the last lines' seqs vouches for them --------------------------------------


def _snapped_then_edited(path: Path, n: int, line: int, old: bytes, new: bytes) -> Any:
    """``n`` live holders h0.., a snapshot at seq ``n``, then line ``line``
    edited (``old`` to ``new``); verify's first problem."""
    lines = _live(path, n)
    with Ledger.open(path) as led:
        led.snapshot()
    assert _snaps(path) == [n]
    lines[line - 1] = lines[line - 1].replace(old, new)
    _write_log(path, lines)
    return _first_problem(path)


def test_the_last_line_altered_is_named_by_the_snapshot_at_its_seq_and_cut(tmp_path: Path) -> None:
    # Nothing follows the last line to tell it was altered; the snapshot at its seq
    # recorded its hash. Before, verify blamed the (genuine) snapshot and a repair found
    # nothing to repair, keeping the edited grant (h4 on /r/X) for good (a fresh
    # tester's finding).
    path = tmp_path / "L"
    problem = _snapped_then_edited(path, 5, 5, b"/r/4", b"/r/X")
    assert (problem.file, problem.line, problem.seq) == (str(path / "events.jsonl"), 5, 5), problem
    assert "the snapshot at seq 5 recorded" in problem.message
    report = Ledger.open(path, fold=False).repair()
    assert (report.kept_seq, report.void_through, report.snapshots) == (4, 5, (_snap_name(5),))
    assert verify(path).ok
    with Ledger.open(path) as led:
        assert [a.name for a in led.holders()] == ["h0", "h1", "h2", "h3"]
        assert led.register("next", [W("/r/next")]).token == 6


def test_the_line_before_a_last_line_a_snapshot_vouches_for_is_named_when_altered(tmp_path: Path) -> None:
    # Line 4 edited; line 5, the last, no longer chains to it, and nothing after line 5
    # tells which of the two was altered, but the snapshot at seq 5 recorded line 5's
    # hash: line 4 was. Before, the repair cut the genuine line 5 and kept the edited 4.
    path = tmp_path / "L"
    problem = _snapped_then_edited(path, 5, 4, b"/r/3", b"/r/X")
    assert (problem.line, problem.seq) == (4, 4), problem
    assert "which the snapshot at seq 5 vouches for" in problem.message
    report = Ledger.open(path, fold=False).repair()
    assert (report.kept_seq, report.void_through) == (3, 5)
    with Ledger.open(path) as led:
        assert [a.name for a in led.holders()] == ["h0", "h1", "h2"]


def test_a_middle_line_altered_at_a_snapshots_seq_is_named_once_and_first(tmp_path: Path) -> None:
    # Line 5 of 8 edited, a snapshot at seq 5: the first problem is the line, not the
    # genuine snapshot (before: the snapshot first, then the line), and once.
    path = tmp_path / "L"
    _live(path, 5)
    with Ledger.open(path) as led:
        led.snapshot()
        for i in range(5, 8):
            led.register(f"h{i}", [W(f"/r/{i}")])
    lines = (path / "events.jsonl").read_bytes().splitlines(keepends=True)
    lines[4] = lines[4].replace(b"/r/4", b"/r/X")
    _write_log(path, lines)
    problems = verify(path).problems
    assert [(p.line, p.seq) for p in problems] == [(5, 5)], problems


# -- a snapshot of another ledger ------------------------------------------------------------------


def _two_ledgers(tmp_path: Path) -> tuple[Path, Path, str]:
    """Two ledgers made apart, 5 live holders each (other names, other paths), a
    snapshot at seq 5 in the other one only (mine has its id: made with a snapshot,
    since removed). Returns both and the snapshot's name."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    _live(mine, 5)
    with Ledger.open(mine) as led:
        led.snapshot()
    (mine / "snapshots" / _snap_name(5)).unlink()
    with Ledger.open(other) as led:
        for i in range(5):
            led.register(f"o{i}", [W(f"/o/{i}")])
        led.snapshot()
    return mine, other, _snap_name(5)


def test_a_snapshot_copied_from_another_ledger_is_named_set_aside_and_cuts_no_line(tmp_path: Path) -> None:
    # A fresh tester's finding: a snapshot copied from another ledger at the same seq
    # (sound on its own) made verify name line 1 "altered" (the snapshot-vouch rule) and
    # a repair cut every genuine line, every holder losing its grant.
    mine, other, name = _two_ledgers(tmp_path)
    shutil.copy2(other / "snapshots" / name, mine / "snapshots" / name)
    log = (mine / "events.jsonl").read_bytes()
    problems = verify(mine).problems
    assert len(problems) == 1, problems
    problem = problems[0]
    assert (problem.file, problem.line, problem.seq) == (str(mine / "snapshots" / name), None, 5), problem
    ids = [(p / "ledger-id").read_text().strip() for p in (mine, other)]
    assert ids[0] != ids[1] and all(len(i) == 32 for i in ids)
    assert problem.message == f"a snapshot of another ledger: its id {ids[1]}, this ledger's {ids[0]}"
    p = ledger_cmd(mine, "repair", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    dry = json.loads(p.stdout)
    assert (dry["kept_seq"], dry["lines"], dry["snapshots"]) == (5, 0, [name]), dry
    assert (mine / "events.jsonl").read_bytes() == log and _snaps(mine) == [5]
    report = Ledger.open(mine, fold=False).repair()
    assert (report.kept_seq, report.lines_cut, report.snapshots, report.void_through) == (5, 0, (name,), None)
    assert "another ledger" in report.reason
    where, record = _one_cut(mine)
    assert (where / name).read_bytes() == (other / "snapshots" / name).read_bytes()
    assert record["snapshots"] == [name]
    assert (mine / "events.jsonl").read_bytes() == log and _snaps(mine) == []
    assert verify(mine).ok
    with Ledger.open(mine) as led:
        held = led.holders()
        assert [a.name for a in held] == [f"h{i}" for i in range(5)]
        assert all(led.check(a.name, a.token) for a in held)


def test_opening_never_loads_a_snapshot_of_another_ledger(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The other ledger's snapshot at seq 5, its header's and body's hash and offsets
    # made this log's line 5's (its checksum too): it matches the log, and still names
    # another ledger, whose holders it holds.
    mine, other, name = _two_ledgers(tmp_path)
    head, body = (other / "snapshots" / name).read_bytes().split(b"\n", 1)
    header, doc = json.loads(head), json.loads(body)
    lines = (mine / "events.jsonl").read_bytes().splitlines(keepends=True)
    doc["last_hash"] = header["last_hash"] = hashlib.blake2b(lines[4][:-1], digest_size=16).hexdigest()
    header["line_start"], header["offset"] = sum(map(len, lines[:4])), sum(map(len, lines))
    body = json.dumps(doc, separators=(",", ":")).encode()
    header["checksum"] = hashlib.blake2b(body, digest_size=16).hexdigest()
    snap = mine / "snapshots" / name
    snap.write_bytes(json.dumps(header).encode() + b"\n" + body + b"\n")
    snap.chmod(0o600)
    with Ledger.open(mine) as led:
        assert [a.name for a in led.holders()] == [f"h{i}" for i in range(5)]
    assert any("another ledger" in r.getMessage() for r in caplog.records), caplog.records


def test_a_ledger_copied_whole_keeps_its_id_and_trusts_its_snapshots(tmp_path: Path) -> None:
    mine, _, name = _two_ledgers(tmp_path)
    with Ledger.open(mine) as led:
        led.snapshot()
    copied = tmp_path / "copied"
    shutil.copytree(mine, copied)
    imported = tmp_path / "imported"
    p = ledger_cmd(imported, "init")
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*CMD, "import", str(mine), str(imported)], env=clean_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for path in (copied, imported):
        assert (path / "ledger-id").read_bytes() == (mine / "ledger-id").read_bytes()
        assert (path / "snapshots" / name).read_bytes() == (mine / "snapshots" / name).read_bytes()
        assert stat.S_IMODE((path / "ledger-id").stat().st_mode) == 0o600
        report = verify(path)
        assert report.ok and report.snapshots == 1, report.problems


def test_a_ledger_without_its_id_file_is_used_as_before(tmp_path: Path) -> None:
    # The id file lost: the ledger takes back the id its own snapshots carry (one that
    # matches the log); unreadable, a snapshot naming a ledger vouches for no line,
    # and nothing else changes.
    mine, other, name = _two_ledgers(tmp_path)
    before = (mine / "ledger-id").read_bytes()
    with Ledger.open(mine) as led:
        led.snapshot()
    (mine / "ledger-id").unlink()
    assert verify(mine).ok  # (read-only: the id is the one its snapshot carries)
    with Ledger.open(mine) as led:
        assert led.check("h5", led.register("h5", [W("/r/5")]).token)
    assert (mine / "ledger-id").read_bytes() == before
    (mine / "ledger-id").unlink()
    (mine / "ledger-id").mkdir()  # (not a file: cannot be read)
    report = verify(mine)
    assert report.ok, report.problems
    with Ledger.open(mine) as led:
        led.register("h6", [W("/r/6")])
        led.snapshot()
    assert verify(mine).ok
    # Another ledger's snapshot, sound, at the last line's seq: it vouches for nothing.
    (mine / "snapshots" / _snap_name(7)).unlink()
    with Ledger.open(other) as led:
        led.register("o5", [W("/o/5")])
        led.register("o6", [W("/o/6")])
        led.snapshot()
    shutil.copy2(other / "snapshots" / _snap_name(7), mine / "snapshots" / _snap_name(7))
    problems = verify(mine).problems
    assert [(p.file, p.line) for p in problems] == [(str(mine / "snapshots" / _snap_name(7)), None)], problems
