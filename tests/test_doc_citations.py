"""RELIABILITY.md names the test that holds each policy: every test it cites
exists where it says (a renamed or moved test otherwise leaves the document
pointing at nothing; 12 of 146 citations did on 2026-12-03)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A citation: ``tests/X.py::test_name``, or a bare ``::test_name``, which belongs
# to the test file named last before it; ``tests/X.py`` alone names that file.
_TOKEN = re.compile(r"(tests/[A-Za-z0-9_/]+\.py)?::(test_[A-Za-z0-9_]+)|(tests/[A-Za-z0-9_/]+\.py)")


def citations(text: str) -> list[tuple[int, str | None, str]]:
    """``(line, file, test name)`` for each test cited in ``text``."""
    out = []
    current = None
    for m in _TOKEN.finditer(text):
        if m.group(3):
            current = m.group(3)
            continue
        if m.group(1):
            current = m.group(1)
        out.append((text.count("\n", 0, m.start()) + 1, current, m.group(2)))
    return out


def test_every_test_reliability_md_cites_exists_in_the_file_it_names() -> None:
    text = (ROOT / "RELIABILITY.md").read_text(encoding="utf-8")
    found = citations(text)
    assert len(found) > 100  # (the parser reads the document's citations)
    defined: dict[str, set[str]] = {}
    wrong = []
    for line, file, name in found:
        if file is None:
            wrong.append(f"line {line}: ::{name} names no file before it")
            continue
        if file not in defined:
            path = ROOT / file
            defined[file] = (set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)\(", path.read_text(encoding="utf-8"),
                                            re.M)) if path.exists() else set())
        if name not in defined[file]:
            wrong.append(f"line {line}: {file}::{name} is not defined there")
    assert wrong == []
