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
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, Sequence

import orjson

from . import _snapshots
from ._errors import CorruptLedger, LedgerIOError, ReadOnlyLedger, SnapshotInvalid
from ._events import iter_lines, line_hash, split_lines
from ._logstore import Entry, Line
from ._store import MIN_EVENT_BYTES, Store
from ._imports import first_use

if TYPE_CHECKING:
    from ._filetickets import FileTickets

log = logging.getLogger("scopeledger")

#: A line's end is remembered for every this many lines read, so that
#: finding any line reads at most this many lines' bytes.
MARK_EVERY = 4096

#: Bytes read at a time, at most, for a page of lines (``read_after`` with
#: a limit; less for a short page).
PAGE_CHUNK = 1 << 16

#: How many earlier tails (the last line of each read) are remembered.
RECENT_KEPT = 64

#: How often :meth:`FileStore.wait` looks at the log's size, in seconds.
WAIT_POLL_SECONDS = 0.05

#: The keys a snapshot file's header holds that the interface does not see.
_FILE_KEYS = ("offset", "line_start")


#: Bytes :meth:`FileStore.begin` reads past the last line read (with it,
#: checked): fewer say where the log ends; as many, the size is asked for.
_BEGIN_READ = 4096


def _is(got: bytes, last: str, line: bytes | None) -> bool:
    """Whether the line ``got`` hashes to ``last``: compared with ``line``
    (the reader's copy of it, ``None``: none) first, a ``memcmp``; by its
    hash otherwise, or when they differ (the copy may be another line's)."""
    return got == line or line_hash(got) == last


