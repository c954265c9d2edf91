"""The store interface: what the ledger needs from where its log and
snapshots live, and nothing more.

A store holds the log as numbered lines (seq 1, 2, ... gapless; each line
the event's bytes exactly as appended, without a newline) and snapshots
named by the seq they were taken at. It knows nothing of events, the fold,
holders or processes: the layers above speak seqs and lines, never byte
offsets or descriptors. Every store implements :class:`LogStore`:

- ``scopeledger._filestore.FileStore``: a ledger directory (``events.jsonl``
  under ``flock``, ``snapshots/snap-<seq>.json``); its files are byte for
  byte those of earlier versions (byte offsets stay inside it);
- ``scopeledger._memstore.MemoryStore``: a list in memory, for tests and
  as the reference of the contract;
- ``scopeledger._pgstore.PgStore``: a PostgreSQL schema (issue 15).

``tests/test_store_contract.py`` runs one suite against every store; a new
store joins it with one fixture.

A store may also keep the waiters' queue (:class:`Tickets`, from
:meth:`LogStore.tickets`): a ledger directory keeps its tickets as files
(``scopeledger._filetickets``), a PostgreSQL schema as rows held by advisory
locks (``scopeledger._pgstore``); the memory store keeps none. The waiting
code (``scopeledger._wait``) uses it alone, whatever the store. :func:`copy_log` moves a ledger from any
store into an empty one through this interface alone (``copy_ledger``,
``ledger export``/``ledger import``).

A mutation, on any store::

    with store.locked(after=seen) as missed:    # the exclusive append lock
        ...fold ``missed`` (the lines after ``seen``), decide...
        store.append([(ts, line), ...], first_seq=seen + len(missed) + 1)
    # append commits and ends the locked section; leaving without it
    # (or on an exception) appends nothing and lets the lock go.

Errors: what the OS or a server refuses is a :class:`~scopeledger.LedgerError`
(``LedgerIOError`` for a file store; ``StoreUnavailable``, ``NotRecorded``,
``InDoubt``, ``StoreError`` for a server; all in ``_errors``). ``NotRecorded``
means the append did not happen (as a full disk does: decide again);
``InDoubt`` means its outcome is unknown (the caller must re-read the log
before acting: the ledger reloads).
"""

from __future__ import annotations

from typing import Any, ContextManager, Hashable, Iterable, Protocol, Sequence

import orjson

from ._errors import CorruptLedger, LedgerError, LedgerNotEmpty, SnapshotInvalid


#: The snapshot header's key naming the ledger that wrote it (its ledger id;
#: ``scopeledger._snapshots``), read here when a log is copied.
SNAPSHOT_ID_KEY = "ledger"

#: One line of the log as a store gives it back: ``(seq, line)``, the line
#: the bytes appended (UTF-8 JSON, no newline).
Line = tuple[int, bytes]

#: One line to append: ``(ts, line)``; ``ts`` is the event's time (int ns
#: since the epoch, UTC, the writer's clock: not monotonic), given so that no
#: store parses a line to index it by time (:meth:`LogStore.seq_at`).
Entry = tuple[int, bytes]


