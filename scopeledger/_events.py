"""The log's line format: encoding, decoding, the key tables and the hash chain.

One event is one line of UTF-8 JSON (no newline inside). This scopeledger
writes format version 2 and reads versions 1 and 2: a log begun by an older
scopeledger and continued by this one holds v1 lines, then v2 lines (the
hash chain runs through both; a stored line is never rewritten). A version
newer than it knows, an unknown event type or an unknown key in a line
otherwise sound is :class:`NewerFormat` (a :class:`CorruptLedger`: "probably
written by a newer scopeledger; upgrade scopeledger"), which ``repair``
never cuts.
Keys in this order::

    {"v": 2,                    format version (int): 1 or 2
     "seq": 42,                 gapless, from 1 (int)
     "ts": 1764426000123456789, UTC, integer nanoseconds since the epoch,
                                signed 64 bits; v2: the writer's own clock
                                reading, never clamped (it may be less
                                than an earlier event's: the order is the
                                seq); v1: never less than the previous
                                event's (a clock stepping back was clamped)
     "actor": {"host": "<machine id>", "boot": "<boot id>", "pid": 4242,
               "ticks": 123456, "pidns": "pid:[4026531836]"},
                                the appending process (a process identity)
     "prev": "<32 hex>",        blake2b-128 of the previous line's bytes
                                (without its newline); 32 zeros for seq 1
     "type": "registered",      see EVENT_TYPES
     "network_fs": "nfs4",      v2, optional: written by a process that opened
                                the ledger on a file system where flock may
                                not exclude other hosts, having opted in
                                (Ledger.open(allow_network_fs=True)); its type
     ...payload}

Payloads (rules are ``[path, "read"|"write", recursive]``, and in a v2 line
also ``[path, "exclusive-read", recursive]``, a read that excludes writers; in a v2 line a
rule may carry its path's identity as a fourth item, ``{"fs": key, "via":
[keys], "below": [keys]}``, ``via`` and ``below`` left out when empty: a key
is the filesystem's device number and the path within that filesystem,
``"254:0/home/u/src"``, folded where the filesystem folds case; see
ARCHITECTURE.md, "The identity of a path")::

    registered / delegated  "holder": {"name", "rules", "process": <process identity>,
                                       "parent": str|null, "reserved": bool,
                                       "socket": str|null,
                                       "note": str (v2, optional: why the scope was
                                               asked for, at most 4096 characters),
                                       "advisory": [[chain, their rule, requested rule], ...]
                                               (v2, optional: the grant was asked with
                                               advisory=True and granted despite these
                                               conflicts, each the owner chain, top first,
                                               its rule and the request's; [] when it met
                                               none),
                                       "ttl_ns": int (v2, optional: a lease of that
                                               many ns, 1 to 10**18, from this event),
                                       "lease_only": true (v2, optional, only with
                                               ttl_ns: the lease alone binds it;
                                               "process" is who asked, not judged)}
                            v2, optional, only with holder.ttl_ns: "boot_ns": the
                            writer's CLOCK_BOOTTIME in ns (the initial time
                            namespace's), beside ts; left out when unreadable.
                            A lease is judged on it, from the same host and boot
                            as the actor of its last grant or renewal only
                            (scopeledger._lease)
    attached                "name", "process"
    released                "name", "reparented": [[child, new_parent|null], ...]
                            v2, optional: "exit_code": int 0-255 or "exit_signal":
                            int 1-127 (at most one: how the holder's process
                            ended, when the releaser knows it, as
                            Ledger.release(returncode=...) or spawn records
                            it), "note": str (at most 4096 characters: why,
                            in the releaser's words), "forced": str (1 to 4096
                            characters: the reason given for a forced release,
                            Ledger.release(force=True, reason=...), made by
                            someone else than the holder; who it was is the
                            line's actor)
    reclaimed               "name", "reason", "reparented"
                            reason: process_gone | zombie | pid_reused | earlier_boot
                                    | namespace_gone (v2) | lease_expired (v2)
                                    | session_closed (v2) | session_lock_gone (v2)
                            (the last two, and lease_expired of a session: a
                            holder on another host judged by its PostgreSQL
                            client session, scopeledger._sessions)
                            v2, optional: "last_seen": when the holder was last
                            seen alive as the log shows it: the latest ts of
                            its grant, its last renewal and its last
                            "attached" line (whose writer identified the
                            process, alive); ns since the epoch, UTC. Not a
                            refusal it caused (that line records the request,
                            not a verdict on the holder, which may have been
                            unknown). The event's own ts is when its death
                            was noticed
                            v2, optional, reason zombie only: "exit_code": int
                            0-255 or "exit_signal": int 1-127 (at most one), as
                            in released: how the holder's process ended, read
                            by the reclaimer from the zombie (/proc/PID/stat)
                            before its parent reaped it, only when the zombie
                            is proven to be the holder's process and the
                            kernel shows its status to the reclaimer; left out
                            when unknown. A scopeledger older than these keys
                            refuses a reclaimed line with them, naming the key
    renewed (v2)            "name", "token" (the grant's seq), "ttl_ns" (int ns > 0:
                            the lease now lasts that long from this event),
                            "boot_ns" (optional, as on a grant)
    repaired (v2)           "through": int (the last seq the repair cut, >= this line's seq),
                            "cut": str (where what it cut went, relative to the ledger
                            directory: "cut/<UTC time>-line-<N>"). Written by a repair in
                            place of the first line it cut; the seqs after it up to
                            "through" are void lines, so that no seq, no fencing token,
                            is given twice (any other event there is corrupt)
    void (v2)               no payload: a seq a repair keeps void (above); a writer
                            that finds them cut short writes the rest before its event
    refused                 "key", "error": scope_conflict|delegation|duplicate|unknown_parent,
                            "message", "request": {"name", "parent", "rules"},
                            "rule": rule|null, "chain": [names, top first]

A process identity (v2; see ``scopeledger._process``) has exactly these
keys: ``host`` (the machine id, 32 hex digits, or null when the host has
none), ``boot`` (the kernel's boot id, or null when unreadable), ``pid``
(int, in PID namespace ``pidns``), ``ticks`` (its start in clock ticks since
boot, /proc/PID/stat field 22, an int > 0, or null when unknown), ``pidns``
(``"pid:[inode]"``, or null when unknown). No wall-clock time. A holder's
``process`` (in a grant's ``holder`` and in ``attached``; never an ``actor``)
may also carry ``session`` (v2, optional: an int from 1 to 2**31-1), the id
of the PostgreSQL client session of the ledger that bound it, which vouches
for it to checkers on other hosts (``scopeledger._sessions``); a ledger in a
directory never writes it, and a scopeledger older than this key refuses a
line with it (as any unknown key). A v1 identity
was ``{"pid", "start", "boot"[, "pidns"]}``, ``start`` in wall-clock seconds
(a number or null); v1 lines keep it, and it is judged as it was.

The format is strict: every object of a line (the line itself, ``actor``,
``holder``, ``process``, ``request``) may carry only the keys :data:`KEYS`
lists for its format version and event type (a v2 process identity:
all five of its keys, and a holder's ``process`` optionally ``session``). Any other key is
:class:`CorruptLedger` naming the key, the object and the line, wherever a
line is folded (open and every later read, time travel, ``verify``); a
replay (``Ledger.events``, ``ledger replay``), which only shows lines,
checks the top level and ``actor`` (checking the payload's objects too
would cost it about 10 %). A tool adding a key of its own would otherwise
write lines this scopeledger reads without seeing what they say. Versions
1 and 2 differ in the process identity (``actor``, ``process``) only.

The same schema, for other tools, is the JSON Schema
``scopeledger/schema/event.schema.json``, generated from :data:`KEYS` by
:mod:`scopeledger._schema` (a key added here needs its value type there;
``tests/test_schema.py`` fails until the file is regenerated).

The hash chain lets ``verify`` find a line edited after the fact; it is an
integrity check, not a signature (anyone who can write the log can rewrite
the chain).
"""

