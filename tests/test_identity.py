"""Process identity v2 at the edges (issue 13 items 1, 3, 4) and the
messages that say what is unknown and why.

Real hosts are faked the way another machine looks to the ledger: a process
in its own mount namespace with another /etc/machine-id and boot id
bind-mounted over the real ones (tools/torture/identity.py). PID reuse and
PID namespaces are real (unshare, ns_last_pid); time namespaces too. The
wall clock is never stepped: the identity code is run against a made-up
/proc instead (and psutil pointed at it, as the v1 code read it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import attrs
import psutil
import pytest

import scopeledger._process as proc_mod
from scopeledger import Ledger, Liveness, ScopeConflict, ScopeRule, Verdict, identify, judge
from scopeledger._process import INIT_PID_NS, boot_id, host_id, pid_namespace, read_stat
from helpers import CMD, clean_env
from torture_support import REPO, in_namespace

W = lambda p: ScopeRule(p, "write")  # noqa: E731
PIDNS = ["--pid", "--fork", "--mount-proc"]


def need_unshare(args):
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) is not installed")
    r = subprocess.run(["unshare", *args, "true"], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"unshare {' '.join(args)} not permitted here: {r.stderr.decode().strip()}")


def need_initial_pid_namespace():
    if pid_namespace() != INIT_PID_NS:
        pytest.skip(f"this test runs in PID namespace {pid_namespace()}, not the host's first: "
                    "it cannot see every process")


def ledger_cli(led_dir, *args):
    return subprocess.run([*CMD, "--ledger", str(led_dir), *args], capture_output=True, text=True,
                          env=clean_env(COLUMNS="400"), timeout=120)


def spawn(args, **kw):
    return subprocess.Popen(args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kw)


def ready(p):
    """The helper's READY line, split; skips the test when the helper said
    it is not permitted here (exit 77), fails it when it died otherwise."""
    line = p.stdout.readline().split()
    if line[:1] != ["READY"]:
        rest = p.stdout.read()
        code = p.wait(timeout=60)
        if code == 77:
            pytest.skip(" ".join(line) or "not permitted here")
        pytest.fail(f"helper exited {code}: {' '.join(line)} {rest}")
    return line


def finish(p):
    if p.poll() is None:
        try:
            p.stdin.write("\n")
            p.stdin.close()
        except OSError:
            pass
    out = p.stdout.read()
    p.wait(timeout=60)
    return out


# -- the identity itself ------------------------------------------------------------------


def test_identity_has_host_boot_pid_ticks_and_pidns_and_no_wall_clock():
    me = identify()
    assert me.to_json() == {"host": host_id(), "boot": boot_id(), "pid": os.getpid(),
                            "ticks": me.ticks, "pidns": pid_namespace()}
    with open("/proc/self/stat", "rb") as f:
        assert me.ticks == int(f.read().rsplit(b")", 1)[1].split()[19]) > 0
    assert judge(me) == Verdict(Liveness.ALIVE)


def test_start_ticks_are_read_past_a_command_name_with_spaces_and_parentheses(tmp_path):
    odd = tmp_path / "a) b (c) d"
    shutil.copy(shutil.which("sleep"), odd)
    p = subprocess.Popen([str(odd), "60"])
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(p.pid).name() != odd.name[:15]:  # exec done
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with open(f"/proc/{p.pid}/stat", "rb") as f:
            raw = f.read()
        assert b"(a) b (c) d)" in raw
        state, ticks = read_stat(p.pid)
        assert state in ("R", "S") and ticks == identify(p.pid).ticks
        assert ticks == round((psutil.Process(p.pid).create_time() - psutil.boot_time()) * 100)
        assert judge(identify(p.pid)).liveness is Liveness.ALIVE
    finally:
        p.kill()
        p.wait()


def test_a_v1_identity_from_an_old_log_is_read_and_judged_as_before(tmp_path):
    import orjson

    # A log written by the v1 code: a holder bound to this (live) process,
    # with v1's wall-clock start time.
    me = psutil.Process()
    actor = {"pid": os.getpid(), "start": me.create_time(), "boot": boot_id()}
    ev = {"v": 1, "seq": 1, "ts": time.time_ns(), "actor": actor, "prev": "0" * 32, "type": "registered",
          "holder": {"name": "old", "rules": [["/v1/old", "write", True]], "process": actor,
                     "parent": None, "reserved": False, "socket": None}}
    d = tmp_path / "l"
    with Ledger.open(d) as led:
        pass
    line = orjson.dumps(ev)
    with open(d / "events.jsonl", "ab") as f:
        f.write(line + b"\n")
    with Ledger.open(d) as led:
        old = led.holder("old").process
        assert (old.format, old.start, old.ticks, old.host) == (1, actor["start"], None, None)
        assert old.to_json() == actor
        assert judge(old) == Verdict(Liveness.ALIVE)
        gone = attrs.evolve(old, pid=4_000_000)
        assert judge(gone).liveness is Liveness.GONE
        assert judge(attrs.evolve(old, boot="another")).liveness is Liveness.EARLIER_BOOT  # v1: no host
        whole = attrs.evolve(old, start=old.start - 3)  # v1: a clock step or a reuse, cannot tell
        assert judge(whole).liveness is Liveness.UNKNOWN and "v1" in judge(whole).why
        assert led.reclaim_stale() == []
        led.register("new", [W("/v1/new")])  # a v2 line after the v1 line
        assert led.verify().ok
    with Ledger.open(d) as led:
        assert led.holder("new").process.format == 2


# -- item 1: another host is not an earlier boot ----------------------------------------------


def test_a_live_holder_on_another_host_is_kept_and_shown_as_on_another_host(tmp_path):
    need_unshare(["--mount"])
    led_dir = tmp_path / "l"
    p = spawn(["unshare", "--mount", sys.executable, "-m", "tools.torture.identity", "other-host", str(led_dir)])
    try:
        remote_host = ready(p)[1]
        assert remote_host != host_id()
        with Ledger.open(led_dir) as led:
            remote = led.holder("remote").process
            assert remote.boot != boot_id() and remote.host == remote_host
            why = f"on another host ({remote_host})"
            assert judge(remote) == Verdict(Liveness.UNKNOWN, why)
            report = led.reclaim()
            assert report.reclaimed == () and report.unknown == [("remote", Verdict(Liveness.UNKNOWN, why))]
            with pytest.raises(ScopeConflict):  # the hot path does not reclaim it either
                led.register("thief", [W("/hosts/remote")])
        r = ledger_cli(led_dir, "reclaim")
        assert r.returncode == 0, r.stderr
        assert f"kept 'remote' (pid {remote.pid}): liveness unknown: {why}" in r.stdout
        assert "every holder is alive" not in r.stdout
        r = ledger_cli(led_dir, "show")
        assert f"[liveness unknown: {why}; kept]" in r.stdout, r.stdout
    finally:
        out = finish(p)
    assert '"still_held":true' in out
    # Its process has ended over there: from here that is still unknown.
    with Ledger.open(led_dir) as led:
        assert led.reclaim_stale() == [] and [a.name for a in led.holders()] == ["remote"]


def test_an_earlier_boot_of_this_host_is_reclaimed_and_without_a_machine_id_it_is_unknown(monkeypatch, tmp_path):
    me = identify()
    earlier = attrs.evolve(me, boot="00000000-0000-0000-0000-000000000000")
    assert judge(earlier) == Verdict(Liveness.EARLIER_BOOT, "it ran under an earlier boot of this host "
                                                            "(boot 00000000-0000-0000-0000-000000000000)")
    assert judge(attrs.evolve(earlier, host=None)).liveness is Liveness.UNKNOWN
    # No machine id here: /etc/machine-id missing, empty, "uninitialized",
    # or not 32 hex digits, and no /var/lib/dbus/machine-id.
    for content in (None, "", "uninitialized\n", "not-a-machine-id\n"):
        paths = []
        for i in range(2):
            path = tmp_path / f"machine-id-{i}"
            if content is not None:
                path.write_text(content)
            paths.append(str(path))
        monkeypatch.setattr(proc_mod, "_MACHINE_ID_PATHS", tuple(paths))
        monkeypatch.setattr(proc_mod, "_host_id_cache", [])
        assert host_id() is None
        v = judge(earlier)
        assert v.liveness is Liveness.UNKNOWN, content
        assert "this host has no machine id" in v.why and "cannot be told from another host" in v.why
    (tmp_path / "machine-id-1").write_text(me.host.upper() + "\n")  # the fallback file, upper case
    monkeypatch.setattr(proc_mod, "_host_id_cache", [])
    assert host_id() == me.host
    assert judge(earlier).liveness is Liveness.EARLIER_BOOT


def clone_args(led_dir, name, boot, clock=None):
    extra = [] if clock is None else ["--clock", str(clock)]
    return ["unshare", "--mount", sys.executable, "-m", "tools.torture.identity", "clone", str(led_dir), name,
            "--boot", boot, *extra]


def before_this_boot():
    """An instant an hour before this boot began (this host's clock), in ns."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 3600 * 10**9


BOOT_X = "11111111-1111-4111-8111-111111111111"
BOOT_Y = "22222222-2222-4222-8222-222222222222"


def test_a_clone_sharing_this_hosts_machine_id_is_not_taken_for_an_earlier_boot(tmp_path):
    """Two hosts booted from one image share /etc/machine-id; each boot has
    its own boot id. The log disproves "an earlier boot" when boots of one
    machine id wrote interleaved (another wrote after this running boot
    had), and the clock when the other boot wrote after this one began:
    such holders are kept, unknown; an earlier boot is still reclaimed."""
    need_unshare(["--mount"])
    old = before_this_boot()  # the clones' clocks, so that only the log can tell
    # 1. This boot writes, then a clone (boot X) registers: it wrote after
    # this boot's first event (the breaker's finding 03).
    d1 = tmp_path / "after-this-boot"
    with Ledger.open(d1) as led:
        led.register("local-early", [W("/hosts/local")])
        led.release("local-early")
    p = spawn(clone_args(d1, "clone-worker", BOOT_X, old))
    try:
        ready(p)
        with Ledger.open(d1) as led:
            ident = led.holder("clone-worker").process
            assert (ident.host, ident.boot) == (host_id(), BOOT_X)
            assert judge(ident).liveness is Liveness.EARLIER_BOOT  # the machine id alone would say so
            v = led.liveness()["clone-worker"]
            assert v.liveness is Liveness.UNKNOWN, v
            assert f"boot {BOOT_X} wrote at seq 3, after this boot's first event (seq 1)" in v.why
            assert "more than one running host" in v.why
            report = led.reclaim()
            assert report.reclaimed == () and report.unknown == [("clone-worker", v)]
            with pytest.raises(ScopeConflict):  # the hot path keeps it too
                led.register("thief", [W("/hosts/clone-worker")])
        r = ledger_cli(d1, "reclaim")
        assert r.returncode == 0, r.stderr
        assert "kept 'clone-worker'" in r.stdout and "more than one running host" in r.stdout, r.stdout
        r = ledger_cli(d1, "check", "--write", "/hosts/clone-worker/x")  # decides as the ledger does
        assert r.returncode != 0 and "clone-worker" in r.stdout + r.stderr, (r.stdout, r.stderr)
    finally:
        assert '"still_held":true' in finish(p)
    # 2. Two clones (boots X and Y) wrote interleaved; this boot never wrote.
    d2 = tmp_path / "interleaved"
    px = spawn(clone_args(d2, "x", BOOT_X, old))
    try:
        ready(px)
        py = spawn(clone_args(d2, "y", BOOT_Y, old))
        try:
            ready(py)
            px.stdin.write("write\n")
            px.stdin.flush()
            assert px.stdout.readline().split() == ["WROTE", "4"]
            with Ledger.open(d2) as led:
                for name in ("x", "y"):
                    v = led.liveness()[name]
                    assert v.liveness is Liveness.UNKNOWN, (name, v)
                    assert f"boot {BOOT_X} wrote at seqs 1 and 4, boot {BOOT_Y} at seq 2 in between" in v.why
                assert led.reclaim_stale() == []
        finally:
            finish(py)
    finally:
        finish(px)
    # 3. A clone that registered after this boot began (by the clocks), this
    # boot not having written yet: not an earlier boot either.
    d3 = tmp_path / "clock"
    p = spawn(clone_args(d3, "now", BOOT_X))
    try:
        ready(p)
        with Ledger.open(d3) as led:
            v = led.liveness()["now"]
            assert v.liveness is Liveness.UNKNOWN and "after this boot began" in v.why, v
            assert led.reclaim_stale() == []
    finally:
        finish(p)
    # 4. An earlier boot: it wrote before this boot began, never after this
    # boot wrote, no other boot in between: reclaimed, as before.
    d4 = tmp_path / "earlier"
    p = spawn(clone_args(d4, "before-reboot", BOOT_X, old))
    ready(p)
    finish(p)
    with Ledger.open(d4) as led:
        led.register("local", [W("/hosts/local")])
        assert led.liveness()["before-reboot"].liveness is Liveness.EARLIER_BOOT
        assert led.reclaim_stale() == ["before-reboot"]
        led.register("after", [W("/hosts/before-reboot")])


# -- item 3: start times without the wall clock -------------------------------------------


def test_a_pid_reused_a_whole_number_of_seconds_later_is_reclaimed_as_pid_reused(tmp_path):
    fig = in_namespace(PIDNS, ["tools.torture.identity", "whole-seconds", str(tmp_path / "l"), "--rounds", "2"],
                       timeout=300)
    assert fig["rounds"] == 2 and fig["reasons"] == {"pid_reused": 2}, fig
    assert all(s >= 1 for s in fig["offsets_seconds"])


def _fake_proc(root, pid, comm, state, ticks, btime):
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    fields = [state, "1", str(pid), str(pid), "0", "-1", "4194560"] + ["0"] * 12 + [str(ticks)] + ["0"] * 30
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    (root / "stat").write_text(f"cpu  1 2 3 4\nbtime {btime}\nprocesses 9\n")
    me = root / str(os.getpid())
    if not me.exists():
        (me / "ns").mkdir(parents=True)
        os.symlink(os.readlink("/proc/self/ns/pid"), me / "ns" / "pid")
        os.symlink("time:[4026531834]", me / "ns" / "time")
        os.symlink(str(os.getpid()), root / "self")
        shutil.copy("/proc/self/mountinfo", me / "mountinfo")


@pytest.mark.parametrize("step", [1, -1, 3600, -86400 * 365])
def test_a_stepped_wall_clock_changes_no_verdict(tmp_path, monkeypatch, step):
    # The machine's clock is never stepped here: /proc is made up. A step of
    # the wall clock moves /proc/stat's btime by whole seconds; the
    # identity must not move with it.
    fake = tmp_path / "proc"
    pid = 3_999_999  # no such process: only the made-up /proc knows it
    btime = int(psutil.boot_time())
    _fake_proc(fake, pid, "x) (y", "S", 123456, btime)
    monkeypatch.setattr(proc_mod, "PROC", str(fake))
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(fake))
    monkeypatch.setattr(proc_mod, "_offset_cache", None)
    ident = identify(pid)
    assert ident.ticks == 123456
    assert judge(ident) == Verdict(Liveness.ALIVE)
    _fake_proc(fake, pid, "x) (y", "S", 123456, btime + step)  # the clock steps
    assert judge(ident) == Verdict(Liveness.ALIVE)
    # A stranger on the pid exactly 1 s (100 ticks) later: reused, step or not.
    _fake_proc(fake, pid, "stranger", "S", 123456 + 100, btime + step)
    assert judge(ident).liveness is Liveness.PID_REUSED
    _fake_proc(fake, pid, "x) (y", "Z", 123456, btime + step)
    assert judge(ident).liveness is Liveness.ZOMBIE
    # A start of 0 is unknown: never recorded, never proof of reuse.
    _fake_proc(fake, pid, "x) (y", "S", 0, btime)
    assert identify(pid).ticks is None
    assert judge(ident).liveness is Liveness.UNKNOWN
    assert judge(attrs.evolve(ident, ticks=None)).liveness is Liveness.UNKNOWN


