"""The checks of the public API's arguments, shared by :class:`Ledger`,
:class:`AsyncLedger` and the waiting code: each raises a typed error naming
the argument and the value (``_errors.shown``), before anything is recorded.
Pure: no IO, no clock, no process (``tests/test_fold_purity.py``)."""

from __future__ import annotations

import math
from typing import Any

from ._errors import InvalidArgument, InvalidScope, shown
from ._rules import check_path_text


def check_bool(what: str, value: Any) -> None:
    """Raises ``TypeError`` (naming ``what``) unless ``value`` is a ``bool``."""
    if type(value) is not bool:
        raise TypeError(f"{what} must be True or False, not {shown(value)}")


def check_timeout(what: str, timeout: Any) -> None:
    """Raises ``ValueError`` (naming ``what``) unless ``timeout`` is ``None``
    or a number of seconds from 0 to 1e9."""
    if timeout is not None and not (type(timeout) in (int, float) and 0 <= timeout <= 1e9):
        raise ValueError(f"{what} must be None or a number of seconds from 0 to 1e9, not {shown(timeout)}")


def check_snapshot_every(what: str, snapshot_every: Any) -> None:
    """Raises ``ValueError`` (naming ``what``) unless ``snapshot_every`` is an
    ``int`` >= 1 (events)."""
    if type(snapshot_every) is not int or snapshot_every < 1:
        raise ValueError(f"{what} must be an int >= 1, not {shown(snapshot_every)}")


def check_keep_snapshots(what: str, keep_snapshots: Any) -> None:
    """Raises ``ValueError`` (naming ``what``) unless ``keep_snapshots`` is
    ``None`` or an ``int`` >= 1."""
    if keep_snapshots is not None and (type(keep_snapshots) is not int or keep_snapshots < 1):
        raise ValueError(f"{what} must be None or an int >= 1, not {shown(keep_snapshots)}")


def check_token(token: Any, allow_none: bool = False, what: str = "token") -> None:
    """Raises ``TypeError`` (naming ``what``) unless ``token`` is an ``int``
    (a grant's seq), or ``None`` with ``allow_none``."""
    if not (type(token) is int or (allow_none and token is None)):
        raise TypeError(f"{what} must be an int (a grant's seq){' or None' if allow_none else ''}, "
                        f"not {shown(token)}")


def check_socket(socket: Any) -> str | None:
    """``socket`` as the event records it: ``None`` or a plain ``str``
    absolute path, UTF-8 encodable (the log is UTF-8 JSON), without NUL,
    shorter than ``PATH_MAX`` (4096) bytes, as a rule's path.

    Raises:
        InvalidScope: anything else.
    """
    if socket is None:
        return None
    if not isinstance(socket, str):
        raise InvalidScope(f"invalid socket {shown(socket)}: expected an absolute path or None")
    check_path_text(socket, "socket")
    return socket if type(socket) is str else str.__str__(socket)


def check_advisory(advisory: Any) -> None:
    """Raises :class:`InvalidArgument` unless ``advisory`` is a ``bool``."""
    if type(advisory) is not bool:
        raise InvalidArgument(f"advisory must be True or False, not {shown(advisory)}")


def check_forced(force: Any, reason: Any) -> str | None:
    """``release``'s ``forced`` key from ``force`` and ``reason`` (see its
    Raises), or ``None`` for a release that is not forced."""
    if type(force) is not bool:
        raise InvalidArgument(f"force must be True or False, not {shown(force)}")
    if not force:
        if reason is not None:
            raise InvalidArgument(f"reason {shown(reason)} is given without force=True: a reason is "
                                  "recorded for a forced release (give note= for a release's note)")
        return None
    if reason is None:
        raise InvalidArgument("force=True needs a reason (reason='why the holder's scope is taken')")
    if not isinstance(reason, str) or not 0 < len(reason) <= 4096:
        raise InvalidArgument(f"reason must be a str of 1 to 4096 characters, not {shown(reason)}"
                              + (f" ({len(reason)} characters)" if isinstance(reason, str) else ""))
    try:
        reason.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"reason {shown(reason)} is not text UTF-8 can encode: {exc.reason} "
                              f"at {exc.start}") from None
    return str.__str__(reason)


