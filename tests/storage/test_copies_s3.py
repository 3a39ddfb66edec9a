"""Copies and object lock against S3 (moto's in-process mock): a chain copied byte for byte, server-side
and streamed; a copy killed midway lists nothing complete before its manifest and a rerun finishes; a
damaged primary object is never sealed on the copy; locked objects survive a purge and a direct delete,
and the purge plan says until when; a bucket without object lock is refused at save."""
from __future__ import annotations

import hashlib
import os
import sys
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from dmf import purge, verify
from dmf.blocks import S3Repository
from dmf.copy import Copier, SourceDamaged, copy_all, copy_lags, naming_copies
from dmf.core.catalog import KIND_NAMES, Catalog, resolve_chain
from dmf.core.copies import sets_to_copy
from dmf.core.errors import InputError
from dmf.core.keys import SetKind, SetRef, schema_key
from dmf.core.lifecycle import RetentionPolicy, purge_plan
from dmf.core.object_lock import hold_locked
from dmf.core.targets import DbTarget
from dmf.lease import bucket_lease
from dmf.node import SourceFile
from dmf.node_upload import NodeUpload
from dmf.repository import Repository
from dmf.storage import MIB, Storage, StorageError

from .test_node_upload_s3 import LocalChannel
from .test_purge_s3 import FULLS, GRACE, Killed, seed

SHA = hashlib.sha256(b"x" * 10).hexdigest()  # of every object the purge tests' seed writes
LOCKED = dict(object_lock="governance", full_every="7d", keep_days=1)


def block(bucket: str, **settings) -> S3Repository:
    return S3Repository(bucket=bucket, credentials=AwsCredentials(
        aws_access_key_id="testing", aws_secret_access_key=SecretStr("testing"), region_name="us-east-1"), **settings)


def repository(bucket: str, lock: bool = False, **settings) -> Repository:
    storage = Storage(block(bucket, **settings))
    storage.s3.create_bucket(Bucket=bucket, **({"ObjectLockEnabledForBucket": True} if lock else {}))
    return Repository(storage)


def listing(repo: Repository) -> dict[str, list[tuple]]:
    catalog = repo.listing_catalog()
    return {KIND_NAMES[g.kind]: sorted((str(g.time), g.complete) for g in groups)
            for g, groups in ((gs[0], gs) for gs in (catalog.fulls, catalog.increments, catalog.commitlogs) if gs)}


def seeded(s3, bucket: str) -> None:
    """The purge tests' history, its manifests giving each object's true SHA-256."""
    seed(s3, bucket=bucket)
    for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        if obj["Key"].endswith("manifest.json"):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().replace(b"ab" * 32, SHA.encode())
            s3.put_object(Bucket=bucket, Key=obj["Key"], Body=body)


@pytest.fixture
def pair():
    with mock_aws():
        primary = repository("dmf-primary")
        seeded(primary.storage.s3, "dmf-primary")
        yield primary, repository("dmf-copy")


def run(copier: Copier, name: str = "dr"):
    with bucket_lease(copier.copy.storage, "copy-test", "storage test", 0):
        return copy_all(copier, name, copier.plan())


@pytest.mark.parametrize("server_side", [True, False])
def test_a_copy_holds_every_complete_set_byte_for_byte(pair, server_side):
    primary, copy = pair
    copier = Copier(primary, copy)
    assert copier.server_side  # one store, one identity
    copier.server_side = server_side
    [behind] = copy_lags(primary.listing_catalog(), {"dr": copy.storage.repository})
    assert behind["missing"] == len(copier.plan()) > 0 and behind["line"].startswith("copy dr: ")
    result = run(copier)
    assert not result.failed and len(result.sets) == len({r for r in result.sets})
    assert listing(copy) == {k: [row for row in v if row[1]] for k, v in listing(primary).items()}
    some = [ref for ref in copy.set_prefixes() if copy.read_manifest(ref)]
    for ref in some:
        assert copy.storage.get_bytes(ref.manifest_key) == primary.storage.get_bytes(ref.manifest_key)
    assert copy.storage.get_bytes(schema_key(FULLS[0])) == primary.storage.get_bytes(schema_key(FULLS[0]))
    assert run(Copier(primary, copy)).sets == []  # nothing left to copy
    [level] = copy_lags(primary.listing_catalog(), {"dr": copy.storage.repository})
    assert (level["missing"], level["lag_seconds"]) == (0, 0) and "up to date" in level["line"]


