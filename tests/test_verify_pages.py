"""verify checks a page of lines at once where it can (decode_page) and goes
line by line from the first page that does not check out: the report is
word for word the line-by-line one, on damaged logs of every kind."""

import os
import random
import subprocess
import sys

import orjson
import pytest

from helpers import W
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


#: Another process: appends one grant each time it reads a line on stdin,
#: and says so ("ok") once the line is in the log.
_APPENDER = """
import sys
from scopeledger import Ledger, ScopeRule
led = Ledger.open(sys.argv[1])
for i, _ in enumerate(sys.stdin):
    led.register(f"w{i}", [ScopeRule(f"/w/{i}", "write")])
    print("ok", flush=True)
"""


def test_verify_of_a_log_another_process_appends_to_meanwhile_is_no_corruption(ledger_dir):
    """``verify`` on a ledger in use: another process appends a line
    between the two looks verify's tail check took at the log's size. It
    said "corrupt ledger: the log shrank to N bytes, and line K ended at
    byte M before" (a forked child verifying while its parent's threads
    wrote found it, 3 times in 60 forks); the tail is judged at one size,
    and lines appended since are simply not in the report."""
    with Ledger.open(ledger_dir) as led:
        for i in range(5):
            led.register(f"h{i}", [W(f"/h/{i}")])
    writer = subprocess.Popen([sys.executable, "-c", _APPENDER, ledger_dir], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        with Ledger.open(ledger_dir, readonly=True) as reader:
            store = reader._log.store
            real_size = store.size
            appended = []

            def size():
                # Each look at the size during the tail check is followed by
                # a line appended by the other process (at most twice).
                n = real_size()
                if checking and len(appended) < 2:
                    writer.stdin.write("go\n")
                    writer.stdin.flush()
                    assert writer.stdout.readline() == "ok\n"
                    appended.append(n)
                return n

            store.size = size
            real_torn = reader._log.torn_zeros
            checking = False

            def torn_zeros():
                nonlocal checking
                checking = True
                try:
                    return real_torn()
                finally:
                    checking = False

            reader._log.torn_zeros = torn_zeros
            report = reader.verify(workers=1)
            assert appended, "the tail check never looked at the log's size"
            assert report.ok, report.problems
            assert report.events >= 5 and not any("torn" in n for n in report.notes), report.notes
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)
    assert verify(ledger_dir).events == 5 + len(appended)
