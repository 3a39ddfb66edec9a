"""The long-lived shipper's node loop (dmf.shipper.NodeShipper) with its agent run here, not over SSH,
against moto's S3 server: segments archived during the run are sealed once each and deleted; a CDC
segment's durable prefix is sealed, then superseded by the closed segment, and cdc_raw drained; a
successor of a run that died before its deletes deletes what is sealed without sending it again."""
from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from pydantic import SecretStr

import dmf.shipper
from dmf.blocks import CassandraCluster, S3Repository
from dmf.blocks.cassandra_cluster import CassandraHost
from dmf.core.catalog import SEGMENTS_CLOSED_AT
from dmf.core.keys import SetKind, heartbeat_key
from dmf.core.segments import shipped_segments
from dmf.core.shipper import SEGMENT_PREFIXES, Heartbeat
from dmf.core.timestamps import utcnow
from dmf.cql import NodeFacts
from dmf.lease import bucket_lease
from dmf.repository import Repository
from dmf.shipper import NodeShipper
from dmf.storage import Storage

from .test_node_upload_s3 import LocalChannel

HOST_ID = "4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b"
FACTS = NodeFacts("127.0.0.1", HOST_ID, ("0",), "5.0.4", "schema")
SNAPSHOT = datetime(2026, 1, 1, tzinfo=timezone.utc)


class LocalRemote:
    """The part of RemoteHost the shipper uses, on this machine."""

    def __init__(self, _cluster, host):
        self.host = host

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def iter_file(self, path, size=None):
        yield open(path, "rb").read()

    def start(self, argv):
        return LocalChannel(argv)


@pytest.fixture
def node(tmp_path, monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto's servers in one process share their buckets: a bucket of the test's own.
    block = S3Repository(bucket=f"ship-{uuid.uuid4().hex[:8]}", credentials=AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"), region_name="us-east-1",
        aws_client_parameters={"endpoint_url": f"http://{host}:{port}"}))
    Storage(block).s3.create_bucket(Bucket=block.bucket)
    dirs = {name: tmp_path / name for name in ("archive", "commitlog", "cdc_raw", "conf")}
    for d in dirs.values():
        d.mkdir()
    (dirs["conf"] / "commitlog_archiving.properties").write_text("archive_command=/bin/ln %path /x/%name\n")
    cluster = CassandraCluster(hosts=[CassandraHost(
        address="127.0.0.1", commitlog_dir=str(dirs["commitlog"]), commitlog_archive_dir=str(dirs["archive"]),
        cdc_raw_dir=str(dirs["cdc_raw"]), config_dir=str(dirs["conf"]), python=sys.executable)])
    monkeypatch.setattr(dmf.shipper, "RemoteHost", LocalRemote)
    try:
        yield block, cluster, dirs
    finally:
        server.stop()


def ship(block, cluster, seconds: float) -> dict:
    storage = Storage(block)
    with bucket_lease(storage, "Test Cluster commit-log shipper", "test", 5):
        return NodeShipper(cluster, block, FACTS, SNAPSHOT, "Test Cluster", "test", seal_every_s=0.5).run(
            utcnow() + timedelta(seconds=seconds))


def sealed(block) -> list:
    catalog = Repository(Storage(block)).catalog(kinds={SetKind.COMMITLOG})
    return [m for g in catalog.commitlogs if g.complete for m in g.manifests]


def test_segments_are_sealed_once_and_a_cdc_prefix_is_superseded_and_drained(node):
    block, cluster, dirs = node
    first = os.urandom(3000)
    (dirs["archive"] / "CommitLog-7-1.log").write_bytes(first)
    active = os.urandom(1000) * 8
    (dirs["cdc_raw"] / "CommitLog-7-2.log").write_bytes(active)
    (dirs["cdc_raw"] / "CommitLog-7-2_cdc.idx").write_text("4096")

    def cassandra() -> None:  # once its prefix is sealed, segment 2 fills, is archived and completed
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not any(SEGMENT_PREFIXES in m.extra for m in sealed(block)):
            time.sleep(0.1)
        (dirs["archive"] / "CommitLog-7-2.log").write_bytes(active)
        (dirs["cdc_raw"] / "CommitLog-7-2_cdc.idx").write_text("8000\nCOMPLETED\n")
    writer = threading.Thread(target=cassandra)
    writer.start()
    result = ship(block, cluster, 5)
    writer.join()

    batches = sealed(block)
    copies = [(s.segment, s.size) for m in batches for s in shipped_segments(m)]
    assert sorted(copies) == [("CommitLog-7-1.log", 3000), ("CommitLog-7-2.log", 4096), ("CommitLog-7-2.log", 8000)]
    prefix_batch, = [m for m in batches if SEGMENT_PREFIXES in m.extra]
    assert prefix_batch.extra[SEGMENT_PREFIXES] == {"CommitLog-7-2.log": 4096}
    assert list(dirs["archive"].iterdir()) == [] and list(dirs["cdc_raw"].iterdir()) == []
    assert result["segments"] == 3 and result["unsealed"] == 0
    beat = Heartbeat.from_json("", Storage(block).get_bytes(heartbeat_key("Test Cluster", HOST_ID)))
    newest = max(c for m in batches for c in m.extra[SEGMENTS_CLOSED_AT].values())
    assert beat.recovery_point is not None and beat.recovery_point.strftime("%Y%m%d%H%M%S") == newest


def test_a_successor_deletes_what_a_dead_run_sealed_and_ships_only_the_rest(node):
    block, cluster, dirs = node
    data = os.urandom(2000)
    (dirs["archive"] / "CommitLog-7-1.log").write_bytes(data)
    ship(block, cluster, 2.5)
    # The run died after its seal, before its deletes: the segment is back on the node, as it was.
    (dirs["archive"] / "CommitLog-7-1.log").write_bytes(data)
    (dirs["archive"] / "CommitLog-7-1.log.gz").write_bytes(b"half made")
    (dirs["archive"] / "CommitLog-7-3.log").write_bytes(os.urandom(500))
    # A CDC index reported with the first look must not hide the segments from the check against sealed batches.
    (dirs["cdc_raw"] / "CommitLog-7-9_cdc.idx").write_text("10\nCOMPLETED\n")
    second = ship(block, cluster, 2.5)
    names = [s.segment for m in sealed(block) for s in shipped_segments(m)]
    assert sorted(names) == ["CommitLog-7-1.log", "CommitLog-7-3.log"] and second["segments"] == 1
    assert list(dirs["archive"].iterdir()) == []
