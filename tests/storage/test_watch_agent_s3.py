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


def test_the_agent_reports_cdc_indexes_stages_durable_prefixes_and_drains_cdc_raw(tmp_path):
    archive, cdc = tmp_path / "archive", tmp_path / "cdc_raw"
    archive.mkdir()
    cdc.mkdir()
    segment = os.urandom(1000) * 20
    (cdc / "CommitLog-7-5.log").write_bytes(segment)
    (cdc / "CommitLog-7-5_cdc.idx").write_text("4096")
    (archive / ".dmf-prefix-CommitLog-7-4.log.gz").write_bytes(b"staged by a run that died")
    storage = SimpleNamespace(repository=SimpleNamespace(max_upload_mib_s=None))
    remote = SimpleNamespace(host=SimpleNamespace(python=sys.executable, address="127.0.0.1"),
                             start=lambda argv: LocalChannel(argv))
    agent = WatchAgent(remote, storage, str(archive), compress=True, probe=False, cdc_dir=str(cdc))
    agent.start("http://127.0.0.1:1")
    try:
        seen = agent.call({"watch": 1})
        assert seen["segments"] == [] and not (archive / ".dmf-prefix-CommitLog-7-4.log.gz").exists()
        (entry,) = seen["cdc"]
        assert (entry["name"], entry["offset"], entry["completed"]) == ("CommitLog-7-5.log", 4096, False)
        staged = agent.call({"prefix": {"name": "CommitLog-7-5.log", "offset": 4096}})
        path = archive / staged["stored"]
        assert staged["stored"] == ".dmf-prefix-CommitLog-7-5.log.gz" and staged["size"] == 4096
        assert gzip.decompress(path.read_bytes()) == segment[:4096] and staged["stored_size"] == path.stat().st_size
        assert staged["sha256"] == hashlib.sha256(segment[:4096]).hexdigest()
        assert "error" in agent.call({"prefix": {"name": "CommitLog-7-5.log", "offset": len(segment) + 1}})
        assert agent.call({"watch": 0.2})["cdc"] == []  # unchanged: not reported again

        (cdc / "CommitLog-7-5_cdc.idx").write_text("8192\nCOMPLETED\n")
        (entry,) = agent.call({"watch": 1})["cdc"]
        assert (entry["offset"], entry["completed"]) == (8192, True)
        assert agent.call({"delete": [staged["stored"]]}) == {"deleted": 1}
        assert agent.call({"drain": ["CommitLog-7-5.log", "../CommitLog-7-5.log"]}) == {"drained": 1}
        assert list(cdc.iterdir()) == [] and list(archive.iterdir()) == []
    finally:
        agent.close()
