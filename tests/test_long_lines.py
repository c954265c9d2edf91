"""Long lines: reading is linear in the bytes and bounded in memory; a line
over ``MAX_LINE_BYTES`` is corruption; a torn tail of any length is set
aside in pieces (issue 19, "Quadratic line splitting")."""

import hashlib
import os
import tracemalloc

import pytest

from scopeledger import CorruptLedger, InvalidScope, Ledger, ScopeRule
from scopeledger import _events, _ledger

TAIL = 48 << 20  # a torn tail of 48 MiB (no newline)
LIMIT = 1 << 20  # the line limit for these tests


def _peak(fn):
    """Run ``fn``; the peak of memory traced meanwhile, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _ledger_with_tail(path, tail=TAIL):
    with Ledger.open(path) as led:
        led.register("a", [ScopeRule("/r/a", "write")])
        led.release("a")
    log = os.path.join(path, "events.jsonl")
    size = os.path.getsize(log)
    block = b"x" * (1 << 20)
    with open(log, "ab") as f:
        for _ in range(tail // len(block)):
            f.write(block)
    return log, size


def test_a_long_torn_tail_costs_a_reader_and_the_writer_bounded_memory(tmp_path, monkeypatch):
    # On 813fdac the reader kept re-joining the pending bytes with every
    # 1 MiB chunk (quadratic time, twice the tail in memory) and the writer
    # read the whole tail into memory to set it aside.
    monkeypatch.setattr(_events, "MAX_LINE_BYTES", LIMIT, raising=False)
    path = str(tmp_path / "L")
    log, size = _ledger_with_tail(path)

    def read():
        with Ledger.open(path, readonly=True) as led:
            assert led.seq == 2

    assert _peak(read) < 8 << 20

    def write():
        with Ledger.open(path) as led:
            led.register("b", [ScopeRule("/r/b", "write")])
            assert len(led.stats.torn) == 1

    assert _peak(write) < 8 << 20
    torn_dir = os.path.join(path, "torn")
    (name,) = os.listdir(torn_dir)
    h = hashlib.sha256()
    with open(os.path.join(torn_dir, name), "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.digest() == hashlib.sha256(b"x" * TAIL).digest()
    with Ledger.open(path, readonly=True) as led:
        assert [a.name for a in led.holders()] == ["b"]
        assert led.verify().ok


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_split_lines_and_iter_lines_agree_and_keep_offsets(chunk):
    data = b"".join(b"%d" % i * (i % 50) + b"\n" for i in range(300)) + b"torn"
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    got = list(_events.split_lines(chunks, 100))
    assert [line for line, _, _ in got] == data.split(b"\n")[:-1]
    for line, start, end in got:
        assert data[start - 100:end - 100] == line + b"\n"
    assert list(_events.iter_lines(chunks)) == [line for line, _, _ in got]


def test_a_line_over_the_limit_is_corruption_named_by_its_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(_events, "MAX_LINE_BYTES", LIMIT, raising=False)
    path = str(tmp_path / "L")
    log, size = _ledger_with_tail(path, tail=3 * LIMIT)
    with open(log, "ab") as f:
        f.write(b"\n")
    with pytest.raises(CorruptLedger, match=f"the line at byte {size} is {3 * LIMIT} bytes long, "
                                            f"over the limit of {LIMIT} bytes"):
        Ledger.open(path, readonly=True)
    from scopeledger import verify

    rep = verify(path)
    assert not rep.ok and rep.problems[0].line == 3 and "over the limit" in rep.problems[0].message


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_the_limit_holds_for_every_split(limit):
    data = b"a" * limit + b"\n" + b"b" * (limit + 1) + b"\n"
    for chunk in (1, 3, limit, len(data)):
        chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
        with pytest.raises(CorruptLedger, match=f"line at byte {limit + 1} is {limit + 1} bytes"):
            list(_events.split_lines(chunks, 0, limit=limit))
        with pytest.raises(CorruptLedger, match=f"line at byte {limit + 1} is {limit + 1} bytes"):
            list(_events.iter_lines(chunks, limit=limit))
        # a tail without a newline over the limit is no line yet: not an error
        tail = [b"a" * limit, b"\n", b"c" * (limit + 5)]
        assert list(_events.split_lines(tail, 0, limit=limit)) == [(b"a" * limit, 0, limit + 1)]
        assert list(_events.iter_lines(tail, limit=limit)) == [b"a" * limit]


def test_a_writer_never_writes_a_line_over_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(_ledger, "MAX_LINE_BYTES", 4096, raising=False)
    with Ledger.open(str(tmp_path / "L")) as led:
        led.register("a", [ScopeRule("/r/a", "write")])
        before = open(os.path.join(led.path, "events.jsonl"), "rb").read()
        rules = [ScopeRule(f"/r/b/{'p' * 200}{i}", "write") for i in range(40)]
        with pytest.raises(InvalidScope, match="the request is too large: its registered event "
                                               r"would be a line of \d+ bytes, over the log's limit of 4096"):
            led.register("b", rules)
        assert open(os.path.join(led.path, "events.jsonl"), "rb").read() == before
        assert [a.name for a in led.holders()] == ["a"]


@pytest.mark.parametrize("how", ["library", "cli"])
def test_a_line_over_the_limit_in_a_large_log_is_reported_by_verify_and_set_aside_by_repair(tmp_path, monkeypatch,
                                                                                           how):
    # A log large enough to be verified by forked workers (PARALLEL_MIN_BYTES):
    # finding the log's head met the long line, and verify (so repair, which
    # judges the log by verify) raised CorruptLedger instead of naming it:
    # 'ledger verify' and 'ledger repair' exited 4 and nothing could set it aside.
    import subprocess
    import sys

    from scopeledger import _history, verify

    path = str(tmp_path / "L")
    log, size = _ledger_with_tail(path, tail=0)
    if how == "library":
        with open(log, "ab") as f:
            f.write(b"y" * (LIMIT + 1) + b"\n")
        monkeypatch.setattr(_events, "MAX_LINE_BYTES", LIMIT, raising=False)
        monkeypatch.setattr(_history, "PARALLEL_MIN_BYTES", 4096)
        rep = verify(path, workers=2)
        assert not rep.ok and rep.problems[0].line == 3 and "over the limit" in rep.problems[0].message, rep
        with Ledger.open(path, fold=False) as led:
            report = led.repair()
        assert report.damaged and report.line == 3 and report.bytes_cut == LIMIT + 2, report
        assert verify(path, workers=2).ok
    else:  # the real limit and the real threshold, as a user meets them
        with open(log, "ab") as f:
            f.write(b"z" * (_events.MAX_LINE_BYTES + 1) + b"\n")
        ledger = os.path.join(os.path.dirname(sys.executable), "ledger")
        p = subprocess.run([ledger, "--ledger", path, "verify"], capture_output=True, text=True, timeout=300)
        said = p.stdout + p.stderr
        assert p.returncode == 1 and "line 3: the line at byte" in said and "over the limit" in said, (p.returncode,
                                                                                                     said)
        p = subprocess.run([ledger, "--ledger", path, "repair"], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and "set aside in" in p.stdout, (p.returncode, p.stdout, p.stderr)
        p = subprocess.run([ledger, "--ledger", path, "verify"], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, (p.stdout, p.stderr)
    # The good lines as they were, then the repair's own line keeping the cut seq 3 void.
    with open(log, "rb") as f:
        data = f.read()
    assert len(data[:size].splitlines()) == 2 and b'"seq":3' in data[size:] and b'"type":"repaired"' in data[size:]
    assert data[size:].count(b"\n") == 1
