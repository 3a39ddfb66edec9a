"""Point-in-time replay in a scratch Cassandra (issue 25), the pure part: its folders under PATH, its
loopback ports, its cassandra.yaml, the schema it is given, the replay list, the batches of segments
it replays (one source node per start), the names its SSTables are loaded under, what it may
take of the worker's disk and memory, and whether a rerun may reuse a replay it finds in PATH.
dmf/scratch_cassandra.py runs it."""
from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from dmf.core.cassandra_yaml import yaml_head
from dmf.core.errors import InputError
from dmf.core.paths import is_within
from dmf.core.schema import object_name, split_statements

SCRATCH_DIR = "scratch-cassandra"   # under PATH
# In SCRATCH_DIR, written last, once the replayed SSTables are whole: what they were made from.
REPLAY_RECORD = "replay-complete.json"
# Changes when what a replay leaves, or how it is made, changes: an older record is then not reused.
RECORD_FORMAT = 1
CLUSTER_NAME = "dmf-scratch-replay"
ADDRESS = "127.0.0.1"
HEAP_MIB = 512   # the default: enough for a node at rest and memtables of a quarter of it
HEAP_RANGE_MIB = (256, 65536)
# Beyond the heap: metaspace, thread stacks, direct buffers of a one-node Cassandra at rest.
JVM_OVERHEAD_MIB = 384
# The scratch node's own system tables, commit log (32 MiB segments) and hints, whatever it replays.
DISK_OVERHEAD_BYTES = 512 * 2**20
_NAME = re.compile(r"^[A-Za-z0-9_]{1,48}$")
_SSTABLE_COMPONENT = re.compile(r"(?P<version>[a-z]{2})-(?P<id>[0-9a-z_]+)-(?P<format>[a-z]+)-(?P<component>.+)")


@dataclass(frozen=True)
class Ports:
    storage: int
    native: int
    jmx: int


def check_ports(ports: Ports, taken: set[int]) -> Ports:
    """Three distinct unprivileged ports, none of them one the cluster's nodes use (a scratch node
    answering on a production port could take a client's or a peer's connection)."""
    chosen = [ports.storage, ports.native, ports.jmx]
    if len(set(chosen)) != 3:
        raise InputError(f"scratch Cassandra ports must differ: {chosen}")
    for port in chosen:
        if not 1024 <= port <= 65535:
            raise InputError(f"scratch Cassandra port {port} is outside 1024-65535")
        if port in taken:
            raise InputError(f"scratch Cassandra port {port} is one the cluster's nodes use")
    return ports


@dataclass(frozen=True)
class Layout:
    """The scratch node's folders, all below PATH/scratch-cassandra (removed whole once loaded, unless kept)."""
    home: str

    @classmethod
    def under(cls, root: str) -> Layout:
        home = posixpath.join(posixpath.normpath(root), SCRATCH_DIR)
        if not is_within(home, root) or home == posixpath.normpath(root):
            raise InputError(f"scratch folder {home} is not below PATH {root}")
        return cls(home)

    def dir(self, *parts: str) -> str:
        for part in parts:
            if not part or "/" in part or part in (".", ".."):
                raise InputError(f"invalid scratch folder name {part!r}")
        return posixpath.join(self.home, *parts)

    def segments(self, host_id: str) -> str:
        """One source node's segments, linked here for one start (restore_directories)."""
        return self.dir("segments", host_id)

    def replayed(self, host_id: str, keyspace: str, table: str) -> str:
        """The SSTables one source node's replay wrote, moved out of the scratch's data folder."""
        return self.dir("replayed", host_id, keyspace, table)

    def load(self, keyspace: str, table: str) -> str:
        """sstableloader's <keyspace>/<table> folder: the target's names (`--into`: the copy's)."""
        return self.dir("load", keyspace, table)

    @property
    def record(self) -> str:
        """The complete replay's record (REPLAY_RECORD): none while a replay is under way."""
        return self.dir(REPLAY_RECORD)


def scratch_yaml(layout: Layout, ports: Ports, heap_mib: int = HEAP_MIB) -> str:
    """A one-node cluster of its own name on loopback, every folder under PATH: no authentication (nothing but dmf connects, to ports only this
    machine sees), no auto snapshot, no hints, memtables within a quarter of the heap."""
    head = yaml_head(CLUSTER_NAME, "-9223372036854775808", PurePosixPath(layout.home), f"{ADDRESS}:{ports.storage}",
                     ADDRESS, ports.storage, ports.native)
    return head + f"""\
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
auto_snapshot: false
incremental_backups: false
hinted_handoff_enabled: false
compaction_throughput: 0MiB/s
memtable_heap_space: {heap_mib // 4}MiB
memtable_offheap_space: {heap_mib // 4}MiB
disk_failure_policy: stop
commit_failure_policy: stop
"""


