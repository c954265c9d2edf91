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
is imported when a command needs it (``ledger --version`` imports neither).
"""

from .app import main

__all__ = ["main"]
