"""PathIndex against a brute-force list of entries."""

from hypothesis import given, settings, strategies as st

from scopeledger import ScopeRule, overlaps
from scopeledger._fold import PathIndex

from strategies import rules

names = st.sampled_from(["A", "B", "C"])
ops = st.lists(st.tuples(st.booleans(), names, rules), max_size=40)


def _run(index, model, operations):
    """Apply each (add?, name, rule) to ``index`` and to the list ``model``
    (a remove of an entry not held becomes an add); yield after each."""
    for add, name, rule in operations:
        if add or (name, rule) not in model:
            index.add(name, rule)
            model.append((name, rule))
        else:
            index.remove(name, rule)
            model.remove((name, rule))
        yield


@settings(max_examples=300)
@given(ops, rules)
def test_overlapping_matches_brute_force(operations, query):
    index = PathIndex()
    model: list = []
    for _ in _run(index, model, operations):
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


def _shape(index):
    """``{node path: entries}`` of the trie, checking its invariants on the
    way: a non-root node has entries or children (a branch left empty is cut
    off), a dict of children holds two or more, an entry dict is never empty."""
    out = {}
    stack = [((), index.root)]
    while stack:
        where, node = stack.pop()
        kids, a = node[0], node[1]
        if where:
            assert kids is not None or a is not None, f"empty node left at {where}"
        if type(kids) is dict:
            assert len(kids) >= 2, f"a dict of {len(kids)} child at {where}"
            items = list(kids.items())
        else:
            items = [kids] if kids is not None else []
        for part, child in items:
            stack.append((where + (part,), child))
        if type(a) is dict:
            assert a
            out[where] = sorted((n, c, repr(k)) for (n, c), k in a.items())
        elif a is not None:
            out[where] = [(a, node[2])]
    return out


@settings(max_examples=300)
@given(ops)
def test_the_trie_holds_a_node_exactly_where_something_lies_at_or_below(operations):
    index = PathIndex()
    model: list = []
    for _ in _run(index, model, operations):
        nodes = set()
        for _, r in model:
            parts = ("",) + r.parts  # a rule without an identity: by path, under ""
            nodes.update(parts[:i] for i in range(len(parts) + 1))
        shape = _shape(index)
        reachable = set()
        stack = [((), index.root)]
        while stack:
            where, node = stack.pop()
            reachable.add(where)
            kids = node[0]
            for part, child in (kids.items() if type(kids) is dict else [kids] if kids else []):
                stack.append((where + (part,), child))
        assert reachable == nodes | {()}
        assert set(shape) == {("",) + r.parts for _, r in model}
