"""The log format: versions 1 and 2, strict keys (issue 13 item 16)."""

import os
import re

import orjson
import pytest

from scopeledger import CorruptLedger, Ledger, ScopeConflict, ScopeRule, verify
from scopeledger._events import decode, line_hash
from torture_support import as_v1_event

W = lambda p: ScopeRule(p, "write")  # noqa: E731


def _lines(path):
    return open(os.path.join(path, "events.jsonl"), "rb").read().splitlines()


def _write_rechained(path, events):
    """Write ``events`` (dicts) as the log, each ``prev`` the hash of the
    line before: a log whose chain is intact, as a tool rewriting it would
    leave it."""
    out, prev = [], "0" * 32
    for ev in events:
        ev = dict(ev, prev=prev)
        line = orjson.dumps(ev)
        out.append(line)
        prev = line_hash(line)
    with open(os.path.join(path, "events.jsonl"), "wb") as f:
        f.write(b"".join(x + b"\n" for x in out))


def _every_kind_of_event(path):
    """A log with every event type (and every nested object) in it."""
    with Ledger.open(path) as led:
        led.register("top", [ScopeRule("/r", "write", True)])
        led.delegate("top", "kid", [W("/r/kid")], reserved=True)
        led.attach("kid")
        with pytest.raises(ScopeConflict):
            led.register("other", [W("/r/x")])  # refused
        led.release("kid")
        led.register("gone", [W("/g")])
        led.reclaim_stale(probe=lambda ident: False)  # reclaimed
        led.register("last", [W("/l")])


def test_writers_write_version_2_and_every_key_written_is_in_the_tables(ledger_dir):
    _every_kind_of_event(ledger_dir)
    from scopeledger._events import unknown_key

    events = [orjson.loads(x) for x in _lines(ledger_dir)]
    assert {e["type"] for e in events} == {"registered", "delegated", "attached", "refused",
                                           "released", "reclaimed"}
    for e in events:
        assert e["v"] == 2
        assert unknown_key(e, e["type"], 2) is None


def test_a_v1_log_is_read_and_continued_with_v2_lines(ledger_dir):
    """A log written by the previous version (v1 lines), continued by this
    one: both read, the chain runs through, nothing stored is rewritten."""
    _every_kind_of_event(ledger_dir)
    v1 = [as_v1_event(orjson.loads(x)) for x in _lines(ledger_dir)]
    _write_rechained(ledger_dir, v1)
    before = open(os.path.join(ledger_dir, "events.jsonl"), "rb").read()
    with Ledger.open(ledger_dir) as led:
        assert sorted(a.name for a in led.holders()) == ["last"]
        led.register("new", [W("/new")])
        assert [e.data["v"] for e in led.events()] == [1] * len(v1) + [2]
    after = open(os.path.join(ledger_dir, "events.jsonl"), "rb").read()
    assert after.startswith(before)
    assert verify(ledger_dir).ok


def _with_extra_key(ev, where):
    ev = orjson.loads(orjson.dumps(ev))
    obj = ev
    for key in where:
        obj = obj[key]
    obj["extra"] = 1
    return ev


# (event type to change, object path inside the line, how a message names it)
PLACES = [
    ("registered", (), "in a registered event"),
    ("registered", ("holder",), "in holder"),
    ("registered", ("actor",), "in actor"),
    ("registered", ("holder", "process"), "in holder.process"),
    ("released", (), "in a released event"),
    ("attached", ("process",), "in process"),
    ("attached", (), "in an attached event"),  # (it said "in a attached event")
    ("refused", ("request",), "in request"),
]


@pytest.mark.parametrize("kind, where, named", PLACES)
@pytest.mark.parametrize("position", ["middle", "last"])
def test_a_correctly_chained_line_with_an_unknown_key_is_corrupt(ledger_dir, kind, where, named, position):
    _every_kind_of_event(ledger_dir)
    events = [orjson.loads(x) for x in _lines(ledger_dir)]
    at = [i for i, e in enumerate(events) if e["type"] == kind][0 if position == "middle" else -1]
    if position == "last":
        events = events[:at + 1]
    events[at] = _with_extra_key(events[at], where)
    _write_rechained(ledger_dir, events)
    lineno = at + 1
    with pytest.raises(CorruptLedger) as info:
        Ledger.open(ledger_dir)
    assert info.value.line == lineno
    assert f"unknown key 'extra' {named}" in str(info.value)
    report = verify(ledger_dir)
    assert not report.ok
    assert report.problems[0].line == lineno and f"unknown key 'extra' {named}" in report.problems[0].message


def test_a_ledger_already_open_refuses_a_new_line_with_an_unknown_key(ledger_dir):
    """The folding path of a ledger that is open when the line appears."""
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])
        with Ledger.open(ledger_dir) as other:
            other.register("b", [W("/b")])
        events = [orjson.loads(x) for x in _lines(ledger_dir)]
        events[1] = _with_extra_key(events[1], ("holder",))
        _write_rechained(ledger_dir, events)
        with pytest.raises(CorruptLedger, match=r"line 2 \(seq 2\): unknown key 'extra' in holder"):
            led.holders()


def test_replay_refuses_an_unknown_key_at_the_top_level_or_in_the_actor(ledger_dir):
    _every_kind_of_event(ledger_dir)
    events = [orjson.loads(x) for x in _lines(ledger_dir)]
    for where in ((), ("actor",)):
        changed = list(events)
        changed[2] = _with_extra_key(changed[2], where)
        _write_rechained(ledger_dir, changed)
        with pytest.raises(CorruptLedger, match="line 3 .*unknown key 'extra'"):
            list(_replay(ledger_dir))


