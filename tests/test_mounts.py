"""One identity for a path, whatever the mounts (issue 13 items 6, 7; issue 19).

Real mounts, each scenario in a mount namespace of its own (``unshare
--mount --propagation private``), so that nothing is left mounted on the
host whatever happens: bind mounts (one directory under two paths), two
namespaces with their own directory at one path, tmpfs and overlay below a
held rule, and case-insensitive filesystems (ext4 casefold, vfat, exfat) on
loop images where this machine can mount them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import scopeledger

from helpers import CMD, clean_env

PY = sys.executable


def _can_unshare_mounts() -> str | None:
    if os.geteuid() != 0:
        return "mount namespaces and mounts need root"
    if not shutil.which("unshare") or not shutil.which("mount"):
        return "unshare(1) or mount(8) is not installed"
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs none /mnt"], capture_output=True, text=True)
    if p.returncode != 0:
        return f"cannot mount in a new mount namespace here: {p.stderr.strip()}"
    return None


_WHY_NOT = _can_unshare_mounts()
needs_mounts = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")

# Run before each scenario's own code: the library, and helpers to report.
PRELUDE = textwrap.dedent("""
    import json, os, subprocess, sys
    from scopeledger import Ledger, ScopeRule, ScopeConflict, parse_rule
    def out(**kw):
        print(json.dumps(kw), flush=True)
    def sh(*cmd):
        subprocess.run(cmd, check=True, capture_output=True)
    def W(p, rec=True):
        return ScopeRule(p, "write", rec)
    def conflict(led, name, rules):
        try:
            led.register(name, rules)
        except ScopeConflict as exc:
            return str(exc)
        led.release(name)
        return None
""")


@pytest.fixture
def loop_devices():
    """The machine's loop devices for this test alone (:func:`fs_support.one_loop_user`)."""
    from fs_support import one_loop_user

    with one_loop_user():
        yield


def in_namespace(setup: str, code: str, *, stdin: bool = False, timeout: float = 60) -> "subprocess.Popen[str] | dict":
    """Run ``setup`` (shell) and then ``code`` (Python, after PRELUDE) in a
    private mount namespace of their own. Returns the last JSON line the
    code printed, or with ``stdin`` the running process (its stdin and
    stdout are pipes)."""
    script = PRELUDE + textwrap.dedent(code)
    args = ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
            f'{setup}\nexec "$0" -c "$1"', PY, script]
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if stdin:
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def _line(proc: "subprocess.Popen[str]") -> dict:
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr.read()}")
    return json.loads(line)


# -- bind mounts: one directory under two paths (issue 13 item 6) --------------------


@needs_mounts
def test_a_bind_mount_of_a_held_directory_is_the_held_directory(tmp_path):
    # A holds T/dirA; after mount --bind T/dirA T/bindA, B was granted
    # T/bindA/sub: two writers of one directory.
    t, led = tmp_path / "t", tmp_path / "led"
    (t / "dirA" / "sub").mkdir(parents=True)
    (t / "bindA").mkdir()
    got = in_namespace(f"mount --bind {t}/dirA {t}/bindA", f"""
        led = Ledger.open({str(led)!r})
        led.register("A", [W("{t}/dirA")])
        def cli(*args):  # the command line, while A is held
            p = subprocess.run([*{CMD!r}, "--ledger", {str(led)!r}, "--json", *args],
                               capture_output=True, text=True)
            return dict(code=p.returncode, answer=json.loads(p.stdout))
        out(sub=conflict(led, "B", [W("{t}/bindA/sub")]),
            whole=conflict(led, "C", [W("{t}/bindA")]),
            parent=conflict(led, "D", [W("{t}")]),
            beside=conflict(led, "E", [W("{t}/other")]),
            check=cli("check", "--top-level", "--write", "{t}/bindA/sub/x"),
            who=cli("who", "{t}/bindA/sub"))
    """)
    assert got["sub"] is not None and "holder 'A'" in got["sub"], got
    assert f"[{_dev_of(t)}:" in got["sub"]  # says where the path it asked for lives
    assert got["whole"] is not None and got["parent"] is not None
    assert got["beside"] is None
    # The command line decides the same: check refuses, who names A.
    check = got["check"]
    assert check["code"] == 1 and check["answer"]["granted"] is False, check
    assert check["answer"]["conflict"]["owner"] == "A"
    assert [h["name"] for h in got["who"]["answer"]["holders"]] == ["A"], got["who"]