def check_tables(tables: list[str]) -> list[str]:
    """keyspace.table names for -Dcassandra.replayList (comma-separated: a name may hold no comma)."""
    if not tables:
        raise InputError("no table to replay")
    for table in tables:
        parts = table.split(".")
        if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
            raise InputError(f"cannot replay {table!r}: keyspace.table of letters, digits and _ expected")
    return sorted(set(tables))


def replay_list_option(tables: list[str]) -> str:
    """Cassandra replays only these tables' mutations; every other table's are skipped."""
    return f"-Dcassandra.replayList={','.join(check_tables(tables))}"


_TABLE_ID = re.compile(r"\bWITH\s+ID\s*=\s*[0-9a-fA-F-]{36}", re.IGNORECASE)


def scratch_schema(cql: str, tables: list[str]) -> list[str]:
    """What the scratch node is given before it replays: each keyspace (replication 1: it is alone),
    the keyspaces' user types, and the tables with their original IDs, since a commit-log mutation
    names its table by ID, not by name (a table without one would take none of them). No index or
    view: those are built by the target once the rows are loaded there."""
    wanted = {tuple(t.split(".")) for t in check_tables(tables)}
    keyspaces = sorted({ks for ks, _ in wanted})
    types, found = [], {}
    for statement in split_statements(cql):
        named = object_name(statement)
        if named is None:
            continue
        kind, keyspace, name = named
        if kind == "TYPE" and keyspace in keyspaces:
            types.append(statement)
        elif kind == "TABLE" and (keyspace, name) in wanted:
            if not _TABLE_ID.search(statement):
                raise InputError(f"the backup's schema of {keyspace}.{name} has no table ID (WITH ID = ...): "
                                 "its commit-log mutations cannot be told apart; use --replay-on nodes")
            found.setdefault((keyspace, name), statement)
    missing = sorted(f"{ks}.{t}" for ks, t in wanted - set(found))
    if missing:
        raise InputError(f"the backup holds no CREATE TABLE for {', '.join(missing)}: nothing to replay into")
    keyspace_statements = [f"CREATE KEYSPACE \"{ks}\" WITH replication = "
                           "{'class': 'SimpleStrategy', 'replication_factor': 1}" for ks in keyspaces]
    return [*keyspace_statements, *dict.fromkeys(types), *(found[k] for k in sorted(found))]


def batches(segments: list[PurePosixPath]) -> dict[str, list[PurePosixPath]]:
    """Segments per source node (the host ID folder they were fetched into), each node's replayed in
    a start of its own. A segment's name is CommitLog-<version>-<id>.log, the id counted from its
    node's start time in milliseconds: two nodes started in the same millisecond have segments of the
    same name, and Cassandra skips a restored segment whose name its commit-log folder already holds.
    One node per start, with the folder emptied between starts, means no two ever meet."""
    by_node: dict[str, list[PurePosixPath]] = {}
    for segment in segments:
        by_node.setdefault(segment.parent.name, []).append(segment)
    for node, listed in by_node.items():
        names = [s.name for s in listed]
        if len(names) != len(set(names)):
            raise InputError(f"host {node}: the same segment name twice among {len(names)} segments")
    return {node: sorted(listed, key=lambda s: s.name) for node, listed in sorted(by_node.items())}


def load_names(files: list[PurePosixPath]) -> list[tuple[PurePosixPath, str]]:
    """The replayed SSTables of one table (from every source node's start, each numbered from 1) under
    names that do not collide in one load folder: generations renumbered, components kept together."""
    links, numbers = [], {}
    for path in sorted(files, key=lambda p: (str(p.parent), p.name)):
        match = _SSTABLE_COMPONENT.fullmatch(path.name)
        if match is None:
            continue
        key = (str(path.parent), match["version"], match["id"], match["format"])
        number = numbers.setdefault(key, len(numbers) + 1)
        links.append((path, f"{match['version']}-{number}-{match['format']}-{match['component']}"))
    return links


_SEGMENT_NAME = re.compile(r"CommitLog-\d+-\d+\.log$")