def _replay(path):
    from scopeledger._ledger import _unloaded
    from scopeledger._store import Store

    store = Store(path, readonly=True)
    try:
        yield from _unloaded(store).events()
    finally:
        store.close()


def test_the_key_tables_cover_every_version_type_and_nested_object():
    from scopeledger._events import KEYS, NESTED
    from scopeledger._events import EVENT_TYPES, FORMAT_VERSION, FORMAT_VERSIONS

    assert set(KEYS) == FORMAT_VERSIONS and FORMAT_VERSION == 2
    for v, keys in KEYS.items():
        assert EVENT_TYPES - keys.keys() == (set() if v == 2 else {"renewed", "repaired", "void"})  # (v2's)
        for kind, inside in NESTED.items():
            for key, sub in inside:
                assert key in (keys["line"] | keys[kind] if kind in EVENT_TYPES else keys[kind])
                assert sub in keys


def test_the_unknown_key_is_named_whatever_its_text(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])
    ev = orjson.loads(_lines(ledger_dir)[0])
    ev["holder"]["\u202eevil"] = 1
    with pytest.raises(CorruptLedger, match=r"unknown key '\\u202eevil' in holder"):
        decode(orjson.dumps(ev), "events.jsonl", 1)
    assert decode(orjson.dumps(ev), "events.jsonl", 1, payload=False) == ev  # replay reads the top level only


def _rechain_lines(path, lines):
    """Write raw ``lines`` (bytes) as the log, re-chaining each ``prev``."""
    out, prev = [], b"0" * 32
    for line in lines:
        line = re.sub(rb'"prev":"[0-9a-f]{32}"', b'"prev":"' + prev + b'"', line, count=1)
        out.append(line)
        prev = line_hash(line).encode()
    with open(os.path.join(path, "events.jsonl"), "wb") as f:
        f.write(b"".join(x + b"\n" for x in out))


@pytest.mark.parametrize("twice", [
    (b'"type":"delegated"', b'"type":"registered","type":"delegated"'),   # the top level
    (b'"name":"kid"', b'"name":"evil","name":"kid"'),                     # inside holder
    (b'"pid":', b'"pid":1,"pid":'),                                       # inside actor
])
def test_a_correctly_chained_line_with_a_key_twice_is_corrupt(ledger_dir, twice):
    """JSON readers differ on which of two values of one key they keep (the
    last: Python, orjson; the first: some streaming readers): such a line
    says two events at once (found by a reviewer: open and verify took it)."""
    _every_kind_of_event(ledger_dir)
    lines = _lines(ledger_dir)
    at = next(i for i, x in enumerate(lines) if b'"type":"delegated"' in x)
    lines[at] = lines[at].replace(*twice, 1)
    _rechain_lines(ledger_dir, lines)
    key = twice[1].split(b'"')[1].decode()
    with pytest.raises(CorruptLedger, match=rf"line {at + 1} .*the key '{key}' appears twice in one object"):
        Ledger.open(ledger_dir)
    report = verify(ledger_dir)
    assert not report.ok and report.problems[0].line == at + 1


def test_a_quote_and_colon_inside_a_value_is_not_taken_for_a_key(ledger_dir):
    """The key count reads JSON strings, escapes and all: a path holding
    '":' and a name's escaped characters are values, not keys."""
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W('/t/x":y\\":z')])
        led.register("b", [W("/t/\u202e\u0001")])  # stored escaped: not its own re-encoding
    with Ledger.open(ledger_dir) as led:
        assert sorted(a.name for a in led.holders()) == ["a", "b"]
    assert verify(ledger_dir).ok


def _with_session(ev, where, value):
    ev = orjson.loads(orjson.dumps(ev))
    obj = ev
    for key in where:
        obj = obj[key]
    obj["session"] = value
    return ev


@pytest.mark.parametrize("kind, where", [("registered", ("holder", "process")), ("delegated", ("holder", "process")),
                                         ("attached", ("process",))])
def test_a_holders_process_may_carry_its_client_session_and_the_fold_keeps_it(ledger_dir, kind, where):
    """The key a ledger on PostgreSQL writes (scopeledger._sessions), read
    from a file too: the format is one."""
    _every_kind_of_event(ledger_dir)
    events = [orjson.loads(x) for x in _lines(ledger_dir)]
    at = [i for i, e in enumerate(events) if e["type"] == kind][0]
    events[at] = _with_session(events[at], where, 7)
    _write_rechained(ledger_dir, events)
    with Ledger.open(ledger_dir) as led:
        name = events[at]["holder"]["name"] if "holder" in events[at] else events[at]["name"]
        assert led.state_at(seq=at + 1).holders[name].process.session == 7
        assert led.state_at(seq=at + 1).holders[name].process.to_json()["session"] == 7
    assert verify(ledger_dir).ok


@pytest.mark.parametrize("where, value, named", [
    (("actor",), 7, "unknown key 'session' in actor"),  # never a writer's
    (("holder", "process"), 0, "holder.process"),
    (("holder", "process"), 2**31, "holder.process"),
    (("holder", "process"), None, "holder.process"),
    (("holder", "process"), "7", "holder.process"),
    (("holder", "process"), True, "holder.process"),
])
def test_a_bad_or_misplaced_session_is_corrupt(ledger_dir, where, value, named):
    _every_kind_of_event(ledger_dir)
    events = [orjson.loads(x) for x in _lines(ledger_dir)]
    events[0] = _with_session(events[0], where, value)
    _write_rechained(ledger_dir, events)
    with pytest.raises(CorruptLedger, match=re.escape(named)):
        Ledger.open(ledger_dir)
    report = verify(ledger_dir)
    assert not report.ok and report.problems[0].line == 1 and named in report.problems[0].message
