"""Ledger-level figures on PostgreSQL (issue 15's table): register+release
pairs per second through ``Ledger`` with 1, 4 and 16 client processes at
1,000 live holders, p50/p99 per pair, the client's and the server's CPU per
pair, fairness (slowest process ÷ fastest), side by side in one run with:

- ``pg``: ``Ledger.open("postgresql://...")`` (scopeledger/_pgstore.py);
- ``file``: ``Ledger.open(dir)``; ``file-fsync``: ``Ledger.open(dir, fsync=True)``
  (``fdatasync`` after every append);
- ``peer-psycopg``: the same appends without the ledger, plain psycopg: per
  event ``BEGIN; pg_advisory_xact_lock; SELECT`` the lines missed (one round
  trip, pipeline mode), then ``INSERT`` + ``COMMIT`` (one more), into a table
  of its own (seq, ts, line) without the ledger's triggers; two events per
  pair, lines as long as the ledger's;
- ``peer-es``: the ``eventsourcing`` library's ``PostgresApplicationRecorder``
  (when ``eventsourcing[postgres]`` is installed; skipped with a line saying
  so otherwise): one ``insert_events`` per event (its own serialisation:
  ``LOCK TABLE ... IN EXCLUSIVE MODE``, NOTIFY, INSERT, COMMIT in one pipeline),
  an aggregate per transient holder (version 1 registered, 2 released). It
  reads nothing back and decides nothing: the cost of a durable, ordered
  append alone.

    .venv/bin/python tools/bench/pgledger.py                 # a throwaway cluster (tests/pgserver.py)
    .venv/bin/python tools/bench/pgledger.py --quick         # keeps the harness working (~10 s)
    .venv/bin/python tools/bench/pgledger.py --url postgresql://...   # a server of yours (schemas bench_*)

Each (backend, processes) cell is measured in ``--rounds`` windows,
interleaved (round 1: 1 process on every backend, 4 on every backend, ...;
then round 2 ...), so a burst of outside load falls on every backend alike.
The live holders are prefilled once per backend (``--holders``, bound to this
process, which lives throughout; each reads the shared tree and writes its
own, so a pair's registration conflicts with none and no liveness is checked).
In a window every process starts at a barrier and does pairs of a fresh holder
name (``Ledger.register`` + ``Ledger.release``) until the window ends.

Figures: pairs/s (all processes), p50/p99 per pair (ms), client CPU per pair
(user + system of the client processes, µs), server CPU per pair (every
process of the throwaway cluster, from /proc; not with ``--url``), fairness
(per-process pair counts summed over the rounds, min ÷ max). The machine's
load is printed per window (load average, CPUs busy with others' work). The
machine is shared: read the ratios within one run, not the absolute numbers.

The issue's targets are printed with PASS/MISS: ``pg`` ≥ 0.3× ``file-fsync``
at 1 client, ``pg`` fairness ≥ 0.8 at 16. No timing is asserted; the exit
status is 0 either way (non-zero only when the harness fails).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from array import array
from typing import Any, Callable

import orjson
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
# Appended, not put first: the scopeledger measured is the one Python finds
# (PYTHONPATH=/a/clean/clone measures that commit), this checkout's otherwise.
sys.path.append(os.path.join(HERE, "..", ".."))
sys.path.append(os.path.join(HERE, "..", "..", "tests"))

import scopeledger  # noqa: E402
from scopeledger import Ledger, ScopeRule  # noqa: E402

FORK = multiprocessing.get_context("fork")
BACKENDS = ["pg", "file", "file-fsync", "peer-psycopg", "peer-es", "pg-base"]
#: A line as long as the ledger's registration lines here (~330 bytes).
PAD = "x" * 200


def holder_rules(i: int) -> list[ScopeRule]:
    return [ScopeRule(f"/bench/w{i}/src", "write", True), ScopeRule("/bench/shared", "read", True)]


def transient_rules(tag: str) -> list[ScopeRule]:
    return [ScopeRule(f"/bench/{tag}/src", "write", True), ScopeRule("/bench/shared", "read", True)]


def _line(seq: int, ts: int, kind: str, name: str) -> bytes:
    return orjson.dumps({"v": 2, "seq": seq, "ts": ts, "type": kind, "name": name, "pad": PAD})


def es_available() -> str | None:
    """``None`` when the eventsourcing peer can run, else why not."""
    try:
        import eventsourcing.postgres  # noqa: F401
    except ImportError as exc:
        return f"eventsourcing[postgres] is not installed ({exc}): pip install 'eventsourcing[postgres]'"
    return None


# -- what one process does ----------------------------------------------------------

class LedgerPairs:
    def __init__(self, target: str, fsync: bool = False) -> None:
        self.led = Ledger.open(target, fsync=fsync, create=False)
        #: On PostgreSQL (where the ledger has one): its one-round-trip tries,
        #: and how many were appended (the rest were decided again under the lock).
        self.tries = [0, 0]
        try_append = getattr(self.led, "_try_append", None)
        if try_append is not None:
            def counted(*a: Any) -> bool:
                got = try_append(*a)
                self.tries[0] += 1
                self.tries[1] += bool(got)
                return bool(got)
            self.led._try_append = counted

    def pair(self, name: str) -> None:
        self.led.register(name, transient_rules(name))
        self.led.release(name)

    def close(self) -> None:
        self.led.close()


class PsycopgPeer:
    """Plain psycopg, the store's protocol without the store: per event one
    round trip for BEGIN + the advisory lock + the lines missed, one for the
    INSERT + COMMIT (synchronous commit on, as the server's default)."""

    def __init__(self, conninfo: str, schema: str) -> None:
        import psycopg

        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute("SET synchronous_commit = on")
        self.schema = schema
        self.seen = self.conn.execute(f"SELECT coalesce(max(seq), 0) FROM {schema}.events").fetchone()[0]

    def append(self, kind: str, name: str) -> None:
        conn, s = self.conn, self.schema
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), 0)", (s,))
            cur = conn.cursor(binary=True).execute(f"SELECT seq, line FROM {s}.events WHERE seq > %s ORDER BY seq",
                                                   (self.seen,))
        missed = cur.fetchall()
        seq = self.seen + len(missed) + 1
        ts = time.time_ns()
        with conn.pipeline():
            conn.execute(f"INSERT INTO {s}.events (seq, ts, line) VALUES (%s, %s, %b)",
                         (seq, ts, _line(seq, ts, kind, name)))
            conn.execute("COMMIT")
        self.seen = seq

    def pair(self, name: str) -> None:
        self.append("registered", name)
        self.append("released", name)

    def close(self) -> None:
        self.conn.close()


