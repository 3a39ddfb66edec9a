"""What a restore fetches and loads, from a resolved chain (pure: paths and keys only)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dmf.core.catalog import Chain, segment_needed
from dmf.core.keys import MANIFEST_NAME, SetKind, table_of
from dmf.core.manifest import Manifest
from dmf.core.segments import shipped_segments
from dmf.core.shipper import keep_longest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts
from dmf.download import Fetch, Unpack, safe_join

COMMITLOG_DIR = "cassandra_commitlogs"
# Beside the hosts' folders under <snapshot>/: no host name or address starts with a dot.
LOAD_DIR = ".load"
# <version>-<id>-<format>-<component>: the id is a generation number or a time-based UUID (`_`-joined).
_SSTABLE_COMPONENT = re.compile(r"(?P<version>[a-z]{2})-(?P<id>[0-9a-z_]+)-(?P<format>[a-z]+)-(?P<component>.+)")


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
            # Only the folder's own SSTables: secondary-index ones (in .<index>/) are rebuilt by the
            # load, manifest.json and schema.cql are not data.
            parsed = [(m, path) for path in files_in.get(unit.directory, [])
                      if (m := _SSTABLE_COMPONENT.fullmatch(path.name))]
            renumbered: dict[str, int] = {}
            for match, path in sorted(parsed, key=lambda mp: mp[1].name):
                descriptor = f"{match['version']}-{match['id']}-{match['format']}"
                if descriptor not in renumbered:
                    generation += 1
                    renumbered[descriptor] = generation
                links.append((path, f"{match['version']}-{renumbered[descriptor]}-{match['format']}-"
                                    f"{match['component']}"))
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
    for manifest in chain.manifests:
        name = set_name(manifest)
        for entry in manifest.files:
            keyspace, table, _ = table_of(entry.path)
            if not target.covers(keyspace, table):
                continue
            inner = entry.path.split("/")[2:]  # [.index/]file, below <ks>/<table>-<id>/
            if into is not None:
                keyspace, table = into.keyspace, into.table
            directory = safe_join(root, snapshot, manifest.set.node, name, keyspace, table)
            units.setdefault((manifest.set.node, name, keyspace, table),
                             LoadUnit(manifest.set.node, name, keyspace, table, directory))
            fetches.append(Fetch(manifest.set.file_key(entry.path), safe_join(directory, *inner),
                                 entry.size, entry.sha256, entry.plain))
    commitlogs, segments, unpacks = [], [], []
    if with_commitlogs:
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
    ordered = sorted(units.values(), key=lambda u: (u.set_name != "full", u.set_name, u.host))
    return Plan(fetches, ordered, _table_loads(ordered, fetches, root, snapshot), commitlogs, segments, unpacks)


def download_dirs(plan: Plan, root: Path) -> list[Path]:
    """The directories below root that hold the chain's files, deepest first: what is removed, once
    empty, after a successful restore. COMMITLOG_DIR is never among them (fetched commit logs are
    the operator's to use)."""
    dirs = {parent for dest in (*(f.dest for f in plan.fetches), *plan.load_links)
            for parent in dest.parents if root in parent.parents}
    return sorted(dirs, key=lambda d: (-len(d.parts), str(d)))
