"""Client-side encryption of backup files: AES-256-GCM over fixed-size chunks, streamed in flat
memory so a file of any size passes through a bounded buffer on its way to or from S3. The stored
form (format 2) is dmf.stream_cipher's, shared with the node fetch agent; this module adds the key's
forms, the sizes, and errors dmf treats as permanent.

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

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dmf import stream_cipher
from dmf.core.client_encryption import Expected
from dmf.core.errors import PermanentError
from dmf.stream_cipher import HEADER_BYTES, KEY_BYTES, MAX_CHUNK, MIN_CHUNK, TAG_BYTES, StreamError

SCHEME = "aes-256-gcm-chunked-v2"
OLD_SCHEMES = ("aes-256-gcm-chunked-v1",)  # written by earlier dmf: refused by name, never read
DEFAULT_CHUNK = 1 << 20
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
    return HEADER_BYTES + plain_size + TAG_BYTES * max(1, math.ceil(plain_size / chunk_size))


def plain_size(stored_size: int, chunk_size: int = DEFAULT_CHUNK) -> int:
    """The plaintext size of a stored file of `stored_size` bytes: the inverse of encrypted_size."""
    _check_chunk_size(chunk_size)
    body = stored_size - HEADER_BYTES
    size = body - TAG_BYTES * max(1, math.ceil(body / (chunk_size + TAG_BYTES)))
    # Sizes between two valid ones (a last unit shorter than its tag) map back to another size.
    if size < 0 or encrypted_size(size, chunk_size) != stored_size:
        raise EncryptionError(f"{stored_size} bytes is not the size of a file encrypted in {chunk_size}-byte chunks")
    return size


def encrypt_chunks(chunks: Iterable[bytes], key: bytes, chunk_size: int = DEFAULT_CHUNK, *,
                   bound_to: str) -> Iterator[bytes]:
    """The encrypted form of the byte stream `chunks` (dmf.stream_cipher.encrypt_chunks), the key and
    chunk size checked first."""
    _check_key(key)
    _check_chunk_size(chunk_size)
    yield from stream_cipher.encrypt_chunks(chunks, key, chunk_size, bound_to)


def decrypt_chunks(chunks: Iterable[bytes], key: bytes, *, name: str, bound_to: str) -> Iterator[bytes]:
    """The plaintext of the encrypted byte stream `chunks` (dmf.stream_cipher.decrypt_chunks), each
    chunk yielded once it has authenticated; a stream that is not whole and authentic raises
    EncryptionError headed by `name`."""
    _check_key(key)
    try:
        yield from stream_cipher.decrypt_chunks(chunks, key, name, bound_to)
    except StreamError as exc:
        raise EncryptionError(str(exc)) from None


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"an encryption key is {KEY_BYTES} bytes (see parse_key), not {len(key)}")


def _check_chunk_size(chunk_size: int) -> None:
    # A size the decryptor would refuse must not be written.
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be {MIN_CHUNK}..{MAX_CHUNK} bytes, not {chunk_size}")
