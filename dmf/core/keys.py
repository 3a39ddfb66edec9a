"""The bucket layout, parsed and formatted in this one place (everything else uses these types).

    <snapshot_ts>/<host>/snapshots/<relpath>                       full snapshot of one host
    <snapshot_ts>/<host>/backups/<incremental_ts>/<relpath>        one host's increment
    <snapshot_ts>/<host_id>/commitlogs/<commitlog_ts>/<segment>    one host ID's commit-log batch
    <set prefix>manifest.json                                      written last: the set is complete
    <snapshot_ts>/schema.cql                                       schema of the snapshot's target
    <snapshot_ts>/catalog.json                                     derived index of its sets (dmf.core.index)
    <snapshot_ts>/closed.json                                      derived summary of a closed chain (same)
    registry/<ts>/blocks/<block_type>/<name>.json                  the manager's own blocks (secrets masked)
    registry/<ts>/nodes/<host>/<file>                              each node's configuration files
    registry/<ts>/manifest.json                                    written last: the registry backup is complete
    leases/<cluster_slug>/<acquired_ts>-<token>.json               the cluster's lease (dmf.core.lease)

relpath of a table file: `<keyspace>/<table>-<table_id>/[.<index>/]<file>`. All timestamps are
YYYYmmddHHMMSS, UTC. Anything else (absolute keys, `..`, empty components, bad names) is rejected,
because keys become local paths and remote arguments on restore.
"""
from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import lru_cache

from dmf.core.errors import InputError, LayoutError, quote
from dmf.core.targets import is_host, is_identifier
from dmf.core.timestamps import format_ts, parse_ts

MANIFEST_NAME = "manifest.json"
SCHEMA_NAME = "schema.cql"
CATALOG_NAME = "catalog.json"
CLOSED_NAME = "closed.json"
REGISTRY = "registry"
LEASES = "leases"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# One file name (a path component): Cassandra writes `<version>-<id>-<format>-<component>`, and SAI
# components add '+' (`nb-1-big-SAI+aa+<index>+TermsData.db`). None of these characters means anything
# to a POSIX shell; the first is a letter, digit or '_' so a name never reads as an option or a hidden file.
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}")
_TABLE_ID = re.compile(r"[0-9a-f]{32}")
_TABLE_FILE = "<keyspace>/<table>-<table_id>/[.<index>/]<file>"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A well-formed set prefix, read in one match (a listing parses one per set); anything else goes
# through the component-by-component parse, which says what is wrong with it.
_SET_PREFIX = re.compile(r"([0-9]{14})/([^/]+)/(?:snapshots|(backups|commitlogs)/([0-9]{14}))/?")


class SetKind(str, Enum):
    SNAPSHOT = "snapshots"
    INCREMENTAL = "backups"
    COMMITLOG = "commitlogs"


_SET_TS_NAME = {SetKind.INCREMENTAL: "incremental_ts", SetKind.COMMITLOG: "commitlog_ts"}


def is_file_name(name: str) -> bool:
    """One safe path component of at most 255 characters: never hidden, never an option, no '..' in it."""
    return isinstance(name, str) and _FILE_NAME.fullmatch(name) is not None and ".." not in name


def _table_dir(dirname: str) -> tuple[str, str] | None:
    # Table names may contain '_' but never '-', so the last '-' splits name from id.
    table, sep, table_id = dirname.rpartition("-")
    return (table, table_id) if sep and is_identifier(table) and _TABLE_ID.fullmatch(table_id) else None


def split_table_dir(dirname: str) -> tuple[str, str]:
    """`users-<32 hex>` → (`users`, `<32 hex>`)."""
    parts = _table_dir(dirname) if isinstance(dirname, str) else None
    if parts is None:
        raise LayoutError(f"{quote(dirname)} is not a <table>-<table_id> folder (table_id: 32 lowercase hex)")
    return parts


def live_folder_of(live: Iterable[str]) -> dict[str, str]:
    """`<ks>/<table>` → its live folder `<ks>/<table>-<id>` (from cql.live_table_folders). Another
    folder of that name is an earlier table's, dropped before this one was created."""
    return {folder.rpartition("-")[0]: folder for folder in live}


