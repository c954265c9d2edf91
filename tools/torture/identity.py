"""Process identity at the edges, for real (issue 13 items 1, 3, 4).

``other-host DIR`` (run under ``unshare --mount``): bind-mounts a made-up
machine id over ``/etc/machine-id`` (and ``/var/lib/dbus/machine-id``) and
a made-up boot id over ``/proc/sys/kernel/random/boot_id``: to the ledger
this process is on another host. It registers a holder bound to itself,
prints ``READY <machine id>`` and waits for a line on stdin; the caller
(on the first "host") probes and reclaims meanwhile, and after it exits.

``clone DIR NAME --boot BOOT [--clock NS]`` (run under ``unshare
--mount``): another host cloned from this one's image: the same machine
id, a boot id of its own (BOOT, bind-mounted over
``/proc/sys/kernel/random/boot_id``), and, with ``--clock``, a clock that
reads NS (ns since the epoch) at every event. It registers NAME bound to
itself and prints ``READY <pid> <seq>``; then each line ``write`` on stdin
registers and releases NAME-w (``WROTE <seq>``); an empty line or EOF
ends it.

``whole-seconds DIR --rounds N`` (run as pid 1 of ``unshare --pid --fork
--mount-proc``): real PID reuse where the stranger starts a whole number of
seconds (to the clock tick) after the dead holder's process, which a
wall-clock identity could not tell from a clock step. Each round: a holder
bound to a child; the child dies; the stranger is started on the same pid
(``ns_last_pid``) at exactly 1, 2, ... seconds after the child's start tick
(a miss, the machine being busy, is retried at the next second); then the
probe must say ``pid_reused`` and ``reclaim_stale`` must reclaim it.

``verdicts DIR [--hidepid] [--nobody]``: prints every holder's verdict as
this process judges it (through a /proc mounted with ``hidepid=2``, or as
uid 65534).

``ns-hold DIR NAME`` (run as pid 1 of ``unshare --pid --fork
--mount-proc``): registers NAME bound to itself and NAME-child bound to a
child, prints ``READY <pidns>`` and waits for a line on stdin; then every
process of the namespace dies with it.

The last stdout line is a JSON object. Exit 77: not permitted here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import orjson

from . import procs
from .pidns import NS_LAST_PID, _place_on

FAKE_HOST = "0123456789abcdef0123456789abcdef"
FAKE_BOOT = "01234567-89ab-cdef-0123-456789abcdef"


def _bind(text: str, target: str) -> str | None:
    """Bind-mount a file holding ``text`` over ``target``; the error when
    that is refused (``None`` when done or ``target`` does not exist)."""
    if not os.path.exists(target):
        return None
    fd, path = tempfile.mkstemp(prefix="fake-id-")
    os.write(fd, text.encode())
    os.close(fd)
    os.chmod(path, 0o444)
    r = subprocess.run(["mount", "--bind", path, target], capture_output=True)
    return None if r.returncode == 0 else r.stderr.decode().strip() or f"mount exited {r.returncode}"


def other_host(ledger_dir: str) -> dict[str, Any]:
    for text, target in ((FAKE_HOST + "\n", "/etc/machine-id"),
                         (FAKE_HOST + "\n", "/var/lib/dbus/machine-id"),
                         (FAKE_BOOT + "\n", "/proc/sys/kernel/random/boot_id")):
        err = _bind(text, target)
        if err is not None:
            print(f"cannot bind-mount over {target}: {err}")
            sys.exit(77)
    from scopeledger import Ledger, ScopeRule

    with open("/etc/machine-id") as f, open("/proc/sys/kernel/random/boot_id") as g:
        assert (f.read().strip(), g.read().strip()) == (FAKE_HOST, FAKE_BOOT)
    with Ledger.open(ledger_dir) as led:
        alloc = led.register("remote", [ScopeRule("/hosts/remote", "write")])
        print(f"READY {FAKE_HOST} {alloc.pid}", flush=True)
        sys.stdin.readline()
        return {"pid": alloc.pid, "still_held": "remote" in {a.name for a in led.holders()}}


def _start_tick(pid: int) -> int:
    """Field 22 of /proc/PID/stat (read here, not through the library:
    the check must not trust the code under test)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rfind(b")") + 1:].split()[19])


def _boottime_tick() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // (1_000_000_000 // os.sysconf("SC_CLK_TCK"))


def clone(ledger_dir: str, name: str, boot: str, clock: int | None) -> dict[str, Any]:
    err = _bind(boot + "\n", "/proc/sys/kernel/random/boot_id")
    if err is not None:
        print(f"cannot bind-mount over /proc/sys/kernel/random/boot_id: {err}")
        sys.exit(77)
    from scopeledger import Ledger, ScopeRule

    with open("/proc/sys/kernel/random/boot_id") as g:
        assert g.read().strip() == boot
    with Ledger.open(ledger_dir, clock=None if clock is None else (lambda: clock)) as led:
        alloc = led.register(name, [ScopeRule(f"/hosts/{name}", "write")])
        print(f"READY {alloc.pid} {led.seq}", flush=True)
        while sys.stdin.readline().strip() == "write":
            led.register(f"{name}-w", [ScopeRule(f"/hosts/{name}-w", "write")])
            led.release(f"{name}-w")
            print(f"WROTE {led.seq}", flush=True)
        return {"pid": alloc.pid, "still_held": name in {a.name for a in led.holders()}}


