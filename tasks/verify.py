"""Reads of backup-verify (see dmf.verify): catalog, manifests, listings, the deep check."""
from __future__ import annotations

from prefect import get_run_logger, task

from dmf import verify
from dmf.blocks.s3_repository import S3Repository
from dmf.core.catalog import Catalog
from dmf.core.keys import SetRef
from dmf.core.manifest import Manifest
from dmf.core.verify import Expected, Finding
from dmf.reporting import TransferProgress
from dmf.repository import Repository
from dmf.storage import Storage

from dmf.tasks.common import RETRY, TASK_DEFAULTS


@task(name="read-catalog", **TASK_DEFAULTS, **RETRY)
def read_catalog(repository: S3Repository) -> Catalog:
    """The whole history, as `backup list` reads it: a damaged set's chain may reach past the window."""
    return Repository(Storage(repository)).listing_catalog()


@task(name="read-manifests", **TASK_DEFAULTS, **RETRY)
def read_manifests(repository: S3Repository, refs: list[SetRef]) -> tuple[list[Manifest], list[Finding]]:
    return verify.read_manifests(Repository(Storage(repository)), refs)


@task(name="check-listings", **TASK_DEFAULTS, **RETRY)
def check_listings(repository: S3Repository, manifests: list[Manifest]) -> tuple[list[Finding], list[Expected]]:
    findings, whole = verify.check_listings(Repository(Storage(repository)), manifests)
    get_run_logger().info("%d set(s) listed: %d of %d object(s) whole by size, %d finding(s)", len(manifests),
                          len(whole), sum(len(m.files) for m in manifests), len(findings))
    return findings, whole


@task(name="deep-check", **TASK_DEFAULTS, **RETRY)
def deep_check(repository: S3Repository, objects: list[Expected]) -> list[Finding]:
    total = sum(o.size for o in objects)
    findings = verify.deep_check(Storage(repository), objects, repository.max_concurrency,
                                 TransferProgress("verify sha256", total))
    get_run_logger().info("%d object(s) (%.1f MiB) re-read: %d SHA-256 or size mismatch(es)", len(objects),
                          total / 2**20, len(findings))
    return findings


@task(name="check-locks", **TASK_DEFAULTS, **RETRY)
def check_locks(repository: S3Repository, manifests: list[Manifest]) -> list[Finding]:
    """Under object_lock: objects locked for less than the retention policy needs."""
    findings = verify.check_locks(Repository(Storage(repository)), manifests, repository.lock_span())
    get_run_logger().info("locks of %d set(s) read: %d object(s) locked for less than the policy needs",
                          len(manifests), len(findings))
    return findings
