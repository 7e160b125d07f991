"""Patient keys: the stored hash and the legacy spellings a lookup must also try."""

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoid_lib.hashing import (
    LEGACY_FINGERPRINT,
    PatientHasher,
    normalise_hash,
    normalise_patient_id,
    sha512_hex,
)
from autoid_lib.secret import Secret


def legacy_spellings(normalised):
    return (sha512_hex(normalised), sha512_hex(normalised + " "), sha512_hex(normalised + "\x00"))


def test_normalising_removes_padding_whitespace_and_nuls():
    assert normalise_patient_id(" 12345\x00 ") == "12345"
    assert normalise_patient_id("\x00 \t") == ""


@pytest.mark.parametrize("raw", ["\x00 \x00 \x00", "\x00\x00 \x00 \x00\x00", " \x00\t\r\n"])
def test_ids_made_only_of_nuls_and_spaces_are_empty(raw):  # issue 15, case 7
    assert normalise_patient_id(raw) == ""


@given(st.text(alphabet=" \x00\tAB1", max_size=12))
def test_normalising_is_idempotent_and_leaves_no_padding_at_either_end(raw):
    normalised = normalise_patient_id(raw)
    assert normalise_patient_id(normalised) == normalised
    assert normalised == "" or (normalised[0] not in " \x00\t" and normalised[-1] not in " \x00\t")


def test_sha512_keys_are_the_normalised_its_padded_spellings_then_the_raw_value():
    hasher = PatientHasher()
    assert hasher.primary("12345") == hashlib.sha512(b"12345").hexdigest()
    assert hasher.lookup_keys("1234", "1234") == legacy_spellings("1234")
    assert hasher.lookup_keys("1234  ", "1234") == (*legacy_spellings("1234"), sha512_hex("1234  "))


def test_every_spelling_of_one_id_finds_the_rows_of_every_padded_spelling():  # issue 15, case 1
    hasher = PatientHasher()
    for stored in ("ABC\x00", "ABC ", "ABC", "ABCD ", "ABCD\x00"):
        normalised = normalise_patient_id(stored)
        for spelling in (normalised, normalised + " ", normalised + "\x00", " " + normalised):
            assert sha512_hex(stored) in hasher.lookup_keys(spelling, normalised)


MULLER_NFC = "M\u00dcLLER^1970"  # Ü as one code point
MULLER_NFD = "MU\u0308LLER^1970"  # U and a combining diaeresis: the same text, other bytes


def test_both_unicode_forms_of_one_id_are_one_patient():
    assert MULLER_NFC != MULLER_NFD
    assert normalise_patient_id(MULLER_NFD) == normalise_patient_id(MULLER_NFC + " ")


@pytest.mark.parametrize(
    "hasher", [PatientHasher(), PatientHasher("hmac-sha256", Secret("env:K", "k" * 32))]
)
def test_rows_hashed_from_either_unicode_form_are_found_from_either(hasher):
    """The legacy job and earlier kit versions hashed the form they saw; a lookup from either
    form, padded or not, finds rows of both, under the legacy and the configured scheme."""
    for seen in (MULLER_NFC, MULLER_NFD, MULLER_NFD + "\x00"):
        keys = hasher.lookup_keys(seen, normalise_patient_id(seen))
        for stored in (MULLER_NFC, MULLER_NFD, MULLER_NFD + " "):
            assert sha512_hex(stored) in keys
        assert {hasher.primary(MULLER_NFC), hasher.primary(MULLER_NFD)} <= set(keys)
        assert keys[0] == hasher.primary(MULLER_NFC)  # new rows: the NFC identity's hash


@given(st.text(alphabet="AEOUaeo\u0308\u0301\u00dc\u00e9 \x00", max_size=10))
def test_normalising_is_the_same_for_canonically_equal_ids(raw):
    import unicodedata

    for form in ("NFC", "NFD"):
        assert normalise_patient_id(unicodedata.normalize(form, raw)) == normalise_patient_id(raw)


def test_patient_keys_unite_the_keys_of_every_spelling_seen():
    hasher = PatientHasher()
    keys = hasher.patient_keys("AB", {"AB", " AB  "})
    assert set(keys) == {*legacy_spellings("AB"), sha512_hex(" AB  ")}


def test_hmac_keys_put_the_keyed_hash_first_and_keep_the_legacy_ones():
    hasher = PatientHasher("hmac-sha256", Secret("env:K", "site-secret-long-enough-for-hmac-32"))
    keyed = hmac.new(b"site-secret-long-enough-for-hmac-32", b"12345", hashlib.sha256).hexdigest()
    assert hasher.primary("12345") == keyed
    assert (
        hasher.lookup_keys("1234 ", "1234")[0]
        == hmac.new(b"site-secret-long-enough-for-hmac-32", b"1234", hashlib.sha256).hexdigest()
    )
    assert hasher.lookup_keys("12345 ", "12345") == (keyed, *legacy_spellings("12345"))
    assert "site-secret" not in repr(hasher)


def test_a_rotated_key_still_looks_up_the_previous_keys_rows():
    old = PatientHasher("hmac-sha256", Secret("env:OLD", "old-secret"))
    new = PatientHasher("hmac-sha256", Secret("env:NEW", "new-secret"), previous=old)
    keys = new.lookup_keys("12345", "12345")
    assert keys[0] == new.primary("12345")
    assert old.primary("12345") in keys
    assert new.accepted_fingerprints == {new.fingerprint, old.fingerprint, LEGACY_FINGERPRINT}


def test_fingerprints_name_scheme_and_key_without_revealing_the_key():
    one = PatientHasher("hmac-sha256", Secret("env:K", "key-one"))
    two = PatientHasher("hmac-sha256", Secret("env:K", "key-two"))
    assert PatientHasher().fingerprint == "sha512"
    assert one.fingerprint.startswith("hmac-sha256:")
    assert one.fingerprint != two.fingerprint
    assert "key-one" not in one.fingerprint
    assert one.fingerprint == PatientHasher("hmac-sha256", Secret("env:X", "key-one")).fingerprint


def test_stored_hashes_compare_case_insensitively():  # issue 15, case 9 (upper-case hex)
    assert normalise_hash(" " + sha512_hex("A").upper() + " ") == sha512_hex("A")
