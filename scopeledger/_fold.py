"""The fold: ledger state as a function of the events, and the queries on it.

``apply(state, event)`` is the whole state machine. It is deterministic and
reads nothing but its arguments: no file, clock, environment or psutil (a
test imports this module with those modules poisoned). For speed it updates
``state`` in place and returns it; :meth:`State.copy` gives an independent
copy where the old state must be kept (time travel does this through
snapshots instead).

The state keeps three path tries (write rules, read rules, exclusive read
rules) keyed by path component, so a conflict query walks the request's components and the
overlapping entries, never every holder.
"""

from __future__ import annotations

import datetime
import itertools
import sys
from typing import Any, Callable, Iterator

import attrs

from ._errors import DelegationError, DuplicateHolder, ScopeConflict, UnknownHolder, format_chain, shown
from ._events import GENESIS_HASH, SHAPES, ChainBroken, FoldError, process_from_log
from ._identity import Lease, ProcessIdentity
from ._time import from_ns
from ._rules import (CONFLICTS_WITH, PERMISSION_TEXT, Permission, ScopeRule, conflicts, covers, identity_json,
                     rule_from_log)

#: Version of the snapshot format (the header and ``State.to_json``) this
#: code writes and reads; a snapshot of another format is skipped (the state
#: is folded from the log instead, and a new snapshot written in time).
# 2: v2 process identities (host, boot, pid, ticks, pidns); 3: rules with their
# identity; 4: max_ts, clock_back_seq; 5: a holder's "advisory" and its lease;
# 6: a holder's "attached_ns" (a format-5 snapshot has no attach times: folded
# from the log instead, so that every reader's last_seen agrees).
SNAPSHOT_FORMAT = 6

#: At most this many rules in one request (register, delegate, a manifest,
#: the command line): the work under the lock and the event's line grow with
#: them. Measured (RELIABILITY.md, "At the edges"): a delegation of 8,000
#: rules from a parent with 8,000 takes ~0.05 s of CPU under the lock;
#: 10,000 rules of the longest paths (4,095 bytes) make a 41 MB line.
MAX_RULES_PER_REQUEST = 10_000


@attrs.frozen(slots=True)
class Allocation:
    """A live holder's grant.

    Attributes:
        name: holder name, ``str``, unique among live holders.
        rules: ``tuple[ScopeRule, ...]`` as granted (canonical paths).
        process: :class:`ProcessIdentity` the allocation is bound to; for a
            reserved delegation, the spawner's until the child attaches.
        parent: the delegating holder's name, or ``None`` at top level.
        token: fencing token, ``int``: the seq of the event that granted it.
            A holder released and registered again gets a new token.
        granted_ns: grant time, integer nanoseconds since the epoch, UTC.
        reserved: ``True`` while a delegation waits for its child to attach.
        socket: the socket path the runtime exposes for it, or ``None``.
        advisory: ``True`` when it was asked with ``advisory=True`` (granted
            even where it conflicts; its event records the conflicts). Its
            rules count against later requests like any holder's.
        lease: its :class:`~scopeledger.Lease` (ttl and last renewal), or
            ``None`` when only its process binds it.
        attached_ns: the time of the last ``attached`` event that bound it
            to a process (its writer identified that process, alive, from
            /proc: a time it was seen alive), integer nanoseconds since the
            epoch, UTC; ``None`` when never attached.
    """

    name: str
    rules: tuple[ScopeRule, ...]
    process: ProcessIdentity
    parent: str | None
    token: int
    granted_ns: int
    reserved: bool = False
    socket: str | None = None
    advisory: bool = False
    lease: Lease | None = None
    attached_ns: int | None = None

    @property
    def pid(self) -> int:
        """The bound process's pid, ``int``."""
        return self.process.pid

    @property
    def granted_at(self) -> datetime.datetime:
        """Grant time as an aware ``datetime`` in UTC, ``granted_ns``
        truncated to the microsecond: the time of its event
        (:attr:`Event.time <scopeledger.Event.time>`)."""
        return from_ns(self.granted_ns)

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "rules": [r.to_json() for r in self.rules],
            "process": self.process.to_json(),
            "parent": self.parent,
            "token": self.token,
            "granted_ns": self.granted_ns,
            "reserved": self.reserved,
            "socket": self.socket,
            "advisory": self.advisory,
        }
        if self.lease is not None:
            out["lease"] = self.lease.to_json()
        if self.attached_ns is not None:
            out["attached_ns"] = self.attached_ns
        return out


# A trie node is a 3-item list (cheaper than an object):
# [children, a, b].
#   children is None (a leaf), one (component, node) tuple (the common
#   single child, without a dict's ~200 bytes), or a dict component -> node.
#   a, b hold the entries at this key:
#     a is None                 no entry;
#     a is a str                one entry: (a, b) is (holder name, rule);
#     a is a dict               several: {(name, code): rule}, or a list of
#                               rules when one holder has more than one rule
#                               with this code here (code = 2 for write + 1
#                               for recursive); b is None. Removal is O(1)
#                               even when thousands read one path, and the
#                               key hashes in C.
# A node exists only while something is held at or below it: empty nodes
# are pruned, so "the node exists" means "something lies here or below".
# Keys (ScopeRule.key, .below, .via; a rule without a key: its path) are
# split at "/": the device is the first component ("254:0/a" -> "254:0",
# "a"), and a path's is "" ("/a" -> "", "a"; "/" -> "").
_intern = sys.intern
_WRITE = Permission.WRITE
_READ = Permission.READ
_CODE = {Permission.READ: 0, Permission.WRITE: 2, Permission.EXCLUSIVE_READ: 4}


def _kparts(key: str) -> list[str]:
    return [""] if key == "/" else key.split("/")


def _node_entries(node: list[Any]) -> Any:
    a = node[1]
    if a is None:
        return ()
    if type(a) is str:
        return ((a, node[2]),)
    out = []
    for (n, _), v in a.items():
        if type(v) is list:
            seen: list[ScopeRule] = []
            for r in v:
                if not any(r is x or r == x for x in seen):  # one holder listing one rule twice
                    seen.append(r)
                    out.append((n, r))
        else:
            out.append((n, v))
    return out