from __future__ import annotations

import functools
import json
import operator
import re
from typing import Any, Callable

import orjson

try:  # what hashlib.blake2b is, without hashlib's import of OpenSSL's _hashlib (~3 ms of start-up, issue 18)
    from _blake2 import blake2b as blake2b
except ImportError:  # pragma: no cover - an interpreter without CPython's _blake2 module
    from hashlib import blake2b as blake2b

from ._errors import CorruptLedger, InvalidScope, NewerFormat, shown
from ._identity import ProcessIdentity
from ._rules import (HOLDER_NAME, IDENTITY_KEYS, Permission, ScopeRule, identified_rule, identity_fault, is_normal,
                     normalize_path, rule_from_log)

# -- constants of the format ---------------------------------------------------

#: Version of the event format this code writes (lines of every version in
#: ``FORMAT_VERSIONS`` are read; see ``_events``).
FORMAT_VERSION = 2

#: Event format versions this code reads.
FORMAT_VERSIONS = frozenset({1, 2})

#: Every event type; each changes state except ``refused`` and ``void``.
#: ``renewed``, ``repaired`` and ``void`` are format v2's only (a v1 line of
#: such a type is corrupt).
EVENT_TYPES = frozenset({"registered", "delegated", "attached", "released", "reclaimed", "refused", "renewed",
                         "repaired", "void"})

#: The event types format v1 does not have.
V2_ONLY_TYPES = frozenset({"renewed", "repaired", "void"})

#: Reasons a ``reclaimed`` event may carry (see ``Liveness``).
RECLAIM_REASONS = frozenset({"process_gone", "zombie", "pid_reused", "earlier_boot", "namespace_gone",
                             "lease_expired", "session_closed", "session_lock_gone"})

GENESIS_HASH = "0" * 32

#: An event's ``ts`` lies in ``[-TS_LIMIT, TS_LIMIT)``: signed 64-bit
#: nanoseconds (the year 2262). Writers refuse a clock past it; readers refuse
#: a line past it (clamping would carry it to every later event).
TS_LIMIT = 1 << 63


class FoldError(Exception):
    """An event that does not apply to the state before it (internal; the
    store turns it into :class:`CorruptLedger` with file, line and seq)."""


class ChainBroken(FoldError):
    """An event whose ``prev`` is not the hash of the line before it
    (:func:`~scopeledger._fold.apply`): the line before or this one was
    altered after it was written, and nothing in the two tells which
    (:func:`fold_fault` words it for a reader; ``verify`` asks the lines
    around)."""


class NewerValue(FoldError):
    """An event otherwise sound whose value of a known key this version
    does not know but a newer one may write (a reclaim ``reason``, a
    refusal's ``error``), shaped as such a value is (``[a-z][a-z0-9_]*``):
    turned into :class:`NewerFormat` (:func:`fold_fault`)."""


#: What every reader's error for a damaged log line ends with (a line
#: that does not decode, chain or fold: :func:`damaged`), after ``"; "``.
DAMAGE_ADVICE = "run 'ledger verify' for the whole report, and 'ledger repair' to set the damaged tail aside"


def damaged(exc: CorruptLedger) -> CorruptLedger:
    """A reader's error for the damaged line ``exc`` names: a
    :class:`CorruptLedger` with its path, line and seq, whose reason is
    ``exc``'s and :data:`DAMAGE_ADVICE`; a :class:`NewerFormat` (whose
    remedy is an upgrade, not a repair) or an error that carries the advice
    already: ``exc`` itself. The one wording of every reader of the log
    (opening, time travel, replay); ``verify`` reports the bare reason."""
    if isinstance(exc, NewerFormat) or exc.reason.endswith(DAMAGE_ADVICE):
        return exc
    return CorruptLedger(exc.path, f"{exc.reason}; {DAMAGE_ADVICE}", line=exc.line, seq=exc.seq)


def unchained(line: int) -> str:
    """Why line ``line`` does not follow the line before it when its
    ``prev`` is not that line's hash, in a reader's words: either line may
    be the altered one (``verify`` tells them apart by the lines around)."""
    return (f"hash chain broken: line {line} does not chain to line {line - 1} (one of them was altered "
            "after it was written)")


def fold_fault(path: str, exc: FoldError, line: int | None, seq: int | None) -> CorruptLedger:
    """The error for an event that did not fold (``exc``): :class:`NewerFormat`
    for a :class:`NewerValue`, else :class:`CorruptLedger` (a broken chain
    worded by :func:`unchained`), with :data:`DAMAGE_ADVICE` (:func:`damaged`)."""
    if isinstance(exc, NewerValue):
        return NewerFormat(path, str(exc), line=line, seq=seq)
    reason = unchained(line) if isinstance(exc, ChainBroken) and line is not None else str(exc)
    return damaged(CorruptLedger(path, reason, line=line, seq=seq))


def newer_damage(exc: NewerFormat, line: bytes, seq: int, prev: str, nxt: bytes | None) -> str | None:
    """Why line ``line``, which :func:`decode` or the fold found sound but
    of a newer format (``exc``), is damage after all; ``None`` when it may
    be a newer scopeledger's line: its seq is ``seq`` (the next one), its
    ``prev`` is ``prev`` (the hash of the line before), and the line after
    it (``nxt``: its bytes; ``None``: there is none) names its hash as its
    ``prev``. A bit flipped in a middle line can make a known key, type or
    version read as one a newer version may have; the line after, written
    when this line was as stored, tells them apart. The one rule every
    reader of the log applies (a last line cannot be told apart: it stays
    newer). Pure."""
    try:
        ev = orjson.loads(line)
    except orjson.JSONDecodeError:  # pragma: no cover - decode read it
        return "not JSON"
    if ev.get("seq") != seq:
        return f"seq {shown(ev.get('seq'))} does not follow {seq - 1}"
    if ev.get("prev") != prev:
        return "hash chain broken: prev does not match the line before"
    if nxt is None:
        return None
    try:
        nxt_prev = orjson.loads(nxt).get("prev")
    except (orjson.JSONDecodeError, AttributeError):
        nxt_prev = None
    if nxt_prev != line_hash(line):
        return f"line altered after it was written: the line after does not chain to it ({exc.unknown})"
    return None


def newer_fault(exc: NewerFormat, line: bytes, seq: int, prev: str, nxt: bytes | None) -> CorruptLedger:
    """The error for line ``line`` (seq ``seq``) that :func:`decode` or
    the fold found of a newer format (``exc``), as :func:`newer_damage`
    judges it (``prev``, ``nxt``: as there): ``exc`` itself, or a
    :class:`CorruptLedger` (damage: ``ledger verify`` reports it,
    ``ledger repair`` sets it aside) with the same path, line and seq."""
    why = newer_damage(exc, line, seq, prev, nxt)
    if why is None:
        return exc
    return damaged(CorruptLedger(exc.path, why, line=exc.line, seq=exc.seq))


