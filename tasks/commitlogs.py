"""Ship one host's archived commit-log segments: upload, seal, then delete the local copies."""
from __future__ import annotations

import re

from prefect import get_run_logger, task

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.keys import SetRef
from dmf.core.timestamps import utcnow
from dmf.cql import NodeFacts
from dmf.node import Node, SourceFile
from dmf.ssh import RemoteHost
from dmf.storage import Storage
from dmf.transfer import upload_files
from dmf.tasks.common import RETRY, TASK_DEFAULTS
from dmf.tasks.upload import Uploaded, seal_set

SEGMENT = re.compile(r"CommitLog-\d+-\d+\.log")


@task(name="ship-host-commitlogs", task_run_name="ship-commitlogs-{facts.address}", **TASK_DEFAULTS, **RETRY)
def ship_host_commitlogs(cluster: CassandraCluster, repository: S3Repository, facts: NodeFacts,
                         snapshot_ts, shipped: dict[str, int]) -> dict:
    """`shipped`: segment name → size already in complete batches of this host_id (never re-sent)."""
    host = cluster.host(facts.address)
    logger = get_run_logger()
    with RemoteHost(cluster, host) as remote:
        archived = [f for f in remote.list_files(host.commitlog_archive_dir)
                    if "/" not in f.path and SEGMENT.fullmatch(f.path)]
        done_before = [f for f in archived if shipped.get(f.path) == f.size]
        pending = [SourceFile(f"{host.commitlog_archive_dir.rstrip('/')}/{f.path}", f.path, f.size)
                   for f in archived if f not in done_before]
        node = Node(remote)
        if done_before:
            # Shipped and sealed by an earlier run that stopped before deleting them.
            node.delete_files([f"{host.commitlog_archive_dir.rstrip('/')}/{f.path}" for f in done_before])
        if not pending:
            logger.info("%s: no new archived segment", facts.address)
            return {"host": facts.address, "host_id": facts.host_id, "segments": 0, "bytes": 0}
        ref = SetRef.commitlog(snapshot_ts, facts.host_id, utcnow())
        entries = upload_files(cluster, host, Storage(repository), ref, pending, resume=True)
        seal_set.fn(repository, ref, Uploaded(entries, 0.0, 0.0), facts, "", (facts.address,))
        node.delete_files([f.path for f in pending])
    total = sum(e.size for e in entries)
    logger.info("%s: shipped %d segments (%.1f MiB) to %s", facts.address, len(entries), total / 2**20, ref.prefix)
    return {"host": facts.address, "host_id": facts.host_id, "segments": len(entries), "bytes": total,
            "prefix": ref.prefix}
