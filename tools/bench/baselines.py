"""Baselines that do scopeledger's job, for benchmarks.

Each baseline records which holder may read or write which part of a file tree and
refuses a registration whose write rules overlap the write rules of another live holder.
They share one small interface (:class:`Baseline`):

- ``register(name, rules)``: add a top-level holder; raises :class:`Conflict` on a
  write-write overlap with another live holder or when ``name`` is already live;
- ``release(name)``: remove a live holder; raises :class:`KeyError` for an unknown name;
- ``find_conflict(rules)``: the name of a live holder whose write rules overlap one of
  the write rules in ``rules``, or ``None``;
- ``close()``.

A rule is ``(path, permission, recursive)``: ``path`` an absolute POSIX path,
``permission`` ``"read"`` or ``"write"``, ``recursive`` a bool. Paths are normalised
lexically (``posixpath.normpath``) by the two checking baselines; the floor writes what it
is given.

The baselines:

- :class:`SeedDesign`: the seed's Rust design, one JSON file rewritten whole per operation,
  parsed with the standard library's :mod:`json` (the first baseline, kept for comparison
  with earlier figures) or, with ``codec="orjson"``, with orjson: the seed was Rust
  (serde_json), so the fair comparison parses at native speed;
- :class:`SQLiteLedger`: an indexed SQLite (WAL) implementation with an event table, a
  holders table and a rules table, several statements per operation;
- :class:`LeanSQLite`: the same job done the lean way (issue 18): an events table and an
  allocations table, the conflict (or a duplicate name) found by one query, one
  transaction per operation and no statement more than the job needs;
- :class:`RawFloor`: only the IO a JSONL ledger cannot avoid (lock, one append, unlock).

Every instance holds OS resources (file descriptors, an SQLite connection) and must be
created in the process that uses it, never inherited across ``fork``. No instance is
thread-safe. Run this file to self-check them (``python tools/bench/baselines.py``);
``tests/test_bench_baselines.py`` checks that the checking baselines refuse exactly what
scopeledger refuses on the same random workload.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import posixpath
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol

import orjson
import psutil

Rule = tuple[str, str, bool]
"""``(path, permission, recursive)``; permission is ``"read"`` or ``"write"``."""

PERMISSIONS = ("read", "write")


class Conflict(Exception):
    """Raised by ``register`` when a write rule overlaps a live holder's write rule, or
    when the name is already taken by a live holder.

    Attributes:
        name: the holder that was refused.
        owner: the live holder in the way (for a duplicate name, ``name`` itself).
        reason: ``"overlap"`` or ``"duplicate"``.
    """

    def __init__(self, name: str, owner: str, reason: str) -> None:
        self.name = name
        self.owner = owner
        self.reason = reason
        if reason == "duplicate":
            message = f"holder name already live: {name}"
        else:
            message = f"write scope of {name} overlaps live holder {owner}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.owner, self.reason))


class Baseline(Protocol):
    """What every baseline offers; see the module docstring for the semantics."""

    def register(self, name: str, rules: list[Rule]) -> None: ...

    def release(self, name: str) -> None: ...

    def find_conflict(self, rules: list[Rule]) -> str | None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- rules


def normalise_path(path: str) -> str:
    """Return ``path`` lexically normalised: absolute, no ``.``/``..``, no trailing slash.

    Raises:
        ValueError: ``path`` is not absolute or contains NUL.
    """
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"not an absolute path without NUL: {path!r}")
    norm = posixpath.normpath(path)
    # normpath keeps a leading "//" (POSIX leaves it implementation-defined); we do not.
    return "/" + norm.lstrip("/")


def normalise_rules(rules: Sequence[Rule]) -> list[Rule]:
    """Return ``rules`` with normalised paths and checked permissions.

    Raises:
        ValueError: a path is not absolute or a permission is not ``read``/``write``.
    """
    out: list[Rule] = []
    for path, permission, recursive in rules:
        if permission not in PERMISSIONS:
            raise ValueError(f"permission must be 'read' or 'write': {permission!r}")
        out.append((normalise_path(path), permission, bool(recursive)))
    return out


def _is_self_or_ancestor(a: str, b: str) -> bool:
    """``a`` is ``b`` or an ancestor of ``b`` (component-wise, on normalised paths)."""
    return a == b or b.startswith(a if a.endswith("/") else a + "/")


def _is_direct_child(child: str, parent: str) -> bool:
    """``child`` is a direct child of ``parent`` (normalised paths)."""
    return child != parent and posixpath.dirname(child) == parent


def rules_overlap(a_path: str, a_rec: bool, b_path: str, b_rec: bool) -> bool:
    """Whether what rule a covers intersects what rule b covers.

    The seed's four-case ``rules_overlap``: recursive covers the path and everything
    below it; non-recursive covers the path and its direct children.
    """
    if a_rec and b_rec:
        return _is_self_or_ancestor(a_path, b_path) or _is_self_or_ancestor(b_path, a_path)
    if a_rec:
        return _is_self_or_ancestor(a_path, b_path) or _is_direct_child(a_path, b_path)
    if b_rec:
        return _is_self_or_ancestor(b_path, a_path) or _is_direct_child(b_path, a_path)
    return a_path == b_path or _is_direct_child(a_path, b_path) or _is_direct_child(b_path, a_path)


def _write_rules(rules: Sequence[Rule]) -> list[tuple[str, bool]]:
    return [(path, rec) for path, permission, rec in rules if permission == "write"]


def socket_path_for(directory: str, name: str) -> str:
    """The runtime socket path of holder ``name``: the one place that computes it
    (seed finding 2)."""
    return os.path.join(directory, "run", name, "sock")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return str(psutil.boot_time())


def actor() -> dict[str, Any]:
    """Identity of the calling process as a ledger event records it: pid, process start
    time (seconds since the epoch, from psutil) and boot id."""
    return {"pid": os.getpid(), "start": psutil.Process().create_time(), "boot": _boot_id()}


def _write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    """Write all of ``data`` (at ``offset`` with pwrite, else at the file position)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


