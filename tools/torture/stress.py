"""Concurrency stress: N processes doing random register / delegate / release
/ attach / reclaim / queries on one ledger, SIGKILLed at random moments.

Each worker appends an acknowledgement line for every operation that
returned successfully (with the token it got) to its own file, written
after the call returned. Afterwards the harness checks:

* ``scopeledger.verify`` passes;
* the log, folded by the independent reference model (tools/torture/model.py):
  seqs gapless, hash chain, every grant grantable at its seq, and at every
  seq no two live holders outside one line of delegation with overlapping
  writes and every child inside its parent;
* every acknowledged operation is in the log at its seq (nothing lost), and
  every grant/release/attach in the log was acknowledged, except at most one
  in-flight transaction per killed worker (nothing invented, nothing twice);
* the reference model fed the acknowledged operations in seq order (plus
  the reclaims, which the ledger decides) ends in the library's final state;
* every reclaimed holder's process had died before the reclaim;
* lock-free readers inside the workers never saw a state breaking the
  invariants.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from typing import Any

import orjson

from . import procs
from .model import LogChecker, LostAcknowledged, Model, ModelError, as_rule, library_view

ROOT = "/torture-nonexistent"
COMPONENTS = ["a", "b", "c", "d"]
SHARED_NAMES = [f"s{i}" for i in range(6)]


def random_path(rng: random.Random, depth: int | None = None) -> str:
    depth = depth if depth is not None else rng.choice([1, 2, 2, 3, 3, 3])
    return ROOT + "/" + "/".join(rng.choice(COMPONENTS) for _ in range(depth))


def random_rule(rng: random.Random) -> tuple:
    return (random_path(rng), "write" if rng.random() < 0.7 else "read", rng.random() < 0.4)


def rule_inside(rng: random.Random, parent: tuple) -> tuple:
    """A rule the parent's rule covers (usually)."""
    path, perm, rec = parent
    if rec:
        extra = rng.choice([0, 0, 1, 1, 2])
        sub = path + "".join("/" + rng.choice(COMPONENTS) for _ in range(extra))
        return (sub, perm if rng.random() < 0.8 else "read", rng.random() < 0.5)
    return (path, perm if rng.random() < 0.8 else "read", False)


# -- the worker ----------------------------------------------------------------

