"""Human rendering for the command line: event lines, the allocation tree,
tables, and the JSON shapes of ``--json``.

Nothing here opens a ledger or takes a lock; the command line passes in
events, states and answers. Human output goes through rich (colour only on a
terminal, never with ``NO_COLOR``); JSON output is built from plain dicts.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import attrs

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from scopeledger import Liveness, ScopeRule, format_chain

if TYPE_CHECKING:
    from scopeledger import Allocation, Diff, Event, Holding, State, Verdict, VerifyReport

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def from_ns(ns: int) -> dt.datetime:
    """Integer nanoseconds since the epoch -> an aware UTC ``datetime``, truncated
    to the microsecond (integer arithmetic, as the library's time model shows a time).

    Raises:
        OverflowError: outside the years 1 to 9999.
    """
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


#: What each reclaim reason means, for people.
REASONS = {
    "process_gone": "process gone",
    "zombie": "zombie",
    "pid_reused": "pid reused",
    "earlier_boot": "from an earlier boot",
    "namespace_gone": "its PID namespace is gone",
    "lease_expired": "its lease expired",
    "session_closed": "its client session was closed",
    "session_lock_gone": "its client session's connection ended",
}

_REASON_DETAIL = {
    "process_gone": "pid {pid} no longer exists",
    "zombie": "pid {pid} has exited (a zombie: its parent has not reaped it)",
    "pid_reused": "pid {pid} now belongs to another process",
    "earlier_boot": "pid {pid} ran under an earlier boot of this machine",
    "namespace_gone": "no process is left in the PID namespace pid {pid} was a number in",
    "lease_expired": "it was not renewed within its ttl and grace",
    "session_closed": "the ledger that bound it (on another host) was closed without releasing it",
    "session_lock_gone": "the server connection of the client that bound it (on another host) ended",
}

_TYPE_STYLE = {
    "registered": "green",
    "delegated": "cyan",
    "attached": "blue",
    "released": "yellow",
    "reclaimed": "red",
    "refused": "magenta",
    "renewed": "blue",
    "repaired": "bright_red",
    "void": "bright_black",
}


def _repair_words(e: Event, actor: int | None) -> str:
    """A ``repaired`` or ``void`` event in words."""
    if e.type == "void":
        return "kept void by the repair before it (a seq of a line it cut)"
    from scopeledger.cli.export import repair_words

    return repair_words(e)


def _renewed_words(e: Event, actor: int | None) -> str:
    """A ``renewed`` event in words."""
    d = e.data
    return f"'{d['name']}' (token {d['token']}) for {d['ttl_ns'] / 1e9:g} s"


#: Event types whose words need nothing the describer keeps.
_WORDS: dict[str, Callable[[Event, int | None], str]] = {
    "renewed": _renewed_words, "repaired": _repair_words, "void": _repair_words}


def styled(console: Console) -> bool:
    """Whether ``console`` shows styles at all (else write plain text)."""
    return console.is_terminal or console.color_system is not None


def make_console(stderr: bool = False, color: str = "auto") -> Console:
    """A rich console for stdout (or stderr).

    ``color``: ``auto`` (colour on a terminal unless ``NO_COLOR`` is set:
    rich honours it), ``always`` (colour whatever ``NO_COLOR``, the stream or
    ``TERM`` say: the command line overrides the environment, as no-color.org
    allows) or ``never``. Off a terminal nothing is wrapped: lines are as long
    as they need to be.
    """
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    kwargs: dict[str, Any] = {"stderr": stderr, "highlight": False, "emoji": False}
    if color == "always":
        kwargs["force_terminal"] = True
        kwargs["no_color"] = False  # (None: rich reads NO_COLOR)
        tty = True
    elif color == "never":
        kwargs["no_color"] = True
        kwargs["color_system"] = None
    if not tty:
        kwargs["width"] = 100_000  # never wrap in a pipe or a file
    console = Console(**kwargs)
    if color == "always" and console.color_system is None:  # TERM=dumb or unset: rich found none
        console = Console(**kwargs, color_system="standard")
    return console


# -- small formatters ---------------------------------------------------------


def iso(ns: int | None) -> str | None:
    """Integer ns since the epoch -> ``2025-11-29T14:03:05.123456Z`` (UTC)."""
    if ns is None:
        return None
    return from_ns(ns).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: The ``zone`` of human output (``--local``): this machine's time zone, each
#: instant with its own offset (``time.localtime``; ``$TZ`` when set). ``None``
#: is UTC (the default); else a ``datetime.tzinfo`` (``--tz``: a ``zoneinfo.ZoneInfo``).
LOCAL = "local"


def in_zone(ns: int, zone: Any = None) -> dt.datetime:
    """Integer ns since the epoch -> an aware ``datetime`` in ``zone`` (see
    :data:`LOCAL`), to the microsecond; in UTC where the zone's would
    leave the years 1 to 9999.

    Raises:
        OverflowError: outside the years 1 to 9999 (as :func:`from_ns`).
    """
    t = from_ns(ns)
    if zone is None:
        return t
    try:
        return t.astimezone() if zone == LOCAL else t.astimezone(zone)
    except (OverflowError, ValueError, OSError):
        return t


#: ``(second, "2025-11-29T14:03:05")``: the UTC second :func:`short_time`
#: wrote last (a replay's events come many to a second).
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def _grant_details(h: dict[str, Any], root: str | None = None) -> str:
    """What a grant's holder adds: its socket, its lease, its note (why it
    was asked for), and for an advisory grant the conflicts it was granted
    despite (each holder in the way and its rule: ``; advisory, despite 'H'
    holding write /r/**``; ``; advisory (no conflict)`` when it met none);
    ``""`` when none."""
    out = f"; socket {h['socket']}" if h.get("socket") else ""
    if h.get("ttl_ns"):
        out += f"; lease {h['ttl_ns'] / 1e9:g} s" + (" (lease only)" if h.get("lease_only") else "")
    if "advisory" in h:
        met = [f"{chain_text(chain)} holding {rule_text(theirs, root)}" for chain, theirs, _mine in h["advisory"]]
        out += "; advisory, despite " + ", ".join(met) if met else "; advisory (no conflict)"
    if "note" in h:
        out += f"; note: {_quoted(h['note'])}"
    return out


def signal_name(signum: int) -> str:
    """Signal ``signum`` as people name it: ``"SIGKILL"``, or ``"signal
    64"`` for one without a name here."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _release_details(d: dict[str, Any]) -> str:
    """What a ``released`` event adds (v2): a forced release and its reason,
    how the holder's process ended (``exit_code``, ``exit_signal``), the
    releaser's note; ``""`` when none."""
    out = ""
    if "forced" in d:
        out += f"; forced, reason: {_quoted(d['forced'])}"
    out += exit_details(d)
    if "note" in d:
        out += f"; note: {_quoted(d['note'])}"
    return out


def exit_details(d: dict[str, Any]) -> str:
    """How the holder's process ended, as a ``released`` event records it
    and a ``reclaimed`` one of a zombie (``exit_code``, ``exit_signal``):
    ``"; its process exited with status 3"``, ``"; its process was killed
    by SIGKILL"``; ``""`` when the event does not say."""
    if "exit_code" in d:
        return f"; its process exited with status {d['exit_code']}"
    if "exit_signal" in d:
        return f"; its process was killed by {signal_name(d['exit_signal'])}"
    return ""


def _quoted(text: str) -> str:
    """Words someone gave (a note, a reason) in double quotes, quotes and
    backslashes in them escaped, so that they never read as the event's
    own words (control characters are escaped with the whole line)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def short_time(ns: int, zone: Any = None) -> str:
    """``2025-11-29T14:03:05.123Z``: milliseconds, for event lines; in another
    ``zone`` with its offset, ``2025-11-29T19:33:05.123+05:30``."""
    global _last_second
    if zone is None:
        second, text = _last_second
        if ns // 1_000_000_000 != second:
            second = ns // 1_000_000_000
            text = from_ns(second * 1_000_000_000).strftime("%Y-%m-%dT%H:%M:%S")
            _last_second = (second, text)
        return f"{text}.{ns // 1_000_000 % 1000:03d}Z"
    return in_zone(ns, zone).isoformat(timespec="milliseconds")


def human_time(ns: int, zone: Any = None) -> str:
    """As :func:`iso` (microseconds, ``Z``) in UTC; in another ``zone`` with its offset."""
    if zone is None:
        return iso(ns) or ""
    return in_zone(ns, zone).isoformat(timespec="microseconds")


def rel(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` when it lies below it (display only)."""
    if not root or root == "/":
        return path
    if path == root:
        return "."
    if path.startswith(root + "/"):
        return path[len(root) + 1:]
    return path


def rule_text(r: Any, root: str | None = None) -> str:
    """``write /r/src/**`` (or ``write src/**`` below ``root``), and where
    the path lives when that is not its own path (``ScopeRule.identity_text``:
    ``write /work/src/** [254:0:/data/p1/src]``)."""
    if not isinstance(r, ScopeRule):
        r = ScopeRule.from_json(r)
    return (f"{r.permission.value} {rel(r.path, root).rstrip('/')}/{'**' if r.recursive else '*'}"
            f"{r.identity_text()}")


def rules_text(rules: Iterable[Any], root: str | None = None) -> str:
    """``write /r/src/**, read /r/docs/*``; accepts ScopeRules or the
    ``[path, perm, recursive]`` JSON form."""
    return ", ".join(rule_text(r, root) for r in rules)


def _escape(ch: str) -> str:
    """``'\\x1b'``, ``'\\u202e'``, ``'\\U000e0001'``: a character as Python
    would escape it in a string literal."""
    o = ord(ch)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def safe(text: str) -> str:
    """``text`` with every character that is not printable escaped as
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``, so that a path or name can
    neither drive the terminal nor pass for another (human output only).

    Not printable is what :meth:`str.isprintable` says (Rust's ``{:?}``
    agrees): the Unicode categories Cc (C0, DEL, C1: ESC, a newline),
    Cf (format: the bidi embeddings, overrides and isolates U+202A-U+202E
    and U+2066-U+2069 that show a name reversed, marks such as U+200E,
    zero-width characters, U+FEFF, the soft hyphen), Zl and Zp (U+2028,
    U+2029, which some terminals and viewers break lines at), Zs other
    than the space (U+00A0, which looks like one), Cs (a lone surrogate: a
    file name byte that is not UTF-8), Co (private use) and Cn
    (unassigned). Everything else, the space and a backslash included, is
    kept as it is."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def rel_message(message: str, root: str | None) -> str:
    """A stored message with the paths below ``root`` made relative: only
    where ``root`` is a whole path prefix (at the start of a path, followed by
    ``/`` or the end of the path), never inside another path."""
    if not root or root == "/":
        return message
    # ``root/x`` -> ``x``; ``root`` itself -> ``.``, also as a rule: ``root/**``
    # -> ``./**``, ``root/*`` -> ``./*`` and ``root/`` -> ``./`` (as
    # :func:`rule_text` shows it), never a bare ``**``.
    pattern = re.compile(r"(?<![^\s'\"(\[=,])" + re.escape(root)
                         + r"(?:(/(?=(?:\*\*?)?(?:$|[\s'\"),\]:;])))|/|(?=$|[\s'\"),\]:;]))")
    return pattern.sub(lambda m: "./" if m.group(1) else "" if m.group().endswith("/") else ".", message)


def chain_text(chain: Iterable[str]) -> str:
    chain = tuple(chain)
    return format_chain(chain) if chain else "?"


# -- event lines -----------------------------------------------------------------


class Narrator:
    """Turns events into one readable line each, remembering which process
    each holder was bound to so that later lines can name it.

    A filtered replay feeds the events it does not print to
    :meth:`describe` too (see :func:`narrate`), and one starting after seq 1
    is seeded with the state before it, so every line can name pids and
    parents.

    Args:
        root: show paths below this directory relative to it.
        zone: show times in this zone (:data:`LOCAL`, a ``tzinfo``); ``None``: UTC.
    """

    def __init__(self, root: str | None = None, zone: Any = None) -> None:
        self.pids: dict[str, int] = {}
        self.parents: dict[str, str | None] = {}
        self.root = root
        self.zone = zone

    def seed(self, state: State) -> None:
        """Start from ``state`` (the state just before the first event)."""
        for a in state.holders.values():
            self.pids[a.name] = a.pid
            self.parents[a.name] = a.parent

    def _pid(self, name: str, seq: int) -> int | None:
        return self.pids.get(name)

    def describe(self, e: Event) -> str:
        """What event ``e`` did to the tree, in words (no seq or time)."""
        d = e.data
        kind = e.type
        actor = (e.actor or {}).get("pid")
        words = _WORDS.get(kind)
        if words is not None:  # (an event that changes nothing this describer keeps)
            return words(e, actor)
        if kind in ("registered", "delegated"):
            h = d["holder"]
            name, pid = h["name"], h["process"]["pid"]
            self.pids[name] = pid
            self.parents[name] = h["parent"]
            rules = rules_text(h["rules"], self.root)
            if kind == "registered":
                head = f"'{name}' pid {pid} at top level"
            else:
                head = f"'{name}' from '{h['parent']}'"
                head += (f", reserved by pid {pid} until its process attaches" if h.get("reserved")
                         else f" pid {pid}")
            return f"{head}: {rules}{_grant_details(h, self.root)}"
        if kind == "attached":
            name, pid = d["name"], d["process"]["pid"]
            old = self._pid(name, e.seq)
            self.pids[name] = pid
            was = f" (was pid {old})" if old is not None and old != pid else ""
            return f"'{name}' attached to pid {pid}{was}"
        if kind in ("released", "reclaimed"):
            name = d["name"]
            pid = self._pid(name, e.seq)
            self.pids.pop(name, None)
            known = name in self.parents
            parent = self.parents.pop(name, None)
            pid_s = f"pid {pid}" if pid is not None else "pid ?"
            if kind == "released":
                text = f"'{name}' ({pid_s})"
                if actor is not None and pid is not None and actor != pid:
                    text += f" by pid {actor}"
                text += _release_details(d)
            else:
                reason = d["reason"]
                detail = _REASON_DETAIL.get(reason, "{pid}").format(pid=pid if pid is not None else "?")
                text = f"'{name}' because {REASONS.get(reason, reason)}: {detail}" + exit_details(d)
                if actor is not None:
                    text += f"; by pid {actor}"
                if d.get("last_seen"):
                    text += f"; last seen alive {short_time(d['last_seen'], self.zone)}"
            moves = d.get("reparented") or []
            if moves:
                parts = []
                for child, new_parent in moves:
                    self.parents[child] = new_parent
                    parts.append(f"'{child}' to '{new_parent}'" if new_parent else f"'{child}' to top level")
                text += "; re-parented " + ", ".join(parts)
            if known:
                text += f"; its scope returns to '{parent}'" if parent else "; its scope opens up"
            return text
        if kind == "refused":
            req = d["request"]
            who = f"'{req['name']}'"
            if req.get("parent"):
                who += f" from '{req['parent']}'"
            asked = f" (asked by pid {actor})" if actor is not None else ""
            return f"{who}{asked}: {rel_message(str(d.get('message', d.get('error'))), self.root)}"
        return str({k: v for k, v in d.items() if k not in ("v", "seq", "ts", "prev", "actor", "type")})

    def plain(self, e: Event) -> str:
        """:meth:`line` without styles (the fast path for pipes and files)."""
        return f"{e.seq:>6}  {short_time(e.ts, self.zone)}  {e.type:<10}  {safe(self.describe(e))}"

    def line(self, e: Event) -> Text:
        """``   12  2025-11-29T14:03:05.123Z  reclaimed   'w' because ...``."""
        text = Text()
        text.append(f"{e.seq:>6}  ", style="dim")
        text.append(short_time(e.ts, self.zone) + "  ", style="dim")
        text.append(f"{e.type:<10}  ", style=_TYPE_STYLE.get(e.type, "") + " bold")
        text.append(safe(self.describe(e)))
        return text


# -- the allocation tree -----------------------------------------------------


def narrate(narrator: Narrator, shown: Iterable[Event], everything: Iterable[Event] | None) -> Iterator[Event]:
    """Yield the events of ``shown`` (a filtered stream) after feeding the
    narrator every event of ``everything`` (the same range, unfiltered) that
    comes before each, so it keeps track of pids and parents. Linear."""
    if everything is None:
        yield from shown
        return
    rest = iter(everything)
    for e in shown:
        for other in rest:
            if other.seq >= e.seq:
                break
            narrator.describe(other)
        yield e


def _alloc_label(a: Allocation, liveness: Mapping[str, Verdict] | None, root: str | None) -> Text:
    t = Text()
    t.append(safe(a.name), style="bold")
    lease = a.lease
    held = "" if lease is None else f"  lease {lease.ttl:g} s{' only' if not lease.process else ''}"
    t.append(f"  {'asked by ' if lease is not None and not lease.process else ''}pid {a.pid}  token {a.token}"
             f"{held}  ", style="dim")
    t.append(safe(rules_text(a.rules, root)))
    if a.reserved:
        t.append("  [reserved: waiting for its process to attach]", style="yellow")
    if a.advisory:
        t.append("  [advisory: granted despite conflicts]", style="yellow")
    if liveness is not None:
        v = liveness.get(a.name)
        if v is not None and v.dead:
            code = v.liveness.value
            t.append(safe(f"  [dead: {REASONS.get(code, code)}; 'ledger reclaim' frees it]"), style="red bold")
        elif v is not None and v.liveness is Liveness.UNKNOWN:
            t.append(safe(f"  [liveness unknown: {v.why or 'the probe could not tell'}; kept]"), style="yellow")
        elif v is not None and lease is not None and v.why:
            t.append(safe(f"  [{v.why}]"), style="dim")  # (its lease: how long it runs, or since when it lapsed)
    return t


def state_tree(state: State, title: str, liveness: Mapping[str, Verdict] | None = None,
               root: str | None = None) -> Tree:
    """The live allocation tree of ``state`` as a rich Tree."""
    tree = Tree(Text(safe(title), style="bold"))
    if not state.holders:
        tree.add(Text("(no live holders)", style="dim"))
        return tree

    def add(node: Tree, name: str) -> None:
        branch = node.add(_alloc_label(state.holders[name], liveness, root))
        for child in state.children.get(name, ()):
            add(branch, child)

    for a in state.holders.values():
        if a.parent is None:
            add(tree, a.name)
    return tree


def state_json(state: State, ledger_path: str, liveness: Mapping[str, Verdict] | None = None) -> dict[str, Any]:
    """``show --json``'s document (docs/cli.md, "--json shapes"); ``ts`` in ns since the
    epoch (UTC), ``time`` the same in ISO 8601; ``liveness`` only for now, not for ``--at``."""
    out: dict[str, Any] = {
        "ledger": ledger_path,
        "seq": state.seq,
        "ts": state.last_ts or None,
        "time": iso(state.last_ts) if state.last_ts else None,
        "holders": [a.to_json() for a in state.holders.values()],
        "children": {k: list(v) for k, v in state.children.items()},
    }
    if liveness is not None:
        out["liveness"] = {k: v.liveness.value for k, v in liveness.items()}
        out["liveness_why"] = {k: v.why for k, v in liveness.items() if v.why}
    return out


# -- who, diff, verify -------------------------------------------------------------


def holding_json(h: Holding) -> dict[str, Any]:
    """One holder of ``who --json`` (docs/cli.md, "--json shapes")."""
    return {"name": h.name, "chain": list(h.chain), "permission": h.rule.permission.value,
            "rule": h.rule.to_json(), "deepest": h.deepest, "advisory": h.advisory}


class Trimmed:
    """Renders ``renderable`` line by line without trailing whitespace (a
    rich Table pads every cell to its column's width, the last one too, and
    rich's Padding pads every line to the widest), indented by ``indent``
    spaces, so that printed lines end where their text does; alignment is
    unchanged."""

    def __init__(self, renderable: RenderableType, indent: int = 0) -> None:
        self.renderable = renderable
        self.indent = indent

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.indent:
            options = options.update(width=max(options.max_width - self.indent, 20))
        for line in console.render_lines(self.renderable, options, pad=False):
            text = Text(" " * self.indent, no_wrap=True, overflow="ignore", end="\n")
            for seg in line:
                if not seg.control:
                    text.append(seg.text, seg.style)
            text.rstrip()
            yield text


def who_table(path: str, holdings: list[Holding], when: str, root: str | None = None) -> RenderableType:
    """``who holds PATH WHEN`` on a line of its own (a table title would be
    wrapped to the table's width), then a table of the holdings, without
    trailing spaces. PATH and the rules are shown relative to ``root``."""
    path = rel(path, root)
    if not holdings:
        return Text(safe(f"nobody holds {path} {when}"))
    table = Table(show_edge=False)
    table.add_column("access")
    table.add_column("holder")
    table.add_column("rule")
    table.add_column("real holder")
    for h in holdings:
        style = "bold" if h.rule.permission.value == "write" else ""
        table.add_row(Text(h.rule.permission.value, style=style),
                      Text(safe(chain_text(h.chain)) + (" [advisory]" if h.advisory else "")),
                      Text(safe(rule_text(h.rule, root).split(" ", 1)[1])),
                      "yes" if h.deepest else "no (delegated below)")
    title = Text(safe(f"who holds {path} {when}"), style="table.title")
    return Group(title, Trimmed(table))


def who_line(path: str, holdings: list[Holding], root: str | None = None) -> str:
    """``PATH: write by CHAIN (RULE), read by ...`` (or ``PATH: nobody``) on
    one line: ``who`` with several paths. The real holder of each chain
    comes last in it; a holding delegated below is marked."""
    parts = [f"{h.rule.permission.value} by {chain_text(h.chain)} ({rule_text(h.rule, root).split(' ', 1)[1]}"
             f"{'' if h.deepest else ', delegated below'}{', advisory' if h.advisory else ''})" for h in holdings]
    return safe(f"{rel(path, root)}: {', '.join(parts) if parts else 'nobody'}")


def diff_json(d: Diff) -> dict[str, Any]:
    """``diff --json``'s document (docs/cli.md, "--json shapes")."""
    return {"a": d.a, "b": d.b, "added": list(d.added), "removed": list(d.removed),
            "reparented": [{"name": n, "from": a, "to": b} for n, a, b in d.reparented],
            "rebound": list(d.rebound), "regranted": list(d.regranted)}


def diff_lines(d: Diff) -> list[Text]:
    out = [Text(f"from seq {d.a} to seq {d.b}:", style="bold")]
    changes = ([(f"+ {n}", "green") for n in d.added]
               + [(f"- {n}", "red") for n in d.removed]
               + [(f"~ {n}: parent {a or '(top level)'} -> {b or '(top level)'}", "yellow")
                  for n, a, b in d.reparented]
               + [(f"~ {n}: bound to another process (attached)", "blue") for n in d.rebound]
               + [(f"~ {n}: released and granted again (new token)", "cyan") for n in d.regranted])
    out += [Text(safe("  " + line), style=style) for line, style in changes]
    if not changes:
        out.append(Text("  no change", style="dim"))
    return out


def verify_json(r: VerifyReport) -> dict[str, Any]:
    """``verify --json``'s document, without ``ledger`` (docs/cli.md, "--json shapes")."""
    return {"ok": r.ok, "events": r.events, "snapshots": r.snapshots,
            "problems": [{"file": p.file, "line": p.line, "seq": p.seq, "message": p.message}
                         for p in r.problems],
            "notes": list(r.notes),
            "clock_jumps": [{"kind": j.kind, "event": attrs.asdict(j.event),
                             "before": attrs.asdict(j.before) if j.before is not None else None}
                            for j in r.clock_jumps],
            "clock_jumps_total": r.clock_jumps_total}


def plural(n: int, noun: str) -> str:
    """``1 event``, ``0 events``, ``2 events`` (a regular plural only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def verify_text(r: VerifyReport, ledger_path: str) -> str:
    """``ok: 1 event and 2 snapshots checked in PATH`` (the line of a passing
    ``ledger verify``; the caller escapes it with :func:`safe`)."""
    return (f"ok: {plural(r.events, 'event')} and {plural(r.snapshots, 'snapshot')} "
            f"checked in {ledger_path}")
