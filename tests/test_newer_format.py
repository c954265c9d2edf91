"""A log line written by a newer scopeledger (a newer format version, an
unknown event type, an unknown key in a known event), its envelope sound and
its chain intact: NewerFormat ("upgrade scopeledger"), never cut by a repair;
damage is still cut as before."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from helpers import W, ledger_cmd, one_error_line
from scopeledger import CorruptLedger, Ledger, NewerFormat, verify
from scopeledger._events import line_hash


def _make(path: Path) -> list[dict[str, Any]]:
    """A ledger of 8 events (a snapshot every 3): h0..h3 registered and
    released in turn; its events as dicts."""
    with Ledger.open(path, snapshot_every=3) as led:
        for i in range(4):
            led.register(f"h{i}", [W(f"/r/{i}")])
            led.release(f"h{i}")
    return [orjson.loads(x) for x in (path / "events.jsonl").read_bytes().splitlines()]


def _write(path: Path, events: list[dict[str, Any]], broken: int | None = None) -> bytes:
    """``events`` as the log, each ``prev`` the hash of the line before (as a
    newer writer leaves it), except at index ``broken`` (a wrong prev)."""
    out, prev = [], "0" * 32
    for i, ev in enumerate(events):
        ev = dict(ev, prev="f" * 32 if i == broken else prev)
        line = orjson.dumps(ev)
        out.append(line)
        prev = line_hash(line)
    data = b"".join(x + b"\n" for x in out)
    (path / "events.jsonl").write_bytes(data)
    return data


def _everything(path: Path) -> dict[str, Any]:
    """Names and bytes of everything in the ledger directory."""
    out: dict[str, Any] = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, path)] = Path(p).read_bytes() if stat.S_ISREG(os.lstat(p).st_mode) else None
    return out


def _key(ev: dict[str, Any]) -> dict[str, Any]:
    return dict(ev, outcome="fine")  # a key a newer scopeledger might add to a released event


def _type(ev: dict[str, Any]) -> dict[str, Any]:
    return dict(ev, type="paused")


def _version(ev: dict[str, Any]) -> dict[str, Any]:
    return dict(ev, v=3, shape="whatever v3 says")


NEWER: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str]] = [
    ("key", _key, r"unknown key 'outcome' in a released event"),
    ("type", _type, r"unknown event type 'paused'"),
    ("version", _version, r"format version 3 \(this scopeledger reads versions up to 2\)"),
]


def _newer_log(path: Path, change: Callable[[dict[str, Any]], dict[str, Any]], at: int = 3) -> bytes:
    """The log of :func:`_make` with event index ``at`` (line ``at + 1``, a
    release) changed as a newer writer would write it, the chain linked
    through it."""
    events = _make(path)
    events[at] = change(events[at])
    _drop_snapshots_after(path, at)
    return _write(path, events)


def _drop_snapshots_after(path: Path, seq: int) -> None:
    """Remove the snapshots past ``seq`` (the lines after it are rewritten:
    they no longer match them)."""
    for name in os.listdir(path / "snapshots"):
        if name.startswith("snap-") and int(name[5:-5]) > seq:
            os.unlink(path / "snapshots" / name)


@pytest.mark.parametrize("what,change,named", NEWER, ids=[n[0] for n in NEWER])
def test_a_newer_line_is_newer_format_naming_it_and_repair_cuts_nothing(
        tmp_path: Path, what: str, change: Any, named: str) -> None:
    path = tmp_path / "L"
    _newer_log(path, change)
    with pytest.raises(NewerFormat, match=r"line 4 \(seq 4\): " + named) as got:
        Ledger.open(path)
    exc = got.value
    assert isinstance(exc, CorruptLedger) and exc.line == 4 and exc.seq == 4
    assert str(exc).startswith("newer format: ")
    assert "probably written by a newer scopeledger" in str(exc) and "upgrade scopeledger" in str(exc)
    assert "do not run 'ledger repair'" in str(exc)
    problem = verify(path).problems[0]
    assert (problem.line, problem.seq, problem.newer_format) == (4, 4, True)
    before = _everything(path)
    with Ledger.open(path, fold=False) as led:
        for dry in (True, False):
            report = led.repair(dry_run=dry)
            assert report.newer_format and not report.damaged
            assert (report.line, report.seq, report.kept_seq) == (4, 4, 3)
            assert report.bytes_cut == report.lines_cut == 0 and report.snapshots == ()
            assert report.directory is None and report.reason == problem.message
            assert "upgrade scopeledger" in str(report) and "cannot judge that line or any after it" in str(report)
            assert _everything(path) == before  # the log's bytes, the snapshots; no cut/
    assert not (path / "cut").exists()


def test_a_newer_key_in_a_nested_object_is_newer_format_too(tmp_path: Path) -> None:
    """In a payload object (read through the page path of verify)."""
    path = tmp_path / "L"
    events = _make(path)
    events[2] = dict(events[2], holder=dict(events[2]["holder"], colour="blue"))
    _drop_snapshots_after(path, 2)
    _write(path, events)
    with pytest.raises(NewerFormat, match=r"line 3 \(seq 3\): unknown key 'colour' in holder"):
        Ledger.open(path)
    problem = verify(path).problems[0]
    assert (problem.line, problem.newer_format) == (3, True)
    with Ledger.open(path, fold=False) as led:
        assert led.repair().newer_format
    assert not (path / "cut").exists()


def _reclaimed(path: Path) -> list[dict[str, Any]]:
    """A ledger of 4 events: a registered and reclaimed (line 2), then b
    registered and released; its events as dicts."""
    with Ledger.open(path) as led:
        led.register("a", [W("/r/a")])
        led.reclaim_stale(probe=lambda ident: False)
        led.register("b", [W("/r/b")])
        led.release("b")
    return [orjson.loads(x) for x in (path / "events.jsonl").read_bytes().splitlines()]


def test_a_reclaim_reason_of_a_newer_scopeledger_is_newer_format(tmp_path: Path) -> None:
    """A value a newer version may add (as lease_expired and session_closed were
    added to v2), in an event otherwise sound."""
    path = tmp_path / "L"
    events = _reclaimed(path)
    assert events[1]["type"] == "reclaimed"
    events[1]["reason"] = "cgroup_gone"
    before = _write(path, events)
    with pytest.raises(NewerFormat, match=r"line 2 \(seq 2\): unknown reclaim reason 'cgroup_gone'.*"
                                          r"probably written by a newer scopeledger"):
        Ledger.open(path)
    problem = verify(path).problems[0]
    assert (problem.line, problem.newer_format) == (2, True)
    with Ledger.open(path, fold=False) as led:
        assert led.repair().newer_format
        with pytest.raises(NewerFormat):
            led.state_at(seq=3)
    assert (path / "events.jsonl").read_bytes() == before and not (path / "cut").exists()
    events[1]["reason"] = "Cgroup gone!"  # no name a format would give: damage
    _write(path, events)
    with pytest.raises(CorruptLedger) as got:
        Ledger.open(path)
    assert type(got.value) is CorruptLedger
    assert not verify(path).problems[0].newer_format


def test_a_newer_reason_with_a_broken_chain_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "L"
    events = _reclaimed(path)
    events[3]["reason"] = "cgroup_gone"
    events[3] = dict(events[3], type="reclaimed", reason="cgroup_gone")
    _write(path, events, broken=3)
    problem = verify(path).problems[0]
    assert problem.line == 4 and "hash chain broken" in problem.message and not problem.newer_format


@pytest.mark.parametrize("command", [["repair"], ["repair", "--dry-run"], ["verify"], ["show"], ["replay"]])
def test_the_commands_say_upgrade_and_exit_8(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "L"
    before = _newer_log(path, _key)
    p = ledger_cmd(path, *command, subprocess_=True)
    assert p.returncode == 8, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    said = p.stdout + p.stderr
    assert "line 4 (seq 4): unknown key 'outcome' in a released event" in said
    assert "upgrade scopeledger" in said
    if command[0] == "repair":
        assert "nothing was set aside" in p.stdout and p.stderr == ""
    elif command[0] == "verify":
        assert "problem: " in p.stderr
    elif command[0] == "show":
        line = one_error_line(p.stderr)
        assert line.startswith("error: newer format: ") and "do not run 'ledger repair'" in line
    assert (path / "events.jsonl").read_bytes() == before
    assert not (path / "cut").exists()


def test_repair_json_says_newer_format(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _newer_log(path, _type)
    p = ledger_cmd(path, "repair", "--json", subprocess_=True)
    assert p.returncode == 8, p.stderr
    doc = json.loads(p.stdout)
    assert doc["newer_format"] is True and doc["damaged"] is False and doc["bytes"] == 0
    assert (doc["line"], doc["seq"], doc["kept_seq"]) == (4, 4, 3)


def test_a_show_json_error_names_the_type_and_exit_8(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _newer_log(path, _key)
    p = ledger_cmd(path, "show", "--json", subprocess_=True)
    assert p.returncode == 8
    err = json.loads(p.stdout or p.stderr)["error"]
    assert err["type"] == "NewerFormat" and err["exit_code"] == 8 and err["line"] == 4
    assert err["unknown"].startswith("unknown key 'outcome'")


# -- damage is still damage ---------------------------------------------------------------------


def test_an_unknown_key_on_a_line_whose_chain_is_broken_is_damage_and_cut(tmp_path: Path) -> None:
    path = tmp_path / "L"
    events = _make(path)
    events[3] = _key(events[3])
    _write(path, events, broken=3)
    problem = verify(path).problems[0]
    # (line 5 chains to line 4: the chain names line 3 as altered, as for any line)
    assert problem.line == 3 and "altered" in problem.message and not problem.newer_format
    with Ledger.open(path, fold=False) as led:
        report = led.repair()
    assert report.damaged and not report.newer_format and report.line == 3
    assert len(list((path / "cut").iterdir())) == 1
    with Ledger.open(path) as led:  # (the lines kept, then the repair's own keeping seqs 3 to 8 void)
        assert (report.kept_seq, report.void_through, led.seq) == (2, 8, 8)


def test_an_unknown_key_on_the_last_line_with_a_wrong_prev_is_damage_and_cut(tmp_path: Path) -> None:
    path = tmp_path / "L"
    events = _make(path)
    events[7] = _key(events[7])
    _write(path, events, broken=7)
    problem = verify(path).problems[0]
    assert problem.line == 8 and "hash chain broken" in problem.message and not problem.newer_format
    with Ledger.open(path, fold=False) as led:
        report = led.repair()
    assert report.damaged and not report.newer_format and report.line == 8
    with Ledger.open(path) as led:
        assert (report.kept_seq, report.void_through, led.seq) == (7, 8, 8)


def test_an_unknown_key_on_a_line_out_of_seq_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "L"
    events = _make(path)
    events[7] = dict(_key(events[7]), seq=12)
    _write(path, events)
    problem = verify(path).problems[0]
    assert problem.line == 8 and "seq 12 does not follow 7" in problem.message and not problem.newer_format


def test_a_key_no_format_would_name_is_damage_and_cut(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _newer_log(path, lambda ev: dict(ev, **{"Out come!": 1}))
    with pytest.raises(CorruptLedger) as got:
        Ledger.open(path)
    assert type(got.value) is CorruptLedger and "unknown key 'Out come!'" in str(got.value)
    with Ledger.open(path, fold=False) as led:
        report = led.repair()
    assert report.damaged and report.line == 4


def test_a_line_that_is_not_json_after_good_lines_is_cut_as_before(tmp_path: Path) -> None:
    path = tmp_path / "L"
    _make(path)
    with open(path / "events.jsonl", "ab") as f:
        f.write(b'{"v": 2, "seq": 9, "prev": "' + b"0" * 32 + b'", oops\n')  # (long enough to have been one)
    p = ledger_cmd(path, "repair", subprocess_=True)
    assert p.returncode == 0, p.stderr
    assert len(list((path / "cut").iterdir())) == 1
    with Ledger.open(path) as led:  # the 8 lines kept; seq 9, the line cut, is the repair's now
        assert led.seq == 9 and [e.type for e in led.events()][7:] == ["released", "repaired"]


def test_damage_before_a_newer_line_is_cut_with_it(tmp_path: Path) -> None:
    """The first problem decides: a broken line before a newer one is damage;
    what lies after it (the newer line too) is set aside with it, as before."""
    path = tmp_path / "L"
    events = _make(path)
    events[5] = _key(events[5])
    data = _write(path, events)
    lines = data.splitlines(keepends=True)
    lines[2] = b'{"not": "an event"}\n'
    (path / "events.jsonl").write_bytes(b"".join(lines))
    with Ledger.open(path, fold=False) as led:
        report = led.repair()
    assert report.damaged and not report.newer_format and report.line == 3


def test_a_snapshot_of_a_newer_format_is_skipped_and_never_set_aside(tmp_path: Path) -> None:
    """As before this change: opening skips it (folding from the log), verify
    names it, repair leaves it where it is."""
    from scopeledger._fold import SNAPSHOT_FORMAT

    path = tmp_path / "L"
    _make(path)
    snap = path / "snapshots" / "snap-0000000000000006.json"
    header, body = snap.read_bytes().split(b"\n", 1)
    snap.write_bytes(orjson.dumps(dict(orjson.loads(header), format=SNAPSHOT_FORMAT + 1)) + b"\n" + body)
    with Ledger.open(path) as led:
        assert led.seq == 8 and led.stats.snapshots_skipped == [snap.name]
    assert f"format {SNAPSHOT_FORMAT + 1}" in verify(path).problems[0].message
    before = _everything(path)
    with Ledger.open(path, fold=False) as led:
        report = led.repair()
    assert not report.damaged and not report.newer_format and report.remaining[0].file == str(snap)
    assert _everything(path) == before


@pytest.mark.parametrize("old,new", [(b'"released"', b'"releasee"'), (b'"name"', b'"namd"'), (b'"v":2', b'"v":3')])
def test_a_bit_flip_in_a_middle_line_that_reads_as_newer_is_damage_and_cut(tmp_path: Path, old: bytes,
                                                                            new: bytes) -> None:
    # One bit flipped in line 4 made an unknown type, key or version: it read as a newer
    # scopeledger's line (exit 8, repair cut nothing: the ledger stuck), though line 5's
    # prev proves line 4 is not what was written (a fresh tester's finding: 5-8 % of
    # single-bit flips in a middle line).
    path = tmp_path / "L"
    events = _make(path)
    data = _write(path, events)
    lines = data.split(b"\n")
    assert old in lines[3]
    lines[3] = lines[3].replace(old, new, 1)
    (path / "events.jsonl").write_bytes(b"\n".join(lines))
    _drop_snapshots_after(path, 3)
    problem = verify(path).problems[0]
    assert (problem.line, problem.newer_format) == (4, False) and "altered" in problem.message, problem
    with Ledger.open(path, fold=False) as led:
        report = led.repair()
    assert report.damaged and not report.newer_format and report.line == 4
    with Ledger.open(path) as led:
        assert (report.kept_seq, report.void_through, led.seq) == (3, 8, 8)


def _flipped(path: Path, old: bytes, new: bytes, at: int = 3) -> bytes:
    """The log of :func:`_make` with ``old`` replaced by ``new`` in line
    ``at + 1`` in place (a bit flipped: the line after no longer chains to
    it), the snapshots past line ``at`` removed; the log's bytes."""
    events = _make(path)
    lines = _write(path, events).split(b"\n")
    assert old in lines[at]
    lines[at] = lines[at].replace(old, new, 1)
    data = b"\n".join(lines)
    (path / "events.jsonl").write_bytes(data)
    _drop_snapshots_after(path, at)
    return data


