"""The ``ledger`` command line (also installed as ``scopeledger``, and run by
``python -m scopeledger``). Reference: docs/cli.md.

Every command but ``demo`` (which makes its own ledger) takes ``--ledger
DIR`` (else ``$SCOPELEDGER_DIR``, else :func:`scopeledger.default_path`);
every command takes ``--json``. Errors are one line,
``error: ...``, on stderr, and a documented exit code (see ``EXIT_*``).
"""

from __future__ import annotations

import datetime as dt
import errno as errno_mod
import json
import logging
import os
import random
import re
import signal
import sys
import time
from typing import Any, Callable, Iterator, NoReturn, Sequence

import click

from . import __version__
from ._errors import (
    CorruptLedger,
    DelegationError,
    HistoryUnavailable,
    InvalidHolderName,
    InvalidManifest,
    InvalidProcess,
    InvalidScope,
    LedgerError,
    LedgerIOError,
    LockTimeout,
    NoLedger,
    PartlyRecorded,
    ReadOnlyLedger,
    Refused,
    ScopeConflict,
    UnknownHolder,
    UnsafeLedgerPath,
)
from ._fold import EVENT_TYPES, State, apply, reparent_plan
from ._history import Event
from ._ledger import ENV_DIR, Ledger, Reclaimed, ReclaimReport, check_name, decide, default_path, stale_grant
from ._process import run_probe
from ._rules import ScopeRule, normalize_path, parse_rule
from ._runtime import load_manifest
from ._store import LOG_NAME, resolve_path

# -- exit codes (docs/cli.md, "Exit codes") ------------------------------------

EXIT_OK = 0
EXIT_REFUSED = 1          # refused, check denied, verify found problems, run conflict
EXIT_USAGE = 2            # bad option, rule, path, name, time or manifest
EXIT_LOCK_TIMEOUT = 3     # the ledger's lock was not free in time
EXIT_CORRUPT = 4          # a log line or snapshot that does not check out
EXIT_UNSAFE = 5           # ledger directory owned by another user, loose mode, symlink
EXIT_NOT_FOUND = 6        # no such ledger, holder, or point in the history
EXIT_OS = 7               # the OS refused (cannot create, read or write the ledger)
EXIT_INTERNAL = 70        # a bug: please report it
EXIT_CANNOT_EXEC = 126    # run: the command exists but cannot be executed
EXIT_NO_COMMAND = 127     # run: the command was not found
EXIT_INTERRUPTED = 130    # Ctrl-C (SIGINT)

#: Environment variables ``ledger run`` sets for its command.
ENV_HOLDER = "SCOPELEDGER_HOLDER"
ENV_TOKEN = "SCOPELEDGER_TOKEN"

#: How long ``ledger run`` waits for the lock to release its scope once the
#: command has ended, when ``--lock-timeout`` is shorter (seconds).
RELEASE_WAIT_SECONDS = 10.0

#: Signals ``ledger run`` passes on to its command.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)

#: A waiting 'run' that sees its scope free waits up to this many seconds
#: (at random) and checks again before asking, so that many waiters released
#: at once do not all ask (and all but one record a refusal).
RETRY_JITTER = 0.25

#: A replay that has not finished after this many seconds shows a progress
#: bar on stderr (when stderr is a terminal).
PROGRESS_AFTER = 0.5


class CliError(Exception):
    """An error the command line reports as one line with an exit code."""

    def __init__(self, message: str, code: int, kind: str = "error") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, Refused):
        return EXIT_REFUSED
    if isinstance(exc, (InvalidScope, InvalidHolderName, InvalidManifest, InvalidProcess)):
        return EXIT_USAGE
    if isinstance(exc, LockTimeout):
        return EXIT_LOCK_TIMEOUT
    if isinstance(exc, CorruptLedger):
        return EXIT_CORRUPT
    if isinstance(exc, UnsafeLedgerPath):
        return EXIT_UNSAFE
    if isinstance(exc, (UnknownHolder, HistoryUnavailable, NoLedger)):
        return EXIT_NOT_FOUND
    if isinstance(exc, ReadOnlyLedger):
        return EXIT_OS
    if isinstance(exc, (LedgerIOError, OSError)):
        return EXIT_OS
    if isinstance(exc, LedgerError):
        return EXIT_REFUSED
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return EXIT_INTERNAL


def error_json(exc: BaseException, code: int) -> dict[str, Any]:
    """``{"error": {...}}``: what ``--json`` prints for a failure."""
    body: dict[str, Any] = {"type": type(exc).__name__, "message": message_of(exc), "exit_code": code}
    for attr in ("path", "line", "seq", "reason", "name", "owner", "parent", "child", "sibling",
                 "requester", "timeout", "holder"):
        if attr in getattr(exc, "__dict__", {}):
            body[attr] = getattr(exc, attr)
    for attr in ("rule", "owner_rule"):
        value = getattr(exc, "__dict__", {}).get(attr)
        if isinstance(value, ScopeRule):
            body[attr] = value.to_json()
    chain = getattr(exc, "__dict__", {}).get("chain")
    if chain:
        body["chain"] = list(chain)
    return {"error": body}


def message_of(exc: BaseException) -> str:
    """The message of ``exc`` as the command line states it: lowercase, no
    trailing period, an OSError as ``strerror: filename``. Characters are
    kept exactly (``--json`` carries them so); :func:`one_line` is for people."""
    if isinstance(exc, OSError) and not isinstance(exc, LedgerError) and exc.strerror:
        # (no period taken off: it would be the file name's)
        return _lowercase_first(exc.strerror) + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, click.ClickException):
        msg = exc.format_message()
    else:
        msg = str(exc) or type(exc).__name__
    return _lowercase_first(msg).rstrip(".")


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
    by ``_render.safe``, so that one error is one line, cannot drive the
    terminal and cannot show a path reversed; nothing else changed (two
    spaces in a path stay two)."""
    from ._render import safe

    return safe(message_of(exc))


def json_text(obj: Any, **kw: Any) -> str:
    """``obj`` as one line of JSON for ``--json`` output: every character
    that is not printable (as human output escapes them, ``_render.safe``:
    control characters, U+2028/U+2029, bidi controls such as U+202E, other
    format characters, lone surrogates, ...) written as a JSON escape
    (``\\u202e``; past U+FFFF, a surrogate pair), so that a path in the
    output can neither drive a terminal nor show reversed, and a JSON
    reader gets it back exactly; other characters (``é``) as they are."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    if text.isprintable():
        return text
    from ._events import json_escape

    return "".join(ch if ch.isprintable() else json_escape(ch) for ch in text)


# -- shared options and context ----------------------------------------------------


class Env:
    """What the group options decided; ``ctx.obj``."""

    def __init__(self) -> None:
        self.ledger_dir: str | None = None
        self.json = False
        self.json_to_stderr = False  # 'run': stdout belongs to the command
        self.color = "auto"
        self.lock_timeout: float | None = 30.0
        self.allow_network_fs = False
        self._out: Any = None
        self._err: Any = None

    @property
    def path(self) -> str:
        if self.ledger_dir is not None:
            # As the OS reaches it: a '..' after a symlink is the link target's parent.
            return resolve_path(self.ledger_dir)
        try:
            return resolve_path(default_path())
        except NoLedger as exc:  # $SCOPELEDGER_DIR set but empty: the library's rule, a usage error here
            raise CliError(message_of(exc), EXIT_USAGE) from None

    @property
    def out(self) -> Any:
        if self._out is None:
            from ._render import make_console

            self._out = make_console(color=self.color)
        return self._out

    @property
    def err(self) -> Any:
        if self._err is None:
            from ._render import make_console

            self._err = make_console(stderr=True, color=self.color)
        return self._err

    def open(self, create: bool = False, readonly: bool = False) -> Ledger:
        """Open the selected ledger. Without ``create``, a directory that does
        not exist is an error (looking must not create state). ``readonly``
        for commands that only look: they then work on a read-only mount or
        write-protected copy, and change nothing (no file made, no mode tightened)."""
        path = self.path
        if not create and _missing(path):
            raise CliError(f"no ledger at {path}: nothing has been recorded there "
                           f"(choose one with --ledger DIR or ${ENV_DIR})", EXIT_NOT_FOUND)
        return Ledger.open(path, timeout=self.lock_timeout, readonly=readonly, create=create,
                           allow_network_fs=self.allow_network_fs)

    def emit_json(self, obj: Any) -> None:
        sys.stdout.write(json_text(obj) + "\n")


def _missing(path: str) -> bool:
    """Whether nothing is at ``path``: not ``os.path.lexists``, which also
    says ``False`` when the OS refuses to look (a directory above it that
    cannot be searched); that is reported as such when the ledger is opened."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False  # a file on the way: Ledger.open names it
    except (OSError, ValueError):
        return False
    return False


def _ledger_option(f: Callable[..., Any]) -> Callable[..., Any]:
    def cb(ctx: click.Context, _p: click.Parameter, value: str | None) -> None:
        if value is not None:
            if not value.strip():
                raise click.BadParameter("must not be empty (omit it for the default ledger)",
                                         param_hint="'--ledger'")
            ctx.ensure_object(Env).ledger_dir = value

    return click.option("--ledger", "ledger_dir", metavar="DIR", expose_value=False,
                        callback=cb, is_eager=True,
                        help=f"Ledger directory (default: ${ENV_DIR}, else "
                             "$XDG_STATE_HOME/scopeledger or ~/.local/state/scopeledger).")(f)


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    def cb(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(Env).json = True

    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=cb,
                        help="Machine-readable output (shapes in docs/cli.md).")(f)


def common(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--ledger`` and ``--json``, accepted after the command name too."""
    return _ledger_option(_json_option(f))


