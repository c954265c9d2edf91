"""``ledger run`` waits through the library's waiting (issue 16): it joins the
ledger's waiters' queue, so ``run`` waiters and library waiters are served
first come, first served among themselves, on a directory and on PostgreSQL;
a signal ends a waiting ``run`` with nothing granted and its place given
back; and (issue 15) a waiter rides out a PostgreSQL server that stops and
comes back, failing with ``StoreUnavailable`` (``run``: exit 7) only when its
deadline passes while the server is down.

Real processes wait behind a holder. The order in which they joined is made
certain by starting each one only once the one before it is in the queue
(its ticket visible: a file in ``<ledger>/waiters/``, a row of
``<schema>.waiters``); every wait is on a real condition, polled with a
bound, and outcomes and order are asserted, never timings.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from helpers import CMD, clean_env, lines_of, queued_names, wait_for
from scopeledger import Ledger, ScopeRule

BOUND = 60.0  # seconds: a generous bound on any condition a test waits for


def W(path: str | Path) -> ScopeRule:
    return ScopeRule(str(path), "write")


class Where:
    """A ledger the tests wait on: its ``location`` (a directory or a URL),
    ``lib`` (a Ledger opened there) and ``queued()`` (the holder names of
    the tickets in its queue, in order)."""

    def __init__(self, location: str, queued: Callable[[], list[str]]) -> None:
        self.location = location
        self.queued = queued
        self.lib = Ledger.open(location)


def _pg_queued(pg_cluster: Any, url: str) -> Callable[[], list[str]]:
    from urllib.parse import parse_qs, urlsplit

    schema = parse_qs(urlsplit(url).query)["schema"][0]

    def queued() -> list[str]:
        if not pg_cluster.psql_execute("SELECT to_regclass(%s) IS NOT NULL", f"{schema}.waiters")[0][0]:
            return []
        # Live tickets only (a ticket's lock held by its waiter: pg_locks), as waiters read them.
        rows = pg_cluster.psql_execute(
            f"SELECT w.number, w.request FROM {schema}.waiters w WHERE (w.number & 4294967295)::oid IN"
            " (SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            "  AND classid = (SELECT oid FROM pg_namespace WHERE nspname = %s)) ORDER BY w.number", schema)
        return [orjson.loads(bytes(r))["name"] for _, r in rows]
    return queued


@pytest.fixture(params=["dir", "pg"])
def where(request: Any, tmp_path: Path):
    if request.param == "dir":
        location = str(tmp_path / "ledger")
        w = Where(location, lambda: queued_names(location))
    else:
        pg_cluster, url = request.getfixturevalue("pg_cluster"), request.getfixturevalue("pg_url")
        w = Where(url, _pg_queued(pg_cluster, url))
    yield w
    w.lib.close()


@pytest.fixture
def pg(pg_cluster: Any, pg_url: str):
    w = Where(pg_url, _pg_queued(pg_cluster, pg_url))
    yield w
    w.lib.close()


def run_waiter(where: Where, name: str, path: Path, *options: str) -> subprocess.Popen[str]:
    """``ledger run [OPTIONS] --name NAME --write PATH -- true``."""
    return subprocess.Popen([*CMD, "--ledger", where.location, "run", *options, "--name", name,
                             "--write", str(path), "--", "true"],
                            env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


LIB_WAITER = textwrap.dedent("""
    import json, logging, sys
    from scopeledger import Ledger, ScopeRule, StoreUnavailable, WaitTimeout
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    where, name, path, wait = json.loads(sys.argv[1])
    led = Ledger.open(where)
    try:
        a = led.register(name, [ScopeRule(path, "write")], wait=wait)
    except (WaitTimeout, StoreUnavailable) as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
        sys.exit(3)
    print(json.dumps({"token": a.token}), flush=True)
    sys.stdin.readline()  # hold until told
    led.release(name, token=a.token)
    led.close()
