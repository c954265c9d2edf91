"""``spawn`` and ``adopt``: what ``ledger run`` does, for a runtime in
Python, and taking children back after a restart.

``spawn(ledger, name, argv, rules)`` reserves the scope (``register``, or
``delegate`` with ``parent``; ``wait=`` as there), starts the child held at a
gate (a shell waiting on a pipe before it ``exec``\\ s the command, so
the command never runs unbound), binds the grant to the child (``attach``
with the grant's token), opens the gate, and returns a :class:`Spawned`.
The child's environment has ``SCOPELEDGER_DIR``, ``SCOPELEDGER_HOLDER`` and
``SCOPELEDGER_TOKEN``, so that a ``ledger run`` (or a ``spawn`` reading
:func:`from_environment`) inside it delegates from this holder. On a
PostgreSQL ledger ``SCOPELEDGER_DIR`` is its URL without the password, and a
password the URL carried is passed as ``PGPASSWORD`` unless the child's
environment sets one (:meth:`~scopeledger.Ledger.child_environment`).
``Spawned.wait()`` waits for the child and releases the grant with its exit
status (``exit_code``, or ``exit_signal`` when a signal killed it) and an
optional note: the exit status is learnt without reaping the child
(``waitid(P_PIDFD, ..., WEXITED | WNOWAIT)``), the release recorded, and only
then is the child reaped (by ``Popen.wait``, so that ``Popen`` knows it), as
``ledger run`` does. Meanwhile the child is a zombie whose parent lives, and a
waiter (``wait=``) woken by its exit stands back for that release for up to
``scopeledger._wait.ZOMBIE_GRACE_SECONDS``. Another process may still reclaim
the grant between the child's exit and the release (``reclaim``, a request
without ``wait``, a waiter past its grace: it sees a zombie); the ``reclaimed``
event then records the exit status instead, read from the zombie, when the
reclaimer can prove it the child and the kernel shows it the status
(``scopeledger._process.zombie_status``). Where pidfds or ``WNOWAIT`` are
missing, the child is reaped first, as before. Bound to the child, the grant outlives the supervisor: if the
supervisor dies, the child keeps its scope until it exits (then it is
reclaimed, or taken back by :func:`adopt`). On PostgreSQL that holds for
checkers on the child's own host; to other hosts the grant is vouched for
by the supervisor's ledger's client session, which the binding records
(``scopeledger._sessions``): once the supervisor's ledger is closed or its
process dies, other hosts reclaim it, unless a restarted supervisor adopted
it first (:func:`adopt` binds it again, with its own session).

A grant taken away while the child runs (an operator's forced release, a
reclaim of the lapsed lease of a ``ttl=`` spawn whose supervisor was stopped
or cut off, its line cut by a repair) is learnt at once, by a
:class:`~scopeledger.GrantWatch` following the grant in the log and by the
lease's renewer, and handled as ``ledger run --on-lost`` does
(``on_lost``: ``"term"``, the default, sends the child SIGTERM; ``"warn"``
lets it run on; a callable is called): said in a warning, and
:attr:`Spawned.lost` tells the supervisor how (``wait()`` still returns
the child's exit status). A release that could not be recorded (a
PostgreSQL outage, a busy lock) raises and may be tried again
(:meth:`Spawned.release`), with the exit status learnt.

``adopt(ledger, name, token)`` is for a supervisor that restarted and kept
the names and tokens of its grants: a grant whose process is alive (a child
still running), or not provably gone (liveness unknown: on another host, in
another PID namespace, ...), stays bound to it, and the returned
:class:`Adopted` waits until that process is proven gone and then releases
it; a grant whose process is proven gone is bound to this process when it is
the old supervisor's own (bound to its process by that process itself: its
own request, or an earlier adopt) or has live children, so that it is not
reclaimed and its children stay its children; a grant bound to its process
by another (a child of the old supervisor: spawn's ``attach``, a request
with ``pid=``) that died while nobody watched and has no live children is
released by :func:`adopt` (exit status unknown, said in the note), and the
:class:`Adopted` says so (``found_gone``: its ``wait()`` returns ``None`` at
once).

**What an adopter can know of an adopted process.** Only a process's parent
learns its exit status (``waitid``); a supervisor that restarted is not the
parent of its old children (they were re-parented to init, or to a
subreaper), so:

- *that* it exited: known on this host and in this PID namespace, at once
  (a pidfd becomes readable; the ledger's probe confirms: gone, or a
  zombie), and checked every :data:`ADOPT_POLL_SECONDS` anyway; elsewhere
  (another host, another PID namespace) only what the probe can prove,
  which may be never (liveness ``unknown``: the grant is kept);
- *how* it exited: unknown (:meth:`Adopted.wait` returns ``None``), and
  the release says so in its note
  (``exit status unknown to the adopting process``), unless the adopter is
  its parent after all: a supervisor that restarted by ``exec`` in the same
  process (its children stay its children), or a subreaper the children
  were re-parented to. Then :meth:`Adopted.wait` reaps the child through its
  pidfd (``waitid(P_PIDFD)``, so never another process that took its pid)
  and records and returns its exit status (``exit_code``, or
  ``exit_signal``) as :meth:`Spawned.wait` does. So do not adopt a child that a
  ``subprocess.Popen`` of this process still waits for (it would see
  ``returncode`` 0): that one is a :class:`Spawned`.
"""

from __future__ import annotations

import os
import shutil
import signal
import logging
import subprocess
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from ._arguments import check_callable, check_note, check_timeout, check_token
from ._errors import LedgerError, UnknownHolder, shown
from ._fold import Allocation
from ._identity import Liveness, Verdict
from ._process import ready

