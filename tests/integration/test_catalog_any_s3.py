"""The catalog index and closed chain summaries on both S3 servers: s3proxy refuses the '-' delimiter
(the listing walks '/' prefixes), moto takes it (the listing folds data and checks manifest stamps).
Either way `backup list` must equal reading every manifest, skip closed chains below their top
level, and rebuild what is deleted."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest

from dmf.core.keys import SetRef, catalog_key, closed_key
from dmf.core.timestamps import parse_ts
from dmf.repository import Repository
from dmf.storage import Storage
from tests.storage.test_catalog_index_s3 import HOSTS, IDS, counting_requests, manifest, node_listings, put_set

pytestmark = pytest.mark.integration

WEEKS = [parse_ts(t) for t in ("20250106000000", "20250113000000", "20250120000000")]


@pytest.fixture
def history(any_s3):
    """Three weekly chains of 3 hosts (a full, 4 increments, 2 commit-log batches each), in a bucket of
    this test's own; the newest chain has a failed increment."""
    block = any_s3.model_copy(update={"bucket": f"dmf-catalog-{uuid.uuid4().hex[:12]}"})
    s3 = block.client()
    s3.create_bucket(Bucket=block.bucket)
    for week in WEEKS:
        for host in HOSTS:
            put_set(s3, SetRef.snapshot(week, host), host, bucket=block.bucket)
            for n in range(1, 5):
                put_set(s3, SetRef.incremental(week, host, week + timedelta(minutes=15 * n)), host, bucket=block.bucket)
            for n in range(1, 3):
                put_set(s3, SetRef.commitlog(week, IDS[host], week + timedelta(minutes=7 * n)), host,
                        bucket=block.bucket)
    put_set(s3, SetRef.incremental(WEEKS[2], "10.0.0.1", WEEKS[2] + timedelta(hours=5)), "10.0.0.1",
            sealed=False, bucket=block.bucket)
    return block


def test_listing_equals_every_manifest_closes_chains_and_rebuilds_what_is_deleted(history, any_s3):
    repo = Repository(Storage(history))
    reference = repo.listing_catalog(use_index=False)
    assert sum(len(g.sets) for g in reference.all_groups()) == 3 * 3 * 7 + 1

    assert repo.listing_catalog() == reference
    assert repo._fold_refused is (any_s3.bucket != "dmf-moto")  # s3proxy refuses '-': the '/' walk
    assert [repo.storage.head(closed_key(w)) is not None for w in WEEKS] == [True, True, False]

    counts = counting_requests(repo)
    assert repo.listing_catalog() == reference
    assert node_listings(counts, WEEKS[0]) == node_listings(counts, WEEKS[1]) == 0
    assert node_listings(counts, WEEKS[2]) > 0

    repo.storage.delete_keys([catalog_key(WEEKS[2]), closed_key(WEEKS[0])])
    assert Repository(Storage(history)).listing_catalog() == reference
    assert repo.storage.head(catalog_key(WEEKS[2])) and repo.storage.head(closed_key(WEEKS[0]))

    late = SetRef.commitlog(WEEKS[0], IDS["10.0.0.2"], WEEKS[0] + timedelta(days=6))  # a run sealing under it
    put_set(repo.storage.s3, late, "10.0.0.2", sealed=False, bucket=history.bucket)
    repo.write_manifest(manifest(late, "10.0.0.2"))
    assert repo.storage.head(closed_key(WEEKS[0])) is None
    relisted = repo.listing_catalog()
    assert relisted == repo.listing_catalog(use_index=False) and relisted != reference
    assert repo.listing_catalog(rescan=True) == relisted


def test_backup_list_rescan_through_the_cli_and_its_deployment_on_the_bed(testbed):
    """The bed's own bucket: `dmf backup list --rescan --json` (every manifest read, indexes written
    again) gives the rows the flow gives through the indexes; `-a --rescan` runs the deployment."""
    from dmf.flows.backup_list import backup_list

    from .test_deployments import cli_env, wait_for_run
    result = subprocess.run([sys.executable, "-m", "dmf.cli", "backup", "list", "--rescan", "--json"],
                            capture_output=True, text=True, timeout=300, env=cli_env(testbed))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == backup_list()

    queued = subprocess.run([sys.executable, "-m", "dmf.cli", "backup", "list", "-a", "--rescan"],
                            capture_output=True, text=True, timeout=120, env=cli_env(testbed))
    assert queued.returncode == 0 and "queued backup-list/on-demand" in queued.stdout, queued.stderr
    run = wait_for_run(queued.stdout.split("(", 1)[1].split(")", 1)[0])
    assert run.state.is_completed(), run.state
    assert run.parameters.get("rescan") is True