def _child(node: list[Any], part: str) -> Any:
    c = node[0]
    if c is None:
        return None
    if type(c) is tuple:
        return c[1] if c[0] == part else None
    return c.get(part)


def _kids(node: list[Any]) -> Any:
    c = node[0]
    if c is None:
        return ()
    if type(c) is tuple:
        return (c[1],)
    return c.values()


def _trie_add(root: list[Any], key: str, name: str, rule: ScopeRule) -> None:
    node = root
    for part in (key.split("/") if key != "/" else ("",)):
        c = node[0]
        if c is None:
            nxt = [None, None, None]
            node[0] = (_intern(part), nxt)
        elif type(c) is tuple:
            if c[0] == part:
                nxt = c[1]
            else:
                nxt = [None, None, None]
                node[0] = {c[0]: c[1], _intern(part): nxt}
        else:
            nxt = c.get(part)
            if nxt is None:
                nxt = c[_intern(part)] = [None, None, None]
        node = nxt
    a = node[1]
    if a is None:
        node[1] = name
        node[2] = rule
        return
    if type(a) is str:
        r = node[2]
        a = node[1] = {(a, _CODE[r.permission] + r.recursive): r}
        node[2] = None
    k = (name, _CODE[rule.permission] + rule.recursive)
    v = a.get(k)
    if v is None:
        a[k] = rule
    elif type(v) is list:
        v.append(rule)
    else:
        a[k] = [v, rule]


def _trie_remove(root: list[Any], key: str, name: str, rule: ScopeRule) -> None:  # noqa: C901
    # (Complexity 22: one walk down and one prune, each over the node
    # shapes a trie entry takes (none, one rule, a list); on the hot path of
    # every release, where a helper call per node costs more than it reads.)
    node = root
    # Where a branch left empty is cut off: the deepest node on the way
    # that stays whatever happens below it (the root, or a node with
    # entries or with other children), and the component under it.
    keep = node
    parts = _kparts(key)
    keep_part = parts[0]
    for part in parts:
        c = node[0]
        if type(c) is tuple:
            if c[0] != part:
                raise ValueError(f"{shown((name, rule))} is not in the index")
            if node[1] is not None:
                keep, keep_part = node, part
            node = c[1]
        else:
            nxt = c.get(part) if c is not None else None
            if nxt is None:
                raise ValueError(f"{shown((name, rule))} is not in the index")
            keep, keep_part = node, part
            node = nxt
    a = node[1]
    if type(a) is str:
        r = node[2]
        if a != name or (r is not rule and r != rule):
            raise ValueError(f"{shown((name, rule))} is not in the index")
        node[1] = node[2] = None
    elif a is None:
        raise ValueError(f"{shown((name, rule))} is not in the index")
    else:
        k = (name, _CODE[rule.permission] + rule.recursive)
        v = a.get(k)
        if type(v) is list:
            for i, r in enumerate(v):  # noqa: B007 - the index found is used after the loop
                if r is rule:
                    break
            else:
                for i, r in enumerate(v):  # noqa: B007 - as above
                    if r == rule:
                        break
                else:
                    raise ValueError(f"{shown((name, rule))} is not in the index")
            del v[i]
            if len(v) == 1:
                a[k] = v[0]
            return  # entries remain here: nothing to prune
        if v is None or (v is not rule and v != rule):
            raise ValueError(f"{shown((name, rule))} is not in the index")
        del a[k]
        if a:
            if len(a) == 1:
                ((only, _), r), = a.items()
                if type(r) is not list:
                    node[1], node[2] = only, r
            return  # entries remain here: nothing to prune
        node[1] = node[2] = None
    if node[0] is None:
        # Nothing is left at or below the node: cut the branch of empty
        # nodes above it off where it hangs from ``keep``.
        c = keep[0]
        if type(c) is tuple:
            keep[0] = None
        else:
            del c[keep_part]
            if len(c) == 1:
                keep[0] = next(iter(c.items()))


def _walk(root: list[Any], key: str, recursive: bool) -> Iterator[tuple[str, ScopeRule]]:
    """Entries of the trie ``root`` whose (key, recursion) overlaps ``key``
    with ``recursive``: ancestors first (shallowest first), then the key
    itself, then what lies below it."""
    parts = _kparts(key)
    last = len(parts) - 1
    node = root
    for depth, part in enumerate(parts):
        if node[1] is not None:
            for entry in _node_entries(node):
                if entry[1].recursive or depth == last:
                    yield entry
        node = _child(node, part)
        if node is None:
            return
    yield from _node_entries(node)
    if node[0] is None:
        return
    if recursive:
        stack = list(_kids(node))
        while stack:
            n = stack.pop()
            yield from _node_entries(n)
            if n[0] is not None:
                stack.extend(_kids(n))
    else:
        for child in _kids(node):
            yield from _node_entries(child)


def _owned_at(node: list[Any], name: str) -> Iterator[ScopeRule]:
    """The rules holder ``name`` has at ``node``: at most one look-up per
    permission and recursion, however many holders have rules there."""
    a = node[1]
    if a is None:
        return
    if type(a) is str:
        if a == name:
            yield node[2]
        return
    for code in range(6):
        v = a.get((name, code))
        if v is None:
            continue
        if type(v) is list:
            yield from v
        else:
            yield v


def _walk_up(root: list[Any], key: str, name: str) -> Iterator[ScopeRule]:
    """Holder ``name``'s rules in the trie ``root`` that may cover ``key``:
    recursive ones at its strict ancestors, any at the key itself (a
    covering rule lies at or above what it covers; nothing below is
    looked at)."""
    parts = _kparts(key)
    node = root
    for part in parts:
        if node[1] is not None:
            for r in _owned_at(node, name):
                if r.recursive:
                    yield r
        node = _child(node, part)
        if node is None:
            return
    yield from _owned_at(node, name)


# What a delegation's check has found of a trie node, per request (the
# ``seen`` of :meth:`PathIndex.outside`): every rule of the node that is
# recursive, every rule of the node, every rule at or below the node, is
# held by the requester's own line.
_REC_CLEAN, _ALL_CLEAN, _TREE_CLEAN = 1, 2, 3


