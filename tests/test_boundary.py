"""Every argument of every mutation is checked at the boundary, before the
lock is taken: a bad one raises a typed error naming it and records nothing,
so that no event the fold would refuse is ever written (a ``reserved="y"``
once made every later command fail with ``corrupt ledger``). Also the
options of ``Ledger.open``."""

import enum
import os
import re
import shutil
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from scopeledger import (
    DelegationError,
    DuplicateHolder,
    InvalidHolderName,
    InvalidArgument,
    InvalidLease,
    InvalidProcess,
    InvalidScope,
    Ledger,
    LedgerError,
    LockTimeout,
    ScopeConflict,
    ScopeRule,
    UnknownHolder,
    verify,
)
from helpers import Rd, W


def log_bytes(ledger_dir):
    with open(os.path.join(ledger_dir, "events.jsonl"), "rb") as f:
        return f.read()


def _dead_is_pid_1(ident):
    """The ledger's probe: the holder bound to pid 1 counts as gone, so that
    a reclaim (or a hot-path reclaim) has something to record."""
    return ident.pid != 1


def make_base(ledger_dir, root):
    """p (top, writes ROOT/t), r (p's reserved child, ROOT/t/r), q (reads
    ROOT/q, bound to pid 1: dead to the ledger's probe)."""
    led = Ledger.open(ledger_dir, probe=_dead_is_pid_1)
    led.register("p", [W(root + "/t")])
    led.delegate("p", "r", [W(root + "/t/r")], reserved=True)
    led.register("q", [Rd(root + "/q")], pid=1)
    led.close()


NAMES = ["", "a//b", "..", ".x", "a b ", "x" * 256, "a/../b", "/a", "a\tb", "é", "a\n",
         None, 3, 1.0, True, b"a", ["a"], object()]
RULES = [[], (), set(), "not rules", None, 5, True, b"/x", [None], [5], ["/x"], [("/x",)],
         [("rel", "write")], [("/x", "execute")], [("/x", "write", "yes")], [("/x", "write", 1)],
         [("/x", "write", None)], [("/x\x00y", "write")], [("/\udcff", "write")],
         [("/" + "a" * 256, "write")], [("/" + "ab/" * 1400, "write")], [object()], {"/x": "write"}]
PIDS = ["123", 1.0, float(os.getpid()), True, False, 0, -3, [1], b"1", 2**22 + 12345, 2**70, object()]
SOCKETS = [5, True, b"/s", "relative/sock", "", "/a\x00b", "/\udcff", ["/s"], object(),
           "/" + "s" * 4095, "/" + "é" * 2048]  # 4096 and 4097 bytes: longer than a path may be
RESERVED = ["y", 1, 0, None, [], "false", "True", 1.0]
TOKENS = [True, False, "1", 1.0, [], b"1"]
class _AsyncCall:
    async def __call__(self, *args):
        return True


async def _async_fn(*args):
    return True


#: A callback must be a plain callable taking what it is called with: not an ``async def`` (or an object whose
#: ``__call__`` is one: it would only make a coroutine), not one of the wrong arity.
NOT_PLAIN = [_async_fn, _AsyncCall(), lambda a, b, c: True, lambda *, k: True]
PROBES = [42, "probe", True, False, [], b"x", lambda: True, *NOT_PLAIN]
CALLBACK = r"must be None or a callable, not |must be a plain callable \(it is called|must take \d positional"
DRY_RUNS = ["no", 1, 0, None, [], "False"]
WAITS = [None, True, False, "1", -1, float("nan"), [1], b"1", 10**400, -(10**400), 1e10]
RETURNCODES = [256, -128, "0", True, 1.5, [0]]
NOTES = [5, "", "x" * 4097, "\udc80", b"x", ["x"]]
FORCES = [1, 0, "yes", None, [], "True"]
REASONS = [None, "", 5, "x" * 4097, "\udc80", b"x", ["x"]]
TTLS = [0, -1, float("nan"), float("inf"), "10", True, [1], 10**10, 1e300, 10**400, -(10**400), 1e-12, 5e-324, 0.05]
LEASE_ONLY = [1, "yes", None, [], 1.0]  # (True without a ttl: tests/test_lease.py)
ON_WAITS = [42, "print", True, [], b"x", lambda reason: None, *NOT_PLAIN]

