"""decode_page (a page of lines decoded and chained at once: replay, verify)
accepts exactly what decode and the chain check, line by line, accept."""

import os

import orjson
import pytest

from scopeledger import CorruptLedger, Ledger, ScopeConflict, ScopeRule
from scopeledger._events import GENESIS_HASH, decode, decode_page, line_hash


def _log(path):
    with Ledger.open(path) as led:
        led.register("top", [ScopeRule("/r", "write", True)], note="why")
        led.delegate("top", "kid", [ScopeRule("/r/kid", "write")], reserved=True)
        led.attach("kid")
        with pytest.raises(ScopeConflict):
            led.register("other", [ScopeRule("/r/x", "write")])  # refused
        led.release("kid", returncode=3)
        led.register("gone", [ScopeRule("/g", "write")])
        led.reclaim_stale(probe=lambda ident: False)  # reclaimed
        led.register("last", [ScopeRule("/l", "read")])
    return open(os.path.join(path, "events.jsonl"), "rb").read().splitlines()


def _page(lines, seq=0, prev=GENESIS_HASH):
    """decode_page's answer, its events' fields checked against the events."""
    got = decode_page(lines, seq, prev)
    if got is None:
        return None
    evs, hashes, fields = got
    assert fields == tuple(tuple(e[k] for e in evs) for k in ("seq", "ts", "type", "actor"))
    return evs, hashes


def _one_by_one(lines, seq=0, prev=GENESIS_HASH):
    """What a reader going line by line makes of ``lines``: ``(events,
    hashes)``, or None at the first line that does not decode or chain."""
    evs, hashes = [], []
    for line in lines:
        seq += 1
        try:
            ev = decode(line, "log", seq, payload=False)
        except CorruptLedger:
            return None
        if ev["prev"] != prev or ev["seq"] != seq:
            return None
        prev = line_hash(line)
        evs.append(ev)
        hashes.append(prev)
    return evs, hashes


def _rechained(lines):
    out, prev = [], GENESIS_HASH.encode()
    for line in lines:
        if b'"prev":"' in line:
            i = line.index(b'"prev":"') + 8
            line = line[:i] + prev + line[i + 32:]
        out.append(line)
        prev = line_hash(line).encode()
    return out


def test_a_good_page_reads_as_line_by_line(ledger_dir):
    lines = _log(ledger_dir)
    assert _page(lines) == _one_by_one(lines)
    assert _page(lines[3:], 3, line_hash(lines[2])) == _one_by_one(lines[3:], 3, line_hash(lines[2]))
    assert _page([], 5, GENESIS_HASH) == ([], [])


def test_a_page_that_does_not_follow_is_refused(ledger_dir):
    lines = _log(ledger_dir)
    assert decode_page(lines, 1, GENESIS_HASH) is None  # seqs from 1, not 2
    assert decode_page(lines, 0, "f" * 32) is None  # the first prev
    assert decode_page(lines[:2] + lines[3:], 0, GENESIS_HASH) is None  # a line left out
    assert decode_page(lines[1:2] + lines[:1] + lines[2:], 0, GENESIS_HASH) is None  # two swapped


#: (what, into): the first occurrence of ``what`` in a line replaced; the
#: chain recomputed, so that only the line's own checks decide.
MUTATIONS = [
    (b'"seq":', b'"seq":1.5,"q":'),
    (b'"v":2', b'"v":2.0'),
    (b'"v":2', b'"v":true'),
    (b'"v":2', b'"v":3'),
    (b'"v":2', b'"v":1'),
    (b'"v":2', b'"v":[2]'),
    (b'"v":2', b'"v":null'),
    (b'"ts":', b'"ts":9223372036854775808,"t":'),
    (b'"ts":', b'"ts":-9223372036854775809,"t":'),
    (b'"ts":', b'"ts":1.0,"t":'),
    (b'"ts":', b'"ts":"1","t":'),
    (b'"type":"', b'"type":["x"],"y":"'),
    (b'"type":"', b'"type":"renewed","y":"'),
    (b'"type":"', b'"type":"nonsense","y":"'),
    (b'"type":"registered"', b'"type":"renewed"'),
    (b'"prev":', b'"prev":1,"p":'),
    (b'"actor":{', b'"actor":{"extra":1,'),
    (b'"actor":{"host"', b'"actor":{"hast"'),
    (b'"pid":', b'"pid":1.0,"x":'),
    (b'"pid":', b'"pid":true,"x":'),
    (b'"ticks":', b'"ticks":0,"x":'),
    (b'"actor":{', b'"actor":[1],"z":{'),
    (b'{"v"', b'{"zz":1,"v"'),
    (b'{"v"', b'{"network_fs":"nfs4","v"'),
    (b'{"v"', b'{"network_fs":4,"v"'),
    (b'{"v"', b'{"note":"a","v"'),
    (b'{"v"', b'{"v":2,"v"'),
    (b'"pid":', b'"pid":1,"pid":'),
    (b'"name":"', b'"name":"\\u0041'),  # an escape: not the line's own re-encoding, still good
    (b'"name":"', b'"name":"\\"":"'),  # a quote and a colon in a value, not a key
    (b'{', b'[{'),
    (b'{"v"', b'{"v" :2,"v"'),
    (b'{"v"', b'{ "v"'),
    (b'"', b"'"),
]


