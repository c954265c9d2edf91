"""Retention (issue 17): ``ledger snapshot --prune [--keep N]`` and the library's
``Ledger.prune_snapshots(keep)``: the newest N kept (default ``PRUNE_KEEP``, 3), and
whatever N says, every snapshot past the log's end (the only record of lost events)
and the newest one that checks out against the log (the one opening starts from)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import ledger_cmd, one_error_line
from scopeledger import Ledger, ReadOnlyLedger, ScopeRule


def _make(path: Path, pairs: int = 40) -> None:
    """A ledger with a snapshot every 10 events: 2 * pairs events."""
    with Ledger.open(path, snapshot_every=10) as led:
        for _ in range(pairs):
            led.register("h", [ScopeRule("/r/a", "write")])
            led.release("h")


def _snaps(path: Path) -> list[int]:
    return sorted(int(n[5:-5]) for n in os.listdir(path / "snapshots") if n.startswith("snap-"))


def test_prune_keeps_the_newest_n_and_says_what_it_removed(tmp_path: Path) -> None:
    led = tmp_path / "L"
    _make(led)
    assert _snaps(led) == [10, 20, 30, 40, 50, 60, 70, 80]
    p = ledger_cmd(led, "snapshot", "--prune", "--keep", "2")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"snapshot at seq 80 in {led}",
                                     *(f"removed snapshot at seq {s}" for s in (10, 20, 30, 40, 50, 60))]
    assert _snaps(led) == [70, 80]
    p = ledger_cmd(led, "snapshot", "--prune")
    assert p.returncode == 0 and p.stdout.splitlines()[1:] == ["no snapshot to remove"], p.stdout


def test_prune_keeps_three_by_default_and_json_lists_the_seqs(tmp_path: Path) -> None:
    led = tmp_path / "L"
    _make(led)
    p = ledger_cmd(led, "snapshot", "--prune", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"ledger": str(led), "seq": 80, "written": True,
                                    "pruned": [10, 20, 30, 40, 50]}
    assert _snaps(led) == [60, 70, 80]
    # Without --prune, as before: nothing removed, no "pruned" key.
    p = ledger_cmd(led, "snapshot", "--json")
    assert json.loads(p.stdout) == {"ledger": str(led), "seq": 80, "written": True}


def test_the_snapshot_opening_starts_from_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _make(path)
    for seq in (70, 80):  # damaged: opening skips them and starts from seq 60
        f = path / "snapshots" / f"snap-{seq:016d}.json"
        data = bytearray(f.read_bytes())
        data[-5] ^= 1
        f.write_bytes(bytes(data))
    with Ledger.open(path) as led:
        # Kept: the newest (as asked) and the one opening starts from; the damaged 70 goes.
        assert led.prune_snapshots(keep=1) == [10, 20, 30, 40, 50, 70]
    assert _snaps(path) == [60, 80]


def test_snapshots_past_the_end_of_the_log_are_never_removed(tmp_path: Path) -> None:
    led = tmp_path / "L"
    _make(led)
    log = led / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:45]))  # a power cut took events 46 to 80
    past = {s: (led / "snapshots" / f"snap-{s:016d}.json").read_bytes() for s in (50, 60, 70, 80)}
    # A writer moves them into cut/ first, with a record, and keeps their seqs void
    # (tests/test_snapshots.py), so that pruning never meets them: one opened without
    # folding does it when it first folds, here to prune (before, pruning met them).
    p = ledger_cmd(led, "snapshot", "--prune", "--keep", "1")
    assert p.returncode == 0, p.stderr
    assert "moved the snapshots past the end of the log" in p.stderr
    assert [line for line in p.stdout.splitlines() if line.startswith("removed")] == [
        "removed snapshot at seq 10", "removed snapshot at seq 20", "removed snapshot at seq 30",
        "removed snapshot at seq 40"]
    # (the lost seqs 46 to 80 kept void first, a repaired line and void lines: the log ends at 80)
    assert _snaps(led) == [80]
    (cut,) = (led / "cut").iterdir()
    assert {s: (cut / f"snap-{s:016d}.json").read_bytes() for s in past} == past
    # The same with a writer opened without folding: its first fold does it.
    led2 = tmp_path / "L2"
    _make(led2)
    (led2 / "events.jsonl").write_bytes(b"".join((led2 / "events.jsonl").read_bytes().splitlines(keepends=True)[:45]))
    with Ledger.open(led2, fold=False) as ledger:
        assert ledger.prune_snapshots(keep=1) == [10, 20, 30]  # (40: opening starts from it)
        assert ledger.lost is not None and ledger.lost.void_through == 80 and ledger.seq == 80
    assert _snaps(led2) == [40]
    (cut,) = (led2 / "cut").iterdir()
    assert sorted(os.listdir(cut)) == ["record.json", *(f"snap-{s:016d}.json" for s in past)]


def test_bad_keep(tmp_path: Path) -> None:
    led = tmp_path / "L"
    _make(led, 10)
    before = _snaps(led)
    for args, says in ((["--prune", "--keep", "0"], "'--keep'"), (["--keep", "2"], "--keep goes with --prune"),
                       (["--prune", "--keep", "x"], "'--keep'")):
        p = ledger_cmd(led, "snapshot", *args)
        assert p.returncode == 2, p.stdout
        assert says in one_error_line(p.stderr)
    assert _snaps(led) == before
    with Ledger.open(led) as ledger:
        for bad in (0, -1, "3", 2.0, True):
            with pytest.raises(ValueError, match="keep must be None or an int >= 1"):
                ledger.prune_snapshots(keep=bad)  # type: ignore[arg-type]
    with Ledger.open(led, readonly=True) as ledger:
        with pytest.raises(ReadOnlyLedger):
            ledger.prune_snapshots()
    assert _snaps(led) == before
