"""Leases: holders bound to a ttl that must be renewed, judged on one clock.

A grant may carry a lease (``register/delegate/hold(..., ttl=seconds)``):
the holder is then bound to its process and to the lease (dead when either
says so), or with ``lease_only=True`` to the lease alone (for holders no
local process vouches for: an agent on another host, a person's
reservation). ``Ledger.renew(name, token)`` starts the lease again; a
holder that is not renewed in time is reclaimed with reason
``lease_expired`` by the normal reclaim path (``reclaim``, and a grant that
meets it in its way).

One clock judges a lease: the ledger's. Every grant with a lease and
every renewal records, beside ``ts``, its writer's ``CLOCK_BOOTTIME``
(``boot_ns``: counts suspend, never stepped; read as the initial time
namespace reads it), and its writer's host and boot are in the line's
``actor``; a store with a clock of its own also records when it appended
the line, by that clock (``LogStore.appended_ago``).

On PostgreSQL: the server's clock. Each line's row has the server's
``clock_timestamp()`` at its insert (``events.at``), and a lease is judged
on the server's clock alone, from any host (one query for every holder a
sweep judges: :func:`judge_lease_age`)::

    expired  iff  server_now - server_time(last renewal) > ttl + grace,
    grace = max(1 s, ttl / 10)

so a ``lease_only`` holder of another host that stops renewing is
reclaimed like one of this host. A line appended before the ledger had the
column (made by an older scopeledger; a writable open adds it) has no
server time: its lease is judged as on a file, below, until its next
renewal (so is every lease, with a warning, when the server cannot be
asked). A line copied in (``ledger import``) has the time of the copy:
its lease runs on from then.

On a file or in memory: no clock but the writers'. A lease is judged only
from the same host and boot as its last renewal (grant or ``renewed``), on
that boot's clock (:func:`judge_lease`)::

    expired  iff  now_boottime - boot_ns_of_last_renewal > ttl + grace

From another boot or host the clocks cannot be compared: the lease is
``unknown``, with the reason, and never reclaimed on a guess (an operator
releases it). ``CLOCK_BOOTTIME`` never steps and counts suspend, so the
rule holds through wall-clock steps and a suspended machine; a reboot
makes the lease unknown (its process, if it binds the holder, is then from
an earlier boot: dead). ``ts`` is never used to judge a lease: it is only
shown.

On every store a holder also bound to its process is still reclaimed when
its process is proven dead, from anywhere the process judge can prove it.

The holder learns first. Its own :meth:`Ledger.check` turns false at
``ttl`` after its last renewal by its own boot-time clock, counted from
the ``boot_ns`` the renewal records: read before the line was sent (the
renewal is built before the store's append, or its one-round-trip try, is
sent). Others may count the lease expired only at ttl + grace after the
store appended that line, which is later in real time:

- on a file, on the same clock, grace later;
- on PostgreSQL, the server's time of the insert is after the holder's
  reading, so its ttl + grace end on the server's clock comes grace after
  the holder's ttl end, but for what can make the server's clock run ahead
  of the holder's: the two ticking at different rates (NTP slews at most
  500 ppm: 0.05 % of the ttl, against a grace of 10 % or 1 s), and a step
  of the server's wall clock forward smaller than the grace. A step
  forward by more than the grace is outside what this protects against
  (run the server with a slewing NTP client), as for the store's sessions
  (``_pgstore.default_grace``). ``check`` from another host or boot than
  the last renewal, which cannot read that boot's clock, asks the
  server's, without the grace (false past ttl).

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

from ._arguments import REAL, check_callable, check_token, described, real
from ._errors import InvalidLease, LedgerError, UnknownHolder, shown
from ._identity import Lease, Liveness, Verdict, lease_grace_ns

log = logging.getLogger("scopeledger")

__all__ = ["TTL_RANGE", "Renewer", "check_ttl", "holder_verdict", "judge_lease", "judge_lease_age", "lease_grace_ns",
           "lease_verdict", "renewal_interval"]


#: The ttl a lease takes, in seconds: ``(least, most)``. The least keeps a
#: holder's renewals, one every ttl/3, at most 30 log lines a second (a ttl
#: of 1e-12 s once wrote ~950 a second); a shorter ttl would gain nothing
#: for others anyway, who may reclaim a lease only a grace of at least 1 s
#: after its ttl. The most is 10**9 s (about 31 years, ``holder.ttl_ns`` at
#: most 10**18).
TTL_RANGE: tuple[float, float] = (0.1, 1e9)


def check_ttl(ttl: Any, what: str = "ttl") -> int:
    """A lease's ttl in seconds within :data:`TTL_RANGE` (0.1 to 10**9),
    as ``int`` nanoseconds. Any real number is taken as ``wait=`` takes it
    (``_arguments.real``: an ``int``, a ``float``, a subclass of either
    such as ``numpy.float64``, a ``fractions.Fraction``, a numpy number).

    Raises:
        InvalidLease: anything else (a ``bool``, a string, a
            ``decimal.Decimal``, NaN, infinity, below 0.1 s, above 10**9 s,
            ``10**400``), naming the value. Nothing is recorded.
    """
    lo, hi = TTL_RANGE
    seconds = real(ttl)
    if seconds is None:
        raise InvalidLease(f"{what} must be a number of seconds from {lo:g} to {hi:g} ({REAL}), "
                           f"not {described(ttl)}")
    # (compared as given: an int is never made a float, which 10**400 is not;
    # NaN fails both comparisons)
    if not lo <= seconds <= hi:
        raise InvalidLease(f"{what} must be from {lo:g} to {hi:g} seconds (a renewal every ttl/3), "
                           f"not {described(ttl)}")
    return math.ceil(seconds * 1e9) if isinstance(seconds, float) else seconds * 1_000_000_000


def renewal_interval(ttl_ns: int) -> float:
    """Seconds between two renewals of a lease of ``ttl_ns``: a third of
    it, and never less than a third of :data:`TTL_RANGE`'s least (a lease
    recorded shorter, by an earlier scopeledger, is not renewed faster)."""
    return max(ttl_ns, math.ceil(TTL_RANGE[0] * 1e9)) / 3e9


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
    return Verdict(Liveness.ALIVE, _running(lease, age, grace))


def judge_lease_age(lease: Lease, age_ns: int, *, grace: bool = True) -> Verdict:
    """Whether ``lease`` has expired, judged on the store's own clock (the
    PostgreSQL server's): ``age_ns`` is how long ago, by that clock, its
    last renewal (the line ``lease.renewed_seq``) was appended
    (``LogStore.appended_ago``). Pure: the caller asks the store.

    Expired iff ``age_ns > ttl + grace`` (``grace=True``, anyone judging),
    or ``age_ns > ttl`` (``grace=False``: the holder's view, from another
    host or boot than its last renewal).

    Returns:
        :class:`Verdict`: ``LEASE_EXPIRED`` with how long it went
        unrenewed, or ``ALIVE`` with how long it has left.
    """
    limit = lease.ttl_ns + (lease_grace_ns(lease.ttl_ns) if grace else 0)
    if age_ns > limit:
        extra = f" + grace {lease_grace_ns(lease.ttl_ns) / 1e9:g} s" if grace else ""
        return Verdict(Liveness.LEASE_EXPIRED, f"its lease was not renewed for {age_ns / 1e9:.3f} s since "
                                               f"seq {lease.renewed_seq} by the server's clock "
                                               f"(ttl {lease.ttl_ns / 1e9:g} s{extra})")
    return Verdict(Liveness.ALIVE, _running(lease, age_ns, grace) + " by the server's clock")


def _running(lease: Lease, age_ns: int, grace: bool) -> str:
    """Why a lease ``age_ns`` since its last renewal is not expired, as
    its holder's :meth:`Ledger.check` sees it: within its ttl, or (judged
    with the grace) past it, its holder no longer trusting it, and
    reclaimable once the grace is over."""
    left = lease.ttl_ns - age_ns
    if left >= 0:
        then = f", then a grace of {lease_grace_ns(lease.ttl_ns) / 1e9:g} s" if grace else ""
        return f"its lease runs {left / 1e9:.3f} s more{then}"
    until = lease.ttl_ns + lease_grace_ns(lease.ttl_ns) - age_ns
    return (f"its ttl ran out {-left / 1e9:.3f} s ago (not renewed since seq {lease.renewed_seq}): its holder "
            f"no longer trusts it; reclaimable after its grace, in {until / 1e9:.3f} s")


def lease_verdict(lease: Lease, age_ns: int | None, now_ns: int | None, here_host: str | None,
                  here_boot: str | None, *, grace: bool = True) -> Verdict:
    """``lease`` judged on one clock: the store's (:func:`judge_lease_age`)
    when it knows how long ago the last renewal was appended (``age_ns``
    not ``None``: PostgreSQL), else the boot-time clock of the host and
    boot that renewed it (:func:`judge_lease`, with ``now_ns``,
    ``here_host``, ``here_boot``). Pure."""
    if age_ns is not None:
        return judge_lease_age(lease, age_ns, grace=grace)
    return judge_lease(lease, now_ns, here_host, here_boot, grace=grace)


def holder_verdict(lease: Lease | None, process: Callable[[], Verdict], now_ns: int | None,
                   here_host: str | None, here_boot: str | None,
                   age: Callable[[], int | None] | None = None) -> Verdict:
    """The liveness of a holder: its process's (``process()``, asked only
    when the process binds it) and its lease's (:func:`lease_verdict`:
    ``age()``, asked only when the process does not already prove it dead,
    is how long ago its last renewal was appended by the store's clock, or
    ``None``; without ``age``, the boot-time clock), dead when either is
    proven dead (the process's reason first), unknown when either is
    unknown, else alive."""
    if lease is None:
        return process()
    pv = process() if lease.process else None
    if pv is not None and pv.dead:
        return pv
    lv = lease_verdict(lease, age() if age is not None else None, now_ns, here_host, here_boot)
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
        check_callable("on_lost", on_lost, ("error",))
        given = check_ttl(ttl) if ttl is not None else None  # (a bad argument first)
        token = check_token(token)
        alloc = ledger.holder(name)
        if alloc.token != token:
            raise UnknownHolder(name, message=f"holder '{name}' is live with another grant "
                                              f"(token {alloc.token}, not {shown(token)})")
        if alloc.lease is None:
            raise InvalidLease(f"holder '{name}' has no lease to renew (grant it with ttl=)")
        ttl_ns = given if given is not None else alloc.lease.ttl_ns
        self._ledger = ledger
        self.name, self.token, self._ttl = name, token, ttl
        self.interval = renewal_interval(ttl_ns)
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
                    self.interval = renewal_interval(alloc.lease.ttl_ns)

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