def _is_table_file(parts: list[str]) -> bool:
    if len(parts) not in (3, 4) or not is_identifier(parts[0]) or not is_file_name(parts[-1]):
        return False
    if len(parts) == 4 and not (parts[2].startswith(".") and is_identifier(parts[2][1:])):
        return False
    return _table_dir(parts[1]) is not None


def validate_relpath(kind: SetKind, relpath: str) -> str:
    """relpath when it is a legal file path inside a set of `kind`, else LayoutError."""
    if relpath == MANIFEST_NAME:
        return relpath
    parts = relpath.split("/") if isinstance(relpath, str) else []
    if kind == SetKind.COMMITLOG:
        if len(parts) == 1 and is_file_name(relpath):
            return relpath
        raise LayoutError(f"{quote(relpath)} is not a commit-log segment file name")
    if _is_table_file(parts):
        return relpath
    raise LayoutError(f"{quote(relpath)} is not {_TABLE_FILE}")


def table_of(relpath: str) -> tuple[str, str, str]:
    """(keyspace, table, table_id) of a table file relpath."""
    parts = relpath.split("/") if isinstance(relpath, str) else []
    if not _is_table_file(parts):
        raise LayoutError(f"{quote(relpath)} is not a table file ({_TABLE_FILE})")
    table, table_id = split_table_dir(parts[1])
    return parts[0], table, table_id


def _key_time(value: datetime, name: str) -> datetime:
    """Aware UTC, whole seconds: what a key can hold, so equal keys give equal (and comparable) SetRefs."""
    if not isinstance(value, datetime):
        raise LayoutError(f"{name} must be a datetime, not {type(value).__name__} {quote(value)}")
    if value.tzinfo is timezone.utc and not value.microsecond:
        return value  # already normalised (what parse_ts gives): the common case, per listed set
    utc = parse_ts(value)
    if utc.microsecond:
        raise LayoutError(f"{name} {utc.isoformat()} has a fraction of a second; keys hold whole seconds")
    return utc


def _check_node(kind: SetKind, node: str) -> None:
    if not isinstance(node, str):
        raise LayoutError(f"{quote(node)} is not a host name, IP address or host ID")
    _check_node_text(kind, node)


@lru_cache(maxsize=4096)
def _check_node_text(kind: SetKind, node: str) -> None:
    """Cached: a listing checks the same few nodes for every set (a failed check raises, and is not cached)."""
    if kind == SetKind.COMMITLOG:
        try:
            if str(uuid.UUID(node)) == node:
                return
        except ValueError:
            pass
        raise LayoutError(f"{quote(node)} is not a host ID (a lowercase UUID such as "
                          "4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b)")
    if not is_host(node):
        raise LayoutError(f"{quote(node)} is not a host name or IP address")


@dataclass(frozen=True, order=True)
class SetRef:
    """One set: a host's full snapshot, a host's increment, or a host ID's commit-log batch."""

    snapshot_ts: datetime
    node: str  # host address or name for snapshots and backups, host_id for commitlogs
    kind: SetKind
    set_ts: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SetKind):
            raise LayoutError(f"unknown set kind {quote(self.kind)}: expected snapshots, backups or commitlogs")
        # Frozen, so normalised through object.__setattr__: naive and aware times must compare equal.
        object.__setattr__(self, "snapshot_ts", _key_time(self.snapshot_ts, "snapshot_ts"))
        if self.kind is SetKind.SNAPSHOT:
            if self.set_ts is not None:
                raise LayoutError("a full snapshot set has only a snapshot_ts (set_ts must be None)")
        elif self.set_ts is None:
            raise LayoutError(f"a {self.kind.value} set needs its {_SET_TS_NAME[self.kind]}")
        else:
            object.__setattr__(self, "set_ts", _key_time(self.set_ts, _SET_TS_NAME[self.kind]))
        _check_node(self.kind, self.node)

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
        return self.snapshot_ts if self.set_ts is None else self.set_ts

    @property
    def prefix(self) -> str:
        base = f"{node_prefix(self.snapshot_ts, self.node)}{self.kind.value}/"
        return base if self.set_ts is None else f"{base}{format_ts(self.set_ts)}/"

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME

    def file_key(self, relpath: str) -> str:
        if relpath == MANIFEST_NAME:
            raise LayoutError(f"{MANIFEST_NAME} is not a data file of {self.prefix} (use manifest_key)")
        return self.prefix + validate_relpath(self.kind, relpath)