def _look(node: list[Any], line: set[str], whole: bool, seen: dict[int, int],
          out: list[tuple[str, ScopeRule]]) -> bool:
    """Add to ``out`` the entries of ``node`` (``whole``: all of them, else
    the recursive ones) held outside ``line``; when there are none, say so
    in ``seen`` and return ``True``."""
    before = len(out)
    for entry in _node_entries(node):
        if entry[0] not in line and (whole or entry[1].recursive):
            out.append(entry)
    if len(out) > before:
        return False
    nid = id(node)
    seen[nid] = max(seen.get(nid, 0), _ALL_CLEAN if whole else _REC_CLEAN)
    return True


def _walk_outside(root: list[Any], key: str, recursive: bool, line: set[str],
                  seen: dict[int, int]) -> Iterator[tuple[str, ScopeRule]]:
    """:func:`_walk` without the entries of holders in ``line``, looking at
    each node at most once per request: ``seen`` (kept by the caller for
    one request, node ids alive as long as the state is not changed)
    remembers the nodes found to hold only entries of ``line`` (see
    ``_TREE_CLEAN``), so the next rule of the request that meets them skips
    them, and a whole subtree found so is not walked again."""
    parts = _kparts(key)
    last = len(parts) - 1
    node = root
    found: list[tuple[str, ScopeRule]] = []
    for depth, part in enumerate(parts):
        level = seen.get(id(node), 0)
        if level == _TREE_CLEAN:
            return  # everything at and below it is the line's
        if node[1] is not None:
            whole = depth == last
            if level < (_ALL_CLEAN if whole else _REC_CLEAN) and not _look(node, line, whole, seen, found):
                yield from found
                found.clear()
        node = _child(node, part)
        if node is None:
            return
    yield from _at_and_below(node, recursive, line, seen)


def _at_and_below(node: list[Any], recursive: bool, line: set[str],
                  seen: dict[int, int]) -> Iterator[tuple[str, ScopeRule]]:
    """:func:`_walk_outside` at the key's own node: its entries, then those
    of everything below it (``recursive``) or of its direct children."""
    nid = id(node)
    level = seen.get(nid, 0)
    if level == _TREE_CLEAN:
        return
    found: list[tuple[str, ScopeRule]] = []
    clean = level >= _ALL_CLEAN or _look(node, line, True, seen, found)
    yield from found
    found.clear()
    if node[0] is None:
        if clean:
            seen[nid] = _TREE_CLEAN
        return
    kids_mark = ~nid  # (its direct children's entries are the line's: a non-recursive rule's walk)
    if not recursive and kids_mark in seen:
        return
    below = True  # nothing outside the line met below the node
    # (in _walk's order: depth first from the last child; direct children in order)
    stack = list(_kids(node))
    if not recursive:
        stack.reverse()
    while stack:
        n = stack.pop()
        level = seen.get(id(n), 0)
        if level == _TREE_CLEAN:
            continue
        if level < _ALL_CLEAN and not _look(n, line, True, seen, found):
            below = False
            yield from found
            found.clear()
        if recursive and n[0] is not None:
            stack.extend(_kids(n))
    if below:
        if recursive:
            if clean:
                seen[nid] = _TREE_CLEAN
        else:
            seen[kids_mark] = _ALL_CLEAN


