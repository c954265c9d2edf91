"""Crash injection: kill a writer (SIGKILL) at the k-th IO call of a random
run of mutations and snapshots, optionally after writing only a prefix of
what it was writing; and append prefixes of real event lines directly.

After each crash the harness checks that the ledger opens, that every
complete event is there (and every acknowledged operation is at its seq),
that the torn fragment is set aside byte for byte in ``torn/`` by the next
writer, that nothing is applied twice (the reference fold of the whole log
passes), that ``verify`` passes, and that stray snapshot temp files are
cleaned by the next snapshot writer.

Modes of the injected child:

* ``any``: the k-th call among os.open/write/pread/fsync/fdatasync/rename/
  ftruncate/unlink/mkdir/fchmod/listdir and fcntl.flock;
* ``append``: the k-th write to the log;
* ``snapshot``: the k-th IO call made while writing a snapshot.

A killed ``write`` first writes a random prefix of its data (a torn write).
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import sys
import time
from typing import Any

import orjson

from .model import LogChecker, LostAcknowledged, library_view

ROOT = "/torture-crash"
COMPONENTS = ["a", "b", "c"]
IO_FUNCS = [(os, "open"), (os, "write"), (os, "pread"), (os, "fsync"), (os, "fdatasync"),
            (os, "rename"), (os, "ftruncate"), (os, "unlink"), (os, "mkdir"), (os, "fchmod"),
            (os, "listdir"), (fcntl, "flock")]


def _rule(rng: random.Random) -> tuple:
    depth = rng.choice([1, 2, 2, 3])
    return (ROOT + "/" + "/".join(rng.choice(COMPONENTS) for _ in range(depth)),
            "write" if rng.random() < 0.75 else "read", rng.random() < 0.4)


# -- the injected child --------------------------------------------------------------

def child(ledger_dir: str, seed: int, mode: str, k: int, ops: int) -> int:
    from scopeledger import Ledger, LedgerError, Refused, UnknownHolder
    from scopeledger import _ledger

    rng = random.Random(seed)
    out = sys.stdout
    state = {"n": 0, "in_snapshot": False}
    log_ino: list[int] = []

    def die(fn_name: str, args: tuple) -> None:
        if fn_name == "write" and rng.random() < 0.7:
            fd, data = args[0], bytes(args[1])
            if data:
                real["write"](fd, data[: rng.randrange(len(data))])
        out.write(f"KILL {fn_name}\n")
        out.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    real: dict[str, Any] = {}

    def wrap(mod: Any, name: str) -> None:
        fn = getattr(mod, name)
        real[name] = fn

        def inner(*args: Any, **kw: Any) -> Any:
            counted = False
            if mode == "any":
                counted = True
            elif mode == "append":
                counted = name == "write" and log_ino and os.fstat(args[0]).st_ino == log_ino[0]
            elif mode == "snapshot":
                counted = state["in_snapshot"]
            if counted:
                state["n"] += 1
                if state["n"] == k:
                    die(name, args)
            return fn(*args, **kw)
        setattr(mod, name, inner)

    orig_snap = _ledger.Ledger._write_snapshot

    def snap(self: Any, st: Any) -> None:
        state["in_snapshot"] = True
        try:
            orig_snap(self, st)
        finally:
            state["in_snapshot"] = False
    _ledger.Ledger._write_snapshot = snap  # type: ignore[method-assign]

    for mod, name in IO_FUNCS:
        wrap(mod, name)
    led = Ledger.open(ledger_dir, snapshot_every=rng.choice([3, 5, 8]), keep_snapshots=3)
    log_ino.append(os.fstat(led._store.logfd).st_ino)
    for i in range(ops):
        r = rng.random()
        try:
            live = {a.name: a for a in led.holders()}
            if r < 0.4 or not live:
                name = f"c{seed % 100000}.{i}"
                a = led.register(name, [_rule(rng)])
                ack = {"op": "register", "name": name, "token": a.token}
            elif r < 0.6:
                parent = rng.choice(list(live))
                pr = rng.choice(live[parent].rules)
                sub = pr.path + ("/" + rng.choice(COMPONENTS) if pr.recursive and rng.random() < 0.6 else "")
                name = f"c{seed % 100000}.{i}"
                a = led.delegate(parent, name, [(sub, pr.permission.value, False)])
                ack = {"op": "delegate", "name": name, "token": a.token}
            elif r < 0.9:
                name = rng.choice(list(live))
                led.release(name, token=live[name].token)
                ack = {"op": "release", "name": name, "token": live[name].token}
            else:
                ack = {"op": "snapshot", "seq": led.snapshot()}
        except (Refused, UnknownHolder):
            continue
        except LedgerError as exc:
            out.write("ERROR " + orjson.dumps(f"{type(exc).__name__}: {exc}").decode() + "\n")
            out.flush()
            return 1
        out.write("ACK " + orjson.dumps(ack).decode() + "\n")
        out.flush()
    out.write(f"DONE {state['n']}\n")
    out.flush()
    return 0


# -- the harness -----------------------------------------------------------------------

class CrashError(AssertionError):
    pass


def _log(ledger_dir: str) -> bytes:
    try:
        return open(os.path.join(ledger_dir, "events.jsonl"), "rb").read()
    except FileNotFoundError:
        return b""


def _torn_files(ledger_dir: str) -> dict[str, bytes]:
    d = os.path.join(ledger_dir, "torn")
    if not os.path.isdir(d):
        return {}
    return {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}


def check_after_crash(ledger_dir: str, acks: list[dict[str, Any]], probe_name: str) -> dict[str, Any]:
    """The checks after one crash; returns what it found."""
    from scopeledger import Ledger

    before = _log(ledger_dir)
    cut = before.rfind(b"\n") + 1
    complete, fragment = before[:cut], before[cut:]
    checker = LogChecker(full_every=0)
    checker.feed(complete, keep=True)
    checker.finish()
    by_seq = {e["seq"]: e for e in checker.events}
    live_token: dict[str, int] = {}
    removal: dict[int, dict[str, Any]] = {}
    for ev in checker.events:
        if ev["type"] in ("registered", "delegated"):
            live_token[ev["holder"]["name"]] = ev["seq"]
        elif ev["type"] in ("released", "reclaimed"):
            removal[live_token.pop(ev["name"])] = ev
    lost = []
    for a in acks:
        if a["op"] in ("register", "delegate"):
            ev = by_seq.get(a["token"])
            if ev is None or ev["type"] not in ("registered", "delegated") or ev["holder"]["name"] != a["name"]:
                lost.append(f"acknowledged {a} lost: the log has {ev}")
        elif a["op"] == "release":
            ev = removal.get(a["token"])
            if ev is None or ev["type"] != "released":
                lost.append(f"acknowledged {a} lost: removal is {ev}")
    if lost:
        raise LostAcknowledged(lost)
    torn_before = _torn_files(ledger_dir)
    led = Ledger.open(ledger_dir)  # must open
    try:
        if library_view(led.holders()) != checker.model.snapshot():
            raise CrashError("state after the crash differs from the fold of the complete lines")
        if _log(ledger_dir) != before:
            raise CrashError("opening (without the lock) changed the log")
        # The next writer sets the torn fragment aside.
        a = led.register(probe_name, [(ROOT + "/probe/" + probe_name, "write", True)])
        led.release(probe_name, token=a.token)
        after = _log(ledger_dir)
        if not after.startswith(complete):
            raise CrashError("a complete event changed or disappeared")
        new_torn = {n: b for n, b in _torn_files(ledger_dir).items() if n not in torn_before}
        if fragment:
            if list(new_torn.values()) != [fragment]:
                raise CrashError(f"torn fragment of {len(fragment)} bytes not set aside exactly: "
                                 f"{[len(b) for b in new_torn.values()]}")
        elif new_torn:
            raise CrashError(f"set aside something although nothing was torn: {list(new_torn)}")
        rep = led.verify()
        if not rep.ok:
            raise CrashError(f"verify after the crash: {rep}")
        full = LogChecker(full_every=0)
        full.feed(after)
        full.finish()
        if library_view(led.holders()) != full.model.snapshot():
            raise CrashError("state after recovery differs from the reference fold")
        tmp_before = [n for n in os.listdir(os.path.join(ledger_dir, "snapshots")) if n.startswith(".tmp-")]
        led.snapshot()
        tmp_after = [n for n in os.listdir(os.path.join(ledger_dir, "snapshots")) if n.startswith(".tmp-")]
        if tmp_after:
            raise CrashError(f"temp files of dead writers not cleaned: {tmp_after}")
    finally:
        led.close()
    again = Ledger.open(ledger_dir)
    try:
        if library_view(again.holders()) != full.model.snapshot():
            raise CrashError("reopening (from the new snapshot) gives another state")
    finally:
        again.close()
    return {"torn_bytes": len(fragment), "temp_cleaned": len(tmp_before), "events": full.seq}


def run_child(ledger_dir: str, seed: int, mode: str, k: int, ops: int) -> tuple[list[dict[str, Any]], str | None, int]:
    """Fork the injected child (this process imported everything already:
    forking is fast); read its acknowledgements from a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 70
        try:
            os.close(r)
            sys.stdout = os.fdopen(w, "w")
            code = child(ledger_dir, seed, mode, k, ops)
            sys.stdout.flush()
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    acks, killed_at = [], None
    for line in data.decode().splitlines():
        if line.startswith("ACK "):
            acks.append(orjson.loads(line[4:]))
        elif line.startswith("KILL "):
            killed_at = line[5:]
        elif line.startswith("ERROR "):
            raise CrashError(f"child failed: {orjson.loads(line[6:])}")
    if code not in (0, -signal.SIGKILL):
        raise CrashError(f"child exited {code}")
    return acks, killed_at, code


