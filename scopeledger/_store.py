"""Files of a ledger directory, and the one place that takes the lock.

Layout of a ledger directory (mode 0700, every file 0600)::

    events.jsonl          the append-only log, one JSON event per line; also
                          the flock(2) target of the ledger's lock
    gate                  flock(2) target: shared by waiters that waited long
                          (see Store.acquire); empty, and safe to delete
    lock                  made by earlier versions (the lock was a file of its
                          own, and deleting it let two writers in); unused
    ledger-id             this ledger's identity: 32 hex digits (128 random
                          bits) and a newline, made with the ledger's first
                          snapshot (not by ``ledger init``: copies of an
                          empty ledger get ids of their own); every snapshot
                          written here carries it (see _snapshots), so that
                          one copied from another ledger is told apart; a
                          copy of the ledger keeps it (see Store.ledger_id)
    snapshots/            snap-<seq:016d>.json checkpoints (see _snapshots)
    torn/                 fragments of torn last lines, set aside
    cut/                  what ``Ledger.repair`` cut off the log: one directory
                          per repair, holding the bytes cut, the snapshots
                          past the cut and a record of it (see Store.cut)

Every descriptor is opened close-on-exec, with ``O_NOFOLLOW`` relative to a
descriptor of the directory, so a symlink planted where a file should be is
refused without touching its target (and ``O_NONBLOCK``, so a planted FIFO
cannot hang an open). Modes are set with ``fchmod`` on the
new descriptor, never by changing the process umask (other threads would
see it).

Pre-existing files and directories: owned by another user, writable by
group or others, a symlink, a hard link, or not the right kind of file:
refused (:class:`UnsafeLedgerPath`). Merely readable by group or others:
tightened to 0700/0600 with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import threading
import time
import weakref
from typing import Any, Callable, Iterator, Sequence

from ._errors import (CorruptLedger, LedgerError, LedgerIOError, LockTimeout, NoLedger, ReadOnlyLedger,
                      UnsafeLedgerPath)
from ._imports import first_use

log = logging.getLogger("scopeledger")

LOCK_NAME = "lock"  # the lock file of earlier versions (see the layout above)
GATE_NAME = "gate"
LOG_NAME = "events.jsonl"
ID_NAME = "ledger-id"
#: A ledger id as the file and a snapshot header hold it.
LEDGER_ID = re.compile(r"^[0-9a-f]{32}$")
#: The id of a ledger not read yet (``Store.ledger_id``).
_UNREAD = ""
#: The id of a ledger that has none yet (``Store.has_no_id``).
_NONE_YET = "-"
#: What a warning about a bad ``ledger-id`` tells to do.
_ID_REMEDY = "remove it: the ledger takes its id back from its own snapshots, or makes a new one"
SNAPSHOT_DIR = "snapshots"
#: A snapshot file's name in ``snapshots/``: ``snap-<seq, 16 digits>.json``.
SNAPSHOT_NAME = re.compile(r"^snap-(\d{16})\.json$")
TORN_DIR = "torn"
CUT_DIR = "cut"
#: In a repair's directory under ``cut/``: the bytes cut off the log, exactly
#: as they were, and the record of the cut (JSON).
CUT_LOG_NAME = "events.jsonl.cut"
CUT_RECORD_NAME = "record.json"
#: The record's format (its ``format`` key).
CUT_RECORD_FORMAT = 1
#: The most seqs past the log's end that a snapshot set aside may prove were
#: given (a record's ``through``) and so be kept void by ``void`` lines
#: (about 250 bytes each: 2.5 GB): a snapshot claiming more is refused as
#: proof (``Ledger.repair`` and opening say so), and a record claiming more
#: is not taken (``Store.cut_reach``). See RELIABILITY.md, "Repair".
LOST_VOID_MAX = 10_000_000

#: After this many seconds of waiting for the lock, say once which ledger.
WAIT_NOTICE_SECONDS = 1.0

#: A busy lock is first polled for this many seconds (yielding the CPU, or
#: doing the caller's ``on_wait`` work, between tries) before the process
#: sleeps in ``flock``. A lock is normally held for tens of microseconds; a
#: sleeping waiter is woken late (and all waiters at once), which with 4
#: processes on 2 cores gave a p99 wait of ~6 ms against ~1.4 ms polling
#: (BENCHMARKS.md, "contended"). Bounded, so a long holder (fsync on a slow
#: disk) costs at most this much CPU per waiter before it sleeps.
SPIN_SECONDS = 0.002

#: A newcomer stands back at most this many seconds while ``gate`` is held,
#: that is while a waiter that polled ``SPIN_SECONDS`` in vain sleeps in
#: ``flock``; so the sleeper, woken when the lock is released, takes it before
#: processes that are hot on a CPU. Without it a sleeper could lose the lock
#: many times in a row (min/max pairs per process 0.46 with 4 processes on 2
#: cores, BENCHMARKS.md). Bounded, so a waiter stopped (SIGSTOP, a frozen
#: cgroup) while it holds ``gate`` costs an acquisition this much at most,
#: and then, for ``GATE_DISTRUST_SECONDS``, nothing. A caller whose timeout
#: is shorter (a try-lock) never stands back.
DEFER_SECONDS = 0.0005

#: How long a process ignores ``gate`` after it stood back a whole
#: ``DEFER_SECONDS`` and then found the lock free at once: the sleeper did not
#: take a free lock (stopped, or starved of CPU). Without it, one waiter
#: stopped with Ctrl-Z made every acquisition of every process 0.5 ms slower
#: (one process alone 13.9x slower over 2,000 pairs; 1.1x with it).
GATE_DISTRUST_SECONDS = 0.05

# O_NONBLOCK: opening a FIFO planted where a file should be must not block
# (it is then refused as not a regular file); it changes nothing for files.
#: A descriptor attribute's value when nothing is open there.
NO_FD = -1

_O_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK

_EX_NB = fcntl.LOCK_EX | fcntl.LOCK_NB

_stores: "weakref.WeakSet[Store]" = weakref.WeakSet()


def _say_waiting(log_path: str) -> None:
    """The waiting notice: a warning (so that it reaches a user without any
    logging set up: Python's last-resort handler prints warnings) naming
    the ledger and who holds its lock (:func:`lock_holder`)."""
    log.warning("waiting for the lock on %s, %s", log_path, lock_holder(log_path))


def lock_holder(log_path: str) -> str:
    """Who holds the ``flock`` on the log at ``log_path``, for messages:
    ``'held by pid 4242 (stopped: it holds the lock until it is continued
    or killed): python3 writer.py'``, from ``/proc/locks`` (the pid as this
    PID namespace sees it), ``/proc/PID/stat`` (its state) and
    ``/proc/PID/cmdline``; or why that cannot be said (``'held by a
    process this PID namespace cannot see (another container, or another
    host sharing the directory)'``). Never raises."""
    try:
        st = os.stat(log_path)
        want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks") as f:
            rows = [line.split() for line in f]
    except OSError as exc:
        return f"held by a process that cannot be named ({exc.strerror or exc})"
    pids = []
    for row in rows:
        # "1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF"; waiters' rows have "->".
        if len(row) >= 6 and row[1] == "FLOCK" and row[3] == "WRITE" and row[5] == want:
            pids.append(row[4])
    if not pids:
        return "held by a process that /proc/locks does not show (it may have just let go)"
    out = []
    for pid in dict.fromkeys(pids):
        if not pid.isdigit() or pid == "0" or pid == "-1":
            out.append("held by a process this PID namespace cannot see (another container, or "
                       "another host sharing the directory)")
            continue
        out.append(f"held by pid {pid}{_process_summary(int(pid))}")
    return "; ".join(out)


def _process_summary(pid: int) -> str:
    """``' (stopped: ...): CMDLINE'`` for a pid, as far as ``/proc`` tells."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
        state = stat_line[stat_line.rindex(b")") + 2:][:1].decode()
    except (OSError, ValueError):
        return " (no longer running, or not visible here)"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = " ".join(f.read(4096).decode("utf-8", "replace").replace("\0", " ").split())
    except OSError:
        cmd = ""
    if len(cmd) > 200:
        cmd = cmd[:200] + "..."
    why = {"T": " (stopped: it holds the lock until it is continued or killed)",
           "t": " (stopped by a debugger: it holds the lock until it is continued or killed)",
           "D": " (in uninterruptible I/O)",
           # A zombie holds no file: its main thread has exited, others run on.
           "Z": " (its main thread has exited; its other threads run on)"}.get(state, "")
    return f"{why}: {cmd}" if cmd else why


class _WaitNotices:
    """One daemon thread per process that says once, as a warning, which
    ledger a caller blocked in ``flock`` has waited on for over
    WAIT_NOTICE_SECONDS, and who holds its lock.
    (A ``threading.Timer`` per wait cost a thread start on every contended
    acquisition: 19% of wall time with 4 processes, BENCHMARKS.md.)"""

    def __init__(self) -> None:
        self.cv = threading.Condition(threading.Lock())
        self.waits: dict[int, tuple[float, str]] = {}
        self.thread: threading.Thread | None = None
        self.counter = 0

    def begin(self, lock_path: str) -> int:
        with self.cv:
            self.counter += 1
            self.waits[self.counter] = (time.monotonic() + WAIT_NOTICE_SECONDS, lock_path)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="scopeledger-wait-notices",
                                               daemon=True)
                self.thread.start()
            self.cv.notify()
            return self.counter

    def end(self, key: int) -> None:
        with self.cv:
            self.waits.pop(key, None)

    def _run(self) -> None:
        with self.cv:
            while True:
                if not self.waits:
                    self.cv.wait()
                    continue
                now = time.monotonic()
                due = min(d for d, _ in self.waits.values())
                if due > now:
                    self.cv.wait(due - now)
                    continue
                for key, (d, path) in list(self.waits.items()):
                    if d <= now:
                        del self.waits[key]
                        _say_waiting(path)


_notices = _WaitNotices()


def _after_fork_in_child() -> None:
    global _notices
    _notices = _WaitNotices()  # the parent's thread does not exist here
    for store in list(_stores):
        store._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


#: ``scheme://``: a URL, never taken as a relative path (the plain string
#: test that tells a URL from a directory; the PostgreSQL module is imported
#: only for a URL).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def resolve_path(path: str) -> str:
    """The absolute path of ``path`` (a ledger directory, a manifest, a
    runtime directory given by the user) as the OS reaches it: relative to
    the working directory, with every ``..`` applied after the symlink
    before it is followed (``lk/../L`` with ``lk -> deep/sub`` is
    ``deep/L``, as ``open`` has it; ``os.path.abspath`` would drop ``lk/..``
    lexically and give ``./L``), so that the path shown in messages is the
    one really used. The existing part of the parent is resolved
    (``os.path.realpath``); the last component is kept as it is, so that a
    symlink planted where a ledger directory should be is still refused
    (``O_NOFOLLOW``). Trailing slashes and ``.`` components are dropped; a
    last ``..`` is resolved with the rest."""
    if _URL.match(path):  # a URL is not a directory (it would make one, password and all)
        with first_use:
            from ._pgstore import refuse_url

        raise refuse_url(path)
    if "\x00" in path:
        return os.path.abspath(path)  # no such path: refused by its user
    p = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    head, tail = os.path.split(p)
    while tail in ("", ".") and head != p:
        p = head
        head, tail = os.path.split(p)
    if tail in ("..", ""):  # a last '..', or the root directory
        return os.path.realpath(p)
    return os.path.join(os.path.realpath(head), tail)


def _makedirs_private(path: str) -> list[str]:
    """Create the missing directories of ``path``, each 0700 (fchmod'ed, so
    the umask cannot loosen or tighten them); returns those it made."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    made = []
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)
        made.append(d)
    return made


