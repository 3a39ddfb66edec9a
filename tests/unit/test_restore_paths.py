"""The rules a restore checks before downloading: PATH absolute and outside the nodes' directories,
HOSTS live members of the ring; and what it removes afterwards."""
from __future__ import annotations

from pathlib import Path

import pytest

from dmf.core.errors import DmfError, InputError
from dmf.core.restore_checks import (NodeDir, RingNode, absolute_path, check_full_covers_ring, check_hosts_in_ring,
                                     check_into, check_outside_node_dirs)
from dmf.core.targets import DbTarget
from dmf.download import Fetch, safe_join
from dmf.restore_plan import COMMITLOG_DIR, Plan, TableLoad, download_dirs

from .test_catalog import SHA


# ---- PATH: absolute ----------------------------------------------------------------------------
def test_an_absolute_path_is_kept_as_given():
    assert absolute_path("/var/tmp/restore", "/home/op") == "/var/tmp/restore"
    assert absolute_path("/var/tmp/restore", None) == "/var/tmp/restore"


@pytest.mark.parametrize("path, expected", [
    ("restore", "/home/op/restore"),
    ("./restore/", "/home/op/./restore/"),
    ("../restore", "/home/op/../restore"),   # '..' is the file system's to resolve (after a symlink it differs)
])
def test_a_relative_path_is_taken_from_the_working_directory(path, expected):
    assert absolute_path(path, "/home/op") == expected


@pytest.mark.parametrize("path", ["restore", "./restore", "~/restore", "../x"])
def test_a_relative_path_without_a_working_directory_is_refused(path):
    with pytest.raises(InputError) as info:
        absolute_path(path, None)
    message = str(info.value)
    assert repr(path) in message and "relative" in message and "absolute" in message and "\n" not in message


def test_an_empty_path_is_refused():
    with pytest.raises(InputError, match="PATH is empty"):
        absolute_path("", "/home/op")


# ---- PATH: outside the directories of a node on this machine ------------------------------------
DIRS = [NodeDir("127.0.0.1", "data directory", "/var/lib/cassandra/data"),
        NodeDir("127.0.0.1", "commit-log archive directory", "/var/lib/cassandra/commitlog_archive/")]


@pytest.mark.parametrize("root, inside", [
    ("/var/lib/cassandra/data", "/var/lib/cassandra/data"),
    ("/var/lib/cassandra/data/restore", "/var/lib/cassandra/data"),
    ("/var/lib/cassandra/data/ks/../restore", "/var/lib/cassandra/data"),
    ("//var/lib/cassandra/data/x", "/var/lib/cassandra/data"),
    ("/var/lib/cassandra/commitlog_archive/x", "/var/lib/cassandra/commitlog_archive/"),
])
def test_a_path_inside_a_node_directory_is_refused(root, inside):
    with pytest.raises(InputError) as info:
        check_outside_node_dirs(root, DIRS)
    message = str(info.value)
    assert f"PATH {root} is inside {inside}" in message and "127.0.0.1" in message and "\n" not in message


@pytest.mark.parametrize("root", [
    "/var/lib/cassandra",                     # a parent of the data directory: dmf writes only its own tree
    "/var/lib/cassandra/data_restore",        # a common prefix is not nesting
    "/var/lib/cassandra/data/../restore",
    "/var/tmp/restore",
])
def test_a_path_outside_every_node_directory_is_accepted(root):
    check_outside_node_dirs(root, DIRS)


def test_no_node_on_this_machine_means_no_directory_to_avoid():
    check_outside_node_dirs("/var/lib/cassandra/data/restore", [])


# ---- HOSTS: live members of the ring ------------------------------------------------------------
def ring(*nodes: tuple[str, bool | None], extra: dict[str, str] | None = None) -> dict[str, RingNode]:
    """Nodes by address; `extra` maps another address (an rpc address) to a node's address."""
    by = {address: RingNode(address, up) for address, up in nodes}
    return {**by, **{other: by[address] for other, address in (extra or {}).items()}}


