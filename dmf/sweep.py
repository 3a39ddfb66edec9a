"""Sweeping what crashed runs left: dmf snapshots pinning disk on the nodes, multipart uploads
billed in the bucket, sets without a manifest. Only while holding the cluster's lease (no other dmf
run is live on the cluster then): each delete checks it first."""
from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from dmf.core.catalog import Catalog
from dmf.core.sweep import leftover_snapshot_tags, stale_uploads
from dmf.lease import check_lease
from dmf.node import Node
from dmf.repository import Repository
from dmf.storage import Storage

log = logging.getLogger(__name__)


def clear_leftover_snapshots(node: Node, keep: str | None = None) -> list[str]:
    """Clears every dmf snapshot on the node but `keep`. Dies midway: the rest are cleared next time;
    a snapshot only links live SSTables, so clearing one loses nothing."""
    tags = leftover_snapshot_tags(node.snapshot_dirs(), keep)
    for tag in tags:
        check_lease(f"clearsnapshot of leftover {tag}")
        node.remove_snapshot(tag)
    return tags


def abort_stale_uploads(storage: Storage, now: datetime, grace: timedelta) -> int:
    stale = stale_uploads(storage.open_uploads(), now, grace)
    for key, upload_id in stale:
        check_lease("abort of a stale multipart upload")
        storage.abort_multipart(key, upload_id)
    return len(stale)


def remove_manifestless_sets(repo: Repository, catalog: Catalog, nodes: Collection[str], before: datetime) -> int:
    """Objects of sets without a manifest (never complete, never used) on `nodes` (addresses or host
    IDs), older than `before`. Not those of a partial backup (another host sealed its set): the
    missing manifest may have been lost after the backup completed, and then these objects are that
    host's only copy; purge removes them with the backup when retention lets it go. Dies midway: the
    set stays manifest-less, and the next sweep goes on."""
    removed = 0
    for group in catalog.all_groups():
        if group.partial:
            continue
        for node, info in group.sets.items():
            if not info.complete and info.problem == "" and node in nodes and info.ref.time < before:
                check_lease(f"removal of manifest-less set {info.ref.prefix}")
                removed += repo.delete_set(info.ref)
    return removed
