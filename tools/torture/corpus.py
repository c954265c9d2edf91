"""The bad-input corpus: malformed paths, rules, holder names, manifests,
log lines, snapshots and command lines, each with the typed error (or, for
a snapshot, the refusal to trust it) it must meet.

Every case runs against a ledger with recorded history and checks, besides
the error's type and message (one line, lowercase, naming what is wrong):
the log's bytes are unchanged (every recorded event intact: nothing
repaired, cut or set aside), and, where the log itself is fine, ``verify``
passes and the state is the fold of the log.

``cases()`` returns them all; ``run_case(case, workdir)`` runs one and
returns a short description of what it met. The pytest module
tests/test_torture_corpus.py parametrizes over ``cases()``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from typing import Any, Callable

import attrs
import orjson

from scopeledger._fold import SNAPSHOT_FORMAT

from .model import LogChecker, library_view, line_hash


def _as_v1(ev: dict[str, Any]) -> None:
    """Make a v2 event (in place) as the v1 code wrote it: ``v`` 1, v1
    process identities (``pid``, ``start`` seconds, ``boot``) and rules of
    three items (no path identity)."""
    def v1(i: dict[str, Any]) -> dict[str, Any]:
        return {"pid": i["pid"], "start": 1764425990.5, "boot": i["boot"]}
    ev["v"] = 1
    ev["actor"] = v1(ev["actor"])
    if "holder" in ev:
        ev["holder"]["process"] = v1(ev["holder"]["process"])
        ev["holder"]["rules"] = [r[:3] for r in ev["holder"]["rules"]]  # v1 rules carry no path identity
    if "process" in ev:
        ev["process"] = v1(ev["process"])

ROOT = "/corpus"


@attrs.frozen
class Case:
    id: str
    category: str          # path, rule, name, process, manifest, log, snapshot, cli
    expect: Any            # exception class, "skipped" (snapshot) or an exit code (cli)
    match: str             # regex the message must match
    data: Any              # the input (or a function building it)
    line: int | None = None  # log: the line the error must name


# -- a ledger with history -------------------------------------------------------

def base_ledger(path: str) -> None:
    """Five events and a snapshot at seq 2 and 4, then one more event."""
    from scopeledger import Ledger, ScopeRule

    with Ledger.open(path) as led:
        led.register("A", [ScopeRule(f"{ROOT}/a", "write")])
        led.register("B", [ScopeRule(f"{ROOT}/b", "write")])
        led.snapshot()
        led.delegate("A", "A1", [ScopeRule(f"{ROOT}/a/x", "write")])
        led.release("B")
        led.snapshot()
        led.register("C", [ScopeRule(f"{ROOT}/c", "write"), ScopeRule(f"{ROOT}/r", "read")])


def log_bytes(path: str) -> bytes:
    return open(os.path.join(path, "events.jsonl"), "rb").read()


def _one_line(msg: str) -> None:
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    assert msg and msg[0].islower(), f"message does not start lowercase: {msg!r}"
    assert not msg.endswith("."), f"message ends with a period: {msg!r}"


# -- paths, rules, names (API inputs) ----------------------------------------------

def _api_cases() -> list[Case]:
    from scopeledger import InvalidHolderName, InvalidScope

    long_path = "/" + "/".join(["d" * 200] * 25)
    long_comp = "/a/" + "x" * 256
    P = "path"
    cases = [
        # (id, what to call, expected, message)
        Case("path-nul", P, InvalidScope, r"contains NUL", ("rule", "/a\x00b")),
        Case("path-empty", P, InvalidScope, r"invalid path '': empty", ("rule", "")),
        Case("path-relative", P, InvalidScope, r"not absolute", ("rule", "a/b")),
        Case("path-dot-relative", P, InvalidScope, r"not absolute", ("rule", "./a")),
        Case("path-huge", P, InvalidScope, r"longer than 4095 bytes", ("rule", long_path)),
        Case("path-huge-component", P, InvalidScope, r"longer than 255 bytes", ("rule", long_comp)),
        Case("path-not-a-string", P, InvalidScope, r"expected a string", ("rule", 42)),
        Case("path-bytes", P, InvalidScope, r"expected a string", ("rule", b"/a")),
        Case("path-none", P, InvalidScope, r"expected a string", ("rule", None)),
        Case("path-surrogate", P, InvalidScope, r"not valid UTF-8", ("rule", "/a/\udcff")),
        Case("spec-escape-root", P, InvalidScope, r"climbs out of its root /srv/repo",
             ("spec", "../../etc/**", "/srv/repo")),
        Case("spec-escape-deep", P, InvalidScope, r"climbs out of its root",
             ("spec", "src/../../../x/*", "/srv/repo")),
        Case("spec-escape-sibling", P, InvalidScope, r"climbs out of its root",
             ("spec", "../repo-other/**", "/srv/repo")),
        Case("spec-relative-no-root", P, InvalidScope, r"relative path without a root",
             ("spec", "src/**", None)),
        Case("spec-empty", P, InvalidScope, r"empty", ("spec", "  ", "/srv")),
        Case("spec-nul", P, InvalidScope, r"contains NUL", ("spec", "/a\x00/**", "/srv")),
        Case("spec-star-inside", P, InvalidScope, r"only allowed as a final", ("spec", "/a/*/b", None)),
        Case("spec-double-star-inside", P, InvalidScope, r"only allowed as a final",
             ("spec", "/a/**/b/**", None)),
        Case("rule-permission", "rule", InvalidScope, r"invalid permission 'admin'", ("perm", "admin")),
        Case("rule-permission-none", "rule", InvalidScope, r"invalid permission None", ("perm", None)),
        Case("rule-recursive-string", "rule", InvalidScope, r"invalid recursive flag 'yes'", ("rec", "yes")),
        Case("rule-recursive-int", "rule", InvalidScope, r"invalid recursive flag 1", ("rec", 1)),
        Case("rules-empty", "rule", InvalidScope, r"no rules given", ("rules", [])),
        Case("rules-a-string", "rule", InvalidScope, r"expected a list of ScopeRule", ("rules", "/a")),
        Case("rules-short-tuple", "rule", InvalidScope, r"expected a ScopeRule or", ("rules", [("/a",)])),
        Case("rules-long-tuple", "rule", InvalidScope, r"expected a ScopeRule or",
             ("rules", [("/a", "write", True, "extra")])),
        Case("rules-a-dict", "rule", InvalidScope, r"expected a ScopeRule or",
             ("rules", [{"path": "/a"}])),
    ]
    from scopeledger import InvalidProcess

    for pid, m in [(0, r"pid must be positive"), (-1, r"pid must be positive"), ("12", r"pid must be an int"),
                   (True, r"pid must be an int"), (1.5, r"pid must be an int"),
                   (2**22 + 12345, r"no such process")]:
        cases.append(Case(f"pid-{pid!r}", "process", InvalidProcess, m, ("pid", pid)))
    for i, bad in enumerate(["", " ", "-lead", ".hidden", "a//b", "a b ", "x" * 256, "ä", "a\x00",
                             "a\nb", "../up", None, 5]):
        cases.append(Case(f"name-{i}-{bad!r}"[:40], "name", InvalidHolderName, r"invalid holder name",
                          ("name", bad)))
    return cases


def _run_api(case: Case, path: str) -> str:
    from scopeledger import Ledger, ScopeRule, parse_rule

    kind = case.data[0]
    with Ledger.open(path) as led:
        if kind == "rule":
            call = lambda: led.register("new", [ScopeRule(case.data[1], "write")])  # noqa: E731
        elif kind == "spec":
            call = lambda: led.register("new", [parse_rule(case.data[1], "write", case.data[2])])  # noqa: E731
        elif kind == "perm":
            call = lambda: led.register("new", [(f"{ROOT}/n", case.data[1], True)])  # noqa: E731
        elif kind == "rec":
            call = lambda: led.register("new", [(f"{ROOT}/n", "write", case.data[1])])  # noqa: E731
        elif kind == "rules":
            call = lambda: led.register("new", case.data[1])  # noqa: E731
        elif kind == "pid":
            pid = case.data[1]
            calls = [lambda: led.register("new", [ScopeRule(f"{ROOT}/n", "write")], pid),
                     lambda: led.delegate("A", "new", [ScopeRule(f"{ROOT}/a/n", "write")], pid),
                     lambda: led.attach("A", pid)]
            return {_expect(c, case) for c in calls}.pop()
        else:
            name = case.data[1]
            calls = [lambda: led.register(name, [ScopeRule(f"{ROOT}/n", "write")]),
                     lambda: led.delegate("A", name, [ScopeRule(f"{ROOT}/a/n", "write")]),
                     lambda: led.release(name)]
            msgs = {_expect(c, case) for c in calls}
            return msgs.pop()
        return _expect(call, case)


def _expect(call: Callable[[], Any], case: Case) -> str:
    try:
        call()
    except case.expect as exc:
        msg = str(exc)
        assert re.search(case.match, msg), f"{case.id}: message {msg!r} lacks {case.match!r}"
        _one_line(msg)
        return msg
    except Exception as exc:
        raise AssertionError(f"{case.id}: expected {case.expect.__name__}, got "
                             f"{type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{case.id}: accepted")


# -- manifests -----------------------------------------------------------------------

def _manifest_cases() -> list[Case]:
    from scopeledger import InvalidManifest

    good_scope = '[scope]\nwrite = ["src/**"]\n'
    M = "manifest"
    raw: list[tuple[str, bytes | str | None, str]] = [
        ("not-toml", '[holder\nname = "x"\n', r"not TOML"),
        ("empty-file", "", r"required field missing @ manifest\.holder"),
        ("missing-holder", good_scope, r"required field missing @ manifest\.holder"),
        ("missing-scope", '[holder]\nname = "x"\n', r"required field missing @ manifest\.scope"),
        ("missing-name", "[holder]\n" + good_scope, r"required field missing @ manifest\.holder\.name"),
        ("name-int", "[holder]\nname = 5\n" + good_scope, r"expected a string.*manifest\.holder\.name"),
        ("name-bad-chars", '[holder]\nname = "a/../b"\n' + good_scope, r"invalid holder name 'a/\.\./b'"),
        ("name-empty", '[holder]\nname = ""\n' + good_scope, r"invalid holder name ''"),
        ("unknown-top-key", '[holder]\nname = "x"\n' + good_scope + 'extra = 1\n', r"extra"),
        ("unknown-holder-key", '[holder]\nname = "x"\ncolour = "red"\n' + good_scope, r"colour"),
        ("unknown-scope-key", '[holder]\nname = "x"\n[scope]\nexec = ["a"]\n', r"exec"),
        ("write-not-list", '[holder]\nname = "x"\n[scope]\nwrite = "src/**"\n',
         r"expected a list.*manifest\.scope\.write"),
        ("write-item-int", '[holder]\nname = "x"\n[scope]\nwrite = [1]\n', r"item 0: expected a string"),
        ("read-table", '[holder]\nname = "x"\n[scope]\nread = {a = 1}\n', r"expected a list"),
        ("rules-not-array", '[holder]\nname = "x"\n[scope]\nrules = 5\n', r"expected a list"),
        ("rule-missing-path", '[holder]\nname = "x"\n[[scope.rules]]\npermission = "write"\n', r"path"),
        ("rule-bad-permission", '[holder]\nname = "x"\n[[scope.rules]]\npath = "a"\npermission = "exec"\n',
         r"invalid permission 'exec'"),
        ("rule-recursive-string", '[holder]\nname = "x"\n[[scope.rules]]\npath = "a"\npermission = "write"\n'
         'recursive = "yes"\n', r"expected true or false"),
        ("rule-unknown-key", '[holder]\nname = "x"\n[[scope.rules]]\npath = "a"\npermission = "write"\n'
         'mode = 7\n', r"mode"),
        ("escape-root", '[holder]\nname = "x"\n[scope]\nwrite = ["../../etc/**"]\n', r"climbs out of its root"),
        ("escape-explicit-root", '[holder]\nname = "x"\nroot = "/srv/repo"\n[scope]\nwrite = ["../other/**"]\n',
         r"climbs out of its root /srv/repo"),
        ("nul-in-path", '[holder]\nname = "x"\n[scope]\nwrite = ["/a\\u0000b"]\n', r"contains NUL"),
        ("star-inside", '[holder]\nname = "x"\n[scope]\nwrite = ["/a/*/b"]\n', r"only allowed as a final"),
        ("huge-path", '[holder]\nname = "x"\n[scope]\nwrite = ["/' + "d" * 5000 + '"]\n', r"longer than 4095"),
        ("no-rules", '[holder]\nname = "x"\n[scope]\n', r"no scope rules"),
        ("root-not-string", '[holder]\nname = "x"\nroot = 1\n' + good_scope, r"expected a string.*root"),
        ("binary-garbage", b"\xff\xfe\x00garbage", r"not TOML"),
        ("missing-file", None, r"cannot read manifest"),
    ]
    return [Case(f"manifest-{i}", M, InvalidManifest, m, text) for i, text, m in raw]


def _run_manifest(case: Case, path: str, work: str) -> str:
    from scopeledger import Ledger, install_from_manifest, load_manifest

    mpath = os.path.join(work, "m", "runtime.toml")
    os.makedirs(os.path.dirname(mpath), exist_ok=True)
    if case.data is not None:
        with open(mpath, "wb") as f:
            f.write(case.data if isinstance(case.data, bytes) else case.data.encode())
    msg = _expect(lambda: load_manifest(mpath), case)
    with Ledger.open(path) as led:
        msg2 = _expect(lambda: install_from_manifest(led, mpath, runtime_dir=work), case)
    assert msg == msg2
    return msg


# -- log lines -------------------------------------------------------------------------

def _log_cases() -> list[Case]:
    from scopeledger import CorruptLedger, NewerFormat

    L = "log"
    # Each: (id, mutation of (next event dict, the line before's hash) -> bytes, message, where)
    def ev_json(fn: Callable[[dict], Any]) -> Callable[[dict, str], bytes]:
        def build(nxt: dict, prev: str) -> bytes:
            e = orjson.loads(orjson.dumps(nxt))
            e["prev"] = prev
            out = fn(e)
            return out if isinstance(out, bytes) else orjson.dumps(e if out is None else out)
        return build

    def setk(k: str, v: Any) -> Callable[[dict], None]:
        return lambda e: e.__setitem__(k, v)

    def delk(k: str) -> Callable[[dict], None]:
        def f(e: dict) -> None:
            del e[k]
        return f

    def delegated_from(parent: str) -> Callable[[dict], None]:
        def f(e: dict) -> None:
            e["type"] = "delegated"
            e["holder"]["parent"] = parent
        return f

    def other(kind: str, **payload: Any) -> Callable[[dict], dict]:
        def f(e: dict) -> dict:
            out = {k: e[k] for k in ("v", "seq", "ts", "actor", "prev")}
            out["type"] = kind
            out.update(payload)
            return out
        return f

    def holder(e: dict, **kw: Any) -> None:
        e["holder"].update(kw)

    raw = [
        ("not-json", lambda n, p: b"garbage", r"not JSON"),
        ("truncated-json", lambda n, p: orjson.dumps(dict(n, prev=p))[:-7], r"not JSON"),
        ("json-array", lambda n, p: b"[1, 2, 3]", r"not a JSON object"),
        ("json-string", lambda n, p: b'"registered"', r"not a JSON object"),
        ("json-null", lambda n, p: b"null", r"not a JSON object"),
        ("empty-line", lambda n, p: b"", r"not JSON"),
        ("whitespace-line", lambda n, p: b"   \t", r"not JSON"),
        ("invalid-utf8", lambda n, p: orjson.dumps(dict(n, prev=p)).replace(b'"registered"', b'"regist\xffred"'),
         r"not valid UTF-8 \(byte \d+ of the line is b'\\xff'\)"),
        ("nul-byte", lambda n, p: orjson.dumps(dict(n, prev=p))[:20] + b"\x00" + orjson.dumps(dict(n, prev=p))[20:],
         r"not JSON"),
        ("deep-nesting", lambda n, p: b"[" * 100_000 + b"]" * 100_000, r"not JSON|not a JSON object"),
        ("seq-string", ev_json(lambda e: e.__setitem__("seq", str(e["seq"]))), r"seq is '\d+', not an integer"),
        ("seq-missing", ev_json(delk("seq")), r"seq is None, not an integer"),
        ("seq-float", ev_json(lambda e: e.__setitem__("seq", float(e["seq"]))), r"not an integer"),
        ("seq-bool", ev_json(setk("seq", True)), r"seq is True, not an integer"),
        ("version-missing", ev_json(delk("v")), r"unsupported format version None"),
        ("version-newer", ev_json(setk("v", 3)),
         r"format version 3 \(this scopeledger reads versions up to 2\): probably written by a newer "
         r"scopeledger; upgrade scopeledger"),
        ("version-older", ev_json(setk("v", 0)), r"unsupported format version 0"),
        ("version-string", ev_json(setk("v", "1")), r"unsupported format version '1'"),
        ("ts-string", ev_json(setk("ts", "now")), r"ts is not an integer"),
        ("ts-missing", ev_json(delk("ts")), r"ts is not an integer"),
        ("prev-int", ev_json(setk("prev", 0)), r"prev is not a string"),
        ("type-unknown", ev_json(setk("type", "exploded")), r"unknown event type 'exploded'"),
        ("type-missing", ev_json(delk("type")), r"unknown event type None"),
        ("actor-string", ev_json(setk("actor", "me")), r"actor is not an object"),
        ("seq-gap", ev_json(lambda e: e.__setitem__("seq", e["seq"] + 1)), r"seq \d+ does not follow \d+"),
        ("seq-repeat", ev_json(lambda e: e.__setitem__("seq", e["seq"] - 1)), r"seq \d+ does not follow \d+"),
        ("broken-hash", ev_json(setk("prev", "f" * 32)), r"hash chain broken"),
        ("registered-no-holder", ev_json(delk("holder")), r"holder is None, not an object"),
        ("rules-not-list", ev_json(lambda e: holder(e, rules="/x")), r"holder\.rules is '/x', not a non-empty list"),
        ("rules-empty", ev_json(lambda e: holder(e, rules=[])), r"holder\.rules is \[\], not a non-empty list"),
        ("rule-relative", ev_json(lambda e: holder(e, rules=[["corpus/x", "write", True]])), r"holder\.rules\[0\] is"),
        ("rule-permission", ev_json(lambda e: holder(e, rules=[["/x", "admin", True]])), r"holder\.rules\[0\] is"),
        ("rule-permission-case", ev_json(lambda e: holder(e, rules=[["/x", "READ", True]])), r"holder\.rules\[0\] is"),
        ("rule-recursive", ev_json(lambda e: holder(e, rules=[["/x", "write", "yes"]])), r"holder\.rules\[0\] is"),
        ("rule-recursive-int", ev_json(lambda e: holder(e, rules=[["/x", "write", 1]])), r"holder\.rules\[0\] is"),
        ("rule-short", ev_json(lambda e: holder(e, rules=[["/x", "write"]])), r"holder\.rules\[0\] is"),
        ("process-pid-string", ev_json(lambda e: holder(e, process=dict(e["holder"]["process"], pid="1"))),
         r"holder\.process is"),
        ("process-pid-true", ev_json(lambda e: holder(e, process=dict(e["holder"]["process"], pid=True))),
         r"holder\.process is"),
        ("process-null", ev_json(lambda e: holder(e, process=None)), r"holder\.process is None"),
        ("name-int", ev_json(lambda e: holder(e, name=5)), r"holder\.name is 5, not a holder name"),
        ("name-bad", ev_json(lambda e: holder(e, name="bad//name")), r"holder\.name is 'bad//name', not a holder name"),
        ("reserved-string", ev_json(lambda e: holder(e, reserved="no")),
         r"holder\.reserved is 'no', not true or false"),
        ("socket-int", ev_json(lambda e: holder(e, socket=5)), r"holder\.socket is 5, not a path or null"),
        # A v1 line (its writer clamped the clock) going back; a v2 line's ts is its writer's own.
        ("ts-back", ev_json(lambda e: (_as_v1(e), e.__setitem__("ts", 1))[0]),
         r"ts 1 is not an integer at or after the event before"),
        ("actor-pid-true", ev_json(lambda e: e["actor"].__setitem__("pid", True)), r"actor is not"),
        ("actor-boot-int", ev_json(lambda e: e["actor"].__setitem__("boot", 5)), r"actor is not"),
        ("actor-no-pid", ev_json(lambda e: (e["actor"].pop("pid"), None)[1]), r"actor is not"),
        ("name-live-twice", ev_json(lambda e: holder(e, name="A")), r"holder 'A' granted while already live"),
        ("registered-with-parent", ev_json(lambda e: holder(e, parent="A")),
         r"holder\.parent of a registered event is 'A', not null"),
        ("delegated-dead-parent", ev_json(delegated_from("B")),
         r"delegation from 'B', which is not live"),
        ("released-unknown", ev_json(other("released", name="ghost", reparented=[])),
         r"removal of 'ghost', which is not live"),
        ("released-reparent-mismatch", ev_json(other("released", name="A", reparented=[])),
         r"recorded re-parenting \[\] differs"),
        ("reclaimed-bad-reason", ev_json(other("reclaimed", name="C", reason="Bored!", reparented=[])),
         r"reason is 'Bored!', not one of"),
        # A value shaped as a newer scopeledger's may be (NewerFormat, below).
        ("reclaimed-newer-reason", ev_json(other("reclaimed", name="C", reason="bored", reparented=[])),
         r"unknown reclaim reason 'bored'"),
        ("attached-unknown", ev_json(other("attached", name="ghost", process={"host": None, "boot": "b", "pid": 1,
                                                                               "ticks": None, "pidns": None})),
         r"attach to 'ghost', which is not live"),
        ("refused-no-key", ev_json(other("refused")), r"key is None, not a string"),
        ("refused-request-null", ev_json(other("refused", key="k", error="duplicate", message="m", request=None,
                                               rule=None, chain=[])), r"request is None, not an object"),
        ("refused-error-unknown", ev_json(other("refused", key="k", error="non-sense", message="m",
                                                request={"name": "x", "parent": None, "rules": []},
                                                rule=None, chain=[])), r"error is 'non-sense', not one of"),
        ("refused-newer-error", ev_json(other("refused", key="k", error="nonsense", message="m",
                                              request={"name": "x", "parent": None, "rules": []},
                                              rule=None, chain=[])), r"unknown kind of refusal 'nonsense'"),
        ("refused-chain-int", ev_json(other("refused", key="k", error="duplicate", message="m",
                                            request={"name": "x", "parent": None, "rules": []},
                                            rule=None, chain=5)), r"chain is 5, not a list"),
        ("released-name-list", ev_json(other("released", name=["A"], reparented=[])),
         r"name is \['A'\], not a holder name"),
        # The format is strict: a key its version does not have (issue 13 item 16).
        ("key-extra-top", ev_json(setk("extra", 1)), r"unknown key 'extra' in a registered event"),
        ("key-extra-holder", ev_json(lambda e: holder(e, extra=1)), r"unknown key 'extra' in holder"),
        ("key-extra-actor", ev_json(lambda e: e["actor"].__setitem__("extra", 1)), r"unknown key 'extra' in actor"),
        ("key-extra-process", ev_json(lambda e: e["holder"]["process"].__setitem__("extra", 1)),
         r"unknown key 'extra' in holder\.process"),
        ("key-v1-extra-holder", ev_json(lambda e: (_as_v1(e), holder(e, extra=1))[0]),
         r"unknown key 'extra' in holder \(format version 1"),
    ]
    # A line otherwise sound with what this version does not know: NewerFormat (not damage).
    newer = {"version-newer", "type-unknown", "key-extra-top", "key-extra-holder", "key-extra-actor",
             "key-extra-process", "key-v1-extra-holder", "reclaimed-newer-reason", "refused-newer-error"}
    cases = [Case(f"log-last-{i}", L, NewerFormat if i in newer else CorruptLedger, m, (fn, "last"))
             for i, fn, m in raw]
    # The same inputs in the middle of the log (replacing line 3).
    middle = {"not-json", "json-array", "invalid-utf8", "seq-string", "version-newer", "type-unknown",
              "actor-string", "seq-gap", "broken-hash", "name-live-twice", "released-unknown",
              "empty-line", "rule-relative", "name-int", "ts-back", "actor-pid-true", "refused-request-null",
              "key-extra-top", "key-extra-holder"}
    # In the middle a line put in place of line 3 is not what line 4 chains to: damage, even
    # when it reads as a newer format's (a bit flip can make one: every reader's rule,
    # _events.newer_damage); the message still says what it did not know.
    altered = r"line altered after it was written: the line after does not chain to it"
    cases += [Case(f"log-middle-{i}", L, CorruptLedger, altered if i in newer else m, (fn, "middle"))
              for i, fn, m in raw if i in middle]
    return cases


def _run_log(case: Case, path: str, work: str) -> str:
    from scopeledger import CorruptLedger, Ledger, ScopeRule, verify

    build, where = case.data
    open_before = Ledger.open(path)  # a ledger already open when the line appears
    data = log_bytes(path)
    lines = data.split(b"\n")[:-1]
    scratch = os.path.join(work, "scratch")
    shutil.copytree(path, scratch)
    with Ledger.open(scratch) as s:
        s.register("D", [ScopeRule(f"{ROOT}/d", "write")])
    nxt_line = log_bytes(scratch)[len(data):].rstrip(b"\n")
    shutil.rmtree(scratch)
    nxt = orjson.loads(nxt_line)
    if where == "last":
        bad = build(nxt, line_hash(lines[-1]))
        damaged = data + bad + b"\n"
        lineno = len(lines) + 1
    else:
        lineno = 3
        bad = build(dict(nxt, seq=3), line_hash(lines[1]))
        damaged = b"\n".join(lines[:2] + [bad] + lines[3:]) + b"\n"
    fd = os.open(os.path.join(path, "events.jsonl"), os.O_WRONLY | os.O_TRUNC)
    os.write(fd, damaged)
    os.close(fd)
    if where == "middle":
        # Opening trusts the newest snapshot whose own line checks out and
        # folds only what follows it: a same-length edit before it (say a
        # 4-digit pid made `true`) is verify's to find, not open's. Without
        # the snapshots, open folds line 3 and must refuse it.
        snaps = os.path.join(path, "snapshots")
        for name in os.listdir(snaps):
            os.unlink(os.path.join(snaps, name))

    msgs = []
    try:
        Ledger.open(path).close()
    except CorruptLedger as exc:
        msgs.append(str(exc))
        assert type(exc) is case.expect, f"{case.id}: {type(exc).__name__}, expected {case.expect.__name__}"
        assert exc.line == lineno, f"{case.id}: names line {exc.line}, expected {lineno}: {exc}"
    else:
        raise AssertionError(f"{case.id}: Ledger.open accepted the log")
    if where == "last":
        try:
            open_before.register("E", [ScopeRule(f"{ROOT}/e", "write")])
        except CorruptLedger as exc:
            msgs.append(str(exc))
        else:
            raise AssertionError(f"{case.id}: a mutation went ahead past a corrupt line")
    open_before.close()
    rep = verify(path)
    assert not rep.ok, f"{case.id}: verify passed"
    first = rep.problems[0]
    assert first.line in (lineno, lineno - 1), f"{case.id}: verify names {first}"
    for m in msgs:
        assert re.search(case.match, m), f"{case.id}: {m!r} lacks {case.match!r}"
        assert m.startswith("corrupt ledger: " if case.expect is CorruptLedger else "newer format: "), m
        assert "events.jsonl line" in m, m
        assert "\n" not in m
    assert log_bytes(path) == damaged, f"{case.id}: the log was changed"
    return msgs[0]


# -- snapshots --------------------------------------------------------------------------

SNAP = "snap-0000000000000004.json"


def _resum(header: dict, body: bytes) -> bytes:
    import hashlib
    header = dict(header, checksum=hashlib.blake2b(body, digest_size=16).hexdigest())
    return orjson.dumps(header) + b"\n" + body + b"\n"


def _snapshot_cases() -> list[Case]:
    def split(d: bytes) -> tuple[dict, bytes]:
        h, body = d.split(b"\n", 1)
        return orjson.loads(h), body[:-1]

    def header_edit(**kw: Any) -> Callable[[bytes], bytes]:
        def f(d: bytes) -> bytes:
            h, body = split(d)
            h.update(kw)
            return orjson.dumps(h) + b"\n" + body + b"\n"
        return f

    def body_edit(fn: Callable[[dict], None]) -> Callable[[bytes], bytes]:
        def f(d: bytes) -> bytes:
            h, body = split(d)
            b = orjson.loads(body)
            fn(b)
            return _resum(h, orjson.dumps(b))
        return f

    S = "snapshot"
    raw: list[tuple[str, Any, str]] = [
        ("empty", lambda d: b"", r"truncated"),
        ("truncated-header", lambda d: d[:10], r"truncated"),
        ("header-only", lambda d: d.split(b"\n")[0] + b"\n", r"checksum|truncated"),
        ("truncated-body", lambda d: d[: len(d) - 40], r"truncated body"),
        ("no-final-newline", lambda d: d[:-1], r"truncated body"),
        ("wrong-checksum", lambda d: d.replace(b'"A1"', b'"Z1"'), r"checksum does not match"),
        ("checksum-mangled", header_edit(checksum="0" * 32), r"checksum does not match"),
        ("header-not-json", lambda d: b"{not json\n" + d.split(b"\n", 1)[1], r"header is not JSON"),
        ("header-array", lambda d: b"[4]\n" + d.split(b"\n", 1)[1], r"header is not an object"),
        ("older-format", header_edit(format=0), rf"format 0, this scopeledger reads {SNAPSHOT_FORMAT}"),
        ("newer-format", header_edit(format=SNAPSHOT_FORMAT + 1),
         rf"format {SNAPSHOT_FORMAT + 1}, this scopeledger reads {SNAPSHOT_FORMAT}"),
        ("wrong-seq", header_edit(seq=5), r"header says seq 5"),
        ("seq-string", header_edit(seq="four"), r"lacks a field or has a wrong type"),
        ("offset-missing", lambda d: _drop_header_key(d, "offset"), r"lacks a field"),
        ("body-seq-differs", body_edit(lambda b: b.__setitem__("seq", 3)), r"body's seq/hash differ"),
        ("last-hash-elsewhere", lambda d: _both_hash(d, "e" * 32), r"does not match the log"),
        ("offset-past-end", header_edit(offset=10**15), r"does not match the log"),
        ("line-start-negative", header_edit(line_start=-5), r"does not match the log"),
        ("line-start-after-offset", header_edit(line_start=10**15), r"does not match the log"),
        ("body-holders-malformed", body_edit(lambda b: b.__setitem__("holders", [{"name": "x"}])),
         r"body does not parse"),
        ("body-not-json", lambda d: _resum(split(d)[0], b"{nope"), r"body does not parse"),
        ("body-array", lambda d: _resum(split(d)[0], b"[]"), r"body does not parse"),
        ("a-directory", "dir", r"cannot read"),
        ("a-symlink", "symlink", r"cannot read"),
        ("a-fifo", "fifo", r"cannot read|not a regular file"),
        ("hard-linked", "hardlink", r"cannot read"),
    ]
    return [Case(f"snapshot-{i}", S, "skipped", m, fn) for i, fn, m in raw]


def _drop_header_key(d: bytes, key: str) -> bytes:
    h, rest = d.split(b"\n", 1)
    hd = orjson.loads(h)
    hd.pop(key)
    return orjson.dumps(hd) + b"\n" + rest


def _both_hash(d: bytes, value: str) -> bytes:
    h, body = d.split(b"\n", 1)
    hd = orjson.loads(h)
    b = orjson.loads(body[:-1])
    hd["last_hash"] = b["last_hash"] = value
    return _resum(hd, orjson.dumps(b))


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _run_snapshot(case: Case, path: str, work: str) -> str:
    from scopeledger import Ledger, verify

    snap = os.path.join(path, "snapshots", SNAP)
    victim = os.path.join(work, "victim")
    with open(victim, "wb") as f:
        f.write(b"precious\n")
    os.chmod(victim, 0o644)
    data = open(snap, "rb").read()
    os.unlink(snap)
    if case.data == "dir":
        os.mkdir(snap, 0o700)
    elif case.data == "symlink":
        os.symlink(victim, snap)
    elif case.data == "fifo":
        os.mkfifo(snap, 0o600)
    elif case.data == "hardlink":
        os.link(victim, snap)
        os.chmod(victim, 0o600)
    else:
        fd = os.open(snap, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, case.data(data))
        os.close(fd)
    before = log_bytes(path)
    expected = LogChecker()
    expected.feed(before)
    cap = _Capture()
    logger = logging.getLogger("scopeledger")
    logger.addHandler(cap)
    level = logger.level
    logger.setLevel(logging.WARNING)
    old = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(10)
    try:
        with Ledger.open(path) as led:
            assert led.stats.snapshots_skipped == [SNAP], f"{case.id}: {led.stats.snapshots_skipped}"
            assert led.stats.snapshot_seq == 2, f"{case.id}: fell back to seq {led.stats.snapshot_seq}"
            assert library_view(led.holders()) == expected.model.snapshot(), f"{case.id}: wrong state"
            assert library_view(led.state_at(seq=4).holders.values()) == _model_at(before, 4)
            rep = led.verify()
        rep2 = verify(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        logger.removeHandler(cap)
        logger.setLevel(level)
    msgs = [m for m in cap.messages if SNAP in m]
    assert msgs, f"{case.id}: no warning names the snapshot: {cap.messages}"
    assert all(m.startswith("skipping snapshot: ") and "\n" not in m for m in msgs), msgs
    assert re.search(case.match, msgs[0]), f"{case.id}: {msgs[0]!r} lacks {case.match!r}"
    for r in (rep, rep2):
        assert not r.ok and SNAP in r.problems[0].file, f"{case.id}: verify says {r}"
    assert log_bytes(path) == before, f"{case.id}: the log changed"
    assert open(victim, "rb").read() == b"precious\n"
    if case.data == "symlink":
        assert stat.S_IMODE(os.stat(victim).st_mode) == 0o644
    return msgs[0]


def _hang(*_: Any) -> None:
    raise AssertionError("hung (10 s) opening a ledger with this snapshot")


def _model_at(data: bytes, seq: int) -> dict:
    c = LogChecker()
    for line in data.split(b"\n")[:seq]:
        c.line(line)
    return c.model.snapshot()


# -- the command line ------------------------------------------------------------------

def _cli_cases() -> list[Case]:
    C = "cli"
    long = "/" + "a" * 5000
    raw: list[tuple[str, list[str], str]] = [
        ("unknown-command", ["frobnicate"], r"no such command"),
        ("empty-rule", ["check", "--write", ""], r"invalid rule '': empty"),
        ("star-inside", ["check", "--write", "/a/*/b"], r"only allowed as a final"),
        ("escape-root", ["check", "--write", "../../x", "--root", "/r"], r"climbs out of its root /r"),
        ("huge-path", ["check", "--write", long], r"longer than 4095 bytes"),
        ("bad-name", ["check", "--name", "bad/../name", "--write", "/x"], r"invalid holder name 'bad/\.\./name'"),
        ("bad-manifest", ["check", "--manifest", "{manifest}"], r"invalid manifest .*manifest\.holder\.name"),
        ("binary-manifest", ["check", "--manifest", "{binary}"], r"invalid manifest .*not TOML"),
        ("negative-timeout", ["--lock-timeout", "-1", "show"], r"--lock-timeout"),
        ("bad-colour", ["--color", "purple", "show"], r"--color"),
        ("bad-point", ["diff", "abc", "def"], r"invalid point 'abc'"),
        ("bad-at", ["show", "--at", "yesterday-ish"], r"invalid point"),
        ("missing-argument", ["history"], r"missing argument 'NAME'"),
        ("missing-command", ["run"], r"missing argument"),
        ("unknown-option", ["replay", "--since", "-5"], r"no such option"),
        ("option-without-value", ["check", "--read", "/x", "--write"], r"requires an argument"),
        ("release-bad-name", ["release", "no//such"], r"invalid holder name"),
    ]
    return [Case(f"cli-{i}", C, 2, m, args) for i, args, m in raw]


def _run_cli(case: Case, path: str, work: str) -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "ledger")
    if not os.path.exists(exe):
        raise FileNotFoundError(exe)
    mpath = os.path.join(work, "bad.toml")
    with open(mpath, "w") as f:
        f.write("[holder]\nname = 5\n[scope]\nwrite = ['a']\n")
    before = log_bytes(path)
    binary = os.path.join(work, "binary.toml")
    with open(binary, "wb") as f:
        f.write(b"\xff\xfe\x00garbage")
    args = [a.replace("{manifest}", mpath).replace("{binary}", binary) for a in case.data]
    p = subprocess.run([exe, "--ledger", path, *args], capture_output=True, timeout=60,
                       env=dict(os.environ, NO_COLOR="1", COLUMNS="200"))
    err = p.stderr.decode()
    assert p.returncode == case.expect, f"{case.id}: exit {p.returncode}, stderr {err!r}"
    assert "Traceback" not in err and "Traceback" not in p.stdout.decode(), f"{case.id}: {err}"
    lines = err.strip().splitlines()
    assert lines, f"{case.id}: nothing on stderr"
    if lines[0].startswith("error: "):
        assert len(lines) == 1, f"{case.id}: error is not one line: {err!r}"
        msg = lines[0]
    else:
        assert any(line.startswith("Usage: ") for line in lines), f"{case.id}: {err!r}"
        msg = lines[-1]
    assert re.search(case.match, err), f"{case.id}: {err!r} lacks {case.match!r}"
    assert log_bytes(path) == before, f"{case.id}: the log changed"
    return msg


# -- running ---------------------------------------------------------------------------------

def cases() -> list[Case]:
    return _api_cases() + _manifest_cases() + _log_cases() + _snapshot_cases() + _cli_cases()


def run_case(case: Case, work: str) -> str:
    """Run one case in the empty directory ``work``; raises AssertionError on
    a violation; returns the message met."""
    from scopeledger import verify

    path = os.path.join(work, "ledger")
    base_ledger(path)
    before = log_bytes(path)
    if case.category in ("path", "rule", "name", "process"):
        msg = _run_api(case, path)
    elif case.category == "manifest":
        msg = _run_manifest(case, path, work)
    elif case.category == "log":
        return _run_log(case, path, work)
    elif case.category == "snapshot":
        return _run_snapshot(case, path, work)
    elif case.category == "cli":
        msg = _run_cli(case, path, work)
    else:  # pragma: no cover
        raise ValueError(case.category)
    assert log_bytes(path) == before, f"{case.id}: the log changed"
    rep = verify(path)
    assert rep.ok, f"{case.id}: {rep}"
    return msg


def run_all(work: str, only: str | None = None) -> dict[str, Any]:
    import tempfile

    fig: dict[str, Any] = {"inputs": 0, "by_category": {}, "failures": []}
    for case in cases():
        if only and case.category != only:
            continue
        d = tempfile.mkdtemp(dir=work)
        try:
            run_case(case, d)
        except Exception as exc:  # noqa: BLE001 - collected and reported
            fig["failures"].append(f"{case.id}: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(d, ignore_errors=True)
        fig["inputs"] += 1
        fig["by_category"][case.category] = fig["by_category"].get(case.category, 0) + 1
    return fig


def main(argv: list[str] | None = None) -> int:
    import tempfile

    work = tempfile.mkdtemp(prefix="sl-corpus-")
    try:
        fig = run_all(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(orjson.dumps(fig).decode())
    return 1 if fig["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
