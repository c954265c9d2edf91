"""The operator's commands: ``verify``, ``snapshot``, ``repair``, ``reclaim``, ``release``, ``renew``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from .errors import EXIT_NEWER, EXIT_OK, EXIT_REFUSED
from .params import (TTL, Command, Env, Integer, TokenType, common, holder_name_param, no_progress_option,
                     note_param, nothing_at, pass_env)
from .progress import Spinner

if TYPE_CHECKING:
    from scopeledger import PartlyRecorded, RepairReport


def _log_size(path: str) -> int:
    """The size of the log in the ledger directory ``path`` in bytes (0 when it
    cannot be read: then ``verify`` says why)."""
    try:
        return os.stat(os.path.join(path, "events.jsonl")).st_size
    except (OSError, ValueError):
        return 0

@click.command(cls=Command)
@click.option("--workers", type=Integer(1, 256), default=None, metavar="N",
              help="Processes to verify with (default: one per CPU, at most 8, for logs over 32 MB; "
                   "else 1).")
@common
@no_progress_option
@pass_env
def verify(env: Env, workers: int | None) -> int:
    """Check the whole log and every snapshot: format, gapless seqs, the hash
    chain, that every event applies and every grant was grantable, that every
    snapshot equals the fold. Exit 1 on any problem, naming file, line, seq; exit 8
    at a line written by a newer scopeledger (upgrade)."""
    from scopeledger import NoLedger, verify as verify_dir
    from .render import verify_json

    if env.on_server:
        if workers is not None:
            env.file_only("--workers")  # (a ledger on a server is verified in one process)
        env.open(readonly=True, fold=False).close()  # what opening says: no schema, no server, ...
        label = f"verifying {env.shown}"
        size = 0
    else:
        if nothing_at(env.path):
            env.open(readonly=True)  # the one-line "no ledger at ..." error
        size = _log_size(env.path)
        label = f"verifying {env.path} ({size / 1e6:.0f} MB of log)"
    # Works on a ledger that open() refuses as corrupt.
    with Spinner(env, label, size):
        try:
            report = verify_dir(env.path, workers=workers)
        except NoLedger as exc:
            if not env.on_server:
                raise
            raise env.no_ledger(exc) from None
    if env.json:
        env.emit_json({"ledger": env.shown, **verify_json(report)})
    else:
        from .render import safe, verify_text

        if report.ok:
            env.out.print(safe(verify_text(report, env.shown)), soft_wrap=True, markup=False)
        for p in report.problems:
            env.err.print(safe(f"problem: {p}"), soft_wrap=True, markup=False)
        for n in report.notes:
            env.out.print(safe(f"note: {n}"), soft_wrap=True, markup=False)
    if any(p.newer_format for p in report.problems):
        return EXIT_NEWER  # (a newer scopeledger's line: what follows it is not judged)
    return EXIT_OK if report.ok else EXIT_REFUSED


@click.command(cls=Command)
@common
@click.option("--prune", is_flag=True,
              help="Then remove old snapshots: keep the newest N (--keep), every one past the log's end, "
                   "and the newest that checks out.")
@click.option("--keep", type=Integer(1, 1_000_000), default=None, metavar="N",
              help="With --prune: how many of the newest to keep (default: the library's, 3).")
@pass_env
def snapshot(env: Env, prune: bool, keep: int | None) -> int:
    """Write a snapshot of the current state now (the ledger also writes them
    by itself every so many events); with --prune, then remove old ones."""
    if keep is not None and not prune:
        raise click.UsageError("--keep goes with --prune (ledger snapshot --prune --keep N)")
    with env.open() as ledger:
        seq = ledger.snapshot()
        removed = ledger.prune_snapshots(keep) if prune else []
        if env.json:
            doc: dict[str, Any] = {"ledger": ledger.path, "seq": seq, "written": seq > 0}
            if prune:
                doc["pruned"] = removed
            env.emit_json(doc)
            return EXIT_OK
        from .render import safe

        if seq:
            env.out.print(safe(f"snapshot at seq {seq} in {ledger.path}"), markup=False, soft_wrap=True)
        else:
            env.out.print("nothing to snapshot: the log is empty")
        for old in removed:
            env.out.print(f"removed snapshot at seq {old}", markup=False, soft_wrap=True)
        if prune and not removed:
            env.out.print("no snapshot to remove", markup=False)
    return EXIT_OK


@click.command(cls=Command)
@common
@click.option("-n", "--dry-run", is_flag=True, help="Say exactly what would be set aside; change nothing.")
@pass_env
def repair(env: Env, dry_run: bool) -> int:
    """Set a damaged tail of the log aside. The first line that does not check
    out (as 'ledger verify' judges it: a broken line, a broken hash chain,
    garbage after the end, a torn last line), everything after it and the
    snapshots past it go into cut/TIME-line-N/ in the ledger directory, with a
    record of what was cut and why; then the log is cut there, and new events go
    on from the line before. Nothing to repair: nothing changes. Exit 0 unless
    the repair failed; a line written by a newer scopeledger is never cut
    (nothing changes; exit 8: upgrade scopeledger)."""
    # fold=False: opening would fold the log and refuse the damage.
    with env.open(readonly=dry_run, fold=False) as ledger:
        report = ledger.repair(dry_run=dry_run)
        if env.json:
            env.emit_json({"ledger": ledger.path, **repair_json(report)})
        else:
            from .render import safe

            for line in repair_text(report, ledger.path):
                env.out.print(safe(line), markup=False, soft_wrap=True)
    return EXIT_NEWER if report.newer_format else EXIT_OK


def repair_json(r: RepairReport) -> dict[str, Any]:
    """``repair --json``'s document, without ``ledger`` (docs/cli.md, "--json shapes")."""
    return {"dry_run": r.dry_run, "damaged": r.damaged, "kept_seq": r.kept_seq, "line": r.line, "seq": r.seq,
            "reason": r.reason, "offset": r.offset, "log_bytes": r.log_bytes, "bytes": r.bytes_cut,
            "lines": r.lines_cut, "sha256": r.sha256, "snapshots": list(r.snapshots), "directory": r.directory,
            "record": r.record,
            "remaining": [{"file": p.file, "line": p.line, "seq": p.seq, "message": p.message} for p in r.remaining],
            "appended": r.appended, "writing": r.writing, "newer_format": r.newer_format,
            "void_through": r.void_through}


