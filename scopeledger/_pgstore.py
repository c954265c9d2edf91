"""The PostgreSQL log store: the ledger's lines in a database schema.

Behind ``Ledger.open("postgresql://...")`` and the command line's ``--ledger
URL`` / ``$SCOPELEDGER_DIR=URL``. Only this module imports psycopg 3 (``pip
install 'scopeledger[postgresql]'``).

Where it lives
--------------
One ledger is one schema: ``postgresql://user@host/db?schema=team1``. The
``schema`` parameter (default ``scopeledger``; ``[a-z_][a-z0-9_]*``, at most
48 characters) is taken out of the URL, and the rest goes to libpq unchanged,
so libpq's environment (``PGHOST``, ``PGPASSWORD``, ...), ``~/.pgpass``,
``sslmode`` and the other URL parameters apply. A password is never shown:
messages use :func:`redact` (``postgresql://user:***@host/db?schema=team1``).
``connect_timeout`` is 10 s unless the URL sets it.

Tables (created by ``PgStore.open(url, create=True)``, with the schema)::

    meta(one, format_version, created_at)   one row; format_version = STORE_FORMAT
    events(seq bigint primary key,          gapless from 1
           ts bigint,                       the line's ts (ns, UTC): its writer's own
                                            clock reading, never clamped (format v2)
           ts_max bigint,                   the running maximum of ts, kept by the server:
                                            ascending, so time travel is an index lookup
                                            while no clock stepped back (see time_point)
           line bytea,                      the log line, byte for byte, no newline
           at timestamptz)                  the server's clock when the line was inserted
                                            (default clock_timestamp(); a writable open adds
                                            it to a ledger made before it, whose earlier
                                            rows keep NULL): PgStore.appended_ago, by
                                            which leases are judged
    snapshots(seq bigint primary key references events,
              header bytea,                 the snapshot's header (JSON: format, seq,
                                            last_hash, ts, checksum)
              body bytea)                   the state's JSON bytes as written
    sessions(id, host, pid, instance, ttl_ms, opened_at, lease_until, closed_at)
                                            one row per client session; a dead one's row
                                            deleted by a later prune (PgStore.prune_sessions)
                                            once no live holder carries it
    waiters(number, request, joined_at)     the waiters' queue (PgTickets); made when
                                            a waiter first joins in a ledger made
                                            without it (no STORE_FORMAT change)

Server-side backstops that do not trust clients (triggers): an insert into
``events`` whose seq is not the current maximum + 1 is refused (rows of one
transaction are checked one statement at a time), as is one whose line does
not say that seq and ts as JSON numbers (a JSON object; so the table and an
exported file agree), and a transaction that commits an insert under
``synchronous_commit = off`` (checked at COMMIT, by a deferred trigger);
UPDATE, DELETE and TRUNCATE of ``events`` are refused, as are TRUNCATE of
``sessions``, a DELETE of the row of a session that is not dead (closed, or
its lease over with its grace), and an UPDATE of a session's row by any connection
but the one holding its lock (or of anything but its lease, instance and
closing, or once it is closed). A role that owns the tables can still drop
the triggers (and a client can ``SET CONSTRAINTS ALL IMMEDIATE`` before
turning asynchronous commit on): they stop mistakes, not an owner. Each insert notifies the
channel ``scopeledger_<schema>`` with its seq (a hint for :meth:`PgStore.wait`).

A mutation
----------
:meth:`PgStore.locked` sends, in one round trip (pipeline mode): ``BEGIN``,
``SET LOCAL lock_timeout`` (only for a bounded wait: the connection's own is
none), ``pg_advisory_xact_lock(<schema oid>, 0)``, then one read of the lines
after the caller's seq, led by that seq's own row without its line (which
shows the log reaches it); the read is a statement of its own, after the
lock, so in READ COMMITTED it sees everything committed before the lock was
granted. :meth:`PgStore.append` sends the inserts and
``COMMIT`` in one more round trip. :meth:`PgStore.try_append` does both in
one, for a writer that decided without the lock (``Ledger`` does while no
other process has appended lately): ``pg_try_advisory_xact_lock`` (never
waiting: a client queued for the lock is not overtaken), then, in a
statement of its own, the inserts only if the log still ends where the
writer decided, committed at the pipeline's Sync; when not granted or
moved on, nothing is appended and the writer takes :meth:`PgStore.locked`. Every connection forces what this relies
on, whatever the role, the database or the URL ask for: READ COMMITTED, no
server statement or lock timeout, no idle-session timeout, and
``synchronous_commit = on`` (asynchronous commit could drop an acknowledged
event in a server crash); ``idle_in_transaction_session_timeout`` (60 s) ends
a client that stopped while it held the lock.

A commit whose outcome is unknown (the connection broke while the inserts or
the COMMIT were on their way) is resolved: on a new connection the old backend
is terminated if it still runs (matched by pid and start time), the advisory
lock is taken (so the old transaction has ended, one way or the other), and
the seqs are read back (so is an append psycopg gave up on, e.g. when a
signal handler's exception interrupted it; a KeyboardInterrupt is let through
after closing the connection). All there with the same bytes: the append succeeded.
None there (or others' bytes at those seqs): nothing was recorded,
:class:`NotRecorded`. Not resolvable within ``resolve_timeout``: :class:`InDoubt`.

Advisory locks
--------------
All in the ledger's database, keyed by the schema's oid: the append lock
``(<schema oid>, 0)`` (transaction-level) and each session's lock
``(<schema oid>, <session id>)`` (session-level) are of the two-``int4``
form (``pg_locks.objsubid = 2``); a waiter's ticket lock is of the
one-``bigint`` form, ``(<schema oid> << 32) | (<ticket number> mod 2**32)``
(``objsubid = 1``, ``classid`` the schema's oid, ``objid`` the number mod
2**32), so the three never meet. Creators serialise on ``(hashtext
('scopeledger:create'), hashtext(<schema>))`` (transaction-level).

The waiters' queue
------------------
``wait=`` is first come, first served here as on a directory
(:class:`PgTickets`): a waiter's ticket is a row of ``waiters`` held by its
ticket lock on a connection of its own, which LISTENs on the log's channel
and on ``scopeledger.q.<schema>`` (the numbers of the tickets that leave);
a ticket whose lock is not held is dead, and deleted by whoever reads it.

Sessions (liveness across hosts)
--------------------------------
:meth:`PgStore.open_session` opens a connection of its own that takes a
session-level advisory lock ``(<schema oid>, <session id>)`` and a lease
(``lease_until`` = the server's clock + TTL) renewed by a background thread
every TTL/3. The session learns it is lost (:attr:`PgSession.lost`, the
``on_lost`` callback) when its own lease deadline passes (its monotonic
clock, counted from before the renewal was sent; a watchdog thread fires
then even while a renewal hangs on a cut link), when a renewal is refused, or
when its connection broke and the same server instance answers again. When
another instance answers (the server restarted), it takes its lock again
there, then moves its row to that instance and renews.
:meth:`PgStore.dead_sessions` (and :meth:`PgStore.judge_sessions`, which
also says alive, lapsed or unknown) judges other sessions: dead when closed, when
its lease ended more than its grace ago (server clock; the holder knew at its
own deadline, earlier), or when its lock is gone on the same server instance
it was taken on (:data:`INSTANCE_SQL`: ``system_identifier`` from
``pg_control_system()``, ``pg_postmaster_start_time()`` and the last reset of
the cumulative statistics, which crash recovery resets): every session lock
vanishes at a server restart, and at the reset after a backend's crash, and
without that rule the first client back would be judged to have outlived
everyone. A ``Ledger`` records its session with every holder it binds, and
judges other hosts' holders by theirs (``scopeledger._sessions``). A pooler
in transaction mode (PgBouncer) breaks session-level locks: connect to the
server directly. :meth:`PgStore.prune_sessions` deletes the rows of the
sessions dead for a while that no live holder carries (the ledger says
which, from its fold: ``Sessions.prune``), in one statement that deletes
only while the log ends where the ledger folded it.

Processes and threads
---------------------
A forked child never uses its parent's connections: after a fork, the child's
copies of their sockets are replaced by ``/dev/null`` (so closing them cannot
send a Terminate message on the parent's connection), and the child opens new
connections when it needs them. A session does not survive a fork (its lock
is the parent's connection's). A ``PgStore`` may be shared by threads (a lock
serialises its main connection; :meth:`PgStore.locked` holds it throughout;
each thread in :meth:`PgStore.wait` listens on a connection of its own).

Errors
------
:class:`InvalidLedgerURL` (``ValueError``) for a URL or schema name that cannot
be used; :class:`~scopeledger.NoLedger` for a missing schema when not creating;
:class:`~scopeledger.CorruptLedger` for a schema that is not a ledger, a newer
store format, or lines that do not follow; :class:`~scopeledger.LockTimeout`
when the append lock is not granted in time; :class:`StoreUnavailable`
(``ConnectionError``) when the server cannot be reached or the connection is
lost (reads are retried once on a new connection first); :class:`NotRecorded`
and :class:`InDoubt` as above; :class:`SessionLost`; :class:`StoreError` for
any other refusal by the server (disk full, permission denied), carrying its
SQLSTATE. They are all :class:`~scopeledger.LedgerError`.

Figures: ``tools/bench/pgstore.py`` (appends/s with 1, 4, 16 processes,
fairness, LISTEN/NOTIFY wake-up, dead-client detection after SIGKILL) and
``tools/bench/pgledger.py`` (register+release pairs through ``Ledger``, beside
the file backend and two peers).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import select
import socket
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar, cast
from urllib.parse import unquote

import orjson

from ._errors import (
    CorruptLedger,
    InDoubt,
    InvalidLedgerURL,
    LedgerError,
    LockTimeout,
    NoLedger,
    NotRecorded,
    ReadOnlyLedger,
    SessionLost,
    SnapshotInvalid,
    StoreError,
    StoreUnavailable,
)
from ._events import line_hash
from ._logstore import RECHECK_SECONDS, Queued
from ._process import ready

log = logging.getLogger("scopeledger")

#: Why psycopg could not be imported (None: it was): missing, or installed
#: but unable to load (no libpq for its pure-Python build, a C build refused).
_NO_PSYCOPG: ImportError | None = None
try:
    import psycopg
    from psycopg import errors as pg_errors
except ImportError as _exc:  # pragma: no cover - exercised only without (or with a broken) extra
    psycopg = None  # type: ignore[assignment]
    pg_errors = None  # type: ignore[assignment]
    _NO_PSYCOPG = _exc

log = logging.getLogger("scopeledger")

STORE_FORMAT = 3
"""Version of the table layout (not of the line format). Development
versions, never behind ``Ledger``: 1 stored the running maximum as ``ts``;
2 lacked the backstops that check ``synchronous_commit`` at commit, the
line's seq and ts as JSON numbers, and who changes a session's row.
The ``events.at`` column (:func:`_events_at_ddl`) came without a new format:
a ledger without it is read and written as before (an older scopeledger
inserts naming its columns, so the server's default fills ``at``)."""

DEFAULT_SCHEMA = "scopeledger"
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,47}")
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
CONNECT_TIMEOUT_S = 10
#: libpq's TCP settings unless the URL sets them: a connection whose link is
#: cut fails in about 20 s (keepalives while it waits, a user timeout while
#: data is unacknowledged) instead of TCP's 15 minutes. A wait for the lock
#: is not cut short: the server's kernel answers the keepalives.
_TCP_DEFAULTS = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                 "keepalives_count": 3, "tcp_user_timeout": 20_000}
RESOLVE_TIMEOUT_S = 30.0
#: Server settings every connection starts with (libpq ``options``), whatever
#: the role or database default to: READ COMMITTED (the read after the lock
#: must see what was committed while waiting for it; so must a read-back), and
#: no statement or lock timeout of the server's (a wait for the lock is bounded
#: by the store's own ``lock_timeout``, set per transaction).
_STARTUP = ("-c default_transaction_isolation=read\\ committed -c statement_timeout=0"
            " -c lock_timeout=0")


# The store's errors (InvalidLedgerURL, StoreError, StoreUnavailable,
# NotRecorded, InDoubt, SessionLost) are the public ones of _errors, imported
# above, so that ``except scopeledger.NotRecorded`` catches this store's.


# -- URL ---------------------------------------------------------------------

def _userinfo_end(url: str) -> int:
    """The index in ``url`` of the ``@`` that ends its user info, or -1.

    As libpq reads a URL, the authority ends at the first ``/`` after
    ``://``, so a ``?``, ``#`` or ``&`` before it belongs to the user info
    (``postgresql://alice:pa?ss@h/db``: the password is ``pa?ss``). Two
    mistakes are read more widely than libpq does, so that no part of a
    password shows: an unescaped ``@`` in it (the last ``@`` of the
    authority ends the user info, not the first), and an unescaped ``/``
    (libpq then reads ``alice:p`` as a host and a port that is no number:
    when an ``@`` follows, everything up to the last one is user info).
    :func:`parse_url` refuses both.
    """
    start = url.find("://")
    if start < 0:
        return -1
    start += 3
    rest = url[start:]
    slash = rest.find("/")
    auth = rest if slash < 0 else rest[:slash]
    if "@" in auth:
        return start + auth.rfind("@")
    hostport = auth.split(",", 1)[0]
    port = hostport[hostport.find("]") + 1:] if hostport.startswith("[") else hostport
    if slash >= 0 and ":" in port and not port.split(":", 1)[1].isdigit() and "@" in rest[slash:]:
        return start + rest.rfind("@")
    return -1


def _query_start(url: str) -> int:
    """The index of the ``?`` that starts ``url``'s parameters (after its
    user info), or -1."""
    return url.find("?", _userinfo_end(url) + 1)


