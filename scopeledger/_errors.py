"""The exceptions scopeledger raises.

Every error is a :class:`LedgerError`; some also subclass the builtin a caller
would naturally catch::

    LedgerError
    ├── InvalidScope (ValueError)        a rule or path that cannot be used
    ├── InvalidHolderName (ValueError)   a holder name that cannot be used
    ├── InvalidManifest (ValueError)     a runtime manifest that cannot be used
    ├── InvalidProcess (ValueError)      a pid that is not an int or names no process
    ├── InvalidArgument (ValueError, TypeError)  another argument of the wrong
    │                                    type or value (``force``, ``reason``,
    │                                    ``advisory``, ...)
    ├── InvalidLease (ValueError)        a ttl that is not a number of seconds from
    │                                    0.1 to 1e9, or a renewal of a holder
    │                                    without a lease
    ├── Refused                          a request the ledger turned down
    │   ├── ScopeConflict                write overlaps a live holder's write
    │   ├── DelegationError              outside the parent's effective scope,
    │   │                                or overlapping a sibling
    │   ├── DuplicateHolder              the name is held by a live holder
    │   └── WaitTimeout (TimeoutError)   a waiting request (``wait=``) not
    │                                    granted in time
    ├── UnknownHolder (LookupError)      no live holder of that name
    │   └── LeaseExpired                 a renewal that came after its lease ran out
    ├── LockTimeout (TimeoutError)       the ledger's lock was not free in time
    ├── CorruptLedger                    a log line or file that does not check out
    │   └── NewerFormat                  a sound line of a newer scopeledger (a newer
    │                                    format version, event type or key): upgrade,
    │                                    do not repair
    ├── UnsafeLedgerPath (PermissionError)  wrong owner, loose mode, planted symlink
    ├── NoLedger (FileNotFoundError)     no ledger where one was expected
    ├── LedgerNotEmpty                   a copy into a ledger that holds events
    ├── ReadOnlyLedger                   a change asked of a ledger opened read-only
    ├── HistoryUnavailable (LookupError) a point before the oldest retained
    │                                    history, or after the newest event
    ├── LedgerIOError (OSError)          the OS refused to create, open, read,
    │   │                                write, flush or lock a ledger file
    │   │                                (disk full, EIO, ENOLCK, ...)
    │   └── PartlyRecorded               a change of several events of which
    │                                    only the first ones were written
    └── UnsupportedPlatform (ImportError)  imported on a system other than Linux

Messages are lowercase, name the paths and holders involved and carry no
trailing period, in the manner of cargo's ``failed to <verb>: <path>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ._rules import ScopeRule


class LedgerError(Exception):
    """Base class of every error scopeledger raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors survive pickling (multiprocessing) with their message.
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[LedgerError], message: str, state: dict[str, Any]) -> LedgerError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    for key, value in state.items():
        setattr(err, key, value)  # (OSError's errno is a slot, not in __dict__)
    return err


class InvalidScope(LedgerError, ValueError):
    """Raised when a path or rule cannot be used: not absolute, contains NUL,
    too long, an unknown permission, or a relative path escaping its root."""


class InvalidHolderName(LedgerError, ValueError):
    """Raised when a holder name is empty, too long, or not parts of
    ``[A-Za-z0-9._@:+-]`` and inner spaces, each starting with a letter or
    digit, joined by ``/`` (names become socket paths: no ``..``, no control
    characters)."""


class InvalidProcess(LedgerError, ValueError):
    """Raised by ``register``/``delegate``/``attach``/``hold`` when ``pid`` is
    not a positive ``int`` or names no process (nothing is recorded)."""


class InvalidArgument(LedgerError, ValueError, TypeError):
    """Raised when an argument other than a name, rule, pid or manifest has
    the wrong type or value (``release(force=, reason=)``,
    ``register(advisory=)``): the message names the argument and the value,
    and nothing is recorded. A ``ValueError`` and a ``TypeError``, so that
    callers catching either builtin keep working."""


