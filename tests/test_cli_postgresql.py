"""The command line on a ledger at a PostgreSQL URL (issue 15's command-line part),
against a real server (tests/pgserver.py: skipped without the server binaries, failing
instead with SCOPELEDGER_REQUIRE_POSTGRES=1):

- every command on ``--ledger URL`` and on ``$SCOPELEDGER_DIR=URL``, the URL carrying the
  password of a role that must give one (so a password printed anywhere is found);
- ``ledger run`` on a URL: a nested ``ledger run`` (and the library's ``spawn``) really
  delegates, reaching the server with the password the parent's URL carried, which its
  environment holds only as ``PGPASSWORD``;
- ``ledger init``, ``ledger export URL DIR`` and ``ledger import DIR URL``: byte for byte,
  an exported ledger verifies on the file backend; a non-empty destination is refused;
- a bad URL, an unknown schema, a server that cannot be reached, a wrong password: one
  error line each, with its exit code, never the password.

In-process (``helpers.invoke`` / ``ledger_cmd``) except where a process is the point:
``run`` (it forks), ``replay --follow`` (ended by SIGINT), libpq's environment read by a
new process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import pgserver
from helpers import CMD, W, as_from_a_terminal, clean_env, invoke, jl, ledger_cmd, one_error_line, readline
from pgserver import wait_for
from scopeledger import Ledger, ScopeRule

#: The password of the role the tests connect as: characters a URL must escape, so that
#: both its raw and its percent-encoded forms are looked for in the output.
PASSWORD = "s3cr:t@pw/x"
SECRETS = (PASSWORD, "s3cr%3At%40pw%2Fx", "s3cr")


@pytest.fixture(scope="module")
def role(pg_cluster) -> str:
    """A login role that must give :data:`PASSWORD` (scram-sha-256; the cluster's other
    roles stay on trust), allowed to create schemas."""
    name = "cli_" + uuid.uuid4().hex[:10]
    pg_cluster.password_role(name, PASSWORD)
    return name


@pytest.fixture
def schema(pg_cluster):
    name = pgserver.new_schema_name()
    yield name
    try:
        pg_cluster.psql_execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    except Exception:  # (a test that broke the server: nothing to tidy)
        pass


@pytest.fixture
def url(pg_cluster, role, schema) -> str:
    """A URL carrying the role's password, naming a schema not created yet."""
    return pg_cluster.url(schema, user=role, password=PASSWORD)


@pytest.fixture
def bare_url(pg_cluster, role, schema) -> str:
    """The same ledger's URL without the password."""
    return pg_cluster.url(schema, user=role)


def no_password(*results: subprocess.CompletedProcess[str]) -> None:
    for r in results:
        for secret in SECRETS:
            assert secret not in r.stdout and secret not in r.stderr, (secret, r.args, r.stdout, r.stderr)