@needs_mounts
def test_a_held_bind_mount_is_found_from_the_directory_it_shows(tmp_path):
    t, led = tmp_path / "t", tmp_path / "led"
    (t / "dirA").mkdir(parents=True)
    (t / "bindA").mkdir()
    got = in_namespace(f"mount --bind {t}/dirA {t}/bindA", f"""
        led = Ledger.open({str(led)!r})
        led.register("A", [W("{t}/bindA/sub", rec=False)])
        out(direct=conflict(led, "B", [W("{t}/dirA/sub/file")]),
            deeper=conflict(led, "C", [W("{t}/dirA/sub/x/y", rec=False)]))
    """)
    assert got["direct"] is not None and "holder 'A'" in got["direct"], got
    assert got["deeper"] is None  # a non-recursive rule: direct children only, as everywhere


# -- mount namespaces: pods (issue 19) -------------------------------------------------


@needs_mounts
def test_pods_each_writing_their_own_work_do_not_conflict(tmp_path):
    # Two pods, each in its own mount namespace with its own directory at one
    # path (the runtimes this library serves): two directories, no conflict.
    work, led = tmp_path / "work", tmp_path / "led"
    for d in ("pod1", "pod2", "work"):
        (tmp_path / d).mkdir()
    code = f"""
        led = Ledger.open({str(led)!r})
        try:
            a = led.register(sys.argv[1], [W("{work}")])
            out(granted=True, rules=[r.to_json() for r in a.rules])
        except ScopeConflict as exc:
            out(granted=False, why=str(exc))
        sys.stdin.readline()
    """
    pods = []
    try:
        for pod in ("pod1", "pod2"):
            p = in_namespace(f"mount --bind {tmp_path}/{pod} {work}", code.replace("sys.argv[1]", repr(pod)),
                             stdin=True)
            pods.append(p)
            got = _line(p)
            assert got["granted"], got  # the second pod was refused before: a false conflict
    finally:
        for p in pods:
            p.communicate("\n", timeout=30)
    # Each grant recorded the path its pod gave and where it lives.
    with open(led / "events.jsonl") as f:
        grants = [json.loads(line) for line in f if '"registered"' in line]
    assert [g["holder"]["rules"][0][0] for g in grants] == [str(work)] * 2
    fs = [g["holder"]["rules"][0][3]["fs"] for g in grants]
    assert fs[0].endswith(f"{tmp_path}/pod1") and fs[1].endswith(f"{tmp_path}/pod2"), fs


@needs_mounts
def test_one_directory_at_two_paths_in_two_namespaces_conflicts(tmp_path):
    led = tmp_path / "led"
    for d in ("shared", "p1", "p2"):
        (tmp_path / d).mkdir()
    holder = in_namespace(f"mount --bind {tmp_path}/shared {tmp_path}/p1", f"""
        led = Ledger.open({str(led)!r})
        led.register("pod1", [W("{tmp_path}/p1")])
        out(held=True)
        sys.stdin.readline()
    """, stdin=True)
    try:
        assert _line(holder)["held"]
        got = in_namespace(f"mount --bind {tmp_path}/shared {tmp_path}/p2", f"""
            led = Ledger.open({str(led)!r})
            out(sub=conflict(led, "pod2", [W("{tmp_path}/p2/src")]))
        """)
        assert got["sub"] is not None and "holder 'pod1'" in got["sub"], got
        # And from the host, which sees the directory at its own path.
        host = in_namespace("true", f"""
            led = Ledger.open({str(led)!r})
            out(direct=conflict(led, "host", [W("{tmp_path}/shared/x")]))
        """)
        assert host["direct"] is not None and "holder 'pod1'" in host["direct"], host
    finally:
        holder.communicate("\n", timeout=30)