# argument -> (call(ledger, root, bad value), bad values, error, message pattern)
CALLS = {
    "register.name": (lambda L, r, v: L.register(v, [W(r + "/n")]),
                      NAMES, InvalidHolderName, r"invalid holder name"),
    "register.rules": (lambda L, r, v: L.register("n", v), RULES, InvalidScope, r"invalid|no rules"),
    "register.pid": (lambda L, r, v: L.register("n", [W(r + "/n")], v), PIDS, InvalidProcess, r"pid"),
    "register.socket": (lambda L, r, v: L.register("n", [W(r + "/n")], socket=v),
                        SOCKETS, InvalidScope, r"invalid socket"),
    "delegate.parent": (lambda L, r, v: L.delegate(v, "c", [W(r + "/t/c")]),
                        NAMES, InvalidHolderName, r"invalid holder name .* for parent"),
    "delegate.child": (lambda L, r, v: L.delegate("p", v, [W(r + "/t/c")]),
                       NAMES, InvalidHolderName, r"invalid holder name .* for child"),
    "delegate.rules": (lambda L, r, v: L.delegate("p", "c", v), RULES, InvalidScope, r"invalid|no rules"),
    "delegate.pid": (lambda L, r, v: L.delegate("p", "c", [W(r + "/t/c")], v), PIDS, InvalidProcess, r"pid"),
    "delegate.reserved": (lambda L, r, v: L.delegate("p", "c", [W(r + "/t/c")], reserved=v),
                          RESERVED, TypeError, r"reserved must be True or False, not "),
    "delegate.socket": (lambda L, r, v: L.delegate("p", "c", [W(r + "/t/c")], socket=v),
                        SOCKETS, InvalidScope, r"invalid socket"),
    "attach.name": (lambda L, r, v: L.attach(v), NAMES, InvalidHolderName, r"invalid holder name"),
    "attach.pid": (lambda L, r, v: L.attach("r", v), PIDS, InvalidProcess, r"pid"),
    "attach.token": (lambda L, r, v: L.attach("r", None, v), TOKENS, TypeError, r"token must be an int"),
    "delegate.parent_token": (lambda L, r, v: L.delegate("p", "c", [W(r + "/t/c")], parent_token=v),
                              TOKENS, TypeError, r"parent_token must be an int"),
    "hold.parent_token": (lambda L, r, v: L.hold("c", [W(r + "/t/c")], parent="p", parent_token=v),
                          TOKENS, TypeError, r"parent_token must be an int"),
    "release.name": (lambda L, r, v: L.release(v), NAMES, InvalidHolderName, r"invalid holder name"),
    "release.token": (lambda L, r, v: L.release("p", v), TOKENS, TypeError, r"token must be an int"),
    "hold.name": (lambda L, r, v: L.hold(v, [W(r + "/n")]), NAMES, InvalidHolderName, r"invalid holder name"),
    "hold.rules": (lambda L, r, v: L.hold("n", v), RULES, InvalidScope, r"invalid|no rules"),
    "hold.pid": (lambda L, r, v: L.hold("n", [W(r + "/n")], v), PIDS, InvalidProcess, r"pid"),
    "hold.parent": (lambda L, r, v: L.hold("c", [W(r + "/t/c")], parent=v),
                    # None is no parent (a top-level hold), not a bad value
                    [n for n in NAMES if n is not None], InvalidHolderName, r"invalid holder name .* for parent"),
    "hold.socket": (lambda L, r, v: L.hold("n", [W(r + "/n")], socket=v), SOCKETS, InvalidScope,
                    r"invalid socket"),
    "reclaim_stale.probe": (lambda L, r, v: L.reclaim_stale(v), PROBES, TypeError, r"probe " + CALLBACK),
    "reclaim_stale.dry_run": (lambda L, r, v: L.reclaim_stale(dry_run=v), DRY_RUNS, TypeError,
                              r"dry_run must be True or False, not "),
    "reclaim.probe": (lambda L, r, v: L.reclaim(v), PROBES, TypeError, r"probe " + CALLBACK),
    "reclaim.dry_run": (lambda L, r, v: L.reclaim(dry_run=v), DRY_RUNS, TypeError,
                        r"dry_run must be True or False, not "),
    "release.returncode": (lambda L, r, v: L.release("p", returncode=v), RETURNCODES, (TypeError, ValueError),
                           r"returncode must be"),
    "release.note": (lambda L, r, v: L.release("p", note=v), NOTES, (TypeError, ValueError), r"note must be"),
    "register.advisory": (lambda L, r, v: L.register("n", [W(r + "/n")], advisory=v), FORCES, InvalidArgument,
                          r"advisory must be True or False, not "),
    "delegate.advisory": (lambda L, r, v: L.delegate("p", "c", [W(r + "/t/c")], advisory=v), FORCES,
                          InvalidArgument, r"advisory must be True or False, not "),
    "hold.advisory": (lambda L, r, v: L.hold("n", [W(r + "/n")], advisory=v), FORCES, InvalidArgument,
                      r"advisory must be True or False, not "),
    "release.force": (lambda L, r, v: L.release("p", force=v, reason="why"), FORCES, InvalidArgument,
                      r"force must be True or False, not "),
    "release.reason": (lambda L, r, v: L.release("p", force=True, reason=v), REASONS, InvalidArgument,
                       r"reason"),
    "renew.name": (lambda L, r, v: L.renew(v, 1), NAMES, InvalidHolderName, r"invalid holder name"),
    "renew.token": (lambda L, r, v: L.renew("p", v), TOKENS, TypeError, r"token must be an int"),
    "renew.ttl": (lambda L, r, v: L.renew("p", 1, ttl=v), TTLS, InvalidLease, r"ttl must be"),
}