class InvalidLease(LedgerError, ValueError):
    """Raised by ``register``/``delegate``/``hold``/``renew`` (and ``ledger
    run --ttl``, ``ledger renew``) when a ttl is not a number of seconds
    from 0.1 to 10**9 (``scopeledger.TTL_RANGE``; the message names the
    value), or a renewal names a holder granted without a lease; nothing is
    recorded."""


class InvalidManifest(LedgerError, ValueError):
    """Raised by :func:`scopeledger.load_manifest` when a manifest is not valid
    TOML, lacks a field, has a field of the wrong type or an unknown key."""


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, never failing: an ``int`` too
    long for ``repr`` (Python refuses over 4,300 digits, also inside a list)
    is described instead, e.g. ``<an int of 16610 bits>``."""
    try:
        return repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"<an int of {value.bit_length()} bits>"
        return f"<a {type(value).__name__} too large to show>"


def format_chain(chain: tuple[str, ...]) -> str:
    """``('A', 'B', 'D')`` -> ``"'D' (delegated from 'B', from 'A')"``."""
    owner = chain[-1]
    ancestors = list(reversed(chain[:-1]))
    if not ancestors:
        return f"'{owner}'"
    rest = ", ".join(f"from '{a}'" for a in ancestors[1:])
    via = f"delegated from '{ancestors[0]}'" + (f", {rest}" if rest else "")
    return f"'{owner}' ({via})"


class Refused(LedgerError):
    """A request the ledger turned down. The refusal is recorded in the log as
    a ``refused`` event (once per identical request until the state changes)."""


class ScopeConflict(Refused):
    """Raised by ``register``/``delegate``/``hold`` when a requested write rule
    overlaps a write rule of a live holder outside the requester's own line.

    Attributes:
        rule: the requested :class:`ScopeRule` that conflicts.
        owner: name of the deepest holder whose rules overlap it.
        owner_rule: that holder's overlapping :class:`ScopeRule`.
        chain: holder names from the top-level holder down to ``owner``.
    """

    def __init__(self, rule: "ScopeRule", owner: str, owner_rule: "ScopeRule",
                 chain: tuple[str, ...], requester: str | None = None) -> None:
        self.rule = rule
        self.owner = owner
        self.owner_rule = owner_rule
        self.chain = chain
        self.requester = requester
        super().__init__(
            f"{rule.permission.value} {rule.display()}{rule.identity_text()} conflicts with holder "
            f"{format_chain(chain)} holding {owner_rule.permission.value} "
            f"{owner_rule.display()}{owner_rule.identity_text()}")


class DelegationError(Refused):
    """Raised by ``delegate`` when a requested rule is not inside the parent's
    effective scope (its rules minus what it delegated to other live
    children), or overlaps a sibling's write rule.

    Attributes:
        parent: the delegating holder's name.
        child: the requested child name.
        rule: the offending requested :class:`ScopeRule`.
        sibling: the sibling's name when a sibling is in the way, else None.
        chain: the owner chain when a sibling is in the way, else ``()``.
    """

    def __init__(self, message: str, *, parent: str, child: str, rule: "ScopeRule",
                 sibling: str | None = None, chain: tuple[str, ...] = ()) -> None:
        self.parent = parent
        self.child = child
        self.rule = rule
        self.sibling = sibling
        self.chain = chain
        super().__init__(message)


class DuplicateHolder(Refused):
    """Raised by ``register``/``delegate`` when a live holder already has the
    requested name. Attribute ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"holder '{name}' is already registered")