@needs_mounts
def test_a_path_through_proc_into_another_mount_namespace_is_refused_never_misidentified(tmp_path):
    """From the host, a pod's files are reached through /proc/POD/root,
    /proc/POD/cwd or /proc/POD/fd/N. The kernel's text for what they lead
    to is the path in the pod's mount namespace, which here names another
    directory (the pod's root is a tmpfs of its own, as runtimes make one):
    such a path is refused (library, resolve_symlinks=False, command line),
    never identified by this namespace's mount table; one that leads to a
    file this namespace sees at that path is identified as that file."""
    t, led = tmp_path / "t", tmp_path / "led"
    (t / "podroot").mkdir(parents=True)
    (t / "shared").mkdir()
    led.mkdir()
    r = t / "podroot"
    pod = in_namespace(f"mount -t tmpfs pod {r}; mkdir -p {r}/work {r}/proc {r}{led}; "
                       f"mount --bind {led} {r}{led}; mount -t proc proc {r}/proc", f"""
        import importlib, pkgutil, scopeledger
        for m in pkgutil.iter_modules(scopeledger.__path__):  # the library's modules, before the chroot
            if not m.name.startswith("_") or m.name == "__main__":
                continue
            try:
                importlib.import_module("scopeledger." + m.name)
            except ImportError:
                pass
        scopeledger._process.identify()  # machine id and boot id read before the chroot
        os.chroot({str(r)!r})
        os.chdir("/work")
        led = Ledger.open({str(led)!r})
        a = led.register("pod", [W("/work")])
        fd = os.open("/work", os.O_RDONLY | os.O_DIRECTORY)
        out(pid=os.getpid(), fd=fd, key=a.rules[0].to_json())
        sys.stdin.readline()
    """, stdin=True)
    try:
        got = _line(pod)
        pid = got["pid"]
        root = f"/proc/{pid}/root"
        from scopeledger import InvalidScope, Ledger, ScopeConflict, ScopeRule

        assert os.listdir(f"{root}/work") == [] and not os.path.exists(f"{r}/work")
        with Ledger.open(led) as ledger, Ledger.open(led, resolve_symlinks=False) as literal:
            for path in (f"{root}/work/x", f"{root}/work", f"/proc/{pid}/cwd/x", f"/proc/{pid}/fd/{got['fd']}/x",
                         f"{root}/work/../work/x"):
                for lg in (ledger, literal):
                    with pytest.raises(InvalidScope, match="cannot identify") as e:
                        lg.register("host", [ScopeRule(path, "write", True)])
                    assert f"/proc/{pid}/" in str(e.value), e.value
            # Through /proc into this namespace (this process's root, /proc/self): that file.
            ledger.register("sharer", [ScopeRule(f"{t}/shared", "write", True)])
            with pytest.raises(ScopeConflict, match="holder 'sharer'"):
                ledger.register("host", [ScopeRule(f"/proc/{os.getpid()}/root{t}/shared/x", "write", True)])
            a = ledger.register("mine", [ScopeRule(f"/proc/self/root{t}/mine", "write", True)])
            assert a.rules[0].path == f"{t}/mine"
            assert [x.name for x in ledger.holders()] == ["pod", "sharer", "mine"]
        # The public real_path (what the command line resolves its paths with) says the same.
        for path in (f"{root}/work", f"/proc/{pid}/cwd/x"):
            with pytest.raises(InvalidScope, match="cannot identify"):
                scopeledger.real_path(path)
        assert scopeledger.real_path(f"/proc/self/root{t}/mine") == f"{t}/mine"
        for args in (["check", "--top-level", "--write", f"{root}/work/x"], ["who", f"{root}/work"]):
            p = subprocess.run([*CMD, "--ledger", str(led), *args], capture_output=True, text=True, env=clean_env())
            assert p.returncode == 2 and "cannot identify" in p.stderr and "Traceback" not in p.stderr, \
                (args, p.returncode, p.stdout, p.stderr)
    finally:
        pod.communicate("\n", timeout=30)


# -- filesystems mounted below a held recursive rule ---------------------------------------


@needs_mounts
@pytest.mark.parametrize("fs", ["tmpfs", "overlay"])
def test_a_filesystem_mounted_below_a_held_rule_lies_within_it(tmp_path, fs):
    # A rule on T/** with a filesystem mounted at T/m: a write under T/m
    # conflicts with it, whether the filesystem was mounted before the grant
    # or after, and under any other path the filesystem is mounted at too.
    t, elsewhere, led = tmp_path / "t", tmp_path / "elsewhere", tmp_path / "led"
    for d in ("t/m", "t/later", "elsewhere", "lower", "upper", "work", "lower2", "upper2", "work2"):
        (tmp_path / d).mkdir(parents=True)
    if fs == "tmpfs":
        mount = lambda at, n="": f"mount -t tmpfs sl-test{n} {at}"  # noqa: E731
    else:
        mount = lambda at, n="": (f"mount -t overlay sl-test -o lowerdir={tmp_path}/lower{n},"  # noqa: E731
                                  f"upperdir={tmp_path}/upper{n},workdir={tmp_path}/work{n} {at}")
    setup = f"{mount(f'{t}/m')}\nmount --bind {t}/m {elsewhere}"
    got = in_namespace(setup, f"""
        led = Ledger.open({str(led)!r})
        a = led.register("A", [W("{t}")])
        below = conflict(led, "B", [W("{t}/m/x")])
        alias = conflict(led, "C", [W("{elsewhere}/x")])
        sh("sh", "-c", {mount(f'{t}/later', '2')!r})  # after the grant
        later = conflict(led, "D", [W("{t}/later/y")])
        led.release("A")
        led.register("E", [W("{elsewhere}/x")])
        out(below=below, alias=alias, later=later, reverse=conflict(led, "F", [W("{t}")]),
            rule=a.rules[0].to_json())
    """)
    assert got["below"] and "holder 'A'" in got["below"], got
    assert got["alias"] and "holder 'A'" in got["alias"], got  # by path alone, missed
    assert got["later"] and "holder 'A'" in got["later"], got
    assert got["reverse"] and "holder 'E'" in got["reverse"], got  # missed by path alone
    assert len(got["rule"][3]["below"]) == 1, got["rule"]  # the filesystem below it when granted


