"""scopeledger: an event-sourced ledger of which process may read and write
which part of a file tree.

See README.md for a tour and ARCHITECTURE.md for the design. Linux only:
importing it elsewhere raises :class:`UnsupportedPlatform`.
"""

from __future__ import annotations

import sys as _sys

from ._version import __version__ as __version__  # (re-exported)

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing: ~2 ms, issue 18)
if TYPE_CHECKING:
    from typing import Any

if not _sys.platform.startswith("linux"):  # before anything reads /proc or imports fcntl
    from ._errors import UnsupportedPlatform as _UnsupportedPlatform

    raise _UnsupportedPlatform(_sys.platform)

#: Each public name, and the module that defines it. A name's module is imported
#: when the name is first used (:func:`__getattr__`, PEP 562), so that
#: ``import scopeledger`` alone, and ``ledger --version``, import none of them
#: (issue 18); ``from scopeledger import Ledger`` imports what ``Ledger`` needs.
#: ``__all__`` and the ``TYPE_CHECKING`` imports name the same again, written out
#: because type checkers read only literals (a computed ``__all__`` makes mypy
#: --strict refuse ``from scopeledger import Ledger``); whoever adds a name adds it
#: in all three, and ``tests/test_cli_package.py`` checks that they agree.
_PUBLIC = {
    # _errors.py
    "CorruptLedger": "_errors",
    "NewerFormat": "_errors",
    "DelegationError": "_errors",
    "DuplicateHolder": "_errors",
    "HistoryUnavailable": "_errors",
    "InvalidArgument": "_errors",
    "InvalidHolderName": "_errors",
    "InvalidManifest": "_errors",
    "InvalidProcess": "_errors",
    "InvalidScope": "_errors",
    "LedgerError": "_errors",
    "LedgerIOError": "_errors",
    "LockTimeout": "_errors",
    "NoLedger": "_errors",
    "LedgerNotEmpty": "_errors",
    "PartlyRecorded": "_errors",
    "ReadOnlyLedger": "_errors",
    "Refused": "_errors",
    "ScopeConflict": "_errors",
    "UnknownHolder": "_errors",
    "UnsafeLedgerPath": "_errors",
    "UnsupportedPlatform": "_errors",
    "WaitTimeout": "_errors",
    "InDoubt": "_errors",
    "InvalidLedgerURL": "_errors",
    "NotRecorded": "_errors",
    "SessionLost": "_errors",
    "StoreError": "_errors",
    "StoreUnavailable": "_errors",
    "format_chain": "_errors",
    # _events.py
    "EVENT_TYPES": "_events",
    # _fold.py
    "MAX_RULES_PER_REQUEST": "_fold",
    "Allocation": "_fold",
    "State": "_fold",
    # _history.py
    "ClockJump": "_history",
    "ClockJumpWarning": "_history",
    "Diff": "_history",
    "Event": "_history",
    "Holding": "_history",
    "Problem": "_history",
    "Stamped": "_history",
    "TimePoint": "_history",
    "VerifyReport": "_history",
    # _ledger.py
    "ENV_DIR": "_ledger",
    "Decision": "_ledger",
    "EffectiveScope": "_ledger",
    "Hold": "_ledger",
    "Ledger": "_ledger",
    "LostEvents": "_ledger",
    "ReclaimReport": "_ledger",
    "RepairReport": "_ledger",
    "Reclaimed": "_ledger",
    "check_name": "_rules",
    "default_path": "_ledger",
    "copy_ledger": "_ledger",
    "redact_url": "_ledger",
    "verify": "_ledger",
    # _identity.py
    "Lease": "_identity",
    "Liveness": "_identity",
    "ProcessIdentity": "_identity",
    "Verdict": "_identity",
    # _process.py
    "host_id": "_process",
    "identify": "_process",
    "judge": "_process",
    "probe": "_process",
    # _paths.py
    "real_path": "_paths",
    # _rules.py
    "Permission": "_rules",
    "ScopeRule": "_rules",
    "covers": "_rules",
    "normalize_path": "_rules",
    "overlaps": "_rules",
    "parse_rule": "_rules",
    # _store.py
    "check_ledger_path": "_store",
    "non_directory_on_the_way": "_store",
    "resolve_path": "_store",
    # _time.py
    "from_ns": "_time",
    "to_ns": "_time",
    # _runtime.py
    "Manifest": "_runtime",
    "install_from_manifest": "_runtime",
    "load_manifest": "_runtime",
    "parse_manifest": "_runtime",
    "runtime_base": "_runtime",
    "socket_path_for": "_runtime",
    "InvalidLease": "_errors",
    "LeaseExpired": "_errors",
    "Renewer": "_lease",
    "GrantWatch": "_grantwatch",
    "TTL_RANGE": "_lease",
    "SESSION_TTL_RANGE": "_sessions",
    # _async.py (imports asyncio: only for those who use it)
    "AsyncAdopted": "_async",
    "AsyncHold": "_async",
    "AsyncLedger": "_async",
    "AsyncSpawned": "_async",
    # _spawn.py
    "Adopted": "_spawn",
    "Spawned": "_spawn",
    "adopt": "_spawn",
    "from_environment": "_spawn",
    "spawn": "_spawn",
    # _wait.py
    "Outage": "_wait",
}


