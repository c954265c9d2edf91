"""Files, modes, symlinks, torn lines, corruption, the lock, fork."""

import contextlib
import errno
import fcntl
import multiprocessing
import os
import shutil
import stat
import threading
import time
import subprocess
import sys

import orjson
import pytest

from torture_support import plant, run_as_nobody, shared_ledger, tree_modes

from scopeledger import (
    CorruptLedger,
    Ledger,
    LedgerError,
    LockTimeout,
    NoLedger,
    ScopeRule,
    UnsafeLedgerPath,
    verify,
)

W = lambda p: ScopeRule(p, "write")  # noqa: E731




@pytest.mark.parametrize("umask", [0o000, 0o002, 0o077, 0o777])
def test_files_0600_dirs_0700_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = str(tmp_path / "deep" / "ledger")
        with Ledger.open(path, snapshot_every=2) as led:
            led.register("a", [W("/a")])
            led.register("b", [W("/b")])
            led.snapshot()
        assert os.umask(umask) == umask  # the process umask is unchanged
    finally:
        os.umask(old)
    found = tree_modes(str(tmp_path / "deep"))
    assert len(found) >= 6
    for p, mode in found.items():
        expected = 0o700 if os.path.isdir(p) else 0o600
        assert mode == expected, (p, oct(mode))


def test_loose_existing_modes_are_tightened(tmp_path):
    path = tmp_path / "ledger"
    with Ledger.open(str(path)) as led:
        led.register("a", [W("/a")])
    os.chmod(path, 0o755)
    os.chmod(path / "events.jsonl", 0o644)
    with Ledger.open(str(path)):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path / "events.jsonl").st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777])
