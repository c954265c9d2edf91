"""``ledger help [TOPIC | COMMAND]``: pages of docs/cli.md shipped in the package.

Each topic is one ``## `` section of docs/cli.md, copied into
``scopeledger/cli/help/TOPIC.md`` (package data) by ``python -m
scopeledger.cli.helptopics docs/cli.md``; a test checks the shipped copies are
what that would write, so the pages and the documentation cannot drift.
"""

from __future__ import annotations

import os
import sys
from importlib import resources

import click

from .errors import EXIT_OK, EXIT_USAGE, CliError
from .params import Command, Env, json_option, pass_env

#: Each topic: the heading of its section in docs/cli.md, and what it tells.
TOPICS = {
    "rules": ("The compact rule syntax", "how a rule is written: PATH, PATH/**, PATH/*, relative paths"),
    "time": ("Points in time", "--at, --from, --until: seqs, ISO times, -1h, @EPOCH; --local, --tz"),
    "exit-codes": ("Errors and exit codes", "what each exit code means, and how errors are said"),
    "environment": ("Environment variables", "SCOPELEDGER_DIR, SCOPELEDGER_HOLDER, NO_COLOR, ..."),
    "completion": ("Shell completion", "completing commands and options in bash, zsh and fish"),
}


def section(markdown: str, heading: str) -> str:
    """The ``## heading`` section of ``markdown``, from that line to the next
    ``## `` heading (``###`` subsections included), trailing blank lines dropped.

    Raises:
        KeyError: no such section.
    """
    lines = markdown.splitlines()
    try:
        start = lines.index(f"## {heading}")
    except ValueError:
        raise KeyError(heading) from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).rstrip() + "\n"


def page(topic: str) -> str:
    """The shipped text of ``topic`` (a key of :data:`TOPICS`).

    Raises:
        OSError: the package's copy cannot be read.
    """
    return resources.files(__package__).joinpath("help", f"{topic}.md").read_text(encoding="utf-8")


def _listing() -> str:
    width = max(map(len, TOPICS))
    rows = "\n".join(f"  {name:<{width}}  {what}" for name, (_h, what) in TOPICS.items())
    return (f"Help topics ('ledger help TOPIC'; 'ledger help COMMAND' is 'ledger COMMAND --help'):\n\n"
            f"{rows}\n")


def _complete(ctx: click.Context, _p: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of TOPIC: the topics, then the commands."""
    from .app import COMMANDS

    return [n for n in (*TOPICS, *sorted(set(COMMANDS) - {"help"})) if n.startswith(incomplete)]


@click.command(name="help", cls=Command)
@click.argument("topic", required=False, metavar="[TOPIC|COMMAND]", shell_complete=_complete)
@json_option
@pass_env
def help_command(env: Env, topic: str | None) -> int:
    """Print a page of docs/cli.md: rules, time, exit-codes, environment,
    completion; with a command's name, that command's --help. Without
    TOPIC, the list of topics. --json: {"topics": {TOPIC: what}} or
    {"topic", "text"} (the page's Markdown)."""
    if topic is None:
        if env.json:
            env.emit_json({"topics": {name: what for name, (_h, what) in TOPICS.items()}})
        else:
            sys.stdout.write(_listing())
        return EXIT_OK
    if topic not in TOPICS:
        parent = click.get_current_context().parent  # the ledger group's context
        command = None
        if parent is not None and isinstance(parent.command, click.Group):
            command = parent.command.get_command(parent, topic)
        if command is None or topic == "help":
            raise CliError(f"no help topic {topic!r}: expected one of {', '.join(TOPICS)}, or a command's "
                           "name ('ledger help' lists them)", EXIT_USAGE)
        with click.Context(command, info_name=topic, parent=parent) as sub:
            text = command.get_help(sub) + "\n"
        if env.json:
            env.emit_json({"topic": topic, "text": text})
        else:
            sys.stdout.write(text)
        return EXIT_OK
    text = page(topic)
    if env.json:
        env.emit_json({"topic": topic, "text": text})
        return EXIT_OK
    from .render import styled

    if styled(env.out):
        from rich.markdown import Markdown

        env.out.print(Markdown(text))
    else:
        sys.stdout.write(text)
    return EXIT_OK


help = help_command  # (the name app.COMMANDS looks up)


def write_pages(docs: str, into: str) -> list[str]:
    """Write each topic's section of ``docs`` (docs/cli.md's text) into the
    directory ``into`` as ``TOPIC.md``; returns the files written."""
    written = []
    for name, (heading, _what) in TOPICS.items():
        path = os.path.join(into, f"{name}.md")
        with open(path, "w", encoding="utf-8") as f:
            f.write(section(docs, heading))
        written.append(path)
    return written


if __name__ == "__main__":  # python -m scopeledger.cli.helptopics docs/cli.md
    source = sys.argv[1] if len(sys.argv) > 1 else "docs/cli.md"
    with open(source, encoding="utf-8") as f:
        text = f.read()
    for path in write_pages(text, os.path.join(os.path.dirname(__file__), "help")):
        print(path)