__all__ = [
    "ENV_DIR",
    "EVENT_TYPES",
    "MAX_RULES_PER_REQUEST",
    "SESSION_TTL_RANGE",
    "TTL_RANGE",
    "Adopted",
    "Allocation",
    "AsyncAdopted",
    "AsyncHold",
    "AsyncLedger",
    "AsyncSpawned",
    "ClockJump",
    "ClockJumpWarning",
    "CorruptLedger",
    "NewerFormat",
    "Decision",
    "DelegationError",
    "Diff",
    "DuplicateHolder",
    "EffectiveScope",
    "InDoubt",
    "InvalidLedgerURL",
    "NotRecorded",
    "SessionLost",
    "StoreError",
    "StoreUnavailable",
    "Event",
    "HistoryUnavailable",
    "GrantWatch",
    "Hold",
    "Holding",
    "InvalidArgument",
    "InvalidHolderName",
    "InvalidLease",
    "InvalidManifest",
    "InvalidProcess",
    "InvalidScope",
    "Ledger",
    "LedgerError",
    "LedgerIOError",
    "LedgerNotEmpty",
    "Lease",
    "LeaseExpired",
    "Liveness",
    "LockTimeout",
    "LostEvents",
    "Manifest",
    "NoLedger",
    "Outage",
    "PartlyRecorded",
    "Permission",
    "Problem",
    "ProcessIdentity",
    "ReadOnlyLedger",
    "ReclaimReport",
    "Reclaimed",
    "Refused",
    "Renewer",
    "RepairReport",
    "ScopeConflict",
    "ScopeRule",
    "Spawned",
    "Stamped",
    "State",
    "TimePoint",
    "UnknownHolder",
    "UnsafeLedgerPath",
    "UnsupportedPlatform",
    "Verdict",
    "VerifyReport",
    "WaitTimeout",
    "adopt",
    "check_ledger_path",
    "check_name",
    "copy_ledger",
    "covers",
    "default_path",
    "format_chain",
    "from_environment",
    "from_ns",
    "host_id",
    "identify",
    "install_from_manifest",
    "judge",
    "load_manifest",
    "non_directory_on_the_way",
    "normalize_path",
    "overlaps",
    "parse_manifest",
    "parse_rule",
    "probe",
    "real_path",
    "redact_url",
    "resolve_path",
    "runtime_base",
    "socket_path_for",
    "spawn",
    "to_ns",
    "verify",
]

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from ._errors import (  # noqa: F401
        CorruptLedger, DelegationError, DuplicateHolder, HistoryUnavailable,
        InvalidArgument, InvalidHolderName, InvalidManifest, InvalidProcess, InvalidScope, LedgerError,
        LedgerIOError, LockTimeout, NoLedger, PartlyRecorded, ReadOnlyLedger, Refused,
        ScopeConflict, UnknownHolder, UnsafeLedgerPath, UnsupportedPlatform, WaitTimeout,
        InDoubt, InvalidLedgerURL, NotRecorded, SessionLost, StoreError, StoreUnavailable,
        format_chain, InvalidLease, LeaseExpired, LedgerNotEmpty, NewerFormat,
    )
    from ._events import EVENT_TYPES  # noqa: F401
    from ._fold import Allocation, MAX_RULES_PER_REQUEST, State  # noqa: F401
    from ._history import (  # noqa: F401
        ClockJump, ClockJumpWarning, Diff, Event, Holding, Problem, Stamped, TimePoint,
        VerifyReport,
    )
    from ._ledger import (  # noqa: F401
        Decision, ENV_DIR, EffectiveScope, Hold, Ledger, LostEvents, ReclaimReport,
        Reclaimed, RepairReport, copy_ledger, default_path, redact_url, verify,
    )
    from ._identity import Lease, Liveness, ProcessIdentity, Verdict  # noqa: F401
    from ._lease import TTL_RANGE, Renewer  # noqa: F401
    from ._grantwatch import GrantWatch  # noqa: F401
    from ._sessions import SESSION_TTL_RANGE  # noqa: F401
    from ._paths import real_path  # noqa: F401
    from ._process import host_id, identify, judge, probe  # noqa: F401
    from ._rules import (  # noqa: F401
        Permission, ScopeRule, check_name, covers, normalize_path, overlaps, parse_rule,
    )
    from ._store import check_ledger_path, non_directory_on_the_way, resolve_path  # noqa: F401
    from ._time import from_ns, to_ns  # noqa: F401
    from ._async import AsyncAdopted, AsyncHold, AsyncLedger, AsyncSpawned  # noqa: F401
    from ._spawn import Adopted, Spawned, adopt, from_environment, spawn  # noqa: F401
    from ._wait import Outage  # noqa: F401
    from ._runtime import (  # noqa: F401
        Manifest, install_from_manifest, load_manifest, parse_manifest, runtime_base,
        socket_path_for,
    )


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then cached here).

    Raises:
        AttributeError: not a public name of scopeledger.
    """
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: the import statement's path, which
    # python -X importtime reports (import_module's is not timed).
    __import__(f"{__name__}.{module}")
    value = getattr(_sys.modules[f"{__name__}.{module}"], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
