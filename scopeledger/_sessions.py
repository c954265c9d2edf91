"""Liveness across hosts: a ``Ledger`` on PostgreSQL and its client session.

A checker judges a holder by its process (``scopeledger._process``), which
it can do only for processes of its own host: a holder on another host is
*unknown* to it, and never reclaimed on a guess. On a PostgreSQL store a
holder on another host is judged instead by the client session of the
ledger that bound it (``scopeledger._pgstore``: a lease renewed in the
background, plus a session-level advisory lock held by the session's own
connection, plus the server instance the lock was taken on).

Granting. A writable ``Ledger`` on a PostgreSQL store opens one session
(:class:`Sessions`), at its first grant, with a ttl of
:data:`DEFAULT_SESSION_TTL` seconds (``Ledger.open(session_ttl=...)``),
renewed every ttl/3 by a thread. Every holder it grants (``register``,
``delegate``, ``hold``, ``spawn``'s reservation) and every process it binds
one to (``attach``: ``spawn`` binding the grant to its child) records the
session's id in the holder's process identity (``process.session`` in the
log), so a child a ledger spawns carries its spawner's session. A ledger in
a directory never writes the key. A session lost (below) is replaced by a
new one at the next grant; the holders of the lost one stay lost.

Judging. A holder whose process this checker can judge (the same running
kernel, or the same machine id: ``_identity.on_another_host``) keeps the
process check, session or not. A holder on another host that carries a
session is judged by it, on the server's clock (``PgStore.judge_sessions``,
one query for every such holder a sweep meets): dead as
``session_closed`` (its ledger was closed without releasing it),
``lease_expired`` (not renewed within its ttl, and the grace after it,
by the server's clock) or ``session_lock_gone`` (its lock is gone on the
instance it was taken on: its client's connection ended); alive while the
session is valid; *unknown*, with the reason, when it carries no session,
its session is not in the table, the server restarted and its lock has not
been taken again yet (its lease decides), or the server cannot be asked.
A lease (``ttl=``) is judged as before, beside the session.

The holder learns first. Its own :meth:`Ledger.check` turns false as soon
as the session it carries is lost (by this process's monotonic clock: its
deadline is ttl after the renewal was sent, before the server's lease ends,
and others judge only after the server's lease end + the grace), without
asking the server; a warning is logged and ``on_session_lost(error)`` is
called once, from the thread that found it. Checked from another process,
a holder's session is asked of the server, without the grace.

Closing. ``Ledger.close`` closes the session: the holders that carry it
and are still held are then ``session_closed`` to checkers on other hosts
(reclaimed by the next one that looks), while checkers on their own host
keep judging their processes. ``ledger run`` and ``spawn``'s supervisor
keep their ledger open while their child runs. A forked child never uses
its parent's session (nor its connection): its first grant opens one of
its own.

Pruning. Every session is a row of the server's ``sessions`` table. A row
is needed while a live holder carries its session (checkers on other
hosts judge that holder by it) or while the session lives; nothing else
reads it (:meth:`Sessions.prune`). A ledger that opened a session whose id
is a multiple of :data:`SESSION_PRUNE_EVERY` deletes, when it is closed
(never on register, delegate or release; not when the server did not
acknowledge closing its session: it may not answer), the rows of the
sessions dead for more than :data:`SESSION_KEEP_SECONDS` that no live
holder carries, in the ledger folded to the log's head (one statement,
which deletes only if the head is still the one folded). So the table holds the live sessions,
those a live holder carries, those dead for less than
:data:`SESSION_KEEP_SECONDS`, and about :data:`SESSION_PRUNE_EVERY` more
(more when the ledgers that would prune are killed rather than closed).
The server refuses to delete the row of a session that is not dead.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Iterable

import attrs

from ._arguments import REAL, check_callable, described, real
from ._errors import LedgerError, SessionLost
from ._identity import Liveness, ProcessIdentity, Verdict
from ._process import host_id

log = logging.getLogger("scopeledger")

__all__ = ["DEFAULT_SESSION_TTL", "SESSION_KEEP_SECONDS", "SESSION_PRUNE_EVERY", "SESSION_TTL_RANGE", "Sessions",
           "check_session_options", "session_verdict"]

#: The ttl of a ledger's client session, in seconds, unless
#: ``Ledger.open(session_ttl=...)`` says otherwise: renewed every 10 s; a
#: client that stops renewing (stopped, partitioned) is judged dead by its
#: lease 30 s + its grace (3 s) after its last renewal, and one whose process
#: or connection ends, at once by its lock.
DEFAULT_SESSION_TTL = 30.0

#: The ttl range a session takes (``PgStore.open_session``,
#: ``Ledger.open(session_ttl=...)``, ``$SCOPELEDGER_SESSION_TTL``), in
#: seconds: ``(least, most)``.
SESSION_TTL_RANGE: tuple[float, float] = (0.01, 86400.0)

#: A ledger that opened a session whose id is a multiple of this prunes the
#: sessions table when it is closed (:meth:`Sessions.prune`): about one
#: close in this many, so that the rows every session adds are taken out
#: again at a rate that follows the rate they are added at.
SESSION_PRUNE_EVERY = 64

#: A dead session's row is kept this many seconds after its death (its
#: closing, or its lease's end + grace, on the server's clock) before a
#: prune may delete it: for people reading the table, and for a grant
#: stamped with the session before it died and appended after that (a
#: process stopped between its decision and its append), whose holder
#: would find no row to be judged by (*unknown* to other hosts, so never
#: reclaimed by them: kept, not lost).
SESSION_KEEP_SECONDS = 3600.0


def check_session_options(ttl: Any, on_lost: Any) -> float | None:
    """``Ledger.open``'s ``session_ttl`` and ``on_session_lost``; returns
    the ttl as ``float`` seconds (any real number, read as ``wait=`` is:
    ``_arguments.real``), or ``None``.

    Raises:
        TypeError: ``ttl`` is not ``None`` or a real number (a ``bool``, a
            ``str``, a ``decimal.Decimal`` are not); ``on_lost`` is not
            ``None`` or callable.
        ValueError: ``ttl`` outside 0.01..86400 seconds (NaN too).
    """
    seconds = None
    if ttl is not None:
        seconds = real(ttl)
        if seconds is None:
            raise TypeError(f"session_ttl must be None or a number of seconds ({REAL}), not {described(ttl)}")
        lo, hi = SESSION_TTL_RANGE
        if not lo <= seconds <= hi:
            raise ValueError(f"session_ttl must be from {lo:g} to {hi:g} seconds, not {described(ttl)}")
        seconds = float(seconds)
    check_callable("on_session_lost", on_lost, ("error",))
    return seconds


def _unknown(why: str) -> Verdict:
    return Verdict(Liveness.UNKNOWN, why)


def session_verdict(sid: int, state: str | None) -> Verdict:
    """The verdict on a holder of another host carrying session ``sid``,
    from the server's answer ``state`` (``PgStore.judge_sessions``; ``None``:
    the session is not in the table)."""
    if state is None:
        return _unknown(f"its client session {sid} is not in the server's sessions table")
    if state == "alive":
        return Verdict(Liveness.ALIVE, f"its client session {sid} is valid (server clock)")
    if state == "session_closed":
        return Verdict(Liveness.SESSION_CLOSED, f"its client session {sid} was closed (the ledger that bound "
                                                "it was closed without releasing it)")
    if state == "lease_expired":
        return Verdict(Liveness.LEASE_EXPIRED, f"its client session {sid} was not renewed within its ttl and "
                                               "grace (server clock)")
    if state == "session_lock_gone":
        return Verdict(Liveness.SESSION_LOCK_GONE, f"the lock of its client session {sid} is gone on the server "
                                                   "instance it was taken on (its client's connection ended)")
    if state == "lapsed":
        return _unknown(f"the lease of its client session {sid} ended on the server's clock: dead once its "
                        "grace is over")
    return _unknown(f"its client session {sid} has not taken its lock again since the server restarted: "
                    "its lease decides")


class Sessions:
    """The client sessions of one ``Ledger`` on a PostgreSQL store ``store``
    (a ``PgStore``), and the judge of other hosts' sessions (see the module
    docstring). Thread-safe; after a fork the child forgets its parent's
    sessions (they are not its own) and opens its own when it grants.

    Args:
        store: the ledger's ``PgStore``.
        ttl: seconds (``None``: :data:`DEFAULT_SESSION_TTL`).
        on_lost: ``on_lost(error)`` with a :class:`SessionLost`, called once
            per session lost (not closed), from the thread that found it.
        where: how messages name the ledger (its redacted URL).
    """

    def __init__(self, store: Any, ttl: float | None, on_lost: Callable[[SessionLost], object] | None,
                 where: str) -> None:
        self._store = store
        self.ttl = float(ttl) if ttl is not None else DEFAULT_SESSION_TTL
        self._on_lost = on_lost
        self._where = where
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._current: Any = None  # the PgSession grants are stamped with
        self._mine: dict[int, Any] = {}  # every session this object opened in this process, by id
        self._stamped: tuple[ProcessIdentity, int, ProcessIdentity] | None = None

    # -- this ledger's own session ---------------------------------------

    def _forked(self) -> None:
        """In a forked child: the parent's sessions are not ours (their
        connections are the parent's; ``_pgstore`` blinds them)."""
        if self._pid != os.getpid():
            self._lock = threading.RLock()
            self._pid = os.getpid()
            self._current = None
            self._mine = {}
            self._stamped = None

    def current_id(self) -> int:
        """The id of the session grants are made with, opening it (or a
        new one, when the last one was lost) first.

        Raises:
            StoreUnavailable, StoreError: it cannot be opened.
        """
        self._forked()
        with self._lock:
            s = self._current
            if s is None or not s.valid:
                old = s
                s = self._store.open_session(self.ttl, host=host_id(), pid=os.getpid(), on_lost=self._lost)
                self._current = s
                self._mine[s.id] = s
                if old is not None:
                    old.close()  # lost: its connection and threads go; its holders stay lost
            return int(s.id)

    def stamp(self, ident: ProcessIdentity) -> ProcessIdentity:
        """``ident`` carrying this ledger's session (opened if need be), for
        a grant or an attach; ``ident`` itself on a read-only store (which
        refuses the change anyway).

        Raises:
            StoreUnavailable, StoreError: the session cannot be opened.
        """
        if self._store.readonly:
            return ident
        sid = self.current_id()
        memo = self._stamped
        if memo is not None and memo[0] is ident and memo[1] == sid:
            return memo[2]
        out = attrs.evolve(ident, session=sid)
        self._stamped = (ident, sid, out)
        return out

    def _lost(self, session: Any) -> None:
        """``PgSession``'s ``on_lost``: a warning, then the caller's callback."""
        msg = (f"client session {session.id} of {self._where} was lost ({session.lost}): the holders it "
               "vouched for are no longer held for certain (their check() is False) and checkers on "
               "other hosts may reclaim them; the next grant opens a new session")
        log.warning("%s", msg)
        if self._on_lost is not None:
            try:
                self._on_lost(SessionLost(self._where, msg))
            except Exception:  # noqa: BLE001 - a callback's error must not end the session's threads
                log.exception("on_session_lost of %s raised", self._where)

    def lost(self, sid: int | None) -> bool:
        """Whether ``sid`` is a session of this ledger (this process) that
        was lost or closed: no IO (the session's own deadline, by this
        process's monotonic clock)."""
        if sid is None:
            return False
        self._forked()
        s = self._mine.get(sid)
        return s is not None and not s.valid

    def vouches(self, sid: int) -> bool:
        """Whether session ``sid`` still vouches for a holder, as the holder
        sees it: one of this ledger's, while valid (no IO); another's, while
        the server does not find it closed, lock gone or past its lease end
        (without the grace: ``judge_sessions(grace=False)``).

        Raises:
            StoreUnavailable, StoreError: the server cannot be asked.
        """
        self._forked()
        s = self._mine.get(sid)
        if s is not None:
            return bool(s.valid)
        state = self._store.judge_sessions([sid], grace=False).get(sid)
        return state not in ("session_closed", "lease_expired", "session_lock_gone")

    def close(self) -> bool:
        """Close every session this object opened (the current one is
        marked closed: its holders are then ``session_closed`` to other
        hosts). Returns whether the server acknowledged closing one (it
        answers now). Idempotent; raises nothing (a session that cannot be
        marked closed lapses, or its lock goes with its connection)."""
        self._forked()
        with self._lock:
            mine, self._mine, self._current, self._stamped = self._mine, {}, None, None
        answered = False
        for s in mine.values():
            try:
                s.close()
            except Exception as exc:  # noqa: BLE001 - best effort: its lock goes with its connection
                log.warning("could not close client session %s of %s: %s", s.id, self._where, exc)
            answered = answered or bool(getattr(s, "answered", False))
        return answered

    # -- pruning the table -----------------------------------------------------

    def prune_due(self) -> bool:
        """Whether this object opened a session whose id is a multiple of
        :data:`SESSION_PRUNE_EVERY` (before :meth:`close`, which forgets
        them): its ledger then prunes when it is closed. No IO."""
        self._forked()
        every = SESSION_PRUNE_EVERY
        return any(sid % every == 0 for sid in list(self._mine))

    def prune(self, carried: Callable[[], tuple[int, Iterable[int]]], tries: int = 3) -> int | None:
        """Delete the rows of the sessions that are dead (closed, or their
        lease over with its grace, on the server's clock) for more than
        :data:`SESSION_KEEP_SECONDS`, and that no live holder carries
        (``PgStore.prune_sessions``). ``carried()``: ``(seq, ids)``, the
        session ids the live holders carry in the ledger folded to the
        log's head as read now, ``seq`` that head (asked again when the log
        moved on before the rows were deleted, ``tries`` times at most).
        Returns how many rows went, or ``None`` when the log kept moving.

        What a row is for, and so when it may go: a holder records its
        session's id (``process.session``) and checkers on other hosts judge
        it by the row, so the row of a session a live holder carries is
        kept, dead or not (its holders are then reclaimed by it); nothing
        else reads the rows (the log's events carry the id, and a reclaim
        the reason it was judged by: ``replay``, ``history``, time travel and
        ``verify`` never read the table). A pruned session's id, asked of
        :meth:`verdicts` (``Ledger.liveness`` of a holder of the past), is
        *unknown*: "not in the server's sessions table".

        Raises:
            StoreUnavailable, StoreError: the server cannot be asked, or
                refused.
        """
        for _ in range(tries):
            seq, ids = carried()
            got = self._store.prune_sessions(seq, ids, SESSION_KEEP_SECONDS)
            if got is not None:
                return int(got)
        return None

    # -- judging other hosts' holders ----------------------------------------

    def verdicts(self, sids: Iterable[int]) -> dict[int, Verdict]:
        """The verdict on each session of ``sids`` (one query, the server's
        clock): :func:`session_verdict`; each ``UNKNOWN`` with the error
        when the server cannot be asked."""
        ids = sorted(set(sids))
        if not ids:
            return {}
        try:
            states = self._store.judge_sessions(ids)
        except LedgerError as exc:
            return {sid: _unknown(f"its client session {sid} cannot be judged: {exc}") for sid in ids}
        return {sid: session_verdict(sid, states.get(sid)) for sid in ids}

    def verdict(self, sid: int, known: dict[int, Verdict] | None = None) -> Verdict:
        """The verdict on session ``sid``: from ``known`` (a
        :meth:`verdicts` answer) when it holds it, else asked now."""
        if known is not None:
            got = known.get(sid)
            if got is not None:
                return got
        return self.verdicts([sid])[sid]
