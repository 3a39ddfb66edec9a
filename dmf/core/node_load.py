"""Loading with sstableloader, decided before any byte moves (pure): every table set's SSTables of a
table under fresh generations in one folder (one loader JVM per table, not per host x set x table),
and, into another topology with --mode node, which node of HOSTS fetches and streams which SSTables,
balanced by bytes, so the nodes load in parallel and no restored byte passes through the worker."""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dmf.core.node_restore import FetchLike, NodeFile, NodeShare

# <version>-<id>-<format>-<component>: the id is a generation number (`nb-12-big-Data.db`) or a
# time-based UUID, `_`-joined (`da-3gxb_0vpo_2z2pc2h8c5ljywr9d8-bti-Data.db`); the component may hold
# `+` (storage-attached indexes: `nb-1-big-SAI+aa+RowToToken.db`).
SSTABLE_COMPONENT = re.compile(r"(?P<version>[a-z]{2})-(?P<id>[0-9a-z_]+)-(?P<format>[a-z]+)-(?P<component>.+)")
# The folders of links one sstableloader streams: PATH/<snapshot>/.load/<ks>/<table> on the worker (beside
# the hosts' folders: no host name or address starts with a dot), <staging>/.load/<snapshot>/<ks>/<table>
# on a node.
LOAD_DIR = ".load"


class TableLoadLike(Protocol):
    keyspace: str
    table: str
    links: tuple[tuple[Path, str], ...]


def descriptor(name: str) -> str:
    """The SSTable a component file belongs to: `nb-12-big` of `nb-12-big-Data.db`."""
    match = SSTABLE_COMPONENT.fullmatch(name)
    if match is None:
        raise ValueError(f"not an SSTable component: {name!r}")
    return f"{match['version']}-{match['id']}-{match['format']}"


def renumbered(paths: Iterable[Path], generation: int) -> tuple[list[tuple[Path, str]], int]:
    """One table set's SSTables under fresh generations after `generation`: (file, new name) pairs, and
    the last generation used. Every component of one SSTable gets the same new generation; only the
    folder's own SSTables are given (secondary-index ones, in .<index>/, are rebuilt by the load;
    manifest.json and schema.cql are not data and do not match)."""
    parsed = [(m, path) for path in paths if (m := SSTABLE_COMPONENT.fullmatch(path.name))]
    links, numbers = [], {}
    for match, path in sorted(parsed, key=lambda mp: mp[1].name):
        sstable = descriptor(path.name)
        if sstable not in numbers:
            generation += 1
            numbers[sstable] = generation
        links.append((path, f"{match['version']}-{numbers[sstable]}-{match['format']}-{match['component']}"))
    return links, generation


@dataclass(frozen=True)
class NodeTableLoad:
    """One table's SSTables on one node: `links` (staged file below the staging folder, its name in
    `directory`) are hard-linked into `directory` (<LOAD_DIR>/<snapshot>/<ks>/<table>, the last two
    folders sstableloader reads the table from), which one sstableloader then streams."""

    keyspace: str
    table: str
    directory: str
    links: tuple[tuple[str, str], ...]
    label: str


@dataclass(frozen=True)
class _SSTable:
    keyspace: str
    table: str
    members: tuple[tuple[NodeFile, str], ...]  # each component's staged file and its load name

    @property
    def bytes(self) -> int:
        return sum(f.size for f, _ in self.members)


def _sstables(tables: Sequence[TableLoadLike], fetches: Sequence[FetchLike], root: Path) -> list[_SSTable]:
    by_dest = {f.dest: f for f in fetches}
    found = []
    for load in tables:
        groups: dict[str, list[tuple[NodeFile, str]]] = {}
        for source, name in load.links:
            fetch = by_dest[source]
            staged = NodeFile.of(fetch, source.relative_to(root).as_posix())
            groups.setdefault(descriptor(name), []).append((staged, name))
        found += [_SSTable(load.keyspace, load.table, tuple(members)) for members in groups.values()]
    return found


def loader_shares(tables: Sequence[TableLoadLike], fetches: Sequence[FetchLike], nodes: Sequence[str], root: Path,
                  snapshot: str) -> dict[str, NodeShare]:
    """Each node of `nodes` (HOSTS) with its share: whole SSTables (every component on one node), the
    largest first to the node with the fewest bytes so far, so the shares end within one SSTable of each
    other; then, per table, one folder of links under the table's fresh generation names (unique across
    the table, so any split of it stays collision-free). A node given nothing is left out."""
    assigned: dict[str, list[_SSTable]] = {node: [] for node in nodes}
    load = dict.fromkeys(nodes, 0)
    for sstable in sorted(_sstables(tables, fetches, root),
                          key=lambda s: (-s.bytes, s.keyspace, s.table, s.members[0][1])):
        node = min(nodes, key=lambda n: load[n])  # min keeps the first of equals: HOSTS' order
        assigned[node].append(sstable)
        load[node] += sstable.bytes
    shares = {}
    for node, sstables in assigned.items():
        if not sstables:
            continue
        per_table: dict[tuple[str, str], list[tuple[NodeFile, str]]] = {}
        for sstable in sorted(sstables, key=lambda s: (s.keyspace, s.table, s.members[0][1])):
            per_table.setdefault((sstable.keyspace, sstable.table), []).extend(sstable.members)
        shares[node] = NodeShare(node, tuple(f for members in per_table.values() for f, _ in members), tables=tuple(
            NodeTableLoad(keyspace, table, posixpath.join(LOAD_DIR, snapshot, keyspace, table),
                          tuple((f.path, name) for f, name in members),
                          f"{keyspace}.{table} on {node} ({len({descriptor(n) for _, n in members})} SSTables)")
            for (keyspace, table), members in per_table.items()))
    return shares
