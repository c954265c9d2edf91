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
from typing import TYPE_CHECKING, Any, Sequence

import click

from .errors import (EXIT_CANNOT_EXEC, EXIT_INTERNAL, EXIT_NO_COMMAND, EXIT_OK, EXIT_REFUSED, CliError,
                     error_json, exit_code_for, json_text, message_of, report)
from .params import (ENV_HOLDER, ENV_TOKEN, SECONDS, TTL, Command, Env, Integer, check_enclosing, common,
                     display_root, holder_name_param, parent_from_env, pass_env, relative_option, request_from,
                     rule_options)

if TYPE_CHECKING:
    from scopeledger import Ledger, ScopeRule

#: How long ``ledger run`` waits for the lock to release its scope once the
#: command has ended, when ``--lock-timeout`` is shorter (seconds).
RELEASE_WAIT_SECONDS = 10.0

#: Signals ``ledger run`` passes on to its command.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)

#: A waiting 'run' that drops its folded state hands the freed memory back to the OS (a
#: collection and ``malloc_trim``: several ms of CPU, most of it the collection, whatever
#: the state's size) only when the state held at least this many live holders (about
#: 2 kB each: below it there is little to hand back, issue 18).
GIVE_BACK_HOLDERS = 1000

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

    # signals
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if os.getpid() != self.me:
            return
        if self.child is None:
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
        if not self.quiet:
            if self.env.json:
                sys.stderr.write(json_text({"notice": message}) + "\n")
            else:
                from .render import safe

                self.env.err.print(safe(message), markup=False, soft_wrap=True)

    # acquisition
    def _try(self) -> None:
        """Ask once (``-n``), with the forwarded signals blocked: a signal
        then ends ``run`` only once the grant (or the refusal) is known."""
        old = self.block()
        try:
            if self.parent is None:
                self.alloc = self.ledger.register(self.name, self.rules, advisory=self.advisory, ttl=self.ttl)
            else:
                self.alloc = self.ledger.delegate(self.parent, self.name, self.rules,
                                                  parent_token=self.parent_token, advisory=self.advisory,
                                                  ttl=self.ttl)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if self.advisory:
            self._warn_conflicts()

    def _waiting(self, reason: str, refusal: Any) -> None:
        """The library's ``on_wait``: the notice, once the request waits."""
        why = message_of(refusal) if refusal is not None else reason[:1].lower() + reason[1:]
        self.say(f"Blocking waiting for the scope: {why}")

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
        since = self.ledger.seq
        logger = level = None
        if self.quiet:  # no notice while waiting: the library's (a waiter that lost its place) neither
            import logging

            logger = logging.getLogger("scopeledger")
            level = logger.level
            logger.setLevel(logging.WARNING)
        try:
            if self.parent is None:
                self.alloc = self.ledger.register(self.name, self.rules, advisory=self.advisory, ttl=self.ttl,
                                                  wait=wait, on_wait=self._waiting)
            else:
                self.alloc = self.ledger.delegate(self.parent, self.name, self.rules,
                                                  parent_token=self.parent_token, advisory=self.advisory,
                                                  ttl=self.ttl, wait=wait, on_wait=self._waiting)
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
        from .render import chain_text, safe

        token = self.alloc.token
        for ev in self.ledger.events(since=token, until=token):
            for chain, theirs, mine in ev.data["holder"].get("advisory", ()):
                message = (f"advisory grant of '{self.name}': {mine[1]} {mine[0]} conflicts with "
                           f"{chain_text(chain)} holding {theirs[1]} {theirs[0]}")
                if self.env.json:
                    sys.stderr.write(json_text({"warning": message}) + "\n")
                else:
                    self.env.err.print(safe("warning: " + message), markup=False, soft_wrap=True)

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
            why = message_of(exc.refusal) if exc.refusal is not None else exc.reason
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
        sys.stdout.flush()
        sys.stderr.flush()
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
        os.close(gate_r)
        os.close(err_w)
        return gate_w, err_r

    def wait_child(self) -> int:
        """Wait for the child (signals keep being forwarded meanwhile);
        its exit code, or 128+N when signal N killed it."""
        assert self.child is not None
        try:
            _pid, status = os.waitpid(self.child, 0)
        except ChildProcessError:
            return EXIT_INTERNAL
        finally:
            self.waited = True
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code

    def session_lost(self, err: Any) -> None:
        """The ledger's client session on the server was lost (its lease
        lapsed: this wrapper was stopped or cut off): other hosts may grant
        the scope from now on, so COMMAND is told to stop (SIGTERM), with a
        warning. Called from the session's own thread."""
        child = self.child
        if child is None or self.waited:
            return
        self.say(f"warning: the ledger's session on the server was lost ({message_of(err)}): "
                 f"'{self.name}' no longer holds its scope for other hosts; sending COMMAND SIGTERM")
        try:
            os.kill(child, signal.SIGTERM)
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
        old = self.block()
        ledger = self.ledger
        try:
            try:
                ledger.release(alloc.name, token=alloc.token)
            except LockTimeout:
                # --lock-timeout bounds waiting to take a scope; the command
                # has ended, and its scope should go back now: wait longer.
                short = ledger.timeout
                ledger.timeout = max(short or 0.0, RELEASE_WAIT_SECONDS)
                try:
                    ledger.release(alloc.name, token=alloc.token)
                finally:
                    ledger.timeout = short
        except UnknownHolder:
            why = _taken_away(ledger, alloc)  # (a reclaim after the command's exit: nothing to say)
            if why is not None:
                self.say(f"warning: '{alloc.name}' was no longer held when its command ended: {why}")
        except LedgerError as exc:
            self.say(f"warning: could not release '{alloc.name}': {message_of(exc)}; its command "
                     "has exited, so the next request that needs its scope reclaims it")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def run(self, wait: float | None) -> int:
        """Acquire (``wait``: as :meth:`acquire`), run the command, release;
        returns the command's exit code (128+N when signal N ended it, or
        ended this process before the command started).

        Raises:
            Refused: refused, and it cannot clear by waiting (:func:`waitable`)
                or ``wait`` is 0.
            CliError: ``wait`` seconds ran out (exit 1, kind ``refused``); the
                command cannot be run (exit 126, or 127 when not found).
            LedgerError, OSError: from the ledger (acquiring, attaching).
        """
        gate_w = err_r = -1
        token = None
        try:
            self.install()
            self.acquire(wait)
            token = self.alloc.token
            old = self.block()
            try:
                gate_w, err_r = self.spawn()
                try:
                    # This grant only: had another process released the
                    # name and registered it again meanwhile, attaching by
                    # name alone would take over that newer grant.
                    self.ledger.attach(self.name, self.child, token=token)
                except BaseException:
                    os.close(gate_w)  # the child sees EOF and exits without running
                    gate_w = -1
                    raise
                os.write(gate_w, b"g")
                os.close(gate_w)
                gate_w = -1
                if self.ttl is not None:  # (started with the signals blocked: they stay the main thread's)
                    self.renewer = self.ledger.keep_renewed(
                        self.name, token, on_lost=lambda exc: self.say(
                            f"warning: the lease of '{self.name}' is lost: {message_of(exc)}"))
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
            code = self.wait_child()
            if data:
                errno_ = int(data or b"0")
                reason = os.strerror(errno_)
                self.release()
                raise CliError(f"cannot run {self.command[0]!r}: {reason}",
                               EXIT_NO_COMMAND if errno_ == errno_mod.ENOENT else EXIT_CANNOT_EXEC)
            self.release()
            if self.env.json:
                sys.stderr.write(json_text({"name": self.name, "token": token, "parent": self.parent,
                                             "pid": self.child, "exit_code": code}) + "\n")
            return code
        except _Interrupted as exc:
            return 128 + exc.signum
        finally:
            for fd in (gate_w, err_r):
                if fd >= 0:
                    os.close(fd)
            if self.child is not None and not self.waited:
                # A child still at its gate exits at once (EOF); one that runs
                # the command keeps the scope until it ends: never release early.
                try:
                    os.waitpid(self.child, 0)
                except ChildProcessError:
                    pass
            self.release()
            self.restore()