def repair_text(r: RepairReport, ledger_path: str) -> list[str]:
    """The lines ``ledger repair`` prints (the caller escapes them)."""
    out = []
    if r.newer_format:
        out.append(f"line {r.line} (seq {r.seq}): {r.reason}")
        out.append(f"nothing was set aside in {ledger_path}: this scopeledger cannot judge that line or any "
                   "after it; upgrade scopeledger (a newer one reads them, and its 'ledger verify' and "
                   "'ledger repair' judge them)")
    elif not r.damaged and r.directory is not None:  # a repair stopped after its cut, finished
        out.append(r.reason)
        if r.void_through is not None:
            out.append(f"{'would ' if r.dry_run else ''}{_kept_void(r)}")
            out.append("nothing was changed (--dry-run)" if r.dry_run
                       else f"new events go on from seq {r.void_through + 1}")
    elif not r.damaged:
        out.append(f"nothing to repair in {ledger_path}: every line of the log checks out "
                   f"(seq {r.kept_seq - r.appended}) and no snapshot lies past its end")
    else:
        would = "would " if r.dry_run else ""
        where = f"line {r.line}" + (f" (seq {r.seq})" if r.seq is not None else "") if r.line else "the log"
        out.append(f"{where}: {r.reason}")
        if r.bytes_cut:
            out.append(f"{would}cut the log at byte {r.offset} of {r.log_bytes}, after seq {r.kept_seq}: "
                       f"{r.bytes_cut} bytes, {r.lines_cut} line(s), sha256 {r.sha256}")
        for name in r.snapshots:
            seq = int(name[5:-5]) if name.startswith("snap-") and name[5:-5].isdigit() else r.kept_seq + 1
            out.append(f"{would}set aside snapshot {name} "
                       + (f"(past seq {r.kept_seq})" if seq > r.kept_seq else "(another ledger's)"))
        if r.void_through is not None:
            out.append(f"{would}{_kept_void(r)}")
        if r.dry_run:
            out.append("nothing was changed (--dry-run)")
        else:
            out.append(f"set aside in {r.directory} (record: {r.record})")
            out.append(f"new events go on from seq {(r.void_through or r.kept_seq) + 1}")
    if r.appended:
        out.append(f"note: {r.appended} line(s) appended meanwhile by other writers (to seq {r.kept_seq}) "
                   "were not checked ('ledger verify' checks them)")
    if r.writing:
        out.append(f"note: a line of {r.writing} bytes was being written at the log's end by a writer holding "
                   "the lock: not judged")
    for p in r.remaining:
        out.append(f"note: left as it is: {p}")
    return out


