"""Runtime embedding: manifests, socket paths, one-call install."""

import subprocess
import sys
import textwrap

import pytest

from scopeledger import (
    InvalidManifest,
    Ledger,
    ScopeConflict,
    ScopeRule,
    install_from_manifest,
    load_manifest,
    runtime_base,
    socket_path_for,
)

MANIFEST = """
[holder]
name = "builder"

[scope]
write = ["src/**", "out/*"]
read = ["docs"]

[[scope.rules]]
path = "tests"
permission = "write"
recursive = false
"""


def write(tmp_path, text, name="pod.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_manifest(tmp_path):
    m = load_manifest(write(tmp_path, MANIFEST))
    root = str(tmp_path)
    assert m.name == "builder"
    assert m.rules == (ScopeRule(f"{root}/src", "write", True), ScopeRule(f"{root}/out", "write", False),
                       ScopeRule(f"{root}/docs", "read", True), ScopeRule(f"{root}/tests", "write", False))


def test_the_compact_scope_table_takes_exclusive_read(tmp_path):
    """``exclusive-read = [...]`` beside write and read, as the command line's
    --exclusive-read (it was refused as an extra field: fresh tester's F8)."""
    m = load_manifest(write(tmp_path, '[holder]\nname="x"\nroot="/repo"\n[scope]\n'
                                      'exclusive-read=["data/**", "cfg/*"]\nwrite=["out"]\n'))
    assert m.rules == (ScopeRule("/repo/out", "write"), ScopeRule("/repo/data", "exclusive-read"),
                       ScopeRule("/repo/cfg", "exclusive-read", False))


def test_root_override(tmp_path):
    m = load_manifest(write(tmp_path, '[holder]\nname="x"\nroot="/repo"\n[scope]\nwrite=["a"]\n'))
    assert m.rules == (ScopeRule("/repo/a", "write"),)


@pytest.mark.parametrize("text, why", [
    ("not toml [", "not TOML"),
    ("[holder]\nname='x'\n", "required field missing @ manifest.scope"),
    ("[scope]\nwrite=['a']\n", "required field missing @ manifest.holder"),
    ("[holder]\nname=1\n[scope]\nwrite=['a']\n", "manifest.holder.name"),
    ("[holder]\nname='x'\ncolour='red'\n[scope]\nwrite=['a']\n", r"extra fields found \(colour\)"),
    ("[holder]\nname='x'\n[scope]\nwrite='a'\n", "manifest.scope.write"),
    ("[holder]\nname='x'\n[scope]\n", "no scope rules"),
    ("[holder]\nname='a/../b'\n[scope]\nwrite=['a']\n", "invalid holder name"),
    ("[holder]\nname='x'\n[scope]\nwrite=['../../etc']\n", "climbs out"),
    ("[holder]\nname='x'\n[[scope.rules]]\npath='a'\npermission='exec'\n", "invalid permission"),
    ("[holder]\nname='x'\n[[scope.rules]]\npath='a'\npermission='read'\nrecursive='yes'\n", "recursive"),
    # The long form's path is a path: 'src/**' with recursive = false was
    # read as 'src', non-recursive, whatever the '**' said.
    ("[holder]\nname='x'\n[[scope.rules]]\npath='src/**'\npermission='write'\nrecursive=false\n",
     r"'\*' is rule syntax, not part of a path .* @ manifest.scope.rules\[0\].path"),
    ("[holder]\nname='x'\n[scope]\nwrite=['src/*.py']\n", r"no other wildcard\) @ manifest.scope.write\[0\]"),
    ("[holder]\nname='x'\n[scope]\nexclusive-read='a'\n", r"expected a list.* @ manifest.scope.exclusive-read$"),
    ("[holder]\nname='x'\n[scope]\nexclusive-read=['../../etc']\n",
     r"climbs out .*@ manifest.scope.exclusive-read\[0\]"),
    ("[holder]\nname='x'\n[scope]\nexclusive_read=['a']\n", r"extra fields found \(exclusive_read\)"),
    ("[holder]\nname='x'\n[[scope.rules]]\npath=''\npermission='exclusive-read'\n",
     r"@ manifest.scope.rules\[0\].path"),
])
def test_bad_manifests(tmp_path, text, why):
    with pytest.raises(InvalidManifest, match=why):
        load_manifest(write(tmp_path, text))


def test_missing_manifest_file(tmp_path):
    with pytest.raises(InvalidManifest, match="cannot read manifest"):
        load_manifest(tmp_path / "nope.toml")


def test_socket_path_is_one_function(monkeypatch, tmp_path):
    monkeypatch.setenv("SCOPELEDGER_RUNTIME_DIR", str(tmp_path / "rt"))
    assert runtime_base() == str(tmp_path / "rt")
    assert socket_path_for("builder") == str(tmp_path / "rt" / "builder" / "sock")
    monkeypatch.delenv("SCOPELEDGER_RUNTIME_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert socket_path_for("b") == "/run/user/7/scopeledger/b/sock"


def test_install_from_manifest_records_the_socket_and_releases(tmp_path, ledger):
    guard = install_from_manifest(ledger, write(tmp_path, MANIFEST), runtime_dir="/rt")
    alloc = ledger.holder("builder")
    assert alloc.socket == "/rt/builder/sock" == socket_path_for("builder", "/rt")
    with pytest.raises(ScopeConflict):
        ledger.register("other", [ScopeRule(str(tmp_path / "src" / "x"), "write")])
    with guard as a:
        assert a == alloc
    assert ledger.holders() == []


def test_guard_releases_at_interpreter_exit(tmp_path, ledger_dir):
    manifest = write(tmp_path, MANIFEST)
    code = textwrap.dedent(f"""
        from scopeledger import Ledger, install_from_manifest
        led = Ledger.open({ledger_dir!r})
        guard = install_from_manifest(led, {str(manifest)!r})
        print(led.holder("builder").token)
        # no explicit release: the interpreter exits with the guard alive
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    led = Ledger.open(ledger_dir)
    assert led.holders() == []
    assert [e.type for e in led.events()] == ["registered", "released"]
