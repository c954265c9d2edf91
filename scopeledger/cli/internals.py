"""The library's internals the command line still reaches for, in one place, until
they are public (/work/notes/CLI_NEEDS.md, answers 1 and 4): then each line here
becomes an import from ``scopeledger`` (and this module goes).

- :func:`refuse_a_ledger_inside_a_ledger` (``demo --dir``, before the demo makes anything);
- :func:`check_reached` (a path given to ``who``, ``replay --path``, ... that leads through
  ``/proc/PID/root`` into another mount namespace is refused, as the library refuses it).

(``format_chain`` and ``non_directory_on_the_way``, once here, are public now.)
"""

from __future__ import annotations

from scopeledger._paths import check_reached
from scopeledger._store import _refuse_a_ledger_inside_a_ledger as refuse_a_ledger_inside_a_ledger

__all__ = ["check_reached", "refuse_a_ledger_inside_a_ledger"]