def _kept_void(r: RepairReport) -> str:
    """What a repair that cut lines appends: the seqs of the lines cut kept
    void, so that a fencing token (a grant's seq) is never given twice."""
    first, last = r.kept_seq + 1, r.void_through
    assert last is not None
    voids = ("" if last == first else f" and keep seq {last} void" if last == first + 1
             else f" and keep seqs {first + 1} to {last} void")
    return (f"record the repair at seq {first}{voids}: the cut lines' seqs are never given again "
            "(a fencing token names one grant)")


@click.command(cls=Command)
@common
@click.option("-n", "--dry-run", is_flag=True, help="Report what would be reclaimed; record nothing.")
@pass_env
def reclaim(env: Env, dry_run: bool) -> int:
    """Reclaim every holder whose process is provably gone: exited, a zombie,
    its pid reused, from an earlier boot of this host, or its PID namespace
    gone. Children are re-parented. Holders whose liveness cannot be decided
    are kept, each with the reason."""
    from scopeledger import PartlyRecorded, Reclaimed, ReclaimReport

    from .render import REASONS, safe

    with env.open(readonly=dry_run) as ledger:
        partly: PartlyRecorded | None = None
        before = ledger.state()
        try:
            report = ledger.reclaim(dry_run=dry_run)
        except PartlyRecorded as exc:  # the disk filled up part way: say what was recorded
            partly = exc
            names = {n for _, kind, n in exc.recorded if kind == "reclaimed"}
            got = [e for e in ledger.events(since=before.seq + 1, types=["reclaimed"]) if e.data["name"] in names]
            report = ReclaimReport(tuple(
                Reclaimed(e.data["name"], e.data["reason"], "", before.holders[e.data["name"]].pid, e.seq,
                          tuple((c, p) for c, p in e.data["reparented"]), e.data.get("last_seen"),
                          e.data.get("exit_code", -e.data["exit_signal"] if "exit_signal" in e.data else None))
                for e in got if e.data["name"] in before.holders), ())
        pids = {a.name: a.pid for a in before.holders.values()}
        unknown = [{"name": n, "pid": pids.get(n), "why": v.why} for n, v in report.unknown]
        rows: list[dict[str, Any]] = [{"name": r.name, "reason": r.reason, "why": r.why, "pid": r.pid, "seq": r.seq,
                 "reparented": [list(m) for m in r.reparented], "last_seen_ns": r.last_seen_ns,
                 "exit_code": r.returncode if r.returncode is not None and r.returncode >= 0 else None,
                 "exit_signal": -r.returncode if r.returncode is not None and r.returncode < 0 else None}
                for r in report.reclaimed]
        if env.json:
            env.emit_json({"ledger": ledger.path, "dry_run": dry_run, "reclaimed": rows, "unknown": unknown})
        else:
            verb = "would reclaim" if dry_run else "reclaimed"
            for r in rows:
                moves = ", ".join(f"'{c}' to '{p}'" if p else f"'{c}' to top level"
                                  for c, p in r["reparented"])
                extra = f"; re-parented {moves}" if moves else ""
                why = f": {r['why']}" if r["why"] else ""
                env.out.print(safe(f"{verb} '{r['name']}' (pid {r['pid']}): "
                                   f"{REASONS.get(r['reason'], r['reason'])}{why}{extra}"),
                              markup=False, soft_wrap=True)
            for u in unknown:
                env.out.print(safe(f"kept '{u['name']}' (pid {u['pid']}): liveness unknown: {u['why']}"),
                              markup=False, soft_wrap=True)
            if not rows and partly is None:
                if not report.kept:
                    env.out.print("nothing to reclaim: no live holders")
                elif not unknown:
                    env.out.print("nothing to reclaim: every holder is alive")
                else:
                    alive = len(report.kept) - len(unknown)
                    env.out.print(f"nothing to reclaim: {alive} holder(s) alive, {len(unknown)} of "
                                  "unknown liveness (kept, as above)")
        if partly is not None:
            raise partly
    return EXIT_OK


