"""Copies on the bed (and s3proxy's bucket refusing object_lock in one line): a chain backed up to a bucket of its own, copied to another s3proxy bucket (one
store: server-side) and to moto's server (another store: streamed); a purge of the primary leaves the
copies' sets alone; the primary bucket deleted, a restore from it names the copies in one line, and a
restore to a time from the moto copy brings back exactly the rows of then."""
from __future__ import annotations

import uuid

import pytest

from dmf.blocks import S3Repository
from dmf.core.errors import InputError
from dmf.flows.backup_copy import backup_copy
from dmf.flows.backup_purge import backup_purge
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.repository import Repository
from dmf.storage import Storage, StorageError

from .helpers import HOSTS, ids, insert_rows, new_table, tick

pytestmark = pytest.mark.integration


def saved(block: S3Repository, name: str, bucket: str, **update) -> str:
    """A new block of its own bucket (built afresh: a loaded block saved under another name rewrites it)."""
    fresh = block.model_copy(update={"bucket": bucket, **update})
    fresh.client().create_bucket(Bucket=bucket)
    S3Repository.model_validate(fresh.model_dump(mode="json", context={"include_secrets": True})).save(name)
    return name


def complete(block_name: str) -> set[str]:
    catalog = Repository(Storage(S3Repository.load(block_name))).listing_catalog()
    return {info.ref.prefix for g in catalog.all_groups() for info in g.sets.values() if info.complete}


def test_a_chain_copied_to_two_stores_survives_its_primary_and_a_purge_there(testbed, cluster_block, repository_block,
                                                                               moto_repository, tmp_path):
    with pytest.raises(InputError, match="^object_lock: governance refused for bucket .* object lock is not enabled"):
        repository_block.model_copy(update={"object_lock": "governance", "keep_days": 1}).refuse_unsupported_lock()
    tag = uuid.uuid4().hex[:8]
    here = saved(repository_block, f"copy-b-{tag}", f"dmf-copy-b-{tag}")
    there = saved(moto_repository, f"copy-m-{tag}", f"dmf-copy-m-{tag}")
    primary = saved(repository_block, f"copy-p-{tag}", f"dmf-copy-p-{tag}", copy_to=[here, there])
    keyspace, table = new_table(cluster_block, rows=0, prefix="cp")
    target = f"{keyspace}.{table}"
    insert_rows(cluster_block, keyspace, table, range(0, 40))
    first = backup_snapshot(hosts=HOSTS, db_target=target, backup_schema=True, repository_block=primary)
    insert_rows(cluster_block, keyspace, table, range(40, 60))
    backup_snapshot(hosts=HOSTS, db_target=target, repository_block=primary)
    between = tick()
    insert_rows(cluster_block, keyspace, table, range(60, 70))
    second = backup_snapshot(hosts=HOSTS, db_target=target, new=True, backup_schema=True, repository_block=primary)
    assert second["snapshot_ts"] != first["snapshot_ts"]

    report = backup_copy(repository_block=primary)
    modes = {r["copy"]: r["mode"] for r in report["copies"]}
    assert modes == {here: "server-side", there: "streamed"}
    held = complete(primary)
    assert complete(here) == complete(there) == held and len(held) == 3 * 3
    assert backup_copy(repository_block=primary)["copies"][0]["sets"] == []  # nothing left to copy

    # The primary's purge keeps one full; the copies, with no policy of their own, keep both chains.
    purged = backup_purge(keep_fulls=1, repository_block=primary)
    assert purged["removed"]["full"] == 1
    assert all(p.startswith(second["snapshot_ts"]) for p in complete(primary))
    assert complete(here) == complete(there) == held

    lost = S3Repository.load(primary)
    storage = Storage(lost)
    storage.delete_keys([o["Key"] for o in storage.list_objects("")])
    storage.s3.delete_bucket(Bucket=lost.bucket)
    with pytest.raises(StorageError) as refused:
        restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=target, time=between, repository_block=primary)
    assert str(refused.value).startswith(f"repository {primary!r} cannot be read (")
    assert f"copies that hold it: {here}, {there} (restore" in str(refused.value)
    assert not any(tmp_path.iterdir())

    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=target, time=between,
                               truncate_first=True, yes=True, repository_block=there)
    assert summary["snapshot_ts"] == first["snapshot_ts"] and len(summary["increments"]) == 1
    assert ids(cluster_block, target) == set(range(60))
