"""Process identity and liveness.

A pid alone is not an identity: pids are reused, and a zombie answers
``kill(pid, 0)``. A holder's process is identified by (format v2)::

    {"host": machine id, "boot": boot id, "pid": int,
     "ticks": start in clock ticks since boot, "pidns": "pid:[inode]"}

- ``host``: ``/etc/machine-id``, else ``/var/lib/dbus/machine-id`` (32 hex
  digits; an empty or ``uninitialized`` file counts as missing); ``None``
  where neither holds one. It tells an earlier boot of this host from
  another host sharing the ledger directory (NFS, virtiofs, a VM's shared
  folder).
- ``boot``: ``/proc/sys/kernel/random/boot_id`` (random per boot of a
  kernel); ``None`` where it cannot be read.
- ``ticks``: field 22 (``starttime``) of ``/proc/PID/stat``, clock ticks
  (``SC_CLK_TCK``, 1/100 s) since boot. No wall clock enters the identity
  (psutil's ``create_time`` adds the boot time, which moves when the wall
  clock is stepped). A start of 0 or one that cannot be read is ``None``:
  unknown, never proof of anything. Inside a time namespace the reading is
  shifted by its boot-time offset, which is taken back off, so every
  process of one boot records the same clock.
- ``pidns``: the PID namespace the pid is a number in (the recording
  process's, ``/proc/self/ns/pid``); ``None`` where it cannot be read.

Identities read from v1 lines (``{"pid", "start", "boot"[, "pidns"]}``,
``start`` in wall-clock seconds) keep their v1 meaning and are judged as
before (:func:`judge`).

The probe fails closed, like filelock's ``(pid, start time)`` check: a
holder is dead only on proof; when its liveness cannot be read the verdict
is ``UNKNOWN`` with the reason.
"""

from __future__ import annotations

import math
import os
import select
import signal
import time
from typing import Callable, Sequence

from ._errors import shown
from ._identity import Liveness, Probe, ProcessIdentity, Verdict
from ._imports import first_use

#: Where /proc is (tests point it at a made-up tree).
PROC = "/proc"
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
#: The initial PID and time namespaces' inode numbers (the kernel's
#: ``PROC_PID_INIT_INO`` and ``PROC_TIME_INIT_INO``, fixed since Linux 3.8/5.6).
INIT_PID_NS = "pid:[4026531836]"
INIT_TIME_NS = "time:[4026531834]"

_boot_id_cache: list[str | None] = []
_host_id_cache: list[str | None] = []
_pidns_cache: tuple[int, str | None] | None = None
_offset_cache: tuple[int, int | None] | None = None

#: Start times closer than this (seconds) are the same process (v1
#: identities only: psutil derives them from clock ticks plus the boot time).
START_TOLERANCE = 0.001

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_NS_PER_TICK = 1_000_000_000 // _TICKS_PER_SECOND


def boot_id() -> str | None:
    """The kernel's boot id (``/proc/sys/kernel/random/boot_id``), ``str``;
    ``None`` when it cannot be read. Cached for the life of the process."""
    if not _boot_id_cache:
        try:
            # (bytes, decoded: a text file's codec is looked up, and its
            # module imported, on first use: see scopeledger._imports)
            with open(_BOOT_ID_PATH, "rb") as f:
                value: str | None = f.read().decode("ascii").strip() or None
        except (OSError, ValueError):
            value = None
        _boot_id_cache.append(value)
    return _boot_id_cache[0]


def host_id() -> str | None:
    """This host's identity: the machine id (``/etc/machine-id``, else
    ``/var/lib/dbus/machine-id``), 32 lowercase hex digits; ``None`` when
    neither file holds one (missing, empty, ``uninitialized``, unreadable).
    Cached for the life of the process.

    Without it a holder from another boot id cannot be told from one on
    another host, so it is never reclaimed as from an earlier boot (see
    :func:`judge`); ``systemd-machine-id-setup`` or ``dbus-uuidgen
    --ensure=/etc/machine-id`` creates one."""
    if not _host_id_cache:
        value = None
        for path in _MACHINE_ID_PATHS:
            try:
                with open(path, "rb") as f:
                    text = f.read(64).strip().decode("ascii").lower()
            except (OSError, UnicodeDecodeError):
                continue
            if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
                value = text
                break
        _host_id_cache.append(value)
    return _host_id_cache[0]


