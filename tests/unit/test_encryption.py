import os
import tracemalloc

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dmf.encryption import (DEFAULT_CHUNK, HEADER_BYTES, KEY_BYTES, EncryptionError, decrypt_chunks,
                            encrypt_chunks, encrypted_size, generate_key, key_id, mac_key, parse_key, plain_size)

CHUNK = 1024  # the smallest chunk size: many units from little data
UNIT = CHUNK + 16
KEY = bytes(range(KEY_BYTES))
NAME = "ks/tbl/nb-1-big-Data.db"
STORED_AT = "20250101120000/10.0.0.1/snapshots/ks/tbl-" + "0" * 32 + "/nb-1-big-Data.db"  # the object key
MARKER = b"<dmf-plaintext-marker>".ljust(64, b"#")


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def encrypt(data: bytes, piece: int = 100, key: bytes = KEY, bound_to: str = STORED_AT) -> bytes:
    return b"".join(encrypt_chunks(pieces(data, piece), key, CHUNK, bound_to=bound_to))


def decrypted_until_error(stored: bytes, key: bytes = KEY,
                          bound_to: str = STORED_AT) -> tuple[bytes, EncryptionError]:
    """The plaintext handed out before decryption failed, and the failure."""
    out = []
    with pytest.raises(EncryptionError) as failure:
        for chunk in decrypt_chunks(pieces(stored, 333), key, name=NAME, bound_to=bound_to):
            out.append(chunk)
    assert str(failure.value).startswith(f"{NAME}: ")
    return b"".join(out), failure.value


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
@pytest.mark.parametrize("piece", [100, 5000])  # input pieces smaller and larger than a chunk
def test_round_trip(size, piece):
    data = os.urandom(size)
    units = list(encrypt_chunks(pieces(data, piece), KEY, CHUNK, bound_to=STORED_AT))
    stored = b"".join(units)
    assert len(units) == 1 + max(1, -(-size // CHUNK))  # the header, then one unit per chunk
    assert len(stored) == encrypted_size(size, CHUNK)
    assert plain_size(len(stored), CHUNK) == size
    for read in (piece, 1, len(stored)):
        assert b"".join(decrypt_chunks(pieces(stored, read), KEY, name=NAME, bound_to=STORED_AT)) == data


def test_format_is_the_documented_one():
    # Decrypted here with the primitives themselves: the layout other code depends on.
    data = os.urandom(CHUNK + 5)
    stored = encrypt(data)
    header = stored[:HEADER_BYTES]
    assert header[:4] == b"DMF\x02" and int.from_bytes(header[4:8], "big") == CHUNK
    file_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=header[8:], info=b"dmf/file-key/v1").derive(KEY)
    aead = AESGCM(file_key)
    first, last = stored[HEADER_BYTES:HEADER_BYTES + UNIT], stored[HEADER_BYTES + UNIT:]
    aad = header + STORED_AT.encode()  # the header, then the object's key
    assert aead.decrypt(bytes(11) + b"\x00", first, aad) == data[:CHUNK]
    assert aead.decrypt((1).to_bytes(11, "big") + b"\x01", last, aad) == data[CHUNK:]
    signing = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"dmf/mac-key/v2").derive(KEY)
    assert mac_key(KEY) == signing and signing not in (KEY, file_key)


def test_sizes_map_both_ways_and_no_other_stored_size_is_accepted():
    valid = {encrypted_size(size, CHUNK): size for size in range(3 * CHUNK + 2)}
    assert encrypted_size(0, CHUNK) == HEADER_BYTES + 16
    assert encrypted_size(3 * CHUNK, CHUNK) == HEADER_BYTES + 3 * UNIT
    assert encrypted_size(10 * 2**30) == HEADER_BYTES + 10 * 2**30 + 16 * 10 * 1024  # DEFAULT_CHUNK
    for stored in range(max(valid) + 1):
        if stored in valid:
            assert plain_size(stored, CHUNK) == valid[stored]
        else:  # shorter than a header and a tag, or a last unit shorter than its tag
            with pytest.raises(EncryptionError):
                plain_size(stored, CHUNK)
    assert plain_size(encrypted_size(5 * DEFAULT_CHUNK + 1)) == 5 * DEFAULT_CHUNK + 1


