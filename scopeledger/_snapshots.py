"""Snapshots: the folded state at a seq, written atomically, trusted only
after checking.

A snapshot file ``snapshots/snap-<seq:016d>.json`` holds two lines::

    {"format": 2, "seq": S, "offset": O, "line_start": L, "last_hash": H,
     "ts": T, "checksum": C, "events": S, "ledger": I}
    <the State.to_json() document>

``offset`` is the log byte offset just past event S's newline, ``line_start``
where that line starts, ``last_hash`` the hash of that line, ``ts`` its time
(ns, UTC), ``checksum`` the blake2b-128 of the second line's bytes,
``ledger`` (optional: written since snapshots carry it) the id of the
ledger that wrote it (``ledger-id`` in the directory, see ``_store``).

A snapshot naming another ledger than this one (a file copied from
another ledger directory) is that ledger's, whatever else checks out: it
is never loaded (skipped with a warning, as any that does not match),
vouches for no line and proves no seq of this log; ``verify`` names it (a
snapshot of another ledger: both ids, or ``this ledger has none yet``) and
``repair`` sets it aside. One without ``ledger`` (an older scopeledger's)
is judged as before.

The id is made with the ledger's first snapshot (``Store.ledger_id``), so
copies of an empty ledger (``ledger init`` once, then copied) differ. A
copy of a ledger that has its id is the same ledger up to the copy: a
snapshot copied between two such copies after they diverged names the
same id: the id cannot tell them apart, and it is judged as before the
id (never loaded when it does not match the log; but ``verify`` may name
a line altered on its word, and a repair cut lines, kept under ``cut/``).

A ledger without an id yet (no ``ledger-id``, nothing taken back) calls
every snapshot naming one another ledger's. A ledger whose ``ledger-id``
is missing takes back the id its own snapshots carry, those whose hash is
the log's line at their seq (:func:`carried_ids`), when they all name one;
when they name more (one was copied from another ledger and made to match
the log), none is trusted: a warning names the files, a writer makes a new
id and every one of them is then another ledger's (the log is what
counts; a repair sets them aside). A single snapshot forged to match the
log, with the file missing and no snapshot of the ledger's own left, is
taken for the ledger's own: the id tells copies apart, it does not
authenticate. When the ledger's own id cannot be read (a file that is not
a private regular file, or does not hold an id: a warning that says to
remove it; a reader the owner let in refused the 0600 file: no warning) a
snapshot naming a ledger is loaded as before but vouches for no line
(``verify`` names no line on its word). PostgreSQL keeps no ledger id: its
snapshots are rows of the ledger's own schema, written only by the
ledger's role through this code, not files that a copy puts in place.

Writing (after the lock is released; a snapshot only restates the log):
a temp file ``.tmp-<pid>-<ns>`` created 0600 with O_EXCL, written, fsynced,
the log fdatasynced (a snapshot is never durable ahead of the log: after a
power cut it would describe events the log lost), renamed into place, then
the directory fsynced. A file already at that name that describes another
history (a power cut took the log's tail, then the log went on) is kept as
``lost-<name>-<ns>``, never overwritten. A temp file is never read
as a snapshot; one left by a writer that is gone is removed by the next
snapshot writer. Removing it, or an old snapshot past retention, is
housekeeping: if the OS refuses, that is a warning naming the file, never
an error (the new snapshot is written, and nothing recorded is lost).

Loading checks, in order: the name, the header's format version, the body's
checksum, the body's seq, and that the log has a line at ``line_start ..
offset`` whose hash is ``last_hash``. A snapshot failing any check is
skipped with a warning naming its full path, never trusted.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import time
from typing import Any, Callable, Iterator

import orjson

from ._errors import LedgerError, LedgerIOError, SnapshotInvalid, UnsafeLedgerPath
from ._events import blake2b, line_hash
from ._fold import SNAPSHOT_FORMAT, State
from ._store import LEDGER_ID, SNAPSHOT_DIR, SNAPSHOT_NAME, Store, open_private_file
from ._imports import first_use
from ._logstore import SNAPSHOT_ID_KEY

log = logging.getLogger("scopeledger")

_NAME = SNAPSHOT_NAME
_TMP = re.compile(r"^\.tmp-(\d+)-(\d+)$")


class SnapshotOutdated(SnapshotInvalid):
    """A snapshot of an older format than this scopeledger writes: skipped
    (the state is folded from the log instead, and a new snapshot written),
    never an error; ``verify`` notes it."""


def snapshot_path(store: Store, name: str) -> str:
    """The full path of ``name`` in the snapshots directory (for messages)."""
    return os.path.join(store.file(SNAPSHOT_DIR), name)


def why(exc: OSError) -> str:
    """Why a file could not be read or removed, as a message says it:
    ``'permission denied'``, ``'is a symlink, not a regular file'`` (the
    caller names the file)."""
    if isinstance(exc, UnsafeLedgerPath):
        return exc.reason
    why = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    if why[:1].isupper() and not why[1:2].isupper():
        why = why[0].lower() + why[1:]
    return why


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a snapshot's objects are
    built or parsed: they hold no cycles, but creating ~10 containers per
    holder triggers collections that each walk the whole live state (about
    half a snapshot's cost at 100,000 holders; BENCHMARKS.md). Restores the
    collector's previous setting."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def line_hash_at(store: Store, start: int, end: int) -> str | None:
    """The hash of the log's line at bytes ``start .. end`` (its newline
    included), or ``None`` when there is no such line there. ``(start,
    end)`` come from a snapshot header: they are not trusted to be inside
    the log (a huge length would be allocated by pread).

    Raises:
        LedgerIOError: the log cannot be read.
    """
    if start < 0 or end <= start or end > store.size():
        return None
    data = store.read_at(start, end - start)
    if len(data) != end - start or not data.endswith(b"\n"):
        return None
    return line_hash(data[:-1])


def snapshot_name(seq: int) -> str:
    return f"snap-{seq:016d}.json"


def list_snapshots(store: Store) -> list[tuple[int, str]]:
    """``[(seq, file name), ...]`` of snapshot files, oldest first.

    Raises:
        LedgerIOError: the OS refused to list the snapshots directory; it
            names the directory's full path.
    """
    out: list[tuple[int, str]] = []
    if store.snapfd < 0:  # opened read-only, without a snapshots/ directory
        return out
    for name in _listdir(store):
        m = _NAME.match(name)
        if m:
            out.append((int(m.group(1)), name))
    out.sort()
    return out


def _listdir(store: Store) -> list[str]:
    """The names in the snapshots directory.

    Raises:
        LedgerIOError: the OS refused; it names the directory's full path.
    """
    try:
        return os.listdir(store.snapfd)
    except OSError as exc:
        raise LedgerIOError(store.file(SNAPSHOT_DIR), "list the snapshots", exc) from exc


def checksum(body: bytes) -> str:
    return blake2b(body, digest_size=16).hexdigest()


#: The header key naming the ledger that wrote a snapshot (its ``ledger-id``).
ID_KEY = SNAPSHOT_ID_KEY


def ledger_id(store: Store, make: bool = False) -> str | None:
    """The id of the ledger directory ``store`` (``Store.ledger_id``, read
    once per Store; a missing file taken back from the ledger's own
    snapshots, :func:`carried_ids`; with ``make``, one made for a ledger
    that has none yet); ``None`` when it has none or it cannot be read."""
    return store.ledger_id(lambda: carried_ids(store), make=make)


def carried_ids(store: Store) -> dict[str, list[str]]:
    """The ledger ids that snapshots naming one carry, among those whose
    header's ``last_hash`` is the hash of the log's line at its offsets (a
    snapshot of this log: a file copied from another ledger is not, unless
    made to match), each with those snapshots' paths. For a ledger that
    lost its ``ledger-id``: it takes one back only when they name one.
    Never raises."""
    out: dict[str, list[str]] = {}
    try:
        for seq, name in list_snapshots(store):
            header = header_at(store, name, seq)
            theirs = header.get(ID_KEY) if header is not None else None
            if theirs is not None and line_hash_at(store, header["line_start"], header["offset"]) \
                    == header["last_hash"]:
                out.setdefault(str(theirs), []).append(snapshot_path(store, name))
    except (OSError, LedgerError):
        pass
    return out


def header_at(store: Store, name: str, seq: int) -> dict[str, Any] | None:
    """The checked header (:func:`parse_header`) of the snapshot file
    ``name`` at ``seq``, ``None`` when it cannot be read or does not check
    out. Never raises."""
    try:
        head = read_head(store, name)
        nl = head.find(b"\n")
        return parse_header(snapshot_path(store, name), head[:nl], seq) if nl >= 0 else None
    except (OSError, SnapshotInvalid):
        return None


def foreign(store: Any, header: dict[str, Any]) -> str | None:
    """Why the snapshot whose header is ``header`` is another ledger's
    than ``store``'s (``a snapshot of another ledger: its id X, this
    ledger's Y``), else ``None``: it names none (an older scopeledger's),
    or the store keeps no id (PostgreSQL, memory), or this ledger's id
    cannot be read (see the module docstring)."""
    theirs = header.get(ID_KEY)
    inner = getattr(store, "store", store)
    if theirs is None or not isinstance(inner, Store):
        return None
    mine = ledger_id(inner)
    if mine is None:
        return (f"a snapshot of another ledger: its id {theirs}, and this ledger has none yet"
                if inner.has_no_id() else None)
    if theirs == mine:
        return None
    return f"a snapshot of another ledger: its id {theirs}, this ledger's {mine}"


def vouches(store: Store, header: dict[str, Any]) -> bool:
    """Whether the snapshot whose header is ``header`` may vouch for the
    lines of ``store``'s log: it names no ledger (an older scopeledger's),
    or this one, whose id is read."""
    theirs = header.get(ID_KEY)
    return theirs is None or theirs == ledger_id(store)


def header_of(state: State, body: bytes) -> dict[str, Any]:
    """The header of a snapshot of ``state`` whose body is ``body``, as the
    store interface sees it (seqs, no byte offsets)."""
    return {
        "format": SNAPSHOT_FORMAT,
        "seq": state.seq,
        "last_hash": state.last_hash,
        "ts": state.last_ts,
        "checksum": checksum(body),
    }


def write_file(store: Store, seq: int, data: bytes, last_hash: str) -> None:
    """Write ``data`` (a whole snapshot file) as the snapshot at ``seq``
    atomically (see the module docstring): a temp file, fsynced, the log
    flushed, a file of that name describing another history (not
    ``last_hash``) kept aside, renamed into place, the directory fsynced.

    Raises: as :func:`write_snapshot`.
    """
    store.check_writable()  # not after a failed flush of the log
    tmp = f".tmp-{os.getpid()}-{time.time_ns()}"
    name = snapshot_name(seq)
    display = snapshot_path(store, tmp)
    final = snapshot_path(store, name)
    try:
        fd = open_private_file(store.snapfd, tmp, display, os.O_WRONLY | os.O_EXCL)
    except UnsafeLedgerPath:
        raise
    except OSError as exc:
        raise LedgerIOError(final, "write a snapshot", exc) from exc
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        # Never durable ahead of the log it describes: after a power cut a
        # snapshot past the log's end would describe events that are gone.
        store.flush()
        _keep_a_stale_one(store, seq, name, last_hash)
        os.rename(tmp, name, src_dir_fd=store.snapfd, dst_dir_fd=store.snapfd)
        os.fsync(store.snapfd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=store.snapfd)
        if isinstance(exc, OSError) and not isinstance(exc, LedgerError):
            raise LedgerIOError(final, "write a snapshot", exc) from exc
        raise


def _keep_a_stale_one(store: Store, seq: int, name: str, last_hash: str) -> None:
    """Before a snapshot at ``state.seq`` is renamed into place: a snapshot
    file of that name describing another history (written before a power
    cut took the log's tail, then the log went on with other events) is
    renamed ``lost-<name>-<ns>``, never overwritten: it is the only record
    of what was lost. One of this same state is left to be replaced."""
    display = snapshot_path(store, name)
    try:
        try:
            head = read_head(store, name)
        except OSError as exc:
            raise SnapshotInvalid(display, f"cannot read: {why(exc)}") from None
        nl = head.find(b"\n")
        if nl < 0:
            raise SnapshotInvalid(display, "truncated header")
        header = parse_header(display, head[:nl], seq)
    except SnapshotInvalid:
        return  # none there (or unreadable: renaming over it loses nothing readable)
    if header["last_hash"] == last_hash:
        return
    lost = f"lost-{name}-{time.time_ns()}"
    os.rename(name, lost, src_dir_fd=store.snapfd, dst_dir_fd=store.snapfd)
    log.warning("kept snapshot %s, which describes events the log no longer holds, as %s",
                snapshot_path(store, name), snapshot_path(store, lost))


def _remove(store: Store, name: str, what: str) -> bool:
    """Unlink ``name`` in the snapshots directory; ``True`` if this call
    removed it. A refusal of the OS is a warning naming the file's full
    path (``what`` says which kind of file), not an error."""
    try:
        os.unlink(name, dir_fd=store.snapfd)
    except FileNotFoundError:  # another process removed it first
        return False
    except OSError as exc:
        log.warning("could not remove %s %s: %s", what, snapshot_path(store, name), why(exc))
        return False
    return True


def clean_temp_files(store: Store) -> list[str]:
    """Remove temp files whose writer process is gone; returns their names.
    Housekeeping: never raises for what the OS refuses (a file or the
    directory listing), it logs a warning naming the full path."""
    try:
        names = _listdir(store)
    except LedgerIOError as exc:
        log.warning("could not clean up stale snapshot temp files: %s", exc)
        return []
    removed = []
    me = os.getpid()
    for name in names:
        m = _TMP.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        with first_use:
            import psutil  # (here: rarely needed, and it costs start-up time, issue 18)

        if pid == me or psutil.pid_exists(pid):
            continue
        if _remove(store, name, "stale snapshot temp file"):
            removed.append(name)
    return removed


def prune(store: Store, keep: int | None) -> None:
    """Keep the newest ``keep`` snapshots (``None``: keep all). Housekeeping:
    never raises for what the OS refuses, it logs a warning naming the full
    path (an old snapshot left behind costs only disk space)."""
    if keep is None:
        return
    try:
        snaps = list_snapshots(store)
    except LedgerIOError as exc:
        log.warning("could not prune old snapshots: %s", exc)
        return
    for _, name in snaps[: max(0, len(snaps) - keep)]:
        _remove(store, name, "old snapshot")


#: How many snapshots :meth:`scopeledger.Ledger.prune_snapshots` keeps when
#: not told (and the ledger was opened without ``keep_snapshots``): the newest,
#: and two to fall back on should it be damaged.
PRUNE_KEEP = 3


def prune_keeping(store: Any, keep: int, log_seq: int) -> list[int]:
    """Remove the snapshots of ``store`` (a ``LogStore``) but the newest
    ``keep``, every one past seq ``log_seq`` (the log's end: they are the
    only record of events the log lost, docs/cli.md "Recovering a damaged
    ledger"), and the one opening starts from (:func:`newest` at or before
    ``log_seq``), however old. Returns the seqs removed, oldest first; one
    the store refuses to remove is a warning naming it, and not in the list.

    Raises:
        LedgerError: the snapshots or the log cannot be read.
    """
    seqs = store.snapshot_seqs()
    kept = set(seqs[-keep:]) if keep > 0 else set()
    kept.update(at for at in seqs if at > log_seq)
    start = newest(store, lambda _seq, _exc: None, seq=log_seq)
    if start is not None:
        kept.add(start.seq)
    removed = []
    for at in seqs:
        if at in kept:
            continue
        try:
            store.snapshot_delete(at)
        except LedgerError as exc:
            log.warning("could not remove old snapshot %s: %s", where(store, at), exc)
            continue
        removed.append(at)
    return removed


def read_file(store: Store, name: str) -> bytes:
    """The bytes of the snapshot file ``name``.

    Raises:
        OSError: the OS refused (FileNotFoundError: none there);
            UnsafeLedgerPath: not a private regular file.
    """
    display = snapshot_path(store, name)
    fd = open_private_file(store.snapfd, name, display, os.O_RDONLY, create=False,
                           readonly=store.readonly)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_header(display: str, line: bytes, seq_in_name: int) -> dict[str, Any]:
    """A snapshot file's header line, checked (format, fields and their
    types, the seq its name says), as a dict.

    Raises:
        SnapshotInvalid: malformed or another format (``SnapshotOutdated``
            for an older one); it names ``display``.
    """
    try:
        h = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise SnapshotInvalid(display, "header is not JSON") from None
    if not isinstance(h, dict):
        raise SnapshotInvalid(display, "header is not an object")
    check_header(display, h, seq_in_name, ("offset", "line_start"))
    return h


def check_header(display: str, h: dict[str, Any], seq: int, file_keys: tuple[str, ...] = ()) -> None:
    """Check a snapshot header's format and fields (and ``file_keys``,
    ints, for a file's); the seq must be ``seq``.

    Raises:
        SnapshotInvalid: naming ``display`` (``SnapshotOutdated`` for an
            older format).
    """
    fmt = h.get("format")
    outdated = type(fmt) is int and 1 <= fmt < SNAPSHOT_FORMAT
    if fmt != SNAPSHOT_FORMAT and not outdated:
        raise SnapshotInvalid(display, f"format {fmt!r}, this scopeledger reads {SNAPSHOT_FORMAT}")
    try:
        got = int(h["seq"])
        for key in file_keys:
            int(h[key])
        _ = str(h["last_hash"]), int(h["ts"]), str(h["checksum"])
    except (KeyError, TypeError, ValueError):
        raise SnapshotInvalid(display, "header lacks a field or has a wrong type") from None
    theirs = h.get(ID_KEY)
    if theirs is not None and (type(theirs) is not str or LEDGER_ID.match(theirs) is None):
        raise SnapshotInvalid(display, "header lacks a field or has a wrong type")
    if got != seq:
        raise SnapshotInvalid(display, f"header says seq {got}")
    if outdated:  # (the header's fields are the same in every format so far)
        raise SnapshotOutdated(display, f"format {fmt}, older than this scopeledger's {SNAPSHOT_FORMAT}: "
                                        "skipped, the state is folded from the log")


def read_head(store: Store, name: str) -> bytes:
    """The first 4096 bytes of the snapshot file ``name`` (its header).

    Raises:
        OSError: as :func:`read_file`.
    """
    fd = open_private_file(store.snapfd, name, snapshot_path(store, name), os.O_RDONLY, create=False,
                           readonly=store.readonly)
    try:
        return os.pread(fd, 4096, 0)
    finally:
        os.close(fd)


def where(store: Any, seq: int) -> str:
    """How messages name the snapshot at ``seq`` of ``store``: a file's
    full path, else the store's location and the seq."""
    named = getattr(store, "snapshot_where", None)
    return named(seq) if named is not None else f"{store.location} snapshot {seq}"


