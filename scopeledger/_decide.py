"""How a request is decided: the one rule ``register``, ``delegate`` and
``Ledger.decide`` (``ledger check``, ``ledger run``'s waiting) share.

Pure: it asks a state (:func:`scopeledger._fold.check_request`) and calls
back for what it cannot know (a holder's liveness) and for what it would do
(reclaim a dead holder in the way); the caller records, or simulates.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ._errors import DelegationError, DuplicateHolder, ScopeConflict, UnknownHolder, shown
from ._fold import State, check_request_from
from ._identity import Liveness, Verdict
from ._rules import ScopeRule

#: The ``error`` a ``refused`` event records for each refusal (see ``_events``).
REFUSAL_KIND: dict[type[Exception], str] = {
    ScopeConflict: "scope_conflict", DelegationError: "delegation", DuplicateHolder: "duplicate",
    UnknownHolder: "unknown_parent"}


def decide(state: State, name: str, rules: tuple[ScopeRule, ...], parent: str | None,
           liveness: Callable[[str], Verdict | Liveness], reclaim: Callable[[str, str], Any]) -> Exception | None:
    """How ``register`` (``parent`` None) or ``delegate`` decides a request:
    :func:`check_request`; while it is refused only because of holders in
    the way (the conflicting chain, a sibling's subtree, the name's live
    holder) some of which are dead, ``reclaim(name, reason)`` each dead one
    (which must remove it from ``state``) and ask again, from the rule the
    last answer stopped at (the rules before it stay clear: the work is the
    request's once, plus each reclaim, not the request's per reclaim). Shared by the
    ledger (which records each reclaim) and ``ledger check`` (which
    simulates them on a copy).

    Args:
        liveness: ``holder name -> Verdict`` (or ``Liveness``) of its process.

    Returns:
        The refusal (an exception, not raised) or ``None`` to grant.
    """
    err = None
    start = 0  # the rules before it met no holder in the way (see check_request_from)
    for _ in range(len(state.holders) + 1):  # each round removes at least one holder
        err, start = check_request_from(state, name, rules, parent, start)
        if isinstance(err, DuplicateHolder):
            # The name of the requester's own parent is taken by the
            # parent: reclaiming it would remove what the request needs.
            in_way: Sequence[str] = (name,) if name != parent else ()
        elif isinstance(err, ScopeConflict):
            in_way = err.chain
        elif isinstance(err, DelegationError) and err.sibling is not None:
            in_way = err.chain[err.chain.index(err.sibling):]
        else:
            return err
        dead = []  # (a loop: a comprehension would make state and liveness cells in every call)
        for n in in_way:
            if n in state.holders:
                lv = liveness(n)
                if lv.dead:
                    dead.append((n, lv))
        if not dead:
            return err
        for n, lv in dead:
            if n in state.holders:
                reclaim(n, (lv.liveness if isinstance(lv, Verdict) else lv).value)
    return err  # pragma: no cover - bounded by the number of holders


def stale_grant(state: State, name: str, token: int | None, what: str = "holder") -> UnknownHolder | None:
    """The refusal of an operation on the grant of ``name`` with ``token``
    (``None``: whichever grant is live), or ``None`` when it may go on.

    For ``what="parent"`` a parent that is not live is left to
    :func:`check_request` (it says so in its own words); for a holder, it
    is refused here. A live holder with another token than ``token`` was
    released (or reclaimed) and granted again under the same name: refused,
    naming both tokens.
    """
    alloc = state.holders.get(name)
    if alloc is None:
        return None if what == "parent" else UnknownHolder(name)
    if token is not None and alloc.token != token:
        return UnknownHolder(name, message=f"{what} '{name}' is live with another grant "
                                           f"(token {alloc.token}, not {shown(token)})")
    return None
