"""The ``ledger`` command line, run as a user runs it: the installed console
script as a subprocess; output and exit codes checked, ``--json`` parsed and
compared with the library's answers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from helpers import (BIN, CMD, PY, R_at, W_at, as_from_a_terminal, cli_as_nobody, clean_env, invoke, jl, ledger_cmd,
                     lines_of, one_error_line, queued_names, readline, wait_for)
from scopeledger import Ledger, LedgerError, ScopeRule, parse_rule
from torture_support import NOBODY_UID, plant, shared_ledger

# -- entry points, usage, errors -----------------------------------------------------------


def test_entry_points_help_and_version(led: Path) -> None:
    out = subprocess.run([*CMD, "--help"], capture_output=True, text=True, env=clean_env())
    assert out.returncode == 0
    for cmd in ("replay", "show", "who", "check", "history", "diff", "verify", "snapshot",
                "reclaim", "run", "demo"):
        assert cmd in out.stdout
    alias = shutil.which("scopeledger", path=BIN)
    if alias:
        v = subprocess.run([alias, "--version"], capture_output=True, text=True, env=clean_env())
        assert v.returncode == 0 and "scopeledger" in v.stdout
    m = subprocess.run([PY, "-m", "scopeledger", "run", "--help"], capture_output=True, text=True,
                       env=clean_env())
    assert m.returncode == 0 and "flock" in m.stdout


@pytest.mark.parametrize("args", [
    ["bogus"],
    ["run"],
    ["run", "--write", "x", "-n", "-w", "1", "--", "true"],
    ["show", "--at", "not-a-time"],
    ["replay", "--type", "nonsense"],
    ["check", "--write", "a/*/b"],
    ["check"],
    ["history", "bad name!"],
])
def test_usage_errors_are_one_line_exit_2(led: Path, lib: Ledger, args: list[str]) -> None:
    res = ledger_cmd(led, *args)
    assert res.returncode == 2, res
    one_error_line(res.stderr)


@pytest.mark.parametrize("args, param", [
    (["who", ""], "'PATH'"),
    (["who", "", "--at", "1"], "'PATH'"),
    (["replay", "--path", ""], "'--path'"),
    (["replay", "--relative-to", ""], "'--relative-to'"),
    (["show", "--relative-to", ""], "'--relative-to'"),
    (["who", "src", "--relative-to", ""], "'--relative-to'"),
    (["history", "a", "--relative-to", ""], "'--relative-to'"),
    (["check", "--write", "src", "--relative-to", ""], "'--relative-to'"),
    (["check", "--write", "src", "--root", ""], "'--root'"),
    (["check", "--write", "src", "--manifest", ""], "'--manifest'"),
    (["run", "--write", "src", "--root", "", "--", "touch", "ran"], "'--root'"),
    (["run", "--write", "src", "--manifest", "", "--", "touch", "ran"], "'--manifest'"),
    (["demo", "--dir", ""], "'--dir'"),
])
def test_empty_path_is_a_usage_error(led: Path, lib: Ledger, tree: Path, args: list[str],
                                     param: str) -> None:
    # An empty path never silently means the working directory.
    lib.register("a", [W_at(tree, "src")])
    seq = lib.seq
    res = ledger_cmd(led, *args, cwd=tree)
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert param in line and "must not be empty" in line, line
    assert res.stdout == ""
    assert not (tree / "ran").exists()
    assert lib.refresh() == seq  # nothing recorded
    # --json: the error as JSON on stdout (on stderr for 'run'), exit 2
    res = ledger_cmd(led, "--json", *args, cwd=tree)
    assert res.returncode == 2
    if args[0] == "run":
        assert res.stdout == ""  # run's stdout belongs to its command, even before it parses
    err = json.loads((res.stderr if args[0] == "run" else res.stdout).splitlines()[0])["error"]
    assert err["exit_code"] == 2 and "must not be empty" in err["message"]


def test_empty_path_is_a_usage_error_before_the_ledger_is_opened(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    res = ledger_cmd(missing, "who", "")
    assert res.returncode == 2 and "must not be empty" in one_error_line(res.stderr)
    assert not missing.exists()


def test_missing_ledger_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for args in (["show"], ["replay"], ["verify"], ["who", "/x"]):
        res = ledger_cmd(missing, *args)
        assert res.returncode == 6
        assert "no ledger at" in one_error_line(res.stderr)
    assert not missing.exists()
    # --json also reports the error as JSON on stdout.
    res = ledger_cmd(missing, "show", "--json")
    assert json.loads(res.stdout)["error"]["exit_code"] == 6


def test_ledger_selection_env_and_option(tmp_path: Path, tree: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with Ledger.open(a) as la, Ledger.open(b) as lb:
        la.register("in-a", [W_at(tree, "src")])
        lb.register("in-b", [W_at(tree, "docs")])
    env = clean_env(SCOPELEDGER_DIR=str(a))
    res = invoke(["show", "--json"], env=env)
    assert [h["name"] for h in json.loads(res.stdout)["holders"]] == ["in-a"]
    # --ledger wins over the environment, before or after the command name.
    res = invoke(["show", "--json", "--ledger", str(b)], env=env)
    assert [h["name"] for h in json.loads(res.stdout)["holders"]] == ["in-b"]


def test_unsafe_ledger_exit_5(led: Path, lib: Ledger) -> None:
    os.chmod(led, 0o777)
    res = ledger_cmd(led, "show")
    assert res.returncode == 5
    assert "unsafe ledger path" in one_error_line(res.stderr)
    os.chmod(led, 0o700)


@pytest.mark.parametrize("kind, says", [("socket", "a socket"), ("fifo", "a FIFO"),
                                        ("directory", "a directory")])
@pytest.mark.parametrize("args", [["show"], ["reclaim"]])
def test_a_log_of_another_kind_is_unsafe_named_in_full(led: Path, lib: Ledger, kind: str, says: str,
                                                      args: list[str]) -> None:
    plant(str(led / "events.jsonl"), kind)
    res = ledger_cmd(led, *args)
    assert res.returncode == 5, res
    assert one_error_line(res.stderr) == (f"error: unsafe ledger path {led}/events.jsonl: "
                                          f"is {says}, not a regular file")


def _recorded(path: str) -> None:
    with Ledger.open(path) as ledger:
        ledger.register("a", [ScopeRule("/a", "write")])
        ledger.snapshot()


@pytest.mark.parametrize("args, name, change, code, says", [
    (["show"], "events.jsonl", "chmod", 7, "failed to open the ledger: {full}: Permission denied"),
    (["show"], "snapshots", "chmod", 7, "failed to open the ledger: {full}: Permission denied"),
    (["reclaim"], "snapshots", "chmod", 7, "failed to open the ledger: {full}: Permission denied"),
    (["reclaim"], "events.jsonl", "chown", 5,
     "unsafe ledger path {full}: owned by uid 0, not by this user (uid {uid})"),
])
def test_a_file_the_os_refuses_is_named_by_its_full_path(args: list[str], name: str, change: str,
                                                         code: int, says: str) -> None:
    # The files are opened relative to the directory's descriptor: the
    # OSError names only 'events.jsonl' unless the ledger puts the path back.
    path, base = shared_ledger(_recorded)
    try:
        full = os.path.join(path, name)
        if change == "chmod":
            os.chmod(full, 0)
        else:
            os.chown(full, 0, 0)
        got, out = cli_as_nobody(path, *args)
    finally:
        shutil.rmtree(base)
    assert got == code, out
    assert one_error_line(out) == "error: " + says.format(full=full, uid=NOBODY_UID)


def test_corrupt_ledger_exit_4_and_verify_names_line(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("a", [W_at(tree, "src")])
    lib.release("a")
    assert ledger_cmd(led, "verify").returncode == 0
    log = led / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"released"', b'"releasXd"')
    log.write_bytes(b"".join(lines))
    res = ledger_cmd(led, "verify")
    assert res.returncode == 1
    assert f"{log} line 2 (seq 2)" in res.stderr
    res = ledger_cmd(led, "verify", "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 1 and report["ok"] is False
    assert report["problems"][0]["file"] == str(log)
    assert report["problems"][0]["line"] == 2 and report["problems"][0]["seq"] == 2
    res = ledger_cmd(led, "show")
    assert res.returncode == 4
    assert "corrupt ledger" in one_error_line(res.stderr)


def test_verify_workers_give_the_same_report(led: Path, lib: Ledger, tree: Path) -> None:
    for i in range(40):
        lib.register(f"h{i}", [W_at(tree, f"src/{i}")])
        lib.release(f"h{i}")
        if i % 8 == 7:
            lib.snapshot()  # cut points for the workers
    outs = [json.loads(ledger_cmd(led, "verify", "--json", "--workers", n).stdout) for n in ("1", "3")]
    assert outs[0] == outs[1] and outs[0]["ok"] and outs[0]["events"] == 80
    log = led / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[71] = lines[71].replace(b'"released"', b'"releasXd"')  # a release in a late segment
    log.write_bytes(b"".join(lines))
    res = [ledger_cmd(led, "verify", "--json", "--workers", n) for n in ("1", "3")]
    assert [r.returncode for r in res] == [1, 1]
    assert json.loads(res[0].stdout) == json.loads(res[1].stdout)
    bad = ledger_cmd(led, "verify", "--workers", "0")
    assert bad.returncode == 2 and "--workers" in bad.stderr


# -- show, who, replay, history, diff --------------------------------------------------------


def test_show_tree_and_json_match_library(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("rt", [W_at(tree, "src"), R_at(tree, "docs")])
    lib.delegate("rt", "builder", [W_at(tree, "src/parser")])
    lib.delegate("builder", "worker", [W_at(tree, "src/parser/gen/*")])
    res = ledger_cmd(led, "show", "--json")
    assert res.returncode == 0
    doc = json.loads(res.stdout)
    assert doc["holders"] == [a.to_json() for a in lib.holders()]
    assert doc["seq"] == lib.seq
    assert doc["liveness"] == {"rt": "alive", "builder": "alive", "worker": "alive"}
    assert doc["children"] == {"rt": ["builder"], "builder": ["worker"]}
    human = ledger_cmd(led, "show", "--relative-to", str(tree)).stdout
    assert "rt  pid" in human and "write src/**, read docs/**" in human
    assert "worker  pid" in human and "write src/parser/gen/*" in human
    # nesting: the worker's line is indented deeper than the builder's
    indent = {n: next(len(line) - len(line.lstrip(" │├└─")) for line in human.splitlines()
                      if f"{n}  pid" in line) for n in ("rt", "builder", "worker")}
    assert indent["rt"] < indent["builder"] < indent["worker"]


def test_show_at_and_who_at(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("rt", [W_at(tree, "src")])
    lib.delegate("rt", "b", [W_at(tree, "src/lexer")])
    mid = lib.seq
    lib.release("b")
    at = json.loads(ledger_cmd(led, "show", "--at", str(mid), "--json").stdout)
    assert at["holders"] == [a.to_json() for a in lib.state_at(seq=mid).holders.values()]
    assert "liveness" not in at
    now = json.loads(ledger_cmd(led, "show", "--json").stdout)
    assert [h["name"] for h in now["holders"]] == ["rt"]
    # by ISO time: just after the delegation
    t = lib.state_at(seq=mid).last_ts
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 10**9)) + f".{(t // 1000) % 10**6:06d}Z"
    by_time = json.loads(ledger_cmd(led, "show", "--at", iso, "--json").stdout)
    assert by_time["seq"] == mid
    # who, now and then
    who = json.loads(ledger_cmd(led, "who", str(tree / "src/lexer/x.py"), "--json").stdout)
    assert [(h["chain"], h["deepest"]) for h in who["holders"]] == [(["rt"], True)]
    who_then = json.loads(ledger_cmd(led, "who", "src/lexer/x.py", "--at", str(mid), "--json",
                                     cwd=tree).stdout)
    lib_then = lib.who(str(tree / "src/lexer/x.py"), seq=mid)
    assert [(h["chain"], h["rule"], h["deepest"]) for h in who_then["holders"]] == \
        [(list(h.chain), h.rule.to_json(), h.deepest) for h in lib_then]
    human = ledger_cmd(led, "who", "src/lexer", "--at", str(mid), cwd=tree).stdout
    assert "'b' (delegated from 'rt')" in human
    res = ledger_cmd(led, "show", "--at", "999")
    assert res.returncode == 6
    assert "no state at seq 999" in one_error_line(res.stderr)


def test_replay_shows_a_grant_s_note_and_how_each_release_came(led: Path, lib: Ledger, tree: Path) -> None:
    """What issue 16 added to the events, in replay's words too (it was in
    --json only: a forced release read as an ordinary one): a grant's note,
    a forced release's reason, the exit status or signal, a release's note,
    when a reclaimed holder was last seen alive. Notes and reasons are
    quoted, their control characters escaped."""
    a = lib.register("a", [W_at(tree, "a")], note="nightly build")
    lib.release("a", token=a.token, returncode=3, note="tests failed")
    b = lib.register("b", [W_at(tree, "b")])
    lib.release("b", token=b.token, returncode=-9)
    lib.register("c", [W_at(tree, "c")])
    lib.release("c", force=True, reason="stuck for an hour\x1b[31m")
    d = lib.register("d", [W_at(tree, "d")])
    lib.release("d", token=d.token, note='ok"; its process was killed by SIGKILL')
    gone = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    lib.register("gone", [W_at(tree, "g")], pid=gone.pid)
    gone.kill()
    gone.wait()
    assert ledger_cmd(led, "reclaim").returncode == 0
    res = ledger_cmd(led, "replay", "--relative-to", str(tree))
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "registered  'a' pid" in text and '; note: "nightly build"' in text
    assert '; its process exited with status 3; note: "tests failed"' in text
    assert "released    'b' (pid" in text and "; its process was killed by SIGKILL" in text
    assert "released    'c' (pid" in text and '; forced, reason: "stuck for an hour\\x1b[31m"' in text
    assert "\x1b" not in text
    # (quoted, a quote in it escaped: a note never reads as the event's own words)
    assert 'released    \'d\' (pid' in text and '; note: "ok\\"; its process was killed by SIGKILL"' in text
    assert "reclaimed   'gone' because process gone" in text and "; last seen alive " in text


def test_replay_and_history_say_a_grant_was_advisory_and_what_it_met(led: Path, lib: Ledger, tree: Path) -> None:
    """An advisory grant over a live writer reads as one in replay and history
    (it read as a second ordinary write grant: fresh tester's F14), with the
    conflicts its line records; --json is the stored line, which has them."""
    lib.register("h", [W_at(tree, "src")])
    lib.register("lint", [W_at(tree, "src")], advisory=True)
    lib.register("calm", [W_at(tree, "docs")], advisory=True)
    for args in (("replay",), ("history", "lint")):
        res = ledger_cmd(led, *args, "--relative-to", str(tree))
        assert res.returncode == 0, res.stderr
        line = next(x for x in res.stdout.splitlines() if "registered  'lint'" in x)
        assert line.endswith("write src/**; advisory, despite 'h' holding write src/**"), line
    text = ledger_cmd(led, "replay", "--relative-to", str(tree)).stdout
    assert "registered  'calm' pid" in text and "write docs/**; advisory (no conflict)" in text
    assert "advisory" not in next(x for x in text.splitlines() if "registered  'h'" in x)
    stored = [json.loads(x) for x in ledger_cmd(led, "history", "lint", "--json").stdout.splitlines()]
    assert [c[0] for c in stored[0]["holder"]["advisory"]] == [["h"]]


def test_replay_says_what_each_event_did(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("rt", [W_at(tree, "src")])
    lib.delegate("rt", "mid", [W_at(tree, "src/parser"), W_at(tree, "src/lexer")])
    lib.delegate("mid", "leaf", [W_at(tree, "src/parser")])
    gone = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    zombie = subprocess.Popen([PY, "-c", "pass"])
    lib.register("gone", [W_at(tree, "tests")], pid=gone.pid)
    lib.register("zombie", [W_at(tree, "docs")], pid=zombie.pid)
    try:
        lib.register("newcomer", [W_at(tree, "src/parser/x")])
    except Exception:
        pass
    lib.release("mid")  # leaf is re-parented to rt
    gone.kill()
    gone.wait()
    wait_for(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, what="a zombie")
    rec = ledger_cmd(led, "reclaim", "--json")
    assert rec.returncode == 0
    doc = json.loads(rec.stdout)
    assert sorted((r["name"], r["reason"]) for r in doc["reclaimed"]) == \
        [("gone", "process_gone"), ("zombie", "zombie")]
    zombie.wait()

    res = ledger_cmd(led, "replay", "--relative-to", str(tree))
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert len(lines) == lib.seq
    text = res.stdout
    assert "registered  'rt' pid" in text
    assert "delegated   'leaf' from 'mid'" in text
    assert "refused     'newcomer'" in text and "'leaf' (delegated from 'mid', from 'rt')" in text
    assert "released    'mid'" in text and "re-parented 'leaf' to 'rt'" in text
    assert f"reclaimed   'gone' because process gone: pid {gone.pid} no longer exists" in text
    assert (f"reclaimed   'zombie' because zombie: pid {zombie.pid} has exited (a zombie: its parent has not "
            "reaped it)") in text

    # --json: JSON Lines, the stored events
    js = jl(ledger_cmd(led, "replay", "--json").stdout)
    assert js == [e.data for e in lib.events()]
    # filters
    only = jl(ledger_cmd(led, "replay", "--json", "--type", "reclaimed", "--type", "refused").stdout)
    assert [e["type"] for e in only] == ["refused", "reclaimed", "reclaimed"]
    sub = jl(ledger_cmd(led, "replay", "--json", "--holder", "mid").stdout)
    assert [e["seq"] for e in sub] == [e.seq for e in lib.events(holder="mid")]
    rng = jl(ledger_cmd(led, "replay", "--json", "--from", "2", "--until", "4").stdout)
    assert [e["seq"] for e in rng] == [2, 3, 4]
    by_path = jl(ledger_cmd(led, "replay", "--json", "--path", "docs", cwd=tree).stdout)
    assert [e["seq"] for e in by_path] == [e.seq for e in lib.events(path=str(tree / "docs"))]
    # a filtered replay still names the pid of a reclaimed holder
    rec_line = ledger_cmd(led, "replay", "--type", "reclaimed").stdout
    assert f"pid {gone.pid} no longer exists" in rec_line
    # --from an ISO time
    t = lib.state_at(seq=5).last_ts
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 10**9)) + f".{(t // 1000) % 10**6:06d}+00:00"
    from_t = jl(ledger_cmd(led, "replay", "--json", "--from", iso).stdout)
    assert from_t[0]["seq"] == 5 and from_t[-1]["seq"] == lib.seq


def test_replay_follow(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("first", [W_at(tree, "src")])
    p = subprocess.Popen([*CMD, "--ledger", str(led), "replay", "--follow", "--json", "--interval", "0.05"],
                         stdout=subprocess.PIPE, text=True, env=clean_env(), preexec_fn=as_from_a_terminal)
    try:
        assert json.loads(readline(p))["seq"] == 1
        lib.register("second", [W_at(tree, "docs")])
        lib.release("first")
        assert json.loads(readline(p))["holder"]["name"] == "second"
        assert json.loads(readline(p))["type"] == "released"
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 130


def test_replay_follow_misses_nothing_under_a_burst(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("first", [W_at(tree, "src")])
    p = subprocess.Popen([*CMD, "--ledger", str(led), "replay", "--follow", "--json", "--interval", "0.01"],
                         stdout=subprocess.PIPE, text=True, env=clean_env(), preexec_fn=as_from_a_terminal)
    seqs = []
    try:
        seqs.append(json.loads(readline(p))["seq"])
        for i in range(150):  # appends race with the follower's reads
            lib.register(f"b{i}", [W_at(tree, f"docs/{i}")])
        while len(seqs) < 151:
            seqs.append(json.loads(readline(p))["seq"])
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(10)
    assert seqs == list(range(1, 152))


def test_history_and_diff_match_library(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("rt", [W_at(tree, "src")])
    a = lib.seq
    lib.delegate("rt", "b", [W_at(tree, "src/lexer")])
    lib.delegate("b", "c", [W_at(tree, "src/lexer/x")])
    lib.release("b")
    b = lib.seq
    hist = jl(ledger_cmd(led, "history", "b", "--json").stdout)
    assert hist == [e.data for e in lib.history("b")]
    human = ledger_cmd(led, "history", "b").stdout
    assert len(human.splitlines()) == len(hist)
    d = json.loads(ledger_cmd(led, "diff", str(a), str(b), "--json").stdout)
    lib_d = lib.diff(a, b)
    assert d == {"a": a, "b": b, "added": list(lib_d.added), "removed": list(lib_d.removed),
                 "reparented": [{"name": n, "from": x, "to": y} for n, x, y in lib_d.reparented],
                 "rebound": list(lib_d.rebound), "regranted": list(lib_d.regranted)}
    assert d["added"] == ["c"]
    human = ledger_cmd(led, "diff", "1", str(b)).stdout
    assert "+ c" in human
    human = ledger_cmd(led, "diff", str(b - 1), str(b)).stdout
    assert "- b" in human and "c: parent b -> rt" in human
    none = ledger_cmd(led, "history", "nobody")
    assert none.returncode == 0 and "no events" in none.stderr


def test_snapshot_and_reclaim_dry_run(led: Path, lib: Ledger, tree: Path) -> None:
    p = subprocess.Popen([PY, "-c", "pass"])
    lib.register("w", [W_at(tree, "src")], pid=p.pid)
    p.wait()
    dry = json.loads(ledger_cmd(led, "reclaim", "--dry-run", "--json").stdout)
    assert dry["dry_run"] and [r["name"] for r in dry["reclaimed"]] == ["w"]
    assert dry["reclaimed"][0]["reason"] == "process_gone"
    assert [a.name for a in lib.holders()] == ["w"]  # nothing recorded
    human = ledger_cmd(led, "reclaim").stdout
    assert "reclaimed 'w'" in human and "process gone" in human
    assert lib.holders() == []
    assert "nothing to reclaim" in ledger_cmd(led, "reclaim").stdout
    snap = json.loads(ledger_cmd(led, "snapshot", "--json").stdout)
    assert snap == {"ledger": str(led), "seq": lib.seq, "written": True}
    assert ledger_cmd(led, "verify").stdout.startswith("ok:")


# -- check ------------------------------------------------------------------------------------------


def test_check_exit_codes_and_owner_chain(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("A", [W_at(tree, "src")])
    lib.delegate("A", "B", [W_at(tree, "src/parser")])
    lib.delegate("B", "D", [W_at(tree, "src/parser/deep")])
    ok = ledger_cmd(led, "check", "--write", "docs", "--read", "src", cwd=tree)
    assert ok.returncode == 0 and ok.stdout.startswith("granted")
    no = ledger_cmd(led, "check", "--write", "src/parser/deep/x", cwd=tree)
    assert no.returncode == 1
    assert "'D' (delegated from 'B', from 'A')" in no.stdout
    js = json.loads(ledger_cmd(led, "check", "--write", "src/parser/deep/x", "--json", cwd=tree).stdout)
    assert js["granted"] is False and js["conflict"]["chain"] == ["A", "B", "D"]
    assert js["conflict"]["type"] == "ScopeConflict"
    err = lib.find_conflict([W_at(tree, "src/parser/deep/x")])
    assert tuple(js["conflict"]["chain"]) == err.chain
    # as a delegation from B: the sibling D is in the way
    sib = ledger_cmd(led, "check", "--parent", "B", "--write", "src/parser/deep", cwd=tree)
    assert sib.returncode == 1 and "sibling 'D'" in sib.stdout
    assert ledger_cmd(led, "check", "--parent", "B", "--write", "src/parser/other", cwd=tree).returncode == 0
    assert ledger_cmd(led, "check", "--parent", "nobody", "--write", "src", cwd=tree).returncode == 6
    assert ledger_cmd(led, "check", "--name", "A", "--write", "docs", cwd=tree).returncode == 1
    seq = lib.seq
    assert lib.seq == seq  # check records nothing


def test_check_relative_to_shows_paths_below_the_root_relative(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("A", [W_at(tree, "src")])
    no = ledger_cmd(led, "check", "--write", "src/x", "--relative-to", ".", cwd=tree)
    assert no.returncode == 1
    assert "write src/x/** conflicts with holder 'A' holding write src/**" in no.stdout
    assert str(tree) not in no.stdout
    ok = ledger_cmd(led, "check", "--write", "docs", "--relative-to", str(tree), cwd=tree)
    assert ok.returncode == 0 and "granted: write docs/**" in ok.stdout
    # paths outside the root stay absolute; --json is never rewritten
    out = ledger_cmd(led, "check", "--write", "src/x", "--relative-to", str(tree / "docs"), cwd=tree)
    assert f"write {tree}/src/x/**" in out.stdout
    js = json.loads(ledger_cmd(led, "check", "--write", "src/x", "--relative-to", ".", "--json",
                               cwd=tree).stdout)
    assert js["request"]["rules"][0][0] == str(tree / "src" / "x")


def test_check_unknown_parent_is_an_error_like_run(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("A", [W_at(tree, "src")])
    seq = lib.seq
    chk = ledger_cmd(led, "check", "--parent", "nope", "--write", "src/parser", cwd=tree)
    assert chk.returncode == 6, chk
    assert chk.stdout == ""  # no "refused: ..." answer: it is an error, not a refusal
    line = one_error_line(chk.stderr)
    assert line == "error: no live holder named 'nope'"
    run = ledger_cmd(led, "run", "-n", "--name", "kid", "--parent", "nope", "--write", "src/parser",
                     "--", "true", cwd=tree)
    assert run.returncode == 6 and one_error_line(run.stderr) == line
    # --json: the error document on stdout, not a check answer
    js = ledger_cmd(led, "--json", "check", "--parent", "nope", "--write", "src/parser", cwd=tree)
    assert js.returncode == 6
    err = json.loads(js.stdout)
    assert set(err) == {"error"}
    assert err["error"]["type"] == "UnknownHolder" and err["error"]["name"] == "nope"
    assert err["error"]["exit_code"] == 6
    # from $SCOPELEDGER_HOLDER too
    env = ledger_cmd(led, "check", "--write", "src/parser", cwd=tree,
                     env=clean_env(SCOPELEDGER_HOLDER="gone"))
    assert env.returncode == 6 and env.stdout == ""
    assert one_error_line(env.stderr) == "error: no live holder named 'gone'"
    # a real refusal is still the answer on stdout, exit 1; a grant still exit 0
    lib.delegate("A", "B", [W_at(tree, "src/parser")])
    no = ledger_cmd(led, "check", "--parent", "A", "--write", "src/parser/x", cwd=tree)
    assert no.returncode == 1 and no.stdout.startswith("refused: ") and no.stderr == ""
    ok = ledger_cmd(led, "check", "--parent", "A", "--write", "src/lexer", cwd=tree)
    assert ok.returncode == 0 and ok.stdout.startswith("granted")
    assert lib.refresh() == seq + 1  # only the delegation above: check records nothing


@pytest.mark.parametrize("args", [
    ["run", "--name", "kid", "--top-level", "--parent", "nope", "--write", "src", "--", "touch", "ran"],
    ["run", "--parent", "A", "--top-level", "--write", "src/parser", "--", "touch", "ran"],
    ["check", "--top-level", "--parent", "A", "--write", "src/parser"],
    ["check", "--parent", "nope", "--top-level", "--write", "docs"],
])
def test_parent_and_top_level_exclude_each_other(led: Path, lib: Ledger, tree: Path,
                                                 args: list[str]) -> None:
    lib.register("A", [W_at(tree, "src")])
    seq = lib.seq
    res = ledger_cmd(led, *args, cwd=tree, env=clean_env(SCOPELEDGER_HOLDER="A"))
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert "--parent" in line and "--top-level" in line, line
    assert res.stdout == ""
    assert not (tree / "ran").exists()
    assert lib.refresh() == seq  # nothing recorded, no refusal either
    # each alone is fine
    assert ledger_cmd(led, "check", "--top-level", "--write", "docs", cwd=tree).returncode == 0
    assert ledger_cmd(led, "check", "--parent", "A", "--write", "src/parser", cwd=tree).returncode == 0


@pytest.mark.parametrize("cmd", [["run", "-n"], ["check"]])
def test_token_without_holder_is_a_usage_error(led: Path, lib: Ledger, tree: Path,
                                               cmd: list[str]) -> None:
    # $SCOPELEDGER_TOKEN belongs to an enclosing holder: without
    # $SCOPELEDGER_HOLDER the request is not what the caller meant (a
    # top-level 'run' could wait for ever on its own parent's scope).
    token = lib.register("A", [W_at(tree, "src")]).token
    seq = lib.seq
    tail = ["--write", "src/parser"] + (["--", "touch", "ran"] if cmd[0] == "run" else [])
    for variables in ({"SCOPELEDGER_TOKEN": str(token)}, {"SCOPELEDGER_TOKEN": "junk"}):
        res = ledger_cmd(led, *cmd, *tail, cwd=tree, env=clean_env(**variables))
        assert res.returncode == 2, (variables, res)
        line = one_error_line(res.stderr)
        assert "$SCOPELEDGER_TOKEN is set but $SCOPELEDGER_HOLDER is not" in line, line
        assert "--top-level" in line
        assert res.stdout == ""
    res = ledger_cmd(led, "--json", *cmd, *tail, cwd=tree, env=clean_env(SCOPELEDGER_TOKEN="1"))
    doc = res.stderr if cmd[0] == "run" else res.stdout
    err = json.loads(doc.splitlines()[0])["error"]
    assert res.returncode == 2 and err["exit_code"] == 2 and "SCOPELEDGER_HOLDER" in err["message"]
    assert not (tree / "ran").exists()
    assert lib.refresh() == seq  # nothing recorded, no refusal either
    # what decides without the variables: --parent, --top-level (the
    # variable is not consulted), and the pair
    for extra, env_vars, code in (
            (["--parent", "A"], {"SCOPELEDGER_TOKEN": str(token)}, 0),
            (["--top-level"], {"SCOPELEDGER_TOKEN": str(token)}, 1),  # conflicts with A
            (["--top-level"], {"SCOPELEDGER_TOKEN": "", "SCOPELEDGER_HOLDER": ""}, 1),
            ([], {"SCOPELEDGER_TOKEN": str(token), "SCOPELEDGER_HOLDER": "A"}, 0)):
        res = ledger_cmd(led, *cmd, *extra, *tail, cwd=tree, env=clean_env(**env_vars))
        assert res.returncode == code, (extra, env_vars, res)


@pytest.mark.parametrize("cmd", [["run", "-n"], ["check"]])
def test_enclosing_holder_variables_are_read_alike_by_run_and_check(led: Path, lib: Ledger, tree: Path,
                                                                    cmd: list[str]) -> None:
    # 'check' ignored a stale $SCOPELEDGER_TOKEN that stops 'run' (exit 6); an
    # empty $SCOPELEDGER_HOLDER counted as unset (an empty $SCOPELEDGER_DIR is
    # a usage error); and the token took ' 5', '+5', '1_0' as 5 and 10.
    token = lib.register("A", [W_at(tree, "src")]).token
    lib.release("A")
    lib.register("A", [W_at(tree, "src")])  # a new grant: the old token is stale
    seq = lib.seq
    tail = ["--write", "src/parser"] + (["--", "touch", "ran"] if cmd[0] == "run" else [])

    def ask(**variables: str) -> subprocess.CompletedProcess[str]:
        return ledger_cmd(led, *cmd, *tail, cwd=tree, env=clean_env(**variables))
    res = ask(SCOPELEDGER_HOLDER="A", SCOPELEDGER_TOKEN=str(token))
    assert res.returncode == 6, res
    assert one_error_line(res.stderr) == (f"error: the enclosing holder 'A' (token {token}, from "
                                          "$SCOPELEDGER_HOLDER) is no longer live")
    assert res.stdout == ""  # an error, not check's answer
    for variable, other in (("SCOPELEDGER_HOLDER", {}), ("SCOPELEDGER_HOLDER", {"SCOPELEDGER_TOKEN": "3"}),
                            ("SCOPELEDGER_TOKEN", {"SCOPELEDGER_HOLDER": "A"}), ("SCOPELEDGER_TOKEN", {})):
        for empty in ("", "  "):
            res = ask(**{variable: empty, **other})
            assert res.returncode == 2, (variable, other, res)
            assert one_error_line(res.stderr).startswith(f"error: ${variable} is set but empty: "), res
    for bad in (" 5", "5 ", "+5", "-5", "1_0", "05", "0", "\uff15", "5.0", "0x5"):
        res = ask(SCOPELEDGER_HOLDER="A", SCOPELEDGER_TOKEN=bad)
        assert res.returncode == 2, (bad, res)
        assert one_error_line(res.stderr).startswith(f"error: invalid $SCOPELEDGER_TOKEN {bad!r}: "
                                                     "expected a positive integer"), res
    assert not (tree / "ran").exists()
    assert lib.refresh() == seq  # nothing recorded, no refusal either
    # the live grant's token: granted (a delegation from A)
    live = lib.holder("A").token
    res = ask(SCOPELEDGER_HOLDER="A", SCOPELEDGER_TOKEN=str(live))
    assert res.returncode == 0, res


def test_release_token_is_read_as_the_environment_token(led: Path, lib: Ledger, tree: Path) -> None:
    token = lib.register("A", [W_at(tree, "src")]).token
    for bad in (" 1", "+1", "1_0", "01", "0", "-1"):
        res = ledger_cmd(led, "release", "A", f"--token={bad}")
        assert res.returncode == 2, (bad, res)
        assert "expected a positive integer" in one_error_line(res.stderr)
    assert [a.name for a in lib.holders()] == ["A"]
    res = ledger_cmd(led, "release", "A", "--token", str(token))
    assert res.returncode == 0, res
    assert lib.holders() == []


def test_run_and_release_record_a_note(led: Path, lib: Ledger, tree: Path) -> None:
    """``run --note`` is the grant's note and ``release --note`` the release's,
    as the library's ``note=`` (there was no way to give either: fresh
    tester's F10); control characters kept, as the library keeps them, and
    escaped where shown."""
    res = ledger_cmd(led, "run", "--name", "job", "--note", "nightly \x1b build", "--write", "src", "--",
                     "touch", "ran", cwd=tree)
    assert res.returncode == 0, res
    [grant] = [e for e in lib.events() if e.type == "registered"]
    assert grant.data["holder"]["note"] == "nightly \x1b build"
    lib.register("h", [W_at(tree, "docs")])
    res = ledger_cmd(led, "release", "h", "--note", "done by hand", "--json")
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["note"] == "done by hand"
    [gone] = [e for e in lib.events() if e.type == "released" and e.data["name"] == "h"]
    assert gone.data["note"] == "done by hand" and "forced" not in gone.data
    lib.register("f", [W_at(tree, "f")])
    res = ledger_cmd(led, "release", "f", "--force", "--reason", "stuck", "--note", "ticket 12")
    assert res.returncode == 0, res
    [forced] = [e for e in lib.events() if e.type == "released" and e.data["name"] == "f"]
    assert forced.data["forced"] == "stuck" and forced.data["note"] == "ticket 12"
    text = ledger_cmd(led, "replay").stdout
    assert '; note: "nightly \\x1b build"' in text and '; note: "done by hand"' in text


@pytest.mark.parametrize("note, why", [
    ("", "a note of 1 to 4096 characters, not 0"),
    ("x" * 4097, "a note of 1 to 4096 characters, not 4097"),
    (os.fsdecode(b"a\xff"), "a note must be text UTF-8 can encode"),
])
def test_a_bad_note_is_a_usage_error_and_records_nothing(led: Path, lib: Ledger, tree: Path, note: str,
                                                         why: str) -> None:
    lib.register("h", [W_at(tree, "docs")])
    seq = lib.refresh()
    for args in (("run", "--name", "job", "--note", note, "--write", "src", "--", "touch", "ran"),
                 ("release", "h", "--note", note)):
        res = ledger_cmd(led, *args, cwd=tree)
        assert res.returncode == 2, res
        line = one_error_line(res.stderr)
        assert "'--note'" in line and why in line, line
    assert not (tree / "ran").exists()
    assert lib.refresh() == seq and [a.name for a in lib.holders()] == ["h"]


def test_check_counts_dead_holders_as_reclaimable(led: Path, lib: Ledger, tree: Path) -> None:
    p = subprocess.Popen([PY, "-c", "pass"])
    lib.register("dead", [W_at(tree, "src")], pid=p.pid)
    p.wait()
    js = json.loads(ledger_cmd(led, "check", "--write", "src", "--json", cwd=tree).stdout)
    assert js["granted"] is True
    assert js["would_reclaim"] == [{"name": "dead", "reason": "process_gone"}]
    assert [a.name for a in lib.holders()] == ["dead"]


@pytest.mark.parametrize("parent, name, spec", [
    (None, "new", "src"),                 # over a dead top-level holder: reclaimed first
    ("live", "kid", "docs/x"),           # over a dead sibling's subtree
    ("dead", "dead", "src/parser"),      # the dead parent's own name: never reclaimed for it
    ("dead", "kid", "src/lexer"),        # from a dead parent that is live in the log
    (None, "live", "tests"),              # a live holder's name
    (None, "other", "docs"),              # over a live holder: refused, nothing reclaimed
])
def test_check_decides_as_the_ledger_then_does(led: Path, lib: Ledger, tree: Path, tmp_path: Path,
                                               parent: str | None, name: str, spec: str) -> None:
    p = subprocess.Popen([PY, "-c", "pass"])
    lib.register("dead", [W_at(tree, "src")], pid=p.pid)
    p.wait()
    lib.register("live", [W_at(tree, "docs")])
    q = subprocess.Popen([PY, "-c", "pass"])
    lib.delegate("live", "sib", [W_at(tree, "docs/x")], pid=q.pid)
    q.wait()
    rules = [W_at(tree, spec)]
    decision = lib.decide(name, rules, parent=parent)
    err = decision.refusal
    reclaimed = [(r.name, r.reason) for r in decision.reclaimed]
    copy = tmp_path / "copy"
    shutil.copytree(led, copy)
    with Ledger.open(copy) as real:
        seq = real.seq
        try:
            if parent is None:
                real.register(name, rules)
            else:
                real.delegate(parent, name, rules)
            got = None
        except LedgerError as exc:
            got = exc
        done = [(e.data["name"], e.data["reason"]) for e in real.events(since=seq + 1)
                if e.type == "reclaimed"]
    assert type(err) is type(got)
    assert reclaimed == done
    assert [a.name for a in lib.holders()] == ["dead", "live", "sib"]  # check recorded nothing


# -- run --------------------------------------------------------------------------------------------


def test_run_passes_exit_code_and_environment(led: Path, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    code = ("import json, os, sys; json.dump({k: os.environ.get(k) for k in "
            "('SCOPELEDGER_DIR', 'SCOPELEDGER_HOLDER', 'SCOPELEDGER_TOKEN')}, open(sys.argv[1], 'w')); "
            "sys.exit(7)")
    res = ledger_cmd(led, "run", "--name", "job", "--write", "src", "--read", "docs", "--",
                     PY, "-c", code, str(out), cwd=tree)
    assert res.returncode == 7, res.stderr
    seen = json.loads(out.read_text())
    with Ledger.open(led) as lib:
        events = list(lib.events())
        assert [e.type for e in events] == ["registered", "attached", "released"]
        assert seen == {"SCOPELEDGER_DIR": str(led), "SCOPELEDGER_HOLDER": "job",
                        "SCOPELEDGER_TOKEN": str(events[0].seq)}
        assert events[0].rules == (W_at(tree, "src"), R_at(tree, "docs"))
        assert lib.holders() == []
    # killed by a signal: 128 + N
    res = ledger_cmd(led, "run", "--write", "src", "--", "sh", "-c", "kill -TERM $$", cwd=tree)
    assert res.returncode == 128 + signal.SIGTERM
    # not found / not executable
    res = ledger_cmd(led, "run", "--write", "src", "--", str(tmp_path / "no-such-command"), cwd=tree)
    assert res.returncode == 127 and "no such file" in one_error_line(res.stderr).lower()
    (tmp_path / "plain.txt").write_text("x")
    res = ledger_cmd(led, "run", "--write", "src", "--", str(tmp_path / "plain.txt"), cwd=tree)
    assert res.returncode == 126
    with Ledger.open(led) as lib:
        assert lib.holders() == []
    # --json: a summary on stderr, stdout stays the command's
    res = ledger_cmd(led, "run", "--json", "--name", "j2", "--write", "src", "--", "echo", "hi", cwd=tree)
    assert res.stdout == "hi\n"
    summary = json.loads(res.stderr.splitlines()[-1])
    assert summary["name"] == "j2" and summary["exit_code"] == 0


def test_run_nonblock_refused_names_owner_chain(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("A", [W_at(tree, "src")])
    lib.delegate("A", "B", [W_at(tree, "src/lexer")])
    res = ledger_cmd(led, "run", "-n", "--write", "src/lexer/x", "--", "true", cwd=tree)
    assert res.returncode == 1
    assert "'B' (delegated from 'A')" in one_error_line(res.stderr)
    res = ledger_cmd(led, "run", "-n", "-E", "42", "--write", "src", "--", "true", cwd=tree)
    assert res.returncode == 42
    res = ledger_cmd(led, "run", "-w", "0.3", "--write", "src", "--", "true", cwd=tree)
    notice, error = res.stderr.splitlines()
    assert notice.startswith("Blocking waiting for the scope: ")
    assert res.returncode == 1 and error.startswith("error: timed out after 0.3s waiting for the scope")
    refused = [e for e in lib.events(types=["refused"])]
    assert refused and refused[0].data["chain"] == ["A", "B"]


def test_run_wait_until_holder_releases(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("holder", [W_at(tree, "src")])
    p = subprocess.Popen([*CMD, "--ledger", str(led), "run", "-w", "20", "--name", "waiter",
                          "--write", "src/parser", "--", "true"], cwd=tree, env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(True for _ in lib.events(types=["refused"])), what="the waiter's refusal")
    said = lines_of(p.stderr)
    notice = said.get(timeout=60)  # said once refused, before it waits (not a sleep's guess at when)
    assert notice is not None and notice.startswith("Blocking waiting for the scope"), notice
    assert p.poll() is None  # still waiting
    lib.release("holder")
    assert p.wait(timeout=60) == 0  # it noticed the release before its -w 20 ran out (a bound, not a measure)
    err = "".join(iter(lambda: said.get(timeout=60), None))
    assert "error" not in err, err
    err = notice + err
    assert "Blocking waiting for the scope" in err
    types = [(e.type, e.data.get("name") or e.data.get("holder", {}).get("name")) for e in lib.events()]
    assert ("registered", "waiter") in types
    assert types.index(("registered", "waiter")) > types.index(("released", "holder"))  # granted after, not before
    # polite: one refusal on record, not one per poll
    assert len(list(lib.events(types=["refused"]))) == 1


def test_nested_run_delegates_from_parent_holder(led: Path, tree: Path) -> None:
    show_holder = "import os; print(os.environ['SCOPELEDGER_HOLDER'])"
    inner = f"ledger run --name inner --write src/parser -- {PY} -c \"{show_holder}\""
    res = ledger_cmd(led, "run", "--name", "outer", "--write", "src", "--", "sh", "-c", inner, cwd=tree)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "inner"
    with Ledger.open(led) as lib:
        grants = [e.data["holder"] for e in lib.events(types=["registered", "delegated"])]
    assert [(g["name"], g["parent"]) for g in grants] == [("outer", None), ("inner", "outer")]
    # outside its parent's scope: refused as a delegation
    bad = "ledger run -n --name inner2 --write docs -- true"
    res = ledger_cmd(led, "run", "--name", "outer2", "--write", "src", "--", "sh", "-c", bad, cwd=tree)
    assert res.returncode == 1 and "cannot delegate" in res.stderr
    # a stale parent token is refused
    res = ledger_cmd(led, "run", "--write", "src", "--", "true", cwd=tree,
                     env=clean_env(SCOPELEDGER_HOLDER="outer", SCOPELEDGER_TOKEN="1"))
    assert res.returncode == 6 and "no longer live" in res.stderr


def test_run_forwards_sigterm(led: Path, tree: Path, tmp_path: Path) -> None:
    marker = tmp_path / "got-term"
    code = ("import signal, sys, time\n"
            "def h(*a):\n    open(sys.argv[1], 'w').write('term'); sys.exit(5)\n"
            "signal.signal(signal.SIGTERM, h)\nprint('ready', flush=True)\ntime.sleep(30)\n")
    p = subprocess.Popen([*CMD, "--ledger", str(led), "run", "--name", "t", "--write", "src", "--",
                          PY, "-c", code, str(marker)], cwd=tree, env=clean_env(),
                         stdout=subprocess.PIPE, text=True)
    assert readline(p).strip() == "ready"
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 5
    assert marker.read_text() == "term"
    with Ledger.open(led) as lib:
        assert lib.holders() == []
        assert [e.type for e in lib.events()][-1] == "released"


def test_wrapper_sigkill_reclaimed_only_after_child_is_gone(led: Path, tree: Path) -> None:
    p = subprocess.Popen([*CMD, "--ledger", str(led), "run", "--name", "k", "--write", "src", "--",
                          PY, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
                         cwd=tree, env=clean_env(), stdout=subprocess.PIPE, text=True)
    assert readline(p).strip() == "ready"
    with Ledger.open(led) as lib:
        child = lib.holder("k").pid
        assert child != p.pid  # bound to the command's process
        p.kill()
        p.wait()
        res = json.loads(ledger_cmd(led, "reclaim", "--json").stdout)
        assert res["reclaimed"] == []  # the command still runs
        assert lib.holder("k").pid == child
        os.kill(child, signal.SIGKILL)

        def dead() -> bool:
            try:
                return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(dead, what="the orphaned command to die")
        res = json.loads(ledger_cmd(led, "reclaim", "--json").stdout)
        assert [r["name"] for r in res["reclaimed"]] == ["k"]
        assert res["reclaimed"][0]["reason"] in ("process_gone", "zombie")
        assert lib.holders() == []


# -- review fixes ----------------------------------------------------------------------------


def test_nested_run_outside_parent_scope_fails_at_once(led: Path, tree: Path) -> None:
    # -w and the default (wait for ever) alike: a refusal that cannot clear
    # by waiting fails at once, with one error line: not the notice of a wait,
    # nor -w's "timed out" after 20 s; waiting for ever would meet the bound
    # (a bound, not a measure: the verdict does not depend on the machine's load).
    for wait in (["-w", "20"], []):
        inner = " ".join(["ledger", "run", *wait, "--write", "docs", "--", "true"])
        script = f"{inner}; echo inner=$? >&2"
        res = ledger_cmd(led, "run", "--write", "src", "--", "sh", "-c", script, cwd=tree, timeout=120)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert lines[-1] == "inner=1", res.stderr
        assert len(lines) == 2 and lines[0].startswith("error: cannot delegate"), res.stderr
        assert "Blocking waiting" not in res.stderr


def test_waiting_runs_record_at_most_one_refusal_each(led: Path, lib: Ledger, tree: Path) -> None:
    # 'run' waits in the ledger's queue (the library's wait=): a waiter records
    # its first refusal, or none when it finds an earlier waiter in its way, and
    # never another while it waits, however often the ledger changes.
    lib.register("holder", [W_at(tree, "src")])
    n = 6
    procs = [subprocess.Popen([*CMD, "--ledger", str(led), "run", "-w", "30", "--name", f"w{i}",
                               "--write", "src/parser", "--", "true"], cwd=tree, env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    wait_for(lambda: len(queued_names(led)) == n, what="every waiter in the queue")
    # Many state changes while they wait: none may record another refusal.
    for i in range(15):
        lib.register(f"other{i}", [W_at(tree, "docs")])
        lib.release(f"other{i}")
        time.sleep(0.05)
    time.sleep(0.5)
    waiting = list(lib.events(types=["refused"]))
    lib.release("holder")
    for p in procs:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    refused = list(lib.events(types=["refused"]))
    assert refused == waiting  # none after the queue was full, nor once the scope was free
    per_waiter: dict[str, int] = {}
    for e in refused:
        per_waiter[e.data["request"]["name"]] = per_waiter.get(e.data["request"]["name"], 0) + 1
    assert 1 <= len(refused) <= n and max(per_waiter.values()) == 1, per_waiter
    assert queued_names(led) == []


@pytest.mark.parametrize("args", [
    ["show", "--at", "9999-12-31"],
    ["replay", "--until", "9999-12-31T23:59:59Z"],
    ["replay", "--from", "9999-12-31"],
    ["diff", "9999-12-31", "1"],
    ["diff", "1", "9999-12-31T23:59:59.9999999Z"],
    ["who", "/tmp", "--at", "9999-12-31"],
    ["show", "--at", "0001-01-01T00:00:00+14:00"],
    ["show", "--at", "9999-12-31T23:59:59-14:00"],
    ["--lock-timeout", "nan", "show"],
    ["--lock-timeout", "inf", "show"],
    ["--lock-timeout", "-inf", "show"],
    ["--lock-timeout", "1e308", "show"],
    ["run", "-w", "nan", "--write", "x", "--", "true"],
    ["run", "-w", "inf", "--write", "x", "--", "true"],
    ["run", "-w", "1e308", "--write", "x", "--", "true"],
])
def test_out_of_range_values_are_usage_errors(led: Path, lib: Ledger, tree: Path, args: list[str]) -> None:
    lib.register("a", [W_at(tree, "src")])
    res = ledger_cmd(led, *args, cwd=tree)
    assert res.returncode == 2, res.stderr
    line = one_error_line(res.stderr)
    assert "internal error" not in line
    assert "out of range" in line or "finite" in line


@pytest.mark.parametrize("interval", ["nan", "inf", "0.001", "1e308"])
def test_out_of_range_follow_intervals_are_usage_errors(led: Path, lib: Ledger, interval: str) -> None:
    # (--interval nan was taken, and the first wait failed: "internal error", exit 70)
    lib.register("a", [ScopeRule("/a", "write")])
    res = ledger_cmd(led, "replay", "-f", "--interval", interval, subprocess_=True, timeout=60)
    assert res.returncode == 2, res.stderr
    line = one_error_line(res.stderr)
    assert line.startswith("error: invalid value for '--interval': ") and "internal error" not in line, line
    assert "out of range" in line or "finite" in line, line


def test_times_name_exactly_the_span_of_their_precision(led: Path, lib: Ledger, tree: Path) -> None:
    import datetime as dt

    lib.register("a", [W_at(tree, "src")])
    lib.release("a")
    first = next(iter(lib.events())).ts

    def label(unit_ns: int, start_ns: int) -> str:
        t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=start_ns // 1000)
        if unit_ns == 86400 * 10**9:
            return t.strftime("%Y-%m-%d")
        if unit_ns == 3600 * 10**9:
            return t.strftime("%Y-%m-%dT%H") + "Z"
        if unit_ns == 60 * 10**9:
            return t.strftime("%Y-%m-%dT%H:%M") + "Z"
        base = t.strftime("%Y-%m-%dT%H:%M:%S")
        if unit_ns == 10**9:
            return base + "Z"
        digits = {10**6: 3, 10**3: 6, 1: 9}[unit_ns]
        return f"{base}.{str(start_ns % 10**9).zfill(9)[:digits]}Z"

    for unit in (86400 * 10**9, 3600 * 10**9, 60 * 10**9, 10**9, 10**6, 10**3, 1):
        start = first - first % unit
        here = ledger_cmd(led, "--json", "show", "--at", label(unit, start))
        before = ledger_cmd(led, "--json", "show", "--at", label(unit, start - unit))
        assert here.returncode == 0 and before.returncode == 0, (here.stderr, before.stderr)
        assert json.loads(here.stdout)["seq"] >= 1, label(unit, start)
        assert json.loads(before.stdout)["seq"] == 0, label(unit, start - unit)
        # --from the next span: nothing from the first event's span
        after = ledger_cmd(led, "--json", "replay", "--from", label(unit, start + unit))
        assert all(e["ts"] >= start + unit for e in jl(after.stdout)), label(unit, start + unit)


def test_replay_relative_to_replaces_whole_path_prefixes_only(led: Path, lib: Ledger, tmp_path: Path) -> None:
    root = (tmp_path / "r").resolve()
    (root / "src").mkdir(parents=True)
    other = Path(str(tmp_path.resolve() / "var") + str(root)) / "nc-x"
    other.mkdir(parents=True)
    lib.register("owner", [parse_rule(str(other), "write", "/")])
    res = ledger_cmd(led, "run", "-n", "--name", "late", "--write", str(other), "--", "true")
    assert res.returncode == 1
    res = ledger_cmd(led, "replay", "--relative-to", str(root), "--type", "refused")
    assert res.returncode == 0, res.stderr
    assert str(other) in res.stdout, res.stdout
    assert "varnc-x" not in res.stdout


def test_control_characters_are_escaped_in_human_output(led: Path, lib: Ledger, tree: Path) -> None:
    evil = tree / "e\x1b[31mx\x07\x9b"
    evil.mkdir()
    lib.register("evil", [parse_rule(str(evil), "write", "/")])
    res = ledger_cmd(led, "run", "-n", "--name", "late", "--write", str(evil), "--", "true")
    assert res.returncode == 1
    assert "\x1b" not in res.stderr and "\\x1b" in res.stderr
    for args in (["replay"], ["show"], ["who", str(evil)], ["history", "evil"],
                 ["check", "--write", str(evil)], ["history", "late"]):
        res = ledger_cmd(led, *args)
        assert res.returncode in (0, 1), res.stderr
        out = res.stdout + res.stderr
        for ch in ("\x1b", "\x07", "\x9b"):
            assert ch not in out, (args, out)
        assert "\\x1b[31mx\\x07\\x9b" in out, (args, out)
    # JSON stays exact
    res = ledger_cmd(led, "--json", "show")
    assert json.loads(res.stdout)["holders"][0]["rules"][0][0] == str(evil)


def test_control_characters_in_a_given_path_are_escaped_in_errors(tmp_path: Path) -> None:
    # A newline must not split the error line (it was turned into a space:
    # another path), ESC must not reach the terminal; --json keeps them exact.
    missing = tmp_path / "a\nb\x1bc  d"
    shown = f"{tmp_path}/a\\x0ab\\x1bc  d"
    for args in (["--ledger", str(missing), "show"], ["show", "--ledger", str(missing)]):
        res = invoke([*args], env=clean_env())
        assert res.returncode == 6
        assert one_error_line(res.stderr) == (f"error: no ledger at {shown}: nothing has been recorded "
                                              "there (choose one with --ledger DIR or $SCOPELEDGER_DIR)")
    res = invoke(["show"], env=clean_env(SCOPELEDGER_DIR=str(missing)))
    assert res.returncode == 6 and shown in one_error_line(res.stderr)
    res = invoke(["--json", "--ledger", str(missing), "show"], env=clean_env())
    assert f"no ledger at {missing}:" in json.loads(res.stdout)["error"]["message"]
    # a ledger below a regular file: both paths escaped
    afile = tmp_path / "f\ng"
    afile.write_text("")
    res = subprocess.run([*CMD, "--ledger", str(afile / "l"), "run", "--write", str(tmp_path), "--",
                          "true"], capture_output=True, text=True, env=clean_env())
    assert res.returncode == 5
    assert one_error_line(res.stderr) == (f"error: unsafe ledger path {tmp_path}/f\\x0ag/l: "
                                          f"{tmp_path}/f\\x0ag is a regular file, not a directory")
    # a success line naming the ledger: escaped, and no markup taken from it
    odd = tmp_path / "[red]x  \ny"
    with Ledger.open(odd) as ledger:
        ledger.register("a", [ScopeRule("/a", "write")])
    res = invoke(["--ledger", str(odd), "snapshot"], env=clean_env())
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"snapshot at seq 1 in {tmp_path}/[red]x  \\x0ay\n"
    # a warning too, and two spaces stay two (they were made one: another path)
    os.chmod(odd, 0o750)
    res = invoke(["--ledger", str(odd), "reclaim"], env=clean_env())
    assert res.returncode == 0, res.stderr
    assert res.stderr == f"warning: tightening mode of {tmp_path}/[red]x  \\x0ay from 0750 to 0700\n"


@pytest.mark.parametrize("ch", ["\u2028", "\u2029", "\u202e", "\u2066", "\x85", "\u200f"])
def test_separators_and_bidi_controls_in_a_path_are_escaped_in_errors(tmp_path: Path, ch: str) -> None:
    # U+2028/U+2029 break the line in some terminals and viewers, U+202E
    # shows the rest of a path backwards ('x\u202egpj.exe' reads 'xexe.jpg'):
    # an error must show the path as it is, on one line.
    missing = tmp_path / f"led{ch}gpj.exe"
    shown = f"{tmp_path}/led\\u{ord(ch):04x}gpj.exe" if ord(ch) > 0xff else f"{tmp_path}/led\\x{ord(ch):02x}gpj.exe"
    res = invoke(["--ledger", str(missing), "show"], env=clean_env())
    assert res.returncode == 6
    assert one_error_line(res.stderr) == (f"error: no ledger at {shown}: nothing has been recorded "
                                          "there (choose one with --ledger DIR or $SCOPELEDGER_DIR)")
    assert ch not in res.stderr
    res = invoke(["--json", "--ledger", str(missing), "show"], env=clean_env())
    assert f"no ledger at {missing}:" in json.loads(res.stdout)["error"]["message"]  # exact in JSON


def cli_patched(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ledger ARGS...`` in a new Python process that first runs ``prelude``
    (say, to make a system call fail as a failing disk would)."""
    code = f"import errno, os, sys\n{prelude}\nfrom scopeledger import cli\ncli.main(sys.argv[1:])\n"
    return subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, env=clean_env(),
                          timeout=60)


