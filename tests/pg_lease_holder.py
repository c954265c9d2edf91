"""A leased holder in a process of its own, for tests/test_pg_lease.py. Not a test module.

    python pg_lease_holder.py URL NAME PATH TTL [other-host]

Opens the ledger at URL and registers NAME on PATH (write) with a lease of
TTL seconds, ``lease_only=True``, and says so (its token, the grant's seq,
and the deadline its own ``check`` counts to, on its boot-time clock). With
``other-host`` it first takes a made-up machine id and boot id (the ones
``scopeledger._process`` caches), so that its lines say another host and
boot: a checker here cannot compare its boot-time clock with theirs (what
``tests/test_lease.py`` does in-process). Its boot-time clock is the real
one plus an offset (0 at first) that ``skew`` moves.

Then it obeys one command per line on stdin, answering each with a JSON
line on stdout:

- ``check``: its own ``check(NAME, token)``;
- ``renew``: one ``renew(NAME, token)`` (the error's type and message if it
  raises);
- ``keep``: ``keep_renewed(NAME, token)`` from now on (every TTL/3);
- ``skew SECONDS``: its boot-time clock moves SECONDS ahead.

EOF ends it (closing its ledger without releasing NAME).
"""

from __future__ import annotations

import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import orjson  # noqa: E402


def say(**what: object) -> None:
    sys.stdout.write(orjson.dumps(what).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    url, name, path, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    other = sys.argv[5:] == ["other-host"]
    import scopeledger._process as proc

    if other:
        proc._host_id_cache[:] = [uuid.uuid4().hex]
        proc._boot_id_cache[:] = [str(uuid.uuid4())]
    from scopeledger import Ledger, ScopeRule

    offset = [0]

    def boottime() -> int | None:
        now = proc.boottime_ns()
        return None if now is None else now + offset[0]

    led = Ledger.open(url, boottime=boottime)
    alloc = led.register(name, [ScopeRule(path, "write")], ttl=ttl, lease_only=True)
    lease = alloc.lease
    assert lease is not None and lease.boot_ns is not None
    say(event="ready", token=alloc.token, seq=lease.renewed_seq, host=proc.host_id(), boot=proc.boot_id(),
        deadline_boottime=lease.boot_ns + lease.ttl_ns, pid=os.getpid())
    renewer = None
    for raw in sys.stdin:
        cmd = raw.split()
        if cmd == ["check"]:
            say(event="check", ok=led.check(name, alloc.token), boottime=boottime())
        elif cmd == ["renew"]:
            try:
                got = led.renew(name, alloc.token)
            except Exception as exc:  # noqa: BLE001 - reported
                say(event="renew", error=type(exc).__name__, why=str(exc))
            else:
                assert got.lease is not None
                say(event="renew", seq=got.lease.renewed_seq)
        elif cmd == ["keep"]:
            renewer = led.keep_renewed(name, alloc.token)
            say(event="keep")
        elif len(cmd) == 2 and cmd[0] == "skew":
            offset[0] += round(float(cmd[1]) * 1e9)
            say(event="skew", offset=offset[0])
    if renewer is not None:
        renewer.stop()
    led.close()


if __name__ == "__main__":
    main()
