"""The file store: a ledger directory as a :class:`~scopeledger._logstore.LogStore`.

The directory's layout, its safe opening and the lock are :mod:`_store`'s
(``events.jsonl`` under ``flock``; ``snapshots/snap-<seq:016d>.json``); this
module maps the interface's seqs onto the log's bytes. Line ``n`` of the
log is seq ``n`` (the fold checks each line's ``seq`` field against it).
Byte offsets never leave this module: it remembers where some lines end
(every :data:`MARK_EVERY`-th line read, the last one read or appended, and
the line a snapshot was taken at), and finds any other line by counting
newlines from the nearest one before it.

Files stay byte for byte as written by earlier versions: a snapshot file's
header still holds ``offset`` and ``line_start`` (where its last line ends
and starts), added here on writing and checked and removed here on reading.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import orjson

from . import _snapshots
from ._errors import CorruptLedger, LedgerIOError, ReadOnlyLedger, SnapshotInvalid
from ._events import split_lines
from ._logstore import Entry, Line
from ._store import Store

log = logging.getLogger("scopeledger")

#: A line's end is remembered for every this many lines read, so that
#: finding any line reads at most this many lines' bytes.
MARK_EVERY = 4096

#: How often :meth:`FileStore.wait` looks at the log's size, in seconds.
WAIT_POLL_SECONDS = 0.05

#: The keys a snapshot file's header holds that the interface does not see.
_FILE_KEYS = ("offset", "line_start")


class FileStore:
    """A :class:`~scopeledger._logstore.LogStore` over a ledger directory
    (a :class:`~scopeledger._store.Store`, which it owns and closes).

    Args:
        store: the opened directory.
        fsync: ``fdatasync`` the log after every append.
    """

    def __init__(self, store: Store, *, fsync: bool = False) -> None:
        self.store = store
        self.fsync = fsync
        #: Paths of the torn tails :meth:`locked` set aside, ``list[str]``.
        self.torn: list[str] = []
        self._mu = threading.Lock()  # guards the marks
        # (seq, end offset) pairs, ascending: seq 0 ends at byte 0.
        self._mark_seqs = [0]
        self._mark_ends = [0]
        # The last line read or appended: (seq, its start, its end).
        self._tail = (0, 0, 0)
        self._owner: int | None = None
        self._head_seen = 0
        self._end_seen = 0

    @classmethod
    def open(cls, path: str, *, create: bool = True, readonly: bool = False, fsync: bool = False,
             allow_network_fs: bool = False) -> "FileStore":
        """Open (or create) the ledger directory ``path``: as
        :class:`~scopeledger._store.Store` (every error it raises)."""
        return cls(Store(path, create=create, readonly=readonly, fsync=fsync,
                         allow_network_fs=allow_network_fs), fsync=fsync)

    @property
    def location(self) -> str:
        return self.store.path

    @property
    def readonly(self) -> bool:
        return self.store.readonly

    # -- where lines are ------------------------------------------------------

    def _remember(self, seq: int, start: int, end: int) -> None:
        with self._mu:
            if seq >= self._tail[0]:
                self._tail = (seq, start, end)
            if seq % MARK_EVERY == 0 and seq > self._mark_seqs[-1]:
                self._mark_seqs.append(seq)
                self._mark_ends.append(end)

    def _nearest(self, seq: int) -> tuple[int, int]:
        """The remembered (seq, end) at or before ``seq``."""
        with self._mu:
            tseq, _, tend = self._tail
            if tseq <= seq:
                return tseq, tend
            i = bisect.bisect_right(self._mark_seqs, seq) - 1
            return self._mark_seqs[i], self._mark_ends[i]

    def _end_of(self, seq: int) -> int:
        """The byte offset just past line ``seq``'s newline (0 for seq 0).

        Raises:
            CorruptLedger: the log has fewer complete lines than ``seq``.
        """
        known, pos = self._nearest(seq)
        size = self.store.size()
        if pos > size:
            raise CorruptLedger(self.store.log_path, f"the log shrank to {size} bytes, and line {known} "
                                                     f"ended at byte {pos} before")
        if known == seq:
            return pos
        for _line, _start, end in self._lines(known, pos, size):
            known += 1
            if known == seq:
                return end
        raise CorruptLedger(self.store.log_path, f"the log holds {known} complete lines, and seq {seq} "
                                                 "was read before: replaced by a shorter log?")

    def _lines(self, seq: int, pos: int, size: int) -> Iterator[tuple[bytes, int, int]]:
        """The complete lines after line ``seq`` (which ends at ``pos``),
        up to byte ``size``, remembering where they end."""
        s = seq
        for line, start, end in split_lines(self.store.read(pos, size), pos, self.store.log_path):
            s += 1
            if s % MARK_EVERY == 0:
                self._remember(s, start, end)
            yield line, start, end
            last = (s, start, end)
        if s > seq:
            self._remember(*last)

    # -- reading --------------------------------------------------------------

    def read_after(self, seq: int, limit: int | None = None) -> list[Line]:
        _check_seq(seq)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be an int >= 1 or None, not {limit!r}")
        pos = self._end_of(seq)
        out: list[Line] = []
        s = seq
        for line, start, end in self._lines(seq, pos, self.store.size()):
            s += 1
            out.append((s, line))
            if limit is not None and len(out) >= limit:
                self._remember(s, start, end)
                break
        return out

    def head(self) -> int:
        seq, pos = self._nearest(1 << 62)
        size = self.store.size()
        if pos > size:
            raise CorruptLedger(self.store.log_path, f"the log shrank to {size} bytes, and line {seq} "
                                                     f"ended at byte {pos} before")
        for _ in self._lines(seq, pos, size):
            seq += 1
        return seq

    def seq_at(self, ts: int) -> int:
        seq = 0
        for line, _, _ in self._lines(0, 0, self.store.size()):
            try:
                t = orjson.loads(line)["ts"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise CorruptLedger(self.store.log_path, "a line without a time", line=seq + 1) from None
            if type(t) is not int:
                raise CorruptLedger(self.store.log_path, f"ts is {t!r}, not an int", line=seq + 1)
            if t > ts:
                return seq
            seq += 1
        return seq

    def wait(self, after: int, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            size = self.store.size()  # before the head: an append in between changes it
            seq = self.head()
            if seq > after:
                return seq
            while self.store.size() == size:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return seq
                time.sleep(WAIT_POLL_SECONDS if deadline is None else min(WAIT_POLL_SECONDS, deadline - now))

    # -- the lock and appending ---------------------------------------------------

    @contextlib.contextmanager
    def locked(self, after: int, timeout: float | None = None,
               on_wait: Callable[[], object] | None = None) -> Iterator[list[Line]]:
        """As the interface; ``on_wait`` is :meth:`Store.acquire`'s (work to
        do between tries while another process holds the lock)."""
        _check_seq(after)
        store = self.store
        store.acquire(timeout, on_wait)
        me = threading.get_ident()
        self._owner = me
        try:
            missed = self.read_after(after)
            head = after + len(missed)
            end = self._end_of(head)
            size = store.size()
            if size > end:
                where = store.set_aside(end, size)
                log.warning("torn last line (%d bytes) in %s moved to %s", size - end, store.log_path, where)
                self.torn.append(where)
            self._head_seen, self._end_seen = head, end
            yield missed
        finally:
            if self._owner == me:  # no append: let go
                self._owner = None
                store.release()

    def append(self, entries: Sequence[Entry], first_seq: int) -> None:
        if self._owner != threading.get_ident() or not self.store.owns_lock():
            raise RuntimeError("append() outside locked(), or a second time in one")
        if first_seq != self._head_seen + 1:
            raise ValueError(f"first_seq {first_seq} is not the next seq ({self._head_seen + 1})")
        if not entries:
            raise ValueError("nothing to append")
        lines = [line for _, line in entries]
        for line in lines:
            if type(line) is not bytes or b"\n" in line:
                raise ValueError(f"a line is bytes without a newline, not {line!r:.80}")
        data = b"\n".join(lines) + b"\n"
        self.store.append(data, self._end_seen, self.fsync)
        end = self._end_seen + len(data)
        last = first_seq + len(lines) - 1
        self._remember(last, end - len(lines[-1]) - 1, end)
        self._owner = None
        self.store.release()

    # -- snapshots ----------------------------------------------------------------

    def snapshot_seqs(self) -> list[int]:
        return [seq for seq, _ in _snapshots.list_snapshots(self.store)]

    def snapshot_read(self, seq: int) -> tuple[dict[str, Any], bytes]:
        name = _snapshots.snapshot_name(seq)
        display = _snapshots.snapshot_path(self.store, name)
        try:
            data = _snapshots.read_file(self.store, name)
        except FileNotFoundError:
            raise SnapshotInvalid(display, "no such snapshot") from None
        except OSError as exc:
            raise SnapshotInvalid(display, f"cannot read: {_snapshots.why(exc)}") from None
        nl = data.find(b"\n")
        if nl < 0 or not data.endswith(b"\n"):
            raise SnapshotInvalid(display, "truncated")
        try:
            header = orjson.loads(data[:nl])
        except orjson.JSONDecodeError:
            raise SnapshotInvalid(display, "header is not JSON") from None
        if type(header) is not dict:
            raise SnapshotInvalid(display, "header is not an object")
        start, end = header.get("line_start"), header.get("offset")
        if header.get("seq") != seq or type(start) is not int or type(end) is not int:
            raise SnapshotInvalid(display, "header lacks a field or has a wrong type")
        if not self._is_line(seq, start, end, header.get("last_hash")):
            raise SnapshotInvalid(display, f"does not match the log at seq {seq}")
        self._remember(seq, start, end)
        for key in _FILE_KEYS:
            del header[key]
        return header, data[nl + 1:-1]

    def _is_line(self, seq: int, start: int, end: int, last_hash: Any) -> bool:
        return (start == 0 or seq > 1) and _snapshots.line_hash_at(self.store, start, end) == last_hash

    def snapshot_write(self, header: dict[str, Any], body: bytes) -> None:
        if self.store.readonly:
            raise ReadOnlyLedger(self.store.path, "write a snapshot")
        seq = header["seq"]
        if type(seq) is not int or seq < 1:
            raise ValueError(f"a snapshot at seq {seq!r}: the log has no such line")
        try:
            end = self._end_of(seq)
        except CorruptLedger:
            raise ValueError(f"a snapshot at seq {seq}: the log has no such line") from None
        tseq, start, tend = self._tail
        if (tseq, tend) != (seq, end):
            start = self._end_of(seq - 1)
        head: dict[str, Any] = {"format": header["format"], "seq": seq, "offset": end, "line_start": start}
        head.update((k, v) for k, v in header.items() if k not in head)
        data = orjson.dumps(head) + b"\n" + body + b"\n"
        _snapshots.write_file(self.store, seq, data, header["last_hash"])

    def snapshot_delete(self, seq: int) -> None:
        name = _snapshots.snapshot_name(seq)
        if self.store.readonly:
            raise ReadOnlyLedger(self.store.path, "remove a snapshot")
        try:
            os.unlink(name, dir_fd=self.store.snapfd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LedgerIOError(_snapshots.snapshot_path(self.store, name), "remove a snapshot", exc) from exc

    def close(self) -> None:
        self.store.close()


def _check_seq(seq: Any) -> None:
    if type(seq) is not int or seq < 0:
        raise ValueError(f"a seq is an int >= 0, not {seq!r}")