""")


def lib_waiter(where: Where, name: str, path: Path, wait: float = BOUND) -> subprocess.Popen[str]:
    """A library waiter (``register(..., wait=)``) in a process of its own:
    prints its token once granted and holds until a line on its stdin."""
    return subprocess.Popen([sys.executable, "-c", LIB_WAITER, json.dumps([where.location, name, str(path), wait])],
                            env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def join_in_order(where: Where, starts: list[tuple[str, Callable[[], subprocess.Popen[str]]]]
                  ) -> list[subprocess.Popen[str]]:
    """Start each waiter once the one before it is in the queue."""
    procs = []
    for i, (name, start) in enumerate(starts):
        procs.append(start())
        want = [n for n, _ in starts[:i + 1]]
        wait_for(lambda w=want: where.queued() == w, BOUND, f"{name}'s ticket behind {want[:-1]}")
    return procs


def let_go(p: subprocess.Popen[str]) -> None:
    """Tell a granted library waiter to release and exit."""
    assert p.stdin is not None
    p.stdin.write("\n")
    p.stdin.flush()
    _, err = p.communicate(timeout=BOUND)
    assert p.returncode == 0, err


def kill_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def said_line(q: Any, text: str) -> bool:
    """Whether a line holding ``text`` comes on the stream read into ``q``
    (:func:`helpers.lines_of`) before it ends (each line within ``BOUND``)."""
    while True:
        line = q.get(timeout=BOUND)
        if line is None:
            return False
        if text in line:
            return True


def grants(led: Ledger) -> list[str]:
    led.refresh()
    return [e.data["holder"]["name"] for e in led.events() if e.type in ("registered", "delegated")]


def test_run_waiters_are_granted_in_the_order_they_started_waiting(where: Where, tmp_path: Path) -> None:
    """Four ``ledger run`` waiters (two with ``-w``, two waiting for ever, the
    default), each started once the one before it is in the queue, for
    overlapping parts of a held scope: granted in that order, each saying
    once that it waits and for whom (the holder, or the waiter before it)."""
    src = tmp_path / "src"
    h = where.lib.register("holder", [W(src)])
    names = ["r0", "r1", "r2", "r3"]
    paths = [src, src / "a", src, src / "b"]
    waits: list[tuple[str, ...]] = [("-w", "60"), (), ("-w", "60"), ()]
    procs: list[subprocess.Popen[str]] = []
    try:
        procs = join_in_order(where, [(n, lambda n=n, p=p, w=w: run_waiter(where, n, p, *w))
                                      for n, p, w in zip(names, paths, waits, strict=True)])
        where.lib.release("holder", token=h.token)
        errs = _succeeded(procs)
        assert grants(where.lib) == ["holder", *names]
        _each_behind_the_one_before(errs, names, "'holder'")
        assert all(len(err.splitlines()) == 1 for err in errs), errs
        assert where.queued() == []
    finally:
        kill_all(procs)


def _succeeded(procs: list[subprocess.Popen[str]]) -> list[str]:
    """Each process's stderr, once it ended with status 0."""
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=BOUND)
        assert p.returncode == 0, err
        errs.append(err)
    return errs


def _each_behind_the_one_before(errs: list[str], names: list[str], first: str) -> None:
    """Each waiter's one waiting notice names the one before it (the first: ``first``)."""
    for i, err in enumerate(errs):
        notices = [line for line in err.splitlines() if line.startswith("Blocking waiting for the scope: ")]
        assert len(notices) == 1, err
        assert (first if i == 0 else f"waiting behind '{names[i - 1]}' (pid ") in notices[0], err


