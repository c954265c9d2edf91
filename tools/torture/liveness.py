"""Liveness that cannot be read, and holders from another boot, for real.

``hidepid MODE DIR`` (run as pid 1 of ``unshare --pid --fork --mount-proc``):
a holder is bound to a live root process; /proc is remounted with
``hidepid=MODE``; then an unprivileged process (uid 65534) sweeps the
ledger and tries to take the holder's scope. With ``hidepid=1`` /proc/<pid>
cannot be read (access denied); with ``hidepid=2`` it is not even listed.
Either way the holder's liveness cannot be read: it must be kept.

``earlier-boot DIR PID`` (run under ``unshare --mount``): bind-mounts a
made-up boot id over /proc/sys/kernel/random/boot_id and registers a
holder bound to process PID (alive, outside). Outside, the holder must be
reclaimed as ``earlier_boot`` although its pid and start time match a
live process.

The last stdout line is a JSON object; exit 77 when not permitted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import orjson

NOBODY = 65534


def hidepid(mode: str, base: str) -> dict[str, Any]:
    # Import now what the child needs: the interpreter may live where uid
    # 65534 cannot read (e.g. under /root).
    import encodings.ascii  # noqa: F401
    import traceback

    import psutil

    from scopeledger import Ledger, Liveness, ScopeConflict, ScopeRule, identify, probe
    from scopeledger._process import boot_id, pid_namespace

    boot_id(), pid_namespace(), identify()
    victim = subprocess.Popen(["sleep", "60"])
    path = os.path.join(base, "ledger")
    os.makedirs(base, exist_ok=True)
    os.chown(base, NOBODY, NOBODY)
    # Register as the ledger's owner (nobody) while /proc is still readable.
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        with Ledger.open(path) as led:
            led.register("victim", [ScopeRule("/hp/victim", "write")], pid=victim.pid)
            ident = led.holder("victim").process
    finally:
        os.seteuid(0)
        os.setegid(0)
    assert ident.ticks is not None and probe(ident) is Liveness.ALIVE
    r = subprocess.run(["mount", "-o", f"remount,hidepid={mode}", "/proc"], capture_output=True)
    if r.returncode != 0:
        print(f"cannot remount /proc with hidepid={mode}: {r.stderr.decode().strip()}")
        sys.exit(77)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the unprivileged child
        code = 1
        try:
            os.close(rd)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                psutil.Process(victim.pid).create_time()
                seen = "readable"
            except psutil.AccessDenied:
                seen = "access_denied"
            except psutil.NoSuchProcess:
                seen = "not_listed"
            with Ledger.open(path) as led:
                lv = probe(led.holder("victim").process)
                swept = led.reclaim_stale()
                try:
                    led.register("thief", [ScopeRule("/hp/victim", "write")])
                    took = True
                except ScopeConflict:
                    took = False
                held = "victim" in {a.name for a in led.holders()}
                ok = led.verify().ok
            os.write(wr, orjson.dumps({"psutil": seen, "probe": lv.value, "swept": swept,
                                       "thief_granted": took, "still_held": held, "verify": ok}))
            code = 0
        except BaseException:
            os.write(wr, orjson.dumps({"error": traceback.format_exc()}))
        finally:
            os._exit(code)
    os.close(wr)
    data = b""
    while chunk := os.read(rd, 65536):
        data += chunk
    os.waitpid(pid, 0)
    victim.kill()
    victim.wait()
    return orjson.loads(data)


def earlier_boot(path: str, pid: int) -> dict[str, Any]:
    from scopeledger import Ledger, ScopeRule

    fake = tempfile.NamedTemporaryFile("w", suffix=".boot_id", delete=False)
    fake.write("00000000-1111-2222-3333-444444444444\n")
    fake.close()
    r = subprocess.run(["mount", "--bind", fake.name, "/proc/sys/kernel/random/boot_id"],
                       capture_output=True)
    if r.returncode != 0:
        print(f"cannot bind-mount a boot id: {r.stderr.decode().strip()}")
        sys.exit(77)
    # Stamped as an earlier boot's events were: before this boot began.
    then = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 3600 * 10**9
    try:
        with Ledger.open(path, clock=lambda: then) as led:
            alloc = led.register("before-reboot", [ScopeRule("/eb/r", "write")], pid=pid)
            return {"boot": alloc.process.boot, "pid": alloc.pid, "ticks": alloc.process.ticks}
    finally:
        os.unlink(fake.name)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[0] == "hidepid":
        fig = hidepid(args[1], args[2])
    elif args[0] == "earlier-boot":
        fig = earlier_boot(args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown command {args[0]!r}")
    print(orjson.dumps(fig).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
