"""canonical_path agrees with os.path.realpath on trees with symlinks."""

import os

import pytest

from scopeledger._paths import canonical_path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path.resolve()
    (root / "real" / "sub" / "deep").mkdir(parents=True)
    (root / "real" / "file").write_text("x")
    os.symlink(root / "real", root / "abs-link")
    os.symlink("real/sub", root / "rel-link")
    os.symlink(root / "nowhere" / "x", root / "dangling")
    os.symlink("abs-link/sub", root / "chain")
    os.symlink(root / "loop-b", root / "loop-a")
    os.symlink(root / "loop-a", root / "loop-b")
    os.symlink("../real", root / "real" / "sub" / "up")
    os.symlink("/", root / "root-link")
    return root


CASES = ["real", "real/sub/deep", "real/sub/missing/more", "abs-link", "abs-link/sub/deep",
         "abs-link/missing", "abs-link/missing/deeper", "rel-link", "rel-link/deep/x", "dangling",
         "dangling/below", "chain/deep", "chain/missing/x", "real/file", "real/file/below", "loop-a",
         "loop-a/x", "missing", "missing/a/b", "real/sub/up/sub", "real/sub/up/missing", "root-link",
         "root-link/no-such-top-level", "root-link/no-such-top-level/x", ""]


@pytest.mark.parametrize("rel", CASES)
def test_canonical_path_matches_realpath(tree, rel):
    path = str(tree / rel) if rel else str(tree)
    assert canonical_path(path) == os.path.realpath(path)


@pytest.mark.parametrize("path", ["/", "/no-such-top-level", "/no-such-top-level/x/y", "/proc/self",
                                  "/dev/null", "/etc"])
def test_system_paths(path):
    assert canonical_path(path) == os.path.realpath(path)


def test_without_proc(tree, monkeypatch):
    import scopeledger._paths as paths
    monkeypatch.setattr(paths, "_HAVE_PROC", False)
    for rel in CASES:
        path = str(tree / rel) if rel else str(tree)
        assert canonical_path(path) == os.path.realpath(path), rel



# -- one request's notes of missing components (canonical's ``missing``) -------


@pytest.mark.parametrize("want", [False, True])
def test_notes_of_one_request_give_what_asking_again_gives(tree, want):
    # Every ordered pair of paths, resolved with one dict of notes (as the
    # rules of one request are): the second answer, the whole tuple, is
    # the one a call without notes gives, on a tree that does not change.
    from scopeledger._paths import canonical

    paths = [str(tree / rel) if rel else str(tree) for rel in CASES] + [
        "/", "/no-such-top-level", "/no-such-top-level/x/y", "/no-such-top-level-2/x"]
    for a in paths:
        for b in paths:
            notes = {}
            assert canonical(a, want, notes) == canonical(a, want)
            assert canonical(b, want, notes) == canonical(b, want), (a, b)
            assert canonical(b, want, notes)[0] == os.path.realpath(b), (a, b)


def test_a_second_rule_below_a_missing_component_asks_nothing_more(tree, monkeypatch):
    import scopeledger._paths as paths

    asked = []
    real_access = paths.access
    monkeypatch.setattr(paths, "access", lambda p, *a, **k: asked.append(p) or real_access(p, *a, **k))
    notes = {}
    missing = tree / "missing"
    assert paths.canonical(str(missing / "a" / "src"), False, notes)[0] == str(missing / "a" / "src")
    assert asked and str(missing) in asked
    asked.clear()
    assert paths.canonical(str(missing / "b"), False, notes)[0] == str(missing / "b")
    assert paths.canonical(str(missing), False, notes)[0] == str(missing)
    assert asked == []
    assert paths.canonical(str(tree / "real" / "x"), False, notes)[0] == str(tree / "real" / "x")
    assert asked  # not below a note: asked as ever


def test_notes_do_not_outlive_their_request(tree, tmp_path):
    # A component missing for one request may be a link for the next.
    from scopeledger import Ledger, ScopeRule

    with Ledger.open(str(tmp_path / "L")) as led:
        later = tree / "later"
        rules = [ScopeRule(str(later / "src"), "write"), ScopeRule(str(later / "docs"), "read")]
        assert [r.path for r in led.canonical_rules(rules)] == [str(later / "src"), str(later / "docs")]
        os.symlink(tree / "real", later)
        assert [r.path for r in led.canonical_rules(rules)] == [str(tree / "real" / "src"),
                                                               str(tree / "real" / "docs")]
