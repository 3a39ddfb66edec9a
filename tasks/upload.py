"""Upload a host's files to its set, then seal the set with its manifest."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from prefect import get_run_logger, task
from prefect.futures import PrefectFuture
from prefect.runtime import task_run

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.client_encryption import Encrypted, sealed
from dmf.core.errors import PermanentError
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry, Manifest, unconfirmed
from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import NodeFacts
from dmf.encryption import DEFAULT_CHUNK, SCHEME, key_id, mac_key
from dmf.node_upload import EarlyAgent
from dmf.reporting import TransferProgress
from dmf.repository import Repository
from dmf.storage import Storage
from dmf.transfer import upload_files

from dmf.tasks.common import RETRY, TASK_DEFAULTS


@dataclass(frozen=True)
class Uploaded:
    entries: list[FileEntry]
    started: float   # time.time() bounds of the transfer, for the run's throughput
    finished: float


class NothingToUpload(PermanentError):
    """The host's step before the upload failed (the flow names its cause); a retry would wait on it again."""


@task(name="upload-set", task_run_name="upload-{set_ref.node}", **TASK_DEFAULTS, **RETRY)
def upload_set(cluster: CassandraCluster, repository: S3Repository, set_ref: SetRef, taken: PrefectFuture) -> Uploaded:
    """Streams every file node → S3, verified; a retry keeps what the failed attempt verified. Starts
    beside the step that finds the files (`taken`, its future, passed quoted): the node's agent
    starts while the snapshot or flush runs, then the files come."""
    storage = Storage(repository)
    host = cluster.host(set_ref.node)
    early = EarlyAgent(cluster, host, storage, set_ref) if repository.node_upload_refusal() is None else None
    try:
        try:
            files = taken.result().files
        except Exception as exc:  # noqa: BLE001 — the flow reports that step's own failure
            raise NothingToUpload(f"{set_ref.node}: no files to upload: {exc}") from None
        progress = TransferProgress(f"upload {set_ref.node}", sum(f.size for f in files))
        started = time.time()
        entries = upload_files(cluster, host, storage, set_ref, files, resume=task_run.run_count > 1,
                               progress=progress, logger=get_run_logger(), early=early)
    finally:
        if early is not None:
            early.close()
    finished = time.time()
    get_run_logger().info("%s: %d files, %.1f MiB uploaded and verified under %s in %.1fs", set_ref.node,
                          len(entries), sum(e.size for e in entries) / 2**20, set_ref.prefix, finished - started)
    return Uploaded(entries, started, finished)


@task(name="seal-set", task_run_name="seal-{set_ref.node}", **TASK_DEFAULTS, **RETRY)
def seal_set(repository: S3Repository, set_ref: SetRef, uploaded: Uploaded, facts: NodeFacts,
             db_target: str, hosts: tuple[str, ...], extra: dict | None = None,
             seal_by: datetime | None = None) -> Manifest:
    """Writes the manifest last: its presence is what makes the set complete. Only once every object
    is listed with its uploaded size, and (`seal_by`, for a run without the lease) not past the time
    after which a sweep may remove the set. Dies just before the PUT: the set stays manifest-less
    (never listed, swept past the grace); just after: the set is complete. Under client-side encryption
    the manifest carries its encryption record and MAC (dmf.core.client_encryption)."""
    extra = dict(extra or {})
    repo = Repository(Storage(repository))
    if problems := unconfirmed(uploaded.entries, repo.stored_sizes(set_ref)):
        raise PermanentError(f"{set_ref.prefix}: not sealed, {len(problems)} of {len(uploaded.entries)} object(s) "
                             f"not as uploaded (removed by a sweep?): {'; '.join(problems[:3])}")
    if seal_by is not None and utcnow() > seal_by:
        raise PermanentError(f"{set_ref.prefix}: not sealed, past {format_ts(seal_by)}, after which a sweep may "
                             "remove it (the upload took too long)")
    manifest = Manifest(set=set_ref, files=tuple(uploaded.entries), host=facts.address, host_id=facts.host_id,
                        created_at=utcnow(), db_target=db_target, hosts=hosts, tokens=facts.tokens,
                        cassandra_version=facts.cassandra_version, schema_version=facts.schema_version,
                        extra=extra)
    if (key := repository.client_key()) is not None:
        if any(entry.plain is None for entry in uploaded.entries):
            raise PermanentError(f"{set_ref.prefix}: files uploaded unencrypted while the repository says "
                                 "encryption: client (was the block changed during the run?)")
        manifest = sealed(manifest, Encrypted(SCHEME, key_id(key), DEFAULT_CHUNK), mac_key(key))
    repo.write_manifest(manifest)
    return manifest
