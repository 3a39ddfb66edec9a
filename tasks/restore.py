"""Restore steps: verified download, schema, load (sstableloader or nodetool import), commit-log replay."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.restore_checks import RingNode
from dmf.core.errors import InputError
from dmf.core.schema import copy_statements, object_name, restore_statements
from dmf.core.targets import DbTarget
from dmf.cql import NodeFacts, connect, node_facts, qualified
from dmf.download import Fetch, Unpack, fetch_all, link_for_load, remove_downloads, unpack_all
from dmf.loader import import_unit, run_sstableloader
from dmf.reporting import TransferProgress
from dmf.replay import finish_interrupted, replay_on_host, restore_point
from dmf.restore_plan import LoadUnit, TableLoad
from dmf.ssh import RemoteHost
from dmf.storage import Storage
from dmf.tasks.common import RETRY, TASK_DEFAULTS


# How long the ring check waits for the driver's connection pools (opened in the background) to
# tell whether each node answers.
UP_STATE_WAIT_S = 5.0


@task(name="ring", **TASK_DEFAULTS)
def ring_view(cluster: CassandraCluster) -> tuple[dict[str, NodeFacts], dict[str, RingNode], set[str]]:
    """The cluster's nodes (system.local and system.peers, via the driver's metadata), by every
    address they have: their facts, datacenter, and whether they are up as the driver sees it: a CQL
    connection open to it (True), marked down (False), not known within UP_STATE_WAIT_S (None).
    Also the cluster's keyspaces."""
    with connect(cluster) as session:
        facts = node_facts(session)
        hosts = session.cluster.metadata.all_hosts()

        def up(host) -> bool | None:
            if host.is_up is False:
                return False
            return True if session.get_pool_state().get(host, {}).get("open_count", 0) > 0 else None

        deadline = time.monotonic() + UP_STATE_WAIT_S
        while any(up(h) is None for h in hosts) and time.monotonic() < deadline:
            time.sleep(0.1)
        ring = {}
        for host in hosts:
            node = RingNode(str(host.broadcast_address or host.address), up(host), host.datacenter or "")
            for address in {host.address, host.broadcast_address, host.broadcast_rpc_address}:
                if address:
                    ring[str(address)] = node
        keyspaces = set(session.cluster.metadata.keyspaces)
    return facts, ring, keyspaces


@task(name="download", **TASK_DEFAULTS, **RETRY)
def download(repository: S3Repository, root: Path, fetches: list[Fetch]) -> dict:
    """Parallel verified download below `root`; files already present and verified are skipped (resume)."""
    progress = TransferProgress("download", sum(f.size for f in fetches))
    transferred = fetch_all(Storage(repository), root, fetches, repository.max_concurrency, progress)
    total = sum(f.size for f in fetches)
    get_run_logger().info("%d files (%.1f MiB) verified in place, %d downloaded now", len(fetches),
                          total / 2**20, transferred)
    return {"files": len(fetches), "bytes": total, "downloaded": transferred}


@task(name="unpack-commitlogs", **TASK_DEFAULTS)
def unpack_commitlogs(root: Path, unpacks: list[Unpack]) -> int:
    """The compressed segments, given back as Cassandra wrote them (checked by their SHA-256)."""
    unpacked = unpack_all(root, unpacks)
    if unpacks:
        get_run_logger().info("%d commit-log segment(s) decompressed and verified, %d already were",
                              unpacked, len(unpacks) - unpacked)
    return unpacked


@task(name="remove-downloads", **TASK_DEFAULTS)
def remove_downloaded(root: Path, files: list[Path], links: list[Path], dirs: list[Path]) -> int:
    """The downloaded files, the load folders' links to them, then the folders left empty."""
    remove_downloads(root, links, [])
    removed = remove_downloads(root, files, dirs)
    get_run_logger().info("%d downloaded file(s) removed from %s", removed, root)
    return removed


