"""Opening a ledger read-only: queries, time travel, replay and verify work
on a ledger this process may not (or must not) write, and nothing is created
or changed; every change is refused with ReadOnlyLedger."""

import os
import shutil
import stat
import subprocess
import sys

import pytest

from scopeledger import Ledger, NoLedger, ReadOnlyLedger, verify
from helpers import W


@pytest.fixture
def recorded(tmp_path):
    path = str(tmp_path / "l")
    with Ledger.open(path, snapshot_every=3) as led:
        led.register("a", [W("/a")])
        led.delegate("a", "b", [W("/a/b")])
        led.register("c", [W("/c")])
        led.release("c")
    return path


def _everything(path):
    """Names, modes and bytes of everything in the ledger directory."""
    out = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (stat.S_IMODE(st.st_mode),
                                             open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None)
    out["."] = stat.S_IMODE(os.stat(path).st_mode)
    return out


def test_queries_work_and_changes_are_refused_with_nothing_touched(recorded):
    os.unlink(os.path.join(recorded, "gate"))
    os.chmod(recorded, 0o750)  # readable by the group: a normal open tightens it
    before = _everything(recorded)
    with Ledger.open(recorded, readonly=True) as led:
        assert led.readonly
        assert sorted(h.name for h in led.holders()) == ["a", "b"]
        assert led.find_conflict([W("/a/b/x")]).chain == ("a", "b")
        assert sorted(led.state_at(3).holders) == ["a", "b", "c"]
        assert [e.type for e in led.events()] == ["registered", "delegated", "registered", "released"]
        assert led.verify().ok
        for change in (lambda: led.register("d", [W("/d")]),
                       lambda: led.delegate("a", "e", [W("/a/e")]),
                       lambda: led.release("b"),
                       lambda: led.reclaim_stale(probe=lambda ident: False),
                       lambda: led.snapshot()):
            with pytest.raises(ReadOnlyLedger, match="opened read-only") as info:
                change()
            assert info.value.path == recorded
    assert _everything(recorded) == before


def test_a_missing_ledger_is_no_ledger_and_is_not_created(tmp_path):
    with pytest.raises(NoLedger):
        Ledger.open(str(tmp_path / "missing"), readonly=True)
    assert not (tmp_path / "missing").exists()


def test_verify_creates_and_tightens_nothing(recorded):
    shutil.rmtree(os.path.join(recorded, "snapshots"))
    os.unlink(os.path.join(recorded, "gate"))
    os.chmod(os.path.join(recorded, "events.jsonl"), 0o640)
    before = _everything(recorded)
    assert verify(recorded).ok
    assert _everything(recorded) == before