def ok(r: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert r.returncode == code, (r.args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    no_password(r)
    return r


def shown(url: str) -> str:
    """What messages show of ``url``: its password as ``***``."""
    from scopeledger import redact_url

    return redact_url(url)


# -- every command on a URL ------------------------------------------------------------------


def test_init_makes_the_schema_once_and_says_so_again(url: str, bare_url: str, pg_cluster, schema) -> None:
    first = json.loads(ok(invoke(["init", url, "--json"])).stdout)
    assert first == {"ledger": shown(url), "created": True, "seq": 0}
    assert pg_cluster.psql_execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", schema) == [(1,)]
    again = ok(invoke(["init", url]))
    assert again.stdout.strip() == f"a ledger is at {shown(url)} already (0 event(s)): nothing changed"
    # --ledger (or $SCOPELEDGER_DIR) selects it as well; not both ways at once.
    assert json.loads(ok(ledger_cmd(url, "init", "--json")).stdout)["created"] is False
    twice = ok(ledger_cmd(url, "init", url), 2)
    assert "give the ledger once" in one_error_line(twice.stderr)
    # A schema that is not a ledger is said to be one, and left alone.
    pg_cluster.psql_execute(f"CREATE SCHEMA {schema}_other")
    try:
        other = ok(invoke(["init", url.replace(schema, schema + "_other")]), 4)
        assert "is not a scopeledger ledger" in one_error_line(other.stderr)
    finally:
        pg_cluster.psql_execute(f"DROP SCHEMA {schema}_other")


def test_init_makes_a_directory_too(tmp_path: Path) -> None:
    d = tmp_path / "new"
    assert ok(invoke(["init", str(d)])).stdout.strip() == f"created a ledger at {d}"
    assert (d / "events.jsonl").exists() and oct(d.stat().st_mode & 0o777) == "0o700"
    assert json.loads(ok(invoke(["init", str(d), "--json"])).stdout) == {
        "ledger": str(d), "created": False, "seq": 0}


@pytest.mark.parametrize("where", ["directory", "postgresql"])
def test_of_concurrent_inits_exactly_one_says_it_created_the_ledger(where: str, url: str, tmp_path: Path) -> None:
    # Each 'init' that finds no ledger creates it; only the one whose creation made it
    # says "created" (O_EXCL on the log; the schema made under the creators' lock), the
    # library's Ledger.created alike. (Before: each said so whenever both looked first.)
    import threading

    place = url if where == "postgresql" else str(tmp_path / "new")
    procs = [subprocess.Popen([*CMD, "--json", "init", place], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=clean_env()) for _ in range(6)]
    said = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "Traceback" not in err, (out, err)
        said.append(json.loads(out)["created"])
    assert sorted(said) == [False] * 5 + [True], said
    # The library: threads opening one missing ledger at once; a barrier lines them up.
    place = url.replace("schema=", "schema=x") if where == "postgresql" else str(tmp_path / "lib")
    barrier = threading.Barrier(6)
    made: list[bool] = []

    def opener() -> None:
        barrier.wait()
        with Ledger.open(place) as led:
            made.append(led.created)
    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == [False] * 5 + [True], made
    with Ledger.open(place, readonly=True) as again:
        assert again.created is False


def test_every_command_works_on_a_url_and_never_prints_the_password(url: str, tmp_path: Path) -> None:
    ok(invoke(["init", url]))
    a, b, c, z = (str(tmp_path / n) for n in "abcz")
    gone = subprocess.Popen(["sleep", "600"])
    with Ledger.open(url) as lib:
        keep = lib.register("keep", [W(a)])
        lib.register("gone", [W(b)], pid=gone.pid)
        gone.kill()
        gone.wait()
        leased = lib.register("leased", [W(c)], ttl=600)
        lib.delegate("keep", "keep.part", [W(a + "/part")])
        first_seq = lib.seq

    show = json.loads(ok(ledger_cmd(url, "--json", "show")).stdout)
    assert show["ledger"] == shown(url)
    assert {h["name"] for h in show["holders"]} == {"keep", "gone", "leased", "keep.part"}
    assert show["liveness"]["gone"] == "process_gone" and show["liveness"]["keep"] == "alive"
    assert "keep.part" in ok(ledger_cmd(url, "show")).stdout
    assert json.loads(ok(ledger_cmd(url, "--json", "show", "--at", "1")).stdout)["seq"] == 1
    who = json.loads(ok(ledger_cmd(url, "--json", "who", a + "/part/f")).stdout)
    assert [h["name"] for h in who["holders"]] == ["keep", "keep.part"] and who["ledger"] == shown(url)
    assert json.loads(ok(ledger_cmd(url, "--json", "check", "--write", a), 1).stdout)["granted"] is False
    assert json.loads(ok(ledger_cmd(url, "--json", "check", "--write", z)).stdout)["granted"] is True
    hist = jl(ok(ledger_cmd(url, "--json", "history", "keep")).stdout)
    assert [e["type"] for e in hist][:1] == ["registered"]
    diff = json.loads(ok(ledger_cmd(url, "--json", "diff", "1", str(first_seq))).stdout)
    assert set(diff["added"]) == {"keep", "gone", "leased", "keep.part"} - {"keep"}
    lines = ok(ledger_cmd(url, "--json", "replay")).stdout.splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, first_seq + 1))
    assert "registered" in ok(ledger_cmd(url, "replay", "--holder", "keep")).stdout
    assert json.loads(ok(ledger_cmd(url, "--json", "verify")).stdout)["ledger"] == shown(url)
    assert ok(ledger_cmd(url, "verify")).stdout.startswith(f"ok: {first_seq} events")
    snap = json.loads(ok(ledger_cmd(url, "--json", "snapshot")).stdout)
    assert snap == {"ledger": shown(url), "seq": first_seq, "written": True}
    assert json.loads(ok(ledger_cmd(url, "--json", "snapshot", "--prune", "--keep", "1")).stdout)["pruned"] == []
    dry = json.loads(ok(ledger_cmd(url, "--json", "reclaim", "--dry-run")).stdout)
    assert [r["name"] for r in dry["reclaimed"]] == ["gone"] and dry["dry_run"] is True
    done = json.loads(ok(ledger_cmd(url, "--json", "reclaim")).stdout)
    assert [(r["name"], r["reason"]) for r in done["reclaimed"]] == [("gone", "process_gone")]
    renewed = json.loads(ok(ledger_cmd(url, "--json", "renew", "leased", "--token", str(leased.token))).stdout)
    assert renewed["ledger"] == shown(url) and renewed["ttl"] == 600
    released = json.loads(ok(ledger_cmd(url, "--json", "release", "keep", "--token", str(keep.token))).stdout)
    assert released["reparented"] == ["keep.part"]
    ok(ledger_cmd(url, "release", "leased", "--force", "--reason", "test"))
    csv = tmp_path / "events.csv"
    assert json.loads(ok(ledger_cmd(url, "--json", "export", "--format", "csv", "-o", str(csv))).stdout)["events"] > 0
    assert csv.read_text().count("\n") > first_seq
    trace = ok(ledger_cmd(url, "export", "--format", "trace")).stdout
    assert shown(url) in trace and PASSWORD not in trace
    if importlib.util.find_spec("matplotlib") is not None:  # (the plot extra)
        svg = tmp_path / "t.svg"
        ok(ledger_cmd(url, "timeline", "-o", str(svg)))
        assert svg.read_text().count("<svg") == 1 and "s3cr" not in svg.read_text()
    # And all of it is in the log, which verifies.
    with Ledger.open(url) as lib:
        assert {e.type for e in lib.events()} >= {"registered", "delegated", "reclaimed", "released", "renewed"}
        assert lib.verify().ok


