"""Client-side encryption on the bed: a backup and its commit logs reach the bucket as ciphertext
only, a restore decrypts and authenticates them (on the worker, or on the nodes with decrypt_on_nodes),
and another key or what an attacker with write access to the bucket can put there (a plaintext set,
an object swapped in under a rewritten manifest) is refused before any download. Its own bucket, so
the other tests' chains never meet an encrypted set; one backup run, every attack put back after its test."""
from __future__ import annotations

import hashlib
import json
import re
import uuid
import venv
from collections.abc import Iterator
from contextlib import contextmanager
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

from .helpers import HOSTS, close_active_segments, ids, insert_rows, new_table

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


@contextmanager
def planted(s3, objects_now: dict[str, bytes], replacements: dict[str, bytes]) -> Iterator[None]:
    """The bucket with `replacements` written over it, as an attacker would, then put back as it was."""
    try:
        for key, body in replacements.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        yield
    finally:
        for key in replacements:
            if key in objects_now:
                s3.put_object(Bucket=BUCKET, Key=key, Body=objects_now[key])
            else:
                s3.delete_object(Bucket=BUCKET, Key=key)


def host_full(encrypted, stored: dict[str, bytes], host: str) -> tuple[str, dict]:
    """The prefix of `host`'s full set of the backup, and its manifest."""
    prefix = f"{encrypted['full']['snapshot_ts']}/{host}/snapshots/"
    return prefix, json.loads(stored[prefix + "manifest.json"])


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
    close_active_segments(cluster_block, keyspace)  # the marker's writes archived, then shipped encrypted
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
    assert manifests and all(m["extra"]["encryption"]["scheme"] == "aes-256-gcm-chunked-v2" for m in manifests)
    assert all(re.fullmatch("[0-9a-f]{64}", m["extra"]["encryption"]["mac"]) for m in manifests)
    assert all("plain" in f for m in manifests for f in m["files"])
    schema = stored[f"{encrypted['full']['snapshot_ts']}/schema.cql"]  # the snapshot's, not a table's (encrypted)
    assert b"CREATE TABLE" in schema and schema.splitlines()[-1].startswith(b"-- dmf-mac: ")


def test_the_restore_decrypts_and_authenticates(encrypted, cluster_block, tmp_path):
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {encrypted['target']}")
    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=encrypted["target"], restore_schema=True,
                               get_commitlogs=True, keep_files=True, repository_block=BLOCK)
    assert ids(cluster_block, encrypted["target"]) == set(range(60))
    # The key never reaches a node: the default node path gives way to the worker's download (every
    # file through PATH), each host's files placed on it by nodetool import.
    assert summary["mode"] == "node" and summary["load_mode"] == "import" and "nodes" not in summary
    assert summary["downloaded_files"] == summary["files"] + summary["commitlog_segments"] > 0
    segments = list((tmp_path / "cassandra_commitlogs").glob("*/CommitLog-*.log"))
    assert any(MARKER.encode() in s.read_bytes() for s in segments)  # decrypted, then decompressed
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.gz"))


def test_with_decrypt_on_nodes_each_node_fetches_and_decrypts_its_own_share(encrypted, cluster_block, tmp_path):
    """...except 127.0.0.2, whose python (a bare venv) has no `cryptography`: that node takes the worker
    path, and says why."""
    block = S3Repository(bucket=BUCKET, credentials=encrypted["block"].credentials, encryption="client",
                         encryption_key=encrypted["block"].encryption_key, decrypt_on_nodes=True)
    block.save(BLOCK + "-nodes", overwrite=True)
    bare = tmp_path / "bare-python"
    venv.create(bare)  # the standard library only
    hosts = [h.model_copy(update={"python": str(bare / "bin" / "python")}) if h.address == "127.0.0.2" else h
             for h in cluster_block.hosts]
    cluster_block.model_copy(update={"hosts": hosts}).save("one-node-without-cryptography", overwrite=True)
    with connect(cluster_block) as session:
        session.execute(f"DROP TABLE {encrypted['target']}")
    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path / "restore"), db_target=encrypted["target"],
                               restore_schema=True, repository_block=BLOCK + "-nodes",
                               cluster_block="one-node-without-cryptography")
    assert ids(cluster_block, encrypted["target"]) == set(range(60))
    assert list(summary["fallbacks"]) == ["127.0.0.2"]
    assert "the node's python cannot decrypt: no cryptography package" in summary["fallbacks"]["127.0.0.2"]
    assert set(summary["nodes"]) == {"127.0.0.1", "127.0.0.3"}
    # The other nodes fetched (and decrypted) every file of theirs; through the worker only 127.0.0.2's
    # share and the other hosts' schema.cql (the worker reads each table's schema).
    fetched_on_nodes = sum(n["fetched_files"] for n in summary["nodes"].values())
    assert 0 < fetched_on_nodes < summary["files"]
    assert summary["downloaded_files"] == summary["files"] - fetched_on_nodes + len(summary["nodes"])


