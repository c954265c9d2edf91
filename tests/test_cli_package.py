"""The command line as a package (issue 14): it names what the library names, and
what it imports to start (issue 18: a fact, not a timing)."""

from __future__ import annotations

from scopeledger import ENV_DIR
from scopeledger.cli import params


def test_the_command_line_names_the_librarys_variable() -> None:
    # Written out in the command line so that --help does not import the library for it.
    assert params.ENV_DIR == ENV_DIR


# -- start-up: what each command imports (issue 18) -------------------------------------------

import ast  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import clean_env  # noqa: E402

#: Third-party modules that cost start-up time and that a command imports only when it needs them.
HEAVY = {"attr", "attrs", "cattrs", "psutil", "rich", "orjson", "matplotlib", "pyarrow", "tomllib"}

_REPORT = ("import sys, atexit\n"
           "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + repr(sorted(sys.modules)) + '\\n'))\n")


def _modules(code: str, *args: str, cwd: Path | None = None) -> set[str]:
    """The modules a new interpreter has imported when ``code`` (given ``args``) ends."""
    res = subprocess.run([sys.executable, "-c", _REPORT + code, *args], capture_output=True, text=True,
                         env=clean_env(), cwd=cwd, timeout=120)
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
    assert not _top(got) & (HEAVY | {"click"})


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_no_library_module(args: list[str]) -> None:
    got = _ledger(*args)
    ours = {m for m in got if m.startswith("scopeledger")}
    assert not {m for m in ours if m.startswith("scopeledger._")} - {"scopeledger._version"}, ours  # the library: none
    assert not _top(got) & HEAVY, _top(got) & HEAVY
    assert "logging" not in got  # installed when a command runs
    if args == ["--version"]:  # and no command's module
        assert ours == {"scopeledger", "scopeledger._version", "scopeledger.cli", "scopeledger.cli.app",
                        "scopeledger.cli.errors", "scopeledger.cli.params"}, ours


def test_run_imports_no_rendering_manifest_or_plotting(tmp_path: Path) -> None:
    got = _ledger("--ledger", str(tmp_path / "L"), "run", "--write", str(tmp_path / "t"), "--", "true")
    assert not _top(got) & {"rich", "cattrs", "tomllib", "matplotlib", "pyarrow"}, _top(got)
    assert "scopeledger.cli.render" not in got and "scopeledger.cli.query" not in got
