"""The one time model: event times are integer nanoseconds since the epoch,
UTC (an event's ``ts``, an allocation's ``granted_ns``); a ``datetime`` is
shown or given only at the edges, converted here and nowhere else.

- A time given to a query (``state_at(time=)``, ``who(time=)``,
  ``events(since_time=, until_time=)``, ``time_point``) is an aware
  ``datetime`` (a naive one is UTC) or an ``int`` of nanoseconds: the same
  for every query (:func:`to_ns`), and the same range, a ``datetime``'s
  (the years 1 to 9999, as on the command line). A negative ``int`` is a
  time before 1970, which an event may carry: its ``ts`` is its writer's
  clock reading, never clamped (the format takes ``[-2**63, 2**63)``).
- A time shown as a ``datetime`` (``Event.time``, ``Allocation.granted_at``)
  is the nanoseconds truncated to the microsecond, exactly (:func:`from_ns`:
  integer arithmetic, no float), so that a grant's ``granted_at`` is its
  event's ``time``.

Pure: no clock is read here.
"""

from __future__ import annotations

import datetime as dt
import operator

from ._errors import InvalidArgument, shown

#: The epoch, an aware UTC ``datetime``.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_MICROSECOND = dt.timedelta(microseconds=1)


def _ns(when: dt.datetime) -> int:
    """An aware ``datetime`` -> integer nanoseconds since the epoch."""
    delta = when - EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


#: The first and last nanosecond a ``datetime`` can name (the years 1 to
#: 9999, UTC): the range of an ``int`` time (:func:`to_ns`).
MIN_NS = _ns(dt.datetime.min.replace(tzinfo=dt.timezone.utc))
MAX_NS = _ns(dt.datetime.max.replace(tzinfo=dt.timezone.utc)) + 999


def to_ns(when: dt.datetime | int, what: str = "time") -> int:
    """A point in time -> integer nanoseconds since the epoch, UTC.

    Args:
        when: an aware ``datetime`` (a naive one is taken as UTC), or an
            integer of nanoseconds since the epoch, UTC, from
            :data:`MIN_NS` to :data:`MAX_NS` (the years 1 to 9999; negative:
            before 1970): an ``int``, returned as it is, or what
            ``operator.index`` takes (an ``IntEnum``, ``numpy.int64``),
            returned as the plain ``int``.
        what: the argument's name, for the message.

    Raises:
        TypeError: ``when`` is neither (a ``bool``, a ``float``, ``5.0``
            too, a ``str`` ...); the message names ``what``.
        InvalidArgument: (a ``ValueError``) an integer outside the years 1
            to 9999, which no ``datetime`` names (``10**30``); the message
            names ``what`` and the value. (Seconds given for nanoseconds,
            ``1700000000``, are in range: a moment of 1970.)
    """
    if type(when) is int and MIN_NS <= when <= MAX_NS:
        return when
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return _ns(when)
    ns = None
    if not isinstance(when, bool):
        try:
            ns = operator.index(when)
        except TypeError:
            pass
    if ns is None:
        raise TypeError(f"{what} must be a datetime.datetime or int nanoseconds, not "
                        f"{type(when).__name__} {shown(when)}")
    if not MIN_NS <= ns <= MAX_NS:
        raise InvalidArgument(f"{what} must be a datetime.datetime or int nanoseconds since the epoch "
                              f"from {MIN_NS} to {MAX_NS} (the years 1 to 9999), not {shown(when)}")
    return ns


def from_ns(ns: int) -> dt.datetime:
    """Integer nanoseconds since the epoch -> an aware UTC ``datetime``,
    truncated to the microsecond (toward the past) by integer arithmetic.

    Raises:
        TypeError: ``ns`` is not an ``int`` (a ``bool``, a ``float``, a
            ``str`` ...), naming it.
        OverflowError: outside the years 1 to 9999, naming it.
    """
    if type(ns) is not int:
        if not isinstance(ns, int) or isinstance(ns, bool):
            raise TypeError(f"ns must be an int of nanoseconds since the epoch, not {type(ns).__name__} {shown(ns)}")
        ns = int.__int__(ns)  # an int subclass (IntEnum)
    try:
        return EPOCH + (ns // 1000) * _MICROSECOND
    except OverflowError:
        raise OverflowError(f"ns {shown(ns)} is not a time from the year 1 to 9999") from None


def iso(ns: int) -> str:
    """``2025-11-29T14:03:05.123456Z``: :func:`from_ns` in ISO 8601, UTC."""
    return from_ns(ns).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