def encode(state: State) -> tuple[dict[str, Any], bytes]:
    """``(header, body)`` of a snapshot of ``state``, as the store
    interface takes them (``LogStore.snapshot_write``)."""
    with _gc_paused():
        body = orjson.dumps(state.to_json())
    return header_of(state, body), body


def state_from(store: Any, seq: int, header: dict[str, Any], body: bytes) -> State:
    """The state a snapshot read from ``store`` (``snapshot_read(seq)``)
    holds, checked: its header, its checksum, its body and that the body is
    the state the header names.

    Raises:
        SnapshotInvalid: any check failed (``SnapshotOutdated``: an older
            format); it names the snapshot (:func:`where`).
    """
    display = where(store, seq)
    check_header(display, header, seq)
    if checksum(body) != header["checksum"]:
        raise SnapshotInvalid(display, "checksum does not match its content")
    try:
        with _gc_paused():
            state = State.from_json(orjson.loads(body))
    except Exception as exc:  # noqa: BLE001 - any malformed body is invalid
        raise SnapshotInvalid(display, f"body does not parse ({type(exc).__name__}: {exc})") from None
    if state.seq != seq or state.last_hash != header["last_hash"]:
        raise SnapshotInvalid(display, "body's seq/hash differ from its header")
    return state


def proven_reach(store: Store, seq: int) -> tuple[int | None, str]:
    """What the snapshot file at ``seq`` proves the log once held, checked
    on its own (:func:`sound_alone`): ``(the last seq it proves, "")``,
    that is ``seq`` (or the seq a repair kept void through, when it was
    written between a repair's line and its last ``void`` line), or
    ``(None, why not)``. Not against the log: a snapshot past the log's end
    (a power cut took its tail, an older log was put back) is the only
    record that those seqs, fencing tokens among them, were given, and they
    are kept void; a file failing these checks (damaged, edited) proves
    nothing. Reads the whole file; never raises."""
    doc = sound_alone(store, seq)
    if isinstance(doc, str):
        return None, doc
    void = doc.get("void_through")
    return (max(seq, void) if type(void) is int else seq), ""


