"""The command line as a package (issue 14): it names what the library names, and
what it imports to start (issue 18: a fact, not a timing)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import clean_env

import scopeledger
from scopeledger import ENV_DIR
from scopeledger.cli import params


def test_the_command_line_names_the_librarys_variable() -> None:
    # Written out in the command line so that --help does not import the library for it.
    assert params.ENV_DIR == ENV_DIR


# -- start-up: what each command imports (issue 18) -------------------------------------------

#: Third-party modules that cost start-up time and that a command imports only when it needs them.
HEAVY = {"attr", "attrs", "cattrs", "psutil", "rich", "orjson", "matplotlib", "pyarrow", "tomllib"}

_REPORT = ("import sys, atexit\n"
           "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + repr(sorted(sys.modules)) + '\\n'))\n")


def _modules(code: str, *args: str, cwd: Path | None = None) -> set[str]:
    """The modules a new interpreter has imported when ``code`` (given ``args``) ends, having
    succeeded (exit 0: a command that failed early would import little, and pass)."""
    res = subprocess.run([sys.executable, "-c", _REPORT + code, *args], capture_output=True, text=True,
                         env=clean_env(), cwd=cwd, timeout=120)
    assert res.returncode == 0, res
    last = [line for line in res.stderr.splitlines() if line.startswith("MODULES ")]
    assert last, res
    return set(ast.literal_eval(last[-1][len("MODULES "):]))


def _ledger(*args: str, cwd: Path | None = None) -> set[str]:
    return _modules("sys.argv[0] = 'ledger'\nfrom scopeledger.cli import main\nmain(sys.argv[1:])", *args, cwd=cwd)


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_import_scopeledger_imports_none_of_its_modules() -> None:
    got = _modules("import scopeledger")
    assert {m for m in got if m.startswith("scopeledger")} == {"scopeledger", "scopeledger._version"}
    assert not _top(got) & (HEAVY | {"click", "typing"})


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_no_library_module(args: list[str]) -> None:
    got = _ledger(*args)
    ours = {m for m in got if m.startswith("scopeledger")}
    assert not {m for m in ours if m.startswith("scopeledger._")} - {"scopeledger._version"}, ours  # the library: none
    assert not _top(got) & HEAVY, _top(got) & HEAVY
    assert "logging" not in got  # installed when a command runs
    if args == ["--version"]:  # answered by scopeledger.cli.main: not even click
        assert ours == {"scopeledger", "scopeledger._version", "scopeledger.cli"}, ours
        assert not {"click", "typing"} & got
    else:  # and no command's module (--help lists them from app.SUMMARIES)
        assert ours == {"scopeledger", "scopeledger._version", "scopeledger.cli", "scopeledger.cli.app",
                        "scopeledger.cli.errors", "scopeledger.cli.params"}, ours


def _version_run(entry: str, args: list[str], stdout: str) -> tuple[int, str, str]:
    """``ledger ARGS`` through ``entry`` (``from ... import main``) with stdout a pipe, closed
    (``>&-``), ``/dev/full`` or a pipe whose reader is gone: (exit status, stdout, stderr)."""
    code = f"import sys\nsys.argv[0] = 'ledger'\n{entry}\nmain(sys.argv[1:])"
    argv = [sys.executable, "-c", code, *args]
    if stdout == "closed":
        argv = ["sh", "-c", 'exec "$@" >&-', "sh", *argv]
    if stdout == "pipe":
        res = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), timeout=120)
        return res.returncode, res.stdout, res.stderr
    if stdout == "full":
        with open("/dev/full", "w") as full:
            res = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, env=clean_env(), timeout=120)
        return res.returncode, "", res.stderr
    if stdout == "broken":
        r, w = os.pipe()
        os.close(r)
        try:
            res = subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, text=True, env=clean_env(), timeout=120)
        finally:
            os.close(w)
        return res.returncode, "", res.stderr
    assert stdout == "closed", stdout
    res = subprocess.run(argv, stderr=subprocess.PIPE, text=True, env=clean_env(), timeout=120)
    return res.returncode, "", res.stderr


@pytest.mark.parametrize("stdout", ["pipe", "closed", "full", "broken"])
@pytest.mark.parametrize("args", [["--version"], ["-V"]])
def test_version_without_click_is_what_click_says(args: list[str], stdout: str) -> None:
    """``scopeledger.cli.main`` answers ``--version`` alone itself; the group's
    ``click.version_option`` (``scopeledger.cli.app.main``) answers the same, exit status
    and error line included, whatever stdout is."""
    fast = _version_run("from scopeledger.cli import main", args, stdout)
    with_click = _version_run("from scopeledger.cli.app import main", args, stdout)
    assert fast == with_click
    assert fast == {"pipe": (0, f"scopeledger, version {scopeledger.__version__}\n", ""), "closed": (0, "", ""),
                    "full": (7, "", "error: no space left on device\n"), "broken": (1, "", "")}[stdout], fast


def test_run_imports_no_rendering_manifest_or_plotting(tmp_path: Path) -> None:
    # `true`, not `false`: exit 0 (asserted by _modules) then says the scope was granted, the
    # command ran and the scope was released; `false` exits 1, as a refusal does.
    got = _ledger("--ledger", str(tmp_path / "L"), "run", "--write", str(tmp_path / "t"), "--", "true")
    assert not _top(got) & {"rich", "cattrs", "tomllib", "matplotlib", "pyarrow"}, _top(got)
    assert "scopeledger.cli.render" not in got and "scopeledger.cli.query" not in got
    # Nor psutil (v1 identities only), OpenSSL's hashes (blake2b is _blake2's), nor, with a
    # few holders, ctypes for malloc_trim (run.GIVE_BACK_HOLDERS): ctypes only as inotify_simple's,
    # imported by the thread that watches the grant once COMMAND runs (Ledger.watch_grant).
    assert not _top(got) & {"psutil", "_hashlib"}, _top(got)
    assert "ctypes" not in got or "inotify_simple" in got, _top(got)


# -- the group's help lists the commands without importing them --------------------------------


def test_each_summary_is_the_first_paragraph_of_its_commands_help() -> None:
    import click

    from scopeledger.cli.app import COMMANDS, SUMMARIES, cli

    assert set(SUMMARIES) == set(COMMANDS)
    ctx = click.Context(cli, info_name="ledger")
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.help, name
        # The stand-in listed in --help has only a name and help: nothing else may differ.
        assert command.short_help is None and not command.hidden and not command.deprecated, name
        assert SUMMARIES[name] == " ".join(command.help.partition("\n\n")[0].split()), (
            f"app.SUMMARIES[{name!r}] is not the first paragraph of '{name}''s help: copy it there")


_PAGES = """
import sys
import click
from scopeledger.cli.app import COMMANDS, cli

