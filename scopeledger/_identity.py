"""Process identity and liveness verdicts as plain data: what the log
records about a process, and what a probe answers about it.

Pure: reading a process's identity from /proc, and judging whether it is
alive, is :mod:`scopeledger._process`'s (the IO layer); this module only
holds the value, so that the fold and the format need no psutil and no
/proc. The fields are described in ``_process``'s docstring.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Union

import attrs


@attrs.frozen(slots=True, kw_only=True)
class ProcessIdentity:
    """Who a process is, robust to pid reuse (see the module docstring).

    Attributes:
        pid: ``int``, as seen from PID namespace ``pidns``.
        boot: boot id of the kernel the process ran under, ``str``;
            ``None`` when it could not be read.
        host: machine id of the host, ``str`` (32 hex digits); ``None``
            when the host has none (or for a v1 identity).
        ticks: start in clock ticks since boot, ``int`` > 0; ``None`` when
            unknown (then a live pid cannot be told from a later process on
            the same pid: ``UNKNOWN``).
        pidns: the PID namespace ``pid`` is a number in, ``str``; ``None``
            when unknown.
        start: v1 identities only: start time in seconds since the epoch
            (UTC, wall clock, as psutil gave it), ``float`` or ``None``.
        format: ``2``, or ``1`` for an identity read from a v1 line (its
            ``start``, not ``ticks`` and ``host``, identifies it).
    """

    pid: int
    boot: str | None
    host: str | None = None
    ticks: int | None = None
    pidns: str | None = None
    start: float | None = None
    format: int = 2

    def to_json(self) -> dict[str, Any]:
        """The log's form of this identity (v2 keys, or v1's for a v1 one)."""
        if self.format == 1:
            out: dict[str, Any] = {"pid": self.pid, "start": self.start, "boot": self.boot}
            if self.pidns is not None:
                out["pidns"] = self.pidns
            return out
        return {"host": self.host, "boot": self.boot, "pid": self.pid, "ticks": self.ticks,
                "pidns": self.pidns}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "ProcessIdentity":
        """Inverse of :meth:`to_json`: a dict with ``start`` is a v1
        identity. Raises KeyError on a missing key (types are the
        decoder's business)."""
        if "start" in value:
            return cls(pid=value["pid"], boot=value["boot"], start=value["start"],
                       pidns=value.get("pidns"), format=1)
        return cls(pid=value["pid"], boot=value["boot"], host=value["host"], ticks=value["ticks"],
                   pidns=value["pidns"])


class Liveness(enum.Enum):
    """What a probe learned about a holder's process. ``ALIVE`` and
    ``UNKNOWN`` keep the holder; the others are reclaim reasons."""

    ALIVE = "alive"
    UNKNOWN = "unknown"
    GONE = "process_gone"
    ZOMBIE = "zombie"
    PID_REUSED = "pid_reused"
    EARLIER_BOOT = "earlier_boot"
    NAMESPACE_GONE = "namespace_gone"

    @property
    def dead(self) -> bool:
        return self not in (Liveness.ALIVE, Liveness.UNKNOWN)


@attrs.frozen(slots=True)
class Verdict:
    """A probe's answer with its reason.

    Attributes:
        liveness: :class:`Liveness`.
        why: ``str``, one lowercase clause: for ``UNKNOWN`` what could not
            be decided and why (``"on another host (<machine id>)"``), for a
            dead one what proved it; ``""`` when there is nothing to say.
    """

    liveness: Liveness
    why: str = ""

    @property
    def dead(self) -> bool:
        """``True`` for a reclaim reason (proof of death)."""
        return self.liveness.dead


#: A liveness probe: identity -> :class:`Verdict`, :class:`Liveness`, or a
#: plain bool (True = alive, False = gone), as the seed's
#: ``reclaim_stale_with`` predicate.
Probe = Callable[[ProcessIdentity], Union[Verdict, Liveness, bool]]