_STARTS = (int, float, type(None))  # a process start time: seconds, or unknown

#: The schema's keys, strictly: for each format version, the keys each kind
#: of object in a line may carry. ``"line"`` is the envelope every line has;
#: an event type names the payload keys its lines add at the top level; the
#: other kinds are the objects nested in a line (see :data:`NESTED`). A
#: change of the format adds a key here, for the version that has it (v2:
#: this code writes it), and documents it in this module's docstring.
KEYS: dict[int, dict[str, frozenset[str]]] = {
    1: {
        "line": frozenset({"v", "seq", "ts", "actor", "prev", "type"}),
        "registered": frozenset({"holder"}),
        "delegated": frozenset({"holder"}),
        "attached": frozenset({"name", "process"}),
        "released": frozenset({"name", "reparented"}),
        "reclaimed": frozenset({"name", "reason", "reparented"}),
        "refused": frozenset({"key", "error", "message", "request", "rule", "chain"}),
        "actor": frozenset({"pid", "start", "boot", "pidns"}),
        "holder": frozenset({"name", "rules", "process", "parent", "reserved", "socket"}),
        "process": frozenset({"pid", "start", "boot", "pidns"}),
        "request": frozenset({"name", "parent", "rules"}),
    },
}
KEYS[2] = dict(KEYS[1])
KEYS[2]["actor"] = KEYS[2]["process"] = frozenset({"host", "boot", "pid", "ticks", "pidns"})
# Liveness across hosts (issue 15), v2 only: the PostgreSQL client session of
# the ledger that bound a holder to its process (never an actor's).
KEYS[2]["process"] = KEYS[2]["process"] | {"session"}
KEYS[2]["line"] = KEYS[1]["line"] | {"network_fs"}
KEYS[2]["released"] = KEYS[1]["released"] | {"exit_code", "exit_signal", "note"}
KEYS[2]["holder"] = KEYS[1]["holder"] | {"note"}
# Policy (issue 16, the peers' features), v2 only: a forced release's reason,
# an advisory grant's conflicts.
KEYS[2]["released"] = KEYS[2]["released"] | {"forced"}
KEYS[2]["holder"] = KEYS[2]["holder"] | {"advisory"}
# Leases (issue 16): a grant's ttl (and whether its process is judged too),
# the writer's CLOCK_BOOTTIME beside ts on grants and renewals, the renewal
# itself, and when a reclaimed holder was last seen alive.
KEYS[2]["holder"] = KEYS[2]["holder"] | {"ttl_ns", "lease_only"}
KEYS[2]["registered"] = KEYS[1]["registered"] | {"boot_ns"}
KEYS[2]["delegated"] = KEYS[1]["delegated"] | {"boot_ns"}
KEYS[2]["renewed"] = frozenset({"name", "token", "ttl_ns", "boot_ns"})
KEYS[2]["reclaimed"] = KEYS[1]["reclaimed"] | {"last_seen"}
# How a reclaimed zombie ended (read from /proc before its parent reaped it):
# the release's keys, with their meaning.
KEYS[2]["reclaimed"] = KEYS[2]["reclaimed"] | {"exit_code", "exit_signal"}
# A repair's seqs kept (fencing tokens never given twice): the line in place
# of the first line cut, and the lines filling the seqs up to the last one.
KEYS[2]["repaired"] = frozenset({"through", "cut"})
KEYS[2]["void"] = frozenset()

#: Keys a line may carry or not (``KEYS`` lists them too): the fast path of
#: :func:`decode` counts a line's keys without them, so that a line with
#: one goes the slower way, which checks each key.
OPTIONAL: frozenset[str] = frozenset({"network_fs", "exit_code", "exit_signal", "note", "forced",
                                      "boot_ns", "last_seen"})

#: A rule's identity, the fourth item of a rule in a v2 line (rules are
#: lists, checked with the payload: ``rules_from_log``).
KEYS[2]["rule_identity"] = IDENTITY_KEYS

#: Where objects nest: for a kind of object (as in :data:`KEYS`), the keys
#: holding an object and that object's kind. The same in every version.
NESTED: dict[str, tuple[tuple[str, str], ...]] = {
    "line": (("actor", "actor"),),
    "registered": (("holder", "holder"),),
    "delegated": (("holder", "holder"),),
    "attached": (("process", "process"),),
    "refused": (("request", "request"),),
    "holder": (("process", "process"),),
}


def _actor_v1(actor: Any, keys: frozenset[str]) -> bool:
    return (type(actor) is dict and type(actor.get("pid")) is int and type(actor.get("boot")) is str
            and type(actor.get("start")) in _STARTS and actor.keys() <= keys)


_OPT_STR = (str, type(None))


def _actor_v2(actor: Any, keys: frozenset[str]) -> bool:
    # every key present (a missing one reads as 0, which no check takes)
    if type(actor) is not dict:
        return False
    ticks = actor.get("ticks", 0)
    return (type(actor.get("pid")) is int and type(actor.get("boot", 0)) in _OPT_STR
            and type(actor.get("host", 0)) in _OPT_STR and type(actor.get("pidns", 0)) in _OPT_STR
            and (ticks is None or (type(ticks) is int and ticks > 0)) and actor.keys() <= keys)


#: Per version: whether a line's ``actor`` has the right value types and
#: only the keys ``KEYS[version]["actor"]`` (passed as ``keys``), and what
#: it should be, for messages.
ACTOR: dict[int, tuple[Callable[[Any, frozenset[str]], bool], str]] = {
    1: (_actor_v1, "pid (integer), start (number or null) and boot (string)"),
    2: (_actor_v2, "host (string or null), boot (string or null), pid (integer), ticks (integer > 0 "
        "or null) and pidns (string or null)"),
}

assert set(KEYS) == set(ACTOR) == FORMAT_VERSIONS and FORMAT_VERSION == max(FORMAT_VERSIONS)


def _keys_within(kind: str, keys: dict[str, frozenset[str]]) -> Callable[[dict[str, Any]], bool]:
    """``obj -> bool``: whether a ``kind`` object and the objects nested in
    it carry only known keys (a nested value that is not an object is the
    fold's to name)."""
    allowed = keys[kind]
    inside = [(key, _keys_within(sub, keys)) for key, sub in NESTED.get(kind, ())]
    if not inside:
        return lambda obj: obj.keys() <= allowed
    if len(inside) == 1:
        ((key, within),) = inside
        return lambda obj: obj.keys() <= allowed and (type(c := obj.get(key)) is not dict or within(c))
    return lambda obj: obj.keys() <= allowed and all(type(c := obj.get(k)) is not dict or f(c) for k, f in inside)


def _no_payload(ev: dict[str, Any]) -> tuple[()]:
    """The payload getter of an event type without payload keys (``void``)."""
    return ()