class LogStore(Protocol):
    """What the ledger needs from storage (see the module docstring).

    Thread safety: one store object may be used by several threads; a
    thread inside :meth:`locked` excludes the others (and other store
    objects and processes on the same ledger) until its :meth:`append` or
    the end of the block. After ``fork()`` the child never uses the
    parent's lock or connection (it gets its own on first use).
    """

    @property
    def location(self) -> str:
        """Where the ledger is, as messages show it: the directory's path,
        or the URL with its password redacted."""
        ...

    @property
    def readonly(self) -> bool:
        """Opened read-only: :meth:`locked` and every write raise
        ``ReadOnlyLedger``."""
        ...

    @property
    def created(self) -> bool:
        """This open made the ledger (a directory's log, a schema and its
        tables; a new memory log); ``False`` when it was there, whoever
        made it. Of concurrent openers that create, exactly one says so."""
        ...

    def read_after(self, seq: int, limit: int | None = None) -> list[Line]:
        """The complete lines with seq > ``seq``, ascending and gapless, at
        most ``limit`` of them (``None``: all); ``[]`` when there are none.
        A line being written (a file's tail without its newline) is not
        complete and not returned. Page through a long log with ``limit``.

        Raises:
            ValueError: ``seq`` < 0 or ``limit`` < 1.
            CorruptLedger: the log holds fewer than ``seq`` lines (it was
                replaced by a shorter one), naming where.
            LedgerError: the store could not be read (its subclass says
                why: ``LedgerIOError``, ``StoreUnavailable``, ...).
        """
        ...

    def head(self) -> int:
        """The seq of the last complete line, 0 for an empty log."""
        ...

    def locked(self, after: int, timeout: float | None = None) -> ContextManager[list[Line]]:
        """Take the exclusive append lock; the block gets the lines with
        seq > ``after`` read under it (what the caller has not folded yet).
        A file store sets a torn tail aside here, under the lock.

        Args:
            after: the last seq the caller has folded.
            timeout: seconds to wait for the lock; ``None`` for ever; 0 one
                try.

        Raises:
            LockTimeout: not granted within ``timeout``.
            ReadOnlyLedger: opened read-only.
            CorruptLedger: the log holds fewer than ``after`` lines.
            LedgerError: as :meth:`read_after`; the lock is not held.
        """
        ...

    def append(self, entries: Sequence[Entry], first_seq: int) -> None:
        """Append ``entries`` (``(ts, line)`` pairs) as seqs ``first_seq``,
        ``first_seq + 1``, ... and commit: durable as the store promises
        (a file store: written with one ``write``, ``fdatasync`` when opened
        with ``fsync``; a server: committed) when it returns. Ends the
        locked section (the lock is let go): once per :meth:`locked`.

        Raises:
            RuntimeError: outside :meth:`locked` (of this thread), or a
                second time in one.
            ValueError: ``first_seq`` is not the head seen under the lock + 1,
                ``entries`` is empty, or a line holds a newline (nothing is
                written).
            LedgerIOError: a file store's OS refused (disk full: nothing,
                or only whole lines, ``lines_kept`` of them, were written).
            NotRecorded: nothing was recorded (a server's connection broke);
                decide again under a new lock.
            InDoubt: whether it was recorded is unknown: read the log again
                before acting.
        """
        ...

    def wait(self, after: int, timeout: float | None = None) -> int:
        """Wait until the log has a line with seq > ``after``, at most
        ``timeout`` seconds (``None``: for ever). Returns the head (``<=
        after`` when the time ran out). A hint for followers; the lines
        themselves are read with :meth:`read_after`."""
        ...

    def seq_at(self, ts: int) -> int:
        """The last seq before the first line whose ``ts`` is later than
        ``ts`` (int ns, UTC): the log "as of" that time, 0 when the first
        line is later, the head when none is. (Writers' clocks may step
        back, so a later line may carry an earlier time: the first later
        line ends the answer, whatever follows it.)"""
        ...

    def appended_ago(self, seqs: Iterable[int]) -> dict[int, int] | None:
        """How long ago each line of ``seqs`` was appended, on the store's
        own clock: ``{seq: ns}`` (int nanoseconds; one read of that clock
        for all of them, so the ages of many holders' renewals cost one
        round trip). A seq left out is unknown (no such line, or a line
        whose time the store did not record). ``None``: the store has no
        clock of its own (a directory, memory: the writers' clocks are all
        there is, and leases are judged on the boot-time clock of the host
        that renewed them; ``scopeledger._lease``). The PostgreSQL store
        answers on the server's clock.

        Raises:
            ValueError: (a store with a clock) a seq is not an int >= 1.
            LedgerError: as :meth:`read_after`.
        """
        ...

    # -- snapshots: named by seq; headers as the interface sees them ---------

    def snapshot_seqs(self) -> list[int]:
        """The seqs of the stored snapshots, ascending (whatever their
        content: reading one may still fail)."""
        ...

    def snapshot_read(self, seq: int) -> tuple[dict[str, Any], bytes]:
        """The snapshot at ``seq``: ``(header, body)``. ``header`` names
        seqs only (``format``, ``seq``, ``last_hash``, ``ts``,
        ``checksum``; a store's own keys, such as a file's byte offsets,
        are not in it); ``body`` is the state's JSON bytes as written.

        Raises:
            SnapshotInvalid: missing, unreadable, malformed, or not matching
                the log (no line ``seq``, or its hash is not the header's
                ``last_hash``); it names the snapshot and why.
        """
        ...

    def snapshot_write(self, header: dict[str, Any], body: bytes) -> None:
        """Store a snapshot atomically (all or nothing): ``header`` as
        :meth:`snapshot_read` gives it back (``header["seq"]`` names it and
        must be a line of the log), ``body`` the state's JSON bytes. Never
        durable ahead of the log it describes. One at that seq describing
        the same line is replaced; one describing another history (the log
        lost its tail and went on) is kept aside, never overwritten.

        Raises:
            ReadOnlyLedger: opened read-only.
            ValueError: ``header["seq"]`` is not a line of the log.
            LedgerError: the store refused (disk full, ...): no snapshot.
        """
        ...

    def snapshot_delete(self, seq: int) -> None:
        """Remove the snapshot at ``seq`` (retention); none there is no
        error. Raises ``LedgerError`` when the store refuses."""
        ...

    def tickets(self) -> "Tickets | None":
        """The waiters' queue of this ledger (:class:`Tickets`; the same
        object on every call), or ``None`` for a store that keeps none (its
        waiters are not ordered among themselves). Cheap: nothing is made
        or read before a waiter looks at it."""
        ...

    def close(self) -> None:
        """Let go of descriptors and connections (the queue's too); idempotent."""
        ...


