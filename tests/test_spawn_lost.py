"""spawn()'s child when its grant is taken away while it runs (``on_lost``,
``Spawned.lost``: as ``ledger run --on-lost``), a release that fails and is
tried again, and adopt() of a child that died while its supervisor was down.
Real children, real signals; no sleep decides a verdict."""

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from scopeledger import AsyncLedger, Ledger, LockTimeout, UnknownHolder

from helpers import W, wait_for
from test_wait import BOUND

LEDGER_CLI = os.path.join(os.path.dirname(sys.executable), "ledger")


def force_release(ledger_dir, name, reason):
    """An operator's ``ledger release NAME --force --reason ...``, another process."""
    subprocess.run([LEDGER_CLI, "--ledger", ledger_dir, "release", name, "--force", "--reason", reason],
                   check=True, capture_output=True, timeout=BOUND)


def test_a_forced_release_sends_the_child_sigterm_and_wait_says_the_loss(ledger, ledger_dir, tmp_path):
    # A fresh tester's finding: the child ran on after its grant was taken
    # (another holder granted its scope), and wait() returned 0 with no sign.
    sp = ledger.spawn("job", ["sleep", "600"], [W(str(tmp_path / "w"))])
    try:
        force_release(ledger_dir, "job", "operator takes it")
        assert sp.wait(timeout=BOUND) == -signal.SIGTERM  # (the default, as ledger run: term)
    finally:
        if sp.process.poll() is None:
            sp.process.kill()
            sp.process.wait()
    assert sp.stopped_for_loss
    assert sp.lost.startswith("force-released at seq ") and sp.lost.endswith("reason: operator takes it")
    assert sp.lost_event.type == "released" and sp.lost_event.data["forced"] == "operator takes it"
    assert sp.watch is None  # (stopped at the release)
    other = ledger.register("other", [W(str(tmp_path / "w"))])
    assert other.token > sp.allocation.token


def test_on_lost_warn_lets_the_child_run_and_a_callable_is_called(ledger, ledger_dir, tmp_path):
    seen = []
    warned = ledger.spawn("warned", ["sleep", "600"], [W(str(tmp_path / "a"))], on_lost="warn")
    called = ledger.spawn("called", ["sleep", "600"], [W(str(tmp_path / "b"))], on_lost=seen.append)
    try:
        force_release(ledger_dir, "warned", "r1")
        force_release(ledger_dir, "called", "r2")
        wait_for(lambda: warned.lost is not None and seen, BOUND, "both losses learnt")
        assert seen == [called] and called.lost.endswith("reason: r2") and warned.lost.endswith("reason: r1")
        assert warned.process.poll() is None and called.process.poll() is None  # both run on
        assert not warned.stopped_for_loss and not called.stopped_for_loss
    finally:
        for sp in (warned, called):
            sp.process.kill()
    assert warned.wait(timeout=BOUND) == -signal.SIGKILL and called.wait(timeout=BOUND) == -signal.SIGKILL
    assert warned.lost.endswith("reason: r1")


def test_on_lost_is_checked_before_anything_is_asked(ledger, tmp_path):
    async def coro(_s):
        pass

    for bad, error in (("kill", ValueError), (5, TypeError), (coro, TypeError)):
        with pytest.raises(error, match="on_lost"):
            ledger.spawn("job", ["true"], [W(str(tmp_path / "w"))], on_lost=bad)
    assert ledger.seq == 0


def test_a_normal_exit_is_no_loss_and_on_lost_none_still_learns_at_the_release(ledger, ledger_dir, tmp_path):
    sp = ledger.spawn("job", ["sh", "-c", "exit 3"], [W(str(tmp_path / "w"))])
    assert sp.wait(timeout=BOUND) == 3 and sp.lost is None and not sp.stopped_for_loss
    go = tmp_path / "go"
    quiet = ledger.spawn("quiet", ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.01; done"],
                         [W(str(tmp_path / "q"))], on_lost=None)
    assert quiet.watch is None
    force_release(ledger_dir, "quiet", "unwatched")
    go.touch()
    assert quiet.wait(timeout=BOUND) == 0  # not stopped: nobody watched
    assert quiet.lost.endswith("reason: unwatched") and not quiet.stopped_for_loss


SUPERVISOR = textwrap.dedent("""
    import json, sys
    from scopeledger import Ledger, ScopeRule
    led = Ledger.open(sys.argv[1])
    sp = led.spawn("job", ["sleep", "600"], [ScopeRule(sys.argv[2], "write")], ttl=1)
    print("spawned", sp.pid, flush=True)
    sys.stdin.readline()
    rc = sp.wait(timeout=60)
    print(json.dumps({"rc": rc, "lost": sp.lost, "stopped": sp.stopped_for_loss}), flush=True)
""")


