"""Shared bits of tests/test_torture_*.py (and others): makes ``tools.torture``
importable, runs helper scripts inside new namespaces (skipping with
the reason where that is not permitted), runs code as user nobody, plants
files of other kinds."""

from __future__ import annotations

import contextlib
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
    for dirpath, _dirnames, filenames in os.walk(root):
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


def _nobody_ids():
    import pwd

    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


#: uid and gid of user ``nobody`` (65534 where there is none).
NOBODY_UID, NOBODY_GID = _nobody_ids()


def shared_ledger(build):
    """A new ledger, built by ``build(path)``, then given to user nobody
    (``chown -R``) under a new 0755 directory in /tmp that nobody can reach.
    Returns ``(path, base)``; remove ``base`` when done. Skips unless root."""
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("making files of another user, and becoming it, needs root")
    base = tempfile.mkdtemp(prefix="scopeledger-test-", dir="/tmp")
    os.chmod(base, 0o755)
    path = os.path.join(base, "ledger")
    build(path)
    for dirpath, dirnames, filenames in os.walk(path):
        os.lchown(dirpath, NOBODY_UID, NOBODY_GID)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), NOBODY_UID, NOBODY_GID)
    return path, base


def run_as_nobody(fn):
    """Run ``fn()`` in a forked child that became user nobody; returns
    ``(exit code, what it wrote on stdout and stderr)``. A ``SystemExit``
    gives its code, an exception 1 with its traceback. The child cannot
    import anything this process has not (Python lives where nobody cannot
    read): import what ``fn`` needs first. Skips unless root."""
    import traceback

    if os.geteuid() != 0:
        pytest.skip("becoming another user needs root")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 70
        try:
            os.close(r)
            os.dup2(w, 1)
            os.dup2(w, 2)
            sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
            os.setgroups([])
            os.setgid(NOBODY_GID)
            os.setuid(NOBODY_UID)
            code = fn() or 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def plant(path, kind):
    """Put a ``kind`` of file (``'socket'``, ``'fifo'``, ``'directory'``)
    where the file ``path`` is (it is removed)."""
    import socket
    import tempfile

    os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "directory":
        os.mkdir(path, 0o700)
    else:  # bound at a short path (sun_path holds 108 bytes), then moved
        short = tempfile.mkdtemp()
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(os.path.join(short, "s"))
        os.rename(os.path.join(short, "s"), path)
        os.rmdir(short)


def as_v1_event(ev):
    """A v2 event (dict) as the v1 code wrote it: ``v`` 1, v1 process
    identities (``pid``, wall-clock ``start``, ``boot``, ``pidns``), and
    rules without the identity a v2 line gives them."""
    def v1(i):
        return {"pid": i["pid"], "start": 1764425990.12 + (i["ticks"] or 0) / 100, "boot": i["boot"] or "b",
                "pidns": i["pidns"]}
    ev = dict(ev, v=1, actor=v1(ev["actor"]))
    ev.pop("last_seen", None)  # (v2's: when a reclaimed holder was last seen alive)
    if "holder" in ev:
        ev["holder"] = dict(ev["holder"], process=v1(ev["holder"]["process"]))
    if "process" in ev:
        ev["process"] = v1(ev["process"])
    if "holder" in ev:
        ev["holder"]["rules"] = [r[:3] for r in ev["holder"]["rules"]]
    if "request" in ev:
        ev["request"] = dict(ev["request"], rules=[r[:3] for r in ev["request"]["rules"]])
    if ev.get("rule") is not None:
        ev["rule"] = ev["rule"][:3]
    return ev