def test_group_or_other_writable_directory_is_refused(tmp_path, mode):
    path = tmp_path / "ledger"
    Ledger.open(str(path)).close()
    os.chmod(path, mode)
    with pytest.raises(UnsafeLedgerPath, match="writable by group or others"):
        Ledger.open(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_directory_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "ledger"
    Ledger.open(str(path)).close()
    os.chown(path, 65534, 65534)
    with pytest.raises(UnsafeLedgerPath, match="owned by uid 65534"):
        Ledger.open(str(path))


@pytest.mark.parametrize("name", ["gate", "events.jsonl", "snapshots"])
def test_planted_symlink_is_refused_and_target_untouched(tmp_path, name):
    path = tmp_path / "ledger"
    path.mkdir(mode=0o700)
    target = tmp_path / "victim"
    target.write_bytes(b"precious\n")
    os.chmod(target, 0o644)
    os.symlink(target, path / name)
    with pytest.raises(UnsafeLedgerPath, match="symlink"):
        Ledger.open(str(path))
    assert target.read_bytes() == b"precious\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644


@pytest.mark.parametrize("below", ["L", "sub/L", "sub/deeper/L"])
@pytest.mark.parametrize("opener", ["create", "readonly", "verify"])
def test_a_file_on_the_way_to_the_ledger_is_named_by_every_opener(tmp_path, below, opener):
    afile = tmp_path / "notes.txt"
    afile.write_bytes(b"mine\n")
    path = str(afile / below)
    with pytest.raises(UnsafeLedgerPath) as info:
        if opener == "verify":
            verify(path)
        else:
            Ledger.open(path, readonly=opener == "readonly")
    assert str(info.value) == f"unsafe ledger path {path}: {afile} is a regular file, not a directory"
    assert afile.read_bytes() == b"mine\n" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_ledger_directory_itself_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    os.symlink(real, tmp_path / "ledger")
    with pytest.raises(UnsafeLedgerPath):
        Ledger.open(str(tmp_path / "ledger"))


def test_hard_link_at_the_log_is_refused(tmp_path):
    path = tmp_path / "ledger"
    Ledger.open(str(path)).close()
    os.link(path / "events.jsonl", tmp_path / "other-name")
    with pytest.raises(UnsafeLedgerPath, match="hard links"):
        Ledger.open(str(path))


KINDS = {"socket": "a socket", "fifo": "a FIFO", "directory": "a directory"}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("name, readonly", [("events.jsonl", False), ("events.jsonl", True),
                                            ("gate", False)])
def test_another_kind_of_file_is_refused_naming_its_full_path_and_kind(tmp_path, kind, name,
                                                                      readonly):
    # A socket fails to open with ENXIO, a directory with EISDIR (or opens
    # read-only), a FIFO opens: each must be named, in full, for what it is.
    path = str(tmp_path / "ledger")
    Ledger.open(path).close()
    plant(os.path.join(path, name), kind)
    with pytest.raises(UnsafeLedgerPath) as caught:
        Ledger.open(path, readonly=readonly)
    full = os.path.join(path, name)
    assert caught.value.path == full
    assert str(caught.value) == f"unsafe ledger path {full}: is {KINDS[kind]}, not a regular file"


def _recorded(path):
    with Ledger.open(path) as led:
        led.register("a", [W("/a")])
        led.snapshot()


def _open_and_say(path, readonly):
    """For run_as_nobody: open the ledger; print what was refused, and how."""
    try:
        Ledger.open(path, readonly=readonly).close()
    except (OSError, LedgerError) as exc:
        print(type(exc).__name__, getattr(exc, "filename", None), getattr(exc, "path", None), sep="|")
        return 3
    return 0


@pytest.mark.parametrize("name, readonly, error", [
    ("events.jsonl", True, "LedgerIOError"),  # its cause: PermissionError
    ("snapshots", True, "LedgerIOError"),
    ("snapshots", False, "LedgerIOError"),
    ("events.jsonl", False, "ReadOnlyLedger"),  # mode 0000: write-protected by its owner
])
def test_a_file_the_os_refuses_is_named_by_its_full_path(name, readonly, error):
    # os.open(name, dir_fd=...) names only 'events.jsonl'; the error must
    # name the file in full. Root reads anything: the ledger is nobody's.
    path, base = shared_ledger(_recorded)
    try:
        os.chmod(os.path.join(path, name), 0)
        code, out = run_as_nobody(lambda: _open_and_say(path, readonly))
    finally:
        shutil.rmtree(base)
    full = os.path.join(path, name)
    assert (code, out) == (3, f"{error}|None|{full}\n")


def test_a_file_of_another_owner_that_cannot_be_opened_is_unsafe(tmp_path):
    path, base = shared_ledger(_recorded)
    try:
        os.chown(os.path.join(path, "events.jsonl"), 0, 0)  # root's, 0600: nobody cannot open it
        code, out = run_as_nobody(lambda: _open_and_say(path, False))
    finally:
        shutil.rmtree(base)
    assert (code, out) == (3, f"UnsafeLedgerPath|None|{os.path.join(path, 'events.jsonl')}\n")


def test_descriptors_are_close_on_exec(ledger):
    store = ledger._store
    for fd in (store.dirfd, store.gatefd, store.logfd, store.snapfd):
        assert not os.get_inheritable(fd)
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_torn_tail_open_works_and_next_append_lands_on_its_own_line(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])
    log = os.path.join(ledger_dir, "events.jsonl")
    with open(log, "ab") as f:
        f.write(b'{"v":1,"seq":2,"ts":1,"actor":{"pid":1')  # a writer killed mid-append
    led = Ledger.open(ledger_dir)
    assert [a.name for a in led.holders()] == ["a"]
    note = led.verify()
    assert note.ok and "torn last line" in note.notes[0]
    led.register("b", [W("/b")])
    lines = open(log, "rb").read().splitlines()
    assert [orjson.loads(x)["seq"] for x in lines] == [1, 2]
    (where,) = led.stats.torn
    assert open(where, "rb").read().startswith(b'{"v":1,"seq":2,"ts":1')
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
    assert Ledger.open(ledger_dir).verify().ok