def _json_dumps(doc: Any) -> bytes:
    """Compact JSON bytes with the standard library (SeedDesign's ``codec="json"``)."""
    return json.dumps(doc, separators=(",", ":")).encode()


class _Closing:
    """Context-manager support shared by the baselines."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Closing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- seed


class SeedDesign(_Closing):
    """The seed's Rust design (``crates/pod/src/scope_lock.rs``), reproduced in Python.

    Models: ALL allocations live in one JSON document, ``<directory>/scope.lock.json``.
    Every operation (queries too) opens the file, takes ``flock(LOCK_EX)``, reads and
    parses the whole document, scans every allocation's rules with the four-case
    :func:`rules_overlap`, and, if it changed anything, truncates the file and rewrites the
    whole document; then it unlocks and closes (the seed's ``LockFileGuard``: open+lock,
    ``save``, unlock on drop; an error before ``save`` leaves the file untouched).

    Cost per operation is O(total rules) parse + scan + serialise, plus open/close, so it
    grows with the number of live holders. Nothing is kept between operations.

    Serialisation: the seed used ``serde_json``; this uses compact JSON (the seed's exact
    pretty/compact choice is not in the review; compact is the cheaper of the two), parsed
    and written by stdlib :mod:`json` (``codec="json"``, the default, as in the first
    benchmarks) or by orjson (``codec="orjson"``: a parser at native speed, as the seed's
    Rust had; issue 18 found the stdlib version flattered scopeledger about 3×). Both
    write the same document. Allocation record: ``pod_name``, ``pid``, ``socket``,
    ``delegated_from``, ``scope.rules`` (list of ``{path, permission, recursive}``).

    Args:
        directory: created (mode 0700) if missing.
        fsync: ``os.fsync`` the file after each rewrite, before unlocking.
        codec: ``"json"`` (stdlib) or ``"orjson"``.

    Raises:
        ValueError: an unknown ``codec``.
    """

    FILENAME = "scope.lock.json"
    CODECS = ("json", "orjson")

    def __init__(self, directory: str, fsync: bool = False, codec: str = "json") -> None:
        if codec not in self.CODECS:
            raise ValueError(f"codec must be one of {self.CODECS}: {codec!r}")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, self.FILENAME)
        self.fsync = fsync
        self.codec = codec
        self._loads = orjson.loads if codec == "orjson" else json.loads
        self._dumps = orjson.dumps if codec == "orjson" else _json_dumps

    @contextmanager
    def _guard(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Open, lock, read and parse: yields ``(fd, document)``; unlocks and closes."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            chunks: list[bytes] = []
            offset = 0
            while offset < size:
                chunk = os.pread(fd, size - offset, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
            raw = b"".join(chunks)
            doc = self._loads(raw) if raw else {"version": 1, "allocations": []}
            yield fd, doc
        finally:
            # Closing drops the flock too; unlock explicitly like the seed's Drop.
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _save(self, fd: int, doc: dict[str, Any]) -> None:
        """Truncate and rewrite the whole document (the seed's ``save``)."""
        data = self._dumps(doc)
        os.ftruncate(fd, 0)
        _write_all(fd, data, 0)
        if self.fsync:
            os.fsync(fd)

    @staticmethod
    def _find_conflict_owner(allocs: list[dict[str, Any]], writes: list[tuple[str, bool]]) -> str | None:
        """The seed's ``find_conflict_owner``: find a top-level allocation whose write
        rules overlap ``writes``, then descend the delegation tree to the deepest holder
        that still overlaps."""

        def overlaps(alloc: dict[str, Any]) -> bool:
            return any(
                r["permission"] == "write" and rules_overlap(r["path"], r["recursive"], p, rec)
                for r in alloc["scope"]["rules"]
                for p, rec in writes
            )

        if not writes:
            return None
        current = next((a for a in allocs if a["delegated_from"] is None and overlaps(a)), None)
        if current is None:
            return None
        while True:
            child = next(
                (a for a in allocs if a["delegated_from"] == current["pod_name"] and overlaps(a)),
                None,
            )
            if child is None:
                return str(current["pod_name"])
            current = child

    def register(self, name: str, rules: list[Rule]) -> None:
        """Register top-level holder ``name`` with ``rules``, one whole-file rewrite.

        Raises:
            Conflict: ``name`` is live, or a write rule overlaps a live holder's.
            ValueError: a rule is malformed.
        """
        rules = normalise_rules(rules)
        with self._guard() as (fd, doc):
            allocs: list[dict[str, Any]] = doc["allocations"]
            if any(a["pod_name"] == name for a in allocs):
                raise Conflict(name, name, "duplicate")
            owner = self._find_conflict_owner(allocs, _write_rules(rules))
            if owner is not None:
                raise Conflict(name, owner, "overlap")
            allocs.append(
                {
                    "pod_name": name,
                    "pid": os.getpid(),
                    "socket": socket_path_for(self.directory, name),
                    "delegated_from": None,
                    "scope": {
                        "rules": [
                            {"path": p, "permission": perm, "recursive": rec} for p, perm, rec in rules
                        ]
                    },
                }
            )
            self._save(fd, doc)

    def release(self, name: str) -> None:
        """Remove holder ``name``; its children are re-parented to its parent.

        Raises:
            KeyError: ``name`` is not live (the file is not rewritten).
        """
        with self._guard() as (fd, doc):
            allocs: list[dict[str, Any]] = doc["allocations"]
            gone = next((a for a in allocs if a["pod_name"] == name), None)
            if gone is None:
                raise KeyError(name)
            allocs.remove(gone)
            for a in allocs:
                if a["delegated_from"] == name:
                    a["delegated_from"] = gone["delegated_from"]
            self._save(fd, doc)

    def find_conflict(self, rules: list[Rule]) -> str | None:
        """Name of the live holder whose write rules overlap a write rule in ``rules``
        (deepest in its delegation chain), or ``None``. Locks and reads the whole file.

        Raises:
            ValueError: a rule is malformed.
        """
        writes = _write_rules(normalise_rules(rules))
        with self._guard() as (_fd, doc):
            return self._find_conflict_owner(doc["allocations"], writes)

    def close(self) -> None:
        """Nothing to release: every operation opens and closes the file itself."""


# --------------------------------------------------------------------------- sqlite

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,            -- time.time_ns()
    type TEXT NOT NULL,             -- 'registered' | 'released'
    body TEXT NOT NULL              -- the event as JSON
);
CREATE TABLE IF NOT EXISTS holders(
    name TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    parent TEXT
);
CREATE TABLE IF NOT EXISTS rules(
    holder TEXT NOT NULL,
    path TEXT NOT NULL,
    permission TEXT NOT NULL CHECK (permission IN ('read', 'write')),
    recursive INTEGER NOT NULL
);
-- Covering index: every conflict query is an index-only lookup (equality on permission,
-- then IN-list seeks or a range scan on path).
CREATE INDEX IF NOT EXISTS rules_by_permission_path ON rules(permission, path, recursive, holder);
CREATE INDEX IF NOT EXISTS rules_by_holder ON rules(holder);
CREATE INDEX IF NOT EXISTS holders_by_parent ON holders(parent);
"""

_SQL_BELOW = (
    "SELECT holder FROM rules WHERE permission = 'write' AND path > ? AND path < ? LIMIT 1"
)
_SQL_CHILD = (
    "SELECT holder FROM rules WHERE permission = 'write' AND path > ? AND path < ?"
    " AND instr(substr(path, ?), '/') = 0 LIMIT 1"
)


def _self_and_ancestors(path: str) -> list[str]:
    """``/a/b`` -> ``['/', '/a', '/a/b']`` (normalised path)."""
    if path == "/":
        return ["/"]
    parts = path.split("/")[1:]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


class SQLiteLedger(_Closing):
    """An indexed SQLite implementation of the ledger, as a competent user would write it.

    Models: ``<directory>/ledger.sqlite3`` in WAL mode, ``synchronous=NORMAL`` (commits
    are durable at the next checkpoint, like an un-fsynced append), or ``FULL`` with
    ``fsync=True`` (each commit fsyncs the WAL). Tables ``events(seq, ts, type, body)``
    (append-only history; ``ts`` in ns, ``body`` orjson text), ``holders(name PRIMARY
    KEY, pid, parent)`` and ``rules(holder, path, permission, recursive)`` with a
    covering index on ``(permission, path, recursive, holder)``.

    Each ``register``/``release`` is one ``BEGIN IMMEDIATE`` transaction (SQLite's
    database write lock, waited on with a busy timeout) that validates, appends one event
    row and updates the state tables. Conflicts are found by indexed queries per write
    rule ``(p, rec)``, never by scanning all rules:

    - rules at ``p`` or its ancestors: ``path IN (ancestors)`` that are recursive, or
      non-recursive at ``p`` itself or at ``p``'s parent (which covers ``p``);
    - rules strictly below ``p``: range scan ``path > p||'/' AND path < p||'0'`` ('0'
      is the character after '/'); every hit overlaps if ``p`` is recursive, only direct
      children do if not (so a non-recursive ``p`` range-scans its write descendants).

    Cost per operation is O(depth) index seeks plus one range probe per write rule,
    independent of the number of holders (until the range holds many non-overlapping
    descendants of a non-recursive rule).

    ``find_conflict`` returns the holder of an overlapping rule; it does not descend a
    delegation tree (the benchmark only registers top-level holders).

    Args:
        directory: created (mode 0700) if missing.
        fsync: ``synchronous=FULL`` instead of ``NORMAL``.
    """

    FILENAME = "ledger.sqlite3"

    def __init__(self, directory: str, fsync: bool = False) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, self.FILENAME)
        # Create the file 0600 ourselves; sqlite would honour the umask.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._actor = actor()
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        with self._transaction():
            for statement in _SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        self._db.execute(f"BEGIN {mode}")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _owner(self, writes: list[tuple[str, bool]]) -> str | None:
        """A holder whose write rules overlap one of ``writes`` (normalised), or None."""
        db = self._db
        for p, rec in writes:
            ancestors = _self_and_ancestors(p)
            parent = ancestors[-2] if len(ancestors) > 1 else None
            row = db.execute(
                "SELECT holder FROM rules WHERE permission = 'write'"
                f" AND path IN ({','.join('?' * len(ancestors))})"
                " AND (recursive = 1 OR path = ? OR path = ?) LIMIT 1",
                (*ancestors, p, parent),
            ).fetchone()
            if row is not None:
                return str(row[0])
            prefix = p if p == "/" else p + "/"
            upper = prefix[:-1] + "0"
            if rec:
                row = db.execute(_SQL_BELOW, (prefix, upper)).fetchone()
            else:
                row = db.execute(_SQL_CHILD, (prefix, upper, len(prefix) + 1)).fetchone()
            if row is not None:
                return str(row[0])
        return None

    def _event(self, type_: str, payload: dict[str, Any]) -> None:
        ts = time.time_ns()
        body = orjson.dumps({"v": 1, "ts": ts, "actor": self._actor, "type": type_, **payload})
        self._db.execute(
            "INSERT INTO events(ts, type, body) VALUES (?, ?, ?)", (ts, type_, body.decode())
        )

    def register(self, name: str, rules: list[Rule]) -> None:
        """Register top-level holder ``name`` with ``rules`` in one transaction.

        Raises:
            Conflict: ``name`` is live, or a write rule overlaps a live holder's.
            ValueError: a rule is malformed.
        """
        rules = normalise_rules(rules)
        pid = os.getpid()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM holders WHERE name = ?", (name,)).fetchone():
                raise Conflict(name, name, "duplicate")
            owner = self._owner(_write_rules(rules))
            if owner is not None:
                raise Conflict(name, owner, "overlap")
            holder = {"name": name, "pid": pid, "rules": rules, "parent": None}
            self._event("registered", {"holder": holder})
            db.execute("INSERT INTO holders(name, pid, parent) VALUES (?, ?, NULL)", (name, pid))
            db.executemany(
                "INSERT INTO rules(holder, path, permission, recursive) VALUES (?, ?, ?, ?)",
                [(name, p, perm, int(rec)) for p, perm, rec in rules],
            )

    def release(self, name: str) -> None:
        """Remove holder ``name`` in one transaction; children move to its parent.

        Raises:
            KeyError: ``name`` is not live.
        """
        with self._transaction() as db:
            row = db.execute("SELECT parent FROM holders WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise KeyError(name)
            self._event("released", {"name": name, "reason": "release"})
            db.execute("UPDATE holders SET parent = ? WHERE parent = ?", (row[0], name))
            db.execute("DELETE FROM rules WHERE holder = ?", (name,))
            db.execute("DELETE FROM holders WHERE name = ?", (name,))

    def find_conflict(self, rules: list[Rule]) -> str | None:
        """Name of a live holder whose write rules overlap a write rule in ``rules``, or
        ``None``; one read transaction (a consistent WAL snapshot, no write lock).

        Raises:
            ValueError: a rule is malformed.
        """
        writes = _write_rules(normalise_rules(rules))
        with self._transaction("DEFERRED"):
            return self._owner(writes)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


# --------------------------------------------------------------------------- lean sqlite

_LEAN_SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL              -- the event as orjson bytes (ts in ns inside)
);
CREATE TABLE IF NOT EXISTS allocations(
    holder TEXT NOT NULL,
    path TEXT NOT NULL,
    permission TEXT NOT NULL,
    recursive INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS allocations_by_path ON allocations(permission, path, recursive, holder);
CREATE INDEX IF NOT EXISTS allocations_by_holder ON allocations(holder);
"""


