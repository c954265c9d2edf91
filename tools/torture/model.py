"""An independent reference model of the ledger's semantics, and a checker
that folds a log with it.

Written from REQUIREMENTS.md, not from the library: rules are plain
``(path, perm, recursive)`` tuples, coverage is defined on paths, overlap
is "some path is covered by both". Nothing here imports scopeledger's fold
or rule code, so a bug there cannot hide behind the same bug here.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import orjson

Rule = tuple  # (path: str, perm: "read"|"write", recursive: bool)

GENESIS = "0" * 32
RECLAIM_REASONS = {"process_gone", "zombie", "pid_reused", "earlier_boot"}
# Component names no real path can contain (NUL): stand for "any name".
_W1, _W2 = "\x00w1", "\x00w2"


def parts(path: str) -> tuple:
    return tuple(p for p in path.split("/") if p)


def covers_path(rule: Rule, p: tuple) -> bool:
    """Does ``rule`` cover the path with components ``p``?"""
    rp = parts(rule[0])
    if p[: len(rp)] != rp:
        return False
    return rule[2] or len(p) - len(rp) <= 1


def overlaps(a: Rule, b: Rule) -> bool:
    """Some path is covered by both. The shallowest such path is one of the
    two rules' own paths, so it is enough to test those."""
    return covers_path(a, parts(b[0])) or covers_path(b, parts(a[0]))


def covers(c: Rule, i: Rule) -> bool:
    """``c`` covers everything ``i`` covers, with at least its permission.
    ``i``'s coverage is represented by its path, a child and (recursive) a
    grandchild with names no other rule can mention."""
    if c[1] == "read" and i[1] == "write":
        return False
    p = parts(i[0])
    wit = [p, p + (_W1,)] + ([p + (_W1, _W2)] if i[2] else [])
    return all(covers_path(c, w) for w in wit)


def as_rule(r: Any) -> Rule:
    """A ScopeRule, a ``[path, perm, rec]`` list or a tuple -> Rule tuple."""
    if isinstance(r, (list, tuple)):
        return (r[0], r[1] if isinstance(r[1], str) else r[1].value, bool(r[2]))
    return (r.path, r.permission.value, r.recursive)


class LostAcknowledged(AssertionError):
    """Acknowledged operations the log does not have: ``lost`` (one line
    each); the message says how many and lists them."""

    def __init__(self, lost: list[str]) -> None:
        self.lost = list(lost)
        super().__init__(f"{len(lost)} acknowledged operation(s) lost:\n" + "\n".join(lost[:20]))


class ModelError(AssertionError):
    """The library did something the reference model says it must not."""


class Model:
    """Live holders: name -> dict(rules, parent, token, pid)."""

    def __init__(self) -> None:
        self.holders: dict[str, dict[str, Any]] = {}

    # -- structure -----------------------------------------------------------
    def line(self, name: str | None) -> list[str]:
        """``name`` and its ancestors (empty for None)."""
        out = []
        while name is not None:
            out.append(name)
            name = self.holders[name]["parent"]
        return out

    def ancestors(self, name: str) -> list[str]:
        return self.line(name)[1:]

    def children(self, name: str) -> list[str]:
        return [n for n, h in self.holders.items() if h["parent"] == name]

    # -- semantics -----------------------------------------------------------
    def problems(self, name: str, rules: Iterable[Rule], parent: str | None) -> dict[str, set]:
        """Every reason a request would be refused: kind -> holders in the way.

        kinds: duplicate, unknown_parent, delegation (outside the parent's
        rules: no holder; sibling line: the sibling's subtree), conflict.
        """
        rules = [as_rule(r) for r in rules]
        out: dict[str, set] = {}
        if name in self.holders:
            out.setdefault("duplicate", set()).add(name)
        if parent is not None and parent not in self.holders:
            out.setdefault("unknown_parent", set())
            return out
        line = set(self.line(parent))
        if parent is not None:
            prules = self.holders[parent]["rules"]
            for r in rules:
                if not any(covers(p, r) for p in prules):
                    out.setdefault("delegation", set())
        for r in rules:
            if r[1] != "write":
                continue
            for h, info in self.holders.items():
                if h in line or h == name and "duplicate" in out:
                    continue
                if any(o[1] == "write" and overlaps(o, r) for o in info["rules"]):
                    kind = "delegation" if parent is not None and parent in self.ancestors(h) else "conflict"
                    out.setdefault(kind, set()).add(h)
        return out

    def grant(self, name: str, rules: Iterable[Rule], parent: str | None, token: int,
              pid: Any = None) -> None:
        if name in self.holders:
            raise ModelError(f"grant of live name {name!r}")
        if parent is not None and parent not in self.holders:
            raise ModelError(f"grant under dead parent {parent!r}")
        self.holders[name] = {"rules": tuple(as_rule(r) for r in rules), "parent": parent,
                              "token": token, "pid": pid}

    def remove(self, name: str) -> list[tuple[str, str | None]]:
        """Release/reclaim: children move to the parent. Returns the plan."""
        if name not in self.holders:
            raise ModelError(f"removal of {name!r}, not live")
        parent = self.holders[name]["parent"]
        plan = []
        for c in self.children(name):
            self.holders[c]["parent"] = parent
            plan.append((c, parent))
        del self.holders[name]
        return plan

    # -- invariants ----------------------------------------------------------
    def check_holder(self, name: str) -> None:
        """``name`` lies inside its parent and overlaps no write of a live
        holder outside its line of delegation."""
        h = self.holders[name]
        if h["parent"] is not None:
            prules = self.holders[h["parent"]]["rules"]
            for r in h["rules"]:
                if not any(covers(p, r) for p in prules):
                    raise ModelError(f"{name!r}'s rule {r} is not inside its parent {h['parent']!r}")
        mine = [r for r in h["rules"] if r[1] == "write"]
        if not mine:
            return
        line = set(self.line(name))
        for other, info in self.holders.items():
            if other in line or name in self.ancestors(other):
                continue
            for o in info["rules"]:
                if o[1] == "write" and any(overlaps(o, r) for r in mine):
                    raise ModelError(f"live holders {name!r} and {other!r} (outside one line of "
                                     f"delegation) both write {o} / {mine}")

    def check_all(self) -> None:
        for n in self.holders:
            self.check_holder(n)

    def snapshot(self) -> dict[str, tuple]:
        """Comparable view: name -> (rules as a sorted tuple, parent, token)."""
        return {n: (tuple(sorted(h["rules"])), h["parent"], h["token"]) for n, h in self.holders.items()}


