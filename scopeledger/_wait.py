"""Waiting for a scope: ``register``/``delegate``/``hold`` with ``wait=``
(and :class:`~scopeledger.AsyncLedger`'s forms), built on the ledger's
decisions (:meth:`~scopeledger.Ledger.decide`, as :meth:`Attempt.look` with
the waiter's hook on the verdicts of the holders in its way,
:meth:`Grace.verdict`) and the same hook under the lock, with the grant's
last check there (:class:`Commit`, :class:`Gate`).

**What is waited for.** Only a refusal that may clear by itself: a
:class:`~scopeledger.ScopeConflict` (another holder's write rule in the way)
or a :class:`~scopeledger.DelegationError` naming a sibling
(:func:`waitable`). A rule outside the parent's scope, a taken name or a
parent that is gone are raised at once, as without ``wait``.

**First come, first served: a queue of tickets beside the log.** A waiter
that is refused joins the ledger's queue (its store's, ``LogStore.tickets``:
the interface ``scopeledger._logstore.Tickets``): it takes a ticket holding
its request, numbered after every ticket taken before it, and alive while
its waiter holds it, by a lock that goes with the waiter's process:

- on a ledger directory, a file ``waiters/<number>`` held with ``flock``
  (``scopeledger._filetickets``);
- on PostgreSQL, a row of ``<schema>.waiters`` held with a session-level
  advisory lock on a connection of the waiter's own, which also listens for
  what wakes it (``scopeledger._pgstore``: ``PgTickets``);
- a memory ledger keeps no queue: its waiters are not ordered among
  themselves (each decides again when the log grows).

Before each attempt a waiter reads the tickets before its own, nearest
first; it stands back while one of them is alive and *contends* with it (a rule of one
conflicts with a rule of the other: a write overlapping a write or an exclusive read,
``scopeledger._rules.conflicts``), except
when that earlier waiter is itself kept out by the waiter's own line of
delegation: a holder of that line (the parent or one of its ancestors)
that is not in the earlier waiter's own line holds what it needs
(:func:`kept_out_by`): it cannot be granted before that line lets go, and
standing back would deadlock. A delegation is never refused by its own
parent or the parent's ancestors, so siblings of one parent, and
delegations from different levels of one line, stand back for each other
as top-level waiters do. Only the waiter at the head (no earlier live
waiter to stand back for) decides, so only it reclaims a dead holder in
the way, in the transaction that grants it. A ticket whose waiter died (its lock free) is skipped and
removed by whoever finds it. A waiter that is granted, times out or is
cancelled gives its ticket back. A ticket whose waiter is a process of
this host (its request records the pid, boot id and PID namespace) found
gone is dead too where its store says so (``Tickets.gone``: on PostgreSQL,
whose backend outlives its client by moments, holding the ticket's lock;
not on a directory, whose lock goes before the death can be seen). A
waiter that stands back is woken only by the ticket it stands behind (the
nearest) leaving, or by its waiter's death (a pidfd, for a process of this
host), so a grant wakes the next waiter, not the whole queue. A waiter
whose ticket lost its place (on
PostgreSQL, its connection broke and its lock with it: others may have
removed the ticket) joins again, at the end of the queue.

The queue orders waiters among themselves. A request without ``wait`` does
not look at it (the hot path stays as it was) and may be granted ahead of
waiters, as a non-blocking ``flock`` may. Nothing of the queue is in the
log: a waiter records at most its first refusal (as any refused request),
and its grant. Strict order has the usual price: a waiter for a large
scope holds back later waiters for parts of it until it is granted; a
process that waits while it holds what an earlier waiter needs (outside its
own line of delegation) waits until one of them times out. And a waiter
that is stopped (SIGSTOP, Ctrl-Z, a frozen container or cgroup) keeps its
ticket alive, by design (its lock is held by a process that exists): at
the head of the queue it holds back every later waiter whose scope contends
with its own until it dies, or is continued and then is granted or finds
its time run out. The waiters it holds
back say whom they wait behind, with its pid (the ``waits ... for its
scope`` log line, and a :class:`~scopeledger.WaitTimeout`'s message:
``waiting behind 'NAME' (pid N), which asked first ...``). Nothing else
waits for it: it holds no lock of the ledger's, requests without ``wait``
are granted past it, and waiters for other scopes do not stand back.

**Waking.** A waiter sleeps until the log grows, a ticket leaves the queue
(or its waiter dies, where that makes an event), or the process of a holder
the refusal names exits (a pidfd, for holders on this host and in this PID
namespace, but for the waiter's own process, which cannot exit while it
waits: no descriptor is spent on it), or of the waiter it stands behind
(the same), or the lease of
a holder the refusal names may be reclaimed (its ttl + grace since its last
renewal, on the boot-time clock of the boot that renewed it:
:func:`lease_until`; a fresh tester's finding: it waited for its next
periodic look, up to a second late). The refusal's holders, not every
holder in the way: while they hold, every look is refused whatever the
others do; once they let go, the look names the next (:func:`blocked_by`).
And at least
every :data:`RECHECK_SECONDS`, for what none of these shows (a holder in
another PID namespace that died, a waiter of another host or PID namespace
killed on a server, a clock). On a directory: inotify (``scopeledger._filetickets``;
on a network file system or without inotify, a look every 10 ms); on
PostgreSQL: LISTEN on the ticket's connection, to the log's appends while
holders are in the way and to the leaving of the ticket it stands behind
while it stands behind one, not to every change (so that a grant wakes one
waiter, not the whole queue: :meth:`Watch.follow`, after each look); on a
store without a queue, ``LogStore.wait``.

**Standing back for an exited holder's parent.** A holder whose process has
exited but is not reaped yet (a zombie) is dead, and a request without
``wait`` (or ``reclaim``) reclaims it at once. But ``ledger run`` and
``spawn`` learn their child's exit without reaping it, record the release
with its exit status, and only then reap it; a waiter woken by the exit (the
pidfd above) would otherwise reclaim the holder in that moment, and the log
would keep a death instead of a release. So a waiter that finds in its way a
zombie proven the holder's process (its recorded start) whose parent lives
(its parent's pid above 1, not itself a zombie: ``_process.zombie_parent``)
stands back (:class:`Grace`: ``Grace.verdict``, one hook on the verdicts of the
ledger's decision, in each look, :meth:`Attempt.look`, and under the lock,
:class:`Commit`) for at most
:data:`ZOMBIE_GRACE_SECONDS`, counted from when it first found that process
exited, woken by the log's changes (never by that process's pidfd, which
stays readable) or the grace's end; its notice and a ``WaitTimeout`` say so
(``'NAME' has exited; waiting up to 1 s for its parent (pid N) to record its
release``). Past the grace it reclaims the holder as before (reason
``zombie``, with the exit status where it can read it). A waiter whose own
deadline comes before the grace would end takes no grace: it reclaims at
once, as a request without ``wait`` does (it would otherwise time out where
``wait=0`` is granted). The grace is counted by each waiter from its own
first look, so a zombie whose parent never reaps it costs each new waiter
up to a second; a wrapper that is PID 1 of its PID namespace (a container's
entry point) is seen, from inside, as init (parent pid 1), and gets none.

**Telling the caller.** Once a waiter is in the queue it says so, once: an
``INFO`` record (``holder 'NAME' waits ... for its scope: REASON``), or,
when the caller gave ``on_wait``, ``on_wait(reason, refusal)`` instead
(``ledger run`` prints its own notice so). REASON names every holder in
the way: the refusal's conflict, then ``; also in the way: 'A' holding
write /r/a/**, ...`` (``Ledger.find_conflicts``, at most
:data:`MORE_IN_THE_WAY` more, looked for only where they are shown: at the
first refusal, for the notice, and once the time runs out, for the
``WaitTimeout``, not on every refused look: :func:`name_all`;
``WaitTimeout.in_the_way`` has all their chains); behind an
earlier waiter, the waiter, and the holders in the way at the first look
(``; in the way now: ...``: once, for the notice; the later looks behind
it decide nothing, so a timeout behind it names the waiter alone).

**Through an outage.** A step that raises ``StoreUnavailable`` (a server
that cannot be reached: a restart, a broken link; by its contract nothing
was recorded) is tried again after a pause (:class:`Outage`: 0.05 s,
doubling to 1 s, within 20 % at random), with one warning per outage
naming the error; a ticket that lost its place meanwhile (on PostgreSQL
its connection broke with the server, and its lock with it) joins again,
at the end of the queue, once the server answers: a restart loses every
waiter's place, and they line up again in the order they come back (each
says so in an ``INFO`` record: the outage's warning is the one warning,
also when the ticket's loss is found out only after the server answered
again, :func:`take_place`). If the
deadline passes while the store still cannot be reached, the waiter raises
that ``StoreUnavailable`` (the cause), not a ``WaitTimeout``: it could not
tell whether the scope was free. ``InDoubt`` (an append whose outcome the
break left unknown) is not a ``StoreUnavailable`` and is raised at once.
The deadline is looked at between steps: a step that hangs (a connection
to a host that drops packets: libpq's ``connect_timeout``, none by
default) can outlast it.

**A timed-out or cancelled wait is never granted afterwards.** The last
check before a waiter's grant is written runs under the ledger's lock
(:meth:`Gate.commit`; on PostgreSQL perhaps in ``Ledger``'s speculative
try, whose append the server makes only while the lock is free): past the
deadline, or once cancelled, nothing is written. A grant decided before the cancellation is returned by the call
that was cancelled; its canceller releases it (AsyncLedger does). A
blocking call interrupted (a signal handler's exception) after its grant
was written withdraws it (``Ledger._register_waiting``: the attempt's
``written``), and a ticket is put in the waiter's place by the step that
takes it, so that an exception at any point gives it back
(``tests/test_signals_forks.py``).

Sources: the ticket queue is the classic ticket lock / the "lock" recipe of
ZooKeeper and etcd (a waiter queues by a sequence number and watches its
predecessors), with a file lock, or a server's advisory lock, standing for
the session.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
import weakref
from typing import Any, Callable, Generator, Protocol

import orjson

from ._arguments import check_token, check_wait
from ._errors import (DelegationError, LedgerError, Refused, ScopeConflict, StoreUnavailable, UnknownHolder,
                      WaitTimeout, format_chain)
from ._fold import Allocation
from ._logstore import RECHECK_SECONDS, Ticket, Tickets, Wakeup
from ._identity import Liveness, Verdict, lease_grace_ns
from ._process import boot_id, boottime_ns, pid_namespace, ready, zombie_parent
from ._rules import Permission, ScopeRule, check_name, conflicts, rule_from_log
from ._imports import first_use

log = logging.getLogger("scopeledger")

#: A waiter that cannot reach its store (``StoreUnavailable``) looks again
#: after this many seconds, doubling each time up to
#: :data:`OUTAGE_LONGEST_PAUSE` (:class:`Outage`).
OUTAGE_FIRST_PAUSE = 0.05
OUTAGE_LONGEST_PAUSE = 1.0

#: The longest a waiter stands back for a holder in its way whose process
#: has exited but whose parent lives (a zombie not reaped yet: ``ledger
#: run``'s wrapper, a ``spawn``), so that the parent records the release
#: with the exit status, in seconds, counted from when this waiter first
#: found that process exited (:class:`Grace`). Past it the waiter reclaims
#: the holder (reason ``zombie``, with its exit status where it can read
#: it), as a request without ``wait`` and ``reclaim`` do at once.
ZOMBIE_GRACE_SECONDS = 1.0


def waitable(err: BaseException) -> bool:
    """Whether a refusal may clear by waiting: a conflict with another holder
    (:class:`ScopeConflict`), or a :class:`DelegationError` naming a sibling.
    A rule outside the parent's scope, a taken name or a gone parent never
    clears."""
    if isinstance(err, ScopeConflict):
        return True
    return isinstance(err, DelegationError) and err.sibling is not None


class GaveUp(Exception):
    """Raised by :meth:`Gate.commit` under the lock: the waiter's deadline
    passed or it was cancelled; nothing is written."""


class Grace:
    """A waiter's stand-back for holders in its way whose process has
    exited while its parent lives (see "Standing back for an exited
    holder's parent" in the module docstring): each holder (name, token)
    with the time this waiter first found its process exited (``seen``),
    and those it stands back for in the current look (``standing``:
    name -> (pid, parent's pid, end of the grace, ``time.monotonic``))."""

    __slots__ = ("seen", "standing", "deadline")

    def __init__(self, deadline: float | None = None) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        self.standing: dict[str, tuple[int, int, float]] = {}
        #: The waiter's deadline (``time.monotonic``; ``None``: none): a
        #: grace that would end after it is not taken (the waiter reclaims
        #: at once, as a request without ``wait`` does, instead of timing out).
        self.deadline = deadline

    def verdict(self, alloc: Allocation, verdict: Verdict) -> Verdict:
        """The verdict the waiter decides by for holder ``alloc`` in its
        way, whose liveness is ``verdict``: ``verdict`` itself, except for
        a zombie proven its process (its recorded start) whose parent
        lives (``_process.zombie_parent``) within
        :data:`ZOMBIE_GRACE_SECONDS` of this waiter first finding it
        exited: then ``UNKNOWN`` (kept), noted in ``standing``."""
        if verdict.liveness is not Liveness.ZOMBIE or alloc.process.ticks is None:
            return verdict
        now = time.monotonic()
        ends = self.seen.setdefault((alloc.name, alloc.token), now) + ZOMBIE_GRACE_SECONDS
        if now >= ends or (self.deadline is not None and self.deadline <= ends):
            return verdict  # (past the grace, or a wait too short for it: reclaimed now)
        ppid = zombie_parent(alloc.pid, alloc.process.ticks)
        if ppid is None:
            return verdict
        self.standing[alloc.name] = (alloc.pid, ppid, ends)
        return Verdict(Liveness.UNKNOWN, grace_words(alloc.name, ppid))

    def blocked(self, out: "Blocked") -> "Blocked":
        """``out`` as the waiter is blocked when it stood back for an
        exited holder in this look: said so, the exited process's pid not
        watched (its pidfd stays readable: it would wake the waiter at
        once, again and again), and the sleep bounded by the grace's end;
        ``out`` itself otherwise."""
        if not self.standing:
            return out
        name, (pid, ppid, ends) = next(iter(self.standing.items()))
        gone = {p for p, _, _ in self.standing.values()}
        return Blocked(None, out.in_the_way or tuple(self.standing), grace_words(name, ppid),
                       tuple(p for p in out.pids if p not in gone), None,
                       min(e for _, _, e in self.standing.values()), out.lease_until,
                       out.unnamed if out.in_the_way else None)


def grace_words(name: str, ppid: int) -> str:
    """What a waiter standing back for exited holder ``name`` waits for."""
    return (f"'{name}' has exited; waiting up to {ZOMBIE_GRACE_SECONDS:g} s for its parent (pid {ppid}) "
            "to record its release")


class Attempt(Protocol):
    """What a waiter tries each time it may be granted, made by the ledger
    (``_ledger.register_attempt``/``delegate_attempt``): ``attempt(commit)``
    asks for the grant (``commit``: the waiter's :class:`Commit`, its last
    word under the lock), ``attempt.look(req, stand_back)`` decides the
    request now without the lock, each holder in the way judged by
    ``stand_back(holder, verdict)`` as the grant under the lock will judge
    it (``Ledger.decide`` with the waiter's grace)."""

    def __call__(self, commit: Callable[[], None]) -> Allocation:
        ...

    def look(self, req: "Request", stand_back: Callable[[Allocation, Verdict], Verdict]) -> Any:
        ...


class Commit:
    """What an attempt is given (``attempt(commit)``): ``commit()`` is the
    waiter's last word under the lock (``check``: :meth:`Gate.commit`, or
    :meth:`Gate.commit_first`), ``stand_back(alloc, verdict)`` the
    verdict by which the decision under the lock judges a holder in the
    way (:meth:`Grace.verdict`; ``None``: its verdict, as for a request
    without ``wait``), and ``unwritten()`` what ``Ledger`` calls when a
    commit it made wrote nothing for certain (:meth:`Gate.unwritten`)."""

    __slots__ = ("check", "stand_back", "unwritten")

    def __init__(self, check: Callable[[], None], stand_back: Callable[[Allocation, Verdict], Verdict] | None,
                 unwritten: Callable[[], None]) -> None:
        self.check = check
        self.stand_back = stand_back
        self.unwritten = unwritten

    def __call__(self) -> None:
        self.check()


class Gate:
    """The waiter's last word on a grant, and its cancellation, made
    atomic with each other (a thread lock): either :meth:`commit` runs
    first (the grant is written, and the call that was cancelled returns
    it: the canceller must release it) or :meth:`cancel` does (no grant).
    ``deadline``: ``time.monotonic`` seconds, ``None`` for none. ``grace``:
    the waiter's :class:`Grace`.

    It also tells its canceller whether the call may still be granted
    (``AsyncLedger``, whose canceller does not wait for a thread that cannot
    grant): :meth:`cancel` returns ``True`` when no :meth:`commit` (or
    :meth:`commit_first`) was entered since :meth:`arm` (the thread has not
    yet got as far as the ledger's lock and its last word: it never grants
    now), ``False`` when one was (it may have granted: the caller waits for
    it and undoes). Entering is recorded in the commit's own check and the
    cancellation before its read, each under the gate's lock: a ``True`` is
    never wrong (a ``False`` may be: a commit entered just after the
    cancellation refuses; waiting for it is then only slower)."""

    __slots__ = ("_lock", "deadline", "cancelled", "grace", "entered")

    def __init__(self, deadline: float | None) -> None:
        self._lock = threading.Lock()
        self.deadline = deadline
        self.cancelled = False
        self.grace = Grace(deadline)
        #: A commit was entered since :meth:`arm` (it may have granted).
        self.entered = False

    def arm(self) -> None:
        """A new step begins (the last one ended without a grant)."""
        with self._lock:
            self.entered = False

    def commit(self) -> None:
        """Called just before the grant is built: under the ledger's lock,
        or on PostgreSQL in ``Ledger``'s speculative one-round-trip try,
        whose append the server makes only if the lock is free and the log
        has not moved on (a try that appended nothing calls
        :meth:`unwritten`, and the locked path that follows commits again).

        Raises:
            GaveUp: cancelled, or past the deadline (``time.monotonic``).
        """
        with self._lock:
            if self.cancelled:
                raise GaveUp("cancelled")
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise GaveUp("deadline")
            self.entered = True

    def commit_first(self) -> None:
        """:meth:`commit` for the first attempt, made as a request without
        ``wait`` would be: only a cancellation stops it. A wait, however
        short, is at least that one try (so ``wait=1e-9`` on a free scope is
        granted, as ``wait=0`` is, whatever the machine's speed).

        Raises:
            GaveUp: cancelled.
        """
        with self._lock:
            if self.cancelled:
                raise GaveUp("cancelled")
            self.entered = True

    def unwritten(self) -> None:
        """The commit entered last wrote nothing, for certain (a speculative
        try found the ledger's lock taken, or the log moved on: nothing was
        appended): as if it had not been entered, so that a cancellation
        while the thread then waits for the lock does not wait for it (the
        commit it makes once it holds the lock refuses). Called by the
        thread that entered it, before it commits again."""
        with self._lock:
            self.entered = False

    def cancel(self) -> bool:
        """No grant after this (one that passed :meth:`commit` before is
        the cancelled call's result). Returns whether no commit was entered
        since :meth:`arm` (no grant, ever: see the class docstring)."""
        with self._lock:
            self.cancelled = True
            return not self.entered


class Request:
    """A waiting request: the holder name, its rules as the ledger records
    them, the parent (a delegation) and its token, the seconds to wait.
    (This module's values are plain classes, not attrs ones: making five
    attrs classes cost a waiting ``ledger run`` 1.7 ms at start-up.)"""

    __slots__ = ("name", "rules", "parent", "parent_token", "wait")

    def __init__(self, name: str, rules: tuple[ScopeRule, ...], parent: str | None, parent_token: int | None,
                 wait: float) -> None:
        self.name = name
        self.rules = rules
        self.parent = parent
        self.parent_token = parent_token
        self.wait = wait

    @classmethod
    def of(cls, ledger: Any, name: Any, rules: Any, parent: Any, parent_token: Any, wait: Any) -> "Request":
        """Checked as ``register``/``delegate`` check them (nothing recorded).

        Raises:
            InvalidHolderName, InvalidScope, TypeError, ValueError.
        """
        wait = check_wait(wait)
        name = check_name(name, None if parent is None else "child")
        if parent is not None:
            parent = check_name(parent, "parent")
        parent_token = check_token(parent_token, allow_none=True, what="parent_token")
        return cls(name, ledger.canonical_rules(rules), parent, parent_token, wait)

    def writes(self) -> list[ScopeRule]:
        """The rules that exclude others: writes and exclusive reads."""
        return [r for r in self.rules if r.permission is not Permission.READ]

    def to_json(self) -> bytes:
        """The ticket's request: with the waiter's pid, boot id and PID
        namespace (``boot``, ``pidns``: so that a waiter behind it can tell
        whether that pid is a process it can watch, :func:`behind`)."""
        return orjson.dumps({"name": self.name, "parent": self.parent, "pid": os.getpid(),
                             "boot": boot_id(), "pidns": pid_namespace(),
                             "rules": [r.to_json() for r in self.rules]})


class Waiter:
    """A ticket read from the queue: its number, holder name, pid, write
    rules, whether its waiter is a process of this boot and PID namespace
    (``local``: its pid names it here; both known), and the holder it
    delegates from (``parent``; ``None``: a register)."""

    __slots__ = ("number", "name", "pid", "writes", "local", "parent")

    def __init__(self, number: int, name: str, pid: int, writes: tuple[ScopeRule, ...],
                 local: bool = False, parent: str | None = None) -> None:
        self.number = number
        self.name = name
        self.pid = pid
        self.writes = writes
        self.local = local
        self.parent = parent


def exited(pid: int) -> bool:
    """Whether process ``pid`` (of this boot and PID namespace) is provably
    gone: no such process, or one that exited (a zombie: its descriptors,
    and with them its connections, closed). ``False`` when it cannot be
    told (no pidfds here) or the pid is taken (by it, or by a process that
    reused it).

    A pidfd is opened and polled at once, never kept."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (OSError, AttributeError):
        return False
    try:
        return bool(ready([fd], 0))
    finally:
        os.close(fd)


def _contend(a: tuple[ScopeRule, ...] | list[ScopeRule], b: tuple[ScopeRule, ...] | list[ScopeRule]) -> bool:
    return any(conflicts(x, y) for x in a for y in b)


class Queue:
    """The waiters' queue of one ledger object, over its store's tickets
    (``tickets``: ``LogStore.tickets()``; ``None``: a store without a queue,
    whose waiters are not ordered among themselves and never stand back),
    with the requests read from it, parsed once (see the module docstring)."""

    def __init__(self, tickets: Tickets | None) -> None:
        self.tickets = tickets
        self._cache: dict[Any, Waiter | None] = {}

    def join(self, req: Request) -> Ticket | None:
        """A ticket for ``req`` (``None``: no queue here)."""
        return None if self.tickets is None else self.tickets.join(req.to_json())

    def leave(self, ticket: Ticket | None) -> None:
        """Give ``ticket`` back (``None``: nothing; twice: once)."""
        if ticket is not None and self.tickets is not None:
            self.tickets.leave(ticket)

    def lost(self, ticket: Ticket | None) -> bool:
        """Whether ``ticket`` lost its place (see ``Tickets.lost``)."""
        return ticket is not None and self.tickets is not None and self.tickets.lost(ticket)

    def watch(self, ticket: Ticket | None) -> Wakeup | None:
        return None if self.tickets is None else self.tickets.watch(ticket)

    def done(self, source: Wakeup | None) -> None:
        if source is not None and self.tickets is not None:
            self.tickets.done(source)

    def _read(self, tickets: Tickets, number: int, key: Any, handle: Any) -> Waiter | None:
        if key in self._cache:
            return self._cache[key]
        data = tickets.read(handle)
        w: Waiter | None = None
        if data is not None:
            try:
                doc = orjson.loads(data)
                rules = tuple(r for r in (rule_from_log(x) for x in doc["rules"])
                              if r.permission is not Permission.READ)
                boot, pidns, parent = doc.get("boot"), doc.get("pidns"), doc.get("parent")
                w = Waiter(number, str(doc["name"]), int(doc["pid"]), rules,
                           boot is not None and pidns is not None and boot == boot_id()
                           and pidns == pid_namespace(), None if parent is None else str(parent))
            except (ValueError, KeyError, TypeError):
                pass  # damaged: ignored
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = w
        return w

    def ahead(self, mine: int | None, req: Request,
              line_of: Callable[[str | None], list[tuple[str, list[ScopeRule]]]]) -> list[Waiter]:
        """The nearest live waiter before ticket ``mine`` (``None``: any)
        that ``req`` must stand back for (see the module docstring), in a
        list (empty: none). The nearest, not the first: each waiter then
        watches the one just before it, and a grant wakes one waiter, not
        the whole queue.
        ``line_of(parent)``: the live holders of a line of delegation
        (``parent`` and its ancestors; ``[]`` for ``None``), each with its
        write rules (:func:`line_holders`), asked only when needed."""
        tickets = self.tickets
        if tickets is None:
            return []
        writes = req.writes()
        if not writes:
            return []
        line: list[tuple[str, list[ScopeRule]]] | None = None
        for number, key, handle in tickets.earlier(mine):
            w = self._read(tickets, number, key, handle)
            if w is None or not _contend(w.writes, writes):
                continue
            if req.parent is not None:
                if line is None:
                    line = line_of(req.parent)
                if kept_out_by(w, line, line_of):
                    continue  # it waits for this waiter's own line: standing back would deadlock
            if not tickets.alive(handle):
                continue
            if w.local and exited(w.pid) and tickets.gone(number, handle):
                continue  # its waiter is gone, though its lock may be held yet (a server's backend)
            return [w]  # one is enough to stand back for (each look may cost a lock's test)
        return []


class Blocked:
    """Why a waiter is still waiting: the refusal it met (or ``None``,
    behind an earlier waiter: ``behind`` is its ticket number; or standing
    back for an exited holder's parent: ``until``, the grace's end,
    ``time.monotonic``), who is in the way, and pids to watch.
    ``unnamed``: the refusal whose other holders in the way are not looked
    for yet (a look names only the refusal's: :func:`blocked_by`;
    :func:`name_all` names the rest where it is shown); ``None``: named."""

    __slots__ = ("refusal", "in_the_way", "reason", "pids", "behind", "until", "lease_until", "unnamed")

    def __init__(self, refusal: Refused | None, in_the_way: tuple[str, ...], reason: str, pids: tuple[int, ...],
                 behind: int | None = None, until: float | None = None, lease_until: float | None = None,
                 unnamed: Refused | None = None) -> None:
        self.refusal = refusal
        self.in_the_way = in_the_way
        self.reason = reason
        self.pids = pids
        self.behind = behind
        self.until = until
        #: When the earliest lease of the holders in the way may be reclaimed
        #: (``time.monotonic``; ``None``: none known): the sleep's bound.
        self.lease_until = lease_until
        self.unnamed = unnamed

    @property
    def by_holders(self) -> bool:
        """Whether holders are in the way (then the log's changes wake the
        waiter), not an earlier waiter."""
        return self.refusal is not None or self.until is not None


def line_holders(ledger: Any, parent: str | None) -> list[tuple[str, list[ScopeRule]]]:
    """``parent`` and its ancestors (live now), nearest first, each with its
    rules that exclude others: writes and exclusive reads (``[]`` for
    ``None``)."""
    out: list[tuple[str, list[ScopeRule]]] = []
    seen = set()
    while parent is not None and parent not in seen:
        seen.add(parent)
        try:
            a = ledger.holder(parent)
        except UnknownHolder:
            break
        out.append((parent, [r for r in a.rules if r.permission is not Permission.READ]))
        parent = a.parent
    return out


def kept_out_by(w: Waiter, line: list[tuple[str, list[ScopeRule]]],
                line_of: Callable[[str | None], list[tuple[str, list[ScopeRule]]]]) -> bool:
    """Whether the earlier waiter ``w`` is kept out by a holder of ``line``
    (a requester's own line of delegation, :func:`line_holders`): one whose
    rules contend with ``w``'s and that is not in ``w``'s own line (a
    delegation is never refused by its parent or the parent's ancestors,
    ``_fold.check_request``: it is granted out of their scope). Such a ``w``
    cannot be granted before that line lets go, so the requester must not
    stand back for it (a deadlock). Siblings of one parent are not kept
    out by it (a fresh tester's finding: each skipped every earlier
    sibling, the parent's scope overlapping theirs, and siblings were
    served in whatever order they looked)."""
    theirs: set[str] | None = None
    for name, rules in line:
        if not _contend(w.writes, rules):
            continue
        if theirs is None:
            theirs = {n for n, _ in line_of(w.parent)}
        if name not in theirs:
            return True
    return False


def _in_the_way(err: Refused) -> tuple[str, ...]:
    if isinstance(err, ScopeConflict):
        return tuple(err.chain)
    if isinstance(err, DelegationError) and err.sibling is not None:
        return tuple(err.chain[err.chain.index(err.sibling):])
    return ()


def _holders(ledger: Any, names: tuple[str, ...]) -> list[Allocation]:
    """The live holders among ``names`` (one look each; a name gone since is left out)."""
    out = []
    for n in names:
        try:
            out.append(ledger.holder(n))
        except UnknownHolder:
            continue
    return out


def _local_pids(holders: list[Allocation], me: Any) -> tuple[int, ...]:
    """The pids of ``holders`` that name a process of this boot and PID namespace."""
    return tuple(a.process.pid for a in holders
                 if a.process.boot == me.boot and a.process.pidns == me.pidns and a.process.boot is not None)


#: At most this many conflicts are looked for beyond the refusal's, for the
#: waiting notice and ``WaitTimeout.in_the_way`` (a request over thousands of
#: holders names the first ones: the walk stops there).
MORE_IN_THE_WAY = 32


def _others(ledger: Any, req: "Request", names: tuple[str, ...]) -> list[tuple[tuple[str, ...], ScopeRule]]:
    """The holders in ``req``'s way beside the refusal's (``names``): each
    conflict's chain (below ``req``'s parent, for a delegation: the
    sibling's subtree, as the refusal names it) and the rule it holds, the
    holders already named left out; at most :data:`MORE_IN_THE_WAY`
    conflicts looked at (asked only where the reason is shown: :func:`name_all`,
    :func:`first_attempt`)."""
    out = []
    seen = set(names[-1:])
    for chain, theirs, _mine in ledger.find_conflicts(req.rules, parent=req.parent, limit=MORE_IN_THE_WAY):
        if req.parent is not None and req.parent in chain:
            chain = chain[chain.index(req.parent) + 1:]
        if chain and chain[-1] not in seen:
            seen.add(chain[-1])
            out.append((chain, theirs))
    return out


def _held_text(held: list[tuple[tuple[str, ...], ScopeRule]]) -> str:
    """``'A' holding write /r/a/**, 'B' (delegated from 'P') holding ...``."""
    return ", ".join(f"{format_chain(chain)} holding {rule.permission.value} {rule.display()}{rule.identity_text()}"
                     for chain, rule in held)


#: A lease found past its end by this process's clock whose holder was
#: still in the way (it ran out between the decision and the look at the
#: clock, or a server appended its renewal a moment after its holder read
#: its clock) is looked at again this often, for at most
#: :data:`LEASE_LATE_SECONDS` past that end; then only the periodic look.
LEASE_RETRY_SECONDS = 0.01
LEASE_LATE_SECONDS = 1.0


def lease_until(holders: list[Allocation], me: Any) -> float | None:
    """When the first lease of ``holders`` (in a waiter's way) may be
    reclaimed, ``time.monotonic`` seconds, by the rule of ``_lease``
    (ttl + grace after its last renewal, ``CLOCK_BOOTTIME`` of the boot
    that renewed it); ``None`` when none of them has a lease this process
    can time: one renewed on another host or boot (on a directory it is
    never reclaimed from here; on PostgreSQL, judged by the server's clock,
    the periodic look stands in). Early rather than late: on PostgreSQL the
    server appends a renewal after its holder read its clock, so the
    server's end comes a moment after this one (the waiter then looks
    again every :data:`LEASE_RETRY_SECONDS`, for :data:`LEASE_LATE_SECONDS`)."""
    best: float | None = None
    now_boot: int | None = None
    for a in holders:
        lease = a.lease
        if lease is None or lease.boot_ns is None or lease.boot is None or lease.boot != me.boot:
            continue
        if lease.host is not None and me.host is not None and lease.host != me.host:
            continue
        if now_boot is None:
            now_boot = boottime_ns()
            now = time.monotonic()
            if now_boot is None:
                return None
        left = (lease.boot_ns + lease.ttl_ns + lease_grace_ns(lease.ttl_ns) - now_boot) / 1e9
        if left < -LEASE_LATE_SECONDS:
            continue
        at = now + max(left + 0.001, LEASE_RETRY_SECONDS)  # (expired only past its end: a moment after)
        best = at if best is None else min(best, at)
    return best


def blocked_by(ledger: Any, err: Refused, me: Any) -> Blocked:
    """Why a waiting request refused by ``err`` waits, as a look needs it:
    the refusal and the holders it names (the first conflict met), their
    pids to watch and the first of their leases to end (:func:`lease_until`).
    The other holders in the way are not looked for here (``unnamed``):
    while the refusal's holders hold, nothing the others do can let the
    waiter on (a look is refused by one of them whatever the others do), so
    their exits and leases need not wake it; they are named only where the
    reason is shown (:func:`name_all`: the waiting notice, once, and the
    ``WaitTimeout``), not on every refused look."""
    names = _in_the_way(err)
    held = _holders(ledger, names)
    return Blocked(err, names, str(err), _local_pids(held, me), lease_until=lease_until(held, me),
                   unnamed=err if names else None)


def name_all(ledger: Any, req: "Request", blocked: Blocked) -> Blocked:
    """``blocked`` (a look's, :func:`blocked_by`; or standing back for an
    exited holder's parent after it) with every holder in the way named:
    the refusal names the first conflict met; the others are looked for
    now (:func:`_others`), their chains added to ``in_the_way`` and, after a
    refusal, named in the reason (``; also in the way: 'A' holding write
    /r/a/**, ...``). ``blocked`` itself when there is nothing to name; the
    refusal's holders alone when the ledger cannot be read (a store that
    cannot be reached at a timeout: the ``WaitTimeout`` stays one)."""
    err = blocked.unnamed
    if err is None:
        return blocked
    names = blocked.in_the_way
    try:
        others = _others(ledger, req, _in_the_way(err))
    except LedgerError as exc:
        log.debug("could not name every holder in the way of '%s': %s", req.name, exc)
        return blocked
    out = Blocked(blocked.refusal, names, blocked.reason, blocked.pids, blocked.behind, blocked.until,
                  blocked.lease_until)
    if others:
        seen = set(names)
        more = list(names)
        for chain, _ in others:
            more.extend(n for n in chain if n not in seen)
            seen.update(chain)
        out.in_the_way = tuple(more)
        if blocked.refusal is not None:
            out.reason += "; also in the way: " + _held_text(others)
    return out


def behind(waiters: list[Waiter]) -> Blocked:
    """Why a waiter stands back for ``waiters`` (the nearest first): its
    pid watched too when it is a process here (a pidfd turns readable once
    the process is gone, its descriptors closed: on a directory its
    ticket's lock with them, whose own close event comes before the lock
    goes, so a waiter woken by it alone found the ticket still held, and
    slept until its next look, up to :data:`RECHECK_SECONDS`; on a server
    its backend may hold the lock moments longer, and the look finds the
    ticket dead by its waiter's death: :meth:`Queue.ahead`)."""
    w = waiters[0]
    more = f" and {len(waiters) - 1} more" if len(waiters) > 1 else ""
    return Blocked(None, tuple(x.name for x in waiters), f"waiting behind '{w.name}' (pid {w.pid}), "
                   f"which asked first for an overlapping write scope{more}", (w.pid,) if w.local else (),
                   w.number)


def one_round(ledger: Any, req: Request, queue: Queue, mine: int | None,
              attempt: Attempt, gate: Gate, me: Any,
              first: bool = False) -> Allocation | Blocked:
    """One look: stand back for earlier waiters (unless ``first``: none
    can be there any more), else decide, else try.
    Returns the grant or why not.

    Raises:
        Refused: a refusal that cannot clear by waiting.
        UnknownHolder: the parent is gone (or granted again).
        GaveUp: the deadline passed, or cancelled, before the grant.
    """
    if not first:
        ahead = queue.ahead(mine, req, functools.partial(line_holders, ledger))
        if ahead:
            return behind(ahead)
    # Judged as the grant will be under the lock (the same hook, Commit.stand_back):
    # an exited holder whose parent lives is kept for the grace, and refuses.
    grace = gate.grace
    grace.standing.clear()
    decision = attempt.look(req, grace.verdict)
    if decision.refusal is not None:
        if not waitable(decision.refusal):
            raise decision.refusal
        return grace.blocked(blocked_by(ledger, decision.refusal, me))
    return _ask(ledger, attempt, gate, me, req)  # refused: taken meanwhile (rare; recorded once)


def _ask(ledger: Any, attempt: Attempt, gate: Gate, me: Any,
         req: "Request", first: bool = False) -> Allocation | Blocked:
    """``attempt`` once: the grant, or why a refusal that may clear by
    waiting was met (any other refusal is raised). ``first``: the first
    attempt, which the deadline does not stop (:meth:`Gate.commit_first`)."""
    grace = gate.grace
    grace.standing.clear()
    try:
        return attempt(Commit(gate.commit_first if first else gate.commit, grace.verdict, gate.unwritten))
    except Refused as exc:
        if not waitable(exc):
            raise
        return grace.blocked(blocked_by(ledger, exc, me))


def timing_out(ledger: Any, req: Request, last: Blocked | None) -> Generator[Call, Any, WaitTimeout]:
    """Steps of :func:`waiting` whose deadline passed: every holder in the
    way named (:func:`name_all`, a step: it reads the ledger), and the
    :class:`WaitTimeout` to raise."""
    if last is not None and last.unnamed is not None:
        last = yield Call(name_all, (ledger, req, last), _nothing)
    return timed_out(req, last)


def timed_out(req: Request, last: Blocked | None) -> WaitTimeout:
    if last is None:
        return WaitTimeout(req.name, req.wait, None, (), "the time ran out before it could be decided")
    return WaitTimeout(req.name, req.wait, last.refusal, last.in_the_way, last.reason)


def first_attempt(ledger: Any, req: Request, queue: Queue,
                  attempt: Attempt, gate: Gate,
                  me: Any) -> Allocation | Blocked:
    """Before joining the queue: with no earlier waiter to stand back for,
    ask as a request without ``wait`` does (a refusal is recorded).
    Returns the grant or why not.

    Raises:
        as :func:`one_round`.
    """
    ahead = queue.ahead(None, req, functools.partial(line_holders, ledger))
    if ahead:
        # Behind an earlier waiter: the holders in the way too, named once,
        # here (the look that gives the waiting notice its words), not on
        # each later look behind it (nothing is decided there).
        out = behind(ahead)
        held = _others(ledger, req, ())
        if held:
            out.reason += "; in the way now: " + _held_text(held)
        return out
    asked = _ask(ledger, attempt, gate, me, req, first=True)
    return asked if isinstance(asked, Allocation) else name_all(ledger, req, asked)  # (the notice's words)


def notice(req: Request, blocked: Blocked) -> None:
    forever = "for ever" if math.isinf(req.wait) else f"up to {req.wait:g}s"
    log.info("holder '%s' waits %s for its scope: %s", req.name, forever, blocked.reason)


#: The longest a register standing behind a waiter of its own process
#: sleeps between two looks, woken by a directory's hub (:meth:`Watch.longest`).
QUIET_RECHECK_SECONDS = 60.0


class Watch:
    """What wakes a waiter (see the module docstring): its queue's wake-up
    (``source``, ``Tickets.watch``: inotify on a directory, LISTEN on
    PostgreSQL) and pidfds of holders in the way; without a source, the
    store's ``LogStore.wait`` (through ``ledger.wait``)."""

    def __init__(self, ledger: Any, queue: Queue, ticket: Ticket | None) -> None:
        self.pidfds: dict[int, int] = {}
        #: The last :meth:`arm` asked for a look at once (see there).
        self.relooked = False
        self.watch_log = True
        self.behind: int | None = None
        #: Standing behind a waiter of this same process (see :meth:`longest`).
        self.quiet = False
        self.queue = queue
        #: What the queue wakes the waiter by (None: nothing: the store's wait).
        self.source: Wakeup | None = queue.watch(ticket)
        #: The ledger whose store's wait a waiter without a source sleeps in.
        self.ledger = ledger if self.source is None else None
        #: The longest sleep between two looks, seconds.
        self.period = self.source.period if self.source is not None else RECHECK_SECONDS

    def fds(self) -> list[int]:
        out = list(self.pidfds.values())
        if self.source is not None:
            out.extend(self.source.fds(self.watch_log))
        return out

    def arm(self, pids: tuple[int, ...], log_too: bool = True, behind: int | None = None,
            quiet: bool = False) -> bool:
        """Watch these pids' exits (and no others); the log too unless
        ``log_too`` is false; in the queue, only ticket ``behind`` (the
        earlier waiter this one stands back for: only its leaving, or its
        waiter's death, can let this one on; a refused waiter has no waiter
        before it to wait for). Returns whether to look again at once
        rather than sleep: one of ``pids`` was gone already (it died since
        the look that named it, and nothing may wake the waiter for it);
        not twice in a row (a pid named and gone again waits for the
        period). This process's own pid is never watched: it cannot exit
        while it waits, and a pidfd on it would cost each of its waiters a
        descriptor for nothing (a holder in the way, or the waiter ahead,
        of this same process: a thousand waiting coroutines of one process
        stand each behind the one before it). ``quiet``: a register's
        (see :meth:`longest`)."""
        self.watch_log = log_too
        self.behind = behind
        here = os.getpid()
        self.quiet = quiet and behind is not None and here in pids
        pids = tuple(pid for pid in pids if pid != here)
        # On a directory the process's hub watches them, one pidfd per pid
        # for all its waiters; elsewhere (or with no hub thread) the watch's own.
        shared = getattr(self.source, "watch_pids", None)
        gone = shared(pids) if shared is not None else None
        if gone is not None:
            pids = ()
        else:
            gone = False
        for pid in list(self.pidfds):
            if pid not in pids:
                os.close(self.pidfds.pop(pid))
        for pid in pids:
            if pid not in self.pidfds:
                try:
                    self.pidfds[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    gone = True
                except OSError:
                    pass  # no pidfds here (the periodic look stands in)
        again = gone and not self.relooked
        self.relooked = again
        return again

    def drain(self, mine: int | None = None) -> bool:
        """Read what woke the waiter; whether it matters: an append to the
        log (while watched), a holder's exit, the ticket it stands behind
        leaving or closing (without one: any ticket before ``mine``), or
        the queue's events lost (the kernel's queue overflowed, a server's
        link broke)."""
        relevant = False
        if self.source is not None:
            grew, left = self.source.changes()
            if grew and self.watch_log:
                relevant = True
            if left is None or getattr(self.source, "exited", False):
                relevant = True  # events were lost (one that mattered may be among them), or a pid exited
            elif self.behind is not None:
                relevant = relevant or self.behind in left
            elif not self.watch_log and left:  # (refused: holders are in the way, not waiters)
                relevant = relevant or mine is None or min(left) < mine
        for pid, fd in list(self.pidfds.items()):
            if ready([fd], 0):  # exited: look once, then forget it
                os.close(self.pidfds.pop(pid))
                relevant = True
        return relevant

    def wait(self, timeout: float, mine: int | None = None) -> None:
        """Sleep until something that matters to ticket ``mine`` may have
        changed (:meth:`drain`), at most ``timeout`` s and :meth:`longest`."""
        end = time.monotonic() + self.longest(timeout)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.hubbed and not self.pidfds:
                self.source.event.wait(left)  # type: ignore[union-attr]
                if self.drain(mine):
                    return
                continue
            fds = self.fds()
            if not fds and self.ledger is not None and self.watch_log:
                led = self.ledger
                led.wait(led.refresh(), left)  # the log grew (or the time ran out)
                return
            if not fds:
                time.sleep(left)
                return
            if not ready(fds, left):
                return
            if self.drain(mine):
                return

    def longest(self, timeout: float) -> float:
        """The longest sleep before the next look: ``timeout``, at most
        :attr:`period` (for what no wake-up shows), except for a register
        standing behind a waiter of this same process while a directory's
        hub wakes it (``quiet``): that waiter cannot die unseen, and its
        ticket's leaving (or the hub's events lost, or the hub closed)
        wakes this one, so it sleeps until then (or ``timeout``, at most
        :data:`QUIET_RECHECK_SECONDS`: a last resort). Not a
        delegation: the waiters it stands back for may change with its own
        line of delegation (:meth:`Queue.ahead`). Without it, a thousand
        waiters of one process each read the queue every second, the whole
        queue each time: the hand-off through them took minutes (measured:
        990 coroutines, 3 minutes)."""
        if self.quiet and self.hubbed:
            return min(timeout, QUIET_RECHECK_SECONDS)
        return min(timeout, self.period)

    @property
    def hubbed(self) -> bool:
        """Whether its source wakes it by an event set from a thread of the
        process (a directory's hub: ``_filetickets.HubWatch``), not by
        descriptors to poll."""
        return bool(getattr(self.source, "hubbed", False))

    def follow(self, blocked: Blocked) -> bool:
        """Have the source wake this waiter by what can end ``blocked``
        (``Wakeup.follow``; in the waiter's thread: on a server, a round
        trip when that changes). Whether it changed: then look again before
        sleeping."""
        source = self.source
        return source is not None and source.follow(blocked.by_holders, blocked.behind)

    @classmethod
    def take(cls, ledger: Any, queue: Queue, ticket: Ticket | None = None) -> "Watch":
        """A watch for the waiter holding ``ticket`` in ``queue`` (``None``:
        a follower of the log), with a source of its own (``Tickets.watch``:
        on a directory a watch on the process's hub, on PostgreSQL the
        ticket's connection; none for a follower there: the store's wait)."""
        return cls(ledger, queue, ticket)

    @classmethod
    def timer(cls, queue: Queue) -> "Watch":
        """A watch that wakes for nothing (no source, no pidfds, no store
        wait): a :class:`Sleep` on it is a plain pause (a waiter's between
        looks while its store cannot be reached)."""
        w = cls.__new__(cls)
        w.pidfds = {}
        w.relooked = False
        w.watch_log = False
        w.behind = None
        w.quiet = False
        w.queue = queue
        w.source = None
        w.ledger = None
        w.period = math.inf
        return w

    def give_back(self, ledger: Any = None) -> None:
        """Done: the pidfds closed, the source given back to the queue
        (``Tickets.done``: closed; on PostgreSQL the ticket's connection
        goes with the ticket, ``Tickets.leave``)."""
        self.arm((), True, None)
        source, self.source = self.source, None
        self.queue.done(source)

    def close(self) -> None:
        """Close the pidfds and the source."""
        for fd in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()
        source, self.source = self.source, None
        if source is not None:
            source.close()


#: One queue object (its cache of tickets read) per ledger object.
_queues: "weakref.WeakKeyDictionary[Any, Queue]" = weakref.WeakKeyDictionary()


def forget(ledger: Any) -> None:
    """Forget ``ledger``'s queue object (its :meth:`close`; what its store
    holds for waiters, a directory's hub, is closed by the store)."""
    _queues.pop(ledger, None)


def queue_of(ledger: Any, tickets: Tickets | None) -> Queue:
    """The queue object of ``ledger``, over ``tickets`` (its store's,
    ``LogStore.tickets()``), made on first use."""
    q = _queues.get(ledger)
    if q is None or q.tickets is not tickets:
        q = _queues[ledger] = Queue(tickets)
    return q


def whoami(ledger: Any) -> Any:
    """This process's identity, as ``ledger`` records it (``Ledger.actor``:
    cached per process)."""
    return ledger.actor


def release_grant(ledger: Any, out: Any) -> None:
    """Release ``out`` if it is a grant (:class:`Allocation`), by its token;
    one released or reclaimed meanwhile is left so. What a cancelled asyncio
    waiter does with a grant decided just before its cancellation."""
    if isinstance(out, Allocation):
        try:
            ledger.release(out.name, token=out.token)
        except UnknownHolder:
            pass


class Call:
    """A step of :func:`waiting` that may block on the ledger's lock or the
    file system: ``fn(*args)``. ``undo(result)``: what a driver cancelled
    while the call runs does with its result once the call returns (a
    blocking driver cannot be cancelled there and ignores it)."""

    __slots__ = ("fn", "args", "undo")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], undo: Callable[[Any], None]) -> None:
        self.fn = fn
        self.args = args
        self.undo = undo


class Sleep:
    """A step of :func:`waiting`: sleep at most ``seconds`` (``float``,
    ``math.inf``: no deadline) on ``watch`` (:meth:`Watch.wait`), waking
    for what matters to ticket number ``mine``."""

    __slots__ = ("watch", "seconds", "mine")

    def __init__(self, watch: "Watch", seconds: float, mine: int | None) -> None:
        self.watch = watch
        self.seconds = seconds
        self.mine = mine


def waiting(ledger: Any, req: Request, attempt: Attempt, gate: Gate,
            me: Any, tickets: Tickets | None, on_wait: Callable[[str, Refused | None], object] | None = None,
            ) -> Generator[Call | Sleep, Any, Allocation]:
    """The waiting loop, written once for the blocking caller
    (:func:`wait_for_grant`) and the asyncio one (``AsyncLedger``): ask;
    while refused by holders in the way (or behind earlier waiters), wait in
    the queue until ``gate.deadline`` (``time.monotonic`` seconds, ``None``:
    for ever). A generator that does no blocking work itself: it yields each
    step that may block (:class:`Call`, :class:`Sleep`), and its driver runs
    the step and hands back the outcome with :func:`resume` (what the step
    raised, a cancellation too, is thrown in: the ticket is given back on
    the way out, in one more :class:`Call` after which the exception goes
    on; and, at once, when the generator is closed). Its return value is
    the grant. Every grant passes ``gate`` under the ledger's lock, so a
    wait that timed out or was cancelled (``gate.cancel()``) is never
    granted afterwards.

    A step that raises :class:`StoreUnavailable` (the server cannot be
    reached: nothing was recorded) is tried again after a pause
    (:class:`Outage`: 0.05 s doubling to 1 s), with one warning per outage;
    a ticket that lost its place meanwhile joins the queue again, at its
    end. :class:`InDoubt` (an append whose outcome is unknown) is not a
    ``StoreUnavailable``: it is raised; nor is a login the server refuses
    (SQLSTATE class 28, :func:`refused_login`: a password changed while
    the request waited) tried again: raised at once.

    ``attempt(commit)`` asks the ledger once, calling ``commit()`` under the
    lock just before the grant is built (``Ledger.register`` passes it).
    ``me``: this process's identity (:func:`whoami`), to tell which holders
    in the way have a pidfd here. ``tickets``: the ledger's queue, its
    store's ``tickets()`` (``None``: none). ``on_wait(reason, refusal)``:
    called once the request waits (in the queue), instead of the ``INFO``
    notice (:func:`notice`); ``None``: the notice.

    Raises:
        WaitTimeout: not granted by the deadline (never granted afterwards).
        StoreUnavailable: the server still could not be reached when the
            deadline passed (the last such error; never granted afterwards),
            or refused a login (SQLSTATE class 28), at once.
        Refused: a refusal that cannot clear by waiting (a ``DuplicateHolder``,
            a ``DelegationError`` not naming a sibling, ...).
        UnknownHolder: the parent is gone (or granted again).
        whatever ``on_wait`` raises.
    """
    deadline = gate.deadline
    queue = queue_of(ledger, tickets)
    undo_grant = functools.partial(release_grant, ledger)
    outage = Outage(req.name, deadline)
    place = Place()
    last: Blocked | None = None  # (None: not asked yet)
    try:
        try:
            while True:
                tried = last is not None or outage.error is not None  # (a wait is at least one try)
                if tried and deadline is not None and time.monotonic() >= deadline:
                    if outage.error is not None:
                        raise outage.error  # the deadline passed while the server could not be reached
                    raise (yield from timing_out(ledger, req, last))
                try:
                    if last is None:  # not in the queue yet: ask as a request without wait does
                        out = yield Call(first_attempt, (ledger, req, queue, attempt, gate, me), undo_grant)
                    else:
                        if (yield from take_place(ledger, req, queue, place, outage)) and not place.told:
                            place.told = True
                            tell(req, last, on_wait)
                        out = yield Call(settle, (ledger, req, queue, place, attempt, gate, me), undo_grant)
                    if isinstance(out, Allocation):
                        return out  # (its ticket, if any, given back by settle, in the same step)
                    last = out
                    outage.over()
                    watch = place.watch
                    # Refused before joining: join, and look again; or a pid the look
                    # named died since: look again (nothing would wake the waiter for it).
                    if watch is None or watch.arm(out.pids, log_too=out.by_holders, behind=out.behind,
                                                  quiet=req.parent is None):
                        continue
                    remaining = math.inf if deadline is None else deadline - time.monotonic()
                    if remaining <= 0:
                        raise (yield from timing_out(ledger, req, last))
                    if out.until is not None:  # (standing back for an exited holder's parent: until the grace ends)
                        remaining = min(remaining, max(0.0, out.until - time.monotonic()))
                    if out.lease_until is not None:  # (a lease in the way: until it may be reclaimed)
                        remaining = min(remaining, max(0.0, out.lease_until - time.monotonic()))
                    yield Sleep(watch, remaining, place.ticket.number if place.ticket is not None else None)
                except StoreUnavailable as exc:
                    # Nothing was recorded: look again once the server answers
                    # (until the deadline), the ticket joining again if it lost
                    # its place meanwhile.
                    yield Sleep(Watch.timer(queue), outage.failed(exc), None)
        except GaveUp:
            timeout = yield from timing_out(ledger, req, last)
            raise timeout from None
    except GeneratorExit:
        raise
    except BaseException:
        # Timed out, refused, cancelled, interrupted: the ticket is given back
        # in a step of its own (on a server, a round trip: in the driver's
        # thread, not on an event loop), then the exception goes on.
        if place.ticket is not None:
            try:
                yield Call(leave, (queue, place), _nothing)
            finally:
                leave(queue, place)  # (nothing if the step ran: the generator was closed meanwhile)
        raise
    finally:
        leave(queue, place)  # first: the next waiter may go on
        if place.watch is not None:
            place.watch.give_back(ledger)


class Place:
    """A waiter's place in the queue: its ``ticket`` (``None``: none yet,
    given back, or a store without a queue), the :class:`Watch` that wakes
    it, whether it ``joined``, and whether it was ``told`` that it waits.
    ``first``: its ticket was found with no earlier live waiter to stand
    back for (a register's: see :func:`settle`). ``lost``: the number of a
    ticket that lost its place, until the waiter has joined again and said
    so (a join that fails on the way, the server still down, does not drop
    it). ``outages``: :attr:`Outage.warned` when the ticket joined (see
    :func:`take_place`). ``lock``: held while the ticket is given back (:func:`leave`): under
    ``AsyncLedger`` a join cancelled while it runs in a worker thread gives
    its ticket back there (its undo) while the loop may give it back too."""

    __slots__ = ("ticket", "watch", "joined", "told", "first", "lost", "outages", "lock")

    def __init__(self) -> None:
        self.ticket: Ticket | None = None
        self.watch: Watch | None = None
        self.joined = False
        self.told = False
        self.first = False
        self.lost: int | None = None
        self.outages = 0
        # Re-entrant: an exception raised between a 'with' block's end and its
        # __exit__ (a tracer's can be: tests/test_signals_forks.py) leaves it
        # held, which must not stop this thread's next leave.
        self.lock = threading.RLock()


def take_place(ledger: Any, req: Request, queue: Queue, place: Place,
               outage: "Outage | None" = None) -> Generator[Call, Any, bool]:
    """Steps of :func:`waiting`: join the queue unless ``place`` is in it;
    one whose ticket lost its place (on PostgreSQL its connection broke,
    and its lock with it: others may have removed the ticket) gives it back
    and joins again, at the end, and says so once joined: a warning; or an
    ``INFO`` record when ``outage`` warned that the store could not be
    reached while that ticket was held (the store's outage is what broke it,
    and every waiter loses its place in one: the outage's warning is the one
    the caller sees). Held, not "going on now": the loss is found out only
    when the ticket's own connection is next used, which may be after a look
    on the ledger's connection went through and ended the outage (a server
    restart while the waiter was between two looks: the outage's warning,
    then a "lost its place" warning, for one cause). Returns whether it
    joined now."""
    if place.joined and queue.lost(place.ticket):
        place.lost = place.ticket.number if place.ticket is not None else 0
        if place.watch is not None:
            place.watch.give_back(ledger)
            place.watch = None
        place.joined = False
        yield Call(leave, (queue, place), _nothing)
    if place.joined:
        return False
    yield Call(join, (queue, req, place), functools.partial(leave, queue, place))
    place.joined = True
    place.watch = Watch.take(ledger, queue, place.ticket)
    warned = outage.warned if outage is not None else 0
    lost, place.lost = place.lost, None
    if lost is not None:
        in_outage = outage is not None and (outage.error is not None or warned > place.outages)
        say = log.info if in_outage else log.warning
        say("holder '%s' lost its place in the waiters' queue (ticket %d: its connection broke) and joined "
            "again, at its end", req.name, lost)
    place.outages = warned
    return True


def join(queue: Queue, req: Request, place: Place) -> None:
    """A step: join ``queue`` with ``req``, the ticket put in ``place``
    by the same line (an exception, a signal handler's, cannot come
    between the ticket's making and ``place``: whoever stops the loop gives
    back the ticket in ``place``)."""
    place.first = False
    place.ticket = queue.join(req)


def leave(queue: Queue, place: Place, _result: Any = None) -> None:
    """A step (and the undo of :func:`join` for a driver cancelled while it
    ran): give back the ticket in ``place``, if any, once; it stays there
    until given back (an exception on the way leaves it to the next call)."""
    with place.lock:
        if place.ticket is not None:
            queue.leave(place.ticket)
            place.ticket = None


def tell(req: Request, blocked: Blocked, on_wait: Callable[[str, Refused | None], object] | None) -> None:
    """Say once that ``req`` waits: ``on_wait(reason, refusal)``, else the
    ``INFO`` notice (:func:`notice`)."""
    if on_wait is None:
        notice(req, blocked)
    else:
        on_wait(blocked.reason, blocked.refusal)


def refused_login(exc: StoreUnavailable) -> bool:
    """Whether ``exc`` is a login the server refused (SQLSTATE class 28: a
    wrong password, a role that may not log in, no ``pg_hba.conf`` entry),
    which waiting for the server does not mend, unlike a server that cannot
    be reached or a connection that broke."""
    return exc.sqlstate is not None and exc.sqlstate.startswith("28")


def waiting_mends(exc: StoreUnavailable) -> bool:
    """Whether waiting may mend ``exc``: a server that cannot be reached or a
    connection that broke; not a login the server refused
    (:func:`refused_login`) nor a database that does not exist (SQLSTATE
    3D000): the server answers, and says no."""
    return not refused_login(exc) and exc.sqlstate != "3D000"


class Outage:
    """A waiter's view of its store being unreachable (``StoreUnavailable``
    from a step of :func:`waiting`): how long to pause before the next
    look (:data:`OUTAGE_FIRST_PAUSE` seconds, doubling to
    :data:`OUTAGE_LONGEST_PAUSE`, each within 20 % at random so that
    waiters let go together do not all knock at once, never past
    ``deadline``), one warning per outage, and the last error (``error``:
    what the waiter raises if its deadline passes before the store
    answers), and how many outages it warned of (``warned``, never reset:
    :func:`take_place` tells by it whether a ticket lost its place in one).

    Public (``scopeledger.Outage``), so that a caller with a deadline of its
    own rides an outage as a waiter does, by the same pauses and the same
    judgement of what waiting mends (``ledger run -w``, which opens its
    ledger within its wait's deadline): ``Outage(name, deadline)``
    (``deadline``: ``time.monotonic()`` seconds, ``None`` for none); each
    time a call raises ``StoreUnavailable``, raise it if the deadline has
    passed, else sleep :meth:`failed`'s seconds and call again; once a call
    went through, :meth:`over`. The warning names the holder ``name``
    (``holder 'NAME' cannot reach the ledger while it waits (...)``)."""

    __slots__ = ("name", "deadline", "error", "pause", "warned")

    def __init__(self, name: str, deadline: float | None) -> None:
        self.name = name
        self.deadline = deadline
        self.error: StoreUnavailable | None = None
        self.pause = OUTAGE_FIRST_PAUSE
        self.warned = 0

    def failed(self, exc: StoreUnavailable) -> float:
        """A step raised ``exc``: the seconds to pause (warned once per outage).

        Raises:
            StoreUnavailable: ``exc`` itself, when waiting does not mend it
                (:func:`waiting_mends`: a login the server refused, a
                database that does not exist: the server answers, and says
                no).
        """
        if not waiting_mends(exc):
            raise exc
        if self.error is None:
            until = "it is granted" if self.deadline is None else "its wait ends"
            log.warning("holder '%s' cannot reach the ledger while it waits (%s): trying again until %s",
                        self.name, exc, until)
            self.warned += 1
        self.error = exc
        with first_use:
            import random  # (here: a waiter's start-up does not pay for it)

        pause = self.pause * random.uniform(0.8, 1.2)
        self.pause = min(self.pause * 2, OUTAGE_LONGEST_PAUSE)
        if self.deadline is not None:
            pause = min(pause, max(0.0, self.deadline - time.monotonic()))
        return pause

    def over(self) -> None:
        """A step went through: the store answers again."""
        self.error = None
        self.pause = OUTAGE_FIRST_PAUSE


def settle(ledger: Any, req: Request, queue: Queue, place: Place,
           attempt: Attempt, gate: Gate, me: Any) -> Allocation | Blocked:
    """:func:`one_round` for the waiter in ``place``; once granted, its
    ticket is given back in the same step (the next waiter may go on), so
    that its round trip on a server runs where the step runs (a worker
    thread under ``AsyncLedger``), not on an event loop. Still blocked, its
    watch is told what can end that (:meth:`Watch.follow`); when that
    changed, it looks again (at most :data:`_FOLLOW_LOOKS` times in one
    step).

    A register's ticket once found with no earlier live waiter to stand
    back for stays so (``place.first``: the queue is not read again, one
    round trip less per look on a server): tickets joining later have
    higher numbers, and those before it only leave or die. (Two joining at
    once may number themselves either way round; either order is first
    come, first served.) A delegation's reads the queue at every look: the
    waiters it does not stand back for because they wait for its own line
    of delegation (see :meth:`Queue.ahead`) may change with that line.

    Raises:
        as :func:`one_round`.
    """
    ticket = place.ticket
    mine = ticket.number if ticket is not None else None
    for _ in range(_FOLLOW_LOOKS):
        out = one_round(ledger, req, queue, mine, attempt, gate, me, place.first)
        if isinstance(out, Allocation):
            leave(queue, place)
            return out
        if ticket is not None and req.parent is None and out.refusal is not None:
            place.first = True  # (refused by holders: nobody stood ahead)
        if place.watch is None or not place.watch.follow(out):
            break
    return out


#: The most looks :func:`settle` takes in one step while what wakes the
#: waiter keeps changing (each change is followed by a look: a change
#: between the look and the follow would wake nobody; after the last, the
#: watch's period bounds the sleep).
_FOLLOW_LOOKS = 3


def _nothing(result: Any) -> None:
    """The undo of a step that leaves nothing to undo."""


def resume(steps: Generator[Call | Sleep, Any, Allocation], reply: Any = None,
           error: BaseException | None = None) -> Call | Sleep | Allocation:
    """Go on with :func:`waiting` once its last step returned ``reply`` or
    raised ``error`` (thrown in); the next step, or the grant once done.

    Raises:
        as :func:`waiting`; ``error`` itself when the loop does not turn it
        into one of those (a cancellation, ``KeyboardInterrupt``).
    """
    try:
        return steps.send(reply) if error is None else steps.throw(error)
    except StopIteration as done:
        grant: Allocation = done.value
        return grant


def deadline_of(req: Request) -> float | None:
    """``req``'s deadline, ``time.monotonic`` seconds from now (``None``:
    it waits for ever)."""
    return None if math.isinf(req.wait) else time.monotonic() + req.wait


def wait_for_grant(ledger: Any, req: Request, attempt: Attempt,
                   tickets: Tickets | None,
                   on_wait: Callable[[str, Refused | None], object] | None = None) -> Allocation:
    """:func:`waiting`, blocking this thread; the grant. ``tickets``: the
    ledger's queue (its store's ``tickets()``); ``on_wait``: as :func:`waiting`.

    Raises:
        as :func:`waiting`.
    """
    steps = waiting(ledger, req, attempt, Gate(deadline_of(req)), whoami(ledger), tickets, on_wait)
    with contextlib.closing(steps):  # however this ends, the ticket is given back
        step = resume(steps)
        while not isinstance(step, Allocation):
            reply: Any = None  # (a sleep's reply)
            try:
                if isinstance(step, Sleep):
                    step.watch.wait(step.seconds, step.mine)
                else:
                    reply = step.fn(*step.args)
            except BaseException as exc:  # noqa: BLE001 - thrown in (KeyboardInterrupt too): the loop cleans up
                step = resume(steps, error=exc)
            else:
                step = resume(steps, reply)
        return step
