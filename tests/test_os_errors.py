"""Every failure is a LedgerError (issue 19, "Not every failure is a
LedgerError"): the OS refusing any call that touches the ledger's files,
while opening, reading or changing it, surfaces as a ``LedgerError``
subclass with the ``OSError`` as its cause, never as a raw ``OSError``;
and the ledger is whole afterwards. Checked by failing each such call in
turn (the k-th call of the operation, for every k), on a read-only mount,
and on a file system that fails for real (an xfs image shut down)."""

import errno
import fcntl
import os
import shutil
import subprocess

import pytest

from scopeledger import LedgerError, LedgerIOError, Ledger, ReadOnlyLedger, ScopeRule, verify
from scopeledger import _ledger, _snapshots, _store

from fs_support import tmpfs_mount, xfs_mount

#: The OS calls of scopeledger's store, snapshots and ledger modules that
#: touch the file system (and can fail: EIO on a failing disk, ENOLCK on a
#: network file system's flock).
CALLS = {"open", "mkdir", "chmod", "fchmod", "fstat", "lseek", "stat", "lstat", "listdir", "pread", "write",
         "fsync", "fdatasync", "ftruncate", "rename", "unlink", "flock"}


class _Plan:
    def __init__(self, fail_at, err, only=None):
        self.n = 0
        self.fail_at = fail_at
        self.err = err
        self.only = only
        self.failed = None


class _Faulty:
    """A stand-in for the ``os`` (or ``fcntl``) module that fails the
    ``plan.fail_at``-th call of :data:`CALLS` with ``plan.err``."""

    def __init__(self, real, plan):
        self._real = real
        self._plan = plan

    def __getattr__(self, name):
        value = getattr(self._real, name)
        plan = self._plan
        if name not in CALLS or (plan.only is not None and name not in plan.only):
            return value

        def call(*args, **kwargs):
            plan.n += 1
            if plan.n == plan.fail_at:
                plan.failed = name
                raise OSError(plan.err, os.strerror(plan.err))
            return value(*args, **kwargs)

        return call


def _inject(monkeypatch, plan):
    for mod in (_store, _snapshots, _ledger):
        monkeypatch.setattr(mod, "os", _Faulty(os, plan))
    monkeypatch.setattr(_store, "fcntl", _Faulty(fcntl, plan))


def _template(base):
    path = os.path.join(base, "template")
    with Ledger.open(path, snapshot_every=3) as led:
        led.register("a", [ScopeRule("/r/a", "write")])
        led.delegate("a", "b", [ScopeRule("/r/a/b", "write")])
        led.register("c", [ScopeRule("/r/c", "write")])
        led.release("c")
    return path


def _op_open_new(path):
    shutil.rmtree(path)
    Ledger.open(path).close()


def _op_open(path):
    Ledger.open(path).close()


def _op_open_readonly(path):
    with Ledger.open(path, readonly=True) as led:
        led.holders()


def _op_verify(path):
    verify(path)


def _op_register_after_others(path, led):
    led.register("d", [ScopeRule("/r/d", "write")])
    led.release("d")


def _op_snapshot(path, led):
    led.snapshot()


def _op_torn_tail(path, led):
    with open(os.path.join(path, "events.jsonl"), "ab") as f:
        f.write(b'{"v": 1, "se')
    led.register("e", [ScopeRule("/r/e", "write")])


OPS = [_op_open_new, _op_open, _op_open_readonly, _op_verify, _op_register_after_others,
       _op_snapshot, _op_torn_tail]


def _run(op, path, plan, monkeypatch):
    """Run ``op`` with ``plan``'s fault; the exception it raised, or None."""
    led = None
    if op.__code__.co_argcount == 2:
        led = Ledger.open(path)
        other = Ledger.open(path)  # appends something ``led`` has not folded
        other.register("x", [ScopeRule("/r/x", "write")])
        other.close()
    with monkeypatch.context() as m:
        _inject(m, plan)
        try:
            op(path, led) if led is not None else op(path)
        except Exception as exc:  # noqa: BLE001 - judged by the caller
            return exc
        finally:
            if led is not None:
                m.undo()
                led.close()
    return None


