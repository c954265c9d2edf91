"""``ledger demo``, run as README tells a user to run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from scopeledger import Ledger, ProcessIdentity, probe

from helpers import CMD, LEDGER, clean_env


def test_demo_runs_and_tells_the_story() -> None:
    res = subprocess.run([*CMD, "demo", "--clean"], capture_output=True, text=True, env=clean_env(),
                         timeout=120)  # a few seconds alone; the bound is for a hang, not a speed
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for needle in (
        "delegation chain, three deep: runtime -> builder -> tests-worker",
        "reserved by pid",                       # reservation before spawn, in the replay
        "attached    'builder' attached to pid",
        "released    'parser-worker'",
        "refused: write",                        # ledger check, top level
        "'lexer-worker' (delegated from 'builder', from 'runtime')",  # the owner chain
        "kill -KILL",
        "[dead: zombie",
        "reclaimed 'lexer-worker'",
        "reclaimed   'tests-worker' because zombie",
        "because process gone",
        "newcomer's command (pid",
        "ledger show --at",
        "it is removed now (--clean)",
    ):
        assert needle in out, needle
    # --clean removed it
    where = re.search(r"The ledger was in (\S+);", out)
    assert where is not None
    assert not os.path.exists(where.group(1))
    # holder names are quoted everywhere
    assert "as holder 'newcomer', token" in out
    assert_commands_as_the_cli_prints_them(out, where.group(1))


def command_block(out: str, command: str) -> list[str]:
    """The lines the demo shows for ``$ COMMAND``, up to its exit code."""
    lines = out.splitlines()
    start = lines.index(f"   $ {command}")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("   (exit code"))
    return lines[start + 1:end]


def assert_commands_as_the_cli_prints_them(out: str, ledger_dir: str) -> None:
    tree = os.path.join(os.path.dirname(ledger_dir), "tree")
    # the demo's own command lines name the tree relative to it, as it runs them there
    for line in out.splitlines():
        if line.startswith("   $ "):
            assert tree not in line, line
    # every command's output is indented alike, 'ledger show' and 'replay' too
    show = command_block(out, "ledger show --at 9 --relative-to .")
    assert re.fullmatch(rf"     ledger {re.escape(ledger_dir)} at seq 9, \d{{4}}-\d\d-\d\dT[\d:.]+Z: "
                        r"5 holder\(s\)", show[0]), show[0]
    assert show[1].startswith("     └── runtime  pid ")
    assert len(show) == 6 and all(line.startswith("     ") for line in show)
    replay = command_block(out, "ledger replay --relative-to .")
    assert len(replay) >= 18 and all(line.startswith("     ") for line in replay)
    refused = next(line for line in replay if "refused " in line)
    assert "cannot delegate write src/lexer/** from 'builder'" in refused and tree not in refused


def test_demo_json_and_the_ledger_it_leaves(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    res = subprocess.run([*CMD, "demo", "--json", "--dir", str(d)], capture_output=True, text=True,
                         env=clean_env(), timeout=60)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["ledger"] == str((d / "ledger").resolve())
    assert (d / "tree" / "src" / "lexer" / "fix.txt").read_text() == "fixed\n"
    with Ledger.open(summary["ledger"]) as ledger:
        assert ledger.verify().ok
        events = list(ledger.events())
        assert [e.data for e in events] == summary["events"]
        types = [e.type for e in events]
        assert {"registered", "delegated", "attached", "released", "reclaimed", "refused"} <= set(types)
        reasons = sorted(e.data["reason"] for e in events if e.type == "reclaimed")
        assert reasons == ["process_gone", "zombie"]
        refused = next(e for e in events if e.type == "refused")
        assert refused.data["chain"] == ["runtime", "builder", "lexer-worker"]
        mid = ledger.state_at(seq=summary["middle_seq"])
        assert mid.chain("tests-worker") == ("runtime", "builder", "tests-worker")
        assert all(not a.reserved for a in mid.holders.values())
        reserved = [e.data["holder"]["name"] for e in events
                    if e.type == "delegated" and e.data["holder"]["reserved"]]
        assert reserved == ["builder", "parser-worker", "lexer-worker", "tests-worker"]
        assert ledger.holders() == []
        # every process the demo started is gone
        for e in events:
            if e.type == "attached":
                assert probe(ProcessIdentity.from_json(e.data["process"])).dead
    # the CLI can explore what it left
    show = subprocess.run([*CMD, "--ledger", summary["ledger"], "show", "--at", str(summary["middle_seq"])],
                          capture_output=True, text=True, env=clean_env())
    assert show.returncode == 0 and "tests-worker" in show.stdout


def test_demo_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    res = subprocess.run([*CMD, "demo", "--dir", str(tmp_path)], capture_output=True, text=True, env=clean_env())
    assert res.returncode == 2
    assert res.stderr.startswith("error: demo directory") and len(res.stderr.splitlines()) == 1


def test_demo_kept_suggests_commands_relative_to_the_tree(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    res = subprocess.run([*CMD, "demo", "--dir", str(d)], capture_output=True, text=True, env=clean_env(),
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    tree, ledger = str((d / "tree").resolve()), str((d / "ledger").resolve())
    lines = res.stdout.splitlines()
    first = lines.index(f"  cd {tree}") + 1
    last = next(i for i in range(first, len(lines)) if lines[i].startswith("Remove it when done"))
    suggested = [line.strip() for line in lines[first:last]]
    assert len(suggested) >= 6
    e = clean_env()
    e["SCOPELEDGER_DIR"] = ledger
    ran = 0
    for cmd in suggested:
        argv = cmd.split()
        assert argv[0] == "ledger", cmd
        if "|" in argv or "--json" in argv:
            continue
        if argv[1] in ("replay", "show", "who", "history", "check"):
            assert argv[-2:] == ["--relative-to", "."], cmd
        # as the user would run it, after 'cd tree': no path below the tree in full
        run = subprocess.run([*CMD, *argv[1:]], cwd=tree, capture_output=True, text=True, env=e,
                             timeout=30)
        assert run.returncode == 0, (cmd, run.stderr)
        assert run.stdout.strip(), cmd
        assert tree + "/" not in run.stdout, (cmd, run.stdout)
        ran += 1
    assert ran >= 6


def test_demo_escapes_control_characters_and_markup_in_its_dir(tmp_path: Path) -> None:
    d = tmp_path / "d[red]\x1b\nx"
    res = subprocess.run([*CMD, "demo", "--dir", str(d), "--clean"], capture_output=True, text=True,
                         env=clean_env(), timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    shown = f"{tmp_path}/d[red]\\x1b\\x0ax"
    assert str(d) not in res.stdout and "\x1b" not in res.stdout
    assert f"   ledger: {shown}/ledger\n" in res.stdout
    assert f"The ledger was in {shown}/ledger; it is removed now" in res.stdout


def test_demo_dir_with_dotdot_after_a_symlink_is_where_the_os_puts_it(tmp_path: Path) -> None:
    (tmp_path / "deep" / "sub").mkdir(parents=True)
    os.symlink("deep/sub", tmp_path / "lk")
    res = subprocess.run([*CMD, "demo", "--json", "--keep", "--dir", "lk/../D"], capture_output=True,
                         text=True, env=clean_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "deep" / "D" / "ledger" / "events.jsonl").is_file()
    assert not (tmp_path / "D").exists()


@pytest.mark.skipif(LEDGER is None, reason="needs the installed 'ledger' script")
def test_demo_suggestions_work_from_a_shell_without_the_venv_on_path(tmp_path: Path) -> None:
    bindir = os.path.dirname(LEDGER)
    for path, hinted in (("/usr/bin:/bin", True), (f"{bindir}:/usr/bin:/bin", False)):
        res = subprocess.run([LEDGER, "demo", "--dir", str(tmp_path / f"d{hinted}")], capture_output=True,
                             text=True, env={**clean_env(), "PATH": path}, timeout=120)
        assert res.returncode == 0, res.stderr
        assert (f"export PATH={bindir}:" in res.stdout) is hinted, res.stdout[-600:]


def _files(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


@pytest.mark.parametrize("sub", ["snapshots", "torn", "inside", "inside/deeper"])
def test_demo_refuses_a_dir_inside_a_ledger_before_making_anything(tmp_path: Path, sub: str) -> None:
    made = subprocess.run([*CMD, "--ledger", "L4", "run", "--write", str(tmp_path / "q"), "--", "true"],
                          capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    snap = subprocess.run([*CMD, "--ledger", "L4", "snapshot"], capture_output=True, text=True, env=clean_env(),
                          cwd=tmp_path, timeout=60)  # snapshots/ not empty: still "inside", exit 5
    assert snap.returncode == 0, snap.stderr
    before = _files(tmp_path)
    res = subprocess.run([*CMD, "demo", "--dir", f"L4/{sub}"], capture_output=True, text=True,
                         env=clean_env(), cwd=tmp_path, timeout=60)
    assert res.returncode == 5, res
    assert res.stdout == ""  # not half of its header
    assert res.stderr == (f"error: unsafe ledger path {tmp_path}/L4/{sub}/ledger: it is inside the "
                          f"ledger {tmp_path}/L4: choose a directory outside it\n")
    assert _files(tmp_path) == before  # (it left L4/{sub}/tree/...)


def test_demo_clean_removes_the_directories_it_made_and_keeps_one_the_user_made(tmp_path: Path) -> None:
    res = subprocess.run([*CMD, "demo", "--json", "--clean", "--dir", "NEW/a"], capture_output=True,
                         text=True, env=clean_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert os.listdir(tmp_path) == []  # NEW was left, empty
    (tmp_path / "mine").mkdir()
    res = subprocess.run([*CMD, "demo", "--json", "--clean", "--dir", "mine"], capture_output=True,
                         text=True, env=clean_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert os.listdir(tmp_path) == ["mine"] and os.listdir(tmp_path / "mine") == []


@pytest.mark.parametrize("target", ["nowhere", "loop"])
def test_demo_dir_that_is_a_dangling_symlink_is_a_usage_error(tmp_path: Path, target: str) -> None:
    os.symlink(target, tmp_path / "dang")
    if target == "loop":
        os.symlink("dang", tmp_path / "loop")
    before = _files(tmp_path)
    res = subprocess.run([*CMD, "demo", "--dir", "dang"], capture_output=True, text=True, env=clean_env(),
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 2, res  # was 7, "error: file exists"
    assert res.stderr == (f"error: demo directory {tmp_path}/dang is a dangling symlink (to {target}): "
                          "give a new or empty directory (see 'ledger demo --help')\n")
    assert _files(tmp_path) == before and res.stdout == ""
