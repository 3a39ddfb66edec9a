"""The stored form of a client-side encrypted file (format 2), both ways, streamed in flat memory.

A 40-byte header (magic `DMF\x02`, chunk size as 4-byte big-endian, 32-byte random salt), then one
unit per plaintext chunk: AES-GCM ciphertext and its 16-byte tag. Every chunk but the last holds
exactly the chunk size; the last holds 0..chunk size bytes, so an empty file is one empty unit.
Each file gets its own data key, HKDF-SHA256 of the master key with the header's salt, so nonces
can count chunks from 0 in every file. A chunk's nonce is its index (11 bytes) and a final flag
(1 byte), and the header followed by the object's key in the bucket is every unit's associated data:
the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015), which makes reordered units, a
stream cut at a unit boundary and data appended after the final unit fail authentication like any
altered byte, and the key binding makes an object copied from another key (another set, table or
snapshot) fail too. Format 1 (`DMF\x01`, the header alone as associated data) is refused by name.

Standard library and `cryptography` only, no dmf import, Python 3.6+: dmf.encryption uses it on the
worker, and dmf.node_fetch sends its source to a node's fetch agent, which decrypts there. It loads
where `cryptography` is missing too; `unavailable()` then says why it cannot be used.
"""
import os
from itertools import chain
from typing import Iterable, Iterator, Optional, Tuple

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as exc:  # a node's python without it: its fetch agent says so, and the node takes the worker path
    _MISSING = "no cryptography package ({})".format(exc)
else:
    _MISSING = None

KEY_BYTES = 32
HEADER_BYTES = 40
TAG_BYTES = 16
# Chunk sizes a header may give: below 1 KiB the tags cost more than 1.5 %, above 64 MiB a reader's
# buffers stop being small; anything outside is damage or not our file.
MIN_CHUNK = 1 << 10
MAX_CHUNK = 64 << 20

_MAGIC = b"DMF\x02"
_OLD_MAGIC = b"DMF\x01"
_SALT_BYTES = 32
_FILE_KEY_INFO = b"dmf/file-key/v1"


class StreamError(ValueError):
    """A stored file that is not a whole, authentic encrypted stream. The message names the file,
    never key material."""


def unavailable() -> Optional[str]:
    """Why this python cannot decrypt (None: it can): `cryptography` is missing, or cannot run
    AES-GCM and HKDF as called here (one below 3.1 wants a backend argument; units are bytearrays)."""
    if _MISSING is not None:
        return _MISSING
    try:
        aead, nonce = AESGCM(_data_key(bytes(KEY_BYTES), bytes(_SALT_BYTES))), _nonce(0, True)
        aead.decrypt(nonce, bytearray(aead.encrypt(nonce, bytearray(b"dmf"), b"")), b"")
    except Exception as exc:  # noqa: BLE001 — whatever it is, this python cannot decrypt
        return "its cryptography package cannot run AES-GCM with HKDF ({}: {})".format(type(exc).__name__, exc)
    return None


def encrypt_chunks(chunks: Iterable[bytes], key: bytes, chunk_size: int, bound_to: str) -> Iterator[bytes]:
    """The encrypted form of the byte stream `chunks` (pieces of any size): the header, then one unit
    per `chunk_size` bytes of plaintext, authenticated with the object key `bound_to` it is stored
    under. Holds about two chunks and one input piece at a time."""
    salt = os.urandom(_SALT_BYTES)
    header = _MAGIC + chunk_size.to_bytes(4, "big") + salt
    aead, aad = AESGCM(_data_key(key, salt)), _associated(header, bound_to)
    yield header
    for index, (chunk, final) in enumerate(_cut(chunks, chunk_size)):
        yield aead.encrypt(_nonce(index, final), chunk, aad)


def decrypt_chunks(chunks: Iterable[bytes], key: bytes, name: str, bound_to: str) -> Iterator[bytes]:
    """The plaintext of the encrypted byte stream `chunks`, read from the object key `bound_to`, one
    chunk per unit, each yielded only once it has authenticated (a stream encrypted for another key
    fails at its first unit). `name` (the file) heads every StreamError. Plaintext yielded before an
    error is authentic but incomplete: callers write it aside (a .part file) and keep it only if the
    stream ends without error. Holds about two units and one input piece at a time."""
    stream = iter(chunks)
    header, rest = _read_header(stream)
    if len(header) == HEADER_BYTES and header.startswith(_OLD_MAGIC):
        raise StreamError("{}: encrypted in format 1 by an older dmf (not bound to its key), which this dmf "
                          "refuses to read".format(name))
    if len(header) < HEADER_BYTES or not header.startswith(_MAGIC):
        raise StreamError("{}: not a dmf-encrypted file".format(name))
    chunk_size = int.from_bytes(header[4:8], "big")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise StreamError("{}: its header gives a chunk size of {} bytes, outside {}..{} (damaged or not a "
                          "dmf-encrypted file)".format(name, chunk_size, MIN_CHUNK, MAX_CHUNK))
    aead, aad = AESGCM(_data_key(key, header[8:])), _associated(header, bound_to)
    for index, (unit, final) in enumerate(_cut(chain((rest,), stream), chunk_size + TAG_BYTES)):
        try:
            chunk = aead.decrypt(_nonce(index, final), unit, aad)
        except InvalidTag:
            raise StreamError("{}: {}".format(name, _failure(aead, index, unit, final, aad))) from None
        yield chunk


def _failure(aead, index: int, unit: bytearray, final: bool, aad: bytes) -> str:
    """Why a unit did not authenticate. A unit that authenticates with the other final flag was
    whole but in the wrong place: the stream was cut after it, or bytes follow the final one."""
    if final and not unit:
        return "ends without its final chunk (truncated)"
    try:
        aead.decrypt(_nonce(index, not final), unit, aad)
    except InvalidTag:
        return "authentication failed (corrupted, truncated, another encryption key, or copied from another object)"
    return "ends without its final chunk (truncated)" if final else "data follows its final chunk"


def _read_header(stream: Iterator[bytes]) -> Tuple[bytes, bytearray]:
    """The stream's first HEADER_BYTES (fewer if it ends sooner) and the rest of the piece they end in."""
    head = bytearray()
    for piece in stream:
        head += piece
        if len(head) >= HEADER_BYTES:
            break
    return bytes(head[:HEADER_BYTES]), head[HEADER_BYTES:]


def _cut(pieces: Iterable[bytes], size: int) -> Iterator[Tuple[bytearray, bool]]:
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
