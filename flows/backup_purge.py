"""backup-purge: remove what the retention policy no longer needs, never a retained restore point
    plan-purge (the whole history from the catalog index, verified against the keys; dmf.core.lifecycle)
    → (under the cluster's lease) delete-expired-sets (manifests first, fulls' last, then data)
                                  abort-stale-uploads (open multipart uploads past the grace)
A dry run plans and reports only: no lease, no delete."""
from __future__ import annotations

from prefect import flow, get_run_logger

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.core.lifecycle import PurgePlan, RetentionPolicy, damage_line
from dmf.core.object_lock import locked_line
from dmf.core.sweep import check_grace
from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import cluster_name_of
from dmf.lease import cluster_lease, run_holder
from dmf.reporting import publish_summary
from dmf.storage import Storage
from dmf.tasks.purge import delete_expired_sets, plan_purge
from dmf.tasks.sweep import abort_stale_uploads


def describe(plan: PurgePlan, policy: RetentionPolicy, dry_run: bool) -> dict:
    return {"policy": policy.describe(), "dry_run": dry_run, "bytes": plan.bytes, "removed": plan.counts(),
            "failed_run_sets": len(plan.abandoned),
            "retained": [{"snapshot_ts": format_ts(g.snapshot_ts), "db_target": g.db_target, "hosts": list(g.hosts),
                          "bytes": g.bytes} for g in plan.retained],
            "keep_commitlogs_from": format_ts(plan.keep_commitlogs_from) if plan.keep_commitlogs_from else None,
            "sets": [ref.prefix for ref in plan.sets],
            "damaged": [damage_line(g) for g in plan.damaged],
            "locked": [locked_line(g, until) for g, until in plan.locked]}


@flow(name="backup-purge")
def backup_purge(keep_fulls: int | None = None, keep_days: float | None = None, dry_run: bool = False,
                 grace_minutes: int = 1440, cluster_block: str = DEFAULT_BLOCK,
                 repository_block: str = DEFAULT_BLOCK, lease_wait_seconds: int = 600) -> dict:
    """Remove every set no retained restore point needs. Keeps the newest `keep_fulls` complete fulls of
    each target and host set and/or every restore point of the last `keep_days` days (default: the
    repository block's), each lineage's newest full always, and the commit logs shipped since the oldest
    full kept. Sets of failed runs and open multipart uploads go once older than `grace_minutes`."""
    check_grace(grace_minutes)
    repository = S3Repository.load(repository_block)
    policy = RetentionPolicy(keep_fulls if keep_fulls is not None else repository.keep_fulls,
                             keep_days if keep_days is not None else repository.keep_days)
    logger = get_run_logger()
    now = utcnow()
    if dry_run:
        plan = plan_purge(repository, policy, now, grace_minutes)
        summary = describe(plan, policy, dry_run)
    else:
        cluster_name = cluster_name_of(CassandraCluster.load(cluster_block))
        # Under the lease no backup run of the cluster is writing; shipping runs only add batches newer
        # than any the plan removes, and never seal one older than the grace floor (dmf.core.sweep).
        with cluster_lease(Storage(repository), cluster_name, run_holder(), lease_wait_seconds):
            plan = plan_purge(repository, policy, now, grace_minutes)
            removed = delete_expired_sets.submit(repository, plan)
            aborted = abort_stale_uploads.submit(repository, now, grace_minutes)
            summary = {**describe(plan, policy, dry_run), "objects": removed.result(),
                       "aborted_uploads": aborted.result()}
    counts = ", ".join(f"{n} {kind}" for kind, n in summary["removed"].items())
    line = (f"{'would remove' if dry_run else 'removed'} {counts} set group(s) and {len(plan.abandoned)} set(s) of "
            f"failed runs, {plan.bytes / 2**30:.2f} GiB; kept {len(plan.retained)} full(s): {policy.describe()}")
    logger.info("%s", line)
    for damage in summary["damaged"]:
        logger.warning("kept, not complete: %s", damage)
    for locked in summary["locked"]:
        logger.info("kept, object lock: %s", locked)
    publish_summary("backup-purge", summary, line)
    return summary
