"""What the side-by-side tools share (``wait_look.py``, ``watch_look.py``):
a script run against one tree's scopeledger, and a new ledger to run it on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from typing import Callable


def run_in(tree: str, script: str, args: list[str], prefix: str) -> dict[str, float]:
    """Run ``python -c script args...`` with ``tree``'s scopeledger first on
    the import path, in a new directory of its own (``-c`` puts the working
    directory first on ``sys.path``: run from the repository root, every
    tree measured was the repository's); the JSON object of its last line
    of output. Exits naming ``tree`` when it fails, or when the script says
    (``"from"``: the module's file) it imported scopeledger from elsewhere."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    root = tempfile.mkdtemp(prefix=f"{prefix}-tree-")
    out = subprocess.run([sys.executable, "-c", script, *args[:2], root, *args[2:]], env=env,
                         capture_output=True, text=True, cwd=root)
    if out.returncode:
        raise SystemExit(f"{tree}: the measurement failed:\n{out.stderr}")
    got: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if not str(got.pop("from", os.path.abspath(tree))).startswith(os.path.abspath(tree)):
        raise SystemExit(f"{tree}: scopeledger was imported from elsewhere")
    return got


def place(where: str | None, prefix: str) -> str:
    """A new ledger: a directory under ``where`` (a temporary one by default), or a new
    schema (``?schema=NAME``) of the PostgreSQL URL ``where``."""
    if where and "://" in where:
        sep = "&" if "?" in where else "?"
        return f"{where}{sep}schema={prefix}_{uuid.uuid4().hex[:12]}"
    base = where or tempfile.mkdtemp(prefix=f"{prefix}-")
    return os.path.join(base, f"led-{uuid.uuid4().hex[:8]}")


def alternated(trees: list[str], rounds: int,
               measure: Callable[[str], dict[str, float]]) -> dict[str, list[dict[str, float]]]:
    """``measure(tree)`` for each tree, ``rounds`` times, the trees' order
    reversed every other round (so that neither always runs first)."""
    results: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else list(reversed(trees)):
            results[tree].append(measure(tree))
    return results
