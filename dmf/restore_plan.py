"""What a restore fetches and loads, from a resolved chain (pure: paths and keys only)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from dmf.core.catalog import Chain, segment_needed
from dmf.core.client_encryption import Expected, authenticate
from dmf.core.errors import InputError
from dmf.core.keys import MANIFEST_NAME, SetKind, table_of
from dmf.core.manifest import Manifest
from dmf.core.node_load import LOAD_DIR, loader_shares, renumbered
from dmf.core.node_restore import NodeShare, node_fetch_refusal, node_import_refusal, node_shares
from dmf.core.restore_checks import RingNode, check_full_covers_ring, check_hosts_in_ring, datacenters
from dmf.core.restore_request import RestoreRequest
from dmf.core.segments import shipped_segments
from dmf.core.shipper import keep_longest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts
from dmf.core.topology import check_replay_nodes, fit_replication
from dmf.download import Fetch, Unpack, safe_join

COMMITLOG_DIR = "cassandra_commitlogs"
# The node path into another topology: each node of HOSTS fetches a share and streams it with sstableloader.
NODE_LOADER = "node-sstableloader"


@dataclass(frozen=True)
class LoadUnit:
    """One table's files from one set of one host: a directory ending in <keyspace>/<table>."""

    host: str
    set_name: str      # "full" or "incr-<ts>"
    keyspace: str
    table: str
    directory: Path

    def describe(self) -> str:
        return f"{self.host} {self.set_name} {self.keyspace}.{self.table}"


@dataclass(frozen=True)
class TableLoad:
    """Every table set's SSTables of one table, hard-linked into one <keyspace>/<table> folder under
    fresh generations: one sstableloader JVM streams them all, where one per host x set x table cost
    a JVM start each. Loading order never mattered: cells carry their own timestamps."""

    keyspace: str
    table: str
    directory: Path
    links: tuple[tuple[Path, str], ...]  # (a downloaded file, its name in `directory`)
    sets: int

    def describe(self) -> str:
        return f"{self.keyspace}.{self.table} ({self.sets} table sets)"


def _table_loads(units: list[LoadUnit], fetches: list[Fetch], root: Path, snapshot: str) -> list[TableLoad]:
    files_in: dict[Path, list[Path]] = {}
    for fetch in fetches:
        files_in.setdefault(fetch.dest.parent, []).append(fetch.dest)
    loads = []
    for keyspace, table in sorted({(u.keyspace, u.table) for u in units}):
        links, generation = [], 0
        table_units = [u for u in units if (u.keyspace, u.table) == (keyspace, table)]
        for unit in table_units:
            unit_links, generation = renumbered(files_in.get(unit.directory, []), generation)
            links.extend(unit_links)
        loads.append(TableLoad(keyspace, table, safe_join(root, snapshot, LOAD_DIR, keyspace, table), tuple(links),
                               len(table_units)))
    return loads


@dataclass(frozen=True)
class Plan:
    fetches: list[Fetch]
    units: list[LoadUnit]   # what nodetool import places, host by host
    tables: list[TableLoad]  # what sstableloader streams, table by table
    commitlog_fetches: list[Fetch]  # the objects, compressed or not
    segments: list[Path]            # the segments as Cassandra wrote them, once unpacked
    unpacks: list[Unpack]           # compressed segments to give back as they were
    left_out: tuple[str, ...] = ()  # increments' files of an earlier table of the same name, and why

    @property
    def bytes(self) -> int:
        return sum(f.size for f in (*self.fetches, *self.commitlog_fetches))

    @property
    def load_links(self) -> list[Path]:
        return [load.directory / name for load in self.tables for _, name in load.links]


def set_name(manifest: Manifest) -> str:
    return "full" if manifest.set.kind is SetKind.SNAPSHOT else f"incr-{format_ts(manifest.set.set_ts)}"


