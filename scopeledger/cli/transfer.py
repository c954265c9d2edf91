"""Making a ledger and moving one between backends: ``init`` (a new ledger: a
directory, or a schema at a PostgreSQL URL) and ``import`` (a ledger copied byte for
byte into a new or empty one); ``export SOURCE DEST`` is the same copy
(:mod:`.pictures` hands it here). The copy is the library's,
:func:`scopeledger.copy_ledger`.
"""

from __future__ import annotations

from typing import Any, Sequence

import click

from .errors import EXIT_OK, EXIT_USAGE, CliError
from .params import (Command, Env, check_postgresql_client, common, is_postgresql_url, not_empty, pass_env, shown,
                     where)


def _location(value: str, what: str) -> str:
    """An argument naming a ledger (``init``'s, ``export``'s, ``import``'s),
    as it is opened (:func:`.params.where`).

    Raises:
        click.BadParameter: empty.
        InvalidLedgerURL: a URL of another scheme (exit 2).
        CliError: (exit 2) a PostgreSQL URL, and psycopg is not installed.
    """
    if not value.strip():
        raise click.BadParameter(f"must not be empty (give the {what}: a directory or a postgresql:// URL)")
    location = where(value)
    check_postgresql_client(location)
    return location


@click.command(cls=Command)
@common
@click.argument("ledger", metavar="[DIR|URL]", required=False, callback=not_empty("give a directory or a URL"))
@pass_env
def init(env: Env, ledger: str | None) -> int:
    """Make a new, empty ledger: a directory (as 'ledger run' would), or at a
    PostgreSQL URL its schema and tables (postgresql://USER@HOST/DB?schema=NAME;
    the schema is the ledger, default 'scopeledger'). Default: the ledger
    --ledger or $SCOPELEDGER_DIR selects. On a ledger that exists already it
    changes nothing and says so (exit 0), so a setup script may run it again."""
    from scopeledger import Ledger, NoLedger

    if ledger is not None and env.ledger_dir is not None:
        raise click.UsageError("give the ledger once: as DIR|URL, or with --ledger")
    location = _location(ledger, "ledger to make") if ledger is not None else env.path
    check_postgresql_client(location)
    if env.allow_network_fs and is_postgresql_url(location):
        raise CliError(f"--allow-network-fs is for a ledger directory, not for a ledger on PostgreSQL "
                       f"({shown(location)})", EXIT_USAGE)
    try:
        with Ledger.open(location, readonly=True, create=False) as existing:
            seq = existing.seq
        created = False
    except NoLedger:
        with Ledger.open(location, create=True, timeout=env.lock_timeout,
                         allow_network_fs=env.allow_network_fs) as made:
            seq = made.seq
            created = made.created  # another 'init' may have made it meanwhile
    said = shown(location)
    if env.json:
        env.emit_json({"ledger": said, "created": created, "seq": seq})
        return EXIT_OK
    from .render import safe

    if created:
        env.out.print(safe(f"created a ledger at {said}"), markup=False, soft_wrap=True)
    else:
        env.out.print(safe(f"a ledger is at {said} already ({seq} event(s)): nothing changed"),
                      markup=False, soft_wrap=True)
    return EXIT_OK


def copy(env: Env, places: Sequence[str], command: str) -> int:
    """``ledger export SOURCE DEST`` and ``ledger import SOURCE DEST``: copy
    the ledger at SOURCE into DEST byte for byte (:func:`scopeledger.copy_ledger`).

    Raises:
        click.UsageError: not two places, or ``--ledger`` given too.
        LedgerNotEmpty: DEST holds events (exit 1); and what opening either raises.
    """
    from scopeledger import copy_ledger

    if env.ledger_dir is not None:
        raise click.UsageError(f"'ledger {command} SOURCE DEST' names both ledgers: --ledger is not taken")
    if len(places) != 2:
        raise click.UsageError(f"'ledger {command}' copies a ledger: give SOURCE and DEST (each a "
                               f"directory or a postgresql:// URL), not {len(places)} argument(s)")
    source = _location(places[0], "ledger to copy")
    dest = _location(places[1], "ledger to copy into")
    if source == dest:
        raise click.UsageError(f"SOURCE and DEST are the same ledger ({shown(source)})")
    count = copy_ledger(source, dest)
    doc: dict[str, Any] = {"source": shown(source), "dest": shown(dest), "events": count}
    if env.json:
        env.emit_json(doc)
        return EXIT_OK
    from .render import safe

    env.out.print(safe(f"copied {count} event(s) and the snapshots that check out from {doc['source']} "
                       f"to {doc['dest']}"), markup=False, soft_wrap=True)
    return EXIT_OK


@click.command("import", cls=Command)
@common
@click.argument("places", nargs=-1, metavar="SOURCE DEST")
@pass_env
def import_(env: Env, places: tuple[str, ...]) -> int:
    """Copy the ledger at SOURCE into DEST byte for byte: every event line at
    its seq and every snapshot that checks out, so 'verify', 'replay' and
    'show --at' answer the same there. Each is a directory or a PostgreSQL
    URL (ledger import DIR postgresql://USER@HOST/DB?schema=NAME). DEST is
    created if missing, and must otherwise be empty (exit 1 if it holds
    events). The same as 'ledger export SOURCE DEST'."""
    return copy(env, places, "import")
