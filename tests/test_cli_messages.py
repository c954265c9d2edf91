"""What the command line says, and that docs/cli.md says the same: paths of
the wrong kind in the ledger's words (not click's), NO_COLOR and --color,
'demo' and --ledger, empty paths in a manifest, the one form of a time,
a snapshot that is a symlink, and the --help hint of usage errors."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from scopeledger import InvalidManifest, Ledger, ScopeRule, load_manifest, verify
from scopeledger.cli import app, params
from helpers import CMD, clean_env, invoke, ledger_cmd, one_error_line, seq_of

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
MANIFEST = '[holder]\nname = "m"\n[scope]\nwrite = ["src"]\n'




def _docs() -> str:
    return DOCS.read_text()


# -- 1. --manifest, --root, demo --dir: the ledger's words for a path of the wrong kind ------------


@pytest.mark.parametrize("cmd", ["check", "run"])
@pytest.mark.parametrize("kind, says", [
    ("directory", "is a directory, not a regular file"),
    ("missing", "no such file or directory"),
])
def test_every_manifest_option_reads_through_the_manifest_reader(tmp_path: Path, a_ledger: Path, cmd: str,
                                                                 kind: str, says: str) -> None:
    manifest = tmp_path / "m.toml"
    if kind == "directory":
        manifest.mkdir()
    ran = tmp_path / "ran"
    args = [cmd, "--manifest", "m.toml"] + (["--", "touch", str(ran)] if cmd == "run" else [])
    before = seq_of(a_ledger)
    res = ledger_cmd(a_ledger, *args, cwd=tmp_path)
    assert res.returncode == 2, res
    # the full path, as docs/cli.md promises ("cannot read manifest PATH: ..."), not click's
    # "File 'm.toml' is a directory"
    assert one_error_line(res.stderr) == f"error: cannot read manifest {manifest}: {says}"
    assert not ran.exists() and seq_of(a_ledger) == before


def _plant(where: Path, kind: str) -> tuple[str, str]:
    """A path of ``kind`` that cannot be a directory, and what the error says of it."""
    if kind == "regular file":
        where.write_text("x")
        return str(where), f"{where} is a regular file, not a directory"
    if kind == "fifo":
        os.mkfifo(where)
        return str(where), f"{where} is a FIFO, not a directory"
    where.write_text("x")  # a file on the way
    return str(where / "sub"), f"{where}/sub: {where} is a regular file, not a directory"


@pytest.mark.parametrize("kind", ["regular file", "fifo", "on the way"])
@pytest.mark.parametrize("cmd", ["check", "run", "demo"])
def test_a_directory_option_naming_another_kind_of_file_is_a_usage_error(tmp_path: Path, a_ledger: Path,
                                                                         cmd: str, kind: str) -> None:
    path, says = _plant(tmp_path / "notes.txt", kind)
    ran = tmp_path / "ran"
    if cmd == "demo":
        argv, option = [*CMD, "demo", "--dir", path], "--dir"
    else:
        tail = ["--", "touch", str(ran)] if cmd == "run" else []
        argv, option = [*CMD, "--ledger", str(a_ledger), cmd, "--write", "src", "--root", path, *tail], "--root"
    res = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=60)
    assert res.returncode == 2, res
    assert one_error_line(res.stderr) == (f"error: invalid value for '{option}': {says} "
                                          f"(see 'ledger {cmd} --help')")
    assert "Directory '" not in res.stderr  # click's wording
    assert not ran.exists() and seq_of(a_ledger) == 1


def test_a_root_that_does_not_exist_yet_is_still_taken(tmp_path: Path, a_ledger: Path) -> None:
    res = ledger_cmd(a_ledger, "--json", "check", "--write", "src", "--root", str(tmp_path / "new"))
    assert res.returncode == 0, res
    assert [r[:3] for r in json.loads(res.stdout)["request"]["rules"]] == [[f"{tmp_path}/new/src", "write", True]]


def test_no_option_of_the_command_line_checks_paths_with_click() -> None:
    # click.Path(exists=/dir_okay=/file_okay=) words its refusals its own way ("File 'x' is
    # a directory"); docs/cli.md words them as the ledger does.
    for command in (app.cli.get_command(None, n) for n in app.cli.list_commands(None)):  # type: ignore[arg-type]
        for param in command.params:
            assert not isinstance(param.type, click_path()), (command.name, param.name)


def click_path() -> type:
    import click

    return click.Path


# -- 2. NO_COLOR and --color always ------------------------------------------------------------------


def test_no_color_row_says_that_color_always_overrides_it(a_ledger: Path) -> None:
    row = next(line for line in _docs().splitlines() if line.startswith("| `NO_COLOR` |"))
    assert "`--color always`" in row and "overrides" in row, row
    # ... which is what the command line does
    forced = ledger_cmd(a_ledger, "--color", "always", "show", env=clean_env(NO_COLOR="1"))
    assert forced.returncode == 0 and "\x1b[" in forced.stdout
    auto = ledger_cmd(a_ledger, "show", env=clean_env(NO_COLOR="1"))
    assert auto.returncode == 0 and "\x1b[" not in auto.stdout


# -- 3. demo takes no --ledger -------------------------------------------------------------------------


def test_demo_help_does_not_offer_ledger() -> None:
    res = invoke(["demo", "--help"], env=clean_env())
    assert res.returncode == 0
    options = res.stdout.split("Options:")[1]
    assert "--ledger" not in options
    assert "--dir" in options and "--json" in options  # --json prints the demo's summary


@pytest.mark.parametrize("where", ["after", "before"])
def test_demo_refuses_ledger_saying_it_makes_its_own(tmp_path: Path, where: str) -> None:
    r3 = tmp_path / "R3"
    args = ["demo", "--ledger", str(r3)] if where == "after" else ["--ledger", str(r3), "demo"]
    res = invoke([*args], env=clean_env(), cwd=tmp_path)
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert "makes its own ledger" in line and "--dir DIR" in line, line
    assert line.endswith("(see 'ledger demo --help')"), line
    assert not r3.exists()
    assert os.listdir(tmp_path) == []  # no demo was played


def test_demo_non_empty_dir_is_a_usage_error_with_the_hint(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    res = invoke(["demo", "--dir", str(tmp_path)], env=clean_env())
    assert res.returncode == 2
    assert one_error_line(res.stderr) == (f"error: demo directory {tmp_path} is not empty: give a new "
                                          "or empty one (see 'ledger demo --help')")


# -- 4. empty paths in a manifest ---------------------------------------------------------------------


@pytest.mark.parametrize("text, key", [
    ('[holder]\nname = "m"\nroot = ""\n[scope]\nwrite = ["src"]\n', "manifest.holder.root"),
    ('[holder]\nname = "m"\n[scope]\nwrite = [""]\n', r"manifest.scope.write\[0\]"),
    ('[holder]\nname = "m"\n[scope]\nread = ["docs", ""]\n', r"manifest.scope.read\[1\]"),
    ('[holder]\nname = "m"\n[[scope.rules]]\npath = ""\npermission = "write"\n',
     r"manifest.scope.rules\[0\].path"),
    ('[holder]\nname = "m"\n[[scope.rules]]\npath = "a"\npermission = "exec"\n',
     r"manifest.scope.rules\[0\].permission"),
    ('[holder]\nname = ""\n[scope]\nwrite = ["src"]\n', "manifest.holder.name"),
])
def test_an_empty_path_in_a_manifest_is_refused_naming_its_key(tmp_path: Path, a_ledger: Path, text: str,
                                                               key: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(InvalidManifest, match=f"@ {key}$"):
        load_manifest(path)
    res = ledger_cmd(a_ledger, "check", "--manifest", str(path))
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert re.search(f"^error: invalid manifest {re.escape(str(path))}: .* @ {key}$", line), line


def test_empty_root_is_never_the_manifests_directory(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[holder]\nname = "m"\nroot = ""\n[scope]\nwrite = ["src"]\n')
    with pytest.raises(InvalidManifest, match="must not be empty"):
        load_manifest(path)
    # leaving it out, or '.', is the manifest's directory
    for root in ("", 'root = "."\n'):
        path.write_text(f'[holder]\nname = "m"\n{root}[scope]\nwrite = ["src"]\n')
        assert load_manifest(path).rules == (ScopeRule(f"{tmp_path}/src", "write"),)


# -- 5. points in time: one form, as documented --------------------------------------------------------

SPAN = (1764425000123000000, 1764425000123999999)  # 2025-11-29T14:03:20.123Z, that millisecond


@pytest.mark.parametrize("value", [
    "2025-11-29T14:03:20.123Z",
    "2025-11-29T14:03:20.123z",  # RFC 3339: 'z' and 't' may be lowercase
    "2025-11-29t14:03:20.123Z",
    "2025-11-29t14:03:20.123z",
    "2025-11-29 14:03:20.123Z",
    "2025-11-29T14:03:20.123",  # no zone: UTC
    "2025-11-29T15:03:20.123+01:00",
    "2025-11-29T14:03:20.123-00:00",
])
def test_accepted_forms_of_a_time(value: str) -> None:
    assert params.parse_point(value) == SPAN


@pytest.mark.parametrize("value", [
    "2025-11-29T14:03:20,123Z",  # decimal comma
    "20251129T140320.123Z",  # basic format
    "2025-11-29T140320Z",
    "2025-W48-6",  # week date
    "2025-W48-6T14:03",
    "2025-333",  # ordinal date
    "2025-11",
    "2025-11-29T14:03:20+01",  # offsets other than +hh:mm
    "2025-11-29T14:03:20+0100",
    "2025-11-29T14:03:20+01:00:30",
    "2025-11-29T14:03:20+01:60",  # offset minutes past 59 (were read as +02:00)
    "2025-11-29T14:03:20+01:99",
    "2025-11-29T14:03:20-00:75",
    "2025-11-29T14:03:20+24:00",
    "2025-11-29Z",  # a zone after a date alone
    "2025-11-29T14.5",  # a fraction of an hour
    "2025-11-29T14:03.5",
    "2025-11-29T",
    "2025-11-29T14:03:20.Z",
    "2025-11-29T24:00",
    "2025-11-29T23:59:60Z",  # leap second
    "2025-02-30",
])
def test_refused_forms_of_a_time(a_ledger: Path, value: str) -> None:
    with pytest.raises(ValueError, match="^invalid point"):
        params.parse_point(value)
    res = ledger_cmd(a_ledger, "show", "--at", value)
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert "invalid point" in line and "--at" in line, line


def test_a_lowercase_t_names_the_same_span_as_an_uppercase_one() -> None:
    # (a lowercase 't' used to be read as a date alone: the whole day)
    assert params.parse_point("2025-11-29t14:03") == params.parse_point("2025-11-29T14:03")
    first, last = params.parse_point("2025-11-29t14:03")
    assert last - first + 1 == 60 * 10**9


def test_lowercase_z_on_the_command_line(a_ledger: Path) -> None:
    with Ledger.open(a_ledger, readonly=True) as ledger:
        ts = next(iter(ledger.events())).time
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "z"
    for args in (["show", "--at", stamp], ["replay", "--from", stamp, "--until", stamp],
                 ["diff", "0", stamp]):
        res = ledger_cmd(a_ledger, *args)
        assert res.returncode == 0, (args, res.stderr)


def _points_section() -> str:
    text = _docs()
    start = text.index("- a **time**")
    return text[start:text.index("Event times are integer", start)]


def test_the_examples_in_the_docs_are_what_the_parser_does() -> None:
    accepted, refused = _points_section().split("Other ISO 8601 forms")
    looks_like_a_time = re.compile(r"`([0-9]{4}[-0-9][^`]*)`")
    good = looks_like_a_time.findall(accepted)
    bad = [v for v in looks_like_a_time.findall(refused) if not v.isdigit()]
    assert len(good) >= 6 and len(bad) >= 5, (good, bad)
    for value in good:
        assert isinstance(params.parse_point(value), tuple), value
    for value in bad:
        with pytest.raises(ValueError):
            params.parse_point(value)
    assert "`20251129` alone is a seq" in refused and params.parse_point("20251129") == 20251129


# -- 6. verify names a snapshot file that is not one for what it is ------------------------------------


@pytest.mark.parametrize("kind, says", [
    ("symlink", "cannot read: is a symlink, not a regular file"),
    ("fifo", "cannot read: is a FIFO, not a regular file"),
    ("directory", "cannot read: is a directory, not a regular file"),
    ("garbage", "header is not JSON"),
])
def test_verify_names_what_a_snapshot_file_past_the_end_really_is(a_ledger: Path, tmp_path: Path,
                                                                  kind: str, says: str) -> None:
    bogus = a_ledger / "snapshots" / "snap-0000000000000099.json"
    if kind == "symlink":
        target = tmp_path / "passwd"
        target.write_text("root:x:0:0::/root:/bin/sh\n")
        os.symlink(target, bogus)
    elif kind == "fifo":
        os.mkfifo(bogus, 0o600)
    elif kind == "directory":
        bogus.mkdir(mode=0o700)
    else:
        bogus.write_text("not a snapshot\n")
        bogus.chmod(0o600)
    report = verify(a_ledger)
    assert not report.ok
    assert [(p.file, p.seq, p.message) for p in report.problems] == [(str(bogus), 99, says)]
    res = ledger_cmd(a_ledger, "verify")
    assert res.returncode == 1, res
    assert f"problem: {bogus} (seq 99): {says}" in res.stderr.splitlines(), res.stderr
    assert "past the end" not in res.stderr
    # as 'show' names it when it skips it
    if kind != "garbage":
        show = ledger_cmd(a_ledger, "show")
        assert show.returncode == 0
        assert f"warning: skipping snapshot: {bogus}: {says}" in show.stderr, show.stderr


def test_a_readable_snapshot_past_the_end_is_still_past_the_end(a_ledger: Path) -> None:
    with Ledger.open(a_ledger) as ledger:
        ledger.register("b", [ScopeRule("/b", "write")])
        seq = ledger.snapshot()
    log = a_ledger / "events.jsonl"
    log.write_bytes(log.read_bytes().split(b"\n", 1)[0] + b"\n")  # the log cut after seq 1
    report = verify(a_ledger)
    assert [p.message for p in report.problems] == [
        f"snapshot at seq {seq} is past the end of the log (seq 1)"]


# -- 7. usage errors of the command line carry the --help hint ------------------------------------------


@pytest.mark.parametrize("args, param", [
    (["history", "bad/../name"], "'NAME'"),
    (["release", ""], "'NAME'"),
    (["release", "no//such"], "'NAME'"),
    (["run", "--name", "bad/../name", "--", "touch", "ran"], "'--name'"),
    (["run", "--parent", "bad/../name", "--write", "src", "--", "touch", "ran"], "'--parent'"),
    (["check", "--write", "src", "--name", "bad/../name"], "'--name'"),
    (["check", "--write", "src", "--parent", "bad/../name"], "'--parent'"),
    (["replay", "--holder", "bad/../name"], "'--holder'"),
    (["check", "--write", ""], "'--write'"),
    (["check", "--read", "a/*/b"], "'--read'"),
    (["run", "--write", "../x", "--root", "/r", "--", "touch", "ran"], "'--write'"),
    # an empty program name: exec refuses it only once the scope is granted (was exit 127, no message)
    (["run", "--write", "src", "--", "", "ran"], "'COMMAND...'"),
    # paths no ledger takes: named as the argument, when parsed (was a bare "error: invalid path")
    (["who", "/tmp/\udcff"], "'PATH'"),  # the byte 0xff: not UTF-8
    (["who", "/" + "a" * 5000], "'PATH'"),
    (["who", "a" * 300], "'PATH'"),  # a component over 255 bytes
    (["replay", "--path", "a\udcff"], "'--path'"),
    # points: their syntax is checked when parsed
    (["show", "--at", "xx"], "'--at'"),
    (["who", ".", "--at", "2025-13-01"], "'--at'"),
    (["replay", "--from", "x"], "'--from'"),
    (["replay", "--until", "05"], "'--until'"),
    (["diff", "x", "1"], "'A'"),
    (["diff", "0", "2025-W48-6"], "'B'"),
])
def test_a_bad_value_on_the_command_line_is_a_usage_error_with_the_hint(a_ledger: Path, tmp_path: Path,
                                                                      args: list[str], param: str) -> None:
    before = seq_of(a_ledger)
    res = ledger_cmd(a_ledger, *args, cwd=tmp_path)
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert line.startswith(f"error: invalid value for {param}: invalid "), line
    assert line.endswith(f"(see 'ledger {args[0]} --help')"), line
    assert not (tmp_path / "ran").exists() and seq_of(a_ledger) == before
    res = ledger_cmd(a_ledger, "--json", *args, cwd=tmp_path)
    doc = json.loads((res.stderr if args[0] == "run" else res.stdout).splitlines()[0])["error"]
    assert (doc["type"], doc["exit_code"]) == ("BadParameter", 2)


def test_what_a_manifest_or_the_environment_says_has_no_hint(a_ledger: Path, tmp_path: Path) -> None:
    # as docs/cli.md says: the command line itself was right
    path = tmp_path / "m.toml"
    path.write_text('[holder]\nname = "bad/../name"\n[scope]\nwrite = ["src"]\n')
    res = ledger_cmd(a_ledger, "check", "--manifest", str(path))
    assert res.returncode == 2 and "--help" not in one_error_line(res.stderr)
    res = ledger_cmd(a_ledger, "check", "--write", "src", env=clean_env(SCOPELEDGER_HOLDER="bad/../name"))
    assert res.returncode == 2 and "--help" not in one_error_line(res.stderr)
    assert "(see 'ledger CMD --help')" in _docs()


@pytest.mark.parametrize("args, param", [
    (["show", "--at", "xx"], "'--at'"),
    (["who", ".", "--at", "x"], "'--at'"),
    (["replay", "--from", "x"], "'--from'"),
    (["replay", "--until", "x"], "'--until'"),
    (["diff", "0", "x"], "'B'"),
    (["who", "/tmp/\udcff"], "'PATH'"),
    (["replay", "--path", "a\udcff"], "'--path'"),
])
def test_a_malformed_point_or_path_is_a_usage_error_before_the_ledger_is_opened(
        tmp_path: Path, args: list[str], param: str) -> None:
    # no ledger there: the value is wrong before that matters (it was exit 6, "no ledger")
    missing = tmp_path / "nonexistent"
    res = invoke(["--json", *args, "--ledger", str(missing)], env=clean_env())
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert line.startswith(f"error: invalid value for {param}: invalid "), line
    assert line.endswith(f"(see 'ledger {args[0]} --help')"), line
    assert json.loads(res.stdout)["error"]["exit_code"] == 2
    assert not missing.exists()


@pytest.mark.parametrize("args, hint", [
    (["show", "--at"], "ledger show"),  # a missing value
    (["show", "--json=1"], "ledger show"),  # a value given to a flag
    (["reclaim", "--dry-run=1"], "ledger reclaim"),
    (["run", "-w"], "ledger run"),
    (["--json=1", "show"], "ledger"),
    (["--lock-timeout"], "ledger"),
])
def test_usage_errors_found_by_clicks_parser_carry_the_hint(a_ledger: Path, args: list[str], hint: str) -> None:
    # click's parser raises these without a context: they had no "(see ...)"
    res = ledger_cmd(a_ledger, *args)
    assert res.returncode == 2, res
    line = one_error_line(res.stderr)
    assert line.endswith(f" (see '{hint} --help')"), line


def test_demo_dir_that_no_ledger_can_take_is_a_usage_error_and_makes_nothing(tmp_path: Path) -> None:
    res = subprocess.run([*CMD, "demo", "--dir", "d\udcff", "--clean"], capture_output=True, text=True,
                         env=clean_env(), cwd=tmp_path, timeout=60)
    assert res.returncode == 2, res
    assert one_error_line(res.stderr) == (f"error: invalid value for '--dir': invalid path "
                                          f"'{tmp_path}/d\\udcff': not valid UTF-8 "
                                          "(see 'ledger demo --help')")
    assert os.listdir(tmp_path) == [] and res.stdout == ""


def test_reclaim_with_nothing_to_reclaim_says_why(a_ledger: Path) -> None:
    # 'a' holds ./held, bound to this (live) process.
    res = ledger_cmd(a_ledger, "reclaim")
    assert res.returncode == 0 and res.stdout == "nothing to reclaim: every holder is alive\n"
    assert ledger_cmd(a_ledger, "release", "a").returncode == 0
    res = ledger_cmd(a_ledger, "reclaim")  # it said every holder's process was alive: there were none
    assert res.returncode == 0 and res.stdout == "nothing to reclaim: no live holders\n"


# -- 8. -o never replaces what is not a regular file ----------------------------------------------


def _not_regular_files(tmp_path: Path) -> list[tuple[Path, str]]:
    """A FIFO, a socket, a symlink (as /dev/stdout is one) and, as root, a character device
    (a copy of /dev/null): each with the kind the error names."""
    import socket
    import stat

    made = []
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    made.append((fifo, "a FIFO"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.csv"))
    sock.close()
    made.append((tmp_path / "sock.csv", "a socket"))
    (tmp_path / "target.csv").write_text("kept\n")
    (tmp_path / "link.csv").symlink_to("target.csv")
    made.append((tmp_path / "link.csv", "a symlink"))
    if os.geteuid() == 0:
        os.mknod(tmp_path / "null.csv", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made.append((tmp_path / "null.csv", "a character device"))
    return made


@pytest.mark.parametrize("command", [["export", "--format", "csv", "-o"], ["export", "--format", "trace", "-o"],
                                     ["timeline", "-o"]])
def test_output_onto_a_file_that_is_not_regular_is_refused_and_left_alone(a_ledger: Path, tmp_path: Path,
                                                                         command: list[str]) -> None:
    # It was renamed over: `ledger export -o /dev/stdout` as root replaced /dev/stdout (a symlink)
    # with a regular file, `-o /dev/null` the device itself.
    for path, kind in _not_regular_files(tmp_path):
        target = path.with_suffix(".png") if command[0] == "timeline" else path
        if target != path:
            path.rename(target)
        before = os.lstat(target)
        res = ledger_cmd(a_ledger, *command, str(target))
        assert res.returncode == 2, (kind, res)
        line = one_error_line(res.stderr)
        assert line.startswith(f"error: invalid value for '-o' / '--output': {target} is {kind}, "
                               "not a regular file"), line
        after = os.lstat(target)
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), kind
        target.unlink()
    assert (tmp_path / "target.csv").read_text() == "kept\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scopeledger-export-")]


def test_demo_timeline_onto_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "t.png"
    os.mkfifo(fifo)
    res = invoke(["demo", "--timeline", str(fifo)], cwd=tmp_path)
    assert res.returncode == 2, res
    assert f"{fifo} is a FIFO, not a regular file" in one_error_line(res.stderr)
    assert os.path.exists(fifo) and not os.path.isfile(fifo)


# -- 9. output that could not be written is not a success ------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full") or not stat.S_ISCHR(os.stat("/dev/full").st_mode),
                    reason="no /dev/full (a device that refuses every write with ENOSPC)")
@pytest.mark.parametrize("args", [["show"], ["replay"], ["--json", "show"], ["who", "/"]])
def test_output_to_a_full_device_is_an_os_error(a_ledger: Path, args: list[str]) -> None:
    # The last flush's ENOSPC was swallowed: exit 0, the output lost without a word.
    with open("/dev/full", "w") as full:
        res = subprocess.run([*CMD, "--ledger", str(a_ledger), *args], stdout=full, stderr=subprocess.PIPE,
                             text=True, env=clean_env(), timeout=60)
    assert res.returncode == 7, res
    assert one_error_line(res.stderr).startswith("error: no space left on device"), res.stderr


@pytest.mark.parametrize("command", [["export", "--format", "csv", "-o"], ["timeline", "-o"]])
def test_an_output_file_that_cannot_be_made_is_named_as_given(a_ledger: Path, command: list[str]) -> None:
    # (it named the temporary file beside it: "permission denied: /sys/.scopeledger-export-scn_f1tt")
    target = "/proc/scopeledger-out.png" if command[0] == "timeline" else "/proc/scopeledger-out.csv"
    res = ledger_cmd(a_ledger, *command, target)
    assert res.returncode == 7, res
    line = one_error_line(res.stderr)
    assert line.endswith(f": {target}") and ".scopeledger-export-" not in line, line


# -- 10. replay --type: the docs list every type the command accepts -------------------------------


def test_the_docs_list_every_event_type_replay_type_accepts() -> None:
    # (the table listed six; renewed, repaired and void were accepted but not listed)
    from scopeledger import EVENT_TYPES

    (row,) = [line for line in _docs().splitlines() if line.startswith("| `--type TYPE` |")]
    listed = re.findall(r"`([a-z]+)`", row.split("|")[2])
    assert len(listed) == len(set(listed)), row
    from scopeledger.cli import query

    (option,) = [p for p in query.replay.params if p.name == "types"]
    accepted = set(option.type.choices)  # type: ignore[attr-defined]
    assert set(listed) == accepted == EVENT_TYPES