#: ``password=VALUE`` in libpq's keyword/value form (VALUE quoted or not).
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with any password (in the user info, as libpq reads it or
    wider, see :func:`_userinfo_end`, a ``password`` parameter, or
    ``password=`` in libpq's keyword/value form) replaced by ``***``;
    anything that is not a string is shown as ``<not a URL>``."""
    if not isinstance(url, str):
        return "<not a URL>"
    if "://" not in url:  # libpq's keyword/value form (refused, but shown in the refusal)
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    at = _userinfo_end(url)
    if at >= 0:
        start = url.find("://") + 3
        userinfo = url[start:at]
        if ":" in userinfo:
            url = url[:start] + userinfo.split(":", 1)[0] + ":***" + url[at:]
    q = _query_start(url)
    if q < 0:
        return url
    query, hash_, fragment = url[q + 1:].partition("#")
    query = "&".join((p.split("=", 1)[0] + "=***") if unquote(p.split("=", 1)[0]) == "password" else p
                     for p in query.split("&")) if query else ""
    return url[:q + 1] + query + hash_ + fragment


def without_password(url: str) -> str:
    """``url`` with its password taken out: the user info's ``:password``
    (read as :func:`redact` reads it; ``user:pw@`` becomes ``user@``, and
    ``:pw@`` nothing) and every ``password`` parameter; the rest (the
    schema, ``sslmode``, ...) as it was. What a child process is given
    (:meth:`PgStore.child_location`): tools print their environment."""
    at = _userinfo_end(url)
    if at >= 0:
        start = url.find("://") + 3
        userinfo = url[start:at]
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            url = url[:start] + (user + "@" if user else "") + url[at + 1:]
    q = _query_start(url)
    if q < 0:
        return url
    query, hash_, fragment = url[q + 1:].partition("#")
    kept = [p for p in query.split("&") if unquote(p.split("=", 1)[0]) != "password"] if query else []
    return url[:q] + ("?" + "&".join(kept) if kept else "") + hash_ + fragment


class PgLocation:
    """A parsed ledger URL: ``conninfo`` (the URL without ``schema``, for
    libpq), ``schema``, ``shown`` (redacted, with the schema), ``plain``
    (the URL as given, with the schema, without its password:
    :func:`without_password`) and ``password`` (the password the URL
    carries, as libpq reads it, or ``None``)."""

    __slots__ = ("conninfo", "schema", "shown", "params", "options", "plain", "password")

    def __init__(self, conninfo: str, schema: str, shown: str, params: frozenset[str] = frozenset(),
                 options: str | None = None, plain: str | None = None, password: str | None = None) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.shown = shown
        self.params = params  # the libpq parameter names the URL sets
        self.options = options  # the URL's libpq ``options`` (server settings), if it sets them
        self.plain = plain if plain is not None else shown
        self.password = password


def is_postgresql_url(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL ledger (``postgresql://`` or
    ``postgres://``), as opposed to a directory."""
    return isinstance(text, str) and text.split("://", 1)[0].lower() in ("postgresql", "postgres") \
        and "://" in text


def refuse_url(url: str) -> InvalidLedgerURL:
    """The error for a URL given where a path is expected
    (:func:`~scopeledger.resolve_path`: a manifest, ``--root``, a runtime
    directory; a ledger given as another scheme's URL). A PostgreSQL URL
    names a ledger only where a ledger is chosen (``Ledger.open``,
    ``--ledger``, ``$SCOPELEDGER_DIR``). The message never shows a password."""
    if is_postgresql_url(url):
        return InvalidLedgerURL(f"{redact(url)} is a PostgreSQL URL, not a path (a ledger at a URL is "
                                "chosen with --ledger URL or $SCOPELEDGER_DIR); nothing was created")
    return InvalidLedgerURL(f"{redact(url)} is a URL, not a path (a ledger is a directory or a "
                            "postgresql:// URL); nothing was created")


def parse_url(url: str) -> PgLocation:
    """Split ``url`` into what libpq gets and the schema.

    Raises:
        InvalidLedgerURL: not a ``postgresql://``/``postgres://`` URL, more than
            one ``schema`` parameter, a schema name outside
            ``[a-z_][a-z0-9_]{0,47}``, or a URL libpq refuses (its reason,
            without the password).
    """
    if not is_postgresql_url(url):
        raise InvalidLedgerURL(f"not a PostgreSQL URL: {redact(url) if isinstance(url, str) else url!r}"
                               " (expected postgresql://user@host/db?schema=NAME)")
    shown = redact(url)
    q = _query_start(url)
    base, rest = (url, "") if q < 0 else (url[:q], url[q + 1:])
    query, hash_, fragment = rest.partition("#")
    kept, schemas = [], []
    for piece in query.split("&") if query else []:
        key, _, value = piece.partition("=")
        if unquote(key) == "schema":
            schemas.append(unquote(value))
        else:
            kept.append(piece)
    if len(schemas) > 1:
        raise InvalidLedgerURL(f"more than one schema parameter in {shown}")
    schema = schemas[0] if schemas else DEFAULT_SCHEMA
    if not _SCHEMA_RE.fullmatch(schema):
        raise InvalidLedgerURL(f"schema {schema!r} in {shown} is not a name of lowercase letters, "
                               "digits and _ (not starting with a digit, at most 48 characters)")
    conninfo = base + ("?" + "&".join(kept) if kept else "") + (hash_ + fragment)
    given: frozenset[str] = frozenset()
    options: Any = None
    password: Any = None
    if psycopg is not None:
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise InvalidLedgerURL(f"libpq refuses {shown}: {_scrub(_first_line(exc), url)}") from None
        hosts = str(params.get("host", "")).split(",")
        ports = str(params.get("port", "")).split(",")
        if any("@" in h for h in hosts) or not all(p.strip().isdigit() or not p.strip() for p in ports):
            # libpq's reading of an unescaped '@' or '/' in a password (see _userinfo_end).
            raise InvalidLedgerURL(f"{shown}: a host holds '@' or a port is not a number; a password "
                                   "holding '@', '/', ':', '?', '#' or '&' must be percent-encoded "
                                   "(%40, %2F, %3A, %3F, %23, %26)")
        given = frozenset(params)
        options = params.get("options")
        password = params.get("password")
        if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
            conninfo += ("&" if kept else "?") + f"connect_timeout={CONNECT_TIMEOUT_S}"
    return PgLocation(conninfo, schema, shown, given, None if options is None else str(options),
                      without_password(url), None if password is None else str(password))


def _secrets(url: str) -> list[str]:
    """The password texts in ``url`` (raw and decoded), longest first: the
    user info's, read as :func:`redact` reads it, and ``password``
    parameters."""
    found: list[str] = []
    at = _userinfo_end(url)
    if at >= 0:
        userinfo = url[url.find("://") + 3:at]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    q = _query_start(url)
    for piece in (url[q + 1:].partition("#")[0].split("&") if q >= 0 else []):
        key, _, value = piece.partition("=")
        if unquote(key) == "password":
            found.append(value)
    found += [unquote(f) for f in found]
    return sorted({f for f in found if f}, key=len, reverse=True)


#: A password at least this long is masked wherever it appears in a message;
#: a shorter one only where it stands as in a URL or a quoted value
#: (:func:`_scrub`): a password ``p`` masked everywhere turned
#: ``/tmp/pgsock`` and ``password authentication failed`` into
#: ``/tm***/***gsock`` and ``***assword ...`` (a fresh tester's finding).
SCRUB_EVERYWHERE_LENGTH = 8

#: What stands right before, or right after, a password echoed from a URL or
#: conninfo (user info ``:pw@``, ``password=pw&``, ``password=pw#``).
_BEFORE_SECRET = frozenset(":=")
_AFTER_SECRET = frozenset("@&#")
_QUOTES = frozenset("\"'")


def _scrub(text: str, url: str) -> str:
    """``text`` with every password of ``url`` replaced by ``***``: one of
    :data:`SCRUB_EVERYWHERE_LENGTH` characters or more wherever it appears;
    a shorter one where it stands as a password would in an echoed URL or
    conninfo (after ``:`` or ``=``, before ``@``, ``&`` or ``#``, alone in
    quotes, or the whole text), so that the message's other words keep
    their letters."""
    for secret in _secrets(url):
        if len(secret) >= SCRUB_EVERYWHERE_LENGTH:
            text = text.replace(secret, "***")
            continue
        out, start = [], 0
        while (i := text.find(secret, start)) >= 0:
            end = i + len(secret)
            before = text[i - 1] if i > 0 else None
            after = text[end] if end < len(text) else None
            if before in _BEFORE_SECRET or after in _AFTER_SECRET or (before is None and after is None) \
                    or (before in _QUOTES and after == before):
                out.append(text[start:i] + "***")
            else:
                out.append(text[start:end])
            start = end
        text = "".join(out) + text[start:]
    return text


_T = TypeVar("_T")


def _int(name: str, value: Any, lo: int | None = None) -> int:
    """``value``, when it is an int (not a bool) that fits a signed 64-bit
    column and is at least ``lo``; else :class:`ValueError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 63) <= value < (1 << 63) \
            or (lo is not None and value < lo):
        raise ValueError(f"{name} must be an int{'' if lo is None else f' >= {lo}'}, not {value!r}")
    return value


def _seconds(name: str, value: Any) -> float | None:
    """``value``, when it is ``None`` or a number of seconds (not a bool, not
    NaN); else :class:`ValueError` naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or math.isnan(value)):
        raise ValueError(f"{name} must be None or a number of seconds, not {value!r}")
    return value


def _refused(exc: BaseException) -> bool:
    """Whether the server answered ``exc`` as a refusal (an SQLSTATE outside
    the connection (08) and shutdown (57P) classes): the statement, and its
    transaction, did not take effect."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is not None and not sqlstate.startswith(("08", "57P"))


def _options_refused(exc: BaseException) -> bool:
    """Whether a failed connect was refused by the client before any
    network: a connection parameter's value (``sslmode=bogus``, a port over
    65535, ``connect_timeout=abc``, an unknown ``target_session_attrs``).
    psycopg checks some values itself (a ``ProgrammingError``); libpq checks
    the others in ``PQconnectStart``, which psycopg reports as ``connection is
    bad: ...`` with libpq's ``invalid ... value`` (``psycopg.generators.connect``), while a failure
    on the way to the server or from it reads ``connection failed: ...``.
    tests/test_cli_postgresql.py holds each of these inputs, so a psycopg
    that words them otherwise fails that test rather than exiting 7."""
    if isinstance(exc, psycopg.ProgrammingError):
        return True
    return isinstance(exc, psycopg.OperationalError) and _BAD_OPTION.match(str(exc)) is not None


#: libpq's words for a connection parameter's value it refuses (a value read
#: once, or for each host it tries: ``... failed: invalid integer value "x"
#: for connection option "keepalives"``).
_BAD_OPTION = re.compile(r'connection is bad: (invalid |[^\n]* failed: invalid [a-z ]*value "[^\n]*" for '
                         r'connection option )')


#: The server's refusals of a login, as PostgreSQL words them (its messages
#: untranslated: ``lc_messages`` C or English), and their SQLSTATE: 28P01
#: (invalid_password: password, md5 and scram-sha-256 authentication) and
#: 28000 (invalid_authorization_specification: another method failed, no or
#: a ``reject`` pg_hba.conf line, an unknown role, a role without LOGIN, no
#: valid client certificate); and 3D000, a database that does not exist.
_LOGIN_REFUSALS = (
    (re.compile(r'FATAL:  password authentication failed for user "'), "28P01"),
    (re.compile(r'FATAL:  (?:(?!password )(?:[A-Za-z]+|"trust") authentication failed for user "'
                r'|authentication failed for user "|no pg_hba\.conf entry for |pg_hba\.conf rejects '
                r'|role "[^\n]*" does not exist|role "[^\n]*" is not permitted to log in'
                r'|connection requires a valid client certificate)'),
     "28000"),
    # Not a login's refusal, but as final: the database the URL names does not
    # exist (invalid_catalog_name), which waiting for the server does not mend.
    (re.compile(r'FATAL:  database "[^\n]*" does not exist'), "3D000"),
)


def _connect_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a failed connect: psycopg's, when it has one; else
    that of a login the server refused, or of a database that does not
    exist (:data:`_LOGIN_REFUSALS`), read from the message. libpq reports a failed connection as text alone (its
    ``PQerrorMessage``: no result carries the server's error fields), so
    psycopg's ``Error.sqlstate`` is ``None`` for a wrong password although
    the server sent 28P01 (psycopg/psycopg#1188). The last refusal in the
    message counts (libpq lists each host it tried, in order). ``None`` when
    none is recognised: a server unreachable, or one answering in another
    language."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return str(sqlstate)
    text = str(exc)
    found: tuple[int, str] | None = None
    for pattern, code in _LOGIN_REFUSALS:
        for m in pattern.finditer(text):
            if found is None or m.start() > found[0]:
                found = (m.start(), code)
    return found[1] if found is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- schema ------------------------------------------------------------------

def _ddl(schema: str) -> str:
    s = schema
    return f"""