@task(name="apply-schema", **TASK_DEFAULTS)
def apply_schema(cluster: CassandraCluster, cql: str, target: DbTarget, after_load: bool = False) -> int:
    """Recreates the keyspace, types and tables of the target (IF NOT EXISTS, table IDs kept), or
    (`after_load`) their indexes and views, which Cassandra then builds from the loaded data."""
    statements = restore_statements(cql, target, after_load)
    with connect(cluster) as session:
        for statement in statements:
            session.execute(statement, timeout=120)
    get_run_logger().info("schema: %d %sstatements applied for %s", len(statements),
                          "index and view " if after_load else "", target)
    return len(statements)


@task(name="create-copy", **TASK_DEFAULTS)
def create_copy(cluster: CassandraCluster, cql: str, source: DbTarget, into: DbTarget) -> None:
    """Creates `into` (IF NOT EXISTS) as a copy of the table `source` from the backup's schema."""
    statements = copy_statements(cql, source, into)
    if not any(object_name(s)[0] == "TABLE" for s in statements):
        raise InputError(f"the backup holds no CREATE TABLE for {source} to create {into} from")
    with connect(cluster) as session:
        for statement in statements:
            session.execute(statement, timeout=120)


@task(name="truncate-tables", **TASK_DEFAULTS)
def truncate_tables(cluster: CassandraCluster, tables: list[str]) -> None:
    """TRUNCATE each `ks.table` (needs every node up; Cassandra's auto_snapshot keeps what it removes)."""
    with connect(cluster) as session:
        for table in tables:
            keyspace, name = table.split(".")
            session.execute(f"TRUNCATE {qualified(keyspace, name)}", timeout=300)
    get_run_logger().warning("truncated %s before loading (--truncate-first)", ", ".join(tables))


@task(name="sstableloader", task_run_name="sstableloader-{load.keyspace}.{load.table}", **TASK_DEFAULTS, **RETRY)
def load_table_sstableloader(cluster: CassandraCluster, hosts: tuple[str, ...], root: Path, load: TableLoad) -> str:
    """Links every set's verified SSTables of the table into its load folder, then streams them in one JVM."""
    link_for_load(root, load)
    run_sstableloader(cluster, hosts, load)
    return load.describe()


@task(name="nodetool-import", task_run_name="import-{address}", **TASK_DEFAULTS, **RETRY)
def load_units_import(cluster: CassandraCluster, address: str, units: list[LoadUnit]) -> list[str]:
    with RemoteHost(cluster, cluster.host(address)) as remote:
        for unit in units:
            import_unit(remote, unit)
    return [u.describe() for u in units]


@task(name="replay-commitlogs", task_run_name="replay-{address}", **TASK_DEFAULTS)
def replay_commitlogs_on_host(cluster: CassandraCluster, address: str, segments: list[Path], tables: list[str],
                              at: datetime, on_restart: Callable[[int], None]) -> int:
    """Not retried: a half-done restart is for the operator to look at, not to repeat blindly."""
    with RemoteHost(cluster, cluster.host(address)) as remote:
        replayed = replay_on_host(remote, segments, tables, at, on_restart)
    get_run_logger().info("%s: %d segments, %d mutations replayed up to %s", address, len(segments), replayed,
                          restore_point(at))
    return replayed


@task(name="finish-interrupted-replay", task_run_name="finish-replay-{address}", **TASK_DEFAULTS)
def finish_interrupted_replay(cluster: CassandraCluster, address: str, tables: list[str], at: datetime,
                              log_offset: int) -> int | None:
    """The node a killed run was restarting: put back, brought up; its mutations if it did replay."""
    with RemoteHost(cluster, cluster.host(address)) as remote:
        replayed = finish_interrupted(remote, tables, at, log_offset)
    get_run_logger().info("%s: the interrupted replay restart %s", address,
                          f"had replayed {replayed} mutations" if replayed is not None else "did not replay; again")
    return replayed
