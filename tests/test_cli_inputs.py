"""What the command line takes from the user, bounded and resolved as the OS
does: manifests (regular files of at most 1 MiB), the default ledger
(a relative $XDG_STATE_HOME ignored), ledger paths with '..' after a
symlink, ledger directories that cannot be looked into, integers (one
parser), ``run --json``'s stderr, closed standard descriptors."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from scopeledger import Ledger, ScopeRule, default_path, load_manifest
from scopeledger.cli import params
from scopeledger._errors import InvalidManifest
from scopeledger._runtime import MAX_MANIFEST_BYTES
from helpers import CMD, cli_as_nobody, clean_env, invoke, ledger_cmd, one_error_line, seq_of
from torture_support import NOBODY_GID, NOBODY_UID, plant

MANIFEST = '[holder]\nname = "m"\n[scope]\nwrite = ["src"]\n'


def _limit_memory() -> None:
    # Without the bound on manifests, reading /dev/zero would take all the
    # memory there is; this makes it a MemoryError instead.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


# -- 1. manifests: regular files of bounded size -----------------------------------------


@pytest.mark.parametrize("kind", ["zero", "fifo", "socket", "directory", "oversized"])
@pytest.mark.parametrize("cmd", ["check", "run"])
def test_a_manifest_must_be_a_bounded_regular_file(tmp_path: Path, a_ledger: Path, kind: str,
                                                   cmd: str) -> None:
    if kind == "zero":
        manifest = "/dev/zero"
        says = "is a character device, not a regular file"
    elif kind == "oversized":  # valid TOML: only its size is wrong
        path = tmp_path / "big.toml"
        path.write_text(MANIFEST + "#" * MAX_MANIFEST_BYTES + "\n")
        manifest, says = str(path), "larger than 1048576 bytes (1 MiB): not a manifest"
    else:
        path = tmp_path / "m.toml"
        path.write_text(MANIFEST)
        plant(str(path), kind)
        manifest = str(path)
        says = {"fifo": "is a FIFO", "socket": "is a socket",
                "directory": "is a directory"}[kind] + ", not a regular file"
    args = [cmd, "--manifest", manifest] + (["--", "touch", str(tmp_path / "ran")] if cmd == "run" else [])
    before = seq_of(a_ledger)
    res = subprocess.run([*CMD, "--ledger", str(a_ledger), *args], capture_output=True, text=True,
                         env=clean_env(), cwd=tmp_path, timeout=60, preexec_fn=_limit_memory)
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    # the same reader and words for every kind, 'check' as 'run' (not click's "File ... is a directory")
    assert line == f"error: cannot read manifest {manifest}: {says}", line
    assert not (tmp_path / "ran").exists()
    assert seq_of(a_ledger) == before  # nothing recorded


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_load_manifest_refuses_other_kinds_of_file_without_reading(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(MANIFEST)
    plant(str(path), kind)  # a FIFO without a writer: reading it would block for ever
    # (in a child process, so that a blocked read fails the test, not hangs it)
    res = subprocess.run([sys.executable, "-c", "import sys\n"
                          "from scopeledger import load_manifest, InvalidManifest\n"
                          "try:\n    load_manifest(sys.argv[1])\n"
                          "except InvalidManifest as exc:\n    print(exc)\n", str(path)],
                         capture_output=True, text=True, timeout=30)
    says = {"fifo": "a FIFO", "directory": "a directory"}[kind]
    assert res.stdout == f"cannot read manifest {path}: is {says}, not a regular file\n", res


def test_a_manifest_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_bytes((MANIFEST + "#").encode().ljust(MAX_MANIFEST_BYTES - 1, b"#") + b"\n")
    assert os.path.getsize(path) == MAX_MANIFEST_BYTES
    assert load_manifest(path).name == "m"
    with open(path, "ab") as f:
        f.write(b"\n")
    with pytest.raises(InvalidManifest, match="larger than 1048576 bytes"):
        load_manifest(path)


# -- 2. the default ledger never depends on the working directory -------------------------------


def test_a_relative_xdg_state_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.delenv("SCOPELEDGER_DIR", raising=False)
    monkeypatch.setenv("HOME", str(home))
    for relative in ("relative", "./state", "relative/../x"):
        monkeypatch.setenv("XDG_STATE_HOME", relative)
        assert default_path() == f"{home}/.local/state/scopeledger"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # an absolute one is used
    assert default_path() == f"{tmp_path}/state/scopeledger"
    # nor does a relative $HOME make it relative (the password database's home instead)
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "rel")
    assert os.path.isabs(default_path())
    # and the command line: 'ledger run' in a working directory creates nothing there
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(XDG_STATE_HOME="relative", HOME=str(home))
    res = subprocess.run([*CMD, "run", "--write", str(tmp_path / "t"), "--", "sh", "-c",
                          'printf %s "$SCOPELEDGER_DIR"'], capture_output=True, text=True, env=env,
                         cwd=work, timeout=60)
    assert res.returncode == 0, res
    assert res.stdout == f"{home}/.local/state/scopeledger"
    assert os.listdir(work) == []
    assert (home / ".local/state/scopeledger/events.jsonl").exists()


def test_a_relative_xdg_runtime_dir_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scopeledger import runtime_base

    monkeypatch.delenv("SCOPELEDGER_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative")
    assert runtime_base() == f"/tmp/scopeledger-{os.geteuid()}"
    # and '..' in $SCOPELEDGER_RUNTIME_DIR after a symlink is the target's parent
    (tmp_path / "deep" / "sub").mkdir(parents=True)
    (tmp_path / "lk").symlink_to("deep/sub")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCOPELEDGER_RUNTIME_DIR", "lk/../rt")
    assert runtime_base() == f"{tmp_path}/deep/rt"


# -- 3. '..' after a symlink, as the OS resolves it -------------------------------------------


def test_dotdot_after_a_symlink_in_a_ledger_path_is_the_targets_parent(tmp_path: Path) -> None:
    (tmp_path / "deep" / "sub").mkdir(parents=True)
    (tmp_path / "lk2").symlink_to("deep/sub")
    deep = tmp_path / "deep"
    held = str(tmp_path / "t")
    res = subprocess.run([*CMD, "--ledger", "lk2/../L5", "run", "--write", held, "--", "sh", "-c",
                          'printf %s "$SCOPELEDGER_DIR"'], capture_output=True, text=True,
                         env=clean_env(), cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res
    assert res.stdout == f"{deep}/L5"  # the path COMMAND is given is the resolved one
    assert (deep / "L5" / "events.jsonl").exists() and not (tmp_path / "L5").exists()
    res = subprocess.run([*CMD, "run", "--write", held, "--", "true"], capture_output=True, text=True,
                         env=clean_env(SCOPELEDGER_DIR="lk2/../L6"), cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res
    assert (deep / "L6").is_dir() and not (tmp_path / "L6").exists()
    # messages show it resolved
    res = invoke(["--ledger", "lk2/../L5", "--json", "show"], cwd=tmp_path)
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["ledger"] == f"{deep}/L5"
    res = invoke(["--ledger", "lk2/../L7", "show"], cwd=tmp_path)
    assert res.returncode == 6
    assert one_error_line(res.stderr).startswith(f"error: no ledger at {deep}/L7: ")
    # the library too
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with Ledger.open("lk2/../L8") as ledger:
            assert ledger.path == f"{deep}/L8"
    finally:
        os.chdir(cwd)
    assert (deep / "L8").is_dir() and not (tmp_path / "L8").exists()
    # a manifest's path too (its directory is the base of its relative rules)
    (deep / "m.toml").write_text(MANIFEST)
    manifest = load_manifest(str(tmp_path / "lk2" / ".." / "m.toml"))
    assert manifest.rules[0].path == f"{deep}/src"
    # a symlink as the last component is still refused, however it is spelled
    (tmp_path / "lk3").symlink_to("deep/L5")
    for spelled in ("lk3", "lk3/", "lk3/."):
        res = invoke(["--ledger", spelled, "show"], cwd=tmp_path)
        assert res.returncode == 5, (spelled, res)
        assert "is a symlink" in one_error_line(res.stderr)


# -- 4. a ledger directory that cannot be looked into ----------------------------------------


@pytest.fixture
def roots_ledger():
    """A ledger of root's (mode 0700, as made) in a directory nobody can reach."""
    if os.geteuid() != 0:
        pytest.skip("a ledger of another user, and becoming user nobody, need root")
    base = tempfile.mkdtemp(prefix="scopeledger-test-", dir="/tmp")
    os.chmod(base, 0o755)
    path = os.path.join(base, "priv")
    with Ledger.open(path) as ledger:
        ledger.register("a", [ScopeRule("/a", "write")])
    yield path
    shutil.rmtree(base)


