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



def test_a_register_behind_a_waiter_of_its_own_process_does_not_look_until_woken(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import threading
        import scopeledger._wait as wait_mod
        from scopeledger import Ledger, ScopeRule
        sleep = wait_mod.Watch.wait
        b_sleeps = threading.Event()
        bounds = []
        def sleeping(self, timeout, *args, **kw):
            if threading.current_thread().name == "b":
                # The longest this sleep lasts unless woken (before: at most the period).
                longest = getattr(self, "longest", lambda t: min(t, self.period))
                bounds.append(longest(timeout))
                b_sleeps.set()
            return sleep(self, timeout, *args, **kw)
        wait_mod.Watch.wait = sleeping
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
        print("sleeps longer than a period", bounds[0] > {RECHECK_SECONDS})
        led.release("H")
        ta.join({BOUND})
        led.release("a", token=got["a"].token)
        tb.join({BOUND})
        print("granted", type(got["b"]).__name__, got["b"].name)
        led.release("b", token=got["b"].token)
    """)], capture_output=True, text=True, timeout=4 * BOUND, env=clean_env())
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["sleeps longer than a period True", "granted Allocation b"], \
        (res.stdout, res.stderr)
