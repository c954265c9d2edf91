"""`ledger replay` and `ledger history` check every line's place in the hash
chain, also before the newest snapshot (which `show` trusts): a forged or
moved line is exit 4 naming it, never printed as history."""

from __future__ import annotations

import datetime as dt
import json
import itertools
import os
from pathlib import Path

import pytest

from scopeledger import CorruptLedger, Ledger, ScopeRule
from helpers import ledger_cmd, one_error_line


def test_replay_and_history_exit_4_on_a_line_altered_before_the_newest_snapshot(tmp_path: Path):
    d = tmp_path / "led"
    with Ledger.open(d, snapshot_every=5) as led:
        for i in range(12):
            led.register(f"h{i}", [ScopeRule(f"/w/{i}", "write")])
    log = d / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"/w/2"', b'"/w/X"')
    log.write_bytes(b"".join(lines))
    before = log.read_bytes()
    for args in (("replay",), ("replay", "--json"), ("history", "h2"), ("replay", "--holder", "h2")):
        r = ledger_cmd(d, *args)
        assert r.returncode == 4, (args, r.stdout, r.stderr)
        line = one_error_line(r.stderr)
        assert "line 4 (seq 4)" in line and "hash chain broken" in line, line
        assert "/w/X" not in r.stdout, args  # the forged rule is never shown as history
    assert log.read_bytes() == before


def _forge_line_15(d: Path) -> bytes:
    """A ledger with snapshots at 10 and 20; line 15 edited in place (same length)."""
    seconds = itertools.count(1_700_000_000)
    with Ledger.open(d, snapshot_every=10, clock=lambda: next(seconds) * 10**9) as led:
        for i in range(25):
            led.register(f"h{i}", [ScopeRule(f"/t/d{i:02}", "write")])
            if led.seq == 20:
                led.snapshot()
    assert sorted(os.listdir(d / "snapshots")) == [f"snap-{s:016d}.json" for s in (10, 20)]
    log = d / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    assert b'"/t/d14"' in lines[14]
    lines[14] = lines[14].replace(b'"/t/d14"', b'"/t/x14"')
    log.write_bytes(b"".join(lines))
    return log.read_bytes()


def test_time_travel_to_an_edited_line_is_exit_4_not_the_forged_state(tmp_path: Path):
    d = tmp_path / "led"
    before = _forge_line_15(d)
    for args in (("show", "--at", "15"), ("who", "/t/x14", "--at", "15"), ("diff", "14", "15"),
                 ("show", "--at", "15", "--json")):
        r = ledger_cmd(d, *args)
        assert r.returncode == 4, (args, r.stdout, r.stderr)
        line = one_error_line(r.stderr)
        assert "line 16 (seq 16)" in line and "hash chain broken" in line, line
        assert "x14" not in r.stdout, args
    # Before the edit, the line after vouches for it: still shown. After the
    # snapshot at 20, the edit is not read (docs: found by replay and verify).
    for args in (("show", "--at", "14"), ("show", "--at", "25")):
        assert ledger_cmd(d, *args).returncode == 0, args
    assert (d / "events.jsonl").read_bytes() == before


def test_state_at_an_edited_line_by_seq_or_time_is_corrupt(tmp_path: Path):
    d = tmp_path / "led"
    _forge_line_15(d)  # event N at 1_700_000_000 + N - 1 seconds
    at = dt.datetime.fromtimestamp(1_700_000_000 + 14, dt.timezone.utc)
    with Ledger.open(d) as led:
        for call in (lambda: led.state_at(seq=15), lambda: led.who("/t/x14", seq=15),
                     lambda: led.diff(14, 15), lambda: led.state_at(time=at + dt.timedelta(seconds=0.5))):
            with pytest.raises(CorruptLedger) as info:
                call()
            assert info.value.line == 16 and "hash chain broken" in str(info.value)
        # Line 14's time: the stop is decided by line 15 (the edited one): corrupt too.
        with pytest.raises(CorruptLedger):
            led.state_at(time=at - dt.timedelta(seconds=1))
        assert led.state_at(time=at - dt.timedelta(seconds=2)).seq == 13


