"""Client-side encryption of backup files: AES-256-GCM over fixed-size chunks, streamed in flat
memory so a file of any size passes through a bounded buffer on its way to or from S3.

Stored form (format 2): a 40-byte header (magic `DMF\x02`, chunk size as 4-byte big-endian, 32-byte
random salt), then one unit per plaintext chunk: AES-GCM ciphertext and its 16-byte tag. Every chunk but the last holds
exactly the chunk size; the last holds 0..chunk size bytes, so an empty file is one empty unit.
Each file gets its own data key, HKDF-SHA256 of the master key with the header's salt, so nonces
can count chunks from 0 in every file. A chunk's nonce is its index (11 bytes) and a final flag
(1 byte), and the header followed by the object's key in the bucket is every unit's associated data:
the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015), which makes reordered units, a
stream cut at a unit boundary and data appended after the final unit fail authentication like any
altered byte, and the key binding makes an object copied from another key (another set, table or
snapshot) fail too. Format 1 (`DMF\x01`, the header alone as associated data) is refused by name.

Manifests and schemas are authenticated with HMAC-SHA256 under mac_key, derived from the master key
with its own HKDF label, so the key that encrypts is never the key that signs."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
from collections.abc import Iterable, Iterator
from itertools import chain

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dmf.core.client_encryption import Expected
from dmf.core.errors import PermanentError

SCHEME = "aes-256-gcm-chunked-v2"
OLD_SCHEMES = ("aes-256-gcm-chunked-v1",)  # written by earlier dmf: refused by name, never read
KEY_BYTES = 32
HEADER_BYTES = 40
DEFAULT_CHUNK = 1 << 20
# Chunk sizes a header may give: below 1 KiB the tags cost more than 1.5 %, above 64 MiB a reader's
# buffers stop being small; anything outside is damage or not our file.
MIN_CHUNK = 1 << 10
MAX_CHUNK = 64 << 20

_MAGIC = b"DMF\x02"
_OLD_MAGIC = b"DMF\x01"
_SALT_BYTES = 32
_TAG_BYTES = 16
_FILE_KEY_INFO = b"dmf/file-key/v1"
_KEY_ID_INFO = b"dmf/key-id/v1"
_MAC_KEY_INFO = b"dmf/mac-key/v2"
_KEY_FORMAT = "encryption_key must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)"


class EncryptionError(PermanentError):
    """A key that cannot be used, or a stored file that is not a whole, authentic encrypted stream.
    The message never holds key material."""


def generate_key() -> str:
    """A new random master key, in the base64 form parse_key reads."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def parse_key(text: str) -> bytes:
    """The master key from its configured form: standard base64 of 32 bytes, whitespace ignored."""
    try:
        key = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise EncryptionError(_KEY_FORMAT) from None  # the cause would quote the text: it may be the key
    if len(key) != KEY_BYTES:
        raise EncryptionError(_KEY_FORMAT)
    return key


def key_id(key: bytes) -> str:
    """A short name of the key for manifests, so a restore with another key fails before any download;
    an HMAC under the key, so it tells nothing about the key itself."""
    return hmac.new(key, _KEY_ID_INFO, hashlib.sha256).hexdigest()[:16]


def mac_key(key: bytes) -> bytes:
    """The key that authenticates manifests and schemas (dmf.core.client_encryption): HKDF-SHA256 of
    the master key with its own label, independent of every file's data key."""
    _check_key(key)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_MAC_KEY_INFO).derive(key)


def expected(key: bytes | None) -> Expected:
    """What a repository block with client-side encryption `key` (None: off) expects of every set."""
    if key is None:
        return Expected(SCHEME, None, None, OLD_SCHEMES)
    return Expected(SCHEME, key_id(key), mac_key(key), OLD_SCHEMES)


def encrypted_size(plain_size: int, chunk_size: int = DEFAULT_CHUNK) -> int:
    """The stored size of a file of `plain_size` bytes."""
    _check_chunk_size(chunk_size)
    if plain_size < 0:
        raise ValueError(f"a file size cannot be negative: {plain_size}")
    return HEADER_BYTES + plain_size + _TAG_BYTES * max(1, math.ceil(plain_size / chunk_size))


def plain_size(stored_size: int, chunk_size: int = DEFAULT_CHUNK) -> int:
    """The plaintext size of a stored file of `stored_size` bytes: the inverse of encrypted_size."""
    _check_chunk_size(chunk_size)
    body = stored_size - HEADER_BYTES
    size = body - _TAG_BYTES * max(1, math.ceil(body / (chunk_size + _TAG_BYTES)))
    # Sizes between two valid ones (a last unit shorter than its tag) map back to another size.
    if size < 0 or encrypted_size(size, chunk_size) != stored_size:
        raise EncryptionError(f"{stored_size} bytes is not the size of a file encrypted in {chunk_size}-byte chunks")
    return size