def worker(ledger_dir: str, wid: int, seed: int, ops: int | None, ack_path: str,
           snapshot_every: int, lose_releases: int = 0) -> int:
    """``ops``: operations to do, ``None``: until killed (a victim, which
    first registers a holder it never releases). ``lose_releases``: acknowledge
    that many releases without making them (to check that the harness finds
    and counts lost operations)."""
    import itertools

    from scopeledger import Ledger, LedgerError, Refused, UnknownHolder

    rng = random.Random(seed)
    ackfd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def ack(**rec: Any) -> None:
        rec["t"] = time.time_ns()
        os.write(ackfd, orjson.dumps(rec) + b"\n")

    led = Ledger.open(ledger_dir, snapshot_every=snapshot_every, keep_snapshots=4,
                      timeout=None if wid % 2 == 0 else 60)
    mine: dict[str, tuple[int, list]] = {}   # name -> (token, rules)
    reserved: list[str] = []
    kids: list[int] = []
    zombies: list[int] = []
    ack(op="start", pid=os.getpid())
    if ops is None:
        rules = [(f"{ROOT}/victim/{wid}", "write", True)]
        a = led.register(f"victim{wid}", rules)
        ack(op="register", name=a.name, token=a.token, rules=rules, parent=None, pid=a.pid)
    for i in (itertools.count() if ops is None else range(ops)):
        r = rng.random()
        try:
            if r < 0.30 or not mine:
                name = rng.choice(SHARED_NAMES) if rng.random() < 0.1 else f"w{wid}.{i}"
                rules = [random_rule(rng) for _ in range(rng.choice([1, 1, 2]))]
                pid = None
                if rng.random() < 0.3 and len(kids) < 6:
                    pid = procs.fork_sleeper()
                    kids.append(pid)
                    ack(op="spawn", pid=pid)
                a = led.register(name, rules, pid)
                mine[name] = (a.token, rules)
                ack(op="register", name=name, token=a.token, rules=rules, parent=None,
                    pid=a.pid)
            elif r < 0.52:
                parent = rng.choice(list(mine))
                prules = mine[parent][1]
                rules = [rule_inside(rng, rng.choice(prules)) for _ in range(rng.choice([1, 1, 2]))]
                name = f"w{wid}.{i}"
                pid = None
                if rng.random() < 0.3 and len(kids) < 6:
                    pid = procs.fork_sleeper()
                    kids.append(pid)
                    ack(op="spawn", pid=pid)
                res = rng.random() < 0.15
                a = led.delegate(parent, name, rules, pid, reserved=res)
                mine[name] = (a.token, rules)
                if res:
                    reserved.append(name)
                ack(op="delegate", name=name, token=a.token, rules=rules, parent=parent,
                    pid=a.pid)
            elif r < 0.72:
                name = rng.choice(list(mine))
                token = mine.pop(name)[0]
                if lose_releases > 0:
                    lose_releases -= 1  # injected: acknowledged, never made
                else:
                    led.release(name, token=token)
                ack(op="release", name=name, token=token)
            elif r < 0.76 and reserved:
                name = reserved.pop()
                if name in mine:
                    a = led.attach(name)
                    ack(op="attach", name=name, token=a.token)
            elif r < 0.82:
                names = led.reclaim_stale()
                ack(op="reclaim", names=names)
            elif r < 0.88 and kids:
                pid = kids.pop(rng.randrange(len(kids)))
                ack(op="kill", pid=pid)
                os.kill(pid, signal.SIGKILL)
                if rng.random() < 0.5:
                    os.waitpid(pid, 0)
                else:
                    zombies.append(pid)  # left a zombie for a while
            elif r < 0.97:
                # Lock-free reads: the state seen must satisfy the invariants.
                holders = led.holders()
                m = Model()
                for a in holders:
                    m.holders[a.name] = {"rules": tuple(as_rule(x) for x in a.rules),
                                         "parent": a.parent, "token": a.token, "pid": a.pid}
                try:
                    m.check_all()
                except ModelError as exc:
                    ack(op="violation", seq=led.seq, error=str(exc))
                ack(op="query")
                led.find_conflict([random_rule(rng)[:2] + (True,)])
            else:
                led.snapshot()
                ack(op="snapshot")
        except UnknownHolder as exc:
            # Our holder was reclaimed (its process killed) or released.
            mine.pop(getattr(exc, "name", ""), None)
            ack(op="refused", error="UnknownHolder")
        except Refused as exc:
            ack(op="refused", error=type(exc).__name__)
        except LedgerError as exc:
            ack(op="error", error=f"{type(exc).__name__}: {exc}")
            raise
        if zombies and rng.random() < 0.1:
            os.waitpid(zombies.pop(0), 0)
    n = 0
    while lose_releases > 0:  # injected losses the random operations did not reach
        rules = [(f"{ROOT}/lost/{wid}/{n}", "write", True)]
        a = led.register(f"lost{wid}.{n}", rules)
        ack(op="register", name=a.name, token=a.token, rules=rules, parent=None, pid=a.pid)
        lose_releases -= 1
        ack(op="release", name=a.name, token=a.token)  # acknowledged, never made
        n += 1
    for pid in kids:
        ack(op="kill", pid=pid)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    for pid in zombies:
        os.waitpid(pid, 0)
    ack(op="exit", pid=os.getpid())
    led.close()
    return 0


# -- the harness -----------------------------------------------------------------

def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def read_acks(path: str) -> list[dict[str, Any]]:
    try:
        data = open(path, "rb").read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n"):
        if line:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass  # a worker killed mid-ack: the last line is partial
    return out


