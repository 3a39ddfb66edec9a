"""The scratch Cassandra's pure part (dmf/core/scratch.py): folders, ports, yaml, schema, replay list,
batches per source node, load names, resource checks."""
from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from dmf.core.errors import InputError
from dmf.core.scratch import (DISK_OVERHEAD_BYTES, Layout, Ports, batches, check_memory, check_ports, check_tables,
                              check_version, disk_needed, load_names, replay_list_option, scratch_schema,
                              scratch_yaml, segments_read)

TABLE_ID = "d3697900-ef6b-11f1-9293-556aa0459dfa"
CQL = f"""CREATE KEYSPACE ks WITH replication = {{'class': 'NetworkTopologyStrategy', 'dc1': '3'}}  AND durable_writes = true;

CREATE TYPE ks.addr (street text);

CREATE TABLE ks.events (
    id int PRIMARY KEY,
    home frozen<addr>
) WITH ID = {TABLE_ID}
    AND gc_grace_seconds = 864000;

CREATE TABLE ks.other (id int PRIMARY KEY) WITH ID = 11111111-ef6b-11f1-9293-556aa0459dfa;

CREATE INDEX events_home ON ks.events (home);
"""


def test_every_folder_is_below_path_and_names_cannot_climb_out():
    layout = Layout.under("/restore/run1/")
    assert layout.home == "/restore/run1/scratch-cassandra"
    assert layout.segments("0f1e") == "/restore/run1/scratch-cassandra/segments/0f1e"
    assert layout.load("ks", "copy") == "/restore/run1/scratch-cassandra/load/ks/copy"
    for bad in ("..", "a/b", "", "."):
        with pytest.raises(InputError, match="invalid scratch folder name"):
            layout.replayed(bad, "ks", "t")


def test_ports_differ_are_unprivileged_and_none_is_the_clusters():
    taken = {7000, 7199, 9042}
    assert check_ports(Ports(41000, 41001, 41002), taken) == Ports(41000, 41001, 41002)
    with pytest.raises(InputError, match="must differ"):
        check_ports(Ports(41000, 41000, 41002), taken)
    with pytest.raises(InputError, match="outside 1024-65535"):
        check_ports(Ports(80, 41001, 41002), taken)
    with pytest.raises(InputError, match="9042 is one the cluster's nodes use"):
        check_ports(Ports(41000, 9042, 41002), taken)


def test_yaml_is_a_cluster_of_its_own_on_its_ports_with_every_folder_under_path():
    yaml = scratch_yaml(Layout.under("/r"), Ports(41000, 41001, 41002), heap_mib=512)
    assert "cluster_name: dmf-scratch-replay" in yaml
    assert 'seeds: "127.0.0.1:41000"' in yaml and "storage_port: 41000" in yaml
    assert "native_transport_port: 41001" in yaml and "auto_snapshot: false" in yaml
    dirs = [line.split(":", 1)[1].strip(" []") for line in yaml.splitlines()
            if line.split(":")[0].endswith(("_directory", "_directories"))]
    assert len(dirs) == 5 and all(d.startswith("/r/scratch-cassandra/") for d in dirs)
    assert "memtable_heap_space: 128MiB" in yaml


def test_replay_list_names_only_the_tables_and_refuses_what_would_widen_it():
    assert replay_list_option(["ks.b", "ks.a", "ks.a"]) == "-Dcassandra.replayList=ks.a,ks.b"
    for bad in (["ks.a,ks2.b"], ["ks"], ["ks.a.b"], ["ks.a b"], []):
        with pytest.raises(InputError):
            check_tables(bad)


