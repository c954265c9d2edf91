"""The checks of the public API's arguments, shared by :class:`Ledger`,
:class:`AsyncLedger` and the waiting code: each raises a typed error naming
the argument and the value (``_errors.shown``), before anything is recorded.
Pure: no IO, no clock, no process (``tests/test_fold_purity.py``)."""

from __future__ import annotations

import functools
import inspect
import math
import operator
import sys
from typing import Any

from ._errors import InvalidArgument, InvalidProcess, InvalidScope, shown
from ._rules import check_path_text


def check_bool(what: str, value: Any) -> bool:
    """``value``, when it is a ``bool``; else ``TypeError`` naming ``what``."""
    if type(value) is not bool:
        raise TypeError(f"{what} must be True or False, not {shown(value)}")
    return value


# -- numbers: seconds and counts ------------------------------------------------------------
#
# What a number argument takes, the same for every one (seconds: wait, ttl,
# timeout, session_ttl, switch_interval; counts: snapshot_every,
# keep_snapshots, keep, workers): see real() and integer().


def real(value: Any) -> int | float | None:
    """``value`` as a plain ``int`` or ``float`` when it is a real number,
    else ``None``: the one reading of a seconds argument (``wait=``,
    ``ttl=``, ``timeout=``, ...), so that each takes what the others take.

    Taken: ``int`` and ``float`` and their subclasses (an ``IntEnum``,
    ``numpy.float64``), and whatever registers as a :class:`numbers.Real`
    (``fractions.Fraction``, numpy's other scalars: ``numpy.int64``,
    ``numpy.float32``): an integral one as its ``int``
    (``operator.index``), any other as ``float(value)``, or, when no float
    holds it (``Fraction(10**400)``, a huge ``numpy.longdouble``), as its
    ``int``, which no range here admits.

    Refused (``None``): a ``bool`` (a flag, though Python makes it an
    ``int``), and what is not a :class:`numbers.Real`: ``None``, a ``str``,
    ``bytes``, a ``complex``, and a ``decimal.Decimal``, which the standard
    library registers as a :class:`numbers.Number` only (it refuses to mix
    with ``float`` arithmetic): ``float(d)`` gives the seconds it means.
    Pure: the caller checks the range and names the argument.
    """
    kind = type(value)
    if kind is float or kind is int:  # (the common case first: no ABC check)
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return float.__float__(value)  # (a plain float, whatever the subclass's __float__ says)
    if isinstance(value, int):
        return operator.index(value)  # (a plain int: an IntEnum's)
    numbers = _numbers()
    if numbers is None or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return operator.index(value)  # (a plain int: numpy.int64's)
    try:
        number = float(value)
        if math.isinf(number) and value != number:  # (a numpy.longdouble beyond a float's range)
            raise OverflowError
    except OverflowError:
        try:
            return int(value)  # (out of every range here, compared as it is)
        except (TypeError, ValueError, OverflowError):
            return None
    return number