def run(ledger_dir: str, work_dir: str, *, workers: int = 8, total_workers: int = 24,
        ops: int = 200, kill_every: tuple[float, float] = (0.05, 0.6), seed: int = 0,
        snapshot_every: int = 40, deadline: float | None = None, victims: int = 2,
        lose_releases: int = 0) -> dict[str, Any]:
    """Run one stress round; raises ModelError/AssertionError on a violation
    (:class:`LostAcknowledged` for acknowledged operations missing from the
    log). Returns the figures.

    Besides the SIGKILLs every ``kill_every`` seconds, the first ``victims``
    workers run until killed, each SIGKILLed once it has acknowledged
    ``ops // 2`` operations (a condition, not a time: whatever the machine's
    speed, a run has at least ``victims`` kills in the middle of work, each
    leaving a holder of a dead process). ``lose_releases``: one worker
    acknowledges that many releases without making them (to check the
    checks)."""
    rng = random.Random(seed)
    try:
        procs.become_subreaper()
    except OSError:
        pass
    os.makedirs(work_dir, exist_ok=True)
    running: dict[int, tuple[int, str]] = {}   # pid -> (wid, ack path)
    started = 0
    kills: dict[int, int] = {}      # worker pid -> ns just before SIGKILL
    exits: dict[int, int] = {}      # worker pid -> exit code
    all_wids: list[tuple[int, str, int]] = []  # (wid, ack path, pid)

    victim_acks: dict[int, str] = {}   # pid of a victim not killed yet -> its ack file
    spared: set[int] = set()            # the worker injecting losses: never killed

    def start() -> None:
        nonlocal started
        wid = started
        started += 1
        ack = os.path.join(work_dir, f"ack-{wid}.jsonl")
        wseed = rng.randrange(1 << 30)
        victim = wid < victims
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            code = 70
            try:
                code = worker(ledger_dir, wid, wseed, None if victim else ops, ack, snapshot_every,
                              lose_releases if wid == victims else 0)
            except BaseException:
                import traceback
                with open(ack + ".err", "w") as f:
                    traceback.print_exc(file=f)
            finally:
                os._exit(code)
        running[pid] = (wid, ack)
        all_wids.append((wid, ack, pid))
        if victim:
            victim_acks[pid] = ack
        if victim or (lose_releases and wid == victims):
            spared.add(pid)  # a victim is killed once it has done its share, not by the clock

    for _ in range(min(workers, total_workers)):
        start()
    next_kill = time.monotonic() + rng.uniform(*kill_every)
    t0 = time.monotonic()
    while running:
        time.sleep(0.005)
        while True:  # reap: workers, and orphaned sleepers of killed workers
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in running:
                exits[pid] = os.waitstatus_to_exitcode(status)
                del running[pid]
                if started < total_workers and (deadline is None or time.monotonic() < deadline):
                    start()
        for pid, ack in list(victim_acks.items()):
            if _count_lines(ack) >= max(1, ops // 2):
                kills[pid] = time.time_ns()
                os.kill(pid, signal.SIGKILL)
                del victim_acks[pid]
        now = time.monotonic()
        if running.keys() - spared and now >= next_kill and (deadline is None or now < deadline):
            pid = rng.choice(sorted(running.keys() - spared))
            kills[pid] = time.time_ns()
            os.kill(pid, signal.SIGKILL)
            victim_acks.pop(pid, None)
            next_kill = now + rng.uniform(*kill_every)
    elapsed = time.monotonic() - t0
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break

    failed = {pid: code for pid, code in exits.items() if code != 0 and pid not in kills}
    errors = []
    for wid, ack, pid in all_wids:
        if pid in failed:
            err = open(ack + ".err", "rb").read().decode(errors="replace") if os.path.exists(ack + ".err") else ""
            errors.append(f"worker {wid} (pid {pid}) exited {failed[pid]}: {err[-3000:]}")
    if errors:
        raise AssertionError("\n".join(errors))
    return check(ledger_dir, all_wids, kills, elapsed)


def check(ledger_dir: str, all_wids: list[tuple[int, str, int]], kills: dict[int, int],
          elapsed: float) -> dict[str, Any]:
    from scopeledger import Ledger, verify

    rep = verify(ledger_dir)
    if not rep.ok:
        raise AssertionError(f"verify failed: {rep}")
    data = open(os.path.join(ledger_dir, "events.jsonl"), "rb").read()
    checker = LogChecker(full_every=200)
    checker.feed(data, keep=True)
    checker.finish()
    events = checker.events
    if data and not data.endswith(b"\n"):
        raise AssertionError("the log ends in a torn line after all writers finished")

    # Deaths: killed workers, their children (die with them), killed children,
    # children of workers that exited.
    died: dict[int, list[int]] = {}   # pid -> times it was seen to die (pids are reused)
    acked: list[tuple[int, dict[str, Any]]] = []
    figures = {"workers": len(all_wids), "kills": len(kills), "workers_completed": 0, "ops_ok": 0,
               "ops_refused": 0, "queries": 0, "violations": 0, "lost": 0}
    violations: list[str] = []
    worker_of_pid: dict[int, int] = {}
    for wid, ack, pid in all_wids:
        recs = read_acks(ack)
        worker_of_pid[pid] = wid
        t_end = kills.get(pid)
        for rec in recs:
            op = rec["op"]
            if op == "violation":
                violations.append(f"worker {wid} read a state breaking the invariants at seq "
                                  f"{rec['seq']}: {rec['error']}")
            if op == "error":
                raise AssertionError(f"worker {wid}: {rec['error']}")
            if op == "kill":
                died.setdefault(rec["pid"], []).append(rec["t"])
            elif op == "exit":
                t_end = rec["t"]
                figures["workers_completed"] += 1
            elif op in ("query", "snapshot"):
                figures["queries"] += 1
            elif op == "refused":
                figures["ops_refused"] += 1
            elif op in ("register", "delegate", "release", "attach", "reclaim"):
                acked.append((wid, rec))
        if t_end is not None:
            died.setdefault(pid, []).append(t_end)
            killed = {rec["pid"] for rec in recs if rec["op"] == "kill"}
            for rec in recs:
                if rec["op"] == "spawn" and rec["pid"] not in killed:
                    died.setdefault(rec["pid"], []).append(t_end)  # died with its worker
    figures["ops_ok"] = len(acked)
    figures["violations"] = len(violations)
    if violations:
        raise AssertionError("\n".join(violations))

    by_seq = {ev["seq"]: ev for ev in events}
    # Removal of each grant (token -> removal event), found by folding names.
    live_token: dict[str, int] = {}
    removal: dict[int, dict[str, Any]] = {}
    for ev in events:
        k = ev["type"]
        if k in ("registered", "delegated"):
            live_token[ev["holder"]["name"]] = ev["seq"]
        elif k in ("released", "reclaimed"):
            removal[live_token.pop(ev["name"])] = ev

    accounted: set[int] = set()
    lost: list[str] = []
    for _wid, rec in acked:
        op = rec["op"]
        if op in ("register", "delegate"):
            ev = by_seq.get(rec["token"])
            want = "registered" if op == "register" else "delegated"
            if ev is None or ev["type"] != want or ev["holder"]["name"] != rec["name"] \
                    or ev["holder"]["parent"] != rec["parent"] \
                    or sorted(tuple(r[:3]) for r in ev["holder"]["rules"]) \
                    != sorted({as_rule(r) for r in rec["rules"]}):
                # (a rule requested twice is granted and recorded once)
                lost.append(f"acknowledged {op} {rec} is not in the log at seq {rec['token']}: {ev}")
                continue
            if rec["token"] in accounted:
                raise AssertionError(f"seq {rec['token']} acknowledged twice")
            accounted.add(rec["token"])
        elif op == "release":
            ev = removal.get(rec["token"])
            if ev is None or ev["type"] != "released" or ev["name"] != rec["name"]:
                lost.append(f"acknowledged release {rec} is not the removal of its grant: {ev}")
                continue
            if ev["seq"] in accounted:
                raise AssertionError(f"release at seq {ev['seq']} acknowledged twice")
            accounted.add(ev["seq"])
        elif op == "attach":
            cands = [e for e in events if e["type"] == "attached" and e["name"] == rec["name"]
                     and e["seq"] > rec["token"] and e["seq"] not in accounted]
            if not cands:
                lost.append(f"acknowledged attach {rec} is not in the log")
                continue
            accounted.add(cands[0]["seq"])
        elif op == "reclaim":
            for n in rec["names"]:
                if not any(e["type"] == "reclaimed" and e["name"] == n for e in events):
                    lost.append(f"acknowledged reclaim of {n!r} is not in the log")
    figures["lost"] = len(lost)
    if lost:
        raise LostAcknowledged(lost)

    # Unacknowledged grants/releases/attaches: only a killed worker's in-flight one.
    inflight: dict[int, set[int]] = {}
    for ev in events:
        if ev["type"] in ("registered", "delegated", "released", "attached") and ev["seq"] not in accounted:
            actor = ev["actor"]["pid"]
            if actor not in kills:
                raise AssertionError(f"seq {ev['seq']} ({ev['type']}) by pid {actor} was never "
                                     "acknowledged, and that worker was not killed")
            # One transaction: consecutive seqs by the same actor.
            inflight.setdefault(actor, set()).add(ev["seq"])
    for actor, seqs in inflight.items():
        # A transaction holds one grant, release or attach (plus reclaims).
        if len(seqs) > 1:
            raise AssertionError(f"killed worker pid {actor} has more than one unacknowledged "
                                 f"operation: seqs {sorted(seqs)}")
    figures["inflight_unacked"] = sum(len(s) for s in inflight.values())

    # The reference model fed the acknowledged operations (+ in-flight ones of
    # killed workers, + the ledger's reclaims) in seq order.
    model = Model()
    bound_at: dict[str, int] = {}   # holder -> ts it was bound to its current process
    for ev in events:
        k, seq = ev["type"], ev["seq"]
        if k == "attached":
            model.holders[ev["name"]]["pid"] = ev["process"]["pid"]
            bound_at[ev["name"]] = ev["ts"]
        if k in ("registered", "delegated"):
            h = ev["holder"]
            bound_at[h["name"]] = ev["ts"]
            probs = model.problems(h["name"], h["rules"], h["parent"])
            if probs:
                raise AssertionError(f"seq {seq}: grant of {h['name']!r} refused by the model: {probs}")
            model.grant(h["name"], h["rules"], h["parent"], seq, h["process"]["pid"])
        elif k in ("released", "reclaimed"):
            if k == "reclaimed":
                pid = model.holders[ev["name"]]["pid"]
                times = died.get(pid, [])
                if not any(bound_at[ev["name"]] <= t <= ev["ts"] for t in times):
                    raise AssertionError(
                        f"seq {seq}: reclaimed {ev['name']!r} ({ev['reason']}) bound to pid {pid}, "
                        f"which had not died since it was bound (deaths {times}, bound at "
                        f"{bound_at[ev['name']]}, event at {ev['ts']})")
            model.remove(ev["name"])
    final = Ledger.open(ledger_dir)
    try:
        lib = library_view(final.holders())
        if lib != model.snapshot():
            raise AssertionError(f"final state differs from the reference model:\nlibrary {lib}\n"
                                 f"model   {model.snapshot()}")
        if lib != checker.model.snapshot():
            raise AssertionError("final state differs from the log checker's fold")
        # Every writer is gone now: all of it is stale.
        left = final.reclaim_stale()
        if final.holders():
            raise AssertionError(f"holders of dead processes were kept: {final.holders()}")
        figures["final_reclaimed"] = len(left)
    finally:
        final.close()
    rep = verify(ledger_dir)
    if not rep.ok:
        raise AssertionError(f"verify failed after the final reclaim: {rep}")
    LogChecker().feed(open(os.path.join(ledger_dir, "events.jsonl"), "rb").read())
    figures.update(
        events=checker.seq, seconds=round(elapsed, 2), by_type=dict(checker.counts),
        snapshots=len([n for n in os.listdir(os.path.join(ledger_dir, "snapshots"))
                       if n.startswith("snap-")]),
        torn=len(os.listdir(os.path.join(ledger_dir, "torn"))) if os.path.isdir(
            os.path.join(ledger_dir, "torn")) else 0)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "worker":
        _, ledger_dir, wid, seed, ops, ack, every = args
        return worker(ledger_dir, int(wid), int(seed), int(ops), ack, int(every))
    ap = argparse.ArgumentParser(prog="python -m tools.torture.stress")
    ap.add_argument("dir")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--total-workers", type=int, default=24)
    ap.add_argument("--ops", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kill-every", type=float, nargs=2, default=(0.05, 0.6), metavar=("MIN", "MAX"),
                    help="seconds between SIGKILLs, uniform in [MIN, MAX]")
    ap.add_argument("--snapshot-every", type=int, default=40)
    ap.add_argument("--victims", type=int, default=2,
                    help="workers that run until killed once they acknowledged OPS/2 operations")
    ap.add_argument("--lose-releases", type=int, default=0, help="inject lost releases (checks the checks)")
    ns = ap.parse_args(args)
    import logging
    logging.getLogger("scopeledger").setLevel(logging.ERROR)
    fig = run(os.path.join(ns.dir, "ledger"), os.path.join(ns.dir, "acks"), workers=ns.workers,
              total_workers=ns.total_workers, ops=ns.ops, seed=ns.seed,
              kill_every=tuple(ns.kill_every), snapshot_every=ns.snapshot_every,
              victims=ns.victims, lose_releases=ns.lose_releases)
    print(orjson.dumps(fig).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
