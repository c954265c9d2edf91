"""A client "host" for tests/test_pg_multihost.py, run inside its own network,
mount and PID namespaces (its own /etc/machine-id), reaching the server over
TCP. Not a test module.

    python pg_multihost_client.py URL TTL STOPFILE

It opens a session, then loops, each time under the ledger's lock: fold the
lines it has not seen into ``slot -> holder session``; stop if its own
session is no longer valid; claim a free slot (``hold``); reclaim a slot whose
holder the server judges dead (``reclaimed`` + ``hold``, recording when it had
the judgement, ``time.monotonic()``: the kernel's clock, the same in every
namespace); or, holding slots, append ``work`` on them. Server restarts and
lost connections are retried. Everything it knows goes to stdout as JSON lines:
its session, every acknowledged line, how it ended (its session's ``lost`` and
``lost_at``). It stops when STOPFILE exists or its session is lost.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import orjson  # noqa: E402

from scopeledger import LockTimeout  # noqa: E402
from scopeledger._pgstore import InDoubt, PgStore, SessionLost, StoreUnavailable  # noqa: E402

SLOTS = ("s1", "s2")


def say(**what: object) -> None:
    sys.stdout.write(orjson.dumps(what).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks when it fails
    url, ttl, stopfile = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    host = open("/etc/machine-id", encoding="ascii").read().strip()
    st = PgStore.open(url)
    s = st.open_session(ttl, host=host, pid=os.getpid())
    say(event="session", id=s.id, host=host, pid=os.getpid(), pidns=os.readlink("/proc/self/ns/pid"),
        instance=s.instance)
    holders: dict[str, int] = {}
    seen = 0
    work = 0
    while not os.path.exists(stopfile):
        try:
            with st.locked(seen, 10) as missed:
                for q, raw in missed:
                    ev = orjson.loads(raw)
                    if ev["type"] == "hold":
                        holders[ev["slot"]] = ev["session"]
                    seen = q
                if not s.valid:
                    break
                first = seen + 1
                events: list[dict] = []
                judged = None
                others = {holders[k] for k in SLOTS if k in holders and holders[k] != s.id}
                dead = st.dead_sessions(sorted(others)) if others else {}
                if dead:
                    judged = time.monotonic()  # after the answer: when a grantor could act on it
                holding = any(holders.get(k) == s.id for k in SLOTS)
                for k in SLOTS:
                    h = holders.get(k)
                    if h is None and not holding:  # one free slot at most; reclaims take more
                        holding = True
                        events.append({"type": "hold", "slot": k, "session": s.id})
                    elif h in dead:
                        events.append({"type": "reclaimed", "slot": k, "session": h, "reason": dead[h],
                                       "judged_at": judged})
                        events.append({"type": "hold", "slot": k, "session": s.id})
                    elif h == s.id:
                        work += 1
                        events.append({"type": "work", "slot": k, "session": s.id, "n": work})
                if not events:
                    lines = []
                else:
                    ts = time.time_ns()
                    lines = [orjson.dumps({"v": 2, "seq": first + i, "ts": ts, "host": host, **e})
                             for i, e in enumerate(events)]
                    st.append([(ts, x) for x in lines], first)
            if lines:
                for i, ln in enumerate(lines):
                    say(event="ack", seq=first + i, line=ln.decode())
                # seen stays: the next lock reads these lines back and folds them
        except InDoubt as exc:
            say(event="in_doubt", seq=exc.first_seq)
            time.sleep(0.05)  # a back-off; the lines are read back under the next lock
        except (StoreUnavailable, LockTimeout) as exc:
            say(event="retry", why=str(exc)[-300:])
            time.sleep(0.05)  # a back-off while the server restarts or the link is cut
        time.sleep(0.02)  # pace: the other hosts get the lock too (fairness is not tested here)
    say(event="end", lost=s.lost, lost_at=s.lost_at, valid=s.valid, instance=s.instance)
    try:
        s.close()
    except SessionLost:
        pass
    st.close()


if __name__ == "__main__":
    main()