def _compile() -> dict[int, dict[str, tuple[Any, ...]]]:
    """Per version and event type, for decode's fast path: ``(number of
    top-level keys, getter of the payload's top-level keys, actor check,
    actor keys, payload check)``. The fast path takes a line whose top
    level has exactly the allowed keys (the envelope's are read anyway; the
    getter raises ``KeyError`` for a missing payload key); the payload check
    is ``None`` for a payload without objects, else ``line -> bool`` (the
    keys of the objects in the payload)."""
    out: dict[int, dict[str, tuple[Any, ...]]] = {}
    for v, keys in KEYS.items():
        assert EVENT_TYPES - V2_ONLY_TYPES <= keys.keys(), f"KEYS[{v}] lacks an event type"
        out[v] = {}
        for kind in EVENT_TYPES & keys.keys():
            payload = None
            if NESTED.get(kind):
                ((key, sub),) = NESTED[kind]  # (one object per payload, so far)
                within = _keys_within(sub, keys)
                payload = (lambda w, k: lambda ev: type(c := ev[k]) is not dict or w(c))(within, key)
            top = (keys["line"] | keys[kind]) - OPTIONAL
            # (the getter reads the required payload keys: an optional one missing must not send
            # every line without it the slow way)
            required = sorted(keys[kind] - OPTIONAL)
            out[v][kind] = (len(top), operator.itemgetter(*required) if required else _no_payload, ACTOR[v][0],
                            keys["actor"], payload)
    return out


_SPEC = _compile()


def a_an(word: str) -> str:
    """``word`` with its indefinite article: ``"an attached"``, ``"a released"``
    (by its first letter: the event types, which are all a message names so)."""
    return ("an " if word[:1] in ("a", "e", "i", "o", "u") else "a ") + word


def unknown_key(obj: dict[str, Any], kind: str, version: int, where: str = "",
                inside: bool = True) -> tuple[str, str] | None:
    """The first key of ``obj`` (or of an object nested in it) that format
    ``version`` does not allow in a ``kind`` object: ``(key, message)``,
    the message naming it and where it is (``"unknown key 'x' in
    holder.process"``); ``None`` when every key is known. ``kind`` is an
    event type for a whole line (then ``inside=False`` looks at its top
    level and actor only)."""
    keys = KEYS[version]
    if kind in EVENT_TYPES:
        allowed = keys["line"] | keys[kind]
        inside_ = NESTED["line"] + (NESTED.get(kind, ()) if inside else ())
    else:
        allowed = keys[kind]
        inside_ = NESTED.get(kind, ())
    if not obj.keys() <= allowed:
        extra = sorted(str(k) for k in obj if k not in allowed)
        return extra[0], (f"unknown key {shown(extra[0])} in {where or a_an(kind) + ' event'} (format "
                          f"version {version} has only {', '.join(sorted(allowed))} there)")
    for key, sub in inside_:
        child = obj.get(key)
        if type(child) is dict:
            found = unknown_key(child, sub, version, f"{where}.{key}" if where else key)
            if found is not None:
                return found
    return None


def line_hash(line: bytes) -> str:
    """blake2b with a 16-byte digest of ``line`` (without newline), hex."""
    return blake2b(line, digest_size=16).hexdigest()


def encode(event: dict[str, Any]) -> bytes:
    """One event dict -> its line, without the trailing newline. Every
    character :meth:`str.isprintable` rejects (control characters, DEL and
    C1, U+2028/9, bidi controls such as U+202E, other format characters,
    lone surrogates, ...) is written as a JSON escape (``\\u202e``), so
    that a line shown as it is stored (``cat``, ``ledger replay --json``)
    can neither drive a terminal nor show a path reversed; a reader decodes
    the same text. Most lines are ASCII without DEL: checked in C, unchanged."""
    line = orjson.dumps(event)
    if line.isascii() and 127 not in line:  # (an int: memchr; a bytes needle costs 4x more)
        return line
    text = line.decode("utf-8", "surrogatepass")
    if text.isprintable():
        return line
    return "".join(ch if ch.isprintable() else json_escape(ch) for ch in text).encode("utf-8")


def json_escape(ch: str) -> str:
    """One character as a JSON escape: ``\\u202e``; past U+FFFF, a
    surrogate pair."""
    o = ord(ch)
    if o < 0x10000:
        return f"\\u{o:04x}"
    o -= 0x10000
    return f"\\u{0xd800 + (o >> 10):04x}\\u{0xdc00 + (o & 0x3ff):04x}"


def decode(line: bytes, path: str, lineno: int | None, payload: bool = True) -> dict[str, Any]:  # noqa: C901
    # (Complexity 16: one check after another of one line's envelope, in
    # the order a message names them; run once per line on every replay.)
    """One line (without newline) -> the event dict, envelope and keys
    checked (the payload's value types are the fold's to check:
    :func:`check_event`).

    Args:
        payload: also check the keys of the objects in the payload
            (``holder``, ``process``, ``request``); ``False`` for a replay
            that only shows the lines (``Ledger.events``: about 10 % of its
            cost), never where the payload is folded.

    Raises:
        NewerFormat: (a :class:`CorruptLedger`) a line otherwise sound (an
            object with an integer ``seq`` and ``ts``, a string ``prev``,
            its actor as its version has it, no key twice) of a newer
            format version, of an unknown event type, or with a key its
            version does not have (:data:`KEYS`) in the line, its actor or
            (``payload``) an object of its payload; an unknown type or key
            only when it looks like one (``[a-z][a-z0-9_]*``). Probably
            written by a newer scopeledger: not damage. Whether its ``seq``
            and ``prev`` follow the line before is the caller's to check.
        CorruptLedger: not JSON, not an object, a missing or mistyped
            envelope field, a version that is not one, a key twice, an
            unknown type or key that does not look like one.
    """
    try:
        ev = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise CorruptLedger(path, f"not valid UTF-8 (byte {bad.start + 1} of the line is "
                                      f"{line[bad.start:bad.start + 1]!r})", line=lineno) from None
        raise CorruptLedger(path, f"not JSON ({exc})", line=lineno) from None
    try:  # the common case in one expression; the checks below name what is wrong
        ts = ev["ts"]
        v = ev["v"]
        top_n, payload_keys, actor_ok, actor_keys, payload_ok = _SPEC[v][ev["type"]]
        if (type(ev["seq"]) is int and type(v) is int and type(ts) is int
                and -TS_LIMIT <= ts < TS_LIMIT and type(ev["prev"]) is str
                and len(ev) == top_n and payload_keys(ev) is not _SPEC
                and actor_ok(ev["actor"], actor_keys)
                and (payload_ok is None or not payload or payload_ok(ev))):
            if not _a_key_twice(line, ev):
                return ev  # type: ignore[no-any-return]  # (orjson.loads; the checks above made it an event dict)
            raise CorruptLedger(path, _duplicate_key(line), line=lineno, seq=ev["seq"])
    except (KeyError, TypeError):
        pass
    if type(ev) is not dict:
        raise CorruptLedger(path, "not a JSON object", line=lineno)
    seq = ev.get("seq")
    if type(seq) is not int:
        big = type(seq) is float and seq.is_integer()  # orjson reads ints past 64 bits as floats
        raise CorruptLedger(path, f"seq is {shown(seq)}, not an integer"
                            + (" (or an integer too large for a seq)" if big else ""), line=lineno)
    v = ev.get("v")
    newer = None  # what this version does not know, in a line otherwise sound: NewerFormat
    if type(v) is not int or v not in FORMAT_VERSIONS:
        if type(v) is not int or v <= FORMAT_VERSION:
            raise CorruptLedger(path, f"unsupported format version {shown(v)}", line=lineno, seq=seq)
        newer = f"format version {v} (this scopeledger reads versions up to {FORMAT_VERSION})"
    if type(ev.get("ts")) is not int:
        raise CorruptLedger(path, "ts is not an integer", line=lineno, seq=seq)
    if not -TS_LIMIT <= ev["ts"] < TS_LIMIT:
        raise CorruptLedger(path, f"ts {shown(ev['ts'])} is out of range (signed 64-bit nanoseconds)",
                            line=lineno, seq=seq)
    if type(ev.get("prev")) is not str:
        raise CorruptLedger(path, "prev is not a string", line=lineno, seq=seq)
    kind = ev.get("type")
    if type(kind) is not str or (newer is None and kind not in EVENT_TYPES and not _NAME.fullmatch(kind)):
        raise CorruptLedger(path, f"unknown event type {shown(kind)}", line=lineno, seq=seq)
    if _a_key_twice(line, ev):
        raise CorruptLedger(path, _duplicate_key(line), line=lineno, seq=seq)
    if newer is not None:  # (the rest of a newer version's line is its to judge)
        raise NewerFormat(path, newer, line=lineno, seq=seq)
    actor = ev.get("actor")
    check, shape = ACTOR[v]
    if not check(actor, frozenset(actor) if type(actor) is dict else frozenset()):  # keys: below
        raise CorruptLedger(path, f"actor is not an object of {shape}: {shown(actor)}", line=lineno, seq=seq)
    if kind not in EVENT_TYPES:
        raise NewerFormat(path, f"unknown event type {shown(kind)}", line=lineno, seq=seq)
    if kind not in KEYS[v]:
        raise CorruptLedger(path, f"event type {shown(kind)} is not in format version {v}", line=lineno, seq=seq)
    if "network_fs" in ev and type(ev["network_fs"]) is not str:
        raise CorruptLedger(path, f"network_fs is {shown(ev['network_fs'])}, not a string",
                            line=lineno, seq=seq)
    unknown = unknown_key(ev, kind, v, inside=payload)
    if unknown is not None:
        if not _NAME.fullmatch(unknown[0]):  # (not a name a format would give a key: damage)
            raise CorruptLedger(path, unknown[1], line=lineno, seq=seq)
        raise NewerFormat(path, unknown[1], line=lineno, seq=seq)
    return ev  # (a missing payload object: the fold names it)