#: The environment variables a spawned child sees (as ``ledger run`` sets them).
ENV_DIR = "SCOPELEDGER_DIR"
ENV_HOLDER = "SCOPELEDGER_HOLDER"
ENV_TOKEN = "SCOPELEDGER_TOKEN"

log = logging.getLogger("scopeledger")

#: What :func:`spawn`'s ``on_lost`` may name (or a callable, or ``None``): as
#: ``ledger run --on-lost``.
ON_LOST = ("term", "warn")

#: Reclaim reasons that are not the child's death: a reclaim for one of them
#: took the scope while the child may still have run (as ``ledger run`` says).
NOT_A_DEATH = frozenset({"lease_expired", "session_closed", "session_lock_gone"})

#: The exit status of a child whose supervisor gave up before it ran the
#: command (the gate closed without the word).
GATE_CLOSED_EXIT = 125

#: The gate: wait for one line on the pipe, close it, become the command
#: (bash: dash takes only one-digit descriptors; without bash, sh reads the
#: pipe through /dev/fd and the command inherits the closed pipe's end).
_GATE_BASH = 'read -r _ <&{fd} || exit 125; exec {fd}<&-; exec "$@"'
_GATE_SH = 'read -r _ < /dev/fd/{fd} || exit 125; exec "$@"'


def _gate(fd: int) -> list[str]:
    """The gate's argv (bash where there is one, else ``/bin/sh``), the
    pipe's read end being descriptor ``fd``; the command's argv follows."""
    bash = shutil.which("bash", path="/usr/bin:/bin")
    if bash is not None:
        return [bash, "-c", _GATE_BASH.format(fd=fd), "scopeledger-spawn"]
    return ["/bin/sh", "-c", _GATE_SH.format(fd=fd), "scopeledger-spawn"]


#: How often :meth:`Adopted.wait` asks the probe when no pidfd can watch
#: the process (another PID namespace), in seconds.
ADOPT_POLL_SECONDS = 1.0