@dataclass(frozen=True)
class ObjectKey:
    """One object of a set: a data file or the set's manifest."""

    set: SetRef
    relpath: str

    def __post_init__(self) -> None:
        validate_relpath(self.set.kind, self.relpath)

    @property
    def key(self) -> str:
        return self.set.prefix + self.relpath

    @property
    def is_manifest(self) -> bool:
        return self.relpath == MANIFEST_NAME


def _components(text: str) -> list[str]:
    if not isinstance(text, str):
        raise LayoutError(f"it is a {type(text).__name__}, not text")
    if not text:
        raise LayoutError("it is empty")
    if text.startswith("/"):
        raise LayoutError("it is absolute (starts with '/')")
    if "\\" in text:
        raise LayoutError("it contains a backslash")
    if _CONTROL.search(text):
        raise LayoutError("it contains a control character")
    parts = text.split("/")
    if "" in parts:
        raise LayoutError("it has an empty component ('//')")
    if "." in parts or ".." in parts:
        raise LayoutError("it has a '.' or '..' component")
    return parts


def _layout_ts(text: str, name: str) -> datetime:
    try:
        return parse_ts(text, name=name)
    except InputError as exc:
        raise LayoutError(str(exc)) from None


@lru_cache(maxsize=256)
def _snapshot_ts(text: str) -> datetime:
    """Cached: every set of a snapshot repeats its time."""
    return _layout_ts(text, "snapshot_ts")


def _leading_set(parts: list[str]) -> tuple[SetRef, list[str]]:
    """The set named by the first components, and the components after its prefix."""
    if len(parts) < 3:
        raise LayoutError("expected <snapshot_ts>/<host>/snapshots|backups|commitlogs/…")
    snapshot_ts = _layout_ts(parts[0], "snapshot_ts")
    try:
        kind = SetKind(parts[2])
    except ValueError:
        raise LayoutError(f"unknown folder {quote(parts[2])}: expected snapshots, backups or commitlogs") from None
    if kind is SetKind.SNAPSHOT:
        return SetRef(snapshot_ts, parts[1], kind), parts[3:]
    if len(parts) < 4:
        raise LayoutError(f"{kind.value}/ must be followed by its {_SET_TS_NAME[kind]} folder")
    return SetRef(snapshot_ts, parts[1], kind, _layout_ts(parts[3], _SET_TS_NAME[kind])), parts[4:]


def parse_key(key: str) -> ObjectKey:
    try:
        ref, rest = _leading_set(_components(key))
        if not rest:
            raise LayoutError("it names a set, not an object in it")
        return ObjectKey(ref, "/".join(rest))
    except LayoutError as exc:
        raise LayoutError(f"not a backup key {quote(key)}: {exc}") from None


def set_prefix_of(key: str) -> str | None:
    """The prefix of the set that `key` (or a deeper listing prefix) lies in, found by position only:
    `<snapshot_ts>/<node>/snapshots/` or `<snapshot_ts>/<node>/<kind>/<ts>/`; None when the key stops
    before one ends. Cheap enough for every key of a listing; check the result with parse_set_prefix."""
    parts = key.split("/", 4)
    depth = 3 if len(parts) > 2 and parts[2] == SetKind.SNAPSHOT.value else 4
    if len(parts) <= depth:
        return None
    return "/".join(parts[:depth]) + "/"


