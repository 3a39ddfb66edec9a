"""Restore drills against the cluster: sample the copy against the live table, drop the copy, and
clear the snapshot Cassandra's auto_snapshot takes of it on every node."""
from __future__ import annotations

import posixpath

from cassandra.query import SimpleStatement

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.drill import SampleCheck
from dmf.core.targets import DbTarget
from dmf.cql import connect, identifier, qualified
from dmf.node import Node
from dmf.ssh import RemoteHost

NON_FROZEN_COLLECTION = ("list<", "set<", "map<")


def compare_sample(cluster: CassandraCluster, source: DbTarget, copy: DbTarget, backup_us: int,
                   limit: int) -> tuple[int, SampleCheck]:
    """The copy's row count, and up to `limit` of its rows (in token order) compared with the live
    table's: the key and every column Cassandra gives a write time for (all but non-frozen collections)."""
    with connect(cluster) as session:
        table = session.cluster.metadata.keyspaces[source.keyspace].tables[source.table]
        keys = [c.name for c in table.primary_key]
        stamped = [c.name for c in table.columns.values()
                   if c.name not in keys and not c.cql_type.startswith(NON_FROZEN_COLLECTION)]
        columns = ", ".join(identifier(c) for c in [*keys, *stamped])
        copy_name = qualified(copy.keyspace, copy.table)
        source_name = qualified(source.keyspace, source.table)
        count = session.execute(SimpleStatement(f"SELECT count(*) FROM {copy_name}"), timeout=600).one()[0]
        written = "".join(f", WRITETIME({identifier(c)})" for c in stamped)
        live_query = session.prepare(f"SELECT {columns}{written} FROM {source_name} WHERE "
                                     + " AND ".join(f"{identifier(k)} = ?" for k in keys))
        check = SampleCheck()
        for row in session.execute(SimpleStatement(f"SELECT {columns} FROM {copy_name} LIMIT {int(limit)}")):
            copy_row = dict(zip([*keys, *stamped], row))
            live = session.execute(live_query, [copy_row[k] for k in keys]).one()
            live_row = dict(zip([*keys, *stamped], live[:len(keys) + len(stamped)])) if live else None
            times = [t for t in live[len(keys) + len(stamped):] if t is not None] if live else []
            check.add(", ".join(f"{k}={copy_row[k]!r}" for k in keys), copy_row, live_row,
                      max(times) if times else (0 if live else None), backup_us)
    return count, check


def drop_copy(cluster: CassandraCluster, copy: DbTarget) -> list[str]:
    """Drops the copy, then clears the `dropped-*-<table>` snapshot auto_snapshot leaves on each node
    (else every weekly drill would keep its copy on disk). Returns the snapshot tags cleared."""
    with connect(cluster) as session:
        session.execute(f"DROP TABLE IF EXISTS {qualified(copy.keyspace, copy.table)}", timeout=120)
    cleared = []
    for host in cluster.hosts:
        with RemoteHost(cluster, host) as remote:
            node = Node(remote)
            tags = {posixpath.basename(d.rstrip("/")) for d in node.snapshot_dirs()
                    if f"/{copy.keyspace}/{copy.table}-" in d}
            for tag in sorted(t for t in tags if t.startswith("dropped-") and t.endswith(f"-{copy.table}")):
                node.clear_snapshot(tag)
                cleared.append(f"{host.address}:{tag}")
    return cleared