#: The three grants take ``wait``, ``note``, ``ttl``, ``lease_only`` and ``on_wait`` alike: one row per grant
#: and argument.
_GRANTS = {
    "register": lambda L, r, **kw: L.register("n", [W(r + "/n")], **kw),
    "delegate": lambda L, r, **kw: L.delegate("p", "c", [W(r + "/t/c")], **kw),
    "hold": lambda L, r, **kw: L.hold("n", [W(r + "/n")], **kw),
}
for _grant, _call in _GRANTS.items():
    CALLS[f"{_grant}.wait"] = (lambda L, r, v, c=_call: c(L, r, wait=v), WAITS, (TypeError, ValueError),
                               r"wait must be seconds")
    CALLS[f"{_grant}.note"] = (lambda L, r, v, c=_call: c(L, r, note=v), NOTES, (TypeError, ValueError),
                               r"note must be")
    CALLS[f"{_grant}.ttl"] = (lambda L, r, v, c=_call: c(L, r, ttl=v), TTLS, InvalidLease, r"ttl must be")
    CALLS[f"{_grant}.lease_only"] = (lambda L, r, v, c=_call: c(L, r, ttl=5, lease_only=v), LEASE_ONLY, TypeError,
                                     r"lease_only must be True or False")
    CALLS[f"{_grant}.on_wait"] = (lambda L, r, v, c=_call: c(L, r, on_wait=v), ON_WAITS, TypeError,
                                  r"on_wait " + CALLBACK)

CASES = [(arg, i) for arg, (_, bad, _, _) in CALLS.items() for i in range(len(bad))]


def test_the_table_covers_every_mutation_and_argument():
    import inspect

    for method in ("register", "delegate", "attach", "release", "hold", "reclaim_stale", "reclaim", "renew"):
        params = [p for p in inspect.signature(getattr(Ledger, method)).parameters if p != "self"]
        assert {f"{method}.{p}" for p in params} <= set(CALLS), method