#: What a newer format's event type or key may look like (as every one so
#: far): a line whose unknown type or key does not is damage, not news.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")



def payload_check(ev: dict[str, Any]) -> Callable[[dict[str, Any]], bool] | None:
    """What :func:`decode` checks of the payload of ``ev`` (a line that
    passed :func:`decode_page`) beyond ``payload=False``: ``ev -> bool``,
    whether the objects in its payload carry only known keys (``KeyError``
    when one is missing: the fold names that), or ``None`` for a payload
    without objects."""
    return _SPEC[ev["v"]][ev["type"]][4]  # type: ignore[no-any-return]  # (the table's item)

def _a_key_twice(line: bytes, ev: dict[str, Any]) -> bool:
    """Whether ``line`` (decoded as ``ev``) has a key twice in one object.
    JSON readers differ on which value they keep (Python's and orjson the
    last, some streaming readers the first), so such a line could be read
    as two different events: it is corrupt.

    A line that is exactly its own re-encoding has none (the common case:
    every line this library writes without escaped characters). Otherwise
    its keys are counted from its text and compared with the decoded ones.
    Cost, counted with valgrind (instructions, so the machine's load does
    not enter; 450 lines of registrations and releases): a decode with this
    check 52.3k instructions, without it 44.7k (+17 %).
    """
    if orjson.dumps(ev) == line:
        return False
    return _said_twice(line, ev)


def _said_twice(line: bytes, ev: Any) -> bool:
    """Whether ``line``'s text has more keys than ``ev`` (what it decoded
    to): a key twice in one object (:func:`_a_key_twice`, for a line that
    is not its own re-encoding)."""
    said = sum(1 for colon in _STRING.findall(line) if colon)
    return said != _keys_in(ev)


# -- a page of lines at once (replay, verify) ------------------------------------

#: What a page check reads of every line's envelope, one C call per line.
_ENVELOPE = operator.itemgetter("v", "type", "seq", "ts", "prev", "actor")
_HASHER = functools.partial(blake2b, digest_size=16)
_HEX = operator.methodcaller("hexdigest")
_INT = {int}

#: What :func:`decode_page` has found good, so that each is checked once:
#: shapes ``(type of v, v, type, the top-level keys in order)`` and actors
#: ``(v, the actor's JSON)``. Bounded: started over when full.
_shapes_good: set[tuple[Any, ...]] = set()
_actors_good: set[tuple[Any, bytes]] = set()
_GOOD_KEPT = 4096


def _shape_ok(shape: tuple[Any, ...]) -> bool:
    """Whether a line of this shape passes :func:`decode`'s checks of the
    version, the type and the top-level keys (a known version, a type of
    that version, no key it does not have)."""
    vt, v, kind, keys = shape
    if vt is not int or v not in KEYS or type(kind) is not str or kind not in EVENT_TYPES or kind not in KEYS[v]:
        return False
    return set(keys) <= KEYS[v]["line"] | KEYS[v][kind]


def _actor_ok(item: tuple[Any, bytes]) -> bool:
    """Whether an actor, as JSON (orjson's encoding keeps every value's
    type), is what a line of version ``v`` (known) may carry."""
    v, text = item
    return ACTOR[v][0](orjson.loads(text), KEYS[v]["actor"])


def _all_good(found: set[Any], good: set[Any], check: Callable[[Any], bool]) -> bool:
    new = found - good
    if not new:
        return True
    if not all(map(check, new)):
        return False
    if len(good) + len(new) > _GOOD_KEPT:
        good.clear()
    good.update(new)
    return True


def decode_page(lines: list[bytes], seq: int, prev: str) -> tuple[list[dict[str, Any]], list[str], Any] | None:
    """:func:`decode` (``payload=False``) of each of ``lines``, the log's
    lines after seq ``seq`` (whose line hashes to ``prev``), and their hash
    chain: each line's ``seq`` the next one and its ``prev`` the hash of the
    line before; a page at a time, in C loops over it (and each distinct
    line shape and actor checked once), for the replay and ``verify``.

    Returns:
        ``(events, hashes, fields)``: what :func:`decode` returns for each
        line, each line's :func:`line_hash`, and the events' ``seq``,
        ``ts``, ``type`` and ``actor`` (four tuples), when every line
        passes; ``None`` when one may not: the caller then decodes and
        chains the lines one by one, which finds the first problem and
        names it.
    """
    try:
        evs = list(map(orjson.loads, lines))
        rows = list(map(_ENVELOPE, evs))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    n = len(rows)
    if not n:
        return [], [], ((), (), (), ())
    vs, kinds, seqs, tss, prevs, actors = zip(*rows, strict=True)
    if (set(map(type, seqs)) != _INT or seqs != tuple(range(seq + 1, seq + 1 + n))
            or set(map(type, tss)) != _INT or min(tss) < -TS_LIMIT or max(tss) >= TS_LIMIT):
        return None
    hashes = list(map(_HEX, map(_HASHER, lines)))
    if prevs[0] != prev or list(prevs[1:]) != hashes[:-1]:
        return None  # (a prev equal to a hash is a str)
    try:
        shapes = set(zip(map(type, vs), vs, kinds, map(tuple, evs), strict=True))
        if not _all_good(shapes, _shapes_good, _shape_ok):
            return None
        if not _all_good(set(zip(vs, map(orjson.dumps, actors), strict=True)), _actors_good, _actor_ok):
            return None
    except TypeError:  # an unhashable version or type (or, never seen, a value orjson does not encode)
        return None
    if any("network_fs" in s[3] for s in shapes) and not all(
            type(e.get("network_fs", "")) is str for e in evs):
        return None
    dumped = list(map(orjson.dumps, evs))
    if dumped != lines and any(d != line and _said_twice(line, ev)  # (a key twice: see _a_key_twice)
                               for d, line, ev in zip(dumped, lines, evs, strict=True)):
        return None
    return evs, hashes, (seqs, tss, kinds, actors)