def pid_namespace() -> str | None:
    """The PID namespace of this process (``/proc/self/ns/pid``'s target,
    e.g. ``"pid:[4026531836]"``), or ``None`` where it cannot be read."""
    global _pidns_cache
    pid = os.getpid()
    if _pidns_cache is None or _pidns_cache[0] != pid:
        try:
            ns: str | None = os.readlink(f"{PROC}/self/ns/pid")
        except OSError:
            ns = None
        _pidns_cache = (pid, ns)
    return _pidns_cache[1]


def _boottime_offset() -> int | None:
    """Nanoseconds this process's time namespace adds to the boot-time
    clock (0 in the initial one); ``None`` when it cannot be known (its
    time namespace is not the one ``timens_offsets`` describes)."""
    global _offset_cache
    pid = os.getpid()
    if _offset_cache is None or _offset_cache[0] != pid:
        offset: int | None
        try:
            ns = os.readlink(f"{PROC}/self/ns/time")
        except OSError:
            ns = INIT_TIME_NS  # no time namespaces (before Linux 5.6): no offset
        if ns == INIT_TIME_NS:
            offset = 0
        else:
            offset = None
            try:
                # timens_offsets describes the namespace of this process's
                # future children: it is ours only while both are the same.
                if os.readlink(f"{PROC}/self/ns/time_for_children") == ns:
                    with open(f"{PROC}/self/timens_offsets", "rb") as f:  # (bytes: as boot_id)
                        for line in f.read().decode("ascii").splitlines():
                            parts = line.split()
                            if parts and parts[0] in ("boottime", "7"):
                                offset = int(parts[1]) * 1_000_000_000 + int(parts[2])
            except (OSError, ValueError, IndexError):
                offset = None
        _offset_cache = (pid, offset)
    return _offset_cache[1]


def read_stat(pid: int | str) -> tuple[str, int | None]:
    """``(state, start ticks)`` of process ``pid`` from ``/proc/PID/stat``.

    The command name (field 2) may hold spaces and parentheses: the fields
    after it are those after the *last* ``)``. The start (field 22) is in
    clock ticks since boot, taken back to the initial time namespace's
    clock; ``None`` when it reads 0 or the offset of this process's time
    namespace cannot be known or is not whole ticks.

    Raises:
        FileNotFoundError: no such process (here). PermissionError: /proc
            refuses (``hidepid``). OSError: another read error.
        ValueError: the file does not parse.
    """
    state, ticks, _ = _stat_fields(pid)
    return state, ticks


def _stat_fields(pid: int | str) -> tuple[str, int | None, list[bytes]]:
    """``(state, start ticks, fields)`` of process ``pid`` (:func:`_parse_stat`
    of its ``/proc/PID/stat``); raises as :func:`read_stat`."""
    path = f"{PROC}/{pid}/stat"
    try:
        with open(path, "rb", buffering=0) as f:
            data = f.read(4096)
    except ProcessLookupError:  # (opened, then the process was reaped before the read: ESRCH)
        raise FileNotFoundError(f"no such process: {path}") from None
    return _parse_stat(data, path)


def _parse_stat(data: bytes, where: str) -> tuple[str, int | None, list[bytes]]:
    """``(state, start ticks, fields)`` of a ``/proc/PID/stat`` text (as
    :func:`read_stat`); ``fields`` are those after the command name, the
    state (field 3) first, so field N is ``fields[N - 3]``.

    Raises:
        ValueError: the text does not parse (``where`` names the file).
    """
    close = data.rfind(b")")  # (the command name may hold spaces and parentheses: after the last one)
    fields = data[close + 1:].split()
    if close < 0 or len(fields) < 20:
        raise ValueError(f"{where} does not parse: {data[:200]!r}")
    state = fields[0].decode("ascii", "replace")
    ticks = int(fields[19])
    if ticks <= 0:
        return state, None, fields
    offset = _boottime_offset()
    if offset is None or offset % _NS_PER_TICK:
        return state, None, fields
    ticks -= offset // _NS_PER_TICK
    return state, ticks if ticks > 0 else None, fields


