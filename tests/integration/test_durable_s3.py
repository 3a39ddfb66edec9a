"""The bed's S3 server is durable: a backup taken before s3proxy restarts restores after it."""
from __future__ import annotations

import pytest

from dmf.flows.backup_snapshot import backup_snapshot
from dmf.testbed import s3
from dmf.testbed.__main__ import up

from .helpers import HOSTS, drop_and_restore, ids, new_table

pytestmark = pytest.mark.integration


def test_backup_survives_an_s3_server_restart(testbed, cluster_block, tmp_path):
    keyspace, table = new_table(cluster_block, rows=120, prefix="durable")
    target = f"{keyspace}.{table}"
    backup_snapshot(hosts=HOSTS, db_target=target, backup_schema=True, new=True)

    assert s3.stop(testbed) and not s3.is_running(testbed)  # as `dmf-testbed down` stops it: by pid
    up(testbed, 3, save_blocks=False)  # idempotent: starts only s3proxy again, on the same store
    assert s3.is_running(testbed)

    drop_and_restore(cluster_block, tmp_path, target)
    assert ids(cluster_block, target) == set(range(120))
