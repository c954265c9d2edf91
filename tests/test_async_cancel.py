"""AsyncLedger cancellation (scopeledger/_async.py): prompt under a stalled
ledger lock (a real process holds the lock, stopped; on PostgreSQL another
session holds it in an open transaction), and a grant decided
just before the cancellation whose release fails (a full disk, a server
outage: injected at the ledger's release) is released later, the
cancellation going on meanwhile."""

import asyncio
import fcntl
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from urllib.parse import parse_qs, urlsplit

import pytest

from scopeledger import AsyncLedger, Ledger, LedgerIOError

from helpers import W
from test_wait import BOUND, events, grants, tickets


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, BOUND * 2))


def lock_holder(ledger_dir):
    """A process holding the ledger's lock (``flock`` on its log, as
    ``Store.acquire`` takes it), stopped (SIGSTOP) once it holds it."""
    code = textwrap.dedent("""
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.read()
    """)
    p = subprocess.Popen([sys.executable, "-c", code, os.path.join(ledger_dir, "events.jsonl")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "held\n"
    os.kill(p.pid, signal.SIGSTOP)
    return p


def lock_is_held(ledger_dir):
    fd = os.open(os.path.join(ledger_dir, "events.jsonl"), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.mark.parametrize("wait", [0, 30])
def test_a_timeout_takes_effect_while_the_lock_is_stalled_and_nothing_is_granted_after(
        ledger_dir, tmp_path, caplog, wait):
    """The fresh tester's F1: ``asyncio.timeout`` around a register whose
    thread waits for a lock held by a stopped process took effect only once
    the lock was free. Now it raises while the lock is still held; the
    thread, once it gets the lock, records nothing."""
    caplog.set_level(logging.INFO, logger="scopeledger")
    Ledger.open(ledger_dir).close()
    holder = lock_holder(ledger_dir)
    killed = threading.Event()

    def kill_holder():
        if not killed.is_set():
            killed.set()
            holder.kill()
            holder.wait()

    async def main():
        loop = asyncio.get_running_loop()
        safety = loop.call_later(BOUND, kill_holder)  # (before the fix the timeout waited for this)
        async with await AsyncLedger.open(ledger_dir) as aled:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await aled.register("late", [W(str(tmp_path / "src"))], wait=wait)
            held = not killed.is_set() and lock_is_held(ledger_dir)
            kill_holder()
            safety.cancel()
            assert held, "the timeout took effect only once the lock was free"
        # (close waited for the abandoned thread, which got the lock and recorded nothing)

    try:
        run(main())
    finally:
        kill_holder()
    led = Ledger.open(ledger_dir)
    assert grants(led, "late") == [] and led.holders() == []
    assert tickets(ledger_dir) == []  # (a waiter's ticket given back once its thread was done)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]



@pytest.mark.parametrize("wait", [0, 30])
def test_a_timeout_takes_effect_while_another_session_holds_the_pg_ledgers_lock(pg_cluster, pg_url, tmp_path,
                                                                                 caplog, wait):
    """The same on PostgreSQL, after the grant's speculative one-round-trip
    try (made while no other process appended lately), which found the lock
    taken and wrote nothing: another session holds the ledger's advisory
    lock in an open transaction (a client stopped in the middle of one);
    ``asyncio.timeout`` around a register took effect only once that
    session let go. Now it raises while the lock is still held, and nothing
    is granted once it lets go."""
    import psycopg

    caplog.set_level(logging.INFO, logger="scopeledger")
    schema = parse_qs(urlsplit(pg_url).query)["schema"][0]
    with Ledger.open(pg_url, create=True) as led:
        led.register("x", [W(tmp_path / "unrelated")])
    holder = psycopg.connect(pg_cluster.conninfo())
    oid = holder.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()[0]
    holder.execute("SELECT pg_advisory_xact_lock(%s, 0)", (oid,))  # (psycopg: in a transaction until rollback)
    let_go = threading.Timer(BOUND, holder.rollback)  # (before the fix the timeout waited for this)
    let_go.start()

    def lock_held():
        with psycopg.connect(pg_cluster.conninfo()) as other:
            return not other.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", (oid,)).fetchone()[0]

    async def main():
        async with await AsyncLedger.open(pg_url) as aled:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await aled.register("late", [W(tmp_path / "src")], wait=wait)
            held = let_go.is_alive() and await asyncio.to_thread(lock_held)
            let_go.cancel()
            holder.rollback()
            assert held, "the timeout took effect only once the lock was free"
        # (close waited for the abandoned thread, which got the lock and recorded nothing)

    try:
        run(main())
    finally:
        let_go.cancel()
        holder.close()
    with Ledger.open(pg_url) as led:
        assert [e.type for e in led.events()] == ["registered"] and [a.name for a in led.holders()] == ["x"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def failing_release(led, times):
    """``led.release`` raising ``LedgerIOError`` (as on a full disk) the
    first ``times`` calls (``None``: always); the calls made, a list."""
    real = led.release
    calls = []

    def release(*args, **kwargs):
        calls.append(args)
        if times is None or len(calls) <= times:
            raise LedgerIOError(os.path.join(led.path, "events.jsonl"), "append to the log",
                                OSError(28, "No space left on device"))
        return real(*args, **kwargs)

    led.release = release
    return calls


async def cancelled_after_the_grant(aled, name, rules):
    """A register cancelled just after its grant was recorded, before its
    thread returned; what the caller got."""
    led = aled.ledger
    loop = asyncio.get_running_loop()
    recorded = asyncio.Event()
    go_on = threading.Event()
    real = led._attempt

    def attempt(fn, written=None):
        out = real(fn, written)
        loop.call_soon_threadsafe(recorded.set)
        go_on.wait(BOUND)
        return out

    led._attempt = attempt
    task = asyncio.ensure_future(aled.register(name, rules))
    await asyncio.wait_for(recorded.wait(), BOUND)
    task.cancel()
    go_on.set()
    try:
        await task
    except BaseException as exc:  # noqa: BLE001
        return exc
    finally:
        led._attempt = real
    return None


def test_a_cancelled_grant_whose_release_fails_once_is_released_later_and_the_cancellation_goes_on(
        ledger_dir, tmp_path, caplog):
    """The fresh tester's F6: the release's error replaced the cancellation
    and the grant stayed live, bound to this live process."""
    caplog.set_level(logging.INFO, logger="scopeledger")

    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            calls = failing_release(aled.ledger, 1)
            got = await cancelled_after_the_grant(aled, "job", [W(str(tmp_path / "src"))])
            assert isinstance(got, asyncio.CancelledError), repr(got)
            assert len(calls) >= 1
        # (close waited for the release tried again)

    run(main())
    led = Ledger.open(ledger_dir)
    assert [e["type"] for e in events(led)] == ["registered", "released"]
    assert led.holders() == []
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'job'" in m and "token 1" in m for m in warned), warned


def test_a_cancelled_grant_that_cannot_be_released_is_named_in_an_error(ledger_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="scopeledger")

    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            failing_release(aled.ledger, None)
            got = await cancelled_after_the_grant(aled, "job", [W(str(tmp_path / "src"))])
            assert isinstance(got, asyncio.CancelledError), repr(got)
        # (close: one last try, then the error)

    run(main())
    led = Ledger.open(ledger_dir)
    assert [a.name for a in led.holders()] == ["job"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("'job'" in m and "token 1" in m and "not released" in m for m in errors), errors
