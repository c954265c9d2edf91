"""``ledger run --ttl`` and ``ledger renew`` (issue 16, leases), with real
processes: the wrapper renews in the background while its command runs; a
wrapper that stops renewing (SIGSTOP) loses the scope to ``lease_expired``
although its command still runs. Every wait is on a real condition with a
generous bound; nothing depends on the machine's speed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from scopeledger import Ledger
from helpers import CMD, clean_env, ledger_cmd

CHILD = "import sys; print('running', flush=True); sys.stdin.read()"  # runs until its stdin closes


def start_run(ledger_dir, tmp_path, *extra):
    return subprocess.Popen([*CMD, "--ledger", ledger_dir, "run", "--name", "job", "--write", str(tmp_path / "w"),
                             *extra, "--", os.sys.executable, "-c", CHILD],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env(), text=True)


def renewals(led, name="job"):
    return [e for e in led.events(types=["renewed"]) if e.data["name"] == name]


def wait_for(what, timeout=60.0):
    """Wait until ``what()`` is true (it waits on the log itself), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"


def test_run_with_ttl_renews_while_the_command_runs_and_releases_after(ledger_dir, tmp_path):
    p = start_run(ledger_dir, tmp_path, "--ttl", "0.3")
    try:
        assert p.stdout.readline() == "running\n"
        with Ledger.open(ledger_dir) as led:
            seq = led.seq
            alloc = led.holder("job")
            assert alloc.lease.ttl_ns == 300_000_000 and alloc.lease.process
            assert alloc.pid != p.pid  # bound to the command, and to the lease its wrapper renews

            def two():
                nonlocal seq
                seq = led.wait(seq, timeout=1)
                return len(renewals(led)) >= 2

            wait_for(two)
        p.stdin.close()
        assert p.wait(60) == 0, p.stderr.read()
        with Ledger.open(ledger_dir) as led:
            kinds = [e.type for e in led.events()]
            assert kinds[:2] == ["registered", "attached"] and kinds[-1] == "released"
            assert set(kinds[2:-1]) == {"renewed"}, kinds
    finally:
        p.kill()
        p.wait()


def test_a_stopped_wrapper_loses_its_scope_to_lease_expired_while_its_command_runs(ledger_dir, tmp_path):
    # (--on-lost warn: COMMAND runs on; by default it is sent SIGTERM, tests/test_cli_run_lost.py)
    p = start_run(ledger_dir, tmp_path, "--ttl", "0.2", "--on-lost", "warn")
    try:
        assert p.stdout.readline() == "running\n"
        os.kill(p.pid, signal.SIGSTOP)
        with Ledger.open(ledger_dir) as led:
            command = led.holder("job").pid
            reports = []

            def reclaimed():
                reports.append(led.reclaim())
                led.wait(led.seq, timeout=0.2)
                return reports[-1].reclaimed

            wait_for(reclaimed)
            (r,) = reports[-1].reclaimed
            assert r.reason == "lease_expired" and "not renewed for" in r.why
            os.kill(command, 0)  # its command still runs: the lease alone ended the grant
            last = list(led.events(types=["reclaimed"]))[-1]
            assert last.data["last_seen"] < last.ts and r.last_seen_ns == last.data["last_seen"]
        os.kill(p.pid, signal.SIGCONT)
        p.stdin.close()
        code = p.wait(60)
        err = p.stderr.read()
        assert code == 0, err
        # Said once: at once when the wrapper, continued, learnt it (its renewal found the grant
        # reclaimed, or the log showed the reclaim) before COMMAND ended, else at the release (the
        # stdin closed at once may end COMMAND first).
        assert err.count("warning") == 1 and "lease" in err, err
        assert ("warning: 'job' lost its scope while COMMAND runs: " in err
                and "runs on without it (--on-lost warn)" in err) or \
            "warning: 'job' was no longer held when its command ended: reclaimed at seq" in err, err
    finally:
        p.kill()
        p.wait()


