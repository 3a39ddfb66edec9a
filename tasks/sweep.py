"""Bucket-side sweeps of what crashed runs left (see dmf.sweep)."""
from __future__ import annotations

from datetime import datetime, timedelta

from prefect import get_run_logger, task

from dmf import sweep
from dmf.blocks.s3_repository import S3Repository
from dmf.repository import Repository
from dmf.storage import Storage, StorageError

from dmf.tasks.common import RETRY, TASK_DEFAULTS


@task(name="abort-stale-uploads", **TASK_DEFAULTS)
def abort_stale_uploads(repository: S3Repository, now: datetime, grace_minutes: int) -> int | None:
    """Best effort, one attempt: None when the store cannot list open uploads. s3proxy's filesystem
    store answers 500 once a killed upload left a part without its metadata; retrying cost every
    backup run over a minute, and a bucket lifecycle rule (AbortIncompleteMultipartUpload) does
    this job anyway."""
    try:
        aborted = sweep.abort_stale_uploads(Storage(repository), now, timedelta(minutes=grace_minutes))
    except StorageError as exc:
        get_run_logger().warning("open multipart uploads not swept (%s); set the bucket's "
                                 "AbortIncompleteMultipartUpload lifecycle rule", exc)
        return None
    if aborted:
        get_run_logger().info("aborted %d multipart upload(s) left open over %d min by crashed runs",
                              aborted, grace_minutes)
    return aborted


@task(name="remove-manifestless-sets", **TASK_DEFAULTS, **RETRY)
def remove_sets_without_manifest(repository: S3Repository, nodes: list[str], before: datetime) -> int:
    """Sets of `nodes` (addresses and host IDs) older than `before` that never got their manifest."""
    repo = Repository(Storage(repository))
    removed = sweep.remove_manifestless_sets(repo, repo.catalog(end=before), set(nodes), before)
    if removed:
        get_run_logger().info("removed %d object(s) of sets without a manifest", removed)
    return removed
