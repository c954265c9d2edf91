"""Canonical paths: symlinks in the existing part of a path resolved (IO).

The rule algebra is lexical (``_rules.normalize_path``); this module is the
one place the filesystem is asked about a rule's path, at the API boundary,
never in the fold. It returns what ``os.path.realpath`` returns (checked
against it in ``tests/test_paths.py``), at a fraction of the cost, because
symlink resolution was the largest single cost of ``register``
(BENCHMARKS.md): an existing path costs one ``open(O_PATH)`` and one
``readlink`` of ``/proc/self/fd/N``; a missing one stops at its first
missing component (nothing below a missing directory can be a symlink).
"""

from __future__ import annotations

import os
import stat

_PROC_FD = "/proc/self/fd/"
_HAVE_PROC = os.path.isdir(_PROC_FD)
access, F_OK = os.access, os.F_OK


def _resolved(path: str) -> str:
    """realpath of an existing ``path`` through the kernel's own resolution."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        real = os.readlink(_PROC_FD + str(fd))
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)
    if real.startswith("/") and not real.endswith(" (deleted)"):
        return real
    return os.path.realpath(path)


def canonical_path(path: str) -> str:
    """The canonical form of a normalised absolute ``path``: symlinks in its
    existing part resolved, the missing rest appended as it is.

    Args:
        path: normalised absolute path, ``str``.

    Returns:
        ``str``, equal to ``os.path.realpath(path)``.
    """
    if _HAVE_PROC:
        # os.access answers without raising (an exception costs as much as
        # the syscall): the common missing-path case stays cheap.
        if access(path, F_OK):
            return _resolved(path)
        head = path
        while head != "/":
            head = head[:head.rfind("/")] or "/"
            if head == "/" or access(head, F_OK):
                break
        # The first missing component may be a dangling symlink (or a loop,
        # or one created just now): realpath then follows its text.
        first = path[len(head):].split("/", 2)[1] if head != "/" else path.split("/", 2)[1]
        if access((head if head != "/" else "") + "/" + first, F_OK, follow_symlinks=False):
            return os.path.realpath(path)
        if head == "/":
            return path
        return _resolved(head) + path[len(head):]
    # Missing (or no /proc): walk down, stop at the first missing component.
    done = "/"
    parts = path.split("/")[1:] if path != "/" else []
    for i, part in enumerate(parts):
        candidate = done + part if done == "/" else done + "/" + part
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            rest = "/".join(parts[i:])
            return (done if done == "/" else done + "/") + rest if rest else done
        except OSError:
            return os.path.realpath(path)
        if stat.S_ISLNK(st.st_mode):
            return os.path.realpath(path)  # a symlink on the way: the full algorithm
        done = candidate
    return done