def check_note(note: Any) -> str | None:
    """A grant's or release's ``note`` as the log records it.

    Raises:
        TypeError: not a ``str`` or ``None``.
        ValueError: over 4096 characters, or not encodable (a lone surrogate).
    """
    if note is None:
        return None
    if not isinstance(note, str):
        raise TypeError(f"note must be a str or None, not {shown(note)}")
    if len(note) > 4096:
        raise ValueError(f"note must be at most 4096 characters, not {len(note)}")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"note must be text that UTF-8 can encode: {exc.reason} at {exc.start}") from None
    return str.__str__(note)


def asks_to_wait(wait: Any) -> bool:
    """Whether ``wait=`` asks to wait (anything but 0 or 0.0; a bad value
    is refused by :func:`check_wait`)."""
    return not (type(wait) in (int, float) and wait == 0)


#: The longest finite ``wait=`` in seconds (about 31 years, as ``timeout``);
#: ``math.inf`` waits for ever.
MAX_WAIT = 1e9


def check_wait(wait: Any) -> float:
    """``wait`` as seconds (``math.inf``: for ever).

    Raises:
        TypeError: not an ``int`` or ``float`` (a ``bool``, ``None``).
        ValueError: negative, NaN, or finite and above :data:`MAX_WAIT`
            (``10**400`` too: no float holds it), naming the value.
    """
    if type(wait) not in (int, float):
        raise TypeError(f"wait must be seconds (int or float; 0 refuses at once, math.inf waits for ever), "
                        f"not {shown(wait)}")
    # (an int is compared as it is: float() of 10**400 overflows)
    if wait != wait or wait < 0 or (wait > MAX_WAIT and wait != math.inf):
        raise ValueError(f"wait must be seconds from 0 to {MAX_WAIT:g} (math.inf waits for ever), "
                         f"not {shown(wait)}")
    return float(wait)


#: ``co_flags`` of a function whose call makes a coroutine, an awaitable
#: generator or an async generator instead of running it
#: (CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR; CPython's
#: ``Include/cpython/code.h``).
_ASYNC_CODE_FLAGS = 0x80 | 0x100 | 0x200


def check_callable(what: str, value: Any) -> None:
    """Raises ``TypeError`` (naming ``what``) unless ``value`` is ``None`` or
    a plain callable: every such callback is called, never awaited, so an
    ``async def`` (whose call would only make a coroutine, never run) is
    refused too."""
    if value is None:
        return
    if not callable(value):
        raise TypeError(f"{what} must be None or a callable, not {shown(value)}")
    code = getattr(getattr(value, "__func__", value), "__code__", None)
    if code is not None and code.co_flags & _ASYNC_CODE_FLAGS:
        raise TypeError(f"{what} must be a plain callable (it is called, not awaited), not an async "
                        f"function: {shown(value)}")


def check_options(timeout: Any, probe: Any, fsync: Any, snapshot_every: Any, keep_snapshots: Any,
                   resolve_symlinks: Any, clock: Any) -> None:
    """Validate :meth:`Ledger.open`'s options (see its Raises)."""
    check_timeout("timeout", timeout)
    check_snapshot_every("snapshot_every", snapshot_every)
    check_keep_snapshots("keep_snapshots", keep_snapshots)
    check_bool("fsync", fsync)
    check_bool("resolve_symlinks", resolve_symlinks)
    check_callable("probe", probe)
    check_callable("clock", clock)


def check_switch_interval(interval: Any) -> None:
    """Raises ``TypeError`` unless ``interval`` is ``None`` or an ``int`` or
    ``float``, ``ValueError`` unless it is then seconds > 0 and <= 1
    (``AsyncLedger``'s ``switch_interval``)."""
    if interval is None:
        return
    if type(interval) not in (int, float):
        raise TypeError(f"switch_interval must be None or seconds (an int or float), not {shown(interval)}")
    if not 0 < interval <= 1:
        raise ValueError(f"switch_interval must be None or seconds > 0 and <= 1, not {shown(interval)}")