def _keys_in(obj: Any) -> int:
    """How many keys the objects in ``obj`` (decoded JSON) hold, all depths."""
    if type(obj) is dict:
        return len(obj) + sum(_keys_in(x) for x in obj.values() if type(x) in (dict, list))
    if type(obj) is list:
        return sum(_keys_in(x) for x in obj if type(x) in (dict, list))
    return 0


#: Every string of a line, in order (its escapes skipped; nothing else in
#: JSON holds a quote), with the ``:`` after it when it is a key.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?')


def _duplicate_key(line: bytes) -> str:
    """The message for a line with a key twice in one object, naming it."""
    twice: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                twice.append(key)
            seen.add(key)
        return dict(items)

    json.loads(line, object_pairs_hook=pairs)
    return f"the key {twice[0]!r} appears twice in one object (JSON readers differ on which value they keep)"


#: The longest line a log may hold, in bytes (64 MiB, newline excluded).
#: A writer refuses to write a longer one (``InvalidScope``: the request is
#: too large); a reader meets a longer complete line as corruption
#: (``CorruptLedger``), and keeps at most this many bytes of a line without
#: a newline in memory (a torn tail longer than that is set aside by the
#: writer in pieces, never read whole).
MAX_LINE_BYTES = 64 << 20


def _too_long(path: str, line_start: int, length: int, limit: int) -> CorruptLedger:
    return CorruptLedger(path, f"the line at byte {line_start} is {length} bytes long, over the "
                               f"limit of {limit} bytes (scopeledger never writes one that long)")


def _unfinished(pending: list[bytes], pending_len: int, chunk: bytes, limit: int) -> int:
    """Add ``chunk`` (no newline in it) to the line not yet ended, whose
    pieces are ``pending`` and length ``pending_len``; past ``limit`` bytes
    the pieces are dropped (the line is too long to be one: only its length
    is kept). Returns the new length."""
    pending_len += len(chunk)
    if pending_len <= limit:
        pending.append(chunk)
    else:
        pending.clear()
    return pending_len


def split_lines(chunks: Any, start: int, path: str = "the log", limit: int | None = None) -> Any:
    """Split an iterable of byte chunks (starting at byte ``start`` of the
    log ``path``) into complete lines, in time linear in the bytes: only
    the new chunk is searched for a newline, and a line spanning chunks is
    joined once, when its newline comes.

    Yields ``(line, line_start, line_end)`` with ``line`` lacking its newline
    and ``line_end`` the offset just past the newline. Bytes after the last
    newline (a line being written, or a torn one) are not yielded: callers
    compare the last ``line_end`` with the end of what they read. At most
    ``limit`` (default :data:`MAX_LINE_BYTES`) bytes of them are kept.

    Raises:
        CorruptLedger: (while iterating) a complete line is longer than
            ``limit`` bytes; it names the byte offset where the line starts.
    """
    if limit is None:
        limit = MAX_LINE_BYTES
    pending: list[bytes] = []  # pieces of the line not yet ended
    pending_len = 0  # its length so far (pieces past the limit are dropped)
    pos = start  # offset of the current chunk
    for chunk in chunks:
        j = chunk.find(b"\n")
        if j < 0:
            pending_len = _unfinished(pending, pending_len, chunk, limit)
            pos += len(chunk)
            continue
        line_start = pos - pending_len
        if pending_len + j > limit:
            raise _too_long(path, line_start, pending_len + j, limit)
        if pending:
            pending.append(chunk[:j])
            yield b"".join(pending), line_start, pos + j + 1
            pending = []
        else:
            yield chunk[:j], line_start, pos + j + 1
        i = j + 1
        while (j := chunk.find(b"\n", i)) >= 0:
            if j - i > limit:
                raise _too_long(path, pos + i, j - i, limit)
            yield chunk[i:j], pos + i, pos + j + 1
            i = j + 1
        pending_len = len(chunk) - i
        if pending_len and pending_len <= limit:
            pending.append(chunk[i:])
        pos += len(chunk)


def iter_lines(chunks: Any, path: str = "the log", start: int = 0, limit: int | None = None) -> Any:
    """Complete lines (without newline) of an iterable of byte chunks, as
    :func:`split_lines` (linear, ``limit`` likewise) but without offsets,
    splitting whole chunks at once (the replay path). A last piece without
    a newline is not yielded.

    Raises:
        CorruptLedger: (while iterating) a complete line is longer than
            ``limit`` bytes.
    """
    if limit is None:
        limit = MAX_LINE_BYTES
    pending: list[bytes] = []
    pending_len = 0
    pos = start
    for chunk in chunks:
        if b"\n" not in chunk:
            pending_len = _unfinished(pending, pending_len, chunk, limit)
            pos += len(chunk)
            continue
        pieces = chunk.split(b"\n")
        last = pieces.pop()
        first = pieces[0]
        if pending_len + len(first) > limit:
            raise _too_long(path, pos - pending_len, pending_len + len(first), limit)
        if pending:
            pending.append(first)
            pieces[0] = b"".join(pending)
        if len(pieces) > 1 and max(map(len, pieces[1:])) > limit:
            at = pos + len(first) + 1
            for p in pieces[1:]:
                if len(p) > limit:
                    raise _too_long(path, at, len(p), limit)
                at += len(p) + 1
        yield from pieces
        pending_len = len(last)
        pending = [last] if last and pending_len <= limit else []
        pos += len(chunk)


# -- payloads: checked and read into values ----------------------------------

# [(key, ident)] of the last identity built: one tuple, so that a thread
# never sees one identity's key with another's object.
_last_ident: list[Any] = [((), None)]


#: The largest session id (``sessions.id`` is a PostgreSQL ``integer``).
MAX_SESSION_ID = (1 << 31) - 1


def process_from_log(value: Any) -> ProcessIdentity:
    """Process identity from the log, v1 (``start``) or v2 (``host``,
    ``boot``, ``pid``, ``ticks``, ``pidns``: all present; a holder's may
    add ``session``, an int from 1 to :data:`MAX_SESSION_ID`, which the key
    tables allow only there); consecutive events of one process share one
    object (memoisation only: the result is the same)."""
    if "start" in value:  # v1
        key: tuple[Any, ...] = (value["pid"], value["start"], value["boot"], value.get("pidns"))
        pid, start, boot, ns = key
        if type(pid) is not int or type(boot) is not str or not (start is None or type(start) in (int, float)) \
                or not (ns is None or type(ns) is str):
            raise ValueError(f"malformed process {shown(value)}")
    else:
        session = None
        if len(value) > 5:  # (a holder's session: only on PostgreSQL)
            session = value.get("session", 0)
            if type(session) is not int or not 1 <= session <= MAX_SESSION_ID:
                raise ValueError(f"malformed process {shown(value)}")
        key = (value["host"], value["boot"], value["pid"], value["ticks"], value["pidns"], session)
        host, boot, pid, ticks, ns, _ = key
        if type(pid) is not int or not (boot is None or type(boot) is str) \
                or not (host is None or type(host) is str) or not (ns is None or type(ns) is str) \
                or not (ticks is None or (type(ticks) is int and ticks > 0)):
            raise ValueError(f"malformed process {shown(value)}")
    last = _last_ident[0]
    if last[0] == key:
        return last[1]  # type: ignore[no-any-return]  # (memo of the type returned below)
    if len(key) == 4:
        ident = ProcessIdentity(pid=key[0], start=key[1], boot=key[2], pidns=key[3], format=1)
    else:
        ident = ProcessIdentity(host=key[0], boot=key[1], pid=key[2], ticks=key[3], pidns=key[4], session=key[5])
    _last_ident[0] = (key, ident)
    return ident


