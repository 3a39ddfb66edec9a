"""What a backup run reads of the history (moto's in-process S3): the chains still growing, whole,
and no manifest of a chain that ended long ago."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry, Manifest
from dmf.core.targets import DbTarget
from dmf.core.timestamps import format_ts, parse_ts
from dmf.repository import Repository

from .helpers import moto_repository

NOW = parse_ts("20260301000000")
HOST = "10.0.0.1"
OLD, ACTIVE, NEW = NOW - timedelta(days=60), NOW - timedelta(days=20), NOW - timedelta(days=2)


def put(s3, ref: SetRef, target: str) -> None:
    m = Manifest(set=ref, files=(FileEntry("ks/t-" + "0" * 32 + "/nb-1-big-Data.db", 1, "ab" * 32),), host=HOST,
                 host_id="h", created_at=ref.time, db_target=target, hosts=(HOST,))
    s3.put_object(Bucket="dmf-reads", Key=ref.manifest_key, Body=m.to_json())


@pytest.fixture
def repo():
    with moto_repository("dmf-reads") as repository:
        s3 = repository.storage.s3
        put(s3, SetRef.snapshot(OLD, HOST), "ks")                                  # ended 59 days ago
        put(s3, SetRef.incremental(OLD, HOST, OLD + timedelta(days=1)), "ks")
        put(s3, SetRef.snapshot(ACTIVE, HOST), "ks.t")                             # still growing
        put(s3, SetRef.incremental(ACTIVE, HOST, ACTIVE + timedelta(days=1)), "ks.t")
        put(s3, SetRef.incremental(ACTIVE, HOST, NOW - timedelta(days=1)), "ks.t")
        put(s3, SetRef.snapshot(NEW, HOST), "ks")
        yield repository


def manifest_gets(repo: Repository) -> Counter:
    counts: Counter = Counter()
    repo.storage.s3.meta.events.register("provide-client-params.s3.GetObject",
                                         lambda params, **_: counts.update([params["Key"].split("/")[0]]))
    return counts


def test_the_active_catalog_holds_the_growing_chains_whole_and_reads_nothing_of_ended_ones(repo):
    gets = manifest_gets(repo)
    catalog = repo.active_catalog(NOW - timedelta(days=7))
    assert [g.snapshot_ts for g in catalog.fulls] == [ACTIVE, NEW]
    assert len(catalog.increments) == 2  # the active chain's old increment too
    assert gets == {format_ts(ACTIVE): 3, format_ts(NEW): 1}


def test_a_run_finds_its_chain_reading_fulls_only_on_the_way(repo):
    from dmf.flows.backup_snapshot import recent_history
    from dmf.core.lifecycle import FullEvery
    gets = manifest_gets(repo)
    full, why, seen = recent_history(repo, DbTarget("ks", "t"), (HOST,), NOW, FullEvery(), ())
    assert full is not None and full.snapshot_ts == ACTIVE and why == ""
    assert gets == {format_ts(NEW): 1, format_ts(ACTIVE): 1 + 3}  # NEW's full, ACTIVE's full, then its chain
    assert format_ts(OLD) not in gets


def test_the_registry_is_written_through_the_repository_under_its_own_prefix(repo):
    """A registry backup's objects land under registry/<ts>/, which a history read never takes for a
    snapshot, and the manifest seals it."""
    block = repo.write_registry_block(NOW, "dmf-s3-repository", "default", b'{"bucket": "b"}')
    config = repo.write_registry_node_file(NOW, HOST, "cassandra.yaml", b"cluster_name: c\n")
    seal = repo.seal_registry(NOW, b'{"format": 1}')
    prefix = f"registry/{format_ts(NOW)}/"
    assert [block.key, config.key, seal.key] == [f"{prefix}blocks/dmf-s3-repository/default.json",
                                                 f"{prefix}nodes/{HOST}/cassandra.yaml", f"{prefix}manifest.json"]
    assert repo.storage.get_bytes(config.key) == b"cluster_name: c\n" and config.size == 16
    assert NOW not in repo.snapshot_times() and len(repo.snapshot_times()) == 3
