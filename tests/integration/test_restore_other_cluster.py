"""A backup of the three-node cluster restored into another cluster: one node (127.0.0.4), its own
name, token ring and host ID. Replication it cannot hold is refused before any download and
rewritten by --replication; by default (the node path) the one node fetches every host's files
itself and streams them with its own sstableloader (nothing through the worker but the schema)."""
from __future__ import annotations

import pytest

from dmf.core.errors import InputError
from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot
from dmf.testbed import solo

from .helpers import HOSTS, ids, insert_rows, new_table, save_as

pytestmark = pytest.mark.integration

SOLO_BLOCK = "solo-test"


def test_a_three_node_backup_restores_into_a_one_node_cluster(testbed, cluster_block, solo_cluster, tmp_path):
    save_as(solo_cluster, SOLO_BLOCK)  # with the node's JMX credentials
    keyspace, table = new_table(cluster_block, rows=0, prefix="solo")
    insert_rows(cluster_block, keyspace, table, range(120))
    target = f"{keyspace}.{table}"
    full = backup_snapshot(hosts=HOSTS, db_target=target, new=True, backup_schema=True)
    assert sorted(full["hosts"]) == HOSTS.split(",")
    with connect(solo_cluster) as session:
        assert session.cluster.metadata.cluster_name == solo.CLUSTER_NAME
        assert len(session.cluster.metadata.all_hosts()) == 1

    with pytest.raises(InputError, match=r"RF 3 on 1 node\(s\).*--replication") as refused:
        restore_snapshot(hosts="127.0.0.4", path=str(tmp_path), db_target=target, restore_schema=True,
                         cluster_block=SOLO_BLOCK)
    assert "\n" not in str(refused.value) and not any(tmp_path.iterdir())

    summary = restore_snapshot(hosts="127.0.0.4", path=str(tmp_path), db_target=target, restore_schema=True,
                               replication="{'class': 'SimpleStrategy', 'replication_factor': 1}",
                               cluster_block=SOLO_BLOCK)
    assert summary["snapshot_ts"] == full["snapshot_ts"] and summary["mode"] == "node"
    assert summary["load_mode"] == "node-sstableloader" and list(summary["nodes"]) == ["127.0.0.4"]
    [loaded] = summary["loaded"]  # one loader for every host's SSTables of the table
    assert loaded.startswith(f"{target} on 127.0.0.4 (")
    # Through the worker: only the three hosts' schema.cql; every SSTable fetched by the node.
    assert summary["downloaded_files"] == 3 and summary["nodes"]["127.0.0.4"]["fetched_files"] > 3
    assert ids(solo_cluster, target) == set(range(120))
    with connect(solo_cluster) as session:
        replication = session.cluster.metadata.keyspaces[keyspace].replication_strategy
        assert replication.replication_factor == 1
    assert ids(cluster_block, target) == set(range(120))  # the source cluster untouched
