"""backup-cleanup: under the cluster's lease, sweep what crashed runs left
    per host:  clear-leftover-snapshots (every dmf-<ts> snapshot: none is live while the lease is held)
    bucket:    abort-stale-uploads (multipart uploads older than the grace)
               remove-manifestless-sets (the cluster's sets without a manifest, older than the grace)
Backups run the first two themselves; this flow is for a cluster that no backup runs on now."""
from __future__ import annotations

from prefect import flow, get_run_logger

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.core.sweep import check_grace
from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import connect, node_facts
from dmf.lease import cluster_lease, run_holder
from dmf.reporting import publish_summary
from dmf.storage import Storage
from dmf.tasks.snapshot import clear_leftover_snapshots
from dmf.tasks.sweep import abort_stale_uploads, remove_sets_without_manifest


@flow(name="backup-cleanup")
def backup_cleanup(cluster_block: str = DEFAULT_BLOCK, repository_block: str = DEFAULT_BLOCK,
                   grace_minutes: int = 1440, lease_wait_seconds: int = 600) -> dict:
    """Remove leftovers of crashed runs on every host of the cluster and in the bucket: dmf
    snapshots, and (older than `grace_minutes`, at least MIN_GRACE: a shipping run takes no lease) open
    multipart uploads and sets without a manifest."""
    grace = check_grace(grace_minutes)
    cluster = CassandraCluster.load(cluster_block)
    repository = S3Repository.load(repository_block)
    with connect(cluster) as session:
        facts = node_facts(session)
        cluster_name = session.cluster.metadata.cluster_name
    addresses = [h.address for h in cluster.hosts]
    nodes = [*addresses, *(facts[a].host_id for a in addresses if a in facts)]
    with cluster_lease(Storage(repository), cluster_name, run_holder(), lease_wait_seconds):
        now = utcnow()
        cleared = {a: clear_leftover_snapshots.submit(cluster, a) for a in addresses}
        aborted = abort_stale_uploads.submit(repository, now, grace_minutes)
        removed = remove_sets_without_manifest.submit(repository, nodes, now - grace)
        summary = {"time": format_ts(now), "cleared_snapshots": {a: f.result() for a, f in cleared.items()},
                   "aborted_uploads": aborted.result(), "removed_objects": removed.result()}
    get_run_logger().info("cleanup: %d snapshot(s) cleared, %d upload(s) aborted, %d object(s) of sets "
                          "without a manifest removed", sum(map(len, summary["cleared_snapshots"].values())),
                          summary["aborted_uploads"], summary["removed_objects"])
    publish_summary("backup-cleanup", summary, "leftovers of crashed runs removed")
    return summary
