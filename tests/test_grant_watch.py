"""``Ledger.watch_grant`` (a ``GrantWatch``): a holder learns that its grant ended (forced
release, reclaim, its line cut from the log) from the log's lines past the grant, woken by
the store's change notification, without folding the state.

Each test makes the backstop look (``FOLLOW_RECHECK_SECONDS``) far longer than any bound it
waits with, so that only the store's notification (inotify, LISTEN) can wake the watch in
time: a watch that only polled would fail the bounded wait."""

from __future__ import annotations

import hashlib
import logging
import json
import os
import queue
import select
import threading
from pathlib import Path
from typing import Any

import pytest

import scopeledger._grantwatch as grantwatch
from helpers import W, wait_for
from scopeledger import Event, GrantWatch, Ledger, verify

BOUND = 60.0  # seconds: a bound on a condition, never a measure of speed


@pytest.fixture(autouse=True)
def no_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grantwatch, "FOLLOW_RECHECK_SECONDS", 1e6)


class Gate:
    """When a watch looks, in the test's hands: its sleep after a look ends only at
    :meth:`wake` (or its ``stop``), whatever the store's notification says, and says that
    it sleeps (:meth:`asleep` waits for it): between the two, the test changes the log
    as it pleases, and the watch's next look sees it all at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sleeping: queue.Queue[int] = queue.Queue()
        self.r, self.w = os.pipe()
        gate = self

        def sleep(watch: GrantWatch, seconds: float | None = None) -> None:
            gate.sleeping.put(watch.looks)
            p = select.poll()
            p.register(watch._stop_r, select.POLLIN)
            p.register(gate.r, select.POLLIN)
            if any(fd == gate.r for fd, _ in p.poll()):
                os.read(gate.r, 1)

        monkeypatch.setattr(GrantWatch, "_sleep", sleep)

    def asleep(self) -> int:
        """Wait until the watch sleeps after a look; its looks so far."""
        try:
            return self.sleeping.get(timeout=BOUND)
        except queue.Empty:
            raise AssertionError(f"the watch did not go to sleep within {BOUND}s") from None

    def wake(self) -> None:
        os.write(self.w, b"x")

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Any:
    g = Gate(monkeypatch)
    yield g
    g.close()


def damage(log: Path, seq: int, word: bytes) -> None:
    """Line ``seq`` of ``log`` damaged in place: a byte of ``word`` in it made invalid
    UTF-8, so that a repair cuts from it."""
    data = log.read_bytes()
    start = 0
    for _ in range(seq - 1):
        start = data.index(b"\n", start) + 1
    at = data.index(word, start) + 1
    assert at < data.index(b"\n", start)
    log.write_bytes(data[:at] + b"\xff" + data[at + 1:])


def watch(ledger: Ledger, name: str, token: int) -> tuple[GrantWatch, "queue.Queue[Event | None]"]:
    got: queue.Queue[Event | None] = queue.Queue()
    return ledger.watch_grant(name, token, got.put), got


def stores(request: Any, tmp_path: Path) -> str:
    if request.param == "dir":
        return str(tmp_path / "led")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["dir", "pg"])
def where(request: Any, tmp_path: Path) -> str:
    return stores(request, tmp_path)


def test_a_forced_release_is_seen_with_who_and_why_without_folding(where: str, tmp_path: Path) -> None:
    with Ledger.open(where, create=True) as mine, Ledger.open(where) as other:
        a = mine.register("job", [W(tmp_path / "w")])
        for i in range(5):  # others' lines, some naming a holder whose name holds "job"
            other.register(f"job{i}", [W(tmp_path / f"x{i}")])
            other.release(f"job{i}")
        mine.unload()
        w, got = watch(mine, "job", a.token)
        try:
            assert w.running and not w.lost
            other.release("job", force=True, reason="disk needed elsewhere")
            ev = got.get(timeout=BOUND)
            assert ev is not None and ev.type == "released" and ev.data["forced"] == "disk needed elsewhere"
            assert ev.data["name"] == "job" and ev.actor["pid"] == other.actor.pid
            assert w.lost and w.ended == ev
            w._thread.join(BOUND)
            assert not w.running
            # It folded nothing: the state mine dropped is still dropped.
            assert mine._state is None
        finally:
            w.stop()
        assert got.empty()


def test_a_grant_ended_before_the_watch_is_reported_at_once(where: str, tmp_path: Path) -> None:
    with Ledger.open(where, create=True) as led:
        a = led.register("job", [W(tmp_path / "w")])
        led.register("other", [W(tmp_path / "o")])
        led.release("job", token=a.token)
        w, got = watch(led, "job", a.token)
        ev = got.get(timeout=BOUND)
        assert ev is not None and ev.type == "released" and "forced" not in ev.data
        w.stop()
        # No grant of that name at that seq (another's line): None, at once.
        w, got = watch(led, "job", a.token + 1)
        assert got.get(timeout=BOUND) is None
        w.stop()


def test_stop_ends_it_and_nothing_is_called_after(where: str, tmp_path: Path) -> None:
    with Ledger.open(where, create=True) as led:
        a = led.register("job", [W(tmp_path / "w")])
        w, got = watch(led, "job", a.token)
        w.stop()
        assert not w.running
        led.release("job")
        w.stop()  # idempotent
        assert got.empty() and not w.lost


def test_a_reclaim_is_seen(where: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    with Ledger.open(where, create=True) as led:
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        try:
            a = led.register("job", [W(tmp_path / "w")], child.pid)
            w, got = watch(led, "job", a.token)
        finally:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait()
        led.reclaim()
        ev = got.get(timeout=BOUND)
        assert ev is not None and ev.type == "reclaimed" and ev.data["reason"] == "process_gone"
        w.stop()


def test_the_grant_cut_from_the_log_by_a_repair_is_seen(tmp_path: Path) -> None:
    led_dir = tmp_path / "led"
    with Ledger.open(led_dir, create=True) as led:
        led.register("early", [W(tmp_path / "e")])
        a = led.register("job", [W(tmp_path / "w")])
        w, got = watch(led, "job", a.token)
        # An earlier line altered: a repair cuts from there, the grant with it.
        log = led_dir / "events.jsonl"
        lines = log.read_bytes().split(b"\n")
        lines[0] = lines[0].replace(b"early", b"EARLY")
        log.write_bytes(b"\n".join(lines))
        with Ledger.open(led_dir, fold=False) as fixer:
            fixer.repair()
        assert got.get(timeout=BOUND) is None
        w.stop()


def test_bad_arguments_are_refused_and_nothing_starts(tmp_path: Path) -> None:
    before = set(threading.enumerate())  # (an earlier test's thread may end meanwhile: only new ones count)
    with Ledger.open(tmp_path / "led", create=True) as led:
        for args, exc in [(("job", "1", print), TypeError), (("job", 1, None), TypeError),
                          (("job", 1, 42), TypeError), (("job", 0, print), ValueError),
                          (("a/../b", 1, print), Exception)]:
            with pytest.raises(exc):
                led.watch_grant(*args)  # type: ignore[arg-type]
    assert set(threading.enumerate()) - before == set()


def test_a_token_of_another_integer_type_is_taken_as_the_plain_int(tmp_path: Path) -> None:
    # watch_grant checked the token's type but kept the value given: an IntEnum token
    # reached the watch (and its messages) as itself.
    import enum

    class Token(enum.IntEnum):
        JOB = 1

    with Ledger.open(tmp_path / "led", create=True) as led:
        a = led.register("job", [W(tmp_path / "w")])
        assert a.token == Token.JOB
        w = led.watch_grant("job", Token.JOB, print)
        try:
            assert type(w.token) is int and w.token == 1
        finally:
            w.stop()


def test_a_cut_of_the_grant_regrown_to_the_same_seq_before_the_watch_looks_again_is_seen(
        tmp_path: Path, gate: Gate) -> None:
    # The watch read the log to seq 3. A repair cut its grant and the line after it, and
    # the log was back at seq 3 before the watch looked again: it read after seq 3, found
    # nothing, and took the grant for its own (a fresh tester's finding, with ``ledger run``
    # stopped: other runs' lines brought it back, at the same size; a repair now keeps the
    # cut seqs itself, with its own lines, so every repair brings the log back there).
    led_dir = tmp_path / "led"
    log = led_dir / "events.jsonl"
    with Ledger.open(led_dir, create=True) as led:
        led.register("early", [W(tmp_path / "e")])
        a = led.register("job", [W(tmp_path / "w")])
        led.register("late", [W(tmp_path / "l")])
        w, got = watch(led, "job", a.token)
        try:
            gate.asleep()
            size = log.stat().st_size
            damage(log, a.token, b'"job"')
            with Ledger.open(led_dir, fold=False) as fixer:
                report = fixer.repair()
                assert (report.lines_cut, report.void_through) == (2, 3)
            # The repair's lines as long as the lines they replace (its "cut" text padded, the
            # void line chained again): the same seq and the same size, as the tester's runs had.
            lines = log.read_bytes().splitlines(keepends=True)
            marker = json.loads(lines[1])
            marker["cut"] += "x" * (size - len(b"".join(lines)))
            lines[1] = json.dumps(marker, separators=(",", ":")).encode() + b"\n"
            void = json.loads(lines[2])
            void["prev"] = hashlib.blake2b(lines[1][:-1], digest_size=16).hexdigest()
            lines[2] = json.dumps(void, separators=(",", ":")).encode() + b"\n"
            log.write_bytes(b"".join(lines))
            assert log.stat().st_size == size and verify(led_dir).ok
            with Ledger.open(led_dir) as other:
                assert other.seq == 3 and [e.type for e in other.events()][1:] == ["repaired", "void"]
            gate.wake()
            assert got.get(timeout=BOUND) is None
            assert w.lost and w.ended is None
        finally:
            w.stop()


def test_cuts_after_the_grant_are_followed_through_any_number_of_times(tmp_path: Path, gate: Gate) -> None:
    # A repair that cuts only lines after the grant leaves the grant held: the watch reads
    # on from the grant's line, what follows it now included. It did so once; the next such
    # cut (hours later, say) ended the watch with a warning, the grant still held.
    led_dir = tmp_path / "led"
    log = led_dir / "events.jsonl"
    with Ledger.open(led_dir, create=True) as led:
        a = led.register("job", [W(tmp_path / "w")])
        w, got = watch(led, "job", a.token)
        try:
            gate.asleep()
            for round in range(4):
                with Ledger.open(led_dir) as other:
                    other.register("x", [W(tmp_path / "x")])
                    other.release("x")
                gate.wake()
                gate.asleep()  # (it read them)
                damage(log, a.token + 1, b'"type"')
                with Ledger.open(led_dir, fold=False) as fixer:
                    report = fixer.repair()
                    assert report.kept_seq == a.token  # (the grant's line kept)
                with Ledger.open(led_dir) as other:
                    assert other.seq == report.void_through  # (the cut seqs kept void by the repair)
                    for i in range(round + 1):  # (more lines each time: the log's length says nothing)
                        other.register(f"r{i}", [W(tmp_path / f"r{i}")])
                    if round == 3:  # the grant's end among the lines past the cut
                        other.release("job", force=True, reason="after the cut")
                gate.wake()
                if round < 3:
                    gate.asleep()
                    assert w.running and got.empty()
            ev = got.get(timeout=BOUND)
            assert ev is not None and ev.type == "released" and ev.data["forced"] == "after the cut"
        finally:
            w.stop()


def test_a_server_down_is_said_once_and_its_return_once_not_at_every_look(
        pg_cluster: Any, pg_url: str, tmp_path: Path, gate: Gate, caplog: pytest.LogCaptureFixture) -> None:
    # While the PostgreSQL server is down every look fails; before, each said 'could not
    # read the log ... (trying again)', every 0.5 s for as long as it was down (a fresh
    # tester's finding: `ledger run` printed one a half second). Now the first failed look
    # says it and the first look that reads again says so; the looks in between, nothing.
    # Each look is the test's (the gate), so the count of looks is known.
    caplog.set_level(logging.INFO, logger="scopeledger")
    with Ledger.open(pg_url, create=True) as led:
        a = led.register("job", [W(tmp_path / "w")])
        w, got = watch(led, "job", a.token)
        try:
            gate.asleep()
            pg_cluster.stop_server()
            try:
                for _ in range(4):  # four looks, each failing, each followed by a sleep
                    gate.wake()
                    gate.asleep()
            finally:
                pg_cluster.start_server()
            down = [r.getMessage() for r in caplog.records if "could not read the log" in r.getMessage()]
            assert len(down) == 1 and "trying again every 0.5 s until it can" in down[0], down
            assert not [r for r in caplog.records if "can be read again" in r.getMessage()]
            gate.wake()
            gate.asleep()
            back = [r.getMessage() for r in caplog.records if "can be read again" in r.getMessage()]
            assert back == [f"the log of {w._where} can be read again: watching grant 'job' (token "
                            f"{a.token}) again"], back
        finally:
            w.stop()
    with Ledger.open(pg_url) as led:
        led.release("job", force=True, reason="done")


def test_a_wake_up_that_cannot_be_made_while_the_server_is_down_is_said_once(
        pg_cluster: Any, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # The watch's own sleep, counted (not replaced): with the server down its LISTEN
    # wake-up breaks, and each look after tries to make it again. Before, each failed try
    # said 'cannot be woken by the log of URL's changes now' (11 notes in 5 s of a
    # fresh tester's `ledger run`); now once, until it can be made again.
    caplog.set_level(logging.INFO, logger="scopeledger")
    sleeps: queue.Queue[int] = queue.Queue()
    real = GrantWatch._sleep

    def counted(watch: GrantWatch, seconds: float | None = None) -> None:
        sleeps.put(1)
        real(watch, seconds)

    monkeypatch.setattr(GrantWatch, "_sleep", counted)
    monkeypatch.setattr(grantwatch, "FOLLOW_RECHECK_SECONDS", 0.05)  # (looks often: the count is of looks)
    with Ledger.open(pg_url, create=True) as led:
        a = led.register("job", [W(tmp_path / "w")])
        w, got = watch(led, "job", a.token)
        try:
            # Its first look made its wake-up (a watch first reads its grant's line: with the
            # server down before that, it would look for that line until the server is back).
            sleeps.get(timeout=BOUND)
            pg_cluster.stop_server()
            try:
                def said() -> list[str]:
                    return [r.getMessage() for r in caplog.records if "cannot be woken" in r.getMessage()]
                for _ in range(int(BOUND / 0.05)):
                    if said():
                        break
                    sleeps.get(timeout=BOUND)
                assert said(), "the watch never said it cannot be woken"
                for _ in range(6):  # six more looks, the server still down
                    sleeps.get(timeout=BOUND)
                assert len(said()) == 1, said()
            finally:
                pg_cluster.start_server()
        finally:
            w.stop()
    with Ledger.open(pg_url) as led:
        led.release("job", force=True, reason="done")


def test_stop_from_its_own_on_lost_returns_and_later_stops_return(where: str, tmp_path: Path) -> None:
    # The natural "stop watching once lost": stop() in on_lost returns at once (it is the
    # watch's own thread: nothing to wait for), the thread ends after the callback, and a
    # later stop() from another thread (a supervisor's shutdown, a with block's end) returns.
    with Ledger.open(where, create=True) as led:
        a = led.register("job", [W(tmp_path / "w")])
        box: dict[str, Any] = {}
        returned = threading.Event()

        def on_lost(ev: Event | None) -> None:
            box["ev"] = ev
            box["w"].stop()
            returned.set()

        box["w"] = w = led.watch_grant("job", a.token, on_lost)
        led.release("job", force=True, reason="operator")
        assert returned.wait(BOUND), "stop() from on_lost did not return"
        w._thread.join(BOUND)
        assert not w.running
        assert box["ev"] is not None and box["ev"].data["forced"] == "operator" and w.lost
        later = threading.Thread(target=w.stop, daemon=True)
        later.start()
        later.join(BOUND)
        assert not later.is_alive(), "a later stop() did not return"


def _inotify_instances() -> int:
    """This process's inotify instances (descriptors; one closing may still be listed)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            pass
    return n