def test_a_lapsed_lease_of_a_stopped_supervisor_stops_its_child_once_it_runs_again(ledger, ledger_dir, tmp_path):
    # A fresh tester's finding: spawn(ttl=1), the supervisor SIGSTOPped: its
    # lease was reclaimed and another holder granted the scope; continued,
    # its child ran on and wait() returned 0 (ledger run --ttl: SIGTERM, exit 6).
    scope = str(tmp_path / "w")
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR, ledger_dir, scope],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child = int(sup.stdout.readline().split()[1])
        os.kill(sup.pid, signal.SIGSTOP)
        other = ledger.register("other", [W(scope)], wait=BOUND)  # granted once the lease lapsed
        reclaim = [e for e in ledger.events() if e.type == "reclaimed"][-1]
        assert reclaim.data["name"] == "job" and reclaim.data["reason"] == "lease_expired"
        ledger.release("other", other.token)
        os.kill(sup.pid, signal.SIGCONT)
        sup.stdin.write("\n")
        sup.stdin.flush()
        out = json.loads(sup.stdout.readline())
        assert out["rc"] == -signal.SIGTERM and out["stopped"]
        assert out["lost"].startswith("reclaimed at seq ") and out["lost"].endswith(": lease_expired")
    finally:
        os.kill(sup.pid, signal.SIGCONT)
        sup.kill()
        sup.wait()
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass


def test_a_failed_release_raises_and_is_tried_again_with_the_exit_status(ledger_dir, tmp_path):
    # A fresh tester's finding (on PostgreSQL, an outage): wait() raised, and a
    # later release() did nothing, the grant left live (_released set first).
    with Ledger.open(ledger_dir, timeout=0.05) as led:
        sp = led.spawn("job", ["sh", "-c", "exit 4"], [W(str(tmp_path / "w"))])
        with open(os.path.join(ledger_dir, "events.jsonl"), "rb") as log:
            fcntl.flock(log, fcntl.LOCK_EX)  # (the ledger's lock, held by "another": always busy)
            try:
                with pytest.raises(LockTimeout):
                    sp.wait(timeout=BOUND)
                assert sp.returncode == 4 and sp.process.returncode == 4  # kept; the child reaped
                with pytest.raises(LockTimeout):
                    sp.release(note="again")
            finally:
                fcntl.flock(log, fcntl.LOCK_UN)
        assert led.check("job", sp.allocation.token)  # nothing recorded yet
        sp.release(note="at last")
        assert not led.check("job", sp.allocation.token)
        last = [e for e in led.events() if e.type == "released"][-1]
        assert last.data["exit_code"] == 4 and last.data["note"] == "at last"
        assert sp.lost is None
        assert sp.wait(timeout=0) == 4  # (done: at once)


def test_async_spawn_says_the_loss_and_stops_the_child(ledger_dir, tmp_path):
    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            seen = []
            sp = await aled.spawn("job", ["sleep", "600"], [W(str(tmp_path / "w"))])
            cb = await aled.spawn("cb", ["sleep", "600"], [W(str(tmp_path / "c"))], on_lost=seen.append)
            try:
                await asyncio.to_thread(force_release, ledger_dir, "job", "async op")
                await asyncio.to_thread(force_release, ledger_dir, "cb", "async cb")
                assert await sp.wait() == -signal.SIGTERM
                assert sp.lost.endswith("reason: async op") and sp.stopped_for_loss
                await asyncio.to_thread(wait_for, lambda: seen, BOUND, "the callback")
                assert seen == [cb] and cb.lost.endswith("reason: async cb")
            finally:
                for s in (sp, cb):
                    if s.process.poll() is None:
                        s.process.kill()
                await cb.wait()
    asyncio.run(asyncio.wait_for(main(), BOUND))


ADOPTEE = textwrap.dedent("""
    import json, sys
    from scopeledger import Ledger, ScopeRule
    led = Ledger.open(sys.argv[1])
    root = sys.argv[2]
    pod = led.register("pod", [ScopeRule(root, "write")])
    lone = led.register("lone", [ScopeRule(root + "-lone", "write")])
    long = led.spawn("pod/long", ["sleep", "600"], [ScopeRule(root + "/long", "write")], parent="pod")
    short = led.spawn("pod/short", ["sleep", "600"], [ScopeRule(root + "/short", "write")], parent="pod")
    top = led.spawn("top", ["sleep", "600"], [ScopeRule(root + "-top", "write")])
    print(json.dumps({"pod": pod.token, "lone": lone.token, "long": [long.allocation.token, long.pid],
                      "short": [short.allocation.token, short.pid], "top": [top.allocation.token, top.pid]}),
          flush=True)
    sys.stdin.read()
""")