def _fsync_dir(path: str) -> None:
    """fsync the directory ``path`` (so that the names made in it survive
    a power cut).

    Raises:
        OSError: the OS refused.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: File system types on which ``flock`` does not exclude processes on other
#: hosts (or, for FUSE, on which what another host does is unknown): NFS,
#: SMB/CIFS, the VM shared folders (9p, virtiofs, vboxsf), the cluster and
#: distributed file systems, and every FUSE file system (``fuse``,
#: ``fuseblk``, ``fuse.*``: sshfs, ceph-fuse, glusterfs, ...).
NETWORK_FS_TYPES = frozenset((
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "smb2", "ncpfs", "9p", "virtiofs", "vboxsf", "vmhgfs",
    "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "orangefs", "pvfs2", "afs", "coda", "fuse",
    "fuseblk", "davfs"))


def is_network_fs(fs_type: str) -> bool:
    """Whether a file system of type ``fs_type`` (as ``/proc/self/mountinfo``
    names it: ``nfs4``, ``fuse.sshfs``) is one where ``flock`` may not
    exclude a writer on another host (:data:`NETWORK_FS_TYPES`, ``fuse.*``)."""
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse.")


def fs_type_of(path: str) -> str | None:
    """The type of the file system holding ``path``, or of its nearest
    existing parent (``ext4``, ``nfs4``, ``fuse.sshfs``), from the mount
    whose device is the path's (``/proc/self/mountinfo``); ``None`` when it
    cannot be told."""
    p = path
    while True:
        try:
            st = os.stat(p)
            break
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(p)
            if parent == p:
                return None
            p = parent
        except (OSError, ValueError):
            return None
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == dev and "-" in fields:
                    return fields[fields.index("-", 6) + 1]
    except (OSError, ValueError, IndexError):
        return None
    return None


def _refuse_a_ledger_inside_a_ledger(path: str) -> None:
    """Before a new ledger is made at ``path``: none of the directories
    above it may be a ledger (hold ``events.jsonl``). A ledger made in
    another's ``snapshots/`` or beside its log would mix its files with the
    other's.

    Raises:
        UnsafeLedgerPath: a directory above ``path`` is a ledger (named).
    """
    p = os.path.dirname(path)
    while True:
        if os.path.lexists(os.path.join(p, LOG_NAME)) or (
                os.path.lexists(os.path.join(p, GATE_NAME))
                and os.path.isdir(os.path.join(p, SNAPSHOT_DIR))):  # one whose log was lost
            raise UnsafeLedgerPath(path, f"it is inside the ledger {p}: choose a directory outside it")
        parent = os.path.dirname(p)
        if parent == p:
            return
        p = parent


def check_ledger_path(path: str) -> str:
    """Whether a new ledger (or a directory for one, ``ledger demo --dir``)
    may be made at ``path``, before anything is made: refused when a file
    on the way is not a directory, or when ``path`` is inside another
    ledger. Creates nothing.

    Returns:
        ``path`` as the OS reaches it (:func:`resolve_path`), ``str``.

    Raises:
        UnsafeLedgerPath: it names the file on the way that is not a
            directory (``is a regular file, not a directory``), or the
            ledger ``path`` is inside.
    """
    p = resolve_path(os.fspath(path))
    blocked = non_directory_on_the_way(p)
    if blocked is not None:
        raise UnsafeLedgerPath(blocked[0], blocked[1])
    _refuse_a_ledger_inside_a_ledger(p)
    return p


def non_directory_on_the_way(path: str) -> tuple[str, str] | None:
    """Why ``path`` cannot be, or be made, a directory: it, or the nearest
    existing path above it, is another kind of file. Returns ``(that file,
    'is a regular file, not a directory')``; ``None`` when it is a directory
    or could be made one, or when the OS will not say (left to whatever
    uses the path). Symlinks are followed."""
    p = path
    while True:
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(p)
            if parent == p:
                return None
            p = parent
            continue
        except (OSError, ValueError):
            return None
        if stat.S_ISDIR(st.st_mode):
            return None
        return p, f"is {kind_of(st.st_mode)}, not a directory"


def _check_owned(path: str, st: os.stat_result, owner: int | None = None) -> None:
    """Refuse ``path`` (whose ``lstat`` is ``st``) unless it is owned by
    ``owner`` (``None``: this user) and not writable by group or others.

    Raises:
        UnsafeLedgerPath: naming the owner or the mode.
    """
    if owner is None and st.st_uid != os.geteuid():
        raise UnsafeLedgerPath(path, f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if owner is not None and st.st_uid != owner:
        raise UnsafeLedgerPath(path, f"owned by uid {st.st_uid}, not by the ledger directory's owner "
                                     f"(uid {owner})")
    if st.st_mode & 0o022:
        raise UnsafeLedgerPath(path, f"mode {stat.S_IMODE(st.st_mode):04o} is writable by group or others")


#: What a ledger directory may hold; one holding nothing else is a ledger
#: (perhaps one another process is creating right now: it makes these one
#: by one).
_LAYOUT = frozenset((LOCK_NAME, GATE_NAME, LOG_NAME, ID_NAME, SNAPSHOT_DIR, TORN_DIR, CUT_DIR))


def _write_protected(path: str, mode: int) -> ReadOnlyLedger:
    """The refusal for a ledger file or directory of mode ``mode`` without
    its owner's write bit (saying whether it can still be read)."""
    if not mode & 0o400:
        return ReadOnlyLedger(path, "write to the ledger",
                              f"{path} is mode {mode:04o}: its owner may neither write nor read it "
                              "(chmod u+rw, or u+rwx for a directory, to use it again)")
    return ReadOnlyLedger(path, "write to the ledger",
                          f"{path} is mode {mode:04o}, write-protected (the commands that only "
                          "look, and Ledger.open(readonly=True), still read it)")


def _looks_like_a_ledger(fd: int) -> bool:
    """An empty directory, or one holding a ledger's log or lock file, or
    nothing but names of a ledger's layout."""
    names = os.listdir(fd)
    return LOG_NAME in names or LOCK_NAME in names or _LAYOUT.issuperset(names)


@contextlib.contextmanager
def _naming(display: str) -> Iterator[None]:
    """Make an OSError raised in the block name ``display``, the full path:
    a call relative to a directory descriptor names only the bare name it
    was given (``permission denied: events.jsonl``), ``fchmod`` nothing.
    (A LedgerError, which names its path in its message, passes as is.)"""
    try:
        yield
    except LedgerError:
        raise
    except OSError as exc:
        exc.filename = display
        raise


def refused_at_open(exc: OSError, path: str) -> LedgerError:
    """The :class:`LedgerError` for an OS refusal met while opening the
    ledger at ``path`` (``exc.filename``, when set, names the file):
    :class:`ReadOnlyLedger` for a read-only file system (EROFS), else
    :class:`LedgerIOError`. The caller raises it ``from exc``."""
    where = exc.filename if isinstance(exc.filename, str) else path
    if exc.errno == errno.EROFS:
        return ReadOnlyLedger(where, "write to the ledger",
                              f"{where} is on a read-only file system (the commands that only "
                              "look, and Ledger.open(readonly=True), still read it)")
    return LedgerIOError(where, "open the ledger", exc)


