"""The long torture run: every phase in rotation until the time is up.

    python -m tools.torture --minutes 5            # or: python tools/torture/run.py --minutes 5
    python -m tools.torture --minutes 1 --phases crash,stress --seed 7 --out figures.json

Phases (see each module's docstring):

* ``stress``    8 processes on one ledger, SIGKILLed at random (stress.py)
* ``crash``     writers killed at the k-th IO call, partial writes (crash.py)
* ``stateful``  Hypothesis state machine against the reference model (stateful.py)
* ``pidns``     real PID reuse in a fresh PID namespace (pidns.py)
* ``diskfull``  a real tiny tmpfs filled up (diskfull.py)
* ``corpus``    the bad-input corpus, once (corpus.py)
* ``security``  the attack tests (tests/test_torture_security.py), once

Any violation stops the run with exit status 1 and the error; the figures
so far are printed either way (JSON on stdout, and ``--out FILE``).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

import orjson

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tools.torture.model import LostAcknowledged  # noqa: E402

PHASES = ["stress", "crash", "stateful", "pidns", "diskfull", "corpus", "security"]
ONCE = {"corpus", "security"}


def _ns(unshare: list[str], module: list[str], timeout: float = 600) -> dict[str, Any] | str:
    """Run a module in new namespaces; its JSON, or the reason it was skipped."""
    if not shutil.which("unshare"):
        return "skipped: unshare(1) not installed"
    if subprocess.run(["unshare", *unshare, "true"], capture_output=True).returncode != 0:
        return f"skipped: unshare {' '.join(unshare)} not permitted"
    p = subprocess.run(["unshare", *unshare, sys.executable, "-m", *module], cwd=REPO,
                       capture_output=True, timeout=timeout)
    out = p.stdout.decode().strip().splitlines()
    if p.returncode == 77:
        return "skipped: " + (out[-1] if out else "not permitted")
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(module)} exited {p.returncode}:\n{p.stderr.decode()[-6000:]}")
    return orjson.loads(out[-1])


def _add(total: dict[str, Any], fig: dict[str, Any]) -> None:
    for k, v in fig.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            total[k] = total.get(k, 0) + v
        elif isinstance(v, dict):
            _add(total.setdefault(k, {}), v)


def phase(name: str, work: str, rng: random.Random, left: float, quick: bool = False,
          lose_releases: int = 0) -> dict[str, Any]:
    seed = rng.randrange(1 << 30)
    if name == "stress":
        from . import stress
        d = tempfile.mkdtemp(dir=work, prefix="stress-")
        size = dict(workers=3, total_workers=5, ops=30) if quick else dict(workers=8, total_workers=24, ops=300)
        try:
            return stress.run(os.path.join(d, "ledger"), os.path.join(d, "acks"), **size,
                              kill_every=(0.1, 0.8), seed=seed, snapshot_every=50,
                              deadline=time.monotonic() + max(left, 5), lose_releases=lose_releases)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if name == "crash":
        from . import crash
        d = tempfile.mkdtemp(dir=work, prefix="crash-")
        try:
            return crash.run(d, rounds=200, seed=seed, deadline=time.monotonic() + max(left, 5))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if name == "stateful":
        from . import stateful
        return stateful.run(max_examples=150, steps=40)
    if name == "pidns":
        d = tempfile.mkdtemp(dir=work, prefix="pidns-")
        try:
            reuse = _ns(["--pid", "--fork", "--mount-proc"],
                        ["tools.torture.pidns", "reuse", os.path.join(d, "a"), "--rounds", "40"])
            if isinstance(reuse, str):
                return {"skipped": reuse}
            tick = _ns(["--pid", "--fork", "--mount-proc"],
                       ["tools.torture.pidns", "same-tick", os.path.join(d, "b"), "--rounds", "100"])
            reuse.pop("env", None)
            return {"reuse": reuse, "same_tick": tick}
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if name == "diskfull":
        res = _ns(["--mount"], ["tools.torture.diskfull", "--rounds", "3"])
        if isinstance(res, str):
            return {"skipped": res}
        res.pop("messages", None)
        return res
    if name == "corpus":
        from . import corpus
        d = tempfile.mkdtemp(dir=work, prefix="corpus-")
        try:
            fig = corpus.run_all(d)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if fig["failures"]:
            raise AssertionError("corpus:\n" + "\n".join(fig["failures"]))
        fig.pop("failures")
        return fig
    if name == "security":
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_torture_security.py"], cwd=REPO, capture_output=True)
        if p.returncode != 0:
            raise AssertionError("security tests failed:\n" + p.stdout.decode()[-6000:])
        import re
        m = re.search(r"(\d+) passed", p.stdout.decode())
        return {"tests_passed": int(m.group(1)) if m else 0}
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.torture", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="how long to run (default 5)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of: " + ", ".join(PHASES))
    ap.add_argument("--seed", type=int, default=None, help="seed of the run (default: random, printed)")
    ap.add_argument("--dir", default=None, help="work directory (default: a new one under $TMPDIR)")
    ap.add_argument("--out", default=None, help="also write the figures (JSON) here")
    ap.add_argument("--quick", action="store_true", help="small stress rounds (3 of 5 workers, 30 operations)")
    ap.add_argument("--inject-lost-release", type=int, default=0, metavar="N",
                    help="checks the checks: a stress worker acknowledges N releases it never makes; "
                         "the run must report them lost")
    ns = ap.parse_args(argv)
    phases = [p.strip() for p in ns.phases.split(",") if p.strip()]
    bad = set(phases) - set(PHASES)
    if bad:
        ap.error(f"unknown phase(s): {', '.join(sorted(bad))}")
    seed = ns.seed if ns.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    logging.getLogger("scopeledger").setLevel(logging.ERROR)  # torn lines etc. are expected
    work = ns.dir or tempfile.mkdtemp(prefix="sl-torture-")
    os.makedirs(work, exist_ok=True)
    t0 = time.monotonic()
    deadline = t0 + ns.minutes * 60
    # Every figure printed is counted: "lost" adds up the acknowledged
    # operations each phase found missing (a phase stops at a loss, with
    # the number it found).
    figures: dict[str, Any] = {"seed": seed, "minutes": ns.minutes, "phases": {}, "runs": {},
                               "seconds": {}, "lost": 0, "violations": []}
    status = 0
    # Every phase once, then the repeatable ones in turn until the deadline.
    order = list(phases)
    repeat = [p for p in phases if p not in ONCE]
    try:
        i = 0
        while True:
            if i < len(order):
                name = order[i]
            elif repeat and time.monotonic() < deadline:
                name = repeat[(i - len(order)) % len(repeat)]
            else:
                break
            i += 1
            s = time.monotonic()
            print(f"[{time.monotonic() - t0:7.1f}s] {name} ...", file=sys.stderr, flush=True)
            fig = phase(name, work, rng, deadline - time.monotonic(), ns.quick, ns.inject_lost_release)
            figures["seconds"][name] = round(figures["seconds"].get(name, 0) + time.monotonic() - s, 1)
            figures["runs"][name] = figures["runs"].get(name, 0) + 1
            _add(figures["phases"].setdefault(name, {}), {k: v for k, v in fig.items() if k != "skipped"})
            if "skipped" in fig:
                figures["phases"][name]["skipped"] = fig["skipped"]
            print(f"           {orjson.dumps(fig).decode()[:400]}", file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - reported with the figures
        figures["violations"].append(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, LostAcknowledged):
            figures["lost"] += len(exc.lost)
        traceback.print_exc()
        status = 1
    finally:
        figures["lost"] += sum(p.get("lost", 0) for p in figures["phases"].values())
        figures["total_seconds"] = round(time.monotonic() - t0, 1)
        if ns.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    out = orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode()
    print(out)
    if ns.out:
        with open(ns.out, "w") as f:
            f.write(out + "\n")
    return status


if __name__ == "__main__":
    from tools.torture.run import main as _main  # as a script: import as the package

    sys.exit(_main())
