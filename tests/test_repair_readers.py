"""A ledger object that had read the lines a repair cut goes on with the repaired log.

A fresh tester's finding 8: ``AsyncLedger.until_lost`` raised ``CorruptLedger`` ("the log
shrank ...") when ``ledger repair`` cut the grant's line, and the ``AsyncLedger`` (the
``Ledger`` underneath, as any ``Ledger`` object that had read past the cut) then failed every
call, ``check`` too, until opened again. Now the object finds the log no longer holding the
last line it folded, folds it again as it is now (as opening it again does), and
``until_lost`` says the grant is gone (``None``, as ``watch_grant`` says it). The repairs are
``ledger repair`` in a real process; every wait is on a condition, bounded by ``BOUND``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from helpers import W, ledger_cmd
from scopeledger import Ledger, verify
from scopeledger._filestore import FileStore
from test_wait import BOUND


def _damage(ledger_dir: str, n: int) -> None:
    """Line ``n``'s seq overwritten in place (as a disk might; the bytes around it stay
    where they were, so that a reader never sees the file half written): a repair cuts
    from line ``n``."""
    path = os.path.join(ledger_dir, "events.jsonl")
    with open(path, "r+b") as f:
        data = f.read()
        start = 0
        for _ in range(n - 1):
            start = data.index(b"\n", start) + 1
        at = data.index(b'"seq":%d,' % n, start)
        assert at < data.index(b"\n", start)
        f.seek(at + len(b'"seq":'))
        f.write(b"9")
        f.flush()


def _repair(ledger_dir: str) -> None:
    p = ledger_cmd(ledger_dir, "repair", subprocess_=True)
    assert p.returncode == 0, p.stderr
    assert "set aside in" in p.stdout, p.stdout


def test_a_ledger_that_read_past_a_cut_goes_on_with_the_repaired_log(ledger_dir: str, tmp_path: Any) -> None:
    with Ledger.open(ledger_dir) as led:
        for i in range(3):
            led.register(f"h{i}", [W(str(tmp_path / f"d{i}"))])
        me = led.register("me", [W(str(tmp_path / "me"))])
        _damage(ledger_dir, 2)
        _repair(ledger_dir)
        # The first call after the cut is a change: decided on the repaired log, its line
        # chained to the repair's (before: CorruptLedger, on this call and every later one).
        late = led.register("late", [W(str(tmp_path / "late"))])
        assert late.token > me.token
        assert not led.check("me", me.token)
        assert [a.name for a in led.holders()] == ["h0", "late"]
    assert verify(ledger_dir).ok


def test_a_ledger_waiting_for_the_log_to_grow_goes_on_across_a_cut(
        ledger_dir: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    asleep = threading.Event()
    store_wait = FileStore.wait

    def wait(self: FileStore, after: int, timeout: float | None = None) -> int:
        asleep.set()
        return store_wait(self, after, timeout)

    monkeypatch.setattr(FileStore, "wait", wait)
    got: list[Any] = []
    with Ledger.open(ledger_dir) as led:
        for i in range(4):
            led.register(f"h{i}", [W(str(tmp_path / f"d{i}"))])
        seq = led.seq

        def waiter() -> None:
            try:
                got.append(led.wait(seq, BOUND))
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                got.append(exc)

        t = threading.Thread(target=waiter)
        t.start()
        try:
            assert asleep.wait(BOUND)
            _damage(ledger_dir, 2)
            _repair(ledger_dir)
            with Ledger.open(ledger_dir) as other:
                late = other.register("late", [W(str(tmp_path / "late"))]).token
        finally:
            t.join(BOUND)
        assert not t.is_alive()
        assert isinstance(got[0], int) and got[0] >= late, got  # (before: CorruptLedger)
        assert [a.name for a in led.holders()] == ["h0", "late"]
    assert verify(ledger_dir).ok