def test_a_holder_registered_inside_a_time_namespace_is_alive_from_outside(tmp_path):
    need_unshare(["--time", "--boottime", "1000", "--fork"])
    led_dir = tmp_path / "l"
    code = ("import sys; from scopeledger import Ledger, ScopeRule, probe\n"
            "led = Ledger.open(sys.argv[1]); a = led.register('t', [ScopeRule('/tns/t', 'write')])\n"
            "print('READY', a.process.ticks, flush=True); sys.stdin.readline()\n"
            "print(probe(led.holder('out').process).value, flush=True)")
    with Ledger.open(led_dir) as led:
        led.register("out", [W("/tns/out")])
        p = spawn(["unshare", "--time", "--boottime", "1000", "--fork", sys.executable, "-c", code, str(led_dir)])
        try:
            ready(p)
            inside = led.holder("t").process
            # Recorded on the initial namespace's clock, as read out here.
            assert inside.ticks == read_stat(inside.pid)[1]
            assert judge(inside) == Verdict(Liveness.ALIVE)
        finally:
            out = finish(p)
    assert out.split() == ["alive"]  # and the outside holder from inside


# -- item 4: PID namespace gone -----------------------------------------------------------


def test_holders_of_a_pid_namespace_whose_processes_all_died_are_reclaimed_as_namespace_gone(tmp_path):
    need_unshare(PIDNS)
    need_initial_pid_namespace()
    led_dir = tmp_path / "l"
    p = spawn(["unshare", *PIDNS, sys.executable, "-m", "tools.torture.identity", "ns-hold", str(led_dir), "gone"])
    try:
        ns = ready(p)[1]
        assert ns != pid_namespace()
        with Ledger.open(led_dir) as led:
            v = judge(led.holder("gone").process)
            assert v == Verdict(Liveness.UNKNOWN, f"in another PID namespace ({ns}), which still exists"), v
            assert led.reclaim_stale() == []
    finally:
        finish(p)
    assert p.returncode == 0
    with Ledger.open(led_dir) as led:
        report = led.reclaim()
        assert [(r.name, r.reason) for r in report.reclaimed] == [("gone", "namespace_gone"),
                                                                 ("gone-child", "namespace_gone")]
        # (another namespace may take the inode number meanwhile: then it is
        # a new one, whose processes all started after these holders')
        assert re.fullmatch(rf"(no process is left in its PID namespace \({re.escape(ns)}\)|its PID namespace "
                            rf"\({re.escape(ns)}\) is gone: .*)", report.reclaimed[0].why)
        assert led.holders() == [] and led.verify().ok
        assert [e.data["reason"] for e in led.events(types=["reclaimed"])] == ["namespace_gone"] * 2


