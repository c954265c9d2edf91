"""A throwaway PostgreSQL cluster for the tests: initdb + pg_ctl in a temporary
directory, reached by a unix socket only (optionally also TCP on 127.0.0.1).

Why our own: pytest-postgresql (10.0) and testing.postgresql run ``initdb`` as
the current user, and ``initdb`` refuses to run as root, which is what CI and
the developers' machines are. Here, as root, every server command runs as the
``postgres`` user (``runuser -u postgres --``), which owns the directory.

The binaries are found on ``PATH`` or under ``/usr/lib/postgresql/*/bin`` (the
newest version). :func:`find_binaries` returns ``None`` with the reason when
they are missing; ``tests/conftest.py`` turns that into a skip, or a failure
when ``SCOPELEDGER_REQUIRE_POSTGRES=1`` (CI).

The server is started with ``fsync`` on and the defaults for durability (the
tests restart it with ``-m immediate`` and count on crash recovery), with
authentication ``trust`` for the local socket and 127.0.0.1 only.

A watchdog (``sh``) stops the server with ``-m immediate`` when the process
that started it is gone, so a killed test run leaves no server behind.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from typing import Any
from urllib.parse import quote

REQUIRE_ENV = "SCOPELEDGER_REQUIRE_POSTGRES"
SERVER_USER = "postgres"


def find_binaries() -> tuple[str | None, str]:
    """(directory holding initdb, pg_ctl and postgres, "") or (None, why not)."""
    found = shutil.which("initdb")
    candidates = [os.path.dirname(os.path.realpath(found))] if found else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0,
                  reverse=True)
    candidates += versions
    for d in candidates:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d, ""
    return None, ("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under "
                  "/usr/lib/postgresql/*/bin; on Debian/Ubuntu: apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One running cluster. ``conninfo(...)`` and ``url(schema)`` reach it as
    the superuser ``postgres`` (trust authentication)."""

    def __init__(self, bindir: str, *, tcp: bool = False, listen: tuple[str, ...] = (),
                 hba: tuple[str, ...] = ()) -> None:
        """``listen``: more addresses to listen on (TCP; they must exist when
        the server starts); ``hba``: more ``pg_hba.conf`` lines."""
        self.bindir = bindir
        self.listen = tuple(listen)
        self.hba = tuple(hba)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                pw = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(f"running as root, and there is no '{SERVER_USER}' user "
                                   "to run the server as") from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        # A short path: a unix socket path is limited to 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="slpg-", dir="/tmp")
        if self.as_root:
            os.chown(self.dir, self._uid, self._gid)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = _free_port() if tcp or listen else 5432
        self.tcp = tcp or bool(listen)
        self._watchdog: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", SERVER_USER, "--"] + cmd
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.dir, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}"
                               f"{proc.stderr}\n{self.server_log()}")
        return proc

    def server_log(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, *args, check=check)

    def _options(self) -> str:
        listen = ",".join(("127.0.0.1",) + self.listen) if self.tcp else "''"
        return (f"-c listen_addresses={listen} -k {self.dir} -p {self.port} "
                "-c max_connections=200 -c shared_buffers=16MB")

    def start(self) -> "Cluster":
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                  "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        if self.hba:
            with open(os.path.join(self.data, "pg_hba.conf"), "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in self.hba))
        self.start_server()
        self._start_watchdog()
        return self

    def restart(self, mode: str = "immediate") -> None:
        """``pg_ctl restart -m <mode>``: with ``immediate`` every backend is
        killed and the server recovers from its WAL."""
        self.pg_ctl("-l", self.log, "-w", "-t", "120", "-m", mode, "-o", self._options(), "restart")

    def stop_server(self) -> None:
        """``pg_ctl stop -m immediate``, keeping the data (see :meth:`start_server`)."""
        self.pg_ctl("-m", "immediate", "-w", "stop")

    def start_server(self) -> None:
        self.pg_ctl("-l", self.log, "-w", "-t", "120", "-o", self._options(), "start")

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self.pg_ctl("-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _start_watchdog(self) -> None:
        # Polls once a second whether the test process lives; a clean-up aid,
        # never used to synchronise a test.
        pg_ctl = os.path.join(self.bindir, "pg_ctl")
        stop = f"{pg_ctl} -D {self.data} -m immediate -w stop"
        if self.as_root:
            stop = f"runuser -u {SERVER_USER} -- {stop}"
        script = (f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                  f"{stop} >/dev/null 2>&1; rm -rf {self.dir}")
        self._watchdog = subprocess.Popen(["sh", "-c", script], start_new_session=True,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)

    # -- reaching it -------------------------------------------------------

    def conninfo(self, *, tcp: bool = False, dbname: str = "postgres", user: str = "postgres") -> str:
        host = "127.0.0.1" if tcp else self.dir
        if tcp and not self.tcp:
            raise RuntimeError("this cluster has no TCP listener")
        return f"host={host} port={self.port} dbname={dbname} user={user}"

    def url(self, schema: str | None = None, *, tcp: bool = False, user: str = "postgres",
            password: str | None = None) -> str:
        host = "127.0.0.1" if tcp else quote(self.dir, safe="")
        secret = f":{quote(password, safe='')}" if password is not None else ""
        url = f"postgresql://{user}{secret}@{host}:{self.port}/postgres"
        return url + (f"?schema={schema}" if schema else "")

    def password_role(self, name: str, password: str) -> None:
        """A login role ``name`` that must give ``password`` (scram-sha-256,
        on the socket and over TCP: its ``pg_hba.conf`` lines go before the
        cluster's ``trust`` ones; other roles keep ``trust``), allowed to
        create schemas in the database ``postgres``. Returns once a new
        connection as ``name`` without the password is refused (the server
        has read its new ``pg_hba.conf``)."""
        import psycopg

        self.psql_execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        self.psql_execute(f"GRANT CREATE ON DATABASE postgres TO {name}")
        hba = os.path.join(self.data, "pg_hba.conf")
        with open(hba, encoding="utf-8") as f:
            old = f.read()
        mine = f"local all {name} scram-sha-256\nhost all {name} 127.0.0.1/32 scram-sha-256\n"
        with open(hba, "w", encoding="utf-8") as f:
            f.write(mine + old)
        self.psql_execute("SELECT pg_reload_conf()")

        def refused() -> bool:
            try:
                psycopg.connect(self.conninfo(user=name), connect_timeout=5).close()
            except psycopg.OperationalError:
                return True
            return False
        wait_for(refused, f"the server asks {name} for a password")

    def psql_execute(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit); its rows, if any."""
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            cur = conn.execute(sql, params or None)
            return cur.fetchall() if cur.description else []


def wait_for(cond: Any, what: str, bound: float = 60.0, every: float = 0.01) -> Any:
    """Poll ``cond()`` until truthy (returned) or ``bound`` seconds (the test
    fails, naming ``what``): a bound on a real condition, not a measure."""
    import time

    deadline = time.monotonic() + bound
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"not within {bound:g}s: {what}")
        time.sleep(every)


def new_schema_name() -> str:
    return "t_" + uuid.uuid4().hex[:16]


# -- pytest fixtures (imported by conftest.py) -----------------------------

import pytest  # noqa: E402


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 and the PostgreSQL tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway cluster per test worker (session scope is per xdist
    worker), with a TCP listener on 127.0.0.1 as well. Skips (or fails, with
    ``SCOPELEDGER_REQUIRE_POSTGRES=1``) when the binaries or psycopg are
    missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install -e '.[test]' (or 'scopeledger[postgresql]')")
    bindir, why = find_binaries()
    if bindir is None:
        _unavailable(why)
    try:
        cluster = Cluster(bindir, tcp=True).start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"the PostgreSQL test cluster did not start: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A URL naming a fresh schema (not yet created) on the worker's cluster;
    the schema is dropped afterwards."""
    schema = new_schema_name()
    yield pg_cluster.url(schema)
    try:
        pg_cluster.psql_execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    except Exception:  # a test that restarted or broke the server: nothing to tidy
        pass