class PathIndex:
    """Two tries of ``(holder, rule)`` entries keyed by key component (see
    :class:`~scopeledger.ScopeRule`): ``root`` holds each rule at its
    :func:`~scopeledger._rules.real_keys` (its key, or its path when it has
    none, and its ``below``), ``via`` at its ``via`` keys. Its size follows
    the live rules, not the history.

    A rule's path is a key only of rules without an identity (granted
    before identities were recorded); a request without one (a process with
    no mount table) is the one thing that needs identified rules by path:
    it builds the ``paths`` trie of them once (O(entries)), kept from then
    on. While no entry has ``below`` or ``via`` or lacks an identity (the
    counts ``multi``, ``weak``, ``lexical``), a request with neither needs
    one walk, which meets each entry once."""

    __slots__ = ("root", "via", "paths", "size", "multi", "weak", "lexical")

    def __init__(self) -> None:
        self.root: list[Any] = [None, None, None]
        self.via: list[Any] = [None, None, None]
        self.paths: list[Any] | None = None
        self.size = 0
        self.multi = 0  # entries with ``below``: held at more than one key
        self.weak = 0  # entries with ``via``
        self.lexical = 0  # entries without an identity

    def add(self, name: str, rule: ScopeRule) -> None:
        ident = rule.ident
        if type(ident) is str:  # the key is that device and the path (the common case)
            path = rule.path
            _trie_add(self.root, ident if path == "/" else ident + path, name, rule)
            if self.paths is not None:
                _trie_add(self.paths, path, name, rule)
        else:
            self._change(name, rule, ident, _trie_add, 1)
        self.size += 1

    def remove(self, name: str, rule: ScopeRule) -> None:
        ident = rule.ident
        if type(ident) is str:
            path = rule.path
            _trie_remove(self.root, ident if path == "/" else ident + path, name, rule)
            if self.paths is not None:
                _trie_remove(self.paths, path, name, rule)
        else:
            self._change(name, rule, ident, _trie_remove, -1)
        self.size -= 1

    def _change(self, name: str, rule: ScopeRule, ident: Any, op: Any, step: int) -> None:
        """:meth:`add` (``op`` ``_trie_add``, ``step`` 1) or :meth:`remove`
        of a rule without an identity or with more than one key."""
        if ident is None:
            op(self.root, rule.path, name, rule)
            self.lexical += step
            return
        key, via, below = ident
        op(self.root, key, name, rule)
        if below:
            self.multi += step
            for k in below:
                op(self.root, k, name, rule)
        if via:
            self.weak += step
            for k in via:
                op(self.via, k, name, rule)
        if self.paths is not None:
            op(self.paths, rule.path, name, rule)

    def overlapping(self, rule: ScopeRule) -> Iterator[tuple[str, ScopeRule]]:
        """Entries whose rule overlaps ``rule`` (:func:`~scopeledger.overlaps`),
        each distinct ``(holder, rule)`` once; for each of ``rule``'s keys,
        ancestors first (shallowest first), then the key itself, then what
        lies below it."""
        ident = rule.ident
        if type(ident) is str and not (self.multi or self.weak or self.lexical):
            path = rule.path
            return _walk(self.root, ident if path == "/" else ident + path, rule.recursive)  # the common case
        return self._deduplicated(rule)

    def outside(self, rule: ScopeRule, line: set[str], seen: dict[int, int]) -> Iterator[tuple[str, ScopeRule]]:
        """:meth:`overlapping` without the entries of holders in ``line``
        (a delegation's own line: the parent and its ancestors), for one
        request whose rules are looked at in turn with the same ``seen``
        (an empty dict at first, the state unchanged meanwhile): a node
        whose entries are all the line's is looked at once per request, not
        once per rule that meets it (a delegation of nested rules met every
        entry of its line once per rule: n rules, n² entries)."""
        ident = rule.ident
        if type(ident) is str and not (self.multi or self.weak or self.lexical):
            path = rule.path
            return _walk_outside(self.root, ident if path == "/" else ident + path, rule.recursive, line, seen)

        def walk(root: list[Any], key: str, rec: bool) -> Iterator[tuple[str, ScopeRule]]:
            return _walk_outside(root, key, rec, line, seen)

        return self._deduplicated(rule, walk)

    def covering(self, rule: ScopeRule, name: str) -> Iterator[ScopeRule]:
        """Holder ``name``'s rules that may cover ``rule``
        (:func:`~scopeledger.covers` decides): those at or above one of the
        places ``rule`` lives (its key, the keys of its ``via``; by path for
        a rule without an identity, and for rules held without one), found
        by a walk up each place's path with one look-up per node for the
        holder's rules. Nothing below ``rule``, and no other holder's rule,
        is looked at."""
        key = rule.key
        if key is None:
            yield from _walk_up(self.root, rule.path, name)
            if self.size:
                yield from _walk_up(self._paths(), rule.path, name)
            return
        yield from _walk_up(self.root, key, name)
        for k in rule.via:
            yield from _walk_up(self.root, k, name)
        if self.lexical:  # rules without an identity: by path
            yield from _walk_up(self.root, rule.path, name)

    def _deduplicated(self, rule: ScopeRule, walk: Callable[..., Iterator[tuple[str, ScopeRule]]] = _walk
                      ) -> Iterator[tuple[str, ScopeRule]]:
        seen: set[tuple[str, int]] = set()
        for entry in self._candidates(rule, walk):
            k = (entry[0], id(entry[1]))
            if k not in seen:
                seen.add(k)
                yield entry

    def _candidates(self, rule: ScopeRule, walk: Callable[..., Iterator[tuple[str, ScopeRule]]] = _walk
                    ) -> Iterator[tuple[str, ScopeRule]]:
        root = self.root
        rec = rule.recursive
        key = rule.key
        if key is None:  # (``key``, ``below``, ``via``: properties that read ``ident``)
            yield from walk(root, rule.path, rec)
            if self.size:
                yield from walk(self._paths(), rule.path, rec)
            return
        via = self.weak > 0
        yield from walk(root, key, rec)
        if via:
            yield from walk(self.via, key, rec)
        for k in rule.below:
            yield from walk(root, k, True)
            if via:
                yield from walk(self.via, k, True)
        for k in rule.via:
            yield from walk(root, k, rec)
        if self.lexical:  # rules without an identity: by path
            yield from walk(root, rule.path, rec)

    def _paths(self) -> list[Any]:
        """The ``paths`` trie: every identified rule at its path."""
        if self.paths is None:
            paths: list[Any] = [None, None, None]
            for name, r in self.entries():
                if r.key is not None:
                    _trie_add(paths, r.path, name, r)
            self.paths = paths
        return self.paths

    def entries(self) -> Iterator[tuple[str, ScopeRule]]:
        """Every ``(holder, rule)`` once."""
        seen: set[tuple[str, int]] = set()
        stack = [self.root]
        while stack:
            n = stack.pop()
            for entry in _node_entries(n):
                k = (entry[0], id(entry[1]))
                if k not in seen:
                    seen.add(k)
                    yield entry
            stack.extend(_kids(n))

    def __len__(self) -> int:
        return self.size