CREATE SCHEMA {s};
CREATE TABLE {s}.meta (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    format_version integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE {s}.events (
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    ts bigint NOT NULL,
    ts_max bigint NOT NULL,
    line bytea NOT NULL);
CREATE INDEX events_ts_max ON {s}.events (ts_max, seq);
CREATE INDEX events_stepped_back ON {s}.events (ts, seq) WHERE ts < ts_max;
CREATE TABLE {s}.snapshots (
    seq bigint PRIMARY KEY REFERENCES {s}.events (seq),
    header bytea NOT NULL,
    body bytea NOT NULL);
CREATE TABLE {s}.sessions (
    id integer GENERATED ALWAYS AS IDENTITY (MAXVALUE 2147483647) PRIMARY KEY,
    host text,
    pid integer,
    instance text NOT NULL,
    ttl_ms integer NOT NULL CHECK (ttl_ms > 0),
    grace_ms integer NOT NULL CHECK (grace_ms >= 0),
    opened_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until timestamptz NOT NULL,
    closed_at timestamptz);

-- (Not used since the instance also names the last crash recovery: INSTANCE_SQL;
-- kept so that a schema made by an older scopeledger and a new one do not differ.)
CREATE FUNCTION {s}.instance() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT (SELECT system_identifier::text FROM pg_control_system()) || '@'
           || to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

CREATE FUNCTION {s}.events_durable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('synchronous_commit') = 'off' THEN
        RAISE EXCEPTION 'scopeledger: an append under synchronous_commit = off is refused '
                        '(a server crash could lose an event a client acted on)'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    RETURN NULL;
END $$;
-- Deferred: checked at COMMIT, whose setting is the one that counts.
CREATE CONSTRAINT TRIGGER events_durable AFTER INSERT ON {s}.events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {s}.events_durable();

CREATE FUNCTION {s}.events_next_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE last_seq bigint; last_max bigint; j json;
BEGIN
    SELECT e.seq, e.ts_max INTO last_seq, last_max FROM {s}.events e ORDER BY e.seq DESC LIMIT 1;
    IF NEW.seq IS DISTINCT FROM coalesce(last_seq, 0) + 1 THEN
        RAISE EXCEPTION 'scopeledger: seq % does not follow the last seq %', NEW.seq, coalesce(last_seq, 0)
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    -- \\u0000 becomes \\u0001 (same shape, so the JSON stays valid): the
    -- json operators refuse to read past a \\u0000 in any string.
    j := replace(convert_from(NEW.line, 'UTF8'), '\\u0000', '\\u0001')::json;
    IF json_typeof(j) IS DISTINCT FROM 'object' OR (j->>'seq') IS DISTINCT FROM NEW.seq::text
            OR (j->>'ts') IS DISTINCT FROM NEW.ts::text OR json_typeof(j->'seq') IS DISTINCT FROM 'number'
            OR json_typeof(j->'ts') IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION 'scopeledger: the line for seq % does not say seq % and ts %', NEW.seq, NEW.seq, NEW.ts
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    NEW.ts_max := greatest(NEW.ts, last_max);
    PERFORM pg_notify('scopeledger_{s}', NEW.seq::text);
    RETURN NEW;
END $$;
CREATE TRIGGER events_next_seq BEFORE INSERT ON {s}.events
    FOR EACH ROW EXECUTE FUNCTION {s}.events_next_seq();

CREATE FUNCTION {s}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'scopeledger: % of %.% is refused (the log is append-only)',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON {s}.events
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {s}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
-- A session's row is changed only by its own connection (the one holding
-- its lock: renewing, moving to a new server instance, closing), only in its
-- lease, instance and closing, and never once closed: another client cannot
-- make it dead to the judges while it lives.
CREATE FUNCTION {s}.sessions_own() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.closed_at IS NOT NULL
            OR (NEW.id, NEW.host, NEW.pid, NEW.ttl_ms, NEW.grace_ms, NEW.opened_at)
               IS DISTINCT FROM (OLD.id, OLD.host, OLD.pid, OLD.ttl_ms, OLD.grace_ms, OLD.opened_at)
            OR NOT EXISTS (SELECT 1 FROM pg_locks l
                           WHERE l.locktype = 'advisory' AND l.granted AND l.pid = pg_backend_pid()
                             AND l.objsubid = 2 AND l.objid = OLD.id::bigint::oid
                             AND l.classid = (SELECT oid FROM pg_namespace WHERE nspname = TG_TABLE_SCHEMA)
                             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
    THEN
        RAISE EXCEPTION 'scopeledger: session % is changed only by its own connection, in its lease, '
                        'instance and closing, and never once closed', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sessions_own BEFORE UPDATE ON {s}.sessions
    FOR EACH ROW EXECUTE FUNCTION {s}.sessions_own();
CREATE TRIGGER sessions_no_truncate BEFORE TRUNCATE ON {s}.sessions
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
{_sessions_delete_ddl(s)}
{_waiters_ddl(s)}
INSERT INTO {s}.meta (format_version) VALUES ({STORE_FORMAT});
"""


#: How long a writable open waits for the locks that add ``events.at`` to a
#: ledger made before it (:meth:`PgStore._add_at`), in milliseconds: the
#: ``ALTER TABLE`` waits for transactions using the table, and appenders queue
#: behind it meanwhile; not granted in time, it is tried at the next open.
ADD_AT_LOCK_TIMEOUT_MS = 5_000


def _events_at_ddl(schema: str) -> str:
    """The ``events.at`` column (the server's clock when each line was
    inserted: :meth:`PgStore.appended_ago`, by which leases are judged), on a
    new ledger and on one made before it alike: added nullable without a
    default, so no row is rewritten (the rows before have NULL: unknown),
    then given its default for the rows to come. Idempotent. Kept apart from
    :func:`_ddl` so that both paths run the same statements."""
    return (f"ALTER TABLE {schema}.events ADD COLUMN IF NOT EXISTS at timestamptz;"
            f" ALTER TABLE {schema}.events ALTER COLUMN at SET DEFAULT clock_timestamp();")


def _sessions_delete_ddl(schema: str) -> str:
    """Who may delete a session's row (:meth:`PgStore.prune_sessions`): a
    row of a dead session only, dead by the judges' own rule on the server's
    clock (closed, or its lease over with its grace: neither ever comes back,
    as a renewal needs the lease running and the row open); a live
    session's row is refused, whoever asks. Made with a new ledger
    (:func:`_ddl`), and in a ledger made before it by the first prune that
    finds deleting refused (:meth:`PgStore._allow_session_deletes`: the
    trigger refused every delete before); idempotent."""
    return f"""
CREATE OR REPLACE FUNCTION {schema}.sessions_dead_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.closed_at IS NULL AND OLD.lease_until + OLD.grace_ms * interval '1 millisecond' >= clock_timestamp() THEN
        RAISE EXCEPTION 'scopeledger: the row of session % is deleted only once the session is dead (closed, '
                        'or its lease over with its grace)', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END $$;
DROP TRIGGER IF EXISTS sessions_keep ON {schema}.sessions;
CREATE TRIGGER sessions_keep BEFORE DELETE ON {schema}.sessions
    FOR EACH ROW EXECUTE FUNCTION {schema}.sessions_dead_only();
"""


def _waiters_ddl(schema: str) -> str:
    """The waiters' queue (:class:`PgTickets`): made with a new ledger
    (:func:`_ddl`), and in a ledger made by an earlier scopeledger when a
    waiter first joins; ``IF NOT EXISTS``, so either may run it (creators
    serialised by the creators' lock). Not part of :data:`STORE_FORMAT`: a
    ledger without it is read, and written, as before.

    ``UNLOGGED``: a ticket lives no longer than its waiter's connection
    (its lock goes with it, and with a server restart), so the queue needs
    no durability, and joining and leaving then wait for no WAL flush
    (a leave was a durable commit on the critical path of every handover:
    measured 2.5-5.4 ms of a 8-9 ms handover on this project's 2-core
    machine under load). After a crash the server empties it, as a restart
    empties the locks. A ledger whose queue table was made logged (by this
    project's main before 2026-12-03) keeps it so."""
    return f"""
CREATE UNLOGGED TABLE IF NOT EXISTS {schema}.waiters (
    number bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request bytea NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT clock_timestamp());
"""


#: The server instance, as SQL: ``<system identifier>@<postmaster start>/<last
#: reset of the cumulative statistics>`` (times UTC, to the microsecond). It
#: changes when the server restarts, and when it resets after a backend
#: crashed (an out-of-memory kill, a segfault: the postmaster ends every
#: connection, so every session lock goes, and recovers without restarting,
#: keeping its start time; crash recovery resets the statistics, and their
#: reset time). A reset asked by an administrator (``pg_stat_reset_shared
#: ('bgwriter')``) changes it too, which is safe: a session's lock then
#: decides nothing until its client reconnects, only its lease. Inlined in
#: the queries (not the schema's ``instance()`` function, which older
#: schemas define without the last part), so every client of one server
#: computes the same text; a client of an older scopeledger computes another,
#: so that each judges the other's sessions by their leases alone.
INSTANCE_SQL = ("((SELECT system_identifier::text FROM pg_control_system()) || '@'"
                " || to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                " || '/' || coalesce((SELECT to_char(stats_reset AT TIME ZONE 'UTC',"
                " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM pg_stat_bgwriter), '-'))")


def _signed32(oid: int) -> int:
    """An oid (uint32) as the int4 the two-key advisory lock functions take."""
    return oid - (1 << 32) if oid >= (1 << 31) else oid


# -- psycopg's blocks on a broken connection ---------------------------------

@contextlib.contextmanager
def _pipeline(conn: Any) -> Iterator[Any]:
    """``conn.pipeline()`` for the store's own pipeline blocks (every one of
    them: ARCHITECTURE.md, "psycopg's blocks on a broken connection"),
    ended without psycopg's ``error ignored terminating <psycopg.Pipeline
    [BAD]>: the connection is lost`` when the connection broke inside the
    block. Yields psycopg's ``Pipeline``; raises what the block raised, as
    ``with conn.pipeline()`` does.

    Why: psycopg ends a pipeline by sending a Sync, even on a connection
    it knows is broken; that fails, and when the block raised, psycopg logs
    the failure (WARNING, logger ``psycopg``) so as not to hide the block's
    error. A program that configures no logging prints it on stderr
    (Python's last-resort handler), though the store handles that very cut
    (connects again, or raises its own ``StoreUnavailable``,
    ``NotRecorded``, ...). Closing the connection first does not help
    (psycopg tries the Sync on a closed connection too); a filter on
    psycopg's logger would be process-wide and hide records about the
    application's own connections. So the condition is avoided: when the
    block raised and psycopg knows the connection is broken
    (``conn.closed``: libpq's status BAD; an error of a cut leaves it so),
    the block's error is held here, so psycopg's exit sees a block that did
    not raise: it then raises its Sync's failure instead of logging it,
    having reset its pipeline state as always; that failure is dropped and
    the block's error raised. An error on a live connection (a statement
    the server refused) goes through psycopg's exit unchanged. psycopg's
    ``transaction()`` blocks need nothing: on a connection it knows is
    broken their exit sends nothing and logs nothing."""
    failed: BaseException | None = None
    try:
        with conn.pipeline() as pipeline:
            try:
                yield pipeline
            except BaseException as exc:
                if not conn.closed:
                    raise
                failed = exc
    except psycopg.Error:
        if failed is None:
            raise
    if failed is not None:
        raise failed


# -- fork safety -------------------------------------------------------------

_live: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _ready(fd: int, events: int, deadline: float) -> bool:
    """Wait until ``fd`` is ready for ``events`` (``select.POLL*``), at most
    until ``deadline`` (``time.monotonic`` seconds); whether it is."""
    p = select.poll()
    p.register(fd, events)
    return bool(p.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000))))


def _blind(conn: Any) -> None:
    """In a forked child: point our copy of ``conn``'s socket at /dev/null,
    then close it, so nothing (not even libpq's Terminate message) reaches
    the parent's connection."""
    try:
        fd = conn.pgconn.socket
    except Exception:
        fd = -1
    if fd >= 0:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    with contextlib.suppress(Exception):
        conn.close()


def _after_fork_in_child() -> None:
    for obj in list(_live):
        obj._forked_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the store ---------------------------------------------------------------

def _rows(entries: Sequence[tuple[int, bytes]], first_seq: int) -> list[tuple[int, int, bytes]]:
    """``entries`` as the rows ``(seq, ts, line)`` from ``first_seq``.

    Raises:
        ValueError: a ts is not a signed 64-bit int, or a line holds a newline.
    """
    rows = []
    for i, (ts, line) in enumerate(entries):
        if type(ts) is not int or not -(1 << 63) <= ts < (1 << 63):
            raise ValueError(f"the ts for seq {first_seq + i} is {ts!r}, not a signed 64-bit int")
        if b"\n" in line:
            raise ValueError(f"the line for seq {first_seq + i} holds a newline")
        rows.append((first_seq + i, ts, bytes(line)))
    return rows


class _Txn:
    __slots__ = ("head", "thread", "done")

    def __init__(self, head: int) -> None:
        self.head = head
        self.thread = threading.get_ident()
        self.done = False


class PgStore:
    """The log of one ledger in one PostgreSQL schema. Open with
    :meth:`PgStore.open`; close with :meth:`close` (or ``with``)."""

    def __init__(self, loc: PgLocation, *, resolve_timeout: float = RESOLVE_TIMEOUT_S,
                 readonly: bool = False) -> None:
        self._loc = loc
        self._readonly = readonly
        self.url = loc.shown
        self.schema = loc.schema
        self._channel = f"scopeledger_{loc.schema}"
        # The head, and seq_at (the last seq before the first line stamped after
        # %(t)s: one lookup in the ts_max index), each said once.
        self._head_sql = f"SELECT coalesce(max(seq), 0) FROM {loc.schema}.events"
        # Under the lock (locked): the lines after seq a, led by the row of a
        # itself without its line, which shows that the log reaches a.
        self._missed_sql = (f"SELECT seq, CASE WHEN seq > %(a)s THEN line END FROM {loc.schema}.events"
                            " WHERE seq >= %(a)s ORDER BY seq")
        self._insert_sql = f"INSERT INTO {loc.schema}.events (seq, ts, line) VALUES (%s, %s, %b)"
        # try_append: the lock without waiting, its answer kept for the
        # transaction (a placeholder setting), then inserts only when it was
        # granted and the log still ends where the caller decided (that
        # subquery is evaluated once, before the first row).
        self._try_lock_sql = ("SELECT set_config('scopeledger.locked',"
                              " pg_try_advisory_xact_lock(%s, 0)::text, true)")
        insert_if = (f" WHERE current_setting('scopeledger.locked') = 'true'"
                     f" AND (SELECT coalesce(max(seq), 0) FROM {loc.schema}.events) = %s")
        self._insert_if_sql = (f"INSERT INTO {loc.schema}.events (seq, ts, line)"
                               " SELECT %s::bigint, %s::bigint, %b" + insert_if)
        self._insert_many_if_sql = (f"INSERT INTO {loc.schema}.events (seq, ts, line)"
                                    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bytea[])" + insert_if)
        self._seq_at_sql = (f"SELECT coalesce((SELECT seq FROM {loc.schema}.events WHERE ts_max <= %(t)s"
                            " ORDER BY ts_max DESC, seq DESC LIMIT 1), 0)")
        # The main connection (_conn) and the append lock's transaction on it,
        # held across locked(): a thread inside locked() holds _mutex until it
        # appends. A Ledger takes its own lock (_mem) inside locked(), and
        # holds it while it reads (catch-up) or tries an append: so another
        # thread never waits for _mutex while it may hold _mem (a read takes
        # the side connection when _mutex is held elsewhere, try_append gives
        # up), or the two would wait for each other for ever.
        self._mutex = threading.RLock()
        self._conn: Any = None
        self._side_mutex = threading.Lock()
        self._side: Any = None  # reads while another thread holds _conn (see _retrying)
        self._listen_mutex = threading.Lock()  # _listens
        self._listens: dict[int, Any] = {}  # thread ident -> its LISTEN connection (see wait)
        self._backend: tuple[int, Any] | None = None  # (pid, backend_start) of _conn's backend
        self._txn: _Txn | None = None
        self._key = 0  # the schema's oid as int4: the first key of our advisory locks
        self.created = False  # this open made the schema (LogStore.created)
        self._has_at = False  # events.at exists (set by _open): appended_ago can answer
        self._pid = os.getpid()
        self._resolve_timeout = resolve_timeout
        #: The waiters' queue (an object: nothing is read or made on the server
        #: before a waiter looks).
        self._tickets = PgTickets(self)
        #: Why this store does not prune sessions (deleting refused and the
        #: trigger that refuses it not replaceable by this role), or None.
        self.prune_refused: str | None = None
        _live.add(self)

    @classmethod
    def open(cls, url: str, *, create: bool = False, readonly: bool = False,
             resolve_timeout: float = RESOLVE_TIMEOUT_S) -> "PgStore":
        """Connect to the ledger at ``url``; with ``create``, make its schema
        and tables when the schema does not exist (concurrent creators are
        serialised; all of them open it). ``readonly``: reads only (nothing
        is created; :meth:`locked` and snapshot writes raise
        :class:`~scopeledger.ReadOnlyLedger`).

        Raises:
            InvalidLedgerURL: see :func:`parse_url`; or a connection
                parameter's value that libpq refuses when connecting
                (``sslmode=bogus``, a port over 65535: nothing reached the
                server).
            LedgerError: psycopg is not installed (the message says how).
            StoreUnavailable: the server cannot be reached or refuses the
                login; or psycopg is installed but cannot be loaded (its
                error is in the message: no libpq, a refused C build).
            NoLedger: the schema does not exist and ``create`` is false.
            CorruptLedger: the schema exists and is not a scopeledger ledger,
                or its store format is newer than this scopeledger knows.
            StoreError: the server refused creating it (e.g. permission denied).
        """
        if psycopg is None:
            missing = isinstance(_NO_PSYCOPG, ModuleNotFoundError) and _NO_PSYCOPG.name == "psycopg"
            if missing:
                raise LedgerError("the PostgreSQL backend needs psycopg 3: "
                                  "pip install 'scopeledger[postgresql]'")
            raise StoreUnavailable(redact(url), f"the PostgreSQL backend needs psycopg 3, which is installed but "
                                   f"cannot be loaded here: {_NO_PSYCOPG}; pip install 'psycopg[binary]' brings "
                                   "its own libpq (or install the system's libpq)")
        store = cls(parse_url(url), resolve_timeout=resolve_timeout, readonly=readonly)
        try:
            store._open(create and not readonly)
        except BaseException:
            store.close()
            raise
        return store

    def _open(self, create: bool) -> None:
        with self._mutex:
            conn = self._connection()
            s = self.schema
            try:
                if create:
                    with conn.transaction():
                        # Serialise creators of this schema in this database.
                        conn.execute("SELECT pg_advisory_xact_lock(hashtext('scopeledger:create'), hashtext(%s))", (s,))
                        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (s,)).fetchone()
                        if not exists:
                            conn.execute(_ddl(s))
                            conn.execute(_events_at_ddl(s))
                            self.created = True
                oid = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (s,)).fetchone()
                if oid is None:
                    raise NoLedger(f"no ledger at {self.url}: schema {s} does not exist")
                self._key = _signed32(int(oid[0]))
                # Whether it is a ledger, and whether its events have the
                # server's time (``at`` with its default: True; without the
                # default: False; no column: None), in one round trip (from
                # the catalogs alone: no privilege on the schema is needed).
                has_meta, at = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'meta'),"
                    " (SELECT a.atthasdef FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                    "  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'events'"
                    "  AND a.attname = 'at' AND NOT a.attisdropped)", (s, s)).fetchone()
                if not has_meta:
                    raise CorruptLedger(self.url, f"schema {s} exists and is not a scopeledger ledger "
                                                  "(it has no meta table)")
                row = conn.execute(f"SELECT format_version FROM {s}.meta").fetchone()
            except psycopg.Error as exc:
                raise self._error(exc, f"open the ledger at {self.url}") from exc
            if row is None:
                raise CorruptLedger(self.url, f"{s}.meta has no row")
            if row[0] > STORE_FORMAT:
                raise CorruptLedger(self.url, f"store format {row[0]} is newer than this scopeledger "
                                              f"reads ({STORE_FORMAT}); upgrade scopeledger")
            if row[0] != STORE_FORMAT:
                raise CorruptLedger(self.url, f"unsupported store format {row[0]!r}")
            self._has_at = at is not None
            if at is not True and not self._readonly:
                self._has_at = self._add_at(conn) or self._has_at

    def _add_at(self, conn: Any) -> bool:
        """Add ``events.at`` to a ledger made before it (a writable open;
        serialised with creators), with :data:`ADD_AT_LOCK_TIMEOUT_MS` as
        the lock timeout. ``True`` when done; ``False``, with a warning,
        when the locks were not granted in time or the role may not alter
        the table (the ledger works on: the lines it appends then have no
        server time, and leases are judged as on a file until an open by
        the table's owner adds it).

        Raises:
            StoreUnavailable, StoreError: any other refusal.
        """
        s = self.schema
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = {ADD_AT_LOCK_TIMEOUT_MS}")
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('scopeledger:create'), hashtext(%s))", (s,))
                conn.execute(_events_at_ddl(s))
        except (pg_errors.LockNotAvailable, pg_errors.InsufficientPrivilege) as exc:
            log.warning("could not add the server's time of each line (%s.events.at) to the ledger at %s, "
                        "made by an older scopeledger: %s; leases are judged on the boot-time clock of the "
                        "host that renewed them until an open by the table's owner adds it",
                        s, self.url, self._why(exc))
            return False
        except psycopg.Error as exc:
            raise self._error(exc, f"add {s}.events.at to the ledger at {self.url}") from exc
        return True

    # -- connections --------------------------------------------------------

    def _new_connection(self, **params: Any) -> Any:
        """A new connection (``params``: libpq connection parameters added to
        the URL's), with synchronous commit forced on and the server settings
        the store depends on (:data:`_STARTUP`, after the URL's or
        ``PGOPTIONS``'s own, so they win) whatever the role, the database or
        the URL set."""
        given = self._loc.params
        options = self._loc.options if self._loc.options is not None else os.environ.get("PGOPTIONS", "")
        params = {**{k: v for k, v in _TCP_DEFAULTS.items() if k not in given},
                  "options": f"{options} {_STARTUP}".strip(), **params}
        try:
            conn = psycopg.connect(self._loc.conninfo, autocommit=True, **params)
        except psycopg.Error as exc:
            if _options_refused(exc):
                why = self._why(exc).removeprefix("connection is bad: ")
                raise InvalidLedgerURL(f"libpq refuses {self.url}: {why}") from None
            sqlstate = _connect_sqlstate(exc)
            raise StoreUnavailable(self.url, f"cannot connect to {self.url}: {self._why(exc)}"
                                             + (f" (SQLSTATE {sqlstate})" if sqlstate else ""), sqlstate) from exc
        try:
            # The server's side of the TCP settings too, for this connection:
            # a client whose link is cut while it holds the append lock is
            # let go in about 20 s (its transaction rolls back; a session's
            # connection sets its own, longer, values).
            conn.execute(
                "SELECT set_config('synchronous_commit', 'on', false),"
                " set_config('idle_in_transaction_session_timeout', %s, false),"
                " set_config('tcp_keepalives_idle', '5', false),"
                " set_config('tcp_keepalives_interval', '2', false),"
                " set_config('tcp_keepalives_count', '3', false),"
                " set_config('tcp_user_timeout', '20000', false)"
                # PostgreSQL 14+: a server default must not end an idle
                # session's connection (and with it the session) between renewals.
                + (", set_config('idle_session_timeout', '0', false)"
                   if conn.info.server_version >= 140000 else ""),
                (str(IDLE_IN_TRANSACTION_TIMEOUT_MS),))
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                conn.close()
            raise self._error(exc, f"set up a connection to {self.url}") from exc
        return conn

    def _connection(self) -> Any:
        """The main connection, (re)opened when missing or broken."""
        if self._pid != os.getpid():  # belt and braces: the at-fork hook did this already
            self._forked_child()
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._new_connection()
            try:
                row = conn.execute("SELECT pg_backend_pid(), backend_start FROM pg_stat_activity"
                                   " WHERE pid = pg_backend_pid()").fetchone()
            except psycopg.Error as exc:
                with contextlib.suppress(Exception):
                    conn.close()
                raise self._error(exc, f"set up a connection to {self.url}") from exc
            self._conn = conn
            self._backend = (int(row[0]), row[1]) if row else None
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self._backend = None

    def _forked_child(self) -> None:
        if self._pid == os.getpid():
            return
        for conn in (self._conn, self._side, *self._listens.values()):
            if conn is not None:
                _blind(conn)
        self._conn = self._side = None
        self._listens = {}
        self._backend = None
        self._txn = None
        self._mutex = threading.RLock()
        self._side_mutex = threading.Lock()
        self._listen_mutex = threading.Lock()
        self._pid = os.getpid()
        self._tickets.forked_child()

    def _why(self, exc: BaseException) -> str:
        """The first line of ``exc``'s message, without this URL's password
        (libpq's messages quote hosts and ports it read from the URL)."""
        return _scrub(_first_line(exc), self._loc.conninfo)

    def _error(self, exc: BaseException, doing: str) -> LedgerError:
        """A psycopg error as ours."""
        if isinstance(exc, LedgerError):
            return exc
        sqlstate = getattr(exc, "sqlstate", None)
        if isinstance(exc, psycopg.OperationalError) and (sqlstate is None or sqlstate.startswith(("08", "57P"))):
            return StoreUnavailable(self.url, f"failed to {doing}: connection lost: {self._why(exc)}", sqlstate)
        return StoreError(self.url, f"failed to {doing}: {self._why(exc)}"
                                    + (f" (SQLSTATE {sqlstate})" if sqlstate else ""), sqlstate)

    def _retrying(self, doing: str, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn(conn)`` (a read, or a statement of its own outside the
        append lock's transaction); on a lost connection, once more on a new
        one. Returns what ``fn`` returns (psycopg's rows are untyped: ``fn``
        or its caller names their types). On the main connection, or, while
        another thread holds it (inside :meth:`locked`, which may wait for
        that thread's ledger), on the side connection: never waiting for
        the main one (see ``__init__``)."""
        if not self._mutex.acquire(blocking=False):
            return self._on_side(doing, fn)
        try:
            for attempt in (0, 1):
                conn = self._connection()
                try:
                    return fn(conn)
                except psycopg.OperationalError as exc:
                    if self._txn is not None or not (conn.closed or conn.broken) or attempt:
                        raise self._error(exc, doing) from exc
                    self._drop()
                except psycopg.Error as exc:
                    raise self._error(exc, doing) from exc
        finally:
            self._mutex.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _on_side(self, doing: str, fn: Callable[[Any], _T]) -> _T:
        """:meth:`_retrying` on the side connection (opened when first
        needed: only a store used by several threads at once has one)."""
        with self._side_mutex:
            for attempt in (0, 1):
                if self._pid != os.getpid():  # (the at-fork hook did this already)
                    self._forked_child()
                conn = self._side
                if conn is None or conn.closed:
                    conn = self._side = self._new_connection()
                try:
                    return fn(conn)
                except psycopg.OperationalError as exc:
                    if not (conn.closed or conn.broken) or attempt:
                        raise self._error(exc, doing) from exc
                    with contextlib.suppress(Exception):
                        conn.close()
                    self._side = None
                except psycopg.Error as exc:
                    raise self._error(exc, doing) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the connections (sessions opened from this store stay open
        until their own :meth:`PgSession.close`; a waiter's ticket until it
        leaves). Idempotent; raises nothing."""
        with self._mutex:
            if self._pid != os.getpid():
                self._forked_child()
            self._drop()
        with self._side_mutex:
            if self._side is not None:
                with contextlib.suppress(Exception):
                    self._side.close()
                self._side = None
        with self._listen_mutex:
            listens, self._listens = self._listens, {}
            for conn in listens.values():
                with contextlib.suppress(Exception):
                    conn.close()
            self._tickets.close()

    def __enter__(self) -> "PgStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------

    @property
    def location(self) -> str:
        """The URL with its password redacted (as messages show it)."""
        return self.url

    @property
    def readonly(self) -> bool:
        """Opened with ``readonly=True``."""
        return self._readonly

    def child_location(self) -> tuple[str, str | None]:
        """How a child process reaches this ledger: ``(url, password)``,
        the URL as it was given (with its schema) but without its password
        (:func:`without_password`: it goes into an environment, which
        tools print), and the password the URL carried (``None``: none;
        libpq's ``PGPASSWORD``, ``~/.pgpass`` or another method then
        serves the child as it served this process)."""
        return self._loc.plain, self._loc.password

    def read_after(self, seq: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        """The lines with seq > ``seq``, in order, at most ``limit`` of them:
        ``[(seq, line)]``, each line the stored bytes (no newline).

        Raises:
            ValueError: ``seq`` < 0 or ``limit`` < 1.
            CorruptLedger: the log holds fewer than ``seq`` lines.
            StoreUnavailable, StoreError.
        """
        _int("seq", seq, 0)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be None or an int >= 1, not {limit!r}")
        if seq == 0:
            sql = (f"SELECT seq, line FROM {self.schema}.events ORDER BY seq"
                   + (" LIMIT %s" if limit is not None else ""))
            params: tuple[int, ...] = (limit,) if limit is not None else ()
        else:
            # seq itself too (its line left out), in the same statement: so
            # that a log ending before it is told from one that merely has
            # nothing new without a second round trip.
            sql = (f"SELECT seq, CASE WHEN seq > %s THEN line END FROM {self.schema}.events"
                   " WHERE seq >= %s ORDER BY seq" + (" LIMIT %s" if limit is not None else ""))
            params = (seq, seq, limit + 1) if limit is not None else (seq, seq)

        def run(conn: Any) -> list[tuple[int, Any]]:
            with conn.cursor(binary=True) as cur:
                return list(cur.execute(sql, params))
        rows = self._retrying("read the log", run)
        if seq == 0:
            return [(s, bytes(b)) for s, b in rows]
        if not rows or rows[0][0] != seq:
            raise CorruptLedger(self.url, f"the log ends at seq {self.head()}, and seq {seq} was seen "
                                          "before: replaced or restored from an older copy")
        return [(s, bytes(b)) for s, b in rows[1:]]

    def head(self) -> int:
        """The last seq (0 for an empty log). Raises: StoreUnavailable, StoreError."""
        return cast(int, self._retrying("read the log", lambda conn: conn.execute(
            self._head_sql).fetchone()[0]))

    def appended_ago(self, seqs: Iterable[int]) -> dict[int, int] | None:
        """How long ago each line of ``seqs`` was appended, on the server's
        clock: ``{seq: ns}``, ``clock_timestamp()`` now minus the line's
        ``events.at`` (both read by the server in one query: no client
        clock, so clients on any host get the same answer; microsecond
        resolution; negative if the server's clock stepped back since). A
        seq left out is unknown: no such line, a line appended before the
        ledger had the column (NULL), or a ledger without it (opened
        read-only, or by a role that may not add it). A line copied in
        (``copy_log``: ``ledger import``, ``copy_ledger``) has the time of
        the copy. One query for all of them; ``{}`` without one when
        ``seqs`` is empty.

        Raises:
            ValueError: a seq is not an int >= 1.
            StoreUnavailable, StoreError.
        """
        ids = sorted({_int("a seq", q, 1) for q in seqs})
        if not ids or not self._has_at:
            return {}
        sql = (f"WITH n AS (SELECT clock_timestamp() AS now)"
               f" SELECT e.seq, round(extract(epoch FROM n.now - e.at) * 1000000)::bigint"
               f" FROM {self.schema}.events e, n WHERE e.seq = ANY(%s) AND e.at IS NOT NULL")
        rows = self._retrying("read when lines were appended", lambda conn: conn.execute(sql, (ids,)).fetchall())
        return {int(q): int(us) * 1000 for q, us in rows}

    def seq_at(self, ts: int) -> int:
        """The last seq before the first line whose ``ts`` is later than
        ``ts`` (ns, UTC): the log "as of" that time, 0 when the first line is
        later, the head when none is (the store interface's meaning; writers'
        clocks may step back, and the first later line ends the answer,
        whatever follows it). One index lookup (``ts_max``). Time travel
        (:meth:`time_point`) lands at or after it.

        Raises:
            ValueError: ``ts`` is not a signed 64-bit int.
            StoreUnavailable, StoreError.
        """
        _int("ts", ts)
        return int(self._retrying("read the log", lambda conn: conn.execute(
            self._seq_at_sql, {"t": ts}).fetchone()[0]))

    def time_point(self, ts: int, crossed: int = 5) -> tuple[int, int, list[tuple[int, bytes]]]:
        """Where time travel to ``ts`` (ns, UTC) lands, as
        :meth:`Ledger.time_point <scopeledger.Ledger.time_point>` finds it on
        a file: ``(seq, crossed_count, first_crossed)``. ``seq`` is the last
        seq (by seq) whose line is stamped at or before ``ts`` (each line's
        ``ts`` is its writer's own clock reading, never clamped: format v2);
        ``crossed_count`` is how many lines at or before ``seq`` are stamped
        after ``ts`` (the answer crosses a clock jump when it is not 0);
        ``first_crossed`` the first ``crossed`` of them, ``[(seq, line)]``.

        Cost: while no line is stamped before the line before it, one index
        lookup (``ts_max``, the running maximum the server keeps, is
        ascending); past a clock that stepped back, the stepped-back lines up
        to ``ts`` (a partial index) and the lines between the two answers.

        Raises:
            ValueError: ``ts`` is not a signed 64-bit int, or ``crossed`` not
                an int >= 0.
            StoreUnavailable, StoreError.
        """
        _int("ts", ts)
        _int("crossed", crossed, 0)
        s = self.schema

        def run(conn: Any) -> tuple[int, int, list[tuple[int, bytes]]]:
            # b: the last seq before the first line stamped after ts (every
            # line up to b is at or before ts); a >= b: lines after b stamped
            # at or before ts all stepped back (ts < ts_max), so the partial
            # index finds the last of them.
            at, before = conn.execute(
                f"WITH b AS ({self._seq_at_sql} AS b)"
                f" SELECT greatest(b.b, coalesce((SELECT max(seq) FROM {s}.events"
                f"                                WHERE ts < ts_max AND ts <= %(t)s), 0)), b.b FROM b",
                {"t": ts}).fetchone()
            if at == before:
                return at, 0, []
            count = conn.execute(f"SELECT count(*) FROM {s}.events WHERE seq > %s AND seq <= %s AND ts > %s",
                                 (before, at, ts)).fetchone()[0]
            first: list[tuple[int, bytes]] = []
            if crossed > 0:
                with conn.cursor(binary=True) as cur:
                    first = [(q, bytes(b)) for q, b in cur.execute(
                        f"SELECT seq, line FROM {s}.events WHERE seq > %s AND seq <= %s AND ts > %s"
                        " ORDER BY seq LIMIT %s", (before, at, ts, crossed))]
            return at, count, first
        return self._retrying("read the log", run)

    # -- the lock and appending -------------------------------------------

    @contextlib.contextmanager
    def locked(self, after: int, timeout: float | None = None) -> Iterator[list[tuple[int, bytes]]]:
        """Hold the ledger's exclusive append lock; yields the lines with seq >
        ``after`` (what this caller has not seen), read after the lock was
        granted. :meth:`append` may be called once inside; leaving without it
        (or on an error) rolls back and releases the lock.

        ``timeout``: seconds to wait for the lock, ``None`` for ever, under
        1 ms a single try.

        Raises:
            LockTimeout: the lock was not granted within ``timeout``
                (``path`` is the redacted URL).
            CorruptLedger: the log has fewer lines than ``after`` (replaced or
                restored from an older backup), or its seqs do not follow.
            ReadOnlyLedger: opened read-only.
            ValueError: ``after`` is not an int >= 0, or ``timeout`` not
                ``None`` or a number.
            RuntimeError: called again inside :meth:`locked` in this thread.
            StoreUnavailable, StoreError.
        """
        if self._readonly:
            raise ReadOnlyLedger(self.url, "take the append lock")
        _int("after", after, 0)
        _seconds("timeout", timeout)
        with self._mutex:
            if self._txn is not None:
                raise RuntimeError("PgStore.locked() is not re-entrant")
            lines, head = self._begin(after, timeout)
            txn = self._txn = _Txn(head)
            try:
                yield lines
            finally:
                self._txn = None
                if not txn.done:
                    self._rollback()

    def _begin(self, after: int, timeout: float | None) -> tuple[list[tuple[int, bytes]], int]:
        trylock = timeout is not None and timeout < 0.001
        for attempt in (0, 1):
            conn = self._connection()
            try:
                with _pipeline(conn):
                    conn.execute("BEGIN")
                    if trylock:
                        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", (self._key,))
                    else:
                        if timeout is not None:  # (else the connection's own: 0, none; see _STARTUP)
                            ms = max(1, math.ceil(timeout * 1000))
                            conn.execute(f"SET LOCAL lock_timeout = {int(ms)}")
                        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (self._key,))
                    rows = conn.cursor(binary=True).execute(self._missed_sql, {"a": after})
                granted = got.fetchone()[0] if trylock else True
                got_rows = rows.fetchall()
                break
            except pg_errors.LockNotAvailable:
                self._rollback()
                raise LockTimeout(self.url, timeout or 0.0) from None
            except psycopg.OperationalError as exc:
                # Nothing was done yet: a connection that went stale (a server
                # restart) is replaced once.
                broken = conn.closed or conn.broken
                self._drop()
                if not broken or attempt:
                    raise self._error(exc, "take the ledger's lock") from exc
            except psycopg.Error as exc:
                self._rollback()
                raise self._error(exc, "take the ledger's lock") from exc
            except BaseException:
                # Interrupted (KeyboardInterrupt, a signal handler's exception)
                # while the lock was asked for: it may be granted afterwards.
                # Closing the connection ends that transaction, so that no lock
                # stays with an idle connection (60 s for every writer).
                self._drop()
                raise
        if not granted:
            self._rollback()
            raise LockTimeout(self.url, timeout or 0.0)
        if after and (not got_rows or got_rows[0][0] != after):
            self._rollback()
            head = self.head()
            if head < after:
                raise CorruptLedger(self.url, f"the log ends at seq {head}, and seq {after} was seen "
                                              "before: replaced or restored from an older copy")
            raise CorruptLedger(self.url, f"seq {after} is missing from the log", seq=after)
        lines = [(q, bytes(b)) for q, b in (got_rows[1:] if after else got_rows)]
        want = after + 1
        for q, _ in lines:
            if q != want:
                self._rollback()
                raise CorruptLedger(self.url, f"seq {q} where {want} was expected", seq=q)
            want += 1
        return lines, after + len(lines)

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop()  # the server ends the transaction with the connection

    def append(self, entries: Sequence[tuple[int, bytes]], first_seq: int) -> None:
        """Append ``entries``, ``(ts, line)`` pairs (each line one event's
        bytes, no newline; ``ts`` its time, int ns, UTC, as the line says),
        as seqs ``first_seq ..`` and commit; durable on the server when it
        returns (synchronous commit). Only inside :meth:`locked`, once, with
        ``first_seq`` = the head seen there + 1; the lock is released by the
        commit. The server checks each line says its seq and ts.

        Raises:
            RuntimeError: outside :meth:`locked`, or a second time in it.
            ValueError: ``entries`` is empty, ``first_seq`` is not the next
                seq, a line holds a newline, or a ts is not a signed 64-bit
                int (nothing is sent).
            NotRecorded: the connection broke (or psycopg gave up on it), and
                reading back showed the lines are not in the log.
            InDoubt: the connection broke, and whether they are could not be
                found out within the resolve timeout.
            StoreError: the server refused the insert (nothing recorded).

        A KeyboardInterrupt while the lines are on their way is let through
        after closing the connection: whether they were committed is then
        unknown (read ``first_seq`` back).
        """
        txn = self._txn
        if txn is None or txn.thread != threading.get_ident() or self._pid != os.getpid():
            raise RuntimeError("PgStore.append() outside locked()")
        if txn.done:
            raise RuntimeError("PgStore.append() called twice in one locked()")
        if not entries:
            raise ValueError("nothing to append")
        if first_seq != txn.head + 1:
            raise ValueError(f"first_seq {first_seq} is not the next seq ({txn.head + 1})")
        rows = _rows(entries, first_seq)
        conn = self._conn
        backend = self._backend
        txn.done = True
        try:
            with _pipeline(conn):
                if len(rows) == 1:
                    conn.execute(self._insert_sql, rows[0])
                else:
                    with conn.cursor() as cur:
                        cur.executemany(self._insert_sql, rows)
                conn.execute("COMMIT")
            return
        except psycopg.Error as exc:
            cause = self._append_failed(exc, conn)
        except BaseException:
            # Interrupted (KeyboardInterrupt): let it through, the outcome
            # unknown; closing the connection leaves no transaction, and no
            # lock, behind (a COMMIT the server already read still commits).
            self._drop()
            raise
        self._resolve(rows, backend, cause)

    def _append_failed(self, exc: psycopg.Error, conn: Any) -> BaseException:
        """What an append's (or try_append's) psycopg error ``exc`` on
        ``conn`` means. A statement the server refused on a live connection:
        the transaction is aborted (a pipeline skips what follows an error),
        nothing committed: rolled back, and raised as a ``StoreError``.
        Otherwise the connection broke, or the client gave up on it (an error
        of psycopg's own, e.g. an interruption it turned into one), while the
        inserts and COMMIT may be at the server: the connection is dropped,
        and ``exc`` returned, the cause for :meth:`_resolve`.

        Raises:
            StoreError: the server refused the statement.
        """
        if _refused(exc) and not (conn.closed or conn.broken):
            self._rollback()
            raise self._error(exc, "append to the log") from exc
        self._drop()
        return exc

    def try_append(self, entries: Sequence[tuple[int, bytes]], first_seq: int) -> bool:
        """Append ``entries`` (as :meth:`append`) as seqs ``first_seq ..``
        and commit, in one round trip and outside :meth:`locked`, if at
        that moment the ledger's lock is free and the log ends at
        ``first_seq - 1``; else append nothing. ``True`` when appended
        (durable when it returns, as :meth:`append`), ``False`` when not
        (another client held the lock, or lines were appended after
        ``first_seq - 1``, or the log ends before it, or another thread of
        this process was using the store's connection, inside
        :meth:`locked` or a read: not tried): take :meth:`locked` and
        decide again.

        For a caller that decided on the log up to ``first_seq - 1``
        without the lock: the server takes the lock without waiting for it
        (``pg_try_advisory_xact_lock``, so a decision is never older than
        this round trip, and no client waiting in the lock's queue is
        overtaken), then, in a statement of its own (READ COMMITTED: it
        sees every commit before the lock), inserts only if the last seq
        is still ``first_seq - 1``: the lines are those :meth:`locked`
        would have let it append. Synchronous commit and the server's
        backstops apply as to every append.

        Raises:
            ReadOnlyLedger: opened read-only.
            RuntimeError: inside :meth:`locked` in this thread.
            ValueError: as :meth:`append` (nothing is sent), or
                ``first_seq`` < 1.
            InDoubt: the connection broke, and whether the lines were
                appended could not be found out within the resolve timeout
                (a connection that broke before they were is resolved as
                not appended: ``False``).
            StoreError: the server refused the insert (nothing recorded).
            StoreUnavailable: the server cannot be reached.
        """
        if self._readonly:
            raise ReadOnlyLedger(self.url, "append")
        _int("first_seq", first_seq, 1)
        if not entries:
            raise ValueError("nothing to append")
        rows = _rows(entries, first_seq)
        if not self._mutex.acquire(blocking=False):
            # Another thread of this process is using the connection (inside
            # locked(), perhaps waiting for the caller's ledger): not tried.
            return False
        try:
            return self._try_append_held(rows, first_seq)
        finally:
            self._mutex.release()

    def _try_append_held(self, rows: list[tuple[int, int, bytes]], first_seq: int) -> bool:
        """:meth:`try_append`'s work, with ``_mutex`` held."""
        if self._txn is not None:
            raise RuntimeError("PgStore.try_append() inside locked()")
        conn = self._connection()
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._rollback()  # (never so: the statements below must start a transaction of their own)
            conn = self._connection()
        backend = self._backend
        try:
            # No BEGIN and COMMIT: the statements before a pipeline's
            # Sync are one implicit transaction (extended query protocol;
            # psycopg sends the Sync when the block ends), committed
            # there, synchronously, as any other.
            with _pipeline(conn):
                conn.execute(self._try_lock_sql, (self._key,))
                if len(rows) == 1:
                    cur = conn.execute(self._insert_if_sql, (*rows[0], first_seq - 1))
                else:
                    cur = conn.execute(self._insert_many_if_sql, (
                        [q for q, _, _ in rows], [t for _, t, _ in rows], [b for _, _, b in rows],
                        first_seq - 1))
            appended = int(cur.rowcount)
            if appended not in (0, len(rows)):  # one statement: all or none
                raise CorruptLedger(self.url, f"{appended} of {len(rows)} lines from seq {first_seq} "
                                              "were appended", seq=first_seq)
            return appended == len(rows)
        except psycopg.Error as exc:
            cause = self._append_failed(exc, conn)
        except BaseException:
            self._drop()  # as in append: the outcome unknown, no lock left behind
            raise
        try:
            self._resolve(rows, backend, cause)
        except NotRecorded:
            return False
        return True

    def _resolve(self, rows: list[tuple[int, int, bytes]], backend: tuple[int, Any] | None,
                 cause: BaseException) -> None:
        """The connection broke during an append: find out whether it committed."""
        first, n = rows[0][0], len(rows)
        deadline = time.monotonic() + self._resolve_timeout
        pause = 0.02
        last: BaseException = cause
        while True:
            try:
                found = self._read_back(first, n, backend, deadline)
            except (StoreUnavailable, LockTimeout) as exc:
                last = exc
            else:
                if len(found) == n and all(found.get(q) == line for q, _, line in rows):
                    return  # committed before the connection broke
                if not any(found.get(q) == line for q, _, line in rows):
                    raise NotRecorded(self.url, f"the connection to {self.url} broke during an append, "
                                                f"and seq {first} was not recorded; nothing was changed: "
                                                "take the lock and decide again", first) from cause
                raise CorruptLedger(self.url, f"seqs {first}..{first + n - 1} were recorded in part "
                                              "after a broken connection", seq=first)
            if time.monotonic() + pause >= deadline:
                err = InDoubt(self.url, f"the connection to {self.url} broke during an append, and "
                                        f"whether seq {first} was recorded could not be found out "
                                        f"within {self._resolve_timeout:g}s ({self._why(last)}); "
                                        "read it back before acting on it", first)
                raise err from cause
            time.sleep(pause)  # a back-off between reconnection attempts
            pause = min(pause * 2, 1.0)

    def _read_back(self, first: int, n: int, backend: tuple[int, Any] | None,
                   deadline: float) -> dict[int, bytes]:
        with self._mutex:
            conn = self._connection()
            try:
                if backend is not None:  # end our old transaction if its backend still runs
                    with contextlib.suppress(pg_errors.InsufficientPrivilege):
                        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                     " WHERE pid = %s AND backend_start = %s", backend)
                remaining = max(0.001, deadline - time.monotonic())
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {max(1, math.ceil(remaining * 1000))}")
                    conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (self._key,))
                    with conn.cursor(binary=True) as cur:
                        cur.execute(f"SELECT seq, line FROM {self.schema}.events"
                                    " WHERE seq >= %s AND seq < %s", (first, first + n))
                        return {q: bytes(b) for q, b in cur.fetchall()}
            except pg_errors.LockNotAvailable:
                raise LockTimeout(self.url, self._resolve_timeout) from None
            except psycopg.Error as exc:
                self._drop()
                raise self._error(exc, "read back an append") from exc

    # -- waiting ------------------------------------------------------------

    def wait(self, after: int, timeout: float | None = None) -> int:
        """Wait until the log has a line with seq > ``after``, at most
        ``timeout`` seconds (``None``: for ever); return the head seq (≤
        ``after`` when the time ran out). Woken by LISTEN/NOTIFY; the table is
        the truth (the head is read after LISTEN and after every wake-up).
        Each thread that waits has a LISTEN connection of its own (psycopg
        serialises a connection: shared, one thread's wait held up another's
        until it ended, whatever its timeout); a thread's is closed by
        :meth:`close`, or when a later waiter finds the thread gone.

        Raises:
            ValueError: ``after`` is not an int >= 0, or ``timeout`` not
                ``None`` or a number.
            StoreUnavailable: the connection broke, and a new one failed too.
            StoreError.
        """
        _int("after", after, 0)
        _seconds("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        retried = False
        while True:
            try:
                with self._listen_mutex:
                    conn = self._listen_connection()
                head = cast(int, conn.execute(self._head_sql).fetchone()[0])
                retried = False  # a connection lost later gets its own retry
                if head > after:
                    return head
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return head
                for _ in conn.notifies(timeout=remaining, stop_after=1):
                    pass
            except psycopg.OperationalError as exc:
                with self._listen_mutex:
                    gone = self._listens.pop(threading.get_ident(), None)
                if gone is not None:
                    with contextlib.suppress(Exception):
                        gone.close()
                if retried:
                    raise self._error(exc, "wait for new events") from exc
                retried = True
            except psycopg.Error as exc:
                raise self._error(exc, "wait for new events") from exc

    @property
    def _listen(self) -> Any:
        """The calling thread's LISTEN connection, or ``None``."""
        return self._listens.get(threading.get_ident())

    def _listen_connection(self) -> Any:
        """The calling thread's LISTEN connection, opened when missing or
        closed (under ``_listen_mutex``); those of threads that ended are closed."""
        if self._pid != os.getpid():
            self._forked_child()
        me = threading.get_ident()
        conn = self._listens.get(me)
        if conn is None or conn.closed:
            alive = {t.ident for t in threading.enumerate()}
            for ident in [i for i in self._listens if i not in alive]:
                with contextlib.suppress(Exception):
                    self._listens.pop(ident).close()
            conn = self._new_connection()
            try:
                conn.execute(f"LISTEN {self._channel}")
            except psycopg.Error as exc:
                conn.close()
                raise self._error(exc, "listen for new events") from exc
            self._listens[me] = conn
        return conn

    # -- the waiters' queue -------------------------------------------------

    def tickets(self) -> "PgTickets":
        """The waiters' queue of this ledger (:class:`PgTickets`: the table
        ``<schema>.waiters``); nothing is read or made before a waiter looks."""
        return self._tickets

    # -- snapshots ----------------------------------------------------------

    def snapshot_read(self, seq: int) -> tuple[dict[str, Any], bytes]:
        """The snapshot at ``seq``: ``(header, body)``, the header as written
        (``format``, ``seq``, ``last_hash``, ``ts``, ``checksum``), the body
        the state's JSON bytes.

        Raises:
            SnapshotInvalid: none at ``seq``, a header that is not a JSON
                object naming ``seq``, or one whose ``last_hash`` is not the
                hash of line ``seq``.
            ValueError: ``seq`` is not an int.
            StoreUnavailable, StoreError.
        """
        _int("seq", seq)
        s = self.schema

        def run(conn: Any) -> Any:
            with conn.cursor(binary=True) as cur:
                return cur.execute(f"SELECT n.header, n.body, e.line FROM {s}.snapshots n"
                                   f" JOIN {s}.events e USING (seq) WHERE n.seq = %s", (seq,)).fetchone()
        row = self._retrying("read a snapshot", run)
        where = f"{self.url} snapshot at seq {seq}"
        if row is None:
            raise SnapshotInvalid(where, f"no snapshot at seq {seq}")
        try:
            header = orjson.loads(bytes(row[0]))
        except orjson.JSONDecodeError as exc:
            raise SnapshotInvalid(where, f"its header is not JSON ({exc})") from None
        if not isinstance(header, dict) or header.get("seq") != seq:
            raise SnapshotInvalid(where, "its header does not name its seq")
        if header.get("last_hash") != line_hash(bytes(row[2])):
            raise SnapshotInvalid(where, f"its last_hash does not match the log at seq {seq}")
        return header, bytes(row[1])

    def snapshot_write(self, header: dict[str, Any], body: bytes) -> None:
        """Store a snapshot (one statement: all or nothing), named by
        ``header["seq"]``, which must be a line of the log; one at that seq
        is replaced (the log cannot lose its tail here, so a snapshot at a
        seq always describes the same line).

        Raises:
            ReadOnlyLedger: opened read-only.
            ValueError: ``header["seq"]`` is not a line of the log.
            StoreUnavailable, StoreError.
        """
        if self._readonly:
            raise ReadOnlyLedger(self.url, "write a snapshot")
        seq = header.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValueError(f"a snapshot header names seq {seq!r}, not a line of the log")
        s = self.schema
        try:
            done = self._retrying("write a snapshot", lambda conn: conn.execute(
                f"INSERT INTO {s}.snapshots (seq, header, body) SELECT %s, %b, %b"
                f" WHERE EXISTS (SELECT 1 FROM {s}.events WHERE seq = %s)"
                " ON CONFLICT (seq) DO UPDATE SET header = EXCLUDED.header, body = EXCLUDED.body",
                (seq, orjson.dumps(header), bytes(body), seq)).rowcount)
        except StoreError as exc:
            if exc.sqlstate == "23503":  # the line went away: cannot happen (append-only), said anyway
                raise ValueError(f"seq {seq} is not a line of the log at {self.url}") from None
            raise
        if done != 1:
            raise ValueError(f"seq {seq} is not a line of the log at {self.url}")

    def snapshot_seqs(self) -> list[int]:
        """The seqs of the stored snapshots, ascending (whether each is valid
        is :meth:`snapshot_read`'s to say).

        Raises: StoreUnavailable, StoreError.
        """
        return [r[0] for r in self._retrying("list snapshots", lambda conn: conn.execute(
            f"SELECT seq FROM {self.schema}.snapshots ORDER BY seq").fetchall())]

    def snapshot_delete(self, seq: int) -> None:
        """Remove the snapshot at ``seq`` (retention); none there is no error.
        Raises: ReadOnlyLedger (opened read-only), ValueError (``seq`` is not
        an int), StoreUnavailable, StoreError."""
        if self._readonly:
            raise ReadOnlyLedger(self.url, "remove a snapshot")
        _int("seq", seq)
        self._retrying("remove a snapshot", lambda conn: conn.execute(
            f"DELETE FROM {self.schema}.snapshots WHERE seq = %s", (seq,)))

    # -- sessions -----------------------------------------------------------

    def instance(self) -> str:
        """The server instance (:data:`INSTANCE_SQL`): ``<system
        identifier>@<postmaster start>/<statistics reset>``; it changes
        when the server restarts, and when it resets after a backend's
        crash (every connection, and so every session lock, gone).

        Raises: StoreUnavailable, StoreError.
        """
        return cast(str, self._retrying("read the server instance", lambda conn: conn.execute(
            f"SELECT {INSTANCE_SQL}").fetchone()[0]))

    def open_session(self, ttl: float, *, host: str | None = None, pid: int | None = None,
                     renew: bool = True, on_lost: Callable[["PgSession"], object] | None = None,
                     grace: float | None = None) -> "PgSession":
        """Open a client session: a connection of its own holding a
        session-level advisory lock, and a lease of ``ttl`` seconds renewed by
        a background thread every ``ttl``/3 (``renew=False``: by the caller,
        with :meth:`PgSession.renew`). ``grace`` (seconds; default
        :func:`default_grace`) is how long after the lease's end on the
        server's clock others still wait before judging the session dead by
        it. ``host`` (the client's machine id, or ``None``) and ``pid``
        (default: this process's) are recorded in the session's row for
        people reading it; nothing judges by them. ``on_lost(session)`` is
        called once, when the session is found lost, from whichever thread
        finds it (the watchdog, the renewer, or a caller of
        :attr:`PgSession.valid` or :meth:`PgSession.renew`); its exceptions
        are ignored.

        Raises:
            ReadOnlyLedger: the store was opened read-only (a session is a
                row written, and kept, for a writer).
            ValueError: ``ttl`` not a number of 0.01..86400 seconds, or
                ``grace`` not one of 0..86400.
            StoreUnavailable, StoreError.
        """
        if self._readonly:
            raise ReadOnlyLedger(self.url, "open a session")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0.01 <= ttl <= 86400:
            raise ValueError(f"a session ttl is 0.01..86400 seconds, not {ttl!r}")
        if grace is None:
            grace = default_grace(ttl)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= 86400:
            raise ValueError(f"a session grace is 0..86400 seconds, not {grace!r}")
        return PgSession(self, float(ttl), float(grace), host, os.getpid() if pid is None else pid,
                         renew, on_lost)

    def dead_sessions(self, ids: list[int]) -> dict[int, str]:
        """Which of the sessions ``ids`` are provably dead, with why:
        ``"session_closed"`` (closed by its client), ``"lease_expired"``
        (the server's clock past ``lease_until`` + the session's grace: its
        client stopped trusting the lease at ``lease_until`` or before, see
        :class:`PgSession`), ``"session_lock_gone"`` (its lock is not held,
        and the server is the instance it was taken on: after a restart, or
        while its client re-takes it, only the lease decides). A session not
        named here is alive or unknown (an id not in the table is unknown,
        not dead). One query; the server's clock decides.

        Raises:
            ValueError: an id is not an int.
            StoreUnavailable, StoreError.
        """
        return {sid: why for sid, why in self.judge_sessions(ids).items() if why in SESSION_DEATHS}

    def judge_sessions(self, ids: list[int], *, grace: bool = True) -> dict[int, str]:
        """Each of the sessions ``ids`` that is in the table, judged on the
        server's clock: a reason of :meth:`dead_sessions`
        (:data:`SESSION_DEATHS`), or ``"alive"`` (its lock is held and its
        lease runs), ``"lapsed"`` (its lease ended, its grace is not over:
        dead once it is, unless its lock is found gone first), or
        ``"unknown"`` (its lock is not held on this server instance, which
        is not the one it was taken on: the server restarted and the client
        has not taken it again, or never will; its lease decides). An id
        not in the table is left out. One query.

        ``grace=False`` is the holder's own view (``Ledger.check`` of a
        session another process opened): a lease past ``lease_until``, the
        grace not over yet, is already ``"lease_expired"`` (its client
        stopped trusting it then, or earlier).

        Raises:
            ValueError: an id is not an int.
            StoreUnavailable, StoreError.
        """
        ids = [_int("a session id", i) for i in ids]
        if not ids:
            return {}
        s = self.schema
        sql = f"""
            SELECT s.id,
                   s.closed_at IS NOT NULL,
                   s.lease_until + s.grace_ms * interval '1 millisecond' < clock_timestamp(),
                   s.lease_until < clock_timestamp(),
                   s.instance = {INSTANCE_SQL},
                   EXISTS (SELECT 1 FROM pg_locks l
                           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                             AND l.classid = %s::bigint::oid AND l.objid = s.id::bigint::oid)
            FROM {s}.sessions s WHERE s.id = ANY(%s)"""
        rows = self._retrying("judge sessions", lambda conn: conn.execute(
            sql, (self._key & 0xFFFFFFFF, list(ids))).fetchall())
        out: dict[int, str] = {}
        for sid, closed, expired, lapsed, same_instance, locked in rows:
            if closed:
                out[sid] = "session_closed"
            elif expired or (lapsed and not grace):
                out[sid] = "lease_expired"
            elif same_instance and not locked:
                # A client lets its lock go when its lease lapsed: say so.
                out[sid] = "lease_expired" if lapsed else "session_lock_gone"
            elif lapsed:
                out[sid] = "lapsed"
            else:
                out[sid] = "alive" if locked else "unknown"
        return out

    def prune_sessions(self, seq: int, carried: Iterable[int], keep: float) -> int | None:
        """Delete the rows of the sessions dead for more than ``keep``
        seconds on the server's clock (closed, or their lease over with its
        grace: the judges' own rule, under which a session never comes
        back), but those in ``carried`` (the sessions the live holders of
        the log folded to seq ``seq`` carry), and only while the log still
        ends at ``seq`` (one statement: the head read and the rows deleted
        in one snapshot, so no line folded after it is missed). Returns how
        many rows went; ``None`` when the log has moved past ``seq`` (fold
        the lines after it and ask again); 0 without trying on a read-only
        store, or once this role was found unable to delete (see below).

        In a ledger made before this scopeledger the trigger refuses every
        delete: the first prune that meets that refusal replaces it by one
        that lets a dead session's row go (:func:`_sessions_delete_ddl`;
        serialised with creators, the lock waited for
        :data:`ADD_AT_LOCK_TIMEOUT_MS` at most) and asks again; a role that
        may not (not the tables' owner) leaves the rows, with one ``INFO``
        record (:attr:`prune_refused`).

        Raises:
            ValueError: ``seq`` or a carried id is not an int, or ``keep``
                not a number of 0..2**31 seconds.
            StoreUnavailable, StoreError.
        """
        seq = _int("a seq", seq, 0)
        ids = sorted({_int("a session id", i) for i in carried})
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 <= keep < 2**31:
            raise ValueError(f"keep is 0..2**31 seconds, not {keep!r}")
        if self._readonly or self.prune_refused is not None:
            return 0
        s = self.schema
        sql = (f"WITH h AS (SELECT coalesce(max(seq), 0) AS head FROM {s}.events),"
               f" d AS (DELETE FROM {s}.sessions x WHERE (SELECT head FROM h) = %(seq)s"
               "        AND x.id <> ALL(%(carried)s::integer[])"
               "        AND coalesce(x.closed_at, x.lease_until + x.grace_ms * interval '1 millisecond')"
               "            < clock_timestamp() - %(keep)s * interval '1 millisecond'"
               "        RETURNING 1)"
               " SELECT (SELECT head FROM h), (SELECT count(*) FROM d)")
        params = {"seq": seq, "carried": ids, "keep": math.ceil(keep * 1000)}
        for attempt in (0, 1):
            try:
                head, n = self._retrying("prune the sessions table", lambda conn: conn.execute(
                    sql, params).fetchone())
            except StoreError as exc:
                if exc.sqlstate != "23000" or attempt:
                    raise
                # The trigger of a ledger made before, which refused every delete.
                if not self._allow_session_deletes():
                    return 0
                continue
            return None if head != seq else int(n)
        raise AssertionError("unreachable")  # pragma: no cover

    def _allow_session_deletes(self) -> bool:
        """Replace the trigger that refuses every delete of a session's row
        (a ledger made before :meth:`prune_sessions`) by one that lets a dead
        session's row go (:func:`_sessions_delete_ddl`). ``True`` when done;
        ``False``, with one ``INFO`` record (:attr:`prune_refused`), when the
        role may not or the locks were not granted in time.

        Raises:
            StoreUnavailable, StoreError: any other refusal.
        """
        s = self.schema

        def run(conn: Any) -> None:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = {ADD_AT_LOCK_TIMEOUT_MS}")
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('scopeledger:create'), hashtext(%s))", (s,))
                conn.execute(_sessions_delete_ddl(s))
        try:
            self._retrying(f"let dead sessions' rows of {s}.sessions be deleted", run)
        except StoreError as exc:
            if exc.sqlstate not in ("42501", "55P03"):  # insufficient privilege; lock not available
                raise
            self.prune_refused = str(exc)
            log.info("the sessions table of the ledger at %s, made by an older scopeledger, is not pruned: %s; "
                     "a prune by the tables' owner (one of its ledgers closing) lets its dead sessions' rows go",
                     self.url, exc)
            return False
        return True


# -- the waiters' queue ------------------------------------------------------

#: Idle ticket connections a store keeps for its next waiters.
TICKET_POOL = 2

#: The low half of a ticket lock's key: the ticket's number modulo 2**32.
_LOW = 0xFFFFFFFF


class PgTicket:
    """A waiter's ticket (:meth:`PgTickets.join`): its ``number``, the
    connection ``conn`` that holds its lock and listens for what wakes the
    waiter (``None`` once it left), ``lost`` (that connection broke)."""

    __slots__ = ("number", "conn", "lost")

    def __init__(self, number: int, conn: Any) -> None:
        self.number = number
        self.conn = conn
        self.lost = False


class PgTickets:
    """The waiters' queue of a ledger on PostgreSQL (the store interface's
    ``Tickets``; ``scopeledger._wait`` says how waiters use it).

    A ticket is a row of ``<schema>.waiters`` (``number``: an identity, so
    numbers grow in the order waiters joined; ``request``: the waiter's
    request as it wrote it; ``joined_at``), alive while its waiter holds a
    session-level advisory lock on it: the one-``bigint`` form,
    ``pg_try_advisory_lock((<schema oid> << 32) | (number mod 2**32))``, which
    ``pg_locks`` shows with ``objsubid = 1``, ``classid`` the schema's oid
    and ``objid`` the number mod 2**32. It cannot meet the store's other
    locks, the append lock ``(<schema oid>, 0)`` and the sessions' ``(<schema
    oid>, <id>)``, which are of the two-``int4`` form (``objsubid = 2``); two
    live tickets of one ledger share a key only 2**32 joins apart (a waiter
    that finds its key taken drops that row and takes the next number).
    The row is inserted and its lock taken in one statement, so no other
    waiter sees the row before its lock is held (the row is visible from
    the commit, the lock from before it).

    Each ticket has a connection of its own (kept for the next waiter after
    it leaves, :data:`TICKET_POOL` per store), which holds the lock and
    LISTENs for what can let its waiter on, and for nothing else, so that a
    change wakes one waiter, not the whole queue (:meth:`PgWatch.follow`):
    the log's channel (``scopeledger_<schema>``, the appends' seqs) while
    holders are in its way, and the channel of the ticket it stands behind
    (``scopeledger.q.<schema oid>.<number>``) while it stands behind one. A
    waiter sleeps polling that connection's socket. Joining (LISTEN on the
    log's channel, and the row) is one round trip, and so is leaving (the
    row, the lock, ``UNLISTEN``).
    Leaving deletes the row and notifies its ticket's channel in one
    statement, and lets go of the lock. A ticket whose lock is not held (its
    waiter's process or connection died) is deleted, and its channel
    notified, by the next waiter that reads the queue (one statement: the
    rows, which are alive by ``pg_locks``, and the dead deleted). A waiter
    killed makes no notification itself. The waiter behind it, when the
    ticket's waiter is a process of its own host (the request records its
    pid, boot id and PID namespace: ``scopeledger._wait``), is woken by its
    death (a pidfd) and looks at once; the killed waiter's backend ends
    only once it reads the end of its connection, moments later (longer
    when the link keeps the server's side open: a forwarder, a network
    that loses the client's FIN), so its lock may still be held at that
    look: a ticket whose waiter is a process of this host found gone is
    dead whatever its lock says (:meth:`gone`: its row deleted, its channel
    notified, which wakes the waiters of every host behind it). A waiter
    behind a killed waiter of another host (or PID namespace) has no pidfd
    of it: it finds the ticket dead at its next look (at most
    ``RECHECK_SECONDS``), or when a waiter of the dead one's own host
    removes it. A waiter whose connection breaks loses its
    place (its lock went with the connection, and others may have deleted
    its row): it joins again, at the end of the queue.

    A ledger made by an earlier scopeledger has no ``waiters`` table: it is
    made (``CREATE TABLE IF NOT EXISTS`` under the creators' lock) when a
    waiter first joins; until then the queue reads as empty. A read-only
    store never makes or deletes anything. A role that may not create the
    table, or may not read, join or leave it (SQLSTATE 42501: a role given
    ``... ON ALL TABLES IN SCHEMA`` before the table was made, without
    ``ALTER DEFAULT PRIVILEGES``, docs/cli.md), waits unordered, as before,
    with one warning naming the grant to give (:meth:`_unordered`): from
    then on this store's waiters neither join nor read the queue (one that
    joined and could not read would be stood back for without standing
    back). Clients of an earlier scopeledger on the same ledger do not queue
    (they take their chances, as before).
    """

    def __init__(self, store: PgStore) -> None:
        self._store = store
        s = store.schema
        #: The queue's NOTIFY channels: this and a ticket's number (at most
        #: 44 bytes of the 63 a channel name may have).
        self.channel = f"scopeledger.q.{store._key & _LOW}."
        self._ready = False  # the table is known to exist
        #: Why this store's waiters do not queue (a permission refused), or None.
        self.refused: str | None = None
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._busy: set[Any] = set()
        self._pid = os.getpid()
        self._closed = False
        self._exists_sql = "SELECT to_regclass(%s) IS NOT NULL"
        self._listen_sql = f"LISTEN {store._channel}"
        self._table = f"{s}.waiters"
        self._join_sql = (f"WITH t AS (INSERT INTO {s}.waiters (request) VALUES (%(r)b) RETURNING number)"
                          f" SELECT number, pg_try_advisory_lock(%(base)s::bigint | (number & {_LOW})) FROM t")
        self._drop_sql = f"DELETE FROM {s}.waiters WHERE number = %s"
        # A ticket whose waiter is gone (gone()): its row deleted and its
        # channel notified, whatever its lock (held yet by its backend).
        self._gone_sql = (f"WITH d AS (DELETE FROM {s}.waiters WHERE number = %(n)s RETURNING number)"
                          " SELECT count(pg_notify(%(c)s || d.number::text, d.number::text)) FROM d")
        #: Idle connections whose leave was sent and not yet answered (:meth:`leave`).
        self._unread: set[Any] = set()
        live = ("SELECT l.objid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND l.classid = %(oid)s::bigint::oid")
        # The live tickets before %(before)s, nearest first; the dead deleted
        # (and notified) in the same statement.
        self._earlier_sql = (
            f"WITH live AS ({live}),"
            f" q AS (SELECT w.number, w.request, (w.number & {_LOW})::oid IN (SELECT objid FROM live) AS alive"
            f"       FROM {s}.waiters w WHERE w.number < %(before)s),"
            f" gone AS (DELETE FROM {s}.waiters w USING q WHERE w.number = q.number AND NOT q.alive"
            "           RETURNING w.number),"
            " woken AS (SELECT count(pg_notify(%(c)s || gone.number::text, gone.number::text)) AS n FROM gone)"
            " SELECT q.number, q.request FROM q, woken WHERE q.alive ORDER BY q.number DESC")
        self._earlier_readonly_sql = (
            f"WITH live AS ({live})"
            f" SELECT w.number, w.request FROM {s}.waiters w WHERE w.number < %(before)s"
            f" AND (w.number & {_LOW})::oid IN (SELECT objid FROM live) ORDER BY w.number DESC")

    # -- connections --------------------------------------------------------

    def _take(self) -> Any:
        """An idle ticket connection (the answer to its last leave read,
        notifications it got before its ``UNLISTEN`` read and dropped), or a
        new one."""
        if self._pid != os.getpid():
            self.forked_child()
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._store._new_connection()
            try:
                if self._answered(conn) and not (conn.closed or conn.broken):
                    for _ in conn.notifies(timeout=0):
                        pass
                    return conn
            except psycopg.Error:
                pass
            _close_quietly(conn)

    def _give(self, conn: Any) -> None:
        """Keep ``conn`` for the next waiter (at most :data:`TICKET_POOL`), or
        close it (once the answer to a leave sent on it is read)."""
        with self._lock:
            if (not self._closed and len(self._idle) < TICKET_POOL and self._pid == os.getpid()
                    and not (conn.closed or conn.broken)):
                self._idle.append(conn)
                return
        with contextlib.suppress(Exception):
            self._answered(conn)
        _close_quietly(conn)

    def _read_answers(self) -> None:
        """Read the answers to the leaves sent on the idle connections
        (:meth:`leave`), so that this store's own look at the queue never
        sees a ticket it gave back (a round trip only for an answer not
        come yet)."""
        if not self._unread:
            return
        with self._lock:
            mine = [c for c in self._idle if c in self._unread]
            self._idle = [c for c in self._idle if c not in self._unread]
        for conn in mine:
            ok = False
            with contextlib.suppress(Exception):
                ok = self._answered(conn)
            if ok:
                self._give(conn)
            else:
                _close_quietly(conn)

    def _table_made(self, conn: Any) -> bool:
        """Make the table if it is missing (an earlier scopeledger's ledger);
        whether it is there."""
        store = self._store
        if conn.execute(self._exists_sql, (self._table,)).fetchone()[0]:
            self._ready = True
            return True
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('scopeledger:create'), hashtext(%s))",
                             (store.schema,))
                conn.execute(_waiters_ddl(store.schema))
        except pg_errors.InsufficientPrivilege as exc:
            self._unordered(exc, "create", conn)
            return False
        self._ready = True
        return True

    def _unordered(self, exc: BaseException, doing: str, conn: Any) -> None:
        """The server refused this role ``doing`` the queue (SQLSTATE 42501):
        from now on this store's waiters do not queue; a warning, once,
        naming the grant to give."""
        if self.refused is not None:
            return
        store = self._store
        user = _role_name(conn)
        if doing == "create":
            fix = (f"the table is made by the first waiter of a role that may create it (the schema's "
                   f"owner), and this role then needs GRANT SELECT, INSERT, DELETE ON {self._table} TO {user}")
        else:
            fix = (f"the schema's owner can give GRANT SELECT, INSERT, DELETE ON {self._table} TO {user} "
                   f"(and ALTER DEFAULT PRIVILEGES IN SCHEMA {store.schema} GRANT SELECT, INSERT, UPDATE, "
                   f"DELETE ON TABLES TO {user} for tables made later: docs/cli.md)")
        self.refused = f"this role may not {doing} the waiters' queue, {self._table}: {store._why(exc)}"
        log.warning("waiters on %s are not queued (first come, first served) but take their chances: %s; %s",
                    store.url, self.refused, fix)

    # -- the interface (scopeledger._logstore.Tickets) ------------------------

    def join(self, request: bytes) -> PgTicket | None:
        """Take a ticket holding ``request`` (see the class docstring), on a
        connection of its own; ``None`` when the table is missing and this
        role may not make it.

        Raises:
            ReadOnlyLedger: the store was opened read-only.
            StoreUnavailable, StoreError.
        """
        store = self._store
        if store.readonly:
            raise ReadOnlyLedger(store.url, "wait in its queue")
        if self.refused is not None:
            return None
        conn = self._take()
        if self.refused is not None:  # (the answer to a leave, read by _take, may say so)
            self._give(conn)
            return None
        try:
            if not self._ready and not self._table_made(conn):
                self._give(conn)
                return None
            base = store._key << 32
            for _ in range(16):
                try:
                    with _pipeline(conn):  # one round trip: listening (to the log, until the first
                        # look says otherwise: PgWatch.follow) before the row is seen
                        conn.execute(self._listen_sql)
                        cur = conn.execute(self._join_sql, {"r": bytes(request), "base": base})
                    row = cur.fetchone()
                except pg_errors.UndefinedTable:
                    self._ready = False  # dropped since (a test does): made again
                    if not self._table_made(conn):
                        self._give(conn)
                        return None
                    continue
                number, held = int(row[0]), bool(row[1])
                if held:
                    with self._lock:
                        self._busy.add(conn)
                    return PgTicket(number, conn)
                conn.execute(self._drop_sql, (number,))  # its key is held by another: the next number
            raise StoreError(store.url, "failed to join the waiters' queue: every ticket lock tried was "
                                        "held by another session", None)
        except pg_errors.InsufficientPrivilege as exc:  # (on the row; closed: any lock taken goes with it)
            self._unordered(exc, "join", conn)
            _close_quietly(conn)  # (it listens)
            return None
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise store._error(exc, "join the waiters' queue") from exc
        except BaseException:
            _close_quietly(conn)  # (its lock, if taken, goes with it)
            raise

    def leave(self, ticket: Any) -> None:
        """Delete ``ticket``'s row, notify its number, let go of its lock and
        stop listening (one message), and keep its connection for the next
        waiter. The message is sent, not waited for: the server answers
        while the caller goes on (a grant's call returns a round trip
        sooner), and the answer is read when the connection is next taken
        (:meth:`_take`) or closed (:meth:`close`). Until the server has
        it, the ticket still stands in the queue: a waiter behind it is
        woken by its leaving, as before. A connection that fails is closed
        (the lock goes with it; the next reader of the queue deletes the
        row)."""
        if ticket is None or ticket.conn is None:
            return
        conn, ticket.conn = ticket.conn, None
        with self._lock:
            self._busy.discard(conn)
        if self._pid != os.getpid():
            return  # a forked child's copy of a parent's ticket: the parent's to give back
        number = int(ticket.number)
        key = (self._store._key << 32) | (number & _LOW)
        # Integers and our own channel (digits and dots) only: the simple
        # protocol, whose one message may hold several statements. The lock
        # first: a session's advisory lock is let go at once, whatever
        # becomes of the transaction (a DELETE refused leaves a dead row,
        # which the next reader deletes, not a live ticket).
        query = (f"SELECT pg_advisory_unlock({key}::bigint);"
                 f" WITH d AS (DELETE FROM {self._table} WHERE number = {number} RETURNING number)"
                 f" SELECT count(pg_notify('{self.channel}' || d.number::text, d.number::text)) FROM d;"
                 " UNLISTEN *").encode()
        try:
            pgconn = conn.pgconn
            pgconn.send_query(query)
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while pgconn.flush() != 0:  # (a few bytes: sent at once but on a full socket)
                _ready(pgconn.socket, select.POLLOUT | select.POLLIN, deadline)
                pgconn.consume_input()
        except Exception:  # noqa: BLE001 - closing the connection gives the ticket back too
            _close_quietly(conn)
            return
        except BaseException:
            _close_quietly(conn)
            raise
        with self._lock:
            self._unread.add(conn)
        self._give(conn)

    def _answered(self, conn: Any) -> bool:
        """Read the answer to the leave sent on ``conn`` (if any: see
        :meth:`leave`; at most :data:`CONNECT_TIMEOUT_S` seconds) and the
        notifications before it; whether ``conn`` may be used again (no:
        the server failed it or did not answer; it is then the caller's to
        close)."""
        with self._lock:
            if conn not in self._unread:
                return True
            self._unread.discard(conn)
        pgconn = conn.pgconn
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        ok = True
        while True:
            while pgconn.is_busy():
                if not _ready(pgconn.socket, select.POLLIN, deadline):
                    return False
                pgconn.consume_input()
            res = pgconn.get_result()
            if res is None:
                break
            if res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                ok = False
                state = res.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
                if state == b"42501":  # (the row stays for the next reader; the lock goes with the close)
                    msg = (res.error_message or b"permission denied").decode("utf-8", "replace").strip()
                    self._unordered(pg_errors.InsufficientPrivilege(msg), "leave", conn)
        while pgconn.notifies() is not None:
            pass
        return ok

    @staticmethod
    def lost(ticket: Any) -> bool:
        conn = ticket.conn
        return bool(ticket.lost or (conn is not None and (conn.closed or conn.broken)))

    def earlier(self, before: int | None) -> list[Queued]:
        """The live tickets numbered below ``before`` (``None``: all),
        nearest first, ``(number, number, request)``; the dead deleted on
        the way (not by a read-only store). One statement.

        Raises:
            StoreUnavailable, StoreError.
        """
        store = self._store
        self._read_answers()  # (this store's own leaves are seen)
        if self.refused is not None:
            return []  # (waiting unordered: see the class docstring)
        if not self._ready:
            if not store._retrying("read the waiters' queue", lambda conn: conn.execute(
                    self._exists_sql, (self._table,)).fetchone()[0]):
                return []  # an earlier scopeledger's ledger, where nobody waited yet
            self._ready = True
        sql = self._earlier_readonly_sql if store.readonly else self._earlier_sql
        params = {"oid": store._key & _LOW, "before": (1 << 63) - 1 if before is None else before,
                  "c": self.channel}

        def run(conn: Any) -> list[Queued] | None:
            try:
                with conn.cursor(binary=True) as cur:
                    return [(int(n), int(n), bytes(r)) for n, r in cur.execute(sql, params)]
            except pg_errors.UndefinedTable:
                return None  # dropped since
            except pg_errors.InsufficientPrivilege as exc:
                self._unordered(exc, "read", conn)
                return []
        rows = store._retrying("read the waiters' queue", run)
        if rows is None:
            self._ready = False
            return []
        return rows

    @staticmethod
    def read(handle: Any) -> bytes | None:
        return cast(bytes, handle)

    @staticmethod
    def alive(handle: Any) -> bool:
        return True  # (earlier() lists the live ones only)

    def gone(self, number: int, handle: Any) -> bool:
        """Ticket ``number``'s waiter, a process of this host, exited (see
        the class docstring): the ticket is dead, though its backend may
        hold its lock yet; its row is deleted and its channel notified
        (one statement; not by a read-only store, nor when the server
        refuses: then whoever finds its lock gone deletes it). Always
        ``True``; raises nothing."""
        store = self._store
        if store.readonly or self.refused is not None:
            return True
        try:
            store._retrying("remove a dead waiter's ticket", lambda conn: conn.execute(
                self._gone_sql, {"n": number, "c": self.channel}).fetchall())
        except LedgerError as exc:
            log.debug("the ticket %d of a waiter that is gone was left to the next reader: %s", number, exc)
        return True

    def watch(self, ticket: Any) -> "PgWatch | None":
        """The ticket's connection, polled (``None`` without a ticket: the
        waiter sleeps in :meth:`PgStore.wait`)."""
        return None if ticket is None else PgWatch(ticket, self._store._channel, self.channel)

    @staticmethod
    def done(watch: Any) -> None:
        return None  # (the connection is the ticket's: given back by leave)

    def follower(self) -> "PgFollow":
        """A connection of the caller's own that LISTENs on the log's channel
        (:class:`PgFollow`; closed by its ``close()``).

        Raises:
            StoreUnavailable, StoreError: it could not be opened, or LISTEN failed.
        """
        store = self._store
        conn = store._new_connection()
        try:
            conn.execute(f"LISTEN {store._channel}")
        except psycopg.Error as exc:
            _close_quietly(conn)
            raise store._error(exc, "listen for new events") from exc
        return PgFollow(conn)

    def close(self) -> None:
        """Close the idle connections (tickets in use keep theirs until they
        leave), once the server answered the leaves sent on them (so every
        ticket given back is out of the queue when this returns).
        Idempotent; raises nothing."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                self._answered(conn)  # (its leave done on the server before close returns)
            _close_quietly(conn)

    def forked_child(self) -> None:
        """In a forked child: let go of the parent's connections without
        touching them (:func:`_blind`), so its tickets stay the parent's."""
        if self._pid == os.getpid():
            return
        for conn in (*self._idle, *self._busy):
            _blind(conn)
        self._idle = []
        self._busy = set()
        self._unread = set()
        self._lock = threading.Lock()
        self._pid = os.getpid()