def test_a_namespace_number_reused_by_a_new_namespace_is_gone_for_older_holders():
    need_unshare(PIDNS)
    need_initial_pid_namespace()
    p = spawn(["unshare", *PIDNS, "sh", "-c", "readlink /proc/self/ns/pid; exec cat"])
    try:
        ns = p.stdout.readline().strip()
        me = identify()  # this process started before that namespace's first process
        # A holder that was recorded (with this process's start) in a
        # namespace of that number: the namespace there now is younger.
        v = judge(attrs.evolve(me, pid=1, pidns=ns))
        assert v.liveness is Liveness.NAMESPACE_GONE and "is a new one" in v.why, v
        # A holder started after its first process: it may be in it (kept).
        (first,) = psutil.Process(p.pid).children()  # the namespace's pid 1
        later = read_stat(first.pid)[1]
        assert judge(attrs.evolve(me, pid=1, pidns=ns, ticks=later)) == \
            Verdict(Liveness.UNKNOWN, f"in another PID namespace ({ns}), which still exists")
        # Its start unknown: cannot tell the namespace is not the same.
        assert judge(attrs.evolve(me, pid=1, pidns=ns, ticks=None)).liveness is Liveness.UNKNOWN
    finally:
        finish(p)


def _gone_namespace_ledger(tmp_path):
    need_unshare(PIDNS)
    led_dir = tmp_path / "l"
    in_namespace(PIDNS, ["tools.torture.identity", "ns-hold", str(led_dir), "gone"], timeout=120)
    return led_dir


