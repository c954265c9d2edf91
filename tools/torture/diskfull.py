"""Disk full on a real tiny tmpfs, run in a private mount namespace::

    unshare --mount python -m tools.torture.diskfull [--rounds N]

Scenarios (each checks: the mutation fails with LedgerIOError naming the
log and the OS error, the log's bytes and the state are unchanged, verify
passes, a fresh open agrees; and once space is freed the ledger works):

* ``enospc``: the log ends on a page boundary and no page is free: the
  append writes nothing (ENOSPC), for every kind of mutation;
* ``short``: the log's last page has room for part of a line: the kernel
  writes a prefix and stops (a real short write), which must be cut back;
* ``snapshot``: snapshots (explicit and automatic) fail for lack of space:
  a clear error, no temp file left, nothing else affected;
* ``torn``: a torn last line must be set aside before the next append, and
  the disk is full (nothing free, or room for only part of the fragment):
  the mutation fails cleanly and the fragment stays in the log, whole,
  until space returns; then it is set aside byte for byte.

The last stdout line is a JSON object; exit 77 when mounting is not permitted.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from typing import Any, Callable

import orjson

PAGE = os.sysconf("SC_PAGE_SIZE")


class Disk:
    def __init__(self, size: str) -> None:
        self.mnt = tempfile.mkdtemp(prefix="sl-diskfull-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", self.mnt],
                           capture_output=True)
        if r.returncode != 0:
            os.rmdir(self.mnt)
            print(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
            sys.exit(77)
        self.filler = os.path.join(self.mnt, "filler")

    def fill(self) -> int:
        """Fill every free page; returns the bytes written."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        n = 0
        try:
            for chunk in (1 << 16, PAGE, 1):
                buf = b"\0" * chunk
                while True:
                    try:
                        w = os.write(fd, buf)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    n += w
                    if w < chunk:
                        break
        finally:
            os.close(fd)
        st = os.statvfs(self.mnt)
        assert st.f_bfree == 0, st
        return n

    def free(self, nbytes: int | None = None) -> None:
        """Free ``nbytes`` (whole pages) of the filler, or all of it."""
        if nbytes is None:
            os.unlink(self.filler)
            return
        size = os.path.getsize(self.filler)
        os.truncate(self.filler, max(0, size - nbytes))

    def close(self) -> None:
        # Lazily: a failed round may still hold descriptors on it.
        subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        shutil.rmtree(self.mnt, ignore_errors=True)


def _bytes(path: str) -> bytes:
    return open(os.path.join(path, "events.jsonl"), "rb").read()


def _names(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path))


def expect_io_error(led: Any, path: str, op: Callable[[], Any], what: str, fig: dict[str, Any]) -> str:
    """``op`` must fail with LedgerIOError and leave no trace."""
    from scopeledger import Ledger, LedgerIOError, verify

    log_before = _bytes(path)
    state_before = led.state().to_json()
    snaps_before = _names(os.path.join(path, "snapshots"))
    torn_dir = os.path.join(path, "torn")
    torn_before = _names(torn_dir) if os.path.isdir(torn_dir) else []
    try:
        op()
    except LedgerIOError as exc:
        msg = str(exc)
        assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC, (what, exc.errno, msg)
        assert msg.startswith("failed to "), msg
        assert "\n" not in msg
    else:
        raise AssertionError(f"{what}: succeeded on a full disk")
    assert _bytes(path) == log_before, f"{what}: the log changed"
    assert led.state().to_json() == state_before, f"{what}: the in-memory state changed"
    assert _names(os.path.join(path, "snapshots")) == snaps_before, f"{what}: snapshots changed"
    torn_after = _names(torn_dir) if os.path.isdir(torn_dir) else []
    assert torn_after == torn_before, f"{what}: torn/ changed: {torn_after}"
    rep = verify(path)
    assert rep.ok, f"{what}: {rep}"
    with Ledger.open(path) as again:
        assert again.state().to_json() == state_before, f"{what}: a fresh open disagrees"
    fig["failed_cleanly"] = fig.get("failed_cleanly", 0) + 1
    fig.setdefault("messages", {})[what] = msg
    return msg


def align_log_to_page(led: Any, path: str, prefix: str) -> None:
    """Register holders until the log ends exactly on a page boundary."""
    from scopeledger import ScopeRule

    i = 0
    while True:
        size = len(_bytes(path))
        need = (-size) % PAGE
        if need == 0:
            return
        i += 1
        probe_name = f"{prefix}{i}x"
        led.register(probe_name, [ScopeRule(f"/align/{prefix}/{i}", "write")])
        line = _bytes(path)[size:]
        base = len(line) - len(probe_name)
        led.release(probe_name)
        size2 = len(_bytes(path))
        need2 = (-size2) % PAGE
        n = need2 - base
        if 1 <= n <= 200:
            name = f"{prefix}{i}" + "n" * (n - len(f"{prefix}{i}"))
            if len(name) == n:
                led.register(name, [ScopeRule(f"/align/{prefix}/{i}", "write")])
        assert i < 500, "could not align the log"


