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
        session: the PostgreSQL client session (its ``sessions.id``, an
            ``int`` >= 1) of the ledger that bound a holder to this
            process (its grant, or an ``attach``): what vouches for the
            holder to checkers on other hosts, who cannot see the process
            (``scopeledger._sessions``). ``None``: none (every holder of a
            ledger in a directory; a v1 identity; an actor).
    """

    pid: int
    boot: str | None
    host: str | None = None
    ticks: int | None = None
    pidns: str | None = None
    start: float | None = None
    format: int = 2
    session: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The log's form of this identity (v2 keys, or v1's for a v1 one;
        ``session`` only when there is one)."""
        if self.format == 1:
            out: dict[str, Any] = {"pid": self.pid, "start": self.start, "boot": self.boot}
            if self.pidns is not None:
                out["pidns"] = self.pidns
            return out
        if self.session is not None:
            return {"host": self.host, "boot": self.boot, "pid": self.pid, "ticks": self.ticks,
                    "pidns": self.pidns, "session": self.session}
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
                   pidns=value["pidns"], session=value.get("session"))


def on_another_host(ident: ProcessIdentity, here_host: str | None, here_boot: str | None) -> bool:
    """Whether a checker on host ``here_host`` (machine id, or ``None``)
    under boot ``here_boot`` (boot id, or ``None``) cannot judge the
    process of ``ident`` by its own ``/proc``: not the same running kernel
    (same boot id: judged here, whatever the machine ids say) and not the
    same machine (same machine id: an earlier boot, judged here). So: on
    another host, or where that cannot be told from an earlier boot (a
    machine id missing on either side). A v1 identity is never (it is judged
    as it always was)."""
    if ident.format == 1:
        return False
    if ident.boot is not None and ident.boot == here_boot:
        return False
    return ident.host is None or ident.host != here_host


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
    #: The holder's lease ran out (``scopeledger._lease``): not renewed
    #: within its ttl and the grace after it, on the clock of the boot that
    #: last renewed it. Also a holder on another host whose PostgreSQL
    #: client session's lease ended more than its grace ago on the
    #: server's clock (``scopeledger._sessions``).
    LEASE_EXPIRED = "lease_expired"
    #: A holder on another host, on PostgreSQL (``scopeledger._sessions``):
    #: the client session that vouched for it was closed (the ledger that
    #: bound it was closed without releasing it).
    SESSION_CLOSED = "session_closed"
    #: A holder on another host, on PostgreSQL: its session's advisory lock
    #: is gone on the server instance it was taken on (its client's
    #: connection ended: the process died, or the connection was ended;
    #: after a server restart only the lease decides).
    SESSION_LOCK_GONE = "session_lock_gone"

    @property
    def dead(self) -> bool:
        return self not in (Liveness.ALIVE, Liveness.UNKNOWN)


def _check_returncode(verdict: "Verdict", _attribute: Any, value: Any) -> None:
    if value is None:
        return
    if type(value) is not int or not -127 <= value <= 255:
        raise ValueError(f"returncode must be an exit status 0-255 or -N for signal N (1-127), not {value!r}")
    if verdict.liveness is not Liveness.ZOMBIE:
        raise ValueError(f"returncode is a zombie's exit status: a {verdict.liveness.value} verdict has none")


@attrs.frozen(slots=True)
class Verdict:
    """A probe's answer with its reason.

    Attributes:
        liveness: :class:`Liveness`.
        why: ``str``, one lowercase clause: for ``UNKNOWN`` what could not
            be decided and why (``"on another host (<machine id>)"``), for a
            dead one what proved it; ``""`` when there is nothing to say.
        returncode: ``ZOMBIE`` only (keyword only): how the holder's
            process ended, read from the zombie before its parent reaped
            it, ``subprocess``'s convention (an exit status 0-255, or
            ``-N`` when signal N, 1-127, killed it); ``None`` when not
            known (the default probe reads it only from a zombie proven to
            be the holder's process: ``scopeledger._process.judge``). A
            reclaim on this verdict records it as its event's ``exit_code``
            or ``exit_signal``, as a release records its ``returncode``.

    Raises:
        ValueError: ``returncode`` out of that range, or given with
            another liveness than ``ZOMBIE``.
    """

    liveness: Liveness
    why: str = ""
    returncode: int | None = attrs.field(default=None, kw_only=True, validator=_check_returncode)

    @property
    def dead(self) -> bool:
        """``True`` for a reclaim reason (proof of death)."""
        return self.liveness.dead


#: The least grace after a lease's ttl before anyone but its holder may
#: count it expired: one second, in nanoseconds (the PostgreSQL store's
#: sessions use the same rule, with its own floor).
LEASE_GRACE_MIN_NS = 1_000_000_000


def lease_grace_ns(ttl_ns: int) -> int:
    """The grace after a lease's ttl (both ``int`` nanoseconds): ``max(1 s,
    ttl/10)``. The holder stops trusting its lease at ttl; others may
    reclaim it only at ttl + grace, so that the holder learns first."""
    return max(LEASE_GRACE_MIN_NS, ttl_ns // 10)


@attrs.frozen(slots=True)
class Lease:
    """A holder's lease, as the log records it (``holder.ttl_ns`` and the
    last ``renewed`` event, or the grant when it was never renewed).

    Attributes:
        ttl_ns: ``int`` nanoseconds the lease lasts after each renewal.
        process: ``True`` when the holder is also bound to its process
            (dead when either says so); ``False`` for a lease only (the
            allocation's process is then who asked, not judged).
        host: machine id of the last renewal's writer, ``str`` or ``None``.
        boot: boot id of the last renewal's writer, ``str`` or ``None``.
        boot_ns: that writer's ``CLOCK_BOOTTIME`` reading when it wrote the
            renewal (in the initial time namespace), ``int`` ns; ``None``
            when it could not be read (the lease cannot then be judged).
        renewed_ns: the renewal's ``ts`` (its writer's wall clock, ns since
            the epoch, UTC): when the holder was last seen alive. Never
            used to judge the lease.
        renewed_seq: the seq of that renewal (or grant), ``int``.
    """

    ttl_ns: int
    process: bool
    host: str | None
    boot: str | None
    boot_ns: int | None
    renewed_ns: int
    renewed_seq: int

    @property
    def ttl(self) -> float:
        """The ttl in seconds, ``float``."""
        return self.ttl_ns / 1e9

    @property
    def grace_ns(self) -> int:
        """:func:`lease_grace_ns` of the ttl."""
        return lease_grace_ns(self.ttl_ns)

    def to_json(self) -> dict[str, Any]:
        return {"ttl_ns": self.ttl_ns, "process": self.process, "host": self.host, "boot": self.boot,
                "boot_ns": self.boot_ns, "renewed_ns": self.renewed_ns, "renewed_seq": self.renewed_seq}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "Lease":
        """Inverse of :meth:`to_json` (a snapshot's). Raises KeyError on a
        missing key."""
        return cls(value["ttl_ns"], value["process"], value["host"], value["boot"], value["boot_ns"],
                   value["renewed_ns"], value["renewed_seq"])


#: A liveness probe: identity -> :class:`Verdict`, :class:`Liveness`, or a
#: plain bool (True = alive, False = gone), as the seed's
#: ``reclaim_stale_with`` predicate.
Probe = Callable[[ProcessIdentity], Union[Verdict, Liveness, bool]]