def test_adopt_releases_a_dead_childs_grant_and_rebinds_only_the_old_supervisors(ledger, ledger_dir, tmp_path):
    # A fresh tester's finding: a child that died while its supervisor was down
    # was rebound to the adopter, and Adopted.wait() raised RuntimeError.
    root = str(tmp_path / "root")
    sup = subprocess.Popen([sys.executable, "-c", ADOPTEE, ledger_dir, root],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    saved = json.loads(sup.stdout.readline())
    pids = [saved[k][1] for k in ("long", "short", "top")]
    try:
        sup.kill()
        sup.wait()
        for k in ("short", "top"):  # they die while nobody supervises
            os.kill(saved[k][1], signal.SIGKILL)
        wait_for(lambda: all(not os.path.exists(f"/proc/{saved[k][1]}") or _zombie(saved[k][1])
                             for k in ("short", "top")), BOUND, "the children gone")
        pod = ledger.adopt("pod", saved["pod"])
        lone = ledger.adopt("lone", saved["lone"])  # the old supervisor's own, no children: kept
        long = ledger.adopt("pod/long", saved["long"][0])
        short = ledger.adopt("pod/short", saved["short"][0])
        top = ledger.adopt("top", saved["top"][0])
        assert pod.rebound and lone.rebound and not long.rebound
        for gone, name in ((short, "pod/short"), (top, "top")):
            assert gone.found_gone and not gone.rebound
            assert gone.wait(timeout=0) is None  # ended, exit status unknown: no RuntimeError
            rel = [e for e in ledger.events() if e.type == "released" and e.data["name"] == name]
            assert len(rel) == 1 and "exit status unknown" in rel[0].data["note"]
            gone.release()  # (nothing more)
        assert {a.name for a in ledger.holders()} == {"pod", "lone", "pod/long"}
        os.kill(saved["long"][1], signal.SIGKILL)
        assert long.wait(timeout=BOUND) is None
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_async_adopt_of_a_dead_child_returns_none_at_once(ledger, ledger_dir, tmp_path):
    child = subprocess.Popen(["true"])
    kept = ledger.register("kid", [W(str(tmp_path / "k"))], pid=child.pid)  # bound to it by another
    child.wait()

    async def main():
        async with await AsyncLedger.open(ledger_dir) as aled:
            ad = await aled.adopt("kid", kept.token)
            assert ad.found_gone and not ad.rebound
            assert await asyncio.wait_for(ad.wait(), BOUND) is None
    asyncio.run(main())
    assert not ledger.check("kid", kept.token)


def test_grant_ending_says_how_a_grant_ended_and_names_one_the_log_does_not_hold(ledger, tmp_path):
    a = ledger.register("job", [W(tmp_path / "j")])
    assert ledger.grant_ending("job", a.token) is None  # live
    ledger.release("job", token=a.token, note="done")
    ending = ledger.grant_ending("job", a.token)
    assert (ending.type, ending.data["name"], ending.data["note"]) == ("released", "job", "done")
    with pytest.raises(UnknownHolder, match="no grant of 'other' at seq 1"):
        ledger.grant_ending("other", a.token)
    with pytest.raises((TypeError, ValueError)):
        ledger.grant_ending("job", 0)
    assert asyncio.run(_async_ending(ledger.path, a.token)).seq == ending.seq


async def _async_ending(path, token):
    async with await AsyncLedger.open(path) as al:
        return await al.grant_ending("job", token)


def _pidfds():
    out = []
    for f in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{f}") == "anon_inode:[pidfd]":
                out.append(f)
        except OSError:
            pass  # (listdir's own descriptor, closed)
    return out


def test_a_child_released_without_wait_leaves_no_pidfd_open(ledger, tmp_path):
    # (a reviewer's finding: the pidfd kept for on_lost was closed only by wait())
    before = len(_pidfds())
    sp = ledger.spawn("job", ["sleep", "600"], [W(tmp_path / "j")], on_lost="warn")
    try:
        assert len(_pidfds()) == before + 1  # kept to signal the child while its grant is watched
        sp.release()
        assert len(_pidfds()) == before
    finally:
        sp.process.kill()
        sp.process.wait()
