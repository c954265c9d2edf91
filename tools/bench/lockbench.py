"""Compare inter-process exclusive locks for a "lock; append one line; unlock" ledger.

Usage::

    python tools/bench/lockbench.py --procs 4 --seconds 3 --json out.json

Methods (each process opens its own file descriptors after starting):

- ``fasteners``: ``fasteners.InterProcessLock(path).acquire()`` / ``.release()``.
  fasteners 0.19/0.20 polls ``fcntl.lockf(LOCK_EX|LOCK_NB)`` and between failed attempts
  sleeps ``attempts * delay`` capped at ``max_delay`` (defaults 10 ms and 100 ms); every
  ``acquire`` also calls ``os.makedirs`` on the lock's directory and opens the lock file,
  every ``release`` closes it. It locks a separate ``bench.lock`` file.
- ``flock``: blocking ``fcntl.flock(fd, LOCK_EX)`` / ``LOCK_UN`` on the data file's fd.
- ``flock-nb``: ``fcntl.flock(fd, LOCK_EX | LOCK_NB)`` retried after a fixed short
  sleep (``--poll-us``) until it succeeds, on the data file's fd.

Contended run: ``--procs`` processes start together (a barrier) and for ``--seconds``
repeat: acquire; ``os.write`` one line (``--line-bytes``, default 300) to a shared
``O_APPEND`` file; release. Reported per method: aggregate ops/s (all processes' ops over
the longest process's run time), per-process op counts and their min/max ratio (1.0 =
fair, near 0 = starvation), and the wait to acquire (p50/p99/max, ms) over every
acquisition. After each run the file is checked: one whole line per reported op.

Uncontended: one process repeats acquire+release (no write) for
``--uncontended-seconds``; reported as ops/s.

Output: a rich table on stdout and, with ``--json``, the full results.
"""

from __future__ import annotations

import argparse
import bisect
import fcntl
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from typing import Any

import fasteners
from rich.console import Console
from rich.table import Table

METHODS = ("fasteners", "flock", "flock-nb")
DATA_FILE = "bench.jsonl"
LOCK_FILE = "bench.lock"

Locker = tuple[Callable[[], object], Callable[[], object]]


def make_locker(method: str, directory: str, fd: int, poll_s: float) -> Locker:
    """Return ``(acquire, release)`` for ``method``; ``fd`` is the data file's descriptor
    (used as the lock by the flock methods; must be this process's own open)."""
    if method == "fasteners":
        lock = fasteners.InterProcessLock(os.path.join(directory, LOCK_FILE))
        return lock.acquire, lock.release
    if method == "flock":
        return (lambda: fcntl.flock(fd, fcntl.LOCK_EX)), (lambda: fcntl.flock(fd, fcntl.LOCK_UN))
    if method == "flock-nb":

        def acquire() -> None:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    time.sleep(poll_s)

        return acquire, (lambda: fcntl.flock(fd, fcntl.LOCK_UN))
    raise ValueError(f"unknown method: {method}")


def make_line(worker: int, size: int) -> bytes:
    """A JSON line of exactly ``size`` bytes (newline included) tagged with ``worker``."""
    head = b'{"w":%d,"pad":"' % worker
    tail = b'"}\n'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


def _open_data(directory: str) -> int:
    return os.open(
        os.path.join(directory, DATA_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
    )


def worker(
    method: str,
    directory: str,
    index: int,
    seconds: float,
    poll_s: float,
    line_bytes: int,
    barrier: Any,
    results: Any,
) -> None:
    """One contending process: loop acquire/append/release, then report
    ``(index, ops, elapsed_s, waits_ns bytes)`` on ``results``."""
    fd = _open_data(directory)
    acquire, release = make_locker(method, directory, fd, poll_s)
    line = make_line(index, line_bytes)
    waits = array("q")
    clock = time.perf_counter_ns
    write = os.write
    barrier.wait()
    start = clock()
    deadline = start + int(seconds * 1e9)
    ops = 0
    while True:
        t0 = clock()
        if t0 >= deadline:
            break
        acquire()
        t1 = clock()
        write(fd, line)
        release()
        waits.append(t1 - t0)
        ops += 1
    elapsed = (clock() - start) / 1e9
    os.close(fd)
    results.put((index, ops, elapsed, waits.tobytes()))


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_contended(
    method: str, procs: int, seconds: float, poll_s: float, line_bytes: int, ctx: Any, root: str
) -> dict[str, Any]:
    """Run ``procs`` workers of ``method`` in a fresh directory under ``root``; return stats."""
    directory = tempfile.mkdtemp(prefix=f"{method}-", dir=root)
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=worker,
            args=(method, directory, i, seconds, poll_s, line_bytes, barrier, results),
        )
        for i in range(procs)
    ]
    for p in workers:
        p.start()
    reports = sorted(results.get(timeout=seconds + 120) for _ in workers)
    for p in workers:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{method}: worker exited with {p.exitcode}")

    per_proc_ops = [ops for _, ops, _, _ in reports]
    elapsed = max(e for _, _, e, _ in reports)
    waits: list[int] = []
    for _, _, _, raw in reports:
        a = array("q")
        a.frombytes(raw)
        waits.extend(a)
    waits.sort()

    # Integrity: every op left exactly one whole line, tagged with its worker.
    counts = [0] * procs
    with open(os.path.join(directory, DATA_FILE), "rb") as f:
        for raw_line in f:
            if len(raw_line) != line_bytes or not raw_line.startswith(b'{"w":'):
                raise RuntimeError(f"{method}: torn or foreign line {raw_line[:40]!r}")
            counts[int(raw_line[5 : raw_line.index(b",")])] += 1
    if counts != per_proc_ops:
        raise RuntimeError(f"{method}: file has {counts} lines, workers reported {per_proc_ops}")
    shutil.rmtree(directory)

    total = sum(per_proc_ops)
    return {
        "ops_total": total,
        "elapsed_s": elapsed,
        "ops_per_s": total / elapsed,
        "per_process_ops": per_proc_ops,
        "min_max_ratio": min(per_proc_ops) / max(per_proc_ops) if max(per_proc_ops) else 0.0,
        "wait_ms": {
            "p50": _percentile(waits, 0.50) / 1e6,
            "p99": _percentile(waits, 0.99) / 1e6,
            "max": (waits[-1] if waits else 0) / 1e6,
            "mean": (sum(waits) / len(waits) if waits else 0) / 1e6,
        },
        "waits_over_1ms_fraction": (
            (len(waits) - bisect.bisect_right(waits, 1_000_000)) / len(waits) if waits else 0.0
        ),
    }