def test_ledger_renew_renews_and_refuses_bad_input_naming_it_recording_nothing(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        a = led.register("agent", [("/srv/a", "write")], ttl=30, lease_only=True)
        led.register("plain", [("/srv/p", "write")])
    r = ledger_cmd(ledger_dir, "renew", "agent", "--token", str(a.token), "--ttl", "60")
    assert r.returncode == 0 and r.stdout.startswith(f"renewed 'agent' (token {a.token}) for 60 s at seq 3"), r
    log = os.path.join(ledger_dir, "events.jsonl")
    before = open(log, "rb").read()
    for args, code, said in [
            (["renew", "ghost", "--token", "1"], 6, "no live holder named 'ghost'"),
            (["renew", "agent", "--token", "99"], 6, f"token {a.token}, not 99"),
            (["renew", "plain", "--token", "2"], 2, "holder 'plain' has no lease"),
            (["renew", "agent", "--token", "1", "--ttl", "0"], 2, "'0' is not a ttl"),
            (["renew", "agent", "--token", "1", "--ttl", "nan"], 2, "'nan' is not a finite number of seconds"),
            (["renew", "agent", "--token", "1", "--ttl", "soon"], 2, "'soon' is not a number of seconds"),
            (["renew", "agent"], 2, "missing option '--token'"),
            (["run", "--ttl", "-1", "--write", "/srv/x", "--", "true"], 2,
             "'-1' is not a ttl: give 0.1 to 1e+09 seconds")]:
        r = ledger_cmd(ledger_dir, *args)
        assert r.returncode == code, (args, r)
        assert said in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    assert open(log, "rb").read() == before


def test_run_documents_ttl():
    r = ledger_cmd("/nonexistent", "run", "--help")
    assert "--ttl SECONDS" in r.stdout and "renews" in r.stdout and "SECONDS/3" in r.stdout, r.stdout


def test_show_says_which_holders_hold_a_lease(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        led.register("agent", [("/srv/a", "write")], ttl=30, lease_only=True)
        led.register("both", [("/srv/b", "write")], ttl=2.5)
    out = ledger_cmd(ledger_dir, "show").stdout
    assert "agent  asked by pid" in out and "lease 30 s only" in out, out
    assert "lease 2.5 s  write /srv/b" in out, out


def test_a_ttl_below_the_least_is_refused_in_one_line_recording_nothing(ledger_dir):
    """``--ttl 1e-12`` was taken (rounded up to 1 ns) and its wrapper renewed
    every ttl/3: 2863 ``renewed`` lines in 3 s. The least ttl is 0.1 s
    (``scopeledger.TTL_RANGE``), on the command line as in the library."""
    with Ledger.open(ledger_dir) as led:
        a = led.register("agent", [("/srv/a", "write")], ttl=30, lease_only=True)
    log = os.path.join(ledger_dir, "events.jsonl")
    before = open(log, "rb").read()
    for args in (["run", "--name", "tiny", "--write", "/srv/t", "--ttl", "1e-12", "--", "true"],
                 ["run", "--name", "tiny", "--write", "/srv/t", "--ttl", "0.0999", "--", "true"],
                 ["renew", "agent", "--token", str(a.token), "--ttl", "5e-324"]):
        r = ledger_cmd(ledger_dir, *args)
        value = args[args.index("--ttl") + 1]
        assert r.returncode == 2 and f"'{value}' is not a ttl: give 0.1 to 1e+09 seconds" in r.stderr, r
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert open(log, "rb").read() == before
    r = ledger_cmd(ledger_dir, "renew", "agent", "--token", str(a.token), "--ttl", "0.1")
    assert r.returncode == 0, r


def test_each_seconds_option_states_its_own_range(ledger_dir):
    """``--ttl -3`` said "give 0 to 1e+09 seconds" although ``--ttl 0`` is
    refused: each option says its own range."""
    Ledger.open(ledger_dir).close()
    run = ["run", "--name", "x", "--write", "/srv/x"]
    for args, said in [
            ([*run, "--ttl", "-3", "--", "true"], "'-3' is not a ttl: give 0.1 to 1e+09 seconds"),
            ([*run, "--ttl", "1e300", "--", "true"], "'1e300' is not a ttl: give 0.1 to 1e+09 seconds"),
            ([*run, "--ttl", "0", "--", "true"], "'0' is not a ttl: give 0.1 to 1e+09 seconds"),
            ([*run, "--wait", "-1", "--", "true"], "'-1' is out of range: give 0 to 1e+09 seconds"),
            (["--lock-timeout", "1e10", "show"], "'1e10' is out of range: give 0 to 1e+09 seconds"),
            (["replay", "--follow", "--interval", "0"], "'0' is out of range: give 0.01 to 1e+09 seconds")]:
        r = ledger_cmd(ledger_dir, *args)
        assert r.returncode == 2 and said in r.stderr and r.stderr.count("\n") == 1, (args, r)


def test_show_says_a_lease_past_its_ttl_ran_out_and_when_it_may_be_reclaimed(ledger_dir):
    """``show`` said "lease runs 0.738 s more" (the grace counted in) of a
    holder whose own ``check()`` was already false: it says its ttl ran
    out, and when it may be reclaimed. The grant's boot-time reading is put
    1010 s back, with a ttl of 1000 s (grace 100 s): past its ttl by 10 s,
    reclaimable in 90 s (a bound no run comes near)."""
    from scopeledger._process import boottime_ns

    back = [1010 * 10**9]
    with Ledger.open(ledger_dir, boottime=lambda: boottime_ns() - back[0]) as led:
        a = led.register("agent", [("/srv/a", "write")], ttl=1000, lease_only=True)
        back[0] = 0
        b = led.register("fresh", [("/srv/b", "write")], ttl=1000, lease_only=True)
        assert led.check("agent", a.token) is False and led.check("fresh", b.token) is True
    doc = json.loads(ledger_cmd(ledger_dir, "--json", "show").stdout)
    assert doc["liveness"]["agent"] == "alive"  # (not reclaimable yet: its grace runs)
    why = doc["liveness_why"]["agent"]
    assert why.startswith("its ttl ran out 1") and "s ago (not renewed since seq 1)" in why, why
    assert "its holder no longer trusts it; reclaimable after its grace, in " in why, why
    assert "runs" not in why, why
    assert doc["liveness_why"]["fresh"].startswith("its lease runs 99"), doc["liveness_why"]
    assert doc["liveness_why"]["fresh"].endswith("s more, then a grace of 100 s"), doc["liveness_why"]
    out = ledger_cmd(ledger_dir, "show").stdout
    assert "[its ttl ran out 1" in out and "[its lease runs 99" in out, out