def _lean_conflict_query(name: str | None, writes: list[tuple[str, bool]]) -> tuple[str, list[Any]]:
    """One compound SELECT (``UNION ALL``, ``LIMIT 1``) returning a holder in the way of
    ``writes`` (normalised ``(path, recursive)`` pairs), or, first, ``name`` itself when it
    is live; with its parameters.

    Per write rule ``(p, rec)``, the same two index probes as :class:`SQLiteLedger`: rules
    at ``p`` or an ancestor that cover ``p`` (recursive, or non-recursive at ``p`` or at
    its parent), and rules strictly below ``p`` (a range scan on the path index; only
    direct children when ``p`` is not recursive)."""
    parts: list[str] = []
    params: list[Any] = []
    if name is not None:
        parts.append("SELECT holder FROM allocations WHERE holder = ?")
        params.append(name)
    for p, rec in writes:
        ancestors = _self_and_ancestors(p)
        parent = ancestors[-2] if len(ancestors) > 1 else None
        parts.append(
            "SELECT holder FROM allocations WHERE permission = 'write'"
            f" AND path IN ({','.join('?' * len(ancestors))})"
            " AND (recursive = 1 OR path = ? OR path = ?)"
        )
        params += [*ancestors, p, parent]
        prefix = p if p == "/" else p + "/"
        upper = prefix[:-1] + "0"  # '0' is the character after '/'
        if rec:
            parts.append("SELECT holder FROM allocations WHERE permission = 'write' AND path > ? AND path < ?")
            params += [prefix, upper]
        else:
            parts.append(
                "SELECT holder FROM allocations WHERE permission = 'write' AND path > ? AND path < ?"
                " AND instr(substr(path, ?), '/') = 0"
            )
            params += [prefix, upper, len(prefix) + 1]
    return " UNION ALL ".join(parts) + " LIMIT 1", params


