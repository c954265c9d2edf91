"""The fold never does IO, reads no clock and asks no process: kept true
statically (imports) and dynamically (poisoned modules)."""

import ast
import builtins
import os
import time

import orjson
import psutil
import pytest

import scopeledger._fold as fold_mod
import scopeledger._rules as rules_mod
from scopeledger import Ledger
from scopeledger._events import line_hash
from scopeledger._fold import State, apply, check_request

from history_gen import random_history

FORBIDDEN = {"os", "io", "time", "psutil", "pathlib", "subprocess", "socket", "random", "fcntl",
             "shutil", "tempfile", "logging"}


@pytest.mark.parametrize("module", [fold_mod, rules_mod])
def test_pure_modules_import_no_io(module):
    tree = ast.parse(open(module.__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            assert node.module in {"_errors", "_process", "_rules"}, node.module
        elif isinstance(node, ast.Name) and node.id == "open":
            raise AssertionError(f"{module.__name__} calls open()")
    assert not imported & FORBIDDEN


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
    for ev, h in events:
        apply(state, ev, h)
        for alloc in list(state.holders.values())[:3]:
            check_request(state, "probe-name", alloc.rules, None)
    monkeypatch.undo()
    assert state.to_json() == expected