def run(rounds: int = 2) -> dict[str, Any]:
    from scopeledger import Ledger, LedgerIOError, ScopeRule, verify

    fig: dict[str, Any] = {"rounds": 0, "short_writes": 0, "enospc": 0}
    for r in range(rounds):
        disk = Disk("2m")
        try:
            path = os.path.join(disk.mnt, "ledger")
            led = Ledger.open(path, snapshot_every=1_000_000)
            led.register("top", [ScopeRule("/df", "write")])
            for i in range(5):
                led.delegate("top", f"d{i}", [ScopeRule(f"/df/d{i}", "write")])
            led.snapshot()

            # -- enospc: nothing can be written at all ------------------------
            align_log_to_page(led, path, f"al{r}-")
            disk.fill()
            ops: dict[str, Callable[[], Any]] = {  # this round's ledger's calls, bound now
                "register": partial(led.register, "new", [ScopeRule("/elsewhere", "write")]),
                "delegate": partial(led.delegate, "top", "dnew", [ScopeRule("/df/new", "write")]),
                "release": partial(led.release, "d0"),
                "attach": partial(led.attach, "d1"),
                "reclaim": partial(led.reclaim_stale, lambda ident: False),
                "snapshot": led.snapshot,
            }
            for what, op in ops.items():
                expect_io_error(led, path, op, f"enospc-{what}", fig)
                fig["enospc"] += 1
            assert led.find_conflict([ScopeRule("/df/d0", "write")]) is not None  # reads work

            # -- short: part of a line fits ----------------------------------
            disk.free(PAGE)
            led.register(f"s{r}", [ScopeRule(f"/shortpage/{r}", "write")])   # takes the free page
            disk.fill()
            shorts = 0
            for i in range(40):
                size = len(_bytes(path))
                slack = (-size) % PAGE
                try:
                    led.register(f"fill{r}-{i}", [ScopeRule(f"/short/{r}/{i}", "write")])
                except LedgerIOError:
                    assert slack > 0
                    msg = expect_io_error(
                        led, path, partial(led.register, f"fill{r}-{i}", [ScopeRule(f"/short/{r}/{i}", "write")]),
                        "short-write", fig)
                    assert "short write" in msg, msg
                    shorts += 1
                    break
            assert shorts == 1, "no short write happened"
            fig["short_writes"] += shorts

            # -- snapshot: automatic snapshots fail quietly ------------------
            auto = Ledger.open(path, snapshot_every=1)
            disk.free(PAGE)
            auto.register(f"auto{r}", [ScopeRule(f"/autopage/{r}", "write")])  # the page goes to the log
            disk.fill()
            snaps = _names(os.path.join(path, "snapshots"))
            for i in range(5):
                size = len(_bytes(path))
                if (-size) % PAGE < 400:
                    break
                auto.register(f"auto{r}-{i}", [ScopeRule(f"/auto/{r}/{i}", "write")])
            assert _names(os.path.join(path, "snapshots")) == snaps, "a snapshot appeared on a full disk"
            assert not [n for n in os.listdir(os.path.join(path, "snapshots")) if n.startswith(".tmp")]
            assert verify(path).ok
            auto.close()
            led.refresh()

            # -- torn: the fragment cannot be set aside ----------------------
            disk.free()
            big = [ScopeRule(f"/torn/{r}/{'p' * 100}{i}", "write") for i in range(60)]
            led.register(f"big{r}", big)   # a line longer than a page
            full = _bytes(path)
            line = full[full.rstrip(b"\n").rfind(b"\n") + 1:]
            assert len(line) > PAGE
            led.release(f"big{r}")
            fragment = line[: PAGE + 500]       # what a writer killed mid-append leaves
            fd = os.open(os.path.join(path, "events.jsonl"), os.O_WRONLY | os.O_APPEND)
            os.write(fd, fragment)
            os.close(fd)
            disk.fill()
            expect_io_error(led, path, partial(led.register, "t1", [ScopeRule("/t1", "write")]),
                            "torn-nothing-free", fig)
            disk.free(PAGE)                     # room for part of the fragment only
            expect_io_error(led, path, partial(led.register, "t1", [ScopeRule("/t1", "write")]),
                            "torn-part-free", fig)
            assert _bytes(path).endswith(fragment)

            # -- space again ------------------------------------------------------
            disk.free()
            led.register("after", [ScopeRule("/after", "write")])
            torn = os.path.join(path, "torn")
            (name,) = os.listdir(torn)
            assert open(os.path.join(torn, name), "rb").read() == fragment
            assert led.snapshot() == led.seq
            rep = verify(path)
            assert rep.ok, str(rep)
            with Ledger.open(path) as again:
                assert again.state().to_json() == led.state().to_json()
            led.close()
            fig["rounds"] += 1
        finally:
            disk.close()
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse
    import logging

    ap = argparse.ArgumentParser(prog="python -m tools.torture.diskfull")
    ap.add_argument("--rounds", type=int, default=2)
    ns = ap.parse_args(argv)
    logging.getLogger("scopeledger").setLevel(logging.ERROR)
    print(orjson.dumps(run(ns.rounds)).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
