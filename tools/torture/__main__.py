"""``python -m tools.torture``: the same as ``python tools/torture/run.py``."""

import sys

from tools.torture.run import main

sys.exit(main())
