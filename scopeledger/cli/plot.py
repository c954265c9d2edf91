"""Drawing ``ledger timeline``: the :class:`.timeline_model.Layout`
as a picture, with matplotlib (the ``plot`` extra: ``pip install
'scopeledger[plot]'``). Only this module imports matplotlib, and only the
``timeline`` command and ``demo --timeline`` import this module: matplotlib
costs about half a second to import (measured in BENCHMARKS.md), which no
other command pays.

Matplotlib is used through its object-oriented API (``Figure`` and the Agg
or SVG canvas), never ``pyplot``: no global state, no GUI backend.

Colours are the Okabe-Ito palette (Okabe and Ito, "Color Universal Design",
2002/2008), told apart with the common forms of colour blindness.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from typing import IO, Any, NamedTuple

from .timeline_model import Bar, Layout, Mark, Timeline, live_counts, live_counts_by_kind, tree_prefixes

#: Fill colour of a bar by how it ended (``Bar.kind``); an unknown reclaim
#: reason gets :data:`OTHER_COLOR`.
COLORS = {
    "released": "#009E73",               # bluish green
    "held": "#0072B2",                   # blue
    "reclaimed:process_gone": "#D55E00",  # vermillion
    "reclaimed:zombie": "#CC79A7",       # reddish purple
    "reclaimed:pid_reused": "#E69F00",   # orange
    "reclaimed:earlier_boot": "#F0E442",  # yellow
    "reclaimed:lease_expired": "#56B4E9",  # sky blue
}
OTHER_COLOR = "#7F7F7F"
REFUSAL_COLOR = "#000000"

#: Legend text of each kind.
KIND_TEXT = {
    "released": "released",
    "held": "still held at the end",
    "reclaimed:process_gone": "reclaimed: process gone",
    "reclaimed:zombie": "reclaimed: zombie",
    "reclaimed:pid_reused": "reclaimed: pid reused",
    "reclaimed:earlier_boot": "reclaimed: from an earlier boot",
    "reclaimed:lease_expired": "reclaimed: lease expired",
}

#: The formats ``-o FILE`` may name, by file name extension.
FORMATS = {".png": "png", ".svg": "svg"}

#: Longest label shown (characters); longer names are cut with an ellipsis.
LABEL_CHARS = 34

#: Longest line of rules under a name (characters).
DETAIL_CHARS = 48

#: Rows drawn with the rules under the name (more: the name only).
DETAIL_ROWS = 16


class Drawn(NamedTuple):
    """What :func:`draw` drew, for callers and tests: ``rows`` (labels, top
    to bottom), and for each bar drawn its ``boxes`` entry ``(token,
    kind, (x0, y0, x1, y1))`` in pixels of the PNG (origin top left; SVG
    ids are ``bar-<token>``); ``marks`` the refusals' pixel centres; and
    ``note``, the line saying what was left out (or ``None``)."""

    rows: list[str]
    boxes: list[tuple[int, str, tuple[float, float, float, float]]]
    marks: list[tuple[int, tuple[float, float]]]
    note: str | None
    width: int
    height: int


def _unit(span_ns: int) -> tuple[float, str]:
    s = span_ns / 1e9
    if s < 2:
        return 1e6, "milliseconds"
    if s < 180:
        return 1e9, "seconds"
    if s < 3 * 3600:
        return 60e9, "minutes"
    if s < 3 * 86400:
        return 3600e9, "hours"
    return 86400e9, "days"


def _iso(ns: int, digits: int = 3) -> str:
    t = dt.datetime.fromtimestamp(ns // 10**9, tz=dt.timezone.utc)
    frac = f"{ns % 10**9:09d}"[:digits]
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if digits else "") + "Z"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _rules_line(bar: Bar, root: str | None) -> str:
    from .render import rules_text, safe

    return safe(rules_text(bar.rules, root))


def draw(tl: Timeline, layout: Layout, out: IO[bytes], fmt: str, *, title: str,  # noqa: C901
         root: str | None = None, dpi: int = 100) -> Drawn:
    # (Complexity 44: one figure laid out top to bottom: labels, bars, the
    # aggregate band, refusals, legend, title, each part using the sizes and
    # the scale the parts before it chose. Splitting it means handing that
    # shared layout to each part: a change of its own, not a lint fix.)
    """Draw ``layout`` of ``tl`` as ``fmt`` (``"png"`` or ``"svg"``) to the
    binary stream ``out``.

    Rows top to bottom as ``layout.rows``: a label (tree prefix, holder
    name, and with at most :data:`DETAIL_ROWS` rows its rules, paths
    relative to ``root`` when below it), a bar from grant to end coloured by
    :data:`COLORS` (a reserved delegation's wait hatched until its process
    attached, attaches as white ticks, a triangle at an end that lies
    outside the window), refusals as black crosses. When ``layout.hidden``
    is not empty, a last row counts the holders not drawn (how many held at
    once, over time) and a note under the title says so. Times on the x
    axis are relative to the window's start, named in UTC.

    Raises:
        ImportError: matplotlib is not installed (the ``plot`` extra).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    import matplotlib as mpl

    from .render import safe

    rows = layout.rows
    aggregate = bool(layout.hidden or layout.hidden_marks)
    detail = len(rows) + (1 if aggregate else 0) <= DETAIL_ROWS
    agg_rows = (1.0 if detail else 3.0) if aggregate else 0.0  # the aggregate's height, in rows
    n = len(rows) + agg_rows
    row_in = 0.42 if detail else 0.26
    t0 = tl.start_ns
    span = max(tl.end_ns - t0, 10**9)  # a window of one instant is drawn a second wide
    scale, unit = _unit(span)

    def x(ns: int) -> float:
        return (ns - t0) / scale

    prefixes = tree_prefixes([r.depth for r in rows])
    labels: list[str] = []
    details: list[str] = []
    repeated = {r.name for r in rows if sum(1 for o in rows if o.name == r.name) > 1}
    for pre, r in zip(prefixes, rows, strict=True):
        name = safe(r.name)
        if r.bar is not None and r.name in repeated:
            name += f" #{r.bar.token}"
        if r.bar is None:
            name += " (refused)"
        elif r.bar.parent and r.bar.parent_token is None and r.depth == 0:
            name += f" (from {safe(r.bar.parent)})"
        labels.append(pre + _cut(name, LABEL_CHARS))
        if not detail:
            details.append("")
        else:
            pad = "".join("│" if c == "├" else (" " if c in "└─" else c) for c in pre)
            details.append(pad + _cut(_rules_line(r.bar, root) if r.bar is not None else "never granted",
                                      DETAIL_CHARS - len(pad)))
    if aggregate:
        labels.append(f"+ {len(layout.hidden):,} other holder{'s' if len(layout.hidden) != 1 else ''}")
        times, counts = live_counts(layout.hidden, tl.end_ns)
        peak = max(counts) if counts else 0
        said = [f"at most {peak:,} at once"] if peak else []
        if layout.hidden_marks:
            k = len(layout.hidden_marks)
            said.append(f"{k:,} refusal{'s' if k != 1 else ''}")
        details.append(", ".join(said))

    font = 9 if detail else 8
    char_w = 0.6 * font / 72  # DejaVu Sans Mono: 0.6 em per character
    label_in = max(len(s) for s in labels + details + ["x" * 12]) * char_w + 0.3
    width_in = max(9.0, min(16.0, label_in + 8.0))
    note = None
    if aggregate:
        shown_bars = sum(1 for r in rows if r.bar is not None)
        note = (f"{layout.total:,} rows are too many to draw: the {shown_bars:,} held longest are drawn "
                f"(with their delegators), the other {len(layout.hidden):,} are counted in the last row. "
                "Narrow it with --from/--until, --holder or --path, or raise --max-rows.")
        note = "\n".join(textwrap.wrap(note, int((width_in - 0.8) * 72 / (0.6 * 8))))
    head_in = 0.7 + (0.15 * (note.count("\n") + 1) + 0.1 if note else 0)
    legend_in = 0.55
    axis_in = 0.55
    height_in = head_in + max(n, 1) * row_in + axis_in + legend_in
    with mpl.rc_context({"svg.fonttype": "none", "font.family": "DejaVu Sans",
                         "svg.hashsalt": "scopeledger", "path.simplify": True}):
        fig = Figure(figsize=(width_in, height_in), dpi=dpi)
        canvas = FigureCanvasAgg(fig)
        left = label_in / width_in
        right = 1 - 0.3 / width_in
        bottom = (axis_in + legend_in) / height_in
        top = 1 - head_in / height_in
        ax = fig.add_axes((left, bottom, right - left, top - bottom))
        ax.set_ylim(max(n, 1) - 0.5, -0.5)
        ax.set_xlim(x(t0) - 0.01 * span / scale, x(t0 + span) + 0.03 * span / scale)
        ax.set_yticks([])
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.grid(axis="x", color="#DDDDDD", linewidth=0.6)
        ax.set_axisbelow(True)
        for i in range(0, len(rows), 2):
            ax.axhspan(i - 0.5, i + 0.5, color="#F3F3F3", zorder=0, linewidth=0)
        if aggregate:
            agg_top, agg_bottom = len(rows) - 0.5, len(rows) - 0.5 + agg_rows
            ax.axhline(agg_top, color="#BBBBBB", linewidth=0.8, zorder=1)
        ax.set_xlabel(f"{unit} after {_iso(t0)} (UTC)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)

        # labels, in the left margin: name, and the rules under it
        for i, text in enumerate(labels):
            y = float(i)
            if i == len(rows):  # the aggregate: at the top of its band
                y = agg_top + 0.5 if detail else agg_top + 0.45
            two = detail or i == len(rows)
            ax.annotate(text, xy=(0, y - 0.13 if two else y), xycoords=("axes fraction", "data"),
                        xytext=(-label_in * 72 + 8, 0),
                        textcoords="offset points", ha="left", va="center", fontsize=font,
                        family="DejaVu Sans Mono", annotation_clip=False,
                        color="#333333" if i < len(rows) else "#555555",
                        gid=f"label-{i}")
            if two and details[i]:
                ax.annotate(details[i], xy=(0, y + (0.22 if detail else 0.5)), xycoords=("axes fraction", "data"),
                            xytext=(-label_in * 72 + 8, 0), textcoords="offset points", ha="left",
                            va="center", fontsize=7, family="DejaVu Sans Mono",
                            annotation_clip=False, color="#777777")

        kinds_used: list[str] = []
        height = 0.56
        boxes: list[tuple[int, str, Any]] = []
        marks_at: list[tuple[int, tuple[float, float], Mark]] = []
        end_x = x(tl.end_ns)
        for i, r in enumerate(rows):
            b = r.bar
            if b is not None:
                kind = b.kind
                color = COLORS.get(kind, OTHER_COLOR)
                if kind not in kinds_used:
                    kinds_used.append(kind)
                stop = b.end_ns if b.end_ns is not None else tl.end_ns
                x0, x1 = x(b.start_ns), x(stop)
                w = max(x1 - x0, span / scale * 0.002)  # an instant's bar stays visible
                rect = Rectangle((x0, i - height / 2), w, height, facecolor=color, edgecolor="white",
                                 linewidth=0.5, zorder=2)
                rect.set_gid(f"bar-{b.token}")
                ax.add_patch(rect)
                boxes.append((b.token, kind, rect))
                if b.reserved and b.attaches:
                    wait = Rectangle((x0, i - height / 2), max(x(b.attaches[0][0]) - x0, 0), height,
                                     facecolor="white", alpha=0.55, edgecolor=color, hatch="////",
                                     linewidth=0, zorder=3)
                    ax.add_patch(wait)
                for ns, _pid in b.attaches:
                    ax.plot([x(ns), x(ns)], [i - height / 2, i + height / 2], color="white",
                            linewidth=1.4, zorder=4, solid_capstyle="butt")
                if b.before:
                    ax.plot([x0 - 0.004 * span / scale], [i], marker="<", color=color, markersize=6, zorder=4,
                            markeredgecolor="white", markeredgewidth=0.5)
                if b.end_ns is None:
                    ax.plot([end_x + 0.004 * span / scale], [i], marker=">", color=color, markersize=6,
                            zorder=4, markeredgecolor="white", markeredgewidth=0.5)
            for m in r.marks:
                marks_at.append((m.seq, (x(m.ns), i), m))

        hidden_ticks: list[float] = []
        if aggregate:
            base = agg_bottom - 0.1
            room = agg_rows - 0.45  # below a strip for the refusals' ticks
            if peak:  # stacked by how they ended, in the legend's order
                ktimes, by_kind = live_counts_by_kind(layout.hidden, tl.end_ns)
                xs = [x(t) for t in ktimes]
                below = [0] * len(ktimes)
                for kind in sorted(by_kind, key=_kind_order):
                    above = [b + c for b, c in zip(below, by_kind[kind], strict=True)]
                    ax.fill_between(xs, [base - room * c / peak for c in above],
                                    [base - room * c / peak for c in below], step="post",
                                    color=COLORS.get(kind, OTHER_COLOR), linewidth=0, zorder=2,
                                    gid=f"aggregate-{kind}")
                    if kind not in kinds_used:
                        kinds_used.append(kind)
                    below = above
            if layout.hidden_marks and len(layout.hidden_marks) <= 20 and detail:
                for m in layout.hidden_marks:
                    marks_at.append((m.seq, (x(m.ns), agg_top + 0.5), m))
            elif layout.hidden_marks:  # many: one thin tick each, a strip at the top of the band
                hidden_ticks = [x(m.ns) for m in layout.hidden_marks]
                ax.vlines(hidden_ticks, agg_top + 0.08, agg_top + 0.32, color=REFUSAL_COLOR,
                          linewidth=0.5, zorder=3, gid="hidden-refusals")

        if detail or len(marks_at) <= 12:  # say what was refused, beside the cross (a few per row)
            per_row: dict[float, int] = {}
            for _s, (mx, my), m in marks_at:
                per_row[my] = per_row.get(my, 0) + 1
                if per_row[my] > 2:
                    continue
                why = f"'{safe(m.obstacle)}' in the way" if m.obstacle else m.error.replace("_", " ")
                ax.annotate(f"refused: {why}", xy=(mx, my), xytext=(7, 0), textcoords="offset points",
                            ha="left", va="center", fontsize=7, color="#222222", zorder=6,
                            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                                  "alpha": 0.8})
        if marks_at:
            ax.scatter([p[0] for _s, p, _m in marks_at], [p[1] for _s, p, _m in marks_at], marker="X",
                       s=55 if detail else 30, color=REFUSAL_COLOR, edgecolors="white", linewidths=0.6,
                       zorder=5, gid="refusals")

        # legend under the axis, only what is drawn
        handles: list[Any] = [Patch(facecolor=COLORS.get(k, OTHER_COLOR), label=KIND_TEXT.get(k, k.replace(":", ": ")))
                   for k in sorted(kinds_used, key=_kind_order)]
        if any(r.bar is not None and r.bar.reserved and r.bar.attaches for r in rows):
            handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="////",
                                 label="reserved, until its process attached"))
        if any(r.bar is not None and r.bar.before for r in rows):
            handles.append(Line2D([], [], marker="<", linestyle="none", color="#555555", markersize=6,
                                  label="granted before the window"))
        if marks_at:
            handles.append(Line2D([], [], marker="X", linestyle="none", color=REFUSAL_COLOR,
                                  markeredgecolor="white", markersize=8, label="refused request"))
        if hidden_ticks:
            handles.append(Line2D([], [], marker="|", linestyle="none", color=REFUSAL_COLOR, markersize=8,
                                  label="refusals among them"))
        if handles:
            fig.legend(handles=handles, loc="lower center", ncol=len(handles) if len(handles) <= 6 else 4,
                       fontsize=8,
                       frameon=False, bbox_to_anchor=(0.5, 0.0), handlelength=1.6, columnspacing=1.4)

        mid = 0.5 * (left + right)
        fig.text(mid, 1 - 0.22 / height_in, safe(title),
                 ha="center", va="top", fontsize=11, weight="bold")
        sub = (f"seq {tl.first_seq:,} to {tl.last_seq:,}, {_iso(tl.start_ns)} to {_iso(tl.end_ns)}; "
               f"{sum(1 for r in rows if r.bar is not None) + len(layout.hidden):,} grant"
               f"{'s' if len(tl.bars) != 1 else ''}, {len(tl.marks):,} refusal{'s' if len(tl.marks) != 1 else ''}")
        if tl.empty:
            sub = "nothing was held or refused in this window"
            ax.set_xlabel("")
            ax.set_xticks([])
            ax.text(0.5, 0.5, "no events in this window", transform=ax.transAxes, ha="center",
                    va="center", fontsize=10, color="#777777")
        fig.text(mid, 1 - 0.47 / height_in, sub,
                 ha="center", va="top", fontsize=8, color="#444444")
        if note:
            fig.text(0.5, 1 - 0.68 / height_in, note, ha="center", va="top", fontsize=8,
                     color="#A03000", gid="note", linespacing=1.3)

        canvas.draw()  # type: ignore[no-untyped-call]
        px_h = fig.bbox.height
        out_boxes = []
        for token, kind, rect in boxes:
            bb = rect.get_window_extent()
            out_boxes.append((token, kind, (bb.x0, px_h - bb.y1, bb.x1, px_h - bb.y0)))
        to_px = ax.transData.transform
        out_marks = []
        for seq, (mx, my), _m in marks_at:
            px, py = to_px((mx, my))
            out_marks.append((seq, (float(px), float(px_h - py))))
        fig.savefig(out, format=fmt, dpi=dpi, metadata=_metadata(fmt, title))
        return Drawn(labels, out_boxes, out_marks, note, round(fig.bbox.width), round(px_h))


def _kind_order(kind: str) -> tuple[int, str]:
    order = list(KIND_TEXT)
    return (order.index(kind) if kind in order else len(order), kind)


def _metadata(fmt: str, title: str) -> dict[str, Any]:
    # Reproducible files: no creation date, the same bytes for the same picture.
    if fmt == "svg":
        return {"Date": None, "Creator": "scopeledger", "Title": title}
    return {"Software": "scopeledger (matplotlib)", "Title": title}