def test_a_time_that_an_edited_ts_would_move_is_corrupt_not_another_seq(tmp_path: Path):
    # Line 7's ts edited in place to line 12's: the stop by time was decided by
    # a line nothing had checked, and state_at(time of seq 10) gave seq 6.
    d = tmp_path / "led"
    seconds = itertools.count(1_700_000_000)
    with Ledger.open(d, clock=lambda: next(seconds) * 10**9) as led:
        for i in range(14):
            led.register(f"h{i}", [ScopeRule(f"/t/d{i:02}", "write")])
        led.snapshot()  # opening starts here: only time travel reads line 7
    log = d / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    assert b'"ts":1700000006000000000' in lines[6]
    lines[6] = lines[6].replace(b'"ts":1700000006000000000', b'"ts":1700000011000000000')
    log.write_bytes(b"".join(lines))
    at_10 = dt.datetime.fromtimestamp(1_700_000_000 + 9, dt.timezone.utc)
    with Ledger.open(d) as led:
        for call in (lambda: led.state_at(time=at_10), lambda: led.who("/t/d06", time=at_10)):
            with pytest.raises(CorruptLedger) as info:
                call()
            assert info.value.line == 8 and "hash chain broken" in str(info.value)
        assert led.state_at(time=at_10 - dt.timedelta(seconds=5)).seq == 5  # before the edit: sound
    r = ledger_cmd(d, "show", "--at", "2023-11-14T22:13:29Z")  # = at_10
    assert r.returncode == 4 and "line 8 (seq 8)" in one_error_line(r.stderr), r


def test_replay_of_a_ledger_that_does_not_open_shows_what_precedes_the_damage(tmp_path: Path):
    # A line edited after the newest snapshot: every command stops at open.
    # replay (from the start) shows the events before the damaged line, then
    # exit 4 with the error: an audit of a damaged ledger needs that prefix.
    d = tmp_path / "led"
    with Ledger.open(d, snapshot_every=10**6) as led:
        for i in range(16):
            led.register(f"h{i}", [ScopeRule(f"/t/d{i:02}", "write")])
            if led.seq == 12:
                led.snapshot()
    log = d / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[13] = lines[13].replace(b"/t/d13", b"/t/x13")
    log.write_bytes(b"".join(lines))
    before = log.read_bytes()
    assert ledger_cmd(d, "show").returncode == 4
    r = ledger_cmd(d, "replay")
    assert r.returncode == 4, r
    assert [int(x.split()[0]) for x in r.stdout.splitlines()] == list(range(1, 14))
    assert "x13" not in r.stdout
    warning, error = r.stderr.splitlines()
    # (the warning names the line; what is wrong with it is the error's, said once)
    assert warning == (f"warning: line 15 of {log} does not check out: replaying the events before line 15 "
                       "that the line after each vouches for (the error follows)")
    assert error.startswith("error: corrupt ledger: ") and "line 15 (seq 15)" in error
    r = ledger_cmd(d, "replay", "--json")
    assert r.returncode == 4
    docs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [doc["seq"] for doc in docs[:-1]] == list(range(1, 14)) and docs[-1]["error"]["exit_code"] == 4
    r = ledger_cmd(d, "replay", "--until", "5")
    assert r.returncode == 4 and len(r.stdout.splitlines()) == 5
    # What needs the current state still refuses at once.
    for args in (("replay", "--from", "3"), ("replay", "--follow"), ("history", "h1")):
        r = ledger_cmd(d, *args)
        assert r.returncode == 4 and r.stdout == "", args
    assert log.read_bytes() == before


