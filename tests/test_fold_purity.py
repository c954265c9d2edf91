"""The pure layer never does IO, reads no clock and asks no process: kept
true statically (imports, calls) and dynamically (poisoned modules).

The pure layer: the rule algebra, process identity as plain data, the
events and their format, the fold, how a request is decided, the time
model, the exceptions. Nothing in it imports a module outside it but the
standard library's pure ones and orjson/attrs.
"""

import ast
import builtins
import os
import time

import orjson
import psutil
import pytest

import scopeledger
from scopeledger import Ledger
from scopeledger._decide import decide
from scopeledger._events import decode, line_hash
from scopeledger._fold import State, apply, check_request

from history_gen import random_history

PURE = ["_errors", "_arguments", "_rules", "_identity", "_events", "_fold", "_decide", "_time"]

FORBIDDEN = {"os", "io", "time", "psutil", "pathlib", "subprocess", "socket", "random", "fcntl",
             "shutil", "tempfile", "logging", "threading", "multiprocessing", "select", "signal",
             "click", "rich", "psycopg"}

#: Calls that read a clock or the environment, whatever module they come through.
FORBIDDEN_CALLS = {"open", "now", "utcnow", "today", "time_ns", "getpid", "getenv"}


def _source(name):
    return ast.parse(open(os.path.join(os.path.dirname(scopeledger.__file__), name + ".py")).read())


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io(name):
    imported = set()
    for node in ast.walk(_source(name)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            assert node.module in PURE, f"{name} imports {node.module}, outside the pure layer"
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_CALLS:
            raise AssertionError(f"{name} uses {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_CALLS:
            raise AssertionError(f"{name} calls .{node.attr}")
    assert not imported & FORBIDDEN, f"{name} imports {sorted(imported & FORBIDDEN)}"


def test_fold_runs_with_io_clock_and_psutil_poisoned(tmp_path, monkeypatch):
    path = str(tmp_path / "ledger")
    with Ledger.open(path) as led:
        random_history(led, 200, seed=11)
        expected = led.state().to_json()
    lines = open(os.path.join(path, "events.jsonl"), "rb").read().splitlines()
    events = [(orjson.loads(x), line_hash(x)) for x in lines]

    def poisoned(*a, **k):
        raise AssertionError("the fold touched the outside world")
    for mod, names in [(time, ["time", "time_ns", "monotonic", "sleep"]),
                       (os, ["open", "read", "write", "stat", "lstat", "getpid", "listdir", "fstat"]),
                       (builtins, ["open"]),
                       (psutil, ["Process", "pid_exists", "boot_time"])]:
        for n in names:
            monkeypatch.setattr(mod, n, poisoned)
    state = State()
    for line, (ev, h) in zip(lines, events, strict=True):
        assert decode(line, "the log", ev["seq"]) == ev
        apply(state, ev, h)
        for alloc in list(state.holders.values())[:3]:
            check_request(state, "probe-name", alloc.rules, None)
            decide(state, "probe-name", alloc.rules, None, lambda n: scopeledger.Liveness.ALIVE,
                   lambda n, reason: None)
    monkeypatch.undo()
    assert state.to_json() == expected
