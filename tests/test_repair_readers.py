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

import asyncio
import os
import shutil
import threading
from typing import Any

import pytest

import scopeledger._async as async_mod
from helpers import W, ledger_cmd
from scopeledger import AsyncLedger, Ledger, verify
from scopeledger._filestore import FileStore
from test_wait import BOUND, tickets, until


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


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, BOUND * 2))


def test_until_lost_learns_that_a_repair_cut_the_grant_and_the_async_ledger_goes_on(
        ledger_dir: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        waiting = asyncio.Event()  # until_lost sleeps on the loop until the log changes
        sleep = async_mod._sleep

        async def watched(*args: Any, **kwargs: Any) -> None:
            waiting.set()
            await sleep(*args, **kwargs)

        monkeypatch.setattr(async_mod, "_sleep", watched)
        me_dir = str(tmp_path / "me")
        async with await AsyncLedger.open(ledger_dir) as aled:
            for i in range(3):
                await aled.register(f"h{i}", [W(str(tmp_path / f"d{i}"))])
            me = await aled.register("me", [W(me_dir)])
            lost = asyncio.ensure_future(aled.until_lost("me", me.token))
            await asyncio.wait_for(waiting.wait(), BOUND)
            _damage(ledger_dir, 2)
            await asyncio.to_thread(_repair, ledger_dir)
            # The grant's line is gone: None, as watch_grant says it (before: CorruptLedger).
            assert await asyncio.wait_for(lost, BOUND) is None
            # The same object goes on with the repaired log (before: every call raised).
            assert not await aled.check("me", me.token)
            assert [a.name for a in await aled.holders()] == ["h0"]
            again = await aled.register("me", [W(me_dir)])
            assert again.token > me.token  # (a cut seq is never given again)
            assert [e.type async for e in aled.events(holder="h0")] == ["registered"]
            # A later grant of the same name ended since: the cut grant's end is still None,
            # not that grant's release.
            await aled.release("me", again.token)
            assert await aled.until_lost("me", me.token) is None
            assert (await aled.until_lost("me", again.token)).seq > again.token
        assert verify(ledger_dir).ok

    _run(main())


def test_an_async_waiter_whose_holder_in_the_way_is_cut_by_a_repair_is_granted(
        ledger_dir: str, tmp_path: Any) -> None:
    src = str(tmp_path / "src")

    async def main() -> None:
        async with await AsyncLedger.open(ledger_dir) as aled:
            await aled.register("h0", [W(str(tmp_path / "d0"))])
            builder = await aled.register("builder", [W(src)])
            await aled.register("h2", [W(str(tmp_path / "d2"))])
            job = asyncio.ensure_future(aled.register("job", [W(src)], wait=BOUND))
            await asyncio.to_thread(until, lambda: tickets(ledger_dir), "the waiter's ticket")
            _damage(ledger_dir, 2)  # (builder's line: cut, and what follows it)
            await asyncio.to_thread(_repair, ledger_dir)
            granted = await asyncio.wait_for(job, BOUND)  # (before: CorruptLedger)
            assert granted.token > builder.token + 1
            assert [a.name for a in await aled.holders()] == ["h0", "job"]
        assert verify(ledger_dir).ok

    _run(main())


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
        # (woken by the repair's lines or by late's: a seq of the repaired log; before: CorruptLedger)
        assert isinstance(got[0], int) and seq < got[0] <= late, got
        assert [a.name for a in led.holders()] == ["h0", "late"]
    assert verify(ledger_dir).ok


# -- never a line chained to a line a repair cut -----------------------------------------------------


def test_a_reader_that_learnt_the_repaired_log_leaves_no_object_on_the_cut_lines(
        ledger_dir: str, tmp_path: Any) -> None:
    # An object that folded 6 lines; a repair in another process cuts lines 3 to 6 and
    # keeps their seqs void. The object then reads the events (which reads the log as it
    # is now and learns where its lines end): before, the object took the log for one it
    # had read to its end, went on saying h2 to h5 held their grants (check true), and its
    # next grant chained to line 6 as it read it, no longer in the log (verify: hash chain
    # broken at line 7; found reading the round's change again).
    with Ledger.open(ledger_dir) as led:
        tokens = [led.register(f"h{i}", [W(f"/r/{i}")]).token for i in range(6)]
        log = os.path.join(ledger_dir, "events.jsonl")
        with open(log, "r+b") as f:  # line 3 edited in place (its length kept): cut from it, void to 6
            data = f.read()
            f.seek(data.index(b'"/r/2"'))
            f.write(b'"/R/2"')
        _repair(ledger_dir)
        types = [e.type for e in led.events()]
        assert types == ["registered", "registered", "repaired", "void", "void", "void"]
        assert [a.name for a in led.holders()] == ["h0", "h1"]
        assert not led.check("h3", tokens[3])
        assert led.register("next", [W(str(tmp_path / "next"))]).token == len(types) + 1
    assert verify(ledger_dir).ok


def _grow_to(ledger_dir: str, tmp_path: Any, size: int) -> None:
    """Grants appended by another object until the log is ``size`` bytes long exactly
    (the last one's note padded to fit; its line's length without the note measured on
    a copy of the ledger)."""
    log = os.path.join(ledger_dir, "events.jsonl")
    copy = str(tmp_path / "copy")
    shutil.copytree(ledger_dir, copy)
    with Ledger.open(copy) as other:
        before = os.path.getsize(os.path.join(copy, "events.jsonl"))
        other.register("last", [W(str(tmp_path / "last"))], note="x")
        per = os.path.getsize(os.path.join(copy, "events.jsonl")) - before - 1  # (less the note's byte)
    shutil.rmtree(copy)
    with Ledger.open(ledger_dir) as other:
        i = 0
        while size - os.path.getsize(log) > per + 2000:
            other.register(f"g{i}", [W(str(tmp_path / f"g{i}"))])
            i += 1
        left = size - os.path.getsize(log)
        assert left > per, (size, left, per)
        other.register("last", [W(str(tmp_path / "last"))], note="x" * (left - per))
    assert os.path.getsize(log) == size


def test_a_log_cut_and_grown_back_to_the_same_size_is_not_taken_for_the_one_read(
        ledger_dir: str, tmp_path: Any) -> None:
    # An object that folded the log to its end (S bytes); a repair cuts it and another
    # object appends until it is S bytes again. Before, the first object's next change
    # took the log for unchanged (it ends where the line it read last ended) and chained
    # its line to that line, no longer in the log (verify: hash chain broken); now that
    # line is read again with the end of the log, and compared.
    log = os.path.join(ledger_dir, "events.jsonl")
    with Ledger.open(ledger_dir) as led:
        for i in range(12):
            led.register(f"h{i}", [W(str(tmp_path / f"d{i}"))])
        size, seq = os.path.getsize(log), led.seq
        _damage(ledger_dir, 3)
        _repair(ledger_dir)
        _grow_to(ledger_dir, tmp_path, size)
        grant = led.register("mine", [W(str(tmp_path / "mine"))])
        assert grant.token > seq
        assert [a.name for a in led.holders()][:2] == ["h0", "h1"] and "h5" not in {a.name for a in led.holders()}
    assert verify(ledger_dir).ok


def test_a_change_whose_lines_folded_while_it_waited_are_cut_is_decided_again(
        ledger_dir: str, tmp_path: Any) -> None:
    # A register waits for the lock (held here) and folds, meanwhile, lines another
    # object appended; a repair cuts those lines before the lock is let go. Before, the
    # register raised CorruptLedger ('line 6 does not chain to line 5 ... run ledger
    # repair', or 'cut ... while this process waited'), the log sound (a fresh tester's
    # finding); now it folds the repaired log again and is granted past the cut seqs.
    import fcntl
    from test_wait import until as until_
    log = os.path.join(ledger_dir, "events.jsonl")
    x = Ledger.open(ledger_dir)
    try:
        for i in range(3):
            x.register(f"h{i}", [W(str(tmp_path / f"h{i}"))])
        with Ledger.open(ledger_dir) as y:
            for i in (3, 4):
                y.register(f"h{i}", [W(str(tmp_path / f"h{i}"))])
        # The repaired log, made on a copy: line 4 damaged, cut, seqs 4 and 5 kept void.
        copy = str(tmp_path / "copy")
        shutil.copytree(ledger_dir, copy)
        _damage(copy, 4)
        _repair(copy)
        repaired = open(os.path.join(copy, "events.jsonl"), "rb").read()
        fd = os.open(log, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's lock, as the store takes it
        got: list[Any] = []

        def change() -> None:
            try:
                got.append(x.register("me", [W(str(tmp_path / "me"))]).token)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                got.append(exc)

        t = threading.Thread(target=change)
        t.start()
        try:
            # (its state peeked at, not asked for: asking would fold them here, before the change began)
            until_(lambda: getattr(x._state, "seq", 0) == 5, "the waiting change folding lines 4 and 5")
            os.ftruncate(fd, 0)  # "the repair", under the lock: the log as the copy's repair left it
            os.pwrite(fd, repaired, 0)
            shutil.copytree(os.path.join(copy, "cut"), os.path.join(ledger_dir, "cut"))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            t.join(BOUND)
        assert not t.is_alive()
        assert isinstance(got[0], int) and got[0] > 5, got
        assert [a.name for a in x.holders()] == ["h0", "h1", "h2", "me"]
    finally:
        x.close()
    assert verify(ledger_dir).ok
