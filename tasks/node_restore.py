"""The node path of a restore (--mode node, the default): each node fetches its own share from S3 and
imports it (NodePath) or, into another topology, each node of HOSTS fetches a share and streams it with
sstableloader, one JVM per table (NodeLoadPath); nodes that cannot (no python, S3 unreachable, no
`cryptography` to decrypt with) take the worker path (the worker downloads their share into PATH and
places it, as --mode import does, or streams it, as --mode sstableloader does). A key that must stay
on the worker keeps every node off this path: the plan chooses the worker path then (dmf.restore_plan)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import get_run_logger, task

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.errors import InputError
from dmf.core.node_restore import NodeShare, Room, disk_shortfalls, eta_seconds, worker_fetches
from dmf.core.timestamps import format_ts
from dmf.loader import stream_staged
from dmf.node_fetch import NodeFetch, import_staged, remove_staged
from dmf.reporting import TransferProgress
from dmf.restore_plan import RestorePlan, worker_tables
from dmf.ssh import RemoteHost
from dmf.storage import MIB, Storage
from dmf.tasks.common import RETRY, TASK_DEFAULTS
from dmf.tasks.restore import load_table_sstableloader, load_units_import

LOG_EVERY_S = 10.0


class NodeProgress:
    """A node's bytes fetched: the progress artifact (and CLI bar), and a log line with the ETA
    every LOG_EVERY_S, from the rate of the bytes fetched (those found staged take no time)."""

    def __init__(self, address: str, total: int):
        self.address, self.total = address, total
        self.done, self.started, self.logged = 0, time.monotonic(), time.monotonic()
        self.bar = TransferProgress(f"fetch on {address}", total)

    def skipped(self, nbytes: int) -> None:
        self.total -= nbytes
        self.bar(nbytes)

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        self.bar(nbytes)
        now = time.monotonic()
        if now - self.logged >= LOG_EVERY_S:
            self.logged = now
            eta = eta_seconds(self.done, self.total, now - self.started)
            get_run_logger().info("%s: %.1f of %.1f MiB fetched by the node, ETA %s", self.address,
                                  self.done / MIB, self.total / MIB, "?" if eta is None else f"{eta:.0f} s")


def _staging(cluster: CassandraCluster, address: str) -> str:
    return cluster.host(address).restore_staging_dir


def _preflight(cluster: CassandraCluster, storage: Storage, share: NodeShare) -> Room | str:
    with RemoteHost(cluster, cluster.host(share.host)) as remote:
        return NodeFetch(remote, storage, _staging(cluster, share.host)).preflight(share.files)


@task(name="node-preflight", **TASK_DEFAULTS)
def preflight_nodes(cluster: CassandraCluster, repository: S3Repository, shares: dict[str, NodeShare]
                    ) -> dict[str, str]:
    """Every node at once: whether it can fetch (else why: it takes the worker path) and, before any
    byte moves, whether it has room for what of its share is not staged yet."""
    storage = Storage(repository)
    with ThreadPoolExecutor(min(len(shares), 16) or 1) as pool:
        found = dict(zip(shares, pool.map(lambda s: _preflight(cluster, storage, s), shares.values())))
    rooms = {a: r for a, r in found.items() if isinstance(r, Room)}
    if problems := disk_shortfalls(rooms, shares):
        raise InputError(f"not enough room to stage the restore on the nodes: {'; '.join(problems)}")
    for address, room in sorted(rooms.items()):
        get_run_logger().info("%s: fetches its own %.1f MiB from S3 (%.1f MiB already staged, %.1f GiB free)",
                              address, shares[address].bytes / MIB, room.present / MIB, room.free / 2**30)
    return {a: r for a, r in found.items() if isinstance(r, str)}


@task(name="node-fetch", task_run_name="fetch-{address}", **TASK_DEFAULTS, **RETRY)
def fetch_on_node(cluster: CassandraCluster, repository: S3Repository, address: str, share: NodeShare) -> dict:
    """The node's share into its staging folder; a retry (or a rerun) skips what is already verified."""
    rate = repository.max_download_mib_s
    progress = NodeProgress(address, share.bytes)
    with RemoteHost(cluster, cluster.host(address)) as remote:
        fetched = NodeFetch(remote, Storage(repository), _staging(cluster, address), progress,
                            None if rate is None else rate * MIB, skipped=progress.skipped).run(share.files)
    get_run_logger().info("%s: %d file(s), %.1f MiB fetched and verified by the node; %d (%.1f MiB) already staged "
                          "and verified, skipped; agent peak RSS %.1f MiB", address, fetched.fetched_files,
                          fetched.fetched_bytes / MIB, fetched.skipped_files, fetched.skipped_bytes / MIB,
                          fetched.agent_rss_kib / 1024)
    return asdict(fetched)


