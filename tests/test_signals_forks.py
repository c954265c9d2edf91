"""Signals, forks and threads never strand the lock (issue 13 items 9-11).

* An exception at any point of a change (a signal handler raising
  KeyboardInterrupt) leaves the lock free, and the log agrees with what the
  caller saw: a grant whose call raised is not live.
* ``os.fork()`` while another thread is inside a Ledger call: the child
  never hangs.
* A writer stopped while it holds the lock (SIGSTOP) is named by the
  waiters, in a warning that reaches a user without any logging set up.
"""

import linecache
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

import scopeledger
from scopeledger import LockTimeout, Ledger, UnknownHolder
from helpers import W

PACKAGE = os.path.dirname(os.path.abspath(scopeledger.__file__))


def _in_package(frame):
    return frame is not None and frame.f_code.co_filename.startswith(PACKAGE)


class _LineFault:
    """A ``sys.settrace`` tracer raising KeyboardInterrupt at the k-th line
    executed in scopeledger's own code (once: a raising tracer is unset);
    ``modules``: only in these of its files (base names), when given."""

    def __init__(self, k, modules=None):
        self.k = k
        self.n = 0
        self.where = None
        self.modules = modules

    def __call__(self, frame, event, arg):
        if not _in_package(frame):
            return None
        if self.modules is not None and os.path.basename(frame.f_code.co_filename) not in self.modules:
            return None
        return self._line

    def _line(self, frame, event, arg):
        # Not at a 'try:' line: CPython 3.11 reports a line event there for a
        # NOP outside the try's handlers, so an exception raised from the
        # tracer there skips the enclosing finally blocks. A signal handler never
        # runs there: only where the interpreter checks for pending signals
        # (calls, returns, loop back-edges).
        if event == "line" and not linecache.getline(frame.f_code.co_filename,
                                                     frame.f_lineno).lstrip().startswith("try:"):
            self.n += 1
            if self.n == self.k:
                self.where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
                raise KeyboardInterrupt(f"injected at {self.where}")
        return self._line


def _traced(tracer, fn):
    sys.settrace(tracer)
    try:
        return fn(), None
    except KeyboardInterrupt as exc:
        return None, exc
    finally:
        sys.settrace(None)
        _free_first_use()


def _free_first_use():
    """Let go of ``_imports.first_use`` if the injection left this thread
    holding it. A tracer's exception can come at the ``line`` event CPython
    reports for a ``with`` statement's line as its block ends, before the
    ``__exit__`` call: ``with first_use:`` then never releases (no signal
    handler runs there: the interpreter looks for pending signals at calls,
    returns and back-edges, and ``RLock.__exit__`` is a C call). Left held by
    the test's thread, which runs every later test of its worker, it hung
    the next test that made a first-use import in another thread, and every
    later fork of the worker (two CI runs: a forked child's test and waiters
    timed out after 60 s)."""
    from scopeledger._imports import first_use

    while first_use._is_owned():
        first_use.release()


def _lock_is_free(led, other, where=None):
    """Nothing left held: not by this thread, another thread, nor (seen
    from another open file description) this process."""
    try:
        other._store.acquire(timeout=0)  # LockTimeout if the flock was left taken
    except LockTimeout:
        pytest.fail(f"the lock was left taken after a fault at {where}")
    other._store.release()
    errors = []

    def from_a_thread():
        try:
            led._store.acquire(timeout=5)
            led._store.release()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=from_a_thread)
    t.start()
    t.join(30)
    assert not t.is_alive() and errors == [], where


def _live(path):
    with Ledger.open(path, readonly=True) as fresh:
        return {a.name: a.token for a in fresh.holders()}