def pages():
    out = []
    for width in (50, 72, 80, 100, 132, 240):
        ctx = click.Context(cli, info_name="ledger", terminal_width=width, **cli.context_settings)
        out.append(cli.get_help(ctx))
    return out

lazy = pages()
loaded = sorted(m for m in sys.modules if m.startswith("scopeledger.cli.") and m.rsplit(".", 1)[1] in COMMANDS.values())
ctx = click.Context(cli, info_name="ledger")
for name in COMMANDS:
    cli.get_command(ctx, name)
print(repr((loaded, lazy == pages(), lazy[3])))
"""


def test_the_groups_help_is_the_same_with_the_commands_loaded() -> None:
    res = subprocess.run([sys.executable, "-c", _PAGES], capture_output=True, text=True, env=clean_env(),
                         timeout=120)
    assert res.returncode == 0, res
    loaded, same, page = ast.literal_eval(res.stdout)
    assert loaded == [], loaded  # listed from the summaries
    assert same  # at every width, as click lists the commands themselves
    assert "  run       Run COMMAND holding a scope, like flock(1): register it" in page, page


@pytest.mark.parametrize("command", [["show"], ["replay"], ["history", "a"], ["verify"]])
def test_rich_output_imports_neither_pygments_nor_markdown_it(tmp_path: Path, command: list[str]) -> None:
    """rich pulls Pygments (~9.5 MB) and markdown-it-py in as install-time
    dependencies; only ``ledger help TOPIC`` imports them, to render its
    Markdown pages (ARCHITECTURE.md, "Choices")."""
    led = tmp_path / "L"
    _ledger("--ledger", str(led), "run", "--write", str(tmp_path / "t"), "--name", "a", "--", "true")
    got = _ledger("--color", "always", "--ledger", str(led), *command)
    assert "rich" in _top(got) and not _top(got) & {"pygments", "markdown_it"}, sorted(_top(got))


# -- the lazy table of scopeledger/__init__.py -------------------------------------------------


def _type_checking_imports() -> dict[str, str]:
    """Name -> module of each import under ``if TYPE_CHECKING:`` in ``scopeledger/__init__.py``."""
    import scopeledger

    tree = ast.parse(Path(scopeledger.__file__).read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom) and imp.level == 0 and imp.module == "typing":
                    continue  # (for annotations: typing itself is not imported, issue 18)
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1 and imp.module, ast.dump(imp)
                for alias in imp.names:
                    assert alias.name not in found, alias.name
                    found[alias.name] = imp.module
    return found


def test_the_lazy_table_all_and_the_type_checking_imports_name_the_same() -> None:
    import importlib

    import scopeledger

    table: dict[str, str] = scopeledger._PUBLIC  # type: ignore[attr-defined]
    assert len(scopeledger.__all__) == len(set(scopeledger.__all__)), "a name twice in __all__"
    assert set(scopeledger.__all__) == set(table), set(scopeledger.__all__) ^ set(table)
    assert _type_checking_imports() == table
    for name, module in table.items():  # each name is the object its module defines
        assert getattr(scopeledger, name) is getattr(importlib.import_module(f"scopeledger.{module}"), name), name
    assert set(table) <= set(dir(scopeledger))


def test_a_ctrl_c_while_the_command_line_loads_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """An interrupt while ``ledger``'s modules load (a Ctrl-C in its first tens of
    milliseconds: 10 of 150 ``ledger run``s sent a random signal printed a
    traceback) gets the exit a Ctrl-C gets later, 130, and no traceback. The
    interrupt is raised where the import of click would load it."""
    from scopeledger.cli.errors import EXIT_INTERRUPTED

    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'click':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from scopeledger.cli import main\n"
        f"main(['--ledger', {str(tmp_path / 'ledger')!r}, 'show'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(),
                          timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED == 130, proc
    assert "Traceback" not in proc.stderr and proc.stdout == "", proc
    assert not (tmp_path / "ledger").exists()  # nothing was done
