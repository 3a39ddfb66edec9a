"""Reads and deletes of backup-purge (see dmf.core.lifecycle for the plan, dmf.purge for the order)."""
from __future__ import annotations

from datetime import datetime, timedelta

from prefect import get_run_logger, task

from dmf import purge
from dmf.blocks.s3_repository import S3Repository
from dmf.core.lifecycle import PurgePlan, RetentionPolicy, purge_plan
from dmf.core.object_lock import hold_locked
from dmf.repository import Repository
from dmf.storage import Storage

from dmf.tasks.common import RETRY, TASK_DEFAULTS


@task(name="plan-purge", **TASK_DEFAULTS, **RETRY)
def plan_purge(repository: S3Repository, policy: RetentionPolicy, now: datetime, grace_minutes: int) -> PurgePlan:
    """The whole history, as `backup list` reads it (index verified against the keys), then the plan."""
    repo = Repository(Storage(repository))
    catalog = repo.listing_catalog()
    plan = purge_plan(catalog, policy, now, timedelta(minutes=grace_minutes), repo.snapshot_times())
    if repository.object_lock == "none":
        return plan
    return hold_locked(plan, purge.lock_dates(repo, plan), now)


@task(name="delete-expired-sets", **TASK_DEFAULTS, **RETRY)
def delete_expired_sets(repository: S3Repository, plan: PurgePlan) -> int:
    """Manifests first (increments and batches, then fulls), then data. A retry replays the same
    deletes: S3 deletes of keys already gone succeed."""
    removed = purge.carry_out(Repository(Storage(repository)), plan)
    get_run_logger().info("%d set(s) removed: %d data object(s), their manifests, %d emptied snapshot(s)",
                          len(plan.sets), removed, len(plan.emptied_snapshots))
    return removed
