"""The JSON Schema of an event line (``scopeledger/schema/event.schema.json``,
shipped in the package), generated from the decoder's key tables
(:data:`scopeledger._events.KEYS`, :data:`~scopeledger._events.NESTED`) and
the value types below, so that the two cannot drift: a key added to the
tables without a type here makes :func:`generate` fail, and
``tests/test_schema.py`` checks that the shipped file is what it generates
and that every line a ledger writes validates.

Regenerate the file after a change of the format::

    python -m scopeledger._schema > scopeledger/schema/event.schema.json

The schema is JSON Schema draft 2020-12 (json-schema.org). It says what
one line may be on its own: the keys of each object for its version and
type, their types, the holder name and rule syntax. What only the log as a
whole shows is not in it: that seqs are gapless, that ``prev`` is the hash
of the line before, that times never decrease (v1), and that an event
applies to the state before it (a holder granted while live, a removal of
a holder that is not, a re-parenting that differs from the one the fold
computes). ``ledger verify`` checks those.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ._events import (EVENT_TYPES, KEYS, MAX_SESSION_ID, MAX_TTL_NS, NESTED, OPTIONAL as LINE_OPTIONAL,
                      RECLAIM_REASONS, REFUSAL_KINDS, TS_LIMIT)
from ._rules import HOLDER_NAME, KEY
from ._imports import first_use

#: Where the schema is, inside the package.
SCHEMA_RESOURCE = ("schema", "event.schema.json")

_NAME = {"$ref": "#/$defs/holderName"}
_NULL = {"type": "null"}

#: The value of each key, by kind of object (as in KEYS), for every version
#: (:data:`VALUES_BY_VERSION` overrides per version). A key that holds an
#: object of :data:`NESTED` is left out: its object's own definition says
#: it (an entry here for such a key adds to it, as for the holder's parent
#: of a registered event, which must be null).
VALUES: dict[str, dict[str, Any]] = {
    "line": {
        "seq": {"type": "integer", "minimum": 1},
        "ts": {"type": "integer", "minimum": -TS_LIMIT, "maximum": TS_LIMIT - 1},
        "prev": {"type": "string", "pattern": "^[0-9a-f]{32}$", "maxLength": 32},
        "network_fs": {"type": "string"},
    },
    "actor": {
        "pid": {"type": "integer"},
        "start": {"type": ["number", "null"]},
        "boot": {"type": "string"},
        "pidns": {"type": ["string", "null"]},
    },
    "process": {
        "pid": {"type": "integer"},
        "start": {"type": ["number", "null"]},
        "boot": {"type": "string"},
        "pidns": {"type": ["string", "null"]},
    },
    "holder": {
        "name": _NAME,
        "rules": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/rule"}},
        "parent": {"anyOf": [_NAME, _NULL]},
        "reserved": {"type": "boolean"},
        "socket": {"type": ["string", "null"]},
        "note": {"type": "string", "maxLength": 4096},
        "advisory": {"type": "array", "items": {
            "type": "array", "prefixItems": [{"type": "array", "minItems": 1, "items": _NAME},
                                             {"$ref": "#/$defs/v2.rule"}, {"$ref": "#/$defs/v2.rule"}],
            "minItems": 3, "maxItems": 3}},
        "ttl_ns": {"type": "integer", "minimum": 1, "maximum": MAX_TTL_NS},
        "lease_only": {"const": True},
    },
    "request": {
        "name": {"type": "string"},
        "parent": {"type": ["string", "null"]},
        "rules": {"type": "array", "items": {"$ref": "#/$defs/requestedRule"}},
    },
    "registered": {"holder": {"properties": {"parent": _NULL}},
                   "boot_ns": {"type": "integer", "minimum": 0, "maximum": TS_LIMIT - 1}},
    "delegated": {"holder": {"properties": {"parent": _NAME}},
                  "boot_ns": {"type": "integer", "minimum": 0, "maximum": TS_LIMIT - 1}},
    "renewed": {"name": _NAME, "token": {"type": "integer", "minimum": 1},
                "ttl_ns": {"type": "integer", "minimum": 1, "maximum": MAX_TTL_NS},
                "boot_ns": {"type": "integer", "minimum": 0, "maximum": TS_LIMIT - 1}},
    "attached": {"name": _NAME},
    "released": {"name": _NAME, "reparented": {"$ref": "#/$defs/reparented"},
                 "exit_code": {"type": "integer", "minimum": 0, "maximum": 255},
                 "exit_signal": {"type": "integer", "minimum": 1, "maximum": 127},
                 "note": {"type": "string", "maxLength": 4096},
                 "forced": {"type": "string", "minLength": 1, "maxLength": 4096}},
    "reclaimed": {
        "name": _NAME,
        "reason": {"enum": sorted(RECLAIM_REASONS)},
        "reparented": {"$ref": "#/$defs/reparented"},
        "last_seen": {"type": "integer", "minimum": -TS_LIMIT, "maximum": TS_LIMIT - 1},
        # (a zombie's: how it ended, read before its parent reaped it)
        "exit_code": {"type": "integer", "minimum": 0, "maximum": 255},
        "exit_signal": {"type": "integer", "minimum": 1, "maximum": 127},
    },
    # (a repair's line, in place of the first line it cut, and the lines
    # keeping the cut seqs void up to its "through")
    "repaired": {"through": {"type": "integer", "minimum": 1, "maximum": TS_LIMIT - 1},
                 "cut": {"type": "string", "minLength": 1, "maxLength": 4096}},
    "void": {},
    "refused": {
        "key": {"type": "string"},
        "error": {"enum": sorted(REFUSAL_KINDS)},
        "message": {"type": "string"},
        "rule": {"anyOf": [{"$ref": "#/$defs/rule"}, _NULL]},
        "chain": {"type": "array", "items": {"type": "string"}},
    },
}

# A rule's identity (v2): the fourth item of a rule, {"fs", "via"?, "below"?}.
VALUES["rule_identity"] = {
    "fs": {"$ref": "#/$defs/key"},
    "via": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/key"}},
    "below": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/key"}},
}

#: Per version, values that differ from :data:`VALUES` (kind -> key -> value).
VALUES_BY_VERSION: dict[int, dict[str, dict[str, Any]]] = {1: {}, 2: {
    # v2 rules may carry their path's identity as a fourth item.
    "holder": {"rules": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/v2.rule"}}},
    "request": {"rules": {"type": "array", "items": {"$ref": "#/$defs/v2.requestedRule"}}},
    "refused": {"rule": {"anyOf": [{"$ref": "#/$defs/v2.rule"}, _NULL]}},
}}
#: v2's process identity (``scopeledger._process``): every key present.
_IDENTITY_V2: dict[str, Any] = {
        "host": {"type": ["string", "null"]},
        "boot": {"type": ["string", "null"]},
        "pid": {"type": "integer"},
        "ticks": {"anyOf": [{"type": "integer", "minimum": 1}, _NULL]},
        "pidns": {"type": ["string", "null"]},
    }
VALUES_BY_VERSION[2]["actor"] = _IDENTITY_V2
#: A holder's process (v2) may add the PostgreSQL client session of the ledger
#: that bound it (``scopeledger._sessions``); an actor never does.
VALUES_BY_VERSION[2]["process"] = {**_IDENTITY_V2,
                                   "session": {"type": "integer", "minimum": 1, "maximum": MAX_SESSION_ID}}

#: Keys an object of a kind may leave out; every other key KEYS lists for it
#: is required (the decoder and the fold refuse a line without it). A
#: line's own optional keys are the decoder's table, ``_events.OPTIONAL``.
OPTIONAL: dict[str, frozenset[str]] = {
    "actor": frozenset({"start", "pidns"}),
    "process": frozenset({"pidns"}),
    "rule_identity": frozenset({"via", "below"}),
    "released": frozenset({"exit_code", "exit_signal", "note", "forced"}),
    "holder": frozenset({"note", "advisory", "ttl_ns", "lease_only"}),
}
#: Per version, optional keys that differ from :data:`OPTIONAL`.
OPTIONAL_BY_VERSION: dict[int, dict[str, frozenset[str]]] = {
    # a v2 identity has all five keys; a holder's may add its session
    2: {"actor": frozenset(), "process": frozenset({"session"})},
}

#: A normalised absolute path, as the fold takes a rule's: ``/``, or
#: components without ``.``/``..`` and no empty one (no ``//``, no trailing
#: slash).
PATH_PATTERN = r"^(/|(/(?!\.\.?(/|$))[^/]+)+)$"

_DEFS: dict[str, Any] = {
    # (no newline anywhere: a validator using Python's re.search lets "$" match before a final one)
    "holderName": {"type": "string", "pattern": f"^{HOLDER_NAME.pattern}$", "not": {"pattern": "\n"}},
    "rule": {
        "description": "[path, permission, recursive]",
        "type": "array",
        "prefixItems": [{"type": "string", "pattern": PATH_PATTERN}, {"enum": ["read", "write"]},
                        {"type": "boolean"}],
        "minItems": 3,
        "maxItems": 3,
    },
    "requestedRule": {
        "description": "a refused request's rule, as asked: [path, permission, recursive]",
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "string"}, {"type": "boolean"}],
        "minItems": 3,
        "maxItems": 3,
    },
    "key": {"description": "a filesystem's device number and a path within it, \"254:0/srv/x\"",
            "type": "string", "pattern": f"^{KEY.pattern}$"},
    "v2.rule": {
        "description": "[path, permission, recursive(, identity)]",
        "type": "array",
        "prefixItems": [{"type": "string", "pattern": PATH_PATTERN},
                        {"enum": ["read", "write", "exclusive-read"]},  # (v2: exclusive reads)
                        {"type": "boolean"}, {"$ref": "#/$defs/v2.rule_identity"}],
        "minItems": 3,
        "maxItems": 4,
    },
    "v2.requestedRule": {
        "description": "a refused request's rule, as asked: [path, permission, recursive(, identity)]",
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "string"}, {"type": "boolean"},
                        {"$ref": "#/$defs/v2.rule_identity"}],
        "minItems": 3,
        "maxItems": 4,
    },
    "reparented": {
        "description": "[[child, new parent or null], ...]",
        "type": "array",
        "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": ["string", "null"]}],
                  "minItems": 2, "maxItems": 2},
    },
}


class SchemaDrift(Exception):
    """The key tables name a key this module has no value type for."""


def _value(version: int, kind: str, key: str) -> Any:
    per = VALUES_BY_VERSION.get(version, {}).get(kind, {})
    if key in per:
        return per[key]
    return VALUES.get(kind, {}).get(key)


def _object(version: int, kind: str, keys: frozenset[str]) -> dict[str, Any]:
    """The schema of a ``kind`` object (or, for an event type, its whole
    line: envelope and payload) of format ``version``."""
    top = kind in EVENT_TYPES
    nested = dict(NESTED.get(kind, ()))
    if top:
        nested.update(NESTED["line"])
    props: dict[str, Any] = {}
    for key in sorted(keys):
        if key == "v":
            props[key] = {"const": version}
            continue
        if key == "type" and top:
            props[key] = {"const": kind}
            continue
        value = _value(version, kind, key)
        if value is None and top:
            value = _value(version, "line", key)
        if key in nested:
            ref = {"$ref": f"#/$defs/v{version}.{nested[key]}"}
            props[key] = {"allOf": [ref, value]} if value is not None else ref
        elif value is not None:
            props[key] = value
        else:
            raise SchemaDrift(f"format version {version}: no value type for key {key!r} of {kind}: "
                              f"add it to scopeledger._schema.VALUES (or VALUES_BY_VERSION)")
    optional = LINE_OPTIONAL if top else OPTIONAL_BY_VERSION.get(version, {}).get(
        kind, OPTIONAL.get(kind, frozenset()))
    return {"type": "object", "properties": props, "required": sorted(keys - optional),
            "additionalProperties": False}


def generate() -> dict[str, Any]:
    """The schema, from the key tables and :data:`VALUES`.

    Raises:
        SchemaDrift: a key of :data:`scopeledger._events.KEYS` has no value
            type here.
    """
    defs: dict[str, Any] = dict(_DEFS)
    branches = []
    for version in sorted(KEYS):
        keys = KEYS[version]
        for kind in sorted(keys):
            if kind == "line":
                continue
            if kind in EVENT_TYPES:
                defs[f"v{version}.{kind}"] = _object(version, kind, keys["line"] | keys[kind])
                branches.append({"if": {"properties": {"v": {"const": version}, "type": {"const": kind}}},
                                 "then": {"$ref": f"#/$defs/v{version}.{kind}"}})
            else:
                defs[f"v{version}.{kind}"] = _object(version, kind, keys[kind])
        for kind in sorted(EVENT_TYPES - keys.keys()):  # (a type this version does not have: never valid)
            branches.append({"if": {"properties": {"v": {"const": version}, "type": {"const": kind}}},
                             "then": False})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:scopeledger:event-line",
        "title": "scopeledger event line",
        "description": ("One line of a scopeledger log (events.jsonl), format versions "
                        f"{', '.join(str(v) for v in sorted(KEYS))}; generated from scopeledger._events.KEYS "
                        "by scopeledger._schema. Checks one line on its own: that seqs are gapless, prev is "
                        "the hash of the line before and each event applies to the state before it is "
                        "'ledger verify''s to check."),
        "type": "object",
        "required": ["v", "type"],
        "properties": {"v": {"enum": sorted(KEYS)}, "type": {"enum": sorted(EVENT_TYPES)}},
        "allOf": branches,
        "$defs": dict(sorted(defs.items())),
    }


def dumps() -> str:
    """:func:`generate` as the shipped file's text (sorted, indented, a
    final newline)."""
    return json.dumps(generate(), indent=1, ensure_ascii=False) + "\n"


def load() -> dict[str, Any]:
    """The shipped schema (``scopeledger/schema/event.schema.json``)."""
    with first_use:
        from importlib.resources import files

    schema: dict[str, Any] = json.loads(files("scopeledger").joinpath(*SCHEMA_RESOURCE).read_text(encoding="utf-8"))
    return schema


if __name__ == "__main__":
    sys.stdout.write(dumps())
