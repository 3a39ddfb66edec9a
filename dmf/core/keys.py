"""The bucket layout, parsed and formatted in this one place (everything else uses these types).

    <snapshot_ts>/<host>/snapshots/<relpath>                       full snapshot of one host
    <snapshot_ts>/<host>/backups/<incremental_ts>/<relpath>        one host's increment
    <snapshot_ts>/<host_id>/commitlogs/<commitlog_ts>/<segment>    one host ID's commit-log batch
    <set prefix>manifest.json                                      written last: the set is complete
    <snapshot_ts>/schema.cql                                       schema of the snapshot's target
    registry/<ts>/<relpath>                                        the manager's own configuration

relpath of a table file: `<keyspace>/<table>-<table_id>/[.<index>/]<file>`. All timestamps are
YYYYmmddHHMMSS, UTC. Anything else (absolute keys, `..`, empty components, bad names) is rejected,
because keys become local paths and remote arguments on restore.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from dmf.core.errors import InputError, LayoutError
from dmf.core.targets import is_host, is_identifier
from dmf.core.timestamps import format_ts, parse_ts

MANIFEST_NAME = "manifest.json"
SCHEMA_NAME = "schema.cql"
REGISTRY = "registry"
_FILE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TABLE_ID = re.compile(r"[0-9a-f]{32}")


class SetKind(str, Enum):
    SNAPSHOT = "snapshots"
    INCREMENTAL = "backups"
    COMMITLOG = "commitlogs"


def _ts(text: str, what: str) -> datetime:
    try:
        return parse_ts(text, name=what)
    except InputError as exc:
        raise LayoutError(str(exc)) from None


def is_file_name(name: str) -> bool:
    return bool(_FILE_NAME.fullmatch(name)) and not name.startswith(".")


def split_table_dir(dirname: str) -> tuple[str, str]:
    """`users-<32 hex>` → (`users`, id). Table names never contain '-', so the last '-' splits."""
    table, sep, table_id = dirname.rpartition("-")
    if not sep or not is_identifier(table) or not _TABLE_ID.fullmatch(table_id):
        raise LayoutError(f"'{dirname}' is not a <table>-<table_id> folder")
    return table, table_id


def table_of(relpath: str) -> tuple[str, str, str]:
    """(keyspace, table, table_id) of a table file relpath."""
    validate_relpath(SetKind.SNAPSHOT, relpath)
    keyspace, table_dir = relpath.split("/")[:2]
    table, table_id = split_table_dir(table_dir)
    return keyspace, table, table_id


def validate_relpath(kind: SetKind, relpath: str) -> str:
    """Returns relpath when it is a legal file path inside a set of `kind`, else LayoutError."""
    parts = relpath.split("/")
    if relpath == MANIFEST_NAME:
        return relpath
    if kind is SetKind.COMMITLOG:
        if len(parts) == 1 and is_file_name(relpath):
            return relpath
        raise LayoutError(f"'{relpath}' is not a commit-log segment name")
    legal = (len(parts) in (3, 4) and is_identifier(parts[0]) and is_file_name(parts[-1])
             and (len(parts) == 3 or (parts[2].startswith(".") and is_identifier(parts[2][1:]))))
    if legal:
        try:
            split_table_dir(parts[1])
            return relpath
        except LayoutError:
            pass
    raise LayoutError(f"'{relpath}' is not <keyspace>/<table>-<table_id>/[.<index>/]<file>")


def _check_node(kind: SetKind, node: str) -> None:
    if kind is SetKind.COMMITLOG:
        try:
            if str(uuid.UUID(node)) == node:
                return
        except ValueError:
            pass
        raise LayoutError(f"'{node}' is not a host ID (lowercase UUID)")
    if not is_host(node):
        raise LayoutError(f"'{node}' is not a host name or IP address")


@dataclass(frozen=True, order=True)
class SetRef:
    """One set: a host's full snapshot, a host's increment, or a host ID's commit-log batch."""

    snapshot_ts: datetime
    node: str  # host address for snapshots/backups, host_id for commitlogs
    kind: SetKind
    set_ts: datetime | None = None

    def __post_init__(self) -> None:
        _check_node(self.kind, self.node)
        if (self.set_ts is None) != (self.kind is SetKind.SNAPSHOT):
            raise LayoutError(f"a {self.kind.value} set {'has no' if self.set_ts else 'needs a'} second timestamp")

    @classmethod
    def snapshot(cls, snapshot_ts: datetime, host: str) -> SetRef:
        return cls(snapshot_ts, host, SetKind.SNAPSHOT)

    @classmethod
    def incremental(cls, snapshot_ts: datetime, host: str, incremental_ts: datetime) -> SetRef:
        return cls(snapshot_ts, host, SetKind.INCREMENTAL, incremental_ts)

    @classmethod
    def commitlog(cls, snapshot_ts: datetime, host_id: str, commitlog_ts: datetime) -> SetRef:
        return cls(snapshot_ts, host_id, SetKind.COMMITLOG, commitlog_ts)

    @property
    def time(self) -> datetime:
        """When the set was taken."""
        return self.set_ts or self.snapshot_ts

    @property
    def prefix(self) -> str:
        base = f"{format_ts(self.snapshot_ts)}/{self.node}/{self.kind.value}/"
        return base if self.set_ts is None else f"{base}{format_ts(self.set_ts)}/"

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME

    def file_key(self, relpath: str) -> str:
        if relpath == MANIFEST_NAME:
            raise LayoutError("the manifest has its own key (manifest_key)")
        return self.prefix + validate_relpath(self.kind, relpath)


