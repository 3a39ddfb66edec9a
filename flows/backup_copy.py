"""backup-copy: bring every complete set of the repository to its copies (copy_to, or one named)
    per copy, under the cluster's lease in the copy's bucket (its purge and cleanup wait):
        copy-sets (plan: dmf.core.copies; data verified by SHA-256, schema, manifest last: dmf.copy)
Nothing is deleted anywhere; each copy keeps its own retention (`backup purge --repository-block COPY`)."""
from __future__ import annotations

from prefect import flow, get_run_logger

from dmf.blocks import DEFAULT_BLOCK, CassandraCluster, S3Repository
from dmf.copy import check_copyable
from dmf.core.copies import copy_targets
from dmf.core.errors import DmfError
from dmf.cql import cluster_name_of
from dmf.lease import bucket_lease, run_holder
from dmf.reporting import publish_summary
from dmf.storage import Storage
from dmf.tasks.copy import copy_sets


@flow(name="backup-copy")
def backup_copy(to: str | None = None, repository_block: str = DEFAULT_BLOCK, cluster_block: str = DEFAULT_BLOCK,
                lease_wait_seconds: int = 600) -> dict:
    """Copy every complete set of `repository_block` not yet in its copies (the block's copy_to, or only
    `to`), oldest first, each sealed there only once all of its objects are verified. Fails, after copying
    what it can, when a set could not be copied (the report names it)."""
    primary = S3Repository.load(repository_block)
    targets = copy_targets(primary.copy_to, to, repository_block)
    copies = {name: S3Repository.load(name) for name in targets}
    for name, copy in copies.items():
        check_copyable(primary, copy, name)
    cluster_name = cluster_name_of(CassandraCluster.load(cluster_block))
    results = []
    for name, copy in copies.items():
        with bucket_lease(Storage(copy), cluster_name, run_holder(), lease_wait_seconds):
            results.append(copy_sets(primary, copy, name))
    line = "; ".join(f"{r['copy']}: {len(r['sets'])} set(s), {r['bytes'] / 2**20:.1f} MiB copied ({r['mode']})"
                     + (f", {len(r['failed'])} not copied" if r["failed"] else "") for r in results)
    summary = {"copies": results}
    logger = get_run_logger()
    logger.info("%s", line)
    publish_summary("backup-copy", {r["copy"]: f"{len(r['sets'])} set(s) ({r['mode']}), failed: {r['failed']}"
                                    for r in results}, line)
    failed = [f for r in results for f in r["failed"]]
    if failed:
        raise DmfError(f"{len(failed)} set(s) not copied, the first {failed[0]}")
    return summary
