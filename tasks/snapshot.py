"""On-node steps: snapshot, flush, list files, clear snapshot, delete uploaded backups, clear leftovers."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import get_run_logger, task
from prefect.runtime import task_run

from dmf.blocks.cassandra_cluster import CassandraCluster

from dmf import sweep
from dmf.blocks.s3_repository import S3Repository
from dmf.core import plan
from dmf.core.targets import DbTarget
from dmf.lease import check_lease
from dmf.repository import Repository
from dmf.storage import Storage
from dmf.node import Node, SourceFile
from dmf.ssh import RemoteHost

from dmf.tasks.common import RETRY, TASK_DEFAULTS


def _log_files(address: str, what: str, files: list[SourceFile]) -> None:
    get_run_logger().info("%s: %s: %d files, %.1f MiB", address, what, len(files),
                          sum(f.size for f in files) / 2**20)


@dataclass(frozen=True)
class Taken:
    """A host's files for this run: `files` to upload (a full's snapshot, or an incremental's backups/
    files), and `backups`, the backups/ files the run may delete once every host is sealed (which of
    them, select_deletable decides)."""
    files: list[SourceFile]
    backups: list[SourceFile]
    full: bool


@task(name="take-snapshot", task_run_name="take-snapshot-{address}", **TASK_DEFAULTS, **RETRY)
def take_snapshot(cluster: CassandraCluster, address: str, tag: str, target: DbTarget,
                  keyspaces: list[str], live: tuple[str, ...]) -> Taken:
    """One SSH session and one nodetool JVM: the backups/ files present before the snapshot (it makes
    them redundant), the snapshot, then one listing for its files and the backups/ files of the very
    SSTables it holds (its own flush adds them; a later flush's are kept)."""
    with RemoteHost(cluster, cluster.host(address)) as remote:
        node = Node(remote)
        node.check_data_dirs(target, keyspaces)
        before = node.backup_files(target, live)
        if task_run.run_count > 1:  # a retried attempt starts from a clean tag; the first has none (it is this run's)
            node.remove_snapshot(tag)
        node.snapshot(tag, target, keyspaces)
        files, after = node.snapshot_and_backup_files(tag, target, live)
    _log_files(address, f"snapshot {tag}", files)
    in_snapshot = {f.relpath for f in files}
    return Taken(files, [*before, *(f for f in after if f.relpath in in_snapshot and f not in before)], full=True)


@task(name="flush-and-list-backups", task_run_name="flush-{address}", **TASK_DEFAULTS, **RETRY)
def flush_and_list_backups(cluster: CassandraCluster, address: str, target: DbTarget,
                           keyspaces: list[str], live: tuple[str, ...]) -> Taken:
    with RemoteHost(cluster, cluster.host(address)) as remote:
        node = Node(remote)
        node.check_data_dirs(target, keyspaces)
        node.flush(target, keyspaces)
        files = node.backup_files(target, live)
    _log_files(address, "incremental backups", files)
    return Taken(files, files, full=False)


@task(name="clear-snapshot", task_run_name="clear-snapshot-{address}", **TASK_DEFAULTS, **RETRY)
def clear_snapshot(cluster: CassandraCluster, address: str, tag: str) -> None:
    """This run's own tag, once the host's upload ended (the seal reads only the bucket): cleared even
    by a run that lost the lease (no other run uses the tag, and a snapshot only links live
    SSTables), so it never pins the node's disk."""
    with RemoteHost(cluster, cluster.host(address)) as remote:
        Node(remote).remove_snapshot(tag)


@task(name="delete-uploaded-backups", task_run_name="delete-backups-{address}", **TASK_DEFAULTS, **RETRY)
def delete_files(cluster: CassandraCluster, address: str, files: list[SourceFile]) -> int:
    """Cassandra never removes backups/ files itself; remove exactly the verified ones, while the
    run still holds the cluster (another run's full may be taking the same files)."""
    if files:
        check_lease(f"deleting {len(files)} backups/ file(s) on {address}")
        with RemoteHost(cluster, cluster.host(address)) as remote:
            Node(remote).delete_files([f.path for f in files])
    return len(files)


@task(name="clear-leftover-snapshots", task_run_name="clear-leftovers-{address}", **TASK_DEFAULTS, **RETRY)
def clear_leftover_snapshots(cluster: CassandraCluster, address: str, keep: str | None = None) -> list[str]:
    """dmf snapshots a crashed run left on the node (the run holds the cluster's lease: none is live)."""
    with RemoteHost(cluster, cluster.host(address)) as remote:
        tags = sweep.clear_leftover_snapshots(Node(remote), keep)
    if tags:
        get_run_logger().info("%s: cleared %d leftover snapshot(s) of crashed runs: %s", address, len(tags),
                              ", ".join(tags))
    return tags


@task(name="read-open-chains", **TASK_DEFAULTS, **RETRY)
def read_open_chains(repository: S3Repository, hosts: tuple[str, ...], own_snapshot: datetime,
                     now: datetime) -> dict[str, list[plan.ChainFiles]]:
    """Per host, what each other open chain holds of it: read once per run, from the chains active in
    the last CHAIN_IDLE only. From the run's start, beside its other steps: the run holds the lease,
    so no other run changes those chains, and its own (`own_snapshot`) is left out."""
    repo = Repository(Storage(repository))
    catalog = repo.active_catalog(now - plan.CHAIN_IDLE)
    chains: dict[str, list[plan.ChainFiles]] = {}
    for address in hosts:
        chains[address] = []
        for full in plan.open_chains(catalog, address, now, own_snapshot):
            held: set[str] = set()
            for group in [full, *catalog.increments_of(full)]:
                info = group.sets.get(address)
                if info is not None:
                    held.update(f.path for f in (info.manifest or repo.read_manifest(info.ref)).files)
            chains[address].append(plan.ChainFiles(full.db_target, frozenset(held)))
    return chains


@task(name="select-deletable-backups", task_run_name="select-deletable-{address}", **TASK_DEFAULTS)
def select_deletable(address: str, taken: Taken, chains: dict[str, list[plan.ChainFiles]]) -> list[SourceFile]:
    """Of the backups/ files this run holds, those every other open chain on the node holds too. A
    full (its snapshot's files, what it uploaded) holds only the files its snapshot links, or another
    open chain does: the rest (a dropped table's, never uploaded) stay for the next incremental."""
    logger = get_run_logger()
    files, snapshot_files = taken.backups, taken.files if taken.full else None
    node_chains = chains.get(address, [])
    relpaths = [f.relpath for f in files]
    if snapshot_files is not None:
        relpaths = plan.superseded(relpaths, [f.relpath for f in snapshot_files],
                                   {path for chain in node_chains for path in chain.held})
        if len(relpaths) < len(files):
            logger.info("%s: keeping %d backups/ file(s) that neither the new full nor a complete set holds "
                        "(the next incremental uploads them)", address, len(files) - len(relpaths))
    removable = set(plan.deletable(relpaths, node_chains))
    if len(removable) < len(relpaths):
        logger.info("%s: keeping %d backups/ file(s) that another open chain has not taken yet",
                    address, len(relpaths) - len(removable))
    return [f for f in files if f.relpath in removable]
