"""Restores that meet a different cluster or a live table: replication the cluster cannot hold is
refused before anything is downloaded and rewritten by --dc-map; a live table keeps its newer rows
unless --truncate-first; --into loads the backup beside it."""
from __future__ import annotations

import uuid

import pytest

from dmf.core.errors import InputError
from dmf.core.keys import schema_key
from dmf.core.timestamps import parse_ts
from dmf.cql import connect
from dmf.flows.backup_snapshot import backup_snapshot
from dmf.flows.restore_snapshot import restore_snapshot

from .helpers import HOSTS, ids, insert_rows, new_table

pytestmark = pytest.mark.integration


def test_a_keyspace_the_cluster_cannot_hold_is_refused_before_download_and_dc_map_fixes_it(
        testbed, cluster_block, repository_block, tmp_path):
    keyspace = f"topo_{uuid.uuid4().hex[:8]}"  # unique on a reused bed too
    with connect(cluster_block) as session:
        datacenter = next(iter(session.cluster.metadata.all_hosts())).datacenter
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                        f"{{'class': 'NetworkTopologyStrategy', '{datacenter}': 3}}")
        session.execute(f"CREATE TABLE {keyspace}.events (id int PRIMARY KEY, payload text)")
    insert_rows(cluster_block, keyspace, "events", range(60))
    full = backup_snapshot(hosts=HOSTS, db_target=keyspace, backup_schema=True)
    # As if the backup came from a cluster whose datacenter was called dc_east.
    key = schema_key(parse_ts(full["snapshot_ts"]))
    s3 = repository_block.client()
    schema = s3.get_object(Bucket=repository_block.bucket, Key=key)["Body"].read().decode()
    assert f"'{datacenter}': '3'" in schema
    s3.put_object(Bucket=repository_block.bucket, Key=key, Body=schema.replace(f"'{datacenter}'", "'dc_east'"))
    with connect(cluster_block) as session:
        session.execute(f"DROP KEYSPACE {keyspace}")

    with pytest.raises(InputError) as refused:
        restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=keyspace, restore_schema=True)
    assert "datacenter 'dc_east' (RF 3) does not exist here" in str(refused.value)
    assert f"This cluster has {datacenter} (3 node(s))" in str(refused.value)
    assert not any(tmp_path.iterdir())  # nothing downloaded
    with pytest.raises(InputError, match=rf"RF 4 in '{datacenter}', which has 3 node\(s\)"):
        restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=keyspace, restore_schema=True,
                         replication=f"{{'class': 'NetworkTopologyStrategy', '{datacenter}': 4}}")

    restore_snapshot(hosts=HOSTS, path=str(tmp_path), db_target=keyspace, restore_schema=True,
                     dc_map=f"dc_east:{datacenter}")
    assert ids(cluster_block, f"{keyspace}.events") == set(range(60))
    with connect(cluster_block) as session:
        replication = session.cluster.metadata.keyspaces[keyspace].replication_strategy
        assert replication.dc_replication_factors == {datacenter: 3}


def test_a_live_table_keeps_newer_rows_and_truncate_first_brings_the_backup_back_exactly(
        testbed, cluster_block, tmp_path):
    keyspace, table = new_table(cluster_block, rows=100, prefix="live")
    target = f"{keyspace}.{table}"
    backup_snapshot(hosts=HOSTS, db_target=target)
    # After the backup: rows updated, added, deleted.
    insert_rows(cluster_block, keyspace, table, range(10), payload="newer")
    insert_rows(cluster_block, keyspace, table, range(100, 120))
    with connect(cluster_block) as session:
        for i in range(50, 55):
            session.execute(f"DELETE FROM {target} WHERE id = {i}")

    restore_snapshot(hosts=HOSTS, path=str(tmp_path / "live"), db_target=target)
    # Cells keep their write times: the newer value wins, rows added since stay, and a delete since
    # the backup (a newer tombstone) stays deleted.
    with connect(cluster_block) as session:
        now = {r.id: r.payload for r in session.execute(f"SELECT id, payload FROM {target}")}
    assert set(now) == set(range(120)) - set(range(50, 55))
    assert {now[i] for i in range(10)} == {"newer"} and now[10] == "p" * 100

    # --into: the backup as it was, in a table of its own; the live table untouched.
    copy = f"{keyspace}.{table}_copy"
    summary = restore_snapshot(hosts=HOSTS, path=str(tmp_path / "copy"), db_target=target, into=copy)
    assert summary["into"] == copy
    with connect(cluster_block) as session:
        copied = {r.id: r.payload for r in session.execute(f"SELECT id, payload FROM {copy}")}
        live = {r.id: r.payload for r in session.execute(f"SELECT id, payload FROM {target}")}
    assert copied == {i: "p" * 100 for i in range(100)} and live == now

    restore_snapshot(hosts=HOSTS, path=str(tmp_path / "truncated"), db_target=target, truncate_first=True,
                     yes=True)
    with connect(cluster_block) as session:
        back = {r.id: r.payload for r in session.execute(f"SELECT id, payload FROM {target}")}
    assert back == {i: "p" * 100 for i in range(100)}
