"""``check`` (would this request be granted now?) and ``run`` (hold a scope while a
command runs, like flock(1)): ``check`` asks the ledger as it decides
(:meth:`scopeledger.Ledger.decide`); ``run`` registers (or delegates), waiting
through the library's waiting (``wait=``: first come, first served with every
other waiter, woken by the ledger's changes), forks a gated child, binds the
grant to it, forwards signals and releases when it ends.
"""

from __future__ import annotations

import errno as errno_mod
import math
import os
import re
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

import click

from .errors import (EXIT_CANNOT_EXEC, EXIT_INTERNAL, EXIT_NO_COMMAND, EXIT_NOT_FOUND, EXIT_OK, EXIT_OS,
                     EXIT_REFUSED, CliError,
                     error_json, exit_code_for, json_text, message_of, report)
from .params import (ENV_HOLDER, ENV_TOKEN, SECONDS, TTL, Command, Env, Integer, check_enclosing, common,
                     display_root, holder_name_param, note_param, parent_from_env, pass_env, relative_option,
                     request_from, rule_options)

if TYPE_CHECKING:
    from scopeledger import Ledger, ScopeRule

#: How long ``ledger run`` waits for the lock to release its scope once the
#: command has ended, when ``--lock-timeout`` is shorter (seconds).
RELEASE_WAIT_SECONDS = 10.0

#: Seconds COMMAND may run before the wrapper starts watching its grant for
#: a loss (``Runner.watch_unless_quick``): a loss is acted on at most this
#: much later, and a COMMAND that ends sooner costs no watch.
WATCH_AFTER = 0.05

#: Signals ``ledger run`` passes on to its command.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)

#: A waiting 'run' that drops its folded state hands the freed memory back to the OS (a
#: collection and ``malloc_trim``: several ms of CPU, most of it the collection, whatever
#: the state's size) only when the state held at least this many live holders (about
#: 2 kB each: below it there is little to hand back, issue 18).
GIVE_BACK_HOLDERS = 1000

#: Binding a grant to COMMAND (``attach``) when the server could not be reached or the
#: connection broke with nothing recorded is tried again until the wait's deadline: at
#: once, then after this pause (seconds), doubling up to :data:`BIND_LONGEST_PAUSE`.
BIND_FIRST_PAUSE = 0.05
BIND_LONGEST_PAUSE = 1.0

# -- check --------------------------------------------------------------------------------


@click.command(cls=Command)
@common
@rule_options
@click.option("--name", metavar="NAME", callback=holder_name_param,
              help="Also check that the name is free.")
@click.option("--parent", metavar="NAME", callback=holder_name_param,
              help=f"Ask as a delegation from NAME (default: ${ENV_HOLDER}, when set).")
@click.option("--top-level", is_flag=True, help=f"Ask at top level, ignoring ${ENV_HOLDER}.")
@click.option("--each", is_flag=True,
              help="Decide each rule alone: one answer (line, or JSON object) per rule; exit 0 only "
                   "if all would be granted.")
@relative_option
@pass_env
def check(env: Env, writes: tuple[str, ...], reads: tuple[str, ...], xreads: tuple[str, ...],
          root: str | None, manifest: str | None, name: str | None, parent: str | None, top_level: bool,
          each: bool, relative_to: str | None) -> int:
    """Would this request be granted now? Exit 0 if yes, 1 if not (naming the
    owner chain). Holders in the way whose process is dead do not count: the
    request itself would reclaim them. Records nothing. Inside 'ledger run'
    it asks as a delegation from SCOPELEDGER_HOLDER, and a stale
    SCOPELEDGER_TOKEN is an error (exit 6), as for a nested 'ledger run'."""
    name, rules = request_from(writes, reads, root, manifest, name, xreads)
    parent, token = parent_from_env(parent, top_level)
    with env.open(readonly=True) as ledger:
        check_enclosing(ledger, parent, token)
        # A parent that is not live raises UnknownHolder: an error (as 'run'
        # reports it), not a refusal of the request.
        if each:
            decisions = ledger.decide_each(name, rules, parent=parent, parent_token=token)
        else:
            decisions = [ledger.decide(name, rules, parent=parent, parent_token=token)]
        for decision in decisions:
            _answer(env, decision, name, parent, relative_to)
        return EXIT_OK if all(d.granted for d in decisions) else EXIT_REFUSED


def _answer(env: Env, decision: Any, name: str | None, parent: str | None, relative_to: str | None) -> None:
    """One answer of ``check``: a JSON object, or its lines."""
    rules = list(decision.rules)  # shown as the ledger would store them
    err = decision.refusal
    reclaimed = [(r.name, r.reason) for r in decision.reclaimed]
    from .render import rules_text

    result: dict[str, Any] = {
        "granted": err is None,
        "request": {"name": name, "parent": parent, "rules": [r.to_json() for r in rules]},
        "would_reclaim": [{"name": n, "reason": r} for n, r in reclaimed],
        "conflict": None,
    }
    if err is not None:
        result["conflict"] = error_json(err, exit_code_for(err))["error"]
    if env.json:
        env.emit_json(result)
        return
    from .render import REASONS, rel_message, safe

    shown = display_root(relative_to)
    if reclaimed:
        for n, r in reclaimed:
            env.out.print(safe(f"'{n}' stands in the way but is dead ({REASONS.get(r, r)}): "
                               "it would be reclaimed first"), markup=False, soft_wrap=True)
    if err is None:
        where = f" from '{parent}'" if parent else ""
        env.out.print(safe(f"granted: {rules_text(rules, shown)}{where} would be granted now"),
                      markup=False, soft_wrap=True)
    else:
        env.out.print(safe(f"refused: {rel_message(message_of(err), shown)}"),
                      markup=False, soft_wrap=True)


# -- run -------------------------------------------------------------------------------------


