"""Shared bits of tests/test_torture_*.py: makes ``tools.torture``
importable, and runs helper scripts inside new namespaces (skipping with
the reason where that is not permitted)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import orjson
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def tree_modes(root):
    """``{path: permission bits}`` of every directory and file under ``root``."""
    import stat

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        out[dirpath] = stat.S_IMODE(os.lstat(dirpath).st_mode)
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[p] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def run_module(args, timeout=120, check=True):
    """``python -m <args...>`` from the repository root; returns the
    CompletedProcess. Fails the test with its stderr when it fails."""
    p = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout.decode()[-4000:]}\n"
                    f"stderr:\n{p.stderr.decode()[-6000:]}")
    return p


def in_namespace(unshare_args, module_args, timeout=120):
    """Run ``python -m module_args`` under ``unshare unshare_args``; skip
    the test (with the reason) when namespaces are not permitted here.
    The module prints one JSON object on its last stdout line."""
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run(["unshare", *unshare_args, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare {' '.join(unshare_args)} not permitted here: "
                    f"{probe.stderr.decode().strip()}")
    p = subprocess.run(["unshare", *unshare_args, sys.executable, "-m", *module_args],
                       cwd=REPO, capture_output=True, timeout=timeout)
    out = p.stdout.decode().strip().splitlines()
    if p.returncode == 77:
        pytest.skip(out[-1] if out else "skipped inside the namespace")
    if p.returncode != 0:
        pytest.fail(f"{' '.join(module_args)} in unshare {' '.join(unshare_args)} exited "
                    f"{p.returncode}\nstdout:\n{p.stdout.decode()[-4000:]}\nstderr:\n"
                    f"{p.stderr.decode()[-6000:]}")
    return orjson.loads(out[-1])