@pytest.mark.parametrize("args", [["show"], ["verify"], ["replay"], ["who", "/a"],
                                  ["reclaim", "--dry-run"], ["reclaim"],
                                  ["run", "--write", "/tmp/scopeledger-nobody-x", "--", "true"]])
def test_another_users_ledger_that_cannot_be_searched_is_unsafe(roots_ledger: str,
                                                               args: list[str]) -> None:
    before = seq_of(Path(roots_ledger))
    code, out = cli_as_nobody(roots_ledger, *args)
    assert code == 5, out
    assert one_error_line(out) == (f"error: unsafe ledger path {roots_ledger}: owned by uid 0, not "
                                   f"by this user (uid {NOBODY_UID})")
    assert seq_of(Path(roots_ledger)) == before


@pytest.mark.parametrize("args", [["show"], ["verify"]])
def test_a_ledger_below_a_directory_that_cannot_be_searched_is_permission_denied(
        roots_ledger: str, args: list[str]) -> None:
    below = os.path.join(roots_ledger, "snapshots")  # exists; nobody cannot tell
    code, out = cli_as_nobody(below, *args)
    assert code == 7, out
    assert one_error_line(out) == f"error: failed to open the ledger: {below}: Permission denied"


@pytest.mark.parametrize("args", [["show"], ["verify"], ["replay"],
                                  ["run", "--write", "/tmp/scopeledger-nobody-x", "--", "true"]])