# The interrupt injected at every line also lands in finalizers (Store.__del__ closing its
# descriptors), where Python can only print it: those prints are the injection's, not a fault.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("op", ["register", "hold", "release"])
def test_an_exception_at_any_line_of_a_change_leaves_the_lock_free_and_the_log_truthful(tmp_path, op):
    path = str(tmp_path / "L")
    led = Ledger.open(path, snapshot_every=7, timeout=10)
    other = Ledger.open(path, timeout=10)
    other.register("base", [W("/r/base")])
    guards = []

    def change(name):
        if op == "register":
            return led.register(name, [W(f"/r/{name}")])
        if op == "hold":
            guard = led.hold(name, [W(f"/r/{name}")])
            guards.append(guard)
            return guard.allocation
        other.register(name, [W(f"/r/{name}")])
        return led.release(name)

    counter = _LineFault(0)
    _traced(counter, lambda: change("count"))
    other.release("count") if op != "release" else None
    guards.clear()
    lines = counter.n
    assert lines > 100
    interrupted = 0
    for k in range(1, lines + 1):
        name = f"h{k}"
        fault = _LineFault(k)
        result, exc = _traced(fault, lambda name=name: change(name))  # (bound now: B023)
        interrupted += exc is not None
        _lock_is_free(led, other, fault.where)
        live = _live(path)
        if op == "release":
            assert (name in live) == (name in {a.name for a in led.holders()}), fault.where
            if exc is None:
                assert name not in live, fault.where
        elif exc is not None:  # the caller never saw a grant: none is live
            assert name not in live, (fault.where, exc)
        else:
            assert live.get(name) == result.token, fault.where
        assert {a.name: a.token for a in led.holders()} == live, fault.where
        if name in live:
            other.release(name)
        guards.clear()
    assert interrupted > lines // 2
    assert led.verify().ok
    led.close()
    other.close()


