"""`ledger timeline`: the model (events -> bars, pure; no plotting library
needed), the picture (matplotlib, the 'plot' extra: its content checked in
the SVG and in the PNG's pixels), the command as a user runs it, and that
no other command pays for importing matplotlib."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scopeledger import ScopeRule
from scopeledger.cli import timeline_model as T

import audit_support
from helpers import CMD, PY, clean_env, ledger_cmd, one_error_line

try:
    import matplotlib  # noqa: F401
    HAVE_MPL = True
except ImportError:  # pragma: no cover
    HAVE_MPL = False

needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed (pip install -e '.[test]' "
                                                    "or '.[plot]')")

SECOND = 10**9
T0 = 1_764_426_000 * SECOND



def _by_name(bars: list[T.Bar]) -> dict[str, T.Bar]:
    return {b.name: b for b in bars}


# -- the model ------------------------------------------------------------------------


def test_bars_from_events_end_nest_and_mark(story) -> None:
    _d, led, pids = story
    tl = T.build(led.events())
    bars = _by_name(tl.bars)
    assert [b.name for b in tl.bars] == ["rt", "mid", "leaf", "other", "newcomer"]
    assert (bars["rt"].kind, bars["rt"].end_ns) == ("held", None)
    assert bars["mid"].kind == "reclaimed:process_gone" and bars["mid"].end_seq == 8
    assert bars["leaf"].kind == "reclaimed:zombie" and bars["leaf"].end_seq == 9
    assert bars["other"].kind == "released" and (bars["other"].start_seq, bars["other"].end_seq) == (5, 7)
    assert bars["newcomer"].kind == "held" and bars["newcomer"].token == 10
    # nesting under the delegator at grant time (leaf stays under mid although re-parented to rt)
    assert (bars["mid"].parent_token, bars["mid"].depth) == (1, 1)
    assert (bars["leaf"].parent, bars["leaf"].parent_token, bars["leaf"].depth) == ("mid", 2, 2)
    # times are the events' (the fake clock: one second per event)
    assert bars["other"].start_ns == T0 + 5 * SECOND and bars["other"].end_ns == T0 + 7 * SECOND
    assert bars["mid"].reserved and bars["mid"].attaches == [(T0 + 3 * SECOND, pids[1])]
    assert [(m.seq, m.name, m.parent, m.error, m.obstacle) for m in tl.marks] == \
        [(6, "newcomer", "rt", "delegation", "leaf")]  # the deepest in the way
    assert (tl.first_seq, tl.last_seq, tl.start_ns, tl.end_ns) == (1, 10, T0 + SECOND, T0 + 10 * SECOND)


def test_rows_put_a_refusal_on_the_grant_that_followed_and_keep_tree_order(story) -> None:
    _d, led, _p = story
    layout = T.select_rows(T.build(led.events()), 40)
    assert [(r.name, r.depth) for r in layout.rows] == \
        [("rt", 0), ("mid", 1), ("leaf", 2), ("newcomer", 1), ("other", 0)]
    newcomer = layout.rows[3]
    assert [m.seq for m in newcomer.marks] == [6] and newcomer.bar is not None
    assert layout.hidden == [] and layout.total == 5


def test_a_request_never_granted_gets_its_own_row_under_the_parent_it_asked(story) -> None:
    _d, led, _p = story
    tl = T.build(led.events(until=9))  # before the newcomer got in
    layout = T.select_rows(tl, 40)
    rows = {r.name: r for r in layout.rows}
    assert rows["newcomer"].bar is None and rows["newcomer"].depth == 1
    assert [r.name for r in layout.rows].index("newcomer") > [r.name for r in layout.rows].index("rt")


def test_window_seeds_the_holders_live_before_it(story) -> None:
    _d, led, _p = story
    before = led.state_at(seq=4)  # rt, mid, leaf live
    start = next(iter(led.events(since=5, until=5))).ts
    live = T.seed(before.holders.values(), start, 5)
    assert [(b.name, b.before, b.start_ns, b.depth) for b in live] == \
        [("rt", True, start, 0), ("mid", True, start, 1), ("leaf", True, start, 2)]
    tl = T.build(led.events(since=5), live, start_ns=start, start_seq=5)
    bars = _by_name(tl.bars)
    assert bars["mid"].kind == "reclaimed:process_gone" and bars["leaf"].parent_token == bars["mid"].token
    # --holder and --path select as Ledger.events does
    assert [b.name for b in T.seed(before.holders.values(), start, 5, holder="mid")] == ["mid", "leaf"]
    probe = ScopeRule("/r/mid/leaf/x", "read", True)
    assert [b.name for b in T.seed(before.holders.values(), start, 5, path=probe)] == ["rt", "mid", "leaf"]
    assert T.seed(before.holders.values(), start, 5, path=ScopeRule("/elsewhere", "read", True)) == []


def test_too_many_rows_keep_the_longest_with_their_delegators_and_count_the_rest(story) -> None:
    _d, led, _p = story
    tl = T.build(led.events())
    layout = T.select_rows(tl, 3)  # 2 rows of bars and the aggregate
    assert [r.name for r in layout.rows] == ["rt", "mid"]  # held longest: rt 9 s, mid 6 s
    assert sorted(b.name for b in layout.hidden) == ["leaf", "newcomer", "other"]
    assert [m.seq for m in layout.hidden_marks] == [6] and layout.total == 5
    # leaf (5 s) is kept with its delegators; other (2 s) alone would fit, but comes after
    assert [r.name for r in T.select_rows(tl, 4).rows] == ["rt", "mid", "leaf"]
    # a short bar whose chain is long does not push out the others: it is skipped
    assert [r.name for r in T.select_rows(tl, 3).rows] == ["rt", "mid"]
    with pytest.raises(ValueError):
        T.select_rows(tl, 1)


def test_live_counts_and_tree_prefixes() -> None:
    a = T.Bar(1, "a", None, None, [], 1, 10, 1)
    b = T.Bar(2, "b", None, None, [], 1, 20, 2)
    a.end_ns, a.ended = 30, "released"
    assert T.live_counts([a, b], 50) == ([10, 20, 30, 50], [1, 2, 1, 0])
    times, by_kind = T.live_counts_by_kind([a, b], 50)
    assert times == [10, 20, 30, 50] and by_kind == {"released": [1, 1, 0, 0], "held": [0, 1, 1, 0]}
    assert T.tree_prefixes([0, 1, 2, 1, 0, 1]) == ["", "├─ ", "│  └─ ", "└─ ", "", "└─ "]


def test_model_and_cli_import_no_plotting_or_export_library() -> None:
    code = ("import sys, scopeledger, scopeledger.cli, scopeledger.cli.timeline_model, scopeledger.cli.export\n"
            "bad = [m for m in ('matplotlib', 'pyarrow', 'jsonschema', 'numpy') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# -- the picture ----------------------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def _svg(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def _fill(group: ET.Element) -> str:
    for el in group.iter():
        style = el.get("style", "")
        for part in style.split(";"):
            k, _, v = part.partition(":")
            if k.strip() == "fill":
                return v.strip().upper()
    raise AssertionError(f"no fill in {ET.tostring(group)[:200]!r}")


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


@needs_mpl
def test_cli_timeline_svg_has_each_bar_in_its_colour_and_each_label(story, tmp_path: Path) -> None:
    from scopeledger.cli.plot import COLORS

    d, led, _p = story
    out = tmp_path / "t.svg"
    r = ledger_cmd(d, "timeline", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["bars"] == 5 and summary["refusals"] == 1 and summary["hidden"] == 0
    assert (os.stat(out).st_mode & 0o777) == 0o600
    root = _svg(out)
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id")}
    want = {1: "held", 2: "reclaimed:process_gone", 4: "reclaimed:zombie", 5: "released", 10: "held"}
    assert sorted(k for k in groups if k.startswith("bar-")) == sorted(f"bar-{t}" for t in want)
    for token, kind in want.items():
        assert _fill(groups[f"bar-{token}"]) == COLORS[kind].upper(), (token, kind)
    texts = _texts(root)
    for label in ("rt", "├─ mid", "│  └─ leaf", "└─ newcomer", "other"):
        assert any(t.strip().endswith(label.strip()) for t in texts), (label, texts)
    assert any("write /r/mid/leaf/**" in t for t in texts)  # the rules under the name
    assert any(t == "refused: 'leaf' in the way" for t in texts)
    assert "refusals" in groups  # the cross
    legend = " ".join(texts)
    for words in ("released", "reclaimed: process gone", "reclaimed: zombie", "still held at the end",
                  "reserved, until its process attached", "refused request"):
        assert words in legend, words
    assert "pid reused" not in legend  # only what is drawn


@needs_mpl
def test_png_pixels_at_each_bar_are_its_colour(story, tmp_path: Path) -> None:
    from PIL import Image

    from scopeledger.cli import pictures
    from scopeledger.cli.plot import COLORS

    d, led, _p = story
    out = tmp_path / "t.png"
    # draw_timeline is what the command runs; _plot.draw reports where each bar went
    from scopeledger.cli import plot as _plot
    calls = []
    real = _plot.draw

    def spy(*a, **k):
        drawn = real(*a, **k)
        calls.append(drawn)
        return drawn

    _plot.draw = spy
    try:
        pictures.draw_timeline(led, str(out))
    finally:
        _plot.draw = real
    (drawn,) = calls
    img = Image.open(out).convert("RGB")
    assert img.size == (drawn.width, drawn.height)
    kinds = {t: k for t, k, _box in drawn.boxes}
    assert kinds == {1: "held", 2: "reclaimed:process_gone", 4: "reclaimed:zombie", 5: "released", 10: "held"}
    for token, kind, (x0, y0, x1, y1) in drawn.boxes:
        want = tuple(int(COLORS[kind][i:i + 2], 16) for i in (1, 3, 5))
        # the right half of the bar (the left may be hatched: reserved until attached)
        px = img.getpixel((int(x0 + (x1 - x0) * 0.75), int((y0 + y1) / 2)))
        assert px == want, (token, kind, px, want)
    # just outside a bar that ended: background, not the bar's colour
    (_t, _k, (x0, y0, x1, y1)) = next(b for b in drawn.boxes if b[0] == 5)
    outside = img.getpixel((int(x1 + 15), int((y0 + y1) / 2)))
    assert outside != tuple(int(COLORS["released"][i:i + 2], 16) for i in (1, 3, 5))
    # the refusal's cross is black, on newcomer's row
    (seq, (mx, my)), = drawn.marks
    assert seq == 6 and img.getpixel((int(mx), int(my))) == (0, 0, 0)


@needs_mpl
def test_timeline_of_many_events_aggregates_and_says_so(tmp_path: Path) -> None:
    d = tmp_path / "many"
    with audit_support.helpers() as pids:
        audit_support.build(d, 400, pids).close()
    out = tmp_path / "many.svg"
    r = ledger_cmd(d, "timeline", "-o", str(out), "--max-rows", "10", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["rows"] == 9 and s["hidden"] >= s["bars"] - 9 and s["hidden"] > 50
    root = _svg(out)
    ids = [g.get("id") for g in root.iter(f"{SVG}g") if g.get("id")]
    assert sum(1 for i in ids if i.startswith("bar-")) <= 9
    assert any(i.startswith("aggregate-") for i in ids)
    texts = " ".join(_texts(root))
    assert "rows are too many to draw" in texts and f"{s['hidden']:,} other holders" in texts
    assert s["note"] and "too many" in s["note"]


@needs_mpl
def test_timeline_window_and_filters(story, tmp_path: Path) -> None:
    d, _led, _p = story
    out = tmp_path / "w.svg"
    r = ledger_cmd(d, "timeline", "-o", str(out), "--from", "5", "--holder", "mid", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["first_seq"], s["last_seq"], s["bars"]) == (5, 10, 2)  # mid and leaf, from before the window
    texts = " ".join(_texts(_svg(out)))
    assert "granted before the window" in texts and "holder mid" in texts
    r = ledger_cmd(d, "timeline", "-o", str(tmp_path / "p.svg"), "--path", "/o", "--json")
    assert json.loads(r.stdout)["bars"] == 1


def test_timeline_usage_errors_before_opening(tmp_path: Path) -> None:
    for args, words in ((("-o", str(tmp_path / "x.pdf")), "must end in .png or .svg"),
                        (("-o", str(tmp_path / "nodir" / "x.png")), "does not exist"),
                        (("-o", "-"), "a picture goes to a file"),
                        (("-o", str(tmp_path)), "must end in"),
                        (("-o", str(tmp_path / "x.png"), "--max-rows", "1"), "--max-rows")):
        r = ledger_cmd(tmp_path / "nowhere", "timeline", *args)
        assert r.returncode == 2, (args, r.stderr)
        line = one_error_line(r.stderr)
        assert words in line, (args, line)


def test_without_matplotlib_the_command_names_the_extra(story, tmp_path: Path) -> None:
    d, _led, _p = story
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib (test shadow)')\n")
    env = clean_env(PYTHONPATH=str(tmp_path / "shadow"))
    out = tmp_path / "t.png"
    for args in (("--ledger", str(d), "timeline", "-o", str(out)),
                 ("demo", "--dir", str(tmp_path / "demo"), "--timeline", str(out))):
        r = subprocess.run([*CMD, *args], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 2, r.stderr
        line = one_error_line(r.stderr)
        assert "needs matplotlib" in line and "pip install 'scopeledger[plot]'" in line, line
    assert not out.exists() and not (tmp_path / "demo").exists()  # the demo did not start


@needs_mpl
def test_demo_writes_its_timeline(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "demo.png"
    r = subprocess.run([*CMD, "demo", "--dir", str(tmp_path / "d"), "--clean", "--timeline", str(out), "--json"],
                       capture_output=True, text=True, env=clean_env(), timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["timeline"] == str(out)
    assert out.stat().st_size < 200_000
    assert Image.open(out).format == "PNG"


def test_readme_picture_is_one_the_demo_made() -> None:
    # The committed picture: a PNG the demo wrote (its title says so), small.
    pic = Path(__file__).resolve().parent.parent / "docs" / "timeline-demo.png"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "docs/timeline-demo.png" in readme and "ledger demo --timeline docs/timeline-demo.png" in readme
    data = pic.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
    assert b"scopeledger (matplotlib)" in data  # the Software tag cli/plot.py writes
    assert b"Title\x00ledger demo: " in data  # and the demo's title


@needs_mpl
def test_an_empty_window_draws_a_picture_saying_so(story, tmp_path: Path) -> None:
    d, _led, _p = story
    for args in (("--from", "2099-01-01"), ("--path", "/nothing/here")):
        out = tmp_path / "e.svg"
        r = ledger_cmd(d, "timeline", "-o", str(out), "--json", *args)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["bars"] == 0
        assert "no events in this window" in " ".join(_texts(_svg(out)))
