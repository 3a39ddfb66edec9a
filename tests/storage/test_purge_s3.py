"""backup purge against S3 (moto's in-process mock): a purge cut off before any of its deletes leaves
nothing listed complete that is not, keeps every retained restore point, and a rerun finishes."""
from __future__ import annotations

from datetime import timedelta

import pytest

from dmf import purge
from dmf.core.catalog import resolve_chain
from dmf.core.keys import SetRef, catalog_key, closed_key, schema_key
from dmf.core.lifecycle import RetentionPolicy, purge_plan
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import parse_ts
from dmf.lease import LeaseLost, bucket_lease
from dmf.repository import Repository

from .helpers import moto_repository

HOSTS = ("10.0.0.1", "10.0.0.2")
IDS = {h: f"4a1a7505-0842-4a5c-a7fc-0baf0bb43b1{i}" for i, h in enumerate(HOSTS)}
FULLS = [parse_ts(t) for t in ("20250106000000", "20250113000000", "20250120000000")]
NOW = FULLS[-1] + timedelta(days=2)
GRACE = timedelta(hours=1)
POLICY = RetentionPolicy(keep_fulls=1)
TABLE_DIR = "ks/t-" + "0" * 32


class Killed(BaseException):
    """The process dies: nothing catches it."""


def put_set(s3, ref: SetRef, host: str, *, sealed: bool = True, bucket: str = "dmf-purge") -> None:
    is_log = ref.time != ref.snapshot_ts and ref.kind.value == "commitlogs"
    paths = ["CommitLog-7-1.log"] if is_log else [f"{TABLE_DIR}/nb-{n}-big-Data.db" for n in (1, 2)]
    for path in paths:
        s3.put_object(Bucket=bucket, Key=ref.file_key(path), Body=b"x" * 10)
    if sealed:
        m = Manifest(set=ref, files=tuple(FileEntry(p, 10, "ab" * 32) for p in paths), host=host,
                     host_id=IDS[host], created_at=ref.time, db_target="" if is_log else "ks",
                     hosts=(host,) if is_log else HOSTS)
        s3.put_object(Bucket=bucket, Key=ref.manifest_key, Body=m.to_json())


def seed(s3, bucket: str = "dmf-purge") -> None:
    """Three weekly chains of two hosts, two increments each, a batch per host per day; a failed increment."""
    for full in FULLS:
        s3.put_object(Bucket=bucket, Key=schema_key(full), Body=b"CREATE KEYSPACE ks ...")
        for host in HOSTS:
            put_set(s3, SetRef.snapshot(full, host), host, bucket=bucket)
            for day in (1, 2):
                put_set(s3, SetRef.incremental(full, host, full + timedelta(days=day)), host, bucket=bucket)
                put_set(s3, SetRef.commitlog(full, IDS[host], full + timedelta(days=day, minutes=5)), host,
                        bucket=bucket)
    # Shipped under the middle snapshot a minute after the last full: a restore from that full needs it.
    put_set(s3, SetRef.commitlog(FULLS[1], IDS[HOSTS[0]], FULLS[2] + timedelta(minutes=1)), HOSTS[0], bucket=bucket)
    put_set(s3, SetRef.incremental(FULLS[1], HOSTS[1], FULLS[1] + timedelta(days=3)), HOSTS[1], sealed=False,
            bucket=bucket)


@pytest.fixture
def held():
    return {}


@pytest.fixture
def repo(held):
    """The seeded bucket, and the cluster's lease held on it as the purge flow holds it."""
    with moto_repository("dmf-purge") as repository:
        seed(repository.storage.s3)
        with bucket_lease(repository.storage, "purge-test", "storage test", 0) as lease:
            held["lease"] = lease
            yield repository


def keys(repo: Repository) -> set[str]:
    return {o["Key"] for o in repo.storage.list_objects("")}


def assert_consistent(repo: Repository) -> None:
    """Whatever lists as complete has every object its manifest names; no increment lists without its full."""
    catalog = repo.catalog()
    present = keys(repo)
    for group in catalog.all_groups():
        for manifest in (group.manifests if group.complete else []):
            assert {manifest.set.file_key(f.path) for f in manifest.files} <= present, manifest.set.prefix
    for increment in catalog.increments:
        if increment.complete:
            assert any(f.complete and f.snapshot_ts == increment.snapshot_ts for f in catalog.fulls)


def restore_points(repo: Repository) -> dict:
    catalog = repo.catalog()
    points = [FULLS[-1] + timedelta(hours=h) for h in range(0, 49, 6)]
    return {at: resolve_chain(catalog, DbTarget("ks", "t"), at) for at in points}


def test_purge_removes_old_chains_whole_and_keeps_what_the_last_chain_needs(repo):
    before = restore_points(repo)
    plan = purge_plan(repo.listing_catalog(), POLICY, NOW, GRACE, repo.snapshot_times())  # as the flow reads it: writes catalog.json
    purge.carry_out(repo, plan)
    left = keys(repo)
    assert restore_points(repo) == before
    assert not any(k.startswith(f"{FULLS[0]:%Y%m%d%H%M%S}/") for k in left)  # index, schema and all
    middle = f"{FULLS[1]:%Y%m%d%H%M%S}/"
    assert {k for k in left if k.startswith(middle)} == {
        SetRef.commitlog(FULLS[1], IDS[HOSTS[0]], FULLS[2] + timedelta(minutes=1)).file_key("CommitLog-7-1.log"),
        SetRef.commitlog(FULLS[1], IDS[HOSTS[0]], FULLS[2] + timedelta(minutes=1)).manifest_key,
        schema_key(FULLS[1])}  # its index went before the manifests the purge deleted under it
    assert repo.listing_catalog() == repo.listing_catalog(use_index=False)
    assert repo.storage.head(catalog_key(FULLS[1])) is not None  # rebuilt by that listing
    assert purge_plan(repo.catalog(), POLICY, NOW, GRACE, repo.snapshot_times()).sets == []  # nothing left to do


