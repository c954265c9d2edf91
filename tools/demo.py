#!/usr/bin/env python3
"""The demo, as a script: the same as ``ledger demo`` (scopeledger/cli/demo.py).

    python tools/demo.py [--dir DIR] [--clean] [--json]

Real processes in a real temporary file tree: a runtime delegates to a
builder, which delegates to workers; one finishes, one is killed with
SIGKILL, one is left a zombie; a newcomer is refused with the owner chain,
``ledger reclaim`` frees the dead, the newcomer gets in; then the replay.
"""

import sys

from scopeledger.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