def test_a_forked_child_of_a_read_only_ledger_reads_on(recorded):
    with Ledger.open(recorded, readonly=True) as led:
        led.holders()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                ok = sorted(h.name for h in led.holders()) == ["a", "b"]
                with pytest.raises(ReadOnlyLedger):
                    led.register("x", [W("/x")])
            except BaseException:
                os._exit(1)
            os._exit(0 if ok else 2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def read_only_mount(recorded, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "--bind", recorded, str(mnt)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount here: {exc}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True, capture_output=True)
        yield str(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


CMD = [sys.executable, "-m", "scopeledger"]


@pytest.mark.parametrize("args,says", [
    (["verify"], "ok: 4 events"),
    (["show"], "2 holder(s)"),
    (["replay"], "released"),
    (["who", "/a/b"], "'b'"),
    (["check", "--write", "/z"], "granted"),
    (["history", "a"], "delegated"),
    (["diff", "2", "4"], "c"),
    (["reclaim", "--dry-run"], ""),
])
def test_commands_that_only_look_work_on_a_read_only_mount(read_only_mount, args, says):
    p = subprocess.run([*CMD, "--ledger", read_only_mount, *args], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert says in p.stdout
    assert p.stderr == ""


def test_a_change_on_a_read_only_mount_is_an_os_error_naming_the_file(read_only_mount):
    p = subprocess.run([*CMD, "--ledger", read_only_mount, "release", "b"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 7
    full = os.path.join(read_only_mount, "events.jsonl")  # not just the bare name
    assert p.stderr.strip() == (f"error: cannot write to the ledger: {full} is on a read-only file "
                                "system (the commands that only look, and Ledger.open(readonly=True), "
                                "still read it)")


def test_a_write_protected_ledger_is_read_but_never_made_writable(recorded):
    # A fresh tester's find: 'chmod -R a-w' was undone ("tightening" 0500 to
    # 0700) by the next change, which then succeeded.
    for root, _dirs, files in os.walk(recorded):
        for n in files:
            os.chmod(os.path.join(root, n), 0o400)
        os.chmod(root, 0o500)
    before = _everything(recorded)
    try:
        with pytest.raises(ReadOnlyLedger, match=r"mode 0500, write-protected"):
            Ledger.open(recorded)
        with Ledger.open(recorded, readonly=True) as led:
            assert sorted(h.name for h in led.holders()) == ["a", "b"]
        assert verify(recorded).ok
        p = subprocess.run([*CMD, "--ledger", recorded, "release", "b"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 7 and "write-protected" in p.stderr
        assert _everything(recorded) == before
        os.chmod(recorded, 0o700)  # the directories writable again, the log not
        with pytest.raises(ReadOnlyLedger, match=r"snapshots is mode 0500"):
            Ledger.open(recorded)
        os.chmod(os.path.join(recorded, "snapshots"), 0o700)
        with pytest.raises(ReadOnlyLedger, match=r"events.jsonl is mode 0400"):
            Ledger.open(recorded)
    finally:
        for root, _dirs, files in os.walk(recorded):
            os.chmod(root, 0o700)
            for n in files:
                os.chmod(os.path.join(root, n), 0o600)


def test_modes_tighter_than_the_default_are_left_alone(recorded):
    snap = os.path.join(recorded, "snapshots", sorted(os.listdir(os.path.join(recorded, "snapshots")))[-1])
    os.chmod(snap, 0o400)  # read-only: all a snapshot needs, once written
    with Ledger.open(recorded) as led:
        led.register("x", [W("/x")])
    assert stat.S_IMODE(os.stat(snap).st_mode) == 0o400
    os.chmod(os.path.join(recorded, "events.jsonl"), 0o644)  # too open: only the extra bits go
    with Ledger.open(recorded):
        pass
    assert stat.S_IMODE(os.stat(os.path.join(recorded, "events.jsonl")).st_mode) == 0o600


@pytest.mark.parametrize("call,error", [
    (lambda p: Ledger.open(p.encode()), TypeError),
    (lambda p: Ledger.open(p, readonly="no"), TypeError),
    (lambda p: verify(p, workers="2"), TypeError),
    (lambda p: verify(p, workers=0), ValueError),
    (lambda p: verify(p.encode()), TypeError),
])
def test_wrong_types_are_clear_errors(recorded, call, error):
    with pytest.raises(error, match="path must be|readonly must be|workers must be"):
        call(recorded)


def _counting_segment(args):
    from scopeledger import _history

    with open(os.environ["SEGMENTS_SEEN"], "a") as f:
        f.write("segment\n")
    return _history._real_verify_segment(args)


def test_parallel_verify_workers_change_nothing_either(tmp_path, monkeypatch):
    # verify's forked workers opened the ledger for writing (tightening
    # modes, making gate); they read it only, as verify() itself does.
    from scopeledger import _history

    path = str(tmp_path / "l")
    with Ledger.open(path, snapshot_every=5) as led:
        for i in range(20):  # a small live set: a snapshot every 5 events
            led.register(f"h{i}", [W(f"/h/{i}")])
            led.release(f"h{i}")
    os.unlink(os.path.join(path, "gate"))
    os.chmod(path, 0o750)  # a normal open would tighten these
    os.chmod(os.path.join(path, "events.jsonl"), 0o640)
    before = _everything(path)
    seen = tmp_path / "segments"
    monkeypatch.setenv("SEGMENTS_SEEN", str(seen))
    monkeypatch.setattr(_history, "_real_verify_segment", _history._verify_segment, raising=False)
    monkeypatch.setattr(_history, "_verify_segment", _counting_segment)
    report = verify(path, workers=2)
    assert report.ok and report.events == 40
    assert seen.read_text().count("segment") >= 2  # it did run in segments
    assert _everything(path) == before


def test_a_log_its_owner_may_not_even_read_is_not_called_readable(recorded):
    # A fresh tester's find: mode 0000 was reported as "write-protected (the
    # commands that only look still read it)", and then they could not.
    log = os.path.join(recorded, "events.jsonl")
    before = _everything(recorded)
    os.chmod(log, 0o000)
    try:
        with pytest.raises(ReadOnlyLedger, match=r"mode 0000: its owner may neither write nor read it"):
            Ledger.open(recorded)
    finally:
        os.chmod(log, 0o600)
    assert _everything(recorded) == before
