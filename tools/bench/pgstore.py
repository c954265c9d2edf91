"""Figures for the PostgreSQL log store alone (scopeledger/_pgstore.py), not yet
the ledger on it: appends per second with 1, 4 and 16 processes, fairness,
side by side with the file store (scopeledger._store.Store: flock, read the
missed bytes, one write, with and without fdatasync), LISTEN/NOTIFY wake-up
latency, dead-client detection after SIGKILL, false reclaims across server
restarts (``pg_ctl restart -m immediate`` under live sessions).

    .venv/bin/python tools/bench/pgstore.py                 # a throwaway cluster (tests/pgserver.py)
    .venv/bin/python tools/bench/pgstore.py --url postgresql://...?schema=bench_x --seconds 5

One "append" = locked(seen) (lock + read of the missed lines, one round trip)
+ append of one ~300-byte line + COMMIT (second round trip, synchronous
commit); ``pg-try``: try_append (lock if free + insert if the log ends where
this process saw it + commit, one round trip), locked + append only when the
try was not appended (what ``Ledger`` does while it is the only writer).
Each process counts its appends over the same wall-clock window; fairness =
slowest process's count / fastest's. Latencies are per append (p50/p99), CPU
is the client processes' user+sys per append. The server's own CPU is not
counted. The machine is shared: read the ratios, not the absolute numbers,
and say so when quoting them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import threading
import time
import uuid

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))

from scopeledger._pgstore import PgStore  # noqa: E402

FORK = multiprocessing.get_context("fork")
PAD = "x" * 220


def _line(seq: int, ts: int | None = None) -> bytes:
    return orjson.dumps({"v": 2, "seq": seq, "ts": time.time_ns() if ts is None else ts,
                         "type": "registered", "pad": PAD})


def _entry(seq: int) -> tuple[int, bytes]:
    ts = time.time_ns()
    return ts, _line(seq, ts)


def _timed(start_at: float, stop_at: float, one) -> tuple[list[float], float]:
    """Call ``one()`` from ``start_at`` until ``stop_at`` (wall clock):
    the latency of each call (s), and the CPU time used (user + sys, s)."""
    lat: list[float] = []
    while time.time() < start_at:
        time.sleep(0.001)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    while time.time() < stop_at:
        t0 = time.perf_counter()
        one()
        lat.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return lat, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def _worker(url: str, start_at: float, stop_at: float, q) -> None:
    st = PgStore.open(url)
    seen = [st.head()]

    def one() -> None:
        with st.locked(seen[0], 60) as missed:
            first = seen[0] + len(missed) + 1
            st.append([_entry(first)], first)
        seen[0] = first
    result = _timed(start_at, stop_at, one)
    st.close()
    q.put(result)


def _try_worker(url: str, start_at: float, stop_at: float, q) -> None:
    """``pg-try``: what ``Ledger`` does on PostgreSQL while it is the only
    writer: ``try_append`` (one round trip), and ``locked`` + ``append`` only
    when the try was not appended."""
    st = PgStore.open(url)
    seen = [st.head()]

    def one() -> None:
        first = seen[0] + 1
        if not st.try_append([_entry(first)], first):
            with st.locked(seen[0], 60) as missed:
                first = seen[0] + len(missed) + 1
                st.append([_entry(first)], first)
        seen[0] = first
    result = _timed(start_at, stop_at, one)
    st.close()
    q.put(result)


def _file_worker(path: str, fsync: bool, start_at: float, stop_at: float, q) -> None:
    """The same append on the file store (scopeledger._store.Store): flock,
    read the bytes after what this process has seen, write one line
    (``fdatasync`` with ``fsync``), unlock."""
    from scopeledger._store import Store

    st = Store(path, create=False)
    pos = {"bytes": 0, "seq": 0}

    def one() -> None:
        with st.locked(60):
            size = st.size()
            missed = b"".join(st.read(pos["bytes"], size))
            pos["seq"] += missed.count(b"\n") + 1
            data = _line(pos["seq"]) + b"\n"
            st.append(data, size, fsync)
            pos["bytes"] = size + len(data)
    result = _timed(start_at, stop_at, one)
    st.close()
    q.put(result)


def appends(url: str, procs: int, seconds: float, backend: str = "pg") -> dict:
    """``backend``: ``pg`` (``url``), ``file`` or ``file-fsync`` (``url`` is
    then a ledger directory)."""
    q = FORK.Queue()
    start_at = time.time() + 1.0 + 0.05 * procs
    stop_at = start_at + seconds
    if backend in ("pg", "pg-try"):
        target = _worker if backend == "pg" else _try_worker
        ps = [FORK.Process(target=target, args=(url, start_at, stop_at, q)) for _ in range(procs)]
    else:
        ps = [FORK.Process(target=_file_worker, args=(url, backend == "file-fsync", start_at, stop_at, q))
              for _ in range(procs)]
    for p in ps:
        p.start()
    res = [q.get(timeout=seconds + 120) for _ in ps]
    for p in ps:
        p.join(60)
    counts = [len(lat) for lat, _ in res]
    lats = sorted(x for lat, _ in res for x in lat)
    total = sum(counts)
    return {
        "backend": backend, "procs": procs, "appends_per_s": total / seconds,
        "fairness": min(counts) / max(counts) if max(counts) else 0.0,
        "p50_ms": 1e3 * statistics.median(lats), "p99_ms": 1e3 * lats[int(0.99 * (len(lats) - 1))],
        "cpu_us_per_append": 1e6 * sum(c for _, c in res) / max(1, total),
    }


def wakeups(url: str, rounds: int) -> dict:
    writer, waiter = PgStore.open(url), PgStore.open(url)
    out: list[float] = []
    for _ in range(rounds):
        head = writer.head()
        got: list[float] = []
        ready = threading.Event()

        def wait(h: int = head, ready: threading.Event = ready, got: list[float] = got) -> None:
            # This round's head, event and list (a thread outliving its
            # join's timeout must not write into the next round's).
            ready.set()
            waiter.wait(h, 30)
            got.append(time.perf_counter())
        t = threading.Thread(target=wait)
        t.start()
        ready.wait(10)
        time.sleep(0.02)  # let the waiter go to sleep in notifies()
        with writer.locked(head, 30) as missed:
            first = head + len(missed) + 1
            t0 = time.perf_counter()
            writer.append([_entry(first)], first)
        t.join(60)
        out.append(got[0] - t0)  # from before the append was sent
    writer.close()
    waiter.close()
    out.sort()
    return {"rounds": rounds, "p50_ms": 1e3 * statistics.median(out), "p99_ms": 1e3 * out[int(0.99 * (len(out) - 1))]}


def _holder(url: str, conn) -> None:
    st = PgStore.open(url)
    s = st.open_session(600)
    conn.send(s.id)
    conn.recv()


def detection(url: str, rounds: int) -> dict:
    st = PgStore.open(url)
    out = []
    for _ in range(rounds):
        a, b = FORK.Pipe()
        p = FORK.Process(target=_holder, args=(url, b))
        p.start()
        sid = a.recv()
        t0 = time.perf_counter()
        os.kill(p.pid, signal.SIGKILL)
        while not st.dead_sessions([sid]):
            time.sleep(0.001)
        out.append(time.perf_counter() - t0)
        p.join(10)
    st.close()
    out.sort()
    return {"rounds": rounds, "median_ms": 1e3 * statistics.median(out), "max_ms": 1e3 * out[-1]}


def _idle_holder(url: str, conn) -> None:
    """A live client: a session (ttl 30 s), kept until told; reports how it ended."""
    st = PgStore.open(url)
    s = st.open_session(30.0)
    conn.send(s.id)
    conn.recv()
    conn.send(s.lost)
    s.close()


def restarts(url: str, cluster, n: int, clients: int) -> dict:
    """``clients`` live client processes with sessions; ``n`` times
    ``pg_ctl restart -m immediate``, each time waiting (at most 120 s) until
    every session has re-taken its lock on the new instance; a judge polls
    ``dead_sessions`` every 10 ms throughout. Every client stays alive, so
    any session judged dead is a false reclaim."""
    st = PgStore.open(url)
    pipes, procs = [], []
    for _ in range(clients):
        a, b = FORK.Pipe()
        p = FORK.Process(target=_idle_holder, args=(url, b))
        p.start()
        pipes.append(a)
        procs.append(p)
    ids = [a.recv() for a in pipes]
    judged: set[int] = set()
    stop = threading.Event()

    def judge() -> None:
        while not stop.is_set():
            try:
                judged.update(st.dead_sessions(ids))
            except Exception:
                pass  # the server is restarting
            time.sleep(0.01)
    t = threading.Thread(target=judge)
    t.start()
    back: list[float] = []
    for _ in range(n):
        cluster.restart("immediate")
        t0 = time.perf_counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                rows = {r[0] for r in cluster.psql_execute(
                    f"SELECT instance FROM {st.schema}.sessions WHERE id = ANY(%s)", ids)}
                if rows == {st.instance()}:
                    break
            except Exception:
                pass
            time.sleep(0.01)
        back.append(time.perf_counter() - t0)
    stop.set()
    t.join()
    lost = []
    for a in pipes:
        a.send("go")
        lost.append(a.recv())
    for p in procs:
        p.join(60)
    st.close()
    return {"restarts": n, "clients": clients, "false_reclaims": len(judged),
            "sessions_lost_by_their_clients": sum(x is not None for x in lost),
            "all_back_on_new_instance_s_max": max(back)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a PostgreSQL URL with ?schema= (default: a throwaway cluster)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--backends", nargs="+", default=["pg", "pg-try", "file", "file-fsync"],
                    choices=["pg", "pg-try", "file", "file-fsync"],
                    help="side by side, interleaved per process count (file: a ledger directory in /tmp)")
    ap.add_argument("--restarts", type=int, default=5,
                    help="pg_ctl restart -m immediate this many times under live sessions "
                         "(throwaway cluster only; 0: skip)")
    args = ap.parse_args()
    cluster = None
    url = args.url
    if url is None:
        import pgserver
        bindir, why = pgserver.find_binaries()
        if bindir is None:
            sys.exit(why)
        cluster = pgserver.Cluster(bindir).start()
        url = cluster.url("bench_" + uuid.uuid4().hex[:8])
    try:
        PgStore.open(url, create=True).close()
        import tempfile
        from scopeledger import Ledger

        for n in args.procs:
            for backend in args.backends:
                target = url
                if not backend.startswith("pg"):
                    target = tempfile.mkdtemp(prefix="slbench-", dir="/tmp")
                    Ledger.open(target).close()
                print(orjson.dumps({"appends": appends(target, n, args.seconds, backend)}).decode(), flush=True)
                if not backend.startswith("pg"):
                    import shutil
                    shutil.rmtree(target, ignore_errors=True)
        print(orjson.dumps({"wakeup": wakeups(url, args.rounds)}).decode(), flush=True)
        print(orjson.dumps({"dead_client_detection": detection(url, max(5, args.rounds // 5))}).decode(),
              flush=True)
        if cluster is not None and args.restarts:
            print(orjson.dumps({"server_restarts": restarts(url, cluster, args.restarts, 4)}).decode(),
                  flush=True)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
