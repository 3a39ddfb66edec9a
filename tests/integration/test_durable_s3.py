"""The bed's S3 server is durable: a backup chain taken before s3proxy restarts is whole after it,
every object's bytes read back and checked against its manifest's SHA-256. (A deep verify, not a
restore: what the restart could lose is in the store, and the restore path has tests of its own.)"""
from __future__ import annotations

import pytest

from dmf.flows.backup_list import backup_list
from dmf.flows.backup_verify import backup_verify
from dmf.testbed import s3
from dmf.testbed.__main__ import up

pytestmark = pytest.mark.integration


def test_backup_survives_an_s3_server_restart(testbed, shared_chain):
    window = dict(start_time=shared_chain["full"]["snapshot_ts"], db_target=shared_chain["target"])
    listed = [(r["kind"], r["time"]) for r in backup_list(**window) if r["db_target"] == shared_chain["target"]]
    assert [kind for kind, _ in listed] == ["full", "incremental"]

    assert s3.stop(testbed) and not s3.is_running(testbed)  # as `dmf-testbed down` stops it: by pid
    up(testbed, 3, save_blocks=False)  # idempotent: starts only s3proxy again, on the same store
    assert s3.is_running(testbed)

    assert [(r["kind"], r["time"]) for r in backup_list(**window)
            if r["db_target"] == shared_chain["target"]] == listed
    report = backup_verify(**window, deep=True)
    assert report["clean"] and report["problems"] == [] and report["sets"] >= 6
    assert report["hashed_objects"] == report["objects"] > 0
