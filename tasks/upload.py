"""Upload a host's files to its set, then seal the set with its manifest."""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import task_run

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.timestamps import utcnow
from dmf.cql import NodeFacts
from dmf.node import SourceFile
from dmf.repository import Repository
from dmf.storage import Storage
from dmf.transfer import upload_files

from dmf.tasks.common import RETRY, TASK_DEFAULTS


@task(name="upload-set", task_run_name="upload-{set_ref.node}", **TASK_DEFAULTS, **RETRY)
def upload_set(cluster: CassandraCluster, repository: S3Repository, set_ref: SetRef,
               files: list[SourceFile]) -> list[FileEntry]:
    """Streams every file node → S3, verified; a retry keeps what the failed attempt verified."""
    entries = upload_files(cluster, cluster.host(set_ref.node), Storage(repository), set_ref, files,
                           resume=task_run.run_count > 1)
    get_run_logger().info("%s: %d files, %.1f MiB uploaded and verified under %s", set_ref.node,
                          len(entries), sum(e.size for e in entries) / 2**20, set_ref.prefix)
    return entries


@task(name="seal-set", task_run_name="seal-{set_ref.node}", **TASK_DEFAULTS, **RETRY)
def seal_set(repository: S3Repository, set_ref: SetRef, entries: list[FileEntry], facts: NodeFacts,
             db_target: str, hosts: tuple[str, ...]) -> Manifest:
    """Writes the manifest last: its presence is what makes the set complete."""
    manifest = Manifest(set=set_ref, files=tuple(entries), host=facts.address, host_id=facts.host_id,
                        created_at=utcnow(), db_target=db_target, hosts=hosts, tokens=facts.tokens,
                        cassandra_version=facts.cassandra_version, schema_version=facts.schema_version)
    Repository(Storage(repository)).write_manifest(manifest)
    return manifest