def test_a_gone_namespace_cannot_be_told_from_a_pid_namespace_or_through_hidepid(tmp_path):
    led_dir = _gone_namespace_ledger(tmp_path)
    need_unshare(["--mount"])
    # From inside another PID namespace, not every process can be seen.
    fig = in_namespace(PIDNS, ["tools.torture.identity", "verdicts", str(led_dir)])
    if fig["_pidns"] == fig["_recorded"]["gone"]:
        # The new namespace took the dead one's number: its pids are judged
        # as its own, and the holder's process is not among them (dead
        # either way: its namespace is gone).
        assert fig["gone"][0] in ("pid_reused", "process_gone"), fig
    else:
        assert fig["gone"][0] == "unknown" and "does not see every process" in fig["gone"][1], fig
    # Through a /proc mounted with hidepid=2 (in a mount namespace of its own).
    fig = in_namespace(["--mount"], ["tools.torture.identity", "verdicts", str(led_dir), "--hidepid"])
    assert fig["gone"][0] == "unknown" and "hidepid" in fig["gone"][1], fig
    # As another user, the PID namespace of root's processes in other
    # namespaces cannot be read: unknown, unless none is in one.
    fig = in_namespace(["--mount"], ["tools.torture.identity", "verdicts", str(led_dir), "--nobody"])
    assert fig["gone"][0] in ("unknown", "namespace_gone"), fig
    if fig["gone"][0] == "unknown":
        assert "cannot be read" in fig["gone"][1], fig


