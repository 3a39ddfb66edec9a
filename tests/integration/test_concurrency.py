"""One writing run per cluster: Prefect's concurrency limit queues runs of one server, the bucket
lease refuses a run while another (from any Prefect server) holds the cluster."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta

import pytest

from dmf.core.lease import Lease
from dmf.core.timestamps import utcnow
from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.lease import ClusterBusy
from dmf.storage import Storage

from .helpers import HOSTS, insert_rows, new_table

pytestmark = pytest.mark.integration


def cluster_name(cluster_block) -> str:
    with connect(cluster_block) as session:
        return session.cluster.metadata.cluster_name


def test_two_runs_at_once_take_turns(testbed, cluster_block):
    """Started together, the second waits for the first: it then sees the first's full and takes an
    incremental on it, instead of both racing on the same tag and backups/ files."""
    keyspace, table = new_table(cluster_block, rows=50)
    command = [sys.executable, "-m", "dmf.cli", "backup", "snapshot", HOSTS, "--db-target", f"{keyspace}.{table}"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    kinds = sorted(re.search(r"^(full|incremental) backup \d{14}", out, re.MULTILINE).group(1) for out, _ in outputs)
    assert kinds == ["full", "incremental"], outputs


def test_a_lease_held_elsewhere_refuses_the_run_in_one_line(testbed, cluster_block, repository_block):
    keyspace, table = new_table(cluster_block, rows=10)
    storage = Storage(repository_block)
    foreign = Lease.new(cluster_name(cluster_block), "flow run on another prefect server", "foreign", utcnow(), 600)
    storage.put_bytes(foreign.key, foreign.to_json())
    try:
        with pytest.raises(ClusterBusy, match="flow run on another prefect server holds it since") as busy:
            backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}", lease_wait_seconds=0)
        assert "\n" not in str(busy.value) and "nothing was done" in str(busy.value)
        # A holder that crashed: its lease expired, and the next run proceeds.
        crashed = Lease(foreign.key, foreign.holder, foreign.acquired_at - timedelta(hours=1),
                        utcnow() - timedelta(seconds=1))
        storage.put_bytes(crashed.key, crashed.to_json())
        insert_rows(cluster_block, keyspace, table, range(10, 20))
        assert backup_snapshot(hosts=HOSTS, db_target=f"{keyspace}.{table}", lease_wait_seconds=0)["kind"] == "full"
    finally:
        storage.delete_keys([foreign.key])
    # The run released its own lease.
    assert [o["Key"] for o in storage.list_objects(foreign.key.rsplit("/", 1)[0] + "/")] == []