class WaitTimeout(Refused, TimeoutError):
    """Raised by ``register``/``delegate``/``hold`` called with ``wait=``
    (and their :class:`~scopeledger.AsyncLedger` forms) when the request was
    not granted within that many seconds. Nothing was granted, and nothing
    will be: the grant is decided under the lock only before the deadline.

    Attributes:
        name: the holder name asked for.
        waited: the seconds it was allowed to wait, ``float``.
        refusal: the last :class:`Refused` the request met (a
            :class:`ScopeConflict` or a :class:`DelegationError` naming a
            sibling), or ``None`` when it was last waiting behind an earlier
            waiter (first come, first served).
        in_the_way: ``tuple[str, ...]``: the holders it was waiting for:
            the refusal's chain, then every other holder in the way and
            its chain (up to 32 more conflicts looked at); or, behind an
            earlier waiter, the waiters' holder names.
        reason: ``str``: why it was still waiting, as the message ends
            (the refusal's message, or which earlier waiter it stood behind).
    """

    def __init__(self, name: str, waited: float, refusal: Refused | None, in_the_way: tuple[str, ...],
                 reason: str) -> None:
        self.name = name
        self.waited = waited
        self.refusal = refusal
        self.in_the_way = in_the_way
        self.reason = reason
        super().__init__(f"timed out after {waited:g}s waiting for the scope of '{name}': {reason}")


class UnknownHolder(LedgerError, LookupError):
    """Raised when an operation names a holder that is not live (never
    registered, released or reclaimed). Attribute ``name``."""

    def __init__(self, name: str, what: str = "holder", message: str | None = None) -> None:
        self.name = name
        super().__init__(message or f"no live {what} named '{name}'")


class LeaseExpired(UnknownHolder):
    """Raised by ``renew`` when the holder's lease ran out (past its ttl and
    grace, judged as a reclaim judges it) before the renewal: the holder is
    reclaimed (``lease_expired``) by that call instead. Attribute ``name``;
    ``why`` says how long it went unrenewed."""

    def __init__(self, name: str, why: str) -> None:
        self.why = why
        super().__init__(name, message=f"the lease of holder '{name}' has expired ({why}): it was reclaimed")


