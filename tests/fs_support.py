"""Real file systems for tests: an xfs loop image (shut down to simulate a
power cut or a failing disk). Skips, with the reason, where that cannot be
done (not root, no xfs tools, no loop devices: ``.ci/run`` installs
xfsprogs)."""

import contextlib
import fcntl
import os
import shutil
import subprocess

import pytest


def xfs_missing() -> str | None:
    """Why an xfs loop image cannot be used here, or None."""
    if os.geteuid() != 0:
        return "mounting a loop image needs root"
    for tool in ("mkfs.xfs", "xfs_io", "losetup", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian: apt-get install xfsprogs)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control)"
    try:
        with open("/proc/filesystems") as f:
            if "xfs" not in f.read().split():
                return "the kernel does not offer xfs (/proc/filesystems)"
    except OSError as exc:
        return f"cannot read /proc/filesystems: {exc}"
    return None


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _loop_xfs(image: str, size_mb: int) -> str:
    """A sparse xfs image of ``size_mb`` MiB at ``image`` on a new loop
    device; returns the device. Skips, saying why, where that fails."""
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    p = _run("mkfs.xfs", "-q", "-f", image)
    if p.returncode:
        pytest.skip(f"mkfs.xfs failed: {p.stderr.strip()}")
    p = _run("losetup", "--find", "--show", image)
    if p.returncode:
        pytest.skip(f"no free loop device: {p.stderr.strip()}")
    return p.stdout.strip()


def _mount_xfs(dev: str, mnt: str) -> None:
    p = _run("mount", "-t", "xfs", dev, mnt)
    if p.returncode:
        _run("losetup", "-d", dev)
        pytest.skip(f"cannot mount an xfs loop image here: {p.stderr.strip()}")


#: Loop devices belong to the whole machine, not to one test (xdist worker).
LOOP_LOCK = "/run/scopeledger-tests-loop.lock"


@contextlib.contextmanager
def one_loop_user():
    """Hold the machine's loop devices for the block: tests that attach
    loop devices run one at a time, so no test's device is freed and
    taken again by another while the first one's writes may still be in
    flight. (A precaution; the EIO that whole-suite runs met now and then
    in the power-cut test had another cause, found in session 8: a mount
    namespace made by a concurrent test kept the shut down file system
    alive, and mounting its device again handed it back; tools/powercut.py
    remounts from a fresh loop device then, tests/test_durability.py.)"""
    fd = os.open(LOOP_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _xfs_at(image: str, mnt: str, size_mb: int):
    """A fresh xfs image at ``image`` mounted on ``mnt`` for the block;
    unmounted (lazily if something is still open) and detached afterwards."""
    with one_loop_user():
        dev = _loop_xfs(image, size_mb)
        try:
            _mount_xfs(dev, mnt)
            try:
                yield mnt
            finally:
                if _run("umount", mnt).returncode:  # still open (a test failed): let go lazily
                    _run("umount", "-l", mnt)
        finally:
            _run("losetup", "-d", dev)


@contextlib.contextmanager
def xfs_mount(base, size_mb: int = 300):
    """Mount a fresh xfs image of ``size_mb`` MiB (sparse, under ``base``)
    on a directory under ``base``; yields the mount point. A shut down
    file system is unmounted and its loop device detached afterwards."""
    why = xfs_missing()
    if why:
        pytest.skip(why)
    mnt = os.path.join(str(base), "xfs")
    os.makedirs(mnt, exist_ok=True)
    with _xfs_at(os.path.join(str(base), "xfs.img"), mnt, size_mb):
        yield mnt


@contextlib.contextmanager
def failing_xfs(base):
    """An xfs on a loop device whose backing file is a sparse image on a
    small tmpfs: once ``fill()`` has filled the tmpfs, writing back new
    data to the device fails for real ("critical space allocation error",
    ``fdatasync`` fails), while what is cached stays readable and the file
    system stays mounted read-write. Yields ``(mount point, fill)``."""
    why = xfs_missing()
    if why:
        pytest.skip(why)
    mnt = os.path.join(str(base), "failing")
    os.makedirs(mnt, exist_ok=True)
    with tmpfs_mount(base, "size=80m") as backing:
        with _xfs_at(os.path.join(backing, "img"), mnt, 300):

            def fill() -> None:
                try:
                    with open(os.path.join(backing, "fill"), "wb") as f:
                        while True:
                            f.write(b"\0" * (1 << 20))
                except OSError:
                    pass

            yield mnt, fill


@contextlib.contextmanager
def tmpfs_mount(base, options: str):
    """Mount a tmpfs with ``options`` (``"ro,size=1m"``) on ``base/tmpfs``;
    yields its path. Skips, saying why, where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = os.path.join(str(base), "tmpfs")
    os.makedirs(mnt, exist_ok=True)
    p = _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", mnt)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        if _run("umount", mnt).returncode:  # still open (a test failed): let go lazily
            _run("umount", "-l", mnt)

