"""The catalog index against S3 (moto's in-process mock): the indexed listing must equal the one that
reads every manifest, before and after the bucket changes under it, and stay cheap once warm."""
from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from dmf.blocks import S3Repository
from dmf.core.errors import InputError
from dmf.core.index import parse_closed
from dmf.core.keys import CATALOG_NAME, CLOSED_NAME, SetKind, SetRef, catalog_key, closed_key
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.timestamps import format_ts, parse_ts
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


def put_set(s3, ref: SetRef, host: str, *, sealed: bool = True, files: int = 1, bucket: str = "dmf-index") -> None:
    m = manifest(ref, host, files)
    s3.put_object(Bucket=bucket, Key=ref.file_key(m.files[0].path), Body=b"x")
    if sealed:
        s3.put_object(Bucket=bucket, Key=ref.manifest_key, Body=m.to_json())


def seed(s3, bucket: str = "dmf-index") -> None:
    """Per weekly snapshot: a full of 3 hosts, 25 increments and 10 commit-log batches per host (324
    sets). The first chain is closed (the second's full is newer and old); the second has a failed
    increment and a malformed manifest, so it stays open; the third is the newest."""
    for snap in SNAPSHOTS:
        for host in HOSTS:
            put_set(s3, SetRef.snapshot(snap, host), host, bucket=bucket)
            for n in range(1, 26):
                put_set(s3, SetRef.incremental(snap, host, snap + timedelta(minutes=15 * n)), host, bucket=bucket)
            for n in range(1, 11):
                put_set(s3, SetRef.commitlog(snap, IDS[host], snap + timedelta(minutes=7 * n)), host, bucket=bucket)
    week = SNAPSHOTS[1]
    put_set(s3, SetRef.incremental(week, "10.0.0.1", week + timedelta(hours=9)), "10.0.0.1", sealed=False,
            bucket=bucket)
    malformed = SetRef.incremental(week, "10.0.0.2", week + timedelta(hours=9))
    put_set(s3, malformed, "10.0.0.2", bucket=bucket)
    s3.put_object(Bucket=bucket, Key=malformed.manifest_key, Body=b'{"format": 1, "kind": "backups"')


