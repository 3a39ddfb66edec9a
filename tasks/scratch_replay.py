"""Point-in-time replay in a scratch Cassandra on the worker (dmf/scratch_cassandra.py), as one task."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.scratch import Layout, replay_inputs, scratch_schema
from dmf.core.timestamps import format_ts
from dmf.restore_plan import TableLoad
from dmf.scratch_cassandra import previous_replay, remove_leftovers, replay, replayed_loads
from dmf.tasks.common import TASK_DEFAULTS


def taken_ports(cluster: CassandraCluster) -> set[int]:
    """The ports the cluster's nodes answer on (and Cassandra's defaults): never the scratch node's."""
    return {7000, 7001, 7199, 9042, cluster.cql_port, *(h.jmx_port for h in cluster.hosts)}


@task(name="scratch-replay", **TASK_DEFAULTS)
def replay_in_scratch(cluster: CassandraCluster, root: Path, version: str, cql: str, targets: dict[str, str],
                      segments: dict[str, tuple[int, str]], at: datetime, heap_mib: int
                      ) -> tuple[dict[str, dict], list[TableLoad], str | None]:
    """Not retried: a failed replay is removed and reported; a rerun replays again from the segments.
    A replay an earlier run of the restore completed in PATH from the same segments (`segments`: path
    → size and SHA-256), time, version, schema and tables is reused instead. Returns, per source
    node's host ID, its segments, mutations and seconds, the loads of the replayed SSTables into the
    targets (`targets`: replayed table → target table), and the record of the replay reused (None:
    replayed now)."""
    logger = get_run_logger()
    tables = sorted(targets)
    schema = scratch_schema(cql, tables)
    paths = sorted(Path(p) for p in segments)
    inputs = replay_inputs(version, format_ts(at), schema, tables,
                           {f"{p.parent.name}/{p.name}": segments[str(p)] for p in paths})
    layout = Layout.under(str(root))
    found = previous_replay(root, inputs)
    if found.nodes is not None:
        logger.info("replay of %d segment(s) reused from %s/replayed: made for the same segments and time "
                    "(%s, Cassandra %s, %s), recorded complete in %s", len(paths), layout.home, format_ts(at),
                    version, ", ".join(tables), layout.record)
        nodes, reused_from = found.nodes, layout.record
    else:
        if Path(layout.home).exists():
            logger.info("%s is not reused (%s): replaying again", layout.home, found.reason)
        logger.info("replaying %d segment(s) of %d node(s) up to %s into %s in a scratch Cassandra %s (heap %d MiB)",
                    len(paths), len({p.parent.name for p in paths}), format_ts(at), ", ".join(tables), version,
                    heap_mib)
        reused_from = None
        nodes = replay(root, version, schema, tables, paths, at, taken_ports(cluster), heap_mib, inputs,
                       lambda host_id, counts: logger.info(
                           "source node %s: %d segment(s), %d mutation(s) replayed in %.1fs", host_id,
                           counts["segments"], counts["mutations"], counts["seconds"]))
    loads = [TableLoad(keyspace, table, Path(layout.load(keyspace, table)), tuple(links), len(nodes))
             for keyspace, table, links in replayed_loads(root, tables, targets) if links]
    return nodes, loads, reused_from


@task(name="remove-scratch", **TASK_DEFAULTS)
def remove_scratch(root: Path) -> None:
    """Once its SSTables are loaded, unless the files are kept. Dies before: the next run reuses the
    replay if it is for the same inputs, else removes it first."""
    remove_leftovers(Path(Layout.under(str(root)).home))