def _caused_by(exc, err):
    while exc is not None:
        if type(exc) is OSError and exc.errno == err:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@pytest.mark.parametrize("op, err", [(op, errno.EIO) for op in OPS] + [
    (op, errno.ENOLCK) for op in (_op_register_after_others, _op_torn_tail)],
    ids=lambda v: v.__name__[4:] if callable(v) else errno.errorcode[v])
def test_every_os_call_that_fails_is_a_ledger_error_and_the_ledger_stays_whole(tmp_path, monkeypatch,
                                                                               op, err):
    template = _template(str(tmp_path))
    only = {"flock"} if err == errno.ENOLCK else None
    count = _Plan(0, err, only)
    path = str(tmp_path / "L")
    shutil.copytree(template, path)
    assert _run(op, path, count, monkeypatch) is None
    assert count.n > 0
    raw = []
    for k in range(1, count.n + 1):
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(template, path)
        plan = _Plan(k, err, only)
        exc = _run(op, path, plan, monkeypatch)
        if exc is not None:
            if not isinstance(exc, LedgerError) or not _caused_by(exc, err):
                raw.append((k, plan.failed, type(exc).__name__, str(exc)))
                continue
        # Whole afterwards: opens, verifies, and the lock is free.
        with Ledger.open(path, timeout=5) as led:
            assert led.verify().ok, (k, plan.failed, led.verify())
            led.register("z", [ScopeRule("/r/z", "write")])
    assert raw == [], f"{len(raw)} of {count.n} failing calls escaped as non-LedgerError: {raw[:5]}"


def test_a_failing_flock_in_register_is_a_ledger_io_error_with_the_cause(tmp_path, monkeypatch):
    with Ledger.open(str(tmp_path / "L")) as led:
        plan = _Plan(1, errno.ENOLCK, {"flock"})
        with monkeypatch.context() as m:
            _inject(m, plan)
            with pytest.raises(LedgerIOError, match="failed to lock the ledger: .*events.jsonl") as info:
                led.register("a", [ScopeRule("/r/a", "write")])
        assert info.value.errno == errno.ENOLCK
        assert isinstance(info.value.__cause__, OSError)
        led.register("a", [ScopeRule("/r/a", "write")])  # the lock was not left taken


@pytest.fixture
def ro_mount(tmp_path):
    with tmpfs_mount(tmp_path, "ro,size=1m") as mnt:
        yield mnt


def test_a_new_ledger_on_a_read_only_file_system_is_read_only_ledger(ro_mount):
    with pytest.raises(ReadOnlyLedger, match=f"{ro_mount}/L is on a read-only file system") as info:
        Ledger.open(os.path.join(ro_mount, "L"))
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EROFS


def test_a_ledger_on_a_failing_file_system_is_a_ledger_io_error(tmp_path):
    with xfs_mount(tmp_path) as mnt:
        path = os.path.join(mnt, "L")
        with Ledger.open(path) as led:
            led.register("a", [ScopeRule("/r/a", "write")])
            subprocess.run(["xfs_io", "-x", "-c", "shutdown", mnt], check=True)
            with pytest.raises(LedgerIOError) as info:
                led.register("b", [ScopeRule("/r/b", "write")])
            assert info.value.errno == errno.EIO and isinstance(info.value.__cause__, OSError)
        for readonly in (False, True):
            with pytest.raises(LedgerIOError, match=f"failed to open the ledger: {path}") as info:
                Ledger.open(path, readonly=readonly)
            assert info.value.errno == errno.EIO and isinstance(info.value.__cause__, OSError)