def sound_alone(store: Store, seq: int, vouching: bool = False) -> dict[str, Any] | str:
    """The body (a dict: ``seq``, ``last_hash``, ``holders``, ...) of the
    snapshot file at ``seq`` when it checks out on its own, else why not
    (``str``). Its checks: the header (the format, an older one too, the
    fields, the seq its name says), that it names no other ledger
    (:func:`foreign`; ``vouching``: nor any ledger when this one's id
    cannot be read, :func:`vouches`), the body's checksum, and the body's
    ``seq`` and ``last_hash`` being the header's; not against the log.
    Reads the whole file; never raises."""
    name = snapshot_name(seq)
    display = snapshot_path(store, name)
    try:
        data = read_file(store, name)
    except OSError as exc:
        return f"cannot read: {why(exc)}"
    nl = data.find(b"\n")
    if nl < 0 or not data.endswith(b"\n"):
        return "truncated"
    try:
        header = parse_header(display, data[:nl], seq)
    except SnapshotOutdated:
        header = orjson.loads(data[:nl])  # (its fields checked: the same in every format so far)
    except SnapshotInvalid as exc:
        return exc.reason
    other = foreign(store, header)
    if other is not None:
        return other
    if vouching and not vouches(store, header):
        return "it names a ledger, and this ledger's id cannot be read to compare"
    body = data[nl + 1:-1]
    if checksum(body) != header["checksum"]:
        return "checksum does not match its content"
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "body is not JSON"
    if not isinstance(doc, dict) or doc.get("seq") != seq or doc.get("last_hash") != header["last_hash"]:
        return "body's seq/hash differ from its header"
    return doc