@click.command(cls=Command)
@common
@click.argument("name", callback=holder_name_param)
@click.option("--token", type=TokenType(), metavar="N",
              help="Release only while this exact grant is live (its token, as 'show' prints it).")
@click.option("--force", is_flag=True,
              help="Take the scope from its holder, recording why (--reason) and who (this process).")
@click.option("--reason", metavar="TEXT", help="Why the release is forced (needed with --force).")
@click.option("--note", metavar="TEXT", callback=note_param,
              help="A note the release records (why, in the releaser's words; 1 to 4096 characters).")
@pass_env
def release(env: Env, name: str, token: int | None, force: bool, reason: str | None, note: str | None) -> int:
    """Release holder NAME by hand (an operator's tool: normally its process
    or 'ledger run' releases it). Its children are re-parented. With --force
    --reason TEXT, the release records the reason and who forced it; the
    holder's fencing check turns false. --note TEXT records a note on any
    release."""
    if force and reason is None:
        raise click.UsageError("--force needs --reason TEXT: why the holder's scope is taken")
    if reason is not None and not force:
        raise click.UsageError("--reason is for a forced release: give --force too")
    if reason is not None and not 0 < len(reason) <= 4096:
        raise click.BadParameter(f"a reason of 1 to 4096 characters, not {len(reason)}",
                                 param_hint="'--reason'")
    with env.open() as ledger:
        moved = ledger.release(name, token=token, force=force, reason=reason, note=note)
        if env.json:
            doc: dict[str, Any] = {"ledger": ledger.path, "name": name, "reparented": moved}
            if force:
                doc["forced"] = reason
            if note is not None:
                doc["note"] = note
            env.emit_json(doc)
        else:
            from .render import safe

            env.out.print(safe(f"released '{name}'" + (f" (forced: {reason})" if force else "")
                               + (f"; re-parented {', '.join(moved)}" if moved else "")), markup=False)
    return EXIT_OK




@click.command(cls=Command)
@common
@click.argument("name", callback=holder_name_param)
@click.option("--token", type=TokenType(), metavar="N", required=True,
              help="The grant whose lease to renew (its token, as 'show' prints it).")
@click.option("--ttl", type=TTL, metavar="SECONDS",
              help="The lease's new ttl (default: the one it has).")
@pass_env
def renew(env: Env, name: str, token: int, ttl: float | None) -> int:
    """Renew the lease of holder NAME (granted with a ttl, as 'ledger run
    --ttl' does): it lasts its ttl again from now, on the ledger's clock (on
    PostgreSQL the server's; in a directory this host's boot-time clock).
    Exit 6 when that grant is gone or its lease had already expired (its
    reclaim is then recorded)."""
    with env.open() as ledger:
        alloc = ledger.renew(name, token, ttl)
        lease = alloc.lease
        assert lease is not None
        if env.json:
            env.emit_json({"ledger": ledger.path, "name": name, "token": token, "ttl": lease.ttl,
                           "seq": lease.renewed_seq})
        else:
            env.out.print(f"renewed '{name}' (token {token}) for {lease.ttl:g} s at seq {lease.renewed_seq}",
                          markup=False, soft_wrap=True)
    return EXIT_OK