def _live_tickets(path):
    """The tickets in the ledger directory's queue whose lock is held (by
    a waiter, in this process or another): none may be left behind."""
    import fcntl

    d = os.path.join(path, "waiters")
    out = []
    for n in (sorted(os.listdir(d)) if os.path.isdir(d) else []):
        try:
            fd = os.open(os.path.join(d, n), os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            out.append(n)
        finally:
            os.close(fd)
    return out


# The interrupt injected at every line also lands in finalizers (Store.__del__ closing its
# descriptors), where Python can only print it: those prints are the injection's, not a fault.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("queued", [False, True], ids=["granted-at-once", "queued"])
def test_an_exception_at_any_line_of_a_waiting_register_leaves_no_lock_ticket_or_unseen_grant(tmp_path, queued):
    """``register(..., wait=)``: granted at once through the waiting path, or
    (``queued``) refused by a holder in the way, in the queue, told
    (``on_wait``, which lets the holder die: the probe says so from then
    on), then granted with the holder reclaimed. An exception at any line
    of the library's code on the way leaves the lock free, no live ticket in
    the queue, and no grant live that the call did not return."""
    path = str(tmp_path / "L")
    blocker = subprocess.Popen(["sleep", "600"])
    dead = {"now": False}
    led = Ledger.open(path, snapshot_every=7, timeout=10,
                      probe=lambda ident: not (dead["now"] and ident.pid == blocker.pid))
    other = Ledger.open(path, timeout=10)

    def die(reason, refusal):
        dead["now"] = True

    # One scope for all: a ticket an interrupted run left dead in the queue
    # (linked, its lock gone with its descriptor) is met, and removed, by the
    # next run; tickets for other scopes are not looked at, and piled up.
    def setup(name):
        dead["now"] = False
        if queued:
            other.register(f"in-the-way-{name}", [W("/r/x")], pid=blocker.pid)

    def change(name):
        return led.register(name, [W("/r/x")], wait=30, on_wait=die)

    # Queued: every line of the waiting code, its queue and the ledger (the
    # lines below them, the paths' and the processes', are covered by the test
    # above and by the case granted at once; with them, 3,000 lines took minutes).
    modules = {"_wait.py", "_filetickets.py", "_ledger.py"} if queued else None

    try:
        setup("warm")  # (what the first wait does once: the queue's objects made, identities read)
        other.release(change("warm").name)
        setup("count")
        counter = _LineFault(0, modules)
        _traced(counter, lambda: change("count"))
        assert counter.n > 100
        other.release("count")
        # Line k of each run in turn, until a run ends before its line k: a
        # run may take more lines than the first (dead tickets that interrupted
        # runs left in the queue are listed on the way), so all are covered.
        interrupted = 0
        k = 0
        while True:
            k += 1
            assert k < 10 * counter.n, "the runs never ended before the line to interrupt"
            name = f"h{k}"
            setup(name)
            fault = _LineFault(k, modules)
            result, exc = _traced(fault, lambda name=name: change(name))  # (bound now: B023)
            interrupted += exc is not None
            _lock_is_free(led, other, fault.where)
            assert _live_tickets(path) == [], fault.where
            live = _live(path)
            if exc is not None:  # the caller never saw a grant: none is live
                assert name not in live, (fault.where, exc)
            else:
                assert live.get(name) == result.token, fault.where
            assert {a.name: a.token for a in led.holders()} == live, fault.where
            for n in live:
                other.release(n)
            if exc is None and fault.n < k:
                break
        assert interrupted > 100
        assert led.verify().ok
    finally:
        led.close()
        other.close()
        blocker.kill()
        blocker.wait()


def test_a_signal_handler_raising_at_many_offsets_never_strands_the_lock(tmp_path):
    path = str(tmp_path / "L")
    led = Ledger.open(path, snapshot_every=11, timeout=10)
    other = Ledger.open(path, timeout=10)
    t0 = time.perf_counter()
    for i in range(20):
        led.register(f"w{i}", [W(f"/r/w{i}")])
        led.release(f"w{i}")
    pair = (time.perf_counter() - t0) / 20
    hits = {"in": 0, "out": 0}

    def handler(signum, frame):
        if _in_package(frame):
            hits["in"] += 1
            raise KeyboardInterrupt("from a signal handler")
        hits["out"] += 1

    old = signal.signal(signal.SIGALRM, handler)
    rng = random.Random(13)
    try:
        for i in range(300):
            name = f"s{i}"
            signal.setitimer(signal.ITIMER_REAL, max(1e-6, rng.uniform(0, 1.2 * pair)))
            alloc = err = None
            try:
                alloc = led.register(name, [W(f"/r/{name}")])
                led.release(name, token=alloc.token)
                alloc = None
            except KeyboardInterrupt as exc:
                err = exc
            except UnknownHolder:
                pass
            signal.setitimer(signal.ITIMER_REAL, 0)
            _lock_is_free(led, other)
            live = _live(path)
            assert {a.name: a.token for a in led.holders()} == live
            if err is not None and alloc is None and name in live:
                # raised in register: no grant it did not return may stay
                pytest.fail(f"round {i}: a grant the caller never saw is live")
            for n in live:
                other.release(n)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert led.verify().ok
    print(f"signals inside the library: {hits['in']}, outside: {hits['out']}")


def test_a_child_forked_while_a_thread_is_inside_a_ledger_call_never_hangs(tmp_path):
    path = str(tmp_path / "L")
    led = Ledger.open(path, snapshot_every=13, timeout=5)
    stop = threading.Event()

    def busy():
        i = 0
        while not stop.is_set():
            led.register(f"t{i}", [W(f"/r/t{i}")])
            led.holders()
            led.release(f"t{i}")
            i += 1

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    codes = []
    try:
        for r in range(40):
            time.sleep(random.uniform(0, 0.003))  # fork at varied points of the thread's work
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 3
                try:
                    led.timeout = 5
                    led.holders()
                    led.register(f"c{r}", [W(f"/r/c{r}")])
                    led.reclaim_stale()
                    led.release(f"c{r}")
                    code = 0
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 60
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes.append(os.waitstatus_to_exitcode(status))
                    break
                if time.monotonic() > deadline:  # hung: the bound is generous
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    codes.append("hung")
                    break
                time.sleep(0.01)
            if codes[-1] != 0:
                break
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0] * 40, codes
    assert led.verify().ok


def _stopped(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:][:1] == b"T"


