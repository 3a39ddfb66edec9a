"""Sealing against S3 (moto): a manifest is written only over objects that are still there, so a sweep
that removed a live run's objects between its upload and its seal fails the seal instead of leaving a
set listed complete without its data (issue 22, defect 2)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.logging import disable_run_logger

from dmf.core.errors import PermanentError
from dmf.core.keys import SetRef
from dmf.core.manifest import FileEntry
from dmf.core.sweep import seal_deadline
from dmf.core.timestamps import parse_ts
from dmf.cql import NodeFacts
from dmf.lease import bucket_lease
from dmf.sweep import remove_manifestless_sets
from dmf.tasks.upload import Uploaded, seal_set

from .helpers import moto_repository

FULL = parse_ts("20260101000000")
BEGAN = parse_ts("20260101120000")
FACTS = NodeFacts("10.0.0.1", "4a1a7505-0842-4a5c-a7fc-0baf0bb43b10", ("0",), "5.0.2", "v1")
SEGMENTS = ("CommitLog-7-1.log", "CommitLog-7-2.log")


@pytest.fixture
def repo():
    with moto_repository("dmf-seal") as repository:
        yield repository


def upload_batch(repo) -> tuple[SetRef, list[FileEntry]]:
    ref = SetRef.commitlog(FULL, FACTS.host_id, BEGAN)
    stored = [repo.storage.put_bytes(ref.file_key(name), name.encode() * 100) for name in SEGMENTS]
    return ref, [FileEntry(name, s.size, s.sha256) for name, s in zip(SEGMENTS, stored)]


def seal(repo, ref: SetRef, entries: list[FileEntry], **kwargs):
    with disable_run_logger():
        return seal_set.fn(repo.storage.repository, ref, Uploaded(entries, 0.0, 0.0), FACTS, "", (FACTS.address,),
                           **kwargs)


def test_a_batch_swept_between_upload_and_seal_is_not_sealed(repo):
    ref, entries = upload_batch(repo)
    # A sweep (under the cluster's lease, which shipping does not take) with a small grace sees a set
    # without a manifest and removes its objects.
    with bucket_lease(repo.storage, "seal-test", "storage test", 0):
        assert remove_manifestless_sets(repo, repo.catalog(), {FACTS.host_id}, BEGAN + timedelta(minutes=1)) == 2
    with pytest.raises(PermanentError, match="2 of 2 object"):
        seal(repo, ref, entries)
    assert repo.read_manifest(ref) is None
    assert not [g for g in repo.catalog().commitlogs if g.complete]


def test_an_object_changed_since_its_upload_is_not_sealed(repo):
    ref, entries = upload_batch(repo)
    repo.storage.put_bytes(ref.file_key(SEGMENTS[1]), b"short")
    with pytest.raises(PermanentError, match=f"{SEGMENTS[1]}: 5 bytes stored, 1700 uploaded"):
        seal(repo, ref, entries)
    assert repo.read_manifest(ref) is None


def test_a_batch_past_its_seal_deadline_is_not_sealed(repo):
    """A sweep may remove a batch once it is older than the grace floor: the shipping run does not seal
    one that old, even when every object is still there."""
    ref, entries = upload_batch(repo)
    with pytest.raises(PermanentError, match="not sealed"):
        seal(repo, ref, entries, seal_by=BEGAN + timedelta(minutes=1))
    assert repo.read_manifest(ref) is None


def test_a_batch_whose_objects_are_there_is_sealed_before_its_deadline(repo, monkeypatch):
    ref, entries = upload_batch(repo)
    monkeypatch.setattr("dmf.tasks.upload.utcnow", lambda: BEGAN + timedelta(minutes=5))
    manifest = seal(repo, ref, entries, seal_by=seal_deadline(ref.time))
    assert repo.read_manifest(ref) == manifest
    assert [g.complete for g in repo.catalog().commitlogs] == [True]