@pytest.mark.parametrize("arg, i", CASES, ids=[f"{a}-{i}" for a, i in CASES])
def test_a_bad_argument_records_nothing_and_leaves_a_usable_ledger(tmp_path, arg, i):
    call, bad_values, error, pattern = CALLS[arg]
    bad = bad_values[i]
    root = str(tmp_path / "tree")
    path = str(tmp_path / "ledger")
    make_base(path, root)
    before = log_bytes(path)
    led = Ledger.open(path, probe=_dead_is_pid_1, timeout=0)
    blocker = Ledger.open(path)
    try:
        # The lock is held elsewhere: an argument checked only under the lock
        # would meet LockTimeout first.
        with blocker._store.locked():
            with pytest.raises(error, match=pattern) as info:
                call(led, root, bad)
        assert not isinstance(info.value, LockTimeout)
        assert "\n" not in str(info.value)
        if type(bad) in (str, int, bool) and arg.split(".")[1] in ("reserved", "token", "dry_run", "socket",
                                                                    "parent_token", "force", "advisory"):
            # names the bad value (a 4096-byte one by its size)
            assert repr(bad) in str(info.value) or "longer than 4095 bytes" in str(info.value)
        assert log_bytes(path) == before, f"{arg}={bad!r} changed the log"
        assert verify(path).ok
        fresh = Ledger.open(path)
        assert [a.name for a in fresh.holders()] == ["p", "r", "q"]
        fresh.close()
        # The object that refused still works.
        led.register("after", [W(root + "/after")])
        assert verify(path).ok
    finally:
        led.close()
        blocker.close()


def test_the_reported_case_reserved_y(tmp_path):
    root, path = str(tmp_path / "tree"), str(tmp_path / "ledger")
    led = Ledger.open(path)
    led.register("a", [W(root + "/t")])
    before = log_bytes(path)
    with pytest.raises(TypeError, match=r"reserved must be True or False, not 'y'"):
        led.delegate("a", "b", [W(root + "/t/x")], reserved="y")
    assert log_bytes(path) == before
    assert led.delegate("a", "b", [W(root + "/t/x")], reserved=True).reserved is True
    assert led.delegate("a", "c", [W(root + "/t/y")], reserved=False).reserved is False
    led.close()
    assert verify(path).ok
    assert [a.name for a in Ledger.open(path).holders()] == ["a", "b", "c"]


# -- any value, any argument: the log stays foldable --------------------------

_anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=4),
    st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
    st.tuples(st.text(max_size=4), st.text(max_size=4)), st.just(object()))
_ARG_ERRORS = (InvalidHolderName, InvalidScope, InvalidProcess, TypeError, ValueError)
_REFUSALS = (DuplicateHolder, ScopeConflict, DelegationError, UnknownHolder)


def _bad_rules(root):
    """Rule lists mixing good and bad paths, permissions and flags."""
    path = st.one_of(st.sampled_from([root + "/t/x", root + "/n", root + "/../x", "/", "rel"]),
                     st.text(max_size=6).map(lambda s: "/" + s), _anything)
    perm = st.one_of(st.sampled_from(["read", "write", "READ", " Write ", "exec"]), _anything)
    rule = st.one_of(st.tuples(path, perm), st.tuples(path, perm, st.one_of(st.booleans(), _anything)))
    return st.one_of(st.lists(rule, max_size=3), _anything)


