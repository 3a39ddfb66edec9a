"""Backup decisions (pure): which chain a run extends, and which backups/ files it may delete.

Several chains can need the same backups/ file: a scheduled chain of every keyspace and an ad-hoc
chain of `ks.t` both take `ks.t`'s flushed SSTables. A node's backups/ file may only go once
every open chain that covers its table holds it; a chain left idle past CHAIN_IDLE is closed
(the next backup of its target starts a new full), so it never pins files for ever.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from dmf.core.catalog import Catalog, Group, covers
from dmf.core.keys import live_folder_of, split_table_dir, table_of
from dmf.core.targets import DbTarget

CHAIN_IDLE = timedelta(days=7)


def chain_end(catalog: Catalog, full: Group) -> datetime:
    """The time of the chain's newest complete set: its full, or its last increment."""
    increments = catalog.increments_of(full)
    return increments[-1].time if increments else full.time


def is_open(catalog: Catalog, full: Group, now: datetime) -> bool:
    return now - chain_end(catalog, full) <= CHAIN_IDLE


@dataclass(frozen=True)
class ChainFiles:
    """What one open chain holds of a node: the relpaths of its full and increments there."""
    db_target: str
    held: frozenset[str]


def open_chains(catalog: Catalog, node: str, now: datetime, own_snapshot: datetime) -> list[Group]:
    """The newest complete full of each db-target and host set that includes `node`, still open,
    except the running backup's own chain (it holds its files by construction)."""
    newest: dict[tuple[str, frozenset[str]], Group] = {}
    for full in catalog.fulls:  # oldest first: the newest of each kind wins
        if full.complete and node in full.sets:
            newest[(full.db_target, frozenset(full.hosts))] = full
    return [full for full in newest.values()
            if full.snapshot_ts != own_snapshot and is_open(catalog, full, now)]


def deletable(relpaths: Iterable[str], chains: Iterable[ChainFiles]) -> list[str]:
    """The backups/ files (`<ks>/<table>-<id>/[.<index>/]<file>`) every chain covering their table holds."""
    chains = list(chains)
    removable = []
    for relpath in relpaths:
        keyspace, table_dir = relpath.split("/")[:2]
        table = DbTarget(keyspace, split_table_dir(table_dir)[0])
        if all(relpath in chain.held for chain in chains if covers(chain.db_target, table)):
            removable.append(relpath)
    return removable


def superseded(relpaths: Iterable[str], snapshot: Iterable[str], held: Iterable[str] = ()) -> list[str]:
    """Of the backups/ files found on a node around a new full (`<ks>/<table>-<id>/[.<index>/]<file>`),
    those it makes redundant: the SSTables its snapshot holds (a backups/ file links one, by the same
    name), and files a complete set holds already (`held`: another open chain's). Every other one stays
    for the next incremental to upload: a table dropped since the last incremental or left out of the
    full, whose flushed files no backup holds; an SSTable compacted away before the snapshot (the full
    holds its rows, not the file: one more upload costs less than a wrong guess)."""
    holds = set(snapshot) | set(held)
    return [relpath for relpath in relpaths if relpath in holds]


def recreated_tables(full_paths: Iterable[str], live: Iterable[str]) -> list[str]:
    """`ks.table` of each table whose folder in the full (`full_paths`: its files' relpaths) is not
    its live one (`live`: `<ks>/<table>-<id>` folders): dropped and created again since the full, so
    the chain's full holds another table of that name."""
    live_folder = live_folder_of(live)
    found = set()
    for path in full_paths:
        keyspace, table, table_id = table_of(path)
        folder = f"{keyspace}/{table}-{table_id}"
        if live_folder.get(f"{keyspace}/{table}", folder) != folder:
            found.add(f"{keyspace}.{table}")
    return sorted(found)