@pytest.fixture
def stopped_holder(tmp_path):
    path = str(tmp_path / "L")
    Ledger.open(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import os, signal, sys\nfrom scopeledger import Ledger\nled = Ledger.open(sys.argv[1])\n"
         "led._store.acquire()\nprint('held', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)\n"
         "led._store.release()\n", path, "stopped-holder-marker"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        deadline = time.monotonic() + 30
        while not _stopped(holder.pid):
            assert time.monotonic() < deadline, "the holder never stopped"
            time.sleep(0.01)
        yield path, holder
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait()


def test_waiters_name_a_stopped_holder_in_a_warning_and_in_the_timeout(stopped_holder, caplog):
    path, holder = stopped_holder
    says = (f"held by pid {holder.pid} (stopped: it holds the lock until it is continued or "
            f"killed): {sys.executable} -c import os, signal, sys")
    with Ledger.open(path, timeout=2.5) as led:
        with caplog.at_level("WARNING", logger="scopeledger"):
            with pytest.raises(LockTimeout) as info:
                led.register("a", [W("/r/a")])
    assert says in info.value.holder
    assert says in str(info.value)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"waiting for the lock on {path}/events.jsonl, {says}")


def test_the_waiting_notice_reaches_a_user_without_logging_set_up(stopped_holder):
    # No logging configured (Python's last-resort handler prints warnings):
    # on 813fdac the notice was INFO, and a stopped holder stopped everyone silently.
    path, holder = stopped_holder
    waiter = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom scopeledger import Ledger, ScopeRule\n"
         "Ledger.open(sys.argv[1]).register('a', [ScopeRule('/r/a', 'write')])\nprint('granted')\n", path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([waiter.stderr], [], [], 60)  # the notice comes after about 1 s
        assert ready, "no notice on stderr within 60 s"
        line = waiter.stderr.readline()
        assert line.startswith(f"waiting for the lock on {path}/events.jsonl, held by pid {holder.pid} "
                               "(stopped"), line
        holder.send_signal(signal.SIGCONT)  # it releases and exits: the waiter goes on
        out, _ = waiter.communicate(timeout=60)
        assert out == "granted\n" and waiter.returncode == 0
    finally:
        waiter.kill()
        waiter.wait()


