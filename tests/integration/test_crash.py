"""kill -9 of a backup mid-upload, then the next run: what the crash left is swept, and the backup
that follows is complete and restores exactly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dmf.core.sweep import leftover_snapshot_tags
from dmf.cql import connect
from dmf.flows.backup_cleanup import backup_cleanup
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.node import Node
from dmf.ssh import RemoteHost

from .helpers import HOSTS
from .test_backup import write_large_rows

pytestmark = pytest.mark.integration


def dmf_snapshots(cluster_block) -> dict[str, list[str]]:
    found = {}
    for host in cluster_block.hosts:
        with RemoteHost(cluster_block, host) as remote:
            found[host.address] = leftover_snapshot_tags(Node(remote).snapshot_dirs())
    return found


def open_uploads(repository_block, keyspace: str) -> list[dict]:
    uploads = repository_block.client().list_multipart_uploads(Bucket=repository_block.bucket).get("Uploads", [])
    return [u for u in uploads if f"/{keyspace}/" in u["Key"]]


# The real CLI, held just before it would complete its first multipart upload, so that the kill lands
# at a known point: parts uploaded, the upload open, the snapshot on the nodes, no manifest.
HELD_CLI = """
import sys, time
from dmf.storage import Storage
Storage.complete_multipart = lambda *args, **kwargs: time.sleep(3600)
from dmf.cli import main
main()
"""


def kill_after_first_part(args: list[str], repository_block, keyspace: str, timeout: float = 300) -> None:
    run = subprocess.Popen([sys.executable, "-c", HELD_CLI, *args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    s3 = repository_block.client()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and run.poll() is None:
            for upload in open_uploads(repository_block, keyspace):
                parts = s3.list_parts(Bucket=repository_block.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                if parts.get("Parts"):
                    return
            time.sleep(0.2)
        pytest.fail("the backup ended before any part was uploaded")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()


def test_sigkill_mid_upload_then_rerun_sweeps_and_completes(testbed, cluster_block, repository_block, tmp_path):
    keyspace, table = write_large_rows(cluster_block, "kill")
    target = f"{keyspace}.{table}"
    repository_block.model_copy(update={"part_size_mib": 5}).save("small-parts", overwrite=True)
    kill_after_first_part(["backup", "snapshot", HOSTS, "--db-target", target, "--repository-block", "small-parts"],
                          repository_block, keyspace)
    assert any(dmf_snapshots(cluster_block).values()), "the killed run's snapshot should still pin the nodes"
    assert open_uploads(repository_block, keyspace), "the killed run's multipart upload should still be open"

    # Run again at once, as an operator would: the dead run's leases (the Prefect slot's and the
    # bucket's, both the production TTL of 60 s) lapse within about a minute and a half of the kill, so
    # the rerun proceeds within its 120 s wait, then sweeps and backs up (grace 0: the crashed run's
    # objects count as stale at once).
    summary = backup_snapshot(hosts=HOSTS, db_target=target, incomplete_grace_minutes=0, lease_wait_seconds=120)
    assert summary["kind"] == "full"
    assert dmf_snapshots(cluster_block) == {h.address: [] for h in cluster_block.hosts}
    assert open_uploads(repository_block, keyspace) == []

    with connect(cluster_block) as session:
        expected = {r.id for r in session.execute(f"SELECT id FROM {target}")}
        session.execute(f"TRUNCATE {target}")
    restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=target)
    with connect(cluster_block) as session:
        assert {r.id for r in session.execute(f"SELECT id FROM {target}")} == expected == set(range(700))


def test_cleanup_removes_sets_without_manifest(testbed, cluster_block, repository_block):
    """`dmf backup cleanup` removes a manifest-less set past the grace period, and no complete set."""
    from dmf.core.keys import SetRef
    from dmf.core.timestamps import parse_ts
    from dmf.repository import Repository
    from dmf.storage import Storage
    storage = Storage(repository_block)
    orphan = SetRef.incremental(parse_ts("20200101000000"), "127.0.0.1", parse_ts("20200101010000"))
    storage.put_bytes(orphan.file_key(f"ks/t-{'0' * 32}/nb-1-big-Data.db"), b"half a backup")
    complete_before = [g for g in Repository(storage).catalog().all_groups() if g.complete]
    summary = backup_cleanup(grace_minutes=0)
    assert summary["removed_objects"] >= 1
    assert list(storage.list_objects(orphan.prefix)) == []
    assert [g for g in Repository(storage).catalog().all_groups() if g.complete] == complete_before
