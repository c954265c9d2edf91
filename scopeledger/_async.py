"""``AsyncLedger``: the ledger for asyncio programs (supervisors, agent
orchestrators), without blocking the event loop.

Every call that may take the ledger's lock, read the log or probe a process
runs in a worker thread (the loop's default executor, or the one given);
waiting for a scope (``wait=``) happens on the loop itself: the inotify
instance and the pidfds of :mod:`scopeledger._wait` are watched with
``loop.add_reader``, so a thousand waiting coroutines take no thread. Only
each look (is an earlier waiter in the way? would it be granted?) and the
grant itself run in a thread, one short transaction at a time.

**Cancellation is safe.** A call cancelled (``task.cancel()``,
``asyncio.timeout``, ``asyncio.wait_for``) is never granted afterwards: the
grant's last check runs under the ledger's lock and refuses once the call is
cancelled (:class:`scopeledger._wait.Gate`). When the grant was decided just
before the cancellation, the call releases it (in a thread, shielded from
further cancellation) before the ``CancelledError`` propagates, so that no
scope is left to a holder nobody knows about. A ticket taken in the queue is
given back the same way.

**Cancellation is prompt** for the grants (``register``, ``delegate``,
``hold``, with or without ``wait=``) even while the ledger's lock is stalled
(a writer stopped while it holds the lock; on PostgreSQL a session stopped
in the middle of a transaction): a call whose thread has not yet reached its
grant's last check under the lock (its gate shut first) raises at once; the
thread goes on waiting for the lock in the background, and records nothing
once it gets it; a waiter's ticket is given back after that (until then it
stays in the queue, where everyone waits for the same lock anyway).
:meth:`AsyncLedger.close` waits for such threads (a ledger is not closed
under a thread that uses it), as ``asyncio.run``'s end waits for the
executor's threads: bound the lock's wait (``AsyncLedger.open(...,
timeout=)``) where that matters. On PostgreSQL, a grant first tried in one
round trip without the lock (``Ledger``'s speculative try, made while no
other process appended lately) that found the lock taken wrote nothing, and
says so to the gate (:meth:`Gate.unwritten
<scopeledger._wait.Gate.unwritten>`): a cancellation while its thread then
waits for the lock raises at once too; one that comes during that round trip
waits for it (the try may append), then releases what it got. The other
calls cancelled while their thread runs raise at once too (a release still
completes in its thread).

**A release that fails after a cancellation** (a full disk, the server
unreachable) never replaces the cancellation: the ``CancelledError`` (or
``TimeoutError``) goes on after the first try, and the release is tried
again in the background (a warning names the grant; 0.05 s doubling to
5 s, :data:`UNDO_RETRY_FIRST`, :data:`UNDO_RETRY_MAX`) until it is recorded
or the grant is found gone (released or reclaimed meanwhile), for at most
:data:`UNDO_RETRY_SECONDS` (600 s) or until :meth:`AsyncLedger.close` (one
last try at once). If it still cannot be recorded, an error on logger
``scopeledger`` names the grant (its name and token: recorded and not
released): it stays live until released (``ledger release NAME --token N``),
or reclaimed once this process has ended.

**The event loop's stalls.** A worker thread doing the ledger's work in
Python (folding what other writers appended, deciding, encoding) holds the
GIL, and the loop's thread, woken for its own next callback, waits for it:
CPython takes the GIL from a thread that does not let go of it only after
the *switch interval* (:func:`sys.setswitchinterval`, 5 ms by default):
the largest stall the ledger itself caused the loop, measured with 4
writer processes on 2 cores (BENCHMARKS.md, "Waiting and asyncio"). So
while a call of an ``AsyncLedger`` runs in a worker thread, the
interpreter's switch interval is at most :data:`SWITCH_INTERVAL`
(``AsyncLedger(..., switch_interval=)``; ``None`` leaves it alone), and it
is put back when the last such call ends, unless the program set another
meanwhile (that one is kept). The switch interval is the process's: other
threads that compete for the GIL while a call runs are switched as often
too. What no switch interval shortens: a GIL holder that the scheduler
took off its CPU, the loop's thread waiting for a CPU itself, and a *full
garbage collection*: the collector runs with the GIL held until it is done,
in whichever thread allocated past its threshold (a worker thread doing the
ledger's work, often), and a full one (generation 2) walks every container
object of the process: 7-10 ms for ~25,000 (asyncio and the ledger loaded)
on 2 busy cores, longer for a larger program. A program that needs shorter
stalls calls :func:`gc.freeze` once its start-up is done (the collector then
leaves the objects made so far alone: a full collection took 0.2-0.7 ms
after it); this module does not, since it is the program's choice (objects
frozen in a reference cycle are never freed).

**Threads and forks.** See ``docs/threads-and-forks.md``: every method of
:class:`~scopeledger.Ledger` may be called from several threads at once (a
thread lock per ledger object, beside ``flock``); an ``AsyncLedger`` belongs
to one event loop (use it from that loop's thread); neither survives a
``fork()`` in use: a forked child opens its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.thread  # noqa: F401 (asyncio imports it on its first executor: now, not in a call)
import contextlib
import datetime as dt
import functools
import itertools
import logging
import math
import os
import sys
import threading
import time
from typing import (TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence, TypeVar,
                    overload)

from ._arguments import (asks_to_wait, check_advisory, check_callable, check_note, check_seq, check_switch_interval,
                         check_timeout, check_token, check_wait)
from ._errors import LedgerError, LedgerIOError, LockTimeout, StoreError, UnknownHolder
from ._fold import Allocation
from ._ledger import WaiterAttempt, delegate_attempt, log_where, register_attempt, tickets_of
from ._rules import ScopeRule, check_name
from ._wait import (Call, Commit, Gate, Request, Sleep, Watch, deadline_of, queue_of, release_grant, resume, waiting,
                    whoami)
from ._imports import first_use

if TYPE_CHECKING:
    from ._errors import Refused, ScopeConflict
    from ._fold import State
    from ._history import Diff, Event, Holding, TimePoint, VerifyReport
    from ._identity import Verdict
    from ._ledger import Decision, EffectiveScope, Ledger
    from ._spawn import Adopted, Spawned

T = TypeVar("T")
_PathT = TypeVar("_PathT", bound="str | os.PathLike[str]")
log = logging.getLogger("scopeledger")

#: The interpreter's switch interval, in seconds, while a call of an
#: :class:`AsyncLedger` runs in a worker thread (see the module docstring):
#: the longest a worker thread running Python keeps the event loop's thread
#: waiting for the GIL, give or take the time the worker takes to notice.
#: CPython's default is 0.005.
SWITCH_INTERVAL = 0.0005

#: A cancelled call's undo (the release of a grant decided just before the
#: cancellation) that failed (a full disk, a server outage) is tried again
#: after this many seconds, doubling up to :data:`UNDO_RETRY_MAX`, until it
#: is recorded or the grant is proven gone, for at most
#: :data:`UNDO_RETRY_SECONDS` or until the :class:`AsyncLedger` is closed
#: (one last try then); if it still fails, an error names the grant.
UNDO_RETRY_FIRST = 0.05
UNDO_RETRY_MAX = 5.0
UNDO_RETRY_SECONDS = 600.0

#: What a failed undo is tried again after: the store could not be written
#: or reached (``InDoubt`` too: the release tried again is recorded, or finds
#: the grant gone), or its lock not taken in time. Any other error is a fault
#: that trying again does not mend: logged at once.
_RETRIED = (LedgerIOError, StoreError, LockTimeout, OSError)

#: What :meth:`AsyncLedger.until_lost` rides out (looking again, said once:
#: ``_grantwatch.Unreadable``): a read of the log failed, or the store could
#: not be reached or answered with an error.
_UNREACHED = (LedgerIOError, StoreError)


class _SwitchInterval:
    """The process's switch interval, lowered while calls run in worker
    threads (:meth:`run`) and put back when the last one ends, unless
    something else set it meanwhile (then that value stays). One per
    process (:data:`_switch`): the calls of every ``AsyncLedger`` count.

    Lowered in the worker thread only, not from the call on the loop to the
    coroutine's resumption: that doubled the forced switches between the
    loop's thread and the worker, +40 % CPU per register+release pair
    (BENCHMARKS.md)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0
        self._saved: float | None = None  # the value to put back
        self._ours: float | None = None  # the value set here, as sys.getswitchinterval reads it back

    def run(self, interval: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` with the switch interval at most ``interval`` seconds."""
        self._lower(interval)
        try:
            return fn(*args)
        finally:
            self._restore()

    def _lower(self, interval: float) -> None:
        with self._lock:
            self._calls += 1
            now = sys.getswitchinterval()
            if now != self._ours:  # not set here (the first call, or set by the program since): put it back
                self._saved = now
            if now > interval:
                sys.setswitchinterval(interval)
                self._ours = sys.getswitchinterval()

    def _restore(self) -> None:
        with self._lock:
            self._calls -= 1
            if self._calls:
                return
            if self._saved is not None and self._ours is not None and sys.getswitchinterval() == self._ours:
                sys.setswitchinterval(self._saved)
            self._saved = self._ours = None


_switch = _SwitchInterval()


class AsyncLedger:
    """An open ledger for asyncio: the methods of
    :class:`~scopeledger.Ledger` that record or read, as coroutines that
    never block the event loop (see the module docstring for how, and for
    cancellation).

    Make one with ``await AsyncLedger.open(path, **options)`` (options as
    :meth:`Ledger.open`) or ``AsyncLedger(ledger)`` around an open
    :class:`~scopeledger.Ledger` (the two may be used side by side: a
    ``Ledger`` is thread-safe). ``async with`` closes it.

    Every method raises what its :class:`~scopeledger.Ledger` namesake
    raises; ``wait=`` works as there (:class:`~scopeledger.WaitTimeout`),
    and the call may also be cancelled at any point.
    """

    def __init__(self, ledger: Ledger, *, executor: concurrent.futures.Executor | None = None,
                 switch_interval: float | None = SWITCH_INTERVAL) -> None:
        """Args:
            ledger: an open :class:`~scopeledger.Ledger`.
            executor: the threads blocking calls run in; default the
                loop's default executor.
            switch_interval: seconds; while a call runs in a worker thread,
                the interpreter's switch interval
                (:func:`sys.setswitchinterval`) is at most this, and put
                back afterwards (see the module docstring); ``None``: left
                alone.

        Raises:
            TypeError, ValueError: ``switch_interval`` is not ``None`` or
                seconds > 0 and <= 1.
        """
        switch_interval = check_switch_interval(switch_interval)
        self._ledger = ledger
        self._executor = executor
        self._switch = switch_interval
        self._me: Any = None
        self._cleanups: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Event | None = None  # (made on the loop, by the first undo tried again)
        self._closed = False

    @classmethod
    async def open(cls, path: Any = None, *, executor: concurrent.futures.Executor | None = None,
                   switch_interval: float | None = SWITCH_INTERVAL, **options: Any) -> "AsyncLedger":
        """Open (creating if needed) the ledger in directory ``path``, in a
        thread; ``executor`` and ``switch_interval`` as :class:`AsyncLedger`,
        ``options`` as :meth:`Ledger.open`.

        Raises:
            TypeError, ValueError: a bad ``switch_interval``.
            as :meth:`Ledger.open`.
        """
        with first_use:
            from ._ledger import Ledger

        switch_interval = check_switch_interval(switch_interval)
        loop = asyncio.get_running_loop()
        ledger = await loop.run_in_executor(executor, _in_thread(switch_interval, Ledger.open, path, **options))
        return cls(ledger, executor=executor, switch_interval=switch_interval)

    @property
    def ledger(self) -> Any:
        """The :class:`~scopeledger.Ledger` underneath (thread-safe: its
        blocking methods should not be called on the loop's thread)."""
        return self._ledger

    @property
    def path(self) -> str:
        """The ledger directory, ``str``."""
        path: str = self._ledger.path  # (a property made by _ledger._option-like attrgetter: Any to mypy)
        return path

    async def __aenter__(self) -> "AsyncLedger":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncLedger {self._ledger.path!r}>"

    # -- threads ----------------------------------------------------------------

    async def _thread(self, fn: Callable[..., T], *args: Any, undo: Callable[[T], Any] | None = None,
                      gate: Gate | None = None,
                      abandoned: list[asyncio.Future[Any]] | None = None) -> T:
        """``fn(*args)`` in a worker thread, the switch interval lowered
        there while it runs (``switch_interval``). If this coroutine is
        cancelled while it runs, the
        thread still finishes (it cannot be stopped), and ``undo(result)``
        then runs on its result, in a thread, before the
        ``CancelledError`` goes on (shielded from a second cancellation;
        tried again in the background if it fails: :meth:`_undo`).

        ``gate``: the gate ``fn``'s grant passes (shut on cancellation).
        When the cancellation shuts it before the thread entered its
        commit (:meth:`Gate.cancel <scopeledger._wait.Gate.cancel>`: it never grants now, a thread waiting
        for a stalled ledger lock, say), the ``CancelledError`` goes on at
        once, without waiting for the thread; the thread finishes in the
        background (its outcome, a ``GaveUp``, dropped; :meth:`close` waits
        for it), and its future is appended to ``abandoned`` (if given):
        the caller must not clean up what the thread still uses before it
        is done."""
        loop = asyncio.get_running_loop()
        if gate is not None:
            gate.arm()
        fut = loop.run_in_executor(self._executor, _in_thread(self._switch, fn, *args))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            never = gate is not None and gate.cancel()
            if undo is not None or never:
                tried: asyncio.Future[None] = loop.create_future()
                task = asyncio.ensure_future(self._undo(fut, undo, tried))
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)
                if never:
                    if abandoned is not None:
                        abandoned.append(task)
                else:
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(tried)  # (the first try: its failure never replaces the cancellation)
            raise

    async def _undo(self, fut: Awaitable[T], undo: Callable[[T], Any] | None, tried: asyncio.Future[None]) -> None:
        """Once ``fut`` (a cancelled call's thread) is done, ``undo`` its
        result (if any, and not ``None``) in a thread; ``tried`` is
        resolved after the first try. A try that fails on the store
        (:data:`_RETRIED`: a full disk, a server outage) is said once (a
        warning) and made again after :data:`UNDO_RETRY_FIRST` seconds,
        doubling up to :data:`UNDO_RETRY_MAX`, until it succeeds (a grant
        released, or found released or reclaimed meanwhile: nothing left),
        :data:`UNDO_RETRY_SECONDS` have passed or this object is closed
        (one last try at once); then an error names what was left (a grant:
        its name and token, recorded and not released; it stays live until
        released, or reclaimed once this process has ended)."""
        loop = asyncio.get_running_loop()
        try:
            try:
                result = await fut
            except BaseException:  # noqa: BLE001 - it failed (GaveUp: a shut gate): nothing to undo
                return
            if result is None or undo is None:
                return
            what = _what(result)
            end = time.monotonic() + UNDO_RETRY_SECONDS
            pause = UNDO_RETRY_FIRST
            failed: BaseException | None = None
            while True:
                try:
                    await loop.run_in_executor(self._executor, _in_thread(self._switch, undo, result))
                except _RETRIED as exc:
                    if failed is None:
                        log.warning("a cancelled call could not undo %s: %s; trying again (up to %g s)",
                                    what, exc, UNDO_RETRY_SECONDS)
                    failed = exc
                except Exception:  # noqa: BLE001 - a fault trying again does not mend
                    log.exception("a cancelled call could not undo %s: %s is recorded and not released",
                                  what, what)
                    return
                else:
                    if failed is not None:
                        log.warning("a cancelled call undid %s at last", what)
                    return
                finally:
                    if not tried.done():
                        tried.set_result(None)
                if self._closed or time.monotonic() >= end:
                    log.error("a cancelled call could not undo %s: %s is recorded and not released (it stays "
                              "live until released, or reclaimed once this process has ended): %s",
                              what, what, failed)
                    return
                await self._pause(min(pause, max(0.0, end - time.monotonic())))
                pause = min(pause * 2, UNDO_RETRY_MAX)
        finally:
            if not tried.done():
                tried.set_result(None)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or until :meth:`close` begins."""
        if self._closing is None:
            self._closing = asyncio.Event()
        if self._closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    # -- mutations --------------------------------------------------------------

    async def register(self, name: str, rules: Sequence[ScopeRule] | ScopeRule, pid: int | None = None, *,
                       socket: str | None = None, wait: float = 0, note: str | None = None,
                       advisory: bool = False, ttl: float | None = None, lease_only: bool = False,
                       on_wait: Callable[[str, Refused | None], object] | None = None) -> Allocation:
        """:meth:`Ledger.register`, waiting (``wait``) on the loop.
        ``advisory=True``: as there, granted at once with its conflicts
        recorded, never waiting whatever ``wait`` says (``wait`` is still
        checked). ``on_wait(reason, refusal)``: as there, called once on the
        loop when the request starts waiting (a plain function: not
        awaited).

        Raises:
            as :meth:`Ledger.register`; ``TypeError`` when ``on_wait`` is
            neither ``None`` nor callable."""
        led = self._ledger
        if on_wait is not None:
            check_callable("on_wait", on_wait, ("reason", "refusal"))
        if advisory is not False:
            check_advisory(advisory)
            check_wait(wait)  # checked, then not waited for: an advisory request never waits
            wait = 0

        attempt = register_attempt(led, name, rules, pid, socket, note, advisory, ttl, lease_only)
        return await self._grant(name, rules, None, None, wait, attempt, on_wait)

    async def delegate(self, parent: str, child: str, rules: Sequence[ScopeRule] | ScopeRule,
                       pid: int | None = None, *, reserved: bool = False, socket: str | None = None,
                       parent_token: int | None = None, wait: float = 0, note: str | None = None,
                       advisory: bool = False, ttl: float | None = None, lease_only: bool = False,
                       on_wait: Callable[[str, Refused | None], object] | None = None) -> Allocation:
        """:meth:`Ledger.delegate`, waiting (``wait``) on the loop;
        ``advisory``, ``on_wait``: as :meth:`register` (never waits).

        Raises:
            as :meth:`Ledger.delegate`."""
        led = self._ledger
        if on_wait is not None:
            check_callable("on_wait", on_wait, ("reason", "refusal"))
        if advisory is not False:
            check_advisory(advisory)
            check_wait(wait)  # checked, then not waited for: an advisory request never waits
            wait = 0

        attempt = delegate_attempt(led, parent, child, rules, pid, reserved, socket, parent_token, note, advisory,
                                   ttl, lease_only)
        return await self._grant(child, rules, parent, parent_token, wait, attempt, on_wait)

    async def _grant(self, name: Any, rules: Any, parent: Any, parent_token: Any, wait: Any,
                     attempt: WaiterAttempt,
                     on_wait: Callable[[str, Refused | None], object] | None = None) -> Allocation:
        """The grant, asked once (``wait`` 0) or waited for: the loop of
        :func:`scopeledger._wait.waiting`, its blocking steps run in threads
        and its sleeps on the event loop."""
        led = self._ledger
        if not asks_to_wait(wait):
            gate = Gate(None)
            return await self._gated(gate, attempt, Commit(gate.commit, None, gate.unwritten))
        req = await self._thread(Request.of, led, name, rules, parent, parent_token, wait)
        if self._me is None:
            self._me = await self._thread(whoami, led)
        gate = Gate(deadline_of(req))
        steps = waiting(led, req, attempt, gate, self._me, tickets_of(led), on_wait)
        abandoned: list[asyncio.Future[Any]] = []
        try:
            step = resume(steps)
            while not isinstance(step, Allocation):
                reply: Any = None  # (a sleep's reply)
                try:
                    if isinstance(step, Sleep):
                        await _sleep(step.watch, step.seconds, step.mine, self._switch)
                    else:
                        reply = await self._thread(step.fn, *step.args, undo=step.undo, gate=gate,
                                                   abandoned=abandoned)
                except BaseException as exc:  # noqa: BLE001 - thrown in (a cancellation too): the loop cleans up
                    if abandoned:
                        # The step's thread goes on (waiting for the ledger's lock, say) and uses
                        # the waiter's ticket and watch: the loop cleans up once it is done.
                        task = asyncio.ensure_future(self._wind_up(steps, abandoned[0], exc))
                        self._cleanups.add(task)
                        task.add_done_callback(self._cleanups.discard)
                        raise
                    step = resume(steps, error=exc)
                else:
                    step = resume(steps, reply)
            return step
        finally:
            if not abandoned:
                steps.close()  # however this ends, the ticket is given back

    async def _wind_up(self, steps: Any, thread: Awaitable[Any], exc: BaseException) -> None:
        """The end of a waiting loop (``steps``) whose cancelled step's
        thread (``thread``, done once that thread is) was left running:
        once it is done, ``exc`` is thrown in, and the steps the loop takes
        on the way out (giving its ticket back) run in threads; the
        exception that ends it is dropped (the caller raised ``exc``)."""
        loop = asyncio.get_running_loop()
        try:
            await thread
            step = resume(steps, error=exc)
            while isinstance(step, Call):
                try:
                    reply = await loop.run_in_executor(self._executor, _in_thread(self._switch, step.fn, *step.args))
                except Exception as err:  # noqa: BLE001 - thrown in: the loop goes on cleaning up
                    step = resume(steps, error=err)
                else:
                    step = resume(steps, reply)
            if isinstance(step, Allocation):  # (cannot be: its gate is shut) -- released all the same
                await loop.run_in_executor(self._executor, release_grant, self._ledger, step)
        except BaseException:  # noqa: BLE001 - the exception that ends the loop (exc, or what cleaning up raised)
            pass
        finally:
            steps.close()  # (given back now if not yet: blocking only when interrupted on the way)

    async def _gated(self, gate: Gate, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread, where a grant passes ``gate``: if this
        coroutine is cancelled, the gate shuts (no grant after it), and a
        grant decided before is released before the cancellation goes on."""
        return await self._thread(fn, *args, undo=functools.partial(release_grant, self._ledger), gate=gate)

    def hold(self, name: str, rules: Sequence[ScopeRule] | ScopeRule, pid: int | None = None, *,
             parent: str | None = None, socket: str | None = None, parent_token: int | None = None,
             wait: float = 0, note: str | None = None, advisory: bool = False, ttl: float | None = None,
             lease_only: bool = False,
             on_wait: Callable[[str, Refused | None], object] | None = None) -> "AsyncHold":
        """``async with aledger.hold(...) as alloc:``: register (or, with
        ``parent``, delegate) on entry, release (that grant, by token) on
        exit, also on an exception or a cancellation. ``advisory``,
        ``on_wait``: as :meth:`register` (granted at once, never waiting). A lease
        (``ttl``) is not renewed by the guard: :meth:`keep_renewed` does.
        The arguments are checked on entry (as :meth:`register` checks
        them)."""
        return AsyncHold(self, name, rules, pid, parent, socket, parent_token, wait, note, ttl=ttl,
                         lease_only=lease_only, advisory=advisory, on_wait=on_wait)

    async def renew(self, name: str, token: int, ttl: float | None = None) -> Allocation:
        """:meth:`Ledger.renew` (it completes in its thread even if this
        call is cancelled)."""
        return await self._thread(self._ledger.renew, name, token, ttl)

    def keep_renewed(self, name: str, token: int, ttl: float | None = None, *,
                     on_lost: Callable[[BaseException], Any] | None = None) -> "asyncio.Task[BaseException]":
        """Renew grant ``(name, token)``'s lease every ttl/3 (``ttl``: as
        :meth:`Ledger.renew`; default the ttl it has) in an asyncio task
        on this loop, until the task is cancelled (``task.cancel()``).
        When the grant is gone (released, reclaimed, expired:
        :class:`~scopeledger.UnknownHolder`) the task ends, returning that
        error, after calling ``on_lost(error)`` (on the loop); other
        failures are logged and retried at the next beat. The holder's own
        :meth:`check` turns false at ttl if no renewal succeeds.

        Raises:
            RuntimeError: no running event loop.
            TypeError: ``on_lost`` is not a plain callable taking
                ``(error)``; ``token`` is not an
                integer (as :meth:`Ledger.renew`).
            InvalidArgument: ``token`` is below 1 (as :meth:`Ledger.renew`).
            InvalidLease: ``ttl`` is not ``None`` or a ttl :meth:`Ledger.renew`
                takes (before the task is made).
        """
        with first_use:
            from ._lease import check_ttl

        token = check_token(token)
        check_callable("on_lost", on_lost, ("error",))
        if ttl is not None:
            check_ttl(ttl)
        return asyncio.get_running_loop().create_task(self._keep_renewed(name, token, ttl, on_lost),
                                                      name=f"scopeledger-renew-{name}")

    async def _keep_renewed(self, name: str, token: int, ttl: float | None,
                            on_lost: Callable[[BaseException], Any] | None) -> BaseException:
        with first_use:
            from ._lease import check_ttl, renewal_interval

        alloc = await self.holder(name)
        if alloc.token != token or alloc.lease is None:
            await self.renew(name, token, ttl)  # raises what a renewal would (another grant, no lease)
        interval = renewal_interval(check_ttl(ttl) if ttl is not None else alloc.lease.ttl_ns)  # type: ignore[union-attr]
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self.renew(name, token, ttl)
            except UnknownHolder as exc:
                if on_lost is not None:
                    on_lost(exc)
                return exc
            except (LedgerError, OSError) as exc:
                log.warning("could not renew the lease of holder %r (token %d), trying again in %.3f s: %s",
                            name, token, interval, exc)
            else:
                if ttl is None and renewed.lease is not None:  # the beat follows the ttl it has
                    interval = renewal_interval(renewed.lease.ttl_ns)

    async def release(self, name: str, token: int | None = None, *, returncode: int | None = None,
                      note: str | None = None, force: bool = False, reason: str | None = None) -> list[str]:
        """:meth:`Ledger.release` (it completes in its thread even if this
        call is cancelled)."""
        return await self._thread(functools.partial(self._ledger.release, name, token, returncode=returncode,
                                                    note=note, force=force, reason=reason))

    async def spawn(self, name: str, argv: Sequence[str], rules: Sequence[ScopeRule] | ScopeRule,
                    **options: Any) -> "AsyncSpawned":
        """:meth:`Ledger.spawn` without blocking the loop: the scope is
        waited for on the loop (``wait=``), the child started in a thread;
        ``await spawned.wait()`` releases it with its exit status. Cancelled
        after the child started, the child is killed and its grant released.
        Options as :meth:`Ledger.spawn` (``advisory=True``: granted at once,
        never waiting; ``on_lost``: as there, a callable given the
        :class:`AsyncSpawned` and called in a thread, not on the loop)."""
        return await _spawn(self, name, argv, rules, **options)

    async def adopt(self, name: str, token: int) -> "AsyncAdopted":
        """:meth:`Ledger.adopt` (in a thread): an :class:`AsyncAdopted`,
        whose ``await wait()`` waits for the process on the loop and then
        releases the grant (with its exit status when this process is its
        parent: ``scopeledger._spawn`` says what an adopter can know).

        Raises:
            as :meth:`Ledger.adopt`.
        """
        return await _adopt(self, name, token)

    async def attach(self, name: str, pid: int | None = None, token: int | None = None) -> Allocation:
        """:meth:`Ledger.attach`."""
        return await self._thread(self._ledger.attach, name, pid, token)

    async def reclaim(self, probe: Any = None, *, dry_run: bool = False) -> Any:
        """:meth:`Ledger.reclaim` (a :class:`~scopeledger.ReclaimReport`)."""
        return await self._thread(functools.partial(self._ledger.reclaim, probe, dry_run=dry_run))

    # -- queries ----------------------------------------------------------------

    async def check(self, name: str, token: int) -> bool:
        """:meth:`Ledger.check`: ``True`` while that grant is live."""
        return await self._thread(self._ledger.check, name, token)

    async def holders(self) -> list[Allocation]:
        """:meth:`Ledger.holders`."""
        return await self._thread(self._ledger.holders)

    async def holder(self, name: str) -> Allocation:
        """:meth:`Ledger.holder`."""
        return await self._thread(self._ledger.holder, name)

    async def decide(self, name: str | None, rules: Sequence[ScopeRule] | ScopeRule, *,
                     parent: str | None = None, parent_token: int | None = None) -> Any:
        """:meth:`Ledger.decide`."""
        return await self._thread(functools.partial(self._ledger.decide, name, rules, parent=parent,
                                                    parent_token=parent_token))

    async def decide_each(self, name: str | None, rules: Sequence[ScopeRule] | ScopeRule, *,
                          parent: str | None = None, parent_token: int | None = None) -> list[Decision]:
        """:meth:`Ledger.decide_each`: one :class:`~scopeledger.Decision`
        per rule, all against one state, in a thread (it canonicalises
        paths and probes the holders in the way). Records nothing."""
        return await self._thread(functools.partial(self._ledger.decide_each, name, rules, parent=parent,
                                                    parent_token=parent_token))

    async def would_grant(self, name: str | None, rules: Sequence[ScopeRule] | ScopeRule, *,
                          parent: str | None = None, parent_token: int | None = None) -> Refused | None:
        """:meth:`Ledger.would_grant`: the refusal the request would meet
        now, or ``None``, in a thread. Records nothing."""
        return await self._thread(functools.partial(self._ledger.would_grant, name, rules, parent=parent,
                                                    parent_token=parent_token))

    @overload
    async def who(self, path: str | os.PathLike[str], *, seq: int | None = None,
                  time: dt.datetime | int | None = None) -> list[Holding]: ...

    @overload
    async def who(self, path: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...], *,
                  seq: int | None = None, time: dt.datetime | int | None = None) -> list[list[Holding]]: ...

    @overload
    async def who(self, path: list[_PathT], *,
                  seq: int | None = None, time: dt.datetime | int | None = None) -> list[list[Holding]]: ...

    async def who(self, path: Any, *, seq: int | None = None, time: dt.datetime | int | None = None) -> Any:
        """:meth:`Ledger.who`, in a thread: who holds ``path`` now (or at
        ``seq``/``time``, which may read much of the log); for a
        ``list``/``tuple`` of paths, one answer per path from one state."""
        return await self._thread(functools.partial(self._ledger.who, path, seq=seq, time=time))

    async def liveness(self, holders: Sequence[Allocation] | None = None) -> dict[str, Verdict]:
        """:meth:`Ledger.liveness`: the verdict on each holder (default the
        live ones) now, probing their processes in a thread."""
        return await self._thread(self._ledger.liveness, holders)

    # -- the rest of Ledger's queries and maintenance, each in a thread ------------

    async def children(self, name: str) -> list[str]:
        """:meth:`Ledger.children`, in a thread."""
        return await self._thread(self._ledger.children, name)

    async def find_conflict(self, rules: Sequence[ScopeRule] | ScopeRule) -> ScopeConflict | None:
        """:meth:`Ledger.find_conflict`, in a thread (it canonicalises paths)."""
        return await self._thread(self._ledger.find_conflict, rules)

    async def find_conflicts(self, rules: Sequence[ScopeRule] | ScopeRule, *, parent: str | None = None,
                             limit: int | None = None) -> list[tuple[tuple[str, ...], ScopeRule, ScopeRule]]:
        """:meth:`Ledger.find_conflicts`, in a thread (it canonicalises paths).

        Raises:
            InvalidScope: bad rules. ValueError: ``limit`` is not ``None`` or
                an int >= 1.
        """
        return await self._thread(functools.partial(self._ledger.find_conflicts, rules, parent=parent, limit=limit))

    async def effective_scope(self, name: str) -> EffectiveScope:
        """:meth:`Ledger.effective_scope`, in a thread."""
        return await self._thread(self._ledger.effective_scope, name)

    async def canonical_rules(self, rules: Sequence[ScopeRule] | ScopeRule) -> tuple[ScopeRule, ...]:
        """:meth:`Ledger.canonical_rules`, in a thread (symlinks and mounts are read)."""
        return await self._thread(self._ledger.canonical_rules, rules)

    async def state(self) -> State:
        """:meth:`Ledger.state`, in a thread (it folds what others appended)."""
        return await self._thread(self._ledger.state)

    async def state_at(self, seq: int | None = None, time: dt.datetime | int | None = None) -> State:
        """:meth:`Ledger.state_at`, in a thread (time travel reads the log)."""
        return await self._thread(functools.partial(self._ledger.state_at, seq, time))

    async def time_point(self, time: dt.datetime | int) -> TimePoint:
        """:meth:`Ledger.time_point`, in a thread."""
        return await self._thread(self._ledger.time_point, time)

    async def history(self, name: str) -> list[Event]:
        """:meth:`Ledger.history`, in a thread."""
        return await self._thread(self._ledger.history, name)

    async def grant_ending(self, name: str, token: int) -> Event | None:
        """:meth:`Ledger.grant_ending`, in a thread (it reads the log)."""
        return await self._thread(self._ledger.grant_ending, name, token)

    async def diff(self, a: int, b: int) -> Diff:
        """:meth:`Ledger.diff`, in a thread."""
        return await self._thread(self._ledger.diff, a, b)

    async def events(self, since: int | None = None, until: int | None = None, *,
                     types: Iterable[str] | None = None, holder: str | None = None,
                     path: str | None = None, since_time: dt.datetime | int | None = None,
                     until_time: dt.datetime | int | None = None) -> AsyncIterator[Event]:
        """:meth:`Ledger.events` as an async iterator: the log is read in a
        thread, :data:`EVENTS_PAGE` events at a time, so a long log never
        blocks the loop nor sits whole in memory. Raises what
        :meth:`Ledger.events` raises, while iterating."""
        it = await self._thread(functools.partial(
            self._ledger.events, since, until, types=types, holder=holder, path=path,
            since_time=since_time, until_time=until_time))
        while True:
            page = await self._thread(_next_page, it)
            if not page:
                return
            for event in page:
                yield event

    async def verify(self, *, workers: int | None = None) -> VerifyReport:
        """:meth:`Ledger.verify`, in a thread (its workers, if any, are processes)."""
        return await self._thread(functools.partial(self._ledger.verify, workers=workers))

    async def snapshot(self) -> int:
        """:meth:`Ledger.snapshot`, in a thread."""
        return await self._thread(self._ledger.snapshot)

    async def prune_snapshots(self, keep: int | None = None) -> list[int]:
        """:meth:`Ledger.prune_snapshots`, in a thread."""
        return await self._thread(self._ledger.prune_snapshots, keep)

    async def reclaim_stale(self, probe: Any = None, *, dry_run: bool = False) -> list[str]:
        """:meth:`Ledger.reclaim_stale`, in a thread (it probes processes)."""
        return await self._thread(functools.partial(self._ledger.reclaim_stale, probe, dry_run=dry_run))

    async def refresh(self) -> int:
        """:meth:`Ledger.refresh`: the seq now folded."""
        return await self._thread(self._ledger.refresh)

    async def wait(self, after: int, timeout: float | None = None) -> int:
        """Wait, on the loop, until the log holds an event after seq
        ``after`` (at most ``timeout`` seconds, ``None``: for ever); the
        newest seq folded (``<= after`` when the time ran out). Woken by
        inotify on the log (every 10 ms without it).

        Raises:
            TypeError, ValueError, CorruptLedger: as :meth:`Ledger.wait`.
        """
        after = check_seq("after", after)
        timeout = check_timeout("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        led = self._ledger
        watch = Watch.take(led, queue_of(led, tickets_of(led)), None)
        try:
            while True:
                seq = await self.refresh()
                if seq > after:
                    return seq
                remaining = math.inf if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return seq
                await _sleep(watch, remaining, None, self._switch)
        finally:
            watch.give_back(self._ledger)

    async def until_lost(self, name: str, token: int) -> Any:
        """Wait (on the loop) until grant ``(name, token)`` is no longer
        live, and return the :class:`~scopeledger.Event` that ended it
        (``released``, by whom and with which note, or ``reclaimed``, with
        the reason): the signal a holder needs when its scope is taken
        away (a forced release, a reclaim). Returns at once when the grant
        is not live now; ``None`` when the grant's own line is no longer in
        the log (cut by a repair, ``ledger repair``, as
        :meth:`Ledger.watch_grant` reports it; this object goes on with
        the log as the repair left it), when the ending event cannot be
        found (the grant was never live), and when its lease lapsed by this
        process's clock (:meth:`Ledger.check` turned false at its ttl:
        nobody may reclaim it before ttl + grace, so the holder learns
        first; the log is then looked at every min(1 s, ttl/10)). A repair
        that cuts only lines after the grant's (its end among them) leaves
        the grant live: the wait goes on.

        A look that cannot read the log raises nothing: a ``LedgerIOError``
        (a read of a directory's log failed) or a ``StoreError`` (on
        PostgreSQL: the server restarting or unreachable,
        ``StoreUnavailable``, or an error it answered with) is said once
        (an ``INFO`` record, in the words :meth:`Ledger.watch_grant` uses:
        ``scopeledger._grantwatch.Unreadable``), the log is looked at again
        every :data:`~scopeledger._grantwatch.FOLLOW_POLL_SECONDS` (0.5 s)
        until it can be read (said too), and the wait goes on; cancel the
        call to stop waiting.

        Raises:
            InvalidHolderName: ``name`` is not a holder name (before
                anything is read).
            TypeError: ``token`` is not an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a
                float) (before anything is read).
            InvalidArgument: ``token`` is below 1 (before anything is read).
            CorruptLedger: a line of the log does not check out (while it
                waits, or while it looks for the event that ended the
                grant); ``NewerFormat`` among them.
        """
        with first_use:
            from ._grantwatch import FOLLOW_POLL_SECONDS, Unreadable

        name = check_name(name)
        token = check_token(token)
        led = self._ledger
        unread = Unreadable(log_where(led), name, token)  # (as a GrantWatch says an outage: one place)

        # Woken by any change of the log, not by a seq past the one folded (as wait() is): a
        # repair that cut the grant may leave the log ending at the same seq.
        watch: Watch | None = None
        try:
            while True:
                try:
                    if watch is None:  # (made again after an outage: its wake-up may have broken with it)
                        watch = Watch.take(led, queue_of(led, tickets_of(led)), None)
                    await self.refresh()
                    if not await self.check(name, token):
                        unread.read()
                        break
                    try:
                        lease = (await self.holder(name)).lease
                    except UnknownHolder:
                        continue
                    unread.read()
                    await _sleep(watch, math.inf if lease is None else min(1.0, lease.ttl_ns / 1e10), None,
                                 self._switch)
                except _UNREACHED as exc:
                    unread.failed(exc)
                    if watch is not None:
                        watch.give_back(led)
                        watch = None
                    await asyncio.sleep(FOLLOW_POLL_SECONDS)
        finally:
            if watch is not None:
                watch.give_back(led)

        def ending() -> Any:
            # The grant's own line first: a repair that cut it left a line of its own at
            # that seq (the grant is gone: None), and an ending found past it would be
            # that of a later grant of the same name.
            events = led.events(since=token, types=("registered", "delegated", "released", "reclaimed"))
            grant = next(events, None)
            holder = grant.data.get("holder") if grant is not None else None
            if grant is None or grant.seq != token or not isinstance(holder, dict) or holder.get("name") != name:
                return None
            for e in events:
                if e.type in ("released", "reclaimed") and e.data["name"] == name:
                    return e
            return None

        while True:
            try:
                end = await self._thread(ending)
            except _UNREACHED as exc:
                unread.failed(exc)
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                continue
            unread.read()
            return end

    async def close(self) -> None:
        """Finish pending clean-ups (releases of cancelled grants: one that
        is being tried again makes its last try now; threads of cancelled
        calls still waiting for the ledger's lock, and their tickets), then
        close the ledger (:meth:`Ledger.close`, in a thread)."""
        self._closed = True
        if self._closing is not None:
            self._closing.set()  # (an undo tried again makes its last try now)
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self._thread(self._ledger.close)


class AsyncHold:
    """``async with`` guard of :meth:`AsyncLedger.hold`; ``allocation`` once
    entered; ``await release()`` releases early (a no-op the second time)."""

    def __init__(self, aledger: AsyncLedger, name: str, rules: Any, pid: int | None, parent: str | None,
                 socket: str | None, parent_token: int | None, wait: float, note: str | None = None,
                 ttl: float | None = None, lease_only: bool = False, advisory: bool = False,
                 on_wait: Callable[[str, Refused | None], object] | None = None) -> None:
        self._aledger = aledger
        self._args = (name, rules, pid, parent, socket, parent_token, wait, note)
        self._ttl, self._lease_only, self._advisory, self._on_wait = ttl, lease_only, advisory, on_wait
        self.allocation: Allocation | None = None
        self._released = False

    async def __aenter__(self) -> Allocation:
        name, rules, pid, parent, socket, parent_token, wait, note = self._args
        if parent is None:
            if parent_token is not None:
                raise TypeError("parent_token is given without parent")
            self.allocation = await self._aledger.register(name, rules, pid, socket=socket, wait=wait, note=note,
                                                           advisory=self._advisory, ttl=self._ttl,
                                                           lease_only=self._lease_only, on_wait=self._on_wait)
        else:
            self.allocation = await self._aledger.delegate(parent, name, rules, pid, socket=socket,
                                                           parent_token=parent_token, wait=wait, note=note,
                                                           advisory=self._advisory, ttl=self._ttl,
                                                           lease_only=self._lease_only, on_wait=self._on_wait)
        return self.allocation

    async def release(self) -> None:
        """Release the allocation now (that grant only)."""
        a = self.allocation
        if a is None or self._released:
            return
        self._released = True
        with contextlib.suppress(UnknownHolder):
            await self._aledger.release(a.name, a.token)

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


def _in_thread(switch_interval: float | None, fn: Callable[..., T], *args: Any,
               **kwargs: Any) -> Callable[[], T]:
    """``fn(*args, **kwargs)`` as a worker thread runs it: with the switch
    interval at most ``switch_interval`` (``None``: as it is)."""
    call = functools.partial(fn, *args, **kwargs)
    if switch_interval is None:
        return call
    return functools.partial(_switch.run, switch_interval, call)


def _what(result: Any) -> str:
    """What a cancelled call's undo undoes, said in a log record."""
    if isinstance(result, Allocation):
        return f"grant {result.name!r} (token {result.token})"
    return repr(result)


#: Events read per thread hop by :meth:`AsyncLedger.events`.
EVENTS_PAGE = 4096


def _next_page(it: Iterator[Any]) -> list[Any]:
    """Up to :data:`EVENTS_PAGE` items of ``it`` (in a worker thread)."""
    return list(itertools.islice(it, EVENTS_PAGE))


def _settle(fut: asyncio.Future[None]) -> None:
    """Resolve ``fut`` once (a reader callback may fire again before it is removed)."""
    if not fut.done():
        fut.set_result(None)


async def _sleep(watch: Watch, timeout: float, mine: int | None = None,
                 switch_interval: float | None = SWITCH_INTERVAL) -> None:
    """Sleep on the loop until something that matters to ticket ``mine``
    may have changed (:meth:`Watch.drain`), at most ``timeout`` (and
    ``watch.period``) seconds; a store's wait (no descriptor to watch) in a
    thread, the switch interval lowered there (``switch_interval``)."""
    loop = asyncio.get_running_loop()
    fds = watch.fds()
    end = time.monotonic() + watch.longest(timeout)
    if not fds and watch.hubbed:  # (a directory's hub wakes it: no descriptor of its own)
        await _sleep_on_hub(watch, end, mine)
        return
    if not fds:
        if watch.ledger is not None and watch.watch_log:  # a store's wait (a server notifies): in a thread
            await asyncio.to_thread(_in_thread(switch_interval, watch.wait, max(0.0, end - time.monotonic()), mine))
            return
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        return
    await _woken(watch, end, mine, lambda wake: [loop.add_reader(fd, wake) for fd in fds],
                 lambda: [loop.remove_reader(fd) for fd in fds])


async def _sleep_on_hub(watch: Watch, end: float, mine: int | None) -> None:
    """:func:`_sleep` for a watch its directory's hub wakes (``_filetickets.HubWatch``):
    the hub's thread wakes the loop (``call_soon_threadsafe``) until ``end``."""
    loop = asyncio.get_running_loop()
    source: Any = watch.source
    await _woken(watch, end, mine, lambda wake: source.set_notify(functools.partial(loop.call_soon_threadsafe, wake)),
                 lambda: source.set_notify(None))


async def _woken(watch: Watch, end: float, mine: int | None, arm: Callable[[Callable[[], None]], object],
                 disarm: Callable[[], object]) -> None:
    """Until ``end`` (``time.monotonic``) or a wake-up that matters to ticket
    ``mine`` (:meth:`Watch.drain`): each round ``arm(wake)`` has ``wake``
    called on the loop when the watch may have changed, ``disarm()`` undoes
    it (also when cancelled)."""
    loop = asyncio.get_running_loop()
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        fut = loop.create_future()

        def wake(fut: asyncio.Future[None] = fut) -> None:
            if not fut.done():
                fut.set_result(None)

        arm(wake)
        try:
            try:
                async with asyncio.timeout(left):
                    await fut
            except TimeoutError:
                return
        finally:
            disarm()
        if watch.drain(mine):
            return


class AsyncSpawned:
    """A child started by :meth:`AsyncLedger.spawn`: ``process`` (a
    ``subprocess.Popen``), ``allocation``, ``returncode``, ``lost``,
    ``lost_event``, ``stopped_for_loss`` (as :class:`~scopeledger.Spawned`'s:
    how the grant was taken away while the child ran, and whether the
    child was sent SIGTERM for it); ``await wait(note=...)`` waits on the
    loop (a pidfd) and releases the grant with the exit status; ``await
    release(...)`` tries a release again."""

    def __init__(self, aledger: AsyncLedger, spawned: Spawned) -> None:
        self._aledger = aledger
        self._spawned = spawned
        self.process = spawned.process
        self.allocation = spawned.allocation

    @property
    def pid(self) -> int:
        return self._spawned.pid

    @property
    def returncode(self) -> int | None:
        return self._spawned.returncode

    @property
    def lost(self) -> str | None:
        """:attr:`Spawned.lost <scopeledger.Spawned.lost>`: ``None``, or how
        the grant was taken away, ``str``."""
        return self._spawned.lost

    @property
    def lost_event(self) -> Any:
        """:attr:`Spawned.lost_event <scopeledger.Spawned.lost_event>`."""
        return self._spawned.lost_event

    @property
    def stopped_for_loss(self) -> bool:
        """Whether the child was sent SIGTERM because its grant was taken
        away (``on_lost="term"``)."""
        return self._spawned.stopped_for_loss

    async def wait(self, *, note: str | None = None) -> int:
        """Wait for the child's exit without blocking the loop, release its
        grant with the exit status (and ``note``); its returncode, whatever
        happened to the grant (:attr:`lost` says whether it was taken away:
        :meth:`Spawned.wait <scopeledger.Spawned.wait>`).

        Raises:
            TypeError, ValueError: ``note`` as :meth:`Ledger.release`
                (checked before waiting).
            LedgerError: the release could not be recorded (the child is
                reaped, its exit status kept): as :meth:`Spawned.release
                <scopeledger.Spawned.release>`; :meth:`release` tries again."""
        note = check_note(note)
        # (Its exit is waited for on the loop without reaping it: Spawned.wait, in a
        # thread, then learns the status at once, records the release, then reaps.)
        if self.process.returncode is None:
            try:
                fd = os.pidfd_open(self.process.pid)
            except OSError:
                fd = -1
            try:
                if fd >= 0:
                    loop = asyncio.get_running_loop()
                    fut = loop.create_future()
                    loop.add_reader(fd, _settle, fut)  # (readable once it exited: a zombie, or reaped)
                    try:
                        await fut
                    finally:
                        loop.remove_reader(fd)
                else:
                    while self.process.poll() is None:
                        await asyncio.sleep(0.05)
            finally:
                if fd >= 0:
                    os.close(fd)
        return await self._aledger._thread(functools.partial(self._spawned.wait, note=note))

    async def release(self, *, note: str | None = None) -> None:
        """:meth:`Spawned.release <scopeledger.Spawned.release>`, in a
        thread (it completes even if this call is cancelled): release now,
        or try again a release that failed (the exit status kept).

        Raises:
            as :meth:`Spawned.release <scopeledger.Spawned.release>`
            (``TypeError``/``ValueError`` for ``note``; ``StoreUnavailable``,
            ``InDoubt``, ``LockTimeout``, ``LedgerIOError``, ``LedgerError``
            when the release was not recorded).
        """
        await self._aledger._thread(functools.partial(self._spawned.release, note=note))

    def __repr__(self) -> str:
        return f"<AsyncSpawned {self.allocation.name!r} pid={self.pid} token={self.allocation.token}>"


async def _spawn(aledger: AsyncLedger, name: str, argv: Sequence[str], rules: Any, *, parent: str | None = None,
                 parent_token: int | None = None, wait: float = 0, env: Any = None, note: str | None = None,
                 advisory: bool = False, ttl: float | None = None, lease_only: bool = False,
                 on_lost: Any = "term", **popen: Any) -> AsyncSpawned:
    with first_use:
        from . import _spawn as sp

    sp.check_spawn_args(argv, popen, parent, parent_token, env)
    sp.check_on_lost(on_lost)
    if parent is None:
        alloc = await aledger.register(name, rules, wait=wait, note=note, advisory=advisory, ttl=ttl,
                                       lease_only=lease_only)
    else:
        alloc = await aledger.delegate(parent, name, rules, parent_token=parent_token, wait=wait, note=note,
                                       advisory=advisory, ttl=ttl, lease_only=lease_only)

    def undo(spawned: Any) -> None:  # cancelled while it started: stop it, release with a note
        spawned.process.kill()
        spawned.wait(note="spawn was cancelled; the child was killed")

    spawned = await aledger._thread(sp.start, aledger.ledger, alloc, argv, env, popen, undo=undo)
    result = AsyncSpawned(aledger, spawned)
    spawned.on_lost, spawned.subject = on_lost, result  # (a callable on_lost is given the AsyncSpawned)
    if on_lost is not None:
        spawned.watch_for_loss()  # (a thread of its own, as the renewer's: the loop is not involved)
    if ttl is not None:
        spawned.keep_lease(ttl)  # (a thread of its own: the loop is not involved)
    return result


class AsyncAdopted:
    """A grant taken back by :meth:`AsyncLedger.adopt`: as
    :class:`~scopeledger.Adopted` (``adopted``, the object underneath;
    ``allocation``, ``rebound``, ``found_gone``, ``pid``, ``returncode``), with ``await
    wait(...)`` and ``await release(...)`` that never block the loop."""

    def __init__(self, aledger: AsyncLedger, adopted: Adopted) -> None:
        self._aledger = aledger
        self.adopted = adopted
        self.allocation = adopted.allocation
        self.rebound = adopted.rebound
        self.found_gone = adopted.found_gone

    @property
    def pid(self) -> int:
        """The pid the grant is bound to."""
        return self.adopted.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once :meth:`wait` saw the process exit as its
        parent; else ``None`` (see :class:`~scopeledger.Adopted`)."""
        return self.adopted.returncode

    async def wait(self, timeout: float | None = None, *, note: str | None = None) -> int | None:
        """:meth:`Adopted.wait <scopeledger.Adopted.wait>` on the loop: its
        pidfd watched with ``loop.add_reader``, each probe and the release
        in a thread. Once the process is gone and the grant released, its
        exit status (``int``, ``-N``: signal N) when this process is its
        parent, else ``None`` (ended, exit status unknown). Cancelled, it
        releases nothing (a release already under way completes).

        Args:
            timeout: seconds (a real number, 0 to 1e9), ``None`` for ever.

        Raises:
            subprocess.TimeoutExpired, RuntimeError, ValueError, TypeError:
                as :meth:`Adopted.wait <scopeledger.Adopted.wait>` (not
                proven gone within ``timeout``, nothing released; the grant
                is rebound; a bad ``timeout`` or ``note``).
        """
        with first_use:
            from . import _spawn as sp

        timeout = check_timeout("timeout", timeout)
        note = check_note(note)
        ad = self.adopted
        if ad.found_gone:
            return None  # (released by adopt: ended, exit status unknown)
        if ad.rebound:
            raise ad.rebound_error()
        a = ad.allocation
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = sp.open_pidfd(a.pid)
        child = -1  # as in Adopted.wait: our own child's pidfd, reaped after the release
        vouched = False  # as in Adopted.wait: the pidfd is surely the holder's process
        try:
            while True:
                verdict = (await self._aledger.liveness([a]))[a.name]
                vouched = vouched or (fd >= 0 and sp.vouches_for(verdict, a))
                if verdict.dead:
                    if vouched and fd >= 0 and ad.returncode is None:
                        ad.returncode = sp.exit_status(fd, reap=False)
                        if ad.returncode is not None:
                            child, fd = fd, -1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ad.timed_out(timeout)
                step = sp.ADOPT_POLL_SECONDS if remaining is None else min(remaining, sp.ADOPT_POLL_SECONDS)
                if fd >= 0:
                    if await _readable(fd, step):  # exited: from now on the probe alone (Adopted.wait)
                        if vouched and ad.returncode is None:
                            ad.returncode = sp.exit_status(fd, reap=False)
                        if ad.returncode is not None and child < 0:
                            child, fd = fd, -1  # (our child: a zombie until reaped, after the release)
                        else:
                            os.close(fd)
                            fd = -1
                else:
                    await asyncio.sleep(step)
            await self.release(note=ad.exit_note(note))
        finally:
            if fd >= 0:
                os.close(fd)
            if child >= 0:
                sp.reap(child)
                os.close(child)
        return ad.returncode

    async def release(self, *, note: str | None = None) -> None:
        """:meth:`Adopted.release <scopeledger.Adopted.release>`, in a
        thread (it completes even if this call is cancelled)."""
        await self._aledger._thread(functools.partial(self.adopted.release, note=note))

    def __repr__(self) -> str:
        return f"<AsyncAdopted {self.adopted!r}>"


async def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` turns readable within ``timeout`` seconds, waited
    for on the loop."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_reader(fd, _settle, fut)
    try:
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            return False
        return True
    finally:
        loop.remove_reader(fd)


async def _adopt(aledger: AsyncLedger, name: str, token: int) -> AsyncAdopted:
    with first_use:
        from . import _spawn as sp

    return AsyncAdopted(aledger, await aledger._thread(sp.adopt, aledger.ledger, name, token))