def integer(value: Any) -> int | None:
    """``value`` as a plain ``int`` when it is an integer, else ``None``:
    the one reading of an integer argument, counts (``snapshot_every``,
    ``keep``, ``workers``, ...) and identifiers (a token, a seq, a pid: see
    :func:`check_token`, :func:`check_seq`) alike. Taken: an ``int`` or a
    subclass of it (an ``IntEnum``), or whatever ``operator.index`` takes
    (``numpy.int64``, ``numpy.uint8``, a 0-d integer array), as the plain
    ``int`` it stands for. Refused: a ``bool`` (a flag, though Python makes
    it an ``int``; numpy's ``bool`` has no ``__index__``), and every float,
    ``5.0`` too (a count is never a measurement), a ``str``, a
    ``fractions.Fraction``, a ``decimal.Decimal``."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # (a plain int: an IntEnum's, numpy.int64's)
    except TypeError:
        return None


def _numbers() -> Any:
    """The :mod:`numbers` module when it is loaded, else ``None``. Not
    imported here: it would cost every ``ledger run`` ~0.4 ms at start-up,
    and it need not be. A value is a :class:`numbers.Real` only by a class
    registered there (``fractions``, ``decimal``, numpy import it to
    register theirs), so while it is not loaded no such value exists."""
    return sys.modules.get("numbers")


def described(value: Any) -> str:
    """``value`` for an error message: :func:`shown`, with its type when
    the text hides it (``0.5``, a ``float`` subclass; ``np.True_``, numpy's
    ``bool``) or it is a ``decimal.Decimal`` (named with the way out)."""
    text = shown(value)
    kind = type(value)
    if kind.__module__ == "decimal" and kind.__name__ == "Decimal":
        return f"{text} (a decimal.Decimal is not a numbers.Real: give float(value))"
    if kind.__module__ == "builtins" or kind.__name__ in text:
        return text
    return f"{text} (a {kind.__module__}.{kind.__qualname__})"


#: What the messages say a seconds argument takes.
REAL = "a real number: int, float, fractions.Fraction, a numpy number"


def check_timeout(what: str, timeout: Any) -> float | int | None:
    """``timeout`` as plain seconds (:func:`real`), or ``None`` (no limit).

    Raises:
        ValueError: not ``None`` or a real number of seconds from 0 to 1e9
            (a ``bool``, a ``str``, NaN, an infinity, a negative number),
            naming ``what`` and the value.
    """
    if timeout is None:
        return None
    seconds = real(timeout)
    if seconds is None or not 0 <= seconds <= 1e9:  # (NaN fails the comparison)
        raise ValueError(f"{what} must be None or a number of seconds from 0 to 1e9 ({REAL}), "
                         f"not {described(timeout)}")
    return seconds


def check_snapshot_every(what: str, snapshot_every: Any) -> int:
    """``snapshot_every`` (events) as a plain ``int`` (:func:`integer`).

    Raises:
        ValueError: not an integer >= 1, naming ``what`` and the value.
    """
    count = integer(snapshot_every)
    if count is None or count < 1:
        raise ValueError(f"{what} must be an int >= 1, not {described(snapshot_every)}")
    return count


def check_keep_snapshots(what: str, keep_snapshots: Any) -> int | None:
    """``keep_snapshots`` as a plain ``int`` (:func:`integer`), or ``None``.

    Raises:
        ValueError: not ``None`` or an integer >= 1, naming ``what`` and
            the value.
    """
    if keep_snapshots is None:
        return None
    count = integer(keep_snapshots)
    if count is None or count < 1:
        raise ValueError(f"{what} must be None or an int >= 1, not {described(keep_snapshots)}")
    return count


def check_token(token: Any, allow_none: bool = False, what: str = "token") -> Any:
    """``token`` (a grant's seq: seqs count from 1) as a plain ``int``
    (:func:`integer`: an ``IntEnum``, a ``numpy.int64`` too), or ``None``
    with ``allow_none``.

    Raises:
        TypeError: not an integer (a ``bool``, a float, ``3.0`` too, a
            ``str``, a ``decimal.Decimal``), naming ``what`` and the value.
        InvalidArgument: (a ``ValueError``) an integer below 1, which no
            grant has, naming ``what`` and the value.
    """
    if type(token) is int and token >= 1:  # (the common case first)
        return token
    return _seq_number(what, token, allow_none, 1, "a grant's seq", "an int >= 1 (seqs count from 1)")


def check_seq(what: str, seq: Any, allow_none: bool = False) -> Any:
    """``seq`` (a point in the log: seq n is after its n-th line, 0 before
    the first) as a plain ``int`` (:func:`integer`), or ``None`` with
    ``allow_none``.

    Raises:
        TypeError: not an integer (a ``bool``, a float, a ``str``),
            naming ``what`` and the value.
        InvalidArgument: (a ``ValueError``) a negative integer, which no
            point in the log is, naming ``what`` and the value.
    """
    if type(seq) is int and seq >= 0:  # (the common case first)
        return seq
    return _seq_number(what, seq, allow_none, 0, "a seq", "an int >= 0")


def _seq_number(what: str, value: Any, allow_none: bool, least: int, kind: str, rule: str) -> Any:
    """:func:`check_token`'s and :func:`check_seq`'s reading of a value
    off their common case: ``None`` (with ``allow_none``), or the plain
    ``int`` of an integer of at least ``least``; ``kind`` and ``rule``
    say what it must be, for the messages."""
    if value is None and allow_none:
        return None
    number = integer(value)
    if number is None:
        raise TypeError(f"{what} must be an int ({kind}){' or None' if allow_none else ''}, "
                        f"not {described(value)}")
    if number < least:
        raise InvalidArgument(f"{what} must be {kind}, {rule}, not {described(value)}")
    return number


#: The largest pid the kernel gives (``PID_MAX_LIMIT`` is 2**22; a pid is a
#: C ``int``).
MAX_PID = (1 << 31) - 1


def check_pid(pid: Any) -> int | None:
    """``pid`` as a plain ``int`` (:func:`integer`: an ``IntEnum``, a
    ``numpy.int64`` too), or ``None`` (the calling process).

    Raises:
        InvalidProcess: (a ``ValueError``) not an integer (a ``bool``, a
            float, a ``str``), or not from 1 to 2**31-1, naming the value.
    """
    if pid is None or (type(pid) is int and 0 < pid <= MAX_PID):
        return pid
    number = integer(pid)
    if number is None:
        raise InvalidProcess(f"cannot bind an allocation to pid {described(pid)}: pid must be an int "
                             f"from 1 to {MAX_PID}, or None (this process)")
    if not 0 < number <= MAX_PID:
        raise InvalidProcess(f"cannot bind an allocation to pid {described(pid)}: pid must be positive "
                             f"and at most {MAX_PID}")
    return number


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
        ValueError: empty (``None`` gives no note), over 4096 characters,
            or not encodable (a lone surrogate).
    """
    if note is None:
        return None
    if not isinstance(note, str):
        raise TypeError(f"note must be a str or None, not {shown(note)}")
    if not 0 < len(note) <= 4096:
        raise ValueError(f"note must be 1 to 4096 characters (None for no note), not {len(note)}")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"note must be text that UTF-8 can encode: {exc.reason} at {exc.start}") from None
    return str.__str__(note)


