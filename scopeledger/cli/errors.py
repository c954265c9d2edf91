"""Exit codes, the command line's errors, and how a failure is said: one line
``error: ...`` on stderr (control characters escaped), and with ``--json`` the
``{"error": {...}}`` document (docs/cli.md, "Exit codes" and "Errors").

Imports nothing from the library until an exception is to be classified.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Sequence

import click

if TYPE_CHECKING:
    from .params import Env

# -- exit codes (docs/cli.md, "Exit codes") ------------------------------------

EXIT_OK = 0
EXIT_REFUSED = 1          # refused, check denied, verify found problems, run conflict
EXIT_USAGE = 2            # bad option, rule, path, name, time or manifest
EXIT_LOCK_TIMEOUT = 3     # the ledger's lock was not free in time
EXIT_CORRUPT = 4          # a log line or snapshot that does not check out
EXIT_UNSAFE = 5           # ledger directory owned by another user, loose mode, symlink
EXIT_NOT_FOUND = 6        # no such ledger, holder, or point in the history
EXIT_OS = 7               # the OS (or the database server) refused: cannot create, read or write the ledger
EXIT_NEWER = 8            # a log line of a newer scopeledger (NewerFormat): upgrade, do not repair
EXIT_INTERNAL = 70        # a bug: please report it
EXIT_CANNOT_EXEC = 126    # run: the command exists but cannot be executed
EXIT_NO_COMMAND = 127     # run: the command was not found
EXIT_INTERRUPTED = 130    # Ctrl-C (SIGINT)


class CliError(Exception):
    """An error the command line reports as one line with an exit code."""

    def __init__(self, message: str, code: int, kind: str = "error") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception."""
    from scopeledger import (CorruptLedger, HistoryUnavailable, InvalidArgument, InvalidHolderName, InvalidLease,
                             InvalidLedgerURL, InvalidManifest,
                             InvalidProcess, InvalidScope, LedgerError, LedgerIOError, LockTimeout,
                             NewerFormat, NoLedger, ReadOnlyLedger, Refused, StoreError, UnknownHolder,
                             UnsafeLedgerPath)

    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, Refused):
        return EXIT_REFUSED
    if isinstance(exc, (InvalidScope, InvalidHolderName, InvalidManifest, InvalidProcess, InvalidArgument,
                        InvalidLease, InvalidLedgerURL)):
        return EXIT_USAGE
    if isinstance(exc, LockTimeout):
        return EXIT_LOCK_TIMEOUT
    if isinstance(exc, NewerFormat):  # (a CorruptLedger whose remedy is an upgrade, not a repair)
        return EXIT_NEWER
    if isinstance(exc, CorruptLedger):
        return EXIT_CORRUPT
    if isinstance(exc, UnsafeLedgerPath):
        return EXIT_UNSAFE
    if isinstance(exc, (UnknownHolder, HistoryUnavailable, NoLedger)):
        return EXIT_NOT_FOUND
    if isinstance(exc, (ReadOnlyLedger, StoreError)):  # (a server that cannot be reached, or refused)
        return EXIT_OS
    if isinstance(exc, (LedgerIOError, OSError)):
        return EXIT_OS
    if isinstance(exc, LedgerError):
        return EXIT_REFUSED
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return EXIT_INTERNAL


def error_json(exc: BaseException, code: int) -> dict[str, Any]:
    """``{"error": {...}}``: what ``--json`` prints for a failure. A wait
    that timed out (``ledger run -w``) carries the data of the refusal it
    last met (``owner``, ``rule``, ``chain``, ...) as ``-n``'s refusal does,
    with ``waited`` (seconds)."""
    from scopeledger import WaitTimeout

    body: dict[str, Any] = {"type": type(exc).__name__, "message": message_of(exc), "exit_code": code}
    _data(exc, body)
    cause = exc.__cause__
    if isinstance(cause, WaitTimeout):
        body["waited"] = cause.waited
        if cause.refusal is not None:
            _data(cause.refusal, body)
    return {"error": body}


def _data(exc: BaseException, body: dict[str, Any]) -> None:
    """The exception's data, into ``body`` (keys already there kept)."""
    from scopeledger import ScopeRule

    found: dict[str, Any] = {}
    for attr in ("path", "line", "seq", "reason", "unknown", "name", "owner", "parent", "child", "sibling",
                 "requester", "timeout", "holder", "url", "sqlstate", "events"):
        if attr in getattr(exc, "__dict__", {}):
            found[attr] = getattr(exc, attr)
    for attr in ("rule", "owner_rule"):
        value = getattr(exc, "__dict__", {}).get(attr)
        if isinstance(value, ScopeRule):
            found[attr] = value.to_json()
    chain = getattr(exc, "__dict__", {}).get("chain")
    if chain:
        found["chain"] = list(chain)
    for key, value in found.items():
        body.setdefault(key, value)


