"""Patient keys: the hash stored in AutoID instead of the patient ID.

The legacy job stored the SHA-512 hex of the patient ID. That is reversible by enumerating
national patient numbers, so a keyed HMAC-SHA256 is offered; patients already stored under the
legacy hash keep their ID. Lookups also try the hash of the raw, unnormalised value because the
legacy job hashed IDs with their trailing spaces (DICOM pads odd-length values with one).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from autoid_lib.errors import ConfigError
from autoid_lib.secret import Secret

SCHEMES = ("sha512", "hmac-sha256")


def normalise_patient_id(raw: str) -> str:
    """Remove what DICOM padding and copy-paste add around an ID: whitespace and NULs."""
    return raw.strip().strip("\x00").strip()


def sha512_hex(value: str) -> str:
    return hashlib.sha512(value.encode("utf-8")).hexdigest()


MIN_KEY_BYTES = 32  # a shorter key can be guessed like a password


@dataclass(frozen=True)
class PatientHasher:
    """Hashes patient IDs under the configured scheme and lists the keys to look up."""

    scheme: str = "sha512"
    key: Secret | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown hash scheme {self.scheme!r}; use one of {SCHEMES}")
        if self.scheme == "hmac-sha256" and self.key is None:
            raise ConfigError("hash = 'hmac-sha256' needs [run] hash_key = 'env:...' or 'file:...'")
        if self.scheme == "hmac-sha256" and len(self.key.reveal().encode("utf-8")) < MIN_KEY_BYTES:
            raise ConfigError(
                f"[run] hash_key ({self.key.source}) is shorter than {MIN_KEY_BYTES} bytes; "
                "use a long random key, e.g. from: openssl rand -hex 32"
            )

    def primary(self, normalised: str) -> str:
        """The hash a new AutoID row is stored under."""
        if self.scheme == "hmac-sha256":
            key = self.key.reveal().encode("utf-8")
            return hmac.new(key, normalised.encode("utf-8"), hashlib.sha256).hexdigest()
        return sha512_hex(normalised)

    def lookup_keys(self, raw: str, normalised: str) -> tuple[str, ...]:
        """Hashes under which this patient may already be known, preferred first."""
        legacy = sha512_hex(normalised)
        keys = [legacy] if self.scheme == "sha512" else [self.primary(normalised), legacy]
        if raw != normalised:
            keys.append(sha512_hex(raw))
        if len(normalised) % 2:  # DICOM pads odd-length values with one space
            padded = sha512_hex(normalised + " ")
            if padded not in keys:
                keys.append(padded)
        return tuple(keys)
