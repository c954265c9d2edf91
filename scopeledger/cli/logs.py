"""The library's log records on the command line's stderr (:class:`LogHandler`),
installed when a command runs (``--version`` and ``--help`` import no logging)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from .errors import json_text

if TYPE_CHECKING:
    from .params import Env


class LogHandler(logging.Handler):
    """The library's log records on stderr: ``error: ...`` for errors,
    ``warning: ...`` for warnings, ``note: ...`` for notices (INFO: a
    watch of ``ledger run``'s grant that cannot read the log for now, a
    snapshot of an older format skipped, ...), as the command line's own
    notes; control characters escaped. For ``run --json`` (whose stderr
    carries JSON documents only) ``{"warning": ...}`` and
    ``{"notice": ...}``, the message exact."""

    #: The command line's options (:func:`install_log_handler` sets it).
    env: "Env | None" = None

    def emit(self, record: logging.LogRecord) -> None:
        from .render import safe

        try:
            env = self.env
            if env is not None and env.json and env.json_to_stderr:
                kind = "warning" if record.levelno >= logging.WARNING else "notice"
                sys.stderr.write(json_text({kind: record.getMessage()}) + "\n")
                sys.stderr.flush()
                return
            message = safe(record.getMessage())  # as one_line: nothing but control characters changed
            if record.levelno >= logging.ERROR:
                line = f"error: {message}"
            elif record.levelno >= logging.WARNING:
                line = f"warning: {message}"
            else:
                line = f"note: {message}"
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - never let a log line break a command
            pass


def install_log_handler(env: Env | None = None) -> None:
    """Give the ``scopeledger`` logger one :class:`LogHandler` (INFO and worse) that
    knows ``env``; the records go no further."""
    logger = logging.getLogger("scopeledger")
    handlers = [h for h in logger.handlers if isinstance(h, LogHandler)]
    if not handlers:
        handlers = [LogHandler(logging.INFO)]
        logger.addHandler(handlers[0])
    for h in handlers:
        h.env = env
    logger.setLevel(logging.INFO)
    logger.propagate = False
    quiet_psycopg()


def quiet_psycopg() -> None:
    """Keep psycopg's own log records off stderr (unless ``$SCOPELEDGER_DEBUG``
    is set). psycopg logs on the ``psycopg`` logger (its documented use of
    ``logging``); with no handler configured, Python's last-resort handler
    prints its warnings on stderr, e.g. ``error ignored terminating
    <psycopg.Pipeline [BAD]>: the connection is lost``, which psycopg logs when
    a pipeline whose block raised cannot be ended on a broken connection:
    an error the library handles (a connection cut: connected again, the
    waiters' queue left) or says as its own, in one line. The library's own
    pipeline blocks no longer cause that record (``_pgstore._pipeline``);
    the command line, an application, keeps any other record of psycopg's
    off its one-line errors too: here the ``psycopg`` logger gets a
    ``NullHandler`` and does not propagate."""
    import os

    if os.environ.get("SCOPELEDGER_DEBUG"):
        return
    logger = logging.getLogger("psycopg")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