# -- the waiters' queue -------------------------------------------------------

#: A waiter looks again at least this often, in seconds, whatever woke it or
#: did not: what no wake-up shows (a holder in another PID namespace that
#: died, a clock, a waiter ahead of it whose death makes no event).
RECHECK_SECONDS = 1.0

#: A ticket as :meth:`Tickets.earlier` lists it: ``(number, key, handle)``:
#: its number; a key naming it while it exists (two tickets that exist at
#: once never share one: what a reader caches its parsed request under); and
#: what :meth:`Tickets.read` and :meth:`Tickets.alive` take.
Queued = tuple[int, Hashable, Any]


class Ticket(Protocol):
    """A waiter's place in the queue (made by :meth:`Tickets.join`)."""

    #: Its number: numbers grow in the order waiters joined, while the
    #: ticket lives (``int`` >= 1).
    number: int


class Wakeup(Protocol):
    """What wakes a waiter (:meth:`Tickets.watch`): descriptors to poll and
    what happened once they are readable. One waiter's, one thread at a
    time."""

    #: The longest a waiter sleeps between two looks, seconds (shorter than
    #: :data:`RECHECK_SECONDS` where nothing can wake it and it polls).
    period: float

    def fds(self, log_too: bool) -> list[int]:
        """Descriptors that turn readable when something may have changed:
        a ticket leaving the queue (or its waiter dying, where that is
        seen), and, with ``log_too``, the log growing."""
        ...

    def changes(self) -> tuple[bool, list[int] | None]:
        """What happened since the last call, without blocking: whether the
        log grew, and the numbers of the tickets that left (or whose
        waiters died) ``None`` when that is not known (events were lost,
        the link broke): the waiter looks again. Raises nothing."""
        ...

    def follow(self, log_too: bool, behind: int | None) -> bool:
        """Be woken from now on by what can let the waiter on: the log
        growing (``log_too``: holders are in the way) and ticket ``behind``
        leaving (``None``: no ticket); a source that is woken by every
        change anyway does nothing. Called in the waiter's thread after each
        look (may block: a round trip on a server). Returns whether what
        wakes it changed: the waiter then looks again before it sleeps (a
        change between its look and now would wake nobody). Raises nothing
        (a broken link: ``True``, and the ticket is lost)."""
        ...

    def close(self) -> None:
        """Let go of what it holds; idempotent."""
        ...


