"""Process identity and liveness (psutil).

A pid alone is not an identity: pids are reused, and a zombie answers
``kill(pid, 0)``. A holder's process is identified by ``(pid, start, boot,
pidns)``: the process start time as psutil reports it (seconds since the
epoch, UTC, ``float``), the kernel's boot id, and the PID namespace the pid
is a number in (the same pid names another process in another namespace). The liveness probe fails closed, like
filelock's ``(pid, start time)`` check: when it cannot prove a process dead
(access denied, start time unreadable), the process counts as alive.
"""

from __future__ import annotations

import enum
import os
from typing import Any, Callable, Union

import attrs
import psutil

_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_boot_id_cache: str | None = None
_pidns_cache: tuple[int, str | None] | None = None

#: Start times closer than this (seconds) are the same process. psutil derives
#: them from clock ticks (1/100 s on Linux) plus the boot time.
START_TOLERANCE = 0.001


def boot_id() -> str:
    """The kernel's boot id (``/proc/sys/kernel/random/boot_id``), or
    ``"btime:<seconds>"`` from psutil's boot time where that file is missing.
    Cached for the life of the process."""
    global _boot_id_cache
    if _boot_id_cache is None:
        try:
            with open(_BOOT_ID_PATH, encoding="ascii") as f:
                _boot_id_cache = f.read().strip()
        except OSError:
            _boot_id_cache = f"btime:{int(psutil.boot_time())}"
    return _boot_id_cache


def pid_namespace() -> str | None:
    """The PID namespace of this process (``/proc/self/ns/pid``'s target,
    e.g. ``"pid:[4026531836]"``), or ``None`` where it cannot be read."""
    global _pidns_cache
    pid = os.getpid()
    if _pidns_cache is None or _pidns_cache[0] != pid:
        try:
            ns: str | None = os.readlink("/proc/self/ns/pid")
        except OSError:
            ns = None
        _pidns_cache = (pid, ns)
    return _pidns_cache[1]


@attrs.frozen(slots=True)
class ProcessIdentity:
    """Who a process is, robust to pid reuse.

    Attributes:
        pid: ``int``, as seen from this pid namespace.
        start: process start time, seconds since the epoch (UTC), ``float``;
            ``None`` when it could not be read (then liveness is undecidable
            beyond "the pid exists").
        boot: boot id of the kernel the process ran under, ``str``.
        pidns: the PID namespace ``pid`` is a number in (see
            :func:`pid_namespace`), ``str``; ``None`` when unknown (then
            the pid is taken to be in the prober's namespace).
    """

    pid: int
    start: float | None
    boot: str
    pidns: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self.pid, "start": self.start, "boot": self.boot}
        if self.pidns is not None:
            out["pidns"] = self.pidns
        return out

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "ProcessIdentity":
        return cls(value["pid"], value["start"], value["boot"], value.get("pidns"))


def identify(pid: int | None = None) -> ProcessIdentity:
    """The identity of process ``pid`` (default: the calling process).

    Returns:
        :class:`ProcessIdentity`; ``start`` is ``None`` when psutil may not
        read it (access denied).

    Raises:
        ProcessLookupError: no process has this pid.
        TypeError: ``pid`` is not an ``int``. ValueError: ``pid`` <= 0.
    """
    if pid is None:
        pid = os.getpid()
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TypeError(f"pid must be an int, not {type(pid).__name__}")
    if pid <= 0:
        raise ValueError(f"pid must be positive, got {pid}")
    try:
        start: float | None = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        raise ProcessLookupError(f"no process with pid {pid}") from None
    except (psutil.AccessDenied, OSError):
        start = None
    return ProcessIdentity(pid, start, boot_id(), pid_namespace())


class Liveness(enum.Enum):
    """What a probe learned about a holder's process. ``ALIVE`` and
    ``UNKNOWN`` keep the holder; the others are reclaim reasons."""

    ALIVE = "alive"
    UNKNOWN = "unknown"
    GONE = "process_gone"
    ZOMBIE = "zombie"
    PID_REUSED = "pid_reused"
    EARLIER_BOOT = "earlier_boot"

    @property
    def dead(self) -> bool:
        return self not in (Liveness.ALIVE, Liveness.UNKNOWN)


#: A liveness probe: identity -> Liveness, or a plain bool (True = alive,
#: False = gone), as the seed's ``reclaim_stale_with`` predicate.
Probe = Callable[[ProcessIdentity], Union[Liveness, bool]]


def probe(ident: ProcessIdentity) -> Liveness:
    """The default liveness probe (psutil).

    Order: another boot id -> ``EARLIER_BOOT``; a pid from another PID
    namespace -> ``UNKNOWN`` (kept: that number names another process
    here, or none); no such pid -> ``GONE`` (when ``kill(pid, 0)`` agrees:
    /proc mounted with ``hidepid=2`` hides live processes); a start time
    differing by more than :data:`START_TOLERANCE` -> ``PID_REUSED``, unless
    by whole seconds (a step of the wall clock moves psutil's start times by
    whole seconds: ``UNKNOWN``, kept); status zombie -> ``ZOMBIE``; access
    denied or unreadable -> ``UNKNOWN`` (kept); else ``ALIVE``.
    """
    if ident.boot != boot_id():
        return Liveness.EARLIER_BOOT
    if ident.pidns is not None and ident.pidns != pid_namespace():
        return Liveness.UNKNOWN
    try:
        proc = psutil.Process(ident.pid)
    except psutil.NoSuchProcess:
        return _gone_or_hidden(ident.pid)
    except (psutil.AccessDenied, OSError):
        return Liveness.UNKNOWN
    try:
        stepped = False
        if ident.start is not None:
            d = proc.create_time() - ident.start
            if abs(d) > START_TOLERANCE:
                if abs(d - round(d)) > START_TOLERANCE:
                    return Liveness.PID_REUSED
                stepped = True  # whole seconds: a clock step, or a reuse; cannot tell
        if proc.status() == psutil.STATUS_ZOMBIE:
            return Liveness.ZOMBIE  # ours, or a stranger after ours: dead either way
        if stepped:
            return Liveness.UNKNOWN
    except psutil.NoSuchProcess:
        return _gone_or_hidden(ident.pid)
    except (psutil.AccessDenied, OSError):
        return Liveness.UNKNOWN
    return Liveness.ALIVE


def _gone_or_hidden(pid: int) -> Liveness:
    """psutil sees no such pid; ``kill(pid, 0)``, which /proc's ``hidepid``
    does not affect, decides between gone and hidden (kept)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return Liveness.GONE
    except OSError:  # EPERM: it exists, owned by someone else
        return Liveness.UNKNOWN
    return Liveness.UNKNOWN


def run_probe(fn: Probe, ident: ProcessIdentity) -> Liveness:
    """Call a probe and normalise its answer; an exception inside the probe
    counts as ``UNKNOWN`` (never reclaim what you cannot prove dead)."""
    try:
        answer = fn(ident)
    except Exception:  # noqa: BLE001 - fail closed
        return Liveness.UNKNOWN
    if isinstance(answer, Liveness):
        return answer
    return Liveness.ALIVE if answer else Liveness.GONE