def test_no_argument_value_makes_an_event_the_fold_refuses(tmp_path):
    """Property: one argument of one mutation takes any value (good ones
    too), the others good ones. Whatever happens, the log still verifies
    and opens; an argument error leaves its bytes as they were."""
    root, base = str(tmp_path / "tree"), str(tmp_path / "base")
    make_base(base, root)
    with Ledger.open(base) as led:
        led.register("n1", [W(root + "/m")])
    examples = iter(range(10**6))
    names = st.sampled_from(["n2", "n3"])
    pids = st.sampled_from([None, os.getpid()])
    sockets = st.sampled_from([None, "/run/s.sock"])
    top_rules = st.sampled_from([[W(root + "/n")], [(root + "/n2", "write")], [Rd(root + "/t")]])
    sub_rules = st.sampled_from([[W(root + "/t/c")], [(root + "/t/c2", "read", False)]])
    bad_rules = _bad_rules(root)
    # method -> (positional argument strategies, keyword argument strategies),
    # each (good values, any values)
    signatures = {
        "register": ([(names, _anything), (top_rules, bad_rules), (pids, _anything)],
                     {"socket": (sockets, _anything)}),
        "delegate": ([(st.just("p"), _anything), (names, _anything), (sub_rules, bad_rules),
                      (pids, _anything)],
                     {"reserved": (st.booleans(), _anything), "socket": (sockets, _anything),
                      "parent_token": (st.none(), _anything)}),
        "attach": ([(st.just("r"), _anything), (pids, _anything), (st.none(), _anything)], {}),
        "release": ([(st.just("n1"), _anything), (st.none(), _anything)], {}),
        "hold": ([(names, _anything), (top_rules, bad_rules), (pids, _anything)],
                 {"parent": (st.none(), _anything), "socket": (sockets, _anything),
                  "parent_token": (st.none(), _anything)}),
        "reclaim_stale": ([(st.sampled_from([None, lambda ident: True]), _anything)],
                          {"dry_run": (st.booleans(), _anything)}),
        "reclaim": ([(st.sampled_from([None, lambda ident: True]), _anything)],
                    {"dry_run": (st.booleans(), _anything)}),
    }

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.data())
    def run(data):
        method = data.draw(st.sampled_from(sorted(signatures)), label="method")
        positional, keywords = signatures[method]
        slots = [str(i) for i in range(len(positional))] + sorted(keywords)
        odd = data.draw(st.sampled_from(slots), label="any value for")
        args = [data.draw(anyv if str(i) == odd else good, label=f"arg {i}")
                for i, (good, anyv) in enumerate(positional)]
        kwargs = {k: data.draw(anyv if k == odd else good, label=k) for k, (good, anyv) in keywords.items()}
        # A fresh copy of the base ledger for every example: no example
        # sees another's events, so that a failure shrinks to its own cause.
        path = str(tmp_path / f"ex{next(examples)}")
        shutil.copytree(base, path)
        before = log_bytes(path)
        with Ledger.open(path, probe=_dead_is_pid_1) as led:
            try:
                out = getattr(led, method)(*args, **kwargs)
            except _REFUSALS:
                pass
            except _ARG_ERRORS as exc:
                assert log_bytes(path) == before, f"{method}{tuple(args)} {kwargs} raised {exc!r} but wrote"
            else:
                if method == "hold":
                    out.release()
            report = verify(path)
            assert report.ok, report.problems
            Ledger.open(path, readonly=True).close()
        shutil.rmtree(path)

    run()


# -- smaller cases --------------------------------------------------------------


def test_a_clock_past_2_63_ns_is_refused_before_anything_is_written(tmp_path):
    path = str(tmp_path / "ledger")
    Ledger.open(path).register("a", [W("/clock/a")])
    before = log_bytes(path)
    for ts in (2**63, 2**64, 2**70, -2**63 - 1):
        led = Ledger.open(path, clock=lambda ts=ts: ts)
        with pytest.raises(ValueError, match=re.escape(f"clock() returned {ts}")):
            led.register("b", [W("/clock/b")])
        assert log_bytes(path) == before
        led.close()
    assert verify(path).ok


def test_falsy_callables_are_used_not_replaced_by_the_defaults(tmp_path):
    class Clock:
        def __len__(self):
            return 0

        def __call__(self):
            return 5_000

    class Probe:
        def __bool__(self):
            return False

        def __call__(self, ident):
            return False  # everyone is gone

    path = str(tmp_path / "ledger")
    led = Ledger.open(path, clock=Clock(), probe=Probe())
    led.register("a", [W("/falsy/a")])
    assert led.holder("a").granted_ns == 5_000
    assert led.reclaim_stale() == ["a"]
    led.register("b", [W("/falsy/b")])
    assert led.reclaim_stale(probe=Probe()) == ["b"]


