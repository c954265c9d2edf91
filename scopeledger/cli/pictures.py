"""Pictures and exports of the log for other tools (issue 17): ``timeline`` and
``export``. The work is done in :mod:`.timeline_model` (events -> bars, pure),
:mod:`.plot` (the drawing, matplotlib: the 'plot' extra) and :mod:`.export` (CSV,
Parquet: the 'parquet' extra, Trace Event JSON), from what the public API gives
(``Ledger.events``, ``Ledger.state_at``); nothing here imports matplotlib or pyarrow
until a command needs it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Iterator

import click

from .errors import EXIT_OK, EXIT_USAGE, CliError
from .params import (Command, Env, Integer, abs_path, common, display_root, no_progress_option, output_path_param,
                     pass_env, relative_option, resolve_point, window_options)

if TYPE_CHECKING:
    from scopeledger import Event, Ledger

#: The optional extras, and the module each brings.
EXTRAS = {"plot": "matplotlib", "parquet": "pyarrow"}

#: The export formats, and whether each writes bytes (not text).
EXPORT_FORMATS = {"csv": False, "trace": True, "parquet": True}

#: Rows a timeline draws at most by default (one more is the aggregate).
TIMELINE_MAX_ROWS = 40


def extra_missing(extra: str, what: str) -> CliError:
    """The error for a command that needs an optional extra not installed:
    what the environment lacks, so exit 2 without the --help hint."""
    return CliError(f"{what} needs {EXTRAS[extra]}, which is not installed: install the "
                    f"'{extra}' extra, pip install 'scopeledger[{extra}]'", EXIT_USAGE)


class Window:
    """The events of ``--from``/``--until``/``--holder``/``--path``, the
    holders already live when it begins, and its end, from the public API."""

    def __init__(self, ledger: Ledger, from_: str | None, until: str | None, holder: str | None,
                 path_: str | None) -> None:
        from scopeledger import ScopeRule

        from .timeline_model import seed

        self.ledger = ledger
        self.path = abs_path(path_) if path_ is not None else None
        self.holder = holder
        self.since = resolve_point(ledger, from_, "--from", "start")
        until_seq = resolve_point(ledger, until, "--until", "end")
        last = ledger.seq
        self.until = min(until_seq, last) if until_seq is not None else None
        end_seq = self.until if self.until is not None else last
        self.end = (self._ts(end_seq), end_seq) if end_seq > 0 else None
        self.live = []
        if self.since is not None and 1 < self.since <= last:  # (past the last event: an empty window)
            before = ledger.state_at(seq=self.since - 1)
            start_ns = self._ts(self.since)
            probe = ScopeRule(self.path, "read", True) if self.path is not None else None
            self.live = seed(before.holders.values(), start_ns, self.since, holder=holder, path=probe)

    def _ts(self, seq: int) -> int:
        e = next(iter(self.ledger.events(since=seq, until=seq)), None)
        return e.ts if e is not None else 0

    def events(self) -> Iterator[Event]:
        return self.ledger.events(since=self.since, until=self.until, holder=self.holder, path=self.path)


def draw_timeline(ledger: Ledger, output: str, window: Window | None = None, max_rows: int = TIMELINE_MAX_ROWS,
                  root: str | None = None, title: str | None = None) -> dict[str, Any]:
    """Draw the timeline of ``window`` (default: the whole log) of
    ``ledger`` into the file ``output`` (.png or .svg, mode 0600, replaced
    atomically); ``ledger timeline`` and ``ledger demo --timeline``.
    Returns a summary (the ``--json`` shape).

    Raises:
        CliError: matplotlib is not installed (exit 2).
    """
    from .export import output_file
    from .timeline_model import build, select_rows

    try:
        import matplotlib  # noqa: F401

        from . import plot
    except ImportError:
        raise extra_missing("plot", "ledger timeline") from None
    w = window or Window(ledger, None, None, None, None)
    start_ns = w.live[0].start_ns if w.live else None
    tl = build(w.events(), w.live, start_ns=start_ns, start_seq=w.since or 0)
    if w.end is not None and not tl.empty:
        tl = tl._replace(end_ns=max(tl.end_ns, w.end[0]), last_seq=max(tl.last_seq, w.end[1]))
    layout = select_rows(tl, max_rows)
    fmt = plot.FORMATS[os.path.splitext(output)[1].lower()]
    what = [f"holder {w.holder}" if w.holder else "", f"path {w.path}" if w.path else ""]
    heading = title or "ledger timeline: " + (" ".join(x for x in what if x) or ledger.path)
    with output_file(output) as f:
        drawn = plot.draw(tl, layout, f, fmt, title=heading, root=root)
    return {"output": os.path.abspath(output), "format": fmt, "first_seq": tl.first_seq,
            "last_seq": tl.last_seq, "bars": len(tl.bars), "refusals": len(tl.marks),
            "rows": len(layout.rows), "hidden": len(layout.hidden), "note": drawn.note,
            "width": drawn.width, "height": drawn.height}


@click.command(cls=Command)
@common
@click.option("-o", "--output", required=True, metavar="FILE.png|FILE.svg",
              callback=output_path_param((".png", ".svg")), help="The picture to write (.png or .svg).")
@window_options
@click.option("--max-rows", type=Integer(2, 100_000), default=TIMELINE_MAX_ROWS, show_default=True,
              metavar="N", help="Rows drawn at most; more are counted in one aggregate row.")
@relative_option
@pass_env
def timeline(env: Env, output: str, from_: str | None, until: str | None, holder: str | None,
             path_: str | None, max_rows: int, relative_to: str | None) -> int:
    """Draw the holders across time: one bar per grant, nested under its
    delegator, coloured by how it ended (released, reclaimed and why, still
    held); refusals marked where they happened. Needs the 'plot' extra
    (pip install 'scopeledger[plot]')."""
    if output == "-":
        raise click.BadParameter("a picture goes to a file: give FILE.png or FILE.svg", param_hint="'-o'")
    with env.open(readonly=True) as ledger:
        window = Window(ledger, from_, until, holder, path_)
        summary = draw_timeline(ledger, output, window, max_rows, display_root(relative_to))
    if env.json:
        env.emit_json(summary)
    else:
        from .render import safe

        said = (f"wrote {summary['output']}: {summary['bars']} grant(s), {summary['refusals']} refusal(s), "
                f"seq {summary['first_seq']} to {summary['last_seq']}")
        if summary["hidden"]:
            said += f"; {summary['hidden']} holder(s) counted in one row, not drawn (see --max-rows)"
        env.err.print(safe(said), markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


@click.command(cls=Command)
@common
@click.argument("places", nargs=-1, metavar="[SOURCE DEST]")
@click.option("--format", "format_", type=click.Choice(sorted(EXPORT_FORMATS)),
              help="csv: one row per event; parquet: the same (the 'parquet' extra); trace: Trace "
                   "Event JSON for Perfetto and chrome://tracing. (Not with SOURCE DEST.)")
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True, callback=output_path_param(),
              help="Where to write ('-': stdout; parquet needs a file).")
@window_options
@no_progress_option
@pass_env
def export(env: Env, places: tuple[str, ...], format_: str | None, output: str, from_: str | None,
           until: str | None, holder: str | None, path_: str | None) -> int:
    """Write the events for other tools (--format): CSV or Parquet (one row
    per event, columns in docs/cli.md) for spreadsheets, pandas and DuckDB;
    Trace Event JSON (one track per holder, nested by delegation, refusals as
    instant events) for Perfetto and chrome://tracing. Streams: a long log
    needs no more memory than a short one.

    With SOURCE DEST instead: copy the ledger at SOURCE into DEST byte for
    byte (each a directory or a postgresql:// URL; DEST new or empty), as
    'ledger import SOURCE DEST' does: 'ledger export URL DIR' makes a ledger
    directory that 'ledger verify' checks on the file backend."""
    if places:
        ctx = click.get_current_context()
        given = [name for name, param in (("--format", "format_"), ("-o", "output"), ("--from", "from_"),
                                          ("--until", "until"), ("--holder", "holder"), ("--path", "path_"))
                 if ctx.get_parameter_source(param) is click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"'ledger export SOURCE DEST' copies a whole ledger: {', '.join(given)} "
                                   "do not apply (they are for --format's exports)")
        from .transfer import copy

        return copy(env, places, "export")
    if format_ is None:
        raise click.UsageError("missing option '--format' (or give SOURCE DEST to copy a ledger)")
    from scopeledger import __version__

    from . import export as exports

    if format_ == "parquet":
        if output == "-":
            raise click.BadParameter("parquet goes to a file: give -o FILE", param_hint="'-o'")
        if not exports.parquet_available():
            raise extra_missing("parquet", "ledger export --format parquet")
    if env.json and output == "-":
        raise click.BadParameter("--json prints a summary: give -o FILE for the export itself",
                                 param_hint="'--json'")
    from .progress import Bar

    with env.open(readonly=True) as ledger:
        window = Window(ledger, from_, until, holder, path_)
        progress = Bar(env, "exporting", window.since or 1, window.until if window.until is not None else ledger.seq,
                       streams_to_stdout=output == "-")

        def write(f: Any) -> int:
            with progress:
                events = progress.track(window.events())
                if format_ == "csv":
                    return exports.write_csv(events, f)
                if format_ == "parquet":
                    return exports.write_parquet(events, f)
                return exports.write_trace(events, f, window.live, window.end,
                                           {"ledger": ledger.path, "exported_by": f"scopeledger {__version__}"})

        if output == "-":
            sys.stdout.flush()
            if EXPORT_FORMATS[format_]:
                count = write(sys.stdout.buffer)
            else:
                import io

                text = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=False)
                try:
                    count = write(text)
                    text.flush()
                finally:
                    text.detach()
        else:
            with exports.output_file(output, binary=EXPORT_FORMATS[format_]) as f:
                count = write(f)
    if env.json:
        env.emit_json({"output": os.path.abspath(output), "format": format_, "events": count})
    elif output != "-":
        env.err.print(f"wrote {count} event(s) to {os.path.abspath(output)}", markup=False,
                      highlight=False, soft_wrap=True)
    return EXIT_OK


