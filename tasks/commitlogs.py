"""Ship one host's archived commit-log segments: compress, upload, seal, then delete the local copies."""
from __future__ import annotations

import posixpath
from datetime import datetime, timezone

from prefect import get_run_logger, task

from dmf.blocks.cassandra_cluster import CassandraCluster
from dmf.blocks.s3_repository import S3Repository
from dmf.core.catalog import CLOCK_SKEW_ALLOWANCE, SEGMENTS_CLOSED_AT
from dmf.core.client_encryption import sort_authentic
from dmf.core.errors import PermanentError
from dmf.core.keys import SetKind, SetRef
from dmf.core.segments import (GZIP_SUFFIX, SEGMENT_NAME, SEGMENTS_COMPRESSED, SHIP_WITHIN, archiving_problem,
                               compressed_name, compressed_record, fitting, shipped_segments)
from dmf.core.sweep import seal_deadline
from dmf.core.timestamps import format_ts, utcnow
from dmf.cql import NodeFacts
from dmf.encryption import expected
from dmf.node import Node, SourceFile
from dmf.node_upload import EarlyAgent
from dmf.replay import PROPERTIES
from dmf.repository import Repository
from dmf.ssh import RemoteFile, RemoteHost
from dmf.storage import Storage
from dmf.transfer import upload_files
from dmf.tasks.common import RETRY, TASK_DEFAULTS
from dmf.tasks.upload import Uploaded, seal_set

def closed_at(segment: RemoteFile) -> datetime:
    """An archived segment's mtime: its last write, i.e. when Cassandra closed it."""
    return datetime.fromtimestamp(segment.mtime, timezone.utc)


def already_shipped(storage: Storage, host_id: str, archived: list[RemoteFile], logger) -> dict[str, int]:
    """Segment → size, of the archived ones already in a complete batch of this host (an earlier run
    sealed them, then stopped before deleting them). Such a batch was shipped after the oldest
    archived segment closed, so only batches since then are read, not the whole history. Under
    client-side encryption a batch counts only if it authenticates under the repository's key: a
    forged manifest must not get a node's segments deleted (they are shipped again instead)."""
    if not archived:
        return {}
    since = min(closed_at(f) for f in archived) - CLOCK_SKEW_ALLOWANCE
    catalog = Repository(storage).catalog(start=since, kinds={SetKind.COMMITLOG}, node=host_id)
    trusted, refused = sort_authentic([m for group in catalog.commitlogs if group.complete for m in group.manifests],
                                      expected(storage.repository.client_key()))
    for _, problem in refused:
        logger.warning("%s; its segments are not counted as shipped", problem)
    return {s.segment: s.size for m in trusted for s in shipped_segments(m)}


@task(name="ship-host-commitlogs", task_run_name="ship-commitlogs-{facts.address}", **TASK_DEFAULTS, **RETRY)
def ship_host_commitlogs(cluster: CassandraCluster, repository: S3Repository, facts: NodeFacts,
                         snapshot_ts: datetime) -> dict:
    host = cluster.host(facts.address)
    archive_dir = host.commitlog_archive_dir.rstrip("/")
    logger = get_run_logger()
    storage = Storage(repository)
    with RemoteHost(cluster, host) as remote:
        properties = posixpath.join(host.config_dir, PROPERTIES)
        if problem := archiving_problem(b"".join(remote.iter_file(properties)).decode()):
            raise PermanentError(f"{properties}: {problem}: Cassandra archives no commit-log "
                                 "segment, so none can be shipped (restore it from the registry backup)")
        listed = [f for f in remote.list_files(archive_dir) if "/" not in f.path]
        archived = [f for f in listed if SEGMENT_NAME.fullmatch(f.path)]
        shipped = already_shipped(storage, facts.host_id, archived, logger)
        done_before = [f for f in archived if shipped.get(f.path) == f.size]
        pending = sorted((f for f in archived if f not in done_before), key=lambda f: (f.mtime, f.path))
        # A compressed copy is derived and made again when needed: those of shipped segments, and of
        # segments already gone (a run died between its deletes), are removed with them.
        keep = {compressed_name(f.path) for f in pending}
        leftovers = [f.path for f in listed if f.path.endswith(GZIP_SUFFIX) and f.path not in keep
                     and SEGMENT_NAME.fullmatch(f.path[:-len(GZIP_SUFFIX)])]
        node = Node(remote)
        if done_before or leftovers:
            node.delete_files([f"{archive_dir}/{name}" for name in [f.path for f in done_before] + leftovers])
        if not pending:
            logger.info("%s: no new archived segment", facts.address)
            return {"host": facts.address, "host_id": facts.host_id, "segments": 0, "bytes": 0}
        taken = fitting([f.size for f in pending], repository.max_upload_mib_s)
        pending, later = pending[:taken], pending[taken:]
        if later:
            logger.info("%s: %d newer segment(s) left for the next run (more than max_upload_mib_s sends in %s)",
                        facts.address, len(later), SHIP_WITHIN)
        ref = SetRef.commitlog(snapshot_ts, facts.host_id, utcnow())
        # Close times let a restore skip segments whose writes the snapshot already holds.
        extra: dict = {SEGMENTS_CLOSED_AT: {f.path: format_ts(closed_at(f)) for f in pending}}
        segments = [f"{archive_dir}/{f.path}" for f in pending]
        # The node's agent starts while the segments are compressed.
        early = EarlyAgent(cluster, host, storage, ref) if repository.node_upload_refusal() is None else None
        try:
            if repository.commitlog_compression == "gzip":
                sha256s, sizes = node.compress_segments(segments)
                sources = [SourceFile(f"{archive_dir}/{compressed_name(f.path)}", compressed_name(f.path),
                                      sizes[f"{archive_dir}/{compressed_name(f.path)}"]) for f in pending]
                extra[SEGMENTS_COMPRESSED] = {compressed_name(f.path): compressed_record(
                    f.path, f.size, sha256s[f"{archive_dir}/{f.path}"]) for f in pending}
            else:
                sources = [SourceFile(path, f.path, f.size) for path, f in zip(segments, pending)]
            entries = upload_files(cluster, host, storage, ref, sources, resume=True, logger=logger, early=early)
        finally:
            if early is not None:
                early.close()
        # Shipping takes no lease: the seal re-checks every object (a sweep may have removed them) and
        # refuses past seal_deadline (after which one may). Refused, the task fails and the segments stay
        # for the next run to ship in a new batch; this one is left manifest-less, swept past the grace.
        seal_set.fn(repository, ref, Uploaded(entries, 0.0, 0.0), facts, "", (facts.address,), extra=extra,
                    seal_by=seal_deadline(ref.time))
        # Dies just before: the next run finds the batch complete and deletes the segments then;
        # just after some: the rest go on the next run (their .gz copies with them).
        node.delete_files(sorted(set(segments) | {s.path for s in sources}))
    total, stored = sum(f.size for f in pending), sum(e.size for e in entries)
    logger.info("%s: shipped %d segments (%.1f MiB, %.1f MiB stored) to %s", facts.address, len(entries),
                total / 2**20, stored / 2**20, ref.prefix)
    return {"host": facts.address, "host_id": facts.host_id, "segments": len(entries), "bytes": total,
            "stored_bytes": stored, "prefix": ref.prefix}
