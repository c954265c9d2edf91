"""What the command line takes: the group's options and their context (:class:`Env`),
the parameter types and callbacks that check a value before any ledger is opened (paths,
holder names, rules, manifests, tokens, seconds, integers), the one parser of points in
time (:func:`parse_point`: a seq or an ISO time), and the command classes.

A bad value is a usage error (exit 2) naming the option, found while click parses it.
Imports nothing from the library until a value needs it (``ledger --help`` stays light).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import stat
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import click

from .errors import EXIT_NOT_FOUND, EXIT_USAGE, CliError, json_text, message_of

if TYPE_CHECKING:
    from scopeledger import Ledger, ScopeRule

#: The environment variable naming the ledger directory: the library's
#: ``scopeledger.ENV_DIR`` (a test checks they agree), written out here so that
#: ``ledger --help`` does not import the library to print it.
ENV_DIR = "SCOPELEDGER_DIR"

#: Environment variables ``ledger run`` sets for its command (with :data:`ENV_DIR`).
ENV_HOLDER = "SCOPELEDGER_HOLDER"
ENV_TOKEN = "SCOPELEDGER_TOKEN"

#: ``scheme://``: a URL (the plain string test the library makes too).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_postgresql_url(value: str) -> bool:
    """Whether ``value`` names a ledger on a PostgreSQL server
    (``postgresql://`` or ``postgres://``, any case) rather than a
    directory: the test ``scopeledger.Ledger.open`` makes."""
    scheme, sep, _ = value.partition("://")
    return bool(sep) and scheme.lower() in ("postgresql", "postgres")


def where(value: str) -> str:
    """A ledger given on the command line (``--ledger``, ``$SCOPELEDGER_DIR``,
    ``init``'s, ``export``'s and ``import``'s arguments) as it is opened: a
    PostgreSQL URL as it is, a directory resolved as the OS reaches it
    (:func:`scopeledger.resolve_path`).

    Raises:
        InvalidLedgerURL: another ``scheme://`` (exit 2).
    """
    if is_postgresql_url(value):
        return value
    from scopeledger import resolve_path

    return resolve_path(value)


def shown(location: str) -> str:
    """A ledger's location as messages and ``--json`` show it: a URL with
    its password replaced by ``***`` (:func:`scopeledger.redact_url`), a
    directory as it is."""
    if _URL.match(location):
        from scopeledger import redact_url

        return redact_url(location)
    return location


#: The client session's ttl of a ledger on PostgreSQL, seconds (default: the library's).
ENV_SESSION_TTL = "SCOPELEDGER_SESSION_TTL"


def session_ttl_from_env() -> float | None:
    """``$SCOPELEDGER_SESSION_TTL`` as seconds, or ``None`` when unset.

    Raises:
        CliError: (exit 2) not a number of seconds the library takes
            (``scopeledger.SESSION_TTL_RANGE``: 0.01 to 86400), naming its range.
    """
    raw = os.environ.get(ENV_SESSION_TTL)
    if raw is None:
        return None
    from scopeledger import SESSION_TTL_RANGE

    lo, hi = SESSION_TTL_RANGE
    try:
        ttl = float(raw)
    except ValueError:
        ttl = math.nan
    if not lo <= ttl <= hi:  # (NaN too)
        raise CliError(f"${ENV_SESSION_TTL} must be a number of seconds from {lo:g} to {hi:g}, "
                       f"not {_shown(raw)}", EXIT_USAGE)
    return ttl


def check_postgresql_client(location: str) -> None:
    """For a ledger at a PostgreSQL URL: psycopg 3 must be installed.

    Raises:
        CliError: (exit 2, what the environment lacks) it is not.
    """
    if is_postgresql_url(location):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            raise CliError(f"{shown(location)}: a ledger on PostgreSQL needs psycopg 3, which is not "
                           "installed: install the 'postgresql' extra, pip install "
                           "'scopeledger[postgresql]'", EXIT_USAGE)


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
        self.progress = True  # --no-progress: False (scopeledger.cli.progress)
        self.zone: Any = None  # --local, --tz: how human output shows times (render.LOCAL, a tzinfo; None: UTC)
        self._out: Any = None
        self._err: Any = None

    @property
    def path(self) -> str:
        """The selected ledger, ``str``: ``--ledger DIR|URL``, else
        :func:`scopeledger.default_path` (``$SCOPELEDGER_DIR``, else the state
        directory); a directory absolute, resolved as the OS reaches it
        (:func:`scopeledger.resolve_path`), a PostgreSQL URL as given (with
        its password, if it has one: show :attr:`shown` instead).

        Raises:
            CliError: (exit 2) ``$SCOPELEDGER_DIR`` is set but empty.
            InvalidLedgerURL: a URL of another scheme (exit 2).
        """
        from scopeledger import NoLedger, default_path

        if self.ledger_dir is not None:
            # As the OS reaches it: a '..' after a symlink is the link target's parent.
            return where(self.ledger_dir)
        try:
            return where(default_path())
        except NoLedger as exc:  # $SCOPELEDGER_DIR set but empty: the library's rule, a usage error here
            raise CliError(message_of(exc), EXIT_USAGE) from None

    @property
    def shown(self) -> str:
        """The selected ledger as messages and ``--json`` show it: its
        directory, or its URL with the password replaced by ``***``."""
        return shown(self.path)

    @property
    def on_server(self) -> bool:
        """Whether the selected ledger is at a PostgreSQL URL."""
        return is_postgresql_url(self.path)

    def file_only(self, what: str) -> None:
        """Refuse ``what`` (an option, ``'--workers'``) on a ledger at a URL.

        Raises:
            CliError: (exit 2) the selected ledger is at a URL.
        """
        if self.on_server:
            raise CliError(f"{what} is for a ledger directory, not for a ledger on PostgreSQL "
                           f"({self.shown})", EXIT_USAGE)

    def no_ledger(self, exc: BaseException) -> CliError:
        """The error for a ledger at a URL whose schema does not exist (the
        library's ``NoLedger``): exit 6, saying how to create it."""
        return CliError(f"{message_of(exc)} (create it with 'ledger init URL'; 'ledger run' "
                        "creates a ledger directory, never a schema)", EXIT_NOT_FOUND)

    @property
    def out(self) -> Any:
        if self._out is None:
            from .render import make_console

            self._out = make_console(color=self.color)
        return self._out

    @property
    def err(self) -> Any:
        if self._err is None:
            from .render import make_console

            self._err = make_console(stderr=True, color=self.color)
        return self._err

    def open(self, create: bool = False, readonly: bool = False, fold: bool = True,
             on_session_lost: Callable[[Any], object] | None = None) -> Ledger:
        """Open the selected ledger. Without ``create``, a directory that does
        not exist is an error (looking must not create state). ``readonly``
        for commands that only look: they then work on a read-only mount or
        write-protected copy, and change nothing (no file made, no mode tightened).
        ``fold=False``: as :meth:`scopeledger.Ledger.open` (a damaged ledger's replay).
        On PostgreSQL, ``on_session_lost`` goes to :meth:`scopeledger.Ledger.open`, with
        the session's ttl from ``$SCOPELEDGER_SESSION_TTL`` (seconds) when it is set.
        Waits at most ``--lock-timeout`` seconds for the lock. A ledger at a
        PostgreSQL URL is never created here, ``create`` or not: its schema
        is made by ``ledger init`` (or ``ledger import``).

        Raises:
            CliError: (exit 6) without ``create``, nothing is at the path; a
                URL's schema does not exist. (exit 2) ``--allow-network-fs``
                with a URL; psycopg is not installed.
            LedgerError: whatever :meth:`scopeledger.Ledger.open` raises (an unsafe
                or corrupt ledger, a read-only one without ``readonly``, a
                server that cannot be reached, ...).
            OSError: the OS refused to open it.
        """
        from scopeledger import Ledger, NoLedger

        path = self.path
        if self.on_server:
            if self.allow_network_fs:
                self.file_only("--allow-network-fs")
            check_postgresql_client(path)
            try:
                return Ledger.open(path, timeout=self.lock_timeout, readonly=readonly, create=False, fold=fold,
                                   session_ttl=session_ttl_from_env(), on_session_lost=on_session_lost)
            except NoLedger as exc:
                raise self.no_ledger(exc) from None
        if not create and nothing_at(path):
            raise CliError(f"no ledger at {path}: nothing has been recorded there "
                           f"(choose one with --ledger DIR or ${ENV_DIR})", EXIT_NOT_FOUND)
        return Ledger.open(path, timeout=self.lock_timeout, readonly=readonly, create=create,
                           allow_network_fs=self.allow_network_fs, fold=fold)

    def emit_json(self, obj: Any) -> None:
        sys.stdout.write(json_text(obj) + "\n")


def nothing_at(path: str) -> bool:
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


def ledger_option(f: Callable[..., Any]) -> Callable[..., Any]:
    def cb(ctx: click.Context, _p: click.Parameter, value: str | None) -> None:
        if value is not None:
            if not value.strip():
                raise click.BadParameter("must not be empty (omit it for the default ledger)",
                                         param_hint="'--ledger'")
            ctx.ensure_object(Env).ledger_dir = value

    return click.option("--ledger", "ledger_dir", metavar="DIR|URL", expose_value=False,
                        callback=cb, is_eager=True, shell_complete=_directories,
                        help=f"Ledger directory, or postgresql://USER@HOST/DB?schema=NAME (default: "
                             f"${ENV_DIR}, else $XDG_STATE_HOME/scopeledger or ~/.local/state/scopeledger).")(f)


def _directories(_ctx: click.Context, _p: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of a directory: the shell's own (click's ``dir`` type)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    def cb(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(Env).json = True

    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=cb,
                        help="Machine-readable output (shapes in docs/cli.md).")(f)


def common(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--ledger`` and ``--json``, accepted after the command name too."""
    return ledger_option(json_option(f))


pass_env = click.make_pass_decorator(Env, ensure=True)


def not_empty(hint: str = "give '.' for the working directory") -> Callable[..., Any]:
    """A click callback refusing an empty string (a usage error, exit 2): an
    empty path would otherwise silently mean the working directory."""

    def cb(_ctx: click.Context, _p: click.Parameter, value: Any) -> Any:
        if value == "":
            raise click.BadParameter(f"must not be empty ({hint})")
        return value

    return cb


def not_a_directory(value: str) -> str | None:
    """Why the path ``value`` cannot be a directory (see
    :func:`scopeledger.non_directory_on_the_way`): ``'/r/notes.txt is
    a regular file, not a directory'``, prefixed with the path when the file
    in the way lies above it; ``None`` when it can be. The path is shown as
    :func:`scopeledger.resolve_path` has it."""
    from scopeledger import non_directory_on_the_way, resolve_path

    path = resolve_path(value)
    blocked = non_directory_on_the_way(path)
    if blocked is None:
        return None
    what = " ".join(blocked)
    return what if blocked[0] == path else f"{path}: {what}"


def directory_param(hint: str) -> Callable[..., Any]:
    """A click callback for an option naming a directory (``--root``,
    ``demo --dir``), which need not exist yet: :func:`not_empty`, and a
    path that is (or lies below) another kind of file is a usage error
    (exit 2) saying what kind, in the words the ledger's own paths use
    (not click's ``Directory 'x' is a file``).

    The callback raises:
        click.BadParameter: the value is empty, or is (or lies below)
            another kind of file than a directory (:func:`not_a_directory`).
    """
    empty = not_empty(hint)

    def cb(ctx: click.Context, p: click.Parameter, value: Any) -> Any:
        value = empty(ctx, p, value)
        if value is not None:
            problem = not_a_directory(value)
            if problem is not None:
                raise click.BadParameter(problem)
        return value

    return cb


def path_param(hint: str = "give '.' for the working directory", directory: bool = False) -> Callable[..., Any]:
    """A click callback for a path on the command line (``who PATH``,
    ``replay --path``, ``demo --dir``): :func:`not_empty`, then a path no
    ledger can take (not valid UTF-8, longer than 4095 bytes, a component
    longer than 255 bytes, a NUL: :func:`scopeledger.normalize_path`)
    is a usage error (exit 2) naming the argument or option, with the
    ``--help`` hint, found before any ledger is opened or file made (it was
    a bare ``error: invalid path ...`` once the ledger was open).
    ``directory``: then as :func:`directory_param` too.

    The callback raises:
        click.BadParameter: empty, not a path the ledger takes, or (with
            ``directory``) another kind of file than a directory.
    """
    first = not_empty(hint)
    kind = directory_param(hint) if directory else None

    def cb(ctx: click.Context, p: click.Parameter, value: Any) -> Any:
        value = first(ctx, p, value)
        if value is None:
            return None
        from scopeledger import InvalidScope, normalize_path

        try:
            normalize_path(abs_path(value))
        except InvalidScope as exc:
            raise click.BadParameter(message_of(exc)) from None
        return kind(ctx, p, value) if kind is not None else value

    return cb


def each_param(cb: Callable[..., Any]) -> Callable[..., Any]:
    """A click callback for an argument with ``nargs=-1``: ``cb`` on each
    value, in order (the first bad one is named)."""
    def each(ctx: click.Context, p: click.Parameter, values: Any) -> Any:
        return tuple(cb(ctx, p, v) for v in values)

    return each


def point_param(_ctx: click.Context, _p: click.Parameter, value: str | None) -> str | None:
    """A click callback for a point on the command line (``--at``,
    ``--from``, ``--until``, ``diff``'s A and B): its syntax is checked
    (:func:`parse_point`) when it is parsed, so that a malformed point is a
    usage error (exit 2) naming it before any ledger is opened (a missing
    ledger was exit 6 first). The value is kept as given: :func:`resolve_point`
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


def holder_name_param(_ctx: click.Context, _p: click.Parameter, value: str | None) -> str | None:
    """A click callback for a holder name given on the command line (``NAME``
    of ``history`` and ``release``, ``--name``, ``--parent``, ``--holder``):
    an invalid one is a usage error (exit 2) naming the argument or option,
    with the ``--help`` hint, like every other bad value on the command line.

    Raises:
        click.BadParameter: not a valid holder name (see :func:`check_name`).
    """
    if value is None:
        return None
    from scopeledger import InvalidHolderName, check_name

    try:
        return check_name(value)
    except InvalidHolderName as exc:
        raise click.BadParameter(message_of(exc)) from None


def note_param(_ctx: click.Context, _p: click.Parameter, value: str | None) -> str | None:
    """A click callback for ``--note TEXT`` (``run``'s grant, ``release``):
    what the library's ``note=`` takes, 1 to 4096 characters of text UTF-8
    can encode (an argument's bytes that are not UTF-8 are not); control
    characters are kept, as the library keeps them, and escaped wherever a
    note is shown. A bad one is a usage error (exit 2): nothing recorded.

    Raises:
        click.BadParameter: empty, longer than 4096 characters, or not
            encodable.
    """
    if value is None:
        return None
    if not 0 < len(value) <= 4096:
        raise click.BadParameter(f"a note of 1 to 4096 characters, not {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise click.BadParameter(f"a note must be text UTF-8 can encode: {exc.reason} at {exc.start}") from None
    return value


def relative_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--relative-to", "relative_to", metavar="DIR", callback=not_empty(),
                        help="Show paths below DIR relative to it (human output only).")(f)


def display_root(value: str | None) -> str | None:
    """``--relative-to DIR`` as an absolute path (:func:`abs_path`), or ``None``.

    Raises:
        InvalidScope: as :func:`abs_path`.
    """
    return abs_path(value) if value is not None else None


def rules_from(writes: Sequence[str], reads: Sequence[str], root: str | None,
               xreads: Sequence[str] = ()) -> list[ScopeRule]:
    """Parse compact rules (relative to ``root``, default the working
    directory). Symlinks are left to the ledger (``Ledger.canonical_rules``, the
    one place they are resolved; a rule keeps its given spelling for it).

    Raises:
        click.BadParameter: a rule is invalid (a usage error, exit 2, naming
            ``--write``, ``--read`` or ``--exclusive-read``; the message is
            ``parse_rule``'s).
    """
    from scopeledger import InvalidScope, parse_rule

    base = os.path.realpath(root) if root else os.getcwd()
    rules = []
    for perm, specs in (("write", writes), ("read", reads), ("exclusive-read", xreads)):
        for spec in specs:
            try:
                rules.append(parse_rule(spec, perm, base))
            except InvalidScope as exc:
                raise click.BadParameter(message_of(exc), param_hint=f"'--{perm}'") from None
    return rules


def abs_path(p: str) -> str:
    """``p`` as an absolute path, ``~`` expanded, every ``..`` applied as
    the OS does (:func:`scopeledger.real_path`: as the ledger resolves a
    rule's path).

    Raises:
        InvalidScope: ``p`` contains NUL, or leads through a link of /proc
            into another mount namespace (``/proc/PID/root/...``), where
            the text realpath gives names another file.
    """
    from scopeledger import real_path

    return real_path(p if "\x00" in p else os.path.expanduser(p))  # (NUL: refused, named as given)


def _seq_at_ns(ledger: Ledger, end_ns: int) -> int:
    """Seq of the last event (by seq) stamped at or before ``end_ns`` (0:
    none), as ``Ledger.time_point`` finds it. When that answer crosses a
    clock jump (it includes events stamped after ``end_ns``, or leaves out
    events whose stamps are in doubt), a warning says so (on stderr:
    ``warning: time travel to ... crosses a clock jump: ...``)."""
    point = ledger.time_point(end_ns)
    if point.crosses_jump:
        import logging

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
DIGITS_RE = re.compile(r"0|[1-9][0-9]*")

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

_POINT_EXPECTED = ("expected a seq (0 or a positive integer in decimal digits, e.g. 12), a time "
                   f"{_TIME_FORM} (e.g. 2025-11-29T14:03:05.123Z), a time before now (-30m, -1h, -2d, -1h30m; "
                   "units s m h d w) or epoch seconds (@1700000000[.fraction])")

#: A time before now (docs/cli.md, "Points in time"): ``-`` and one or more
#: amounts, each ASCII digits and a unit.
_AGO_RE = re.compile(r"-(?:[0-9]+[smhdw])+")
_AGO_PART = re.compile(r"([0-9]+)([smhdw])")
_AGO_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}

#: Seconds since the epoch (1970-01-01T00:00:00Z), as ``date +%s`` prints them.
_EPOCH_RE = re.compile(r"@(0|[1-9][0-9]*)(?:\.([0-9]+))?")


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
    if type(value) is not str or DIGITS_RE.fullmatch(value) is None:
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
    :func:`parse_when`) written as :data:`_TIME_RE` says:
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
    if value[:1] in ("-", "@"):
        return parse_relative(value)
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


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def parse_relative(value: str, now_ns: int | None = None) -> tuple[int, int]:
    """A point before now or in epoch seconds -> ``(first_ns, last_ns)``, UTC:
    ``-30m``, ``-1h``, ``-2d``, ``-1h30m`` (units s, m, h, d, w: that long
    before ``now_ns``, default this machine's clock; one instant) or
    ``@1700000000[.fraction]`` (seconds since 1970-01-01T00:00:00Z, naming the
    span its precision gives, as an ISO time does: that second, or that
    millisecond for ``.123``, down to nine fraction digits).

    Raises:
        ValueError: neither form (the message starts ``invalid point`` and
            lists the forms taken), more than nine fraction digits, or a
            point outside the years 1 to 9999.
    """
    if len(value) > MAX_TIME_CHARS:
        raise ValueError(f"invalid point {_shown(value)}: too long ({len(value)} characters): "
                         f"{_POINT_EXPECTED}")
    out_of_range = ValueError(f"invalid point {_shown(value)}: out of range (a time must lie between "
                              "0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z)")
    if _AGO_RE.fullmatch(value):
        ago = sum(int(n) * _AGO_UNIT_NS[unit] for n, unit in _AGO_PART.findall(value))
        when = (time.time_ns() if now_ns is None else now_ns) - ago
        if when < MIN_NS:
            raise out_of_range
        return when, when
    m = _EPOCH_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"invalid point {_shown(value)}: {_POINT_EXPECTED}")
    digits = m.group(2) or ""
    if len(digits) > MAX_FRACTION_DIGITS:
        raise ValueError(f"invalid point {_shown(value)}: {len(digits)} fraction digits; "
                         f"at most {MAX_FRACTION_DIGITS} (one nanosecond)")
    if len(m.group(1)) > MAX_DIGITS:
        raise out_of_range
    first = int(m.group(1)) * 10**9 + int(digits.ljust(9, "0") or "0")
    last = first + 10 ** (9 - len(digits)) - 1
    if last >= MAX_NS:
        raise out_of_range
    return first, last


def _to_ns(when: dt.datetime) -> int:
    """An aware ``datetime`` -> integer nanoseconds since the epoch, UTC (integer
    arithmetic, as the library's time model converts)."""
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


_TIME_PART = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2}))?)?(?:[.,](\d+))?")

