"""Watching one grant for its end without the folded state:
``Ledger.watch_grant`` (a :class:`GrantWatch`).

A holder whose scope may be taken away while it works (an operator's forced
release, a reclaim of its lapsed lease or of its lost client session) learns
it from the log: the ``released`` or ``reclaimed`` line naming it, appended
after its grant. A :class:`GrantWatch` follows the log from the grant's line
on, in a thread of its own, woken by the store's change notification (the
store interface's ``Tickets.follower``: inotify on the log of a directory,
LISTEN on PostgreSQL; one per process and store for all its watches, read by
one thread that rings each: :class:`_Bell`), and reads only the lines appended since its last look
(``LogStore.read_after``), decoding only those that name the holder: it keeps
no folded state, so a process that drops its own (``Ledger.unload``, as
``ledger run``'s wrapper does while its command runs) stays small however
many holders the ledger has.

It also learns of every cut of the log of a directory since its last look
(``ledger repair``, which sets lines aside into ``cut/``; or the log
rewritten), whatever the log's length afterwards: a log replaced (renamed
over or deleted, as ``sed -i`` and editors do) is never read again through
the descriptor the store has open, so each look first asks whether it was
(``FileStore.replaced``), and then the grant is no longer in the log this
process reads (``on_lost(None)``, with a warning saying why); each look there reads
the last line read again with the lines past it (``read_after(pos - 1)``:
one ``pread`` from where the store remembers that line starts, as it was
one from where it ended) and needs its bytes unchanged. A log cut and
grown back to the same last seq, even to the same size, before the watch
looked again holds other bytes there. Then the store's memory of where
lines are is dropped (``FileStore.forget``) and the grant's line read
again: gone or changed (another grant given its seq), the grant is no
longer in the log (``on_lost(None)``); the same bytes, the cut was after
it, and the watch reads on from the grant's line, what follows it now
included (the grant's end may be there), as many times as cuts happen. A
cut after the last line read changes nothing the watch read: it reads the
lines that follow. A line that cannot be read at all (longer than a line
may be: damage a repair has yet to cut, and no writer appends past it) is
where reading stops until the log changes. The same failure at the same
place twice in a row, the grant's line intact, is not tried again before
the log changes (a warning says so, once): never a busy loop.

On PostgreSQL the server refuses to cut lines (a trigger refuses UPDATE,
DELETE and TRUNCATE of ``events``), as a memory log has no way to, so a
look there reads only the new lines, as before: the first must name, as its ``prev``, the hash of the last line
read (a log replaced, the schema made again, is seen where that shows).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import Any, Callable

import orjson

from ._errors import CorruptLedger, LedgerError
from ._events import decode, line_hash
from ._history import Event
from ._logstore import Line, LogStore, Wakeup
from ._process import ready

log = logging.getLogger("scopeledger")

#: Lines read per look (a page; a look reads pages until the log's end).
FOLLOW_PAGE = 4096

#: The longest a watch sleeps between two looks, seconds, when its store
#: wakes it on every append (inotify, LISTEN): a backstop for a wake-up that
#: is lost without a word, not the way it learns (that is the wake-up).
FOLLOW_RECHECK_SECONDS = 5.0

#: The same where nothing wakes it (a ledger on a network file system, or
#: without inotify; memory), or while its store cannot be reached: it looks
#: this often.
FOLLOW_POLL_SECONDS = 0.5

#: Event types that end a grant (of the holder the line names).
ENDINGS = ("released", "reclaimed")


class _Bell:
    """The one wake-up of this process's watches of one store's log: one
    ``Tickets.follower()`` (inotify on a directory's log, a LISTEN
    connection on PostgreSQL) read by one thread (``scopeledger-follow``,
    while a watch is subscribed), which rings every subscribed watch (each
    a :class:`_Ring`: an ``eventfd`` of its own) when the log may have
    grown, and at the follower's backstop (:data:`FOLLOW_RECHECK_SECONDS`;
    :data:`FOLLOW_POLL_SECONDS` while no follower can be made). So a
    supervisor watching 150 grants (``spawn``'s ``on_lost``) holds one
    inotify instance or one server connection for them, not 150 from a
    per-user limit of 128 instances (which then failed the other programs
    of that user) or from the server's ``max_connections`` (which then
    refused other clients). A follower that broke (the server restarted)
    is made again before the watches are rung: what they read after the
    ring is followed. Made and ended by :func:`_subscribe` and
    :meth:`_Ring.close`; never used in a forked child (the registry is
    emptied there)."""

    def __init__(self, store: LogStore, where: str) -> None:
        self.store, self.where = store, where
        self.lock = threading.Lock()
        self.rings: set[_Ring] = set()  # (under _registry_lock)
        self.source: Wakeup | None = None
        self.unwoken = False  # a follower could not be made last time (said once)
        self.stop_r, self.stop_w = os.pipe()  # (written under _registry_lock while alive)
        os.set_blocking(self.stop_w, False)
        self.alive = True
        self.thread = threading.Thread(target=self._run, name="scopeledger-follow", daemon=True)

    def source_now(self) -> Wakeup | None:
        """The follower, made when missing or broken (said once when it
        cannot be, and when it can again); ``None`` when the store has none
        or it cannot be made."""
        with self.lock:
            source = self.source
            if source is not None and not getattr(source, "broken", False):
                return source
            self.source = None
            if source is not None:
                source.close()
            tickets = self.store.tickets()
            if tickets is None:
                return None
            try:
                self.source = tickets.follower()
                self._write(b"p")  # (the thread may sleep on what it had: it polls this one now)
            except (LedgerError, OSError) as exc:
                if not self.unwoken:
                    self.unwoken = True
                    log.info("watches of grants cannot be woken by changes of the log of %s now (looking every "
                             "%g s until they can): %s", self.where, FOLLOW_POLL_SECONDS, exc)
                return None
            if self.unwoken:
                self.unwoken = False
                log.info("watches of grants are woken by changes of the log of %s again", self.where)
            return self.source

    def _run(self) -> None:
        try:
            while True:
                source = self.source_now()
                fds = source.fds(True) if source is not None else []
                woke = ready([self.stop_r, *fds], FOLLOW_RECHECK_SECONDS if fds else FOLLOW_POLL_SECONDS)
                if self.stop_r in woke:
                    if b"x" in os.read(self.stop_r, 64):
                        return
                    if len(woke) == 1:
                        continue  # (poked: a new follower to poll)
                if source is not None:
                    source.changes()  # (drained: whatever it says, the watches look)
                    if getattr(source, "broken", False):
                        log.debug("the wake-up of the watches on the log of %s broke: made again", self.where)
                        self.source_now()  # (made again before the ring: an append after it wakes them)
                with _registry_lock:  # (a ring's descriptor is closed under it: never written once closed)
                    for ring in self.rings:
                        ring.ring()
        except Exception:  # noqa: BLE001 - a daemon thread's error is logged, never raised into nothing
            log.exception("the wake-up of the watches of grants on the log of %s stopped (they look every %g s)",
                          self.where, FOLLOW_RECHECK_SECONDS)
        finally:
            with _registry_lock:
                self.alive = False
                if _registry.get(id(self.store)) is self:
                    del _registry[id(self.store)]  # (stopped by an error: the next watch makes a new one)
                os.close(self.stop_r)
                os.close(self.stop_w)
            with self.lock:
                source, self.source = self.source, None
            if source is not None:
                source.close()

    def _write(self, byte: bytes) -> None:
        """To the thread: ``b"x"`` ends it, ``b"p"`` has it poll the
        follower anew. Nothing once it ended."""
        with _registry_lock:
            if self.alive:
                try:
                    os.write(self.stop_w, byte)
                except OSError:  # (full: it has a byte to read already)
                    pass


class _Ring:
    """One watch's subscription to its store's :class:`_Bell`, a
    ``Wakeup`` (``fds``, ``changes``, ``close``): an ``eventfd`` the bell's
    thread writes to."""

    def __init__(self, bell: _Bell) -> None:
        self.bell = bell
        self.period = FOLLOW_RECHECK_SECONDS
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.closed = False

    def ring(self) -> None:
        """Under ``_registry_lock`` (its descriptor is closed under it)."""
        if not self.closed:
            try:
                os.eventfd_write(self.fd, 1)
            except OSError:  # pragma: no cover - (a counter near 2**64)
                pass

    def fds(self, log_too: bool) -> list[int]:
        return [] if self.closed else [self.fd]

    def changes(self) -> tuple[bool, list[int] | None]:
        try:
            return os.eventfd_read(self.fd) > 0, []
        except OSError:  # (not rung since: EAGAIN)
            return False, []

    @staticmethod
    def follow(log_too: bool, behind: int | None) -> bool:
        return False  # (rung for every append anyway)

    def close(self) -> None:
        """Leave the bell (the last to leave stops it); idempotent."""
        with _registry_lock:
            if self.closed:
                return
            self.closed = True
            bell = self.bell
            bell.rings.discard(self)
            if not bell.rings and _registry.get(id(bell.store)) is bell:
                del _registry[id(bell.store)]
                if bell.alive:
                    os.write(bell.stop_w, b"x")  # (the thread ends and closes the follower)
            os.close(self.fd)


#: The bells of this process, by their store object's ``id`` (a bell keeps
#: its store alive while a watch is subscribed; it leaves the registry with
#: its last ring, so an ``id`` is never taken for another store's).
_registry: dict[int, _Bell] = {}
_registry_lock = threading.Lock()


def _forked_child() -> None:
    """A forked child has none of its parent's watches: its bells, and a
    registry lock another thread may have held, are its parent's."""
    global _registry_lock
    _registry.clear()
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_forked_child)


