"""A follower of a ledger directory's log is never silent about a cut of what it read
(a fresh tester's finding: ``ledger replay --follow`` that had shown seqs 1-6 printed
nothing more, for ever, once ``ledger repair`` had cut lines 3-6; no warning, no exit).

``replay --follow`` reads the line of the last seq it read again at each look and stops
with exit 4 when the log no longer holds it as read (naming the repair that cut it, when
the log's ``repaired`` line says so), whatever the log's length afterwards: shorter, the
same, longer. ``Ledger.wait`` raises ``CorruptLedger`` when the log was renamed over or
deleted (``sed -i``: what is written there cannot be read through the object's
descriptor); a log cut or rewritten in place is folded again as it is now. A
``GrantWatch`` ends (``on_lost(None)``) when the log is replaced.

Real processes where it matters: the follower is a ``ledger replay --follow``
subprocess, the repair another ``ledger repair`` process; the follower is stopped
(SIGSTOP) while the log changes, so that its next look sees all of it at once (no
sleep as synchronisation: the test waits on its output lines and its exit).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import CMD, W, as_from_a_terminal, clean_env, ledger_cmd, lines_of
from scopeledger import CorruptLedger, Event, Ledger
from test_wait import until

BOUND = 60.0  # seconds: a bound on a condition, never a measure of speed


def _make(path: Path, n: int = 6) -> None:
    with Ledger.open(path, create=True) as led:
        for i in range(n):
            led.register(f"h{i}", [W(f"/tmp/tree/d{i}")], ttl=1e6, lease_only=True)


def _line_start(data: bytes, seq: int) -> int:
    start = 0
    for _ in range(seq - 1):
        start = data.index(b"\n", start) + 1
    return start


def _damaged(data: bytes, seq: int) -> tuple[int, bytes]:
    """Where line ``seq`` of ``data`` starts, and the line damaged (same length): one
    byte of a holder name made invalid UTF-8, so the line does not check out and a
    repair cuts from it."""
    start = _line_start(data, seq)
    end = data.index(b"\n", start)
    line = data[start:end]
    bad = line.replace(b'"h', b'"\xff', 1)
    assert len(bad) == len(line) and bad != line
    return start, bad


def _damage_in_place(log: Path, seq: int) -> None:
    """Line ``seq`` damaged in place (same inode, same length): :func:`_damaged`."""
    start, bad = _damaged(log.read_bytes(), seq)
    fd = os.open(log, os.O_WRONLY)
    try:
        os.pwrite(fd, bad, start)
    finally:
        os.close(fd)


def _rewrite_same_length(log: Path, seq: int) -> None:
    """Line ``seq`` changed in place, one letter of a holder name: the log's size and
    inode unchanged."""
    data = log.read_bytes()
    start = _line_start(data, seq)
    at = data.index(b'"name":"h', start) + len(b'"name":"')
    fd = os.open(log, os.O_WRONLY)
    try:
        os.pwrite(fd, b"H", at)
    finally:
        os.close(fd)


def _replace(log: Path, damage: int | None = None) -> None:
    """The log replaced by a copy of itself, as ``sed -i`` does: written to a new
    file, renamed over (the follower's descriptor names the old one); ``damage``:
    that line of the copy damaged (:func:`_damaged`), in the same one step."""
    data = log.read_bytes()
    if damage is not None:
        start, bad = _damaged(data, damage)
        data = data[:start] + bad + data[start + len(bad):]
    tmp = log.with_name("events.jsonl.new")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    os.rename(tmp, log)


def _repair(led: Path) -> None:
    res = ledger_cmd(led, "repair", subprocess_=True)
    assert res.returncode == 0, res


def _grow_past(led: Path, size: int) -> None:
    with Ledger.open(led) as w:
        i = 0
        while (led / "events.jsonl").stat().st_size <= size:
            w.register(f"more{i}", [W(f"/tmp/tree/more{i}")], ttl=1e6, lease_only=True)
            i += 1


class Follower:
    """``ledger replay --follow --json`` on ``led``, once it has printed seqs 1-6."""

    def __init__(self, led: Path) -> None:
        self.p = subprocess.Popen([*CMD, "--ledger", str(led), "replay", "--follow", "--json", "--interval",
                                   "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=clean_env(), preexec_fn=as_from_a_terminal)
        assert self.p.stdout is not None
        self.out = lines_of(self.p.stdout)
        for seq in range(1, 7):
            assert json.loads(self.line())["seq"] == seq

    def line(self) -> str:
        try:
            line = self.out.get(timeout=BOUND)
        except queue.Empty:
            self.p.kill()
            raise AssertionError(f"no output from the follower within {BOUND}s") from None
        assert line is not None, "the follower ended"
        return line

    def stop(self) -> None:
        os.kill(self.p.pid, signal.SIGSTOP)  # its next look sees the log as it is at the end

    def go_on(self) -> None:
        os.kill(self.p.pid, signal.SIGCONT)

    def end(self) -> tuple[int, list[dict[str, Any]], dict[str, Any], str]:
        """Its exit status, the events it printed after the first 6, its ``--json``
        error document (on stdout, last) and its stderr."""
        try:
            code = self.p.wait(BOUND)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError("the follower was still silent after the log was cut") from None
        docs = []
        while (line := self.out.get(timeout=BOUND)) is not None:
            docs.append(json.loads(line))
        assert self.p.stderr is not None
        assert docs and "error" in docs[-1], docs
        return code, docs[:-1], docs[-1]["error"], self.p.stderr.read()


def _followed_through(tmp_path: Path, change: Callable[[Path, Path, int], None]) -> tuple[
        int, list[dict[str, Any]], dict[str, Any], str]:
    """A follower of a new ledger of 6 grants, stopped while ``change(ledger, log, its
    size)`` changes it, then let go on: :meth:`Follower.end`."""
    led = tmp_path / "led"
    _make(led)
    log = led / "events.jsonl"
    f = Follower(led)
    f.stop()
    try:
        change(led, log, log.stat().st_size)
    finally:
        f.go_on()
    return f.end()


@pytest.mark.parametrize("after", ["shorter", "longer"])
def test_replay_follow_stops_with_exit_4_naming_the_cut_of_a_repair(tmp_path: Path, after: str) -> None:
    def cut(led: Path, log: Path, size: int) -> None:
        _damage_in_place(log, 3)
        _repair(led)
        if after == "longer":
            _grow_past(led, size)
        assert (log.stat().st_size < size) == (after == "shorter")

    code, more, error, err = _followed_through(tmp_path, cut)
    assert code == 4, err
    assert more == []  # nothing of the log as it is now: not the repair's lines, not later grants
    line, = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "the log no longer holds seq 6 as this replay read it" in line, line
    assert "'ledger repair' cut the log from seq 3 since" in line, line
    assert "run 'ledger replay' again" in line, line
    assert (error["type"], error["exit_code"], error["seq"]) == ("CorruptLedger", 4, 6)


@pytest.mark.parametrize("change", ["same length", "replaced"])
def test_replay_follow_stops_with_exit_4_when_what_it_read_changes_whatever_the_size(
        tmp_path: Path, change: str) -> None:
    def rewrite(led: Path, log: Path, size: int) -> None:
        if change == "same length":
            _rewrite_same_length(log, 6)
            assert log.stat().st_size == size
        else:  # the reproducer's way: sed -i, then a repair of the new file, then a new grant
            _replace(log, damage=3)  # (one step: a follower looking between two would see a rewrite)
            _repair(led)
            _grow_past(led, size)

    code, more, error, err = _followed_through(tmp_path, rewrite)
    assert code == 4, err
    assert more == []
    assert error["exit_code"] == 4, error
    line, = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if change == "same length":
        assert "the log no longer holds seq 6 as this replay read it: cut, rewritten or replaced since" in line, line
        assert "run 'ledger replay' again" in line, line
    else:
        assert "the log was deleted or renamed over since this process opened it" in line, line
        assert "open the ledger again" in line, line


def test_replay_follow_goes_on_after_a_repair_that_cut_nothing_it_read(tmp_path: Path) -> None:
    # A follower is stopped by a cut of what it read, not by a repair: a torn tail
    # (no line it read) set aside, the repair's own line and the next grant are shown.
    led = tmp_path / "led"
    _make(led)
    log = led / "events.jsonl"
    f = Follower(led)
    try:
        with open(log, "ab") as torn:
            torn.write(b'{"v":2,"seq":7')  # a torn last line: a repair sets it aside
        _repair(led)
        with Ledger.open(led) as w:
            w.register("after", [W("/tmp/tree/after")])
        repaired = json.loads(f.line())
        assert (repaired["seq"], repaired["type"], repaired["through"]) == (7, "repaired", 7)
        assert json.loads(f.line())["holder"]["name"] == "after"
    finally:
        f.p.send_signal(signal.SIGINT)
        assert f.p.wait(BOUND) == 130


# -- the library's followers -------------------------------------------------------------


def test_wait_after_a_repair_goes_on_with_the_repaired_log(tmp_path: Path) -> None:
    led = tmp_path / "led"
    _make(led)
    with Ledger.open(led, readonly=True) as follower:
        assert follower.refresh() == 6
        _damage_in_place(led / "events.jsonl", 3)
        _repair(led)
        with Ledger.open(led) as w:
            w.register("after", [W("/tmp/tree/after")])
        now = follower.wait(6, timeout=BOUND)
        assert now > 6
        types = [e.type for e in follower.events(since=3)]
        assert types[0] == "repaired" and types[-1] == "registered" and set(types[1:-1]) <= {"void"}
        assert sorted(a.name for a in follower.holders()) == ["after", "h0", "h1"]


@pytest.mark.parametrize("change", ["same length", "replaced"])
def test_a_wait_under_way_learns_of_a_change_the_size_does_not_show(tmp_path: Path, change: str) -> None:
    # The change comes while wait() sleeps or before it first looks; the size says nothing.
    # A line rewritten in place: the object folds the log again as it is now (holder h5
    # renamed H5; wait goes on waiting for a new event, here the test's). A log renamed
    # over: wait raises (its descriptor reads the old file; open the ledger again).
    led = tmp_path / "led"
    _make(led)
    log = led / "events.jsonl"
    with Ledger.open(led, readonly=True) as follower:
        assert follower.refresh() == 6
        got: queue.Queue[Any] = queue.Queue()

        def waiting() -> None:
            try:
                got.put(follower.wait(6, timeout=None))
            except Exception as exc:  # noqa: BLE001 - handed to the test
                got.put(exc)

        t = threading.Thread(target=waiting, daemon=True)
        t.start()
        if change == "same length":
            _rewrite_same_length(log, 6)
            # (the rewritten line 6 is the last: nothing after it says it was altered)
            until(lambda: "H5" in {a.name for a in follower.holders()}, "the object folding the log again")
            with Ledger.open(led) as w:
                w.register("next", [W("/tmp/tree/next")])
            assert got.get(timeout=BOUND) == 7
        else:
            _replace(log)
            exc = got.get(timeout=BOUND)
            assert isinstance(exc, CorruptLedger) and "renamed over" in str(exc), exc


def test_a_grant_watch_ends_when_the_log_is_replaced(tmp_path: Path) -> None:
    led = tmp_path / "led"
    _make(led, 2)
    with Ledger.open(led) as holder:
        a = holder.register("job", [W(tmp_path / "w")])
        got: queue.Queue[Event | None] = queue.Queue()
        w = holder.watch_grant("job", a.token, got.put)
        try:
            _replace(led / "events.jsonl")
            with Ledger.open(led) as other:  # an append to the new file: the watch's backstop look, or this
                other.register("other", [W(tmp_path / "o")])
            assert got.get(timeout=BOUND) is None
        finally:
            w.stop()