def from_environment(environ: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """``(holder, token)`` of the enclosing ``ledger run``/``spawn`` from
    ``$SCOPELEDGER_HOLDER`` and ``$SCOPELEDGER_TOKEN``, or ``None`` when
    they are not set.

    Raises:
        ValueError: one set without the other, or a token that is not an
            integer of at least 1 (a grant's seq).
    """
    env = os.environ if environ is None else environ
    holder, token = env.get(ENV_HOLDER), env.get(ENV_TOKEN)
    if holder is None and token is None:
        return None
    if not holder or not token:
        raise ValueError(f"${ENV_HOLDER} and ${ENV_TOKEN} must be set together (got {shown(holder)}, "
                         f"{shown(token)})")
    try:
        number = int(token)
    except ValueError:
        raise ValueError(f"${ENV_TOKEN} is {shown(token)}, not an integer") from None
    if number < 1:
        raise ValueError(f"${ENV_TOKEN} is {shown(token)}, not a grant's seq (an integer >= 1)")
    return holder, number


class Spawned:
    """A child started by :func:`spawn`.

    Attributes:
        process: the ``subprocess.Popen`` of the child.
        allocation: its :class:`Allocation` (bound to the child's pid).
        returncode: ``int | None``: ``None`` until :meth:`wait` saw it
            exit; then its exit code, or ``-N`` when signal N killed it.
        on_lost: what a loss of the grant does, as given to :func:`spawn`
            (``"term"``, ``"warn"``, a callable, or ``None``).
        subject: what a callable ``on_lost`` is called with (this object, or
            the :class:`~scopeledger.AsyncSpawned` around it).
        lost: ``None``, or how the grant was taken away before this object
            released it, ``str``, in the log's words (``"force-released at
            seq 7 by pid 123, reason: ..."``, ``"reclaimed at seq 9 by pid
            456: lease_expired"``, a grant no longer in the log): set once,
            by the watch of the grant or the lease's renewer while the child
            runs (``on_lost``, see :func:`spawn`), or by the release
            (:meth:`wait`, :meth:`release`), which found it gone. A reclaim
            of the exited child (its process gone, a zombie) is not a loss.
        lost_event: the :class:`~scopeledger.Event` that ended the grant
            when :attr:`lost` is set and the log holds it, else ``None``.
        stopped_for_loss: ``True`` when the child was sent ``SIGTERM``
            because its grant was taken away (``on_lost="term"``).
        watch: the :class:`~scopeledger.GrantWatch` following the grant
            while the child runs (``None`` with ``on_lost=None``, and once
            stopped by the release).
        renewer: the :class:`~scopeledger.Renewer` keeping a ``ttl=``
            grant's lease while the child runs (stopped by :meth:`release`),
            else ``None``.
    """

    def __init__(self, ledger: Any, process: subprocess.Popen[Any], allocation: Allocation,
                 on_lost: str | Callable[[Any], object] | None = "term") -> None:
        self.ledger = ledger
        self.process = process
        self.allocation = allocation
        self.returncode: int | None = None
        self._released = False
        self.renewer: Any = None
        self.watch: Any = None
        self.lost: str | None = None
        self.lost_event: Any = None
        self.stopped_for_loss = False
        self.on_lost = on_lost
        #: What ``on_lost`` (a callable) is called with: this object, or
        #: the :class:`~scopeledger.AsyncSpawned` around it.
        self.subject: Any = self
        self._guard = threading.Lock()  # lost / _ending / the signal, decided under it
        self._ending = False  # the release began: an end of the grant from now on is ours
        self._callers: set[int] = set()  # threads inside a watch's or renewer's callback
        self._pidfd = open_pidfd(process.pid)  # (our unreaped child: surely this process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def keep_lease(self, ttl: float) -> None:
        """Renew the grant's lease every ``ttl``/3 (``ttl``: seconds,
        ``float``) until it is released (:meth:`Ledger.keep_renewed`, in a
        thread of its own); a renewal that finds the grant gone (its lease
        ran out and it was reclaimed: the renewing process was stopped, or
        cut off) ends the renewing and is a loss (:attr:`lost`, acted on as
        ``on_lost`` says). Called by :func:`spawn` for ``ttl=``.

        Raises:
            UnknownHolder: the grant is no longer live.
            InvalidLease: it has no lease, or ``ttl`` is not a number of
                seconds from 0.1 to 10**9 (``scopeledger.TTL_RANGE``).
        """
        a = self.allocation
        self.renewer = self.ledger.keep_renewed(a.name, a.token, ttl, on_lost=self._lease_lost)

    def watch_for_loss(self) -> None:
        """Follow the grant in the log while the child runs
        (:meth:`Ledger.watch_grant`, a thread of its own), so that a forced
        release or a reclaim of it is learnt at once and acted on as
        ``on_lost`` says; stopped by the release. Called by :func:`spawn`
        unless ``on_lost`` is ``None``; a second call does nothing."""
        if self.watch is None and not self._ending:
            a = self.allocation
            self.watch = self.ledger.watch_grant(a.name, a.token, self._grant_ended)

    # -- how a loss is learnt (in the watch's or the renewer's thread) --------

    def _grant_ended(self, event: Any) -> None:
        """The watch's ``on_lost``: the log says the grant ended."""
        if event is not None and event.type == "reclaimed" and event.data.get("reason") not in NOT_A_DEATH:
            return  # (the child's death proven: it has exited, nothing was taken from it)
        self._lose(ending_words(event, self.allocation.token), event)

    def _lease_lost(self, exc: BaseException) -> None:
        """The renewer's ``on_lost``: a renewal found the grant gone."""
        ending = ending_in_log(self.ledger, self.allocation)
        if ending is GONE:
            self._lose(ending_words(None, self.allocation.token), None)
        elif ending is not None:
            self._grant_ended(ending)
        else:
            self._lose(f"its lease is lost: {exc}", None)

    def _lose(self, why: str, event: Any) -> None:
        """The grant was taken away (``why``): said once (a warning on
        logger ``scopeledger``), then acted on as ``on_lost`` says, unless
        the release has begun (an end from then on is ours). Raises
        nothing."""
        me = threading.get_ident()
        with self._guard:
            if self.lost is not None or self._ending:
                return
            self.lost, self.lost_event = why, event
            exited = self._exited()
            term = self.on_lost == "term" and not exited
            if term:
                self.stopped_for_loss = True
                self._signal(signal.SIGTERM)
            self._callers.add(me)
        try:
            a = self.allocation
            if exited:
                what = "its child had exited"
            elif term:
                what = "sending the child SIGTERM"
            elif callable(self.on_lost):
                what = "calling on_lost"
            else:
                what = f"the child runs on without it (on_lost={self.on_lost!r})"
            log.warning("holder %r (token %d, pid %d) lost its scope: %s; %s", a.name, a.token, self.pid, why, what)
            if callable(self.on_lost):
                try:
                    self.on_lost(self.subject)
                except Exception:  # noqa: BLE001 - a callback's error is logged, never lost
                    log.exception("on_lost of spawned holder %r raised", a.name)
        finally:
            with self._guard:
                self._callers.discard(me)

    def _exited(self) -> bool:
        """Whether the child has exited (a zombie, or reaped)."""
        if self.process.returncode is not None:
            return True
        if self._pidfd >= 0:
            return bool(ready([self._pidfd], 0))
        return False

    def _signal(self, signum: int) -> None:
        """Send the child ``signum`` through its pidfd (never a process that
        took its pid), else by pid while Popen has not reaped it. Raises
        nothing."""
        try:
            if self._pidfd >= 0:
                signal.pidfd_send_signal(self._pidfd, signum)
            elif self.process.returncode is None:
                os.kill(self.process.pid, signum)
        except OSError:
            pass

    # -- waiting and releasing ------------------------------------------------

    def wait(self, timeout: float | None = None, *, note: str | None = None) -> int:
        """Wait for the child to exit (at most ``timeout`` seconds) and
        release its grant with its exit status (and ``note``); return its
        ``returncode`` (``-N``: signal N), whatever happened to the grant:
        test :attr:`lost` to learn whether the scope was taken away while it
        ran (then nothing is released; with ``on_lost="term"`` the child
        was sent SIGTERM, :attr:`stopped_for_loss`, and its returncode is
        usually ``-15``). Releasing twice is a no-op (a reclaim of the
        exited child before this call reaped it records its exit status
        itself, when the reclaimer can read it: the module docstring).

        The child is reaped even when the release fails (a store that
        cannot be reached, ...): the error is raised, :attr:`returncode`
        is kept, and :meth:`release` (or :meth:`wait` again, which returns
        at once) tries the release again with it. Meanwhile the grant is
        bound to a process that is gone, which the next request in its way
        reclaims.

        Args:
            timeout: seconds (a real number, 0 to 1e9), ``None`` for ever.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout``
                (nothing is released).
            ValueError: ``timeout`` is not ``None`` or 0 to 1e9 seconds.
            TypeError, ValueError: ``note`` as :meth:`Ledger.release`,
                checked before waiting (nothing is released).
            LedgerError: the release could not be recorded, as
                :meth:`release` (the child is reaped; try again).
        """
        timeout = check_timeout("timeout", timeout)
        note = check_note(note)  # (before waiting: a bad note must not leave the grant to a process gone)
        code = exited_unreaped(self.process, timeout)
        if code is None:  # (no pidfd or WNOWAIT here, or reaped already: reaped first, as before)
            code = self.process.wait(timeout)
        self.returncode = code
        try:
            self.release(note=note)
        finally:
            rc = self.process.wait()  # (reaped now, by Popen: its returncode set, as it knows it)
            self._close_pidfd()
        return rc

    def _close_pidfd(self) -> None:
        """Close the child's pidfd (kept to signal it while its grant is
        watched): once it is reaped, or once the grant is released."""
        with self._guard:
            fd, self._pidfd = self._pidfd, -1
        if fd >= 0:
            os.close(fd)

    def release(self, *, note: str | None = None) -> None:
        """Release the grant now (with the exit status once known), after
        stopping its watch and lease renewal: from then on an end of the
        grant is not a loss. Done once: a no-op once recorded, or once the
        grant is found gone (released or reclaimed by someone else: then
        :attr:`lost` says how, unless it was the exited child's reclaim).
        A release that could not be recorded raises, and may be called
        again (the exit status kept).

        Raises:
            TypeError, ValueError: ``note`` as :meth:`Ledger.release`.
            StoreUnavailable: (PostgreSQL) the server could not be reached;
                nothing was recorded.
            InDoubt: (PostgreSQL) the connection broke while the release
                was sent, and whether it was recorded is unknown (a call
                again finds out).
            LockTimeout: the ledger's lock was not free in time (the
                ledger's ``timeout``).
            LedgerIOError: the OS refused to write the log.
            LedgerError: another reason the release was not recorded.
        """
        if self._released:
            return
        note = check_note(note)
        with self._guard:
            self._ending = True
            inside = threading.get_ident() in self._callers
        watch, self.watch = self.watch, None
        if watch is not None and not inside:
            watch.stop()  # (from the watch's own callback it is not waited for: it has ended its work)
        if self.renewer is not None:
            self.renewer.stop()  # (a renewal racing the release would only fail, harmlessly)
        a = self.allocation
        try:
            self.ledger.release(a.name, token=a.token, returncode=self.returncode, note=note)
        except UnknownHolder:
            self._released = True
            self._close_pidfd()  # (nothing is signalled once the release began)
            if self.lost is None:
                self._found_gone()
            return
        self._released = True
        self._close_pidfd()

    def _found_gone(self) -> None:
        """The release found the grant gone: say how, when it was taken
        away rather than the exited child reclaimed (or our own release,
        recorded by an earlier try that raised ``InDoubt``)."""
        a = self.allocation
        ending = ending_in_log(self.ledger, a)
        if ending is None:
            return
        if ending is GONE:
            why, event = ending_words(None, a.token), None
        else:
            if ending.type == "reclaimed" and ending.data.get("reason") not in NOT_A_DEATH:
                return
            actor = ending.actor if isinstance(ending.actor, dict) else {}
            if ending.type == "released" and actor.get("pid") == os.getpid() and "forced" not in ending.data:
                return  # (our own release: an earlier try was recorded after all)
            why, event = ending_words(ending, a.token), ending
        self.lost, self.lost_event = why, event
        log.warning("holder %r (token %d) was no longer held when its child ended: %s", a.name, a.token, why)

    def __repr__(self) -> str:
        lost = " lost" if self.lost is not None else ""
        return f"<Spawned {self.allocation.name!r} pid={self.pid} token={self.allocation.token}{lost}>"


#: :func:`ending_in_log`'s answer when the log no longer holds the grant's line.
GONE: Any = object()


def ending_in_log(ledger: Any, alloc: Allocation) -> Any:
    """:meth:`~scopeledger.Ledger.grant_ending` of grant ``alloc`` (name,
    token), :data:`GONE` when the log no longer holds the grant's line at
    its token, ``None`` when the log holds no ending (yet) or cannot be
    read."""
    try:
        ending: Any = ledger.grant_ending(alloc.name, alloc.token)
    except UnknownHolder:
        return GONE
    except LedgerError:
        return None
    return ending


def ending_words(event: Any, token: int) -> str:
    """How grant ``token`` ended, in the log's words: the ``released`` or
    ``reclaimed`` event (by whom, and the reason of a forced release or of
    the reclaim), or ``None``: its line is no longer in the log."""
    if event is None:
        return f"its grant (token {token}) is no longer in the log (cut by a repair?)"
    by = event.actor.get("pid") if isinstance(event.actor, dict) else None
    if event.type == "released":
        forced = event.data.get("forced")
        if forced is not None:
            return f"force-released at seq {event.seq} by pid {by}, reason: {forced}"
        return f"released by another process (pid {by}) at seq {event.seq}"
    return f"reclaimed at seq {event.seq} by pid {by}: {event.data.get('reason')}"


def check_on_lost(on_lost: Any) -> None:
    """``spawn``'s ``on_lost``: ``"term"``, ``"warn"``, ``None`` or a
    plain callable.

    Raises:
        ValueError: a string other than ``"term"`` or ``"warn"``.
        TypeError: anything else, an ``async def`` function (or an object
            whose ``__call__`` is one), or a callable that cannot take one
            positional argument (the :class:`Spawned`).
    """
    if on_lost is None or (isinstance(on_lost, str) and on_lost in ON_LOST):
        return
    if isinstance(on_lost, str):
        raise ValueError(f"on_lost must be 'term', 'warn', None or a callable, not {shown(on_lost)}")
    if not callable(on_lost):
        raise TypeError(f"on_lost must be 'term', 'warn', None or a plain callable, not {shown(on_lost)}")
    check_callable("on_lost", on_lost, ("spawned",))


def exited_unreaped(process: subprocess.Popen[Any], timeout: float | None) -> int | None:
    """Wait at most ``timeout`` seconds (``None``: for ever) for
    ``process`` to exit and return its exit status (``-N``: signal N)
    *without reaping it* (``waitid(P_PIDFD, ..., WEXITED | WNOWAIT)``): it
    stays a zombie, its pid its own, until ``process.wait()`` reaps it,
    which its parent does after recording the release (a waiter woken by
    the exit meanwhile stands back for that release: ``scopeledger._wait``).
    ``None`` when that cannot be done here (no pidfds, no ``P_PIDFD`` or
    ``WNOWAIT``) or ``process`` was reaped already: the caller waits as
    before.

    Raises:
        subprocess.TimeoutExpired: still running after ``timeout``.
    """
    p_pidfd, nowait = getattr(os, "P_PIDFD", None), getattr(os, "WNOWAIT", None)
    if p_pidfd is None or nowait is None or process.returncode is not None:
        return None
    fd = open_pidfd(process.pid)  # (its own: a Spawned's may be closed by a release in another thread meanwhile)
    if fd < 0:
        return None
    try:
        if timeout is not None and not ready([fd], timeout):
            raise subprocess.TimeoutExpired(process.args, timeout)
        try:
            info = os.waitid(p_pidfd, fd, os.WEXITED | nowait)
        except ChildProcessError:  # reaped meanwhile (by another thread's wait)
            return None
    finally:
        os.close(fd)
    if info is None:  # pragma: no cover - (no WNOHANG: waitid blocks until it exited)
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def spawn(ledger: Any, name: str, argv: Sequence[str], rules: Any, *, parent: str | None = None,
          parent_token: int | None = None, wait: float = 0, env: Mapping[str, str] | None = None,
          note: str | None = None, advisory: bool = False, ttl: float | None = None, lease_only: bool = False,
          on_lost: str | Callable[[Spawned], object] | None = "term", **popen: Any) -> Spawned:
    """Reserve ``rules`` for holder ``name``, start ``argv`` bound to it,
    return the :class:`Spawned` (see the module docstring).

    Args:
        name, rules, parent, parent_token, wait, note, advisory, ttl, lease_only:
            as :meth:`Ledger.register` (``parent``: as :meth:`Ledger.delegate`;
            ``advisory=True``: granted at once with its conflicts recorded,
            never waiting, as ``ledger run --advisory``; ``ttl``: a lease of
            ``ttl`` seconds, renewed every ttl/3 by :attr:`Spawned.renewer`
            while the child runs, as ``ledger run --ttl``).
        argv: the command and its arguments (``argv[0]`` looked up in
            ``PATH``); not found: the child exits 127, not runnable: 126.
        on_lost: what is done when the grant is taken away while the child
            runs (an operator's forced release, ``ledger release --force``;
            a reclaim of its lapsed lease, ``ttl=``, when this process was
            stopped or cut off; the grant's line cut from the log), as
            ``ledger run --on-lost``: ``"term"`` (the default) sends the
            child SIGTERM, ``"warn"`` lets it run on; a callable is called
            with the :class:`Spawned` (its :attr:`~Spawned.lost` set), once,
            in the watch's or the renewer's thread, and does what it likes
            (it may call :meth:`Spawned.release`, not :meth:`Spawned.wait`).
            Each is said at once in a warning on logger ``scopeledger``, and
            :attr:`Spawned.lost` says how the grant was lost. The grant is
            followed in the log by a :class:`~scopeledger.GrantWatch` (a
            thread, and an inotify descriptor or a PostgreSQL connection,
            per child while it runs; stopped by the release). ``None``: not
            watched (the renewer still ends on a loss, without acting);
            the release still finds the loss and sets :attr:`Spawned.lost`.
        env: the child's environment (default this process's), to which the
            three ``SCOPELEDGER_*`` variables are added (and ``PGPASSWORD``,
            see :meth:`~scopeledger.Ledger.child_environment`).
        popen: more ``subprocess.Popen`` arguments (``cwd``, ``stdout``,
            ...; not ``args``, ``env``, ``pass_fds``, ``preexec_fn``,
            ``executable``).

    Raises:
        TypeError: ``argv`` is not a non-empty sequence of ``str``;
            ``env`` is not ``None`` or a mapping of ``str`` to ``str``;
            ``popen`` has a key spawn sets itself; ``parent_token``
            without ``parent`` (nothing is asked or started).
        ValueError: ``env`` has a name that is empty or holds ``=`` or
            NUL, or a value that holds NUL; ``on_lost`` is a string other
            than ``"term"`` or ``"warn"`` (nothing is asked or started).
        TypeError: ``on_lost`` is not one of those, ``None`` or a plain
            callable (an ``async def`` is not; nothing is asked or started).
        NotADirectoryError: ``cwd`` is not a directory (nothing is asked
            or started); ``TypeError`` when it is not a path.
        Refused, WaitTimeout, ...: as :meth:`Ledger.register` /
            :meth:`Ledger.delegate` (nothing is started).
        OSError: the gate (bash, else ``/bin/sh``) cannot start (the grant
            is released); ``ChildProcessError``, one of them: the child died
            at its gate (killed by someone) before the command ran (the
            grant is released; the message says how it ended).
        UnknownHolder: the grant was taken away before it could be bound
            to the child (the command never runs; the grant is released).
    """
    check_spawn_args(argv, popen, parent, parent_token, env)
    check_on_lost(on_lost)
    if parent is None:
        alloc = ledger.register(name, rules, wait=wait, note=note, advisory=advisory, ttl=ttl,
                                lease_only=lease_only)
    else:
        alloc = ledger.delegate(parent, name, rules, parent_token=parent_token, wait=wait, note=note,
                                advisory=advisory, ttl=ttl, lease_only=lease_only)
    spawned = start(ledger, alloc, argv, env, popen)
    spawned.on_lost = on_lost
    if on_lost is not None:
        spawned.watch_for_loss()  # (it reads the log from the grant's line on: nothing before is missed)
    if ttl is not None:
        spawned.keep_lease(ttl)
    return spawned


def check_spawn_args(argv: Any, popen: Mapping[str, Any], parent: Any, parent_token: Any,
                     env: Any = None) -> None:
    """What :func:`spawn` refuses before it asks the ledger.

    Raises:
        TypeError: see :func:`spawn`.
        NotADirectoryError: ``cwd`` (in ``popen``) is not a directory.
    """
    if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError(f"argv must be a non-empty sequence of str, not {shown(argv)}")
    if env is not None:
        if not (isinstance(env, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise TypeError(f"env must be None or a mapping of str to str, not {shown(env)}")
        for k, v in env.items():
            if not k or "=" in k or "\0" in k or "\0" in v:
                raise ValueError(f"env has a variable the OS cannot take (a name empty or with '=' or NUL, "
                                 f"or a value with NUL): {shown(k)}")
    cwd = popen.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, (str, bytes, os.PathLike)):
            raise TypeError(f"spawn's cwd must be a path, not {shown(cwd)}")
        if not os.path.isdir(cwd):
            raise NotADirectoryError(f"spawn's cwd {shown(cwd)} is not a directory (nothing was asked or started)")
    for key in ("args", "env", "pass_fds", "preexec_fn", "executable"):
        if key in popen:
            raise TypeError(f"spawn() sets {key} itself")
    if parent is None and parent_token is not None:
        raise TypeError("parent_token is given without parent")


def start(ledger: Any, alloc: Allocation, argv: Sequence[str], env: Mapping[str, str] | None,
          popen: Mapping[str, Any]) -> Spawned:
    """Start ``argv`` at the gate, bind ``alloc`` to it, open the gate.
    On any failure the child (still at its gate) exits and the grant is
    released, and the exception goes on."""
    child_env = dict(os.environ if env is None else env)
    # The ledger's directory, or its URL without the password (then given
    # as PGPASSWORD unless the child's environment has one): Ledger.child_environment.
    child_env.update(ledger.child_environment(child_env))
    child_env.update({ENV_HOLDER: alloc.name, ENV_TOKEN: str(alloc.token)})
    r, w = os.pipe()
    proc = None
    try:
        try:
            proc = subprocess.Popen([*_gate(r), *argv],
                                    env=child_env, pass_fds=(r,), **popen)
        finally:
            os.close(r)
        # The command runs only once its grant is bound to it (this grant:
        # had the name been released and granted again, attach refuses).
        ledger.attach(alloc.name, proc.pid, token=alloc.token)
        try:
            os.write(w, b"g\n")
        except BrokenPipeError:  # nobody reads the gate: its only reader, the child, died there
            raise ChildProcessError(
                f"the process started for {argv[0]!r} (pid {proc.pid}) {_how_it_ended(proc)} at its gate, "
                f"before the command ran; holder {alloc.name!r} is released") from None
    except BaseException:
        os.close(w)
        w = -1
        if proc is not None:
            proc.wait()  # it saw the gate close: it exits 125 without running the command
        try:
            ledger.release(alloc.name, token=alloc.token, note="spawn failed before the command ran")
        except UnknownHolder:
            pass
        raise
    finally:
        if w >= 0:
            os.close(w)
    return Spawned(ledger, proc, bound(ledger, alloc))


def bound(ledger: Any, alloc: Allocation) -> Allocation:
    """``alloc`` as bound to its child (the attach recorded), or ``alloc``
    itself once it is no longer live: a child that exits at once may be
    released or reclaimed (a waiter finding its process gone) by then,
    also between the check and the read here, and it ran all the same."""
    if ledger.check(alloc.name, alloc.token):
        try:
            now: Allocation = ledger.holder(alloc.name)
        except UnknownHolder:
            return alloc
        if now.token == alloc.token:
            return now
    return alloc


def _how_it_ended(proc: subprocess.Popen[Any]) -> str:
    """How a child that died at its gate ended ("was killed by SIGKILL",
    "exited with status 1"), reaped here."""
    code = proc.wait()
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Adopted:
    """A grant taken back by :func:`adopt` (the module docstring says what
    can be known of its process).

    Attributes:
        allocation: the :class:`Allocation` as it was adopted.
        rebound: ``True`` when it was bound to this process (its process
            was proven gone, or was this one); ``False`` when its own
            process keeps it (a child still running, or a process whose
            liveness is unknown here).
        returncode: ``None``, or the exit status (``-N``: signal N) once
            :meth:`wait` saw the process exit as its parent (never for a
            process this one is not the parent of).
        found_gone: ``True`` when :func:`adopt` found the grant's process
            proven gone and released the grant (it was bound to that process
            by another, a child of the old supervisor, and has no live
            children): :meth:`wait` returns ``None`` at once (ended, exit
            status unknown), :meth:`release` does nothing.
    """

    def __init__(self, ledger: Any, allocation: Allocation, rebound: bool, found_gone: bool = False) -> None:
        self.ledger = ledger
        self.allocation = allocation
        self.rebound = rebound
        self.found_gone = found_gone
        self.returncode: int | None = None
        self._released = found_gone

    @property
    def pid(self) -> int:
        """The pid the grant is bound to (this process's when ``rebound``)."""
        return self.allocation.pid

    def wait(self, timeout: float | None = None, *, note: str | None = None) -> int | None:
        """For a grant still bound to its process: wait until the ledger's
        probe proves that process gone (woken by a pidfd when it exits; the
        probe asked every :data:`ADOPT_POLL_SECONDS` anyway), then release
        the grant, with the exit status when this process is its parent
        (``returncode``; the module docstring), and ``note`` (default:
        ``exited while adopted``, with ``; exit status unknown to the
        adopting process`` when it is unknown); return the exit status as
        far as it is known, as :meth:`Spawned.wait` returns it. Blocks: from
        a coroutine use :meth:`AsyncLedger.adopt`'s
        :class:`~scopeledger.AsyncAdopted`.

        Args:
            timeout: seconds (a real number, 0 to 1e9), ``None`` for ever.

        Returns:
            Once the process is gone and the grant released (by this call,
            or meanwhile by another, or by :func:`adopt` itself:
            :attr:`found_gone`; a later call returns the same at
            once): its exit status, ``int`` (0-255, or ``-N`` when signal N
            killed it), when this process is its parent; ``None`` when it
            is not (the usual case for an adopter: only a process's parent
            learns how it ended), meaning "ended, exit status unknown".
            Test ``is None``, not truth: a status of 0 is false too.

        Raises:
            subprocess.TimeoutExpired: the process was not proven gone
                within ``timeout`` seconds (as :meth:`Spawned.wait`);
                nothing is released.
            LedgerError: the release could not be recorded (as
                :meth:`release`; nothing is marked released: call again).
            RuntimeError: the grant is rebound (``rebound``: bound to this
                process: the old supervisor's own grant, or one with live
                children): there is no other process to wait for, as
                ``threading.Thread.join()`` refuses to join the current
                thread; :meth:`release` gives it back.
            ValueError: ``timeout`` is not ``None`` or 0 to 1e9 seconds.
            TypeError, ValueError: ``note`` as :meth:`Ledger.release`.
        """
        timeout = check_timeout("timeout", timeout)
        note = check_note(note)  # (before waiting: a bad note must not leave the grant to a process gone)
        if self.found_gone:
            return None
        if self.rebound:
            raise self.rebound_error()
        a = self.allocation
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = open_pidfd(a.pid)
        child = -1  # the pidfd of our own child once it exited: reaped after the release
        vouched = False  # the pidfd was opened before the probe said it is the holder's process
        try:
            while True:
                verdict = self.ledger.liveness([a])[a.name]
                vouched = vouched or (fd >= 0 and vouches_for(verdict, a))
                if verdict.dead:
                    if vouched and fd >= 0 and self._exited(fd):
                        child, fd = fd, -1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise self.timed_out(timeout)
                step = ADOPT_POLL_SECONDS if remaining is None else min(remaining, ADOPT_POLL_SECONDS)
                if fd >= 0:
                    if ready([fd], step):
                        # Exited. A pidfd stays readable: from now on the probe
                        # alone (a pid of another host or namespace names another
                        # process here, which may exit long before the holder's).
                        if vouched and self._exited(fd):
                            child, fd = fd, -1  # (our child: a zombie until it is reaped, after the release)
                        else:
                            os.close(fd)
                            fd = -1
                else:
                    time.sleep(step)
            self.release(note=self.exit_note(note))
        finally:
            if fd >= 0:
                os.close(fd)
            if child >= 0:
                reap(child)
                os.close(child)
        return self.returncode

    def rebound_error(self) -> RuntimeError:
        """What :meth:`wait` raises for a rebound grant."""
        a = self.allocation
        return RuntimeError(f"holder {a.name!r} (token {a.token}) is bound to this process (rebound by adopt): "
                            "there is no other process to wait for; release() gives it back")

    def timed_out(self, timeout: float | None) -> subprocess.TimeoutExpired:
        """What :meth:`wait` raises when ``timeout`` ran out."""
        a = self.allocation
        return subprocess.TimeoutExpired(f"pid {a.pid}, adopted holder {a.name}", timeout or 0)

    def _exited(self, fd: int) -> bool:
        """Its exit status, read when this process is its parent and it has
        exited; whether it is left for :func:`reap` (read without reaping
        it: the release is recorded first)."""
        if self.returncode is None:
            self.returncode = exit_status(fd, reap=False)
            return self.returncode is not None and getattr(os, "WNOWAIT", None) is not None
        return False

    def exit_note(self, note: str | None) -> str:
        """``note``, or the default note of a release after the process
        exited (see :meth:`wait`)."""
        if note is not None:
            return note
        if self.returncode is None:
            return "exited while adopted; exit status unknown to the adopting process"
        return "exited while adopted"

    def release(self, *, note: str | None = None) -> None:
        """Release the grant now (that grant, by its token), with the exit
        status once known (``returncode``) and ``note``: done once (a
        no-op afterwards); a grant released or reclaimed meanwhile by
        someone else is left so. The process itself is not touched: released
        before it exits, its scope is no longer its own.

        Raises:
            TypeError, ValueError: ``note`` as :meth:`Ledger.release`.
            LedgerError: the release could not be recorded (it may be
                tried again).
        """
        if self._released:
            return
        a = self.allocation
        try:
            self.ledger.release(a.name, token=a.token, returncode=self.returncode, note=note)
        except UnknownHolder:
            pass
        self._released = True

    def __repr__(self) -> str:
        state = " rebound" if self.rebound else (" found gone" if self.found_gone else "")
        return f"<Adopted {self.allocation.name!r} pid={self.pid} token={self.allocation.token}{state}>"


def open_pidfd(pid: int) -> int:
    """A pidfd on ``pid`` (``-1`` when none can be opened: no such
    process, an old kernel)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return -1


def vouches_for(verdict: Verdict, alloc: Allocation) -> bool:
    """Whether a pidfd opened on ``alloc.pid`` *before* the probe answered
    ``verdict`` surely names the holder's process: the probe found that
    process there (alive, or a zombie with its recorded start time, which
    its pid cannot be reused under), and it existed before the pidfd was
    opened (it was granted before), so it held the pid then too."""
    return verdict.liveness is Liveness.ALIVE or (verdict.liveness is Liveness.ZOMBIE
                                                  and alloc.process.ticks is not None)


def exit_status(fd: int, *, reap: bool = True) -> int | None:
    """The exit status of pidfd ``fd``'s process (``-N``: killed by signal
    N), reaping it (with ``reap=False`` not, where ``WNOWAIT`` is known:
    :func:`reap` does it later), when this process is its parent and it has
    exited; ``None`` otherwise (not our child: only its parent learns it;
    not exited yet). Never blocks."""
    p_pidfd = getattr(os, "P_PIDFD", None)
    if p_pidfd is None:
        return None
    flags = os.WEXITED | os.WNOHANG
    if not reap:
        flags |= getattr(os, "WNOWAIT", 0)
    try:
        info = os.waitid(p_pidfd, fd, flags)
    except OSError:  # ChildProcessError: not our child
        return None
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def reap(fd: int) -> None:
    """Reap pidfd ``fd``'s process, our child that exited (its status read
    before with :func:`exit_status` ``reap=False``). Never blocks; raises
    nothing."""
    try:
        os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
    except (OSError, AttributeError):
        pass


#: The note of a release by :func:`adopt` of a grant whose process was gone.
GONE_NOTE = "its process was gone when it was adopted; exit status unknown to the adopting process"


def bound_itself(ledger: Any, alloc: Allocation) -> bool:
    """Whether grant ``alloc`` was bound to its process by that process
    itself (its own request, or an :func:`adopt` that bound it to the
    adopter), as a supervisor's own grant is, rather than by another (a
    spawn's ``attach``, a request with ``pid=``), as a child's is: the
    last line that bound it, by its actor. ``True`` when the log cannot
    say (kept, as before)."""
    mine = None
    try:
        for e in ledger.events(since=alloc.token):
            if e.seq == alloc.token and e.type in ("registered", "delegated"):
                mine = (e.actor, e.data.get("holder", {}).get("process"))
            elif e.type == "attached" and e.data.get("name") == alloc.name:
                mine = (e.actor, e.data.get("process"))
            elif e.type in ("released", "reclaimed") and e.data.get("name") == alloc.name:
                break
    except LedgerError:
        return True
    if mine is None or not isinstance(mine[0], dict) or not isinstance(mine[1], dict):
        return True
    actor, process = mine
    return all(actor.get(k) == process.get(k) for k in ("host", "boot", "pid", "ticks"))


def adopt(ledger: Any, name: str, token: int) -> Adopted:
    """Take back grant ``(name, token)`` after a restart (see the module
    docstring): its process alive or not provably gone (the ledger's probe
    says ``unknown``), it stays bound to it (a live holder is never taken
    on a guess); proven gone, it is bound to this process (``attach``:
    ``rebound``) when that process had bound it to itself (the old
    supervisor's own grant) or it has live children, else released here
    (a child that died meanwhile: ``found_gone``, exit status unknown). On
    PostgreSQL a running process's grant is bound to it again (``attach``
    with its pid), which records this ledger's client session: the old
    supervisor's, which vouched for it to other hosts, ends with it.

    Raises:
        TypeError: ``token`` is not an integer (as :meth:`Ledger.attach`).
        InvalidArgument: ``token`` is below 1 (as :meth:`Ledger.attach`).
        UnknownHolder: the grant is not live any more (reclaimed or
            released meanwhile: too late), or ``name`` is live with another
            grant.
        InvalidHolderName: as :meth:`Ledger.attach`.
        LedgerError: the attach, or the release of a dead child's grant,
            could not be recorded (as :meth:`Ledger.release`: a store that
            cannot be reached, a busy lock); adopt may be called again.
    """
    token = check_token(token)
    alloc = ledger.holder(name)
    if alloc.token != token:
        raise UnknownHolder(name, message=f"holder '{name}' is live with another grant "
                                          f"(token {alloc.token}, not {token})")
    verdict = ledger.liveness([alloc])[name]
    ours = verdict.liveness is Liveness.ALIVE and alloc.pid == os.getpid()
    if verdict.dead and not ledger.children(name) and not bound_itself(ledger, alloc):
        # A child of the old supervisor (bound to its process by another) that
        # exited while nobody watched, with no children of its own to keep:
        # nothing to wait for, and nothing its scope is kept for.
        try:
            ledger.release(name, token=token, note=GONE_NOTE)
        except UnknownHolder:
            pass  # (reclaimed meanwhile: gone all the same)
        return Adopted(ledger, alloc, False, found_gone=True)
    if verdict.dead or ours:
        return Adopted(ledger, ledger.attach(name, token=token), True)
    if verdict.liveness is Liveness.ALIVE and alloc.process.session is not None:
        # On PostgreSQL, a running child's grant is vouched for to other hosts by
        # the session of the ledger that bound it: the old supervisor's, which
        # dies with it (other hosts would reclaim a running child's scope).
        # Bound again to the same process, it carries this ledger's session.
        again = ledger.attach(name, pid=alloc.pid, token=token)
        if again.process.ticks != alloc.process.ticks or again.process.boot != alloc.process.boot:
            # The process exited and its pid was taken meanwhile: it is gone.
            return Adopted(ledger, ledger.attach(name, token=token), True)
        return Adopted(ledger, again, False)
    return Adopted(ledger, alloc, False)