@dataclass(frozen=True)
class ObjectKey:
    set: SetRef
    relpath: str

    @property
    def key(self) -> str:
        return self.set.prefix + self.relpath

    @property
    def is_manifest(self) -> bool:
        return self.relpath == MANIFEST_NAME


def _split(key: str) -> list[str]:
    if not key or key.startswith("/") or "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise LayoutError(f"'{key}' is not a key of the backup layout")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise LayoutError(f"'{key}' has an empty, '.' or '..' component")
    return parts


def _set_from_parts(parts: list[str], key: str) -> tuple[SetRef, list[str]]:
    """The SetRef at the start of `parts`, and the components after its prefix."""
    if len(parts) < 3:
        raise LayoutError(f"'{key}' is too short for the backup layout")
    snapshot_ts = _ts(parts[0], "snapshot_ts")
    try:
        kind = SetKind(parts[2])
    except ValueError:
        raise LayoutError(f"'{key}': unknown folder '{parts[2]}' (snapshots, backups or commitlogs)") from None
    if kind is SetKind.SNAPSHOT:
        return SetRef(snapshot_ts, parts[1], kind), parts[3:]
    if len(parts) < 4:
        raise LayoutError(f"'{key}': {kind.value} needs a timestamp folder")
    return SetRef(snapshot_ts, parts[1], kind, _ts(parts[3], f"{kind.value} timestamp")), parts[4:]


def parse_key(key: str) -> ObjectKey:
    parts = _split(key)
    ref, rest = _set_from_parts(parts, key)
    if not rest:
        raise LayoutError(f"'{key}' names a set, not an object")
    return ObjectKey(ref, validate_relpath(ref.kind, "/".join(rest)))


def parse_set_prefix(prefix: str) -> SetRef:
    text = prefix[:-1] if prefix.endswith("/") else prefix
    parts = _split(text)
    ref, rest = _set_from_parts(parts, prefix)
    if rest:
        raise LayoutError(f"'{prefix}' is deeper than a set prefix")
    return ref


def schema_key(snapshot_ts: datetime) -> str:
    return f"{format_ts(snapshot_ts)}/{SCHEMA_NAME}"


def registry_prefix(ts: datetime) -> str:
    return f"{REGISTRY}/{format_ts(ts)}/"
