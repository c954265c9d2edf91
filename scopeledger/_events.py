"""The log's line format: encoding, decoding and the hash chain.

One event is one line of UTF-8 JSON (no newline inside), keys in this order::

    {"v": 1,                    format version (int)
     "seq": 42,                 gapless, from 1 (int)
     "ts": 1764426000123456789, UTC, integer nanoseconds since the epoch;
                                never less than the previous event's ts
     "actor": {"pid": 4242, "start": 1764425990.12, "boot": "<boot id>",
               "pidns": "pid:[4026531836]"},   (pidns: optional)
     "prev": "<32 hex>",        blake2b-128 of the previous line's bytes
                                (without its newline); 32 zeros for seq 1
     "type": "registered",      see EVENT_TYPES
     ...payload}

Payloads (rules are ``[path, "read"|"write", recursive]``)::

    registered / delegated  "holder": {"name", "rules", "process": {pid, start, boot[, pidns]},
                                       "parent": str|null, "reserved": bool,
                                       "socket": str|null}
    attached                "name", "process"
    released                "name", "reparented": [[child, new_parent|null], ...]
    reclaimed               "name", "reason", "reparented"
                            reason: process_gone | zombie | pid_reused | earlier_boot
    refused                 "key", "error": scope_conflict|delegation|duplicate|unknown_parent,
                            "message", "request": {"name", "parent", "rules"},
                            "rule": rule|null, "chain": [names, top first]

The hash chain lets ``verify`` find a line edited after the fact; it is an
integrity check, not a signature (anyone who can write the log can rewrite
the chain).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ._errors import CorruptLedger, shown
from ._fold import EVENT_TYPES, FORMAT_VERSION, TS_LIMIT


_STARTS = (int, float, type(None))  # a process start time: seconds, or unknown


def line_hash(line: bytes) -> str:
    """blake2b with a 16-byte digest of ``line`` (without newline), hex."""
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def encode(event: dict[str, Any]) -> bytes:
    """One event dict -> its line, without the trailing newline."""
    return orjson.dumps(event)


def decode(line: bytes, path: str, lineno: int | None) -> dict[str, Any]:
    """One line (without newline) -> the event dict, envelope checked.

    Raises:
        CorruptLedger: not JSON, not an object, a missing or mistyped
            envelope field, an unknown type, or a newer format version.
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
        actor = ev["actor"]
        ts = ev["ts"]
        if (type(ev["seq"]) is int and ev["v"] == FORMAT_VERSION and type(ts) is int
                and -TS_LIMIT <= ts < TS_LIMIT and type(ev["prev"]) is str
                and type(actor) is dict and type(actor["pid"]) is int
                and type(actor["boot"]) is str and type(actor.get("start")) in _STARTS
                and type(ev["type"]) is str and ev["type"] in EVENT_TYPES):
            return ev
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
    if v != FORMAT_VERSION:
        if type(v) is int and v > FORMAT_VERSION:
            raise CorruptLedger(path, f"format version {v} is newer than this scopeledger "
                                      f"reads ({FORMAT_VERSION}); upgrade scopeledger",
                                line=lineno, seq=seq)
        raise CorruptLedger(path, f"unsupported format version {shown(v)}", line=lineno, seq=seq)
    if type(ev.get("ts")) is not int:
        raise CorruptLedger(path, "ts is not an integer", line=lineno, seq=seq)
    if not -TS_LIMIT <= ev["ts"] < TS_LIMIT:
        raise CorruptLedger(path, f"ts {shown(ev['ts'])} is out of range (signed 64-bit nanoseconds)",
                            line=lineno, seq=seq)
    if type(ev.get("prev")) is not str:
        raise CorruptLedger(path, "prev is not a string", line=lineno, seq=seq)
    if type(ev.get("type")) is not str or ev["type"] not in EVENT_TYPES:
        raise CorruptLedger(path, f"unknown event type {shown(ev.get('type'))}", line=lineno, seq=seq)
    actor = ev.get("actor")
    if type(actor) is not dict or type(actor.get("pid")) is not int or type(actor.get("boot")) is not str \
            or type(actor.get("start")) not in _STARTS:
        raise CorruptLedger(path, f"actor is not an object of pid (integer), start (number) and boot "
                                  f"(string): {shown(actor)}", line=lineno, seq=seq)
    return ev


def split_lines(chunks: Any, start: int) -> Any:
    """Split an iterable of byte chunks (starting at byte ``start`` of the
    log) into complete lines.

    Yields ``(line, line_start, line_end)`` with ``line`` lacking its newline
    and ``line_end`` the offset just past the newline. Bytes after the last
    newline (a line being written, or a torn one) are not yielded: callers
    compare the last ``line_end`` with the end of what they read.
    """
    pending = b""
    pos = start
    for chunk in chunks:
        data = pending + chunk if pending else chunk
        base = pos - len(pending)
        i = 0
        while True:
            j = data.find(b"\n", i)
            if j < 0:
                break
            yield data[i:j], base + i, base + j + 1
            i = j + 1
        pending = data[i:]
        pos += len(chunk)


def iter_lines(chunks: Any) -> Any:
    """Complete lines (without newline) of an iterable of byte chunks, as
    :func:`split_lines` but without offsets, splitting whole chunks at once
    (the replay path). A last piece without a newline is not yielded."""
    pending = b""
    for chunk in chunks:
        pieces = (pending + chunk if pending else chunk).split(b"\n")
        pending = pieces.pop()
        yield from pieces