def plan_restore(chain: Chain, target: DbTarget, root: Path, with_commitlogs: bool,
                 into: DbTarget | None = None) -> Plan:
    """`into` (a table, when `target` is one): the files load into that table instead; sstableloader
    and nodetool import take the table from the unit's directory and names."""
    fetches: list[Fetch] = []
    units: dict[tuple, LoadUnit] = {}
    snapshot = format_ts(chain.full.snapshot_ts)
    # Each host's table folder in the full. An increment taken before dmf told a table's folders apart
    # can hold the folder a dropped table of the same name left (its backups/ files): not this table's.
    full_folders = {(m.set.node, *table_of(e.path)[:2]): e.path.split("/")[1]
                    for m in chain.full.manifests for e in m.files}
    left_out: dict[tuple[str, str, str, str], int] = {}
    for manifest in chain.manifests:
        name = set_name(manifest)
        for entry in manifest.files:
            keyspace, table, _ = table_of(entry.path)
            if not target.covers(keyspace, table):
                continue
            folder, full_folder = entry.path.split("/")[1], full_folders.get((manifest.set.node, keyspace, table))
            if full_folder is not None and folder != full_folder:
                key = (manifest.set.node, keyspace, folder, full_folder)
                left_out[key] = left_out.get(key, 0) + 1
                continue
            inner = entry.path.split("/")[2:]  # [.index/]file, below <ks>/<table>-<id>/
            if into is not None:
                keyspace, table = into.keyspace, into.table
            directory = safe_join(root, snapshot, manifest.set.node, name, keyspace, table)
            units.setdefault((manifest.set.node, name, keyspace, table),
                             LoadUnit(manifest.set.node, name, keyspace, table, directory))
            fetches.append(Fetch(manifest.set.file_key(entry.path), safe_join(directory, *inner),
                                 entry.size, entry.sha256, entry.plain))
    commitlogs, segments, unpacks = _commitlog_files(chain, root) if with_commitlogs else ([], [], [])
    ordered = sorted(units.values(), key=lambda u: (u.set_name != "full", u.set_name, u.host))
    why = tuple(f"{host}: {count} file(s) of {keyspace}/{folder} left out: an earlier table of that name, dropped "
                f"(the full holds {keyspace}/{full_folder})" for (host, keyspace, folder, full_folder), count
                in sorted(left_out.items()))
    return Plan(fetches, ordered, _table_loads(ordered, fetches, root, snapshot), commitlogs, segments, unpacks, why)


def _commitlog_files(chain: Chain, root: Path) -> tuple[list[Fetch], list[Path], list[Unpack]]:
    """The commit-log objects the chain needs (fetches), the segments they give back, and the unpacks
    of the compressed ones."""
    commitlogs, segments, unpacks = [], [], []
    found = [(manifest, shipped) for group in chain.commitlogs for manifest in group.manifests
             for shipped in shipped_segments(manifest)
             if shipped.stored != MANIFEST_NAME and segment_needed(manifest, shipped.segment, chain.full)]
    # A CDC prefix is superseded by a later, longer copy of its segment: the longest sealed one is used.
    for manifest, shipped in keep_longest(found, key=lambda f: (f[0].set.node, f[1].segment),
                                          size=lambda f: f[1].size):
        entry, stored = shipped.entry, safe_join(root, COMMITLOG_DIR, manifest.set.node, shipped.stored)
        commitlogs.append(Fetch(manifest.set.file_key(entry.path), stored, entry.size, entry.sha256, entry.plain))
        segment = safe_join(root, COMMITLOG_DIR, manifest.set.node, shipped.segment)
        segments.append(segment)
        if shipped.compressed:
            unpacks.append(Unpack(stored, segment, shipped.size, shipped.sha256))
    return commitlogs, segments, unpacks


def worker_tables(tables: Iterable[TableLoad], fetches: Iterable[Fetch]) -> list[TableLoad]:
    """The tables' loads cut to the SSTables among `fetches` (what the worker downloads for the nodes
    that fall back): the worker streams those, one sstableloader per table."""
    downloaded = {f.dest for f in fetches}
    cut = [replace(load, links=tuple(link for link in load.links if link[0] in downloaded)) for load in tables]
    return [load for load in cut if load.links]


def download_dirs(plan: Plan, root: Path) -> list[Path]:
    """The directories below root that hold the chain's files, deepest first: what is removed, once
    empty, after a successful restore. COMMITLOG_DIR is never among them (fetched commit logs are
    the operator's to use)."""
    dirs = {parent for dest in (*(f.dest for f in plan.fetches), *plan.load_links)
            for parent in dest.parents if root in parent.parents}
    return sorted(dirs, key=lambda d: (-len(d.parts), str(d)))