THREE = ring(("10.0.0.1", True), ("10.0.0.2", True), ("10.0.0.10", True))


def test_members_map_to_their_ring_address():
    hosts = {"10.0.0.1": ["10.0.0.1"], "db2": ["db2", "10.0.0.2"], "10.0.0.10": ["10.0.0.10"]}
    assert check_hosts_in_ring(hosts, THREE) == {"10.0.0.1": "10.0.0.1", "db2": "10.0.0.2", "10.0.0.10": "10.0.0.10"}


def test_any_address_of_a_node_counts_and_ip_spellings_compare_by_value():
    nodes = ring(("10.0.0.1", True), ("fd00::1", True), extra={"192.168.0.1": "10.0.0.1"})
    assert check_hosts_in_ring({"192.168.0.1": ["192.168.0.1"], "fd00:0::1": ["fd00:0::1"]}, nodes) == {
        "192.168.0.1": "10.0.0.1", "fd00:0::1": "fd00::1"}


def test_a_host_outside_the_ring_is_named_with_the_members_found():
    with pytest.raises(InputError) as info:
        check_hosts_in_ring({"10.0.0.1": ["10.0.0.1"], "10.0.0.9": ["10.0.0.9"]}, THREE)
    assert str(info.value) == ("HOSTS: 10.0.0.9 is not in the cluster's ring "
                               "(its nodes: 10.0.0.1, 10.0.0.2, 10.0.0.10)")


def test_down_hosts_and_outsiders_are_reported_together_in_one_line():
    nodes = ring(("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.3", None))
    with pytest.raises(InputError) as info:
        check_hosts_in_ring({h: [h] for h in ("10.0.0.2", "10.0.0.8", "10.0.0.9", "10.0.0.3")}, nodes)
    assert str(info.value) == ("HOSTS: 10.0.0.8, 10.0.0.9 are not in the cluster's ring; 10.0.0.2 is down "
                               "(its nodes: 10.0.0.1, 10.0.0.2 (down), 10.0.0.3)")


def test_a_node_whose_state_is_not_known_yet_is_accepted():
    assert check_hosts_in_ring({"10.0.0.3": ["10.0.0.3"]}, ring(("10.0.0.3", None))) == {"10.0.0.3": "10.0.0.3"}


def test_an_empty_ring_is_said_so():
    with pytest.raises(InputError, match=r"its nodes: none"):
        check_hosts_in_ring({"10.0.0.1": ["10.0.0.1"]}, {})


# ---- the plan's paths, and what is removed after a successful restore ----------------------------
ROOT = Path("/restore")


def test_safe_join_is_lexical_and_stays_below_root(tmp_path):
    (tmp_path / "link").symlink_to("/etc")   # never followed here: the download refuses it
    assert safe_join(tmp_path, "link", "x") == tmp_path / "link" / "x"
    assert safe_join(ROOT, "a", "./b") == ROOT / "a" / "b"
    for parts in (("..", "x"), ("a", "../../x"), ("/etc/passwd",), (".",), ("a", "..")):
        with pytest.raises(DmfError, match="refusing to write outside /restore"):
            safe_join(ROOT, *parts)


def fetch(path: str) -> Fetch:
    return Fetch("key", ROOT / path, 1, SHA)