def _fill(mnt):
    """Fill the file system at ``mnt`` (a file ``fill`` up to ENOSPC)."""
    with open(os.path.join(mnt, "fill"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


HOLDER = """
import sys
from scopeledger import Ledger, ScopeRule
led = Ledger.open(sys.argv[1])
led.register("h", [ScopeRule(sys.argv[2], "write")])
print("held", flush=True)
sys.stdin.read()
"""


def test_a_full_disk_while_a_waiter_joins_the_queue_is_a_ledger_io_error_naming_the_ticket(tmp_path):
    """A real full file system (a 256 KiB tmpfs): a waiter's ticket cannot be
    written. The library raises a LedgerIOError naming the ticket's file (it
    was a bare OSError(28) without a name: fresh tester's F11) and leaves no
    ticket behind; ``ledger run -w`` says the same (exit 7). The log's last
    page is left room for the refusals the waiters record first, so that it
    is the ticket that meets the full disk."""
    import sys

    from helpers import CMD, clean_env

    scope = str(tmp_path / "scope")
    with tmpfs_mount(tmp_path, "size=256k") as mnt:
        path = os.path.join(mnt, "L")
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, path, scope], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "held\n"
            with Ledger.open(path) as led:
                log = os.path.join(path, "events.jsonl")
                while 4096 - os.path.getsize(log) % 4096 < 2048:  # room for two refusals in its last page
                    led.release(led.register("pad", [ScopeRule(str(tmp_path / "pad"), "write")]).name)
                os.mkdir(os.path.join(path, "waiters"), 0o700)  # (as the first waiter makes it)
                _fill(mnt)
                with pytest.raises(LedgerIOError) as info:
                    led.register("w", [ScopeRule(scope, "write")], wait=5)
                exc = info.value
                assert exc.errno == errno.ENOSPC and isinstance(exc.__cause__, OSError)
                ticket = os.path.join(path, "waiters", "0000000000000001")
                assert exc.path == ticket and str(exc) == (
                    f"failed to write a waiter's ticket: {ticket}: No space left on device")
                assert os.listdir(os.path.join(path, "waiters")) == []
                res = subprocess.run([*CMD, "--ledger", path, "run", "-w", "5", "--write", scope, "--", "true"],
                                     capture_output=True, text=True, env=clean_env(), timeout=60)
                assert res.returncode == 7, res
                assert res.stderr == (f"error: failed to write a waiter's ticket: {ticket}: "
                                      "No space left on device\n"), res.stderr
                assert os.listdir(os.path.join(path, "waiters")) == []
                os.unlink(os.path.join(mnt, "fill"))
                assert led.verify().ok
                assert [a.name for a in led.holders()] == ["h"]
        finally:
            holder.stdin.close()
            holder.wait()


class _FaultyTickets:
    """``os``/``fcntl`` for ``_filetickets`` failing the ``fail_at``-th of its
    calls that make a ticket (EIO)."""

    CALLS = {"open", "mkdir", "fchmod", "fstat", "flock", "write", "link", "scandir"}

    def __init__(self, real, plan):
        self._real, self._plan = real, plan

    def __getattr__(self, name):
        value = getattr(self._real, name)
        if name not in self.CALLS:
            return value
        plan = self._plan

        def call(*args, **kwargs):
            plan.n += 1
            if plan.n == plan.fail_at:
                plan.failed = name
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return value(*args, **kwargs)

        return call


def test_every_os_call_that_makes_a_ticket_fails_as_a_ledger_io_error_and_leaves_none(tmp_path, monkeypatch):
    from scopeledger import WaitTimeout, _filetickets

    path = str(tmp_path / "L")
    with Ledger.open(path) as led, Ledger.open(path) as other:
        other.register("h", [ScopeRule("/r/h", "write")])

        def wait(plan):
            with monkeypatch.context() as m:
                m.setattr(_filetickets, "os", _FaultyTickets(os, plan))
                m.setattr(_filetickets, "fcntl", _FaultyTickets(fcntl, plan))
                try:
                    led.register("w", [ScopeRule("/r/h/w", "write")], wait=0.05)
                except (WaitTimeout, LedgerIOError) as exc:
                    return exc

        count = _Plan(0, errno.EIO)
        assert isinstance(wait(count), WaitTimeout) and count.n > 0
        failed = []
        for k in range(1, count.n + 1):
            plan = _Plan(k, errno.EIO)
            exc = wait(plan)
            if isinstance(exc, WaitTimeout):
                continue  # (a call of a later look than the join's)
            assert isinstance(exc, LedgerIOError) and exc.errno == errno.EIO, (k, plan.failed, exc)
            assert exc.path.startswith(os.path.join(path, "waiters")), (k, plan.failed, exc)
            failed.append(plan.failed)
            assert [n for n in os.listdir(os.path.join(path, "waiters")) if not n.startswith(".")] == []
        assert {"write", "link", "flock"} <= set(failed), failed
        assert led.verify().ok