class LeanSQLite(_Closing):
    """The ledger's job done the lean way in SQLite (WAL): the fair SQLite baseline.

    Models: ``<directory>/ledger.sqlite3`` in WAL mode, ``synchronous=NORMAL`` (``FULL``
    with ``fsync=True``). Two tables: ``events(seq, body)`` (the append-only history, the
    event as orjson bytes with ``ts`` in ns, the actor and the payload, as the floor's
    line has them) and ``allocations(holder, path, permission, recursive)`` (one row per
    rule of each live holder: the current state), with an index on ``(permission, path,
    recursive, holder)`` for the conflict probes and one on ``holder`` for the duplicate
    check and release.

    Per operation, one ``BEGIN IMMEDIATE`` transaction and only the statements the job
    needs:

    - ``register``: one query that finds a live holder of the same name or one whose write
      rules overlap the request (:func:`_lean_conflict_query`), one ``INSERT`` of the
      event, one ``INSERT`` of all the rules' rows, ``COMMIT``;
    - ``release``: one ``DELETE`` of the holder's rows (none deleted: :class:`KeyError`),
      one ``INSERT`` of the event, ``COMMIT``.

    Not modelled, each of which would add statements SQLite does not need for this
    benchmark's workload (top-level holders only): delegation and re-parenting, and a
    hash chain over the events (reading the previous event's hash would be one more query
    per operation). Leaving them out favours SQLite. ``find_conflict`` is the same query
    in a read transaction.

    Args:
        directory: created (mode 0700) if missing.
        fsync: ``synchronous=FULL`` instead of ``NORMAL``.
    """

    FILENAME = "ledger.sqlite3"

    def __init__(self, directory: str, fsync: bool = False) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, self.FILENAME)
        # Create the file 0600 ourselves; sqlite would honour the umask.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._actor = actor()
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("BEGIN IMMEDIATE")
        for statement in _LEAN_SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._db.execute("COMMIT")

    def _body(self, type_: str, payload: dict[str, Any]) -> bytes:
        return orjson.dumps({"v": 1, "ts": time.time_ns(), "actor": self._actor, "type": type_, **payload})

    def register(self, name: str, rules: list[Rule]) -> None:
        """Register top-level holder ``name`` with ``rules`` in one transaction.

        Raises:
            Conflict: ``name`` is live, or a write rule overlaps a live holder's.
            ValueError: a rule is malformed.
        """
        rules = normalise_rules(rules)
        sql, params = _lean_conflict_query(name, _write_rules(rules))
        body = self._body("registered", {"holder": {"name": name, "pid": os.getpid(), "rules": rules,
                                                     "parent": None}})
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(sql, params).fetchone()
            if row is not None:
                owner = str(row[0])
                raise Conflict(name, owner, "duplicate" if owner == name else "overlap")
            db.execute("INSERT INTO events(body) VALUES (?)", (body,))
            if rules:
                db.execute(
                    "INSERT INTO allocations(holder, path, permission, recursive) VALUES "
                    + ",".join(["(?, ?, ?, ?)"] * len(rules)),
                    [x for p, perm, rec in rules for x in (name, p, perm, rec)],
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def release(self, name: str) -> None:
        """Remove holder ``name`` in one transaction.

        Raises:
            KeyError: ``name`` is not live.
        """
        body = self._body("released", {"name": name, "reason": "release"})
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("DELETE FROM allocations WHERE holder = ?", (name,)).rowcount == 0:
                raise KeyError(name)
            db.execute("INSERT INTO events(body) VALUES (?)", (body,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def find_conflict(self, rules: list[Rule]) -> str | None:
        """Name of a live holder whose write rules overlap a write rule in ``rules``, or
        ``None``; one query in a read transaction.

        Raises:
            ValueError: a rule is malformed.
        """
        writes = _write_rules(normalise_rules(rules))
        if not writes:
            return None
        sql, params = _lean_conflict_query(None, writes)
        db = self._db
        db.execute("BEGIN DEFERRED")
        try:
            row = db.execute(sql, params).fetchone()
        finally:
            db.execute("COMMIT")
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


# --------------------------------------------------------------------------- floor


class RawFloor(_Closing):
    """The IO floor of a JSONL event ledger: what every operation must at least cost.

    Models: per operation, build the event dict scopeledger would append (``v``, ``seq``,
    ``ts`` in ns, ``actor`` {pid, start, boot}, ``prev`` = 32-hex blake2b-128 of the
    previous line this instance wrote, ``type``, payload), serialise it with
    :func:`orjson.dumps`, then ``flock(LOCK_EX)``, one ``os.write`` to
    ``<directory>/events.jsonl`` opened ``O_APPEND``, (``os.fsync`` if ``fsync``),
    ``flock(LOCK_UN)``.

    Nothing else: no reading the log's tail, no fold, no conflict check
    (``find_conflict`` always returns ``None``, ``register`` never raises ``Conflict``,
    ``release`` never raises ``KeyError``). ``seq`` and ``prev`` are local to the
    instance, so with several writers they are not a valid chain.

    Args:
        directory: created (mode 0700) if missing.
        fsync: ``os.fsync`` each line before unlocking.
        unlocked: skip ``flock`` entirely: the pure-append floor (``O_APPEND`` writes
            of one line stay whole on a local filesystem, but nothing orders a
            check-then-append).
    """

    FILENAME = "events.jsonl"

    def __init__(self, directory: str, fsync: bool = False, *, unlocked: bool = False) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, self.FILENAME)
        self.fsync = fsync
        self.unlocked = unlocked
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._actor = actor()
        self._seq = 0
        self._prev = "0" * 32

    def _append(self, event: dict[str, Any]) -> None:
        self._seq += 1
        line = (
            orjson.dumps(
                {"v": 1, "seq": self._seq, "ts": time.time_ns(), "actor": self._actor, "prev": self._prev}
                | event
            )
            + b"\n"
        )
        fd = self._fd
        if self.unlocked:
            os.write(fd, line)
            if self.fsync:
                os.fsync(fd)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.write(fd, line)
                if self.fsync:
                    os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        self._prev = hashlib.blake2b(line, digest_size=16).hexdigest()

    def register(self, name: str, rules: list[Rule]) -> None:
        """Append one ``registered`` event line; checks nothing."""
        holder = {"name": name, "pid": os.getpid(), "rules": [list(r) for r in rules], "parent": None}
        self._append({"type": "registered", "holder": holder})

    def release(self, name: str) -> None:
        """Append one ``released`` event line; checks nothing."""
        self._append({"type": "released", "name": name, "reason": "release"})

    def find_conflict(self, rules: list[Rule]) -> str | None:
        """Always ``None``: the floor keeps no state."""
        return None

    def close(self) -> None:
        """Close the log file descriptor."""
        os.close(self._fd)


# --------------------------------------------------------------------------- self-check


def _covered(path: str, rec: bool, universe: list[str]) -> set[str]:
    """Brute force: the paths of ``universe`` that rule ``(path, rec)`` covers."""
    return {
        u
        for u in universe
        if _is_self_or_ancestor(path, u) and (rec or u == path or _is_direct_child(u, path))
    }


def _check_rules_overlap() -> None:
    """rules_overlap agrees with set intersection over a tree deep enough to decide."""
    names = "ab"
    universe = ["/"] + [
        "/" + "/".join(t) for depth in range(1, 6) for t in itertools.product(names, repeat=depth)
    ]
    candidates = [u for u in universe if u.count("/") <= 4 or u == "/"]
    for a, b in itertools.product(candidates, repeat=2):
        for a_rec, b_rec in itertools.product((False, True), repeat=2):
            expected = bool(_covered(a, a_rec, universe) & _covered(b, b_rec, universe))
            assert rules_overlap(a, a_rec, b, b_rec) == expected, (a, a_rec, b, b_rec)
    # The requirements' examples, and string-prefix traps.
    assert rules_overlap("/r/src", True, "/r/src/a/b", False)
    assert rules_overlap("/r/src", False, "/r/src/a", True)
    assert not rules_overlap("/r/src", False, "/r/src/a/b", False)
    assert not rules_overlap("/r/src/a", False, "/r/src/b", False)
    assert not rules_overlap("/r/src", True, "/r/srcx", True)
    assert not rules_overlap("/r/src", False, "/r/src-old/x", False)


def _check_baseline(make: Callable[[str], Any], directory: str) -> None:
    with make(directory) as ledger:
        for i in range(100):
            ledger.register(f"h{i}", [(f"/r/h{i}", "write", i % 2 == 0), ("/r", "read", True)])
        for name, rules, owner in [
            ("big", [("/r", "write", True)], None),  # owner: any of h*
            ("child", [("/r/h0/x/y", "write", False)], "h0"),  # under a recursive rule
            ("direct", [("/r/h1/x", "write", True)], "h1"),  # direct child of a non-rec rule
            ("parent", [("/r", "write", False)], None),  # non-rec /r covers /r/h*
            ("root", [("/", "write", True)], None),
            ("h5", [("/elsewhere", "write", True)], "h5"),  # duplicate name
        ]:
            try:
                ledger.register(name, rules)
            except Conflict as e:
                assert owner is None or e.owner == owner, (name, e.owner)
                assert e.owner.startswith("h")
            else:
                raise AssertionError(f"{make}: {name} should conflict")
        # No conflict: deeper than a non-recursive rule's children, reads, string prefix.
        ledger.register("deep", [("/r/h1/x/y", "write", True)])
        ledger.register("reader", [("/r/h0", "read", True)])
        ledger.register("prefix", [("/r/h1x", "write", True)])
        assert ledger.find_conflict([("/r/h3/z", "write", True)]) == "h3"
        assert ledger.find_conflict([("/r/h3/z", "read", True)]) is None
        ledger.release("h3")
        assert ledger.find_conflict([("/r/h3/z", "write", True)]) is None
        ledger.register("h3b", [("/r/h3/z", "write", True)])
        try:
            ledger.release("h3")
        except KeyError:
            pass
        else:
            raise AssertionError(f"{make}: releasing a gone holder should fail")
    with make(directory) as reopened:  # state survives reopening
        assert reopened.find_conflict([("/r/h3", "write", False)]) == "h3b"


#: The checking baselines by name, as the benchmarks call them (the floor checks nothing).
CHECKING: dict[str, Callable[[str], Any]] = {
    "seed": SeedDesign,
    "seed-orjson": lambda d: SeedDesign(d, codec="orjson"),
    "sqlite": SQLiteLedger,
    "sqlite-lean": LeanSQLite,
}


def _check_differential(directory: str, seed: int = 7, steps: int = 400) -> None:
    """The checking baselines (SeedDesign's scan, the SQL of SQLiteLedger and LeanSQLite)
    agree on random operations."""
    rng = random.Random(seed)
    # Few names so rules collide often; "a-", "a0" and "é"/"~" sort just around and far
    # past "a/" and "a0", the bounds of the range scan below "/a".
    seg = ["a", "b", "a-", "a0", "~", "é"]

    def rand_rule() -> Rule:
        depth = rng.randint(0, 4)
        path = "/" + "/".join(rng.choice(seg) for _ in range(depth))
        return (path, rng.choice(PERMISSIONS), rng.random() < 0.5)

    backends = [make(os.path.join(directory, name)) for name, make in CHECKING.items()]
    try:
        live: dict[str, list[Rule]] = {}
        for step in range(steps):
            if live and rng.random() < 0.3:
                name = rng.choice(sorted(live))
                for x in backends:
                    x.release(name)
                del live[name]
                continue
            rules = [rand_rule() for _ in range(rng.randint(1, 3))]
            owners = [x.find_conflict(rules) for x in backends]
            assert len({o is None for o in owners}) == 1, (rules, owners)
            for owner in owners:
                if owner is not None:
                    assert any(
                        rules_overlap(p, r, q, s)
                        for p, perm, r in rules
                        if perm == "write"
                        for q, qperm, s in live[owner]
                        if qperm == "write"
                    ), (rules, owner)
            outcomes = []
            for x in backends:
                try:
                    x.register(f"n{step}", rules)
                    outcomes.append(True)
                except Conflict:
                    outcomes.append(False)
            assert set(outcomes) == {owners[0] is None}, (rules, outcomes)
            if outcomes[0]:
                live[f"n{step}"] = rules
    finally:
        for x in backends:
            x.close()


def _check_floor(directory: str) -> None:
    for unlocked in (False, True):
        sub = os.path.join(directory, f"unlocked-{unlocked}")
        with RawFloor(sub, unlocked=unlocked) as floor:
            for i in range(100):
                floor.register(f"h{i}", [(f"/r/h{i}", "write", True)])
            assert floor.find_conflict([("/r/h0", "write", True)]) is None
            floor.release("h0")
        with open(os.path.join(sub, RawFloor.FILENAME), "rb") as f:
            lines = f.read().splitlines()
        assert len(lines) == 101
        events = [orjson.loads(line) for line in lines]
        assert [e["seq"] for e in events] == list(range(1, 102))
        assert events[1]["prev"] == hashlib.blake2b(lines[0] + b"\n", digest_size=16).hexdigest()
        assert events[0]["holder"]["rules"] == [["/r/h0", "write", True]]
        assert events[-1]["type"] == "released"
        print(f"  RawFloor(unlocked={unlocked}): {len(lines)} lines, first line {len(lines[0]) + 1} bytes")


def _self_check() -> None:
    started = time.perf_counter()
    _check_rules_overlap()
    print("rules_overlap: agrees with brute-force coverage sets")
    with tempfile.TemporaryDirectory(prefix="baselines-") as tmp:
        for name, make in CHECKING.items():
            directory = os.path.join(tmp, name)
            _check_baseline(make, directory)
            modes = {
                n: oct(os.stat(os.path.join(directory, n)).st_mode & 0o777) for n in os.listdir(directory)
            }
            print(f"  {name}: register/conflict/release/find_conflict ok, files {modes}")
        steps = 400
        _check_differential(os.path.join(tmp, "diff"), steps=steps)
        print(f"  {', '.join(CHECKING)} agree on {steps} random operations")
        _check_floor(os.path.join(tmp, "floor"))
    print(f"self-check passed in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    _self_check()