def _bad(what: str, value: Any, expected: str) -> FoldError:
    return FoldError(f"{what} is {shown(value)}, not {expected}")


def _holder_name(value: Any, what: str) -> str:
    if type(value) is not str or not HOLDER_NAME.fullmatch(value):
        raise _bad(what, value, "a holder name")
    return value


def rules_from_log(value: Any, what: str, version: Any) -> tuple[ScopeRule, ...]:
    """``[[path, "read"|"write", bool], ...]`` (at least one; in a v2 line
    a rule may carry its identity as a fourth item) -> rules."""
    if type(value) is not list or not value:
        raise _bad(what, value, "a non-empty list of [path, permission, recursive]")
    out: list[ScopeRule] = []
    for r in value:
        if type(r) is list and len(r) == 4:
            ident = r[3]
            if version != 1 and type(ident) is dict and len(ident) == 1 and "fs" in ident:
                fast = identified_rule(r[0], r[1], r[2], ident["fs"])  # (the usual rule, checked in one call)
                if fast is not None:
                    out.append(fast)
                    continue
            if version == 1:
                raise _bad(f"{what}[{len(out)}]", r, "[path, \"read\"|\"write\", true|false] (a v1 line)")
            why = identity_fault(r[3])
            if why is not None:
                raise FoldError(f"{what}[{len(out)}]: {why}")
        try:  # checks the types and values as it builds the rule
            rule = rule_from_log(r)
        except (ValueError, KeyError, TypeError):
            raise _bad(f"{what}[{len(out)}]", r, "[absolute path, \"read\"|\"write\", true|false]") from None
        if version == 1 and rule.permission is Permission.EXCLUSIVE_READ:
            raise _bad(f"{what}[{len(out)}]", r, "[path, \"read\"|\"write\", true|false] (a v1 line: "
                       "\"exclusive-read\" is format 2's)")
        path = rule.path
        if not is_normal(path):
            try:
                normal = normalize_path(path) == path
            except InvalidScope:
                normal = False
            if not normal:
                raise _bad(f"{what}[{len(out)}] path", path, "a normalised path")
        if rule.below and not rule.recursive:
            raise FoldError(f"{what}[{len(out)}]: a non-recursive rule with filesystems below it")
        out.append(rule)
    return tuple(out)


def check_event(event: dict[str, Any]) -> Any:
    """Check the payload of one decoded event (its shape and types, not
    whether it applies to a state): what :func:`apply` checks first.

    Returns:
        What the check read from the payload, for :func:`apply`'s ``checked``
        (for a grant: ``(name, parent, rules, process, reserved, socket)``,
        the rules as :class:`ScopeRule` objects).

    Raises:
        FoldError: naming the field and what it should be (or an unknown
            event type).
    """
    kind = event.get("type")
    shape = SHAPES.get(kind) if type(kind) is str else None
    if shape is None:
        raise FoldError(f"unknown event type {shown(kind)}")
    return shape(event)


def _process_shape(value: Any) -> str:
    """What a process identity should be, for a message: v1's shape when
    it has a ``start``, else v2's."""
    if type(value) is dict and "start" in value:
        return '{"pid": int, "start": number, "boot": str}'
    return ('{"host": str|null, "boot": str|null, "pid": int, "ticks": int > 0|null, "pidns": str|null'
            '[, "session": int 1..2**31-1]}')


def _shape_grant(ev: dict[str, Any]) -> tuple[str, str | None, tuple[ScopeRule, ...], Any, bool, Any]:
    h = ev.get("holder")
    if type(h) is not dict:
        raise _bad("holder", h, "an object")
    name = _holder_name(h.get("name"), "holder.name")
    parent = h.get("parent")
    if ev["type"] == "registered":
        if parent is not None:
            raise _bad("holder.parent of a registered event", parent, "null")
    else:
        _holder_name(parent, "holder.parent")
    rules = rules_from_log(h.get("rules"), "holder.rules", ev.get("v"))
    try:
        process = process_from_log(h.get("process"))
    except (KeyError, TypeError, ValueError):
        raise _bad("holder.process", h.get("process"), _process_shape(h.get("process"))) from None
    reserved = h.get("reserved", False)
    if type(reserved) is not bool:
        raise _bad("holder.reserved", reserved, "true or false")
    socket = h.get("socket")
    if socket is not None and type(socket) is not str:
        raise _bad("holder.socket", socket, "a path or null")
    if len(h) > 6:
        if "note" in h and (type(h["note"]) is not str or len(h["note"]) > MAX_NOTE):
            raise _bad("holder.note", h["note"], f"a string of at most {MAX_NOTE} characters")
        if "advisory" in h:
            _check_advisory(h["advisory"], ev.get("v"))
        if "ttl_ns" in h or "lease_only" in h:
            _check_lease(h, ev)
    if "boot_ns" in ev and "ttl_ns" not in h:
        raise _bad("boot_ns", ev["boot_ns"], "absent from a grant without a lease (holder.ttl_ns)")
    return name, parent, rules, process, reserved, socket


def _check_advisory(value: Any, version: Any) -> None:
    """An advisory grant's conflicts: ``[[chain, rule, rule], ...]``."""
    if type(value) is not list:
        raise _bad("holder.advisory", value, "a list of [chain, their rule, requested rule]")
    for i, c in enumerate(value):
        if type(c) is not list or len(c) != 3 or type(c[0]) is not list or not c[0]:
            raise _bad(f"holder.advisory[{i}]", c, "[chain, their rule, requested rule]")
        for n in c[0]:
            _holder_name(n, f"holder.advisory[{i}] chain")
        rules_from_log(c[1:], f"holder.advisory[{i}]", version)


#: The longest lease, in nanoseconds (10**9 seconds, about 31.7 years).
MAX_TTL_NS = 10**18


def _ttl_ns(value: Any, what: str) -> int:
    if type(value) is not int or not 0 < value <= MAX_TTL_NS:
        raise _bad(what, value, f"an integer of nanoseconds from 1 to {MAX_TTL_NS}")
    return value


def _boot_ns(ev: dict[str, Any]) -> None:
    if "boot_ns" in ev and (type(ev["boot_ns"]) is not int or not 0 <= ev["boot_ns"] < TS_LIMIT):
        raise _bad("boot_ns", ev["boot_ns"], "an integer of nanoseconds >= 0 (CLOCK_BOOTTIME)")