def test_a_copy_killed_midway_lists_nothing_complete_before_its_manifest_and_a_rerun_finishes(pair, monkeypatch):
    primary, copy = pair
    copier = Copier(primary, copy)
    copied = []
    real = Copier._copy_object

    def dies_on_the_sixth(self, key, entry):
        if len(copied) == 5:
            raise Killed()
        real(self, key, entry)
        copied.append(key)
    monkeypatch.setattr(Copier, "_copy_object", dies_on_the_sixth)
    copy.storage.repository.max_concurrency = 1  # one object at a time: the kill falls inside the third set
    with pytest.raises(Killed):
        run(copier)
    # Two sets of two objects were sealed; the third has one object and no manifest, and lists incomplete.
    cut = next(ref for ref in copy.set_prefixes() if copied[-1].startswith(ref.prefix))
    assert copy.storage.head(cut.manifest_key) is None and set(copy.stored_sizes(cut)) != set()
    sealed = [ref for ref in copy.set_prefixes() if copy.storage.head(ref.manifest_key)]
    assert len(sealed) == 2
    for ref in sealed:
        assert set(copy.stored_sizes(ref)) == {f.path for f in copy.read_manifest(ref).files}
    catalog = copy.listing_catalog()
    assert [info.ref for g in catalog.all_groups() for info in g.sets.values() if info.complete] == sealed
    monkeypatch.setattr(Copier, "_copy_object", real)
    result = run(Copier(primary, copy))
    assert not result.failed
    assert listing(copy) == {k: [row for row in v if row[1]] for k, v in listing(primary).items()}


def test_a_damaged_primary_object_is_not_sealed_on_the_copy(pair):
    primary, copy = pair
    ref = next(ref for ref in primary.set_prefixes() if ref.kind is SetKind.SNAPSHOT)
    damaged = ref.file_key(primary.read_manifest(ref).files[0].path)
    primary.storage.s3.put_object(Bucket="dmf-primary", Key=damaged, Body=b"y" * 10)  # same size, other bytes
    for server_side in (True, False):
        copier = Copier(primary, copy)
        copier.server_side = server_side
        result = run(copier)
        assert len(result.failed) == 1 and result.failed[0].startswith(ref.prefix)
        assert "SHA-256" in result.failed[0]
        assert copy.storage.head(ref.manifest_key) is None
    with pytest.raises(SourceDamaged):
        with bucket_lease(copy.storage, "copy-test", "storage test", 0):
            Copier(primary, copy).copy_set(ref)


def test_a_server_side_copy_killed_before_its_read_back_is_not_trusted_by_the_rerun(pair, monkeypatch):
    """CopyObject writes the manifest's SHA-256 as the object's metadata before the copy is read back: a
    run killed in between leaves an unverified object that says it is whole. The rerun reads it back."""
    primary, copy = pair
    ref = next(ref for ref in primary.set_prefixes() if ref.kind is SetKind.SNAPSHOT)
    damaged = ref.file_key(primary.read_manifest(ref).files[0].path)
    primary.storage.s3.put_object(Bucket="dmf-primary", Key=damaged, Body=b"y" * 10)  # same size, other bytes

    real = copy.storage.iter_object

    def read_back(key, *args, **kwargs):
        if key == damaged:
            raise Killed()  # the process dies after the damaged object's CopyObject
        return real(key, *args, **kwargs)
    monkeypatch.setattr(copy.storage, "iter_object", read_back)
    with pytest.raises(Killed):
        run(Copier(primary, copy), "dr")
    head = copy.storage.head(damaged)
    assert head is not None and head["Metadata"]["sha256"] == SHA  # claims the manifest's bytes
    monkeypatch.undo()
    copier = Copier(primary, copy)
    assert copier.server_side
    result = run(copier)
    assert len(result.failed) == 1 and result.failed[0].startswith(ref.prefix) and "SHA-256" in result.failed[0]
    assert copy.storage.head(ref.manifest_key) is None and copy.storage.head(damaged) is None


