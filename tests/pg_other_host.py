"""A holder on another "host", for tests/test_pg_liveness.py. Not a test module.

    unshare --mount python pg_other_host.py URL NAME PATH SESSION_TTL

Run in a mount namespace of its own, it bind-mounts a made-up machine id over
``/etc/machine-id`` (and ``/var/lib/dbus/machine-id``) and a made-up boot id
over ``/proc/sys/kernel/random/boot_id`` before scopeledger reads either: to
every ledger it is then another host (another machine and another running
kernel), whose processes a checker here cannot judge. It opens the
PostgreSQL ledger at URL with that session ttl, registers NAME on PATH
(write) and says so; then it obeys one command per line on stdin:

- ``check``: its own ``check(NAME, token)``, and its session's state;
- ``check-bg``: the same in a thread of its own, answered when it returns
  (with the error, if it raised), so that a check stuck on a cut link can
  be waited for;
- ``close``: ``Ledger.close()`` without releasing NAME;
- ``release``: releases NAME.

NAME ``-`` makes it a checker on the other host, with no holder of its own:
``reclaim`` answers what its ``Ledger.reclaim()`` reclaimed and kept.

EOF ends it (closing its ledger). When its session is lost, the callback
(``on_session_lost``) says so at once, with ``check(NAME, token)`` asked
right then. Every answer is a JSON line on stdout, times on
``time.monotonic()`` (the kernel's clock, the same in every mount
namespace). Exit 77: not permitted here (no root, no bind mounts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import orjson  # noqa: E402

_out = threading.Lock()


def say(**what: object) -> None:
    with _out:
        sys.stdout.write(orjson.dumps(what).decode() + "\n")
        sys.stdout.flush()


def _bind(text: str, target: str) -> str | None:
    """Bind-mount a file holding ``text`` over ``target``; the error when
    refused (``None`` when done, or when ``target`` does not exist)."""
    if not os.path.exists(target):
        return None
    fd, path = tempfile.mkstemp(prefix="fake-id-")
    os.write(fd, text.encode())
    os.close(fd)
    os.chmod(path, 0o444)
    r = subprocess.run(["mount", "--bind", path, target], capture_output=True)
    return None if r.returncode == 0 else r.stderr.decode().strip() or f"mount exited {r.returncode}"


def main() -> None:
    url, name, path, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    host, boot = uuid.uuid4().hex, str(uuid.uuid4())
    for text, target in ((host + "\n", "/etc/machine-id"), (host + "\n", "/var/lib/dbus/machine-id"),
                         (boot + "\n", "/proc/sys/kernel/random/boot_id")):
        err = _bind(text, target)
        if err is not None:
            say(event="not_permitted", why=f"cannot bind-mount over {target}: {err}")
            sys.exit(77)
    from scopeledger import Ledger, ScopeRule
    from scopeledger._process import boot_id, host_id

    assert (host_id(), boot_id()) == (host, boot)
    box: dict = {}

    def lost(error: BaseException) -> None:
        at = time.monotonic()
        led = box["led"]
        ok = led.check(name, box["token"])  # the holder's own view, right then (no IO for a lost session)
        s = box["session"]
        say(event="lost", at=at, check=ok, check_at=time.monotonic(), lost=s.lost, lost_at=s.lost_at,
            why=str(error))

    def check_bg() -> None:
        started = time.monotonic()
        try:
            ok: object = led.check(name, box["token"])
        except Exception as exc:  # noqa: BLE001 - reported
            ok = f"{type(exc).__name__}: {exc}"
        say(event="check_bg", ok=ok, started=started, at=time.monotonic())

    if name == "-":  # a checker on the other host: no holder of its own
        led = Ledger.open(url, session_ttl=ttl)
        say(event="ready", token=None, session=None, host=host, boot=boot, pid=os.getpid(), session_id=None)
        for raw in sys.stdin:
            if raw.strip() == "reclaim":
                report = led.reclaim()
                say(event="reclaim", reclaimed=[[r.name, r.reason] for r in report.reclaimed],
                    unknown=[[n, v.liveness.value] for n, v in report.unknown],
                    kept=sorted(a.name for a in led.holders()))
        led.close()
        return
    led = box["led"] = Ledger.open(url, session_ttl=ttl, on_session_lost=lost)
    alloc = led.register(name, [ScopeRule(path, "write")])
    box["token"] = alloc.token
    session = box["session"] = led._sessions._current
    say(event="ready", token=alloc.token, session=alloc.process.session, host=host, boot=boot,
        pid=os.getpid(), session_id=session.id)
    for raw in sys.stdin:
        cmd = raw.strip()
        if cmd == "check":
            ok = led.check(name, alloc.token)
            say(event="check", ok=ok, at=time.monotonic(), lost=session.lost, lost_at=session.lost_at,
                instance=session.instance)
        elif cmd == "check-bg":
            threading.Thread(target=check_bg, daemon=True).start()
        elif cmd == "close":
            led.close()
            say(event="closed")
        elif cmd == "release":
            led.release(name, alloc.token)
            say(event="released")
    led.close()


if __name__ == "__main__":
    main()