class PgWatch:
    """What wakes a waiter holding a :class:`PgTicket`: its connection's
    notifications (the store interface's ``Wakeup``), on the channels
    :meth:`follow` chose (the log's, from the join)."""

    period = RECHECK_SECONDS

    def __init__(self, ticket: PgTicket, log_channel: str, queue_prefix: str) -> None:
        self._ticket = ticket
        self._log_channel = log_channel
        self._queue_prefix = queue_prefix
        #: The channels the ticket's connection LISTENs on (the join's).
        self._listening = frozenset((log_channel,))

    def fds(self, log_too: bool) -> list[int]:
        """The connection's socket (appends and tickets leaving both arrive
        there: :meth:`changes` tells them apart); none once it broke."""
        t = self._ticket
        conn = t.conn
        if conn is None or t.lost or conn.closed:
            return []
        return [conn.fileno()]

    def changes(self) -> tuple[bool, list[int] | None]:
        t = self._ticket
        conn = t.conn
        if conn is None:
            return False, None
        grew = False
        left: list[int] = []
        prefix = self._queue_prefix
        try:
            for n in conn.notifies(timeout=0):
                if n.channel.startswith(prefix):
                    with contextlib.suppress(ValueError):
                        left.append(int(n.payload))
                elif n.channel == self._log_channel:
                    grew = True
        except psycopg.Error:  # the link broke, and the ticket's lock with it
            t.lost = True
            return True, None
        return grew, left

    def follow(self, log_too: bool, behind: int | None) -> bool:
        """LISTEN on the log's channel (``log_too``, or when there is
        nothing else to be woken by) and on ticket ``behind``'s, and on no
        other: one round trip when that changes (then ``True``), none
        otherwise."""
        want = set()
        if behind is not None:
            want.add(f"{self._queue_prefix}{behind}")
        if log_too or not want:
            want.add(self._log_channel)
        if want == self._listening:
            return False
        t = self._ticket
        conn = t.conn
        if conn is None or t.lost:
            return True
        try:
            with _pipeline(conn):
                for ch in self._listening - want:
                    conn.execute(f'UNLISTEN "{ch}"')
                for ch in want - self._listening:
                    conn.execute(f'LISTEN "{ch}"')
        except psycopg.Error:  # the link broke, and the ticket's lock with it
            t.lost = True
            return True
        self._listening = frozenset(want)
        return True

    def close(self) -> None:
        return None


