"""`ledger replay --json` (and `history --json`) write each line exactly as
stored, so that an outside tool can re-check the hash chain from the output
alone; `Ledger.event_lines` gives the same bytes to library users."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scopeledger import Ledger, ScopeConflict, ScopeRule
from helpers import CMD, clean_env, ledger_cmd
import subprocess


def _rehash(lines: list[bytes]) -> None:
    """The chain re-checked from the lines alone, as an outside tool would:
    each line's prev is blake2b-128 of the line before (32 zeros for seq 1)."""
    prev = "0" * 32
    for i, line in enumerate(lines, 1):
        ev = json.loads(line)
        assert ev["seq"] == i
        assert ev["prev"] == prev, f"line {i}: prev {ev['prev']} but the line before hashes to {prev}"
        prev = hashlib.blake2b(line, digest_size=16).hexdigest()


def _busy_ledger(d: Path, tree: Path) -> Ledger:
    led = Ledger.open(d, snapshot_every=4)
    led.register("rt", [ScopeRule(str(tree / "src"), "write", True)])
    led.delegate("rt", "cafe-worker", [ScopeRule(str(tree / "src/é/日本"), "write", True)])
    led.register("docs", [ScopeRule(str(tree / "docs"), "read", True)])
    with pytest.raises(ScopeConflict):
        led.register("intruder", [ScopeRule(str(tree / "src/é"), "write", True)])
    led.release("cafe-worker")
    for i in range(6):
        led.register(f"h{i}", [ScopeRule(str(tree / f"out/{i}"), "write", True)])
    return led


def test_replay_json_is_the_log_byte_for_byte_and_the_chain_rehashes(tmp_path: Path) -> None:
    d = tmp_path / "led"
    led = _busy_ledger(d, tmp_path / "tree")
    stored = (d / "events.jsonl").read_bytes()
    r = subprocess.run([*CMD, "--ledger", str(d), "replay", "--json"], capture_output=True,
                       env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == stored  # spaces, key order, non-ASCII as UTF-8: all as written
    _rehash(r.stdout.splitlines())
    # history --json: the lines about one holder, each as stored
    h = subprocess.run([*CMD, "--ledger", str(d), "history", "rt", "--json"], capture_output=True,
                       env=clean_env(), timeout=60)
    assert h.returncode == 0, h.stderr
    want = [line for e, line in led.event_lines(holder="rt")]
    assert h.stdout.splitlines() == want and len(want) >= 3
    assert all(line in stored.splitlines() for line in want)
    led.close()


def test_filtered_and_ranged_replay_json_lines_are_stored_lines(tmp_path: Path) -> None:
    d = tmp_path / "led"
    led = _busy_ledger(d, tmp_path / "tree")
    stored = (d / "events.jsonl").read_bytes().splitlines()
    for args, seqs in ((("--from", "3", "--until", "9"), list(range(3, 10))),  # from a snapshot's offset
                       (("--type", "refused"), [4]),
                       (("--holder", "rt"), [e.seq for e in led.events(holder="rt")])):
        r = subprocess.run([*CMD, "--ledger", str(d), "replay", "--json", *args], capture_output=True,
                           env=clean_env(), timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [stored[s - 1] for s in seqs], args
    led.close()


def test_event_lines_matches_events_and_the_file(tmp_path: Path) -> None:
    d = tmp_path / "led"
    led = _busy_ledger(d, tmp_path / "tree")
    stored = (d / "events.jsonl").read_bytes().splitlines()
    pairs = list(led.event_lines())
    assert [line for _, line in pairs] == stored
    assert [e for e, _ in pairs] == list(led.events())
    assert [e.seq for e, _ in led.event_lines(since=5, until=7)] == [5, 6, 7]
    assert [line for _, line in led.event_lines(since=5, until=7)] == stored[4:7]
    with pytest.raises(ValueError):
        next(led.event_lines(types=["nope"]))
    led.close()


def test_replay_json_of_a_damaged_ledger_stops_before_the_damage(tmp_path: Path) -> None:
    d = tmp_path / "led"
    with Ledger.open(d) as led:
        for i in range(5):
            led.register(f"h{i}", [ScopeRule(f"/w/{i}", "write")])
    log = d / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"/w/3"', b'"/w/X"')
    log.write_bytes(b"".join(lines))
    r = ledger_cmd(d, "replay", "--json")
    assert r.returncode == 4
    # the lines the next one vouches for: 1 and 2 (line 3's hash no longer matches line 4's prev)
    assert r.stdout.encode().splitlines()[:2] == [x.rstrip(b"\n") for x in lines[:2]]
    assert b"/w/X" not in r.stdout.encode()
