"""Several client "hosts" against one PostgreSQL server, for real (issue 15):
each host is a process tree in its own network namespace (a veth pair to the
server's TCP address), its own mount namespace (its own ``/etc/machine-id``,
bind-mounted) and its own PID namespace. The server restarts mid-run
(``pg_ctl restart -m immediate``), a host is killed with SIGKILL, another one's
link is cut (its veth taken down: a partition) until its lease expires.

The clients (``tests/pg_multihost_client.py``) hold two slots through the
store's sessions and reclaim a slot only when the server judges its holder's
session dead. Verdicts come from the log (the truth) and the clients' own
reports: no two live holders of a slot (a ``work`` line always by the slot's
holder at that point), only the killed and the partitioned host reclaimed,
the partitioned one knew it was lost before the judgement, every acknowledged
line there byte for byte, the log gapless. Waits are on conditions with
generous bounds; nothing depends on speed.

Needs root, ``ip`` (iproute2), ``unshare`` and ``mount`` (util-linux), and a
kernel that allows network namespaces; skipped, saying which is missing,
otherwise. The server part needs what ``tests/pgserver.py`` needs.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import orjson
import pytest

import pgserver
from pgserver import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "pg_multihost_client.py")
TTL = 6.0  # seconds: the partitioned host is judged dead after this + its grace


def _why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network, mount and PID namespaces)"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"no '{tool}' (Debian: iproute2 / util-linux)"
    name = f"slprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"the kernel refuses a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


class Host:
    """A network namespace joined to the root one by a veth pair
    ``10.<a>.<b>.1`` (root side, where the server listens) - ``10.<a>.<b>.2``."""

    def __init__(self, tag: str, index: int, a: int, b: int, workdir: str) -> None:
        self.ns = f"sl{tag}h{index}"
        self.outer = f"sl{tag}{index}o"  # at most 15 characters
        self.inner = f"sl{tag}{index}i"
        self.server_ip = f"10.{a}.{b}.1"
        self.ip = f"10.{a}.{b}.2"
        self.machine_id = uuid.uuid4().hex
        self.machine_id_file = os.path.join(workdir, f"machine-id-{index}")
        with open(self.machine_id_file, "w", encoding="ascii") as f:
            f.write(self.machine_id + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.reports: list[dict] = []
        self._reader: threading.Thread | None = None

    def up(self) -> None:
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        run("ip", "link", "set", self.inner, "netns", self.ns)
        run("ip", "addr", "add", f"{self.server_ip}/30", "dev", self.outer)
        run("ip", "link", "set", self.outer, "up")
        run("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.ip}/30", "dev", self.inner)
        run("ip", "netns", "exec", self.ns, "ip", "link", "set", self.inner, "up")
        run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")

    def cut(self) -> None:
        """The link cut: the root side taken down (the peer loses its carrier)."""
        subprocess.run(["ip", "link", "set", self.outer, "down"], check=True, capture_output=True)

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def start(self, url: str, stopfile: str) -> None:
        inner = (f"mount --bind {self.machine_id_file} /etc/machine-id && "
                 f"exec {sys.executable} {CLIENT} '{url}' {TTL} {stopfile}")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private",
             "--pid", "--fork", "--mount-proc", "sh", "-c", inner],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.reports.append(orjson.loads(raw))

    def first(self, event: str) -> dict | None:
        return next((r for r in list(self.reports) if r["event"] == event), None)

    def kill(self) -> None:
        """SIGKILL the namespace's first process (the client, PID 1 in its
        PID namespace): the kernel kills the whole namespace with it."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children", encoding="ascii") as f:
            children = [int(x) for x in f.read().split()]
        for pid in children:
            os.kill(pid, signal.SIGKILL)

    def wait(self, bound: float) -> str:
        assert self.proc is not None
        try:
            self.proc.wait(bound)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        if self._reader is not None:
            self._reader.join(30)
        return self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""


@pytest.fixture
def hosts():
    why = _why_no_namespaces()
    if why is not None:
        pytest.skip(why)
    workdir = tempfile.mkdtemp(prefix="slmh-")
    os.chmod(workdir, 0o755)  # the server user does not need it; the clients' sh does
    tag = uuid.uuid4().hex[:4]
    a, b0 = random.randint(100, 250), random.randint(0, 60) * 4
    made = [Host(tag, i, a, b0 + i, workdir) for i in range(3)]
    try:
        for h in made:
            h.up()
        yield made, workdir
    finally:
        for h in made:
            if h.proc is not None and h.proc.poll() is None:
                with contextlib.suppress(OSError):
                    h.kill()
                h.wait(30)
            h.down()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def net_cluster(hosts):
    """A cluster of its own listening on 127.0.0.1 and each host's server
    address (they exist before it starts), trusting only those subnets."""
    made, _ = hosts
    with contextlib.suppress(ImportError):
        import psycopg  # noqa: F401
    bindir, why = pgserver.find_binaries()
    if bindir is None:
        pgserver._unavailable(why)
    cluster = pgserver.Cluster(bindir, listen=tuple(h.server_ip for h in made),
                               hba=tuple(f"host all all {h.ip}/32 trust" for h in made))
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pgserver._unavailable(f"the PostgreSQL test cluster did not start: {exc}")
    yield cluster
    cluster.stop()


