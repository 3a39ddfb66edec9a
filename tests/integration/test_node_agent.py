"""The node upload agent on its own, against each S3 implementation (s3proxy, moto): what it reports for whole
files, empty files, files that changed, parts S3 refuses, and an endpoint it cannot reach."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmf import node_agent
from dmf.node_upload import BOOTSTRAP
from dmf.storage import MIB, Storage

pytestmark = pytest.mark.integration
PART = 5 * MIB


def run_agent(endpoint: tuple[str, int], jobs: list[dict], tls: bool = False) -> list[dict]:
    """Runs the agent here as it runs on a node: bootstrap in argv, its source and jobs on stdin."""
    script = Path(node_agent.__file__).read_bytes()
    header = {"endpoint": endpoint, "tls": tls, "concurrency": 4}
    stdin = b"%d\n" % len(script) + script + json.dumps(header).encode() + b"\n"
    stdin += b"".join(json.dumps(job).encode() + b"\n" for job in jobs) + b"\n"
    out = subprocess.run([sys.executable, "-c", BOOTSTRAP], input=stdin, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture()
def storage(any_s3):
    return Storage(any_s3)


def endpoint_of(storage: Storage) -> tuple[str, int]:
    from urllib.parse import urlsplit
    url = urlsplit(storage.s3.meta.endpoint_url)
    return url.hostname, url.port


def multipart_job(storage: Storage, key: str, path: Path, size: int) -> tuple[dict, str]:
    upload_id = storage.create_multipart(key)
    urls = [storage.presign_part(key, upload_id, n, 600) for n in range(1, math.ceil(size / PART) + 1)]
    return {"id": 0, "path": str(path), "size": size, "part_size": PART, "urls": urls}, upload_id


def test_multipart_and_empty_files_arrive_whole(storage, tmp_path):
    big, empty = tmp_path / "big", tmp_path / "empty"
    big.write_bytes(os.urandom(11 * MIB + 123))
    empty.write_bytes(b"")
    job, upload_id = multipart_job(storage, "agent-test/big", big, big.stat().st_size)
    empty_job = {"id": 1, "path": str(empty), "size": 0, "part_size": PART,
                 "urls": [storage.presign_put("agent-test/empty", 600)]}
    messages = run_agent(endpoint_of(storage), [job, empty_job])
    assert messages[0] == {"ready": True}
    results = {m["id"]: m for m in messages if "id" in m}
    assert sum(m["progress"] for m in messages if "progress" in m) == big.stat().st_size
    assert results[0]["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    md5s = [bytes.fromhex(m) for m in results[0]["md5s"]]
    assert len(md5s) == 3
    assert results[0]["etags"] == [m.hex() for m in md5s]
    storage.complete_multipart("agent-test/big", upload_id,
                               [{"PartNumber": n, "ETag": f'"{e}"'} for n, e in enumerate(results[0]["etags"], 1)],
                               md5s, big.stat().st_size, results[0]["sha256"])
    assert storage.get_bytes("agent-test/big") == big.read_bytes()
    storage.verify("agent-test/empty", None, results[1]["md5s"][0], 0, results[1]["sha256"])
    assert results[1]["sha256"] == hashlib.sha256(b"").hexdigest()


def test_changed_file_and_refused_part_are_errors_without_urls(storage, tmp_path):
    path = tmp_path / "grew"
    path.write_bytes(os.urandom(PART + 10))
    changed, upload_id = multipart_job(storage, "agent-test/grew", path, PART + 5)  # the file is larger now
    refused = {"id": 1, "path": str(path), "size": PART + 10, "part_size": PART, "urls": [
        storage.s3.generate_presigned_url("upload_part", ExpiresIn=600, Params={
            "Bucket": "dmf-no-such-bucket", "Key": "x", "UploadId": "u", "PartNumber": n}) for n in (1, 2)]}
    messages = run_agent(endpoint_of(storage), [changed, refused])
    errors = {m["id"]: m["error"] for m in messages if "error" in m}
    assert "expected" in errors[0] and "file changed" in errors[0]
    assert "HTTP 404 NoSuchBucket" in errors[1] and "X-Amz" not in errors[1] and "://" not in errors[1]
    storage.abort_multipart("agent-test/grew", upload_id)


def test_unreachable_endpoint_is_reported_before_any_job():
    messages = run_agent(("127.0.0.1", 1), [])
    assert list(messages[0]) == ["unreachable"] and len(messages) == 1


def test_endpoint_without_trusted_tls_is_unreachable(storage):
    """The bed's S3 speaks plain HTTP: a TLS handshake with it fails, as with an untrusted certificate."""
    messages = run_agent(endpoint_of(storage), [], tls=True)
    assert list(messages[0]) == ["unreachable"] and len(messages) == 1


