"""Steps of restore-drill around the restore itself (see dmf.drill)."""
from __future__ import annotations

from prefect import get_run_logger, task

from dmf import drill
from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.core.drill import SampleCheck
from dmf.core.targets import DbTarget

from dmf.tasks.common import RETRY, TASK_DEFAULTS


@task(name="compare-copy", **TASK_DEFAULTS, **RETRY)
def compare_copy(cluster: CassandraCluster, source: DbTarget, copy: DbTarget, backup_us: int,
                 sample_rows: int) -> tuple[int, SampleCheck]:
    rows, check = drill.compare_sample(cluster, source, copy, backup_us, sample_rows)
    get_run_logger().info("copy holds %d row(s); %d sampled: %d equal to the live table, %d changed since the "
                          "backup, %d differ", rows, check.sampled, check.matched, check.changed, len(check.mismatched))
    return rows, check


@task(name="drop-copy", **TASK_DEFAULTS, **RETRY)
def drop_copy(cluster: CassandraCluster, copy: DbTarget) -> list[str]:
    cleared = drill.drop_copy(cluster, copy)
    get_run_logger().info("dropped %s; cleared its auto_snapshot on %d node(s)", copy, len(cleared))
    return cleared
