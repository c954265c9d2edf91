"""Real file systems for tests: an xfs loop image (shut down to simulate a
power cut or a failing disk). Skips, with the reason, where that cannot be
done (not root, no xfs tools, no loop devices: ``.ci/run`` installs
xfsprogs)."""

import contextlib
import os
import shutil
import subprocess
import time

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


@contextlib.contextmanager
def xfs_mount(base, size_mb: int = 300):
    """Mount a fresh xfs image of ``size_mb`` MiB (sparse, under ``base``)
    on a directory under ``base``; yields the mount point. A shut down
    file system is unmounted and its loop device detached afterwards."""
    why = xfs_missing()
    if why:
        pytest.skip(why)
    base = str(base)
    image = os.path.join(base, "xfs.img")
    mnt = os.path.join(base, "xfs")
    os.makedirs(mnt, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    p = _run("mkfs.xfs", "-q", "-f", image)
    if p.returncode:
        pytest.skip(f"mkfs.xfs failed: {p.stderr.strip()}")
    p = _run("losetup", "--find", "--show", image)
    if p.returncode:
        pytest.skip(f"no free loop device: {p.stderr.strip()}")
    dev = p.stdout.strip()
    try:
        p = _run("mount", "-t", "xfs", dev, mnt)
        if p.returncode:
            pytest.skip(f"cannot mount an xfs loop image here: {p.stderr.strip()}")
        try:
            yield mnt
        finally:
            if _run("umount", mnt).returncode:  # still open (a test failed): let go lazily
                _run("umount", "-l", mnt)
    finally:
        _run("losetup", "-d", dev)


def remount(mnt: str, image_dev_cmd=None) -> None:
    """Unmount and mount again the xfs at ``mnt`` (after a shutdown: what
    the disk holds is what a power cut would have left)."""
    src = _run("findmnt", "-n", "-o", "SOURCE", mnt).stdout.strip()
    p = _run("umount", mnt)
    assert p.returncode == 0, p.stderr
    p = _run("mount", "-t", "xfs", src, mnt)
    assert p.returncode == 0, p.stderr


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
    base = str(base)
    backing = os.path.join(base, "backing")
    mnt = os.path.join(base, "failing")
    os.makedirs(backing, exist_ok=True)
    os.makedirs(mnt, exist_ok=True)
    p = _run("mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", backing)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    dev = None
    try:
        image = os.path.join(backing, "img")
        with open(image, "wb") as f:
            f.truncate(300 << 20)
        p = _run("mkfs.xfs", "-q", "-f", image)
        if p.returncode:
            pytest.skip(f"mkfs.xfs failed: {p.stderr.strip()}")
        p = _run("losetup", "--find", "--show", image)
        if p.returncode:
            pytest.skip(f"no free loop device: {p.stderr.strip()}")
        dev = p.stdout.strip()
        p = _run("mount", "-t", "xfs", dev, mnt)
        if p.returncode:
            pytest.skip(f"cannot mount an xfs loop image here: {p.stderr.strip()}")

        def fill() -> None:
            try:
                with open(os.path.join(backing, "fill"), "wb") as f:
                    while True:
                        f.write(b"\0" * (1 << 20))
            except OSError:
                pass

        try:
            yield mnt, fill
        finally:
            if _run("umount", mnt).returncode:  # still open (a test failed): let go lazily
                _run("umount", "-l", mnt)
    finally:
        if dev is not None:
            _run("losetup", "-d", dev)
        for _ in range(100):  # the loop device lets go of its file asynchronously
            if _run("umount", backing).returncode == 0 or not os.path.ismount(backing):
                break
            time.sleep(0.05)
