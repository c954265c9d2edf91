"""``Ledger.watch_grant`` (a ``GrantWatch``): a holder learns that its grant ended (forced
release, reclaim, its line cut from the log) from the log's lines past the grant, woken by
the store's change notification, without folding the state.

Each test makes the backstop look (``FOLLOW_RECHECK_SECONDS``) far longer than any bound it
waits with, so that only the store's notification (inotify, LISTEN) can wake the watch in
time: a watch that only polled would fail the bounded wait."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import pytest

import scopeledger._grantwatch as grantwatch
from helpers import W
from scopeledger import Event, GrantWatch, Ledger

BOUND = 60.0  # seconds: a bound on a condition, never a measure of speed


@pytest.fixture(autouse=True)
def no_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grantwatch, "FOLLOW_RECHECK_SECONDS", 1e6)


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
    before = threading.active_count()
    with Ledger.open(tmp_path / "led", create=True) as led:
        for args, exc in [(("job", "1", print), TypeError), (("job", 1, None), TypeError),
                          (("job", 1, 42), TypeError), (("job", 0, print), ValueError),
                          (("a/../b", 1, print), Exception)]:
            with pytest.raises(exc):
                led.watch_grant(*args)  # type: ignore[arg-type]
    assert threading.active_count() == before


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
