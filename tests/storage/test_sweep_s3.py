"""The sweep of manifest-less sets against S3 (moto): a crashed run's objects go past the grace, but
never those of a partial backup, whose missing manifest may have been lost after it completed
(issue 22, defect 1: a damaged or lost manifest never widens what is deleted)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.logging import disable_run_logger

from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry
from dmf.core.timestamps import parse_ts
from dmf.cql import NodeFacts
from dmf.lease import bucket_lease
from dmf.sweep import remove_manifestless_sets
from dmf.tasks.upload import Uploaded, seal_set

from .helpers import moto_repository

HOSTS = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
FILE = "ks/t-" + "0" * 32 + "/nb-1-big-Data.db"


@pytest.fixture
def repo():
    with moto_repository("dmf-sweep") as repository:
        yield repository


def upload(repo, at: str, host: str, seal: bool) -> SetRef:
    ref = SetRef.snapshot(parse_ts(at), host)
    stored = repo.storage.put_bytes(ref.file_key(FILE), host.encode() * 100)
    if seal:
        facts = NodeFacts(host, f"4a1a7505-0842-4a5c-a7fc-0baf0bb43b1{host[-1]}", ("0",), "5.0.2", "v1")
        with disable_run_logger():
            seal_set.fn(repo.storage.repository, ref, Uploaded([FileEntry(FILE, stored.size, stored.sha256)], 0.0,
                                                                 0.0), facts, "ks.t", HOSTS)
    return ref


def objects(repo, ref: SetRef) -> list[str]:
    return [o["Key"] for o in repo.storage.list_objects(ref.prefix)]


def sweep(repo) -> int:
    with bucket_lease(repo.storage, "sweep-test", "storage test", 0):
        return remove_manifestless_sets(repo, repo.catalog(), set(HOSTS), parse_ts("20260101000000") + timedelta(days=2))


def test_a_crashed_run_s_sets_go_but_a_partial_backup_s_missing_manifest_keeps_its_objects(repo):
    crashed = [upload(repo, "20260101000000", host, seal=False) for host in HOSTS]
    partial = [upload(repo, "20260101010000", host, seal=host != "10.0.0.1") for host in HOSTS]
    lost = partial[0]
    assert sweep(repo) == 3
    assert all(objects(repo, ref) == [] for ref in crashed)
    # 10.0.0.1's manifest is missing while its siblings sealed theirs: a failed run on that host, or a
    # manifest lost since. Its data may be the only copy, so it stays (purge takes it with the backup).
    assert objects(repo, lost) == [lost.file_key(FILE)]
    group = next(g for g in repo.catalog().fulls if g.snapshot_ts == lost.snapshot_ts)
    assert group.partial and group.unsealed == ["10.0.0.1"]
