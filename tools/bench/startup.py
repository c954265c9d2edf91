#!/usr/bin/env python
"""Start-up cost of the command line: whole-process CPU time against ``python3 -c pass``,
and the imports that make it (issue 18).

Usage (from the repository root)::

    .venv/bin/python tools/bench/startup.py              # 15 interleaved rounds
    .venv/bin/python tools/bench/startup.py --rounds 3   # a quick look
    .venv/bin/python tools/bench/startup.py --before /tmp/main-tree   # against another tree

``--before DIR``: DIR is a source tree of the version to compare with (say ``git worktree
add --detach /tmp/main-tree main``); each ``ledger`` command also runs with
``PYTHONPATH=DIR`` (so the same interpreter and console script import that tree's
``scopeledger``), labelled ``(before)``, in the same interleaved rounds, and the import
profiles are taken of both.

Each round runs every command once, in turn (interleaved, so drift and bursts of outside
load hit all alike), as a child of this process with its output thrown away; the child's
CPU time is ``ru_utime + ru_stime`` from ``os.wait4``, which includes the descendants it
waited for (``ledger run -- true`` counts the ``true`` it runs). Reported per command: the
median CPU time and its ratio to the median of ``python3 -c pass`` run by the same
interpreter (``sys.executable``, so the same ``site`` set-up), the minimum, and the median
wall time. ``ledger`` is the console script next to ``sys.executable`` (else the same
entry point through ``-c``); ``ledger run`` uses a ledger made in a temporary directory
before the first round. ``sh -c true`` and ``flock FILE true`` are references (no target).
Issue 18's targets (:data:`TARGETS`: a ratio of medians at most so much) are printed with
each command, PASS or MISS.

Bytecode: the children run without ``PYTHONDONTWRITEBYTECODE`` (whatever this process has),
so that the untimed first run of each command caches the bytecode of the tree measured, as
``pip install`` does at install time; with it set, every start compiled the package from
source again (about 10 ms for ``--version``, 60 ms for ``run``: not what an installed
``ledger`` pays).

Then ``python -X importtime`` for ``import scopeledger``, ``ledger --version`` and
``ledger --help``: the self time of every imported module, summed by top-level package,
the largest first, and the largest modules (``--import-runs`` runs, the first thrown away
as it may compile bytecode; the median of the others).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

BASELINE = "python3 -c pass"
BEFORE = " (before)"

#: Issue 18's start-up targets: the command's median CPU time at most this many times
#: :data:`BASELINE`'s.
TARGETS = {"ledger --version": 2.0, "ledger --help": 2.0, "ledger run -- true": 3.0}


def verdict(label: str, ratio: float | None) -> str:
    """``PASS``/``MISS`` against :data:`TARGETS` (``(before)`` rows too), ``""`` for a
    command without a target."""
    limit = TARGETS.get(label.replace(BEFORE, ""))
    if limit is None or ratio is None:
        return ""
    return f"{'PASS' if ratio <= limit else 'MISS'} (≤ {limit:g}×)"


def ledger_argv() -> list[str]:
    """How to run the ``ledger`` command with this interpreter."""
    script = os.path.join(os.path.dirname(sys.executable), "ledger")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [sys.executable, script]
    return [sys.executable, "-c", "import sys; from scopeledger.cli import main; sys.argv[0] = 'ledger'; "
            "sys.exit(main())"]


def _env(tree: str | None = None, compare: bool = False) -> dict[str, str]:
    """This process's environment without the variables an enclosing ``ledger run`` sets
    and without ``PYTHONDONTWRITEBYTECODE`` (see the module's docstring); with ``tree``,
    ``PYTHONPATH`` naming it (``--before``). ``compare`` (both sides of ``--before``):
    ``PYTHONSAFEPATH=1``, so that ``python -c`` does not import the ``scopeledger`` of the
    working directory (a source tree) ahead of ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SCOPELEDGER_") and k != "PYTHONDONTWRITEBYTECODE"}
    if tree is not None:
        env["PYTHONPATH"] = tree
    if compare or tree is not None:
        env["PYTHONSAFEPATH"] = "1"
    return env


def commands(work: str) -> dict[str, list[str]]:
    """The commands measured, by label; ``work`` is a directory for the ledger."""
    ledger = ledger_argv()
    out = {
        BASELINE: [sys.executable, "-c", "pass"],
        "ledger --version": ledger + ["--version"],
        "ledger --help": ledger + ["--help"],
        "ledger run -- true": ledger + ["--ledger", os.path.join(work, "ledger"), "run", "--write",
                                        os.path.join(work, "tree"), "--", "true"],
        "sh -c true": ["sh", "-c", "true"],
    }
    if shutil.which("flock"):
        out["flock FILE true"] = ["flock", os.path.join(work, "lockfile"), "true"]
    return out


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Run ``argv`` to completion: (CPU seconds of the child and what it waited for, wall
    seconds, exit status)."""
    path = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        t0 = time.perf_counter()
        pid = os.posix_spawn(path, argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2)])
        _, status, ru = os.wait4(pid, 0)
        wall = time.perf_counter() - t0
    finally:
        os.close(devnull)
    return ru.ru_utime + ru.ru_stime, wall, os.waitstatus_to_exitcode(status)


def measure(rounds: int = 15, log: Any = None, import_runs: int = 3, before: str | None = None) -> dict[str, Any]:
    """Whole-process CPU and wall time of each command, interleaved ``rounds`` times
    (with ``before``: each ``ledger`` command also with that tree, see ``--before``)."""
    work = tempfile.mkdtemp(prefix="bench-startup-")
    try:
        cmds = commands(work)
        envs = {label: _env(compare=before is not None) for label in cmds}
        if before is not None:
            for label in [k for k in cmds if k.startswith("ledger")]:
                cmds[label + BEFORE] = cmds[label]
                envs[label + BEFORE] = _env(before)
            cmds = dict(sorted(cmds.items(), key=lambda kv: kv[0].replace(BEFORE, "")))
        for label, argv in cmds.items():  # one untimed run each: page cache, bytecode, the ledger
            _, _, code = run_once(argv, envs[label])
            if code != 0:
                raise RuntimeError(f"{label}: exit status {code} ({argv})")
        cpu: dict[str, list[float]] = {k: [] for k in cmds}
        wall: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(rounds):
            for label, argv in cmds.items():
                c, w, code = run_once(argv, envs[label])
                if code != 0:
                    raise RuntimeError(f"{label}: exit status {code}")
                cpu[label].append(c)
                wall[label].append(w)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(cpu[BASELINE])
    out: dict[str, Any] = {"rounds": rounds, "baseline": BASELINE, "commands": {},
                           "editable_installs": editable_installs()}
    for label in cmds:
        m = statistics.median(cpu[label])
        out["commands"][label] = {
            "argv": cmds[label], "cpu_ms": m * 1e3, "cpu_min_ms": min(cpu[label]) * 1e3,
            "wall_ms": statistics.median(wall[label]) * 1e3,
            "vs_python": m / base if base else None,
        }
        if log:
            log(f"startup {label:31s}: CPU {m * 1e3:7.1f} ms ({m / base if base else 0:.2f}× {BASELINE}) "
                + verdict(label, m / base if base else None))
    out["imports"] = import_offenders(import_runs, compare=before is not None)
    if before is not None:
        out["imports"].update({k + BEFORE: v for k, v in import_offenders(import_runs, before).items()})
    return out


def editable_installs() -> list[str]:
    """The editable installs' ``.pth`` files in this interpreter's site-packages: each
    puts an import hook in every start, ``python3 -c pass`` included (setuptools' imports
    pathlib, urllib.parse, ipaddress, ...: about 10 ms of CPU here), which a wheel install
    does not; ratios to :data:`BASELINE` are then lower than an installed ``ledger``'s."""
    import glob
    import site

    return sorted(os.path.basename(p) for d in site.getsitepackages()
                  for p in glob.glob(os.path.join(d, "__editable__*.pth")))


# ----------------------------------------------------------------------------- importtime


def parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    """``python -X importtime`` output as (module, self µs, cumulative µs)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        try:
            self_us, cum_us, name = line[len("import time:"):].split("|", 2)
            rows.append((name.strip(), int(self_us), int(cum_us)))
        except ValueError:
            continue
    return rows


def import_profile(argv: list[str], runs: int = 3, tree: str | None = None,
                   compare: bool = False) -> dict[str, Any]:
    """Self time by top-level package (median over runs after the first), and the total
    (``tree``: that tree's ``scopeledger``, as ``--before``; ``compare``: see :func:`_env`)."""
    env = _env(tree, compare)
    per_run: list[dict[str, int]] = []
    per_module: list[dict[str, int]] = []
    totals: list[int] = []
    counts: dict[str, int] = {}
    for i in range(runs):
        p = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=env)
        rows = parse_importtime(p.stderr)
        if not rows:
            raise RuntimeError(f"no -X importtime output from {argv}: {p.stderr[-500:]}")
        if i == 0 and runs > 1:
            continue
        by_pkg: dict[str, int] = defaultdict(int)
        n: dict[str, int] = defaultdict(int)
        for name, self_us, _ in rows:
            pkg = name.split(".")[0]
            by_pkg[pkg] += self_us
            n[pkg] += 1
        per_run.append(by_pkg)
        per_module.append({name: self_us for name, self_us, _ in rows})
        totals.append(sum(by_pkg.values()))
        counts = dict(n)
    pkgs = {k for r in per_run for k in r}
    med = {k: statistics.median(r.get(k, 0) for r in per_run) for k in pkgs}
    top = sorted(med.items(), key=lambda kv: -kv[1])
    mods = {k for r in per_module for k in r}
    med_mod = sorted(((k, statistics.median(r.get(k, 0) for r in per_module)) for k in mods), key=lambda kv: -kv[1])
    return {"total_ms": statistics.median(totals) / 1e3, "modules": sum(counts.values()),
            "packages": [{"package": k, "self_ms": v / 1e3, "modules": counts.get(k, 0)} for k, v in top],
            "top_modules": [{"module": k, "self_ms": v / 1e3} for k, v in med_mod[:10]]}


def import_offenders(runs: int = 3, tree: str | None = None, compare: bool = False) -> dict[str, Any]:
    """:func:`import_profile` of ``import scopeledger``, ``ledger --version``, ``--help`` and
    ``run -- true`` (on a ledger in a temporary directory), ``tree``: that tree's, as
    ``--before``; ``compare``: see :func:`_env`."""
    ledger = ledger_argv()
    work = tempfile.mkdtemp(prefix="bench-startup-imports-")
    try:
        return {
            "import scopeledger": import_profile([sys.executable, "-c", "import scopeledger"], runs, tree, compare),
            "ledger --version": import_profile(ledger + ["--version"], runs, tree, compare),
            "ledger --help": import_profile(ledger + ["--help"], runs, tree, compare),
            "ledger run -- true": import_profile(commands(work)["ledger run -- true"], runs, tree, compare),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- report


def render(s: dict[str, Any], top: int = 8) -> str:
    import run

    rows = []
    for label, r in s["commands"].items():
        rows.append([label, f"{r['cpu_ms']:.1f}", f"{r['vs_python']:.2f}×" if r["vs_python"] is not None else "—",
                     verdict(label, r["vs_python"]) or "—", f"{r['cpu_min_ms']:.1f}", f"{r['wall_ms']:.1f}"])
    out = [run._table(
        "Start-up: whole-process CPU time",
        ["command", "CPU ms (median)", f"÷ {s['baseline']}", "target", "CPU ms (min)", "wall ms (median)"], rows,
        f"{s['rounds']} interleaved rounds; CPU: user + system of the child and what it waited for "
        "(os.wait4); the same interpreter for python3 and ledger."
        + (f" Note: an editable install ({', '.join(s['editable_installs'])}) adds its import hook to every "
           "start, the baseline's too; with a wheel install the baseline is cheaper and each ratio higher."
           if s.get("editable_installs") else ""))]
    for label, p in s.get("imports", {}).items():
        rows = [[x["package"], f"{x['self_ms']:.1f}", str(x["modules"])] for x in p["packages"][:top]]
        out.append(run._table(
            f"Imports of `{label}`: {p['total_ms']:.1f} ms in {p['modules']} modules (python -X importtime)",
            ["top-level package", "self ms (summed)", "modules"], rows,
            "Largest modules (self ms): " + ", ".join(f"{m['module']} {m['self_ms']:.1f}"
                                                      for m in p["top_modules"][:6]) + "."))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--import-runs", type=int, default=3)
    ap.add_argument("--before", metavar="DIR", help="a source tree to compare with, interleaved "
                    "(its scopeledger on PYTHONPATH)")
    args = ap.parse_args(argv)
    import run

    before = os.path.abspath(args.before) if args.before else None
    print(render(measure(args.rounds, log=run._log, import_runs=args.import_runs, before=before)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