class PgFollow:
    """What wakes a follower of the log (``Tickets.follower``): a connection
    of its own LISTENing on the log's channel, on which every append
    notifies. Broken, it has no descriptor and :meth:`changes` says events
    may have been lost: the follower looks, and makes a new one."""

    period = RECHECK_SECONDS

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        #: The connection broke (or was closed): make a new follower.
        self.broken = False

    def fds(self, log_too: bool) -> list[int]:
        conn = self._conn
        if self.broken or conn.closed:
            return []
        try:
            return [conn.fileno()]
        except psycopg.Error:
            self.broken = True
            return []

    def changes(self) -> tuple[bool, list[int] | None]:
        grew = False
        try:
            for _ in self._conn.notifies(timeout=0):
                grew = True
        except psycopg.Error:  # the link broke: appends may have been missed
            self.broken = True
            return True, None
        return grew, []

    @staticmethod
    def follow(log_too: bool, behind: int | None) -> bool:
        return False

    def close(self) -> None:
        self.broken = True
        _close_quietly(self._conn)


def _role_name(conn: Any) -> str:
    """The role ``conn`` is connected as, as SQL names it (quoted unless a
    plain lower-case name), for a message; ``ROLE`` if it cannot be told."""
    try:
        user = str(conn.info.user)
    except Exception:  # noqa: BLE001 - a message's detail only
        return "ROLE"
    return user if re.fullmatch(r"[a-z_][a-z0-9_$]*", user) else '"' + user.replace('"', '""') + '"'


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


