"""The ledger id (``ledger-id``) that a directory's snapshots name: when it is
made, how a lost one is taken back, what a bad one says, and who warns.
The guard it serves (a snapshot of another ledger vouches for nothing) is
tested in test_repair.py ("a snapshot of another ledger")."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import CMD, W, clean_env, cli_as_nobody, ledger_cmd
from scopeledger import Ledger, verify


def _snap_name(seq: int) -> str:
    return f"snap-{seq:016d}.json"


def _id(path: Path) -> str:
    return (path / "ledger-id").read_text().strip()


def test_ledgers_copied_from_one_empty_template_do_not_share_an_id(tmp_path: Path) -> None:
    # A fresh tester's finding: 'ledger init T', then 'cp -a T mine', 'cp -a T other' (a
    # ledger set up once and copied: an image, a template). Both copies held T's id, so a
    # snapshot copied from one into the other was trusted: verify named line 1 altered and
    # a repair cut every genuine line. The id is made with the first snapshot now.
    template, mine, other = tmp_path / "t", tmp_path / "mine", tmp_path / "other"
    p = ledger_cmd(template, "init")
    assert p.returncode == 0, p.stderr
    for path in (mine, other):
        shutil.copytree(template, path, symlinks=True)
    with Ledger.open(mine) as led:
        for i in range(5):
            led.register(f"h{i}", [W(f"/h/{i}")])
    with Ledger.open(other) as led:
        for i in range(5):
            led.register(f"o{i}", [W(f"/o/{i}")])
        led.snapshot()
    name = _snap_name(5)
    shutil.copy2(other / "snapshots" / name, mine / "snapshots" / name)
    log = (mine / "events.jsonl").read_bytes()
    problems = verify(mine).problems
    assert [(p.file, p.line, p.seq) for p in problems] == [(str(mine / "snapshots" / name), None, 5)], problems
    assert problems[0].message.startswith(f"a snapshot of another ledger: its id {_id(other)}"), problems
    report = Ledger.open(mine, fold=False).repair()
    assert (report.kept_seq, report.lines_cut, report.snapshots) == (5, 0, (name,)), report
    assert (mine / "events.jsonl").read_bytes() == log
    with Ledger.open(mine) as led:
        assert [a.name for a in led.holders()] == [f"h{i}" for i in range(5)]
        led.snapshot()
    assert _id(mine) != _id(other)
    assert verify(mine).ok
    assert not (template / "ledger-id").exists()  # (an empty ledger has no id yet)


def _forged(mine: Path, other: Path, seq: int) -> Path:
    """The other ledger's snapshot at ``seq``, its hash and offsets made line
    ``seq`` of mine's log (its checksum too), put in mine's snapshots/."""
    name = _snap_name(seq)
    head, body = (other / "snapshots" / name).read_bytes().split(b"\n", 1)
    header, doc = json.loads(head), json.loads(body)
    lines = (mine / "events.jsonl").read_bytes().splitlines(keepends=True)
    doc["last_hash"] = header["last_hash"] = hashlib.blake2b(lines[seq - 1][:-1], digest_size=16).hexdigest()
    header["line_start"], header["offset"] = sum(map(len, lines[:seq - 1])), sum(map(len, lines[:seq]))
    body = json.dumps(doc, separators=(",", ":")).encode()
    header["checksum"] = hashlib.blake2b(body, digest_size=16).hexdigest()
    snap = mine / "snapshots" / name
    snap.write_bytes(json.dumps(header).encode() + b"\n" + body + b"\n")
    snap.chmod(0o600)
    return snap


def test_a_lost_id_is_not_taken_from_snapshots_that_name_two(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    # A fresh tester's finding: with ledger-id deleted, the newest snapshot matching the
    # log gave its id back; a forged one of another ledger (made to match line 5) won:
    # its holders were loaded as this ledger's and its id written for good, and the
    # ledger's own snapshot (seq 3) became "another ledger's".
    mine, other = tmp_path / "mine", tmp_path / "other"
    with Ledger.open(mine) as led:
        for i in range(5):
            led.register(f"h{i}", [W(f"/h/{i}")])
            if i == 2:
                led.snapshot()
    with Ledger.open(other) as led:
        for i in range(5):
            led.register(f"o{i}", [W(f"/o/{i}")])
        led.snapshot()
    own, theirs = _id(mine), _id(other)
    forged = _forged(mine, other, 5)
    (mine / "ledger-id").unlink()
    caplog.set_level(logging.WARNING, logger="scopeledger")
    with Ledger.open(mine, readonly=True) as led:
        assert [a.name for a in led.holders()] == [f"h{i}" for i in range(5)]
    said = [r.getMessage() for r in caplog.records if "name different ledgers" in r.getMessage()]
    assert said and str(forged) in said[0] and str(mine / "snapshots" / _snap_name(3)) in said[0], said
    assert not (mine / "ledger-id").exists()  # (read-only: nothing written)
    with Ledger.open(mine) as led:
        assert [a.name for a in led.holders()] == [f"h{i}" for i in range(5)]
        led.register("h5", [W("/h/5")])
        led.snapshot()  # (at seq 6: names the new id)
    assert _id(mine) not in (own, theirs)
    problems = verify(mine).problems
    assert sorted(p.seq for p in problems) == [3, 5], problems
    assert all(p.message.startswith("a snapshot of another ledger") for p in problems), problems
    # With one id among them, the lost file is taken back, as before.
    for name in (_snap_name(3), forged.name):
        (mine / "snapshots" / name).unlink()
    new = _id(mine)
    (mine / "ledger-id").unlink()
    assert verify(mine).ok
    with Ledger.open(mine) as led:
        led.register("h6", [W("/h/6")])
    assert _id(mine) == new


@pytest.mark.parametrize("bad", ["garbage", "empty", "upper", "directory"])
def test_a_bad_id_file_warns_and_says_how_to_fix_it(tmp_path: Path, bad: str) -> None:
    led = tmp_path / "led"
    with Ledger.open(led) as lib:
        lib.register("a", [W("/a")])
        lib.snapshot()
    good = _id(led)
    path = led / "ledger-id"
    path.unlink()
    if bad == "directory":
        path.mkdir()
    else:
        path.write_text({"garbage": "junk\n", "empty": "", "upper": good.upper() + "\n"}[bad])
        path.chmod(0o600)
    p = ledger_cmd(led, "show")
    assert p.returncode == 0, p.stderr
    assert f"{path}" in p.stderr and "remove it: the ledger takes its id back from its own snapshots, " \
                                      "or makes a new one" in p.stderr, p.stderr
    if bad == "directory":
        path.rmdir()
    else:
        path.unlink()
    p = ledger_cmd(led, "snapshot")
    assert p.returncode == 0 and "ledger-id" not in p.stderr, p.stderr
    assert _id(led) == good


def test_another_user_reading_a_readable_ledger_is_not_warned_about_the_id(tmp_path: Path) -> None:
    # ledger-id is 0600 while the owner may make the rest readable: a reader it let in
    # cannot read the id (its snapshots then vouch for no line in its reading), and was
    # warned of it on every command.
    if os.geteuid() != 0:
        pytest.skip("reading as another user (nobody) needs root")
    base = tempfile.mkdtemp(prefix="scopeledger-test-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        path = Path(base) / "ledger"
        with Ledger.open(path) as lib:
            lib.register("a", [W("/a")])
            lib.snapshot()
            lib.register("b", [W("/b")])
        for dirpath, dirnames, filenames in os.walk(path):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                if name != "ledger-id":
                    os.chmod(os.path.join(dirpath, name), 0o644)
        assert (path / "ledger-id").stat().st_mode & 0o777 == 0o600
        for args in (["show"], ["verify"]):
            code, out = cli_as_nobody(str(path), *args)
            assert code == 0, out
            assert "ledger-id" not in out, out
    finally:
        shutil.rmtree(base)


def test_a_long_lived_ledger_names_the_id_made_since_in_its_next_snapshot(tmp_path: Path) -> None:
    # A fresh tester's finding: a Ledger kept the id it read after ledger-id was deleted
    # and another process made a new one; its next snapshot named the old id, and its own
    # ledger then called it "another ledger's".
    path = tmp_path / "led"
    led = Ledger.open(path)
    try:
        led.register("a", [W("/a")])
        led.snapshot()
        old = _id(path)
        (path / "ledger-id").unlink()
        (path / "snapshots" / _snap_name(1)).unlink()  # (nothing to take the old id back from)
        p = subprocess.run([*CMD, "--ledger", str(path), "snapshot"], env=clean_env(), capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        new = _id(path)
        assert new != old
        led.register("b", [W("/b")])
        led.snapshot()
    finally:
        led.close()
    head = (path / "snapshots" / _snap_name(2)).read_bytes().split(b"\n", 1)[0]
    assert json.loads(head)["ledger"] == new
    report = verify(path)
    assert report.ok, report.problems
