"""Issue 13, "Smaller faults found on the way": a hold() guard that is not
kept, an empty $SCOPELEDGER_DIR, --json and characters that are not
printable."""

import gc
import json
import os
import subprocess
import sys
import warnings

import pytest

from scopeledger import Ledger, NoLedger, ScopeRule, default_path, verify

W = lambda p: ScopeRule(p, "write")  # noqa: E731
LEDGER = os.path.join(os.path.dirname(sys.executable), "ledger")


# -- hold() guards ------------------------------------------------------------------------


def test_a_hold_guard_collected_by_the_garbage_collector_warns(ledger):
    with pytest.warns(ResourceWarning, match=r"hold\(\) guard of holder 'job' \(token \d+\) was "
                                             r"garbage collected: its allocation is released"):
        token = ledger.hold("job", [W("/job")]).allocation.token  # the guard is not kept
        gc.collect()
    assert not ledger.check("job", token)


def test_a_hold_guard_in_a_cycle_warns_when_the_cycle_is_collected(ledger):
    guard = ledger.hold("job", [W("/job")])
    guard.me = guard  # a cycle: only the cyclic collector frees it
    del guard
    with pytest.warns(ResourceWarning, match="'job'"):
        gc.collect()
    assert ledger.holders() == []


@pytest.mark.parametrize("how", ["with", "release", "close"])
def test_a_hold_guard_released_on_purpose_does_not_warn(ledger_dir, how):
    led = Ledger.open(ledger_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        if how == "with":
            with led.hold("job", [W("/job")]):
                pass
        elif how == "release":
            g = led.hold("job", [W("/job")])
            g.release()
            del g
        else:
            g = led.hold("job", [W("/job")])
            led.close()
            del g
        gc.collect()
    if how != "close":
        assert led.holders() == []
        led.close()
    assert Ledger.open(ledger_dir).holders() == []


def test_a_hold_guard_kept_to_interpreter_exit_is_released_without_a_warning(ledger_dir):
    code = ("import sys; from scopeledger import Ledger, ScopeRule\n"
            f"led = Ledger.open({ledger_dir!r})\n"
            "g = led.hold('job', [ScopeRule('/job', 'write')])\n")
    p = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "ResourceWarning" not in p.stderr
    assert Ledger.open(ledger_dir).holders() == []


# -- an empty $SCOPELEDGER_DIR: one rule ---------------------------------------------------------


@pytest.mark.parametrize("value", ["", "  ", "\t"])
def test_an_empty_scopeledger_dir_is_refused_by_the_library_as_by_the_cli(tmp_path, monkeypatch, value):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("SCOPELEDGER_DIR", value)
    monkeypatch.chdir(tmp_path)
    says = r"\$SCOPELEDGER_DIR is set but empty: set it to a ledger directory or unset it"
    with pytest.raises(NoLedger, match=says):
        default_path()
    with pytest.raises(NoLedger, match=says):
        Ledger.open()
    with pytest.raises(NoLedger, match=says):
        verify()
    p = subprocess.run([LEDGER, "show"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "$SCOPELEDGER_DIR is set but empty" in p.stderr
    assert os.listdir(tmp_path) == []  # nothing created: no default ledger, no "  " directory


# -- --json: characters that are not printable are JSON escapes -----------------------------------


NOT_PRINTABLE = "\u202e\u2066\u200b\u2028\u00a0\x7f\x85\x1b\U000e0001"


def _strings(doc):
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from _strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _strings(v)


def _run(ledger_dir, *args):
    return subprocess.run([LEDGER, "--ledger", ledger_dir, "--json", *args], capture_output=True,
                          text=True, timeout=60, errors="surrogateescape")


def test_json_output_escapes_every_character_that_is_not_printable(ledger_dir, tmp_path):
    path = f"/t/evil{NOT_PRINTABLE}name"
    with Ledger.open(ledger_dir, resolve_symlinks=False) as led:
        led.register("h", [ScopeRule(path, "write")])
    for args in (["show"], ["replay"], ["history", "h"], ["who", path], ["check", "--write", path]):
        p = _run(ledger_dir, *args)
        out = p.stdout + p.stderr
        assert out.strip(), args
        for ch in NOT_PRINTABLE:
            assert ch not in out, (args, hex(ord(ch)), out)
        assert "\\u202e" in out and "\\u2028" in out and "\\u007f" in out and "\\udb40\\udc01" in out, args
        assert p.returncode in (0, 1), (args, p.stdout, p.stderr)  # check: 1, would be refused
        docs = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
        assert any(path in text for d in docs for text in _strings(d)), args  # exactly the path
    # An error document too (the message names the path).
    missing = str(tmp_path / f"none{NOT_PRINTABLE}")
    p = _run(missing, "show")
    assert p.returncode == 6, p
    for ch in NOT_PRINTABLE:
        assert ch not in p.stdout + p.stderr
    assert missing in json.loads(p.stdout)["error"]["message"]


def test_the_log_stores_characters_that_are_not_printable_escaped(ledger_dir):
    """replay --json writes lines as stored: the stored line is escaped,
    and decodes to the very path (the chain is of the stored bytes)."""
    path = f"/t/evil{NOT_PRINTABLE}name"
    with Ledger.open(ledger_dir, resolve_symlinks=False) as led:
        led.register("h", [ScopeRule(path, "write")])
        assert led.holder("h").rules[0].path == path
    raw = open(os.path.join(ledger_dir, "events.jsonl"), "rb").read()
    text = raw.decode("utf-8")
    assert text.isascii() or all(ch.isprintable() or ch == "\n" for ch in text)
    assert b"\\u202e" in raw and b"\\u007f" in raw
    assert Ledger.open(ledger_dir).holder("h").rules[0].path == path
    assert verify(ledger_dir).ok