class _Interrupted(BaseException):
    """A signal that ends a waiting or starting ``run`` (raised by its
    handler wherever the main thread is). A ``BaseException``, as
    ``KeyboardInterrupt`` is: the library catches ``Exception`` in places
    (a probe that fails counts as "unknown"; a speculative change that
    fails is decided again under the lock), where an ``Exception`` raised
    by the handler was swallowed, and the wrapper waited on and ran its
    command (1 of 30 signals in a fresh tester's run)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _default_name(command: Sequence[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._@:+-]", "-", os.path.basename(command[0]))[:40].lstrip("._@:+-")
    return f"{base or 'run'}-{os.getpid()}"


def _foreground_group() -> bool:
    """Whether this process is in the terminal's foreground process group
    (then the terminal already sends Ctrl-C and Ctrl-\\ to the child too)."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def _give_memory_back() -> None:
    """Collect what was freed and hand free heap pages back to the OS
    (glibc's ``malloc_trim``; elsewhere only the collection)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def command_param(_ctx: click.Context, _p: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """A click callback for ``run``'s COMMAND: a usage error (exit 2), before
    any ledger is opened, for a program name the child could never run.

    Raises:
        click.BadParameter: the program (COMMAND's first word) is the empty
            string (``os.execvpe`` refuses it with a ValueError, which the
            child could only report as a bare exit 127, after the grant).
    """
    if value and value[0] == "":
        raise click.BadParameter("invalid program name '': it is empty (the command to run comes "
                                 "after '--')")
    return value


class _Runner:
    """``ledger run``: acquire, fork a gated child, bind the allocation to it,
    let it exec, forward signals, wait, release."""

    def __init__(self, env: Env, ledger: Ledger, name: str, rules: list[ScopeRule],
                 parent: str | None, command: Sequence[str], quiet: bool,
                 parent_token: int | None = None, ttl: float | None = None) -> None:
        self.env = env
        self.ttl = ttl
        self.renewer: Any = None
        self.ledger = ledger
        self.name = name
        self.rules = rules
        self.parent = parent
        self.parent_token = parent_token
        self.command = list(command)
        self.quiet = quiet
        self.me = os.getpid()
        self.alloc: Any = None
        self.child: int | None = None
        self.waited = False
        self.fg = _foreground_group()
        self.old_handlers: dict[int, Any] = {}
        self.advisory = False  # --advisory: granted despite conflicts, with a warning naming them
        self.note: str | None = None  # --note: the grant's note (why the scope is asked for)
        #: How COMMAND ended, once waited for (``Popen.returncode``'s form: -N for signal N),
        #: recorded with the release (``exit_code`` / ``exit_signal``).
        self.returncode: int | None = None
        # The gate: COMMAND starts once it is open (``started``). The session's thread
        # (session_lost) and the main thread (opening it) decide under ``_gate_lock``
        # whether a lost session stops COMMAND (started) or keeps it from starting.
        self._gate_lock = threading.Lock()
        self.started = False
        self.lost_before_start: Any = None  # the SessionLost noted while COMMAND was at its gate
        self._lost_news = False  # one was noted since the last look at the grant
        self.deadline = math.inf  # (time.monotonic()) until which binding the grant is tried again
        self._pausing = False  # between two tries of binding it (bind): a forwarded signal ends run
        #: What to do when the grant is taken away while COMMAND runs (--on-lost): "term" sends
        #: COMMAND SIGTERM, "warn" lets it run on; either way it is said at once (:meth:`lost`).
        self.on_lost = "term"
        self.watch: Any = None  # the GrantWatch following the log past the grant while COMMAND runs
        # The log said the grant ended, or its line is gone (the watch, a renewal): the
        # release is not asked for. By (name, token), it could release another grant: after
        # a repair cut this one's line, a newer grant of the name may have its seq.
        self.gone = False
        self.pidfd = -1  # COMMAND's process (a pidfd): signalled by the loss's thread, never a reused pid
        #: Why the grant was taken away while COMMAND ran, once said (under ``_gate_lock``).
        self.lost_why: str | None = None
        #: Why, when the watch or a renewal learnt the loss only as COMMAND ended (not said then:
        #: the release says it, as one it finds itself).
        self.late_why: str | None = None
        self.stopped_for_loss = False  # COMMAND was sent SIGTERM for it (--on-lost term)
        self._ending = False  # COMMAND has ended (or run is ending): a loss is not said any more
        #: The ledger's seq read before the request was made (:func:`_open_within`): a grant
        #: of this request has a later token (:meth:`_drop_unseen_grant`).
        self.since = 0
        #: ``-w``'s SECONDS, as given (what a timeout says it waited; the library's wait is what
        #: reaching the ledger left of it).
        self.wait_given: float | None = None

    # signals
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if os.getpid() != self.me:
            return
        if self.child is None or self._pausing:
            # (once the child is forked, the forwarded signals are blocked until
            # its gate opens, except while binding the grant pauses between
            # tries: a signal ends run there)
            raise _Interrupted(signum)
        if signum in (signal.SIGINT, signal.SIGQUIT) and self.fg:
            return  # the terminal sent it to the child's process group already
        try:
            os.kill(self.child, signum)
        except ProcessLookupError:
            pass

    def install(self) -> None:
        for s in FORWARDED_SIGNALS:
            self.old_handlers[s] = signal.signal(s, self._on_signal)

    def restore(self) -> None:
        for s, h in self.old_handlers.items():
            signal.signal(s, h)

    @staticmethod
    def block() -> Any:
        return signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)

    def say(self, message: str) -> None:
        """A notice on stderr (nothing with ``-q``): see :meth:`tell`."""
        if not self.quiet:
            self.tell("notice", message)

    def tell(self, kind: str, message: str) -> None:
        """``message`` on stderr: :func:`_tell`."""
        _tell(self.env, kind, message)

    # acquisition
    def _try(self) -> None:
        """Ask once (``-n``), with the forwarded signals blocked: a signal
        then ends ``run`` only once the grant (or the refusal) is known."""
        old = self.block()
        try:
            if self.parent is None:
                self.alloc = self.ledger.register(self.name, self.rules, advisory=self.advisory, ttl=self.ttl,
                                                  note=self.note)
            else:
                self.alloc = self.ledger.delegate(self.parent, self.name, self.rules,
                                                  parent_token=self.parent_token, advisory=self.advisory,
                                                  ttl=self.ttl, note=self.note)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if self.advisory:
            self._warn_conflicts()

    def _waiting(self, reason: str, refusal: Any) -> None:
        """The library's ``on_wait``: the notice, once the request waits."""
        self.say(f"Blocking waiting for the scope: {_waiting_words(reason, refusal)}")

    def _try_waiting(self, wait: float) -> None:
        """Ask, waiting up to ``wait`` seconds (``math.inf``: for ever)
        through the library's waiting: in the ledger's queue of waiters,
        first come first served with every other waiter (library or
        ``run``), woken by the ledger's changes, riding out a server that
        cannot be reached until the deadline. The forwarded signals are
        not blocked (they must end a wait): one that arrives raises
        :class:`_Interrupted` in the library's call, which gives its place
        in the queue back and withdraws a grant it recorded but had not
        returned; :meth:`_drop_unseen_grant` covers the last step, from the
        library's return to ``self.alloc``."""
        since = self.since
        logger = level = None
        if self.quiet:  # no notice while waiting: the library's (a waiter that lost its place) neither
            import logging

            logger = logging.getLogger("scopeledger")
            level = logger.level
            logger.setLevel(logging.WARNING)
        try:
            if self.parent is None:
                self.alloc = self.ledger.register(self.name, self.rules, advisory=self.advisory, ttl=self.ttl,
                                                  note=self.note, wait=wait, on_wait=self._waiting)
            else:
                self.alloc = self.ledger.delegate(self.parent, self.name, self.rules,
                                                  parent_token=self.parent_token, advisory=self.advisory,
                                                  ttl=self.ttl, note=self.note, wait=wait, on_wait=self._waiting)
        except _Interrupted:
            if self.alloc is None:
                self._drop_unseen_grant(since)
            raise
        finally:
            if logger is not None and level is not None:
                logger.setLevel(level)
        if self.advisory:
            self._warn_conflicts()

    def _drop_unseen_grant(self, since: int) -> None:
        """After a signal ended the wait: release a grant of this request
        that the signal kept from reaching ``self.alloc`` (live under this
        name, bound to this wrapper, granted after seq ``since``), with the
        signals blocked. Raises nothing (what cannot be released is bound
        to this wrapper, which is ending: reclaimable)."""
        from scopeledger import LedgerError

        old = self.block()
        try:
            mine = self.ledger.holder(self.name)
            if mine.pid == self.me and mine.token > since:
                self.ledger.release(mine.name, token=mine.token)
        except LedgerError:
            pass
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _warn_conflicts(self) -> None:
        """One warning naming each conflict the advisory grant met, as its
        event records them (nothing when it met none)."""
        from .render import chain_text

        token = self.alloc.token
        for ev in self.ledger.events(since=token, until=token):
            for chain, theirs, mine in ev.data["holder"].get("advisory", ()):
                self.tell("warning", f"advisory grant of '{self.name}': {mine[1]} {mine[0]} conflicts with "
                                     f"{chain_text(chain)} holding {theirs[1]} {theirs[0]}")

    def acquire(self, wait: float | None) -> None:
        """``wait``: 0 fail at once, None for ever, else seconds.

        Only a conflict with another holder is waited for (the library's
        ``wait=``: a :class:`~scopeledger.ScopeConflict`, or a
        :class:`~scopeledger.DelegationError` naming a sibling); any other
        refusal fails at once. A waiting request records its first refusal
        only (none when it stands behind an earlier waiter), and its grant.

        Raises:
            Refused: refused, and it cannot clear by waiting, or ``wait`` is 0.
            CliError: ``wait`` seconds ran out (exit 1, kind ``refused``).
            UnknownHolder: the parent is gone, or granted again (exit 6).
            StoreUnavailable: (PostgreSQL) the server could not be reached,
                and still could not when the deadline passed (exit 7).
        """
        if wait == 0:
            self._try()
            return
        from scopeledger import WaitTimeout

        try:
            self._try_waiting(math.inf if wait is None else wait)
        except WaitTimeout as exc:
            why = _waiting_words(exc.reason, exc.refusal)
            if self.wait_given is not None:
                exc.waited = self.wait_given  # (its --json document's "waited")
            raise CliError(f"timed out after {exc.waited:g}s waiting for the scope: {why}", EXIT_REFUSED,
                           "refused") from exc

    def _holds_many(self) -> bool:
        """Whether the folded state has :data:`GIVE_BACK_HOLDERS` live holders or more
        (when that cannot be read: ``True``, so that the memory is handed back as before)."""
        from scopeledger import LedgerError

        try:
            return len(self.ledger.holders()) >= GIVE_BACK_HOLDERS
        except (LedgerError, OSError):
            return True

    # the child
    def spawn(self) -> tuple[int, int]:
        """Fork a child that waits at a gate; returns (gate write end, exec
        error read end)."""
        env = dict(os.environ)
        # The ledger's directory, or its URL without the password (a password
        # the URL carried goes in PGPASSWORD, unless that is set already).
        env.update(self.ledger.child_environment(env))
        env[ENV_HOLDER] = self.name
        env[ENV_TOKEN] = str(self.alloc.token)
        gate_r, gate_w = os.pipe()
        err_r, err_w = os.pipe()
        # On PostgreSQL other hosts judge the grant by this process's client
        # session, which ends with it: COMMAND must not outlive it, so the
        # kernel kills COMMAND when this wrapper dies (even by SIGKILL).
        die_with_us = _parent_death_signal() if self.env.on_server else None
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # (its reader gone: what it held is not the child's to write again)
        pid = os.fork()
        if pid == 0:  # the child: no Python-level cleanup, ever
            try:
                if die_with_us is not None:
                    die_with_us()
                    if os.getppid() != self.me:
                        os._exit(125)  # the wrapper died before the signal was armed: do not run
                for s in FORWARDED_SIGNALS:
                    signal.signal(s, signal.SIG_DFL)
                for s in (signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(s, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                os.close(gate_w)
                os.close(err_r)
                if os.read(gate_r, 1) != b"g":
                    os._exit(125)  # the wrapper died or gave up: do not run
                os.close(gate_r)
                os.execvpe(self.command[0], self.command, env)
            except OSError as exc:
                try:
                    os.write(err_w, str(exc.errno or 0).encode())
                except OSError:
                    pass
            except BaseException:  # noqa: BLE001
                pass
            os._exit(EXIT_NO_COMMAND)
        self.child = pid
        try:
            self.pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self.pidfd = -1  # (no pidfds: the pid is signalled, and only before it is reaped)
        os.close(gate_r)
        os.close(err_w)
        return gate_w, err_r

    def wait_child(self) -> int:
        """Wait for the child to exit (signals keep being forwarded
        meanwhile: PEP 475 retries the wait after each handler); its exit
        code, or 128+N when signal N killed it. Where the kernel allows it
        (``waitid`` with ``WNOWAIT``) the child is *not* reaped here: it
        stays a zombie until :meth:`reap`, after the release is recorded,
        so that a waiter woken by its exit finds a zombie whose parent (this
        wrapper) lives, and stands back for the release
        (``scopeledger._wait``, "Standing back for an exited holder's
        parent"), and one that reclaims it anyway records its exit status.
        Elsewhere it is reaped here, as before."""
        assert self.child is not None
        if self.returncode is not None:
            return 128 - self.returncode if self.returncode < 0 else self.returncode
        nowait = getattr(os, "WNOWAIT", None)
        try:
            if nowait is not None and hasattr(os, "waitid"):
                info = os.waitid(os.P_PID, self.child, os.WEXITED | nowait)
                code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            else:
                _pid, status = os.waitpid(self.child, 0)
                self.waited = True
                code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.waited = True
            return EXIT_INTERNAL
        self.returncode = code  # (-N: killed by signal N; recorded with the release)
        return 128 - code if code < 0 else code

    def reap(self) -> None:
        """Reap the child once it has exited (:meth:`wait_child`: after the
        release is recorded). Idempotent."""
        if self.child is not None and not self.waited:
            try:
                os.waitpid(self.child, 0)
            except ChildProcessError:
                pass
            self.waited = True

    def session_lost(self, err: Any) -> None:
        """The ledger's client session on the server was lost (its lease
        lapsed: this wrapper was stopped or cut off): other hosts may grant
        the scope from now on, so COMMAND is told to stop (SIGTERM), with a
        warning. Called from the session's own thread.

        While COMMAND is still at its gate, it is not stopped (it has not
        run): the loss is noted, and the main thread, opening the gate,
        starts COMMAND only if the grant's session (the one ``attach``
        recorded, perhaps a new one) still vouches for it (:meth:`bind`)."""
        with self._gate_lock:
            child = self.child
            if child is None or self.waited:
                return
            if not self.started:
                self.lost_before_start = err
                self._lost_news = True
                return
        self.lost(f"the ledger's session on the server was lost ({message_of(err)}): other hosts may be "
                  "granted its scope")

    def lost(self, why: str) -> None:
        """The grant was taken away while COMMAND runs (``why``: how, said
        at once): the one policy of every way it is taken (a forced
        release or a reclaim the log records, :meth:`grant_ended`; a lapsed
        lease its renewal found, :meth:`lease_lost`; a lost client session,
        :meth:`session_lost`). With ``--on-lost term`` COMMAND is sent
        SIGTERM (and ``run`` exits 6 once it ends), with ``warn`` it runs
        on. Said and acted on once, from whichever thread learns first;
        once COMMAND has ended, nothing is done, and the release says it
        (``late_why``: learnt by the watch or a renewal as COMMAND ended;
        else what the release finds, :func:`_taken_away`). Raises nothing."""
        with self._gate_lock:
            if self.lost_why is not None or not self.started or self.child is None:
                return
            if self.waited or self._ending or self._command_ended():
                if self.late_why is None:
                    self.late_why = why  # (COMMAND has ended: the release says it, :meth:`release`)
                return
            self.lost_why = why
            term = self.on_lost == "term"
            if term:
                self.stopped_for_loss = True
                self._signal_command(signal.SIGTERM)
        what = "sending COMMAND SIGTERM" if term else "COMMAND runs on without it (--on-lost warn)"
        self.tell("warning", f"'{self.name}' lost its scope while COMMAND runs: {why}; {what}")

    def grant_ended(self, event: Any) -> None:
        """The :class:`~scopeledger.GrantWatch`'s ``on_lost``: the log says
        the grant ended (``event``; ``None``: its line is gone). Nothing is
        released for it afterwards (:attr:`gone`)."""
        self.gone = True
        self.lost(_ending_words(event, self.alloc.token if self.alloc is not None else 0))

    def lease_lost(self, exc: BaseException) -> None:
        """The renewer's ``on_lost``: a renewal found the grant gone (its
        lease ran out: this renewal recorded its reclaim, or another
        process had). Nothing is released for it afterwards (:attr:`gone`)."""
        self.gone = True
        alloc = self.alloc
        # (what the log says, as the watch says it, when it holds the reclaim: who, and why)
        ending = _ending_in_log(self.ledger, alloc) if alloc is not None else None
        if ending is not None:
            self.lost(_ending_words(None if ending is _GONE else ending, alloc.token))
        else:
            self.lost(f"its lease is lost: {message_of(exc)}")

    def _command_ended(self) -> bool:
        """Whether COMMAND's process has exited (not yet reaped, or reaped:
        its pidfd readable); ``False`` when that cannot be told."""
        if self.pidfd < 0:
            return False
        return _readable(self.pidfd, 0)

    def _signal_command(self, signum: int) -> None:
        """Send COMMAND's process ``signum`` through its pidfd (never a
        process that reused its pid), else by pid while it is not reaped
        (under ``_gate_lock``). Raises nothing."""
        try:
            if self.pidfd >= 0:
                signal.pidfd_send_signal(self.pidfd, signum)
            elif self.child is not None and not self.waited:
                os.kill(self.child, signum)
        except OSError:
            pass

    def release(self) -> None:
        """Release the grant, once (a second call does nothing), with the
        forwarded signals blocked; waits for the lock at least
        :data:`RELEASE_WAIT_SECONDS` seconds. Raises nothing: a grant that is
        gone already is fine, and one that cannot be released is said in a
        warning (its command has exited, so it is reclaimable)."""
        from scopeledger import LedgerError, LockTimeout, UnknownHolder

        if self.renewer is not None:
            self.renewer.stop()
            self.renewer = None
        if self.alloc is None:
            return
        alloc, self.alloc = self.alloc, None
        if self.gone:  # (said when it was learnt, unless COMMAND had ended by then: said now)
            if self.late_why is not None and self.lost_why is None and self.started:
                self.lost_why = self.late_why
                self.tell("warning", f"'{alloc.name}' was no longer held when its command ended: {self.late_why}")
            return
        old = self.block()
        ledger = self.ledger
        try:
            how = self.returncode if self.started else None  # (COMMAND never ran: nothing to record)
            try:
                ledger.release(alloc.name, token=alloc.token, returncode=how)
            except LockTimeout:
                # --lock-timeout bounds waiting to take a scope; the command
                # has ended, and its scope should go back now: wait longer.
                short = ledger.timeout
                ledger.timeout = max(short or 0.0, RELEASE_WAIT_SECONDS)
                try:
                    ledger.release(alloc.name, token=alloc.token, returncode=how)
                finally:
                    ledger.timeout = short
        except UnknownHolder:
            # (a reclaim after the command's exit: nothing to say; a loss said while it ran: said)
            why = _taken_away(ledger, alloc) if self.lost_why is None else None
            if why is not None:
                when = "when its command ended" if self.started else "before its command started"
                if self.started:
                    self.lost_why = why  # (--json's last document: "lost", as for a loss said at once)
                self.tell("warning", f"'{alloc.name}' was no longer held {when}: {why}")
        except LedgerError as exc:
            ended = "has exited" if self.started else "did not run"
            self.tell("warning", f"could not release '{alloc.name}': {message_of(exc)}; its command "
                                 f"{ended}, so the next request that needs its scope reclaims it")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def bind(self, token: int, gate_w: int, unblocked: Any) -> None:
        """Bind the grant ``token`` to the child waiting at its gate
        (``attach``, with the token: had the name been released and granted
        again meanwhile, attaching by name alone would take over that newer
        grant), then open the gate (COMMAND starts). Called with the
        forwarded signals blocked (``unblocked``: the mask to pause with).

        On PostgreSQL the gate opens only while the grant is live and
        vouched for by the client session the attach recorded
        (``Ledger.check``): a session lost before that (:meth:`session_lost`
        does not stop a child at its gate) is replaced by a new one at the
        attach, and one lost after it keeps COMMAND from running. A loss
        noted while the grant was looked at is looked at again.

        A step that failed because the server could not be reached, or the
        connection broke where nothing was recorded
        (:class:`~scopeledger.StoreUnavailable`, ``NotRecorded`` among them;
        not a refused login, SQLSTATE class 28) is tried again, on a new
        connection, until the wait's deadline (``-w``; for ever without
        ``-w``, never with ``-n``), pausing between tries
        (:data:`BIND_FIRST_PAUSE` doubling to :data:`BIND_LONGEST_PAUSE`)
        with the forwarded signals unblocked: one that arrives ends ``run``
        (:class:`_Interrupted`). The attach is recorded once: tried again
        only after it raised ``StoreUnavailable`` (nothing recorded; an
        append whose outcome is unknown raises ``InDoubt``, which is not
        tried again) and never once it returned.

        Raises:
            CliError: the child died at its gate (exit 128+N when signal N
                killed it); the grant is not held for certain (exit 7: the
                session vouching for it was lost) or was released or
                reclaimed (exit 6). COMMAND did not run.
            LedgerError: from ``attach`` or ``check`` (``StoreUnavailable``
                once the deadline passed, ``UnknownHolder`` when the grant
                is gone, ...).
        """
        from scopeledger import StoreUnavailable

        attached = False
        pause = BIND_FIRST_PAUSE
        said = False
        while True:
            try:
                if not attached:
                    self.ledger.attach(self.name, self.child, token=token)
                    attached = True
                with self._gate_lock:
                    self._lost_news = False
                # (on PostgreSQL: the grant live, and its session, which the attach recorded, not lost;
                # a session's loss is known here as soon as the library's warning says it)
                held = not self.env.on_server or self.ledger.check(self.name, token)
            except StoreUnavailable as exc:
                if not _can_try_again(exc) or time.monotonic() >= self.deadline:
                    raise
                if not said:
                    left = self.deadline - time.monotonic()
                    self.tell("warning", f"could not bind '{self.name}' to COMMAND, which waits at its gate "
                                         f"({message_of(exc)}): trying again"
                                         + (f" for up to {left:.3g}s (the wait's deadline)"
                                            if left < math.inf else ""))
                    said = True
                self._pause(min(pause, max(0.0, self.deadline - time.monotonic())), unblocked)
                pause = min(pause * 2, BIND_LONGEST_PAUSE)
                continue
            with self._gate_lock:
                if self._lost_news:
                    continue  # (a session was lost while the grant was looked at: look again)
                if held:
                    self._open_gate(gate_w)
                    return
            raise self._not_held(token)

    def _not_held(self, token: int) -> CliError:
        """The error for a grant that ``check`` found not held for certain
        once bound, before COMMAND started: still live (its session on the
        server was lost, which the library's warning has said: exit 7; or
        its lease ran out), or released or reclaimed meanwhile (exit 6)."""
        from scopeledger import LedgerError, UnknownHolder

        try:
            live = self.ledger.holder(self.name).token == token
        except UnknownHolder:
            live = False
        except LedgerError:
            live = True  # (cannot be read: what check found stands)
        if not live:
            return CliError(f"'{self.name}' (token {token}) was released or reclaimed before COMMAND started: "
                            "COMMAND was not run", EXIT_NOT_FOUND)
        lease = ", or its lease ran out" if self.ttl is not None else ""
        return CliError(f"'{self.name}' was not held for certain when COMMAND was to start (the ledger's client "
                        f"session on the server that vouches for it was lost{lease}): COMMAND was not run", EXIT_OS)

    def _open_gate(self, gate_w: int) -> None:
        """Let the child exec COMMAND (under ``_gate_lock``).

        Raises:
            CliError: the child is gone (the gate's pipe is broken: killed
                at its gate, by a signal someone sent it); reaped here.
        """
        try:
            os.write(gate_w, b"g")
        except OSError as exc:  # EPIPE: nobody reads the gate (its only reader was the child)
            raise self._gone_before_start(exc) from None
        self.started = True

    def _gone_before_start(self, exc: OSError) -> CliError:
        """The error for a child that died at its gate (reaped here): exit
        128+N when signal N killed it, as for COMMAND, else 70 (it exits
        only after the gate opens or closes: a bug)."""
        from .render import signal_name

        self.wait_child()
        code = self.returncode or 0  # (None: it could not be waited for)
        if code < 0:
            return CliError(f"the process that was to run COMMAND (pid {self.child}) was killed by "
                            f"{signal_name(-code)} before COMMAND started: COMMAND was not run", 128 - code)
        return CliError(f"the process that was to run COMMAND (pid {self.child}) ended before COMMAND "
                        f"started ({message_of(exc)}, exit status {code}): COMMAND was not run", EXIT_INTERNAL)

    def _pause(self, seconds: float, unblocked: Any) -> None:
        """Sleep ``seconds`` with the signal mask ``unblocked`` (a forwarded
        signal's handler raises :class:`_Interrupted` here), then block the
        forwarded signals again."""
        self._pausing = True
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
            try:
                time.sleep(seconds)
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        finally:
            self._pausing = False

    def run(self, wait: float | None) -> int:
        """Acquire (``wait``: as :meth:`acquire`), run the command, release;
        returns the command's exit code (128+N when signal N ended it, or
        ended this process before the command started).

        Raises:
            Refused: refused, and it cannot clear by waiting (:func:`waitable`)
                or ``wait`` is 0.
            CliError: ``wait`` seconds ran out (exit 1, kind ``refused``); the
                command cannot be run (exit 126, or 127 when not found); it
                did not start: as :meth:`bind` says.
            LedgerError, OSError: from the ledger (acquiring, attaching).
        """
        gate_w = err_r = -1
        token = None
        try:
            self.install()
            self.deadline = math.inf if wait is None else time.monotonic() + wait
            self.acquire(wait)
            token = self.alloc.token
            old = self.block()
            try:
                gate_w, err_r = self.spawn()
                try:
                    self.bind(token, gate_w, old)
                finally:
                    # Opened: COMMAND runs. Else the child sees EOF and exits without running.
                    os.close(gate_w)
                    gate_w = -1
                # (threads started with the signals blocked: they stay the main thread's)
                if self.ttl is not None:
                    self.renewer = self.ledger.keep_renewed(self.name, token, on_lost=self.lease_lost)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            if self.renewer is None:
                # While the command runs, this process only waits: it keeps no
                # folded state (1 M holders: ~1.8 GB per waiting wrapper); the
                # release folds it again from the newest snapshot. (A lease's
                # renewals need it: kept then.)
                large = self._holds_many()
                self.ledger.unload()
                if large:
                    _give_memory_back()
            data = b""
            while True:
                try:
                    chunk = os.read(err_r, 64)
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    continue
                if not chunk:
                    break
                data += chunk
            os.close(err_r)
            err_r = -1
            if not data:  # (COMMAND runs)
                self.watch_unless_quick(token)
            code = self.wait_child()
            self.stop_watching()
            if data:
                errno_ = int(data or b"0")
                reason = os.strerror(errno_)
                self.release()
                raise CliError(f"cannot run {self.command[0]!r}: {reason}",
                               EXIT_NO_COMMAND if errno_ == errno_mod.ENOENT else EXIT_CANNOT_EXEC)
            return self._outcome(code, token)
        except _Interrupted as exc:
            return 128 + exc.signum
        finally:
            for fd in (gate_w, err_r):
                if fd >= 0:
                    os.close(fd)
            if self.child is not None and not self.waited:
                # A child still at its gate exits at once (EOF); one that runs
                # the command keeps the scope until it ends: never release early.
                # (Released before it is reaped: wait_child.)
                self.wait_child()
            self.stop_watching()
            self.release()
            self.reap()
            if self.pidfd >= 0:
                os.close(self.pidfd)
                self.pidfd = -1
            self.restore()

    def _outcome(self, code: int, token: int) -> int:
        """COMMAND ran and ended with ``code``: release, and return ``code``
        (with ``--json``, its document on stderr first).

        Raises:
            CliError: (exit 6) COMMAND was sent SIGTERM because the grant
                was taken away (``--on-lost term``).
        """
        self.release()
        if self.stopped_for_loss:
            raise self._stopped_error(code)
        if self.env.json:
            try:
                sys.stderr.write(json_text({"name": self.name, "token": token, "parent": self.parent,
                                             "pid": self.child, "exit_code": code,
                                             "lost": self.lost_why}) + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # (stderr's reader gone: the exit status still says how COMMAND ended)
        return code

    def watch_unless_quick(self, token: int) -> None:
        """Start watching the grant (``Ledger.watch_grant``) unless COMMAND
        ends within :data:`WATCH_AFTER` seconds: a short COMMAND does not pay
        for the watch's thread and imports (11 ms of a ``run -- true``,
        176 -> 187 ms, medians of 30 alternated runs). Nothing is missed
        meanwhile: the watch reads the log from the grant's line on, and a
        loss that a COMMAND ended within that time is said at the release
        (:func:`_taken_away`). The thread is started with the forwarded
        signals blocked (they stay the main thread's)."""
        if self.pidfd >= 0 and _readable(self.pidfd, WATCH_AFTER):
            return
        old = self.block()
        try:
            self.watch = self.ledger.watch_grant(self.name, token, self.grant_ended)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def stop_watching(self) -> None:
        """COMMAND has ended: no loss is said or acted on from now on, and
        the watch of the grant stops (before the release, which it would
        otherwise take for a loss). Not under ``_gate_lock`` (the watch's
        callback takes it). Idempotent."""
        with self._gate_lock:
            self._ending = True
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.stop()

    def _stopped_error(self, code: int) -> CliError:
        """The error (exit 6) of a ``run`` whose COMMAND was sent SIGTERM
        because its grant was taken away (``--on-lost term``); ``code``:
        how COMMAND then ended, in ``run``'s form (128+N for signal N)."""
        from .render import signal_name

        ended = (f"was killed by {signal_name(code - 128)}" if code > 128 and self.returncode is not None
                 and self.returncode < 0 else f"exited with status {code}")
        return CliError(f"'{self.name}' lost its scope while COMMAND ran ({self.lost_why}): COMMAND was sent "
                        f"SIGTERM and {ended}", EXIT_NOT_FOUND)


@click.command(cls=Command, context_settings={"allow_interspersed_args": False})
@common
@rule_options
@click.option("--name", metavar="NAME", callback=holder_name_param,
              help="Holder name (default: the command's name and this pid).")
@click.option("-n", "--nonblock", is_flag=True, help="Fail at once if the scope is held.")
@click.option("-w", "--wait", "wait", type=SECONDS, metavar="SECONDS",
              help="Wait at most SECONDS for the scope, and for a ledger that cannot be reached "
                   "(default: wait for ever).")
@click.option("-E", "--conflict-exit-code", type=Integer(0, 255), default=EXIT_REFUSED,
              show_default=True, help="Exit code when the scope is not granted.")
@click.option("--parent", metavar="NAME", callback=holder_name_param,
              help=f"Delegate from holder NAME (default: ${ENV_HOLDER}, set by an enclosing 'ledger run').")
@click.option("--top-level", is_flag=True, help=f"Register at top level, ignoring ${ENV_HOLDER}.")
@click.option("-q", "--quiet", is_flag=True, help="No notice while waiting.")
@click.option("--advisory", is_flag=True,
              help="Grant even where the scope conflicts (recording the conflicts), with a warning naming them.")
@click.option("--ttl", type=TTL, metavar="SECONDS",
              help="Hold it on a lease too: this wrapper renews it every SECONDS/3; if it stops renewing "
                   "(stopped, hung, killed), the scope is reclaimed after SECONDS plus a grace of "
                   "max(1, SECONDS/10), even while the command runs.")
@click.option("--on-lost", type=click.Choice(["term", "warn"]), default="term", show_default=True,
              help="When the scope is taken away while COMMAND runs (a forced release, a lapsed lease, a "
                   "lost session on PostgreSQL): 'term' sends COMMAND SIGTERM and exits 6 once it ends; "
                   "'warn' lets it run on. Either way a warning says at once why.")
@click.option("--note", metavar="TEXT", callback=note_param,
              help="Why the scope is asked for: the grant records it (1 to 4096 characters; replay shows it).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, callback=command_param)
@pass_env
def run(env: Env, writes: tuple[str, ...], reads: tuple[str, ...], xreads: tuple[str, ...], root: str | None,
        manifest: str | None, name: str | None, nonblock: bool, wait: float | None,
        conflict_exit_code: int, parent: str | None, top_level: bool, quiet: bool, advisory: bool,
        ttl: float | None, on_lost: str, note: str | None, command: tuple[str, ...]) -> int:
    """Run COMMAND holding a scope, like flock(1): register it (or delegate it
    from the enclosing 'ledger run'), run the command as a child, release when
    it ends, and exit with its exit code (128+N if signal N killed it).

    The command sees SCOPELEDGER_DIR, SCOPELEDGER_HOLDER and SCOPELEDGER_TOKEN,
    so a 'ledger run' inside it delegates from this holder. Signals sent to
    this process reach the command. The allocation is bound to the command's
    process: if this wrapper is killed, it is reclaimed once the command is
    gone too. If the scope is taken away while the command runs (a forced
    release, a lapsed lease, a lost session), this wrapper says why at once
    and sends the command SIGTERM, then exits 6 (--on-lost warn: it runs on).

    Example: ledger run --name build --write src --read docs -w 60 -- make
    """
    env.json_to_stderr = True
    if nonblock and wait is not None:
        raise click.UsageError("-n and -w exclude each other")
    given = wait
    name, rules = request_from(writes, reads, root, manifest, name, xreads)
    name = name if name is not None else _default_name(command)
    parent, token = parent_from_env(parent, top_level)
    runners: list[_Runner] = []  # (the session's callback runs in its own thread, once the runner exists)

    def session_lost(err: Any) -> None:
        for r in runners:
            r.session_lost(err)
    # The wait's deadline covers reaching the ledger too (a server down for a restart).
    deadline = (time.monotonic() if nonblock or wait == 0 else
                math.inf if wait is None else time.monotonic() + wait)
    ledger, since, rode = _open_within(env, name, deadline, session_lost, parent, token, quiet)
    if rode and wait is not None and not nonblock:
        # What the outage left of the wait (at least one try: a grant if the scope is free).
        wait = max(deadline - time.monotonic(), 1e-6)
    with ledger:
        runner = _Runner(env, ledger, name, rules, parent, command, quiet, token, ttl)
        runner.since = since
        runner.wait_given = given
        runners.append(runner)
        runner.advisory = advisory
        runner.note = note
        runner.on_lost = on_lost
        from scopeledger import Refused

        try:
            return runner.run(0 if nonblock else wait)
        except _Interrupted as exc:  # a second signal while run's own handling of the first ran
            return 128 + exc.signum
        except (Refused, CliError) as exc:
            if isinstance(exc, CliError) and exc.kind != "refused":
                raise
            report(env, exc, conflict_exit_code)
            return conflict_exit_code




def _open_within(env: Env, name: str, deadline: float, on_session_lost: Any, parent: str | None,
                 token: int | None, quiet: bool) -> tuple[Ledger, int, bool]:
    """``run``'s ledger, opened (``create``: a directory; ``on_session_lost``: as
    :meth:`Env.open`), the enclosing holder checked (:func:`check_enclosing`), and its
    seq read: ``(ledger, seq, whether it could not be reached at first)``. While the ledger cannot be reached
    (:class:`~scopeledger.StoreUnavailable`: a PostgreSQL server down for a restart)
    each is tried again until ``deadline`` (``time.monotonic``; ``math.inf``: for
    ever) as a waiter rides an outage (:class:`scopeledger.Outage`: its pauses, its
    one warning, and what waiting does not mend, a refused login or a database that
    does not exist, raised at once), then a notice (none with ``quiet``) once it is
    reached. A ``deadline`` already passed (``-n``, ``-w 0``) tries once.

    Raises:
        StoreUnavailable: the ledger could not be reached by the deadline, or the
            server refused the login, or the database does not exist (exit 7).
        CliError, LedgerError, OSError: as :meth:`Env.open` and :func:`check_enclosing`.
    """
    from scopeledger import Outage, StoreUnavailable

    outage: Outage | None = None
    ledger: Ledger | None = None
    try:
        while True:
            try:
                if ledger is None:
                    ledger = env.open(create=True, on_session_lost=on_session_lost)
                check_enclosing(ledger, parent, token)
                since = ledger.seq
            except StoreUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                if outage is None:
                    outage = Outage(name, None if math.isinf(deadline) else deadline)
                time.sleep(outage.failed(exc))
                continue
            if outage is not None and not quiet:
                _tell(env, "notice", f"holder '{name}' reached the ledger: going on")
            return ledger, since, outage is not None
    except BaseException:
        if ledger is not None:
            ledger.close()
        raise


def _tell(env: Env, kind: str, message: str) -> None:
    """``message`` on stderr: a line (``warning: ...`` when ``kind`` is
    ``"warning"``), or with ``--json`` ``{kind: message}``. Raises
    nothing: a stderr that cannot be written (its reader gone: EPIPE)
    changes nothing ``run`` does (it was said in a wrapper's thread
    before it stopped COMMAND, and a broken pipe there ended ``run``
    with exit 1 and no word, as ``ledger show | head`` does)."""
    try:
        if env.json:
            sys.stderr.write(json_text({kind: message}) + "\n")
            sys.stderr.flush()
        else:
            from .render import safe

            text = ("warning: " + message) if kind == "warning" else message
            env.err.print(safe(text), markup=False, soft_wrap=True)
    except (OSError, ValueError):
        pass


def _taken_away(ledger: Any, alloc: Any) -> str | None:
    """Why the grant ``alloc`` (name, token) was gone when ``ledger run``
    came to release it, when that is worth a warning: released by an
    operator (forced, with the reason and who, or not), reclaimed for its
    lapsed lease or lost session, or no longer in the log at all (cut by
    ``ledger repair``; its token may then go to another grant). ``None``
    for a reclaim of a dead process (the command had exited) or when the
    log cannot say. (What the wrapper learnt while COMMAND ran it said
    then: :meth:`_Runner.lost`.)"""
    ending = _ending_in_log(ledger, alloc)
    if ending is None:
        return None
    if ending is _GONE:
        return (f"its grant (token {alloc.token}) is no longer in the log (cut by 'ledger repair'?): "
                "the scope was not recorded as its own for the whole command")
    if ending.type == "reclaimed" and ending.data.get("reason") not in _NOT_A_DEATH:
        return None  # (a process's death: after COMMAND ended; a lapsed lease, a lost session: while it ran)
    return _ending_words(ending, alloc.token)


#: :func:`_ending_in_log`'s answer when the grant's line is not in the log.
_GONE: Any = object()


def _waiting_words(reason: str, refusal: Any) -> str:
    """What a waiting request waits for, in the CLI's words: the refusal's
    message (without its class's prefix) and what the library's ``reason``
    adds after it (``; also in the way: ...``, every other holder in the
    way), else ``reason`` itself."""
    if refusal is None:
        return reason[:1].lower() + reason[1:]
    head = str(refusal)
    return message_of(refusal) + (reason[len(head):] if reason.startswith(head) else "")


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` (a pidfd: its process exited) is readable within
    ``timeout`` seconds, by ``poll(2)``, which takes any descriptor number
    (``select(2)`` refused one past 1024: a wrapper started with many
    inherited files exited 70 after COMMAND ended)."""
    import math
    import select

    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(math.ceil(max(0.0, timeout) * 1000)))


def _ending_in_log(ledger: Any, alloc: Any) -> Any:
    """:meth:`~scopeledger.Ledger.grant_ending` of the grant ``alloc``
    (name, token); :data:`_GONE` when the log no longer holds the grant's
    line at its token; ``None`` when the log holds no ending (yet) or cannot
    be read."""
    from scopeledger import LedgerError, UnknownHolder

    try:
        return ledger.grant_ending(alloc.name, alloc.token)
    except UnknownHolder:
        return _GONE
    except LedgerError:
        return None


#: Reclaim reasons that are not COMMAND's process's death: a reclaim for one of them took the
#: scope while COMMAND may still have run.
_NOT_A_DEATH = frozenset({"lease_expired", "session_closed", "session_lock_gone"})


def _ending_words(event: Any, token: int) -> str:
    """How grant ``token`` ended, in words: the ``released`` or
    ``reclaimed`` :class:`~scopeledger.Event` that ended it (by whom, and
    the reason of a forced release or of the reclaim), or ``None``: its
    line is no longer in the log."""
    if event is None:
        return (f"its grant (token {token}) is no longer in the log (cut by 'ledger repair'?): the scope "
                "is not recorded as its own")
    by = event.actor.get("pid") if isinstance(event.actor, dict) else None
    if event.type == "released":
        forced = event.data.get("forced")
        if forced is not None:
            return f"force-released at seq {event.seq} by pid {by}, reason: {forced}"
        return f"released by another process (pid {by}) at seq {event.seq}"
    from .render import REASONS

    reason = event.data.get("reason")
    return f"reclaimed at seq {event.seq} by pid {by}: {REASONS.get(reason, reason)}"


def _parent_death_signal() -> Any:
    """A function that, called in a forked child, asks the kernel to send
    it SIGKILL when its parent (this wrapper) dies (``prctl(2)``
    ``PR_SET_PDEATHSIG``); made before the fork (ctypes is imported here,
    only for a ledger on PostgreSQL)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)

    return arm


def _can_try_again(exc: Any) -> bool:
    """Whether binding a grant to COMMAND may be tried again after ``exc``
    (a :class:`~scopeledger.StoreUnavailable`): the server could not be
    reached or the connection broke (no SQLSTATE, or class 08 or 57P), not
    a login the server refused (class 28: a wrong password stays wrong)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(("08", "57P"))