class EsPeer:
    """The eventsourcing library's PostgreSQL application recorder: one
    ``insert_events`` per event, an aggregate per transient holder."""

    def __init__(self, params: dict[str, Any], schema: str) -> None:
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

        self.ds = PostgresDatastore(params["dbname"], params["host"], params["port"], params["user"],
                                    params.get("password") or "", schema=schema, pool_size=1)
        self.rec = PostgresApplicationRecorder(self.ds, events_table_name="events")

    def pair(self, name: str) -> None:
        from eventsourcing.persistence import StoredEvent

        agg = uuid.uuid4()
        ts = time.time_ns()
        self.rec.insert_events([StoredEvent(agg, 1, "registered", _line(0, ts, "registered", name))])
        self.rec.insert_events([StoredEvent(agg, 2, "released", _line(0, ts, "released", name))])

    def close(self) -> None:
        self.ds.close()


def make_pairer(kind: str, where: dict[str, Any]) -> Any:
    if kind == "pg":
        return LedgerPairs(where["pg"])
    if kind == "file":
        return LedgerPairs(where["file"])
    if kind == "file-fsync":
        return LedgerPairs(where["file-fsync"], fsync=True)
    if kind == "peer-psycopg":
        return PsycopgPeer(where["conninfo"], where["peer_schema"])
    if kind == "peer-es":
        return EsPeer(where["params"], where["es_schema"])
    raise ValueError(kind)