def test_encrypted_uploads_send_the_headers_signed_into_their_urls(moto_repository, tmp_path):
    """s3proxy refuses server-side encryption (NotImplemented), so this runs on moto only."""
    storage = Storage(moto_repository.model_copy(update={"sse": "AES256"}))
    big, small = tmp_path / "big", tmp_path / "small"
    big.write_bytes(os.urandom(2 * PART + 1))
    small.write_bytes(b"x" * 100)
    job, upload_id = multipart_job(storage, "agent-sse/big", big, big.stat().st_size)
    job["headers"] = storage.repository.key_headers()
    small_job = {"id": 1, "path": str(small), "size": 100, "part_size": PART,
                 "urls": [storage.presign_put("agent-sse/small", 600)], "headers": storage.repository.write_headers()}
    results = {m["id"]: m for m in run_agent(endpoint_of(storage), [job, small_job]) if "id" in m}
    storage.complete_multipart("agent-sse/big", upload_id,
                               [{"PartNumber": n, "ETag": f'"{e}"'} for n, e in enumerate(results[0]["etags"], 1)],
                               [bytes.fromhex(m) for m in results[0]["md5s"]], big.stat().st_size,
                               results[0]["sha256"])
    for key, path in (("agent-sse/big", big), ("agent-sse/small", small)):
        assert storage.head(key)["ServerSideEncryption"] == "AES256"
        assert storage.get_bytes(key) == path.read_bytes()


def test_sse_c_uploads_stream_through_the_manager_so_no_node_sees_the_key(moto_repository, cluster_block,
                                                                           tmp_path, caplog):
    """With sse: SSE-C a node that could upload itself does not: its presigned requests would carry
    the bucket-wide customer key (issue 22.8). The file still arrives, encrypted under that key."""
    import base64
    import logging
    from datetime import datetime, timezone

    from pydantic import SecretStr

    from dmf.core.keys import SetKind, SetRef
    from dmf.node import SourceFile
    from dmf.transfer import upload_files

    key = os.urandom(32)
    repository = moto_repository.model_copy(update={"sse": "SSE-C",
                                                    "sse_customer_key": SecretStr(base64.b64encode(key).decode())})
    assert repository.upload_from_nodes
    data = tmp_path / "nb-1-big-Data.db"
    data.write_bytes(os.urandom(100_000))
    set_ref = SetRef(datetime(2025, 1, 1, 12, tzinfo=timezone.utc), "127.0.0.1", SetKind.SNAPSHOT)
    source = SourceFile(str(data), "ks/t-0123456789abcdef0123456789abcdef/nb-1-big-Data.db", 100_000)
    storage, sent = Storage(repository), []
    storage.s3.meta.events.register("before-sign.s3.PutObject", lambda request, **_: sent.append(
        request.headers.get("x-amz-server-side-encryption-customer-key")))
    with caplog.at_level(logging.INFO, logger="dmf.transfer"):
        [entry] = upload_files(cluster_block, cluster_block.hosts[0], storage, set_ref, [source], resume=False)
    assert entry.sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    assert "sse: SSE-C keeps the customer key on the manager" in caplog.text
    assert sent == [base64.b64encode(key).decode()]  # the manager's own PutObject, under the customer key
    assert storage.get_bytes(set_ref.file_key(source.relpath)) == data.read_bytes()
