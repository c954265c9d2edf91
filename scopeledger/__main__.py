"""``python -m scopeledger``: the ``ledger`` command line."""

from .cli import main

main()