#: What each kind of file is called in messages (by ``stat.S_IFMT``).
_KINDS = {stat.S_IFREG: "a regular file", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


def kind_of(mode: int) -> str:
    """``'a socket'``, ``'a FIFO'``, ...: the kind of a file of ``st_mode`` ``mode``."""
    return _KINDS.get(stat.S_IFMT(mode), "an unknown kind of file")


def _not_a(dirfd: int | None, name: str, wanted: str) -> str:
    """Why ``name`` is refused where a ``wanted`` (``'directory'``) should
    be: ``'is a symlink, not a directory'``; vaguer if it cannot be looked at."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return f"is a symlink or not a {wanted}"
    return f"is {kind_of(st.st_mode)}, not a {wanted}"


def open_dir_fd(dirfd: int | None, name: str, display: str, create: bool = True,
                ledger_root: bool = False, readonly: bool = False) -> int:
    """Open (creating 0700 if missing) a private directory without following
    a symlink at its last component. ``readonly``: create nothing and leave
    a readable-by-others mode as it is.

    Raises:
        UnsafeLedgerPath: a symlink or non-directory is there (the message
            says which kind of file), or its owner or mode is unsafe (see the
            module docstring).
        ReadOnlyLedger: it is write-protected and ``readonly`` is false.
        FileNotFoundError: it is missing and ``create`` is false.
        OSError: the OS refused (permission denied, a read-only file
            system, ...). Every OSError names ``display``, the full path.
    """
    create = create and not readonly
    with _naming(display):
        created = create and _mkdir(dirfd, name)
        fd = _open_dir(dirfd, name, display)
        try:
            _check_dir(fd, display, created, ledger_root, readonly, _owner_of(dirfd, readonly))
        except BaseException:
            os.close(fd)
            raise
    return fd


def _mkdir(dirfd: int | None, name: str) -> bool:
    """Make the directory ``name`` (0700 before the umask); ``False`` if it
    exists already.

    Raises:
        OSError: the OS refused.
    """
    try:
        os.mkdir(name, 0o700, dir_fd=dirfd)
    except FileExistsError:
        return False
    return True


def _open_dir(dirfd: int | None, name: str, display: str) -> int:
    """``os.open`` of a directory, not following a symlink at ``name``.

    Raises:
        UnsafeLedgerPath: a symlink or another kind of file is there, or
            the OS refused to open another user's (or a group/other-writable)
            directory.
        OSError: the OS refused.
    """
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | _O_FLAGS, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeLedgerPath(display, _not_a(dirfd, name, "directory")) from None
        if isinstance(exc, PermissionError):
            # Another user's directory that cannot even be opened is unsafe
            # (owned by uid N), as one that can (_check_dir), not "permission denied".
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                raise exc from None
            _check_owned(display, st)
        raise


def _check_dir(fd: int, display: str, created: bool, ledger_root: bool, readonly: bool,
               owner: int | None = None) -> None:
    """Set a new directory's mode; check an existing one's owner, mode and
    (``ledger_root``) content, tightening a readable-by-others mode unless
    ``readonly``. The owner must be this user; ``readonly``, it may be
    another (an audit of another user's ledger): the ledger directory's
    own, whoever that is, then ``owner`` (the ledger directory's) below it.

    Raises:
        UnsafeLedgerPath: another owner, a group/other-writable mode, or
            (``ledger_root``) not a ledger.
        ReadOnlyLedger: write-protected and not ``readonly``.
    """
    st = os.fstat(fd)
    if created:
        os.fchmod(fd, 0o700)
        return
    _check_owned(display, st, (st.st_uid if ledger_root else owner) if readonly else None)
    if ledger_root and not _looks_like_a_ledger(fd):
        raise UnsafeLedgerPath(display, "exists and is not a ledger (it holds files other "
                                        "than a ledger's, and no events.jsonl or lock): "
                                        "refusing to turn it into one")
    mode = stat.S_IMODE(st.st_mode)
    if not readonly:
        if not mode & 0o200:
            raise _write_protected(display, mode)
        if mode & ~0o700:  # only ever take bits away
            log.warning("tightening mode of %s from %04o to %04o", display, mode, mode & 0o700)
            os.fchmod(fd, mode & 0o700)


def _owner_of(dirfd: int | None, readonly: bool) -> int | None:
    """Whom what is opened in ``dirfd`` must belong to: this user
    (``None``); ``readonly``, the owner of ``dirfd`` (checked in its turn,
    up to the ledger directory: see :func:`_check_dir`)."""
    return os.fstat(dirfd).st_uid if readonly and dirfd is not None else None


def open_private_file(dirfd: int, name: str, display: str, flags: int, create: bool = True,
                      readonly: bool = False) -> int:
    """Open a regular file in the ledger directory, 0600, without following
    symlinks; returns the descriptor (close-on-exec). ``readonly``: open it
    ``O_RDONLY``, create nothing, leave a readable-by-others mode as it is,
    and accept a file of another user when the directory holding it is
    theirs too (an audit of another user's ledger, by root or by a reader
    the owner let in).

    Raises:
        UnsafeLedgerPath: a symlink, hard link, another kind of file (a
            socket, FIFO, directory, ...: the message says which), another
            owner or a group/other-writable mode is found.
        ReadOnlyLedger: the file is write-protected and opened for writing.
        FileNotFoundError: ``create`` is false and the file does not exist.
        OSError: the OS refused (permission denied, a read-only file
            system, ...). Every OSError names ``display``, the full path.
    """
    if readonly:
        flags, create = os.O_RDONLY, False
    if create:
        flags |= os.O_CREAT
    with _naming(display):
        try:
            fd = os.open(name, flags | _O_FLAGS, 0o600, dir_fd=dirfd)
        except OSError as exc:
            better = _why_not_opened(exc, dirfd, name, display, flags, _owner_of(dirfd, readonly))
            if better is None:
                raise
            raise better from None
        try:
            _check_file(fd, display, flags, create, readonly, _owner_of(dirfd, readonly))
        except BaseException:
            os.close(fd)
            raise
    return fd


def _why_not_opened(exc: OSError, dirfd: int, name: str, display: str,
                    flags: int, owner: int | None = None) -> LedgerError | None:
    """The error that explains why ``os.open`` of ``name`` failed with
    ``exc``: what is there instead of a regular file (a symlink: ELOOP; a
    directory: EISDIR; a socket, or a FIFO without a reader: ENXIO), another
    owner, or a write-protected mode; ``None`` when ``exc`` says it best (no
    such file; or, for ``O_EXCL``, one exists, whatever it is)."""
    if exc.errno in (errno.ENOENT, errno.EEXIST):
        return None
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return UnsafeLedgerPath(display, f"is {kind_of(st.st_mode)}, not a regular file")
    if not isinstance(exc, PermissionError):
        return None
    try:
        _check_owned(display, st, owner)
    except UnsafeLedgerPath as unsafe:
        return unsafe
    if not st.st_mode & 0o200 and flags & (os.O_RDWR | os.O_WRONLY):
        return _write_protected(display, stat.S_IMODE(st.st_mode))
    return None


def _check_file(fd: int, display: str, flags: int, create: bool, readonly: bool,
                owner: int | None = None) -> None:
    """Check an opened ledger file: a regular file with one link, owned by
    this user (``owner`` when given), not group/other-writable; set a new
    file's mode, tighten a readable-by-others one unless ``readonly``.

    Raises:
        UnsafeLedgerPath: see :func:`open_private_file`.
        ReadOnlyLedger: write-protected and opened for writing.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeLedgerPath(display, f"is {kind_of(st.st_mode)}, not a regular file")
    if st.st_nlink > 1:
        raise UnsafeLedgerPath(display, f"has {st.st_nlink} hard links")
    _check_owned(display, st, owner)
    mode = stat.S_IMODE(st.st_mode)
    if create and not st.st_size:  # just made (its mode is the umask's), or empty
        if mode != 0o600:
            os.fchmod(fd, 0o600)
    elif not mode & 0o200 and flags & (os.O_RDWR | os.O_WRONLY):  # root could write
        raise _write_protected(display, mode)
    elif mode & ~0o600 and not readonly:  # only ever take bits away
        log.warning("tightening mode of %s from %04o to %04o", display, mode, mode & 0o600)
        os.fchmod(fd, mode & 0o600)


#: The shortest line any scopeledger writer writes is longer than this
#: (bytes, without its newline): the envelope alone, ``v``, ``seq``, ``ts``,
#: ``type``, an ``actor`` object and a ``prev`` of 32 hex digits, takes more.
#: A shorter line cut from the log (an empty line, a short piece of garbage)
#: was never an event and carried no fencing token (:meth:`Tally.seqs`).
MIN_EVENT_BYTES = 64

#: A line's ``seq`` as a writer puts it, among its first bytes
#: (:meth:`Tally.seqs`).
_SEQ_AT = re.compile(rb'"seq":(\d{1,19})[,}]')


class Tally:
    """What a run of the log's bytes holds, counted as it is read: its
    ``sha256`` (a ``hashlib`` object), ``bytes``, :meth:`lines` and
    :meth:`seqs`. ``kept``: the seq of the line the run follows, ``int``
    (for :meth:`seqs`; ``None``: not counted)."""

    def __init__(self, kept: int | None = None) -> None:
        with first_use:
            import hashlib  # (here: it loads OpenSSL, which no start of a command needs; issue 18)

        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.newlines = 0
        self.last = b""
        self.kept = kept
        self.events = 0  # lines of MIN_EVENT_BYTES or more, ended
        self.top = 0  # the highest plausible seq a line ended here names (0: none)
        self._head = b""  # the first bytes of the line being read
        self._length = 0  # its bytes so far
        self._zeros = 0  # its NUL bytes so far

    def add(self, piece: bytes) -> None:
        self.sha256.update(piece)
        if self.kept is not None:
            self._lines(piece)
        self.bytes += len(piece)
        self.newlines += piece.count(b"\n")
        if piece:
            self.last = piece[-1:]

    def _lines(self, piece: bytes) -> None:
        at = 0
        while True:
            end = piece.find(b"\n", at)
            if end < 0:
                if len(self._head) < MIN_EVENT_BYTES:
                    self._head += piece[at:at + MIN_EVENT_BYTES - len(self._head)]
                self._length += len(piece) - at
                self._zeros += piece.count(0, at)
                return
            length = self._length + end - at
            if length >= MIN_EVENT_BYTES:
                self.events += 1 + (self._zeros + piece.count(0, at, end)) // MIN_EVENT_BYTES
                self.top = max(self.top, self._seq(self._head + piece[at:at + MIN_EVENT_BYTES - len(self._head)],
                                                   self.bytes + end + 1))
            self._head, self._length, self._zeros = b"", 0, 0
            at = end + 1

    def _seq(self, head: bytes, upto: int) -> int:
        """The seq a line starting with ``head`` and ending at byte ``upto``
        of the run names, if plausible (no more lines than fit in the bytes
        up to its end: a seq further on is a damaged digit, not evidence);
        else 0."""
        found = _SEQ_AT.search(head)
        if found is None:
            return 0
        seq = int(found[1])
        assert self.kept is not None
        return seq if self.kept < seq <= self.kept + upto // MIN_EVENT_BYTES else 0

    def lines(self) -> int:
        """The lines counted, a last one without a newline (torn) too, ``int``."""
        return self.newlines + (1 if self.bytes and self.last != b"\n" else 0)

    def seqs(self) -> int:
        """How many seqs after ``kept`` the lines counted may have carried,
        ``int``: the lines that may have been events (of
        :data:`MIN_EVENT_BYTES` or more, and a torn last line of any
        length: one acknowledged but not flushed before a power cut may
        have lost its end), and in each, one more for every
        :data:`MIN_EVENT_BYTES` NUL bytes (a block zeroed by a power cut
        merges the lines it held, their newlines zeroed too, into one:
        that many may have been there); or, when a
        line names a later seq (lines before it merged or removed), up to
        that seq; a seq is evidence only where that many lines fit in the
        bytes up to it. So a repair keeps void every seq a cut line may
        have been a grant at (its fencing token), and not one for each of
        a million empty lines. ``0`` when ``kept`` was not given."""
        if self.kept is None:
            return 0
        events, top = self.events, self.top
        if self._length:  # a torn last line, however short: an event whose end was lost
            events += 1 + self._zeros // MIN_EVENT_BYTES
            top = max(top, self._seq(self._head, self.bytes))
        return max(events, top - self.kept)


def _who() -> dict[str, Any]:
    """Who is making a change, for a record: ``user`` (the effective
    user's name, ``None`` when the password database has none), ``uid``,
    ``host`` (the host name) and ``pid``."""
    with first_use:
        import pwd
        import socket

    uid = os.geteuid()
    try:
        user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    return {"user": user, "uid": uid, "host": socket.gethostname(), "pid": os.getpid()}


class Store:
    """The ledger directory's descriptors, the log's bytes and the lock.

    ``locked()`` is the only code in scopeledger that takes the lock
    (and :meth:`quiet`, shared and never waited for, for a judgement of the
    log's end made without it). It
    excludes other processes (``flock(LOCK_EX)`` on ``events.jsonl``), other
    ``Store`` objects in this process (each has its own open file
    description), and other threads using this ``Store`` (a thread lock).
    The log is its own lock: it is deleted only with the ledger's history. (A
    lock file of its own, deleted by someone tidying "stale" locks, let
    processes opened afterwards lock a new file while others held the old.)
    """

    def __init__(self, path: str, create: bool = True, readonly: bool = False,
                 fsync: bool = False, allow_network_fs: bool = False) -> None:
        """Open the ledger directory ``path``.

        Args:
            path: the directory (resolved by :func:`resolve_path`, as the
                OS reaches it); created 0700 (with missing parents) when
                ``create``. An existing directory must be empty or hold a
                ledger: anything else is refused, never converted.
            create: with ``False``, a missing ledger is :class:`NoLedger`.
            readonly: open the log ``O_RDONLY`` and nothing else (no lock,
                no ``gate``, no mode tightened, nothing created), so that a
                ledger on a read-only mount or write-protected (``chmod a-w``) can be
                read; :meth:`acquire` then raises :class:`ReadOnlyLedger`.
                Implies ``create=False``.
            fsync: after creating the ledger (or any of its files), fsync
                what was made and the directories holding it, up to the
                existing parent of the first directory made.
            allow_network_fs: open for writing on a file system where
                ``flock`` may not exclude other hosts (:func:`is_network_fs`);
                without it that is :class:`UnsafeLedgerPath`. Every line
                this Store's writer appends then says so (``network_fs``).

        Raises:
            NoLedger: ``path`` is empty, or missing (or, with ``readonly``,
                a directory without a log) and ``create`` is false; never a
                directory that cannot be looked into.
            UnsafeLedgerPath: see the module docstring; also an existing
                directory that is not a ledger, another user's directory
                that this user cannot even open or search, a file on the
                way that is not a directory (named), and (not ``readonly``)
                a network file system without ``allow_network_fs``.
            ReadOnlyLedger: write-protected, and not ``readonly``.
            LedgerIOError: the OS refused (permission denied, an I/O
                error, ...); it names the file's full path (the directory's,
                when it cannot be searched); ``__cause__`` is the OSError.
            ReadOnlyLedger: also when, not ``readonly``, the file system is
                mounted read-only (EROFS); ``__cause__`` is the OSError.
        """
        #: The OSError of a failed flush of the log: every later change
        #: through this Store is refused (see :meth:`append`).
        self.flush_failed: OSError | None = None
        #: The network file system type this writer opted in to
        #: (``allow_network_fs``), else ``None``.
        self.network_fs: str | None = None
        try:
            self._open(path, create, readonly, fsync, allow_network_fs)
        except LedgerError:
            raise
        except OSError as exc:
            raise refused_at_open(exc, getattr(self, "path", None) or os.fspath(path)) from exc

    def _open(self, path: str, create: bool, readonly: bool, fsync: bool,
              allow_network_fs: bool) -> None:
        create = create and not readonly
        #: Opened with ``readonly=True``: ``bool``.
        self.readonly = readonly
        self._create = create
        #: Whether this open made the log (a new ledger); ``False`` when it
        #: was there, whoever made it.
        self.created = False
        self._id: str | None = _UNREAD
        self._id_seen: tuple[int, ...] | None = None  # (which ledger-id was read: Store._id_changed)
        raw = os.fspath(path)
        if not raw or "\x00" in raw:
            raise NoLedger(f"no ledger at {raw!r}: give a directory path")
        # As the OS reaches it (a '..' after a symlink is the link target's
        # parent), and so shown in messages: resolve_path.
        self.path = resolve_path(raw)
        #: The log's path, ``str`` (for messages).
        self.log_path = os.path.join(self.path, LOG_NAME)
        if not readonly:
            self._refuse_a_network_fs(allow_network_fs)
        try:
            if not create:
                self._check_there()
            else:
                if not os.path.lexists(self.log_path):
                    _refuse_a_ledger_inside_a_ledger(self.path)
                made = _makedirs_private(os.path.dirname(self.path))
                if not os.path.lexists(self.path):
                    made.append(self.path)
                fresh = made or not os.path.lexists(self.log_path)
            self.dirfd = open_dir_fd(None, self.path, self.path, create=create, ledger_root=True,
                                     readonly=readonly)
        except NotADirectoryError:
            # A file on the way (notes.txt/L): name it, as --ledger notes.txt is named.
            blocked = non_directory_on_the_way(self.path)
            if blocked is not None:
                raise UnsafeLedgerPath(self.path, " ".join(blocked)) from None
            raise
        # Descriptors are ints, NO_FD when not open (never None): the gate
        # and snapshots/ of a read-only opening may not exist.
        self.snapfd: int = NO_FD
        self.gatefd: int = NO_FD
        self.logfd: int = NO_FD
        try:
            try:
                self.snapfd = open_dir_fd(self.dirfd, SNAPSHOT_DIR, self.file(SNAPSHOT_DIR),
                                          readonly=readonly)
            except FileNotFoundError:  # read-only: a ledger without snapshots
                pass
            self._open_lock_fds()
            if create and fsync and fresh:
                # A ledger made with fsync=True survives a power cut as made:
                # its files' entries, and the directories made for it.
                os.fsync(self.logfd)
                os.fsync(self.snapfd)
                os.fsync(self.dirfd)
                for d in reversed(made):
                    _fsync_dir(os.path.dirname(d))
        except BaseException:
            self._close_fds()
            raise
        self._gate_ignored_until = 0.0
        # An RLock for its _is_owned() (see acquire); never taken twice.
        # (Any: _is_owned is CPython's, not in the typeshed stubs.)
        self._tlock: Any = threading.RLock()
        self._pid = os.getpid()
        #: The pid that holds the lock through this Store (set by
        #: :meth:`acquire`, cleared by :meth:`release`), else None. Read by
        #: the ledger's transaction for its actor; never set outside this class.
        self.holding_pid: int | None = None
        _stores.add(self)


    def _refuse_a_network_fs(self, allowed: bool) -> None:
        """Before anything is created or written: the ledger's file system
        must be one where ``flock`` excludes every writer, unless the
        caller opted in (then ``self.network_fs`` records its type).

        Raises:
            UnsafeLedgerPath: a network file system (named), not allowed.
        """
        fs = fs_type_of(self.path)
        if fs is None or not is_network_fs(fs):
            return
        if allowed:
            self.network_fs = fs
            return
        raise UnsafeLedgerPath(
            self.path, f"it is on a {fs} file system, where flock(2) may not exclude writers on "
                       "other hosts, so two of them could be let in at once: keep the ledger on a "
                       "local file system, use the PostgreSQL backend for a ledger shared between "
                       "hosts, or, if only this host ever writes it, open it with "
                       "allow_network_fs=True (ledger --allow-network-fs), which the log records")

    def _check_there(self) -> None:
        """Before opening without creating: a ledger is at ``self.path``.
        Only a missing path or log is "no ledger"; a directory that cannot
        be looked into is never taken for an empty one.

        Raises:
            NoLedger: nothing is there, or a directory without a log.
            CorruptLedger: a directory without a log but with snapshots
                (the log was lost: :meth:`_lost_log`).
            UnsafeLedgerPath: a directory of another user that this user
                cannot even search (as one it can: owned by uid N).
            OSError: the OS refused to look (permission denied on the
                directory or one above it, ...); it names ``self.path``.
        """
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            raise NoLedger(f"no ledger at {self.path}: nothing has been recorded there") from None
        except OSError as exc:
            exc.filename = self.path
            raise
        if not stat.S_ISDIR(st.st_mode):
            return  # a symlink or another kind of file: open_dir_fd says which
        try:
            os.lstat(self.log_path)
        except FileNotFoundError:
            lost = self._lost_log()
            if lost is not None:
                raise lost from None
            raise NoLedger(f"no ledger at {self.path}: it has no {LOG_NAME}") from None
        except OSError as exc:
            _check_owned(self.path, st)
            exc.filename = self.path  # the directory is what cannot be searched
            raise

    def _refuse_a_lost_log(self) -> None:
        """Before a log is created: a directory with snapshots but no log
        is a ledger whose log was lost (deleted, moved), not a new one. An
        empty log made there would turn "the log is missing" into "the log
        was truncated" for every later command; create nothing instead.

        Raises:
            CorruptLedger: see :meth:`_lost_log`.
        """
        try:
            os.stat(LOG_NAME, dir_fd=self.dirfd, follow_symlinks=False)
            return
        except FileNotFoundError:
            pass
        except OSError:
            return  # open_private_file reports it
        lost = self._lost_log()
        if lost is not None:
            raise lost

    def _lost_log(self) -> CorruptLedger | None:
        """For a ledger directory without ``events.jsonl``: the error when
        ``snapshots/`` still holds snapshots (the log was lost, and every
        command says so alike: exit 4, "the log is missing"), else ``None``
        (nothing was ever recorded there)."""
        try:
            names = os.listdir(self.file(SNAPSHOT_DIR))
        except OSError:
            return None
        seqs = [int(m.group(1)) for m in map(SNAPSHOT_NAME.match, names) if m]
        if not seqs:
            return None
        return CorruptLedger(self.log_path, f"the log is missing, but {self.file(SNAPSHOT_DIR)} holds "
                                            f"snapshots up to seq {max(seqs)}: it was deleted or moved; "
                                            "restore it (docs/cli.md, 'Recovering a damaged ledger')")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- the ledger's identity ----------------------------------------------

    def ledger_id(self, derive: Callable[[], dict[str, list[str]]] | None = None,
                  make: bool = False) -> str | None:
        """This ledger's id (``ledger-id``: 32 hex digits), read once per
        Store; ``None`` when it has none (yet: :meth:`has_no_id`) or it
        cannot be read (a warning that says how to fix it: then snapshots
        that name a ledger vouch for no line; for a read-only open refused
        the file, a reader the owner let see the rest, no warning).

        The id is made lazily, when the ledger first needs it: with
        ``make`` (a snapshot about to be written; not read-only), a ledger
        without one makes a random one. So an empty ledger (``ledger
        init``) has none, and copies of it made before their first
        snapshot get ids of their own. A ledger whose file is missing (an
        older scopeledger's, or the file lost) takes back the id that
        ``derive()`` finds its own snapshots carry (``{id: [their
        files]}``: those whose hash is the log's line) when they name one
        id; when they name more (one of them copied from another ledger,
        made to match), none is trusted: a warning names the files, and a
        writer makes a new id at once (a read-only open has none). Opened
        for writing, an id taken back or made is written: a file made
        unnamed (``O_TMPFILE``; else under a temporary name), written,
        fsynced, then linked in, which fails when another process linked
        its own first (then that one is read: one id per ledger, without
        the lock); the directory fsynced.

        With ``make``, and while the ledger has none, the file is looked at
        again first (a stat): another process may have made, replaced or
        removed it since it was read (a long-lived process then names the
        id the file holds now). Never raises.
        """
        if self._id != _UNREAD and (make or self._id == _NONE_YET) and self._id_changed():
            self._id = _UNREAD
        if self._id == _UNREAD:
            self._id = self._read_id(derive)
        if self._id == _NONE_YET and make and not self.readonly:
            self._id = self._make_id(os.urandom(16).hex())
        return None if self._id == _NONE_YET else self._id

    def has_no_id(self) -> bool:
        """Whether this ledger has no id (yet), as :meth:`ledger_id` last
        found: ``ledger-id`` missing and nothing taken back from its
        snapshots; a snapshot naming an id is then another ledger's.
        ``False`` when the file is there but cannot be read."""
        return self._id == _NONE_YET

    def _id_key(self, st: os.stat_result | None) -> tuple[int, ...] | None:
        return None if st is None else (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size, st.st_mode)

    def _id_changed(self) -> bool:
        """Whether ``ledger-id`` is not the file :meth:`ledger_id` read
        (another inode, change time, size or kind; made, or gone)."""
        try:
            st: os.stat_result | None = os.stat(ID_NAME, dir_fd=self.dirfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        except OSError:
            return False
        return self._id_key(st) != self._id_seen

    def _seen(self) -> None:
        """Remember which ``ledger-id`` (if any) was read (:meth:`_id_changed`)."""
        try:
            self._id_seen = self._id_key(os.stat(ID_NAME, dir_fd=self.dirfd, follow_symlinks=False))
        except OSError:
            self._id_seen = None

    def _read_id(self, derive: Callable[[], dict[str, list[str]]] | None) -> str | None:
        display = self.file(ID_NAME)
        self._seen()
        try:
            fd = open_private_file(self.dirfd, ID_NAME, display, os.O_RDONLY, create=False,
                                   readonly=self.readonly)
        except FileNotFoundError:
            return self._take_back(derive)
        except OSError as exc:  # (UnsafeLedgerPath too: a symlink, a directory, another owner)
            why = getattr(exc, "reason", None) or exc.strerror or exc
            if self.readonly and getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
                # A reader the owner let see the ledger, not its 0600 id: its snapshots
                # vouch for no line in this reading; nothing for it to fix.
                log.debug("cannot read %s (%s): snapshots that name a ledger do not vouch for its "
                          "lines", display, why)
            else:
                log.warning("cannot read %s (%s): snapshots that name a ledger do not vouch for its "
                            "lines; %s", display, why, _ID_REMEDY)
            return None
        try:
            text = os.read(fd, 64)
        except OSError as exc:
            log.warning("cannot read %s (%s): snapshots that name a ledger do not vouch for its lines; %s",
                        display, exc.strerror or exc, _ID_REMEDY)
            return None
        finally:
            os.close(fd)
        got = text.decode("ascii", "replace").strip()
        if LEDGER_ID.match(got) is None:
            log.warning("%s does not hold a ledger id (32 hex digits, lowercase): snapshots that name a "
                        "ledger do not vouch for its lines; %s", display, _ID_REMEDY)
            return None
        return got

    def _take_back(self, derive: Callable[[], dict[str, list[str]]] | None) -> str | None:
        """The id of a ledger whose ``ledger-id`` is missing (see
        :meth:`ledger_id`): the one id its snapshots carry, else
        ``_NONE_YET``; when they name more than one, a new one (a writer)."""
        named = derive() if derive is not None else {}
        if len(named) == 1:
            value = next(iter(named))
            return value if self.readonly else self._make_id(value)
        if not named:
            return _NONE_YET
        files = "; ".join(f"{', '.join(paths)} name {ident}" for ident, paths in sorted(named.items()))
        log.warning("%s is missing and the snapshots that match the log name different ledgers (%s): "
                    "none of them is taken as this ledger's (one was copied from another ledger), so "
                    "none vouches for a line or is loaded; %s", self.file(ID_NAME), files,
                    "the next writer makes a new id" if self.readonly else "a new id is made")
        return _NONE_YET if self.readonly else self._make_id(os.urandom(16).hex())

    def _make_id(self, value: str) -> str | None:
        """Link a file holding ``value`` in as ``ledger-id`` (see
        :meth:`ledger_id`); the id the file holds then (another process's
        when it linked one first), ``None`` when the OS refused (a warning)."""
        display = self.file(ID_NAME)
        try:
            fd, tmp = self._id_file(value, unnamed=True)
            try:
                try:
                    if tmp is None:  # linkat(AT_SYMLINK_FOLLOW) of the unnamed file (_filetickets.join)
                        os.link(f"/proc/self/fd/{fd}", ID_NAME, dst_dir_fd=self.dirfd, follow_symlinks=True)
                    else:
                        os.link(tmp, ID_NAME, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)
                except FileExistsError:
                    return self._read_id(None)  # another process's, linked first
                os.fsync(self.dirfd)
                self._seen()
                return value
            finally:
                os.close(fd)
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=self.dirfd)
        except OSError as exc:
            log.warning("cannot write %s (%s): snapshots written now name no ledger", display,
                        exc.strerror or exc)
            return None

    def _id_file(self, value: str, unnamed: bool) -> tuple[int, str | None]:
        """A new file (0600) holding ``value`` and a newline, fsynced, open
        for writing: unnamed (``O_TMPFILE``, where there is one) with
        ``unnamed``, else under a temporary name: ``(fd, that name or
        None)``. Raises OSError (the file removed)."""
        tmp = None
        fd = -1
        if unnamed:
            with contextlib.suppress(OSError, AttributeError):  # (no O_TMPFILE here: a named one)
                fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600, dir_fd=self.dirfd)
        if fd < 0:
            tmp = f".{ID_NAME}-{os.getpid()}-{os.urandom(6).hex()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_FLAGS, 0o600, dir_fd=self.dirfd)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, value.encode() + b"\n")
            os.fsync(fd)
        except OSError:
            os.close(fd)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=self.dirfd)
            raise
        return fd, tmp

    def adopt_ledger_id(self, value: str) -> None:
        """Make ``value`` this ledger's id, replacing any (a copy of another
        ledger into this empty one: ``copy_log``): a temporary file,
        fsynced, renamed over ``ledger-id``, the directory fsynced.

        Raises:
            ValueError: ``value`` is not a ledger id.
            LedgerIOError: the OS refused; it names the file.
        """
        if LEDGER_ID.match(value) is None:
            raise ValueError(f"{value!r} is not a ledger id (32 hex digits)")
        display = self.file(ID_NAME)
        tmp = None
        try:
            fd, tmp = self._id_file(value, unnamed=False)
            os.close(fd)
            os.rename(tmp, ID_NAME, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)
            os.fsync(self.dirfd)
            self._seen()
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=self.dirfd)
            raise LedgerIOError(display, "write the ledger's id", exc) from exc
        self._id = value

    def _open_lock_fds(self) -> None:
        """Open this Store's own descriptions of lock, gate and the log (the
        log alone, read-only, when ``readonly``)."""
        if self.readonly:
            self.logfd = open_private_file(self.dirfd, LOG_NAME, self.log_path, os.O_RDONLY,
                                           readonly=True)
            return
        flags = os.O_RDWR | os.O_APPEND
        try:
            self.logfd = open_private_file(self.dirfd, LOG_NAME, self.log_path, flags, create=False)
        except FileNotFoundError:
            if not self._create:  # removed since _check_there looked
                raise NoLedger(f"no ledger at {self.path}: it has no {LOG_NAME}") from None
            self._refuse_a_lost_log()
            try:  # made here, or by a concurrent opener: only one of them says it made it
                self.logfd = open_private_file(self.dirfd, LOG_NAME, self.log_path, flags | os.O_EXCL)
                self.created = True
            except FileExistsError:
                self.logfd = open_private_file(self.dirfd, LOG_NAME, self.log_path, flags, create=False)
        self.gatefd = open_private_file(self.dirfd, GATE_NAME, self.file(GATE_NAME), os.O_RDWR)

    # -- the lock ----------------------------------------------------------

    def _forked(self) -> None:
        # In a forked child: the inherited descriptors share their open file
        # descriptions (and the flock) with the parent. Use new ones so that
        # nothing the child does can release or take the parent's lock.
        self._tlock = threading.RLock()
        self.holding_pid = None
        old = (self.gatefd, self.logfd)
        try:
            self._open_lock_fds()
        except OSError:  # pragma: no cover - the child will fail on use
            pass
        for fd in old:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._pid = os.getpid()

    def acquire(self, timeout: float | None = None,
                on_wait: Callable[[], object] | None = None) -> float:
        """Take the ledger's exclusive lock: the only code in scopeledger that
        does. Pair with :meth:`release` (or use :meth:`locked`).

        Args:
            timeout: seconds to wait at most; ``None`` waits for ever.
                After about a second of waiting, a warning on logger
                ``scopeledger`` says once which ledger and who holds its
                lock (:func:`lock_holder`).

            on_wait: called between tries while the lock is polled (see
                ``SPIN_SECONDS``); it should do a little useful work (the
                ledger folds lines appended meanwhile) and return. ``None``:
                yield the CPU between tries.

        Returns:
            The seconds spent waiting, ``float``.

        Raises:
            LockTimeout: not acquired within ``timeout``.
            Whatever ``on_wait`` raises (the lock is then not held).
            ReadOnlyLedger: the store was opened ``readonly``.
            LedgerIOError: ``flock`` failed (EIO, ENOLCK, ...); it names
                the log, ``__cause__`` is the OSError; the lock is not held.
                Or a flush of the log failed earlier (:meth:`append`).
            LedgerError: the ledger is closed.
        """
        if self.logfd < 0:
            raise LedgerError(f"ledger {self.path} is closed")
        if self.readonly:
            raise ReadOnlyLedger(self.path, "take the lock")
        if self.flush_failed is not None:
            self.check_writable()
        pid = os.getpid()
        if self._pid != pid:  # forked without the at-fork hook running
            self._forked()
        t0 = time.monotonic()
        tlock = self._tlock
        if tlock._is_owned():
            raise LedgerError(f"the lock on {self.log_path} is already held by this thread: a ledger "
                              "call was made inside another (a Hold's guard collected meanwhile?)")
        try:
            # From the thread lock on, an exception at any point (a signal
            # handler raising KeyboardInterrupt, say) is undone below by
            # _let_go: the thread lock is owned or not (RLock._is_owned),
            # and the flock marker is set before flock is called, so that an
            # unlock follows whether or not flock had returned.
            # (no argument for ever: a keyword argument is parsed the slow way)
            if not (tlock.acquire() if timeout is None else tlock.acquire(timeout=max(timeout, 0))):
                raise LockTimeout(self.log_path, timeout or 0.0)
            self.holding_pid = pid
            stand_back = ((timeout is None or timeout > DEFER_SECONDS)
                          and t0 >= self._gate_ignored_until)
            got = False
            try:
                if stand_back:  # _gate_clear(), inlined (the hot path)
                    fcntl.flock(self.gatefd, _EX_NB)
                    fcntl.flock(self.gatefd, fcntl.LOCK_UN)
                fcntl.flock(self.logfd, _EX_NB)
                got = True
            except BlockingIOError:  # a sleeper holds gate, or the lock is taken
                pass
            if not got and not self._poll(t0, timeout, on_wait, stand_back):
                self._wait(t0, timeout)
        except BaseException as exc:
            self._let_go()
            if isinstance(exc, OSError) and not isinstance(exc, LedgerError):
                # flock failed (EIO, ENOLCK on a network file system, ...)
                raise LedgerIOError(self.log_path, "lock the ledger", exc) from exc
            raise
        return time.monotonic() - t0

    def _let_go(self) -> None:
        """Undo whatever part of :meth:`acquire` this thread got through
        (idempotent; an unlock of a lock not taken is harmless)."""
        tlock = self._tlock
        if not tlock._is_owned():
            return
        if self.holding_pid == os.getpid():
            with contextlib.suppress(OSError):
                fcntl.flock(self.logfd, fcntl.LOCK_UN)
            self.holding_pid = None
        tlock.release()

    def owns_lock(self) -> bool:
        """Whether the calling thread holds the lock (:meth:`acquire`
        returned, :meth:`release` not yet called), ``bool``."""
        return bool(self._tlock._is_owned())

    def release(self) -> None:
        """Release what :meth:`acquire` took; a no-op when the calling
        thread holds nothing (so a ``finally`` may call it again after an
        exception anywhere). In a forked child that inherited a held lock,
        this never unlocks the parent's lock.

        Raises:
            LedgerIOError: the unlock failed (EIO, ...); the thread lock is
                released all the same.
        """
        tlock = self._tlock
        if not tlock._is_owned():
            return
        if self.holding_pid == os.getpid():
            # Unlock first, then forget: interrupted in between, the next
            # call unlocks again (harmless) rather than never.
            try:
                fcntl.flock(self.logfd, fcntl.LOCK_UN)
            except OSError as exc:
                self.holding_pid = None
                tlock.release()
                raise LedgerIOError(self.log_path, "unlock the ledger", exc) from exc
            self.holding_pid = None
        tlock.release()

    @contextlib.contextmanager
    def locked(self, timeout: float | None = None) -> Iterator[float]:
        """``with store.locked(timeout) as waited:`` — :meth:`acquire` and
        :meth:`release` around the block; ``waited`` in seconds."""
        waited = self.acquire(timeout)
        try:
            yield waited
        finally:
            self.release()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[bool | None]:
        """``with store.quiet() as quiet:`` the lock taken *shared* for the
        block, never waited for, so that a judgement made without the lock
        (a dry run of ``Ledger.repair``) can tell a line being written from
        a torn one. ``True``: held; no writer is in the middle of an append
        while the block runs (a writer holds the lock, exclusive, for the
        whole of one; one that comes meanwhile waits for the block's end:
        keep it short). ``False``: a writer holds the lock now (its append
        may be under way); nothing was taken. ``None``: ``flock`` failed
        (ENOLCK on a file system without locks, ...): cannot be told; no
        writer can hold it there either.

        Taken on an open file description of its own (the log opened again,
        read-only, as a ``readonly`` Store opens it): a ``flock`` on this
        Store's, held exclusive by a thread of this process, would be
        converted to shared, not refused. With :meth:`acquire`, the only
        places in scopeledger that take the lock (ARCHITECTURE.md).

        Raises:
            LedgerError: the ledger is closed.
            LedgerIOError: the log cannot be opened again (it names it).
            UnsafeLedgerPath: it is no longer the file it was (as at open).
        """
        if self.logfd < 0:
            raise LedgerError(f"ledger {self.path} is closed")
        try:
            fd = open_private_file(self.dirfd, LOG_NAME, self.log_path, os.O_RDONLY, readonly=True)
        except LedgerError:
            raise
        except OSError as exc:
            raise LedgerIOError(self.log_path, "open the log to judge its end", exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                state: bool | None = True
            except BlockingIOError:
                state = False
            except OSError:
                state = None
            yield state
        finally:
            os.close(fd)  # (the shared lock, if taken, goes with it)

    def _gate_clear(self) -> bool:
        """``True`` when no sleeper holds ``gate`` (two ``flock`` calls)."""
        gatefd = self.gatefd
        try:
            fcntl.flock(gatefd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(gatefd, fcntl.LOCK_UN)
        return True

    def _poll(self, t0: float, timeout: float | None, on_wait: Callable[[], object] | None,
              stand_back: bool) -> bool:
        """Try the lock until ``SPIN_SECONDS`` (or ``timeout``) have passed,
        standing back (if ``stand_back``) for the first ``DEFER_SECONDS``
        while a sleeper holds ``gate``; ``True`` once the lock is held."""
        end = t0 + (SPIN_SECONDS if timeout is None else min(SPIN_SECONDS, timeout))
        defer_end = t0 + DEFER_SECONDS if stand_back else t0
        lockfd, monotonic = self.logfd, time.monotonic
        stood_back = False  # the last round stood back for a sleeper
        while (now := monotonic()) < end:
            if on_wait is None:
                os.sched_yield()
            else:
                on_wait()
            if now < defer_end and not self._gate_clear():
                stood_back = True
                continue
            try:
                fcntl.flock(lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                stood_back = False
                continue
            if stood_back and now >= defer_end:
                # Stood back all the while, and the lock was free: the
                # sleeper is not taking it. Stop deferring to it for a while.
                self._gate_ignored_until = monotonic() + GATE_DISTRUST_SECONDS
            return True
        return False

    def _wait(self, t0: float, timeout: float | None) -> None:
        """Sleep until the lock is ours, holding ``gate`` shared meanwhile so
        that newcomers stand back when it is released (see DEFER_SECONDS)."""
        gatefd = self.gatefd
        for _ in range(1000):  # an exclusive hold of gate lasts one check
            try:
                fcntl.flock(gatefd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                os.sched_yield()
        try:
            self._sleep_for_lock(t0, timeout)
        finally:
            fcntl.flock(gatefd, fcntl.LOCK_UN)

    def _sleep_for_lock(self, t0: float, timeout: float | None) -> None:
        lock_path = self.log_path
        if timeout is None:
            key = _notices.begin(lock_path)
            try:
                fcntl.flock(self.logfd, fcntl.LOCK_EX)
            finally:
                _notices.end(key)
            return
        deadline = t0 + timeout
        delay = 0.0005
        noticed = False
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise LockTimeout(lock_path, timeout, lock_holder(lock_path))
            if not noticed and now - t0 >= WAIT_NOTICE_SECONDS:
                _say_waiting(lock_path)
                noticed = True
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.02)
            try:
                fcntl.flock(self.logfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                continue

    @contextlib.contextmanager
    def snapshot_claim(self) -> Iterator[bool]:
        """``with store.snapshot_claim() as mine:`` — whether this process
        may write the automatic snapshot that is due: ``flock(LOCK_EX |
        LOCK_NB)`` on a new descriptor of ``snapshots/`` (so not shared with
        a forked parent or another ``Store``), held for the block. Several
        processes crossing the snapshot interval together would each write
        one of the same state; the one that gets the claim writes it, the
        others skip (yielding ``False``). It never waits and orders nothing
        else: the ledger's lock is :meth:`acquire`'s alone. A process that
        dies lets go of it with its descriptors.

        Raises:
            LedgerIOError: ``snapshots/`` cannot be opened; it names the
                directory's full path.
        """
        if self.snapfd < 0:
            yield False
            return
        path = self.file(SNAPSHOT_DIR)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _O_FLAGS)
        except OSError as exc:
            raise LedgerIOError(path, "open the snapshots directory", exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            except OSError as exc:
                raise LedgerIOError(path, "claim the snapshot", exc) from exc
            yield True
        finally:
            os.close(fd)  # lets go of the claim

    def assert_locked(self) -> None:
        assert self.holding_pid == os.getpid(), "the ledger lock is not held"

    # -- the log -----------------------------------------------------------

    def replaced(self) -> str | None:
        """Why the log this object has open is no longer the directory's
        ``events.jsonl`` (renamed over or deleted since it was opened, as
        ``sed -i``, editors and ``rsync`` do: what is written there now is
        not read through this descriptor), ``str``; ``None`` while it still
        is, or when the OS cannot say. Two calls, ``fstat`` and
        ``fstatat``; the lock is not needed.

        Raises:
            LedgerError: the ledger is closed.
        """
        if self.logfd < 0:
            raise LedgerError(f"ledger {self.path} is closed")
        try:
            mine = os.fstat(self.logfd)
        except OSError:
            return None  # (not judged: the read that follows says what the OS refuses)
        # (one wording for both signs of it: a look between the rename and the fstat
        # sees the new file first, one after sees the old one unlinked)
        gone = "the log was deleted or renamed over since this process opened it (as sed -i and editors do)"
        if mine.st_nlink == 0:
            return gone
        try:
            now = os.stat(LOG_NAME, dir_fd=self.dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return "the log was moved away since this process opened it"
        except OSError:
            return None
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            return gone
        return None

    def size(self) -> int:
        """The log's size in bytes, ``int``.

        Raises:
            LedgerError: the ledger is closed.
            LedgerIOError: the OS refused (an I/O error, ...); it names the
                log's full path.
        """
        if self.logfd < 0:
            raise LedgerError(f"ledger {self.path} is closed")
        try:
            # lseek(SEEK_END): the inode's size, as fstat's st_size, without
            # building a stat_result (~4k instructions). The descriptor's
            # offset it moves is used by nothing: the log is read with
            # pread and appended to with O_APPEND.
            return os.lseek(self.logfd, 0, os.SEEK_END)
        except OSError as exc:
            raise LedgerIOError(self.log_path, "read the log", exc) from exc

    def read(self, start: int, end: int | None = None, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Raw bytes of the log from ``start`` up to ``end`` (default: EOF),
        in chunks of at most ``chunk`` bytes.

        Raises:
            LedgerIOError: (while iterating) the OS refused (an I/O error,
                ...); it names the log's full path.
        """
        pos = start
        while end is None or pos < end:
            want = chunk if end is None else min(chunk, end - pos)
            try:
                data = os.pread(self.logfd, want, pos)
            except OSError as exc:
                raise LedgerIOError(self.log_path, "read the log", exc) from exc
            if not data:
                return
            pos += len(data)
            yield data

    def read_at(self, start: int, length: int) -> bytes:
        """At most ``length`` bytes of the log from byte ``start``.

        Raises:
            LedgerIOError: the OS refused (an I/O error, ...); it names the
                log's full path.
        """
        try:
            return os.pread(self.logfd, length, start)
        except OSError as exc:
            raise LedgerIOError(self.log_path, "read the log", exc) from exc

    def append(self, data: bytes, expected_size: int, fsync: bool) -> None:
        """Append ``data`` (whole lines) with one ``write``; the lock is held.

        On a short write or an OS error of ``write`` the log is cut back to
        ``expected_size`` so that no partial line stays behind; after a short
        write, complete lines it did write stay (a reader without the lock
        may have folded them already: the log never loses a complete line).

        With ``fsync``, ``fdatasync`` follows. If it fails, the lines stay
        in the log (readers may have folded them; after a failed flush what
        the disk holds is unknown, and a second flush could report success
        without writing them: the lesson of PostgreSQL's "fsyncgate"), and
        this Store refuses every later change (:meth:`check_writable`) until
        the ledger is opened again.

        Raises:
            LedgerIOError: the OS refused (disk full, quota, I/O error), or
                an earlier flush failed. Its ``lines_kept``: how many of the
                lines a short write left in the log (0 for none).
        """
        if self.flush_failed is not None:
            self.check_writable()
        kept = 0  # complete lines the write left in the log
        try:
            n = os.write(self.logfd, data)
            if n != len(data):
                cut = data.rfind(b"\n", 0, n) + 1
                expected_size += cut
                kept = data.count(b"\n", 0, cut)
                raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes): "
                                            f"{os.strerror(errno.ENOSPC)}")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self.logfd, expected_size)
            err = LedgerIOError(self.log_path, "append to the log", exc)
            err.lines_kept = kept  # type: ignore[attr-defined]  # (documented above)
            raise err from exc
        if fsync:
            self.flush()

    def flush(self) -> None:
        """``fdatasync`` the log (before a snapshot of it is renamed into
        place, and after every append with ``fsync=True``).

        Raises:
            LedgerIOError: it failed: from then on every change through
                this Store is refused (see :meth:`append`); or an earlier
                one failed.
        """
        self.check_writable()
        try:
            os.fdatasync(self.logfd)
        except OSError as exc:
            self.flush_failed = exc
            raise LedgerIOError(self.log_path, "flush the log", exc,
                                "what was written stays in the log, but may not survive a power "
                                "cut; this ledger object refuses changes until the ledger is "
                                "opened again") from exc

    def check_writable(self) -> None:
        """Refuse a change after a failed flush of the log (see :meth:`append`).

        Raises:
            LedgerIOError: a flush failed earlier; ``__cause__`` is its OSError.
        """
        failed = self.flush_failed
        if failed is not None:
            raise LedgerIOError(self.log_path, "record a change", failed,
                                "a flush of the log failed earlier: what was written may not "
                                "survive a power cut; open the ledger again to go on") from failed

    def set_aside(self, start: int, end: int) -> str:
        """Move a torn last line (the log's bytes ``start .. end``) out of
        the log into ``torn/``, then cut the log back to ``start``. Lock
        held. The fragment is copied in pieces of 1 MiB, never read whole
        (a torn tail may be longer than any line, ``MAX_LINE_BYTES``).

        Returns the path of the file the fragment now lives in.

        Raises:
            LedgerIOError: the fragment could not be saved whole (disk
                full, ...): no partial copy is left and the log is not cut;
                or the log could not be cut (the fragment stays in the log,
                its copy in ``torn/``). It names the file's full path.
            UnsafeLedgerPath: as :func:`open_dir_fd`, :func:`open_private_file`.
        """
        self.assert_locked()
        name = f"torn-{start:016d}-{time.time_ns()}.bin"
        path = os.path.join(self.file(TORN_DIR), name)
        tornfd = None
        created = False
        try:
            tornfd = open_dir_fd(self.dirfd, TORN_DIR, self.file(TORN_DIR))
            fd = open_private_file(tornfd, name, path, os.O_WRONLY | os.O_EXCL)
            created = True
            try:
                self._copy_log(fd, start, end)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(tornfd)
            os.fsync(self.dirfd)  # torn/ itself may be new
        except BaseException as exc:  # also KeyboardInterrupt: no partial copy stays
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=tornfd)
            if isinstance(exc, LedgerError) or not isinstance(exc, OSError):
                raise
            raise LedgerIOError(path, "set aside a torn line", exc) from exc
        finally:
            if tornfd is not None:
                os.close(tornfd)
        try:
            os.ftruncate(self.logfd, start)
        except OSError as exc:
            raise LedgerIOError(self.log_path, "cut a torn line off the log", exc) from exc
        return path

    def _pieces(self, start: int, end: int) -> Iterator[bytes]:
        """The log's bytes ``start .. end`` in pieces of at most 1 MiB
        (never whole: a damaged tail may be longer than any line).

        Raises:
            OSError: the OS refused a read; EIO when the log ends before ``end``.
        """
        pos = start
        while pos < end:
            with _naming(self.log_path):
                piece = os.pread(self.logfd, min(1 << 20, end - pos), pos)
                if not piece:
                    raise OSError(errno.EIO, f"the log ended at byte {pos}, before {end}")
            pos += len(piece)
            yield piece

    def _copy_log(self, fd: int, start: int, end: int, tally: "Tally | None" = None) -> None:
        """Write the log's bytes ``start .. end`` to ``fd`` (:meth:`_pieces`),
        each piece counted into ``tally`` when given.

        Raises:
            OSError: the OS refused a read or a write.
        """
        for piece in self._pieces(start, end):
            if tally is not None:
                tally.add(piece)
            view = memoryview(piece)
            while view:  # a short write is not an error: write the rest
                view = view[os.write(fd, view):]

    def tally(self, start: int, end: int, kept: int | None = None) -> "Tally":
        """The sha256, the length and the lines of the log's bytes ``start ..
        end``, read in pieces (what :meth:`cut` would set aside; for a dry
        run), and the seqs they may have carried after seq ``kept``
        (:meth:`Tally.seqs`; ``None``: not counted).

        Raises:
            LedgerIOError: the OS refused a read; it names the log's full path.
        """
        counted = Tally(kept)
        try:
            for piece in self._pieces(start, end):
                counted.add(piece)
        except OSError as exc:
            raise LedgerIOError(self.log_path, "read the log", exc) from exc
        return counted

    def cut_reach(self, belongs: Callable[[int, str], bool]) -> tuple[int, str, int] | None:
        """The furthest any repair's cut of this log reached: the highest
        ``kept_seq + seqs`` (the last seq it kept void; ``lines``, a torn
        line counted, in a record without ``seqs``), or its ``through`` when
        further (the seq a snapshot it set aside proved the log once held:
        at most ``LOST_VOID_MAX`` past ``kept_seq``), over
        the records under ``cut/`` (as :meth:`cut` wrote them) for which
        ``belongs(kept_seq, kept_hash)`` (the caller's test that the log
        still holds, at ``kept_seq``, the line the cut kept: a record copied
        from another ledger, or one whose digits changed, is not this log's),
        the full path of that repair's directory and the byte offset its cut
        began at; ``None`` when there is no ``cut/`` or no such record. A directory without a readable record (a
        repair killed before its record: the log was not cut then) is
        skipped, as is a record that is not a JSON object of those keys.

        Raises:
            UnsafeLedgerPath: ``cut/`` or a directory in it is not a private
                directory of this user's (or a symlink).
            LedgerIOError: the OS refused to read them (a symlink in place
                of a record too); it says the log was not cut (a repair reads
                them before it cuts).
        """
        cut_dir = self.file(CUT_DIR)
        try:
            cutfd = open_dir_fd(self.dirfd, CUT_DIR, cut_dir, create=False, readonly=True)
        except FileNotFoundError:
            return None  # (the common case: every writer that opens the ledger asks, Ledger._finish_void)
        except LedgerError:  # (UnsafeLedgerPath: a symlink, another owner's: as a repair's cut says it)
            raise
        except OSError as exc:
            raise LedgerIOError(cut_dir, "open the repairs' directory", exc, "the log was not cut") from exc
        with first_use:
            import json

        best: tuple[int, str, int] | None = None
        try:
            for name in sorted(n for n in os.listdir(cutfd) if not n.startswith(".")):
                where = os.path.join(cut_dir, name)
                data = self._record_bytes(cutfd, name, where)
                try:
                    record = json.loads(data) if data is not None else None
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                kept, lines, offset = record.get("kept_seq"), record.get("seqs", record.get("lines")), \
                    record.get("offset")
                kept_hash, through = record.get("kept_hash"), record.get("through")
                if not (type(kept) is int and type(lines) is int and type(offset) is int and kept >= 0
                        and lines >= 0 and offset >= 0 and type(kept_hash) is str):
                    continue
                reach = kept + lines
                if type(through) is int and reach < through <= kept + LOST_VOID_MAX:
                    reach = through  # (seqs a snapshot set aside proved: Ledger._lost_proof)
                if reach > kept and (best is None or reach > best[0]) and belongs(kept, kept_hash):
                    best = (reach, where, offset)
        except OSError as exc:
            if isinstance(exc, LedgerError):
                raise
            raise LedgerIOError(exc.filename or cut_dir, "read the repairs' records", exc,
                                "the log was not cut") from exc
        finally:
            os.close(cutfd)
        return best

    @staticmethod
    def ended_a_line(where: str, start: int, at: int) -> bool:
        """Whether the log as it was before the cut set aside in ``where``
        (its bytes from offset ``start`` on, ``where/events.jsonl.cut``) had
        a line ending at byte offset ``at`` (its newline the byte before):
        where a process that had read that line remembers its end. Reads one
        byte; ``False`` outside the bytes cut.

        Raises:
            LedgerIOError: the OS refused to open or read the file (a symlink
                in its place too).
        """
        if at <= start:
            return False
        path = os.path.join(where, CUT_LOG_NAME)
        try:
            with _naming(path):
                fd = os.open(path, os.O_RDONLY | _O_FLAGS)
                try:
                    return os.pread(fd, 1, at - 1 - start) == b"\n"
                finally:
                    os.close(fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise LedgerIOError(path, "read the lines a repair set aside", exc) from exc

    @staticmethod
    def _record_bytes(cutfd: int, name: str, where: str) -> bytes | None:
        """The bytes of ``cut/<name>/record.json``, ``None`` when missing."""
        with _naming(where):
            wherefd = _open_dir(cutfd, name, where)
        try:
            path = os.path.join(where, CUT_RECORD_NAME)
            with _naming(path):
                try:
                    fd = os.open(CUT_RECORD_NAME, os.O_RDONLY | _O_FLAGS, dir_fd=wherefd)
                except FileNotFoundError:
                    return None
                try:
                    return b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
                finally:
                    os.close(fd)
        finally:
            os.close(wherefd)

    def cut(self, start: int, tag: str, facts: dict[str, Any], snapshots: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """Set the log's bytes from ``start`` to its end, and the snapshot
        files named ``snapshots``, aside into a new directory
        ``cut/<UTC time>-<tag>/`` with a record of the cut, then cut the
        log back to ``start``. The lock is held (:meth:`acquire`).

        In that directory (0700, as ``cut/``; files 0600): ``events.jsonl.cut``,
        the bytes exactly as they were (none when nothing is cut from the
        log), the snapshot files under their own names, and
        ``record.json``: ``format``, ``ledger``, ``log``, then ``facts``
        (the caller's: why), then ``offset`` (where the cut is), ``log_bytes``
        (the log's size before), ``bytes``, ``lines`` (a last line without
        a newline counts), ``seqs`` (:meth:`Tally.seqs` after ``facts``'
        ``kept_seq``: the seqs the lines cut may have carried) and
        ``sha256`` of the bytes cut, ``file``,
        ``snapshots``, ``when`` (UTC, ISO 8601) and ``when_ns``, ``by``
        (``user``, ``uid``, ``host``, ``pid``).

        The order makes a crash at any point lose nothing: the bytes are
        copied and flushed, the record written (to a temp name, flushed,
        renamed) and the directories flushed before anything is moved; then
        each snapshot is moved (a rename, same file system) and both
        directories flushed; only then is the log cut and flushed. Killed
        before the log is cut, the log still holds everything, and the
        directory holds a copy (or part of one); a repair run again cuts
        it. An error before a snapshot is moved removes what was made; one
        after leaves it, saying so (everything is still in the log or in
        the directory).

        Returns:
            ``(the directory's full path, the record as written)``.

        Raises:
            LedgerIOError: the OS refused (disk full, an I/O error, ...); it
                names the file and says whether the log was cut.
            UnsafeLedgerPath: ``cut/`` is not a private directory of this
                user (a symlink, another owner, a group-writable mode).
        """
        self.assert_locked()
        self.check_writable()
        now = time.time_ns()
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z-{tag}"
        cut_dir = self.file(CUT_DIR)
        where = os.path.join(cut_dir, name)
        made: list[str] = []  # the files made in it, removed again on an error before a move
        cutfd = wherefd = NO_FD
        dir_made = False
        try:
            with _naming(self.log_path):
                size = os.fstat(self.logfd).st_size
            if not 0 <= start <= size:
                raise ValueError(f"a cut at byte {start} of a log of {size} bytes")
            cutfd = open_dir_fd(self.dirfd, CUT_DIR, cut_dir)
            with _naming(where):
                if not _mkdir(cutfd, name):
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
                dir_made = True
                wherefd = _open_dir(cutfd, name, where)
                os.fchmod(wherefd, 0o700)
            counted = Tally(facts.get("kept_seq"))
            if start < size:
                path = os.path.join(where, CUT_LOG_NAME)
                made.append(CUT_LOG_NAME)  # (before: opened, it may still fail its checks)
                fd = open_private_file(wherefd, CUT_LOG_NAME, path, os.O_WRONLY | os.O_EXCL)
                try:
                    self._copy_log(fd, start, size, counted)  # (a failed read names the log)
                    with _naming(path):
                        os.fsync(fd)
                except OSError as exc:
                    if exc.filename is None:  # a failed write
                        exc.filename = path
                    raise
                finally:
                    os.close(fd)
            record: dict[str, Any] = {"format": CUT_RECORD_FORMAT, "ledger": self.path, "log": self.log_path}
            record.update(facts)
            record.update(
                offset=start, log_bytes=size,
                bytes=counted.bytes, lines=counted.lines(), seqs=counted.seqs(),
                sha256=counted.sha256.hexdigest() if start < size else None,
                file=CUT_LOG_NAME if start < size else None, snapshots=list(snapshots),
                when=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z",
                when_ns=now, by=_who())
            self._write_record(wherefd, where, record, made)
            os.fsync(wherefd)
            os.fsync(cutfd)
            os.fsync(self.dirfd)  # cut/ itself may be new
        except BaseException as exc:  # also KeyboardInterrupt: nothing moved yet, nothing half made stays
            if dir_made:
                for f in made:
                    with contextlib.suppress(OSError):
                        os.unlink(f, dir_fd=wherefd)
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=cutfd)
            for fd in (wherefd, cutfd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if isinstance(exc, LedgerError) or not isinstance(exc, OSError):
                raise
            raise LedgerIOError(exc.filename if isinstance(exc.filename, str) else where,
                                "set the damaged tail aside", exc, "the log was not cut") from exc
        try:
            self._move_snapshots(snapshots, wherefd, where)
            try:
                os.ftruncate(self.logfd, start)
            except OSError as exc:
                raise LedgerIOError(self.log_path, "cut the log", exc,
                                    f"the log was not cut; a copy of its tail is in {where}") from exc
            try:
                os.fdatasync(self.logfd)
            except OSError as exc:
                self.flush_failed = exc  # as after a failed flush of an append (see append)
                raise LedgerIOError(self.log_path, "flush the log", exc,
                                    f"the log was cut, but the cut may not survive a power cut (its "
                                    f"tail is in {where}; run the repair again after one)") from exc
        finally:
            os.close(wherefd)
            os.close(cutfd)
        return where, record

    def _write_record(self, dirfd: int, where: str, record: dict[str, Any], made: list[str]) -> None:
        """``record.json`` in ``dirfd`` (the directory ``where``), whole or
        not at all: written to a temp name, flushed, renamed. Each name
        made is added to ``made``.

        Raises:
            OSError: the OS refused; it names the file.
        """
        with first_use:
            import json

        data = json.dumps(record, indent=2).encode("ascii") + b"\n"  # (ASCII: any path, escaped)
        tmp = f".{CUT_RECORD_NAME}.tmp"
        path = os.path.join(where, CUT_RECORD_NAME)
        made.append(tmp)
        fd = open_private_file(dirfd, tmp, os.path.join(where, tmp), os.O_WRONLY | os.O_EXCL)
        try:
            with _naming(path):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
        finally:
            os.close(fd)
        with _naming(path):
            os.rename(tmp, CUT_RECORD_NAME, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        made.append(CUT_RECORD_NAME)

    def _move_snapshots(self, names: Sequence[str], dirfd: int, where: str) -> None:
        """Move the snapshot files ``names`` into ``dirfd`` (the directory
        ``where``), then flush both directories.

        Raises:
            LedgerIOError: a rename or a flush failed: the log was not cut
                (the files moved so far are in ``where``, the rest where
                they were).
        """
        if not names:
            return
        try:
            for snap in names:
                with _naming(os.path.join(self.file(SNAPSHOT_DIR), snap)):
                    os.rename(snap, snap, src_dir_fd=self.snapfd, dst_dir_fd=dirfd)
            os.fsync(dirfd)
            os.fsync(self.snapfd)
        except OSError as exc:
            raise LedgerIOError(exc.filename if isinstance(exc.filename, str) else where,
                                "move a snapshot past the cut", exc,
                                f"the log was not cut; the record and a copy of its tail are in {where}") from exc

    # -- lifecycle ---------------------------------------------------------

    def _close_fds(self) -> None:
        for attr in ("logfd", "gatefd", "snapfd", "dirfd"):
            fd = getattr(self, attr, NO_FD)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, attr, NO_FD)

    def close(self) -> None:
        self._close_fds()
        _stores.discard(self)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close_fds()