def library_view(holders: Iterable[Any]) -> dict[str, tuple]:
    """The same view of the library's ``Allocation`` list."""
    return {a.name: (tuple(sorted(as_rule(r) for r in a.rules)), a.parent, a.token) for a in holders}


def line_hash(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=16).hexdigest()


class LogChecker:
    """Folds a log's bytes with the reference model, checking at every seq:
    gapless seqs from 1, the hash chain, non-decreasing ts, every grant
    grantable (the reference says so), every removal's recorded re-parenting
    equal to the model's, and the two invariants for every holder the event
    touched (all holders every ``full_every`` events and at the end)."""

    def __init__(self, full_every: int = 500) -> None:
        self.model = Model()
        self.seq = 0
        self.prev = GENESIS
        self.ts = 0
        self.full_every = full_every
        self.counts: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []

    def feed(self, data: bytes, keep: bool = False) -> None:
        end = data.rfind(b"\n")
        for line in data[: end + 1].split(b"\n")[:-1]:
            self.line(line, keep)

    def line(self, line: bytes, keep: bool = False) -> None:
        ev = orjson.loads(line)
        seq = ev["seq"]
        where = f"seq {seq}"
        if seq != self.seq + 1:
            raise ModelError(f"{where}: seq gap after {self.seq}")
        if ev["prev"] != self.prev:
            raise ModelError(f"{where}: hash chain broken")
        if ev.get("v") == 1 and ev["ts"] < self.ts:  # v2: the writer's own clock, not clamped
            raise ModelError(f"{where}: ts of a v1 line went back")
        m = self.model
        kind = ev["type"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        touched: list[str] = []
        if kind in ("registered", "delegated"):
            h = ev["holder"]
            if (kind == "registered") != (h["parent"] is None):
                raise ModelError(f"{where}: {kind} with parent {h['parent']!r}")
            probs = m.problems(h["name"], h["rules"], h["parent"])
            if probs:
                raise ModelError(f"{where}: {kind} {h['name']!r} granted although {probs}")
            m.grant(h["name"], h["rules"], h["parent"], seq, tuple(h["process"].values()))
            touched = [h["name"]]
        elif kind in ("released", "reclaimed"):
            if kind == "reclaimed" and ev["reason"] not in RECLAIM_REASONS:
                raise ModelError(f"{where}: reason {ev['reason']!r}")
            plan = m.remove(ev["name"])
            if [list(p) for p in plan] != [list(p) for p in ev["reparented"]] and \
                    sorted(map(tuple, ev["reparented"])) != sorted(plan):
                raise ModelError(f"{where}: recorded re-parenting {ev['reparented']} != model {plan}")
            touched = [c for c, _ in plan]
        elif kind == "attached":
            if ev["name"] not in m.holders:
                raise ModelError(f"{where}: attach to {ev['name']!r}, not live")
            m.holders[ev["name"]]["pid"] = tuple(ev["process"].values())
        elif kind == "renewed":
            if ev["name"] not in m.holders:
                raise ModelError(f"{where}: renewal of {ev['name']!r}, not live")
        elif kind != "refused":
            raise ModelError(f"{where}: unknown type {kind!r}")
        for n in touched:
            m.check_holder(n)
        self.seq, self.prev, self.ts = seq, line_hash(line), max(self.ts, ev["ts"])
        if self.full_every and seq % self.full_every == 0:
            m.check_all()
        if keep:
            self.events.append(ev)

    def finish(self) -> None:
        self.model.check_all()
