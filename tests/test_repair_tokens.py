"""A repair never lets a fencing token be given twice.

A token is its grant's seq and seqs are gapless, so before this a repair that
cut lines let the next grants take the cut lines' seqs again: a process still
holding a cut grant and a newer holder then carried the same token, which a
resource fencing by "no token below the largest seen" lets both through (a
fresh tester's finding). Now a repair writes a ``repaired`` line in place of
the first line it cut, naming what it cut and the last seq it cut
(``through``), and a ``void`` line for each seq after it up to there; a writer
that finds them cut short (a crash) fills them before its own event; a repair
stopped between its cut and its own lines, run again, writes them. Real
files, real repairs, the command line in real processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from helpers import W, ledger_cmd
from scopeledger import CorruptLedger, Ledger, LedgerIOError, _store, verify
from torture_support import as_v1_event


def _log(path: Path) -> list[bytes]:
    return (path / "events.jsonl").read_bytes().splitlines(keepends=True)


def _h(line: bytes) -> str:
    return hashlib.blake2b(line.rstrip(b"\n"), digest_size=16).hexdigest()


def _grants(path: Path, n: int = 5) -> list[int]:
    """``n`` live holders h0.. on /r/0.., their tokens."""
    with Ledger.open(path) as led:
        return [led.register(f"h{i}", [W(f"/r/{i}")]).token for i in range(n)]


def _damage(path: Path, line: int) -> None:
    """Line ``line`` (1-based) edited after it was written: the next line no longer chains to it."""
    lines = _log(path)
    lines[line - 1] = lines[line - 1].replace(b'"/r/', b'"/R/', 1)
    (path / "events.jsonl").write_bytes(b"".join(lines))


def _repair(path: Path) -> Any:
    with Ledger.open(path, fold=False) as led:
        return led.repair()


def _types(path: Path) -> list[tuple[int, str]]:
    return [(json.loads(raw)["seq"], json.loads(raw)["type"]) for raw in _log(path)]


def test_a_cut_grants_token_is_never_given_again(tmp_path: Path) -> None:
    path = tmp_path / "L"
    assert _grants(path) == [1, 2, 3, 4, 5]
    _damage(path, 3)
    report = _repair(path)
    assert (report.kept_seq, report.lines_cut, report.void_through) == (2, 3, 5)
    assert _types(path) == [(1, "registered"), (2, "registered"), (3, "repaired"), (4, "void"), (5, "void")]
    repaired = json.loads(_log(path)[2])
    assert repaired["through"] == 5 and repaired["cut"] == os.path.relpath(report.directory, path)
    assert verify(path).ok
    with Ledger.open(path) as led:
        # h2's grant (token 3) was cut; h2 asks again for the same scope: a token past every cut one.
        assert not led.check("h2", 3) and not led.check("h3", 4)
        again = led.register("h2", [W("/r/2")])
        assert again.token == 6
        assert led.register("h3", [W("/r/3")]).token == 7
        # Time travel through the repair's seqs: the state as the kept lines left it.
        assert sorted(led.state_at(seq=5).holders) == sorted(led.state_at(seq=2).holders) == ["h0", "h1"]
    assert verify(path).ok


def test_the_command_line_says_so_and_replays_it_in_words(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _grants(path)
    _damage(path, 3)
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert ("record the repair at seq 3 and keep seqs 4 to 5 void: the cut lines' seqs are never given again "
            "(a fencing token names one grant)") in out
    assert out[-1] == "new events go on from seq 6"
    where = Path(json.loads(_log(path)[2])["cut"])
    p = ledger_cmd(path, "replay", subprocess_=True)
    assert p.returncode == 0, p.stderr
    rows = p.stdout.splitlines()
    assert "repaired" in rows[2] and "the log was cut after seq 2 by pid " in rows[2]
    assert f"(what was cut: {where}); seqs 4 to 5 kept void, so no fencing token is given twice" in rows[2]
    assert "void" in rows[3] and "kept void by the repair before it" in rows[3]
    p = ledger_cmd(path, "replay", "--json", subprocess_=True)
    assert [json.loads(r)["type"] for r in p.stdout.splitlines()][2:] == ["repaired", "void", "void"]


def test_void_lines_cut_short_by_a_crash_are_filled_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _grants(path, 8)
    _damage(path, 3)
    assert _repair(path).void_through == 8
    lines = _log(path)
    # A crash in the middle of the repair's write: its line is there, the void lines are not
    # (the last one half written).
    (path / "events.jsonl").write_bytes(b"".join(lines[:4]) + lines[4][:30])
    with Ledger.open(path) as led:  # a writer: sets the torn tail aside, fills seqs 5 to 8 first
        grant = led.register("h2", [W("/r/2")])
    assert grant.token == 9
    assert _types(path)[2:] == [(3, "repaired"), (4, "void"), (5, "void"), (6, "void"), (7, "void"),
                                (8, "void"), (9, "registered")]
    assert verify(path).ok


def test_a_repair_stopped_after_its_cut_is_finished_by_the_next_repair(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "L"
    _grants(path, 6)
    _damage(path, 2)
    kept = b"".join(_log(path)[:1])
    real = _store.Store.append

    def refused(self: Any, data: bytes, expected_size: int, fsync: bool) -> None:
        raise LedgerIOError(self.log_path, "write the log", OSError(28, "No space left on device"))

    with monkeypatch.context() as m:
        m.setattr(_store.Store, "append", refused)
        with pytest.raises(LedgerIOError) as err:
            _repair(path)
    message = str(err.value)
    assert "the log was cut after seq 1 (what was cut is in " in message
    assert "seqs 2 to 6 are not kept void yet: run 'ledger repair' again before anything else writes" in message
    assert (path / "events.jsonl").read_bytes() == kept  # cut, its own lines missing
    assert _store.Store.append is real
    dry = ledger_cmd(path, "repair", "--dry-run", subprocess_=True)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[1:] == [
        "would record the repair at seq 2 and keep seqs 3 to 6 void: the cut lines' seqs are never given again "
        "(a fencing token names one grant)", "nothing was changed (--dry-run)"]
    assert dry.stdout.startswith("the repair recorded in ") and "was stopped before it recorded itself" in dry.stdout
    assert (path / "events.jsonl").read_bytes() == kept
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "new events go on from seq 7"
    assert _types(path) == [(1, "registered"), (2, "repaired"), (3, "void"), (4, "void"), (5, "void"),
                            (6, "void")]
    p = ledger_cmd(path, "repair", subprocess_=True)  # finished: nothing more to do
    assert p.stdout.startswith("nothing to repair in "), p.stdout
    with Ledger.open(path) as led:
        assert led.register("h1", [W("/r/1")]).token == 7
    assert verify(path).ok


def test_a_later_repair_below_an_earlier_ones_reach_keeps_the_earlier_seqs_void_too(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _grants(path, 6)
    _damage(path, 4)
    assert _repair(path).void_through == 6  # 4 repaired, 5-6 void
    # Line 3 (a grant before that cut) damaged now: the cut from line 3 takes the repair's lines
    # too; what is kept void reaches at least as far as before.
    _damage(path, 3)
    report = _repair(path)
    assert (report.kept_seq, report.void_through) == (2, 6)
    assert _types(path)[2:] == [(3, "repaired"), (4, "void"), (5, "void"), (6, "void")]
    with Ledger.open(path) as led:
        assert led.register("x", [W("/r/x")]).token == 7


def _chain(lines: list[bytes], events: list[dict[str, Any]]) -> list[bytes]:
    """``lines`` and then ``events`` encoded, each chained to the line before."""
    out = list(lines)
    for ev in events:
        ev = dict(ev, seq=len(out) + 1, prev=_h(out[-1]))
        out.append(json.dumps(ev, separators=(",", ":")).encode() + b"\n")
    return out


def test_an_event_other_than_void_inside_a_kept_range_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _grants(path, 5)
    _damage(path, 3)
    _repair(path)
    lines = _log(path)  # 1-2 registered, 3 repaired through 5, 4-5 void
    grant = json.loads(_log(path)[0])
    forged = dict(grant, holder=dict(grant["holder"], name="sneak", rules=[["/r/9", "write", True]]))
    (path / "events.jsonl").write_bytes(b"".join(_chain(lines[:3], [forged])))
    problem = verify(path).problems[0]
    assert problem.seq == 4 and "a registered event at seq 4, a seq a repair keeps void (through 5)" in problem.message
    with pytest.raises(CorruptLedger, match="a seq a repair keeps void"):
        Ledger.open(path)
    # A void line where no repair keeps one is damage too.
    void = json.loads(lines[3])
    (path / "events.jsonl").write_bytes(b"".join(_chain(lines[:5], [void])))
    problem = verify(path).problems[0]
    assert problem.seq == 6 and "a void line at seq 6, past the seqs a repair keeps void (through 5)" in problem.message
    (path / "events.jsonl").write_bytes(b"".join(_chain(lines[:2], [void])))
    assert "past the seqs a repair keeps void (none)" in verify(path).problems[0].message
    # A repair's line keeping seqs before itself, or with a bad through or cut, is damage.
    repaired = json.loads(lines[2])
    for bad, says in (({"through": 2}, "keeps seqs void through 2, before itself"),
                      ({"through": 0}, "through is 0"), ({"through": "5"}, "through is '5'"),
                      ({"cut": ""}, "cut is ''"), ({"cut": "a\nb"}, "cut is ")):
        (path / "events.jsonl").write_bytes(b"".join(_chain(lines[:2], [dict(repaired, **bad)])))
        problem = verify(path).problems[0]
        assert problem.seq == 3 and says in problem.message, (bad, problem.message)


def test_the_repairs_lines_validate_against_the_schema_and_only_as_v2(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install -e '.[test]')")
    from scopeledger import _schema

    validator = jsonschema.Draft202012Validator(_schema.load())
    path = tmp_path / "L"
    _grants(path, 4)
    _damage(path, 2)
    _repair(path)
    for raw in _log(path)[1:]:
        ev = json.loads(raw)
        assert ev["type"] in ("repaired", "void")
        assert not list(validator.iter_errors(ev)), raw
        assert not validator.is_valid(as_v1_event(ev)), raw  # (format v1 has neither type)
        assert not validator.is_valid(dict(ev, extra=1)), raw
    assert not validator.is_valid(dict(json.loads(_log(path)[1]), through=0))


def _repair_lines_length(tmp_path: Path, pad: int) -> tuple[int, int]:
    """In a scratch ledger built as the next test builds its own: the length of line 2
    (h1's grant, its note ``pad`` x's) and of the lines a repair of lines 2 and 3 writes."""
    path = tmp_path / "scratch"
    with Ledger.open(path) as led:
        led.register("h0", [W("/r/0")])
        led.register("h1", [W("/r/1")], note="x" * pad)
        led.register("h2", [W("/r/2")])
        led.register("h3", [W("/r/3")])
    lines = _log(path)
    kept = len(lines[0])
    _damage(path, 2)
    assert _repair(path).void_through == 4
    return len(lines[1]), (path / "events.jsonl").stat().st_size - kept


def test_a_writer_that_read_a_cut_line_never_chains_to_it_even_when_the_log_ends_where_it_ended(
        tmp_path: Path) -> None:
    # A writer (another Ledger object, another process) had read the log to line 2 and
    # remembers where that line ended. A repair cut lines 2 to 4 and wrote its own lines:
    # had they ended the log at that very byte, the writer would have taken the log for
    # unchanged and chained its next line to line 2 as it had read it, a line no longer in
    # the log (a broken chain; before, a repair always left the log shorter, which the writer
    # noticed). The repair adds a void line when its lines would end there. The writer, finding
    # the log not as it read it, folds it again and chains to the repair's lines (before, it
    # raised CorruptLedger on every call until opened again).
    line2, ours = _repair_lines_length(tmp_path, 1)
    pad = ours - line2 + 1  # (h1's line then ends where the repair's lines will)
    assert pad >= 1, (line2, ours)
    path = tmp_path / "L"
    writer = Ledger.open(path)
    try:
        writer.register("h0", [W("/r/0")])
        writer.register("h1", [W("/r/1")], note="x" * pad)
        end_of_line_2 = (path / "events.jsonl").stat().st_size
        with Ledger.open(path) as other:
            other.register("h2", [W("/r/2")])
            other.register("h3", [W("/r/3")])
        _damage(path, 2)
        report = _repair(path)
        assert (report.kept_seq, report.void_through) == (1, 5)  # (4, and one more: see above)
        assert (path / "events.jsonl").stat().st_size != end_of_line_2
        assert writer.register("late", [W("/r/late")]).token == 6
    finally:
        writer.close()
    assert verify(path).ok
    assert _types(path) == [(1, "registered"), (2, "repaired"), (3, "void"), (4, "void"), (5, "void"),
                            (6, "registered")]


def test_every_reader_of_a_repaired_ledger_takes_its_lines(tmp_path: Path) -> None:
    # The repair's lines are about no holder: the history of a holder, a replay by holder
    # or by path read a holder's name from every event and crashed on them (KeyError:
    # 'name', exit 70 at the command line: a fresh tester's finding).
    path = tmp_path / "L"
    _grants(path, 6)
    _damage(path, 3)
    _repair(path)
    with Ledger.open(path) as led:
        led.release("h0")
        assert [e.type for e in led.history("h0")] == ["registered", "released"]
        repaired = next(e for e in led.events() if e.type == "repaired")
        assert repaired.names == ()
    for args in (["history", "h0"], ["replay", "--holder", "h0"], ["replay", "--path", "/r/0"],
                 ["--json", "history", "h0"]):
        p = ledger_cmd(path, *args, subprocess_=True)
        assert p.returncode == 0 and "Traceback" not in p.stderr and "internal error" not in p.stderr, (args, p)
        assert "h0" in p.stdout and "repaired" not in p.stdout, (args, p.stdout)
    p = ledger_cmd(path, "export", "--format", "csv", subprocess_=True)
    assert p.returncode == 0, p.stderr
    row = next(r for r in p.stdout.splitlines() if ",repaired," in r)
    assert "seqs 4 to 6 kept void, so no fencing token is given twice" in row, row


def test_the_earlier_repairs_records_are_read_before_anything_is_cut(tmp_path: Path) -> None:
    # A record under cut/ that cannot be read: the repair cut the log first and then failed
    # to keep the cut seqs void, every run again failing the same way, and the next grant took
    # a cut grant's token (a fresh tester's finding). Read before the cut, it stops the repair
    # with the log as it was.
    path = tmp_path / "L"
    _grants(path, 5)
    (path / "cut" / "20000101T000000.000000000Z-line-1" / "record.json").mkdir(parents=True, mode=0o700)
    os.chmod(path / "cut", 0o700)
    _damage(path, 3)
    before = (path / "events.jsonl").read_bytes()
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 7, (p.stdout, p.stderr)
    assert "failed to read the repairs' records" in p.stderr and "the log was not cut" in p.stderr, p.stderr
    assert (path / "events.jsonl").read_bytes() == before and len(os.listdir(path / "cut")) == 1


def test_a_record_of_another_log_under_cut_is_not_taken_for_this_ones(tmp_path: Path) -> None:
    # A record whose kept line this log does not hold (copied from another ledger, a digit
    # changed) made a repair of a healthy ledger append void lines up to its reach (2 million:
    # a fresh tester's finding). Only a record whose kept line the log holds counts.
    path = tmp_path / "L"
    _grants(path, 3)
    where = path / "cut" / "20000101T000000.000000000Z-line-2000001"
    where.mkdir(parents=True, mode=0o700)
    os.chmod(path / "cut", 0o700)
    record = {"kept_seq": 2_000_000, "kept_hash": "0" * 32, "lines": 5, "offset": 10}
    (where / "record.json").write_text(json.dumps(record))
    os.chmod(where / "record.json", 0o600)
    before = (path / "events.jsonl").read_bytes()
    assert not _repair(path).damaged
    # Nor one naming a line the log holds but with another hash.
    record.update(kept_seq=2, kept_hash="f" * 32)
    (where / "record.json").write_text(json.dumps(record))
    report = _repair(path)
    assert not report.damaged and report.void_through is None
    assert (path / "events.jsonl").read_bytes() == before


def test_a_symlink_at_cut_is_refused_as_unsafe_by_a_repair_of_a_healthy_ledger_too(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _grants(path, 2)
    (tmp_path / "elsewhere").mkdir()
    (path / "cut").symlink_to(tmp_path / "elsewhere")
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 5 and "is a symlink, not a directory" in p.stderr, (p.returncode, p.stderr)


# -- which seqs the cut lines may have carried ----------------------------------------------------


def _next_token(path: Path) -> int:
    with Ledger.open(path) as led:
        return led.register("next", [W("/r/next")]).token


def test_empty_lines_and_short_garbage_cut_keep_no_seq_void(tmp_path: Path) -> None:
    # 200,000 empty lines and short pieces of garbage after the last line: none was
    # ever an event (the shortest line a writer writes is longer), so none carried
    # a token. Before, each became a void line of ~250 bytes (1 MB of newlines made
    # a 255 MB log that every reader then folded; a fresh tester's finding).
    path = tmp_path / "L"
    _grants(path, 3)
    with open(path / "events.jsonl", "ab") as f:
        f.write(b"\n" * 100_000 + b"x" * (_store.MIN_EVENT_BYTES - 1) + b"\n" + b"garbage\n" * 99_999)
    report = _repair(path)
    assert (report.kept_seq, report.lines_cut, report.void_through) == (3, 200_000, None)
    assert json.loads((Path(report.directory) / "record.json").read_text())["seqs"] == 0
    assert (path / "events.jsonl").stat().st_size < 10_000
    assert _next_token(path) == 4
    assert verify(path).ok


def test_a_line_long_enough_to_be_an_event_is_kept_void_whatever_it_holds(tmp_path: Path) -> None:
    # A grant's line turned to noise (a block of bad disk) carried a token all the same.
    path = tmp_path / "L"
    _grants(path, 3)
    with open(path / "events.jsonl", "ab") as f:
        f.write(b"\n\n" + b"\xff" * _store.MIN_EVENT_BYTES + b"\n" + b"#" * 500 + b"\n\n")
    report = _repair(path)
    assert (report.kept_seq, report.lines_cut, report.void_through) == (3, 5, 5)
    assert _next_token(path) == 6


def test_lines_merged_into_one_are_kept_void_as_far_as_a_later_line_names(tmp_path: Path) -> None:
    # Lines 3 to 5 overwritten, their newlines too (a bad block): one line where three
    # were. Lines 6 and 7 are intact and name their seqs, so seqs up to 7 were
    # given. Before, the repair counted the lines cut (3) and kept seqs up to 5
    # void only: the next grants took tokens 6 and 7 again.
    path = tmp_path / "L"
    assert _grants(path, 7) == list(range(1, 8))
    lines = _log(path)
    merged = len(b"".join(lines[2:5])) - 1
    # (overwritten with '#', not NULs: every 64 NULs would keep a seq void on their own,
    # test_a_zeroed_block_merging_the_last_lines_keeps_void_as_many_seqs_as_it_could_hold)
    (path / "events.jsonl").write_bytes(b"".join(lines[:2]) + b"#" * merged + b"\n" + b"".join(lines[5:]))
    report = _repair(path)
    assert (report.kept_seq, report.lines_cut, report.void_through) == (2, 3, 7)
    assert _next_token(path) == 8
    assert verify(path).ok


def test_a_seq_too_far_for_the_bytes_before_it_is_a_damaged_digit_not_evidence(tmp_path: Path) -> None:
    # Line 4's seq turned into 40000 (no 40,000 lines fit in the 2 kB cut):
    # the lines cut are counted, and the repair does not write 40,000 void lines.
    path = tmp_path / "L"
    _grants(path, 5)
    lines = _log(path)
    lines[3] = lines[3].replace(b'"seq":4,', b'"seq":40000,', 1)
    (path / "events.jsonl").write_bytes(b"".join(lines))
    report = _repair(path)
    assert (report.kept_seq, report.void_through) == (3, 5)
    assert _next_token(path) == 6


@pytest.mark.parametrize("to_the_end", [False, True], ids=["into-the-last-line", "to-the-end"])
def test_a_zeroed_block_merging_the_last_lines_keeps_void_as_many_seqs_as_it_could_hold(
        tmp_path: Path, to_the_end: bool) -> None:
    # A block of NULs from the middle of line 5 to the middle of line 10 (or to the end
    # of the file), as a power cut leaves it: one line where six were, its head naming
    # seq 5 and no later line naming one. Before, it counted as one possible event: the
    # repair kept seq 5 only and the next grant took token 6, which h5 still carried (a
    # fresh tester's finding). Every 64 NUL bytes may have held an event.
    path = tmp_path / "L"
    tokens = _grants(path, 10)
    data = bytearray((path / "events.jsonl").read_bytes())
    lines = bytes(data).splitlines(keepends=True)
    start = sum(map(len, lines[:4])) + len(lines[4]) // 2
    end = len(data) if to_the_end else sum(map(len, lines[:9])) + len(lines[9]) // 2
    data[start:end] = bytes(end - start)
    (path / "events.jsonl").write_bytes(bytes(data))
    report = _repair(path)
    assert report.kept_seq == 4
    assert report.void_through is not None and report.void_through >= 4 + (end - start) // _store.MIN_EVENT_BYTES
    assert _next_token(path) > max(tokens)
    assert verify(path).ok


def test_a_tail_zeroed_to_the_end_stops_writers_until_a_repair_keeps_its_seqs_void(tmp_path: Path) -> None:
    # Lines 7 to 10 zeroed to the end of the file, their last newline too (a power cut
    # that kept the file's size, not its last blocks): a torn tail to a writer, which
    # set it aside and took token 7 again while h6..h9 still carried 7..10, verify saying
    # ok (a fresh tester's finding, HIGH). A torn tail with that many NULs is not a line a
    # dying writer cut short (a line holds none): writers refuse it, verify names it.
    path = tmp_path / "L"
    tokens = _grants(path, 10)
    data = bytearray((path / "events.jsonl").read_bytes())
    start = sum(map(len, bytes(data).splitlines(keepends=True)[:6]))
    data[start:] = bytes(len(data) - start)
    (path / "events.jsonl").write_bytes(bytes(data))
    with pytest.raises(CorruptLedger, match="of them NUL: lines zeroed by a power cut"):
        with Ledger.open(path) as led:
            led.register("next", [W("/r/next")])
    assert (path / "events.jsonl").read_bytes() == bytes(data)  # nothing set aside, nothing written
    report = verify(path)
    assert not report.ok and (report.problems[0].line, report.problems[0].seq) == (7, None), report.problems
    assert _repair(path).void_through >= 6 + (len(data) - start) // _store.MIN_EVENT_BYTES
    assert _next_token(path) > max(tokens)
    assert verify(path).ok
