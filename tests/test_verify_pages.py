"""verify checks a page of lines at once where it can (decode_page) and goes
line by line from the first page that does not check out: the report is
word for word the line-by-line one, on damaged logs of every kind."""

import os
import random

import orjson
import pytest

from history_gen import random_history
from scopeledger import Ledger, verify
from scopeledger import _history
from scopeledger._events import line_hash


def _report(path):
    r = verify(path, workers=1)
    return (r.ok, r.events, r.snapshots, r.problems, r.notes, r.clock_jumps, r.clock_jumps_total)


def _line_by_line(path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(_history, "decode_page", lambda lines, seq, prev: None)
        return _report(path)


def _rechain(lines, start):
    for j in range(max(start, 1), len(lines)):
        try:
            e = orjson.loads(lines[j])
            e["prev"] = line_hash(lines[j - 1])
            lines[j] = orjson.dumps(e)
        except (orjson.JSONDecodeError, TypeError):
            pass


def _damage(lines, rng):
    """One change to ``lines`` (bytes): a byte, a line moved, left out or
    doubled, a field's value changed or a key added (the chain rewritten
    after it or not)."""
    i = rng.randrange(len(lines))
    what = rng.randrange(6)
    if what == 0:
        b = bytearray(lines[i])
        b[rng.randrange(len(b))] = rng.choice(b'{}[]":,0123456789abcxyz\\ ')
        lines[i] = bytes(b)
    elif what == 1:
        del lines[i]
    elif what == 2:
        lines.insert(i, lines[i])
    elif what == 3 and i + 1 < len(lines):
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    else:
        try:
            ev = orjson.loads(lines[i])
            key = rng.choice(sorted(ev))
        except (orjson.JSONDecodeError, TypeError, IndexError):
            return  # (a line damaged before: not an object)
        ev[key] = rng.choice([None, 1, 1.5, True, "x", [], {}, ev.get("seq"), ev.get(key)])
        if rng.random() < 0.3:
            ev[rng.choice(["seq", "ts", "zz"])] = rng.choice([i + 2, 0, "1"])
        inner = [v for v in ev.values() if type(v) is dict]
        if inner and rng.random() < 0.3:  # a key unknown inside (holder, actor, process, request)
            rng.choice(inner)["zz"] = 1
        lines[i] = orjson.dumps(ev)
    if what >= 4 or rng.random() < 0.5:
        _rechain(lines, i)


@pytest.mark.parametrize("seed", range(3))
def test_damaged_logs_are_reported_as_line_by_line(ledger_dir, monkeypatch, seed):
    with Ledger.open(ledger_dir, snapshot_every=10) as led:
        random_history(led, 200, seed)
    log = os.path.join(ledger_dir, "events.jsonl")
    good = open(log, "rb").read().splitlines()
    assert len(good) > 150  # (more than two pages of decode_page's)
    assert _report(ledger_dir) == _line_by_line(ledger_dir, monkeypatch)
    rng = random.Random(seed)
    differ = 0
    for _ in range(60):
        lines = list(good)
        for _ in range(rng.choice([1, 1, 2])):
            _damage(lines, rng)
        with open(log, "wb") as f:
            f.write(b"".join(x + b"\n" for x in lines))
        fast = _report(ledger_dir)
        assert fast == _line_by_line(ledger_dir, monkeypatch), lines
        differ += not fast[0]
    assert differ > 30  # (the damage is found, mostly)