#: ``exit_code``, the last field of ``/proc/PID/stat`` (since Linux 3.5): a
#: thread's exit status as ``waitpid`` gives it (``fields[49]`` of
#: :func:`_parse_stat`).
_EXIT_CODE_FIELD = 52


def ready(fds: Sequence[int], timeout: float | None) -> list[int]:
    """Which of the descriptors ``fds`` are readable, or hung up, within
    ``timeout`` seconds (``None``: until one is; ``0``: now), by ``poll(2)``:
    unlike ``select(2)`` it takes any descriptor number, also in a process
    with more than 1024 files open (``select`` raised ``ValueError`` there: a
    fresh tester's finding). A pidfd is readable once its process exited.
    A descriptor that is not open counts as ready (``POLLNVAL``): its next
    use says what is wrong.

    Raises:
        OSError: as ``poll(2)`` (not ``EINTR``: retried, PEP 475).
    """
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    ms = None if timeout is None else math.ceil(max(0.0, timeout) * 1000)  # (never sooner than asked)
    return [fd for fd, _ in p.poll(ms)]


def zombie_status(pid: int, ticks: int) -> int | None:
    """How zombie ``pid``, the process that started at ``ticks`` (clock
    ticks since boot, as :func:`read_stat` reads them), ended, read from
    ``/proc/PID/stat`` without reaping it: ``subprocess``'s convention, an
    exit status 0-255, or ``-N`` when signal N (1-127) killed it.

    ``None`` (nothing is known, nothing is guessed) unless all of these
    hold, read through one ``/proc/PID`` directory descriptor, which names
    one process and never another that takes its pid later (once the
    zombie is reaped, reads through it fail): its ``stat`` says ``Z`` (a
    zombie: exited, not reaped) and its start is ``ticks``; the kernel
    shows the ``exit_code`` field (Linux 3.5 and later); and this process
    may read it: the kernel shows 0 in its place to a reader that may not
    ``ptrace``-read the process (another user's, without
    ``CAP_SYS_PTRACE``), which would read as an exit status of 0, so
    ``ns/pid``, refused under the same check, is read too, after it.

    "Proven" as far as a start time proves it: a pid reused within the
    same clock tick as the holder's process started is not told apart
    (RELIABILITY.md, "What remains"), and such a stranger's status would
    be read as the holder's.

    The field is the main thread's (``stat`` shows the thread-group
    leader); :func:`judge` asks only once every thread is gone. For a
    process whose main thread ended first (``pthread_exit``) and another
    thread then ended it (``exit``, a fatal signal), it was what the
    parent's ``waitpid`` got on the kernel this was tried on (6.18;
    ``tests/test_zombie_exit_status.py`` checks it on the kernel it runs on).
    """
    try:
        fd = os.open(f"{PROC}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            sfd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=fd)
            try:
                data = os.read(sfd, 4096)
            finally:
                os.close(sfd)
            state, start, fields = _parse_stat(data, f"{PROC}/{pid}/stat")
            if state != "Z" or start != ticks or len(fields) < _EXIT_CODE_FIELD - 2:
                return None
            raw = int(fields[_EXIT_CODE_FIELD - 3])
            os.readlink("ns/pid", dir_fd=fd)  # (refused unless the field above was shown to us)
        except (OSError, ValueError):
            return None
    finally:
        os.close(fd)
    return returncode_of(raw)


def zombie_parent(pid: int, ticks: int) -> int | None:
    """The pid of the parent of zombie ``pid`` (the process that started at
    ``ticks``, as :func:`zombie_status` proves it) while that parent is
    alive and so may yet record how its child ended (``ledger run``,
    ``spawn``: they learn the exit status, record the release, then reap):
    its ``stat`` says ``Z`` with that start, its parent (field 4) is above 1
    (not init, nor a parent outside this PID namespace, shown as 0) and is
    not a zombie itself. ``None`` otherwise, or when it cannot be read.
    Read only by a waiter deciding whether to stand back a moment
    (``scopeledger._wait``, :data:`~scopeledger._wait.ZOMBIE_GRACE_SECONDS`),
    never on the hot path."""
    try:
        state, start, fields = _stat_fields(pid)
        if state != "Z" or start != ticks:
            return None
        ppid = int(fields[1])
        if ppid <= 1:
            return None
        parent_state, _ = read_stat(ppid)
    except (OSError, ValueError, IndexError):
        return None
    return ppid if parent_state not in ("Z", "X") else None


def _ended(code: int) -> str:
    """How a process ended, from its return code (``subprocess``'s
    convention), as a clause: ``"it exited with status 3"``, ``"it was
    killed by SIGKILL"``."""
    if code >= 0:
        return f"it exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"it was killed by {name}"


def returncode_of(raw: int) -> int | None:
    """A ``waitpid`` status (``int``) as ``subprocess``'s return code: the
    exit status (0-255) of a process that exited, ``-N`` for one signal N
    (1-127) killed (a core dump or not); ``None`` for anything else (a
    stop, a value out of range)."""
    if not 0 <= raw <= 0xFFFF:
        return None
    if os.WIFEXITED(raw):
        return os.WEXITSTATUS(raw)
    if os.WIFSIGNALED(raw):
        return -os.WTERMSIG(raw)
    return None


def _proc_is_ours() -> bool:
    """Whether /proc shows this process's PID namespace (``/proc/self`` is
    our pid): under ``unshare --pid --fork`` without ``--mount-proc`` it
    shows the parent's, where the same numbers are other processes."""
    try:
        return os.readlink(f"{PROC}/self") == str(os.getpid())
    except OSError:
        return False


def identify(pid: int | None = None) -> ProcessIdentity:
    """The identity of process ``pid`` (default: the calling process), as
    seen from this process's PID namespace.

    Returns:
        :class:`ProcessIdentity`; ``ticks`` is ``None`` when the start
        cannot be read (``hidepid``, a /proc of another PID namespace, a
        start of 0).

    Raises:
        ProcessLookupError: no process has this pid.
        TypeError: ``pid`` is not an ``int``. ValueError: ``pid`` <= 0, or
            above 2**31-1 (no pid is: the kernel's are C ints).
    """
    if pid is None:
        where: int | str = "self"
        pid = os.getpid()
    else:
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise TypeError(f"pid must be an int, not {type(pid).__name__}")
        if pid <= 0:
            raise ValueError(f"pid must be positive, got {shown(pid)}")
        if pid >= 1 << 31:  # (os.kill would raise OverflowError)
            raise ValueError(f"pid must be at most {(1 << 31) - 1}, got {shown(pid)}")
        where = pid if pid != os.getpid() else "self"
    ticks = None
    if where == "self" or _proc_is_ours():
        try:
            ticks = read_stat(where)[1]
        except FileNotFoundError:
            _must_exist(pid)
        except (OSError, ValueError):
            pass
    else:
        _must_exist(pid)
    return ProcessIdentity(host=host_id(), boot=boot_id(), pid=pid, ticks=ticks, pidns=pid_namespace())


def _must_exist(pid: int) -> None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ProcessLookupError(f"no process with pid {pid}") from None
    except OSError:
        pass  # EPERM: it exists


def probe(ident: ProcessIdentity) -> Liveness:
    """The default liveness probe: :func:`judge` without its reason."""
    return judge(ident).liveness


def _unknown(why: str) -> Verdict:
    return Verdict(Liveness.UNKNOWN, why)


def judge(ident: ProcessIdentity, boots: Callable[[], dict[str, list[int]]] | None = None) -> Verdict:  # noqa: C901
    # (Complexity over 15: the decision list of the docstring, one branch per
    # fact of /proc in its order; splitting it would hide the order.)
    """Whether the process of ``ident`` is alive, and why.

    For a v2 identity, in this order:

    - no boot id (recorded or here): ``UNKNOWN``;
    - another boot id: ``EARLIER_BOOT`` when the host (machine id) is this
      one and nothing ``boots`` knows disproves it (see
      :func:`earlier_boot_disproved`); ``UNKNOWN`` "on another host (<id>)"
      when it is another, and when either has no machine id (an earlier
      boot cannot be told from another host);
    - the same boot id is the same running kernel, whatever the machine id
      says (a container with its own): the pid is judged here;
    - another PID namespace: ``NAMESPACE_GONE`` when no process on the host
      is in it any more, or those in a namespace of that number all started
      after the holder's process (a new namespace reusing the inode
      number); ``UNKNOWN`` while it exists, or when that cannot be read
      (this process is not in the initial PID namespace and so does not see
      every process, /proc is mounted with ``hidepid``, a process's
      namespace is unreadable);
    - no such pid: ``GONE`` when ``kill(pid, 0)`` agrees (``hidepid=2``
      hides live processes: ``UNKNOWN``); a later start (ticks) on the pid:
      ``PID_REUSED``; a zombie: ``ZOMBIE`` (but a process whose main
      thread has exited while other threads run shows as a zombie too:
      alive, ``UNKNOWN`` when its threads cannot be read); a start not recorded or not
      readable: ``UNKNOWN`` (never proof of reuse); else ``ALIVE``.

    A ``ZOMBIE`` verdict carries how the process ended
    (:attr:`Verdict.returncode`, which a reclaim records as its
    ``exit_code`` or ``exit_signal``) only when the zombie is proven to be
    the holder's process (the same boot, PID namespace, pid and recorded
    start) and the kernel shows its status to this process
    (:func:`zombie_status`); else ``None``: never a guess.

    A v1 identity (``start`` in wall-clock seconds) is judged as before v2:
    another boot id is ``EARLIER_BOOT`` (v1 recorded no host), another PID
    namespace ``UNKNOWN``, a start time off by whole seconds ``UNKNOWN`` (a
    wall-clock step or a reuse: cannot tell).

    Args:
        ident: the holder's process identity.
        boots: ``() -> {boot id: [first seq, last seq, ts of the last
            event]}``, what the log says of the boots that wrote with this
            host's machine id (``Ledger`` passes it); ``None``: the machine
            id alone decides.

    Returns:
        :class:`Verdict`. Never raises for a well-formed identity.
    """
    if ident.format == 1:
        return _judge_v1(ident)
    here_boot = boot_id()
    if ident.boot is None:
        return _unknown("no boot id was recorded for its process")
    if here_boot is None:
        return _unknown("this host's boot id cannot be read")
    if ident.boot != here_boot:
        here = host_id()
        if ident.host is not None and here is not None:
            if ident.host == here:
                doubt = earlier_boot_disproved(ident.boot, here_boot, here, boots()) if boots else None
                if doubt is not None:
                    return _unknown(doubt)
                return Verdict(Liveness.EARLIER_BOOT, f"it ran under an earlier boot of this host "
                                                      f"(boot {ident.boot})")
            return _unknown(f"on another host ({ident.host})")
        missing = "no machine id was recorded for it" if ident.host is None else \
            "this host has no machine id (/etc/machine-id)"
        return _unknown(f"from another boot ({ident.boot}), and {missing}: an earlier boot of this "
                        "host cannot be told from another host")
    here_ns = pid_namespace()
    if ident.pidns is None:
        return _unknown("its PID namespace was not recorded")
    if here_ns is None:
        return _unknown("this process's PID namespace cannot be read")
    if not _proc_is_ours():
        return _unknown(f"{PROC} shows another PID namespace than this process's")
    if ident.pidns != here_ns:
        return _judge_namespace(ident, here_ns)
    pid = ident.pid
    try:
        state, ticks = read_stat(pid)
    except FileNotFoundError:
        return _gone_or_hidden(pid)
    except PermissionError:
        return _unknown(f"{PROC}/{pid}/stat cannot be read (permission denied)")
    except (OSError, ValueError) as exc:
        return _unknown(f"{PROC}/{pid}/stat cannot be read ({exc})")
    if ident.ticks is not None and ticks is not None and ticks != ident.ticks:
        if ticks > ident.ticks:
            return Verdict(Liveness.PID_REUSED, f"pid {pid} now belongs to a process started at tick "
                                                f"{ticks} since boot, not {ident.ticks}")
        return _unknown(f"pid {pid} started at tick {ticks} since boot, before the recorded "
                        f"{ident.ticks}: the two readings do not agree")
    if state in ("Z", "X"):
        # Ours, or a stranger's after ours: dead either way, unless only its
        # main thread has exited (pthread_exit) and other threads run on.
        verdict = _zombie(pid)
        if verdict is not None:
            if verdict.liveness is Liveness.ZOMBIE and ident.ticks is not None and ticks == ident.ticks:
                # Proven the holder's own process (its boot, PID namespace,
                # pid and start): how it ended, if the kernel shows it to us.
                code = zombie_status(pid, ident.ticks)
                if code is not None:
                    return Verdict(Liveness.ZOMBIE, verdict.why + f"; {_ended(code)}", returncode=code)
            return verdict
    if ident.ticks is None:
        return _unknown(f"its start time was not recorded: pid {pid} is in use, by it or by a "
                        "later process")
    if ticks is None:
        return _unknown(f"the start time of pid {pid} cannot be read")
    return Verdict(Liveness.ALIVE)


def _zombie(pid: int) -> Verdict | None:
    """The verdict on a pid whose ``stat`` reads zombie: ``ZOMBIE`` when
    every thread has exited, ``UNKNOWN`` when its threads cannot be read,
    ``None`` (judge on) when a thread runs on (see :func:`_live_threads`)."""
    threads = _live_threads(pid)
    if threads is None:
        return _unknown(f"pid {pid}'s main thread has exited and whether other threads of it still run "
                        f"cannot be read ({PROC}/{pid}/task)")
    if not threads:
        return Verdict(Liveness.ZOMBIE, f"pid {pid} has exited (a zombie: its parent has not reaped it)")
    return None


def _live_threads(pid: int) -> bool | None:
    """Whether a process whose ``/proc/PID/stat`` says zombie (``Z``, or
    ``X``) still has a thread that is not: its main thread (the
    thread-group leader, whose state ``stat`` shows) shows ``Z`` from the
    moment it exits (``pthread_exit``) until the process's last thread
    does, while the other threads run on. ``None`` when the threads cannot
    be read. One ``listdir`` and one read per thread."""
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except FileNotFoundError:
        return False  # gone meanwhile
    except OSError:
        return None
    for tid in tids:
        if tid == str(pid):
            continue
        try:
            with open(f"{PROC}/{pid}/task/{tid}/stat", "rb", buffering=0) as f:
                data = f.read(4096)
        except (FileNotFoundError, ProcessLookupError):
            continue  # that thread exited meanwhile (before the open, or before the read: ESRCH)
        except OSError:
            return None
        fields = data[data.rfind(b")") + 1:].split()
        if not fields:
            return None
        if fields[0] not in (b"Z", b"X"):
            return True
    return False


def boottime_ns() -> int | None:
    """``CLOCK_BOOTTIME`` now, ``int`` nanoseconds since this boot began
    (counting suspend; never stepped), as the initial time namespace reads
    it (this process's time-namespace offset taken back off), so that every
    process of one boot reads one clock; ``None`` when that offset cannot
    be known. What leases are judged on (``scopeledger._lease``)."""
    offset = _boottime_offset()
    if offset is None:
        return None
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - offset


def _boot_start_ns() -> int | None:
    """When this boot began, ns since the epoch by this host's wall clock
    (now less ``CLOCK_BOOTTIME``, whose time-namespace offset is taken
    back off); ``None`` when that offset cannot be known."""
    offset = _boottime_offset()
    if offset is None:
        return None
    return time.time_ns() - (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - offset)


def earlier_boot_disproved(boot: str, here_boot: str, host: str,
                           spans: dict[str, list[int]]) -> str | None:
    """Why boot id ``boot``, recorded with this host's machine id ``host``,
    is not provably an earlier boot of this host, or ``None`` when nothing
    the log says disproves it.

    A machine id is shared by every clone of an image that ships one, and
    a log can never prove that another boot id is over; it can prove that
    it is not an earlier boot of this host. Boots of one host follow one
    another: each wrote the log in one stretch of seqs, before the next
    began, and this (running) boot's stretch lasts until now. So the
    machine id is more than one host's when two boots' stretches overlap
    (one wrote, another wrote, the first wrote again; or another wrote
    after this boot had): then no other boot of it is taken for an earlier
    one. And a boot whose last event is stamped at or after the moment
    this boot began (its clock against this host's) cannot be an earlier
    boot, unless a clock was wrong: kept as well.

    Args:
        boot: the holder's boot id; here_boot: this boot's; host: the
            machine id both were recorded with.
        spans: ``{boot id: [first seq, last seq, ts of its last event
            (ns)]}`` of the events whose writer had machine id ``host``.
    """
    stretches = sorted((first, last if b != here_boot else float("inf"), b)
                       for b, (first, last, _) in spans.items())
    top: tuple[float, str, int] | None = None  # the stretch reaching furthest so far
    for first, last, b in stretches:
        if top is not None and first < top[0]:
            reach, other, other_first = top
            if other == here_boot:
                seen = f"boot {b} wrote at seq {first}, after this boot's first event (seq {other_first})"
            else:
                seen = (f"boot {other} wrote at seqs {other_first} and {int(reach)}, boot {b} at seq "
                        f"{first} in between")
            return (f"this host's machine id ({host}) is more than one running host's (a cloned "
                    f"image?): {seen}; so boot {boot} may be another live host's, not an earlier boot "
                    "of this one (give each host its own machine id: systemd-machine-id-setup)")
        if top is None or last > top[0]:
            top = (last, b, first)
    mine = spans.get(boot)
    start = _boot_start_ns()
    if mine is not None and start is not None and mine[2] >= start:
        return (f"its boot ({boot}) wrote at seq {mine[1]}, stamped {(mine[2] - start) / 1e9:.1f} s "
                "after this boot began (by this host's clock): not an earlier boot of this host unless "
                f"a clock was wrong; another host with this machine id ({host})? (a cloned image)")
    return None


def _gone_or_hidden(pid: int) -> Verdict:
    """/proc shows no such pid; ``kill(pid, 0)``, which /proc's ``hidepid``
    does not affect, decides between gone and hidden (kept)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return Verdict(Liveness.GONE, f"pid {pid} no longer exists")
    except OSError:  # EPERM: it exists, owned by someone else
        pass
    return _unknown(f"pid {pid} exists but {PROC} does not show it (hidepid)")


# -- PID namespaces ------------------------------------------------------------------

def _hidepid() -> str | None:
    """The ``hidepid=`` option of the /proc mount, when set (not 0/off)."""
    try:
        with open(f"{PROC}/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "unknown (mountinfo unreadable)"
    found = None
    for line in lines:
        head, _, tail = line.partition(" - ")
        parts = head.split()
        if len(parts) >= 5 and parts[4] == PROC:
            fs = tail.split()
            found = None
            if fs and fs[0] == "proc":
                for opt in (fs[2] if len(fs) > 2 else "").split(","):
                    if opt.startswith("hidepid=") and opt[8:] not in ("0", "off"):
                        found = opt[8:]
    return found


def _nspid(pid: str) -> list[bytes] | None:
    with open(f"{PROC}/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"NSpid:"):
                return line.split()[1:]
    return None


def _scan_namespace(ns: str) -> tuple[bool, int | None, list[tuple[str, str]]]:
    """Look for processes in PID namespace ``ns`` among every process /proc
    lists (one ``readlink`` each; the start of those in ``ns``).

    Returns:
        ``(any found, oldest start ticks among them or None when one is
        unreadable, [(pid, why), ...] of processes whose namespace cannot be
        read)``.
    """
    found = False
    oldest: int | None = None
    unreadable: list[tuple[str, str]] = []
    with os.scandir(PROC) as it:
        pids = [e.name for e in it if e.name.isdigit()]
    for pid in pids:
        try:
            link = os.readlink(f"{PROC}/{pid}/ns/pid")
        except FileNotFoundError:
            continue  # exited meanwhile
        except OSError as exc:
            # Its namespace link is refused (ptrace rules): NSpid, readable
            # by all, still says whether it is in /proc's own namespace.
            try:
                nspid = _nspid(pid)
            except FileNotFoundError:
                continue
            except OSError:
                nspid = None
            if nspid is not None and len(nspid) == 1:
                continue  # in this (the initial) namespace
            unreadable.append((pid, exc.strerror or str(exc)))
            continue
        if link != ns:
            continue
        try:
            ticks = read_stat(pid)[1]
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            ticks = None
        oldest = ticks if not found else (None if oldest is None or ticks is None else min(oldest, ticks))
        found = True
    return found, oldest, unreadable


def _judge_namespace(ident: ProcessIdentity, here_ns: str) -> Verdict:
    """A holder in another PID namespace than this process's (same boot;
    its namespace recorded: :func:`judge` asks only then)."""
    ns = ident.pidns
    assert ns is not None
    if here_ns != INIT_PID_NS:
        return _unknown(f"in another PID namespace ({ns}); this process is in {here_ns}, not the "
                        "host's first, and does not see every process to tell whether it still exists")
    hide = _hidepid()
    if hide is not None:
        return _unknown(f"in another PID namespace ({ns}); {PROC} is mounted with hidepid={hide}, so "
                        "whether it still exists cannot be told")
    found, first, unreadable = _scan_namespace(ns)
    if found:
        if ident.ticks is None or first is None or first <= ident.ticks:
            return _unknown(f"in another PID namespace ({ns}), which still exists")
        gone = Verdict(Liveness.NAMESPACE_GONE,
                       f"its PID namespace ({ns}) is gone: the namespace of that number now is a new one "
                       f"(its oldest process started at tick {first} since boot, after this holder's "
                       f"{ident.ticks})")
    else:
        gone = Verdict(Liveness.NAMESPACE_GONE, f"no process is left in its PID namespace ({ns})")
    if unreadable:
        pids = ", ".join(p for p, _ in unreadable[:5]) + (", ..." if len(unreadable) > 5 else "")
        return _unknown(f"in another PID namespace ({ns}); the namespace of pid {pids} cannot be read "
                        f"({unreadable[0][1]}), so whether it still exists cannot be told")
    return gone


# -- v1 identities ---------------------------------------------------------------------


def _judge_v1(ident: ProcessIdentity) -> Verdict:
    """A v1 identity (wall-clock ``start``), judged as before v2."""
    here_boot = boot_id()
    if here_boot is None:
        return _unknown("this host's boot id cannot be read")
    if ident.boot != here_boot:
        return Verdict(Liveness.EARLIER_BOOT, f"it ran under an earlier boot (boot {ident.boot}; a v1 "
                                              "record, which names no host)")
    if ident.pidns is not None and ident.pidns != pid_namespace():
        return _unknown(f"in another PID namespace ({ident.pidns}), as a v1 record")
    with first_use:
        import psutil  # (here: only v1 identities need it, and it costs start-up time, issue 18)

    pid = ident.pid
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return _gone_or_hidden(pid)
    except (psutil.AccessDenied, OSError) as exc:
        return _unknown(f"pid {pid} cannot be read ({type(exc).__name__})")
    try:
        stepped = False
        if ident.start is not None:
            d = proc.create_time() - ident.start
            if abs(d) > START_TOLERANCE:
                if abs(d - round(d)) > START_TOLERANCE:
                    return Verdict(Liveness.PID_REUSED, f"pid {pid} now belongs to a process started "
                                                        f"{d:+.2f} s from the recorded start")
                stepped = True  # whole seconds: a clock step, or a reuse; cannot tell
        if proc.status() == psutil.STATUS_ZOMBIE:
            verdict = _zombie(pid)
            if verdict is not None:
                return verdict
        if stepped:
            return _unknown(f"pid {pid} started a whole number of seconds from the recorded start: a "
                            "wall-clock step or a reused pid (a v1 record: cannot tell)")
    except psutil.NoSuchProcess:
        return _gone_or_hidden(pid)
    except (psutil.AccessDenied, OSError) as exc:
        return _unknown(f"pid {pid} cannot be read ({type(exc).__name__})")
    return Verdict(Liveness.ALIVE)


def run_probe(fn: Probe, ident: ProcessIdentity,
              boots: Callable[[], dict[str, list[int]]] | None = None) -> Verdict:
    """Call a probe and normalise its answer to a :class:`Verdict`; the
    default probe gives its reasons (:func:`judge`, with ``boots``); an
    exception inside a probe counts as ``UNKNOWN`` (never reclaim what you
    cannot prove dead)."""
    try:
        if fn is probe or fn is judge:
            return judge(ident, boots)
        answer = fn(ident)
    except Exception as exc:  # noqa: BLE001 - fail closed
        return _unknown(f"the liveness probe failed ({type(exc).__name__}: {exc})")
    if isinstance(answer, Verdict):
        return answer
    if isinstance(answer, Liveness):
        return Verdict(answer, "" if answer is not Liveness.UNKNOWN else "the liveness probe could not tell")
    return Verdict(Liveness.ALIVE) if answer else Verdict(Liveness.GONE, "the liveness probe said so")
