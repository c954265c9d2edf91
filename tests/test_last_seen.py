"""When a reclaimed holder was last seen alive (the ``reclaimed`` event's
``last_seen``, ``Reclaimed.last_seen_ns``): the latest of its grant, its last
renewal and its last ``attached`` line, as the log shows them, whichever
state a reader starts from (the fold, or a snapshot). A real child process is
attached, then killed and reclaimed. (Fresh tester's F13: it was the grant's
time even for a holder attached, alive, later.)"""

import os
import subprocess
import sys

import orjson

from scopeledger import Ledger, ScopeRule, verify


def events(ledger_dir):
    with open(os.path.join(ledger_dir, "events.jsonl"), "rb") as f:
        return [orjson.loads(line) for line in f]


def test_a_holder_attached_after_its_grant_was_last_seen_alive_at_the_attach(ledger_dir, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with Ledger.open(ledger_dir) as led:
            a = led.register("job", [ScopeRule(str(tmp_path / "job"), "write")])
            led.register("other", [ScopeRule(str(tmp_path / "other"), "write")])  # (a line between)
            bound = led.attach("job", pid=child.pid, token=a.token)
            attached = [e for e in events(ledger_dir) if e["type"] == "attached"][-1]
            assert attached["ts"] > a.granted_ns
            assert bound.attached_ns == attached["ts"] and a.attached_ns is None
            led.snapshot()
        with Ledger.open(ledger_dir) as again:  # (from the snapshot: the attach time kept)
            assert again.stats.events_folded == 0 and again.holder("job").attached_ns == attached["ts"]
            child.kill()
            child.wait()
            assert again.reclaim(dry_run=True).reclaimed[0].last_seen_ns == attached["ts"]
            [r] = again.reclaim().reclaimed
            assert (r.name, r.reason, r.last_seen_ns) == ("job", "process_gone", attached["ts"])
        ev = events(ledger_dir)[-1]
        assert ev["type"] == "reclaimed" and ev["last_seen"] == attached["ts"] > a.granted_ns
        assert verify(ledger_dir).ok
    finally:
        child.kill()
        child.wait()


def test_a_holder_never_attached_was_last_seen_alive_at_its_grant(ledger_dir, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    with Ledger.open(ledger_dir) as led:
        a = led.register("gone", [ScopeRule(str(tmp_path / "g"), "write")], pid=child.pid)
        assert a.attached_ns is None
        child.kill()
        child.wait()
        [r] = led.reclaim().reclaimed
        assert r.last_seen_ns == a.granted_ns