#: The latest instant a time on the command line may name (datetime's range).
MAX_NS = _to_ns(dt.datetime.max.replace(tzinfo=dt.timezone.utc))
MIN_NS = _to_ns(dt.datetime.min.replace(tzinfo=dt.timezone.utc))


def parse_when(value: str) -> int | tuple[int, int]:
    """A point on the command line: ``"12"`` -> seq 12; an ISO 8601 time ->
    ``(first_ns, last_ns)``, exactly the span its precision names: a date
    alone is that day, ``14`` that hour, ``14:03`` that minute, ``14:03:05``
    that second, ``14:03:05.123`` that millisecond (and so on, to the
    nanosecond). A time without a zone is UTC, as the times ``replay`` prints.

    Raises:
        ValueError: neither, or a time out of the representable range.
    """
    v = value.strip()
    if v.isdigit():
        return int(v)
    bad = ValueError(f"invalid point {value!r}: expected a seq (e.g. 12) or an ISO time "
                     "(e.g. 2025-11-29T14:03:05.123Z)")
    sep = re.search(r"[T ]", v)
    digits = ""
    if sep is None:
        unit = 86400 * 10**9  # a date alone: that whole day
    else:
        m = _TIME_PART.match(v, sep.end())
        if m is None:
            raise bad
        if m.group(4) is not None:
            if m.group(3) is None:
                raise bad  # a fraction of an hour or minute: not supported
            digits = m.group(4)
            v = v[: m.start(4) - 1] + v[m.end(4):]  # parse without the fraction
        if digits:
            unit = 10 ** (9 - min(len(digits), 9))
        elif m.group(3) is not None:
            unit = 10**9
        elif m.group(2) is not None:
            unit = 60 * 10**9
        else:
            unit = 3600 * 10**9
    try:
        when = dt.datetime.fromisoformat(v)
    except ValueError:
        raise bad from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    out_of_range = ValueError(f"invalid point {value!r}: out of range (a time must lie between "
                              "0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z, and so must "
                              "the whole span its precision names)")
    try:
        first = _to_ns(when) + int((digits[:9] or "0").ljust(9, "0"))
    except (OverflowError, ValueError):
        raise out_of_range from None
    last = first + unit - 1
    if first < MIN_NS or last >= MAX_NS:
        raise out_of_range
    return first, last