def _check_lease(h: dict[str, Any], ev: dict[str, Any]) -> None:
    """A leased grant's ``holder.ttl_ns``, ``holder.lease_only`` (``true``,
    only with a ttl) and the line's ``boot_ns``."""
    _ttl_ns(h.get("ttl_ns"), "holder.ttl_ns")
    if "lease_only" in h and h["lease_only"] is not True:
        raise _bad("holder.lease_only", h["lease_only"], "true (left out when the process is bound too)")
    _boot_ns(ev)


def _shape_renewed(ev: dict[str, Any]) -> None:
    _holder_name(ev.get("name"), "name")
    token = ev.get("token")
    if type(token) is not int or token < 1:
        raise _bad("token", token, "a seq (an integer >= 1)")
    _ttl_ns(ev.get("ttl_ns"), "ttl_ns")
    _boot_ns(ev)


def _shape_repaired(ev: dict[str, Any]) -> None:
    through = ev.get("through")
    if type(through) is not int or not 1 <= through < TS_LIMIT:
        raise _bad("through", through, "a seq (an integer >= 1, below 2**63)")
    cut = ev.get("cut")
    if type(cut) is not str or not cut or len(cut) > 4096 or not cut.isprintable():
        raise _bad("cut", cut, "the directory the repair set the lines aside in (printable text)")


def _shape_void(ev: dict[str, Any]) -> None:
    return None


def _shape_attached(ev: dict[str, Any]) -> ProcessIdentity:
    _holder_name(ev.get("name"), "name")
    try:
        return process_from_log(ev.get("process"))
    except (KeyError, TypeError, ValueError):
        raise _bad("process", ev.get("process"), _process_shape(ev.get("process"))) from None


def _shape_removal(ev: dict[str, Any]) -> None:
    _holder_name(ev.get("name"), "name")
    plan = ev.get("reparented")
    if type(plan) is not list or (plan and not all(
            type(p) is list and len(p) == 2 and type(p[0]) is str and (p[1] is None or type(p[1]) is str)
            for p in plan)):
        raise _bad("reparented", plan, "a list of [child, new parent or null]")
    if ev["type"] == "reclaimed":
        reason = ev.get("reason")
        if type(reason) is not str or (reason not in RECLAIM_REASONS and not _NAME.fullmatch(reason)):
            raise _bad("reason", reason, f"one of {sorted(RECLAIM_REASONS)}")
        seen = ev.get("last_seen", 0)
        if type(seen) is not int or not -TS_LIMIT <= seen < TS_LIMIT:
            raise _bad("last_seen", seen, "an integer of nanoseconds since the epoch (signed 64 bits)")
        exit_status = "exit_code" in ev or "exit_signal" in ev  # how a zombie ended (v2)
        if exit_status:
            check_exit_status(ev)
        if reason not in RECLAIM_REASONS:  # (the rest sound: a newer scopeledger's reason)
            raise NewerValue(f"unknown reclaim reason {shown(reason)} (this scopeledger knows "
                             f"{', '.join(sorted(RECLAIM_REASONS))})")
        if exit_status and reason != "zombie":
            raise _bad("exit_code" if "exit_code" in ev else "exit_signal",
                       ev.get("exit_code", ev.get("exit_signal")), f"absent from a reclaim for {reason}")
    elif len(ev) > 8:  # a release's optional keys (v2): how the process ended, a note
        check_release_extras(ev)


#: The longest note a release may carry, in characters.
MAX_NOTE = 4096


def check_release_extras(ev: dict[str, Any]) -> None:
    """A release's optional ``exit_code`` (0-255), ``exit_signal`` (1-127),
    at most one of them, ``note`` (a str of at most :data:`MAX_NOTE`
    characters) and ``forced`` (a reason of 1 to :data:`MAX_NOTE` characters).

    Raises:
        FoldError: naming the key and the value.
    """
    check_exit_status(ev)
    note = ev.get("note")
    if "note" in ev and (type(note) is not str or len(note) > MAX_NOTE):
        raise _bad("note", note, f"a string of at most {MAX_NOTE} characters")
    forced = ev.get("forced", "x")
    if type(forced) is not str or not 0 < len(forced) <= MAX_NOTE:
        raise _bad("forced", forced, f"a reason of 1 to {MAX_NOTE} characters")


def check_exit_status(ev: dict[str, Any]) -> None:
    """A release's or a zombie's reclaim's optional ``exit_code`` (0-255)
    and ``exit_signal`` (1-127): at most one of them, never null.

    Raises:
        FoldError: naming the key and the value.
    """
    code, sig = ev.get("exit_code"), ev.get("exit_signal")
    if code is not None and (type(code) is not int or not 0 <= code <= 255):
        raise _bad("exit_code", code, "an integer from 0 to 255")
    if sig is not None and (type(sig) is not int or not 1 <= sig <= 127):
        raise _bad("exit_signal", sig, "an integer from 1 to 127")
    if code is not None and sig is not None:
        raise _bad("exit_signal", sig, "absent when exit_code is given")
    if ("exit_code" in ev and code is None) or ("exit_signal" in ev and sig is None):
        raise _bad("exit_code" if "exit_code" in ev and code is None else "exit_signal", None,
                   "an integer (leave the key out when unknown)")


REFUSAL_KINDS = frozenset({"scope_conflict", "delegation", "duplicate", "unknown_parent"})


def _shape_refused(ev: dict[str, Any]) -> None:
    if type(ev.get("key")) is not str:
        raise _bad("key", ev.get("key"), "a string")
    error = ev.get("error")
    if type(error) is not str or (error not in REFUSAL_KINDS and not _NAME.fullmatch(error)):
        raise _bad("error", error, f"one of {sorted(REFUSAL_KINDS)}")
    if type(ev.get("message")) is not str:
        raise _bad("message", ev.get("message"), "a string")
    req = ev.get("request")
    if type(req) is not dict:
        raise _bad("request", req, "an object")
    if type(req.get("name")) is not str:
        raise _bad("request.name", req.get("name"), "a string")
    if req.get("parent") is not None and type(req["parent"]) is not str:
        raise _bad("request.parent", req.get("parent"), "a string or null")
    rules = req.get("rules")
    if type(rules) is not list or not all(
            type(r) is list and len(r) in (3, 4) and type(r[0]) is str and type(r[1]) is str
            and type(r[2]) is bool and (len(r) == 3 or (ev.get("v") != 1 and identity_fault(r[3]) is None))
            for r in rules):
        raise _bad("request.rules", rules, "a list of [path, permission, recursive(, identity)]")
    rule = ev.get("rule")
    if rule is not None:
        rules_from_log([rule], "rule", ev.get("v"))
    chain = ev.get("chain")
    if type(chain) is not list or not all(type(c) is str for c in chain):
        raise _bad("chain", chain, "a list of holder names")
    if error not in REFUSAL_KINDS:  # (the rest sound: a newer scopeledger's kind of refusal)
        raise NewerValue(f"unknown kind of refusal {shown(error)} (this scopeledger knows "
                         f"{', '.join(sorted(REFUSAL_KINDS))})")


#: Per event type: the check of its payload (:func:`check_event`), returning
#: what it read for the fold's change of state.
SHAPES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "registered": _shape_grant,
    "delegated": _shape_grant,
    "attached": _shape_attached,
    "released": _shape_removal,
    "reclaimed": _shape_removal,
    "refused": _shape_refused,
    "renewed": _shape_renewed,
    "repaired": _shape_repaired,
    "void": _shape_void,
}
assert set(SHAPES) == EVENT_TYPES
