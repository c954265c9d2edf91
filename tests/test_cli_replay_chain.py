"""`ledger replay` and `ledger history` check every line's place in the hash
chain, also before the newest snapshot (which `show` trusts): a forged or
moved line is exit 4 naming it, never printed as history."""

from __future__ import annotations

from pathlib import Path

from scopeledger import Ledger, ScopeRule
from test_cli import ledger_cmd, one_error_line


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
