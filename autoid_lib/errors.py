"""The kit's one exception tree.

Every error the kit raises on purpose derives from ``AutoIdError``, carries what an operator
needs to act (the database and operation, the pattern position, the capacity) and never a
token or a patient identifier::

    AutoIdError
    ├── ConfigError            bad or unreadable configuration; the fix is in the message
    ├── PatternError           a naming pattern the generator cannot use (with .position)
    ├── IdSpaceExhausted       every ID of a pattern is in use (with .size and .used)
    ├── ExternalGeneratorError a site's own generator program failed or answered badly
    ├── RedcapError            REDCap refused, failed or answered garbage (.database, .operation)
    ├── LockHeld               another run holds the lock
    │   └── LeaseHeld          another installation holds the REDCap lease (docs/run.md)
    ├── LeaseExpired           this run outlived its lease: it writes nothing more
    ├── ConcurrentWriter       AutoID rows of this run's patients changed under it
    └── RunFailed              a run recorded from the notebook failed (its report says where)
"""

from __future__ import annotations


class AutoIdError(Exception):
    """Base of every error the kit raises on purpose."""


class ConfigError(AutoIdError):
    """The configuration is missing, malformed or refers to a secret that cannot be read."""


class PatternError(AutoIdError):
    """A naming pattern uses a construct that cannot generate IDs, or does not parse."""

    def __init__(self, message: str, pattern: str = "", position: int | None = None):
        self.pattern = pattern
        self.position = position
        where = f" at position {position}" if position is not None else ""
        shown = f" in pattern {pattern!r}" if pattern else ""
        super().__init__(f"{message}{where}{shown}")


class IdSpaceExhausted(AutoIdError):
    """No unused ID is left in a pattern's space."""

    def __init__(self, pattern: str, size: int, used: int, *, requested: int | None = None):
        self.pattern = pattern
        self.size = size
        self.used = used
        self.free = size - used
        self.requested = requested  # how many IDs were asked for, when known
        super().__init__(
            f"space exhausted: {used} of {size} used for pattern {pattern!r}; "
            "widen the project's naming pattern"
        )


class ExternalGeneratorError(AutoIdError):
    """The configured external ID generator failed, or never gave a valid unused ID."""


class RedcapError(AutoIdError):
    """A REDCap request failed; names the database and the operation, never the token."""

    def __init__(self, database: str, operation: str, reason: str, kind: str = "redcap_error"):
        self.database = database
        self.operation = operation
        self.reason = reason
        self.kind = kind  # a failures.FailureKind: token refused, unreachable, TLS, timeout …
        super().__init__(f"REDCap {database}: {operation} failed: {reason}")


class LockHeld(AutoIdError):
    """Another run holds the lock; this run did nothing."""

    def __init__(self, lock_file: str, held_for_s: float = 0.0):
        self.lock_file = lock_file
        self.held_for_s = held_for_s
        super().__init__(f"another run holds the lock {lock_file}; nothing was done")


class HashSchemeChanged(ConfigError):
    """The configured hash scheme or key differs from the one AutoID was written with."""


class LeaseHeld(LockHeld):
    """Another run, maybe on another machine, holds the REDCap lease; this run wrote nothing."""

    def __init__(self, holder: str, *, known: bool = True):
        self.lock_file = ""
        self.holder = holder
        self.known = known  # False: no other run's live ticket is known (this one's was lost)
        what = (
            "another run holds the REDCap lease" if known else "the REDCap lease is not confirmed"
        )
        AutoIdError.__init__(self, f"{what}: {holder}; nothing was written")


class LeaseExpired(AutoIdError):
    """The run's lease ran out before a write: another run may already be writing."""


class ConcurrentWriter(AutoIdError):
    """Just before the transfers, AutoID showed rows this run did not write for its patients."""


class RunFailed(AutoIdError):
    """A run recorded from the run notebook (a scheduler executed it) failed; its report says
    where. Raised in the notebook so that papermill and schedulers count the run as failed."""