def _followers_gone() -> None:
    """Wait until no watch's wake-up thread runs (it closes its follower as it ends), nor
    the thread it hands an inotify instance to (closing one waits for the kernel)."""
    for name in ("scopeledger-follow", "scopeledger-inotify-close"):
        for t in threading.enumerate():
            if t.name == name:
                t.join(BOUND)
                assert not t.is_alive(), f"{name} did not end with the last watch"


def _listeners(pg_cluster: Any) -> int:
    """Server connections of this test's client that LISTEN (their last statement)."""
    import psycopg

    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as c:
        return int(c.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' "
                             "AND pid <> pg_backend_pid()").fetchone()[0])


def test_many_watches_in_one_process_share_one_wake_up(where: str, request: Any, tmp_path: Path) -> None:
    # A supervisor watching many grants (spawn's on_lost) held one inotify instance per
    # watch (150 spawns: 127 instances, the per-user limit of 128 spent, other programs
    # of the user refused) or one LISTEN connection per watch on PostgreSQL (past
    # max_connections, other clients refused). Now one for all of them, each watch still
    # woken by its own end (the backstop is off: only the wake-up can wake them in time).
    kind = "dir" if where.startswith("/") else "pg"
    _followers_gone()
    before = _inotify_instances()
    n = 24
    with Ledger.open(where, create=True) as led, Ledger.open(where) as other:
        grants = [led.register(f"w{i}", [W(tmp_path / f"w{i}")]) for i in range(n)]
        watches = [watch(led, a.name, a.token) for a in grants]
        try:
            for w, _ in watches:  # (a watch subscribes before its first look)
                wait_for(lambda w=w: w.looks >= 1, BOUND)
            if kind == "dir":
                assert _inotify_instances() - before == 1
            else:
                assert _listeners(request.getfixturevalue("pg_cluster")) == 1
            for a in grants[::2]:
                other.release(a.name, force=True, reason=f"taken from {a.name}")
            for i, (w, got) in enumerate(watches):
                if i % 2 == 0:
                    ev = got.get(timeout=BOUND)
                    assert ev is not None and ev.data["forced"] == f"taken from w{i}"
                else:
                    assert got.empty() and not w.lost
        finally:
            for w, _ in watches:
                w.stop()
    _followers_gone()
    if kind == "dir":
        assert _inotify_instances() == before
    else:
        assert _listeners(request.getfixturevalue("pg_cluster")) == 0


def test_a_watch_in_a_forked_child_has_a_wake_up_of_its_own(tmp_path: Path) -> None:
    # The parent's watches share a wake-up whose thread the child does not have: a watch
    # the child makes is woken all the same (its own, not the parent's, which never rings).
    where = str(tmp_path / "led")
    with Ledger.open(where, create=True) as led:
        a = led.register("parent-job", [W(tmp_path / "p")])
        w, _ = watch(led, "parent-job", a.token)
        try:
            r, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - (the child)
                code = 1
                try:
                    os.close(r)
                    with Ledger.open(where) as mine:
                        b = mine.register("child-job", [W(tmp_path / "c")])
                        cw, got = watch(mine, "child-job", b.token)
                        os.write(wfd, b"ready")
                        ev = got.get(timeout=BOUND)
                        code = 0 if ev is not None and ev.data.get("forced") == "from the parent" else 2
                        cw.stop()
                finally:
                    os._exit(code)
            os.close(wfd)
            with os.fdopen(r, "rb") as said:
                assert said.read(5) == b"ready"
            led.release("child-job", force=True, reason="from the parent")
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            w.stop()
