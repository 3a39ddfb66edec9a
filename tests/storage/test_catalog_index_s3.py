"""The catalog index against S3 (moto's in-process mock): the indexed listing must equal the one that
reads every manifest, before and after the bucket changes under it, and stay cheap once warm."""
from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from dmf.blocks import S3Repository
from dmf.core.errors import InputError
from dmf.core.keys import CATALOG_NAME, SetKind, SetRef, catalog_key
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.timestamps import parse_ts
from dmf.repository import Repository
from dmf.storage import Storage, StorageError

HOSTS = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
IDS = {h: f"4a1a7505-0842-4a5c-a7fc-0baf0bb43b1{i}" for i, h in enumerate(HOSTS)}
SNAPSHOTS = [parse_ts(t) for t in ("20250106000000", "20250113000000", "20250120000000")]
TABLE_FILE = "ks/t-" + "0" * 32 + "/nb-1-big-Data.db"


def manifest(ref: SetRef, host: str, files: int = 1) -> Manifest:
    segment = ref.kind is SetKind.COMMITLOG
    entries = tuple(FileEntry(f"CommitLog-7-{n}.log" if segment else TABLE_FILE.replace("-1-", f"-{n}-"),
                              1000 + n, "ab" * 32) for n in range(files))
    return Manifest(set=ref, files=entries, host=host, host_id=IDS[host], created_at=ref.time,
                    db_target="" if segment else "ks.t", hosts=(host,) if segment else HOSTS)


def put_set(s3, ref: SetRef, host: str, *, sealed: bool = True, files: int = 1) -> None:
    m = manifest(ref, host, files)
    s3.put_object(Bucket="dmf-index", Key=ref.file_key(m.files[0].path), Body=b"x")
    if sealed:
        s3.put_object(Bucket="dmf-index", Key=ref.manifest_key, Body=m.to_json())


def seed(s3) -> None:
    """Per weekly snapshot: a full of 3 hosts, 25 increments and 10 commit-log batches per host (324 sets)."""
    for snap in SNAPSHOTS:
        for host in HOSTS:
            put_set(s3, SetRef.snapshot(snap, host), host)
            for n in range(1, 26):
                put_set(s3, SetRef.incremental(snap, host, snap + timedelta(minutes=15 * n)), host)
            for n in range(1, 11):
                put_set(s3, SetRef.commitlog(snap, IDS[host], snap + timedelta(minutes=7 * n)), host)
    week = SNAPSHOTS[1]
    put_set(s3, SetRef.incremental(week, "10.0.0.1", week + timedelta(hours=9)), "10.0.0.1", sealed=False)
    malformed = SetRef.incremental(week, "10.0.0.2", week + timedelta(hours=9))
    put_set(s3, malformed, "10.0.0.2")
    s3.put_object(Bucket="dmf-index", Key=malformed.manifest_key, Body=b'{"format": 1, "kind": "backups"')


