"""Point-in-time replay in a scratch Cassandra on the worker (dmf/scratch_cassandra.py), as one task."""
from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.scratch import HEAP_MIB, Layout, scratch_schema
from dmf.core.timestamps import format_ts
from dmf.restore_plan import TableLoad
from dmf.scratch_cassandra import replay
from dmf.tasks.common import TASK_DEFAULTS


def taken_ports(cluster: CassandraCluster) -> set[int]:
    """The ports the cluster's nodes answer on (and Cassandra's defaults): never the scratch node's."""
    return {7000, 7001, 7199, 9042, cluster.cql_port, *(h.jmx_port for h in cluster.hosts)}


@task(name="scratch-replay", **TASK_DEFAULTS)
def replay_in_scratch(cluster: CassandraCluster, root: Path, version: str, cql: str, targets: dict[str, str],
                      segments: list[Path], at: datetime) -> tuple[dict[str, dict], list[TableLoad]]:
    """Not retried: a failed replay is removed and reported; a rerun replays again from the segments.
    Returns, per source node's host ID, its segments, mutations and seconds, and the loads of the
    replayed SSTables into the targets (`targets`: replayed table → target table)."""
    logger = get_run_logger()
    tables = sorted(targets)
    logger.info("replaying %d segment(s) of %d node(s) up to %s into %s in a scratch Cassandra %s",
                len(segments), len({s.parent.name for s in segments}), format_ts(at), ", ".join(tables), version)
    result = replay(root, version, scratch_schema(cql, tables), tables, targets, segments, at, taken_ports(cluster),
                    HEAP_MIB, lambda host_id, counts: logger.info(
                        "source node %s: %d segment(s), %d mutation(s) replayed in %.1fs", host_id,
                        counts["segments"], counts["mutations"], counts["seconds"]))
    layout = Layout.under(str(root))
    loads = [TableLoad(keyspace, table, Path(layout.load(keyspace, table)), tuple(links), len(result.nodes))
             for keyspace, table, links in result.loads if links]
    return result.nodes, loads


@task(name="remove-scratch", **TASK_DEFAULTS)
def remove_scratch(root: Path) -> None:
    """Once its SSTables are loaded. Dies before: the next run removes it first."""
    shutil.rmtree(Layout.under(str(root)).home, ignore_errors=True)
