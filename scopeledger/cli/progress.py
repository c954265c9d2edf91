"""Progress of long operations on stderr (issue 17): ``replay``, ``history``,
``export`` (a bar by seq) and ``verify`` (a spinner and the time elapsed: the
library does not say how far it is).

Shown only when it cannot get in the way (:func:`wanted`): stderr is a terminal,
neither ``--no-progress`` nor ``--json`` was given, stdout is not a pipe (its reader
may be a pager on the same terminal) and, for a command whose output streams to
stdout, not that terminal either (the lines are the progress there). And only for
large work, decided by size, never by time: at least :data:`MIN_EVENTS` events
(:data:`MIN_BYTES` of log for ``verify``). The bar is drawn without a thread of
its own (refreshed by the loop it follows), so the command's behaviour is the same
with it or without it; ``verify``'s spinner runs in a forked child, since a thread
in this process would keep the library from verifying in parallel.
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

if TYPE_CHECKING:
    from .params import Env

T = TypeVar("T")

#: The fewest events a bar is shown for (about half a second of replay on a quiet machine).
MIN_EVENTS = 10_000

#: The smallest log ``verify`` shows its spinner for (3 MiB: about 8,000 events).
MIN_BYTES = 3 << 20

#: The bar is redrawn at most this often, seconds (the first drawing is immediate).
REFRESH = 0.25


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _is_pipe(stream: Any) -> bool:
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (AttributeError, ValueError, OSError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def wanted(env: Env, streams_to_stdout: bool) -> bool:
    """Whether progress may be shown at all (see the module's docstring);
    ``streams_to_stdout``: the command writes its output while it works."""
    if not env.progress or env.json or not _is_terminal(sys.stderr):
        return False
    if _is_pipe(sys.stdout):
        return False
    return not (streams_to_stdout and _is_terminal(sys.stdout))


class Bar:
    """A bar from seq ``first`` to ``last`` on stderr, or nothing (see
    :func:`wanted`; fewer than :data:`MIN_EVENTS` events). Use as a context
    manager around :meth:`track`."""

    def __init__(self, env: Env, label: str, first: int, last: int, streams_to_stdout: bool) -> None:
        self.env, self.label = env, label
        self.first, self.last = max(first, 1), last
        self.enabled = self.last - self.first + 1 >= MIN_EVENTS and wanted(env, streams_to_stdout)
        self._bar: Any = None
        self._task: Any = None
        self._drawn = 0.0

    def __enter__(self) -> Bar:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(self.label), BarColumn(),
                                 TextColumn("seq {task.fields[seq]} of {task.fields[last]}"),
                                 TimeRemainingColumn(), console=self.env.err, transient=True,
                                 auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            self._task = self._bar.add_task(self.label, total=self.last - self.first + 1,
                                            seq=self.first - 1, last=self.last)
            self._bar.start()  # draws at once
            self._drawn = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def at(self, seq: int) -> None:
        """The work has reached ``seq``."""
        if self._bar is None:
            return
        now = time.monotonic()
        if now - self._drawn >= REFRESH:
            self._bar.update(self._task, completed=seq - self.first + 1, seq=seq)
            self._bar.refresh()
            self._drawn = now

    def track(self, items: Iterable[T], seq: Callable[[T], int] = lambda e: e.seq) -> Iterator[T]:  # type: ignore[attr-defined]
        """``items`` unchanged, the bar following ``seq(item)``."""
        if self._bar is None:
            yield from items
            return
        for item in items:
            self.at(seq(item))
            yield item


class Spinner:
    """A spinner with the time elapsed on stderr while a call that says nothing
    of its progress runs (``verify``), when :func:`wanted` and the work is at least
    :data:`MIN_BYTES`; drawn by a forked child that ends when this context does
    (or this process does: it waits for the end of a pipe)."""

    def __init__(self, env: Env, label: str, size: int) -> None:
        self.env, self.label = env, label
        self.enabled = size >= MIN_BYTES and wanted(env, streams_to_stdout=False) and hasattr(os, "fork")
        self._pid = 0
        self._write = -1

    def __enter__(self) -> Spinner:
        if not self.enabled:
            return self
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = self.env.err
        read, write = os.pipe()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - (the child; its drawing is what tests see)
            code = 0
            try:
                os.close(write)
                with Progress(SpinnerColumn(), TextColumn(self.label), TimeElapsedColumn(),
                              console=console, transient=True, redirect_stdout=False,
                              redirect_stderr=False) as bar:
                    bar.add_task(self.label, total=None)
                    poll = select.poll()  # (poll: any descriptor number, where select takes < 1024)
                    poll.register(read, select.POLLIN)
                    poll.poll()  # until the parent closes its end
            except BaseException:  # noqa: BLE001 - Ctrl-C, a closed terminal: just stop
                code = 1
            finally:
                os._exit(code)
        os.close(read)
        self._pid, self._write = pid, write
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pid:
            os.close(self._write)
            try:
                os.waitpid(self._pid, 0)
            except (ChildProcessError, InterruptedError):
                pass
            self._pid = 0
