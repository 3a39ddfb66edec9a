"""A set's manifest: the object written last, whose presence makes the set complete.

Everything the restore needs to check and place a file is in it (path, size, SHA-256), plus the
node facts an operator needs after losing the datacenter (host_id, tokens, version, schema).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dmf.core.errors import LayoutError
from dmf.core.keys import SetKind, SetRef, validate_relpath
from dmf.core.timestamps import format_ts, parse_ts

FORMAT_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PlainFile:
    """What a client-side encrypted object decrypts to (dmf.core.client_encryption)."""
    size: int
    sha256: str


@dataclass(frozen=True)
class FileEntry:
    path: str     # relpath under the set prefix
    size: int     # of the stored object: what uploads, verify and downloads check
    sha256: str
    plain: PlainFile | None = None  # when encrypted by dmf: the file as it was on the node

    def to_json(self) -> dict:
        body: dict = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.plain is not None:
            body["plain"] = {"size": self.plain.size, "sha256": self.plain.sha256}
        return body

    @classmethod
    def from_json(cls, kind: SetKind, body: dict) -> FileEntry:
        plain = body.get("plain")
        return cls(validate_relpath(kind, body["path"]), int(body["size"]), str(body["sha256"]),
                   None if plain is None else PlainFile(int(plain["size"]), str(plain["sha256"])))


@dataclass(frozen=True)
class Manifest:
    set: SetRef
    files: tuple[FileEntry, ...]
    host: str                        # address of the node the set came from
    host_id: str
    created_at: datetime
    db_target: str = ""              # "" = every non-system keyspace
    hosts: tuple[str, ...] = ()      # the host set the backup was taken for
    tokens: tuple[str, ...] = ()
    cassandra_version: str = ""
    schema_version: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT_VERSION,
            "kind": self.set.kind.value,
            "snapshot_ts": format_ts(self.set.snapshot_ts),
            "set_ts": format_ts(self.set.set_ts) if self.set.set_ts else None,
            "node": self.set.node,
            "host": self.host,
            "host_id": self.host_id,
            "created_at": format_ts(self.created_at),
            "db_target": self.db_target,
            "hosts": list(self.hosts),
            "tokens": list(self.tokens),
            "cassandra_version": self.cassandra_version,
            "schema_version": self.schema_version,
            "extra": self.extra,
            "files": [f.to_json() for f in self.files],
        }
        return json.dumps(body, indent=1, sort_keys=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str, expected: SetRef | None = None) -> Manifest:
        """Parses and validates; `expected` is the set whose key the manifest was read from."""
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT_VERSION:
                raise LayoutError(f"unsupported manifest format {body.get('format')!r}")
            kind = SetKind(body["kind"])
            snapshot_ts = parse_ts(body["snapshot_ts"], name="manifest snapshot_ts")
            set_ts = parse_ts(body["set_ts"], name="manifest set_ts") if body["set_ts"] else None
            set_ref = SetRef(snapshot_ts, body["node"], kind, set_ts)
            files = tuple(FileEntry.from_json(kind, f) for f in body["files"])
            manifest = cls(
                set=set_ref, files=files, host=str(body["host"]), host_id=str(body["host_id"]),
                created_at=parse_ts(body["created_at"], name="manifest created_at"),
                db_target=str(body.get("db_target", "")), hosts=tuple(body.get("hosts", ())),
                tokens=tuple(str(t) for t in body.get("tokens", ())),
                cassandra_version=str(body.get("cassandra_version", "")),
                schema_version=str(body.get("schema_version", "")), extra=dict(body.get("extra", {})))
        except LayoutError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise LayoutError(f"malformed manifest: {exc}") from None
        for f in manifest.files:
            if f.size < 0 or not _SHA256.fullmatch(f.sha256) or \
                    (f.plain is not None and (f.plain.size < 0 or not _SHA256.fullmatch(f.plain.sha256))):
                raise LayoutError(f"malformed manifest entry for {f.path}")
        if expected is not None and manifest.set != expected:
            raise LayoutError(f"manifest at {expected.manifest_key} describes another set ({manifest.set.prefix})")
        return manifest


def unconfirmed(files: Iterable[FileEntry], stored: Mapping[str, int]) -> list[str]:
    """What keeps a manifest from being written: each file whose object is not stored (`stored`:
    relpath → size, as listed just before sealing) with the size uploaded. A sweep may have removed
    it, and a manifest over a missing object would list the set complete without its data. The
    checksum was verified against the store's answer when each object was uploaded."""
    problems = []
    for entry in files:
        size = stored.get(entry.path)
        if size is None:
            problems.append(f"{entry.path}: gone")
        elif size != entry.size:
            problems.append(f"{entry.path}: {size} bytes stored, {entry.size} uploaded")
    return problems