def test_an_object_left_unlocked_by_a_killed_server_side_copy_is_locked_by_the_rerun(monkeypatch):
    with mock_aws():
        primary = repository("dmf-primary")
        seeded(primary.storage.s3, "dmf-primary")
        copy = repository("dmf-locked", lock=True, **LOCKED)
        real = copy.storage.lock
        first = []

        def dies_before_the_lock(key):
            if not first:
                first.append(key)
                raise Killed()
            real(key)
        monkeypatch.setattr(copy.storage, "lock", dies_before_the_lock)
        with pytest.raises(Killed):
            run(Copier(primary, copy))
        assert copy.storage.head(first[0]) is not None and copy.storage.lock_of(first[0]) is None
        monkeypatch.undo()
        assert not run(Copier(primary, copy)).failed
        assert copy.storage.lock_of(first[0]) is not None


def test_locked_objects_survive_a_purge_and_a_direct_delete_and_the_plan_says_until_when():
    with mock_aws():
        repo = repository("dmf-locked", lock=True, **LOCKED)
        written = datetime.now(timezone.utc)
        primary = repository("dmf-unlocked")
        seeded(primary.storage.s3, "dmf-unlocked")
        with bucket_lease(repo.storage, "copy-test", "storage test", 0):
            # Every set, the old ones too (a plan would leave those the copy's own retention purges).
            everything = sets_to_copy(primary.listing_catalog(), Catalog.build([]))
            assert not copy_all(Copier(primary, repo), "locked", everything).failed
        span = repo.storage.repository.lock_span()
        key = next(o["Key"] for o in repo.storage.list_objects("") if o["Key"].endswith("Data.db"))
        head = repo.storage.s3.head_object(Bucket="dmf-locked", Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert written + span - timedelta(seconds=1) <= head["ObjectLockRetainUntilDate"] <= \
            datetime.now(timezone.utc) + span + timedelta(seconds=1)
        # A direct delete of the locked version is refused; one without a version only hides it.
        with pytest.raises(ClientError, match="AccessDenied"):
            repo.storage.s3.delete_object(Bucket="dmf-locked", Key=key, VersionId=head["VersionId"])

        now = FULLS[-1] + timedelta(days=2)
        plan = purge_plan(repo.listing_catalog(), RetentionPolicy(keep_fulls=1), now, GRACE)
        assert plan.expired
        held = hold_locked(plan, purge.lock_dates(repo, plan), datetime.now(timezone.utc))
        assert not held.expired and len(held.locked) == len(plan.expired)
        assert all(until > datetime.now(timezone.utc) + span - timedelta(minutes=5) for _, until in held.locked)
        before = {o["Key"] for o in repo.storage.list_objects("")}
        with bucket_lease(repo.storage, "purge-test", "storage test", 0):
            purge.carry_out(repo, held)
        assert {o["Key"] for o in repo.storage.list_objects("")} >= before
        versions = repo.storage.s3.list_object_versions(Bucket="dmf-locked", Prefix=key)["Versions"]
        assert [v["VersionId"] for v in versions] == [head["VersionId"]]

        # verify names an object whose lock is shorter than the policy needs (here: a version put without one).
        refs = [ref for ref in repo.set_prefixes() if repo.storage.head(ref.manifest_key)]
        manifests = [repo.read_manifest(ref) for ref in refs]
        assert verify.check_locks(repo, manifests, span) == []
        unlocked = refs[0].file_key(manifests[0].files[0].path)
        repo.storage.s3.put_object(Bucket="dmf-locked", Key=unlocked, Body=b"x" * 10)
        [finding] = verify.check_locks(repo, manifests, span)
        assert (finding.key, finding.problem) == (unlocked, "lock") and finding.detail.startswith("no lock, the ")


def test_object_lock_is_refused_at_save_on_a_bucket_that_cannot_lock():
    with mock_aws():
        repository("dmf-plain")
        with pytest.raises(InputError, match="object_lock: governance refused for bucket 'dmf-plain'"):
            block("dmf-plain", **LOCKED).refuse_unsupported_lock()
        repository("dmf-lockable", lock=True)
        block("dmf-lockable", **LOCKED).refuse_unsupported_lock()
    with pytest.raises(ValueError, match="needs keep_days"):
        block("dmf-plain", object_lock="compliance")


def test_a_restore_that_cannot_read_its_primary_names_the_copies_that_hold_its_point_in_one_line(pair):
    primary, copy = pair
    run(Copier(primary, copy))
    settings = primary.storage.repository.model_copy(update={"copy_to": ["dr", "empty"]})
    empty = repository("dmf-empty").storage.repository
    load = {"dr": copy.storage.repository, "empty": empty}.__getitem__
    for obj in primary.storage.list_objects(""):
        primary.storage.s3.delete_object(Bucket="dmf-primary", Key=obj["Key"])
    primary.storage.s3.delete_bucket(Bucket="dmf-primary")
    target, at = DbTarget.parse("ks"), FULLS[1] + timedelta(days=1, hours=1)
    with pytest.raises(StorageError) as failed:
        with naming_copies(settings, "default", target, at, load):
            next(primary.newest_first(end=at))
    line = str(failed.value)
    assert "\n" not in line and line.startswith("repository 'default' cannot be read (")
    assert line.endswith("; copies that hold it: dr (restore from one with --repository-block dr)")
    with pytest.raises(StorageError) as alone:  # a repository without copies keeps its own error
        with naming_copies(primary.storage.repository, "default", target, at, load):
            next(primary.newest_first(end=at))
    assert "NoSuchBucket" in str(alone.value) and "cop" not in str(alone.value)
    # The copy serves the same chain the primary did.
    chain = resolve_chain(copy.snapshot_catalog(FULLS[1]), target, at)
    assert chain.full.snapshot_ts == FULLS[1] and [g.time for g in chain.increments] == [FULLS[1] + timedelta(days=1)]


def test_a_nodes_presigned_uploads_carry_the_lock(tmp_path):
    """The retain-until date signed into a node's PUT URL is the one its agent sends; multipart uploads
    take the lock when they are created. Against moto's server: the agent speaks HTTP."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        settings = block("node-locked", part_size_mib=5, max_concurrency=2, **LOCKED)
        settings.credentials.aws_client_parameters.endpoint_url = f"http://{host}:{port}"
        storage = Storage(settings)
        storage.s3.create_bucket(Bucket="node-locked", ObjectLockEnabledForBucket=True)
        files = []
        for n, size in enumerate([1234, 6 * MIB]):
            path = tmp_path / f"nb-{n}-big-Data.db"
            path.write_bytes(os.urandom(size))
            files.append(SourceFile(str(path), f"ks/t-0123456789abcdef0123456789abcdef/nb-{n}-big-Data.db", size))
        remote = SimpleNamespace(host=SimpleNamespace(python=sys.executable, address="127.0.0.1"),
                                 start=lambda argv: LocalChannel(argv))
        ref = SetRef.snapshot(datetime(2024, 5, 1, tzinfo=timezone.utc), "127.0.0.1")
        upload = NodeUpload(remote, storage, ref)
        assert upload.start() is None
        before = datetime.now(timezone.utc).replace(microsecond=0)
        upload.run(files, lambda key, source: None)
        span = settings.lock_span()
        for source in files:
            head = storage.s3.head_object(Bucket="node-locked", Key=ref.file_key(source.relpath))
            assert head["ObjectLockMode"] == "GOVERNANCE"
            until = head["ObjectLockRetainUntilDate"]
            assert before + span <= until <= datetime.now(timezone.utc) + span + timedelta(seconds=1)
    finally:
        server.stop()


def test_leases_and_the_catalog_index_carry_no_lock():
    """They are rewritten and deleted by design: locked, each rewrite would pile up a version for the span."""
    with mock_aws():
        repo = repository("dmf-idx", lock=True, **LOCKED)
        seeded(repo.storage.s3, "dmf-idx")
        with bucket_lease(repo.storage, "lock-test", "storage test", 0) as held:
            assert repo.storage.lock_of(held.lease.key) is None
        repo.listing_catalog()
        index = [o["Key"] for o in repo.storage.list_objects("") if o["Key"].endswith(("catalog.json", "closed.json"))]
        assert index and all(repo.storage.lock_of(key) is None for key in index)
        repo.write_schema(FULLS[0], "CREATE TABLE ks.t (id int PRIMARY KEY)")
        assert repo.storage.lock_of(schema_key(FULLS[0])) is not None
