"""Patient keys: the hash stored in AutoID instead of the patient ID.

The legacy job stored the SHA-512 hex of the patient ID. That is reversible by enumerating
national patient numbers, so a keyed HMAC-SHA256 is offered; patients already stored under the
legacy hash keep their ID. Lookups also try the hashes of the spellings the legacy job stored:
it hashed the raw value, so DICOM's padding (a trailing space or NUL) is part of some stored
hashes. A patient's identity is the normalised ID; every spelling of it finds the same rows.

One ID can reach REDCap in two Unicode forms (``MÜLLER`` composed, NFC, or as ``U`` plus a
combining diaeresis, NFD: canonically the same text, different bytes, different hashes). The
identity is the NFC form, so both are one patient; lookups also try the NFD form and the form
as received, since the legacy job and earlier kit versions hashed whatever form they saw.

Changing the scheme or key would make every stored patient look new, so the scheme has a
``fingerprint`` (never the key itself) that the run records in AutoID and checks on every run;
a rotation names the old settings as ``previous`` so they are still looked up.
"""

from __future__ import annotations

import hashlib
import hmac
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from autoid_lib.errors import ConfigError
from autoid_lib.secret import Secret

SCHEMES = ("sha512", "hmac-sha256")
LEGACY_FINGERPRINT = "sha512"  # the legacy job's scheme: always looked up, so always accepted

# What DICOM padding and copy-paste add around an ID: whitespace and NULs, in any mix.
_PADDING = string.whitespace + "\x00"
# The padded spellings the legacy job may have hashed for a normalised ID.
_LEGACY_PADDINGS = ("", " ", "\x00")


def normalise_patient_id(raw: str) -> str:
    """The patient's identity: the ID without padding, in Unicode NFC; '' when nothing else is
    left."""
    return unicodedata.normalize("NFC", raw.strip(_PADDING))


def stored_forms(raw: str, normalised: str) -> tuple[str, ...]:
    """The forms a patient's ID may have been hashed in before: the identity (NFC), its NFD
    form and the unpadded form as received; one form for plain ASCII."""
    forms = (normalised, unicodedata.normalize("NFD", normalised), raw.strip(_PADDING))
    return tuple(dict.fromkeys(forms))


def sha512_hex(value: str) -> str:
    return hashlib.sha512(value.encode("utf-8")).hexdigest()


MIN_KEY_BYTES = 32  # a shorter key can be guessed like a password


def normalise_hash(value: str) -> str:
    """A stored hash as the kit compares it: hex is case-insensitive, padding is not data."""
    return value.strip().lower()


@dataclass(frozen=True)
class PatientHasher:
    """Hashes patient IDs under the configured scheme and lists the keys to look up."""

    scheme: str = "sha512"
    key: Secret | None = field(default=None, repr=False)
    previous: PatientHasher | None = None  # the settings before a rotation, still looked up

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown hash scheme {self.scheme!r}; use one of {SCHEMES}")
        if self.scheme == "hmac-sha256" and self.key is None:
            raise ConfigError("hash = 'hmac-sha256' needs [run] hash_key = 'env:...' or 'file:...'")

    def primary(self, normalised: str) -> str:
        """The hash a new AutoID row is stored under."""
        if self.scheme == "hmac-sha256":
            return self._hmac(normalised.encode("utf-8"))
        return sha512_hex(normalised)

    def _hmac(self, message: bytes) -> str:
        assert self.key is not None  # __post_init__ guarantees it for hmac-sha256
        key = self.key.reveal().encode("utf-8")
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        """Names the scheme and key without revealing the key (an HMAC of a fixed text)."""
        if self.scheme == "hmac-sha256":
            return f"hmac-sha256:{self._hmac(b'autoid-kit key fingerprint v1')[:16]}"
        return LEGACY_FINGERPRINT

    @property
    def accepted_fingerprints(self) -> frozenset[str]:
        """Schemes whose stored rows this hasher finds: itself, the previous one, the legacy."""
        found = {self.fingerprint, LEGACY_FINGERPRINT}
        if self.previous is not None:
            found |= self.previous.accepted_fingerprints
        return frozenset(found)

    def lookup_keys(self, raw: str, normalised: str) -> tuple[str, ...]:
        """Hashes under which this patient may already be known, preferred first."""
        forms = stored_forms(raw, normalised)
        keys = [self.primary(form) for form in forms]
        if self.previous is not None:
            keys.extend(self.previous.lookup_keys(raw, normalised))
        keys.extend(sha512_hex(form + pad) for form in forms for pad in _LEGACY_PADDINGS)
        keys.append(sha512_hex(raw))
        return tuple(dict.fromkeys(keys))

    def patient_keys(self, normalised: str, spellings: Iterable[str]) -> tuple[str, ...]:
        """Every key of one patient seen under several spellings: one lookup for all of them."""
        keys: dict[str, None] = {}
        for raw in spellings:
            keys.update(dict.fromkeys(self.lookup_keys(raw, normalised)))
        return tuple(keys) or self.lookup_keys(normalised, normalised)
