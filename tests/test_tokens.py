"""Tokens where a name is reused (issue 13 item 5): every operation on an
existing grant (attach, release, delegate from a parent) acts on that grant
only, by its token, and refuses a newer grant of the same name.

The races are made deterministic: the other process releases and registers
the name again between the two steps (a hook around ``attach`` in the
``ledger run`` process; a stopped waiting ``ledger run``), with real
processes throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scopeledger import Ledger, ScopeRule, UnknownHolder
from helpers import CMD, clean_env

W = lambda p: ScopeRule(p, "write")  # noqa: E731

#: Another process: releases NAME (whoever holds it) and registers NAME
#: again bound to itself, prints its token, and stays until killed.
THIEF = textwrap.dedent("""
    import sys, time
    from scopeledger import Ledger, ScopeRule
    led = Ledger.open(sys.argv[1])
    led.release(sys.argv[2])
    alloc = led.register(sys.argv[2], [ScopeRule(sys.argv[3], "write")])
    print(alloc.token, flush=True)
    time.sleep(120)
""")


def start_thief(ledger_dir, name, path):
    p = subprocess.Popen([sys.executable, "-c", THIEF, str(ledger_dir), name, str(path)],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip().isdigit(), line
    return p, int(line)


def stop(p):
    p.kill()
    p.wait()


def test_attach_with_the_token_of_a_grant_released_and_granted_again_is_refused(ledger_dir, tmp_path):
    led = Ledger.open(ledger_dir)
    mine = led.register("job", [W("/t/job")])
    child = subprocess.Popen(["sleep", "60"])
    thief, new_token = start_thief(ledger_dir, "job", "/t/job")
    try:
        with pytest.raises(UnknownHolder, match=rf"live with another grant \(token {new_token}, "
                                                rf"not {mine.token}\)"):
            led.attach("job", child.pid, token=mine.token)
        now = led.holder("job")
        assert (now.token, now.pid) == (new_token, thief.pid)  # the newer grant is untouched
        assert [e.type for e in led.events()] == ["registered", "released", "registered"]
        with pytest.raises(UnknownHolder):  # nor is it released by the old token
            led.release("job", token=mine.token)
        assert led.attach("job", child.pid, token=new_token).pid == child.pid
    finally:
        stop(thief)
        stop(child)


def test_delegate_from_a_parent_released_and_granted_again_is_refused(ledger_dir):
    led = Ledger.open(ledger_dir)
    old = led.register("parent", [W("/t/p")])
    thief, new_token = start_thief(ledger_dir, "parent", "/t/p")
    try:
        with pytest.raises(UnknownHolder, match=r"parent 'parent' is live with another grant"):
            led.delegate("parent", "kid", [W("/t/p/kid")], parent_token=old.token)
        with pytest.raises(UnknownHolder):
            with led.hold("kid", [W("/t/p/kid")], parent="parent", parent_token=old.token):
                pass
        assert [a.name for a in led.holders()] == ["parent"]
        assert led.delegate("parent", "kid", [W("/t/p/kid")], parent_token=new_token).parent == "parent"
    finally:
        stop(thief)


#: Runs the CLI with ``Ledger.attach`` wrapped: before the real attach,
#: another process releases the name and registers it again (the race of
#: issue 13 item 5, here every time).
HOOKED_RUN = textwrap.dedent("""
    import subprocess, sys
    from scopeledger import _ledger
    thief_code, ledger_dir, write = sys.argv[1], sys.argv[2], sys.argv[3]
    real = _ledger.Ledger.attach
    def attach(self, name, *args, **kwargs):
        p = subprocess.Popen([sys.executable, "-c", thief_code, ledger_dir, name, write],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        print(f"THIEF {p.pid} {p.stdout.readline().strip()}", file=sys.stderr, flush=True)
        return real(self, name, *args, **kwargs)
    _ledger.Ledger.attach = attach
    from scopeledger.cli import main
    sys.argv = ["ledger"] + sys.argv[4:]
    main()
""")


def test_run_whose_name_is_released_and_granted_again_before_attach_does_not_run(tmp_path: Path):
    led_dir, tree, ran = tmp_path / "led", tmp_path / "tree", tmp_path / "ran"
    tree.mkdir()
    Ledger.open(led_dir).close()
    p = subprocess.run(
        [sys.executable, "-c", HOOKED_RUN, THIEF, str(led_dir), str(tree),
         "--ledger", str(led_dir), "run", "--name", "job", "--write", str(tree), "--", "touch", str(ran)],
        capture_output=True, text=True, env=clean_env(), timeout=60)
    thief_line = [ln for ln in p.stderr.splitlines() if ln.startswith("THIEF ")]
    assert thief_line, p.stderr
    thief_pid, thief_token = map(int, thief_line[0].split()[1:])
    try:
        assert p.returncode == 6, (p.returncode, p.stderr)
        assert "'job' is live with another grant" in p.stderr
        assert not ran.exists()  # the command never ran beside the new holder
        with Ledger.open(led_dir, readonly=True) as led:
            now = led.holder("job")
            assert (now.token, now.pid) == (thief_token, thief_pid)
            assert "attached" not in [e.type for e in led.events()]
    finally:
        os.kill(thief_pid, signal.SIGKILL)


def _wait_for(cond, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_waiting_nested_run_whose_parent_is_granted_again_exits_6_not_delegating(tmp_path: Path):
    led_dir, tree, ran = tmp_path / "led", tmp_path / "tree", tmp_path / "ran"
    (tree / "sub").mkdir(parents=True)
    led = Ledger.open(led_dir)
    parent = led.register("outer", [W(str(tree))])  # bound to this process
    blocker = subprocess.Popen(["sleep", "120"])
    led.delegate("outer", "sibling", [W(str(tree / "sub"))], pid=blocker.pid)
    env = clean_env(SCOPELEDGER_DIR=str(led_dir), SCOPELEDGER_HOLDER="outer",
                    SCOPELEDGER_TOKEN=str(parent.token))
    nested = subprocess.Popen([*CMD, "run", "--name", "inner", "--write", str(tree / "sub"), "--",
                               "touch", str(ran)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = nested.stderr.readline()  # printed after its refusal is recorded
        assert "Blocking waiting for the scope" in first, first
        # Deterministic: the waiting run is stopped (between its lock-free
        # checks: it holds no lock while it waits) while the parent is
        # released and granted again, and the sibling in its way leaves.
        nested.send_signal(signal.SIGSTOP)
        led.release("outer", token=parent.token)
        led.release("sibling")
        again = led.register("outer", [W(str(tree))])
        assert again.token != parent.token
        nested.send_signal(signal.SIGCONT)
        err = nested.stderr.read()
        assert nested.wait(timeout=60) == 6, err
        assert "'outer'" in err and "another grant" in err, err
        assert not ran.exists()
        assert sorted(a.name for a in led.holders()) == ["outer"]
        assert led.holder("outer").token == again.token
    finally:
        if nested.poll() is None:
            nested.send_signal(signal.SIGCONT)
            nested.kill()
            nested.wait()
        stop(blocker)
        led.close()
