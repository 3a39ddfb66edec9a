"""What a set's manifest says of its client-side encryption (pure: no key, no I/O).

The manifest's entries describe the stored objects (ciphertext: what uploads, verify and downloads
check) and, each, the plaintext it decrypts to (`FileEntry.plain`), so a restore checks the
decrypted file too and a rerun keeps a decrypted file only if it is exactly the one backed up.
`extra["encryption"]` names the scheme, the key's id (never the key) and the chunk size.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from dmf.core.errors import LayoutError, PermanentError, quote
from dmf.core.manifest import Manifest

ENCRYPTION = "encryption"  # manifest `extra` key
_KEY_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Encrypted:
    scheme: str
    key_id: str
    chunk: int


def encryption_record(encrypted: Encrypted) -> dict:
    return {"scheme": encrypted.scheme, "key_id": encrypted.key_id, "chunk": encrypted.chunk}


def encryption_of(manifest: Manifest, scheme: str) -> Encrypted | None:
    """The set's encryption, checked against its entries (a bucket is not trusted input); None for a
    set stored in plaintext."""
    where = manifest.set.manifest_key
    record = manifest.extra.get(ENCRYPTION)
    if record is None:
        if any(entry.plain is not None for entry in manifest.files):
            raise LayoutError(f"{where}: plaintext records in a set that is not encrypted")
        return None
    if not isinstance(record, dict):
        raise LayoutError(f"{where}: {ENCRYPTION} is not a mapping")
    if record.get("scheme") != scheme:
        raise PermanentError(f"{where}: encrypted with {quote(str(record.get('scheme')))}, which this dmf "
                             f"cannot read (it reads {scheme})")
    key_id, chunk = record.get("key_id"), record.get("chunk")
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id) or not isinstance(chunk, int):
        raise LayoutError(f"{where}: malformed {ENCRYPTION} record")
    for entry in manifest.files:
        if entry.plain is None:
            raise LayoutError(f"{where}: no plaintext record for {quote(entry.path)}")
    return Encrypted(scheme, key_id, chunk)


def check_key(manifests: list[Manifest], scheme: str, key_id: str | None) -> None:
    """Before anything is downloaded: every encrypted set of the restore can be decrypted with the
    repository's key. One line naming the set and the key id it needs."""
    for manifest in manifests:
        encrypted = encryption_of(manifest, scheme)
        if encrypted is None or encrypted.key_id == key_id:
            continue
        if key_id is None:
            raise PermanentError(f"{manifest.set.prefix} is client-side encrypted (key id {encrypted.key_id}): "
                                 "set encryption: client and its encryption_key in the repository block")
        raise PermanentError(f"{manifest.set.prefix} was encrypted with key id {encrypted.key_id}, the "
                             f"repository block's encryption_key is key id {key_id}")
