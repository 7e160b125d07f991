"""Why a run failed, in one word a machine keeps and one line a person acts on.

``error.kind`` in summary.json is one of ``FailureKind``; ``CAUSES`` gives each its cause and
what to do, the same text in the stderr outcome line, the report, the mail and index.html.
``failure_kind`` classifies an exception the run caught: the gateway marks REDCap errors with
their kind where it sees the HTTP failure (``RedcapError.kind``); the kit's other errors by
their class. Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class FailureKind(StrEnum):
    TOKEN_REFUSED = "token_refused"
    UNREACHABLE = "unreachable"
    TLS = "tls"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    REDCAP_ERROR = "redcap_error"
    LOCK_HELD = "lock_held"
    LEASE = "lease"
    LEASE_REFUSED = "lease_refused"
    HASH_SCHEME = "hash_scheme_changed"
    CONCURRENT_WRITER = "concurrent_writer"
    GENERATOR = "external_generator"
    CONFIG = "config"
    NOTEBOOK = "notebook"
    INTERNAL = "internal"


class Cause(NamedTuple):
    label: str  # a few words: the cause
    action: str  # one sentence: what to do


CAUSES: dict[FailureKind, Cause] = {
    FailureKind.TOKEN_REFUSED: Cause(
        "REDCap refused the API token",
        "Check the token named in the message: it must be this database's API token with "
        "export (and for AutoID and Incoming import) rights; renew it in REDCap if it was "
        "regenerated or the user lost API rights.",
    ),
    FailureKind.UNREACHABLE: Cause(
        "REDCap unreachable",
        "Check that the REDCap server named in the message is up and reachable from this "
        "machine (DNS, firewall, proxy); the next run catches up on its own.",
    ),
    FailureKind.TLS: Cause(
        "TLS certificate check failed",
        "The server's certificate is not trusted here: install the hospital's CA bundle and "
        "point [redcap] verify at it; never switch verification off.",
    ),
    FailureKind.TIMEOUT: Cause(
        "REDCap timed out",
        "REDCap answered too slowly: check its load; if it is merely slow, raise [redcap] "
        "timeout_s. The next run catches up on its own.",
    ),
    FailureKind.OUT_OF_MEMORY: Cause(
        "REDCap ran out of memory",
        "REDCap's PHP memory_limit is too small for this export: lower [redcap] chunk_size "
        "or [run] lookback_days, or ask the REDCap admins to raise memory_limit.",
    ),
    FailureKind.REDCAP_ERROR: Cause(
        "REDCap answered an error",
        "Read REDCap's message above (field names only); fix the database's fields or "
        "rights it names, then run again.",
    ),
    FailureKind.LOCK_HELD: Cause(
        "another run holds the lock",
        "Find the process whose PID is in the lock file; stop it if it hangs, then run again.",
    ),
    FailureKind.LEASE: Cause(
        "the REDCap lease is held or expired",
        "If the message names another installation, make sure only one is scheduled against "
        "this REDCap (docs/run.md, 'Two installations, one REDCap'); a run of this machine "
        "that was killed holds nobody up. If this run outlived its lease, the next run "
        "completes the work; raise [lease] expiry_s if it recurs.",
    ),
    FailureKind.LEASE_REFUSED: Cause(
        "REDCap refused the lease ticket",
        "The AutoID token ([redcap.tokens] autoid) writes a ticket record and deletes it "
        "after the run: give its REDCap user 'API Import/Update' and 'Delete Records' on "
        "the AutoID project (User Rights), or set [lease] delete = false (tickets are then "
        "marked released, not deleted); the message says what REDCap refused.",
    ),
    FailureKind.HASH_SCHEME: Cause(
        "the hash scheme changed",
        "The configured [run] hash or key differs from the one AutoID was written with: "
        "restore the old setting (docs/migration.md); never run with a new key.",
    ),
    FailureKind.CONCURRENT_WRITER: Cause(
        "someone else wrote AutoID rows",
        "Another process changed AutoID for this run's patients: find it, stop it, and run "
        "`autoid audit` before the next run.",
    ),
    FailureKind.GENERATOR: Cause(
        "the external ID generator failed",
        "Check the program configured in [run] external_generator (run it by hand).",
    ),
    FailureKind.CONFIG: Cause(
        "configuration",
        "Fix the configuration file as the message says and run again.",
    ),
    FailureKind.NOTEBOOK: Cause(
        "the notebook or its kernel failed",
        "Check run.log and kernel.log in the run folder (memory, disk, Python environment); "
        "run again.",
    ),
    FailureKind.INTERNAL: Cause(
        "an internal error",
        "Run again; if it fails the same way, send run.log to the maintainers.",
    ),
}

_BY_ERROR_TYPE: dict[str, FailureKind] = {
    "LockHeld": FailureKind.LOCK_HELD,
    "LeaseHeld": FailureKind.LEASE,
    "LeaseExpired": FailureKind.LEASE,
    "HashSchemeChanged": FailureKind.HASH_SCHEME,
    "ConcurrentWriter": FailureKind.CONCURRENT_WRITER,
    "ExternalGeneratorError": FailureKind.GENERATOR,
    "ConfigError": FailureKind.CONFIG,
    "PatternError": FailureKind.CONFIG,
    "RedcapError": FailureKind.REDCAP_ERROR,
}


def failure_kind(
    error_type: str, redcap_kind: str | None = None, *, lease_request: bool = False
) -> FailureKind:
    """The kind of a failure from its exception's class name (and a RedcapError's own kind);
    REDCap's refusal of a lease request (``lease_request``: writing or removing a ticket) is
    about the AutoID token's rights for the lease, not about the data's fields."""
    refused = error_type == "RedcapError" and redcap_kind in (None, "redcap_error")
    if lease_request and refused:
        return FailureKind.LEASE_REFUSED
    if redcap_kind:
        try:
            return FailureKind(redcap_kind)
        except ValueError:
            pass
    return _BY_ERROR_TYPE.get(error_type, FailureKind.INTERNAL)


def cause_of(kind: str | None, error_type: str = "") -> Cause:
    """The cause and what to do for a recorded ``error.kind`` (older summaries: by type)."""
    try:
        return CAUSES[FailureKind(kind)] if kind else CAUSES[failure_kind(error_type)]
    except ValueError:
        return CAUSES[failure_kind(error_type)]


def written_after(step: str, mode: str) -> str:
    """What a run that failed at ``step`` had written to REDCap, in the words every screen
    uses (report, mail): one place, so they never contradict each other."""
    if mode == "dry":
        return "nothing (dry run)"
    if step == "lease":
        return "nothing but this run's lease ticket (given back unless “Needs a human” says not)"
    if step.startswith("read") or step in ("plan", "config"):
        return "nothing: the run stops before any write when a read or the plan fails"
    return "possibly part of the plan; the next run completes it without duplicates"