def test_broken_line_in_the_middle_is_corrupt_never_skipped(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        for n in "abc":
            led.register(n, [W(f"/{n}")])
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines(keepends=True)
    lines[1] = b"this is not json\n"
    open(log, "wb").write(b"".join(lines))
    with pytest.raises(CorruptLedger) as info:
        Ledger.open(ledger_dir)
    assert info.value.line == 2 and "not JSON" in str(info.value)
    assert "events.jsonl line 2" in str(info.value)


@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0\x80", b"\xc3"])  # not UTF-8; a surrogate; cut short
def test_a_line_that_is_not_utf8_is_named_so_with_the_byte(ledger_dir, bad):
    with Ledger.open(ledger_dir) as led:
        for n in "abc":
            led.register(n, [W(f"/{n}")])
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines(keepends=True)
    at = lines[1].index(b"/b") + 1
    lines[1] = lines[1][:at] + bad + lines[1][at + 1:]
    open(log, "wb").write(b"".join(lines))
    with pytest.raises(CorruptLedger) as info:
        Ledger.open(ledger_dir)
    assert info.value.line == 2
    assert f"not valid UTF-8 (byte {at + 1} of the line is {bad[:1]!r})" in str(info.value)


@pytest.mark.parametrize("field, value, says", [
    ("type", ["registered"], "unknown event type"),  # unhashable: once a TypeError
    ("type", {"a": 1}, "unknown event type"),
    ("type", "granted", "unknown event type"),
    ("seq", "2", "seq is '2'"),
    ("ts", 1.5, "ts is not an integer"),
    ("ts", 2**63, "ts 9223372036854775808 is out of range"),  # would be clamped into every later event
    ("ts", 2**64 - 1, "ts 18446744073709551615 is out of range"),
    ("prev", None, "prev is not a string"),
    ("actor", [], "actor is not an object"),
    ("v", 3, "format version 3 (this scopeledger reads versions up to 2)"),  # (verify: altered, line 3 says)
    ("v", True, "unsupported format version True"),  # True == 1 in Python, not in the format
    ("v", None, "unsupported format version"),
])
def test_malformed_envelope_is_corrupt_with_the_field_named(ledger_dir, field, value, says):
    with Ledger.open(ledger_dir) as led:
        for n in "abc":
            led.register(n, [W(f"/{n}")])
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines(keepends=True)
    ev = orjson.loads(lines[1])
    ev[field] = value
    lines[1] = orjson.dumps(ev) + b"\n"
    open(log, "wb").write(b"".join(lines))
    with pytest.raises(CorruptLedger) as info:
        Ledger.open(ledger_dir)
    assert info.value.line == 2 and says in str(info.value)
    report = verify(ledger_dir)  # the replay path reads it the same way
    assert not report.ok and says in report.problems[0].message


def test_lock_timeout_is_a_timeout_error(ledger_dir):
    led = Ledger.open(ledger_dir, timeout=0.2)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({os.path.join(ledger_dir, 'events.jsonl')!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout) as info:
            led.register("a", [W("/a")])
        assert isinstance(info.value, TimeoutError)
        assert info.value.path.endswith("events.jsonl")
        assert "timed out after 0.2s" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    led.register("a", [W("/a")])  # free again


@pytest.mark.parametrize("pid", [True, 1.0, "1"])
def test_a_process_pid_of_another_json_type_is_corrupt_even_after_the_same_pid(ledger_dir, pid):
    # 'true' == 1 in Python: a memo keyed by value alone once accepted it.
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")], pid=1)
        led.register("b", [W("/b")], pid=1)
    log = os.path.join(ledger_dir, "events.jsonl")
    lines = open(log, "rb").read().splitlines(keepends=True)
    ev = orjson.loads(lines[-1])
    ev["holder"]["process"]["pid"] = pid
    lines[-1] = orjson.dumps(ev) + b"\n"
    open(log, "wb").write(b"".join(lines))
    with pytest.raises(CorruptLedger, match="holder.process is"):
        Ledger.open(ledger_dir)


def _hold_lock_in_another_process(ledger_dir):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({os.path.join(ledger_dir, 'events.jsonl')!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_waiter_polls_with_on_wait_then_times_out_and_holds_nothing(ledger_dir):
    from scopeledger._store import SPIN_SECONDS

    led = Ledger.open(ledger_dir)
    store = led._store
    calls = []
    holder = _hold_lock_in_another_process(ledger_dir)
    try:
        with pytest.raises(LockTimeout):
            store.acquire(timeout=SPIN_SECONDS * 2, on_wait=lambda: calls.append(1))
        assert calls, "on_wait was never called while the lock was busy"

        def boom():
            raise RuntimeError("from on_wait")

        with pytest.raises(RuntimeError, match="from on_wait"):
            store.acquire(timeout=5, on_wait=boom)
    finally:
        holder.communicate("")
    # Neither failed wait left the thread lock or the flock held.
    assert store.acquire(timeout=1) < 1
    store.release()
    led.register("a", [W("/a")])


def _gate_is_held(ledger_dir):
    fd = os.open(os.path.join(ledger_dir, "gate"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_sleeping_waiter_holds_the_gate_until_it_has_the_lock(ledger_dir, monkeypatch):
    from scopeledger import _store

    monkeypatch.setattr(_store, "SPIN_SECONDS", 0.0)  # sleep in flock at once
    led = Ledger.open(ledger_dir)
    assert not _gate_is_held(ledger_dir)
    holder = _hold_lock_in_another_process(ledger_dir)
    got = threading.Event()
    t = threading.Thread(target=lambda: (led._store.acquire(), got.set()))
    try:
        t.start()
        deadline = time.monotonic() + 10
        while not _gate_is_held(ledger_dir) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _gate_is_held(ledger_dir), "the sleeping waiter does not hold the gate"
        assert not got.is_set()
    finally:
        holder.communicate("")
    t.join(10)
    assert got.is_set()
    assert not _gate_is_held(ledger_dir)  # let go once the lock is taken
    led._store.release()


def test_a_newcomer_stands_back_for_a_sleeper_but_not_for_ever(ledger_dir, monkeypatch):
    # Someone holds the gate (a sleeper, here one that never takes the free
    # lock, as if stopped): a newcomer defers DEFER_SECONDS, then takes it.
    from scopeledger import _store

    monkeypatch.setattr(_store, "DEFER_SECONDS", 0.2)
    monkeypatch.setattr(_store, "SPIN_SECONDS", 0.4)
    monkeypatch.setattr(_store, "GATE_DISTRUST_SECONDS", 0.5)
    led = Ledger.open(ledger_dir)
    fd = os.open(os.path.join(ledger_dir, "gate"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        led.register("a", [W("/a")])
        assert led.last_wait >= 0.2
        # The sleeper did not take the free lock: the gate is ignored for a
        # while (a waiter stopped with Ctrl-Z must not slow everyone down).
        led.register("b", [W("/b")])
        assert led.last_wait < 0.2
        time.sleep(0.6)
        led.register("c", [W("/c")])
        assert led.last_wait >= 0.2  # trusted again, and stood back again
        # A try-lock (timeout shorter than the stand-back) never stands back.
        quick = Ledger.open(ledger_dir, timeout=0)
        quick.register("d", [W("/d")])
    finally:
        os.close(fd)
    assert sorted(led.state().holders) == ["a", "b", "c", "d"]


def test_foreign_lines_are_folded_before_the_lock_only_while_others_write(ledger_dir):
    a, b = Ledger.open(ledger_dir), Ledger.open(ledger_dir)
    seen = []  # at each of a's acquisitions: were all lines folded already?
    real = a._store.acquire

    def spy(*args, **kw):
        seen.append(a._state.seq == a._log.head())  # (seqs: the ledger keeps no byte offset)
        return real(*args, **kw)

    a._store.acquire = spy
    a.register("a1", [W("/a1")])
    a.register("a2", [W("/a2")])  # alone: nothing to fold
    b.register("b1", [W("/b1")])
    a.register("a3", [W("/a3")])  # quiet until now: b1 is folded under the lock
    b.register("b2", [W("/b2")])
    a.register("a4", [W("/a4")])  # others are active: b2 is folded before it
    b.register("b3", [W("/b3")])
    a.register("a5", [W("/a5")])
    assert seen == [True, True, False, True, True]
    assert sorted(a.state().holders) == ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3"]


def test_a_waiting_ledger_folds_what_the_holder_appends(ledger_dir):
    waiting, other = Ledger.open(ledger_dir), Ledger.open(ledger_dir)
    other.register("x", [W("/x")])
    assert "x" not in waiting._state.holders
    waiting._fold_while_waiting()  # what acquire() calls between tries
    assert "x" in waiting._state.holders
    assert not waiting._store.holding_pid  # without taking the lock


def test_deleting_files_beside_the_log_never_lets_two_writers_in(ledger_dir):
    # A fresh tester deleted 'lock' (a lock file of its own, then) while 3
    # processes appended: processes opened afterwards locked a new file, two
    # wrote at once and the log broke for good. The lock is now the log.
    first = Ledger.open(ledger_dir)
    first.register("a", [W("/a")])
    for name in ("lock", "gate"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(ledger_dir, name))
    with first._store.locked():
        later = Ledger.open(ledger_dir, timeout=0.2)  # opened after the deletion
        with pytest.raises(LockTimeout):
            later.register("b", [W("/b")])
    later.register("b", [W("/b")])
    assert verify(ledger_dir).ok


def test_forked_child_cannot_release_the_parents_lock(ledger):
    lock_path = os.path.join(ledger.path, "events.jsonl")
    pid = None
    try:
        with ledger._store.locked():
            pid = os.fork()
            if pid:
                _, status = os.waitpid(pid, 0)
                assert os.waitstatus_to_exitcode(status) == 0, "the child released or took the lock"
        # (the child has left the with block too, which must not unlock the parent's lock)
    finally:
        if pid == 0:
            code = 1
            try:
                fd = os.open(lock_path, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    code = 0  # the parent still holds it
            finally:
                os._exit(code)
    ledger.register("a", [W("/a")])


def test_a_failed_write_leaves_no_trace(ledger, monkeypatch):
    ledger.register("a", [W("/a")])
    before = open(os.path.join(ledger.path, "events.jsonl"), "rb").read()

    def full(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    from scopeledger import LedgerIOError
    with pytest.raises(LedgerIOError, match="No space left"):
        ledger.register("b", [W("/b")])
    monkeypatch.undo()
    assert open(os.path.join(ledger.path, "events.jsonl"), "rb").read() == before
    assert [a.name for a in ledger.holders()] == ["a"]
    ledger.register("b", [W("/b")])
    assert ledger.verify().ok


def test_a_short_write_is_cut_back(ledger, monkeypatch):
    ledger.register("a", [W("/a")])
    before = open(os.path.join(ledger.path, "events.jsonl"), "rb").read()
    real_write = os.write

    def short(fd, data):
        return real_write(fd, bytes(data)[:10])
    monkeypatch.setattr(os, "write", short)
    from scopeledger import LedgerIOError
    with pytest.raises(LedgerIOError, match="short write"):
        ledger.register("b", [W("/b")])
    monkeypatch.undo()
    assert open(os.path.join(ledger.path, "events.jsonl"), "rb").read() == before
    assert ledger.verify().ok


def _eio_on(path, real):
    """``real`` (``os.lseek``, ``os.pread``, ``os.ftruncate``), failing with
    EIO on a descriptor of ``path`` (as a failing disk does after opening)."""
    def fail(fd, *args):
        if isinstance(fd, int) and os.readlink(f"/proc/self/fd/{fd}") == path:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, *args)
    return fail


READS = {
    "refresh": lambda led: led.refresh(),
    "holders": lambda led: led.holders(),
    "register": lambda led: led.register("c", [W("/c")]),
    "events": lambda led: list(led.events()),
    "state_at": lambda led: led.state_at(seq=1),
    "open": lambda led: Ledger.open(led.path, readonly=True),
}


@pytest.mark.parametrize("call, action", [("pread", a) for a in sorted(READS)] + [
    ("lseek", a) for a in sorted(READS) if a == "state_at"])
# (lseek, the log's size: events and opening need none; refresh, holders and register find
# the log's end with the pread of the last line they read again, FileStore.read_on and begin)
def test_a_read_error_after_opening_names_the_log(ledger_dir, monkeypatch, call, action):
    # Store.size/read/read_at: an OSError from a descriptor names no file;
    # it must name the log in full, as an error opening it does.
    led = Ledger.open(ledger_dir)
    led.register("a", [W("/a")])
    with Ledger.open(ledger_dir) as other:
        other.register("b", [W("/b")])  # something new for led to read
    log_path = os.path.join(ledger_dir, "events.jsonl")
    monkeypatch.setattr(os, call, _eio_on(log_path, getattr(os, call)))
    from scopeledger import LedgerIOError
    with pytest.raises(LedgerIOError) as caught:
        READS[action](led)
    monkeypatch.undo()
    assert caught.value.path == log_path
    assert caught.value.errno == errno.EIO
    assert str(caught.value) == f"failed to read the log: {log_path}: Input/output error"
    assert [a.name for a in led.holders()] == ["a", "b"]  # it reads on once the disk does
    led.close()


def test_verify_reports_an_unreadable_log_naming_it(ledger_dir, monkeypatch):
    with Ledger.open(ledger_dir) as led:
        led.register("a", [W("/a")])
    log_path = os.path.join(ledger_dir, "events.jsonl")
    monkeypatch.setattr(os, "pread", _eio_on(log_path, os.pread))
    report = verify(ledger_dir, workers=1)
    assert not report.ok
    assert str(report.problems[0]) == f"{log_path}: cannot read: input/output error"


def test_a_torn_line_that_cannot_be_cut_off_names_the_log(ledger, monkeypatch):
    ledger.register("a", [W("/a")])
    log_path = os.path.join(ledger.path, "events.jsonl")
    with open(log_path, "ab") as f:
        f.write(b'{"v": 1, "seq": 2')  # a writer killed mid-line
    monkeypatch.setattr(os, "ftruncate", _eio_on(log_path, os.ftruncate))
    from scopeledger import LedgerIOError
    with pytest.raises(LedgerIOError) as caught:
        ledger.register("b", [W("/b")])
    monkeypatch.undo()
    assert str(caught.value) == f"failed to cut a torn line off the log: {log_path}: Input/output error"
    ledger.register("b", [W("/b")])  # the next try sets it aside (again) and goes on
    assert [a.name for a in ledger.holders()] == ["a", "b"]
    assert ledger.verify().ok


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_a_long_wait_says_once_which_ledger(ledger_dir, caplog, timeout):
    led = Ledger.open(ledger_dir, timeout=timeout)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({os.path.join(ledger_dir, 'events.jsonl')!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(1.6)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with caplog.at_level("INFO", logger="scopeledger"):
            led.register("a", [W("/a")])
    finally:
        holder.kill()
        holder.wait()
    notices = [(r.levelname, r.getMessage()) for r in caplog.records
               if "waiting for the lock" in r.getMessage()]
    assert len(notices) == 1 and notices[0][0] == "WARNING"  # reaches a user by default
    log = os.path.join(ledger_dir, "events.jsonl")
    assert notices[0][1].startswith(f"waiting for the lock on {log}, held by pid {holder.pid}: "
                                    f"{sys.executable} -c import fcntl, os, sys, time fd = ")
    assert led.last_wait >= 1.0


def test_an_existing_directory_that_is_not_a_ledger_is_refused_untouched(tmp_path):
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    os.chmod(project, 0o755)
    (project / "README").write_text("mine")
    with pytest.raises(UnsafeLedgerPath, match="is not a ledger"):
        Ledger.open(str(project))
    assert sorted(os.listdir(project)) == ["README"]
    assert stat.S_IMODE(os.stat(project).st_mode) == 0o755
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    Ledger.open(str(empty)).close()  # an empty directory may become a ledger
    other = tmp_path / "other"
    (other / "snapshots").mkdir(parents=True, mode=0o700)
    (other / "notes").write_text("mine")
    with pytest.raises(UnsafeLedgerPath, match="is not a ledger"):
        Ledger.open(str(other))  # a ledger's name beside others is not enough
    assert sorted(os.listdir(other)) == ["notes", "snapshots"]


def _open_together(path, barrier, q):
    try:
        barrier.wait()
        with Ledger.open(path) as led:
            led.register(f"p{os.getpid()}", [W(f"/t/{os.getpid()}")])
        q.put(None)
    except BaseException as exc:  # noqa: BLE001
        q.put(repr(exc))


def test_processes_creating_one_new_ledger_together_all_open_it(tmp_path):
    # Found by the stress torture: a creator had made snapshots/ but not yet
    # the lock, and another process refused the directory as "not a ledger".
    ctx = multiprocessing.get_context("fork")
    for attempt in range(15):
        path = str(tmp_path / f"l{attempt}")
        barrier, q = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_together, args=(path, barrier, q)) for _ in range(6)]
        for p in procs:
            p.start()
        errors = [e for e in (q.get(timeout=60) for _ in procs) if e is not None]
        for p in procs:
            p.join()
        assert errors == [], f"attempt {attempt}: {errors}"
        with Ledger.open(path) as led:
            assert len(led.holders()) == 6


def test_a_directory_holding_only_parts_of_a_ledger_opens(tmp_path):
    # What another process creating the ledger leaves at each step.
    for names in (["snapshots"], ["snapshots", "lock"], ["snapshots", "lock", "gate"]):
        path = tmp_path / "-".join(names)
        path.mkdir(mode=0o700)
        for n in names:
            if n == "snapshots":
                (path / n).mkdir(mode=0o700)
            else:
                fd = os.open(path / n, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
        with Ledger.open(str(path)) as led:
            led.register("a", [W("/a")])
        assert "events.jsonl" in os.listdir(path)


def test_verify_never_creates(tmp_path):
    from scopeledger import NoLedger, verify
    with pytest.raises(NoLedger, match="no ledger at"):
        verify(str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()
    (tmp_path / "dir").mkdir()
    with pytest.raises(NoLedger):
        verify(str(tmp_path / "dir"))
    assert os.listdir(tmp_path / "dir") == []


@pytest.mark.parametrize("path", ["", "/tmp/a\x00b"])
def test_empty_or_nul_ledger_path(path):
    from scopeledger import NoLedger
    with pytest.raises(NoLedger):
        Ledger.open(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "3"])
def test_bad_timeouts_are_refused(ledger_dir, bad):
    with pytest.raises(ValueError, match="timeout must be"):
        Ledger.open(ledger_dir, timeout=bad)


def test_open_without_create_opens_only_a_ledger_that_is_there(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(NoLedger, match="nothing has been recorded there"):
        Ledger.open(missing, create=False)
    assert not missing.exists()
    path = tmp_path / "ledger"
    with Ledger.open(path) as led:
        led.register("a", [W("/c/a")])
    with Ledger.open(path, create=False) as led:
        assert [a.name for a in led.holders()] == ["a"]
        led.register("b", [W("/c/b")])
    os.unlink(path / "events.jsonl")  # the log lost, the rest of the layout left
    before = sorted(os.listdir(path))
    with pytest.raises(NoLedger, match="it has no events.jsonl"):
        Ledger.open(path, create=False)
    assert sorted(os.listdir(path)) == before
    with pytest.raises(TypeError, match="create must be True or False"):
        Ledger.open(path, create="no")


@pytest.mark.parametrize("args", [["snapshot"], ["release", "a"], ["reclaim"], ["show"], ["verify"]])
def test_commands_other_than_run_never_create_a_lost_log(tmp_path, args):
    import subprocess

    path = tmp_path / "ledger"
    with Ledger.open(path) as led:
        led.register("a", [W("/c/a")])
    os.unlink(path / "events.jsonl")
    before = sorted(os.listdir(path))
    res = subprocess.run([sys.executable, "-m", "scopeledger", "--ledger", str(path), *args],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 6, res
    assert res.stderr == f"error: no ledger at {path}: it has no events.jsonl\n"
    assert sorted(os.listdir(path)) == before


@pytest.mark.parametrize("inner", ["snapshots", "snapshots/x", "torn", "sub", "sub/deeper"])
def test_a_new_ledger_inside_another_is_refused(tmp_path, inner):
    outer = tmp_path / "outer"
    with Ledger.open(outer) as led:
        led.register("a", [W("/c/a")])
    before = {p: sorted(os.listdir(p)) for p in (outer, outer / "snapshots")}
    path = outer / inner
    with pytest.raises(UnsafeLedgerPath) as info:
        Ledger.open(path)
    assert str(info.value) == (f"unsafe ledger path {path}: it is inside the ledger {outer}: "
                               "choose a directory outside it")
    assert {p: sorted(os.listdir(p)) for p in before} == before
    assert Ledger.open(outer).verify().ok


def test_a_lost_log_beside_snapshots_is_never_recreated(tmp_path):
    # 'ledger run' on a ledger whose events.jsonl was deleted made an empty log,
    # then failed (exit 4); every command then said "corrupt" instead of "missing".
    import subprocess

    path = tmp_path / "ledger"
    with Ledger.open(path) as led:
        led.register("a", [W("/c/a")])
        led.snapshot()
    os.unlink(path / "events.jsonl")
    before = sorted(os.listdir(path))
    with pytest.raises(CorruptLedger, match=r"the log is missing, but .*snapshots holds snapshots up to "
                                            r"seq 1: it was deleted or moved"):
        Ledger.open(path)
    assert sorted(os.listdir(path)) == before
    res = subprocess.run([sys.executable, "-m", "scopeledger", "--ledger", str(path), "run", "--write",
                          str(tmp_path / "x"), "--", "true"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 4 and "the log is missing" in res.stderr, res
    assert sorted(os.listdir(path)) == before
    # Every command, and every way of opening, says the same (readers said "no ledger").
    for args in (["show"], ["verify"], ["release", "a"], ["reclaim"], ["snapshot"], ["replay"]):
        res = subprocess.run([sys.executable, "-m", "scopeledger", "--ledger", str(path), *args],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 4 and "the log is missing, but" in res.stderr, (args, res)
    for kw in ({"readonly": True}, {"create": False}):
        with pytest.raises(CorruptLedger, match="the log is missing, but"):
            Ledger.open(path, **kw)
    with pytest.raises(CorruptLedger, match="the log is missing, but"):
        verify(path)
    with pytest.raises(UnsafeLedgerPath, match="inside the ledger"):  # still a ledger's directory
        Ledger.open(path / "sub")
    assert sorted(os.listdir(path)) == before
