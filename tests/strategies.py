"""Shared Hypothesis strategies."""

from hypothesis import strategies as st

from scopeledger import Permission, ScopeRule

# A small alphabet of components makes overlaps frequent; "a-" and "a0"
# catch string-prefix mistakes ("/a" is not an ancestor of "/a-").
COMPONENTS = st.sampled_from(["a", "b", "a-", "a0", "c", "é"])
paths = st.lists(COMPONENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
permissions = st.sampled_from([Permission.READ, Permission.WRITE])
rules = st.builds(ScopeRule, paths, permissions, st.booleans())




def covers_path(rule: ScopeRule, parts: tuple) -> bool:
    """Reference: does ``rule`` cover the path with components ``parts``?
    Written from the definition (REQUIREMENTS.md), not from the library."""
    rp = rule.parts
    if parts[: len(rp)] != rp:
        return False
    extra = len(parts) - len(rp)
    return rule.recursive or extra <= 1


def witnesses(rule: ScopeRule) -> list:
    """Paths that stand for everything ``rule`` covers: its path, a child
    and a grandchild with names outside the strategy's alphabet."""
    return [rule.parts, rule.parts + ("zz",), rule.parts + ("zz", "zy")]
