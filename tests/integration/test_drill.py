"""Restore drills on the three-node bed: restore beside the live table, check, time, and leave nothing."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.node import Node
from dmf.ssh import RemoteHost
from dmf.testbed import prefect_server

from .helpers import HOSTS, insert_rows, new_table, tick

pytestmark = pytest.mark.integration


def test_a_drill_restores_checks_times_and_leaves_no_scratch_table(testbed, cluster_block, tmp_path):
    keyspace, table = new_table(cluster_block, rows=80, prefix="drill")
    target = f"{keyspace}.{table}"
    # The drill counts a row as unchanged only if written before the backup's second (its set's time):
    # rows written in that same second, as a backup started at once can be, would all count as changed.
    tick()
    backup_snapshot(hosts=HOSTS, db_target=target)
    insert_rows(cluster_block, keyspace, table, range(10), payload="changed since")

    cli = subprocess.run([sys.executable, "-m", "dmf.cli", "restore", "drill", target, "--path", str(tmp_path)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PREFECT_API_URL": prefect_server.api_url(testbed)})
    assert cli.returncode == 0, cli.stderr[-2000:]
    line = re.search(rf"restore drill of {target} passed: RTO (\S+)s .*; (\d+) rows in the copy, (\d+) of (\d+) "
                     rf"sampled equal to the live table \((\d+) changed since\); {target}_drill_\d{{14}} dropped",
                     cli.stdout)
    assert line, cli.stdout
    assert float(line[1]) > 0 and [int(n) for n in line.groups()[1:]] == [80, 70, 80, 10]

    # Nothing left: no scratch table, no download, no auto_snapshot of the copies; the live table as it was.
    with connect(cluster_block) as session:
        assert set(session.cluster.metadata.keyspaces[keyspace].tables) == {table}
        live = {r.id: r.payload for r in session.execute(f"SELECT id, payload FROM {target}")}
    assert len(live) == 80 and {live[i] for i in range(10)} == {"changed since"}
    assert not any(tmp_path.iterdir())
    for host in cluster_block.hosts:
        with RemoteHost(cluster_block, host) as remote:
            leftovers = [d for d in Node(remote).snapshot_dirs() if "_drill_" in d]
        assert leftovers == [], leftovers
