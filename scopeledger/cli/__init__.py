"""The ``ledger`` command line (also installed as ``scopeledger``, and run by
``python -m scopeledger``). Reference: docs/cli.md.

Every command but ``demo`` (which makes its own ledger) takes ``--ledger DIR`` (else
``$SCOPELEDGER_DIR``, else :func:`scopeledger.default_path`); every command takes
``--json``. Errors are one line, ``error: ...``, on stderr, and a documented exit code
(:mod:`.errors`).

It uses only the library's public names (``from scopeledger import ...``;
``tests/test_import_graph.py`` keeps it so). Code map:

- :mod:`.app`: the group, its options, which module holds each command, :func:`main`;
- :mod:`.logs`: the library's log records on stderr (installed when a command runs);
- :mod:`.errors`: exit codes, :class:`~.errors.CliError`, how a failure is said;
- :mod:`.params`: options, parameter types and callbacks, points in time, :class:`~.params.Env`;
- :mod:`.render`: human output (rich) and the ``--json`` shapes;
- :mod:`.query`: ``replay``, ``show``, ``who``, ``history``, ``diff``;
- :mod:`.admin`: ``verify``, ``snapshot``, ``reclaim``, ``release``;
- :mod:`.run`: ``check`` and ``run``;
- :mod:`.pictures`: ``timeline`` and ``export`` (with :mod:`.timeline_model`, :mod:`.plot`,
  :mod:`.export`);
- :mod:`.demo`: ``demo``; what it plays, with its child processes, is :mod:`.demo_story`;
- :mod:`.helptopics`: ``help`` (docs/cli.md's sections, shipped in ``help/``);
- :mod:`.progress`: progress on stderr for ``replay``, ``history``, ``export``, ``verify``.

A command's module is imported when the command runs or its help is shown; the library
is imported when a command needs it. ``ledger --version`` alone is answered by :func:`main`
here, importing neither click nor the command line's modules.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run the command line (:func:`.app.main`) and exit with its code.

    ``--version`` (or ``-V``) alone is answered here, with the line click's version option
    prints, without importing click or the command line (issue 18: it starts about as fast
    as ``python3 -c pass``). Should that line not get out (stdout closed or full, a broken
    pipe), or a shell ask for completions, :func:`.app.main` answers instead, as it always
    did, exit code and error line included.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args in (["--version"], ["-V"]) and _said_version():
        sys.exit(0)
    try:
        from .app import main as run_command_line
    except KeyboardInterrupt:
        # Ctrl-C while the command line's modules load (tens of milliseconds): the
        # exit a Ctrl-C gets later (errors.EXIT_INTERRUPTED), not a traceback.
        sys.exit(130)

    run_command_line(argv)


def _said_version() -> bool:
    """Write ``scopeledger, version V`` on stdout, as ``click.version_option`` does (a test
    compares the two); ``False`` when not done (nothing written: see :func:`main`)."""
    if sys.stdout is None or any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return False
    from scopeledger import __version__

    try:
        sys.stdout.write(f"scopeledger, version {__version__}\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        return False
    return True
