"""Issue 13 item 14: a writer whose clock is ahead (a day, years) or behind.
Each event records its writer's own clock reading (format v2, never
clamped; the order is the seq); verify reports the jumps naming the
writers; time travel by time is the state after the last event stamped at
or before the time, and says when that answer crosses a jump. Real writers
(separate Ledger objects, and real processes for the command line), with
their clocks set through the ``clock=`` seam of ``Ledger.open``."""

import datetime as dt
import os
import subprocess
import sys
import time
import warnings

import orjson
import pytest

from scopeledger import ClockJumpWarning, Ledger, ScopeRule, verify
from scopeledger._fold import SNAPSHOT_FORMAT

W = lambda p: ScopeRule(p, "write")  # noqa: E731
DAY = 86_400 * 10**9
YEARS = 30 * 365 * DAY
LEDGER = os.path.join(os.path.dirname(sys.executable), "ledger")


def _ts(path):
    return [orjson.loads(x)["ts"] for x in open(os.path.join(path, "events.jsonl"), "rb").read().splitlines()]


def _utc(ns):
    """ns -> an aware datetime, rounded up to its microsecond."""
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=-(-ns // 1000))


@pytest.mark.parametrize("ahead", [DAY, YEARS], ids=["a-day", "years"])
def test_a_writer_whose_clock_is_ahead_is_recorded_reported_and_crossed_knowingly(ledger_dir, ahead):
    from scopeledger._history import ClockJumpWarning

    normal = Ledger.open(ledger_dir)
    fast = Ledger.open(ledger_dir, clock=lambda: time.time_ns() + ahead)
    normal.register("a", [W("/a")])
    fast.register("b", [W("/b")])
    t_after_b = time.time_ns()
    normal.register("c", [W("/c")])
    ts = _ts(ledger_dir)
    # Recorded as each writer read its clock: b ahead, c not pinned to b's time.
    assert ts[1] - ts[0] >= ahead - 60 * 10**9 and ts[2] < ts[1] and ts[2] >= t_after_b

    report = verify(ledger_dir)
    assert report.ok  # not a fault: the order is the seq
    kinds = [(j.kind, j.event.seq) for j in report.clock_jumps]
    assert ("future", 2) in kinds and ("back", 3) in kinds
    if ahead == YEARS:
        assert ("forward", 2) in kinds  # more than 7 days after the event before
    back = [j for j in report.clock_jumps if j.kind == "back"][0]
    assert back.event.what == "registered 'c'" and back.before.what == "registered 'b'"
    assert back.event.writer.startswith(f"pid {os.getpid()} on ") and back.before.writer.startswith("pid ")
    assert any("clock jump back: seq 3 (registered 'c'" in n for n in report.notes)

    # Time travel to now: the state after c (the last event stamped at or
    # before now) includes b, stamped after now: said, and returned as data.
    now = time.time_ns()
    point = normal.time_point(now)
    assert (point.seq, point.crossed_count, [e.seq for e in point.crossed]) == (3, 1, [2])
    with pytest.warns(ClockJumpWarning, match=r"crosses a clock jump: the state after seq 3 includes 1 "
                                              r"event\(s\) stamped after that time: seq 2 \(registered 'b'"):
        state = normal.state_at(time=_utc(now))
    assert sorted(state.holders) == ["a", "b", "c"]  # not the state before the jump
    with pytest.warns(ClockJumpWarning):
        assert [h.name for h in normal.who("/c", time=_utc(now))] == ["c"]
    # After b's own time: nothing crossed, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert normal.state_at(time=_utc(ts[1] + 1)).seq == 3
        assert normal.time_point(ts[1] + 1).crossed_count == 0
    # Before the jump: a alone; b, right after, is stamped after c (and
    # ahead of this clock): its real time is unknown, so that is said too.
    with pytest.warns(ClockJumpWarning, match=r"leaves out 1 event\(s\) after it .* seq 2 \(registered 'b'"):
        assert normal.state_at(time=_utc(ts[0])).seq == 1

    # The command line: the answer and the warning.
    at = _utc(now).isoformat().replace("+00:00", "Z")
    for cmd in (["show", "--at", at], ["who", "/c", "--at", at]):
        p = subprocess.run([LEDGER, "--ledger", ledger_dir, *cmd], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "warning: time travel to" in p.stderr and "crosses a clock jump" in p.stderr
        assert "seq 2 (registered 'b'" in p.stderr
    p = subprocess.run([LEDGER, "--ledger", ledger_dir, "--json", "show", "--at", at], capture_output=True,
                       text=True, timeout=60)
    assert sorted(h["name"] for h in orjson.loads(p.stdout)["holders"]) == ["a", "b", "c"]
    assert "warning: time travel to" in p.stderr and "crosses a clock jump" in p.stderr  # stderr, as every warning
    p = subprocess.run([LEDGER, "--ledger", ledger_dir, "verify"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "note: clock jump back: seq 3" in p.stdout, p


@pytest.mark.parametrize("after", [False, True], ids=["nothing-after", "an-honest-event-after"])
def test_time_travel_that_leaves_out_an_event_stamped_ahead_says_so(ledger_dir, after):
    """A writer a year ahead registers 'future' (acknowledged, live); asked
    at a time after its real time, the answer (the state before it, by its
    stamp) may leave out what was held then: said, never silently. With
    nothing after it, this machine's clock contradicts its stamp; with an
    honest event after it, that event's stamp does (found by a reviewer,
    /tmp/verify13-findings/01*)."""
    normal = Ledger.open(ledger_dir)
    fast = Ledger.open(ledger_dir, clock=lambda: time.time_ns() + YEARS)
    normal.register("before", [W("/b")])
    fast.register("future", [W("/f")])
    asked = time.time_ns()  # 'future' is certainly held now
    if after:
        normal.register("after", [W("/a")])
    point = normal.time_point(asked)
    assert (point.seq, point.crossed_count) == (1, 0)
    assert (point.doubted_count, [e.seq for e in point.doubted]) == (1, [2]) and point.crosses_jump
    assert point.doubted[0].what == "registered 'future'"
    with pytest.warns(ClockJumpWarning, match=r"the state after seq 1 leaves out 1 event\(s\) after it whose "
                                              r"stamps .* seq 2 \(registered 'future'"):
        assert sorted(normal.state_at(time=_utc(asked)).holders) == ["before"]
    with pytest.warns(ClockJumpWarning):
        assert normal.who("/f", time=_utc(asked)) == []
    done = subprocess.run([LEDGER, "--ledger", ledger_dir, "show", "--at", _utc(asked).isoformat()],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning: time travel to" in done.stderr and "leaves out 1 event(s)" in done.stderr
    # Asked now: with the honest event after it, 'after' (stamped at or
    # before now) ends the answer and 'future' is in it; nothing is left
    # out, no warning. With nothing after it, 'future' is still left out.
    now = normal.time_point(time.time_ns())
    if after:
        assert (now.seq, now.doubted_count, now.crossed_count) == (3, 0, 1)  # includes 'future': crossed
    else:
        assert (now.seq, now.doubted_count, [e.seq for e in now.doubted]) == (1, 1, [2])


def test_a_writer_whose_clock_is_behind(ledger_dir):
    from scopeledger._history import ClockJumpWarning

    normal = Ledger.open(ledger_dir)
    slow = Ledger.open(ledger_dir, clock=lambda: time.time_ns() - YEARS)
    normal.register("a", [W("/a")])
    normal.register("b", [W("/b")])
    slow.register("c", [W("/c")])
    normal.register("d", [W("/d")])
    ts = _ts(ledger_dir)
    assert ts[2] < ts[0]
    report = verify(ledger_dir)
    # Back at c; forward again (by years, over the 7-day threshold) at d.
    assert report.ok and [(j.kind, j.event.seq) for j in report.clock_jumps] == [("back", 3), ("forward", 4)]
    assert report.clock_jumps_total == 2
    # A time between c's (years ago) and a's: the last event stamped at or
    # before it is c, and a and b (before c) were stamped after it.
    with pytest.warns(ClockJumpWarning, match=r"the state after seq 3 includes 2 event\(s\)"):
        assert normal.state_at(time=_utc(ts[2] + DAY)).seq == 3
    # Before everything: the empty state, nothing crossed.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert normal.state_at(time=_utc(ts[2] - DAY)).seq == 0
        assert normal.state_at(time=_utc(ts[3])).seq == 4


def test_a_v1_line_going_back_is_still_corrupt(ledger_dir):
    """v1 lines keep v1 meaning: their writers clamped, so a v1 line before
    the time before it was edited."""
    from scopeledger import CorruptLedger
    from scopeledger._events import line_hash

    with Ledger.open(ledger_dir) as led:
        for n in "abc":
            led.register(n, [W(f"/{n}")])
    evs = [orjson.loads(x) for x in open(os.path.join(ledger_dir, "events.jsonl"), "rb").read().splitlines()]
    evs[1]["ts"] = evs[0]["ts"] - 1
    from torture_support import as_v1_event

    prev, out = "0" * 32, []
    for e in evs:
        e = dict(as_v1_event(e), prev=prev)
        out.append(orjson.dumps(e))
        prev = line_hash(out[-1])
    open(os.path.join(ledger_dir, "events.jsonl"), "wb").write(b"".join(x + b"\n" for x in out))
    with pytest.raises(CorruptLedger, match=r"line 2 \(seq 2\): ts .* is not an integer at or after"):
        Ledger.open(ledger_dir)


def _format_1_snapshot(ledger_dir, names):
    """A ledger of holders ``names`` whose one snapshot (at the end) says
    format 1, as the previous version wrote them; ``(name, path)``."""
    with Ledger.open(ledger_dir) as led:
        for n in names:
            led.register(n, [W(f"/{n}")])
        led.snapshot()
    snaps = os.path.join(ledger_dir, "snapshots")
    (name,) = os.listdir(snaps)
    path = os.path.join(snaps, name)
    head, body = open(path, "rb").read().split(b"\n", 1)
    open(path, "wb").write(orjson.dumps(dict(orjson.loads(head), format=1)) + b"\n" + body)
    return name, path


def test_a_snapshot_of_the_older_format_is_skipped_quietly_and_replaced(ledger_dir, caplog):
    """The State's JSON gained fields, so the snapshot format went up: one
    of format 1 is skipped (the state is folded from the log), never an error,
    and a new one is written; verify notes it."""
    name, path = _format_1_snapshot(ledger_dir, "abc")
    report = verify(ledger_dir)
    assert report.ok and any(f"format 1, older than this scopeledger's {SNAPSHOT_FORMAT}" in n
                             for n in report.notes)
    caplog.set_level("INFO", logger="scopeledger")
    with Ledger.open(ledger_dir) as led:
        assert sorted(a.name for a in led.holders()) == ["a", "b", "c"]
        assert led.stats.snapshots_skipped == [name]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert orjson.loads(open(path, "rb").readline())["format"] == SNAPSHOT_FORMAT  # written again
    with Ledger.open(ledger_dir) as led:
        assert led.stats.snapshot_seq == 3 and led.stats.events_folded == 0


def test_a_snapshot_of_the_older_format_past_the_end_of_the_log_still_tells_what_was_lost(ledger_dir):
    """An upgrade after a power cut: the log lost its tail, a format-1
    snapshot saw it. Skipping that snapshot as merely outdated would hide
    the loss."""
    _format_1_snapshot(ledger_dir, "abcd")
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines(keepends=True)
    open(log, "wb").write(b"".join(lines[:2]))  # the power cut took seq 3 and 4
    with Ledger.open(ledger_dir) as led:
        assert led.lost is not None and (led.lost.last_seq, led.lost.snapshot_seq) == (2, 4)
