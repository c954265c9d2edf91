"""Snapshots: the folded state at a seq, written atomically, trusted only
after checking.

A snapshot file ``snapshots/snap-<seq:016d>.json`` holds two lines::

    {"format": 1, "seq": S, "offset": O, "line_start": L, "last_hash": H,
     "ts": T, "checksum": C, "events": S}
    <the State.to_json() document>

``offset`` is the log byte offset just past event S's newline, ``line_start``
where that line starts, ``last_hash`` the hash of that line, ``ts`` its time
(ns, UTC), ``checksum`` the blake2b-128 of the second line's bytes.

Writing (after the lock is released; a snapshot only restates the log):
a temp file ``.tmp-<pid>-<ns>`` created 0600 with O_EXCL, written, fsynced,
renamed into place, then the directory fsynced. A temp file is never read
as a snapshot; one left by a writer that is gone is removed by the next
snapshot writer.

Loading checks, in order: the name, the header's format version, the body's
checksum, the body's seq, and that the log has a line at ``line_start ..
offset`` whose hash is ``last_hash``. A snapshot failing any check is
skipped with a warning, never trusted.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import re
import time
from typing import Any, Iterator

import attrs
import orjson
import psutil

from ._errors import LedgerIOError, UnsafeLedgerPath
from ._fold import FORMAT_VERSION, State
from ._store import Store, open_private_file

log = logging.getLogger("scopeledger")

_NAME = re.compile(r"^snap-(\d{16})\.json$")
_TMP = re.compile(r"^\.tmp-(\d+)-(\d+)$")


class SnapshotInvalid(Exception):
    """A snapshot that did not check out (internal; logged and skipped)."""


@attrs.frozen
class SnapshotInfo:
    """What a snapshot's header says. ``seq``, ``offset`` (bytes),
    ``line_start`` (bytes), ``last_hash``, ``ts`` (ns, UTC), ``name``."""

    seq: int
    offset: int
    line_start: int
    last_hash: str
    ts: int
    name: str


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


def snapshot_name(seq: int) -> str:
    return f"snap-{seq:016d}.json"


def list_snapshots(store: Store) -> list[tuple[int, str]]:
    """``[(seq, file name), ...]`` of snapshot files, oldest first."""
    out: list[tuple[int, str]] = []
    if store.snapfd is None:  # opened read-only, without a snapshots/ directory
        return out
    for name in os.listdir(store.snapfd):
        m = _NAME.match(name)
        if m:
            out.append((int(m.group(1)), name))
    out.sort()
    return out


def _checksum(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def write_snapshot(store: Store, state: State, offset: int, line_start: int) -> SnapshotInfo:
    """Write the snapshot of ``state`` (after its ``seq``) atomically.

    ``offset``/``line_start``: where event ``state.seq``'s line ends/starts.

    Raises:
        LedgerIOError: the OS refused (disk full, ...): the temp file is
            removed, no snapshot.
        UnsafeLedgerPath: as :func:`open_private_file`.
    """
    with _gc_paused():
        body = orjson.dumps(state.to_json())
    header = {
        "format": FORMAT_VERSION,
        "seq": state.seq,
        "offset": offset,
        "line_start": line_start,
        "last_hash": state.last_hash,
        "ts": state.last_ts,
        "checksum": _checksum(body),
    }
    data = orjson.dumps(header) + b"\n" + body + b"\n"
    tmp = f".tmp-{os.getpid()}-{time.time_ns()}"
    name = snapshot_name(state.seq)
    display = os.path.join(store.file("snapshots"), tmp)
    final = os.path.join(store.file("snapshots"), name)
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
        os.rename(tmp, name, src_dir_fd=store.snapfd, dst_dir_fd=store.snapfd)
        os.fsync(store.snapfd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=store.snapfd)
        if isinstance(exc, OSError):
            raise LedgerIOError(final, "write a snapshot", exc) from exc
        raise
    return SnapshotInfo(state.seq, offset, line_start, state.last_hash, state.last_ts, name)


def clean_temp_files(store: Store) -> list[str]:
    """Remove temp files whose writer process is gone; returns their names."""
    removed = []
    for name in os.listdir(store.snapfd):
        m = _TMP.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and psutil.pid_exists(pid):
            continue
        if pid == os.getpid():
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=store.snapfd)
            removed.append(name)
    return removed


def prune(store: Store, keep: int | None) -> None:
    """Keep the newest ``keep`` snapshots (``None``: keep all)."""
    if keep is None:
        return
    snaps = list_snapshots(store)
    for _, name in snaps[: max(0, len(snaps) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=store.snapfd)


def _read(store: Store, name: str) -> bytes:
    display = os.path.join(store.file("snapshots"), name)
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


def read_header(store: Store, name: str) -> SnapshotInfo:
    """Parse only a snapshot's header.

    Raises:
        SnapshotInvalid: unreadable, malformed or another format version.
    """
    m = _NAME.match(name)
    if not m:
        raise SnapshotInvalid(f"{name}: not a snapshot name")
    try:
        display = os.path.join(store.file("snapshots"), name)
        fd = open_private_file(store.snapfd, name, display, os.O_RDONLY, create=False,
                               readonly=store.readonly)
        try:
            head = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        raise SnapshotInvalid(f"{name}: cannot read ({exc})") from None
    nl = head.find(b"\n")
    if nl < 0:
        raise SnapshotInvalid(f"{name}: truncated header")
    return _parse_header(name, head[:nl], int(m.group(1)))


def _parse_header(name: str, line: bytes, seq_in_name: int) -> SnapshotInfo:
    try:
        h = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise SnapshotInvalid(f"{name}: header is not JSON") from None
    if not isinstance(h, dict):
        raise SnapshotInvalid(f"{name}: header is not an object")
    if h.get("format") != FORMAT_VERSION:
        raise SnapshotInvalid(f"{name}: format {h.get('format')!r}, this scopeledger reads {FORMAT_VERSION}")
    try:
        info = SnapshotInfo(int(h["seq"]), int(h["offset"]), int(h["line_start"]),
                            str(h["last_hash"]), int(h["ts"]), name)
        _ = str(h["checksum"])
    except (KeyError, TypeError, ValueError):
        raise SnapshotInvalid(f"{name}: header lacks a field or has a wrong type") from None
    if info.seq != seq_in_name:
        raise SnapshotInvalid(f"{name}: header says seq {info.seq}")
    return info


def load(store: Store, name: str, log_hash: Any) -> tuple[State, SnapshotInfo]:
    """Load and check one snapshot.

    ``log_hash(line_start, offset) -> str | None`` returns the hash of the
    log's line there (``None`` when there is no such line).

    Raises:
        SnapshotInvalid: any check failed (see the module docstring).
    """
    m = _NAME.match(name)
    if not m:
        raise SnapshotInvalid(f"{name}: not a snapshot name")
    try:
        data = _read(store, name)
    except OSError as exc:
        raise SnapshotInvalid(f"{name}: cannot read ({exc})") from None
    nl = data.find(b"\n")
    if nl < 0:
        raise SnapshotInvalid(f"{name}: truncated (no header line)")
    info = _parse_header(name, data[:nl], int(m.group(1)))
    body = data[nl + 1:]
    if not body.endswith(b"\n"):
        raise SnapshotInvalid(f"{name}: truncated body")
    body = body[:-1]
    if _checksum(body) != orjson.loads(data[:nl])["checksum"]:
        raise SnapshotInvalid(f"{name}: checksum does not match its content")
    try:
        with _gc_paused():
            state = State.from_json(orjson.loads(body))
    except Exception as exc:  # noqa: BLE001 - any malformed body is invalid
        raise SnapshotInvalid(f"{name}: body does not parse ({type(exc).__name__}: {exc})") from None
    if state.seq != info.seq or state.last_hash != info.last_hash:
        raise SnapshotInvalid(f"{name}: body's seq/hash differ from its header")
    if log_hash(info.line_start, info.offset) != info.last_hash:
        raise SnapshotInvalid(f"{name}: does not match the log at seq {info.seq}")
    return state, info