class State:
    """The folded ledger state after event ``seq``.

    Attributes:
        seq: seq of the last applied event (0 before any), ``int``.
        last_hash: hash of the last applied line (``GENESIS_HASH`` at 0).
        last_ts: timestamp of the last applied event, ns since epoch, UTC
            (as its writer's clock read it: v2 events are not clamped, so
            it may be less than an earlier event's).
        max_ts: the highest timestamp of the events applied (0 before any).
        clock_back_seq: seq of the last event stamped before the event
            preceding it (its writer's clock behind, or the one before it
            ahead); 0 when the timestamps never went back. Time travel by
            time uses it (and ``max_ts``) to know when it must look at
            every event's time.
        holders: ``dict[str, Allocation]`` of live holders, grant order.
        children: ``dict[str, list[str]]`` live children of each holder that
            has any, in delegation order (re-parented children go last).
        refusals: keys of refusals recorded since the last state change
            (a retry loop does not flood the log), at most
            ``REFUSALS_KEPT``: the set starts over when it is full.
        void_through: the last seq a ``repaired`` event keeps void (0:
            none), ``int``: while ``seq`` is below it, the next lines are
            ``void`` ones (a writer appends them before its own event), so
            that no seq of a line a repair cut, no fencing token, is given
            twice.
    """

    __slots__ = ("seq", "last_hash", "last_ts", "max_ts", "clock_back_seq", "holders", "children",
                 "writes", "reads", "xreads", "refusals", "void_through")

    def __init__(self) -> None:
        self.seq = 0
        self.last_hash = GENESIS_HASH
        self.last_ts = 0
        self.max_ts = 0
        self.clock_back_seq = 0
        self.holders: dict[str, Allocation] = {}
        self.children: dict[str, list[str]] = {}
        self.writes = PathIndex()
        self.reads = PathIndex()
        self.xreads = PathIndex()  # exclusive reads
        self.refusals: set[str] = set()
        self.void_through = 0

    # -- structure -------------------------------------------------------

    def _index(self, alloc: Allocation) -> None:
        name = alloc.name
        for rule in alloc.rules:
            p = rule.permission
            (self.writes if p is _WRITE else self.reads if p is _READ else self.xreads).add(name, rule)

    def _unindex(self, alloc: Allocation) -> None:
        name = alloc.name
        for rule in alloc.rules:
            p = rule.permission
            (self.writes if p is _WRITE else self.reads if p is _READ else self.xreads).remove(name, rule)

    def index_of(self, permission: Permission) -> PathIndex:
        """The path trie holding the live rules of ``permission``."""
        return (self.writes if permission is _WRITE else self.reads if permission is _READ
                else self.xreads)

    def chain(self, name: str) -> tuple[str, ...]:
        """Holder names from the top-level ancestor down to ``name``."""
        out = [name]
        parent = self.holders[name].parent
        while parent is not None:
            out.append(parent)
            parent = self.holders[parent].parent
        return tuple(reversed(out))

    def copy(self) -> "State":
        """An independent deep copy (rebuilt from the serialised form)."""
        return State.from_json(self.to_json())

    # -- serialisation (snapshots) ----------------------------------------

    def to_json(self) -> dict[str, Any]:
        out = {
            "seq": self.seq,
            "last_hash": self.last_hash,
            "last_ts": self.last_ts,
            "max_ts": self.max_ts,
            "clock_back_seq": self.clock_back_seq,
            "holders": self._holders_json(),
            "children": {k: list(v) for k, v in self.children.items()},
            "refusals": sorted(self.refusals),
        }
        if self.void_through > self.seq:  # (between a repair's line and its last void line)
            out["void_through"] = self.void_through
        return out

    def _holders_json(self) -> list[dict[str, Any]]:
        # Allocation.to_json for every holder, inlined (a snapshot's main
        # cost): one JSON object per distinct process identity.
        perm = PERMISSION_TEXT
        procs: dict[int, dict[str, Any]] = {}
        out = []
        for a in self.holders.values():
            p = a.process
            pj = procs.get(id(p))
            if pj is None:
                pj = procs[id(p)] = p.to_json()
            h = {"name": a.name,
                 "rules": [[r.path, perm[r.permission], r.recursive] if r.ident is None
                           else [r.path, perm[r.permission], r.recursive, identity_json(r)]
                           for r in a.rules],
                 "process": pj, "parent": a.parent, "token": a.token,
                 "granted_ns": a.granted_ns, "reserved": a.reserved, "socket": a.socket,
                 "advisory": a.advisory}
            if a.lease is not None:
                h["lease"] = a.lease.to_json()
            if a.attached_ns is not None:
                h["attached_ns"] = a.attached_ns
            out.append(h)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "State":
        """Inverse of :meth:`to_json`. Raises KeyError/TypeError/ValueError
        (or InvalidScope) on a malformed document; callers wrap them."""
        st = cls()
        st.seq = int(data["seq"])
        st.last_hash = str(data["last_hash"])
        st.last_ts = int(data["last_ts"])
        st.max_ts = int(data["max_ts"])
        st.clock_back_seq = int(data["clock_back_seq"])
        rules: dict[tuple[Any, ...], ScopeRule] = {}  # one object per distinct rule
        for h in data["holders"]:
            alloc = _alloc_from_json(h, rules)
            st.holders[alloc.name] = alloc
            st._index(alloc)
        st.children = {k: list(v) for k, v in data["children"].items()}
        st.refusals = set(data["refusals"])
        st.void_through = int(data.get("void_through", 0))
        return st


def _shared_rule(value: Any, cache: dict[tuple[Any, ...], ScopeRule]) -> ScopeRule:
    if len(value) == 4 and type(value[3]) is dict:
        i = value[3]
        key = (*value[:3], i.get("fs"), tuple(i.get("via", ())), tuple(i.get("below", ())))
    else:
        key = tuple(value)
    rule = cache.get(key)
    if rule is None:
        rule = cache[key] = rule_from_log(value)
    return rule


def _alloc_from_json(h: dict[str, Any], cache: dict[tuple[Any, ...], ScopeRule]) -> Allocation:
    return Allocation(
        name=h["name"],
        rules=tuple(_shared_rule(r, cache) for r in h["rules"]),
        process=process_from_log(h["process"]),
        parent=h["parent"],
        token=h["token"],
        granted_ns=h["granted_ns"],
        reserved=bool(h.get("reserved", False)),
        socket=h.get("socket"),
        advisory=h.get("advisory") is True,
        lease=Lease.from_json(h["lease"]) if "lease" in h else None,
        attached_ns=h.get("attached_ns"),
    )


# -- the fold -------------------------------------------------------------


#: ``checked`` of :func:`apply` when the payload is still to be checked.
_UNCHECKED: Any = object()


