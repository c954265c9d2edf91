"""Human rendering details of ``scopeledger.cli.render``: paths relative to a root, the
``who`` table's lines, plurals, escaping."""

from __future__ import annotations

import io
import unicodedata

import pytest
from rich.console import Console

from scopeledger._history import Holding, VerifyReport
from scopeledger.cli.render import (
    plural,
    rel_message,
    rule_text,
    rules_text,
    safe,
    verify_text,
    who_table,
)
from scopeledger._rules import ScopeRule


def render(renderable: object, width: int = 100_000) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, no_color=True, color_system=None, highlight=False).print(renderable)
    return buf.getvalue()


# -- the root itself is '.', as 'ledger show' shows it ------------------------------------


def test_rule_text_shows_the_root_itself_as_dot() -> None:
    root = "/t/src"
    assert rule_text(ScopeRule(root, "write"), root) == "write ./**"
    assert rule_text(ScopeRule(root, "read", recursive=False), root) == "read ./*"
    assert rule_text(ScopeRule("/t/src/x", "write"), root) == "write x/**"
    assert rule_text(ScopeRule("/t/srcx", "write"), root) == "write /t/srcx/**"
    assert rule_text(ScopeRule("/t", "write"), root) == "write /t/**"
    assert rule_text(["/t/src", "write", True], root) == "write ./**"  # the JSON form
    assert rules_text([ScopeRule(root, "write"), ScopeRule("/t/docs", "read")], root) == \
        "write ./**, read /t/docs/**"
    assert rule_text(ScopeRule("/", "write")) == "write /**"
    assert rule_text(ScopeRule("/", "write"), "/") == "write /**"


def test_rel_message_shows_the_root_itself_as_dot_never_a_bare_glob() -> None:
    root = "/t/src"
    msg = "write /t/src/** conflicts with holder 'a' holding write /t/src/**"
    assert rel_message(msg, root) == "write ./** conflicts with holder 'a' holding write ./**"
    assert rel_message("read /t/src/*, write /t/src/x/*", root) == "read ./*, write x/*"
    assert rel_message("(as write /t/src/**)", root) == "(as write ./**)"
    assert rel_message("path /t/src: gone", root) == "path .: gone"
    assert rel_message("'/t/src/'", root) == "'./'"
    assert rel_message("/t/src/x/** and /t/src/x", root) == "x/** and x"
    # only whole path prefixes
    assert rel_message("/t/srcx/** /var/t/src/**", root) == "/t/srcx/** /var/t/src/**"
    assert rel_message(msg, None) == msg


def test_rel_message_agrees_with_rule_text_on_the_root() -> None:
    for root in ("/t/src", "/t"):
        for r in (ScopeRule("/t/src", "write"), ScopeRule("/t/src", "read", recursive=False),
                  ScopeRule("/t/src/a/b", "write")):
            absolute = rule_text(r)
            assert rel_message(f"x {absolute} y", root) == f"x {rule_text(r, root)} y"


# -- who: no trailing whitespace, columns still aligned ---------------------------------


def _holdings() -> list[Holding]:
    return [
        Holding(("runtime",), ScopeRule("/t/src", "write"), False),
        Holding(("runtime", "builder", "lexer-worker"), ScopeRule("/t/src/lexer", "write"), True),
        Holding(("runtime", "tests-worker"), ScopeRule("/t/src", "read"), True),
    ]


def test_who_table_lines_have_no_trailing_whitespace_and_stay_aligned() -> None:
    for width in (100_000, 200):
        out = render(who_table("/t/src/lexer", _holdings(), "at seq 9", "/t"), width)
        lines = out.splitlines()
        assert lines[0] == "who holds src/lexer at seq 9"  # one line, not wrapped to the table
        for line in lines:
            assert line == line.rstrip(), repr(line)
        rows = [line for line in lines[1:] if "│" in line or "┃" in line]
        assert len(rows) == 4  # the header and three holdings
        seps = {tuple(i for i, ch in enumerate(line) if ch in "│┃╇") for line in lines[1:]}
        assert len(seps) == 1, lines  # every column separator in the same place
        assert "│ 'lexer-worker' (delegated from 'builder', from 'runtime') │" in out  # the chain
        assert any(line.split("│")[-1].strip() == "no (delegated below)" for line in rows)
        assert "./** " not in out and " src/** " in out and " src/lexer/** " in out
        assert render(who_table("/t/src/lexer", _holdings(), "at seq 9")).startswith(
            "who holds /t/src/lexer at seq 9\n")