def test_a_purge_that_lost_the_lease_deletes_nothing(repo, held):
    """Its lease removed (by a run that judged it lapsed): the renewal notices, and purge stops first."""
    plan = purge_plan(repo.listing_catalog(), POLICY, NOW, GRACE, repo.snapshot_times())
    before = keys(repo)
    repo.storage.delete_keys([held["lease"].lease.key])
    assert not held["lease"].renew()
    with pytest.raises(LeaseLost, match="was removed from the bucket; stopped before purge's deletes"):
        purge.carry_out(repo, plan)
    assert keys(repo) == before - {held["lease"].lease.key}


POINTS_OF_DEATH = ["before the indexes", "before the increments' manifests", "before the fulls' manifests",
                  "before the first set's data", "halfway through the data", "before the last set's data",
                  "before the emptied snapshots' objects"]


@pytest.mark.parametrize("point_of_death", POINTS_OF_DEATH)
def test_a_purge_killed_leaves_nothing_listed_complete_that_is_not_and_a_rerun_finishes(repo, point_of_death):
    purge_killed_and_rerun(repo, point_of_death)


def purge_killed_and_rerun(repo: Repository, point_of_death: str) -> None:
    """One DeleteObjects per step: the indexes, the increments' manifests, the fulls', each set's data,
    the leftovers. Planned from the indexed listing, as the flow does, so the indexes and closed chain
    summaries exist when it dies: listing through them must show what reading every manifest shows."""
    s3 = repo.storage.s3
    plan = purge_plan(repo.listing_catalog(), POLICY, NOW, GRACE, repo.snapshot_times())
    assert repo.storage.head(closed_key(FULLS[0])) is not None  # the chain it removes was closed
    sets = len(plan.sets)
    allowed = {"before the indexes": 0, "before the increments' manifests": 1, "before the fulls' manifests": 2,
               "before the first set's data": 3, "halfway through the data": 3 + sets // 2,
               "before the last set's data": 2 + sets, "before the emptied snapshots' objects": 3 + sets}[point_of_death]
    before = restore_points(repo)
    done = 0

    def die(**_):
        nonlocal done
        if done == allowed:
            raise Killed()
        done += 1
    s3.meta.events.register("before-call.s3.DeleteObjects", die)
    with pytest.raises(Killed):
        purge.carry_out(repo, plan)
    s3.meta.events.unregister("before-call.s3.DeleteObjects", die)
    assert_consistent(repo)
    assert repo.listing_catalog() == repo.listing_catalog(use_index=False)
    assert restore_points(repo) == before
    purge.carry_out(repo, purge_plan(repo.catalog(), POLICY, NOW, GRACE, repo.snapshot_times()))  # the rerun
    assert restore_points(repo) == before
    assert purge_plan(repo.catalog(), POLICY, NOW, GRACE, repo.snapshot_times()).sets == []
    assert not any(k.startswith(f"{FULLS[0]:%Y%m%d%H%M%S}/") for k in keys(repo))


@pytest.mark.parametrize("damage", ["malformed", "missing"])
def test_a_damaged_manifest_of_the_newest_full_never_widens_the_purge(repo, damage):
    """issue 22, defect 1: one host's manifest of the newest full, rewritten as garbage or deleted, made
    the purge remove that chain (its sound sets and every increment) and keep no complete full. Now the
    chain stays whole, so does the last complete one before it, and putting the manifest back restores
    every restore point there was."""
    s3 = repo.storage.s3
    healthy = restore_points(repo)
    manifest_key = SetRef.snapshot(FULLS[-1], HOSTS[1]).manifest_key
    original = s3.get_object(Bucket="dmf-purge", Key=manifest_key)["Body"].read()
    if damage == "malformed":
        s3.put_object(Bucket="dmf-purge", Key=manifest_key, Body=original[: len(original) // 2])
    else:
        s3.delete_object(Bucket="dmf-purge", Key=manifest_key)
    kept_prefixes = tuple(f"{ts:%Y%m%d%H%M%S}/" for ts in FULLS[1:])
    derived = (catalog_key(FULLS[1]), closed_key(FULLS[1]), catalog_key(FULLS[2]), closed_key(FULLS[2]))
    before = {k for k in keys(repo) if k.startswith(kept_prefixes) and k not in derived}
    plan = purge_plan(repo.listing_catalog(), POLICY, NOW, GRACE, repo.snapshot_times())
    assert [g.snapshot_ts for g in plan.retained] == FULLS[1:]
    assert [g.snapshot_ts for g in plan.damaged] == [FULLS[-1]]
    from dmf.flows.backup_purge import describe
    reported, = describe(plan, POLICY, dry_run=False)["damaged"]
    assert reported.startswith(f"full {FULLS[-1]:%Y%m%d%H%M%S} (under {FULLS[-1]:%Y%m%d%H%M%S}) is not complete "
                               f"({HOSTS[1]}: {'unreadable manifest' if damage == 'malformed' else 'no manifest'})")
    purge.carry_out(repo, plan)
    assert before <= keys(repo)
    assert not any(k.startswith(f"{FULLS[0]:%Y%m%d%H%M%S}/") for k in keys(repo))
    assert repo.listing_catalog() == repo.listing_catalog(use_index=False)
    s3.put_object(Bucket="dmf-purge", Key=manifest_key, Body=original)
    assert restore_points(repo) == healthy