#: A prelude making ``os.<call>`` fail with EIO on a descriptor of file ``path``.
EIO_ON = """
_real_{call} = os.{call}
def _eio(fd, *args):
    if os.readlink(f"/proc/self/fd/{{fd}}") == {path!r}:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return _real_{call}(fd, *args)
os.{call} = _eio
"""


@pytest.mark.parametrize("args", [["show"], ["replay"], ["who", "/a"], ["reclaim"], ["check", "--write", "/a"],
                                  ["run", "--write", "/a", "--", "true"]])
def test_a_read_error_after_opening_names_the_log(led: Path, lib: Ledger, args: list[str]) -> None:
    # An OSError from pread on the log's descriptor named no file ('error:
    # input/output error', exit 7). It names the log in full, as an error
    # opening it does. (lseek, for the log's size: tests/test_storage.py.)
    lib.register("a", [ScopeRule("/b", "write")])
    log = str(led / "events.jsonl")
    res = cli_patched(EIO_ON.format(call="pread", path=log), "--ledger", str(led), *args)
    assert res.returncode == 7, res
    assert one_error_line(res.stderr) == f"error: failed to read the log: {log}: Input/output error"
    res = cli_patched(EIO_ON.format(call="pread", path=log), "--json", "--ledger", str(led), *args)
    doc = (res.stderr if args[0] == "run" else res.stdout).splitlines()[0]  # run's JSON: stderr
    err = json.loads(doc)["error"]
    assert (res.returncode, err["type"], err["path"], err["exit_code"]) == (7, "LedgerIOError", log, 7)


