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

**Waking.** One inotify instance watches the log (``IN_MODIFY`` on
``events.jsonl``), another the queue (``IN_DELETE``, ``IN_MOVED_FROM``, and
``IN_CLOSE_WRITE``: a dead waiter's descriptors closing): a waiter standing
behind an earlier one polls only the queue's, so appends to the log do not
wake it (8 waiters on 2 cores woken together delayed the one that
mattered). Without inotify (no more instances: ``fs.inotify.max_user_instances``)
or on a network file system (other hosts' appends make no inotify event
here), a waiter looks every :data:`POLL_SECONDS` instead. Closing an inotify
instance costs milliseconds (the kernel waits for a grace period), so a
waiter that is done gives its watch back (:meth:`FileTickets.done`) and the
next waiter takes it; :meth:`FileTickets.close` closes those kept.

Sources: the ticket lock, and the "lock" recipe of ZooKeeper and etcd (a
waiter queues by a sequence number and watches its predecessor), with a
file lock standing for the session.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from typing import Any

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

#: At most this many watches kept for the next waiter, per ledger opened.
POOL = 8

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
        self._pool: list[FileWatch] = []

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

    def earlier(self, before: int | None) -> list[Queued]:
        """The tickets numbered below ``before`` (``None``: all), nearest
        first: ``(number, (name, inode, ctime ns), entry)``. The key tells
        a ticket from an earlier one of the same number: numbers start at 1
        again once the queue is empty, and the file system may give the new
        file the inode the last one freed at once (ext4 does), but not the
        same change time (the link that named it)."""
        out: list[Queued] = []
        for number, entry in reversed(self._numbers()):
            if before is not None and number >= before:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # (gone since the listing: it left)
            out.append((number, (entry.name, st.st_ino, st.st_ctime_ns), entry))
        return out

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

    def watch(self, ticket: Any) -> "FileWatch":
        """A watch of the log (and, for a ticket, of the queue) from those
        kept, or a new one."""
        queue = ticket is not None
        pool = self._pool
        while pool:
            try:
                w = pool.pop()
            except IndexError:
                break
            if (w.queue_watch is not None) == queue and w.pid == os.getpid():
                w.changes()  # what happened before this waiter came is not its news
                return w
            w.close()
        return FileWatch(self._log_path, self.dir if queue else None, self._store.network_fs is not None)

    def done(self, watch: Any) -> None:
        """Keep ``watch`` for the next waiter (at most :data:`POOL`), or close it."""
        if watch.log_watch is not None and len(self._pool) < POOL and watch.pid == os.getpid():
            self._pool.append(watch)
        else:
            watch.close()

    def follower(self) -> "FileWatch":
        """A watch of the log alone, of the caller's own (never one kept for
        waiters): inotify on the log (none on a network file system or
        without inotify: no descriptor then). Close it when done."""
        return FileWatch(self._log_path, None, self._store.network_fs is not None)

    def close(self) -> None:
        """Close the watches kept: their inotify instances count against a
        per-user limit (``fs.inotify.max_user_instances``, 128 by default)."""
        pool, self._pool = self._pool, []
        for w in pool:
            w.close()


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
    """What wakes a waiter on a ledger directory: an inotify instance on the
    log, and one on the queue (``queue_dir``; ``None``: the log alone); none
    on a network file system or without inotify (:attr:`period` is then
    :data:`POLL_SECONDS`)."""

    def __init__(self, log_path: str, queue_dir: str | None, network: bool) -> None:
        self.log_watch: Any = None
        self.queue_watch: Any = None
        self.pid = os.getpid()
        if not network:
            try:
                self.log_watch = _inotify(log_path, IN_MODIFY)
                if queue_dir is not None:
                    self.queue_watch = _inotify(queue_dir, IN_DELETE | IN_CLOSE_WRITE | IN_MOVED_FROM)
            except (OSError, ImportError) as exc:
                log.debug("waiting without inotify (looking every %gs): %s", POLL_SECONDS, exc)
                self.close()
        #: The longest sleep between two looks, seconds.
        self.period = RECHECK_SECONDS if self.log_watch is not None else POLL_SECONDS

    def fds(self, log_too: bool) -> list[int]:
        out = []
        if self.log_watch is not None and log_too:
            out.append(self.log_watch.fileno())
        if self.queue_watch is not None:
            out.append(self.queue_watch.fileno())
        return out

    def changes(self) -> tuple[bool, list[int] | None]:
        """Whether the log was modified, and the tickets that left or closed
        (names that are not tickets are not; ``None``: the kernel's queue
        overflowed, or an instance could not be read)."""
        grew = False
        left: list[int] | None = []
        if self.log_watch is not None:
            try:
                grew = bool(list(self.log_watch.read(timeout=0)))
            except OSError:
                left = None
        if self.queue_watch is not None:
            try:
                for ev in self.queue_watch.read(timeout=0):
                    name = ev.name
                    if ev.mask & IN_Q_OVERFLOW:
                        left = None  # events were lost: one that mattered may be among them
                    elif left is not None and name.isdigit():
                        left.append(int(name))
            except OSError:
                left = None
        return grew, left

    @staticmethod
    def follow(log_too: bool, behind: int | None) -> bool:
        """Nothing to change: the instances watch the log and the whole
        queue (:meth:`fds` leaves the log out when not ``log_too``)."""
        return False

    def close(self) -> None:
        """Close the inotify instances in a thread of their own: closing one
        waits for the kernel (an RCU grace period, about 10 ms measured on 2
        shared cores), which neither a caller just granted nor an event loop
        (AsyncLedger gives watches back on the loop) should wait for."""
        inos = [ino for ino in (self.log_watch, self.queue_watch) if ino is not None]
        self.log_watch = self.queue_watch = None
        if inos:
            threading.Thread(target=_close_all, args=(inos,), name="scopeledger-inotify-close", daemon=True).start()


def _close_all(inos: list[Any]) -> None:
    for ino in inos:
        ino.close()