def test_another_key_is_refused_before_any_download(encrypted, tmp_path):
    other = S3Repository(bucket=BUCKET, credentials=encrypted["block"].credentials, encryption="client",
                         encryption_key=generate_key())
    other.save(BLOCK + "-other", overwrite=True)
    with pytest.raises(DmfError, match="was encrypted with key id [0-9a-f]{16}, the repository block's"):
        restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=encrypted["target"],
                         repository_block=BLOCK + "-other")
    assert not any(tmp_path.iterdir())


def test_a_plaintext_set_in_place_of_an_encrypted_one_is_refused_before_any_download(encrypted, cluster_block,
                                                                                       tmp_path):
    # The attack: the node's own plaintext SSTables (any SSTables would do) written over one host's set,
    # with a manifest that matches them and says nothing of encryption.
    s3, stored = encrypted["s3"], objects(encrypted["s3"])
    prefix, manifest = host_full(encrypted, stored, "127.0.0.1")
    host = cluster_block.host("127.0.0.1")
    table_dir = next(p.parent for d in host.data_dirs
                     for p in Path(d, encrypted["keyspace"]).glob(f"{encrypted['table']}-*/*-Data.db"))
    relpath = f"{encrypted['keyspace']}/{table_dir.name}"
    plain = {f"{relpath}/{p.name}": p.read_bytes() for p in table_dir.iterdir() if p.is_file()}
    forged = {**manifest, "files": [{"path": path, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                                    for path, body in plain.items()]}
    del forged["extra"]["encryption"]
    with planted(s3, stored, {**{prefix + path: body for path, body in plain.items()},
                              prefix + "manifest.json": json.dumps(forged).encode()}):
        with pytest.raises(DmfError) as refused:
            restore_snapshot(hosts="127.0.0.1", path=str(tmp_path), db_target=encrypted["target"],
                             repository_block=BLOCK)
    assert str(refused.value).startswith(f"{prefix} is not client-side encrypted, and the repository block says "
                                         "encryption: client: refused") and "\n" not in str(refused.value)
    assert not any(tmp_path.iterdir())


def test_an_object_swapped_in_under_a_rewritten_manifest_is_refused_before_any_download(encrypted, tmp_path):
    # The attack: another dmf-encrypted object under the same key (the other host's copy of a Data.db)
    # in place of this host's, and the manifest rewritten to match it: checksums, sizes, plaintext record.
    s3, stored = encrypted["s3"], objects(encrypted["s3"])
    prefix, manifest = host_full(encrypted, stored, "127.0.0.1")
    other_prefix, other = host_full(encrypted, stored, "127.0.0.2")
    entry = next(f for f in manifest["files"] if f["path"].endswith("-Data.db"))
    donor = next(f for f in other["files"] if f["path"].endswith("-Data.db"))
    entry.update(size=donor["size"], sha256=donor["sha256"], plain=donor["plain"])
    with planted(s3, stored, {prefix + entry["path"]: stored[other_prefix + donor["path"]],
                              prefix + "manifest.json": json.dumps(manifest).encode()}):
        with pytest.raises(DmfError) as refused:
            restore_snapshot(hosts="127.0.0.1", path=str(tmp_path), db_target=encrypted["target"],
                             repository_block=BLOCK)
    assert str(refused.value) == (f"{prefix}manifest.json: manifest fails authentication (rewritten since dmf "
                                  "sealed it): refused")
    assert not any(tmp_path.iterdir())
