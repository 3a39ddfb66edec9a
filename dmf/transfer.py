"""Parallel, streamed, verified transfers between a node and the bucket.

Bytes go node → SSH channel → S3 part, never staged on the manager's disk. Files go in parallel,
each read once as one stream (hashed on the way: no second read on the node); the parts of a
large file upload in parallel on a pool shared by all files, whose slots bound the parts held in
memory. Each worker thread has its own SSH connection to the node, opened one at a time (sshd's
MaxStartups).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from dmf.blocks.cassandra_cluster import CassandraCluster, CassandraHost
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry
from dmf.node import SourceFile
from dmf.ssh import RemoteHost
from dmf.storage import PartPool, Storage

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
                 files: list[SourceFile], *, resume: bool, progress: Progress | None = None) -> list[FileEntry]:
    """Uploads every file to `set_ref`; with `resume`, keeps objects a previous attempt verified."""
    pool = ConnectionPool(cluster, host)
    parts = PartPool(storage.repository.max_concurrency)

    def one(source: SourceFile) -> FileEntry:
        remote = pool.get()
        key = set_ref.file_key(source.relpath)
        stored = None
        if resume:
            stored = storage.match_existing(key, source.size, lambda: remote.iter_file(source.path, source.size))
            if stored is not None and progress:
                progress(source.size)
        if stored is None:
            stored = storage.upload_stream(key, remote.iter_file(source.path, source.size), source.size,
                                           progress=progress, parts=parts)
        return FileEntry(source.relpath, stored.size, stored.sha256)

    try:
        with ThreadPoolExecutor(storage.repository.max_concurrency, thread_name_prefix=f"up-{host.address}") as ex:
            futures = [ex.submit(one, f) for f in sorted(files, key=lambda f: -f.size)]
            entries = [f.result() for f in as_completed(futures)]
    finally:
        parts.shutdown()
        pool.close()
    return sorted(entries, key=lambda e: e.path)