pass_env = click.make_pass_decorator(Env, ensure=True)


def _not_empty(hint: str = "give '.' for the working directory") -> Callable[..., Any]:
    """A click callback refusing an empty string (a usage error, exit 2): an
    empty path would otherwise silently mean the working directory."""

    def cb(_ctx: click.Context, _p: click.Parameter, value: Any) -> Any:
        if value == "":
            raise click.BadParameter(f"must not be empty ({hint})")
        return value

    return cb


def _not_a_directory(value: str) -> str | None:
    """Why the path ``value`` cannot be a directory (see
    :func:`scopeledger._store.non_directory_on_the_way`): ``'/r/notes.txt is
    a regular file, not a directory'``, prefixed with the path when the file
    in the way lies above it; ``None`` when it can be. The path is shown as
    :func:`scopeledger._store.resolve_path` has it."""
    from ._store import non_directory_on_the_way, resolve_path

    path = resolve_path(value)
    blocked = non_directory_on_the_way(path)
    if blocked is None:
        return None
    what = " ".join(blocked)
    return what if blocked[0] == path else f"{path}: {what}"


def _directory(hint: str) -> Callable[..., Any]:
    """A click callback for an option naming a directory (``--root``,
    ``demo --dir``), which need not exist yet: :func:`_not_empty`, and a
    path that is (or lies below) another kind of file is a usage error
    (exit 2) saying what kind, in the words the ledger's own paths use
    (not click's ``Directory 'x' is a file``).

    The callback raises:
        click.BadParameter: the value is empty, or is (or lies below)
            another kind of file than a directory (:func:`_not_a_directory`).
    """
    empty = _not_empty(hint)

    def cb(ctx: click.Context, p: click.Parameter, value: Any) -> Any:
        value = empty(ctx, p, value)
        if value is not None:
            problem = _not_a_directory(value)
            if problem is not None:
                raise click.BadParameter(problem)
        return value

    return cb


def _path(hint: str = "give '.' for the working directory", directory: bool = False) -> Callable[..., Any]:
    """A click callback for a path on the command line (``who PATH``,
    ``replay --path``, ``demo --dir``): :func:`_not_empty`, then a path no
    ledger can take (not valid UTF-8, longer than 4095 bytes, a component
    longer than 255 bytes, a NUL: :func:`scopeledger._rules.normalize_path`)
    is a usage error (exit 2) naming the argument or option, with the
    ``--help`` hint, found before any ledger is opened or file made (it was
    a bare ``error: invalid path ...`` once the ledger was open).
    ``directory``: then as :func:`_directory` too.

    The callback raises:
        click.BadParameter: empty, not a path the ledger takes, or (with
            ``directory``) another kind of file than a directory.
    """
    first = _not_empty(hint)
    kind = _directory(hint) if directory else None

    def cb(ctx: click.Context, p: click.Parameter, value: Any) -> Any:
        value = first(ctx, p, value)
        if value is None:
            return None
        try:
            normalize_path(_abs_path(value))
        except InvalidScope as exc:
            raise click.BadParameter(message_of(exc)) from None
        return kind(ctx, p, value) if kind is not None else value

    return cb


def _point(_ctx: click.Context, _p: click.Parameter, value: str | None) -> str | None:
    """A click callback for a point on the command line (``--at``,
    ``--from``, ``--until``, ``diff``'s A and B): its syntax is checked
    (:func:`parse_point`) when it is parsed, so that a malformed point is a
    usage error (exit 2) naming it before any ledger is opened (a missing
    ledger was exit 6 first). The value is kept as given: :func:`_resolve`
    finds its seq in the ledger later.

    Raises:
        click.BadParameter: not a point (see :func:`parse_point`).
    """
    if value is None:
        return None
    try:
        parse_point(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _holder_name(_ctx: click.Context, _p: click.Parameter, value: str | None) -> str | None:
    """A click callback for a holder name given on the command line (``NAME``
    of ``history`` and ``release``, ``--name``, ``--parent``, ``--holder``):
    an invalid one is a usage error (exit 2) naming the argument or option,
    with the ``--help`` hint, like every other bad value on the command line.

    Raises:
        click.BadParameter: not a valid holder name (see :func:`check_name`).
    """
    if value is None:
        return None
    try:
        return check_name(value)
    except InvalidHolderName as exc:
        raise click.BadParameter(message_of(exc)) from None


def _relative_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--relative-to", "relative_to", metavar="DIR", callback=_not_empty(),
                        help="Show paths below DIR relative to it (human output only).")(f)


def _display_root(value: str | None) -> str | None:
    return _abs_path(value) if value is not None else None


def _rules_from(writes: Sequence[str], reads: Sequence[str], root: str | None) -> list[ScopeRule]:
    """Parse compact rules (relative to ``root``, default the working
    directory). Symlinks are left to the ledger (``Ledger._prepare``, the
    one place they are resolved; a rule keeps its given spelling for it).

    Raises:
        click.BadParameter: a rule is invalid (a usage error, exit 2, naming
            ``--write`` or ``--read``; the message is ``parse_rule``'s).
    """
    base = os.path.realpath(root) if root else os.getcwd()
    rules = []
    for perm, specs in (("write", writes), ("read", reads)):
        for spec in specs:
            try:
                rules.append(parse_rule(spec, perm, base))
            except InvalidScope as exc:
                raise click.BadParameter(message_of(exc), param_hint=f"'--{perm}'") from None
    return rules


def _abs_path(p: str) -> str:
    if "\x00" in p:
        raise InvalidScope(f"invalid path {p!r}: contains NUL")
    # Not os.path.abspath: it drops a '..' lexically, before the symlink
    # under it is resolved; realpath applies each '..' as the OS does.
    return os.path.realpath(os.path.join(os.getcwd(), os.path.expanduser(p)))


def _seq_at_ns(ledger: Ledger, end_ns: int) -> int:
    """Seq of the last event (by seq) stamped at or before ``end_ns`` (0:
    none), as ``Ledger.time_point`` finds it. When that answer includes
    events stamped after ``end_ns`` (a clock jump), a warning says so (on
    stderr: ``warning: time travel to ... crosses a clock jump: ...``)."""
    point = ledger.time_point(end_ns)
    if point.crossed_count:
        logging.getLogger("scopeledger").warning("%s", point.message())
    return point.seq


# -- numbers and points in time -------------------------------------------------------

#: The most digits an integer on the command line may have (a seq, a token,
#: a count): 19, as many as 2**63 has, far more events than a log holds.
#: Longer is refused with a message, before ``int()`` (which would raise
#: Python's own "Exceeds the limit (4300 digits)" past 4300).
MAX_DIGITS = 19

#: The decimal digits of a non-negative integer as the command line takes
#: them: ASCII digits, nothing else (no sign, blank, ``_``, leading zero or
#: non-ASCII digit such as '٣' or '５', which ``int()`` would all accept).
_DIGITS_RE = re.compile(r"0|[1-9][0-9]*")

#: The most fraction digits of a second a time may have (one nanosecond).
MAX_FRACTION_DIGITS = 9

#: The longest ISO time taken (a valid one has at most about 40 characters).
MAX_TIME_CHARS = 64

_FRACTION_RE = re.compile(r"\.([0-9]*)")

#: The one form of time a point may be written in (docs/cli.md, "Points in
#: time"): ISO 8601's extended format, calendar dates only, as RFC 3339 has
#: it (``T``/``t`` or a space between date and time, ``Z``/``z`` or
#: ``+hh:mm``/``-hh:mm`` for the zone, ``.`` before a fraction), but the
#: time may stop after the hour or the minute, the zone may be left out
#: (UTC) and so may the whole time (that day). Not taken, although
#: ``datetime.fromisoformat`` would: the basic format (``20251129T140305Z``),
#: week dates (``2025-W48-6``), ordinal dates (``2025-333``), a decimal
#: comma (``05,123``), offsets ``+hh``, ``+hhmm`` or with seconds, a zone
#: after a date alone, a fraction of an hour or minute.
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
                      r"(?:[Tt ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?"
                      r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?")

_TIME_FORM = "YYYY-MM-DD[Thh[:mm[:ss[.fraction]]]][Z|+hh:mm|-hh:mm]"

_POINT_EXPECTED = ("expected a seq (0 or a positive integer in decimal digits, e.g. 12) or a time "
                   f"{_TIME_FORM} (e.g. 2025-11-29T14:03:05.123Z)")


def _shown(value: str) -> str:
    """``repr(value)`` for a message, cut short when long (so that a
    5000-digit value makes a readable one-line error)."""
    if len(value) <= 40:
        return repr(value)
    return f"{value[:20]!r}... ({len(value)} characters)"