def whole_seconds(ledger_dir: str, rounds: int) -> dict[str, Any]:
    from scopeledger import Ledger, Liveness, ScopeRule, probe

    if os.getpid() != 1 or os.readlink("/proc/self") != "1":
        print("must run as pid 1 of a new PID namespace with its own /proc")
        sys.exit(77)
    try:
        with open(NS_LAST_PID, "w") as f:
            f.write("1")
    except OSError as exc:
        print(f"cannot write {NS_LAST_PID}: {exc}")
        sys.exit(77)
    hz = os.sysconf("SC_CLK_TCK")
    led = Ledger.open(ledger_dir)
    fig: dict[str, Any] = {"rounds": 0, "offsets_seconds": [], "misses": 0, "reasons": {}}
    for i in range(rounds):
        victim = procs.fork_sleeper()
        name = f"victim{i}"
        alloc = led.register(name, [ScopeRule(f"/ws/r{i}", "write")], pid=victim)
        start = _start_tick(victim)
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)
        stranger = None
        for seconds in range(1, 40):
            target = start + seconds * hz
            if _boottime_tick() >= target:
                continue
            # Start the stranger just inside the target tick (1 ms in).
            deadline = target * (1_000_000_000 // hz) + 1_000_000
            time.sleep(max(0.0, (deadline - time.clock_gettime_ns(time.CLOCK_BOOTTIME)) / 1e9 - 0.02))
            while time.clock_gettime_ns(time.CLOCK_BOOTTIME) < deadline:
                pass
            candidate = _place_on(victim, procs.fork_sleeper)
            if _start_tick(candidate) == target:
                stranger = candidate
                fig["offsets_seconds"].append(seconds)
                break
            fig["misses"] += 1
            os.kill(candidate, signal.SIGKILL)
            os.waitpid(candidate, 0)
        assert stranger is not None, "could not start a stranger at a whole second in 40 tries"
        lv = probe(alloc.process)
        assert lv is Liveness.PID_REUSED, lv
        assert led.reclaim_stale() == [name]
        os.kill(stranger, signal.SIGKILL)
        os.waitpid(stranger, 0)
        fig["rounds"] += 1
    for e in led.events(types=["reclaimed"]):
        fig["reasons"][e.data["reason"]] = fig["reasons"].get(e.data["reason"], 0) + 1
    assert led.verify().ok
    led.close()
    return fig


def ns_hold(ledger_dir: str, name: str) -> dict[str, Any]:
    from scopeledger import Ledger, ScopeRule
    from scopeledger._process import pid_namespace

    child = procs.fork_sleeper()
    with Ledger.open(ledger_dir) as led:
        led.register(name, [ScopeRule(f"/pidns/{name}", "write")])
        led.delegate(name, f"{name}-child", [ScopeRule(f"/pidns/{name}/c", "write")], pid=child)
        print(f"READY {pid_namespace()}", flush=True)
        sys.stdin.readline()
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    return {"pidns": pid_namespace(), "pid": os.getpid(), "child": child}


def verdicts(ledger_dir: str, hidepid: bool, nobody: bool) -> dict[str, Any]:
    """``{holder: [liveness, why]}`` as this process judges them; with
    ``hidepid``, through a /proc mounted with ``hidepid=2`` (run it in a
    mount namespace of its own); with ``nobody``, as uid 65534."""
    # Import and read now what uid 65534 may not (the interpreter may live
    # where it cannot read, e.g. under /root).
    import encodings.ascii  # noqa: F401

    from scopeledger import Ledger, judge
    from scopeledger._process import boot_id, host_id, pid_namespace

    with Ledger.open(ledger_dir, readonly=True) as led:
        idents = {a.name: a.process for a in led.holders()}
    boot_id(), host_id(), pid_namespace()
    if hidepid:
        r = subprocess.run(["mount", "-t", "proc", "-o", "hidepid=2", "proc", "/proc"], capture_output=True)
        if r.returncode != 0:
            print(f"cannot mount /proc with hidepid=2: {r.stderr.decode().strip()}")
            sys.exit(77)
    if nobody:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    out: dict[str, Any] = {"_pidns": pid_namespace(), "_recorded": {n: i.pidns for n, i in idents.items()}}
    for name, ident in idents.items():
        v = judge(ident)
        out[name] = [v.liveness.value, v.why]
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tools.torture.identity")
    ap.add_argument("what", choices=["other-host", "clone", "whole-seconds", "ns-hold", "verdicts"])
    ap.add_argument("dir")
    ap.add_argument("name", nargs="?", default="gone")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidepid", action="store_true")
    ap.add_argument("--nobody", action="store_true")
    ap.add_argument("--boot", default=FAKE_BOOT)
    ap.add_argument("--clock", type=int)
    ns = ap.parse_args(argv)
    if ns.what == "other-host":
        fig = other_host(ns.dir)
    elif ns.what == "clone":
        fig = clone(ns.dir, ns.name, ns.boot, ns.clock)
    elif ns.what == "verdicts":
        fig = verdicts(ns.dir, ns.hidepid, ns.nobody)
    elif ns.what == "whole-seconds":
        fig = whole_seconds(ns.dir, ns.rounds)
    else:
        fig = ns_hold(ns.dir, ns.name)
    print(orjson.dumps(fig).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