def test_who_table_root_itself_and_nobody() -> None:
    out = render(who_table("/t/src", _holdings()[:1], "now (seq 3)", "/t/src"))
    assert out.startswith("who holds . now (seq 3)\n") and "│ ./** " in out
    assert render(who_table("/t/x", [], "now (seq 3)", "/t")) == "nobody holds x now (seq 3)\n"
    assert render(who_table("/t/x", [], "now (seq 3)")) == "nobody holds /t/x now (seq 3)\n"


# -- plurals -------------------------------------------------------------------------------


def test_plural() -> None:
    assert [plural(n, "event") for n in (0, 1, 2)] == ["0 events", "1 event", "2 events"]


def test_verify_text_pluralises() -> None:
    def report(events: int, snapshots: int) -> VerifyReport:
        return VerifyReport(True, events, snapshots, (), ())

    assert verify_text(report(1, 1), "/l") == "ok: 1 event and 1 snapshot checked in /l"
    assert verify_text(report(3, 0), "/l") == "ok: 3 events and 0 snapshots checked in /l"
    assert verify_text(report(2, 2), "/l") == "ok: 2 events and 2 snapshots checked in /l"


# -- safe: nothing that is not printable reaches the terminal as itself ---------------------

BIDI = "\u061c\u200e\u200f" + "".join(map(chr, range(0x202A, 0x202F))) + "".join(map(chr, range(0x2066, 0x206A)))


@pytest.mark.parametrize("ch, shown", [
    ("\x00", "\\x00"), ("\n", "\\x0a"), ("\x1b", "\\x1b"), ("\x7f", "\\x7f"), ("\x85", "\\x85"),
    ("\x9b", "\\x9b"),                                          # Cc: C0, DEL, C1 (NEL, CSI)
    ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),               # Zl, Zp: line breaks elsewhere
    ("\u202e", "\\u202e"), ("\u2066", "\\u2066"), ("\u200f", "\\u200f"),  # bidi controls (Cf)
    ("\u200b", "\\u200b"), ("\ufeff", "\\ufeff"), ("\xad", "\\xad"),       # invisible (Cf)
    ("\xa0", "\\xa0"), ("\u3000", "\\u3000"),                   # Zs: spaces that pass for one
    ("\udcff", "\\udcff"),                                        # Cs: a file name byte, not UTF-8
    ("\ue000", "\\ue000"), ("\U000e0001", "\\U000e0001"),         # Co, and Cf beyond the BMP
], ids=lambda v: f"U+{ord(v):04X}" if len(v) == 1 else "")
def test_safe_escapes_what_is_not_printable(ch: str, shown: str) -> None:
    assert safe(f"/a{ch}b") == f"/a{shown}b"


def test_safe_escapes_every_separator_and_bidi_control() -> None:
    for ch in BIDI + "\u2028\u2029":
        assert safe(ch) == f"\\u{ord(ch):04x}", unicodedata.name(ch)
    for cp in range(0x110000):
        ch = chr(cp)
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            assert safe(ch).startswith("\\"), hex(cp)


def test_safe_keeps_printable_text_exactly() -> None:
    text = "/srv/données/日本/ü  two spaces/a\\x1b/\U0001f600 ok"  # a literal backslash stays
    assert safe(text) == text
    # a reversed-looking name shows its override, not a disguised extension
    assert safe("invoice\u202egpj.exe") == "invoice\\u202egpj.exe"