def _damage_at_line_4(exc: BaseException) -> None:
    assert type(exc) is CorruptLedger, repr(exc)
    assert (exc.line, exc.seq) == (4, 4), exc
    assert "line altered after it was written: the line after does not chain to it" in exc.reason, exc
    assert "ledger verify" in exc.reason and "upgrade" not in str(exc), exc


@pytest.mark.parametrize("old,new", [(b'"released"', b'"releasee"'), (b'"name"', b'"namd"'), (b'"v":2', b'"v":3')])
def test_a_bit_flip_in_a_middle_line_is_damage_to_every_reader(tmp_path: Path, old: bytes, new: bytes) -> None:
    # verify and repair called it damage (the line after does not chain to it), but
    # opening the ledger, replaying it and time travel said "newer format, upgrade, do
    # not run 'ledger repair'" (NewerFormat): every command but verify exited 8 (a fresh
    # tester's finding). Every reader applies verify's rule now.
    path = tmp_path / "L"
    _flipped(path, old, new)
    with pytest.raises(CorruptLedger) as got:
        Ledger.open(path)  # the fold of the lines after the snapshot at seq 3
    _damage_at_line_4(got.value)
    with Ledger.open(path, fold=False) as led:
        for read in (lambda: list(led.events()), lambda: list(led.event_lines()), lambda: led.history("h3"),
                     lambda: led.state_at(seq=3), lambda: led.state_at(seq=5)):
            with pytest.raises(CorruptLedger) as got:
                read()
            _damage_at_line_4(got.value)


