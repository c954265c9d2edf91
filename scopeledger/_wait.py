"""Waiting for a scope: ``register``/``delegate``/``hold`` with ``wait=``
(and :class:`~scopeledger.AsyncLedger`'s forms), built on the ledger's
public decisions (:meth:`~scopeledger.Ledger.decide`) plus one hook: the
grant's last check under the lock (:class:`Gate`).

**What is waited for.** Only a refusal that may clear by itself: a
:class:`~scopeledger.ScopeConflict` (another holder's write rule in the way)
or a :class:`~scopeledger.DelegationError` naming a sibling
(:func:`waitable`). A rule outside the parent's scope, a taken name or a
parent that is gone are raised at once, as without ``wait``.

**First come, first served: a queue of tickets beside the log.** A waiter
that is refused joins the queue: a file ``waiters/<number>`` in the ledger
directory (0700; files 0600) holding its request, created under a temporary
name, locked (``flock(LOCK_EX)``, held while it waits) and then linked to
the next free number (``link`` fails with ``EEXIST`` when another waiter took
it: the next number is tried). Numbers only grow while the queue is not
empty, so the order of the numbers is the order in which waiters joined.
Before each attempt a waiter reads the tickets before its own, nearest
first; it stands back while one of them is alive and *contends* with it (a rule of one
conflicts with a rule of the other: a write overlapping a write or an exclusive read,
``scopeledger._rules.conflicts``), except
when that earlier waiter is itself kept out by the waiter's own line of
delegation (its parent or the parent's ancestors hold what it needs: it
cannot be granted before that line lets go, and standing back would
deadlock). A ticket whose lock can be taken belongs to a waiter that died
(its descriptors closed): it is skipped and removed. A waiter that is
granted, times out or is cancelled removes its ticket. A waiter that stands
back watches only the ticket it stands behind (the nearest), so a grant
wakes the next waiter, not the whole queue.

The queue orders waiters among themselves. A request without ``wait`` does
not look at it (the hot path stays as it was) and may be granted ahead of
waiters, as a non-blocking ``flock`` may. Nothing of the queue is in the
log: a waiter records at most its first refusal (as any refused request),
and its grant. Strict order has the usual price: a waiter for a large
scope holds back later waiters for parts of it until it is granted; a
process that waits while it holds what an earlier waiter needs (outside its
own line of delegation) waits until one of them times out.

**Waking.** A waiter sleeps until the log is appended to (inotify
``IN_MODIFY`` on ``events.jsonl``), a ticket leaves the queue (``IN_DELETE``;
a dead waiter's descriptors closing: ``IN_CLOSE_WRITE``), or the process of
a holder in the way exits (a pidfd, for holders on this host and in this PID
namespace); and at least every :data:`RECHECK_SECONDS`, for what none of
these shows (a holder in another PID namespace that died, a clock). Without
inotify (no more instances: ``fs.inotify.max_user_instances``) or on a
network file system (other hosts' appends make no inotify event here), the
waiter looks every :data:`POLL_SECONDS` instead.

**A timed-out or cancelled wait is never granted afterwards.** The last
check before a waiter's grant is written runs under the ledger's lock
(:meth:`Gate.commit`): past the deadline, or once cancelled, nothing is
written. A grant decided before the cancellation is returned by the call
that was cancelled; its canceller releases it (AsyncLedger does).

Sources: the ticket queue is the classic ticket lock / the "lock" recipe of
ZooKeeper and etcd (a waiter queues by a sequence number and watches its
predecessors), with a file lock standing for the session.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import math
import os
import secrets
import select
import threading
import time
import weakref
from typing import Any, Callable, Generator

import attrs
import orjson

from ._arguments import check_wait
from ._filestore import FileStore
from ._errors import DelegationError, InvalidScope, Refused, ScopeConflict, UnknownHolder, WaitTimeout, shown
from ._fold import Allocation
from ._rules import Permission, ScopeRule, check_name, conflicts, rule_from_log

log = logging.getLogger("scopeledger")

#: The queue's directory in the ledger directory.
QUEUE_DIR = "waiters"

#: A waiter decides again at least this often, in seconds, whatever woke it
#: (a holder in the way that died where no pidfd shows it).
RECHECK_SECONDS = 1.0

#: Without inotify, or on a network file system, a waiter looks this often.
POLL_SECONDS = 0.01

_O = os.O_CLOEXEC | os.O_NOFOLLOW

#: inotify masks (linux/inotify.h).
IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000


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


class Gate:
    """The waiter's last word on a grant, and its cancellation, made
    atomic with each other (a thread lock): either :meth:`commit` runs
    first (the grant is written, and the call that was cancelled returns
    it: the canceller must release it) or :meth:`cancel` does (no grant).
    ``deadline``: ``time.monotonic`` seconds, ``None`` for none."""

    __slots__ = ("_lock", "deadline", "cancelled")

    def __init__(self, deadline: float | None) -> None:
        self._lock = threading.Lock()
        self.deadline = deadline
        self.cancelled = False

    def commit(self) -> None:
        """Called under the ledger's lock just before the grant is built.

        Raises:
            GaveUp: cancelled, or past the deadline (``time.monotonic``).
        """
        with self._lock:
            if self.cancelled:
                raise GaveUp("cancelled")
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise GaveUp("deadline")

    def cancel(self) -> None:
        """No grant after this (one that passed :meth:`commit` before is
        the cancelled call's result)."""
        with self._lock:
            self.cancelled = True


@attrs.frozen
class Request:
    """A waiting request: the holder name, its rules as the ledger records
    them, the parent (a delegation) and its token, the seconds to wait."""

    name: str
    rules: tuple[ScopeRule, ...]
    parent: str | None
    parent_token: int | None
    wait: float

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
        if parent_token is not None and type(parent_token) is not int:
            raise TypeError(f"parent_token must be an int (a grant's seq) or None, not {shown(parent_token)}")
        return cls(name, ledger.canonical_rules(rules), parent, parent_token, wait)

    def writes(self) -> list[ScopeRule]:
        """The rules that exclude others: writes and exclusive reads."""
        return [r for r in self.rules if r.permission is not Permission.READ]

    def to_json(self) -> bytes:
        return orjson.dumps({"name": self.name, "parent": self.parent, "pid": os.getpid(),
                             "rules": [r.to_json() for r in self.rules]})


#: The descriptors of this process's tickets (each holds its ticket's lock).
_ticket_fds: set[int] = set()


def _after_fork_in_child() -> None:
    """A child forked while a thread waited must not keep that waiter's
    ticket alive after the waiter's process died (the lock belongs to the
    open file description the child shares): close the child's copies (the
    lock stays while the parent holds it)."""
    for fd in list(_ticket_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _ticket_fds.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@attrs.frozen
class Waiter:
    """A ticket read from the queue: its number, holder name, pid, write rules."""

    number: int
    name: str
    pid: int
    writes: tuple[ScopeRule, ...]


def _contend(a: tuple[ScopeRule, ...] | list[ScopeRule], b: tuple[ScopeRule, ...] | list[ScopeRule]) -> bool:
    return any(conflicts(x, y) for x in a for y in b)


class NoQueue:
    """The queue of a ledger that is not a directory (a PostgreSQL or
    in-memory store): none yet. Its waiters are not ordered among
    themselves; each decides again when the store says the log grew
    (``LogStore.wait``) or a holder in the way exits."""

    dir = None

    def join(self, req: "Request") -> None:
        return None

    @staticmethod
    def leave(ticket: Any) -> None:
        return None

    def ahead(self, mine: int | None, req: "Request", line_writes: Any) -> list[Any]:
        return []


class Queue:
    """The waiters' queue of one ledger directory (see the module docstring)."""

    def __init__(self, ledger_path: str) -> None:
        self.dir = os.path.join(ledger_path, QUEUE_DIR)
        self._cache: dict[tuple[str, int], Waiter | None] = {}

    def _make_dir(self) -> None:
        try:
            os.mkdir(self.dir, 0o700)
        except FileExistsError:
            pass
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | _O)
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise InvalidScope(f"cannot wait: {self.dir} belongs to uid {st.st_uid}")
            if st.st_mode & 0o777 != 0o700:
                os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

    def join(self, req: Request) -> tuple[int, int, str]:
        """Take the next ticket; ``(number, fd, path)``, the fd locked. The
        file is made unnamed (``O_TMPFILE``) and linked in once complete
        and locked, so that no other name comes and goes in the queue (each
        would wake every waiter); where the file system has no
        ``O_TMPFILE``, under a temporary name."""
        self._make_dir()
        tmp = None
        try:
            fd = os.open(self.dir, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
            src = f"/proc/self/fd/{fd}"
        except (OSError, AttributeError):
            tmp = src = os.path.join(self.dir, f".tmp-{os.getpid()}-{secrets.token_hex(6)}")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O, 0o600)
        try:
            dirfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | _O)
        except BaseException:
            os.close(fd)
            raise
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, req.to_json())
            number = max((n for n, _ in self._numbers()), default=0) + 1
            while True:
                path = os.path.join(self.dir, f"{number:016d}")
                try:
                    # linkat(AT_SYMLINK_FOLLOW): /proc/self/fd/N to the unnamed file (CPython
                    # calls linkat, which follows, only with a dir_fd).
                    os.link(src, os.path.basename(path), dst_dir_fd=dirfd, follow_symlinks=True)
                    _ticket_fds.add(fd)
                    return number, fd, path
                except FileExistsError:
                    number += 1
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.close(dirfd)
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    @staticmethod
    def leave(ticket: tuple[int, int, str] | None) -> None:
        """Remove the ticket (its file, then its lock)."""
        if ticket is None:
            return
        _number, fd, path = ticket
        if fd not in _ticket_fds:
            return  # closed already (by this call, or in a forked child)
        try:
            os.unlink(path)
        except OSError:
            pass
        _ticket_fds.discard(fd)
        os.close(fd)

    def _numbers(self) -> list[tuple[int, os.DirEntry[str]]]:
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            if len(e.name) == 16 and e.name.isdigit():
                out.append((int(e.name), e))
        out.sort(key=lambda x: x[0])
        return out

    def _read(self, number: int, entry: os.DirEntry[str]) -> Waiter | None:
        key = (entry.name, entry.inode())
        if key in self._cache:
            return self._cache[key]
        try:
            fd = os.open(entry.path, os.O_RDONLY | _O | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            data = os.read(fd, 1 << 26)
            doc = orjson.loads(data)
            rules = tuple(r for r in (rule_from_log(x) for x in doc["rules"])
                          if r.permission is not Permission.READ)
            w = Waiter(number, str(doc["name"]), int(doc["pid"]), rules)
        except (OSError, ValueError, KeyError, TypeError):
            w = None  # being written (not linked yet cannot be: link comes after) or damaged: ignored
        finally:
            os.close(fd)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = w
        return w

    @staticmethod
    def _alive(entry: os.DirEntry[str]) -> bool:
        """Whether the ticket's waiter still holds its lock; a dead one's
        file is removed."""
        try:
            fd = os.open(entry.path, os.O_RDONLY | _O | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return True
                raise
            try:  # nobody holds it: its waiter died
                os.unlink(entry.path)
            except OSError:
                pass
            return False
        finally:
            os.close(fd)

    def ahead(self, mine: int | None, req: Request, line_writes: Callable[[], list[ScopeRule]]) -> list[Waiter]:
        """The nearest live waiter before ticket ``mine`` (``None``: any)
        that ``req`` must stand back for (see the module docstring), in a
        list (empty: none). The nearest, not the first: each waiter then
        watches the one just before it, and a grant wakes one waiter, not
        the whole queue.
        ``line_writes()``: the write rules of the requester's own line of
        delegation (the parent and its ancestors), asked only when needed."""
        writes = req.writes()
        if not writes:
            return []
        out = []
        line: list[ScopeRule] | None = None
        for number, entry in reversed(self._numbers()):
            if mine is not None and number >= mine:
                continue
            w = self._read(number, entry)
            if w is None or not _contend(w.writes, writes):
                continue
            if req.parent is not None:
                if line is None:
                    line = line_writes()
                if _contend(w.writes, line):
                    continue  # it waits for this waiter's own line: standing back would deadlock
            if self._alive(entry):
                out.append(w)
                break  # one is enough to stand back for (each look costs an open and a flock)
        return out


@attrs.frozen
class Blocked:
    """Why a waiter is still waiting: the refusal it met (or ``None``,
    behind an earlier waiter: ``behind`` is its ticket number), who is in
    the way, and pids to watch."""

    refusal: Refused | None
    in_the_way: tuple[str, ...]
    reason: str
    pids: tuple[int, ...]
    behind: int | None = None


def line_writes(ledger: Any, parent: str | None) -> list[ScopeRule]:
    """The rules of ``parent`` and its ancestors (live now) that exclude
    others: writes and exclusive reads."""
    out: list[ScopeRule] = []
    seen = set()
    while parent is not None and parent not in seen:
        seen.add(parent)
        try:
            a = ledger.holder(parent)
        except UnknownHolder:
            break
        out.extend(r for r in a.rules if r.permission is not Permission.READ)
        parent = a.parent
    return out


def _in_the_way(err: Refused) -> tuple[str, ...]:
    if isinstance(err, ScopeConflict):
        return tuple(err.chain)
    if isinstance(err, DelegationError) and err.sibling is not None:
        return tuple(err.chain[err.chain.index(err.sibling):])
    return ()


def _local_pids(ledger: Any, names: tuple[str, ...], me: Any) -> tuple[int, ...]:
    out = []
    for n in names:
        try:
            p = ledger.holder(n).process
        except UnknownHolder:
            continue
        if p.boot == me.boot and p.pidns == me.pidns and p.boot is not None:
            out.append(p.pid)
    return tuple(out)


def blocked_by(ledger: Any, err: Refused, me: Any) -> Blocked:
    names = _in_the_way(err)
    return Blocked(err, names, str(err), _local_pids(ledger, names, me))


def behind(waiters: list[Waiter]) -> Blocked:
    w = waiters[0]
    more = f" and {len(waiters) - 1} more" if len(waiters) > 1 else ""
    return Blocked(None, tuple(x.name for x in waiters), f"waiting behind '{w.name}' (pid {w.pid}), "
                   f"which asked first for an overlapping write scope{more}", (), w.number)


def one_round(ledger: Any, req: Request, queue: Queue | NoQueue, mine: int | None,
              attempt: Callable[[Callable[[], None]], Allocation], gate: Gate, me: Any) -> Allocation | Blocked:
    """One look: stand back for earlier waiters, else decide, else try.
    Returns the grant or why not.

    Raises:
        Refused: a refusal that cannot clear by waiting.
        UnknownHolder: the parent is gone (or granted again).
        GaveUp: the deadline passed, or cancelled, before the grant.
    """
    ahead = queue.ahead(mine, req, lambda: line_writes(ledger, req.parent))
    if ahead:
        return behind(ahead)
    decision = ledger.decide(req.name, req.rules, parent=req.parent, parent_token=req.parent_token)
    if decision.refusal is not None:
        if not waitable(decision.refusal):
            raise decision.refusal
        return blocked_by(ledger, decision.refusal, me)
    return _ask(ledger, attempt, gate, me)  # refused: taken meanwhile (rare; recorded once)


def _ask(ledger: Any, attempt: Callable[[Callable[[], None]], Allocation], gate: Gate, me: Any) -> Allocation | Blocked:
    """``attempt`` once: the grant, or why a refusal that may clear by
    waiting was met (any other refusal is raised)."""
    try:
        return attempt(gate.commit)
    except Refused as exc:
        if not waitable(exc):
            raise
        return blocked_by(ledger, exc, me)


def timed_out(req: Request, last: Blocked | None) -> WaitTimeout:
    if last is None:
        return WaitTimeout(req.name, req.wait, None, (), "the time ran out before it could be decided")
    return WaitTimeout(req.name, req.wait, last.refusal, last.in_the_way, last.reason)


def first_attempt(ledger: Any, req: Request, queue: Queue | NoQueue,
                  attempt: Callable[[Callable[[], None]], Allocation], gate: Gate,
                  me: Any) -> Allocation | Blocked:
    """Before joining the queue: with no earlier waiter to stand back for,
    ask as a request without ``wait`` does (a refusal is recorded).
    Returns the grant or why not.

    Raises:
        as :func:`one_round`.
    """
    ahead = queue.ahead(None, req, lambda: line_writes(ledger, req.parent))
    if ahead:
        return behind(ahead)
    return _ask(ledger, attempt, gate, me)


def notice(req: Request, blocked: Blocked) -> None:
    forever = "for ever" if math.isinf(req.wait) else f"up to {req.wait:g}s"
    log.info("holder '%s' waits %s for its scope: %s", req.name, forever, blocked.reason)


def _inotify(path: str, mask: int) -> Any:
    from inotify_simple import INotify

    ino = INotify(nonblocking=True)
    try:
        ino.add_watch(path, mask)
    except OSError:
        ino.close()
        raise
    return ino


class Watch:
    """What wakes a waiter (see the module docstring): an inotify instance
    watching the log and the queue, and pidfds of holders in the way."""

    def __init__(self, ledger: Any, queue: Queue | NoQueue | None) -> None:
        #: One inotify instance for the log, one for the queue: a waiter
        #: behind an earlier one sleeps through appends to the log (only the
        #: head of the queue is woken by a release; 8 waiters on 2 cores
        #: woken together delayed the one that mattered).
        self.log_watch: Any = None
        self.queue_watch: Any = None
        self.pidfds: dict[int, int] = {}
        self.watch_log = True
        self.behind: int | None = None
        self.pid = os.getpid()
        store = getattr(ledger, "_log", None)
        #: A ledger that is not a directory: woken by its store (LogStore.wait).
        self.ledger = None if store is None or isinstance(store, FileStore) else ledger
        network = getattr(getattr(ledger, "_store", None), "network_fs", None)
        if self.ledger is not None:
            pass  # no file to watch: the store's wait (a server notifies)
        elif network is None:
            try:
                self.log_watch = _inotify(os.path.join(ledger.path, "events.jsonl"), IN_MODIFY)
                if queue is not None and queue.dir is not None:
                    self.queue_watch = _inotify(queue.dir, IN_DELETE | IN_CLOSE_WRITE | IN_MOVED_FROM)
            except (OSError, ImportError) as exc:
                log.debug("waiting without inotify (looking every %gs): %s", POLL_SECONDS, exc)
                self.close()
        #: The longest sleep between two looks, seconds.
        self.period = (RECHECK_SECONDS if self.log_watch is not None or self.ledger is not None
                       else POLL_SECONDS)

    def fds(self) -> list[int]:
        out = list(self.pidfds.values())
        if self.log_watch is not None and self.watch_log:
            out.append(self.log_watch.fileno())
        if self.queue_watch is not None:
            out.append(self.queue_watch.fileno())
        return out

    def arm(self, pids: tuple[int, ...], log_too: bool = True, behind: int | None = None) -> None:
        """Watch these pids' exits (and no others); the log too unless
        ``log_too`` is false; in the queue, only ticket ``behind`` (the
        earlier waiter this one stands back for: only its leaving, or its
        waiter's death, can let this one on; a refused waiter has no waiter
        before it to wait for)."""
        self.watch_log = log_too
        self.behind = behind
        for pid in list(self.pidfds):
            if pid not in pids:
                os.close(self.pidfds.pop(pid))
        for pid in pids:
            if pid not in self.pidfds:
                try:
                    self.pidfds[pid] = os.pidfd_open(pid)
                except OSError:
                    pass  # gone already (the next decision reclaims it), or no pidfds here

    def drain(self, mine: int | None = None) -> bool:
        """Read what woke the waiter; whether it matters: an append to the
        log (while watched), a holder's exit, the ticket it stands behind
        leaving or closing (without one: any ticket before ``mine``; names
        that are not tickets never), or the queue's events lost (the
        kernel's queue overflowed)."""
        relevant = False
        if self.log_watch is not None:
            try:
                if list(self.log_watch.read(timeout=0)) and self.watch_log:
                    relevant = True
            except OSError:
                relevant = True
        if self.queue_watch is not None:
            try:
                for ev in self.queue_watch.read(timeout=0):
                    name = ev.name
                    if ev.mask & IN_Q_OVERFLOW:
                        relevant = True  # events were lost: one that mattered may be among them
                    elif not name.isdigit():
                        continue
                    elif self.behind is not None:
                        relevant = relevant or int(name) == self.behind
                    elif self.watch_log:
                        continue  # refused: holders are in the way, not waiters
                    elif mine is None or int(name) < mine:
                        relevant = True
            except OSError:
                relevant = True
        for pid, fd in list(self.pidfds.items()):
            if select.select([fd], [], [], 0)[0]:  # exited: look once, then forget it
                os.close(self.pidfds.pop(pid))
                relevant = True
        return relevant

    def wait(self, timeout: float, mine: int | None = None) -> None:
        """Sleep until something that matters to ticket ``mine`` may have
        changed (:meth:`drain`), at most ``timeout`` s and :attr:`period`."""
        end = time.monotonic() + min(timeout, self.period)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            fds = self.fds()
            if not fds and self.ledger is not None and self.watch_log:
                led = self.ledger
                led.wait(led.refresh(), left)  # the log grew (or the time ran out)
                return
            if not fds:
                time.sleep(left)
                return
            p = select.poll()
            for fd in fds:
                p.register(fd, select.POLLIN)
            if not p.poll(max(0, math.ceil(left * 1000))):
                return
            if self.drain(mine):
                return

    @classmethod
    def take(cls, ledger: Any, queue: Queue | NoQueue | None) -> "Watch":
        """A watch for ``ledger`` from its pool, or a new one. Closing an
        inotify instance costs milliseconds (the kernel waits for a grace
        period): a waiter that is granted gives its watch back
        (:meth:`give_back`) instead, and the next wait takes it."""
        pool = _watches.get(ledger)
        while pool:
            try:
                w = pool.pop()
            except IndexError:
                break
            if (w.queue_watch is None) == (queue is None) and w.pid == os.getpid():
                w.drain()
                w.arm((), True, None)
                return w
            w.close()
        return cls(ledger, queue)

    def give_back(self, ledger: Any) -> None:
        """Back to ``ledger``'s pool (at most :data:`POOL` kept), pidfds closed."""
        self.arm((), True, None)
        pool = _watches.setdefault(ledger, [])
        if self.log_watch is not None and len(pool) < POOL and self.pid == os.getpid():
            pool.append(self)
        else:
            self.close()

    def close(self) -> None:
        """Close the pidfds now and the inotify instances in a thread of
        their own: closing one waits for the kernel (an RCU grace period,
        about 10 ms measured on 2 shared cores), which neither a caller
        just granted nor an event loop (AsyncLedger gives watches back on
        the loop) should wait for."""
        for fd in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()
        inos = [ino for ino in (self.log_watch, self.queue_watch) if ino is not None]
        self.log_watch = self.queue_watch = None
        if inos:
            threading.Thread(target=_close_all, args=(inos,), name="scopeledger-inotify-close", daemon=True).start()


def _close_all(inos: list[Any]) -> None:
    for ino in inos:
        ino.close()


#: Watches kept per ledger object for the next wait (see Watch.take).
_watches: "weakref.WeakKeyDictionary[Any, list[Watch]]" = weakref.WeakKeyDictionary()

#: At most this many watches kept per ledger object.
POOL = 8

#: One queue object (its cache of tickets read) per ledger object.
_queues: "weakref.WeakKeyDictionary[Any, Queue | NoQueue]" = weakref.WeakKeyDictionary()


def forget(ledger: Any) -> None:
    """Close the watches kept for ``ledger`` (its :meth:`close`): their
    inotify instances count against a per-user limit
    (``fs.inotify.max_user_instances``, 128 by default)."""
    for w in _watches.pop(ledger, ()):
        w.close()
    _queues.pop(ledger, None)


def queue_of(ledger: Any) -> Queue | NoQueue:
    q = _queues.get(ledger)
    if q is None:
        store = getattr(ledger, "_log", None)
        q = _queues[ledger] = (Queue(ledger.path) if store is None or isinstance(store, FileStore)
                               else NoQueue())
    return q


def whoami(ledger: Any) -> Any:
    """This process's identity (the ledger's cached one where it has it)."""
    actor = getattr(ledger, "_actor", None)
    if actor is not None:
        return actor()
    from ._process import identify

    return identify()


def release_grant(ledger: Any, out: Any) -> None:
    """Release ``out`` if it is a grant (:class:`Allocation`), by its token;
    one released or reclaimed meanwhile is left so. What a cancelled asyncio
    waiter does with a grant decided just before its cancellation."""
    if isinstance(out, Allocation):
        try:
            ledger.release(out.name, token=out.token)
        except UnknownHolder:
            pass


@attrs.frozen
class Call:
    """A step of :func:`waiting` that may block on the ledger's lock or the
    file system: ``fn(*args)``. ``undo(result)``: what a driver cancelled
    while the call runs does with its result once the call returns (a
    blocking driver cannot be cancelled there and ignores it)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    undo: Callable[[Any], None]


@attrs.frozen
class Sleep:
    """A step of :func:`waiting`: sleep at most ``seconds`` (``float``,
    ``math.inf``: no deadline) on ``watch`` (:meth:`Watch.wait`), waking
    for what matters to ticket number ``mine``."""

    watch: Watch
    seconds: float
    mine: int | None


def waiting(ledger: Any, req: Request, attempt: Callable[[Callable[[], None]], Allocation], gate: Gate,
            me: Any) -> Generator[Call | Sleep, Any, Allocation]:
    """The waiting loop, written once for the blocking caller
    (:func:`wait_for_grant`) and the asyncio one (``AsyncLedger``): ask;
    while refused by holders in the way (or behind earlier waiters), wait in
    the queue until ``gate.deadline`` (``time.monotonic`` seconds, ``None``:
    for ever). A generator that does no blocking work itself: it yields each
    step that may block (:class:`Call`, :class:`Sleep`), and its driver runs
    the step and hands back the outcome with :func:`resume` (what the step
    raised, a cancellation too, is thrown in: the ticket is given back on
    the way out, as it is when the generator is closed). Its return value is
    the grant. Every grant passes ``gate`` under the ledger's lock, so a
    wait that timed out or was cancelled (``gate.cancel()``) is never
    granted afterwards.

    ``attempt(commit)`` asks the ledger once, calling ``commit()`` under the
    lock just before the grant is built (``Ledger.register`` passes it).
    ``me``: this process's identity (:func:`whoami`), to tell which holders
    in the way have a pidfd here.

    Raises:
        WaitTimeout: not granted by the deadline (never granted afterwards).
        Refused: a refusal that cannot clear by waiting (a ``DuplicateHolder``,
            a ``DelegationError`` not naming a sibling, ...).
        UnknownHolder: the parent is gone (or granted again).
    """
    deadline = gate.deadline
    queue = queue_of(ledger)
    undo_grant = functools.partial(release_grant, ledger)
    try:
        out = yield Call(first_attempt, (ledger, req, queue, attempt, gate, me), undo_grant)
    except GaveUp:
        raise timed_out(req, None) from None
    if isinstance(out, Allocation):
        return out
    last = out
    ticket = None
    watch = None
    try:
        ticket = yield Call(queue.join, (req,), Queue.leave)
        watch = Watch.take(ledger, queue)
        notice(req, last)
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise timed_out(req, last)
            mine = ticket[0] if ticket is not None else None
            out = yield Call(one_round, (ledger, req, queue, mine, attempt, gate, me), undo_grant)
            if isinstance(out, Allocation):
                return out
            last = out
            watch.arm(out.pids, log_too=out.refusal is not None, behind=out.behind)
            remaining = math.inf if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise timed_out(req, last)
            yield Sleep(watch, remaining, mine)
    except GaveUp:
        raise timed_out(req, last) from None
    finally:
        Queue.leave(ticket)  # first: the next waiter may go on
        if watch is not None:
            watch.give_back(ledger)


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


def wait_for_grant(ledger: Any, req: Request, attempt: Callable[[Callable[[], None]], Allocation]) -> Allocation:
    """:func:`waiting`, blocking this thread; the grant.

    Raises:
        as :func:`waiting`.
    """
    steps = waiting(ledger, req, attempt, Gate(deadline_of(req)), whoami(ledger))
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
