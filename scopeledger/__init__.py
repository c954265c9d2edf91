"""scopeledger: an event-sourced ledger of which process may read and write
which part of a file tree.

See README.md for a tour and ARCHITECTURE.md for the design. Linux only:
importing it elsewhere raises :class:`UnsupportedPlatform`.
"""

import sys as _sys

from ._version import __version__

if not _sys.platform.startswith("linux"):  # before anything reads /proc or imports fcntl
    from ._errors import UnsupportedPlatform as _UnsupportedPlatform

    raise _UnsupportedPlatform(_sys.platform)

from ._errors import (
    CorruptLedger,
    DelegationError,
    DuplicateHolder,
    HistoryUnavailable,
    InvalidHolderName,
    InvalidManifest,
    InvalidProcess,
    InvalidScope,
    LedgerError,
    LedgerIOError,
    PartlyRecorded,
    LockTimeout,
    NoLedger,
    ReadOnlyLedger,
    Refused,
    ScopeConflict,
    UnknownHolder,
    UnsafeLedgerPath,
    UnsupportedPlatform,
)
from ._fold import EVENT_TYPES, MAX_RULES_PER_REQUEST, Allocation, State
from ._history import ClockJump, ClockJumpWarning, Diff, Event, Holding, Problem, Stamped, TimePoint, VerifyReport
from ._ledger import (
    ENV_DIR,
    Decision,
    EffectiveScope,
    Hold,
    Ledger,
    LostEvents,
    Reclaimed,
    ReclaimReport,
    check_name,
    default_path,
    verify,
)
from ._process import Liveness, ProcessIdentity, Verdict, host_id, identify, judge, probe
from ._rules import Permission, ScopeRule, covers, normalize_path, overlaps, parse_rule
from ._store import resolve_path
from ._runtime import (
    Manifest,
    install_from_manifest,
    load_manifest,
    parse_manifest,
    runtime_base,
    socket_path_for,
)


__all__ = [
    "ENV_DIR",
    "EVENT_TYPES",
    "MAX_RULES_PER_REQUEST",
    "Allocation",
    "ClockJump",
    "ClockJumpWarning",
    "CorruptLedger",
    "Decision",
    "DelegationError",
    "Diff",
    "DuplicateHolder",
    "EffectiveScope",
    "Event",
    "HistoryUnavailable",
    "Hold",
    "Holding",
    "InvalidHolderName",
    "InvalidManifest",
    "InvalidProcess",
    "InvalidScope",
    "Ledger",
    "LedgerError",
    "LedgerIOError",
    "Liveness",
    "LockTimeout",
    "LostEvents",
    "Manifest",
    "NoLedger",
    "PartlyRecorded",
    "Permission",
    "Problem",
    "ProcessIdentity",
    "ReadOnlyLedger",
    "ReclaimReport",
    "Reclaimed",
    "Refused",
    "ScopeConflict",
    "ScopeRule",
    "Stamped",
    "State",
    "TimePoint",
    "UnknownHolder",
    "UnsafeLedgerPath",
    "UnsupportedPlatform",
    "Verdict",
    "VerifyReport",
    "check_name",
    "covers",
    "default_path",
    "host_id",
    "identify",
    "install_from_manifest",
    "judge",
    "load_manifest",
    "normalize_path",
    "overlaps",
    "parse_manifest",
    "parse_rule",
    "probe",
    "resolve_path",
    "runtime_base",
    "socket_path_for",
    "verify",
]
