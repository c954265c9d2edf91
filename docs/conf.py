"""Sphinx configuration of scopeledger's documentation site.

The pages are the repository's own Markdown (README, docs/cli.md,
ARCHITECTURE, RELIABILITY, BENCHMARKS), read with MyST; nothing is written
twice. Build: ``sphinx-build -W -b html docs docs/_build`` (the ``docs``
extra); ``tests/test_docs_site.py`` builds it with warnings as errors.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scopeledger._version import __version__  # noqa: E402  (the one source of the version)

project = "scopeledger"
author = "The scopeledger developers"
copyright = "2026, The scopeledger developers"
release = version = __version__

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
myst_heading_anchors = 4            # docs/cli.md links to its own sections by slug
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build", "site"]
root_doc = "index"
html_theme = "alabaster"
html_title = f"scopeledger {__version__}"
