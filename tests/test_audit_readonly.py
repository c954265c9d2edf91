"""Auditing another user's ledger, read-only (issue 17): root (or a reader
the owner let in) reads a ledger whose every file belongs to the ledger
directory's owner; a writable opening is still refused, a ledger of mixed
owners or with a group/other-writable file is refused even read-only, and
nothing is changed by looking."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import jl, ledger_cmd, one_error_line
from scopeledger import Ledger, ScopeRule, UnsafeLedgerPath

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")

OTHER = 65534  # nobody


def _ledger_of_another_user(root: Path) -> Path:
    path = root / "theirs"
    with Ledger.open(str(path)) as led:
        led.register("a", [ScopeRule(str(root / "a"), "write")])
        led.snapshot()
        led.register("b", [ScopeRule(str(root / "b"), "read")])
        led.release("a", token=led.holder("a").token)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames, "."]:
            os.chown(os.path.join(dirpath, name), OTHER, OTHER)
    return path


def _tree(path: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Every file and directory below ``path``: owner, group, mode, bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames, "."]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = Path(p).read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(p, path)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), data)
    return out


def test_root_reads_another_users_ledger_and_changes_nothing(tmp_path: Path) -> None:
    path = _ledger_of_another_user(tmp_path)
    before = _tree(path)
    with Ledger.open(str(path), readonly=True) as led:
        assert [a.name for a in led.holders()] == ["b"]
        assert [e.type for e in led.events()] == ["registered", "registered", "released"]
        assert led.verify().ok
    for args in (["show", "--json"], ["replay", "--json"], ["verify"], ["who", str(tmp_path / "b")]):
        r = ledger_cmd(path, *args)
        assert r.returncode == 0, (args, r.stderr)
    assert [d["seq"] for d in jl(ledger_cmd(path, "replay", "--json").stdout)] == [1, 2, 3]
    assert _tree(path) == before


def test_writing_to_another_users_ledger_is_still_refused(tmp_path: Path) -> None:
    path = _ledger_of_another_user(tmp_path)
    before = _tree(path)
    with pytest.raises(UnsafeLedgerPath, match=f"owned by uid {OTHER}, not by this user"):
        Ledger.open(str(path))
    r = ledger_cmd(path, "release", "b", "--token", "1")
    assert r.returncode == 5 and f"owned by uid {OTHER}, not by this user" in one_error_line(r.stderr)
    assert _tree(path) == before


@pytest.mark.parametrize("name", ["events.jsonl", "snapshots"])
def test_a_file_of_someone_else_in_their_ledger_is_refused_even_read_only(tmp_path: Path, name: str) -> None:
    path = _ledger_of_another_user(tmp_path)
    assert (path / name).exists(), sorted(os.listdir(path / "snapshots"))
    os.chown(path / name, OTHER + 1, OTHER + 1)
    before = _tree(path)
    with pytest.raises(UnsafeLedgerPath, match=f"{name}: owned by uid {OTHER + 1}, not by the ledger "
                                               f"directory's owner \\(uid {OTHER}\\)"):
        Ledger.open(str(path), readonly=True).holders()
    assert _tree(path) == before


def test_a_group_writable_file_in_their_ledger_is_refused_even_read_only(tmp_path: Path) -> None:
    path = _ledger_of_another_user(tmp_path)
    os.chmod(path / "events.jsonl", 0o620)
    with pytest.raises(UnsafeLedgerPath, match="writable by group or others"):
        Ledger.open(str(path), readonly=True)


def test_a_snapshot_of_someone_else_is_skipped_as_any_unsafe_snapshot(tmp_path: Path, caplog) -> None:
    """As when opened by its owner: a snapshot that cannot be trusted is
    passed over with a warning, and the state is folded from the log."""
    path = _ledger_of_another_user(tmp_path)
    (snap,) = (path / "snapshots").iterdir()
    os.chown(snap, OTHER + 1, OTHER + 1)
    before = _tree(path)
    with Ledger.open(str(path), readonly=True) as led:
        assert [a.name for a in led.holders()] == ["b"]
    assert (f"skipping snapshot: {snap}: cannot read: owned by uid {OTHER + 1}, not by the ledger "
            f"directory's owner (uid {OTHER})") in caplog.text
    assert _tree(path) == before
