"""A register standing behind a waiter of its own process does not look at
the queue every RECHECK_SECONDS (each look reads the whole queue): that
waiter cannot die unseen, and its ticket's leaving wakes this one (a
directory's hub). Measured before: a thousand waiting coroutines of one
process each looked every second, and the hand-off through 990 of them
took 3 minutes (past a wait of 120 s most timed out)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import clean_env
from test_wait import BOUND

from scopeledger._logstore import RECHECK_SECONDS

#: The stretch over which the waiter behind is watched not looking: several
#: of the periodic looks it took before.
QUIET = 3.5 * RECHECK_SECONDS


def test_a_register_behind_a_waiter_of_its_own_process_does_not_look_until_woken(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import threading, time
        import scopeledger._wait as wait_mod
        from scopeledger import Ledger, ScopeRule
        looks = {{}}
        one_round, sleep = wait_mod.one_round, wait_mod.Watch.wait
        def counting(ledger, req, *args, **kw):
            looks[req.name] = looks.get(req.name, 0) + 1
            return one_round(ledger, req, *args, **kw)
        b_sleeps = threading.Event()
        def sleeping(self, *args, **kw):
            if threading.current_thread().name == "b":
                b_sleeps.set()
            return sleep(self, *args, **kw)
        wait_mod.one_round, wait_mod.Watch.wait = counting, sleeping
        led = Ledger.open({str(tmp_path / 'led')!r}, create=True)
        rule = ScopeRule({str(tmp_path / 'w')!r}, "write")
        led.register("H", [rule])
        told = {{"a": threading.Event(), "b": threading.Event()}}
        got = {{}}
        def waiter(name):
            try:
                got[name] = led.register(name, [rule], wait={BOUND}, on_wait=lambda *_: told[name].set())
            except BaseException as exc:
                got[name] = exc
                told[name].set()
        ta = threading.Thread(target=waiter, args=("a",), name="a")
        ta.start()
        assert told["a"].wait({BOUND})
        tb = threading.Thread(target=waiter, args=("b",), name="b")
        tb.start()
        assert b_sleeps.wait({BOUND})  # (b looked, stands behind a, and sleeps)
        before = looks["b"]
        time.sleep({QUIET})  # (not a synchronisation: the stretch b must not look in)
        print("looks", looks["b"] - before)
        led.release("H")
        ta.join({BOUND})
        led.release("a", token=got["a"].token)
        tb.join({BOUND})
        print("granted", type(got["b"]).__name__, got["b"].name)
        led.release("b", token=got["b"].token)
    """)], capture_output=True, text=True, timeout=4 * BOUND, env=clean_env())
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["looks 0", "granted Allocation b"], (res.stdout, res.stderr)
