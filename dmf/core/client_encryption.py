"""What a set's manifest says of its client-side encryption, and what authenticates it (pure: the
MAC key is given, no I/O).

The manifest's entries describe the stored objects (ciphertext: what uploads, verify and downloads
check) and, each, the plaintext it decrypts to (`FileEntry.plain`), so a restore checks the
decrypted file too and a rerun keeps a decrypted file only if it is exactly the one backed up.
`extra["encryption"]` names the scheme, the key's id (never the key), the chunk size and the
manifest's MAC: HMAC-SHA256 under the MAC key (dmf.encryption.mac_key) of the whole manifest, the
MAC itself left out. The manifest names its set, so a manifest moved to another set's key fails
Manifest.from_json(expected=...), and a rewritten one fails its MAC; each entry's SHA-256 then binds
its object. A schema object is authenticated by a last comment line holding its MAC over its key
and its text.

With a key in the repository block, every set a restore reads must carry a valid record: a set
without one (plaintext, or its record stripped) is refused, never read as plaintext, since anyone
with write access to the bucket could have put it there.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from dmf.core.errors import LayoutError, PermanentError, quote
from dmf.core.manifest import Manifest

ENCRYPTION = "encryption"  # manifest `extra` key
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAC = re.compile(r"[0-9a-f]{64}")
_MANIFEST_LABEL = b"dmf/manifest/v2\0"
_SCHEMA_LABEL = b"dmf/schema/v2\0"
_SCHEMA_MAC_LINE = "-- dmf-mac: "


@dataclass(frozen=True)
class Encrypted:
    scheme: str
    key_id: str
    chunk: int
    mac: str = ""  # of the manifest that holds the record; "" until sealed


@dataclass(frozen=True)
class Expected:
    """What the repository block expects of every set: encrypted under its key (key_id and mac_key,
    None without one) with `scheme`; `old_schemes` are refused by name."""
    scheme: str
    key_id: str | None
    mac_key: bytes | None = dataclasses.field(default=None, repr=False)
    old_schemes: tuple[str, ...] = ()


def encryption_record(encrypted: Encrypted) -> dict:
    record = {"scheme": encrypted.scheme, "key_id": encrypted.key_id, "chunk": encrypted.chunk}
    return {**record, "mac": encrypted.mac} if encrypted.mac else record


def encryption_of(manifest: Manifest, scheme: str, old_schemes: tuple[str, ...] = ()) -> Encrypted | None:
    """The set's encryption, checked against its entries (a bucket is not trusted input); None for a
    set stored in plaintext. A scheme of `old_schemes` (written by an earlier dmf) is refused by name."""
    where = manifest.set.manifest_key
    record = manifest.extra.get(ENCRYPTION)
    if record is None:
        if any(entry.plain is not None for entry in manifest.files):
            raise LayoutError(f"{where}: plaintext records in a set that is not encrypted")
        return None
    if not isinstance(record, dict):
        raise LayoutError(f"{where}: {ENCRYPTION} is not a mapping")
    if record.get("scheme") in old_schemes:
        raise PermanentError(f"{manifest.set.prefix}: encrypted with {record['scheme']} by an earlier dmf, whose "
                             "manifests and objects are not authenticated against rewrites: refused. Restore it "
                             "with the dmf release that wrote it, and take a new full backup with this one")
    if record.get("scheme") != scheme:
        raise PermanentError(f"{where}: encrypted with {quote(str(record.get('scheme')))}, which this dmf "
                             f"cannot read (it reads {scheme})")
    key_id, chunk, mac = record.get("key_id"), record.get("chunk"), record.get("mac")
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id) or not isinstance(chunk, int) \
            or not isinstance(mac, str) or not _MAC.fullmatch(mac):
        raise LayoutError(f"{where}: malformed {ENCRYPTION} record")
    for entry in manifest.files:
        if entry.plain is None:
            raise LayoutError(f"{where}: no plaintext record for {quote(entry.path)}")
    return Encrypted(scheme, key_id, chunk, mac)


def manifest_mac(manifest: Manifest, mac_key: bytes) -> str:
    """The MAC of everything the manifest says but its MAC: computed over its canonical JSON, so the
    writer (the Manifest it made) and a reader (the Manifest it parsed) compute it alike."""
    body = json.loads(manifest.to_json())
    record = body["extra"].get(ENCRYPTION)
    if isinstance(record, dict):
        record.pop("mac", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hmac.new(mac_key, _MANIFEST_LABEL + canonical, hashlib.sha256).hexdigest()


def sealed(manifest: Manifest, encrypted: Encrypted, mac_key: bytes) -> Manifest:
    """The manifest with its encryption record, MAC included: what an encrypted set is sealed with."""
    unsigned = dataclasses.replace(manifest, extra={**manifest.extra, ENCRYPTION: encryption_record(encrypted)})
    mac = manifest_mac(unsigned, mac_key)
    return dataclasses.replace(manifest, extra={**manifest.extra, ENCRYPTION: encryption_record(
        dataclasses.replace(encrypted, mac=mac))})


def authenticate(manifests: list[Manifest], expected: Expected) -> None:
    """Before anything is downloaded: with a key, every set is encrypted under it and its manifest is
    the one dmf sealed; without one, no set is encrypted. One line naming the first set that is not."""
    for manifest in manifests:
        if (problem := _problem(manifest, expected)) is not None:
            raise PermanentError(problem)


def sort_authentic(manifests: list[Manifest],
                   expected: Expected) -> tuple[list[Manifest], list[tuple[Manifest, str]]]:
    """The manifests that can be trusted under the repository's key, and the others each with why not
    (one line). Without a key every one is kept: none can be authenticated, and what reads them
    (verify's checksums, shipping's bookkeeping) needs no key."""
    if expected.key_id is None:
        return list(manifests), []
    trusted, refused = [], []
    for manifest in manifests:
        try:
            problem = _problem(manifest, expected)
        except PermanentError as exc:  # a malformed or unreadable record
            problem = str(exc)
        if problem is None:
            trusted.append(manifest)
        else:
            refused.append((manifest, problem))
    return trusted, refused


def _problem(manifest: Manifest, expected: Expected) -> str | None:
    encrypted = encryption_of(manifest, expected.scheme, expected.old_schemes)
    key_id, mac_key = expected.key_id, expected.mac_key
    if key_id is None or mac_key is None:
        if encrypted is None:
            return None
        return (f"{manifest.set.prefix} is client-side encrypted (key id {encrypted.key_id}): set encryption: "
                "client and its encryption_key in the repository block")
    if encrypted is None:
        return (f"{manifest.set.prefix} is not client-side encrypted, and the repository block says encryption: "
                "client: refused (anyone with write access to the bucket can write plaintext). If it is a backup "
                "taken before encryption was turned on, restore it with a block that says encryption: none")
    if encrypted.key_id != key_id:
        return (f"{manifest.set.prefix} was encrypted with key id {encrypted.key_id}, the repository block's "
                f"encryption_key is key id {key_id}")
    if not hmac.compare_digest(encrypted.mac, manifest_mac(manifest, mac_key)):
        return f"{manifest.set.manifest_key}: manifest fails authentication (rewritten since dmf sealed it): refused"
    return None


def signed_schema(text: str, key: str, mac_key: bytes) -> str:
    """A schema object's text with its MAC as a last CQL comment line; bound to its object `key`."""
    body = text if text.endswith("\n") else text + "\n"
    return f"{body}{_SCHEMA_MAC_LINE}{_schema_mac(body, key, mac_key)}\n"


def opened_schema(stored: str, key: str, mac_key: bytes) -> str:
    """The schema text of a signed schema object read from `key`; refused in one line if its MAC is
    missing or does not match (rewritten, or copied from another snapshot)."""
    body, _, last = stored.rstrip("\n").rpartition("\n")
    body += "\n"
    if not last.startswith(_SCHEMA_MAC_LINE) or not hmac.compare_digest(
            last[len(_SCHEMA_MAC_LINE):].encode(), _schema_mac(body, key, mac_key).encode()):
        raise PermanentError(f"{key}: schema fails authentication (not written by dmf under this key, or "
                             "rewritten since): refused")
    return body


def _schema_mac(body: str, key: str, mac_key: bytes) -> str:
    return hmac.new(mac_key, _SCHEMA_LABEL + key.encode() + b"\0" + body.encode(), hashlib.sha256).hexdigest()