def test_schema_keeps_the_table_id_and_types_replaces_the_replication_and_leaves_indexes_out():
    statements = scratch_schema(CQL, ["ks.events"])
    assert statements[0] == ("CREATE KEYSPACE \"ks\" WITH replication = "
                             "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    assert statements[1].startswith("CREATE TYPE ks.addr")
    assert len(statements) == 3 and f"WITH ID = {TABLE_ID}" in statements[2]
    assert not any("INDEX" in s or "other" in s for s in statements)


def test_schema_refuses_a_table_without_id_or_missing():
    with pytest.raises(InputError, match="no CREATE TABLE for ks.gone"):
        scratch_schema(CQL, ["ks.events", "ks.gone"])
    with pytest.raises(InputError, match="has no table ID"):
        scratch_schema("CREATE TABLE ks.events (id int PRIMARY KEY);", ["ks.events"])


def test_batches_are_one_per_source_node_so_equal_segment_names_never_meet():
    same = "CommitLog-8-1764800000000.log"
    segments = [PurePosixPath(f"/r/cassandra_commitlogs/{node}/{name}")
                for node, name in [("h2", same), ("h1", same), ("h1", "CommitLog-8-1764800000001.log")]]
    found = batches(segments)
    assert list(found) == ["h1", "h2"]
    assert [s.name for s in found["h1"]] == [same, "CommitLog-8-1764800000001.log"]
    assert [s.name for s in found["h2"]] == [same]


def test_load_names_renumber_every_start_sstables_keeping_components_together():
    files = [PurePosixPath(p) for p in (
        "/r/replayed/h1/ks/t/nb-1-big-Data.db", "/r/replayed/h1/ks/t/nb-1-big-TOC.txt",
        "/r/replayed/h2/ks/t/nb-1-big-Data.db", "/r/replayed/h2/ks/t/nb-2-big-Data.db",
        "/r/replayed/h2/ks/t/nb-2-big-Index.db", "/r/replayed/h2/ks/t/nb-txn.log")]
    names = dict((str(p), n) for p, n in load_names(files))
    assert names == {"/r/replayed/h1/ks/t/nb-1-big-Data.db": "nb-1-big-Data.db",
                     "/r/replayed/h1/ks/t/nb-1-big-TOC.txt": "nb-1-big-TOC.txt",
                     "/r/replayed/h2/ks/t/nb-1-big-Data.db": "nb-2-big-Data.db",
                     "/r/replayed/h2/ks/t/nb-2-big-Data.db": "nb-3-big-Data.db",
                     "/r/replayed/h2/ks/t/nb-2-big-Index.db": "nb-3-big-Index.db"}


def test_disk_and_memory_are_preflighted():
    assert disk_needed({}) == 0
    assert disk_needed({"h1": 100, "h2": 300}) == 300 + 400 + DISK_OVERHEAD_BYTES
    check_memory(2**30, heap_mib=512)
    with pytest.raises(InputError, match="needs 896 MiB of memory.*smaller --scratch-heap-mib, or use --replay-on nodes"):
        check_memory(800 * 2**20, heap_mib=512)


def test_version_is_the_nodes_one():
    assert check_version({"5.0.9", ""}) == "5.0.9"
    with pytest.raises(InputError, match="5.0.8, 5.0.9: finish the upgrade"):
        check_version({"5.0.9", "5.0.8"})
    with pytest.raises(InputError, match="not a release version"):
        check_version({"5.1-SNAPSHOT"})


def test_missing_java_is_one_line_naming_the_way_out(monkeypatch):
    from dmf import cassandra_jvm
    from dmf.scratch_cassandra import require_java
    monkeypatch.setattr(cassandra_jvm.shutil, "which", lambda name: None)
    with pytest.raises(InputError) as refused:
        require_java()
    assert "\n" not in str(refused.value) and "Java 17" in str(refused.value)
    assert "--replay-on nodes" in str(refused.value)


def test_segments_read_come_from_cassandras_one_line_listing_them_all():
    log = ("INFO  [main] 2026-12-04 04:07:09,547 CommitLog.java:206 - Replaying /s/commitlog/CommitLog-7-17.log, "
           "/s/commitlog/CommitLog-7-18.log, /s/commitlog/CommitLog-7-9.log\n"
           "INFO  [main] 2026-12-04 04:07:09,589 CommitLogReplayer.java:442 - Tables to be replayed: {ks=[t]}\n"
           "INFO  [BatchlogTasks:1] 2026-12-04 04:07:11,000 BatchlogManager.java:1 - Replaying batches\n")
    assert segments_read(log) == {"CommitLog-7-17.log", "CommitLog-7-18.log", "CommitLog-7-9.log"}