@pytest.fixture(scope="module")
def moto_s3():
    with mock_aws():
        yield S3Repository(bucket="dmf-index", credentials=AwsCredentials(
            aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"), region_name="us-east-1"))


@pytest.fixture(scope="module")
def bucket(moto_s3):
    """One seeded bucket the tests only read (the listings write index objects, which do not change what lists)."""
    moto_s3.client().create_bucket(Bucket="dmf-index")
    seed(moto_s3.client())
    return moto_s3


@pytest.fixture
def changing(moto_s3, request):
    """A seeded bucket of this test's own, to change under the index (seeded through moto's backend:
    its HTTP front end would take seconds)."""
    name = f"dmf-index-{zlib.crc32(request.node.name.encode()):08x}"
    block = moto_s3.model_copy(update={"bucket": name})
    block.client().create_bucket(Bucket=name)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]

    class Backend:
        def put_object(self, Bucket, Key, Body):  # noqa: N803 (boto3's names)
            backend.put_object(Bucket, Key, Body)
    seed(Backend(), name)
    return block


def counting_requests(repo: Repository) -> Counter:
    """Counts, from now on, the objects the repository GETs (closed summaries, index objects, manifests),
    PUTs, and the listings below a node's prefix."""
    counts: Counter = Counter()

    def got(params, **_):
        key = params["Key"]
        counts.update(["closed" if key.endswith(CLOSED_NAME) else "index" if key.endswith(CATALOG_NAME) else "manifest"])

    def listed(params, **_):
        if params.get("Prefix", "").count("/") >= 2:
            counts.update(["list " + params["Prefix"].split("/")[0]])
    repo.storage.s3.meta.events.register("provide-client-params.s3.GetObject", got)
    repo.storage.s3.meta.events.register("provide-client-params.s3.PutObject", lambda **_: counts.update(["put"]))
    repo.storage.s3.meta.events.register("provide-client-params.s3.ListObjectsV2", listed)
    return counts


def listed_sets(catalog) -> dict[SetRef, bool]:
    return {info.ref: info.complete for g in catalog.all_groups() for info in g.sets.values()}


def node_listings(counts: Counter, snapshot) -> int:
    return counts["list " + format_ts(snapshot)]


def test_indexed_listing_equals_reading_every_manifest_and_closes_finished_chains(changing):
    repo = Repository(Storage(changing))
    reference = repo.listing_catalog(use_index=False)
    assert len(listed_sets(reference)) == 326

    counts = counting_requests(repo)
    assert repo.listing_catalog() == reference  # first listing: builds every index, closes the first chain
    assert (counts["manifest"], counts["index"], counts["closed"], counts["put"]) == (325, 0, 0, 4)
    assert [repo.storage.head(closed_key(s)) is not None for s in SNAPSHOTS] == [True, False, False]
    assert all(repo.storage.head(catalog_key(s)) is not None for s in SNAPSHOTS)
    week = SNAPSHOTS[1]
    incomplete = SetRef.incremental(week, "10.0.0.1", week + timedelta(hours=9))
    malformed = SetRef.incremental(week, "10.0.0.2", week + timedelta(hours=9))
    infos = {i.ref: i for g in reference.all_groups() for i in g.sets.values()}
    assert not infos[incomplete].complete and infos[incomplete].problem == ""
    assert not infos[malformed].complete and infos[malformed].problem.startswith(malformed.manifest_key + ": ")

    counts.clear()
    assert repo.listing_catalog() == reference  # warm: the closed chain is not listed below its top level
    assert (counts["manifest"], counts["index"], counts["closed"], counts["put"]) == (0, 2, 1, 0)
    assert node_listings(counts, SNAPSHOTS[0]) == 0 and node_listings(counts, SNAPSHOTS[2]) > 0

    s3 = repo.storage.s3
    s3.delete_object(Bucket=changing.bucket, Key=catalog_key(week))  # an index deleted: rebuilt
    s3.delete_object(Bucket=changing.bucket, Key=closed_key(SNAPSHOTS[0]))  # a closed summary too
    counts.clear()
    assert repo.listing_catalog() == reference
    assert (counts["manifest"], counts["put"]) == (109, 2)  # the open week read again; the closed one's index held
    assert repo.storage.head(catalog_key(week)) is not None and repo.storage.head(closed_key(SNAPSHOTS[0]))


def test_open_chains_follow_every_change_of_the_bucket(changing):
    repo = Repository(Storage(changing))
    s3 = repo.storage.s3
    repo.listing_catalog()
    week, newest = SNAPSHOTS[1], SNAPSHOTS[2]
    added = SetRef.incremental(week, "10.0.0.3", week + timedelta(hours=10))  # sealed after the index
    put_set(s3, added, "10.0.0.3", bucket=changing.bucket)
    counts = counting_requests(repo)
    after_add = repo.listing_catalog()
    assert (counts["manifest"], counts["put"]) == (1, 1)
    assert after_add == repo.listing_catalog(use_index=False) and listed_sets(after_add)[added] is True

    rewritten = SetRef.snapshot(newest, "10.0.0.2")  # same key, new content: another ETag
    s3.put_object(Bucket=changing.bucket, Key=rewritten.manifest_key,
                  Body=manifest(rewritten, "10.0.0.2", 3).to_json())
    unsealed = SetRef.incremental(week, "10.0.0.1", week + timedelta(minutes=15))  # manifest deleted, data kept
    s3.delete_object(Bucket=changing.bucket, Key=unsealed.manifest_key)
    removed = SetRef.commitlog(newest, IDS["10.0.0.3"], newest + timedelta(minutes=7))  # whole set
    s3.delete_objects(Bucket=changing.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in s3.list_objects_v2(
        Bucket=changing.bucket, Prefix=removed.prefix)["Contents"]]})
    changed = repo.listing_catalog()
    assert changed == repo.listing_catalog(use_index=False)
    sets = listed_sets(changed)
    assert sets[unsealed] is False and removed not in sets
    assert next(g for g in changed.fulls if g.snapshot_ts == newest).files == 5
    counts.clear()
    assert repo.listing_catalog() == changed
    assert (counts["manifest"], counts["put"]) == (0, 0)  # the changes are in the index now


def test_a_closed_chain_is_trusted_until_dmf_writes_under_it_or_a_rescan(changing):
    repo = Repository(Storage(changing))
    s3 = repo.storage.s3
    old = SNAPSHOTS[0]
    reference = repo.listing_catalog()
    # Changed by hand behind dmf's back: a closed chain is not listed again, so this stays unseen ...
    by_hand = SetRef.incremental(old, "10.0.0.1", old + timedelta(minutes=15))
    s3.delete_object(Bucket=changing.bucket, Key=by_hand.manifest_key)
    assert listed_sets(repo.listing_catalog())[by_hand] is True
    # ... until a rescan, which reads every manifest and writes the summaries again.
    counts = counting_requests(repo)
    rescanned = repo.listing_catalog(rescan=True)
    assert counts["manifest"] == 324 and counts["closed"] == 0  # every manifest listed, none trusted
    assert rescanned == repo.listing_catalog(use_index=False) and listed_sets(rescanned)[by_hand] is False
    assert repo.storage.head(closed_key(old)) is None  # an incomplete set: no longer closable

    put_set(s3, by_hand, "10.0.0.1", bucket=changing.bucket)  # made whole again by hand; closes at the next listing
    assert repo.listing_catalog() == reference and repo.storage.head(closed_key(old)) is not None
    # A run sealing a set under a closed chain (one that resolved it long ago) reopens it.
    late = SetRef.commitlog(old, IDS["10.0.0.2"], old + timedelta(days=6))
    repo.write_manifest(manifest(late, "10.0.0.2"))
    assert repo.storage.head(closed_key(old)) is None
    assert listed_sets(repo.listing_catalog())[late] is True
    assert repo.storage.head(closed_key(old)) is not None  # closed again, with the late batch in it
    counts.clear()
    assert listed_sets(repo.listing_catalog())[late] is True and node_listings(counts, old) == 0


