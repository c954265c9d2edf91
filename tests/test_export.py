"""`ledger export`: CSV read back with the csv module (every event, the
right values), Parquet read back with pyarrow (when installed), and Trace
Event JSON checked against the format's documented fields and for what it
shows; each streams in bounded memory."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from scopeledger import Ledger
from scopeledger.cli import export as X

from helpers import CMD, clean_env, ledger_cmd, one_error_line

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench")

try:
    import pyarrow  # noqa: F401
    import pyarrow.parquet as pq
    HAVE_ARROW = True
except ImportError:  # pragma: no cover
    HAVE_ARROW = False

needs_arrow = pytest.mark.skipif(not HAVE_ARROW, reason="pyarrow is not installed (the parquet extra: "
                                                        "pip install -e '.[parquet]')")



def _expected_row(e) -> dict[str, str]:
    """What the CSV must say for event ``e``, from the event itself."""
    d = e.data

    def js(v):
        return "" if v is None else json.dumps(v, separators=(",", ":"), ensure_ascii=False)

    def s(v):
        return "" if v is None else ("true" if v is True else "false" if v is False else str(v))

    row = dict.fromkeys(X.COLUMN_NAMES, "")
    row.update(seq=str(e.seq), ts=str(e.ts), type=e.type, actor_pid=str(e.actor["pid"]), actor=js(e.actor),
               prev=d["prev"], v=str(d["v"]))
    secs, frac = divmod(e.ts, 10**9)
    row["time"] = e.time.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
    if e.type in ("registered", "delegated"):
        h = d["holder"]
        row.update(holder=h["name"], parent=s(h["parent"]), rules=js(h["rules"]), pid=str(h["process"]["pid"]),
                   reserved=s(h["reserved"]), socket=s(h["socket"]), process=js(h["process"]))
    elif e.type == "refused":
        r = d["request"]
        row.update(holder=r["name"], parent=s(r["parent"]), rules=js(r["rules"]), error=d["error"],
                   message=d["message"], obstacle_rule=js(d["rule"]), chain=js(d["chain"]))
    elif e.type == "attached":
        row.update(holder=d["name"], pid=str(d["process"]["pid"]), process=js(d["process"]))
    else:
        row.update(holder=d["name"], reparented=js(d.get("reparented")), reason=s(d.get("reason")),
                   note=s(d.get("note")), forced=s(d.get("forced")), exit_code=s(d.get("exit_code")),
                   exit_signal=s(d.get("exit_signal")), last_seen=s(d.get("last_seen")),
                   ttl_ns=s(d.get("ttl_ns")))
    if e.type in ("registered", "delegated"):
        row.update(note=s(h.get("note")), ttl_ns=s(h.get("ttl_ns")), advisory=js(h.get("advisory")),
                   lease_only=s(h.get("lease_only", False)) if "ttl_ns" in h else "")
    return row


# -- csv ------------------------------------------------------------------------------


def test_csv_from_the_console_script_reads_back_every_event(story, tmp_path: Path) -> None:
    d, led, _p = story
    r = subprocess.run([*CMD, "--ledger", str(d), "export", "--format", "csv"], capture_output=True,
                       env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout.decode("utf-8"), newline="")))
    events = list(led.events())
    assert len(rows) == len(events) == 10
    for got, e in zip(rows, events, strict=True):
        assert got == _expected_row(e), e.seq
    # spot checks a reader cares about, independent of the helper above
    by_seq = {int(x["seq"]): x for x in rows}
    assert by_seq[8]["reason"] == "process_gone" and json.loads(by_seq[8]["reparented"]) == [["leaf", "rt"]]
    assert by_seq[6]["error"] == "delegation" and json.loads(by_seq[6]["chain"])[-1] == "leaf"
    assert by_seq[2]["reserved"] == "true" and by_seq[1]["parent"] == ""
    # to a file: the same bytes, mode 0600, a line on stderr
    out = tmp_path / "e.csv"
    f = ledger_cmd(d, "export", "--format", "csv", "-o", str(out))
    assert f.returncode == 0 and "wrote 10 event(s)" in f.stderr
    assert out.read_bytes() == r.stdout and (out.stat().st_mode & 0o777) == 0o600


def test_csv_window_and_message_with_commas_quotes_and_newlines(tmp_path: Path) -> None:
    d = tmp_path / "led"
    from scopeledger import Refused, ScopeRule

    with Ledger.open(d) as led:
        tricky = '/t/a,b "q"\nnext'
        led.register("a", [ScopeRule(tricky, "write", True)])
        with pytest.raises(Refused):
            led.register("b", [ScopeRule(tricky + "/x", "write", True)])
        events = list(led.events())
    r = ledger_cmd(d, "export", "--format", "csv", "--from", "2")
    rows = list(csv.reader(io.StringIO(r.stdout, newline="")))
    assert rows[0] == list(X.COLUMN_NAMES) and len(rows) == 2
    got = dict(zip(rows[0], rows[1], strict=True))  # a value for every column
    assert got == _expected_row(events[1]) and tricky in got["message"]


def test_docs_list_the_columns_in_order() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    section = doc[doc.index("The columns of `csv` and `parquet`"):]
    names = re.findall(r"^\| `([a-z_]+)` \|", section[:section.index("\n\n", section.index("|---"))], re.M)
    assert tuple(names) == X.COLUMN_NAMES


# -- parquet --------------------------------------------------------------------------


@needs_arrow
def test_parquet_reads_back_typed(story, tmp_path: Path) -> None:
    d, led, _p = story
    out = tmp_path / "e.parquet"
    r = ledger_cmd(d, "export", "--format", "parquet", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"output": str(out), "format": "parquet", "events": 10}
    table = pq.read_table(out)
    assert table.column_names == list(X.COLUMN_NAMES)
    rows = table.to_pylist()
    for got, e in zip(rows, led.events(), strict=True):
        want = _expected_row(e)
        assert got["seq"] == e.seq and got["ts"] == e.ts and got["v"] == e.data["v"]
        assert got["time"].timestamp() == pytest.approx(e.ts / 1e9, abs=1e-6)
        assert got["reserved"] == (None if want["reserved"] == "" else want["reserved"] == "true")
        assert got["pid"] == (int(want["pid"]) if want["pid"] else None)
        for col in ("type", "holder", "parent", "rules", "reason", "reparented", "error", "message",
                    "obstacle_rule", "chain", "actor", "process", "prev"):
            assert (got[col] or "") == want[col], (e.seq, col)


def test_parquet_usage(story, tmp_path: Path) -> None:
    d, _led, _p = story
    r = ledger_cmd(d, "export", "--format", "parquet")
    assert r.returncode == 2 and "parquet goes to a file" in one_error_line(r.stderr)
    shadow = tmp_path / "shadow" / "pyarrow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named pyarrow (test shadow)')\n")
    r = ledger_cmd(d, "export", "--format", "parquet", "-o", str(tmp_path / "x.parquet"),
                   env=clean_env(PYTHONPATH=str(tmp_path / "shadow")))
    assert r.returncode == 2
    line = one_error_line(r.stderr)
    assert "needs pyarrow" in line and "pip install 'scopeledger[parquet]'" in line
    assert not (tmp_path / "x.parquet").exists()


# -- trace ----------------------------------------------------------------------------

#: Trace Event Format (the Catapult document): the phases used and what each must carry.
PHASES = {"X", "i", "M"}
METADATA = {"process_name": "name", "thread_name": "name", "process_sort_index": "sort_index",
            "thread_sort_index": "sort_index"}


def check_trace(doc: object) -> list[dict]:
    """The Trace Event format's documented fields, strictly, for the subset a
    trace export writes; returns the events."""
    assert isinstance(doc, dict) and set(doc) <= {"traceEvents", "displayTimeUnit", "otherData"}
    assert doc.get("displayTimeUnit", "ms") in ("ms", "ns")
    assert isinstance(doc.get("otherData", {}), dict)
    events = doc["traceEvents"]
    assert isinstance(events, list)
    named_threads, named_procs = set(), set()
    slices: dict[tuple[int, int], tuple[float, float]] = {}
    for ev in events:
        assert isinstance(ev, dict) and ev.get("ph") in PHASES, ev
        assert type(ev["pid"]) is int and type(ev["tid"]) is int, ev
        assert isinstance(ev["name"], str) and ev["name"], ev
        if "args" in ev:
            assert isinstance(ev["args"], dict), ev
        if ev["ph"] == "M":
            assert ev["name"] in METADATA, ev
            value = ev["args"][METADATA[ev["name"]]]
            assert isinstance(value, str if METADATA[ev["name"]] == "name" else int), ev
            if ev["name"] == "thread_name":
                named_threads.add((ev["pid"], ev["tid"]))
            if ev["name"] == "process_name":
                named_procs.add(ev["pid"])
            continue
        assert isinstance(ev["ts"], (int, float)) and isinstance(ev.get("cat", ""), str), ev
        if ev["ph"] == "X":
            assert isinstance(ev["dur"], (int, float)) and ev["dur"] >= 0, ev
            key = (ev["pid"], ev["tid"])
            assert key not in slices, f"two bars on one track: {ev}"  # one grant per track
            slices[key] = (ev["ts"], ev["ts"] + ev["dur"])
        else:
            assert ev["s"] in ("g", "p", "t"), ev
    for ev in events:
        if ev["ph"] in ("X", "i"):
            assert (ev["pid"], ev["tid"]) in named_threads and ev["pid"] in named_procs, ev
        if ev["ph"] == "i" and ev["pid"] != X.REFUSALS_PID:
            lo, hi = slices[(ev["pid"], ev["tid"])]
            assert lo <= ev["ts"] <= hi, ev  # an instant on a track lies within its bar
    return events


def test_trace_shows_tracks_nested_by_delegation_and_refusals(story, tmp_path: Path) -> None:
    d, led, pids = story
    out = tmp_path / "t.json"
    r = subprocess.run([*CMD, "--ledger", str(d), "export", "--format", "trace", "-o", str(out)],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_bytes())
    events = check_trace(doc)
    assert doc["otherData"]["events"] == 10 and doc["otherData"]["ledger"] == str(d)
    bars = {e["name"]: e for e in events if e["ph"] == "X"}
    assert {n: (b["cat"], b["pid"], b["tid"]) for n, b in bars.items()} == {
        "rt": ("held", 1, 1), "mid": ("reclaimed", 1, 2), "leaf": ("reclaimed", 1, 4),
        "other": ("released", 5, 5), "newcomer": ("held", 1, 10)}
    assert bars["leaf"]["args"]["ended"] == "reclaimed:zombie"
    assert bars["other"]["dur"] == 2_000_000  # two seconds, in microseconds
    assert bars["rt"]["ts"] + bars["rt"]["dur"] == bars["newcomer"]["ts"]  # held: to the last event
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads[(1, 4)] == "rt > mid > leaf (token 4)"
    instants = [(e["name"], e["pid"], e["tid"], e["args"]["seq"]) for e in events if e["ph"] == "i"]
    assert (f"attached pid {pids[1]}", 1, 2, 3) in instants
    assert ("re-parented to 'rt'", 1, 4, 8) in instants
    assert ("refused 'newcomer'", X.REFUSALS_PID, 0, 6) in instants


def test_trace_window_starts_with_the_holders_live_then(story) -> None:
    d, _led, _p = story
    r = subprocess.run([*CMD, "--ledger", str(d), "export", "--format", "trace", "--from", "5"],
                       capture_output=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    events = check_trace(json.loads(r.stdout))
    bars = {e["name"]: e for e in events if e["ph"] == "X"}
    assert sorted(bars) == ["leaf", "mid", "newcomer", "other", "rt"]
    assert bars["mid"]["args"].get("granted_before_window") is True
    assert bars["mid"]["ts"] == bars["other"]["ts"]  # both start at seq 5's time


class _Sink:
    """A stream that keeps nothing (counts what it was given)."""

    n = 0

    def write(self, data) -> int:
        self.n += len(data)
        return len(data)


def test_trace_and_csv_stream_in_bounded_memory(tmp_path: Path) -> None:
    sys.path.insert(0, BENCH)
    import run as bench  # tools/bench/run.py: a valid log, fast

    peaks = {}
    for n in (2_000, 20_000):
        d = tmp_path / f"h{n}"
        bench.build_history(str(d), 10, n, 1_000, 0)
        with Ledger.open(d, readonly=True) as led:
            for fmt in ("trace", "csv"):
                sink = _Sink()
                tracemalloc.start()
                if fmt == "trace":
                    count = X.write_trace(led.events(), sink)  # type: ignore[arg-type]
                else:
                    count = X.write_csv(led.events(), sink)  # type: ignore[arg-type]
                peaks[(fmt, n)] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                assert count == n and sink.n > n * 50
    for fmt in ("trace", "csv"):
        small, large = peaks[(fmt, 2_000)], peaks[(fmt, 20_000)]
        # ten times the events, not ten times the memory (the output buffer left out)
        assert large < small * 2 + (1 << 20), (fmt, small, large)


def test_export_usage_errors(tmp_path: Path) -> None:
    for args, words in ((("--format", "xml"), "invalid value for '--format'"),
                        (("--format", "csv", "-o", str(tmp_path / "no" / "x.csv")), "does not exist"),
                        (("--format", "csv", "--json"), "--json prints a summary"),
                        (("--format", "csv", "--from", "nope"), "--from")):
        r = ledger_cmd(tmp_path / "led-missing", "export", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert words in one_error_line(r.stderr), args
    r = ledger_cmd(tmp_path / "led-missing", "export", "--format", "csv")
    assert r.returncode == 6  # no ledger: nothing created
    assert not (tmp_path / "led-missing").exists()


# -- what a release, a lease, a note, an advisory grant and a reclaim add -------------------


@pytest.fixture(scope="module")
def forensic(tmp_path_factory: pytest.TempPathFactory):
    """A ledger, made by real processes, with every field ``replay`` shows
    beyond the first columns: ``ledger run --note`` of a child exiting 3; a
    lease (renewed), a lease-only grant and an advisory grant; a release
    forced by another process (``ledger release --force --reason --note``);
    the reclaim of a killed process (a zombie: its signal, its last_seen).
    Returns ``(directory, {name: value}, events)``."""
    from scopeledger import ScopeRule

    base = tmp_path_factory.mktemp("forensic")
    d, t = base / "led", base / "tree"
    t.mkdir()
    r = ledger_cmd(d, "run", "--name", "a", "--write", str(t / "a"), "--note", "why a", "--",
                   "sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr
    victim = subprocess.Popen(["sleep", "600"])
    try:
        with Ledger.open(d) as led:
            b = led.register("b", [ScopeRule(str(t / "b"), "write", True)], ttl=600, note="why b")
            led.renew("b", b.token, ttl=900)
            led.register("c", [ScopeRule(str(t / "b" / "x"), "write", True)], advisory=True)
            led.register("e", [ScopeRule(str(t / "e"), "write", True)], ttl=60, lease_only=True)
            led.register("z", [ScopeRule(str(t / "z"), "write", True)], pid=victim.pid)
        r = ledger_cmd(d, "release", "b", "--force", "--reason", "operator says", "--note", "ticket 7",
                       subprocess_=True)
        assert r.returncode == 0, r.stderr
        victim.kill()
        os.waitid(os.P_PID, victim.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
        r = ledger_cmd(d, "reclaim", subprocess_=True)
        assert r.returncode == 0, r.stderr
    finally:
        victim.kill()
        victim.wait()
    with Ledger.open(d, readonly=True) as led:
        events = list(led.events())
    by = {(e.type, e.data.get("name") or e.data["holder"]["name"]): e for e in events
          if e.type not in ("refused", "repaired", "void")}
    forced = by[("released", "b")]
    zombie = by[("reclaimed", "z")]
    assert zombie.data["reason"] == "zombie" and zombie.data.get("exit_signal") == 9, zombie.data
    want = {"grant_a": by[("registered", "a")], "release_a": by[("released", "a")],
            "grant_b": by[("registered", "b")], "renew_b": by[("renewed", "b")],
            "grant_c": by[("registered", "c")], "grant_e": by[("registered", "e")],
            "grant_z": by[("registered", "z")], "forced": forced, "zombie": zombie}
    assert forced.actor["pid"] != os.getpid() and forced.data["forced"] == "operator says"
    return d, want, events


def test_csv_carries_notes_leases_advisory_forced_exit_and_last_seen(forensic) -> None:
    d, ev, events = forensic
    r = ledger_cmd(d, "export", "--format", "csv")
    assert r.returncode == 0, r.stderr
    reader = csv.reader(io.StringIO(r.stdout, newline=""))
    header = next(reader)
    # the new columns come after every old one: an old reader's positions do not move
    assert header[:21] == ["seq", "ts", "time", "type", "holder", "parent", "rules", "pid", "reserved",
                           "socket", "reason", "reparented", "error", "message", "obstacle_rule", "chain",
                           "actor_pid", "actor", "process", "prev", "v"]
    rows = {int(row[0]): dict(zip(header, row, strict=True)) for row in reader}
    assert len(rows) == len(events)
    for e in events:
        assert rows[e.seq] == _expected_row(e), e.seq

    def row(key):
        return rows[ev[key].seq]

    assert row("grant_a")["note"] == "why a" and row("release_a")["exit_code"] == "3"
    assert row("release_a")["exit_signal"] == "" and row("grant_a")["ttl_ns"] == ""
    assert row("grant_b")["ttl_ns"] == str(600 * 10**9) and row("grant_b")["note"] == "why b"
    assert row("grant_b")["lease_only"] == "false" and row("grant_e")["lease_only"] == "true"
    assert row("renew_b")["ttl_ns"] == str(900 * 10**9)
    conflicts = json.loads(row("grant_c")["advisory"])
    assert len(conflicts) == 1 and conflicts[0][0] == ["b"] and conflicts[0][1][0].endswith("/b")
    assert row("grant_b")["advisory"] == ""  # not asked advisory: no value, not []
    f = row("forced")
    assert f["forced"] == "operator says" and f["note"] == "ticket 7"
    assert f["actor_pid"] == str(ev["forced"].actor["pid"])  # who forced it
    z = row("zombie")
    assert z["reason"] == "zombie" and z["exit_signal"] == "9" and z["exit_code"] == ""
    assert z["last_seen"] == str(ev["grant_z"].ts)


@needs_arrow
def test_parquet_carries_them_typed(forensic, tmp_path: Path) -> None:
    d, ev, events = forensic
    out = tmp_path / "f.parquet"
    r = ledger_cmd(d, "export", "--format", "parquet", "-o", str(out))
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out)
    assert table.column_names == list(X.COLUMN_NAMES)
    types = {f.name: str(f.type) for f in table.schema}
    assert {c: types[c] for c in ("note", "ttl_ns", "lease_only", "advisory", "forced", "exit_code",
                                  "exit_signal", "last_seen")} == {
        "note": "string", "ttl_ns": "int64", "lease_only": "bool", "advisory": "string", "forced": "string",
        "exit_code": "int64", "exit_signal": "int64", "last_seen": "int64"}
    assert types["time"] == "timestamp[ns, tz=UTC]"  # (to_pylist would want it in microseconds)
    rows = {x["seq"]: x for x in table.select([c for c in table.column_names if c != "time"]).to_pylist()}
    assert len(rows) == len(events)

    def row(key):
        return rows[ev[key].seq]

    assert row("grant_a")["note"] == "why a" and row("release_a")["exit_code"] == 3
    assert row("release_a")["exit_signal"] is None and row("grant_a")["ttl_ns"] is None
    assert row("grant_b")["ttl_ns"] == 600 * 10**9 and row("renew_b")["ttl_ns"] == 900 * 10**9
    assert row("grant_b")["lease_only"] is False and row("grant_e")["lease_only"] is True
    assert row("grant_a")["lease_only"] is None
    assert json.loads(row("grant_c")["advisory"]) == ev["grant_c"].data["holder"]["advisory"]
    assert row("forced")["forced"] == "operator says" and row("forced")["note"] == "ticket 7"
    assert row("zombie")["exit_signal"] == 9 and row("zombie")["last_seen"] == ev["grant_z"].ts


def test_trace_args_carry_them(forensic) -> None:
    d, ev, _events = forensic
    r = subprocess.run([*CMD, "--ledger", str(d), "export", "--format", "trace"], capture_output=True,
                       env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    events = check_trace(json.loads(r.stdout))
    bars = {e["name"]: e["args"] for e in events if e["ph"] == "X"}
    assert bars["a"]["note"] == "why a" and bars["a"]["exit_code"] == 3 and "exit_signal" not in bars["a"]
    assert "forced" not in bars["a"] and "ttl_ns" not in bars["a"]
    b = bars["b"]
    assert b["note"] == "why b" and b["ttl_ns"] == 600 * 10**9 and b["lease_only"] is False
    assert b["forced"] == "operator says" and b["release_note"] == "ticket 7"
    assert b["ended_by_pid"] == ev["forced"].actor["pid"]  # who forced it
    assert bars["c"]["advisory"] == ev["grant_c"].data["holder"]["advisory"]
    assert bars["e"]["lease_only"] is True
    z = bars["z"]
    assert z["ended"] == "reclaimed:zombie" and z["exit_signal"] == 9 and z["last_seen"] == ev["grant_z"].ts
    renewals = [e for e in events if e["ph"] == "i" and e.get("cat") == "renewed"]
    assert [(e["name"], e["args"]) for e in renewals] == [
        ("lease renewed for 900 s", {"seq": ev["renew_b"].seq, "ttl_ns": 900 * 10**9})]
    # a window that begins while b is held: its bar carries the lease as it stood then (renewed)
    r = subprocess.run([*CMD, "--ledger", str(d), "export", "--format", "trace", "--from", str(ev["renew_b"].seq + 1)],
                       capture_output=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    bars = {e["name"]: e["args"] for e in check_trace(json.loads(r.stdout)) if e["ph"] == "X"}
    b = bars["b"]
    assert b.get("granted_before_window") is True and b["ttl_ns"] == 900 * 10**9 and b["lease_only"] is False
    assert b["forced"] == "operator says" and bars["e"]["lease_only"] is True
