"""Carrying out a purge plan (dmf.core.lifecycle) in the bucket, only while holding the cluster's lease:
each step checks it first, so a purge that lost its lease stops where a kill would (below).

Order, and what a purge killed at any point leaves:
  0. the catalog index and closed chain summary of every snapshot whose manifests it deletes (a
     listing trusts them without reading those manifests): killed here, the next listing rebuilds
     them from the manifests, which are all still there;
  1. manifests of increments, commit-log batches and failed runs' sets: killed here, some of them
     are manifest-less (never listed complete, never used) and their fulls still list complete;
  2. manifests of the fulls: killed here, the chains left have no complete full and are never used;
  3. every object of those sets: killed here, the rest are manifest-less sets, which the next
     purge (or cleanup) removes;
  4. the schema (and any index written meanwhile) of snapshots with no set left.
Nothing that lists as complete ever lacks an object, and a rerun plans what is left and finishes.

Under object_lock the plan leaves every set still locked (dmf.core.object_lock.hold_locked): a set's lock
is its manifest's, the object written last and so the latest-locked of the set.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from dmf.core.keys import SetKind, SetRef, catalog_key, closed_key, schema_key
from dmf.core.lifecycle import PurgePlan
from dmf.lease import check_lease
from dmf.repository import Repository


def lock_dates(repo: Repository, plan: PurgePlan) -> dict[SetRef, datetime | None]:
    """The retain-until date of each expired set's manifest (one HEAD per set, in parallel)."""
    refs = plan.sets
    with ThreadPoolExecutor(repo.parallel) as pool:
        return dict(zip(refs, pool.map(lambda ref: repo.storage.lock_of(ref.manifest_key), refs)))


def manifest_phases(plan: PurgePlan) -> list[list[str]]:
    """The manifest keys to delete, in two phases: everything but fulls, then the fulls."""
    fulls = [info.ref.manifest_key for g in plan.expired if g.kind is SetKind.SNAPSHOT for info in g.sets.values()]
    others = [info.ref.manifest_key for g in plan.expired if g.kind is not SetKind.SNAPSHOT
              for info in g.sets.values()] + [ref.manifest_key for ref in plan.abandoned]
    return [others, fulls]


def indexes_to_drop(plan: PurgePlan) -> list[str]:
    """The index objects of every snapshot whose manifests the plan deletes."""
    touched = {g.snapshot_ts for g in plan.expired} | {ref.snapshot_ts for ref in plan.abandoned}
    return [key for ts in sorted(touched) for key in (catalog_key(ts), closed_key(ts))]


def carry_out(repo: Repository, plan: PurgePlan) -> int:
    """Deletes what the plan names, in the order above; returns the number of data objects removed."""
    check_lease("purge's deletes")
    repo.storage.delete_keys(indexes_to_drop(plan))
    for phase in manifest_phases(plan):
        check_lease("purge's deletes of manifests")
        repo.storage.delete_keys(phase)  # S3 deletes a key that is not there (a set without manifest) quietly
    removed = 0
    for ref in plan.sets:
        check_lease(f"purge's delete of {ref.prefix}")
        removed += repo.delete_set(ref)
    check_lease("purge's deletes of emptied snapshots")
    repo.storage.delete_keys([key for ts in plan.emptied_snapshots
                              for key in (catalog_key(ts), closed_key(ts), schema_key(ts))])
    return removed
