"""``ledger export``: the log for other tools. CSV and Parquet (one row per
event, :data:`COLUMNS`), and the Trace Event JSON that Perfetto
(ui.perfetto.dev) and ``chrome://tracing`` open (one track per grant,
grouped by delegation tree; refusals as instant events).

Each writer takes events as ``Ledger.events`` yields them and streams: its
memory grows with the live holders (trace) or a batch of rows (Parquet),
never with the length of the log. Pyarrow (Parquet) is imported only when
asked for.

The Trace Event format: "Trace Event Format", Google, the document linked
from the Catapult project (docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU);
the fields used here are ``name``, ``cat``, ``ph`` (``X`` complete, ``i``
instant, ``M`` metadata), ``ts`` and ``dur`` (microseconds), ``pid``,
``tid``, ``s`` (an instant's scope) and ``args``, in the JSON Object Format
(``{"traceEvents": [...], "displayTimeUnit": ..., "otherData": ...}``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
import time
from typing import IO, Any, Iterable, Iterator

import orjson

from scopeledger import Event

from .timeline_model import Bar, track


def repair_words(e: Event) -> str:
    """A ``repaired`` event in words, as ``replay`` and the CSV export say
    it (here, without rich, so that an export does not import it)."""
    first, through = e.seq + 1, e.data["through"]
    kept = ("" if through < first else f"; seq {through} kept void" if through == first
            else f"; seqs {first} to {through} kept void")
    pid = (e.actor or {}).get("pid")
    by = f" by pid {pid}" if pid is not None else ""
    return (f"the log was cut after seq {e.seq - 1}{by} (what was cut: {e.data['cut']}){kept}, "
            "so no fencing token is given twice")


#: The columns of the CSV and Parquet exports, in order, and what each
#: holds (docs/cli.md repeats this table). Structured values are compact
#: JSON; a value an event does not have is an empty cell (null in Parquet).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "the event's seq (integer, gapless from 1)"),
    ("ts", "its time, integer nanoseconds since the epoch, UTC"),
    ("time", "the same as ISO 8601 UTC with nanoseconds, 2025-11-29T14:35:24.696221000Z"),
    ("type", "registered, delegated, attached, renewed, released, reclaimed, refused, repaired (a repair "
             "cut the log after the seq before) or void (a seq of a cut line, kept void by it)"),
    ("holder", "the holder the event is about (for a refusal: the name asked for)"),
    ("parent", "a grant's delegator, a refusal's parent asked (empty: top level)"),
    ("rules", "a grant's rules or a refusal's request, JSON [[path, permission, recursive], ...]"),
    ("pid", "the pid the holder is bound to from this event on (grants, attaches)"),
    ("reserved", "a grant: true while the delegation waits for its process to attach"),
    ("socket", "a grant's socket path"),
    ("reason", "a reclaim's reason: process_gone, zombie, pid_reused, earlier_boot, namespace_gone, "
                "lease_expired, session_closed, session_lock_gone"),
    ("reparented", "a release's or reclaim's children moved, JSON [[child, new parent or null], ...]"),
    ("error", "a refusal's kind: scope_conflict, delegation, duplicate, unknown_parent"),
    ("message", "a refusal's message; a repair's, in words"),
    ("obstacle_rule", "a refusal's rule in the way, JSON [path, permission, recursive]"),
    ("chain", "a refusal's owner chain, JSON [names, top first]"),
    ("actor_pid", "the pid of the process that appended the event"),
    ("actor", "that process's identity, JSON, as stored"),
    ("process", "the identity the holder is bound to (grants, attaches), JSON, as stored"),
    ("prev", "blake2b-128 of the line before, hex"),
    ("v", "the line's format version"),
    # (the columns below came later: appended, so that the ones above keep their positions)
    ("note", "a grant's note (why the scope was asked for) or a release's (why, in the releaser's words)"),
    ("ttl_ns", "a grant's lease or a renewal's new one: integer nanoseconds, from that event"),
    ("lease_only", "a grant with a lease: true when the lease alone binds it (its process is then who "
                   "asked, not judged)"),
    ("advisory", "an advisory grant's conflicts, granted despite them, JSON [[chain, their rule, requested "
                 "rule], ...]; [] when it met none (empty: not asked advisory)"),
    ("forced", "a forced release's reason (who forced it: actor_pid, actor)"),
    ("exit_code", "how the holder's process ended, when known (a release; a zombie's reclaim): its exit "
                  "status, 0-255"),
    ("exit_signal", "or the signal that killed it, 1-127 (at most one of the two)"),
    ("last_seen", "a reclaim's: when the holder was last seen alive as the log shows it (its grant, last "
                  "renewal or attach), integer nanoseconds since the epoch, UTC"),
)

COLUMN_NAMES = tuple(name for name, _ in COLUMNS)

#: The columns that hold booleans (``true``/``false`` in CSV) and integers
#: (Parquet's types; the rest are strings but ``time``, a timestamp).
BOOLEAN_COLUMNS = ("reserved", "lease_only")
INTEGER_COLUMNS = ("seq", "ts", "pid", "actor_pid", "v", "ttl_ns", "exit_code", "exit_signal", "last_seen")

#: Rows per Parquet row group (and per batch held in memory).
PARQUET_BATCH = 65536


_last_second: list[Any] = [None, ""]


def iso_ns(ns: int) -> str:
    """Integer ns since the epoch -> ``YYYY-MM-DDTHH:MM:SS.fffffffffZ`` (UTC)."""
    secs, frac = divmod(ns, 10**9)
    if _last_second[0] != secs:  # events come in order: most share the second before them
        _last_second[:] = [secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))]
    return f"{_last_second[1]}.{frac:09d}Z"


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def rows(events: Iterable[Event]) -> Iterator[tuple[Any, ...]]:
    """One tuple per event, in :data:`COLUMNS` order: ``int``, ``str``,
    ``bool`` or ``None`` values."""
    for e in events:
        d = e.data
        kind = e.type
        holder = parent = rules = pid = reserved = socket = reason = reparented = None
        error = message = obstacle = chain = process = None
        note = ttl = lease_only = advisory = forced = exit_code = exit_signal = last_seen = None
        if kind == "registered" or kind == "delegated":
            h = d["holder"]
            holder, parent, reserved, socket = h.get("name"), h.get("parent"), h.get("reserved"), h.get("socket")
            rules = _json(h.get("rules"))
            process = h.get("process")
            note, ttl, advisory = h.get("note"), h.get("ttl_ns"), _json(h.get("advisory"))
            if ttl is not None:
                lease_only = h.get("lease_only") is True
        elif kind == "refused":
            req = d.get("request") or {}
            holder, parent, rules = req.get("name"), req.get("parent"), _json(req.get("rules"))
            error, message = d.get("error"), d.get("message")
            obstacle, chain = _json(d.get("rule")), _json(d.get("chain"))
        elif kind == "repaired":
            message = repair_words(e)
        elif kind != "void":
            holder = d.get("name")
            if kind == "attached":
                process = d.get("process")
            elif kind == "renewed":
                ttl = d.get("ttl_ns")
            else:
                reparented = _json(d.get("reparented"))
                reason = d.get("reason")
                note, forced, last_seen = d.get("note"), d.get("forced"), d.get("last_seen")
                exit_code, exit_signal = d.get("exit_code"), d.get("exit_signal")
        if isinstance(process, dict):
            pid = process.get("pid")
        actor = e.actor
        yield (e.seq, e.ts, iso_ns(e.ts), kind, holder, parent, rules, pid, reserved, socket, reason,
               reparented, error, message, obstacle, chain,
               actor.get("pid") if isinstance(actor, dict) else None, _json(actor), _json(process),
               d.get("prev"), d.get("v"),
               note, ttl, lease_only, advisory, forced, exit_code, exit_signal, last_seen)


def write_csv(events: Iterable[Event], out: IO[str]) -> int:
    """CSV (RFC 4180 quoting, ``\\r\\n`` line ends as the csv module
    writes them, a header row of :data:`COLUMN_NAMES`) to the text stream
    ``out`` (open it with ``newline=""``). ``None`` is an empty cell,
    booleans ``true``/``false``. Returns the number of events written."""
    w = csv.writer(out)  # (it writes None as an empty cell)
    w.writerow(COLUMN_NAMES)
    put = w.writerow
    flags = [COLUMN_NAMES.index(name) for name in BOOLEAN_COLUMNS]
    words = {True: "true", False: "false"}
    n = 0
    for row in rows(events):
        if any(row[at] is not None for at in flags):
            cells = list(row)
            for at in flags:
                cells[at] = words.get(cells[at], cells[at])
            row = tuple(cells)
        put(row)
        n += 1
    return n


def parquet_available() -> bool:
    """Whether pyarrow can be imported (the ``parquet`` extra)."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_parquet(events: Iterable[Event], out: Any) -> int:
    """Parquet (pyarrow; :data:`COLUMNS`, ``time`` a UTC timestamp in ns)
    to ``out`` (a path or a binary file object), in row groups of
    :data:`PARQUET_BATCH` events. Returns the number of events written.

    Raises:
        ImportError: pyarrow is not installed (the ``parquet`` extra).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"time": pa.timestamp("ns", tz="UTC"), **dict.fromkeys(INTEGER_COLUMNS, pa.int64()),
             **dict.fromkeys(BOOLEAN_COLUMNS, pa.bool_())}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in COLUMN_NAMES])
    time_col = COLUMN_NAMES.index("time")
    ts_col = COLUMN_NAMES.index("ts")
    n = 0
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            cols = [list(c) for c in zip(*batch, strict=True)]  # every row has every column
            cols[time_col] = cols[ts_col]  # the same instant, typed as a timestamp
            writer.write_table(pa.Table.from_arrays(
                [pa.array(c, type=schema.field(i).type) for i, c in enumerate(cols)], schema=schema))
            batch.clear()

        for row in rows(events):
            batch.append(row)
            n += 1
            if len(batch) >= PARQUET_BATCH:
                flush()
        if batch:
            flush()
    return n


# -- trace ---------------------------------------------------------------------------

#: The trace's pid for the track of refused requests (a grant's pid is a
#: token, from 1).
REFUSALS_PID = 0

#: Chrome's reserved colour names (``cname``) for a bar, by how it ended.
TRACE_COLORS = {"released": "good", "held": "thread_state_running", "reclaimed": "terrible"}


def _us(ns: int) -> float:
    return ns / 1000


def _trace_label(bar: Bar, chain: str) -> str:
    return f"{chain} (token {bar.token})"


def _trace_bar(b: Bar, pid: int, stop_ns: int) -> dict[str, Any]:
    """Bar ``b``'s complete event (``X``) in process ``pid``, drawn up to
    ``stop_ns`` (ns): see :func:`write_trace`. ``args`` leaves out what the
    grant's events do not have: ``note``, ``ttl_ns`` and ``lease_only``,
    ``advisory``, and of its end ``ended_by_pid`` (the actor), ``forced``,
    ``release_note``, ``exit_code``, ``exit_signal``, ``last_seen`` (ns)."""
    args: dict[str, Any] = {"token": b.token, "parent": b.parent, "rules": b.rules, "pid": b.pid,
                            "granted_seq": b.start_seq, "ended": b.kind}
    if b.before:
        args["granted_before_window"] = True
    if b.note is not None:
        args["note"] = b.note
    if b.ttl_ns is not None:
        args["ttl_ns"] = b.ttl_ns
        args["lease_only"] = b.lease_only
    if b.advisory is not None:
        args["advisory"] = b.advisory
    if b.end_seq is not None:
        args["end_seq"] = b.end_seq
        if b.end_pid is not None:
            args["ended_by_pid"] = b.end_pid
    for key, value in (("forced", b.forced), ("release_note", b.end_note), ("exit_code", b.exit_code),
                       ("exit_signal", b.exit_signal), ("last_seen", b.last_seen)):
        if value is not None:
            args[key] = value
    return {"ph": "X", "name": b.name, "cat": b.ended, "pid": pid, "tid": b.token,
            "ts": _us(b.start_ns), "dur": _us(max(0, stop_ns - b.start_ns)),
            "cname": TRACE_COLORS[b.ended], "args": args}


def write_trace(events: Iterable[Event], out: IO[bytes], live: Iterable[Bar] = (),
                end: tuple[int, int] | None = None, other: dict[str, Any] | None = None) -> int:
    """Trace Event JSON (the Object Format) to the binary stream ``out``.

    Every grant is a thread (``tid`` its token) in the process (``pid``) of
    the top-level grant of its delegation tree, named with its chain of
    delegators (``runtime > builder > parser-worker (token 4)``) and sorted
    by token, so that a delegation sits below its delegator. Its bar is one
    complete event (``X``) named after the holder, category ``released``,
    ``reclaimed`` or ``held``, with the grant's details in ``args`` (and,
    when its events have them, its note, lease, advisory conflicts, who
    ended it, a forced release's reason, the release's note, the exit
    status and a reclaim's ``last_seen``: :func:`_trace_bar`); attaches,
    re-parentings and lease renewals are instant events on its track;
    refusals are instant events on a track of their own (pid
    :data:`REFUSALS_PID`).

    ``live`` are the bars held when ``events`` begin (see
    :func:`.timeline_model.seed`); bars still held at the end are
    drawn up to ``end`` (``(ns, seq)``, default the last event). ``other``
    goes into ``otherData``. Returns the number of events read.
    """
    count = 0
    sep = b""
    dumps = orjson.dumps

    def put(obj: dict[str, Any]) -> None:
        nonlocal sep
        out.write(sep + dumps(obj))
        sep = b",\n"

    out.write(b'{"traceEvents":[\n')
    open_bars: dict[int, tuple[Bar, int, str]] = {}  # token -> (bar, pid, chain)

    def begin(b: Bar) -> None:
        up = open_bars.get(b.parent_token) if b.parent_token is not None else None
        pid = up[1] if up else b.token
        chain = f"{up[2]} > {b.name}" if up else (f"{b.parent} > {b.name}" if b.parent else b.name)
        open_bars[b.token] = (b, pid, chain)
        if pid == b.token:
            put({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                 "args": {"name": f"{b.name} (token {b.token})"}})
            put({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                 "args": {"sort_index": b.token}})
        put({"ph": "M", "name": "thread_name", "pid": pid, "tid": b.token,
             "args": {"name": _trace_label(b, chain)}})
        put({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": b.token,
             "args": {"sort_index": b.token}})

    def finish(b: Bar, stop_ns: int) -> None:
        _b, pid, _chain = open_bars.pop(b.token)
        put(_trace_bar(b, pid, stop_ns))

    live = list(live)
    for held in live:
        begin(held)
    last_ns = live[0].start_ns if live else None
    refusals_named = False

    def counted() -> Iterator[Event]:
        nonlocal count
        for e in events:
            count += 1
            yield e

    for ch in track(counted(), live):
        last_ns = ch.ns
        b = ch.bar  # None only for a refusal
        if b is not None and ch.what == "start":
            begin(b)
        elif b is not None and ch.what == "end":
            finish(b, ch.ns)
        elif b is not None and ch.what in ("attach", "reparent"):
            _b, pid, _c = open_bars[b.token]
            text = (f"attached pid {ch.detail}" if ch.what == "attach"
                    else f"re-parented to '{ch.detail}'" if ch.detail else "re-parented to top level")
            put({"ph": "i", "s": "t", "name": text, "cat": ch.what, "pid": pid, "tid": b.token,
                 "ts": _us(ch.ns), "args": {"seq": ch.seq}})
        elif b is not None and ch.what == "renew":
            _b, pid, _c = open_bars[b.token]
            put({"ph": "i", "s": "t", "name": f"lease renewed for {ch.detail / 1e9:g} s", "cat": "renewed",
                 "pid": pid, "tid": b.token, "ts": _us(ch.ns), "args": {"seq": ch.seq, "ttl_ns": ch.detail}})
        else:
            m = ch.detail
            if not refusals_named:
                put({"ph": "M", "name": "process_name", "pid": REFUSALS_PID, "tid": 0,
                     "args": {"name": "refused requests"}})
                put({"ph": "M", "name": "thread_name", "pid": REFUSALS_PID, "tid": 0,
                     "args": {"name": "refused requests"}})
                refusals_named = True
            put({"ph": "i", "s": "t", "name": f"refused '{m.name}'", "cat": "refused",
                 "pid": REFUSALS_PID, "tid": 0, "ts": _us(ch.ns),
                 "args": {"seq": ch.seq, "parent": m.parent, "error": m.error, "message": m.message,
                          "obstacle": m.obstacle}})
    stop = end[0] if end is not None else last_ns
    for b, _pid, _chain in list(open_bars.values()):
        finish(b, stop if stop is not None else b.start_ns)
    tail = {"displayTimeUnit": "ms", "otherData": dict(other or {}, events=count)}
    out.write(b"\n]," + dumps(tail)[1:])
    return count


# -- output files --------------------------------------------------------------------


@contextlib.contextmanager
def output_file(path: str, binary: bool = True) -> Iterator[Any]:
    """A new file at ``path``, mode 0600 whatever the umask, written in a
    temporary file beside it and renamed over ``path`` only when the block
    ends without an error (a failed export leaves no half file, and an
    existing file or symlink at ``path`` is replaced, never written
    through; the command line refuses a ``path`` that is not a regular file
    before it gets here: ``params.output_path_param``). Text mode uses UTF-8
    and ``newline=""``.

    Raises:
        OSError: the directory cannot be written, and the like (the
            error's ``filename`` is ``path``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".scopeledger-export-", dir=directory)
    except OSError as exc:  # named as the user gave it, not as the temporary file beside it
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        os.fchmod(fd, 0o600)
        f = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        with f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
