"""The documentation site is built from docs/ (Sphinx with MyST, the ``docs``
requirements in the test extra) with warnings as errors, and every link between
its pages lands on an anchor that exists (issue 17)."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"])
        if tag == "a" and found.get("href"):
            self.hrefs.append(found["href"])
        if tag == "img" and found.get("src"):
            self.images.append(found["src"])


def test_the_site_builds_without_warnings_and_its_links_resolve(tmp_path: Path) -> None:
    pytest.importorskip("myst_parser", reason="the docs site needs myst-parser (in the test extra)")
    out = tmp_path / "html"
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(ROOT / "docs"), str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    pages = {p.name: p for p in out.glob("*.html")}
    for wanted in ("index.html", "cli.html", "architecture.html", "reliability.html", "benchmarks.html"):
        assert wanted in pages
    parsed = {}
    for name, path in pages.items():
        page = _Page()
        page.feed(path.read_text())
        parsed[name] = page
    # The front page is README: its first set-up command and its picture are on it.
    front = re.sub(r"<[^>]+>", "", pages["index.html"].read_text())   # text, not highlighting spans
    assert ".venv/bin/ledger demo" in front
    (picture,) = [src for src in parsed["index.html"].images if "timeline-demo" in src]
    assert (out / picture).stat().st_size > 10_000
    broken = []
    for name, page in parsed.items():
        for href in page.hrefs:
            if re.match(r"[a-z]+:", href):            # http:, mailto: ...: not the site's
                continue
            target, _, anchor = href.partition("#")
            target = target or name
            if not target.endswith(".html") or target.startswith("_"):
                continue
            if target not in parsed or (anchor and anchor not in parsed[target].ids):
                broken.append(f"{name}: {href}")
    assert broken == []
    # docs/cli.md's own contents line links by slug to its sections.
    assert "ledger-run" in parsed["cli.html"].ids
