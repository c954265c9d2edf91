"""Leases: holders bound to a ttl that must be renewed, judged on one clock.

A grant may carry a lease (``register/delegate/hold(..., ttl=seconds)``):
the holder is then bound to its process and to the lease (dead when either
says so), or with ``lease_only=True`` to the lease alone (for holders no
local process vouches for: an agent on another host, a person's
reservation). ``Ledger.renew(name, token)`` starts the lease again; a
holder that is not renewed in time is reclaimed with reason
``lease_expired`` by the normal reclaim path (``reclaim``, and a grant that
meets it in its way).

The clock (a file ledger). Every grant with a lease and every renewal
records, beside ``ts``, its writer's ``CLOCK_BOOTTIME`` (``boot_ns``: counts
suspend, never stepped; read as the initial time namespace reads it), and
its writer's host and boot are in the line's ``actor``. A lease is judged
only from the same host and boot as its last renewal (grant or
``renewed``), on that clock:

    expired  iff  now_boottime - boot_ns_of_last_renewal > ttl + grace,
    grace = max(1 s, ttl / 10)                            (:func:`judge_lease`)

From another boot or host the clocks cannot be compared: the lease is
``unknown``, with the reason, and never reclaimed on a guess (an operator
releases it; the PostgreSQL store judges on the server's clock instead). A
holder also bound to its process is still reclaimed when its process is
proven dead, from anywhere the process judge can prove it.

The holder learns first: its own :meth:`Ledger.check` turns false at
``ttl`` after its last renewal by its own boottime (from before it asked,
when this process renewed it), ``grace`` before anyone else may count the
lease expired. A wall-clock step changes nothing (``ts`` is only shown).

The shape follows the PostgreSQL store's sessions (``_pgstore``: a ttl
renewed every ttl/3, the client's deadline counted from before its renewal
was sent, others judging at the end of the lease plus a grace of
max(floor, ttl/10)), so that one ``Ledger`` API covers both.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable

from ._errors import InvalidLease, LedgerError, UnknownHolder, shown
from ._events import MAX_TTL_NS
from ._identity import Lease, Liveness, Verdict, lease_grace_ns

log = logging.getLogger("scopeledger")

__all__ = ["Renewer", "check_ttl", "holder_verdict", "judge_lease", "lease_grace_ns"]


def check_ttl(ttl: Any, what: str = "ttl") -> int:
    """A lease's ttl in seconds (``int``/``float``, finite, > 0, at most
    10**9) as ``int`` nanoseconds.

    Raises:
        InvalidLease: anything else (a ``bool``, a string, NaN, infinity,
            zero or less, too large), naming the value. Nothing is recorded.
    """
    if type(ttl) not in (int, float):
        raise InvalidLease(f"{what} must be a number of seconds > 0, not {shown(ttl)}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidLease(f"{what} must be a finite number of seconds > 0, not {shown(ttl)}")
    if ttl > MAX_TTL_NS // 10**9:  # (before converting: 1e300 s is no int of ns)
        raise InvalidLease(f"{what} must be at most {MAX_TTL_NS // 10**9} seconds, not {shown(ttl)}")
    return max(math.ceil(ttl * 1e9) if type(ttl) is float else ttl * 1_000_000_000, 1)


def _unknown(why: str) -> Verdict:
    return Verdict(Liveness.UNKNOWN, why)


def judge_lease(lease: Lease, now_ns: int | None, here_host: str | None, here_boot: str | None, *,
                grace: bool = True) -> Verdict:
    """Whether ``lease`` has expired, judged from a process of host
    ``here_host`` and boot ``here_boot`` whose ``CLOCK_BOOTTIME`` reads
    ``now_ns`` (``None``: unreadable). Pure: the caller reads the clock.

    Args:
        grace: ``True`` for anyone judging (expired past ttl + grace);
            ``False`` for the holder itself (expired past ttl: it learns
            first).

    Returns:
        :class:`Verdict`: ``LEASE_EXPIRED`` with how long it went
        unrenewed; ``ALIVE`` with how long it has left; ``UNKNOWN`` with why
        it cannot be judged here (another boot or host, a clock not
        recorded or not readable).
    """
    at = f"its last renewal (seq {lease.renewed_seq})"
    if lease.boot is None or lease.boot_ns is None:
        return _unknown(f"{at} recorded no {'boot id' if lease.boot is None else 'boot-time clock'}: "
                        "its lease cannot be judged")
    if here_boot is None or now_ns is None:
        return _unknown(f"this process cannot read its {'boot id' if here_boot is None else 'boot-time clock'}: "
                        "the lease cannot be judged")
    if lease.host is not None and here_host is not None and lease.host != here_host:
        return _unknown(f"{at} was written on another host ({lease.host}): a lease is judged only on "
                        "the clock of the boot that renewed it")
    if lease.boot != here_boot:
        return _unknown(f"{at} was written under another boot ({lease.boot}): a lease is judged only on "
                        "the clock of the boot that renewed it")
    age = now_ns - lease.boot_ns
    limit = lease.ttl_ns + (lease_grace_ns(lease.ttl_ns) if grace else 0)
    if age > limit:
        extra = f" + grace {lease_grace_ns(lease.ttl_ns) / 1e9:g} s" if grace else ""
        return Verdict(Liveness.LEASE_EXPIRED, f"its lease was not renewed for {age / 1e9:.3f} s since "
                                               f"seq {lease.renewed_seq} (ttl {lease.ttl_ns / 1e9:g} s{extra})")
    return Verdict(Liveness.ALIVE, f"its lease runs {(limit - age) / 1e9:.3f} s more")


def holder_verdict(lease: Lease | None, process: Callable[[], Verdict], now_ns: int | None,
                   here_host: str | None, here_boot: str | None) -> Verdict:
    """The liveness of a holder: its process's (``process()``, asked only
    when the process binds it) and its lease's, dead when either is proven
    dead (the process's reason first), unknown when either is unknown,
    else alive."""
    if lease is None:
        return process()
    pv = process() if lease.process else None
    if pv is not None and pv.dead:
        return pv
    lv = judge_lease(lease, now_ns, here_host, here_boot)
    if lv.dead or pv is None or pv.liveness is not Liveness.UNKNOWN:
        return lv
    return pv


class Renewer:
    """Renews one grant's lease in a background thread every ttl/3 until
    :meth:`stop` (or the ``with`` block's end): ``Ledger.keep_renewed``.

    Without ``ttl`` each renewal keeps the ttl the lease has, and the beat
    follows it (another process's ``renew(..., ttl=)`` changes both).

    A renewal the ledger refuses because the grant is gone (released,
    reclaimed, its lease expired: :class:`UnknownHolder`, including
    :class:`LeaseExpired`) ends the thread: :attr:`lost` holds the error,
    and ``on_lost(error)`` is called once in the renewer's thread. Another
    failure (the lock busy, an I/O error) is logged and tried again at the
    next beat; the holder's own :meth:`Ledger.check` goes false at ttl if
    none succeeds. The thread is a daemon: it does not keep the interpreter
    alive; it does not exist in a forked child.

    Attributes:
        renewals: how many renewals succeeded, ``int``.
        lost: the error that ended it, or ``None``.
    """

    def __init__(self, ledger: Any, name: str, token: int, ttl: float | None = None,
                 on_lost: Callable[[BaseException], Any] | None = None) -> None:
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be None or a callable, not {shown(on_lost)}")
        alloc = ledger.holder(name)
        if alloc.token != token:
            raise UnknownHolder(name, message=f"holder '{name}' is live with another grant "
                                              f"(token {alloc.token}, not {shown(token)})")
        if alloc.lease is None:
            raise InvalidLease(f"holder '{name}' has no lease to renew (grant it with ttl=)")
        ttl_ns = check_ttl(ttl) if ttl is not None else alloc.lease.ttl_ns
        self._ledger = ledger
        self.name, self.token, self._ttl = name, token, ttl
        self.interval = ttl_ns / 3e9
        self._on_lost = on_lost
        self._stop = threading.Event()
        self.renewals = 0
        self.lost: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"scopeledger-renew-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                alloc = self._ledger.renew(self.name, self.token, self._ttl)
            except UnknownHolder as exc:
                self.lost = exc
                if self._on_lost is not None:
                    try:
                        self._on_lost(exc)
                    except Exception:  # noqa: BLE001 - a callback's error must not kill silently
                        log.exception("on_lost of the renewer of holder %r raised", self.name)
                return
            except (LedgerError, OSError) as exc:
                log.warning("could not renew the lease of holder %r (token %d), trying again in %.3f s: %s",
                            self.name, self.token, self.interval, exc)
            else:
                self.renewals += 1
                if self._ttl is None:  # another renewal may have changed the ttl: a third of the one it has
                    self.interval = alloc.lease.ttl_ns / 3e9

    @property
    def running(self) -> bool:
        """Whether the thread still renews."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop renewing (the lease then runs out unless released first);
        waits for a renewal in progress. Idempotent."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "Renewer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"<Renewer {shown(self.name)} token={self.token} every {self.interval:.3f} s "
                f"{'running' if self.running else 'stopped'}>")
