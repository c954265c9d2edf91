"""A log store in memory (:class:`~scopeledger._logstore.LogStore`): the
reference implementation of the contract, and a fast store for tests.

Several :class:`MemoryStore` objects opened on one :class:`MemoryLog`
behave as several openings of one ledger (they exclude each other in
:meth:`MemoryStore.locked`). Nothing survives the process; nothing is
shared with a forked child (it gets a copy, as of the fork).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from typing import Any, Iterable, Iterator, Sequence

from ._errors import CorruptLedger, LedgerError, LockTimeout, ReadOnlyLedger, SnapshotInvalid
from ._events import line_hash
from ._logstore import Entry, Line


class MemoryLog:
    """One ledger's lines and snapshots, in memory: what several
    :class:`MemoryStore` objects share."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.lines: list[bytes] = []
        #: ``running[i]``: the latest ts among lines 1 .. i+1 (for seq_at).
        self.running: list[int] = []
        self.snapshots: dict[int, tuple[dict[str, Any], bytes]] = {}
        self.lock = threading.Lock()  # the append lock
        self.opened = False  # a writable MemoryStore was made on it
        self.opening = threading.Lock()  # guards opened
        self.news = threading.Condition()


class MemoryStore:
    """A :class:`~scopeledger._logstore.LogStore` over a :class:`MemoryLog`
    (a new one by default). See the interface for every method."""

    def __init__(self, log: MemoryLog | None = None, *, readonly: bool = False) -> None:
        self._log = log if log is not None else MemoryLog()
        with self._log.opening:  # the first writable store on a log made it (LogStore.created)
            self._created = not readonly and not self._log.opened
            self._log.opened = self._log.opened or not readonly
        self._readonly = readonly
        self._owner: int | None = None  # thread inside locked(), before its append
        self._head_seen = 0
        self._closed = False

    @property
    def log(self) -> MemoryLog:
        return self._log

    @property
    def location(self) -> str:
        return f"<memory ledger {self._log.name}>"

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def created(self) -> bool:
        return self._created

    def _open(self) -> MemoryLog:
        if self._closed:
            raise LedgerError(f"ledger {self.location} is closed")
        return self._log

    def read_after(self, seq: int, limit: int | None = None) -> list[Line]:
        _check_seq(seq)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be an int >= 1 or None, not {limit!r}")
        lines = self._open().lines[:]  # one consistent view (appends only add)
        if seq > len(lines):
            raise CorruptLedger(self.location, f"the log holds {len(lines)} lines, and seq {seq} "
                                               "was read before: replaced by a shorter log?")
        end = len(lines) if limit is None else min(len(lines), seq + limit)
        return [(i + 1, lines[i]) for i in range(seq, end)]

    def head(self) -> int:
        return len(self._open().lines)

    @contextlib.contextmanager
    def locked(self, after: int, timeout: float | None = None) -> Iterator[list[Line]]:
        _check_seq(after)
        log = self._open()
        if self._readonly:
            raise ReadOnlyLedger(self.location, "take the lock")
        me = threading.get_ident()
        if self._owner == me:
            raise LedgerError(f"the lock on {self.location} is already held by this thread")
        got = (log.lock.acquire() if timeout is None
               else log.lock.acquire(timeout=timeout) if timeout > 0 else log.lock.acquire(blocking=False))
        if not got:
            raise LockTimeout(self.location, timeout or 0.0)
        self._owner = me
        try:
            missed = self.read_after(after)
            self._head_seen = after + len(missed)
            yield missed
        finally:
            if self._owner == me:  # no append: let go
                self._owner = None
                log.lock.release()

    def append(self, entries: Sequence[Entry], first_seq: int) -> None:
        log = self._open()
        if self._owner != threading.get_ident():
            raise RuntimeError("append() outside locked(), or a second time in one")
        if first_seq != self._head_seen + 1:
            raise ValueError(f"first_seq {first_seq} is not the next seq ({self._head_seen + 1})")
        if not entries:
            raise ValueError("nothing to append")
        for ts, line in entries:
            if type(ts) is not int or type(line) is not bytes or b"\n" in line:
                raise ValueError(f"an entry is (int ts, bytes line without a newline), not {(ts, line)!r:.80}")
        with log.news:
            for ts, line in entries:
                log.running.append(max(ts, log.running[-1]) if log.running else ts)
                log.lines.append(line)
            log.news.notify_all()
        self._owner = None
        log.lock.release()

    def wait(self, after: int, timeout: float | None = None) -> int:
        log = self._open()
        deadline = None if timeout is None else time.monotonic() + timeout
        with log.news:
            while len(log.lines) <= after:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                log.news.wait(left)
            return len(log.lines)

    def seq_at(self, ts: int) -> int:
        return bisect.bisect_right(self._open().running, ts)

    def appended_ago(self, seqs: Iterable[int]) -> None:
        """``None``: no clock of its own (``LogStore.appended_ago``)."""
        return None

    def snapshot_seqs(self) -> list[int]:
        return sorted(self._open().snapshots)

    def snapshot_read(self, seq: int) -> tuple[dict[str, Any], bytes]:
        log = self._open()
        where = f"{self.location} snapshot {seq}"
        got = log.snapshots.get(seq)
        if got is None:
            raise SnapshotInvalid(where, "no such snapshot")
        header, body = got
        if not 1 <= seq <= len(log.lines) or line_hash(log.lines[seq - 1]) != header.get("last_hash"):
            raise SnapshotInvalid(where, f"does not match the log at seq {seq}")
        return dict(header), body

    def snapshot_write(self, header: dict[str, Any], body: bytes) -> None:
        log = self._open()
        if self._readonly:
            raise ReadOnlyLedger(self.location, "write a snapshot")
        seq = header["seq"]
        if type(seq) is not int or not 1 <= seq <= len(log.lines):
            raise ValueError(f"a snapshot at seq {seq!r}: the log has no such line")
        log.snapshots[seq] = (dict(header), bytes(body))

    def snapshot_delete(self, seq: int) -> None:
        if self._readonly:
            raise ReadOnlyLedger(self.location, "remove a snapshot")
        self._open().snapshots.pop(seq, None)

    @staticmethod
    def tickets() -> None:
        """No waiters' queue: waiters on a memory ledger are not ordered
        among themselves (they are woken by :meth:`wait`)."""
        return None

    def close(self) -> None:
        self._closed = True


def _check_seq(seq: Any) -> None:
    if type(seq) is not int or seq < 0:
        raise ValueError(f"a seq is an int >= 0, not {seq!r}")
