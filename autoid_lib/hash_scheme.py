"""The hash scheme AutoID was written with, recorded in AutoID itself so every installation sees it.

A run that hashed patients with another scheme or key than the one their rows were stored under
would find none of them and give each a second ID, silently. So the first live run records the
scheme's fingerprint (``PatientHasher.fingerprint``: the scheme name, and for a keyed scheme an
HMAC of a fixed text, never the key) as a kit record in AutoID, and every later run compares:

- no record yet: record the current fingerprint;
- the same fingerprint: nothing to do;
- one the current settings still look up (the legacy SHA-512, or ``[run] previous_hash``):
  a deliberate migration or rotation; record the new fingerprint;
- anything else: refuse the run before it plans a single ID (``HashSchemeChanged``).

Pure: rows in, the record to write (or an error) out.
"""

from __future__ import annotations

from collections.abc import Iterable

from autoid_lib.errors import HashSchemeChanged
from autoid_lib.hashing import PatientHasher
from autoid_lib.snapshot import KIT_PROJECT_PREFIX, AutoIdRow

HASH_SCHEME_RECORD = KIT_PROJECT_PREFIX + "hash-scheme"


def recorded_fingerprint(rows: Iterable[AutoIdRow]) -> str | None:
    """The fingerprint of the newest hash-scheme record (record names grow), or None."""
    records = [r for r in rows if r.project_name.strip() == HASH_SCHEME_RECORD and r.value]
    if not records:
        return None
    newest = max(records, key=lambda r: (r.record_id.isdigit(), _number(r.record_id)))
    return newest.value.strip()


def _number(record_id: str) -> int:
    return int(record_id) if record_id.isdigit() else 0


def fingerprint_to_record(rows: Iterable[AutoIdRow], hasher: PatientHasher) -> str | None:
    """The fingerprint this run must record (None: already recorded); raises if unsafe."""
    recorded = recorded_fingerprint(rows)
    current = hasher.fingerprint
    if recorded == current:
        return None
    if recorded is None or recorded in hasher.accepted_fingerprints:
        return current
    raise HashSchemeChanged(
        f"AutoID was written with hash scheme {recorded}, but this configuration hashes with "
        f"{current}: every stored patient would look new and get a second ID. Restore the "
        "previous [run] hash and hash_key, or name them as [run] previous_hash and "
        "previous_hash_key to rotate (docs/run.md, 'Hash settings')"
    )


def describe(rows: Iterable[AutoIdRow], hasher: PatientHasher) -> str:
    """One line for ``autoid check``: does the configuration match what AutoID records?"""
    recorded = recorded_fingerprint(rows)
    if recorded is None:
        return f"none recorded yet; the first live run records {hasher.fingerprint}"
    if recorded == hasher.fingerprint:
        return f"ok ({recorded})"
    if recorded in hasher.accepted_fingerprints:
        return f"ok: rotating from {recorded} to {hasher.fingerprint} (previous settings looked up)"
    return f"FAILED: AutoID records {recorded}, this configuration {hasher.fingerprint}"
