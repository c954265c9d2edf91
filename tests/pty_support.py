"""Running the installed ``ledger`` with a pseudo-terminal (the ``pty`` module) as its
stdout and/or stderr, to test what it does on a terminal (colour, progress) and what
it does not do off one."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import struct
import subprocess
import tempfile
import termios
import time
from typing import NamedTuple, Sequence


class PtyRun(NamedTuple):
    returncode: int
    tty: str     #: what was written to the terminal (``\r\n`` line ends, as a terminal gets them)
    stdout: str  #: stdout when it was not the terminal
    stderr: str  #: stderr when it was not the terminal


def run_pty(argv: Sequence[str], env: dict[str, str], stdout_tty: bool = True,
            stderr_tty: bool = True, timeout: float = 120.0, columns: int = 120) -> PtyRun:
    """Run ``argv`` with the chosen streams on a new pseudo-terminal (``columns``
    wide) and the others in files; read the terminal until the child has
    closed it, bounded by ``timeout`` seconds (then the child is killed and
    ``TimeoutError`` raised)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                                 stdout=slave if stdout_tty else out,
                                 stderr=slave if stderr_tty else err, env=env,
                                 start_new_session=True)
        finally:
            os.close(slave)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    p.kill()
                    p.wait()
                    raise TimeoutError(f"{argv} still running after {timeout} s")
                ready, _, _ = select.select([master], [], [], left)
                if not ready:
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError as exc:  # EIO: every holder of the terminal closed it
                    if exc.errno != errno.EIO:
                        raise
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
        code = p.wait(timeout=max(1.0, deadline - time.monotonic()))
        out.seek(0)
        err.seek(0)
        return PtyRun(code, b"".join(chunks).decode("utf-8", "replace"),
                      out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"))