def resolve_point(ledger: Ledger, value: str | None, what: str, edge: str = "end") -> int | None:
    """A seq or time from the command line -> a seq (``None`` for ``None``).
    A time names a span (its precision, UTC without a zone): ``edge="end"``
    gives the last event in or before it, ``"start"`` the first event in or
    after it; a seq is taken as it is (whether the history holds it is for
    the caller's query to say).

    Raises:
        click.BadParameter: ``value`` is not a point (:func:`parse_point`),
            named as ``what``.
    """
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


class Seconds(click.ParamType):  # type: ignore[type-arg]  # (not generic before click 8.2)
    """A finite number of seconds from ``minimum`` (default 0) to ``maximum``
    (default :data:`MAX_SECONDS`) (not ``click.FloatRange``, which takes
    ``nan``: no comparison refuses it). A value out of range is refused
    naming this option's own range (:meth:`range_error`)."""

    name = "seconds"

    def __init__(self, minimum: float = 0.0, maximum: float | None = None) -> None:
        self.minimum = minimum
        self.maximum = MAX_SECONDS if maximum is None else maximum

    def range_error(self, value: Any) -> str:
        """The message for ``value``, a number outside the range."""
        return f"{value!r} is out of range: give {self.minimum:g} to {self.maximum:g} seconds"

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
        if number < self.minimum or number > self.maximum:
            self.fail(self.range_error(value), param, ctx)
        return number