class Tickets(Protocol):
    """The waiters' queue of one ledger: first come, first served
    (``scopeledger._wait``'s docstring says how waiters use it). A ticket
    holds a request's bytes (opaque here) and stays alive while its waiter
    holds it: a lock that goes with the waiter's process (a file lock) or
    connection (a server's advisory lock), so the ticket of a waiter that
    died is found dead and removed by whoever looks at it.

    Thread safety: one object may be used by several threads; each ticket,
    and each :class:`Wakeup`, by one thread at a time. After ``fork()`` the
    child neither holds nor gives back its parent's tickets.
    """

    def join(self, request: bytes) -> Ticket | None:
        """Take a ticket behind every ticket taken before, holding
        ``request``; visible to others only once it is held. ``None``: this
        ledger cannot queue its waiters now (said once in the log: waiting
        goes on unordered).

        Raises:
            ReadOnlyLedger: opened read-only.
            LedgerError: the store refused (its subclass says why).
        """
        ...

    def leave(self, ticket: Ticket | None) -> None:
        """Give ``ticket`` back (``None``: nothing), waking the waiter that
        stands behind it: gone at once for this store's own reads; a server
        store may send it without waiting for the answer (``PgTickets``),
        so another store object may list it a moment longer, until the
        server has it (the waiter behind is woken then). Idempotent; raises
        nothing but an interruption (``KeyboardInterrupt``), after which the
        ticket is given back anyway (its lock is let go)."""
        ...

    def lost(self, ticket: Ticket) -> bool:
        """Whether ``ticket`` lost its place (its lock went with a broken
        server connection: others may have removed it). Its waiter leaves
        and joins again, behind everyone who joined meanwhile."""
        ...

    def earlier(self, before: int | None) -> Iterable[Queued]:
        """The tickets numbered below ``before`` (``None``: all), nearest
        first (a list, or read as it is iterated). Dead ones may be among them (:meth:`alive` tells).

        Raises:
            LedgerError: the store could not be read.
        """
        ...

    def read(self, handle: Any) -> bytes | None:
        """The request of a ticket :meth:`earlier` listed; ``None`` when it
        is gone or cannot be read (the reader skips it)."""
        ...

    def alive(self, handle: Any) -> bool:
        """Whether the waiter of a ticket :meth:`earlier` listed still holds
        it; a dead one is removed (waking whoever stands behind it)."""
        ...

    def gone(self, number: int, handle: Any) -> bool:
        """The waiter of ticket ``number`` (listed by :meth:`earlier` and
        found :meth:`alive`) is provably gone: it was a process of this
        host's running kernel and PID namespace that exited. Whether the
        ticket is dead all the same: on a server, where a backend outlives
        its client by moments (until it reads the end of the connection:
        longer when the link keeps the server's side open), it is, and is
        removed, waking whoever stands behind it; on a directory a ticket's
        lock goes with its waiter's descriptors, before its death can be
        seen, so a lock still held is held by a live process: not dead.
        Raises nothing."""
        ...

    def watch(self, ticket: Ticket | None) -> Wakeup | None:
        """What wakes the waiter holding ``ticket`` (``None``: one in no
        queue, following the log); ``None`` when nothing can, and the waiter
        sleeps in :meth:`LogStore.wait`. Give it back with :meth:`done`
        (before or after ``ticket`` leaves the queue)."""
        ...

    def done(self, watch: Wakeup) -> None:
        """``watch`` is not used any more: it stops being woken and is
        closed (on a directory its place on the process's hub; on
        PostgreSQL nothing: the ticket's connection goes with the ticket,
        :meth:`leave`). Raises nothing."""
        ...

    def follower(self) -> Wakeup | None:
        """What wakes a process that follows the log alone for a long while
        (``Ledger.watch_grant``: a holder waiting to learn that its grant
        ended): descriptors that turn readable when the log grows
        (``fds(True)``, ``changes()``), a watch of its own, shared with no
        waiter; the caller closes it (``close()``). ``None`` when
        nothing can wake it (the follower looks every so often).

        Raises:
            LedgerError: the store refused (a server that cannot be reached).
        """
        ...