@dataclass(frozen=True)
class Placement:
    """Where a restore goes, from the ring as read before anything is resolved: each HOSTS entry a live
    member (its ring address and host ID), the cluster's datacenters and keyspaces."""

    ring: Mapping[str, RingNode]
    ring_address: Mapping[str, str]   # HOSTS entry → the node's address as the ring names it
    host_ids: Mapping[str, str]       # HOSTS entry → the node's host ID
    keyspaces: frozenset[str]
    tokens: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # ring address → its tokens (--mode node)
    versions: frozenset[str] = frozenset()  # the nodes' Cassandra versions (a scratch replay runs the one)


def place(request: RestoreRequest, ring: Mapping[str, RingNode], host_id_of: Mapping[str, str],
          keyspaces: Iterable[str], addresses: Mapping[str, Iterable[str]], resuming: Iterable[str],
          tokens: Mapping[str, tuple[str, ...]] | None = None, versions: Iterable[str] = ()) -> Placement:
    """`host_id_of`: ring address → host ID; `addresses`: each HOSTS entry → the addresses it stands for;
    `resuming`: entries an interrupted replay left restarting (they may be down); `tokens`: ring address →
    the tokens it owns; `versions`: the nodes' Cassandra versions."""
    keyspaces = frozenset(keyspaces)
    if request.into is not None and request.into.keyspace not in keyspaces:
        raise InputError(f"--into {request.into}: keyspace {request.into.keyspace} does not exist in this cluster; "
                         "create it first")
    ring_address = check_hosts_in_ring(addresses, ring, resuming)
    return Placement(ring, ring_address, {h: host_id_of[a] for h, a in ring_address.items() if a in host_id_of},
                     keyspaces, dict(tokens or {}), frozenset(versions))


@dataclass(frozen=True)
class RestorePlan:
    """Everything a restore does, decided before any byte moves: the chain, the files and where each goes,
    what loads them and how, and the schema to apply. Built by `plan_files` then `plan_restore_request`."""

    request: RestoreRequest
    at: datetime
    root: Path
    chain: Chain
    files: Plan
    # How the files reach Cassandra: "sstableloader" (any topology, streamed from here), "import" (each
    # backup host's files by nodetool import on that host), "node" (each node fetches its own share,
    # node_fetches, from S3 and imports it; dmf.tasks.node_restore) or NODE_LOADER (the node path where
    # the nodes cannot import: each node of HOSTS fetches a share and streams it, one sstableloader per table).
    # --mode node, the default, becomes one of the worker's two where no node may fetch (_load_mode).
    load_mode: str
    schema: str | None = None       # the snapshot's schema.cql, its keyspace's replication fitted to this cluster
    notes: tuple[str, ...] = ()     # what the run log says before the download
    warnings: tuple[str, ...] = ()

    @property
    def node_fetches(self) -> dict[str, NodeShare]:
        """What each node fetches and stages on the node path, and loads: each backup host's own files
        and units (import), or a share balanced by bytes over HOSTS and its tables (NODE_LOADER)."""
        if self.load_mode == NODE_LOADER:
            return loader_shares(self.files.tables, self.files.fetches, self.request.hosts, self.root,
                                 format_ts(self.chain.full.snapshot_ts))
        return node_shares(self.files.fetches, self.files.units, self.root)

    @property
    def replays_in_scratch(self) -> bool:
        """The commit logs are replayed in a scratch Cassandra on the worker (a step after the load)."""
        return self.request.replay_commitlogs and not self.request.replays_on_nodes

    @property
    def import_units(self) -> dict[str, list[LoadUnit]]:
        """HOSTS entry → the load units nodetool import places there (its own files), in HOSTS' order."""
        return {host: units for host in self.request.hosts
                if (units := [u for u in self.files.units if u.host == host])}

    @property
    def tables(self) -> list[str]:
        return sorted({f"{u.keyspace}.{u.table}" for u in self.files.units})

    @property
    def loads(self) -> int:
        """How many loads the load step makes: one per table (sstableloader), per table and node
        (NODE_LOADER) or per table set (import)."""
        if self.load_mode == NODE_LOADER:
            return sum(len(share.tables) for share in self.node_fetches.values())
        return len(self.files.tables if self.load_mode == "sstableloader" else self.files.units)