def test_a_last_line_ts_past_64_bits_is_refused_not_carried_into_later_events(tmp_path: Path):
    # The writer clamps a clock that steps back to the last event's ts: a last
    # line forged to 2**63 would have stamped every later event with it.
    d = tmp_path / "led"
    with Ledger.open(d) as led:
        led.register("a", [ScopeRule("/t/a", "write")])
        led.snapshot()
        led.register("b", [ScopeRule("/t/b", "write")])
    log = d / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    ev = json.loads(lines[-1])
    lines[-1] = lines[-1].replace(b'"ts":%d' % ev["ts"], b'"ts":9223372036854775808')
    log.write_bytes(b"".join(lines))
    before = log.read_bytes()
    for args in (("verify",), ("run", "--write", "/t/c", "--", "true"), ("show",)):
        r = ledger_cmd(d, *args)
        assert r.returncode in (1, 4), (args, r)
        assert "ts 9223372036854775808 is out of range" in r.stderr, args
    assert log.read_bytes() == before


# Every reader's message for a damaged line ends with what to do about it, as
# the newer-format check's damage does (a fresh tester's finding 9: a plainly
# edited middle line said only "hash chain broken: prev does not match the
# line before"). A reader that sees the chain break at line K+1 cannot tell
# whether K or K+1 was altered: it says so, not blaming K+1.
ADVICE = "; run 'ledger verify' for the whole report, and 'ledger repair' to set the damaged tail aside"
UNCHAINED = ("line 4 (seq 4): hash chain broken: line 4 does not chain to line 3 (one of them was altered "
             "after it was written)")
_DAMAGE = {
    "edited": (lambda line: line.replace(b'"/t/d2"', b'"/t/x2"'), UNCHAINED),
    "not JSON": (lambda line: b"garbage\n", "line 3: not JSON ("),
    "does not apply": (lambda line: line.replace(b'"h2"', b'"h1"'),
                       "line 3 (seq 3): holder 'h1' granted while already live"),
}
_READERS = [("show",), ("show", "--at", "4"), ("who", "/t"), ("who", "/t", "--at", "4"), ("history", "h1"),
            ("diff", "1", "4"), ("replay", "--from", "2"), ("replay",), ("export", "--format", "csv"),
            ("check", "--write", "/t/new"), ("snapshot",), ("release", "h0"), ("--json", "show")]


def _damaged_ledger(d: Path, damage: str) -> bytes:
    with Ledger.open(d, snapshot_every=10**6) as led:
        for i in range(6):
            led.register(f"h{i}", [ScopeRule(f"/t/d{i}", "write")])
    log = d / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = _DAMAGE[damage][0](lines[2])
    log.write_bytes(b"".join(lines))
    return log.read_bytes()


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_every_readers_message_of_damage_says_what_to_do(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "led"
    before = _damaged_ledger(d, damage)
    for args in _READERS:
        says = _DAMAGE[damage][1]
        r = ledger_cmd(d, *args)
        assert r.returncode == 4, (args, r)
        if args[0] == "--json":
            message = json.loads(r.stdout)["error"]["message"]
        else:
            message = r.stderr.splitlines()[-1]  # (a replay from the start warns first)
            assert message.startswith("error: corrupt ledger: "), (args, r.stderr)
        if args == ("replay",) and damage == "does not apply":
            says = UNCHAINED  # (a replay that shows the events before it checks the chain, not the fold)
        assert says in message and message.endswith(ADVICE) and message.count("ledger verify") == 1, (args, message)
    # The library's readers say the same; verify reports the bare problem.
    with pytest.raises(CorruptLedger) as info:
        Ledger.open(d, readonly=True)
    assert _DAMAGE[damage][1] in str(info.value) and info.value.reason.endswith(ADVICE)
    led = Ledger.open(d, readonly=True, fold=False)
    with pytest.raises(CorruptLedger) as info:
        list(led.events())
    assert str(info.value).endswith(ADVICE)
    r = ledger_cmd(d, "verify")
    assert r.returncode == 1 and "ledger repair" not in r.stdout + r.stderr, r
    assert (d / "events.jsonl").read_bytes() == before
