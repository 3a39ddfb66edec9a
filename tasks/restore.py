"""Restore steps: verified download, schema, load (sstableloader or nodetool import), commit-log replay."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.schema import restore_statements
from dmf.core.targets import DbTarget
from dmf.cql import connect
from dmf.download import Fetch, fetch_all
from dmf.loader import import_unit, run_sstableloader
from dmf.reporting import TransferProgress
from dmf.replay import replay_on_host, restore_point
from dmf.restore_plan import LoadUnit
from dmf.ssh import RemoteHost
from dmf.storage import Storage
from dmf.tasks.common import RETRY, TASK_DEFAULTS


@task(name="download", **TASK_DEFAULTS, **RETRY)
def download(repository: S3Repository, fetches: list[Fetch]) -> dict:
    """Parallel verified download; files already present and verified are skipped (resume)."""
    progress = TransferProgress("download", sum(f.size for f in fetches))
    transferred = fetch_all(Storage(repository), fetches, repository.max_concurrency, progress)
    total = sum(f.size for f in fetches)
    get_run_logger().info("%d files (%.1f MiB) verified in place, %d downloaded now", len(fetches),
                          total / 2**20, transferred)
    return {"files": len(fetches), "bytes": total, "downloaded": transferred}


@task(name="apply-schema", **TASK_DEFAULTS)
def apply_schema(cluster: CassandraCluster, cql: str, target: DbTarget) -> int:
    """Recreates the keyspace, types and tables of the target (IF NOT EXISTS, table IDs kept)."""
    statements = restore_statements(cql, target)
    with connect(cluster) as session:
        for statement in statements:
            session.execute(statement, timeout=120)
    get_run_logger().info("schema: %d statements applied for %s", len(statements), target)
    return len(statements)


@task(name="sstableloader", task_run_name="sstableloader-{unit.host}-{unit.set_name}", **TASK_DEFAULTS, **RETRY)
def load_unit_sstableloader(cluster: CassandraCluster, hosts: tuple[str, ...], unit: LoadUnit) -> str:
    run_sstableloader(cluster, hosts, unit)
    return unit.describe()


@task(name="nodetool-import", task_run_name="import-{address}", **TASK_DEFAULTS, **RETRY)
def load_units_import(cluster: CassandraCluster, address: str, units: list[LoadUnit]) -> list[str]:
    with RemoteHost(cluster, cluster.host(address)) as remote:
        for unit in units:
            import_unit(remote, unit)
    return [u.describe() for u in units]


@task(name="replay-commitlogs", task_run_name="replay-{address}", **TASK_DEFAULTS)
def replay_commitlogs_on_host(cluster: CassandraCluster, address: str, segments: list[Path], tables: list[str],
                              at: datetime) -> int:
    """Not retried: a half-done restart is for the operator to look at, not to repeat blindly."""
    with RemoteHost(cluster, cluster.host(address)) as remote:
        replayed = replay_on_host(remote, segments, tables, at)
    get_run_logger().info("%s: %d segments, %d mutations replayed up to %s", address, len(segments), replayed,
                          restore_point(at))
    return replayed
