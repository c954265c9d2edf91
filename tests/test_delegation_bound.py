"""Issue 19, "Quadratic delegation check": whether the parent covers each
delegated rule is looked up in the path tries, under the lock and in
verify; a request has at most MAX_RULES_PER_REQUEST rules. The work is
counted (pairwise rule comparisons), never timed; the timing is a
measurement in RELIABILITY.md ("At the edges")."""

import os

import pytest
from hypothesis import given, settings, strategies as st

import scopeledger._fold as fold
from scopeledger import (
    MAX_RULES_PER_REQUEST,
    InvalidManifest,
    InvalidScope,
    Ledger,
    ScopeRule,
    covers,
    parse_manifest,
    verify,
)
from scopeledger._fold import State, apply


class _Counted:
    """Counts the calls of the pairwise rule comparisons the fold uses."""

    def __init__(self, monkeypatch):
        self.calls = 0
        for name in ("covers", "conflicts"):  # (conflicts: overlaps, by permission; issue 16)
            real = getattr(fold, name)

            def counted(*a, _real=real):
                self.calls += 1
                return _real(*a)

            monkeypatch.setattr(fold, name, counted)


def test_8000_rules_delegated_from_a_parent_of_8000_cost_no_pairwise_comparisons(ledger_dir, monkeypatch):
    n = 8000
    parent = [ScopeRule(f"/d/p{i}", "write", True) for i in range(n)]
    child = [ScopeRule(f"/d/p{i}/sub", "write" if i % 2 else "read", bool(i % 3)) for i in range(n)]
    counted = _Counted(monkeypatch)
    with Ledger.open(ledger_dir, resolve_symlinks=False) as led:
        led.register("parent", parent)
        led.delegate("parent", "child", child)
        assert len(led.holder("child").rules) == n
        # One rule outside: refused, and named.
        with pytest.raises(Exception, match=r"cannot delegate write /e/\*\* from 'parent' to 'other'"):
            led.delegate("parent", "other", child[:-1] + [ScopeRule("/e", "write", True)])
    # Brute force compared each child rule with the parent's until one
    # covered it: n * (n + 1) / 2 = 32,004,000 calls (57 s under the lock).
    assert counted.calls <= 2 * n, counted.calls
    counted.calls = 0
    report = verify(ledger_dir, workers=1)  # re-checks every grant at its seq
    assert report.ok, report
    assert counted.calls <= 2 * n, counted.calls


rules = st.builds(
    lambda parts, perm, rec: ScopeRule("/" + "/".join(parts), perm, rec),
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=3),
    st.sampled_from(["read", "write"]), st.booleans())


@settings(max_examples=300, deadline=None)
@given(mine=st.lists(rules, min_size=1, max_size=6), others=st.lists(rules, max_size=6), probe=rules)
def test_covered_by_agrees_with_comparing_every_rule(mine, others, probe):
    """The trie lookup answers exactly what comparing with each of the
    holder's rules answers, whatever else is held at the same paths."""
    state = State()
    seq = 0
    for name, rs in (("other", others), ("me", mine)):
        if not rs:
            continue
        seq += 1
        ev = {"v": 2, "seq": seq, "ts": 1, "prev": state.last_hash, "type": "registered",
              "holder": {"name": name, "rules": [r.to_json() for r in dict.fromkeys(rs)],
                         "process": {"pid": 1, "start": 1.0, "boot": "b"}, "parent": None,
                         "reserved": False, "socket": None}}
        apply(state, ev, f"{seq:032x}")
    assert fold.covered_by(state, "me", probe) == any(covers(p, probe) for p in dict.fromkeys(mine))


def test_more_rules_than_the_cap_are_refused_by_library_cli_and_manifest(ledger_dir, tmp_path):
    too_many = [ScopeRule(f"/r/{i}", "write") for i in range(MAX_RULES_PER_REQUEST + 1)]
    says = rf"too many rules: {MAX_RULES_PER_REQUEST + 1} in one request, at most {MAX_RULES_PER_REQUEST}"
    with Ledger.open(ledger_dir) as led:
        led.register("top", [ScopeRule("/r", "write", True)])
        with pytest.raises(InvalidScope, match=says):
            led.register("a", too_many)
        with pytest.raises(InvalidScope, match=says):
            led.delegate("top", "b", too_many)
        with pytest.raises(InvalidScope, match=says):
            led.hold("c", iter(too_many))  # any iterable
        led.delegate("top", "ok", too_many[:MAX_RULES_PER_REQUEST])  # the cap itself is granted
        seq = led.seq
    assert Ledger.open(ledger_dir).seq == seq  # the refusals recorded nothing
    doc = {"holder": {"name": "m"}, "scope": {"write": [f"/r/{i}" for i in range(MAX_RULES_PER_REQUEST + 1)]}}
    with pytest.raises(InvalidManifest, match=rf"too many rules: {MAX_RULES_PER_REQUEST + 1}, at most "
                                              rf"{MAX_RULES_PER_REQUEST} in one request @ manifest\.scope"):
        parse_manifest(doc, "/", "m.toml")
    # The command line: a manifest of too many rules is a usage error (exit 2).
    import subprocess
    import sys

    m = tmp_path / "m.toml"
    m.write_text('[holder]\nname = "m"\n[scope]\nwrite = [' +
                 ", ".join(f'"/r/{i}"' for i in range(MAX_RULES_PER_REQUEST + 1)) + "]\n")
    ledger = os.path.join(os.path.dirname(sys.executable), "ledger")
    p = subprocess.run([ledger, "--ledger", ledger_dir, "check", "--manifest", str(m)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "too many rules" in p.stderr, (p.returncode, p.stderr)