# -- messages -----------------------------------------------------------------------------


def test_reclaim_says_why_a_holder_is_kept_or_reclaimed(tmp_path):
    import json

    led_dir = tmp_path / "l"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with Ledger.open(led_dir) as led:
            led.register("alive", [W("/m/alive")])
            led.register("sleeper", [W("/m/sleeper")], pid=sleeper.pid)
        r = ledger_cli(led_dir, "reclaim")
        assert r.stdout.strip() == "nothing to reclaim: every holder is alive", r.stdout
        with Ledger.open(led_dir) as led:
            # A probe that cannot read the sleeper's start: kept, and why.
            report = led.reclaim(probe=lambda i: judge(attrs.evolve(i, ticks=None)) if i.pid == sleeper.pid
                                 else judge(i))
            assert report.reclaimed == ()
            assert report.unknown == [("sleeper", Verdict(
                Liveness.UNKNOWN, f"its start time was not recorded: pid {sleeper.pid} is in use, by it or "
                                  "by a later process"))]
            assert [n for n, _ in report.kept] == ["alive", "sleeper"]
            assert led.liveness() == {"alive": Verdict(Liveness.ALIVE), "sleeper": Verdict(Liveness.ALIVE)}
    finally:
        sleeper.kill()
        sleeper.wait()
    r = ledger_cli(led_dir, "--json", "reclaim", "--dry-run")
    doc = json.loads(r.stdout)
    assert [(x["name"], x["reason"], x["why"], x["seq"]) for x in doc["reclaimed"]] == \
        [("sleeper", "process_gone", f"pid {sleeper.pid} no longer exists", None)]
    assert doc["unknown"] == []
    r = ledger_cli(led_dir, "reclaim")
    assert r.stdout.strip() == (f"reclaimed 'sleeper' (pid {sleeper.pid}): process gone: pid {sleeper.pid} "
                                "no longer exists"), r.stdout


def test_reclaim_json_lists_unknown_holders_with_the_reason(tmp_path):
    need_unshare(["--mount"])
    led_dir = tmp_path / "l"
    p = spawn(["unshare", "--mount", sys.executable, "-m", "tools.torture.identity", "other-host", str(led_dir)])
    try:
        line = ready(p)
        import json

        r = ledger_cli(led_dir, "--json", "reclaim")
        doc = json.loads(r.stdout)
        assert doc["reclaimed"] == []
        assert doc["unknown"] == [{"name": "remote", "pid": int(line[2]), "why": f"on another host ({line[1]})"}]
        r = ledger_cli(led_dir, "--json", "show")
        doc = json.loads(r.stdout)
        assert doc["liveness"] == {"remote": "unknown"}
        assert doc["liveness_why"] == {"remote": f"on another host ({line[1]})"}
    finally:
        finish(p)
