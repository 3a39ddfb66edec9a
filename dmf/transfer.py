"""Parallel, streamed, verified transfers between a node and the bucket.

By default the node uploads its files itself (dmf.node_upload). Where it cannot, or when the
repository says so, bytes go node → SSH channel → S3 part, never staged on the manager's disk:
files in parallel, each read once as one stream (hashed on the way: no second read on the node),
the parts of a large file uploaded in parallel on a pool shared by all files, whose slots bound
the parts held in memory. Each worker thread has its own SSH connection to the node, opened one
at a time (sshd's MaxStartups). The repository's max_upload_mib_s limits each host: its bytes read
over SSH (streamed or re-read to match a previous attempt's objects) share one token bucket, and
the agent on the node has its own for what it sends.

With client-side encryption (the repository's `encryption: client`) files always stream through
this process, which encrypts them on the way (dmf.encryption): the key never reaches a node, and
the agent needs no crypto library there. So do SSE-C uploads, unless the block lets nodes hold the
customer key (sse_c_key_on_nodes).
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

from dmf.blocks.cassandra_cluster import CassandraCluster, CassandraHost
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry, PlainFile
from dmf.encryption import encrypt_chunks, encrypted_size
from dmf.node import SourceFile
from dmf.node_upload import EarlyAgent, NodeUpload
from dmf.ssh import RemoteHost
from dmf.storage import PartPool, Storage
from dmf.throttle import TokenBucket, bucket_for, throttled

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


class ConnectionPool:
    """One SSH connection per thread, closed together."""

    def __init__(self, cluster: CassandraCluster, host: CassandraHost):
        self.cluster, self.host = cluster, host
        self._local = threading.local()
        self._all: list[RemoteHost] = []
        self._lock = threading.Lock()

    def get(self) -> RemoteHost:
        remote = getattr(self._local, "remote", None)
        if remote is None:
            with self._lock:
                remote = RemoteHost(self.cluster, self.host).connect()
                self._all.append(remote)
            self._local.remote = remote
        return remote

    def close(self) -> None:
        with self._lock:
            for remote in self._all:
                remote.close()
            self._all.clear()


def upload_files(cluster: CassandraCluster, host: CassandraHost, storage: Storage, set_ref: SetRef,
                 files: list[SourceFile], *, resume: bool, progress: Progress | None = None,
                 logger: logging.Logger | logging.LoggerAdapter = log, early: EarlyAgent | None = None
                 ) -> list[FileEntry]:
    """Uploads every file to `set_ref`; with `resume`, keeps objects a previous attempt verified.
    The node uploads them itself when the repository allows and the node can (dmf.node_upload),
    through the `early` agent when it started; otherwise they stream through this process."""
    for source in files:  # a name outside the layout fails the set before any byte moves, and for good
        set_ref.file_key(source.relpath)
    pool = ConnectionPool(cluster, host)
    bucket = bucket_for(storage.repository.max_upload_mib_s)
    encryption_key = storage.repository.client_key()

    def existing(key: str, source: SourceFile) -> FileEntry | None:
        # An encrypted object cannot be matched with the node's bytes without decrypting it: sent again.
        if not resume or encryption_key is not None:
            return None
        remote = pool.get()
        stored = storage.match_existing(key, source.size,
                                        lambda: throttled(remote.iter_file(source.path, source.size), bucket))
        if stored is not None and progress:
            progress(source.size)
        return None if stored is None else FileEntry(source.relpath, stored.size, stored.sha256)

    by_size = sorted(files, key=lambda f: -f.size)  # the largest first: the last to finish is a small one
    try:
        refusal = storage.repository.node_upload_refusal()
        if refusal is not None and storage.repository.upload_from_nodes:
            logger.info("%s: %s; files stream through the manager", host.address, refusal)
        if refusal is None and files:
            node_upload = early.take(progress) if early is not None else None
            reason = None
            if node_upload is None:
                node_upload = NodeUpload(pool.get(), storage, set_ref, progress)
                reason = node_upload.start()
            if reason is None:
                return sorted(node_upload.run(by_size, existing), key=lambda e: e.path)
            logger.warning("%s: %s; files stream through the manager instead", host.address, reason)
        return _stream_through_manager(pool, storage, set_ref, by_size, existing, progress, bucket, encryption_key)
    finally:
        pool.close()


def _stream_through_manager(pool: ConnectionPool, storage: Storage, set_ref: SetRef, files: list[SourceFile],
                            existing: Callable[[str, SourceFile], FileEntry | None],
                            progress: Progress | None, bucket: TokenBucket | None,
                            encryption_key: bytes | None) -> list[FileEntry]:
    parts = PartPool(storage.repository.max_concurrency)

    def one(source: SourceFile) -> FileEntry:
        key = set_ref.file_key(source.relpath)
        if (entry := existing(key, source)) is not None:
            return entry
        chunks = throttled(pool.get().iter_file(source.path, source.size), bucket)
        if encryption_key is None:
            stored = storage.upload_stream(key, chunks, source.size, progress=progress, parts=parts)
            return FileEntry(source.relpath, stored.size, stored.sha256)
        plain = hashlib.sha256()
        stored = storage.upload_stream(key, encrypt_chunks(_hashed(chunks, plain), encryption_key, bound_to=key),
                                       encrypted_size(source.size), progress=progress, parts=parts)
        return FileEntry(source.relpath, stored.size, stored.sha256, PlainFile(source.size, plain.hexdigest()))

    try:
        with ThreadPoolExecutor(storage.repository.max_concurrency, thread_name_prefix=f"up-{set_ref.node}") as ex:
            futures = [ex.submit(one, f) for f in files]
            entries = [f.result() for f in as_completed(futures)]
    finally:
        parts.shutdown()
    return sorted(entries, key=lambda e: e.path)


def _hashed(chunks: Iterable[bytes], digest) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
