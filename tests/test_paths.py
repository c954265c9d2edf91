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
    return root


CASES = ["real", "real/sub/deep", "real/sub/missing/more", "abs-link", "abs-link/sub/deep",
         "abs-link/missing", "abs-link/missing/deeper", "rel-link", "rel-link/deep/x", "dangling",
         "dangling/below", "chain/deep", "chain/missing/x", "real/file", "real/file/below", "loop-a",
         "loop-a/x", "missing", "missing/a/b", "real/sub/up/sub", "real/sub/up/missing", ""]


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