def test_same_plaintext_encrypts_differently_and_never_shows():
    data = MARKER * 100
    first, second = encrypt(data), encrypt(data)
    assert first[8:HEADER_BYTES] != second[8:HEADER_BYTES]  # the salt
    assert first[HEADER_BYTES:] != second[HEADER_BYTES:]
    assert MARKER not in first and MARKER not in second


def test_any_flipped_byte_fails_and_nothing_from_its_unit_on_is_handed_out():
    data = os.urandom(2 * CHUNK + 17)  # units 0 and 1 full, unit 2 final
    stored = encrypt(data)
    for position in range(len(stored)):
        damaged = bytearray(stored)
        damaged[position] ^= 0x01
        out, failure = decrypted_until_error(bytes(damaged))
        if position < 4:
            assert "not a dmf-encrypted file" in str(failure)
        elif position >= 8:  # salt, ciphertext or tag
            assert "authentication failed" in str(failure)
        damaged_unit = (position - HEADER_BYTES) // UNIT if position >= HEADER_BYTES else 0
        assert out == data[:damaged_unit * CHUNK]


@pytest.mark.parametrize("cut", [HEADER_BYTES, HEADER_BYTES + UNIT, HEADER_BYTES + 2 * UNIT,  # unit boundaries
                                 HEADER_BYTES + 1, HEADER_BYTES + UNIT + 600, -1, -16])  # mid-unit
def test_truncated_stream_fails(cut):
    data = os.urandom(2 * CHUNK + 17)
    out, _ = decrypted_until_error(encrypt(data)[:cut])
    assert data.startswith(out) and len(out) < len(data)


def test_removed_final_unit_is_reported_as_truncation():
    data = os.urandom(3 * CHUNK)
    out, failure = decrypted_until_error(encrypt(data)[:-UNIT])
    assert "truncated" in str(failure)
    assert out == data[:CHUNK]  # unit 1, now last, is not handed out: it is not the final one


@pytest.mark.parametrize("size", [2 * CHUNK, 2 * CHUNK + 17])
@pytest.mark.parametrize("extra", [b"\x00", bytes(16), bytes(UNIT), bytes(UNIT + 1)])
def test_data_after_the_final_unit_fails(size, extra):
    data = os.urandom(size)
    stored = encrypt(data)
    out, failure = decrypted_until_error(stored + extra)
    assert data.startswith(out) and len(out) < len(data)
    if size % CHUNK == 0:  # the final unit is whole: it authenticates, as final, where it is not last
        assert "data follows its final chunk" in str(failure)


def test_swapped_units_fail():
    data = os.urandom(3 * CHUNK)
    stored = encrypt(data)
    first, second = slice(HEADER_BYTES, HEADER_BYTES + UNIT), slice(HEADER_BYTES + UNIT, HEADER_BYTES + 2 * UNIT)
    swapped = stored[:HEADER_BYTES] + stored[second] + stored[first] + stored[HEADER_BYTES + 2 * UNIT:]
    out, failure = decrypted_until_error(swapped)
    assert out == b"" and "authentication failed" in str(failure)


@pytest.mark.parametrize("other", [
    STORED_AT.replace("nb-1", "nb-2"),                      # another file of the same table
    STORED_AT.replace("/ks/tbl-", "/ks/other-"),            # another table's
    STORED_AT.replace("20250101120000", "20240101120000"),  # an older backup's, same path
    STORED_AT.replace("/snapshots/", "/incrementals/20250102120000/"),
])
def test_an_object_moved_from_another_key_fails_before_any_plaintext(other):
    # Encrypted under the right master key, but for another object: swapped in, it does not authenticate.
    out, failure = decrypted_until_error(encrypt(os.urandom(3 * CHUNK), bound_to=other))
    assert out == b"" and "authentication failed" in str(failure)


def test_format_1_is_refused_by_name():
    stored = b"DMF\x01" + CHUNK.to_bytes(4, "big") + os.urandom(32) + bytes(UNIT)
    out, failure = decrypted_until_error(stored)
    assert out == b"" and str(failure) == (f"{NAME}: encrypted in format 1 by an older dmf (not bound to its key), "
                                           "which this dmf refuses to read")