def test_snapshot_housekeeping_the_os_refuses_is_a_warning_naming_the_file(led: Path, lib: Ledger) -> None:
    lib.register("a", [ScopeRule("/a", "write")])
    stale = led / "snapshots" / ".tmp-999999-1"
    stale.touch(mode=0o600)
    refuse = ("_real_unlink = os.unlink\n"
              "def _refuse(name, *a, dir_fd=None, **k):\n"
              "    if dir_fd is not None:\n"
              "        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)\n"
              "    return _real_unlink(name, *a, dir_fd=dir_fd, **k)\n"
              "os.unlink = _refuse\n")
    res = cli_patched(refuse, "--ledger", str(led), "snapshot")
    assert res.returncode == 0, res
    assert res.stdout == f"snapshot at seq 1 in {led}\n"
    assert res.stderr == f"warning: could not remove stale snapshot temp file {stale}: permission denied\n"
    assert stale.exists() and (led / "snapshots" / "snap-0000000000000001.json").exists()
    # a snapshot that does not check out: skipped, named in full
    snap = led / "snapshots" / "snap-0000000000000001.json"
    snap.write_bytes(snap.read_bytes()[:-5])
    res = ledger_cmd(led, "show")
    assert res.returncode == 0, res
    assert res.stderr == f"warning: skipping snapshot: {snap}: truncated body\n"