def apply(state: State, event: dict[str, Any], line_hash: str, checked: Any = _UNCHECKED) -> State:
    """Apply one decoded event to ``state`` (in place) and return it.

    Args:
        state: the state after event ``event["seq"] - 1``.
        event: the decoded JSON object of one log line.
        line_hash: the hash of that line's bytes (becomes ``last_hash``).
        checked: what :func:`check_event` returned for this very event
            (unchanged since), when the caller has checked its payload
            already (``verify`` does, to word a bad payload in the fold's
            terms): the payload is then not checked a second time. The
            envelope and the checks against the state are made either way.

    Raises:
        FoldError: the event does not apply (seq gap, broken chain: a
            ``ChainBroken``, unknown holder, duplicate name, malformed payload). ``state`` may then be
            partly changed; callers discard it.
    """
    seq = event.get("seq")
    if seq != state.seq + 1:
        raise FoldError(f"seq {shown(seq)} does not follow {state.seq}")
    if event.get("prev") != state.last_hash:
        raise ChainBroken("hash chain broken: prev does not match the line before")
    kind = event.get("type")
    try:
        shape, change = _HANDLERS[kind]
    except (KeyError, TypeError):
        raise FoldError(f"unknown event type {shown(kind)}") from None
    ts = event.get("ts")
    if type(ts) is not int or (event.get("v") == 1 and ts < state.max_ts):
        # A v1 writer clamped its clock to the time before; a v2 line holds
        # its writer's own reading (order is by seq).
        if type(ts) is not int:
            raise FoldError(f"ts {shown(ts)} is not an integer")
        raise FoldError(f"ts {shown(ts)} is not an integer at or after the event before ({state.max_ts})")
    if seq <= state.void_through and kind != "void" and kind != "repaired":
        raise FoldError(f"a {kind} event at seq {seq}, a seq a repair keeps void (through "
                        f"{state.void_through}): a fencing token given twice")
    try:
        change(state, event, shape(event) if checked is _UNCHECKED else checked)
    except FoldError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FoldError(f"malformed {kind} event: {type(exc).__name__}: {exc}") from None
    _advance(state, seq, ts, line_hash)
    return state


def _grant(state: State, ev: dict[str, Any], checked: Any) -> None:
    name, parent, rules, process, reserved, socket = checked
    if name in state.holders:
        raise FoldError(f"holder '{name}' granted while already live")
    if parent is not None and parent not in state.holders:
        raise FoldError(f"delegation from '{parent}', which is not live")
    # (name, rules, process, parent, token, granted_ns, reserved, socket, advisory, lease)
    h = ev["holder"]
    lease = lease_of(ev, h["ttl_ns"], "lease_only" not in h) if "ttl_ns" in h else None
    _install(state, Allocation(name, rules, process, parent, ev["seq"], ev["ts"], reserved, socket,
                               "advisory" in h, lease))


def lease_of(ev: dict[str, Any], ttl_ns: int, process: bool) -> Lease:
    """The lease a grant or renewal line ``ev`` (checked) starts: ``ttl_ns``
    from its writer's boottime, judged on that writer's host and boot."""
    actor = ev["actor"]
    return Lease(ttl_ns, process, actor.get("host"), actor.get("boot"), ev.get("boot_ns"), ev["ts"], ev["seq"])


def _renewed(state: State, ev: dict[str, Any], _checked: None) -> None:
    name = ev["name"]
    alloc = state.holders.get(name)
    if alloc is None:
        raise FoldError(f"renewal of '{name}', which is not live")
    if alloc.token != ev["token"]:
        raise FoldError(f"renewal of '{name}' with token {shown(ev['token'])}: its live grant has "
                        f"token {alloc.token}")
    if alloc.lease is None:
        raise FoldError(f"renewal of '{name}', which has no lease")
    state.holders[name] = attrs.evolve(alloc, lease=lease_of(ev, ev["ttl_ns"], alloc.lease.process))


def _install(state: State, alloc: Allocation) -> None:
    name = alloc.name
    state.holders[name] = alloc
    state._index(alloc)
    parent = alloc.parent
    if parent is not None:
        state.children.setdefault(parent, []).append(name)
    state.refusals.clear()


def _attached(state: State, ev: dict[str, Any], process: ProcessIdentity) -> None:
    name = ev["name"]
    alloc = state.holders.get(name)
    if alloc is None:
        raise FoldError(f"attach to '{name}', which is not live")
    state.holders[name] = attrs.evolve(alloc, process=process, reserved=False, attached_ns=ev["ts"])
    state.refusals.clear()


def reparent_plan(state: State, name: str) -> list[list[Any]]:
    """``[[child, new_parent], ...]`` that removing ``name`` implies: its
    children move to its parent (``None`` at top level), in order."""
    parent = state.holders[name].parent
    out = []  # (a loop: a comprehension would make parent a cell in every call)
    for c in state.children.get(name, ()):
        out.append([c, parent])
    return out


def _remove(state: State, ev: dict[str, Any], _checked: None) -> None:
    name = ev["name"]
    alloc = state.holders.get(name)
    if alloc is None:
        raise FoldError(f"removal of '{name}', which is not live")
    plan = reparent_plan(state, name)
    if ev["reparented"] != plan:
        raise FoldError(f"recorded re-parenting {shown(ev['reparented'])} differs from the fold's {shown(plan)}")
    _drop(state, alloc)


def _drop(state: State, alloc: Allocation) -> None:
    name = alloc.name
    parent = alloc.parent
    kids = state.children.pop(name, None)
    if kids:
        holders = state.holders
        for child in kids:
            holders[child] = attrs.evolve(holders[child], parent=parent)
    if parent is not None:
        siblings = state.children[parent]
        siblings.remove(name)
        if kids:
            siblings.extend(kids)
        if not siblings:
            del state.children[parent]
    state._unindex(alloc)
    del state.holders[name]
    state.refusals.clear()


#: Refusal keys a state keeps for deduplication. A retry loop under ever new
#: names (``ledger run``'s default ``CMD-PID``) would otherwise grow the set,
#: and every snapshot with it, without bound while no grant or release
#: clears it; past the bound a repeated refusal is recorded once more.
REFUSALS_KEPT = 1000


def _refused(state: State, ev: dict[str, Any], _checked: None) -> None:
    refusals = state.refusals
    if len(refusals) >= REFUSALS_KEPT:
        refusals.clear()
    refusals.add(ev["key"])


def _repaired(state: State, ev: dict[str, Any], _checked: None) -> None:
    through = ev["through"]
    if through < ev["seq"]:
        raise FoldError(f"a repair's line at seq {ev['seq']} keeps seqs void through {through}, before itself")
    state.void_through = max(state.void_through, through)


def _void(state: State, ev: dict[str, Any], _checked: None) -> None:
    if ev["seq"] > state.void_through:
        raise FoldError(f"a void line at seq {ev['seq']}, past the seqs a repair keeps void "
                        f"({'through ' + str(state.void_through) if state.void_through else 'none'})")