def _window(pair: Callable[[str], object], prefix: str, seconds: float) -> tuple[int, float, array, float]:
    """Call ``pair(prefix + str(j))`` for j = 0, 1, ... until ``seconds``
    have passed: ``(pairs made, elapsed seconds, each pair's latency in ns,
    CPU seconds this process used meanwhile)``."""
    lat, clock = array("q"), time.perf_counter_ns
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    start = clock()
    deadline, j = start + int(seconds * 1e9), 0
    while True:
        t0 = clock()
        if t0 >= deadline:
            break
        pair(f"{prefix}{j}")
        lat.append(clock() - t0)
        j += 1
    elapsed = (clock() - start) / 1e9
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return j, elapsed, lat, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def _worker(kind: str, where: dict[str, Any], idx: int, seconds: float, barrier: Any, q: Any,
            done: Any) -> None:
    try:
        p = make_pairer(kind, where)
        for j in range(2):  # warm-up, outside the window
            p.pair(f"p{idx}w{j}x{uuid.uuid4().hex[:6]}")
        tag = uuid.uuid4().hex[:6]
        barrier.wait()
        j, elapsed, lat, cpu = _window(p.pair, f"p{idx}{tag}x", seconds)
        q.put((idx, j, elapsed, lat.tobytes(), cpu, None, list(getattr(p, "tries", [0, 0]))))
        done.wait(300)  # the server's CPU is read while our backend lives
        p.close()
    except BaseException:  # noqa: BLE001 - reported to the parent
        q.put((idx, 0, 0.0, b"", 0.0, traceback.format_exc(), [0, 0]))


# -- the machine and the server ---------------------------------------------------

def _server_cpu(postmaster: int | None) -> float | None:
    """CPU seconds used so far by the cluster's processes (the postmaster and
    its children: backends, WAL writer, checkpointer...); ``None`` when not
    ours to see. A backend that exited during the window takes its CPU with it,
    so the workers open their connections before the window (their warm-up)
    and close them after it has been read."""
    if postmaster is None:
        return None
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(postmaster)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def _busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _subprocess_worker() -> None:
    """``pgledger.py --worker``: one client process of ``pg-base``, run by a
    Python whose ``PYTHONPATH`` finds the base checkout's scopeledger. Reads
    its orders (JSON) from stdin, says ``ready`` after its warm-up, starts at
    ``go``, prints its report (JSON), and closes its ledger at ``done``."""
    import base64

    orders = orjson.loads(sys.stdin.readline())
    try:
        p = make_pairer("pg", orders["where"])
        for j in range(2):
            p.pair(f"b{orders['idx']}w{j}x{uuid.uuid4().hex[:6]}")
    except BaseException:  # noqa: BLE001 - reported to the parent
        print(orjson.dumps({"error": traceback.format_exc()}).decode(), flush=True)
        return
    print("ready", flush=True)
    sys.stdin.readline()
    tag = uuid.uuid4().hex[:6]
    j, elapsed, lat, cpu = _window(p.pair, f"b{orders['idx']}{tag}x", orders["seconds"])
    print(orjson.dumps({"idx": orders["idx"], "count": j, "elapsed": elapsed, "cpu": cpu, "tries": p.tries,
                        "lat": base64.b64encode(lat.tobytes()).decode()}).decode(), flush=True)
    sys.stdin.readline()
    p.close()


def _base_reports(where: dict[str, Any], procs: int, seconds: float, start: Any) -> list[Any]:
    """The ``pg-base`` window's workers (subprocesses; see _subprocess_worker):
    ``start()`` is called once all are warm, just before they are let go;
    returns the reports as ``window`` has them, and a function ending them."""
    import base64
    import subprocess

    env = {**os.environ, "PYTHONPATH": where["base_path"]}
    orders = {**where, "pg": where["pg-base"]}
    ps = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], env=env, cwd="/",
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    try:
        for i, p in enumerate(ps):
            assert p.stdin is not None
            p.stdin.write(orjson.dumps({"where": orders, "idx": i, "seconds": seconds}).decode() + "\n")
            p.stdin.flush()
        for p in ps:
            assert p.stdout is not None
            said = p.stdout.readline()
            if said.strip() != "ready":
                raise RuntimeError(f"pg-base: a worker failed:\n{said}")
        start()
        for p in ps:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in ps:
            assert p.stdout is not None
            r = orjson.loads(p.stdout.readline())
            reports.append((r["idx"], r["count"], r["elapsed"], base64.b64decode(r["lat"]), r["cpu"], None,
                            r.get("tries", [0, 0])))
        return [reports, ps]
    except BaseException:
        for p in ps:
            p.kill()
        raise


