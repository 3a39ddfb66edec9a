"""Client-side encryption on the bed: a backup and its commit logs reach the bucket as ciphertext
only, a restore decrypts and authenticates them, and a tampered object or another key is refused.
Its own bucket, so the other tests' chains never meet an encrypted set."""
from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from dmf.blocks import S3Repository
from dmf.core.errors import DmfError
from dmf.cql import connect
from dmf.encryption import generate_key
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.flows.ship_commitlogs import ship_commitlogs

from .helpers import HOSTS, ids, insert_rows, new_table

pytestmark = pytest.mark.integration

BUCKET = "dmf-encrypted"
BLOCK = "encrypted-test"
MARKER = f"plaintext-marker-{uuid.uuid4().hex}"


def objects(s3) -> dict[str, bytes]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            found[o["Key"]] = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
    return found


@pytest.fixture(scope="module")
def encrypted(testbed, cluster_block, repository_block):
    s3 = repository_block.client()
    try:
        s3.create_bucket(Bucket=BUCKET)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    block = S3Repository(bucket=BUCKET, credentials=repository_block.credentials, encryption="client",
                         encryption_key=generate_key())
    block.save(BLOCK, overwrite=True)
    keyspace, table = new_table(cluster_block, prefix="enc")
    with connect(cluster_block) as session:  # uncompressed SSTables: the marker would be readable in them
        session.execute(f"ALTER TABLE {keyspace}.{table} WITH compression = {{'enabled': 'false'}}")
    insert_rows(cluster_block, keyspace, table, range(60), payload=MARKER)
    full = backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}", new=True, backup_schema=True,
                           repository_block=BLOCK)
    # Close the active segments so the marker's writes are archived, then ship them encrypted.
    with connect(cluster_block) as session:
        session.execute(f"CREATE TABLE {keyspace}.filler (id int PRIMARY KEY, payload text)")
    insert_rows(cluster_block, keyspace, "filler", range(2500), payload="f" * 1000)
    shipped = ship_commitlogs(hosts=HOSTS, repository_block=BLOCK)
    return dict(block=block, keyspace=keyspace, table=table, target=f"{keyspace}.{table}", full=full,
                shipped=shipped, s3=s3)


def test_the_bucket_holds_ciphertext_only(encrypted, cluster_block):
    host = cluster_block.host("127.0.0.1")
    on_node = [p for d in host.data_dirs for p in Path(d, encrypted["keyspace"]).rglob("*-Data.db")]
    assert any(MARKER.encode() in p.read_bytes() for p in on_node)  # the control: plaintext on the node
    stored = objects(encrypted["s3"])
    assert any("/commitlogs/" in k for k in stored) and sum(r["segments"] for r in encrypted["shipped"])
    assert not [k for k, body in stored.items() if MARKER.encode() in body]
    # Set manifests (a snapshot's own manifest.json, deeper down, is a data file: encrypted).
    manifests = [json.loads(body) for k, body in stored.items() if re.fullmatch(r"[^/]+/[^/]+/[^/]+/(\d+/)?manifest\.json", k)]
    assert manifests and all(m["extra"]["encryption"]["scheme"] == "aes-256-gcm-chunked-v1" for m in manifests)
    assert all("plain" in f for m in manifests for f in m["files"])


def test_the_restore_decrypts_and_authenticates(encrypted, cluster_block, tmp_path):
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {encrypted['target']}")
    restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=encrypted["target"], restore_schema=True,
                     get_commitlogs=True, keep_files=True, repository_block=BLOCK)
    assert ids(cluster_block, encrypted["target"]) == set(range(60))
    segments = list((tmp_path / "cassandra_commitlogs").glob("*/CommitLog-*.log"))
    assert any(MARKER.encode() in s.read_bytes() for s in segments)  # decrypted, then decompressed
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.gz"))


def test_another_key_is_refused_before_any_download(encrypted, tmp_path):
    other = S3Repository(bucket=BUCKET, credentials=encrypted["block"].credentials, encryption="client",
                         encryption_key=generate_key())
    other.save(BLOCK + "-other", overwrite=True)
    with pytest.raises(DmfError, match="was encrypted with key id [0-9a-f]{16}, the repository block's"):
        restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=encrypted["target"],
                         repository_block=BLOCK + "-other")
    assert not any(tmp_path.iterdir())


def test_a_tampered_object_fails_the_restore_naming_the_file(encrypted, tmp_path):
    # Whoever can write the bucket can rewrite the manifest's checksum too: authentication still fails.
    s3, stored = encrypted["s3"], objects(encrypted["s3"])
    prefix = f"{encrypted['full']['snapshot_ts']}/"
    data_key = next(k for k in stored if k.startswith(prefix) and k.endswith("-Data.db") and "/127.0.0.1/" in k)
    manifest_key = data_key.split(f"/{encrypted['keyspace']}/")[0] + "/manifest.json"
    original, manifest = stored[data_key], stored[manifest_key]
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    rewritten = json.loads(manifest)
    relpath = data_key[len(manifest_key) - len("manifest.json"):]
    for entry in rewritten["files"]:
        if entry["path"] == relpath:
            entry["sha256"] = hashlib.sha256(tampered).hexdigest()
    s3.put_object(Bucket=BUCKET, Key=data_key, Body=bytes(tampered))
    s3.put_object(Bucket=BUCKET, Key=manifest_key, Body=json.dumps(rewritten).encode())
    try:
        with pytest.raises(DmfError) as failed:
            restore_snapshot(hosts="127.0.0.1", path=str(tmp_path), db_target=encrypted["target"],
                             repository_block=BLOCK)
    finally:
        s3.put_object(Bucket=BUCKET, Key=data_key, Body=original)
        s3.put_object(Bucket=BUCKET, Key=manifest_key, Body=manifest)
    message = str(failed.value)
    assert data_key in message and "authentication failed" in message and "\n" not in message
    placed = tmp_path / encrypted["full"]["snapshot_ts"] / "127.0.0.1" / "full" / encrypted["keyspace"]
    assert not list(placed.rglob(data_key.rsplit("/", 1)[1])) and not list(placed.rglob("*.part"))
