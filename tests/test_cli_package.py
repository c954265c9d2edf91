"""The command line as a package (issue 14): it names what the library names, and
what it imports to start (issue 18: a fact, not a timing)."""

from __future__ import annotations

from scopeledger import ENV_DIR
from scopeledger.cli import params


def test_the_command_line_names_the_librarys_variable() -> None:
    # Written out in the command line so that --help does not import the library for it.
    assert params.ENV_DIR == ENV_DIR
