"""The package as a user gets it: the wheel installed in a fresh virtual
environment, the sdist unpacked and tested, the metadata an index shows, and
the platform stance (issue 17, "Habits of the ecosystem").

The wheel and sdist are built once per test session with ``python -m build
--no-isolation`` (the test extra brings ``build`` and ``setuptools>=77``), from
the checkout the tests run in.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import scopeledger

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"wheel": path, "sdist": path}`` built from this checkout."""
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not run from a source tree (no pyproject.toml beside tests/)")
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src") / "scopeledger"
    # Build from a copy, so that the build's egg-info and build/ never land in the checkout.
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", "venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    done = _run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                 "--outdir", str(out), str(src)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(zf.read(name).decode())


def test_the_metadata_states_licence_version_platform_and_typing(dists: dict[str, Path]) -> None:
    meta = _metadata(dists["wheel"])
    assert meta["Version"] == scopeledger.__version__        # one source: scopeledger/_version.py
    assert meta["License-Expression"] == "MIT"               # the SPDX form (PEP 639)
    assert "LICENSE" in meta.get_all("License-File")
    classifiers = meta.get_all("Classifier")
    assert {"Operating System :: POSIX :: Linux", "Typing :: Typed",
            "Programming Language :: Python :: 3.11"} <= set(classifiers)
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression, not both
    assert meta["Requires-Python"] == ">=3.11"


def test_the_wheel_carries_the_help_pages(dists: dict[str, Path]) -> None:
    # ledger help TOPIC reads them from the package (tests/test_cli_help_topics.py).
    from scopeledger.cli import helptopics

    docs = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    with zipfile.ZipFile(dists["wheel"]) as zf:
        for topic, (heading, _what) in helptopics.TOPICS.items():
            assert zf.read(f"scopeledger/cli/help/{topic}.md").decode() == helptopics.section(docs, heading)


def test_the_wheel_carries_the_licence_the_types_marker_and_the_schema(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = set(zf.namelist())
    assert "scopeledger/py.typed" in names
    assert "scopeledger/schema/event.schema.json" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "tools/")) for n in names)


def test_the_wheel_works_in_a_fresh_environment(dists: dict[str, Path], tmp_path: Path) -> None:
    """The wheel in a new venv: the console script, the version, the schema as a
    package resource, and a grant. Its dependencies come from this environment's
    site-packages through a plain path line (which runs none of the .pth files
    there, so this checkout's editable install is not seen)."""
    venv = tmp_path / "fresh"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "deps-from-the-test-env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                 "--no-index", str(dists["wheel"])])
    assert done.returncode == 0, done.stderr
    version = _run([str(venv / "bin" / "ledger"), "--version"], cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert scopeledger.__version__ in version.stdout
    probe = _run([str(py), "-c", """
import importlib.resources, json, os, sys, tempfile
import scopeledger
from scopeledger import Ledger, ScopeRule
print(scopeledger.__file__)
schema = json.loads((importlib.resources.files("scopeledger") / "schema/event.schema.json").read_text())
assert schema["$schema"].startswith("https://json-schema.org/"), schema.get("$schema")
d = tempfile.mkdtemp()
led = Ledger.open(os.path.join(d, "ledger"))
led.register("a", [ScopeRule(os.path.join(d, "tree"), "write")])
print([h.name for h in led.holders()])
"""], cwd=tmp_path)  # not the checkout: python -c puts the working directory first on sys.path
    assert probe.returncode == 0, probe.stderr
    where, holders = probe.stdout.splitlines()
    assert where.startswith(str(site))                       # the wheel's copy, not this checkout
    assert holders == "['a']"


def test_the_sdist_holds_what_its_tests_need_and_they_pass(dists: dict[str, Path], tmp_path: Path) -> None:
    """Every tracked file but CI's own is in the sdist, and tests run from the
    unpacked sdist pass (a sample: the public API, the rules, this file's
    platform test; the whole suite is what CI runs on the checkout)."""
    with tarfile.open(dists["sdist"]) as tf:
        tf.extractall(tmp_path, filter="data")
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if m.isfile() and "/" in m.name}
    tracked = _run(["git", "-C", str(ROOT), "ls-files"])
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: nothing to compare the sdist's files with")
    wanted = {f for f in tracked.stdout.splitlines()
              if not f.startswith(".ci/") and f != ".gitignore" and (ROOT / f).exists()}
    assert wanted - members == set()
    (unpacked,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                 "tests/test_public_api.py", "tests/test_rules.py",
                 "tests/test_packaging.py::test_importing_elsewhere_than_linux_is_a_clear_error"],
                cwd=unpacked, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                   "PYTHONPATH": str(unpacked)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout
    # ... and those tests imported the unpacked copy, not this checkout.
    where = _run([sys.executable, "-c", "import scopeledger; print(scopeledger.__file__)"],
                 cwd=unpacked, env={"PYTHONPATH": str(unpacked)}).stdout
    assert where.startswith(str(unpacked)), where


@pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
def test_importing_elsewhere_than_linux_is_a_clear_error(platform: str) -> None:
    """Linux only (identity and liveness read /proc): elsewhere the import itself
    fails with UnsupportedPlatform, an ImportError naming the platform."""
    done = _run([sys.executable, "-c", f"""
import sys
sys.platform = {platform!r}
try:
    import scopeledger
except ImportError as e:
    print(type(e).__name__, "|", e)
else:
    print("imported")
"""])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"UnsupportedPlatform | scopeledger runs on Linux only (this is "
                                   f"{platform!r}): a holder's identity and liveness are read from /proc")