def line_after(store: LogStore, seq: int) -> bytes | None:
    """The bytes of line ``seq + 1`` of ``store``'s log, ``None`` when the
    log ends at seq ``seq`` (or holds no complete line after it). What
    judges a line that reads as a newer format's
    (:func:`~scopeledger._events.newer_fault`): only the line after it can
    tell it from a damaged one.

    Raises:
        CorruptLedger: the log holds fewer than ``seq`` lines.
        LedgerError, OSError: the store cannot be read.
    """
    got = store.read_after(seq, 1)
    return got[0][1] if got else None


# -- moving a ledger between stores -----------------------------------------

COPY_PAGE = 5000
"""Lines per transaction when copying a log (:func:`copy_log`)."""


def copy_log(src: Any, dst: Any, *, page: int = COPY_PAGE) -> int:
    """Copy the log and snapshots of store ``src`` into the empty store
    ``dst`` (any two stores of the store interface: a directory and a
    PostgreSQL schema, either way), byte for byte: ``dst`` then holds the
    same lines at the same seqs, and the same snapshots (header and body),
    so the hash chain, ``verify``, replay and time travel give the same
    answers. The lines are appended ``page`` at a time (one transaction
    each) and read back and compared. Returns the number of lines copied.

    Raises:
        LedgerNotEmpty: ``dst`` holds events already (nothing is copied).
        LedgerError: someone else appended to ``dst`` during the copy (what
            was copied stays: a prefix of ``src``).
        CorruptLedger: a line of ``src`` has no ``ts`` (what was copied
            before it stays: the ledger's copy, ``copy_ledger``, verifies
            the source first), or ``dst`` read back differs.
        ValueError: a line of ``src`` has no integer ``ts``.
        and whatever either store raises when it cannot be read or written.
    """
    head = dst.head()
    if head != 0:
        raise LedgerNotEmpty(dst.location, head)
    seen = 0
    while True:
        lines = src.read_after(seen, limit=page)
        if not lines:
            break
        entries = []
        for q, line in lines:
            try:
                ts = orjson.loads(line)["ts"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise CorruptLedger(src.location, f"line {q} is not an event line", line=q) from None
            if type(ts) is not int:
                raise ValueError(f"line {q} of {src.location} has ts {ts!r}, not an int")
            entries.append((ts, line))
        with dst.locked(seen) as missed:
            if missed:
                raise LedgerError(f"{dst.location} was appended to during the copy (seq {missed[0][0]} "
                                  f"is not ours); it holds the first {seen} events of {src.location}")
            dst.append(entries, seen + 1)
        if dst.read_after(seen, limit=len(lines)) != lines:
            raise CorruptLedger(dst.location, f"seqs {seen + 1}..{lines[-1][0]} read back differ "
                                              f"from {src.location}'s")
        seen = lines[-1][0]
    # A directory keeps the ledger's id, which its snapshots name: the copy is
    # the same ledger (the source's id; from a store without one, the id its
    # snapshots name, copied from a directory), so that it trusts them.
    adopt = getattr(dst, "adopt_ledger_id", None)
    ident = getattr(src, "ledger_id", None)
    wanted = ident() if ident is not None else None
    if adopt is not None and wanted is not None:
        adopt(wanted)
    for seq in src.snapshot_seqs():
        if seq > seen:
            continue  # a snapshot past the log's end describes nothing copied
        try:
            header, body = src.snapshot_read(seq)
        except SnapshotInvalid:
            continue  # an invalid snapshot is skipped on open too; the copy refolds
        named = header.get(SNAPSHOT_ID_KEY)
        if adopt is not None and wanted is None and isinstance(named, str):
            adopt(named)
            wanted = named
        dst.snapshot_write(header, body)
    return seen
