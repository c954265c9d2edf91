"""Process helpers shared by the torture phases: die-with-parent children,
a child subreaper that reaps orphans, killing whole process groups."""

from __future__ import annotations

import ctypes
import os
import signal
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def become_subreaper() -> None:
    """Orphans of our descendants are re-parented to us (not to pid 1,
    which in a container may never reap them)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def reap_orphans(keep: set[int]) -> int:
    """Reap exited children that are not in ``keep`` (those belong to
    Popen objects). Returns how many were reaped."""
    n = 0
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return n
        if info is None:
            return n
        if info.si_pid in keep:
            # A Popen'd worker: let Popen reap it; look for others only if
            # there are non-worker zombies (scan /proc for our children).
            others = [p for p in zombie_children() if p not in keep]
            if not others:
                return n
            for p in others:
                try:
                    os.waitpid(p, os.WNOHANG)
                    n += 1
                except ChildProcessError:
                    pass
            return n
        try:
            os.waitpid(info.si_pid, 0)
            n += 1
        except ChildProcessError:
            pass


def zombie_children() -> list[int]:
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2:].split()
        if rest[0] == b"Z" and int(rest[1]) == me:
            out.append(int(name))
    return out


def fork_sleeper() -> int:
    """Fork a child that sleeps until killed and dies with its parent.
    Returns its pid (in the parent)."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(0)
            while True:
                time.sleep(3600)
        finally:
            os._exit(0)
    return pid


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