def inject_partial(ledger_dir: str, rng: random.Random, scratch: str) -> int:
    """Append a prefix of the bytes that real mutations would append (made
    in a scratch copy), as a writer killed mid-write would leave them.
    Returns the number of bytes appended."""
    from scopeledger import Ledger, Refused

    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(ledger_dir, scratch, symlinks=True)
    size = len(_log(scratch))
    with Ledger.open(scratch) as led:
        for _ in range(rng.choice([1, 1, 2, 3])):
            try:
                led.register(f"p{rng.randrange(10**9)}", [_rule(rng)])
            except Refused:
                pass
    new = _log(scratch)[size:]
    shutil.rmtree(scratch, ignore_errors=True)
    if not new:
        return 0
    n = rng.randrange(1, len(new))
    fd = os.open(os.path.join(ledger_dir, "events.jsonl"), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, new[:n])
    finally:
        os.close(fd)
    return n


def run(work: str, rounds: int, seed: int = 0, fresh_every: int = 25,
        deadline: float | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    fig: dict[str, Any] = {"rounds": 0, "kills": 0, "kills_by_mode": {}, "kills_by_call": {},
                           "partial_injected": 0, "torn_set_aside": 0, "torn_bytes": 0,
                           "acked_ops": 0, "temp_cleaned": 0, "events_checked": 0,
                           "completed_without_kill": 0}
    ledger_dir = ""
    for r in range(rounds):
        if deadline is not None and time.monotonic() > deadline:
            break
        if r % fresh_every == 0:
            ledger_dir = os.path.join(work, f"ledger-{r // fresh_every}")
            shutil.rmtree(ledger_dir, ignore_errors=True)
        mode = rng.choice(["any", "any", "append", "append", "snapshot", "partial"])
        if mode == "partial":
            if not os.path.isdir(ledger_dir):
                from scopeledger import Ledger
                Ledger.open(ledger_dir).close()
            inject_partial(ledger_dir, rng, os.path.join(work, "scratch"))
            fig["partial_injected"] += 1
            acks: list[dict[str, Any]] = []
        else:
            k = {"any": rng.randrange(1, 140), "append": rng.randrange(1, 25),
                 "snapshot": rng.randrange(1, 40)}[mode]
            acks, killed_at, code = run_child(ledger_dir, rng.randrange(1 << 30), mode, k, 30)
            if code == -signal.SIGKILL:
                fig["kills"] += 1
                fig["kills_by_mode"][mode] = fig["kills_by_mode"].get(mode, 0) + 1
                fig["kills_by_call"][killed_at] = fig["kills_by_call"].get(killed_at, 0) + 1
            else:
                fig["completed_without_kill"] += 1
        res = check_after_crash(ledger_dir, acks, f"probe{r}")
        fig["rounds"] += 1
        fig["acked_ops"] += len(acks)
        fig["torn_set_aside"] += res["torn_bytes"] > 0
        fig["torn_bytes"] += res["torn_bytes"]
        fig["temp_cleaned"] += res["temp_cleaned"]
        fig["events_checked"] += res["events"]
    return fig


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "child":
        _, d, seed, mode, k, ops = args
        return child(d, int(seed), mode, int(k), int(ops))
    import argparse
    ap = argparse.ArgumentParser(prog="python -m tools.torture.crash")
    ap.add_argument("dir")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(args)
    import logging
    logging.getLogger("scopeledger").setLevel(logging.ERROR)  # torn-line notices are expected
    print(orjson.dumps(run(ns.dir, ns.rounds, ns.seed)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