def window(kind: str, where: dict[str, Any], procs: int, seconds: float,
           postmaster: int | None) -> dict[str, Any]:
    if kind == "pg-base":
        marks: list[Any] = []
        reports, ps = _base_reports(where, procs, seconds, lambda: marks.extend(
            (_busy(), _server_cpu(postmaster), os.getloadavg()[0], time.monotonic())))
        busy0, srv0, load0, t0 = marks
        busy1, srv1, wall = _busy(), _server_cpu(postmaster), time.monotonic() - t0
        for p in ps:
            p.stdin.write("done\n")
            p.stdin.close()
            p.wait(60)
        return _window_result(kind, procs, sorted(reports), busy0, busy1, srv0, srv1, load0, wall)
    barrier = FORK.Barrier(procs + 1)
    q = FORK.Queue()
    done = FORK.Event()
    ws = [FORK.Process(target=_worker, args=(kind, where, i, seconds, barrier, q, done)) for i in range(procs)]
    for w in ws:
        w.start()
    try:
        barrier.wait(timeout=300)
    except Exception:  # a worker failed before the barrier: its report says why
        pass
    busy0, srv0, load0, t0 = _busy(), _server_cpu(postmaster), os.getloadavg()[0], time.monotonic()
    reports = sorted(q.get(timeout=seconds + 300) for _ in ws)
    busy1, srv1, wall = _busy(), _server_cpu(postmaster), time.monotonic() - t0
    done.set()
    for w in ws:
        w.join(60)
    for r in reports:
        if r[5]:
            raise RuntimeError(f"{kind}: a worker failed:\n{r[5]}")
    return _window_result(kind, procs, reports, busy0, busy1, srv0, srv1, load0, wall)


def _window_result(kind: str, procs: int, reports: list[Any], busy0: float, busy1: float, srv0: float | None,
                   srv1: float | None, load0: float, wall: float) -> dict[str, Any]:
    lat = array("q")
    for r in reports:
        lat.frombytes(r[3])
    client = sum(r[4] for r in reports)
    tries = [sum(r[6][0] for r in reports), sum(r[6][1] for r in reports)]
    server = None if srv0 is None or srv1 is None else max(0.0, srv1 - srv0)
    return {
        "backend": kind, "procs": procs, "counts": [r[1] for r in reports],
        "seconds": max(r[2] for r in reports), "lat": lat, "client_cpu_s": client, "server_cpu_s": server,
        "tries": tries,
        "load": {"loadavg": round(load0, 2),
                 "others_cpus": round(max(0.0, (busy1 - busy0) - client - (server or 0.0)) / wall, 2)},
    }


def merge(ws: list[dict[str, Any]]) -> dict[str, Any]:
    counts = [sum(c) for c in zip(*(w["counts"] for w in ws), strict=True)]
    lat = sorted(x for w in ws for x in w["lat"])
    total, secs = sum(counts), sum(w["seconds"] for w in ws)
    server = None if any(w["server_cpu_s"] is None for w in ws) else sum(w["server_cpu_s"] for w in ws)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6 if lat else 0.0
    return {
        "backend": ws[0]["backend"], "procs": ws[0]["procs"], "pairs": total,
        "pairs_per_s": total / secs if secs else 0.0,
        "round_pairs_per_s": [round(sum(w["counts"]) / w["seconds"], 1) for w in ws],
        "fairness": min(counts) / max(counts) if max(counts) else 0.0,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99),
        "client_cpu_us_per_pair": 1e6 * sum(w["client_cpu_s"] for w in ws) / max(1, total),
        "server_cpu_us_per_pair": None if server is None else 1e6 * server / max(1, total),
        "others_cpus": [w["load"]["others_cpus"] for w in ws],
        # Changes (2 per pair) appended in one round trip, and tries not appended.
        "one_trip_share": sum(w["tries"][1] for w in ws) / max(1, 2 * total),
        "tries_missed": sum(w["tries"][0] - w["tries"][1] for w in ws),
        "loadavg": [w["load"]["loadavg"] for w in ws],
    }


# -- set-up ---------------------------------------------------------------------

def prefill(target: str, holders: int, fsync: bool = False) -> None:
    """``holders`` live holders bound to this process (which outlives the run)."""
    with Ledger.open(target, fsync=fsync) as led:
        for i in range(holders):
            led.register(f"h{i}", holder_rules(i), pid=os.getpid())