def test_scopeledger_dir_url_selects_the_ledger(url: str, bare_url: str, tmp_path: Path) -> None:
    ok(invoke(["init", url]))
    env = clean_env(SCOPELEDGER_DIR=url)
    with Ledger.open(url) as lib:
        lib.register("h", [W(tmp_path / "h")])
    assert json.loads(ok(invoke(["--json", "show"], env=env)).stdout)["ledger"] == shown(url)
    r = ok(subprocess.run([*CMD, "run", "--name", "job", "--write", str(tmp_path / "j"), "--",
                           "sh", "-c", 'printf "%s\\n" "$SCOPELEDGER_DIR"'],
                          capture_output=True, text=True, env=env, timeout=60))
    assert r.stdout.strip() == bare_url  # (the password went as PGPASSWORD)
    with Ledger.open(url) as lib:
        assert [(e.type, e.data.get("name")) for e in lib.events()][-1] == ("released", "job")


def test_another_role_works_with_the_grants_docs_cli_md_gives(url: str, pg_cluster, schema, role) -> None:
    ok(invoke(["init", url]))
    other = "cli_" + uuid.uuid4().hex[:10]
    pg_cluster.password_role(other, PASSWORD)
    theirs = pg_cluster.url(schema, user=other, password=PASSWORD)
    denied = ok(invoke(["--ledger", theirs, "show"]), 7)
    assert f"permission denied for schema {schema}" in one_error_line(denied.stderr)
    pg_cluster.psql_execute(f"SET ROLE {role}; GRANT USAGE ON SCHEMA {schema} TO {other}; "
                            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {other}")
    r = ok(subprocess.run([*CMD, "--ledger", theirs, "run", "--write", "/nonexistent/x", "--", "true"],
                          capture_output=True, text=True, env=clean_env(), timeout=60))
    assert r.stdout == ""
    for args in (["snapshot"], ["snapshot", "--prune", "--keep", "1"], ["verify"], ["reclaim"]):
        ok(invoke(["--ledger", theirs, *args]))
    with Ledger.open(url) as lib:
        assert [e.type for e in lib.events()] == ["registered", "attached", "released"]


def test_libpq_s_environment_and_pgpass_apply(bare_url: str, url: str, tmp_path: Path, pg_cluster, role) -> None:
    ok(invoke(["init", url]))
    refused = ok(invoke(["--ledger", bare_url, "show"]), 7)
    assert "cannot connect to" in one_error_line(refused.stderr) and shown(bare_url) in refused.stderr
    ok(invoke(["--ledger", bare_url, "show"], env=clean_env(PGPASSWORD=PASSWORD)))
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:*:{role}:{PASSWORD.replace(':', chr(92) + ':')}\n")
    pgpass.chmod(0o600)
    ok(invoke(["--ledger", bare_url, "show"], env=clean_env(PGPASSFILE=str(pgpass))))
    # sslmode (and any libpq parameter) goes through: over TCP (libpq uses no TLS on a unix
    # socket), to a test server that speaks no TLS.
    tcp = pg_cluster.url(url.rsplit("=", 1)[1], user=role, password=PASSWORD, tcp=True)
    ok(invoke(["--ledger", tcp + "&sslmode=disable", "show"]))
    ok(invoke(["--ledger", tcp + "&sslmode=prefer", "show"]))
    tls = ok(invoke(["--ledger", tcp + "&sslmode=require", "show"]), 7)
    assert "SSL" in one_error_line(tls.stderr)


def test_replay_follow_on_a_url(url: str, tmp_path: Path) -> None:
    ok(invoke(["init", url]))
    with Ledger.open(url) as lib:
        lib.register("first", [W(tmp_path / "a")])
        p = subprocess.Popen([*CMD, "--ledger", url, "replay", "--follow", "--json", "--interval", "0.05"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                             preexec_fn=as_from_a_terminal)
        try:
            assert json.loads(readline(p))["seq"] == 1
            lib.register("second", [W(tmp_path / "b")])
            lib.release("first")
            assert json.loads(readline(p))["holder"]["name"] == "second"
            assert json.loads(readline(p))["type"] == "released"
        finally:
            p.send_signal(signal.SIGINT)
            assert p.wait(30) == 130
    assert all(s not in p.stderr.read() for s in SECRETS)


# -- ledger run: the child reaches the server ----------------------------------------------


def _nested(url: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ledger --ledger URL run outer -- sh -c '...; ledger run inner -- true'``: the inner
    run reads only the environment the outer one gave it."""
    outer, inner = tmp_path / "src", tmp_path / "src" / "sub"
    script = ('printf "dir=%s\\n" "$SCOPELEDGER_DIR"; '
              'if [ -n "${PGPASSWORD+x}" ]; then echo pgpassword=set; else echo pgpassword=unset; fi; '
              f'exec ledger run --name inner --write {inner} -- true')
    return subprocess.run([*CMD, "--ledger", url, "run", "--name", "outer", "--write", str(outer), "--",
                           "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)


def _delegations(url: str) -> list[tuple[str, str | None]]:
    with Ledger.open(url) as lib:
        return [(e.data["holder"]["name"], e.data["holder"]["parent"]) for e in lib.events()
                if e.type == "delegated"]


def test_a_nested_ledger_run_on_a_url_delegates_reaching_the_server_with_pgpassword(
        url: str, bare_url: str, tmp_path: Path) -> None:
    ok(invoke(["init", url]))
    r = ok(_nested(url, tmp_path, clean_env()))
    # The child's SCOPELEDGER_DIR is the URL without the password; the password, which
    # the role must give, came as PGPASSWORD (nothing else could have let it in).
    assert r.stdout.splitlines() == [f"dir={bare_url}", "pgpassword=set"], r.stdout
    assert _delegations(url) == [("inner", "outer")]


def test_a_pgpassword_already_set_is_left_to_the_child(url: str, bare_url: str, tmp_path: Path) -> None:
    ok(invoke(["init", url]))
    # The parent's URL has no password; PGPASSWORD serves both, inherited as it is.
    r = ok(_nested(bare_url, tmp_path, clean_env(PGPASSWORD=PASSWORD)))
    assert r.stdout.splitlines() == [f"dir={bare_url}", "pgpassword=set"]
    assert _delegations(url) == [("inner", "outer")]


def test_library_spawn_on_a_url_gives_the_child_a_url_it_can_use(url: str, bare_url: str, tmp_path: Path) -> None:
    """``spawn`` gave the child ``Ledger.path``, the URL with ``***`` for the password,
    which cannot connect: a nested ``ledger run`` failed. Now it delegates."""
    ok(invoke(["init", url]))
    src = tmp_path / "src"
    ledger_bin = os.path.join(os.path.dirname(sys.executable), "ledger")
    code = ("import os, subprocess, sys; print(os.environ['SCOPELEDGER_DIR']); "
            "print('PGPASSWORD' in os.environ); sys.stdout.flush(); "
            f"sys.exit(subprocess.call([{ledger_bin!r}, 'run', '--name', 'build.tests', '--write', "
            f"{str(src / 'tests')!r}, '--', 'true']))")
    env = {k: v for k, v in clean_env().items() if k != "PGPASSWORD"}
    with Ledger.open(url) as lib:
        assert lib.child_environment(env) == {"SCOPELEDGER_DIR": bare_url, "PGPASSWORD": PASSWORD}
        assert lib.child_environment({**env, "PGPASSWORD": "theirs"}) == {"SCOPELEDGER_DIR": bare_url}
        sp = lib.spawn("build", [sys.executable, "-c", code], [W(src)], env=env,
                       stdout=subprocess.PIPE, text=True)
        out, _ = sp.process.communicate(timeout=120)
        assert sp.wait() == 0, out
        assert out.splitlines() == [bare_url, "True"]
    assert _delegations(url) == [("build.tests", "build")]


def test_a_file_ledger_s_child_environment_is_its_directory(ledger) -> None:
    assert ledger.child_environment({"PGPASSWORD": "x"}) == {"SCOPELEDGER_DIR": ledger.path}


# -- export and import ------------------------------------------------------------------------


def _files(d: Path) -> dict[str, bytes]:
    """The ledger directory's log and snapshot files, by name, and their bytes."""
    out = {"events.jsonl": (d / "events.jsonl").read_bytes()}
    for f in sorted((d / "snapshots").glob("snap-*.json")):
        out["snapshots/" + f.name] = f.read_bytes()
    return out


def test_import_then_export_is_byte_for_byte_and_the_export_verifies(url: str, tmp_path: Path) -> None:
    first = tmp_path / "first"
    with Ledger.open(str(first), snapshot_every=10) as lib:
        for k in range(30):
            lib.register(f"h{k}", [W(tmp_path / "t" / str(k))])
            if k % 3 == 0:
                lib.release(f"h{k}")
        lib.register("cafe", [ScopeRule(str(tmp_path / "\u00e9\u202e"), "write")])
        head = lib.seq
    assert len(_files(first)) > 1  # the log and snapshots
    imported = json.loads(ok(invoke(["--json", "import", str(first), url])).stdout)
    assert imported == {"source": str(first), "dest": shown(url), "events": head}
    back = tmp_path / "back"
    said = ok(invoke(["export", url, str(back)])).stdout.strip()
    assert said == (f"copied {head} event(s) and the snapshots that check out from {shown(url)} to {back}")
    assert _files(back) == _files(first)
    report = json.loads(ok(invoke(["--json", "--ledger", str(back), "verify"])).stdout)
    assert report["ok"] is True and report["events"] == head
    # The same answers on both backends.
    for cmd in (["--json", "show"], ["--json", "show", "--at", "7"], ["--json", "replay"], ["--json", "history", "h4"]):
        a, b = ok(ledger_cmd(first, *cmd)), ok(ledger_cmd(url, *cmd))
        assert a.stdout.replace(str(first), "L") == b.stdout.replace(shown(url), "L"), cmd
    # A second copy into either is refused: they are not empty.
    again = ok(invoke(["--json", "import", str(first), url]), 1)
    err = json.loads(again.stdout)["error"]
    assert err["type"] == "LedgerNotEmpty" and err["events"] == head and err["path"] == shown(url)
    assert "is not empty" in one_error_line(again.stderr)
    ok(invoke(["export", url, str(back)]), 1)
    assert _files(back) == _files(first)


def test_import_into_a_schema_made_by_init_and_an_empty_source(url: str, tmp_path: Path) -> None:
    ok(invoke(["init", url]))
    empty = tmp_path / "empty"
    ok(invoke(["init", str(empty)]))
    assert json.loads(ok(invoke(["--json", "import", str(empty), url])).stdout)["events"] == 0
    src = tmp_path / "src"
    with Ledger.open(str(src)) as lib:
        lib.register("a", [W(tmp_path / "a")])
    assert json.loads(ok(invoke(["--json", "import", str(src), url])).stdout)["events"] == 1


@pytest.mark.parametrize("args, code, says", [
    (["export", "--format", "csv", "URL", "DIR"], 2, "--format do not apply"),
    (["export", "URL"], 2, "give SOURCE and DEST"),
    (["import", "DIR", "URL", "more"], 2, "not 3 argument(s)"),
    (["import", "", "URL"], 2, "must not be empty"),
    (["--ledger", "DIR", "import", "DIR", "URL"], 2, "--ledger is not taken"),
    (["import", "URL", "URL"], 2, "the same ledger"),
    (["import", "MISSING", "URL"], 6, "no ledger"),
    (["import", "DIR", "http://u:pw@h/db"], 2, "is a URL, not a path"),
    (["export", "URL", "NEW"], 6, "does not exist"),
    (["export", "DOWN", "NEW"], 7, "cannot connect to"),
    (["import", "DIR", "DOWN"], 7, "cannot connect to"),
    (["import", "DIR", "BAD"], 2, "is not a name of lowercase"),
])
def test_export_and_import_refuse_what_they_cannot_do(url: str, tmp_path: Path, args, code, says) -> None:
    d = tmp_path / "d"
    with Ledger.open(str(d)) as lib:
        lib.register("a", [W(tmp_path / "a")])
    names = {"URL": url, "DIR": str(d), "MISSING": str(tmp_path / "missing"), "NEW": str(tmp_path / "new"),
             "DOWN": "postgresql://u:s3cr3t@127.0.0.1:1/db?schema=x", "BAD": url.rsplit("schema=", 1)[0] + "schema=Bad"}
    before = (d / "events.jsonl").read_bytes()
    r = ok(invoke([names.get(a, a) for a in args]), code)
    assert says in one_error_line(r.stderr), r.stderr
    assert "pw@" not in r.stderr and "s3cr3t" not in r.stderr
    assert not (tmp_path / "new").exists()  # nothing made where the copy would have gone
    assert (d / "events.jsonl").read_bytes() == before  # nor the source changed


# -- errors --------------------------------------------------------------------------------------


def test_errors_on_a_url_are_one_line_with_their_exit_code_and_no_password(
        url: str, pg_cluster, role, schema, tmp_path: Path) -> None:
    unknown = ok(invoke(["--ledger", url, "show"]), 6)
    assert one_error_line(unknown.stderr) == (
        f"error: no ledger at {shown(url)}: schema {schema} does not exist (create it with 'ledger init URL'; "
        "'ledger run' creates a ledger directory, never a schema)")
    # 'run' does not create a schema (only a directory): the command never runs.
    ran = tmp_path / "ran"
    r = ok(subprocess.run([*CMD, "--ledger", url, "run", "--write", str(tmp_path / "x"), "--", "touch", str(ran)],
                          capture_output=True, text=True, env=clean_env(), timeout=60), 6)
    assert not ran.exists() and "ledger init" in r.stderr
    assert ok(invoke(["--ledger", url, "verify"]), 6).stderr == unknown.stderr
    ok(invoke(["init", url]))
    wrong = pg_cluster.url(schema, user=role, password="not-it")
    bad = ok(invoke(["--ledger", wrong, "show"]), 7)
    assert "password authentication failed" in one_error_line(bad.stderr) and "not-it" not in bad.stderr
    down = f"postgresql://{role}:{PASSWORD.replace('@', '%40').replace('/', '%2F')}@127.0.0.1:1/postgres"
    for args in (["show"], ["--json", "show"], ["verify"], ["replay"]):
        r = ok(invoke(["--ledger", down, *args]), 7)
        assert "cannot connect to" in r.stderr
    doc = json.loads(ok(invoke(["--ledger", down, "--json", "show"]), 7).stdout)["error"]
    assert doc["type"] == "StoreUnavailable" and doc["url"] == shown(down) and doc["exit_code"] == 7
    for bad_url, says in ((url.replace(f"schema={schema}", "schema=Bad-Name"), "is not a name of lowercase"),
                          (url + f"&schema={schema}", "more than one schema")):
        r = ok(invoke(["--ledger", bad_url, "show"]), 2)
        assert says in one_error_line(r.stderr)
    # What works on a directory only says so.
    workers = ok(invoke(["--ledger", url, "verify", "--workers", "2"]), 2)
    assert one_error_line(workers.stderr) == (f"error: --workers is for a ledger directory, not for a ledger on "
                                              f"PostgreSQL ({shown(url)})")
    nfs = ok(invoke(["--allow-network-fs", "--ledger", url, "release", "x"]), 2)
    assert "--allow-network-fs is for a ledger directory" in one_error_line(nfs.stderr)
    # A URL echoed back by click (an argument too many) is shown redacted too.
    extra = ok(invoke(["show", url]), 2)
    assert shown(url) in one_error_line(extra.stderr)


def test_a_refused_login_carries_its_sqlstate(url: str, pg_cluster, role, schema, tmp_path: Path) -> None:
    # libpq gives a failed connection's error as text alone, so psycopg's sqlstate is None
    # and '--json' said "sqlstate": null for a wrong password (the server sent 28P01).
    ok(invoke(["init", url]))
    wrong = pg_cluster.url(schema, user=role, password="not-it")
    human = ok(invoke(["--ledger", wrong, "show"]), 7)
    line = one_error_line(human.stderr)
    assert line.startswith(f"error: cannot connect to {shown(wrong)}: ") and line.endswith(
        f'password authentication failed for user "{role}" (SQLSTATE 28P01)'), line
    doc = json.loads(ok(invoke(["--ledger", wrong, "--json", "show"]), 7).stdout)["error"]
    assert (doc["type"], doc["sqlstate"], doc["exit_code"]) == ("StoreUnavailable", "28P01", 7)
    assert doc["url"] == shown(wrong)
    assert doc["message"] == line.removeprefix("error: ")
    # 'run', whose --json errors go to stderr; and over TCP (another libpq message)
    tcp = pg_cluster.url(schema, user=role, password="not-it", tcp=True)
    r = ok(subprocess.run([*CMD, "--ledger", tcp, "run", "--json", "--write", str(tmp_path / "x"), "--", "true"],
                          capture_output=True, text=True, env=clean_env(), timeout=60), 7)
    (doc,) = [json.loads(x)["error"] for x in r.stderr.splitlines()]
    assert (doc["sqlstate"], doc["exit_code"]) == ("28P01", 7) and "password authentication failed" in doc["message"]
    # Another refusal of the login: 28000 (a role that may not log in, on trust).
    nologin = "cli_" + uuid.uuid4().hex[:10]
    pg_cluster.psql_execute(f"CREATE ROLE {nologin} NOLOGIN")
    barred = pg_cluster.url(schema, user=nologin)
    doc = json.loads(ok(invoke(["--ledger", barred, "--json", "show"]), 7).stdout)["error"]
    assert doc["sqlstate"] == "28000" and f'role "{nologin}" is not permitted to log in' in doc["message"], doc
    # A server that cannot be reached has none.
    down = f"postgresql://{role}@127.0.0.1:1/postgres"
    doc = json.loads(ok(invoke(["--ledger", down, "--json", "show"]), 7).stdout)["error"]
    assert doc["sqlstate"] is None and "SQLSTATE" not in doc["message"], doc


@pytest.mark.parametrize("param, says", [
    ("sslmode=bogus", 'invalid sslmode value: "bogus"'),
    ("target_session_attrs=bogus", 'invalid target_session_attrs value: "bogus"'),
    ("connect_timeout=abc", "bad value for connect_timeout: 'abc'"),
    ("keepalives=x", 'invalid integer value "x" for connection option "keepalives"'),
])
def test_a_connection_parameter_libpq_refuses_is_a_usage_error(
        url: str, param: str, says: str, pg_cluster, role, schema) -> None:
    # A value libpq refuses before reaching any server is the user's to fix (exit 2, naming
    # it), not the server's unavailability (exit 7): for every command, and for the library.
    # Over TCP (libpq reads the keepalive options only for a TCP connection).
    ok(invoke(["init", url]))
    tcp = pg_cluster.url(schema, user=role, password=PASSWORD, tcp=True)
    bad = f"{tcp}&{param}"
    for args in (["show"], ["verify"], ["run", "--write", "/tmp/x", "--", "true"]):
        r = ok(invoke(["--ledger", bad, *args]), 2)
        line = one_error_line(r.stderr)
        assert line.startswith(f"error: libpq refuses {shown(bad)}: ") and says in line, line
    doc = json.loads(ok(invoke(["--ledger", bad, "--json", "show"]), 2).stdout)["error"]
    assert doc["type"] == "InvalidLedgerURL" and says in doc["message"]
    from scopeledger import InvalidLedgerURL

    with pytest.raises(InvalidLedgerURL, match="libpq refuses"):
        Ledger.open(bad)
    port = tcp.replace(f":{pg_cluster.port}/", ":99999/")
    r = ok(invoke(["--ledger", port, "show"]), 2)
    assert 'invalid port number: "99999"' in one_error_line(r.stderr)
    # What is not a parameter's value stays the server's: a socket that is not there.
    gone = ok(invoke(["--ledger", f"{url}&host=/nonexistent-dir", "show"]), 7)
    assert "cannot connect to" in one_error_line(gone.stderr)


def test_without_psycopg_a_url_is_a_usage_error_saying_what_to_install(url: str) -> None:
    # A process in which psycopg cannot be found (find_spec answers None for it).
    r = subprocess.run([sys.executable, "-c",
                        "import importlib.util as u, sys; real = u.find_spec; "
                        "u.find_spec = lambda n, *a: None if n == 'psycopg' else real(n, *a); "
                        "from scopeledger.cli import main; main(sys.argv[1:])", "--ledger", url, "show"],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 2, r.stderr
    assert "pip install 'scopeledger[postgresql]'" in one_error_line(r.stderr)
    no_password(r)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # (gone before the open, or before the read)
        return False


def _run_sleeping(url: str, tmp_path: Path, name: str, env: dict[str, str] | None = None):
    """``ledger --ledger URL run --name NAME -- sh -c 'echo $$ > PIDFILE; exec sleep 600'``:
    (the wrapper's Popen, COMMAND's pid once it runs)."""
    pidfile = tmp_path / f"{name}.pid"
    ok(invoke(["init", url]))
    wrapper = subprocess.Popen([*CMD, "--ledger", url, "run", "--name", name, "--write", str(tmp_path / name), "--",
                                "sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env if env is not None else clean_env())
    wait_for(lambda: (pidfile.exists() and pidfile.read_text().strip()) or wrapper.poll() is not None,
             "COMMAND to start", bound=120)
    assert wrapper.poll() is None, wrapper.communicate()
    return wrapper, int(pidfile.read_text())


def test_command_dies_with_its_wrapper_on_postgresql(url: str, tmp_path: Path) -> None:
    # Other hosts judge the grant by the wrapper's client session, which ends
    # with the wrapper: COMMAND must not outlive it (a newcomer found it did:
    # another host reclaimed the scope while COMMAND ran on, session_lock_gone).
    wrapper, child = _run_sleeping(url, tmp_path, "w1")
    try:
        assert _pid_alive(child)
        wrapper.kill()  # SIGKILL: no handler runs
        wrapper.wait(timeout=120)
        wait_for(lambda: not _pid_alive(child), "COMMAND killed with its wrapper", bound=120)
    finally:
        if _pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_command_is_told_to_stop_when_its_session_is_lost(url: str, tmp_path: Path, pg_cluster) -> None:
    # The wrapper stopped past its session's ttl (+ grace): the server judges the
    # session dead, other hosts may take the scope; once the wrapper runs again
    # it learns its session was lost and sends COMMAND SIGTERM, saying so.
    env = clean_env(SCOPELEDGER_SESSION_TTL="1")
    wrapper, child = _run_sleeping(url, tmp_path, "w2", env)
    schema = url.rsplit("schema=", 1)[1]
    try:
        wrapper.send_signal(signal.SIGSTOP)

        def lapsed() -> bool:
            rows = pg_cluster.psql_execute(
                f"SELECT count(*) FROM {schema}.sessions WHERE lease_until + grace_ms * interval '1 ms'"
                " < clock_timestamp()")
            return rows[0][0] >= 1
        wait_for(lapsed, "the wrapper's session past its lease and grace on the server's clock", bound=120)
        wrapper.send_signal(signal.SIGCONT)
        wait_for(lambda: not _pid_alive(child), "COMMAND stopped after the session was lost", bound=120)
        out, err = wrapper.communicate(timeout=120)
        # exit 6: COMMAND was stopped because the grant was taken away (--on-lost term, the default)
        assert wrapper.returncode == 6, (wrapper.returncode, err)
        assert "session on the server was lost" in err and "sending COMMAND SIGTERM" in err, err
        assert "COMMAND was sent SIGTERM and was killed by SIGTERM" in err, err
        assert "Traceback" not in err
    finally:
        if _pid_alive(child):
            os.kill(child, signal.SIGKILL)
        if wrapper.poll() is None:
            wrapper.send_signal(signal.SIGCONT)
            wrapper.kill()


def test_a_bad_session_ttl_is_a_usage_error(url: str) -> None:
    ok(invoke(["init", url]))
    r = subprocess.run([*CMD, "--ledger", url, "run", "--name", "x", "--write", "/x", "--", "true"],
                       capture_output=True, text=True, env=clean_env(SCOPELEDGER_SESSION_TTL="soon"), timeout=120)
    assert r.returncode == 2 and "SCOPELEDGER_SESSION_TTL" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # A number outside the library's range (0.01 to 86400) was an internal error, exit 70.
    for value in ("0.001", "1e6", "nan"):
        r = invoke(["--ledger", url, "show"], env=clean_env(SCOPELEDGER_SESSION_TTL=value))
        assert r.returncode == 2, (value, r.returncode, r.stderr)
        assert (f"$SCOPELEDGER_SESSION_TTL must be a number of seconds from 0.01 to 86400, not '{value}'"
                in one_error_line(r.stderr)), r.stderr


def test_a_url_with_a_password_parameter_keeps_the_sentence_s_colon() -> None:
    from scopeledger.cli.errors import without_passwords

    said = without_passwords("cannot connect to postgresql://me@h/db?schema=t&password=pw: connection failed")
    assert said == "cannot connect to postgresql://me@h/db?schema=t&password=***: connection failed", said
