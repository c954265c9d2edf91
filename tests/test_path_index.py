"""PathIndex against a brute-force list of entries."""

from hypothesis import given, settings, strategies as st

from scopeledger import ScopeRule, overlaps
from scopeledger._fold import PathIndex

from strategies import rules

names = st.sampled_from(["A", "B", "C"])
ops = st.lists(st.tuples(st.booleans(), names, rules), max_size=40)


@settings(max_examples=300)
@given(ops, rules)
def test_overlapping_matches_brute_force(operations, query):
    index = PathIndex()
    model: list = []
    for add, name, rule in operations:
        if add or (name, rule) not in model:
            index.add(name, rule)
            model.append((name, rule))
        else:
            index.remove(name, rule)
            model.remove((name, rule))
        assert len(index) == len(model)
    found = list(index.overlapping(query))
    assert len(found) == len(set(found))  # each distinct entry once
    assert set(found) == {e for e in model if overlaps(e[1], query)}
    for entry in list(model):
        index.remove(*entry)
    assert index.root == [None, None, None]  # everything pruned


def test_thousands_of_readers_of_one_path_release_in_any_order():
    index = PathIndex()
    shared = ScopeRule("/shared", "read")
    for i in range(2000):
        index.add(f"h{i}", shared)
    for i in reversed(range(2000)):
        index.remove(f"h{i}", shared)
    assert len(index) == 0 and index.root == [None, None, None]


def test_an_entry_added_twice_needs_two_removals_and_then_prunes():
    index = PathIndex()
    rule = ScopeRule("/a/b", "write")
    index.add("A", rule)
    index.add("A", rule)  # a holder that lists one rule twice
    index.remove("A", rule)
    assert list(index.overlapping(rule)) == [("A", rule)]
    index.remove("A", rule)
    assert len(index) == 0 and index.root == [None, None, None]


def test_removing_what_is_not_there_raises_and_changes_nothing():
    import pytest

    index = PathIndex()
    rule = ScopeRule("/a/b", "write")
    index.add("A", rule)
    index.add("B", rule)
    for name, r in [("C", rule), ("A", ScopeRule("/a/b", "write", False)), ("A", ScopeRule("/a", "write"))]:
        with pytest.raises(ValueError):
            index.remove(name, r)
    assert len(index) == 2
    assert set(index.overlapping(rule)) == {("A", rule), ("B", rule)}
