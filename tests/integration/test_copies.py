"""Copies on the bed (and s3proxy's bucket refusing object_lock in one line): a chain backed up to a bucket of its own, copied to another s3proxy bucket (one
store: server-side) and to moto's server (another store: streamed); a copy to the s3proxy bucket
killed (SIGKILL) with a set half there lists and verifies nothing complete, and its rerun finishes it
(deep verify: every object's SHA-256); a purge of the primary leaves the copies' sets alone; the
primary bucket deleted, a restore from it names the copies in one line, and a restore to a time from
the moto copy brings back exactly the rows of then."""
from __future__ import annotations

import uuid

import pytest

from dmf.blocks import S3Repository
from dmf.core.errors import InputError
from dmf.core.lease import SKEW_S
from dmf.flows.backup_copy import backup_copy
from dmf.flows.backup_list import backup_list
from dmf.flows.backup_purge import backup_purge
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.backup_verify import backup_verify
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.repository import Repository
from dmf.storage import Storage, StorageError

from .helpers import HOSTS, ids, insert_rows, keys_under, kill_when, new_table, tick

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


# The real CLI, held once two objects of its first set are copied (its other copies wait forever), so that
# the kill lands with a set half on the copy: some objects, no schema, no manifest.
HELD_COPY = """
import threading, time
from dmf.copy import Copier
let_through, real = threading.Semaphore(2), Copier._copy_object
def held(self, key, entry):
    if not let_through.acquire(blocking=False):
        time.sleep(3600)
    real(self, key, entry)
Copier._copy_object = held
from dmf.cli import main
main()
"""


SHORT_TTL_S = 3 * SKEW_S  # the shortest DMF_LEASE_TTL_SECONDS dmf takes


def kill_midway(primary: str, copy: str, snapshot_ts: str) -> list[str]:
    """`dmf backup copy --to COPY` killed (SIGKILL) once two objects of the set are there; what it left."""
    block, left = S3Repository.load(copy), []

    def two_are_there() -> bool:
        left[:] = keys_under(block, f"{snapshot_ts}/")
        return sum("/snapshots/" in key for key in left) >= 2
    kill_when(HELD_COPY, ["backup", "copy", "--to", copy, "--repository-block", primary], two_are_there,
              "two objects were copied", timeout=120, env={"DMF_LEASE_TTL_SECONDS": str(SHORT_TTL_S)})
    return left


def test_a_chain_copied_to_two_stores_survives_its_primary_and_a_purge_there(testbed, cluster_block, repository_block,
                                                                               moto_repository, tmp_path):
    with pytest.raises(InputError, match="^object_lock: governance refused for bucket .* object lock is not enabled"):
        repository_block.model_copy(update={"object_lock": "governance", "keep_days": 1}).refuse_unsupported_lock()
    tag = uuid.uuid4().hex[:8]
    here = saved(repository_block, f"copy-b-{tag}", f"dmf-copy-b-{tag}")
    there = saved(moto_repository, f"copy-m-{tag}", f"dmf-copy-m-{tag}")
    primary = saved(repository_block, f"copy-p-{tag}", f"dmf-copy-p-{tag}", copy_to=[there, here])
    keyspace, table = new_table(cluster_block, rows=0, prefix="cp")
    target = f"{keyspace}.{table}"
    insert_rows(cluster_block, keyspace, table, range(0, 40))
    first = backup_snapshot(hosts=HOSTS, db_target=target, backup_schema=True, repository_block=primary)

    # Killed with a set half copied: nothing listed or verified as complete on the copy. Its lease in the
    # copy's bucket (the shortest TTL, as an operator may set it) lapses TTL + 10 s after its last
    # renewal, while the next backups run; the rerun below waits the rest.
    left = kill_midway(primary, here, first["snapshot_ts"])
    # Data only (a table's own snapshot manifest.json is data): no set's manifest, no schema.
    assert left and all("/snapshots/" in key and not key.endswith("/snapshots/manifest.json") for key in left)
    assert [r for r in backup_list(repository_block=here) if r["complete"]] == []
    assert any(r["snapshot_ts"] == first["snapshot_ts"] for r in backup_list(repository_block=here))
    unsealed = backup_verify(repository_block=here)
    assert (unsealed["sets"], unsealed["objects"], unsealed["incomplete_sets"]) == (0, 0, 1) and unsealed["clean"]

    insert_rows(cluster_block, keyspace, table, range(40, 60))
    backup_snapshot(hosts=HOSTS, db_target=target, repository_block=primary)
    between = tick()
    insert_rows(cluster_block, keyspace, table, range(60, 70))
    second = backup_snapshot(hosts=HOSTS, db_target=target, new=True, backup_schema=True, repository_block=primary)
    assert second["snapshot_ts"] != first["snapshot_ts"]

    report = backup_copy(repository_block=primary)  # the rerun, for `here`
    modes = {r["copy"]: r["mode"] for r in report["copies"]}
    assert modes == {here: "server-side", there: "streamed"}
    cut = left[0].split("/snapshots/")[0] + "/snapshots/"
    assert cut in next(r["sets"] for r in report["copies"] if r["copy"] == here)
    held = complete(primary)
    assert complete(here) == complete(there) == held and len(held) == 3 * 3
    assert all(r["sets"] == [] for r in backup_copy(repository_block=primary)["copies"])  # nothing left to copy
    # Every object of the copy re-read against its manifest's SHA-256; the killed run's left none astray.
    deep = backup_verify(deep=True, repository_block=here)
    assert deep["clean"] and deep["problems"] == [] and deep["incomplete_sets"] == 0
    assert (deep["sets"], deep["hashed_objects"]) == (len(held), deep["objects"])

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
    assert f"copies that hold it: {there}, {here} (restore" in str(refused.value)  # in copy_to order
    assert not any(tmp_path.iterdir())

    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=target, time=between,
                               truncate_first=True, yes=True, repository_block=there)
    assert summary["snapshot_ts"] == first["snapshot_ts"] and len(summary["increments"]) == 1
    assert ids(cluster_block, target) == set(range(60))
