"""The one time model: event times are integer nanoseconds since the epoch,
UTC (an event's ``ts``, an allocation's ``granted_ns``); a ``datetime`` is
shown or given only at the edges, converted here and nowhere else.

- A time given to a query (``state_at(time=)``, ``who(time=)``,
  ``events(since_time=, until_time=)``, ``time_point``) is an aware
  ``datetime`` (a naive one is UTC) or an ``int`` of nanoseconds: the same
  for every query (:func:`to_ns`).
- A time shown as a ``datetime`` (``Event.time``, ``Allocation.granted_at``)
  is the nanoseconds truncated to the microsecond, exactly (:func:`from_ns`:
  integer arithmetic, no float), so that a grant's ``granted_at`` is its
  event's ``time``.

Pure: no clock is read here.
"""

from __future__ import annotations

import datetime as dt

from ._errors import shown

#: The epoch, an aware UTC ``datetime``.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_MICROSECOND = dt.timedelta(microseconds=1)


def to_ns(when: dt.datetime | int, what: str = "time") -> int:
    """A point in time -> integer nanoseconds since the epoch, UTC.

    Args:
        when: an aware ``datetime`` (a naive one is taken as UTC), or an
            ``int`` of nanoseconds since the epoch, UTC (returned as it is).
        what: the argument's name, for the message.

    Raises:
        TypeError: ``when`` is neither (a ``bool``, a ``float``, a ``str``
            ...); the message names ``what``.
    """
    if type(when) is int:
        return when
    if not isinstance(when, dt.datetime):
        raise TypeError(f"{what} must be a datetime.datetime or int nanoseconds, not "
                        f"{type(when).__name__} {shown(when)}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    delta = when - EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


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