@pytest.fixture(scope="module")
def bucket():
    with mock_aws():
        block = S3Repository(bucket="dmf-index", credentials=AwsCredentials(
            aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"), region_name="us-east-1"))
        s3 = block.client()
        s3.create_bucket(Bucket="dmf-index")
        seed(s3)
        yield block


def counting_requests(repo: Repository) -> Counter:
    """Counts, from now on, the objects the repository GETs (index objects, manifests) and PUTs (index writes)."""
    counts: Counter = Counter()
    repo.storage.s3.meta.events.register(
        "provide-client-params.s3.GetObject",
        lambda params, **_: counts.update(["index" if params["Key"].endswith(CATALOG_NAME) else "manifest"]))
    repo.storage.s3.meta.events.register("provide-client-params.s3.PutObject", lambda **_: counts.update(["put"]))
    return counts


def listed_sets(catalog) -> dict[SetRef, bool]:
    return {info.ref: info.complete for g in catalog.all_groups() for info in g.sets.values()}


def test_indexed_listing_equals_reading_every_manifest_as_the_bucket_changes(bucket):
    repo = Repository(Storage(bucket))
    s3 = repo.storage.s3
    reference = repo.listing_catalog(use_index=False)
    assert len(listed_sets(reference)) == 326

    counts = counting_requests(repo)
    assert repo.listing_catalog() == reference  # first listing: builds every index
    assert counts == Counter(index=3, manifest=325, put=3)
    for snap in SNAPSHOTS:
        assert repo.storage.head(catalog_key(snap)) is not None
    week = SNAPSHOTS[1]
    incomplete = SetRef.incremental(week, "10.0.0.1", week + timedelta(hours=9))
    malformed = SetRef.incremental(week, "10.0.0.2", week + timedelta(hours=9))
    infos = {i.ref: i for g in reference.all_groups() for i in g.sets.values()}
    assert not infos[incomplete].complete and infos[incomplete].problem == ""
    assert not infos[malformed].complete and infos[malformed].problem.startswith(malformed.manifest_key + ": ")

    counts.clear()
    assert repo.listing_catalog() == reference  # warm: one index object per snapshot, no manifest
    assert counts == Counter(index=3)

    s3.delete_object(Bucket="dmf-index", Key=catalog_key(week))  # an index deleted: rebuilt
    counts.clear()
    assert repo.listing_catalog() == reference
    assert counts == Counter(index=3, manifest=109, put=1)
    assert repo.storage.head(catalog_key(week)) is not None

    added = SetRef.incremental(week, "10.0.0.3", week + timedelta(hours=10))  # sealed after the index
    put_set(s3, added, "10.0.0.3")
    counts.clear()
    after_add = repo.listing_catalog()
    assert counts == Counter(index=3, manifest=1, put=1)
    assert after_add == repo.listing_catalog(use_index=False) and listed_sets(after_add)[added] is True

    rewritten = SetRef.snapshot(SNAPSHOTS[0], "10.0.0.2")  # same key, new content: another ETag
    s3.put_object(Bucket="dmf-index", Key=rewritten.manifest_key, Body=manifest(rewritten, "10.0.0.2", 3).to_json())
    unsealed = SetRef.incremental(week, "10.0.0.1", week + timedelta(minutes=15))  # manifest deleted, data kept
    s3.delete_object(Bucket="dmf-index", Key=unsealed.manifest_key)
    removed = SetRef.commitlog(SNAPSHOTS[2], IDS["10.0.0.3"], SNAPSHOTS[2] + timedelta(minutes=7))  # whole set
    s3.delete_objects(Bucket="dmf-index", Delete={"Objects": [{"Key": o["Key"]} for o in s3.list_objects_v2(
        Bucket="dmf-index", Prefix=removed.prefix)["Contents"]]})
    changed = repo.listing_catalog()
    assert changed == repo.listing_catalog(use_index=False)
    sets = listed_sets(changed)
    assert sets[unsealed] is False and removed not in sets
    assert next(g for g in changed.fulls if g.snapshot_ts == SNAPSHOTS[0]).files == 5
    counts.clear()
    assert repo.listing_catalog() == changed
    assert counts == Counter(index=3)  # the changes are in the index now


def test_a_malformed_index_object_is_ignored_and_rebuilt(bucket):
    repo = Repository(Storage(bucket))
    reference = repo.listing_catalog(use_index=False)
    repo.listing_catalog()
    repo.storage.put_bytes(catalog_key(SNAPSHOTS[0]), b'{"format": 1, "sets": ')
    assert repo.listing_catalog() == reference
    assert json.loads(repo.storage.get_bytes(catalog_key(SNAPSHOTS[0])))["format"] == 1


def test_catalog_listings_skip_last_modified_and_other_listings_keep_it(bucket):
    repo = Repository(Storage(bucket))
    with_last_modified: list[bool] = []
    repo.storage.s3.meta.events.register("after-call.s3.ListObjectsV2", lambda parsed, **_: with_last_modified.append(
        any("LastModified" in o for o in parsed.get("Contents", []))))
    repo.listing_catalog()
    assert with_last_modified and not any(with_last_modified)
    with_last_modified.clear()
    assert "LastModified" in next(repo.storage.list_objects(SNAPSHOTS[0].strftime("%Y%m%d%H%M%S/")))
    assert with_last_modified == [True]


class RefusingFold:
    """A client whose store answers a '-' delimited listing as `how` says: refused, or folded at '/'."""

    def __init__(self, client, how: str):
        self._client, self._how = client, how

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_paginator(self, name):
        paginator = self._client.get_paginator(name)
        how = self._how

        class Paginator:
            def paginate(self, **params):
                if params.get("Delimiter") == "-":
                    if how == "refuse":
                        raise ClientError({"Error": {"Code": "NotImplemented", "Message": "delimiter"}},
                                          "ListObjectsV2")
                    params["Delimiter"] = "/"
                return paginator.paginate(**params)
        return Paginator()


@pytest.mark.parametrize("how", ["refuse", "fold at /"])
def test_a_store_without_the_fold_delimiter_lists_the_same(bucket, how, caplog):
    reference = Repository(Storage(bucket)).listing_catalog(use_index=False)
    storage = Storage(bucket)
    storage.s3 = RefusingFold(storage.s3, how)
    assert Repository(storage).listing_catalog() == reference
    assert "does not list with the delimiter '-'" in caplog.text


def test_read_only_credentials_still_list(bucket, monkeypatch):
    repo = Repository(Storage(bucket))
    reference = repo.listing_catalog(use_index=False)
    repo.storage.s3.delete_object(Bucket="dmf-index", Key=catalog_key(SNAPSHOTS[2]))

    def refused(key, *_, **__):
        raise StorageError(f"S3 put s3://dmf-index/{key} failed: AccessDenied")
    monkeypatch.setattr(repo.storage, "put_bytes", refused)
    assert repo.listing_catalog() == reference
    assert repo.storage.head(catalog_key(SNAPSHOTS[2])) is None


def test_backup_list_flow_rows_filters_and_chains(bucket, monkeypatch):
    import logging

    from dmf.flows import backup_list as flow_module
    block = bucket.model_copy(update={"bucket": "dmf-list-flow"})
    s3 = block.client()
    s3.create_bucket(Bucket="dmf-list-flow")
    snap = parse_ts("20250301000000")
    for host in HOSTS:
        for ref in (SetRef.snapshot(snap, host), SetRef.incremental(snap, host, snap + timedelta(hours=1)),
                    SetRef.commitlog(snap, IDS[host], snap + timedelta(hours=2))):
            m = manifest(ref, host)
            s3.put_object(Bucket="dmf-list-flow", Key=ref.manifest_key, Body=m.to_json())
    later = SetRef.commitlog(snap, IDS["10.0.0.1"], snap + timedelta(hours=3))
    s3.put_object(Bucket="dmf-list-flow", Key=later.manifest_key, Body=manifest(later, "10.0.0.1").to_json())
    monkeypatch.setattr(flow_module.S3Repository, "load", classmethod(lambda cls, name: block))
    monkeypatch.setattr(flow_module, "get_run_logger", lambda: logging.getLogger("test"))
    run = flow_module.backup_list.fn

    rows = run()
    assert [(r["kind"], r["time"]) for r in rows] == [
        ("full", "20250301000000"), ("incremental", "20250301010000"), *[("commitlog", "20250301020000")] * 3,
        ("commitlog", "20250301030000")]
    full = rows[0]
    assert {k: full[k] for k in ("hosts", "db_target", "files", "bytes", "complete")} == {
        "hosts": list(HOSTS), "db_target": "ks.t", "files": 3, "bytes": 3000, "complete": True}
    # Every host shipped up to 02:00; only one of them up to 03:00.
    assert (full["chain_bytes"], full["restorable_from"], full["restorable_until"]) == (
        6000, "20250301000000", "20250301020000")
    assert all(r["chain_bytes"] is None and r["restorable_until"] is None for r in rows[1:])
    assert [r["kind"] for r in run(kind="incremental")] == ["incremental"]
    assert [r["kind"] for r in run(db_target="other")] == ["commitlog"] * 4
    assert [r["time"] for r in run(start_time="20250301010000", end_time=20250301020000)] == [
        "20250301010000", *["20250301020000"] * 3]
    with pytest.raises(InputError):
        run(kind="snapshots")