def test_a_newer_value_flipped_in_a_middle_line_is_damage_to_verify_and_every_reader(tmp_path: Path) -> None:
    # A reclaim reason with a bit flipped reads as one a newer scopeledger may write
    # (NewerValue): verify called it newer_format whatever the line after said, and
    # repair cut nothing.
    path = tmp_path / "L"
    events = _reclaimed(path)
    lines = _write(path, events).split(b"\n")
    assert b'"reason":"process_gone"' in lines[1]
    lines[1] = lines[1].replace(b'"process_gone"', b'"process_gond"', 1)
    (path / "events.jsonl").write_bytes(b"\n".join(lines))
    _drop_snapshots_after(path, 0)
    problem = verify(path).problems[0]
    assert (problem.line, problem.newer_format) == (2, False) and "altered" in problem.message, problem
    with pytest.raises(CorruptLedger) as got:
        Ledger.open(path)
    assert type(got.value) is CorruptLedger and got.value.line == 2 and "process_gond" in str(got.value)
    with Ledger.open(path, fold=False) as led:
        with pytest.raises(CorruptLedger) as got:
            led.state_at(seq=3)
        assert type(got.value) is CorruptLedger and got.value.line == 2
        report = led.repair()
    assert report.damaged and not report.newer_format and report.line == 2
    with Ledger.open(path) as led:  # (the line kept, then the repair's own keeping the cut seqs)
        assert report.kept_seq == 1 and led.seq == report.void_through