def test_check_inside_run_uses_a_printable_placeholder(led: Path, tree: Path) -> None:
    for json_ in ([], ["--json"]):
        script = " ".join(["ledger", *json_, "check", "--write", "docs"])
        res = ledger_cmd(led, "run", "--write", "src", "--", "sh", "-c", script, cwd=tree)
        assert res.returncode == 1, res.stderr
        assert "\x00" not in res.stdout and "\\u0000" not in res.stdout
        assert "(check)" in res.stdout
        if json_:
            assert json.loads(res.stdout)["conflict"]["child"] == "(check)"


def test_empty_ledger_option_or_variable_is_a_usage_error(tmp_path: Path) -> None:
    res = invoke(["--ledger", "", "show"], env=clean_env())
    assert res.returncode == 2 and "--ledger" in one_error_line(res.stderr)
    res = invoke(["show", "--ledger", ""], env=clean_env())
    assert res.returncode == 2 and "--ledger" in one_error_line(res.stderr)
    res = invoke(["show"], env=clean_env(SCOPELEDGER_DIR="", HOME=str(tmp_path)))
    assert res.returncode == 2 and "SCOPELEDGER_DIR" in one_error_line(res.stderr)


def test_bare_ledger_prints_help_and_exits_2() -> None:
    res = subprocess.run(CMD, capture_output=True, text=True, env=clean_env())
    assert res.returncode == 2
    assert res.stdout.startswith("Usage: ")
    assert "Commands:" in res.stdout and "-h, --help" in res.stdout
    assert res.stderr == ""