def test_hosts_in_their_own_namespaces_restart_kill_partition(hosts, net_cluster):
    from scopeledger._pgstore import PgStore

    made, workdir = hosts
    schema = pgserver.new_schema_name()
    with PgStore.open(net_cluster.url(schema, tcp=True) + "&sslmode=disable", create=True):
        pass
    stopfile = os.path.join(workdir, "stop")
    for h in made:
        h.start(f"postgresql://postgres@{h.server_ip}:{net_cluster.port}/postgres"
                f"?sslmode=disable&schema={schema}", stopfile)
    store = PgStore.open(net_cluster.url(schema))
    try:
        sessions = {h.ns: wait_for(lambda h=h: h.first("session"), f"{h.ns}'s session", bound=120)["id"] for h in made}
        # Each is its own host: its own machine id and PID namespace (PID 1 there).
        infos = [h.first("session") for h in made]
        assert [i["host"] for i in infos] == [h.machine_id for h in made]
        assert {i["pid"] for i in infos} == {1} and len({i["pidns"] for i in infos}) == 3

        def holders() -> dict[str, int]:
            out: dict[str, int] = {}
            for _, raw in store.read_after(0):
                ev = orjson.loads(raw)
                if ev["type"] == "hold":
                    out[ev["slot"]] = ev["session"]
            return out

        def works_since(seq: int) -> set[int]:
            return {orjson.loads(raw)["session"] for _, raw in store.read_after(seq)
                    if orjson.loads(raw)["type"] == "work"}

        wait_for(lambda: len(holders()) == 2, "both slots held", bound=120)
        # A server restart mid-run: no session is judged dead, work goes on.
        net_cluster.restart("immediate")
        mark = store.head()
        wait_for(lambda: works_since(mark) == set(holders().values()), "work after the restart", bound=120)

        by_session = {sessions[h.ns]: h for h in made}
        first_holders = holders()
        partitioned = by_session[first_holders["s1"]]
        killed = by_session[first_holders["s2"]] if first_holders["s2"] != first_holders["s1"] else \
            next(h for h in made if h is not partitioned)
        killed_at = time.monotonic()
        killed.kill()
        partitioned.cut()
        cut_at = time.monotonic()
        # The third host (or the killed one's slot's next holder) reclaims both slots.
        survivor = next(h for h in made if h is not partitioned and h is not killed)
        wait_for(lambda: set(holders().values()) == {sessions[survivor.ns]},
                 "the survivor holds both slots", bound=180)
        mark = store.head()
        wait_for(lambda: works_since(mark) == {sessions[survivor.ns]}, "the survivor working", bound=120)
        # Another restart: the survivor keeps its session.
        net_cluster.restart("immediate")
        mark = store.head()
        wait_for(lambda: works_since(mark) == {sessions[survivor.ns]}, "work after the second restart", bound=120)
    except BaseException:
        for h in made:  # where each client is, on stderr (shown below)
            with contextlib.suppress(OSError):
                with open(f"/proc/{h.proc.pid}/task/{h.proc.pid}/children", encoding="ascii") as f:
                    for pid in f.read().split():
                        os.kill(int(pid), signal.SIGUSR1)
        raise
    finally:
        open(stopfile, "w").close()
        errors = {h.ns: h.wait(120) for h in made}
        for h in made:  # shown when the test fails
            print(h.ns, h.machine_id, [r for r in h.reports if r["event"] != "ack"][-8:], errors[h.ns][-2000:])
    log = store.read_after(0)
    store.close()

    # The log: gapless, and every acknowledged line in it byte for byte.
    assert [q for q, _ in log] == list(range(1, len(log) + 1))
    stored = dict(log)
    for h in made:
        for r in h.reports:
            if r["event"] == "ack":
                assert stored[r["seq"]] == r["line"].encode(), (h.ns, r)
    # No two live holders: every work line is by its slot's holder at that point.
    slot_holder: dict[str, int] = {}
    reclaimed: list[dict] = []
    for q, raw in log:
        ev = orjson.loads(raw)
        if ev["type"] == "hold":
            slot_holder[ev["slot"]] = ev["session"]
        elif ev["type"] == "work":
            assert slot_holder.get(ev["slot"]) == ev["session"], (q, ev)
        elif ev["type"] == "reclaimed":
            reclaimed.append(ev)
    # Only the killed and the partitioned host were reclaimed; the partitioned one by its lease,
    # after it had learnt its session was lost.
    assert {e["session"] for e in reclaimed} == {sessions[killed.ns], sessions[partitioned.ns]}, \
        (reclaimed, errors)
    end = partitioned.first("end")
    assert end is not None and end["lost"] == "lease_expired", (partitioned.reports[-5:], errors[partitioned.ns])
    for e in reclaimed:
        if e["session"] == sessions[partitioned.ns]:
            assert e["reason"] == "lease_expired" and end["lost_at"] < e["judged_at"]
            assert end["lost_at"] > cut_at
        else:
            assert e["judged_at"] > killed_at
    survivor_end = survivor.first("end")
    assert survivor_end["lost"] is None and survivor_end["valid"], survivor_end
