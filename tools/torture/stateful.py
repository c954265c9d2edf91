"""Hypothesis stateful testing of the Ledger against the reference model.

Holders are bound to made-up process identities; a probe answers from a
table the machine controls (alive, gone, zombie, pid reused, earlier boot,
unknown, or a probe that raises). After every step the machine reads the
events the step appended and checks them against the model:

* a reclaim (hot path or sweep) only ever removes a holder the probe calls
  dead, with that reason, re-parenting as the model says;
* a grant happens iff the model finds nothing in the way once those
  reclaims are applied; a refusal names a real, live obstacle: the
  duplicate, or an owner chain top-down to the deepest overlapping writer,
  or the sibling in the way, or a rule outside the parent's scope;
* ``reclaim_stale`` removes exactly the dead holders;
* the library's holders equal the model's, and both invariants hold;
* reopening (snapshots) and time travel give the model's past states;
* the state the library keeps in memory (its own events applied from the
  objects in hand, others' folded from the log) equals a fold of the log
  from scratch, field for field.

Some grants hold a lease (``ttl``; bound to the process too, or the lease
alone) on a boot-time clock the machine moves: a holder is dead when its
process is (unless it is bound to the lease alone) or when its lease has
gone unrenewed for ttl + max(1 s, ttl/10); renewals of live, expired,
unknown and wrongly named grants are checked likewise.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from scopeledger import (
    DelegationError,
    DuplicateHolder,
    Ledger,
    LeaseExpired,
    Liveness,
    ProcessIdentity,
    Refused,
    ScopeConflict,
    UnknownHolder,
)

from .model import Model, as_rule, covers, library_view, overlaps

BOOT = "torture-boot"
# "a-" and "a0" catch string-prefix mistakes; "é" non-ASCII.
COMPONENTS = ["a", "b", "a-", "a0", "é"]
NAMES = [f"h{i}" for i in range(7)]

paths = st.one_of(
    st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p)),
    st.just("/"))
rules_st = st.tuples(paths, st.sampled_from(["read", "write", "write"]), st.booleans())
DEATHS = [Liveness.GONE, Liveness.ZOMBIE, Liveness.PID_REUSED, Liveness.EARLIER_BOOT]


def fast_tmp() -> str | None:
    """A tmpfs for scratch ledgers when there is one (snapshots fsync)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="sl-stateful-", dir=fast_tmp())
        self.answers: dict[int, Any] = {}
        self.next_pid = 1000
        self.model = Model()
        self.past: dict[int, dict[str, tuple]] = {0: {}}
        self.now = 10**12  # the boot-time clock, ns
        self.leases: dict[str, list[Any]] = {}  # name -> [ttl_ns, boot_ns of its last renewal, lease_only]
        self.led = self._open()
        self.seq = 0

    # -- plumbing ------------------------------------------------------------
    def _probe(self, ident: ProcessIdentity) -> Any:
        ans = self.answers.get(ident.pid, Liveness.ALIVE)
        if ans == "raise":
            raise RuntimeError("probe failed")
        return ans

    def _open(self) -> Ledger:
        led = Ledger.open(self.dir, probe=self._probe, snapshot_every=4, resolve_symlinks=False,
                          boottime=lambda: self.now)
        led._identity = lambda pid: ProcessIdentity(pid=pid, boot=BOOT, ticks=1000 + pid)  # type: ignore[method-assign]
        return led

    def _pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def _verdict(self, name: str) -> Any:
        """What the model says of holder ``name``: the reclaim reason
        (a dead :class:`Liveness`) or what the probe answers."""
        ans = self.answers.get(self.model.holders[name]["pid"], Liveness.ALIVE)
        lease = self.leases.get(name)
        if lease is not None and lease[2]:
            ans = Liveness.ALIVE  # bound to the lease alone: the process is not asked
        if isinstance(ans, Liveness) and ans.dead:
            return ans
        if lease is not None and self.now - lease[1] > lease[0] + max(10**9, lease[0] // 10):
            return Liveness.LEASE_EXPIRED
        return ans

    def _dead(self, name: str) -> bool:
        ans = self._verdict(name)
        return isinstance(ans, Liveness) and ans.dead

    def _new_events(self) -> list[Any]:
        evs = list(self.led.events(since=self.seq + 1))
        if evs:
            assert [e.seq for e in evs] == list(range(self.seq + 1, self.seq + 1 + len(evs)))
            self.seq = evs[-1].seq
        return evs

    def _apply_removals(self, evs: list[Any], allowed: set[str] | None = None) -> list[Any]:
        """Apply the reclaims/releases among ``evs`` to the model, checking
        each; returns the other events."""
        rest = []
        for e in evs:
            if e.type == "reclaimed":
                name = e.data["name"]
                assert name in self.model.holders, f"reclaimed {name!r}, not live in the model"
                ans = self._verdict(name)
                assert isinstance(ans, Liveness) and ans.dead, f"reclaimed live holder {name!r} ({ans})"
                assert e.data["reason"] == ans.value, (e.data["reason"], ans)
                if allowed is not None:
                    assert name in allowed, f"reclaimed {name!r}, which was not in the way"
                plan = self.model.remove(name)
                self.leases.pop(name, None)
                assert sorted(map(tuple, e.data["reparented"])) == sorted(plan)
            else:
                rest.append(e)
        return rest

    def _after(self) -> None:
        assert library_view(self.led.holders()) == self.model.snapshot()
        self.model.check_all()
        self.past[self.seq] = self.model.snapshot()

    def _check_refusal(self, err: Exception, name: str, rules: list, parent: str | None) -> None:
        probs = self.model.problems(name, rules, parent)
        assert probs, f"refused {type(err).__name__} ({err}) but the model sees nothing in the way"
        if isinstance(err, DuplicateHolder):
            # The holder of the name is live; a dead one is reclaimed on the
            # way, unless it is the requester's own parent.
            assert "duplicate" in probs and (not self._dead(name) or name == parent)
        elif isinstance(err, ScopeConflict):
            assert "conflict" in probs, (err, probs)
            chain = err.chain
            assert as_rule(err.rule) in [as_rule(r) for r in rules] and err.rule.permission.value == "write"
            assert self.model.holders[chain[0]]["parent"] is None, chain
            for up, down in itertools.pairwise(chain):
                assert self.model.holders[down]["parent"] == up, chain
            for n in chain:
                assert not self._dead(n), f"dead {n!r} left in the way: {chain}"
                assert any(r[1] == "write" and overlaps(r, as_rule(err.rule))
                           for r in self.model.holders[n]["rules"]), (n, chain)
            for c in self.model.children(chain[-1]):
                assert not any(r[1] == "write" and overlaps(r, as_rule(err.rule))
                               for r in self.model.holders[c]["rules"]), f"not the deepest: {c} {chain}"
            assert err.owner == chain[-1]
        elif isinstance(err, DelegationError):
            assert "delegation" in probs, (err, probs)
            if err.sibling is not None:
                assert self.model.holders[err.sibling]["parent"] == parent
                for n in err.chain[err.chain.index(err.sibling):]:
                    assert not self._dead(n)
            else:
                prules = self.model.holders[parent]["rules"]
                assert not any(covers(p, as_rule(err.rule)) for p in prules)
        else:  # pragma: no cover
            raise AssertionError(f"unexpected refusal {err!r}")

    def _grant(self, name: str, rules: list, parent: str | None, reserved: bool = False,
               lease: tuple[float, bool] | None = None) -> None:
        requested, rules = rules, list(dict.fromkeys(rules))  # a rule given twice is held once
        pid = self._pid()
        before = self.model.snapshot()
        ttl, only = lease if lease is not None else (None, False)
        try:
            if parent is None:
                alloc = self.led.register(name, requested, pid, ttl=ttl, lease_only=only)
            else:
                alloc = self.led.delegate(parent, name, requested, pid, reserved=reserved, ttl=ttl, lease_only=only)
        except UnknownHolder as err:
            assert parent is not None and err.name == parent
            assert self._new_events() == []
            assert parent not in self.model.holders
            return
        except Refused as err:
            rest = self._apply_removals(self._new_events())
            assert [e.type for e in rest] in ([], ["refused"]), rest
            self._check_refusal(err, name, rules, parent)
            self._after()
            return
        rest = self._apply_removals(self._new_events())
        assert [e.type for e in rest] == ["registered" if parent is None else "delegated"]
        assert rest[0].seq == alloc.token
        probs = self.model.problems(name, rules, parent)
        assert not probs, f"granted {name!r} {rules} under {parent!r} despite {probs} (before: {before})"
        self.model.grant(name, rules, parent, alloc.token, pid)
        if ttl is not None:
            self.leases[name] = [round(ttl * 10**9), self.now, only]
            assert alloc.lease is not None and alloc.lease.boot_ns == self.now and alloc.lease.process is not only
        self._after()

    # -- rules ---------------------------------------------------------------
    @initialize(tops=st.lists(st.sampled_from(["a", "b", "a-"]), min_size=1, max_size=2, unique=True))
    def trees(self, tops: list) -> None:
        # Broad top-level writers, so that delegation trees grow.
        for i, c in enumerate(tops):
            self._grant(NAMES[i], [("/" + c, "write", True)], None)

    @rule(name=st.sampled_from(NAMES), rules=st.lists(rules_st, min_size=1, max_size=2))
    def register(self, name: str, rules: list) -> None:
        self._grant(name, rules, None)

    @rule(name=st.sampled_from(NAMES), rules=st.lists(rules_st, min_size=1, max_size=2),
          ttl=st.sampled_from([0.5, 2, 15]), only=st.booleans())
    def register_leased(self, name: str, rules: list, ttl: float, only: bool) -> None:
        self._grant(name, rules, None, lease=(ttl, only))

    @rule(seconds=st.sampled_from([0.5, 1, 2, 30]))
    def time_passes(self, seconds: float) -> None:
        self.now += round(seconds * 10**9)

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), wrong_token=st.booleans())
    def renew(self, data: Any, wrong_token: bool) -> None:
        name = data.draw(st.sampled_from(sorted(self.leases)))
        token = self.model.holders[name]["token"] + (1 if wrong_token else 0)
        expired = self._verdict(name) is Liveness.LEASE_EXPIRED or (
            self.now - self.leases[name][1] > self.leases[name][0] + max(10**9, self.leases[name][0] // 10))
        try:
            alloc = self.led.renew(name, token)
        except LeaseExpired:
            assert expired and not wrong_token
            assert self._apply_removals(self._new_events(), allowed={name}) == []
            assert name not in self.model.holders
            self._after()
            return
        except UnknownHolder:
            assert wrong_token
            assert self._new_events() == []
            return
        assert not wrong_token and not expired
        (ev,) = self._new_events()
        assert ev.type == "renewed" and ev.data["boot_ns"] == self.now and alloc.lease.boot_ns == self.now
        self.leases[name][1] = self.now
        self._after()

    @rule(data=st.data(), reserved=st.booleans())
    def delegate(self, data: Any, reserved: bool) -> None:
        live = sorted(self.model.holders)
        parent = data.draw(st.sampled_from(live + ["ghost"]) if live else st.just("ghost"))
        self._delegate_from(data, parent, reserved)

    @precondition(lambda self: any(h["parent"] for h in self.model.holders.values()))
    @rule(data=st.data())
    def delegate_deeper(self, data: Any) -> None:
        parent = data.draw(st.sampled_from(sorted(n for n, h in self.model.holders.items() if h["parent"])))
        self._delegate_from(data, parent, False)

    @precondition(lambda self: any(h["parent"] and self.model.children(n) for n, h in self.model.holders.items()))
    @rule(data=st.data())
    def release_middle(self, data: Any) -> None:
        name = data.draw(st.sampled_from(sorted(
            n for n, h in self.model.holders.items() if h["parent"] and self.model.children(n))))
        kids = self.led.release(name)
        (ev,) = self._new_events()
        plan = self.model.remove(name)
        self.leases.pop(name, None)
        assert ev.type == "released" and sorted(kids) == sorted(c for c, _ in plan)
        assert sorted(map(tuple, ev.data["reparented"])) == sorted(plan)
        self._after()

    def _delegate_from(self, data: Any, parent: str, reserved: bool) -> None:
        free = [n for n in NAMES if n not in self.model.holders]
        if free and data.draw(st.integers(0, 4)):
            name = data.draw(st.sampled_from(free))
        else:
            name = data.draw(st.sampled_from(NAMES))
        if parent in self.model.holders and data.draw(st.integers(0, 4)):
            # Usually inside one of the parent's rules (siblings then collide).
            prules = self.model.holders[parent]["rules"]
            rules = []
            for _ in range(data.draw(st.integers(1, 2))):
                path, perm, rec = data.draw(st.sampled_from(prules))
                if rec:
                    extra = data.draw(st.lists(st.sampled_from(COMPONENTS), max_size=2))
                    sub = path.rstrip("/") + "".join("/" + c for c in extra) if extra else path
                    sub_rec = data.draw(st.booleans())
                else:
                    sub, sub_rec = path, False
                rules.append((sub, data.draw(st.sampled_from([perm, perm, "read"])), sub_rec))
        else:
            rules = data.draw(st.lists(rules_st, min_size=1, max_size=2))
        self._grant(name, rules, parent, reserved)

    @rule(data=st.data(), wrong_token=st.booleans())
    def release(self, data: Any, wrong_token: bool) -> None:
        name = data.draw(st.sampled_from(sorted(self.model.holders) + ["ghost"]))
        token = None
        if name in self.model.holders:
            token = self.model.holders[name]["token"] + (1 if wrong_token else 0)
        try:
            kids = self.led.release(name, token=token)
        except UnknownHolder:
            assert name not in self.model.holders or wrong_token
            assert self._new_events() == []
            return
        assert not wrong_token and name in self.model.holders
        (ev,) = self._new_events()
        assert ev.type == "released" and ev.data["name"] == name
        plan = self.model.remove(name)
        self.leases.pop(name, None)
        assert sorted(kids) == sorted(c for c, _ in plan)
        assert sorted(map(tuple, ev.data["reparented"])) == sorted(plan)
        self._after()

    @precondition(lambda self: self.model.holders)
    @rule(data=st.data(), how=st.sampled_from(DEATHS + [Liveness.UNKNOWN, "raise", Liveness.ALIVE]))
    def set_liveness(self, data: Any, how: Any) -> None:
        name = data.draw(st.sampled_from(sorted(self.model.holders)))
        self.answers[self.model.holders[name]["pid"]] = how

    @rule()
    def reclaim_stale(self) -> None:
        dead = {n for n in self.model.holders if self._dead(n)}
        names = self.led.reclaim_stale()
        evs = self._new_events()
        assert self._apply_removals(evs) == []
        assert set(names) == dead, (names, dead)
        self._after()

    @precondition(lambda self: self.model.holders)
    @rule(data=st.data())
    def attach(self, data: Any) -> None:
        name = data.draw(st.sampled_from(sorted(self.model.holders)))
        pid = self._pid()
        alloc = self.led.attach(name, pid)
        (ev,) = self._new_events()
        assert ev.type == "attached" and alloc.pid == pid and not alloc.reserved
        self.model.holders[name]["pid"] = pid
        self._after()

    @rule()
    def reopen(self) -> None:
        self.led.close()
        self.led = self._open()
        assert self.led.seq == self.seq
        self._after()

    @rule(data=st.data())
    def time_travel(self, data: Any) -> None:
        seq = data.draw(st.sampled_from(sorted(self.past)))
        assert library_view(self.led.state_at(seq=seq).holders.values()) == self.past[seq]

    steps = 0  # rule applications in this interpreter (figures)

    @invariant()
    def memory_equals_the_fold_of_the_log(self) -> None:
        from scopeledger._events import decode, iter_lines, line_hash
        from scopeledger._fold import State, apply

        fresh = State()
        with open(os.path.join(self.dir, "events.jsonl"), "rb") as f:
            for line in iter_lines([f.read()]):
                apply(fresh, decode(line, "events.jsonl", None), line_hash(line))
        assert self.led.state().to_json() == fresh.to_json()

    @invariant()
    def verify_ok(self) -> None:
        LedgerMachine.steps += 1
        if self.seq % 7 == 0:
            rep = self.led.verify()
            assert rep.ok, str(rep)

    def teardown(self) -> None:
        try:
            rep = self.led.verify()
            assert rep.ok, str(rep)
        finally:
            self.led.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def run(max_examples: int, steps: int, seed: int | None = None) -> dict[str, int]:
    """Run the machine outside pytest (the long harness)."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    counter = {"examples": 0}

    class Counted(LedgerMachine):
        def __init__(self) -> None:
            counter["examples"] += 1
            super().__init__()

    s = settings(max_examples=max_examples, stateful_step_count=steps, deadline=None,
                 suppress_health_check=list(HealthCheck), database=None, derandomize=seed is not None)
    before = LedgerMachine.steps
    run_state_machine_as_test(Counted, settings=s)
    return {"examples": counter["examples"], "steps": LedgerMachine.steps - before}