@pytest.mark.parametrize("what,into", MUTATIONS)
def test_a_page_with_a_changed_line_is_taken_only_when_each_line_is(ledger_dir, what, into):
    lines = _log(ledger_dir)
    changed = 0
    for at in range(len(lines)):
        if what not in lines[at]:
            continue
        page = list(lines)
        page[at] = page[at].replace(what, into, 1)
        page = _rechained(page)
        for start in (0, at):
            prev = GENESIS_HASH if start == 0 else line_hash(page[start - 1])
            one = _one_by_one(page[start:], start, prev)
            got = _page(page[start:], start, prev)
            assert got == one, (at, start, page[at])
        changed += 1
    assert changed


def test_a_page_of_a_v1_log_reads_as_line_by_line(ledger_dir):
    from scopeledger._events import KEYS
    from torture_support import as_v1_event

    lines = _log(ledger_dir)
    evs = [as_v1_event(orjson.loads(x)) for x in lines]
    for e in evs:  # (without what only v2 has: a note, an exit code)
        for k in set(e) - KEYS[1]["line"] - KEYS[1][e["type"]]:
            del e[k]
        for k in set(e.get("holder", ())) - KEYS[1]["holder"]:
            del e["holder"][k]
    v1 = _rechained([orjson.dumps(e) for e in evs])
    one = _one_by_one(v1)
    assert one is not None and _page(v1) == one


def test_the_usual_rule_read_in_one_call_is_the_rule_the_long_way_reads(monkeypatch):
    """_rules.identified_rule (the fold's fast path for [path, perm, bool,
    {"fs"}]) takes only what rules_from_log takes, and builds the same rule;
    the rest (None) goes the long way."""
    from scopeledger import _events
    from scopeledger._events import FoldError, rules_from_log
    from scopeledger._rules import identified_rule, is_normal

    monkeypatch.setattr(_events, "identified_rule", lambda *a: None)  # rules_from_log: the long way only

    paths = ["/", "/a", "/a/b", "/a/./b", "/a/../b", "//a", "/a/", "/.", "/..", "/a/.", "a", "", "/a\x00b",
             "/\u00e9", "/a/..b", "/a/.b"]
    devices = ["254:0", "0:0", "12345678901:1", "1:", ":1", "a:b", "254:0/x", "254:0/"]
    taken = 0
    for path in paths:
        for dev in devices:
            for fs in {dev + path, dev, dev + "/", dev + path + "/", dev + "/z" + path}:
                for perm in ("read", "write", "exclusive-read", "nope"):
                    for rec in (True, False, 1):
                        fast = identified_rule(path, perm, rec, fs)
                        try:
                            (slow,) = rules_from_log([[path, perm, rec, {"fs": fs}]], "rules", 2)
                        except FoldError:
                            slow = None
                        if fast is None:
                            assert slow is None or not is_normal(path)  # (the long way reads it)
                            continue
                        taken += 1
                        assert slow is not None
                        assert (fast.path, fast.permission, fast.recursive, fast.ident, fast.given) == \
                            (slow.path, slow.permission, slow.recursive, slow.ident, slow.given)
    assert taken > 100
