"""``ledger demo``: the command; what it plays is :mod:`.demo_story` (imported when
the demo runs, with the standard library it needs)."""

from __future__ import annotations

from typing import Any, Callable

import click

from .params import Command, Env, json_option, output_path_param, pass_env, path_param


#: Why ``demo`` takes no ``--ledger`` (given before or after ``demo``).
DEMO_NO_LEDGER = ("'ledger demo' makes its own ledger, in a new temporary directory (or under "
                  "--dir DIR): --ledger is not taken")


def _no_ledger_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """A hidden ``--ledger`` (not in ``--help``) that refuses itself with a
    usage error saying why, instead of click's bare "no such option"."""

    def cb(_ctx: click.Context, _p: click.Parameter, value: str | None) -> None:
        if value is not None:
            raise click.UsageError(DEMO_NO_LEDGER)

    return click.option("--ledger", "ledger_dir", metavar="DIR", expose_value=False, hidden=True,
                        callback=cb, is_eager=True)(f)


@click.command(cls=Command)
@_no_ledger_option
@json_option
@click.option("--dir", "dir_", metavar="DIR",
              callback=path_param("omit it for a new temporary directory", directory=True),
              help="Where to build the demo (default: a new temporary directory).")
@click.option("--keep/--clean", default=True, show_default=True,
              help="Keep the demo's tree and ledger to explore afterwards, or remove them.")
@click.option("--timeline", metavar="FILE.png|FILE.svg", callback=output_path_param((".png", ".svg")),
              help="Also draw the demo's timeline into FILE (as 'ledger timeline'; the 'plot' extra).")
@pass_env
def demo(env: Env, dir_: str | None, keep: bool, timeline: str | None) -> int:
    """A tour on real processes in a real temporary tree: a runtime delegates
    to a builder, which delegates to workers; one worker finishes, one is
    killed with SIGKILL, one is left a zombie; a newcomer is refused, reclaim
    frees the dead, the newcomer gets in. Then it replays what happened.
    It makes its own ledger (with the tree, in --dir), so --ledger is not
    taken."""
    if env.ledger_dir is not None:  # 'ledger --ledger DIR demo'
        raise click.UsageError(DEMO_NO_LEDGER)
    if timeline == "-":
        raise click.BadParameter("a picture goes to a file: give FILE.png or FILE.svg",
                                 param_hint="'--timeline'")
    if timeline is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from .pictures import extra_missing

            raise extra_missing("plot", "ledger demo --timeline") from None
    from .demo_story import run_demo

    return run_demo(env, dir_, keep, timeline)
