"""The identity of a path (scopeledger._paths): the mount table as
/proc/self/mountinfo gives it, resolution through stacked mounts, keys,
case folding, and rules granted before identities were recorded.

Real mounts are in tests/test_mounts.py; here the table is given as text,
and which directories fold case is given as a dict, so that each policy is
pinned down on this machine too (whose kernel may not mount a case-folding
filesystem at all)."""

from __future__ import annotations

import os

import orjson
import pytest

from scopeledger import CorruptLedger, InvalidScope, Ledger, ScopeConflict, ScopeRule, verify
from scopeledger import _paths
from scopeledger._paths import MountTable, fold_name, identify, parse_mountinfo
from torture_support import as_v1_event

# id parent dev root point opts [optional] - type source superopts
MOUNTINFO = b"""\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 0:5 / /proc rw - proc proc rw
3 1 8:1 /srv/pods/p1 /work rw shared:1 - ext4 /dev/sda1 rw
4 1 0:40 / /mnt/with\\040space rw - tmpfs none rw
5 4 0:41 / /mnt/with\\040space rw - tmpfs none rw
6 1 0:42 / /hidden/under rw - tmpfs none rw
7 1 0:43 / /hidden rw - tmpfs none rw
8 3 0:44 / /work/cache rw - tmpfs none rw
9 1 7:0 / /m rw - ext4 /dev/loop0 rw
10 1 7:0 /ci/Proj /b rw - ext4 /dev/loop0 rw
11 1 7:1 / /usb rw - vfat /dev/loop1 rw,utf8
"""


def table() -> MountTable:
    return MountTable(parse_mountinfo(MOUNTINFO))


def test_mountinfo_fields_and_escapes():
    mounts = parse_mountinfo(MOUNTINFO + b"garbage line\n\n"
                             + b"12 1 0:4 net:[4026531840] /run/netns/x rw - nsfs nsfs rw\n"
                             + b"13 1 8:1 /gone//deleted /mnt/gone rw - ext4 /dev/sda1 rw\n")
    assert len(mounts) == 13
    assert (mounts[11].root, mounts[12].root) == ("/net:[4026531840]", "/gone")  # keys are plain paths
    m = mounts[2]
    assert (m.id, m.parent, m.dev, m.root, m.point, m.fstype) == (3, 1, "8:1", "/srv/pods/p1", "/work", "ext4")
    assert mounts[3].point == "/mnt/with space"  # \040


@pytest.mark.parametrize("path, dev", [
    ("/", "8:1"), ("/etc/x", "8:1"), ("/proc/1", "0:5"), ("/procx", "8:1"),
    ("/work/src", "8:1"), ("/work/cache/x", "0:44"),
    ("/mnt/with space/x", "0:41"),  # the mount on top of a stack
    ("/hidden/under/x", "0:43"),  # a mount hidden under a later one is not taken
])
def test_the_mount_a_path_lies_in_is_the_one_path_resolution_finds(path, dev):
    assert table().containing(path).dev == dev


def test_keys_are_the_device_and_the_path_within_the_filesystem():
    t = table()
    assert identify("/", False, table=t) == ("8:1", (), ())
    assert identify("/etc/x", False, table=t) == ("8:1/etc/x", (), ())
    # A bind mount: the directory it shows, where it lives.
    assert identify("/work/src", False, table=t) == ("8:1/srv/pods/p1/src", ("8:1/work/src",), ())
    assert identify("/srv/pods/p1/src", False, table=t)[0] == "8:1/srv/pods/p1/src"
    # A filesystem mounted on another: its own key, then the same path in
    # each filesystem it is mounted on, nearest first.
    assert identify("/work/cache/x", False, table=t) == (
        "0:44/x", ("8:1/srv/pods/p1/cache/x", "8:1/work/cache/x"), ())


def test_a_recursive_rule_keeps_the_roots_of_the_filesystems_below_it():
    t = table()
    key, via, below = identify("/work", True, table=t)
    assert (key, below) == ("8:1/srv/pods/p1", ("0:44",))
    assert identify("/work", False, table=t)[2] == ()  # a non-recursive one covers no filesystem below
    assert set(identify("/mnt", True, table=t)[2]) == {"0:41"}  # not the one hidden under it
    assert set(identify("/hidden", True, table=t)[2]) == set()


# -- case folding (issue 13 item 7) ------------------------------------------------------


