"""AsyncLedger.until_lost on PostgreSQL across a server outage: ridden out as
Ledger.watch_grant rides it out (a fresh tester's finding: it raised
StoreUnavailable, not in its Raises, while watch_grant noted the outage and
later reported the forced release). A real server, stopped and started."""

import asyncio
import logging

import scopeledger._async as async_mod
from scopeledger import AsyncLedger, Ledger

from helpers import W
from test_wait import BOUND


def test_until_lost_rides_out_a_server_outage_and_reports_the_later_forced_release(
        pg_cluster, pg_url, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="scopeledger")
    real_sleep = async_mod._sleep
    sleeps = []

    async def counted_sleep(*args, **kwargs):
        sleeps.append(1)
        return await real_sleep(*args, **kwargs)

    monkeypatch.setattr(async_mod, "_sleep", counted_sleep)
    led = Ledger.open(pg_url, create=True)  # the holder, open throughout (its session too)
    a = led.register("job", [W(tmp_path / "w")])

    def said(what):
        return [r.getMessage() for r in caplog.records if what in r.getMessage()]

    async def until(cond, task):
        for _ in range(int(BOUND / 0.02)):
            if cond() or task.done():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("not within the bound")

    async def main():
        async with await AsyncLedger.open(pg_url) as aled:
            task = asyncio.ensure_future(aled.until_lost("job", a.token))
            await until(lambda: sleeps, task)  # it looked once and sleeps: the grant is live
            await asyncio.to_thread(pg_cluster.stop_server)
            try:
                await until(lambda: said("could not read the log"), task)
                assert not task.done(), task.result() if not task.exception() else repr(task.exception())
            finally:
                await asyncio.to_thread(pg_cluster.start_server)
            with Ledger.open(pg_url) as other:
                await asyncio.to_thread(other.release, "job", force=True, reason="after the restart")
            ev = await asyncio.wait_for(task, BOUND)
            assert ev is not None and ev.type == "released" and ev.data["forced"] == "after the restart"
            assert len(said("could not read the log")) == 1
            assert len(said("can be read again")) == 1

    try:
        asyncio.run(asyncio.wait_for(main(), BOUND * 3))
    finally:
        led.close()
