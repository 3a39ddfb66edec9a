"""A repository's lifecycle on the three-node bed: chains end at `full_every`, and a purge keeps every
retained restore point exact while the expired chain goes whole."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dmf.core.errors import InputError
from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.testbed import prefect_server

from tests.integration.helpers import HOSTS, ids, insert_rows, keys_under, new_table

pytestmark = pytest.mark.integration
BLOCK = "lifecycle"


@pytest.fixture
def lifecycle_repository(repository_block):
    """Its own bucket: a purge must not touch what other tests backed up."""
    block = repository_block.model_copy(update={"bucket": "dmf-lifecycle", "full_every": "1 increment",
                                                "keep_fulls": 1})
    s3 = block.client()
    if "dmf-lifecycle" in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        keys = keys_under(block, "")
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket="dmf-lifecycle", Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
    else:
        s3.create_bucket(Bucket="dmf-lifecycle")
    block.save(BLOCK, overwrite=True)
    return block


def dmf(testbed, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmf.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)})


def restore_at(cluster_block, tmp_path, table: str, time: str) -> set[int]:
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {table}")
    restore_snapshot(hosts=HOSTS, path=str(tmp_path / time), db_target=table, restore_schema=True, time=time,
                     repository_block=BLOCK)
    return ids(cluster_block, table)


def test_chains_end_at_full_every_and_a_purge_keeps_every_retained_restore_point(
        testbed, cluster_block, lifecycle_repository, tmp_path):
    keyspace, table = new_table(cluster_block, rows=100, prefix="life")
    target = f"{keyspace}.{table}"
    runs = []
    for batch in range(4):  # full, incremental, full (the chain holds 1 increment), incremental
        if batch:
            insert_rows(cluster_block, keyspace, table, range(batch * 100, batch * 100 + 100))
        runs.append(backup_snapshot(hosts=HOSTS, db_target=target, repository_block=BLOCK))
    assert [r["kind"] for r in runs] == ["full", "incremental", "full", "incremental"]
    assert "1 increments (full_every 1 increments)" in runs[2]["why_full"]
    old_chain, kept_chain = runs[0]["snapshot_ts"], runs[2]["snapshot_ts"]
    assert runs[3]["snapshot_ts"] == kept_chain

    dry = dmf(testbed, "backup", "purge", "--dry-run", "--json", "--repository-block", BLOCK)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["removed"] == {"full": 1, "incremental": 1, "commitlog": 0} and report["bytes"] > 0
    assert [r["snapshot_ts"] for r in report["retained"]] == [kept_chain]
    assert keys_under(lifecycle_repository, f"{old_chain}/")  # a dry run deletes nothing

    done = dmf(testbed, "backup", "purge", "--repository-block", BLOCK)
    assert done.returncode == 0, done.stderr
    assert "removed: 1 full(s), 1 increment(s)" in done.stdout
    assert keys_under(lifecycle_repository, f"{old_chain}/") == []
    assert keys_under(lifecycle_repository, f"{kept_chain}/")

    # Every retained restore point, exact: the kept full, and its increment.
    assert restore_at(cluster_block, tmp_path, target, runs[2]["set_ts"]) == set(range(300))
    assert restore_at(cluster_block, tmp_path, target, runs[3]["set_ts"]) == set(range(400))
    with pytest.raises(InputError, match="before the first complete snapshot"):
        restore_snapshot(hosts=HOSTS, path=str(tmp_path / "gone"), db_target=target, time=runs[1]["set_ts"],
                         repository_block=BLOCK)
    again = dmf(testbed, "backup", "purge", "--repository-block", BLOCK)
    assert "removed: 0 full(s), 0 increment(s), 0 commit-log batch(es), 0 set(s)" in again.stdout
