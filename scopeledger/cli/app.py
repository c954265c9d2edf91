"""The ``ledger`` group and the entry point: the group's options, which module
each command lives in (imported when that command runs or its help is shown, so
``ledger --version`` imports none of them), and :func:`main`, which turns every
ending into an exit code and one line on stderr (docs/cli.md, "Exit codes").
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn, Sequence

import click

from scopeledger import __version__

from .errors import (EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, CliError,
                     asks_for_json, exit_code_for, report)
from .params import SECONDS, Env, Group, common, pass_env

#: Each command, and the module of this package that defines it.
#: (A command whose name is a Python keyword is its module's ``NAME_``: ``import_``.)
COMMANDS = {
    "check": "run", "demo": "demo", "diff": "query", "export": "pictures", "help": "helptopics", "history": "query",
    "import": "transfer", "init": "transfer",
    "reclaim": "admin", "release": "admin", "renew": "admin", "repair": "admin", "replay": "query", "run": "run",
    "show": "query", "snapshot": "admin", "timeline": "pictures", "verify": "admin", "who": "query",
}


#: Each command's summary: the first paragraph of its help, words joined by one space,
#: from which click makes the line ``ledger --help`` shows for it (the first sentence,
#: shortened to the width), so that the group's help imports no command's module (issue
#: 18). tests/test_cli_package.py checks each against its command's help.
SUMMARIES = {
    'check': ('Would this request be granted now? Exit 0 if yes, 1 if not (naming the owner chain). Holders in '
              'the way whose process is dead do not count: the request itself would reclaim them. Records '
              "nothing. Inside 'ledger run' it asks as a delegation from SCOPELEDGER_HOLDER, and a stale "
              "SCOPELEDGER_TOKEN is an error (exit 6), as for a nested 'ledger run'."),
    'demo': ('A tour on real processes in a real temporary tree: a runtime delegates to a builder, which '
             'delegates to workers; one worker finishes, one is killed with SIGKILL, one is left a zombie; a '
             'newcomer is refused, reclaim frees the dead, the newcomer gets in. Then it replays what '
             'happened. It makes its own ledger (with the tree, in --dir), so --ledger is not taken.'),
    'diff': ('What changed between two points A and B (each a seq, an ISO time, -1h or @EPOCH): holders added,'
             ' removed, re-parented, re-bound, re-granted.'),
    'export': ('Write the events for other tools (--format): CSV or Parquet (one row per event, columns in '
               'docs/cli.md) for spreadsheets, pandas and DuckDB; Trace Event JSON (one track per holder, nested by '
               'delegation, refusals as instant events) for Perfetto and chrome://tracing. Streams: a long log needs '
               'no more memory than a short one.'),
    'help': ("Print a page of docs/cli.md: rules, time, exit-codes, environment, completion; with a command's "
             'name, that command\'s --help. Without TOPIC, the list of topics. --json: {"topics": {TOPIC: '
             'what}} or {"topic", "text"} (the page\'s Markdown).'),
    'history': ('Every event about holder NAME and the holders it delegated to: grants, attaches, refusals, '
                're-parenting, releases and reclaims.'),
    'import': ('Copy the ledger at SOURCE into DEST byte for byte: every event line at its seq and every snapshot that'
               " checks out, so 'verify', 'replay' and 'show --at' answer the same there. Each is a directory or a "
               'PostgreSQL URL (ledger import DIR postgresql://USER@HOST/DB?schema=NAME). DEST is created if missing, '
               "and must otherwise be empty (exit 1 if it holds events). The same as 'ledger export SOURCE DEST'."),
    'init': ("Make a new, empty ledger: a directory (as 'ledger run' would), or at a PostgreSQL URL its schema and "
             "tables (postgresql://USER@HOST/DB?schema=NAME; the schema is the ledger, default 'scopeledger'). "
             'Default: the ledger --ledger or $SCOPELEDGER_DIR selects. On a ledger that exists already it changes '
             'nothing and says so (exit 0), so a setup script may run it again.'),
    'reclaim': ('Reclaim every holder whose process is provably gone: exited, a zombie, its pid reused, from an '
                'earlier boot of this host, or its PID namespace gone. Children are re-parented. Holders whose '
                'liveness cannot be decided are kept, each with the reason.'),
    'release': ("Release holder NAME by hand (an operator's tool: normally its process or 'ledger run' releases "
                'it). Its children are re-parented. With --force --reason TEXT, the release records the reason '
                "and who forced it; the holder's fencing check turns false. --note TEXT records a note on any "
                'release.'),
    'renew': ("Renew the lease of holder NAME (granted with a ttl, as 'ledger run --ttl' does): it lasts its "
              "ttl again from now, on the ledger's clock (on PostgreSQL the server's; in a directory this host's "
              'boot-time clock). Exit 6 when that grant is gone or its lease had already expired (its reclaim is '
              'then recorded).'),
    'repair': ("Set a damaged tail of the log aside. The first line that does not check out (as 'ledger verify' "
               'judges it: a broken line, a broken hash chain, garbage after the end, a torn last line), everything '
               'after it and the snapshots past it go into cut/TIME-line-N/ in the ledger directory, with a record '
               'of what was cut and why; then the log is cut there, and new events go on from the line before. '
               'Nothing to repair: nothing changes. Exit 0 unless the repair failed; a line written by a newer '
               'scopeledger is never cut (nothing changes; exit 8: upgrade scopeledger).'),
    'replay': ('Print the events in order, one line each: who, what, which rules, and what it did to the tree '
               '(re-parented children, reclaim reasons, refusals with the owner chain). --json prints JSON '
               'Lines, one stored event each.'),
    'run': ('Run COMMAND holding a scope, like flock(1): register it (or delegate it from the enclosing '
            "'ledger run'), run the command as a child, release when it ends, and exit with its exit code "
            '(128+N if signal N killed it).'),
    'show': ('The live allocation tree: holders, pids, rules, delegation. Now, the process of each holder is '
             'probed: dead ones are marked, and so are those whose liveness is unknown, with the reason.'),
    'snapshot': ('Write a snapshot of the current state now (the ledger also writes them by itself every so many '
                 'events); with --prune, then remove old ones.'),
    'timeline': ('Draw the holders across time: one bar per grant, nested under its delegator, coloured by how it '
                 'ended (released, reclaimed and why, still held); refusals marked where they happened. Needs the '
                 "'plot' extra (pip install 'scopeledger[plot]')."),
    'verify': ('Check the whole log and every snapshot: format, gapless seqs, the hash chain, that every event '
               'applies and every grant was grantable, that every snapshot equals the fold. Exit 1 on any '
               'problem, naming file, line, seq; exit 8 at a line written by a newer scopeledger (upgrade).'),
    'who': ('Who holds PATH, for read and for write, with the delegation chain. With several paths, one line '
            'each (one JSON object each with --json), all from one state of the ledger.'),
}


class _LazyGroup(Group):
    """A group whose commands are imported when first asked for (:data:`COMMANDS`); its
    help lists them from :data:`SUMMARIES`, importing none."""

    _summaries_only = False  # (True while the group's help lists the commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._summaries_only = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._summaries_only = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and self._summaries_only and cmd_name in SUMMARIES:
            # What click reads to list it: its name and help (only the summary is used).
            return click.Command(cmd_name, help=SUMMARIES[cmd_name])
        if command is None and cmd_name in COMMANDS:
            name = f"{__package__}.{COMMANDS[cmd_name]}"
            __import__(name)  # (not importlib.import_module: python -X importtime reports this one)
            module = sys.modules[name]
            command = getattr(module, cmd_name, None) or getattr(module, cmd_name + "_")
            assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
            self.add_command(command)
        return command


@click.group(cls=_LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True, help="Colour in human output (auto: only on a terminal, "
                                      "never with NO_COLOR set; always: even with NO_COLOR set).")
@click.option("--lock-timeout", type=SECONDS, default=30.0, show_default=True,
              metavar="SECONDS", help="How long a change waits for the ledger's lock.")
@click.option("--allow-network-fs", is_flag=True,
              help="Change a ledger on a network file system (NFS, SMB, 9p, virtiofs, FUSE, ...), "
                   "where flock may not exclude other hosts: only if this host alone writes it "
                   "(recorded in the log).")
@click.version_option(__version__, "-V", "--version", prog_name="scopeledger")
@pass_env
def cli(env: Env, color: str, lock_timeout: float, allow_network_fs: bool) -> None:
    """An event-sourced ledger of which process may read and write which part
    of a file tree.

    Start with 'ledger demo'. Rules on the command line use the compact
    syntax: PATH or PATH/** (the path and everything below it), PATH/* (the
    path and its direct children); relative paths are based at --root (default:
    the working directory). Quote patterns so the shell does not expand them.
    """
    from .logs import install_log_handler

    install_log_handler(env)  # (here, not in main: --version and --help need no logging)
    env.color = color
    env.lock_timeout = lock_timeout
    env.allow_network_fs = allow_network_fs
    if click.get_current_context().invoked_subcommand == "run":
        # Before run's own options are parsed: its usage errors' JSON goes to
        # stderr too (stdout belongs to the command).
        env.json_to_stderr = True


# -- the entry point ---------------------------------------------------------------------


def _reserve_std_fds() -> None:
    """Open /dev/null on any of fds 0, 1, 2 that is closed (``>&-``), so that
    no file the ledger opens lands on them and ``sys.stdout``/``sys.stderr``
    exist (Python sets them to None when the fd was closed at start)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
            except OSError:  # pragma: no cover
                continue
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            else:
                # os.open makes it close-on-exec (dup2 does not): 'run''s
                # COMMAND must get /dev/null there too, not a closed stream.
                os.set_inheritable(fd, True)
    if sys.stdin is None:
        sys.stdin = open(0, "r", closefd=False)  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                          closefd=False, buffering=1)


def completion_variable(prog: str) -> str:
    """The variable through which a shell asks ``prog`` for completions
    (``_LEDGER_COMPLETE``, ``_SCOPELEDGER_COMPLETE``), named as click names it
    (``Command._main_shell_completion``): with it set, a bare ``ledger`` is a
    question to click, not a request for the help."""
    return "_{}_COMPLETE".format(prog.replace("-", "_").replace(".", "_")).upper()


def _check_completion(variable: str, value: str) -> None:
    """A completion request click would refuse silently (exit 1, nothing
    said): one ``error:`` line naming the variable and the forms taken, exit 2."""
    from click.shell_completion import get_completion_class

    shell, _, instruction = value.partition("_")
    if get_completion_class(shell) is None or instruction not in ("source", "complete"):
        sys.stderr.write(f"error: ${variable}={value!r}: expected bash_source, zsh_source or "
                         "fish_source (docs/cli.md, \"Shell completion\")\n")
        sys.exit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run the command line and exit with its code."""
    _reserve_std_fds()
    env = Env()
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "ledger"
    if prog in ("__main__.py", "-m", "-c") or not prog:
        prog = "ledger"
    code: int
    args = list(argv) if argv is not None else sys.argv[1:]
    completion = os.environ.get(completion_variable(prog))
    if completion:
        _check_completion(completion_variable(prog), completion)  # click then answers and exits
    elif not args:
        # Bare 'ledger': the help, on stdout, and exit 2 (nothing was done).
        with click.Context(cli, info_name=prog, obj=env, **cli.context_settings) as ctx:
            sys.stdout.write(cli.get_help(ctx) + "\n")
        sys.stdout.flush()
        sys.exit(EXIT_USAGE)
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name=prog,
                      standalone_mode=False, obj=env)
        code = rv if isinstance(rv, int) else EXIT_OK
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `ledger replay | head`): stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        code = EXIT_REFUSED  # as click does for EPIPE
    except Exception as exc:  # noqa: BLE001 - ours to say in one line; anything else is a bug
        from scopeledger import LedgerError

        if isinstance(exc, (click.ClickException, LedgerError, CliError, OSError)):
            code = exit_code_for(exc)
            if isinstance(exc, click.UsageError) and asks_for_json(args):
                env.json = True  # a usage error before click reached the command's --json
            report(env, exc, code)
        else:
            if os.environ.get("SCOPELEDGER_DEBUG"):
                raise
            code = EXIT_INTERNAL
            report(env, RuntimeError(f"internal error: {type(exc).__name__}: {exc} "
                                     "(set SCOPELEDGER_DEBUG=1 for a traceback)"), code)
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
