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
    InvalidScope,
    LedgerError,
    LedgerIOError,
    LockTimeout,
    Refused,
    ScopeConflict,
    UnknownHolder,
    UnsafeLedgerPath,
)
from ._fold import Allocation, State
from ._ledger import EffectiveScope, Hold, Ledger, check_name, default_path
from ._process import Liveness, ProcessIdentity, identify, probe
from ._rules import Permission, ScopeRule, covers, normalize_path, overlaps

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "CorruptLedger",
    "DelegationError",
    "DuplicateHolder",
    "EffectiveScope",
    "HistoryUnavailable",
    "Hold",
    "InvalidHolderName",
    "InvalidManifest",
    "InvalidScope",
    "Ledger",
    "LedgerError",
    "LedgerIOError",
    "Liveness",
    "LockTimeout",
    "Permission",
    "ProcessIdentity",
    "Refused",
    "ScopeConflict",
    "ScopeRule",
    "State",
    "UnknownHolder",
    "UnsafeLedgerPath",
    "check_name",
    "covers",
    "default_path",
    "identify",
    "normalize_path",
    "overlaps",
    "probe",
]
