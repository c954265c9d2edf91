"""Leases (issue 16): ``ttl=`` on a grant, ``renew``, the holder learning
first, reclaim as ``lease_expired``, the clock rules, and bad input.

Time is injected: ``Ledger.open(boottime=...)`` is the boot-time clock
leases are recorded and judged on, moved by hand here; no test sleeps to
let time pass or depends on the machine's speed. Processes are real where
the behaviour is about a process (a holder bound to a process and a lease).
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
import time

import orjson
import pytest

import scopeledger._process as proc_mod
from scopeledger import (AsyncLedger, InvalidLease, Lease, LeaseExpired, Ledger, Liveness, ScopeConflict,
                         ScopeRule, UnknownHolder, verify)
from scopeledger._identity import lease_grace_ns
from scopeledger._lease import check_ttl, judge_lease

S = 10**9


def W(path):
    return ScopeRule(path, "write")


class Boottime:
    """A boot-time clock moved by hand (ns)."""

    def __init__(self, start=1000 * S):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += round(seconds * S)


@pytest.fixture
def clock():
    return Boottime()


@pytest.fixture
def led(ledger_dir, clock):
    with Ledger.open(ledger_dir, boottime=clock) as opened:
        yield opened


def log_bytes(ledger_dir):
    with open(os.path.join(ledger_dir, "events.jsonl"), "rb") as f:
        return f.read()


def lines(ledger_dir):
    return [orjson.loads(x) for x in log_bytes(ledger_dir).splitlines()]


@pytest.fixture
def sleeper():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield p
    p.kill()
    p.wait()


# -- the grant and the log --------------------------------------------------------


def test_a_leased_grant_records_its_ttl_and_boot_clock_and_folds_the_same_from_the_log(ledger_dir, led, clock):
    a = led.register("agent", [W("/srv/a")], ttl=10, lease_only=True, note="reservation")
    b = led.register("worker", [W("/srv/b")], ttl=2.5)
    assert a.lease == Lease(10 * S, False, a.process.host, a.process.boot, 1000 * S, a.granted_ns, a.token)
    assert b.lease.process is True and b.lease.ttl_ns == 2_500_000_000
    first = lines(ledger_dir)[0]
    assert first["holder"]["ttl_ns"] == 10 * S and first["holder"]["lease_only"] is True
    assert first["boot_ns"] == 1000 * S
    assert "lease_only" not in lines(ledger_dir)[1]["holder"]
    clock.advance(3)
    r = led.renew("agent", a.token, ttl=20)
    assert r.lease.ttl_ns == 20 * S and r.lease.boot_ns == 1003 * S and r.lease.renewed_seq == 3
    assert lines(ledger_dir)[2] == {**lines(ledger_dir)[2], "type": "renewed", "name": "agent", "token": a.token,
                                    "ttl_ns": 20 * S, "boot_ns": 1003 * S}
    with Ledger.open(ledger_dir, boottime=clock) as again:  # folded from the log: the same values
        assert again.holder("agent") == r and again.holder("worker") == b
        again.snapshot()
    with Ledger.open(ledger_dir, boottime=clock) as again:  # and from the snapshot
        assert again.holder("agent") == r
    assert verify(ledger_dir).ok


def test_a_lease_is_expired_past_ttl_and_grace_and_reclaimed_as_lease_expired(ledger_dir, led, clock):
    a = led.register("agent", [W("/srv/a")], ttl=10, lease_only=True)
    clock.advance(6)
    renewed = led.renew("agent", a.token)
    grace = lease_grace_ns(10 * S) / S
    assert grace == 1
    clock.advance(10 + grace)  # exactly ttl + grace: not past it
    assert led.liveness()["agent"].liveness is Liveness.ALIVE
    assert led.reclaim().reclaimed == ()
    clock.now += 1
    v = led.liveness()["agent"]
    assert v.liveness is Liveness.LEASE_EXPIRED and "11.000 s since seq 2" in v.why, v
    assert led.reclaim(dry_run=True).reclaimed[0].last_seen_ns == renewed.lease.renewed_ns
    assert led.decide(None, [W("/srv/a")]).reclaimed[0].last_seen_ns == renewed.lease.renewed_ns
    report = led.reclaim()
    assert [(r.name, r.reason, r.last_seen_ns) for r in report.reclaimed] == [
        ("agent", "lease_expired", renewed.lease.renewed_ns)]
    ev = lines(ledger_dir)[-1]
    assert ev["type"] == "reclaimed" and ev["reason"] == "lease_expired"
    assert ev["last_seen"] == renewed.lease.renewed_ns  # last seen alive: its renewal; noticed: the event's ts
    assert ev["ts"] >= ev["last_seen"]


def test_the_holder_learns_first_its_check_is_false_at_ttl_before_anyone_may_reclaim(led, clock):
    a = led.register("agent", [W("/srv/a")], ttl=30, lease_only=True)
    clock.advance(30)
    assert led.check("agent", a.token)
    clock.now += 1  # past ttl by the holder's clock
    assert not led.check("agent", a.token)
    # ... and for grace (3 s at ttl 30 s) nobody else may take it
    assert led.liveness()["agent"].liveness is Liveness.ALIVE
    with pytest.raises(ScopeConflict):
        led.register("thief", [W("/srv/a/x")])
    clock.advance(3)
    assert led.holders()[0].name == "agent"
    clock.now += 1
    assert led.register("thief", [W("/srv/a/x")]).name == "thief"  # the grant reclaims it on its way
    assert [(e.type, e.data.get("reason")) for e in led.events()][-2:] == [("reclaimed", "lease_expired"),
                                                                            ("registered", None)]


def test_a_renewal_before_ttl_plus_grace_keeps_it_and_after_is_refused_with_its_reclaim(ledger_dir, led, clock):
    a = led.register("agent", [W("/srv/a")], ttl=10, lease_only=True)
    clock.advance(10.5)  # past ttl (the holder knew), within grace: nobody took it, it may renew
    assert not led.check("agent", a.token)
    led.renew("agent", a.token)
    assert led.check("agent", a.token)
    clock.advance(11.001)
    before = len(lines(ledger_dir))
    with pytest.raises(LeaseExpired, match=r"the lease of holder 'agent' has expired \(its lease was not renewed"):
        led.renew("agent", a.token)
    assert [e["type"] for e in lines(ledger_dir)[before:]] == ["reclaimed"]
    assert not led.check("agent", a.token) and led.holders() == []


def test_a_holder_bound_to_a_live_process_and_a_lease_dies_by_the_lease(ledger_dir, led, clock, sleeper):
    led.register("worker", [W("/srv/w")], pid=sleeper.pid, ttl=5)
    clock.advance(5 + 1)
    assert led.liveness()["worker"].liveness is Liveness.ALIVE
    clock.now += 1
    assert [r.reason for r in led.reclaim().reclaimed] == ["lease_expired"]


def test_a_holder_bound_to_a_process_and_a_lease_dies_with_its_process(ledger_dir, led, clock, sleeper):
    a = led.register("worker", [W("/srv/w")], pid=sleeper.pid, ttl=60)
    sleeper.kill()
    sleeper.wait()
    assert led.check("worker", a.token)  # the lease runs; the process is for the reclaim to judge
    assert [r.reason for r in led.reclaim().reclaimed] == ["process_gone"]


def test_a_lease_only_holder_outlives_its_process(led, clock, sleeper):
    a = led.register("agent", [W("/srv/a")], pid=sleeper.pid, ttl=60, lease_only=True)
    sleeper.kill()
    sleeper.wait()
    assert led.liveness()["agent"].liveness is Liveness.ALIVE
    assert led.reclaim().reclaimed == () and led.check("agent", a.token)


# -- the clock rules ------------------------------------------------------------------


def test_a_lease_from_another_host_or_boot_is_unknown_and_never_reclaimed(led, clock, monkeypatch):
    led.register("agent", [W("/srv/a")], ttl=1, lease_only=True)
    clock.advance(10**6)  # long past any ttl, on this boot's clock
    monkeypatch.setattr(proc_mod, "_boot_id_cache", ["22222222-2222-4222-8222-222222222222"])
    v = led.liveness()["agent"]
    assert v.liveness is Liveness.UNKNOWN and "under another boot" in v.why, v
    assert led.reclaim().reclaimed == ()
    with pytest.raises(ScopeConflict):
        led.register("thief", [W("/srv/a")])
    monkeypatch.setattr(proc_mod, "_boot_id_cache", [])
    monkeypatch.setattr(proc_mod, "_host_id_cache", ["f" * 32])
    v = led.liveness()["agent"]
    assert v.liveness is Liveness.UNKNOWN and "on another host" in v.why, v
    assert led.reclaim().reclaimed == ()


def test_a_lease_that_cannot_be_judged_still_dies_with_its_dead_process(led, clock, monkeypatch, sleeper):
    led.register("worker", [W("/srv/w")], pid=sleeper.pid, ttl=60)
    sleeper.kill()
    sleeper.wait()
    # Judged from "another host" with this boot id: the same running kernel for
    # the process judge (it proves the pid gone), a foreign clock for the lease.
    monkeypatch.setattr(proc_mod, "_host_id_cache", ["f" * 32])
    assert [r.reason for r in led.reclaim().reclaimed] == ["process_gone"]


def test_a_lease_whose_boot_clock_was_not_recorded_is_unknown(ledger_dir, clock):
    with Ledger.open(ledger_dir, boottime=lambda: None) as led:
        led.register("agent", [W("/srv/a")], ttl=1, lease_only=True)
        assert "boot_ns" not in lines(ledger_dir)[0]
        v = led.liveness()["agent"]
        assert v.liveness is Liveness.UNKNOWN and "recorded no boot-time clock" in v.why
    with Ledger.open(ledger_dir, boottime=clock) as led:
        assert led.liveness()["agent"].liveness is Liveness.UNKNOWN


def test_judge_lease_is_the_documented_rule():
    lease = Lease(20 * S, False, "h" * 32, "boot", 100 * S, 0, 7)
    g = max(S, 2 * S)
    assert judge_lease(lease, 100 * S + 20 * S + g, "h" * 32, "boot").liveness is Liveness.ALIVE
    assert judge_lease(lease, 100 * S + 20 * S + g + 1, "h" * 32, "boot").liveness is Liveness.LEASE_EXPIRED
    assert judge_lease(lease, 100 * S + 20 * S + 1, "h" * 32, "boot", grace=False).dead
    assert judge_lease(lease, 10**20, None, "boot").dead  # no host id here: the boot id decides
    assert judge_lease(lease, 10**20, "h" * 32, None).liveness is Liveness.UNKNOWN
    assert judge_lease(lease, None, "h" * 32, "boot").liveness is Liveness.UNKNOWN
    assert lease_grace_ns(S) == S and lease_grace_ns(100 * S) == 10 * S


# -- bad input ---------------------------------------------------------------------


BAD_TTLS = [0, -1, 0.0, -0.5, math.nan, math.inf, -math.inf, "10", b"1", None.__class__, True, [1], 10**10, 1e300]


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
def test_a_bad_ttl_is_refused_naming_it_and_records_nothing(ledger_dir, led, ttl):
    a = led.register("agent", [W("/srv/a")], ttl=5)
    before = log_bytes(ledger_dir)
    for call in (lambda: led.register("x", [W("/srv/x")], ttl=ttl),
                 lambda: led.delegate("agent", "x", [W("/srv/a/x")], ttl=ttl),
                 lambda: led.hold("x", [W("/srv/x")], ttl=ttl),
                 lambda: led.renew("agent", a.token, ttl=ttl)):
        with pytest.raises(InvalidLease, match="ttl must be") as info:
            call()
        assert repr(ttl)[:10] in str(info.value) or str(ttl)[:10] in str(info.value), info.value
        assert isinstance(info.value, ValueError)
    assert log_bytes(ledger_dir) == before


def test_renewing_an_unknown_holder_a_wrong_token_or_no_lease_records_nothing(ledger_dir, led):
    a = led.register("agent", [W("/srv/a")], ttl=5)
    plain = led.register("plain", [W("/srv/p")])
    before = log_bytes(ledger_dir)
    with pytest.raises(UnknownHolder, match="no live holder named 'ghost'"):
        led.renew("ghost", 1)
    with pytest.raises(UnknownHolder, match=rf"token {a.token}, not 999"):
        led.renew("agent", 999)
    with pytest.raises(InvalidLease, match="holder 'plain' has no lease"):
        led.renew("plain", plain.token)
    with pytest.raises(TypeError, match="token must be an int"):
        led.renew("agent", "1")
    with pytest.raises(InvalidLease, match="lease_only=True needs a ttl"):
        led.register("x", [W("/srv/x")], lease_only=True)
    assert log_bytes(ledger_dir) == before


def test_check_ttl_converts_seconds_to_nanoseconds():
    assert check_ttl(1) == S and check_ttl(0.5) == S // 2 and check_ttl(0.1) == S // 10
    # (below the least ttl, 0.1 s, refused: 1e-12 was taken as 1 ns, renewed every 1/3 ns)
    for tiny in (1e-12, 5e-324, 0.0999):
        with pytest.raises(InvalidLease, match="ttl must be from 0.1 to 1e\\+09 seconds"):
            check_ttl(tiny)
    assert check_ttl(10**9) == 10**18


def test_a_line_with_a_bad_lease_key_is_corrupt(ledger_dir, led):
    from scopeledger._events import FoldError, check_event

    led.register("agent", [W("/srv/a")], ttl=5)
    ev = lines(ledger_dir)[0]
    for holder, top, msg in [({"ttl_ns": 0}, {}, "holder.ttl_ns is 0"),
                             ({"ttl_ns": "5"}, {}, "holder.ttl_ns is '5'"),
                             ({"lease_only": False}, {}, "holder.lease_only is False"),
                             ({}, {"boot_ns": -1}, "boot_ns is -1")]:
        bad = dict(ev, holder={**ev["holder"], **holder}, **top)
        with pytest.raises(FoldError, match=msg):
            check_event(bad)
    no_lease = dict(ev, holder={k: v for k, v in ev["holder"].items() if k != "ttl_ns"})
    with pytest.raises(FoldError, match="boot_ns .* absent from a grant without a lease"):
        check_event(no_lease)


# -- renewing in the background -------------------------------------------------------


def test_keep_renewed_renews_every_third_of_the_ttl_and_reports_a_lost_grant(ledger_dir):
    with Ledger.open(ledger_dir) as led:  # the real clock: renewals come every 0.1 s
        a = led.register("agent", [W("/srv/a")], ttl=0.3, lease_only=True)
        lost = threading.Event()
        seen = []
        renewer = led.keep_renewed("agent", a.token, on_lost=lambda exc: (seen.append(exc), lost.set()))
        seq = a.token
        for _ in range(2):  # two renewals, whatever the machine's speed
            while True:
                seq = led.wait(seq, timeout=60)
                if led.holder("agent").lease.renewed_seq > a.token:
                    break
        assert renewer.running and renewer.renewals >= 1
        with Ledger.open(ledger_dir) as other:
            other.release("agent")
        assert lost.wait(60)
        assert isinstance(seen[0], UnknownHolder) and renewer.lost is seen[0]
        renewer.stop()
        assert not renewer.running


def test_async_keep_renewed_renews_on_the_loop_until_cancelled(ledger_dir):
    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            a = await aled.register("agent", [W("/srv/a")], ttl=0.3, lease_only=True)
            task = aled.keep_renewed("agent", a.token)
            seq = a.token
            while (await aled.holder("agent")).lease.renewed_seq <= a.token + 1:
                seq = await aled.wait(seq, timeout=60)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            renewed = await aled.renew("agent", a.token, ttl=5)
            assert renewed.lease.ttl_ns == 5 * S
            async with aled.hold("h", [W("/srv/h")], ttl=1) as held:
                assert held.lease.ttl_ns == S and await aled.check("h", held.token)

    asyncio.run(main())


def test_until_lost_returns_when_the_lease_lapses_by_the_holders_clock_with_nobody_writing(ledger_dir):
    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:  # the real clock; no renewer
            a = await aled.register("agent", [W("/srv/a")], ttl=0.2, lease_only=True)
            async with asyncio.timeout(60):
                assert await aled.until_lost("agent", a.token) is None
            assert not await aled.check("agent", a.token)
            return a

    a = asyncio.run(main())
    with Ledger.open(ledger_dir) as led:
        assert led.seq == a.token  # nobody wrote: the holder learnt it by its own clock


def _rechained(ledger_dir, events):
    from scopeledger._events import encode, line_hash

    prev, out = "0" * 32, []
    for ev in events:
        line = encode(dict(ev, prev=prev))
        out.append(line)
        prev = line_hash(line)
    with open(os.path.join(ledger_dir, "events.jsonl"), "wb") as f:
        f.write(b"".join(x + b"\n" for x in out))
    for name in os.listdir(os.path.join(ledger_dir, "snapshots")):
        os.unlink(os.path.join(ledger_dir, "snapshots", name))


@pytest.mark.parametrize("change, said", [
    (lambda ev: dict(ev, token=99), "renewal of 'plain' with token 99: its live grant has token 1"),
    (lambda ev: dict(ev, name="ghost"), "renewal of 'ghost', which is not live"),
    (lambda ev: dict(ev, token=2), "renewal of 'agent', which has no lease"),  # (agent: the second grant)
    (lambda ev: dict(ev, v=1), "event type 'renewed' is not in format version 1"),
], ids=["wrong-token", "not-live", "no-lease", "v1"])
def test_a_renewal_the_fold_cannot_apply_is_corrupt_naming_why(ledger_dir, change, said):
    from scopeledger import CorruptLedger

    with Ledger.open(ledger_dir) as led:
        a = led.register("plain", [W("/srv/p")], ttl=5)
        led.register("agent", [W("/srv/a")])
        led.renew("plain", a.token)
    evs = lines(ledger_dir)
    bad = change(evs[2])
    if said.startswith("renewal of 'agent'"):
        bad = dict(bad, name="agent")
    _rechained(ledger_dir, evs[:2] + [bad])
    with pytest.raises(CorruptLedger, match=said):
        Ledger.open(ledger_dir)
    assert not verify(ledger_dir).ok


def test_keep_renewed_follows_a_ttl_another_renewal_set(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        a = led.register("agent", [W("/srv/a")], ttl=0.3, lease_only=True)
        with led.keep_renewed("agent", a.token) as renewer:  # a beat of 0.1 s
            assert renewer.interval == pytest.approx(0.1)
            with Ledger.open(ledger_dir) as other:
                other.renew("agent", a.token, ttl=600)
            seq, deadline = led.seq, time.monotonic() + 60
            while renewer.interval != 200:  # its next renewal keeps ttl 600 s, and beats by it
                assert time.monotonic() < deadline, renewer
                seq = led.wait(seq, timeout=1)
            assert led.holder("agent").lease.ttl_ns == 600 * S and renewer.running
        assert not renewer.running


def test_a_waiter_behind_a_leased_holder_is_granted_once_the_lease_expires(ledger_dir, clock):
    with Ledger.open(ledger_dir, boottime=clock) as led:
        a = led.register("agent", [W("/srv/a")], ttl=5, lease_only=True)
        got = []
        waiter = threading.Thread(target=lambda: got.append(led.register("next", [W("/srv/a/x")], wait=60)))
        waiter.start()
        seq, deadline = led.seq, time.monotonic() + 60
        while not any(e.type == "refused" for e in led.events(since=a.token + 1)):  # it waits
            assert time.monotonic() < deadline
            seq = led.wait(seq, timeout=1)
        clock.advance(5 + 1 + 0.001)  # past ttl + grace: nobody writes; the waiter's own look finds it
        waiter.join(60)
        assert not waiter.is_alive() and got and got[0].name == "next"
        assert [(e.type, e.data.get("reason")) for e in led.events(since=a.token + 1)] == [
            ("refused", None), ("reclaimed", "lease_expired"), ("registered", None)]
