"""Points before now (``-1h``, ``-30m``, ``-2d``, ``-1h30m``), epoch seconds
(``@1700000000[.fraction]``) wherever a point is taken (``--at``, ``--from``,
``--until``, ``diff``'s A and B), and ``--local``/``--tz ZONE`` for the times human
output shows (issue 17; docs/cli.md, "Points in time"). The ledger's events are
stamped by a clock given to the library (hours before now), so which event a point
before now names does not depend on how fast the test runs.
"""

from __future__ import annotations

import json
import subprocess
import time
import zoneinfo
from pathlib import Path

import pytest

from helpers import CMD, clean_env, ledger_cmd, one_error_line
from scopeledger import Ledger, ScopeRule

HOUR = 3600 * 10**9

#: Each event's age when the test starts: seq 1 three hours ago, ... seq 4 ten minutes ago.
AGES = [3 * HOUR, 2 * HOUR, HOUR // 2, HOUR // 6]


@pytest.fixture(scope="module")
def led(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("points") / "L"
    now = time.time_ns()
    stamps = [now - age for age in AGES]
    ticks = iter(stamps)
    with Ledger.open(path, clock=lambda: next(ticks)) as ledger:
        ledger.register("a", [ScopeRule("/r/a", "write")])
        ledger.register("b", [ScopeRule("/r/b", "write")])
        ledger.release("a")
        ledger.register("c", [ScopeRule("/r/c", "write")])
        assert ledger.seq == 4
    return path, stamps


def _seq_at(led: Path, *args: str) -> int:
    p = ledger_cmd(led, "show", "--json", *args)
    assert p.returncode == 0, p.stderr
    return int(json.loads(p.stdout)["seq"])


def _seqs(led: Path, *args: str) -> list[int]:
    p = ledger_cmd(led, "replay", "--json", *args)
    assert p.returncode == 0, p.stderr
    return [json.loads(line)["seq"] for line in p.stdout.splitlines()]


def test_points_before_now(led: tuple[Path, list[int]]) -> None:
    path, _ = led
    assert _seq_at(path, "--at", "-4h") == 0
    assert _seq_at(path, "--at", "-150m") == 1
    assert _seq_at(path, "--at=-1h") == 2
    assert _seq_at(path, "--at", "-20m") == 3
    assert _seq_at(path, "--at", "-0s") == 4
    assert _seq_at(path, "--at", "-1h30m") == 2
    assert _seq_at(path, "--at", "-1d") == 0 and _seq_at(path, "--at", "-1w") == 0
    assert _seqs(path, "--from", "-1h") == [3, 4]
    assert _seqs(path, "--from", "-150m", "--until", "-20m") == [2, 3]


def test_epoch_seconds(led: tuple[Path, list[int]]) -> None:
    path, stamps = led
    exact = [f"@{ts // 10**9}.{ts % 10**9:09d}" for ts in stamps]
    assert [_seq_at(path, "--at", point) for point in exact] == [1, 2, 3, 4]
    assert _seqs(path, "--from", exact[1], "--until", exact[2]) == [2, 3]
    # A whole second names that second, as an ISO time does: every event in it.
    second = f"@{stamps[0] // 10**9}"
    assert _seq_at(path, "--at", second) == 1
    assert _seq_at(path, "--at", "@0") == 0


def test_diff_takes_points_before_now_as_arguments(led: tuple[Path, list[int]]) -> None:
    # '-1h' was the options -1 and -h (the help); '-150m' an unknown option.
    path, _ = led
    p = ledger_cmd(path, "diff", "-150m", "-20m", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"a": 1, "b": 3, "added": ["b"], "removed": ["a"], "reparented": [],
                                    "rebound": [], "regranted": []}
    p = ledger_cmd(path, "diff", "--json", "-1h", "4")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["added"] == ["c"]


@pytest.mark.parametrize("args", [["show", "--at", "-5"], ["show", "--at", "-1y"], ["show", "--at", "@"],
                                  ["show", "--at", "@-5"], ["replay", "--from", "@1.1234567891"],
                                  ["replay", "--until", "-99999999999w"], ["diff", "-2x", "3"],
                                  ["show", "--at", "- 1h"], ["show", "--at", "-1H"]])
def test_bad_points_are_one_error_line(led: tuple[Path, list[int]], args: list[str]) -> None:
    path, _ = led
    p = ledger_cmd(path, *args)
    assert p.returncode == 2, p.stdout + p.stderr
    line = one_error_line(p.stderr)
    bad = next(a for a in args[1:] if a[:1] in "-@" and a not in ("--at", "--from", "--until"))
    assert repr(bad) in line
    if "fraction digits;" not in line and "out of range" not in line:
        assert "-30m" in line and "@1700000000" in line and "YYYY-MM-DD" in line, line


def test_times_shown_in_a_zone(led: tuple[Path, list[int]]) -> None:
    path, stamps = led
    try:
        zoneinfo.ZoneInfo("Asia/Kolkata")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database (Debian: tzdata)")
    utc = ledger_cmd(path, "replay", "--until", "1")
    assert utc.returncode == 0 and "Z  registered" in utc.stdout
    for args, env in (([ "--tz", "Asia/Kolkata"], clean_env()), (["--local"], clean_env(TZ="Asia/Kolkata"))):
        p = subprocess.run([*CMD, "--ledger", str(path), "replay", "--until", "1", *args], capture_output=True,
                           text=True, timeout=60, env=env)
        assert p.returncode == 0, p.stderr
        shown = p.stdout.split()[1]
        assert shown.endswith("+05:30"), p.stdout
        # The time shown, copied into --at, names that event (it carries its offset).
        assert _seq_at(path, "--at", shown) == 1
    p = ledger_cmd(path, "show", "--at", "2", "--tz", "Asia/Kolkata")
    assert p.returncode == 0 and "+05:30" in p.stdout.splitlines()[0], p.stdout
    p = ledger_cmd(path, "history", "a", "--tz", "Asia/Kolkata")
    assert p.returncode == 0 and p.stdout.count("+05:30") == 2, p.stdout
    # --json stays as stored (UTC nanoseconds).
    assert ledger_cmd(path, "replay", "--json", "--tz", "Asia/Kolkata").stdout == \
        ledger_cmd(path, "replay", "--json").stdout


@pytest.mark.parametrize("args, says", [(["--tz", "Mars/Base"], "'Mars/Base': no such time zone"),
                                        (["--tz", "../etc/passwd"], "no such time zone"),
                                        (["--tz", ""], "no such time zone"),
                                        (["--local", "--tz", "UTC"], "--local and --tz exclude each other")])
def test_bad_zones_are_one_error_line(led: tuple[Path, list[int]], args: list[str], says: str) -> None:
    path, _ = led
    p = ledger_cmd(path, "replay", *args)
    assert p.returncode == 2
    assert says in one_error_line(p.stderr)