def _advance(state: State, seq: int, ts: int, line_hash: str) -> None:
    if state.seq == 0:
        state.max_ts = ts
    else:
        if ts < state.last_ts:
            state.clock_back_seq = seq
        if ts > state.max_ts:
            state.max_ts = ts
    state.seq = seq
    state.last_hash = line_hash
    state.last_ts = ts


def commit_grant(state: State, alloc: Allocation, line_hash: str) -> None:
    """Apply a ``registered``/``delegated`` event its writer built from
    ``alloc`` (seq ``alloc.token``, ts ``alloc.granted_ns``), without decoding
    the line: the same change :func:`apply` makes from it. The writer has
    checked the request against ``state`` (:func:`check_request`) under the
    lock, and ``alloc.rules`` are as the log stores them (canonical, no
    ``given`` spelling)."""
    _install(state, alloc)
    _advance(state, alloc.token, alloc.granted_ns, line_hash)


def commit_removal(state: State, name: str, seq: int, ts: int, line_hash: str) -> None:
    """Apply a ``released``/``reclaimed`` event of ``name`` its writer built
    with ``reparented=reparent_plan(state, name)`` (the same change
    :func:`apply` makes from it).

    Raises:
        KeyError: ``name`` is not live (the writer checked it under the lock).
    """
    _drop(state, state.holders[name])
    _advance(state, seq, ts, line_hash)


#: Per event type: its change of state, given what its payload check
#: (``_events.SHAPES``) returned.
CHANGES: dict[str, Callable[[State, dict[str, Any], Any], None]] = {
    "registered": _grant,
    "delegated": _grant,
    "attached": _attached,
    "released": _remove,
    "reclaimed": _remove,
    "refused": _refused,
    "renewed": _renewed,
    "repaired": _repaired,
    "void": _void,
}
# type -> (payload check, change of state): one lookup on the fold's path
_HANDLERS: dict[Any, tuple[Callable[[dict[str, Any]], Any], Callable[[State, dict[str, Any], Any], None]]] = {
    kind: (SHAPES[kind], change) for kind, change in CHANGES.items()}
assert _HANDLERS.keys() == SHAPES.keys()


# -- queries (pure) ---------------------------------------------------------


def owner_chain(state: State, rule: ScopeRule, top: str) -> tuple[tuple[str, ...], ScopeRule]:
    """Walk down from top-level holder ``top`` to the deepest holder whose
    rules conflict with ``rule`` (:func:`~scopeledger._rules.conflicts`: a
    write, or an exclusive read against a write; the seed's
    ``find_conflict_owner``).

    Returns ``(chain, owner_rule)``: names from ``top`` down to the owner,
    and the owner's conflicting rule.
    """
    chain = [top]
    owner_rule = _conflicting(state, state.holders[top], rule)
    assert owner_rule is not None
    current = top
    while True:
        for child in state.children.get(current, ()):
            r = _conflicting(state, state.holders[child], rule)
            if r is not None:
                chain.append(child)
                owner_rule = r
                current = child
                break
        else:
            return tuple(chain), owner_rule


#: A holder with more rules than this is asked of the state's path index
#: (:func:`_conflicting`), not scanned.
_SCAN_RULES = 16


def _conflicting(state: State, alloc: Allocation, rule: ScopeRule) -> ScopeRule | None:
    """The first of ``alloc``'s rules (in their order) that conflicts with
    ``rule``, or ``None``. A holder of many rules is not scanned: its rules
    that overlap ``rule`` are found along ``rule``'s path in the state's
    index (a decision per rule of 2,000 against a holder of 1,000 rules
    scanned them all, 2,000 times)."""
    rules = alloc.rules
    if len(rules) <= _SCAN_RULES:
        for r in rules:
            if conflicts(r, rule):
                return r
        return None
    name = alloc.name
    found: ScopeRule | None = None
    at = len(rules)
    for permission in CONFLICTS_WITH[rule.permission]:
        for holder, r in state.index_of(permission).overlapping(rule):
            if holder == name and conflicts(r, rule):
                i = rules.index(r)
                if i < at:
                    found, at = r, i
    return found


def check_request(state: State, name: str, rules: tuple[ScopeRule, ...],
                  parent: str | None) -> Exception | None:
    """Validate a register (``parent is None``) or delegate request.

    Returns the error that would be raised (:class:`DuplicateHolder`,
    :class:`ScopeConflict`, :class:`DelegationError`, :class:`UnknownHolder`
    for a parent that is not live) or ``None`` when it may be granted.
    Pure; cost: for each rule, the path's depth plus the entries of other
    holders met (of the requester's own line each trie node is looked at
    once per request, :meth:`PathIndex.outside`); whether the parent
    covers a rule is looked up along the rule's path for the parent's own
    rules (:func:`covered_by`), not by comparing it with each of the
    parent's rules (a delegation of 8,000 rules from a parent with 8,000
    held the lock 57 s that way).
    """
    return check_request_from(state, name, rules, parent, 0)[0]


def check_request_from(state: State, name: str, rules: tuple[ScopeRule, ...], parent: str | None,
                       start: int) -> tuple[Exception | None, int]:
    """:func:`check_request`, looking for holders in the way only from
    ``rules[start]`` on, and at whether the parent covers the rules only
    when ``start`` is 0; and the index of the rule at which the request
    met the holder in the way (``len(rules)`` when none did).

    For :func:`scopeledger._decide.decide`, which asks again after
    reclaiming the dead in the way: removing holders outside the
    requester's line (and a dead holder of the requested name) never puts
    a holder in the way of a rule that met none, nor changes what the
    parent covers, so the next question starts at the rule of the last
    answer (asking from the first rule each time cost n² for n rules over
    n dead holders: 4,000 took 8.6 s of CPU under the lock).
    """
    if name in state.holders:
        return DuplicateHolder(name), start
    if parent is not None:
        palloc = state.holders.get(parent)
        if palloc is None:
            return UnknownHolder(parent), start
        line = set(state.chain(parent))
        if not start:
            for rule in rules:
                if not covered_by(state, parent, rule):
                    kind = _SCOPE_KIND[rule.permission]
                    return DelegationError(
                        f"cannot delegate {rule} from '{parent}' to '{name}': not inside "
                        f"the {kind} scope of '{parent}'", parent=parent, child=name, rule=rule), 0
    else:
        line = set()
    for i, rule, ochain in _in_the_way(state, rules, line, start):
        if parent is not None and parent in ochain:
            # A sibling (or its delegate) holds it: walk down from the sibling.
            sib = ochain[ochain.index(parent) + 1]
            sub, orule = owner_chain(state, rule, sib)
            full = ochain[: ochain.index(parent) + 1] + sub
            return DelegationError(
                f"cannot delegate {rule} from '{parent}' to '{name}': overlaps sibling "
                f"'{sib}' (held by {format_chain(full)} as {orule})",
                parent=parent, child=name, rule=rule, sibling=sib, chain=full), i
        fchain, orule = owner_chain(state, rule, ochain[0])
        return ScopeConflict(rule, fchain[-1], orule, fchain, requester=name), i
    return None, len(rules)