def run_uncontended(method: str, seconds: float, poll_s: float, root: str) -> dict[str, Any]:
    """Acquire+release (no write) in this process alone for ``seconds``; return ops/s."""
    directory = tempfile.mkdtemp(prefix=f"{method}-solo-", dir=root)
    fd = _open_data(directory)
    acquire, release = make_locker(method, directory, fd, poll_s)
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            acquire()
            release()
        ops += 100
        now = time.perf_counter()
        if now >= deadline:
            break
    os.close(fd)
    shutil.rmtree(directory)
    elapsed = now - start
    return {"ops": ops, "elapsed_s": elapsed, "ops_per_s": ops / elapsed, "us_per_op": elapsed / ops * 1e6}


def render(results: dict[str, Any], console: Console) -> None:
    """Print one table row per method."""
    cfg = results["config"]
    table = Table(
        title=(
            f"lock; append {cfg['line_bytes']} B; unlock: {cfg['procs']} processes x "
            f"{cfg['seconds']} s on {results['platform']['cpus']} CPUs"
        )
    )
    columns = (
        "method", "ops/s", "ops per process", "min/max", "p50 ms", "p99 ms", "max ms", ">1 ms", "solo ops/s"
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "ops per process") else "right")
    for method in cfg["methods"]:
        c = results["contended"][method]
        u = results["uncontended"][method]
        table.add_row(
            method,
            f"{c['ops_per_s']:,.0f}",
            " ".join(str(n) for n in c["per_process_ops"]),
            f"{c['min_max_ratio']:.2f}",
            f"{c['wait_ms']['p50']:.3f}",
            f"{c['wait_ms']['p99']:.3f}",
            f"{c['wait_ms']['max']:.1f}",
            f"{c['waits_over_1ms_fraction']:.2%}",
            f"{u['ops_per_s']:,.0f}",
        )
    table.caption = (
        "p50/p99/max: wait to acquire; >1 ms: share of acquisitions that waited longer;"
        " solo: one process, acquire+release only"
    )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=4, help="contending processes (default 4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="contended run per method (default 3)")
    parser.add_argument(
        "--uncontended-seconds", type=float, default=1.0, help="solo run per method (default 1)"
    )
    parser.add_argument(
        "--poll-us", type=float, default=100.0, help="flock-nb sleep between tries, µs (default 100)"
    )
    parser.add_argument("--line-bytes", type=int, default=300, help="bytes appended per op (default 300)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}"
    )
    parser.add_argument("--start-method", choices=("fork", "spawn", "forkserver"), default="fork")
    parser.add_argument("--dir", default=None, help="where to put the files (default: system temp dir)")
    parser.add_argument("--json", dest="json_path", default=None, help="write results here")
    args = parser.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    poll_s = args.poll_us / 1e6
    ctx = mp.get_context(args.start_method)
    root = tempfile.mkdtemp(prefix="lockbench-", dir=args.dir)
    console = Console(width=max(Console().width, 130))
    try:
        results: dict[str, Any] = {
            "config": {
                "procs": args.procs,
                "seconds": args.seconds,
                "uncontended_seconds": args.uncontended_seconds,
                "poll_us": args.poll_us,
                "line_bytes": args.line_bytes,
                "start_method": args.start_method,
                "methods": methods,
                "directory": root,
            },
            "platform": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": sys.version.split()[0],
                "fasteners": fasteners.__version__ if hasattr(fasteners, "__version__") else None,
            },
            "units": {"ops_per_s": "operations per second", "wait_ms": "milliseconds"},
            "contended": {},
            "uncontended": {},
        }
        for method in methods:
            console.print(f"[dim]{method}: {args.procs} processes for {args.seconds} s ...[/dim]")
            results["contended"][method] = run_contended(
                method, args.procs, args.seconds, poll_s, args.line_bytes, ctx, root
            )
            results["uncontended"][method] = run_uncontended(method, args.uncontended_seconds, poll_s, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    render(results, console)
    if args.json_path:
        import orjson

        with open(args.json_path, "wb") as f:
            f.write(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