@click.command(cls=Command, context_settings={"allow_interspersed_args": False})
@common
@rule_options
@click.option("--name", metavar="NAME", callback=holder_name_param,
              help="Holder name (default: the command's name and this pid).")
@click.option("-n", "--nonblock", is_flag=True, help="Fail at once if the scope is held.")
@click.option("-w", "--wait", "wait", type=SECONDS, metavar="SECONDS",
              help="Wait at most SECONDS for the scope (default: wait for ever).")
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
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, callback=command_param)
@pass_env
def run(env: Env, writes: tuple[str, ...], reads: tuple[str, ...], xreads: tuple[str, ...], root: str | None,
        manifest: str | None, name: str | None, nonblock: bool, wait: float | None,
        conflict_exit_code: int, parent: str | None, top_level: bool, quiet: bool, advisory: bool,
        ttl: float | None, command: tuple[str, ...]) -> int:
    """Run COMMAND holding a scope, like flock(1): register it (or delegate it
    from the enclosing 'ledger run'), run the command as a child, release when
    it ends, and exit with its exit code (128+N if signal N killed it).

    The command sees SCOPELEDGER_DIR, SCOPELEDGER_HOLDER and SCOPELEDGER_TOKEN,
    so a 'ledger run' inside it delegates from this holder. Signals sent to
    this process reach the command. The allocation is bound to the command's
    process: if this wrapper is killed, it is reclaimed once the command is
    gone too.

    Example: ledger run --name build --write src --read docs -w 60 -- make
    """
    env.json_to_stderr = True
    if nonblock and wait is not None:
        raise click.UsageError("-n and -w exclude each other")
    name, rules = request_from(writes, reads, root, manifest, name, xreads)
    name = name if name is not None else _default_name(command)
    parent, token = parent_from_env(parent, top_level)
    runners: list[_Runner] = []  # (the session's callback runs in its own thread, once the runner exists)

    def session_lost(err: Any) -> None:
        for r in runners:
            r.session_lost(err)
    with env.open(create=True, on_session_lost=session_lost) as ledger:
        check_enclosing(ledger, parent, token)
        runner = _Runner(env, ledger, name, rules, parent, command, quiet, token, ttl)
        runners.append(runner)
        runner.advisory = advisory
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




def _taken_away(ledger: Any, alloc: Any) -> str | None:
    """Why the grant ``alloc`` (name, token) was gone when ``ledger run``
    came to release it, when that is worth a warning: released by an
    operator (forced, with the reason and who, or not), or no longer in the
    log at all (cut by ``ledger repair``; its token may then go to another
    grant). ``None`` for a reclaim (the command had exited: its process was
    gone) or when the log cannot say."""
    from scopeledger import LedgerError

    try:
        events = ledger.history(alloc.name)
    except LedgerError:
        return None
    if not any(e.seq == alloc.token and e.type in ("registered", "delegated") for e in events):
        return (f"its grant (token {alloc.token}) is no longer in the log (cut by 'ledger repair'?): "
                "the scope was not recorded as its own for the whole command")
    for e in events:
        if e.seq <= alloc.token or e.data.get("name") != alloc.name:
            continue
        if e.type == "released":
            forced = e.data.get("forced")
            by = e.actor.get("pid") if isinstance(e.actor, dict) else None
            if forced is not None:
                return f"force-released at seq {e.seq} by pid {by}, reason: {forced}"
            return f"released by another process (pid {by}) at seq {e.seq}"
        if e.type == "reclaimed":
            return None
    return None


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