def segments_read(log: str) -> set[str]:
    """The segment names Cassandra says it replays, from its one line at start-up
    (`Replaying /cl/CommitLog-7-1.log, /cl/CommitLog-7-2.log`)."""
    names = set()
    for line in log.splitlines():
        if " - Replaying " in line:
            for path in line.split(" - Replaying ", 1)[1].split(", "):
                name = PurePosixPath(path.strip()).name
                if _SEGMENT_NAME.match(name):
                    names.add(name)
    return names


def disk_needed(segment_sizes: dict[str, int]) -> int:
    """Bytes the scratch replay may take in PATH beyond the downloads: one node's segments copied
    into its commit-log folder at a time, the target tables' replayed SSTables (never more than the
    segments that carried their mutations) and the node's own files."""
    if not segment_sizes:
        return 0
    return max(segment_sizes.values()) + sum(segment_sizes.values()) + DISK_OVERHEAD_BYTES


def check_memory(available_bytes: int, heap_mib: int = HEAP_MIB) -> None:
    """Refused before anything is downloaded when the worker cannot hold the scratch JVM."""
    needed = (heap_mib + JVM_OVERHEAD_MIB) * 2**20
    if available_bytes < needed:
        raise InputError(f"the scratch Cassandra needs {needed / 2**20:.0f} MiB of memory (heap {heap_mib} MiB); "
                         f"the worker has {available_bytes / 2**20:.0f} MiB available: free some, give a smaller "
                         "--scratch-heap-mib, or use --replay-on nodes")


def check_version(versions: set[str]) -> str:
    """One Cassandra version, the nodes', for the scratch node: it reads their segments."""
    known = {v for v in versions if v}
    if len(known) != 1:
        raise InputError("the scratch replay runs the nodes' Cassandra version, but they report "
                         f"{', '.join(sorted(known)) or 'none'}: finish the upgrade first, or use --replay-on nodes")
    version = known.pop()
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise InputError(f"Cassandra version {version!r} is not a release version Maven Central has")
    return version


def replay_inputs(version: str, at: str, schema: list[str], tables: list[str],
                  segments: dict[str, tuple[int, str]]) -> dict:
    """Everything the replayed SSTables depend on: the Cassandra version that wrote them, the restore
    point (to the second), the schema the scratch node was given, the replayed tables, and every
    segment (`<host_id>/<name>` → size and SHA-256, the manifest's, checked by the download). The
    target's name is not among them: the load folder that names it is rebuilt by every run, so a
    replay made for an in-place restore serves an `--into` copy or another cluster too."""
    return {"format": RECORD_FORMAT, "cassandra_version": version, "time": at, "schema": list(schema),
            "tables": sorted(tables),
            "segments": {name: [size, sha256] for name, (size, sha256) in sorted(segments.items())}}


def replay_record(inputs: dict, nodes: dict[str, dict], files: dict[str, int]) -> str:
    """The record written once the replay is whole: its inputs, its counts per source node (reported
    again by a run that reuses it) and its files below `replayed/` with their sizes."""
    return json.dumps({"inputs": inputs, "nodes": nodes, "files": dict(sorted(files.items()))}, indent=1)


_INPUT_NAMES = {"format": "record format", "cassandra_version": "Cassandra version", "time": "restore time",
                "schema": "schema", "tables": "tables", "segments": "segments"}


@dataclass(frozen=True)
class Reuse:
    """A rerun's decision: `nodes` (the recorded counts) when the replay in PATH serves, else why not."""
    nodes: dict[str, dict] | None
    reason: str = ""


def reusable(record: str | None, inputs: dict, files: dict[str, int]) -> Reuse:
    """Whether the replay output in PATH (its record, None if there is none, and the files found below
    `replayed/` with their sizes) was completed for exactly these inputs and is still whole."""
    if record is None:
        return Reuse(None, "no complete replay")
    try:
        parsed = json.loads(record)
        recorded, nodes, listed = parsed["inputs"], parsed["nodes"], parsed["files"]
        if not (isinstance(recorded, dict) and isinstance(nodes, dict) and isinstance(listed, dict)):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return Reuse(None, "its record is unreadable")
    differ = [_INPUT_NAMES.get(k, k) for k in sorted(set(inputs) | set(recorded)) if inputs.get(k) != recorded.get(k)]
    if differ:
        return Reuse(None, f"it was made for another {', '.join(differ)}")
    if listed != files:
        changed = sorted(set(listed) ^ set(files) | {f for f in set(listed) & set(files) if listed[f] != files[f]})
        return Reuse(None, f"{len(changed)} of its files are missing, added or of another size since "
                           f"(e.g. replayed/{changed[0]})")
    return Reuse(nodes)