def message_of(exc: BaseException) -> str:
    """The message of ``exc`` as the command line states it: lowercase, no
    trailing period, an OSError as ``strerror: filename``. Characters are
    kept exactly (``--json`` carries them so); :func:`one_line` is for people."""
    from scopeledger import LedgerError

    if isinstance(exc, OSError) and not isinstance(exc, LedgerError) and exc.strerror:
        # (no period taken off: it would be the file name's)
        return _lowercase_first(exc.strerror) + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, click.ClickException):
        msg = exc.format_message()
    else:
        msg = str(exc) or type(exc).__name__
    if "://" in msg:
        msg = without_passwords(msg)
    return _lowercase_first(msg).rstrip(".")


def without_passwords(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`scopeledger.redact_url`:
    a password replaced by ``***``). The library's messages show a ledger's
    URL redacted already; click's do not (``got unexpected extra argument
    (postgresql://me:pw@host/db)``), so no message of the command line
    prints a password."""
    import re

    from scopeledger import redact_url

    def one(m: re.Match[str]) -> str:
        url = m.group(0)
        url, tail = url.rstrip(").,;:'\""), url[len(url.rstrip(").,;:'\"")):]  # (the sentence's, not the URL's)
        return redact_url(url) + tail

    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://\S*", one, text)


def _lowercase_first(msg: str) -> str:
    """``'Permission denied'`` -> ``'permission denied'``; ``'NO'`` stays."""
    if msg[:1].isupper() and not msg[1:2].isupper():
        return msg[0].lower() + msg[1:]
    return msg


def one_line(exc: BaseException) -> str:
    """:func:`message_of` ``exc`` for people, on one line: characters that
    are not printable (control characters such as a newline or ESC, the
    line and paragraph separators U+2028/U+2029, bidi controls such as
    U+202E; in a path the user gave, too) escaped as ``\\xNN``/``\\uNNNN``
    by :func:`scopeledger.cli.render.safe`, so that one error is one line, cannot drive the
    terminal and cannot show a path reversed; nothing else changed (two
    spaces in a path stay two)."""
    from .render import safe

    return safe(message_of(exc))


def json_text(obj: Any, **kw: Any) -> str:
    """``obj`` as one line of JSON for ``--json`` output: every character
    that is not printable (as human output escapes them, :func:`scopeledger.cli.render.safe`:
    control characters, U+2028/U+2029, bidi controls such as U+202E, other
    format characters, lone surrogates, ...) written as a JSON escape
    (``\\u202e``; past U+FFFF, a surrogate pair), so that a path in the
    output can neither drive a terminal nor show reversed, and a JSON
    reader gets it back exactly; other characters (``é``) as they are."""
    import json

    text = json.dumps(obj, ensure_ascii=False, **kw)
    if text.isprintable():
        return text
    # json.dumps with ensure_ascii escapes one character as the log does
    # (\\u202e; past U+FFFF a surrogate pair); ASCII controls are escaped already.
    return "".join(ch if ch.isprintable() else json.dumps(ch)[1:-1] for ch in text)


# -- saying what ended the command ---------------------------------------------------


def asks_for_json(args: Sequence[str]) -> bool:
    """Whether ``--json`` is among the arguments before ``--`` (after it, they
    are ``run``'s COMMAND): for a usage error raised while click parsed the
    options, before the ``--json`` option's callback could say so."""
    for a in args:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False


def report(env: Env | None, exc: BaseException, code: int) -> None:
    """Say on stderr, in one line, that ``exc`` ended the command (and, with
    ``--json``, print its JSON): control characters escaped (:func:`one_line`)."""
    message = one_line(exc)
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    if env is not None and env.json:
        stream = sys.stderr if env.json_to_stderr else sys.stdout
        try:
            stream.write(json_text(error_json(exc, code), default=str) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # (stdout full or gone: the line on stderr below still says what ended the command)
        else:
            if env.json_to_stderr:
                return  # 'run': its stderr carries JSON documents only; this one is the error
    try:
        from .render import safe

        sys.stderr.write(f"error: {safe(message)}\n")  # the --help hint's program name too
        sys.stderr.flush()
    except (OSError, ValueError):
        pass

