"""The commands that look back: ``replay``, ``show``, ``who``, ``history``, ``diff``.
They open the ledger read-only and change nothing; points in time are parsed by
:mod:`.params`, output is drawn by :mod:`.render` (imported when there is output).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Iterator

import click

from .errors import EXIT_INTERRUPTED, EXIT_OK
from .params import (DIGITS_RE, Command, Env, Seconds, abs_path, common, display_root, each_param,
                     holder_name_param, no_progress_option, pass_env, path_param, point_param,
                     relative_option, resolve_point, parse_point, zone_options)
from .progress import Bar

if TYPE_CHECKING:
    from scopeledger import CorruptLedger, Event, Ledger, State

class _EventTypes(click.Choice):  # type: ignore[type-arg]  # (not generic before click 8.2)
    """``--type``'s choices, :data:`scopeledger.EVENT_TYPES`, read when first
    needed (``ledger --help`` does not import the library)."""

    def __init__(self) -> None:
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        from scopeledger import EVENT_TYPES

        return tuple(sorted(EVENT_TYPES))


def _at_label(state: State, at: str | None, zone: Any = None) -> str:
    from .render import human_time

    if at is None:
        return f"now (seq {state.seq})"
    stamp = f", {human_time(state.last_ts, zone)}" if state.last_ts else ""
    if DIGITS_RE.fullmatch(at):
        return f"at seq {state.seq}{stamp}"
    return f"at {at} (seq {state.seq}{stamp})"



# -- replay ---------------------------------------------------------------------------


def _open_for_replay(env: Env, from_: str | None, until: str | None,
                     follow: bool) -> tuple[Ledger, CorruptLedger | None]:
    """The ledger for ``replay``, and ``None``; or, when it does not open
    because a line after its newest snapshot does not check out, a ledger
    that has folded nothing and the damage: a replay from the first event
    (no ``--from``, no ``--follow``, ``--until`` a seq if any) can still
    show everything before the damaged line, which an audit of a damaged
    ledger needs, and then fail with the error (exit 4).

    Raises:
        CorruptLedger: the ledger does not open and the replay asked for
            needs its current state, or the line is not known.
    """
    from scopeledger import CorruptLedger

    try:
        return env.open(readonly=True), None
    except CorruptLedger as exc:
        if (exc.line is None or from_ is not None or follow
                or (until is not None and not DIGITS_RE.fullmatch(until))):
            raise
        damage = exc
    from .render import safe

    # (what is wrong with the line is the error's, after the events: said once)
    env.err.print(f"warning: line {damage.line} of {safe(damage.path)} does not check out: replaying the "
                  f"events before line {damage.line} that the line after each vouches for (the error follows)",
                  style="yellow", markup=False, highlight=False, soft_wrap=True)
    return env.open(readonly=True, fold=False), damage


def _narrator(ledger: Ledger, since: int | None, filtered: bool, root: str | None,
              zone: Any = None) -> tuple[Any, Any]:
    """A Narrator seeded with the state before ``since``, and (for a
    filtered replay) the unfiltered stream that keeps it informed."""
    from .render import Narrator

    from scopeledger import HistoryUnavailable

    narrator = Narrator(root=root, zone=zone)
    if since is not None and since > 1:
        try:
            narrator.seed(ledger.state_at(seq=min(since - 1, ledger.seq)))
        except HistoryUnavailable:
            pass
    everything = ledger.events(since=since) if filtered else None
    return narrator, everything


@click.command(cls=Command)
@common
@click.option("--from", "from_", metavar="SEQ|TIME", callback=point_param,
              help="First event: a seq, an ISO time, a time before now (-1h) or @EPOCH.")
@click.option("--until", metavar="SEQ|TIME", callback=point_param,
              help="Last event: a seq, an ISO time, a time before now (-1h) or @EPOCH.")
@click.option("--holder", metavar="NAME", callback=holder_name_param,
              help="Only events about NAME and the holders it delegated to.")
@click.option("--path", "path_", metavar="PATH", callback=path_param(),
              help="Only events whose rules overlap PATH.")
@click.option("--type", "types", multiple=True, type=_EventTypes(),
              help="Only events of this type (repeatable).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they are appended.")
@relative_option
@zone_options
@no_progress_option
@click.option("--interval", type=Seconds(minimum=0.01), default=0.2, show_default=True,
              hidden=True, help="Polling interval of --follow, seconds.")
@pass_env
def replay(env: Env, from_: str | None, until: str | None, holder: str | None, path_: str | None,
           types: tuple[str, ...], follow: bool, relative_to: str | None, interval: float) -> int:
    """Print the events in order, one line each: who, what, which rules, and
    what it did to the tree (re-parented children, reclaim reasons, refusals
    with the owner chain). --json prints JSON Lines, one stored event each."""
    path = abs_path(path_) if path_ is not None else None
    ledger, damage = _open_for_replay(env, from_, until, follow)
    with ledger:
        since = resolve_point(ledger, from_, "--from", "start")
        until_seq = resolve_point(ledger, until, "--until", "end")
        if damage is not None:
            # Up to the line before the one the fold stopped at: each is then
            # vouched for by the next (a broken chain stops events() itself).
            before = (damage.line or 1) - 1
            until_seq = before if until_seq is None else min(until_seq, before)
        filters: dict[str, Any] = dict(types=types or None, holder=holder, path=path)
        filtered = bool(types or holder or path) and not env.json
        narrator, everything = _narrator(ledger, since, filtered, display_root(relative_to), env.zone)
        high, folded = until_seq, 0
        shown = None
        if follow:
            folded = ledger.refresh()  # what this pass reads; later events come in the loop
            high = folded if until_seq is None else min(folded, until_seq)
            # (its line, read before the lines printed: a cut after it is seen in the loop)
            shown = _line_of(ledger, folded)
        # The bar counts the events this pass reads (--from to --until), not the whole log
        # (a damaged ledger's seq is not known: it stops at the line before the damage).
        last = high if damage is not None or (high is not None and high <= ledger.seq) else ledger.seq
        progress = Bar(env, "replaying", since or 1, last or 0, streams_to_stdout=True)
        printer = _Printer(env, narrator, progress)
        with progress:
            printer.range(ledger, since, high, filters,
                          progress.track(everything) if everything is not None else None)
        if damage is not None:
            raise damage  # what stopped the ledger from opening, after what precedes it
        if follow:
            return _follow(ledger, printer, since, until, until_seq, high or 0, folded, shown, filters, filtered,
                           interval)
        if printer.count == 0 and not env.json:
            env.err.print("no events match", style="dim")
        return EXIT_OK


class _Printer:
    """What ``replay`` prints: each event narrated (human output), or each line
    exactly as stored (``--json``: an outside tool can re-hash the chain);
    counted, and moving the progress bar."""

    def __init__(self, env: Env, narrator: Any, progress: Bar) -> None:
        from .render import styled

        self.env, self.narrator, self.progress = env, narrator, progress
        self.count = 0
        self.fancy = not env.json and styled(env.out)

    def range(self, ledger: Ledger, since: int | None, until: int | None, filters: dict[str, Any],
              everything: Iterator[Event] | None = None, until_ns: int | None = None) -> None:
        """The events from seq ``since`` to ``until`` that pass ``filters`` (with
        ``until_ns``: stamped no later); ``everything``: the unfiltered stream the
        narrator follows (:func:`scopeledger.cli.render.narrate`)."""
        from .render import narrate

        if self.env.json:
            pairs = ledger.event_lines(since=since, until=until, **filters)
            if until_ns is not None:
                pairs = (p for p in pairs if p[0].ts <= until_ns)
            self._lines(pairs)
        else:
            events = ledger.events(since=since, until=until, **filters)
            if until_ns is not None:
                events = (e for e in events if e.ts <= until_ns)
            self._events(narrate(self.narrator, events, everything))

    def _events(self, events: Iterator[Event]) -> None:
        write = sys.stdout.write
        for e in events:
            self.count += 1
            if self.fancy:
                self.env.out.print(self.narrator.line(e), soft_wrap=True)
            else:
                write(self.narrator.plain(e) + "\n")
            self.progress.at(e.seq)

    def _lines(self, pairs: Iterator[tuple[Event, bytes]]) -> None:
        sys.stdout.flush()
        put = sys.stdout.buffer.write
        for e, line in pairs:
            self.count += 1
            put(line)
            put(b"\n")
            self.progress.at(e.seq)


def _follow(ledger: Ledger, printer: _Printer, since: int | None, until: str | None, until_seq: int | None,
            high: int, folded: int, shown: bytes | None, filters: dict[str, Any], filtered: bool,
            interval: float) -> int:
    """``replay --follow`` after the first pass (which printed up to seq ``high``,
    having folded up to ``folded``, whose line was ``shown``, read before the
    lines printed): wait for news (:meth:`scopeledger.Ledger.wait`), print what
    was appended, until ``--until`` (a seq: once it is printed; a time: once
    this machine's clock passes it) or Ctrl-C (exit 130); exit 4 when the log
    no longer holds the line of the last seq read as it was read."""
    until_ns = None
    if until is not None:
        point = parse_point(until)  # (valid: resolve_point took it)
        if not isinstance(point, int):
            until_ns = point[1]
    follow_until = until_seq if until_ns is None else None
    # The line of the last seq read (printed or passed over): the log must still hold it,
    # or what was shown is no longer the log's (a repair cut it, or the log was rewritten).
    # Each is read before the lines printed up to it: a cut between the two is seen too.
    read = folded
    try:
        while True:
            if follow_until is not None and high >= follow_until:
                return EXIT_OK
            if until_ns is not None and time.time_ns() > until_ns:
                return EXIT_OK
            sys.stdout.flush()
            # Read up to the seq folded now, and remember exactly that:
            # events appended meanwhile come in the next round.
            target = ledger.wait(folded, timeout=interval)  # (at most params.MAX_SECONDS: --interval's type)
            if read and _line_of(ledger, read) != shown:
                raise _not_shown(ledger, read)
            if target <= folded:
                continue  # no news within the interval: look at --until's time again
            folded = read = target
            shown = _line_of(ledger, read)
            start = max(high + 1, since or 1)
            if follow_until is not None:
                target = min(target, follow_until)
            if target >= start:
                everything = ledger.events(since=start) if filtered else None
                printer.range(ledger, start, target, filters, everything, until_ns)
                high = target
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _line_of(ledger: Ledger, seq: int) -> bytes | None:
    """The log's line of seq ``seq`` now (``None``: none, or not readable)."""
    from scopeledger import LedgerError

    if seq < 1:
        return None
    try:
        for _event, line in ledger.event_lines(since=seq, until=seq):
            return line
    except LedgerError:
        pass
    return None


def _not_shown(ledger: Ledger, seq: int) -> Exception:
    """The error of ``replay --follow`` when the log no longer holds seq
    ``seq`` as it was read: what the log's ``repaired`` lines say of it."""
    from scopeledger import CorruptLedger, LedgerError

    head = f"the log no longer holds seq {seq} as this replay read it"
    repair = None
    try:
        for event in ledger.events(types=["repaired"]):
            if event.seq <= seq <= event.data.get("through", 0):
                repair = event
    except LedgerError:
        pass
    if repair is not None:
        why = (f"'ledger repair' cut the log from seq {repair.seq} since (its repaired line keeps seqs to "
               f"{repair.data['through']} void; what was cut is in {repair.data.get('cut')} of the ledger)")
    else:
        why = "cut, rewritten or replaced since"
    return CorruptLedger(str(ledger.path), f"{head}: {why}; run 'ledger replay' again to read the log as it is now",
                         line=seq, seq=seq)


# -- show, who ------------------------------------------------------------------------


@click.command(cls=Command)
@common
@click.option("--at", metavar="SEQ|TIME", callback=point_param,
              help="Show the tree as it was after this seq or at this time.")
@relative_option
@zone_options
@pass_env
def show(env: Env, at: str | None, relative_to: str | None) -> int:
    """The live allocation tree: holders, pids, rules, delegation. Now, the
    process of each holder is probed: dead ones are marked, and so are those
    whose liveness is unknown, with the reason."""
    with env.open(readonly=True) as ledger:
        seq = resolve_point(ledger, at, "--at")
        state = ledger.state_at(seq=seq) if seq is not None else ledger.state()
        live = ledger.liveness(list(state.holders.values())) if seq is None else None
        if env.json:
            from .render import state_json

            env.emit_json(state_json(state, ledger.path, live))
        else:
            from .render import state_tree

            title = f"ledger {ledger.path} {_at_label(state, at, env.zone)}: {len(state.holders)} holder(s)"
            env.out.print(state_tree(state, title, live, display_root(relative_to)))
    return EXIT_OK


@click.command(cls=Command)
@common
@click.argument("paths", metavar="PATH", nargs=-1, required=True, callback=each_param(path_param()))
@click.option("--at", metavar="SEQ|TIME", callback=point_param,
              help="Ask about a past point: a seq, an ISO time, -1h or @EPOCH.")
@relative_option
@pass_env
def who(env: Env, paths: tuple[str, ...], at: str | None, relative_to: str | None) -> int:
    """Who holds PATH, for read and for write, with the delegation chain. With
    several paths, one line each (one JSON object each with --json), all from one
    state of the ledger."""
    targets = [abs_path(p) for p in paths]
    with env.open(readonly=True) as ledger:
        seq = resolve_point(ledger, at, "--at")
        answers = ledger.who(targets, seq=seq)
        state_seq = seq if seq is not None else ledger.seq
        if env.json:
            from .render import holding_json

            for target, holdings in zip(targets, answers, strict=True):
                env.emit_json({"ledger": ledger.path, "path": target, "seq": state_seq,
                               "holders": [holding_json(h) for h in holdings]})
        elif len(targets) == 1:
            from .render import who_table

            when = f"at seq {state_seq}" if seq is not None else f"now (seq {state_seq})"
            env.out.print(who_table(targets[0], answers[0], when, display_root(relative_to)))
        else:
            from .render import who_line

            for target, holdings in zip(targets, answers, strict=True):
                env.out.print(who_line(target, holdings, display_root(relative_to)), markup=False,
                              soft_wrap=True)
    return EXIT_OK


@click.command(cls=Command)
@common
@click.argument("name", callback=holder_name_param)
@relative_option
@zone_options
@no_progress_option
@pass_env
def history(env: Env, name: str, relative_to: str | None) -> int:
    """Every event about holder NAME and the holders it delegated to: grants,
    attaches, refusals, re-parenting, releases and reclaims."""
    with env.open(readonly=True) as ledger:
        from .render import narrate, styled

        if env.json:  # each line exactly as stored, as replay --json
            sys.stdout.flush()
            for _e, line in ledger.event_lines(holder=name):
                sys.stdout.buffer.write(line + b"\n")
            return EXIT_OK
        narrator, everything = _narrator(ledger, None, True, display_root(relative_to), env.zone)
        fancy = styled(env.out)
        count = 0
        with Bar(env, "reading", 1, ledger.seq, streams_to_stdout=True) as progress:
            # Ledger.history(name) is list(events(holder=name)): streamed here, the bar
            # following the unfiltered stream the narrator reads.
            for e in narrate(narrator, ledger.events(holder=name), progress.track(everything)):
                count += 1
                if fancy:
                    env.out.print(narrator.line(e), soft_wrap=True)
                else:
                    sys.stdout.write(narrator.plain(e) + "\n")
        if not count and not env.json:
            env.err.print(f"no events about holder '{name}'", style="dim")
    return EXIT_OK


class _PointArguments(Command):
    """A command whose arguments are points: ``diff -1h -30m`` takes ``-1h`` as a
    point, not as the options ``-1`` and ``-h`` (help). A word of ``-`` and a
    digit (no option is spelled so) is an argument; the arguments are moved
    after a ``--``, in order, the options (and their values) kept before it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {name for p in self.params if isinstance(p, click.Option) and not p.is_flag
                       for name in p.opts}
        options: list[str] = []
        arguments: list[str] = []
        rest = iter(args)
        for a in rest:
            if a == "--":
                arguments.extend(rest)
            elif a in takes_value:
                options.append(a)
                value = next(rest, None)
                if value is not None:
                    options.append(value)
            elif a.startswith("-") and not a[1:2].isdigit():
                options.append(a)
            else:
                arguments.append(a)
        return super().parse_args(ctx, [*options, "--", *arguments] if arguments else options)


@click.command(cls=_PointArguments)
@common
@click.argument("a", metavar="A", callback=point_param)
@click.argument("b", metavar="B", callback=point_param)
@pass_env
def diff(env: Env, a: str, b: str) -> int:
    """What changed between two points A and B (each a seq, an ISO time, -1h or @EPOCH):
    holders added, removed, re-parented, re-bound, re-granted."""
    with env.open(readonly=True) as ledger:
        d = ledger.diff(resolve_point(ledger, a, "A"), resolve_point(ledger, b, "B"))  # type: ignore[arg-type]
        if env.json:
            from .render import diff_json

            env.emit_json(diff_json(d))
        else:
            from .render import diff_lines

            for line in diff_lines(d):
                env.out.print(line, soft_wrap=True)
    return EXIT_OK


