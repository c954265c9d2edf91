"""A process with more than 1024 files open (a fresh tester's finding, HIGH:
``select(2)`` refuses a descriptor past 1024 with ``ValueError``, and every
pidfd such a process opened was past it): a waiter woken by a holder's death,
``spawn``'s loss of its grant, and ``ledger run`` started with many inherited
files. Each story runs in a process of its own that first opens 1100 files,
so that every descriptor opened after is past 1024."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import CMD, clean_env
from test_wait import BOUND

MANY = 1100

#: A story run after MANY files were opened (inheritable, for ledger run).
PRELUDE = textwrap.dedent(f"""
    import os, resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < {MANY} + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, {MANY} + 400), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range({MANY})]
    for fd in held:
        os.set_inheritable(fd, True)
    assert held[-1] > 1024
""")


def _story(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=4 * BOUND, env=clean_env())


def test_a_waiter_woken_by_a_holders_death_past_1024_files(tmp_path: Path) -> None:
    res = _story(f"""
        import subprocess, threading
        from scopeledger import Ledger, ScopeRule
        led = Ledger.open({str(tmp_path / 'led')!r}, create=True)
        rule = ScopeRule({str(tmp_path / 'w')!r}, "write")
        child = subprocess.Popen(["sleep", "600"])
        led.register("h", [rule], pid=child.pid)
        waiting = threading.Event()
        got = []
        def waiter():
            try:
                got.append(led.register("w", [rule], wait={BOUND}, on_wait=lambda *a: waiting.set()))
            except BaseException as exc:
                got.append(exc)
                waiting.set()
        t = threading.Thread(target=waiter)
        t.start()
        assert waiting.wait({BOUND})
        child.kill()
        child.wait()
        t.join({BOUND})
        print(type(got[0]).__name__, getattr(got[0], "name", got[0]))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["Allocation", "w"], (res.stdout, res.stderr)


def test_spawn_stops_its_child_on_a_forced_release_past_1024_files(tmp_path: Path) -> None:
    led = tmp_path / "led"
    res = _story(f"""
        import signal, subprocess, sys
        from scopeledger import Ledger, ScopeRule
        led = Ledger.open({str(led)!r}, create=True)
        sp = led.spawn("job", ["sleep", "600"], [ScopeRule({str(tmp_path / 'w')!r}, "write")])
        out = subprocess.run([*{CMD!r}, "--ledger", {str(led)!r}, "release", "job", "--force", "--reason", "test"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        print(sp.wait(timeout={BOUND}), sp.stopped_for_loss)
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(-15), "True"], (res.stdout, res.stderr)


def test_ledger_run_with_many_inherited_files_exits_with_its_commands_status(tmp_path: Path) -> None:
    res = _story(f"""
        import subprocess, sys
        out = subprocess.run([*{CMD!r}, "--ledger", {str(tmp_path / 'led')!r}, "run", "--name", "job",
                              "--write", {str(tmp_path / 'w')!r}, "--", "sh", "-c", "exit 3"],
                             close_fds=False, capture_output=True, text=True)
        print(out.returncode)
        sys.stderr.write(out.stderr)
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["3"], (res.stdout, res.stderr)


#: Waiting coroutines of one process under a soft RLIMIT_NOFILE of FEW_FILES
#: (a fresh tester's finding, MED: each held 3 descriptors, its ticket, its
#: hub watch's eventfd and a pidfd on its own process, behind a holder or a
#: waiter of that same process, or on the process of the holder in its way;
#: 1000 waiters under 1024 failed with "Too many open files"). 1 each (its
#: ticket): they fit; 2 or 3 each: they cannot.
FEW_FILES = 320
WAITERS = 200


#: The holder in the waiters' way, as the script below makes it, its waiters' rules, and how it lets go.
HOLDERS = {
    # Behind a holder of their own process, and each behind the waiter before it (the same scope).
    "own process": ('await al.register("H", [ScopeRule(w, "write")])', 'ScopeRule(w, "write")',
                    'await al.release("H")'),
    # Each for a part of its own of the scope a child process holds: every one watches that child's
    # pid, by the one pidfd the process's hub polls; killed, its holder is reclaimed.
    "child process": ('child = subprocess.Popen(["sleep", "600"]); '
                      'await al.register("H", [ScopeRule(w, "write")], pid=child.pid)',
                      'ScopeRule(f"{w}/{i}", "write")', "child.kill(); child.wait()"),
}


@pytest.mark.parametrize("holder", list(HOLDERS))
def test_many_waiting_coroutines_fit_a_low_file_limit(tmp_path: Path, holder: str) -> None:
    hold, rule, let_go = HOLDERS[holder]
    led = tmp_path / "led"
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import asyncio, os, resource, subprocess
        from scopeledger import AsyncLedger, ScopeRule
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, ({FEW_FILES}, hard))
        w = {str(tmp_path / 'w')!r}
        granted, errors = [], []
        async def main():
            async with await AsyncLedger.open({str(led)!r}, create=True) as al:
                {hold}
                all_wait = asyncio.Event()
                waiting = []
                def told(*_):
                    waiting.append(1)
                    if len(waiting) == {WAITERS}:
                        all_wait.set()
                async def one(i):
                    try:
                        a = await al.register(f"c{{i}}", [{rule}], wait={BOUND}, on_wait=told)
                    except BaseException as exc:
                        errors.append(repr(exc))
                        all_wait.set()
                        return
                    granted.append(i)
                    await al.release(a.name, a.token)
                tasks = [asyncio.create_task(one(i)) for i in range({WAITERS})]
                await asyncio.wait_for(all_wait.wait(), {BOUND})
                {let_go}
                await asyncio.wait_for(asyncio.gather(*tasks), {4 * BOUND})
                print("verify", (await al.verify()).ok, "left", os.listdir({str(led / 'waiters')!r}))
        asyncio.run(main())
        print("granted", len(granted), "errors", len(errors), errors[:1])
    """)], capture_output=True, text=True, timeout=8 * BOUND, env=clean_env())
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[-1] == f"granted {WAITERS} errors 0 []", res.stdout
    assert lines[-2] == "verify True left []", res.stdout