def parse_number(value: str, expected: str, minimum: int = 0, maximum: int | None = None) -> int:
    """The one parser of integers on the command line: seqs (``--at``,
    ``--from``, ``--until``, ``diff``'s points), tokens
    (``$SCOPELEDGER_TOKEN``, ``--token``: :func:`parse_token`) and counts
    (``--workers``, ``-E``). ``expected`` says what was wanted, for the
    message (``'a positive integer in decimal digits'``).

    Raises:
        ValueError: not the ASCII decimal digits of an integer from
            ``minimum`` to ``maximum`` (``' 5'``, ``'+5'``, ``'1_0'``,
            ``'05'``, ``'٣'`` are not), or more than :data:`MAX_DIGITS`
            digits; the message is one line, the value shown cut short.
    """
    if type(value) is not str or _DIGITS_RE.fullmatch(value) is None:
        raise ValueError(f"{_shown(str(value))}: expected {expected}")
    if len(value) > MAX_DIGITS:
        raise ValueError(f"{_shown(value)}: too many digits ({len(value)}, at most {MAX_DIGITS}): "
                         f"expected {expected}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        raise ValueError(f"{_shown(value)}: expected {expected}")
    return number


def parse_point(value: str) -> int | tuple[int, int]:
    """A point on the command line: a seq (``int``, :func:`parse_number`) or
    a time (``(first_ns, last_ns)``, the span its precision names:
    ``_render.parse_when``) written as :data:`_TIME_RE` says:
    ``YYYY-MM-DD[Thh[:mm[:ss[.fraction]]]][Z|+hh:mm|-hh:mm]``, ``T`` and
    ``Z`` in either case (RFC 3339), a space for ``T`` too, at most nine
    fraction digits, no blanks around it; no zone is UTC.

    Raises:
        ValueError: neither (the message starts ``invalid point``): not
            ASCII, blanks around it, more than nine fraction digits, another
            form of ISO 8601 time (basic format, week or ordinal date,
            decimal comma, ``+hh`` or ``+hhmm`` offset), a date or time
            that does not exist (``2025-02-30``, ``24:00``, ``14:03:60``),
            or a span outside years 1 to 9999.
    """
    from ._render import parse_when

    if value.strip().isdigit():  # meant as a seq (isdigit: '٣' and '²' too)
        try:
            return parse_number(value, "a seq (0 or a positive integer in decimal digits, e.g. 12)")
        except ValueError as exc:
            raise ValueError(f"invalid point {exc}") from None
    if value != value.strip() or not value.isascii():
        raise ValueError(f"invalid point {_shown(value)}: {_POINT_EXPECTED}, with no blanks around "
                         "it, in ASCII")
    fraction = _FRACTION_RE.search(value)
    if fraction is not None and len(fraction.group(1)) > MAX_FRACTION_DIGITS:
        raise ValueError(f"invalid point {_shown(value)}: {len(fraction.group(1))} fraction digits; "
                         f"at most {MAX_FRACTION_DIGITS} (one nanosecond)")
    if len(value) > MAX_TIME_CHARS:
        raise ValueError(f"invalid point {_shown(value)}: too long ({len(value)} characters): "
                         f"{_POINT_EXPECTED}")
    if _TIME_RE.fullmatch(value) is None:
        raise ValueError(f"invalid point {_shown(value)}: {_POINT_EXPECTED}")
    # RFC 3339 allows a lowercase 't' and 'z'; parse_when reads uppercase.
    normal = value[:10] + value[10:11].upper() + value[11:]
    if normal[-1:] == "z":
        normal = normal[:-1] + "Z"
    try:
        return parse_when(normal)
    except ValueError as exc:
        if "out of range" in str(exc):
            raise ValueError(str(exc).replace(repr(normal), _shown(value), 1)) from None
        raise ValueError(f"invalid point {_shown(value)}: no such date, time or offset: "
                         f"{_POINT_EXPECTED}") from None


def _resolve(ledger: Ledger, value: str | None, what: str, edge: str = "end") -> int | None:
    """A seq or time from the command line -> a seq. A time names a span
    (its precision): ``edge="end"`` gives the last event in or before it,
    ``"start"`` the first event in or after it."""
    if value is None:
        return None
    try:
        when = parse_point(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None
    if isinstance(when, int):
        return when
    first, last = when
    if edge == "end":
        return _seq_at_ns(ledger, last)
    return _seq_at_ns(ledger, first - 1) + 1


def _at_label(state: State, at: str | None) -> str:
    from ._render import iso

    if at is None:
        return f"now (seq {state.seq})"
    stamp = f", {iso(state.last_ts)}" if state.last_ts else ""
    if _DIGITS_RE.fullmatch(at):
        return f"at seq {state.seq}{stamp}"
    return f"at {at} (seq {state.seq}{stamp})"


class _Seconds(click.ParamType):
    """A finite, non-negative number of seconds (at most :data:`MAX_SECONDS`)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            number = value
        else:
            value = str(value)
            # As integers are read (parse_number): ASCII, no blanks or '_'
            # (which float() accepts), and not so long a message cannot show it.
            if len(value) > MAX_TIME_CHARS:
                self.fail(f"{_shown(value)} is not a number of seconds: too long", param, ctx)
            if not value.isascii() or value != value.strip() or "_" in value:
                self.fail(f"{_shown(value)} is not a number of seconds (ASCII digits, e.g. 2.5)",
                          param, ctx)
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        if number < 0 or number > MAX_SECONDS:
            self.fail(f"{value!r} is out of range: give 0 to {MAX_SECONDS:g} seconds", param, ctx)
        return number


class _Integer(click.ParamType):
    """An integer from ``minimum`` to ``maximum``, read by :func:`parse_number`
    (not ``click.IntRange``: ``int()`` takes ``' 2 '``, ``'1_0'``, ``'٣'``)."""

    name = "integer"

    def __init__(self, minimum: int, maximum: int) -> None:
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_number(value, f"an integer from {self.minimum} to {self.maximum} in "
                                       "decimal digits", self.minimum, self.maximum)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: The longest timeout or wait the command line accepts (about 31 years).
MAX_SECONDS = 1e9
SECONDS = _Seconds()


# -- the group ----------------------------------------------------------------------


class _UsageErrorsKnowTheirCommand:
    """click's option parser raises some usage errors without a context
    (``option '--at' requires an argument``, ``option '--json' does not take
    a value``), so :func:`_report` could not add ``(see 'ledger CMD
    --help')`` to them: give them the context of the command being parsed."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except click.UsageError as exc:
            if exc.ctx is None:
                exc.ctx = ctx
            raise


class _Command(_UsageErrorsKnowTheirCommand, click.Command):
    pass


class _Group(_UsageErrorsKnowTheirCommand, click.Group):
    command_class = _Command


@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True, help="Colour in human output (auto: only on a terminal, "
                                      "never with NO_COLOR set).")
@click.option("--lock-timeout", type=SECONDS, default=30.0, show_default=True,
              metavar="SECONDS", help="How long a change waits for the ledger's lock.")
@click.option("--allow-network-fs", is_flag=True,
              help="Change a ledger on a network file system (NFS, SMB, 9p, virtiofs, FUSE, ...), "
                   "where flock may not exclude other hosts: only if this host alone writes it "
                   "(recorded in the log).")
@click.version_option(__version__, "-V", "--version", prog_name="scopeledger")
@pass_env
def cli(env: Env, color: str, lock_timeout: float, allow_network_fs: bool) -> None:
    """An event-sourced ledger of which process may read and write which part
    of a file tree.

    Start with 'ledger demo'. Rules on the command line use the compact
    syntax: PATH or PATH/** (the path and everything below it), PATH/* (the
    path and its direct children); relative paths are based at --root (default:
    the working directory). Quote patterns so the shell does not expand them.
    """
    env.color = color
    env.lock_timeout = lock_timeout
    env.allow_network_fs = allow_network_fs
    if click.get_current_context().invoked_subcommand == "run":
        # Before run's own options are parsed: its usage errors' JSON goes to
        # stderr too (stdout belongs to the command).
        env.json_to_stderr = True


# -- replay ---------------------------------------------------------------------------


def _open_for_replay(env: Env, from_: str | None, until: str | None,
                     follow: bool) -> tuple[Ledger, CorruptLedger | None]:
    """The ledger for ``replay``, and ``None``; or, when it does not open
    because a line after its newest snapshot does not check out, a ledger
    that has folded nothing and the damage: a replay from the first event
    (no ``--from``, no ``--follow``, ``--until`` a seq if any) can still
    show everything before the damaged line, which an audit of a damaged
    ledger needs, and then fail with the error (exit 4).

    Raises:
        CorruptLedger: the ledger does not open and the replay asked for
            needs its current state, or the line is not known.
    """
    try:
        return env.open(readonly=True), None
    except CorruptLedger as exc:
        if (exc.line is None or from_ is not None or follow
                or (until is not None and not _DIGITS_RE.fullmatch(until))):
            raise
        damage = exc
    from ._ledger import _unloaded
    from ._store import Store

    env.err.print(f"warning: {one_line(damage)}; replaying the events before line {damage.line} "
                  "that the line after each vouches for",
                  style="yellow", markup=False, highlight=False, soft_wrap=True)
    return _unloaded(Store(env.path, readonly=True)), damage


def _narrator(ledger: Ledger, since: int | None, filtered: bool, root: str | None) -> tuple[Any, Any]:
    """A Narrator seeded with the state before ``since``, and (for a
    filtered replay) the unfiltered stream that keeps it informed."""
    from ._render import Narrator

    narrator = Narrator(root=root)
    if since is not None and since > 1:
        try:
            narrator.seed(ledger.state_at(seq=min(since - 1, ledger.seq)))
        except HistoryUnavailable:
            pass
    everything = ledger.events(since=since) if filtered else None
    return narrator, everything


class _Progress:
    """A progress bar on stderr, shown only once a replay has taken more than
    a moment and only when stderr is a terminal."""

    def __init__(self, env: Env, total: int) -> None:
        self.env = env
        self.total = total
        self.t0 = time.monotonic()
        self.bar: Any = None
        self.task: Any = None
        self.enabled = total > 0 and sys.stderr.isatty()

    def update(self, seq: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.t0 < PROGRESS_AFTER:
                return
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("replaying"), BarColumn(),
                                TextColumn("seq {task.completed}/{task.total}"),
                                TimeRemainingColumn(), console=self.env.err, transient=True,
                                redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)
            self.bar.start()
            self.task = self.bar.add_task("replay", total=self.total)
        self.bar.update(self.task, completed=seq)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@cli.command()
@common
@click.option("--from", "from_", metavar="SEQ|TIME", callback=_point,
              help="First event: a seq or an ISO time.")
@click.option("--until", metavar="SEQ|TIME", callback=_point, help="Last event: a seq or an ISO time.")
@click.option("--holder", metavar="NAME", callback=_holder_name,
              help="Only events about NAME and the holders it delegated to.")
@click.option("--path", "path_", metavar="PATH", callback=_path(),
              help="Only events whose rules overlap PATH.")
@click.option("--type", "types", multiple=True, type=click.Choice(sorted(EVENT_TYPES)),
              help="Only events of this type (repeatable).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they are appended.")
@_relative_option
@click.option("--interval", type=click.FloatRange(min=0.01), default=0.2, show_default=True,
              hidden=True, help="Polling interval of --follow, seconds.")
@pass_env
def replay(env: Env, from_: str | None, until: str | None, holder: str | None, path_: str | None,
           types: tuple[str, ...], follow: bool, relative_to: str | None, interval: float) -> int:
    """Print the events in order, one line each: who, what, which rules, and
    what it did to the tree (re-parented children, reclaim reasons, refusals
    with the owner chain). --json prints JSON Lines, one stored event each."""
    from ._render import narrate, styled

    path = _abs_path(path_) if path_ is not None else None
    ledger, damage = _open_for_replay(env, from_, until, follow)
    with ledger:
        since = _resolve(ledger, from_, "--from", "start")
        until_seq = _resolve(ledger, until, "--until", "end")
        if damage is not None:
            # Up to the line before the one the fold stopped at: each is then
            # vouched for by the next (a broken chain stops events() itself).
            before = (damage.line or 1) - 1
            until_seq = before if until_seq is None else min(until_seq, before)
        until_ns = None
        if until is not None:
            point = parse_point(until)  # (valid: _resolve took it)
            if not isinstance(point, int):
                until_ns = point[1]
        filtered = bool(types or holder or path)
        narrator, everything = _narrator(ledger, since, filtered and not env.json,
                                         _display_root(relative_to))
        kwargs = dict(types=types or None, holder=holder, path=path)
        progress = _Progress(env, ledger.seq if damage is None else 0)
        count = 0
        fancy = not env.json and styled(env.out)
        write = sys.stdout.write

        def show(events: Iterator[Event]) -> None:
            nonlocal count
            for e in events:
                count += 1
                if fancy:
                    env.out.print(narrator.line(e), soft_wrap=True)
                else:
                    write(narrator.plain(e) + "\n")
                progress.update(e.seq)

        def show_lines(pairs: Iterator[tuple[Event, bytes]]) -> None:
            # --json: each line exactly as stored (an outside tool can re-hash the chain).
            nonlocal count
            sys.stdout.flush()
            put = sys.stdout.buffer.write
            for e, line in pairs:
                count += 1
                put(line)
                put(b"\n")
                progress.update(e.seq)

        first_until = until_seq
        if follow:
            log_path = os.path.join(ledger.path, LOG_NAME)
            seen = os.stat(log_path).st_size
            high = ledger.refresh()  # what this pass reads; later events come in the loop
            if until_seq is not None:
                high = min(high, until_seq)
            first_until = high
        try:
            if env.json:
                show_lines(ledger.event_lines(since=since, until=first_until, **kwargs))
            else:
                show(narrate(narrator, ledger.events(since=since, until=first_until, **kwargs), everything))
        finally:
            progress.close()
        if damage is not None:
            raise damage  # what stopped the ledger from opening, after what precedes it
        if not follow:
            if count == 0 and not env.json:
                env.err.print("no events match", style="dim")
            return EXIT_OK
        # --follow: watch the log's size, read what was appended.
        follow_until = until_seq if until_ns is None else None
        try:
            while True:
                if follow_until is not None and high >= follow_until:
                    return EXIT_OK
                if until_ns is not None and time.time_ns() > until_ns:
                    return EXIT_OK
                sys.stdout.flush()
                time.sleep(interval)
                size = os.stat(log_path).st_size
                if size == seen:
                    continue
                seen = size
                start = max(high + 1, since or 1)
                # Read up to the seq folded now, and remember exactly that:
                # events appended meanwhile come in the next round.
                target = ledger.refresh()
                if follow_until is not None:
                    target = min(target, follow_until)
                if target < start:
                    continue
                if env.json:
                    pairs = ledger.event_lines(since=start, until=target, **kwargs)
                    if until_ns is not None:
                        pairs = (p for p in pairs if p[0].ts <= until_ns)
                    show_lines(pairs)
                else:
                    new = ledger.events(since=start, until=target, **kwargs)
                    if until_ns is not None:
                        new = (e for e in new if e.ts <= until_ns)
                    if filtered:
                        new = narrate(narrator, new, ledger.events(since=start))
                    show(new)
                high = target
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED


# -- show, who ------------------------------------------------------------------------


@cli.command()
@common
@click.option("--at", metavar="SEQ|TIME", callback=_point,
              help="Show the tree as it was after this seq or at this time.")
@_relative_option
@pass_env
def show(env: Env, at: str | None, relative_to: str | None) -> int:
    """The live allocation tree: holders, pids, rules, delegation. Now, the
    process of each holder is probed: dead ones are marked, and so are those
    whose liveness is unknown, with the reason."""
    with env.open(readonly=True) as ledger:
        seq = _resolve(ledger, at, "--at")
        state = ledger.state_at(seq=seq) if seq is not None else ledger.state()
        live = ledger.liveness(list(state.holders.values())) if seq is None else None
        if env.json:
            from ._render import state_json

            env.emit_json(state_json(state, ledger.path, live))
        else:
            from ._render import state_tree

            title = f"ledger {ledger.path} {_at_label(state, at)}: {len(state.holders)} holder(s)"
            env.out.print(state_tree(state, title, live, _display_root(relative_to)))
    return EXIT_OK


@cli.command()
@common
@click.argument("path", callback=_path())
@click.option("--at", metavar="SEQ|TIME", callback=_point,
              help="Ask about a past point: a seq or an ISO time.")
@_relative_option
@pass_env
def who(env: Env, path: str, at: str | None, relative_to: str | None) -> int:
    """Who holds PATH, for read and for write, with the delegation chain."""
    target = _abs_path(path)
    with env.open(readonly=True) as ledger:
        seq = _resolve(ledger, at, "--at")
        holdings = ledger.who(target, seq=seq)
        state_seq = seq if seq is not None else ledger.seq
        if env.json:
            from ._render import holding_json

            env.emit_json({"ledger": ledger.path, "path": target, "seq": state_seq,
                           "holders": [holding_json(h) for h in holdings]})
        else:
            from ._render import who_table

            when = f"at seq {state_seq}" if seq is not None else f"now (seq {state_seq})"
            env.out.print(who_table(target, holdings, when, _display_root(relative_to)))
    return EXIT_OK


# -- check --------------------------------------------------------------------------------


def waitable(err: BaseException) -> bool:
    """Whether a refusal may clear by waiting: only a conflict with another
    holder (a ScopeConflict, or a DelegationError naming a sibling). A request
    outside the parent's scope, a taken name or a gone parent never clears."""
    if isinstance(err, ScopeConflict):
        return True
    return isinstance(err, DelegationError) and err.sibling is not None


def would_grant(ledger: Ledger, name: str, rules: Sequence[ScopeRule], parent: str | None,
                parent_token: int | None = None) -> tuple[Exception | None, list[tuple[str, str]]]:
    """Whether ``register``/``delegate`` would grant the request now, as the
    ledger decides it: holders in the way whose process is dead would be
    reclaimed first; a ``parent_token`` that is not the parent's live grant
    is an :class:`UnknownHolder`, as ``delegate`` raises it. Records nothing.

    Returns ``(error or None, [(reclaimed name, reason), ...])``.
    """
    state = ledger.state()
    if parent is not None:
        stale = stale_grant(state, parent, parent_token, "parent")
        if stale is not None:
            return stale, []
    rules_t = ledger._prepare(rules)  # as register would store them: symlinks resolved
    reclaimed: list[tuple[str, str]] = []

    def reclaim(n: str, reason: str) -> None:  # simulated on the copy
        ev = {"v": 2, "seq": state.seq + 1, "ts": state.last_ts, "prev": state.last_hash,
              "type": "reclaimed", "name": n, "reason": reason, "reparented": reparent_plan(state, n)}
        apply(state, ev, state.last_hash)
        reclaimed.append((n, reason))

    err = decide(state, name, rules_t, parent,
                 lambda n: run_probe(ledger.probe, state.holders[n].process), reclaim)
    return err, reclaimed


def _parent_from_env(parent: str | None, top_level: bool) -> tuple[str | None, int | None]:
    """The parent to delegate from and its token: ``--parent NAME`` (no
    token), else ``$SCOPELEDGER_HOLDER`` and ``$SCOPELEDGER_TOKEN``;
    ``--top-level``: none, whatever the variables say. (``--parent`` and
    ``--top-level`` do not look at the variables at all.)

    Raises:
        click.UsageError: ``--parent`` and ``--top-level`` together.
        CliError: (exit 2) either variable set but empty (as an empty
            ``$SCOPELEDGER_DIR``: never a silent "unset");
            ``$SCOPELEDGER_TOKEN`` set without ``$SCOPELEDGER_HOLDER``
            (ignoring it would register at top level a request meant as a
            delegation); an invalid holder name or token (see
            :func:`parse_token`).
        InvalidHolderName: ``--parent`` is not a valid holder name.
    """
    if top_level and parent is not None:
        raise click.UsageError("--parent and --top-level exclude each other")
    if top_level:
        return None, None
    if parent is not None:
        return check_name(parent), None
    env_parent = _env_value(ENV_HOLDER, "the enclosing holder's name")
    token_s = _env_value(ENV_TOKEN, "the enclosing holder's token")
    if env_parent is None:
        if token_s is not None:
            raise CliError(f"${ENV_TOKEN} is set but ${ENV_HOLDER} is not: set both (as an enclosing "
                           f"'ledger run' does), unset ${ENV_TOKEN}, or give --parent NAME or "
                           "--top-level", EXIT_USAGE)
        return None, None
    token = _env_token(token_s)
    try:
        check_name(env_parent)
    except InvalidHolderName as exc:
        raise CliError(f"invalid ${ENV_HOLDER}: {exc}", EXIT_USAGE) from None
    return env_parent, token


def _env_value(variable: str, what: str) -> str | None:
    """The value of environment variable ``variable``; ``None`` when unset.

    Raises:
        CliError: (exit 2) set but empty (or only blanks), which is never
            taken as unset: set it to ``what`` or unset it.
    """
    value = os.environ.get(variable)
    if value is not None and not value.strip():
        raise CliError(f"${variable} is set but empty: set it to {what}, or unset it "
                       "(or give --parent NAME or --top-level)", EXIT_USAGE)
    return value


def parse_token(value: str) -> int:
    """A token (the seq of a grant, as ``ledger run`` sets
    ``$SCOPELEDGER_TOKEN`` and ``ledger show`` prints it) as an ``int``
    (:func:`parse_number`, as seqs are read).

    Raises:
        ValueError: not the decimal digits of a positive integer
            (``' 5'``, ``'+5'``, ``'1_0'``, ``'05'``, ``'0'``, ``'５'`` are not),
            or more than :data:`MAX_DIGITS` digits.
    """
    return parse_number(value, "a positive integer in decimal digits (a grant's seq, as "
                               "'ledger run' sets it)", minimum=1)


def _env_token(value: str | None) -> int | None:
    """``$SCOPELEDGER_TOKEN``'s value as an int (``None`` when unset).

    Raises:
        CliError: (exit 2) not a token (see :func:`parse_token`).
    """
    if value is None:
        return None
    try:
        return parse_token(value)
    except ValueError as exc:
        raise CliError(f"invalid ${ENV_TOKEN} {exc}", EXIT_USAGE) from None


class TokenType(click.ParamType):
    """``--token N``: a token as :func:`parse_token` takes it."""

    name = "token"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_token(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _check_enclosing(ledger: Ledger, parent: str | None, token: int | None) -> None:
    """For ``run`` and ``check``: the enclosing holder's grant, named by
    ``$SCOPELEDGER_HOLDER`` with ``$SCOPELEDGER_TOKEN``, must still be live.

    Raises:
        CliError: (exit 6) the grant of that token is no longer live (the
            holder was released, reclaimed or granted again).
    """
    if parent is not None and token is not None and not ledger.check(parent, token):
        raise CliError(f"the enclosing holder '{parent}' (token {token}, from ${ENV_HOLDER}) "
                       "is no longer live", EXIT_NOT_FOUND)


def _rule_options(f: Callable[..., Any]) -> Callable[..., Any]:
    # No click.Path: load_manifest reads and refuses it (a directory, a FIFO,
    # a missing file), in the words docs/cli.md gives, for run and check alike.
    f = click.option("--manifest", metavar="FILE", callback=_not_empty("give a manifest file"),
                     help="Take the name and rules from a runtime manifest (TOML).")(f)
    f = click.option("--root", metavar="DIR",
                     callback=_directory("omit it, or give '.', for the working directory"),
                     help="Base of relative rules (default: the working directory).")(f)
    f = click.option("--read", "reads", multiple=True, metavar="RULE",
                     help="A read rule (repeatable).")(f)
    f = click.option("--write", "writes", multiple=True, metavar="RULE",
                     help="A write rule (repeatable): PATH or PATH/** recursive, PATH/* the "
                          "directory and its direct children.")(f)
    return f


def _request(writes: Sequence[str], reads: Sequence[str], root: str | None,
             manifest: str | None, name: str | None) -> tuple[str | None, list[ScopeRule]]:
    rules = _rules_from(writes, reads, root)
    if manifest is not None:
        m = load_manifest(manifest)
        rules = list(m.rules) + rules
        name = name or m.name
    if not rules:
        raise click.UsageError("no rules: give at least one --write or --read (or --manifest)")
    return name, rules


#: The requester's name in ``check``'s answer when no --name is given (not a
#: valid holder name, so it cannot collide with a real one).
CHECK_PLACEHOLDER = "(check)"


@cli.command()
@common
@_rule_options
@click.option("--name", metavar="NAME", callback=_holder_name,
              help="Also check that the name is free.")
@click.option("--parent", metavar="NAME", callback=_holder_name,
              help=f"Ask as a delegation from NAME (default: ${ENV_HOLDER}, when set).")
@click.option("--top-level", is_flag=True, help=f"Ask at top level, ignoring ${ENV_HOLDER}.")
@_relative_option
@pass_env
def check(env: Env, writes: tuple[str, ...], reads: tuple[str, ...], root: str | None,
          manifest: str | None, name: str | None, parent: str | None, top_level: bool,
          relative_to: str | None) -> int:
    """Would this request be granted now? Exit 0 if yes, 1 if not (naming the
    owner chain). Holders in the way whose process is dead do not count: the
    request itself would reclaim them. Records nothing. Inside 'ledger run'
    it asks as a delegation from SCOPELEDGER_HOLDER, and a stale
    SCOPELEDGER_TOKEN is an error (exit 6), as for a nested 'ledger run'."""
    name, rules = _request(writes, reads, root, manifest, name)
    parent, token = _parent_from_env(parent, top_level)
    with env.open(readonly=True) as ledger:
        _check_enclosing(ledger, parent, token)
        rules = list(ledger._prepare(rules))  # shown as the ledger would store them
        err, reclaimed = would_grant(ledger, name or CHECK_PLACEHOLDER, rules, parent, token)
        if isinstance(err, UnknownHolder):
            # The parent is not live: an error (as 'run' reports it), not a
            # refusal of the request.
            raise err
        from ._render import rules_text

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
        else:
            from ._render import REASONS, rel_message, safe

            shown = _display_root(relative_to)
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
        return EXIT_OK if err is None else EXIT_REFUSED


# -- history, diff, verify, snapshot, reclaim, release --------------------------------------


@cli.command()
@common
@click.argument("name", callback=_holder_name)
@_relative_option
@pass_env
def history(env: Env, name: str, relative_to: str | None) -> int:
    """Every event about holder NAME and the holders it delegated to: grants,
    attaches, refusals, re-parenting, releases and reclaims."""
    with env.open(readonly=True) as ledger:
        from ._render import narrate, styled

        if env.json:  # each line exactly as stored, as replay --json
            sys.stdout.flush()
            for _e, line in ledger.event_lines(holder=name):
                sys.stdout.buffer.write(line + b"\n")
            return EXIT_OK
        events = ledger.history(name)
        narrator, everything = _narrator(ledger, None, True, _display_root(relative_to))
        fancy = styled(env.out)
        for e in narrate(narrator, events, everything):
            if fancy:
                env.out.print(narrator.line(e), soft_wrap=True)
            else:
                sys.stdout.write(narrator.plain(e) + "\n")
        if not events and not env.json:
            env.err.print(f"no events about holder '{name}'", style="dim")
    return EXIT_OK


@cli.command()
@common
@click.argument("a", metavar="A", callback=_point)
@click.argument("b", metavar="B", callback=_point)
@pass_env
def diff(env: Env, a: str, b: str) -> int:
    """What changed between two points A and B (each a seq or an ISO time):
    holders added, removed, re-parented, re-bound, re-granted."""
    with env.open(readonly=True) as ledger:
        d = ledger.diff(_resolve(ledger, a, "A"), _resolve(ledger, b, "B"))  # type: ignore[arg-type]
        if env.json:
            from ._render import diff_json

            env.emit_json(diff_json(d))
        else:
            from ._render import diff_lines

            for line in diff_lines(d):
                env.out.print(line, soft_wrap=True)
    return EXIT_OK


@cli.command()
@click.option("--workers", type=_Integer(1, 256), default=None, metavar="N",
              help="Processes to verify with (default: one per CPU, at most 8, for logs over 32 MB; "
                   "else 1).")
@common
@pass_env
def verify(env: Env, workers: int | None) -> int:
    """Check the whole log and every snapshot: format, gapless seqs, the hash
    chain, that every event applies and every grant was grantable, that every
    snapshot equals the fold. Exit 1 on any problem, naming file, line, seq."""
    from ._ledger import verify as verify_dir
    from ._render import verify_json

    if _missing(env.path):
        env.open(readonly=True)  # the one-line "no ledger at ..." error
    # Works on a ledger that open() refuses as corrupt.
    report = verify_dir(env.path, workers=workers)
    if env.json:
        env.emit_json({"ledger": env.path, **verify_json(report)})
    else:
        from ._render import safe, verify_text

        if report.ok:
            env.out.print(safe(verify_text(report, env.path)), soft_wrap=True, markup=False)
        for p in report.problems:
            env.err.print(safe(f"problem: {p}"), soft_wrap=True, markup=False)
        for n in report.notes:
            env.out.print(safe(f"note: {n}"), soft_wrap=True, markup=False)
    return EXIT_OK if report.ok else EXIT_REFUSED


@cli.command()
@common
@pass_env
def snapshot(env: Env) -> int:
    """Write a snapshot of the current state now (the ledger also writes them
    by itself every so many events)."""
    with env.open() as ledger:
        seq = ledger.snapshot()
        if env.json:
            env.emit_json({"ledger": ledger.path, "seq": seq, "written": seq > 0})
        elif seq:
            from ._render import safe

            env.out.print(safe(f"snapshot at seq {seq} in {ledger.path}"), markup=False, soft_wrap=True)
        else:
            env.out.print("nothing to snapshot: the log is empty")
    return EXIT_OK


@cli.command()
@common
@click.option("-n", "--dry-run", is_flag=True, help="Report what would be reclaimed; record nothing.")
@pass_env
def reclaim(env: Env, dry_run: bool) -> int:
    """Reclaim every holder whose process is provably gone: exited, a zombie,
    its pid reused, from an earlier boot of this host, or its PID namespace
    gone. Children are re-parented. Holders whose liveness cannot be decided
    are kept, each with the reason."""
    from ._render import REASONS, safe

    with env.open(readonly=dry_run) as ledger:
        partly: PartlyRecorded | None = None
        before = ledger.state()
        try:
            report = ledger.reclaim(dry_run=dry_run)
        except PartlyRecorded as exc:  # the disk filled up part way: say what was recorded
            partly = exc
            names = {n for _, kind, n in exc.recorded if kind == "reclaimed"}
            got = [e for e in ledger.events(since=before.seq + 1, types=["reclaimed"]) if e.data["name"] in names]
            report = ReclaimReport(tuple(
                Reclaimed(e.data["name"], e.data["reason"], "", before.holders[e.data["name"]].pid, e.seq,
                          tuple((c, p) for c, p in e.data["reparented"]))
                for e in got if e.data["name"] in before.holders), ())
        pids = {a.name: a.pid for a in before.holders.values()}
        unknown = [{"name": n, "pid": pids.get(n), "why": v.why} for n, v in report.unknown]
        rows = [{"name": r.name, "reason": r.reason, "why": r.why, "pid": r.pid, "seq": r.seq,
                 "reparented": [list(m) for m in r.reparented]} for r in report.reclaimed]
        if env.json:
            env.emit_json({"ledger": ledger.path, "dry_run": dry_run, "reclaimed": rows, "unknown": unknown})
        else:
            verb = "would reclaim" if dry_run else "reclaimed"
            for r in rows:
                moves = ", ".join(f"'{c}' to '{p}'" if p else f"'{c}' to top level"
                                  for c, p in r["reparented"])
                extra = f"; re-parented {moves}" if moves else ""
                why = f": {r['why']}" if r["why"] else ""
                env.out.print(safe(f"{verb} '{r['name']}' (pid {r['pid']}): "
                                   f"{REASONS.get(r['reason'], r['reason'])}{why}{extra}"),
                              markup=False, soft_wrap=True)
            for u in unknown:
                env.out.print(safe(f"kept '{u['name']}' (pid {u['pid']}): liveness unknown: {u['why']}"),
                              markup=False, soft_wrap=True)
            if not rows and partly is None:
                if not report.kept:
                    env.out.print("nothing to reclaim: no live holders")
                elif not unknown:
                    env.out.print("nothing to reclaim: every holder's process is alive")
                else:
                    alive = len(report.kept) - len(unknown)
                    env.out.print(f"nothing to reclaim: {alive} holder(s) alive, {len(unknown)} of "
                                  "unknown liveness (kept, as above)")
        if partly is not None:
            raise partly
    return EXIT_OK


@cli.command()
@common
@click.argument("name", callback=_holder_name)
@click.option("--token", type=TokenType(), metavar="N",
              help="Release only while this exact grant is live (its token, as 'show' prints it).")
@pass_env
def release(env: Env, name: str, token: int | None) -> int:
    """Release holder NAME by hand (an operator's tool: normally its process
    or 'ledger run' releases it). Its children are re-parented."""
    with env.open() as ledger:
        moved = ledger.release(name, token=token)
        if env.json:
            env.emit_json({"ledger": ledger.path, "name": name, "reparented": moved})
        else:
            env.out.print(f"released '{name}'" + (f"; re-parented {', '.join(moved)}" if moved else ""))
    return EXIT_OK


# -- run -------------------------------------------------------------------------------------


class _Interrupted(Exception):
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


class _Runner:
    """``ledger run``: acquire, fork a gated child, bind the allocation to it,
    let it exec, forward signals, wait, release."""

    def __init__(self, env: Env, ledger: Ledger, name: str, rules: list[ScopeRule],
                 parent: str | None, command: Sequence[str], quiet: bool,
                 parent_token: int | None = None) -> None:
        self.env = env
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
                from ._render import safe

                self.env.err.print(safe(message), markup=False, soft_wrap=True)

    # acquisition
    def _try(self) -> None:
        old = self.block()
        try:
            if self.parent is None:
                self.alloc = self.ledger.register(self.name, self.rules)
            else:
                self.alloc = self.ledger.delegate(self.parent, self.name, self.rules,
                                                  parent_token=self.parent_token)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _dry_check(self) -> Exception | None:
        """Whether the request would be granted now, as ``check`` decides it
        (dead holders in the way count as reclaimable). Records nothing."""
        return would_grant(self.ledger, self.name, self.rules, self.parent, self.parent_token)[0]

    def acquire(self, wait: float | None) -> None:
        """``wait``: 0 fail at once, None for ever, else seconds.

        Only a conflict with another holder is waited for (:func:`waitable`);
        any other refusal fails at once. The first refused attempt is
        recorded (once); after it, the request is only checked dry, and asked
        for again when the dry check says it would be granted now.
        """
        deadline = None if wait is None else time.monotonic() + wait
        log_path = os.path.join(self.ledger.path, LOG_NAME)
        backoff = 0.05
        noticed = False
        last: Exception | None = None
        while True:
            if last is None:
                try:
                    self._try()
                    return
                except Refused as exc:
                    if not waitable(exc):
                        raise
                    last = exc
            else:
                err = self._dry_check()
                if err is None:
                    # Others may have seen the same opening: spread the
                    # retries out and look again, so that only the first one
                    # asks (a lost race would record a second refusal).
                    time.sleep(random.uniform(0.0, RETRY_JITTER))
                    err = self._dry_check()
                if err is None:
                    try:
                        self._try()
                        return
                    except Refused as exc:  # taken meanwhile: rare, recorded once more
                        if not waitable(exc):
                            raise
                        last = exc
                elif not waitable(err):
                    raise err  # cannot clear by waiting (e.g. the parent is gone)
                else:
                    last = err
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if wait:
                    raise CliError(f"timed out after {wait:g}s waiting for the scope: "
                                   f"{message_of(last)}", EXIT_REFUSED, "refused") from last
                raise last
            if not noticed:
                self.say(f"Blocking waiting for the scope: {message_of(last)}")
                noticed = True
            # Wait politely: watch the log's size (a stat, no lock) and check
            # again when something was appended, or after the backoff (a
            # holder in the way may have died: the dry check sees that).
            try:
                size = os.stat(log_path).st_size
            except OSError:
                size = -1
            until = time.monotonic() + backoff * random.uniform(0.8, 1.2)
            if deadline is not None:
                until = min(until, deadline)
            while time.monotonic() < until:
                time.sleep(min(0.05, max(0.0, until - time.monotonic())))
                try:
                    if os.stat(log_path).st_size != size:
                        break
                except OSError:
                    pass
            backoff = min(backoff * 2, 1.0)

    # the child
    def spawn(self) -> tuple[int, int]:
        """Fork a child that waits at a gate; returns (gate write end, exec
        error read end)."""
        env = dict(os.environ)
        env[ENV_DIR] = self.ledger.path
        env[ENV_HOLDER] = self.name
        env[ENV_TOKEN] = str(self.alloc.token)
        gate_r, gate_w = os.pipe()
        err_r, err_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: no Python-level cleanup, ever
            try:
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

    def release(self) -> None:
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
            pass  # already reclaimed or released by an operator
        except LedgerError as exc:
            self.say(f"warning: could not release '{alloc.name}': {message_of(exc)}; its command "
                     "has exited, so the next request that needs its scope reclaims it")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def run(self, wait: float | None) -> int:
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
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            # While the command runs, this process only waits: it keeps no
            # folded state (1 M holders: ~1.8 GB per waiting wrapper); the
            # release folds it again from the newest snapshot.
            self.ledger.unload()
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


@cli.command(context_settings={"allow_interspersed_args": False})
@common
@_rule_options
@click.option("--name", metavar="NAME", callback=_holder_name,
              help="Holder name (default: the command's name and this pid).")
@click.option("-n", "--nonblock", is_flag=True, help="Fail at once if the scope is held.")
@click.option("-w", "--wait", "wait", type=SECONDS, metavar="SECONDS",
              help="Wait at most SECONDS for the scope (default: wait for ever).")
@click.option("-E", "--conflict-exit-code", type=_Integer(0, 255), default=EXIT_REFUSED,
              show_default=True, help="Exit code when the scope is not granted.")
@click.option("--parent", metavar="NAME", callback=_holder_name,
              help=f"Delegate from holder NAME (default: ${ENV_HOLDER}, set by an enclosing 'ledger run').")
@click.option("--top-level", is_flag=True, help=f"Register at top level, ignoring ${ENV_HOLDER}.")
@click.option("-q", "--quiet", is_flag=True, help="No notice while waiting.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_env
def run(env: Env, writes: tuple[str, ...], reads: tuple[str, ...], root: str | None,
        manifest: str | None, name: str | None, nonblock: bool, wait: float | None,
        conflict_exit_code: int, parent: str | None, top_level: bool, quiet: bool,
        command: tuple[str, ...]) -> int:
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
    name, rules = _request(writes, reads, root, manifest, name)
    name = name if name is not None else _default_name(command)
    parent, token = _parent_from_env(parent, top_level)
    with env.open(create=True) as ledger:
        _check_enclosing(ledger, parent, token)
        runner = _Runner(env, ledger, name, rules, parent, command, quiet, token)
        try:
            return runner.run(0 if nonblock else wait)
        except (Refused, CliError) as exc:
            if isinstance(exc, CliError) and exc.kind != "refused":
                raise
            _report(env, exc, conflict_exit_code)
            return conflict_exit_code


# -- timeline and export (issue 17) ------------------------------------------------------
# Pictures and exports of the log for other tools. The work is done in _timeline.py (events
# -> bars, pure), _plot.py (the drawing, matplotlib: the 'plot' extra) and _export.py (CSV,
# Parquet: the 'parquet' extra, Trace Event JSON), from what the public API gives
# (Ledger.events, Ledger.state_at); nothing here imports matplotlib or pyarrow until a
# command needs it.

#: The optional extras, and the module each brings.
EXTRAS = {"plot": "matplotlib", "parquet": "pyarrow"}

#: The export formats, and whether each writes bytes (not text).
EXPORT_FORMATS = {"csv": False, "trace": True, "parquet": True}

#: Rows a timeline draws at most by default (one more is the aggregate).
TIMELINE_MAX_ROWS = 40


def _extra_missing(extra: str, what: str) -> CliError:
    """The error for a command that needs an optional extra not installed:
    what the environment lacks, so exit 2 without the --help hint."""
    return CliError(f"{what} needs {EXTRAS[extra]}, which is not installed: install the "
                    f"'{extra}' extra, pip install 'scopeledger[{extra}]'", EXIT_USAGE)


def _output_path(extensions: Sequence[str] | None = None) -> Callable[..., Any]:
    """A click callback for ``-o FILE``: not empty, ``-`` (stdout) kept as
    is, else a file in an existing directory (and with ``extensions``, one
    of them), checked before any ledger is opened.

    The callback raises:
        click.BadParameter: empty, a directory, in a directory that does
            not exist, or (``extensions``) another extension.
    """
    empty = _not_empty("give a file name, or '-' for stdout")

    def cb(ctx: click.Context, p: click.Parameter, value: Any) -> Any:
        value = empty(ctx, p, value)
        if value is None or value == "-":
            return value
        if extensions is not None and os.path.splitext(value)[1].lower() not in extensions:
            raise click.BadParameter(f"{value!r}: the file name must end in {' or '.join(extensions)} "
                                     "(the picture's format)")
        path = os.path.abspath(value)
        if os.path.isdir(path):
            raise click.BadParameter(f"{path} is a directory: give a file name")
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            problem = _not_a_directory(parent)
            raise click.BadParameter(problem or f"directory {parent} does not exist")
        return value

    return cb


def _window_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--from``, ``--until``, ``--holder``, ``--path``: as ``replay``'s."""
    for opt in reversed((
        click.option("--from", "from_", metavar="SEQ|TIME", callback=_point,
                     help="First event: a seq or an ISO time."),
        click.option("--until", metavar="SEQ|TIME", callback=_point, help="Last event: a seq or an ISO time."),
        click.option("--holder", metavar="NAME", callback=_holder_name,
                     help="Only NAME and the holders it delegated to."),
        click.option("--path", "path_", metavar="PATH", callback=_path(),
                     help="Only holders and requests whose rules overlap PATH."),
    )):
        f = opt(f)
    return f


class _Window:
    """The events of ``--from``/``--until``/``--holder``/``--path``, the
    holders already live when it begins, and its end, from the public API."""

    def __init__(self, ledger: Ledger, from_: str | None, until: str | None, holder: str | None,
                 path_: str | None) -> None:
        from ._timeline import seed

        self.ledger = ledger
        self.path = _abs_path(path_) if path_ is not None else None
        self.holder = holder
        self.since = _resolve(ledger, from_, "--from", "start")
        until_seq = _resolve(ledger, until, "--until", "end")
        last = ledger.seq
        self.until = min(until_seq, last) if until_seq is not None else None
        end_seq = self.until if self.until is not None else last
        self.end = (self._ts(end_seq), end_seq) if end_seq > 0 else None
        self.live = []
        if self.since is not None and 1 < self.since <= last:  # (past the last event: an empty window)
            before = ledger.state_at(seq=self.since - 1)
            start_ns = self._ts(self.since)
            probe = ScopeRule(self.path, "read", True) if self.path is not None else None
            self.live = seed(before.holders.values(), start_ns, self.since, holder=holder, path=probe)

    def _ts(self, seq: int) -> int:
        e = next(iter(self.ledger.events(since=seq, until=seq)), None)
        return e.ts if e is not None else 0

    def events(self) -> Iterator[Event]:
        return self.ledger.events(since=self.since, until=self.until, holder=self.holder, path=self.path)


def draw_timeline(ledger: Ledger, output: str, window: _Window | None = None, max_rows: int = TIMELINE_MAX_ROWS,
                  root: str | None = None, title: str | None = None) -> dict[str, Any]:
    """Draw the timeline of ``window`` (default: the whole log) of
    ``ledger`` into the file ``output`` (.png or .svg, mode 0600, replaced
    atomically); ``ledger timeline`` and ``ledger demo --timeline``.
    Returns a summary (the ``--json`` shape).

    Raises:
        CliError: matplotlib is not installed (exit 2).
    """
    from ._export import output_file
    from ._timeline import build, select_rows

    try:
        from . import _plot
        import matplotlib  # noqa: F401
    except ImportError:
        raise _extra_missing("plot", "ledger timeline") from None
    w = window or _Window(ledger, None, None, None, None)
    start_ns = w.live[0].start_ns if w.live else None
    tl = build(w.events(), w.live, start_ns=start_ns, start_seq=w.since or 0)
    if w.end is not None and not tl.empty:
        tl = tl._replace(end_ns=max(tl.end_ns, w.end[0]), last_seq=max(tl.last_seq, w.end[1]))
    layout = select_rows(tl, max_rows)
    fmt = _plot.FORMATS[os.path.splitext(output)[1].lower()]
    what = [f"holder {w.holder}" if w.holder else "", f"path {w.path}" if w.path else ""]
    heading = title or "ledger timeline: " + (" ".join(x for x in what if x) or ledger.path)
    with output_file(output) as f:
        drawn = _plot.draw(tl, layout, f, fmt, title=heading, root=root)
    return {"output": os.path.abspath(output), "format": fmt, "first_seq": tl.first_seq,
            "last_seq": tl.last_seq, "bars": len(tl.bars), "refusals": len(tl.marks),
            "rows": len(layout.rows), "hidden": len(layout.hidden), "note": drawn.note,
            "width": drawn.width, "height": drawn.height}


@cli.command()
@common
@click.option("-o", "--output", required=True, metavar="FILE.png|FILE.svg",
              callback=_output_path((".png", ".svg")), help="The picture to write (.png or .svg).")
@_window_options
@click.option("--max-rows", type=_Integer(2, 100_000), default=TIMELINE_MAX_ROWS, show_default=True,
              metavar="N", help="Rows drawn at most; more are counted in one aggregate row.")
@_relative_option
@pass_env
def timeline(env: Env, output: str, from_: str | None, until: str | None, holder: str | None,
             path_: str | None, max_rows: int, relative_to: str | None) -> int:
    """Draw the holders across time: one bar per grant, nested under its
    delegator, coloured by how it ended (released, reclaimed and why, still
    held); refusals marked where they happened. Needs the 'plot' extra
    (pip install 'scopeledger[plot]')."""
    if output == "-":
        raise click.BadParameter("a picture goes to a file: give FILE.png or FILE.svg", param_hint="'-o'")
    with env.open(readonly=True) as ledger:
        window = _Window(ledger, from_, until, holder, path_)
        summary = draw_timeline(ledger, output, window, max_rows, _display_root(relative_to))
    if env.json:
        env.emit_json(summary)
    else:
        from ._render import safe

        said = (f"wrote {summary['output']}: {summary['bars']} grant(s), {summary['refusals']} refusal(s), "
                f"seq {summary['first_seq']} to {summary['last_seq']}")
        if summary["hidden"]:
            said += f"; {summary['hidden']} holder(s) counted in one row, not drawn (see --max-rows)"
        env.err.print(safe(said), markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


@cli.command()
@common
@click.option("--format", "format_", type=click.Choice(sorted(EXPORT_FORMATS)), required=True,
              help="csv: one row per event; parquet: the same (the 'parquet' extra); trace: Trace "
                   "Event JSON for Perfetto and chrome://tracing.")
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True, callback=_output_path(),
              help="Where to write ('-': stdout; parquet needs a file).")
@_window_options
@pass_env
def export(env: Env, format_: str, output: str, from_: str | None, until: str | None,
           holder: str | None, path_: str | None) -> int:
    """Write the events for other tools: CSV or Parquet (one row per event,
    columns in docs/cli.md) for spreadsheets, pandas and DuckDB; Trace Event
    JSON (one track per holder, nested by delegation, refusals as instant
    events) for Perfetto and chrome://tracing. Streams: a long log needs no
    more memory than a short one."""
    from . import _export

    if format_ == "parquet":
        if output == "-":
            raise click.BadParameter("parquet goes to a file: give -o FILE", param_hint="'-o'")
        if not _export.parquet_available():
            raise _extra_missing("parquet", "ledger export --format parquet")
    if env.json and output == "-":
        raise click.BadParameter("--json prints a summary: give -o FILE for the export itself",
                                 param_hint="'--json'")
    with env.open(readonly=True) as ledger:
        window = _Window(ledger, from_, until, holder, path_)

        def write(f: Any) -> int:
            if format_ == "csv":
                return _export.write_csv(window.events(), f)
            if format_ == "parquet":
                return _export.write_parquet(window.events(), f)
            return _export.write_trace(window.events(), f, window.live, window.end,
                                       {"ledger": ledger.path, "exported_by": f"scopeledger {__version__}"})

        if output == "-":
            sys.stdout.flush()
            if EXPORT_FORMATS[format_]:
                count = write(sys.stdout.buffer)
            else:
                import io

                text = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=False)
                try:
                    count = write(text)
                    text.flush()
                finally:
                    text.detach()
        else:
            with _export.output_file(output, binary=EXPORT_FORMATS[format_]) as f:
                count = write(f)
    if env.json:
        env.emit_json({"output": os.path.abspath(output), "format": format_, "events": count})
    elif output != "-":
        env.err.print(f"wrote {count} event(s) to {os.path.abspath(output)}", markup=False,
                      highlight=False, soft_wrap=True)
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------------


#: Why ``demo`` takes no ``--ledger`` (given before or after ``demo``).
DEMO_NO_LEDGER = ("'ledger demo' makes its own ledger, in a new temporary directory (or under "
                  "--dir DIR): --ledger is not taken")


def _no_ledger_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """A hidden ``--ledger`` (not in ``--help``) that refuses itself with a
    usage error saying why, instead of click's bare "no such option"."""

    def cb(_ctx: click.Context, _p: click.Parameter, value: str | None) -> None:
        if value is not None:
            raise click.UsageError(DEMO_NO_LEDGER)

    return click.option("--ledger", "ledger_dir", metavar="DIR", expose_value=False, hidden=True,
                        callback=cb, is_eager=True)(f)


@cli.command()
@_no_ledger_option
@_json_option
@click.option("--dir", "dir_", metavar="DIR",
              callback=_path("omit it for a new temporary directory", directory=True),
              help="Where to build the demo (default: a new temporary directory).")
@click.option("--keep/--clean", default=True, show_default=True,
              help="Keep the demo's tree and ledger to explore afterwards, or remove them.")
@click.option("--timeline", metavar="FILE.png|FILE.svg", callback=_output_path((".png", ".svg")),
              help="Also draw the demo's timeline into FILE (as 'ledger timeline'; the 'plot' extra).")
@pass_env
def demo(env: Env, dir_: str | None, keep: bool, timeline: str | None) -> int:
    """A tour on real processes in a real temporary tree: a runtime delegates
    to a builder, which delegates to workers; one worker finishes, one is
    killed with SIGKILL, one is left a zombie; a newcomer is refused, reclaim
    frees the dead, the newcomer gets in. Then it replays what happened.
    It makes its own ledger (with the tree, in --dir), so --ledger is not
    taken."""
    from ._demo import run_demo

    if env.ledger_dir is not None:  # 'ledger --ledger DIR demo'
        raise click.UsageError(DEMO_NO_LEDGER)
    if timeline == "-":
        raise click.BadParameter("a picture goes to a file: give FILE.png or FILE.svg",
                                 param_hint="'--timeline'")
    if timeline is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _extra_missing("plot", "ledger demo --timeline") from None
    return run_demo(env, dir_, keep, timeline)


# -- entry point --------------------------------------------------------------------------


def _asks_for_json(args: Sequence[str]) -> bool:
    """Whether ``--json`` is among the arguments before ``--`` (after it, they
    are ``run``'s COMMAND): for a usage error raised while click parsed the
    options, before the ``--json`` option's callback could say so."""
    for a in args:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False


def _report(env: Env | None, exc: BaseException, code: int) -> None:
    """Say on stderr, in one line, that ``exc`` ended the command (and, with
    ``--json``, print its JSON): control characters escaped (:func:`one_line`)."""
    message = one_line(exc)
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    try:
        if env is not None and env.json:
            stream = sys.stderr if env.json_to_stderr else sys.stdout
            stream.write(json_text(error_json(exc, code), default=str) + "\n")
            stream.flush()
            if env.json_to_stderr:
                return  # 'run': its stderr carries JSON documents only; this one is the error
        from ._render import safe

        sys.stderr.write(f"error: {safe(message)}\n")  # the --help hint's program name too
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _reserve_std_fds() -> None:
    """Open /dev/null on any of fds 0, 1, 2 that is closed (``>&-``), so that
    no file the ledger opens lands on them and ``sys.stdout``/``sys.stderr``
    exist (Python sets them to None when the fd was closed at start)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
            except OSError:  # pragma: no cover
                continue
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            else:
                # os.open makes it close-on-exec (dup2 does not): 'run''s
                # COMMAND must get /dev/null there too, not a closed stream.
                os.set_inheritable(fd, True)
    if sys.stdin is None:
        sys.stdin = open(0, "r", closefd=False)  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                          closefd=False, buffering=1)


class _LogHandler(logging.Handler):
    """The library's log records on stderr: ``warning: ...`` for warnings
    and worse, the message alone for notices (INFO); control characters
    escaped. For ``run --json`` (whose stderr carries JSON documents only)
    ``{"warning": ...}`` and ``{"notice": ...}``, the message exact."""

    #: The command line's options (``main`` sets it).
    env: "Env | None" = None

    def emit(self, record: logging.LogRecord) -> None:
        from ._render import safe

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
                line = message
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - never let a log line break a command
            pass


def _install_log_handler(env: Env | None = None) -> None:
    logger = logging.getLogger("scopeledger")
    handlers = [h for h in logger.handlers if isinstance(h, _LogHandler)]
    if not handlers:
        handlers = [_LogHandler(logging.INFO)]
        logger.addHandler(handlers[0])
    for h in handlers:
        h.env = env
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run the command line and exit with its code."""
    _reserve_std_fds()
    env = Env()
    _install_log_handler(env)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "ledger"
    if prog in ("__main__.py", "-m", "-c") or not prog:
        prog = "ledger"
    code: int
    args = list(argv) if argv is not None else sys.argv[1:]
    if not args:
        # Bare 'ledger': the help, on stdout, and exit 2 (nothing was done).
        with click.Context(cli, info_name=prog, obj=env, **cli.context_settings) as ctx:
            sys.stdout.write(cli.get_help(ctx) + "\n")
        sys.stdout.flush()
        sys.exit(EXIT_USAGE)
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name=prog,
                      standalone_mode=False, obj=env)
        code = rv if isinstance(rv, int) else EXIT_OK
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `ledger replay | head`): stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        code = EXIT_REFUSED  # as click does for EPIPE
    except (click.ClickException, LedgerError, CliError, OSError) as exc:
        code = exit_code_for(exc)
        if isinstance(exc, click.UsageError) and _asks_for_json(args):
            env.json = True  # a usage error before click reached the command's --json
        _report(env, exc, code)
    except Exception as exc:  # noqa: BLE001 - a bug; say so in one line
        if os.environ.get("SCOPELEDGER_DEBUG"):
            raise
        code = EXIT_INTERNAL
        _report(env, RuntimeError(f"internal error: {type(exc).__name__}: {exc} "
                                  "(set SCOPELEDGER_DEBUG=1 for a traceback)"), code)
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
