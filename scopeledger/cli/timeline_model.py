"""Events -> holder bars: the model behind ``ledger timeline`` and the trace
export (``ledger export --format trace``). Pure: no IO, no clock, no plotting
library; it takes what the public API gives (:class:`Event` from
``Ledger.events``, :class:`Allocation` from ``Ledger.state_at``).

A *bar* is one grant: a holder from the event that granted it (its token)
to the event that released or reclaimed it, or to the end of the window if
it is still held there. Bars nest under the grant of their delegator (the
parent named when the grant was made; a later re-parenting does not move a
bar). A refusal is a *mark* at the time it was recorded.

:func:`track` turns events into a stream of changes (for a streaming
export, in memory bounded by the live holders); :func:`build` collects them
into a :class:`Timeline` (for a picture); :func:`select_rows` picks the rows
a picture can show and counts the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple

from scopeledger import Allocation, Event, ScopeRule, overlaps

@dataclass(slots=True, eq=False, repr=False)  # eq=False: a bar is itself (hashable, by identity)
class Bar:
    """One grant, from its event to its end (see the module docstring).

    Attributes:
        token: ``int``, the seq of the event that granted it.
        name: holder name, ``str``.
        parent: the delegator's name when it was granted, or ``None``.
        parent_token: the delegator's grant (its token), when that grant is
            among the bars seen; else ``None``.
        rules: the rules as granted, in the log's form: a list of
            ``[path, "read"|"write", recursive]``.
        pid: ``int``, the process it was bound to when granted.
        start_ns / start_seq: when it was granted (ns since the epoch, UTC),
            or, for a grant made before the window (``before``), the start
            of the window.
        end_ns / end_seq: when it was released or reclaimed; ``None`` while
            held.
        ended: ``"released"``, ``"reclaimed"`` or ``"held"``.
        reason: the reclaim reason (``process_gone``, ``zombie``, ...) or
            ``None``.
        attaches: ``list[tuple[int, int]]``, ``(ns, pid)`` of each attach.
        reserved: ``True`` when it was granted reserved (a delegation
            waiting for its process to attach; the first attach ends that).
        before: ``True`` when it was granted before the window began.
        depth: ``int``, 0 at top level (or when the delegator is not among
            the bars), else the delegator's depth + 1.
        note: the grant's note (why it was asked for), or ``None``.
        ttl_ns: the grant's lease, ``int`` ns (for a grant before the
            window, its lease as it stood then), or ``None``: no lease.
        lease_only: ``True`` when the lease alone binds it.
        advisory: an advisory grant's conflicts, as its event records them
            (``[[chain, their rule, requested rule], ...]``, ``[]`` when it
            met none), or ``None`` (not advisory, or granted before the
            window: an :class:`Allocation` does not carry them).
        end_pid: the pid of the process that released or reclaimed it (the
            event's actor), or ``None``.
        forced: a forced release's reason, or ``None``.
        end_note: the release's note, or ``None``.
        exit_code / exit_signal: how its process ended, when the release or
            the reclaim of a zombie records it, else ``None``.
        last_seen: a reclaim's ``last_seen`` (ns since the epoch, UTC), or
            ``None``.
    """

    token: int
    name: str
    parent: str | None
    parent_token: int | None
    rules: list[Any]
    pid: int
    start_ns: int
    start_seq: int
    before: bool = False
    depth: int = 0
    reserved: bool = False
    note: str | None = None
    ttl_ns: int | None = None
    lease_only: bool = False
    advisory: list[Any] | None = None
    end_ns: int | None = field(default=None, init=False)
    end_seq: int | None = field(default=None, init=False)
    ended: str = field(default="held", init=False)
    reason: str | None = field(default=None, init=False)
    attaches: list[tuple[int, int]] = field(default_factory=list, init=False)
    end_pid: int | None = field(default=None, init=False)
    forced: str | None = field(default=None, init=False)
    end_note: str | None = field(default=None, init=False)
    exit_code: int | None = field(default=None, init=False)
    exit_signal: int | None = field(default=None, init=False)
    last_seen: int | None = field(default=None, init=False)

    @property
    def kind(self) -> str:
        """How it ended, as one key: ``released``, ``held``, or
        ``reclaimed:<reason>``."""
        return f"reclaimed:{self.reason}" if self.ended == "reclaimed" else self.ended

    def __repr__(self) -> str:
        return (f"Bar({self.name!r}, token={self.token}, parent={self.parent!r}, "
                f"{self.start_seq}..{self.end_seq}, {self.kind})")


class Mark(NamedTuple):
    """A refusal: ``ns``/``seq`` when it was recorded, ``name`` and
    ``parent`` of the request, ``error`` (``scope_conflict``,
    ``delegation``, ``duplicate``, ``unknown_parent``), ``message``, and
    ``obstacle`` (the holder in the way, the last of the chain, or
    ``None``)."""

    ns: int
    seq: int
    name: str
    parent: str | None
    error: str
    message: str
    obstacle: str | None


class Change(NamedTuple):
    """One step of :func:`track`: ``what`` is ``"start"``, ``"end"``,
    ``"attach"`` (``detail``: the new pid), ``"reparent"`` (``detail``: the
    new parent's name or ``None``), ``"renew"`` (``detail``: the lease's
    new ttl, ``int`` ns), or ``"refused"`` (``bar`` is ``None``,
    ``detail`` the :class:`Mark`); ``ns``/``seq`` when."""

    what: str
    bar: Bar | None
    ns: int
    seq: int
    detail: Any = None


def _process_pid(process: Any) -> int:
    pid = process.get("pid") if isinstance(process, dict) else None
    return pid if type(pid) is int else 0


def seed(holders: Iterable[Allocation], start_ns: int, start_seq: int,
         holder: str | None = None, path: ScopeRule | None = None) -> list[Bar]:
    """Bars for the holders live when a window begins (``state.holders``
    of ``Ledger.state_at(seq=since - 1)``, in grant order), starting at
    ``start_ns``/``start_seq``, marked ``before``.

    ``holder`` keeps only that holder and those delegated from it
    (transitively); ``path`` only holders with a rule overlapping it: the
    same selection ``Ledger.events(holder=..., path=...)`` makes.
    """
    allocs = list(holders)
    if holder is not None:
        keep = {holder}
        for a in allocs:  # grant order: a parent comes before its children
            if a.parent in keep:
                keep.add(a.name)
        allocs = [a for a in allocs if a.name in keep]
    if path is not None:
        allocs = [a for a in allocs if any(overlaps(r, path) for r in a.rules)]
    bars: list[Bar] = []
    by_name: dict[str, Bar] = {}
    for a in allocs:
        up = by_name.get(a.parent) if a.parent is not None else None
        lease = a.lease
        b = Bar(a.token, a.name, a.parent, up.token if up else None, [r.to_json() for r in a.rules], a.pid,
                start_ns, start_seq, before=True, depth=up.depth + 1 if up else 0, reserved=a.reserved,
                ttl_ns=lease.ttl_ns if lease is not None else None,
                lease_only=lease is not None and not lease.process)
        by_name[a.name] = b
        bars.append(b)
    return bars


def track(events: Iterable[Event], live: Iterable[Bar] = ()) -> Iterator[Change]:
    """Changes, in event order, for ``events`` (possibly filtered, as
    ``Ledger.events`` filters them: an event about a holder not seen is
    ignored), given the bars ``live`` when they begin (see :func:`seed`).

    Keeps only the live bars: memory grows with the live holders, not with
    the events. The ``live`` bars are not reported as started.
    """
    current: dict[str, Bar] = {b.name: b for b in live}
    for e in events:
        d = e.data
        kind = e.type
        if kind == "registered" or kind == "delegated":
            h = d["holder"]
            parent = h.get("parent")
            up = current.get(parent) if parent is not None else None
            b = Bar(e.seq, h["name"], parent, up.token if up else None,
                    h["rules"], _process_pid(h.get("process")),
                    e.ts, e.seq, depth=up.depth + 1 if up else 0, reserved=h.get("reserved") is True,
                    note=h.get("note"), ttl_ns=h.get("ttl_ns"), lease_only=h.get("lease_only") is True,
                    advisory=h.get("advisory"))
            current[b.name] = b
            yield Change("start", b, e.ts, e.seq)
        elif kind == "released" or kind == "reclaimed":
            gone = current.pop(d["name"], None)
            for child, new_parent in d.get("reparented") or ():
                c = current.get(child)
                if c is not None:
                    yield Change("reparent", c, e.ts, e.seq, new_parent)
            if gone is not None:
                gone.end_ns, gone.end_seq, gone.ended = e.ts, e.seq, kind
                if kind == "reclaimed":
                    gone.reason = str(d.get("reason"))
                    gone.last_seen = d.get("last_seen")
                else:
                    gone.forced, gone.end_note = d.get("forced"), d.get("note")
                gone.exit_code, gone.exit_signal = d.get("exit_code"), d.get("exit_signal")
                actor = e.actor
                gone.end_pid = actor.get("pid") if isinstance(actor, dict) else None
                yield Change("end", gone, e.ts, e.seq)
        elif kind == "renewed":
            renewed = current.get(d["name"])
            if renewed is not None:
                yield Change("renew", renewed, e.ts, e.seq, d.get("ttl_ns"))
        elif kind == "attached":
            bound = current.get(d["name"])
            if bound is not None:
                pid = _process_pid(d.get("process"))
                bound.attaches.append((e.ts, pid))
                yield Change("attach", bound, e.ts, e.seq, pid)
        elif kind == "refused":
            req = d.get("request") or {}
            chain = d.get("chain") or ()
            mark = Mark(e.ts, e.seq, str(req.get("name")), req.get("parent"), str(d.get("error")),
                        str(d.get("message", "")), chain[-1] if chain else None)
            yield Change("refused", None, e.ts, e.seq, mark)


class Timeline(NamedTuple):
    """What :func:`build` collects: every ``bars`` (grant order, those held
    from before the window first), the refusal ``marks``, and the window:
    ``start_ns``/``end_ns`` (the first and last event's time, or the seeded
    start) and ``first_seq``/``last_seq`` (``0`` when empty)."""

    bars: list[Bar]
    marks: list[Mark]
    start_ns: int
    end_ns: int
    first_seq: int
    last_seq: int

    @property
    def empty(self) -> bool:
        return not self.bars and not self.marks


def build(events: Iterable[Event], live: Iterable[Bar] = (), start_ns: int | None = None,
          start_seq: int = 0) -> Timeline:
    """All bars and marks of ``events`` (see :func:`track`), bars still
    live at the end left ``held``."""
    bars = list(live)
    marks: list[Mark] = []
    lo, hi = start_ns, start_ns
    first, last = (start_seq if bars else 0), (start_seq if bars else 0)
    for ch in track(events, bars):
        if lo is None:
            lo = ch.ns
        hi = ch.ns if hi is None else max(hi, ch.ns)
        if not first:
            first = ch.seq
        last = ch.seq
        if ch.what == "start":
            bars.append(ch.bar)  # type: ignore[arg-type]
        elif ch.what == "refused":
            marks.append(ch.detail)
    lo = 0 if lo is None else lo
    hi = lo if hi is None else hi
    return Timeline(bars, marks, lo, hi, first, last)


class Row(NamedTuple):
    """One row of a picture: a bar (``bar``), or a refused request that was
    never granted (``bar`` is ``None``; ``name``/``parent_token`` say
    where it goes). ``marks`` are the refusals drawn on it; ``depth`` its
    indentation."""

    name: str
    bar: Bar | None
    depth: int
    marks: tuple[Mark, ...]
    parent_token: int | None


class Layout(NamedTuple):
    """The rows a picture shows (:func:`select_rows`), top to bottom in
    tree order, and what was left out: ``hidden`` bars (counted in one
    aggregate row) and ``hidden_marks``; ``total`` rows there were."""

    rows: list[Row]
    hidden: list[Bar]
    hidden_marks: list[Mark]
    total: int


def _rows(tl: Timeline) -> list[Row]:
    """Every row: one per bar, plus one per name refused and never granted
    in the window; each refusal on the row of the requested name (its next
    grant after the refusal, else its last before), else on its own row
    under the grant of the parent it asked, live then."""
    by_name: dict[str, list[Bar]] = {}
    for b in tl.bars:
        by_name.setdefault(b.name, []).append(b)
    on_bar: dict[int, list[Mark]] = {}
    orphans: dict[tuple[str, int | None], list[Mark]] = {}
    for m in tl.marks:
        grants = by_name.get(m.name, [])
        after = [b for b in grants if b.start_seq > m.seq and not b.before]
        target = after[0] if after else (grants[-1] if grants else None)
        if target is not None:
            on_bar.setdefault(target.token, []).append(m)
            continue
        parent_tok = None
        for b in by_name.get(m.parent or "", []):
            if b.start_seq <= m.seq and (b.end_seq is None or b.end_seq >= m.seq):
                parent_tok = b.token
        orphans.setdefault((m.name, parent_tok), []).append(m)
    rows = [Row(b.name, b, b.depth, tuple(on_bar.get(b.token, ())), b.parent_token) for b in tl.bars]
    depth_of = {b.token: b.depth for b in tl.bars}
    for (name, ptok), ms in orphans.items():
        depth = depth_of[ptok] + 1 if ptok is not None else 0
        rows.append(Row(name, None, depth, tuple(ms), ptok))
    return rows


def _start(r: Row) -> tuple[int, int]:
    if r.bar is not None:
        return (r.bar.start_seq, r.bar.token)
    return (r.marks[0].seq, 0)


def tree_order(rows: list[Row]) -> list[Row]:
    """Depth first: each row followed by the rows nested under it, siblings
    by start; a row whose parent is not among ``rows`` is a root."""
    tokens = {r.bar.token for r in rows if r.bar is not None}
    kids: dict[int | None, list[Row]] = {}
    for r in rows:
        key = r.parent_token if r.parent_token in tokens else None
        kids.setdefault(key, []).append(r)
    out: list[Row] = []
    stack = [(r, 0) for r in sorted(kids.get(None, []), key=_start, reverse=True)]
    while stack:
        r, depth = stack.pop()
        out.append(r._replace(depth=depth))
        if r.bar is not None:
            for c in sorted(kids.get(r.bar.token, []), key=_start, reverse=True):
                stack.append((c, depth + 1))
    return out


def select_rows(tl: Timeline, max_rows: int) -> Layout:
    """At most ``max_rows`` rows in tree order. When there are more, the
    rows kept are those held longest (with their delegators, so that every
    kept row sits under its own), and those with refusals first among rows
    of equal length; the last row is then the aggregate of the rest
    (``hidden``), so ``max_rows - 1`` rows of bars are kept."""
    if max_rows < 2:
        raise ValueError(f"max_rows must be at least 2, not {max_rows}")
    rows = _rows(tl)
    if len(rows) <= max_rows:
        return Layout(tree_order(rows), [], [], len(rows))
    end = tl.end_ns
    by_token = {r.bar.token: r for r in rows if r.bar is not None}

    def length(r: Row) -> tuple[int, int, int]:
        if r.bar is None:
            return (0, len(r.marks), -r.marks[0].seq)
        stop = r.bar.end_ns if r.bar.end_ns is not None else end
        return (stop - r.bar.start_ns, len(r.marks), -r.bar.token)

    budget = max_rows - 1
    chosen: dict[int, Row] = {}  # id(row) -> row
    for r in sorted(rows, key=length, reverse=True):
        chain = [r]
        up = r.parent_token
        while up is not None and up in by_token and id(by_token[up]) not in chosen:
            chain.append(by_token[up])
            up = by_token[up].parent_token
        new = [c for c in chain if id(c) not in chosen]
        if len(chosen) + len(new) > budget:
            continue
        for c in new:
            chosen[id(c)] = c
        if len(chosen) == budget:
            break
    kept = [r for r in rows if id(r) in chosen]
    hidden = [r.bar for r in rows if id(r) not in chosen and r.bar is not None]
    hidden_marks = [m for r in rows if id(r) not in chosen for m in r.marks]
    return Layout(tree_order(kept), hidden, hidden_marks, len(rows))


def live_counts_by_kind(bars: Iterable[Bar], end_ns: int) -> tuple[list[int], dict[str, list[int]]]:
    """:func:`live_counts` split by how each bar ended (``Bar.kind``):
    ``(times, {kind: counts})``, every list as long as ``times``."""
    deltas: dict[int, dict[str, int]] = {}
    kinds: list[str] = []
    for b in bars:
        k = b.kind
        if k not in kinds:
            kinds.append(k)
        stop = b.end_ns if b.end_ns is not None else end_ns
        for t, step in ((b.start_ns, 1), (stop, -1)):
            at = deltas.setdefault(t, {})
            at[k] = at.get(k, 0) + step
    times = sorted(deltas)
    out: dict[str, list[int]] = {k: [] for k in kinds}
    now = dict.fromkeys(kinds, 0)
    for t in times:
        for k, step in deltas[t].items():
            now[k] += step
        for k in kinds:
            out[k].append(now[k])
    return times, out


def live_counts(bars: Iterable[Bar], end_ns: int) -> tuple[list[int], list[int]]:
    """A step function of how many of ``bars`` are held over time:
    ``(times, counts)``, ``counts[i]`` holding from ``times[i]`` to
    ``times[i + 1]`` (bars still held count until ``end_ns``)."""
    deltas: dict[int, int] = {}
    for b in bars:
        deltas[b.start_ns] = deltas.get(b.start_ns, 0) + 1
        stop = b.end_ns if b.end_ns is not None else end_ns
        deltas[stop] = deltas.get(stop, 0) - 1
    times, counts, n = [], [], 0
    for t in sorted(deltas):
        n += deltas[t]
        times.append(t)
        counts.append(n)
    return times, counts


def tree_prefixes(depths: list[int]) -> list[str]:
    """The ``tree``-style prefix of each row of a depth-first list given
    its depths (``""`` at depth 0, then ``"├─ "``/``"└─ "`` after ``"│  "``
    or ``"   "`` for each ancestor level), so that a label shows where it
    hangs."""
    n = len(depths)
    out = []
    for i, d in enumerate(depths):
        if d == 0:
            out.append("")
            continue
        parts = []
        for level in range(1, d + 1):
            # is there a later row at this level before one shallower?
            more = False
            for j in range(i + 1, n):
                if depths[j] < level:
                    break
                if depths[j] == level:
                    more = True
                    break
            if level == d:
                parts.append("├─ " if more else "└─ ")
            else:
                parts.append("│  " if more else "   ")
        out.append("".join(parts))
    return out
