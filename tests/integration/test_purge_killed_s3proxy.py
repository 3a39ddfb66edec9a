"""A purge killed, then rerun, on the bed's s3proxy: the scenario of tests/storage/test_purge_s3.py
(which kills it before each of its deletes on moto) against the real server, at the three points
where the bucket is most in between: indexes gone, some manifests gone, half the data gone."""
from __future__ import annotations

import uuid

import pytest

from dmf.lease import bucket_lease
from dmf.repository import Repository
from dmf.storage import Storage
from tests.storage.test_purge_s3 import purge_killed_and_rerun, seed

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("point_of_death", ["before the increments' manifests", "before the fulls' manifests",
                                            "halfway through the data"])
def test_a_purge_killed_and_rerun_on_s3proxy(repository_block, point_of_death):
    block = repository_block.model_copy(update={"bucket": f"dmf-purge-{uuid.uuid4().hex[:12]}"})
    storage = Storage(block)
    storage.s3.create_bucket(Bucket=block.bucket)
    seed(storage.s3, block.bucket)
    with bucket_lease(storage, "purge-test", "bed test", 0):  # as the purge flow holds it
        purge_killed_and_rerun(Repository(storage), point_of_death)