@pytest.fixture
def folding(monkeypatch):
    """ext4 directories may fold case on this pretend kernel; ``flags`` says
    which directories of the table's paths do (absent: not a directory)."""
    monkeypatch.setitem(_paths._casefold_kernel, "ext4", True)
    flags: dict[str, bool] = {}

    def folds(path):
        if path in flags:
            if flags[path] is None:
                raise PermissionError(13, "Permission denied")
            return flags[path]
        return None

    monkeypatch.setattr(_paths, "_folds", folds)
    return flags


def test_names_fold_where_their_directory_folds(folding):
    folding.update({"/m": False, "/m/ci": True, "/m/ci/Proj": True, "/m/cs": False, "/m/cs/Proj": False})
    t = table()
    key = identify("/m/ci/Proj", True, table=t)[0]
    assert key == "7:0/ci/proj"  # 'ci' is in /m, which does not fold: kept
    assert identify("/m/ci/PROJ/new/x", True, table=t)[0] == "7:0/ci/proj/new/x"  # missing: folds as /m/ci/Proj
    assert identify("/m/cs/Proj", True, table=t)[0] == "7:0/cs/Proj"
    assert identify("/m/cs/PROJ", True, table=t)[0] == "7:0/cs/PROJ"  # another directory
    # Unicode: one name in NFC and NFD, and a case pair outside ASCII.
    assert identify("/m/ci/Proj/caf\u00e9", False, table=t)[0] == identify("/m/ci/Proj/CAFE\u0301", False, table=t)[0]
    assert fold_name("STRASSE") == fold_name("stra\u00dfe")


def test_a_bind_mount_of_a_folding_directory_folds_the_names_above_it_as_the_whole_filesystem_does(folding):
    folding.update({"/m": False, "/m/ci": True, "/m/ci/Proj": True, "/b": True})
    t = table()
    assert identify("/b/X", False, table=t)[0] == identify("/m/ci/PROJ/x", False, table=t)[0] == "7:0/ci/proj/x"


def test_a_folding_directory_whose_parents_cannot_be_seen_is_refused(folding):
    folding.update({"/b": True})
    t = MountTable([m for m in parse_mountinfo(MOUNTINFO) if m.point != "/m"])  # no whole filesystem here
    with pytest.raises(InvalidScope, match=r"/ci/Proj.*folds case.*cannot be read in this mount namespace"):
        identify("/b/x", False, table=t)


def test_a_directory_whose_flags_cannot_be_read_is_refused(folding):
    folding.update({"/m/ci": None})
    with pytest.raises(InvalidScope, match=r"cannot tell whether '/m/ci' folds case.*Permission denied"):
        identify("/m/ci/x", False, table=table())


def test_a_whole_filesystem_that_folds_folds_every_name():
    t = table()
    assert identify("/usb/Docs/ReadMe.TXT", False, table=t)[0] == "7:1/docs/readme.txt"


def test_without_resolution_no_directory_is_read(folding):
    folding.update({"/m/ci": True})
    assert identify("/m/ci/Proj", False, resolve=False, table=table())[0] == "7:0/ci/Proj"


# -- the log: identities stored, checked, and rules from before them --------------------


def test_a_grant_records_the_path_given_and_where_it_lives(tmp_path):
    led = Ledger.open(str(tmp_path / "l"))
    a = led.register("a", [ScopeRule(str(tmp_path / "src"), "write")])
    line = orjson.loads(open(tmp_path / "l" / "events.jsonl", "rb").read().splitlines()[-1])
    rule = line["holder"]["rules"][0]
    assert rule[:3] == [str(tmp_path / "src"), "write", True]
    assert rule[3] == {"fs": a.rules[0].key}
    assert a.rules[0].key.split("/", 1)[1] == str(tmp_path / "src").lstrip("/")  # no mount between


@pytest.mark.parametrize("identity, why", [
    ({"fs": "254:0/a", "colour": 1}, "unknown key 'colour' in a rule's identity"),
    ({"via": ["1:2"]}, "identity fs None is not a key"),
    ({"fs": "254:0/a/../b"}, "is not a key"),
    ({"fs": "254:0/a", "below": []}, "below .* is not a non-empty list"),
    ({"fs": "254:0/a", "via": ["/a"]}, "via item '/a' is not a key"),
])
def test_a_bad_identity_in_the_log_is_corruption(tmp_path, identity, why):
    d = str(tmp_path / "l")
    Ledger.open(d).register("a", [ScopeRule("/a", "write")])
    log = os.path.join(d, "events.jsonl")
    ev = orjson.loads(open(log, "rb").read().splitlines()[0])
    ev["holder"]["rules"][0][3] = identity
    open(log, "wb").write(orjson.dumps(ev) + b"\n")
    with pytest.raises(CorruptLedger, match=why):
        Ledger.open(d)
    assert not verify(d).ok


