"""NodeFetch with its agent run here (not over SSH) against moto's S3 server: the node's share is
staged verified, a rerun fetches only what is missing or wrong, a corrupt object is never placed;
client-side encrypted files are decrypted on the node (decrypt_on_nodes), or the node says it cannot."""
from __future__ import annotations

import base64
import hashlib
import os
import sys
from types import SimpleNamespace

import pytest
from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from dmf.blocks import S3Repository
from dmf.core.errors import DmfError
from dmf.core.manifest import PlainFile
from dmf.core.node_restore import NodeFile, Room
from dmf.encryption import encrypt_chunks, generate_key
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


def local_fetch(storage: Storage, staging, python: str = sys.executable, started: list | None = None,
                **callbacks) -> NodeFetch:
    """`started` collects each agent's argv."""
    def start(argv):
        if started is not None:
            started.append(argv)
        return LocalChannel(argv)
    remote = SimpleNamespace(host=SimpleNamespace(python=python, address="127.0.0.1"), start=start)
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


@pytest.fixture(scope="module")
def decrypting(storage):
    """The same bucket, under a repository with client-side encryption that lets the nodes decrypt."""
    return Storage(storage.repository.model_copy(update={
        "encryption": "client", "encryption_key": SecretStr(generate_key()), "decrypt_on_nodes": True}))


def sealed(storage: Storage, name: str, data: bytes, bound_to: str | None = None) -> NodeFile:
    """`data` stored encrypted, as a backup stores it (bound to its own object key unless `bound_to`)."""
    key = f"enc/{name}"
    body = b"".join(encrypt_chunks([data], storage.repository.client_key(), bound_to=bound_to or key))
    storage.s3.put_object(Bucket=storage.bucket, Key=key, Body=body)
    return NodeFile(key, f"snap/h/full/ks/t/{name}", len(body), hashlib.sha256(body).hexdigest(),
                    PlainFile(len(data), hashlib.sha256(data).hexdigest()))


def test_encrypted_files_are_staged_decrypted_and_the_key_travels_on_stdin_only(decrypting, tmp_path):
    staging = tmp_path / "staging"
    blobs = {"nb-1-big-Data.db": os.urandom(3 * MIB + 5), "nb-1-big-TOC.txt": b"", "nb-2-big-Data.db": b"row"}
    files = tuple(sealed(decrypting, name, data) for name, data in blobs.items())
    started: list = []
    room = local_fetch(decrypting, staging, started=started).preflight(files)
    assert isinstance(room, Room) and room.present == 0
    progress: list = []
    first = local_fetch(decrypting, staging, started=started, progress=progress.append).run(files)
    assert (first.fetched_files, first.fetched_bytes) == (3, sum(f.size for f in files))
    assert sum(progress) == sum(f.size for f in files)  # the bytes streamed from S3: ciphertext
    for name, data in blobs.items():
        assert (staging / "snap/h/full/ks/t" / name).read_bytes() == data
    assert not list(staging.rglob("*.part"))
    secret = base64.b64encode(decrypting.repository.client_key()).decode()
    assert len(started) == 2 and not any(secret in " ".join(argv) for argv in started)

    # A rerun finds the plaintext staged and verified against the manifest's plaintext record.
    assert local_fetch(decrypting, staging).preflight(files).present == sum(map(len, blobs.values()))
    again = local_fetch(decrypting, staging).run(files)
    assert (again.fetched_files, again.skipped_files, again.skipped_bytes) == (0, 3, sum(f.size for f in files))


def test_a_chunk_that_fails_authentication_leaves_nothing_staged(decrypting, tmp_path):
    # Three chunks, the last one altered after encryption (the manifest's checksums match what is
    # stored): the first two authenticate and are written before the third fails.
    staging = tmp_path / "staging"
    good = sealed(decrypting, "nb-1-big-Data.db", b"good")
    altered = sealed(decrypting, "nb-2-big-Data.db", os.urandom(2 * MIB + 9))
    body = bytearray(decrypting.s3.get_object(Bucket=decrypting.bucket, Key=altered.key)["Body"].read())
    body[-3] ^= 1
    decrypting.s3.put_object(Bucket=decrypting.bucket, Key=altered.key, Body=bytes(body))
    altered = NodeFile(altered.key, altered.path, len(body), hashlib.sha256(body).hexdigest(), altered.plain)
    # An object moved from another key, authentic where it was.
    moved = sealed(decrypting, "nb-3-big-Data.db", b"moved", bound_to="enc/elsewhere")
    with pytest.raises(RemoteError) as failed:
        local_fetch(decrypting, staging).run((good, altered, moved))
    assert str(failed.value) == (
        "127.0.0.1: node fetch failed: snap/h/full/ks/t/nb-2-big-Data.db: enc/nb-2-big-Data.db: authentication "
        "failed (corrupted, truncated, another encryption key, or copied from another object) (and 1 more)")
    assert (staging / good.path).read_bytes() == b"good"
    assert not (staging / altered.path).exists() and not (staging / moved.path).exists()
    assert not list(staging.rglob("*.part"))


def test_a_node_without_cryptography_says_so_and_fetches_plain_files_still(decrypting, storage, tmp_path):
    no_site = f"{sys.executable} -S"  # the agent's python without site-packages: no cryptography
    encrypted = sealed(decrypting, "nb-1-big-Data.db", b"secret rows")
    reason = local_fetch(decrypting, tmp_path, python=no_site).preflight((encrypted,))
    assert reason == "the node's python cannot decrypt: no cryptography package (No module named 'cryptography')"
    plain = stored(storage, "nb-9-big-Data.db", b"plain rows")
    assert isinstance(local_fetch(storage, tmp_path, python=no_site).preflight((plain,)), Room)
    assert local_fetch(storage, tmp_path, python=no_site).run((plain,)).fetched_files == 1


def test_the_key_is_never_sent_unless_the_repository_lets_the_nodes_decrypt(decrypting, tmp_path):
    encrypted = sealed(decrypting, "nb-1-big-Data.db", b"secret rows")
    kept = Storage(decrypting.repository.model_copy(update={"decrypt_on_nodes": False}))
    started: list = []
    with pytest.raises(DmfError, match="decrypt_on_nodes is off: the key stays on the worker"):
        local_fetch(kept, tmp_path, started=started).run((encrypted,))
    assert started == []
