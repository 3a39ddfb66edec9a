"""NodeFetch with its agent run here (not over SSH) against moto's S3 server: the node's share is
staged verified, a rerun fetches only what is missing or wrong, a corrupt object is never placed."""
from __future__ import annotations

import hashlib
import os
import sys
from types import SimpleNamespace

import pytest
from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from dmf.blocks import S3Repository
from dmf.core.node_restore import NodeFile, Room
from dmf.node_fetch import NodeFetch
from dmf.ssh import RemoteError
from dmf.storage import MIB, Storage

from .test_node_upload_s3 import LocalChannel


@pytest.fixture(scope="module")
def storage():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    block = S3Repository(bucket="node-fetch", max_concurrency=3, credentials=AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"), region_name="us-east-1",
        aws_client_parameters={"endpoint_url": f"http://{host}:{port}"}))
    storage = Storage(block)
    storage.s3.create_bucket(Bucket=block.bucket)
    yield storage
    server.stop()


def local_fetch(storage: Storage, staging, **callbacks) -> NodeFetch:
    remote = SimpleNamespace(host=SimpleNamespace(python=sys.executable, address="127.0.0.1"),
                             start=lambda argv: LocalChannel(argv))
    return NodeFetch(remote, storage, str(staging), backoff_s=0.01, **callbacks)


def stored(storage: Storage, name: str, data: bytes) -> NodeFile:
    storage.s3.put_object(Bucket=storage.bucket, Key=f"set/{name}", Body=data)
    return NodeFile(f"set/{name}", f"snap/h/full/ks/t/{name}", len(data), hashlib.sha256(data).hexdigest())


def test_a_share_is_staged_verified_and_a_rerun_fetches_only_what_is_not(storage, tmp_path):
    staging = tmp_path / "staging"
    blobs = {f"nb-{n}-big-Data.db": os.urandom(size) for n, size in enumerate([0, 1234, 3 * MIB + 5, 300])}
    files = tuple(stored(storage, name, data) for name, data in blobs.items())
    room = local_fetch(storage, staging).preflight(files)
    assert isinstance(room, Room) and room.present == 0 and room.free > 0

    first = local_fetch(storage, staging).run(files)
    assert (first.fetched_files, first.fetched_bytes, first.skipped_files) == (4, sum(map(len, blobs.values())), 0)
    assert first.agent_rss_kib > 0
    for name, data in blobs.items():
        assert (staging / "snap/h/full/ks/t" / name).read_bytes() == data
    assert not list(staging.rglob("*.part"))

    # A killed run leaves a .part and a file cut short; a rerun keeps the verified files.
    staged = staging / "snap/h/full/ks/t"
    (staged / "nb-2-big-Data.db").write_bytes(blobs["nb-2-big-Data.db"][:MIB])
    (staged / "nb-3-big-Data.db").unlink()
    (staged / "nb-3-big-Data.db.part").write_bytes(b"half")
    kept = (staged / "nb-1-big-Data.db").stat().st_ino
    assert local_fetch(storage, staging).preflight(files).present == 1234
    progress, skipped = [], []
    again = local_fetch(storage, staging, progress=progress.append, skipped=skipped.append).run(files)
    assert (again.fetched_files, again.skipped_files, again.skipped_bytes) == (2, 2, 1234)
    assert sorted(skipped) == [0, 1234] and sum(progress) == 3 * MIB + 5 + 300
    assert (staged / "nb-1-big-Data.db").stat().st_ino == kept
    for name, data in blobs.items():
        assert (staged / name).read_bytes() == data
    assert not list(staging.rglob("*.part"))


def test_an_object_unlike_its_manifest_is_never_placed(storage, tmp_path):
    staging = tmp_path / "staging"
    good = stored(storage, "nb-1-big-Data.db", b"good")
    liar = stored(storage, "nb-2-big-Data.db", b"stored")
    liar = NodeFile(liar.key, liar.path, liar.size, hashlib.sha256(b"manifest").hexdigest())
    with pytest.raises(RemoteError, match="node fetch failed: snap/h/full/ks/t/nb-2-big-Data.db: got 6 bytes"):
        local_fetch(storage, staging).run((good, liar))
    assert (staging / good.path).read_bytes() == b"good"
    assert not (staging / liar.path).exists() and not list(staging.rglob("*.part"))


def test_an_unreachable_endpoint_is_a_reason_not_an_error(storage, tmp_path):
    unreachable = Storage(storage.repository.model_copy(update={"node_endpoint_url": "http://127.0.0.1:1"}))
    reason = local_fetch(unreachable, tmp_path).preflight(())
    assert isinstance(reason, str) and reason.startswith("the node cannot reach S3 at 127.0.0.1:1")