def encrypt_chunks(chunks: Iterable[bytes], key: bytes, chunk_size: int = DEFAULT_CHUNK, *,
                   bound_to: str) -> Iterator[bytes]:
    """The encrypted form of the byte stream `chunks` (pieces of any size): the header, then one unit
    per `chunk_size` bytes of plaintext, authenticated with the object key `bound_to` it is stored
    under. Holds about two chunks and one input piece at a time."""
    _check_key(key)
    _check_chunk_size(chunk_size)
    salt = os.urandom(_SALT_BYTES)
    header = _MAGIC + chunk_size.to_bytes(4, "big") + salt
    aead, aad = AESGCM(_data_key(key, salt)), _associated(header, bound_to)
    yield header
    for index, (chunk, final) in enumerate(_cut(chunks, chunk_size)):
        yield aead.encrypt(_nonce(index, final), chunk, aad)


def decrypt_chunks(chunks: Iterable[bytes], key: bytes, *, name: str, bound_to: str) -> Iterator[bytes]:
    """The plaintext of the encrypted byte stream `chunks`, read from the object key `bound_to`, one
    chunk per unit, each yielded only once it has authenticated (a stream encrypted for another key
    fails at its first unit). `name` (the file) heads every error message. Plaintext yielded
    before an error is authentic but incomplete: callers write it aside (a .part file) and keep it
    only if the stream ends without error. Holds about two units and one input piece at a time."""
    _check_key(key)
    stream = iter(chunks)
    header, rest = _read_header(stream)
    if len(header) == HEADER_BYTES and header.startswith(_OLD_MAGIC):
        raise EncryptionError(f"{name}: encrypted in format 1 by an older dmf (not bound to its key), which "
                              "this dmf refuses to read")
    if len(header) < HEADER_BYTES or not header.startswith(_MAGIC):
        raise EncryptionError(f"{name}: not a dmf-encrypted file")
    chunk_size = int.from_bytes(header[4:8], "big")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise EncryptionError(f"{name}: its header gives a chunk size of {chunk_size} bytes, "
                              f"outside {MIN_CHUNK}..{MAX_CHUNK} (damaged or not a dmf-encrypted file)")
    aead, aad = AESGCM(_data_key(key, header[8:])), _associated(header, bound_to)
    for index, (unit, final) in enumerate(_cut(chain((rest,), stream), chunk_size + _TAG_BYTES)):
        try:
            chunk = aead.decrypt(_nonce(index, final), unit, aad)
        except InvalidTag:
            raise EncryptionError(f"{name}: {_failure(aead, index, unit, final, aad)}") from None
        yield chunk


def _failure(aead: AESGCM, index: int, unit: bytearray, final: bool, aad: bytes) -> str:
    """Why a unit did not authenticate. A unit that authenticates with the other final flag was
    whole but in the wrong place: the stream was cut after it, or bytes follow the final one."""
    if final and not unit:
        return "ends without its final chunk (truncated)"
    try:
        aead.decrypt(_nonce(index, not final), unit, aad)
    except InvalidTag:
        return "authentication failed (corrupted, truncated, another encryption key, or copied from another object)"
    return "ends without its final chunk (truncated)" if final else "data follows its final chunk"


def _read_header(stream: Iterator[bytes]) -> tuple[bytes, bytearray]:
    """The stream's first HEADER_BYTES (fewer if it ends sooner) and the rest of the piece they end in."""
    head = bytearray()
    for piece in stream:
        head += piece
        if len(head) >= HEADER_BYTES:
            break
    return bytes(head[:HEADER_BYTES]), head[HEADER_BYTES:]


def _cut(pieces: Iterable[bytes], size: int) -> Iterator[tuple[bytearray, bool]]:
    """The byte stream `pieces` cut in blocks of `size` bytes, each with whether it is the last;
    the last holds 0..size bytes (an empty stream is one empty block). A full block is handed out
    only once a byte after it has arrived, or the stream has ended: one block of lookahead is what
    tells the last block from the others."""
    block = bytearray()
    for piece in pieces:
        view = memoryview(piece)
        while view:
            if len(block) == size:
                yield block, False
                block = bytearray()
            taken = size - len(block)
            block += view[:taken]
            view = view[taken:]
    yield block, True


def _associated(header: bytes, bound_to: str) -> bytes:
    # The header has a fixed length, so header + key reads back one way only.
    return header + bound_to.encode()


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _data_key(key: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_FILE_KEY_INFO).derive(key)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"an encryption key is {KEY_BYTES} bytes (see parse_key), not {len(key)}")


def _check_chunk_size(chunk_size: int) -> None:
    # A size the decryptor would refuse must not be written.
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be {MIN_CHUNK}..{MAX_CHUNK} bytes, not {chunk_size}")
