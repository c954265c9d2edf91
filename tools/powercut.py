#!/usr/bin/env python
"""A power cut on a real file system: how many acknowledged operations are lost.

Usage (as root, from the repository root; needs xfsprogs and loop devices)::

    .venv/bin/python tools/powercut.py --pairs 1000 --writers 1
    .venv/bin/python tools/powercut.py --pairs 1000 --writers 4 --fsync
    .venv/bin/python tools/powercut.py --pairs 1000 --writers 4 --settle 2 --rounds 3
    .venv/bin/python tools/powercut.py --pairs 20000 --writers 4 --snapshot-every 10000 --cut-after 5

Each round makes a fresh xfs image (a sparse file under ``--dir``), mounts it
on a loop device, and runs ``--writers`` forked processes that each do
``--pairs`` register+release pairs on one ledger in it (``fsync`` as asked,
``--snapshot-every`` events between snapshots). Every call that returned is
acknowledged in a file outside the image. ``--settle`` seconds after the last
writer exits, the file system is shut down without flushing its log
(``xfs_io -x -c "shutdown"``: what the disk holds is what a power cut would
leave), unmounted and mounted again. Then the ledger is opened, every
acknowledged operation is looked for in the log at its seq, and one more
register checks that it still takes changes. With ``--cut-after S`` the
file system is shut down ``S`` seconds after the writers start, while they
write (a writer failing after the cut is expected, and counted in
``writers_failed``); ``acknowledged`` counts what returned before it.

Prints one JSON object per round: ``acknowledged``, ``lost`` (acknowledged
operations not in the log), ``log_seq`` (the log's last seq after the cut),
``snapshots`` (their seqs), ``opened`` (or the error ``Ledger.open`` raised),
``lost_events`` (``Ledger.lost``), ``said`` (the warnings opening logged),
``torn_bytes`` (bytes after the log's last newline), ``works_after``,
``verify`` (``ok`` or the first problem); ``log_bytes`` is null
when the log itself did not survive (a ledger made with ``fsync=False``
whose directory entries never reached the disk). Run it against another
checkout with ``PYTHONPATH=/path/to/checkout`` to compare versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scopeledger import Ledger, ScopeRule, verify  # noqa: E402


class _Said(logging.Handler):
    """Keeps the warnings scopeledger logs (what opening says) in a list."""

    def __init__(self, said: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.said = said

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append(record.getMessage())


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _check(p: subprocess.CompletedProcess) -> None:
    if p.returncode:
        raise RuntimeError(f"{' '.join(p.args)}: {p.stderr.strip()}")


def _writer(path: str, k: int, pairs: int, fsync: bool, every: int, ack_path: str) -> None:
    """One writer process: ``pairs`` register+release pairs, each
    acknowledged (``R name token`` / ``U name token``) once it returned."""
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with Ledger.open(path, fsync=fsync, snapshot_every=every) as led:
        for i in range(pairs):
            name = f"w{k}-{i}"
            alloc = led.register(name, [ScopeRule(f"/powercut/w{k}/{i}", "write")])
            os.write(ack, f"R {name} {alloc.token}\n".encode())
            led.release(name, token=alloc.token)
            os.write(ack, f"U {name} {alloc.token}\n".encode())
    os.close(ack)


def _fresh_device(dev: str, image: str) -> str:
    """The device to mount ``image`` again from after the power cut:
    ``dev`` when its file system is gone, else a new loop device on the same
    image. A mount namespace made while the file system was mounted (any
    ``unshare --mount``, a container) holds a copy of the mount: ``umount``
    here then leaves the shut down file system alive there, and mounting
    ``dev`` again would hand back that same shut down file system (every
    call EIO; whole-suite test runs failed so, with other tests' namespaces
    about). A second device on the image is read afresh from what the cut
    left (mounted ``nouuid``: the live copy has the same UUID)."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL)  # EBUSY while a file system holds it anywhere
    except OSError:
        p = _run("losetup", "--find", "--show", image)
        _check(p)
        return p.stdout.strip()
    os.close(fd)
    return dev


