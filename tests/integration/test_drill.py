"""Restore drills on the three-node bed: restore beside the live table, check, time, and leave nothing."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_drill import restore_drill
from dmf.node import Node
from dmf.ssh import RemoteHost
from dmf.testbed import prefect_server

from .helpers import HOSTS, insert_rows, new_table

pytestmark = pytest.mark.integration


def test_a_drill_restores_checks_times_and_leaves_no_scratch_table(testbed, cluster_block, tmp_path):
    keyspace, table = new_table(cluster_block, rows=80, prefix="drill")
    target = f"{keyspace}.{table}"
    backup_snapshot(hosts=HOSTS, db_target=target)
    insert_rows(cluster_block, keyspace, table, range(10), payload="changed since")

    report = restore_drill(db_target=target, path=str(tmp_path / "flow"))
    assert report["passed"] and report["copy_rows"] == 80
    assert (report["sampled"], report["matched"], report["changed"], report["mismatched"]) == (80, 70, 10, 0)
    assert report["rto_seconds"] > 0 and report["copy"].startswith(f"{keyspace}.{table}_drill_")

    cli = subprocess.run([sys.executable, "-m", "dmf.cli", "restore", "drill", target, "--path", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)})
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert f"restore drill of {target} passed: RTO" in cli.stdout and "80 rows in the copy" in cli.stdout

    # Nothing left: no scratch table, no download, no auto_snapshot of the copies; the live table as it was.
    with connect(cluster_block) as session:
        assert set(session.cluster.metadata.keyspaces[keyspace].tables) == {table}
        live = {r.id: r.payload for r in session.execute(f"SELECT id, payload FROM {target}")}
    assert len(live) == 80 and {live[i] for i in range(10)} == {"changed since"}
    assert not any((tmp_path / "flow").iterdir()) and not any((tmp_path / "cli").iterdir())
    for host in cluster_block.hosts:
        with RemoteHost(cluster_block, host) as remote:
            leftovers = [d for d in Node(remote).snapshot_dirs() if "_drill_" in d]
        assert leftovers == [], leftovers
