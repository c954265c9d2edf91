"""The waiters' queue of a ledger directory (:class:`~scopeledger._logstore.Tickets`):
tickets as files in ``waiters/``, and what wakes a waiter (inotify).

**Tickets.** A waiter's ticket is a file ``waiters/<number>`` (16 digits) in
the ledger directory (0700; files 0600) holding its request, created
unnamed (``O_TMPFILE``; where the file system has none, under a temporary
name), locked (``flock(LOCK_EX)``, held while it waits) and then linked to
the next free number (``link`` fails with ``EEXIST`` when another waiter
took it: the next number is tried). Numbers only grow while the queue is not
empty, so the order of the numbers is the order in which waiters joined. A
ticket whose lock can be taken belongs to a waiter that died (its
descriptors closed): whoever finds it removes it. A child forked while a
thread waits closes its copies of the ticket's descriptor (the lock belongs
to the open file description it shares), so the ticket dies with the
waiter's process, not with the child.

**Waking.** One inotify instance per process and ledger object (:class:`Hub`)
watches the log (``IN_MODIFY`` on ``events.jsonl``) and the queue
(``IN_DELETE``, ``IN_MOVED_FROM``, and ``IN_CLOSE_WRITE``: a dead waiter's
descriptors closing), read by one thread while waiters are registered, which
wakes each waiter (an event, and its event loop's wake-up under
``AsyncLedger``: :class:`HubWatch`, no descriptor of its own) only for
what can let it on, as it said after its last look (``follow``): a waiter
standing behind an earlier one for that ticket leaving, a waiter with
holders in its way for the log growing; and for the exit of a pid it
watches (a holder in its way, or the waiter ahead, of another process: one
pidfd per pid for all the process's waiters, polled and closed by the
thread alone, :meth:`Hub.watch_pids`). A waiting call thus holds one
descriptor, its ticket's (a fresh tester's finding: with an eventfd and a
pidfd each, 360 waiting coroutines of one process ran out under a limit of
1024). So a hand-off wakes one waiter, not
every waiter of the process (a fresh tester's finding: with a watch of its
own each, every ticket leaving woke all N, and under ``AsyncLedger`` each
wake took its descriptors off the loop and put them back: a queue of N
cost O(N**2); and past 64 waiters the per-user limit of 128 instances made
the rest poll). Without inotify (no instance left:
``fs.inotify.max_user_instances``) or on a network file system (other hosts'
appends make no inotify event here), a waiter looks every
:data:`POLL_SECONDS` instead. Closing an inotify instance costs
milliseconds (the kernel waits for a grace period), so the hub's is closed
with the store (:meth:`FileTickets.close`), in a thread of its own.
:meth:`FileTickets.follower` (``Ledger.watch_grant``) has a watch of its own
(:class:`FileWatch`).

Sources: the ticket lock, and the "lock" recipe of ZooKeeper and etcd (a
waiter queues by a sequence number and watches its predecessor), with a
file lock standing for the session.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import threading
from typing import Any, Iterator

from ._errors import InvalidScope, LedgerIOError, ReadOnlyLedger
from ._logstore import RECHECK_SECONDS, Queued
from ._store import Store
from ._imports import first_use

log = logging.getLogger("scopeledger")

#: The queue's directory in the ledger directory.
QUEUE_DIR = "waiters"

#: Without inotify, or on a network file system, a waiter looks this often
#: (seconds).
POLL_SECONDS = 0.01

_O = os.O_CLOEXEC | os.O_NOFOLLOW

#: inotify masks (linux/inotify.h).
IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000

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


class FileTicket:
    """A ticket of a ledger directory: ``number``, the locked descriptor
    ``fd``, its ``path``."""

    __slots__ = ("number", "fd", "path")

    def __init__(self, number: int, fd: int, path: str) -> None:
        self.number = number
        self.fd = fd
        self.path = path


class FileTickets:
    """The queue of one ledger directory (see the module docstring); made by
    ``FileStore.tickets()``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.dir = os.path.join(store.path, QUEUE_DIR)
        self._log_path = store.log_path
        self._hub: Hub | None = None

    def _make_dir(self) -> None:
        """``waiters/``, made 0700 if need be.

        Raises:
            InvalidScope: it belongs to another user.
            LedgerIOError: the OS refused (naming the directory).
        """
        try:
            try:
                os.mkdir(self.dir, 0o700)
            except FileExistsError:
                pass
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | _O)
        except OSError as exc:
            raise LedgerIOError(self.dir, "make the waiters' queue", exc) from exc
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise InvalidScope(f"cannot wait: {self.dir} belongs to uid {st.st_uid}")
            if st.st_mode & 0o777 != 0o700:
                os.fchmod(fd, 0o700)
        except OSError as exc:
            raise LedgerIOError(self.dir, "make the waiters' queue", exc) from exc
        finally:
            os.close(fd)

    def join(self, request: bytes) -> FileTicket:
        """Take the next ticket, its descriptor locked. The file is made
        unnamed (``O_TMPFILE``) and linked in once complete and locked, so
        that no other name comes and goes in the queue (each would wake
        every waiter); where the file system has no ``O_TMPFILE``, under a
        temporary name.

        Raises:
            ReadOnlyLedger: the directory was opened read-only.
            InvalidScope: ``waiters/`` belongs to another user.
            LedgerIOError: the file system refused (a full disk: ENOSPC),
                naming the ticket's file (``waiters/<number>``, the number
                it was to take; the directory when it could not be made).
                Nothing is left behind: the file is linked in only once
                complete, and an unnamed one goes with its descriptor.
        """
        if self._store.readonly:
            raise ReadOnlyLedger(self._store.path, "wait in its queue")
        self._make_dir()
        tmp = None
        try:
            fd = os.open(self.dir, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
            src = f"/proc/self/fd/{fd}"
        except (OSError, AttributeError):
            tmp = src = os.path.join(self.dir, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")  # (not secrets: OpenSSL)
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O, 0o600)
            except OSError as exc:
                raise LedgerIOError(tmp, "create a waiter's ticket", exc) from exc
        # An exception at any point (a signal handler's) before the ticket is
        # returned closes its descriptor (its lock goes with it): nothing
        # after the return (no finally) can strand a live ticket.
        path = None
        number = 0
        verb = "create a waiter's ticket"
        try:
            dirfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | _O)
            try:
                os.fchmod(fd, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                # (the number it is to take, first: the file an error names)
                number = max((n for n, _ in self._numbers()), default=0) + 1
                verb = "write a waiter's ticket"
                left = memoryview(request)
                while left:  # (a short write: the rest, whose write says why it cannot)
                    left = left[os.write(fd, left):]
                verb = "link a waiter's ticket"
                while True:
                    try:
                        # linkat(AT_SYMLINK_FOLLOW): /proc/self/fd/N to the unnamed file (CPython
                        # calls linkat, which follows, only with a dir_fd).
                        os.link(src, f"{number:016d}", dst_dir_fd=dirfd, follow_symlinks=True)
                        path = os.path.join(self.dir, f"{number:016d}")
                        break
                    except FileExistsError:
                        number += 1
            finally:
                os.close(dirfd)
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
            _ticket_fds.add(fd)
            return FileTicket(number, fd, path)
        except BaseException as exc:
            _ticket_fds.discard(fd)
            if path is not None:  # (linked: taken out again; else dead, and removed by whoever meets it)
                try:
                    os.unlink(path)
                except OSError:
                    pass
            os.close(fd)
            if isinstance(exc, OSError) and not isinstance(exc, LedgerIOError):
                where = os.path.join(self.dir, f"{number:016d}") if number else tmp or self.dir
                raise LedgerIOError(where, verb, exc) from exc
            raise

    def leave(self, ticket: Any) -> None:
        """Remove the ticket (its file, then its lock)."""
        if ticket is None:
            return
        fd = ticket.fd
        if fd not in _ticket_fds:
            return  # closed already (by this call, or in a forked child)
        try:
            os.unlink(ticket.path)
        except OSError:
            pass
        _ticket_fds.discard(fd)
        os.close(fd)

    @staticmethod
    def lost(ticket: Any) -> bool:
        return False  # a file lock is lost only with its process

    def _numbers(self) -> list[tuple[int, os.DirEntry[str]]]:
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise LedgerIOError(self.dir, "read the waiters' queue", exc) from exc
        out = []
        for e in entries:
            if len(e.name) == 16 and e.name.isdigit():
                out.append((int(e.name), e))
        out.sort(key=lambda x: x[0])
        return out

    def earlier(self, before: int | None) -> Iterator[Queued]:
        """The tickets numbered below ``before`` (``None``: all), nearest
        first: ``(number, (name, inode, ctime ns), entry)``, each looked at
        (``stat``) only when the reader gets to it (a waiter reads on only
        to the nearest it stands back for: one in a queue of hundreds). The
        key tells a ticket from an earlier one of the same number: numbers
        start at 1 again once the queue is empty, and the file system may
        give the new file the inode the last one freed at once (ext4 does),
        but not the same change time (the link that named it)."""
        for number, entry in reversed(self._numbers()):
            if before is not None and number >= before:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # (gone since the listing: it left)
            yield number, (entry.name, st.st_ino, st.st_ctime_ns), entry

    @staticmethod
    def read(entry: Any) -> bytes | None:
        try:
            fd = os.open(entry.path, os.O_RDONLY | _O | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            return os.read(fd, 1 << 26)
        except OSError:
            return None
        finally:
            os.close(fd)

    @staticmethod
    def alive(entry: Any) -> bool:
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
                raise LedgerIOError(entry.path, "test a waiter's ticket's lock", exc) from exc
            try:  # nobody holds it: its waiter died
                os.unlink(entry.path)
            except OSError:
                pass
            return False
        finally:
            os.close(fd)

    @staticmethod
    def gone(number: int, entry: Any) -> bool:
        """A lock still held is held by a live process: the ticket's lock
        goes with its waiter's descriptors, before its death can be seen
        (one that a child kept is closed at the fork), so its waiter being
        gone means another process holds the file locked: not dead."""
        return False

    def watch(self, ticket: Any) -> "HubWatch":
        """What wakes the waiter holding ``ticket`` (``None``: a follower
        of the log): a watch on this process's :class:`Hub` of this queue
        (one inotify instance for all its waiters), made at the first."""
        hub = self._hub
        if hub is None or hub.pid != os.getpid():
            hub = self._hub = Hub(self._log_path, self.dir, self._store.network_fs is not None)
        return hub.watch(ticket is not None)

    def done(self, watch: Any) -> None:
        """``watch`` is not used any more: it stops being woken and is closed
        (its eventfd; the hub's inotify instance stays, for this process's
        other waiters, until :meth:`close`)."""
        watch.close()

    def follower(self) -> "FileWatch":
        """A watch of the log alone, of the caller's own (not on this
        process's :class:`Hub`, which serves waiters): inotify on the log
        (none on a network file system or without inotify: no descriptor
        then). Close it when done."""
        return FileWatch(self._log_path, self._store.network_fs is not None)

    def close(self) -> None:
        """Close this process's hub: its inotify instance counts against a
        per-user limit (``fs.inotify.max_user_instances``, 128 by default)."""
        hub, self._hub = self._hub, None
        if hub is not None and hub.pid == os.getpid():
            hub.close()


def _inotify(path: str, mask: int) -> Any:
    with first_use:
        from inotify_simple import INotify

    ino = INotify(nonblocking=True)
    try:
        ino.add_watch(path, mask)
    except OSError:
        ino.close()
        raise
    return ino


class FileWatch:
    """What wakes a follower of a ledger directory's log
    (:meth:`FileTickets.follower`: ``Ledger.watch_grant``): an inotify
    instance of its own on the log; none on a network file system or
    without inotify (no descriptor; :attr:`period` is then
    :data:`POLL_SECONDS`). Waiters are woken by this process's :class:`Hub`
    instead (:class:`HubWatch`)."""

    def __init__(self, log_path: str, network: bool) -> None:
        self.log_watch: Any = None
        if not network:
            try:
                self.log_watch = _inotify(log_path, IN_MODIFY)
            except (OSError, ImportError) as exc:
                log.debug("waiting without inotify (looking every %gs): %s", POLL_SECONDS, exc)
        #: The longest sleep between two looks, seconds.
        self.period = RECHECK_SECONDS if self.log_watch is not None else POLL_SECONDS

    def fds(self, log_too: bool) -> list[int]:
        return [self.log_watch.fileno()] if self.log_watch is not None and log_too else []

    def changes(self) -> tuple[bool, list[int] | None]:
        """Whether the log was modified; no ticket is watched (``[]``;
        ``None``: the instance could not be read)."""
        if self.log_watch is None:
            return False, []
        try:
            return bool(list(self.log_watch.read(timeout=0))), []
        except OSError:
            return False, None

    @staticmethod
    def follow(log_too: bool, behind: int | None) -> bool:
        """Nothing to change: it watches the log alone."""
        return False

    def close(self) -> None:
        """Close the inotify instance in a thread of its own: closing one
        waits for the kernel (an RCU grace period, about 10 ms measured on 2
        shared cores), which no caller (a watch that ends) should wait for."""
        ino, self.log_watch = self.log_watch, None
        if ino is not None:
            threading.Thread(target=_close_all, args=([ino],), name="scopeledger-inotify-close", daemon=True).start()


def _close_all(inos: list[Any]) -> None:
    for ino in inos:
        ino.close()


class Hub:
    """What wakes this process's waiters on one ledger directory: one inotify
    instance, on the log (``IN_MODIFY``) and on the queue (``IN_DELETE``,
    ``IN_CLOSE_WRITE``, ``IN_MOVED_FROM``), read by one thread (``scopeledger-waiters``,
    running while a waiter is registered), which wakes only the waiters the
    change can let on (each a :class:`HubWatch`: an ``eventfd`` of its own):
    those that watch the log when it grew, and the waiter standing behind a
    ticket when that ticket left. So a hand-off wakes one waiter, not every
    waiter of the process, and a thousand waiters take one inotify instance,
    not two each from a per-user limit of 128 (past which they polled every
    :data:`POLL_SECONDS`). Without inotify (a network file system, no
    instance left) nothing is read and each waiter looks every
    :data:`POLL_SECONDS`."""

    def __init__(self, log_path: str, queue_dir: str, network: bool) -> None:
        self.pid = os.getpid()
        # Re-entrant: an exception raised between a 'with' block's end and its
        # __exit__ (a tracer's can be: tests/test_signals_forks.py) leaves it
        # held by the caller's thread, which must not stop that thread's next call.
        self._lock = threading.RLock()
        self._queue_dir = queue_dir
        self.ino: Any = None
        self._log_wd = self._queue_wd = -2
        self._thread: threading.Thread | None = None
        self._ctl = -1
        #: Waiters woken by the log growing; by ticket N leaving; by any ticket leaving.
        self._log: set[HubWatch] = set()
        self._behind: dict[int, set[HubWatch]] = {}
        self._any: set[HubWatch] = set()
        self._count = 0
        #: The pids the waiters watch (:meth:`watch_pids`), one pidfd each
        #: however many waiters watch it, polled and closed by the thread
        #: alone (never while it polls them); and who watches each.
        self._pidfds: dict[int, int] = {}
        self._watchers: dict[int, set[HubWatch]] = {}
        if not network:
            try:
                with first_use:
                    from inotify_simple import INotify

                self.ino = INotify(nonblocking=True)
                self._log_wd = self.ino.add_watch(log_path, IN_MODIFY)
                self._ctl = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            except (OSError, ImportError, AttributeError) as exc:
                log.debug("waiting without inotify (looking every %gs): %s", POLL_SECONDS, exc)
                self._close_ino()
        #: The longest sleep between two looks, seconds.
        self.period = RECHECK_SECONDS if self.ino is not None else POLL_SECONDS

    def _close_ino(self) -> None:
        ino, self.ino = self.ino, None
        if self._ctl >= 0:
            os.close(self._ctl)
            self._ctl = -1
        if ino is not None:  # (closing one waits for the kernel: never on a caller's thread)
            threading.Thread(target=_close_all, args=([ino],), name="scopeledger-inotify-close", daemon=True).start()

    def watch(self, queue: bool) -> "HubWatch":
        """A waiter's watch: woken by everything (the log, and with
        ``queue`` every ticket leaving) until its first :meth:`HubWatch.follow`."""
        w = HubWatch(self)
        with self._lock:
            if self.ino is not None and queue and self._queue_wd == -2:
                try:  # (the queue's directory exists once a ticket joined)
                    self._queue_wd = self.ino.add_watch(self._queue_dir, IN_DELETE | IN_CLOSE_WRITE | IN_MOVED_FROM)
                except OSError as exc:
                    log.debug("waiting without inotify (looking every %gs): %s", POLL_SECONDS, exc)
                    self._queue_wd = -1
                    self.period = POLL_SECONDS
            self._set(w, True, None, queue)
            self._count += 1
            if self.ino is not None and self._thread is None:
                thread = threading.Thread(target=self._run, name="scopeledger-waiters", daemon=True)
                thread.start()
                self._thread = thread
        return w

    def _set(self, w: "HubWatch", log_too: bool, behind: int | None, any_ticket: bool) -> None:
        """Under the lock: what wakes ``w`` from now on."""
        self._unset(w)
        w.interest = (log_too, behind, any_ticket)
        if log_too:
            self._log.add(w)
        if behind is not None:
            self._behind.setdefault(behind, set()).add(w)
        if any_ticket:
            self._any.add(w)

    def _unset(self, w: "HubWatch") -> None:
        self._log.discard(w)
        self._any.discard(w)
        behind = w.interest[1]
        if behind is not None:
            ws = self._behind.get(behind)
            if ws is not None:
                ws.discard(w)
                if not ws:
                    del self._behind[behind]

    def follow(self, w: "HubWatch", log_too: bool, behind: int | None) -> bool:
        interest = (log_too, behind, not log_too and behind is None)
        with self._lock:
            if w.interest == interest or w.closed:
                return False
            self._set(w, *interest)
        return True

    def watch_pids(self, w: "HubWatch", pids: tuple[int, ...]) -> bool | None:
        """Wake ``w`` when one of ``pids`` exits (and for no other pid), by
        one pidfd per pid for all this process's waiters, which the thread
        polls. Whether one of them was gone already; ``None`` when the hub
        watches no pid (no thread: the waiter opens its own pidfds)."""
        with self._lock:
            if w.closed or self.ino is None or self._ctl < 0 or self._thread is None:
                for pid in list(w.pids):
                    self._unwatch(w, pid)
                return None
            poke = False
            for pid in list(w.pids):
                if pid not in pids:
                    poke = self._unwatch(w, pid) or poke
            gone = False
            for pid in pids:
                if pid in w.pids:
                    continue
                if pid not in self._pidfds:
                    try:
                        self._pidfds[pid] = os.pidfd_open(pid)
                    except ProcessLookupError:
                        gone = True
                        continue
                    except OSError:
                        continue  # no pidfds here (the periodic look stands in)
                    poke = True
                self._watchers.setdefault(pid, set()).add(w)
                w.pids.add(pid)
            if poke:
                os.eventfd_write(self._ctl, 1)  # (the thread polls the pidfds wanted now)
            return gone

    def _unwatch(self, w: "HubWatch", pid: int) -> bool:
        """Under the lock: ``w`` stops watching ``pid``; whether nobody
        watches it any more (its pidfd is closed by the thread)."""
        w.pids.discard(pid)
        ws = self._watchers.get(pid)
        if ws is None:
            return False
        ws.discard(w)
        if ws:
            return False
        del self._watchers[pid]
        return True

    def drop(self, w: "HubWatch") -> None:
        with self._lock:
            if w.closed:
                return
            w.closed = True
            self._unset(w)
            poke = False
            for pid in list(w.pids):
                poke = self._unwatch(w, pid) or poke
            self._count -= 1
            if (poke or not self._count) and self._ctl >= 0:
                os.eventfd_write(self._ctl, 1)  # (the thread ends, or closes a pidfd nobody watches)

    def _run(self) -> None:
        ino, ctl = self.ino, self._ctl
        while True:
            with self._lock:
                for pid in [pid for pid in self._pidfds if pid not in self._watchers]:
                    os.close(self._pidfds.pop(pid))  # (nobody watches it: closed here, never while polled)
                polled = {fd: pid for pid, fd in self._pidfds.items()}
            p = select.poll()
            p.register(ino.fileno(), select.POLLIN)
            p.register(ctl, select.POLLIN)
            for fd in polled:
                p.register(fd, select.POLLIN)
            exited: list[int] = []
            try:
                woke = p.poll()
                exited = [polled[fd] for fd, _ in woke if fd in polled]
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(ctl)
                events = ino.read(timeout=0)
            except (OSError, ValueError):
                events = None  # (closed meanwhile: the waiters look, and the thread ends below)
            with self._lock:
                for pid in exited:  # (a pidfd stays readable: closed now, opened again if watched again)
                    os.close(self._pidfds.pop(pid))
                    for w in self._watchers.pop(pid, ()):
                        w.pids.discard(pid)
                        w.exit_seen()
                if events:
                    self._dispatch(events)
                elif events is None:
                    for w in self._log | self._any | {x for ws in self._behind.values() for x in ws}:
                        w.tell(False, None)
                if not self._count or self.ino is not ino:
                    # Ended: its pidfds closed (a hub closed with waiters registered
                    # wakes them; they look, and watch their pids themselves).
                    for fd in self._pidfds.values():
                        os.close(fd)
                    self._pidfds.clear()
                    for pid, ws in self._watchers.items():
                        for w in ws:
                            w.pids.discard(pid)
                            w.tell(False, None)
                    self._watchers.clear()
                    self._thread = None
                    return

    def _dispatch(self, events: Any) -> None:
        """Under the lock: wake the waiters ``events`` may let on."""
        grew = False
        left: list[int] = []
        lost = False
        for ev in events:
            if ev.mask & IN_Q_OVERFLOW:
                lost = True
            elif ev.wd == self._log_wd:
                grew = True
            elif ev.wd == self._queue_wd and ev.name.isdigit():
                left.append(int(ev.name))
        if lost:  # events were lost: one that mattered may be among them
            for w in self._log | self._any | {x for ws in self._behind.values() for x in ws}:
                w.tell(False, None)
            return
        if grew:
            for w in self._log:
                w.tell(True, [])
        if left:
            for w in self._any:
                w.tell(False, left)
            for n in left:
                for w in self._behind.get(n, ()):
                    w.tell(False, [n])

    def close(self) -> None:
        """Close the inotify instance (its thread ends; waiters still
        registered look every :data:`POLL_SECONDS`)."""
        with self._lock:
            ctl = self._ctl
            self._ctl = -1
            ino, self.ino = self.ino, None
            self.period = POLL_SECONDS
            if ctl >= 0:
                os.eventfd_write(ctl, 1)
        # The thread owns nothing but may be in poll() on these: close them
        # once it has ended (in a thread of its own: never on a caller's).
        thread = self._thread
        if ino is not None or ctl >= 0:
            threading.Thread(target=_close_after, args=(thread, ino, ctl), name="scopeledger-inotify-close",
                             daemon=True).start()


def _close_after(thread: threading.Thread | None, ino: Any, ctl: int) -> None:
    if thread is not None and thread.ident is not None:
        thread.join()
    if ctl >= 0:
        os.close(ctl)
    if ino is not None:
        ino.close()


class HubWatch:
    """One waiter's :class:`~scopeledger._logstore.Wakeup` on a
    :class:`Hub`: no descriptor of its own (a waiting call holds its
    ticket's alone: a fresh tester's finding, 1000 waiting coroutines of one
    process ran out of descriptors under a limit of 1024). The hub's thread
    sets :attr:`event` (and calls :attr:`notify`, an event loop's wake-up)
    when a change may let this waiter on (what :meth:`follow` last named, or
    the exit of a pid it watches, :meth:`watch_pids`), and notes what it was."""

    __slots__ = ("hub", "interest", "closed", "pid", "pids", "event", "notify", "exited", "_grew", "_left",
                 "_pid_exited", "__weakref__")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.pid = hub.pid
        self.interest: tuple[bool, int | None, bool] = (False, None, False)
        self.closed = False
        #: The pids whose exit wakes it (through the hub's pidfds).
        self.pids: set[int] = set()
        self.event = threading.Event()
        self.notify: Any = None
        #: Whether a watched pid exited, as of the last :meth:`changes`.
        self.exited = False
        self._pid_exited = False
        self._grew = False
        self._left: list[int] | None = []

    @property
    def hubbed(self) -> bool:
        """Whether the hub's thread wakes it (:attr:`event`): else nothing
        does (no inotify, the hub closed, a forked child), and the waiter
        looks every :attr:`period`."""
        hub = self.hub
        return self.pid == os.getpid() and hub.ino is not None and hub._thread is not None and not self.closed

    def watch_pids(self, pids: tuple[int, ...]) -> bool | None:
        """See :meth:`Hub.watch_pids`."""
        if self.pid != os.getpid():
            return None
        return self.hub.watch_pids(self, pids)

    def set_notify(self, fn: Any) -> None:
        """Call ``fn`` (from the hub's thread) when woken from now on
        (``None``: no more); at once if woken already."""
        with self.hub._lock:
            self.notify = fn
            if fn is not None and self.event.is_set():
                self._call(fn)

    @staticmethod
    def _call(fn: Any) -> None:
        try:
            fn()
        except RuntimeError:
            pass  # (an event loop closed meanwhile)

    def _wake(self) -> None:
        self.event.set()
        if self.notify is not None:
            self._call(self.notify)

    def exit_seen(self) -> None:
        """Under the hub's lock: a watched pid exited."""
        self._pid_exited = True
        self._wake()

    @property
    def period(self) -> float:
        return self.hub.period

    def tell(self, grew: bool, left: list[int] | None) -> None:
        """Under the hub's lock: a change (``left`` ``None``: unknown)."""
        self._grew = self._grew or grew
        if left is None or self._left is None:
            self._left = None
        else:
            self._left.extend(left)
        self._wake()

    @staticmethod
    def fds(log_too: bool) -> list[int]:
        return []  # (woken by its event: see the class docstring)

    def changes(self) -> tuple[bool, list[int] | None]:
        """As ``Wakeup.changes``; :attr:`exited` says whether a watched pid exited."""
        with self.hub._lock:
            grew, left, self.exited = self._grew, self._left, self._pid_exited
            self._grew, self._left, self._pid_exited = False, [], False
            self.event.clear()
        return grew, left

    def follow(self, log_too: bool, behind: int | None) -> bool:
        """Be woken by the log growing (``log_too``) and ticket ``behind``
        leaving (with neither: any ticket leaving). Whether that changed."""
        if self.pid != os.getpid():
            return False
        return self.hub.follow(self, log_too, behind)

    def close(self) -> None:
        if self.pid == os.getpid():
            self.hub.drop(self)
        self.notify = None