def test_wrong_key_fails_before_any_plaintext():
    out, failure = decrypted_until_error(encrypt(os.urandom(3 * CHUNK)), key=bytes(KEY_BYTES))
    assert out == b"" and "authentication failed" in str(failure)


@pytest.mark.parametrize("stored", [b"", b"DMF\x02", b"PK\x03\x04" + bytes(100), b"DMF\x03" + bytes(100)])
def test_not_an_encrypted_file(stored):
    _, failure = decrypted_until_error(stored)
    assert str(failure) == f"{NAME}: not a dmf-encrypted file"


@pytest.mark.parametrize("chunk_size", [0, 1023, (64 << 20) + 1, 2**32 - 1])
def test_header_chunk_size_out_of_range_is_refused(chunk_size):
    stored = b"DMF\x02" + chunk_size.to_bytes(4, "big") + bytes(32) + bytes(100)
    _, failure = decrypted_until_error(stored)
    assert f"chunk size of {chunk_size} bytes" in str(failure)


@pytest.mark.parametrize("chunk_size", [0, 1023, (64 << 20) + 1])
def test_encryptor_refuses_chunk_sizes_the_decryptor_would(chunk_size):
    with pytest.raises(ValueError):
        next(encrypt_chunks([b"x"], KEY, chunk_size, bound_to=STORED_AT))


def test_key_of_wrong_length_is_refused_without_echo():
    with pytest.raises(ValueError) as failure:
        next(encrypt_chunks([b"x"], KEY[:16], bound_to=STORED_AT))
    assert KEY[:16].hex() not in str(failure.value) and repr(KEY[:16]) not in str(failure.value)


def test_generated_key_parses():
    text = generate_key()
    key = parse_key(f"  {text}\n")
    assert len(key) == KEY_BYTES and generate_key() != text
    stored = encrypt_chunks([b"abc"], key, bound_to=NAME)
    assert b"".join(decrypt_chunks(stored, key, name=NAME, bound_to=NAME)) == b"abc"


@pytest.mark.parametrize("text", [
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",  # 31 bytes
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",  # 33 bytes
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",  # 32 bytes, padding missing
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8-",  # urlsafe alphabet
    "s3cr3t-p4ssphr4se-n0t-base64!!",
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=é",
])
def test_parse_key_refuses_anything_but_32_bytes_of_base64_and_never_echoes_it(text):
    with pytest.raises(EncryptionError) as failure:
        parse_key(text)
    message = str(failure.value)
    assert message == "encryption_key must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)"
    assert text not in message and text[:12] not in message


def test_parse_key_reads_the_standard_form():
    assert parse_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=") == KEY


def test_key_id_is_stable_short_and_differs_between_keys():
    assert key_id(bytes(KEY_BYTES)) == "44681861a3850077"  # HMAC-SHA256(key, "dmf/key-id/v1"), as openssl gives
    assert key_id(KEY) == key_id(bytes(KEY))
    assert key_id(KEY) != key_id(bytes(KEY_BYTES))
    assert KEY.hex()[:16] not in key_id(KEY)


def test_memory_stays_flat_whatever_the_file_size():
    piece = os.urandom(64 << 10)
    expected_chunk = piece * (DEFAULT_CHUNK // len(piece))
    total = 64 << 20

    def source():
        for _ in range(total // len(piece)):
            yield piece

    tracemalloc.start()
    try:
        size = 0
        for chunk in decrypt_chunks(encrypt_chunks(source(), KEY, bound_to=STORED_AT), KEY, name=NAME,
                                    bound_to=STORED_AT):
            assert chunk == expected_chunk
            size += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == total
    assert peak < 8 << 20  # encryptor and decryptor together, 1 MiB chunks


def test_dmf_key_generate_prints_a_new_usable_key_each_time():
    from typer.testing import CliRunner

    from dmf.cli import app
    first, second = (CliRunner().invoke(app, ["key", "generate"]) for _ in range(2))
    assert first.exit_code == second.exit_code == 0
    assert len(parse_key(first.output)) == 32 and first.output != second.output