def zeroed_tail(size: int, zeros: int, head: int) -> str:
    """Why a log that ends with ``size`` bytes after its last complete line
    ``head``, ``zeros`` of them NUL, is not written to: a torn tail with
    that many NUL bytes is not one line cut short by a writer that died (a
    line holds none) but lines a power cut zeroed, grants among them whose
    holders may still carry their tokens; the next grant must not take
    their seqs (``ledger repair`` keeps them void: ``Tally.seqs``)."""
    return (f"the log ends with {size} bytes after line {head}, {zeros} of them NUL: lines zeroed by a power "
            "cut, grants among them perhaps still held; run 'ledger repair', which sets them aside and keeps "
            "their seqs void (nothing is written before)")


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
        # (seq, end offset) pairs, ascending: seq 0 ends at byte 0.
        self._marks: list[tuple[int, int]] = [(0, 0)]
        # The last line read or appended: (seq, its start, its end); and
        # where earlier tails ended (ascending).
        self._tail = (0, 0, 0)
        self._recent: list[tuple[int, int]] = []
        # Where the last page read before the tail ended (seq, end).
        self._cursor = (0, 0)
        #: Seconds the last :meth:`locked` waited for the lock.
        self.last_wait = 0.0
        self._head_seen = 0
        self._end_seen = 0
        self._made: dict[str, Any] = {}  # made on first use: "tickets", the waiters' queue

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

    @property
    def created(self) -> bool:
        return self.store.created

    # -- where lines are ------------------------------------------------------

    # No lock guards these hints (a ``with lock:`` interrupted by a signal
    # handler at the wrong bytecode can leave it held): each update is one
    # atomic store or list operation under the GIL, every remembered
    # (seq, end) is true whenever it was stored, and a lost update only
    # costs a longer read.

    def _remember(self, seq: int, start: int, end: int) -> None:
        tail = self._tail
        if seq < tail[0]:  # a reader paging through older lines reads on from here
            self._cursor = (seq, end)
        else:
            if seq > tail[0]:  # the tail moves on: keep where it was among the recent ends
                recent = self._recent
                if len(recent) >= RECENT_KEPT:
                    del recent[:RECENT_KEPT // 2]
                recent.append((tail[0], tail[2]))
            self._tail = (seq, start, end)
        if seq % MARK_EVERY == 0 and seq > self._marks[-1][0]:
            self._marks.append((seq, end))

    def _nearest(self, seq: int) -> tuple[int, int]:
        """The remembered (seq, end) at or before ``seq``: the last line
        read or appended, one of the recent tails (a waiter that folded
        lines while it waited for the lock reads on from where it asked),
        the end of the last page read before the tail (a replay paging
        through the log), or a mark; the line before the tail ends where
        the tail starts (a follower re-reading the last line it read,
        ``GrantWatch``)."""
        tseq, tstart, tend = self._tail
        if tseq <= seq:
            return tseq, tend
        if tseq == seq + 1:
            return seq, tstart
        marks = self._marks
        best = marks[bisect.bisect_right(marks, seq, key=_first) - 1]
        recent = self._recent[:]  # a copy: another thread may cut it meanwhile
        j = bisect.bisect_right(recent, seq, key=_first) - 1
        if j >= 0 and recent[j][0] > best[0]:
            best = recent[j]
        cursor = self._cursor
        if best[0] < cursor[0] <= seq:
            best = cursor
        return best

    def _end_of(self, seq: int, size: int) -> int:
        """The byte offset just past line ``seq``'s newline (0 for seq 0),
        in a log of ``size`` bytes.

        Raises:
            CorruptLedger: the log has fewer complete lines than ``seq``.
        """
        known, pos = self._nearest(seq)
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

    def _lines(self, seq: int, pos: int, size: int, chunk: int = 1 << 20) -> Iterator[tuple[bytes, int, int]]:
        """The complete lines after line ``seq`` (which ends at ``pos``),
        up to byte ``size``, remembering where they end; read ``chunk``
        bytes at a time."""
        s = seq
        for line, start, end in split_lines(self.store.read(pos, size, chunk), pos, self.store.log_path):
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
        return self._read_after(seq, limit, self.store.size())[0]

    def _read_after(self, seq: int, limit: int | None, size: int) -> tuple[list[Line], int]:
        """``read_after`` in a log of ``size`` bytes, and where the last
        line returned ends (line ``seq``'s end when none is). One ``pread``
        from a known offset in the common case (reading on from the last
        line read or appended)."""
        pos = self._end_of(seq, size)
        out: list[Line] = []
        if pos == size:
            return out, pos
        s = seq
        end = start = pos
        append = out.append
        marks = MARK_EVERY
        try:
            # A page (``limit``) is read in pieces of PAGE_CHUNK bytes, so that
            # paging through a log reads little past each page's end.
            for line, start, end in split_lines(self.store.read(pos, size, self._chunk(limit)), pos,
                                                self.store.log_path):
                s += 1
                append((s, line))
                if s % marks == 0:
                    self._remember(s, start, end)
                if limit is not None and s - seq >= limit:
                    break
        except CorruptLedger:  # a line over MAX_LINE_BYTES: a page gives the lines
            if not out or limit is None:  # before it, the next read the error
                raise
        if s > seq:
            self._remember(s, start, end)
        return out, end

    def read_on(self, seq: int, last: str, line: bytes | None = None) -> list[Line]:
        """As :meth:`read_after` (no limit), for a reader that folded the
        log to line ``seq``, whose hash was ``last``: the log must still
        hold that line (where lines are is remembered for every reader of
        this store, and a repair may have cut the log since this reader
        read it, which another reader may have learnt since; the lines
        after it would then chain to a line no longer there); ``line``: the
        reader's copy of it, compared first (``None``: its hash is). One
        ``pread`` from the line's start, in place of asking for the size,
        in the common case.

        Raises:
            CorruptLedger: the log no longer holds line ``seq`` hashing to
                ``last`` (cut by a repair, or replaced), or a line after it
                does not decode.
            LedgerIOError: the log cannot be read.
        """
        if not seq:
            return self.read_after(0)
        if self._tail[0] == seq:
            size = self._size_past_tail(seq, last, line)
            return [] if size == self._tail[2] else self._read_after(seq, None, size)[0]
        lines = self.read_after(seq - 1)
        if not lines or lines[0][0] != seq or not _is(lines[0][1], last, line):
            raise self._not_held(seq)
        del lines[0]
        return lines

    def _size_past_tail(self, seq: int, last: str, line: bytes | None) -> int:
        """The log's size, found by reading the last line read (seq
        ``seq``, the tail remembered) again with whatever follows it (a
        short read: the log's end; a full one: the size is asked for),
        once that line is checked to hash to ``last`` (``line``: the
        reader's copy, compared first).

        Raises:
            CorruptLedger: it does not (:meth:`_not_held`).
            LedgerIOError: the log cannot be read.
        """
        _, start, end = self._tail
        n = end - start
        data = self.store.read_at(start, n + _BEGIN_READ)
        if len(data) < n or data[n - 1] != 10:
            raise self._not_held(seq)
        got = data[:n - 1]
        if got != line and line_hash(got) != last:  # (_is, inlined: every change passes here)
            raise self._not_held(seq)
        return start + len(data) if len(data) < n + _BEGIN_READ else self.store.size()

    def read_lines(self, seq: int, limit: int) -> list[bytes]:
        """As :meth:`read_after` with a ``limit``, the lines alone (of seqs
        ``seq + 1`` on, in order), each chunk read split at once: the
        replay's and ``verify``'s reader (file store only).

        Raises:
            As :meth:`read_after`.
        """
        _check_seq(seq)
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be an int >= 1, not {limit!r}")
        size = self.store.size()
        pos = self._end_of(seq, size)
        if pos == size:
            return []
        try:
            out = list(itertools.islice(iter_lines(self.store.read(pos, size, self._chunk(limit)),
                                                   self.store.log_path, pos), limit))
        except CorruptLedger:  # a line over MAX_LINE_BYTES: the page is the lines before it
            return [line for _, line in self._read_after(seq, limit, size)[0]]
        if out:
            n = len(out)
            marks = MARK_EVERY
            for k in range(marks - seq % marks, n, marks):  # (k lines in: seq + k is a multiple)
                end = pos + sum(map(len, out[:k])) + k
                self._remember(seq + k, end - len(out[k - 1]) - 1, end)
            end = pos + sum(map(len, out)) + n
            self._remember(seq + n, end - len(out[-1]) - 1, end)
        return out

    def _chunk(self, limit: int | None) -> int:
        """Bytes to read at a time for ``limit`` lines: about twice what
        they take at the log's mean line length so far, between 4 KiB and
        :data:`PAGE_CHUNK` (1 MiB without a limit)."""
        if limit is None:
            return 1 << 20
        tseq, _, tend = self._tail
        mean = tend // tseq if tseq else 256
        return min(PAGE_CHUNK, max(4096, 2 * limit * mean))

    def head(self) -> int:
        seq, pos = self._nearest(1 << 62)
        size = self.store.size()
        if pos > size:
            raise CorruptLedger(self.store.log_path, f"the log shrank to {size} bytes, and line {seq} "
                                                     f"ended at byte {pos} before")
        for _ in self._lines(seq, pos, size):
            seq += 1
        return seq

    def _zeros(self, start: int, end: int) -> int:
        """The NUL bytes among the log's bytes ``start .. end``, ``int``."""
        return sum(piece.count(0) for piece in self.store.read(start, end))

    def torn_zeros(self) -> tuple[int, int]:
        """``(bytes, NUL bytes)`` after the last complete line (a torn tail
        not set aside yet, or lines a power cut zeroed: :func:`zeroed_tail`);
        ``(0, 0)`` for none. (File store only: for ``verify``.)

        Judged at one look at the log's size: a line another process
        appends meanwhile is not a torn tail, nor a log that shrank (the
        head and its end taken at two sizes said so, on a ledger in use).
        """
        seq, pos = self._nearest(1 << 62)
        size = self.store.size()
        if pos > size:
            raise CorruptLedger(self.store.log_path, f"the log shrank to {size} bytes, and line {seq} "
                                                     f"ended at byte {pos} before")
        end = pos
        for _line, _start, line_end in self._lines(seq, pos, size):
            end = line_end
        return size - end, self._zeros(end, size) if size > end else 0

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

    def appended_ago(self, seqs: Iterable[int]) -> None:
        """``None``: a directory has no clock of its own, only its writers'
        (``LogStore.appended_ago``; leases are judged on the boot-time clock
        of the host that renewed them)."""
        return None

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
        do between tries while another process holds the lock). The seconds
        spent waiting are left in :attr:`last_wait`."""
        try:
            yield self.begin(after, timeout, on_wait)
        finally:
            self.end()

    def begin(self, after: int, timeout: float | None = None,
              on_wait: Callable[[], object] | None = None, last: str | None = None,
              line: bytes | None = None) -> list[Line]:
        """:meth:`locked` without the context manager (the ledger's hot
        path: a generator and its context manager cost more than the rest
        of taking the lock): take the lock, set a torn tail aside, return
        the lines after ``after``. Pair with :meth:`append` and, in a
        ``finally``, :meth:`end`; an exception here lets the lock go.

        ``last``: the hash of line ``after`` as the caller read it (``None``:
        not checked). Where lines are remembered is shared by every reader
        of this store, and a repair may have cut the log since the caller
        read it, which another reader may have learnt since: when no line
        follows, the log must still hold that line, or the caller's next
        line would chain to a line no longer there. Checked with the read
        that finds the log's end (one ``pread`` from the line's start, in
        place of asking for the size), by its bytes (``line``: the caller's
        copy of it, when it has one) or its hash.

        Raises:
            CorruptLedger: the log no longer holds line ``after`` hashing
                to ``last`` (cut by a repair, or replaced): read it again.
        """
        if type(after) is not int or after < 0:
            _check_seq(after)
        store = self.store
        try:
            # From here on an exception at any point (a signal handler's)
            # lets the lock go: Store.release is a no-op when this thread
            # holds nothing.
            self.last_wait = store.acquire(timeout, on_wait)
            tseq, _, tend = self._tail
            if last is not None and tseq == after and after:
                size = self._size_past_tail(after, last, line)
                last = None  # (checked)
            else:
                size = store.size()
            if tseq == after and tend == size:  # nothing new since the last line read or appended
                missed: list[Line] = []
                end = size
            else:
                missed, end = self._read_after(after, None, size)
            if last is not None and not missed and after:  # (lines missed: the fold checks their chain)
                got = self._read_after(after - 1, 1, end)[0]
                if not got or not _is(got[0][1], last, line):
                    raise self._not_held(after)
            head = after + len(missed)
            if size > end:
                zeros = self._zeros(end, size)
                if zeros >= MIN_EVENT_BYTES:
                    raise CorruptLedger(store.log_path, zeroed_tail(size - end, zeros, head), line=head + 1)
                where = store.set_aside(end, size)
                log.warning("torn last line (%d bytes) in %s moved to %s", size - end, store.log_path, where)
                self.torn.append(where)
            self._head_seen, self._end_seen = head, end
            return missed
        except BaseException:
            self.end()
            raise

    def _not_held(self, seq: int) -> CorruptLedger:
        """The error of :meth:`begin` for a log that no longer holds line
        ``seq`` as its caller read it; where lines are is forgotten."""
        self.forget()
        return CorruptLedger(self.store.log_path, f"the log no longer holds line {seq} as it was read (cut by "
                                                  "'ledger repair', or the log replaced)", line=seq, seq=seq)

    def end(self) -> None:
        """End the locked section :meth:`begin` started: let the lock go
        unless :meth:`append` did (idempotent; a no-op in a thread that
        holds nothing)."""
        self.store.release()

    def append(self, entries: Sequence[Entry], first_seq: int) -> None:
        store = self.store
        if not store.owns_lock():  # (per thread; append lets it go)
            raise RuntimeError("append() outside locked(), or a second time in one")
        if first_seq != self._head_seen + 1:
            raise ValueError(f"first_seq {first_seq} is not the next seq ({self._head_seen + 1})")
        if len(entries) == 1:  # the common case, without a list
            line = entries[0][1]
            # (10: b"\n" as an int, a memchr; a bytes needle first fails as an
            # int, and that TypeError's message costs ~900 instructions)
            if type(line) is not bytes or 10 in line:
                raise ValueError(f"a line is bytes without a newline, not {line!r:.80}")
            data = line + b"\n"
        else:
            if not entries:
                raise ValueError("nothing to append")
            lines = [line for _, line in entries]
            for line in lines:
                if type(line) is not bytes or 10 in line:
                    raise ValueError(f"a line is bytes without a newline, not {line!r:.80}")
            data = b"\n".join(lines) + b"\n"
        start = self._end_seen
        store.append(data, start, self.fsync)
        end = start + len(data)
        seq = first_seq + len(entries) - 1
        tail = self._tail
        if seq > tail[0] and seq % MARK_EVERY and len(self._recent) < RECENT_KEPT:
            # _remember's common case, inlined (the hot path): the tail moves on.
            self._recent.append((tail[0], tail[2]))
            self._tail = (seq, end - len(line) - 1, end)
        else:
            self._remember(seq, end - len(line) - 1, end)
        store.release()

    # -- repair ---------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[None]:
        """``with store.exclusive(timeout):`` the ledger's lock alone
        (:meth:`Store.locked`): nothing is read and no torn tail is set
        aside, as :meth:`begin` would (a repair judges the whole log under
        it, a torn tail included).

        Raises:
            as :meth:`Store.acquire` (``LockTimeout``, ``ReadOnlyLedger``,
            ``LedgerIOError``).
        """
        with self.store.locked(timeout):
            yield

    def _past(self, kept: int) -> tuple[int, int, list[str]]:
        """Where line ``kept`` ends (the cut), the log's size, and the names
        of the snapshot files at seqs past ``kept``.

        Raises:
            CorruptLedger: the log has fewer than ``kept`` complete lines.
            LedgerIOError: the log or the snapshots cannot be read.
        """
        size = self.store.size()
        offset = self._end_of(kept, size)
        snaps = _snapshots.list_snapshots(self.store)
        names = self._foreign(snaps, kept) + [name for seq, name in snaps if seq > kept]
        return offset, size, names

    def _foreign(self, snaps: list[tuple[int, str]], kept: int) -> list[str]:
        """The names of the snapshot files among ``snaps`` at seqs up to
        ``kept`` that name another ledger (``_snapshots.foreign``): a
        repair sets them aside with what lies past the cut. Reads each
        header; one that cannot be read is not named here (verify names it,
        and the repair leaves it)."""
        out = []
        for seq, name in snaps:
            if seq > kept:
                break
            header = _snapshots.header_at(self.store, name, seq)
            if header is not None and _snapshots.foreign(self.store, header) is not None:
                out.append(name)
        return out

    def ledger_id(self, make: bool = False) -> str | None:
        """This ledger's id (``_snapshots.ledger_id``): what a copy of it
        keeps (``copy_log``), what its snapshots name (``make``: one made
        for a ledger that has none yet); ``None`` when it has none (yet)
        or none that can be read."""
        return _snapshots.ledger_id(self.store, make=make)

    def adopt_ledger_id(self, value: str) -> None:
        """Make ``value`` this (empty) ledger's id: a copy of the ledger
        that has it (``copy_log``); :meth:`Store.adopt_ledger_id`."""
        self.store.adopt_ledger_id(value)

    def past(self, kept: int) -> tuple[int, list[str]]:
        """What lies past line ``kept``: the log's bytes after it (a number)
        and the names of the snapshot files at seqs past it.

        Raises:
            CorruptLedger: the log has fewer than ``kept`` complete lines.
            LedgerIOError: the log or the snapshots cannot be read.
        """
        offset, size, names = self._past(kept)
        return size - offset, names

    def cut_plan(self, kept: int) -> dict[str, Any]:
        """What :meth:`cut_after` would set aside after line ``kept`` now,
        as its record says it: ``offset``, ``log_bytes``, ``bytes``,
        ``lines``, ``seqs``, ``sha256`` (``None`` for no bytes) and ``snapshots``
        (file names). Reads the bytes (for their sha256); changes nothing.

        Raises:
            CorruptLedger: the log has fewer than ``kept`` complete lines.
            LedgerIOError: the log or the snapshots cannot be read.
        """
        offset, size, names = self._past(kept)
        counted = self.store.tally(offset, size, kept)
        return {"offset": offset, "log_bytes": size, "bytes": counted.bytes, "lines": counted.lines(),
                "seqs": counted.seqs(),
                "sha256": counted.sha256.hexdigest() if counted.bytes else None, "snapshots": names}

    def judge_past(self, kept: int) -> tuple[int, dict[str, Any], int, int]:
        """What lies past line ``kept``, the last line of a judgement made
        without the lock (a repair's first look, a dry run), judged so that
        other writers' appends are never taken for damage: under
        :meth:`Store.quiet` (the lock shared for the moment, never waited
        for). Complete lines past ``kept`` were appended meanwhile: not
        damage, and not checked. A last line without its newline is torn
        only when no writer holds the lock (a writer appends holding it, so
        its line is complete before it lets go: the one that left this one
        died in the middle of its append); while one holds it, the line is
        being written. A snapshot past the log's last complete line is
        damage (the snapshots are listed before the log's size is read: a
        snapshot's lines are in the log before it is put in place).

        Returns:
            ``(last, plan, appended, writing)``: ``last`` the log's last
            complete line now (``kept`` + ``appended``); ``plan`` as
            :meth:`cut_plan` gives it for a cut after ``last``, holding the
            damage only (a torn last line, snapshots past ``last``);
            ``writing`` the bytes of a last line being written (not judged;
            0 when none).

        Raises:
            CorruptLedger: the log has fewer than ``kept`` complete lines
                (cut by a repair meanwhile).
            LedgerIOError: the log or the snapshots cannot be read.
        """
        store = self.store
        with store.quiet() as quiet:
            snaps = _snapshots.list_snapshots(store)
            size = store.size()
            end = self._end_of(kept, size)
            last = kept
            for _line, _start, line_end in self._lines(kept, end, size):
                last += 1
                end = line_end
            partial = size - end
            torn = partial if quiet is not False else 0  # (None: no lock here, for anyone)
            counted = store.tally(end, size, last) if torn else None
        names = self._foreign(snaps, last) + [name for seq, name in snaps if seq > last]
        plan = {"offset": size - torn, "log_bytes": size, "bytes": torn, "lines": 1 if torn else 0,
                "seqs": counted.seqs() if counted is not None else 0,
                "sha256": counted.sha256.hexdigest() if counted is not None else None, "snapshots": names}
        return last, plan, last - kept, partial - torn

    def cut_after(self, kept: int, facts: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Set everything after line ``kept`` aside (:meth:`Store.cut`: the
        log's bytes past it, and the snapshots at seqs past it, into a new
        directory under ``cut/`` with a record holding ``facts``), then cut
        the log there. The lock is held (:meth:`exclusive`). What this
        object remembered of lines past the cut is forgotten.

        Returns:
            ``(the directory's full path, the record)``, or ``None`` when
            nothing lies past line ``kept``.

        Raises:
            as :meth:`Store.cut`; CorruptLedger: the log has fewer than
            ``kept`` complete lines.
        """
        offset, size, names = self._past(kept)
        if offset == size and not names:
            return None
        try:
            return self.store.cut(offset, f"line-{kept + 1}", facts, names)
        finally:
            self.forget()

    def replaced(self) -> str | None:
        """Why the log open here is no longer the directory's log (renamed
        over or deleted since it was opened), else ``None``:
        :meth:`Store.replaced <scopeledger._store.Store.replaced>`."""
        return self.store.replaced()

    def forget(self) -> None:
        """Forget where lines end (they are hints: the log may have been cut
        by a repair since, here or in another process, and a line now be
        elsewhere). The next read finds them again from the start. (Not what
        :meth:`begin` found for :meth:`append`: set under the lock, used
        under it, and set again by the next :meth:`begin`.)"""
        self._marks = [(0, 0)]
        self._tail = (0, 0, 0)
        self._recent = []
        self._cursor = (0, 0)

    # -- snapshots ----------------------------------------------------------------

    def snapshot_seqs(self) -> list[int]:
        return [seq for seq, _ in _snapshots.list_snapshots(self.store)]

    def snapshot_where(self, seq: int) -> str:
        """The full path of the snapshot file at ``seq`` (for messages)."""
        return _snapshots.snapshot_path(self.store, _snapshots.snapshot_name(seq))

    def _snapshot_data(self, seq: int, header_only: bool) -> tuple[str, bytes]:
        name = _snapshots.snapshot_name(seq)
        display = _snapshots.snapshot_path(self.store, name)
        try:
            if header_only:
                return display, _snapshots.read_head(self.store, name)
            return display, _snapshots.read_file(self.store, name)
        except FileNotFoundError:
            raise SnapshotInvalid(display, "no such snapshot") from None
        except OSError as exc:
            raise SnapshotInvalid(display, f"cannot read: {_snapshots.why(exc)}") from None

    def snapshot_header(self, seq: int) -> dict[str, Any]:
        """The header of the snapshot at ``seq`` as :meth:`snapshot_read`
        gives it, reading only its first line and checking nothing against
        the log (for picking a snapshot by time without reading bodies).

        Raises:
            SnapshotInvalid: as :meth:`snapshot_read` (``SnapshotOutdated``
                for an older format).
        """
        display, head = self._snapshot_data(seq, True)
        nl = head.find(b"\n")
        if nl < 0:
            raise SnapshotInvalid(display, "truncated header")
        header = _snapshots.parse_header(display, head[:nl], seq)
        other = _snapshots.foreign(self.store, header)
        if other is not None:
            raise SnapshotInvalid(display, other)
        for key in _FILE_KEYS:
            del header[key]
        return header

    def snapshot_read(self, seq: int) -> tuple[dict[str, Any], bytes]:
        """As the interface; also checks the header's format
        (``SnapshotOutdated`` for an older one) and fields. (The body's
        checksum and content are the layer above's to check:
        ``_snapshots.state_from``.)"""
        display, data = self._snapshot_data(seq, False)
        nl = data.find(b"\n")
        if nl < 0:
            raise SnapshotInvalid(display, "truncated (no header line)")
        header = _snapshots.parse_header(display, data[:nl], seq)
        other = _snapshots.foreign(self.store, header)
        if other is not None:  # (before the log: whatever else it matches, never this ledger's state)
            raise SnapshotInvalid(display, other)
        if not data.endswith(b"\n"):
            raise SnapshotInvalid(display, "truncated body")
        body = data[nl + 1:-1]
        start, end = header["line_start"], header["offset"]
        if not self._is_line(seq, start, end, header["last_hash"]):
            raise SnapshotInvalid(display, f"does not match the log at seq {seq}")
        self._remember(seq, start, end)
        for key in _FILE_KEYS:
            del header[key]
        return header, body

    def _is_line(self, seq: int, start: int, end: int, last_hash: Any) -> bool:
        return (start == 0 or seq > 1) and _snapshots.line_hash_at(self.store, start, end) == last_hash

    def snapshot_write(self, header: dict[str, Any], body: bytes) -> None:
        if self.store.readonly:
            raise ReadOnlyLedger(self.store.path, "write a snapshot")
        seq = header["seq"]
        if type(seq) is not int or seq < 1:
            raise ValueError(f"a snapshot at seq {seq!r}: the log has no such line")
        size = self.store.size()
        try:
            end = self._end_of(seq, size)
        except CorruptLedger:
            raise ValueError(f"a snapshot at seq {seq}: the log has no such line") from None
        tseq, start, tend = self._tail
        if (tseq, tend) != (seq, end):
            start = self._end_of(seq - 1, size)
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

    def tidy_snapshots(self, keep: int | None) -> None:
        """Housekeeping after a snapshot: remove temp files whose writer is
        gone and the snapshots past the newest ``keep`` (``None``: keep
        all). What the OS refuses is a warning naming the file in full."""
        _snapshots.clean_temp_files(self.store)
        _snapshots.prune(self.store, keep)

    @property
    def network_fs(self) -> str | None:
        """The network file system type the log is on when opened for
        writing with ``allow_network_fs`` (each line then says so), else
        ``None``."""
        return self.store.network_fs

    def snapshot_claim(self) -> ContextManager[bool]:
        """:meth:`Store.snapshot_claim`: whether this process writes the
        automatic snapshot that is due."""
        return self.store.snapshot_claim()

    def tickets(self) -> "FileTickets":
        """The waiters' queue: ``waiters/`` in the directory
        (``scopeledger._filetickets``, imported on first use)."""
        tickets: FileTickets | None = self._made.get("tickets")
        if tickets is None:
            with first_use:
                from ._filetickets import FileTickets

            # (threads racing here keep the first one made: setdefault is atomic)
            tickets = self._made.setdefault("tickets", FileTickets(self.store))
        return tickets

    def close(self) -> None:
        tickets = self._made.get("tickets")
        if tickets is not None:
            tickets.close()
        self.store.close()


def _first(pair: tuple[int, int]) -> int:
    return pair[0]


def _check_seq(seq: Any) -> None:
    if type(seq) is not int or seq < 0:
        raise ValueError(f"a seq is an int >= 0, not {seq!r}")