def test_ones_own_ledger_of_mode_0000_is_permission_denied(args: list[str]) -> None:
    # As root without the DAC capabilities: a process on its own directory
    # that its mode does not let it search or read.
    if os.geteuid() != 0:
        pytest.skip("becoming user nobody needs root")
    base = tempfile.mkdtemp(prefix="scopeledger-test-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        path = os.path.join(base, "mine")
        with Ledger.open(path) as ledger:
            ledger.register("a", [ScopeRule("/a", "write")])
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.lchown(name, NOBODY_UID, NOBODY_GID)
        os.chmod(path, 0)
        code, out = cli_as_nobody(path, *args)
        assert code == 7, out
        assert one_error_line(out) == f"error: failed to open the ledger: {path}: Permission denied"
    finally:
        shutil.rmtree(base)


# -- 5. integers: one parser --------------------------------------------------------------------

LONG = "1" * 5000


@pytest.mark.parametrize("args, hint", [
    (["show", "--at", LONG], "--at"),
    (["show", "--at", "\u0663"], "--at"),  # ARABIC-INDIC DIGIT THREE
    (["show", "--at", "\uff13"], "--at"),  # FULLWIDTH DIGIT THREE
    (["show", "--at", "\u00b2"], "--at"),  # SUPERSCRIPT TWO
    (["show", "--at", " 1 "], "--at"),
    (["show", "--at", "01"], "--at"),
    (["show", "--at", "2025-11-29T14:03:05.123456789123456Z"], "--at"),
    (["show", "--at", "2025-11-29T14:03:05.1234567891Z"], "--at"),
    (["show", "--at", "2025-11-29T14:03:05." + LONG + "Z"], "--at"),
    (["show", "--at", " 2025-11-29"], "--at"),
    (["who", "/x", "--at", LONG], "--at"),
    (["diff", "1", LONG], "B"),
    (["diff", "\u0663", "1"], "A"),
    (["diff", "01", "1"], "A"),
    (["replay", "--from", LONG], "--from"),
    (["replay", "--until", "\u0663"], "--until"),
    (["release", "a", "--token", LONG], "--token"),
    (["verify", "--workers", " 2"], "--workers"),
    (["verify", "--workers", "\u0663"], "--workers"),
    (["verify", "--workers", LONG], "--workers"),
    (["run", "-E", "\u0663", "--write", "x", "--", "true"], "--conflict-exit-code"),
    (["run", "-E", "1_0", "--write", "x", "--", "true"], "--conflict-exit-code"),
    (["run", "-w", LONG, "--write", "x", "--", "true"], "--wait"),
    (["run", "-w", "\u0663", "--write", "x", "--", "true"], "--wait"),
])
def test_integers_are_read_by_one_parser(a_ledger: Path, args: list[str], hint: str) -> None:
    before = seq_of(a_ledger)
    res = ledger_cmd(a_ledger, *args, cwd=a_ledger.parent)
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert hint in line, line
    assert "digits" in line or "seconds" in line, line
    assert len(line) < 400, line  # a long value is shown cut short
    for internal in ("Exceeds the limit", "set_int_max_str_digits", "invalid literal"):
        assert internal not in line
    assert seq_of(a_ledger) == before


def test_a_long_token_in_the_environment_is_a_clear_usage_error(a_ledger: Path) -> None:
    for cmd in (["check", "--write", "x"], ["run", "--write", "x", "--", "true"]):
        res = ledger_cmd(a_ledger, *cmd, cwd=a_ledger.parent,
                         env=clean_env(SCOPELEDGER_HOLDER="a", SCOPELEDGER_TOKEN=LONG))
        assert res.returncode == 2, res
        assert one_error_line(res.stderr) == (
            f"error: invalid $SCOPELEDGER_TOKEN {LONG[:20]!r}... (5000 characters): too many digits "
            "(5000, at most 19): expected a positive integer in decimal digits (a grant's seq, as "
            "'ledger run' sets it)")


@pytest.mark.parametrize("point", ["0", "1", "2025-11-29T14:03:05.123456789Z", "2025-11-29"])
def test_valid_points_are_still_taken(a_ledger: Path, point: str) -> None:
    res = ledger_cmd(a_ledger, "show", "--at", point)
    assert res.returncode == 0, res
    res = ledger_cmd(a_ledger, "diff", point, "1")
    assert res.returncode == 0, res


def test_parse_number() -> None:
    assert params.parse_number("0", "n") == 0
    assert params.parse_number("9" * 19, "n") == int("9" * 19)
    assert params.parse_token("12") == 12
    for bad in ("", " 1", "1 ", "+1", "-1", "1_0", "01", "\u0663", "1.0", "9" * 20, LONG):
        with pytest.raises(ValueError, match="expected n"):
            params.parse_number(bad, "n")
    with pytest.raises(ValueError):
        params.parse_number("7", "n", 1, 5)


# -- 6. run --json: stderr is JSON only ----------------------------------------------------------


def _json_lines(stderr: str) -> list[dict]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # fails on any line that is not JSON


@pytest.mark.parametrize("args, code", [
    (["run", "--write", "src", "--", "/nonexistent/command"], 127),
    (["run", "--manifest", "/dev/zero", "--", "true"], 2),
    (["run", "-n", "--write", "held", "--", "true"], 1),
    (["run", "-n", "-w", "1", "--write", "src", "--", "true"], 2),
    (["run", "--bogus", "--", "true"], 2),
])
def test_run_json_errors_are_one_json_document_on_stderr(a_ledger: Path, args: list[str], code: int) -> None:
    res = subprocess.run([*CMD, "--ledger", str(a_ledger), "--json", *args], capture_output=True, text=True,
                         env=clean_env(), cwd=a_ledger.parent, timeout=60)
    assert res.returncode == code, res
    assert res.stdout == ""
    docs = _json_lines(res.stderr)
    assert len(docs) == 1, res.stderr
    assert docs[0]["error"]["exit_code"] == code
    with Ledger.open(a_ledger, readonly=True) as ledger:
        assert [a.name for a in ledger.holders()] == ["a"]  # nothing left held


def test_run_json_warnings_are_json_too(a_ledger: Path) -> None:
    os.chmod(a_ledger, 0o750)  # tightened, with a warning
    res = subprocess.run([*CMD, "--ledger", str(a_ledger), "--json", "run", "--write", "src", "--", "true"],
                         capture_output=True, text=True, env=clean_env(), cwd=a_ledger.parent, timeout=60)
    assert res.returncode == 0, res
    docs = _json_lines(res.stderr)
    assert docs[0] == {"warning": f"tightening mode of {a_ledger} from 0750 to 0700"}
    assert docs[-1]["exit_code"] == 0


def test_other_commands_json_errors_still_go_to_stdout_with_the_line(a_ledger: Path) -> None:
    res = ledger_cmd(a_ledger, "--json", "show", "--at", "\u0663")
    assert res.returncode == 2
    assert json.loads(res.stdout)["error"]["exit_code"] == 2
    one_error_line(res.stderr)


@pytest.mark.parametrize("args", [
    ["run", "--json", "--bogus", "--", "true"],
    ["run", "--write", "src", "-w", "abc", "--json", "--", "true"],
])
def test_run_json_after_the_command_name_makes_usage_errors_json(a_ledger: Path, args: list[str]) -> None:
    # click refuses --bogus before the --json option's callback has run.
    res = ledger_cmd(a_ledger, *args)
    assert res.returncode == 2, res
    assert res.stdout == ""
    (doc,) = _json_lines(res.stderr)
    assert doc["error"]["exit_code"] == 2


@pytest.mark.parametrize("args, json_out", [
    (["show", "--json", "--bogus"], True),
    (["show", "--bogus", "--json"], True),
    (["run", "--bogus", "--", "python", "--json"], False),  # COMMAND's own --json is not ours
])
def test_other_commands_json_after_the_name_makes_usage_errors_json(a_ledger: Path, args: list[str],
                                                                   json_out: bool) -> None:
    res = ledger_cmd(a_ledger, *args)
    assert res.returncode == 2, res
    if json_out:
        assert json.loads(res.stdout)["error"]["type"] == "NoSuchOption"
    else:
        assert res.stdout == ""
    one_error_line(res.stderr)


# -- 7. closed standard descriptors: COMMAND gets /dev/null --------------------------------------


@pytest.mark.parametrize("fd", [0, 1, 2])
def test_run_gives_command_dev_null_for_a_closed_standard_descriptor(tmp_path: Path, a_ledger: Path,
                                                                    fd: int) -> None:
    out = tmp_path / "seen"
    probe = ("import os, sys\n"
             "null = os.stat(os.devnull)\n"
             "seen = []\n"
             "for fd in (0, 1, 2):\n"
             "    try:\n"
             "        st = os.fstat(fd)\n"
             "        seen.append('null' if (st.st_rdev, st.st_ino) == (null.st_rdev, null.st_ino) else 'other')\n"
             "    except OSError:\n"
             "        seen.append('closed')\n"
             "os.write(1, b'x')  # writable\n"
             f"open({str(out)!r}, 'w').write(' '.join(seen))\n")

    def close() -> None:
        os.close(fd)

    res = subprocess.run([*CMD, "--ledger", str(a_ledger), "run", "--write", str(tmp_path / "t"), "--",
                          shutil.which("python3") or "python3", "-c", probe],
                         stdout=subprocess.PIPE if fd != 1 else None,
                         stderr=subprocess.PIPE if fd != 2 else None, env=clean_env(),
                         timeout=60, preexec_fn=close)
    assert res.returncode == 0, res
    assert out.read_text().split()[fd] == "null"
