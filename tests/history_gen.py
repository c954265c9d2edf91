"""Random histories for time-travel and verify tests."""

import random

from scopeledger import DelegationError, DuplicateHolder, Ledger, Liveness, Refused, ScopeRule, UnknownHolder

PATHS = ["/r", "/r/a", "/r/a/x", "/r/a/y", "/r/b", "/r/b/z", "/s", "/s/t"]
# Random liveness: each holder probed is dead with some chance.
FATES = [Liveness.ALIVE] * 5 + [Liveness.GONE, Liveness.ZOMBIE, Liveness.PID_REUSED]


def random_history(led: Ledger, steps: int, seed: int) -> None:
    """Drive ``led`` with ``steps`` random register/delegate/release/reclaim
    operations (refusals included). Returns nothing; the log is the result."""
    rng = random.Random(seed)
    n = 0
    for _ in range(steps):
        live = [a.name for a in led.holders()]
        op = rng.random()
        try:
            if op < 0.35 or not live:
                n += 1
                led.register(f"h{n}", [ScopeRule(rng.choice(PATHS), rng.choice(["read", "write"]),
                                                  rng.random() < 0.7)])
            elif op < 0.65:
                parent = rng.choice(live)
                prules = led.holder(parent).rules
                base = rng.choice(prules)
                below = [p for p in PATHS if p == base.path or p.startswith(base.path + "/")]
                n += 1
                led.delegate(parent, f"h{n}", [ScopeRule(rng.choice(below), base.permission,
                                                         rng.random() < 0.5)])
            elif op < 0.9:
                led.release(rng.choice(live))
            else:
                led.reclaim_stale(lambda ident: rng.choice(FATES))
        except (Refused, DelegationError, DuplicateHolder, UnknownHolder):
            pass
