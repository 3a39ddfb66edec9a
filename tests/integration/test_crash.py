"""kill -9 of a backup mid-upload, then the next run: what the crash left is swept, and the backup
that follows is complete and restores exactly."""
from __future__ import annotations

from pathlib import Path

import pytest

from dmf.core.keys import SetKind, parse_key
from dmf.core.segments import SEGMENT_NAME, shipped_segments
from dmf.core.sweep import leftover_snapshot_tags
from dmf.cql import connect
from dmf.flows.backup_cleanup import backup_cleanup
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.flows.ship_commitlogs import ShippingFailed, ship_commitlogs
from dmf.node import Node
from dmf.repository import Repository
from dmf.ssh import RemoteHost
from dmf.storage import Storage

from .helpers import HOSTS, insert_rows, kill_when, new_table
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


# The real CLI, held at a known point: every file its node agents were handed is uploaded (a
# multipart upload's parts all stored), none sealed, and no further file handed out, so the kill
# lands with the uploads open, the snapshot on the nodes and no manifest, but no request in flight
# (s3proxy's filesystem store answers every later ListMultipartUploads of the bucket with 500 once
# a part upload is cut mid-body, which is s3proxy's defect, not what this test is about).
HELD_CLI = """
import sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import dmf.node_upload
from dmf.node_upload import NodeUpload
log, lock, held = open(sys.argv.pop(1), "a", buffering=1), threading.Lock(), []
open_file = NodeUpload._open

def handed_out_until_the_first_seal(self, upload):
    with lock:
        if not held:
            log.write("opened\\n")
            return open_file(self, upload)
    time.sleep(3600)

def held_seal(self, upload, *args):
    with lock:
        held.append(upload.key)
        log.write("held\\n")
    time.sleep(3600)

NodeUpload._open, NodeUpload._seal = handed_out_until_the_first_seal, held_seal
# Sealers enough for every file handed out, so that a held seal never keeps another from being held.
dmf.node_upload.ThreadPoolExecutor = lambda workers, **kwargs: ThreadPoolExecutor(256, **kwargs)
from dmf.cli import main
main()
"""


def kill_once_uploaded(args: list[str], repository_block, keyspace: str, log: Path) -> None:
    log.touch()

    def all_handed_out_are_held() -> bool:
        lines = log.read_text().split()
        return "held" in lines and lines.count("opened") == lines.count("held")
    kill_when(HELD_CLI, [str(log), *args], all_handed_out_are_held, "its uploaded files were all held")


def test_sigkill_mid_upload_then_rerun_sweeps_and_completes(testbed, cluster_block, repository_block, tmp_path):
    keyspace, table = write_large_rows(cluster_block, "kill")
    target = f"{keyspace}.{table}"
    repository_block.model_copy(update={"part_size_mib": 5}).save("small-parts", overwrite=True)
    kill_once_uploaded(["backup", "snapshot", HOSTS, "--db-target", target, "--repository-block", "small-parts"],
                       repository_block, keyspace, tmp_path / "held.log")
    assert any(dmf_snapshots(cluster_block).values()), "the killed run's snapshot should still pin the nodes"
    assert open_uploads(repository_block, keyspace), "the killed run's multipart upload should still be open"

    # Run again at once, as an operator would: the dead run's leases (the Prefect slot's and the
    # bucket's, both the production TTL of 60 s) lapse within about a minute and a half of the kill, so
    # the rerun proceeds within its 120 s wait, then sweeps and backs up: the dead run's snapshots go at
    # once (under the lease none is live), its open upload only past the grace (no shorter than two
    # hours: the bucket cannot tell it from a live run's).
    summary = backup_snapshot(hosts=HOSTS, db_target=target, lease_wait_seconds=120)
    assert summary["kind"] == "full"
    assert dmf_snapshots(cluster_block) == {h.address: [] for h in cluster_block.hosts}
    left = open_uploads(repository_block, keyspace)
    assert left, "the dead run's upload is younger than the grace floor: no sweep may abort it yet"
    for upload in left:
        Storage(repository_block).abort_multipart(upload["Key"], upload["UploadId"])

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
    storage = Storage(repository_block)
    orphan = SetRef.incremental(parse_ts("20200101000000"), "127.0.0.1", parse_ts("20200101010000"))
    storage.put_bytes(orphan.file_key(f"ks/t-{'0' * 32}/nb-1-big-Data.db"), b"half a backup")
    complete_before = [g for g in Repository(storage).catalog().all_groups() if g.complete]
    summary = backup_cleanup()
    assert summary["removed_objects"] >= 1
    assert list(storage.list_objects(orphan.prefix)) == []
    assert [g for g in Repository(storage).catalog().all_groups() if g.complete] == complete_before


def test_a_batch_swept_before_its_seal_is_not_sealed_and_its_segments_stay(testbed, cluster_block, repository_block,
                                                                          monkeypatch):
    """A sweep removes a live shipping batch's objects between its upload and its seal (shipping takes no
    lease): the batch is not sealed, the node keeps its segments, and the next run ships them."""
    keyspace, table = new_table(cluster_block)
    backup_snapshot(hosts="127.0.0.1", db_target=f"{keyspace}.{table}")
    insert_rows(cluster_block, keyspace, table, range(3000), payload="c" * 1000)  # closes segments
    swept, original = [], Repository.stored_sizes

    def swept_just_before(self, ref):
        if ref.kind is SetKind.COMMITLOG and not swept:
            swept.append((ref, self.delete_set(ref)))
        return original(self, ref)
    monkeypatch.setattr(Repository, "stored_sizes", swept_just_before)
    with pytest.raises(ShippingFailed, match="not sealed"):
        ship_commitlogs(hosts="127.0.0.1")
    monkeypatch.undo()
    (ref, removed), = swept
    assert removed >= 1 and Repository(Storage(repository_block)).read_manifest(ref) is None
    host = cluster_block.host("127.0.0.1")
    with RemoteHost(cluster_block, host) as remote:
        kept = {f.path for f in remote.list_files(host.commitlog_archive_dir) if SEGMENT_NAME.fullmatch(f.path)}
    assert kept, "the segments of the batch that was not sealed stay on the node"
    result, = ship_commitlogs(hosts="127.0.0.1")
    batch = Repository(Storage(repository_block)).read_manifest(parse_key(result["prefix"] + "manifest.json").set)
    assert kept <= {s.segment for s in shipped_segments(batch)}