def test_download_dirs_are_below_root_deepest_first_and_never_the_commit_logs():
    plan = Plan([fetch("20250101120000/10.0.0.1/full/ks/t/nb-1-big-Data.db"),
                 fetch("20250101120000/10.0.0.1/full/ks/t/.idx/nb-1-big-Data.db"),
                 fetch("20250101120000/10.0.0.2/incr-20250101130000/ks/t/nb-2-big-Data.db")], [],
                [TableLoad("ks", "t", ROOT / "20250101120000/.load/ks/t", (
                    (ROOT / "20250101120000/10.0.0.1/full/ks/t/nb-1-big-Data.db", "nb-1-big-Data.db"),), 1)],
                [fetch(f"{COMMITLOG_DIR}/4a1a7505-0842-4a5c-a7fc-0baf0bb43b1b/CommitLog-7-1.log")], [], [])
    dirs = download_dirs(plan, ROOT)
    assert dirs[0] == ROOT / "20250101120000/10.0.0.1/full/ks/t/.idx"
    assert dirs[-1] == ROOT / "20250101120000"
    assert [len(d.parts) for d in dirs] == sorted((len(d.parts) for d in dirs), reverse=True)
    assert set(dirs) == {ROOT / p for p in (
        "20250101120000", "20250101120000/10.0.0.1", "20250101120000/10.0.0.1/full",
        "20250101120000/10.0.0.1/full/ks", "20250101120000/10.0.0.1/full/ks/t",
        "20250101120000/10.0.0.1/full/ks/t/.idx", "20250101120000/10.0.0.2",
        "20250101120000/10.0.0.2/incr-20250101130000", "20250101120000/10.0.0.2/incr-20250101130000/ks",
        "20250101120000/10.0.0.2/incr-20250101130000/ks/t", "20250101120000/.load", "20250101120000/.load/ks",
        "20250101120000/.load/ks/t")}
    assert ROOT not in dirs and not any(COMMITLOG_DIR in d.parts for d in dirs)


def test_only_nodes_on_this_machine_have_directories_to_avoid_as_named_and_as_resolved(tmp_path):
    from dmf.blocks import CassandraCluster, CassandraHost
    from dmf.local import local_node_dirs

    disk = tmp_path / "disk1"
    disk.mkdir()
    (tmp_path / "data").symlink_to(disk)
    cluster = CassandraCluster(hosts=[CassandraHost(address="127.0.0.1", data_dirs=[str(tmp_path / "data")]),
                                      CassandraHost(address="192.0.2.1")])  # TEST-NET-1: never this machine's
    dirs = local_node_dirs(cluster)
    assert {d.host for d in dirs} == {"127.0.0.1"}
    assert {d.path for d in dirs if d.role == "data directory"} == {str(tmp_path / "data"), str(disk)}
    with pytest.raises(InputError, match=f"is inside {disk}, the data directory of 127.0.0.1"):
        check_outside_node_dirs(str(disk / "restore"), dirs)


def test_a_full_of_some_of_the_clusters_nodes_is_refused_unless_allowed():
    three = ring(("10.0.0.1", True), ("10.0.0.2", True), ("10.0.0.3", True))
    check_full_covers_ring(["10.0.0.1", "10.0.0.2", "10.0.0.3"], "20250101000000", three, allow_subset=False)
    check_full_covers_ring(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], "s", three, allow_subset=False)  # shrank
    check_full_covers_ring(["10.9.0.1", "10.9.0.2"], "s", three, allow_subset=False)  # another cluster's backup
    with pytest.raises(InputError) as refused:
        check_full_covers_ring(["10.0.0.1"], "20250101000000", three, allow_subset=False)
    assert "taken on 1 of this cluster's 3 nodes (not on 10.0.0.2, 10.0.0.3)" in str(refused.value)
    assert "--allow-host-subset" in str(refused.value) and "\n" not in str(refused.value)
    check_full_covers_ring(["10.0.0.1"], "20250101000000", three, allow_subset=True)


@pytest.mark.parametrize("into, target, schema, replay, message", [
    ("ks.copy", "ks", False, False, "must both be keyspace.table"),
    ("ks", "ks.t", False, False, "must both be keyspace.table"),
    ("ks.t", "ks.t", False, False, "is DB_TARGET itself"),
    ("ks.copy", "ks.t", True, False, "leave --schema out"),
    ("ks.copy", "ks.t", False, True, "into the original table only"),
])
def test_into_is_a_copy_of_one_table_under_another_name(into, target, schema, replay, message):
    with pytest.raises(InputError, match=message):
        check_into(DbTarget.parse(into), DbTarget.parse(target), schema, replay)
    assert check_into(DbTarget.parse("ks2.c"), DbTarget.parse("ks.t"), False, False) == DbTarget("ks2", "c")
