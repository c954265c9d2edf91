"""The version of scopeledger, its one source: pyproject.toml reads it from here
(``[tool.setuptools.dynamic]``), ``scopeledger.__version__`` and ``ledger
--version`` import it. A module of its own, so that reading it imports nothing."""

__version__ = "0.1.0"
