"""The ``Ledger`` facade: the one place that joins the fold, the log, the
snapshots and liveness.

The ledger runs on any store (:class:`~scopeledger._logstore.LogStore`: a
directory, PostgreSQL, memory) and speaks seqs and lines to it, never byte
offsets. A mutation (register, delegate, attach, release, reclaim) is one
transaction: take the store's lock (``LogStore.locked``, nowhere else),
fold in the lines appended since this object last looked, validate, append
the new line(s) (``LogStore.append``: one ``write``, or one commit, which
lets the lock go). An error before that leaves no trace: the in-memory
state is dropped and rebuilt. Queries read the log's new complete lines
without the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import operator
import os
import re
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar, overload

import attrs
import orjson

from . import _snapshots
from ._errors import (
    SnapshotInvalid,
    StoreError,
    CorruptLedger,
    DelegationError,
    InvalidLease,
    InvalidProcess,
    InvalidScope,
    LeaseExpired,
    LedgerError,
    LedgerIOError,
    NEWER_ADVICE,
    NewerFormat,
    NoLedger,
    PartlyRecorded,
    ReadOnlyLedger,
    Refused,
    ScopeConflict,
    SessionLost,
    UnknownHolder,
    UnsafeLedgerPath,
    shown,
)
from ._events import (GENESIS_HASH, MAX_LINE_BYTES, blake2b, damaged, decode, encode, fold_fault, line_hash,
                      newer_fault)
from ._history import Diff, Event, History, Holding, Problem, TimePoint, VerifyReport
from ._events import FORMAT_VERSION, TS_LIMIT, FoldError
from ._fold import (
    MAX_RULES_PER_REQUEST,
    Allocation,
    State,
    apply,
    check_request,
    commit_grant,
    commit_removal,
    conflicts_met,
    effective_rules,
    reparent_plan,
)
from ._paths import canonical, check_reached, identity as identify_path, mount_table
from ._identity import Lease, Liveness, Probe, ProcessIdentity, Verdict, on_another_host
from ._process import boot_id, boottime_ns, host_id, identify, probe as default_probe, run_probe
from ._lease import check_ttl, holder_verdict, judge_lease, judge_lease_age, lease_verdict
from ._sessions import Sessions, check_session_options
from ._rules import (PERMISSION_TEXT, Permission, ScopeRule, check_name, conflicts, covers,
                     identity_json)
from ._arguments import (asks_to_wait, check_advisory, check_bool, check_callable, check_forced,
                         check_keep_snapshots, check_note, check_options, check_pid, check_seq,
                         check_snapshot_every, check_socket, check_timeout, check_token, check_wait,
                         integer)
from ._decide import REFUSAL_KIND, decide, stale_grant
from ._filestore import FileStore
from ._logstore import Entry, Line, LogStore, Tickets, line_after
from ._store import CUT_RECORD_NAME, LOST_VOID_MAX, SNAPSHOT_NAME, Store
from ._imports import first_use

if TYPE_CHECKING:  # pragma: no cover
    from ._grantwatch import GrantWatch
    from ._lease import Renewer
    from ._spawn import Adopted, Spawned

log = logging.getLogger("scopeledger")

#: Environment variable naming the default ledger directory.
ENV_DIR = "SCOPELEDGER_DIR"

#: Default number of events between automatic snapshots (see BENCHMARKS.md);
#: the interval also grows to the number of live holders, so that writing a
#: snapshot costs O(1) per event amortised.
DEFAULT_SNAPSHOT_EVERY = 10_000



#: The requester's name in :meth:`Ledger.decide`'s messages when it is asked
#: without a name (not a valid holder name, so it cannot be a holder's).
CHECK_NAME = "(check)"

#: How often :meth:`Ledger.wait` looks at the log's size, in seconds.
WAIT_POLL_SECONDS = 0.05

#: One queried path's type, for :meth:`Ledger.who` given a ``list[str]`` or a
#: ``list[pathlib.Path]`` (lists are invariant: neither is a
#: ``list[str | os.PathLike[str]]``, the overload a list of both takes).
_PathT = TypeVar("_PathT", bound="str | os.PathLike[str]")


def default_path() -> str:
    """The ledger used when none is given: ``$SCOPELEDGER_DIR`` (a
    directory, or a ``postgresql://`` URL, returned as it is: ``ledger run``
    and :func:`spawn` give their children the URL without its password,
    see :meth:`Ledger.child_environment`), else
    ``$XDG_STATE_HOME/scopeledger``, else ``~/.local/state/scopeledger``. History is the product, so the default
    is a state directory that survives reboots, not a runtime directory.

    A relative (or empty) ``$XDG_STATE_HOME`` is ignored, as the XDG Base
    Directory specification says (it would make the default ledger depend
    on the working directory); so is a relative ``$HOME`` (the home
    directory of the password database is used instead). A relative
    ``$SCOPELEDGER_DIR`` is taken from the working directory, resolved as
    the OS resolves it (a ``..`` after a symlink: the target's parent).

    Raises:
        NoLedger: ``$SCOPELEDGER_DIR`` is set but empty (or only
            whitespace): never taken as "unset", which would silently use
            another ledger than the one meant (the command line says the
            same, exit 2).
    """
    with first_use:
        from ._store import resolve_path

    env = os.environ.get(ENV_DIR)
    if env is not None:
        if not env.strip():
            raise NoLedger(f"${ENV_DIR} is set but empty: set it to a ledger directory or unset it "
                           "for the default ledger")
        if _is_postgresql_url(env):
            return env  # a ledger on a server: Ledger.open and verify take it as it is
        return resolve_path(env)
    base = os.environ.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            with first_use:
                import pwd

            try:
                home = pwd.getpwuid(os.getuid()).pw_dir
            except KeyError:
                pass
        base = os.path.join(home, ".local", "state")
    return os.path.join(base, "scopeledger")


def check_not_in_another_users_directory(path: str) -> None:
    """As root, refuse to create a ledger inside a directory that belongs to
    another user: ``sudo -E ledger run ...`` keeps the user's ``$HOME``, and
    would leave root-owned ``~/.local`` and ``~/.local/state`` there,
    which the user's own ledger (and every application writing there) then
    cannot use. Every existing directory above ``path`` is looked at, not
    only the nearest: a root-owned ``~/.local`` left by an earlier version
    inside the user's home would otherwise let root make ``state/...`` there
    too. Nothing is checked when ``path`` exists (opening checks its owner)
    or when this process is not root.

    Raises:
        UnsafeLedgerPath: an existing directory above ``path`` is owned by a
            user other than root; the message names the nearest such
            directory and its user.
    """
    if os.geteuid() != 0:
        return
    here = path
    while True:
        try:
            st = os.lstat(here)
        except ValueError:  # NUL in the path: opening names it
            return
        except OSError:
            st = None
        if st is not None:
            if here == path:
                return
            if st.st_uid != 0:
                break
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent
    assert st is not None
    with first_use:
        import pwd

    try:
        who = f"user {pwd.getpwuid(st.st_uid).pw_name!r} (uid {st.st_uid})"
    except KeyError:
        who = f"uid {st.st_uid}"
    raise UnsafeLedgerPath(path, f"not created: {here} belongs to {who}, and directories root made there "
                                 f"would be root's, which that user's own programs cannot use (with "
                                 f"'sudo -E', $HOME is still theirs); run as that user, or choose a ledger "
                                 f"outside their directories with --ledger or ${ENV_DIR}")


def check_rule_count(n: int) -> None:
    """Refuse a request of more than ``MAX_RULES_PER_REQUEST`` (10,000)
    rules (before anything else is done with them).

    Raises:
        InvalidScope: ``n`` is over the cap; the message gives both numbers.
    """
    if n > MAX_RULES_PER_REQUEST:
        raise InvalidScope(f"too many rules: {n} in one request, at most {MAX_RULES_PER_REQUEST}; "
                           "hold a directory with one recursive rule, or split the request")


def _plain_rules(rules: Any) -> Sequence[ScopeRule]:
    """``rules`` themselves when they are a non-empty list or tuple of plain
    :class:`ScopeRule` (the hot path; a loop: ``all()`` over a generator
    makes a function and a generator per call), else :func:`_as_rules`'s."""
    if type(rules) in (list, tuple) and rules:
        for r in rules:
            if type(r) is not ScopeRule:
                return _as_rules(rules)
        return rules  # type: ignore[no-any-return]
    return _as_rules(rules)


def _as_rules(rules: Any) -> list[ScopeRule]:
    if isinstance(rules, ScopeRule):
        rules = [rules]
    if isinstance(rules, (str, bytes)) or not hasattr(rules, "__iter__"):
        raise InvalidScope(f"invalid rules {shown(rules)}: expected a list of ScopeRule")
    out = []
    for r in rules:
        if type(r) is ScopeRule:
            out.append(r)
        elif isinstance(r, ScopeRule):  # a subclass: keep the value, not the class
            try:
                out.append(ScopeRule(r.given or r.path, r.permission, r.recursive))
            except AttributeError as exc:
                raise InvalidScope(f"invalid rule: a {type(r).__name__} that is not a whole ScopeRule "
                                   f"({exc})") from None
        elif isinstance(r, (tuple, list)) and 2 <= len(r) <= 3:
            out.append(ScopeRule(*r))
        else:
            raise InvalidScope(f"invalid rule {shown(r)}: expected a ScopeRule or (path, permission[, recursive])")
    if not out:
        raise InvalidScope("no rules given: a holder needs at least one scope rule")
    return out


@attrs.frozen
class EffectiveScope:
    """A holder's effective scope: its rules minus the write rules it has
    delegated to live children (the seed's ``is_within_effective_write``).

    Attributes:
        holder: the holder's name.
        rules: ``tuple[ScopeRule, ...]``, everything it was granted.
        delegated: ``tuple[(child name, ScopeRule), ...]``, write and
            exclusive read rules now held by its live children.
    """

    holder: str
    rules: tuple[ScopeRule, ...]
    delegated: tuple[tuple[str, ScopeRule], ...]

    def allows(self, rule: ScopeRule) -> bool:
        """Whether ``rule`` could be delegated now: covered by one of the
        holder's rules and conflicting with no delegated rule (a write
        with no delegated write or exclusive read, an exclusive read with
        no delegated write: :func:`scopeledger._rules.conflicts`)."""
        if not any(covers(r, rule) for r in self.rules):
            return False
        return not any(conflicts(rule, d) for _, d in self.delegated)


@attrs.frozen
class LostEvents:
    """Events a ledger's log lost (:attr:`Ledger.lost`): snapshots were
    written at seqs the log no longer reaches (a power cut took its tail
    before it reached the disk). The ledger opened from the newest snapshot
    the log still reaches and goes on after ``last_seq``; the snapshots are
    kept (``snapshots``, their file names), so that what they describe can
    still be read: in ``snapshots/`` while only readers have opened it; the
    first object that opens it to write moves them (before the log can go
    on past their seqs) into ``moved_to`` under ``cut/``, with a record, and
    keeps the lost seqs void (``void_through``), as ``Ledger.repair`` would:
    a fencing token is its grant's seq, and a holder (a lease-only one on
    another host, say) may still carry one of the lost grants' tokens.

    Attributes:
        last_seq: the seq of the log's last line when opened, ``int``.
        snapshot_seq: the newest snapshot's seq, ``int``: events
            ``last_seq + 1`` to ``snapshot_seq`` (at least) were lost.
        snapshots: names of the snapshots past the log, ``tuple[str, ...]``.
        moved_to: the directory under ``cut/`` this object moved them to,
            ``str``, or ``None`` (opened read-only, or another writer moved
            them first).
        void_through: the last seq this object kept void when it moved
            them, ``int``, or ``None``: seq ``last_seq + 1`` is then a
            ``repaired`` line naming ``moved_to``, the seqs after it up to
            ``void_through`` ``void`` lines (as :meth:`Ledger.repair`
            writes), and new events go on from ``void_through + 1``: the
            lost seqs, fencing tokens among them, are never given again.
            It is the newest snapshot that checks out on its own
            (``snapshot_seq`` unless that one is damaged; none: ``None``).
    """

    last_seq: int
    snapshot_seq: int
    snapshots: tuple[str, ...]
    moved_to: str | None = None
    void_through: int | None = None


@attrs.frozen
class RepairReport:
    """What :meth:`Ledger.repair` found past the last line of the log that
    checks out, and set aside (in a dry run: would set aside).

    Attributes:
        dry_run: ``bool``, as asked.
        damaged: ``bool``: something lies past that line (bytes of the
            log, or snapshots at later seqs). ``False``: nothing to
            repair, and nothing was changed.
        kept_seq: the seq of the last line that checks out, ``int`` (0:
            none): the log's last line kept; the repair's own lines
            (``void_through``) follow it.
        line: the first line set aside (1-based, so the seq it should
            have), ``int``; ``None`` when no line is (snapshots only, or
            nothing).
        seq: the seq that line records, ``int``, when it could be read;
            else ``None``.
        reason: why that line does not check out, in ``verify``'s words
            (``Problem.message``); a torn last line or snapshots past the
            log's end say so; ``""`` when not damaged.
        offset: the byte offset of the cut in the log, ``int`` (the log's
            size when nothing is cut from it).
        log_bytes: the log's size before the repair, ``int``.
        bytes_cut: bytes cut from the log, ``int``.
        lines_cut: lines cut from the log, ``int`` (a last line without a
            newline counts).
        sha256: the SHA-256 of the bytes cut, hex ``str``; ``None`` when none.
        snapshots: the file names of the snapshots set aside (those past
            ``kept_seq``, and those of another ledger: their header names
            another ledger id than this one's), ``tuple[str, ...]``.
        directory: where everything went, ``cut/<UTC time>-line-<N>`` in
            the ledger directory (full path, ``str``); ``None`` in a dry
            run or when not damaged.
        record: the record of the cut in it (``record.json``), ``str`` or
            ``None`` as ``directory``.
        remaining: problems ``verify`` reports that a repair leaves alone,
            ``tuple[Problem, ...]``: a snapshot at or before ``kept_seq``
            that does not check out (opening skips it; remove it by hand).
        appended: of the lines up to ``kept_seq``, how many other writers
            appended while the log was judged without the lock (a dry run,
            a repair that found nothing to repair), ``int``: complete lines,
            not damage, and not checked (``ledger verify`` checks them).
        writing: the bytes of a last line another writer was writing when
            the log was judged (it held the lock), ``int``: not damage, and
            not judged; 0 when none. A last line without its newline while
            no writer holds the lock is torn: damage.
        newer_format: ``bool``: the first line that does not check out
            (``line``, ``seq``; ``reason`` says what it carries) is sound
            and follows the line before, but carries what this scopeledger
            does not know (:class:`NewerFormat`: a newer format version,
            event type or key): probably written by a newer scopeledger.
            Nothing was set aside (``damaged`` is ``False``, nothing cut):
            upgrade scopeledger. Whether a line after it is damaged, this
            version cannot judge.
        void_through: the last seq the repair keeps void, ``int``, when it
            cut lines (``lines_cut``) or set aside a snapshot past the log's
            end that checks out on its own (its seq was given, though the
            log lost its line: a power cut, an older log put back): seq
            ``kept_seq + 1`` is then a
            ``repaired`` line naming ``directory``, the seqs after it up to
            ``void_through`` are ``void`` lines, and new events go on from
            ``void_through + 1``: the seqs of the lines cut, among them the
            fencing tokens of the grants cut, are never given again.
            ``None`` when no line was cut (or would be, in a dry run).
    """

    dry_run: bool
    damaged: bool
    kept_seq: int
    line: int | None
    seq: int | None
    reason: str
    offset: int
    log_bytes: int
    bytes_cut: int
    lines_cut: int
    sha256: str | None
    snapshots: tuple[str, ...]
    directory: str | None
    record: str | None
    remaining: tuple[Problem, ...] = ()
    appended: int = 0
    writing: int = 0
    newer_format: bool = False
    void_through: int | None = None

    def __str__(self) -> str:
        if self.newer_format:
            return (f"nothing set aside: line {self.line} (seq {self.seq}): {self.reason}; this scopeledger "
                    "cannot judge that line or any after it, so it cuts nothing (the log ends at seq "
                    f"{self.kept_seq} as far as it can read)")
        if not self.damaged and self.directory is not None:  # a repair stopped after its cut
            done = "would record it and keep them void" if self.dry_run else "recorded it and kept them void"
            return (self.reason + ("; " + done if self.void_through is not None else "")
                    + self.unjudged())
        if not self.damaged:
            return f"nothing to repair: every line checks out (seq {self.kept_seq - self.appended})" + self.unjudged()
        verb = "would set aside" if self.dry_run else "set aside"
        what = [f"{self.bytes_cut} bytes ({self.lines_cut} lines) from byte {self.offset}"] if self.bytes_cut else []
        what += [f"{len(self.snapshots)} snapshot(s)"] if self.snapshots else []
        void = ("" if self.void_through is None
                else f", then the repair's own lines to seq {self.void_through} (the cut seqs kept void)")
        return (f"{verb} {' and '.join(what)}: {self.reason}; the log ends at seq {self.kept_seq}{void}"
                + self.unjudged())

    def unjudged(self) -> str:
        """What other writers were writing while the log was judged, as
        ``"; ..."`` to end a sentence with (``""``: nothing)."""
        out = ""
        if self.appended:
            out += (f"; {self.appended} line(s) appended meanwhile by other writers (to seq {self.kept_seq}) "
                    "were not checked")
        if self.writing:
            out += (f"; a line of {self.writing} bytes was being written at the log's end by a writer holding "
                    "the lock (not judged)")
        return out


@attrs.define
class LedgerStats:
    """Counters for tests and benchmarks: ``events_folded`` (events applied
    since open), ``snapshot_seq`` (seq of the snapshot loaded at open, 0 for
    none), ``snapshots_skipped`` (names of snapshots that did not check out),
    ``torn`` (paths torn fragments were moved to by this object)."""

    events_folded: int = 0
    snapshot_seq: int = 0
    snapshots_skipped: list[str] = attrs.Factory(list)
    torn: list[str] = attrs.Factory(list)


@attrs.frozen
class Reclaimed:
    """One holder a reclaim removed (or, in a dry run, would remove).

    Attributes:
        name: the holder's name, ``str``.
        reason: the recorded reason, ``str`` (``process_gone``, ``zombie``,
            ``pid_reused``, ``earlier_boot``, ``namespace_gone``).
        why: what proved it, ``str`` (the probe's :attr:`Verdict.why`).
        pid: its process's pid, ``int``.
        seq: the ``reclaimed`` event's seq, ``int``; ``None`` in a dry run.
        reparented: ``tuple[(child, new parent or None), ...]``.
        last_seen_ns: when the holder was last seen alive, ns since the
            epoch (UTC, its writer's clock): the latest of its grant's
            time, its last renewal's and its last attach's (the event's
            ``last_seen``); ``None`` where not known (a report rebuilt
            from an older log).
        returncode: how the process of a holder reclaimed as a ``zombie``
            ended, read from the zombie before its parent reaped it
            (:attr:`Verdict.returncode`: an exit status 0-255, or ``-N``
            for signal N), recorded as the event's ``exit_code`` or
            ``exit_signal``; ``None`` when not known (any other reason, a
            zombie not proven to be the holder's process, a status the
            kernel does not show to this process, a reserved delegation:
            its process was the reserver's).
    """

    name: str
    reason: str
    why: str
    pid: int
    seq: int | None
    reparented: tuple[tuple[str, str | None], ...]
    last_seen_ns: int | None = None
    returncode: int | None = None


@attrs.frozen
class ReclaimReport:
    """What :meth:`Ledger.reclaim` did.

    Attributes:
        reclaimed: ``tuple[Reclaimed, ...]``, in the order recorded.
        kept: ``tuple[(name, Verdict), ...]``: every other holder probed,
            alive or unknown, in grant order.
    """

    reclaimed: tuple[Reclaimed, ...]
    kept: tuple[tuple[str, Verdict], ...]

    @property
    def unknown(self) -> list[tuple[str, Verdict]]:
        """The kept holders whose liveness could not be decided, with why."""
        return [(n, v) for n, v in self.kept if v.liveness is Liveness.UNKNOWN]


@attrs.frozen
class Decision:
    """How ``register`` (or ``delegate``) would decide a request now
    (:meth:`Ledger.decide`); nothing is recorded.

    Attributes:
        refusal: the :class:`Refused` the request would meet
            (:class:`ScopeConflict`, :class:`DelegationError` or
            :class:`DuplicateHolder`), not raised; ``None`` when it would be
            granted.
        reclaimed: ``tuple[Reclaimed, ...]``: the holders in the way whose
            process is provably dead, which the request would reclaim
            first, in that order (``seq`` is ``None``: nothing was
            recorded; ``reparented`` as if each were reclaimed in turn).
        rules: ``tuple[ScopeRule, ...]``: the request's rules as the
            ledger would record them (:meth:`Ledger.canonical_rules`).
    """

    refusal: Refused | None
    reclaimed: tuple[Reclaimed, ...]
    rules: tuple[ScopeRule, ...]

    @property
    def granted(self) -> bool:
        """``True`` when the request would be granted now."""
        return self.refusal is None


class _Txn:
    """Events built under the lock, applied to the state as they are built,
    written with one ``write`` at commit.

    The last event may instead be built with :meth:`emit_last`: it is applied
    by ``after`` (set by the caller) once the line is written and the lock
    released, so that the fold stays out of the time the lock is held."""

    __slots__ = ("ledger", "state", "lines", "entries", "error", "liveness", "actor_ident", "actor",
                 "after", "network_fs", "clock", "committed")

    def __init__(self, ledger: "Ledger", state: State) -> None:
        self.ledger = ledger
        self.state = state
        self.lines: list[bytes] = []
        self.entries: list[Entry] = []  # (ts, line) of each line, for the store
        self.error: Exception | None = None
        self.liveness: dict[str, Verdict] = {}
        store = ledger._store
        pid = store.holding_pid if store is not None else None
        cache = ledger._actor_cache  # (_actor_and_json's hit, inlined: the hot path)
        if cache is not None and cache[0] == pid:
            self.actor_ident, self.actor = cache[1], cache[2]
        else:
            self.actor_ident, self.actor = ledger._actor_and_json(pid)
        #: ``(fold function, *args)`` that applies the last event, or None.
        self.after: tuple[Any, ...] | None = None
        self.network_fs = ledger._network_fs
        #: The ledger's clock (or _replaying it, after a try that was not appended).
        self.clock: Callable[[], int] = ledger._clock
        #: A waiter's commit (``scopeledger._wait.Commit``) that this
        #: transaction passed, if any: told when its lines were not appended
        #: (Ledger._speculative_part).
        self.committed: Any = None

    def _line(self, kind: str, payload: dict[str, Any]) -> tuple[int, int, dict[str, Any], bytes]:
        assert self.after is None, "no event after the last one"
        st = self.state
        if st.seq < st.void_through and kind != "void":
            # A repair's seqs not all filled yet (its void lines cut short by
            # a crash and set aside as a torn tail): fill them first, so that
            # no seq, no fencing token, is given twice.
            while st.seq < st.void_through:
                self.emit("void")
        seq = st.seq + 1
        ts = self.clock()
        if type(ts) is not int or not -TS_LIMIT <= ts < TS_LIMIT:  # never write a line no reader would accept
            if type(ts) is not int:
                raise TypeError(f"clock() returned {type(ts).__name__} {shown(ts)}, not int nanoseconds")
            raise ValueError(f"clock() returned {shown(ts)}: nanoseconds outside signed 64 bits "
                             "(before 1677 or from 2262 on)")
        # The clock's own reading, never clamped (format v2): order is by
        # seq, and a clock that stepped back or ran ahead shows as such
        # (verify reports it; time travel by time says when it crosses it).
        ev = {"v": FORMAT_VERSION, "seq": seq, "ts": ts, "actor": self.actor,
              "prev": st.last_hash, "type": kind}
        if self.network_fs is not None:  # written where flock may not exclude other hosts
            ev["network_fs"] = self.network_fs
        ev.update(payload)
        line = encode(ev)
        if len(line) > MAX_LINE_BYTES:  # never write a line no reader would accept
            raise InvalidScope(f"the request is too large: its {kind} event would be a line of "
                               f"{len(line)} bytes, over the log's limit of {MAX_LINE_BYTES} bytes")
        self.lines.append(line)
        self.entries.append((ts, line))
        return seq, ts, ev, line

    def emit(self, kind: str, **payload: Any) -> int:
        """Build one event line and apply it to the state now; its seq."""
        seq, _, ev, line = self._line(kind, payload)
        apply(self.state, ev, line_hash(line))
        return seq

    def emit_last(self, kind: str, payload: dict[str, Any]) -> tuple[int, int, str]:
        """Build the transaction's last line (``payload``: its keys after the
        envelope's, in order; a dict, not keyword arguments, which would
        build one more), not applied yet; ``(seq, ts, line hash)`` for the
        caller's ``after``."""
        seq, ts, _, line = self._line(kind, payload)
        return seq, ts, line_hash(line)

    def verdict(self, name: str) -> Verdict:
        """Whether live holder ``name`` is alive, asked once per
        transaction (``decide``'s ``liveness``: a bound method, not a
        closure made per request)."""
        return self.ledger._liveness(self, name)

    def reclaim(self, name: str, reason: str, verdict: Verdict | None = None) -> tuple[int, list[list[Any]]]:
        """Record the reclaim of ``name`` for ``reason``; ``verdict``: the
        one that proved it dead (default: this transaction's on it, if
        any), whose zombie's exit status the event records (``exit_code``
        or ``exit_signal``: :func:`exit_keys`). ``(seq, re-parenting)``."""
        plan = reparent_plan(self.state, name)
        if verdict is None:
            verdict = self.liveness.get(name)
        return self.emit("reclaimed", name=name, reason=reason, reparented=plan,
                         last_seen=last_seen_ns(self.state.holders[name]),
                         **exit_keys(verdict, reason, self.state.holders[name])), plan

    def refuse(self, name: str, parent: str | None, rules: Sequence[ScopeRule], err: Exception) -> None:
        kind = REFUSAL_KIND[type(err)]
        chain = list(getattr(err, "chain", ()) or ())
        rule = getattr(err, "rule", None)
        request = {"name": name, "parent": parent, "rules": [r.to_json() for r in rules]}
        key = blake2b(orjson.dumps([request, kind, chain, str(err)]), digest_size=12).hexdigest()
        self.error = err
        if key in self.state.refusals:
            return  # the same refusal is already on record since the last change
        self.emit("refused", key=key, error=kind, message=str(err), request=request,
                  rule=rule.to_json() if rule is not None else None, chain=chain)


class _CutWhileWaiting(CorruptLedger):
    """Lines a change folded while it waited for the lock are no longer in
    the log (a repair cut them meanwhile): ``Ledger._transact`` folds the
    log again and decides the change again; never raised to a caller."""


def _seq_of(name: str) -> int:
    """The seq of the snapshot file ``name`` (``snap-<seq>.json``)."""
    m = SNAPSHOT_NAME.match(name)
    return int(m.group(1)) if m is not None else 0


def _void_through(kept: int, seqs: int, reach: tuple[int, str, int] | None,
                  proven: int | None = None) -> int | None:
    """The last seq a repair that keeps line ``kept`` and cuts lines that
    may have carried ``seqs`` seqs after it (``Tally.seqs``: not one for an
    empty line) keeps void: the last of those, or further when an earlier
    repair's cut of this log reached further (``reach``: ``Store.cut_reach``;
    one stopped before it wrote its own lines) or a snapshot it sets aside
    proves the log held a later seq (``proven``: ``Ledger._lost_proof``);
    ``None`` when none passes ``kept``."""
    through = max(kept + seqs, reach[0] if reach is not None else 0, proven or 0)
    return through if through > kept else None


#: The most seqs past the log's end a writer opening a ledger keeps void on
#: its own when a snapshot proves they were given (``Ledger._move_lost_snapshots``;
#: ``void`` lines are about 250 bytes each: 25 MB); further, opening to write
#: is refused (``CorruptLedger``) and ``ledger repair`` does it, up to
#: ``LOST_VOID_MAX``.
_LOST_VOID_AUTO = 100_000


#: What a repair refusing a snapshot that proves too many seqs says to do.
_MOVE_IT_OUT = (f"more than a repair keeps void ({LOST_VOID_MAX}): if it is not this ledger's snapshot, move it "
                "out of snapshots/ and run the repair again")


def _kept_void_words(first: int, last: int) -> str:
    """`` and kept seqs A to B void`` after a ``repaired`` line at ``first``
    keeping seqs through ``last`` void (as ``ledger repair`` says it)."""
    return ("" if last == first else f" and kept seq {last} void" if last == first + 1
            else f" and kept seqs {first + 1} to {last} void")


#: Seconds between two looks of :meth:`Ledger.wait` on a ledger directory
#: at the last line it folded and at whether the log is still the file it
#: opened (a rewrite that keeps the log's size, a log renamed over: the
#: store's wait, which watches the size, does not see them).
WAIT_LOOK_SECONDS = 1.0

#: Void lines a repair appends with one write (``Ledger._keep_void``): a
#: bound on the memory a large cut takes (a void line is about 250 bytes).
_VOID_PIECE = 4096

#: Seconds after its last change from which a ledger on a server store
#: (PostgreSQL) reads what others appended before taking the lock
#: (Ledger._unseen_long); sooner, only with the lock, in its round trip.
_PREREAD_AFTER_S = 0.25


def _readings(txn: _Txn) -> list[int]:
    """The clock readings ``txn`` took, latest first (for :func:`_replaying`)."""
    return [ts for ts, _ in reversed(txn.entries)]


def _replaying(readings: list[int], clock: Callable[[], int], state: State) -> Callable[[], int]:
    """A clock giving ``readings`` (latest first: popped from the end) again,
    in order, while none is earlier than an event ``state`` has folded since
    (so a line's ts is never behind those before it for this reason), then
    ``clock``'s: a change decided again under the lock after a try that was
    not appended (Ledger._speculative_part) reads the clock as often as on a
    file, and stamps its lines with readings taken during the call."""
    def read() -> int:
        if readings and readings[-1] >= state.max_ts:
            return readings.pop()
        readings.clear()
        return clock()
    return read


def _option(name: str, check: Callable[[str, Any], Any], doc: str) -> property:
    """A :class:`Ledger` option that may be changed after opening: read as a
    plain attribute (a C getter: the hot path reads some on every change),
    set only to a value ``check(name, value)`` accepts (it raises
    ``TypeError``/``ValueError`` naming the option and the value), as that
    check returns it (a ``numpy.float64`` timeout kept as a plain ``float``)."""
    private = "_" + name

    def set_(self: "Ledger", value: Any) -> None:
        object.__setattr__(self, private, check(name, value))

    return property(operator.attrgetter(private), set_, doc=doc)


class Ledger:
    """An open scope ledger.

    Use :meth:`open`. Every method may also raise :class:`LockTimeout` (for
    mutations, when the lock is not free within ``timeout``),
    :class:`CorruptLedger` (a log line that does not check out) and
    :class:`LedgerIOError` (the OS refused a read or a write of a ledger
    file, an I/O error or a full disk, naming the file's full path; after a
    refused write the request was not recorded, though dead holders
    reclaimed on its way may have been).
    On a ledger opened ``readonly``, every method that would record an event
    (``register``, ``delegate``, ``attach``, ``release``, ``hold``,
    ``reclaim``/``reclaim_stale`` with something to reclaim, ``snapshot``), and
    ``repair`` but for a dry run, raises :class:`ReadOnlyLedger` before doing anything.
    Those methods check the type and value of every argument before they
    take the lock: a bad one (:class:`InvalidHolderName`,
    :class:`InvalidScope`, :class:`InvalidProcess`, ``TypeError``,
    ``ValueError``, naming the argument and the value) records nothing, so
    that no event the fold would refuse is ever written.

    Seconds (every ``wait``, ``ttl``, ``timeout`` and ``session_ttl``) are
    real numbers: an ``int``, a ``float``, a subclass of either
    (``numpy.float64``), a ``fractions.Fraction``, a numpy number (what
    registers as ``numbers.Real``); not a ``bool``, nor a
    ``decimal.Decimal`` (the standard library does not make it a
    ``numbers.Real``: give ``float(d)``). Counts (``snapshot_every``,
    ``keep_snapshots``, ``keep``, ``workers``) are integers: an ``int``, a
    subclass (an ``IntEnum``), a ``numpy.int64``; not a ``bool``, not a
    ``float``. Each is used as the plain ``int`` or ``float`` it stands for
    (``scopeledger._arguments.real``, ``integer``).
    """

    path = property(operator.attrgetter("_path"),
                    doc="The ledger directory's absolute path, or its PostgreSQL URL with the "
                        "password redacted, ``str`` (fixed at open).")
    probe = property(operator.attrgetter("_probe"),
                     doc="The liveness probe (fixed at open: ``Ledger.open(probe=...)``).")
    clock = property(operator.attrgetter("_clock"),
                     doc="The event clock, ``() -> int`` ns (fixed at open: ``Ledger.open(clock=...)``).")
    timeout = _option("timeout", check_timeout,
                      "Seconds a mutation waits for the lock (``None``: for ever); as :meth:`open`.")
    fsync = _option("fsync", check_bool, "``fdatasync`` after every append, ``bool``; as :meth:`open`.")
    snapshot_every = _option("snapshot_every", check_snapshot_every,
                             "Events between automatic snapshots, ``int`` >= 1; as :meth:`open`.")
    keep_snapshots = _option("keep_snapshots", check_keep_snapshots,
                             "Snapshots kept, ``int`` >= 1 or ``None`` (all); as :meth:`open`.")
    resolve_symlinks = _option("resolve_symlinks", check_bool,
                               "Resolve symlinks in rules' paths, ``bool``; as :meth:`open`.")
    # Where the options above keep their values (each set only through its
    # property, which checks it; read directly on the hot path).
    _timeout: float | None
    _fsync: bool
    #: The store's one-round-trip append (PostgreSQL), else None: see
    #: _speculative_part. Set on the instance only when there is one.
    _try_append: Callable[[Sequence[Entry], int], bool] | None = None
    #: time.monotonic() of the last change, or of the start of the last
    #: read of the log to its end, on a store that has try_append
    #: (_unseen_long); set on the instance by the first.
    _seen_at = 0.0
    #: Whether the state was read to the log's end (on a store that has
    #: try_append) since the last change was tried: that change is then
    #: tried without the lock first (_transact); set on the instance.
    _fresh = False
    _snapshot_every: int
    _keep_snapshots: int | None
    _resolve_symlinks: bool

    def __init__(self, store: LogStore | Store, *, timeout: float | None, probe: Probe | None,
                 fsync: bool, snapshot_every: int, keep_snapshots: int | None,
                 resolve_symlinks: bool, clock: Callable[[], int] | None,
                 load: bool = True, boottime: Callable[[], int | None] | None = None,
                 session_ttl: float | None = None,
                 on_session_lost: Callable[[SessionLost], object] | None = None) -> None:
        check_options(timeout, probe, fsync, snapshot_every, keep_snapshots, resolve_symlinks, clock)
        if isinstance(store, Store):  # a directory opened by the caller
            store = FileStore(store, fsync=fsync)
        #: The store (the interface: seqs and lines).
        self._log: LogStore = store
        #: Opened read-only (a store's mode never changes; read once, off the hot path).
        self._readonly: bool = store.readonly
        #: A file store's own: its directory (the lock's polling, the
        #: snapshot claim, torn tails), else None.
        self._files: FileStore | None = store if isinstance(store, FileStore) else None
        #: The directory object of a file store (tests and tools reach for
        #: it), else None.
        self._store: Store | None = self._files.store if self._files is not None else None
        self._network_fs: str | None = getattr(store, "network_fs", None)
        self._path = store.location
        #: How messages name the log: a file's full path, else the store's location.
        self._log_where = self._store.log_path if self._store is not None else store.location
        self.timeout = timeout
        self._probe: Probe = probe if probe is not None else default_probe
        self.fsync = fsync
        self.snapshot_every = snapshot_every
        self.keep_snapshots = keep_snapshots
        self.resolve_symlinks = resolve_symlinks
        self._clock: Callable[[], int] = clock if clock is not None else time.time_ns
        check_callable("boottime", boottime, ())
        self._boottime: Callable[[], int | None] = boottime if boottime is not None else boottime_ns
        self._mem = threading.RLock()
        self._state: State | None = None
        # The seq after this object's last transaction, and whether other
        # processes appended between its last two: only then is the log
        # checked for their lines before the lock is taken.
        self._seq_of_last_txn = -1
        self._others_active = True
        # (seq, hash, bytes) of the last line folded or appended: what a file
        # store compares the log's line with before going on from it
        # (FileStore.begin, read_on), by its bytes rather than its hash.
        self._last_line: tuple[int, str, bytes] | None = None
        try_append = getattr(store, "try_append", None)
        if try_append is not None:  # (else the class's None: a file ledger's dict stays as it was, the hot path)
            self._try_append = try_append
        self._snap_seq = 0
        self._actor_cache: tuple[int, ProcessIdentity, dict[str, Any]] | None = None
        self._boots: tuple[int, dict[str, list[int]]] | None = None  # see _boot_spans
        self.stats = LedgerStats()
        if self._files is not None:
            self.stats.torn = self._files.torn  # torn tails its lock set aside
        #: Seconds the last mutation waited for the lock (for benchmarks).
        self.last_wait = 0.0
        self._holds: "weakref.WeakSet[Hold]" = weakref.WeakSet()
        self._history = History(store, self._current, self._mem, self._prepare, self._log_where)
        self._lost: LostEvents | None = None
        session_ttl = check_session_options(session_ttl, on_session_lost)
        #: On PostgreSQL: this ledger's client session and the judge of other
        #: hosts' (scopeledger._sessions); None on any other store.
        self._sessions: Sessions | None = (
            Sessions(store, session_ttl, on_session_lost, store.location)
            if hasattr(store, "judge_sessions") else None)
        if self._sessions is not None:
            # Its grants carry the session; bound here, so that a file ledger's
            # grants do not pay a call for it.
            self._identity = self._identity_with_session  # type: ignore[method-assign]
        _ledgers.add(self)
        #: A writer's duties before its first line, done once, when it first
        #: folds (:meth:`_writer_duties`): a file store opened to write.
        self._duties_due = self._files is not None and not self._readonly
        if load:
            with self._mem:
                self._load()
            self._writer_duties()

    def child_environment(self, environ: "Mapping[str, str] | None" = None) -> dict[str, str]:
        """The environment variables a child process needs to open this
        ledger the way ``Ledger.open()`` and ``ledger`` do by default, to
        add to its environment (``ledger run`` and :func:`spawn` do):
        ``{"SCOPELEDGER_DIR": where}``, ``where`` the directory, or the URL
        as it was given but without its password (an environment is
        printed by tools, ``env``, crash reports; the ``***`` of
        :attr:`path` would not connect). When that URL carried a password
        and ``environ`` (the child's environment as it stands; default
        ``os.environ``) has no ``PGPASSWORD``, the password goes in
        ``PGPASSWORD`` (libpq reads it): on Linux a process's environment
        (``/proc/PID/environ``) is readable only by its owner (and root),
        as the parent's own command line is not. A ``PGPASSWORD`` already
        there is left as it is (it is then the one libpq uses); so are
        ``~/.pgpass``, ``PGPASSFILE`` and the other libpq variables, which
        the child inherits.

        Returns:
            ``dict[str, str]``: one or two entries, never a password
            anywhere but under ``PGPASSWORD``.
        """
        reach = getattr(self._log, "child_location", None)
        if reach is None:
            return {ENV_DIR: self._path}
        url, password = reach()
        env = {ENV_DIR: url}
        if password is not None and "PGPASSWORD" not in (os.environ if environ is None else environ):
            env["PGPASSWORD"] = password
        return env

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, timeout: float | None = None,
             probe: Probe | None = None, fsync: bool = False,
             snapshot_every: int = DEFAULT_SNAPSHOT_EVERY, keep_snapshots: int | None = None,
             resolve_symlinks: bool = True, clock: Callable[[], int] | None = None,
             readonly: bool = False, create: bool = True,
             allow_network_fs: bool = False, fold: bool = True,
             boottime: Callable[[], int | None] | None = None,
             session_ttl: float | None = None,
             on_session_lost: Callable[[SessionLost], object] | None = None) -> "Ledger":
        """Open (creating if needed) the ledger in directory ``path``, or
        at a PostgreSQL URL.

        Args:
            path: the ledger directory; default :func:`default_path`.
                Created 0700 with its files 0600, whatever the umask. Or a
                ``postgresql://user@host/db?schema=NAME`` URL (told apart
                by a plain string test; the PostgreSQL store, and its
                client library, are imported only then; ``pip install
                'scopeledger[postgresql]'``): one ledger is one schema,
                created with ``create``; ``fsync`` and ``allow_network_fs``
                do not apply (every commit is synchronous). Another
                ``scheme://`` is refused (``InvalidLedgerURL``).
            timeout: seconds a mutation waits for the lock at most
                (``None``: for ever, logging once after about 1 s).
            probe: liveness probe ``ProcessIdentity -> Liveness | bool``;
                default the psutil probe (:func:`scopeledger.probe`).
            fsync: ``fdatasync`` the log after every append, and fsync a
                new ledger's files and directories: a power cut then loses
                nothing acknowledged. Without it a killed process loses
                nothing either, and a power cut at most the changes after
                the newest snapshot (the log is flushed before each one)
                not yet written back (RELIABILITY.md, "Durability"). If a
                flush fails, the lines stay in the log, the call raises
                :class:`LedgerIOError`, and this object refuses every later
                change until the ledger is opened again.
            snapshot_every: events between automatic snapshots (at least
                this many, and at least the number of live holders).
            keep_snapshots: how many snapshots to keep (``None``: all, so
                that any past state costs at most one interval of folding).
            resolve_symlinks: resolve symlinks in the existing part of each
                rule's path at the API boundary (``os.path.realpath``), so
                that an alias of a held directory conflicts; the canonical
                path is what the event records. Either way the path is
                identified by the mount table (ARCHITECTURE.md, "The
                identity of a path"); ``False`` also leaves out reading
                which directories fold case (no file is opened).
            clock: ``() -> int`` nanoseconds since the epoch, UTC (tests);
                a mutation raises ``TypeError`` (recording nothing) when it
                returns anything but an ``int``, and ``ValueError`` when it
                returns 2**63 or more (past the year 2262). Its reading is
                recorded as it is (format v2), also when it is before the
                last event's: the order of events is their seq; ``verify``
                reports such clock jumps, and time travel by time says when
                its answer crosses one.
            boottime: ``() -> int | None``, ``CLOCK_BOOTTIME`` in ns as the
                initial time namespace reads it, ``None`` when unreadable
                (tests); default :func:`scopeledger._process.boottime_ns`.
                Leases are recorded and judged on it (``scopeledger._lease``).
            session_ttl: on PostgreSQL, the ttl in seconds (0.01 to 86400;
                ``None``: ``scopeledger._sessions.DEFAULT_SESSION_TTL``, 30 s)
                of the client session this object opens at its first grant
                and records with every holder it grants or attaches: checkers
                on other hosts judge those holders by it (dead when it is
                closed, its lock is gone, or it is not renewed within the ttl
                and a grace of max(0.25 s, ttl/10) by the server's clock;
                renewed every ttl/3 by a thread). Does not apply to a
                directory (a file ledger records no session).
            on_session_lost: on PostgreSQL, ``on_session_lost(error)``,
                called with a :class:`SessionLost` (and a warning logged)
                when this object's session is lost (its lease ran out by
                this process's clock, its connection was ended): the holders
                it vouched for may be reclaimed by other hosts, and their
                :meth:`check` is already ``False``. Called once per lost
                session, from the thread that found it (the session's
                watchdog or renewer, or a caller); its exceptions are logged.
            readonly: only read: open the log ``O_RDONLY`` and nothing else
                (no lock, nothing created, no mode tightened), so that a
                ledger on a read-only mount, or one write-protected with
                ``chmod a-w``, can be queried, replayed and verified.
                Queries and time travel work; every change raises
                :class:`ReadOnlyLedger`. A missing ledger is
                :class:`NoLedger`. The owner and mode checks still apply:
                another user's ledger is :class:`UnsafeLedgerPath`.
            create: ``False``: open only a ledger that is there (a directory
                with ``events.jsonl``); anything else is :class:`NoLedger`
                and nothing is created (for tools that change a ledger but
                must not start one by mistake). Implied by ``readonly``.
            allow_network_fs: open for writing on a file system where
                ``flock`` may not exclude writers on other hosts (NFS,
                SMB/CIFS, 9p, virtiofs, Ceph, GlusterFS, Lustre, any FUSE:
                ``scopeledger._store.NETWORK_FS_TYPES``); only safe when
                this host alone writes the ledger. Every event this object
                writes then records the file system's type
                (``network_fs``). Without it, opening such a ledger for
                writing is :class:`UnsafeLedgerPath`; ``readonly`` needs
                no opt-in.
            fold: ``False``: fold nothing now; the first call that needs
                the current state folds it (from the newest snapshot, as
                opening does), and raises what opening would have raised. A
                replay from the first event (:meth:`events`,
                :meth:`event_lines`, :meth:`history`) and :meth:`verify` do
                not need it: so a ledger whose log is damaged after its
                newest snapshot, which does not open, can still show the
                events before the damaged line (each vouched for by the
                line after it) before raising :class:`CorruptLedger` there.

        Raises:
            InvalidLedgerURL, StoreUnavailable, StoreError, NoLedger: a
                PostgreSQL URL that is malformed, a server that cannot be
                reached or refuses, a schema that does not exist without
                ``create`` (``PgStore.open``; no message shows a password).
            UnsafeLedgerPath: as root, the ledger does not exist and
                would be created inside a directory another user owns
                (:func:`check_not_in_another_users_directory`: ``sudo -E``
                with that user's ``$HOME``; the message names the user);
                the directory or a file in it is owned by
                another user, group/other-writable, or a planted symlink;
                without ``readonly``, it is on a network file system and
                ``allow_network_fs`` is false (the message names the type);
                the directory or one on the way to it is another kind of
                file (``notes.txt/L``: the message names ``notes.txt``); or
                the directory exists, is not empty and is not a ledger (it
                is left untouched).
            NoLedger: ``path`` is empty, or ``None`` with
                ``$SCOPELEDGER_DIR`` set but empty (or, with ``readonly``
                or without ``create``, holds no ledger).
            ReadOnlyLedger: without ``readonly``, the directory, a
                subdirectory or the log has no owner write bit
                (write-protected); nothing is changed.
            TypeError: ``path`` is not a ``str`` or ``os.PathLike[str]``;
                ``fsync``, ``resolve_symlinks``, ``readonly``, ``create``
                or ``fold`` is not a ``bool``; ``probe`` or ``clock`` is neither ``None`` nor
                callable. Nothing is created.
            ValueError: ``timeout``, ``snapshot_every`` or
                ``keep_snapshots`` of the wrong type or out of range;
                ``session_ttl`` out of range (``TypeError``: not a number;
                ``on_session_lost`` not a plain callable taking
                ``(error)``). Nothing is created.
            CorruptLedger: a complete log line does not check out (with
                ``fold=False``: when the state is first needed); or, without
                ``readonly``, a snapshot past the log's end (:attr:`lost`)
                says the log held a seq more than 100,000 past its end:
                nothing is changed, and the message says to run ``ledger
                repair`` or to move the file out of ``snapshots/``.
            LedgerIOError: the OS refused to create, open or read the
                directory or a file in it (permission denied, an I/O error,
                ...); it names the full path, ``__cause__`` is the OSError.
                Without ``readonly``, also: it refused to set snapshots past
                the log's end aside into ``cut/`` or to append the lines
                that keep the lost seqs void (:attr:`LostEvents.void_through`);
                the message says whether the log was changed (opening to
                write again finishes the lines).
            LockTimeout: without ``readonly``, the lock was not free within
                ``timeout`` when snapshots past the log's end had to be set
                aside, or a cut's seqs kept void (rare: see :attr:`lost`).
            ReadOnlyLedger: also when, without ``readonly``, the file
                system is mounted read-only (EROFS).
        """
        check_bool("readonly", readonly)
        check_bool("create", create)
        check_bool("allow_network_fs", allow_network_fs)
        check_bool("fold", fold)
        check_callable("boottime", boottime, ())
        check_session_options(session_ttl, on_session_lost)
        # Before the Store: a bad option creates no directory.
        check_options(timeout, probe, fsync, snapshot_every, keep_snapshots, resolve_symlinks, clock)
        store = _open_store(_dir_path(path), create=create, readonly=readonly, fsync=fsync,
                            allow_network_fs=allow_network_fs)
        try:
            return cls(store, timeout=timeout, probe=probe, fsync=fsync,
                       snapshot_every=snapshot_every, keep_snapshots=keep_snapshots,
                       resolve_symlinks=resolve_symlinks, clock=clock, load=fold, boottime=boottime,
                       session_ttl=session_ttl, on_session_lost=on_session_lost)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Release the allocations of this object's live :meth:`hold` guards
        (their holders are done when their ledger is), then close the
        descriptors (the log's, and the watches kept for the next
        ``wait=``). The object cannot be used afterwards.

        On PostgreSQL it also closes its client session: holders it granted
        or attached that are still held (``register``, ``delegate``,
        ``spawn`` without a release) are then dead to checkers on other
        hosts, who reclaim them as ``session_closed`` when they next look;
        checkers on their own host keep judging their processes. So keep
        the ledger open while they hold (``ledger run`` and a supervisor
        do), or release them first. About one close in
        ``SESSION_PRUNE_EVERY`` (64) then prunes the server's sessions
        table (``scopeledger._sessions``: the rows of sessions long dead
        that no live holder carries); a prune that fails is logged, not
        raised."""
        for guard in list(self._holds):
            guard.release()
        if self._sessions is not None:
            prune = self._sessions.prune_due()
            if self._sessions.close() and prune:  # (not when the server did not answer just now)
                self._prune_sessions()
        self._log.close()
        waiting = sys.modules.get("scopeledger._wait")  # imported by the first wait=, if any
        if waiting is not None:
            waiting.forget(self)

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {shown(self.path)} seq={self._state.seq if self._state else '?'}>"

    # -- state maintenance ------------------------------------------------------

    def _load(self) -> None:
        """Newest snapshot that checks out, then the events after it.

        Snapshots written at a seq the log no longer reaches (a power cut
        took the log's tail, with ``fsync=False`` or from a version that did
        not flush the log before a snapshot) are passed over: the ledger
        opens from the newest snapshot the log still reaches, warns, and
        says what was lost in :attr:`lost`. Nothing is deleted."""
        self._state = None
        past: list[int] = []
        outdated = False
        head: list[int] = []  # the log's head, read once when a snapshot fails

        def skipped(seq: int, exc: SnapshotInvalid) -> None:
            nonlocal outdated
            if not head:
                head.append(self._log.head())
            if self._past_the_log(seq, head[0]):
                past.append(seq)
                return
            if isinstance(exc, _snapshots.SnapshotOutdated):
                log.info("skipping snapshot: %s", exc)  # an upgrade: not a fault
                outdated = True
            else:
                log.warning("skipping snapshot: %s", exc)
            self.stats.snapshots_skipped.append(_snapshots.snapshot_name(seq))

        state = _snapshots.newest(self._log, skipped)
        if state is not None:
            self._snap_seq = max(self._snap_seq, state.seq)
            self.stats.snapshot_seq = state.seq
        self._state = state if state is not None else State()
        state = self._catch_up()
        if past:
            newest = past[0]
            names = tuple(_snapshots.snapshot_name(q) for q in sorted(past))
            self._lost = LostEvents(state.seq, newest, names)
            self.stats.snapshots_skipped.extend(_snapshots.snapshot_name(q) for q in past)
            log.warning("events lost: the log %s ends at seq %d, but snapshot %s was written at seq "
                        "%d: events %d to %d were lost (a power cut before they reached the disk?); "
                        "opened from what the log holds, the snapshots are kept (docs/cli.md, "
                        "'Recovering a damaged ledger')", self._log_where, state.seq,
                        _snapshots.where(self._log, newest), newest, state.seq + 1, newest)
        if outdated and self._snap_seq == 0 and state.seq and not self._log.readonly:
            # Only snapshots of an older format: write one of this format now,
            # so that the next opening does not fold the whole log again.
            try:
                self._write_snapshot(state)
            except (OSError, LedgerError) as exc:
                log.warning("could not write snapshot at seq %d: %s", state.seq, exc)

    def _writer_duties(self) -> None:
        """What a writer of a file store does once, when it first folds the
        log and before its first line: set snapshots past the log's end
        aside and keep the seqs they prove were given void
        (:meth:`_move_lost_snapshots`), and finish keeping void what a cut
        recorded under ``cut/`` reaches (:meth:`_finish_void`). Due again
        when it raised.

        Raises:
            as :meth:`_move_lost_snapshots` and :meth:`_finish_void`.
        """
        files = self._files
        if not self._duties_due or files is None:
            return
        self._duties_due = False  # (not again from the fold below: _catch_up)
        try:
            with self._mem:
                lost = self._lost
                if lost is not None and lost.moved_to is None:
                    self._move_lost_snapshots(files, lost)
                self._finish_void(files)
        except BaseException:
            self._duties_due = True
            raise

    def _move_lost_snapshots(self, files: FileStore, lost: LostEvents) -> None:
        """A writer opening a log shorter than its snapshots: before its
        first line, under the lock, move the snapshots past the log's end
        (and a torn tail) into ``cut/`` with a record, and keep the seqs the
        newest of them that checks out on its own proves were given
        (:meth:`_lost_proof`) void, as :meth:`repair` does (a ``repaired``
        line, then ``void`` lines; the record's ``through``, so that a
        writer killed before them has them written by the next:
        :meth:`_finish_void`). Left in ``snapshots/`` they were met by the
        log going on: the warning then counted the new events as lost, no
        snapshot was written until the log passed the stale ones, which
        then failed to match for ever (``verify`` exit 1, which ``repair``
        did not mend), and pruning deleted them; and without the void lines
        the next grants took the lost seqs, tokens a holder may still carry.

        Raises:
            CorruptLedger: the newest such snapshot proves more than
                ``_LOST_VOID_AUTO`` seqs past the log's end (nothing changed:
                the message says to run ``ledger repair``, or to move it out
                of ``snapshots/`` if it is not this ledger's).
            LockTimeout, LedgerIOError, UnsafeLedgerPath: as :meth:`repair`
                (the message says whether the log was cut; a writer opening
                the ledger afterwards finishes).
        """
        names: list[str] = []
        cut = None
        try:
            with files.exclusive(self.timeout):
                files.forget()
                kept = self._log.head()
                tail, names = files.past(kept)
                if not names:
                    return  # another writer moved them meanwhile
                proof = self._lost_proof(files, names, kept, _LOST_VOID_AUTO, (
                    "more than a writer keeps void on its own when it opens the ledger: run 'ledger repair', "
                    "which sets it aside and keeps them void, or, if it is not this ledger's snapshot, move it "
                    "out of snapshots/"))
                facts = self._repair_facts(kept, None, (tail, names), proof)
                facts["reason"] = (f"snapshot(s) past the end of the log (seq {kept}): {', '.join(names)}: "
                                   f"events {kept + 1} to {lost.snapshot_seq} (at least) were lost, a power "
                                   "cut before they reached the disk?; moved by the first writer to open "
                                   "the ledger afterwards" + (f", with a torn last line of {tail} bytes"
                                                              if tail else ""))
                # (the earlier repairs' records read before anything is cut, as repair does)
                reach = files.store.cut_reach(self._keeps_line)
                cut = files.cut_after(kept, facts)
                if cut is None:
                    return
                through = self._keep_cut_void(files, kept, facts["kept_hash"], cut, reach)
        finally:
            if cut is not None:  # fold again from what the log holds now
                self._drop_fold()
        where, _ = cut
        self._lost = attrs.evolve(lost, moved_to=where, void_through=through)
        which = ", ".join(names) if len(names) <= 3 else f"{len(names)} of them, {names[0]} to {names[-1]}"
        if through is None:
            void = "; none of them checks out on its own, so no lost seq is kept void"
        else:
            void = (f"; recorded that at seq {kept + 1}" + _kept_void_words(kept + 1, through)
                    + f": the lost seqs are never given again (a fencing token names one grant); new events "
                      f"go on from seq {through + 1}")
        log.warning("moved the snapshots past the end of the log (%s) to %s, with a record of what was lost "
                    "(record.json), so that the log going on never meets them%s", which, where, void)

    def _lost_proof(self, files: FileStore, names: Sequence[str], known: int, limit: int,
                    refused: str, say: bool = True, kept: int | None = None) -> tuple[int, str] | None:
        """What the snapshot files ``names`` (past the log's last line kept,
        to be set aside) prove the log once held: ``(the last seq, the
        file's name)`` of the newest that checks out on its own
        (``_snapshots.proven_reach``: its header, checksum and body; not
        against the log, which lost those lines), ``None`` when none does
        or it proves nothing past ``known`` (the last seq the log's lines,
        those to be cut too, account for). One that does not check out
        (damaged, edited) proves nothing, and is said so (a warning,
        unless not ``say``). With ``kept`` (the log's last line kept), a
        name at a seq up to it (another ledger's, set aside too) is passed
        over.

        Raises:
            CorruptLedger: it proves more than ``limit`` seqs past ``known``
                (the last seq the log's bytes account for): a snapshot of
                another, longer ledger copied here, say; that many void lines
                are not written on its word (``refused``: what to do).
        """
        store = files.store
        for name in sorted(names, reverse=True):
            m = SNAPSHOT_NAME.match(name)
            if m is None or (kept is not None and int(m.group(1)) <= kept):
                continue  # (not past the log's end: another ledger's, set aside with the cut)
            reach, why = _snapshots.proven_reach(store, int(m.group(1)))
            path = _snapshots.snapshot_path(store, name)
            if reach is None:
                if say:
                    log.warning("snapshot %s past the end of the log proves nothing (%s): the seqs it "
                                "names are not kept void on its word", path, why)
                continue
            if reach <= known:
                return None  # (the log's lines, cut or not, account for it)
            if reach - known > limit:
                raise CorruptLedger(path, (
                    f"this snapshot says the log held seq {reach}, {reach - known} seqs past what the log "
                    f"holds (seq {known}): keeping them void (no fencing token given twice) takes a void "
                    f"line each, {refused}"))
            return reach, name
        return None

    def _finish_void(self, files: FileStore) -> None:
        """A writer opening the ledger, before its first line: when a cut
        recorded under ``cut/`` reaches past the log and the seqs its lines
        keep void (``Store.cut_reach``: a repair, or a writer that moved
        snapshots past the log's end, stopped between its cut and its own
        lines: killed, a full disk), write them now, under the lock (a torn
        tail set aside first), as :meth:`repair` run again would: so that
        no seq, no fencing token, a cut took is given again. Costs one
        ``openat`` of ``cut/`` when there is none.

        Raises:
            LockTimeout, LedgerIOError, UnsafeLedgerPath: as :meth:`repair`.
        """
        reach = files.store.cut_reach(self._keeps_line)
        if reach is None:
            return
        through, where, start = reach
        with self._mem:
            state = self._catch_up()
            if through <= max(state.seq, state.void_through):
                return  # (the common case: the cuts kept void long ago)
            missed = files.begin(state.seq, self.timeout, None, state.last_hash)  # (still the line folded)
            wrote = False
            try:
                if missed:
                    return  # another writer went on meanwhile (and finished this first: its own open did)
                kept = state.seq
                wrote = True
                try:
                    through = self._keep_void(files, kept, state.last_hash, through, where, start)
                except LedgerIOError as exc:
                    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else OSError(exc.errno, str(exc))
                    raise LedgerIOError(exc.path, "keep the cut seqs void", cause,
                                        f"seqs {kept + 1} to {through} (cut by the repair recorded in {where}) "
                                        "are not kept void yet: open the ledger again, or run 'ledger repair', "
                                        "before anything else writes") from exc
            finally:
                files.end()
                if wrote:
                    self._drop_fold()
        log.warning("the cut recorded in %s (a repair, or the first writer after the log lost its tail) was "
                    "stopped before it kept its seqs void; recorded that at seq %d%s: no fencing token among "
                    "them is given again; new events go on from seq %d", where, kept + 1,
                    _kept_void_words(kept + 1, through), through + 1)

    @property
    def lost(self) -> "LostEvents | None":
        """What the log lost, as found when this object opened the ledger:
        a :class:`LostEvents` when snapshots were written at seqs the log
        no longer reaches (a power cut took its tail), else ``None``. An
        object opened to write has set them aside and kept the seqs they
        prove were given void (:attr:`LostEvents.void_through`) before
        ``open`` returned."""
        return self._lost

    def _past_the_log(self, seq: int, head: int) -> bool:
        """Whether the snapshot at ``seq`` (which did not check out) was
        written past the log's last line (``head``): the log lost what the
        snapshot saw (it never shrinks otherwise: a torn tail is cut after
        the last complete line, which no snapshot passes). A damaged header
        (of a file store's snapshot) is just a bad snapshot."""
        if seq <= head:
            return False
        header = getattr(self._log, "snapshot_header", None)
        if header is not None:
            try:
                header(seq)
            except _snapshots.SnapshotOutdated:
                return True  # an older format: its header still says where
            except SnapshotInvalid:
                return False
        return True

    def _catch_up(self) -> State:
        """Fold in the complete lines appended since the state's seq (no
        lock needed: the log is append-only, and a store returns only
        complete lines). A log that no longer holds the last line folded
        (cut by a repair, here or in another process) is folded again
        from what it holds now (:meth:`_fold_again`), as opening it again
        would."""
        if self._state is None:
            self._load()
            if self._duties_due:  # (opened with fold=False: the first call that needs the state)
                self._writer_duties()
                if self._state is None:
                    self._load()
        state = self._state
        assert state is not None
        if self._try_append is not None:  # a server store: the lines appended before now are read
            self._seen_at = time.monotonic()
            self._fresh = True
        seq, last = state.seq, state.last_hash
        try:
            # (a directory: its last line folded read again, by its hash: FileStore.read_on)
            files = self._files
            if files is not None:
                lines = files.read_on(seq, last, self._copy_of(seq, last))
            else:
                lines = self._log.read_after(seq)
            if lines:
                self._fold(state, lines)
        except CorruptLedger:
            if self._holds_folded(seq, last):
                raise  # (damage past the lines folded: the error stands)
            return self._fold_again(seq)
        return state

    def _holds_folded(self, seq: int, hash_: str) -> bool:
        """Whether the log still holds line ``seq`` as this object folded
        it (a line hashing to ``hash_``). Read where the store remembers
        the line, then, not found so, with that memory dropped
        (``FileStore.forget``: a cut leaves it pointing where lines no
        longer are). ``True`` when the store cannot be read now (the
        caller's error stands). With the memory lock held."""
        if seq == 0:
            return True
        for again in (False, True):
            if again:
                if self._files is None:
                    return False
                self._files.forget()
            try:
                got = self._log.read_after(seq - 1, 1)
            except CorruptLedger:
                got = []  # (fewer lines than that, or where the store remembered them: the log changed)
            except (LedgerError, OSError):
                return True
            if got and got[0][0] == seq and line_hash(got[0][1]) == hash_:
                return True
        return False

    def _drop_fold(self) -> None:
        """Forget the folded state and what was learnt with it (the seq of
        this object's last change, of its last snapshot, the boot spans):
        the next call folds the log as it is now, as opening does (after a
        cut of the log, here or in another process)."""
        self._state = None
        self._seq_of_last_txn = -1
        self._snap_seq = 0
        self._boots = None

    def _copy_of(self, seq: int, last: str) -> bytes | None:
        """This object's copy of line ``seq`` when it is the last it folded
        or appended and hashes to ``last`` (``_last_line``), else ``None``:
        what a file store compares the log's line with, a ``memcmp``."""
        mine = self._last_line
        return mine[2] if mine is not None and mine[0] == seq and mine[1] == last else None

    def _fold_again(self, seq: int) -> State:
        """The log no longer holds line ``seq`` as this object folded it: a
        repair cut it (in another process, or by another object), or the
        log was replaced. Drop the folded state and fold the log as it is
        now, from the newest snapshot that checks out, as opening it again
        does (before, every later call raised :class:`CorruptLedger` until
        the ledger was opened again). With the memory lock held.

        Raises:
            CorruptLedger: the log as it is now does not check out.
        """
        log.warning("the log %s no longer holds line %d as this object read it (cut by 'ledger repair', or "
                    "the log replaced): folding it again from what it holds now", self._log_where, seq)
        if self._files is not None:
            self._files.forget()
        self._drop_fold()
        self._load()
        state = self._state
        assert state is not None
        return state

    def _fold(self, state: State, lines: list[Line]) -> None:
        """Apply ``lines`` (the ones after ``state.seq``) to ``state``;
        on any error the state is dropped (rebuilt on next use)."""
        where = self._log_where
        try:
            for lineno, line in lines:
                ev = decode(line, where, lineno)
                try:
                    apply(state, ev, line_hash(line))
                except FoldError as exc:
                    raise fold_fault(where, exc, lineno, ev["seq"]) from None
            self.stats.events_folded += len(lines)
            self._last_line = (state.seq, state.last_hash, lines[-1][1]) if lines else self._last_line
        except NewerFormat as exc:  # a newer scopeledger's line only if the lines around it say so
            self._state = None
            raise self._newer_fault(exc, state, lines) from None
        except CorruptLedger as exc:  # a line that does not decode (fold_fault's words have the advice)
            self._state = None
            raise damaged(exc) from None
        except BaseException:
            self._state = None  # partly applied: rebuild on next use
            raise

    def _newer_fault(self, exc: NewerFormat, state: State, lines: list[Line]) -> CorruptLedger:
        """:meth:`_fold`'s error for the line of ``lines`` that read as a
        newer format's (``exc``; ``state``: the fold up to the line before
        it): ``exc``, or damage when its seq, its ``prev`` or the line
        after it (the next of ``lines``, else read from the store) says so
        (:func:`~scopeledger._events.newer_fault`, every reader's rule)."""
        first = lines[0][0]
        at = state.seq + 1 - first  # (the line that raised: the fold stopped before it)
        if not 0 <= at < len(lines) or lines[at][0] != exc.line:
            return exc  # pragma: no cover - the fold stops at the line that raised
        line = lines[at][1]
        if at + 1 < len(lines):
            nxt: bytes | None = lines[at + 1][1]
        else:
            try:
                nxt = line_after(self._log, lines[at][0])
            except (LedgerError, OSError):  # (unread: judged as the last line)
                nxt = None
        return newer_fault(exc, line, state.seq + 1, state.last_hash, nxt)

    def _fold_locked(self, after: int, missed: list[Line]) -> State:
        """Under the lock: fold ``missed`` (the lines after seq ``after``,
        read under it), but for those folded meanwhile (while waiting)."""
        state = self._state
        if state is None or state.seq < after:  # dropped (or reloaded) meanwhile
            return self._catch_up()
        skip = state.seq - after
        folded, last = state.seq, state.last_hash  # (with the lines folded while waiting)
        try:
            if skip < len(missed):
                self._fold(state, missed[skip:] if skip else missed)
            elif skip and (skip > len(missed) or line_hash(missed[-1][1]) != state.last_hash):
                raise CorruptLedger(self._log_where, f"line {folded} is not as it was read", line=folded)
        except CorruptLedger:
            # Lines folded while waiting that the log under the lock no longer holds (a
            # repair cut them meanwhile): the change is decided again on the log as it is
            # now (_transact); damage in the lines missed stands.
            if skip and not self._holds_folded(folded, last):
                self._state = None
                raise _CutWhileWaiting(self._log_where, f"the log no longer holds line {folded} as it was "
                                       "read (cut by 'ledger repair' while this process waited for the lock)",
                                       line=folded, seq=folded) from None
            raise
        return state

    def _boot_spans(self) -> dict[str, list[int]]:
        """What the log says of this host's machine id (the default
        probe's evidence that another boot id of it is not an earlier boot,
        ``_process.earlier_boot_disproved``): ``{boot id: [first seq, last
        seq, ts of its last event]}`` of the events whose writer recorded
        this machine id, in the lines folded so far. Read once, then only
        the lines appended since; asked only for a holder of this machine id
        and another boot id."""
        host = host_id()
        memo = self._boots
        start, spans = memo if memo is not None else (0, {})
        end = self._state.seq if self._state is not None else 0
        if host is None or end <= start:
            return spans
        spans = {b: list(v) for b, v in spans.items()}
        needle = f'"host":"{host}"'.encode()
        for _, line in _read_lines(self._log, start, end):
            if needle not in line:
                continue
            m = _ACTOR_AT_START.match(line)
            if m is not None:
                if m[3].decode() != host:
                    continue
                seq, ts, boot = int(m[1]), int(m[2]), m[4].decode()
            else:  # not our writer's key order: read it whole
                try:
                    ev = orjson.loads(line)
                    actor = ev["actor"]
                    seq, ts, boot = ev["seq"], ev["ts"], actor["boot"]
                    if actor.get("host") != host or type(seq) is not int or type(ts) is not int \
                            or type(boot) is not str:
                        continue
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
            span = spans.get(boot)
            if span is None:
                spans[boot] = [seq, seq, ts]
            else:
                span[1], span[2] = seq, ts
        self._boots = (end, spans)
        return spans

    def _fold_while_waiting(self) -> None:
        """While another process holds the lock: fold what it appends now,
        not after taking the lock (less time held; see Store.acquire)."""
        state = self._state
        if state is not None:
            seq = state.seq
            with self._mem:
                if self._state is state and self._catch_up().seq != seq:
                    return
        os.sched_yield()

    def unload(self) -> None:
        """Drop the folded state from memory (about 2 kB per live holder);
        the next call that needs it folds it again from the newest snapshot
        and the log after it, as opening does. For a process that keeps a
        ledger open while it waits, such as ``ledger run``'s wrapper while
        its command runs. The object stays open (descriptors, options,
        :meth:`hold` guards)."""
        with self._mem:
            self._state = None
            self._seq_of_last_txn = -1

    def refresh(self) -> int:
        """Fold in the complete lines other processes appended (no lock);
        returns the seq now folded, ``int``.

        Raises:
            CorruptLedger: a new line does not check out.
        """
        with self._mem:
            return self._catch_up().seq

    @property
    def actor(self) -> ProcessIdentity:
        """This process's identity, :class:`ProcessIdentity`, as this object
        records it as the ``actor`` of the events it writes: read from /proc
        once per process (a forked child reads its own), then cached. Reads
        no log, takes no lock."""
        return self._actor_and_json()[0]

    def _actor_and_json(self, pid: int | None = None) -> tuple[ProcessIdentity, dict[str, Any]]:
        """This process's identity and its JSON form, cached per pid
        (``pid``: ``os.getpid()`` when the caller has it already)."""
        if pid is None:
            pid = os.getpid()
        cache = self._actor_cache
        if cache is None or cache[0] != pid:
            ident = identify(pid)
            cache = self._actor_cache = (pid, ident, ident.to_json())
        return cache[1], cache[2]

    def _identity(self, pid: int | None) -> ProcessIdentity:
        """The identity to bind an allocation to (the calling process for
        ``None``). On PostgreSQL, :meth:`_identity_with_session` instead.

        Raises:
            InvalidProcess: ``pid`` is not an integer from 1 to 2**31-1 (a
                ``bool``, a float, a string, 0, a negative one:
                ``_arguments.check_pid``) or names no process.
        """
        pid = check_pid(pid)  # (a plain int: an IntEnum's, numpy.int64's; the log holds a plain int)
        if pid is None or pid == os.getpid():
            return self.actor
        try:
            return identify(pid)
        except ProcessLookupError:
            raise InvalidProcess(f"cannot bind an allocation to pid {shown(pid)}: no such process") from None
        except (TypeError, ValueError) as exc:
            raise InvalidProcess(f"cannot bind an allocation to pid {shown(pid)}: {exc}") from None

    def _identity_with_session(self, pid: int | None) -> ProcessIdentity:
        """:meth:`_identity`, carrying this ledger's client session (opened
        at the first grant: ``scopeledger._sessions``): a ledger on
        PostgreSQL has it as its ``_identity`` (``__init__``).

        Raises:
            InvalidProcess: as :meth:`_identity`.
            StoreUnavailable, StoreError: the session cannot be opened.
        """
        assert self._sessions is not None
        return self._sessions.stamp(Ledger._identity(self, pid))

    def _prepare(self, rules: Any) -> tuple[ScopeRule, ...]:
        """The request's rules as the log will store them: canonical paths
        (symlinks resolved unless ``resolve_symlinks`` is off), identified
        by the mount table (``_paths.identify``), no ``given`` spelling
        left.

        Raises:
            InvalidScope: bad rules, also once resolved, or a path whose
                identity cannot be told (a case-folding directory whose
                flags cannot be read).
        """
        out = []
        resolve = self._resolve_symlinks
        given_rules = _plain_rules(rules)
        check_rule_count(len(given_rules))
        table = mount_table()  # one look (and staleness check) for the whole request
        cache = table.rules if table is not None else None
        folding = table is not None and cache is None  # a directory may fold case: read its flags
        # Components found missing by this request's earlier rules (see
        # _paths.canonical): a second rule below one asks no more.
        missing: dict[str, Any] | None = {} if resolve and len(given_rules) > 1 else None
        for r in given_rules:
            given = r.given
            path = r.path
            known: tuple[str | None, bool | None] = (None, None)
            if resolve:
                # A '..' after a symlink means the link target's parent.
                if given is None:
                    real, existing, folds = canonical(path, folding, missing)
                    known = (existing, folds)
                else:
                    real = os.path.realpath(given)
                if real != path:
                    # A link was followed: through /proc into another mount
                    # namespace, the text names another file here.
                    check_reached(given if given is not None else path, real)
                    path = ScopeRule(real, r.permission, r.recursive).path  # checked as given ones are
            if cache is not None:
                k = (path, r.permission, r.recursive, resolve)
                hit = cache.get(k)
                if hit is not None:
                    out.append(hit)
                    continue
            ident = identify_path(path, r.recursive, resolve, table, known) if table is not None else None
            if ident is not None:
                r = r.identified(path, ident)
                if cache is not None:
                    if len(cache) >= _IDENTIFIED_KEPT:
                        cache.clear()
                    cache[k] = r
            elif path != r.path or given is not None or r.ident is not None:
                r = ScopeRule(path, r.permission, r.recursive)
            out.append(r)
        if len(out) > 1:  # a rule given twice is held once (the first of equal rules kept)
            # By what ScopeRule's equality compares, (path, permission,
            # recursive), hashed in C: the rules' own hash is a Python call.
            firsts: dict[tuple[str, Permission, bool], ScopeRule] = {}
            for r in out:
                firsts.setdefault((r.path, r.permission, r.recursive), r)
            if len(firsts) < len(out):
                out = list(firsts.values())
        return tuple(out)

    # -- transactions -----------------------------------------------------------

    @property
    def readonly(self) -> bool:
        """Opened with ``readonly=True`` (every change raises
        :class:`ReadOnlyLedger`)."""
        return self._log.readonly

    @property
    def created(self) -> bool:
        """Whether this :meth:`open` made the ledger (``bool``): a new
        directory's log, or on PostgreSQL its schema and tables. ``False``
        when it was there already, whoever made it: of several processes
        opening a missing ledger at once, exactly one sees ``True``
        (``ledger init`` says "created" by it)."""
        return self._log.created

    def _transact(self, build: Callable[..., Any], written: list[Any] | None = None,
                  args: tuple[Any, ...] = ()) -> Any:
        """Run ``build(txn, *args)`` under the lock and append the lines it
        emitted (on PostgreSQL, while no other process appends, first
        without the lock: :meth:`_speculative_part`). (``args``: the hot path's builds are plain functions given
        their values, not closures, whose cells cost more than the call.)
        On PostgreSQL, also tried without the lock first while other
        processes append when the state was just read to the log's end
        (``_fresh``: a waiter decides before it asks, and a change unseen
        long reads first).

        An exception at any point (also a signal handler's, e.g.
        KeyboardInterrupt) leaves the lock free (``store.release`` in
        ``finally`` is a no-op unless this thread still holds it) and the
        in-memory state rebuilt from the log if it may differ. ``written``:
        for a grant, ``(name, token, first seq, lines)`` is put there before
        the append, so that the caller can withdraw a grant it recorded but
        never returned (:meth:`_withdraw`)."""
        store = self._log
        if self._readonly:
            raise ReadOnlyLedger(self.path, "record a change")
        mem = self._mem
        state = self._state
        if state is None or (self._others_active and (self._try_append is None or self._unseen_long())):
            with mem:
                # Fold what other processes appended before taking the lock,
                # so that the lock is held for as little folding as possible.
                state = self._catch_up()
        files = self._files
        after_seq = state.seq
        if files is not None:
            txn = None
            last = state.last_hash
            cut_at = after_seq  # (the line no longer held, when the change is decided again)
            try:
                missed = files.begin(after_seq, self._timeout, self._fold_while_waiting, last,
                                     self._copy_of(after_seq, last))
                self.last_wait = files.last_wait
                result, txn, state = self._locked_part(build, written, after_seq, missed, args)
            except CorruptLedger as exc:
                # The log no longer holds the last line this object folded (a repair cut
                # it; judged under the lock, unless begin let it go), or lines it folded
                # while it waited for the lock: nothing was appended (the lines missed did
                # not follow that line), so the change is decided again on the log as it
                # is now, folded outside the lock.
                with mem:
                    if not isinstance(exc, _CutWhileWaiting) and self._holds_folded(after_seq, last):
                        raise
                cut_at = exc.seq if isinstance(exc, _CutWhileWaiting) and exc.seq else after_seq
            finally:
                if txn is None or not txn.lines:  # (an append that returned let the lock go)
                    files.end()  # a no-op unless this thread still holds the lock (an exception)
            if txn is None:  # (the cut above)
                with mem:
                    self._fold_again(cut_at)
                return self._transact(build, written, args)
        else:
            done, spare = None, None
            fresh, self._fresh = self._fresh, False
            if self._try_append is not None and (fresh or not self._others_active):
                done, spare = self._speculative_part(build, written, state, args)
            if done is not None:
                result, txn, state = done
            else:
                state = self._state
                if state is None or (spare is not None and self._unseen_long()):
                    with mem:  # (a try that applied events, or a log not read for long: as above)
                        state = self._catch_up()
                after_seq = state.seq
                with store.locked(after_seq, self._timeout) as missed:
                    result, txn, state = self._locked_part(build, written, after_seq, missed, args, spare)
            self._seen_at = time.monotonic()
        if txn.lines:  # _snapshot_due(state), inlined (the hot path)
            since = state.seq - self._snap_seq
            if since >= self._snapshot_every and since >= len(state.holders):
                self._maybe_snapshot()
        if txn.error is not None:
            raise txn.error
        return result

    def _locked_part(self, build: Callable[..., Any], written: list[Any] | None, after_seq: int,
                     missed: list[Line], args: tuple[Any, ...],
                     spare: list[int] | None = None) -> tuple[Any, _Txn, State]:
        """:meth:`_transact` with the lock held: fold ``missed``, build,
        append (which lets the lock go), apply the last event."""
        with self._mem:
            state = self._state
            if missed or state is None or state.seq != after_seq:  # (else nothing to fold: no call)
                state = self._fold_locked(after_seq, missed)
            self._others_active = state.seq != self._seq_of_last_txn
            base = state.seq
            txn = _Txn(self, state)
            if spare:
                txn.clock = _replaying(spare, self._clock, state)
            try:
                result = build(txn, *args) if args else build(txn)
                lines = txn.lines
                if lines:
                    after = txn.after
                    if written is not None and after is not None and after[0] is commit_grant:
                        written.append((after[1].name, after[1].token, base + 1, list(lines)))
                    files = self._files
                    if files is not None:
                        files.fsync = self._fsync
                    try:
                        self._log.append(txn.entries, base + 1)
                    except LedgerIOError as exc:
                        if len(lines) > 1 and hasattr(exc, "lines_kept"):
                            raise _partly(exc, lines) from exc.__cause__
                        raise
                    # The lines are in the log and the lock is free: other
                    # processes may go on while this one applies its last
                    # event to its state.
                    if after is not None:
                        after[0](state, *after[1:])
                    if state.seq == base + len(lines):  # (its last line's hash is state.last_hash)
                        self._last_line = (state.seq, state.last_hash, lines[-1])
                self._seq_of_last_txn = state.seq
            except BaseException:
                if txn.lines:
                    self._state = None  # applied but perhaps not written: rebuild from the log
                raise
        return result, txn, state

    def _unseen_long(self) -> bool:
        """On a server store: whether this object's last change is more
        than ``_PREREAD_AFTER_S`` ago. The store reads the lines missed in
        the lock's own round trip, so reading them first costs a round trip
        of its own, which pays only when they may be many (a change that
        folds them under the lock holds it that much longer): while changes
        follow each other, as under contention, the lines missed while
        queueing for the lock are read with it anyway."""
        return time.monotonic() - self._seen_at > _PREREAD_AFTER_S

    def _speculative_part(self, build: Callable[..., Any], written: list[Any] | None, state: State,
                          args: tuple[Any, ...]) -> tuple[tuple[Any, _Txn, State] | None, list[int] | None]:
        """:meth:`_transact` in one round trip, for a store that has
        ``try_append`` (PostgreSQL), while no other process has appended
        lately: build on the state as folded, without the lock, and append
        only if the lock is free and the log still ends at the state's seq
        (the store checks both under the lock, on the server): then the
        lines are those the locked path would have appended, decided on
        the same log: ``((result, txn, state), None)``. ``(None, clock
        readings)`` when that was not so, or when the
        transaction appends nothing (an answer that records nothing is
        given on the log as it is: under the lock): nothing was
        appended, and :meth:`_transact` takes the lock and decides again
        (on a state rebuilt from the log if this one had events applied);
        so too when ``build`` raises an ``Exception`` (a KeyboardInterrupt
        goes through). The clock readings it took are used again there
        (while none is earlier than an event folded since: a line's ts
        stays its writer's reading during the call, and the clock is read
        as often as on a file)."""
        try_append = self._try_append
        assert try_append is not None
        with self._mem:
            if self._state is not state:  # dropped or reloaded meanwhile
                return None, None
            base = state.seq
            txn = _Txn(self, state)
            try:
                result = build(txn, *args) if args else build(txn)
            except Exception:
                # Decided on this state, which the log may have passed (a
                # holder unknown here may have been registered since):
                # decided again under the lock, which raises it if it holds.
                if state.seq != base:
                    self._state = None  # applied, not written: rebuild from the log
                _unwritten(txn)
                return None, _readings(txn)
            except BaseException:
                if state.seq != base:
                    self._state = None
                raise
            lines = txn.lines
            if not lines:
                if state.seq != base:
                    self._state = None
                return None, _readings(txn)
            after = txn.after
            grant = None
            if written is not None and after is not None and after[0] is commit_grant:
                grant = (after[1].name, after[1].token, base + 1, list(lines))
                written.append(grant)
            try:
                appended = try_append(txn.entries, base + 1)
            except BaseException:
                self._state = None  # applied but perhaps not written: rebuild from the log
                raise
            if not appended:
                if grant is not None and written is not None:
                    written.pop()  # not recorded: nothing to withdraw
                if state.seq != base:
                    self._state = None
                self._others_active = True
                _unwritten(txn)
                return None, _readings(txn)
            try:
                if after is not None:
                    after[0](state, *after[1:])
                self._seq_of_last_txn = state.seq
            except BaseException:
                self._state = None
                raise
        return (result, txn, state), None

    def _withdraw(self, written: list[Any]) -> None:
        """After an exception left a grant's call (``written``, from
        :meth:`_transact`): if its line is in the log, the caller never saw
        the grant: record its release (by token), so that the log agrees
        with what the caller saw. Never raises (a failure is a warning)."""
        if not written:
            return
        name, token, seq, lines = written[0]
        try:
            if [line for _, line in self._log.read_after(seq - 1, limit=len(lines))] != lines:
                return  # not recorded
            with self._mem:
                self._state = None  # it may be half applied: rebuild from the log
            self.release(name, token=token)
            log.warning("withdrew the grant of holder %r (token %d): its call was interrupted "
                        "before it returned", name, token)
        except UnknownHolder:
            pass
        except Exception as exc:  # noqa: BLE001 - the caller's exception is the one to raise
            log.warning("could not withdraw the grant of holder %r (token %d), whose call was "
                        "interrupted before it returned: %s", name, token, exc)

    def _liveness(self, txn: _Txn, name: str, probe: Probe | None = None) -> Verdict:
        lv = txn.liveness.get(name)
        if lv is None:
            lv = txn.liveness[name] = self._verdict(txn.state.holders[name], probe)
        return lv

    def _verdict(self, alloc: Allocation, probe: Probe | None = None,
                 sessions: dict[int, Verdict] | None = None,
                 ages: dict[int, int | None] | None = None) -> Verdict:
        """Whether holder ``alloc`` is alive: its process's verdict (by
        ``probe``, default the ledger's) and its lease's (``_lease``: on
        the store's clock where it has one, PostgreSQL's; ``ages``: the
        ages of last renewals asked already, :meth:`_lease_ages`). On
        PostgreSQL, a holder on another host carrying a client session is
        judged by its session (``scopeledger._sessions``; ``sessions``: the
        verdicts on sessions asked already) instead of its process."""
        judge = self._sessions
        lease = alloc.lease
        if judge is not None:
            sid = alloc.process.session
            if sid is not None and on_another_host(alloc.process, host_id(), boot_id()):
                if lease is None:
                    return judge.verdict(sid, sessions)
                return holder_verdict(lease, lambda: judge.verdict(sid, sessions), self._boottime(),
                                      host_id(), boot_id(), lambda: self._lease_age(lease, ages))
        fn = probe or self._probe
        if lease is None:
            return run_probe(fn, alloc.process, self._boot_spans)
        return holder_verdict(lease, lambda: run_probe(fn, alloc.process, self._boot_spans),
                              self._boottime(), host_id(), boot_id(), lambda: self._lease_age(lease, ages))

    def _lease_ages(self, holders: Iterable[Allocation]) -> dict[int, int | None]:
        """How long ago the last renewal of each leased holder of
        ``holders`` was appended, by the store's clock, in one question to
        the store (``LogStore.appended_ago``; PostgreSQL: one query):
        ``{renewed_seq: ns}``, ``None`` for each the store cannot say (no
        clock of its own, a line from before the server recorded it, or the
        server cannot be asked: the lease is then judged on the boot-time
        clock, ``_lease.lease_verdict``)."""
        return self._ages([a.lease.renewed_seq for a in holders if a.lease is not None])

    def _ages(self, seqs: list[int]) -> dict[int, int | None]:
        """:meth:`_lease_ages` of the lines ``seqs``."""
        if not seqs:
            return {}
        try:
            got = self._log.appended_ago(seqs)
        except LedgerError as exc:
            log.warning("could not read the server's clock to judge leases (%s): judged on the boot-time "
                        "clock of the host that renewed them", exc)
            got = None
        if got is None:
            return dict.fromkeys(seqs)
        return {q: got.get(q) for q in seqs}

    def _lease_age(self, lease: Lease, ages: dict[int, int | None] | None) -> int | None:
        """How long ago ``lease``'s last renewal was appended by the
        store's clock: from ``ages`` (:meth:`_lease_ages`) when it was asked
        there, else asked now; ``None`` when the store cannot say."""
        seq = lease.renewed_seq
        if ages is None or seq not in ages:
            ages = self._ages([seq])
        return ages[seq]

    def _check(self, txn: _Txn, name: str, rules: tuple[ScopeRule, ...], parent: str | None,
               commit: Callable[[], None] | None = None) -> Exception | None:
        """check_request, reclaiming dead holders that stand in the way. A
        waiter's ``commit`` (``scopeledger._wait.Commit``) may judge a holder
        in the way otherwise than its verdict (``stand_back``: a waiter stands
        back a moment for an exited holder whose parent lives, to record its
        release); its reclaim, if any, records the verdict itself."""
        stand_back = getattr(commit, "stand_back", None) if commit is not None else None
        return decide(txn.state, name, rules, parent, _standing_back(txn.state, txn.verdict, stand_back), txn.reclaim)

    # -- mutations -------------------------------------------------------------

    def register(self, name: str, rules: Sequence[ScopeRule] | ScopeRule, pid: int | None = None,
                 *, socket: str | None = None, wait: float = 0, note: str | None = None,
                 advisory: bool = False, ttl: float | None = None, lease_only: bool = False,
                 on_wait: Callable[[str, Refused | None], object] | None = None) -> Allocation:
        """Register a top-level holder.

        Args:
            name: holder name (see :func:`check_name`).
            rules: one or more :class:`ScopeRule` (or ``(path, permission[,
                recursive])`` tuples). Paths are canonicalised first.
            pid: process to bind to; ``None`` is the calling process.
            socket: the socket path the runtime exposes for it, if any.
            wait: seconds to wait while the request is refused only because
                of other holders in the way (a :class:`ScopeConflict`),
                a real number from 0 to 1e9, ``math.inf`` for ever; ``0`` (the
                default) refuses at once. Waiters are served first come,
                first served (``scopeledger._wait``: its docstring says
                how); woken when the log changes or a holder's process in
                the way exits. On PostgreSQL a waiter rides out the
                server being unreachable (``StoreUnavailable``: a restart,
                a broken link), trying again with a backoff of 0.05 s
                doubling to 1 s, with one warning logged, until its
                deadline, and joins the queue again at its end (see
                ``Raises``). With ``advisory=True`` nothing is waited
                for (see ``advisory``).
            note: why the scope is asked for, in the requester's words
                (``str``, 1 to 4096 characters), recorded with the grant
                (``holder.note``).
            advisory: ``True`` grants the request even where it conflicts
                with live holders (for tools that warn rather than deny),
                recording each conflict on the grant (``holder.advisory``:
                owner chain, its rule, the requested rule); the allocation is marked
                ``advisory``. A taken name, or (``delegate``) a rule outside
                the parent's scope, is still refused. An advisory request
                never waits, whatever ``wait`` says: it is granted at once
                with its conflicts recorded (what a waiter waits for, a
                conflict, does not refuse it; what refuses it is refused at
                once, as with ``wait``). ``wait`` is still checked, and the
                request takes no place in the waiters' queue (it may be
                granted ahead of waiters, as a request without ``wait`` may).
                Default ``False``.
            ttl: a lease of this many seconds (a real number from 0.1
                to 10**9, :data:`scopeledger.TTL_RANGE`): the holder must be :meth:`renew`-ed within it
                (:meth:`keep_renewed` does so every ttl/3), or it is
                reclaimed as ``lease_expired`` once ttl + grace (max(1 s,
                ttl/10)) have passed since its last renewal on the ledger's
                clock: on PostgreSQL the server's, from any host; on a
                directory the boot-time clock of the boot that last renewed
                it (from another host or boot: unknown, never reclaimed);
                its own :meth:`check` turns false at ttl, by its own
                boot-time clock (``scopeledger._lease`` says how the clocks
                are read). ``None`` (the default): no lease.
            lease_only: with ``ttl``, bind the holder to the lease alone
                (its process, ``pid``, is recorded as who asked but not
                judged); without it a leased holder is bound to both (dead
                when either says so).
            on_wait: with ``wait``, called once, in the calling thread,
                when the request starts waiting (refused by holders in the
                way, or standing behind an earlier waiter, and in the
                waiters' queue), as ``on_wait(reason, refusal)``:
                ``reason`` (``str``) says why it waits (as
                :class:`WaitTimeout` would), ``refusal`` is the
                :class:`ScopeConflict` or :class:`DelegationError` met, or
                ``None`` behind an earlier waiter. It takes the place of
                the ``INFO`` record ``holder 'NAME' waits ... for its
                scope: ...`` logged without it (a program that tells its
                user itself: ``ledger run``'s notice). Not called when the
                request is granted (or refused for good) without waiting.
                What it raises ends the wait (nothing is granted; the
                exception goes on). ``None`` (the default): the log record.

        Returns:
            The :class:`Allocation`; its ``token`` is the granting seq.

        Raises:
            InvalidHolderName: ``name`` is not a holder name.
            InvalidScope: bad ``rules`` (not a non-empty list of rules; a
                bad path, permission or ``recursive`` flag, also once
                symlinks are resolved; more than
                ``MAX_RULES_PER_REQUEST``, 10,000), or ``socket`` neither ``None`` nor
                an absolute UTF-8 path without NUL, under 4096 bytes.
            InvalidProcess: ``pid`` is not an integer from 1 to 2**31-1
                (an ``int``, an ``IntEnum``, a ``numpy.int64``; not a
                ``bool``, not a float) or names no process.
            DuplicateHolder: a live holder has this name.
            ScopeConflict: a write rule overlaps a live holder's write or
                exclusive read rule, or an exclusive read rule a live
                holder's write rule (holders outside one line of delegation);
                holders in the way whose process is dead are reclaimed
                first. The refusal is recorded once.
            WaitTimeout: with ``wait`` (and not ``advisory``), not granted
                within ``wait`` seconds (it is never granted afterwards).
            StoreUnavailable: (PostgreSQL) the server cannot be reached;
                with ``wait``, only when it still could not be reached when
                the deadline passed (nothing is granted afterwards). An
                :class:`InDoubt` append is never tried again: it is raised.
            TypeError, ValueError: ``wait`` is not ``math.inf`` or a number
                of seconds from 0 to 1e9 (the message names it); ``note``
                is not a ``str`` of 1 to 4096 characters that UTF-8 can
                encode; ``on_wait`` is neither ``None`` nor a plain callable
                taking ``(reason, refusal)``.
            InvalidArgument: ``advisory`` is not a ``bool``.
            InvalidLease: ``ttl`` is not a number of seconds from 0.1 to
                10**9 (the message names it); ``lease_only`` without ``ttl``.
        """
        if advisory is not False:
            check_advisory(advisory)
            check_wait(wait)  # an advisory request never waits; a bad wait is still refused
        if on_wait is not None:
            check_callable("on_wait", on_wait, ("reason", "refusal"))
        if (wait != 0 if type(wait) in (int, float) else asks_to_wait(wait)) and not advisory:  # (int, float inlined)
            return self._register_waiting(name, rules, pid, socket, wait, note, ttl, lease_only, on_wait)
        written: list[Any] = []
        try:
            return self._register(name, rules, pid, socket, written, None, note, advisory, ttl=ttl,
                                  lease_only=lease_only)
        except BaseException:
            self._withdraw(written)
            raise

    def _register_waiting(self, name: str, rules: Any, pid: int | None, socket: str | None, wait: Any,
                          note: str | None, ttl: Any, lease_only: Any,
                          on_wait: Callable[[str, Refused | None], object] | None) -> Allocation:
        """:meth:`register` with ``wait`` (a method of its own: variables its
        lambdas use would be cells, made in every call of ``register``)."""
        with first_use:
            from ._wait import wait_for_grant, Request

        req = Request.of(self, name, rules, None, None, wait)
        written: list[Any] = []  # the last attempt's grant, once it is being written
        try:
            return wait_for_grant(self, req, register_attempt(self, name, rules, pid, socket, note, False, ttl,
                                                              lease_only, written), self._log.tickets(), on_wait)
        except BaseException:
            self._withdraw(written)  # granted, then interrupted before this call returned it
            raise

    def _attempt(self, grant: Callable[[list[Any]], Allocation], written: list[Any] | None = None) -> Allocation:
        """``grant(written)``, withdrawing a grant whose call raised after
        its line was written (as :meth:`register` does). ``written``: a
        list the caller keeps (emptied first), which holds the grant being
        written, and still holds it once this returned: so that a waiting
        call interrupted after this attempt returned withdraws it too."""
        if written is None:
            written = []
        else:
            written.clear()
        try:
            return grant(written)
        except BaseException:
            self._withdraw(written)
            written.clear()  # (withdrawn, or not recorded: nothing for the caller to withdraw again)
            raise

    def _register(self, name: str, rules: Any, pid: int | None, socket: str | None,
                  written: list[Any], commit: Callable[[], None] | None = None,
                  note: str | None = None, advisory: bool = False, ttl: Any = None,
                  lease_only: Any = False) -> Allocation:
        name = check_name(name)
        if note is not None:
            note = check_note(note)
        lease = None if ttl is None and lease_only is False else _lease_request(ttl, lease_only)
        if socket is not None:
            socket = check_socket(socket)
        rules_t = self._prepare(rules)
        # The calling process (None) is the transaction's writer: its
        # identity comes with the lock (no getpid() of its own here); on
        # PostgreSQL it carries the ledger's session, so it is asked here.
        ident = self._identity(pid) if pid is not None or self._sessions is not None else None
        granted: Allocation = self._transact(  # (not cast(): a call at run time)
            _build_grant, written, ("registered", name, rules_t, None, None, False, commit, advisory, ident, socket,
                                    note, lease))
        return granted

    def delegate(self, parent: str, child: str, rules: Sequence[ScopeRule] | ScopeRule,
                 pid: int | None = None, *, reserved: bool = False,
                 socket: str | None = None, parent_token: int | None = None,
                 wait: float = 0, note: str | None = None, advisory: bool = False, ttl: float | None = None,
                 lease_only: bool = False,
                 on_wait: Callable[[str, Refused | None], object] | None = None) -> Allocation:
        """Delegate part of ``parent``'s effective scope to a new holder.

        Every rule must be fully covered by one of the parent's rules
        (:func:`scopeledger.covers`); a write rule must also not overlap a
        write rule the parent already delegated to another live child.

        Args:
            parent: live holder delegating.
            child: new holder name.
            rules: the child's rules.
            pid: the child's process; ``None`` is the calling process.
            reserved: reserve the scope before the child process exists:
                the allocation is bound to ``pid`` (default: the calling
                process, the spawner) and marked reserved until the child
                calls :meth:`attach`. If the spawner dies first, it is
                reclaimed like any other.
            socket: the socket path the runtime exposes for it, if any.
            parent_token: if given, delegate only from this exact grant of
                ``parent`` (its token): a parent released and granted again
                under the same name is another grant.
            wait: as :meth:`register`: waits while a sibling's write rule
                is in the way (a :class:`DelegationError` naming it); a rule
                outside the parent's scope is refused at once.
            note: as :meth:`register`.
            advisory: as :meth:`register`: a sibling's rule in the way is
                recorded instead of refusing (at once, whatever ``wait``
                says); a rule outside the parent's scope is still refused.
            ttl, lease_only: as :meth:`register` (a child's lease is its
                own: the parent's does not renew it).
            on_wait: as :meth:`register`.

        Raises:
            UnknownHolder: ``parent`` is not live, or is live with another
                grant than ``parent_token`` (the message says which).
            DelegationError: a rule is outside the parent's effective scope
                or overlaps a sibling's write rule.
            WaitTimeout, StoreUnavailable: as :meth:`register` (never
                ``WaitTimeout`` with ``advisory``).
            InvalidHolderName: ``parent`` or ``child`` is not a holder name.
            TypeError: ``reserved`` is not a ``bool``; ``parent_token`` is
                neither an integer (an ``int``, an ``IntEnum``, a
                ``numpy.int64``; not a ``bool``, not a float) nor ``None``;
                ``on_wait`` is neither ``None`` nor a plain callable taking
                ``(reason, refusal)``.
            InvalidArgument: ``parent_token`` is below 1 (no grant's seq).
            DuplicateHolder, InvalidScope, InvalidProcess, InvalidArgument, InvalidLease: as register.
        """
        if advisory is not False:
            check_advisory(advisory)
            check_wait(wait)  # an advisory request never waits; a bad wait is still refused
        if on_wait is not None:
            check_callable("on_wait", on_wait, ("reason", "refusal"))
        if (wait != 0 if type(wait) in (int, float) else asks_to_wait(wait)) and not advisory:  # (int, float inlined)
            return self._delegate_waiting(parent, child, rules, pid, reserved, socket, parent_token, wait,
                                          note, ttl, lease_only, on_wait)
        written: list[Any] = []
        try:
            return self._delegate(parent, child, rules, pid, reserved, socket, parent_token, written, None, note,
                                  advisory, ttl=ttl, lease_only=lease_only)
        except BaseException:
            self._withdraw(written)
            raise

    def _delegate_waiting(self, parent: str, child: str, rules: Any, pid: int | None, reserved: bool,
                          socket: str | None, parent_token: int | None, wait: Any, note: str | None,
                          ttl: Any, lease_only: Any,
                          on_wait: Callable[[str, Refused | None], object] | None) -> Allocation:
        """:meth:`delegate` with ``wait`` (as :meth:`_register_waiting`)."""
        with first_use:
            from ._wait import wait_for_grant, Request

        req = Request.of(self, child, rules, parent, parent_token, wait)
        written: list[Any] = []
        try:
            return wait_for_grant(self, req, delegate_attempt(self, parent, child, rules, pid, reserved, socket,
                                                              parent_token, note, False, ttl, lease_only, written),
                                  self._log.tickets(), on_wait)
        except BaseException:
            self._withdraw(written)
            raise

    def _delegate(self, parent: str, child: str, rules: Any, pid: int | None, reserved: bool,
                  socket: str | None, parent_token: int | None, written: list[Any],
                  commit: Callable[[], None] | None = None, note: str | None = None,
                  advisory: bool = False, ttl: Any = None, lease_only: Any = False) -> Allocation:
        parent = check_name(parent, "parent")
        if note is not None:
            note = check_note(note)
        lease = None if ttl is None and lease_only is False else _lease_request(ttl, lease_only)
        child = check_name(child, "child")
        if type(reserved) is not bool:
            check_bool("reserved", reserved)
        if parent_token is not None and (type(parent_token) is not int or parent_token < 1):
            parent_token = check_token(parent_token, allow_none=True, what="parent_token")
        if socket is not None:
            socket = check_socket(socket)
        rules_t = self._prepare(rules)
        ident = (self._identity(pid) if pid is not None or self._sessions is not None
                 else None)  # None: the writer (as _register)

        granted: Allocation = self._transact(  # (not cast(): a call at run time)
            _build_grant, written, ("delegated", child, rules_t, parent, parent_token, reserved, commit, advisory,
                                    ident, socket, note, lease))
        return granted

    def attach(self, name: str, pid: int | None = None, token: int | None = None) -> Allocation:
        """Bind a (reserved) allocation to process ``pid`` (default: the
        calling process) and clear ``reserved``.

        Args:
            name: live holder.
            pid: the process to bind it to; ``None`` is the calling process.
            token: the grant's token (:attr:`Allocation.token`): attach only
                while this exact grant is live. Pass it: without it, a
                process that lost its grant would take over a newer grant
                of the same name.

        Raises:
            UnknownHolder: ``name`` is not live, or is live with another
                grant than ``token`` (the message says which).
            InvalidHolderName: ``name`` is not a holder name.
            InvalidProcess: ``pid`` is not an integer from 1 to 2**31-1
                (an ``int``, an ``IntEnum``, a ``numpy.int64``; not a
                ``bool``, not a float) or names no process.
            TypeError: ``token`` is neither an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a
                float) nor ``None``.
            InvalidArgument: ``token`` is below 1 (no grant's seq).
        """
        name = check_name(name)
        token = check_token(token, allow_none=True)
        ident = self._identity(pid)

        def build(txn: _Txn) -> Allocation:
            stale = stale_grant(txn.state, name, token)
            if stale is not None:
                raise stale
            txn.emit("attached", name=name, process=ident.to_json())
            return txn.state.holders[name]

        renewed: Allocation = self._transact(build)
        return renewed

    def release(self, name: str, token: int | None = None, *, returncode: int | None = None,
                note: str | None = None, force: bool = False, reason: str | None = None) -> list[str]:
        """Release holder ``name``: its children are re-parented to its
        parent (to top level if it had none) and its scope returns to its
        parent, or opens up.

        Args:
            name: live holder.
            token: if given, release only while this exact grant is live.
            returncode: how the holder's process ended, recorded with the
                release: ``subprocess``'s convention, an exit status 0-255,
                or ``-N`` when signal N (1-127) killed it (``exit_code`` /
                ``exit_signal`` in the event); ``None``: not recorded.
            note: why, in the releaser's words (``str``, 1 to 4096
                characters; recorded as ``note``).
            force: ``True`` when someone other than the holder releases it
                (an operator, a supervisor taking a scope back), usually
                without its token; needs ``reason``. The event records the
                reason (``forced``) and, as every event, who wrote it (its
                ``actor``: this process). The holder learns it: its
                :meth:`check` turns ``False``, and
                :meth:`AsyncLedger.until_lost <scopeledger.AsyncLedger.until_lost>`
                returns this event. With ``token``, only that grant is
                released, as without ``force``.
            reason: why it was forced (``str``, 1 to 4096 characters); only
                with ``force``.

        Returns:
            The names of the re-parented children, ``list[str]``.

        Raises:
            UnknownHolder: ``name`` is not live, or is live with another
                grant than ``token`` (the message says which).
            InvalidHolderName: ``name`` is not a holder name.
            TypeError: ``token`` is neither an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a
                float) nor ``None``; ``returncode`` not an integer or
                ``None``; ``note`` not a
                ``str`` or ``None``.
            ValueError: ``returncode`` outside -127..255; ``note`` empty or longer
                than 4096 characters or not encodable (a lone surrogate).
                Nothing is recorded.
            InvalidArgument: ``token`` below 1 (no grant's seq);
                ``force`` not a ``bool``; ``force`` without a
                ``reason``, or a ``reason`` without ``force``; ``reason``
                not a ``str`` of 1 to 4096 characters UTF-8 can encode.
                Nothing is recorded.
        """
        name = check_name(name)
        if token is not None and (type(token) is not int or token < 1):
            token = check_token(token, allow_none=True)
        # (defaults skip the checks' calls: the hot path)
        extras = _release_extras(returncode, note) if returncode is not None or note is not None else {}
        forced = check_forced(force, reason) if force is not False or reason is not None else None
        if forced is not None:
            extras["forced"] = forced

        children: list[str] = self._transact(_build_released, None, (name, token, extras))
        return children

    def renew(self, name: str, token: int, ttl: float | None = None) -> Allocation:
        """Renew the lease of grant ``(name, token)``: it lasts ``ttl``
        seconds (default: its ttl so far) from now, on the ledger's clock
        (``scopeledger._lease`` says how it is judged): on PostgreSQL from
        the server's time of the ``renewed`` line, whichever host renews;
        on a directory from this process's boot-time clock, which the
        ``renewed`` event records (renewing from another host or boot
        moves the lease onto that boot's clock). The holder's own
        :meth:`check` counts the ttl from that boot-time reading, taken
        before the line was sent.

        Args:
            name: a live holder granted with ``ttl``.
            token: its grant's token (:attr:`Allocation.token`).
            ttl: the new ttl in seconds (a real number from 0.1 to
                10**9, :data:`scopeledger.TTL_RANGE`), or ``None`` to keep it.

        Returns:
            The :class:`Allocation` as renewed (``lease.renewed_seq`` is
            the ``renewed`` event's seq).

        Raises:
            UnknownHolder: ``name`` is not live, or is live with another
                grant than ``token``; nothing is recorded.
            LeaseExpired: (an :class:`UnknownHolder`) its lease had run out
                (past ttl + grace, on the ledger's clock: on PostgreSQL
                the server's) before this call: the call records its
                reclaim (``lease_expired``) instead, as any reclaim would.
            InvalidLease: a bad ``ttl``, or the holder has no lease.
            InvalidHolderName: ``name`` is not a holder name.
            TypeError: ``token`` is not an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a
                float).
            InvalidArgument: ``token`` is below 1 (no grant's seq).
        """
        name = check_name(name)
        token = check_token(token)
        ttl_ns = check_ttl(ttl) if ttl is not None else None

        def build(txn: _Txn) -> Allocation | None:
            stale = stale_grant(txn.state, name, token)
            if stale is not None:
                raise stale
            alloc = txn.state.holders[name]
            if alloc.lease is None:
                raise InvalidLease(f"holder '{name}' has no lease to renew (it was granted without a ttl)")
            clock = _boot_reading(self._boottime)
            lease, here, boot = alloc.lease, host_id(), boot_id()
            if judge_lease(lease, clock.get("boot_ns"), here, boot, grace=False).liveness is Liveness.ALIVE:
                # Within its ttl by the clock of the boot that last renewed it,
                # this one (the holder renewing in time, the usual case): within
                # ttl + grace on the server's too (_lease: the server's time of a
                # line is after its boot-time reading), so it is not asked.
                verdict, ages = Verdict(Liveness.ALIVE, ""), None
            else:
                ages = self._lease_ages((alloc,))  # (PostgreSQL: the server's clock, one query)
                verdict = lease_verdict(lease, ages[lease.renewed_seq], clock.get("boot_ns"), here, boot)
            if verdict.dead:
                # Reclaimed for the reason any reclaim records: its process's first
                # (a holder whose process is also dead), else its lease's.
                holder = self._verdict(alloc, None, None, ages)
                proof = holder if holder.dead else verdict
                txn.reclaim(name, proof.liveness.value, proof)
                txn.error = LeaseExpired(name, verdict.why)
                return None
            txn.emit("renewed", name=name, token=token,
                     ttl_ns=ttl_ns if ttl_ns is not None else lease.ttl_ns, **clock)
            return txn.state.holders[name]

        renewed: Allocation = self._transact(build)
        return renewed

    def keep_renewed(self, name: str, token: int, ttl: float | None = None, *,
                     on_lost: Callable[[BaseException], Any] | None = None) -> "Renewer":
        """Renew grant ``(name, token)``'s lease in a background thread
        every ttl/3 (``ttl``: as :meth:`renew`) until the returned
        :class:`scopeledger._lease.Renewer` is stopped (``stop()``, or
        ``with ledger.keep_renewed(...):``). If the grant is gone (released,
        reclaimed, expired) the thread ends and ``on_lost(error)`` is called
        in it; other failures are logged and retried at the next beat.

        Raises:
            UnknownHolder: ``name`` is not live with ``token``.
            InvalidLease: it has no lease, or a bad ``ttl``.
            TypeError: ``on_lost`` is not a plain callable taking ``(error)``;
                ``token`` as :meth:`renew`.
            InvalidArgument: ``token`` as :meth:`renew`.
        """
        with first_use:
            from ._lease import Renewer

        return Renewer(self, name, token, ttl, on_lost)

    def watch_grant(self, name: str, token: int,
                    on_lost: Callable[[Event | None], object]) -> "GrantWatch":
        """Learn, in a background thread, when grant ``(name, token)`` ends
        while its holder works: ``on_lost(event)`` is called once, in that
        thread, with the :class:`Event` that ended it: ``released``
        (``event.actor`` says by whom; ``event.data["forced"]`` is the
        reason of a forced release, ``ledger release --force``) or
        ``reclaimed`` (``event.data["reason"]``: ``"lease_expired"``, a
        lost client session's, or a process death's), or with ``None``
        when the log holds no grant of ``name`` at seq ``token`` (its line
        cut by :meth:`repair`, the log replaced; or never granted so). It
        is called at once when the grant had ended before this call.

        Woken by the store's change notification (inotify on a
        directory's log, LISTEN on PostgreSQL: one instance or connection
        per process and ledger object, however many watches; where there is
        none, a network file system, it looks every 0.5 s), it reads only the lines
        appended since its last look and decodes only those that name the
        holder: it folds nothing and keeps no state but its place in the
        log, so a process that dropped its folded state (:meth:`unload`)
        stays small while it watches. On a directory each look reads the
        last line it read again: changed or gone (the log cut by a repair
        since its last look, whatever its length now), it reads the grant's
        line again, and a cut after the grant's line only is followed from
        there, any number of times (``scopeledger._grantwatch`` says more;
        PostgreSQL's server refuses to cut lines). What the log does
        not say is not seen here: a lease that ran out by the holder's own
        clock (:meth:`check`; the renewer, :meth:`keep_renewed`, learns it
        at its next renewal), or a client session lost on PostgreSQL
        (``on_session_lost``), until a reclaim is recorded.

        Returns a :class:`GrantWatch`: ``stop()`` (or ``with``) ends it;
        once ``stop()`` has returned, ``on_lost`` is not called. The thread
        is a daemon; it does not exist in a forked child.

        Raises:
            InvalidHolderName: ``name`` is not a holder name.
            TypeError: ``token`` is not an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a
                float), or ``on_lost`` is not a plain callable taking
                ``(event)`` (``None`` and an ``async def`` are not).
            InvalidArgument: (a ``ValueError``) ``token`` is below 1.
        """
        name = check_name(name)
        token = check_token(token)
        if on_lost is None:
            raise TypeError("on_lost must be a callable, not None")
        check_callable("on_lost", on_lost, ("event",))
        with first_use:
            from ._grantwatch import GrantWatch

        return GrantWatch(self._log, self._mem, self._log_where, name, token, on_lost)

    def reclaim_stale(self, probe: Probe | None = None, *, dry_run: bool = False) -> list[str]:
        """Reclaim every holder whose process is provably gone; the names,
        ``list[str]``, in order. :meth:`reclaim` says what it did and why
        (and why each holder it kept was kept); this is its list of names.

        Raises:
            as :meth:`reclaim`.
        """
        return [r.name for r in self.reclaim(probe, dry_run=dry_run).reclaimed]

    def reclaim(self, probe: Probe | None = None, *, dry_run: bool = False) -> ReclaimReport:
        """Reclaim every holder whose process is provably gone: exited, a
        zombie, its pid reused (a later start), from an earlier boot of this
        host, or its PID namespace gone; or whose lease expired (on
        PostgreSQL by the server's clock, one query for all); or, on
        PostgreSQL, a holder of another host whose client session is dead
        (``session_closed``, ``lease_expired``, ``session_lock_gone``, on
        the server's clock: ``scopeledger._sessions``). Each is removed like a release
        (children re-parented) with the reason recorded, and for a zombie
        how its process ended (``exit_code`` or ``exit_signal``, as a
        release records it) when the probe read it from the zombie
        (:attr:`Verdict.returncode`: the default probe only from a zombie
        proven to be the holder's process whose status the kernel shows
        this process; :attr:`Reclaimed.returncode`). A holder whose
        liveness cannot be decided (another host without a session, another PID namespace
        that still exists, /proc unreadable, ...) is kept, and the report
        says why.

        The sweep probes outside the lock, then re-probes only the suspects
        under it.

        Args:
            probe: liveness probe for this call (the seed's
                ``reclaim_stale_with``); default the ledger's.
            dry_run: report, record nothing (``seq`` is ``None``; the
                re-parenting is as if each were reclaimed in turn).

        Returns:
            :class:`ReclaimReport`.

        Raises:
            TypeError: ``probe`` is neither ``None`` nor a plain callable
                taking ``(process)``, or
                ``dry_run`` is not a ``bool`` (before anything is probed or
                recorded).
            PartlyRecorded: the disk filled up part way: its ``recorded``
                and ``not_recorded`` say which reclaims are in the log.
        """
        check_callable("probe", probe, ("process",))
        check_bool("dry_run", dry_run)
        fn = probe if probe is not None else self._probe
        with self._mem:
            state = self._catch_up()
            snapshot = list(state.holders.values())
            if dry_run:
                state = state.copy()
        known = self._session_verdicts(snapshot)
        ages = self._lease_ages(snapshot)
        verdicts = {a.name: self._verdict(a, fn, known, ages) for a in snapshot}
        suspects = [a for a in snapshot if verdicts[a.name].dead]

        def kept() -> tuple[tuple[str, Verdict], ...]:
            return tuple((a.name, verdicts[a.name]) for a in snapshot if not verdicts[a.name].dead)

        if not suspects:
            return ReclaimReport((), kept())
        if dry_run:
            out = []
            for a in suspects:
                v = verdicts[a.name]
                plan = reparent_plan(state, a.name)
                out.append(Reclaimed(a.name, v.liveness.value, v.why, a.pid, None,
                                     tuple((c, p) for c, p in plan), last_seen_ns(a),
                                     holder_returncode(v, a)))
                commit_removal(state, a.name, state.seq + 1, state.last_ts, state.last_hash)
            return ReclaimReport(tuple(out), kept())

        def build(txn: _Txn) -> tuple[Reclaimed, ...]:
            out = []
            # The suspects judged again under the lock: their sessions and
            # leases asked of the server once for all of them (PostgreSQL).
            again = [cur for a in suspects if (cur := txn.state.holders.get(a.name)) is not None]
            known_now = self._session_verdicts(again)
            ages_now = self._lease_ages(again)
            for a in suspects:
                cur = txn.state.holders.get(a.name)
                if cur is None or cur.token != a.token or cur.process != a.process:
                    del verdicts[a.name]  # released or granted again meanwhile: not ours to report
                    continue
                v = txn.liveness.get(a.name)
                if v is None:
                    v = txn.liveness[a.name] = self._verdict(cur, fn, known_now, ages_now)
                verdicts[a.name] = v
                if v.dead:
                    seen = last_seen_ns(cur)
                    seq, plan = txn.reclaim(a.name, v.liveness.value, v)
                    out.append(Reclaimed(a.name, v.liveness.value, v.why, a.pid, seq,
                                         tuple((c, p) for c, p in plan), seen, holder_returncode(v, cur)))
            return tuple(out)

        done = self._transact(build)
        return ReclaimReport(done, tuple((a.name, verdicts[a.name]) for a in snapshot
                                         if a.name in verdicts and not verdicts[a.name].dead))

    def decide(self, name: str | None, rules: Sequence[ScopeRule] | ScopeRule, *,
               parent: str | None = None, parent_token: int | None = None) -> Decision:
        """How :meth:`register` (``parent`` ``None``) or :meth:`delegate`
        would decide this request now, by the same rule: holders in the way
        (the conflicting chain, a sibling's subtree, the name's holder)
        whose process the ledger's probe proves dead count as reclaimed
        first. Records nothing and takes no lock (what ``ledger check`` and
        ``ledger run``'s waiting ask). The answer may be stale as soon as it
        is given: another process may change the ledger meanwhile.

        Args:
            name: the holder name asked for; ``None`` checks the rules only
                (no name is taken; messages call the requester ``'(check)'``).
            rules: as :meth:`register`.
            parent: ask as a delegation from this live holder.
            parent_token: as :meth:`delegate` (a ``TypeError`` without
                ``parent``).

        Returns:
            :class:`Decision`.

        Raises:
            UnknownHolder: ``parent`` is not live, or is live with another
                grant than ``parent_token`` (as :meth:`delegate` raises it).
            InvalidHolderName, InvalidScope, TypeError, InvalidArgument: as
                :meth:`delegate` (nothing is probed).
        """
        return self._decide(name, rules, parent=parent, parent_token=parent_token)

    def _decide(self, name: str | None, rules: Sequence[ScopeRule] | ScopeRule, *, parent: str | None = None,
                parent_token: int | None = None,
                stand_back: Callable[[Allocation, Verdict], Verdict] | None = None) -> Decision:
        """:meth:`decide`, each holder in the way judged by
        ``stand_back(holder, verdict)`` (``None``: its verdict): a waiter's
        look (``scopeledger._wait.one_round``), judged as its grant will be
        under the lock (:meth:`_check`, the same hook).

        Raises:
            as :meth:`decide`.
        """
        name, parent, parent_token, rules_t = self._question(name, rules, parent, parent_token)
        with self._mem:
            state = self._current()
            _check_parent(state, parent, parent_token)
            got = self._decided_copy(state, name, rules_t, parent)
        return got if isinstance(got, Decision) else self._decided(got, name, rules_t, parent, stand_back=stand_back)

    def decide_each(self, name: str | None, rules: Sequence[ScopeRule] | ScopeRule, *,
                    parent: str | None = None, parent_token: int | None = None) -> list[Decision]:
        """One :class:`Decision` per rule, each rule decided as :meth:`decide`
        would decide a request of that rule alone, all against one state
        (one look at the log, no lock): a guard over many files asks once.
        Records nothing.

        Args:
            name, parent, parent_token: as :meth:`decide` (the same for
                every rule).
            rules: as :meth:`register`; a rule given twice (after
                canonicalisation) is answered once.

        Returns:
            ``list[Decision]``, in the order of the canonical rules; each
            decision's ``rules`` is its one rule.

        Raises:
            as :meth:`decide` (a bad rule: nothing is decided).
        """
        name, parent, parent_token, rules_t = self._question(name, rules, parent, parent_token)
        with self._mem:
            state = self._current()
            _check_parent(state, parent, parent_token)
            answers: list[Decision | None] = []
            for r in rules_t:
                err = check_request(state, name, (r,), parent)
                if isinstance(err, UnknownHolder):
                    raise err
                answers.append(Decision(None, (), (r,)) if err is None else None)
            # One copy for every rule that meets a holder (and one per distinct
            # reclaim met: _decided's ``reclaims``); a copy per rule made 500
            # rules against 500 held ones 1.6 s of copying.
            base = state.copy() if None in answers else state  # (the state itself only when never used)
        verdicts: dict[str, Verdict] = {}  # (each holder in the way probed once for all the rules)
        reclaims: dict[tuple[int, str], tuple[State, Reclaimed]] = {}
        return [a if a is not None else self._decided(base, name, (r,), parent, verdicts=verdicts, reclaims=reclaims)
                for a, r in zip(answers, rules_t, strict=True)]

    def _question(self, name: str | None, rules: Any, parent: str | None,
                  parent_token: int | None) -> tuple[str, str | None, int | None, tuple[ScopeRule, ...]]:
        """:meth:`decide`'s arguments checked: ``(name, parent, parent_token, rules)``."""
        name = CHECK_NAME if name is None else check_name(name)
        if parent is not None:
            parent = check_name(parent, "parent")
        elif parent_token is not None:
            raise TypeError("parent_token is given without parent")
        parent_token = check_token(parent_token, allow_none=True, what="parent_token")
        return name, parent, parent_token, self._prepare(rules)

    @staticmethod
    def _decided_copy(state: State, name: str, rules_t: tuple[ScopeRule, ...],
                      parent: str | None) -> "Decision | State":
        """The :class:`Decision` when no holder stands in the way, else a
        copy of ``state`` to simulate reclaims on (under ``_mem``)."""
        err = check_request(state, name, rules_t, parent)
        if err is None:
            return Decision(None, (), rules_t)
        if isinstance(err, UnknownHolder):
            raise err
        return state.copy()  # the reclaims are simulated on a copy

    def _decided(self, state: State, name: str, rules_t: tuple[ScopeRule, ...],
                 parent: str | None, *, verdicts: dict[str, Verdict] | None = None,
                 reclaims: dict[tuple[int, str], tuple[State, Reclaimed]] | None = None,
                 stand_back: Callable[[Allocation, Verdict], Verdict] | None = None) -> Decision:
        """:meth:`decide` on ``state`` (a copy), probing the holders in the
        way (``verdicts``: the probes' answers so far, shared by calls on one
        state), each judged by ``stand_back`` (:meth:`_decide`; a reclaim
        records the probe's verdict itself).

        ``reclaims``: given, ``state`` serves other decisions too
        (:meth:`decide_each`) and is never changed: the first reclaim a
        decision meets is simulated once on a copy, kept there under
        ``(id(state), holder)`` for every decision that meets the same
        reclaim first (each goes on from the same state, as deciding alone
        it would), and the decision goes on on that copy. So as many copies
        are made as there are distinct reclaims met, not one per rule."""
        verdicts = {} if verdicts is None else verdicts
        reclaimed: list[Reclaimed] = []

        def liveness(n: str) -> Verdict:
            v = verdicts.get(n)
            if v is None:
                v = verdicts[n] = self._verdict(state.holders[n])
            return v

        def reclaim(n: str, reason: str) -> None:
            if reclaims is not None:
                raise _SharedState(n, reason)
            reclaimed.append(_simulate_reclaim(state, n, reason, verdicts[n]))

        try:
            err = decide(state, name, rules_t, parent, _standing_back(state, liveness, stand_back), reclaim)
        except _SharedState as first:  # (raised before anything changed)
            assert reclaims is not None
            key = (id(state), first.name)
            kept = reclaims.get(key)
            if kept is None:
                after = state.copy()
                kept = reclaims[key] = (after, _simulate_reclaim(after, first.name, first.reason,
                                                                 verdicts[first.name]))
            after, entry = kept
            rest = self._decided(after, name, rules_t, parent, verdicts=verdicts, reclaims=reclaims,
                                 stand_back=stand_back)
            return Decision(rest.refusal, (entry, *rest.reclaimed), rules_t)
        if isinstance(err, UnknownHolder):
            raise err
        assert err is None or isinstance(err, Refused)
        return Decision(err, tuple(reclaimed), rules_t)

    def would_grant(self, name: str | None, rules: Sequence[ScopeRule] | ScopeRule, *,
                    parent: str | None = None, parent_token: int | None = None) -> Refused | None:
        """The refusal :meth:`register`/:meth:`delegate` would meet now, or
        ``None`` when the request would be granted: ``decide(...).refusal``
        (see :meth:`decide`; dead holders in the way count as reclaimable).
        Records nothing.

        Raises:
            as :meth:`decide`.
        """
        return self.decide(name, rules, parent=parent, parent_token=parent_token).refusal

    def canonical_rules(self, rules: Sequence[ScopeRule] | ScopeRule) -> tuple[ScopeRule, ...]:
        """``rules`` as this ledger would record them in a grant: each path
        canonical (symlinks in its existing part resolved, unless opened
        with ``resolve_symlinks=False``), identified by the mount table now
        (ARCHITECTURE.md, "The identity of a path"), a rule given twice kept
        once. Records nothing.

        Raises:
            InvalidScope: as :meth:`register` (bad rules, too many).
        """
        return self._prepare(rules)

    def wait(self, after: int, timeout: float | None = None) -> int:
        """Wait until the log holds an event after seq ``after``, at most
        ``timeout`` seconds (``None``: for ever), folding it in; returns the
        newest seq folded, ``int`` (``<= after`` when the time ran out).
        Takes no lock: the log's size is looked at (``fstat``) every 50 ms;
        on a ledger directory, the last line folded read again and the log
        checked to be the file opened at least every ``WAIT_LOOK_SECONDS``
        (1 s).

        Raises:
            TypeError: ``after`` is not an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a float).
            InvalidArgument: ``after`` is negative (no seq is: 0 waits for
                the first event).
            ValueError: ``timeout`` not ``None`` or 0 to 1e9 seconds.
            CorruptLedger: a new line does not check out; or (a ledger
                directory) its log was deleted, moved away or renamed over
                (as ``sed -i`` and editors do) since this object opened it:
                what is written there now cannot be read through it; open
                the ledger again. (A log cut by ``ledger repair`` is folded
                again as it is now, with a warning.)
        """
        after = check_seq("after", after)
        timeout = check_timeout("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        stale = False
        while True:
            why = self._files.replaced() if self._files is not None else None
            if why is not None:
                raise CorruptLedger(self._log_where, f"{why}: this object cannot read what is written there "
                                                     "now; open the ledger again")
            seq = self.refresh()
            if seq > after:
                return seq
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return seq
            if self._files is not None:
                # (a rewrite of the log that keeps its size, or a log renamed over, is not
                # seen by the store's wait: looked for at least every WAIT_LOOK_SECONDS)
                left = WAIT_LOOK_SECONDS if left is None else min(left, WAIT_LOOK_SECONDS)
            try:
                self._log.wait(seq, left)
            except CorruptLedger:
                # The log was cut (a repair) where the store remembered lines: the next
                # refresh folds it as it is now; the store's memory is dropped once, and an
                # error that comes again without it stands.
                if stale or self._files is None:
                    raise
                with self._mem:
                    self._files.forget()
                stale = True
            else:
                stale = False

    def liveness(self, holders: Sequence[Allocation] | None = None) -> dict[str, Verdict]:
        """The ledger's verdict on each holder now, with why
        (:class:`Verdict`), in order: its process's (the ledger's probe)
        and, for a holder with a lease, its lease's (``scopeledger._lease``:
        dead when either is; on PostgreSQL on the server's clock, one query
        for all of them); on PostgreSQL, for a holder of another host
        carrying a client session, its session's instead of its process's
        (one query for all of them: ``scopeledger._sessions``); records
        nothing.

        Args:
            holders: the allocations to probe (say, those of a
                :meth:`state` just taken); default the live holders now.
        """
        if holders is None:
            holders = self.holders()
        known = self._session_verdicts(holders)
        ages = self._lease_ages(holders)
        return {a.name: self._verdict(a, None, known, ages) for a in holders}

    def _prune_sessions(self) -> None:
        """Prune the server's sessions table (``Sessions.prune``): the
        sessions the live holders carry, read from the state folded to the
        log's head. Logs what fails; raises nothing but an interruption."""
        assert self._sessions is not None

        def carried() -> tuple[int, list[int]]:
            with self._mem:
                state = self._current()
                return state.seq, [s for s in {a.process.session for a in state.holders.values()} if s is not None]
        try:
            got = self._sessions.prune(carried)
        except LedgerError as exc:
            log.info("could not prune the sessions table of %s: %s", shown(self.path), exc)
            return
        log.debug("pruned the sessions table of %s: %s", shown(self.path),
                  "the log kept moving" if got is None else f"{got} row(s)")

    def _session_verdicts(self, holders: Iterable[Allocation]) -> dict[int, Verdict] | None:
        """On PostgreSQL: the verdicts on the client sessions of the holders
        of another host among ``holders``, asked in one query (``None``
        elsewhere, or when there are none)."""
        judge = self._sessions
        if judge is None:
            return None
        here, boot = host_id(), boot_id()
        sids = [a.process.session for a in holders
                if a.process.session is not None and on_another_host(a.process, here, boot)]
        return judge.verdicts(s for s in sids if s is not None) if sids else None

    def hold(self, name: str, rules: Sequence[ScopeRule] | ScopeRule, pid: int | None = None,
             *, parent: str | None = None, socket: str | None = None,
             parent_token: int | None = None, wait: float = 0, note: str | None = None,
             advisory: bool = False, ttl: float | None = None, lease_only: bool = False,
             on_wait: Callable[[str, Refused | None], object] | None = None) -> "Hold":
        """Register (or, with ``parent``, delegate) now and return a guard
        that releases the allocation when the ``with`` block ends (also on
        an exception), when the guard is garbage collected (with a
        ``ResourceWarning``: keep the guard), or at interpreter exit,
        whichever comes first. ``with ledger.hold(...) as alloc``
        binds the :class:`Allocation`. ``parent_token``: as
        :meth:`delegate` (a ``TypeError`` without ``parent``). ``wait``,
        ``note``, ``advisory``, ``ttl``, ``lease_only``, ``on_wait``: as :meth:`register`
        (an advisory hold is granted at once, its conflicts recorded,
        whatever ``wait`` says; the guard does not renew a lease:
        :meth:`keep_renewed` does).

        Raises:
            as :meth:`register` / :meth:`delegate`.
        """
        if parent is None and parent_token is not None:
            raise TypeError("parent_token is given without parent")
        if advisory is not False:
            check_advisory(advisory)
            check_wait(wait)  # an advisory request never waits; a bad wait is still refused
        if on_wait is not None:
            check_callable("on_wait", on_wait, ("reason", "refusal"))
        written: list[Any] = []
        guard = None
        alloc = None
        try:
            if asks_to_wait(wait) and not advisory:
                alloc = (self.register(name, rules, pid, socket=socket, wait=wait, note=note, ttl=ttl,
                                       lease_only=lease_only, on_wait=on_wait) if parent is None
                         else self.delegate(parent, name, rules, pid, socket=socket, parent_token=parent_token,
                                            wait=wait, note=note, ttl=ttl, lease_only=lease_only, on_wait=on_wait))
            elif parent is None:
                alloc = self._register(name, rules, pid, socket, written, None, note, advisory, ttl=ttl,
                                       lease_only=lease_only)
            else:
                alloc = self._delegate(parent, name, rules, pid, False, socket, parent_token, written, None, note,
                                       advisory, ttl=ttl, lease_only=lease_only)
            guard = Hold(self, alloc)
            self._holds.add(guard)
            return guard
        except BaseException:
            # The caller never gets the guard (an exception's traceback may
            # keep it alive a long while): release now.
            if guard is not None:
                guard.release()
            elif alloc is not None:
                _release_quietly(self, alloc.name, alloc.token, os.getpid())
            else:
                self._withdraw(written)
            raise

    def spawn(self, name: str, argv: Sequence[str], rules: Sequence[ScopeRule] | ScopeRule,
              **options: Any) -> "Spawned":
        """Reserve ``rules`` for holder ``name``, start ``argv`` bound to it
        (``SCOPELEDGER_*`` set so nested tools delegate), and return the
        :class:`~scopeledger.Spawned` whose ``wait()`` releases it with the
        exit status: :func:`scopeledger._spawn.spawn` (options and errors
        there: ``parent``, ``parent_token``, ``wait``, ``note``, ``advisory``, ``ttl``, ``lease_only``,
        ``on_lost`` (a grant taken away while the child runs: ``"term"``, the default, sends it
        SIGTERM, as ``ledger run --on-lost``), ``env``, Popen's)."""
        with first_use:
            from ._spawn import spawn

        return spawn(self, name, argv, rules, **options)

    def adopt(self, name: str, token: int) -> "Adopted":
        """Take back grant ``(name, token)`` after a restart:
        :func:`scopeledger._spawn.adopt` (a process alive, or not provably
        gone, keeps it, and the :class:`~scopeledger.Adopted` waits for it;
        a proven-gone process's grant is bound to this process when it was
        the old supervisor's own or has live children, else released
        (``found_gone``); errors there)."""
        with first_use:
            from ._spawn import adopt

        return adopt(self, name, token)

    def snapshot(self) -> int:
        """Write a snapshot of the current state now; returns its seq (0 and
        nothing written for an empty log).

        Removing stale temp files and snapshots past ``keep_snapshots``
        afterwards is housekeeping: a file the OS refuses to remove is a
        warning (on logger ``scopeledger``) naming its full path, not an
        error; the snapshot is written.

        Raises:
            LedgerIOError: the OS refused the write (disk full, ...); no
                snapshot and no temp file are left, nothing else changes.
            ReadOnlyLedger: the ledger was opened ``readonly``.
        """
        if self._log.readonly:
            raise ReadOnlyLedger(self.path, "write a snapshot")
        with self._mem:
            state = self._catch_up()
            if state.seq == 0:
                return 0
            self._write_snapshot(state)
            return state.seq

    def prune_snapshots(self, keep: int | None = None) -> list[int]:
        """Remove old snapshot files, keeping the newest ``keep`` (default:
        ``keep_snapshots`` if the ledger was opened with it, else
        ``PRUNE_KEEP`` = 3) and, whatever ``keep`` says, every snapshot past
        the log's end (the only record of events a power cut took:
        :attr:`lost`) and the newest one that checks out against the log
        (the one opening starts from), even when older. Fewer snapshots only
        make time travel to older points fold more; nothing recorded is lost.

        Returns:
            The seqs of the snapshots removed (``list[int]``), oldest first;
            empty when there was nothing to remove. A file the OS refuses to
            remove is a warning (logger ``scopeledger``) naming its full path,
            and is not listed.

        Raises:
            ValueError: ``keep`` is not ``None`` or an ``int`` of at least 1.
            ReadOnlyLedger: the ledger was opened ``readonly``.
            LedgerIOError: the snapshots directory or the log cannot be read.
            CorruptLedger: a log line after the last one read does not check out.
        """
        keep = check_keep_snapshots("keep", keep)
        if self._log.readonly:
            raise ReadOnlyLedger(self.path, "prune snapshots")
        if keep is None:
            keep = self.keep_snapshots if self.keep_snapshots is not None else _snapshots.PRUNE_KEEP
        with self._mem:
            state = self._catch_up()
        return _snapshots.prune_keeping(self._log, keep, state.seq)

    def repair(self, *, dry_run: bool = False) -> RepairReport:
        """Set aside what lies past the last line of the log that checks
        out, so that the ledger opens, verifies and goes on from that line.

        The first line that does not check out is found as :meth:`verify`
        finds it (the same checks: the line's format, its seq, the hash
        chain, that its event applies and, for a grant, was grantable; a
        line longer than ``MAX_LINE_BYTES``); a torn last line (no
        newline) is damage too. Everything from that line to the end of
        the log, and every snapshot at a later seq (it describes events no
        longer in the log: kept, it would be reported by ``verify`` and,
        once the log went on past it, no longer match), is moved into a
        new directory ``cut/<UTC time>-line-<N>/`` of the ledger (0700;
        files 0600): the bytes exactly as they were in
        ``events.jsonl.cut``, the snapshot files under their names, and
        ``record.json`` (what was cut and why: the line and seq, the
        reason as ``verify`` says it, the byte offset, bytes and lines cut
        and their SHA-256, the snapshots, when (UTC) and by whom: user,
        uid, host, pid). Nothing is deleted. All of it is flushed to disk
        before the log is cut (and the cut flushed), under the ledger's
        lock: killed at any point, nothing is lost (the log still holds
        what the directory may hold a copy of; run the repair again).

        Open a damaged ledger with ``Ledger.open(path, fold=False)``:
        opening folds the log and refuses the damage. A healthy ledger
        is judged without the lock and left as it is, also while other
        processes write to it: lines they append meanwhile are not damage
        (:attr:`RepairReport.appended`: not checked), nor a last line they
        are writing (:attr:`RepairReport.writing`); a last line without its
        newline is torn only when no writer holds the lock (looked at by
        taking it shared for that moment, never waited for). Other objects that
        had read past the cut (in other processes too) find that the log no
        longer holds the last line they folded and fold it again as it is now
        (a warning; a grant whose line was cut is then not held: ``check``
        false, ``watch_grant`` and ``AsyncLedger.until_lost`` report it);
        this one folds again from the newest snapshot left.
        A cut line's seq is never given again (a fencing token is a grant's
        seq): after cutting lines ``K+1`` to ``M`` the repair appends, under
        the same lock, a ``repaired`` line at seq ``K+1`` naming the cut's
        directory and keeping seqs through ``M`` void, and a ``void`` line
        for each seq after it up to ``M``, flushed; new events go on from
        ``M+1`` (:attr:`RepairReport.void_through`). When an earlier
        repair's cut reached further (its record under ``cut/``), or a
        snapshot it sets aside past the log's end checks out on its own
        (its header, checksum and body: the log once held its seq, though a
        power cut took the line, or an older log was put back), the seqs
        are kept void as far; a damaged one proves nothing (a warning). A repair stopped after its cut and before those
        lines, run again, finds the log ending where the newest record says
        it cut and writes them (the report's ``reason`` says so, with
        ``damaged`` false). A process still holding a grant that was cut
        holds nothing: ``ledger run`` stops its COMMAND (``--on-lost``);
        :meth:`watch_grant` tells a program.

        Args:
            dry_run: say what would be set aside, change nothing (the
                lock is not waited for, and taken only shared for the moment
                the log's end is judged: a ledger opened ``readonly`` may be
                asked).

        A line that is sound and follows the line before but carries what
        this scopeledger does not know (:class:`NewerFormat`: a newer
        format version, event type or key; probably written by a newer
        scopeledger) is never cut, nor anything after it (this version
        cannot judge those lines): nothing is changed, and the report says
        so (:attr:`RepairReport.newer_format`). Upgrade scopeledger.

        Returns:
            :class:`RepairReport`.

        Raises:
            TypeError: ``dry_run`` is not a ``bool``.
            StoreError: the ledger is not a directory (a PostgreSQL
                ledger's server refuses to change or remove its log's
                lines, by design); nothing is read.
            ReadOnlyLedger: not ``dry_run``, and the ledger was opened
                ``readonly``.
            LockTimeout: the lock was not free within ``timeout``.
            LedgerIOError: the OS refused to read the log or the
                snapshots, or to make, write or flush the files set aside,
                move a snapshot, cut or flush the log, read the records
                under ``cut/`` or append and flush the repair's own lines
                (disk full, an I/O error, ...); it names the file and says
                whether the log was cut (then: run the repair again before
                anything else writes, to keep the cut seqs void). Unless it
                says so, the log is as it was.
            UnsafeLedgerPath: ``cut/`` (or what is in the way of a file
                in it) is not a private directory of this user: a symlink,
                another owner, a group- or other-writable mode.
            CorruptLedger: (a dry run, without the lock) the log was cut
                by another process while it was judged; or a snapshot past
                the log's end says the log held a seq more than
                ``LOST_VOID_MAX`` (10,000,000) past the lines it accounts
                for (another ledger's, copied here?): nothing is changed;
                move it out of ``snapshots/`` and run the repair again.
        """
        check_bool("dry_run", dry_run)
        files = self._files
        if files is None:
            raise StoreError(self.path, f"cannot repair the ledger at {self.path}: only a ledger "
                                        "directory's log can be cut (the PostgreSQL server refuses to "
                                        "change or delete a ledger's lines, by design)")
        if not dry_run and self._readonly:
            raise ReadOnlyLedger(self.path, "repair the ledger")
        with self._mem:
            files.forget()  # (another repair may have cut the log since this object read it)
            kept, first, others = self._damage()
            if first is not None and first.newer_format:  # not damage: a newer scopeledger's line
                return self._newer(dry_run, kept, first, others, files)
            # Judged without the lock: what lies past the lines verify read is, but
            # for a line that does not check out among them, judged so that other
            # writers' appends are not taken for damage (FileStore.judge_past: lines
            # appended meanwhile are not, nor a line being written, which a torn one
            # is told from by whether a writer holds the lock). Read once, where it
            # was judged: read again after the lock is let go, lines appended
            # meanwhile were reported as cut ("set aside in None").
            appended = writing = 0
            if first is None:
                kept, plan, appended, writing = files.judge_past(kept)
            else:
                plan = files.cut_plan(kept)
            reach = files.store.cut_reach(self._keeps_line)
            if first is None and not plan["bytes"] and not plan["snapshots"] \
                    and reach is not None and reach[0] > kept:  # a repair stopped before its own lines
                return self._finish_repair(dry_run, kept, others, files, *reach)
            # Snapshots past the log's end prove their seqs were given (fencing tokens among them):
            # kept void too (a snapshot claiming too many is refused here, before anything changes).
            seqs = plan["seqs"]  # (the seqs the lines to be cut may have carried: Tally.seqs)
            proof = self._lost_proof(files, plan["snapshots"], kept + seqs, LOST_VOID_MAX, _MOVE_IT_OUT,
                                     say=dry_run, kept=kept)  # (said under the lock otherwise)
            if dry_run or (not plan["bytes"] and not plan["snapshots"]):
                return self._repaired(dry_run, kept, first, others, plan, None, appended, writing,
                                      _void_through(kept, plan["seqs"], reach, proof[0] if proof else None))
            try:
                with files.exclusive(self.timeout):
                    files.forget()
                    kept, first, others = self._damage()  # again, as the lock finds the log
                    if first is not None and first.newer_format:
                        return self._newer(dry_run, kept, first, others, files)
                    past = files.past(kept)
                    proof = self._lost_proof(files, past[1], kept + seqs, LOST_VOID_MAX, _MOVE_IT_OUT,
                                             kept=kept)
                    facts = self._repair_facts(kept, first, past, proof)
                    # (the earlier repairs' records read before anything is cut: one that cannot
                    # be read stops the repair with the log as it was)
                    reach = files.store.cut_reach(self._keeps_line)
                    cut = files.cut_after(kept, facts)
                    if cut is None:
                        plan = files.cut_plan(kept)  # (nothing past line kept, under the lock)
                    else:
                        through = self._keep_cut_void(files, kept, facts["kept_hash"], cut, reach)
            finally:
                self._drop_fold()  # fold again from what the log holds now
            if cut is None:
                return self._repaired(False, kept, first, others, plan, None)
            where, record = cut
            return self._repaired(False, kept, first, others, record, where, void_through=through)

    def _keeps_line(self, seq: int, hash_: str) -> bool:
        """Whether the log holds at ``seq`` a line hashing to ``hash_``
        (``GENESIS_HASH`` for 0): a repair's record is this log's
        (``Store.cut_reach``)."""
        if seq == 0:
            return hash_ == GENESIS_HASH
        try:
            got = self._log.read_after(seq - 1, 1)
        except LedgerError:  # (fewer lines than that)
            return False
        return bool(got) and got[0][0] == seq and line_hash(got[0][1]) == hash_

    def _finish_repair(self, dry_run: bool, kept: int, others: tuple[Problem, ...], files: Any, through: int,
                       where: str, start: int) -> RepairReport:
        """Keep seqs ``kept + 1`` to ``through`` void, as the repair in
        ``where`` that cut the log at byte ``start`` was stopped before
        doing (its record reaches ``through``; the log ends at ``kept``,
        every line checking out), under the lock, the log's end judged
        again there."""
        reason = (f"the repair recorded in {where} cut the log and was stopped before it recorded itself: "
                  f"the cut seqs {kept + 1} to {through} are not kept void yet")
        report = RepairReport(
            dry_run=dry_run, damaged=False, kept_seq=kept, line=None, seq=None, reason=reason,
            offset=0, log_bytes=0, bytes_cut=0, lines_cut=0, sha256=None, snapshots=(), directory=where,
            record=os.path.join(where, CUT_RECORD_NAME), remaining=others, void_through=through)
        if dry_run:
            return report
        try:
            with files.exclusive(self.timeout):
                files.forget()
                if self._log.head() == kept:  # (else another writer went on meanwhile: too late)
                    last = self._log.read_after(kept - 1, 1) if kept else []
                    try:
                        through = self._keep_void(files, kept, line_hash(last[0][1]) if last else GENESIS_HASH,
                                                  through, where, start)
                        report = attrs.evolve(report, void_through=through)
                    except LedgerIOError as exc:
                        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else OSError(exc.errno, str(exc))
                        raise LedgerIOError(exc.path, "keep the cut seqs void", cause,
                                            f"seqs {kept + 1} to {through} are not kept void yet: run 'ledger "
                                            "repair' again before anything else writes") from exc
                else:
                    report = attrs.evolve(report, void_through=None, reason=(
                        f"{reason}; other writers appended meanwhile, so those seqs may be given again"))
        finally:
            self._drop_fold()
        return report

    def _keep_cut_void(self, files: Any, kept: int, kept_hash: str, cut: tuple[str, dict[str, Any]],
                       reach: tuple[int, str, int] | None) -> int | None:
        """After the cut ``cut`` (its directory and record) past line
        ``kept`` (whose hash is ``kept_hash``): keep the cut seqs void, as
        far as ``reach`` (``Store.cut_reach``, read before the cut) too
        (:func:`_void_through`, :meth:`_keep_void`); the last seq kept void,
        ``None`` when none.

        Raises:
            LedgerIOError: the OS refused to read the lines set aside, or to
                write or flush the lines: the message says the log was cut and
                that running the repair again keeps them void.
        """
        where = cut[0]
        through = _void_through(kept, cut[1]["seqs"], reach, cut[1].get("through"))
        try:
            if through is not None:
                through = self._keep_void(files, kept, kept_hash, through, where, cut[1]["offset"])
        except LedgerIOError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else OSError(exc.errno, str(exc))
            seqs = f"seqs {kept + 1} to {through}" if through is not None else "the cut seqs"
            raise LedgerIOError(
                exc.path, "keep the cut seqs void", cause,
                f"the log was cut after seq {kept} (what was cut is in {where}); {seqs} are not kept void "
                "yet: run 'ledger repair' again before anything else writes, or fencing tokens among them "
                "may be given twice") from exc
        return through

    def _keep_void(self, files: Any, kept: int, kept_hash: str, through: int, where: str, start: int) -> int:
        """After a cut past line ``kept`` (whose hash is ``kept_hash``), the
        lock held: append a ``repaired`` line naming the cut's directory
        ``where`` at seq ``kept + 1`` and ``void`` lines up to seq
        ``through`` (the last seq cut), flushed: the seqs of the lines cut
        (the fencing tokens of grants among them) are never given again. In
        pieces of ``_VOID_PIECE`` lines; one cut short (a crash) is filled by
        the next writer (``_Txn._line``: the fold knows ``through``).

        The log's new end is never where a line of the cut lines ended
        (``start``: the byte where the cut in ``where`` began): a process that had read the log to that line remembers
        its end there, and finding the log ending there again it would take
        it for unchanged and chain its next line to a line no longer in the
        log. So one more ``void`` line is appended while it would be (the
        line's seq kept void too); that process then finds the log not as it
        read it, and folds it again. Returns the last seq kept void.

        Raises:
            LedgerIOError: the OS refused the write or its flush, or to read
                the lines set aside.
        """
        store = files.store
        end = store.size()
        rel = os.path.relpath(where, store.path)
        ts = self._clock()  # (one reading for all its lines: two builds of them give the same bytes)

        def pieces(through: int) -> Iterator[list[bytes]]:
            state = State()
            state.seq, state.last_hash = kept, kept_hash  # (what the lines chain on to)
            txn = _Txn(self, state)
            txn.clock = lambda: ts
            txn.emit("repaired", through=through, cut=rel)
            while True:
                while state.seq < through and len(txn.lines) < _VOID_PIECE:
                    txn.emit("void")
                yield txn.lines
                if state.seq >= through:
                    return
                txn.lines, txn.entries = [], []

        try:
            while store.ended_a_line(where, start, end + sum(len(line) + 1 for piece in pieces(through)
                                                                for line in piece)):
                through += 1  # (one more void line: see above)
            for piece in pieces(through):
                store.append(b"\n".join(piece) + b"\n", store.size(), True)
            return through
        finally:
            files.forget()

    def _damage(self) -> tuple[int, Problem | None, tuple[Problem, ...]]:
        """``verify``'s judgement of the log: the seq of the last line that
        checks out, the first problem of the log (``None``: none), and the
        problems of snapshots at or before that seq (a repair leaves them).

        Raises:
            LedgerIOError: the log cannot be read past some line.
        """
        report = self._history.verify()
        where = self._log_where
        first = next((p for p in report.problems if p.file == where), None)
        if first is not None and first.line is None:  # "cannot read: ...": an I/O error
            raise LedgerIOError(where, "read the log", OSError(errno.EIO, first.message), "nothing was cut")
        kept = report.events if first is None or first.line is None else first.line - 1
        others = tuple(p for p in report.problems if p.file != where and (p.seq is None or p.seq <= kept))
        return kept, first, others

    def _newer(self, dry_run: bool, kept: int, first: Problem, others: tuple[Problem, ...],
               files: Any) -> RepairReport:
        """The report of a repair that met a line of a newer format first
        (``first``): nothing set aside."""
        size = files.cut_plan(kept)["log_bytes"]
        return RepairReport(
            dry_run=dry_run, damaged=False, kept_seq=kept, line=first.line, seq=first.seq, reason=first.message,
            offset=size, log_bytes=size, bytes_cut=0, lines_cut=0, sha256=None, snapshots=(), directory=None,
            record=None, remaining=others, newer_format=True)

    def _repair_facts(self, kept: int, first: Problem | None, past: tuple[int, list[str]],
                      proof: tuple[int, str] | None = None) -> dict[str, Any]:
        """What a repair's record says of why: ``reason``, ``line``, ``seq``,
        ``kept_seq`` and ``kept_hash`` (the hash of line ``kept``, which the
        next event's ``prev`` will be); with ``proof`` (:meth:`_lost_proof`)
        also ``through`` and ``proof``: the last seq a snapshot set aside
        proves the log held, and that snapshot's name (``Store.cut_reach``
        reads ``through``: the seqs are kept void as far)."""
        tail, snaps = past
        if first is not None:
            reason = first.message
        elif tail:
            reason = (f"a torn last line: {tail} bytes after line {kept} without a newline (a writer "
                      "stopped in the middle of an append)")
        else:
            past_end = [name for name in snaps if _seq_of(name) > kept]
            other = [name for name in snaps if _seq_of(name) <= kept]
            reason = "; ".join(
                ([f"snapshot(s) of another ledger: {', '.join(other)}"] if other else [])
                + ([f"snapshot(s) past the end of the log (seq {kept}): {', '.join(past_end)}"] if past_end else []))
        line = self._log.read_after(kept - 1, 1) if kept else []
        facts = {"reason": reason, "line": kept + 1 if tail else None, "seq": first.seq if first else None,
                 "kept_seq": kept, "kept_hash": line_hash(line[0][1]) if line else GENESIS_HASH}
        if proof is not None:
            facts["through"], facts["proof"] = proof
        return facts

    def _repaired(self, dry_run: bool, kept: int, first: Problem | None, others: tuple[Problem, ...],
                  cut: dict[str, Any], where: str | None, appended: int = 0, writing: int = 0,
                  void_through: int | None = None) -> RepairReport:
        """The report of a repair: ``cut`` is the record written, or (dry
        run, nothing to do) what would be cut (``FileStore.cut_plan``,
        ``judge_past``); ``appended``, ``writing``: as ``judge_past`` says."""
        damaged = bool(cut["bytes"] or cut["snapshots"])
        if cut["snapshots"] and self._files is not None:  # (set aside: not left as they are)
            aside = {_snapshots.snapshot_path(self._files.store, name) for name in cut["snapshots"]}
            others = tuple(p for p in others if p.file not in aside)
        if "reason" in cut:  # the record written
            facts = cut
        elif damaged:
            facts = self._repair_facts(kept, first, (cut["bytes"], cut["snapshots"]))
        else:
            facts = {"reason": "", "line": None, "seq": None}
        return RepairReport(
            dry_run=dry_run, damaged=damaged, kept_seq=kept, line=facts["line"], seq=facts["seq"],
            reason=facts["reason"], offset=cut["offset"], log_bytes=cut["log_bytes"], bytes_cut=cut["bytes"],
            lines_cut=cut["lines"], sha256=cut["sha256"], snapshots=tuple(cut["snapshots"]), directory=where,
            record=os.path.join(where, CUT_RECORD_NAME) if where is not None else None, remaining=others,
            appended=appended, writing=writing, void_through=void_through if damaged else None)

    def _write_snapshot(self, state: State) -> None:
        header, body = _snapshots.encode(state)
        if self._files is not None:  # a directory's snapshot names its ledger (made with the first one;
            mine = self._files.ledger_id(make=True)  # the file looked at again: another may have made it)
            if mine is not None:
                header[_snapshots.ID_KEY] = mine
        self._log.snapshot_write(header, body)  # never durable ahead of the log: the store's promise
        self._snap_seq = state.seq
        _snapshots.prune_store(self._log, self.keep_snapshots)

    def _snapshot_due(self, state: State) -> bool:
        return state.seq - self._snap_seq >= max(self.snapshot_every, len(state.holders))  # type: ignore[no-any-return]

    def _maybe_snapshot(self) -> None:
        with self._mem:
            state = self._state
            if state is None:
                return
            try:
                with (self._files.snapshot_claim() if self._files is not None
                      else contextlib.nullcontext(True)) as mine:
                    # Another process may be writing one (no claim), or have
                    # written one: look, once claimed, before writing. A
                    # claim held for SNAPSHOT_CLAIM_PATIENCE intervals (its
                    # holder stopped mid-write) is not waited for any more.
                    if not mine and (state.seq - self._snap_seq
                                     < SNAPSHOT_CLAIM_PATIENCE * max(self.snapshot_every, len(state.holders))):
                        return
                    snaps = self._log.snapshot_seqs()
                    if snaps:
                        self._snap_seq = max(self._snap_seq, snaps[-1])
                    if not self._snapshot_due(state):
                        return
                    self._write_snapshot(state)
            except (OSError, LedgerError) as exc:
                log.warning("could not write snapshot at seq %d: %s", state.seq, exc)

    # -- queries ---------------------------------------------------------------

    def _current(self) -> State:
        return self._catch_up()

    # -- time travel, audit, verify: the ledger's History --------------------------

    def state_at(self, seq: int | None = None, time: dt.datetime | int | None = None) -> State:
        return self._history.state_at(seq, time)

    def time_point(self, time: dt.datetime | int) -> TimePoint:
        return self._history.time_point(time)

    @overload
    def who(self, path: str | os.PathLike[str], *, seq: int | None = None,
            time: dt.datetime | int | None = None) -> list[Holding]: ...

    @overload
    def who(self, path: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...], *,
            seq: int | None = None, time: dt.datetime | int | None = None) -> list[list[Holding]]: ...

    @overload
    def who(self, path: list[_PathT], *,  # a list[str] or list[Path] (lists are invariant)
            seq: int | None = None, time: dt.datetime | int | None = None) -> list[list[Holding]]: ...

    def who(self, path: Any, *, seq: int | None = None, time: dt.datetime | int | None = None) -> Any:
        return self._history.who(path, seq=seq, time=time)

    def diff(self, a: int, b: int) -> Diff:
        return self._history.diff(a, b)

    def events(self, since: int | None = None, until: int | None = None, *,
               types: Iterable[str] | None = None, holder: str | None = None,
               path: str | None = None, since_time: dt.datetime | int | None = None,
               until_time: dt.datetime | int | None = None) -> Iterator[Event]:
        return self._history.events(since, until, types=types, holder=holder, path=path,
                                    since_time=since_time, until_time=until_time)

    def event_lines(self, since: int | None = None, until: int | None = None, *,
                    types: Iterable[str] | None = None, holder: str | None = None,
                    path: str | None = None, since_time: dt.datetime | int | None = None,
                    until_time: dt.datetime | int | None = None) -> Iterator[tuple[Event, bytes]]:
        return self._history.event_lines(since, until, types=types, holder=holder, path=path,
                                         since_time=since_time, until_time=until_time)

    def history(self, name: str) -> list[Event]:
        return self._history.history(name)

    def verify(self, *, workers: int | None = None) -> VerifyReport:
        return self._history.verify(workers=workers)

    for _name in ("state_at", "time_point", "who", "diff", "events", "event_lines", "history", "verify"):
        locals()[_name].__doc__ = getattr(History, _name).__doc__  # one text: History's
    del _name

    @property
    def seq(self) -> int:
        """Seq of the newest event this object has folded, ``int``."""
        return self.refresh()

    def holders(self) -> list[Allocation]:
        """Live allocations now, in grant order, ``list[Allocation]``."""
        with self._mem:
            return list(self._current().holders.values())

    def holder(self, name: str) -> Allocation:
        """The live allocation named ``name``.

        Raises:
            InvalidHolderName: ``name`` is not a holder name.
            UnknownHolder: no live holder has that name.
        """
        check_name(name)
        with self._mem:
            alloc = self._current().holders.get(name)
        if alloc is None:
            raise UnknownHolder(name)
        return alloc

    def children(self, name: str) -> list[str]:
        """Names of ``name``'s live children, ``list[str]``, in delegation
        order (re-parented children last).

        Raises:
            UnknownHolder: ``name`` is not live.
        """
        with self._mem:
            state = self._current()
            if name not in state.holders:
                raise UnknownHolder(name)
            return list(state.children.get(name, ()))

    def grant_ending(self, name: str, token: int) -> Event | None:
        """How grant ``(name, token)`` ended: the ``released`` or
        ``reclaimed`` :class:`Event` that ended it, or ``None`` while the log
        holds no ending (it is live, or its ending is not written yet). Reads
        the log from the grant's line on (from the newest snapshot before
        it), not the whole log. For a holder that learns its grant was taken
        (``spawn``'s ``on_lost``, ``ledger run``) and for audits.

        Raises:
            InvalidHolderName: ``name`` is not a holder name.
            TypeError, ValueError: ``token`` is not a seq (an ``int`` >= 1).
            UnknownHolder: the log holds no grant of ``name`` at seq
                ``token`` (never granted so, or its line was cut by
                ``repair``).
            LedgerError: the log cannot be read (``CorruptLedger``, ...).
        """
        check_name(name)
        token = check_token(token)
        events = self.events(since=token)
        first = next(events, None)
        if first is None or first.seq != token or first.type not in ("registered", "delegated") \
                or first.data.get("holder", {}).get("name") != name:
            raise UnknownHolder(name, message=f"the log holds no grant of {name!r} at seq {token}")
        for e in events:
            if e.type in ("released", "reclaimed") and e.data.get("name") == name:
                return e
        return None

    def find_conflict(self, rules: Sequence[ScopeRule] | ScopeRule) -> ScopeConflict | None:
        """The conflict a top-level request for ``rules`` would meet now, or
        ``None``. The :class:`ScopeConflict` carries the rule, the owner and
        the chain from the top-level holder down to the real owner. Dead
        owners are reported too (``register`` would reclaim them first).

        Raises:
            InvalidScope: bad rules.
        """
        rules_t = self._prepare(rules)
        with self._mem:
            err = check_request(self._current(), "\x00query", rules_t, None)
        return err if isinstance(err, ScopeConflict) else None

    def find_conflicts(self, rules: Sequence[ScopeRule] | ScopeRule, *, parent: str | None = None,
                       limit: int | None = None) -> list[tuple[tuple[str, ...], ScopeRule, ScopeRule]]:
        """Every conflict a request for ``rules`` would meet now (from
        ``parent``: as a delegation from it), not only the first one that
        :meth:`find_conflict` and a refusal name: ``(owner chain, their rule,
        requested rule)`` for each requested rule and each live holder
        outside the requester's own line whose rule conflicts with it (the
        deepest such holder of each chain; the chain top first), in request
        order, once each: what an advisory grant records. ``[]`` when none.
        Dead owners are reported too (a grant would reclaim them first).
        ``limit``: at most this many (the walk stops there). ``parent``
        (``str``) is not checked to be live: a name that is not a live
        holder's has no line of its own, so every conflicting holder counts.

        Raises:
            InvalidScope: bad rules.
            ValueError: ``limit`` is not ``None`` or an int >= 1.
        """
        limit = check_keep_snapshots("limit", limit)
        rules_t = self._prepare(rules)
        with self._mem:
            found = conflicts_met(self._current(), "\x00query", rules_t, parent)
            return [c for _, c in zip(range(limit), found, strict=False)] if limit is not None else list(found)

    def effective_scope(self, name: str) -> EffectiveScope:
        """``name``'s rules minus what it has delegated to live children.

        Raises:
            UnknownHolder: ``name`` is not live.
        """
        with self._mem:
            state = self._current()
            if name not in state.holders:
                raise UnknownHolder(name)
            rules, delegated = effective_rules(state, name)
        return EffectiveScope(name, rules, delegated)

    def check(self, name: str, token: int) -> bool:
        """Fencing check: ``True`` only while the grant of holder ``name``
        with this ``token`` is live (a new grant of the same name has
        another token) and, for a grant with a lease, while the lease runs
        by this process's boot-time clock: ``False`` from ``ttl`` after its
        last renewal on (counted from the reading the renewal recorded,
        taken before it was sent), ``grace`` (max(1 s, ttl/10)) before
        anyone else may reclaim it, so that the holder learns first. A
        lease last renewed on another host or boot is judged here on
        PostgreSQL by the server's clock, without the grace (``False``
        once ttl has passed since the server appended the renewal); on a
        directory (or a line appended before the server recorded its
        time) it cannot be judged here (nor is it reclaimed from here):
        ``True`` while the grant is live.

        On PostgreSQL, also only while the client session the grant carries
        vouches for it (``scopeledger._sessions``): a session of this object
        turns ``False`` the moment it is lost by this process's clock (its
        lease's deadline, before the server's lease end + grace, after
        which others may reclaim it), without asking the server, so a
        partitioned holder learns at once; another process's session is
        asked of the server (closed, lock gone, or past its lease end, the
        grace not counted: ``False``). A call already reading from the
        server when the link was cut waits for the read to fail (the
        connection's TCP timeouts), then answers ``False`` if the session
        was lost meanwhile; ``on_session_lost`` is called at the deadline
        itself, whatever the other threads are doing.

        Raises:
            InvalidHolderName: ``name`` is not a holder name.
            TypeError: ``token`` is not an integer (an ``int``, an
                ``IntEnum``, a ``numpy.int64``; not a ``bool``, not a
                float).
            InvalidArgument: ``token`` is below 1: no grant has it (an
                error, not ``False``: such a token was never given out).
            StoreUnavailable, StoreError: (PostgreSQL) the server cannot
                be read.
        """
        check_name(name)
        token = check_token(token)
        sessions = self._sessions
        if sessions is None:
            with self._mem:
                alloc = self._current().holders.get(name)
        else:
            # A session of ours that was lost never comes back: say so before
            # any IO (a partitioned holder's reads would hang on the cut link),
            # and rather than an error when the read failed because it was.
            state = self._state
            known = state.holders.get(name) if state is not None else None
            sid = known.process.session if known is not None and known.token == token else None
            if sessions.lost(sid):
                return False
            try:
                with self._mem:
                    alloc = self._current().holders.get(name)
            except StoreError:
                if sessions.lost(sid):
                    return False
                raise
        if alloc is None or alloc.token != token:
            return False
        if sessions is not None and alloc.process.session is not None \
                and not sessions.vouches(alloc.process.session):
            return False
        lease = alloc.lease
        if lease is None:
            return True
        # By the boot-time clock of the boot that last renewed it, when this is
        # that boot (the holder's own view, from before its renewal was sent:
        # it learns first); else by the server's clock (PostgreSQL), without
        # the grace; else (a file, a line without the server's time) unknown.
        v = judge_lease(lease, self._boottime(), host_id(), boot_id(), grace=False)
        if v.liveness is Liveness.UNKNOWN:
            age = self._lease_age(lease, None)
            if age is not None:
                v = judge_lease_age(lease, age, grace=False)
        return not v.dead

    def state(self) -> State:
        """A copy of the current folded :class:`State` (for inspection)."""
        with self._mem:
            return self._current().copy()


def verify(path: str | os.PathLike[str] | None = None, *, workers: int | None = None) -> "VerifyReport":
    """Verify the ledger in directory ``path`` (default :func:`default_path`)
    without opening it for use: a ledger that :meth:`Ledger.open` refuses as
    corrupt can still be examined. See :meth:`Ledger.verify` (``workers``
    too). Never creates or changes anything.

    Raises:
        NoLedger: there is no ledger at ``path``.
        UnsafeLedgerPath: as :meth:`Ledger.open`.
        LedgerIOError: a file cannot be opened, or the log's size or the
            snapshots directory cannot be read (an I/O error: reading the
            log's lines fails with a problem in the report instead); it
            names the full path, ``__cause__`` is the OSError.
    """
    where = _dir_path(path)
    store: LogStore
    if _is_postgresql_url(where):
        store = _open_store(where, create=False, readonly=True)
    else:
        store = FileStore(Store(where, readonly=True))
    try:
        return unloaded(store).verify(workers=workers)
    finally:
        store.close()


def tickets_of(ledger: Ledger) -> "Tickets | None":
    """The waiters' queue of ``ledger``'s store (``LogStore.tickets()``):
    what ``AsyncLedger`` hands to ``scopeledger._wait``."""
    return ledger._log.tickets()


def log_where(ledger: Ledger) -> str:
    """How messages name ``ledger``'s log (a file's full path, else the
    store's location): what ``AsyncLedger.until_lost`` says as a
    :class:`~scopeledger.GrantWatch` does."""
    return ledger._log_where


class WaiterAttempt:
    """What a waiter for :meth:`Ledger.register` or :meth:`Ledger.delegate`
    tries each time it may be granted (``_wait.Attempt``), for the blocking
    and the asyncio callers (``_async``): ``attempt(commit)`` asks for the
    grant (``commit`` is called under the lock just before the grant is
    recorded), ``attempt.look(req, stand_back)`` decides it now without the
    lock (:meth:`Ledger._decide`: each holder in the way judged by
    ``stand_back``, the waiter's grace, as under the lock). ``written``:
    the caller's list that holds the grant being written
    (:meth:`Ledger._attempt`), to withdraw it if the wait is interrupted
    after the attempt returned. Package-internal: not in ``__all__``."""

    __slots__ = ("ledger", "grant", "written")

    def __init__(self, ledger: Ledger, grant: Callable[[list[Any], Callable[[], None]], Allocation],
                 written: list[Any] | None) -> None:
        self.ledger, self.grant, self.written = ledger, grant, written

    def __call__(self, commit: Callable[[], None]) -> Allocation:
        return self.ledger._attempt(lambda w: self.grant(w, commit), self.written)

    def look(self, req: Any, stand_back: Callable[[Allocation, Verdict], Verdict]) -> Decision:
        """Raises: as :meth:`Ledger.decide`."""
        return self.ledger._decide(req.name, req.rules, parent=req.parent, parent_token=req.parent_token,
                                   stand_back=stand_back)


def register_attempt(ledger: Ledger, name: str, rules: Any, pid: int | None, socket: str | None,
                     note: str | None, advisory: bool, ttl: Any,
                     lease_only: Any, written: list[Any] | None = None) -> WaiterAttempt:
    """A waiter's :class:`WaiterAttempt` for :meth:`Ledger.register`."""
    return WaiterAttempt(ledger, lambda w, commit: ledger._register(
        name, rules, pid, socket, w, commit, note, advisory, ttl=ttl, lease_only=lease_only), written)


def delegate_attempt(ledger: Ledger, parent: str, child: str, rules: Any, pid: int | None, reserved: bool,
                     socket: str | None, parent_token: int | None, note: str | None, advisory: bool,
                     ttl: Any, lease_only: Any, written: list[Any] | None = None) -> WaiterAttempt:
    """A waiter's :class:`WaiterAttempt` for :meth:`Ledger.delegate`."""
    return WaiterAttempt(ledger, lambda w, commit: ledger._delegate(
        parent, child, rules, pid, reserved, socket, parent_token, w, commit, note, advisory, ttl=ttl,
        lease_only=lease_only), written)


def _open_store(where: str, *, create: bool, readonly: bool, fsync: bool = False,
                allow_network_fs: bool = False) -> LogStore:
    """The store of the ledger at ``where``: a PostgreSQL URL's schema, or
    a directory (as :meth:`Ledger.open` opens them, and raising what it
    raises)."""
    if _is_postgresql_url(where):
        with first_use:
            from ._pgstore import PgStore  # only for a URL: its client library stays unimported otherwise

        return PgStore.open(where, create=create, readonly=readonly)
    if create and not readonly:
        check_not_in_another_users_directory(where)
    return FileStore.open(where, create=create, readonly=readonly, fsync=fsync,
                          allow_network_fs=allow_network_fs)


def copy_ledger(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> int:
    """Copy the ledger at ``source`` into ``dest``, byte for byte: each a
    directory or a ``postgresql://`` URL (``ledger export URL DIR`` and
    ``ledger import DIR URL``). ``dest`` then holds the same lines at the
    same seqs and the same snapshots, so the hash chain, ``verify``,
    ``replay`` and time travel give the same answers there; a ledger
    copied into a directory passes ``verify`` on the file backend. Returns
    the number of events copied (``int``).

    ``source`` is opened read-only (nothing in it changes). ``dest`` is
    created when missing (a directory 0700, a schema with its tables) and
    may be an empty ledger (``ledger init``); the lines go in 5,000 to a
    transaction, each read back and compared, then the snapshots that check
    out. A copy that fails part way leaves ``dest`` holding a prefix of
    ``source`` (the log is append-only): remove it (``rm -r DIR``, ``DROP
    SCHEMA NAME CASCADE``) before copying again.

    Raises:
        LedgerNotEmpty: ``dest`` holds events already (nothing is copied).
        NoLedger: no ledger at ``source``.
        InvalidLedgerURL, StoreUnavailable, StoreError: a URL that is
            malformed, a server that cannot be reached or refuses (no
            message shows a password).
        CorruptLedger: a line of ``source`` does not check out (its format,
            seq or hash chain, or an event ``verify`` refuses: nothing is
            made or copied), or ``dest`` read back differs.
        LedgerError: anything else :meth:`Ledger.open` raises for either
            (an unsafe directory, a directory that is not a ledger, ...),
            or another writer appended to ``dest`` during the copy.
        TypeError: ``source`` or ``dest`` is not a ``str`` or ``os.PathLike[str]``.
    """
    with first_use:
        from ._logstore import copy_log

    src_where, dst_where = _dir_path(source), _dir_path(dest)
    for given in (src_where, dst_where):
        if not given or not given.strip():
            raise NoLedger("an empty ledger path or URL: give a directory or a postgresql:// URL")
    src = _open_store(src_where, create=False, readonly=True)
    try:
        _refuse_what_verify_refuses(src)  # before dest is made or written
        dst = _open_store(dst_where, create=True, readonly=False, fsync=True)
        try:
            return copy_log(src, dst)
        finally:
            dst.close()
    finally:
        src.close()


def _refuse_what_verify_refuses(src: LogStore) -> None:
    """Before a copy: the first problem :meth:`Ledger.verify` finds in the
    source's log lines (not an event line, a seq out of order, off the hash
    chain, an event that does not apply or a grant that was not grantable:
    also damage the chain cannot see, such as an altered last line), as
    :class:`CorruptLedger`; a line of a newer scopeledger
    (``Problem.newer_format``) as :class:`NewerFormat`, whose remedy is an
    upgrade, not a repair. A snapshot that does not check out is
    not copied, and a torn last line is not a line: neither refuses.

    Raises:
        NewerFormat: naming the line and what this version does not know.
        CorruptLedger: naming the line.
    """
    report = unloaded(src).verify()
    for p in report.problems:
        if p.line is not None and "torn" not in p.message:
            if p.newer_format:
                raise NewerFormat(p.file, p.message.removesuffix(f": {NEWER_ADVICE}"), line=p.line, seq=p.seq)
            raise CorruptLedger(p.file, f"{p.message} ('ledger verify' says so too; mend it with 'ledger repair' "
                                        "before copying)", line=p.line, seq=p.seq)


def redact_url(location: str) -> str:
    """``location`` as messages may show it (``str``): a URL with its
    password replaced by ``***`` (in the user info or a ``password``
    parameter), anything else (a directory) unchanged. What
    :attr:`Ledger.path` says of a ledger opened at a URL."""
    if _URL_RE.match(location):
        with first_use:
            from ._pgstore import redact

        return redact(location)
    return location


#: ``scheme://``: a URL (the test that :func:`redact_url` applies).
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def unloaded(store: LogStore | Store) -> Ledger:
    """A :class:`Ledger` over ``store`` that has folded nothing yet (for
    ``verify``, which folds from scratch and trusts no snapshot)."""
    return Ledger(store, timeout=None, probe=None, fsync=False, snapshot_every=DEFAULT_SNAPSHOT_EVERY,
                  keep_snapshots=None, resolve_symlinks=False, clock=None, load=False)


_unloaded = unloaded  # cli.py's import, until it opens with Ledger.open(fold=False)


def _is_postgresql_url(path: str) -> bool:
    """Whether ``path`` is a PostgreSQL URL (``postgresql://`` or
    ``postgres://``, any case): the plain string test that picks the store."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() in ("postgresql", "postgres")


def _dir_path(path: Any) -> str:
    """The ledger directory a caller gave (``None``: :func:`default_path`)."""
    if path is None:
        return default_path()
    raw = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if type(raw) is not str:
        raise TypeError(f"a ledger path must be a str or os.PathLike[str], not {shown(path)}")
    return raw


def _check_parent(state: State, parent: str | None, parent_token: int | None) -> None:
    """Raise the :class:`UnknownHolder` a delegation from ``parent`` (with
    ``parent_token``) would meet in ``state``, if any."""
    if parent is not None:
        stale = stale_grant(state, parent, parent_token, "parent")
        if stale is not None:
            raise stale
#: Lines read at a time when the log is read through (bounded memory).
PAGE_LINES = 4096


def _read_lines(store: LogStore, after: int, until: int) -> Iterator[Line]:
    """The lines with seqs ``after + 1 .. until`` of ``store``, read a page
    (:data:`PAGE_LINES`) at a time."""
    while after < until:
        page = store.read_after(after, limit=min(PAGE_LINES, until - after))
        if not page:
            return
        yield from page
        after = page[-1][0]


#: Every open Ledger, for the fork handler below.
_ledgers: "weakref.WeakSet[Ledger]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a child forked while another thread of the parent was inside a
    Ledger call: that thread does not exist here, but what it held was
    copied as held (the in-memory state's lock) and what it was changing
    may be half changed. Give every Ledger a new lock and let it refold
    from the log on next use, so that the child never waits for ever.
    (The Store's thread lock and descriptors are renewed by _store's own
    handler.)"""
    for led in list(_ledgers):
        led._mem = threading.RLock()
        led._state = None
        led._actor_cache = None


os.register_at_fork(after_in_child=_after_fork_in_child)

#: The start of a v2 line as this library writes it, up to the writer's boot id.
_ACTOR_AT_START = re.compile(rb'\{"v":2,"seq":(\d+),"ts":(-?\d+),"actor":\{"host":"([0-9a-f]{32})","boot":"([^"\\]*)"')

#: Snapshot intervals a process lets pass while another holds the snapshot
#: claim (``Store.snapshot_claim``) before it writes one anyway: a writer
#: stopped in the middle of a snapshot (SIGSTOP, a frozen cgroup) must not
#: stop every other process's snapshots; a duplicate costs only disk.
SNAPSHOT_CLAIM_PATIENCE = 4




#: Identified rules ``_prepare`` keeps per mount table for reuse (a path
#: registered again, a rule every holder reads): the cache starts over past it.
_IDENTIFIED_KEPT = 1024


def _release_extras(returncode: Any, note: Any) -> dict[str, Any]:
    """``release``'s optional keys from its arguments (see its Raises)."""
    out: dict[str, Any] = {}
    if returncode is not None:
        code = integer(returncode)  # (a plain int: numpy.int64's too; never a bool or a float)
        if code is None:
            raise TypeError(f"returncode must be an int (an exit status, or -N for signal N) or None, "
                            f"not {shown(returncode)}")
        returncode = code
        if not -127 <= returncode <= 255:
            raise ValueError(f"returncode must be an exit status 0-255 or -N for signal N (1-127), "
                             f"not {shown(returncode)}")
        if returncode < 0:
            out["exit_signal"] = -returncode
        else:
            out["exit_code"] = returncode
    note = check_note(note)
    if note is not None:
        out["note"] = note
    return out


def _advised(state: State, name: str, rules: tuple[ScopeRule, ...], parent: str | None,
             err: Exception | None) -> list[Any] | None:
    """What an advisory grant records (``holder.advisory``: each conflict
    as ``[chain, their rule, requested rule]``), or ``None`` when ``err``
    is a refusal advice does not lift (a taken name, a rule outside the
    parent's scope)."""
    if err is not None and not (isinstance(err, ScopeConflict)
                                or (isinstance(err, DelegationError) and err.sibling is not None)):
        return None
    out: list[Any] = []
    least = 0  # bytes the record takes at least: the names and both paths of each conflict
    for chain, theirs, mine in conflicts_met(state, name, rules, parent):
        least += len(theirs.path) + len(mine.path) + sum(map(len, chain))
        if least > MAX_LINE_BYTES:  # it cannot fit: stop (finding them all first took time and memory unbounded)
            raise InvalidScope(f"the request is too large: its {len(out) + 1} conflicts found so far would "
                               f"take more than the log's limit of {MAX_LINE_BYTES} bytes in its event's "
                               "line (an advisory grant records each); ask for fewer or narrower rules")
        out.append([list(chain), theirs.to_json(), mine.to_json()])
    return out


def _partly(exc: Any, lines: list[bytes]) -> PartlyRecorded:
    """The :class:`PartlyRecorded` for a write of ``lines`` (one change)
    that left the first ``exc.lines_kept`` of them in the log."""
    said = []
    for line in lines:
        ev = orjson.loads(line)
        holder = ev.get("holder")
        name = holder.get("name") if isinstance(holder, dict) else ev.get("name")
        said.append((ev["seq"], ev["type"], str(name)))
    return PartlyRecorded(exc, tuple(said[:exc.lines_kept]), tuple(said[exc.lines_kept:]))


def _lease_request(ttl: Any, lease_only: Any) -> tuple[int, bool] | None:
    """A grant's ``ttl``/``lease_only`` as ``(ttl_ns, lease_only)``, or
    ``None`` without a lease.

    Raises:
        InvalidLease: a bad ``ttl`` (``_lease.check_ttl``), ``lease_only``
            without one.
        TypeError: ``lease_only`` is not a ``bool``.
    """
    check_bool("lease_only", lease_only)
    if ttl is None:
        if lease_only:
            raise InvalidLease("lease_only=True needs a ttl: a holder bound to nothing could never be reclaimed")
        return None
    return check_ttl(ttl), lease_only


def _boot_reading(boottime: Callable[[], int | None]) -> dict[str, int]:
    """``{"boot_ns": reading}`` of the boot-time clock for a grant or
    renewal line, ``{}`` when it cannot be read (the lease then cannot be
    judged: ``unknown``).

    Raises:
        TypeError, ValueError: the clock returned something else than
            ``None`` or an ``int`` in 0..2**63-1 (nothing is written).
    """
    ns = boottime()
    if ns is None:
        return {}
    if type(ns) is not int or not 0 <= ns < TS_LIMIT:
        if type(ns) is not int:
            raise TypeError(f"boottime() returned {type(ns).__name__} {shown(ns)}, not int nanoseconds or None")
        raise ValueError(f"boottime() returned {shown(ns)}: not nanoseconds in 0..2**63-1")
    return {"boot_ns": ns}


def holder_returncode(verdict: Verdict | None, alloc: Allocation) -> int | None:
    """How holder ``alloc``'s own process ended, from the verdict that
    proved it dead (:attr:`Verdict.returncode`); ``None`` when not known,
    and for a reserved delegation (``alloc.reserved``: bound to the
    process that reserved it until its child attaches, so the process
    judged is the reserver, not the holder's own, which never ran as it)."""
    if verdict is None or alloc.reserved or verdict.liveness is not Liveness.ZOMBIE:
        return None
    return verdict.returncode


def exit_keys(verdict: Verdict | None, reason: str, alloc: Allocation) -> dict[str, int]:
    """What a ``reclaimed`` event for ``reason`` records of how holder
    ``alloc``'s process ended: ``{"exit_code": status}`` or
    ``{"exit_signal": N}`` from a ``zombie`` verdict that carries its
    :attr:`Verdict.returncode` (the default probe reads it only from a
    zombie proven to be the holder's process; :func:`holder_returncode`);
    ``{}`` otherwise."""
    code = holder_returncode(verdict, alloc) if reason == "zombie" else None
    if code is None:
        return {}
    return {"exit_signal": -code} if code < 0 else {"exit_code": code}


def last_seen_ns(alloc: Allocation) -> int:
    """When holder ``alloc`` was last seen alive, as the log shows it, ns
    since the epoch (UTC, each event's writer's clock): the latest of its
    grant, its last renewal and the last ``attached`` event that bound it
    (its writer identified the process from /proc, alive). A refusal
    decided against the holder does not count: its line records the
    refused request, not the verdict on the holder (a holder whose
    liveness could not be told is kept, and refuses, as a live one does),
    and reading one would take the words of its message."""
    seen = alloc.granted_ns
    if alloc.lease is not None and alloc.lease.renewed_ns > seen:
        seen = alloc.lease.renewed_ns
    if alloc.attached_ns is not None and alloc.attached_ns > seen:
        seen = alloc.attached_ns
    return seen


def _unwritten(txn: _Txn) -> None:
    """A transaction whose lines were not appended, for certain (a
    speculative try: :meth:`Ledger._speculative_part`): the waiter's commit
    it passed, if any, is told (``Commit.unwritten``: a cancellation while
    the locked path that follows waits for the lock need not wait for it)."""
    unwritten = getattr(txn.committed, "unwritten", None)  # (None: no commit, or a plain callable)
    txn.committed = None
    if unwritten is not None:
        unwritten()


def _build_grant(txn: _Txn, kind: str, name: str, rules_t: tuple[ScopeRule, ...], parent: str | None,
                 parent_token: int | None, reserved: bool, commit: Callable[[], None] | None, advisory: bool,
                 ident: ProcessIdentity | None, socket: str | None, note: str | None,
                 lease: tuple[int, bool] | None) -> Allocation | None:
    """:meth:`Ledger.register`'s and :meth:`Ledger.delegate`'s work under the
    lock (``Ledger._transact``'s ``build``; ``kind`` ``registered`` or
    ``delegated``): a delegation's parent checked, then decide, then grant
    (advisory: granted with the conflicts recorded) or record the refusal.

    Raises:
        UnknownHolder: the parent is gone or granted again (``parent_token``).
    """
    if parent is not None:
        stale = stale_grant(txn.state, parent, parent_token, "parent")
        if stale is not None:
            raise stale
    err = txn.ledger._check(txn, name, rules_t, parent, commit)
    if isinstance(err, UnknownHolder):
        raise err
    met = _advised(txn.state, name, rules_t, parent, err) if advisory else None
    if err is not None and met is None:
        txn.refuse(name, parent, rules_t, err)
        return None
    if commit is not None:  # a waiter's last word, under the lock (scopeledger._wait)
        commit()
        txn.committed = commit
    return _grant(txn, kind, name, rules_t, ident, parent, reserved, socket, note, met, lease)


def _build_released(txn: _Txn, name: str, token: int | None, extras: dict[str, Any]) -> list[str]:
    """:meth:`Ledger.release`'s work under the lock: the released line, its
    children re-parented; their names."""
    stale = stale_grant(txn.state, name, token)
    if stale is not None:
        raise stale
    plan = reparent_plan(txn.state, name)
    payload = {"name": name, "reparented": plan}
    if extras:
        payload.update(extras)
    seq, ts, h = txn.emit_last("released", payload)
    txn.after = (commit_removal, name, seq, ts, h)
    return [c for c, _ in plan] if plan else []


def _grant(txn: _Txn, kind: str, name: str, rules: tuple[ScopeRule, ...], ident: ProcessIdentity | None,
           parent: str | None, reserved: bool, socket: str | None, note: str | None = None,
           advisory: list[Any] | None = None, lease: tuple[int, bool] | None = None) -> Allocation:
    """Emit the ``registered``/``delegated`` event (the transaction's last)
    and return the :class:`Allocation` it grants, applied after the write;
    bound to ``ident``, or (``None``) to the calling process, the writer."""
    # ``rules`` come from Ledger._prepare: canonical, ``given`` cleared.
    if ident is None:
        ident = txn.actor_ident
    perm = PERMISSION_TEXT
    shown_rules = []  # (a loop: a comprehension is a function made per call, perm a cell)
    for r in rules:
        shown_rules.append([r.path, perm[r.permission], r.recursive] if r.ident is None
                           else [r.path, perm[r.permission], r.recursive, identity_json(r)])
    holder: dict[str, Any] = {
        "name": name, "rules": shown_rules,
        "process": txn.actor if ident is txn.actor_ident else ident.to_json(), "parent": parent,
        "reserved": reserved, "socket": socket}
    if note is not None:
        holder["note"] = note
    if advisory is not None:
        holder["advisory"] = advisory
    if lease is None:
        seq, ts, h = txn.emit_last(kind, {"holder": holder})
        alloc = Allocation(name, rules, ident, parent, seq, ts, reserved, socket, advisory is not None)
    else:
        ttl_ns, only = lease
        holder["ttl_ns"] = ttl_ns
        if only:
            holder["lease_only"] = True
        clock = _boot_reading(txn.ledger._boottime)
        seq, ts, h = txn.emit_last(kind, {"holder": holder, **clock})
        actor = txn.actor
        alloc = Allocation(name, rules, ident, parent, seq, ts, reserved, socket, advisory is not None,
                           Lease(ttl_ns, not only, actor.get("host"), actor.get("boot"), clock.get("boot_ns"), ts, seq))
    txn.after = (commit_grant, alloc, h)
    return alloc


class _SharedState(Exception):
    """:meth:`Ledger._decided` on a state other decisions share met holder
    ``name`` to reclaim (for ``reason``): go on on a copy where it is."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.name = name
        self.reason = reason


def _standing_back(state: State, liveness: Callable[[str], Verdict],
                   stand_back: Callable[[Allocation, Verdict], Verdict] | None) -> Callable[[str], Verdict]:
    """A decision's verdict on each holder in the way, by name, as a waiter
    judges it: ``stand_back(holder, liveness(name))`` (``scopeledger._wait``'s
    ``Grace.verdict``: a moment's stand-back for an exited holder whose
    parent lives, to record its release), ``liveness`` itself without one.
    The one hook for a waiter's look (:meth:`Ledger._decide`) and its grant
    under the lock (:meth:`Ledger._check`)."""
    if stand_back is None:
        return liveness
    return lambda n: stand_back(state.holders[n], liveness(n))


def _simulate_reclaim(state: State, name: str, reason: str, verdict: Verdict) -> Reclaimed:
    """Reclaim holder ``name`` in ``state`` (a copy: nothing is recorded),
    as a decision would; what it reclaimed."""
    held = state.holders[name]
    plan = reparent_plan(state, name)
    entry = Reclaimed(name, reason, verdict.why, held.pid, None, tuple((c, p) for c, p in plan), last_seen_ns(held),
                      holder_returncode(verdict, held))
    commit_removal(state, name, state.seq + 1, state.last_ts, state.last_hash)
    return entry


class Hold:
    """Guard tying an allocation to a scope of code or an object's life.

    Attributes: ``ledger``, ``allocation`` (:class:`Allocation`).
    ``release()`` releases it now (only that exact grant, by token); it is
    also called when the ``with`` block exits, when the guard is garbage
    collected, and at interpreter exit. Releasing twice is a no-op. Only the
    process that created the guard releases: in a forked child (which
    inherits a copy of it) all of these do nothing.

    A guard that is not kept (``ledger.hold(...)`` without ``with`` and
    without a reference) is collected at once and its allocation released,
    while the caller may go on using the token it read: that release also
    warns, ``ResourceWarning`` naming the holder (as an unclosed file does;
    Python shows it with ``-X dev`` or ``-W default``).
    """

    def __init__(self, ledger: Ledger, allocation: Allocation) -> None:
        self.ledger = ledger
        self.allocation = allocation
        # The finalizer is told whether the guard is still there when it runs
        # (release(), close(), interpreter exit) or was collected.
        self._finalizer = weakref.finalize(self, _release_quietly, ledger, allocation.name,
                                           allocation.token, os.getpid(), weakref.ref(self))

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def release(self) -> None:
        """Release now (no-op if already released or no longer live)."""
        self._finalizer()

    def __enter__(self) -> Allocation:
        return self.allocation

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"<Hold {shown(self.allocation.name)} token={self.allocation.token} {state}>"


def _release_quietly(ledger: Ledger, name: str, token: int, owner_pid: int,
                     guard: "weakref.ref[Hold] | None" = None) -> None:
    if os.getpid() != owner_pid:
        return  # a forked child's copy of the guard: the allocation is not its own
    if guard is not None and guard() is None:
        with first_use:
            import warnings

        warnings.warn(f"the hold() guard of holder {name!r} (token {token}) was garbage collected: "
                      "its allocation is released; keep the guard (with ledger.hold(...) as alloc:, "
                      "or a reference and .release())", ResourceWarning, stacklevel=2)
    with contextlib.suppress(UnknownHolder):
        try:
            ledger.release(name, token=token)
        except LedgerError as exc:
            log.warning("could not release holder %r: %s", name, exc)
        except (OSError, ValueError) as exc:  # closed ledger at interpreter exit
            log.warning("could not release holder %r: %s", name, exc)
