import pytest
from hypothesis import given, settings, strategies as st

from scopeledger import InvalidScope, Permission, ScopeRule, covers, normalize_path, overlaps, parse_rule
from strategies import covers_path, rules, witnesses


def R(path, perm="write", rec=True):
    return ScopeRule(path, perm, rec)


# -- normalisation ------------------------------------------------------------

@pytest.mark.parametrize("raw", ["/data//x//", "/data/./x/", "/data/x/", "/data/x", "/data/y/../x", "//data/x"])
def test_equivalent_spellings_normalise_equal(raw):
    assert normalize_path(raw) == "/data/x"
    assert R(raw) == R("/data/x")


def test_dotdot_above_root_stays_at_root():
    assert normalize_path("/../..") == "/"
    assert normalize_path("/") == "/"


@pytest.mark.parametrize("bad, why", [
    ("", "empty"),
    ("relative/path", "not absolute"),
    ("/a\x00b", "NUL"),
    ("/" + "a" * 256, "longer than 255"),
    ("/" + "/".join(["abcdefgh"] * 600), "longer than 4095"),
    (b"/bytes", "expected a string"),
    (None, "expected a string"),
    ("/\udcff", "UTF-8"),
])
def test_bad_paths_are_refused_with_reason(bad, why):
    with pytest.raises(InvalidScope, match=why):
        normalize_path(bad)


def test_permission_parsing_and_order():
    assert R("/a", "READ").permission is Permission.READ
    assert Permission.READ < Permission.WRITE
    assert not Permission.WRITE < Permission.READ
    assert Permission.WRITE >= Permission.READ
    with pytest.raises(InvalidScope, match="invalid permission"):
        R("/a", "execute")
    with pytest.raises(InvalidScope, match="recursive"):
        ScopeRule("/a", "write", "yes")


# -- the overlap table (REQUIREMENTS.md) ----------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    # recursive / recursive: one is the other or an ancestor
    (R("/r/src"), R("/r/src/a/b"), True),
    (R("/r/src"), R("/r/src"), True),
    (R("/r/src/a"), R("/r/src/b"), False),
    # recursive a / non-recursive b
    (R("/r/src"), R("/r/src/a/b", rec=False), True),
    (R("/r/src/a", rec=True), R("/r/src", rec=False), True),   # a's path is a direct child of b's
    (R("/r/src/a/b"), R("/r/src", rec=False), False),          # two levels below b
    # non-recursive / non-recursive
    (R("/r/src", rec=False), R("/r/src/a", rec=False), True),
    (R("/r/src", rec=False), R("/r/src/a/b", rec=False), False),
    (R("/r/src/a", rec=False), R("/r/src/b", rec=False), False),
    (R("/r/src", rec=False), R("/r/src", rec=False), True),
    # component-wise, never string prefixes
    (R("/data/proj"), R("/data/proj-backup"), False),
    (R("/data/proj", rec=False), R("/data/proj-backup/x", rec=False), False),
])
def test_overlap_table(a, b, expected):
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


def test_non_recursive_coverage_examples():
    assert covers(R("/r", rec=False), R("/r", rec=False))
    assert not covers(R("/r", rec=False), R("/r/a", rec=False))  # covers /r/a/* too
    assert not covers(R("/r", rec=False), R("/r"))
    assert covers(R("/r"), R("/r/a/b", rec=False))
    assert not covers(R("/r", "read"), R("/r/a", "write"))
    assert covers(R("/r", "write"), R("/r/a", "read"))
    assert not covers(R("/data/proj"), R("/data/proj-backup"))


# -- properties (Hypothesis) ---------------------------------------------------

@settings(max_examples=400)
@given(rules, rules)
def test_overlap_is_symmetric(a, b):
    assert overlaps(a, b) == overlaps(b, a)


@settings(max_examples=400)
@given(rules, rules)
def test_overlap_matches_the_definition(a, b):
    # Overlap iff some path is covered by both (the deeper path is a witness).
    reference = any(covers_path(a, p) and covers_path(b, p) for p in (a.parts, b.parts))
    assert overlaps(a, b) == reference


@settings(max_examples=400)
@given(rules, rules)
def test_coverage_matches_the_definition(c, i):
    reference = c.permission >= i.permission and all(
        covers_path(c, p) for p in witnesses(i) if covers_path(i, p))
    assert covers(c, i) == reference


