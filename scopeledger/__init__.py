"""scopeledger: an event-sourced ledger of which process may read and write
which part of a file tree.

See README.md for a tour and ARCHITECTURE.md for the design.
"""

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
)
from ._fold import MAX_RULES_PER_REQUEST, Allocation, State
from ._history import Diff, Event, Holding, Problem, VerifyReport
from ._ledger import (
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
from ._runtime import (
    Manifest,
    install_from_manifest,
    load_manifest,
    parse_manifest,
    runtime_base,
    socket_path_for,
)

__version__ = "0.1.0"

__all__ = [
    "MAX_RULES_PER_REQUEST",
    "Allocation",
    "CorruptLedger",
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
    "State",
    "UnknownHolder",
    "UnsafeLedgerPath",
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
    "runtime_base",
    "socket_path_for",
    "verify",
]