def test_a_newer_line_chained_in_the_middle_is_still_newer_to_every_reader(tmp_path: Path) -> None:
    """The other side of the rule: a line after it that chains to it."""
    path = tmp_path / "L"
    _newer_log(path, _type)
    with pytest.raises(NewerFormat):
        Ledger.open(path)
    with Ledger.open(path, fold=False) as led:
        for read in (lambda: list(led.events()), lambda: led.state_at(seq=3), lambda: led.state_at(seq=5)):
            with pytest.raises(NewerFormat):
                read()
    assert verify(path).problems[0].newer_format


@pytest.mark.parametrize("command", [["show"], ["who", "/r/1"], ["replay"], ["history", "h1"], ["snapshot"],
                                     ["check", "--name", "x", "--write", "/r/9"], ["diff", "1", "2"],
                                     ["show", "--at", "2"], ["reclaim", "--dry-run"]])
def test_the_commands_call_a_middle_line_flip_corrupt_and_exit_4(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "L"
    before = _flipped(path, b'"released"', b'"releasee"')
    p = ledger_cmd(path, *command, subprocess_=True)
    assert p.returncode == 4, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "upgrade" not in p.stderr and "newer format" not in p.stderr
    assert "corrupt ledger: " in p.stderr and "line 4 (seq 4): line altered after it was written" in p.stderr
    assert "'ledger verify'" in p.stderr and "'ledger repair'" in p.stderr
    assert (path / "events.jsonl").read_bytes() == before


@pytest.mark.parametrize("command", ["export", "import"])
def test_a_copy_of_a_ledger_with_a_newer_line_says_upgrade_and_exit_8(tmp_path: Path, command: str) -> None:
    # It exited 4 (corrupt) with "do not run 'ledger repair'" and then "mend it with
    # 'ledger repair' before copying", and named "line 4" twice (a fresh tester's finding).
    from helpers import invoke
    from scopeledger import copy_ledger

    path, dest = tmp_path / "L", tmp_path / "D"
    _newer_log(path, _key)
    with pytest.raises(NewerFormat) as got:
        copy_ledger(path, dest)
    assert (got.value.line, got.value.seq) == (4, 4) and got.value.unknown.startswith("unknown key 'outcome'")
    res = invoke([command, str(path), str(dest)])
    assert res.returncode == 8, res
    line = one_error_line(res.stderr)
    assert line.startswith("error: newer format: ") and "upgrade scopeledger" in line, line
    assert "mend it" not in line and line.count("line 4") == 1, line
    assert not dest.exists()
