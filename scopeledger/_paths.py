"""Canonical paths: symlinks in the existing part of a path resolved (IO).

The rule algebra is lexical (``_rules.normalize_path``); this module is the
one place the filesystem is asked about a rule's path, at the API boundary,
never in the fold. It returns what ``os.path.realpath`` returns (checked
against it in ``tests/test_paths.py``), at a fraction of the cost, because
symlink resolution was the largest single cost of ``register``
(BENCHMARKS.md): an existing path costs one ``open(O_PATH)`` and one
``readlink`` of ``/proc/self/fd/N``; a missing one stops at its first
missing component (nothing below a missing directory can be a symlink).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import stat
import struct
import sys
import threading
import unicodedata
from typing import Any

from ._errors import InvalidScope, shown
from ._rules import compact_ident

_PROC_FD = "/proc/self/fd/"
_HAVE_PROC = os.path.isdir(_PROC_FD)
access, F_OK = os.access, os.F_OK


def _resolved(path: str, want: bool = False) -> tuple[str, bool | None]:
    """realpath of an existing ``path`` through the kernel's own resolution,
    and with ``want``, whether it is a directory that folds case (``None``:
    not a directory, or its flags not read)."""
    folds = None
    fd = -1
    if want:
        try:
            fd = os.open(path, _DIR_FLAGS)
        except OSError:
            pass
        else:
            try:
                folds = _flags_fold(fd)
            except OSError:
                pass
    try:
        if fd < 0:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path), None
    try:
        real = os.readlink(_PROC_FD + str(fd))
    except OSError:
        return os.path.realpath(path), None
    finally:
        os.close(fd)
    if real.startswith("/") and not real.endswith(" (deleted)"):
        return real, folds
    return os.path.realpath(path), None


#: A procfs name that leads elsewhere: a process's root or working
#: directory, or an open file (``/proc/PID/...``, ``/proc/self/...``,
#: ``/proc/thread-self/...``, ``/proc/PID/task/TID/...``).
_MAGIC = re.compile(r"/(?:\d+|self|thread-self)(?:/task/\d+)?/(?:root|cwd|fd|map_files)(?:/|$)")


def check_reached(given: str, real: str) -> None:
    """Check that ``real``, the canonical text the kernel (or
    ``os.path.realpath``) gave for ``given``, names here what ``given``
    reaches: its longest existing part is the same file (device and inode)
    opened by either path. A magic link of /proc (``/proc/PID/root``,
    ``/proc/PID/cwd``, ``/proc/PID/fd/N``) leads into another mount
    namespace, or outside this process's root, where that text means
    another file (or none): such a path cannot be identified by this
    mount table, and is refused. ``/proc/self/root/...`` and a process's
    root in this namespace check out.

    Raises:
        InvalidScope: it does not check out (naming both paths).
    """
    head = given
    while True:
        try:
            fd = os.open(head, os.O_PATH | os.O_CLOEXEC)
            break
        except (FileNotFoundError, NotADirectoryError):
            if head == "/":
                return
            head = head[:head.rfind("/")] or "/"
        except OSError:
            return  # cannot be read: the kernel's walk will refuse it alike
    try:
        st = os.fstat(fd)
        try:
            text = os.readlink(_PROC_FD + str(fd))
        except OSError:
            text = None
    finally:
        os.close(fd)
    if text is not None and text.startswith("/") and not text.endswith(" (deleted)"):
        try:
            here = os.stat(text)
            if (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino):
                return
        except OSError:
            pass
    else:
        text = real
    magic = _MAGIC.match(given, 5) if given.startswith("/proc/") else None
    through = f", through {shown(given[:magic.end()].rstrip('/'))}," if magic else ""
    raise InvalidScope(
        f"cannot identify {shown(given)}: it leads{through} into another mount namespace or outside "
        f"this process's root, where it is {shown(text)}, and here that path is another file or none; "
        "give the path as this mount namespace sees it, or register from inside that namespace "
        "(nsenter --mount --target PID)")


def real_path(path: str) -> str:
    """``path`` as the ledger resolves a rule's path: absolute (relative to
    the working directory), every symlink followed and every ``..`` applied
    as the OS applies it (``os.path.realpath``; ``os.path.abspath`` would
    drop a ``..`` after a symlink lexically). ``~`` is not expanded.

    Args:
        path: a path, ``str``.

    Returns:
        ``str``, absolute.

    Raises:
        InvalidScope: ``path`` contains NUL, or leads through a link of
            /proc into another mount namespace (``/proc/PID/root/...``),
            where the text ``realpath`` gives names another file
            (:func:`check_reached`).
    """
    if "\x00" in path:
        raise InvalidScope(f"invalid path {path!r}: contains NUL")
    given = os.path.join(os.getcwd(), path)
    real = os.path.realpath(given)
    if real != given:
        check_reached(given, real)  # not through /proc into another mount namespace
    return real


def _below_missing(path: str, missing: dict[str, tuple[str, str, bool | None]]
                   ) -> tuple[str, str | None, bool | None] | None:
    """:func:`canonical`'s answer for ``path`` from a note in ``missing``
    on it or a directory above it, or ``None`` when there is none."""
    at = path
    while True:
        note = missing.get(at)
        if note is not None:
            head, real, folds = note
            if head == "/":
                return path, "/", None
            return (real if real != "/" else "") + path[len(head):], real, folds
        i = at.rfind("/")
        if i <= 0:
            return None
        at = at[:i]


def canonical_path(path: str) -> str:
    """The canonical form of a normalised absolute ``path``: symlinks in its
    existing part resolved, the missing rest appended as it is.

    Args:
        path: normalised absolute path, ``str``.

    Returns:
        ``str``, equal to ``os.path.realpath(path)``.
    """
    return canonical(path)[0]


def canonical(path: str, want: bool = False,
              missing: dict[str, tuple[str, str, bool | None]] | None = None
              ) -> tuple[str, str | None, bool | None]:
    """:func:`canonical_path`, and what it learnt on the way: ``(canonical
    path, its longest existing part (canonical) or None when not known,
    whether that part is a directory that folds case)``; the last is read
    only with ``want`` (one ``ioctl`` more), else ``None``, as it is when
    unknown.

    ``missing``: a dict the caller passes to every call for one request (the
    rules of one ``register``, with one ``want``), empty at first. A call
    that finds a component missing (not even a dangling link) notes it
    there, and a later call for a path at or below it answers from the note
    without asking again: what ``realpath`` gave at the moment the component
    was found missing, during the same request (nothing below a missing
    component can be a link). So one request's paths are resolved as of
    moments within it, as without the notes; a new request starts afresh."""
    if _HAVE_PROC:
        if missing:
            known = _below_missing(path, missing)
            if known is not None:
                return known
        # os.access answers without raising (an exception costs as much as
        # the syscall): the common missing-path case stays cheap.
        if access(path, F_OK):
            real, folds = _resolved(path, want)
            return real, real, folds
        head = path
        while head != "/":
            head = head[:head.rfind("/")] or "/"
            if head == "/" or access(head, F_OK):
                break
        # The first missing component may be a dangling symlink (or a loop,
        # or one created just now): realpath then follows its text.
        name = path[len(head):].split("/", 2)[1] if head != "/" else path.split("/", 2)[1]
        first = (head if head != "/" else "") + "/" + name
        if access(first, F_OK, follow_symlinks=False):
            return os.path.realpath(path), None, None
        if head == "/":
            if missing is not None:
                missing[first] = ("/", "/", None)
            return path, "/", None
        real, folds = _resolved(head, want)
        if missing is not None:
            missing[first] = (head, real, folds)
        return (real if real != "/" else "") + path[len(head):], real, folds  # (head a link to /)
    # Missing (or no /proc): walk down, stop at the first missing component.
    done = "/"
    parts = path.split("/")[1:] if path != "/" else []
    for i, part in enumerate(parts):
        candidate = done + part if done == "/" else done + "/" + part
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            rest = "/".join(parts[i:])
            return ((done if done == "/" else done + "/") + rest if rest else done), done, None
        except OSError:
            return os.path.realpath(path), None, None
        if stat.S_ISLNK(st.st_mode):
            return os.path.realpath(path), None, None  # a symlink on the way: the full algorithm
        done = candidate
    return done, done, None


# -- the identity of a path: what the mount table says it is -----------------
#
# ARCHITECTURE.md, "The identity of a path", says what a key is and why; in
# short: a rule's path is identified by the filesystem it lives on (the
# device number /proc/self/mountinfo gives, "major:minor") and the path within
# that filesystem, so that a bind mount, or another mount namespace, that
# shows one directory under two paths gives it one identity, and two
# directories shown under one path (each pod's own /work) get two. A key is
# the string "MAJ:MIN" + path within the filesystem ("MAJ:MIN" alone for its
# root), so that the path trie and the rule algebra stay component-based:
# key.split("/") is the device, then the path's components.

#: Filesystem types that compare every name without regard to case (and
#: normalise Unicode), whatever the directory: their keys are folded whole.
FOLDING_FILESYSTEMS = frozenset({"vfat", "msdos", "exfat", "hfsplus"})

#: Filesystem types whose directories may each fold case (``chattr +F``,
#: FS_CASEFOLD_FL): a name is folded where the directory it is in folds.
CASEFOLD_CAPABLE = frozenset({"ext4", "f2fs", "tmpfs"})

#: Filesystem types that compare names exactly, byte for byte (local
#: filesystems without a case-insensitive mode, and the kernel's own).
#: Any other type (FUSE: ``fuseblk``, ``fuse.*``; network: ``nfs``,
#: ``cifs``, ``9p``, ``virtiofs``; ``zfs``, ``jfs``, ``ntfs3``,
#: ``iso9660``, ...) may fold case, as the volume, server or options
#: decide: the filesystem itself is asked (:func:`_ask_folds`).
EXACT_FILESYSTEMS = frozenset({
    "ext2", "ext3", "xfs", "btrfs", "overlay", "squashfs", "erofs", "ramfs", "nilfs2", "reiserfs",
    "ubifs", "gfs2", "ocfs2", "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "mqueue",
    "hugetlbfs", "debugfs", "tracefs", "securityfs", "pstore", "bpf", "configfs", "fusectl",
    "binfmt_misc", "autofs", "efivarfs", "rpc_pipefs", "nsfs", "selinuxfs", "rootfs",
})

FS_CASEFOLD_FL = 0x40000000
# _IOR('f', 1, long): the kernel reads and writes an int through it.
FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1

_MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _unescape(field: bytes) -> str:
    r"""A mountinfo path field as a ``str`` path: the kernel writes space,
    tab, newline and backslash as ``\040``, ``\011``, ``\012``, ``\134``."""
    if b"\\" in field:
        field = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field)
    return os.fsdecode(field)


class Mount:
    """One line of ``/proc/self/mountinfo`` (proc(5)): ``id``, ``parent``
    (the mount it hangs from), ``dev`` (``"MAJ:MIN"`` of its filesystem),
    ``root`` (the path within the filesystem of the directory mounted),
    ``point`` (where, relative to the process's root), ``fstype`` and
    ``options`` (the filesystem's own, ``str``). ``fold``: 0, names keep
    their case; 1, the whole filesystem folds case; 2, each directory may;
    3, not known from its type: the filesystem is asked when a key needs
    it (then 0 or 1)."""

    __slots__ = ("id", "parent", "dev", "root", "point", "fstype", "options", "fold")

    def __init__(self, id: int, parent: int, dev: str, root: str, point: str, fstype: str,
                 options: str) -> None:
        self.id, self.parent, self.dev, self.root, self.point = id, parent, sys.intern(dev), root, point
        self.fstype, self.options = fstype, options
        opts = options.split(",")
        if fstype in FOLDING_FILESYSTEMS or "nocase" in opts:
            self.fold = 1
        elif fstype in CASEFOLD_CAPABLE:
            self.fold = 2 if _casefold_supported(fstype, opts) else 0
        elif fstype in EXACT_FILESYSTEMS:
            self.fold = 0
        else:
            self.fold = 3

    def key(self, within: str) -> str:
        """The key of ``within``, a path below this mount's root directory
        (``""`` for the root itself, else ``"/a/b"``), before folding."""
        root = self.root
        if root == "/":
            return self.dev + within
        return self.dev + root + within

    def __repr__(self) -> str:
        return f"<Mount {self.id} {self.dev} {self.root!r} at {self.point!r} {self.fstype}>"


def parse_mountinfo(data: bytes) -> list[Mount]:
    """The lines of ``/proc/self/mountinfo`` -> :class:`Mount` objects, in
    order. Lines it cannot read are skipped (a field the kernel adds one day
    goes after the ``-`` separator's known ones)."""
    out = []
    for line in data.split(b"\n"):
        f = line.split(b" ")
        try:
            sep = f.index(b"-", 6)
            out.append(Mount(int(f[0]), int(f[1]), f[2].decode("ascii"), _normal_root(_unescape(f[3])),
                             _unescape(f[4]), f[sep + 1].decode("utf-8", "replace"),
                             f[sep + 3].decode("utf-8", "replace") if len(f) > sep + 3 else ""))
        except (ValueError, IndexError):
            continue
    return out


def _normal_root(root: str) -> str:
    """A mount's root field as a normalised path: a bind mount of a deleted
    directory shows ``/dir//deleted``, one of a namespace file
    ``net:[4026531840]``; a key must be a plain path."""
    if root.endswith("//deleted"):
        root = root[:-9]
    return "/" + "/".join(p for p in root.split("/") if p not in ("", ".", ".."))


_casefold_kernel: dict[str, bool] = {}


def _casefold_supported(fstype: str, options: list[str]) -> bool:
    """Whether a directory of this mounted filesystem can fold case: tmpfs
    only when mounted with ``casefold``; ext4 and f2fs when the kernel can
    (``/sys/fs/TYPE/features/casefold``: without CONFIG_UNICODE the kernel
    refuses to mount a filesystem with the casefold feature at all)."""
    if fstype == "tmpfs":
        return any(o.startswith("casefold") for o in options)
    known = _casefold_kernel.get(fstype)
    if known is None:
        known = _casefold_kernel[fstype] = os.path.exists(f"/sys/fs/{fstype}/features/casefold")
    return known


class MountTable:
    """The mounts of this process's mount namespace, as path resolution
    sees them: :meth:`containing` walks a path from the root mount down,
    taking at each directory the mount on top of the stack there, so that a
    mount hidden under another (overmounted) is never taken."""

    __slots__ = ("mounts", "by_id", "on", "tree", "root", "under", "plain_root", "whole_root", "rules")

    def __init__(self, mounts: list[Mount]) -> None:
        self.mounts = mounts
        self.by_id = {m.id: m for m in mounts}
        # (mount it hangs from, point) -> mount; a later line wins.
        self.on = {(m.parent, m.point): m for m in mounts if m.parent != m.id}
        # The mount points as a trie of components: {name: (point or None, {...})}.
        self.tree: dict[str, Any] = {}
        for m in mounts:
            if m.point != "/":
                node = self.tree
                parts = m.point.split("/")[1:]
                for i, part in enumerate(parts):
                    here = node.get(part)
                    if here is None:
                        here = node[part] = [None, {}]
                    if i == len(parts) - 1:
                        here[0] = m.point
                    node = here[1]
        self.root = self._root()
        # Directory -> the visible mounts strictly below it, for recursive
        # rules (a directory with none is not a key).
        under: dict[str, list[Mount]] = {}
        if self.root is not None:
            for m in mounts:
                if m.point == "/" or self.containing(m.point) is not m:
                    continue  # the root, or hidden under another mount
                p = m.point
                while p != "/":
                    p = p[:p.rfind("/")] or "/"
                    under.setdefault(p, []).append(m)
        self.under = {k: tuple(v) for k, v in under.items()}
        # The root mount, when it shows a whole filesystem that folds no
        # case and hangs from nothing here: a key is then its device and the
        # path (identify's fast path).
        r = self.root
        self.whole_root = (r if r is not None and r.root == "/" and r.fold in (0, 2)
                           and (r.parent == r.id or r.parent not in self.by_id) else None)
        self.plain_root = self.whole_root if r is not None and r.fold == 0 else None
        # Rules identified with this table, for callers to reuse (a path's
        # identity is a function of the table alone where no directory may
        # fold case: flags can change without a mount); ``None`` otherwise.
        self.rules: dict[Any, Any] | None = None if any(m.fold == 2 for m in mounts) else {}

    def _root(self) -> Mount | None:
        # The bottom mount at "/" is the one not hanging from another mount
        # at "/" of this table; the root is what is stacked on it.
        at_root = [m for m in self.mounts if m.point == "/"]
        ids = {m.id for m in at_root}
        for m in at_root:
            if m.parent not in ids or m.parent == m.id:
                cur = m
                nxt = self.on.get((cur.id, "/"))
                while nxt is not None and nxt is not cur:
                    cur = nxt
                    nxt = self.on.get((cur.id, "/"))
                return cur
        return None

    def containing(self, path: str) -> Mount:
        """The mount ``path`` (absolute, normalised, symlinks resolved)
        lies in, as the kernel's path walk finds it."""
        cur = self.root
        assert cur is not None
        node = self.tree
        if not node or path == "/":
            return cur
        i = path.find("/", 1)
        if (path[1:] if i < 0 else path[1:i]) not in node:
            return cur  # most paths: no mount point on the way
        on = self.on
        for part in path[1:].split("/"):
            here = node.get(part)
            if here is None:
                return cur
            q = here[0]
            if q is not None:  # a mount point: take what is on top there
                nxt = on.get((cur.id, q))
                while nxt is not None:
                    cur = nxt
                    nxt = on.get((cur.id, q))
            node = here[1]
        return cur

    def enclosing(self, m: Mount) -> list[Mount]:
        """The mounts ``m`` hangs from, nearest first, as far as this
        table shows them."""
        out = []
        by_id = self.by_id
        seen = {m.id}
        p = by_id.get(m.parent)
        while p is not None and p.id not in seen:
            out.append(p)
            seen.add(p.id)
            p = by_id.get(p.parent)
        return out

    def below(self, path: str) -> tuple[Mount, ...]:
        """The visible mounts strictly below ``path``."""
        return self.under.get(path, ())


class _MountView:
    """One thread's :class:`MountTable`, read again only when the kernel
    says the mount table changed: ``poll()`` on an open
    ``/proc/self/mountinfo`` reports POLLPRI once after each mount or
    unmount in its namespace (proc(5)). One per thread, so that a change one
    thread's poll has taken is never missed by another, and no lock is
    taken on the hot path. A forked child makes its own."""

    __slots__ = ("fd", "poller", "table", "failed", "generation")

    def __init__(self) -> None:
        self.fd: int | None = None
        self.poller: Any = None
        self.table: MountTable | None = None
        self.failed = False
        self.generation = _generation[0]

    def get(self) -> MountTable | None:
        if self.generation != _generation[0]:
            self.close()
            self.failed = False
            self.generation = _generation[0]
        fd = self.fd
        if fd is not None:
            try:
                if not self.poller.poll(0):
                    return self.table
            except OSError:
                pass
        elif self.failed:
            return None
        try:
            if fd is None:
                fd = os.open(_MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
                poller = select.poll()
                poller.register(fd, select.POLLPRI)
                poller.poll(0)  # the table read below is the one it will compare with
                self.fd, self.poller = fd, poller
            chunks = []
            os.lseek(fd, 0, os.SEEK_SET)
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError:
            self.close()
            self.failed = True  # no /proc: rules are identified by their path alone
            return None
        table = MountTable(parse_mountinfo(b"".join(chunks)))
        self.table = table if table.root is not None else None
        return self.table

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = self.poller = self.table = None

    def __del__(self) -> None:  # the thread ended, or a forked child let go of its copy
        self.close()


_generation = [0]  # forget_mounts() moves it on: every thread reads afresh
_views = threading.local()


def _after_fork() -> None:
    global _views
    _views = threading.local()  # the parent's descriptors are closed as their views go


os.register_at_fork(after_in_child=_after_fork)


def mount_table() -> MountTable | None:
    """This process's mount table, or ``None`` when it cannot be read (no
    ``/proc``) or shows no root mount (a chroot that is not a mount point).
    Costs one ``poll()`` when nothing changed since the last call in this
    thread."""
    try:
        view = _views.view
    except AttributeError:
        view = _views.view = _MountView()
    got: MountTable | None = view.get()
    return got


def forget_mounts() -> None:
    """Read the mount table afresh on the next call, in every thread: for a
    process that has moved itself into another mount namespace
    (``setns``/``unshare``), which the kernel does not signal to the table
    it had open."""
    _generation[0] += 1


# -- case folding -------------------------------------------------------------------


def fold_name(name: str) -> str:
    """A name as a case-folding filesystem compares it: Unicode canonical
    caseless form, NFD(casefold(NFD(name))) (Unicode 15, section 3.13, the
    form Linux's utf8 casefolding computes, ``utf8_casefold``). It folds at
    least as much as vfat, exfat and hfsplus do, so two names one of them
    takes for one name are one here too."""
    if name.isascii():
        return name.lower()
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def _flags_fold(fd: int) -> bool:
    """Whether the directory open as ``fd`` folds case (FS_CASEFOLD_FL).
    Raises OSError when its flags cannot be read."""
    return bool(int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4], sys.byteorder) & FS_CASEFOLD_FL)


def _folds(path: str) -> bool | None:
    """Whether the directory ``path`` folds case (FS_CASEFOLD_FL); ``None``
    when it does not exist or is not a directory; raises OSError when its
    flags cannot be read."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return _flags_fold(fd)
    finally:
        os.close(fd)


def _fold_keep(table: MountTable, m: Mount, path: str, stop: str | None,
               known: tuple[str | None, bool | None] = (None, None)) -> int:
    """For a mount ``m`` whose directories may fold case (``m.fold == 2``)
    and ``path`` below ``m.point``: how many leading components of the path
    within the filesystem (``m.root``'s, then the rest's) keep their case;
    every one after them is folded (a name folds where its directory does).

    ``stop``: the deepest directory on the way readable through ``m`` (for
    a filesystem another is mounted on: the directory it is mounted in);
    ``None``: the deepest existing one on the way. The names below it fold
    as it does (a directory made in a folding one folds). ``known``: what
    :func:`canonical` learnt, ``(longest existing part, whether it folds)``,
    to start from (no directory is opened again when the answer is there).

    Reads the flags of that directory D first. When D does not fold, no
    directory above it does either: a directory made in a folding one
    folds, and ``chattr +F`` takes an empty directory (RELIABILITY.md, "At
    the edges", says the one way around this). When D folds, the
    directories above it are read up to the first that does not; past the
    mount's root directory, through a mount of the whole filesystem.

    Raises:
        InvalidScope: a directory's flags cannot be read (no permission to
            open it), or the folding goes above the mount's root and no
            mount of the whole filesystem shows those directories.
    """
    point = m.point
    base = "" if point == "/" else point
    within = path[len(base):]
    names = within.split("/")[1:] if within not in ("", "/") else []
    nroot = 0 if m.root == "/" else m.root.count("/")
    keep_all = nroot + len(names)

    def d(i: int) -> str:  # the directory holding names[i]
        return base + "/" + "/".join(names[:i]) if i else (point or "/")

    if stop is None:
        i = len(names)
        head, f = known
        if head is not None and len(head) >= len(base) and (head == path or path.startswith(head + "/")
                                                             or head == "/"):
            i = 0 if head in (point, base) else head[len(base):].count("/")
        else:
            f = None
        while f is None:
            f = _folds_named(d(i), m)
            if f is not None:
                break
            if i == 0:
                return keep_all  # the mount's root is gone: nothing to read
            i -= 1
    else:
        if len(stop) < len(base) or not (stop == point or stop.startswith(base + "/") or base == ""):
            return keep_all  # nothing of ``m`` can be read on the way (it is overmounted)
        i = 0 if stop in (point, base) else stop[len(base):].count("/")
        f = _folds_named(stop, m)
    if not f:
        return keep_all
    while i > 0:
        if not _folds_named(d(i - 1), m):
            return nroot + i
        i -= 1
    return _root_keep(table, m)


def _folds_named(path: str, m: Mount) -> bool | None:
    try:
        return _folds(path)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            return False  # a filesystem without these flags: nothing folds
        raise InvalidScope(f"cannot tell whether {shown(path)} folds case (a {m.fstype} directory "
                           f"may): its flags cannot be read: {exc.strerror}") from None


def _root_keep(table: MountTable, m: Mount) -> int:
    """How many components of ``m.root`` keep their case, when ``m``'s
    root directory folds (see :func:`_fold_keep`)."""
    if m.root == "/":
        return 0
    names = m.root.split("/")[1:]
    for w in table.mounts:
        if w.dev == m.dev and w.root == "/" and table.containing(w.point) is w:
            base = "" if w.point == "/" else w.point
            for j in range(len(names) - 1, -1, -1):
                if not _folds_named(base + "/" + "/".join(names[:j]) if j else (w.point or "/"), m):
                    return j + 1
            return 0
    raise InvalidScope(
        f"cannot identify a path below {shown(m.point)}: it shows {shown(m.root)} of the "
        f"{m.fstype} filesystem {m.dev}, whose directory there folds case, and which names above "
        "it fold cannot be read in this mount namespace (the whole filesystem is not mounted "
        "in it); register the rule where the whole filesystem is mounted")


def _fold_key(key: str, keep: int) -> str:
    """``key`` with every path component after the first ``keep`` folded."""
    parts = key.split("/")
    if len(parts) <= keep + 1:
        return key
    return "/".join(parts[: keep + 1] + [fold_name(p) for p in parts[keep + 1:]])


def _askable(name: str) -> list[str]:
    """Other spellings of ``name`` a filesystem that folds case (or
    normalises Unicode) takes for it: the case swapped, the other normal
    form."""
    out = []
    swapped = name.swapcase()
    if swapped != name and fold_name(swapped) == fold_name(name):
        out.append(swapped)
    if not name.isascii():
        for form in ("NFD", "NFC"):
            other = unicodedata.normalize(form, name)
            if other != name and other not in out:
                out.append(other)
    return out


def _ask_folds(m: Mount, path: str, stop: str | None) -> int:  # noqa: C901
    # (Complexity 16: the docstring's three places to ask, in order, each
    # with its own fallback; one function keeps that order in one place.)
    """Whether the filesystem of mount ``m`` (a type without a rule,
    ``m.fold == 3``) folds case: 1 or 0, kept in ``m.fold`` for the life of
    this mount table.

    Asked by looking a name up under another spelling: an existing name
    on the way (below ``m.point``, down to ``stop`` or the deepest
    existing directory of ``path``), else one in that directory, else one
    in the mount's root directory. The filesystem folds when a name is
    found under a spelling its directory does not list (``PROJ`` found, the
    listing has ``Proj``); it does not when that spelling is not found, or
    is listed as a name of its own. Inode numbers are not compared: FUSE
    gives each spelling looked up its own. One ``listdir`` of one
    directory and a few ``lstat`` calls.

    Raises:
        InvalidScope: there is no name with a letter to ask with (an empty
            filesystem), or the directory cannot be read.
    """
    base = "" if m.point == "/" else m.point
    limit = stop if stop is not None else path
    names = limit[len(base):].split("/")[1:] if len(limit) > len(base) else []
    d = m.point
    asked: list[tuple[str, str]] = []  # (directory, name found there)
    for n in names:
        p = (base if d == m.point else d) + "/" + n
        try:
            st = os.lstat(p)
        except OSError:
            break
        if _askable(n):
            asked.append((d, n))
            break
        if not stat.S_ISDIR(st.st_mode):
            break
        d = p
    try:
        for directory in ([] if asked else list(dict.fromkeys((d, m.point)))):
            with os.scandir(directory) as it:
                for e in it:
                    if _askable(e.name):
                        asked.append((directory, e.name))
                        break
            if asked:
                break
        if not asked:
            raise InvalidScope(
                f"cannot tell whether names in {shown(m.point)} fold case: its filesystem ({m.fstype}) may "
                "(no rule for its type) and has no name with a letter in it to ask it with; make one "
                "there first (mkdir)")
        directory, name = asked[0]
        listed = set(os.listdir(directory))
        prefix = "" if directory == "/" else directory
        if name not in listed:
            m.fold = 1  # found under a spelling the directory does not hold
            return 1
        for other in _askable(name):
            if other in listed:
                continue  # a name of its own: tells nothing
            try:
                os.lstat(prefix + "/" + other)
            except FileNotFoundError:
                continue
            m.fold = 1
            return 1
        # Every other spelling is not found, or is a name of its own (two
        # names a folding filesystem would take for one): it does not fold.
    except InvalidScope:
        raise
    except OSError as exc:
        raise InvalidScope(f"cannot tell whether names in {shown(m.point)} fold case (a {m.fstype} "
                           f"filesystem, which may): {shown(exc.filename or m.point)} cannot be read: "
                           f"{exc.strerror}") from None
    m.fold = 0
    return 0


def mount_key(table: MountTable, m: Mount, path: str, stop: str | None = None,
              resolve: bool = True, known: tuple[str | None, bool | None] = (None, None)) -> str:
    """The key of ``path`` (below ``m.point``) in mount ``m``: its device
    and the path within its filesystem, folded where that folds case
    (without ``resolve``, only where the whole filesystem does)."""
    within = path if m.point == "/" else path[len(m.point):]
    key = m.key("" if within == "/" else within)
    fold = m.fold
    if fold == 3:
        rest = key[len(m.dev):]
        if rest.isascii() and rest.islower() or fold_name(rest) == rest:
            return key  # folding would change nothing: no need to ask
        fold = _ask_folds(m, path, stop)
    if fold == 1:
        return _fold_key(key, 0)
    if fold == 2 and resolve:
        return _fold_key(key, _fold_keep(table, m, path, stop, known))
    return key


def identify(path: str, recursive: bool, resolve: bool = True, table: MountTable | None = None,
             known: tuple[str | None, bool | None] = (None, None),
             ) -> tuple[str, tuple[str, ...], tuple[str, ...]] | None:
    """The identity of a rule's path, as :class:`~scopeledger.ScopeRule`
    keeps it: ``(key, via, below)``, or ``None`` without a mount table.

    - ``key``: where ``path`` lives: its filesystem's device and the path
      within that filesystem.
    - ``via``: the same path in each filesystem the one holding it is
      mounted on, nearest first: a filesystem mounted on a directory lies
      within every rule that covers the directory (also one mounted after
      the rule was granted).
    - ``below`` (recursive rules): the root of each filesystem mounted
      below ``path`` now, so that the rule covers what they show under any
      other path too.

    Args:
        path: canonical absolute path (:func:`canonical_path`).
        recursive: whether the rule is.
        resolve: ``False`` (``resolve_symlinks=False``): no directory's
            case-folding flags are read (a filesystem whose type has no
            rule is still asked whether it folds, :func:`_ask_folds`).
        table: the mount table to use (one :func:`mount_table` call for
            all the rules of a request); ``None``: :func:`mount_table`.
        known: ``canonical(path, want)[1:]``, when the caller has it.

    Raises:
        InvalidScope: whether a name folds case cannot be told (see
            :func:`_fold_keep`).
    """
    ident = identity(path, recursive, resolve, table, known)
    if type(ident) is str:
        return (ident if path == "/" else ident + path), (), ()
    full: tuple[str, tuple[str, ...], tuple[str, ...]] | None = ident
    return full


def identity(path: str, recursive: bool, resolve: bool = True, table: MountTable | None = None,
             known: tuple[str | None, bool | None] = (None, None)) -> Any:
    """:func:`identify`'s answer as ``ScopeRule.ident`` holds it: in the
    common case (a path on the root filesystem, nothing mounted below a
    recursive rule) the device alone, ``"254:0"``, else ``(key, via,
    below)``, or ``None``. The hot path's form: no string is built."""
    table = mount_table() if table is None else table
    if table is None:
        return None
    m = table.containing(path)
    if m is table.plain_root or (m is table.whole_root and (not resolve or known[1] is False)):
        # The common case: the root filesystem, whole, and no name on the
        # way folds (none may, or the deepest existing directory, read as
        # the path was resolved, does not: then none above it does either).
        inside = table.under.get(path) if recursive else None
        if inside is None:
            return m.dev
        return (m.dev if path == "/" else m.dev + path, (), _root_keys(table, inside, resolve))
    if m.fstype == "proc":
        magic = _MAGIC.match(path, len(m.point) if m.point != "/" else 0)
        if magic is not None:
            # Not resolved (resolve_symlinks=False): the name of a magic
            # link is not where the files below it are.
            raise InvalidScope(f"cannot identify {shown(path)}: {shown(path[:magic.end()].rstrip('/'))} is a "
                               "link of /proc to a process's root, working directory or open file, not "
                               "resolved (resolve_symlinks=False); give the path it leads to")
    key = mount_key(table, m, path, None, resolve, known)
    via: tuple[str, ...] = ()
    if m.parent != m.id and m.parent in table.by_id:
        out = []
        child = m
        for a in table.enclosing(m):
            # ``a`` can be read down to the directory ``child`` is mounted
            # in; the rest of the way is hidden under ``child``.
            out.append(mount_key(table, a, path, child.point[:child.point.rfind("/")] or "/", resolve))
            child = a
        via = tuple(out)
    below: tuple[str, ...] = ()
    if recursive:
        mounts = table.below(path)
        if mounts:
            below = _root_keys(table, mounts, resolve)
    return compact_ident(path, key, via, below)


def _root_keys(table: MountTable, mounts: Any, resolve: bool) -> tuple[str, ...]:
    """The keys of the roots of ``mounts``, each once, in order (a function
    of its own: in :func:`identity` the generator's variables were cells
    made in every call)."""
    return tuple(dict.fromkeys(mount_key(table, n, n.point, n.point, resolve) for n in mounts))
