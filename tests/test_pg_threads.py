"""One ``Ledger`` (and one ``AsyncLedger``) on PostgreSQL used by several
threads at once, as docs/threads-and-forks.md promises it may be.

Found by a tester: the store's connection lock (held across ``locked()``)
and the ledger's own lock (held by a query while it reads the log, and by a
change tried in one round trip while it appends) were taken in opposite
orders by two threads, which then waited for each other for ever, the
append lock held on the server all the while. Each scenario below hung
before the fix (the first within a second, every run). A thread that does
not finish within :data:`BOUND` is a hang: nothing here depends on speed.

The server part needs what ``tests/pgserver.py`` needs (skipped without
it, a failure with ``SCOPELEDGER_REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from typing import Callable

from scopeledger import AsyncLedger, Ledger, ScopeConflict, ScopeRule

BOUND = 120.0  # seconds: far more than any of these takes; a thread still running is stuck

ROUNDS = 300


def W(path: str) -> ScopeRule:
    return ScopeRule(path, "write")


def run_together(*bodies: Callable[[], None]) -> None:
    """Run each body in a thread of its own; every one must end (an error in
    one is raised here)."""
    errors: list[BaseException] = []

    def guarded(body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread
            errors.append(exc)
    threads = [threading.Thread(target=guarded, args=(b,), daemon=True) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    stuck = [b.__name__ for b, t in zip(bodies, threads, strict=True) if t.is_alive()]
    assert not stuck, f"still running after {BOUND:g} s (a deadlock): {stuck}"
    if errors:
        raise errors[0]


class opened:
    """``Ledger.open(url)`` for a ``with`` block that closes it only when
    the block ended without an error: after a deadlock, closing would wait
    for the stuck threads' lock for ever (the test's failure is the report)."""

    def __init__(self, url: str) -> None:
        self.led = Ledger.open(url)

    def __enter__(self) -> Ledger:
        return self.led

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.led.close()


def test_a_refused_change_and_queries_in_two_threads_both_finish(pg_url):
    with opened(pg_url) as led:
        led.register("H", [W("/x")])

        def refused() -> None:  # decided again under the lock: locked(), then the ledger's lock
            for _ in range(ROUNDS):
                try:
                    led.register("X", [W("/x/y")])
                except ScopeConflict:
                    pass

        def reader() -> None:  # the ledger's lock, then a read of the log
            for _ in range(ROUNDS):
                assert led.holder("H").name == "H"
                led.check("H", led.holder("H").token)

        run_together(refused, reader)


def test_changes_tried_in_one_round_trip_and_under_the_lock_in_two_threads_both_finish(pg_url):
    # One thread's pairs go the one-round-trip way (try_append, under the ledger's
    # lock); the other's refusals take locked() (the store's connection first).
    with opened(pg_url) as led:
        led.register("H", [W("/x")])

        def pairs(prefix: str) -> Callable[[], None]:
            def body() -> None:
                for i in range(ROUNDS):
                    a = led.register(f"{prefix}{i}", [W(f"/{prefix}/{i}")])
                    led.release(a.name, token=a.token)
            body.__name__ = f"pairs_{prefix}"
            return body

        def refused() -> None:
            for _ in range(ROUNDS):
                try:
                    led.register("X", [W("/x/y")])
                except ScopeConflict:
                    pass

        run_together(pairs("p"), refused, pairs("q"))
        assert [a.name for a in led.holders()] == ["H"]
        assert led.verify().ok


OTHER = textwrap.dedent("""
    import sys
    from scopeledger import Ledger, ScopeRule
    led = Ledger.open(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        a = led.register("busy", [ScopeRule("/busy", "write")])
        led.release("busy", token=a.token)
""")


def test_a_renewer_and_the_holder_s_own_checks_finish_while_another_process_appends(pg_url):
    # The README's pattern: keep_renewed in its thread, check() in the holder's.
    with opened(pg_url) as led:
        a = led.register("agent", [W("/agent")], ttl=30, lease_only=True)
        other = subprocess.Popen([sys.executable, "-c", OTHER, pg_url, str(ROUNDS)])
        try:
            def renewer() -> None:
                for _ in range(ROUNDS // 3):
                    led.renew("agent", a.token)

            def checks() -> None:
                for _ in range(ROUNDS):
                    assert led.check("agent", a.token)

            run_together(renewer, checks, checks)
        finally:
            assert other.wait(BOUND) == 0
        assert led.check("agent", a.token)


def test_eight_coroutines_waiting_on_one_async_ledger_are_all_granted(pg_url):
    async def main() -> list[str]:
        async with await AsyncLedger.open(pg_url) as aled:
            h = await aled.register("H", [W("/q")])
            got: list[str] = []

            async def waiter(i: int) -> None:
                g = await aled.register(f"w{i}", [W("/q/x")], wait=BOUND)
                got.append(g.name)
                await aled.release(g.name, token=g.token)

            tasks = [asyncio.create_task(waiter(i)) for i in range(8)]
            await asyncio.sleep(0)  # (let them start; the order is not what is tested)
            await aled.release("H", token=h.token)
            await asyncio.gather(*tasks)
            return got

    got = asyncio.run(asyncio.wait_for(main(), BOUND))
    assert sorted(got) == [f"w{i}" for i in range(8)]