def _subscribe(store: LogStore, where: str) -> Wakeup | None:
    """A ring of ``store``'s bell (made and started when it has none); the
    bell's follower made first, so that an append after this returns rings
    it (where none can be made, the bell rings every
    :data:`FOLLOW_POLL_SECONDS` and tries again). ``None`` when no
    ``eventfd`` can be had: the watch then looks every
    :data:`FOLLOW_POLL_SECONDS` on its own."""
    with _registry_lock:
        bell = _registry.get(id(store))
        new = bell is None
        if bell is None:
            bell = _registry[id(store)] = _Bell(store, where)
        try:
            ring = _Ring(bell)
        except OSError as exc:
            log.debug("a watch of the log of %s looks every %g s: %s", where, FOLLOW_POLL_SECONDS, exc)
            if new:
                del _registry[id(store)]
                os.close(bell.stop_r)
                os.close(bell.stop_w)
            return None
        bell.rings.add(ring)
        if new:
            bell.thread.start()
    bell.source_now()  # (made before the caller's look; without one the bell rings every FOLLOW_POLL_SECONDS)
    return ring


class Unreadable:
    """What a follower of grant ``(name, token)`` says while the log of
    ``where`` cannot be read (a read that failed, the server unreachable):
    one ``INFO`` record when a look first fails (:meth:`failed`), and one
    when a look reads it again (:meth:`read`), not one at every look
    (every :data:`FOLLOW_POLL_SECONDS` while a server is down). The one
    place both followers say it: :class:`GrantWatch` (``Ledger.watch_grant``,
    ``ledger run``) and ``AsyncLedger.until_lost``."""

    __slots__ = ("where", "name", "token", "failing")

    def __init__(self, where: str, name: str, token: int) -> None:
        self.where, self.name, self.token = where, name, token
        self.failing = False  # the last look could not read the log

    def failed(self, exc: BaseException) -> None:
        """A look could not read the log (``exc``): said unless the look
        before could not either."""
        if not self.failing:
            self.failing = True
            log.info("could not read the log of %s to watch grant %r (token %d); trying again every %g s "
                     "until it can: %s", self.where, self.name, self.token, FOLLOW_POLL_SECONDS, exc)

    def read(self) -> None:
        """A look read the log: said when the look before could not."""
        if self.failing:
            self.failing = False
            log.info("the log of %s can be read again: watching grant %r (token %d) again",
                     self.where, self.name, self.token)


