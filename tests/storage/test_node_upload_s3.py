"""NodeUpload with its agent run here (not over SSH) against moto's S3 server: jobs are pulled, each
file's URLs made as the agent starts it, each living for what its part needs."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from dmf.blocks import S3Repository
from dmf.core.keys import SetRef
from dmf.node import SourceFile
from dmf.node_upload import NodeUpload, url_expiry_s
from dmf.storage import MIB, Storage


class LocalChannel:
    """The part of a paramiko channel NodeUpload uses, over a local process."""

    def __init__(self, argv: list[str]):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def settimeout(self, _: float | None) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def makefile(self, _: str):
        return self.process.stdout

    def shutdown_write(self) -> None:
        self.process.stdin.close()

    def recv_exit_status(self) -> int:
        return self.process.wait()

    def recv_stderr(self, size: int) -> bytes:
        return self.process.stderr.read(size)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_files_are_uploaded_through_urls_made_when_the_agent_asks(tmp_path):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        block = S3Repository(bucket="node-upload", part_size_mib=5, max_concurrency=2, credentials=AwsCredentials(
            aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"), region_name="us-east-1",
            aws_client_parameters={"endpoint_url": f"http://{host}:{port}"}))
        storage = Storage(block)
        storage.s3.create_bucket(Bucket=block.bucket)
        sizes = [0, 1234, 5 * MIB, 11 * MIB + 7, 300]
        files = []
        for n, size in enumerate(sizes):
            path = tmp_path / f"nb-{n}-big-Data.db"
            path.write_bytes(os.urandom(size))
            files.append(SourceFile(str(path), f"ks/t-0123456789abcdef0123456789abcdef/nb-{n}-big-Data.db", size))

        expiries: dict[str, list[int]] = {}
        presign_put, presign_part = storage.presign_put, storage.presign_part

        def record_put(key, expires_s, client=None, now=None):
            expiries.setdefault(key, []).append(expires_s)
            return presign_put(key, expires_s, client, now)

        def record_part(key, upload_id, number, expires_s, client=None):
            expiries.setdefault(key, []).append(expires_s)
            return presign_part(key, upload_id, number, expires_s, client)

        storage.presign_put, storage.presign_part = record_put, record_part
        remote = SimpleNamespace(host=SimpleNamespace(python=sys.executable, address="127.0.0.1"),
                                 start=lambda argv: LocalChannel(argv))
        set_ref = SetRef.snapshot(datetime(2024, 5, 1, tzinfo=timezone.utc), "127.0.0.1")
        upload = NodeUpload(remote, storage, set_ref)
        assert upload.start() is None
        result: list = []
        runner = threading.Thread(target=lambda: result.append(upload.run(files, lambda key, source: None)))
        runner.start()
        runner.join(timeout=60)
        assert not runner.is_alive(), "the upload hung"
        entries = {e.path: e for e in result[0]}
        for source in files:
            key = set_ref.file_key(source.relpath)
            data = open(source.path, "rb").read()
            assert entries[source.relpath].sha256 == hashlib.sha256(data).hexdigest()
            assert storage.get_bytes(key) == data
        big = set_ref.file_key(files[3].relpath)
        assert expiries[big] == [url_expiry_s(5 * MIB, 2), url_expiry_s(10 * MIB, 2), url_expiry_s(11 * MIB + 7, 2)]
        assert expiries[set_ref.file_key(files[0].relpath)] == [url_expiry_s(0, 2)]
    finally:
        server.stop()


def test_a_dead_agent_does_not_hang_the_upload(tmp_path):
    """The sender waits for the agent's requests: when the agent dies, it is released."""
    path = tmp_path / "nb-1-big-Data.db"
    path.write_bytes(b"x")
    storage = SimpleNamespace(repository=SimpleNamespace(max_concurrency=2, part_size_mib=5,
                                                         node_endpoint_url=None), s3=None,
                              presign_put=lambda key, expires_s, client: "http://127.0.0.1:1/x")
    remote = SimpleNamespace(host=SimpleNamespace(address="127.0.0.1"))
    upload = NodeUpload(remote, storage, SetRef.snapshot(datetime(2024, 5, 1, tzinfo=timezone.utc), "127.0.0.1"))
    upload._channel = LocalChannel([sys.executable, "-c", "import sys; sys.stdout.write('{\"next\": true}\\n')"])
    upload._lines = upload._channel.makefile("rb")
    errors: list = []

    def run() -> None:
        try:
            upload.run([SourceFile(str(path), "ks/t-0123456789abcdef0123456789abcdef/nb-1-big-Data.db", 1)] * 3,
                       lambda key, source: None)
        except Exception as exc:  # noqa: BLE001 — asserted below
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "the upload hung"
    assert errors and "node upload failed" in str(errors[0])