def asks_to_wait(wait: Any) -> bool:
    """Whether ``wait=`` asks to wait (anything but a zero, of any type
    :func:`real` takes; a bad value is refused by :func:`check_wait`)."""
    return real(wait) != 0


#: The longest finite ``wait=`` in seconds (about 31 years, as ``timeout``);
#: ``math.inf`` waits for ever.
MAX_WAIT = 1e9


def check_wait(wait: Any) -> float:
    """``wait`` as ``float`` seconds (``math.inf``: for ever), read by
    :func:`real`: an ``int``, a ``float``, a subclass of either
    (``numpy.float64``), a ``fractions.Fraction``, a numpy number.

    Raises:
        TypeError: not a real number (a ``bool``, ``None``, a ``str``, a
            ``decimal.Decimal``: give ``float(d)``), naming the value.
        ValueError: negative, NaN, or finite and above :data:`MAX_WAIT`
            (``10**400`` too: no float holds it), naming the value.
    """
    seconds = real(wait)
    if seconds is None:
        raise TypeError(f"wait must be seconds ({REAL}; 0 refuses at once, math.inf waits for ever), "
                        f"not {described(wait)}")
    # (an int is compared as it is: float() of 10**400 overflows)
    if seconds != seconds or seconds < 0 or (seconds > MAX_WAIT and seconds != math.inf):
        raise ValueError(f"wait must be seconds from 0 to {MAX_WAIT:g} (math.inf waits for ever), "
                         f"not {described(wait)}")
    return float(seconds)


#: ``co_flags`` of a function whose call makes a coroutine, an awaitable
#: generator or an async generator instead of running it
#: (CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR; CPython's
#: ``Include/cpython/code.h``).
_ASYNC_CODE_FLAGS = 0x80 | 0x100 | 0x200


def _makes_awaitable(value: Any) -> bool:
    """Whether calling ``value`` only makes an awaitable (an ``async def``
    function or method, a ``functools.partial`` of one, or an object whose
    ``__call__`` is one)."""
    target = value
    while isinstance(target, functools.partial):
        target = target.func
    target = getattr(target, "__func__", target)
    code = getattr(target, "__code__", None)
    if code is None and not isinstance(target, type):
        call = getattr(type(target), "__call__", None)  # noqa: B004 - its code is read
        code = getattr(getattr(call, "__func__", call), "__code__", None)
    return code is not None and bool(code.co_flags & _ASYNC_CODE_FLAGS)


def check_callable(what: str, value: Any, takes: tuple[str, ...]) -> None:
    """Raises ``TypeError`` (naming ``what``) unless ``value`` is ``None`` or
    a plain callable that can be called with ``len(takes)`` positional
    arguments (``takes`` names them, for the message): every such callback
    is called so, never awaited, so an ``async def`` (whose call would only
    make a coroutine, never run), or an object with an ``async def
    __call__``, is refused too. A callable whose signature Python cannot
    tell (some built-ins) is taken as it is."""
    if value is None:
        return
    if not callable(value):
        raise TypeError(f"{what} must be None or a callable, not {shown(value)}")
    if _makes_awaitable(value):
        raise TypeError(f"{what} must be a plain callable (it is called, not awaited), not an async "
                        f"function: {shown(value)}")
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # (no signature to read: a built-in)
        return
    try:
        signature.bind(*takes)
    except TypeError:
        called = f"{what}({', '.join(takes)})"
        raise TypeError(f"{what} must take {len(takes)} positional argument{'s' if len(takes) != 1 else ''} "
                        f"(it is called as {called}), not {shown(value)} with signature {signature}") from None


def check_options(timeout: Any, probe: Any, fsync: Any, snapshot_every: Any, keep_snapshots: Any,
                   resolve_symlinks: Any, clock: Any) -> None:
    """Validate :meth:`Ledger.open`'s options (see its Raises)."""
    check_timeout("timeout", timeout)
    check_snapshot_every("snapshot_every", snapshot_every)
    check_keep_snapshots("keep_snapshots", keep_snapshots)
    check_bool("fsync", fsync)
    check_bool("resolve_symlinks", resolve_symlinks)
    check_callable("probe", probe, ("process",))
    check_callable("clock", clock, ())


def check_switch_interval(interval: Any) -> float | None:
    """``AsyncLedger``'s ``switch_interval`` as ``float`` seconds (read by
    :func:`real`), or ``None``.

    Raises:
        TypeError: not ``None`` or a real number, naming the value.
        ValueError: not > 0 and <= 1 (NaN too), naming the value.
    """
    if interval is None:
        return None
    seconds = real(interval)
    if seconds is None:
        raise TypeError(f"switch_interval must be None or seconds ({REAL}), not {described(interval)}")
    if not 0 < seconds <= 1:
        raise ValueError(f"switch_interval must be None or seconds > 0 and <= 1, not {described(interval)}")
    return float(seconds)