# -- case-insensitive filesystems (issue 13 item 7) ------------------------------------------


def _filesystem(fstype: str) -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return False


def _image_skip(fstype: str, mkfs: str) -> None:
    """Skip, saying why, unless this machine can make and mount ``fstype``."""
    if _WHY_NOT is not None:
        pytest.skip(_WHY_NOT)
    if not shutil.which(mkfs):
        pytest.skip(f"{mkfs} is not installed (.ci/run installs it)")
    if not _filesystem(fstype):
        if shutil.which("modprobe"):
            subprocess.run(["modprobe", "-q", fstype], capture_output=True)
        if not _filesystem(fstype):
            pytest.skip(f"this kernel has no {fstype} (not in /proc/filesystems, no module to load)")


def test_ext4_casefold_directories_fold_case_and_unicode(tmp_path, loop_devices):
    # A holds MNT/ci/Proj in a casefolded directory: MNT/ci/PROJ is the same
    # directory, and so is a name in another Unicode normal form; in a
    # directory that does not fold, MNT/cs/PROJ is another one.
    _image_skip("ext4", "mkfs.ext4")
    if not shutil.which("chattr"):
        pytest.skip("chattr is not installed (.ci/run installs e2fsprogs)")
    if not os.path.exists("/sys/fs/ext4/features/casefold"):
        pytest.skip("this kernel cannot mount an ext4 filesystem with casefold "
                    "(no /sys/fs/ext4/features/casefold: built without CONFIG_UNICODE)")
    img, mnt, alias, led = tmp_path / "cf.img", tmp_path / "mnt", tmp_path / "alias", tmp_path / "led"
    mnt.mkdir()
    alias.mkdir()
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-O", "casefold", str(img)], check=True)
    setup = (f"mount -o loop {img} {mnt}\nmkdir {mnt}/ci {mnt}/cs\nchattr +F {mnt}/ci\n"
             f"mkdir {mnt}/ci/Proj {mnt}/ci/caf\u00e9 {mnt}/cs/Proj {mnt}/cs/PROJ\n"
             f"mount --bind {mnt}/ci/Proj {alias}")
    got = in_namespace(setup, f"""
        led = Ledger.open({str(led)!r})
        led.register("A", [W("{mnt}/ci/Proj")])
        led.register("U", [W("{mnt}/ci/caf\u00e9")])
        led.register("S", [W("{mnt}/cs/Proj")])
        out(upper=conflict(led, "B", [W("{mnt}/ci/PROJ/x")]),
            lower=conflict(led, "C", [W("{mnt}/ci/proj")]),
            nfd=conflict(led, "D", [W("{mnt}/ci/CAFE\u0301/x")]),
            alias=conflict(led, "E", [W("{alias}/X")]),
            sensitive=conflict(led, "F", [W("{mnt}/cs/PROJ/x")]))
    """)
    assert got["upper"] and "holder 'A'" in got["upper"], got
    assert got["lower"] and "holder 'A'" in got["lower"], got
    assert got["nfd"] and "holder 'U'" in got["nfd"], got
    assert got["alias"] and "holder 'A'" in got["alias"], got
    assert got["sensitive"] is None, got


