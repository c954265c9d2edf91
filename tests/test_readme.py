"""README.md's Python example runs as written, and says what it prints."""

import os
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def test_readme_example_runs():
    text = open(README, encoding="utf-8").read()
    start = text.index("```python\n") + len("```python\n")
    code = text[start:text.index("```", start)]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("write /repo/src/tests/x/** conflicts with holder 'builder.tests' "
                               "(delegated from 'builder')")
    assert lines[1] == "['builder.tests']"
    assert lines[3] == "dict_keys(['builder', 'builder.tests'])"
    assert lines[4] == "[]"
    assert lines[5].startswith("ok: 6 events")