@pytest.mark.parametrize("levels", [1, 2])
def test_nested_runs_delegating_from_one_holder_are_granted_in_the_order_they_started_waiting(
        where: Where, tmp_path: Path, levels: int) -> None:
    """Four nested ``ledger run`` (``$SCOPELEDGER_HOLDER``: they delegate
    from one enclosing holder, 'pod', or 'team', pod's child holding a
    part of it), each started once the one before it is in the queue, for
    overlapping parts of what a sibling ('r0') holds: granted in that
    order, each after the first saying that it waits behind the one before
    it. Their commands end at once, so a waiter often finds the last
    one's process gone and reclaims it before ``run`` records its release.
    (A fresh tester's finding: siblings did not stand back for each other,
    and were granted in whatever order they looked: 2 of 3 rounds out of
    order, each saying it waited for the sibling holding the scope.)"""
    src = tmp_path / "src"
    out = src / "out"
    parent = where.lib.register("pod", [W(src)])
    if levels == 2:
        parent = where.lib.delegate("pod", "team", [W(out)])
    r0 = where.lib.delegate(parent.name, "r0", [W(out)])
    env = {**clean_env(), "SCOPELEDGER_HOLDER": parent.name, "SCOPELEDGER_TOKEN": str(parent.token)}
    names = ["r1", "r2", "r3", "r4"]

    def nested(name: str, path: Path) -> subprocess.Popen[str]:
        return subprocess.Popen([*CMD, "--ledger", where.location, "run", "--name", name, "--write", str(path),
                                 "-w", "60", "--", "true"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs: list[subprocess.Popen[str]] = []
    try:
        procs = join_in_order(where, [(n, lambda n=n, i=i: nested(n, out / "x" if i % 2 else out))
                                      for i, n in enumerate(names)])
        where.lib.release("r0", token=r0.token)
        errs = _succeeded(procs)
        assert grants(where.lib)[-5:] == ["r0", *names]
        _each_behind_the_one_before(errs, names, "sibling 'r0'")
        assert where.queued() == []
    finally:
        kill_all(procs)


def test_run_and_library_waiters_interleave_first_come_first_served(where: Where, tmp_path: Path) -> None:
    """A library waiter, a ``ledger run -w``, a library waiter, a ``ledger
    run`` (for ever): granted in the order they joined the queue."""
    src = tmp_path / "src"
    h = where.lib.register("holder", [W(src)])
    procs: list[subprocess.Popen[str]] = []
    try:
        procs = join_in_order(where, [
            ("lib1", lambda: lib_waiter(where, "lib1", src)),
            ("run1", lambda: run_waiter(where, "run1", src / "x", "-w", "60")),
            ("lib2", lambda: lib_waiter(where, "lib2", src / "x")),
            ("run2", lambda: run_waiter(where, "run2", src)),
        ])
        lib1, run1, lib2, run2 = procs
        where.lib.release("holder", token=h.token)
        assert "token" in json.loads(lib1.stdout.readline())  # type: ignore[union-attr]
        assert run1.poll() is None  # behind lib1, which holds
        let_go(lib1)
        assert run1.wait(BOUND) == 0
        assert "token" in json.loads(lib2.stdout.readline())  # type: ignore[union-attr]
        let_go(lib2)
        assert run2.wait(BOUND) == 0
        assert grants(where.lib) == ["holder", "lib1", "run1", "lib2", "run2"]
        assert where.queued() == []
    finally:
        kill_all(procs)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_waiting_run_with_nothing_granted_and_its_place_given_back(
        where: Where, tmp_path: Path, sig: signal.Signals) -> None:
    """A ``ledger run`` waiting for ever (the default) and one behind it
    (``-w``): the first gets the signal while it waits and exits 128+N; its
    ticket is gone at once (the one behind is first now), and when the
    holder lets go the scope goes to the one behind, never to the first."""
    src = tmp_path / "src"
    h = where.lib.register("holder", [W(src)])
    procs: list[subprocess.Popen[str]] = []
    try:
        procs = join_in_order(where, [("first", lambda: run_waiter(where, "first", src)),
                                      ("second", lambda: run_waiter(where, "second", src, "-w", "60"))])
        first, second = procs
        said = lines_of(first.stderr)
        notice = said.get(timeout=BOUND)
        assert notice is not None and notice.startswith("Blocking waiting for the scope: "), notice
        first.send_signal(sig)
        assert first.wait(BOUND) == 128 + sig
        rest = "".join(iter(lambda: said.get(timeout=BOUND), None))
        assert rest == "", rest  # no traceback, no warning: nothing was granted to withdraw
        assert where.queued() == ["second"]
        where.lib.release("holder", token=h.token)
        _, err = second.communicate(timeout=BOUND)
        assert second.returncode == 0, err
        assert grants(where.lib) == ["holder", "second"]
        assert "first" not in [a.name for a in where.lib.holders()]
    finally:
        kill_all(procs)


def test_a_waiting_runs_notice_in_json_and_quiet(tmp_path: Path) -> None:
    """``--json``: the notice is ``{"notice": ...}`` on stderr, then the
    timeout's error document, with the data of the refusal it last met;
    ``-q``: no notice, the error alone."""
    led = tmp_path / "ledger"
    src = tmp_path / "src"
    with Ledger.open(led) as lib:
        lib.register("holder", [W(src)])
        res = subprocess.run([*CMD, "--ledger", str(led), "--json", "run", "-w", "0.2", "--name", "j",
                              "--write", str(src), "--", "true"], env=clean_env(), capture_output=True,
                             text=True, timeout=BOUND)
        assert res.returncode == 1 and res.stdout == ""
        notice, error = [json.loads(line) for line in res.stderr.splitlines()]
        assert notice["notice"].startswith("Blocking waiting for the scope: ") and "'holder'" in notice["notice"]
        assert error["error"]["message"].startswith("timed out after 0.2s waiting for the scope: ")
        assert error["error"]["exit_code"] == 1
        # Who was in the way, as data (as -n's refusal gives it), not only in the message.
        body = error["error"]
        assert (body["owner"], body["requester"], body["chain"], body["waited"]) == ("holder", "j", ["holder"], 0.2)
        assert body["rule"][0] == body["owner_rule"][0] == str(src)
        res = subprocess.run([*CMD, "--ledger", str(led), "run", "-q", "-w", "0.2", "--name", "q",
                              "--write", str(src), "--", "true"], env=clean_env(), capture_output=True,
                             text=True, timeout=BOUND)
        assert res.returncode == 1
        assert res.stderr.startswith("error: timed out after 0.2s waiting for the scope: ")
        assert len(res.stderr.splitlines()) == 1, res.stderr
        assert grants(lib) == ["holder"] and queued_names(led) == []


# -- a server that goes away while they wait (PostgreSQL) -------------------------------------


def test_waiters_ride_out_a_server_restart(pg: Where, pg_cluster: Any, tmp_path: Path) -> None:
    """A library waiter and a ``ledger run -w`` wait while the server is
    restarted (every connection cut): both join the queue again and are
    granted once the holder lets go."""
    src = tmp_path / "src"
    h = pg.lib.register("holder", [W(src)])
    procs: list[subprocess.Popen[str]] = []
    try:
        procs = join_in_order(pg, [("lib1", lambda: lib_waiter(pg, "lib1", src)),
                                   ("run1", lambda: run_waiter(pg, "run1", src, "-w", "60"))])
        lib1, run1 = procs
        pg_cluster.restart("immediate")
        wait_for(lambda: sorted(pg.queued()) == ["lib1", "run1"], BOUND, "both back in the queue")
        pg.lib.release("holder", token=h.token)
        # (who is first again depends on who came back first: either order is first come, first served)
        got = json.loads(lib1.stdout.readline())  # type: ignore[union-attr]
        assert "token" in got, got
        let_go(lib1)
        _, err = run1.communicate(timeout=BOUND)
        assert run1.returncode == 0, err
        assert sorted(grants(pg.lib)) == ["holder", "lib1", "run1"]
    finally:
        kill_all(procs)


def test_a_server_outage_is_waited_through_until_the_deadline(pg: Where, pg_cluster: Any, tmp_path: Path) -> None:
    """The server stops while four wait: two with a long wait (a library
    waiter, a ``ledger run -w 60``) and two whose deadline passes while it
    is down (``wait=30``, ``-w 30``). Each says once, in a warning, that it
    cannot reach the ledger; the short ones end with ``StoreUnavailable``
    (the library's) and exit 7 (``run``'s), not a timeout, and are never
    granted; the long ones are granted once the server is back and the
    holder lets go."""
    src = tmp_path / "src"
    h = pg.lib.register("holder", [W(src)])
    procs: list[subprocess.Popen[str]] = []
    # Seconds: a bound, as BOUND is, not a measure of speed: the four join the queue
    # and the server stops within it (a few seconds on a loaded 2-core machine).
    short = "30"
    try:
        procs = join_in_order(pg, [("lib-long", lambda: lib_waiter(pg, "lib-long", src, 600.0)),
                                   ("run-long", lambda: run_waiter(pg, "run-long", src, "-w", "600")),
                                   ("lib-short", lambda: lib_waiter(pg, "lib-short", src, float(short))),
                                   ("run-short", lambda: run_waiter(pg, "run-short", src, "-w", short))])
        lib_long, run_long, lib_short, run_short = procs
        said = {"lib-long": lines_of(lib_long.stderr), "run-long": lines_of(run_long.stderr)}
        pg_cluster.stop_server()
        try:
            out, err = lib_short.communicate(timeout=BOUND)
            assert lib_short.returncode == 3, err
            assert json.loads(out)["error"] == "StoreUnavailable", out
            assert err.count("cannot reach the ledger while it waits") == 1, err
            out, err = run_short.communicate(timeout=BOUND)
            assert run_short.returncode == 7, err
            lines = err.splitlines()
            assert lines[0].startswith("Blocking waiting for the scope: "), err
            warnings = [line for line in lines if line.startswith("warning: ")]
            assert len(warnings) == 1, err
            assert warnings[0].startswith("warning: holder 'run-short' cannot reach the ledger while it waits ("), err
            assert lines[-1].startswith("error: ") and "timed out" not in lines[-1], err
            for name, q in said.items():  # the long ones said so too, and wait on
                assert said_line(q, "cannot reach the ledger while it waits"), f"{name} never said it"
            assert lib_long.poll() is None and run_long.poll() is None
        finally:
            pg_cluster.start_server()
        pg.lib.release("holder", token=h.token)
        got = json.loads(lib_long.stdout.readline())  # type: ignore[union-attr]
        assert "token" in got, got
        let_go(lib_long)
        assert run_long.wait(BOUND) == 0
        assert sorted(grants(pg.lib)) == ["holder", "lib-long", "run-long"]
    finally:
        kill_all(procs)


def test_a_grant_a_signal_kept_from_run_is_released_and_no_other(tmp_path: Path) -> None:
    """``_Runner._drop_unseen_grant``: after a signal ended the wait, a live
    grant of the run's name, bound to the wrapper and granted since the wait
    began, is released (the signal came between the library's return and
    ``run`` taking it in); one bound to another process, or granted before,
    is left alone."""
    from scopeledger.cli.run import _Runner

    other = subprocess.Popen(["sleep", "600"])
    with Ledger.open(tmp_path / "ledger") as led:
        try:
            before = led.register("mine", [W(tmp_path / "old")])  # this process's, granted before the wait
            since = led.seq
            runner = _Runner(None, led, "mine", [W(tmp_path / "a")], None, ["true"], True)  # type: ignore[arg-type]
            runner._drop_unseen_grant(since)
            assert led.holder("mine").token == before.token
            led.release("mine")
            led.register("mine", [W(tmp_path / "a")], pid=other.pid)  # another process's
            runner._drop_unseen_grant(since)
            assert led.holder("mine").pid == other.pid
            led.release("mine")
            runner._drop_unseen_grant(since)  # none: nothing to do, nothing raised
            led.register("mine", [W(tmp_path / "a")])  # the wrapper's own, since the wait began
            runner._drop_unseen_grant(since)
            assert "mine" not in [a.name for a in led.holders()]
        finally:
            other.kill()
            other.wait()


def test_a_signal_raised_inside_library_code_that_catches_exception_is_not_swallowed(tmp_path: Path) -> None:
    """``run`` turns a signal into ``_Interrupted``, raised by its handler
    wherever the main thread is, also inside library code that catches
    ``Exception`` (here: the liveness probe of a holder in the way, whose
    failure counts as "unknown"). It goes through: before, it was an
    ``Exception`` and was swallowed there, and a waiting ``run`` sent SIGTERM
    waited on and ran its command (1 of 30 signals in a fresh tester's run)."""
    from scopeledger.cli.run import _Interrupted

    def probe(ident: Any) -> Any:
        raise _Interrupted(signal.SIGTERM)  # as the handler would, mid-probe

    path = str(tmp_path / "ledger")
    with Ledger.open(path) as other:
        other.register("in-the-way", [ScopeRule(str(tmp_path / "t"), "write")])
        with Ledger.open(path, probe=probe) as led:
            with pytest.raises(_Interrupted):
                led.register("w", [ScopeRule(str(tmp_path / "t"), "write")])
            assert [a.name for a in led.holders()] == ["in-the-way"]


def test_a_waiting_run_names_every_holder_in_its_way(tmp_path: Path) -> None:
    # (a fresh tester's finding: the library named both, ledger run only the refusal's)
    led = tmp_path / "led"
    with Ledger.open(led, create=True) as lib:
        lib.register("ha", [ScopeRule(str(tmp_path / "t" / "a"), "write")])
        lib.register("hb", [ScopeRule(str(tmp_path / "t" / "b"), "write")])
        res = subprocess.run([*CMD, "--ledger", str(led), "run", "--name", "w", "-w", "0.2",
                              "--write", str(tmp_path / "t"), "--", "true"],
                             capture_output=True, text=True, env=clean_env(), timeout=60)
    assert res.returncode == 1, res.stderr
    notice = [ln for ln in res.stderr.splitlines() if "waiting for the scope" in ln]
    assert len(notice) == 2, res.stderr  # the notice, then the timeout
    for line in notice:
        assert "'ha'" in line and "'hb'" in line and "also in the way" in line, line
