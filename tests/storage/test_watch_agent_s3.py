"""The shipper's watching agent run here (not over SSH) against moto's S3 server: it reports archived
segments compressed beside them, uploads through presigned URLs, and deletes only segments."""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
from types import SimpleNamespace

from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from dmf.blocks import S3Repository
from dmf.shipper import WatchAgent
from dmf.storage import Storage

from .test_node_upload_s3 import LocalChannel


def test_the_agent_reports_compresses_uploads_and_deletes_segments(tmp_path):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        block = S3Repository(bucket="watch", credentials=AwsCredentials(
            aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"), region_name="us-east-1",
            aws_client_parameters={"endpoint_url": f"http://{host}:{port}"}))
        storage = Storage(block)
        storage.s3.create_bucket(Bucket=block.bucket)
        segment = tmp_path / "CommitLog-7-1.log"
        data = os.urandom(1000) * 300
        segment.write_bytes(data)
        (tmp_path / "CommitLog-7-9.log.gz").write_bytes(b"left by a run that died between its deletes")
        (tmp_path / "notes.txt").write_text("not the agent's")
        remote = SimpleNamespace(host=SimpleNamespace(python=sys.executable, address="127.0.0.1"),
                                 start=lambda argv: LocalChannel(argv))
        agent = WatchAgent(remote, storage, str(tmp_path), compress=True, probe=True)
        agent.start(storage.s3.meta.endpoint_url)
        try:
            record, = agent.call({"watch": 2})["segments"]
            stored = (tmp_path / "CommitLog-7-1.log.gz").read_bytes()
            assert gzip.decompress(stored) == data and not (tmp_path / "CommitLog-7-9.log.gz").exists()
            assert record["name"] == "CommitLog-7-1.log" and record["size"] == len(data)
            assert record["stored"] == "CommitLog-7-1.log.gz" and record["stored_size"] == len(stored)
            assert record["sha256"] == hashlib.sha256(data).hexdigest()
            assert agent.call({"watch": 0.3})["segments"] == []  # reported once

            url = storage.presign_put("x/CommitLog-7-1.log.gz", 600)
            answer = agent.call({"upload": {"path": str(tmp_path / record["stored"]), "size": len(stored),
                                            "part_size": 8 * 2**20, "urls": [url], "headers": {}}})
            assert answer["sha256"] == hashlib.sha256(stored).hexdigest()
            assert answer["etags"] == [hashlib.md5(stored).hexdigest()] == answer["md5s"]
            assert storage.get_bytes("x/CommitLog-7-1.log.gz") == stored
            failed = agent.call({"upload": {"path": str(tmp_path / "gone.log"), "size": 1, "part_size": 8,
                                            "urls": [url], "headers": {}}})
            assert "error" in failed

            assert agent.call({"delete": ["notes.txt", "../CommitLog-7-1.log"]}) == {"deleted": 0}
            assert agent.call({"delete": ["CommitLog-7-1.log", "CommitLog-7-1.log.gz"]}) == {"deleted": 2}
            assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
        finally:
            agent.close()
    finally:
        server.stop()
