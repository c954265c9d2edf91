"""What many test files share: rule helpers, and running the ``ledger`` command line.

Rules: ``W(path)``/``Rd(path)`` make a write/read rule of an absolute path (recursive unless
``rec=False``); ``W_at(root, spec)``/``R_at(root, spec)`` parse the compact syntax relative to
``root``, as the command line does.

The command line: :func:`ledger_cmd` runs ``ledger --ledger DIR ARGS...`` and returns a
``subprocess.CompletedProcess`` (``returncode``, ``stdout``, ``stderr`` as text). It runs in
this process (:func:`invoke`: ``scopeledger.cli.main`` under click's ``CliRunner``
isolation: its own stdin, stdout, stderr, environment, working directory and ``argv[0]``)
unless the command is ``run``, which forks, execs and forwards signals: that one, and
anything given ``subprocess=True``, runs as a user runs it, the installed console script in
a child process (:data:`CMD`). A test about the entry point, signals, exit statuses of a real
process or closed descriptors uses :data:`CMD` with ``subprocess`` itself.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from scopeledger import ScopeRule, parse_rule

# -- rules -------------------------------------------------------------------------------


def W(path: str | os.PathLike[str], rec: bool = True) -> ScopeRule:
    """A write rule of the absolute ``path`` (``rec``: the path and everything below it)."""
    return ScopeRule(os.fspath(path), "write", rec)


def Rd(path: str | os.PathLike[str], rec: bool = True) -> ScopeRule:
    """A read rule of the absolute ``path``."""
    return ScopeRule(os.fspath(path), "read", rec)


def W_at(root: str | os.PathLike[str], spec: str) -> ScopeRule:
    """A write rule in the compact syntax (``src``, ``src/*``), relative to ``root``."""
    return parse_rule(spec, "write", os.fspath(root))


def R_at(root: str | os.PathLike[str], spec: str) -> ScopeRule:
    """A read rule in the compact syntax, relative to ``root``."""
    return parse_rule(spec, "read", os.fspath(root))


# -- the command line ----------------------------------------------------------------------

BIN = os.path.dirname(sys.executable)
PY = sys.executable
LEDGER = shutil.which("ledger", path=BIN) or shutil.which("ledger")
#: The installed console script (else ``python -m scopeledger``), for a real child process.
CMD = [LEDGER] if LEDGER else [PY, "-m", "scopeledger"]

#: Commands that always run in a child process (they fork, exec and forward signals).
SUBPROCESS_COMMANDS = frozenset({"run"})


def as_from_a_terminal() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT, as Ctrl-C in a
    terminal would: SIGINT unblocked and at its default, whatever the test
    process passed on. A suite started as a background job of a
    non-interactive shell (``.ci/run ... &``) runs with SIGINT ignored (POSIX
    job control off: asynchronous commands ignore SIGINT and SIGQUIT), a
    child inherits that, and Python keeps an ignored SIGINT ignored:
    ``replay --follow`` followers then ran on after the test's SIGINT (four
    tests failed so in fresh-clone runs; reproduced by launching pytest with
    ``&`` in ``bash -c`` without this hook). A blocked SIGINT would be
    inherited too, so it is unblocked as well."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables an enclosing ``ledger run`` sets,
    with ``NO_COLOR=1``, the venv's ``bin`` first on ``PATH``, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOPELEDGER_")}
    env["NO_COLOR"] = "1"
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def _command_of(args: Sequence[str]) -> str | None:
    """The command name among ``args`` (after the group's options), or ``None``."""
    takes_value = {"--ledger", "--color", "--lock-timeout"}
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--":
            return None
        elif a in takes_value:
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def _starts_interpreter(env: dict[str, str] | None) -> bool:
    """Whether ``env`` sets a ``PYTHON*`` variable differently from this process: those
    are read when an interpreter starts, so :func:`invoke` (this interpreter) would
    silently ignore them."""
    return env is not None and any(
        env.get(k) != os.environ.get(k) for k in {*env, *os.environ} if k.startswith("PYTHON"))


def invoke(args: Sequence[str], env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
           input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
    """``ledger ARGS...`` in this process: ``scopeledger.cli.main`` under ``CliRunner``'s
    isolation, with exactly the environment ``env`` (default :func:`clean_env`), in the
    working directory ``cwd``, as program ``ledger``; the ``scopeledger`` logger (which
    ``main`` gives its own handler) is put back as it was afterwards.
    """
    from click.testing import CliRunner

    from scopeledger.cli import main

    env = clean_env() if env is None else env
    assert not _starts_interpreter(env), "PYTHON* variables need a new interpreter: ledger_cmd"
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update(env)
    logger = logging.getLogger("scopeledger")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    old_cwd, old_argv0 = os.getcwd(), sys.argv[0]
    code: Any = 0
    try:
        with CliRunner().isolation(input=input, env=overrides) as (out, err, _mixed):
            if cwd is not None:
                os.chdir(cwd)
            sys.argv[0] = "ledger"
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
            stdout, stderr = out.getvalue(), err.getvalue()
    finally:
        os.chdir(old_cwd)
        sys.argv[0] = old_argv0
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    if code is None:
        code = 0
    elif not isinstance(code, int):
        code = 1
    return subprocess.CompletedProcess([*CMD, *args], code, stdout.decode("utf-8"),
                                       stderr.decode("utf-8"))


def ledger_cmd(led: str | os.PathLike[str], *args: str, env: dict[str, str] | None = None,
               cwd: str | os.PathLike[str] | None = None, timeout: float = 30,
               subprocess_: bool | None = None) -> subprocess.CompletedProcess[str]:
    """``ledger --ledger LED ARGS...``: in this process (:func:`invoke`), or in a child
    process for ``run``, when ``env`` changes what only a new interpreter reads
    (:func:`_starts_interpreter`: ``PYTHONPATH`` shadowing an extra, for one), and with
    ``subprocess_=True``; bounded by ``timeout`` seconds."""
    argv = ["--ledger", os.fspath(led), *args]
    child = subprocess_ if subprocess_ is not None else (
        _command_of(argv) in SUBPROCESS_COMMANDS or _starts_interpreter(env))
    if child:
        return subprocess.run([*CMD, *argv], capture_output=True, text=True, env=env or clean_env(),
                              cwd=cwd, timeout=timeout)
    return invoke(argv, env=env, cwd=cwd)


def jl(text: str) -> list[dict[str, Any]]:
    """JSON Lines -> the documents."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_error_line(stderr: str) -> str:
    """The one ``error: ...`` line ``stderr`` must be (no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


_readers: dict[int, "queue.Queue[str]"] = {}


def readline(p: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """A line of ``p``'s stdout, failing (not hanging) after ``timeout``.
    A reader thread per process: a pipe's buffer may hold several lines."""
    q = _readers.get(id(p))
    if q is None:
        q = _readers[id(p)] = queue.Queue()
        assert p.stdout is not None
        stdout = p.stdout
        threading.Thread(target=lambda: [q.put(line) for line in stdout], daemon=True).start()
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        p.kill()
        raise AssertionError(f"no output from {p.args!r} within {timeout}s") from None


def lines_of(stream: Any) -> "queue.Queue[str | None]":
    """The lines of a child's text ``stream`` (its ``stdout`` or ``stderr`` pipe) as a
    reader thread gets them, then ``None`` at its end: ``q.get(timeout=...)`` waits for
    the next one with a bound, and a child that ended is told apart from one still quiet."""
    q: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=read, daemon=True).start()
    return q


def wait_for(pred: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until ``pred()`` is true, failing after ``timeout`` seconds (a bound, not a
    measure: the condition is polled every 20 ms)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def cli_as_nobody(path: str, *args: str) -> tuple[int, str]:
    """``ledger --ledger PATH ARGS...`` in a forked child that is user nobody
    (in process: nobody cannot read the Python installation to start one);
    ``(exit status, what it wrote on stderr)``."""
    from scopeledger import cli
    from torture_support import run_as_nobody

    preload_cli()

    def child() -> None:
        for key in [k for k in os.environ if k.startswith("SCOPELEDGER_")]:
            del os.environ[key]
        cli.main(["--ledger", path, *args])

    return run_as_nobody(child)


def preload_cli() -> None:
    """Import every module the command line may need (the library's public names, each
    module of ``scopeledger.cli``, rich): a child that became another user cannot read the
    Python installation to import them itself."""
    import importlib
    import pkgutil

    import scopeledger
    from scopeledger import cli

    for name in scopeledger.__all__:
        getattr(scopeledger, name)
    for info in pkgutil.iter_modules(getattr(cli, "__path__", [])):
        importlib.import_module(f"scopeledger.cli.{info.name}")
    import rich.console  # noqa: F401
    import rich.table  # noqa: F401
    import rich.tree  # noqa: F401


def seq_of(led: str | os.PathLike[str]) -> int:
    """The newest seq of the ledger at ``led`` (opened read-only)."""
    from scopeledger import Ledger

    with Ledger.open(led, readonly=True) as ledger:
        return ledger.seq


def tree_of(tmp_path: Path) -> Path:
    """A small source tree under ``tmp_path`` (``src/parser``, ``src/lexer``, ``tests``,
    ``docs``), resolved."""
    root = tmp_path / "tree"
    for d in ("src/parser", "src/lexer", "tests", "docs"):
        (root / d).mkdir(parents=True)
    return root.resolve()


def queued_names(led: str | os.PathLike[str]) -> list[str]:
    """The holder names of the tickets in a ledger directory's waiters' queue
    (``<led>/waiters/<number>``, each holding its waiter's request), in the
    order they joined; a ticket that went away while read is skipped."""
    d = os.path.join(led, "waiters")
    try:
        numbers = sorted(n for n in os.listdir(d) if n.isdigit())
    except FileNotFoundError:
        return []
    out = []
    for n in numbers:
        try:
            with open(os.path.join(d, n), "rb") as f:
                out.append(json.loads(f.read())["name"])
        except (OSError, ValueError, KeyError):
            pass
    return out


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``call()`` in a thread; the list gets its result, or what it
    raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # noqa: BLE001 - the caller looks
            out.append(exc)
    t = threading.Thread(target=run)
    t.start()
    return t, out


def asleep_behind(monkeypatch: Any) -> threading.Event:
    """An event set when a waiter sleeps standing behind another's ticket,
    after its last look (``Watch.wait`` with ``behind`` set): a change
    before that look would be seen by the look itself."""
    from scopeledger import _wait

    asleep = threading.Event()
    sleep = _wait.Watch.wait

    def wait(self: Any, timeout: float, mine: int | None = None) -> None:
        if self.behind is not None:
            asleep.set()
        return sleep(self, timeout, mine)
    monkeypatch.setattr(_wait.Watch, "wait", wait)
    return asleep


def kill_and_reap(pids: Sequence[int], child: int) -> None:
    """A test's clean-up: SIGKILL each of ``pids`` still there, then reap
    ``child`` (this process's child among them) if it has ended."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(child, os.WNOHANG)
    except ChildProcessError:
        pass