def test_subclasses_of_str_and_int_are_recorded_as_plain_values(tmp_path):
    class Name(str):
        pass

    class Pid(enum.IntEnum):
        me = os.getpid()

    path = str(tmp_path / "ledger")
    led = Ledger.open(path)
    a = led.register(Name("a"), [W("/sub/a")], pid=Pid.me, socket=Name("/run/a.sock"))
    assert type(a.name) is str and type(a.pid) is int and type(a.socket) is str
    b = led.delegate(Name("a"), Name("b"), [W("/sub/a/b")], pid=Pid.me, reserved=True)
    assert type(b.name) is str and type(b.parent) is str
    led.attach(Name("b"), Pid.me)
    led.release(Name("b"))
    assert Ledger.open(path).state().holders == led.state().holders
    assert verify(path).ok


# -- Ledger.open's options ------------------------------------------------------

OPEN_BAD = {
    "fsync": (["no", 1, 0, None, "false", []], TypeError, r"fsync must be True or False, not "),
    "resolve_symlinks": (["no", 1, 0, None, "false", []], TypeError,
                         r"resolve_symlinks must be True or False, not "),
    "probe": ([42, "probe", True, False, 0, []], TypeError, r"probe must be None or a callable, not "),
    "clock": ([42, "now", True, 0, 1.5, []], TypeError, r"clock must be None or a callable, not "),
    "timeout": ([True, -1, "1", float("nan"), 1e10], ValueError, r"timeout must be"),
    "snapshot_every": ([True, 0, 1.5, "10", None], ValueError, r"snapshot_every must be"),
    "keep_snapshots": ([True, 0, 1.5, "2"], ValueError, r"keep_snapshots must be"),
    "readonly": (["no", 1, None], TypeError, r"readonly must be True or False"),
}
OPEN_CASES = [(opt, i) for opt, (bad, _, _) in OPEN_BAD.items() for i in range(len(bad))]


@pytest.mark.parametrize("opt, i", OPEN_CASES, ids=[f"{o}-{i}" for o, i in OPEN_CASES])
def test_bad_open_options_are_refused_and_create_nothing(tmp_path, opt, i):
    bad_values, error, pattern = OPEN_BAD[opt]
    bad = bad_values[i]
    missing = str(tmp_path / "missing")
    with pytest.raises(error, match=pattern):
        Ledger.open(missing, **{opt: bad})
    assert not os.path.exists(missing)
    existing = str(tmp_path / "ledger")
    Ledger.open(existing).register("a", [W("/opt/a")])
    before = log_bytes(existing)
    with pytest.raises(error, match=pattern):
        Ledger.open(existing, **{opt: bad})
    assert log_bytes(existing) == before
    assert verify(existing).ok


def test_good_open_options_are_accepted(tmp_path):
    path = str(tmp_path / "ledger")
    for kw in ({"fsync": True}, {"fsync": False}, {"resolve_symlinks": False}, {"probe": None},
               {"clock": None}, {"probe": lambda ident: True}, {"clock": lambda: 7}, {"timeout": 0},
               {"timeout": 2.5}, {"timeout": 1e9}, {"timeout": 10**9}, {"keep_snapshots": 1},
               {"snapshot_every": 1}):
        Ledger.open(path, **kw).close()


SETTABLE = [o for o in OPEN_BAD if o not in ("probe", "clock", "readonly")]
SET_CASES = [(opt, i) for opt in SETTABLE for i in range(len(OPEN_BAD[opt][0]))]


@pytest.mark.parametrize("opt, i", SET_CASES, ids=[f"{o}-{i}" for o, i in SET_CASES])
def test_an_option_set_after_opening_is_checked_as_open_checks_it(tmp_path, opt, i):
    bad_values, error, pattern = OPEN_BAD[opt]
    path = str(tmp_path / "ledger")
    led = Ledger.open(path)
    led.register("a", [W("/opt/a")])
    kept = getattr(led, opt)
    with pytest.raises(error, match=pattern):
        setattr(led, opt, bad_values[i])
    assert getattr(led, opt) == kept  # unchanged: the next change works as before
    led.register("b", [W("/opt/b")])
    led.release("b")
    assert verify(path).ok