class LockTimeout(LedgerError, TimeoutError):
    """Raised when the ledger's lock is not acquired within the timeout.

    Attributes: ``path`` (the lock file), ``timeout`` (seconds),
    ``holder`` (who held the lock, as ``_store.lock_holder`` says, or None)."""

    def __init__(self, path: str, timeout: float, holder: str | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.holder = holder
        super().__init__(f"timed out after {timeout:g}s waiting for the lock on {path}"
                         + (f", {holder}" if holder else ""))


class CorruptLedger(LedgerError):
    """Raised when a log line or snapshot does not check out: not JSON, a
    field of the wrong type, an unknown event type, a newer format, a seq gap,
    a broken hash chain, or an event that does not apply to the state before it.

    Attributes: ``path`` (file), ``line`` (1-based line number or None),
    ``seq`` (the event's seq when known, else None), ``reason``.
    """

    def __init__(self, path: str, reason: str, *, line: int | None = None,
                 seq: int | None = None) -> None:
        self.path = path
        self.line = line
        self.seq = seq
        self.reason = reason
        where = path
        if line is not None:
            where += f" line {line}"
        if seq is not None:
            where += f" (seq {seq})"
        super().__init__(f"corrupt ledger: {where}: {reason}")


#: What :class:`NewerFormat`'s ``reason`` says after what this version
#: does not know.
NEWER_ADVICE = ("probably written by a newer scopeledger; upgrade scopeledger to read this ledger, do not run "
                "'ledger repair' (it would set this line and every later one aside)")


class NewerFormat(CorruptLedger):
    """Raised for a log line whose envelope is sound (a JSON object whose
    ``seq``, ``ts``, ``prev`` and ``actor`` have their types) but which
    carries what this scopeledger does not know: a format version newer
    than it writes, an unknown event type, a key its format version does
    not have in a known event, or an unknown value a newer version may add
    (a reclaim ``reason``, a refusal's ``error``) in an event otherwise
    sound. Such a line was probably written by a newer
    scopeledger: the remedy is to upgrade scopeledger, not to repair the
    ledger (``Ledger.repair`` cuts nothing at such a line: a version too old
    to read it cannot judge it, nor any line after it).

    A :class:`CorruptLedger` (callers that catch that catch this), with the
    same attributes, and ``unknown`` (``str``): what this version does not
    know (``"unknown key 'x' in a reclaimed event (...)"``). ``reason``
    says that and what to do.
    """

    def __init__(self, path: str, unknown: str, *, line: int | None = None,
                 seq: int | None = None) -> None:
        reason = f"{unknown}: {NEWER_ADVICE}"
        super().__init__(path, reason, line=line, seq=seq)
        self.unknown = unknown
        where = path + (f" line {line}" if line is not None else "") + (f" (seq {seq})" if seq is not None else "")
        Exception.__init__(self, f"newer format: {where}: {reason}")


class UnsafeLedgerPath(LedgerError, PermissionError):
    """Raised when opening a ledger whose directory or files are owned by
    another user, writable by group or others, or replaced by a symlink.
    Nothing is followed, changed or deleted. Attribute ``path``."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"unsafe ledger path {path}: {reason}")


class NoLedger(LedgerError, FileNotFoundError):
    """Raised by :func:`scopeledger.verify` (which never creates one) when no
    ledger is at the path, and by ``Ledger.open`` for an empty path."""


class LedgerNotEmpty(LedgerError):
    """Raised when a ledger is copied (:func:`scopeledger.copy_ledger`,
    ``ledger export``/``ledger import``) into one that holds events
    already: a ledger is copied only into an empty one (or a new one).
    Attributes: ``path`` (the destination: a directory, or the URL
    redacted) and ``events`` (how many it holds). Nothing was copied."""

    def __init__(self, path: str, events: int) -> None:
        self.path = path
        self.events = events
        super().__init__(f"{path} is not empty (it holds {events} event(s)): a ledger is copied only "
                         "into a new or empty one")


class ReadOnlyLedger(LedgerError):
    """Raised when a change (a grant, release, reclaim or snapshot) is asked
    of a ledger opened with ``readonly=True``, and when a ledger whose
    directory or log is write-protected (no owner write bit: someone ran
    ``chmod a-w``) is opened for writing. Attribute ``path``: the ledger
    directory or the write-protected file."""

    def __init__(self, path: str, action: str, why: str | None = None) -> None:
        self.path = path
        super().__init__(f"cannot {action}: {why or f'ledger {path} is opened read-only'}")


class HistoryUnavailable(LedgerError, LookupError):
    """Raised by time-travel queries for a point that is not in the retained
    history: before the oldest retained event (compacted away) or after the
    newest one."""


class LedgerIOError(LedgerError, OSError):
    """Raised when the OS refuses to create, open, read, write, flush or
    lock a ledger file (for example ENOSPC, disk full, EIO, an I/O error,
    ENOLCK). Nothing partial is left in the log. After a failed flush
    (``fsync=True``) the lines written stay in the log, and the ledger
    object refuses every later change with this error until the ledger is
    opened again (the message says so). Attributes: ``path`` (the file's
    full path), ``errno``; ``__cause__`` is the OSError."""

    def __init__(self, path: str, verb: str, cause: OSError, detail: str | None = None) -> None:
        self.path = path
        super().__init__(f"failed to {verb}: {path}: {cause.strerror or cause}"
                         + (f"; {detail}" if detail else ""))
        self.errno = cause.errno  # after OSError.__init__, which resets it

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), dict(self.__dict__, errno=self.errno)))


class PartlyRecorded(LedgerIOError):
    """Raised by a change that records several events (``reclaim_stale``
    reclaiming many holders; ``register``/``delegate`` reclaiming dead
    holders in the way before the grant) when the disk filled up part way:
    the first events are in the log, the rest are not (never a part of a
    line). The message counts and names both.

    Attributes: as :class:`LedgerIOError`, and ``recorded``,
    ``not_recorded``: ``tuple[(seq, event type, holder name), ...]``.
    """

    def __init__(self, cause: LedgerIOError, recorded: tuple[tuple[int, str, str], ...],
                 not_recorded: tuple[tuple[int, str, str], ...]) -> None:
        self.recorded = recorded
        self.not_recorded = not_recorded
        total = len(recorded) + len(not_recorded)
        detail = (f"{len(recorded)} of the {total} events of this change were recorded"
                  + (f" ({_events_said(recorded)})" if recorded else "")
                  + f", {len(not_recorded)} were not ({_events_said(not_recorded)})")
        OSError.__init__(self, f"{cause}; {detail}")
        self.path = cause.path
        self.errno = cause.errno

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), dict(self.__dict__, errno=self.errno)))


class SnapshotInvalid(Exception):
    """A snapshot that did not check out (internal: the ledger logs it and
    skips the snapshot, never raises it to a caller). Attributes: ``path``
    (where the snapshot is: a file's full path, or the store's location and
    seq), ``reason``; the message is ``PATH: REASON``."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# -- the store's errors (a server's; a file store raises LedgerIOError) --------

class InvalidLedgerURL(LedgerError, ValueError):
    """Raised when a ledger URL is not a ``postgresql://`` URL libpq
    accepts, or its ``schema`` parameter is not a usable name. The message
    shows the URL redacted."""


class StoreError(LedgerError):
    """Raised when the database server refuses an operation (disk full,
    permission denied, a backstop trigger): nothing was recorded.
    Attributes: ``url`` (redacted), ``sqlstate`` (the server's code, or
    ``None``)."""

    def __init__(self, url: str, message: str, sqlstate: str | None = None) -> None:
        self.url = url
        self.sqlstate = sqlstate
        super().__init__(message)


class StoreUnavailable(StoreError, ConnectionError):
    """Raised when the server cannot be reached, or the connection broke
    where nothing can have been recorded (a read, taking the lock)."""


class NotRecorded(StoreUnavailable):
    """Raised by an append when the connection broke during it and reading
    back showed the lines were not recorded: handled as a full disk is
    (nothing recorded; take the lock and decide again). Attribute
    ``first_seq``."""

    def __init__(self, url: str, message: str, first_seq: int) -> None:
        super().__init__(url, message)
        self.first_seq = first_seq


class InDoubt(StoreError):
    """Raised by an append when the connection broke during it and whether
    the lines were committed could not be found out in time: the ledger
    reads the log again before acting. Attribute ``first_seq``."""

    def __init__(self, url: str, message: str, first_seq: int) -> None:
        super().__init__(url, message)
        self.first_seq = first_seq


class SessionLost(StoreError):
    """Raised when a client session's lease expired, its connection broke,
    or it is used in a forked child: the holders bound to it may be
    reclaimed by others."""


def _events_said(events: tuple[tuple[int, str, str], ...], most: int = 5) -> str:
    """``"seq 4 reclaimed 'a', seq 5 reclaimed 'b', and 7 more"``."""
    said = ", ".join(f"seq {seq} {kind} '{name}'" for seq, kind, name in events[:most])
    return said + (f", and {len(events) - most} more" if len(events) > most else "")


class UnsupportedPlatform(LedgerError, ImportError):
    """Raised by ``import scopeledger`` on a system other than Linux.

    A holder's identity and liveness are read from Linux's ``/proc``
    (``/proc/PID/stat``'s start in clock ticks, ``/proc/*/ns/pid``, the boot
    id, ``/proc/self/mountinfo``); on macOS, the BSDs or Windows the ledger
    could not tell a live holder from a dead one, so it refuses to load at all
    rather than fail later with an ``AttributeError`` or a wrong reclaim.
    ``platform`` holds ``sys.platform``.
    """

    def __init__(self, platform: str) -> None:
        self.platform = platform
        ImportError.__init__(
            self, f"scopeledger runs on Linux only (this is {platform!r}): "
            "a holder's identity and liveness are read from /proc")
