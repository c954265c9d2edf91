"""Time travel, audit queries and verification.

Everything here reads the log and the snapshots without the lock; the log
is append-only, so a prefix once read never changes. A past state costs the
newest snapshot at or before it plus at most one snapshot interval of
folding (the eventsourcing library's "newest snapshot at or before N, then
the events after it").
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import itertools
import logging
import os
import threading
import time as _time
import warnings
from array import array
from typing import Any, Callable, Iterable, Iterator, NamedTuple, cast

import attrs
import orjson

from . import _snapshots
from ._arguments import check_seq, described, integer
from ._errors import (CorruptLedger, DelegationError, HistoryUnavailable, InvalidScope, LedgerError, NewerFormat,
                      ScopeConflict, SnapshotInvalid, shown)
from ._events import (DAMAGE_ADVICE, EVENT_TYPES, GENESIS_HASH, FoldError, NewerValue, blake2b, check_event, damaged,
                      decode, decode_page, fold_fault, line_hash, newer_damage, newer_fault, payload_check, unchained)
from ._filestore import FileStore, zeroed_tail
from ._store import MIN_EVENT_BYTES
from ._fold import State, apply, check_request, holders_of
from ._logstore import LogStore, line_after
from ._rules import Permission, ScopeRule, check_name, covers_place, overlaps
from ._time import from_ns, iso, to_ns
from ._imports import first_use

log = logging.getLogger("scopeledger")

#: Lines read from the store at a time (bounded memory on any log: a page
#: of long lines is a few hundred kB; tests/test_export.py bounds it).
PAGE_LINES = 1024

#: Lines decoded and checked at once by a replay or ``verify``
#: (:func:`~scopeledger._events.decode_page`). Few, so that the events of a
#: page held alive while they are yielded do not set off the cyclic GC
#: (measured on a 201k-event log, events(): 128 lines 4.1 us per event, of
#: which 0.55 us collections; 64 or 32 lines 3.5 us and no collection).
CHECKED_LINES = 64


#: ``verify`` reports two consecutive events more than this far apart
#: (ns: 7 days) as a clock jump forward. An idle ledger shows such gaps too,
#: so it is a note, never a problem; a clock ahead by less shows as the step
#: back after it, or as a time in the future.
CLOCK_JUMP_FORWARD_NS = 7 * 86400 * 10**9

#: ``verify`` reports an event stamped more than this (ns: 60 s) after the
#: verifying machine's own clock as stamped in the future.
CLOCK_FUTURE_SLACK_NS = 60 * 10**9

#: Clock jumps a report keeps in full (``VerifyReport.clock_jumps``); all
#: are counted (``clock_jumps_total``).
CLOCK_JUMPS_KEPT = 100


class ClockJumpWarning(UserWarning):
    """Time travel by time (``state_at(time=...)``, ``who(time=...)``)
    whose answer crosses a clock jump: some event at or before the seq it
    answers with was stamped after the time asked for (the message names
    them). :meth:`HistoryMixin.time_point` returns the same as data; turn the
    warning into an error with ``warnings.simplefilter("error",
    ClockJumpWarning)``."""


def writer_of(actor: Any) -> str:
    """Who stamped an event, from its ``actor``: ``"pid 4242 on host H"``
    (the actor's ``host``, else ``"boot B"`` from its boot id)."""
    if type(actor) is not dict:
        return "an unknown writer"
    host = actor.get("host")
    where = f"host {host}" if host else f"boot {actor.get('boot')}"
    return f"pid {actor.get('pid')} on {where}"


def _what(ev: dict[str, Any]) -> str:
    """``"registered 'build'"``: an event's type and the holder it is about."""
    kind = ev.get("type")
    name = None
    if kind in ("registered", "delegated") and type(ev.get("holder")) is dict:
        name = ev["holder"].get("name")
    elif kind == "refused" and type(ev.get("request")) is dict:
        name = ev["request"].get("name")
    else:
        name = ev.get("name")
    return f"{kind} {name!r}" if type(name) is str else str(kind)


@attrs.frozen
class Stamped:
    """One event and its time: ``seq``, ``ts`` (ns, UTC), ``writer`` (see
    :func:`writer_of`), ``what`` (``"registered 'build'"``)."""

    seq: int
    ts: int
    writer: str
    what: str

    def __str__(self) -> str:
        return f"seq {self.seq} ({self.what}, by {self.writer}) at {iso(self.ts)}"


@attrs.frozen
class ClockJump:
    """Where the events' times jump (:attr:`VerifyReport.clock_jumps`).

    Attributes: ``kind`` (``"back"``: stamped before the event before it;
    ``"forward"``: more than :data:`CLOCK_JUMP_FORWARD_NS` after it;
    ``"future"``: more than :data:`CLOCK_FUTURE_SLACK_NS` after the
    verifying machine's clock), ``event`` (:class:`Stamped`), ``before``
    (:class:`Stamped` of the event before it; ``None`` for ``"future"``, or
    when verify started at a snapshot: ``before.writer`` is then
    ``"unknown"``). Which of two clocks was wrong, the record cannot say:
    both writers are named."""

    kind: str
    event: Stamped
    before: Stamped | None

    def __str__(self) -> str:
        if self.kind == "future":
            return f"{self.event} is in the future (of this machine's clock)"
        assert self.before is not None
        gap = self.event.ts - self.before.ts
        how = f"{_span(-gap)} before" if gap < 0 else f"{_span(gap)} after"
        return f"clock jump {self.kind}: {self.event} is stamped {how} {self.before}"


def _span(ns: int) -> str:
    """``"1 day, 0:00:03.250000"``: a duration as ``timedelta`` writes it."""
    return str(dt.timedelta(microseconds=ns // 1000))


@attrs.frozen
class TimePoint:
    """Where time travel to a time lands (:meth:`HistoryMixin.time_point`).

    Attributes:
        seq: the last event (by seq) stamped at or before ``ts``; 0: none.
        ts: the time asked for, ns since the epoch, UTC.
        crossed_count: how many events at or before ``seq`` were stamped
            after ``ts`` (0 when the log's times are in order there): the
            answer then crosses a clock jump.
        crossed: the first of them (at most 5), :class:`Stamped`.
        doubted_count: how many events right after ``seq`` (left out, being
            stamped after ``ts``) have a stamp the log itself puts in doubt:
            more than :data:`CLOCK_FUTURE_SLACK_NS` after the reader's clock,
            or after the stamp of a later event that is in order with the
            answer's last event. Their
            real time is unknown and may be at or before ``ts``: the answer
            may leave out what was held then (a writer whose clock ran
            ahead). Counted from the first event after ``seq`` up to the
            first whose stamp nothing contradicts.
        doubted: the first of them (at most 5), :class:`Stamped`.
    """

    seq: int
    ts: int
    crossed_count: int = 0
    crossed: tuple[Stamped, ...] = ()
    doubted_count: int = 0
    doubted: tuple[Stamped, ...] = ()

    @property
    def crosses_jump(self) -> bool:
        """Whether the answer may be wrong because of a clock jump (either
        kind above): then :meth:`message` is the warning to give."""
        return bool(self.crossed_count or self.doubted_count)

    def message(self) -> str:
        """The warning, ``""`` when the answer crosses no clock jump."""
        said = []
        if self.crossed_count:
            said.append(f"includes {self.crossed_count} event(s) stamped after that time: "
                        + _listed(self.crossed, self.crossed_count))
        if self.doubted_count:
            said.append(f"leaves out {self.doubted_count} event(s) after it whose stamps a later event "
                        f"or this machine's clock contradicts (their real time may be before that "
                        f"time): " + _listed(self.doubted, self.doubted_count))
        if not said:
            return ""
        return (f"time travel to {iso(self.ts)} crosses a clock jump: the state after seq {self.seq} "
                + "; and it ".join(said))


def _doubted(stamps: array[int], first: int, before: int | None, future: int) -> int:
    """How many events, from index ``first`` of ``stamps`` (ns, UTC, in seq
    order) on, have a stamp in doubt, up to the first that has not: later
    than ``future`` (this machine's clock and slack), or later than the
    stamp of an event after it that is itself not earlier than ``before``
    (the stamp of the answer's last event; ``None``: none, then only the
    clock judges). So the jump is the event's own, not the later event's: a
    writer whose clock is behind does not put the events before it in doubt.
    A time travel leaving these out may leave out what was held then. Cost:
    a pass over the later stamps per event of the run (a run is short: it
    ends at the first stamp in order)."""
    run = 0
    for i in range(first, len(stamps)):
        stamp = stamps[i]
        if not (stamp > future or (before is not None and any(
                before <= later < stamp for later in stamps[i + 1:]))):
            break
        run += 1  # (the run's own stamps prove nothing: ``before`` stays the bound)
    return run


def _listed(events: tuple[Stamped, ...], count: int) -> str:
    more = f" and {count - len(events)} more" if count > len(events) else ""
    return "; ".join(str(e) for e in events) + more


class Event(NamedTuple):
    """One event of the log, as read back (an immutable named tuple: the
    replay path builds hundreds of thousands per second).

    Attributes:
        seq: ``int``, gapless from 1.
        ts: ``int`` nanoseconds since the epoch, UTC.
        type: ``str``, one of :data:`~scopeledger.EVENT_TYPES`: registered,
            delegated, attached, renewed, released, reclaimed, refused,
            repaired (a repair cut the log after the seq before this one;
            ``data["through"]``: the last seq it keeps void, ``data["cut"]``:
            where what it cut went, relative to the ledger directory), void
            (a seq of a line a repair cut, kept so that no fencing token is
            given twice).
        actor: ``dict`` ``{"pid", "start", "boot"}`` of the appending process.
        data: ``dict``, the whole decoded line (payload included); its
            schema is in :mod:`scopeledger._events`.
    """

    seq: int
    ts: int
    type: str
    actor: dict[str, Any]
    data: dict[str, Any]

    @property
    def time(self) -> dt.datetime:
        """``ts`` as an aware UTC datetime."""
        return from_ns(self.ts)

    @property
    def names(self) -> tuple[str, ...]:
        """Holder names this event is about (the subject, and for a grant
        its parent; for a removal the re-parented children; none for a
        repair's ``repaired`` and ``void`` lines), ``tuple[str, ...]``."""
        d = self.data
        if self.type in ("registered", "delegated"):
            h = d["holder"]
            return (h["name"],) + ((h["parent"],) if h["parent"] else ())
        if self.type == "refused":
            req = d["request"]
            return (req["name"],) + ((req["parent"],) if req["parent"] else ()) + tuple(d.get("chain") or ())
        if self.type in ("released", "reclaimed"):
            return (d["name"],) + tuple(c for c, _ in d["reparented"])
        return (d["name"],) if "name" in d else ()  # (a repair's lines are about no holder)

    @property
    def rules(self) -> tuple[ScopeRule, ...]:
        """Rules the event carries (grants and refused requests), else ``()``."""
        if self.type in ("registered", "delegated"):
            return tuple(ScopeRule.from_json(r) for r in self.data["holder"]["rules"])
        if self.type == "refused":
            return tuple(ScopeRule.from_json(r) for r in self.data["request"]["rules"])
        return ()



#: An :class:`Event` from its fields, built in C (``tuple.__new__``: no
#: Python frame per event).
_new_event = functools.partial(tuple.__new__, Event)

@attrs.frozen
class Holding:
    """One answer of :meth:`Ledger.who`: ``chain`` (top-level holder down
    to the holder, ``tuple[str, ...]``), ``rule`` (its :class:`ScopeRule`
    covering the path), ``deepest`` (``True`` when no child of it covers the
    path too: the real holder), ``advisory`` (``True`` for a holder granted
    with ``advisory=True``, which may conflict with others)."""

    chain: tuple[str, ...]
    rule: ScopeRule
    deepest: bool
    advisory: bool = False

    @property
    def name(self) -> str:
        return self.chain[-1]


@attrs.frozen
class Diff:
    """What changed between two points (:meth:`Ledger.diff`).

    Attributes (each a sorted ``tuple``): ``added`` and ``removed`` holder
    names; ``reparented`` ``(name, old parent, new parent)``; ``rebound``
    names whose process changed (attach); ``regranted`` names released and
    granted again in between (another token).
    """

    a: int
    b: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    reparented: tuple[tuple[str, str | None, str | None], ...]
    rebound: tuple[str, ...]
    regranted: tuple[str, ...]


@attrs.frozen
class Problem:
    """A problem ``verify`` found: ``file``, ``line`` (1-based or None),
    ``seq`` (or None), ``message``, and ``newer_format`` (``bool``, default
    ``False``): the line is sound and follows the line before (its seq,
    its prev) but carries what this scopeledger does not know
    (:class:`NewerFormat`: a newer format version, event type or key),
    probably written by a newer scopeledger. Not damage: upgrade
    scopeledger; ``Ledger.repair`` cuts nothing at such a line, and this
    version cannot judge the lines after it."""

    file: str
    line: int | None
    seq: int | None
    message: str
    newer_format: bool = False

    def __str__(self) -> str:
        where = self.file + (f" line {self.line}" if self.line is not None else "")
        where += f" (seq {self.seq})" if self.seq is not None else ""
        return f"{where}: {self.message}"


@attrs.frozen
class VerifyReport:
    """Result of :meth:`Ledger.verify`: ``ok`` (bool), ``events`` and
    ``snapshots`` checked (ints), ``problems`` (``tuple[Problem, ...]``, the
    first one stops the event scan), ``notes`` (``tuple[str, ...]``, e.g. a
    torn last line awaiting the next writer, each clock jump, a snapshot of
    an older format), ``clock_jumps`` (``tuple[ClockJump, ...]``, the first
    :data:`CLOCK_JUMPS_KEPT`) and ``clock_jumps_total`` (``int``). Clock
    jumps are not problems: the order of events is their seq."""

    ok: bool
    events: int
    snapshots: int
    problems: tuple[Problem, ...]
    notes: tuple[str, ...]
    clock_jumps: tuple[ClockJump, ...] = ()
    clock_jumps_total: int = 0

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.events} events and {self.snapshots} snapshots checked"
        return f"{len(self.problems)} problem(s), first: {self.problems[0]}"


def covering(state: State, probe: "ScopeRule | str") -> list[Holding]:
    """Live holdings whose rules cover the path of ``probe`` (a
    non-recursive rule as ``Ledger._prepare`` returns it, identified, or a
    normalised path, compared by path), write first: the rules a write
    request on that path would meet there."""
    if isinstance(probe, str):
        probe = ScopeRule(probe, Permission.READ, recursive=False)
    out: list[Holding] = []
    found = []
    for chain, rule in holders_of(state, probe):
        if covers_place(rule, probe):  # not a rule below the path only
            found.append((chain, rule))
    names = {c[-1] for c, _ in found}
    for chain, rule in found:
        kids = state.children.get(chain[-1], ())
        deepest = not any(k in names for k in kids)
        out.append(Holding(chain, rule, deepest, state.holders[chain[-1]].advisory))
    out.sort(key=lambda h: (h.rule.permission is not Permission.WRITE, len(h.chain)))
    return out


def _advice_lifts(err: Exception) -> bool:
    """Whether an advisory grant may be granted despite ``err``: a conflict
    with another holder, not a taken name or a rule outside the parent's."""
    return isinstance(err, ScopeConflict) or (isinstance(err, DelegationError) and err.sibling is not None)


def _chain_fault(ev: dict[str, Any], seq: int, prev: str) -> str:
    """Why event ``ev``, read as the ``seq``-th, does not follow the line
    before it (whose hash is ``prev``), as every reader says it
    (:func:`~scopeledger._events.unchained`, ending with
    :data:`~scopeledger._events.DAMAGE_ADVICE`)."""
    if ev["seq"] != seq:
        return f"seq {ev['seq']} where {seq} should be: a line was removed, moved or added; {DAMAGE_ADVICE}"
    return f"{unchained(seq)}; {DAMAGE_ADVICE}"


def _skipping(exc: Exception) -> None:
    """Log a snapshot skipped: a warning, but for one of an older format
    (an upgrade: info)."""
    (log.info if isinstance(exc, _snapshots.SnapshotOutdated) else log.warning)("skipping snapshot: %s", exc)


class History:
    """Time travel, audit and verify over a ledger's store: what
    :class:`~scopeledger.Ledger` answers ``state_at``, ``time_point``,
    ``who``, ``diff``, ``events``, ``event_lines``, ``history`` and
    ``verify`` with (it owns one, and passes each call on).

    Args:
        store: the ledger's store (read only; nothing here takes the lock):
            the log is read by seq, a page of lines at a time.
        current: returns the ledger's folded state now (called under ``mem``).
        mem: the ledger's lock of its in-memory state.
        prepare: the ledger's ``_prepare`` (rules -> rules as the log
            stores them), for a queried path.
        where: how messages name the log (a file's full path; default the
            store's location).
    """

    def __init__(self, store: LogStore, current: Callable[[], State], mem: Any,
                 prepare: Callable[[Any], tuple[ScopeRule, ...]], where: str | None = None) -> None:
        self._store = store
        self._current = current
        self._mem = mem
        self._prepare = prepare
        self._where = where if where is not None else store.location

    def _pages(self, after: int, until: int | None = None) -> Iterator[list[bytes]]:
        """The log's lines after seq ``after`` (up to seq ``until``;
        ``None``: to the end, as it grows while read), a page of lines at a
        time, in order (the store's seqs are gapless: the first line of a
        page is the one after the last of the page before)."""
        store = self._store
        read_lines = getattr(store, "read_lines", None)  # (a file store's: no (seq, line) pairs)
        while until is None or after < until:
            limit = PAGE_LINES if until is None else min(PAGE_LINES, until - after)
            page = read_lines(after, limit) if read_lines is not None else [
                line for _, line in store.read_after(after, limit)]
            if not page:
                return
            yield page
            after += len(page)

    def _lines(self, after: int, until: int | None = None) -> Iterator[bytes]:
        """:meth:`_pages`, line by line."""
        for page in self._pages(after, until):
            yield from page

    def _checked_pages(self, seq: int, prev: str, until: int | None = None) -> Iterator[tuple[list[bytes], Any]]:
        """The log's lines after event ``seq`` (whose line hashes to
        ``prev``) in pages of at most :data:`CHECKED_LINES`, each with what
        :func:`~scopeledger._events.decode_page` says of it: ``(events,
        hashes, fields)`` when every line decodes (``payload=False``) and follows
        the one before, else ``None`` (the caller then goes line by line,
        and finds what is wrong); for a page found good, the chain goes on
        from its last line's hash, else from ``prev`` unchanged. Up to seq
        ``until`` (``None``: the end)."""
        step = CHECKED_LINES
        for page in self._pages(seq, until):
            for i in range(0, len(page), step):
                lines = page[i:i + step] if len(page) > step else page
                got = decode_page(lines, seq, prev)
                if got is not None:
                    prev = got[1][-1]
                yield lines, got
                seq += len(lines)

    # -- reading the log --------------------------------------------------------

    def _scan(self, state: State, stop_seq: int | None = None,
              stop_ts: int | None = None) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Fold the log after ``state.seq`` into ``state`` (in place),
        yielding ``(event, line)`` after each apply.
        Stops before an event with seq > ``stop_seq`` or ts > ``stop_ts``,
        once that event is checked to follow the last one applied (so that
        the last line folded is vouched for by the next, as a replay's is:
        a past state never shows an edited line while the log goes on). A
        stop decided by the event's ``ts`` also has the line after it
        checked, since that line's own content decided where to stop (an
        edited ``ts`` would otherwise name another seq).

        Raises:
            CorruptLedger: a line does not decode, apply or follow the one
                before it.
        """
        path = self._where
        vouch: tuple[str, int] | None = None  # (hash, seq) of the line that decided a stop by ts
        for line in self._lines(state.seq):
            if vouch is not None:
                prev, seq = vouch
                ev = self._decode(line, seq + 1, prev)
                if ev["prev"] != prev or ev["seq"] != seq + 1:
                    raise CorruptLedger(path, _chain_fault(ev, seq + 1, prev), line=seq + 1, seq=ev["seq"])
                return
            lineno = state.seq + 1
            ev = self._decode(line, lineno, state.last_hash)
            by_seq = stop_seq is not None and ev["seq"] > stop_seq
            if by_seq or (stop_ts is not None and ev["ts"] > stop_ts):
                if ev["prev"] != state.last_hash or ev["seq"] != lineno:
                    raise CorruptLedger(path, _chain_fault(ev, lineno, state.last_hash), line=lineno,
                                        seq=ev["seq"])
                if by_seq:
                    return
                vouch = (line_hash(line), lineno)
                continue
            try:
                apply(state, ev, line_hash(line))
            except FoldError as exc:
                fault = fold_fault(path, exc, lineno, ev["seq"])
                if isinstance(fault, NewerFormat):
                    fault = self._newer_fault(fault, line, lineno, state.last_hash)
                raise fault from None
            yield ev, line

    def _decode(self, line: bytes, seq: int, prev: str, payload: bool = True) -> dict[str, Any]:
        """:func:`~scopeledger._events.decode` of line ``seq``, which
        should follow a line hashing to ``prev``; a line that reads as a
        newer format's is judged by the lines around it
        (:meth:`_newer_fault`).

        Raises:
            NewerFormat: a newer scopeledger's line, as far as can be told.
            CorruptLedger: a line that does not decode, or damage that
                reads as a newer format (the reason ending with
                :data:`~scopeledger._events.DAMAGE_ADVICE`).
        """
        try:
            return decode(line, self._where, seq, payload)
        except NewerFormat as exc:
            raise self._newer_fault(exc, line, seq, prev) from None
        except CorruptLedger as exc:
            raise damaged(exc) from None

    def _newer_fault(self, exc: NewerFormat, line: bytes, seq: int, prev: str) -> CorruptLedger:
        """The error for line ``seq`` (``line``, to follow a line hashing
        to ``prev``) that read as a newer format's (``exc``): ``exc``, or
        damage when its seq, its ``prev`` or the line after it says so
        (:func:`~scopeledger._events.newer_fault`, every reader's rule)."""
        try:
            nxt = line_after(self._store, seq)
        except (LedgerError, OSError):  # (unread: judged as the last line)
            nxt = None
        return newer_fault(exc, line, seq, prev, nxt)

    def _chain_start(self, before: int) -> tuple[int, str]:
        """``(seq, hash of its line)`` of the newest snapshot before seq
        ``before`` whose header reads (its recorded hash: where a replay
        may start, checking the chain on from it); ``(0, GENESIS_HASH)``
        when there is none."""
        store = self._store
        header_of = getattr(store, "snapshot_header", None)
        for seq in reversed(store.snapshot_seqs()):
            if seq >= before:
                continue
            try:
                header = header_of(seq) if header_of is not None else store.snapshot_read(seq)[0]
            except SnapshotInvalid as exc:
                _skipping(exc)
                continue
            return seq, header["last_hash"]
        return 0, GENESIS_HASH

    def _base_for(self, seq: int | None = None, ts: int | None = None) -> State:
        """Newest snapshot that checks out at or before ``seq`` / ``ts``
        (the one snapshot picker, ``_snapshots.newest``); ``State()`` when
        there is none."""
        got = _snapshots.newest(self._store, lambda _seq, exc: _skipping(exc), seq=seq, ts=ts)
        return got if got is not None else State()

    # -- time travel ----------------------------------------------------------

    def state_at(self, seq: int | None = None, time: dt.datetime | int | None = None) -> State:
        """The folded state as it was after event ``seq``, or at ``time``.

        ``time`` (an aware datetime, naive taken as UTC, or ``int``
        nanoseconds since the epoch, UTC, from the year 1 to 9999: a
        negative one is before 1970, where an event's stamp may lie, its
        writer's clock never clamped) means: after the
        last event, by seq, stamped at or before it (:meth:`time_point`);
        the empty state (seq 0) when no event is. While the events' times
        are in order, that is every event stamped at or before ``time`` and
        none after. Times are each writer's own clock reading (format v2),
        so they can go back or jump ahead; when the answer includes an
        event stamped after ``time``, it crosses a clock jump, and a
        :class:`ClockJumpWarning` says so, naming those events.

        Returns:
            A new :class:`State` (``seq``, ``last_ts``, ``holders``,
            ``children``), independent of the live one.

        Raises:
            TypeError: neither or both of ``seq`` and ``time`` given; ``seq``
                not an integer (an ``int``, an ``IntEnum``, a
                ``numpy.int64``; not a ``bool``, not a float), or ``time``
                neither a ``datetime.datetime`` nor an integer.
            InvalidArgument: an integer ``time`` outside the years 1 to
                9999 (``scopeledger.to_ns``).
            HistoryUnavailable: ``seq`` is negative or after the newest
                event. (A time after the newest event gives the newest
                state: nothing has happened since.)
        """
        if (seq is None) == (time is None):
            raise TypeError("state_at() takes exactly one of seq= or time=")
        with self._mem:
            newest = self._current().seq
        if seq is not None:
            number = integer(seq)  # (a plain int: an IntEnum's, numpy.int64's; never a bool or a float)
            if number is None:
                raise TypeError(f"seq must be an int, not {described(seq)}")
            seq = number
            if seq < 0 or seq > newest:
                raise HistoryUnavailable(
                    f"no state at seq {shown(seq)}: the history holds seq 0 to {newest}")
            state = self._base_for(seq=seq)
            for _ in self._scan(state, stop_seq=seq):
                pass
            return state
        assert time is not None
        point = self.time_point(to_ns(time, "time"))
        state = self._base_for(seq=point.seq)
        for _ in self._scan(state, stop_seq=point.seq):
            pass
        if point.crosses_jump:
            warnings.warn(point.message(), ClockJumpWarning, stacklevel=3)  # the caller of Ledger.state_at
        return state

    def time_point(self, time: dt.datetime | int) -> TimePoint:
        """Where time travel to ``time`` lands: the last event, by seq,
        stamped at or before it, and the events at or before that one
        stamped after it (the answer crosses a clock jump when there are
        any).

        Args:
            time: an aware datetime (naive: UTC), or ``int`` nanoseconds
                since the epoch, UTC.

        Cost: while the times never went back (``State.clock_back_seq``
        0), the newest snapshot at or before ``time`` and the events after
        it up to ``time``; once they did, every event's time is read (the
        last event stamped at or before ``time`` may come after any jump).

        Raises:
            TypeError: ``time`` is neither a datetime nor an integer.
            InvalidArgument: an integer ``time`` outside the years 1 to
                9999 (``scopeledger.to_ns``).
            CorruptLedger: a line read does not decode.
        """
        ts = to_ns(time, "time")
        with self._mem:
            cur = self._current()
            newest, max_ts, back = cur.seq, cur.max_ts, cur.clock_back_seq
        if newest == 0 or ts >= max_ts:
            return TimePoint(newest, ts)  # every event is stamped at or before it
        # A stamp later than this machine's clock (with slack) is in doubt,
        # as one later than a later event's stamp is.
        future = _time.time_ns() + CLOCK_FUTURE_SLACK_NS
        # Every line read is checked to follow the one before (its times
        # decide the answer), and a line that decides where an answer
        # stops is vouched for by the line after it, as a replay's are.
        if back == 0:  # in order: stop at the first event stamped after it
            return self._point_in_order(ts, newest, future)
        return self._point_by_scan(ts, newest, future)

    def _point_in_order(self, ts: int, newest: int, future: int) -> TimePoint:
        """:meth:`time_point` while the stamps never went back: from the
        newest snapshot at or before ``ts``, up to the first event stamped
        after it (``future``: this machine's clock and slack, ns)."""
        path = self._where
        state = self._base_for(ts=ts)
        seq, prev = state.seq, state.last_hash
        decided: tuple[str, int] | None = None
        doubted: tuple[Stamped, ...] = ()
        for line in self._lines(seq):
            ev = self._decode(line, seq + 1, prev, payload=False) if decided is None \
                else self._decode(line, decided[1] + 1, decided[0], payload=False)
            if decided is not None:
                if ev["prev"] != decided[0] or ev["seq"] != decided[1] + 1:
                    raise CorruptLedger(path, _chain_fault(ev, decided[1] + 1, decided[0]),
                                        line=decided[1] + 1, seq=ev["seq"])
                break
            if ev["prev"] != prev or ev["seq"] != seq + 1:
                raise CorruptLedger(path, _chain_fault(ev, seq + 1, prev), line=seq + 1, seq=ev["seq"])
            if ev["seq"] > newest:
                break
            if ev["ts"] > ts:
                decided = (line_hash(line), ev["seq"])
                if ev["ts"] > future:  # in order, so every event from here on is as far ahead
                    doubted = (Stamped(ev["seq"], ev["ts"], writer_of(ev["actor"]), _what(ev)),)
                continue
            seq, prev = ev["seq"], line_hash(line)
        return TimePoint(seq, ts, doubted_count=newest - seq if doubted else 0, doubted=doubted)

    def _point_by_scan(self, ts: int, newest: int, future: int) -> TimePoint:
        """:meth:`time_point` once the stamps went back: every event's
        stamp read from the first (the last one at or before ``ts`` may
        come after any jump)."""
        path = self._where
        at, at_ts = 0, None
        later = array("q")     # seqs stamped after ts, in order
        later_ts = array("q")  # ... and their stamps
        first: list[Stamped] = []     # the first events stamped after ts
        after_at: list[Stamped] = []  # the first events after ``at``
        seq, prev = 0, GENESIS_HASH
        for line in self._lines(0):
            ev = self._decode(line, seq + 1, prev, payload=False)
            if ev["prev"] != prev or ev["seq"] != seq + 1:
                raise CorruptLedger(path, _chain_fault(ev, seq + 1, prev), line=seq + 1, seq=ev["seq"])
            seq, prev = ev["seq"], line_hash(line)
            if seq > newest:
                break
            if ev["ts"] <= ts:
                at, at_ts = seq, ev["ts"]
                after_at.clear()
            else:
                later.append(seq)
                later_ts.append(ev["ts"])
                if len(first) < 5 or len(after_at) < 5:
                    stamped = Stamped(seq, ev["ts"], writer_of(ev["actor"]), _what(ev))
                    if len(first) < 5:
                        first.append(stamped)
                    if len(after_at) < 5:
                        after_at.append(stamped)
        count = bisect.bisect_right(later, at)
        # The events after ``at`` (all stamped after ts): the leading ones
        # whose stamp is in doubt (see _doubted).
        doubted = _doubted(later_ts, count, at_ts, future)
        return TimePoint(at, ts, count, tuple(e for e in first if e.seq <= at), doubted,
                         tuple(after_at[:doubted]))

    def who(self, path: Any, *, seq: int | None = None,
            time: dt.datetime | int | None = None) -> Any:
        """Who holds ``path`` (read or write), now or at a past point.

        Args:
            path: a path (``str`` or ``os.PathLike``), or several in a
                ``list``/``tuple``: then each is answered from the one
                state (one look at the log, no lock), in order.

        Returns:
            For one path, ``list[Holding]``, write holdings first, each with
            its delegation chain; ``deepest`` marks the real holder. For a
            list of paths, ``list[list[Holding]]``, one such answer per path.

        ``path`` is resolved as rules are (symlinks in its existing part,
        unless the ledger was opened with ``resolve_symlinks=False``).

        Raises:
            InvalidScope: a bad path (the message names it; for a list, the
                first bad one), or an empty list. HistoryUnavailable,
                TypeError, InvalidArgument: ``seq`` or ``time`` as
                :meth:`state_at`.
        """
        many = isinstance(path, (list, tuple))
        if many and not path:
            raise InvalidScope("no paths given: who needs at least one path")
        probes = [self._query_rule(p, False) for p in (path if many else (path,))]
        if seq is None and time is None:
            with self._mem:
                state = self._current()
                answers = [covering(state, probe) for probe in probes]
        else:
            state = self.state_at(seq=seq, time=time)
            answers = [covering(state, probe) for probe in probes]
        return answers if many else answers[0]

    def _query_rule(self, path: Any, recursive: bool) -> ScopeRule:
        """A queried path as a rule on it would be stored: normalised, with
        ``resolve_symlinks`` its symlinks resolved, identified by the mount
        table now (see Ledger._prepare)."""
        return self._prepare(ScopeRule(path, Permission.READ, recursive))[0]

    def diff(self, a: int, b: int) -> Diff:
        """What changed between after-seq ``a`` and after-seq ``b``.

        Raises:
            HistoryUnavailable: either point is outside the history.
            TypeError: ``a`` or ``b`` is not an integer (as ``state_at``'s ``seq``).
        """
        sa, sb = self.state_at(seq=a), self.state_at(seq=b)
        ha, hb = sa.holders, sb.holders
        both = ha.keys() & hb.keys()
        return Diff(
            a, b,
            added=tuple(sorted(hb.keys() - ha.keys())),
            removed=tuple(sorted(ha.keys() - hb.keys())),
            reparented=tuple(sorted((n, ha[n].parent, hb[n].parent) for n in both
                                    if ha[n].token == hb[n].token and ha[n].parent != hb[n].parent)),
            rebound=tuple(sorted(n for n in both if ha[n].token == hb[n].token
                                 and ha[n].process != hb[n].process)),
            regranted=tuple(sorted(n for n in both if ha[n].token != hb[n].token)),
        )

    # -- audit -------------------------------------------------------------------

    def events(self, since: int | None = None, until: int | None = None, *,
               types: Iterable[str] | None = None, holder: str | None = None,
               path: str | None = None, since_time: dt.datetime | int | None = None,
               until_time: dt.datetime | int | None = None) -> Iterator[Event]:
        """Events in order, filtered.

        Args:
            since / until: first / last seq included.
            since_time / until_time: first / last time included: an aware
                datetime (naive: UTC) or ``int`` nanoseconds since the epoch.
            types: event types to keep.
            holder: keep events about this holder or any holder delegated
                from it (transitively), as the subtree was at each event.
            path: keep events whose rules overlap this path (grants and
                refusals), and removals/attaches of holders whose rules do;
                resolved as in :meth:`who`.

        Raises:
            CorruptLedger: a line does not check out (see :meth:`_chained`).
            ValueError: an unknown event type in ``types``.
            InvalidArgument: ``since``/``until`` negative (no seq is), an
                integer ``since_time``/``until_time`` outside the years 1
                to 9999.
            TypeError: ``since``/``until`` not an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a
                float), ``since_time``/
                ``until_time`` neither a ``datetime.datetime`` nor an ``int``, ``types`` not
                a ``str`` or iterable of them.
            InvalidHolderName: ``holder`` is not a holder name.
            InvalidScope: ``path`` is not a valid path.
        """
        return self._events(since, until, types, holder, path, since_time, until_time, False)

    def event_lines(self, since: int | None = None, until: int | None = None, *,
                    types: Iterable[str] | None = None, holder: str | None = None,
                    path: str | None = None, since_time: dt.datetime | int | None = None,
                    until_time: dt.datetime | int | None = None) -> Iterator[tuple[Event, bytes]]:
        """As :meth:`events` (same arguments, same checks, same errors), each
        event with its line exactly as stored in the log: ``(Event, bytes)``,
        the line's UTF-8 bytes without its newline. Hashing one line with
        ``hashlib.blake2b(line, digest_size=16).hexdigest()`` gives the next
        line's ``prev``: an outside tool can re-check the chain from these.
        """
        return self._events(since, until, types, holder, path, since_time, until_time, True)

    def _events(self, since: int | None, until: int | None, types: Iterable[str] | None,  # noqa: C901
                holder: str | None, path: str | None, since_time: dt.datetime | int | None,
                until_time: dt.datetime | int | None, lines: bool) -> Iterator[Any]:
        """:meth:`events` (``lines`` false) or :meth:`event_lines`."""
        # (Complexity 25: the arguments' checks, then one pass applying every
        # filter; to become the one log reader's filters, issue 14.)

        since = check_seq("since", since, allow_none=True)
        until = check_seq("until", until, allow_none=True)
        if holder is not None:
            check_name(holder)
        want: set[str] | None = None
        if types is not None:
            given: set[object]  # the caller's items, whatever they are until checked
            try:
                given = {types} if isinstance(types, str) else set(types)
            except TypeError:
                given = {types}  # not iterable (or unhashable items): named below
            if not all(isinstance(t, str) for t in given):
                raise TypeError(f"types must be an event type or an iterable of them, not {shown(types)}")
            want = cast("set[str]", given)  # each one a str, checked just above
            bad = want - EVENT_TYPES
            if bad:
                raise ValueError(f"unknown event type(s) {sorted(bad)}: expected {sorted(EVENT_TYPES)}")
        probe = self._query_rule(path, True) if path is not None else None
        lo_ts = to_ns(since_time, "since_time") if since_time is not None else None
        hi_ts = to_ns(until_time, "until_time") if until_time is not None else None
        subtree: set[str] = {holder} if holder is not None else set()
        rules_of: dict[str, tuple[ScopeRule, ...]] = {}
        seq0, prev = 0, GENESIS_HASH
        if since is not None and holder is None and probe is None:
            # Skip ahead to a snapshot's seq: no subtree/rules to track.
            # The chain goes on from the hash the snapshot recorded.
            seq0, prev = self._chain_start(since)
        if (want is None and probe is None and holder is None and lo_ts is None
                and hi_ts is None and since is None and until is None):
            # The whole log, unfiltered (replay, export): the lean loop.
            yield from self._chained(seq0, prev, lines, events=True)
            return
        line = b""
        for ev in self._chained(seq0, prev, lines):
            if lines:
                ev, line = ev
            seq, ts, kind = ev["seq"], ev["ts"], ev["type"]
            if until is not None and seq > until:
                return
            if hi_ts is not None and ts > hi_ts:
                return
            e = Event(seq, ts, kind, ev["actor"], ev)
            keep = True
            if holder is not None:
                keep = _track_subtree(e, subtree)
            if probe is not None:
                keep = keep and _touches_path(e, probe, rules_of)
            if since is not None and seq < since:
                continue
            if lo_ts is not None and ts < lo_ts:
                continue
            if want is not None and kind not in want:
                continue
            if keep:
                yield (e, line) if lines else e

    def _chained(self, seq: int, prev: str, lines: bool = False, events: bool = False) -> Iterator[Any]:
        """The log's events after event ``seq`` (whose line hashes to
        ``prev``), each checked to follow the one
        before: the next seq, and ``prev`` the hash of the line before (a
        page at a time, :meth:`_checked_pages`). An
        event is yielded once the line after it is checked, so a replay
        never shows a line edited, removed or moved after it was written;
        but for the last line, which no hash covers until another is
        appended (``verify`` also re-folds and checks every grant). With
        ``lines``, yields ``(event, line)``, the line's bytes as stored;
        with ``events``, each event as an :class:`Event`, else its dict.

        Raises:
            CorruptLedger: a line does not decode, or breaks the chain
                (``line`` and ``seq`` say where).
        """
        path = self._where
        hash_of = blake2b  # (a local: looked up once per line)
        held: Any = None  # an event is yielded once the next line vouches for it
        page_seq = seq
        for page, got in self._checked_pages(seq, prev):
            if got is not None:  # every line decodes and follows the one before
                evs = got[0]
                if events:
                    evs = list(map(_new_event, zip(*got[2], evs, strict=True)))
                if held is not None:
                    yield held
                if lines:
                    yield from zip(evs[:-1], page, strict=False)  # (the last one is held)
                    held = (evs[-1], page[-1])
                else:
                    yield from evs[:-1]
                    held = evs[-1]
                page_seq += len(page)
                prev = got[1][-1]
                continue
            for line in page:  # line by line: the first that does not check out stops it, named
                page_seq += 1
                ev = self._decode(line, page_seq, prev, payload=False)
                if ev["prev"] != prev or ev["seq"] != page_seq:
                    raise CorruptLedger(path, _chain_fault(ev, page_seq, prev), line=page_seq, seq=ev["seq"])
                prev = hash_of(line, digest_size=16).hexdigest()
                if held is not None:
                    yield held
                item = _new_event((ev["seq"], ev["ts"], ev["type"], ev["actor"], ev)) if events else ev
                held = (item, line) if lines else item
        if held is not None:
            yield held  # the last line: nothing after it can vouch for it

    def history(self, name: str) -> list[Event]:
        """Every event about holder ``name`` and the holders it delegated to
        (transitively), in order: grants, attaches, refusals, re-parenting,
        releases and reclaims. Empty when the name never appears.

        Raises:
            InvalidHolderName: ``name`` is not a holder name.
            CorruptLedger: a line does not check out.
        """
        return list(self.events(holder=name))

    # -- verification ---------------------------------------------------------------

    def verify(self, *, workers: int | None = None) -> VerifyReport:
        """Check the whole log and every snapshot; see ``VerifyReport``.

        Checks: each line is a valid event; seqs are gapless; the hash
        chain holds; every event applies to the state before it; every
        grant was grantable then (no two live holders outside one line of
        delegation hold overlapping write rules; every delegated rule lies
        inside its parent's scope); every snapshot equals the fold at its
        seq. Folds from scratch: trusts no snapshot. Also reports, as
        notes and ``clock_jumps`` (not problems: the order of events is
        their seq), every event stamped before the event before it, more
        than :data:`CLOCK_JUMP_FORWARD_NS` (7 days) after it, or more than
        :data:`CLOCK_FUTURE_SLACK_NS` (60 s) after this machine's clock,
        naming the writers (pid and host) of both events. A snapshot of an
        older format is a note too (it is skipped when opening).

        Args:
            workers: processes to verify with. ``None``: one per CPU (at
                most 8) when the log is large (``PARALLEL_MIN_BYTES``) and
                has snapshots, this process has no other thread, and the
                platform forks. The log is cut at snapshots into segments,
                each folded from the snapshot where it starts and checked
                against the one where it ends; segment 0 starts from
                nothing, so by induction every segment starts from the
                fold of the log, and the result is the same as folding
                the whole log in order. Any problem found that way is
                looked at again in one process, which gives the exact
                report.

        A log that cannot be read (an I/O error) past some line is a
        problem of the report, ``cannot read: ...``, naming the log.

        Raises:
            TypeError: ``workers`` is not ``None`` or an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a ``float``).
            ValueError: ``workers`` is below 1.
            LedgerIOError: the log's size or the snapshots directory cannot
                be read; it names the full path.
        """
        store = self._store
        if workers is not None:
            count = integer(workers)  # (an int, an IntEnum, a numpy.int64; never a bool or a float)
            if count is None:
                raise TypeError(f"workers must be None or an int, not {described(workers)}")
            if count < 1:
                raise ValueError(f"workers must be at least 1, not {count}")
            workers = count
        if workers is None:
            workers = _auto_workers(store)
        if workers > 1:
            report = self._verify_parallel(workers)
            if report is not None:
                return report
        snaps = set(store.snapshot_seqs())
        report = _verify_range(self, State(), None, snaps, check_tail=True)
        return attrs.evolve(report, notes=report.notes + tuple(_jump_notes(report.clock_jumps,
                                                                            report.clock_jumps_total)))

    def _verify_parallel(self, workers: int) -> VerifyReport | None:
        """The segments verified in ``workers`` forked processes; ``None``
        when that is not possible or something was found (the caller then
        verifies in this process)."""
        with first_use:
            import multiprocessing

        store = self._store
        if not isinstance(store, FileStore):
            return None  # (workers reopen the ledger by its path)
        listed = store.snapshot_seqs()
        try:
            head = store.head()
        except CorruptLedger:  # (a line over MAX_LINE_BYTES): one process names it, as a problem
            return None
        # About 4 segments per worker, cut at snapshots, even in lines.
        want = max(1, min(len(listed) + 1, workers * 4))
        step = head / want
        cuts = [0]
        for seq in listed:
            if seq - cuts[-1] >= step and seq < head:
                cuts.append(seq)
        if len(cuts) < 2:
            return None
        segments = []
        for i, seq in enumerate(cuts):
            end_seq = cuts[i + 1] if i + 1 < len(cuts) else None
            inside = {q for q in listed if q > seq and (end_seq is None or q <= end_seq)}
            segments.append((store.location, seq, end_seq, inside, end_seq is None))
        try:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(min(workers, len(segments))) as pool:
                results = pool.map(_verify_segment, segments, chunksize=1)
        except Exception as exc:  # noqa: BLE001 - fall back to one process
            log.info("parallel verify unavailable (%s: %s); verifying in one process",
                     type(exc).__name__, exc)
            return None
        events = checked = total = 0
        notes: tuple[str, ...] = ()
        jumps: list[ClockJump] = []
        for r in results:
            if r is None or not r.ok:
                return None
            events += r.events
            checked += r.snapshots
            total += r.clock_jumps_total
            jumps.extend(r.clock_jumps)
            notes = r.notes  # the last segment's (torn tail)
        jumps = jumps[:CLOCK_JUMPS_KEPT]
        return VerifyReport(True, events, checked, (), notes + tuple(_jump_notes(jumps, total)),
                            tuple(jumps), total)

    def _check_snapshot(self, seq: int, state: State, notes: list[str] | None = None) -> list[Problem]:
        try:
            same = _snapshots.holds(self._store, seq, state)
        except _snapshots.SnapshotOutdated as exc:
            if notes is not None:
                notes.append(str(exc))
            return []
        except SnapshotInvalid as exc:
            return [self._line_against(seq, state) or Problem(exc.path, None, state.seq, exc.reason)]
        if not same:
            return [self._line_against(seq, state) or Problem(
                _snapshots.where(self._store, seq), None, state.seq,
                "snapshot differs from the fold of the log at its seq")]
        return []

    def _line_against(self, seq: int, state: State) -> Problem | None:
        """The problem of the log when the snapshot at ``seq``, sound on its
        own (:func:`~scopeledger._snapshots.sound_alone`: its header,
        checksum and body agree), recorded another hash for line ``seq``
        than the line's now (``state.last_hash``, the fold's) and holds a
        holder otherwise than the fold: the log was altered after the
        snapshot was written, from at most the line that granted the first
        such holder (its token); named there (a last line has no line after
        it to tell, and a rechained edit fools the chain: a fresh tester's
        finding, verify blamed the genuine snapshot and a repair kept the
        edited line). ``None`` when they differ in the hash alone (the
        snapshot is the one named)."""
        doc = _sound_snapshot(self._store, seq)
        if doc is None or doc["last_hash"] == state.last_hash:
            return None
        first = _first_differing_grant(doc, state)
        if first is None:
            return None
        return Problem(self._where, first[0], first[0], (
            f"line altered after it was written: the log from this line to seq {seq} is not what the snapshot "
            f"at seq {seq} recorded ({_snapshots.where(self._store, seq)}): holder {first[1]!r}, granted "
            "here, differs"))


def _first_differing_grant(doc: dict[str, Any], state: State) -> tuple[int, str] | None:
    """``(token, name)`` of the earliest granted holder that the snapshot
    body ``doc`` holds otherwise than ``state`` (or holds and ``state``
    does not, or the other way round); ``None`` when none (or its holders
    cannot be read)."""
    try:
        theirs = {h["name"]: h for h in doc["holders"]}
    except (KeyError, TypeError):
        return None
    mine = {h["name"]: h for h in state.to_json()["holders"]}
    differ = [h for name in theirs.keys() | mine.keys()
              for h in (theirs.get(name), mine.get(name)) if h is not None and theirs.get(name) != mine.get(name)]
    tokens = [(h["token"], h["name"]) for h in differ if type(h.get("token")) is int and h["token"] >= 1]
    return min(tokens) if tokens else None


def _sound_snapshot(store: Any, seq: int) -> dict[str, Any] | None:
    """The body of a directory's snapshot at ``seq`` when there is one that
    checks out on its own (:func:`~scopeledger._snapshots.sound_alone`):
    its ``last_hash`` is the hash it recorded for line ``seq``; else
    ``None``, also for one naming another ledger, or any ledger when this
    one's id cannot be read (it vouches for no line of this log). One read
    of the file; never raises."""
    inner = getattr(store, "store", None)
    if inner is None:
        return None
    doc = _snapshots.sound_alone(inner, seq, vouching=True)
    return None if isinstance(doc, str) else doc


def _chain_problem(path: str, lineno: int, ev: dict[str, Any], line: bytes,
                   prev_line: bytes | None, nxt: bytes | None, vouched: bool = False) -> Problem:
    """Line ``lineno``'s ``prev`` does not match the line before. If the
    next line (``nxt``, ``None`` at the end) still chains to this one, or
    (``vouched``, the last line) a snapshot at its seq recorded its hash,
    this line is intact and the line before it was altered; otherwise this
    line (its ``prev``) was."""
    if prev_line is not None and (nxt is not None or vouched):
        try:
            nxt_prev = orjson.loads(nxt).get("prev") if nxt is not None else None
        except (orjson.JSONDecodeError, AttributeError):
            nxt_prev = None
        if vouched or nxt_prev == line_hash(line):
            try:
                before_seq = orjson.loads(prev_line).get("seq")
            except (orjson.JSONDecodeError, AttributeError):
                before_seq = None
            return Problem(path, lineno - 1, before_seq,
                           f"line altered after it was written: its hash no longer matches the prev "
                           f"recorded by line {lineno}" + (f", which the snapshot at seq {lineno} vouches for"
                                                           if vouched else ""))
        return Problem(path, lineno, ev.get("seq"),
                       "line altered after it was written: its prev does not match the line before, "
                       "and the line after does not chain to it")
    return Problem(path, lineno, ev.get("seq"), "hash chain broken: prev does not match the line before")


def _newer_problem(path: str, lineno: int, exc: NewerFormat, line: bytes, state: State,
                   prev_line: bytes | None, nxt: bytes | None) -> Problem:
    """The problem of line ``lineno``, which :func:`decode` or the fold
    found sound but of a newer format (``exc``): that (``newer_format``)
    when its seq and prev follow the line before (``state``'s last) and
    the line after (``nxt``; ``None``: none) names its hash as its
    ``prev``; else damage: the broken chain, as the fold would name it
    (``prev_line``: the line before, which may be the one altered), or
    the line altered after it was written (a bit flipped in a key or type
    name reads as one a newer version may have: the chain tells them apart
    wherever a line follows). :func:`~scopeledger._events.newer_damage`,
    every reader's rule."""
    ev = orjson.loads(line)  # (decode read it: a JSON object, seq an int, prev a str)
    if ev["seq"] == state.seq + 1 and ev["prev"] != state.last_hash:
        return _chain_problem(path, lineno, ev, line, prev_line, nxt)
    why = newer_damage(exc, line, state.seq + 1, state.last_hash, nxt)
    if why is not None:
        return Problem(path, lineno, ev["seq"], why)
    return Problem(path, lineno, exc.seq, exc.reason, newer_format=True)


def _line_after(store: LogStore, seq: int) -> bytes | None:
    """:func:`~scopeledger._logstore.line_after`, ``None`` when the store
    cannot be read (then judged as a last line)."""
    try:
        return line_after(store, seq)
    except (LedgerError, OSError):
        return None


def _track_subtree(e: Event, subtree: set[str]) -> bool:
    d = e.data
    if e.type in ("registered", "delegated"):
        h = d["holder"]
        if h["name"] in subtree:
            return True
        if h["parent"] in subtree:
            subtree.add(h["name"])
            return True
        return False
    if e.type == "refused":
        req = d["request"]
        return req["name"] in subtree or req["parent"] in subtree
    if e.type in ("released", "reclaimed"):
        return d["name"] in subtree or any(c in subtree for c, _ in d["reparented"])
    return d.get("name") in subtree  # (a repair's lines are about no holder)


def _touches_path(e: Event, probe: ScopeRule, rules_of: dict[str, tuple[ScopeRule, ...]]) -> bool:
    d = e.data
    if e.type in ("registered", "delegated"):
        rules = e.rules
        rules_of[d["holder"]["name"]] = rules
        return any(overlaps(r, probe) for r in rules)
    if e.type == "refused":
        return any(overlaps(r, probe) for r in e.rules)
    rules = rules_of.get(d.get("name", ""), ())  # (a repair's lines are about no holder: none)
    if e.type in ("released", "reclaimed"):
        rules_of.pop(d["name"], None)
    return any(overlaps(r, probe) for r in rules)


#: Logs smaller than this are verified in one process (forking and loading
#: snapshots costs more than it saves).
PARALLEL_MIN_BYTES = 32 << 20


def _auto_workers(store: Any) -> int:
    if not hasattr(os, "fork") or threading.active_count() > 1 or not isinstance(store, FileStore):
        return 1
    if store.store.size() < PARALLEL_MIN_BYTES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _verify_segment(args: tuple[Any, ...]) -> "VerifyReport | None":
    """One segment, in a worker: fold from the snapshot at seq ``start``
    (0: from nothing) to seq ``end`` (``None``: the end of the log),
    checking the snapshots in ``inside`` on the way."""
    path, start, end, inside, last = args
    store = FileStore.open(path, readonly=True)  # verify never changes anything, in workers too
    try:
        led = History(store, State, threading.RLock(), _no_prepare, store.store.log_path)
        if start == 0:
            state = State()
        else:
            try:
                state = _snapshots.read_state(store, start)
            except SnapshotInvalid:
                return None
        return _verify_range(led, state, end, set(inside), check_tail=last)
    finally:
        store.close()


def _no_prepare(rules: Any) -> tuple[ScopeRule, ...]:  # pragma: no cover - verify queries no path
    raise AssertionError("verify resolves no path")


def _past_the_end(store: Any, seq: int, last_seq: int) -> Problem:
    """The problem of a snapshot at a seq the log does not reach. One
    that is not a snapshot at all (a symlink, a FIFO, a directory, a file
    that cannot be read or whose header does not parse) is named for that,
    as the snapshot loader names it (``cannot read: is a symlink, not a
    regular file``): removing it is the remedy either way, but the reason
    is what went wrong. Only a readable snapshot is "past the end of the
    log" (the log was cut or replaced after it was written)."""
    header = getattr(store, "snapshot_header", None)
    if header is not None:
        try:
            header(seq)
        except SnapshotInvalid as exc:
            return Problem(exc.path, None, seq, exc.reason)
    return Problem(_snapshots.where(store, seq), None, seq,
                   f"snapshot at seq {seq} is past the end of the log (seq {last_seq})")


def _verify_range(led: Any, state: State, stop: int | None, snaps: set[int],  # noqa: C901
                  check_tail: bool) -> VerifyReport:
    """Fold the log's lines after ``state.seq`` up to seq ``stop``
    (``None``: the end), with every check of ``Ledger.verify``; snapshots
    at the seqs in ``snaps`` are compared with the fold as it reaches them.
    ``check_tail``: also report a torn last line (a file store's) and
    snapshots past the end of the log."""
    # (Complexity 26: every check of verify in one pass over the lines, the
    # hot loop of verify; to become the one log reader's, issue 14.)
    store = led._store
    path = led._where
    problems: list[Problem] = []
    notes: list[str] = []
    total = len(snaps)
    events = 0
    first_line = state.seq + 1
    jumps: list[ClockJump] = []
    jumps_total = 0
    future = _time.time_ns() + CLOCK_FUTURE_SLACK_NS
    # The event before (its dict); at a snapshot, only its seq and time are known.
    before: Any = {"seq": state.seq, "ts": state.last_ts} if state.seq else None

    def stamped(e: dict[str, Any]) -> Stamped:
        if "type" not in e:
            return Stamped(e["seq"], e["ts"], "a writer before this segment", "the event before")
        return Stamped(e["seq"], e["ts"], writer_of(e.get("actor")), _what(e))

    def jump(kind: str, e: dict[str, Any], prev: Any) -> None:
        nonlocal jumps_total
        jumps_total += 1
        if len(jumps) < CLOCK_JUMPS_KEPT:
            jumps.append(ClockJump(kind, stamped(e), stamped(prev) if prev is not None else None))

    def fold(ev: dict[str, Any], line: bytes, hash_: str, lineno: int) -> Problem | FoldError | None:
        """Every check of verify after the line's decoding, and the fold:
        the problem that stops the scan, or the ``FoldError`` of ``apply``
        (the caller words it: a broken chain is told from the lines
        around), or ``None`` (a snapshot that differs is in ``problems``:
        the scan goes on)."""
        nonlocal events, before
        if ev.get("seq") == state.seq + 1 and ev.get("prev") != state.last_hash:
            # The chain before anything the line says: a line K altered so
            # that line K+1 no longer applies (its holder's name now taken,
            # its scope now held) is line K's fault, which the lines around
            # tell (the caller words it); K+1's payload is not judged.
            return FoldError("hash chain broken: prev does not match the line before")
        try:
            # The fold's own payload checks first, in its words; apply then
            # folds what they read without checking the payload again.
            checked = check_event(ev)
        except NewerValue as exc:  # a newer scopeledger's value, if the line follows the one before
            if ev["seq"] != state.seq + 1:
                return Problem(path, lineno, ev["seq"], f"seq {shown(ev['seq'])} does not follow {state.seq}")
            # (its prev matched the line before: checked first, above)
            newer = fold_fault(path, exc, lineno, ev["seq"])
            assert isinstance(newer, NewerFormat)
            return _newer_problem(path, lineno, newer, line, state, None, _line_after(store, lineno))
        except FoldError as exc:
            return Problem(path, lineno, ev["seq"], str(exc))
        kind = ev["type"]
        if kind == "registered" or kind == "delegated":
            # check_event has checked the rules: a non-empty list of
            # normalised [path, "read"|"write", bool], as ScopeRule objects
            # equal to what ScopeRule.from_json would build from them (so
            # "not normalised" and "no rules" cannot be found here).
            try:
                h = ev["holder"]
                err = check_request(state, h["name"], checked[2], h["parent"])
            except Exception as exc:  # noqa: BLE001 - e.g. no "parent" key: reported as is
                err = exc
            if err is not None and "advisory" in h and _advice_lifts(err):
                err = None  # granted despite its conflicts, which its event records
            if err is not None and ev.get("seq") == state.seq + 1:
                return Problem(path, lineno, ev["seq"], f"{kind} event breaks an invariant: {err}")
        try:
            apply(state, ev, hash_, checked)
        except FoldError as exc:
            return exc
        events += 1
        ts = ev["ts"]
        if before is not None:
            if ts < before["ts"]:
                jump("back", ev, before)
            elif ts - before["ts"] > CLOCK_JUMP_FORWARD_NS:
                jump("forward", ev, before)
        if ts > future:
            jump("future", ev, None)
        before = ev
        if state.seq in snaps:
            snaps.discard(state.seq)
            problems.extend(led._check_snapshot(state.seq, state, notes))  # (the scan goes on)
        return None

    try:
        pages = led._checked_pages(state.seq, state.last_hash, stop)
        lines: Iterator[bytes] = iter(())
        # The line before the one being read (None: before the first read
        # here): a page's first line that does not chain may be the last
        # good page's last line altered, which the chain tells.
        prev_line: bytes | None = None
        for page, got in pages:
            if got is None:  # a line in it does not decode or chain: line by line from here
                lines = itertools.chain(page, (line for p, _ in pages for line in p))
                break
            prev_line = page[-1]
            # Each line decoded (its payload's keys still to check) and chained.
            for ev, line, hash_ in zip(got[0], page, got[1], strict=True):
                lineno = first_line + events
                payload_ok = payload_check(ev)
                if payload_ok is not None:
                    try:
                        known = payload_ok(ev)
                    except KeyError:  # (a payload object missing: the fold names it)
                        known = False
                    if not known:
                        try:
                            decode(line, path, lineno)  # an unknown key there: it says which
                        except NewerFormat as exc:  # (decode_page chained the page: the line before is good)
                            problems.append(_newer_problem(path, lineno, exc, line, state, None,
                                                           _line_after(store, lineno)))
                            break
                found = fold(ev, line, hash_, lineno)
                if found is not None:
                    problems.append(found if isinstance(found, Problem)
                                    else Problem(path, lineno, ev.get("seq"), str(found)))
                    break
            else:
                continue
            break
        for line in lines:
            lineno = first_line + events
            try:
                ev = decode(line, path, lineno)
            except NewerFormat as exc:  # a newer writer's line, if it follows the line before
                problems.append(_newer_problem(path, lineno, exc, line, state, prev_line,
                                               _line_after(store, lineno)))
                break
            found = fold(ev, line, line_hash(line), lineno)
            if isinstance(found, FoldError):
                if ev.get("prev") != state.last_hash and ev.get("seq") == state.seq + 1:
                    nxt = next(lines, None)
                    # (the last line: a sound snapshot at its seq that recorded its hash vouches for it)
                    doc = _sound_snapshot(store, lineno) if nxt is None and prev_line is not None else None
                    found = _chain_problem(path, lineno, ev, line, prev_line, nxt,
                                           doc is not None and doc["last_hash"] == line_hash(line))
                else:
                    found = Problem(path, lineno, ev.get("seq"), str(found))
            if found is not None:
                if not (problems and (problems[-1].file, problems[-1].line) == (found.file, found.line)):
                    problems.append(found)  # (else named already: by the snapshot at its seq)
                break
            prev_line = line
    except CorruptLedger as exc:  # a line that does not decode, or one over MAX_LINE_BYTES (found splitting)
        problems.append(Problem(path, first_line + events, exc.seq, exc.reason))
    except OSError as exc:  # LedgerIOError: an I/O error reading the log
        problems.append(Problem(path, None, None, f"cannot read: {_snapshots.why(exc)}"))
    else:
        torn = getattr(store, "torn_zeros", None)
        if not problems and check_tail and torn is not None:
            left, zeros = torn()
            if zeros >= MIN_EVENT_BYTES:  # (lines a power cut zeroed: writers refuse, repair keeps them void)
                problems.append(Problem(path, state.seq + 1, None, zeroed_tail(left, zeros, state.seq)))
            elif left:
                notes.append(f"{path}: torn last line of {left} bytes after seq "
                             f"{state.seq} (the next writer sets it aside)")
    if not problems and check_tail:
        for seq in sorted(snaps):
            problems.append(_past_the_end(store, seq, state.seq))
    elif not problems and snaps:
        return VerifyReport(False, events, total - len(snaps), (), ())  # a snapshot was not reached
    return VerifyReport(not problems, events, total - len(snaps), tuple(problems), tuple(notes),
                        tuple(jumps), jumps_total)


def _jump_notes(jumps: Any, total: int, shown_: int = 10) -> list[str]:
    """Notes for the first ``shown_`` clock jumps, and how many more."""
    out = [str(j) for j in jumps[:shown_]]
    if total > len(out):
        out.append(f"{total - len(out)} more clock jump(s)")
    return out