@pytest.mark.parametrize("damage", ["malformed", "another node", "a set outside the layout"])
def test_a_damaged_or_stale_closed_summary_is_ignored_and_written_again(changing, damage, caplog):
    repo = Repository(Storage(changing))
    old = SNAPSHOTS[0]
    repo.listing_catalog()
    if damage == "malformed":
        repo.storage.put_bytes(closed_key(old), b'{"format": 1, "nodes": ')
    elif damage == "another node":  # a host added by hand under the closed snapshot
        put_set(repo.storage.s3, SetRef.snapshot(old, "10.0.0.9"), "10.0.0.1", sealed=False, bucket=changing.bucket)
    else:
        body = json.loads(repo.storage.get_bytes(closed_key(old)))
        body["sets"]["10.0.0.1/backups/../../x/"] = next(iter(body["sets"].values()))
        repo.storage.put_bytes(closed_key(old), json.dumps(body).encode())
    assert repo.listing_catalog() == repo.listing_catalog(use_index=False)
    assert "closed chain summary" in caplog.text
    if damage == "another node":  # its set is incomplete: the chain is open until cleanup removes it
        assert repo.storage.head(closed_key(old)) is None
    else:
        assert parse_closed(repo.storage.get_bytes(closed_key(old)), old)[0]


def test_a_chain_closes_only_an_hour_after_the_next_full(changing):
    repo = Repository(Storage(changing))
    first_full_of_second = max(SNAPSHOTS[1] + timedelta(minutes=15 * 25), SNAPSHOTS[1])
    repo.listing_catalog(now=SNAPSHOTS[1] + timedelta(minutes=59))
    assert repo.storage.head(closed_key(SNAPSHOTS[0])) is None
    repo.listing_catalog(now=first_full_of_second + timedelta(hours=1))
    assert repo.storage.head(closed_key(SNAPSHOTS[0])) is not None


def test_a_malformed_index_object_is_ignored_and_rebuilt(bucket):
    repo = Repository(Storage(bucket))
    reference = repo.listing_catalog(use_index=False)
    repo.listing_catalog()
    repo.storage.put_bytes(catalog_key(SNAPSHOTS[2]), b'{"format": 1, "sets": ')
    assert repo.listing_catalog() == reference
    assert json.loads(repo.storage.get_bytes(catalog_key(SNAPSHOTS[2])))["format"] == 1


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
def test_a_store_without_the_fold_delimiter_walks_set_prefixes(changing, how, caplog):
    """s3proxy refuses '-': open chains are walked with '/' (a cost per set, not per file), their sets
    trusted by prefix, and a set the index lacks, or one without a manifest yet, read."""
    caplog.set_level(logging.INFO, logger="dmf.repository")
    storage = Storage(changing)
    storage.s3 = RefusingFold(storage.s3, how)
    repo = Repository(storage)
    counts = counting_requests(repo)
    assert repo.listing_catalog() == repo.listing_catalog(use_index=False)
    assert "does not list with the delimiter '-'" in caplog.text
    week, newest = SNAPSHOTS[1], SNAPSHOTS[2]
    added = SetRef.incremental(newest, "10.0.0.3", newest + timedelta(hours=10))
    put_set(storage.s3, added, "10.0.0.3", bucket=changing.bucket)
    removed = SetRef.commitlog(newest, IDS["10.0.0.3"], newest + timedelta(minutes=7))
    storage.delete_keys([o["Key"] for o in storage.list_objects(removed.prefix)])
    counts.clear()
    changed = repo.listing_catalog()
    # Read: the added set, and week's incomplete one (no manifest yet, read each time); nothing else.
    assert counts["manifest"] == 2 and node_listings(counts, SNAPSHOTS[0]) == 0 and node_listings(counts, week) > 0
    assert changed == repo.listing_catalog(use_index=False)
    assert listed_sets(changed)[added] is True and removed not in listed_sets(changed)
    # What the walk cannot see (a manifest deleted by hand, its data kept) a rescan does.
    by_hand = SetRef.incremental(newest, "10.0.0.2", newest + timedelta(minutes=30))
    storage.s3.delete_object(Bucket=changing.bucket, Key=by_hand.manifest_key)
    assert listed_sets(repo.listing_catalog())[by_hand] is True
    assert listed_sets(repo.listing_catalog(rescan=True))[by_hand] is False


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