def test_closed_stdout_or_stderr_never_tracebacks(led: Path, lib: Ledger, tree: Path, tmp_path: Path) -> None:
    lib.register("a", [W_at(tree, "docs")])
    base = [*CMD, "--ledger", str(led)]
    for args in (["show"], ["--json", "show"], ["replay"]):
        for closed in ("stdout", "stderr"):
            sh = f"{' '.join(base + args)} {'>&-' if closed == 'stdout' else '2>&-'}"
            res = subprocess.run(["sh", "-c", sh], capture_output=True, text=True, env=clean_env())
            assert res.returncode == 0, (sh, res.stderr)
            assert "Traceback" not in res.stdout + res.stderr
    for redirect in (">&-", "2>&-"):
        mark = tmp_path / f"ran{len(redirect)}"
        sh = f"{' '.join(base)} run --write src -- touch {mark} {redirect}"
        res = subprocess.run(["sh", "-c", sh], capture_output=True, text=True, env=clean_env(), cwd=tree)
        assert res.returncode == 0, (sh, res.stderr)
        assert "Traceback" not in res.stdout + res.stderr
        assert mark.exists(), sh


def test_library_warnings_are_prefixed(led: Path, lib: Ledger, tree: Path) -> None:
    lib.register("a", [W_at(tree, "src")])
    lib.release("a")
    assert ledger_cmd(led, "snapshot").returncode == 0
    for snap in (led / "snapshots").iterdir():
        snap.write_text("garbage\n")
    res = ledger_cmd(led, "show", "--at", "1")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("warning: skipping snapshot: ") for line in lines), res.stderr