@task(name="node-import", task_run_name="import-staged-{address}", **TASK_DEFAULTS, **RETRY)
def import_on_node(cluster: CassandraCluster, address: str, share: NodeShare) -> list[str]:
    with RemoteHost(cluster, cluster.host(address)) as remote:
        for unit in share.units:
            import_staged(remote, _staging(cluster, address), unit)
    return [u.label for u in share.units]


@task(name="node-sstableloader", task_run_name="sstableloader-on-{address}", **TASK_DEFAULTS, **RETRY)
def stream_on_node(cluster: CassandraCluster, address: str, hosts: tuple[str, ...], share: NodeShare) -> list[str]:
    """The node's share, one sstableloader per table, one table after another (the nodes in parallel)."""
    with RemoteHost(cluster, cluster.host(address)) as remote:
        for load in share.tables:
            stream_staged(remote, _staging(cluster, address), load, hosts)
    return [load.label for load in share.tables]


@task(name="remove-staged", task_run_name="remove-staged-{address}", **TASK_DEFAULTS)
def remove_staged_on_node(cluster: CassandraCluster, address: str, snapshot: str, keep_files: bool) -> None:
    with RemoteHost(cluster, cluster.host(address)) as remote:
        remove_staged(remote, _staging(cluster, address), snapshot, keep_files)


@dataclass
class NodePath:
    """The flow's handle on the node path: who fetches what, then fetch, load and clean up."""

    cluster: CassandraCluster
    repository: S3Repository
    root: Path
    snapshot: str
    shares: dict[str, NodeShare]       # every backup host's share
    fallbacks: dict[str, str]          # hosts on the worker path, and why
    worker_fetches: list
    fetched: dict[str, dict] = field(default_factory=dict)
    worker_path = "--mode import"  # what the fallback nodes' shares take, for the run log

    @classmethod
    def prepare(cls, cluster: CassandraCluster, repository: S3Repository, plan: RestorePlan) -> NodePath:
        """Checked before any byte moves (the plan checked that the ring owns the backup's tokens, and
        that no key the nodes may not hold is needed): who can fetch, each node's room."""
        shares, fetches = plan.node_fetches, plan.files.fetches
        fallbacks = preflight_nodes(cluster, repository, shares)
        for address, reason in sorted(fallbacks.items()):
            get_run_logger().warning("%s: %s; its %.1f MiB pass through the worker instead (%s)", address,
                                     reason, shares[address].bytes / MIB, cls.worker_path)
        return cls(cluster, repository, plan.root, format_ts(plan.chain.full.snapshot_ts), shares, fallbacks,
                   worker_fetches(fetches, [shares[a] for a in fallbacks], plan.root))

    @property
    def on_nodes(self) -> list[str]:
        return [a for a in self.shares if a not in self.fallbacks]

    def fetch(self) -> None:
        futures = {a: fetch_on_node.submit(self.cluster, self.repository, a, self.shares[a]) for a in self.on_nodes}
        self.fetched = {a: f.result() for a, f in futures.items()}

    def load(self, plan: RestorePlan) -> list[str]:
        """Every node at once: its staged share, or (fallback) the worker's download of it."""
        futures = [import_on_node.submit(self.cluster, a, self.shares[a]) for a in self.on_nodes]
        futures += [load_units_import.submit(self.cluster, a, [u for u in plan.files.units if u.host == a])
                    for a in sorted(self.fallbacks)]
        return [line for future in futures for line in future.result()]

    def clean_up(self, keep_files: bool) -> None:
        for address in self.on_nodes:
            remove_staged_on_node(self.cluster, address, self.snapshot, keep_files)

    def summary(self) -> dict:
        return {"nodes": self.fetched, "fallbacks": self.fallbacks,
                "skipped_bytes": sum(f["skipped_bytes"] for f in self.fetched.values()),
                "worker_bytes": sum(f.size for f in self.worker_fetches)}


class NodeLoadPath(NodePath):
    """--mode node into another topology: the nodes fetch their shares as on the node path, then each
    streams its own with sstableloader; the fallback nodes' shares are streamed from the worker."""

    worker_path = "sstableloader on the worker"

    def load(self, plan: RestorePlan) -> list[str]:
        hosts = plan.request.hosts
        on_nodes = [stream_on_node.submit(self.cluster, a, hosts, self.shares[a]) for a in self.on_nodes]
        on_worker = [load_table_sstableloader.submit(self.cluster, hosts, plan.root, load)
                     for load in worker_tables(plan.files.tables, self.worker_fetches)]
        return [line for future in on_nodes for line in future.result()] + [f.result() for f in on_worker]