def _in_the_way(state: State, rules: tuple[ScopeRule, ...], line: set[str],
                start: int = 0) -> Iterator[tuple[int, ScopeRule, tuple[str, ...]]]:
    """``(index, requested rule, owner chain)`` for each live holder outside
    ``line`` (the requester's own chain) holding a rule that conflicts with
    a requested one, in request order from ``rules[start]``:
    :func:`check_request` refuses at the first, :func:`conflicts_met`
    records them all. With a ``line`` (a delegation) the line's own entries
    are skipped by :meth:`PathIndex.outside`, each trie node at most once
    for the whole request."""
    if not line:  # (a top-level request: every entry met is in the way; the hot path)
        for i in range(start, len(rules)):
            rule = rules[i]
            against = CONFLICTS_WITH[rule.permission]
            if not against:
                continue
            for owner, _ in _overlapping_in(state, against, rule):
                yield i, rule, state.chain(owner)
        return
    seen: dict[int, int] = {}
    for i in range(start, len(rules)):
        rule = rules[i]
        against = CONFLICTS_WITH[rule.permission]
        if not against:
            continue
        # (the tries of exactly the permissions it conflicts with: a write
        # meets writes and exclusive reads, an exclusive read only writes)
        for index in ((state.writes, state.xreads) if Permission.EXCLUSIVE_READ in against else (state.writes,)):
            if not index.size:
                continue
            for owner, _ in index.outside(rule, line, seen):
                yield i, rule, state.chain(owner)


#: How a delegation refusal names the scope a rule must lie inside.
_SCOPE_KIND = {Permission.WRITE: "effective write", Permission.EXCLUSIVE_READ: "write or exclusive read",
               Permission.READ: "read"}


def _overlapping_in(state: State, permissions: frozenset[Permission],
                    rule: ScopeRule) -> Iterator[tuple[str, ScopeRule]]:
    """Entries of the tries of ``permissions`` (writes, exclusive reads)
    that overlap ``rule``, writes first; no exclusive read held costs
    nothing (the common case: the writes' walk itself)."""
    w = _WRITE in permissions
    x = Permission.EXCLUSIVE_READ in permissions and state.xreads.size > 0
    if not x:
        return state.writes.overlapping(rule) if w else iter(())
    if not w:
        return state.xreads.overlapping(rule)
    return itertools.chain(state.writes.overlapping(rule), state.xreads.overlapping(rule))


def conflicts_met(state: State, name: str, rules: tuple[ScopeRule, ...],
                  parent: str | None) -> Iterator[tuple[tuple[str, ...], ScopeRule, ScopeRule]]:
    """Every conflict a request meets (what :func:`check_request` refuses
    at the first of): ``(owner chain, their rule, requested rule)`` for each
    requested rule and each live holder outside the requester's line whose
    rule conflicts with it (the deepest such holder of each chain), in
    order, once each. What an advisory grant records. A generator: the
    caller may stop early (a record that would not fit in a line)."""
    line = set(state.chain(parent)) if parent is not None and parent in state.holders else set()
    seen: set[tuple[tuple[str, ...], int, int]] = set()
    for _, rule, ochain in _in_the_way(state, rules, line):
        top = ochain[0]
        if parent is not None and parent in ochain:
            top = ochain[ochain.index(parent) + 1]
        sub, orule = owner_chain(state, rule, top)
        chain = ochain[: ochain.index(top)] + sub
        k = (chain, id(orule), id(rule))
        if k not in seen:
            seen.add(k)
            yield chain, orule, rule


def covered_by(state: State, name: str, rule: ScopeRule) -> bool:
    """Whether one of live holder ``name``'s rules covers ``rule``
    (:func:`scopeledger.covers`), looked for among the holder's own rules
    at or above the places ``rule`` lives (:meth:`PathIndex.covering`: a
    covering rule lies at or above what it covers): the rule's depth in
    look-ups, never every rule the holder has, nor what others hold below
    it."""
    p = rule.permission
    for index in ((state.writes,) if p is _WRITE else (state.writes, state.xreads) if p is not _READ
                  else (state.writes, state.xreads, state.reads)):
        if not index.size:
            continue
        for r in index.covering(rule, name):
            if covers(r, rule):
                return True
    return False


def effective_rules(state: State, name: str) -> tuple[tuple[ScopeRule, ...], tuple[tuple[str, ScopeRule], ...]]:
    """``(rules, delegated)``: the holder's rules and the ``(child, rule)``
    pairs it has delegated to live children that exclude others (writes and
    exclusive reads). The effective scope is the rules minus what those
    exclude (:func:`~scopeledger._rules.conflicts`)."""
    alloc = state.holders[name]
    delegated = tuple((c, r) for c in state.children.get(name, ()) for r in state.holders[c].rules
                      if r.permission is not _READ)
    return alloc.rules, delegated


def holders_of(state: State, rule: ScopeRule) -> list[tuple[tuple[str, ...], ScopeRule]]:
    """Every live holder whose rules (of any permission) overlap ``rule``, as
    ``(chain, their_rule)``: write holders first, then exclusive reads, then
    reads."""
    out = []
    for index in (state.writes, state.xreads, state.reads):
        for owner, r in index.overlapping(rule):
            out.append((state.chain(owner), r))
    return out