@pytest.mark.parametrize("fstype, mkfs", [("vfat", "mkfs.vfat"), ("exfat", "mkfs.exfat")])
def test_a_case_insensitive_filesystem_folds_every_name(tmp_path, loop_devices, fstype, mkfs):
    _image_skip(fstype, mkfs)
    img, mnt, led = tmp_path / "ci.img", tmp_path / "mnt", tmp_path / "led"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    subprocess.run([mkfs, str(img)], check=True, capture_output=True)
    got = in_namespace(f"mount -o loop {img} {mnt}\nmkdir {mnt}/Proj", f"""
        led = Ledger.open({str(led)!r})
        led.register("A", [W("{mnt}/Proj")])
        out(upper=conflict(led, "B", [W("{mnt}/PROJ/x")]), beside=conflict(led, "C", [W("{mnt}/Other")]))
    """)
    assert got["upper"] and "holder 'A'" in got["upper"], got
    assert got["beside"] is None, got


FUSE_FOLDS = {
    # name: (the binary, how the image is made, how it is mounted (shell; $IMG, $MNT), folds)
    "exfat-fuse": ("mount.exfat-fuse", "mkfs.exfat",
                   'L=$(losetup -f --show "$IMG"); echo "$L" > "$IMG.loop"; mount.exfat-fuse "$L" "$MNT"', True),
    "fusefat": ("fusefat", "mkfs.vfat", 'fusefat -o rw+ "$IMG" "$MNT"', True),
    "bindfs": ("bindfs", None, 'mkdir "$IMG"; bindfs "$IMG" "$MNT"', False),
}


@pytest.mark.parametrize("fs", sorted(FUSE_FOLDS))
def test_a_filesystem_whose_type_has_no_rule_is_asked_whether_it_folds(tmp_path, loop_devices, fs):
    """FUSE (``fuseblk``, ``fuse.*``) and any other type without a rule may
    fold case or not, as its volume or daemon does: the filesystem is
    asked (a name looked up under another spelling), never trusted to be
    exact. A case-insensitive volume through FUSE folds; a case-sensitive
    FUSE filesystem does not; one with no name to ask with refuses a name
    that folding would change, and takes one it would not."""
    binary, mkfs, mount, folds = FUSE_FOLDS[fs]
    if _WHY_NOT is not None:
        pytest.skip(_WHY_NOT)
    for tool in (binary, mkfs):
        if tool is not None and not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (.ci/run installs it)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse here")
    img, mnt, led = tmp_path / "fs.img", tmp_path / "mnt", tmp_path / "led"
    mnt.mkdir()
    if mkfs is not None:
        subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
        subprocess.run([mkfs, str(img)], check=True, capture_output=True)
    got = in_namespace(f"IMG={img}; MNT={mnt}; {mount}", f"""
        from scopeledger import InvalidScope
        mnt = {str(mnt)!r}
        try:
            with open("/proc/self/mountinfo") as f:
                fstype = [l.split(" - ")[1].split()[0] for l in f if l.split()[4] == mnt][-1]
            led = Ledger.open({str(led)!r})
            try:
                led.register("empty", [W(mnt + "/Build")])
                empty = None
            except InvalidScope as exc:
                empty = str(exc)
            led.register("lower", [W(mnt + "/build")])  # folding changes nothing: not asked
            os.mkdir(mnt + "/Proj")
            led.register("A", [W(mnt + "/Proj")])
            out(fstype=fstype, empty=empty, upper=conflict(led, "B", [W(mnt + "/PROJ/x")]),
                lower=conflict(led, "C", [W(mnt + "/proj")]), beside=conflict(led, "D", [W(mnt + "/Other")]),
                key=led.holder("A").rules[0].to_json())
        finally:
            subprocess.run(["umount", mnt])
            if os.path.exists({str(img)!r} + ".loop"):  # this loop device, no other
                with open({str(img)!r} + ".loop") as f:
                    subprocess.run(["losetup", "-d", f.read().strip()], capture_output=True)
    """)
    assert got["fstype"] in ("fuseblk", "fuse", f"fuse.{fs}"), got
    assert got["empty"] and "no name with a letter" in got["empty"] and got["fstype"] in got["empty"], got
    assert got["beside"] is None, got
    if folds:
        assert got["upper"] and "holder 'A'" in got["upper"], got
        assert got["lower"] and "holder 'A'" in got["lower"], got
        assert got["key"][3]["fs"].endswith("/proj"), got
    else:
        assert got["upper"] is None and got["lower"] is None, got
        assert got["key"][3]["fs"].endswith("/Proj"), got


# -- helpers -------------------------------------------------------------------------------


def _dev_of(path: Path) -> str:
    from scopeledger._paths import mount_table
    t = mount_table()
    assert t is not None
    return t.containing(str(path)).dev
