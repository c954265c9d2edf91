"""Real PID reuse, run as pid 1 of a fresh PID namespace::

    unshare --pid --fork --mount-proc python -m tools.torture.pidns reuse DIR --rounds 20

Each round: start a child, register a holder bound to it, let it die (and
reap it), write ``pid - 1`` into ``/proc/sys/kernel/ns_last_pid`` and start
a stranger, which the kernel places on the same pid. Then the probe must
say ``pid_reused`` and ``reclaim_stale`` must reclaim the holder (with that
reason) while the stranger lives on; on the hot path a conflicting register
must win over the stale holder the same way.

``same-tick`` measures the limit of start-time identity: a pid reused
within the same clock tick (1/100 s) as the dead process's start cannot be
told apart (reported, not asserted).

``sweep DIR`` runs ``reclaim_stale`` from inside the namespace.

``hold DIR`` registers a holder bound to a live process inside the
namespace, prints ``READY <name>`` and waits for a line on stdin: the caller
outside the namespace probes it meanwhile (a pid from another namespace
names another process there).

The last stdout line is a JSON object. Exit 77: not permitted here.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import orjson

from . import procs

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def _env_check() -> dict[str, Any]:
    import psutil

    from scopeledger import identify
    from scopeledger._process import boot_id

    me = os.getpid()
    info = {"pid": me, "proc_self": int(os.readlink("/proc/self")),
            "psutil_pid": psutil.Process().pid, "boot_id": boot_id()}
    assert info["proc_self"] == me, f"/proc is not this namespace's ({info})"
    assert identify().ticks is not None
    assert len(info["boot_id"]) == 36, info
    return info


def _place_on(pid: int, spawn: Any, tries: int = 20) -> int:
    """Spawn with the kernel's next pid set to ``pid``."""
    for _ in range(tries):
        with open(NS_LAST_PID, "w") as f:
            f.write(str(pid - 1))
        new = spawn()
        if new == pid:
            return new
        os.kill(new, signal.SIGKILL)
        os.waitpid(new, 0)
    raise RuntimeError(f"could not place a process on pid {pid}")


def reuse(ledger_dir: str, rounds: int) -> dict[str, Any]:
    from scopeledger import Ledger, Liveness, ScopeRule, identify, probe

    env = _env_check()
    try:
        with open(NS_LAST_PID, "w") as f:
            f.write(str(os.getpid()))
    except OSError as exc:
        print(f"cannot write {NS_LAST_PID}: {exc}")
        sys.exit(77)
    led = Ledger.open(ledger_dir)
    fig = {"rounds": 0, "reused_pids": 0, "reclaimed_pid_reused": 0, "hot_path_pid_reused": 0,
           "zombie": 0, "gone": 0, "env": env}
    for i in range(rounds):
        victim = procs.fork_sleeper()
        time.sleep(0.03)  # more than a clock tick: the stranger starts in a later tick
        name = f"victim{i}"
        alloc = led.register(name, [ScopeRule(f"/ns/r{i}", "write")], pid=victim)
        ident = alloc.process
        assert ident == identify(victim)
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)
        stranger = _place_on(victim, procs.fork_sleeper)
        fig["reused_pids"] += 1
        assert stranger == ident.pid
        assert probe(ident) is Liveness.PID_REUSED, probe(ident)
        if i % 2 == 0:
            assert led.reclaim_stale() == [name]
            fig["reclaimed_pid_reused"] += 1
        else:
            # Hot path: a conflicting request reclaims the stale holder.
            led.register(f"next{i}", [ScopeRule(f"/ns/r{i}", "write")])
            fig["hot_path_pid_reused"] += 1
        (ev,) = [e for e in led.events(types=["reclaimed"]) if e.data["name"] == name]
        assert ev.data["reason"] == "pid_reused", ev.data
        os.kill(stranger, 0)  # the stranger lives on
        assert name not in {a.name for a in led.holders()}
        # Zombie and gone, inside the namespace too.
        z = procs.fork_sleeper()
        led.register(f"zombie{i}", [ScopeRule(f"/ns/z{i}", "write")], pid=z)
        os.kill(z, signal.SIGKILL)
        while probe(led.holder(f"zombie{i}").process) is not Liveness.ZOMBIE:
            time.sleep(0.001)
        assert led.reclaim_stale() == [f"zombie{i}"]
        fig["zombie"] += 1
        os.waitpid(z, 0)
        g = procs.fork_sleeper()
        led.register(f"gone{i}", [ScopeRule(f"/ns/g{i}", "write")], pid=g)
        os.kill(g, signal.SIGKILL)
        os.waitpid(g, 0)
        assert led.reclaim_stale() == [f"gone{i}"]
        fig["gone"] += 1
        os.kill(stranger, signal.SIGKILL)
        os.waitpid(stranger, 0)
        fig["rounds"] += 1
    reasons = {}
    for e in led.events(types=["reclaimed"]):
        reasons[e.data["reason"]] = reasons.get(e.data["reason"], 0) + 1
    fig["reasons"] = reasons
    rep = led.verify()
    assert rep.ok, str(rep)
    led.close()
    return fig


def same_tick(ledger_dir: str, rounds: int) -> dict[str, Any]:
    """How often a pid reused within one clock tick goes undetected."""
    from scopeledger import Ledger, Liveness, ScopeRule, probe

    _env_check()
    led = Ledger.open(ledger_dir)
    undetected = detected = 0
    for i in range(rounds):
        victim = procs.fork_sleeper()
        alloc = led.register(f"fast{i}", [ScopeRule(f"/fast/{i}", "write")], pid=victim)
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)
        stranger = _place_on(victim, procs.fork_sleeper)
        lv = probe(alloc.process)
        if lv is Liveness.ALIVE:
            undetected += 1
        else:
            detected += 1
        os.kill(stranger, signal.SIGKILL)
        os.waitpid(stranger, 0)
        led.release(f"fast{i}")
    led.close()
    return {"rounds": rounds, "detected": detected, "undetected_same_tick": undetected}


def hold(ledger_dir: str) -> dict[str, Any]:
    from scopeledger import Ledger, ScopeRule

    _env_check()
    led = Ledger.open(ledger_dir)
    alloc = led.register("inside", [ScopeRule("/ns/inside", "write")])
    print(f"READY {alloc.name} {alloc.pid}", flush=True)
    sys.stdin.readline()
    held = "inside" in {a.name for a in led.holders()}
    led.close()
    return {"pid": alloc.pid, "still_held": held}


def sweep(ledger_dir: str) -> dict[str, Any]:
    """``reclaim_stale`` from inside the namespace."""
    from scopeledger import Ledger

    _env_check()
    with Ledger.open(ledger_dir) as led:
        return {"reclaimed": led.reclaim_stale()}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tools.torture.pidns")
    ap.add_argument("what", choices=["reuse", "same-tick", "hold", "sweep"])
    ap.add_argument("dir")
    ap.add_argument("--rounds", type=int, default=10)
    ns = ap.parse_args(argv)
    if ns.what == "reuse":
        fig = reuse(ns.dir, ns.rounds)
    elif ns.what == "same-tick":
        fig = same_tick(ns.dir, ns.rounds)
    elif ns.what == "hold":
        fig = hold(ns.dir)
    else:
        fig = sweep(ns.dir)
    print(orjson.dumps(fig).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