def test_the_command_line_names_a_stopped_holder_on_a_lock_timeout(stopped_holder):
    import json

    path, holder = stopped_holder
    p = subprocess.run([sys.executable, "-m", "scopeledger", "--lock-timeout", "1.5", "--ledger", path,
                        "--json", "release", "nobody"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr
    err = json.loads(p.stdout)["error"]
    assert err["type"] == "LockTimeout"
    assert err["holder"].startswith(f"held by pid {holder.pid} (stopped: it holds the lock until it is "
                                    "continued or killed): ")
    assert f"warning: waiting for the lock on {path}/events.jsonl, held by pid {holder.pid}" in p.stderr


#: A fresh interpreter: a thread's ``register(..., wait=)`` is stopped inside
#: the first import of MODULE (which that call makes) until the main thread
#: forks; the child then makes the same call. Prints the child's pid.
_FORK_DURING_IMPORT = r"""
import importlib.abc, importlib.machinery, os, sys, threading
ledger_dir, module = sys.argv[1], sys.argv[2]
inside, go = threading.Event(), threading.Event()

class Stopped(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != module:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        real = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, mod):
                inside.set()
                go.wait()
                real.exec_module(mod)

        spec.loader = Loader()
        return spec

sys.meta_path.insert(0, Stopped())
from scopeledger import Ledger, ScopeRule
assert module not in sys.modules, module
led = Ledger.open(ledger_dir, timeout=10)
thread = threading.Thread(target=lambda: led.register("t", [ScopeRule("/t", "write")], wait=10))
thread.start()
inside.wait()
# Registered last, so run first at the fork: the importing thread may go on
# from here, but needs the interpreter lock the forking thread holds until
# the fork is made, unless a hook that runs after this one waits for it.
os.register_at_fork(before=go.set)
pid = os.fork()
if pid == 0:
    try:
        led.register("c", [ScopeRule("/c", "write")], wait=10)
        led.release("c")
    finally:
        os._exit(0)
print(pid, flush=True)
thread.join()
led.release("t")
"""


@pytest.mark.parametrize("module", ["scopeledger._wait", "scopeledger._filetickets"])
def test_a_child_forked_while_a_thread_imports_a_module_on_first_use_never_hangs(tmp_path, module):
    """A thread's first ``register(..., wait=)`` imports ``_wait`` and
    ``_filetickets`` on first use, under each module's import lock; a child
    forked meanwhile inherited that lock held by a thread it does not have,
    and its own first ``register(..., wait=)`` hung for ever (2 children of
    360 in a fork stress against threads waiting). Forced here: the import
    is stopped until the fork."""
    path = str(tmp_path / "L")
    p = subprocess.Popen([sys.executable, "-c", _FORK_DURING_IMPORT, path, module], stdout=subprocess.PIPE,
                         text=True)
    try:
        child = int(p.stdout.readline())
        fd = os.pidfd_open(child)
        try:
            exited = select.select([fd], [], [], 60)[0]  # a bound a hang is told by, not a speed
        finally:
            os.close(fd)
        if not exited:
            os.kill(child, signal.SIGKILL)
        assert exited, f"the child forked during the import of {module} hung"
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with Ledger.open(path, readonly=True) as led:
        # (the child's grant and release, and the thread's, in whatever order)
        assert sorted((e.type, e.names[0]) for e in led.events()) == [
            ("registered", "c"), ("registered", "t"), ("released", "c"), ("released", "t")]


def test_every_import_the_library_makes_on_first_use_holds_first_use():
    """What keeps the test above true of every such import: each import
    inside a function of the library (not the command line) is made in a
    ``with first_use:`` block (``scopeledger._imports``)."""
    import ast

    bare = []
    for root, _, files in os.walk(PACKAGE):
        if os.path.relpath(root, PACKAGE).split(os.sep)[0] == "cli":
            continue
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(root, f)
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            held = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.With) and any(
                        isinstance(item.context_expr, ast.Name) and item.context_expr.id == "first_use"
                        for item in node.items):
                    held.update(id(n) for n in node.body)
            for fn in ast.walk(tree):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for node in ast.walk(fn):
                        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in held:
                            bare.append(f"{os.path.relpath(path, PACKAGE)}:{node.lineno}")
    assert bare == []


#: A fresh interpreter imports what a program imports (scopeledger, its
#: public names), then records every import made during library calls: the
#: module, whether ``first_use`` was held, and the library's frame.
_IMPORTS_DURING_CALLS = r"""
import asyncio, datetime as dt, importlib.abc, json, os, sys, traceback
from scopeledger import AsyncLedger, Ledger, ScopeRule
from scopeledger._imports import first_use
seen = []

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        frames = [f for f in traceback.extract_stack()[:-1] if os.sep + "scopeledger" + os.sep in f.filename]
        where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "-"
        seen.append([name, first_use._is_owned(), where])
        return None

sys.meta_path.insert(0, Spy())
W = lambda p: ScopeRule(p, "write")
led = Ledger.open(sys.argv[1], snapshot_every=5)
for i in range(12):
    led.register(f"a{i}", [W(f"/x/{i}")])
    led.release(f"a{i}")
led.release(led.register("w", [W("/y")], wait=1).name)
with led.hold("h", [W("/h")], ttl=1):
    pass
led.reclaim()
led.liveness()
led.who("/x")
led.state_at(time=dt.datetime.now(dt.timezone.utc))
list(led.events())
led.verify()
led.snapshot()
led.spawn("sp", [sys.executable, "-c", "pass"], [W("/sp")]).wait()

async def main():
    aled = await AsyncLedger.open(sys.argv[1])
    await aled.release((await aled.register("as", [W("/as")], wait=1)).name)

asyncio.run(main())
print(json.dumps(seen))
"""


def test_every_import_made_during_a_library_call_holds_first_use(tmp_path):
    """The imports a library call makes, its own and those the standard
    library makes for it on first use (a text file's codec: ``boot_id``
    read ``/proc/sys/kernel/random/boot_id`` as ASCII text, and the codec's
    module was imported inside a thread's first ``register``, where the
    fork stress above found a child hung on it), all hold ``first_use``."""
    p = subprocess.run([sys.executable, "-c", _IMPORTS_DURING_CALLS, str(tmp_path / "L")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    import json

    seen = json.loads(p.stdout.splitlines()[-1])
    assert any(name == "scopeledger._filetickets" for name, _, _ in seen), seen  # the spy saw the library's imports
    assert [(name, where) for name, held, where in seen if not held] == []