def test_good_options_can_be_set_after_opening(tmp_path):
    led = Ledger.open(str(tmp_path / "ledger"))
    for opt, value in (("fsync", True), ("resolve_symlinks", False), ("timeout", 0), ("timeout", None),
                       ("timeout", 2.5), ("keep_snapshots", 1), ("keep_snapshots", None),
                       ("snapshot_every", 1)):
        setattr(led, opt, value)
        assert getattr(led, opt) == value
    led.register("a", [W("/opt/a")])  # fsync, snapshot every event, keep one
    assert led.holder("a").token == 1 and len(os.listdir(tmp_path / "ledger" / "snapshots")) == 1


def test_a_bad_option_is_refused_before_any_directory_is_made():
    base = tempfile.mkdtemp()
    try:
        target = os.path.join(base, "a", "b", "ledger")
        with pytest.raises(TypeError):
            Ledger.open(target, fsync="no")
        assert os.listdir(base) == []
    finally:
        os.rmdir(base)


# -- a huge int anywhere is named, not a crash of the message itself ------------------

_HUGE = 10**5000  # repr() of it raises ValueError (Python's 4,300-digit limit)


@pytest.mark.parametrize("call", [
    lambda L: L.state_at(seq=_HUGE),
    lambda L: L.diff(0, _HUGE),
    lambda L: L.release("a", token=_HUGE),
    lambda L: L.register("b", [ScopeRule("/huge/b", "write")], pid=_HUGE),
    lambda L: L.attach("a", pid=_HUGE),
    lambda L: L.delegate("a", "c", [ScopeRule("/huge/a/c", "write")], reserved=_HUGE),
    lambda L: L.register(_HUGE, [ScopeRule("/huge/b", "write")]),
    lambda L: L.register("b", [_HUGE]),
    lambda L: L.register("b", [ScopeRule("/huge/b", "write")], socket=_HUGE),
    lambda L: ScopeRule("/huge", "write", _HUGE),
    lambda L: ScopeRule(_HUGE, "write"),
    lambda L: ScopeRule("/huge", _HUGE),
    lambda L: L.who(_HUGE),
    lambda L: L.find_conflict(_HUGE),
    lambda L: L.history(_HUGE),
    lambda L: list(L.events(types=[_HUGE])),
    lambda L: Ledger.open(L.path + "-other", timeout=_HUGE),
    lambda L: Ledger.open(L.path + "-other", snapshot_every=-_HUGE),
])
def test_a_huge_int_is_refused_with_a_typed_error_that_describes_it(tmp_path, call):
    d = tmp_path / "huge"
    with Ledger.open(d) as L:
        L.register("a", [ScopeRule("/huge/a", "write")])
        before = (d / "events.jsonl").read_bytes()
        with pytest.raises((LedgerError, TypeError, ValueError)) as info:
            call(L)
        message = str(info.value)
        assert "4300" not in message and "int_max_str_digits" not in message, message
        assert "<an int of 16610 bits>" in message or "too large to show" in message, message
    assert (d / "events.jsonl").read_bytes() == before


def test_the_cli_s_largest_lock_timeout_is_one_the_library_takes(tmp_path):
    # The CLI takes --lock-timeout up to MAX_SECONDS (1e9, as documented); the
    # library refused exactly 1e9, and 'ledger --lock-timeout 1e9 show' was an
    # internal error (exit 70).
    import subprocess
    import sys

    from scopeledger.cli.params import MAX_SECONDS

    path = str(tmp_path / "ledger")
    Ledger.open(path, timeout=MAX_SECONDS).register("a", [W("/opt/a")])
    for args in (["show"], ["release", "a"]):
        res = subprocess.run([sys.executable, "-m", "scopeledger", "--ledger", path, "--lock-timeout",
                              "1e9", *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res


@pytest.mark.parametrize("attr, value", [("path", "/etc"), ("probe", lambda ident: False),
                                         ("clock", lambda: 5)])
def test_what_open_fixed_cannot_be_set_afterwards_as_if_it_took_effect(tmp_path, attr, value):
    # led.probe = f was accepted and did nothing (the ledger used _probe).
    led = Ledger.open(str(tmp_path / "ledger"))
    kept = getattr(led, attr)
    with pytest.raises(AttributeError, match=f"'{attr}'"):
        setattr(led, attr, value)
    assert getattr(led, attr) is kept