# -- sessions ----------------------------------------------------------------

#: What :meth:`PgStore.dead_sessions` answers: the reclaim reasons of a
#: holder judged by its session (``scopeledger._sessions``).
SESSION_DEATHS = frozenset({"session_closed", "lease_expired", "session_lock_gone"})


def default_grace(ttl: float) -> float:
    """The default grace of a session of ``ttl`` seconds: a tenth of the ttl,
    at least 0.25 s (seconds).

    Why: a client trusts its lease until ``sent + ttl`` on its own monotonic
    clock, ``sent`` read before the renewal left; the server's lease ends at
    the server's wall clock when the renewal ran + ttl, which is later in
    real time. The grace covers what can make the server's end come first:
    the two clocks ticking at different rates (NTP slews at most 500 ppm:
    0.05 % of the ttl), a small step of the server's wall clock, and the
    time a loaded machine takes to run the client's watchdog (its
    ``valid`` turns false at the deadline whatever the threads do). A step
    of the server's clock forward by more than the grace is outside what
    this protects against: run the server with a slewing NTP client.
    """
    return max(0.25, ttl / 10)


class PgSession:
    """A client session (see the module docstring), made by
    :meth:`PgStore.open_session`.

    Attributes: ``id`` (int), ``instance`` (the server instance its lock is
    held on; it changes when the session re-takes its lock after a server
    restart), ``ttl`` and ``grace`` (seconds), ``lost`` (``None`` while
    valid, else why it was lost: ``"lease_expired"``, ``"connection_lost:
    ..."``, ``"closed"``, ``"forked"``), ``lost_at`` (``time.monotonic()``
    when it stopped being valid: for a lapsed lease, its deadline).

    Liveness, as the holder sees it: the lease is trusted until ``sent +
    ttl`` on this process's monotonic clock (``sent``: before the last
    acknowledged renewal was sent). At that deadline :attr:`valid` turns
    false and ``on_lost`` is called by a watchdog thread, whether or not the
    renewer is stuck on a cut link; others may judge the session dead by its
    lease only at the server's ``lease_until`` + ``grace``, later in real
    time (:func:`default_grace`). Its connection lost: when the server
    restarted (another instance answers), the session takes its lock again
    on the new instance, then moves its row to that instance and renews, if
    its lease has not lapsed; when the same instance answers, its lock was
    gone there (others may have judged it dead): the session is lost.
    """

    def __init__(self, store: PgStore, ttl: float, grace: float, host: str | None, pid: int, renew: bool,
                 on_lost: Callable[["PgSession"], object] | None) -> None:
        self.store = store
        self.ttl = ttl
        self.grace = grace
        self.lost: str | None = None
        self.lost_at: float | None = None
        #: The server acknowledged its closing (:meth:`close`): it answers.
        self.answered = False
        self._on_lost = on_lost
        self._mutex = threading.RLock()       # the connection and renewals (RLock: on_lost may close)
        self._state = threading.Condition()   # lost, _deadline, _closing
        self._closing = False
        self._pid = os.getpid()
        s = store.schema
        conn = self._connect()
        self._conn = conn
        self._stop_r, self._stop_w = os.pipe()  # after the connection: nothing to close if it failed
        try:
            sent = time.monotonic()
            row = conn.execute(
                f"WITH s AS (INSERT INTO {s}.sessions (host, pid, instance, ttl_ms, grace_ms, lease_until)"
                f"  VALUES (%s, %s, {INSTANCE_SQL}, %s, %s, clock_timestamp() + %s * interval '1 millisecond')"
                "  RETURNING id, instance)"
                " SELECT id, instance, pg_advisory_lock(%s, id) FROM s",
                (host, pid, math.ceil(ttl * 1000), math.ceil(grace * 1000), math.ceil(ttl * 1000),
                 store._key)).fetchone()
        except psycopg.Error as exc:
            self._close_quietly()
            raise store._error(exc, "open a session") from exc
        self.id: int = row[0]
        self.instance: str = row[1]
        self._deadline = sent + ttl
        _live.add(self)
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = threading.Thread(
            target=self._watch, name=f"scopeledger-session-{self.id}-watchdog", daemon=True)
        self._watchdog.start()
        if renew:
            self._thread = threading.Thread(target=self._keep, name=f"scopeledger-session-{self.id}",
                                            daemon=True)
            self._thread.start()

    def _connect(self) -> Any:
        """A connection for the session (TCP settings are ignored on a unix
        socket). Client side: keepalives and a user timeout, so that a
        renewal on a cut link fails within about ttl/3. Server side, for
        this connection only: the server must not drop it for silence
        before the lease + grace is over (the lock gone on the same instance
        means death at once, and a partitioned client still trusts its lease
        until its deadline), whatever the server's defaults say."""
        third = max(1, int(self.ttl / 3))
        conn = self.store._new_connection(
            keepalives=1, keepalives_idle=third, keepalives_interval=1, keepalives_count=3,
            tcp_user_timeout=max(1000, math.ceil(self.ttl * 1000 / 3)))
        quiet = math.ceil(self.ttl + self.grace) + 1
        try:
            conn.execute(
                "SELECT set_config('tcp_keepalives_idle', %s, false),"
                " set_config('tcp_keepalives_interval', '1', false),"
                " set_config('tcp_keepalives_count', '3', false),"
                " set_config('tcp_user_timeout', %s, false)",
                (str(quiet), str(quiet * 1000 + 3000)))
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                conn.close()
            raise self.store._error(exc, "set up a session's connection") from exc
        return conn

    @property
    def valid(self) -> bool:
        """Not lost, and this client's own deadline for the lease (counted
        from before the last acknowledged renewal was sent) not passed."""
        if self.lost is None and time.monotonic() >= self._deadline:
            self._lose("lease_expired")
        return self.lost is None

    def renew(self) -> None:
        """Extend the lease by ``ttl`` from now (server clock). When the
        connection broke and another server instance answers (a restart),
        the lock is taken again there first.

        Raises:
            SessionLost: the lease had expired (anyone may have judged the
                session dead), the connection broke and the same server
                instance answers (its lock was gone there) or none answered
                before the deadline, or this is a forked child.
        """
        with self._mutex:
            if self._pid != os.getpid():
                raise SessionLost(self.store.url, "a forked child does not use its parent's session")
            if not self.valid:
                raise SessionLost(self.store.url, f"session {self.id} is lost ({self.lost})")
            s = self.store.schema
            sent = time.monotonic()
            try:
                row = self._conn.execute(
                    f"UPDATE {s}.sessions SET lease_until = clock_timestamp() + ttl_ms * interval '1 millisecond'"
                    " WHERE id = %s AND closed_at IS NULL AND lease_until > clock_timestamp() RETURNING id",
                    (self.id,)).fetchone()
            except psycopg.Error as exc:
                # A lost link (OperationalError) is reconnected until the deadline, whether
                # or not psycopg has marked the connection broken yet (a send on a cut link
                # may fail first as "connection socket closed"); only an error the server
                # answered with, on a sound connection, loses the session here.
                if not isinstance(exc, psycopg.OperationalError) and not (self._conn.closed or self._conn.broken):
                    self._lose(f"connection_lost: {self.store._why(exc)}")
                    raise SessionLost(self.store.url, f"session {self.id} is lost: {self.store._why(exc)}") from exc
                got = self._reattach(exc)
                row, sent = (None, sent) if got is None else ((got[0],), got[1])
            if row is None:
                self._lose("lease_expired")
                raise SessionLost(self.store.url, f"session {self.id} is lost (lease_expired)")
            self._extend(sent + self.ttl)

    def _extend(self, deadline: float) -> None:
        with self._state:
            if self.lost is None:
                self._deadline = deadline

    def _reattach(self, cause: BaseException) -> tuple[int, float] | None:
        """The connection broke: reconnect until the deadline (a login the
        server refuses, SQLSTATE class 28, ends it at once: the session is
        lost); on another server instance, take the lock again, then move
        the row there and renew (``(id, sent)``; ``None``: the lease had
        lapsed). Under ``_mutex``."""
        with contextlib.suppress(Exception):
            self._conn.close()
        s = self.store.schema
        why = self.store._why(cause)
        pause = 0.02
        while self.valid:
            try:
                conn = self._connect()
            except StoreError as exc:
                why = self.store._why(exc)
                if exc.sqlstate is not None and exc.sqlstate.startswith("28"):
                    break  # a login the server refuses (a password changed): trying again does not mend it
                time.sleep(min(pause, max(0.0, self._deadline - time.monotonic())))  # a back-off
                pause = min(pause * 2, 0.5)
                continue
            try:
                instance = conn.execute(f"SELECT {INSTANCE_SQL}").fetchone()[0]
                if instance == self.instance or not conn.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (self.store._key, self.id)).fetchone()[0]:
                    # The same server (the lock was gone there), or the lock taken by
                    # another: lost, and this connection is of no use.
                    _close_quietly(conn)
                    break
                sent = time.monotonic()
                row = conn.execute(
                    f"UPDATE {s}.sessions SET instance = {INSTANCE_SQL},"
                    " lease_until = clock_timestamp() + ttl_ms * interval '1 millisecond'"
                    " WHERE id = %s AND closed_at IS NULL AND lease_until > clock_timestamp() RETURNING id",
                    (self.id,)).fetchone()
            except psycopg.Error as exc:
                why = self.store._why(exc)
                with contextlib.suppress(Exception):
                    conn.close()
                continue
            self._conn = conn
            if row is None:
                return None
            self.instance = instance
            return row[0], sent
        self._lose(f"connection_lost: {why}")
        raise SessionLost(self.store.url, f"session {self.id} is lost: its connection broke ({why})") from cause

    def _keep(self) -> None:
        """The background renewer: renews every ttl/3, and at once when the
        server closes the connection (its socket turns readable)."""
        period = self.ttl / 3
        while self.lost is None:
            try:
                fd = self._conn.pgconn.socket
                readable = ready([fd, self._stop_r], period)
            except (OSError, ValueError, psycopg.Error):
                readable = []  # the connection is gone: renewing reconnects
            if self._stop_r in readable:
                return
            with contextlib.suppress(SessionLost):
                self.renew()

    def _watch(self) -> None:
        """The watchdog: the session is lost at its deadline, even while a
        renewal hangs on a cut link."""
        with self._state:
            while self.lost is None and not self._closing:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._state.wait(remaining)
        if not self._closing:
            self._lose("lease_expired")
            self._shut()  # a renewal stuck on a cut link returns now

    def _shut(self) -> None:
        """Shut the connection's socket down (both ways) without closing it:
        a thread blocked on it returns with an error; the fd stays ours."""
        try:
            fd = self._conn.pgconn.socket
        except Exception:
            return
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    def _lose(self, why: str) -> None:
        with self._state:
            if self.lost is not None:
                return
            now = time.monotonic()
            self.lost_at = min(now, self._deadline) if why == "lease_expired" else now
            self.lost = why
            self._state.notify_all()
        if self._on_lost is not None:
            with contextlib.suppress(Exception):
                self._on_lost(self)

    def close(self) -> None:
        """Mark the session closed (its holders are then dead to everyone),
        release its lock and close its connection. Idempotent; best effort
        when the connection is gone (the lock goes with it, the lease lapses)."""
        if self._pid != os.getpid():
            return
        with self._state:
            self._closing = True
            self._state.notify_all()
        me = threading.current_thread()  # close() may be called by on_lost, in either thread
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
            if thread is not me:
                thread.join(max(0.0, self._deadline - time.monotonic()) + 1.0)
                if thread.is_alive():  # stuck in a renewal on a cut link
                    self._shut()
                    thread.join()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not me:
            watchdog.join()
        with self._mutex:
            if not self._conn.closed:
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute(f"UPDATE {self.store.schema}.sessions SET closed_at = clock_timestamp()"
                                       " WHERE id = %s AND closed_at IS NULL", (self.id,))
                    self.answered = True
            with self._state:
                if self.lost is None:
                    self.lost = "closed"
            self._close_quietly()

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                if fd >= 0:
                    os.close(fd)
        self._stop_r = self._stop_w = -1

    def _forked_child(self) -> None:
        if self._pid == os.getpid():
            return
        _blind(self._conn)
        self.lost = "forked"
        self._thread = self._watchdog = None
        self._mutex = threading.RLock()
        self._state = threading.Condition()
        self._closing = True
        self._on_lost = None

    def __enter__(self) -> "PgSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
