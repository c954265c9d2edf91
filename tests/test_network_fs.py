"""A ledger on a file system where flock may not exclude other hosts (issue
13 item 2): refused for writing, naming the type and what to use instead,
unless the caller opts in (recorded in every line it writes); reading needs
no opt-in. With a real FUSE mount (bindfs; ``.ci/run`` installs it)."""

import os
import shutil
import subprocess
import sys

import orjson
import pytest

from scopeledger import Ledger, ScopeRule, UnsafeLedgerPath, verify
from scopeledger._store import fs_type_of, is_network_fs


@pytest.mark.parametrize("fs, network", [
    ("nfs", True), ("nfs4", True), ("cifs", True), ("smb3", True), ("9p", True), ("virtiofs", True),
    ("ceph", True), ("glusterfs", True), ("lustre", True), ("fuse", True), ("fuseblk", True),
    ("fuse.sshfs", True), ("fuse.ceph-fuse", True), ("vboxsf", True),
    ("ext4", False), ("xfs", False), ("btrfs", False), ("tmpfs", False), ("overlay", False),
    ("zfs", False), ("f2fs", False), ("vfat", False),
])
def test_file_systems_are_classed_by_type(fs, network):
    assert is_network_fs(fs) is network


def test_the_type_is_read_for_a_path_not_made_yet(tmp_path):
    here = fs_type_of(str(tmp_path))
    assert here is not None and fs_type_of(str(tmp_path / "a" / "b" / "L")) == here


@pytest.fixture
def fuse_dir(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting bindfs here needs root")
    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is missing (Debian: apt-get install bindfs)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    src, mnt = tmp_path / "src", tmp_path / "fuse"
    src.mkdir()
    mnt.mkdir()
    p = subprocess.run(["bindfs", str(src), str(mnt)], capture_output=True, text=True, timeout=60)
    if p.returncode:
        pytest.skip(f"cannot mount bindfs here: {p.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_ledger_on_fuse_is_refused_for_writing_unless_allowed_and_the_log_says_so(fuse_dir):
    path = os.path.join(fuse_dir, "L")
    assert fs_type_of(path) == "fuse"
    with pytest.raises(UnsafeLedgerPath, match="it is on a fuse file system, where flock.2. may not "
                                               "exclude writers on other hosts") as info:
        Ledger.open(path)
    assert "the PostgreSQL backend" in str(info.value) and "allow_network_fs=True" in str(info.value)
    assert not os.path.exists(path)  # nothing made
    with Ledger.open(path, allow_network_fs=True) as led:
        led.register("a", [ScopeRule("/r/a", "write")])
        led.release("a")
    lines = [orjson.loads(x) for x in open(os.path.join(path, "events.jsonl"), "rb").read().splitlines()]
    assert [e["network_fs"] for e in lines] == ["fuse", "fuse"]
    with pytest.raises(UnsafeLedgerPath):  # an existing ledger too
        Ledger.open(path)
    with Ledger.open(path, readonly=True) as led:  # reading needs no opt-in
        assert [e.type for e in led.events()] == ["registered", "released"]
        assert led.verify().ok
    assert verify(path).ok


def test_the_command_line_refuses_and_allows_alike(fuse_dir):
    path = os.path.join(fuse_dir, "L")
    cmd = [sys.executable, "-m", "scopeledger", "--ledger", path]
    with Ledger.open(path, allow_network_fs=True) as led:
        led.register("a", [ScopeRule("/r/a", "write")])
    p = subprocess.run([*cmd, "release", "a"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 5 and "it is on a fuse file system" in p.stderr and "--allow-network-fs" in p.stderr
    p = subprocess.run([*cmd, "show"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "scopeledger", "--allow-network-fs", "--ledger", path,
                        "release", "a"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