@settings(max_examples=400)
@given(rules, rules)
def test_coverage_implies_overlap(a, b):
    if covers(a, b):
        assert overlaps(a, b)


@given(rules)
def test_a_rule_covers_itself(a):
    assert covers(a, a)
    assert overlaps(a, a)


@settings(max_examples=600)
@given(rules, rules, rules)
def test_coverage_is_transitive(a, b, c):
    if covers(a, b) and covers(b, c):
        assert covers(a, c)


# -- compact syntax ----------------------------------------------------------------

@pytest.mark.parametrize("spec, path, rec", [
    ("src/**", "/repo/src", True),
    ("src", "/repo/src", True),
    ("src/*", "/repo/src", False),
    ("/abs/x/*", "/abs/x", False),
    ("**", "/repo", True),
    ("./a//b/", "/repo/a/b", True),
])
def test_parse_rule(spec, path, rec):
    r = parse_rule(spec, "write", "/repo")
    assert (r.path, r.recursive, r.permission) == (path, rec, Permission.WRITE)


@pytest.mark.parametrize("spec, why", [
    ("../x", "climbs out"),
    ("src/../../x", "climbs out"),
    ("", "empty"),
    ("a*b", r"'\*' is only allowed"),
    ("src/**/x", r"'\*' is only allowed"),
])
def test_parse_rule_refuses(spec, why):
    with pytest.raises(InvalidScope, match=why):
        parse_rule(spec, "write", "/repo")


def test_parse_rule_relative_without_root():
    with pytest.raises(InvalidScope, match="without a root"):
        parse_rule("src", "read")


@settings(max_examples=1000)
@given(st.text(alphabet="/.a-é\x00", max_size=30))
def test_fast_path_agrees_with_full_normalisation(raw):
    from scopeledger._rules import is_normal
    if is_normal(raw):
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        assert ".." not in parts and raw == "/" + "/".join(parts)
    try:
        once = normalize_path(raw)
    except InvalidScope:
        return
    assert normalize_path(once) == once


# -- one reader of rule text (issue 13 item 8) -------------------------------------

@pytest.mark.parametrize("path, hint", [
    ("/repo/src/**", r"parse_rule\('/repo/src/\*\*', 'write'\).*ScopeRule\('/repo/src', 'write', recursive=True\)"),
    ("/repo/src/*", r"ScopeRule\('/repo/src', 'write', recursive=False\)"),
    ("/repo/*.py", "no wildcard but a final"),
    ("/repo/**/x", "no wildcard but a final"),
    ("/**", r"ScopeRule\('/', 'write', recursive=True\)"),
])
def test_a_star_in_a_path_is_refused_never_stored(path, hint):
    # ScopeRule("/repo/src/**") was stored as the literal path, protected
    # nothing and was shown as /repo/src/**/**; the CLI reads the same text
    # as a recursive rule on /repo/src.
    with pytest.raises(InvalidScope, match=r"'\*' is rule syntax, not part of a path.*" + hint):
        ScopeRule(path, "write")


def test_the_library_reads_rule_text_as_the_command_line_does(tmp_path):
    from scopeledger import Ledger
    led = Ledger.open(str(tmp_path / "l"))
    led.register("a", parse_rule("/repo/src/**", "write"))
    conflict = led.find_conflict(ScopeRule("/repo/src/x", "write"))
    assert conflict is not None and conflict.owner == "a"
    assert [str(r) for r in led.holders()[0].rules] == ["write /repo/src/**"]


def test_a_star_stored_by_an_older_version_is_read_back_as_recorded():
    # ScopeRule.from_json reads events and snapshots: a literal '*' an older
    # version stored stays what it was, for replay and show.
    r = ScopeRule.from_json(["/repo/src/**", "write", True])
    assert (r.path, r.recursive) == ("/repo/src/**", True)


@pytest.mark.parametrize("spec", ["app/[id]", "src/what?", "a/{x,y}"])
def test_other_glob_characters_are_names(spec):
    assert parse_rule(spec, "write", "/repo").path == "/repo/" + spec
    assert ScopeRule("/repo/" + spec).path == "/repo/" + spec