class GrantWatch:
    """Follows the log past grant ``(name, token)`` in a daemon thread
    until the grant ends, then calls ``on_lost(event)`` once, in that
    thread: ``event`` is the :class:`~scopeledger.Event` that ended it
    (``released``: ``event.actor`` says by whom, ``event.data["forced"]``
    the reason of a forced release; ``reclaimed``: ``event.data["reason"]``,
    such as ``"lease_expired"``), or ``None`` when the grant's own line is
    no longer in the log (cut by a repair, or the log replaced; also when
    the log was cut and grew back past it before the watch looked again).
    A cut of lines after the grant only is followed: the watch reads on
    from the grant's line, any number of times. Made by
    :meth:`scopeledger.Ledger.watch_grant`, which says more (the module
    docstring, how a cut is seen).

    :meth:`stop` (or the ``with`` block's end) ends it: once ``stop()``
    has returned, ``on_lost`` is not called (a call under way is waited
    for); ``on_lost`` may call it (it returns at once, the thread ends
    after the callback). A store that cannot be read is tried again at the next look
    (logged); the thread is a daemon and does not exist in a forked child.

    Attributes:
        ended: the event that ended the grant once seen (``None`` before,
            and when the grant's line is gone: :attr:`lost` says which).
        lost: whether the end was seen (``on_lost`` was, or is being,
            called), ``bool``.
        looks: how many times it read the log, ``int`` (for tests and
            measurements: a wake-up by the store's notification, or the
            backstop, is one look).
    """

    def __init__(self, store: LogStore, lock: Any, where: str, name: str, token: int,
                 on_lost: Callable[[Event | None], object]) -> None:
        self._store = store
        self._lock = lock  # the ledger's memory lock: the store object is shared with its other threads
        self._where = where
        self.name, self.token = name, token
        self._needle = orjson.dumps(name)  # (a line naming the holder holds its name so encoded)
        self._on_lost = on_lost
        self._stopping = False
        self._call = threading.Lock()  # held while on_lost runs, and by stop()
        self._pipe = threading.Lock()  # the stop pipe's ends: closed by the thread, written by stop()
        self._stop_r, self._stop_w = os.pipe()
        os.set_blocking(self._stop_w, False)
        self.ended: Event | None = None
        self.lost = False
        self.looks = 0
        self._unread = Unreadable(where, name, token)  # (an outage said once each way)
        self._unwoken = False  # no wake-up could be had (_source_now): it looks every FOLLOW_POLL_SECONDS
        self._source: Wakeup | None = None
        self._thread = threading.Thread(target=self._run, name=f"scopeledger-watch-{name}", daemon=True)
        self._thread.start()

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:  # noqa: BLE001 - a daemon thread's error is logged, never raised into nothing
            log.exception("the watch of grant %r (token %d) stopped", self.name, self.token)
        finally:
            self._close_source()
            with self._pipe:
                os.close(self._stop_r)
                os.close(self._stop_w)
                self._stop_r = self._stop_w = -1

    def _follow(self) -> None:
        grant = self._grant_line()
        if grant is None:
            self._end(None)
            return
        # ``pos``: the last line read, ``last`` its bytes. Where lines can be cut (a
        # directory), each look reads it again with what follows: the log still holding
        # it is what says that nothing before it was cut since the last look, whatever
        # the log's length now. Elsewhere (PostgreSQL, whose server refuses to cut lines)
        # the first line past it must chain to it.
        pos, last = self.token, grant
        failed: tuple[int, bytes] | None = None  # where the last look that found no line ``pos`` was
        warned = failed
        forget = getattr(self._store, "forget", None)  # (a directory's memory of where lines are)
        replaced = getattr(self._store, "replaced", None)  # (a directory's log renamed over, deleted)
        again = 1 if forget is not None else 0  # (lines read again per look)
        while not self._stopping:
            self._source_now()  # (made, or made again, before the look: an append after it wakes the sleep)
            why = self._replaced(replaced)
            if why is not None:
                # What the directory's log holds now is not read through this descriptor:
                # the grant's line is no longer in the log this process reads.
                log.warning("the watch of grant %r (token %d) ends: %s", self.name, self.token, why)
                self._end(None)
                return
            try:
                lines = self._look(pos, last, again)
            except CorruptLedger as exc:
                # The log no longer holds the line read last: cut (by a repair) or replaced.
                # Where lines were is no longer known; the grant's line decides.
                if forget is not None:
                    with self._lock:
                        forget()
                now = self._grant_line()
                if now == b"":
                    return  # (stopped)
                if now != grant:
                    self._end(None)
                    return
                # The grant's line is there, the same: the cut was after it. Read on from it
                # (what follows may hold its end). Failing again at the same line, read the
                # same way from the grant: not tried again before the log changes.
                if failed == (pos, last):
                    if warned != failed:
                        log.warning("cannot read the log of %s past seq %d (%s): the end of grant %r (token %d) "
                                    "is looked for again when the log changes", self._where, pos, exc, self.name,
                                    self.token)
                        warned = failed
                    self._sleep(None)
                failed = (pos, last)
                pos, last = self.token, grant
                continue
            except (LedgerError, OSError) as exc:
                self._unread.failed(exc)
                self._sleep(FOLLOW_POLL_SECONDS)
                continue
            self._unread.read()
            if len(lines) > again:
                ended = self._ending(lines, again)
                if ended is not None:
                    self._end(ended)
                    return
                pos, last = lines[-1]
                if len(lines) == FOLLOW_PAGE:
                    continue  # (more to read before sleeping)
            self._sleep(None)

    def _replaced(self, replaced: Callable[[], str | None] | None) -> str | None:
        """Why the store's log is no longer the directory's (``replaced``:
        the file store's test), else ``None`` (also when it cannot say)."""
        if replaced is None:
            return None
        try:
            with self._lock:
                return replaced()
        except (LedgerError, OSError):
            return None

    def _look(self, pos: int, last: bytes, again: int) -> list[Line]:
        """The lines past line ``pos`` (a page), with line ``pos`` itself
        first when ``again`` is 1, read under the ledger's lock.

        Raises:
            CorruptLedger: the log no longer holds line ``pos`` as ``last``
                (``again``: its bytes read again; else the first new line
                does not chain to it), or cannot be read past it.
            LedgerError, OSError: the store could not be read.
        """
        with self._lock:
            lines = self._store.read_after(pos - again, FOLLOW_PAGE)
        self.looks += 1
        if again:
            if not lines or lines[0][1] != last:
                raise CorruptLedger(self._where, f"line {pos} is not the line read before", line=pos)
        elif lines and not self._follows(lines[0][1], last):
            raise CorruptLedger(self._where, f"line {lines[0][0]} does not follow the line read before",
                                line=lines[0][0])
        return lines

    def _ending(self, lines: list[Line], skip: int) -> Event | None:
        """The event among ``lines`` (the first ``skip`` left out) that
        ends the grant, if one does: only the lines naming the holder are
        decoded."""
        needle = self._needle
        for seq, line in itertools.islice(lines, skip, None):
            if needle in line:
                ev = decode(line, self._where, seq, payload=False)
                if ev["type"] in ENDINGS and ev["name"] == self.name:
                    return Event(seq, ev["ts"], ev["type"], ev["actor"], ev)
        return None

    @staticmethod
    def _follows(line: bytes, last: bytes) -> bool:
        """Whether ``line``'s ``prev`` is the hash of ``last`` (a line
        without a ``prev`` of the right type is not judged here: the fold
        judges it)."""
        try:
            prev = orjson.loads(line).get("prev")
        except (orjson.JSONDecodeError, AttributeError):
            return False
        return not isinstance(prev, str) or prev == line_hash(last)

    def _grant_line(self) -> bytes | None:
        """The grant's line, when the log still holds one granting it
        (``registered``/``delegated`` of this name at seq ``token``);
        ``None`` when it does not. Tries again while the store cannot be
        read (until :meth:`stop`: then ``b""``, which ends nothing)."""
        while not self._stopping:
            try:
                with self._lock:
                    got = self._store.read_after(self.token - 1, 1)
            except CorruptLedger:
                return None  # (the log holds fewer lines than that)
            except (LedgerError, OSError) as exc:
                self._unread.failed(exc)
                self._sleep(FOLLOW_POLL_SECONDS)
                continue
            self._unread.read()
            if not got or got[0][0] != self.token:
                return None
            line = got[0][1]
            try:
                ev = decode(line, self._where, self.token, payload=False)
            except CorruptLedger:
                return None
            holder = ev.get("holder")
            if ev["type"] not in ("registered", "delegated") or not isinstance(holder, dict) \
                    or holder.get("name") != self.name:
                return None
            return line
        return b""

    def _end(self, event: Event | None) -> None:
        """Call ``on_lost(event)`` once, unless stopped."""
        with self._call:
            if self._stopping:
                return
            self.ended, self.lost = event, True
            try:
                self._on_lost(event)
            except Exception:  # noqa: BLE001 - a callback's error must not kill silently
                log.exception("on_lost of the watch of grant %r raised", self.name)

    def _sleep(self, seconds: float | None) -> None:
        """Until the log may have grown, :meth:`stop`, or ``seconds`` (the
        source's backstop when ``None``). A source that broke since the
        look is not slept on: the next look makes a new one first."""
        source = self._source
        if source is not None and getattr(source, "broken", False):
            source, seconds = None, 0.0
        fds = [self._stop_r]
        if source is not None:
            fds.extend(source.fds(True))
        if seconds is None:
            seconds = FOLLOW_RECHECK_SECONDS if len(fds) > 1 else FOLLOW_POLL_SECONDS
        ready(fds, seconds)
        if source is not None:
            source.changes()  # (drained: whatever it says, the next look reads the log)

    def _source_now(self) -> Wakeup | None:
        """The watch's wake-up: a ring of its store's :class:`_Bell` (one
        follower for every watch of this process on that log), subscribed
        at the first look; ``None`` when none can be had (it looks every
        :data:`FOLLOW_POLL_SECONDS`)."""
        if self._source is None and not self._unwoken:
            self._source = _subscribe(self._store, self._where)
            self._unwoken = self._source is None  # (not tried again at every look)
        return self._source

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()

    # -- the caller's side --------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the thread still follows the log."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop watching: ``on_lost`` is not called once this returns (a
        call under way is waited for). Wakes the thread and waits for it to
        end, unless called from it: from ``on_lost`` itself (the watch's
        own thread) it returns at once, and the thread ends once the
        callback returns. Idempotent, from any thread, also after a stop
        from the callback."""
        if self._thread is threading.current_thread():
            # From on_lost (the only code of the caller's this thread runs), which holds
            # self._call: taking it again would never return. Nothing to wait for here.
            self._stopping = True
        else:
            with self._call:
                self._stopping = True
        with self._pipe:
            if self._stop_w >= 0:
                try:
                    os.write(self._stop_w, b"x")
                except OSError:
                    pass
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "GrantWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("watching" if self.running else "stopped")
        return f"<GrantWatch {self.name!r} token={self.token} {state}>"