def one_round(base: str, pairs: int, writers: int, fsync: bool, every: int, settle: float,
              size_mb: int = 1024, cut_after: float | None = None) -> dict[str, Any]:
    """One power cut (see the module docstring); ``base``: a directory on a
    file system that is not cut (the image and the acknowledgements live
    there); ``cut_after``: cut that many seconds after the writers start,
    while they write (else ``settle`` seconds after they end). Returns the
    figures of the round."""
    image = os.path.join(base, "xfs.img")
    mnt = os.path.join(base, "mnt")
    os.makedirs(mnt, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    _check(_run("mkfs.xfs", "-q", "-f", image))
    p = _run("losetup", "--find", "--show", image)
    _check(p)
    dev = p.stdout.strip()
    out: dict[str, Any] = {"writers": writers, "pairs": pairs, "fsync": fsync, "snapshot_every": every,
                           "settle_s": settle, "cut_after_s": cut_after}
    extra: list[str] = []  # loop devices made for the remount (see _fresh_device)
    try:
        _check(_run("mount", "-t", "xfs", dev, mnt))
        path = os.path.join(mnt, "ledger")
        Ledger.open(path, fsync=fsync).close()
        acks = [os.path.join(base, f"ack-{k}") for k in range(writers)]
        pids = []
        for k in range(writers):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 0
                try:
                    _writer(path, k, pairs, fsync, every, acks[k])
                except BaseException as exc:  # noqa: BLE001
                    print(f"writer {k}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    code = 1
                os._exit(code)
            pids.append(pid)
        if cut_after is not None:  # the cut while they write
            time.sleep(cut_after)
            _check(_run("xfs_io", "-x", "-c", "shutdown", mnt))  # no -f: the log is not flushed
        failed = 0
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            failed += bool(os.waitstatus_to_exitcode(status))
        out["writers_failed"] = failed
        if cut_after is None:
            if failed:
                raise RuntimeError("a writer failed")
            time.sleep(settle)
            _check(_run("xfs_io", "-x", "-c", "shutdown", mnt))  # no -f: the log is not flushed
        _check(_run("umount", mnt))
        again = _fresh_device(dev, image)
        if again != dev:
            extra.append(again)
        # (nouuid: the shut down file system may still be alive elsewhere, see _fresh_device)
        _check(_run("mount", "-t", "xfs", *(["-o", "nouuid"] if again != dev else []), again, mnt))
        acknowledged = []
        for a in acks:
            with open(a) as f:
                acknowledged += [line.split() for line in f]
        out["acknowledged"] = len(acknowledged)
        log_path = os.path.join(path, "events.jsonl")
        # (a ledger made with fsync=False may not survive as made: no log, no snapshots/)
        out["log_bytes"] = os.path.getsize(log_path) if os.path.exists(log_path) else None
        snap_dir = os.path.join(path, "snapshots")
        snaps = sorted(int(n[5:21]) for n in (os.listdir(snap_dir) if os.path.isdir(snap_dir) else ())
                       if n.startswith("snap-"))
        out["snapshots"] = snaps
        out["torn_bytes"] = None
        if out["log_bytes"]:
            with open(log_path, "rb") as f:
                data = f.read()
            out["torn_bytes"] = len(data) - (data.rfind(b"\n") + 1)
            out["nul_bytes"] = data.count(b"\0")
        said: list[str] = []
        catch = _Said(said)
        logging.getLogger("scopeledger").addHandler(catch)
        try:
            led = Ledger.open(path)
        except Exception as exc:  # noqa: BLE001 - the figure is the error
            out["opened"] = f"{type(exc).__name__}: {exc}"
            lines: list[dict[str, Any]] = []
            import orjson

            with open(log_path, "rb") as f:
                for raw in f.read().split(b"\n"):
                    if raw:
                        try:
                            lines.append(orjson.loads(raw))
                        except orjson.JSONDecodeError:
                            break
            seen = {(e["type"], (e.get("holder") or {}).get("name") or e.get("name"), e["seq"])
                    for e in lines}
            out["log_seq"] = lines[-1]["seq"] if lines else 0
        else:
            out["opened"] = "ok"
            lost = getattr(led, "lost", None)  # (older versions have no Ledger.lost)
            out["lost_events"] = None if lost is None else {"last_seq": lost.last_seq,
                                                            "snapshot_seq": lost.snapshot_seq}
            seen = set()
            for e in led.events():
                name = e.data.get("holder", {}).get("name") if e.type in ("registered",) else e.data.get("name")
                seen.add((e.type, name, e.seq))
            out["log_seq"] = led.seq
            try:
                led.register("after-the-cut", [ScopeRule("/powercut/after", "write")])
                out["works_after"] = True
            except Exception as exc:  # noqa: BLE001
                out["works_after"] = f"{type(exc).__name__}: {exc}"
            finally:
                led.close()
            rep = verify(path)
            out["verify"] = "ok" if rep.ok else rep.problems[0].message
        finally:
            logging.getLogger("scopeledger").removeHandler(catch)
            out["said"] = said
        registered = {(n, int(t)) for kind, n, t in acknowledged if kind == "R"}
        have = {(n, s) for kind, n, s in seen if kind == "registered"}
        released = {n for kind, n, s in seen if kind == "released"}
        lost_r = sum(1 for n, t in registered if (n, t) not in have)
        lost_u = sum(1 for kind, n, t in acknowledged if kind == "U" and n not in released)
        out["lost"] = lost_r + lost_u
        out["lost_registers"] = lost_r
        out["lost_releases"] = lost_u
    finally:
        # (not os.path.ismount first: on a file system answering EIO it says False)
        gone = _run("umount", mnt)
        if gone.returncode and "not mounted" not in gone.stderr:
            _run("umount", "-l", mnt)  # something still open: let go lazily
        for d in (dev, *extra):
            _run("losetup", "-d", d)
        os.unlink(image)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=1000, help="register+release pairs per writer")
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--fsync", action="store_true", help="Ledger.open(fsync=True)")
    ap.add_argument("--snapshot-every", type=int, default=100)
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds between the last writer's exit and the cut")
    ap.add_argument("--cut-after", type=float, default=None,
                    help="cut this many seconds after the writers start, while they write")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where the image lives (default: a temp dir)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (loop devices, mount, xfs_io -x)", file=sys.stderr)
        return 2
    for tool in ("mkfs.xfs", "xfs_io", "losetup"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is missing (apt-get install xfsprogs)", file=sys.stderr)
            return 2
    for _ in range(args.rounds):
        base = tempfile.mkdtemp(prefix="scopeledger-powercut-", dir=args.dir)
        try:
            print(json.dumps(one_round(base, args.pairs, args.writers, args.fsync, args.snapshot_every,
                                       args.settle, cut_after=args.cut_after)), flush=True)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