def read_state(store: Any, seq: int) -> State:
    """The checked state of the snapshot at ``seq`` (:func:`state_from`).

    Raises:
        SnapshotInvalid: as ``snapshot_read`` and :func:`state_from`.
        LedgerError: the log cannot be read to check it.
    """
    header, body = store.snapshot_read(seq)
    return state_from(store, seq, header, body)



def holds(store: Any, seq: int, state: State) -> bool:
    """Whether the snapshot at ``seq`` of ``store`` holds ``state`` (the
    fold at ``seq``): :func:`read_state`'s state compared with it, field
    for field; a body that is byte for byte ``state``'s encoding (what
    this scopeledger writes for it) is, once its header and checksum check
    out, without being parsed.

    Raises:
        SnapshotInvalid: as :func:`read_state` (``SnapshotOutdated``: an
            older format).
        LedgerError: as :func:`read_state`.
    """
    header, body = store.snapshot_read(seq)
    check_header(where(store, seq), header, seq)
    with _gc_paused():
        mine = state.to_json()
        if (body == orjson.dumps(mine) and header["last_hash"] == state.last_hash == mine["last_hash"]
                and state.seq == seq and checksum(body) == header["checksum"]):
            return True
        return state_from(store, seq, header, body).to_json() == mine

def newest(store: Any, skipped: Callable[[int, SnapshotInvalid], object], *,
           seq: int | None = None, ts: int | None = None) -> State | None:
    """The one snapshot picker: the state of the newest snapshot of
    ``store`` (a ``LogStore``) that checks out (:func:`read_state`), taken
    at or before seq ``seq`` and time ``ts`` (ns, UTC; ``None``: any), or
    ``None`` when none does. Each snapshot passed over because it did not
    check out is given to ``skipped(seq, exc)`` (to log it, count it, or
    tell what the log lost). A store that can read a header alone
    (``snapshot_header``: a file's) is asked that first, so that a picker
    by time reads one body.

    Raises:
        LedgerError: the snapshots or the log cannot be read.
    """
    header_of_ = getattr(store, "snapshot_header", None) if (seq is not None or ts is not None) else None
    for at in reversed(store.snapshot_seqs()):
        if seq is not None and at > seq:
            continue
        if header_of_ is not None:
            try:
                h = header_of_(at)
            except SnapshotInvalid as exc:
                skipped(at, exc)
                continue
            if ts is not None and h["ts"] > ts:
                continue
        try:
            state = read_state(store, at)
        except SnapshotInvalid as exc:
            skipped(at, exc)
            continue
        if ts is not None and state.last_ts > ts:
            continue
        return state
    return None


def prune_store(store: Any, keep: int | None) -> None:
    """Keep the newest ``keep`` snapshots of ``store`` (``None``: all);
    a file store also removes temp files whose writer is gone.
    Housekeeping: what the store refuses is a warning, never an error."""
    tidy = getattr(store, "tidy_snapshots", None)
    if tidy is not None:
        tidy(keep)
        return
    if keep is None:
        return
    try:
        seqs = store.snapshot_seqs()
        for at in seqs[: max(0, len(seqs) - keep)]:
            store.snapshot_delete(at)
    except LedgerError as exc:
        log.warning("could not prune old snapshots: %s", exc)