def _load_mode(request: RestoreRequest, chain: Chain, files: Plan, placement: Placement,
               fetch_refusal: str | None) -> tuple[str, str | None]:
    """--mode node (the default) imports each backup host's files on its node when the ring owns the
    backup's tokens and HOSTS name every host whose files load; otherwise the nodes stream with
    sstableloader. When no node may fetch at all (`fetch_refusal`: a key that stays on the worker),
    the worker path instead: nodetool import of the worker's download where the nodes could import,
    else sstableloader on the worker. Each choice but the first comes with the note saying why."""
    if request.mode != "node":
        return request.mode, None
    loaded_hosts = {u.host for u in files.units}
    why = node_import_refusal({m.set.node: m.tokens for m in chain.full.manifests if m.set.node in loaded_hosts},
                              placement.tokens, request.hosts)
    if fetch_refusal is not None:
        mode, how = (("import", "places each host's files on it with nodetool import") if why is None
                     else ("sstableloader", "streams them with sstableloader"))
        return mode, (f"node path: {fetch_refusal}, so no node fetches its own files: the worker downloads every "
                      f"file into PATH and {how} (the worker path, as --mode {mode})")
    if why is None:
        return "node", None
    return NODE_LOADER, (f"node path: {why}, so the nodes cannot import their own files: each of "
                         f"{', '.join(request.hosts)} fetches a share of them from S3 and streams it with "
                         "sstableloader (one per table)")


def plan_files(request: RestoreRequest, root: Path, chain: Chain, placement: Placement, expected: Expected) -> Plan:
    """The chain's files for the request, checked before the snapshot's schema is read: the full covers
    this ring, it holds the target, its manifests are authentic under the repository's key, and each
    commit log to replay on the nodes has a node of HOSTS to replay on."""
    snapshot = format_ts(chain.full.snapshot_ts)
    check_full_covers_ring(chain.full.hosts, snapshot, placement.ring, request.allow_host_subset)
    files = plan_restore(chain, request.target, root, with_commitlogs=request.with_commitlogs, into=request.into)
    if not files.fetches:
        raise InputError(f"the backup {snapshot} holds no file of {request.target}")
    authenticate([*chain.manifests, *(m for group in chain.commitlogs for m in group.manifests)], expected)
    if request.replays_on_nodes:
        check_replay_nodes({s.parent.name for s in files.segments}, placement.host_ids)
    return files


def plan_restore_request(request: RestoreRequest, at: datetime, root: Path, chain: Chain, placement: Placement,
                         files: Plan, stored_schema: str | None, *, sse: str | None = None,
                         sse_c_key_on_nodes: bool = False, decrypt_on_nodes: bool = False) -> RestorePlan:
    """The plan, once the snapshot's schema (None: not stored, or not needed) is read: a keyspace this
    cluster cannot hold fails here, not mid-load, and so does an import onto hosts that miss some files.
    `sse`, `sse_c_key_on_nodes`, `decrypt_on_nodes`: the repository's, which say (with the files'
    client-side encryption) whether a node may fetch its files itself."""
    target, notes, warnings, schema = request.target, [], [*files.left_out], stored_schema
    if request.restore_schema and stored_schema is not None and target.keyspace not in placement.keyspaces:
        schema, used = fit_replication(stored_schema, target.keyspace, datacenters(placement.ring),
                                       request.dc_map, request.replication)
        if used:
            notes.append(f"keyspace {target.keyspace} will be created with replication {used}")
    elif request.dc_map or request.replication:
        warnings.append(f"keyspace {target.keyspace} exists in this cluster: its replication is kept, "
                     "--dc-map/--replication unused")
    if request.mode == "import":
        missing = sorted({u.host for u in files.units} - set(request.hosts))
        if missing:
            raise InputError(f"--mode import places each host's own files on it: HOSTS must include "
                             f"{', '.join(missing)} (the default node mode, or sstableloader, loads into any hosts)")
    fetch_refusal = node_fetch_refusal(any(f.plain is not None for f in files.fetches), sse, sse_c_key_on_nodes,
                                       decrypt_on_nodes)
    load_mode, why = _load_mode(request, chain, files, placement, fetch_refusal)
    if why:
        notes.append(why)
    notes.append(f"restoring {target} at {format_ts(at)}: full {format_ts(chain.full.snapshot_ts)} + "
                 f"{len(chain.increments)} increment(s), {len(files.fetches)} files, {files.bytes / 2**20:.1f} MiB "
                 f"into {root}")
    return RestorePlan(request, at, root, chain, files, load_mode, schema, tuple(notes), tuple(warnings))
