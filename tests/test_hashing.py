"""Patient keys: the stored hash and the legacy spellings a lookup must also try."""

import hashlib
import hmac

from autoid_lib.hashing import PatientHasher, normalise_patient_id, sha512_hex
from autoid_lib.secret import Secret


def test_normalising_removes_padding_whitespace_and_nuls():
    assert normalise_patient_id(" 12345\x00 ") == "12345"
    assert normalise_patient_id("\x00 \t") == ""


def test_sha512_keys_are_the_legacy_hex_of_the_normalised_then_the_raw_value():
    hasher = PatientHasher()
    assert hasher.primary("12345") == hashlib.sha512(b"12345").hexdigest()
    assert hasher.lookup_keys("1234", "1234") == (sha512_hex("1234"),)
    assert hasher.lookup_keys("1234  ", "1234") == (sha512_hex("1234"), sha512_hex("1234  "))


def test_an_odd_length_id_is_also_looked_up_in_its_dicom_padded_form():
    hasher = PatientHasher()
    padded = (sha512_hex("12345"), sha512_hex("12345 "))
    assert hasher.lookup_keys("12345", "12345") == padded
    assert hasher.lookup_keys("12345 ", "12345") == padded


def test_hmac_keys_put_the_keyed_hash_first_and_keep_the_legacy_ones():
    hasher = PatientHasher("hmac-sha256", Secret("env:K", "site-secret-long-enough-for-hmac-32"))
    keyed = hmac.new(b"site-secret-long-enough-for-hmac-32", b"12345", hashlib.sha256).hexdigest()
    assert hasher.primary("12345") == keyed
    assert (
        hasher.lookup_keys("1234 ", "1234")[0]
        == hmac.new(b"site-secret-long-enough-for-hmac-32", b"1234", hashlib.sha256).hexdigest()
    )
    assert hasher.lookup_keys("12345 ", "12345") == (
        keyed,
        sha512_hex("12345"),
        sha512_hex("12345 "),
    )
    assert "site-secret-long-enough-for-hmac-32" not in repr(hasher)