def parse_set_prefix(prefix: str) -> SetRef:
    """A set's prefix, with or without the trailing '/'."""
    if isinstance(prefix, str) and (match := _SET_PREFIX.fullmatch(prefix)):
        snapshot_ts, node, kind, set_ts = match.groups()
        try:
            if kind is None:
                return SetRef(_snapshot_ts(snapshot_ts), node, SetKind.SNAPSHOT)
            kind = SetKind(kind)
            return SetRef(_snapshot_ts(snapshot_ts), node, kind, _layout_ts(set_ts, _SET_TS_NAME[kind]))
        except LayoutError:
            pass  # the parse below says what is wrong
    try:
        ref, rest = _leading_set(_components(prefix.removesuffix("/") if isinstance(prefix, str) else prefix))
        if rest:
            raise LayoutError("it goes deeper than a set")
        return ref
    except LayoutError as exc:
        raise LayoutError(f"not a backup set prefix {quote(prefix)}: {exc}") from None


def snapshot_prefix(snapshot_ts: datetime) -> str:
    """`<snapshot_ts>/`: everything one snapshot's chain holds."""
    return f"{format_ts(snapshot_ts)}/"


def parse_snapshot_prefix(prefix: str) -> datetime | None:
    """The time of a top-level `<snapshot_ts>/` prefix; None for anything else (registry/, leases/)."""
    try:
        return parse_ts(prefix.rstrip("/"), name="snapshot_ts")
    except InputError:
        return None


def node_prefix(snapshot_ts: datetime, node: str) -> str:
    """`<snapshot_ts>/<node>/`: one host's (or host ID's) sets under a snapshot."""
    return f"{snapshot_prefix(snapshot_ts)}{node}/"


def kind_of_prefix(prefix: str) -> SetKind | None:
    """The kind of a `<snapshot_ts>/<node>/<kind>/` listing prefix; None for a folder of another kind."""
    try:
        return SetKind(prefix.rstrip("/").rsplit("/", 1)[-1])
    except ValueError:
        return None


def sets_from(kind_prefix: str, start: datetime | None) -> str:
    """Where a listing of `<snapshot_ts>/<node>/backups|commitlogs/` starts (S3's StartAfter) to skip the
    sets before `start`: timestamps are fixed-width, so key order is time order."""
    return kind_prefix + format_ts(start) if start is not None else ""


def schema_key(snapshot_ts: datetime) -> str:
    return snapshot_prefix(snapshot_ts) + SCHEMA_NAME


def catalog_key(snapshot_ts: datetime) -> str:
    return snapshot_prefix(snapshot_ts) + CATALOG_NAME


def closed_key(snapshot_ts: datetime) -> str:
    return snapshot_prefix(snapshot_ts) + CLOSED_NAME


def registry_prefix(ts: datetime) -> str:
    return f"{REGISTRY}/{format_ts(ts)}/"


def registry_block_key(ts: datetime, block_type: str, name: str) -> str:
    return f"{registry_prefix(ts)}blocks/{block_type}/{name}.json"


def registry_node_key(ts: datetime, host: str, file_name: str) -> str:
    return f"{registry_prefix(ts)}nodes/{host}/{file_name}"


def registry_manifest_key(ts: datetime) -> str:
    return registry_prefix(ts) + MANIFEST_NAME


def cluster_slug(cluster_name: str) -> str:
    """A key-safe name for a Cassandra cluster_name ('Test Cluster' → 'Test_Cluster-<hash>'): the
    hash keeps names that differ only in replaced characters apart."""
    digest = hashlib.sha256(cluster_name.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', cluster_name)[:64]}-{digest}"


def leases_prefix(cluster_name: str) -> str:
    return f"{LEASES}/{cluster_slug(cluster_name)}/"


def lease_key(cluster_name: str, acquired: datetime, token: str) -> str:
    return f"{leases_prefix(cluster_name)}{format_ts(acquired)}-{token}.json"


SHIPPER = "shipper"


def heartbeat_prefix(cluster_name: str) -> str:
    """Where the commit-log shipper of a cluster writes each node's heartbeat (dmf.core.shipper)."""
    return f"{SHIPPER}/{cluster_slug(cluster_name)}/"


def heartbeat_key(cluster_name: str, host_id: str) -> str:
    _check_node_text(SetKind.COMMITLOG, host_id)  # a host ID, as commit-log batches are keyed by
    return f"{heartbeat_prefix(cluster_name)}{host_id}.json"