class Integer(click.ParamType):  # type: ignore[type-arg]
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
SECONDS = Seconds()


class Ttl(Seconds):
    """A lease's ttl: seconds as :class:`Seconds` reads them, within the
    library's ``scopeledger.TTL_RANGE`` (0.1 to 1e9: read when a value is
    converted, so that ``--help`` imports no more of the library)."""

    name = "ttl"

    def range_error(self, value: Any) -> str:
        return f"{value!r} is not a ttl: give {self.minimum:g} to {self.maximum:g} seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from scopeledger import TTL_RANGE

        self.minimum, self.maximum = TTL_RANGE
        return super().convert(value, param, ctx)


TTL = Ttl()


# -- the command classes -----------------------------------------------------------------


class _UsageErrorsKnowTheirCommand(click.Command):
    """click's option parser raises some usage errors without a context
    (``option '--at' requires an argument``, ``option '--json' does not take
    a value``), so :func:`report` could not add ``(see 'ledger CMD
    --help')`` to them: give them the context of the command being parsed."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if exc.ctx is None:
                exc.ctx = ctx
            raise


class Command(_UsageErrorsKnowTheirCommand, click.Command):
    pass


class Group(_UsageErrorsKnowTheirCommand, click.Group):
    command_class = Command


# -- holders, tokens, rules ------------------------------------------------------------


def parent_from_env(parent: str | None, top_level: bool) -> tuple[str | None, int | None]:
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
    from scopeledger import InvalidHolderName, check_name

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


class TokenType(click.ParamType):  # type: ignore[type-arg]
    """``--token N``: a token as :func:`parse_token` takes it."""

    name = "token"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_token(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def check_enclosing(ledger: Ledger, parent: str | None, token: int | None) -> None:
    """For ``run`` and ``check``: the enclosing holder's grant, named by
    ``$SCOPELEDGER_HOLDER`` with ``$SCOPELEDGER_TOKEN``, must still be live.

    Raises:
        CliError: (exit 6) the grant of that token is no longer live (the
            holder was released, reclaimed or granted again).
    """
    if parent is not None and token is not None and not ledger.check(parent, token):
        raise CliError(f"the enclosing holder '{parent}' (token {token}, from ${ENV_HOLDER}) "
                       "is no longer live", EXIT_NOT_FOUND)


def rule_options(f: Callable[..., Any]) -> Callable[..., Any]:
    # No click.Path: load_manifest reads and refuses it (a directory, a FIFO,
    # a missing file), in the words docs/cli.md gives, for run and check alike.
    f = click.option("--manifest", metavar="FILE", callback=not_empty("give a manifest file"),
                     help="Take the name and rules from a runtime manifest (TOML).")(f)
    f = click.option("--root", metavar="DIR",
                     callback=directory_param("omit it, or give '.', for the working directory"),
                     help="Base of relative rules (default: the working directory).")(f)
    f = click.option("--exclusive-read", "xreads", multiple=True, metavar="RULE",
                     help="An exclusive read rule (repeatable): a read that excludes other holders' "
                          "writes, not their reads.")(f)
    f = click.option("--read", "reads", multiple=True, metavar="RULE",
                     help="A read rule (repeatable).")(f)
    f = click.option("--write", "writes", multiple=True, metavar="RULE",
                     help="A write rule (repeatable): PATH or PATH/** recursive, PATH/* the "
                          "directory and its direct children.")(f)
    return f


def request_from(writes: Sequence[str], reads: Sequence[str], root: str | None,
                 manifest: str | None, name: str | None,
                 xreads: Sequence[str] = ()) -> tuple[str | None, list[ScopeRule]]:
    """The name and rules a request asks for (``run``, ``check``): ``--manifest``'s
    rules first, then ``--write``, ``--read`` and ``--exclusive-read``
    (:func:`rules_from`); ``name`` (``--name``) wins over the manifest's.

    Raises:
        click.BadParameter: a ``--write``, ``--read`` or ``--exclusive-read`` rule is invalid.
        InvalidManifest: the manifest is unreadable, not TOML, or invalid
            (exit 2, no ``--help`` hint: the command line itself was right).
        click.UsageError: no rules at all.
    """
    rules = rules_from(writes, reads, root, xreads)
    if manifest is not None:
        from scopeledger import load_manifest

        m = load_manifest(manifest)
        rules = list(m.rules) + rules
        name = name or m.name
    if not rules:
        raise click.UsageError("no rules: give at least one --write, --read or --exclusive-read (or --manifest)")
    return name, rules


# -- output files, windows of the log ------------------------------------------------------


#: What a file that is not a regular one is called in messages, by ``stat.S_IFMT``.
_NOT_REGULAR = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink", stat.S_IFIFO: "a FIFO",
                stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def output_path_param(extensions: Sequence[str] | None = None) -> Callable[..., Any]:
    """A click callback for ``-o FILE``: not empty, ``-`` (stdout) kept as
    is, else a new or regular file in an existing directory (and with
    ``extensions``, one of them), checked before any ledger is opened. The
    file is written beside it and renamed over it (``export.output_file``),
    so anything else there (``/dev/stdout``, a symlink; ``/dev/null``, a
    device; a FIFO) would be replaced, not written to: it is refused.

    The callback raises:
        click.BadParameter: empty, a directory, in a directory that does
            not exist, something there that is not a regular file (named:
            a symlink, a FIFO, a socket, a device), or (``extensions``)
            another extension.
    """
    empty = not_empty("give a file name, or '-' for stdout")

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
        try:
            mode = os.lstat(path).st_mode
        except OSError:  # nothing there (or not to be looked at: writing it says why)
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            stdout = ", or '-' for stdout" if extensions is None else ""
            kind = _NOT_REGULAR.get(stat.S_IFMT(mode), "an unknown kind of file")
            raise click.BadParameter(f"{path} is {kind}, not a regular file, and would be replaced: "
                                     f"give a file name{stdout}")
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            problem = not_a_directory(parent)
            raise click.BadParameter(problem or f"directory {parent} does not exist")
        return value

    return cb


def window_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--from``, ``--until``, ``--holder``, ``--path``: as ``replay``'s."""
    for opt in reversed((
        click.option("--from", "from_", metavar="SEQ|TIME", callback=point_param,
                     help="First event: a seq, an ISO time, a time before now (-1h) or @EPOCH."),
        click.option("--until", metavar="SEQ|TIME", callback=point_param,
                     help="Last event: a seq, an ISO time, a time before now (-1h) or @EPOCH."),
        click.option("--holder", metavar="NAME", callback=holder_name_param,
                     help="Only NAME and the holders it delegated to."),
        click.option("--path", "path_", metavar="PATH", callback=path_param(),
                     help="Only holders and requests whose rules overlap PATH."),
    )):
        f = opt(f)
    return f




