"""AsyncLedger's switch interval (scopeledger/_async.py): lowered in the
worker thread while a call runs there, put back when the last call in
flight ends, a value the program sets meanwhile kept; a cancelled call
still grants nothing and puts it back once its thread ends. Each call is
held inside the worker (the ledger's clock, which the transaction reads,
blocks on an event), so every check is on a state, not on a timing."""

import asyncio
import sys
import threading
import time

import pytest

from scopeledger import AsyncLedger, Ledger
from scopeledger._async import SWITCH_INTERVAL

from helpers import W
from test_wait import BOUND


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, BOUND * 2))


class HeldClock:
    """A ledger clock that, once armed, records the switch interval each
    transaction sees and, if ``hold`` is set, blocks until released."""

    def __init__(self):
        self.seen = []
        self.armed = False
        self.entered = threading.Semaphore(0)
        self.go = threading.Semaphore(0)
        self.hold = False

    def __call__(self):
        if self.armed:
            self.seen.append(sys.getswitchinterval())
            if self.hold:
                self.entered.release()
                assert self.go.acquire(timeout=BOUND)
        return time.time_ns()


@pytest.fixture
def default_interval():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield sys.getswitchinterval()
    sys.setswitchinterval(before)


def test_lowered_while_a_call_runs_and_put_back_after(ledger_dir, tmp_path, default_interval):
    clock = HeldClock()

    async def main():
        led = Ledger.open(ledger_dir, clock=clock)
        async with AsyncLedger(led) as aled:
            clock.armed = True
            a = await aled.register("job", [W(str(tmp_path / "a"))])
            assert sys.getswitchinterval() == default_interval
            await aled.release("job", a.token)
            assert sys.getswitchinterval() == default_interval
            assert clock.seen and all(abs(s - SWITCH_INTERVAL) < 1e-6 for s in clock.seen)

    run(main())


def test_none_leaves_it_alone(ledger_dir, tmp_path, default_interval):
    clock = HeldClock()

    async def main():
        async with AsyncLedger(Ledger.open(ledger_dir, clock=clock), switch_interval=None) as aled:
            clock.armed = True
            a = await aled.register("job", [W(str(tmp_path / "a"))])
            await aled.release("job", a.token)
        assert clock.seen and all(s == default_interval for s in clock.seen)

    run(main())


def test_an_interval_already_lower_is_kept(ledger_dir, tmp_path, default_interval):
    sys.setswitchinterval(0.0001)
    low = sys.getswitchinterval()
    clock = HeldClock()

    async def main():
        async with AsyncLedger(Ledger.open(ledger_dir, clock=clock)) as aled:
            clock.armed = True
            a = await aled.register("job", [W(str(tmp_path / "a"))])
            await aled.release("job", a.token)
        assert clock.seen and all(s == low for s in clock.seen)
        assert sys.getswitchinterval() == low

    run(main())


def test_stays_lowered_until_the_last_call_in_flight_ends(tmp_path, default_interval):
    # two ledgers (a call held in one's transaction holds that ledger's lock), one process
    one, two = HeldClock(), HeldClock()

    async def main():
        async with AsyncLedger(Ledger.open(str(tmp_path / "l1"), clock=one)) as a1, \
                AsyncLedger(Ledger.open(str(tmp_path / "l2"), clock=two)) as a2:
            one.armed = one.hold = two.armed = two.hold = True
            first = asyncio.ensure_future(a1.register("one", [W(str(tmp_path / "one"))]))
            assert await asyncio.to_thread(one.entered.acquire, timeout=BOUND)
            second = asyncio.ensure_future(a2.register("two", [W(str(tmp_path / "two"))]))
            assert await asyncio.to_thread(two.entered.acquire, timeout=BOUND)
            one.hold = False
            one.go.release()
            await first
            assert abs(sys.getswitchinterval() - SWITCH_INTERVAL) < 1e-6  # the second is still in its thread
            two.hold = False
            two.go.release()
            await second
            assert sys.getswitchinterval() == default_interval
            await a1.release("one", first.result().token)
            await a2.release("two", second.result().token)

    run(main())


def test_a_value_the_program_sets_meanwhile_is_kept(ledger_dir, tmp_path, default_interval):
    clock = HeldClock()

    async def main():
        async with AsyncLedger(Ledger.open(ledger_dir, clock=clock)) as aled:
            clock.armed = clock.hold = True
            task = asyncio.ensure_future(aled.register("job", [W(str(tmp_path / "a"))]))
            assert await asyncio.to_thread(clock.entered.acquire, timeout=BOUND)
            sys.setswitchinterval(0.002)  # the program's own, while the call runs
            mine = sys.getswitchinterval()
            clock.hold = False
            clock.go.release()
            a = await task
            assert sys.getswitchinterval() == mine
            await aled.release("job", a.token)
            assert sys.getswitchinterval() == mine

    run(main())


def test_a_value_the_program_sets_while_calls_overlap_is_the_one_put_back(tmp_path, default_interval):
    one, two = HeldClock(), HeldClock()

    async def main():
        async with AsyncLedger(Ledger.open(str(tmp_path / "l1"), clock=one)) as a1, \
                AsyncLedger(Ledger.open(str(tmp_path / "l2"), clock=two)) as a2:
            one.armed = one.hold = two.armed = True
            first = asyncio.ensure_future(a1.register("one", [W(str(tmp_path / "one"))]))
            assert await asyncio.to_thread(one.entered.acquire, timeout=BOUND)
            sys.setswitchinterval(0.002)  # the program's own, while the first call runs
            mine = sys.getswitchinterval()
            b = await a2.register("two", [W(str(tmp_path / "two"))])  # lowers it again meanwhile
            assert abs(two.seen[-1] - SWITCH_INTERVAL) < 1e-6
            one.hold = False
            one.go.release()
            a = await first
            assert sys.getswitchinterval() == mine
            await a1.release("one", a.token)
            await a2.release("two", b.token)
            assert sys.getswitchinterval() == mine

    run(main())


def test_a_cancelled_call_grants_nothing_and_puts_it_back_when_its_thread_ends(ledger_dir, tmp_path,
                                                                                default_interval):
    clock = HeldClock()

    async def main():
        aled = AsyncLedger(Ledger.open(ledger_dir, clock=clock))
        clock.armed = clock.hold = True
        task = asyncio.ensure_future(aled.register("job", [W(str(tmp_path / "a"))]))
        assert await asyncio.to_thread(clock.entered.acquire, timeout=BOUND)
        task.cancel()
        await asyncio.sleep(0)  # the cancellation reaches the call; its thread is still held
        assert not task.done()  # it waits for its thread's outcome before it goes on
        assert abs(sys.getswitchinterval() - SWITCH_INTERVAL) < 1e-6
        clock.hold = False
        clock.go.release()
        with pytest.raises(asyncio.CancelledError):
            await task
        await aled.close()  # waits for the clean-up (a release, if it granted)
        assert sys.getswitchinterval() == default_interval
        with Ledger.open(ledger_dir) as led:
            assert [h.name for h in led.holders()] == []

    run(main())


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1.0, ValueError), (2, ValueError),
                                        (float("nan"), ValueError), ("0.001", TypeError), (True, TypeError)])
def test_a_bad_switch_interval_is_refused(ledger_dir, bad, error):
    with Ledger.open(ledger_dir) as led:
        with pytest.raises(error, match="switch_interval"):
            AsyncLedger(led, switch_interval=bad)

    async def main():
        with pytest.raises(error, match="switch_interval"):
            await AsyncLedger.open(ledger_dir, switch_interval=bad)

    run(main())