def setup_peers(conninfo: str, peer_schema: str, es_schema: str | None, params: dict[str, Any],
                holders: int) -> None:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {peer_schema}")
        conn.execute(f"CREATE TABLE {peer_schema}.events (seq bigint PRIMARY KEY, ts bigint NOT NULL,"
                     " line bytea NOT NULL)")
        ts = time.time_ns()
        rows = [(i + 1, ts, _line(i + 1, ts, "registered", f"h{i}")) for i in range(holders)]
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {peer_schema}.events VALUES (%s, %s, %b)", rows)
        if es_schema is not None:
            conn.execute(f"CREATE SCHEMA {es_schema}")
    if es_schema is not None:
        peer = EsPeer(params, es_schema)
        peer.rec.create_table()
        peer.close()


def _commit() -> str:
    """The commit of the measured scopeledger's checkout, ``+dirty`` with changes."""
    import subprocess

    where = os.path.dirname(os.path.dirname(os.path.abspath(scopeledger.__file__)))
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return (head + ("+dirty" if dirty else "")) if head else "not a git checkout"


def _trips(c: dict[str, Any]) -> str:
    """The share of changes appended in one round trip (and the tries that
    were not), for a ledger that tries; ``-`` otherwise."""
    if not c["one_trip_share"] and not c["tries_missed"]:
        return "-"
    return f"{100 * c['one_trip_share']:.0f} % ({c['tries_missed']} missed)"


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def table(cells: dict[tuple[str, int], dict[str, Any]], backends: list[str], procs: list[int]) -> str:
    out = ["| backend | procs | pairs/s | × file-fsync | fairness | p50 ms | p99 ms "
           "| client CPU µs/pair | server CPU µs/pair | one-trip changes | others' CPUs |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n in procs:
        ref = cells.get(("file-fsync", n))
        for b in backends:
            c = cells.get((b, n))
            if c is None:
                continue
            ratio = c["pairs_per_s"] / ref["pairs_per_s"] if ref and ref["pairs_per_s"] else None
            out.append(f"| {b} | {n} | {_fmt(c['pairs_per_s'])} | {_fmt(ratio, 2)} | {c['fairness']:.2f} "
                       f"| {c['p50_ms']:.2f} | {c['p99_ms']:.1f} | {_fmt(c['client_cpu_us_per_pair'])} "
                       f"| {_fmt(c['server_cpu_us_per_pair'])} "
                       f"| {_trips(c)} "
                       f"| {'-'.join(f'{x:.1f}' for x in (min(c['others_cpus']), max(c['others_cpus'])))} |")
    return "\n".join(out)


def targets(cells: dict[tuple[str, int], dict[str, Any]], procs: list[int]) -> list[str]:
    lines = []
    pg1, fs1 = cells.get(("pg", 1)), cells.get(("file-fsync", 1))
    if pg1 and fs1:
        r = pg1["pairs_per_s"] / fs1["pairs_per_s"]
        lines.append(f"target pg >= 0.3x file-fsync at 1 client: {r:.2f}x "
                     f"({pg1['pairs_per_s']:.0f} vs {fs1['pairs_per_s']:.0f} pairs/s) "
                     f"{'PASS' if r >= 0.3 else 'MISS'}")
    top = max(procs)
    pgn = cells.get(("pg", top))
    if pgn:
        verdict = ("PASS" if pgn["fairness"] >= 0.8 else "MISS") if top == 16 else "n/a (16 not run)"
        lines.append(f"target pg fairness >= 0.8 at 16 clients: {pgn['fairness']:.2f} at {top} {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a PostgreSQL URL without schema (schemas bench_* are made; "
                                  "default: a throwaway cluster)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: keeps the harness working, figures mean nothing")
    ap.add_argument("--seconds", type=float, help="per (backend, procs) cell, split over the rounds (default 6)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    ap.add_argument("--procs", type=int, nargs="+", help="client process counts (default 1 4 16)")
    ap.add_argument("--holders", type=int, help="live holders (default 1000)")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS)
    ap.add_argument("--json", help="write every cell here")
    ap.add_argument("--base", metavar="PATH",
                    help="also measure pg-base: the Ledger on PostgreSQL from the scopeledger at PATH "
                         "(a checkout, e.g. a clone of main), its clients run with PYTHONPATH=PATH: "
                         "before/after in one run")
    args = ap.parse_args(argv)
    seconds = args.seconds or (0.4 if args.quick else 6.0)
    rounds = args.rounds or (1 if args.quick else 3)
    procs = args.procs or ([1, 4] if args.quick else [1, 4, 16])
    holders = args.holders if args.holders is not None else (50 if args.quick else 1000)
    backends = [b for b in args.backends if b != "pg-base"]
    if args.base:
        backends.insert(backends.index("pg") + 1 if "pg" in backends else 0, "pg-base")
    if "peer-es" in backends and (why := es_available()):
        print(f"peer-es skipped: {why}", flush=True)
        backends.remove("peer-es")

    cluster = None
    base = args.url
    postmaster = None
    if base is None:
        import pgserver

        bindir, why = pgserver.find_binaries()
        if bindir is None:
            sys.exit(why)
        cluster = pgserver.Cluster(bindir).start()
        base = cluster.url()
        with open(os.path.join(cluster.data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
    import psycopg

    from scopeledger._pgstore import parse_url

    tag = uuid.uuid4().hex[:8]
    loc = parse_url(base)
    params = psycopg.conninfo.conninfo_to_dict(loc.conninfo)
    sep = "&" if "?" in base else "?"
    root = tempfile.mkdtemp(prefix="slpgledger-", dir="/tmp")
    where: dict[str, Any] = {
        "pg": f"{base}{sep}schema=bench_{tag}", "file": os.path.join(root, "file"),
        "file-fsync": os.path.join(root, "file-fsync"), "conninfo": loc.conninfo,
        "peer_schema": f"bench_peer_{tag}", "es_schema": f"bench_es_{tag}", "params": params,
        "pg-base": f"{base}{sep}schema=bench_base_{tag}", "base_path": os.path.abspath(args.base or "."),
    }
    t_start, load_start = time.monotonic(), os.getloadavg()
    try:
        print(f"scopeledger from {os.path.dirname(os.path.realpath(scopeledger.__file__))} ({_commit()})", flush=True)
        print(f"machine: {os.cpu_count()} CPUs, load average {load_start[0]:.2f} at the start; "
              f"{holders} live holders; {rounds} rounds of {seconds / rounds:g} s per cell", flush=True)
        if args.base:
            import subprocess

            said = subprocess.run([sys.executable, "-c", "import os, scopeledger; "
                                   "print(os.path.dirname(scopeledger.__file__))"], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": where["base_path"]}, cwd="/").stdout.strip()
            print(f"pg-base: scopeledger from {said}", flush=True)
        for b in backends:
            if b in ("pg", "file", "file-fsync", "pg-base"):
                t0 = time.monotonic()
                prefill(where[b], holders, fsync=b == "file-fsync")
                print(f"prefill {b}: {holders} holders in {time.monotonic() - t0:.1f} s", flush=True)
        if "peer-psycopg" in backends or "peer-es" in backends:
            setup_peers(loc.conninfo, where["peer_schema"], where["es_schema"] if "peer-es" in backends else None,
                        params, holders)
        got: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for rnd in range(rounds):
            for n in procs:
                for b in backends:
                    w = window(b, where, n, seconds / rounds, postmaster)
                    got.setdefault((b, n), []).append(w)
                    print(f"round {rnd + 1} {b:12s} procs={n:2d}: {sum(w['counts']) / w['seconds']:8.1f} pairs/s "
                          f"per process {w['counts']} load {w['load']}", flush=True)
        cells = {k: merge(v) for k, v in got.items()}
        load_end = os.getloadavg()
        print()
        print(f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end "
              f"({time.monotonic() - t_start:.0f} s); 'others' CPUs: CPUs busy with processes outside "
              "this run's clients and server, min-max over the rounds")
        print(table(cells, backends, procs))
        print()
        for line in targets(cells, procs):
            print(line)
        if args.json:
            with open(args.json, "wb") as f:
                f.write(orjson.dumps({"cells": list(cells.values()), "holders": holders, "rounds": rounds,
                                      "seconds": seconds, "loadavg_start": load_start[0],
                                      "loadavg_end": load_end[0]}, option=orjson.OPT_INDENT_2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if cluster is not None:
            cluster.stop()
        else:
            with contextlib.suppress(Exception), psycopg.connect(loc.conninfo, autocommit=True) as conn:
                for s in (f"bench_{tag}", f"bench_base_{tag}", where["peer_schema"], where["es_schema"]):
                    conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _subprocess_worker()
        sys.exit(0)
    sys.exit(main())