def test_a_rule_granted_before_identities_is_compared_by_path(tmp_path):
    # A v1 line (the previous version's) holds /x/held by path; a new
    # request for what lies below it conflicts, one beside it does not.
    d = str(tmp_path / "l")
    Ledger.open(d).register("old", [ScopeRule(str(tmp_path / "held"), "write")], pid=os.getpid())
    log = os.path.join(d, "events.jsonl")
    ev = as_v1_event(orjson.loads(open(log, "rb").read().splitlines()[0]))
    open(log, "wb").write(orjson.dumps(ev) + b"\n")
    led = Ledger.open(d, probe=lambda ident: True)  # (the v1 identity made up here is not this process's)
    assert led.holders()[0].rules[0].key is None
    with pytest.raises(ScopeConflict, match="holder 'old'"):
        led.register("new", [ScopeRule(str(tmp_path / "held" / "sub"), "write")])
    led.register("beside", [ScopeRule(str(tmp_path / "other"), "write")])
    assert [h.name for h in led.who(str(tmp_path / "held" / "x"))] == ["old"]
    assert verify(d).ok


def test_a_v1_line_with_an_identity_is_corruption(tmp_path):
    d = str(tmp_path / "l")
    Ledger.open(d).register("a", [ScopeRule("/a", "write")])
    log = os.path.join(d, "events.jsonl")
    v2 = orjson.loads(open(log, "rb").read().splitlines()[0])
    ev = as_v1_event(v2)
    ev["holder"]["rules"] = v2["holder"]["rules"]  # with their identity
    open(log, "wb").write(orjson.dumps(ev) + b"\n")
    with pytest.raises(CorruptLedger, match=r"holder.rules\[0\].*a v1 line"):
        Ledger.open(d)


def _rule(path, rec, t):
    return ScopeRule(path, "write", rec).identified(path, _paths.identity(path, rec, table=t))


def test_a_mount_point_is_a_direct_child_of_a_non_recursive_rule_but_its_filesystem_is_not():
    # /work/* covers the name cache (a rule on /work/cache meets it, through
    # where that filesystem is mounted), not what is below it, as by path.
    from scopeledger import overlaps
    t = table()
    parent = _rule("/work", False, t)
    assert overlaps(parent, _rule("/work/cache", True, t))
    assert overlaps(parent, _rule("/work/cache", False, t))
    assert not overlaps(parent, _rule("/work/cache/x", False, t))
    assert overlaps(_rule("/work", True, t), _rule("/work/cache/x", False, t))
    # Two pods' mount points (via) never meet: only what they show does.
    other = MountTable([m for m in parse_mountinfo(MOUNTINFO.replace(b"/srv/pods/p1 /work", b"/srv/pods/p2 /work"))
                        if m.point != "/work/cache"])
    assert not overlaps(_rule("/work", True, t), _rule("/work", True, other))
    assert overlaps(_rule("/srv/pods/p2/x", True, t), _rule("/work", True, other))


def test_people_are_shown_where_a_path_lives_when_it_is_not_the_path():
    from scopeledger.cli.render import rule_text
    t = table()
    assert rule_text(_rule("/work/src", True, t)) == "write /work/src/** [8:1:/srv/pods/p1/src]"
    assert rule_text(_rule("/etc", False, t)) == "write /etc/*"
    assert str(_rule("/proc/x", True, t)) == "write /proc/x/** [0:5:/x]"


@pytest.mark.parametrize("fstype, fold", [
    ("xfs", 0), ("btrfs", 0), ("overlay", 0), ("vfat", 1), ("exfat", 1),
    # No rule for the type: the filesystem is asked when a key needs it.
    ("fuseblk", 3), ("fuse", 3), ("fuse.sshfs", 3), ("nfs4", 3), ("cifs", 3), ("9p", 3),
    ("virtiofs", 3), ("zfs", 3), ("ntfs3", 3), ("a-type-from-the-future", 3),
])
def test_a_filesystem_type_without_a_rule_is_never_trusted_to_keep_case(fstype, fold):
    m = parse_mountinfo(b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                        + f"2 1 0:50 / /x rw - {fstype} src rw\n".encode())[1]
    assert m.fold == fold