def no_progress_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--no-progress``: no progress on stderr (:mod:`.progress`), even on a terminal."""

    def cb(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(Env).progress = False

    return click.option("--no-progress", is_flag=True, expose_value=False, callback=cb,
                        help="No progress bar on stderr (shown only on a terminal, for large logs, "
                             "never with --json).")(f)


def zone_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--local`` and ``--tz ZONE``: the time zone human output shows times in
    (:attr:`Env.zone`); UTC without them. Points given without a zone stay UTC.

    The callbacks raise:
        click.BadParameter: ``--tz`` names no time zone zoneinfo knows.
        click.UsageError: both options given.
    """

    def chosen(ctx: click.Context, option: str, zone: Any) -> None:
        other = ctx.meta.get("scopeledger.zone_option")
        if other is not None and other != option:
            raise click.UsageError("--local and --tz exclude each other: give one")
        ctx.meta["scopeledger.zone_option"] = option
        ctx.ensure_object(Env).zone = zone

    def local_cb(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
        if value:
            from .render import LOCAL

            chosen(ctx, "--local", LOCAL)

    def tz_cb(ctx: click.Context, _p: click.Parameter, value: str | None) -> None:
        if value is None:
            return
        import zoneinfo

        try:
            zone = zoneinfo.ZoneInfo(value)
        except (ValueError, KeyError, OSError):
            raise click.BadParameter(f"{_shown(value)}: no such time zone: expected an IANA time zone "
                                     "name such as UTC, Europe/Paris or America/New_York "
                                     "(zoneinfo's: /usr/share/zoneinfo, or the tzdata package)") from None
        chosen(ctx, "--tz", zone)

    f = click.option("--tz", metavar="ZONE", expose_value=False, callback=tz_cb,
                     help="Show times in this time zone (an IANA name, e.g. Europe/Paris) with their "
                          "offset; default UTC.")(f)
    return click.option("--local", is_flag=True, expose_value=False, callback=local_cb,
                        help="Show times in this machine's time zone ($TZ) with their offset; default UTC.")(f)
